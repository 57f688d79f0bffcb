//! Soak: randomized task-group rounds on a multi-thread runtime for a
//! configurable time, checking after each round that no task was lost and
//! no user code outlived its group, and at the end that no tokio task is
//! left alive and memory stayed flat.
//!
//! Each round builds a group (random limit, sometimes under a parent
//! context with a deadline) and spawns tasks with random behaviours: `Ok`
//! after some yields or a short sleep, an error, a panic, a future that
//! never completes and ignores its context, a blocking task that polls its
//! context, a blocking task that ignores it for a few steps. It ends in one
//! of several ways: `wait`, `wait_outcomes` after draining some with `next`
//! (spawning more tasks from what `next` hands out, like a crawler), an
//! outside cancel racing the spawns from another task, dropping the group,
//! or dropping the `wait_outcomes` future halfway. Several lanes run rounds
//! at once, so groups race each other on the workers too.
//!
//! ```text
//! cargo run --release --example soak -- --seconds 600
//! cargo run --release --example soak -- --seconds 30 --lanes 8 --seed 7
//! ```
//!
//! It ends with one line, `rounds=R peak_rss_kb=K alive_tasks=A lost=L`:
//! rounds played, the process's peak resident set (`VmHWM`), tokio tasks
//! still alive at the end beyond those alive at the start, and tasks not
//! accounted for (an outcome missing or reported twice, or a task's
//! closure or future never dropped). It exits non-zero if `alive_tasks` or
//! `lost` is not 0, or if a round breaks an invariant (with a message naming
//! the seed).

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use taskgroup::{Context, GroupError, Outcome, TaskFailed, TaskGroup};

struct Args {
    seconds: u64,
    lanes: usize,
    seed: u64,
}

impl Args {
    const USAGE: &'static str = "usage: soak [--seconds N] [--lanes N] [--seed S]";

    fn parse() -> Result<Args, String> {
        let mut args = Args {
            seconds: 10,
            lanes: 4,
            seed: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let value = it.next().ok_or(format!("{flag} needs a value"))?;
            let bad = |_| format!("{flag}: not a number: {value}");
            match flag.as_str() {
                "--seconds" => args.seconds = value.parse().map_err(bad)?,
                "--lanes" => args.lanes = value.parse().map_err(bad)?,
                "--seed" => args.seed = value.parse().map_err(bad)?,
                _ => return Err(format!("unknown option {flag}")),
            }
        }
        if args.lanes == 0 {
            return Err("--lanes must be at least 1".into());
        }
        Ok(args)
    }
}

fn main() {
    let args = match Args::parse() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}\n{}", Args::USAGE);
            std::process::exit(2);
        }
    };
    quiet_soak_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let totals = Arc::new(Totals::default());
    let baseline = runtime.metrics().num_alive_tasks();
    eprintln!(
        "soak: {} s, {} lanes, seed {}",
        args.seconds, args.lanes, args.seed
    );
    let alive = runtime.block_on(async {
        let stop = Instant::now() + Duration::from_secs(args.seconds);
        let lanes: Vec<_> = (0..args.lanes)
            .map(|lane| {
                let totals = totals.clone();
                let seed = args.seed.wrapping_add(lane as u64 * 0x9e37_79b9_7f4a_7c15);
                tokio::spawn(async move { run_lane(seed, stop, &totals).await })
            })
            .collect();
        for lane in lanes {
            if let Err(error) = lane.await {
                // An invariant broke: the lane's panic says which and how to
                // rerun it.
                std::panic::resume_unwind(error.into_panic());
            }
        }
        // Bounded: give aborted tasks and blocking tasks still returning a
        // moment to go, then count what is left.
        let metrics = tokio::runtime::Handle::current().metrics();
        for _ in 0..5_000 {
            if metrics.num_alive_tasks() <= baseline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        metrics.num_alive_tasks().saturating_sub(baseline)
    });
    drop(runtime);
    let rounds = totals.rounds.load(SeqCst);
    let lost = totals.lost.load(SeqCst);
    eprintln!(
        "soak: {} tasks, {} panics, {} errors, {} rounds ended by an outside cancel or drop",
        totals.tasks.load(SeqCst),
        totals.panics.load(SeqCst),
        totals.errors.load(SeqCst),
        totals.cut_short.load(SeqCst),
    );
    println!(
        "rounds={rounds} peak_rss_kb={} alive_tasks={alive} lost={lost}",
        peak_rss_kb()
    );
    if alive != 0 || lost != 0 {
        std::process::exit(1);
    }
}

#[derive(Default)]
struct Totals {
    rounds: AtomicU64,
    tasks: AtomicU64,
    lost: AtomicU64,
    panics: AtomicU64,
    errors: AtomicU64,
    cut_short: AtomicU64,
}

/// The process's peak resident set in KiB, from `/proc/self/status`; 0 where
/// there is no such file.
fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Silences the panics the tasks raise on purpose ("soak panic ...").
fn quiet_soak_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let ours = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|s| s.starts_with("soak panic"));
            if !ours {
                default(info);
            }
        }));
    });
}

/// splitmix64: seeded, tiny, and independent per lane.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// A task's error: its index.
#[derive(Debug, PartialEq)]
struct TaskError(usize);

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {} failed", self.0)
    }
}

type Group = TaskGroup<usize, TaskError>;

#[derive(Clone, Copy, Debug)]
enum Behaviour {
    OkAfterYields(u8),
    OkAfterSleep(u8),
    Err(u8),
    Panic(u8),
    /// Never completes and never looks at its context.
    PendingForever,
    /// A blocking task that checks its context between steps.
    BlockingPolling(u8),
    /// A blocking task that never checks its context (a few short steps).
    BlockingIgnoring(u8),
}

fn behaviour(rng: &mut Rng, pending_allowed: bool) -> Behaviour {
    let n = rng.below(4) as u8;
    match rng.below(100) {
        0..35 => Behaviour::OkAfterYields(n),
        35..50 => Behaviour::OkAfterSleep(n),
        50..62 => Behaviour::Err(n),
        62..68 => Behaviour::Panic(n),
        68..76 if pending_allowed => Behaviour::PendingForever,
        68..76 => Behaviour::OkAfterYields(n),
        76..92 => Behaviour::BlockingPolling(rng.below(10) as u8),
        _ => Behaviour::BlockingIgnoring(rng.below(3) as u8),
    }
}

/// Counts user code not yet dropped (closures, futures, blocking bodies)
/// and task bodies running at once.
#[derive(Default)]
struct Live {
    tokens: AtomicUsize,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

struct Token(Arc<Live>);

impl Token {
    fn new(live: &Arc<Live>) -> Token {
        live.tokens.fetch_add(1, SeqCst);
        Token(live.clone())
    }

    fn enter(&self) -> Running {
        let now = self.0.running.fetch_add(1, SeqCst) + 1;
        self.0.max_running.fetch_max(now, SeqCst);
        Running(self.0.clone())
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        self.0.tokens.fetch_sub(1, SeqCst);
    }
}

struct Running(Arc<Live>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, SeqCst);
    }
}

async fn yields(n: u64) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

fn spawn(group: &mut Group, index: usize, behaviour: Behaviour, live: &Arc<Live>) {
    let token = Token::new(live);
    match behaviour {
        Behaviour::BlockingPolling(steps) => {
            group.spawn_blocking(move |ctx| {
                let _running = token.enter();
                for _ in 0..steps {
                    ctx.check().map_err(|_| TaskError(index))?;
                    std::thread::sleep(Duration::from_micros(50));
                }
                Ok(index)
            });
        }
        Behaviour::BlockingIgnoring(steps) => {
            group.spawn_blocking(move |_ctx| {
                let _running = token.enter();
                for _ in 0..steps {
                    std::thread::sleep(Duration::from_micros(50));
                }
                Ok(index)
            });
        }
        _ => {
            group.spawn(move |ctx| {
                let running = token.enter();
                async move {
                    let _token = token;
                    let _running = running;
                    match behaviour {
                        Behaviour::OkAfterYields(n) => yields(u64::from(n)).await,
                        Behaviour::OkAfterSleep(n) => {
                            let _ = ctx.sleep(Duration::from_micros(100 * u64::from(n))).await;
                        }
                        Behaviour::Err(n) => {
                            yields(u64::from(n)).await;
                            return Err(TaskError(index));
                        }
                        Behaviour::Panic(n) => {
                            yields(u64::from(n)).await;
                            std::panic::panic_any(format!("soak panic {index}"));
                        }
                        Behaviour::PendingForever => std::future::pending::<()>().await,
                        _ => unreachable!("blocking behaviours are spawned above"),
                    }
                    Ok(index)
                }
            });
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum End {
    Wait,
    DrainThenOutcomes,
    CancelThenWait,
    DropGroup,
    DropWait,
}

async fn run_lane(seed: u64, stop: Instant, totals: &Totals) {
    let mut rng = Rng(seed);
    let mut round = 0u64;
    while Instant::now() < stop {
        // Each round's own seed, so a failure can be replayed alone.
        let round_seed = rng.next();
        let outcome = AssertUnwindSafe(play_round(round_seed, totals))
            .catch_unwind()
            .await;
        if let Err(payload) = outcome {
            eprintln!("soak: lane seed {seed}, round {round} (round seed {round_seed}) broke");
            std::panic::resume_unwind(payload);
        }
        round += 1;
        totals.rounds.fetch_add(1, SeqCst);
    }
}

/// Plays one round; panics on a broken invariant, counts lost tasks.
async fn play_round(seed: u64, totals: &Totals) {
    let mut rng = Rng(seed);
    let end = match rng.below(5) {
        0 => End::Wait,
        1 => End::DrainThenOutcomes,
        2 => End::CancelThenWait,
        3 => End::DropGroup,
        _ => End::DropWait,
    };
    let pending_allowed = !matches!(end, End::Wait | End::DrainThenOutcomes);
    let limit = (!rng.percent(25)).then(|| 1 + rng.below(6) as usize);
    // The group's parent, whose handle another task may use to cancel the
    // group from outside (the group itself stays with this driver: spawning
    // needs `&mut`).
    let (parent, parent_cancel) = if rng.percent(20) {
        Context::background().with_timeout(Duration::from_micros(rng.below(2_000)))
    } else {
        Context::background().with_cancel()
    };
    let parent_cancel = Arc::new(parent_cancel);
    let mut builder = Group::builder().context(&parent);
    if let Some(limit) = limit {
        builder = builder.limit(limit);
    }
    let mut group = builder.build();
    let ctx = group.context().clone();
    let live = Arc::new(Live::default());

    let count = rng.below(24) as usize;
    let mut spawned = 0;
    let mut canceller = None;
    for _ in 0..count {
        if matches!(end, End::CancelThenWait) && canceller.is_none() && rng.percent(15) {
            if rng.percent(50) {
                // An outside cancel from another task, racing the spawns.
                let (ctx, cancel) = (ctx.clone(), parent_cancel.clone());
                let delay = rng.below(4);
                canceller = Some(tokio::spawn(async move {
                    yields(delay).await;
                    cancel.cancel();
                    assert!(
                        ctx.is_cancelled(),
                        "cancel returned, the group is cancelled"
                    );
                }));
            } else {
                group.cancel();
            }
        }
        if limit.is_some() && rng.percent(10) && !pending_allowed {
            tokio::time::timeout(Duration::from_secs(30), group.ready())
                .await
                .expect("ready hung");
        }
        spawn(
            &mut group,
            spawned,
            behaviour(&mut rng, pending_allowed),
            &live,
        );
        spawned += 1;
        if rng.percent(15) {
            yields(rng.below(3)).await;
        }
    }
    totals.tasks.fetch_add(spawned as u64, SeqCst);

    let mut accounted = 0usize;
    match end {
        End::Wait | End::CancelThenWait => {
            if matches!(end, End::CancelThenWait) {
                match canceller.take() {
                    Some(task) => task.await.expect("the canceller"),
                    None => group.cancel(),
                }
            }
            let result =
                AssertUnwindSafe(tokio::time::timeout(Duration::from_secs(30), group.wait()))
                    .catch_unwind()
                    .await;
            match result {
                Err(payload) => {
                    let message = payload.downcast_ref::<String>().expect("a task's payload");
                    assert!(message.starts_with("soak panic"), "re-raised {message}");
                    totals.panics.fetch_add(1, SeqCst);
                }
                Ok(Err(_elapsed)) => panic!("wait hung"),
                Ok(Ok(Ok(values))) => {
                    // Every task is in the values, once, in spawn order.
                    assert!(values.iter().copied().eq(0..spawned), "values {values:?}");
                    accounted = spawned;
                }
                Ok(Ok(Err(GroupError::Failed(TaskError(index))))) => {
                    let cause = ctx.cause().expect("a failure cancelled the group");
                    let failed = cause.downcast_ref::<TaskFailed>().expect("TaskFailed");
                    assert_eq!(failed.task().index() as usize, index, "the first error");
                    totals.errors.fetch_add(1, SeqCst);
                }
                Ok(Ok(Err(GroupError::Cancelled(_)))) => {
                    totals.cut_short.fetch_add(1, SeqCst);
                }
            }
            assert_eq!(live.tokens.load(SeqCst), 0, "user code outlived wait");
        }
        End::DrainThenOutcomes => {
            // Like a crawler: every Ok handed out may spawn more.
            let mut seen = vec![false; spawned];
            let mut budget = rng.below(12);
            for _ in 0..rng.below(40) {
                let Some((id, outcome)) = group.next().await else {
                    break;
                };
                let index = id.index() as usize;
                record(&mut seen, index, &outcome, totals);
                // Even into a group a failure has cancelled: those never
                // start, and must still be accounted for.
                if outcome.is_ok() && budget > 0 {
                    for _ in 0..1 + rng.below(3) {
                        spawn(&mut group, spawned, behaviour(&mut rng, false), &live);
                        spawned += 1;
                        totals.tasks.fetch_add(1, SeqCst);
                    }
                    seen.resize(spawned, false);
                    budget -= 1;
                }
            }
            let rest = tokio::time::timeout(Duration::from_secs(30), group.wait_outcomes())
                .await
                .expect("wait_outcomes hung");
            assert_eq!(
                live.tokens.load(SeqCst),
                0,
                "user code outlived wait_outcomes"
            );
            let missing: Vec<usize> = (0..spawned).filter(|&i| !seen[i]).collect();
            let handed_out = spawned - missing.len();
            for (index, outcome) in missing.iter().zip(&rest) {
                record(&mut seen, *index, outcome, totals);
            }
            accounted = handed_out + rest.len();
            assert!(
                live.max_running.load(SeqCst) <= limit.unwrap_or(usize::MAX),
                "more bodies than the limit"
            );
        }
        End::DropGroup => {
            yields(rng.below(4)).await;
            drop(group);
            totals.cut_short.fetch_add(1, SeqCst);
        }
        End::DropWait => {
            let polls = rng.below(6);
            tokio::select! {
                biased;
                outcomes = group.wait_outcomes() => {
                    accounted = outcomes.len();
                    assert_eq!(live.tokens.load(SeqCst), 0, "user code outlived wait_outcomes");
                }
                () = yields(polls) => {
                    totals.cut_short.fetch_add(1, SeqCst);
                }
            }
        }
    }
    if let Some(task) = canceller {
        task.await.expect("the canceller");
    }
    assert!(
        ctx.is_cancelled(),
        "the group context is cancelled at the end"
    );
    if let Some(limit) = limit {
        let max = live.max_running.load(SeqCst);
        assert!(max <= limit, "{max} bodies ran at once, limit {limit}");
    }
    // Where outcomes came back, each task's is there exactly once.
    if matches!(end, End::DrainThenOutcomes) || accounted != 0 {
        totals
            .lost
            .fetch_add(spawned.abs_diff(accounted) as u64, SeqCst);
    }
    // However the round ended, every closure and future is dropped soon
    // (blocking bodies may still be returning): bounded, never a fixed sleep.
    for i in 0..10_000 {
        if live.tokens.load(SeqCst) == 0 {
            break;
        }
        if i < 100 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    totals
        .lost
        .fetch_add(live.tokens.load(SeqCst) as u64, SeqCst);
    drop(parent_cancel);
    drop(parent);
}

/// Marks a task handed out; an outcome for a task seen before is lost
/// accounting, and breaks the round.
fn record(seen: &mut [bool], index: usize, outcome: &Outcome<usize, TaskError>, totals: &Totals) {
    assert!(
        !std::mem::replace(&mut seen[index], true),
        "task {index} reported twice"
    );
    match outcome {
        Outcome::Ok(value) => assert_eq!(*value, index),
        Outcome::Err(TaskError(value)) => {
            assert_eq!(*value, index);
            totals.errors.fetch_add(1, SeqCst);
        }
        Outcome::Panicked(payload) => {
            assert_eq!(
                payload.downcast_ref::<String>(),
                Some(&format!("soak panic {index}"))
            );
            totals.panics.fetch_add(1, SeqCst);
        }
        Outcome::Cancelled => {}
    }
}
