//! [`Cause`]: why a context was cancelled, as a cheap, shared error.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use crate::ContextError;

/// Why a context was cancelled: the error given to
/// [`CancelHandle::cancel_with`](crate::CancelHandle::cancel_with), or the
/// [`ContextError`] itself when none was given.
///
/// A `Cause` is shared by a cancelled context and all of its descendants, so
/// it is cheap to clone (a copy or one reference count). It is an error in its
/// own right: its `Display` and `source` are those of the error it wraps, and
/// [`downcast_ref`](Cause::downcast_ref) gets the original back.
///
/// # Examples
///
/// ```
/// use taskgroup::{Cause, Context, ContextError};
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("user clicked cancel")]
/// struct UserCancelled;
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// let child = ctx.with_value(7u32);
/// cancel.cancel_with(UserCancelled);
///
/// let cause: Cause = child.cause().unwrap();
/// assert_eq!(cause.to_string(), "user clicked cancel");
/// assert!(cause.downcast_ref::<UserCancelled>().is_some());
/// // The error kind stays `Cancelled`; the cause says why.
/// assert_eq!(child.err(), Some(ContextError::Cancelled));
/// ```
#[derive(Clone)]
pub struct Cause(Repr);

#[derive(Clone)]
enum Repr {
    Context(ContextError),
    /// Cancelled because its `CancelHandle` was dropped (armed): a
    /// `Cancelled` that says why, with no allocation.
    HandleDropped,
    Error(Arc<dyn Error + Send + Sync + 'static>),
}

/// The error behind [`Cause::handle_dropped`]: what `Display` says.
#[derive(Debug)]
struct HandleDropped;

impl fmt::Display for HandleDropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("context cancelled: its CancelHandle was dropped")
    }
}

impl Error for HandleDropped {}

static HANDLE_DROPPED: HandleDropped = HandleDropped;
static CANCELLED: ContextError = ContextError::Cancelled;

impl Cause {
    /// Wraps an error as a cause.
    ///
    /// A `Cause` passed in is returned as it is, not wrapped a second time,
    /// so a cause forwarded from one context to another still downcasts to
    /// the original error.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Cause;
    ///
    /// let io = std::io::Error::other("disk on fire");
    /// let cause = Cause::new(io);
    /// assert_eq!(cause.to_string(), "disk on fire");
    /// let again = Cause::new(cause.clone());
    /// assert!(again.downcast_ref::<std::io::Error>().is_some());
    /// ```
    pub fn new<E>(error: E) -> Cause
    where
        E: Error + Send + Sync + 'static,
    {
        let any: &dyn std::any::Any = &error;
        if let Some(cause) = any.downcast_ref::<Cause>() {
            return cause.clone();
        }
        if let Some(&kind) = any.downcast_ref::<ContextError>() {
            return Cause(Repr::Context(kind));
        }
        Cause(Repr::Error(Arc::new(error)))
    }

    /// The cause of a context cancelled because its armed
    /// [`CancelHandle`](crate::CancelHandle) was dropped: it downcasts to
    /// [`ContextError::Cancelled`] like a plain cancel, and its `Display`
    /// says the handle was dropped.
    pub(crate) fn handle_dropped() -> Cause {
        Cause(Repr::HandleDropped)
    }

    /// Returns the wrapped error as `&E` if it is an `E`.
    ///
    /// A cause made from a [`ContextError`] (the default when a context is
    /// cancelled without a cause, or reaches its deadline) downcasts to
    /// `ContextError`.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{Context, ContextError};
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// cancel.cancel();
    /// let cause = ctx.cause().unwrap();
    /// assert_eq!(cause.downcast_ref::<ContextError>(), Some(&ContextError::Cancelled));
    /// assert!(cause.downcast_ref::<std::io::Error>().is_none());
    /// ```
    pub fn downcast_ref<E: Error + 'static>(&self) -> Option<&E> {
        match &self.0 {
            Repr::Context(kind) => (kind as &dyn Error).downcast_ref(),
            Repr::HandleDropped => (&CANCELLED as &dyn Error).downcast_ref(),
            Repr::Error(error) => (&**error as &(dyn Error + 'static)).downcast_ref(),
        }
    }

    /// Returns `true` if the wrapped error is an `E`.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{Cause, ContextError};
    ///
    /// let cause = Cause::from(ContextError::DeadlineExceeded);
    /// assert!(cause.is::<ContextError>());
    /// ```
    pub fn is<E: Error + 'static>(&self) -> bool {
        self.downcast_ref::<E>().is_some()
    }

    /// The wrapped error, as a trait object.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Cause;
    ///
    /// let cause = Cause::new(std::fmt::Error);
    /// assert_eq!(cause.as_error().to_string(), "an error occurred when formatting an argument");
    /// ```
    pub fn as_error(&self) -> &(dyn Error + Send + Sync + 'static) {
        match &self.0 {
            Repr::Context(kind) => kind,
            Repr::HandleDropped => &HANDLE_DROPPED,
            Repr::Error(error) => &**error,
        }
    }
}

impl From<ContextError> for Cause {
    fn from(kind: ContextError) -> Cause {
        Cause(Repr::Context(kind))
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_error(), f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_error(), f)
    }
}

impl Error for Cause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.as_error().source()
    }
}
