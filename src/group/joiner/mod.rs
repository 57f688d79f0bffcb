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

mod discard;
mod fail_fast;
mod first_ok;
mod supervise;

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;

pub use discard::{Discard, Tally};
pub use fail_fast::FailFast;
pub use first_ok::{AllFailed, FirstOk};
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
/// [`FirstOk`] (the first success cancels the rest); [`hedge`](crate::hedge) runs
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

    /// What the group keeps of a task that ended, for
    /// [`next`](crate::TaskGroup::next) and [`finish`](Joiner::finish):
    /// called right after [`on_complete`](Joiner::on_complete) with the
    /// same ending, in the same turn. The default keeps every outcome.
    ///
    /// Return `None` to keep nothing: the joiner takes the outcome (counts
    /// it, keeps a panic's payload, drops it), and `next` never hands it
    /// out. A joiner for a server's connections keeps nothing (as
    /// [`Discard`](struct@crate::Discard) does), so that a group that ran a million tasks holds no
    /// more memory than a new one.
    ///
    /// `stopped` is `true` when [`TaskGroup::cancel_task`](crate::TaskGroup::cancel_task)
    /// cancelled this task on its own and it then ended without a value
    /// (an `Err` or [`Outcome::Cancelled`]): that end is a consequence of
    /// the stop, not a failure. A [`Decision::Cancel`] for such an ending
    /// changes nothing: the group goes on.
    ///
    /// # Examples
    ///
    /// Count successes, keep the failures only:
    ///
    /// ```
    /// use taskgroup::{Context, Decision, Joiner, Outcome, TaskGroup, TaskId, Unread};
    ///
    /// #[derive(Default)]
    /// struct Failures {
    ///     ok: usize,
    /// }
    ///
    /// impl Joiner<u32, String> for Failures {
    ///     type Output = (usize, Vec<String>);
    ///
    ///     fn on_complete(&mut self, _: TaskId, _: &Outcome<u32, String>, _: &Context) -> Decision {
    ///         Decision::Continue
    ///     }
    ///
    ///     fn keep(&mut self, _: TaskId, outcome: Outcome<u32, String>, _: bool) -> Option<Outcome<u32, String>> {
    ///         if outcome.is_ok() {
    ///             self.ok += 1;
    ///             return None; // the value is not kept
    ///         }
    ///         Some(outcome)
    ///     }
    ///
    ///     fn finish(self, unread: Unread<u32, String>, _: &Context) -> Self::Output {
    ///         (self.ok, unread.filter_map(|(_, outcome)| outcome.err()).collect())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::builder().joiner(Failures::default()).build();
    /// for n in 0..5u32 {
    ///     group.spawn(move |_ctx| async move {
    ///         if n == 3 { Err(format!("item {n} failed")) } else { Ok(n) }
    ///     });
    /// }
    /// assert_eq!(group.wait().await, (4, vec!["item 3 failed".to_string()]));
    /// # }
    /// ```
    #[inline]
    fn keep(&mut self, id: TaskId, outcome: Outcome<T, E>, stopped: bool) -> Option<Outcome<T, E>> {
        let _ = (id, stopped);
        Some(outcome)
    }

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
    /// The unread tasks `cancel_task` stopped that ended without a value.
    pub(crate) stopped: Vec<TaskId>,
    /// As the group was joined: some unread task panicked; every unread
    /// task returned `Ok` (one scan, for the built-in policies).
    any_panicked: bool,
    all_ok: bool,
}

impl<T, E> Unread<T, E> {
    pub(crate) fn new(
        done: VecDeque<(TaskId, Outcome<T, E>)>,
        cancelled_by: Option<TaskId>,
        late_ok: bool,
        stopped: Vec<TaskId>,
    ) -> Self {
        let (mut any_panicked, mut all_ok) = (false, true);
        for (id, outcome) in &done {
            any_panicked |= outcome.is_panicked();
            all_ok &= outcome.is_ok() || stopped.contains(id);
        }
        Unread {
            done,
            sorted: None,
            cancelled_by,
            late_ok,
            stopped,
            any_panicked,
            all_ok,
        }
    }

    /// The task whose [`Decision::Cancel`] cancelled the group, when it did
    /// so before the group was cancelled any other way: the first failure
    /// for [`FailFast`], the winner for [`FirstOk`]. `None` when the group
    /// was not cancelled, or was cancelled from outside (its parent, its
    /// deadline, [`TaskGroup::cancel`](crate::TaskGroup::cancel)) first.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{Context, Decision, Joiner, Outcome, TaskGroup, TaskId, Unread};
    ///
    /// // Returns the id of the task that stopped the batch, if one did.
    /// struct WhoStopped;
    ///
    /// impl Joiner<(), String> for WhoStopped {
    ///     type Output = Option<TaskId>;
    ///
    ///     fn on_complete(&mut self, _: TaskId, outcome: &Outcome<(), String>, _: &Context) -> Decision {
    ///         match outcome {
    ///             Outcome::Err(e) => Decision::Cancel(taskgroup::Cause::new(std::io::Error::other(e.clone()))),
    ///             _ => Decision::Continue,
    ///         }
    ///     }
    ///
    ///     fn finish(self, unread: Unread<(), String>, _: &Context) -> Self::Output {
    ///         unread.cancelled_by()
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::builder().joiner(WhoStopped).build();
    /// group.spawn(|_ctx| async { Ok(()) });
    /// let bad = group.spawn(|_ctx| async { Err("disk full".to_string()) });
    /// assert_eq!(group.wait().await, Some(bad));
    /// # }
    /// ```
    pub fn cancelled_by(&self) -> Option<TaskId> {
        self.cancelled_by
    }

    /// Whether some unread task returned `Ok` only after the group was
    /// cancelled (it saw the cancel and wound down): [`FailFast`] then
    /// reports the group cancelled rather than every value, since the
    /// values may be partial.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::{Context, Decision, Joiner, Outcome, TaskGroup, TaskId, Unread};
    ///
    /// struct Late;
    ///
    /// impl Joiner<(), String> for Late {
    ///     type Output = bool;
    ///
    ///     fn on_complete(&mut self, _: TaskId, _: &Outcome<(), String>, _: &Context) -> Decision {
    ///         Decision::Continue
    ///     }
    ///
    ///     fn finish(self, unread: Unread<(), String>, _: &Context) -> bool {
    ///         unread.has_late_ok()
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // A grace lets a task end on its own after the cancel.
    /// let mut group = TaskGroup::builder().joiner(Late).grace(Duration::from_secs(1)).build();
    /// group.spawn(|ctx| async move {
    ///     ctx.done().await; // winds down once cancelled, and says Ok
    ///     Ok(())
    /// });
    /// tokio::task::yield_now().await;
    /// group.cancel();
    /// assert!(group.wait().await);
    /// # }
    /// ```
    pub fn has_late_ok(&self) -> bool {
        self.late_ok
    }

    /// Whether [`TaskGroup::cancel_task`](crate::TaskGroup::cancel_task)
    /// stopped this unread task and it then ended without a value (an
    /// `Err` or [`Outcome::Cancelled`]): a consequence of the stop, not a
    /// failure. [`FailFast`] leaves such tasks out of what `wait` returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{Context, Decision, Joiner, Outcome, TaskGroup, TaskId, Unread};
    ///
    /// // The errors of the tasks that failed on their own.
    /// struct OwnFailures;
    ///
    /// impl Joiner<(), String> for OwnFailures {
    ///     type Output = Vec<String>;
    ///
    ///     fn on_complete(&mut self, _: TaskId, _: &Outcome<(), String>, _: &Context) -> Decision {
    ///         Decision::Continue
    ///     }
    ///
    ///     fn finish(self, mut unread: Unread<(), String>, _: &Context) -> Vec<String> {
    ///         let mut errors = Vec::new();
    ///         while let Some((id, outcome)) = unread.next() {
    ///             if let Outcome::Err(e) = outcome
    ///                 && !unread.is_stopped(id)
    ///             {
    ///                 errors.push(e);
    ///             }
    ///         }
    ///         errors
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::builder().joiner(OwnFailures).build();
    /// let kicked = group.spawn(|ctx| async move {
    ///     ctx.done().await;
    ///     Err("kicked".to_string())
    /// });
    /// group.spawn(|_ctx| async { Err("broken".to_string()) });
    /// tokio::task::yield_now().await;
    /// group.cancel_task(kicked);
    /// assert_eq!(group.wait().await, ["broken"]);
    /// # }
    /// ```
    pub fn is_stopped(&self, id: TaskId) -> bool {
        self.stopped.contains(&id)
    }

    /// Whether every unread task returned `Ok` (or was stopped by
    /// `cancel_task`), as the group was joined.
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

/// Puts finished tasks in spawn order, each mapped by `keep`: as they are
/// when they already are, in linear time when ids are dense (all but the ones `next` handed out), by sorting
/// when they are sparse. `keep` maps before the reorder so that `wait`
/// reorders bare values (for `T = ()`, a byte a task) rather than whole
/// outcomes.
pub(super) fn in_spawn_order<T, E, X>(
    done: VecDeque<(TaskId, Outcome<T, E>)>,
    mut keep: impl FnMut(TaskId, Outcome<T, E>) -> Option<X>,
) -> Vec<X> {
    if done
        .iter()
        .zip(done.iter().skip(1))
        .all(|((a, _), (b, _))| a < b)
    {
        // Already in spawn order (a small group, or tasks that ended in
        // the order they started): no reorder, one allocation at most.
        return done
            .into_iter()
            .filter_map(|(id, outcome)| keep(id, outcome))
            .collect();
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn done(ids: &[u64]) -> VecDeque<(TaskId, Outcome<u64, ()>)> {
        ids.iter()
            .map(|&id| (TaskId(id), Outcome::Ok(id)))
            .collect()
    }

    fn ordered(ids: &[u64]) -> Vec<u64> {
        in_spawn_order(done(ids), |_, outcome| match outcome {
            Outcome::Ok(value) => Some(value),
            _ => None,
        })
    }

    #[test]
    fn in_spawn_order_keeps_an_ordered_run_as_it_is() {
        assert_eq!(ordered(&[]), Vec::<u64>::new());
        assert_eq!(ordered(&[7]), [7]);
        assert_eq!(ordered(&[0, 1, 2, 3]), [0, 1, 2, 3]);
        // Ids `next` handed out leave gaps: still in order.
        assert_eq!(ordered(&[2, 5, 1000]), [2, 5, 1000]);
    }

    #[test]
    fn in_spawn_order_reorders_dense_and_sparse_ids() {
        assert_eq!(ordered(&[3, 0, 2, 1]), [0, 1, 2, 3]);
        assert_eq!(ordered(&[1, 0]), [0, 1]);
        // Sparse: sorted rather than slotted.
        assert_eq!(ordered(&[1000, 3, 500]), [3, 500, 1000]);
    }

    #[test]
    fn in_spawn_order_leaves_out_what_keep_drops() {
        let odd = in_spawn_order(done(&[3, 1, 2]), |id, _| (id.0 % 2 == 1).then_some(id.0));
        assert_eq!(odd, [1, 3]);
        let odd = in_spawn_order(done(&[1, 2, 3]), |id, _| (id.0 % 2 == 1).then_some(id.0));
        assert_eq!(odd, [1, 3]);
    }
}
