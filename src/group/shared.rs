//! The state a task group shares with its tasks, and how a task starts and
//! finishes.
//!
//! # Invariants
//!
//! 1. Every task spawned ends in exactly one entry of `State::done`: pushed
//!    by [`Shared::complete`] (run to the end, or its [`Completion`] dropped
//!    unfinished), by [`Shared::record_unstarted`] for a task never started,
//!    or by [`Shared::discard`] for queued tasks, once their closures are
//!    dropped.
//! 2. `running` counts started task bodies not yet completed; `queue` holds
//!    closures waiting for a slot and is non-empty only while `running`
//!    fills the limit; `discarding` counts closures taken out to be
//!    dropped unstarted (queued ones, or ones spawned into a cancelled
//!    group). The group is joined when all three are zero/empty,
//!    so `wait` returns only after every task's user code is dropped.
//! 3. Nothing is queued or started once the group context is cancelled:
//!    `spawn` checks under the state lock, the hook empties the queue under
//!    it after the context's state is set, and a queued closure re-checks
//!    just before it is called (a blocking one on its pool thread, since the
//!    pool may start it long after).
//! 4. Every started task is stopped on cancel. An async task runs in the
//!    group's [`Runner`], which the hook cancels: it drops every task's
//!    future, whether queued, running or parked. A started blocking task's
//!    abort handle is stored in `tasks` (matched by task id, since keys are
//!    reused), or, if the group was cancelled first, aborted by the code
//!    that stores it: so the hook or `track` aborts it (which stops it only
//!    before its closure starts; after that it must poll its context).
//! 5. The first failure is pushed to `done` before the group is cancelled
//!    for it, and `cancelling` hides `done` from `next` until the cancel
//!    has returned: outcomes the cancel causes (queued tasks, siblings that
//!    noticed) always come after it, and a failure is never handed out
//!    before the group is cancelled. `running` keeps counting the failing
//!    task until then, so `wait` sees `first_failure` settled.
//!
//! # Lock order
//!
//! The state lock is never held while cancelling the context (whose hook
//! takes it), spawning, aborting, or running or dropping user code.

use std::any::Any;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{self, Poll};

use pin_project_lite::pin_project;
use slab::Slab;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::outcome::{Outcome, TaskId};
use super::runner::Runner;
use crate::context::{CancelHook, cancellation};
use crate::error::panic_message;
use crate::{Cause, Context, ContextError, TaskFailed};

pub(super) type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// A closure waiting for a slot.
pub(super) enum Work<T, E> {
    Async(Box<dyn FnOnce(Context) -> BoxFuture<T, E> + Send>),
    Blocking(Box<dyn FnOnce(Context) -> Result<T, E> + Send>),
}

/// A queued closure whose slot was just reserved: a blocking one with its
/// key in `tasks`.
enum Start<T, E> {
    Async(TaskId, Box<dyn FnOnce(Context) -> BoxFuture<T, E> + Send>),
    Blocking(
        TaskId,
        usize,
        Box<dyn FnOnce(Context) -> Result<T, E> + Send>,
    ),
}

pub(super) struct State<T, E> {
    pub(super) running: usize,
    pub(super) queue: VecDeque<(TaskId, Work<T, E>)>,
    /// Abort handles of started blocking tasks, `None` until spawned
    /// (invariant 4).
    tasks: Slab<(TaskId, Option<AbortHandle>)>,
    /// Queued closures being dropped unstarted (invariant 2).
    discarding: usize,
    /// Finished, not yet handed out, in completion order.
    pub(super) done: VecDeque<(TaskId, Outcome<T, E>)>,
    /// The task whose failure (error or panic) cancelled the group.
    pub(super) first_failure: Option<TaskId>,
    /// Tasks in `done` that returned `Ok` only after the group was
    /// cancelled (rare: they saw the cancel and wound down).
    pub(super) ok_after_cancel: Vec<TaskId>,
    /// The first failure is recorded and is cancelling the group: `done`
    /// is not handed out until it has (invariant 5).
    pub(super) cancelling: bool,
}

impl<T, E> State<T, E> {
    pub(super) fn outstanding(&self) -> usize {
        self.running + self.queue.len() + self.discarding
    }

    pub(super) fn is_joined(&self) -> bool {
        self.running == 0 && self.queue.is_empty() && self.discarding == 0
    }

    /// Takes every queued closure out to be dropped unstarted; they stay
    /// outstanding until [`Shared::discard`] records them.
    fn take_queue(&mut self) -> VecDeque<(TaskId, Work<T, E>)> {
        let queued = std::mem::take(&mut self.queue);
        self.discarding += queued.len();
        queued
    }

    /// The next finished task to hand out, unless a failure is still
    /// cancelling the group.
    pub(super) fn pop_done(&mut self) -> Option<(TaskId, Outcome<T, E>)> {
        if self.cancelling {
            return None;
        }
        let (id, outcome) = self.done.pop_front()?;
        if !self.ok_after_cancel.is_empty() {
            self.ok_after_cancel.retain(|&late| late != id);
        }
        Some((id, outcome))
    }

    /// Takes a slot for an async task about to start.
    pub(super) fn reserve(&mut self) {
        self.running += 1;
    }

    /// Takes a slot for a blocking task about to start; returns its key in
    /// `tasks`.
    pub(super) fn reserve_blocking(&mut self, id: TaskId) -> usize {
        self.running += 1;
        self.tasks.insert((id, None))
    }
}

pub(super) struct Shared<T, E> {
    pub(super) ctx: Context,
    pub(super) name: Option<Arc<str>>,
    pub(super) limit: Option<usize>,
    /// Runs the async tasks.
    runner: Arc<Runner>,
    state: Mutex<State<T, E>>,
    /// A task finished (or the group was cancelled): for `next` and `wait`.
    pub(super) progress: Notify,
    /// A slot freed up (or the group was cancelled): for `ready`.
    pub(super) slot_freed: Notify,
}

impl<T, E> Shared<T, E>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    pub(super) fn new(parent: &Context, name: Option<Arc<str>>, limit: Option<usize>) -> Arc<Self> {
        Arc::new_cyclic(|me: &std::sync::Weak<Self>| {
            let hook: std::sync::Weak<dyn CancelHook> = me.clone();
            Shared {
                ctx: parent.with_hook(hook),
                name,
                limit,
                runner: Runner::new(),
                state: Mutex::new(State {
                    running: 0,
                    queue: VecDeque::new(),
                    tasks: Slab::new(),
                    discarding: 0,
                    done: VecDeque::new(),
                    first_failure: None,
                    cancelling: false,
                    ok_after_cancel: Vec::new(),
                }),
                progress: Notify::new(),
                slot_freed: Notify::new(),
            }
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State<T, E>> {
        // User code never runs under this lock, so poison carries no meaning.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the limit leaves room for one more task now.
    pub(super) fn has_room(&self, state: &State<T, E>) -> bool {
        self.limit.is_none_or(|limit| state.outstanding() < limit)
    }

    /// Records a task that will never start (the group was cancelled): drops
    /// its closure `f` without the state lock (user code), and records it as
    /// cancelled, or as panicked if the closure's destructor panics, as
    /// [`Shared::discard`] does for queued ones (invariants 1 and 2).
    pub(super) fn record_unstarted<X>(
        &self,
        mut state: MutexGuard<'_, State<T, E>>,
        id: TaskId,
        f: X,
    ) {
        state.discarding += 1;
        drop(state);
        let outcome = drop_catching(f).map_or(Outcome::Cancelled, Outcome::Panicked);
        let mut state = self.lock();
        state.discarding -= 1;
        state.done.push_back((id, outcome));
        drop(state);
        self.progress.notify_one();
    }

    /// Whether the caller is one of this group's started tasks: polled by
    /// its runner, or a blocking task of it.
    pub(super) fn runs_caller(&self, state: &State<T, E>) -> bool {
        if self.runner.is_running_here() {
            return true;
        }
        let Some(me) = tokio::task::try_id() else {
            return false;
        };
        state
            .tasks
            .iter()
            .any(|(_, (_, handle))| handle.as_ref().is_some_and(|h| h.id() == me))
    }

    /// Calls `f` for its future and hands that to the group's runner.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, with tokio's message, unless an earlier
    /// task bound the group to one; the task is then recorded as
    /// cancelled.
    #[track_caller]
    pub(super) fn start_async<F, Fut>(self: &Arc<Self>, id: TaskId, f: F)
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let completion = Completion::new(self, id, None);
        self.runner.bind();
        // Invariant 3: the last look before user code runs.
        if self.ctx.is_cancelled() {
            // Dropped before `completion` reports the task cancelled.
            if let Some(payload) = drop_catching(f) {
                completion.finish(Outcome::Panicked(payload));
            }
            return;
        }
        let ctx = self.ctx.clone();
        let fut = match catch_unwind(AssertUnwindSafe(move || f(ctx))) {
            Ok(fut) => fut,
            Err(payload) => return completion.finish(Outcome::Panicked(payload)),
        };
        let body = Box::pin(TaskFuture {
            fut: Some(fut),
            completion: Some(completion),
        });
        self.runner.spawn(body);
    }

    /// Runs `f` on tokio's blocking pool.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::task::spawn_blocking` does.
    #[track_caller]
    pub(super) fn start_blocking<F>(self: &Arc<Self>, id: TaskId, key: usize, f: F)
    where
        F: FnOnce(Context) -> Result<T, E> + Send + 'static,
    {
        let completion = Completion::new(self, id, Some(key));
        if self.ctx.is_cancelled() {
            if let Some(payload) = drop_catching(f) {
                completion.finish(Outcome::Panicked(payload));
            }
            return;
        }
        let ctx = self.ctx.clone();
        let task = tokio::task::spawn_blocking(move || {
            // Invariant 3: the pool may run this long after the look above,
            // and an abort stops it only until it has started.
            if ctx.is_cancelled() {
                if let Some(payload) = drop_catching(f) {
                    completion.finish(Outcome::Panicked(payload));
                }
                return; // `completion` reports it cancelled
            }
            let outcome = match catch_unwind(AssertUnwindSafe(move || f(ctx))) {
                Ok(result) => Outcome::from_result(result),
                Err(payload) => Outcome::Panicked(payload),
            };
            completion.finish(outcome);
        });
        self.track(key, id, task.abort_handle());
    }

    /// Invariant 4: stores a started blocking task's abort handle, or
    /// aborts the task if the group was cancelled before the handle could be
    /// stored.
    fn track(&self, key: usize, id: TaskId, handle: AbortHandle) {
        let mut state = self.lock();
        match state.tasks.get_mut(key) {
            Some((owner, slot)) if *owner == id => *slot = Some(handle.clone()),
            // Already finished: its entry is gone (and maybe reused).
            _ => return,
        }
        drop(state);
        if self.ctx.is_cancelled() {
            handle.abort();
        }
    }

    /// Records how a started task ended, frees its slot, and starts the next
    /// queued closure if the group is still live.
    ///
    /// `ran` is `false` when the task was dropped before finishing (aborted,
    /// or its runtime shut down): then nothing new is started, and what is
    /// queued is recorded as cancelled, so nothing waits on a runtime that is
    /// going away.
    ///
    /// The first failure is recorded before it cancels the group, and holds
    /// `cancelling` until the cancel is done (invariant 5): so it comes out
    /// of `next` before anything the cancel caused, and only once the group
    /// is cancelled. Its slot is released only after the cancel, so a queued
    /// closure can never take it.
    fn complete(
        self: &Arc<Self>,
        id: TaskId,
        key: Option<usize>,
        outcome: Outcome<T, E>,
        ran: bool,
    ) {
        // Described before taking the lock: `Display` is user code. Only a
        // failure while the group is live can be the first.
        let failure = if self.ctx.is_cancelled() {
            None
        } else {
            match &outcome {
                Outcome::Err(error) => Some((false, describe(error))),
                Outcome::Panicked(payload) => Some((true, panic_message(&**payload).to_owned())),
                Outcome::Ok(_) | Outcome::Cancelled => None,
            }
        };
        let mut state = self.lock();
        if let Some(key) = key {
            state.tasks.try_remove(key);
        }
        let mut cause = None;
        if let Some((panic, message)) = failure
            && state.first_failure.is_none()
            && !self.ctx.is_cancelled()
        {
            cause = Some(TaskFailed {
                task: id,
                group: self.name.clone(),
                panic,
                message,
            });
            state.first_failure = Some(id);
            state.cancelling = true;
        }
        // A task that returns `Ok` after the group was cancelled (it saw the
        // cancel and wound down) did not finish before it.
        if outcome.is_ok() && self.ctx.is_cancelled() {
            state.ok_after_cancel.push(id);
        }
        state.done.push_back((id, outcome));

        let mut escaped = None;
        if let Some(cause) = cause {
            drop(state);
            let error = cancellation(ContextError::Cancelled, Some(Cause::new(cause)));
            // The cancel finishes every node, then resumes a panic from user
            // code it ran (a value's destructor): finish the bookkeeping
            // first, or `wait` and `next` would wait for this task forever.
            let won = match catch_unwind(AssertUnwindSafe(|| self.ctx.cancel_internal(error))) {
                Ok(won) => won,
                Err(payload) => {
                    escaped = Some(payload);
                    true
                }
            };
            state = self.lock();
            state.cancelling = false;
            if !won {
                // Cancelled from outside first: this failure came after it.
                state.first_failure = None;
            }
        }

        state.running -= 1;
        let mut next = None;
        let mut unstarted = VecDeque::new();
        if ran && !self.ctx.is_cancelled() {
            next = state.queue.pop_front().map(|(id, work)| match work {
                Work::Async(f) => {
                    state.reserve();
                    Start::Async(id, f)
                }
                Work::Blocking(f) => Start::Blocking(id, state.reserve_blocking(id), f),
            });
        } else {
            unstarted = state.take_queue();
        }
        drop(state);

        self.progress.notify_one();
        if self.limit.is_some() {
            // Only `ready` waits for a slot, and without a limit it never
            // waits.
            self.slot_freed.notify_one();
        }
        self.discard(unstarted);
        match next {
            Some(Start::Async(id, f)) => self.start_async(id, f),
            Some(Start::Blocking(id, key, f)) => self.start_blocking(id, key, f),
            None => {}
        }
        if let Some(payload) = escaped {
            std::panic::resume_unwind(payload);
        }
    }
}

impl<T, E> CancelHook for Shared<T, E>
where
    T: Send + 'static,
    E: Send + 'static,
{
    /// Aborts every running task and records the queued ones as cancelled.
    fn on_cancel(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let blocking: Vec<AbortHandle> = state
            .tasks
            .iter()
            .filter_map(|(_, (_, handle))| handle.clone())
            .collect();
        let queued = state.take_queue();
        drop(state);
        self.runner.cancel();
        for task in blocking {
            task.abort();
        }
        // Every producer waiting in `ready` returns now, not only one.
        self.slot_freed.notify_waiters();
        self.discard(queued);
        self.progress.notify_one();
    }
}

impl<T, E> Shared<T, E> {
    /// Drops queued closures taken out by [`State::take_queue`], then
    /// records them as cancelled, or as panicked if a closure's destructor
    /// panics (invariants 1 and 2). Called without the state lock: dropping
    /// a closure runs user code, whose panic must not escape into the
    /// canceller and leave the group unjoinable.
    fn discard(&self, queued: VecDeque<(TaskId, Work<T, E>)>) {
        if queued.is_empty() {
            return;
        }
        let count = queued.len();
        let finished: Vec<(TaskId, Outcome<T, E>)> = queued
            .into_iter()
            .map(|(id, work)| {
                let outcome = drop_catching(work).map_or(Outcome::Cancelled, Outcome::Panicked);
                (id, outcome)
            })
            .collect();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.discarding -= count;
        state.done.extend(finished);
        drop(state);
        self.progress.notify_one();
    }
}

/// Drops `value` (user code), catching a panic in its destructor.
fn drop_catching<X>(value: X) -> Option<Box<dyn Any + Send>> {
    catch_unwind(AssertUnwindSafe(move || drop(value))).err()
}

/// A task error's `Display`, or a placeholder if that panics: the group's
/// bookkeeping must survive any user code.
fn describe<E: std::fmt::Display>(error: &E) -> String {
    catch_unwind(AssertUnwindSafe(|| error.to_string()))
        .unwrap_or_else(|_| "<the error's Display panicked>".to_owned())
}

/// Owned by a started task: reports its outcome exactly once, when it
/// finishes or, if it is dropped unfinished, as cancelled.
struct Completion<T, E>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    shared: Arc<Shared<T, E>>,
    id: TaskId,
    /// Its entry in `tasks`, for a blocking task.
    key: Option<usize>,
    finished: bool,
}

impl<T, E> Completion<T, E>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    fn new(shared: &Arc<Shared<T, E>>, id: TaskId, key: Option<usize>) -> Self {
        Completion {
            shared: shared.clone(),
            id,
            key,
            finished: false,
        }
    }

    fn finish(mut self, outcome: Outcome<T, E>) {
        self.finished = true;
        self.shared.complete(self.id, self.key, outcome, true);
    }

    /// Reports a task dropped before it finished, as `Drop` does, but with
    /// an outcome: the panic of the task future's destructor.
    fn abandon(mut self, outcome: Outcome<T, E>) {
        self.finished = true;
        self.shared.complete(self.id, self.key, outcome, false);
    }
}

pin_project! {
    /// What a started async task runs: the user's future, polled and
    /// dropped inside `catch_unwind`, then its [`Completion`]. Its
    /// destructor runs when it completes, or when tokio drops the task
    /// (aborted by a cancel, or its runtime shutting down): either way a
    /// panic there is the task's panic, reported by the group, never a
    /// panic tokio swallows while the task reads as cancelled.
    struct TaskFuture<Fut, T, E>
    where
        T: Send,
        T: 'static,
        E: std::fmt::Display,
        E: Send,
        E: 'static,
    {
        #[pin]
        fut: Option<Fut>,
        completion: Option<Completion<T, E>>,
    }

    impl<Fut, T, E> PinnedDrop for TaskFuture<Fut, T, E>
    where
        T: Send,
        T: 'static,
        E: std::fmt::Display,
        E: Send,
        E: 'static,
    {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            // Dropped unfinished: the user's future first, so that its
            // code is gone before the group counts the task as done.
            let dropped = catch_unwind(AssertUnwindSafe(|| this.fut.set(None)));
            if let Some(completion) = this.completion.take() {
                match dropped {
                    Ok(()) => drop(completion), // reports it cancelled
                    Err(payload) => completion.abandon(Outcome::Panicked(payload)),
                }
            }
        }
    }
}

impl<Fut, T, E> Future for TaskFuture<Fut, T, E>
where
    Fut: Future<Output = Result<T, E>>,
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let Some(fut) = this.fut.as_mut().as_pin_mut() else {
            return Poll::Ready(());
        };
        let mut outcome = match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(result)) => Outcome::from_result(result),
            Err(payload) => Outcome::Panicked(payload),
        };
        // Drop the user's future now, before reporting: a panic in its
        // destructor is the task's panic (the first one wins).
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| this.fut.set(None)))
            && !outcome.is_panicked()
        {
            outcome = Outcome::Panicked(payload);
        }
        if let Some(completion) = this.completion.take() {
            completion.finish(outcome);
        }
        Poll::Ready(())
    }
}

impl<T, E> Drop for Completion<T, E>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    fn drop(&mut self) {
        if !self.finished {
            self.shared
                .complete(self.id, self.key, Outcome::Cancelled, false);
        }
    }
}
