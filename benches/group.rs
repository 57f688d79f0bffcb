//! `TaskGroup` against the tokio code one would write by hand, each bench
//! beside its baselines in the same criterion group.
//!
//! Every measurement runs inside one tokio task on a multi-thread runtime
//! with the default worker count (2 on the reference machine), as the peer
//! harness in `shared/peers/` does: the fan-out is driven from a worker
//! thread, not from `block_on`. `iter_custom` times only the part named in
//! each group; setup (spawning parked siblings) and teardown are untimed.
//! Throughput is set to N, so criterion prints tasks per second, and
//! `scripts/ratios.py` reports ns per task and taskgroup/baseline ratios.
//!
//! Function ids: `taskgroup*` is the crate, everything else a baseline.
//!
//! - `spawn_wait/N`: spawn N no-op tasks, then wait for all of them.
//! - `first_error/N`: N siblings parked (each in a 1 h sleep cut short by
//!   cancellation); timed from spawning one failing task until the
//!   errgroup-style wait returns that error with every sibling joined.
//!   Each side on a fresh runtime; each sample is the median repetition,
//!   not the mean (see `timed_median`).
//! - `cancel/N`: N tasks parked on their context (or token); timed from
//!   `cancel()` until every task is joined.
//! - `limit/N`: N no-op tasks through a limit of 64 with backpressure
//!   (`ready()` + `spawn`, or a semaphore permit per task), then wait.
//! - `cpu_fanout/N`: N tasks of about 10 µs of arithmetic each, then wait:
//!   whether running a group's tasks inside a few runner tasks keeps the
//!   parallelism of one tokio task each (`serial` does all the work in one
//!   task: the speed-up is serial / parallel).
//!
//! - `joiners_spawn_wait/N`: `spawn_wait` under `Supervise` beside the
//!   default `FailFast` and a `JoinSet`.
//! - `joiners_race2/N`: N races of 2 no-op tasks under `FirstOk`, beside a
//!   `JoinSet` of 2 (the first joined `Ok` taken, the other aborted by
//!   dropping the set). Per race.
//!
//! - `servers_spawn/N`: N no-op tasks spawned through a `Spawner` then
//!   waited for, beside `TaskGroup::spawn` and `tokio::spawn` (handles
//!   awaited): what the spawner path costs per spawn.
//! - `servers_connection/N`: an accept loop (a task) starts N
//!   "connections" (each yields once, as a handler waiting for its first
//!   read would), then the owner shuts down: the loop a task of a
//!   `Discard` group feeding it through a spawner, beside the loop a
//!   `tokio::spawn`ed task starting tasks a `TaskTracker` tracks, the
//!   hand-written server's way. Per connection.
//! - `servers_kick/N`: a server with N live connections (parked tasks)
//!   kicks 1,000 of them, one at a time: `cancel_task` on a `Discard`
//!   group, beside a `JoinSet` whose owner keeps each task's `AbortHandle`
//!   in a `HashMap` by id and aborts it. Only the kicks are timed. Per
//!   kick.
//! - `supervisor_start/N`: N children added to a `Supervisor` (temporary,
//!   each returns at once), then `wait`; beside the same futures spawned
//!   into a `TaskGroup`. Per child.
//! - `supervisor_restart/N`: one child that fails at once N times under
//!   `Backoff::none()`, then returns; beside spawning the same future N
//!   times into a `TaskGroup`, one after the other. Per restart: the
//!   supervisor restarts at the next tick of tokio's timer, by design.
//!
//! `cargo bench --bench group` runs them; `cargo bench --bench group --
//! spawn_wait` runs one group.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main, measurement::WallTime,
};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use taskgroup::{Discard, FirstOk, GroupError, Outcome, Restart, Supervise, Supervisor, TaskGroup};
use tokio::runtime::Runtime;
use tokio::sync::{Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

const HOUR: Duration = Duration::from_secs(3600);
const LIMIT: usize = 64;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a multi-thread runtime")
}

/// Runs `iters` repetitions of `one` inside a single spawned task and adds
/// up the durations each returns.
fn timed<F, Fut>(rt: &Runtime, iters: u64, one: F) -> Duration
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Duration> + Send,
{
    rt.block_on(async move {
        tokio::spawn(async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += one().await;
            }
            total
        })
        .await
        .expect("the bench task does not panic")
    })
}

/// "Every task has registered as a waiter": counted down by N tasks.
struct Latch {
    n: usize,
    arrived: AtomicUsize,
    all: Notify,
}

impl Latch {
    fn new(n: usize) -> Arc<Latch> {
        Arc::new(Latch {
            n,
            arrived: AtomicUsize::new(0),
            all: Notify::new(),
        })
    }

    fn arrive(&self) {
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.all.notify_one(); // stores a permit if nobody waits yet
        }
    }

    async fn wait(&self) {
        if self.n > 0 {
            self.all.notified().await;
        }
    }
}

/// Polls `fut` once (so it registers its waker), tells `latch`, then
/// finishes it.
async fn park<F: Future>(fut: F, latch: &Latch) -> F::Output {
    let mut fut = pin!(fut);
    let first = poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    latch.arrive();
    match first {
        Poll::Ready(out) => out,
        Poll::Pending => fut.await,
    }
}

/// A group of benches over N, with sampling suited to N.
fn sized<'a>(c: &'a mut Criterion, name: &str, big: bool) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    if big {
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(4));
    }
    group
}

// ------------------------------------------------------------ spawn_wait ----

async fn spawn_wait_taskgroup(n: usize) -> Duration {
    let t0 = Instant::now();
    let mut group = TaskGroup::<(), Infallible>::new();
    for _ in 0..n {
        group.spawn(|_ctx| async { Ok(()) });
    }
    let values = group.wait().await.expect("no task fails");
    let elapsed = t0.elapsed();
    assert_eq!(values.len(), n);
    elapsed
}

async fn spawn_wait_joinset(n: usize) -> Duration {
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..n {
        set.spawn(async {});
    }
    while let Some(joined) = set.join_next().await {
        joined.expect("no task panics");
    }
    t0.elapsed()
}

async fn spawn_wait_vec(n: usize) -> Duration {
    let t0 = Instant::now();
    let handles: Vec<JoinHandle<()>> = (0..n).map(|_| tokio::spawn(async {})).collect();
    for handle in handles {
        handle.await.expect("no task panics");
    }
    t0.elapsed()
}

/// One task polling every future: no parallelism, no per-task spawn. A
/// floor for the fast-path designs of `shared/notes/fast-path.md`, not a
/// like-for-like baseline.
async fn spawn_wait_futures_unordered(n: usize) -> Duration {
    let t0 = Instant::now();
    let mut futures: FuturesUnordered<_> = (0..n).map(|_| async {}).collect();
    let mut done = 0;
    while futures.next().await.is_some() {
        done += 1;
    }
    let elapsed = t0.elapsed();
    assert_eq!(done, n);
    elapsed
}

fn spawn_wait(c: &mut Criterion) {
    let rt = runtime();
    for n in [1_000, 100_000] {
        let mut group = sized(c, "spawn_wait", n > 10_000);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("taskgroup", n), |b| {
            b.iter_custom(|iters| timed(&rt, iters, move || spawn_wait_taskgroup(n)))
        });
        group.bench_function(BenchmarkId::new("joinset", n), |b| {
            b.iter_custom(|iters| timed(&rt, iters, move || spawn_wait_joinset(n)))
        });
        group.bench_function(BenchmarkId::new("vec_joinhandle", n), |b| {
            b.iter_custom(|iters| timed(&rt, iters, move || spawn_wait_vec(n)))
        });
        group.bench_function(BenchmarkId::new("futures_unordered", n), |b| {
            b.iter_custom(|iters| timed(&rt, iters, move || spawn_wait_futures_unordered(n)))
        });
        group.finish();
    }
}

// ----------------------------------------------------------- first_error ----

async fn first_error_taskgroup(n: usize) -> Duration {
    let latch = Latch::new(n);
    let mut group = TaskGroup::<(), usize>::new();
    for _ in 0..n {
        let latch = latch.clone();
        group.spawn(move |ctx| async move {
            let _ = park(ctx.sleep(HOUR), &latch).await;
            Ok(())
        });
    }
    latch.wait().await;
    let t0 = Instant::now();
    group.spawn(move |_ctx| async move { Err(n) });
    let result = group.wait().await;
    let elapsed = t0.elapsed();
    assert_eq!(result, Err(GroupError::Failed(n)));
    elapsed
}

/// Go's errgroup by hand: a token every task selects on, the first error
/// kept in a `OnceLock` and cancelling the token from the failing task,
/// every task joined.
async fn first_error_joinset_token(n: usize) -> Duration {
    struct Shared {
        token: CancellationToken,
        error: OnceLock<usize>,
    }
    let shared = Arc::new(Shared {
        token: CancellationToken::new(),
        error: OnceLock::new(),
    });
    let latch = Latch::new(n);
    let mut set = JoinSet::new();
    for _ in 0..n {
        let shared = shared.clone();
        let latch = latch.clone();
        set.spawn(async move {
            let parked = async {
                tokio::select! {
                    biased;
                    _ = shared.token.cancelled() => {}
                    _ = tokio::time::sleep(HOUR) => {}
                }
            };
            park(parked, &latch).await;
            Ok::<(), usize>(())
        });
    }
    latch.wait().await;
    let t0 = Instant::now();
    let failing = shared.clone();
    set.spawn(async move {
        if failing.error.set(n).is_ok() {
            failing.token.cancel();
        }
        Err(n)
    });
    while let Some(joined) = set.join_next().await {
        let _ = joined.expect("no task panics");
    }
    let first = *shared.error.get().expect("the failing task ran");
    let elapsed = t0.elapsed();
    assert_eq!(first, n);
    elapsed
}

/// Like [`timed`], but returns `iters` times the median repetition
/// rather than their sum: a sample is what a typical repetition takes.
///
/// For `first_error`, whose timed span is a few hundred µs of both
/// workers dropping and joining tasks, a repetition during which another
/// process holds one of the two cores (a scheduler slice is milliseconds)
/// takes several times as long; how many such repetitions a sample
/// catches depends on the machine's load in those seconds, not on the
/// group, and the mean went with it (benches/results/LOG.md,
/// "first_error/1000 in a full run").
fn timed_median<F, Fut>(rt: &Runtime, iters: u64, one: F) -> Duration
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Duration> + Send,
{
    rt.block_on(async move {
        tokio::spawn(async move {
            let mut each = Vec::with_capacity(iters as usize);
            for _ in 0..iters {
                each.push(one().await);
            }
            each.sort_unstable();
            each.get(each.len() / 2)
                .map_or(Duration::ZERO, |&m| m * iters as u32)
        })
        .await
        .expect("the bench task does not panic")
    })
}

/// Each side on a runtime of its own, made for it and dropped after it,
/// so neither inherits the workers of the other side or of the other N
/// (before, one runtime served all four), and each sample is the median
/// repetition ([`timed_median`]).
fn first_error(c: &mut Criterion) {
    for n in [1_000, 100_000] {
        let mut group = sized(c, "first_error", n > 10_000);
        group.throughput(Throughput::Elements(n as u64));
        let rt = runtime();
        group.bench_function(BenchmarkId::new("taskgroup", n), |b| {
            b.iter_custom(|iters| timed_median(&rt, iters, move || first_error_taskgroup(n)))
        });
        drop(rt);
        let rt = runtime();
        group.bench_function(BenchmarkId::new("joinset_token", n), |b| {
            b.iter_custom(|iters| timed_median(&rt, iters, move || first_error_joinset_token(n)))
        });
        drop(rt);
        group.finish();
    }
}

// ---------------------------------------------------------------- cancel ----

async fn cancel_taskgroup(n: usize) -> Duration {
    let latch = Latch::new(n);
    let mut group = TaskGroup::<(), Infallible>::new();
    for _ in 0..n {
        let latch = latch.clone();
        group.spawn(move |ctx| async move {
            park(ctx.done(), &latch).await;
            Ok(())
        });
    }
    latch.wait().await;
    let t0 = Instant::now();
    group.cancel();
    let result = group.wait().await;
    let elapsed = t0.elapsed();
    // `Ok` is allowed: a task may see the cancel and return before the
    // group's abort reaches it (the peer binary counts those).
    assert!(matches!(result, Err(GroupError::Cancelled(_)) | Ok(_)));
    elapsed
}

async fn cancel_joinset_token(n: usize) -> Duration {
    let token = CancellationToken::new();
    let latch = Latch::new(n);
    let mut set = JoinSet::new();
    for _ in 0..n {
        let token = token.clone();
        let latch = latch.clone();
        set.spawn(async move { park(token.cancelled(), &latch).await });
    }
    latch.wait().await;
    let t0 = Instant::now();
    token.cancel();
    while let Some(joined) = set.join_next().await {
        joined.expect("no task panics");
    }
    t0.elapsed()
}

/// What `TaskGroup` does underneath (besides waking the waiters): abort
/// every task, then join them.
async fn cancel_joinset_abort_all(n: usize) -> Duration {
    let latch = Latch::new(n);
    let mut set = JoinSet::new();
    for _ in 0..n {
        let latch = latch.clone();
        set.spawn(async move { park(std::future::pending::<()>(), &latch).await });
    }
    latch.wait().await;
    let t0 = Instant::now();
    set.abort_all();
    while let Some(joined) = set.join_next().await {
        assert!(joined.is_err_and(|e| e.is_cancelled()));
    }
    t0.elapsed()
}

fn cancel(c: &mut Criterion) {
    let rt = runtime();
    for n in [1_000, 100_000] {
        let mut group = sized(c, "cancel", n > 10_000);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("taskgroup", n), |b| {
            b.iter_custom(|iters| timed(&rt, iters, move || cancel_taskgroup(n)))
        });
        group.bench_function(BenchmarkId::new("joinset_token", n), |b| {
            b.iter_custom(|iters| timed(&rt, iters, move || cancel_joinset_token(n)))
        });
        group.bench_function(BenchmarkId::new("joinset_abort_all", n), |b| {
            b.iter_custom(|iters| timed(&rt, iters, move || cancel_joinset_abort_all(n)))
        });
        group.finish();
    }
}

// ----------------------------------------------------------------- limit ----

/// `drain`: hand finished tasks out with `try_next` in the loop, so results
/// do not pile up until `wait`.
async fn limit_taskgroup(n: usize, drain: bool) -> Duration {
    let t0 = Instant::now();
    let mut group = TaskGroup::<(), Infallible>::builder().limit(LIMIT).build();
    let mut drained = 0;
    for _ in 0..n {
        group.ready().await;
        group.spawn(|_ctx| async { Ok(()) });
        if drain {
            while group.try_next().is_some() {
                drained += 1;
            }
        }
    }
    let values = group.wait().await.expect("no task fails");
    let elapsed = t0.elapsed();
    assert_eq!(values.len() + drained, n);
    elapsed
}

/// A permit per task, held by the task; finished tasks reaped as we go.
async fn limit_semaphore_joinset(n: usize) -> Duration {
    let t0 = Instant::now();
    let permits = Arc::new(Semaphore::new(LIMIT));
    let mut set = JoinSet::new();
    for _ in 0..n {
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        set.spawn(async move { drop(permit) });
        while let Some(joined) = set.try_join_next() {
            joined.expect("no task panics");
        }
    }
    while let Some(joined) = set.join_next().await {
        joined.expect("no task panics");
    }
    t0.elapsed()
}

fn limit(c: &mut Criterion) {
    let rt = runtime();
    let n = 100_000;
    let mut group = sized(c, "limit", true);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(BenchmarkId::new("taskgroup", n), |b| {
        b.iter_custom(|iters| timed(&rt, iters, move || limit_taskgroup(n, false)))
    });
    group.bench_function(BenchmarkId::new("taskgroup_drain", n), |b| {
        b.iter_custom(|iters| timed(&rt, iters, move || limit_taskgroup(n, true)))
    });
    group.bench_function(BenchmarkId::new("semaphore_joinset", n), |b| {
        b.iter_custom(|iters| timed(&rt, iters, move || limit_semaphore_joinset(n)))
    });
    group.finish();
}

// ------------------------------------------------------------ cpu_fanout ----

/// About 10 µs of arithmetic that the optimiser cannot remove.
fn crunch(seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    std::hint::black_box(x)
}

async fn cpu_taskgroup(n: usize) -> Duration {
    let t0 = Instant::now();
    let mut group = TaskGroup::<u64, Infallible>::new();
    for i in 0..n as u64 {
        group.spawn(move |_ctx| async move { Ok(crunch(i)) });
    }
    let values = group.wait().await.expect("no task fails");
    let elapsed = t0.elapsed();
    assert_eq!(values.len(), n);
    elapsed
}

async fn cpu_joinset(n: usize) -> Duration {
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..n as u64 {
        set.spawn(async move { crunch(i) });
    }
    let mut done = 0;
    while let Some(joined) = set.join_next().await {
        joined.expect("no task panics");
        done += 1;
    }
    let elapsed = t0.elapsed();
    assert_eq!(done, n);
    elapsed
}

async fn cpu_serial(n: usize) -> Duration {
    let t0 = Instant::now();
    let sum = (0..n as u64).map(crunch).fold(0u64, u64::wrapping_add);
    std::hint::black_box(sum);
    t0.elapsed()
}

fn cpu_fanout(c: &mut Criterion) {
    let rt = runtime();
    let n = 10_000;
    let mut group = sized(c, "cpu_fanout", true);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(BenchmarkId::new("taskgroup", n), |b| {
        b.iter_custom(|iters| timed(&rt, iters, move || cpu_taskgroup(n)))
    });
    group.bench_function(BenchmarkId::new("joinset", n), |b| {
        b.iter_custom(|iters| timed(&rt, iters, move || cpu_joinset(n)))
    });
    group.bench_function(BenchmarkId::new("serial", n), |b| {
        b.iter_custom(|iters| timed(&rt, iters, move || cpu_serial(n)))
    });
    group.finish();
}

// --------------------------------------------------------------- joiners ----

async fn supervise_spawn_wait(n: usize) -> Duration {
    let t0 = Instant::now();
    let mut group = TaskGroup::<(), Infallible>::builder()
        .joiner(Supervise)
        .build();
    for _ in 0..n {
        group.spawn(|_ctx| async { Ok(()) });
    }
    let outcomes = group.wait().await;
    let elapsed = t0.elapsed();
    assert_eq!(outcomes.len(), n);
    assert!(outcomes.iter().all(Outcome::is_ok));
    elapsed
}

async fn race2_first_ok(races: usize) -> Duration {
    let t0 = Instant::now();
    for i in 0..races {
        let mut group = TaskGroup::<usize, Infallible>::builder()
            .joiner(FirstOk)
            .build();
        group.spawn(move |_ctx| async move { Ok(i) });
        group.spawn(move |_ctx| async move { Ok(i) });
        assert_eq!(group.wait().await, Ok(i));
    }
    t0.elapsed()
}

async fn race2_joinset(races: usize) -> Duration {
    let t0 = Instant::now();
    for i in 0..races {
        let mut set = JoinSet::new();
        set.spawn(async move { Ok::<_, Infallible>(i) });
        set.spawn(async move { Ok::<_, Infallible>(i) });
        // Every task succeeds: the first joined is the winner.
        let first = match set.join_next().await.expect("two tasks") {
            Ok(Ok(value)) => value,
            Ok(Err(never)) => match never {},
            Err(e) => panic!("no task panics: {e}"),
        };
        drop(set); // aborts the loser
        assert_eq!(first, i);
    }
    t0.elapsed()
}

fn joiners(c: &mut Criterion) {
    let rt = runtime();
    let n = 100_000;
    let mut group = sized(c, "joiners_spawn_wait", true);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(BenchmarkId::new("taskgroup_failfast", n), |b| {
        b.iter_custom(|iters| timed(&rt, iters, move || spawn_wait_taskgroup(n)))
    });
    group.bench_function(BenchmarkId::new("taskgroup_supervise", n), |b| {
        b.iter_custom(|iters| timed(&rt, iters, move || supervise_spawn_wait(n)))
    });
    group.bench_function(BenchmarkId::new("joinset", n), |b| {
        b.iter_custom(|iters| timed(&rt, iters, move || spawn_wait_joinset(n)))
    });
    group.finish();
    let races = 1_000;
    let mut group = sized(c, "joiners_race2", false);
    group.throughput(Throughput::Elements(races as u64));
    group.bench_function(BenchmarkId::new("taskgroup_first_ok", races), |b| {
        b.iter_custom(|iters| timed(&rt, iters, move || race2_first_ok(races)))
    });
    group.bench_function(BenchmarkId::new("joinset", races), |b| {
        b.iter_custom(|iters| timed(&rt, iters, move || race2_joinset(races)))
    });
    group.finish();
}

// -------------------------------------------------------------- servers ----

async fn spawner_spawn_wait(n: usize) -> Duration {
    let t0 = Instant::now();
    let group = TaskGroup::<(), Infallible>::new();
    let spawner = group.spawner();
    for _ in 0..n {
        let accepted = spawner.spawn(|_ctx| async { Ok(()) });
        assert!(accepted.is_ok());
    }
    let values = group.wait().await.expect("no task fails");
    let elapsed = t0.elapsed();
    assert_eq!(values.len(), n);
    elapsed
}

async fn connections_discard(n: usize) -> Duration {
    let t0 = Instant::now();
    let mut conns = TaskGroup::<(), Infallible>::builder()
        .joiner(Discard)
        .build();
    let spawner = conns.spawner();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    conns.spawn(move |_ctx| async move {
        for _ in 0..n {
            let accepted = spawner.spawn(|_ctx| async {
                tokio::task::yield_now().await;
                Ok(())
            });
            assert!(accepted.is_ok());
        }
        let _ = done_tx.send(());
        Ok(())
    });
    let _ = done_rx.await;
    let tally = conns.wait().await;
    let elapsed = t0.elapsed();
    assert_eq!(tally.ok(), n as u64 + 1);
    elapsed
}

async fn connections_tracker(n: usize) -> Duration {
    let t0 = Instant::now();
    let tracker = tokio_util::task::TaskTracker::new();
    let spawner = tracker.clone();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    tracker.spawn(async move {
        for _ in 0..n {
            spawner.spawn(async {
                tokio::task::yield_now().await;
            });
        }
        let _ = done_tx.send(());
    });
    let _ = done_rx.await;
    tracker.close();
    tracker.wait().await;
    t0.elapsed()
}

/// How many connections `servers_kick` kicks in one sample.
const KICKS: usize = 1_000;

async fn kick_taskgroup(n: usize) -> Duration {
    let mut group = TaskGroup::<(), Infallible>::builder()
        .joiner(Discard)
        .build();
    let ids: Vec<_> = (0..n)
        .map(|_| {
            group.spawn(|ctx| async move {
                ctx.done().await;
                Ok(())
            })
        })
        .collect();
    let t0 = Instant::now();
    for id in ids.iter().rev().take(KICKS) {
        assert!(group.cancel_task(*id));
    }
    let elapsed = t0.elapsed();
    group.cancel();
    group.wait().await;
    elapsed
}

async fn kick_joinset(n: usize) -> Duration {
    let mut set = JoinSet::new();
    let token = CancellationToken::new();
    let mut handles = std::collections::HashMap::with_capacity(n);
    for _ in 0..n {
        let token = token.clone();
        let handle = set.spawn(async move { token.cancelled().await });
        handles.insert(handle.id(), handle);
    }
    let ids: Vec<_> = handles.keys().copied().take(KICKS).collect();
    let t0 = Instant::now();
    for id in ids {
        handles.remove(&id).expect("a live connection").abort();
    }
    let elapsed = t0.elapsed();
    token.cancel();
    while set.join_next().await.is_some() {}
    elapsed
}

fn servers(c: &mut Criterion) {
    let rt = runtime();
    let n = 100_000;
    let mut group = sized(c, "servers_spawn", true);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(BenchmarkId::new("taskgroup_spawner", n), |b| {
        b.iter_custom(|iters| timed(&rt, iters, move || spawner_spawn_wait(n)))
    });
    group.bench_function(BenchmarkId::new("taskgroup_spawn", n), |b| {
        b.iter_custom(|iters| timed(&rt, iters, move || spawn_wait_taskgroup(n)))
    });
    group.bench_function(BenchmarkId::new("vec_joinhandle", n), |b| {
        b.iter_custom(|iters| timed(&rt, iters, move || spawn_wait_vec(n)))
    });
    group.finish();
    let mut group = sized(c, "servers_connection", true);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(BenchmarkId::new("taskgroup_discard", n), |b| {
        b.iter_custom(|iters| timed(&rt, iters, move || connections_discard(n)))
    });
    group.bench_function(BenchmarkId::new("task_tracker", n), |b| {
        b.iter_custom(|iters| timed(&rt, iters, move || connections_tracker(n)))
    });
    group.finish();
    let n = 10_000;
    let mut group = sized(c, "servers_kick", true);
    group.throughput(Throughput::Elements(KICKS as u64));
    group.bench_function(BenchmarkId::new("taskgroup_cancel_task", n), |b| {
        b.iter_custom(|iters| timed(&rt, iters, move || kick_taskgroup(n)))
    });
    group.bench_function(BenchmarkId::new("joinset_abort_by_id", n), |b| {
        b.iter_custom(|iters| timed(&rt, iters, move || kick_joinset(n)))
    });
    group.finish();
}

// ----------------------------------------------------------- supervisor ----

async fn supervisor_start(n: usize) -> Duration {
    let t0 = Instant::now();
    let mut sup = Supervisor::<Infallible>::builder().build();
    for i in 0..n {
        sup.child(format!("c{i}"))
            .restart(Restart::Temporary)
            .spawn(|_ctx, _run| async { Ok(()) });
    }
    let report = sup.wait().await.expect("no restart");
    let elapsed = t0.elapsed();
    assert_eq!(report.children().len(), n);
    elapsed
}

async fn supervisor_start_taskgroup(n: usize) -> Duration {
    let t0 = Instant::now();
    let mut group = TaskGroup::<(), Infallible>::new();
    for _ in 0..n {
        group.spawn(|_ctx| async { Ok(()) });
    }
    group.wait().await.expect("no task fails");
    t0.elapsed()
}

async fn supervisor_restart(n: u32) -> Duration {
    let t0 = Instant::now();
    let mut sup = Supervisor::<String>::builder()
        .intensity(u32::MAX, Duration::from_secs(1))
        .build();
    sup.child("x")
        .restart(Restart::Transient)
        .spawn(move |_ctx, run| async move {
            if run.attempt() < n {
                Err("fails".to_string())
            } else {
                Ok(())
            }
        });
    let report = sup.wait().await.expect("generous intensity");
    let elapsed = t0.elapsed();
    assert_eq!(report.children()[0].starts(), n + 1);
    elapsed
}

async fn supervisor_restart_taskgroup(n: u32) -> Duration {
    let t0 = Instant::now();
    let mut group = TaskGroup::<(), String>::builder().joiner(Supervise).build();
    for attempt in 0..=n {
        group.spawn(move |_ctx| async move {
            if attempt < n {
                Err("fails".to_string())
            } else {
                Ok(())
            }
        });
        let _ = group.next().await;
    }
    group.wait().await;
    t0.elapsed()
}

fn supervisor(c: &mut Criterion) {
    let rt = runtime();
    let n = 1_000;
    let mut group = sized(c, "supervisor_start", false);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(BenchmarkId::new("taskgroup_supervisor", n), |b| {
        b.iter_custom(|iters| timed(&rt, iters, move || supervisor_start(n)))
    });
    group.bench_function(BenchmarkId::new("taskgroup_spawn", n), |b| {
        b.iter_custom(|iters| timed(&rt, iters, move || supervisor_start_taskgroup(n)))
    });
    group.finish();
    let restarts = 100;
    let mut group = sized(c, "supervisor_restart", true);
    group.throughput(Throughput::Elements(u64::from(restarts)));
    group.bench_function(BenchmarkId::new("taskgroup_supervisor", restarts), |b| {
        b.iter_custom(|iters| timed(&rt, iters, move || supervisor_restart(restarts)))
    });
    group.bench_function(BenchmarkId::new("taskgroup_respawn", restarts), |b| {
        b.iter_custom(|iters| timed(&rt, iters, move || supervisor_restart_taskgroup(restarts)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = spawn_wait, first_error, cancel, limit, cpu_fanout, joiners, servers, supervisor
}
criterion_main!(benches);
