//! Scoped groups (`taskgroup::scope`) against the plain-futures way of
//! polling many futures on one task, and against the parallel
//! alternatives, each bench beside its baselines in the same criterion
//! group.
//!
//! As in `benches/group.rs`, every measurement runs inside one tokio task
//! on a multi-thread runtime with the default worker count, and
//! `iter_custom` times one fan-out from its first spawn to its last
//! result. Throughput is N, so criterion prints tasks per second and
//! `scripts/ratios.py` gives ns per task.
//!
//! Function ids: `scope*` is the crate's scoped group, `taskgroup` the
//! crate's parallel group, everything else a baseline.
//!
//! - `scope_fanout/N`: N no-op tasks, their `()` results collected:
//!   `scope` (the body spawns them all, the scope returns `Ok(values)`),
//!   `scope_local`, `futures_unordered` (a `FuturesUnordered` on one task,
//!   drained into a `Vec`: the floor, no parallelism, no cancellation, no
//!   per-task outcome), `taskgroup` (spawn + wait) and `joinset`.
//! - `scope_borrow/N`: N tasks that each read their element of a borrowed
//!   slice and return it (`scope` against `FuturesUnordered` over the same
//!   slice; a `'static` group would have to clone or `Arc` the data).
//! - `scope_limit/N`: N no-op tasks through a limit of 64 with
//!   backpressure: `scope` with `ready()` before each spawn, against
//!   `futures::stream::iter(..).buffer_unordered(64)`.
//!
//! `cargo bench --bench scope` runs them.

use std::convert::Infallible;
use std::future::Future;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main, measurement::WallTime,
};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use taskgroup::{Context, Scope, TaskGroup};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

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

// --------------------------------------------------------- scope_fanout ----

async fn fanout_scope(n: usize) -> Duration {
    let ctx = Context::background();
    let t0 = Instant::now();
    let values = taskgroup::scope(&ctx, async |s: Scope<'_, (), Infallible>| {
        for _ in 0..n {
            s.spawn(|_ctx| async { Ok(()) });
        }
    })
    .await
    .expect("no task fails");
    let elapsed = t0.elapsed();
    assert_eq!(values.len(), n);
    elapsed
}

async fn fanout_scope_local(n: usize) -> Duration {
    let ctx = Context::background();
    let t0 = Instant::now();
    let values = taskgroup::scope_local(&ctx, async |s| {
        for _ in 0..n {
            s.spawn(|_ctx| async { Ok::<(), Infallible>(()) });
        }
    })
    .await
    .expect("no task fails");
    let elapsed = t0.elapsed();
    assert_eq!(values.len(), n);
    elapsed
}

async fn fanout_futures_unordered(n: usize) -> Duration {
    let t0 = Instant::now();
    let mut futures: FuturesUnordered<_> = (0..n).map(|_| async {}).collect();
    let mut values = Vec::new();
    while let Some(value) = futures.next().await {
        values.push(value);
    }
    let elapsed = t0.elapsed();
    assert_eq!(values.len(), n);
    elapsed
}

async fn fanout_taskgroup(n: usize) -> Duration {
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

async fn fanout_joinset(n: usize) -> Duration {
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..n {
        set.spawn(async {});
    }
    let mut values = Vec::new();
    while let Some(joined) = set.join_next().await {
        joined.expect("no task panics");
        values.push(());
    }
    let elapsed = t0.elapsed();
    assert_eq!(values.len(), n);
    elapsed
}

fn scope_fanout(c: &mut Criterion) {
    let rt = runtime();
    for n in [1_000, 100_000] {
        let mut group = sized(c, "scope_fanout", n > 10_000);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("scope", n), |b| {
            b.iter_custom(|iters| timed(&rt, iters, move || fanout_scope(n)))
        });
        group.bench_function(BenchmarkId::new("scope_local", n), |b| {
            b.iter_custom(|iters| {
                // `scope_local`'s future is not `Send`: time it in a
                // `spawn_blocking` thread's `block_on`, on the same runtime.
                let handle = rt.handle().clone();
                rt.block_on(async move {
                    tokio::task::spawn_blocking(move || {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += handle.block_on(fanout_scope_local(n));
                        }
                        total
                    })
                    .await
                    .expect("the bench thread does not panic")
                })
            })
        });
        group.bench_function(BenchmarkId::new("futures_unordered", n), |b| {
            b.iter_custom(|iters| timed(&rt, iters, move || fanout_futures_unordered(n)))
        });
        group.bench_function(BenchmarkId::new("taskgroup", n), |b| {
            b.iter_custom(|iters| timed(&rt, iters, move || fanout_taskgroup(n)))
        });
        group.bench_function(BenchmarkId::new("joinset", n), |b| {
            b.iter_custom(|iters| timed(&rt, iters, move || fanout_joinset(n)))
        });
        group.finish();
    }
}

// --------------------------------------------------------- scope_borrow ----

async fn borrow_scope(data: &[u64]) -> Duration {
    let ctx = Context::background();
    let t0 = Instant::now();
    let values = taskgroup::scope(&ctx, async |s: Scope<'_, u64, Infallible>| {
        for x in data {
            s.spawn(move |_ctx| async move { Ok(*x) });
        }
    })
    .await
    .expect("no task fails");
    let elapsed = t0.elapsed();
    assert_eq!(values.len(), data.len());
    elapsed
}

async fn borrow_futures_unordered(data: &[u64]) -> Duration {
    let t0 = Instant::now();
    let mut futures: FuturesUnordered<_> = data.iter().map(|x| async move { *x }).collect();
    let mut values = Vec::new();
    while let Some(value) = futures.next().await {
        values.push(value);
    }
    let elapsed = t0.elapsed();
    assert_eq!(values.len(), data.len());
    elapsed
}

fn scope_borrow(c: &mut Criterion) {
    let rt = runtime();
    for n in [1_000, 100_000] {
        let mut group = sized(c, "scope_borrow", n > 10_000);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("scope", n), |b| {
            b.iter_custom(|iters| {
                timed(&rt, iters, move || async move {
                    let data: Vec<u64> = (0..n as u64).collect();
                    borrow_scope(&data).await
                })
            })
        });
        group.bench_function(BenchmarkId::new("futures_unordered", n), |b| {
            b.iter_custom(|iters| {
                timed(&rt, iters, move || async move {
                    let data: Vec<u64> = (0..n as u64).collect();
                    borrow_futures_unordered(&data).await
                })
            })
        });
        group.finish();
    }
}

// ---------------------------------------------------------- scope_limit ----

async fn limit_scope(n: usize) -> Duration {
    let t0 = Instant::now();
    let values = TaskGroup::<(), Infallible>::builder()
        .limit(LIMIT)
        .scope(async |s| {
            for _ in 0..n {
                s.ready().await;
                s.spawn(|_ctx| async { Ok(()) });
            }
        })
        .await
        .expect("no task fails");
    let elapsed = t0.elapsed();
    assert_eq!(values.len(), n);
    elapsed
}

async fn limit_buffer_unordered(n: usize) -> Duration {
    let t0 = Instant::now();
    let values: Vec<()> = futures::stream::iter((0..n).map(|_| async {}))
        .buffer_unordered(LIMIT)
        .collect()
        .await;
    let elapsed = t0.elapsed();
    assert_eq!(values.len(), n);
    elapsed
}

fn scope_limit(c: &mut Criterion) {
    let rt = runtime();
    for n in [1_000, 100_000] {
        let mut group = sized(c, "scope_limit", n > 10_000);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("scope", n), |b| {
            b.iter_custom(|iters| timed(&rt, iters, move || limit_scope(n)))
        });
        group.bench_function(BenchmarkId::new("buffer_unordered", n), |b| {
            b.iter_custom(|iters| timed(&rt, iters, move || limit_buffer_unordered(n)))
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = scope_fanout, scope_borrow, scope_limit
}
criterion_main!(benches);
