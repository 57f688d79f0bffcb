//! Helpers shared by the group test binaries: `mod support;` in each. A
//! binary uses some of them, hence `dead_code` allowed here.
#![allow(dead_code)]

use std::time::Duration;

/// The number of async tasks alive on the current runtime.
pub fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits, bounded, until `done()` holds; never a fixed sleep. Yields to the
/// scheduler first, then checks every millisecond, for about 4 s.
pub async fn eventually(what: &str, done: impl FnMut() -> bool) {
    eventually_within(what, Duration::from_secs(4), done).await;
}

/// [`eventually`] with its own bound: yields to the scheduler 100 times,
/// then checks every millisecond, `bound` in all (counted in checks, so a
/// paused clock does not shorten it).
pub async fn eventually_within(what: &str, bound: Duration, mut done: impl FnMut() -> bool) {
    let checks = 100 + bound.as_millis();
    for i in 0..checks {
        if done() {
            return;
        }
        if i < 100 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    panic!("{what} did not happen within about {bound:?}");
}

/// Yields to the scheduler `n` times.
pub async fn yields(n: u64) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

/// In a paused current-thread runtime: returns once every task that can
/// make progress has (the clock only auto-advances when the runtime is
/// idle, and never while a blocking task runs). Advances the clock by 1 ms.
pub async fn run_until_idle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// A multi-thread runtime of `workers` workers, with time and I/O.
pub fn multi_thread(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// xorshift64*: small, seeded, good enough to pick behaviours.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// In `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// `TASKGROUP_STRESS_SEED` if set (to replay a failure), else the clock.
pub fn seed_from_env_or_clock() -> u64 {
    match std::env::var("TASKGROUP_STRESS_SEED") {
        Ok(seed) => seed.parse().expect("TASKGROUP_STRESS_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

/// `TASKGROUP_STRESS_ROUNDS` if set, else `default`.
pub fn rounds(default: usize) -> usize {
    std::env::var("TASKGROUP_STRESS_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// Prints the seed if the test panics while it is alive: set `round` as
/// the rounds go.
pub struct SeedReport {
    /// What failed, for the message.
    pub test: &'static str,
    pub seed: u64,
    pub round: usize,
}

impl Drop for SeedReport {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{} failed in round {}: rerun with TASKGROUP_STRESS_SEED={}",
                self.test, self.round, self.seed
            );
        }
    }
}

/// Sets its flag when dropped: tells whether user code (a task's future, a
/// closure) was dropped.
pub struct DropFlag(pub std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A [`DropFlag`] and the flag it sets.
pub fn drop_flag() -> (DropFlag, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    (DropFlag(flag.clone()), flag)
}

/// A panic payload's message, or "" if it is neither a `String` nor a
/// `&str`. Allocates nothing (the heap tests' panic hooks use it).
pub fn payload_str(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("")
}

/// [`payload_str`], owned.
pub fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload_str(payload).to_owned()
}

/// Keeps the panics a test binary raises on purpose off stderr: installs,
/// once per process, a hook that hands the default hook every panic whose
/// message `ours` does not claim. One predicate per binary (the first call
/// installs it).
pub fn quiet_panics(ours: fn(&str) -> bool) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !ours(payload_str(info.payload())) {
                default(info);
            }
        }));
    });
}

/// `n` milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A `Write` into a shared buffer, for a `tracing_subscriber::fmt`
/// subscriber's writer: clone it into `with_writer`, read `text` after.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// A `tracing_subscriber::fmt` subscriber that writes every level,
    /// without colours, here, made the process's global one (so the
    /// blocking pool's threads see it too): for the one test of a binary
    /// that reads what `tracing` wrote.
    ///
    /// # Panics
    ///
    /// If the binary already has a global subscriber.
    pub fn global() -> Captured {
        use tracing_subscriber::util::SubscriberInitExt as _;
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .finish()
            .try_init()
            .expect("the binary's only global subscriber");
        captured
    }

    /// What was written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// Counts its drops in a shared counter: how many task futures (or other
/// user values) were dropped.
pub struct DropCounter(pub std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Held by a task's closure, then by its future or blocking body: counts
/// user code the group has not dropped yet (up when made, down when
/// dropped).
pub struct Token(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Token {
    pub fn new(alive: &std::sync::Arc<std::sync::atomic::AtomicUsize>) -> Token {
        alive.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Token(alive.clone())
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Counts task bodies running at once, and the most ever seen: a body
/// holds the [`GaugeGuard`] of [`Gauge::enter`] while it runs.
#[derive(Default)]
pub struct Gauge {
    now: std::sync::atomic::AtomicUsize,
    max: std::sync::atomic::AtomicUsize,
}

impl Gauge {
    pub fn enter(self: &std::sync::Arc<Self>) -> GaugeGuard {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.now.fetch_add(1, SeqCst) + 1;
        self.max.fetch_max(now, SeqCst);
        GaugeGuard(self.clone())
    }

    /// The most bodies ever running at once.
    pub fn max(&self) -> usize {
        self.max.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The bodies running now.
    pub fn now(&self) -> usize {
        self.now.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A body's place in a [`Gauge`], given back when dropped.
pub struct GaugeGuard(std::sync::Arc<Gauge>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The resident set size of this process, from `/proc/self/status`.
pub fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    let kib: usize = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}
