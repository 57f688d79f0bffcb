//! [`TaskGroupBuilder`].

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use super::TaskGroup;
use crate::Context;

/// Configures a [`TaskGroup`]: a limit on concurrent tasks, a name, a parent
/// context. Made by [`TaskGroup::builder`].
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
pub struct TaskGroupBuilder<T, E> {
    limit: Option<usize>,
    name: Option<Arc<str>>,
    context: Option<Context>,
    // `fn() -> (T, E)`: the builder holds no T or E, so it is Send and Sync
    // whatever they are.
    _types: PhantomData<fn() -> (T, E)>,
}

impl<T, E> TaskGroupBuilder<T, E>
where
    T: Send + 'static,
    E: fmt::Display + Send + 'static,
{
    pub(super) fn new() -> Self {
        TaskGroupBuilder {
            limit: None,
            name: None,
            context: None,
            _types: PhantomData,
        }
    }

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

    /// Creates the group. Needs no runtime; spawning does.
    ///
    /// # Examples
    ///
    /// ```
    /// let group = taskgroup::TaskGroup::<(), String>::builder().limit(4).build();
    /// assert!(group.is_empty());
    /// ```
    pub fn build(self) -> TaskGroup<T, E> {
        let parent = self.context.unwrap_or_else(Context::background);
        TaskGroup::from_builder(&parent, self.name, self.limit)
    }
}

impl<T, E> fmt::Debug for TaskGroupBuilder<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskGroupBuilder")
            .field("limit", &self.limit)
            .field("name", &self.name)
            .field("context", &self.context)
            .finish()
    }
}
