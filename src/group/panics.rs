//! Panics the group's bookkeeping survives: a payload's message, user code
//! dropped under `catch_unwind`, and the cause a group or a scope is
//! cancelled with when its joiner panics.

use std::any::Any;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::outcome::TaskId;

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

/// Drops `value` (user code), catching a panic in its destructor.
pub(crate) fn drop_catching<X>(value: X) -> Option<Box<dyn Any + Send>> {
    catch_unwind(AssertUnwindSafe(move || drop(value))).err()
}

/// Drops every value, each under its own `catch_unwind`; the panics are
/// dropped (nobody is left to see them).
pub(crate) fn drop_all_catching<X>(values: impl IntoIterator<Item = X>) {
    for value in values {
        let _ = drop_catching(value);
    }
}

/// The cause a group (or a scope) is cancelled with when its joiner's
/// `on_complete` panicked.
#[derive(Debug)]
pub(crate) struct JoinerPanicked {
    pub(crate) task: TaskId,
    pub(crate) message: String,
    /// "group" or "scope".
    pub(crate) of: &'static str,
}

impl fmt::Display for JoinerPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {}'s joiner panicked on the outcome of {}: {}",
            self.of, self.task, self.message
        )
    }
}

impl std::error::Error for JoinerPanicked {}
