//! [`Run`]: what the scope future owns besides the body (the started and
//! waiting tasks, the outcomes, the joiner), and its steps.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Release, SeqCst};
use std::task::{self, Poll, Waker};

use slab::Slab;

use super::grace::Grace;
use super::wake::task_waker;
use super::{BODY, BUFFER_KEPT, BoxTask, CANCEL, PolledTask, ScopeShared, TaskKind, TaskWaker};
use crate::context::cancellation;
use crate::group::panics::{JoinerPanicked, drop_catching, panic_message};
use crate::group::{Decision, Joiner, Outcome, TaskId, Unread};
use crate::{Cause, ContextError, TaskFailed};

/// A started task.
pub(super) struct Running<'env, T: 'env, E: 'env, K: TaskKind> {
    pub(super) id: TaskId,
    pub(super) fut: BoxTask<'env, T, E, K>,
}

/// What the scope future owns besides the body: the started and waiting
/// tasks, the outcomes, the joiner.
pub(super) struct Run<'env, T, E, J, K: TaskKind> {
    pub(super) shared: Arc<ScopeShared<'env, T, E, K>>,
    pub(super) name: Option<Arc<str>>,
    /// `None` once finished, or once its `on_complete` panicked.
    pub(super) joiner: Option<J>,
    /// Started tasks; a task's key is its slot, the index of its waker.
    pub(super) tasks: Slab<Running<'env, T, E, K>>,
    pub(super) wakers: Vec<(Arc<TaskWaker>, Waker)>,
    pub(super) body_waker: (Arc<TaskWaker>, Waker),
    /// Spawned, taken from `spawned`, not started (the limit, or the
    /// turn ran out).
    pub(super) waiting: VecDeque<(TaskId, BoxTask<'env, T, E, K>)>,
    /// Slots to poll in this turn.
    pub(super) ready: VecDeque<usize>,
    pub(super) body_ready: bool,
    /// The body has been polled: only then does a grace hold for it.
    pub(super) body_started: bool,
    /// Emptied buffers, kept for the next swap.
    pub(super) spare_spawned: VecDeque<(TaskId, BoxTask<'env, T, E, K>)>,
    pub(super) spare_ready: Vec<usize>,
    /// Ended tasks, in completion order.
    pub(super) done: VecDeque<(TaskId, Outcome<T, E>)>,
    pub(super) cancelled_by: Option<TaskId>,
    pub(super) late_ok: bool,
    /// The body's panic, or the joiner's: re-raised once every task has
    /// been dropped.
    pub(super) panic: Option<Box<dyn Any + Send>>,
    pub(super) finished: bool,
    /// The builder's grace, started at the cancel (invariant 4).
    pub(super) grace: Grace,
}

impl<'env, T: 'env, E: 'env, J, K> Run<'env, T, E, J, K>
where
    J: Joiner<T, E>,
    K: TaskKind,
{
    /// Moves what the wakers queued into this round.
    pub(super) fn take_woken(&mut self) {
        let mut woken = std::mem::take(&mut self.spare_ready);
        std::mem::swap(&mut woken, &mut self.shared.wake.state().ready);
        for slot in woken.drain(..) {
            if slot == BODY {
                self.body_ready = true;
            } else if slot != CANCEL {
                // A cancel is seen by the loop's look at the context.
                self.ready.push_back(slot);
            }
        }
        if woken.capacity() <= BUFFER_KEPT {
            self.spare_ready = woken;
        }
    }

    /// Takes the spawned tasks into `waiting`, or ends them unstarted in
    /// a cancelled scope (invariants 2 and 4).
    pub(super) fn take_spawned(&mut self) {
        let mut spawned = std::mem::take(&mut self.spare_spawned);
        {
            let mut shared = self.shared.spawned();
            if shared.tasks.is_empty() {
                self.spare_spawned = spawned;
                return;
            }
            std::mem::swap(&mut spawned, &mut shared.tasks);
        }
        if self.shared.ctx.is_cancelled() {
            for (id, fut) in spawned.drain(..) {
                self.unstarted(id, fut);
            }
        } else if self.waiting.is_empty() {
            // The common case, a burst of spawns: no copy.
            std::mem::swap(&mut spawned, &mut self.waiting);
        } else {
            self.waiting.extend(spawned.drain(..));
        }
        if spawned.capacity() <= BUFFER_KEPT {
            self.spare_spawned = spawned;
        }
    }

    /// Whether the first waiting task may start now.
    pub(super) fn may_start(&self) -> bool {
        !self.waiting.is_empty() && self.limit_has_room() && !self.shared.ctx.is_cancelled()
    }

    fn limit_has_room(&self) -> bool {
        self.shared
            .limit
            .is_none_or(|limit| self.tasks.len() < limit)
    }

    /// Starts a task in a slot of its own, with that slot's waker.
    pub(super) fn insert(&mut self, id: TaskId, fut: BoxTask<'env, T, E, K>) -> usize {
        let slot = self.tasks.insert(Running { id, fut });
        if slot == self.wakers.len() {
            self.wakers.push(task_waker(slot, &self.shared.wake));
        }
        slot
    }

    pub(super) fn poll_body<Fut: Future<Output = ()>>(&mut self, mut body: Pin<&mut Option<Fut>>) {
        let Some(fut) = body.as_mut().as_pin_mut() else {
            return;
        };
        let mut cx = task::Context::from_waker(&self.body_waker.1);
        self.body_started = true;
        match catch_unwind(AssertUnwindSafe(|| fut.poll(&mut cx))) {
            Ok(Poll::Pending) => {}
            Ok(Poll::Ready(())) => {
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| body.set(None))) {
                    self.body_panicked(payload);
                }
            }
            Err(payload) => {
                let _ = catch_unwind(AssertUnwindSafe(|| body.set(None)));
                self.body_panicked(payload);
            }
        }
    }

    /// The body panicked (or its destructor did): the scope is cancelled,
    /// and the panic re-raised once every task has been dropped.
    fn body_panicked(&mut self, payload: Box<dyn Any + Send>) {
        let cause = Cause::new(BodyPanicked {
            message: panic_message(&*payload).to_owned(),
        });
        self.panic.get_or_insert(payload);
        self.cancel_with(cause);
    }

    /// Polls the task in `slot` once, if there is one (a stale wake-up
    /// finds none, or the slot's next task), and ends it if it is done.
    pub(super) fn poll_task(&mut self, slot: usize) {
        let Some(task) = self.tasks.get_mut(slot) else {
            return;
        };
        let (flag, waker) = &self.wakers[slot];
        flag.queued.store(false, Release);
        let mut cx = task::Context::from_waker(waker);
        let fut = task.fut.as_mut();
        let polled = PolledTask::enter(&self.shared);
        let poll = catch_unwind(AssertUnwindSafe(|| fut.poll(&mut cx)));
        drop(polled);
        let mut outcome = match poll {
            Ok(Poll::Pending) => return,
            Ok(Poll::Ready(result)) => Outcome::from_result(result),
            Err(payload) => Outcome::Panicked(payload),
        };
        let Running { id, fut } = self.tasks.remove(slot);
        // Dropped now, before its outcome counts: a panic in its
        // destructor is the task's (the first panic wins).
        if let Some(payload) = drop_catching(fut)
            && !outcome.is_panicked()
        {
            outcome = Outcome::Panicked(payload);
        }
        self.deliver(id, outcome);
    }

    /// Ends a task that never started (invariant 2).
    fn unstarted(&mut self, id: TaskId, fut: BoxTask<'env, T, E, K>) {
        let outcome = drop_catching(fut).map_or(Outcome::Cancelled, Outcome::Panicked);
        self.deliver(id, outcome);
    }

    /// Once the scope's context is cancelled: drops the body and every
    /// running task where it is parked, and ends every waiting one
    /// unstarted (invariants 2 and 4). With a grace, the body (if it has
    /// started) and the running tasks go on until the grace runs out; a
    /// body never polled is dropped at once, as nothing starts once the
    /// context is cancelled, and with nothing left running no grace
    /// starts.
    pub(super) fn stop_if_cancelled<Fut: Future<Output = ()>>(
        &mut self,
        mut body: Pin<&mut Option<Fut>>,
    ) {
        if !self.shared.ctx.is_cancelled() {
            return;
        }
        if !self.body_started
            && body.is_some()
            && let Err(payload) = catch_unwind(AssertUnwindSafe(|| body.set(None)))
        {
            self.body_panicked(payload);
        }
        let running = body.is_some() || !self.tasks.is_empty();
        if running && self.grace.holds() {
            // In the grace: waiting tasks never start, the body and the
            // running ones go on until it ends (invariant 4).
            while let Some((id, fut)) = self.waiting.pop_front() {
                self.unstarted(id, fut);
            }
            self.shared.wake_slot_waiters();
            return;
        }
        if body.is_some()
            && let Err(payload) = catch_unwind(AssertUnwindSafe(|| body.set(None)))
        {
            self.body_panicked(payload);
        }
        if !self.tasks.is_empty() {
            for (_, Running { id, fut }) in std::mem::take(&mut self.tasks) {
                let outcome = drop_catching(fut).map_or(Outcome::Cancelled, Outcome::Panicked);
                self.deliver(id, outcome);
            }
        }
        while let Some((id, fut)) = self.waiting.pop_front() {
            self.unstarted(id, fut);
        }
        self.ready.clear();
        self.shared.wake_slot_waiters();
    }

    /// Hands an ending to the joiner, records it, and applies the
    /// joiner's decision (invariants 2 and 5). A panic in the joiner
    /// cancels the scope and is kept for the end; the joiner is not asked
    /// again.
    fn deliver(&mut self, id: TaskId, outcome: Outcome<T, E>) {
        self.shared.live.fetch_sub(1, SeqCst);
        if self.shared.limit.is_some() {
            self.shared.wake_slot_waiters();
        }
        let ctx = &self.shared.ctx;
        let mut outcome = Some(outcome);
        let decision = match self.joiner.as_mut() {
            None => Decision::Continue,
            Some(joiner) => {
                // A scope has no `cancel_task`: no task is ever stopped.
                let asked = catch_unwind(AssertUnwindSafe(|| {
                    let seen = outcome.as_ref().expect("taken by `keep` only");
                    let decision = joiner.on_complete(id, seen, ctx);
                    let taken = outcome.take().expect("taken by `keep` only");
                    outcome = joiner.keep(id, taken, false);
                    decision
                }));
                match asked {
                    Ok(decision) => decision,
                    Err(payload) => {
                        let cause = Cause::new(JoinerPanicked {
                            task: id,
                            message: panic_message(&*payload).to_owned(),
                            of: "scope",
                        });
                        self.panic.get_or_insert(payload);
                        let _ = drop_catching(self.joiner.take());
                        Decision::Cancel(cause)
                    }
                }
            }
        };
        if let Some(outcome) = outcome {
            if outcome.is_ok() && self.shared.ctx.is_cancelled() {
                self.late_ok = true;
            }
            self.done.push_back((id, outcome));
        }
        if let Decision::Cancel(cause) = decision {
            if self.cancelled_by.is_none() && !self.shared.ctx.is_cancelled() {
                self.cancelled_by = Some(id);
                if !self.cancel_with(self.label(cause)) {
                    self.cancelled_by = None;
                }
            } else {
                let _ = drop_catching(cause);
            }
        }
    }

    /// Cancels the scope's context with `cause`; `true` if this did it. A
    /// panic from user code the cancel ran (a value's destructor) is kept
    /// for the end, like the body's.
    fn cancel_with(&mut self, cause: Cause) -> bool {
        let error = cancellation(ContextError::Cancelled, Some(cause));
        match catch_unwind(AssertUnwindSafe(|| self.shared.ctx.cancel_internal(error))) {
            Ok(won) => won,
            Err(payload) => {
                self.panic.get_or_insert(payload);
                true
            }
        }
    }

    /// A [`TaskFailed`] cause, as the built-in joiners make it, gets the
    /// scope's name.
    fn label(&self, cause: Cause) -> Cause {
        match (&self.name, cause.downcast_ref::<TaskFailed>()) {
            (Some(name), Some(failed)) if failed.group.is_none() => Cause::new(TaskFailed {
                group: Some(name.clone()),
                ..failed.clone()
            }),
            _ => cause,
        }
    }

    /// Every task has ended and the body is gone: re-raises a panic of
    /// the body or the joiner, or lets the joiner build the output. The
    /// context is cancelled either way, as `wait` does.
    pub(super) fn finish(&mut self) -> J::Output {
        self.finished = true;
        let panic = self.panic.take();
        let joiner = self.joiner.take();
        let unread = Unread::new(
            std::mem::take(&mut self.done),
            self.cancelled_by,
            self.late_ok,
            Vec::new(),
        );
        let ctx = self.shared.ctx.clone();
        let end = cancellation(ContextError::Cancelled, None);
        if let Some(payload) = panic {
            drop(unread);
            ctx.cancel_internal(end);
            resume_unwind(payload);
        }
        let Some(joiner) = joiner else {
            unreachable!("only `finish` takes the joiner, and only a panic drops it");
        };
        let output = joiner.finish(unread, &ctx);
        ctx.cancel_internal(end);
        output
    }
}

impl<'env, T, E, J, K: TaskKind> Drop for Run<'env, T, E, J, K> {
    /// The scope is over or its future was dropped: every task is dropped
    /// (after the body, which the future drops first), the handles'
    /// spawns are refused from now on, and the context is cancelled
    /// (invariant 1).
    fn drop(&mut self) {
        // The scope's waker (a tokio task's) is not kept by the wakers a
        // task left behind, and the cancel below does not wake it.
        self.shared.wake.state().waker = None;
        let ctx = &self.shared.ctx;
        ctx.cancel_internal(cancellation(ContextError::Cancelled, None));
        let spawned = {
            let mut spawned = self.shared.spawned();
            spawned.closed = true;
            std::mem::take(&mut spawned.tasks)
        };
        // Dropped here, outside the lock (user code); their panics have
        // nobody left to go to.
        for (_, fut) in spawned {
            let _ = drop_catching(fut);
        }
        for (_, task) in std::mem::take(&mut self.tasks) {
            let _ = drop_catching(task.fut);
        }
        for (_, fut) in std::mem::take(&mut self.waiting) {
            let _ = drop_catching(fut);
        }
        self.shared.live.store(0, SeqCst);
        self.shared.wake_slot_waiters();
    }
}

/// The cause a scope is cancelled with when its body panicked.
#[derive(Debug)]
struct BodyPanicked {
    message: String,
}

impl fmt::Display for BodyPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the scope's body panicked: {}", self.message)
    }
}

impl std::error::Error for BodyPanicked {}
