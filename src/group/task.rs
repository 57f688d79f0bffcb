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
/// finishes or, if it is dropped unfinished, as cancelled.
pub(super) struct Completion<T, E, J>
where
    T: Send + 'static,
    E: Send + 'static,
    J: Joiner<T, E>,
{
    shared: Arc<Shared<T, E, J>>,
    id: TaskId,
    /// Its entry in `tasks`, for a blocking task, which keeps who it is
    /// there; [`NO_KEY`] for an async one, whose cell keeps it ([`Meta`]).
    key: u32,
    finished: bool,
}

/// `Completion::key` of an async task.
const NO_KEY: u32 = u32::MAX;

impl<T, E, J> Completion<T, E, J>
where
    T: Send + 'static,
    E: Send + 'static,
    J: Joiner<T, E>,
{
    pub(super) fn new(shared: &Arc<Shared<T, E, J>>, id: TaskId, key: Option<usize>) -> Self {
        let key = key.map_or(NO_KEY, |key| {
            u32::try_from(key).expect("fewer than 4 billion blocking tasks at once")
        });
        Completion {
            shared: shared.clone(),
            id,
            key,
            finished: false,
        }
    }

    /// Reports how the task ended; `tag` says who it was (`None`: a
    /// blocking task, whose entry in `tasks` says it).
    pub(super) fn finish(mut self, outcome: Outcome<T, E>, tag: Option<Tag>) {
        self.finished = true;
        self.report(outcome, true, tag);
    }

    /// Reports a task dropped before it finished, as `Drop` does, but with
    /// who it was and an outcome: cancelled, or the panic of the task
    /// future's destructor.
    fn abandon(mut self, outcome: Outcome<T, E>, tag: Tag) {
        self.finished = true;
        self.report(outcome, false, Some(tag));
    }

    fn report(&mut self, outcome: Outcome<T, E>, ran: bool, tag: Option<Tag>) {
        let key = (self.key != NO_KEY).then_some(self.key as usize);
        self.shared.complete(Ended {
            id: self.id,
            outcome,
            held: Held::Slot { key, ran },
            tag,
        });
    }
}

impl<T, E, J> Drop for Completion<T, E, J>
where
    T: Send + 'static,
    E: Send + 'static,
    J: Joiner<T, E>,
{
    /// A blocking task whose closure never ran, or (through no path of
    /// the runner's) an async task's future dropped without being told.
    fn drop(&mut self) {
        if !self.finished {
            self.report(Outcome::Cancelled, false, None);
        }
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
        completion: Option<Completion<T, E, J>>,
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
            if let Some(completion) = this.completion.take() {
                match dropped {
                    Ok(()) => drop(completion),
                    Err(payload) => completion.finish(Outcome::Panicked(payload), None),
                }
            }
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
            completion: Some(completion),
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
        if let Some(completion) = this.completion.take() {
            completion.finish(outcome, Some(meta.tag()));
        }
        Poll::Ready(())
    }

    /// Dropped unfinished: the user's future first, so that its code is
    /// gone before the group counts the task as done, then the report.
    fn abandon(self: Pin<&mut Self>, meta: &Meta) {
        let mut this = self.project();
        let dropped = catch_unwind(AssertUnwindSafe(|| this.fut.set(None)));
        if let Some(completion) = this.completion.take() {
            let outcome = dropped.map_or_else(Outcome::Panicked, |()| Outcome::Cancelled);
            completion.abandon(outcome, meta.tag());
        }
    }
}
