//! [`FailFast`]: the first failure cancels the rest (Go's errgroup).

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::{Decision, Joiner, Unread};
use crate::group::panics::panic_message;
use crate::{Cause, Context, ContextError, GroupError, Outcome, TaskFailed, TaskId};

/// The default policy: the first `Err` or panic, in time, cancels the
/// group; `wait` returns every value in spawn order, or that first error.
///
/// Its [`Output`](Joiner::Output) is `Result<Vec<T>, GroupError<E>>`:
///
/// - `Ok(values)` when every task (not handed out by
///   [`next`](crate::TaskGroup::next)) returned `Ok` before the group was
///   cancelled, if it was;
/// - `Err(GroupError::Failed(e))` with the first error in time, the one
///   that cancelled the group (with a [`TaskFailed`] cause). Errors
///   returned after the group was cancelled never replace it;
/// - `Err(GroupError::Cancelled(_))` when the group was cancelled from
///   outside (or by a failure `next` already handed out) before every task
///   finished.
///
/// A task's panic cancels the group like an error; `finish` re-raises the
/// first panic (the one that cancelled the group, else the first in time)
/// after every task was joined. A panic outranks any error.
///
/// # Examples
///
/// ```
/// use taskgroup::{FailFast, GroupError, TaskGroup};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // `.joiner(FailFast)` is what every group does unless told otherwise.
/// let mut group = TaskGroup::builder().joiner(FailFast).build();
/// group.spawn(|_ctx| async { Ok(1) });
/// group.spawn(|_ctx| async { Err("backend 1 is down".to_string()) });
/// group.spawn(|ctx| async move {
///     ctx.done().await; // cancelled by the failure
///     Ok(3)
/// });
/// assert_eq!(group.wait().await, Err(GroupError::Failed("backend 1 is down".to_string())));
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailFast;

impl<T, E: fmt::Display> Joiner<T, E> for FailFast {
    type Output = Result<Vec<T>, GroupError<E>>;

    fn on_complete(&mut self, id: TaskId, outcome: &Outcome<T, E>, group: &Context) -> Decision {
        // Only a failure while the group is live decides anything.
        if matches!(outcome, Outcome::Ok(_) | Outcome::Cancelled) || group.is_cancelled() {
            return Decision::Continue;
        }
        match outcome {
            Outcome::Err(error) => {
                Decision::Cancel(Cause::new(TaskFailed::new(id, false, describe(error))))
            }
            Outcome::Panicked(payload) => Decision::Cancel(Cause::new(TaskFailed::new(
                id,
                true,
                panic_message(&**payload).to_owned(),
            ))),
            Outcome::Ok(_) | Outcome::Cancelled => Decision::Continue,
        }
    }

    fn finish(self, mut unread: Unread<T, E>, group: &Context) -> Self::Output {
        if let Some(payload) = unread.take_first_panic() {
            std::panic::resume_unwind(payload);
        }
        if let Some(first) = unread.cancelled_by()
            && let Some(Outcome::Err(error)) = unread.take_task(first)
        {
            return Err(GroupError::Failed(error));
        }
        if !unread.has_late_ok() && unread.all_ok() {
            return Ok(unread.collect_in_spawn_order(|_, outcome| outcome.ok()));
        }
        Err(GroupError::Cancelled(
            group.err().unwrap_or(ContextError::Cancelled),
        ))
    }
}

/// A task error's `Display`, or a placeholder if that panics: the group's
/// bookkeeping must survive any user code.
pub(crate) fn describe<E: fmt::Display>(error: &E) -> String {
    catch_unwind(AssertUnwindSafe(|| error.to_string()))
        .unwrap_or_else(|_| "<the error's Display panicked>".to_owned())
}
