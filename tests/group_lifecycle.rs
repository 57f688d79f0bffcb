//! Lifecycle: task names and spawn locations, per-task timeouts, a group's
//! grace, shutdown reports and shielded sections. The clock is the subject
//! in most of them: paused time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use taskgroup::{Context, ContextError, GroupError, Outcome, Supervise, TaskFailed, TaskGroup};
use tokio::time::{Instant, sleep};

mod support;
use support::DropFlag;

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(start_paused = true)]
async fn a_task_ending_within_the_grace_reports_what_it_returned() {
    let mut group = TaskGroup::<&str, String>::builder()
        .grace(Duration::from_secs(5))
        .build();
    group.spawn(|ctx| async move {
        ctx.done().await;
        sleep(Duration::from_secs(2)).await;
        Ok("wound down")
    });
    group.spawn(|_ctx| async {
        sleep(HOUR).await;
        Ok("never")
    });
    tokio::task::yield_now().await;
    let start = Instant::now();
    group.cancel();
    let outcomes = group.wait_outcomes().await;
    assert!(matches!(outcomes[0], Outcome::Ok("wound down")));
    assert!(matches!(outcomes[1], Outcome::Cancelled));
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(5),
        "the deaf one ends the grace"
    );
}

#[tokio::test(start_paused = true)]
async fn queued_closures_never_start_during_a_grace() {
    let started = Arc::new(AtomicUsize::new(0));
    let mut group = TaskGroup::<(), String>::builder()
        .limit(1)
        .grace(Duration::from_secs(5))
        .build();
    group.spawn(|ctx| async move {
        ctx.done().await;
        sleep(Duration::from_secs(1)).await;
        Ok(())
    });
    for _ in 0..3 {
        let started = started.clone();
        group.spawn(move |_ctx| async move {
            started.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
    }
    tokio::task::yield_now().await;
    group.cancel();
    let outcomes = group.wait_outcomes().await;
    assert_eq!(started.load(Ordering::SeqCst), 0);
    assert!(outcomes[0].is_ok());
    assert!(
        outcomes[1..]
            .iter()
            .all(|o| matches!(o, Outcome::Cancelled))
    );
}

#[tokio::test(start_paused = true)]
async fn a_stragglers_report_names_it_and_its_spawn_line() {
    let mut group = TaskGroup::<(), String>::new();
    group.spawn(|ctx| async move {
        ctx.done().await;
        Ok(())
    });
    let line = line!() + 1;
    group.build_task().name("deaf").spawn(|_ctx| async {
        sleep(HOUR).await;
        Ok(())
    });
    let unnamed_line = line!() + 1;
    group.spawn(|_ctx| std::future::pending());
    sleep(Duration::from_secs(7)).await;
    let start = Instant::now();
    let report = group.shutdown(Duration::from_secs(2)).await;
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert!(matches!(
        report.output,
        Err(GroupError::Cancelled(ContextError::Cancelled))
    ));
    let stragglers = report.stragglers();
    assert_eq!(stragglers.len(), 2);
    assert_eq!(stragglers[0].id().index(), 1);
    assert_eq!(stragglers[0].name(), Some("deaf"));
    assert_eq!(stragglers[0].spawned_at().file(), file!());
    assert_eq!(stragglers[0].spawned_at().line(), line);
    assert_eq!(stragglers[0].age(), Duration::from_secs(9));
    assert_eq!(stragglers[1].name(), None);
    assert_eq!(stragglers[1].spawned_at().line(), unnamed_line);
    let shown = stragglers[0].to_string();
    assert!(shown.starts_with("task 1 (deaf), spawned at "), "{shown}");
    assert!(report.still_blocking().is_empty());
}

#[tokio::test(start_paused = true)]
async fn shutdown_returns_at_once_when_every_task_ends_early() {
    let mut group = TaskGroup::<u8, String>::builder().joiner(Supervise).build();
    for i in 0..10 {
        group.spawn(move |ctx| async move {
            ctx.done().await;
            Ok(i)
        });
    }
    tokio::task::yield_now().await;
    let start = Instant::now();
    let report = group.shutdown(HOUR).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(report.stragglers().is_empty());
    assert_eq!(report.output.len(), 10);
    assert!(report.output.iter().all(Outcome::is_ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_never_waits_for_a_blocking_task_and_names_it() {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (started, running) = std::sync::mpsc::channel();
    let finished = Arc::new(AtomicBool::new(false));
    let mut group = TaskGroup::<(), String>::builder().joiner(Supervise).build();
    let done = finished.clone();
    group
        .build_task()
        .name("index")
        .spawn_blocking(move |_ctx| {
            started.send(()).unwrap();
            released.recv().unwrap();
            done.store(true, Ordering::SeqCst);
            Ok(())
        });
    // It says so in the poll that returns `Ok`: ended, whenever the
    // shutdown comes.
    let (ending, ended) = std::sync::mpsc::channel();
    group.spawn(move |_ctx| async move {
        ending.send(()).unwrap();
        Ok(())
    });
    running.recv().unwrap();
    ended.recv().unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(10),
        group.shutdown(Duration::from_millis(20)),
    )
    .await
    .expect("a shutdown never hangs on a blocking task");
    assert!(!finished.load(Ordering::SeqCst));
    let still = report.still_blocking();
    assert_eq!(still.len(), 1);
    assert_eq!(still[0].name(), Some("index"));
    assert_eq!(still[0].id().index(), 0);
    assert!(matches!(report.output[0], Outcome::Cancelled));
    assert!(report.output[1].is_ok());
    release.send(()).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_named_tasks_failure_names_it_in_the_cause() {
    let mut group = TaskGroup::<(), String>::builder().name("fetch").build();
    let ctx = group.context().clone();
    group.spawn(|_ctx| std::future::pending());
    group
        .build_task()
        .name("users")
        .spawn(|_ctx| async { Err("down".to_string()) });
    assert_eq!(
        group.wait().await,
        Err(GroupError::Failed("down".to_string()))
    );
    let cause = ctx.cause().unwrap();
    let failed = cause.downcast_ref::<TaskFailed>().unwrap();
    assert_eq!(failed.task_name(), Some("users"));
    assert_eq!(failed.group(), Some("fetch"));
    assert_eq!(
        cause.to_string(),
        "task 1 (users) of group \"fetch\" failed: down"
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_timeout_is_that_tasks_alone() {
    let mut group = TaskGroup::<u8, ContextError>::builder()
        .joiner(Supervise)
        .build();
    group
        .build_task()
        .timeout(Duration::from_millis(300))
        .spawn(|ctx| async move {
            assert!(ctx.deadline().is_some());
            ctx.sleep(Duration::from_secs(1)).await.map(|()| 1)
        });
    group.spawn(|ctx| async move {
        assert_eq!(ctx.deadline(), None);
        ctx.sleep(Duration::from_secs(1)).await.map(|()| 2)
    });
    let start = Instant::now();
    let outcomes = group.wait().await;
    assert!(matches!(
        outcomes[0],
        Outcome::Err(ContextError::DeadlineExceeded)
    ));
    assert!(matches!(outcomes[1], Outcome::Ok(2)));
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_shield_whose_budget_runs_out_is_dropped_with_deadline_exceeded() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let ctx = Context::background();
    let start = Instant::now();
    let out = ctx
        .shield(Duration::from_millis(100), |_ctx| async move {
            let _guard = DropFlag(flag);
            sleep(HOUR).await;
        })
        .await;
    assert_eq!(out, Err(ContextError::DeadlineExceeded));
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(start.elapsed(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn a_shielded_section_outlives_a_dropped_group_by_at_most_its_budget() {
    let finished = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));
    let mut group = TaskGroup::<(), ContextError>::new();
    let (f, d) = (finished.clone(), dropped.clone());
    group.spawn(move |ctx| async move {
        let _guard = DropFlag(d);
        ctx.shield(Duration::from_secs(1), |ctx| async move {
            let ok = ctx.sleep(Duration::from_millis(500)).await;
            f.store(ok.is_ok(), Ordering::SeqCst);
        })
        .await?;
        sleep(HOUR).await; // dropped here: the group is gone
        Ok(())
    });
    sleep(Duration::from_millis(10)).await;
    let start = Instant::now();
    drop(group);
    sleep(Duration::from_millis(100)).await;
    assert!(
        !dropped.load(Ordering::SeqCst),
        "shielded: not dropped with the group"
    );
    sleep(Duration::from_millis(500)).await;
    assert!(finished.load(Ordering::SeqCst), "the section finished");
    assert!(
        dropped.load(Ordering::SeqCst),
        "then the task was dropped at its next await"
    );
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_shielded_section_that_ignores_its_budget_holds_the_group_for_the_budget_only() {
    let mut group = TaskGroup::<(), ContextError>::new();
    group.spawn(|ctx| async move {
        ctx.shield(Duration::from_secs(2), |_ctx| sleep(HOUR))
            .await?;
        Ok(())
    });
    tokio::task::yield_now().await;
    let start = Instant::now();
    group.cancel();
    let outcomes = group.wait_outcomes().await;
    assert!(matches!(
        outcomes[0],
        Outcome::Err(ContextError::DeadlineExceeded)
    ));
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

/// A shutdown's grace ends at 5 s; a task that saw the cancel at once and
/// entered a shield then is not dropped at 5 s but finishes its section
/// (7 s, inside its 10 s budget) and returns what it decided.
#[tokio::test(start_paused = true)]
async fn a_shield_entered_during_a_grace_finishes_past_the_graces_end() {
    let mut group = TaskGroup::<&str, ContextError>::builder()
        .joiner(Supervise)
        .build();
    group.spawn(|ctx| async move {
        ctx.done().await;
        ctx.shield(Duration::from_secs(10), |shielded| async move {
            shielded.sleep(Duration::from_secs(7)).await
        })
        .await??;
        Ok("checkpoint written")
    });
    tokio::task::yield_now().await;
    let start = Instant::now();
    let report = group.shutdown(Duration::from_secs(5)).await;
    assert!(
        matches!(report.output[..], [Outcome::Ok("checkpoint written")]),
        "{:?}",
        report.output
    );
    assert_eq!(start.elapsed(), Duration::from_secs(7));
    assert!(report.stragglers().is_empty(), "{:?}", report.stragglers());
}

#[tokio::test(start_paused = true)]
async fn a_callers_select_dropping_a_shield_outside_a_group_still_wins() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let ctx = Context::background();
    let start = Instant::now();
    tokio::select! {
        _ = ctx.shield(HOUR, |_ctx| async move {
            let _guard = DropFlag(flag);
            sleep(HOUR).await;
        }) => unreachable!("the shield's section sleeps an hour"),
        () = sleep(Duration::from_millis(5)) => {}
    }
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(start.elapsed(), Duration::from_millis(5));
}

#[tokio::test(start_paused = true)]
async fn nested_shields_take_the_earlier_deadline_and_keep_values() {
    let (ctx, cancel) = Context::background().with_value(7u32).with_cancel();
    cancel.cancel();
    let start = Instant::now();
    let outer = ctx
        .shield(Duration::from_secs(1), |outer| async move {
            assert!(!outer.is_cancelled());
            assert_eq!(outer.value::<u32>(), Some(&7));
            let inner_deadline = outer
                .shield(
                    Duration::from_secs(60),
                    |inner| async move { inner.deadline() },
                )
                .await
                .unwrap();
            assert_eq!(inner_deadline, outer.deadline());
            outer
                .shield(HOUR, |inner| async move { inner.sleep(HOUR).await })
                .await
        })
        .await;
    // Both sections end at the outer deadline, whichever notices first.
    assert!(matches!(
        outer,
        Err(ContextError::DeadlineExceeded) | Ok(Err(ContextError::DeadlineExceeded))
    ));
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_zero_budget_shield_never_polls_its_section() {
    let polled = Arc::new(AtomicBool::new(false));
    let flag = polled.clone();
    let out = Context::background()
        .shield(Duration::ZERO, |_ctx| async move {
            flag.store(true, Ordering::SeqCst)
        })
        .await;
    assert_eq!(out, Err(ContextError::DeadlineExceeded));
    assert!(!polled.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn a_panic_inside_a_shielded_section_is_the_tasks_panic() {
    let mut group = TaskGroup::<(), ContextError>::new();
    group.spawn(|ctx| async move {
        ctx.shield(Duration::from_secs(1), |_ctx| async {
            panic!("in the shield")
        })
        .await?;
        Ok(())
    });
    let outcomes = group.wait_outcomes().await;
    assert!(outcomes[0].is_panicked());
}

/// Cancel racing a shield's entry and exit, across threads: the section
/// always finishes, and the task is always dropped or returns, never hangs.
#[test]
fn cancel_racing_shield_entry_and_exit_never_drops_a_section_or_hangs() {
    let rt = support::multi_thread(4);
    rt.block_on(async {
        for round in 0..3000 {
            let finished = Arc::new(AtomicUsize::new(0));
            let entered = Arc::new(AtomicUsize::new(0));
            let mut group = TaskGroup::<(), ContextError>::new();
            for _ in 0..4 {
                let (finished, entered) = (finished.clone(), entered.clone());
                group.spawn(move |ctx| async move {
                    tokio::task::yield_now().await;
                    let _ = ctx
                        .shield(Duration::from_secs(30), |_ctx| async move {
                            entered.fetch_add(1, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            finished.fetch_add(1, Ordering::SeqCst);
                        })
                        .await;
                    tokio::task::yield_now().await;
                    Ok(())
                });
            }
            if round % 2 == 0 {
                tokio::task::yield_now().await;
            }
            group.cancel();
            tokio::time::timeout(Duration::from_secs(30), group.wait_outcomes())
                .await
                .unwrap_or_else(|_| panic!("round {round}: the group never joined"));
            assert_eq!(
                finished.load(Ordering::SeqCst),
                entered.load(Ordering::SeqCst),
                "round {round}: a shielded section was dropped"
            );
        }
    });
}

/// A nonzero grace on a runtime without tokio's timer: the grace's timer
/// fails on its own task, and the tasks are dropped at once, as without a
/// grace (the builder's `grace` docs say so). Nothing hangs.
#[test]
fn a_grace_without_tokios_timer_drops_the_tasks_at_once() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime without the time driver");
    let out = rt.block_on(async {
        let mut group = TaskGroup::<(), String>::builder()
            .grace(Duration::from_secs(3600))
            .build();
        group.spawn(|_ctx| std::future::pending());
        tokio::task::yield_now().await;
        group.cancel();
        group.wait_outcomes().await
    });
    assert!(matches!(out[..], [Outcome::Cancelled]));
}
