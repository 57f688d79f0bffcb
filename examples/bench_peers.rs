//! `taskgroup`'s side of the peer baselines in `shared/peers/`: the same
//! scenarios as the hand-written tokio binary (`peers`), done with
//! [`TaskGroup`] and [`Context`], with the same CLI, output line and timing
//! scheme, so that `shared/peers/run.sh` can run it as `CANDIDATE_BIN`.
//!
//! ```text
//! cargo build --release --example bench_peers
//! target/release/examples/bench_peers <scenario> <n>
//! ```
//!
//! Prints exactly one line:
//! `scenario=<s> n=<n> ns_per_task=<f> total_ms=<f> [key=value ...] min_ms=.. max_ms=.. reps=..`
//!
//! Timing (as the peer): 1 warm-up + 5 measured repetitions in-process with
//! `std::time::Instant`; every reported time is the median of the 5
//! (`min_ms`/`max_ms` are the spread of `total_ms`); `ns_per_task` is median
//! total / n. Each repetition runs as one tokio task on the multi-thread
//! runtime (default worker count), so the fan-out is driven from a worker
//! thread. `PEERS_DRIVER=block_on` drives it from the `block_on` thread.
//!
//! Exceptions: `park_mem`, `producer` and `producer_drain` are a single cold
//! run in a fresh process (RSS figures are meaningless after a warm-up has
//! grown the heap); `deep_chain` re-executes this binary as
//! `deep_chain_inner` in a subprocess so that a stack overflow is reported
//! (`crashed=true`) instead of killing us.
//!
//! Scenarios mapped from the peer: `spawn_join_joinset`, `first_error`,
//! `cancel_fanout`, `cancel_fanout_child`, `child_tokens`,
//! `child_tokens_held`, `deep_chain`, `park_mem`. Our own: `producer` (a
//! limit-64 group fed through `ready()`, results accumulating until `wait`)
//! and `producer_drain` (the same, draining finished tasks with `try_next()`
//! in the loop). The peer's `spawn_join_vec`, `futures_unordered` and
//! `tracker_token` have no taskgroup counterpart: unknown scenarios print the
//! usage and exit with code 2.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering::Relaxed};
use std::task::Poll;
use std::time::{Duration, Instant};

use taskgroup::{CancelHandle, Context, GroupError, TaskGroup};
use tokio::sync::Notify;

// ---------------------------------------------------------------------------
// Live-heap counter (enabled only by scenarios that report heap bytes; when
// disabled it costs one relaxed load of a never-written flag per allocation).
// The same allocator as the peer's, so both sides pay the same for it.

struct CountingAlloc;
static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

fn count(delta: isize) {
    LIVE_BYTES.fetch_add(delta, Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged and only adds bookkeeping on a separate atomic, so `System`'s
// guarantees carry over.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        let p = unsafe { System.alloc(l) };
        if COUNTING.load(Relaxed) && !p.is_null() {
            count(l.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(l) };
        if COUNTING.load(Relaxed) && !p.is_null() {
            count(l.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if COUNTING.load(Relaxed) {
            count(-(l.size() as isize));
        }
        // SAFETY: `p` was allocated by `System` (every allocation goes
        // through this allocator) with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: forwarded as is; `p` came from `System` with layout `l`.
        let q = unsafe { System.realloc(p, l, new) };
        if COUNTING.load(Relaxed) && !q.is_null() {
            count(new as isize - l.size() as isize);
        }
        q
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn live_bytes() -> isize {
    LIVE_BYTES.load(Relaxed)
}

/// Reads a `kB` field (VmRSS, VmHWM, ...) from /proc/self/status.
fn proc_status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in s.lines() {
        if let Some(rest) = line.strip_prefix(field)
            && let Some(rest) = rest.strip_prefix(':')
        {
            return rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
    }
    0
}

// ---------------------------------------------------------------------------

/// One repetition's measurements: total wall time plus named extras
/// (milliseconds if the name ends in `_ms`), reported as medians too.
struct Sample {
    total: Duration,
    extra_ms: Vec<(&'static str, f64)>,
}

impl Sample {
    fn total(total: Duration) -> Self {
        Sample {
            total,
            extra_ms: Vec::new(),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// A one-shot "everyone has reached this point" latch for N tasks.
struct Latch {
    n: usize,
    count: AtomicUsize,
    done: Notify,
}

impl Latch {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Latch {
            n,
            count: AtomicUsize::new(0),
            done: Notify::new(),
        })
    }
    fn arrive(&self) {
        if self.count.fetch_add(1, Relaxed) + 1 == self.n {
            self.done.notify_one(); // stores a permit if nobody waits yet
        }
    }
    async fn wait(&self) {
        if self.n == 0 {
            return;
        }
        self.done.notified().await;
    }
}

/// Awaits cancellation of `ctx`, after registering as a waiter (one poll of
/// `done()`) and then telling `latch` that this task is parked, so "all
/// started" really means every task is on the context's waiter list.
async fn park_on(ctx: &Context, latch: &Latch) {
    let mut fut = pin!(ctx.done());
    let first = poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    latch.arrive();
    if first.is_pending() {
        fut.await;
    }
}

/// `wait`'s verdict on a group cancelled from outside. The design says
/// `Cancelled`; tasks that notice the cancel and return `Ok` before the
/// group's abort reaches them can make it `Ok`, which we count rather than
/// fail on (reported as `wait_ok_reps`).
fn check_cancelled(r: Result<Vec<()>, GroupError<Infallible>>, n: usize) -> f64 {
    match r {
        Err(GroupError::Cancelled(_)) => 0.0,
        Ok(v) => {
            assert_eq!(v.len(), n);
            1.0
        }
        Err(e) => panic!("expected Cancelled, got {e:?}"),
    }
}

// ------------------------------ scenarios ----------------------------------

async fn spawn_join_joinset(n: usize) -> Sample {
    let t0 = Instant::now();
    let mut group = TaskGroup::<(), Infallible>::new();
    for _ in 0..n {
        group.spawn(|_ctx| async { Ok(()) });
    }
    let values = group.wait().await.expect("no task fails");
    let elapsed = t0.elapsed();
    assert_eq!(values.len(), n);
    Sample::total(elapsed)
}

/// `child == false`: tasks park on the group context; `true`: each task
/// parks on its own child of it (`with_cancel`, the handle kept alive).
async fn cancel_fanout(n: usize, child: bool) -> Sample {
    let latch = Latch::new(n);
    let t0 = Instant::now();
    let mut group = TaskGroup::<(), Infallible>::new();
    for _ in 0..n {
        let latch = latch.clone();
        if child {
            group.spawn(move |ctx| async move {
                let (child, _handle) = ctx.with_cancel();
                park_on(&child, &latch).await;
                Ok(())
            });
        } else {
            group.spawn(move |ctx| async move {
                park_on(&ctx, &latch).await;
                Ok(())
            });
        }
    }
    latch.wait().await;
    let t_cancel = Instant::now();
    group.cancel();
    let cancel_call = t_cancel.elapsed();
    let ok = check_cancelled(group.wait().await, n);
    let t_end = Instant::now();
    Sample {
        total: t_end - t0,
        extra_ms: vec![
            ("spawn_park_ms", ms(t_cancel - t0)),
            ("cancel_call_ms", ms(cancel_call)),
            ("cancel_to_joined_ms", ms(t_end - t_cancel)),
            ("wait_ok_reps", ok),
        ],
    }
}

async fn first_error(n: usize) -> Sample {
    let bad = n / 2;
    let t0 = Instant::now();
    let mut group = TaskGroup::<(), usize>::new();
    for i in 0..n {
        group.spawn(move |ctx| async move {
            if i == bad {
                return Err(i);
            }
            // The peer's `select! { cancelled, sleep(1h) }`.
            let _ = ctx.sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
    }
    let r = group.wait().await;
    let elapsed = t0.elapsed();
    assert_eq!(r, Err(GroupError::Failed(bad)));
    Sample::total(elapsed)
}

async fn child_tokens(n: usize, root: &Context) -> Sample {
    let t0 = Instant::now();
    for _ in 0..n {
        let c = root.with_cancel();
        drop(black_box(c));
    }
    Sample::total(t0.elapsed())
}

async fn child_tokens_held(n: usize) -> Sample {
    let (root, _root_handle) = Context::background().with_cancel();
    let h0 = live_bytes();
    let t0 = Instant::now();
    let mut v: Vec<(Context, CancelHandle)> = Vec::with_capacity(n);
    let h_vec = live_bytes();
    for _ in 0..n {
        v.push(root.with_cancel());
    }
    let t1 = Instant::now();
    let held = live_bytes() - h_vec;
    drop(v);
    let t2 = Instant::now();
    let leftover = live_bytes() - h0;
    Sample {
        total: t2 - t0,
        extra_ms: vec![
            ("create_ms", ms(t1 - t0)),
            ("drop_ms", ms(t2 - t1)),
            ("heap_bytes_per_child", held as f64 / n.max(1) as f64),
            ("heap_bytes_left_after_drop", leftover as f64),
        ],
    }
}

async fn deep_chain(n: usize) -> Sample {
    let t0 = Instant::now();
    let (root, root_handle) = Context::background().with_cancel();
    // chain[0] is the root, chain[i + 1] a child of chain[i]; every handle
    // is kept alive (dropping one would cancel its context).
    let mut chain: Vec<Context> = Vec::with_capacity(n + 1);
    let mut handles: Vec<CancelHandle> = Vec::with_capacity(n);
    chain.push(root.clone());
    for i in 0..n {
        let (c, h) = chain[i].with_cancel();
        chain.push(c);
        handles.push(h);
    }
    let t1 = Instant::now();
    root_handle.cancel();
    let t2 = Instant::now();
    assert!(chain[n].is_cancelled());
    drop(handles);
    drop(chain);
    drop(root_handle);
    drop(root);
    let t3 = Instant::now();
    Sample {
        total: t3 - t0,
        extra_ms: vec![
            ("build_ms", ms(t1 - t0)),
            ("cancel_ms", ms(t2 - t1)),
            ("drop_ms", ms(t3 - t2)),
        ],
    }
}

/// `limit(64)` group fed through `ready()`; `drain` also hands finished
/// tasks out with `try_next()` in the loop, so results do not accumulate.
async fn producer(n: usize, drain: bool) -> Sample {
    let rss0 = proc_status_kb("VmRSS");
    let t0 = Instant::now();
    let mut group = TaskGroup::<(), Infallible>::builder().limit(64).build();
    let mut drained = 0usize;
    for _ in 0..n {
        group.ready().await;
        group.spawn(|_ctx| async { Ok(()) });
        if drain {
            while let Some((_id, outcome)) = group.try_next() {
                assert!(outcome.is_ok());
                drained += 1;
            }
        }
    }
    let t_spawned = Instant::now();
    let rss1 = proc_status_kb("VmRSS");
    let values = group.wait().await.expect("no task fails");
    let elapsed = t0.elapsed();
    assert_eq!(values.len() + drained, n);
    Sample {
        total: elapsed,
        extra_ms: vec![
            ("spawn_loop_ms", ms(t_spawned - t0)),
            ("wait_ms", ms(elapsed - (t_spawned - t0))),
            ("drained", drained as f64),
            ("rss_kb_before", rss0 as f64),
            ("rss_kb_after_loop", rss1 as f64),
            ("rss_growth_kb", rss1 as f64 - rss0 as f64),
        ],
    }
}

// ------------------------------ driver -------------------------------------

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs one repetition of `f` either as a spawned task (default) or
/// directly on the block_on thread.
fn run_once<F, Fut>(rt: &tokio::runtime::Runtime, f: F) -> Sample
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Sample> + Send + 'static,
{
    let on_block_on = std::env::var("PEERS_DRIVER")
        .map(|v| v == "block_on")
        .unwrap_or(false);
    let fut = f();
    if on_block_on {
        rt.block_on(fut)
    } else {
        rt.block_on(async move { tokio::spawn(fut).await.unwrap() })
    }
}

fn report(scenario: &str, n: usize, samples: Vec<Sample>, extra_fixed: &[(String, String)]) {
    let mut totals: Vec<f64> = samples.iter().map(|s| ms(s.total)).collect();
    let min = totals.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = totals.iter().cloned().fold(0.0, f64::max);
    let med = median(&mut totals);
    let mut extras: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut order: Vec<&'static str> = Vec::new();
    for s in &samples {
        for (k, v) in &s.extra_ms {
            if !extras.contains_key(k) {
                order.push(k);
            }
            extras.entry(k).or_default().push(*v);
        }
    }
    let mut line = format!(
        "scenario={} n={} ns_per_task={:.1} total_ms={:.3}",
        scenario,
        n,
        med * 1e6 / n.max(1) as f64,
        med
    );
    for k in order {
        let v = extras.get_mut(k).unwrap();
        if k == "wait_ok_reps" {
            // A count over the reps, not a median.
            line.push_str(&format!(" {}={}", k, v.iter().sum::<f64>()));
            continue;
        }
        let m = median(v);
        if k.ends_with("_ms") {
            line.push_str(&format!(" {k}={m:.3}"));
        } else {
            line.push_str(&format!(" {k}={m:.1}"));
        }
    }
    line.push_str(&format!(
        " min_ms={:.3} max_ms={:.3} reps={}",
        min,
        max,
        samples.len()
    ));
    for (k, v) in extra_fixed {
        line.push_str(&format!(" {k}={v}"));
    }
    println!("{line}");
}

const WARMUP: usize = 1;
const REPS: usize = 5;

fn repeat<F, Fut>(rt: &tokio::runtime::Runtime, mut f: F) -> Vec<Sample>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Sample> + Send + 'static,
{
    for _ in 0..WARMUP {
        run_once(rt, &mut f);
    }
    (0..REPS).map(|_| run_once(rt, &mut f)).collect()
}

fn park_mem(rt: &tokio::runtime::Runtime, n: usize) {
    COUNTING.store(true, Relaxed);
    // Let the runtime settle (worker threads, driver allocations) first.
    run_once(rt, || async { Sample::total(Duration::ZERO) });
    let line = run_once(rt, move || async move {
        let latch = Latch::new(n);
        let rss0 = proc_status_kb("VmRSS");
        let heap0 = live_bytes();
        let t0 = Instant::now();
        let mut group = TaskGroup::<(), Infallible>::new();
        for _ in 0..n {
            let latch = latch.clone();
            group.spawn(move |ctx| async move {
                park_on(&ctx, &latch).await;
                Ok(())
            });
        }
        latch.wait().await;
        let parked = t0.elapsed();
        let rss1 = proc_status_kb("VmRSS");
        let heap1 = live_bytes();
        group.cancel();
        let ok = check_cancelled(group.wait().await, n);
        let heap2 = live_bytes();
        Sample {
            total: parked,
            extra_ms: vec![
                (
                    "rss_bytes_per_task",
                    (rss1 as f64 - rss0 as f64) * 1024.0 / n as f64,
                ),
                ("heap_bytes_per_task", (heap1 - heap0) as f64 / n as f64),
                ("heap_bytes_left_after_join", (heap2 - heap0) as f64),
                ("rss_kb_parked", rss1 as f64),
                ("wait_ok_reps", ok),
            ],
        }
    });
    report(
        "park_mem",
        n,
        vec![line],
        &[("hwm_kb".into(), proc_status_kb("VmHWM").to_string())],
    );
}

/// Single cold run, like `park_mem`: VmHWM is the process's peak RSS, so it
/// is only comparable across n in a fresh process.
fn producer_once(rt: &tokio::runtime::Runtime, scenario: &str, n: usize, drain: bool) {
    run_once(rt, || async { Sample::total(Duration::ZERO) });
    let hwm0 = proc_status_kb("VmHWM");
    let sample = run_once(rt, move || producer(n, drain));
    let hwm1 = proc_status_kb("VmHWM");
    report(
        scenario,
        n,
        vec![sample],
        &[
            ("hwm_kb_before".into(), hwm0.to_string()),
            ("hwm_kb".into(), hwm1.to_string()),
            (
                "hwm_growth_kb".into(),
                (hwm1 as i64 - hwm0 as i64).to_string(),
            ),
        ],
    );
}

/// Unbounded recursion on a runtime worker: only used by `overflow_selftest`
/// to check that the subprocess wrapper reports a crash.
fn recurse(d: u64) -> u64 {
    let pad = black_box([d; 64]);
    if black_box(true) {
        recurse(d + 1) + pad[3]
    } else {
        0
    }
}

/// Runs `<scenario>_inner n` in a child process and re-prints its line as
/// `<scenario>` with `crashed=false`, or a `crashed=true` line if it died.
fn subprocess(scenario: &str, n: usize) {
    let exe = std::env::current_exe().unwrap();
    let inner = format!("{scenario}_inner");
    let out = std::process::Command::new(exe)
        .arg(&inner)
        .arg(n.to_string())
        .output()
        .expect("spawn self");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("scenario="))
        .map(str::to_owned);
    match (out.status.success(), line) {
        (true, Some(l)) => println!("{} crashed=false", l.replacen(&inner, scenario, 1)),
        _ => {
            use std::os::unix::process::ExitStatusExt;
            let stderr = String::from_utf8_lossy(&out.stderr);
            let why = stderr
                .lines()
                .find(|l| l.contains("overflow") || l.contains("panicked") || l.contains("memory"))
                .unwrap_or("")
                .replace(' ', "_");
            println!(
                "scenario={} n={} ns_per_task=NA total_ms=NA crashed=true exit={:?} signal={:?} why={}",
                scenario,
                n,
                out.status.code(),
                out.status.signal(),
                why
            );
        }
    }
}

const SCENARIOS: &[&str] = &[
    "spawn_join_joinset",
    "cancel_fanout",
    "cancel_fanout_child",
    "first_error",
    "child_tokens",
    "child_tokens_held",
    "deep_chain",
    "park_mem",
    "producer",
    "producer_drain",
    "overflow_selftest",
    "deep_chain_inner",
    "overflow_selftest_inner",
];

fn usage() -> ! {
    eprintln!(
        "usage: bench_peers <scenario> <n>\nscenarios: spawn_join_joinset cancel_fanout \
         cancel_fanout_child first_error child_tokens child_tokens_held deep_chain park_mem \
         producer producer_drain (overflow_selftest: checks crash reporting)"
    );
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        usage();
    }
    let scenario = args[1].as_str();
    if !SCENARIOS.contains(&scenario) {
        eprintln!("unknown scenario {scenario}");
        usage();
    }
    let Ok(n) = args[2].replace('_', "").parse::<usize>() else {
        eprintln!("n must be an integer: {}", args[2]);
        usage();
    };

    if scenario == "deep_chain" || scenario == "overflow_selftest" {
        return subprocess(scenario, n);
    }
    let rt = runtime();
    match scenario {
        "spawn_join_joinset" => report(scenario, n, repeat(&rt, || spawn_join_joinset(n)), &[]),
        "cancel_fanout" => report(scenario, n, repeat(&rt, || cancel_fanout(n, false)), &[]),
        "cancel_fanout_child" => report(scenario, n, repeat(&rt, || cancel_fanout(n, true)), &[]),
        "first_error" => report(scenario, n, repeat(&rt, || first_error(n)), &[]),
        "child_tokens" => {
            // Long-lived across all reps.
            let (root, root_handle) = Context::background().with_cancel();
            let hwm0 = proc_status_kb("VmHWM");
            let rss0 = proc_status_kb("VmRSS");
            let f = || {
                let root = root.clone();
                async move { child_tokens(n, &root).await }
            };
            for _ in 0..WARMUP {
                run_once(&rt, f);
            }
            let hwm_w = proc_status_kb("VmHWM");
            let samples: Vec<Sample> = (0..REPS).map(|_| run_once(&rt, f)).collect();
            let hwm1 = proc_status_kb("VmHWM");
            let rss1 = proc_status_kb("VmRSS");
            drop(root_handle);
            drop(root);
            report(
                scenario,
                n,
                samples,
                &[
                    ("hwm_kb_before".into(), hwm0.to_string()),
                    ("hwm_kb_after".into(), hwm1.to_string()),
                    (
                        "hwm_growth_kb".into(),
                        (hwm1 as i64 - hwm0 as i64).to_string(),
                    ),
                    (
                        "hwm_growth_after_warmup_kb".into(),
                        (hwm1 as i64 - hwm_w as i64).to_string(),
                    ),
                    (
                        "rss_growth_kb".into(),
                        (rss1 as i64 - rss0 as i64).to_string(),
                    ),
                ],
            );
        }
        "child_tokens_held" => {
            COUNTING.store(true, Relaxed);
            report(
                scenario,
                n,
                repeat(&rt, || child_tokens_held(n)),
                &[("alloc_counting".into(), "on".into())],
            )
        }
        "deep_chain_inner" => report(scenario, n, repeat(&rt, || deep_chain(n)), &[]),
        "park_mem" => park_mem(&rt, n),
        "producer" => producer_once(&rt, scenario, n, false),
        "producer_drain" => producer_once(&rt, scenario, n, true),
        "overflow_selftest_inner" => {
            let d = run_once(&rt, || async {
                Sample::total(Duration::from_nanos(recurse(0)))
            });
            report(scenario, n, vec![d], &[]);
        }
        _ => usage(),
    }
}
