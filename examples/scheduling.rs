//! How `TaskGroup` schedules its tasks, next to tokio's `JoinSet` doing the
//! same work: CPU-bound fan-outs, a task that blocks its thread while
//! others wait behind it, two siblings that need each other, the cost of
//! small groups (and of waiting for one while the workers are busy) and of
//! a large fan-out, what is left alive after `wait`, and what
//! `tokio::task::id()` says inside a task.
//!
//! ```sh
//! cargo run --release --example scheduling -- --workers 2
//! cargo run --release --example scheduling -- --workers 8
//! cargo run --release --example scheduling -- --workers 2 --quick          # smoke check
//! cargo run --release --example scheduling -- --only hostage_first_poll --reps 9
//! ```
//!
//! Options: `--workers N` (worker threads of the multi-thread runtime,
//! default 2), `--reps N` (repetitions per side, default 5, 2 with
//! `--quick`), `--quick` (fewer repetitions and 2,000 instead of 20,000
//! small groups), `--only <scenario>` (one scenario, by its name in the
//! table).
//!
//! Every repetition builds a fresh runtime, so what one side leaves behind
//! (threads parked deep, tasks still alive, a grown heap) never slows the
//! other, and the two sides alternate (JoinSet first on even repetitions,
//! TaskGroup first on odd ones). A figure is the median of the repetitions
//! (the upper one for an even count), except where the table's notes say
//! max. Tasks are spawned from the `block_on` future, not from a worker.
//!
//! The `std::thread::sleep` calls are on purpose: they stand for what the
//! hostage and `block_in_place` scenarios are about, a task's synchronous
//! call (a DNS lookup, a file read) that blocks its thread.
//!
//! The output is a Markdown table: the JoinSet figure, the TaskGroup
//! figure, their ratio (TaskGroup / JoinSet), the threshold each scenario
//! is held to, and whether it was met. The figures only mean something
//! side by side, within one run: do not compare figures from different
//! runs or machines (the worker count, the core count, the load and the
//! clock all move them).

use std::collections::HashSet;
use std::future::Future;
use std::hint::black_box;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use taskgroup::TaskGroup;
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::task::JoinSet;

/// The two things compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    JoinSet,
    TaskGroup,
}

/// Which runtime a repetition runs on.
#[derive(Clone, Copy, Debug)]
enum Flavor {
    MultiThread { workers: usize },
    CurrentThread,
}

/// A repetition that takes longer than this is stuck: it panics, and its
/// cell in the table says so.
const STUCK: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Shared helpers

/// Builds a fresh runtime of the given flavor, with timers.
fn fresh_runtime(flavor: Flavor) -> Runtime {
    let mut builder = match flavor {
        Flavor::MultiThread { workers } => {
            let mut b = Builder::new_multi_thread();
            b.worker_threads(workers);
            b
        }
        Flavor::CurrentThread => Builder::new_current_thread(),
    };
    builder
        .enable_all()
        .build()
        .expect("build the tokio runtime")
}

/// Runs `body` inside `block_on` on a fresh runtime and returns its output
/// with how long it took (from its first poll to its end: building and
/// shutting down the runtime are not counted). The runtime is shut down
/// (every task dropped, every thread joined) before this returns.
fn time_on_fresh_runtime<F, Fut>(flavor: Flavor, body: F) -> (Fut::Output, Duration)
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    let rt = fresh_runtime(flavor);
    let out = rt.block_on(async {
        let start = Instant::now();
        let out = tokio::time::timeout(STUCK, body())
            .await
            .unwrap_or_else(|_| panic!("stuck: still running after {STUCK:?}"));
        (out, start.elapsed())
    });
    drop(rt);
    out
}

/// Spawns every future as one task on `side` and waits for them all:
/// `TaskGroup::spawn` and `wait()`, or `JoinSet::spawn` and a `join_next`
/// loop. The group gives the values back in spawn order, the JoinSet in
/// completion order.
async fn spawn_and_wait<F>(side: Side, tasks: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match side {
        Side::JoinSet => {
            let mut set = JoinSet::new();
            for task in tasks {
                set.spawn(task);
            }
            let mut values = Vec::new();
            while let Some(joined) = set.join_next().await {
                values.push(joined.expect("a JoinSet task panicked"));
            }
            values
        }
        Side::TaskGroup => {
            let mut group = TaskGroup::<F::Output, String>::new();
            for task in tasks {
                group.spawn(move |_ctx| async move { Ok(task.await) });
            }
            group.wait().await.expect("no task returns an error")
        }
    }
}

/// Keeps the thread busy with arithmetic for `d`, without yielding.
fn spin(d: Duration) {
    let start = Instant::now();
    let mut x = 1u64;
    while start.elapsed() < d {
        for _ in 0..64 {
            x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
    black_box(x);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------
// Scenarios: each returns its figure for one side, one repetition.

/// `cpu_k` / `cpu_k_yield`: a CPU-bound fan-out of `k` tasks of 20 ms each
/// (with `yield_every`, each yields to the scheduler that often). With k
/// above the worker count, the tasks must be spread over every worker as
/// they free up. Figure: wall time in ms.
fn cpu(flavor: Flavor, side: Side, k: usize, yield_every: Option<Duration>) -> f64 {
    const WORK: Duration = Duration::from_millis(20);
    let ((), took) = time_on_fresh_runtime(flavor, || async move {
        let tasks = (0..k).map(|_| async move {
            match yield_every {
                None => spin(WORK),
                Some(slice) => {
                    let start = Instant::now();
                    while start.elapsed() < WORK {
                        spin(slice.min(WORK.saturating_sub(start.elapsed())));
                        tokio::task::yield_now().await;
                    }
                }
            }
        });
        spawn_and_wait(side, tasks).await;
    });
    ms(took)
}

/// How the hostage-taker of the `hostage_*` scenarios blocks its thread.
#[derive(Clone, Copy, Debug)]
enum Hostage {
    /// `std::thread::sleep(200 ms)` at its first poll.
    FirstPoll,
    /// A 1 ms timer first, then `std::thread::sleep(200 ms)`; the short
    /// tasks wake themselves until it blocks, so they are queued while it
    /// blocks. (Not on timers of their own, nor through `yield_now`: tokio
    /// fires timers from one parked worker at a time, and defers a yielded
    /// task's wake-up to its worker's next park, so the blocked worker
    /// would hold back a `JoinSet`'s tasks too.)
    AfterTimer,
    /// `block_in_place(|| std::thread::sleep(200 ms))` at its first poll:
    /// tokio hands the worker's other work to another thread.
    BlockInPlace,
}

/// Returns `Pending` once, having woken itself: the task is ready again at
/// once, and queued where any worker can take it.
async fn wake_self() {
    let mut woken = false;
    std::future::poll_fn(|cx| {
        if woken {
            return std::task::Poll::Ready(());
        }
        woken = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await;
}

/// `hostage_*`: one task blocks its thread for 200 ms (spawned first), 200
/// short tasks (spawned right after) should finish on the other workers
/// meanwhile. Figure: how many of the short ones finished more than 100 ms
/// after the start, held hostage by the blocked thread.
fn hostage(flavor: Flavor, side: Side, how: Hostage) -> f64 {
    const BLOCK: Duration = Duration::from_millis(200);
    let (late, _) = time_on_fresh_runtime(flavor, || async move {
        let start = Instant::now();
        let blocking = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..=200).map(move |i| {
            let blocking = blocking.clone();
            async move {
                if i == 0 {
                    match how {
                        Hostage::FirstPoll => std::thread::sleep(BLOCK),
                        Hostage::AfterTimer => {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            blocking.store(true, std::sync::atomic::Ordering::SeqCst);
                            std::thread::sleep(BLOCK);
                        }
                        Hostage::BlockInPlace => {
                            tokio::task::block_in_place(|| std::thread::sleep(BLOCK));
                        }
                    }
                    return None;
                }
                if let Hostage::AfterTimer = how {
                    while !blocking.load(std::sync::atomic::Ordering::SeqCst)
                        && start.elapsed() < Duration::from_millis(50)
                    {
                        wake_self().await;
                    }
                }
                tokio::task::yield_now().await;
                Some(start.elapsed())
            }
        });
        let finished = spawn_and_wait(side, tasks).await;
        finished
            .into_iter()
            .flatten()
            .filter(|&at| at > Duration::from_millis(100))
            .count()
    });
    late as f64
}

/// `block_in_place_beside_cpu`: one task sits in `block_in_place` for
/// 500 ms (spawned first) beside 200 CPU tasks of 5 ms each. tokio moves
/// the worker's other work off the blocked thread, so the CPU tasks should
/// keep every worker busy. Figure: wall time until all are joined, in ms.
fn block_in_place_beside_cpu(flavor: Flavor, side: Side) -> f64 {
    let ((), took) = time_on_fresh_runtime(flavor, || async move {
        let tasks = (0..=200).map(|i| async move {
            if i == 0 {
                tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(500)));
            } else {
                spin(Duration::from_millis(5));
            }
        });
        spawn_and_wait(side, tasks).await;
    });
    ms(took)
}

/// What the `sibling_sync_wait` limit returns when the waiter gave up.
const SYNC_WAIT_TIMEOUT_MS: f64 = 1000.0;

/// `sibling_sync_wait`: task A (spawned first) waits synchronously, with
/// `recv_timeout(1 s)`, for a message that task B (spawned right after)
/// sends at its first poll. As separate tokio tasks, B runs on another
/// worker at once. Figure: how long A waited, in ms (1000: it timed out).
fn sibling_sync_wait(flavor: Flavor, side: Side) -> f64 {
    enum Role {
        A(mpsc::Receiver<()>),
        B(mpsc::Sender<()>),
    }
    let (waited, _) = time_on_fresh_runtime(flavor, || async move {
        let (tx, rx) = mpsc::channel();
        let tasks = [Role::A(rx), Role::B(tx)].map(|role| async move {
            match role {
                Role::A(rx) => {
                    let start = Instant::now();
                    Some(match rx.recv_timeout(Duration::from_secs(1)) {
                        Ok(()) => ms(start.elapsed()),
                        Err(_) => SYNC_WAIT_TIMEOUT_MS,
                    })
                }
                Role::B(tx) => {
                    let _ = tx.send(());
                    None
                }
            }
        });
        let waited = spawn_and_wait(side, tasks).await;
        waited.into_iter().flatten().next().expect("A reports")
    });
    waited
}

/// How a `small_group_*` scenario measures: flavor, side, tasks per group,
/// groups.
type SmallGroup = fn(Flavor, Side, usize, usize) -> f64;

/// `small_group_n`: the fixed cost of a small fan-out, a group (or a
/// JoinSet) created, given `n` no-op tasks and waited for, `iters` times in
/// a row in one `block_on`. Figure: ns per iteration.
fn small_group(flavor: Flavor, side: Side, n: usize, iters: usize) -> f64 {
    let ((), took) = time_on_fresh_runtime(flavor, || async move {
        for _ in 0..iters {
            spawn_and_wait(side, (0..n).map(|_| async {})).await;
        }
    });
    took.as_nanos() as f64 / iters as f64
}

/// `small_group_n_in_task`: the same from inside a tokio task, as a request
/// handler makes its fan-out: the tasks start on the handler's worker, and
/// no thread outside the runtime is woken. Figure: ns per iteration.
fn small_group_in_task(flavor: Flavor, side: Side, n: usize, iters: usize) -> f64 {
    let (took, _) = time_on_fresh_runtime(flavor, || async move {
        tokio::spawn(async move {
            let start = Instant::now();
            for _ in 0..iters {
                spawn_and_wait(side, (0..n).map(|_| async {})).await;
            }
            start.elapsed()
        })
        .await
        .expect("the handler task")
    });
    took.as_nanos() as f64 / iters as f64
}

/// `small_group_1_busy_workers`: a group of one no-op task waited from
/// `block_on` (as in `#[tokio::main]`'s body), `iters` times, while two
/// tasks per worker spin 50 µs at a time. A group's `wait` confirms that
/// tokio has taken its runner's tasks off its list (runner invariant 13),
/// which a busy worker does at its next maintenance; a `JoinSet` returns
/// a step earlier. Figure: ns per group.
fn small_group_busy_workers(flavor: Flavor, side: Side, iters: usize) -> f64 {
    let Flavor::MultiThread { workers } = flavor else {
        unreachable!("busy workers need a multi-thread runtime");
    };
    let (took, _) = time_on_fresh_runtime(flavor, || async move {
        let stop = Arc::new(AtomicBool::new(false));
        let spinners: Vec<_> = (0..2 * workers)
            .map(|_| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    while !stop.load(SeqCst) {
                        let step = Instant::now();
                        while step.elapsed() < Duration::from_micros(50) {
                            std::hint::spin_loop();
                        }
                        // Not `yield_now`: that defers the wake-up to the
                        // worker's next park, and the worker would idle.
                        wake_self().await;
                    }
                })
            })
            .collect();
        let start = Instant::now();
        for _ in 0..iters {
            spawn_and_wait(side, [async {}]).await;
        }
        let took = start.elapsed();
        stop.store(true, SeqCst);
        for spinner in spinners {
            spinner.await.expect("a spinner");
        }
        took
    });
    took.as_nanos() as f64 / iters as f64
}

/// `spawn_wait_100k`: the cost per task of a large fan-out, 100,000 no-op
/// tasks spawned and then waited for. Figure: ns per task.
fn spawn_wait_100k(flavor: Flavor, side: Side) -> f64 {
    const N: usize = 100_000;
    let ((), took) = time_on_fresh_runtime(flavor, || async move {
        spawn_and_wait(side, (0..N).map(|_| async {})).await;
    });
    took.as_nanos() as f64 / N as f64
}

/// `alive_after_wait`: whether `wait` (or the end of the `join_next` loop)
/// leaves tokio tasks behind: the runtime's alive-task count right after,
/// minus the count before, with 100 tasks that each yield once.
fn alive_after_wait(flavor: Flavor, side: Side) -> f64 {
    let (left, _) = time_on_fresh_runtime(flavor, || async move {
        let metrics = Handle::current().metrics();
        let before = metrics.num_alive_tasks();
        spawn_and_wait(side, (0..100).map(|_| tokio::task::yield_now())).await;
        let after = metrics.num_alive_tasks();
        after as f64 - before as f64
    });
    left
}

/// `task_ids`: what `tokio::task::id()` says inside 1,000 tasks, as the
/// number of distinct ids (each tokio task has its own).
fn task_ids(flavor: Flavor, side: Side) -> f64 {
    let (ids, _) = time_on_fresh_runtime(flavor, || async move {
        let ids = spawn_and_wait(side, (0..1000).map(|_| async { tokio::task::id() })).await;
        ids.into_iter().collect::<HashSet<_>>().len()
    });
    ids as f64
}

// ---------------------------------------------------------------------------
// The table

/// How a scenario's figure is printed.
#[derive(Clone, Copy)]
enum Unit {
    Ms,
    /// Milliseconds, where `SYNC_WAIT_TIMEOUT_MS` means the wait timed out.
    MsOrTimeout,
    Count,
    NsPerIter,
    NsPerTask,
}

/// What a scenario is held to.
#[derive(Clone, Copy)]
enum Threshold {
    /// TaskGroup / JoinSet at most this.
    Ratio(f64),
    /// The TaskGroup figure at most this.
    TaskGroupAtMost(f64),
    /// Informational.
    None,
}

/// How the repetitions are summed up into one figure.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Summary {
    Median,
    Max,
}

struct Scenario {
    name: String,
    unit: Unit,
    threshold: Threshold,
    summary: Summary,
    run: Box<dyn Fn(Side) -> f64>,
}

impl Scenario {
    fn new(
        name: impl Into<String>,
        unit: Unit,
        threshold: Threshold,
        run: impl Fn(Side) -> f64 + 'static,
    ) -> Self {
        Scenario {
            name: name.into(),
            unit,
            threshold,
            summary: Summary::Median,
            run: Box::new(run),
        }
    }

    fn max(mut self) -> Self {
        self.summary = Summary::Max;
        self
    }
}

/// Every scenario of the table, in order.
fn scenarios(workers: usize, quick: bool) -> Vec<Scenario> {
    let mt = Flavor::MultiThread { workers };
    let ct = Flavor::CurrentThread;
    let mut all = Vec::new();
    for k in [2, 4, 8, 17, 24] {
        all.push(Scenario::new(
            format!("cpu_{k}"),
            Unit::Ms,
            Threshold::Ratio(1.15),
            move |side| cpu(mt, side, k, None),
        ));
    }
    for k in [2, 4, 8, 17, 24] {
        all.push(Scenario::new(
            format!("cpu_{k}_yield"),
            Unit::Ms,
            Threshold::Ratio(1.15),
            move |side| cpu(mt, side, k, Some(Duration::from_millis(1))),
        ));
    }
    for (name, how) in [
        ("hostage_first_poll", Hostage::FirstPoll),
        ("hostage_after_timer", Hostage::AfterTimer),
        ("hostage_block_in_place", Hostage::BlockInPlace),
    ] {
        all.push(Scenario::new(
            name,
            Unit::Count,
            Threshold::TaskGroupAtMost(1.0),
            move |side| hostage(mt, side, how),
        ));
    }
    all.push(Scenario::new(
        "block_in_place_beside_cpu",
        Unit::Ms,
        Threshold::Ratio(1.15),
        move |side| block_in_place_beside_cpu(mt, side),
    ));
    all.push(
        Scenario::new(
            "sibling_sync_wait",
            Unit::MsOrTimeout,
            Threshold::TaskGroupAtMost(10.0),
            move |side| sibling_sync_wait(mt, side),
        )
        .max(),
    );
    let iters = if quick { 2_000 } else { 20_000 };
    // From `block_on`, then from inside a tokio task (where each round is
    // cheaper, so five times as many).
    let small: [(&str, SmallGroup, usize); 2] = [
        ("", small_group, iters),
        ("_in_task", small_group_in_task, iters * 5),
    ];
    for (suffix, measure, iters) in small {
        for n in [1, 2] {
            all.push(Scenario::new(
                format!("small_group_{n}{suffix}"),
                Unit::NsPerIter,
                Threshold::Ratio(1.3),
                move |side| measure(mt, side, n, iters),
            ));
        }
    }
    all.push(Scenario::new(
        "small_group_1_busy_workers",
        Unit::NsPerIter,
        Threshold::None,
        move |side| small_group_busy_workers(mt, side, iters / 20),
    ));
    all.push(Scenario::new(
        "spawn_wait_100k",
        Unit::NsPerTask,
        Threshold::Ratio(0.8),
        move |side| spawn_wait_100k(mt, side),
    ));
    all.push(
        Scenario::new(
            "alive_after_wait",
            Unit::Count,
            Threshold::TaskGroupAtMost(0.0),
            move |side| alive_after_wait(mt, side),
        )
        .max(),
    );
    all.push(
        Scenario::new(
            "alive_after_wait_current_thread",
            Unit::Count,
            Threshold::TaskGroupAtMost(0.0),
            move |side| alive_after_wait(ct, side),
        )
        .max(),
    );
    all.push(Scenario::new(
        "task_ids",
        Unit::Count,
        Threshold::None,
        move |side| task_ids(mt, side),
    ));
    all
}

/// One side's summed-up figure; `None` if a repetition panicked.
type Figure = Option<f64>;

/// Runs a scenario `reps` times per side, alternating the sides, and sums
/// each side's repetitions up.
fn measure(scenario: &Scenario, reps: usize) -> (Figure, Figure) {
    let mut joinset = Some(Vec::new());
    let mut taskgroup = Some(Vec::new());
    for rep in 0..reps {
        let order = if rep % 2 == 0 {
            [Side::JoinSet, Side::TaskGroup]
        } else {
            [Side::TaskGroup, Side::JoinSet]
        };
        for side in order {
            let figures = match side {
                Side::JoinSet => &mut joinset,
                Side::TaskGroup => &mut taskgroup,
            };
            if figures.is_none() {
                continue; // it panicked once: no point in more
            }
            match catch_unwind(AssertUnwindSafe(|| (scenario.run)(side))) {
                Ok(figure) => figures.as_mut().expect("checked").push(figure),
                Err(_) => *figures = None,
            }
        }
    }
    let sum_up = |figures: Option<Vec<f64>>| {
        let mut figures = figures?;
        figures.sort_by(f64::total_cmp);
        match scenario.summary {
            Summary::Median => figures.get(figures.len() / 2).copied(),
            Summary::Max => figures.last().copied(),
        }
    };
    (sum_up(joinset), sum_up(taskgroup))
}

fn format_figure(unit: Unit, figure: Figure) -> String {
    let Some(v) = figure else {
        return "panicked".to_string();
    };
    match unit {
        Unit::Ms => format!("{v:.1} ms"),
        Unit::MsOrTimeout if v >= SYNC_WAIT_TIMEOUT_MS => "timeout (1000 ms)".to_string(),
        Unit::MsOrTimeout => format!("{v:.2} ms"),
        Unit::Count => format!("{v:.0}"),
        Unit::NsPerIter => format!("{v:.0} ns/iter"),
        Unit::NsPerTask => format!("{v:.0} ns/task"),
    }
}

/// The ratio cell, the threshold cell and the verdict cell of a row.
fn judge(threshold: Threshold, joinset: Figure, taskgroup: Figure) -> [String; 3] {
    let ratio = match (joinset, taskgroup) {
        (Some(j), Some(t)) if j != 0.0 => Some(t / j),
        _ => None,
    };
    let ratio_cell = ratio.map_or("-".to_string(), |r| format!("{r:.2}"));
    let verdict = |met: Option<bool>| match met {
        Some(true) => "met".to_string(),
        Some(false) => "missed".to_string(),
        None => "missed (no figure)".to_string(),
    };
    match threshold {
        Threshold::Ratio(max) => [
            ratio_cell,
            format!("ratio ≤ {max}"),
            verdict(ratio.map(|r| r <= max)),
        ],
        Threshold::TaskGroupAtMost(max) if max == 0.0 => [
            ratio_cell,
            "TaskGroup = 0".to_string(),
            verdict(taskgroup.map(|t| t <= max)),
        ],
        Threshold::TaskGroupAtMost(max) => [
            ratio_cell,
            format!("TaskGroup ≤ {max}"),
            verdict(taskgroup.map(|t| t <= max)),
        ],
        Threshold::None => [ratio_cell, "-".to_string(), "-".to_string()],
    }
}

// ---------------------------------------------------------------------------
// Command line

struct Options {
    workers: usize,
    reps: usize,
    quick: bool,
    only: Option<String>,
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}");
    eprintln!(
        "usage: scheduling [--workers N] [--reps N] [--quick] [--only <scenario>]\n\
         scenarios: {}",
        scenarios(2, true)
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    std::process::exit(2)
}

fn parse_args() -> Options {
    let mut workers = 2;
    let mut reps = None;
    let mut quick = false;
    let mut only = None;
    let mut args = std::env::args().skip(1);
    let number = |flag: &str, value: Option<String>| -> usize {
        match value.as_deref().map(str::parse) {
            Some(Ok(n)) if n > 0 => n,
            _ => usage(&format!("{flag} needs a positive number")),
        }
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--workers" => workers = number("--workers", args.next()),
            "--reps" => reps = Some(number("--reps", args.next())),
            "--quick" => quick = true,
            "--only" => only = Some(args.next().unwrap_or_else(|| usage("--only needs a name"))),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    let reps = reps.unwrap_or(if quick { 2 } else { 5 });
    Options {
        workers,
        reps,
        quick,
        only,
    }
}

fn main() {
    let opts = parse_args();
    let mut chosen = scenarios(opts.workers, opts.quick);
    if let Some(only) = &opts.only {
        chosen.retain(|s| &s.name == only);
        if chosen.is_empty() {
            usage(&format!("no scenario named {only:?}"));
        }
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let started = Instant::now();
    let mut rows = Vec::new();
    for scenario in &chosen {
        let t0 = Instant::now();
        eprint!("{:<32}", scenario.name);
        let (joinset, taskgroup) = measure(scenario, opts.reps);
        eprintln!(" {:>6.1} s", t0.elapsed().as_secs_f64());
        let [ratio, threshold, verdict] = judge(scenario.threshold, joinset, taskgroup);
        rows.push(format!(
            "| {} | {} | {} | {} | {} | {} |",
            scenario.name,
            format_figure(scenario.unit, joinset),
            format_figure(scenario.unit, taskgroup),
            ratio,
            threshold,
            verdict
        ));
    }

    println!();
    println!(
        "TaskGroup vs JoinSet, multi-thread runtime with {} workers ({} cores available), \
         {} repetitions per side{}",
        opts.workers,
        cores,
        opts.reps,
        if opts.quick { ", --quick" } else { "" }
    );
    println!();
    println!("| scenario | JoinSet | TaskGroup | ratio | threshold | verdict |");
    println!("|---|---|---|---|---|---|");
    for row in &rows {
        println!("{row}");
    }
    println!();
    println!(
        "Figures are medians of the repetitions, except sibling_sync_wait and \
         alive_after_wait* (max). ratio = TaskGroup / JoinSet (\"-\" when JoinSet is 0). \
         alive_after_wait_current_thread runs on a current_thread runtime, every other \
         scenario on the multi-thread one. Compare figures within this run only."
    );
    println!("Total: {:.1} s", started.elapsed().as_secs_f64());
}
