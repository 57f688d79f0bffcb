//! [`FirstOk`]: the first success wins and cancels the rest; and
//! [`AllFailed`], what it returns when none succeeds.

use std::fmt;

use super::{Decision, Joiner, Unread};
use crate::group::panics::panic_message;
use crate::{Cause, Context, ContextError, Outcome, TaskFailed, TaskId};

/// A policy for replicated or hedged work: the first `Ok`, in time, wins;
/// it cancels the group, the others are dropped and their results
/// discarded (Java's `anySuccessfulOrThrow`, futures-concurrency's
/// `race_ok`).
///
/// Its [`Output`](Joiner::Output) is `Result<T, AllFailed<E>>`:
///
/// - `Ok(value)`: the winner's value;
/// - `Err(AllFailed)` with every error in spawn order when every task
///   failed, or with [`context_error`](AllFailed::context_error) `Some`
///   when the group was cancelled from outside (its parent, its deadline,
///   [`TaskGroup::cancel`](crate::TaskGroup::cancel)) before any task
///   succeeded; a value returned after that cancel is discarded too. An
///   empty group gives `Err(AllFailed)` with no errors. A winner that
///   [`next`](crate::TaskGroup::next) already handed out is not seen
///   again: `wait` then reports the rest, cancelled by it.
///
/// A panic is a bug, never a failed attempt: it cancels the group, and
/// `finish` re-raises it after every task was joined.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use taskgroup::{FirstOk, TaskGroup};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// // Ask two replicas; the faster answer wins and the slower is dropped.
/// let mut group = TaskGroup::<&str, String>::builder().joiner(FirstOk).build();
/// for (replica, ms) in [("eu", 80), ("us", 30)] {
///     group.spawn(move |ctx| async move {
///         ctx.sleep(Duration::from_millis(ms)).await.map_err(|e| e.to_string())?;
///         Ok(replica)
///     });
/// }
/// assert_eq!(group.wait().await, Ok("us"));
///
/// // When every attempt fails, every error comes back, in spawn order.
/// let mut group = TaskGroup::<(), &str>::builder().joiner(FirstOk).build();
/// group.spawn(|_ctx| async { Err("eu: 503") });
/// group.spawn(|_ctx| async { Err("us: 502") });
/// let all_failed = group.wait().await.unwrap_err();
/// assert_eq!(all_failed.to_string(), "all 2 tasks failed; the first: eu: 503");
/// assert_eq!(all_failed.into_errors().len(), 2);
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FirstOk;

/// The cause a [`FirstOk`] group is cancelled with when a task wins.
#[derive(Debug)]
struct Won(TaskId);

impl fmt::Display for Won {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} succeeded first: the others are not needed", self.0)
    }
}

impl std::error::Error for Won {}

impl<T, E> Joiner<T, E> for FirstOk {
    type Output = Result<T, AllFailed<E>>;

    fn on_complete(&mut self, id: TaskId, outcome: &Outcome<T, E>, group: &Context) -> Decision {
        // Only a success or a panic while the group is live decides.
        if matches!(outcome, Outcome::Err(_) | Outcome::Cancelled) || group.is_cancelled() {
            return Decision::Continue;
        }
        match outcome {
            Outcome::Ok(_) => Decision::Cancel(Cause::new(Won(id))),
            Outcome::Panicked(payload) => Decision::Cancel(Cause::new(TaskFailed::new(
                id,
                true,
                panic_message(&**payload).to_owned(),
            ))),
            Outcome::Err(_) | Outcome::Cancelled => Decision::Continue,
        }
    }

    fn finish(self, mut unread: Unread<T, E>, group: &Context) -> Self::Output {
        if let Some(payload) = unread.take_first_panic() {
            std::panic::resume_unwind(payload);
        }
        if let Some(winner) = unread.cancelled_by()
            && let Some(Outcome::Ok(value)) = unread.take_task(winner)
        {
            return Ok(value);
        }
        // A task `cancel_task` stopped did not fail: its error is the stop's.
        let stopped = std::mem::take(&mut unread.stopped);
        Err(AllFailed {
            errors: unread.collect_in_spawn_order(|id, outcome| {
                outcome
                    .err()
                    .filter(|_| !stopped.contains(&id))
                    .map(|e| (id, e))
            }),
            context_error: group.err(),
        })
    }
}

/// No task succeeded: what [`FirstOk`] and [`hedge`](crate::hedge) return
/// then. It holds every task's error, in spawn order, and the group's
/// context error if the group was cancelled before any task succeeded.
///
/// Its `Display` gives the count and the first error; it is a
/// [`std::error::Error`] (with the first error as its source) when `E` is
/// one.
///
/// # Examples
///
/// ```
/// use taskgroup::{Context, ContextError, FirstOk, TaskGroup};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (request, cancel) = Context::background().with_cancel();
/// let mut group = TaskGroup::<(), String>::builder()
///     .joiner(FirstOk)
///     .context(&request)
///     .build();
/// group.spawn(|_ctx| async { Err("replica 0: refused".to_string()) });
/// group.spawn(|_ctx| std::future::pending());
/// tokio::task::yield_now().await; // replica 0 fails; replica 1 waits on
/// cancel.cancel(); // the client went away
/// let all_failed = group.wait().await.unwrap_err();
/// assert_eq!(all_failed.errors().len(), 1);
/// assert_eq!(all_failed.context_error(), Some(ContextError::Cancelled));
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllFailed<E> {
    errors: Vec<(TaskId, E)>,
    context_error: Option<ContextError>,
}

impl<E> AllFailed<E> {
    pub(crate) fn new(errors: Vec<(TaskId, E)>, context_error: Option<ContextError>) -> Self {
        AllFailed {
            errors,
            context_error,
        }
    }

    /// Every task's error, in spawn order.
    ///
    /// # Examples
    ///
    /// See [`AllFailed`].
    pub fn errors(&self) -> &[(TaskId, E)] {
        &self.errors
    }

    /// Takes the errors out, in spawn order.
    ///
    /// # Examples
    ///
    /// See [`FirstOk`].
    pub fn into_errors(self) -> Vec<(TaskId, E)> {
        self.errors
    }

    /// `Some` when the group was cancelled (from outside, or by its
    /// deadline) before any task succeeded: the tasks it stopped are not
    /// among the errors.
    ///
    /// # Examples
    ///
    /// See [`AllFailed`].
    pub fn context_error(&self) -> Option<ContextError> {
        self.context_error
    }
}

impl<E: fmt::Display> fmt::Display for AllFailed<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.errors.len();
        let tasks = if count == 1 { "task" } else { "tasks" };
        match (self.errors.first(), self.context_error) {
            (Some((_, first)), None) => write!(f, "all {count} {tasks} failed; the first: {first}"),
            (Some((_, first)), Some(stopped)) => write!(
                f,
                "{count} {tasks} failed and the rest were stopped ({stopped}); the first: {first}"
            ),
            (None, Some(stopped)) => write!(f, "no task succeeded: {stopped}"),
            (None, None) => f.write_str("no task succeeded: there was no task to run"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for AllFailed<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.errors
            .first()
            .map(|(_, error)| error as &(dyn std::error::Error + 'static))
    }
}
