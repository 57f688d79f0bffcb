//! `TaskGroup` under load: thousands of randomized rounds on a multi-thread
//! runtime, each checked against what its tasks actually did, a cancel
//! racing spawns and completions across threads, and several `next` and
//! `ready` callers sharing one group across threads.
//!
//! The seed is printed when a round fails; rerun it with
//! `TASKGROUP_STRESS_SEED=<seed>`. `TASKGROUP_STRESS_ROUNDS` changes the
//! number of rounds.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use futures::FutureExt as _;
use taskgroup::{Context, GroupError, Outcome, TaskFailed, TaskGroup};

mod support;
use support::{
    Gauge, GaugeGuard, Rng, SeedReport, Token, alive_tasks, eventually, rounds,
    seed_from_env_or_clock, yields,
};

// ---------------------------------------------------------------------------
// Helpers

/// Silences the panics the tasks raise on purpose ("stress panic ...").
fn quiet_task_panics() {
    support::quiet_panics(|message| message.starts_with("stress panic"));
}

fn panic_payload(task: usize) -> String {
    format!("stress panic {task}")
}

// ---------------------------------------------------------------------------
// What a task does, and what it reports having done

#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// Returns `Ok` after some yields (ignoring its context).
    Ok(u8),
    /// Returns `Err` after some yields.
    Err(u8),
    /// Panics after some yields.
    Panic(u8),
    /// Never returns, ignores its context: only dropping stops it.
    Pending,
    /// A blocking task of some steps that checks its context between them
    /// and, once cancelled, returns `Err` (or `Ok` with what it has).
    Blocking { steps: u8, err_on_cancel: bool },
}

const NONE: u8 = 0;
const RETURNED_OK: u8 = 1;
const RETURNED_ERR: u8 = 2;
const PANICKING: u8 = 3;

/// What one task did, as the task itself saw it.
#[derive(Default)]
struct TaskLog {
    entered: AtomicBool,
    /// How it ended, set just before it returned or panicked.
    ended: AtomicU8,
    /// The group was already cancelled when it returned.
    ended_after_cancel: AtomicBool,
}

/// What a whole round shares with its tasks.
#[derive(Default)]
struct RoundLog {
    gauge: Arc<Gauge>,
    /// Set right after an outside cancel returned.
    cancel_returned: AtomicBool,
    /// Closures entered after the group was (seen) cancelled: see
    /// `late_entry_bound`.
    late_entries: AtomicUsize,
    /// Closures and task futures not yet dropped: see [`Token`].
    alive: Arc<AtomicUsize>,
}

impl RoundLog {
    fn enter(&self, ctx: &Context, task: &TaskLog, blocking: bool) -> GaugeGuard {
        if self.cancel_returned.load(SeqCst) || ctx.is_cancelled() {
            self.late_entries.fetch_add(1, SeqCst);
            if std::env::var_os("TASKGROUP_STRESS_DEBUG").is_some() {
                eprintln!(
                    "late entry: blocking {blocking}, outside cancel returned {}",
                    self.cancel_returned.load(SeqCst)
                );
            }
        }
        assert!(!task.entered.swap(true, SeqCst), "a closure called twice");
        self.gauge.enter()
    }
}

fn end(ctx: &Context, task: &TaskLog, how: u8) {
    task.ended_after_cancel.store(ctx.is_cancelled(), SeqCst);
    task.ended.store(how, SeqCst);
}

/// How many closures may start after the group was cancelled: none was
/// queued or started after the start decision saw the cancel, but a start
/// decided just before it (by the spawner, or by each of at most `limit`
/// completing tasks) can enter its closure just after.
fn late_entry_bound(limit: Option<usize>) -> usize {
    1 + limit.unwrap_or(0)
}

type Group = TaskGroup<usize, usize>;

fn spawn_task(
    group: &mut Group,
    how: u8,
    behaviour: Behaviour,
    index: usize,
    round: &Arc<RoundLog>,
    task: &Arc<TaskLog>,
) -> bool {
    let token = Token::new(&round.alive);
    let (round, task) = (round.clone(), task.clone());
    if let Behaviour::Blocking {
        steps,
        err_on_cancel,
    } = behaviour
    {
        group.spawn_blocking(move |ctx| {
            let _token = token;
            let _active = round.enter(&ctx, &task, true);
            for _ in 0..steps {
                if ctx.is_cancelled() {
                    if err_on_cancel {
                        end(&ctx, &task, RETURNED_ERR);
                        return Err(index);
                    }
                    break;
                }
                std::thread::sleep(Duration::from_micros(20));
            }
            end(&ctx, &task, RETURNED_OK);
            Ok(index)
        });
        return true;
    }
    let closure = move |ctx: Context| {
        let active = round.enter(&ctx, &task, false);
        async move {
            let _token = token;
            let _active = active;
            match behaviour {
                Behaviour::Ok(n) => {
                    yields(u64::from(n)).await;
                    end(&ctx, &task, RETURNED_OK);
                    Ok(index)
                }
                Behaviour::Err(n) => {
                    yields(u64::from(n)).await;
                    end(&ctx, &task, RETURNED_ERR);
                    Err(index)
                }
                Behaviour::Panic(n) => {
                    yields(u64::from(n)).await;
                    end(&ctx, &task, PANICKING);
                    std::panic::panic_any(panic_payload(index))
                }
                Behaviour::Pending => std::future::pending().await,
                Behaviour::Blocking { .. } => unreachable!(),
            }
        }
    };
    match how {
        0 => {
            group.spawn(closure);
            true
        }
        _ => group.try_spawn(closure).is_ok(),
    }
}

fn random_behaviour(rng: &mut Rng, pending_allowed: bool) -> Behaviour {
    let yields = rng.below(4) as u8;
    match rng.below(100) {
        0..45 => Behaviour::Ok(yields),
        45..60 => Behaviour::Err(yields),
        60..67 => Behaviour::Panic(yields),
        67..75 if pending_allowed => Behaviour::Pending,
        67..75 => Behaviour::Ok(yields),
        _ => Behaviour::Blocking {
            steps: rng.below(20) as u8,
            err_on_cancel: rng.chance(50),
        },
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    /// `wait()`, its panic caught.
    Wait,
    /// `wait_outcomes()`, after handing some out with `next()`.
    Outcomes,
    /// Cancel from outside (the group, or its parent), then `wait()`.
    CancelThenWait,
    /// Cancel from outside, then `wait_outcomes()`.
    CancelThenOutcomes,
    /// Drop the group without waiting.
    DropGroup,
    /// Drop the `wait_outcomes()` future after a few polls.
    DropWait,
}

// ---------------------------------------------------------------------------
// Randomized rounds

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_rounds_keep_every_invariant() {
    quiet_task_panics();
    let seed = seed_from_env_or_clock();
    let mut rng = Rng::new(seed);
    let mut report = SeedReport {
        test: "randomized_rounds_keep_every_invariant",
        seed,
        round: 0,
    };
    let baseline = alive_tasks();
    let mut late_total = 0;
    let rounds = rounds(3_000);
    for round in 0..rounds {
        report.round = round;
        late_total += one_round(&mut rng, baseline).await;
    }
    // Racy by a few instructions only: it should almost never happen.
    assert!(
        late_total <= rounds / 100,
        "{late_total} closures started after a cancel in {rounds} rounds"
    );
}

/// Plays one random round and checks it; returns its late entries.
async fn one_round(rng: &mut Rng, baseline: usize) -> usize {
    let end = match rng.below(6) {
        0 => End::Wait,
        1 => End::Outcomes,
        2 => End::CancelThenWait,
        3 => End::CancelThenOutcomes,
        4 => End::DropGroup,
        _ => End::DropWait,
    };
    // A task that never returns is only allowed where something is sure to
    // stop it: a cancel from outside, or a drop.
    let pending_allowed = !matches!(end, End::Wait | End::Outcomes);
    let limit = if rng.chance(30) {
        None
    } else {
        Some(1 + rng.below(4) as usize)
    };
    let (parent, parent_cancel) = Context::background().with_cancel();
    let mut builder = Group::builder().context(&parent);
    if let Some(limit) = limit {
        builder = builder.limit(limit);
    }
    let mut group = builder.build();
    let ctx = group.context().clone();
    let log = Arc::new(RoundLog::default());

    let count = rng.below(11) as usize; // 0: a round that spawns nothing
    let cancel_at = rng.below(count as u64 + 1) as usize;
    let cancel_by_parent = rng.chance(30);
    let mut outside_cancelled = false;
    let mut behaviours = Vec::new();
    let mut logs: Vec<Arc<TaskLog>> = Vec::new();
    // Which task each spawned id is: try_spawn may refuse.
    let mut spawned: Vec<usize> = Vec::new();
    let mut pending_spawned = false;
    for index in 0..count {
        if matches!(end, End::CancelThenWait | End::CancelThenOutcomes) && index == cancel_at {
            outside_cancelled = true;
            cancel(&group, &parent_cancel, cancel_by_parent, &log);
        }
        let behaviour = random_behaviour(rng, pending_allowed);
        let task = Arc::new(TaskLog::default());
        let how = match rng.below(10) {
            0 => 1, // try_spawn
            // `ready` waits for a slot: only where every task holding one
            // is sure to end.
            1 if !pending_spawned => {
                tokio::time::timeout(Duration::from_secs(10), group.ready())
                    .await
                    .expect("ready hung");
                0
            }
            _ => 0,
        };
        pending_spawned |= matches!(behaviour, Behaviour::Pending);
        if spawn_task(&mut group, how, behaviour, index, &log, &task) {
            spawned.push(index);
        }
        behaviours.push(behaviour);
        logs.push(task);
        if rng.chance(20) {
            yields(rng.below(3)).await;
        }
    }
    if matches!(end, End::CancelThenWait | End::CancelThenOutcomes) && cancel_at == count {
        yields(rng.below(4)).await;
        outside_cancelled = true;
        cancel(&group, &parent_cancel, cancel_by_parent, &log);
    }
    assert_eq!(group.len(), spawned.len());

    let check = Check {
        behaviours: &behaviours,
        logs: &logs,
        ctx: &ctx,
        outside_cancelled,
    };
    match end {
        End::Wait | End::CancelThenWait => {
            let result =
                AssertUnwindSafe(tokio::time::timeout(Duration::from_secs(10), group.wait()))
                    .catch_unwind()
                    .await;
            let result = result.map(|r| r.expect("wait hung"));
            assert_eq!(log.alive.load(SeqCst), 0, "user code outlived wait");
            check.wait_result(result, &spawned);
        }
        End::Outcomes | End::CancelThenOutcomes => {
            let mut handed_out = Vec::new();
            for _ in 0..rng.below(3) {
                match group.next().await {
                    Some((id, outcome)) => handed_out.push((spawned[id.index() as usize], outcome)),
                    None => break,
                }
            }
            let rest = tokio::time::timeout(Duration::from_secs(10), group.wait_outcomes())
                .await
                .expect("wait_outcomes hung");
            assert_eq!(
                log.alive.load(SeqCst),
                0,
                "user code outlived wait_outcomes"
            );
            // Every task accounted for exactly once.
            assert_eq!(handed_out.len() + rest.len(), spawned.len());
            let mut seen = vec![false; count];
            for (task, _) in &handed_out {
                assert!(!std::mem::replace(&mut seen[*task], true));
            }
            let rest_ids: Vec<usize> = spawned
                .iter()
                .copied()
                .filter(|task| !seen[*task])
                .collect();
            assert_eq!(rest_ids.len(), rest.len());
            let all: Vec<(usize, Outcome<usize, usize>)> = handed_out
                .into_iter()
                .chain(rest_ids.into_iter().zip(rest))
                .collect();
            check.outcomes(&all, &spawned);
        }
        End::DropGroup => {
            yields(rng.below(4)).await;
            drop(group);
        }
        End::DropWait => {
            let polls = rng.below(6);
            tokio::select! {
                biased;
                outcomes = group.wait_outcomes() => {
                    assert_eq!(log.alive.load(SeqCst), 0, "user code outlived wait_outcomes");
                    assert_eq!(outcomes.len(), spawned.len());
                    let all: Vec<_> = spawned.iter().copied().zip(outcomes).collect();
                    check.outcomes(&all, &spawned);
                }
                () = yields(polls) => {}
            }
        }
    }

    // However the round ended, the group is over and nothing outlives it.
    assert!(
        ctx.is_cancelled(),
        "the group context is cancelled at the end"
    );
    let gauge = log.gauge.clone();
    eventually("every task body ending", || gauge.now() == 0).await;
    let alive = log.alive.clone();
    eventually("every closure and future dropped", || {
        alive.load(SeqCst) == 0
    })
    .await;
    eventually("the runtime going back to its baseline of tasks", || {
        alive_tasks() == baseline
    })
    .await;
    if let Some(limit) = limit {
        let max = log.gauge.max();
        assert!(max <= limit, "{max} bodies ran at once, limit {limit}");
    }
    for (task, behaviour) in logs.iter().zip(&behaviours) {
        if matches!(behaviour, Behaviour::Pending) {
            assert_eq!(task.ended.load(SeqCst), NONE);
        }
    }
    let late = log.late_entries.load(SeqCst);
    assert!(
        late <= late_entry_bound(limit),
        "{late} closures started after the group was cancelled (limit {limit:?})"
    );
    drop(parent_cancel);
    late
}

fn cancel(group: &Group, parent_cancel: &taskgroup::CancelHandle, by_parent: bool, log: &RoundLog) {
    if by_parent {
        parent_cancel.cancel();
    } else {
        group.cancel();
    }
    log.cancel_returned.store(true, SeqCst);
}

struct Check<'a> {
    behaviours: &'a [Behaviour],
    logs: &'a [Arc<TaskLog>],
    ctx: &'a Context,
    outside_cancelled: bool,
}

impl Check<'_> {
    /// The task whose failure cancelled the group, if one did, and whether
    /// it panicked.
    fn winner(&self) -> Option<(usize, bool)> {
        let cause = self.ctx.cause()?;
        let failed = cause.downcast_ref::<TaskFailed>()?;
        Some((failed.task().index() as usize, failed.is_panic()))
    }

    /// Checks the winner against the tasks' own logs; `spawned` maps ids to
    /// tasks.
    fn check_winner(&self, spawned: &[usize]) -> Option<(usize, bool)> {
        let (id, panic) = self.winner()?;
        let task = spawned[id];
        let log = &self.logs[task];
        let expected = if panic { PANICKING } else { RETURNED_ERR };
        assert_eq!(log.ended.load(SeqCst), expected, "the winner's own log");
        assert!(
            !log.ended_after_cancel.load(SeqCst),
            "the winner failed after the group was already cancelled"
        );
        Some((task, panic))
    }

    fn wait_result(
        &self,
        result: Result<Result<Vec<usize>, GroupError<usize>>, Box<dyn std::any::Any + Send>>,
        spawned: &[usize],
    ) {
        let panicked: Vec<usize> = spawned
            .iter()
            .copied()
            .filter(|&t| self.logs[t].ended.load(SeqCst) == PANICKING)
            .collect();
        let winner = self.check_winner(spawned);
        let returned = match result {
            Ok(returned) => {
                assert!(panicked.is_empty(), "a panic was lost: {panicked:?}");
                returned
            }
            Err(payload) => {
                let message = payload
                    .downcast_ref::<String>()
                    .expect("a task's own payload");
                assert!(
                    panicked.iter().any(|&t| *message == panic_payload(t)),
                    "re-raised {message}, panicked {panicked:?}"
                );
                if let Some((task, true)) = winner {
                    assert_eq!(*message, panic_payload(task), "the first panic");
                }
                return;
            }
        };
        match returned {
            Ok(values) => {
                assert_eq!(values, spawned, "values in spawn order");
                assert!(winner.is_none());
                for &t in spawned {
                    let log = &self.logs[t];
                    assert_eq!(log.ended.load(SeqCst), RETURNED_OK);
                    assert!(
                        !log.ended_after_cancel.load(SeqCst),
                        "task {t} returned Ok after the cancel, yet wait is Ok"
                    );
                }
            }
            Err(GroupError::Failed(task)) => {
                assert_eq!(winner, Some((task, false)), "Failed names the first error");
            }
            Err(GroupError::Cancelled(_)) => {
                assert!(
                    self.outside_cancelled,
                    "Cancelled without a cancel from outside"
                );
                assert!(winner.is_none(), "a failure won, yet wait says Cancelled");
            }
        }
        if !self.outside_cancelled {
            // Nothing but a failure can have cancelled it before wait ended.
            let failed = spawned.iter().any(|&t| {
                let log = &self.logs[t];
                matches!(log.ended.load(SeqCst), RETURNED_ERR | PANICKING)
            });
            if failed {
                assert!(winner.is_some(), "a task failed, yet no failure won");
            }
        }
    }

    /// Each outcome against its task's behaviour and log.
    fn outcomes(&self, all: &[(usize, Outcome<usize, usize>)], spawned: &[usize]) {
        for (task, outcome) in all {
            let task = *task;
            let ended = self.logs[task].ended.load(SeqCst);
            let behaviour = self.behaviours[task];
            match outcome {
                Outcome::Ok(value) => {
                    assert_eq!(*value, task);
                    assert_eq!(ended, RETURNED_OK, "task {task} {behaviour:?}");
                }
                Outcome::Err(value) => {
                    assert_eq!(*value, task);
                    assert_eq!(ended, RETURNED_ERR, "task {task} {behaviour:?}");
                }
                Outcome::Panicked(payload) => {
                    assert_eq!(payload.downcast_ref::<String>(), Some(&panic_payload(task)));
                    assert_eq!(ended, PANICKING, "task {task} {behaviour:?}");
                }
                Outcome::Cancelled => {
                    assert_eq!(
                        ended, NONE,
                        "task {task} {behaviour:?} ended, yet Cancelled"
                    );
                }
            }
        }
        // The winner's outcome, unless `next` handed it out.
        if let Some((id, panic)) = self.winner() {
            let task = spawned[id];
            if let Some((_, outcome)) = all.iter().find(|(t, _)| *t == task) {
                if panic {
                    assert!(outcome.is_panicked(), "the winner is reported as it ended");
                } else {
                    assert!(outcome.is_err(), "the winner is reported as it ended");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// A cancel racing spawns and completions

/// A cancel from a plain OS thread races the spawner and tasks finishing on
/// four workers. Every task is accounted for once, none is reported
/// otherwise than it ended, and (but for starts already decided) nothing
/// starts after the cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_races_spawn_and_completion_across_threads() {
    quiet_task_panics();
    let seed = seed_from_env_or_clock();
    let mut rng = Rng::new(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut report = SeedReport {
        test: "cancel_races_spawn_and_completion_across_threads",
        seed,
        round: 0,
    };
    let baseline = alive_tasks();
    let mut late_total = 0;
    let rounds = rounds(3_000) / 4;
    for round in 0..rounds {
        report.round = round;
        let limit = if rng.chance(25) {
            None
        } else {
            Some(1 + rng.below(8) as usize)
        };
        let (parent, cancel) = Context::background().with_cancel();
        let mut builder = Group::builder().context(&parent);
        if let Some(limit) = limit {
            builder = builder.limit(limit);
        }
        let mut group = builder.build();
        let ctx = group.context().clone();
        let log = Arc::new(RoundLog::default());

        let spin = rng.below(20_000);
        let canceller = {
            let log = log.clone();
            std::thread::spawn(move || {
                for _ in 0..spin {
                    std::hint::spin_loop();
                }
                cancel.cancel();
                log.cancel_returned.store(true, SeqCst);
            })
        };
        let count = 1 + rng.below(40) as usize;
        let mut behaviours = Vec::new();
        let mut logs = Vec::new();
        for index in 0..count {
            let behaviour = match rng.below(10) {
                0 => Behaviour::Err(rng.below(2) as u8),
                1 => Behaviour::Blocking {
                    steps: rng.below(3) as u8,
                    err_on_cancel: rng.chance(50),
                },
                _ => Behaviour::Ok(rng.below(2) as u8),
            };
            let task = Arc::new(TaskLog::default());
            assert!(spawn_task(&mut group, 0, behaviour, index, &log, &task));
            behaviours.push(behaviour);
            logs.push(task);
        }
        let outcomes = tokio::time::timeout(Duration::from_secs(10), group.wait_outcomes())
            .await
            .expect("wait_outcomes hung");
        assert_eq!(
            log.alive.load(SeqCst),
            0,
            "user code outlived wait_outcomes"
        );
        canceller.join().unwrap();
        assert_eq!(outcomes.len(), count, "every task accounted for once");
        let check = Check {
            behaviours: &behaviours,
            logs: &logs,
            ctx: &ctx,
            outside_cancelled: true,
        };
        let all: Vec<_> = (0..count).zip(outcomes).collect();
        let spawned: Vec<usize> = (0..count).collect();
        check.outcomes(&all, &spawned);
        check.check_winner(&spawned);
        if let Some(limit) = limit {
            assert!(log.gauge.max() <= limit);
        }
        let late = log.late_entries.load(SeqCst);
        assert!(late <= late_entry_bound(limit), "{late} late starts");
        late_total += late;
        let gauge = log.gauge.clone();
        eventually("every body ending", || gauge.now() == 0).await;
        eventually("back to baseline", || alive_tasks() == baseline).await;
    }
    assert!(
        late_total <= rounds / 20,
        "{late_total} closures started after a cancel in {rounds} rounds"
    );
}

// ---------------------------------------------------------------------------
// Several `next` and `ready` callers at once

/// `next` and `ready` take `&self`: several consumers drain one group from
/// tokio tasks on four workers while its tasks complete (and a cancel from
/// an OS thread races them). Every task is handed to exactly one consumer,
/// every consumer sees the end, and every `ready` caller returns: a
/// completion wakes one waiter, which must pass the wake-up on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_next_and_ready_callers_across_threads_all_finish() {
    let seed = seed_from_env_or_clock();
    let mut rng = Rng::new(seed ^ 0x5851_f42d_4c95_7f2d);
    let mut report = SeedReport {
        test: "concurrent_next_and_ready_callers_across_threads_all_finish",
        seed,
        round: 0,
    };
    let baseline = alive_tasks();
    for round in 0..rounds(3_000) / 6 {
        report.round = round;
        let limit = 1 + rng.below(4) as usize;
        let (parent, cancel) = Context::background().with_cancel();
        let mut group = Group::builder().context(&parent).limit(limit).build();
        let count = 1 + rng.below(30) as usize;
        for index in 0..count {
            let steps = rng.below(3);
            match rng.below(10) {
                0 => group.spawn(move |_ctx| async move {
                    yields(steps).await;
                    Err(index)
                }),
                1 => group.spawn_blocking(move |ctx| {
                    for _ in 0..steps {
                        if ctx.is_cancelled() {
                            break;
                        }
                        std::thread::yield_now();
                    }
                    Ok(index)
                }),
                _ => group.spawn(move |_ctx| async move {
                    yields(steps).await;
                    Ok(index)
                }),
            };
        }
        let canceller = rng.chance(30).then(|| {
            let spin = rng.below(20_000);
            std::thread::spawn(move || {
                for _ in 0..spin {
                    std::hint::spin_loop();
                }
                cancel.cancel();
            })
        });
        let group = Arc::new(group);
        let consumers: Vec<_> = (0..2 + rng.below(3))
            .map(|_| {
                let group = group.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    while let Some((id, _outcome)) = group.next().await {
                        got.push(id.index() as usize);
                    }
                    got
                })
            })
            .collect();
        let producers: Vec<_> = (0..rng.below(4))
            .map(|_| {
                let group = group.clone();
                tokio::spawn(async move { group.ready().await })
            })
            .collect();
        let mut seen = vec![false; count];
        for consumer in consumers {
            let got = tokio::time::timeout(Duration::from_secs(10), consumer)
                .await
                .expect("a next() caller hung")
                .unwrap();
            for id in got {
                assert!(!std::mem::replace(&mut seen[id], true), "task {id} twice");
            }
        }
        assert!(seen.iter().all(|&s| s), "every task handed out");
        for producer in producers {
            tokio::time::timeout(Duration::from_secs(10), producer)
                .await
                .expect("a ready() caller hung")
                .unwrap();
        }
        if let Some(canceller) = canceller {
            canceller.join().unwrap();
        }
        let group = Arc::into_inner(group).expect("every caller is done");
        assert!(group.wait_outcomes().await.is_empty());
        eventually("back to baseline", || alive_tasks() == baseline).await;
    }
}

/// A closure that panics when called is its task's panic, and that panic
/// cancels the group before its slot can go to a queued closure: with
/// `limit(2)` and 50 closures where the 6th panics, no closure after the
/// 6th is ever called (issue 10, item 4: up to 3 were, about 1 run in 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_closure_that_panics_when_called_cancels_before_a_queued_closure_starts() {
    quiet_task_panics();
    for round in 0..rounds(3_000) {
        let later = Arc::new(AtomicUsize::new(0));
        let mut group = Group::builder().limit(2).build();
        for index in 0..50usize {
            let later = later.clone();
            group.spawn(move |_ctx| {
                if index == 5 {
                    std::panic::panic_any(panic_payload(index));
                }
                if index > 5 {
                    later.fetch_add(1, SeqCst);
                }
                async move {
                    yields(index as u64 % 3).await;
                    Ok(index)
                }
            });
        }
        let joined = AssertUnwindSafe(group.wait()).catch_unwind().await;
        let payload = joined.expect_err("wait re-raises the closure's panic");
        assert_eq!(
            payload.downcast_ref::<String>(),
            Some(&panic_payload(5)),
            "round {round}"
        );
        assert_eq!(
            later.load(SeqCst),
            0,
            "round {round}: a later closure started"
        );
    }
}
