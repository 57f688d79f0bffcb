//! The primitives the crate's own synchronization is built from: std's, or
//! under `--cfg loom` loom's models of them, so that `tests/loom.rs` can
//! explore every interleaving of the cancellation tree.
//!
//! `Arc` and `Weak` stay std's (loom's `Arc` has no `Weak`): reference
//! counts are not our algorithm. tokio's `Notify` stays tokio's; its own
//! critical sections hold no loom point, so they run atomically in a model.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU32, AtomicUsize};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU32, AtomicUsize};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};
