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
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for i in 0..4_100 {
        if done() {
            return;
        }
        if i < 100 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    panic!("{what} did not happen within about 4 s");
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

/// Sets its flag when dropped: tells whether user code (a task's future, a
/// closure) was dropped.
pub struct DropFlag(std::sync::Arc<std::sync::atomic::AtomicBool>);

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
/// `&str`.
pub fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
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
            if !ours(&message(info.payload())) {
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
    /// What was written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}
