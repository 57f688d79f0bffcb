//! What a started task runs: its [`Completion`], which reports how it ended
//! exactly once, and the [`TaskFuture`] that wraps an async task's future.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{self, Poll};

use pin_project_lite::pin_project;

use super::joiner::Joiner;
use super::lifecycle::{Meta, Tag};
use super::outcome::{Outcome, TaskId};
use super::runner::Task;
use super::shared::{Ended, Held, Shared};

/// Owned by a started task: reports its outcome exactly once, when it
/// finishes or, if it is dropped unfinished, as cancelled. Two words: the
/// group (taken by the report) and the task's entry in `own`. Who the task
/// is comes with the report: an async task's id, name and spawn site from
/// its runner cell ([`Meta`]), a blocking task's from
/// [`BlockingCompletion`]. Only a completion dropped unreported, on no path
/// of the runner's, looks its id up in `own`.
pub(super) struct Completion<T, E, J>
where
    T: Send + 'static,
    E: Send + 'static,
    J: Joiner<T, E>,
{
    /// `None` once reported.
    shared: Option<Arc<Shared<T, E, J>>>,
    /// Its entry in the group's `own` (its own context, and its id).
    own: usize,
}

impl<T, E, J> Completion<T, E, J>
where
    T: Send + 'static,
    E: Send + 'static,
    J: Joiner<T, E>,
{
    pub(super) fn new(shared: &Arc<Shared<T, E, J>>, own: usize) -> Self {
        Completion {
            shared: Some(shared.clone()),
            own,
        }
    }

    /// Reports how task `id` ended; `tag` says who it was.
    pub(super) fn finish(mut self, id: TaskId, outcome: Outcome<T, E>, tag: Option<Tag>) {
        self.report(id, outcome, true, None, tag);
    }

    /// Reports task `id` cancelled before it started: its group was
    /// cancelled first.
    pub(super) fn never_started(mut self, id: TaskId) {
        self.report(id, Outcome::Cancelled, false, None, None);
    }

    /// Whether it has reported already.
    fn is_reported(&self) -> bool {
        self.shared.is_none()
    }

    /// Reports task `id` once: later calls do nothing. `ran` is `false`
    /// for a task dropped before it finished; `key` is a blocking task's
    /// entry; `tag` says who it was, if not the entry.
    fn report(
        &mut self,
        id: TaskId,
        outcome: Outcome<T, E>,
        ran: bool,
        key: Option<usize>,
        tag: Option<Tag>,
    ) {
        if let Some(shared) = self.shared.take() {
            shared.complete(Ended {
                id,
                outcome,
                held: Held::Slot {
                    own: self.own,
                    key,
                    ran,
                },
                tag,
                stopped: false,
            });
        }
    }

    /// Reports the task, whose id it does not keep, as `outcome`, before it
    /// finished: for a completion dropped on no path of the runner's.
    #[cold]
    fn report_unknown(&mut self, outcome: Outcome<T, E>) {
        if let Some(shared) = &self.shared {
            let id = shared.own_id(self.own);
            self.report(id, outcome, false, None, None);
        }
    }
}

impl<T, E, J> Drop for Completion<T, E, J>
where
    T: Send + 'static,
    E: Send + 'static,
    J: Joiner<T, E>,
{
    /// An async task never started (its group was cancelled first), or
    /// (through no path of the runner's) one whose future was dropped
    /// without being told who it was: cancelled, with no name.
    fn drop(&mut self) {
        if !self.is_reported() {
            self.report_unknown(Outcome::Cancelled);
        }
    }
}

/// A blocking task's [`Completion`], with its entry in `tasks` (who it is,
/// its abort handle). Dropped unreported (its closure never ran: aborted,
/// or its runtime shut down), it reports the task cancelled.
pub(super) struct BlockingCompletion<T, E, J>
where
    T: Send + 'static,
    E: Send + 'static,
    J: Joiner<T, E>,
{
    completion: Completion<T, E, J>,
    id: TaskId,
    key: usize,
}

impl<T, E, J> BlockingCompletion<T, E, J>
where
    T: Send + 'static,
    E: Send + 'static,
    J: Joiner<T, E>,
{
    pub(super) fn new(shared: &Arc<Shared<T, E, J>>, id: TaskId, own: usize, key: usize) -> Self {
        BlockingCompletion {
            completion: Completion::new(shared, own),
            id,
            key,
        }
    }

    /// Reports how the task ended; its entry says who it was.
    pub(super) fn finish(mut self, outcome: Outcome<T, E>) {
        let key = Some(self.key);
        self.completion.report(self.id, outcome, true, key, None);
    }
}

impl<T, E, J> Drop for BlockingCompletion<T, E, J>
where
    T: Send + 'static,
    E: Send + 'static,
    J: Joiner<T, E>,
{
    fn drop(&mut self) {
        let key = Some(self.key);
        self.completion
            .report(self.id, Outcome::Cancelled, false, key, None);
    }
}

pin_project! {
    /// What a started async task runs: the user's future, polled and
    /// dropped inside `catch_unwind`, then its [`Completion`]. Its
    /// destructor runs when it completes, or when the runner drops it
    /// (a cancel, or its runtime shutting down): either way a panic there
    /// is the task's panic, reported by the group.
    pub(super) struct TaskFuture<Fut, T, E, J>
    where
        T: Send,
        T: 'static,
        E: Send,
        E: 'static,
        J: Joiner<T, E>,
    {
        #[pin]
        fut: Option<Fut>,
        // Not an `Option`: a reported completion is empty already, and an
        // `Option` around it would cost the future a word.
        completion: Completion<T, E, J>,
    }

    impl<Fut, T, E, J> PinnedDrop for TaskFuture<Fut, T, E, J>
    where
        T: Send,
        T: 'static,
        E: Send,
        E: 'static,
        J: Joiner<T, E>,
    {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            // Only if the runner did not call `abandon` (it always does):
            // the user's future first, then the report, cancelled.
            let dropped = catch_unwind(AssertUnwindSafe(|| this.fut.set(None)));
            if let Err(payload) = dropped {
                this.completion.report_unknown(Outcome::Panicked(payload));
            }
            // Otherwise the completion's own drop reports it cancelled.
        }
    }
}

impl<Fut, T, E, J> TaskFuture<Fut, T, E, J>
where
    T: Send + 'static,
    E: Send + 'static,
    J: Joiner<T, E>,
{
    pub(super) fn new(fut: Fut, completion: Completion<T, E, J>) -> Self {
        TaskFuture {
            fut: Some(fut),
            completion,
        }
    }
}

impl<Fut, T, E, J> Task for TaskFuture<Fut, T, E, J>
where
    Fut: Future<Output = Result<T, E>> + Send,
    T: Send + 'static,
    E: Send + 'static,
    J: Joiner<T, E>,
{
    fn poll_task(self: Pin<&mut Self>, cx: &mut task::Context<'_>, meta: &Meta) -> Poll<()> {
        let mut this = self.project();
        let Some(fut) = this.fut.as_mut().as_pin_mut() else {
            return Poll::Ready(());
        };
        let mut outcome = match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(result)) => Outcome::from_result(result),
            Err(payload) => Outcome::Panicked(payload),
        };
        // Drop the user's future now, before reporting: a panic in its
        // destructor is the task's panic (the first one wins).
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| this.fut.set(None)))
            && !outcome.is_panicked()
        {
            outcome = Outcome::Panicked(payload);
        }
        this.completion
            .report(meta.id, outcome, true, None, Some(meta.tag()));
        Poll::Ready(())
    }

    /// Dropped unfinished: the user's future first, so that its code is
    /// gone before the group counts the task as done, then the report.
    fn abandon(self: Pin<&mut Self>, meta: &Meta) {
        let mut this = self.project();
        let dropped = catch_unwind(AssertUnwindSafe(|| this.fut.set(None)));
        if !this.completion.is_reported() {
            let outcome = dropped.map_or_else(Outcome::Panicked, |()| Outcome::Cancelled);
            this.completion
                .report(meta.id, outcome, false, None, Some(meta.tag()));
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::FailFast;

    /// A started task's future is boxed with its completion: two words,
    /// since the task's id comes with every report.
    #[test]
    fn a_completion_is_two_words() {
        let size = size_of::<Completion<u64, String, FailFast>>();
        assert_eq!(size, 2 * size_of::<usize>(), "{size}");
    }
}
