//! How a group ends: the [`Joiner`] trait, its [`Decision`]s, the
//! [`Unread`] outcomes it finishes with, and the built-in policies, one file
//! each.
//!
//! A policy sees every task end, one call at a time, and decides whether
//! the group goes on ([`Decision::Continue`]) or is cancelled
//! ([`Decision::Cancel`]); when the group is joined it turns the outcomes
//! nobody read into what [`TaskGroup::wait`](crate::TaskGroup::wait)
//! returns. Everything else (limits, queues, outcomes, slots, panics
//! caught, names) is the group's bookkeeping, in `shared.rs`, the same for
//! every policy. A new policy is one more file here.

mod fail_fast;
mod first_ok;
mod hedge;
mod supervise;

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;

pub use fail_fast::FailFast;
pub use first_ok::{AllFailed, FirstOk};
pub use hedge::hedge;
pub use supervise::Supervise;

use super::outcome::{Outcome, TaskId};
use crate::{Cause, Context};

/// A join policy: decides, as each task ends, whether the group goes on,
/// and builds what [`TaskGroup::wait`](crate::TaskGroup::wait) returns.
///
/// A group calls [`on_complete`](Joiner::on_complete) once for every task
/// that ends — returned `Ok` or `Err`, panicked, dropped by a cancel, or
/// never started — in completion order, one call at a time, on the thread
/// where the task ended, before [`next`](crate::TaskGroup::next) can hand
/// that outcome out, and with no lock held that a task could need. When
/// the group is joined, [`wait`](crate::TaskGroup::wait) calls
/// [`finish`](Joiner::finish) with the outcomes `next` did not hand out,
/// before its final cancel of the group context.
///
/// The built-in policies are [`FailFast`] (the default: the first failure
/// cancels the rest), [`Supervise`] (never cancels; every outcome) and
/// [`FirstOk`] (the first success cancels the rest); [`hedge`] runs
/// staggered attempts under `FirstOk`.
///
/// # Panics
///
/// A panic inside `on_complete` cancels the group; the joiner is not called
/// again, and `wait` re-raises that panic after joining every task. A panic
/// inside `finish` unwinds out of `wait` (the group is cancelled as it is
/// dropped). What a *task's* panic means is the joiner's to decide in
/// `finish`: `FailFast` and `FirstOk` re-raise it, `Supervise` returns it.
///
/// # Examples
///
/// A quorum: cancel the rest once 3 replicas answered, and return those 3
/// values.
///
/// ```
/// use std::time::Duration;
/// use taskgroup::{Cause, Context, Decision, Joiner, Outcome, TaskGroup, TaskId, Unread};
///
/// #[derive(Debug)]
/// struct QuorumReached;
///
/// impl std::fmt::Display for QuorumReached {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("quorum reached")
///     }
/// }
///
/// impl std::error::Error for QuorumReached {}
///
/// struct Quorum {
///     need: usize,
///     answers: Vec<(TaskId, u32)>,
/// }
///
/// impl Joiner<u32, String> for Quorum {
///     type Output = Result<Vec<u32>, String>;
///
///     fn on_complete(&mut self, id: TaskId, outcome: &Outcome<u32, String>, _group: &Context) -> Decision {
///         if let Outcome::Ok(value) = outcome {
///             self.answers.push((id, *value));
///             if self.answers.len() == self.need {
///                 return Decision::Cancel(Cause::new(QuorumReached));
///             }
///         }
///         Decision::Continue
///     }
///
///     fn finish(self, _unread: Unread<u32, String>, _group: &Context) -> Self::Output {
///         if self.answers.len() < self.need {
///             return Err(format!("only {} of {} replicas answered", self.answers.len(), self.need));
///         }
///         Ok(self.answers.into_iter().map(|(_, value)| value).collect())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut group = TaskGroup::builder()
///     .joiner(Quorum { need: 3, answers: Vec::new() })
///     .build();
/// for replica in 0..5u32 {
///     group.spawn(move |ctx| async move {
///         // Replica r answers after 10 * (5 - r) ms: 4, 3 and 2 answer first.
///         ctx.sleep(Duration::from_millis(10 * u64::from(5 - replica)))
///             .await
///             .map_err(|e| e.to_string())?;
///         Ok(replica)
///     });
/// }
/// assert_eq!(group.wait().await, Ok(vec![4, 3, 2]));
/// # }
/// ```
pub trait Joiner<T, E>: Send + 'static {
    /// What [`TaskGroup::wait`](crate::TaskGroup::wait) returns.
    type Output;

    /// Called once for every task that ends, with how it ended, in
    /// completion order and one call at a time; `group` is the group's
    /// context (is it cancelled already, and why).
    ///
    /// Returning [`Decision::Cancel`] cancels the group context with that
    /// cause before the task's slot can go to a queued closure. Once the
    /// group is cancelled (by any decision, from outside, or by its
    /// deadline), further decisions to cancel change nothing.
    fn on_complete(&mut self, id: TaskId, outcome: &Outcome<T, E>, group: &Context) -> Decision;

    /// Builds what `wait` returns, from the outcomes that
    /// [`next`](crate::TaskGroup::next) did not hand out, in spawn order.
    /// Runs once every task has ended and before `wait` cancels the group
    /// context.
    fn finish(self, unread: Unread<T, E>, group: &Context) -> Self::Output;
}

/// What a [`Joiner`] decides when a task ends.
///
/// # Examples
///
/// ```
/// use taskgroup::{Cause, ContextError, Decision};
///
/// let go_on = Decision::Continue;
/// let stop = Decision::Cancel(Cause::new(ContextError::Cancelled));
/// assert!(matches!(go_on, Decision::Continue));
/// assert!(matches!(stop, Decision::Cancel(cause) if cause.to_string() == "context cancelled"));
/// ```
#[derive(Clone, Debug)]
pub enum Decision {
    /// The group goes on.
    Continue,
    /// Cancel the group context with this cause: running async tasks are
    /// dropped at their next await, queued ones never start.
    Cancel(Cause),
}

/// The outcomes [`TaskGroup::next`](crate::TaskGroup::next) did not hand
/// out, in spawn order: what a [`Joiner`] finishes with.
///
/// An iterator of `(TaskId, Outcome<T, E>)`; it knows its length.
///
/// # Examples
///
/// ```
/// use taskgroup::{Outcome, Supervise, TaskGroup};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Supervise's `finish` collects the unread outcomes, in spawn order.
/// let mut group = TaskGroup::<u8, String>::builder().joiner(Supervise).build();
/// group.spawn(|_ctx| async { Ok(1) });
/// group.spawn(|_ctx| async { Err("no".to_string()) });
/// let outcomes = group.wait().await;
/// assert!(matches!(outcomes[..], [Outcome::Ok(1), Outcome::Err(_)]));
/// # }
/// ```
pub struct Unread<T, E> {
    /// Completion order, until the first call to `next` sorts them.
    done: VecDeque<(TaskId, Outcome<T, E>)>,
    sorted: Option<std::vec::IntoIter<(TaskId, Outcome<T, E>)>>,
    /// The task whose joiner decision cancelled the group, if one did
    /// before anything else cancelled it.
    cancelled_by: Option<TaskId>,
    /// Some unread task returned `Ok` only once the group was cancelled.
    late_ok: bool,
    /// As the group was joined: some unread task panicked; every unread
    /// task returned `Ok` (one scan, for the built-in policies).
    any_panicked: bool,
    all_ok: bool,
}

impl<T, E> Unread<T, E> {
    pub(super) fn new(
        done: VecDeque<(TaskId, Outcome<T, E>)>,
        cancelled_by: Option<TaskId>,
        late_ok: bool,
    ) -> Self {
        let (mut any_panicked, mut all_ok) = (false, true);
        for (_, outcome) in &done {
            any_panicked |= outcome.is_panicked();
            all_ok &= outcome.is_ok();
        }
        Unread {
            done,
            sorted: None,
            cancelled_by,
            late_ok,
            any_panicked,
            all_ok,
        }
    }

    /// The task whose [`Decision::Cancel`] cancelled the group, when it did
    /// so before the group was cancelled any other way.
    pub(crate) fn cancelled_by(&self) -> Option<TaskId> {
        self.cancelled_by
    }

    /// Whether some unread task returned `Ok` only after the group was
    /// cancelled (it saw the cancel and wound down).
    pub(crate) fn has_late_ok(&self) -> bool {
        self.late_ok
    }

    /// Whether every unread task returned `Ok`, as the group was joined.
    pub(crate) fn all_ok(&self) -> bool {
        self.all_ok
    }

    /// Takes the panic the built-in policies re-raise: the one that
    /// cancelled the group, else the first in completion order.
    pub(crate) fn take_first_panic(&mut self) -> Option<Box<dyn Any + Send>> {
        if !self.any_panicked {
            return None;
        }
        let first = self
            .cancelled_by
            .and_then(|by| {
                self.done
                    .iter()
                    .position(|(id, o)| *id == by && o.is_panicked())
            })
            .or_else(|| self.done.iter().position(|(_, o)| o.is_panicked()))?;
        self.done.remove(first)?.1.into_panic()
    }

    /// Takes one task's outcome out, if it is unread.
    pub(crate) fn take_task(&mut self, id: TaskId) -> Option<Outcome<T, E>> {
        let at = self.done.iter().position(|(task, _)| *task == id)?;
        self.done.remove(at).map(|(_, outcome)| outcome)
    }

    /// What is left, each mapped by `keep`, in spawn order (see
    /// [`in_spawn_order`]).
    pub(crate) fn collect_in_spawn_order<X>(
        self,
        keep: impl FnMut(TaskId, Outcome<T, E>) -> Option<X>,
    ) -> Vec<X> {
        let mut keep = keep;
        match self.sorted {
            Some(rest) => rest.filter_map(|(id, o)| keep(id, o)).collect(),
            None => in_spawn_order(self.done, keep),
        }
    }
}

impl<T, E> Iterator for Unread<T, E> {
    type Item = (TaskId, Outcome<T, E>);

    fn next(&mut self) -> Option<Self::Item> {
        let sorted = self.sorted.get_or_insert_with(|| {
            in_spawn_order(std::mem::take(&mut self.done), |id, o| Some((id, o))).into_iter()
        });
        sorted.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let len = self
            .sorted
            .as_ref()
            .map_or(self.done.len(), ExactSizeIterator::len);
        (len, Some(len))
    }
}

impl<T, E> ExactSizeIterator for Unread<T, E> {}

impl<T, E> fmt::Debug for Unread<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unread").field("len", &self.len()).finish()
    }
}

/// Puts finished tasks in spawn order, each mapped by `keep`: in linear
/// time when ids are dense (all but the ones `next` handed out), by sorting
/// when they are sparse. `keep` maps before the reorder so that `wait`
/// reorders bare values (for `T = ()`, a byte a task) rather than whole
/// outcomes.
pub(super) fn in_spawn_order<T, E, X>(
    done: VecDeque<(TaskId, Outcome<T, E>)>,
    mut keep: impl FnMut(TaskId, Outcome<T, E>) -> Option<X>,
) -> Vec<X> {
    let Some((first, last)) = done
        .iter()
        .map(|(id, _)| id.0)
        .fold(None, |span, id| match span {
            None => Some((id, id)),
            Some((first, last)) => Some((id.min(first), id.max(last))),
        })
    else {
        return Vec::new();
    };
    let span = usize::try_from(last - first + 1).unwrap_or(usize::MAX);
    if span / 2 > done.len() {
        // Sparse (`next` handed out most of a long run): sort what is left
        // rather than allocate a slot for every id in between.
        let mut done = Vec::from(done);
        done.sort_unstable_by_key(|(id, _)| *id);
        return done
            .into_iter()
            .filter_map(|(id, outcome)| keep(id, outcome))
            .collect();
    }
    let mut slots: Vec<Option<X>> = std::iter::repeat_with(|| None).take(span).collect();
    for (id, outcome) in done {
        slots[(id.0 - first) as usize] = keep(id, outcome);
    }
    slots.into_iter().flatten().collect()
}
