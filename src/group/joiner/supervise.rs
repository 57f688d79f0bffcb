//! [`Supervise`]: never cancels; every outcome comes back.

use super::{Decision, Joiner, Unread};
use crate::{Context, Outcome, TaskId};

/// A policy that never cancels the group: a failure or a panic is that
/// task's outcome and nothing more (Kotlin's `supervisorScope`). `wait`
/// returns every unread [`Outcome`] in spawn order, panics included, and
/// re-raises nothing.
///
/// Every outcome is kept until it is read, by [`next`](crate::TaskGroup::next)
/// or by `wait`: right for a batch, a leak for a group that lives as long
/// as a server and is never read. There, read as tasks end, or use
/// [`Discard`](struct@crate::Discard), which keeps none.
///
/// Its [`Output`](Joiner::Output) is `Vec<Outcome<T, E>>`. The group is
/// still cancelled from outside as always (its parent context, its
/// deadline, [`TaskGroup::cancel`](crate::TaskGroup::cancel)): the tasks it
/// stops are [`Outcome::Cancelled`].
///
/// # Examples
///
/// ```
/// use taskgroup::{Outcome, Supervise, TaskGroup};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // A batch job that must see every failure, not just the first.
/// let mut group = TaskGroup::builder().joiner(Supervise).build();
/// for n in 0..4u32 {
///     group.spawn(move |_ctx| async move {
///         if n % 2 == 1 { Err(format!("item {n} is corrupt")) } else { Ok(n) }
///     });
/// }
/// let outcomes = group.wait().await;
/// let failed: Vec<String> = outcomes.into_iter().filter_map(Outcome::err).collect();
/// assert_eq!(failed, ["item 1 is corrupt", "item 3 is corrupt"]);
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Supervise;

impl<T, E> Joiner<T, E> for Supervise {
    type Output = Vec<Outcome<T, E>>;

    fn on_complete(&mut self, _: TaskId, _: &Outcome<T, E>, _: &Context) -> Decision {
        Decision::Continue
    }

    fn finish(self, unread: Unread<T, E>, _: &Context) -> Self::Output {
        unread.collect_in_spawn_order(|_, outcome| Some(outcome))
    }
}
