//! A cell's scheduling state: one atomic, and the transitions that
//! invariants 1 and 2 of the runner (`mod.rs`) are built on.

use super::*;

pub(super) const SCHEDULED: u8 = 1;
pub(super) const RUNNING: u8 = 2;
pub(super) const NOTIFIED: u8 = 4;
pub(super) const CANCELLED: u8 = 8;
pub(super) const ENDED: u8 = 16;

/// What a wake-up or an abort leaves its caller with (invariants 1 and 2).
#[must_use = "a cell a transition scheduled must be pushed, or it is never polled again"]
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Scheduled {
    /// The cell was idle: the caller now holds its queue entry, and must
    /// push it (or end it).
    Push,
    /// The cell is queued, being polled (it is queued again after the
    /// poll), or ended: nothing to do.
    Already,
}

/// What taking a cell from the queue found (invariant 9).
#[must_use = "an aborted cell must be ended, not polled, unless it is shielded"]
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Started {
    /// Poll it.
    Poll,
    /// It was aborted since it was queued: end it, unless it is shielded.
    Aborted,
}

/// What a poll that returned `Pending` leaves the poller with.
#[must_use = "a cell woken during its poll must be pushed again, or the wake-up is lost"]
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Stopped {
    /// Idle until a wake-up.
    Idle,
    /// Woken or aborted during the poll: the poller keeps its queue entry,
    /// and must push it again.
    Push,
}

/// A cell's scheduling state: whether it is queued, being polled, woken
/// while polled, aborted, or ended. Each transition says in its result
/// whether the caller holds the cell's queue entry (invariants 1 and 2).
pub(crate) struct CellState(AtomicU8);

impl CellState {
    pub(crate) fn new() -> CellState {
        CellState(AtomicU8::new(0))
    }

    #[inline]
    pub(super) fn update(&self, f: impl FnMut(u8) -> Option<u8>) -> Result<u8, u8> {
        self.0.fetch_update(AcqRel, Acquire, f)
    }

    #[inline]
    pub(super) fn is_ended(&self) -> bool {
        self.0.load(Relaxed) & ENDED != 0
    }

    /// Neither queued, polled nor ended: waiting for a wake-up.
    #[inline]
    pub(super) fn is_idle(&self) -> bool {
        self.0.load(Relaxed) & (SCHEDULED | RUNNING | NOTIFIED | ENDED) == 0
    }

    /// A wake-up: idle → scheduled (push it); while polled → notified.
    ///
    /// A wake that finds a poll already pending (`SCHEDULED` or `NOTIFIED`)
    /// still writes the state back unchanged: that write releases what the
    /// waker did before waking to the pending poll's `start` (std's `Waker`
    /// contract: a wake happens-before the poll it causes). Giving up
    /// without a write would let that poll read stale data and park for
    /// good, the bug tokio fixed in tokio-rs/tokio#7622.
    #[inline]
    pub(super) fn schedule(&self) -> Scheduled {
        let prev = self.update(|s| {
            if s & ENDED != 0 {
                None
            } else if s & (SCHEDULED | NOTIFIED) != 0 {
                Some(s)
            } else if s & RUNNING != 0 {
                Some(s | NOTIFIED)
            } else {
                Some(s | SCHEDULED)
            }
        });
        if prev.is_ok_and(|s| s & (SCHEDULED | NOTIFIED | RUNNING) == 0) {
            Scheduled::Push
        } else {
            Scheduled::Already
        }
    }

    /// An abort: marks the cell cancelled, and schedules it if idle (push
    /// it); a cell being polled is queued again when the poll returns.
    #[inline]
    pub(super) fn abort(&self) -> Scheduled {
        self.0.fetch_or(CANCELLED, AcqRel);
        self.schedule()
    }

    /// Taken from the queue: scheduled → running. An aborted cell must not
    /// be polled, unless it is shielded (invariant 9): the abort is used
    /// up, so that a shielded cell that returns `Pending` goes idle instead
    /// of being queued again at once.
    #[inline]
    pub(super) fn start(&self) -> Started {
        let prev = self.0.fetch_xor(SCHEDULED | RUNNING, AcqRel);
        debug_assert!(
            prev & (SCHEDULED | RUNNING) == SCHEDULED,
            "a cell ran without being queued"
        );
        if prev & CANCELLED != 0 {
            // An abort meanwhile finds the cell running, and marks it
            // notified: it is queued again all the same.
            self.0.fetch_and(!CANCELLED, AcqRel);
        }
        if prev & CANCELLED != 0 {
            Started::Aborted
        } else {
            Started::Poll
        }
    }

    /// A poll returned `Pending`: running → idle, or back to scheduled
    /// (push it) when woken or aborted meanwhile.
    #[inline]
    pub(super) fn stop(&self) -> Stopped {
        let prev = self.update(|s| {
            if s & (NOTIFIED | CANCELLED) != 0 {
                Some((s & !(RUNNING | NOTIFIED)) | SCHEDULED)
            } else {
                Some(s & !RUNNING)
            }
        });
        if prev.is_ok_and(|s| s & (NOTIFIED | CANCELLED) != 0) {
            Stopped::Push
        } else {
            Stopped::Idle
        }
    }

    /// Ended: no transition queues it again.
    #[inline]
    pub(crate) fn end(&self) {
        self.0.fetch_or(ENDED, AcqRel);
    }
}
