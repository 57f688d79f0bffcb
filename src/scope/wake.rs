//! [`Wakeup`] and [`TaskWaker`]: the scope future's waker, the ready list
//! and the wakers that fill it (invariant 3 of `mod.rs`).

use std::sync::atomic::Ordering::{AcqRel, SeqCst};
use std::sync::{Arc, PoisonError};
use std::task::Waker;

use super::CANCEL;
use crate::context::CancelHook;
use crate::loom::{AtomicBool, Mutex, MutexGuard};

/// The `'static` part of a scope, reachable from its wakers and its
/// context's cancel hook: the scope future's waker and the ready list.
pub(super) struct Wakeup {
    /// The scope future is inside its `poll` (invariant 3).
    pub(super) polling: AtomicBool,
    pub(super) state: Mutex<WakeState>,
}

pub(super) struct WakeState {
    pub(super) waker: Option<Waker>,
    /// Slots woken since the scope future last looked; [`BODY`] for the
    /// body.
    pub(super) ready: Vec<usize>,
}

impl Wakeup {
    pub(super) fn state(&self) -> MutexGuard<'_, WakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `slot` and wakes the scope future unless it is polling.
    pub(super) fn push(&self, slot: usize) {
        let waker = {
            let mut state = self.state();
            state.ready.push(slot);
            self.take_waker(&mut state)
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Wakes the scope future unless it is polling (it will look anyway).
    pub(super) fn notify(&self) {
        let waker = self.take_waker(&mut self.state());
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    pub(super) fn take_waker(&self, state: &mut WakeState) -> Option<Waker> {
        if self.polling.load(SeqCst) {
            None
        } else {
            state.waker.take()
        }
    }
}

impl CancelHook for Wakeup {
    /// The scope's context was cancelled, maybe from outside: the scope
    /// future must come and drop its tasks. Pushed, not only woken, so
    /// that the future's last look sees a cancel made while it polls
    /// (invariant 3).
    fn on_cancel(&self) {
        self.push(CANCEL);
    }
}

/// The waker of one slot (a task's, reused by the next task in that slot;
/// a stale wake-up only polls the new one once more) or of the body.
pub(super) struct TaskWaker {
    pub(super) slot: usize,
    /// The slot is in the ready list and not yet polled.
    pub(super) queued: AtomicBool,
    pub(super) wake: Arc<Wakeup>,
}

impl std::task::Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, AcqRel) {
            self.wake.push(self.slot);
        }
    }
}

pub(super) fn task_waker(slot: usize, wake: &Arc<Wakeup>) -> (Arc<TaskWaker>, Waker) {
    let waker = Arc::new(TaskWaker {
        slot,
        queued: AtomicBool::new(false),
        wake: wake.clone(),
    });
    (waker.clone(), Waker::from(waker))
}
