//! The group's errors: [`GroupError`], what `wait` returns under
//! [`FailFast`](crate::FailFast), and [`TaskFailed`], the cause a failing
//! task cancels its group with.

use std::fmt;

use crate::ContextError;

/// The error of [`TaskGroup::wait`](crate::TaskGroup::wait): the first
/// failure of a task, or the cancellation of the group from outside.
///
/// `E` is the tasks' own error type; it needs only `Debug + Display`, so
/// `String`, `std::io::Error` and `anyhow::Error` all work. `GroupError<E>`
/// is a `std::error::Error` whenever `E` is one. Its `Display` and `source`
/// for [`Failed`](GroupError::Failed) are the task's error's own, so a
/// report does not say the same thing twice.
///
/// # Examples
///
/// ```
/// use taskgroup::TaskGroup;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut group = TaskGroup::<u32, String>::new();
/// group.spawn(|_ctx| async { Ok(1) });
/// group.spawn(|_ctx| async { Err("backend 2 is down".to_string()) });
/// let err = group.wait().await.unwrap_err();
/// assert!(err.is_failed());
/// assert_eq!(err.to_string(), "backend 2 is down");
/// assert_eq!(err.into_failed(), Some("backend 2 is down".to_string()));
/// # }
/// ```
#[derive(Debug, PartialEq, Eq)]
pub enum GroupError<E> {
    /// A task returned this error first, in time, and the group cancelled
    /// the rest.
    Failed(E),
    /// The group was cancelled from outside (its parent context, a
    /// deadline, or [`TaskGroup::cancel`](crate::TaskGroup::cancel)) before
    /// every task finished.
    Cancelled(ContextError),
}

impl<E> GroupError<E> {
    /// Returns `true` for [`GroupError::Failed`].
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{ContextError, GroupError};
    /// assert!(GroupError::Failed("boom").is_failed());
    /// assert!(!GroupError::<&str>::Cancelled(ContextError::Cancelled).is_failed());
    /// ```
    pub fn is_failed(&self) -> bool {
        matches!(self, GroupError::Failed(_))
    }

    /// Returns `true` for [`GroupError::Cancelled`].
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{ContextError, GroupError};
    /// assert!(GroupError::<()>::Cancelled(ContextError::DeadlineExceeded).is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        matches!(self, GroupError::Cancelled(_))
    }

    /// The task's error, if a task failed.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::GroupError;
    /// assert_eq!(GroupError::Failed(7).failed(), Some(&7));
    /// ```
    pub fn failed(&self) -> Option<&E> {
        match self {
            GroupError::Failed(error) => Some(error),
            GroupError::Cancelled(_) => None,
        }
    }

    /// Takes the task's error out, if a task failed.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{ContextError, GroupError};
    /// assert_eq!(GroupError::Failed(7).into_failed(), Some(7));
    /// assert_eq!(GroupError::<i32>::Cancelled(ContextError::Cancelled).into_failed(), None);
    /// ```
    pub fn into_failed(self) -> Option<E> {
        match self {
            GroupError::Failed(error) => Some(error),
            GroupError::Cancelled(_) => None,
        }
    }

    /// The context error, if the group was cancelled from outside.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{ContextError, GroupError};
    /// let err = GroupError::<()>::Cancelled(ContextError::DeadlineExceeded);
    /// assert_eq!(err.context_error(), Some(ContextError::DeadlineExceeded));
    /// ```
    pub fn context_error(&self) -> Option<ContextError> {
        match self {
            GroupError::Failed(_) => None,
            GroupError::Cancelled(error) => Some(*error),
        }
    }
}

impl<E: fmt::Display> fmt::Display for GroupError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupError::Failed(error) => error.fmt(f),
            GroupError::Cancelled(error) => write!(f, "task group cancelled: {error}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for GroupError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GroupError::Failed(error) => error.source(),
            GroupError::Cancelled(error) => Some(error),
        }
    }
}

/// The [`Cause`](crate::Cause) a task group records when one of its tasks
/// fails or panics and the group cancels the rest.
///
/// Its `Display` names the task (and the group, if it has a name) and
/// includes the task's error or panic message, so a sibling that logs
/// `ctx.cause()` says what went wrong where.
///
/// # Examples
///
/// ```
/// use taskgroup::{TaskFailed, TaskGroup};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut group = TaskGroup::<(), String>::builder().name("fetch").build();
/// let ctx = group.context().clone();
/// group.spawn(|_ctx| async { Err("connection refused".to_string()) });
/// let _ = group.wait().await;
///
/// let cause = ctx.cause().unwrap();
/// assert_eq!(cause.to_string(), "task 0 of group \"fetch\" failed: connection refused");
/// let failed = cause.downcast_ref::<TaskFailed>().unwrap();
/// assert_eq!(failed.task().index(), 0);
/// assert!(!failed.is_panic());
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct TaskFailed {
    pub(crate) task: crate::TaskId,
    pub(crate) name: Option<std::sync::Arc<str>>,
    pub(crate) group: Option<std::sync::Arc<str>>,
    pub(crate) panic: bool,
    pub(crate) message: String,
}

impl TaskFailed {
    /// A task's failure, as a joiner describes it in a
    /// [`Decision::Cancel`](crate::Decision::Cancel): `panic` says whether
    /// it panicked (else it returned an error), `message` is the error's
    /// `Display` or the panic's message. The group fills in its own name
    /// and the task's when it cancels with it, as it does for the built-in
    /// joiners.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{Cause, Context, Decision, Joiner, Outcome, TaskFailed, TaskGroup, TaskId, Unread};
    ///
    /// // Cancels the group on the first error, as `FailFast` does.
    /// struct StopOnError;
    ///
    /// impl Joiner<(), String> for StopOnError {
    ///     type Output = ();
    ///
    ///     fn on_complete(&mut self, id: TaskId, outcome: &Outcome<(), String>, _: &Context) -> Decision {
    ///         match outcome {
    ///             Outcome::Err(e) => Decision::Cancel(Cause::new(TaskFailed::new(id, false, e.clone()))),
    ///             _ => Decision::Continue,
    ///         }
    ///     }
    ///
    ///     fn finish(self, _: Unread<(), String>, _: &Context) {}
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::builder().name("sync").joiner(StopOnError).build();
    /// let ctx = group.context().clone();
    /// group.build_task().name("upload").spawn(|_ctx| async { Err("quota".to_string()) });
    /// group.wait().await;
    /// assert_eq!(
    ///     ctx.cause().unwrap().to_string(),
    ///     "task 0 (upload) of group \"sync\" failed: quota"
    /// );
    /// # }
    /// ```
    pub fn new(task: crate::TaskId, panic: bool, message: String) -> Self {
        TaskFailed {
            task,
            name: None,
            group: None,
            panic,
            message,
        }
    }

    /// The task that failed.
    ///
    /// # Examples
    ///
    /// See [`TaskFailed`].
    pub fn task(&self) -> crate::TaskId {
        self.task
    }

    /// The task's name, if it was spawned with one
    /// ([`TaskBuilder::name`](crate::TaskBuilder::name)).
    ///
    /// # Examples
    ///
    /// See [`TaskBuilder::name`](crate::TaskBuilder::name).
    pub fn task_name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The name of its group, if the group was given one.
    ///
    /// # Examples
    ///
    /// See [`TaskFailed`].
    pub fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// `true` if the task panicked, `false` if it returned an error.
    ///
    /// # Examples
    ///
    /// See [`TaskFailed`].
    pub fn is_panic(&self) -> bool {
        self.panic
    }

    /// The task's error (its `Display`) or panic message.
    ///
    /// # Examples
    ///
    /// See [`TaskFailed`].
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for TaskFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {}", self.task.index())?;
        if let Some(name) = &self.name {
            write!(f, " ({name})")?;
        }
        if let Some(group) = &self.group {
            write!(f, " of group {group:?}")?;
        }
        let verb = if self.panic { "panicked" } else { "failed" };
        write!(f, " {verb}: {}", self.message)
    }
}

impl std::error::Error for TaskFailed {}
