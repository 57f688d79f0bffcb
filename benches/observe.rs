//! What observability costs: a dump of many parked tasks, and (with the
//! `tracing` feature) a fan-out with its spans, each beside its plain-tokio
//! baseline in the same criterion group.
//!
//! - `dump/100x1000`: 100 live groups of 1,000 tasks each, every task parked
//!   on its context. `taskgroup_dump` is one `taskgroup::dump()` (every
//!   group and task copied out, nested); `taskgroup_dump_text` that and its
//!   `Display` into a `String`; `tokio_is_finished` walks 100,000
//!   `JoinHandle`s asking `is_finished()`, all that tokio's stable API says
//!   about its tasks one by one (no name, no state, no location), the floor
//!   for looking at each task at all.
//! - `traced_spawn_wait/1000` (only with `--features tracing`): spawn and
//!   wait 1,000 no-op tasks on a current-thread runtime, `taskgroup` with no
//!   subscriber (the spans are disabled), `taskgroup_registry` with
//!   tracing-subscriber's registry recording every group and task span, and
//!   `joinset` the tokio baseline. The feature-off figures are
//!   `benches/group.rs`'s `spawn_wait`; BENCHMARKS.md compares them in
//!   instructions, where one build with and one without the feature can be
//!   counted exactly.
//!
//! `cargo bench --bench observe` and
//! `cargo bench --bench observe --features tracing` run them.

use std::convert::Infallible;
use std::time::Duration;
#[cfg(feature = "tracing")]
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use taskgroup::TaskGroup;
use tokio::runtime::Runtime;

const GROUPS: usize = 100;
const TASKS: usize = 1_000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a multi-thread runtime")
}

fn dump(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("dump");
    group.throughput(Throughput::Elements((GROUPS * TASKS) as u64));
    group.sample_size(20);
    let id = format!("{GROUPS}x{TASKS}");

    let groups: Vec<TaskGroup<(), Infallible>> = rt.block_on(async {
        let groups: Vec<_> = (0..GROUPS)
            .map(|g| {
                let mut group = TaskGroup::builder().name(format!("group {g}")).build();
                for _ in 0..TASKS {
                    group.spawn(|ctx| async move {
                        ctx.done().await;
                        Ok(())
                    });
                }
                group
            })
            .collect();
        // Until every task has parked once: all of them listed.
        loop {
            let listed: usize = taskgroup::dump()
                .groups()
                .iter()
                .map(|g| g.tasks().len())
                .sum();
            if listed >= GROUPS * TASKS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        groups
    });
    group.bench_function(BenchmarkId::new("taskgroup_dump", &id), |b| {
        b.iter(taskgroup::dump);
    });
    group.bench_function(BenchmarkId::new("taskgroup_dump_text", &id), |b| {
        b.iter(|| taskgroup::dump().to_string());
    });
    rt.block_on(async { drop(groups) });

    let handles: Vec<tokio::task::JoinHandle<()>> = rt.block_on(async {
        let (_tx, rx) = tokio::sync::watch::channel(());
        (0..GROUPS * TASKS)
            .map(|_| {
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    let _ = rx.changed().await;
                })
            })
            .collect()
    });
    group.bench_function(BenchmarkId::new("tokio_is_finished", &id), |b| {
        b.iter(|| handles.iter().filter(|h| h.is_finished()).count());
    });
    for handle in &handles {
        handle.abort();
    }
    group.finish();
}

#[cfg(feature = "tracing")]
fn traced_spawn_wait(c: &mut Criterion) {
    use tracing_subscriber::util::SubscriberInitExt;

    const N: usize = 1_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    let mut group = c.benchmark_group("traced_spawn_wait");
    group.throughput(Throughput::Elements(N as u64));
    let fan_out = || async {
        let start = Instant::now();
        let mut group = TaskGroup::<(), Infallible>::new();
        for _ in 0..N {
            group.spawn(|_ctx| async { Ok(()) });
        }
        assert_eq!(group.wait().await.unwrap().len(), N);
        start.elapsed()
    };
    group.bench_function(BenchmarkId::new("taskgroup", N), |b| {
        b.iter_custom(|iters| rt.block_on(async { sum(iters, fan_out).await }));
    });
    group.bench_function(BenchmarkId::new("taskgroup_registry", N), |b| {
        let _subscriber = tracing_subscriber::registry().set_default();
        b.iter_custom(|iters| rt.block_on(async { sum(iters, fan_out).await }));
    });
    group.bench_function(BenchmarkId::new("joinset", N), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                sum(iters, || async {
                    let start = Instant::now();
                    let mut set = tokio::task::JoinSet::new();
                    for _ in 0..N {
                        set.spawn(async {});
                    }
                    let mut n = 0;
                    while set.join_next().await.is_some() {
                        n += 1;
                    }
                    assert_eq!(n, N);
                    start.elapsed()
                })
                .await
            })
        });
    });
    group.finish();
}

#[cfg(feature = "tracing")]
async fn sum<F, Fut>(iters: u64, one: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Duration>,
{
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        total += one().await;
    }
    total
}

#[cfg(not(feature = "tracing"))]
fn traced_spawn_wait(_: &mut Criterion) {}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = dump, traced_spawn_wait
}
criterion_main!(benches);
