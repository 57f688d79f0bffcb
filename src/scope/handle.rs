//! [`Core`]: what [`Scope`] and [`LocalScope`] are made of, for both
//! kinds of task: the context, the cancel, the count, the wait for room,
//! and the push of a spawned task (invariants 1, 3 and 5 of `mod.rs`).

use std::fmt;
use std::future::poll_fn;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::task::Poll;

use super::{BoxTask, PolledTask, ScopeShared, TaskKind};
#[cfg(doc)]
use super::{LocalScope, Scope};
use crate::context::cancellation;
use crate::group::TaskId;
use crate::{Context, ContextError};

/// The handle's state, generic over the kind of task. The public handles
/// wrap it, one per kind, and add `spawn` and `try_spawn` with the
/// kind's bounds.
pub(super) struct Core<'env, T, E, J, K: TaskKind> {
    pub(super) shared: Arc<ScopeShared<'env, T, E, K>>,
    pub(super) _joiner: PhantomData<fn() -> J>,
}

impl<'env, T: 'env, E: 'env, J, K: TaskKind> Core<'env, T, E, J, K> {
    /// The scope's context.
    pub(super) fn context(&self) -> &Context {
        &self.shared.ctx
    }

    /// Cancels the scope's context, from outside any task.
    pub(super) fn cancel(&self) {
        self.shared
            .ctx
            .cancel_internal(cancellation(ContextError::Cancelled, None));
    }

    /// Tasks spawned and not yet ended (invariant 5).
    pub(super) fn len(&self) -> usize {
        self.shared.live.load(SeqCst)
    }

    /// Waits for room under the limit, or the scope's cancel or end.
    pub(super) async fn ready(&self) {
        let Some(limit) = self.shared.limit else {
            return;
        };
        let room = |shared: &ScopeShared<'env, T, E, K>| {
            shared.live.load(SeqCst) < limit || shared.ctx.is_cancelled()
        };
        poll_fn(|cx| {
            if room(&self.shared) {
                return Poll::Ready(());
            }
            assert!(
                !(limit == 1 && PolledTask::is(&self.shared)),
                "{}::ready called from the scope's own task that holds its only \
                 slot (limit 1): it would wait for itself forever",
                K::HANDLE
            );
            {
                let mut spawned = self.shared.spawned();
                if spawned.closed {
                    return Poll::Ready(());
                }
                if !spawned.slot_waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    spawned.slot_waiters.push(cx.waker().clone());
                }
                self.shared.slot_wanted.store(true, SeqCst);
            }
            // A slot freed before the flag was up: seen here.
            if room(&self.shared) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    /// Queues a task (invariants 1, 3 and 5), boxed by `boxed` under the
    /// lock once it is admitted; `Err(f)` when `at_limit_fails` and the
    /// scope is full, cancelled or over.
    pub(super) fn push<F>(
        &self,
        f: F,
        at_limit_fails: bool,
        boxed: impl FnOnce(F, Context) -> BoxTask<'env, T, E, K>,
    ) -> Result<TaskId, F> {
        let shared = &*self.shared;
        let mut spawned = shared.spawned();
        if at_limit_fails {
            let full = shared
                .limit
                .is_some_and(|limit| shared.live.load(SeqCst) >= limit);
            if spawned.closed || full || shared.ctx.is_cancelled() {
                return Err(f);
            }
        }
        let id = TaskId(spawned.next_id);
        spawned.next_id += 1;
        if spawned.closed {
            // The scope is over: never started, and nobody is left to
            // tell (invariant 1). Dropped outside the lock (user code).
            drop(spawned);
            drop(f);
            return Ok(id);
        }
        // Boxing runs no user code: `f` is only moved.
        let task = boxed(f, shared.ctx.clone());
        shared.live.fetch_add(1, SeqCst);
        spawned.tasks.push_back((id, task));
        drop(spawned);
        if !shared.wake.polling.load(SeqCst) {
            shared.wake.notify();
        }
        Ok(id)
    }
}

impl<T, E, J, K: TaskKind> Clone for Core<'_, T, E, J, K> {
    fn clone(&self) -> Self {
        Core {
            shared: self.shared.clone(),
            _joiner: PhantomData,
        }
    }
}

impl<T, E, J, K: TaskKind> Core<'_, T, E, J, K> {
    /// The handle's `Debug`, under the public type's name.
    pub(super) fn debug(&self, f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
        f.debug_struct(name)
            .field("len", &self.shared.live.load(SeqCst))
            .field("limit", &self.shared.limit)
            .field("cancelled", &self.shared.ctx.is_cancelled())
            .finish_non_exhaustive()
    }
}
