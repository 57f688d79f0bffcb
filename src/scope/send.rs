//! [`Scope`] and [`ScopeFuture`]: the handle and the future of [`scope`]
//! and [`TaskGroupBuilder::scope`](crate::TaskGroupBuilder::scope), whose
//! tasks are `Send`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{self, Poll};

use pin_project_lite::pin_project;

use super::SendTasks;
use super::future::RunFuture;
use super::handle::Core;
#[cfg(doc)]
use super::{LocalScope, scope, scope_local};
use crate::Context;
#[cfg(doc)]
use crate::Outcome;
use crate::group::{FailFast, Joiner, TaskId};

/// The handle of a scoped group, given to its body: spawn tasks that
/// borrow anything that outlives the [`scope`] call.
///
/// A cheap owned handle (one `Arc`): clone it into a task to spawn from
/// there. Its tasks are `Send`; [`scope_local`]'s handle, for tasks that
/// need not be, is a [`LocalScope`], with the same methods.
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
pub struct Scope<'env, T, E, J = FailFast> {
    pub(super) core: Core<'env, T, E, J, SendTasks>,
}

impl<'env, T: 'env, E: 'env, J> Scope<'env, T, E, J> {
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
        self.core.len()
    }

    /// Returns `true` if [`len`](Scope::len) is 0: every task spawned so
    /// far has ended.
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
        self.core.ready().await;
    }

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
        let admitted = self
            .core
            .push(f, false, |f, ctx| Box::pin(async move { f(ctx).await }));
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
        self.core
            .push(f, true, |f, ctx| Box::pin(async move { f(ctx).await }))
    }
}

impl<T, E, J> Clone for Scope<'_, T, E, J> {
    fn clone(&self) -> Self {
        Scope {
            core: self.core.clone(),
        }
    }
}

impl<T, E, J> fmt::Debug for Scope<'_, T, E, J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.core.debug(f, "Scope")
    }
}

pin_project! {
    /// Future returned by [`scope`] and
    /// [`TaskGroupBuilder::scope`](crate::TaskGroupBuilder::scope): runs
    /// the body and the tasks, and resolves to what the joiner makes of
    /// their outcomes.
    ///
    /// `Send` when the body is, with `T`, `E` and `J` (the tasks always
    /// are): it runs inside `tokio::spawn` and axum handlers.
    /// [`scope_local`]'s future is a [`LocalScopeFuture`](super::LocalScopeFuture).
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
    /// use taskgroup::{Context, FailFast, ScopeFuture};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let data = [1, 2, 3];
    /// let fut: ScopeFuture<'_, i32, String, FailFast, _> =
    ///     taskgroup::scope(&Context::background(), async |s| {
    ///         for n in &data {
    ///             s.spawn(move |_ctx| async move { Ok(n * 10) }); // borrows `data`
    ///         }
    ///     });
    /// assert!(format!("{fut:?}").starts_with("ScopeFuture"));
    /// assert_eq!(fut.await, Ok(vec![10, 20, 30]));
    /// # }
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct ScopeFuture<'env, T, E, J, Fut>
    where
        T: 'env,
        E: 'env,
    {
        #[pin]
        pub(super) run: RunFuture<'env, T, E, J, SendTasks, Fut>,
    }
}

impl<'env, T, E, J, Fut> Future for ScopeFuture<'env, T, E, J, Fut>
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

impl<T, E, J, Fut> fmt::Debug for ScopeFuture<'_, T, E, J, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.run.debug(f, "ScopeFuture")
    }
}
