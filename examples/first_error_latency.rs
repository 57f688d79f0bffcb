//! The time from a task's error until `wait` returns it, with N siblings
//! parked in a one-hour sleep, for `TaskGroup` and for the hand-written
//! `JoinSet` + `CancellationToken` (Go's errgroup by hand), alternating
//! in one process: the criterion bench `first_error` measures the same
//! thing, and at N = 1000 disagrees with this (see
//! benches/results/LOG.md, "first_error/1000 in a full run").
//!
//! ```sh
//! cargo run --release --example first_error_latency
//! ```

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use taskgroup::{GroupError, TaskGroup};
use tokio_util::sync::CancellationToken;

const HOUR: Duration = Duration::from_secs(3600);

async fn parked<F: Future>(fut: F, tx: tokio::sync::mpsc::UnboundedSender<()>) -> F::Output {
    let mut s = std::pin::pin!(fut);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(s.as_mut().poll(cx))).await;
    tx.send(()).unwrap();
    match first {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => s.await,
    }
}

async fn tg(n: usize) -> Duration {
    let mut group = TaskGroup::<(), usize>::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..n {
        let tx = tx.clone();
        group.spawn(move |ctx| async move {
            let _ = parked(ctx.sleep(HOUR), tx).await;
            Ok(())
        });
    }
    for _ in 0..n {
        rx.recv().await;
    }
    let t0 = Instant::now();
    group.spawn(move |_ctx| async move { Err(n) });
    let r = group.wait().await;
    let e = t0.elapsed();
    assert_eq!(r, Err(GroupError::Failed(n)));
    e
}

async fn tokio_token(n: usize) -> Duration {
    let token = CancellationToken::new();
    let error = Arc::new(OnceLock::new());
    let mut set = tokio::task::JoinSet::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..n {
        let (tx, token) = (tx.clone(), token.clone());
        set.spawn(async move {
            let p = async {
                tokio::select! { biased; _ = token.cancelled() => {}, _ = tokio::time::sleep(HOUR) => {} }
            };
            parked(p, tx).await;
            Ok::<(), usize>(())
        });
    }
    for _ in 0..n {
        rx.recv().await;
    }
    let t0 = Instant::now();
    let (e2, t2) = (error.clone(), token.clone());
    set.spawn(async move {
        if e2.set(n).is_ok() {
            t2.cancel();
        }
        Err(n)
    });
    while let Some(j) = set.join_next().await {
        let _ = j.unwrap();
    }
    let e = t0.elapsed();
    assert_eq!(error.get(), Some(&n));
    e
}

#[tokio::main]
async fn main() {
    tokio::spawn(async {
        for n in [1_000usize, 100_000] {
            let reps = if n > 10_000 { 10 } else { 200 };
            for side in ["taskgroup", "joinset_token", "taskgroup", "joinset_token"] {
                let mut ts = Vec::new();
                for _ in 0..reps {
                    ts.push(if side == "taskgroup" {
                        tg(n).await
                    } else {
                        tokio_token(n).await
                    });
                }
                ts.sort();
                let med = ts[ts.len() / 2];
                println!(
                    "n={n} {side} median={:.0} ns/task",
                    med.as_nanos() as f64 / n as f64
                );
            }
        }
    })
    .await
    .unwrap();
}
