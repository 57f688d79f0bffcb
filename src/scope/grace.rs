//! [`Grace`]: the builder's [`grace`](crate::TaskGroupBuilder::grace) in
//! a scope, the time its body and running tasks are given to end on their
//! own once it is cancelled (invariant 4 of `mod.rs`).

use std::future::Future;
use std::pin::Pin;
use std::task;
use std::time::Duration;

use tokio::time::Sleep;

/// A scope's grace: its length, and once the scope future has seen the
/// cancel, its timer on tokio's clock.
pub(super) struct Grace {
    length: Duration,
    /// Started when the scope future first sees its context cancelled.
    timer: Option<Pin<Box<Sleep>>>,
    /// The grace has run out: the body and the tasks go now.
    over: bool,
}

impl Grace {
    pub(super) fn new(length: Duration) -> Grace {
        Grace {
            length,
            timer: None,
            over: false,
        }
    }

    /// In a cancelled scope: whether the body and the running tasks are
    /// still to be kept and polled. The first call starts the timer (a
    /// zero grace never does: they go at once, as they always have).
    ///
    /// # Panics
    ///
    /// As `tokio::time::sleep`, with a nonzero grace outside a tokio
    /// runtime with its timer enabled.
    pub(super) fn holds(&mut self) -> bool {
        if self.over || self.length.is_zero() {
            return false;
        }
        if self.timer.is_none() {
            self.timer = Some(Box::pin(tokio::time::sleep(self.length)));
        }
        true
    }

    /// Polls the timer, if it runs, with the scope future's waker, so
    /// that its end wakes the scope future; `true` when it has just run
    /// out (the scope must stop its tasks before it returns `Pending`).
    pub(super) fn poll_end(&mut self, cx: &mut task::Context<'_>) -> bool {
        let Some(timer) = self.timer.as_mut() else {
            return false;
        };
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.timer = None;
        self.over = true;
        true
    }
}
