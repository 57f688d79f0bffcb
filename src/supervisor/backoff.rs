//! [`Backoff`]: how long a child waits before each restart.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// How long a child waits before it is restarted: none at all
/// ([`Backoff::none`], the default), or doubling from `min` up to `max`
/// with each consecutive restart ([`Backoff::exponential`]), spread by a
/// `jitter` and reset after a healthy run.
///
/// Before the k-th consecutive restart of a child it waits
/// `min · 2^(k-1)`, capped at `max`, plus or minus up to `jitter` times
/// that (uniformly). The count goes back to 1 when the run that just ended
/// lasted at least [`reset_after`](Backoff::reset_after) (default: `max`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use taskgroup::Backoff;
///
/// // 100 ms, 200 ms, 400 ms, ... up to 10 s, each ± 20%; back to 100 ms
/// // after a run of 30 s or more.
/// let backoff = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(10))
///     .jitter(0.2)
///     .reset_after(Duration::from_secs(30));
/// assert_eq!(backoff.delay(1), Duration::from_millis(100)); // before jitter
/// assert_eq!(backoff.delay(4), Duration::from_millis(800));
/// assert_eq!(backoff.delay(20), Duration::from_secs(10));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[must_use = "a backoff does nothing until given to `ChildBuilder::backoff`"]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: f64,
    reset_after: Option<Duration>,
}

impl Backoff {
    /// Restart at once: no wait before any restart. The default. "At once"
    /// is the next tick of tokio's timer (1 ms), never a busy loop: a child
    /// that fails as it starts comes back about a thousand times a second,
    /// at a few percent of a core (BENCHMARKS.md, "Servers, supervision and services"), until
    /// the supervisor's intensity stops it (by default, at the fourth
    /// restart within 5 s).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::Backoff;
    ///
    /// assert_eq!(Backoff::none().delay(7), Duration::ZERO);
    /// assert_eq!(Backoff::default(), Backoff::none());
    /// ```
    pub const fn none() -> Backoff {
        Backoff {
            min: Duration::ZERO,
            max: Duration::ZERO,
            jitter: 0.0,
            reset_after: None,
        }
    }

    /// Waits `min` before the first restart in a row, twice as long before
    /// each next one, never more than `max`.
    ///
    /// # Panics
    ///
    /// If `min` is zero or greater than `max`, naming the mistake.
    ///
    /// # Examples
    ///
    /// See [`Backoff`].
    #[track_caller]
    pub fn exponential(min: Duration, max: Duration) -> Backoff {
        assert!(
            !min.is_zero(),
            "Backoff::exponential: min must be above zero (Backoff::none() restarts at once)"
        );
        assert!(
            min <= max,
            "Backoff::exponential: min ({min:?}) is greater than max ({max:?})"
        );
        Backoff {
            min,
            max,
            jitter: 0.0,
            reset_after: None,
        }
    }

    /// Spreads each wait uniformly over `delay ± jitter · delay`, so that
    /// children failing together do not come back together. Default 0.
    ///
    /// # Panics
    ///
    /// If `jitter` is not within `0.0..=1.0`, naming it.
    ///
    /// # Examples
    ///
    /// See [`Backoff`].
    #[track_caller]
    pub fn jitter(mut self, jitter: f64) -> Backoff {
        assert!(
            (0.0..=1.0).contains(&jitter),
            "Backoff::jitter: {jitter} is not within 0.0..=1.0"
        );
        self.jitter = jitter;
        self
    }

    /// A run at least this long resets the count of consecutive restarts:
    /// the next wait is `min` again. Default: `max`.
    ///
    /// # Examples
    ///
    /// See [`Backoff`].
    pub fn reset_after(mut self, healthy: Duration) -> Backoff {
        self.reset_after = Some(healthy);
        self
    }

    /// The wait before the `k`-th consecutive restart (`k` from 1), before
    /// jitter: `min · 2^(k-1)`, capped at `max`.
    ///
    /// # Examples
    ///
    /// See [`Backoff`].
    pub fn delay(&self, k: u32) -> Duration {
        if self.min.is_zero() {
            return Duration::ZERO;
        }
        let doublings = k.saturating_sub(1).min(63);
        self.min
            .checked_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX))
            .map_or(self.max, |d| d.min(self.max))
    }

    /// How long a run must last to reset the count.
    pub(crate) fn healthy_after(&self) -> Duration {
        self.reset_after.unwrap_or(self.max)
    }

    /// The wait before the `k`-th consecutive restart, with jitter drawn
    /// from `rng`.
    pub(crate) fn wait(&self, k: u32, rng: &mut Rng) -> Duration {
        let delay = self.delay(k);
        if self.jitter == 0.0 || delay.is_zero() {
            return delay;
        }
        // Uniform in [-1, 1).
        let unit = rng.unit() * 2.0 - 1.0;
        let seconds = delay.as_secs_f64() * (1.0 + self.jitter * unit);
        Duration::from_secs_f64(seconds.max(0.0))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::none()
    }
}

/// xorshift64*: enough to spread restarts, seeded per supervisor from
/// std's random hasher keys.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new() -> Rng {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(0x9e37_79b9_7f4a_7c15);
        Rng(hasher.finish() | 1)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        // The top 53 bits, as a fraction.
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}
