//! [`ScopeShared`]: what the scope future and every handle share.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, PoisonError};
use std::task::Waker;

use super::{BoxTask, TaskKind, Wakeup};
use crate::Context;
use crate::group::TaskId;
use crate::loom::{AtomicBool, AtomicUsize, Mutex, MutexGuard};

/// What the scope future and every [`Scope`] handle share.
pub(super) struct ScopeShared<'env, T, E, K: TaskKind> {
    /// The scope's context: a child of the parent, cancelled by the
    /// joiner's decisions, [`Scope::cancel`], and the end of the scope.
    pub(super) ctx: Context,
    pub(super) limit: Option<usize>,
    /// Invariant 5.
    pub(super) live: AtomicUsize,
    /// Someone waits in [`Scope::ready`] for a slot.
    pub(super) slot_wanted: AtomicBool,
    pub(super) spawned: Mutex<Incoming<'env, T, E, K>>,
    pub(super) wake: Arc<Wakeup>,
}

/// Tasks spawned and not yet taken by the scope future.
pub(super) struct Incoming<'env, T: 'env, E: 'env, K: TaskKind> {
    pub(super) tasks: VecDeque<(TaskId, BoxTask<'env, T, E, K>)>,
    pub(super) next_id: u64,
    /// The scope ended, or its future was dropped (invariant 1).
    pub(super) closed: bool,
    /// [`Scope::ready`] callers waiting for a slot.
    pub(super) slot_waiters: Vec<Waker>,
}

impl<'env, T, E, K: TaskKind> ScopeShared<'env, T, E, K> {
    pub(super) fn spawned(&self) -> MutexGuard<'_, Incoming<'env, T, E, K>> {
        // No user code runs under this lock: poison means nothing.
        self.spawned.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn wake_slot_waiters(&self) {
        if !self.slot_wanted.load(SeqCst) {
            return;
        }
        let waiters = {
            let mut spawned = self.spawned();
            self.slot_wanted.store(false, SeqCst);
            std::mem::take(&mut spawned.slot_waiters)
        };
        for waker in waiters {
            waker.wake();
        }
    }
}

/// Marks the thread as polling a task of a scope (by the address of its
/// shared state), until dropped: how [`Scope::ready`] knows its caller
/// holds a slot.
pub(super) struct PolledTask {
    outer: usize,
}

thread_local! {
    static POLLED_TASK: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl PolledTask {
    pub(super) fn enter<S>(shared: &Arc<S>) -> PolledTask {
        let me = Arc::as_ptr(shared).cast::<()>() as usize;
        PolledTask {
            outer: POLLED_TASK.with(|polled| polled.replace(me)),
        }
    }

    /// Whether the caller is a task of the scope `shared` is the state of.
    pub(super) fn is<S>(shared: &Arc<S>) -> bool {
        let me = Arc::as_ptr(shared).cast::<()>() as usize;
        POLLED_TASK.with(|polled| polled.get() == me)
    }
}

impl Drop for PolledTask {
    fn drop(&mut self) {
        POLLED_TASK.with(|polled| polled.set(self.outer));
    }
}
