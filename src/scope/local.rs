//! [`LocalScope`] and [`LocalScopeFuture`]: the handle and the future of
//! [`scope_local`] and
//! [`TaskGroupBuilder::scope_local`](crate::TaskGroupBuilder::scope_local),
//! whose tasks need not be `Send`. The same core as [`Scope`]'s, the same
//! methods.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{self, Poll};

use pin_project_lite::pin_project;

use super::LocalTasks;
use super::future::RunFuture;
use super::handle::Core;
#[cfg(doc)]
use super::{Scope, scope, scope_local};
use crate::Context;
#[cfg(doc)]
use crate::Outcome;
use crate::group::{FailFast, Joiner, TaskId};

/// The handle of a [`scope_local`], given to its body: spawn tasks that
/// borrow anything that outlives the call and need not be `Send` (they may
/// hold an `Rc` or a `RefCell` borrow across an await).
///
/// [`Scope`]'s twin, with the same methods; only `spawn` and `try_spawn`
/// ask less of the task. A cheap owned handle (one `Arc`): clone it into a
/// task to spawn from there. It is not `Send`, since its tasks are not.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use taskgroup::{Context, LocalScope};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let words = vec!["a".to_string(), "bb".to_string()];
/// let unit = Rc::new(10);
/// let out = taskgroup::scope_local(&Context::background(), async |s: LocalScope<'_, usize, String>| {
///     for word in &words {
///         let unit = unit.clone(); // an Rc in each task
///         s.spawn(move |_ctx| async move { Ok(word.len() * *unit) });
///     }
///     assert_eq!(s.len(), 2);
/// })
/// .await;
/// assert_eq!(out, Ok(vec![10, 20]));
/// # }
/// ```
pub struct LocalScope<'env, T, E, J = FailFast> {
    pub(super) core: Core<'env, T, E, J, LocalTasks>,
}

impl<'env, T: 'env, E: 'env, J> LocalScope<'env, T, E, J> {
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
    /// let out = taskgroup::scope_local(&parent, async |s| {
    ///     cancel.cancel();
    ///     assert!(s.context().is_cancelled()); // a child of `parent`
    ///     s.spawn(|_ctx| async { Ok::<_, String>(()) }); // never starts
    /// })
    /// .await;
    /// assert!(out.is_err());
    /// # }
    /// ```
    pub fn context(&self) -> &Context {
        self.core.context()
    }

    /// Cancels the scope: its context is cancelled, and the body and
    /// every running task are dropped at their next await point (once the
    /// builder's [grace](crate::TaskGroupBuilder::grace) has passed, if it
    /// has one); waiting ones never start. The scope then returns what its joiner makes of
    /// that (for [`FailFast`],
    /// [`GroupError::Cancelled`](crate::GroupError::Cancelled) unless
    /// every task had finished `Ok`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::rc::Rc;
    /// use taskgroup::{Context, ContextError, GroupError};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let held = Rc::new(());
    /// let out = taskgroup::scope_local(&Context::background(), async |s| {
    ///     let held = held.clone();
    ///     s.spawn(move |_ctx| async move {
    ///         let _held = held; // dropped with the task
    ///         std::future::pending::<Result<(), String>>().await
    ///     });
    ///     s.cancel();
    /// })
    /// .await;
    /// assert_eq!(out, Err(GroupError::Cancelled(ContextError::Cancelled)));
    /// assert_eq!(Rc::strong_count(&held), 1);
    /// # }
    /// ```
    pub fn cancel(&self) {
        self.core.cancel();
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
    /// taskgroup::scope_local(&Context::background(), async |s| {
    ///     assert_eq!(s.len(), 0);
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
        self.core.len()
    }

    /// Returns `true` if [`len`](LocalScope::len) is 0: every task spawned
    /// so far has ended.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Context;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// taskgroup::scope_local(&Context::background(), async |s| {
    ///     assert!(s.is_empty());
    ///     s.spawn(|_ctx| async { Ok::<_, String>(()) });
    ///     assert!(!s.is_empty());
    /// })
    /// .await
    /// .unwrap();
    /// # }
    /// ```
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
    /// use std::cell::Cell;
    /// use taskgroup::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let most = Cell::new(0);
    /// let out = TaskGroup::<u32, String>::builder().limit(4).scope_local(async |s| {
    ///     for i in 0..100 {
    ///         s.ready().await;
    ///         most.set(most.get().max(s.len() + 1));
    ///         s.spawn(move |_ctx| async move { Ok(i) });
    ///     }
    /// })
    /// .await;
    /// assert_eq!(out.unwrap().len(), 100);
    /// assert!(most.get() <= 4);
    /// # }
    /// ```
    pub async fn ready(&self) {
        self.core.ready().await;
    }

    /// Spawns a task that need not be `Send`: `f` is called with the
    /// scope's context, and the future it returns runs inside the scope
    /// future, beside the body and the other tasks. Both may borrow
    /// anything that outlives the [`scope_local`] call, and hold `!Send`
    /// values across awaits.
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
        let admitted = self
            .core
            .push(f, false, |f, ctx| Box::pin(async move { f(ctx).await }));
        admitted.unwrap_or_else(|_| unreachable!("spawn always admits"))
    }

    /// Spawns a task that need not be `Send` unless running and waiting
    /// tasks fill the limit, or the scope is cancelled or over; then it
    /// gives the closure back.
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
    ///     let refused = s.try_spawn(|_ctx| async { Ok(2) });
    ///     let again = refused.unwrap_err(); // full: the closure comes back
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
        F: FnOnce(Context) -> Fut + 'env,
        Fut: Future<Output = Result<T, E>> + 'env,
    {
        self.core
            .push(f, true, |f, ctx| Box::pin(async move { f(ctx).await }))
    }
}

impl<T, E, J> Clone for LocalScope<'_, T, E, J> {
    fn clone(&self) -> Self {
        LocalScope {
            core: self.core.clone(),
        }
    }
}

impl<T, E, J> fmt::Debug for LocalScope<'_, T, E, J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.core.debug(f, "LocalScope")
    }
}

pin_project! {
    /// Future returned by [`scope_local`] and
    /// [`TaskGroupBuilder::scope_local`](crate::TaskGroupBuilder::scope_local):
    /// runs the body and the tasks, and resolves to what the joiner makes
    /// of their outcomes.
    ///
    /// Not `Send` (its tasks need not be): await it where it was made, as
    /// tokio's `spawn_local` tasks are. [`scope`]'s future, which is, is a
    /// [`ScopeFuture`](super::ScopeFuture).
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the body and every task at once (each at the
    /// await point it is parked at, whatever the builder's grace) and
    /// cancels the scope's context; the outcomes are lost. `mem::forget`
    /// on it is sound: the tasks are never polled again, and whatever they
    /// borrow is never touched.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::rc::Rc;
    /// use taskgroup::{Context, FailFast, LocalScopeFuture};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let data = [1, 2, 3];
    /// let ten = Rc::new(10);
    /// let fut: LocalScopeFuture<'_, i32, String, FailFast, _> =
    ///     taskgroup::scope_local(&Context::background(), async |s| {
    ///         for n in &data {
    ///             let ten = ten.clone();
    ///             s.spawn(move |_ctx| async move { Ok(n * *ten) }); // borrows `data`
    ///         }
    ///     });
    /// assert!(format!("{fut:?}").starts_with("LocalScopeFuture"));
    /// assert_eq!(fut.await, Ok(vec![10, 20, 30]));
    /// # }
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct LocalScopeFuture<'env, T, E, J, Fut>
    where
        T: 'env,
        E: 'env,
    {
        #[pin]
        pub(super) run: RunFuture<'env, T, E, J, LocalTasks, Fut>,
    }
}

impl<'env, T, E, J, Fut> Future for LocalScopeFuture<'env, T, E, J, Fut>
where
    T: 'env,
    E: 'env,
    J: Joiner<T, E>,
    Fut: Future<Output = ()> + 'env,
{
    type Output = J::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<J::Output> {
        self.project().run.poll(cx)
    }
}

impl<T, E, J, Fut> fmt::Debug for LocalScopeFuture<'_, T, E, J, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.run.debug(f, "LocalScopeFuture")
    }
}
