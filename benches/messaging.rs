//! Task-to-task messaging: two tasks of one group exchanging messages over
//! tokio channels, beside two plain tokio tasks doing the same, in the same
//! criterion group.
//!
//! - `ping_pong/100000`: a ping task sends a number over an `mpsc`
//!   channel (capacity 1), a pong task sends it back over another, 100,000
//!   round trips. Every message wakes the other task while the sender is
//!   being polled: for a group's tasks, a wake from inside one of the
//!   group's shards, which keeps the woken task and polls it next
//!   (invariant 10 in `src/group/runner/mod.rs`; before it, the LIFO-slot
//!   workaround of invariant 7 made every message wake a shard on another
//!   worker). `taskgroup` is the pair in one `TaskGroup`, `tokio_spawn`
//!   two `tokio::spawn` tasks.
//!
//! Each round runs inside one tokio task on a multi-thread runtime with the
//! default worker count. `cargo bench --bench messaging` runs it; ns per
//! round trip = criterion's median / 100,000.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use taskgroup::TaskGroup;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

const ROUND_TRIPS: u64 = 100_000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a multi-thread runtime")
}

/// The two ends: `ping` sends and waits for the echo, `pong` echoes.
async fn ping(tx: mpsc::Sender<u64>, mut rx: mpsc::Receiver<u64>) -> u64 {
    let mut sum = 0;
    for i in 0..ROUND_TRIPS {
        tx.send(i).await.expect("pong is alive");
        sum += rx.recv().await.expect("pong answers");
    }
    sum
}

async fn pong(tx: mpsc::Sender<u64>, mut rx: mpsc::Receiver<u64>) -> u64 {
    while let Some(i) = rx.recv().await {
        if tx.send(i).await.is_err() {
            break;
        }
    }
    0
}

/// One task's ends: where it sends, where it receives.
type Ends = (mpsc::Sender<u64>, mpsc::Receiver<u64>);

/// Ping's ends and pong's.
fn channels() -> (Ends, Ends) {
    let (to_pong, from_ping) = mpsc::channel(1);
    let (to_ping, from_pong) = mpsc::channel(1);
    ((to_pong, from_pong), (to_ping, from_ping))
}

const EXPECTED: u64 = ROUND_TRIPS * (ROUND_TRIPS - 1) / 2;

async fn group_round() -> Duration {
    let start = Instant::now();
    let ((to_pong, from_pong), (to_ping, from_ping)) = channels();
    let mut group = TaskGroup::<u64, Infallible>::new();
    group.spawn(move |_ctx| async move { Ok(ping(to_pong, from_pong).await) });
    group.spawn(move |_ctx| async move { Ok(pong(to_ping, from_ping).await) });
    let sums = group.wait().await.expect("no task fails");
    assert_eq!(sums[0], EXPECTED);
    start.elapsed()
}

async fn tokio_round() -> Duration {
    let start = Instant::now();
    let ((to_pong, from_pong), (to_ping, from_ping)) = channels();
    let a = tokio::spawn(ping(to_pong, from_pong));
    let b = tokio::spawn(pong(to_ping, from_ping));
    assert_eq!(a.await.expect("ping"), EXPECTED);
    b.await.expect("pong");
    start.elapsed()
}

/// `iters` rounds inside one tokio task on `rt`: the sum of their times.
fn time_rounds<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, round: F) -> Duration
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Duration> + Send,
{
    rt.block_on(async move {
        tokio::spawn(async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += round().await;
            }
            total
        })
        .await
        .expect("the bench task")
    })
}

fn ping_pong(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("ping_pong");
    group
        .throughput(Throughput::Elements(ROUND_TRIPS))
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.bench_function(BenchmarkId::new("taskgroup", ROUND_TRIPS), |b| {
        b.iter_custom(|iters| time_rounds(&rt, iters, group_round));
    });
    group.bench_function(BenchmarkId::new("tokio_spawn", ROUND_TRIPS), |b| {
        b.iter_custom(|iters| time_rounds(&rt, iters, tokio_round));
    });
    group.finish();
}

criterion_group!(benches, ping_pong);
criterion_main!(benches);
