//! [`RunFuture`]: the future that runs a scope's body and tasks, for
//! either kind of task, its poll loop, and [`start`], which builds a scope.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::Ordering::{Release, SeqCst};
use std::sync::{Arc, Weak};
use std::task::{self, Poll};

use pin_project_lite::pin_project;
use slab::Slab;

use super::grace::Grace;
use super::handle::Core;
use super::run::Run;
use super::shared::Incoming;
use super::wake::{WakeState, task_waker};
use super::{BODY, SCOPE_TURN, ScopeShared, TaskKind, Wakeup};
#[cfg(doc)]
use super::{LocalScopeFuture, ScopeFuture};
use crate::Context;
use crate::context::CancelHook;
use crate::group::{BuilderParts, Joiner};
use crate::loom::{AtomicBool, AtomicUsize, Mutex};

pin_project! {
    /// The future of a scope of either kind, which [`ScopeFuture`] and
    /// [`LocalScopeFuture`] wrap: the body, and the [`Run`] that polls the
    /// tasks beside it.
    pub(super) struct RunFuture<'env, T, E, J, K, Fut>
    where
        T: 'env,
        E: 'env,
        K: TaskKind,
    {
        #[pin]
        body: Option<Fut>,
        run: Run<'env, T, E, J, K>,
    }
}

/// Builds a scope from a builder's settings: its context (a child of the
/// builder's, or of the background), its handle, and the body's future,
/// by calling `body` with the handle at once (an async block or closure
/// does nothing until polled).
pub(super) fn start<'env, T, E, J, K, F, Fut>(
    parts: BuilderParts<J>,
    body: F,
) -> RunFuture<'env, T, E, J, K, Fut>
where
    T: 'env,
    E: 'env,
    J: Joiner<T, E>,
    K: TaskKind,
    F: FnOnce(Core<'env, T, E, J, K>) -> Fut,
    Fut: Future<Output = ()> + 'env,
{
    let wake = Arc::new(Wakeup {
        polling: AtomicBool::new(false),
        state: Mutex::new(WakeState {
            waker: None,
            ready: Vec::new(),
        }),
    });
    let hook: Weak<dyn CancelHook> = Arc::downgrade(&wake) as Weak<dyn CancelHook>;
    let BuilderParts {
        limit,
        name,
        context,
        grace,
        joiner,
    } = parts;
    let ctx = context.unwrap_or_else(Context::background).with_hook(hook);
    let shared = Arc::new(ScopeShared {
        ctx,
        limit,
        live: AtomicUsize::new(0),
        slot_wanted: AtomicBool::new(false),
        spawned: Mutex::new(Incoming {
            tasks: VecDeque::new(),
            next_id: 0,
            closed: false,
            slot_waiters: Vec::new(),
        }),
        wake: wake.clone(),
    });
    let handle = Core {
        shared: shared.clone(),
        _joiner: PhantomData,
    };
    let body = body(handle);
    RunFuture {
        body: Some(body),
        run: Run {
            shared,
            name,
            joiner: Some(joiner),
            tasks: Slab::new(),
            wakers: Vec::new(),
            body_waker: task_waker(BODY, &wake),
            waiting: VecDeque::new(),
            ready: VecDeque::new(),
            body_ready: true,
            body_started: false,
            spare_spawned: VecDeque::new(),
            spare_ready: Vec::new(),
            done: VecDeque::new(),
            cancelled_by: None,
            late_ok: false,
            panic: None,
            finished: false,
            grace: Grace::new(grace),
        },
    }
}

impl<'env, T, E, J, K, Fut> Future for RunFuture<'env, T, E, J, K, Fut>
where
    T: 'env,
    E: 'env,
    J: Joiner<T, E>,
    K: TaskKind,
    Fut: Future<Output = ()> + 'env,
{
    type Output = J::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<J::Output> {
        let this = self.project();
        let run = this.run;
        let mut body = this.body;
        assert!(!run.finished, "a scope's future polled after completion");
        let wake = run.shared.wake.clone();
        wake.polling.store(true, SeqCst);
        {
            let mut state = wake.state();
            match &state.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => state.waker = Some(cx.waker().clone()),
            }
        }
        let mut polled = 0;
        loop {
            run.take_woken();
            // Invariant 4: a grace that ran out, or a cancel, is seen
            // before anything else is polled.
            run.grace.poll_end(cx);
            run.stop_if_cancelled(body.as_mut());
            if run.body_ready && body.is_some() {
                run.body_ready = false;
                run.body_waker.0.queued.store(false, Release);
                run.poll_body(body.as_mut());
                polled += 1;
                run.stop_if_cancelled(body.as_mut());
            }
            run.take_spawned();
            // Start what may start, each polled at once (so a task that
            // ends in its first poll hands its slot, and its waker, to the
            // next), then the tasks woken before this round, each once.
            let mut budget_left = polled < SCOPE_TURN;
            while budget_left && run.may_start() {
                let Some((id, fut)) = run.waiting.pop_front() else {
                    break;
                };
                let slot = run.insert(id, fut);
                run.poll_task(slot);
                polled += 1;
                budget_left = polled < SCOPE_TURN && tokio::task::coop::has_budget_remaining();
                run.stop_if_cancelled(body.as_mut());
            }
            while budget_left {
                let Some(slot) = run.ready.pop_front() else {
                    break;
                };
                run.poll_task(slot);
                polled += 1;
                budget_left = polled < SCOPE_TURN && tokio::task::coop::has_budget_remaining();
                run.stop_if_cancelled(body.as_mut());
            }
            if !budget_left {
                // Yield to the runtime; the rest waits for the next poll.
                wake.polling.store(false, SeqCst);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if body.is_none() && run.tasks.is_empty() && run.waiting.is_empty() {
                let closed = {
                    let mut spawned = run.shared.spawned();
                    if spawned.tasks.is_empty() {
                        spawned.closed = true;
                    }
                    spawned.closed
                };
                if closed {
                    let output = run.finish();
                    wake.polling.store(false, SeqCst);
                    return Poll::Ready(output);
                }
                continue;
            }
            if run.may_start() {
                continue;
            }
            // A grace started in this round has its timer polled here, so
            // its end wakes this future; one that just ran out stops the
            // tasks before the future sleeps.
            if run.grace.poll_end(cx) {
                continue;
            }
            // Invariant 3: the last look, with `polling` cleared.
            wake.polling.store(false, SeqCst);
            let woken = !wake.state().ready.is_empty();
            let spawned = !run.shared.spawned().tasks.is_empty();
            if !woken && !spawned {
                return Poll::Pending;
            }
            wake.polling.store(true, SeqCst);
        }
    }
}

impl<T, E, J, K: TaskKind, Fut> RunFuture<'_, T, E, J, K, Fut> {
    /// The future's `Debug`, under the public type's name.
    pub(super) fn debug(&self, f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
        f.debug_struct(name)
            .field("name", &self.run.name)
            .field("limit", &self.run.shared.limit)
            .field("running", &self.run.tasks.len())
            .field("waiting", &self.run.waiting.len())
            .field("body_done", &self.body.is_none())
            .field("cancelled", &self.run.shared.ctx.is_cancelled())
            .finish_non_exhaustive()
    }
}
