//! Long-lived groups (DESIGN.md, "Long-lived groups: servers"): the
//! `Spawner`, `cancel_task`, the end of a group, and the `Discard` joiner
//! with its `Tally`, one test per sentence of the contract. The races
//! (spawns against `wait`, `cancel_task` against a task's end and a group
//! cancel) are in `group_servers_races.rs`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use futures::StreamExt;
use support::drop_flag;
use taskgroup::{
    Context, ContextError, Discard, FirstOk, GroupError, Outcome, Spawner, Supervise, TaskGroup,
    TaskId,
};
use tokio::sync::oneshot;
use tokio::time::Instant;

fn assert_clone_send_sync_debug<T: Clone + Send + Sync + std::fmt::Debug>() {}

#[test]
fn a_spawner_is_clone_send_sync_and_debug() {
    assert_clone_send_sync_debug::<Spawner<u32, String, taskgroup::FailFast>>();
    assert_clone_send_sync_debug::<Spawner<(), std::io::Error, Discard>>();
}

// --- Spawner -------------------------------------------------------------

#[tokio::test]
async fn a_spawner_never_keeps_the_group_alive() {
    let group = TaskGroup::<(), String>::new();
    let spawner = group.spawner();
    let (guard, dropped) = drop_flag();
    spawner
        .spawn(move |ctx| async move {
            let _guard = guard;
            ctx.done().await;
            Ok(())
        })
        .ok()
        .unwrap();
    drop(group);
    support::eventually("dropping the group drops its task", || dropped.load(SeqCst)).await;
    assert!(spawner.context().is_cancelled());
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let refused = spawner.spawn(move |_ctx| async move {
        flag.store(true, SeqCst);
        Ok(())
    });
    assert!(refused.is_err(), "the closure comes back");
    tokio::task::yield_now().await;
    assert!(!ran.load(SeqCst));
    assert!(format!("{spawner:?}").contains("ended: true"));
}

#[tokio::test(start_paused = true)]
async fn a_spawner_queues_past_the_limit_as_spawn_does() {
    let group = TaskGroup::<u32, String>::builder().limit(1).build();
    let spawner = group.spawner();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    for n in 0..3 {
        let (running, most) = (running.clone(), most.clone());
        let id = spawner
            .spawn(move |_ctx| async move {
                let now = running.fetch_add(1, SeqCst) + 1;
                most.fetch_max(now, SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                running.fetch_sub(1, SeqCst);
                Ok(n)
            })
            .ok()
            .unwrap();
        assert_eq!(id.index(), u64::from(n));
    }
    assert_eq!(group.len(), 3);
    assert_eq!(group.wait().await, Ok(vec![0, 1, 2]));
    assert_eq!(most.load(SeqCst), 1);
}

#[tokio::test]
async fn a_spawn_into_a_cancelled_group_counts_as_cancelled_and_never_starts() {
    let group = TaskGroup::<(), String>::builder().joiner(Supervise).build();
    let spawner = group.spawner();
    group.cancel();
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let id = spawner.spawn(move |_ctx| async move {
        flag.store(true, SeqCst);
        Ok(())
    });
    assert!(id.is_ok(), "not ended yet: accepted, as cancelled");
    let outcomes = group.wait().await;
    assert!(matches!(outcomes[..], [Outcome::Cancelled]));
    assert!(!ran.load(SeqCst));
}

#[tokio::test]
async fn the_closure_comes_back_once_wait_has_joined_the_group() {
    let mut group = TaskGroup::<u32, String>::new();
    let spawner = group.spawner();
    group.spawn(|_ctx| async { Ok(1) });
    assert_eq!(group.wait().await, Ok(vec![1]));
    let back = spawner.spawn(|_ctx| async { Ok(2) });
    assert!(back.is_err());
    assert!(spawner.try_spawn(|_ctx| async { Ok(3) }).is_err());
}

#[tokio::test]
async fn the_closure_comes_back_once_wait_outcomes_or_shutdown_returned() {
    let group = TaskGroup::<u32, String>::new();
    let spawner = group.spawner();
    assert!(group.wait_outcomes().await.is_empty());
    assert!(spawner.spawn(|_ctx| async { Ok(1) }).is_err());

    let group = TaskGroup::<u32, String>::new();
    let spawner = group.spawner();
    let report = group.shutdown(Duration::from_millis(10)).await;
    assert_eq!(report.output, Ok(vec![]));
    assert!(spawner.spawn(|_ctx| async { Ok(1) }).is_err());
}

#[tokio::test(start_paused = true)]
async fn a_task_spawned_through_a_spawner_while_wait_waits_is_joined_by_that_wait() {
    let mut group = TaskGroup::<u32, String>::new();
    let spawner = group.spawner();
    group.spawn(move |_ctx| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        // `wait` is waiting by now.
        spawner
            .spawn(|_ctx| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(2)
            })
            .map_err(|_| "ended".to_string())?;
        Ok(1)
    });
    let started = Instant::now();
    assert_eq!(group.wait().await, Ok(vec![1, 2]));
    assert_eq!(started.elapsed(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn the_accept_loop_can_be_a_task_of_the_group_it_feeds() {
    let mut group = TaskGroup::<u32, String>::builder().joiner(Discard).build();
    let spawner = group.spawner();
    let served = Arc::new(AtomicUsize::new(0));
    let counted = served.clone();
    group.spawn(move |ctx| async move {
        let mut n = 0;
        while ctx.sleep(Duration::from_millis(10)).await.is_ok() {
            let counted = counted.clone();
            n += 1;
            let accepted = spawner.spawn(move |_ctx| async move {
                counted.fetch_add(1, SeqCst);
                Ok(n)
            });
            if accepted.is_err() {
                break;
            }
        }
        Ok(0)
    });
    tokio::time::sleep(Duration::from_millis(105)).await;
    let tally = group.shutdown(Duration::from_secs(1)).await.output;
    assert_eq!(served.load(SeqCst), 10);
    // The loop saw its context cancelled and returned `Ok`; its 10
    // connections ended `Ok` before.
    assert_eq!(tally.ok(), 11);
}

#[tokio::test]
async fn try_spawn_refuses_at_the_limit_when_cancelled_and_once_ended() {
    let group = TaskGroup::<(), String>::builder().limit(1).build();
    let spawner = group.spawner();
    let (release, released) = oneshot::channel::<()>();
    assert!(
        spawner
            .try_spawn(|_ctx| async move {
                let _ = released.await;
                Ok(())
            })
            .is_ok()
    );
    assert!(
        spawner.try_spawn(|_ctx| async { Ok(()) }).is_err(),
        "at the limit"
    );
    release.send(()).unwrap();
    group.ready().await;
    group.cancel();
    assert!(
        spawner.try_spawn(|_ctx| async { Ok(()) }).is_err(),
        "cancelled"
    );
    drop(group);
    assert!(spawner.try_spawn(|_ctx| async { Ok(()) }).is_err(), "ended");
}

#[tokio::test]
async fn a_spawners_context_is_the_groups() {
    let group = TaskGroup::<(), String>::builder().name("conns").build();
    let spawner = group.spawner();
    assert!(!spawner.context().is_cancelled());
    group.cancel();
    assert_eq!(spawner.context().err(), Some(ContextError::Cancelled));
    assert!(format!("{spawner:?}").contains("conns"));
}

// --- cancel_task ---------------------------------------------------------

/// A group whose grace lets a task cancelled on its own end as it
/// returns.
fn graceful() -> TaskGroup<u32, String> {
    TaskGroup::<u32, String>::builder()
        .grace(Duration::from_secs(5))
        .build()
}

/// A task that sends its context out once it runs, then waits on it and
/// returns `Err` with its error.
fn spawn_watcher(
    group: &mut TaskGroup<u32, String, impl taskgroup::Joiner<u32, String>>,
) -> (taskgroup::TaskId, oneshot::Receiver<Context>) {
    let (tx, rx) = oneshot::channel();
    let id = group.spawn(move |ctx| async move {
        let _ = tx.send(ctx.clone());
        ctx.done().await;
        Err(format!("stopped: {}", ctx.err().unwrap()))
    });
    (id, rx)
}

#[tokio::test]
async fn cancel_task_cancels_the_tasks_own_context_and_the_group_goes_on() {
    let mut group = TaskGroup::<u32, String>::new();
    let (kicked, ctx) = spawn_watcher(&mut group);
    let (go, went) = oneshot::channel::<()>();
    group.spawn(|_ctx| async move {
        went.await.map_err(|e| e.to_string())?;
        Ok(7)
    });
    let ctx = ctx.await.unwrap();
    assert!(group.cancel_task(kicked));
    // When `cancel_task` returns, the task's context reports its error.
    assert_eq!(ctx.err(), Some(ContextError::Cancelled));
    assert!(ctx.cause().unwrap().to_string().contains("cancel_task"));
    assert!(!group.context().is_cancelled(), "the group's stays live");
    go.send(()).unwrap();
    // FailFast leaves out the task `cancel_task` ended without a value.
    assert_eq!(group.wait().await, Ok(vec![7]));
}

#[tokio::test]
async fn cancel_task_finds_every_live_task_as_tasks_come_and_go() {
    // `cancel_task` finds a task through an index made at its first call
    // and kept as tasks start and end (slots of ended tasks are reused):
    // each live task is found, each ended or unknown id is not.
    let mut group = TaskGroup::<u64, String>::builder().joiner(Discard).build();
    let mut releases = Vec::new();
    let mut contexts = Vec::new();
    let spawn_parked =
        |group: &mut TaskGroup<u64, String, Discard>,
         releases: &mut Vec<(TaskId, oneshot::Sender<()>)>,
         contexts: &mut Vec<(TaskId, oneshot::Receiver<Context>)>| {
            let (go, went) = oneshot::channel::<()>();
            let (seen, ctx) = oneshot::channel::<Context>();
            let id = group.spawn(move |ctx| async move {
                let _ = seen.send(ctx.clone());
                tokio::select! {
                    _ = went => Ok(1),
                    _ = ctx.done() => Err("cancelled".to_string()),
                }
            });
            releases.push((id, go));
            contexts.push((id, ctx));
        };
    for _ in 0..100 {
        spawn_parked(&mut group, &mut releases, &mut contexts);
    }
    let mut ctxs = std::collections::HashMap::new();
    for (id, ctx) in contexts.drain(..) {
        ctxs.insert(id, ctx.await.unwrap());
    }
    // The first call makes the index.
    let (first, _) = releases.remove(10);
    assert!(group.cancel_task(first));
    assert!(ctxs[&first].is_cancelled());
    assert!(
        group.cancel_task(first),
        "true again while it has not ended"
    );
    // Half the others end on their own; their ids are gone from the index.
    let ended: Vec<TaskId> = releases
        .drain(..50)
        .map(|(id, go)| {
            go.send(()).unwrap();
            id
        })
        .collect();
    while group.len() > 50 {
        tokio::task::yield_now().await;
    }
    for id in &ended {
        assert!(!group.cancel_task(*id), "{id:?} has ended");
        assert!(!ctxs[id].is_cancelled());
    }
    // New tasks take the freed slots and are found too.
    for _ in 0..60 {
        spawn_parked(&mut group, &mut releases, &mut contexts);
    }
    for (id, ctx) in contexts.drain(..) {
        ctxs.insert(id, ctx.await.unwrap());
    }
    for (id, _) in &releases {
        assert!(group.cancel_task(*id), "{id:?} is live");
        assert!(ctxs[id].is_cancelled(), "{id:?}'s own context");
    }
    assert!(!group.context().is_cancelled());
    let unknown = group.spawn(|_ctx| async { Ok(0) });
    let tally = group.wait().await;
    assert!(!ctxs.contains_key(&unknown));
    assert_eq!(tally.ok(), 50 + 1);
    assert_eq!(tally.cancelled() + tally.failed(), 1 + 49 + 60);
}

#[tokio::test]
async fn a_queued_task_cancelled_on_its_own_never_starts() {
    let mut group = TaskGroup::<u32, String>::builder()
        .limit(1)
        .joiner(Supervise)
        .build();
    let (go, went) = oneshot::channel::<()>();
    group.spawn(|_ctx| async move {
        went.await.map_err(|e| e.to_string())?;
        Ok(1)
    });
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let queued = group.spawn(move |_ctx| async move {
        flag.store(true, SeqCst);
        Ok(2)
    });
    assert!(group.cancel_task(queued));
    assert!(!group.cancel_task(queued), "ended: recorded as cancelled");
    go.send(()).unwrap();
    let outcomes = group.wait().await;
    assert!(matches!(outcomes[..], [Outcome::Ok(1), Outcome::Cancelled]));
    assert!(!ran.load(SeqCst));
}

#[tokio::test]
async fn a_task_that_does_not_return_is_dropped_at_its_next_await() {
    let mut group = TaskGroup::<u32, String>::builder()
        .joiner(Supervise)
        .build();
    let (guard, dropped) = drop_flag();
    let deaf = group.spawn(move |_ctx| async move {
        let _guard = guard;
        loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    group.spawn(|_ctx| async { Ok(2) });
    tokio::task::yield_now().await;
    assert!(group.cancel_task(deaf));
    let outcomes = group.wait().await;
    assert!(matches!(outcomes[..], [Outcome::Cancelled, Outcome::Ok(2)]));
    assert!(dropped.load(SeqCst));
}

#[tokio::test(start_paused = true)]
async fn the_groups_grace_holds_for_a_task_cancelled_on_its_own() {
    let mut group = TaskGroup::<u32, String>::builder()
        .grace(Duration::from_millis(100))
        .joiner(Supervise)
        .build();
    let polite = group.spawn(|ctx| async move {
        ctx.done().await;
        tokio::time::sleep(Duration::from_millis(30)).await; // winds down
        Ok(1)
    });
    let deaf = group.spawn(|_ctx| async {
        loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    tokio::task::yield_now().await;
    let started = Instant::now();
    assert!(group.cancel_task(polite));
    assert!(group.cancel_task(deaf));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!group.cancel_task(polite), "ended within its grace");
    assert!(group.cancel_task(deaf), "still in its grace: true again");
    let outcomes = group.wait().await;
    assert!(matches!(outcomes[..], [Outcome::Ok(1), Outcome::Cancelled]));
    assert_eq!(started.elapsed(), Duration::from_millis(100));
}

/// The grace of a task cancelled on its own is kept by a timer that ends
/// the task when the grace runs out; a task that ends first takes its
/// timer with it, so `wait` does not wait out the rest of the grace for a
/// timer with nothing left to do (the group's tokio tasks are joined too).
#[tokio::test(start_paused = true)]
async fn a_task_cancelled_on_its_own_that_ends_in_its_grace_leaves_no_timer_to_wait_for() {
    let mut group = TaskGroup::<u32, String>::builder()
        .grace(Duration::from_secs(60))
        .build();
    let polite = group.spawn(|ctx| async move {
        ctx.done().await;
        Ok(1)
    });
    tokio::task::yield_now().await;
    let started = Instant::now();
    assert!(group.cancel_task(polite));
    assert_eq!(group.wait().await, Ok(vec![1]));
    assert_eq!(started.elapsed(), Duration::ZERO, "no grace was waited out");
}

#[tokio::test(start_paused = true)]
async fn a_shield_holds_for_a_task_cancelled_on_its_own() {
    let mut group = TaskGroup::<u32, String>::builder()
        .joiner(Supervise)
        .build();
    let flushed = Arc::new(AtomicBool::new(false));
    let done = flushed.clone();
    let id = group.spawn(move |ctx| async move {
        let _ = ctx
            .shield(Duration::from_secs(1), |_shielded| async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                done.store(true, SeqCst);
            })
            .await;
        loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let started = Instant::now();
    assert!(group.cancel_task(id));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(group.cancel_task(id), "still in its shield: true again");
    let outcomes = group.wait().await;
    assert!(flushed.load(SeqCst), "the shielded section ran to its end");
    assert!(matches!(outcomes[..], [Outcome::Cancelled]));
    assert_eq!(started.elapsed(), Duration::from_millis(190));
}

#[tokio::test]
async fn a_blocking_task_cancelled_on_its_own_must_notice() {
    let mut group = TaskGroup::<u32, String>::new();
    let (tx, rx) = oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    let id = group.spawn_blocking(move |ctx| {
        let _ = tx.send(());
        // A blocking pool thread may block on its context's signal (no
        // polling): it wakes when `cancel_task` cancels it, not before.
        runtime.block_on(ctx.done());
        Err(ctx.err().unwrap().to_string())
    });
    group.spawn(|_ctx| async { Ok(5) });
    rx.await.unwrap();
    assert!(group.cancel_task(id));
    // Bounded: without the cancel the blocking task would wait forever.
    let joined = tokio::time::timeout(Duration::from_secs(5), group.wait()).await;
    assert_eq!(joined.expect("the blocking task noticed"), Ok(vec![5]));
}

/// Without a grace, a task cancelled on its own is dropped at once: `next`
/// shows it `Cancelled`.
#[tokio::test]
async fn next_shows_a_task_cancelled_on_its_own_without_a_grace_as_cancelled() {
    let mut group = TaskGroup::<u32, String>::new();
    let (id, ctx) = spawn_watcher(&mut group);
    ctx.await.unwrap();
    assert!(group.cancel_task(id));
    assert!(matches!(group.next().await, Some((ended, Outcome::Cancelled)) if ended == id));
}

/// With a grace, a task cancelled on its own ends as it returns: `next`
/// shows its `Err` as it is.
#[tokio::test]
async fn next_shows_the_err_of_a_task_cancelled_on_its_own_within_a_grace() {
    let mut group = graceful();
    let (id, ctx) = spawn_watcher(&mut group);
    ctx.await.unwrap();
    assert!(group.cancel_task(id));
    let (ended, outcome) = group.next().await.unwrap();
    assert_eq!(ended, id);
    assert_eq!(
        outcome.err(),
        Some("stopped: context cancelled".to_string())
    );
}

/// With a grace, `wait_outcomes` too shows the `Err` of a task cancelled
/// on its own.
#[tokio::test]
async fn wait_outcomes_shows_the_err_of_a_task_cancelled_on_its_own_within_a_grace() {
    let mut group = graceful();
    let (id, ctx) = spawn_watcher(&mut group);
    ctx.await.unwrap();
    group.cancel_task(id);
    let outcomes = group.wait_outcomes().await;
    assert!(matches!(&outcomes[..], [Outcome::Err(e)] if e == "stopped: context cancelled"));
}

#[tokio::test]
async fn no_built_in_joiner_cancels_the_group_for_an_err_after_cancel_task() {
    // FailFast: covered above (the group goes on, the task is left out).
    // FirstOk: the stopped task's error is no failure of its own.
    let mut group = TaskGroup::<u32, String>::builder()
        .joiner(FirstOk)
        .grace(Duration::from_secs(5))
        .build();
    let (id, ctx) = spawn_watcher(&mut group);
    group.spawn(|_ctx| async { Err("replica down".to_string()) });
    ctx.await.unwrap();
    group.cancel_task(id);
    let all_failed = group.wait().await.unwrap_err();
    assert_eq!(all_failed.errors().len(), 1);
    assert_eq!(all_failed.errors()[0].1, "replica down");
    assert_eq!(all_failed.context_error(), None);

    // Supervise: every outcome, the stopped task's `Err` included.
    let mut group = TaskGroup::<u32, String>::builder()
        .joiner(Supervise)
        .grace(Duration::from_secs(5))
        .build();
    let (id, ctx) = spawn_watcher(&mut group);
    ctx.await.unwrap();
    group.cancel_task(id);
    let outcomes = group.wait().await;
    assert!(matches!(&outcomes[..], [Outcome::Err(_)]));
}

#[tokio::test]
async fn a_task_cancelled_on_its_own_that_returns_ok_keeps_its_value() {
    let mut group = graceful();
    let (tx, rx) = oneshot::channel();
    let id = group.spawn(|ctx| async move {
        let _ = tx.send(());
        ctx.done().await;
        Ok(9)
    });
    rx.await.unwrap();
    group.cancel_task(id);
    assert_eq!(group.wait().await, Ok(vec![9]));
}

#[tokio::test]
async fn a_panic_after_cancel_task_is_still_a_panic() {
    let mut group = graceful();
    let (tx, rx) = oneshot::channel();
    let id = group.spawn(|ctx| async move {
        let _ = tx.send(());
        ctx.done().await;
        panic!("bug in the stop path");
    });
    let (sibling_ctx_tx, sibling_ctx) = oneshot::channel();
    group.spawn(|ctx| async move {
        let _ = sibling_ctx_tx.send(ctx.clone());
        ctx.done().await;
        Ok(1)
    });
    rx.await.unwrap();
    let sibling = sibling_ctx.await.unwrap();
    group.cancel_task(id);
    let panicked = tokio::spawn(group.wait()).await.unwrap_err();
    assert!(panicked.is_panic());
    assert!(sibling.is_cancelled(), "the panic cancelled the group");
}

#[tokio::test]
async fn cancel_task_on_an_unknown_or_ended_task_is_false() {
    let mut group = TaskGroup::<u32, String>::new();
    let id = group.spawn(|_ctx| async { Ok(1) });
    assert!(matches!(group.next().await, Some((_, Outcome::Ok(1)))));
    assert!(!group.cancel_task(id));
    let stranger = TaskGroup::<u32, String>::new().spawner();
    drop(stranger);
    let mut other = TaskGroup::<u32, String>::new();
    let far = other.spawn(|_ctx| async { Ok(1) });
    other.spawn(|_ctx| async { Ok(2) });
    let unknown = other.spawn(|_ctx| async { Ok(3) });
    assert!(!group.cancel_task(unknown), "no task 2 in this group");
    assert!(!group.cancel_task(far));
    assert_eq!(other.wait().await, Ok(vec![1, 2, 3]));
}

#[tokio::test]
async fn a_group_cancel_after_cancel_task_is_reported_as_the_groups() {
    let mut group = graceful();
    let (id, ctx) = spawn_watcher(&mut group);
    let ctx = ctx.await.unwrap();
    group.cancel();
    // Already cancelled through the group: keeps the group's cause.
    assert!(group.cancel_task(id));
    assert!(!ctx.cause().unwrap().to_string().contains("cancel_task"));
    assert_eq!(
        group.wait().await,
        Err(GroupError::Cancelled(ContextError::Cancelled))
    );
}

// --- Discard -------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn discard_never_cancels_the_group_on_an_error_or_a_panic() {
    let mut group = TaskGroup::<(), String>::builder().joiner(Discard).build();
    group.spawn(|_ctx| async { Err("boom".to_string()) });
    group.spawn(|_ctx| async { panic!("first") });
    group.spawn(|_ctx| async { panic!("second") });
    let sibling = group.spawn(|ctx| async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        ctx.check().map_err(|e| e.to_string())
    });
    let _ = sibling;
    let mut tally = group.wait().await;
    assert_eq!(tally.ok(), 1, "the sibling ran to its end");
    assert_eq!(tally.failed(), 1);
    assert_eq!(tally.panicked(), 2);
    assert_eq!(tally.cancelled(), 0);
    let first = tally.take_panic().unwrap();
    assert_eq!(support::message(&*first), "first");
    assert!(tally.take_panic().is_none(), "taken once");
}

#[tokio::test(start_paused = true)]
async fn discard_hands_out_nothing_and_ends_once_every_task_ended() {
    let mut group = TaskGroup::<u32, String>::builder().joiner(Discard).build();
    for ms in [10, 20] {
        group.spawn(move |_ctx| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(1)
        });
    }
    assert_eq!(group.len(), 2, "counts the tasks not yet ended");
    assert!(group.try_next().is_none());
    let started = Instant::now();
    assert!(group.next().await.is_none());
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(20),
        "None once every task ended"
    );
    assert_eq!(group.len(), 0);
    group.spawn(|_ctx| async { Ok(3) });
    assert!(
        StreamExt::next(&mut group).await.is_none(),
        "the Stream too"
    );
    assert_eq!(group.wait().await.ok(), 3);
}

#[tokio::test]
async fn discard_counts_tasks_cancelled_from_outside_or_on_their_own() {
    let mut group = TaskGroup::<u32, String>::builder()
        .joiner(Discard)
        .grace(Duration::from_secs(5))
        .build();
    let (id, ctx) = spawn_watcher(&mut group);
    ctx.await.unwrap();
    assert!(group.cancel_task(id)); // returns `Err` after the stop
    support::eventually("the stopped task ends", || group.is_empty()).await;
    group.spawn(|_ctx| async { Ok(1) });
    let tally = group.shutdown(Duration::ZERO).await.output;
    assert_eq!((tally.ok(), tally.failed(), tally.cancelled()), (1, 0, 1));

    let mut group = TaskGroup::<u32, String>::builder().joiner(Discard).build();
    group.spawn(|ctx| async move {
        ctx.done().await;
        Ok(1)
    });
    tokio::task::yield_now().await;
    group.cancel();
    group.spawn(|_ctx| async { Ok(2) }); // never starts
    let tally = group.wait().await;
    assert_eq!((tally.ok(), tally.cancelled()), (0, 2));
    assert!(format!("{tally:?}").contains("cancelled: 2"));
}

#[tokio::test]
async fn the_queue_goes_on_when_the_running_task_is_cancelled_on_its_own() {
    let mut group = TaskGroup::<u32, String>::builder().limit(1).build();
    let deaf = group.spawn(|_ctx| std::future::pending());
    group.spawn(|_ctx| async { Ok(2) });
    tokio::task::yield_now().await;
    assert!(group.cancel_task(deaf));
    // Dropped by `cancel_task`: its slot goes to the queued task.
    assert_eq!(group.wait().await, Ok(vec![2]));
}

#[tokio::test]
async fn a_task_dropped_by_cancel_task_is_no_straggler_of_a_later_shutdown() {
    let mut group = TaskGroup::<u32, String>::builder().joiner(Discard).build();
    let deaf = group
        .build_task()
        .name("deaf")
        .spawn(|_ctx| std::future::pending());
    group
        .build_task()
        .name("also deaf")
        .spawn(|_ctx| std::future::pending());
    tokio::task::yield_now().await;
    assert!(group.cancel_task(deaf));
    support::eventually("the kicked task ends", || group.len() == 1).await;
    let report = group.shutdown(Duration::ZERO).await;
    let names: Vec<_> = report.stragglers().iter().map(|t| t.name()).collect();
    assert_eq!(names, [Some("also deaf")]);
    assert_eq!(report.output.cancelled(), 2);
}
