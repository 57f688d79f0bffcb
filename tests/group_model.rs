//! Randomized task-group scenarios (proptest), each checked against what its
//! tasks report having done.
//!
//! A scenario is a limit, a list of task plans (ok after a delay, error,
//! panic, pending forever ignoring the context, blocking while polling the
//! context; each may have the driver spawn more tasks when it hands the
//! task's `Ok` out of `next()`, as a crawler does), an optional cancel from
//! outside (the parent's handle from another task, the parent's deadline,
//! or `TaskGroup::cancel`), and how the driver ends: `wait`, `next` then
//! `wait_outcomes`, dropping the group, or dropping the `wait_outcomes`
//! future. Each scenario runs under one join policy: `FailFast` (the
//! default), `Supervise` or `FirstOk`.
//!
//! Invariants, after every scenario:
//! - `FailFast`: the first failure in time is the one `wait` returns (and
//!   the one the group's cause names); later errors never replace it;
//! - `Supervise`: no task's end cancels the group; `wait` returns every
//!   outcome, panics included, and re-raises none;
//! - `FirstOk`: the first `Ok` or panic in time decides; `wait` returns
//!   that `Ok`, re-raises that panic, or, when no task succeeded, every
//!   error in spawn order and the context error exactly when the group was
//!   cancelled from outside;
//! - every task is accounted for exactly once by `next` and
//!   `wait_outcomes`, and each outcome is what the task did;
//! - at most `limit` task bodies run at once;
//! - no closure starts after the group is cancelled;
//! - a panic is never lost: `wait` re-raises one, `wait_outcomes` reports
//!   each;
//! - no user code and no tokio task is alive afterwards.
//!
//! Each scenario runs on a current-thread runtime with paused time, where
//! everything but the blocking pool is deterministic and the checks are
//! exact, and on a multi-thread runtime, where completions race and the
//! checks that depend on a total order are relaxed as noted.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use futures::FutureExt as _;
use proptest::prelude::*;
use taskgroup::{
    AllFailed, CancelHandle, Context, FailFast, FirstOk, GroupError, Joiner, Outcome, Supervise,
    TaskFailed, TaskGroup,
};

mod support;
use support::yields;

/// Cases for the current-thread, paused-time property.
const PAUSED_CASES: u32 = 4_000;
/// Cases for the multi-thread property (a runtime with two workers each).
const MULTI_THREAD_CASES: u32 = 2_000;

// ---------------------------------------------------------------------------
// Scenarios

#[derive(Debug, Clone, Copy, PartialEq)]
enum Behaviour {
    /// Returns `Ok` after a delay (paused milliseconds, or yields).
    Ok(u8),
    Err(u8),
    Panic(u8),
    /// Never completes and never looks at its context.
    Pending,
    /// A blocking task that polls its context up to `spins` times, and
    /// once cancelled returns `Err` or `Ok`.
    Blocking {
        spins: u8,
        err_on_cancel: bool,
    },
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    behaviour: Behaviour,
    /// When `next()` hands out this task's `Ok`, the driver spawns this many
    /// more tasks from the plans not yet used.
    more: u8,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum OutsideCancel {
    None,
    /// Another task cancels the group's parent after a delay.
    Parent(u8),
    /// The parent's own deadline, this far away.
    ParentDeadline(u8),
    /// The driver calls `TaskGroup::cancel` after spawning this many tasks.
    Group(u8),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    Wait,
    /// Hands out up to this many tasks with `next()` (spawning more from
    /// the `Ok`s), then `wait_outcomes`.
    NextThenOutcomes(u8),
    /// Two consumers call `next()` at once until both get `None` (`next`
    /// takes `&self`), then `wait_outcomes` finds nothing left.
    ConcurrentNext,
    /// Drops the group after a delay.
    DropGroup(u8),
    /// Polls `wait_outcomes` for a while, then drops it.
    DropWait(u8),
}

/// The join policy a scenario runs under.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Policy {
    FailFast,
    Supervise,
    FirstOk,
}

#[derive(Debug, Clone)]
struct Scenario {
    policy: Policy,
    limit: Option<usize>,
    /// How many plans are spawned up front; the rest wait for `more`.
    initial: usize,
    plans: Vec<Plan>,
    cancel: OutsideCancel,
    end: End,
}

impl Scenario {
    /// Pending tasks only where something is sure to stop them: an
    /// outside cancel or a drop. Otherwise the group could never be joined,
    /// as documented, and the scenario would only test that it hangs.
    fn normalize(mut self) -> Scenario {
        let stoppable = self.cancel != OutsideCancel::None
            || matches!(self.end, End::DropGroup(_) | End::DropWait(_));
        if !stoppable {
            for plan in &mut self.plans {
                if plan.behaviour == Behaviour::Pending {
                    plan.behaviour = Behaviour::Ok(0);
                }
            }
        }
        self.initial = self.initial.min(self.plans.len());
        self
    }

    fn has_blocking(&self) -> bool {
        self.plans
            .iter()
            .any(|p| matches!(p.behaviour, Behaviour::Blocking { .. }))
    }
}

fn behaviour() -> impl Strategy<Value = Behaviour> {
    prop_oneof![
        5 => (0..8u8).prop_map(Behaviour::Ok),
        2 => (0..8u8).prop_map(Behaviour::Err),
        1 => (0..8u8).prop_map(Behaviour::Panic),
        1 => Just(Behaviour::Pending),
        1 => (0..40u8, any::<bool>())
            .prop_map(|(spins, err_on_cancel)| Behaviour::Blocking { spins, err_on_cancel }),
    ]
}

fn plan() -> impl Strategy<Value = Plan> {
    (behaviour(), prop_oneof![3 => Just(0u8), 1 => 1..3u8])
        .prop_map(|(behaviour, more)| Plan { behaviour, more })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let limit = prop_oneof![1 => Just(None), 3 => (1..5usize).prop_map(Some)];
    let cancel = prop_oneof![
        3 => Just(OutsideCancel::None),
        1 => (0..10u8).prop_map(OutsideCancel::Parent),
        1 => (0..10u8).prop_map(OutsideCancel::ParentDeadline),
        1 => (0..6u8).prop_map(OutsideCancel::Group),
    ];
    let end = prop_oneof![
        3 => Just(End::Wait),
        3 => (0..12u8).prop_map(End::NextThenOutcomes),
        1 => Just(End::ConcurrentNext),
        1 => (0..8u8).prop_map(End::DropGroup),
        1 => (0..8u8).prop_map(End::DropWait),
    ];
    let policy = prop_oneof![
        2 => Just(Policy::FailFast),
        1 => Just(Policy::Supervise),
        1 => Just(Policy::FirstOk),
    ];
    (
        policy,
        limit,
        0..8usize,
        prop::collection::vec(plan(), 0..12),
        cancel,
        end,
    )
        .prop_map(|(policy, limit, initial, plans, cancel, end)| {
            Scenario {
                policy,
                limit,
                initial,
                plans,
                cancel,
                end,
            }
            .normalize()
        })
}

// ---------------------------------------------------------------------------
// What the tasks report

const NONE: u8 = 0;
const RETURNED_OK: u8 = 1;
const RETURNED_ERR: u8 = 2;
const PANICKING: u8 = 3;

#[derive(Default)]
struct TaskLog {
    entered: AtomicBool,
    /// Its closure was called after the group was cancelled.
    entered_late: AtomicBool,
    ended: AtomicU8,
    /// Order of the end among all tasks' ends.
    ended_seq: AtomicU64,
    /// The group was live when it returned or panicked.
    ended_live: AtomicBool,
}

#[derive(Default)]
struct Log {
    tasks: Vec<TaskLog>,
    seq: AtomicU64,
    running: AtomicUsize,
    max_running: AtomicUsize,
    /// Closures, futures and blocking bodies not dropped yet.
    alive: AtomicUsize,
}

impl Log {
    fn end(&self, task: usize, ctx: &Context, how: u8) {
        let log = &self.tasks[task];
        log.ended_live.store(!ctx.is_cancelled(), SeqCst);
        log.ended_seq.store(self.seq.fetch_add(1, SeqCst), SeqCst);
        log.ended.store(how, SeqCst);
    }
}

/// Held by a task's user code: counts it alive, and running once entered.
struct Token {
    log: Arc<Log>,
    running: bool,
}

impl Token {
    fn new(log: &Arc<Log>) -> Token {
        log.alive.fetch_add(1, SeqCst);
        Token {
            log: log.clone(),
            running: false,
        }
    }

    fn enter(&mut self, task: usize, ctx: &Context) {
        let log = &self.log.tasks[task];
        assert!(!log.entered.swap(true, SeqCst), "task {task} called twice");
        log.entered_late.store(ctx.is_cancelled(), SeqCst);
        let now = self.log.running.fetch_add(1, SeqCst) + 1;
        self.log.max_running.fetch_max(now, SeqCst);
        self.running = true;
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        if self.running {
            self.log.running.fetch_sub(1, SeqCst);
        }
        self.log.alive.fetch_sub(1, SeqCst);
    }
}

fn panic_payload(task: usize) -> String {
    format!("model panic {task}")
}

fn quiet_model_panics() {
    support::quiet_panics(|message| message.starts_with("model panic"));
}

/// A delay: paused milliseconds on the current-thread runtime, yields on
/// the multi-thread one.
async fn delay(paused: bool, n: u8) {
    if paused {
        tokio::time::sleep(Duration::from_millis(u64::from(n))).await;
    } else {
        yields(u64::from(n)).await;
    }
}

type Group<J> = TaskGroup<usize, usize, J>;

/// What `wait` returned, whatever the policy.
enum Joined {
    FailFast(Result<Vec<usize>, GroupError<usize>>),
    Supervise(Vec<Outcome<usize, usize>>),
    FirstOk(Result<usize, AllFailed<usize>>),
}

/// A policy the model drives: a joiner and how to read its output.
trait ModelJoiner: Joiner<usize, usize> {
    fn joined(output: Self::Output) -> Joined;
}

impl ModelJoiner for FailFast {
    fn joined(output: Self::Output) -> Joined {
        Joined::FailFast(output)
    }
}

impl ModelJoiner for Supervise {
    fn joined(output: Self::Output) -> Joined {
        Joined::Supervise(output)
    }
}

impl ModelJoiner for FirstOk {
    fn joined(output: Self::Output) -> Joined {
        Joined::FirstOk(output)
    }
}

fn spawn<J: ModelJoiner>(
    group: &mut Group<J>,
    task: usize,
    behaviour: Behaviour,
    log: &Arc<Log>,
    paused: bool,
) {
    let mut token = Token::new(log);
    let log = log.clone();
    if let Behaviour::Blocking {
        spins,
        err_on_cancel,
    } = behaviour
    {
        group.spawn_blocking(move |ctx| {
            token.enter(task, &ctx);
            for _ in 0..spins {
                if ctx.is_cancelled() {
                    if err_on_cancel {
                        log.end(task, &ctx, RETURNED_ERR);
                        return Err(task);
                    }
                    break;
                }
                std::thread::yield_now();
            }
            log.end(task, &ctx, RETURNED_OK);
            Ok(task)
        });
        return;
    }
    group.spawn(move |ctx| {
        token.enter(task, &ctx);
        async move {
            let _token = token;
            match behaviour {
                Behaviour::Ok(n) => {
                    delay(paused, n).await;
                    log.end(task, &ctx, RETURNED_OK);
                    Ok(task)
                }
                Behaviour::Err(n) => {
                    delay(paused, n).await;
                    log.end(task, &ctx, RETURNED_ERR);
                    Err(task)
                }
                Behaviour::Panic(n) => {
                    delay(paused, n).await;
                    log.end(task, &ctx, PANICKING);
                    std::panic::panic_any(panic_payload(task))
                }
                Behaviour::Pending => std::future::pending().await,
                Behaviour::Blocking { .. } => unreachable!("spawned above"),
            }
        }
    });
}

// ---------------------------------------------------------------------------
// The driver

/// What the driver saw, for the checks.
struct Run {
    /// Task index of each spawned id, in spawn order.
    spawned: Vec<usize>,
    /// Spawned into a group already cancelled.
    spawned_after_cancel: Vec<bool>,
    /// The outside cancel happened (flag set once the cancel returned, or
    /// the parent's deadline passed), as seen when the group ended.
    outside_cancelled: bool,
    /// What `next` handed out, in order, then what `wait_outcomes` gave.
    handed_out: Vec<(usize, Outcome<usize, usize>)>,
    rest: Option<Vec<(usize, Outcome<usize, usize>)>>,
    wait: Option<std::thread::Result<Joined>>,
}

async fn drive(s: &Scenario, paused: bool) -> Result<(), TestCaseError> {
    match s.policy {
        Policy::FailFast => drive_with(s, paused, FailFast).await,
        Policy::Supervise => drive_with(s, paused, Supervise).await,
        Policy::FirstOk => drive_with(s, paused, FirstOk).await,
    }
}

async fn drive_with<J: ModelJoiner>(
    s: &Scenario,
    paused: bool,
    joiner: J,
) -> Result<(), TestCaseError> {
    let log = Arc::new(Log {
        tasks: (0..s.plans.len()).map(|_| TaskLog::default()).collect(),
        ..Log::default()
    });
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    // Far longer than any scenario takes; on paused time it costs nothing.
    let hang = Duration::from_secs(if paused { 3_600 } else { 20 });

    let (parent, parent_cancel) = match s.cancel {
        OutsideCancel::ParentDeadline(n) => {
            let timeout = if paused {
                Duration::from_millis(u64::from(n))
            } else {
                Duration::from_micros(200 * u64::from(n))
            };
            Context::background().with_timeout(timeout)
        }
        _ => Context::background().with_cancel(),
    };
    let parent_cancel: Arc<CancelHandle> = Arc::new(parent_cancel);
    let mut builder = TaskGroup::builder().joiner(joiner).context(&parent);
    if let Some(limit) = s.limit {
        builder = builder.limit(limit);
    }
    let mut group = builder.build();
    let ctx = group.context().clone();
    let outside_done = Arc::new(AtomicBool::new(false));

    let canceller = match s.cancel {
        OutsideCancel::Parent(n) => {
            let (cancel, done) = (parent_cancel.clone(), outside_done.clone());
            Some(tokio::spawn(async move {
                delay(paused, n).await;
                cancel.cancel();
                done.store(true, SeqCst);
            }))
        }
        _ => None,
    };

    let mut run = Run {
        spawned: Vec::new(),
        spawned_after_cancel: Vec::new(),
        outside_cancelled: false,
        handed_out: Vec::new(),
        rest: None,
        wait: None,
    };
    let mut next_plan = 0;
    let spawn_plan = |group: &mut Group<J>, run: &mut Run, next_plan: &mut usize| {
        let task = *next_plan;
        *next_plan += 1;
        run.spawned_after_cancel.push(ctx.is_cancelled());
        run.spawned.push(task);
        spawn(group, task, s.plans[task].behaviour, &log, paused);
    };
    for i in 0..s.initial {
        if s.cancel == OutsideCancel::Group(i as u8) {
            group.cancel();
            outside_done.store(true, SeqCst);
        }
        spawn_plan(&mut group, &mut run, &mut next_plan);
    }
    if let OutsideCancel::Group(n) = s.cancel
        && usize::from(n) >= s.initial
    {
        group.cancel();
        outside_done.store(true, SeqCst);
    }
    prop_assert_eq!(group.len(), run.spawned.len(), "len() after spawning");

    let outside_now = |parent: &Context| {
        outside_done.load(SeqCst) || parent.err() == Some(taskgroup::ContextError::DeadlineExceeded)
    };
    match s.end {
        End::Wait => {
            let result = AssertUnwindSafe(tokio::time::timeout(hang, group.wait()))
                .catch_unwind()
                .await;
            run.outside_cancelled = outside_now(&parent);
            prop_assert_eq!(log.alive.load(SeqCst), 0, "user code outlived wait");
            run.wait = Some(match result {
                Ok(Ok(result)) => Ok(J::joined(result)),
                Ok(Err(_)) => return Err(TestCaseError::fail("wait hung")),
                Err(payload) => Err(payload),
            });
        }
        End::NextThenOutcomes(max) => {
            for _ in 0..max {
                let Ok(next) = tokio::time::timeout(hang, group.next()).await else {
                    return Err(TestCaseError::fail("next hung"));
                };
                let Some((id, outcome)) = next else { break };
                let task = run.spawned[id.index() as usize];
                if outcome.is_ok() {
                    // A crawler: spawn the links this page yielded.
                    for _ in 0..s.plans[task].more {
                        if next_plan < s.plans.len() {
                            spawn_plan(&mut group, &mut run, &mut next_plan);
                        }
                    }
                }
                run.handed_out.push((task, outcome));
            }
            let Ok(rest) = tokio::time::timeout(hang, group.wait_outcomes()).await else {
                return Err(TestCaseError::fail("wait_outcomes hung"));
            };
            run.outside_cancelled = outside_now(&parent);
            prop_assert_eq!(
                log.alive.load(SeqCst),
                0,
                "user code outlived wait_outcomes"
            );
            let rest_tasks: Vec<usize> = run
                .spawned
                .iter()
                .copied()
                .filter(|t| run.handed_out.iter().all(|(h, _)| h != t))
                .collect();
            prop_assert_eq!(
                rest.len(),
                rest_tasks.len(),
                "wait_outcomes reports every task next did not hand out"
            );
            run.rest = Some(rest_tasks.into_iter().zip(rest).collect());
        }
        End::ConcurrentNext => {
            let consumer = || async {
                let mut got = Vec::new();
                while let Some((id, outcome)) = group.next().await {
                    got.push((run.spawned[id.index() as usize], outcome));
                }
                got
            };
            let both = async { tokio::join!(consumer(), consumer()) };
            let Ok((first, second)) = tokio::time::timeout(hang, both).await else {
                return Err(TestCaseError::fail("concurrent next() hung"));
            };
            let Ok(left) = tokio::time::timeout(hang, group.wait_outcomes()).await else {
                return Err(TestCaseError::fail("wait_outcomes hung"));
            };
            run.outside_cancelled = outside_now(&parent);
            prop_assert!(left.is_empty(), "next handed everything out");
            prop_assert_eq!(log.alive.load(SeqCst), 0, "user code outlived next");
            // Two consumers: no single order to check, only the count.
            run.rest = Some(first.into_iter().chain(second).collect());
        }
        End::DropGroup(n) => {
            delay(paused, n).await;
            drop(group);
        }
        End::DropWait(n) => {
            tokio::select! {
                biased;
                outcomes = group.wait_outcomes() => {
                    run.outside_cancelled = outside_now(&parent);
                    prop_assert_eq!(log.alive.load(SeqCst), 0, "user code outlived wait_outcomes");
                    prop_assert_eq!(outcomes.len(), run.spawned.len());
                    run.rest = Some(run.spawned.iter().copied().zip(outcomes).collect());
                }
                () = delay(paused, n) => {}
            }
        }
    }

    // However it ended, the group is over.
    prop_assert!(
        ctx.is_cancelled(),
        "the group context is cancelled at the end"
    );
    check(s, &run, &log, &ctx, paused)?;

    // Nothing outlives it: user code dropped, tokio tasks gone (bounded
    // waits: a blocking task may still be returning, an aborted task is
    // dropped when the runtime next gets to it).
    if let Some(canceller) = canceller {
        canceller.abort();
        let _ = canceller.await;
    }
    drop(parent_cancel);
    let settled = async {
        while log.alive.load(SeqCst) != 0 || metrics.num_alive_tasks() != baseline {
            if paused {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    if tokio::time::timeout(hang, settled).await.is_err() {
        return Err(TestCaseError::fail(format!(
            "not settled: {} user code alive, {} tokio tasks over the baseline",
            log.alive.load(SeqCst),
            metrics.num_alive_tasks() - baseline
        )));
    }
    Ok(())
}

/// The task whose failure cancelled the group, from its cause.
fn winner(ctx: &Context) -> Option<(usize, bool)> {
    let cause = ctx.cause()?;
    let failed = cause.downcast_ref::<TaskFailed>()?;
    Some((failed.task().index() as usize, failed.is_panic()))
}

fn check(
    s: &Scenario,
    run: &Run,
    log: &Log,
    ctx: &Context,
    paused: bool,
) -> Result<(), TestCaseError> {
    let task_log = |task: usize| &log.tasks[task];
    // Exact where the order of events is total: one thread, no blocking
    // pool racing it.
    let deterministic = paused && !s.has_blocking();

    // At most `limit` bodies at once.
    if let Some(limit) = s.limit {
        let max = log.max_running.load(SeqCst);
        prop_assert!(max <= limit, "{} bodies ran at once, limit {}", max, limit);
    }

    // No closure starts after the cancel. Exact on one thread; elsewhere a
    // start decided just before the cancel (by the spawner or by each of at
    // most `limit` completing tasks) may enter its closure just after.
    let late: Vec<usize> = run
        .spawned
        .iter()
        .copied()
        .filter(|&t| task_log(t).entered_late.load(SeqCst))
        .collect();
    let late_bound = if deterministic {
        0
    } else {
        1 + s.limit.unwrap_or(0)
    };
    prop_assert!(
        late.len() <= late_bound,
        "tasks {:?} started after the cancel",
        late
    );
    for (i, &task) in run.spawned.iter().enumerate() {
        if run.spawned_after_cancel[i] {
            prop_assert!(
                !task_log(task).entered.load(SeqCst),
                "task {} spawned into a cancelled group, yet started",
                task
            );
        }
    }

    // What decided: a failure under FailFast, an `Ok` or a panic under
    // FirstOk, nothing under Supervise. The cause names a deciding failure.
    let win = winner(ctx);
    if let Some((task, panic)) = win {
        let log = task_log(task);
        let expected = if panic { PANICKING } else { RETURNED_ERR };
        prop_assert_eq!(log.ended.load(SeqCst), expected, "the winner's own log");
        prop_assert!(
            log.ended_live.load(SeqCst),
            "the winner failed after the group was cancelled"
        );
    }
    let ended_live = |t: usize, kinds: &[u8]| {
        let log = task_log(t);
        kinds.contains(&log.ended.load(SeqCst)) && log.ended_live.load(SeqCst)
    };
    let first_live = |kinds: &[u8]| {
        run.spawned
            .iter()
            .copied()
            .filter(|&t| ended_live(t, kinds))
            .min_by_key(|&t| task_log(t).ended_seq.load(SeqCst))
    };
    // With no cancel racing it (a drop is one), what a task did while the
    // group was live always decides.
    let undisturbed = s.cancel == OutsideCancel::None
        && matches!(
            s.end,
            End::Wait | End::NextThenOutcomes(_) | End::ConcurrentNext
        );
    let first_ok_winner = match s.policy {
        Policy::FailFast => {
            let first_live_failure = first_live(&[RETURNED_ERR, PANICKING]);
            if deterministic {
                prop_assert_eq!(
                    win.map(|(t, _)| t),
                    first_live_failure,
                    "the first failure in time wins"
                );
            } else if first_live_failure.is_some() && undisturbed {
                prop_assert!(
                    win.is_some(),
                    "a task failed while live, yet no failure won"
                );
            }
            None
        }
        Policy::Supervise => {
            prop_assert!(win.is_none(), "a task's end cancelled a Supervise group");
            None
        }
        Policy::FirstOk => {
            let decider = first_live(&[RETURNED_OK, PANICKING]);
            let decided_by_panic = decider.filter(|&t| task_log(t).ended.load(SeqCst) == PANICKING);
            if deterministic {
                prop_assert_eq!(
                    win.map(|(t, _)| t),
                    decided_by_panic,
                    "the first Ok or panic in time decides"
                );
            } else if decider.is_some() && undisturbed {
                prop_assert!(
                    win.is_some() || ctx.cause().is_some(),
                    "a task succeeded or panicked while live, yet nothing decided"
                );
            }
            decider.filter(|&t| task_log(t).ended.load(SeqCst) == RETURNED_OK)
        }
    };

    let panicked: Vec<usize> = run
        .spawned
        .iter()
        .copied()
        .filter(|&t| task_log(t).ended.load(SeqCst) == PANICKING)
        .collect();

    match &run.wait {
        None => {}
        Some(Err(payload)) => {
            prop_assert!(s.policy != Policy::Supervise, "Supervise re-raised a panic");
            let message = payload.downcast_ref::<String>();
            prop_assert!(
                panicked.iter().any(|&t| Some(&panic_payload(t)) == message),
                "wait re-raised {:?}, tasks that panicked {:?}",
                message,
                panicked
            );
            if let Some((task, true)) = win {
                prop_assert_eq!(message, Some(&panic_payload(task)), "the first panic");
            }
        }
        Some(Ok(joined)) => {
            if s.policy != Policy::Supervise {
                prop_assert!(panicked.is_empty(), "panics lost: {:?}", panicked);
            }
            match joined {
                Joined::FailFast(result) => {
                    check_fail_fast(s, run, log, win, deterministic, result)?
                }
                Joined::Supervise(outcomes) => {
                    // Every outcome, in spawn order: checked below with the
                    // rest. Undisturbed, nothing was cancelled.
                    prop_assert_eq!(outcomes.len(), run.spawned.len(), "one outcome per task");
                    if undisturbed {
                        prop_assert!(
                            outcomes.iter().all(|o| !o.is_cancelled()),
                            "a Supervise task was cancelled with no cancel from outside"
                        );
                    }
                }
                Joined::FirstOk(Ok(value)) => {
                    let log = task_log(*value);
                    prop_assert_eq!(
                        log.ended.load(SeqCst),
                        RETURNED_OK,
                        "the winner returned Ok"
                    );
                    prop_assert!(
                        log.ended_live.load(SeqCst),
                        "the winner's Ok came after a cancel"
                    );
                    if deterministic {
                        prop_assert_eq!(Some(*value), first_ok_winner, "the first Ok in time wins");
                    }
                }
                Joined::FirstOk(Err(all)) => {
                    let errors: Vec<usize> = all.errors().iter().map(|(_, e)| *e).collect();
                    let ids: Vec<usize> = all
                        .errors()
                        .iter()
                        .map(|(id, _)| run.spawned[id.index() as usize])
                        .collect();
                    prop_assert_eq!(&errors, &ids, "each error is its own task's");
                    let returned_err: Vec<usize> = run
                        .spawned
                        .iter()
                        .copied()
                        .filter(|&t| task_log(t).ended.load(SeqCst) == RETURNED_ERR)
                        .collect();
                    prop_assert_eq!(&errors, &returned_err, "every error, in spawn order");
                    if deterministic {
                        prop_assert_eq!(first_ok_winner, None, "an Ok won, yet AllFailed");
                        prop_assert_eq!(
                            all.context_error().is_some(),
                            run.outside_cancelled,
                            "the context error says whether the group was cancelled from outside"
                        );
                    } else if s.cancel == OutsideCancel::None {
                        prop_assert_eq!(all.context_error(), None, "no cancel from outside");
                    }
                }
            }
        }
    }
    let supervised = match &run.wait {
        Some(Ok(Joined::Supervise(outcomes))) => Some(outcomes),
        _ => None,
    };

    // Every task accounted for exactly once, as it ended.
    let supervised: Option<Vec<(usize, &Outcome<usize, usize>)>> =
        supervised.map(|outcomes| run.spawned.iter().copied().zip(outcomes).collect());
    let rest: Option<Vec<(usize, &Outcome<usize, usize>)>> = run
        .rest
        .as_ref()
        .map(|rest| rest.iter().map(|(t, o)| (*t, o)).collect())
        .or(supervised);
    if let Some(rest) = &rest {
        let all: Vec<(usize, &Outcome<usize, usize>)> = run
            .handed_out
            .iter()
            .map(|(t, o)| (*t, o))
            .chain(rest.iter().copied())
            .collect();
        prop_assert_eq!(all.len(), run.spawned.len(), "one outcome per task");
        let mut seen = vec![false; s.plans.len()];
        for &(task, outcome) in &all {
            prop_assert!(
                !std::mem::replace(&mut seen[task], true),
                "task {} twice",
                task
            );
            let ended = task_log(task).ended.load(SeqCst);
            match outcome {
                Outcome::Ok(v) => {
                    prop_assert_eq!(*v, task);
                    prop_assert_eq!(ended, RETURNED_OK, "task {} Ok", task);
                }
                Outcome::Err(v) => {
                    prop_assert_eq!(*v, task);
                    prop_assert_eq!(ended, RETURNED_ERR, "task {} Err", task);
                }
                Outcome::Panicked(payload) => {
                    prop_assert_eq!(payload.downcast_ref::<String>(), Some(&panic_payload(task)));
                    prop_assert_eq!(ended, PANICKING, "task {} Panicked", task);
                }
                Outcome::Cancelled => {
                    prop_assert_eq!(ended, NONE, "task {} ended, yet Cancelled", task);
                }
            }
        }
        for &task in &panicked {
            prop_assert!(seen[task], "the panic of task {} was lost", task);
        }
        // `next` hands the failure out before anything its cancel caused.
        if let Some((task, _)) = win
            && let Some(at) = run.handed_out.iter().position(|(t, _)| *t == task)
        {
            for (before, outcome) in &run.handed_out[..at] {
                prop_assert!(
                    !outcome.is_cancelled() && task_log(*before).ended_live.load(SeqCst),
                    "task {} handed out before the failure of task {} that cancelled it",
                    before,
                    task
                );
            }
        }
    }
    Ok(())
}

/// What FailFast's `wait` returned: the values, the winner, or a cancel
/// from outside.
fn check_fail_fast(
    s: &Scenario,
    run: &Run,
    log: &Log,
    win: Option<(usize, bool)>,
    deterministic: bool,
    result: &Result<Vec<usize>, GroupError<usize>>,
) -> Result<(), TestCaseError> {
    let task_log = |task: usize| &log.tasks[task];
    match result {
        Ok(values) => {
            prop_assert_eq!(values, &run.spawned, "values in spawn order");
            for &t in &run.spawned {
                let log = task_log(t);
                prop_assert_eq!(log.ended.load(SeqCst), RETURNED_OK);
                prop_assert!(
                    log.ended_live.load(SeqCst),
                    "task {} Ok after the cancel",
                    t
                );
            }
        }
        Err(GroupError::Failed(task)) => {
            prop_assert_eq!(win, Some((*task, false)), "Failed names the winner");
        }
        Err(GroupError::Cancelled(_)) => {
            prop_assert!(win.is_none(), "a failure won, yet wait says Cancelled");
            if deterministic {
                prop_assert!(
                    run.outside_cancelled,
                    "Cancelled with no cancel from outside"
                );
            } else {
                prop_assert!(
                    s.cancel != OutsideCancel::None,
                    "Cancelled with no cancel from outside"
                );
            }
        }
    }
    if deterministic && win.is_none() && !run.outside_cancelled {
        prop_assert!(result.is_ok(), "no failure and no cancel, yet {:?}", result);
    }
    Ok(())
}

fn run_paused(s: &Scenario) -> Result<(), TestCaseError> {
    quiet_model_panics();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(drive(s, true))
}

fn run_multi_thread(s: &Scenario) -> Result<(), TestCaseError> {
    quiet_model_panics();
    let runtime = support::multi_thread(2);
    runtime.block_on(drive(s, false))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: PAUSED_CASES,
        ..ProptestConfig::default()
    })]

    /// Deterministic: one thread, paused time.
    #[test]
    fn random_scenarios_on_paused_time(s in scenario()) {
        run_paused(&s)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: MULTI_THREAD_CASES,
        ..ProptestConfig::default()
    })]

    /// Completions race on two workers.
    #[test]
    fn random_scenarios_on_two_workers(s in scenario()) {
        run_multi_thread(&s)?;
    }
}
