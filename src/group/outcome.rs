//! [`TaskId`] and [`Outcome`]: what a group reports about each task.

use std::any::Any;
use std::fmt;

use crate::group::panics::panic_message;

/// Identifies a task within its group: its spawn index, from 0.
///
/// # Examples
///
/// ```
/// use taskgroup::TaskGroup;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut group = TaskGroup::<(), String>::new();
/// let first = group.spawn(|_ctx| async { Ok(()) });
/// let second = group.spawn(|_ctx| async { Ok(()) });
/// assert_eq!((first.index(), second.index()), (0, 1));
/// assert_eq!(second.to_string(), "task 1");
/// # group.wait().await.unwrap();
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub(crate) u64);

impl TaskId {
    /// The spawn index: 0 for the group's first task, 1 for the second...
    ///
    /// # Examples
    ///
    /// See [`TaskId`].
    pub fn index(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {}", self.0)
    }
}

/// How one task of a [`TaskGroup`](crate::TaskGroup) ended.
///
/// Reported by [`TaskGroup::next`](crate::TaskGroup::next) and
/// [`TaskGroup::wait_outcomes`](crate::TaskGroup::wait_outcomes). Every
/// task spawned ends in exactly one outcome.
///
/// # Examples
///
/// ```
/// use taskgroup::{Outcome, TaskGroup};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut group = TaskGroup::<u32, String>::new();
/// group.spawn(|_ctx| async { Ok(1) });
/// group.spawn(|_ctx| async { Err("no".to_string()) });
/// group.spawn(|ctx| async move {
///     ctx.done().await; // cancelled by the error above
///     Ok(3)
/// });
/// let outcomes = group.wait_outcomes().await;
/// assert!(matches!(outcomes[0], Outcome::Ok(1)));
/// assert!(matches!(&outcomes[1], Outcome::Err(e) if e == "no"));
/// // The third either saw its context end and returned, or was dropped.
/// assert!(matches!(outcomes[2], Outcome::Ok(3) | Outcome::Cancelled));
/// # }
/// ```
pub enum Outcome<T, E> {
    /// The task returned `Ok`.
    Ok(T),
    /// The task returned `Err`.
    Err(E),
    /// The task never finished: it was dropped at an await point when the
    /// group was cancelled, or it was never started.
    Cancelled,
    /// The task panicked; this is the panic's payload, as
    /// [`std::thread::JoinHandle::join`] gives it.
    Panicked(Box<dyn Any + Send + 'static>),
}

impl<T, E> Outcome<T, E> {
    /// Returns `true` for [`Outcome::Ok`].
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Outcome;
    /// assert!(Outcome::<u8, ()>::Ok(1).is_ok());
    /// ```
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }

    /// Returns `true` for [`Outcome::Err`].
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Outcome;
    /// assert!(Outcome::<(), &str>::Err("no").is_err());
    /// ```
    pub fn is_err(&self) -> bool {
        matches!(self, Outcome::Err(_))
    }

    /// Returns `true` for [`Outcome::Cancelled`].
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Outcome;
    /// assert!(Outcome::<(), ()>::Cancelled.is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Outcome::Cancelled)
    }

    /// Returns `true` for [`Outcome::Panicked`].
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Outcome;
    /// assert!(Outcome::<(), ()>::Panicked(Box::new("boom")).is_panicked());
    /// ```
    pub fn is_panicked(&self) -> bool {
        matches!(self, Outcome::Panicked(_))
    }

    /// The value, if the task returned `Ok`.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Outcome;
    /// assert_eq!(Outcome::<u8, ()>::Ok(1).ok(), Some(1));
    /// assert_eq!(Outcome::<u8, ()>::Cancelled.ok(), None);
    /// ```
    pub fn ok(self) -> Option<T> {
        match self {
            Outcome::Ok(value) => Some(value),
            _ => None,
        }
    }

    /// The error, if the task returned `Err`.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Outcome;
    /// assert_eq!(Outcome::<(), &str>::Err("no").err(), Some("no"));
    /// ```
    pub fn err(self) -> Option<E> {
        match self {
            Outcome::Err(error) => Some(error),
            _ => None,
        }
    }

    /// The task's own `Result`, or `None` if it was cancelled or panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Outcome;
    /// assert_eq!(Outcome::<u8, ()>::Ok(1).into_result(), Some(Ok(1)));
    /// assert_eq!(Outcome::<u8, ()>::Cancelled.into_result(), None);
    /// ```
    pub fn into_result(self) -> Option<Result<T, E>> {
        match self {
            Outcome::Ok(value) => Some(Ok(value)),
            Outcome::Err(error) => Some(Err(error)),
            Outcome::Cancelled | Outcome::Panicked(_) => None,
        }
    }

    /// The panic payload, if the task panicked; resume it with
    /// [`std::panic::resume_unwind`].
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Outcome;
    /// let payload = Outcome::<(), ()>::Panicked(Box::new("boom")).into_panic().unwrap();
    /// assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
    /// ```
    pub fn into_panic(self) -> Option<Box<dyn Any + Send + 'static>> {
        match self {
            Outcome::Panicked(payload) => Some(payload),
            _ => None,
        }
    }

    pub(crate) fn from_result(result: Result<T, E>) -> Outcome<T, E> {
        match result {
            Ok(value) => Outcome::Ok(value),
            Err(error) => Outcome::Err(error),
        }
    }
}

impl<T: fmt::Debug, E: fmt::Debug> fmt::Debug for Outcome<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok(value) => f.debug_tuple("Ok").field(value).finish(),
            Outcome::Err(error) => f.debug_tuple("Err").field(error).finish(),
            Outcome::Cancelled => f.write_str("Cancelled"),
            Outcome::Panicked(payload) => f
                .debug_tuple("Panicked")
                .field(&panic_message(&**payload))
                .finish(),
        }
    }
}
