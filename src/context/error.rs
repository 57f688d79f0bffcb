//! [`ContextError`]: why a context is over.

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

impl From<ContextError> for std::io::Error {
    /// Converts to an `io::Error` of kind `TimedOut` for a deadline and
    /// `Other` for a cancellation, wrapping the `ContextError`, so `?` works
    /// on [`Context::check`](crate::Context::check) in I/O code.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io;
    /// use taskgroup::ContextError;
    ///
    /// let err = io::Error::from(ContextError::DeadlineExceeded);
    /// assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    /// assert_eq!(err.to_string(), "context deadline exceeded");
    /// assert!(err.get_ref().unwrap().is::<ContextError>());
    /// ```
    fn from(error: ContextError) -> std::io::Error {
        let kind = match error {
            ContextError::Cancelled => std::io::ErrorKind::Other,
            ContextError::DeadlineExceeded => std::io::ErrorKind::TimedOut,
        };
        std::io::Error::new(kind, error)
    }
}
