//! `Context` against tokio-util's `CancellationToken`, each bench beside its
//! baseline in the same criterion group. No runtime is needed: nothing here
//! awaits.
//!
//! Function ids: `context*` is the crate, everything else a baseline.
//!
//! - `child_create_drop`: derive a child of a cancellable parent and drop
//!   it. For the crate that is `with_cancel()` and dropping both halves
//!   (dropping the `CancelHandle` cancels the child, as Go's `defer
//!   cancel()` does); for the token, `child_token()` and dropping it.
//! - `to_token`: `context`, derive a child (`with_cancel()`), take its
//!   token (`to_token()`, the first: the token is made then) and drop all
//!   three; `context_no_token`, the same without `to_token`, so the token's
//!   own cost is the difference; `child_token`, the baseline, a token's
//!   `child_token()` made and dropped.
//! - `is_cancelled/uncontended`: one thread asks a live context.
//!   `context_with_token`: a context that has handed out a token (and keeps
//!   it alive), which must stay the same single atomic load.
//! - `is_cancelled/contended`: the same while a second thread asks the same
//!   context (the same token) in a loop. `atomic_load` is the floor: a bare
//!   `AtomicU8` read, with the second thread reading it too. It shows what
//!   the machine does to any loop when both cores are busy (on a loaded
//!   2-core machine the measured thread then gets preempted more), apart
//!   from any contention on the context itself.
//! - `check/K`: `check()` on a live context, inside an entered
//!   current_thread runtime with timers (as a task calls it). K:
//!   `cancel`, a context with no deadline; `deadline`, one with a deadline
//!   an hour away. `instant_now` is the floor of what comparing against a
//!   deadline can cost: `tokio::time::Instant::now()` alone (the benches
//!   build tokio with `test-util`, whose clock asks the runtime whether
//!   time is paused; without it this is `std::time::Instant::now()`,
//!   measured as `std_instant_now`).
//! - `value/D`: look up a value set D contexts up the chain (D = 1: on the
//!   context itself). There is no tokio counterpart, so no baseline.
//! - `deep_chain_cancel/N`: cancel the root of a chain N contexts deep
//!   (every `CancelHandle` kept alive); building and dropping the chain are
//!   untimed.
//! - `done_pending/K`: make a `done()` future, poll it once (pending) and
//!   drop it, inside a current_thread runtime with timers (entered, never
//!   driven); the token's `cancelled()` beside it. K: `cancel`, a context
//!   with no deadline; `deadline`, one whose deadline is served on this
//!   runtime; `deadline_elsewhere`, one whose deadline was made on another
//!   runtime (the waiter arms a timer of its own).
//!
//! `cargo bench --bench context` runs them.

use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::{self, Waker};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use taskgroup::{CancelHandle, Context};
use tokio_util::sync::CancellationToken;

fn child_create_drop(c: &mut Criterion) {
    let mut group = c.benchmark_group("child_create_drop");
    let (parent, _cancel) = Context::background().with_cancel();
    group.bench_function("context", |b| b.iter(|| black_box(parent.with_cancel())));
    let token = CancellationToken::new();
    group.bench_function("child_token", |b| b.iter(|| black_box(token.child_token())));
    group.finish();
}

fn to_token(c: &mut Criterion) {
    let mut group = c.benchmark_group("to_token");
    let (parent, _cancel) = Context::background().with_cancel();
    group.bench_function("context", |b| {
        b.iter(|| {
            let (child, _cancel) = black_box(&parent).with_cancel();
            black_box(child.to_token())
        })
    });
    group.bench_function("context_no_token", |b| {
        b.iter(|| black_box(black_box(&parent).with_cancel()))
    });
    let token = CancellationToken::new();
    group.bench_function("child_token", |b| {
        b.iter(|| black_box(black_box(&token).child_token()))
    });
    group.finish();
}

/// A second thread calling `check` in a loop until stopped.
struct Hammer {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<u64>,
    since: Instant,
}

impl Hammer {
    fn start(check: impl Fn() -> bool + Send + 'static) -> Hammer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut calls = 0u64;
            while !flag.load(Ordering::Relaxed) {
                black_box(check());
                calls += 1;
            }
            calls
        });
        Hammer {
            stop,
            thread,
            since: Instant::now(),
        }
    }

    /// Stops the thread and says how hard it hammered, so a run on a
    /// loaded machine shows whether the two threads really overlapped.
    fn stop(self, what: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let calls = self.thread.join().expect("the hammer does not panic");
        let rate = calls as f64 / self.since.elapsed().as_secs_f64();
        eprintln!("{what}: the second thread made {:.0} M calls/s", rate / 1e6);
    }
}

fn is_cancelled(c: &mut Criterion) {
    let mut group = c.benchmark_group("is_cancelled");
    let (ctx, _cancel) = Context::background().with_cancel();
    let token = CancellationToken::new();
    // The floor: what a flag costs to read, under the same conditions.
    let flag = Arc::new(AtomicU8::new(0));

    group.bench_function(BenchmarkId::new("context", "uncontended"), |b| {
        b.iter(|| black_box(&ctx).is_cancelled())
    });
    let (with_token, _with_token_cancel) = Context::background().with_cancel();
    let _handed_out = with_token.to_token();
    group.bench_function(BenchmarkId::new("context_with_token", "uncontended"), |b| {
        b.iter(|| black_box(&with_token).is_cancelled())
    });
    group.bench_function(BenchmarkId::new("token", "uncontended"), |b| {
        b.iter(|| black_box(&token).is_cancelled())
    });
    group.bench_function(BenchmarkId::new("atomic_load", "uncontended"), |b| {
        b.iter(|| black_box(&*flag).load(Ordering::Acquire))
    });

    let other = ctx.clone();
    let hammer = Hammer::start(move || other.is_cancelled());
    group.bench_function(BenchmarkId::new("context", "contended"), |b| {
        b.iter(|| black_box(&ctx).is_cancelled())
    });
    hammer.stop("is_cancelled/context/contended");

    let other = token.clone();
    let hammer = Hammer::start(move || other.is_cancelled());
    group.bench_function(BenchmarkId::new("token", "contended"), |b| {
        b.iter(|| black_box(&token).is_cancelled())
    });
    hammer.stop("is_cancelled/token/contended");

    // The second thread busy on a context of its own: what two busy cores
    // cost when nothing is shared.
    let (other, _other_cancel) = Context::background().with_cancel();
    let hammer = Hammer::start(move || other.is_cancelled());
    group.bench_function(BenchmarkId::new("context_unshared", "contended"), |b| {
        b.iter(|| black_box(&ctx).is_cancelled())
    });
    hammer.stop("is_cancelled/context_unshared/contended");

    let other = flag.clone();
    let hammer = Hammer::start(move || other.load(Ordering::Acquire) != 0);
    group.bench_function(BenchmarkId::new("atomic_load", "contended"), |b| {
        b.iter(|| black_box(&*flag).load(Ordering::Acquire))
    });
    hammer.stop("is_cancelled/atomic_load/contended");
    group.finish();
}

fn check(c: &mut Criterion) {
    let mut group = c.benchmark_group("check");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let _enter = runtime.enter();
    let (plain, _plain_cancel) = Context::background().with_cancel();
    let (near, _near_cancel) = Context::background().with_timeout(Duration::from_secs(3600));
    for (name, ctx) in [("cancel", &plain), ("deadline", &near)] {
        group.bench_function(BenchmarkId::new("context", name), |b| {
            b.iter(|| black_box(black_box(ctx).check()).is_ok())
        });
    }
    group.bench_function("instant_now", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    // What the clock read is in a build without tokio's `test-util`.
    group.bench_function("std_instant_now", |b| b.iter(|| black_box(Instant::now())));
    group.finish();
}

#[derive(Debug, PartialEq)]
struct Needle(u64);
#[allow(dead_code)] // only its type matters
struct Filler(u64);

fn value(c: &mut Criterion) {
    let mut group = c.benchmark_group("value");
    for depth in [1u64, 10, 100] {
        let mut ctx = Context::background().with_value(Needle(depth));
        for i in 1..depth {
            ctx = ctx.with_value(Filler(i));
        }
        assert_eq!(ctx.value::<Needle>(), Some(&Needle(depth)));
        group.bench_function(BenchmarkId::new("context", depth), |b| {
            b.iter(|| black_box(black_box(&ctx).value::<Needle>()).is_some())
        });
    }
    group.finish();
}

fn deep_chain_cancel(c: &mut Criterion) {
    let n: usize = 100_000;
    let mut group = c.benchmark_group("deep_chain_cancel");
    group
        .throughput(Throughput::Elements(n as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));

    group.bench_function(BenchmarkId::new("context", n), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (root, cancel) = Context::background().with_cancel();
                let mut handles: Vec<CancelHandle> = Vec::with_capacity(n);
                let mut leaf = root.clone();
                for _ in 0..n {
                    let (child, handle) = leaf.with_cancel();
                    handles.push(handle);
                    leaf = child;
                }
                let t0 = Instant::now();
                cancel.cancel();
                total += t0.elapsed();
                assert!(leaf.is_cancelled());
                drop((handles, leaf, root));
            }
            total
        })
    });
    group.bench_function(BenchmarkId::new("child_token", n), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let root = CancellationToken::new();
                let mut chain: Vec<CancellationToken> = Vec::with_capacity(n);
                let mut leaf = root.clone();
                for _ in 0..n {
                    let child = leaf.child_token();
                    chain.push(std::mem::replace(&mut leaf, child));
                }
                let t0 = Instant::now();
                root.cancel();
                total += t0.elapsed();
                assert!(leaf.is_cancelled());
                drop((chain, leaf, root));
            }
            total
        })
    });
    group.finish();
}

/// Makes `fut`, polls it once and drops it.
fn poll_once<F: std::future::Future>(fut: F) -> bool {
    let mut cx = task::Context::from_waker(Waker::noop());
    pin!(fut).poll(&mut cx).is_pending()
}

fn done_pending(c: &mut Criterion) {
    let mut group = c.benchmark_group("done_pending");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let elsewhere = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("another runtime");
    let hour = Duration::from_secs(3600);
    let (far, _far_cancel) = {
        let _enter = elsewhere.enter();
        Context::background().with_timeout(hour)
    };
    let _enter = runtime.enter();
    let (plain, _plain_cancel) = Context::background().with_cancel();
    let (near, _near_cancel) = Context::background().with_timeout(hour);
    for (name, ctx) in [
        ("cancel", &plain),
        ("deadline", &near),
        ("deadline_elsewhere", &far),
    ] {
        group.bench_function(BenchmarkId::new("context", name), |b| {
            b.iter(|| assert!(poll_once(ctx.done())))
        });
    }
    let token = CancellationToken::new();
    group.bench_function(BenchmarkId::new("token", "cancel"), |b| {
        b.iter(|| assert!(poll_once(token.cancelled())))
    });
    group.finish();
}

fn quick() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = quick();
    targets = child_create_drop, to_token, is_cancelled, check, value, deep_chain_cancel, done_pending
}
criterion_main!(benches);
