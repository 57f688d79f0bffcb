//! [`TaskGroupBuilder::scope`] and [`TaskGroupBuilder::scope_local`]: a
//! builder's settings for a scope. Here, not in `group/builder.rs`, so
//! that `group/` never points up at `scope/`.

use std::future::Future;

use super::future::start;
use super::{LocalScope, LocalScopeFuture, Scope, ScopeFuture};
use crate::TaskGroupBuilder;
use crate::group::Joiner;

impl<T, E, J> TaskGroupBuilder<T, E, J> {
    /// Runs `body` as a [scoped group](crate::scope) with this builder's
    /// limit, name, context and joiner: tasks that borrow from the caller,
    /// `Send`, polled inside the returned future. It resolves to what
    /// [`wait`](crate::TaskGroup::wait) would return for the joiner
    /// ([`Joiner::Output`]). Needs no `T: Send + 'static`.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{Context, Outcome, Supervise, TaskGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let ctx = Context::background();
    /// let names = ["a", "", "c"];
    /// let outcomes = TaskGroup::builder()
    ///     .limit(2)
    ///     .joiner(Supervise)
    ///     .context(&ctx)
    ///     .scope(async |s| {
    ///         for name in &names {
    ///             s.spawn(move |_ctx| async move {
    ///                 if name.is_empty() { Err("empty name") } else { Ok(name.len()) }
    ///             });
    ///         }
    ///     })
    ///     .await;
    /// assert!(matches!(outcomes[..], [Outcome::Ok(1), Outcome::Err("empty name"), Outcome::Ok(1)]));
    /// # }
    /// ```
    pub fn scope<'env, F, Fut>(self, body: F) -> ScopeFuture<'env, T, E, J, Fut>
    where
        T: 'env,
        E: 'env,
        J: Joiner<T, E>,
        F: FnOnce(Scope<'env, T, E, J>) -> Fut,
        Fut: Future<Output = ()> + 'env,
    {
        ScopeFuture {
            run: start(self.into_parts(), |core| body(Scope { core })),
        }
    }

    /// [`scope`](TaskGroupBuilder::scope) for tasks that need not be
    /// `Send` ([`scope_local`](crate::scope_local)); the future is not
    /// `Send` then.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::rc::Rc;
    /// use taskgroup::{FirstOk, TaskGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let replicas = Rc::new(vec!["eu", "us"]);
    /// let first = TaskGroup::<&str, String>::builder()
    ///     .joiner(FirstOk)
    ///     .scope_local(async |s| {
    ///         for i in 0..2 {
    ///             let replicas = replicas.clone(); // an Rc in each task
    ///             s.spawn(move |_ctx| async move { Ok(replicas[i]) });
    ///         }
    ///     })
    ///     .await;
    /// assert_eq!(first, Ok("eu"));
    /// # }
    /// ```
    pub fn scope_local<'env, F, Fut>(self, body: F) -> LocalScopeFuture<'env, T, E, J, Fut>
    where
        T: 'env,
        E: 'env,
        J: Joiner<T, E>,
        F: FnOnce(LocalScope<'env, T, E, J>) -> Fut,
        Fut: Future<Output = ()> + 'env,
    {
        LocalScopeFuture {
            run: start(self.into_parts(), |core| body(LocalScope { core })),
        }
    }
}
