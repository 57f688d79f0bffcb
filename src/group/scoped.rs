//! Scoped groups: [`scope`], [`scope_local`] and their [`Scope`] handle.
//! Tasks that borrow from the caller, polled inside the scope's own future
//! (moro's design), with the group's joiners and outcomes.
//!
//! Nothing here is a tokio task. The [`ScopeFuture`] owns the body and
//! every started task and polls them itself, in its own `poll`, with a
//! waker of its own for each (a slot's [`TaskWaker`], made once per slot
//! and reused). A spawned task waits in [`ScopeShared::spawned`] until the
//! scope future takes it; behind the limit it waits in `Run::waiting`,
//! unpolled (its closure is not called before its first poll).
//!
//! The same code serves both kinds of task: [`TaskKind`] only names the
//! boxed future (`dyn Future + Send` or `dyn Future`), and `spawn` has one
//! thin entry point per kind that boxes and calls [`Scope::push`].
//!
//! # Invariants
//!
//! 1. Only the scope future polls or drops a started task or the body,
//!    and only inside its own `poll` or `drop`. Nothing else can: a task
//!    is owned by `Run` once taken from `spawned`, and `spawned` is
//!    emptied and `closed` once the scope ends or its future is dropped;
//!    a task spawned after that is dropped at once, unpolled. So a task
//!    never runs after the scope future is gone, and forgetting that
//!    future only leaks what it owns: nothing borrowed is ever touched
//!    again.
//! 2. Every task spawned while the scope is open ends in exactly one
//!    outcome, handed to the joiner once ([`Run::deliver`]): it returned
//!    or panicked ([`Run::poll_task`]), it was dropped by the cancel
//!    ([`Run::stop_if_cancelled`]), or it never started (spawned into a cancelled
//!    scope, or waiting behind the limit when the cancel came).
//! 3. A wake-up is never lost. A task's or the body's waker pushes its
//!    slot to the ready list under the wake lock and, unless the scope
//!    future is polling, takes and wakes the scope's waker; a spawn
//!    pushes under the `spawned` lock and then does the same if the future
//!    is not polling. The future clears `polling` before it looks at both
//!    lists one last time, under their locks: either it sees the push, or
//!    the pusher sees `polling` cleared and wakes it.
//! 4. Nothing starts once the context is cancelled: a task is started
//!    only after a look at the context, and the cancel (whoever made it)
//!    is seen by the loop before it polls anything else, which then drops
//!    the body, every running task and every waiting one.
//! 5. `live` counts tasks spawned and not yet ended. It is raised under
//!    the `spawned` lock (so `try_spawn`'s look and its raise are one
//!    step) and lowered when a task's outcome is delivered.
//!
//! # Lock order
//!
//! The `spawned` lock and the wake lock are never held together, and
//! neither is held while user code runs (polling, dropping, the joiner)
//! or while a waker is woken.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Release, SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{self, Poll, Waker};

use pin_project_lite::pin_project;
use slab::Slab;

use super::joiner::{Decision, FailFast, Joiner, Unread};
use super::outcome::{Outcome, TaskId};
use super::panics::{JoinerPanicked, drop_catching, panic_message};
use crate::context::{CancelHook, cancellation};
use crate::{Cause, Context, ContextError, TaskFailed};

/// At most this many polls (the body's and the tasks') in one poll of the
/// scope future, fewer when tokio's cooperative budget runs out; then it
/// yields to the runtime, as the group's runner does.
const SCOPE_TURN: usize = 128;

/// The ready-list entry of the body.
const BODY: usize = usize::MAX;

/// The most entries an emptied buffer keeps for reuse.
const BUFFER_KEPT: usize = 1024;

mod sealed {
    pub trait Sealed {}
}

/// What a scope's tasks must be: [`SendTasks`] for [`scope`] and
/// [`TaskGroupBuilder::scope`](crate::TaskGroupBuilder::scope),
/// [`LocalTasks`] for [`scope_local`] and
/// [`TaskGroupBuilder::scope_local`](crate::TaskGroupBuilder::scope_local).
/// Sealed: these two are the only kinds.
pub trait TaskKind: sealed::Sealed + 'static {
    /// The boxed task future: `dyn Future + Send` or `dyn Future`.
    #[doc(hidden)]
    type Task<'env, T: 'env, E: 'env>: ?Sized + Future<Output = Result<T, E>> + 'env;
}

/// The [`TaskKind`] of [`scope`]: every task is `Send`, so the scope future
/// is `Send` when its body is.
#[derive(Debug)]
pub enum SendTasks {}

/// The [`TaskKind`] of [`scope_local`]: tasks need not be `Send` (they may
/// hold an `Rc` or a `RefCell` borrow across an await); the scope future is
/// then not `Send`.
#[derive(Debug)]
pub enum LocalTasks {}

impl sealed::Sealed for SendTasks {}
impl sealed::Sealed for LocalTasks {}

impl TaskKind for SendTasks {
    type Task<'env, T: 'env, E: 'env> = dyn Future<Output = Result<T, E>> + Send + 'env;
}

impl TaskKind for LocalTasks {
    type Task<'env, T: 'env, E: 'env> = dyn Future<Output = Result<T, E>> + 'env;
}

type BoxTask<'env, T, E, K> = Pin<Box<<K as TaskKind>::Task<'env, T, E>>>;

/// What the scope future and every [`Scope`] handle share.
struct ScopeShared<'env, T, E, K: TaskKind> {
    /// The scope's context: a child of the parent, cancelled by the
    /// joiner's decisions, [`Scope::cancel`], and the end of the scope.
    ctx: Context,
    limit: Option<usize>,
    /// Invariant 5.
    live: AtomicUsize,
    /// Someone waits in [`Scope::ready`] for a slot.
    slot_wanted: AtomicBool,
    spawned: Mutex<Incoming<'env, T, E, K>>,
    wake: Arc<Wakeup>,
}

/// Tasks spawned and not yet taken by the scope future.
struct Incoming<'env, T: 'env, E: 'env, K: TaskKind> {
    tasks: VecDeque<(TaskId, BoxTask<'env, T, E, K>)>,
    next_id: u64,
    /// The scope ended, or its future was dropped (invariant 1).
    closed: bool,
    /// [`Scope::ready`] callers waiting for a slot.
    slot_waiters: Vec<Waker>,
}

impl<'env, T, E, K: TaskKind> ScopeShared<'env, T, E, K> {
    fn spawned(&self) -> MutexGuard<'_, Incoming<'env, T, E, K>> {
        // No user code runs under this lock: poison means nothing.
        self.spawned.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake_slot_waiters(&self) {
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

/// The `'static` part of a scope, reachable from its wakers and its
/// context's cancel hook: the scope future's waker and the ready list.
struct Wakeup {
    /// The scope future is inside its `poll` (invariant 3).
    polling: AtomicBool,
    state: Mutex<WakeState>,
}

struct WakeState {
    waker: Option<Waker>,
    /// Slots woken since the scope future last looked; [`BODY`] for the
    /// body.
    ready: Vec<usize>,
}

impl Wakeup {
    fn state(&self) -> MutexGuard<'_, WakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `slot` and wakes the scope future unless it is polling.
    fn push(&self, slot: usize) {
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
    fn notify(&self) {
        let waker = self.take_waker(&mut self.state());
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn take_waker(&self, state: &mut WakeState) -> Option<Waker> {
        if self.polling.load(SeqCst) {
            None
        } else {
            state.waker.take()
        }
    }
}

impl CancelHook for Wakeup {
    /// The scope's context was cancelled, maybe from outside: the scope
    /// future must come and drop its tasks.
    fn on_cancel(&self) {
        self.notify();
    }
}

/// The waker of one slot (a task's, reused by the next task in that slot;
/// a stale wake-up only polls the new one once more) or of the body.
struct TaskWaker {
    slot: usize,
    /// The slot is in the ready list and not yet polled.
    queued: AtomicBool,
    wake: Arc<Wakeup>,
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

fn task_waker(slot: usize, wake: &Arc<Wakeup>) -> (Arc<TaskWaker>, Waker) {
    let waker = Arc::new(TaskWaker {
        slot,
        queued: AtomicBool::new(false),
        wake: wake.clone(),
    });
    (waker.clone(), Waker::from(waker))
}

/// The handle of a scoped group, given to its body: spawn tasks that
/// borrow anything that outlives the [`scope`] call.
///
/// A cheap owned handle (one `Arc`): clone it into a task to spawn from
/// there. `K` says what the tasks must be: [`SendTasks`] (from [`scope`])
/// or [`LocalTasks`] (from [`scope_local`]).
///
/// # Examples
///
/// ```
/// use taskgroup::{Context, Scope};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let words = vec!["a".to_string(), "bb".to_string(), "ccc".to_string()];
/// let lengths = taskgroup::scope(&Context::background(), async |s: Scope<'_, usize, String>| {
///     for word in &words {
///         s.spawn(move |_ctx| async move { Ok(word.len()) }); // borrows `words`
///     }
///     assert_eq!(s.len(), 3);
/// })
/// .await;
/// assert_eq!(lengths, Ok(vec![1, 2, 3]));
/// # }
/// ```
pub struct Scope<'env, T, E, J = FailFast, K: TaskKind = SendTasks> {
    shared: Arc<ScopeShared<'env, T, E, K>>,
    _joiner: PhantomData<fn() -> J>,
}

impl<'env, T: 'env, E: 'env, J, K: TaskKind> Scope<'env, T, E, J, K> {
    /// The scope's context: the one every task receives, a child of the
    /// context the scope was made with. Derive from it to nest groups.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Context;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (parent, cancel) = Context::background().with_cancel();
    /// let out = taskgroup::scope(&parent, async |s| {
    ///     cancel.cancel();
    ///     assert!(s.context().is_cancelled()); // a child of `parent`
    ///     s.spawn(|_ctx| async { Ok::<_, String>(()) }); // never starts
    /// })
    /// .await;
    /// assert!(out.is_err());
    /// # }
    /// ```
    pub fn context(&self) -> &Context {
        &self.shared.ctx
    }

    /// Cancels the scope: its context is cancelled, and the body and
    /// every running task are dropped at their next await point; waiting
    /// ones never start. The scope then returns what its joiner makes of
    /// that (for [`FailFast`],
    /// [`GroupError::Cancelled`](crate::GroupError::Cancelled) unless
    /// every task had finished `Ok`).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{Context, ContextError, GroupError};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let out = taskgroup::scope(&Context::background(), async |s| {
    ///     s.spawn(|_ctx| std::future::pending::<Result<(), String>>());
    ///     s.cancel();
    /// })
    /// .await;
    /// assert_eq!(out, Err(GroupError::Cancelled(ContextError::Cancelled)));
    /// # }
    /// ```
    pub fn cancel(&self) {
        self.shared
            .ctx
            .cancel_internal(cancellation(ContextError::Cancelled, None));
    }

    /// The number of tasks spawned that have not ended yet: running, or
    /// waiting for a slot. (Unlike [`TaskGroup::len`](crate::TaskGroup::len),
    /// which also counts finished tasks that `next` may still hand out: a
    /// scope hands out nothing before it returns.)
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Context;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// taskgroup::scope(&Context::background(), async |s| {
    ///     assert!(s.is_empty());
    ///     s.spawn(|_ctx| async { Ok::<_, String>(()) });
    ///     assert_eq!(s.len(), 1);
    ///     tokio::task::yield_now().await; // the task runs
    ///     assert_eq!(s.len(), 0);
    /// })
    /// .await
    /// .unwrap();
    /// # }
    /// ```
    pub fn len(&self) -> usize {
        self.shared.live.load(SeqCst)
    }

    /// Returns `true` if [`len`](Scope::len) is 0.
    ///
    /// # Examples
    ///
    /// See [`len`](Scope::len).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until the scope has room for another task: until running and
    /// waiting tasks no longer fill the limit. Returns at once in a scope
    /// without a limit, and as soon as the scope is cancelled or over.
    ///
    /// The backpressure point for a body that spawns many tasks: with
    /// `ready().await` before each `spawn`, no more than the limit's worth
    /// of closures is ever held.
    ///
    /// # Panics
    ///
    /// When called, with the scope full, from the scope's own task that
    /// holds its only slot (a `limit(1)` scope's running task): no slot
    /// could ever free while it waits, so it panics, naming `ready`,
    /// instead of hanging, as [`TaskGroup::ready`](crate::TaskGroup::ready)
    /// does.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it reserves nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let out = TaskGroup::<u32, String>::builder().limit(4).scope(async |s| {
    ///     for i in 0..100 {
    ///         s.ready().await;
    ///         assert!(s.len() < 4);
    ///         s.spawn(move |_ctx| async move { Ok(i) });
    ///     }
    /// })
    /// .await;
    /// assert_eq!(out.unwrap().len(), 100);
    /// # }
    /// ```
    pub async fn ready(&self) {
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
                "Scope::ready called from the scope's own task that holds its only \
                 slot (limit 1): it would wait for itself forever"
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
    fn push<F>(
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

impl<'env, T: 'env, E: 'env, J> Scope<'env, T, E, J, SendTasks> {
    /// Spawns a task: `f` is called with the scope's context, and the
    /// future it returns runs inside the scope future, beside the body and
    /// the other tasks. Both may borrow anything that outlives the
    /// [`scope`] call.
    ///
    /// Never blocks. Over the [limit](crate::TaskGroupBuilder::limit) the
    /// task waits, unstarted, and starts as a slot frees; if the scope is
    /// cancelled first it never starts ([`Outcome::Cancelled`]), as in a
    /// scope already cancelled. `f` is called at the task's first poll: a
    /// panic in `f` is the task's panic. Spawned after the scope has
    /// returned (through a handle kept in the caller's frame), `f` is
    /// dropped without being called.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Context;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let prefix = String::from("page");
    /// let pages = taskgroup::scope(&Context::background(), async |s| {
    ///     for id in 0..3 {
    ///         let prefix = &prefix; // borrowed, not cloned
    ///         s.spawn(move |_ctx| async move { Ok::<_, String>(format!("{prefix} {id}")) });
    ///     }
    /// })
    /// .await;
    /// assert_eq!(pages.unwrap(), ["page 0", "page 1", "page 2"]);
    /// # }
    /// ```
    #[track_caller]
    pub fn spawn<F, Fut>(&self, f: F) -> TaskId
    where
        F: FnOnce(Context) -> Fut + Send + 'env,
        Fut: Future<Output = Result<T, E>> + Send + 'env,
    {
        // `f` is called at the task's first poll, inside the scope
        // future's `catch_unwind`: its panic is the task's.
        let admitted = self.push(f, false, |f, ctx| Box::pin(async move { f(ctx).await }));
        admitted.unwrap_or_else(|_| unreachable!("spawn always admits"))
    }

    /// Spawns a task unless running and waiting tasks fill the limit, or
    /// the scope is cancelled or over; then it gives the closure back.
    ///
    /// # Errors
    ///
    /// `Err(f)`, untouched, when the scope is full, cancelled or over.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let out = TaskGroup::<u8, String>::builder().limit(1).scope(async |s| {
    ///     assert!(s.try_spawn(|_ctx| async { Ok(1) }).is_ok());
    ///     let refused = s.try_spawn(|_ctx| async { Ok(2) });
    ///     let again = refused.unwrap_err(); // the closure comes back
    ///     s.ready().await;
    ///     assert!(s.try_spawn(again).is_ok());
    /// })
    /// .await;
    /// assert_eq!(out, Ok(vec![1, 2]));
    /// # }
    /// ```
    #[track_caller]
    pub fn try_spawn<F, Fut>(&self, f: F) -> Result<TaskId, F>
    where
        F: FnOnce(Context) -> Fut + Send + 'env,
        Fut: Future<Output = Result<T, E>> + Send + 'env,
    {
        self.push(f, true, |f, ctx| Box::pin(async move { f(ctx).await }))
    }
}

impl<'env, T: 'env, E: 'env, J> Scope<'env, T, E, J, LocalTasks> {
    /// Spawns a task that need not be `Send`: as
    /// [`Scope::spawn`](Scope#method.spawn) on a [`scope`], for
    /// [`scope_local`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use std::rc::Rc;
    /// use taskgroup::Context;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let total = RefCell::new(0);
    /// let shared = Rc::new(5);
    /// let out = taskgroup::scope_local(&Context::background(), async |s| {
    ///     for i in 0..3 {
    ///         let (total, shared) = (&total, shared.clone());
    ///         s.spawn(move |_ctx| async move {
    ///             tokio::task::yield_now().await; // holds an Rc across an await
    ///             *total.borrow_mut() += i * *shared;
    ///             Ok::<_, String>(i)
    ///         });
    ///     }
    /// })
    /// .await;
    /// assert_eq!(out, Ok(vec![0, 1, 2]));
    /// assert_eq!(total.into_inner(), 15);
    /// # }
    /// ```
    #[track_caller]
    pub fn spawn<F, Fut>(&self, f: F) -> TaskId
    where
        F: FnOnce(Context) -> Fut + 'env,
        Fut: Future<Output = Result<T, E>> + 'env,
    {
        // `f` is called at the task's first poll, inside the scope
        // future's `catch_unwind`: its panic is the task's.
        let admitted = self.push(f, false, |f, ctx| Box::pin(async move { f(ctx).await }));
        admitted.unwrap_or_else(|_| unreachable!("spawn always admits"))
    }

    /// As [`Scope::try_spawn`](Scope#method.try_spawn) on a [`scope`],
    /// for tasks that need not be `Send`.
    ///
    /// # Errors
    ///
    /// `Err(f)`, untouched, when the scope is full, cancelled or over.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::rc::Rc;
    /// use taskgroup::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let one = Rc::new(1);
    /// let out = TaskGroup::<u8, String>::builder().limit(1).scope_local(async |s| {
    ///     let first = one.clone();
    ///     assert!(s.try_spawn(move |_ctx| async move { Ok(*first) }).is_ok());
    ///     assert!(s.try_spawn(|_ctx| async { Ok(2) }).is_err()); // full
    /// })
    /// .await;
    /// assert_eq!(out, Ok(vec![1]));
    /// # }
    /// ```
    #[track_caller]
    pub fn try_spawn<F, Fut>(&self, f: F) -> Result<TaskId, F>
    where
        F: FnOnce(Context) -> Fut + 'env,
        Fut: Future<Output = Result<T, E>> + 'env,
    {
        self.push(f, true, |f, ctx| Box::pin(async move { f(ctx).await }))
    }
}

impl<T, E, J, K: TaskKind> Clone for Scope<'_, T, E, J, K> {
    fn clone(&self) -> Self {
        Scope {
            shared: self.shared.clone(),
            _joiner: PhantomData,
        }
    }
}

impl<T, E, J, K: TaskKind> fmt::Debug for Scope<'_, T, E, J, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("len", &self.len())
            .field("limit", &self.shared.limit)
            .field("cancelled", &self.shared.ctx.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// A started task.
struct Running<'env, T: 'env, E: 'env, K: TaskKind> {
    id: TaskId,
    fut: BoxTask<'env, T, E, K>,
}

/// What the scope future owns besides the body: the started and waiting
/// tasks, the outcomes, the joiner.
struct Run<'env, T, E, J, K: TaskKind> {
    shared: Arc<ScopeShared<'env, T, E, K>>,
    name: Option<Arc<str>>,
    /// `None` once finished, or once its `on_complete` panicked.
    joiner: Option<J>,
    /// Started tasks; a task's key is its slot, the index of its waker.
    tasks: Slab<Running<'env, T, E, K>>,
    wakers: Vec<(Arc<TaskWaker>, Waker)>,
    body_waker: (Arc<TaskWaker>, Waker),
    /// Spawned, taken from `spawned`, not started (the limit, or the
    /// turn ran out).
    waiting: VecDeque<(TaskId, BoxTask<'env, T, E, K>)>,
    /// Slots to poll in this turn.
    ready: VecDeque<usize>,
    body_ready: bool,
    /// Emptied buffers, kept for the next swap.
    spare_spawned: VecDeque<(TaskId, BoxTask<'env, T, E, K>)>,
    spare_ready: Vec<usize>,
    /// Ended tasks, in completion order.
    done: VecDeque<(TaskId, Outcome<T, E>)>,
    cancelled_by: Option<TaskId>,
    late_ok: bool,
    /// The body's panic, or the joiner's: re-raised once every task has
    /// been dropped.
    panic: Option<Box<dyn Any + Send>>,
    finished: bool,
}

pin_project! {
    /// Future returned by [`scope`], [`scope_local`],
    /// [`TaskGroupBuilder::scope`](crate::TaskGroupBuilder::scope) and
    /// [`TaskGroupBuilder::scope_local`](crate::TaskGroupBuilder::scope_local):
    /// runs the body and the tasks, and resolves to what the joiner makes
    /// of their outcomes.
    ///
    /// `Send` when the body and the tasks are (always for the tasks of a
    /// [`scope`]), with `T` and `E`.
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the body and every task at once (each at the
    /// await point it is parked at) and cancels the scope's context; the
    /// outcomes are lost. `mem::forget` on it is sound: the tasks are
    /// never polled again, and whatever they borrow is never touched.
    ///
    /// # Examples
    ///
    /// See [`scope`].
    #[must_use = "futures do nothing unless polled"]
    pub struct ScopeFuture<'env, T, E, J, K, Fut>
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

/// Builds a scope: its context (a child of `parent`), its handle, and the
/// body's future, by calling `body` with the handle at once (an async
/// block or closure does nothing until polled).
pub(super) fn start<'env, T, E, J, K, F, Fut>(
    parent: Option<&Context>,
    name: Option<Arc<str>>,
    limit: Option<usize>,
    joiner: J,
    body: F,
) -> ScopeFuture<'env, T, E, J, K, Fut>
where
    T: 'env,
    E: 'env,
    J: Joiner<T, E>,
    K: TaskKind,
    F: FnOnce(Scope<'env, T, E, J, K>) -> Fut,
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
    let ctx = match parent {
        Some(parent) => parent.with_hook(hook),
        None => Context::background().with_hook(hook),
    };
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
    let handle = Scope {
        shared: shared.clone(),
        _joiner: PhantomData,
    };
    let body = body(handle);
    ScopeFuture {
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
            spare_spawned: VecDeque::new(),
            spare_ready: Vec::new(),
            done: VecDeque::new(),
            cancelled_by: None,
            late_ok: false,
            panic: None,
            finished: false,
        },
    }
}

/// Runs `body` with a [`Scope`] whose tasks may borrow from the caller:
/// no `'static`, and everything joined before it returns. The tasks are
/// `Send`; so is this future when the body is (it runs inside
/// `tokio::spawn` and axum handlers). Under [`FailFast`]: the values in
/// spawn order, or the first error.
///
/// `scope(&ctx, body)` is
/// [`TaskGroup::builder().context(&ctx).scope(body)`](crate::TaskGroupBuilder::scope);
/// the builder adds a limit, a name and a [join policy](crate::Joiner).
/// [`scope_local`] is the same for tasks that are not `Send`.
///
/// # How it runs
///
/// The body and the tasks run concurrently *inside the returned future*,
/// on the task that awaits it: the body can await what its own tasks
/// produce. Nothing is spawned on the runtime, so there is no parallelism:
/// for CPU work on several threads, or tasks that must outlive the
/// caller's frame, use a [`TaskGroup`](crate::TaskGroup).
///
/// Of concurrency, parallelism and borrowing, a safe API can give two:
/// `std::thread::scope` gives parallelism and borrowing by blocking its
/// thread; a `TaskGroup` gives concurrency and parallelism with `'static`
/// tasks; a scope gives concurrency and borrowing, because its tasks live
/// inside its own future. That is why dropping or forgetting that future
/// is sound, with no `unsafe` (the crate forbids it): nothing but the
/// future's own `poll` ever polls a task, so a dropped future drops every
/// task with it, and a forgotten one leaks them, never to be polled again,
/// so no task touches borrowed data after the borrow ends (`async-scoped`
/// must be `unsafe` because it hands the tasks to the runtime).
///
/// The group's rules hold: the first error (or panic) cancels the scope's
/// context, and the body and every running task are dropped at their next
/// await, waiting ones never start; the limit, the joiners and the
/// outcomes are those of a `TaskGroup`; the future resolves once the body
/// has returned (or been dropped by the cancel) and every task has ended,
/// and the scope's context is cancelled then, as `wait` does.
///
/// Fairness: in each of its polls the future polls the body if it was
/// woken, then each task that was woken, once, in the order they were
/// woken, and yields to the runtime after 128 polls or when tokio's
/// cooperative budget runs out: a task that wakes itself at once cannot
/// starve the body or its siblings. A task that never yields (a busy loop
/// with no await that returns `Pending`) holds back the body and every
/// other task until it returns, since they share its thread and its poll:
/// use a `TaskGroup` (or `spawn_blocking`) for that work, or
/// `tokio::task::yield_now().await` in the loop.
///
/// What a scope leaves to a `TaskGroup`: the [lifecycle](crate::TaskGroup#cancellation-step-by-step)
/// of a graceful wind-down. A builder's [`grace`](crate::TaskGroupBuilder::grace)
/// does not apply (a scope's cancel drops its tasks at their next await,
/// at once), a [`shield`](Context::shield) inside a scoped task only
/// changes its context, as outside any group (the cancel still drops the
/// task at its next await), and scoped tasks have no names. A scope lives
/// inside one caller's future, which must stay free to drop it at any
/// moment; cleanup that must outlive a cancel belongs after the `scope`
/// call returns, or in a `TaskGroup` task.
///
/// # Panics
///
/// A task's panic is its outcome, as in a `TaskGroup`: [`FailFast`] and
/// [`FirstOk`](crate::FirstOk) cancel the scope and re-raise it once every
/// task has ended; [`Supervise`](crate::Supervise) returns it. A panic in
/// the body cancels the scope too, and is re-raised once every task has
/// been dropped. So is a panic in the joiner's `on_complete`.
///
/// # Cancel safety
///
/// See [`ScopeFuture`]: dropping it drops the body and every task at once.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use taskgroup::{Context, GroupError};
///
/// async fn fetch(ctx: &Context, base: &str, id: u32) -> Result<String, String> {
///     ctx.sleep(Duration::from_millis(10)).await.map_err(|e| e.to_string())?;
///     if id == 3 {
///         return Err(format!("{base}/{id}: 503"));
///     }
///     Ok(format!("{base}/{id}"))
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let ctx = Context::background();
/// let base = String::from("https://example.com"); // borrowed by every task
///
/// let pages = taskgroup::scope(&ctx, async |s| {
///     for id in 0..3 {
///         let base = &base;
///         s.spawn(move |ctx| async move { fetch(&ctx, base, id).await });
///     }
/// })
/// .await;
/// assert_eq!(pages.unwrap()[2], "https://example.com/2");
///
/// // The first error cancels the rest; the body can await its own tasks.
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let out = taskgroup::scope(&ctx, async |s| {
///     for id in 0..5 {
///         let (base, tx) = (&base, tx.clone());
///         s.spawn(move |ctx| async move {
///             let page = fetch(&ctx, base, id).await?;
///             tx.send(page).map_err(|e| e.to_string())?;
///             Ok(())
///         });
///     }
///     drop(tx);
///     while let Some(page) = rx.recv().await {
///         assert!(page.starts_with("https://"));
///     }
/// })
/// .await;
/// assert_eq!(out, Err(GroupError::Failed("https://example.com/3: 503".to_string())));
/// # }
/// ```
///
/// A task cannot outlive the data it borrows: the scope's future carries
/// the borrow.
///
/// ```compile_fail,E0597
/// use taskgroup::Context;
///
/// # async fn f() {
/// let ctx = Context::background();
/// let fut = {
///     let data = vec![1, 2, 3];
///     taskgroup::scope(&ctx, async |s| {
///         s.spawn(|_ctx| async { Ok::<_, String>(data.len()) }); // borrows `data`
///     })
/// }; // error[E0597]: `data` does not live long enough
/// let _ = fut.await;
/// # }
/// ```
///
/// Its compiling twin keeps `data` alive until the scope is done:
///
/// ```
/// use taskgroup::Context;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let ctx = Context::background();
/// let data = vec![1, 2, 3];
/// let fut = taskgroup::scope(&ctx, async |s| {
///     s.spawn(|_ctx| async { Ok::<_, String>(data.len()) });
/// });
/// assert_eq!(fut.await, Ok(vec![3]));
/// # }
/// ```
///
/// Neither a task nor the handle can escape the scope into a `'static`
/// task, where it could outlive the borrow:
///
/// ```compile_fail,E0597
/// use taskgroup::Context;
///
/// # async fn f() {
/// let ctx = Context::background();
/// let data = vec![1, 2, 3];
/// let _ = taskgroup::scope(&ctx, async |s| {
///     let data = &data;
///     tokio::spawn(async move {
///         // error[E0597]: `data` does not live long enough (`tokio::spawn`
///         // needs 'static, and the handle carries the borrow)
///         s.spawn(move |_ctx| async move { Ok::<_, String>(data.len()) });
///     });
/// })
/// .await;
/// # }
/// ```
///
/// Its twin moves the handle nowhere and spawns from a task of the scope:
///
/// ```
/// use taskgroup::Context;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let ctx = Context::background();
/// let data = vec![1, 2, 3];
/// let out = taskgroup::scope(&ctx, async |s| {
///     let data = &data;
///     let inner = s.clone();
///     s.spawn(move |_ctx| async move {
///         inner.spawn(move |_ctx| async move { Ok::<_, String>(data.len()) });
///         Ok(0)
///     });
/// })
/// .await;
/// assert_eq!(out, Ok(vec![0, 3]));
/// # }
/// ```
pub fn scope<'env, T, E, F, Fut>(
    ctx: &Context,
    body: F,
) -> ScopeFuture<'env, T, E, FailFast, SendTasks, Fut>
where
    T: 'env,
    E: fmt::Display + 'env,
    F: FnOnce(Scope<'env, T, E, FailFast, SendTasks>) -> Fut,
    Fut: Future<Output = ()> + 'env,
{
    start(Some(ctx), None, None, FailFast, body)
}

/// [`scope`] for tasks that need not be `Send`: they may hold an `Rc`, a
/// `RefCell` borrow or any other `!Send` value across an await. The future
/// it returns is not `Send` then; await it where it was made, as tokio's
/// `spawn_local` tasks are.
///
/// Everything else is [`scope`]'s: the semantics, the fairness and the
/// panics, and the same code runs both.
///
/// # Panics
///
/// As [`scope`].
///
/// # Examples
///
/// ```
/// use std::cell::RefCell;
/// use taskgroup::Context;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = RefCell::new(std::collections::HashMap::new());
/// let out = taskgroup::scope_local(&Context::background(), async |s| {
///     for key in ["a", "b", "a"] {
///         let cache = &cache;
///         s.spawn(move |_ctx| async move {
///             let len = cache.borrow().len();
///             cache.borrow_mut().entry(key).or_insert(len);
///             Ok::<_, String>(())
///         });
///     }
/// })
/// .await;
/// assert!(out.is_ok());
/// assert_eq!(cache.borrow().len(), 2);
/// # }
/// ```
pub fn scope_local<'env, T, E, F, Fut>(
    ctx: &Context,
    body: F,
) -> ScopeFuture<'env, T, E, FailFast, LocalTasks, Fut>
where
    T: 'env,
    E: fmt::Display + 'env,
    F: FnOnce(Scope<'env, T, E, FailFast, LocalTasks>) -> Fut,
    Fut: Future<Output = ()> + 'env,
{
    start(Some(ctx), None, None, FailFast, body)
}

impl<'env, T, E, J, K, Fut> Future for ScopeFuture<'env, T, E, J, K, Fut>
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
        assert!(!run.finished, "ScopeFuture polled after completion");
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
            // Invariant 4: a cancel seen before anything else is polled.
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

impl<'env, T: 'env, E: 'env, J, K> Run<'env, T, E, J, K>
where
    J: Joiner<T, E>,
    K: TaskKind,
{
    /// Moves what the wakers queued into this round.
    fn take_woken(&mut self) {
        let mut woken = std::mem::take(&mut self.spare_ready);
        std::mem::swap(&mut woken, &mut self.shared.wake.state().ready);
        for slot in woken.drain(..) {
            if slot == BODY {
                self.body_ready = true;
            } else {
                self.ready.push_back(slot);
            }
        }
        if woken.capacity() <= BUFFER_KEPT {
            self.spare_ready = woken;
        }
    }

    /// Takes the spawned tasks into `waiting`, or ends them unstarted in
    /// a cancelled scope (invariants 2 and 4).
    fn take_spawned(&mut self) {
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
    fn may_start(&self) -> bool {
        !self.waiting.is_empty() && self.limit_has_room() && !self.shared.ctx.is_cancelled()
    }

    fn limit_has_room(&self) -> bool {
        self.shared
            .limit
            .is_none_or(|limit| self.tasks.len() < limit)
    }

    /// Starts a task in a slot of its own, with that slot's waker.
    fn insert(&mut self, id: TaskId, fut: BoxTask<'env, T, E, K>) -> usize {
        let slot = self.tasks.insert(Running { id, fut });
        if slot == self.wakers.len() {
            self.wakers.push(task_waker(slot, &self.shared.wake));
        }
        slot
    }

    fn poll_body<Fut: Future<Output = ()>>(&mut self, mut body: Pin<&mut Option<Fut>>) {
        let Some(fut) = body.as_mut().as_pin_mut() else {
            return;
        };
        let mut cx = task::Context::from_waker(&self.body_waker.1);
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
    fn poll_task(&mut self, slot: usize) {
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
    /// unstarted (invariants 2 and 4).
    fn stop_if_cancelled<Fut: Future<Output = ()>>(&mut self, mut body: Pin<&mut Option<Fut>>) {
        if !self.shared.ctx.is_cancelled() {
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
    fn finish(&mut self) -> J::Output {
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

impl<T, E, J, K: TaskKind, Fut> fmt::Debug for ScopeFuture<'_, T, E, J, K, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeFuture")
            .field("name", &self.run.name)
            .field("limit", &self.run.shared.limit)
            .field("running", &self.run.tasks.len())
            .field("waiting", &self.run.waiting.len())
            .field("body_done", &self.body.is_none())
            .field("cancelled", &self.run.shared.ctx.is_cancelled())
            .finish_non_exhaustive()
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

/// Marks the thread as polling a task of a scope (by the address of its
/// shared state), until dropped: how [`Scope::ready`] knows its caller
/// holds a slot.
struct PolledTask {
    outer: usize,
}

thread_local! {
    static POLLED_TASK: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl PolledTask {
    fn enter<S>(shared: &Arc<S>) -> PolledTask {
        let me = Arc::as_ptr(shared).cast::<()>() as usize;
        PolledTask {
            outer: POLLED_TASK.with(|polled| polled.replace(me)),
        }
    }

    /// Whether the caller is a task of the scope `shared` is the state of.
    fn is<S>(shared: &Arc<S>) -> bool {
        let me = Arc::as_ptr(shared).cast::<()>() as usize;
        POLLED_TASK.with(|polled| polled.get() == me)
    }
}

impl Drop for PolledTask {
    fn drop(&mut self) {
        POLLED_TASK.with(|polled| polled.set(self.outer));
    }
}
