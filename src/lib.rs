//! Structured concurrency for tokio.
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![doc(test(attr(deny(warnings))))]

mod context;
mod error;
mod group;

pub use context::{AfterCancel, CancelHandle, Cause, Context, ContextDoneFuture, ContextRunFuture};
pub use error::{ContextError, GroupError, TaskFailed};
pub use group::{Outcome, TaskGroup, TaskGroupBuilder, TaskId};
