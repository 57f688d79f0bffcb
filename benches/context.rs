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
//! - `two_trees/K`: build a tree (a root from `with_cancel()`, 1000
//!   children from `with_cancel()` held with their handles), cancel the
//!   root, drop it all; the whole thing timed, over and over. K:
//!   `1_thread`, one thread doing it; `2_threads`, two OS threads each doing
//!   it on a tree of its own at once, timed from a common start to the later
//!   one's end. `child_token` is the same with `child_token()`s of a
//!   `CancellationToken`. Throughput is per node of one thread's tree, so a
//!   2-thread figure equal to the 1-thread one is perfect scaling and the
//!   ratio of the two is what the threads cost each other (on a 2-core
//!   machine, that includes sharing it with anything else running). Each
//!   also prints the CPU time its threads ran per node (Linux only), which
//!   a busy machine does not inflate: waiting for a core is not running.
//!
//! `cargo bench --bench context` runs them.

use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Barrier};
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

/// Nodes under the root in `two_trees`.
const TREE_CHILDREN: usize = 1000;

/// Builds, cancels and drops one tree: the root and `TREE_CHILDREN`
/// children.
fn context_tree() {
    let (root, cancel) = Context::background().with_cancel();
    let children: Vec<(Context, CancelHandle)> =
        (0..TREE_CHILDREN).map(|_| root.with_cancel()).collect();
    cancel.cancel();
    assert!(children[TREE_CHILDREN - 1].0.is_cancelled());
    drop(black_box(children));
}

fn token_tree() {
    let root = CancellationToken::new();
    let children: Vec<CancellationToken> = (0..TREE_CHILDREN).map(|_| root.child_token()).collect();
    root.cancel();
    assert!(children[TREE_CHILDREN - 1].is_cancelled());
    drop(black_box(children));
}

/// The CPU time this thread has run, in ns (Linux's schedstat), or `None`
/// where there is none to read.
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// What the threads of one `two_trees` bench spent: trees made and CPU
/// time run, summed over the threads.
struct CpuSpent {
    trees: u64,
    cpu_ns: Option<u64>,
    /// Each thread's own wall-clock time, summed.
    wall: Duration,
}

impl CpuSpent {
    /// CPU time per node, per thread. The wall-clock figure on a shared
    /// 2-core machine also counts the time a thread waited for a core;
    /// this one only counts what it ran, so two threads that cost each
    /// other show here even when something else holds a core.
    fn report(&self, what: &str) {
        // Nothing ran when a filter left the bench out.
        if let Some(cpu_ns) = self.cpu_ns.filter(|_| self.trees > 0) {
            let nodes = self.trees * (TREE_CHILDREN as u64 + 1);
            // Under 100%: the threads waited for a core, so they did not
            // all run at once the whole time.
            eprintln!(
                "{what}: {:.1} ns of CPU per node; the threads ran {:.0}% of their time",
                cpu_ns as f64 / nodes as f64,
                cpu_ns as f64 / self.wall.as_nanos() as f64 * 100.0
            );
        }
    }
}

/// `iters` trees on each of `threads` threads, from a common start (a
/// barrier, so thread start-up is untimed) to the last thread's end.
fn trees_on_threads(threads: usize, iters: u64, tree: fn(), spent: &mut CpuSpent) -> Duration {
    let run = move || {
        let cpu0 = thread_cpu_ns();
        let t0 = Instant::now();
        for _ in 0..iters {
            tree();
        }
        let t1 = Instant::now();
        let cpu = cpu0.zip(thread_cpu_ns()).map(|(a, b)| b - a);
        (t0, t1, cpu)
    };
    // Even one runs on a thread of its own, not criterion's: the main
    // thread's allocator (glibc's main arena, which gives memory back to
    // the system as the heap shrinks) is not what spawned threads get.
    let start = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                run()
            })
        })
        .collect();
    let spans: Vec<(Instant, Instant, Option<u64>)> = workers
        .into_iter()
        .map(|worker| worker.join().expect("a tree does not panic"))
        .collect();
    spent.trees += iters * threads as u64;
    for span in &spans {
        spent.wall += span.1 - span.0;
        spent.cpu_ns = spent.cpu_ns.zip(span.2).map(|(a, b)| a + b);
    }
    let first = spans.iter().map(|span| span.0).min().expect("threads");
    let last = spans.iter().map(|span| span.1).max().expect("threads");
    last - first
}

fn two_trees(c: &mut Criterion) {
    let mut group = c.benchmark_group("two_trees");
    group.throughput(Throughput::Elements(TREE_CHILDREN as u64 + 1));
    for (name, threads) in [("1_thread", 1), ("2_threads", 2)] {
        let trees: [(&str, fn()); 2] = [("context", context_tree), ("child_token", token_tree)];
        for (id, tree) in trees {
            let mut spent = CpuSpent {
                trees: 0,
                cpu_ns: Some(0),
                wall: Duration::ZERO,
            };
            group.bench_function(BenchmarkId::new(id, name), |b| {
                b.iter_custom(|iters| trees_on_threads(threads, iters, tree, &mut spent))
            });
            spent.report(&format!("two_trees/{id}/{name}"));
        }
    }
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
    targets = child_create_drop, to_token, is_cancelled, check, value, deep_chain_cancel, done_pending,
        two_trees
}
criterion_main!(benches);
