//! [`Discard`](struct@crate::Discard): never cancels and keeps no outcome, for groups that live as
//! long as a server; and [`Tally`], what it counts.

use std::any::Any;
use std::fmt;

use super::{Decision, Joiner, Unread};
use crate::{Context, Outcome, TaskId};

/// A policy for tasks whose results nobody reads: a server's connections,
/// a crawler's fetches that report elsewhere. It never cancels the group
/// on a task's error or panic, and keeps no outcome, so a group that ran a
/// million tasks and was never read holds no more memory than a new one
/// (Swift's `DiscardingTaskGroup`).
///
/// Its [`Output`](Joiner::Output) is a [`Tally`]: how many tasks ended
/// each way, and the first panic's payload, kept for whoever waits.
/// [`next`](crate::TaskGroup::next), [`try_next`](crate::TaskGroup::try_next)
/// and the group's `Stream` hand out nothing (`None` once every task
/// ended); [`len`](crate::TaskGroup::len) counts the tasks not yet ended.
/// Later panics are counted, and with the `tracing` feature each is an
/// event. The group is still cancelled from outside as always (its parent
/// context, its deadline, [`cancel`](crate::TaskGroup::cancel),
/// [`shutdown`](crate::TaskGroup::shutdown)).
///
/// A task that [`cancel_task`](crate::TaskGroup::cancel_task) stopped and
/// that ends without a value counts as cancelled, not failed.
///
/// # Examples
///
/// ```
/// use taskgroup::{Discard, TaskGroup};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut conns = TaskGroup::<(), String>::builder().joiner(Discard).name("connections").build();
/// for n in 0..10u32 {
///     conns.spawn(move |_ctx| async move {
///         if n == 7 { Err("peer reset".to_string()) } else { Ok(()) }
///     });
/// }
/// let tally = conns.wait().await;
/// assert_eq!((tally.ok(), tally.failed(), tally.panicked(), tally.cancelled()), (9, 1, 0, 0));
/// # }
/// ```
///
/// `Discard` is a type and a constant of that type, so that the call site
/// reads `.joiner(Discard)` as for the other built-in policies; the value
/// carries the count.
#[derive(Debug, Default)]
pub struct Discard {
    tally: Tally,
}

/// The [`Discard`](struct@crate::Discard) policy, as a value: `.joiner(Discard)`.
///
/// # Examples
///
/// See [`Discard`](struct@Discard).
#[allow(non_upper_case_globals)]
pub const Discard: Discard = Discard {
    tally: Tally::new(),
};

impl<T, E> Joiner<T, E> for Discard {
    type Output = Tally;

    fn on_complete(&mut self, _: TaskId, _: &Outcome<T, E>, _: &Context) -> Decision {
        Decision::Continue
    }

    fn keep(&mut self, _: TaskId, outcome: Outcome<T, E>, stopped: bool) -> Option<Outcome<T, E>> {
        self.tally.count(outcome, stopped);
        None
    }

    fn finish(self, _: Unread<T, E>, _: &Context) -> Tally {
        self.tally
    }
}

/// What a [`Discard`](struct@crate::Discard) group counted once every task ended: how many
/// returned `Ok`, returned `Err`, panicked, or were cancelled (dropped by a
/// cancel, never started, or stopped by
/// [`cancel_task`](crate::TaskGroup::cancel_task) and ended without a
/// value), and the first panic's payload.
///
/// # Examples
///
/// ```
/// use taskgroup::{Discard, TaskGroup};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut jobs = TaskGroup::<(), String>::builder().joiner(Discard).build();
/// jobs.spawn(|_ctx| async { panic!("bad record 7") });
/// jobs.spawn(|_ctx| async { Ok(()) });
/// let mut tally = jobs.wait().await;
/// assert_eq!(tally.panicked(), 1);
/// let payload = tally.take_panic().unwrap();
/// assert_eq!(payload.downcast_ref::<&str>(), Some(&"bad record 7"));
/// # }
/// ```
pub struct Tally {
    ok: u64,
    failed: u64,
    panicked: u64,
    cancelled: u64,
    first_panic: Option<Box<dyn Any + Send>>,
}

impl Tally {
    const fn new() -> Tally {
        Tally {
            ok: 0,
            failed: 0,
            panicked: 0,
            cancelled: 0,
            first_panic: None,
        }
    }

    /// The tasks that returned `Ok`.
    ///
    /// # Examples
    ///
    /// See [`Tally`].
    pub fn ok(&self) -> u64 {
        self.ok
    }

    /// The tasks that returned `Err` (not counting those
    /// [`cancel_task`](crate::TaskGroup::cancel_task) stopped).
    ///
    /// # Examples
    ///
    /// See [`Discard`](struct@crate::Discard).
    pub fn failed(&self) -> u64 {
        self.failed
    }

    /// The tasks that panicked.
    ///
    /// # Examples
    ///
    /// See [`Tally`].
    pub fn panicked(&self) -> u64 {
        self.panicked
    }

    /// The tasks cancelled: dropped by a cancel, never started, or stopped
    /// by [`cancel_task`](crate::TaskGroup::cancel_task) and ended without
    /// a value.
    ///
    /// # Examples
    ///
    /// See [`Discard`](struct@crate::Discard).
    pub fn cancelled(&self) -> u64 {
        self.cancelled
    }

    /// Takes the first panic's payload, to re-raise with
    /// [`std::panic::resume_unwind`] or to log: `Some` once, if a task
    /// panicked.
    ///
    /// # Examples
    ///
    /// See [`Tally`].
    pub fn take_panic(&mut self) -> Option<Box<dyn Any + Send>> {
        self.first_panic.take()
    }

    fn count<T, E>(&mut self, outcome: Outcome<T, E>, stopped: bool) {
        match outcome {
            Outcome::Ok(_) => self.ok += 1,
            Outcome::Err(_) if stopped => self.cancelled += 1,
            Outcome::Err(_) => self.failed += 1,
            Outcome::Cancelled => self.cancelled += 1,
            Outcome::Panicked(payload) => {
                self.panicked += 1;
                if self.first_panic.is_none() {
                    self.first_panic = Some(payload);
                }
            }
        }
    }
}

impl Default for Tally {
    fn default() -> Self {
        Tally::new()
    }
}

impl fmt::Debug for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tally")
            .field("ok", &self.ok)
            .field("failed", &self.failed)
            .field("panicked", &self.panicked)
            .field("cancelled", &self.cancelled)
            .field("first_panic", &self.first_panic.is_some())
            .finish()
    }
}
