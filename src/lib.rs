//! Structured concurrency for tokio: Go's `context.Context` and
//! `errgroup.WithContext`, done the Rust way.
//!
//! Fan-out code — a request that calls fifty backends, a crawler, a batch
//! job — needs three things that tokio leaves to glue code: one signal that
//! stops every branch, the first error cancelling the rest, and a guarantee
//! that no branch outlives the code that started it. This crate gives them
//! two types, and scopes for tasks that borrow:
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
//! - [`scope`] and [`scope_local`]: the same group semantics for tasks that
//!   *borrow* from the caller (no `'static`; with `scope_local`, no
//!   `Send`), run concurrently inside the scope's own future rather than
//!   on the runtime's workers. Use them for one request's fan-out of I/O
//!   over borrowed data, and a `TaskGroup` for parallel CPU work or tasks
//!   that outlive the caller.
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
//! | `ctx, _ := context.WithTimeout(..)` (go vet warns) | `let (ctx, _cancel) = ..`: `_` drops the handle, which cancels at once |
//! | `<-ctx.Done()`, `ctx.Err()`, `context.Cause(ctx)` | [`done().await`](Context::done), [`err()`](Context::err), [`cause()`](Context::cause) |
//! | `errgroup.WithContext(ctx)` | [`TaskGroup::with_context(&ctx)`](TaskGroup::with_context) |
//! | `g.Go(f)`, `g.TryGo(f)`, `g.SetLimit(n)` | [`spawn`](TaskGroup::spawn), [`try_spawn`](TaskGroup::try_spawn), [`builder().limit(n)`](TaskGroupBuilder::limit) |
//! | `g.Wait()` | [`wait().await`](TaskGroup::wait) (also returns the values) |
//!
//! # What is running (features `serde` and `tracing`)
//!
//! [`TaskGroup::snapshot`] and [`dump`] show every live group, nested by
//! context ancestry, each task with its name, state ([`TaskState`]), age
//! and spawn location, as an indented tree (`Display`) or, with `serde`,
//! as JSON; `examples/task_dump.rs` serves it over HTTP. With `tracing`,
//! every group and task has a span, and cancels, panics and stragglers are
//! events.
//!
//! | feature | what it adds | dependencies |
//! |---|---|---|
//! | `serde` | `Serialize` for [`Dump`], [`GroupSnapshot`], [`TaskSnapshot`], [`TaskState`] | `serde` |
//! | `tracing` | spans `taskgroup.group` and `taskgroup.task`, events for cancels, panics, stragglers | `tracing` (std only) |
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
//!
//! # Errors and misuse
//!
//! Every misuse gets a clear error or a documented panic whose message names
//! the mistake; nothing hangs that the crate can see coming, and every
//! task's result, error or panic is accounted for. Each row is proved by the
//! test of the same name in `tests/misuse.rs`.
//!
//! | Misuse | What you get | Test |
//! |---|---|---|
//! | `let (ctx, _) = parent.with_timeout(d)` (or `with_cancel`, `with_deadline`): `_` drops the [`CancelHandle`] at once | the context is cancelled on that line: `err()` is `Cancelled`, not `DeadlineExceeded`, and the cause's `Display` says "context cancelled: its CancelHandle was dropped"; bind `_cancel` to keep it | `a_cancel_handle_bound_to_underscore_cancels_at_once_and_the_cause_says_why` |
//! | [`limit(0)`](TaskGroupBuilder::limit) | a panic at once: "TaskGroup limit must be at least 1: ..." | `limit_zero_panics_naming_the_limit` |
//! | a deadline in the past ([`with_deadline`](Context::with_deadline) before now, `with_timeout(Duration::ZERO)`) | a context born expired: `err()` is `DeadlineExceeded`, no panic, no timer | `deadline_in_the_past_is_born_expired` |
//! | blocking work in chunks inside an async task on a current_thread runtime (the thread never yields, so no timer can run) | [`is_cancelled`](Context::is_cancelled) and [`err`](Context::err) stay live past the deadline (they read a flag the timer sets); [`check`](Context::check) reads the clock and returns `Err(DeadlineExceeded)` at the deadline, expiring the context there: call `check()` between the chunks, or use `spawn_blocking` | `a_deadline_on_a_blocked_current_thread_runtime_fires_at_check_not_at_is_cancelled` |
//! | a timeout that overflows (`with_timeout(Duration::MAX)`, `ctx.sleep(Duration::MAX)`) | no deadline of its own (the parent's stays); the sleep lasts until the context ends | `timeouts_that_overflow_mean_no_deadline` |
//! | [`spawn`](TaskGroup::spawn) or [`spawn_blocking`](TaskGroup::spawn_blocking) after the group is cancelled | the closure is never called; the task counts as [`Outcome::Cancelled`] and `wait` returns [`GroupError::Cancelled`]; [`try_spawn`](TaskGroup::try_spawn) hands the closure back | `spawn_after_cancel_never_runs_and_counts_as_cancelled` |
//! | [`after_cancel`](Context::after_cancel) outside a tokio runtime | a panic: "Context::after_cancel must be called within a tokio runtime ..." | `after_cancel_outside_a_runtime_panics_naming_it` |
//! | [`with_timeout`](Context::with_timeout) or [`with_deadline`](Context::with_deadline) outside a runtime | the same panic, naming the method | `with_timeout_or_with_deadline_outside_a_runtime_panics_naming_it` |
//! | `spawn` or `spawn_blocking` outside a runtime | tokio's panic ("... must be called from the context of a Tokio 1.x runtime"); the task is recorded as cancelled (an async task's closure has been called, its future is dropped), so the group still joins | `spawn_outside_a_runtime_panics_and_the_task_counts_as_cancelled` |
//! | an async task that never checks its context | dropped at its next await point once the group is cancelled: [`Outcome::Cancelled`], its destructors run | `a_task_that_never_checks_its_context_is_dropped_at_its_next_await` |
//! | an async task that never yields (a busy loop) | it cannot be dropped in the middle of a poll: `wait` joins it, and its late `Ok` never hides the failure | `an_async_task_that_never_yields_is_joined_not_dropped` |
//! | a blocking task that never checks its context | it runs to its end: `wait` waits for it; dropping the group does not (the task is dropped when it returns) | `a_blocking_task_that_never_checks_its_context_is_joined_by_wait` |
//! | a panic inside an `after_cancel` callback | it stays on the callback's own task (tokio's panic hook reports it): `cancel()` returns normally, the other callbacks run | `a_panic_inside_after_cancel_stays_on_its_task` |
//! | dropping the group inside one of its own tasks (the group behind `Arc<Mutex<Option<TaskGroup>>>`, taken and dropped) | an ordinary drop, no deadlock: the group is cancelled and its other tasks dropped; the dropping task goes on to its next await point, where it is dropped too; the outcomes go with the group | `dropping_the_group_inside_one_of_its_own_tasks_cancels_it_and_drops_the_rest` |
//! | [`wait`](TaskGroup::wait) or [`wait_outcomes`](TaskGroup::wait_outcomes) inside one of the group's own tasks | a panic, "TaskGroup::wait called from one of the group's own tasks: it would wait for itself forever", instead of a hang | `waiting_on_the_group_inside_one_of_its_own_tasks_panics_instead_of_hanging` |
//! | [`next`](TaskGroup::next) from the group's last running task | the same panic, naming `next`, instead of a hang | `next_from_the_groups_last_running_task_panics_instead_of_hanging` |
//! | `next` from the group's only running task while closures wait behind the [limit](TaskGroupBuilder::limit) (they cannot start while it holds the slot) | the same panic, naming `next` | `next_from_the_only_running_task_with_closures_queued_behind_the_limit_panics` |
//! | [`ready`](TaskGroup::ready) from a task that holds the only free-able slot (a `limit(1)` group's running task) | the same panic, naming `ready`, instead of waiting forever | `ready_from_a_task_holding_the_only_slot_panics_instead_of_hanging` |
//! | [`Scope::ready`] from the scope's own task that holds its only slot (a `limit(1)` scope) | the same panic, naming `Scope::ready`, re-raised by the scope, instead of a hang | `scope_ready_from_its_task_holding_the_only_slot_panics_instead_of_hanging` |
//! | a panic in a task error's `Display` | caught: the group is still cancelled and `wait` still returns [`GroupError::Failed`]; the cause's message says the `Display` panicked | `a_panic_in_an_errors_display_still_cancels_and_returns_the_error` |
//! | a closure whose destructor panics | that panic is the task's: [`Outcome::Panicked`], re-raised by `wait`, whether the closure was called, queued and discarded by a cancel, or spawned into a cancelled group | `a_closure_whose_destructor_panics_is_its_tasks_panic` |
//! | a task future whose destructor panics | also the task's panic, whether the future is dropped by a cancel or after it completed (the panic outranks its value) | `a_task_future_whose_destructor_panics_is_its_tasks_panic` |
//! | the `wait` future dropped halfway (a `select!` or a timeout) | the group is dropped: cancelled, queued closures dropped at once, running tasks aborted; the results are gone (`wait` is not cancel safe, by design) | `dropping_the_wait_future_halfway_cancels_and_drops_every_task` |
//! | several `next` calls at once (it takes `&self`) | each task is handed to one of them, and every one of them sees the end | `concurrent_next_calls_both_see_the_end` |
//! | several [`ready`](TaskGroup::ready) calls at once | every one returns once there is room | `concurrent_ready_calls_all_see_the_room` |
//! | the runtime shut down under a group | its tasks are dropped and recorded as cancelled, queued ones too; `wait_outcomes` is ready at its first poll, no runtime needed | `the_runtime_shutting_down_under_a_group_cancels_its_tasks` |
//! | `spawn` outside a runtime once the runtime the group's tasks ran on has shut down | a panic: "TaskGroup::spawn called outside a tokio runtime, and the runtime this group's tasks ran on has shut down ..."; the task counts as cancelled. Spawned from another runtime, it runs there | `spawn_outside_a_runtime_once_the_groups_runtime_is_gone_panics_naming_it` |
//! | cancelling twice, with or without causes | the first cancellation and cause win; later ones are no-ops | `cancelling_twice_keeps_the_first_cause` |
//! | [`done`](Context::done) on a context that can never be cancelled ([`Context::background`], [`without_cancel`](Context::without_cancel)) | it never resolves, by design (Go's `Done()` is `nil` there); [`run`](Context::run) simply runs the future | `done_on_a_context_that_can_never_be_cancelled_never_resolves` |
//! | `ready` on a group whose limit is full of tasks that never finish | it waits (that is the backpressure) and returns as soon as the group is cancelled | `ready_on_a_full_group_returns_once_cancelled` |
//! | a [`shield`](Context::shield) with a zero budget | the section is never polled: `Err(DeadlineExceeded)` at once, and no protection from the group's drop | `a_shield_with_a_zero_budget_never_runs_its_section` |
//! | more than 65,535 [`shield`](Context::shield)s at once inside one group task (nested, or side by side in one `join`) | the shield that would be the 65,536th panics at its first poll: "a group task may be inside at most 65535 shielded sections at once (`Context::shield`)"; the panic is the task's (`Outcome::Panicked`), so the task ends and its other sections are dropped with it | `more_than_65535_shields_at_once_in_one_task_panic_naming_the_limit` |
//! | [`shutdown`](TaskGroup::shutdown) from one of the group's own tasks | the same panic as `wait`'s, naming `shutdown`, instead of a hang | `shutdown_from_one_of_the_groups_own_tasks_panics_instead_of_hanging` |
//! | a [grace](TaskGroupBuilder::grace) on a group of blocking tasks | no effect: blocking tasks are never dropped, grace or not; `wait` joins them as they return, and `shutdown` names the ones still running in `still_blocking` without waiting | `a_grace_on_a_group_of_blocking_tasks_changes_nothing` |
//! | a [`ContextRunFuture`] polled after it completed | a panic: "ContextRunFuture polled after completion" | `a_run_future_polled_after_completion_panics` |
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![doc(test(attr(deny(warnings))))]

mod context;
mod group;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod loom;
mod polling;
mod scope;
mod supervisor;

pub use context::ContextError;
pub use context::{
    AfterCancel, CancelHandle, Cause, Context, ContextDoneFuture, ContextDoneOwned,
    ContextRunFuture,
};
pub use group::{
    AllFailed, Decision, Discard, FailFast, FirstOk, Joiner, Outcome, ShutdownReport, Spawner,
    Supervise, Tally, TaskBuilder, TaskGroup, TaskGroupBuilder, TaskId, TaskInfo, Unread, hedge,
};
pub use group::{Dump, GroupSnapshot, TaskSnapshot, TaskState, dump};
pub use group::{GroupError, TaskFailed};
pub use scope::{LocalScope, LocalScopeFuture, Scope, ScopeFuture, scope, scope_local};
pub use supervisor::{
    Backoff, ChildBuilder, ChildReport, Restart, Run, Strategy, Supervisor, SupervisorBuilder,
    SupervisorError, SupervisorReport,
};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
