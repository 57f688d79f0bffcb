//! Scoped groups: [`scope`], [`scope_local`] and their handles, [`Scope`]
//! and [`LocalScope`]. Tasks that borrow from the caller, polled inside the scope's own future
//! (moro's design), with the group's joiners and outcomes.
//!
//! A layer above `group/`: it takes the joiners, the outcomes and the
//! panic helpers from there, and adds the builder's `scope` and
//! `scope_local` (`builder.rs`); nothing in `group/` or `context/` knows
//! of it.
//!
//! Nothing here is a tokio task. The scope's future owns the body and
//! every started task and polls them itself, in its own `poll`, with a
//! waker of its own for each (a slot's [`TaskWaker`], made once per slot
//! and reused). A spawned task waits in [`ScopeShared::spawned`] until the
//! scope future takes it; behind the limit it waits in `Run::waiting`,
//! unpolled (its closure is not called before its first poll).
//!
//! The same code serves both kinds of task: [`TaskKind`] only names the
//! boxed future (`dyn Future + Send` or `dyn Future`). The public types
//! come in pairs, one per kind, each a thin wrapper over a private generic
//! core: [`Scope`] and [`LocalScope`] over `Core`, whose `spawn` and
//! `try_spawn` box the task with the kind's bounds and call `Core::push`;
//! [`ScopeFuture`] and [`LocalScopeFuture`] over `RunFuture`.
//!
//! # Invariants
//!
//! 1. Only the scope future polls or drops a started task or the body,
//!    and only inside its own `poll` or `drop`. Nothing else can: a task
//!    is owned by `Run` once taken from `spawned`, and `spawned` is
//!    emptied and `closed` once the scope ends or its future is dropped;
//!    a task spawned after that is dropped at once, unpolled. So a task
//!    never runs after the scope future is gone, and forgetting that
//!    future only leaks what it owns: nothing borrowed is ever touched
//!    again.
//! 2. Every task spawned while the scope is open ends in exactly one
//!    outcome, handed to the joiner once (`Run::deliver`): it returned
//!    or panicked (`Run::poll_task`), it was dropped by the cancel or at
//!    the end of the grace (`Run::stop_if_cancelled`), or it never started (spawned into a
//!    cancelled scope, or waiting behind the limit when the cancel came).
//! 3. A wake-up is never lost. A task's or the body's waker pushes its
//!    slot to the ready list under the wake lock and, unless the scope
//!    future is polling, takes and wakes the scope's waker; so does the
//!    context's cancel hook, with the entry [`CANCEL`], which only wakes;
//!    a spawn pushes under the `spawned` lock and then does the same if
//!    the future is not polling. The future clears `polling` before it
//!    looks at both lists one last time, under their locks: either it
//!    sees the push, or the pusher sees `polling` cleared and wakes it.
//!    (`models.rs` checks all three under loom; a cancel from another
//!    thread during the poll, before the hook pushed, was lost.)
//! 4. Nothing starts once the context is cancelled: a task is started
//!    only after a look at the context, and the cancel (whoever made it)
//!    is seen by the loop before it polls anything else, which then ends
//!    every waiting task unstarted and drops the body and every running
//!    task: at once, or, with a grace ([`Grace`](grace::Grace)), once it
//!    has run out. The grace's timer starts when the loop first sees the
//!    cancel, is polled with the scope future's waker in every round until
//!    it runs out, and its end is seen, like the cancel, before anything
//!    else is polled; the round that starts it polls it before the future
//!    can sleep. Dropping the future drops everything at once (`Run`'s
//!    `Drop`), grace or not.
//! 5. `live` counts tasks spawned and not yet ended. It is raised under
//!    the `spawned` lock (so `try_spawn`'s look and its raise are one
//!    step) and lowered when a task's outcome is delivered.
//!
//! # Lock order
//!
//! The `spawned` lock and the wake lock are never held together, and
//! neither is held while user code runs (polling, dropping, the joiner)
//! or while a waker is woken.
//!
//! # Files
//!
//! One concern each, as `group/runner/` is laid out:
//!
//! - `mod.rs`: this map, [`scope`] and [`scope_local`], and the task
//!   kinds ([`TaskKind`]);
//! - `send.rs`: [`Scope`] and [`ScopeFuture`], the public handle and
//!   future of a scope whose tasks are `Send`;
//! - `local.rs`: [`LocalScope`] and [`LocalScopeFuture`], their twins for
//!   tasks that need not be;
//! - `handle.rs`: `Core`, what both handles are made of: the context, the
//!   cancel, the count, `ready`, and the push of a spawned task;
//! - `shared.rs`: [`ScopeShared`], what the handles and the future share
//!   (the spawned tasks, `live`, the slot waiters), and [`PolledTask`],
//!   the thread's mark of the scope whose task it polls;
//! - `wake.rs`: [`Wakeup`] and [`TaskWaker`], the ready list and the
//!   wakers that fill it (invariant 3);
//! - `run.rs`: [`Run`], what the future owns besides the body, and its
//!   steps: take, start, poll, deliver, stop, finish;
//! - `future.rs`: `RunFuture`, the future of either kind, its poll loop,
//!   and `start`, which builds a scope;
//! - `grace.rs`: [`Grace`](grace::Grace), the builder's grace in a scope,
//!   and its timer;
//! - `models.rs`: the loom models of invariant 3 (under `--cfg loom`);
//! - `builder.rs`: [`TaskGroupBuilder::scope`](crate::TaskGroupBuilder::scope)
//!   and [`TaskGroupBuilder::scope_local`](crate::TaskGroupBuilder::scope_local).

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::Context;
use crate::group::FailFast;

mod builder;
mod future;
mod grace;
mod handle;
mod local;
// A child module, so that its models can drive the scope's own code.
#[cfg(all(test, loom))]
mod models;
mod run;
mod send;
mod shared;
mod wake;

pub use local::{LocalScope, LocalScopeFuture};
pub use send::{Scope, ScopeFuture};
use shared::{PolledTask, ScopeShared};
use wake::{TaskWaker, Wakeup};

/// At most this many polls (the body's and the tasks') in one poll of the
/// scope future, fewer when tokio's cooperative budget runs out; then it
/// yields to the runtime, as the group's runner does.
const SCOPE_TURN: usize = 128;

/// The ready-list entry of the body.
const BODY: usize = usize::MAX;

/// The ready-list entry of a cancel of the scope's context (its hook's):
/// nothing to poll, only a wake-up the last look must see (invariant 3).
const CANCEL: usize = usize::MAX - 1;

/// The most entries an emptied buffer keeps for reuse.
const BUFFER_KEPT: usize = 1024;

/// What a scope's tasks must be: [`SendTasks`] for [`scope`] and
/// [`TaskGroupBuilder::scope`](crate::TaskGroupBuilder::scope),
/// [`LocalTasks`] for [`scope_local`] and
/// [`TaskGroupBuilder::scope_local`](crate::TaskGroupBuilder::scope_local).
/// Private: the public types name the kind ([`Scope`] or [`LocalScope`],
/// [`ScopeFuture`] or [`LocalScopeFuture`]), and the generic core under
/// them ([`Core`](handle::Core), [`RunFuture`](future::RunFuture)) takes
/// it as a parameter.
trait TaskKind: 'static {
    /// The boxed task future: `dyn Future + Send` or `dyn Future`.
    type Task<'env, T: 'env, E: 'env>: ?Sized + Future<Output = Result<T, E>> + 'env;
    /// The public handle's name, for messages.
    const HANDLE: &'static str;
}

/// The [`TaskKind`] of [`scope`]: every task is `Send`, so the scope future
/// is `Send` when its body is.
enum SendTasks {}

/// The [`TaskKind`] of [`scope_local`]: tasks need not be `Send` (they may
/// hold an `Rc` or a `RefCell` borrow across an await); the scope future is
/// then not `Send`.
enum LocalTasks {}

impl TaskKind for SendTasks {
    type Task<'env, T: 'env, E: 'env> = dyn Future<Output = Result<T, E>> + Send + 'env;
    const HANDLE: &'static str = "Scope";
}

impl TaskKind for LocalTasks {
    type Task<'env, T: 'env, E: 'env> = dyn Future<Output = Result<T, E>> + 'env;
    const HANDLE: &'static str = "LocalScope";
}

type BoxTask<'env, T, E, K> = Pin<Box<<K as TaskKind>::Task<'env, T, E>>>;

/// Runs `body` with a [`Scope`] whose tasks may borrow from the caller:
/// no `'static`, and everything joined before it returns. The tasks are
/// `Send`; so is this future when the body is (it runs inside
/// `tokio::spawn` and axum handlers). Under [`FailFast`]: the values in
/// spawn order, or the first error.
///
/// `scope(&ctx, body)` is
/// [`TaskGroup::builder().context(&ctx).scope(body)`](crate::TaskGroupBuilder::scope);
/// the builder adds a limit, a name and a [join policy](crate::Joiner).
/// [`scope_local`] is the same for tasks that are not `Send`.
///
/// # How it runs
///
/// The body and the tasks run concurrently *inside the returned future*,
/// on the task that awaits it: the body can await what its own tasks
/// produce. Nothing is spawned on the runtime, so there is no parallelism:
/// for CPU work on several threads, or tasks that must outlive the
/// caller's frame, use a [`TaskGroup`](crate::TaskGroup).
///
/// Of concurrency, parallelism and borrowing, a safe API can give two:
/// `std::thread::scope` gives parallelism and borrowing by blocking its
/// thread; a `TaskGroup` gives concurrency and parallelism with `'static`
/// tasks; a scope gives concurrency and borrowing, because its tasks live
/// inside its own future. That is why dropping or forgetting that future
/// is sound, with no `unsafe` (the crate forbids it): nothing but the
/// future's own `poll` ever polls a task, so a dropped future drops every
/// task with it, and a forgotten one leaks them, never to be polled again,
/// so no task touches borrowed data after the borrow ends (`async-scoped`
/// must be `unsafe` because it hands the tasks to the runtime).
///
/// The group's rules hold: the first error (or panic) cancels the scope's
/// context, and the body and every running task are dropped at their next
/// await (after the builder's grace, if it has one), waiting ones never
/// start; the limit, the joiners and the
/// outcomes are those of a `TaskGroup`; the future resolves once the body
/// has returned (or been dropped by the cancel) and every task has ended,
/// and the scope's context is cancelled then, as `wait` does.
///
/// Fairness: in each of its polls the future polls the body if it was
/// woken, then each task that was woken, once, in the order they were
/// woken, and yields to the runtime after 128 polls or when tokio's
/// cooperative budget runs out: a task that wakes itself at once cannot
/// starve the body or its siblings. A task that never yields (a busy loop
/// with no await that returns `Pending`) holds back the body and every
/// other task until it returns, since they share its thread and its poll:
/// use a `TaskGroup` (or `spawn_blocking`) for that work, or
/// `tokio::task::yield_now().await` in the loop.
///
/// A builder's [`grace`](crate::TaskGroupBuilder::grace) holds as in a
/// group ([`TaskGroupBuilder::scope`](crate::TaskGroupBuilder::scope);
/// `scope` itself has none): once the scope is cancelled, waiting tasks
/// never start and every context is cancelled at once, but the body and
/// the running tasks go on being polled, and are dropped only once the
/// grace has passed (counted from the poll of the scope future that sees
/// the cancel, on tokio's clock), at their next await; a task that ends
/// within it reports what it returned. Dropping the scope's future still
/// drops everything at once, grace or not.
///
/// What a scope leaves to a `TaskGroup`: the rest of the
/// [lifecycle](crate::TaskGroup#cancellation-step-by-step) of a graceful
/// wind-down. A [`shield`](Context::shield) inside a scoped task only
/// changes its context, as outside any group (the cancel, or the end of
/// the grace, still drops the task at its next await), and scoped tasks
/// have no names. A scope lives inside one caller's future, which must
/// stay free to drop it at any moment; cleanup that must outlive a
/// cancel belongs after the `scope` call returns, or in a `TaskGroup`
/// task.
///
/// # Panics
///
/// A task's panic is its outcome, as in a `TaskGroup`: [`FailFast`] and
/// [`FirstOk`](crate::FirstOk) cancel the scope and re-raise it once every
/// task has ended; [`Supervise`](crate::Supervise) returns it. A panic in
/// the body cancels the scope too, and is re-raised once every task has
/// been dropped. So is a panic in the joiner's `on_complete`.
///
/// # Cancel safety
///
/// See [`ScopeFuture`]: dropping it drops the body and every task at once.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use taskgroup::{Context, GroupError};
///
/// async fn fetch(ctx: &Context, base: &str, id: u32) -> Result<String, String> {
///     ctx.sleep(Duration::from_millis(10)).await.map_err(|e| e.to_string())?;
///     if id == 3 {
///         return Err(format!("{base}/{id}: 503"));
///     }
///     Ok(format!("{base}/{id}"))
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let ctx = Context::background();
/// let base = String::from("https://example.com"); // borrowed by every task
///
/// let pages = taskgroup::scope(&ctx, async |s| {
///     for id in 0..3 {
///         let base = &base;
///         s.spawn(move |ctx| async move { fetch(&ctx, base, id).await });
///     }
/// })
/// .await;
/// assert_eq!(pages.unwrap()[2], "https://example.com/2");
///
/// // The first error cancels the rest; the body can await its own tasks.
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let out = taskgroup::scope(&ctx, async |s| {
///     for id in 0..5 {
///         let (base, tx) = (&base, tx.clone());
///         s.spawn(move |ctx| async move {
///             let page = fetch(&ctx, base, id).await?;
///             tx.send(page).map_err(|e| e.to_string())?;
///             Ok(())
///         });
///     }
///     drop(tx);
///     while let Some(page) = rx.recv().await {
///         assert!(page.starts_with("https://"));
///     }
/// })
/// .await;
/// assert_eq!(out, Err(GroupError::Failed("https://example.com/3: 503".to_string())));
/// # }
/// ```
///
/// A task cannot outlive the data it borrows: the scope's future carries
/// the borrow.
///
/// ```compile_fail,E0597
/// use taskgroup::Context;
///
/// # async fn f() {
/// let ctx = Context::background();
/// let fut = {
///     let data = vec![1, 2, 3];
///     taskgroup::scope(&ctx, async |s| {
///         s.spawn(|_ctx| async { Ok::<_, String>(data.len()) }); // borrows `data`
///     })
/// }; // error[E0597]: `data` does not live long enough
/// let _ = fut.await;
/// # }
/// ```
///
/// Its compiling twin keeps `data` alive until the scope is done:
///
/// ```
/// use taskgroup::Context;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let ctx = Context::background();
/// let data = vec![1, 2, 3];
/// let fut = taskgroup::scope(&ctx, async |s| {
///     s.spawn(|_ctx| async { Ok::<_, String>(data.len()) });
/// });
/// assert_eq!(fut.await, Ok(vec![3]));
/// # }
/// ```
///
/// Neither a task nor the handle can escape the scope into a `'static`
/// task, where it could outlive the borrow:
///
/// ```compile_fail,E0597
/// use taskgroup::Context;
///
/// # async fn f() {
/// let ctx = Context::background();
/// let data = vec![1, 2, 3];
/// let _ = taskgroup::scope(&ctx, async |s| {
///     let data = &data;
///     tokio::spawn(async move {
///         // error[E0597]: `data` does not live long enough (`tokio::spawn`
///         // needs 'static, and the handle carries the borrow)
///         s.spawn(move |_ctx| async move { Ok::<_, String>(data.len()) });
///     });
/// })
/// .await;
/// # }
/// ```
///
/// Its twin moves the handle nowhere and spawns from a task of the scope:
///
/// ```
/// use taskgroup::Context;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let ctx = Context::background();
/// let data = vec![1, 2, 3];
/// let out = taskgroup::scope(&ctx, async |s| {
///     let data = &data;
///     let inner = s.clone();
///     s.spawn(move |_ctx| async move {
///         inner.spawn(move |_ctx| async move { Ok::<_, String>(data.len()) });
///         Ok(0)
///     });
/// })
/// .await;
/// assert_eq!(out, Ok(vec![0, 3]));
/// # }
/// ```
pub fn scope<'env, T, E, F, Fut>(ctx: &Context, body: F) -> ScopeFuture<'env, T, E, FailFast, Fut>
where
    T: 'env,
    E: fmt::Display + 'env,
    F: FnOnce(Scope<'env, T, E, FailFast>) -> Fut,
    Fut: Future<Output = ()> + 'env,
{
    crate::TaskGroup::builder().context(ctx).scope(body)
}

/// [`scope`] for tasks that need not be `Send`: they may hold an `Rc`, a
/// `RefCell` borrow or any other `!Send` value across an await. The body
/// gets a [`LocalScope`], [`Scope`]'s twin; the [`LocalScopeFuture`] it
/// returns is not `Send`: await it where it was made, as tokio's
/// `spawn_local` tasks are.
///
/// Everything else is [`scope`]'s: the semantics, the fairness and the
/// panics, and the same code runs both.
///
/// # Panics
///
/// As [`scope`].
///
/// # Cancel safety
///
/// See [`LocalScopeFuture`]: dropping it drops the body and every task at
/// once.
///
/// # Examples
///
/// ```
/// use std::cell::RefCell;
/// use taskgroup::Context;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = RefCell::new(std::collections::HashMap::new());
/// let out = taskgroup::scope_local(&Context::background(), async |s| {
///     for key in ["a", "b", "a"] {
///         let cache = &cache;
///         s.spawn(move |_ctx| async move {
///             let len = cache.borrow().len();
///             cache.borrow_mut().entry(key).or_insert(len);
///             Ok::<_, String>(())
///         });
///     }
/// })
/// .await;
/// assert!(out.is_ok());
/// assert_eq!(cache.borrow().len(), 2);
/// # }
/// ```
pub fn scope_local<'env, T, E, F, Fut>(
    ctx: &Context,
    body: F,
) -> LocalScopeFuture<'env, T, E, FailFast, Fut>
where
    T: 'env,
    E: fmt::Display + 'env,
    F: FnOnce(LocalScope<'env, T, E, FailFast>) -> Fut,
    Fut: Future<Output = ()> + 'env,
{
    crate::TaskGroup::builder().context(ctx).scope_local(body)
}
