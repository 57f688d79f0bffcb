//! [`TaskGroupBuilder`].

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use super::TaskGroup;
use super::joiner::{FailFast, Joiner};
use crate::Context;

/// Configures a [`TaskGroup`]: a limit on concurrent tasks, a name, a parent
/// context, a join policy. Made by [`TaskGroup::builder`].
///
/// # Examples
///
/// ```
/// use taskgroup::{Context, TaskGroup};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (request, _cancel) = Context::background().with_cancel();
/// let mut group = TaskGroup::<u32, String>::builder()
///     .limit(2)
///     .name("resize")
///     .context(&request)
///     .build();
/// for i in 0..5 {
///     group.spawn(move |_ctx| async move { Ok(i) });
/// }
/// assert_eq!(group.wait().await, Ok(vec![0, 1, 2, 3, 4]));
/// # }
/// ```
#[must_use = "a builder does nothing until `build` (or `scope`) is called"]
pub struct TaskGroupBuilder<T, E, J = FailFast> {
    limit: Option<usize>,
    name: Option<Arc<str>>,
    context: Option<Context>,
    grace: Duration,
    joiner: J,
    // `fn() -> (T, E)`: the builder holds no T or E, so it is Send and Sync
    // whatever they are.
    _types: PhantomData<fn() -> (T, E)>,
}

impl<T, E> TaskGroupBuilder<T, E> {
    pub(super) fn new() -> Self {
        TaskGroupBuilder {
            limit: None,
            name: None,
            context: None,
            grace: Duration::ZERO,
            joiner: FailFast,
            _types: PhantomData,
        }
    }
}

impl<T, E, J> TaskGroupBuilder<T, E, J> {
    /// At most `limit` task bodies run at once, blocking ones included.
    /// Tasks spawned beyond it wait in the group (as closures, not as tokio
    /// tasks) and start as slots free.
    ///
    /// # Panics
    ///
    /// Panics if `limit` is 0: such a group could never run a task.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::TaskGroup;
    ///
    /// let refused = std::panic::catch_unwind(|| {
    ///     TaskGroup::<(), String>::builder().limit(0)
    /// });
    /// assert!(refused.is_err());
    /// ```
    #[track_caller]
    pub fn limit(mut self, limit: usize) -> Self {
        assert!(
            limit > 0,
            "TaskGroup limit must be at least 1: a limit of 0 could never run a task"
        );
        self.limit = Some(limit);
        self
    }

    /// Names the group. The name appears in the cause a failing task records
    /// ([`TaskFailed`](crate::TaskFailed)) and in `Debug` output.
    ///
    /// # Examples
    ///
    /// ```
    /// let group = taskgroup::TaskGroup::<(), String>::builder().name("crawl").build();
    /// assert!(format!("{group:?}").contains("crawl"));
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(Arc::from(name.into()));
        self
    }

    /// Makes the group's context a child of `ctx` instead of
    /// [`Context::background`]: cancelling `ctx` cancels the group.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{Context, TaskGroup};
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let group = TaskGroup::<(), String>::builder().context(&ctx).build();
    /// cancel.cancel();
    /// assert!(group.context().is_cancelled());
    /// ```
    pub fn context(mut self, ctx: &Context) -> Self {
        self.context = Some(ctx.clone());
        self
    }

    /// Gives the group's async tasks `grace` to end on their own once the
    /// group is cancelled, before they are dropped. The default is zero:
    /// dropped at their next await, at once.
    ///
    /// At the cancel, queued closures never start and every context is
    /// cancelled at once, as always; running tasks see their context
    /// cancelled and go on being polled. A task that returns within the
    /// grace reports what it returned. Once the grace has passed, every
    /// task still running is dropped at its next await (a
    /// [shielded](Context::shield) one when its section ends). Dropping the
    /// group ends the grace at once; [`TaskGroup::shutdown`] brings its own.
    /// Blocking tasks are never dropped, grace or not.
    ///
    /// The grace runs on tokio's timer, on the runtime the group's tasks
    /// run on. A [scope](TaskGroupBuilder::scope) made from this builder
    /// honours it the same way, its body included (once it has been
    /// polled: a body never polled is dropped at once), on the runtime
    /// that polls it (see [`scope`](crate::scope)); dropping the scope's
    /// future drops everything at once.
    ///
    /// # Panics
    ///
    /// Not here. A nonzero grace needs tokio's timer when the cancel
    /// comes: a scope cancelled on a runtime built without it (no
    /// `enable_time`/`enable_all`) panics in its poll, as
    /// `tokio::time::sleep` does; a group's grace timer then fails on its
    /// own task, and the tasks are dropped at once, as without a grace.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::{Outcome, TaskGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mut group = TaskGroup::<&str, String>::builder()
    ///     .grace(Duration::from_secs(5))
    ///     .build();
    /// group.spawn(|ctx| async move {
    ///     ctx.done().await;
    ///     tokio::time::sleep(Duration::from_secs(1)).await; // flush, within the grace
    ///     Ok("flushed")
    /// });
    /// tokio::task::yield_now().await;
    /// group.cancel();
    /// let outcomes = group.wait_outcomes().await;
    /// assert!(matches!(outcomes[0], Outcome::Ok("flushed")));
    /// # }
    /// ```
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Sets how the group ends: its join policy. The default is
    /// [`FailFast`]; [`Supervise`](crate::Supervise) never cancels,
    /// [`FirstOk`](crate::FirstOk) stops at the first success, and any
    /// [`Joiner`] of your own works the same way. What
    /// [`wait`](TaskGroup::wait) returns is the joiner's
    /// [`Output`](Joiner::Output).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{Outcome, Supervise, TaskGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::builder().joiner(Supervise).build();
    /// group.spawn(|_ctx| async { Err::<u8, _>("first") });
    /// group.spawn(|_ctx| async { Ok(2) }); // not cancelled by the error
    /// let outcomes: Vec<Outcome<u8, &str>> = group.wait().await;
    /// assert!(outcomes[0].is_err() && outcomes[1].is_ok());
    /// # }
    /// ```
    pub fn joiner<K: Joiner<T, E>>(self, joiner: K) -> TaskGroupBuilder<T, E, K> {
        TaskGroupBuilder {
            limit: self.limit,
            name: self.name,
            context: self.context,
            grace: self.grace,
            joiner,
            _types: PhantomData,
        }
    }

    /// Creates the group. Needs no runtime; spawning does.
    ///
    /// # Examples
    ///
    /// ```
    /// let group = taskgroup::TaskGroup::<(), String>::builder().limit(4).build();
    /// assert!(group.is_empty());
    /// ```
    pub fn build(self) -> TaskGroup<T, E, J>
    where
        T: Send + 'static,
        E: Send + 'static,
        J: Joiner<T, E>,
    {
        let parent = self.context.unwrap_or_else(Context::background);
        TaskGroup::from_builder(&parent, self.name, self.limit, self.grace, self.joiner)
    }
}

/// What a builder holds, for a scope (`scope/builder.rs`) to build from.
pub(crate) struct BuilderParts<J> {
    pub(crate) limit: Option<usize>,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) context: Option<Context>,
    pub(crate) grace: Duration,
    pub(crate) joiner: J,
}

impl<T, E, J> TaskGroupBuilder<T, E, J> {
    /// Takes the builder apart, for a scope.
    pub(crate) fn into_parts(self) -> BuilderParts<J> {
        BuilderParts {
            limit: self.limit,
            name: self.name,
            context: self.context,
            grace: self.grace,
            joiner: self.joiner,
        }
    }
}

impl<T, E, J> fmt::Debug for TaskGroupBuilder<T, E, J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskGroupBuilder")
            .field("limit", &self.limit)
            .field("name", &self.name)
            .field("context", &self.context)
            .field("grace", &self.grace)
            .field("joiner", &std::any::type_name::<J>())
            .finish()
    }
}
