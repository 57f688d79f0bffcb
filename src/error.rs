//! The crate's error types.

use std::fmt;

/// Why a [`Context`](crate::Context) is over: it was cancelled, or its
/// deadline passed.
///
/// This is what [`Context::err`](crate::Context::err) and
/// [`Context::check`](crate::Context::check) report, and what
/// [`Context::run`](crate::Context::run) returns when the context ends first.
/// It is `Copy` and carries no detail; the detail (who cancelled, and why) is
/// the context's [`Cause`](crate::Cause).
///
/// # Examples
///
/// ```
/// use taskgroup::{Context, ContextError};
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// assert_eq!(ctx.err(), None);
/// cancel.cancel();
/// assert_eq!(ctx.err(), Some(ContextError::Cancelled));
/// assert_eq!(ContextError::Cancelled.to_string(), "context cancelled");
/// assert_eq!(
///     ContextError::DeadlineExceeded.to_string(),
///     "context deadline exceeded"
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ContextError {
    /// The context was cancelled through a [`CancelHandle`](crate::CancelHandle)
    /// (its own or an ancestor's), or by the task group that owns it.
    #[error("context cancelled")]
    Cancelled,
    /// The context's deadline (its own or an ancestor's) passed.
    #[error("context deadline exceeded")]
    DeadlineExceeded,
}

impl ContextError {
    /// Returns `true` for [`ContextError::Cancelled`].
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::ContextError;
    /// assert!(ContextError::Cancelled.is_cancelled());
    /// assert!(!ContextError::DeadlineExceeded.is_cancelled());
    /// ```
    pub fn is_cancelled(self) -> bool {
        self == ContextError::Cancelled
    }

    /// Returns `true` for [`ContextError::DeadlineExceeded`].
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::ContextError;
    /// assert!(ContextError::DeadlineExceeded.is_deadline_exceeded());
    /// assert!(!ContextError::Cancelled.is_deadline_exceeded());
    /// ```
    pub fn is_deadline_exceeded(self) -> bool {
        self == ContextError::DeadlineExceeded
    }
}

/// Formats a panic payload the way std's panic hook would: the message for a
/// `&str` or `String` payload, a placeholder otherwise.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "Box<dyn Any>"
    }
}

/// A helper for `Debug` impls that must not demand `T: Debug`.
pub(crate) struct Opaque(pub(crate) &'static str);

impl fmt::Debug for Opaque {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}
