//! `Context` memory and cost: a long-lived root with a million short-lived
//! children stays flat (plain and with deadlines, whose timer tasks are
//! released), a million-deep chain cancels and drops on a small stack, and
//! what a lock-free check costs.
//!
//! RSS is per process, so the tests here run one at a time (`SERIAL`). The
//! figures are printed (`cargo test --test context_memory -- --nocapture`).

use std::hint::black_box;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use taskgroup::{CancelHandle, Context, ContextError};

mod support;
use support::rss_bytes;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

const MIB: i64 = 1024 * 1024;
/// Growth allowed between the warm-up and the end: generous, allocator noise.
const RSS_BOUND: i64 = 16 * MIB;
const WARM_UP: usize = 100_000;
const CHILDREN: usize = 1_000_000;
const CHAIN: usize = 1_000_000;

fn mib(bytes: i64) -> f64 {
    bytes as f64 / MIB as f64
}

/// One short-lived child of `root`, used and dropped; `i` varies how it
/// ends: cancelled by hand, by dropping its handle, or disarmed and dropped.
/// Every fourth one has a child of its own.
fn churn_cancel_child(root: &Context, i: usize) {
    let (child, cancel) = root.with_cancel();
    let leaf = i.is_multiple_of(4).then(|| child.with_value(i));
    black_box(child.is_cancelled());
    match i % 3 {
        0 => cancel.cancel(),
        1 => drop(cancel),
        _ => cancel.disarm(),
    }
    drop(leaf);
    drop(child);
}

#[test]
fn million_short_lived_cancel_children_of_one_root_keep_rss_flat() {
    let _serial = serial();
    let (root, _cancel) = Context::background().with_cancel();
    for i in 0..WARM_UP {
        churn_cancel_child(&root, i);
    }
    let before = rss_bytes() as i64;
    let start = Instant::now();
    for i in 0..CHILDREN {
        churn_cancel_child(&root, i);
    }
    let elapsed = start.elapsed();
    let growth = rss_bytes() as i64 - before;
    eprintln!(
        "with_cancel: {CHILDREN} children in {elapsed:?} ({:.0} ns each), RSS growth {:.2} MiB (from {:.1} MiB)",
        elapsed.as_nanos() as f64 / CHILDREN as f64,
        mib(growth),
        mib(before),
    );
    assert!(!root.is_cancelled());
    assert!(
        growth < RSS_BOUND,
        "RSS grew {:.2} MiB over {CHILDREN} short-lived children",
        mib(growth)
    );
}

/// Waits, in a bounded loop of scheduler turns, for the runtime's live task
/// count to come back to `baseline`; returns the count last seen.
async fn settle_tasks(baseline: usize) -> usize {
    let metrics = tokio::runtime::Handle::current().metrics();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive = metrics.num_alive_tasks();
        if alive <= baseline || Instant::now() > deadline {
            return alive;
        }
        tokio::task::yield_now().await;
    }
}

/// Aborted timer tasks allowed to wait for a worker before the churn pauses.
const BACKLOG: usize = 4096;

fn churn_timeout_child(root: &Context, i: usize) {
    let (child, cancel) = root.with_timeout(Duration::from_secs(3600));
    black_box(child.deadline());
    if i.is_multiple_of(2) {
        // Cancelled: the timer is aborted by the cancel.
        cancel.cancel();
        drop(child);
    } else {
        // Never cancelled: the timer is aborted when the context is dropped.
        cancel.disarm();
        drop(child);
    }
}

#[test]
fn million_short_lived_timeout_children_keep_rss_flat_and_release_timers() {
    let _serial = serial();
    let rt = support::multi_thread(2);
    rt.block_on(async {
        let metrics = tokio::runtime::Handle::current().metrics();
        let baseline = metrics.num_alive_tasks();
        let (root, _cancel) = Context::background().with_cancel();
        for i in 0..WARM_UP {
            churn_timeout_child(&root, i);
            if i.is_multiple_of(1024) && metrics.num_alive_tasks() > baseline + BACKLOG {
                let left = settle_tasks(baseline + BACKLOG / 2).await;
                assert!(left <= baseline + BACKLOG / 2, "{left} timer tasks pile up");
            }
        }
        assert_eq!(settle_tasks(baseline).await, baseline);
        let before = rss_bytes() as i64;
        let start = Instant::now();
        let mut peak_alive = 0;
        for i in 0..CHILDREN {
            churn_timeout_child(&root, i);
            if i.is_multiple_of(1024) {
                // The workers reap aborted timers concurrently; keep the
                // backlog bounded so that RSS measures leaks, not how far
                // this loop can outrun them.
                let alive = metrics.num_alive_tasks();
                peak_alive = peak_alive.max(alive);
                if alive > baseline + BACKLOG {
                    let left = settle_tasks(baseline + BACKLOG / 2).await;
                assert!(left <= baseline + BACKLOG / 2, "{left} timer tasks pile up");
                }
            }
        }
        let elapsed = start.elapsed();
        let alive = settle_tasks(baseline).await;
        let settled = start.elapsed() - elapsed;
        let growth = rss_bytes() as i64 - before;
        eprintln!(
            "with_timeout: {CHILDREN} children in {elapsed:?} ({:.0} ns each), timers settled in {settled:?} \
             (peak {peak_alive} alive), RSS growth {:.2} MiB (from {:.1} MiB)",
            elapsed.as_nanos() as f64 / CHILDREN as f64,
            mib(growth),
            mib(before),
        );
        assert_eq!(
            alive, baseline,
            "every timer task of a dropped child is released"
        );
        assert!(
            growth < RSS_BOUND,
            "RSS grew {:.2} MiB over {CHILDREN} short-lived timeout children",
            mib(growth)
        );
    });
}

/// Runs `f` on a thread with a 2 MiB stack, as a small worker thread has.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    thread::Builder::new()
        .name("small-stack".into())
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn million_deep_cancel_chain_cancels_and_drops_on_small_stack() {
    let _serial = serial();
    on_small_stack(|| {
        let start = Instant::now();
        let (root, root_cancel) = Context::background().with_cancel();
        let mut handles: Vec<CancelHandle> = Vec::with_capacity(CHAIN);
        let mut deepest = root.clone();
        for _ in 0..CHAIN {
            let (child, handle) = deepest.with_cancel();
            handles.push(handle);
            deepest = child;
        }
        let built = start.elapsed();
        assert_eq!(deepest.err(), None);

        let start = Instant::now();
        root_cancel.cancel_with(std::io::Error::other("root"));
        let cancelled = start.elapsed();
        assert_eq!(deepest.err(), Some(ContextError::Cancelled));
        assert_eq!(deepest.cause().unwrap().to_string(), "root");

        let start = Instant::now();
        drop(handles);
        drop(deepest);
        drop(root);
        let dropped = start.elapsed();
        eprintln!(
            "cancel chain of {CHAIN}: built in {built:?}, cancelled in {cancelled:?}, dropped in {dropped:?}"
        );
    });
}

#[test]
fn million_deep_value_chain_cancels_looks_up_and_drops_on_small_stack() {
    let _serial = serial();
    on_small_stack(|| {
        struct Root(&'static str);
        let (root, cancel) = Context::background().with_cancel();
        let mut deepest = root.with_value(Root("at the top"));
        for i in 0..CHAIN {
            deepest = deepest.with_value(i);
        }
        let start = Instant::now();
        // The nearest usize is one step away, the Root value a million.
        assert_eq!(deepest.value::<usize>(), Some(&(CHAIN - 1)));
        assert_eq!(deepest.value::<Root>().map(|r| r.0), Some("at the top"));
        let looked_up = start.elapsed();

        let start = Instant::now();
        cancel.cancel();
        let cancelled = start.elapsed();
        assert_eq!(deepest.err(), Some(ContextError::Cancelled));

        let start = Instant::now();
        drop(deepest);
        let dropped = start.elapsed();
        eprintln!(
            "value chain of {CHAIN}: deepest lookup {looked_up:?}, cancelled in {cancelled:?}, dropped in {dropped:?}"
        );
        drop(root);
    });
}

#[test]
fn is_cancelled_cost_per_call() {
    let _serial = serial();
    const CALLS: u32 = 10_000_000;
    let (root, cancel) = Context::background().with_cancel();
    let ctx = root.with_value(1u8);
    let measure = |ctx: &Context| {
        let start = Instant::now();
        let mut hits = 0u32;
        for _ in 0..CALLS {
            hits += u32::from(black_box(ctx).is_cancelled());
        }
        (start.elapsed(), black_box(hits))
    };
    let (live, hits) = measure(&ctx);
    assert_eq!(hits, 0);
    cancel.cancel();
    let (over, hits) = measure(&ctx);
    assert_eq!(hits, CALLS);
    let start = Instant::now();
    for _ in 0..CALLS {
        black_box(black_box(&ctx).err());
    }
    let err = start.elapsed();
    let per = |d: Duration| d.as_nanos() as f64 / f64::from(CALLS);
    eprintln!(
        "is_cancelled: {:.2} ns/call live, {:.2} ns/call cancelled; err(): {:.2} ns/call ({} build)",
        per(live),
        per(over),
        per(err),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
}
