//! [`Scope`]: the handle a scope's body and tasks spawn with.

use std::fmt;
use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::task::Poll;

use super::{BoxTask, LocalTasks, PolledTask, ScopeShared, SendTasks, TaskKind};
#[cfg(doc)]
use super::{scope, scope_local};
#[cfg(doc)]
use crate::Outcome;
use crate::context::cancellation;
use crate::group::{FailFast, TaskId};
use crate::{Context, ContextError};

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
    pub(super) shared: Arc<ScopeShared<'env, T, E, K>>,
    pub(super) _joiner: PhantomData<fn() -> J>,
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
