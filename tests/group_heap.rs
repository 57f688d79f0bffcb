//! Heap a long-lived group keeps after a burst of tasks, counted by a
//! counting global allocator, per thread: each test drives its group on a
//! current-thread runtime of its own thread and counts only what that
//! thread allocates and frees, so tests running beside it add nothing.
//! (The resident set cannot show it: glibc keeps freed small chunks
//! mapped.)

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
mod support;
use counting_alloc::live_bytes;
use support::alive_tasks;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use taskgroup::{Outcome, TaskGroup};
use tokio::sync::watch;

/// Yields until `done()` holds (a current-thread runtime without a timer).
async fn until(mut done: impl FnMut() -> bool) {
    while !done() {
        tokio::task::yield_now().await;
    }
}

/// A long-lived group once had 100,000 tasks parked at once, all since
/// finished and handed out by `next`: it gives back what the burst made
/// its runner's queues grow to. Its ready queue (8 bytes a task) and its
/// register of parked tasks (16 bytes a task) kept their peak, 3 MiB here
/// and 24 MiB after a million, for as long as the group lived.
#[test]
fn an_idle_group_frees_its_runner_queues_after_a_burst_of_parked_tasks() {
    const TASKS: usize = 100_000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let baseline = alive_tasks();
        let (go_tx, go_rx) = watch::channel(false);
        let parked = Arc::new(AtomicUsize::new(0));
        let mut group = TaskGroup::<(), String>::new();
        // A few tasks first: what the group allocates once, and keeps.
        for _ in 0..8 {
            group.spawn(|_ctx| async {
                tokio::task::yield_now().await;
                Ok(())
            });
        }
        for _ in 0..8 {
            assert!(matches!(group.next().await, Some((_, Outcome::Ok(())))));
        }
        until(|| alive_tasks() == baseline).await;
        let before = live_bytes();

        for _ in 0..TASKS {
            let (mut go, parked) = (go_rx.clone(), parked.clone());
            group.spawn(move |_ctx| async move {
                parked.fetch_add(1, SeqCst);
                go.wait_for(|&go| go).await.map_err(|e| e.to_string())?;
                Ok(())
            });
        }
        until(|| parked.load(SeqCst) == TASKS).await;
        let held = live_bytes() - before;
        go_tx.send(true).unwrap();
        for _ in 0..TASKS {
            assert!(matches!(group.next().await, Some((_, Outcome::Ok(())))));
        }
        until(|| alive_tasks() == baseline).await;
        let left = live_bytes() - before;

        assert!(held > 10_000_000, "the parked tasks are counted: {held} B");
        assert!(group.is_empty());
        assert!(
            left < 4096,
            "{left} B still allocated by an idle group after {TASKS} tasks were \
             parked at once, finished and handed out"
        );
    });
}

/// The group's own bookkeeping gives back a burst too: 100,000 closures
/// queued behind a limit at once (the closure queue), all finished before
/// anyone read them (the queue of finished outcomes), then drained with
/// `try_next`. Both kept their peak before (issue 10, item 8).
#[test]
fn an_idle_group_frees_its_closure_queue_and_finished_outcomes_after_a_burst() {
    const TASKS: usize = 100_000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let baseline = alive_tasks();
        let mut group = TaskGroup::<(), String>::builder().limit(4).build();
        for _ in 0..8 {
            group.spawn(|_ctx| async { Ok(()) });
        }
        until(|| alive_tasks() == baseline && group.try_next().is_some() && group.is_empty()).await;
        // What the group keeps once grown a little: the counting starts here.
        let before = live_bytes();

        let finished = Arc::new(AtomicUsize::new(0));
        for _ in 0..TASKS {
            let finished = finished.clone();
            group.spawn(move |_ctx| async move {
                finished.fetch_add(1, SeqCst);
                Ok(())
            });
        }
        let queued = live_bytes() - before;
        until(|| finished.load(SeqCst) == TASKS && alive_tasks() == baseline).await;
        let unread = live_bytes() - before;
        assert_eq!(group.len(), TASKS, "nothing read yet");
        let mut read = 0;
        while let Some((_, outcome)) = group.try_next() {
            assert!(outcome.is_ok());
            read += 1;
        }
        assert_eq!(read, TASKS);
        let left = live_bytes() - before;

        assert!(
            queued > 1_000_000,
            "the queued closures are counted: {queued} B"
        );
        assert!(
            unread > 500_000,
            "the unread outcomes are counted: {unread} B"
        );
        assert!(
            left < 4096,
            "{left} B still allocated by an idle group after {TASKS} closures were \
             queued, finished unread and drained"
        );
    });
}

/// A server's group never reads its tasks: under `Discard` it keeps none
/// of their outcomes. One that ran a million tasks (in bursts of 10,000,
/// through its limit's queue), some failing and some panicking, holds no
/// more heap than after its first burst, and that first burst left less
/// than 1 KiB (the runner's per-worker tables, bounded by the workers, not
/// by the tasks) beside what a new group holds after its first few tasks.
#[test]
fn a_discard_group_that_ran_a_million_tasks_unread_holds_no_more_than_a_new_one() {
    const TASKS: usize = 1_000_000;
    const BURST: usize = 10_000;
    // The tasks' panics are expected; anything else is reported.
    support::quiet_panics(|message| message.starts_with("task "));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let baseline = alive_tasks();
        let group = TaskGroup::<u64, String>::builder()
            .joiner(taskgroup::Discard)
            .limit(BURST / 2)
            .build();
        let spawner = group.spawner();
        let burst = |first: usize, n: usize| {
            for i in first..first + n {
                let accepted = spawner.spawn(move |_ctx| async move {
                    match i % 1000 {
                        0 => Err(format!("task {i} failed")),
                        1 => panic!("task {i} panicked"),
                        _ => Ok(i as u64),
                    }
                });
                assert!(accepted.is_ok());
            }
        };
        // A new group, after a few tasks (the first panic, kept, among
        // them): the counting starts here.
        burst(0, 8);
        until(|| group.is_empty() && alive_tasks() == baseline).await;
        let new = live_bytes();

        burst(8, BURST);
        until(|| group.is_empty() && alive_tasks() == baseline).await;
        let first_burst = live_bytes() - new;
        let mut spawned = 8 + BURST;
        let mut peak = 0;
        while spawned < TASKS {
            let n = BURST.min(TASKS - spawned);
            burst(spawned, n);
            spawned += n;
            peak = peak.max(live_bytes() - new);
            until(|| group.is_empty()).await;
        }
        until(|| alive_tasks() == baseline).await;
        let left = live_bytes() - new - first_burst;
        assert!(peak > 1_000_000, "a burst is counted: {peak} B");
        assert!(
            first_burst < 1024,
            "the first burst left {first_burst} B beside a new group"
        );
        assert!(
            left <= 0,
            "{left} B more after {TASKS} tasks nobody read than after the first burst"
        );
        let tally = group.wait().await;
        assert_eq!(tally.ok() + tally.failed() + tally.panicked(), TASKS as u64);
        assert_eq!(tally.failed(), 1000);
        assert_eq!(tally.panicked(), 1000);
    });
}

/// Counts a task's future as dropped when it goes, finished or not.
struct CountDrop(Arc<AtomicUsize>);

impl Drop for CountDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

/// The heap a group of `TASKS` parked tasks holds once a cancel has
/// dropped them all, measured by a shielded task that holds the join open,
/// relative to before the cancel; through `shutdown(ZERO)` (`report`) or
/// `group.cancel()` then `wait`.
fn held_after_dropping_parked_tasks(tasks: usize, report: bool) -> isize {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let parked = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        let mut group = TaskGroup::<(), String>::new();
        for _ in 0..tasks {
            let (parked, dropped) = (parked.clone(), CountDrop(dropped.clone()));
            group.spawn(move |_ctx| async move {
                let _dropped = dropped;
                parked.fetch_add(1, SeqCst);
                // Deaf to the cancel: only the group's drop step ends it.
                std::future::pending::<()>().await;
                Ok(())
            });
        }
        let (measured_tx, measured_rx) = tokio::sync::oneshot::channel();
        let (shielded, all_dropped) = (parked.clone(), dropped.clone());
        group.spawn(move |ctx| async move {
            let measured = ctx.shield(std::time::Duration::from_secs(3600), |_| async move {
                shielded.fetch_add(1, SeqCst);
                until(|| all_dropped.load(SeqCst) == tasks).await;
                live_bytes()
            });
            let _ = measured_tx.send(measured.await.map_err(|e| e.to_string())?);
            Ok(())
        });
        until(|| parked.load(SeqCst) == tasks + 1).await;
        let before = live_bytes();
        if report {
            let report = group.shutdown(std::time::Duration::ZERO).await;
            assert_eq!(
                report.stragglers().len(),
                tasks,
                "every parked task is reported"
            );
        } else {
            group.cancel();
            assert!(group.wait().await.is_err());
        }
        measured_rx.await.expect("the shielded task measured") - before
    })
}

/// Only `shutdown` reports the tasks a cancel dropped unfinished (its
/// stragglers); `wait` and `wait_outcomes` consume the group, so once
/// either joins it the group keeps no such record: a fan-out of a million
/// parked tasks ended by its first error held an id and a tag (40 bytes)
/// for each until `wait` returned. Measured while a shielded task holds
/// the join open, after every other task was dropped: `wait` holds at
/// least 32 bytes a task less than `shutdown`, which must keep them.
#[test]
fn wait_keeps_no_record_of_the_tasks_it_dropped_that_only_shutdown_reports() {
    const TASKS: usize = 20_000;
    let by_wait = held_after_dropping_parked_tasks(TASKS, false);
    let by_shutdown = held_after_dropping_parked_tasks(TASKS, true);
    assert!(
        by_shutdown - by_wait >= 32 * TASKS as isize,
        "wait held {by_wait} B, shutdown {by_shutdown} B, after dropping {TASKS} parked tasks"
    );
}
