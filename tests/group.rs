//! `TaskGroup`: Go's errgroup tests, ported, then the contract of
//! DESIGN.md's "TaskGroup" section, bullet by bullet.
//!
//! Timing is deterministic: paused time (`start_paused`), channels and
//! `Notify` for ordering. In a paused current-thread runtime,
//! [`run_until_idle`] returns only once no task can make progress, so it
//! stands for "let everything that can run, run", never for "sleep long
//! enough".

mod support;
use support::ms;
use support::{DropFlag, drop_flag};
use support::{Gauge, alive_tasks, payload_str, run_until_idle};

use std::any::Any;
use std::cell::Cell;
use std::collections::HashSet;
use std::error::Error as _;
use std::future::pending;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt as _;
use taskgroup::{
    Context, ContextError, GroupError, Outcome, TaskFailed, TaskGroup, TaskGroupBuilder, TaskId,
};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::{Instant, sleep};
use tokio_test::{assert_pending, assert_ready, task};

// ---------------------------------------------------------------------------
// Helpers

/// Waits (bounded, never a fixed sleep) until the runtime is back to
/// `baseline` alive tasks.
async fn until_alive_tasks(baseline: usize) {
    for i in 0..2_100 {
        if alive_tasks() == baseline {
            return;
        }
        if i < 100 {
            tokio::task::yield_now().await;
        } else {
            // Other threads may be slow to get to it: up to about 2 s.
            sleep(ms(1)).await;
        }
    }
    panic!(
        "alive tasks stayed at {}, baseline {baseline}",
        alive_tasks()
    );
}

/// A blocking task's way to wait for its context: poll it between steps.
fn poll_until_cancelled(ctx: &Context) {
    while ctx.check().is_ok() {
        std::thread::sleep(ms(1));
    }
}

/// A task that ignores its context: it never returns, however often the
/// group asks it to stop.
async fn ignore_context_forever(flag: DropFlag) -> Result<(), String> {
    let _flag = flag;
    loop {
        sleep(ms(1)).await;
    }
}

/// Sleeps `delay` (ignoring its context), then panics with `payload`.
async fn panic_after<P: Any + Send + 'static>(delay: Duration, payload: P) -> Result<(), String> {
    sleep(delay).await;
    std::panic::panic_any(payload)
}

/// A spawn closure that panics itself, before any future exists.
fn panicking_closure(_ctx: Context) -> std::future::Ready<Result<(), String>> {
    std::panic::panic_any("expected panic: in the closure")
}

/// Silences the panic messages of the panics these tests cause on purpose
/// (payloads starting with "expected panic"); any other panic still prints.
fn quiet_expected_panics() {
    support::quiet_panics(|message| {
        message.starts_with("expected panic") || message.contains("limit must be")
    });
}

fn task_failed(ctx: &Context) -> TaskFailed {
    ctx.cause()
        .expect("the context is cancelled")
        .downcast_ref::<TaskFailed>()
        .expect("the cause is a TaskFailed")
        .clone()
}

// ---------------------------------------------------------------------------
// Go's x/sync/errgroup tests, ported

/// TestZeroGroup, the empty part: a new group waits for nothing.
#[tokio::test(start_paused = true)]
async fn zero_group_waits_for_nothing() {
    let group = TaskGroup::<(), String>::new();
    assert!(group.is_empty());
    assert_eq!(group.len(), 0);
    assert_eq!(group.wait().await, Ok(vec![]));

    let group: TaskGroup<u8, String> = TaskGroup::default();
    assert!(group.wait_outcomes().await.is_empty());
}

/// TestZeroGroup: a group without a context returns the first error; Go
/// waits after every `Go`, so every prefix of each case is checked.
#[tokio::test(start_paused = true)]
async fn zero_group_returns_the_first_error() {
    let err1 = "errgroup_test: 1";
    let err2 = "errgroup_test: 2";
    let cases: [&[Option<&'static str>]; 5] = [
        &[],
        &[None],
        &[Some(err1)],
        &[Some(err1), None],
        &[Some(err1), None, Some(err2)],
    ];
    for errs in cases {
        for n in 0..=errs.len() {
            let mut group = TaskGroup::<(), String>::new();
            for (i, err) in errs[..n].iter().copied().enumerate() {
                group.spawn(move |_ctx| async move {
                    // In spawn order, in time: task i ends at i * 10 ms.
                    sleep(ms(10 * i as u64)).await;
                    err.map_or(Ok(()), |e| Err(e.to_string()))
                });
            }
            let first = errs[..n].iter().flatten().next();
            match first {
                None => assert_eq!(group.wait().await, Ok(vec![(); n])),
                Some(first) => assert_eq!(
                    group.wait().await,
                    Err(GroupError::Failed(first.to_string())),
                    "case {errs:?}, prefix {n}"
                ),
            }
        }
    }
}

/// TestWithContext: the first error cancels the group's context, with a
/// cause that names the task and includes the error; after `wait` the
/// context is cancelled whatever happened; the parent never is.
#[tokio::test(start_paused = true)]
async fn with_context_first_error_cancels_the_group_context() {
    let doom = "group_test: doomed";
    let cases: [&[Option<&'static str>]; 5] = [
        &[],
        &[None],
        &[Some(doom)],
        &[Some(doom), None],
        &[None, Some(doom)],
    ];
    for errs in cases {
        let (parent, _keep) = Context::background().with_cancel();
        let mut group = TaskGroup::<(), String>::builder()
            .name("doom")
            .context(&parent)
            .build();
        let ctx = group.context().clone();
        assert!(!ctx.is_cancelled());
        for err in errs.iter().copied() {
            group.spawn(move |_ctx| async move { err.map_or(Ok(()), |e| Err(e.to_string())) });
        }
        let got = group.wait().await;

        assert!(ctx.is_cancelled(), "after wait the group context is done");
        assert!(!parent.is_cancelled(), "a group never cancels its parent");
        match errs.iter().position(Option::is_some) {
            None => {
                assert_eq!(got, Ok(vec![(); errs.len()]));
                assert_eq!(ctx.err(), Some(ContextError::Cancelled));
                let cause = ctx.cause().unwrap();
                assert!(cause.downcast_ref::<TaskFailed>().is_none());
            }
            Some(at) => {
                assert_eq!(got, Err(GroupError::Failed(doom.to_string())));
                assert_eq!(ctx.err(), Some(ContextError::Cancelled));
                let cause = ctx.cause().unwrap();
                assert!(cause.to_string().contains(doom), "cause: {cause}");
                let failed = task_failed(&ctx);
                assert_eq!(failed.task().index(), at as u64);
                assert_eq!(failed.group(), Some("doom"));
                assert!(!failed.is_panic());
                assert_eq!(failed.message(), doom);
                assert_eq!(
                    cause.to_string(),
                    format!("task {at} of group \"doom\" failed: {doom}")
                );
            }
        }
    }
}

/// TestGoLimit: with a limit of 10, 1,025 tasks never run more than 10 at
/// once, on a multi-thread runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_of_10_is_never_exceeded_by_1025_tasks() {
    const LIMIT: usize = 10;
    let gauge = Arc::new(Gauge::default());
    let mut group = TaskGroup::<usize, String>::builder().limit(LIMIT).build();
    for i in 0..1025 {
        let gauge = gauge.clone();
        group.spawn(move |_ctx| {
            let active = gauge.enter();
            async move {
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                drop(active);
                Ok(i)
            }
        });
    }
    assert_eq!(group.wait().await, Ok((0..1025).collect()));
    assert!(gauge.max() <= LIMIT, "{} ran at once", gauge.max());
    assert_eq!(gauge.now(), 0);
}

/// The same limit with paused time: the tasks overlap, so the limit is
/// reached, and never passed.
#[tokio::test(start_paused = true)]
async fn limit_is_reached_and_never_exceeded() {
    const LIMIT: usize = 10;
    let gauge = Arc::new(Gauge::default());
    let mut group = TaskGroup::<usize, String>::builder().limit(LIMIT).build();
    for i in 0..1025 {
        let gauge = gauge.clone();
        group.spawn(move |_ctx| {
            let active = gauge.enter();
            async move {
                sleep(ms(1 + (i % 3) as u64)).await;
                drop(active);
                Ok(i)
            }
        });
    }
    assert_eq!(group.wait().await.unwrap().len(), 1025);
    assert_eq!(gauge.max(), LIMIT);
}

/// A task's future, boxed: one type for every [`blocked`] task.
type Blocked = std::pin::Pin<Box<dyn Future<Output = Result<u32, String>> + Send>>;

/// A task that takes (and keeps) one permit of `sem`, then returns `tag`.
/// One closure type for every call, so a refused one can be spawned again.
fn blocked(sem: Arc<Semaphore>, tag: u32) -> impl FnOnce(Context) -> Blocked {
    move |_ctx: Context| -> Blocked {
        Box::pin(async move {
            sem.acquire().await.unwrap().forget();
            Ok(tag)
        })
    }
}

/// TestTryGo: `try_spawn` succeeds up to the limit, gives the closure back
/// at it, and succeeds again, with that closure, once a slot frees.
#[tokio::test(start_paused = true)]
async fn try_spawn_at_the_limit_gives_the_closure_back() {
    const N: usize = 42;
    let sem = Arc::new(Semaphore::new(0));
    let mut group = TaskGroup::<u32, String>::builder().limit(N).build();
    for i in 0..N {
        let id = group
            .try_spawn(blocked(sem.clone(), 0))
            .unwrap_or_else(|_| panic!("try_spawn should succeed at call {i}"));
        assert_eq!(id.index(), i as u64);
    }
    let refused = group
        .try_spawn(blocked(sem.clone(), 99))
        .expect_err("try_spawn is expected to fail at the limit");
    assert_eq!(group.len(), N, "a refused closure is not a task");

    sem.add_permits(N);
    for _ in 0..N {
        assert!(matches!(group.next().await, Some((_, Outcome::Ok(0)))));
    }
    // The closure handed back is the one given: it returns its tag.
    let id = group
        .try_spawn(refused)
        .unwrap_or_else(|_| panic!("try_spawn should succeed after all tasks"));
    assert_eq!(id.index(), N as u64, "a refused try_spawn takes no id");
    sem.add_permits(1);
    assert!(matches!(group.next().await, Some((got, Outcome::Ok(99))) if got == id));
}

/// Limit 1: one slot, which a running task and a queued one both fill, so
/// `try_spawn` gives the closure back; finished, unread tasks count in
/// `len()` but hold no slot.
#[tokio::test(start_paused = true)]
async fn try_spawn_counts_running_and_queued_tasks_against_the_limit_but_not_finished_ones() {
    let sem = Arc::new(Semaphore::new(0));
    let mut group = TaskGroup::<u32, String>::builder().limit(1).build();
    assert!(group.try_spawn(blocked(sem.clone(), 1)).is_ok());
    let two = group.try_spawn(blocked(sem.clone(), 2)).unwrap_err();
    sem.add_permits(1);
    group.ready().await; // a slot freed
    assert!(group.try_spawn(two).is_ok());
    group.spawn(blocked(sem.clone(), 3)); // queued behind task 2
    let four = group.try_spawn(blocked(sem.clone(), 4)).unwrap_err();
    sem.add_permits(2);
    run_until_idle().await;
    // Finished, unread tasks count in len() but hold no slot.
    assert_eq!(group.len(), 3);
    assert!(group.try_spawn(four).is_ok());
    sem.add_permits(1);
    run_until_idle().await;
    assert_eq!(group.wait().await, Ok(vec![1, 2, 3, 4]));
}

/// A cancelled group refuses `try_spawn` even with a free slot; `wait`
/// still returns what its tasks finished before the cancel.
#[tokio::test(start_paused = true)]
async fn try_spawn_into_a_cancelled_group_is_refused_even_with_room() {
    let sem = Arc::new(Semaphore::new(0));
    let mut group = TaskGroup::<u32, String>::builder().limit(1).build();
    assert!(group.try_spawn(blocked(sem.clone(), 1)).is_ok());
    sem.add_permits(1);
    run_until_idle().await;
    // Finished and unread: it holds no slot, so there is room.
    assert_eq!(group.len(), 1);
    assert_ready!(task::spawn(group.ready()).poll());

    group.cancel();
    assert!(group.try_spawn(blocked(sem.clone(), 5)).is_err());
    assert_eq!(
        group.wait().await,
        Ok(vec![1]),
        "all finished before the cancel"
    );
}

// ---------------------------------------------------------------------------
// Results and the first error

/// Values come back in spawn order, whatever the completion order.
#[tokio::test(start_paused = true)]
async fn values_come_back_in_spawn_order_whatever_the_completion_order() {
    let delays = [30, 10, 50, 0, 20, 40];
    let finished = Arc::new(Mutex::new(Vec::new()));
    let mut group = TaskGroup::<u64, String>::new();
    for (i, delay) in delays.into_iter().enumerate() {
        let finished = finished.clone();
        group.spawn(move |ctx| async move {
            ctx.sleep(ms(delay)).await.map_err(|e| e.to_string())?;
            finished.lock().unwrap().push(i);
            Ok(delay)
        });
    }
    assert_eq!(group.wait().await, Ok(delays.to_vec()));
    assert_eq!(*finished.lock().unwrap(), [3, 1, 4, 0, 5, 2]);
}

/// The first error in time wins, not the first in spawn order.
#[tokio::test(start_paused = true)]
async fn the_first_error_in_time_wins() {
    let mut group = TaskGroup::<(), String>::new();
    let ctx = group.context().clone();
    group.spawn(|_ctx| async {
        sleep(ms(20)).await; // ignores its context: it is dropped
        Err("second".to_string())
    });
    group.spawn(|_ctx| async {
        sleep(ms(10)).await;
        Err("first".to_string())
    });
    assert_eq!(
        group.wait().await,
        Err(GroupError::Failed("first".to_string()))
    );
    assert_eq!(task_failed(&ctx).task().index(), 1);
}

/// An error a task returns after the first one (here because the first one
/// cancelled it) never replaces it: `wait` returns the first,
/// `wait_outcomes` shows both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_errors_never_replace_the_first() {
    for outcomes in [false, true] {
        let mut group = TaskGroup::<(), String>::new();
        let ctx = group.context().clone();
        let (started, running) = oneshot::channel();
        group.spawn_blocking(move |ctx| {
            started.send(()).unwrap();
            poll_until_cancelled(&ctx);
            Err("late".to_string())
        });
        running.await.unwrap();
        group.spawn(|_ctx| async { Err("first".to_string()) });
        if outcomes {
            let all = group.wait_outcomes().await;
            assert!(matches!(&all[0], Outcome::Err(e) if e == "late"));
            assert!(matches!(&all[1], Outcome::Err(e) if e == "first"));
        } else {
            assert_eq!(
                group.wait().await,
                Err(GroupError::Failed("first".to_string()))
            );
        }
        assert_eq!(task_failed(&ctx).task().index(), 1);
        assert_eq!(task_failed(&ctx).message(), "first");
    }
}

/// Errors that tasks return after an outside cancel (because of it) do not
/// turn `Cancelled` into `Failed`; `wait_outcomes` shows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_after_an_outside_cancel_keep_it_cancelled() {
    for outcomes in [false, true] {
        let mut group = TaskGroup::<(), String>::new();
        let ctx = group.context().clone();
        let (started, running) = oneshot::channel();
        group.spawn_blocking(move |ctx| {
            started.send(()).unwrap();
            poll_until_cancelled(&ctx);
            Err(format!("stopped: {}", ctx.err().unwrap()))
        });
        running.await.unwrap();
        group.cancel();
        if outcomes {
            let all = group.wait_outcomes().await;
            assert!(matches!(&all[0], Outcome::Err(e) if e == "stopped: context cancelled"));
        } else {
            assert_eq!(
                group.wait().await,
                Err(GroupError::Cancelled(ContextError::Cancelled))
            );
        }
        let cause = ctx.cause().unwrap();
        assert!(cause.downcast_ref::<TaskFailed>().is_none(), "{cause}");
    }

    // The same with an async task that cancels the parent itself and then
    // fails in the same poll, and with the parent's deadline.
    let (parent, cancel) = Context::background().with_cancel();
    let mut group = TaskGroup::<(), String>::with_context(&parent);
    group.spawn(move |ctx| async move {
        cancel.cancel();
        Err(format!("saw: {}", ctx.err().unwrap()))
    });
    assert_eq!(
        group.wait().await,
        Err(GroupError::Cancelled(ContextError::Cancelled))
    );
}

/// If every task finished `Ok` before the cancel, `wait` is `Ok`.
#[tokio::test(start_paused = true)]
async fn all_ok_before_the_cancel_is_ok() {
    let mut group = TaskGroup::<u32, String>::new();
    for i in 0..3 {
        group.spawn(move |_ctx| async move { Ok(i) });
    }
    run_until_idle().await;
    group.cancel();
    assert_eq!(group.wait().await, Ok(vec![0, 1, 2]));

    let (parent, cancel) = Context::background().with_cancel();
    let mut group = TaskGroup::<u32, String>::with_context(&parent);
    group.spawn(|_ctx| async { Ok(7) });
    run_until_idle().await;
    cancel.cancel();
    assert_eq!(group.wait().await, Ok(vec![7]));
}

/// A task that returns `Ok` after the outside cancel did not finish before
/// it: the group was cancelled before every task finished.
#[tokio::test(start_paused = true)]
async fn ok_returned_after_an_outside_cancel_is_cancelled() {
    let (parent, cancel) = Context::background().with_cancel();
    let mut group = TaskGroup::<u32, String>::with_context(&parent);
    group.spawn(|_ctx| async { Ok(1) });
    run_until_idle().await; // task 0 finishes before the cancel
    group.spawn(move |_ctx| async move {
        cancel.cancel();
        Ok(2)
    });
    assert_eq!(
        group.wait().await,
        Err(GroupError::Cancelled(ContextError::Cancelled))
    );
}

/// The same with a blocking task that notices the cancel and returns what
/// it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_ok_after_an_outside_cancel_is_cancelled() {
    let mut group = TaskGroup::<u32, String>::new();
    let (started, running) = oneshot::channel();
    group.spawn_blocking(move |ctx| {
        started.send(()).unwrap();
        poll_until_cancelled(&ctx);
        Ok(5) // a partial result
    });
    running.await.unwrap();
    group.cancel();
    assert_eq!(
        group.wait().await,
        Err(GroupError::Cancelled(ContextError::Cancelled))
    );
}

// ---------------------------------------------------------------------------
// Cancellation reaches every task

/// A sibling that ignores its context is still dropped, by the time `wait`
/// returns.
#[tokio::test(start_paused = true)]
async fn siblings_that_ignore_their_context_are_dropped() {
    let (pending_flag, pending_dropped) = drop_flag();
    let (looping_flag, looping_dropped) = drop_flag();
    let mut group = TaskGroup::<(), String>::new();
    group.spawn(move |_ctx| async move {
        let _flag = pending_flag;
        pending::<()>().await;
        Ok(())
    });
    group.spawn(move |_ctx| ignore_context_forever(looping_flag));
    group.spawn(|_ctx| async {
        sleep(ms(10)).await;
        Err("fail".to_string())
    });
    assert_eq!(
        group.wait().await,
        Err(GroupError::Failed("fail".to_string()))
    );
    assert!(pending_dropped.load(SeqCst));
    assert!(looping_dropped.load(SeqCst));
}

/// Sets its flag when dropped, after taking its time: a destructor that
/// flushes or closes something.
struct SlowDrop(Arc<AtomicBool>);

impl Drop for SlowDrop {
    fn drop(&mut self) {
        std::thread::sleep(ms(50));
        self.0.store(true, SeqCst);
    }
}

/// On a multi-thread runtime too, a dropped task's destructors have all
/// run when `wait` returns: a task is not reported finished while its
/// future is still being dropped on another thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_after_dropped_tasks_finished_dropping() {
    for outside in [false, true] {
        let dropped = Arc::new(AtomicBool::new(false));
        let slow = SlowDrop(dropped.clone());
        let mut group = TaskGroup::<(), String>::new();
        let (started, running) = oneshot::channel();
        group.spawn(move |_ctx| async move {
            let _slow = slow;
            started.send(()).unwrap();
            pending::<()>().await;
            Ok(())
        });
        running.await.unwrap();
        if outside {
            group.cancel();
            let _ = group.wait().await;
        } else {
            group.spawn(|_ctx| async { Err("fail".to_string()) });
            let _ = group.wait().await;
        }
        assert!(
            dropped.load(SeqCst),
            "wait returned before the task was dropped"
        );
    }
}

/// The closures still queued when the group is cancelled are dropped by
/// the time `wait` returns, even when the cancel comes from another thread
/// and a closure's destructor takes its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_closures_are_dropped_by_the_time_wait_returns() {
    for wait_all in [false, true] {
        let dropped = Arc::new(AtomicBool::new(false));
        let slow = SlowDrop(dropped.clone());
        let (parent, cancel) = Context::background().with_cancel();
        let mut group = TaskGroup::<(), String>::builder()
            .limit(1)
            .context(&parent)
            .build();
        let (started, running) = oneshot::channel();
        group.spawn(move |_ctx| async move {
            started.send(()).unwrap();
            pending().await
        });
        group.spawn(move |_ctx| {
            let _keep = slow;
            async { Ok(()) }
        });
        running.await.unwrap();
        let canceller = std::thread::spawn(move || cancel.cancel());
        if wait_all {
            assert!(
                group
                    .wait_outcomes()
                    .await
                    .iter()
                    .all(Outcome::is_cancelled)
            );
        } else {
            assert_eq!(
                group.wait().await,
                Err(GroupError::Cancelled(ContextError::Cancelled))
            );
        }
        assert!(
            dropped.load(SeqCst),
            "wait returned before the queued closure was dropped"
        );
        canceller.join().unwrap();
    }
}

/// A queued closure whose destructor panics when the cancel drops it: the
/// panic is that task's (`Outcome::Panicked`, re-raised by `wait`), never
/// the canceller's, and `wait` still returns with every task accounted for.
#[tokio::test(start_paused = true)]
async fn a_panicking_destructor_in_a_queued_closure_is_its_tasks_panic() {
    struct PanicOnDrop;

    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            std::panic::panic_any("expected panic: in a destructor");
        }
    }

    quiet_expected_panics();
    // Cancelled from outside.
    let mut group = TaskGroup::<(), String>::builder().limit(1).build();
    group.spawn(|_ctx| pending());
    let bomb = PanicOnDrop;
    group.spawn(move |_ctx| {
        let _keep = bomb;
        async { Ok(()) }
    });
    let (flag, dropped) = drop_flag();
    group.spawn(move |_ctx| {
        let _keep = flag;
        async { Ok(()) }
    });
    group.cancel();
    assert!(
        dropped.load(SeqCst),
        "the other queued closures are dropped"
    );
    let outcomes = tokio::time::timeout(ms(1_000), group.wait_outcomes())
        .await
        .expect("wait_outcomes hung");
    assert_eq!(outcomes.len(), 3);
    assert!(outcomes[0].is_cancelled() && outcomes[2].is_cancelled());
    let payload = outcomes.into_iter().nth(1).unwrap().into_panic().unwrap();
    assert_eq!(payload_str(&*payload), "expected panic: in a destructor");

    // Cancelled by a failing task, whose completion drops the queue.
    let mut group = TaskGroup::<(), String>::builder().limit(1).build();
    group.spawn(|_ctx| async {
        sleep(ms(10)).await;
        Err("first".to_string())
    });
    let bomb = PanicOnDrop;
    group.spawn(move |_ctx| {
        let _keep = bomb;
        async { Ok(()) }
    });
    let waited = tokio::time::timeout(ms(1_000), AssertUnwindSafe(group.wait()).catch_unwind())
        .await
        .expect("wait hung");
    let payload = waited.expect_err("the destructor's panic outranks the error");
    assert_eq!(payload_str(&*payload), "expected panic: in a destructor");
}

/// A task spawned into a cancelled group never runs, and counts as
/// cancelled.
#[tokio::test]
async fn spawn_into_a_cancelled_group_never_runs_the_closure() {
    let called = Arc::new(AtomicBool::new(false));
    let mut group = TaskGroup::<u32, String>::new();
    group.cancel();
    let first = {
        let called = called.clone();
        group.spawn(move |_ctx| {
            called.store(true, SeqCst);
            async { Ok(1) }
        })
    };
    let second = {
        let called = called.clone();
        group.spawn_blocking(move |_ctx| {
            called.store(true, SeqCst);
            Ok(2)
        })
    };
    assert_eq!((first.index(), second.index()), (0, 1));
    assert!(group.try_spawn(|_ctx| async { Ok(3) }).is_err());
    assert_eq!(group.len(), 2, "they count, as cancelled tasks");
    let outcomes = group.wait_outcomes().await;
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(Outcome::is_cancelled));
    assert!(!called.load(SeqCst));

    // A group made from a context already over is born cancelled.
    let (parent, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let mut group = TaskGroup::<u32, String>::with_context(&parent);
    assert!(group.context().is_cancelled());
    let called2 = called.clone();
    group.spawn(move |_ctx| {
        called2.store(true, SeqCst);
        async { Ok(1) }
    });
    assert_eq!(
        group.wait().await,
        Err(GroupError::Cancelled(ContextError::Cancelled))
    );
    assert!(!called.load(SeqCst));
}

/// The first error cancels the group before its slot can go to a queued
/// closure: with a limit of 1, nothing queued ever starts.
#[tokio::test(start_paused = true)]
async fn queued_tasks_never_start_after_the_first_error() {
    let started = Arc::new(AtomicUsize::new(0));
    let mut group = TaskGroup::<(), String>::builder().limit(1).build();
    group.spawn(|_ctx| async {
        sleep(ms(10)).await;
        Err("first".to_string())
    });
    for _ in 0..5 {
        let in_async = started.clone();
        group.spawn(move |_ctx| {
            in_async.fetch_add(1, SeqCst);
            async { Ok(()) }
        });
        let in_blocking = started.clone();
        group.spawn_blocking(move |_ctx| {
            in_blocking.fetch_add(1, SeqCst);
            Ok(())
        });
    }
    assert_eq!(group.len(), 11);
    let outcomes = group.wait_outcomes().await;
    assert_eq!(started.load(SeqCst), 0);
    assert!(matches!(&outcomes[0], Outcome::Err(e) if e == "first"));
    assert_eq!(outcomes.len(), 11);
    assert!(outcomes[1..].iter().all(Outcome::is_cancelled));

    // Same when the first task panics instead.
    quiet_expected_panics();
    let mut group = TaskGroup::<(), String>::builder().limit(1).build();
    group.spawn(|_ctx| panic_after(ms(10), "expected panic: first"));
    let started2 = started.clone();
    group.spawn(move |_ctx| {
        started2.fetch_add(1, SeqCst);
        async { Ok(()) }
    });
    let outcomes = group.wait_outcomes().await;
    assert!(outcomes[0].is_panicked() && outcomes[1].is_cancelled());
    assert_eq!(started.load(SeqCst), 0);
}

/// The parent's deadline cancels the group: `wait` reports
/// `DeadlineExceeded` when it passes, however the tasks behave.
#[tokio::test(start_paused = true)]
async fn parent_deadline_cancels_the_group() {
    let start = Instant::now();
    let (parent, _cancel) = Context::background().with_timeout(ms(100));
    let mut group = TaskGroup::<(), String>::with_context(&parent);
    group.spawn(|_ctx| pending());
    let (flag, dropped) = drop_flag();
    group.spawn(move |_ctx| ignore_context_forever(flag));
    group.spawn(|ctx| async move { ctx.sleep(ms(1_000)).await.map_err(|e| e.to_string()) });
    group.spawn(|_ctx| async { Ok(()) });
    let ctx = group.context().clone();
    assert_eq!(ctx.deadline(), parent.deadline());
    assert_eq!(
        group.wait().await,
        Err(GroupError::Cancelled(ContextError::DeadlineExceeded))
    );
    let elapsed = start.elapsed();
    assert!(elapsed >= ms(100) && elapsed < ms(102), "{elapsed:?}");
    assert!(dropped.load(SeqCst));
    assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
}

// ---------------------------------------------------------------------------
// Panics

/// `wait` re-raises a task's panic, with its payload, after dropping the
/// siblings.
#[tokio::test(start_paused = true)]
async fn wait_reraises_a_panic_with_its_payload_after_dropping_siblings() {
    quiet_expected_panics();
    let (flag, dropped) = drop_flag();
    let mut group = TaskGroup::<(), String>::new();
    let ctx = group.context().clone();
    group.spawn(move |_ctx| ignore_context_forever(flag));
    group.spawn(|_ctx| panic_after(ms(10), "expected panic: boom"));
    group.spawn(|_ctx| async { Ok(()) });
    let payload = AssertUnwindSafe(group.wait())
        .catch_unwind()
        .await
        .expect_err("wait re-raises the panic");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"expected panic: boom")
    );
    assert!(dropped.load(SeqCst), "the sibling was dropped first");
    let failed = task_failed(&ctx);
    assert!(failed.is_panic());
    assert_eq!(failed.task().index(), 1);
    assert_eq!(failed.message(), "expected panic: boom");
    assert!(
        ctx.cause()
            .unwrap()
            .to_string()
            .contains("panicked: expected panic: boom")
    );
}

/// A `String` payload, seen through a spawned `wait` and its `JoinError`;
/// and a panic in the spawn closure itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_reraises_a_string_payload_in_the_caller_task() {
    quiet_expected_panics();
    let (flag, dropped) = drop_flag();
    let mut group = TaskGroup::<(), String>::new();
    group.spawn(move |_ctx| async move {
        let _flag = flag;
        pending::<()>().await;
        Ok(())
    });
    group.spawn(|_ctx| async {
        tokio::task::yield_now().await;
        std::panic::panic_any(format!("expected panic: task {}", 1))
    });
    let error = tokio::spawn(group.wait()).await.unwrap_err();
    assert!(error.is_panic());
    let payload = error.into_panic();
    assert_eq!(
        payload.downcast_ref::<String>().map(String::as_str),
        Some("expected panic: task 1")
    );
    assert!(dropped.load(SeqCst));

    let mut group = TaskGroup::<(), String>::new();
    group.spawn(panicking_closure);
    let payload = tokio::spawn(group.wait()).await.unwrap_err().into_panic();
    assert_eq!(payload_str(&*payload), "expected panic: in the closure");
}

/// A panic outranks an error, whichever came first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_outranks_an_error() {
    quiet_expected_panics();
    // The error first; a blocking task then panics because of the cancel.
    let mut group = TaskGroup::<(), String>::new();
    let (started, running) = oneshot::channel();
    group.spawn_blocking(move |ctx| {
        started.send(()).unwrap();
        poll_until_cancelled(&ctx);
        std::panic::panic_any("expected panic: late")
    });
    running.await.unwrap();
    group.spawn(|_ctx| async { Err("first".to_string()) });
    let payload = AssertUnwindSafe(group.wait())
        .catch_unwind()
        .await
        .unwrap_err();
    assert_eq!(payload_str(&*payload), "expected panic: late");

    // The panic first; a blocking task then fails because of the cancel.
    let mut group = TaskGroup::<(), String>::new();
    let (started, running) = oneshot::channel();
    group.spawn_blocking(move |ctx| {
        started.send(()).unwrap();
        poll_until_cancelled(&ctx);
        Err("late".to_string())
    });
    running.await.unwrap();
    group.spawn(|_ctx| async { std::panic::panic_any("expected panic: first") });
    let payload = AssertUnwindSafe(group.wait())
        .catch_unwind()
        .await
        .unwrap_err();
    assert_eq!(payload_str(&*payload), "expected panic: first");
}

/// Of two panics, `wait` re-raises the first in time, the one that
/// cancelled the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_reraises_the_first_panic() {
    quiet_expected_panics();
    for _ in 0..20 {
        let mut group = TaskGroup::<(), String>::new();
        let ctx = group.context().clone();
        let (started, running) = oneshot::channel();
        group.spawn_blocking(move |ctx| {
            started.send(()).unwrap();
            poll_until_cancelled(&ctx);
            std::panic::panic_any("expected panic: second")
        });
        running.await.unwrap();
        group.spawn(|_ctx| async { std::panic::panic_any("expected panic: first") });
        let payload = AssertUnwindSafe(group.wait())
            .catch_unwind()
            .await
            .unwrap_err();
        assert_eq!(payload_str(&*payload), "expected panic: first");
        assert_eq!(task_failed(&ctx).task().index(), 1);
    }
}

/// `wait_outcomes` reports a panic instead of re-raising it.
#[tokio::test(start_paused = true)]
async fn wait_outcomes_reports_panics() {
    quiet_expected_panics();
    let mut group = TaskGroup::<u32, String>::new();
    group.spawn(|_ctx| async { Ok(1) });
    group.spawn(|_ctx| async {
        sleep(ms(5)).await;
        std::panic::panic_any("expected panic: reported")
    });
    group.spawn(|_ctx| pending());
    let outcomes = group.wait_outcomes().await;
    assert_eq!(outcomes.len(), 3);
    assert!(matches!(outcomes[0], Outcome::Ok(1)));
    let mut outcomes = outcomes.into_iter().skip(1);
    let first = outcomes.next().unwrap().into_panic().unwrap();
    assert_eq!(payload_str(&*first), "expected panic: reported");
    assert!(outcomes.next().unwrap().is_cancelled());

    // A panic in the spawn closure itself cancels the group at once.
    let mut group = TaskGroup::<u32, String>::new();
    group.spawn(|_ctx| async { Ok(1) });
    group.spawn(panicking_closure_u32);
    assert!(group.context().is_cancelled());
    let outcomes = group.wait_outcomes().await;
    assert!(outcomes[0].is_cancelled(), "cancelled before it ran");
    assert_eq!(
        format!("{:?}", outcomes[1]),
        "Panicked(\"expected panic: in the closure\")"
    );
}

fn panicking_closure_u32(_ctx: Context) -> std::future::Ready<Result<u32, String>> {
    std::panic::panic_any("expected panic: in the closure")
}

// ---------------------------------------------------------------------------
// Structure: nesting, dropping

/// A task may build a group from its own context; cancelling the outer
/// group cancels the inner one at once, and drops its tasks.
#[tokio::test(start_paused = true)]
async fn nested_groups_cancel_outside_in() {
    #[derive(Debug, PartialEq)]
    struct RequestId(u32);

    let (request, _cancel) = Context::background().with_cancel();
    let request = request.with_value(RequestId(7));
    let mut outer = TaskGroup::<(), String>::with_context(&request);
    let (inner_ctx_tx, inner_ctx_rx) = oneshot::channel::<Context>();
    let (flag, inner_task_dropped) = drop_flag();
    let (outer_flag, outer_task_dropped) = drop_flag();
    outer.spawn(move |ctx| async move {
        let _flag = outer_flag;
        let mut inner = TaskGroup::<(), String>::with_context(&ctx);
        inner.spawn(move |ctx| async move {
            assert_eq!(ctx.value::<RequestId>(), Some(&RequestId(7)));
            let _flag = flag;
            pending::<()>().await;
            Ok(())
        });
        inner_ctx_tx.send(inner.context().clone()).unwrap();
        inner.wait().await.map(drop).map_err(|e| e.to_string())
    });
    let inner_ctx = inner_ctx_rx.await.unwrap();
    run_until_idle().await;
    assert!(!inner_ctx.is_cancelled());

    outer.cancel();
    assert!(inner_ctx.is_cancelled(), "at once, when cancel returns");
    assert_eq!(
        outer.wait().await,
        Err(GroupError::Cancelled(ContextError::Cancelled))
    );
    assert!(inner_task_dropped.load(SeqCst));
    assert!(outer_task_dropped.load(SeqCst));
    assert!(!request.is_cancelled());
}

/// An inner failure reaches the outer group only as the outer task's own
/// error; cancelling the inner group never cancels the outer one.
#[tokio::test(start_paused = true)]
async fn inner_groups_never_cancel_the_outer_one() {
    let mut outer = TaskGroup::<u32, String>::new();
    let outer_ctx = outer.context().clone();
    outer.spawn(|ctx| async move {
        let inner = TaskGroup::<(), String>::with_context(&ctx);
        inner.cancel();
        assert!(!ctx.is_cancelled());
        inner.wait().await.map_err(|e| e.to_string())?;
        Ok(1)
    });
    outer.spawn(|ctx| async move {
        let mut inner = TaskGroup::<u32, String>::builder()
            .name("inner")
            .context(&ctx)
            .build();
        inner.spawn(|_ctx| async { Err("inner failure".to_string()) });
        let result = inner.wait().await;
        assert!(!ctx.is_cancelled(), "the inner error stays inside");
        sleep(ms(10)).await;
        result.map(|v| v.len() as u32).map_err(|e| e.to_string())
    });
    assert_eq!(
        outer.wait().await,
        Err(GroupError::Failed("inner failure".to_string()))
    );
    assert_eq!(task_failed(&outer_ctx).task().index(), 1);
}

/// Dropping the `wait` future halfway cancels the group and drops every
/// async task.
#[tokio::test(start_paused = true)]
async fn dropping_the_wait_future_stops_everything() {
    for use_select in [false, true] {
        let baseline = alive_tasks();
        let (a, a_dropped) = drop_flag();
        let (b, b_dropped) = drop_flag();
        let (c, c_dropped) = drop_flag();
        let mut group = TaskGroup::<(), String>::new();
        let ctx = group.context().clone();
        group.spawn(move |_ctx| ignore_context_forever(a));
        group.spawn(move |_ctx| async move {
            let _flag = b;
            pending::<()>().await;
            Ok(())
        });
        group.spawn(move |ctx| async move {
            let _flag = c;
            ctx.sleep(ms(1_000)).await.map_err(|e| e.to_string())
        });
        run_until_idle().await;
        // The three tasks are parked inside the group's runner tasks.
        assert!(alive_tasks() > baseline);
        assert!(!a_dropped.load(SeqCst) && !b_dropped.load(SeqCst) && !c_dropped.load(SeqCst));

        if use_select {
            tokio::select! {
                _ = group.wait() => unreachable!("nothing finishes"),
                () = sleep(ms(10)) => {}
            }
        } else {
            assert!(tokio::time::timeout(ms(10), group.wait()).await.is_err());
        }
        assert!(ctx.is_cancelled(), "dropping wait cancels the group");
        until_alive_tasks(baseline).await;
        assert!(a_dropped.load(SeqCst));
        assert!(b_dropped.load(SeqCst));
        assert!(c_dropped.load(SeqCst));
    }
}

/// Dropping a group without waiting cancels it and drops every async task;
/// a blocking task still running is the only thing that outlives it, until
/// it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_group_without_waiting_drops_async_tasks() {
    let baseline = alive_tasks();
    let (a, a_dropped) = drop_flag();
    let (b, b_dropped) = drop_flag();
    let blocking_done = Arc::new(AtomicBool::new(false));
    let mut group = TaskGroup::<(), String>::builder().limit(3).build();
    let ctx = group.context().clone();
    let (started, running) = oneshot::channel();
    group.spawn(move |_ctx| async move {
        started.send(()).unwrap();
        ignore_context_forever(a).await
    });
    let done = blocking_done.clone();
    let (blocking_started, blocking_running) = oneshot::channel();
    group.spawn_blocking(move |ctx| {
        blocking_started.send(()).unwrap();
        poll_until_cancelled(&ctx);
        done.store(true, SeqCst);
        Ok(())
    });
    group.spawn(move |_ctx| async move {
        let _flag = b;
        pending::<()>().await;
        Ok(())
    });
    let queued = Arc::new(AtomicBool::new(false));
    let queued2 = queued.clone();
    group.spawn(move |_ctx| {
        queued2.store(true, SeqCst);
        async { Ok(()) }
    });
    running.await.unwrap();
    blocking_running.await.unwrap();
    drop(group);
    assert!(ctx.is_cancelled());
    until_alive_tasks(baseline).await;
    assert!(a_dropped.load(SeqCst));
    assert!(b_dropped.load(SeqCst));
    assert!(!queued.load(SeqCst), "a queued closure never starts");
    for _ in 0..2_000 {
        if blocking_done.load(SeqCst) {
            break;
        }
        sleep(ms(1)).await;
    }
    assert!(
        blocking_done.load(SeqCst),
        "the blocking task saw the cancel"
    );
}

// ---------------------------------------------------------------------------
// Blocking tasks

/// Blocking tasks count toward the limit with async ones, and `wait` joins
/// them: values in spawn order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_tasks_count_toward_the_limit_and_are_joined() {
    const LIMIT: usize = 2;
    let gauge = Arc::new(Gauge::default());
    let mut group = TaskGroup::<usize, String>::builder().limit(LIMIT).build();
    for i in 0..12 {
        let gauge = gauge.clone();
        if i % 2 == 0 {
            group.spawn_blocking(move |_ctx| {
                let _active = gauge.enter();
                std::thread::sleep(ms(2));
                Ok(i)
            });
        } else {
            group.spawn(move |_ctx| {
                let active = gauge.enter();
                async move {
                    tokio::task::yield_now().await;
                    drop(active);
                    Ok(i)
                }
            });
        }
    }
    assert_eq!(group.wait().await, Ok((0..12).collect()));
    assert!(gauge.max() <= LIMIT, "{} ran at once", gauge.max());
    assert_eq!(gauge.now(), 0);
}

/// `wait` joins a blocking task that goes on after the cancel: it returns
/// only once the task has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_joins_blocking_tasks_still_running_after_the_cancel() {
    let cleaned_up = Arc::new(AtomicBool::new(false));
    let mut group = TaskGroup::<(), String>::new();
    let (started, running) = oneshot::channel();
    let done = cleaned_up.clone();
    group.spawn_blocking(move |ctx| {
        started.send(()).unwrap();
        poll_until_cancelled(&ctx);
        std::thread::sleep(ms(20)); // cleanup after the cancel
        done.store(true, SeqCst);
        Ok(())
    });
    running.await.unwrap();
    group.spawn(|_ctx| async { Err("fail".to_string()) });
    assert_eq!(
        group.wait().await,
        Err(GroupError::Failed("fail".to_string()))
    );
    assert!(cleaned_up.load(SeqCst));
}

/// A blocking task that polls its context stops after the cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_task_polling_its_context_stops_after_cancel() {
    let mut group = TaskGroup::<u64, ContextError>::new();
    let (started, running) = oneshot::channel();
    group.spawn_blocking(move |ctx| {
        let mut steps = 0;
        started.send(()).unwrap();
        loop {
            ctx.check()?;
            steps += 1;
            std::thread::sleep(Duration::from_micros(100));
            if steps == u64::MAX {
                return Ok(steps);
            }
        }
    });
    running.await.unwrap();
    group.cancel();
    let outcomes = group.wait_outcomes().await;
    assert!(matches!(
        outcomes[..],
        [Outcome::Err(ContextError::Cancelled)]
    ));
}

/// A blocking task that has not started when the group is cancelled never
/// starts: here it waits behind the pool's only thread.
#[test]
fn a_blocking_task_not_started_before_the_cancel_never_starts() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (hold, held) = std::sync::mpsc::channel::<()>();
        let (busy, pool_busy) = oneshot::channel();
        let occupier = tokio::task::spawn_blocking(move || {
            busy.send(()).unwrap();
            held.recv().unwrap();
        });
        pool_busy.await.unwrap();

        let called = Arc::new(AtomicBool::new(false));
        let called2 = called.clone();
        let mut group = TaskGroup::<(), String>::new();
        group.spawn_blocking(move |_ctx| {
            called2.store(true, SeqCst);
            Ok(())
        });
        group.cancel();
        hold.send(()).unwrap();
        occupier.await.unwrap();
        let outcomes = group.wait_outcomes().await;
        assert!(matches!(outcomes[..], [Outcome::Cancelled]));
        assert!(!called.load(SeqCst));
    });
}

// ---------------------------------------------------------------------------
// next()

/// `next` hands tasks out in completion order, with their ids.
#[tokio::test(start_paused = true)]
async fn next_yields_completion_order() {
    let mut group = TaskGroup::<u64, String>::new();
    let ids: Vec<TaskId> = [30, 10, 20]
        .into_iter()
        .map(|delay| {
            group.spawn(move |ctx| async move {
                ctx.sleep(ms(delay)).await.map_err(|e| e.to_string())?;
                Ok(delay)
            })
        })
        .collect();
    let mut order = Vec::new();
    while let Some((id, outcome)) = group.next().await {
        order.push((id, outcome.ok().unwrap()));
    }
    assert_eq!(order, [(ids[1], 10), (ids[2], 20), (ids[0], 30)]);
    assert!(group.next().await.is_none());
    assert!(group.is_empty());
    assert_eq!(group.wait().await, Ok(vec![]));
}

/// Spawning while draining works: a crawler spawns the links each page
/// yields.
#[tokio::test(start_paused = true)]
async fn spawning_while_draining_next_works() {
    let mut group = TaskGroup::<u32, String>::builder().limit(3).build();
    group.spawn(|_ctx| async { Ok(0) });
    let mut pages = 0;
    while let Some((_id, outcome)) = group.next().await {
        let depth = outcome.ok().unwrap();
        pages += 1;
        if depth < 4 {
            for link in 0..2 {
                group.spawn(move |ctx| async move {
                    ctx.sleep(ms(1 + link)).await.map_err(|e| e.to_string())?;
                    Ok(depth + 1)
                });
            }
        }
    }
    assert_eq!(pages, 1 + 2 + 4 + 8 + 16);
    assert!(group.is_empty());
}

/// After some `next` calls, `wait` reports only the rest, in spawn order.
#[tokio::test(start_paused = true)]
async fn wait_after_partial_next_reports_only_the_rest() {
    let mut group = TaskGroup::<u64, String>::new();
    for delay in [30, 10, 20] {
        group.spawn(move |_ctx| async move {
            sleep(ms(delay)).await;
            Ok(delay)
        });
    }
    assert!(matches!(group.next().await, Some((id, Outcome::Ok(10))) if id.index() == 1));
    assert_eq!(group.len(), 2);
    assert_eq!(group.wait().await, Ok(vec![30, 20]));

    let mut group = TaskGroup::<u64, String>::new();
    for delay in [30, 10, 20] {
        group.spawn(move |_ctx| async move {
            sleep(ms(delay)).await;
            Ok(delay)
        });
    }
    group.next().await.unwrap();
    let rest = group.wait_outcomes().await;
    assert!(matches!(rest[..], [Outcome::Ok(30), Outcome::Ok(20)]));
}

/// When `next` already handed out the first error, `wait` reports the rest:
/// `Cancelled` when they were cancelled by it, never that error again.
#[tokio::test(start_paused = true)]
async fn wait_after_next_handed_out_the_first_error_reports_the_cancel_not_the_error_again() {
    let mut group = TaskGroup::<u32, String>::new();
    group.spawn(|_ctx| async {
        sleep(ms(10)).await;
        Err("first".to_string())
    });
    group.spawn(|_ctx| pending());
    group.spawn(|_ctx| async {
        sleep(ms(5)).await;
        Ok(2)
    });
    assert!(matches!(group.next().await, Some((_, Outcome::Ok(2)))));
    assert!(matches!(group.next().await, Some((_, Outcome::Err(e))) if e == "first"));
    assert_eq!(
        group.wait().await,
        Err(GroupError::Cancelled(ContextError::Cancelled))
    );
}

/// `wait_outcomes` after `next` handed out the first error shows the rest,
/// cancelled by it.
#[tokio::test(start_paused = true)]
async fn wait_outcomes_after_next_handed_out_the_first_error_shows_the_cancelled_rest() {
    let mut group = TaskGroup::<u32, String>::new();
    group.spawn(|_ctx| async { Err("first".to_string()) });
    group.spawn(|_ctx| pending());
    assert!(group.next().await.unwrap().1.is_err());
    let rest = group.wait_outcomes().await;
    assert!(matches!(rest[..], [Outcome::Cancelled]));
}

/// Errors the rest returned after the first error's cancel (handed out by
/// `next`) do not become `wait`'s error.
#[tokio::test(start_paused = true)]
async fn errors_returned_after_the_first_errors_cancel_do_not_become_waits_error() {
    let mut group = TaskGroup::<u32, String>::new();
    let (started, running) = oneshot::channel();
    group.spawn_blocking(move |ctx| {
        started.send(()).unwrap();
        poll_until_cancelled(&ctx);
        Err("late".to_string())
    });
    running.await.unwrap();
    group.spawn(|_ctx| async { Err("first".to_string()) });
    assert!(
        matches!(group.next().await, Some((id, Outcome::Err(e))) if id.index() == 1 && e == "first")
    );
    assert_eq!(
        group.wait().await,
        Err(GroupError::Cancelled(ContextError::Cancelled))
    );
}

/// An `Ok` handed out by `next` leaves the first error for `wait`.
#[tokio::test(start_paused = true)]
async fn an_ok_handed_out_by_next_leaves_the_first_error_for_wait() {
    let mut group = TaskGroup::<u32, String>::new();
    group.spawn(|_ctx| async { Ok(1) });
    group.spawn(|_ctx| async {
        sleep(ms(10)).await;
        Err("first".to_string())
    });
    assert!(matches!(group.next().await, Some((_, Outcome::Ok(1)))));
    assert_eq!(
        group.wait().await,
        Err(GroupError::Failed("first".to_string()))
    );
}

/// `next` reports a panic as an outcome; `wait` then does not re-raise it.
#[tokio::test(start_paused = true)]
async fn next_reports_a_panic_and_wait_does_not_reraise_it() {
    quiet_expected_panics();
    let mut group = TaskGroup::<u32, String>::new();
    group.spawn(|_ctx| async { std::panic::panic_any("expected panic: handed out") });
    group.spawn(|_ctx| pending());
    let (_, outcome) = group.next().await.unwrap();
    assert_eq!(
        payload_str(&*outcome.into_panic().unwrap()),
        "expected panic: handed out"
    );
    assert_eq!(
        group.wait().await,
        Err(GroupError::Cancelled(ContextError::Cancelled))
    );
}

// ---------------------------------------------------------------------------
// len(), ready(), the limit

/// `len` counts tasks queued, running, and finished but unread.
#[tokio::test(start_paused = true)]
async fn len_counts_queued_running_and_unread_tasks() {
    let mut group = TaskGroup::<usize, String>::builder().limit(2).build();
    let mut releases = Vec::new();
    for i in 0..4 {
        let (release, released) = oneshot::channel::<()>();
        releases.push(Some(release));
        group.spawn(move |_ctx| async move {
            released.await.map_err(|e| e.to_string())?;
            Ok(i)
        });
    }
    assert_eq!(group.len(), 4, "2 running, 2 queued");
    assert!(!group.is_empty());

    releases[0].take().unwrap().send(()).unwrap();
    run_until_idle().await;
    assert_eq!(group.len(), 4, "1 unread, 2 running, 1 queued");
    assert!(matches!(group.try_next(), Some((_, Outcome::Ok(0)))));
    assert_eq!(group.len(), 3);
    assert!(group.try_next().is_none());

    group.cancel();
    assert_eq!(group.len(), 3, "cancelled tasks count until read");
    run_until_idle().await;
    assert_eq!(group.len(), 3);
    let mut read = 0;
    while let Some((_, outcome)) = group.next().await {
        assert!(outcome.is_cancelled());
        read += 1;
    }
    assert_eq!(read, 3);
    assert_eq!(group.len(), 0);
    assert!(group.is_empty());
}

/// `ready` waits while running and queued tasks fill the limit.
#[tokio::test(start_paused = true)]
async fn ready_waits_while_running_and_queued_tasks_fill_the_limit() {
    let mut group = TaskGroup::<(), String>::builder().limit(2).build();
    assert_ready!(task::spawn(group.ready()).poll());

    let mut releases = Vec::new();
    for _ in 0..3 {
        let (release, released) = oneshot::channel::<()>();
        releases.push(release);
        group.spawn(move |_ctx| async move { released.await.map_err(|e| e.to_string()) });
    }
    // 2 running + 1 queued.
    let mut ready = task::spawn(group.ready());
    assert_pending!(ready.poll());

    let mut releases = releases.into_iter();
    releases.next().unwrap().send(()).unwrap();
    run_until_idle().await;
    // The queued task took the slot: still full.
    assert_pending!(ready.poll());

    releases.next().unwrap().send(()).unwrap();
    run_until_idle().await;
    assert!(ready.is_woken(), "a freed slot wakes ready");
    assert_ready!(ready.poll());
    drop(ready);

    releases.next().unwrap().send(()).unwrap();
    assert_eq!(group.wait().await, Ok(vec![(), (), ()]));
}

/// `ready` returns at once in a group without a limit, and as soon as the
/// group is cancelled, for every waiter.
#[tokio::test(start_paused = true)]
async fn ready_returns_at_once_without_a_limit_or_once_cancelled() {
    let mut group = TaskGroup::<(), String>::new();
    for _ in 0..100 {
        group.spawn(|_ctx| pending());
    }
    assert_ready!(task::spawn(group.ready()).poll());

    let mut group = TaskGroup::<(), String>::builder().limit(1).build();
    group.spawn(|_ctx| pending());
    let mut first = task::spawn(group.ready());
    let mut second = task::spawn(group.ready());
    assert_pending!(first.poll());
    assert_pending!(second.poll());
    group.cancel();
    assert!(first.is_woken());
    assert!(second.is_woken(), "every waiting producer is woken");
    assert_ready!(first.poll());
    assert_ready!(second.poll());
    assert_ready!(task::spawn(group.ready()).poll());
}

/// A producer that calls `ready` before each `spawn` never has more than
/// `limit` tasks queued and running, and never queues at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_using_ready_never_exceeds_the_limit() {
    const LIMIT: usize = 3;
    let gauge = Arc::new(Gauge::default());
    let mut group = TaskGroup::<usize, String>::builder().limit(LIMIT).build();
    let mut handed_out = 0;
    for i in 0..300 {
        group.ready().await;
        while group.try_next().is_some() {
            handed_out += 1;
        }
        // Nothing queued or running was added since `ready` saw room; tasks
        // only finished since (and were read above, or still count here).
        assert!(group.len() < LIMIT, "len {} before spawn {i}", group.len());
        let gauge = gauge.clone();
        group.spawn(move |_ctx| {
            let active = gauge.enter();
            async move {
                tokio::task::yield_now().await;
                drop(active);
                Ok(i)
            }
        });
    }
    let rest = group.wait().await.unwrap();
    assert_eq!(handed_out + rest.len(), 300);
    assert!(gauge.max() <= LIMIT);
}

/// `limit(0)` panics with a message about the limit; it never hangs.
#[test]
fn limit_zero_panics_naming_the_limit() {
    quiet_expected_panics();
    let payload = std::panic::catch_unwind(|| TaskGroup::<(), String>::builder().limit(0))
        .expect_err("limit(0) panics");
    assert!(payload_str(&*payload).contains("limit"));
}

/// When `wait` returns, the group context is cancelled, whatever the
/// result: here every task succeeded and the context was live until then.
#[tokio::test(start_paused = true)]
async fn the_group_context_is_cancelled_when_wait_returns_ok() {
    let mut group = TaskGroup::<(), String>::new();
    let ctx = group.context().clone();
    group.spawn(|_ctx| async { Ok(()) });
    run_until_idle().await;
    assert!(!ctx.is_cancelled());
    assert_eq!(group.wait().await, Ok(vec![()]));
    assert_eq!(ctx.err(), Some(ContextError::Cancelled));
}

/// When `wait_outcomes` returns, the group context is cancelled, even for
/// a group that never had a task.
#[tokio::test(start_paused = true)]
async fn the_group_context_is_cancelled_when_wait_outcomes_returns() {
    let group = TaskGroup::<(), String>::new();
    let ctx = group.context().clone();
    group.wait_outcomes().await;
    assert!(ctx.is_cancelled());
}

/// When `wait` re-raises a task's panic, the group context is cancelled
/// too.
#[tokio::test(start_paused = true)]
async fn the_group_context_is_cancelled_when_wait_re_raises_a_panic() {
    quiet_expected_panics();
    let mut group = TaskGroup::<(), String>::new();
    let ctx = group.context().clone();
    group.spawn(|_ctx| async { std::panic::panic_any("expected panic: cancel") });
    assert!(AssertUnwindSafe(group.wait()).catch_unwind().await.is_err());
    assert!(ctx.is_cancelled());
}

// ---------------------------------------------------------------------------
// The group works without being polled

/// A failing task cancels its siblings' context at once, while nobody is
/// inside `wait` or `next`; and its slot never goes to a queued closure.
#[tokio::test(start_paused = true)]
async fn a_failure_cancels_siblings_without_anyone_waiting() {
    let mut group = TaskGroup::<(), String>::builder()
        .limit(2)
        .name("unpolled")
        .build();
    let (ctx_tx, ctx_rx) = oneshot::channel::<Context>();
    let (fail, failing) = oneshot::channel::<()>();
    group.spawn(move |ctx| async move {
        ctx_tx.send(ctx.clone()).unwrap();
        pending::<()>().await;
        Ok(())
    });
    group.spawn(move |_ctx| async move {
        failing.await.unwrap();
        Err("fail".to_string())
    });
    let started = Arc::new(AtomicBool::new(false));
    let started2 = started.clone();
    group.spawn(move |_ctx| {
        started2.store(true, SeqCst);
        async { Ok(()) }
    });
    let sibling = ctx_rx.await.unwrap();
    run_until_idle().await;
    assert!(!sibling.is_cancelled());

    fail.send(()).unwrap();
    sibling.done().await; // nobody is in wait or next
    assert!(sibling.is_cancelled());
    let failed = task_failed(&sibling);
    assert_eq!(
        (failed.task().index(), failed.group()),
        (1, Some("unpolled"))
    );
    run_until_idle().await;
    assert!(!started.load(SeqCst), "the queued closure never started");
    assert_eq!(group.len(), 3);
    assert_eq!(
        group.wait().await,
        Err(GroupError::Failed("fail".to_string()))
    );
}

/// Queued closures start as slots free, whether or not anyone is inside
/// `wait` or `next`.
#[tokio::test(start_paused = true)]
async fn queued_closures_start_as_slots_free_without_anyone_waiting() {
    let mut group = TaskGroup::<u32, String>::builder().limit(1).build();
    let (release, released) = oneshot::channel::<()>();
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    group.spawn(move |_ctx| async move {
        released.await.map_err(|e| e.to_string())?;
        Ok(0)
    });
    for i in 1..=3 {
        let started_tx = started_tx.clone();
        group.spawn(move |_ctx| {
            started_tx.send(i).unwrap();
            async move { Ok(i) }
        });
    }
    run_until_idle().await;
    assert!(started_rx.try_recv().is_err(), "queued behind task 0");
    release.send(()).unwrap();
    for i in 1..=3 {
        assert_eq!(started_rx.recv().await, Some(i));
    }
    assert_eq!(group.wait().await, Ok(vec![0, 1, 2, 3]));
}

// ---------------------------------------------------------------------------
// The public types

#[test]
fn outcome_accessors() {
    let ok = Outcome::<u8, String>::Ok(1);
    let err = Outcome::<u8, String>::Err("no".to_string());
    let cancelled = Outcome::<u8, String>::Cancelled;
    let panicked = Outcome::<u8, String>::Panicked(Box::new("boom"));
    let flags =
        |o: &Outcome<u8, String>| [o.is_ok(), o.is_err(), o.is_cancelled(), o.is_panicked()];
    assert_eq!(flags(&ok), [true, false, false, false]);
    assert_eq!(flags(&err), [false, true, false, false]);
    assert_eq!(flags(&cancelled), [false, false, true, false]);
    assert_eq!(flags(&panicked), [false, false, false, true]);

    assert_eq!(format!("{ok:?}"), "Ok(1)");
    assert_eq!(format!("{err:?}"), "Err(\"no\")");
    assert_eq!(format!("{cancelled:?}"), "Cancelled");
    assert_eq!(format!("{panicked:?}"), "Panicked(\"boom\")");
    let opaque = Outcome::<u8, String>::Panicked(Box::new(42u32));
    assert_eq!(format!("{opaque:?}"), "Panicked(\"Box<dyn Any>\")");

    assert_eq!(Outcome::<u8, String>::Ok(1).ok(), Some(1));
    assert_eq!(Outcome::<u8, String>::Cancelled.ok(), None);
    assert_eq!(
        Outcome::<u8, String>::Err("no".into()).err(),
        Some("no".into())
    );
    assert_eq!(Outcome::<u8, String>::Ok(1).err(), None);
    assert_eq!(Outcome::<u8, String>::Ok(1).into_result(), Some(Ok(1)));
    assert_eq!(
        Outcome::<u8, String>::Err("no".into()).into_result(),
        Some(Err("no".into()))
    );
    assert_eq!(Outcome::<u8, String>::Cancelled.into_result(), None);
    assert!(
        Outcome::<u8, String>::Panicked(Box::new(1))
            .into_result()
            .is_none()
    );
    assert!(Outcome::<u8, String>::Ok(1).into_panic().is_none());
    let payload = panicked.into_panic().unwrap();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
}

#[tokio::test(start_paused = true)]
async fn task_ids_are_spawn_indexes() {
    let mut group = TaskGroup::<(), String>::builder().limit(1).build();
    let a = group.spawn(|_ctx| async { Ok(()) });
    let b = group.spawn_blocking(|_ctx| Ok(()));
    let c = group.spawn(|_ctx| async { Ok(()) }); // queued
    assert!(group.try_spawn(|_ctx| async { Ok(()) }).is_err());
    group.ready().await;
    let d = group
        .try_spawn(|_ctx| async { Ok(()) })
        .map_err(|_| ())
        .unwrap();
    assert_eq!(
        [a, b, c, d].map(TaskId::index),
        [0, 1, 2, 3],
        "refused try_spawn takes no id"
    );
    assert!(a < b && b < c && c < d);
    assert_eq!(d.to_string(), "task 3");
    assert_eq!(format!("{a:?}"), "TaskId(0)");
    let set: HashSet<TaskId> = [a, b, c, d, a].into_iter().collect();
    assert_eq!(set.len(), 4);

    let mut seen = Vec::new();
    while let Some((id, outcome)) = group.next().await {
        assert!(outcome.is_ok());
        seen.push(id);
    }
    seen.sort();
    assert_eq!(seen, [a, b, c, d]);
}

#[test]
fn group_error_accessors() {
    let failed = GroupError::Failed("boom".to_string());
    let cancelled = GroupError::<String>::Cancelled(ContextError::Cancelled);
    let expired = GroupError::<String>::Cancelled(ContextError::DeadlineExceeded);
    assert!(failed.is_failed() && !failed.is_cancelled());
    assert!(cancelled.is_cancelled() && !cancelled.is_failed());
    assert_eq!(failed.failed(), Some(&"boom".to_string()));
    assert_eq!(cancelled.failed(), None);
    assert_eq!(failed.context_error(), None);
    assert_eq!(cancelled.context_error(), Some(ContextError::Cancelled));
    assert_eq!(
        expired.context_error(),
        Some(ContextError::DeadlineExceeded)
    );
    assert_eq!(failed.to_string(), "boom");
    assert_eq!(
        cancelled.to_string(),
        "task group cancelled: context cancelled"
    );
    assert_eq!(
        expired.to_string(),
        "task group cancelled: context deadline exceeded"
    );
    assert_eq!(format!("{failed:?}"), "Failed(\"boom\")");
    assert_ne!(cancelled, expired);
    assert_eq!(failed.into_failed(), Some("boom".to_string()));
    assert_eq!(cancelled.into_failed(), None);
}

#[derive(Debug)]
struct DiskOnFire;

impl std::fmt::Display for DiskOnFire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("disk on fire")
    }
}

impl std::error::Error for DiskOnFire {}

#[derive(Debug)]
struct ReadFailed(DiskOnFire);

impl std::fmt::Display for ReadFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("could not read block 7")
    }
}

impl std::error::Error for ReadFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

fn chain(error: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut chain = Vec::new();
    let mut next = Some(error);
    while let Some(error) = next {
        chain.push(error.to_string());
        next = error.source();
    }
    chain
}

/// `GroupError<io::Error>` is an error whose Display and source are the
/// task's error's own: a report does not say the same thing twice.
#[tokio::test]
async fn a_failed_groups_io_error_displays_and_sources_as_the_tasks_own() {
    let mut group = TaskGroup::<(), io::Error>::new();
    group.spawn(|_ctx| async { Err(io::Error::other(ReadFailed(DiskOnFire))) });
    let error = group.wait().await.unwrap_err();
    assert_eq!(error.to_string(), "could not read block 7");
    assert_eq!(chain(&error), ["could not read block 7", "disk on fire"]);
    let io = error.into_failed().unwrap();
    assert_eq!(io.kind(), io::ErrorKind::Other);
    assert!(io.get_ref().unwrap().is::<ReadFailed>());
}

/// A cancelled `GroupError<io::Error>` says so, and its source is the
/// context error.
#[test]
fn a_cancelled_group_error_displays_the_cancel_and_sources_the_context_error() {
    let cancelled = GroupError::<io::Error>::Cancelled(ContextError::DeadlineExceeded);
    assert_eq!(
        chain(&cancelled),
        [
            "task group cancelled: context deadline exceeded",
            "context deadline exceeded"
        ]
    );
    assert_eq!(
        cancelled.source().unwrap().downcast_ref::<ContextError>(),
        Some(&ContextError::DeadlineExceeded)
    );
}

/// `?` on a context check inside io code; the group's cause names the
/// group, the task and the io error.
#[tokio::test]
async fn a_context_check_with_question_mark_in_io_code_fails_the_group_with_the_io_error() {
    let mut group = TaskGroup::<(), io::Error>::builder().name("io").build();
    let ctx = group.context().clone();
    group.spawn(|ctx| async move {
        ctx.check()?;
        Err(io::Error::new(io::ErrorKind::NotFound, "no such file"))
    });
    let error = group.wait().await.unwrap_err();
    assert_eq!(error.failed().unwrap().kind(), io::ErrorKind::NotFound);
    assert_eq!(
        ctx.cause().unwrap().to_string(),
        "task 0 of group \"io\" failed: no such file"
    );
}

/// `E` needs only `Display` (and `Debug` to print it): no `Error`, no
/// `Clone`, no `PartialEq`.
#[tokio::test]
async fn an_error_type_needs_only_display() {
    #[derive(Debug)]
    struct Oops(u8);

    impl std::fmt::Display for Oops {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "oops {}", self.0)
        }
    }

    let mut group = TaskGroup::<(), Oops>::builder().name("plain").build();
    let ctx = group.context().clone();
    group.spawn(|_ctx| async { Err(Oops(3)) });
    let error = group.wait().await.unwrap_err();
    assert_eq!(error.to_string(), "oops 3");
    assert_eq!(error.into_failed().map(|e| e.0), Some(3));
    assert_eq!(task_failed(&ctx).message(), "oops 3");
}

fn assert_send_sync<T: Send + Sync>() {}
fn assert_send<T: Send>(_: &T) {}

/// `TaskGroup<T, E>` is `Send + Sync` for `Send` T and E (even when they
/// are not `Sync`), and so are its builder and errors.
#[test]
fn auto_traits() {
    assert_send_sync::<TaskGroup<u8, String>>();
    assert_send_sync::<TaskGroup<Cell<u8>, io::Error>>();
    assert_send_sync::<TaskGroupBuilder<Cell<u8>, String>>();
    assert_send_sync::<GroupError<io::Error>>();
    assert_send_sync::<TaskFailed>();
    assert_send_sync::<TaskId>();
    assert_send_sync::<Context>();
    fn assert_outcome_send<T: Send, E: Send>() {
        fn send<X: Send>() {}
        send::<Outcome<T, E>>();
    }
    assert_outcome_send::<Cell<u8>, io::Error>();
}

/// The futures of `wait`, `wait_outcomes`, `next` and `ready` are `Send`:
/// they can be spawned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_futures_are_send_and_can_be_spawned() {
    fn group() -> TaskGroup<Cell<u8>, String> {
        let mut group = TaskGroup::<Cell<u8>, String>::builder().limit(1).build();
        group.spawn(|_ctx| async { Ok(Cell::new(1)) });
        group
    }

    let waiting = group();
    let wait = waiting.wait();
    assert_send(&wait);
    let values = tokio::spawn(wait).await.unwrap().unwrap();
    assert_eq!(values[0].get(), 1);

    let outcomes = tokio::spawn(group().wait_outcomes()).await.unwrap();
    assert!(outcomes[0].is_ok());

    let draining = group();
    let id = tokio::spawn(async move { draining.next().await.map(|(id, _)| id) })
        .await
        .unwrap();
    assert_eq!(id.map(TaskId::index), Some(0));

    let shared = Arc::new(group());
    let ready = {
        let shared = shared.clone();
        tokio::spawn(async move { shared.ready().await })
    };
    ready.await.unwrap();
    assert!(format!("{shared:?}").starts_with("TaskGroup"));
}

/// Debug output names the group.
#[test]
fn debug_names_the_group() {
    let group = TaskGroup::<(), String>::builder()
        .name("crawl")
        .limit(4)
        .build();
    let debug = format!("{group:?}");
    assert!(debug.contains("crawl") && debug.contains('4'), "{debug}");
    let builder = TaskGroup::<(), String>::builder().name("crawl");
    assert!(format!("{builder:?}").contains("crawl"));
}

/// The failure that cancels the group comes out of `next` before anything
/// its cancel caused (queued tasks never started, a blocking sibling that
/// noticed the cancel and returned an error of its own), and only once the
/// group is cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_hands_out_the_failure_before_what_its_cancel_caused() {
    for round in 0..200 {
        let group = TaskGroup::<(), String>::builder().limit(2).build();
        let mut group = group;
        let (started, running) = tokio::sync::oneshot::channel();
        group.spawn_blocking(move |ctx| {
            let _ = started.send(());
            while !ctx.is_cancelled() {
                std::hint::spin_loop();
            }
            Err("noticed the cancel".to_string())
        });
        group.spawn(|_ctx| async move {
            let _ = running.await;
            Err("boom".to_string())
        });
        for _ in 0..3 {
            group.spawn(|_ctx| async { Ok(()) }); // queued behind the limit
        }
        let (id, first) = group.next().await.expect("five tasks");
        assert_eq!(id.index(), 1, "round {round}");
        assert!(
            matches!(&first, Outcome::Err(e) if e == "boom"),
            "round {round}"
        );
        assert!(group.context().is_cancelled(), "round {round}");
        let mut rest = Vec::new();
        while let Some((_, outcome)) = group.next().await {
            rest.push(outcome);
        }
        assert_eq!(
            rest.iter().filter(|o| o.is_cancelled()).count(),
            3,
            "round {round}"
        );
        assert!(
            rest.iter()
                .any(|o| matches!(o, Outcome::Err(e) if e == "noticed the cancel")),
            "round {round}"
        );
    }
}

/// Counts the polls of the future it wraps.
struct CountPolls<F> {
    inner: std::pin::Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F: std::future::Future> std::future::Future for CountPolls<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.polls.fetch_add(1, SeqCst);
        self.inner.as_mut().poll(cx)
    }
}

/// `wait` sleeps until the group is joined: the tasks ending one at a
/// time, a hundred of them, wake it once, not once each. `next` is woken
/// by every one (it hands each out).
#[tokio::test(flavor = "current_thread")]
async fn wait_is_woken_by_the_last_ending_not_by_each() {
    const TASKS: usize = 100;
    for use_next in [false, true] {
        let mut group = TaskGroup::<usize, String>::new();
        let mut releases = Vec::new();
        for i in 0..TASKS {
            let (tx, rx) = oneshot::channel::<()>();
            releases.push(tx);
            group.spawn(move |_ctx| async move {
                rx.await.map_err(|e| e.to_string())?;
                Ok(i)
            });
        }
        let polls = Arc::new(AtomicUsize::new(0));
        let waiter = CountPolls {
            inner: Box::pin(async move {
                if use_next {
                    let mut n = 0;
                    while let Some((_, outcome)) = group.next().await {
                        assert!(outcome.is_ok());
                        n += 1;
                    }
                    n
                } else {
                    group.wait().await.unwrap().len()
                }
            }),
            polls: polls.clone(),
        };
        let waiter = tokio::spawn(waiter);
        // One ending at a time, each let through to the waiter's turn.
        for tx in releases {
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            tx.send(()).unwrap();
        }
        assert_eq!(waiter.await.unwrap(), TASKS);
        let polls = polls.load(SeqCst);
        if use_next {
            assert!(polls >= TASKS / 2, "next was polled {polls} times");
        } else {
            assert!(
                polls <= 3,
                "wait was polled {polls} times for {TASKS} endings"
            );
        }
    }
}
