//! A service's workers under a [`Supervisor`]: a cache refresher that must
//! always run, a queue consumer that fails now and then (restarted with
//! backoff and jitter), and a batch job whose normal end is the end of the
//! service (significant). Ctrl-c, or the batch finishing, stops them in
//! reverse order; the report says how each one ended.
//!
//! ```text
//! cargo run --release --example supervised            # the service
//! cargo run --release --example supervised -- --storm # what a restart storm costs
//! ```
//!
//! `--storm` measures a child that fails at once, forever: under
//! `Backoff::none()` with a generous intensity (restarts a second, CPU),
//! and under a 10 ms backoff (CPU between restarts).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use taskgroup::{Backoff, Context, Restart, Strategy, Supervisor};

/// The consumer fails about one time in `FAIL_ONE_IN` batches.
const FAIL_ONE_IN: u64 = 7;

async fn refresh_cache(ctx: Context, refreshed: Arc<AtomicU64>) -> Result<(), String> {
    while ctx.sleep(Duration::from_millis(100)).await.is_ok() {
        refreshed.fetch_add(1, Relaxed);
    }
    Ok(()) // stopped
}

async fn consume(ctx: Context, consumed: Arc<AtomicU64>, attempt: u32) -> Result<(), String> {
    loop {
        ctx.sleep(Duration::from_millis(20))
            .await
            .map_err(|e| e.to_string())?;
        let n = consumed.fetch_add(1, Relaxed) + 1;
        // A poison message now and then: the consumer gives up, and the
        // supervisor brings it back.
        if n % FAIL_ONE_IN == u64::from(attempt % 3) {
            return Err(format!("poison message at offset {n}"));
        }
    }
}

async fn batch(ctx: Context, items: u64) -> Result<(), String> {
    for item in 0..items {
        ctx.sleep(Duration::from_millis(25))
            .await
            .map_err(|e| format!("stopped at item {item}: {e}"))?;
    }
    Ok(())
}

async fn service(items: u64) {
    // Ctrl-c cancels the supervisor's parent: it stops its children in
    // reverse order, each within its grace.
    let (root, stop) = Context::background().with_cancel();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            println!("ctrl-c: stopping");
            stop.cancel();
        }
    });
    let mut sup = Supervisor::<String>::builder()
        .name("service")
        .context(&root)
        .strategy(Strategy::OneForOne)
        .intensity(20, Duration::from_secs(5))
        .build();
    let refreshed = Arc::new(AtomicU64::new(0));
    let consumed = Arc::new(AtomicU64::new(0));
    let cache = refreshed.clone();
    sup.child("cache")
        .shutdown(Duration::from_millis(500))
        .spawn(move |ctx, _run| refresh_cache(ctx, cache.clone()));
    let queue = consumed.clone();
    sup.child("consumer")
        .backoff(
            Backoff::exponential(Duration::from_millis(50), Duration::from_secs(1))
                .jitter(0.2)
                .reset_after(Duration::from_secs(2)),
        )
        .spawn(move |ctx, run| {
            if run.attempt() > 0 {
                println!("consumer: restart {}", run.attempt());
            }
            consume(ctx, queue.clone(), run.attempt())
        });
    sup.child("batch")
        .restart(Restart::Transient)
        .significant()
        .spawn(move |ctx, _run| batch(ctx, items));

    let started = Instant::now();
    let result = sup.wait().await;
    match result {
        Ok(report) => {
            println!("service ended after {:.1?}", started.elapsed());
            for child in report.children() {
                let last = match child.last_exit() {
                    Some(outcome) if outcome.is_ok() => "ok".to_string(),
                    Some(outcome) if outcome.is_cancelled() => "cancelled".to_string(),
                    Some(outcome) if outcome.is_panicked() => "panicked".to_string(),
                    Some(_) => "error".to_string(),
                    None => "never started".to_string(),
                };
                println!(
                    "  {:<9} {} starts, last end: {last}",
                    child.name(),
                    child.starts()
                );
            }
        }
        Err(error) => println!("service failed: {error}"),
    }
    println!(
        "cache refreshed {} times, {} messages consumed",
        refreshed.load(Relaxed),
        consumed.load(Relaxed)
    );
}

/// CPU seconds this process has used (Linux: /proc/self/stat), if known.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

async fn storm(backoff: Backoff, label: &str) {
    let mut sup = Supervisor::<String>::builder()
        .intensity(u32::MAX, Duration::from_secs(1))
        .build();
    sup.child("crasher")
        .backoff(backoff)
        .spawn(|_ctx, _run| async { Err("fails at once".to_string()) });
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = sup.shutdown().await.expect("intensity u32::MAX");
    let (cpu, wall) = (cpu_seconds(), t0.elapsed().as_secs_f64());
    let starts = report.children()[0].starts();
    let cpu = match (cpu0, cpu) {
        (Some(a), Some(b)) => format!("{:.0}% of one core", (b - a) / wall * 100.0),
        _ => "CPU unknown".to_string(),
    };
    println!(
        "storm, {label}: {starts} starts in {wall:.2} s = {:.0} restarts/s, {cpu}",
        f64::from(starts) / wall
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--storm") {
        storm(Backoff::none(), "Backoff::none()").await;
        storm(
            Backoff::exponential(Duration::from_millis(10), Duration::from_millis(10)),
            "10 ms backoff",
        )
        .await;
        return;
    }
    let items = args
        .iter()
        .position(|a| a == "--items")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    service(items).await;
}
