//! Structured concurrency for tokio: Go's `context.Context` and
//! `errgroup.WithContext`, done the Rust way.
//!
//! Fan-out code — a request that calls fifty backends, a crawler, a batch
//! job — needs three things that tokio leaves to glue code: one signal that
//! stops every branch, the first error cancelling the rest, and a guarantee
//! that no branch outlives the code that started it. This crate gives them
//! two types:
//!
//! - [`Context`]: a cancellation tree with causes, deadlines and typed
//!   request-scoped values. Cancelling a context cancels every descendant at
//!   once; only the [`CancelHandle`] can cancel, so a callee can never cancel
//!   its caller. Checking it is one atomic load.
//! - [`TaskGroup`]: spawn a task per branch; the first error (or panic)
//!   cancels the siblings; [`wait`](TaskGroup::wait) joins them all and
//!   returns the values in spawn order or the first error. Limits with
//!   backpressure, panics never lost, and because Rust can drop a future,
//!   a task that ignores its context is dropped at its next await point
//!   instead of leaking.
//!
//! # A tour
//!
//! ```
//! use std::time::Duration;
//! use taskgroup::{Context, GroupError, TaskGroup};
//!
//! #[derive(Debug)]
//! struct RequestId(u64);
//!
//! async fn fetch(ctx: &Context, backend: u32) -> Result<String, String> {
//!     // Request-scoped values travel with the context.
//!     let id = ctx.value::<RequestId>().map_or(0, |id| id.0);
//!     // Any wait is cut short when the context ends.
//!     ctx.sleep(Duration::from_millis(10))
//!         .await
//!         .map_err(|e| format!("backend {backend}: {e}"))?;
//!     Ok(format!("request {id}: backend {backend} ok"))
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // A request with a 2 s budget.
//! let (request, _cancel) = Context::background().with_timeout(Duration::from_secs(2));
//! let request = request.with_value(RequestId(7));
//!
//! // Fan out to eight backends, at most four at a time.
//! let mut group = TaskGroup::builder().limit(4).context(&request).build();
//! for backend in 0..8 {
//!     group.spawn(move |ctx| async move { fetch(&ctx, backend).await });
//! }
//! let pages: Vec<String> = group.wait().await.unwrap();
//! assert_eq!(pages[3], "request 7: backend 3 ok");
//!
//! // The first error cancels the siblings; wait returns it.
//! let mut group = TaskGroup::with_context(&request);
//! group.spawn(|_ctx| async { Err::<(), _>("backend 0 refused".to_string()) });
//! group.spawn(|ctx| async move {
//!     ctx.done().await; // woken by the failure above
//!     Ok(())
//! });
//! assert_eq!(
//!     group.wait().await,
//!     Err(GroupError::Failed("backend 0 refused".to_string()))
//! );
//! # }
//! ```
//!
//! # Semantics, side by side
//!
//! | | `TaskGroup` | tokio `JoinSet` | tokio-util `TaskTracker` | Go `errgroup` |
//! |---|---|---|---|---|
//! | a task fails | first error cancels the group context and drops the siblings | nothing; you see it when you join it | nothing (no results) | first error cancels the context; siblings must notice |
//! | a task panics | cancels the group like an error; `wait` re-raises the first panic after joining the rest; `next`/`wait_outcomes` report it | `JoinError::is_panic` when joined | lost unless you keep the `JoinHandle` | crashes the process |
//! | cancel | [`TaskGroup::cancel`], a parent context or its deadline: context cancelled, async tasks dropped at their next await, queued ones never start | `abort_all` (no signal to a task first) | none; pair it with a `CancellationToken` | cancel the parent context; goroutines must notice |
//! | drop | cancels and drops every async task | aborts every task | tasks keep running | n/a (goroutines leak if not waited) |
//! | results | `wait`: values in spawn order or the first error; `next`: completion order; `wait_outcomes`: every task's [`Outcome`] | completion order via `join_next` | none | first error only |
//! | limit | `limit(n)`: closures wait in the group, `ready()` for backpressure, `try_spawn` | none (add a `Semaphore`) | none | `SetLimit` (`Go` blocks), `TryGo` |
//! | blocking work | `spawn_blocking`, counts toward the limit, joined by `wait` | `spawn_blocking` | `spawn_blocking` | goroutines |
//!
//! # Go to Rust
//!
//! | Go | taskgroup |
//! |---|---|
//! | `context.Background()` | [`Context::background()`] |
//! | `ctx, cancel := context.WithCancel(parent)` | `let (ctx, cancel) = parent.with_cancel();` |
//! | `context.WithTimeout` / `WithDeadline` | [`with_timeout`](Context::with_timeout) / [`with_deadline`](Context::with_deadline) |
//! | `context.WithValue(ctx, key, v)` / `ctx.Value(key)` | [`with_value(v)`](Context::with_value) / [`value::<T>()`](Context::value) (typed: the type is the key) |
//! | `context.WithoutCancel` | [`without_cancel`](Context::without_cancel) |
//! | `context.AfterFunc` | [`after_cancel`](Context::after_cancel) |
//! | `cancel()` / `context.WithCancelCause` + `cancel(err)` | [`cancel()`](CancelHandle::cancel) / [`cancel_with(err)`](CancelHandle::cancel_with) |
//! | `defer cancel()` | automatic: dropping the [`CancelHandle`] cancels |
//! | `<-ctx.Done()`, `ctx.Err()`, `context.Cause(ctx)` | [`done().await`](Context::done), [`err()`](Context::err), [`cause()`](Context::cause) |
//! | `errgroup.WithContext(ctx)` | [`TaskGroup::with_context(&ctx)`](TaskGroup::with_context) |
//! | `g.Go(f)`, `g.TryGo(f)`, `g.SetLimit(n)` | [`spawn`](TaskGroup::spawn), [`try_spawn`](TaskGroup::try_spawn), [`builder().limit(n)`](TaskGroupBuilder::limit) |
//! | `g.Wait()` | [`wait().await`](TaskGroup::wait) (also returns the values) |
//!
//! # HTTP (features `http` and `axum`)
//!
//! The `http` module gives every request of a tower, hyper or axum server
//! its own `Context` — cancelled when the response is over, when the client
//! goes away, at the request's deadline (its `grpc-timeout` header or the
//! server's limit), or when the server shuts down — and stamps outgoing
//! requests with the time left, so a chain of services shares one budget.
//! A handler (`async fn handler(ctx: Context)` in axum) hands its context to
//! a `TaskGroup`, and the fan-out dies with the request.
//!
//! | feature | what it adds | dependencies |
//! |---|---|---|
//! | `http` | `ContextLayer`, the `grpc_timeout` codec, `propagate_deadline`, `PropagateDeadlineLayer`, `WatchedIo` | `http`, `http-body`, `bytes`, `tower-layer`, `tower-service`, tokio's `net` |
//! | `axum` | all of `http`, plus `Context` as an axum extractor and `DisconnectListener` for `axum::serve` | `axum` without its default features (with `tokio` and `http1`, which `axum::serve` needs) |
//!
#![cfg_attr(
    feature = "http",
    doc = "The handler pattern, and what each protocol does when a client goes away, are in [`http`]."
)]
#![cfg_attr(feature = "http", doc = "")]
//! # Names
//!
//! [`Context`] shares its name with [`std::task::Context`], which only
//! hand-written futures use, and with the `anyhow::Context` trait: import
//! that one as `use anyhow::Context as _;` to keep its methods without its
//! name.
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
#[cfg(feature = "http")]
pub mod http;
mod loom;

pub use context::{AfterCancel, CancelHandle, Cause, Context, ContextDoneFuture, ContextRunFuture};
pub use error::{ContextError, GroupError, TaskFailed};
pub use group::{Outcome, TaskGroup, TaskGroupBuilder, TaskId};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
