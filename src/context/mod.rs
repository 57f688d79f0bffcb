//! [`Context`]: a cancellation tree with causes, deadlines and typed values.

mod cause;
mod error;
mod future;
#[cfg(all(test, loom))]
mod models;
mod tree;

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

pub use cause::Cause;
pub use future::{ContextDoneFuture, ContextDoneOwned, ContextRunFuture};
pub(crate) use tree::CancelHook;
use tree::{Callback, Cancellation, Node, NodeSpec};

pub use error::ContextError;

/// A cancellation signal with a cause, an optional deadline and typed
/// request-scoped values, handed down a call tree: Go's `context.Context`.
///
/// Contexts form a tree. [`Context::background`] is the root that is never
/// cancelled; [`with_cancel`](Context::with_cancel),
/// [`with_timeout`](Context::with_timeout) and
/// [`with_deadline`](Context::with_deadline) derive a child together with the
/// [`CancelHandle`] that cancels it. Cancelling a context cancels every
/// descendant at once, with the same [`ContextError`] and [`Cause`]; a child
/// never cancels its parent.
///
/// Holding a `Context` never lets you cancel it: only its `CancelHandle`
/// can. A function that takes a `Context` can observe its caller's
/// cancellation and derive its own children, but cannot cancel its caller.
///
/// `Context` is one `Arc`: clone it freely and move it into tasks. Checking
/// it ([`is_cancelled`](Context::is_cancelled), [`err`](Context::err),
/// [`check`](Context::check)) takes no lock and is a single atomic load
/// (`check` on a live context with a deadline adds one clock read), so it
/// belongs in hot loops.
///
/// # When a deadline fires
///
/// A deadline expires its context (`err()` becomes
/// `Some(DeadlineExceeded)`) at the first of:
///
/// - its timer task runs: at the deadline, on the runtime that was current
///   when it was made, as soon as that runtime gets to it;
/// - a waiter ([`done`](Context::done), [`run`](Context::run),
///   [`sleep`](Context::sleep)) polled on another runtime has armed a timer
///   there, and it runs (below);
/// - [`check`](Context::check) is called at or after the deadline: it reads
///   the clock itself.
///
/// [`is_cancelled`](Context::is_cancelled) and [`err`](Context::err) read
/// the flag only. Timers run only when their runtime's threads are free:
/// on a current_thread runtime whose thread is blocked (an async task
/// doing blocking work in chunks without yielding), no timer runs, and
/// `is_cancelled()` and `err()` stay live past the deadline; call
/// `check()` between the chunks (or use
/// [`TaskGroup::spawn_blocking`](crate::TaskGroup::spawn_blocking), or a
/// multi-thread runtime, where another thread serves the timer).
///
/// The name collides with [`std::task::Context`] and with
/// `anyhow::Context`: import the latter as `use anyhow::Context as _;` to use
/// its methods without its name.
///
/// # Deadlines and runtimes
///
/// A deadline is served by a timer task on the runtime that was current
/// when it was made. A context is data, though, and may be awaited on
/// another runtime: a waiter ([`done`](Context::done),
/// [`run`](Context::run), [`sleep`](Context::sleep)) polled on a runtime
/// other than the one serving its deadline arms a timer of its own there,
/// and whichever fires first expires the context that set the deadline
/// (with every descendant) with [`ContextError::DeadlineExceeded`]. So the
/// deadline holds even when the runtime it was made on has been dropped or
/// is a current_thread runtime that nobody drives. Until one of the timers
/// fires, [`err`](Context::err) stays `None`: with the serving runtime gone,
/// `is_cancelled()` in a loop sees the deadline only once a waiter on a
/// live runtime or a [`check`](Context::check) (which reads the clock) has
/// fired it. A waiter polled outside any
/// runtime, or on one built without timers, cannot arm a timer (tokio's
/// "timers are disabled" panic message is printed once per thread and
/// runtime, and caught) and relies on the serving runtime.
///
/// [`after_cancel`](Context::after_cancel) callbacks run on the runtime
/// that was current when each was registered, whichever timer fires the
/// deadline. If that runtime has been dropped, the callback is dropped
/// without running, on the thread that fired the deadline (its captured
/// values' destructors run there); on a current_thread runtime nobody
/// drives, it runs when that runtime is next driven.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use taskgroup::{Context, ContextError};
///
/// #[derive(Debug, PartialEq)]
/// struct RequestId(u64);
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(100));
/// let ctx = ctx.with_value(RequestId(7));
///
/// // A callee sees the values and the deadline, and stops when it passes.
/// async fn handler(ctx: &Context) -> Result<(), ContextError> {
///     assert_eq!(ctx.value::<RequestId>(), Some(&RequestId(7)));
///     ctx.sleep(Duration::from_secs(10)).await
/// }
/// assert_eq!(handler(&ctx).await, Err(ContextError::DeadlineExceeded));
/// # }
/// ```
///
/// A callee cannot cancel its caller: `Context` has no method that cancels.
///
/// ```compile_fail
/// fn callee(ctx: &taskgroup::Context) {
///     ctx.cancel(); // no such method: only a CancelHandle cancels
/// }
/// ```
///
/// Its twin, with the capability where it belongs:
///
/// ```
/// let (ctx, cancel) = taskgroup::Context::background().with_cancel();
/// fn callee(ctx: &taskgroup::Context) -> bool { ctx.is_cancelled() }
/// cancel.cancel();
/// assert!(callee(&ctx));
/// ```
#[derive(Clone)]
pub struct Context {
    node: Arc<Node>,
}

impl Context {
    /// Returns the root context: never cancelled, no deadline, no values.
    ///
    /// Every tree of contexts starts here. It is a shared static; calling
    /// this costs one reference count.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Context;
    ///
    /// let root = Context::background();
    /// assert!(!root.is_cancelled());
    /// assert_eq!(root.deadline(), None);
    /// assert_eq!(root.value::<u32>(), None);
    /// ```
    pub fn background() -> Context {
        Context {
            node: Node::background(),
        }
    }

    /// Derives a child context and the handle that cancels it.
    ///
    /// The child is cancelled when the handle's [`cancel`](CancelHandle::cancel)
    /// is called, when the handle is dropped (Go's `defer cancel()`, made
    /// automatic), or when this context is cancelled. If this context is
    /// already cancelled, the child is born cancelled with the same error and
    /// cause.
    ///
    /// Costs one allocation; no task.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Context;
    ///
    /// let (parent, cancel_parent) = Context::background().with_cancel();
    /// let (child, cancel_child) = parent.with_cancel();
    ///
    /// cancel_child.cancel();
    /// assert!(child.is_cancelled());
    /// assert!(!parent.is_cancelled()); // a child never cancels its parent
    ///
    /// let (other, _keep) = parent.with_cancel();
    /// drop(cancel_parent); // dropping the handle cancels
    /// assert!(other.is_cancelled());
    /// ```
    pub fn with_cancel(&self) -> (Context, CancelHandle) {
        let ctx = self.child(NodeSpec {
            own_cancel: true,
            ..NodeSpec::plain()
        });
        let handle = CancelHandle::new(&ctx);
        (ctx, handle)
    }

    /// Derives a child context that is cancelled with
    /// [`ContextError::DeadlineExceeded`] once `timeout` has passed, and the
    /// handle that cancels it sooner.
    ///
    /// The same as [`with_deadline`](Context::with_deadline) at `now +
    /// timeout`, by tokio's clock. A timeout too large to add to now (such as
    /// `Duration::MAX`) means no deadline of its own.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime: deadlines run on tokio's
    /// clock and timer.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::{Context, ContextError};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(2));
    /// ctx.done().await;
    /// assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
    ///
    /// let (forever, _cancel) = Context::background().with_timeout(Duration::MAX);
    /// assert_eq!(forever.deadline(), None);
    /// # }
    /// ```
    #[track_caller]
    pub fn with_timeout(&self, timeout: Duration) -> (Context, CancelHandle) {
        let runtime = runtime("with_timeout");
        let deadline = Instant::now().checked_add(timeout);
        self.with_optional_deadline(deadline, runtime, spawn_on)
    }

    /// [`with_timeout`](Context::with_timeout), with the deadline's timer
    /// (if it needs one) started by `spawn` instead of on the current
    /// runtime: a group's runner starts it, to count it among the tokio
    /// tasks the group must see gone before its `wait` returns.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `with_timeout`.
    #[track_caller]
    pub(crate) fn with_timeout_spawned_by(
        &self,
        timeout: Duration,
        spawn: impl FnOnce(&Handle, DeadlineTimer) -> AbortHandle,
    ) -> (Context, CancelHandle) {
        let runtime = runtime("with_timeout");
        let deadline = Instant::now().checked_add(timeout);
        self.with_optional_deadline(deadline, runtime, spawn)
    }

    /// Derives a child context that is cancelled with
    /// [`ContextError::DeadlineExceeded`] at `deadline`, and the handle that
    /// cancels it sooner.
    ///
    /// The child's [`deadline`](Context::deadline) is the earlier of
    /// `deadline` and this context's own. A deadline at or before now gives a
    /// context born expired. A timer task on the current runtime serves the
    /// deadline only when it is earlier than the parent's; it is released as
    /// soon as the context is cancelled or dropped. A waiter on another
    /// runtime also arms a timer there: see [Deadlines and
    /// runtimes](Context#deadlines-and-runtimes).
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime: deadlines run on tokio's
    /// clock and timer.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::{Context, ContextError};
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let soon = Instant::now() + Duration::from_secs(1);
    /// let (parent, _c1) = Context::background().with_deadline(soon);
    /// // A later deadline cannot extend the parent's.
    /// let (child, _c2) = parent.with_deadline(soon + Duration::from_secs(60));
    /// assert_eq!(child.deadline(), Some(soon));
    ///
    /// // A deadline in the past: born expired.
    /// let (late, _c3) = Context::background().with_deadline(Instant::now());
    /// assert_eq!(late.err(), Some(ContextError::DeadlineExceeded));
    /// # }
    /// ```
    #[track_caller]
    pub fn with_deadline(&self, deadline: Instant) -> (Context, CancelHandle) {
        let runtime = runtime("with_deadline");
        self.with_optional_deadline(Some(deadline), runtime, spawn_on)
    }

    fn with_optional_deadline(
        &self,
        deadline: Option<Instant>,
        runtime: Handle,
        spawn: impl FnOnce(&Handle, DeadlineTimer) -> AbortHandle,
    ) -> (Context, CancelHandle) {
        let ctx = self.child(NodeSpec {
            own_cancel: true,
            deadline: deadline.map(|deadline| (deadline, runtime.id())),
            ..NodeSpec::plain()
        });
        let handle = CancelHandle::new(&ctx);
        if ctx.is_cancelled() {
            return (ctx, handle);
        }
        // A deadline given at or before now is born expired, even when an
        // ancestor's earlier deadline (whose timer has not run yet) is the
        // one the child reports.
        let now = Instant::now();
        if deadline.is_some_and(|d| d <= now) {
            ctx.cancel_internal(Cancellation::new(ContextError::DeadlineExceeded, None));
            return (ctx, handle);
        }
        // Serve the deadline only if it is ours; an inherited one is served
        // by the ancestor that set it.
        let own = deadline.filter(|&d| self.deadline().is_none_or(|inherited| d < inherited));
        if let Some(deadline) = own {
            let timer = DeadlineTimer {
                node: Arc::downgrade(&ctx.node),
                deadline,
            };
            ctx.node.set_timer(spawn(&runtime, timer));
        }
        (ctx, handle)
    }

    /// Derives a child context that carries `value`, looked up by its type
    /// with [`value`](Context::value).
    ///
    /// The child is cancelled exactly when this context is. A value of the
    /// same type set closer to the caller shadows this one.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Context;
    ///
    /// #[derive(Debug, PartialEq)]
    /// struct UserId(u32);
    ///
    /// let ctx = Context::background().with_value(UserId(1)).with_value("trace-42");
    /// assert_eq!(ctx.value::<UserId>(), Some(&UserId(1)));
    /// assert_eq!(ctx.value::<&str>(), Some(&"trace-42"));
    /// let shadowed = ctx.with_value(UserId(2));
    /// assert_eq!(shadowed.value::<UserId>(), Some(&UserId(2)));
    /// assert_eq!(ctx.value::<UserId>(), Some(&UserId(1)));
    /// ```
    #[must_use = "a derived context does nothing unless used: `ctx.with_value(v)` returns the child"]
    pub fn with_value<T: Any + Send + Sync>(&self, value: T) -> Context {
        self.child(NodeSpec {
            value: Some(Box::new(value)),
            ..NodeSpec::plain()
        })
    }

    /// Returns the nearest value of type `T` set by
    /// [`with_value`](Context::with_value) on this context or an ancestor.
    ///
    /// Values are keyed by type, so a private type is a private key: define
    /// a newtype per value rather than storing plain `u64`s.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Context;
    ///
    /// let ctx = Context::background().with_value(5u8);
    /// assert_eq!(ctx.value::<u8>(), Some(&5));
    /// assert_eq!(ctx.value::<u16>(), None); // types do not convert
    /// ```
    pub fn value<T: Any>(&self) -> Option<&T> {
        self.node.value::<T>()
    }

    /// Derives a context that keeps this one's values but is never
    /// cancelled and has no deadline: for work that must outlive the request
    /// that started it (an audit write, a cache fill).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Context;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let ctx = ctx.with_value("request 9");
    /// let detached = ctx.without_cancel();
    /// cancel.cancel();
    /// assert!(ctx.is_cancelled());
    /// assert!(!detached.is_cancelled());
    /// assert_eq!(detached.value::<&str>(), Some(&"request 9"));
    /// ```
    #[must_use = "a derived context does nothing unless used"]
    pub fn without_cancel(&self) -> Context {
        self.child(NodeSpec {
            detach: true,
            ..NodeSpec::plain()
        })
    }

    /// Returns a future that resolves once this context is cancelled (at
    /// once if it already is). For a context that can never be cancelled it
    /// never resolves.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it loses nothing, and a new one picks up the
    /// same state. In a `select!` loop it can be re-created on each turn.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Context;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let waiter = tokio::spawn({
    ///     let ctx = ctx.clone();
    ///     async move {
    ///         ctx.done().await;
    ///         ctx.err()
    ///     }
    /// });
    /// cancel.cancel();
    /// assert_eq!(waiter.await.unwrap(), Some(taskgroup::ContextError::Cancelled));
    /// # }
    /// ```
    pub fn done(&self) -> ContextDoneFuture<'_> {
        ContextDoneFuture::new(&self.node)
    }

    /// Like [`done`](Context::done), but the future owns a clone of this
    /// context: it is `'static + Send`, for APIs that keep the future, such
    /// as `axum::serve(..).with_graceful_shutdown(root.done_owned())`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it loses nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Context;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// // No `async move` needed to send it to another task.
    /// let waiter = tokio::spawn(ctx.done_owned());
    /// cancel.cancel();
    /// waiter.await.unwrap();
    /// assert!(ctx.is_cancelled());
    /// # }
    /// ```
    pub fn done_owned(&self) -> ContextDoneOwned {
        ContextDoneOwned::new(&self.node)
    }

    /// A [`CancellationToken`] cancelled with this context, for code that
    /// speaks tokio-util's token (tokio-graceful-shutdown subsystems, tonic
    /// and hyper shutdown code, hand-written workers).
    ///
    /// The token is cancelled synchronously inside the context's cancel:
    /// when [`CancelHandle::cancel`] returns (or the deadline fires, or a
    /// parent is cancelled), the token reports `is_cancelled()`. No task,
    /// no timer. A token carries no cause: read [`err`](Context::err) and
    /// [`cause`](Context::cause) on the context for why.
    ///
    /// Cancelling the token does not cancel the context: holding a context
    /// still never lets you cancel it. A context that can never be
    /// cancelled (like [`background`](Context::background)) gives a token
    /// that is never cancelled, and holds nothing; one already cancelled
    /// gives a cancelled token. Every call on the same context hands out a
    /// clone of the same token; [`is_cancelled`](Context::is_cancelled)
    /// never touches it.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Context;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let token = ctx.to_token();
    /// assert!(!token.is_cancelled());
    /// cancel.cancel();
    /// // Already cancelled when `cancel` returns: no task, no timer.
    /// assert!(token.is_cancelled());
    ///
    /// let (ctx, _cancel) = Context::background().with_cancel();
    /// let token = ctx.to_token();
    /// token.cancel(); // the token cannot cancel its context
    /// assert!(!ctx.is_cancelled());
    ///
    /// assert!(!Context::background().to_token().is_cancelled()); // never
    /// ```
    pub fn to_token(&self) -> CancellationToken {
        self.node.token(None)
    }

    /// A child context that is also cancelled, with
    /// [`ContextError::Cancelled`], when `token` is cancelled: a token from
    /// tokio-util code (a tokio-graceful-shutdown subsystem's) drives a
    /// tree of contexts and task groups.
    ///
    /// The child is cancelled with this context as any child is. A token
    /// carries no cause, so the child's [`cause`](Context::cause) is the
    /// `ContextError` itself. On a token already cancelled the child is
    /// born cancelled, and no runtime is needed. Otherwise a small watcher
    /// task waits for the token; it ends, and lets go of the token, as
    /// soon as either side ended: the token cancelled, or the child
    /// cancelled or dropped. The watcher runs on the runtime current here;
    /// if that runtime is dropped (or never driven again), a
    /// [`done`](Context::done) waiter on another runtime watches the token
    /// itself, for the child and every context derived from it, so a
    /// cancel of the token still reaches them, as a deadline does (see
    /// [Deadlines and runtimes](Context#deadlines-and-runtimes)).
    ///
    /// # Panics
    ///
    /// When the token is not yet cancelled and this is called outside a
    /// tokio runtime: the watcher is spawned on the current runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{Context, ContextError};
    /// use tokio_util::sync::CancellationToken;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let token = CancellationToken::new();
    /// let ctx = Context::background().with_token(&token);
    /// assert!(!ctx.is_cancelled());
    /// token.cancel();
    /// ctx.done().await;
    /// assert_eq!(ctx.err(), Some(ContextError::Cancelled));
    /// # }
    /// ```
    #[track_caller]
    #[must_use = "a derived context does nothing unless used"]
    pub fn with_token(&self, token: &CancellationToken) -> Context {
        if token.is_cancelled() {
            let child = self.child(NodeSpec {
                own_cancel: true,
                ..NodeSpec::plain()
            });
            tree::cancel(
                &child.node,
                Cancellation::new(ContextError::Cancelled, None),
            );
            return child;
        }
        let runtime = runtime("with_token");
        // The watcher stops when this is cancelled: by the child's cancel
        // (it is the child's own token) or by the child's drop (the guard
        // is the child's value, of a type nobody else can name).
        let stop = CancellationToken::new();
        let watched = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let child = self.child(NodeSpec {
            own_cancel: true,
            value: Some(Box::new(TokenLink {
                _stop: stop.clone().drop_guard(),
                token: token.clone(),
                watched_on: runtime.id(),
                watched: watched.clone(),
            })),
            ..NodeSpec::plain()
        });
        let stop = child.node.token(Some(stop));
        if stop.is_cancelled() {
            // Born cancelled through its parent.
            return child;
        }
        let node = Arc::downgrade(&child.node);
        let token = token.clone();
        let unwatched = Unwatched(watched);
        drop(runtime.spawn(async move {
            let _unwatched = unwatched;
            if stop.run_until_cancelled(token.cancelled()).await.is_some()
                && let Some(node) = node.upgrade()
            {
                tree::cancel(&node, Cancellation::new(ContextError::Cancelled, None));
            }
        }));
        child
    }

    /// Returns `true` once this context is cancelled, or expired by its
    /// deadline.
    ///
    /// One atomic load; no lock, no clock. A deadline shows here once it
    /// has fired: its timer task ran (on the runtime the deadline was made
    /// on), a waiter ([`done`](Context::done), [`run`](Context::run),
    /// [`sleep`](Context::sleep)) armed its own timer and it ran, or a
    /// [`check`](Context::check) saw the clock past it. On a current_thread
    /// runtime whose only thread is busy (blocking work inside an async
    /// task) no timer can run, so `is_cancelled` stays `false` past the
    /// deadline until something calls `check` or the thread yields. See
    /// [When a deadline fires](Context#when-a-deadline-fires).
    ///
    /// # Examples
    ///
    /// ```
    /// let (ctx, cancel) = taskgroup::Context::background().with_cancel();
    /// assert!(!ctx.is_cancelled());
    /// cancel.cancel();
    /// assert!(ctx.is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.node.is_cancelled()
    }

    /// Returns why this context is over, or `None` while it is live. Once
    /// `Some`, it never changes.
    ///
    /// One atomic load; no lock, no clock: like
    /// [`is_cancelled`](Context::is_cancelled), it shows a deadline once it
    /// has fired (a timer ran, or a [`check`](Context::check) saw the
    /// clock past it), which on a blocked current_thread runtime can be
    /// late. See [When a deadline fires](Context#when-a-deadline-fires).
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
    /// ```
    pub fn err(&self) -> Option<ContextError> {
        self.node.error()
    }

    /// Returns the cause of the cancellation, or `None` while the context is
    /// live: the error given to [`CancelHandle::cancel_with`], else the
    /// [`ContextError`] itself. A context cancelled through an ancestor
    /// reports the ancestor's cause.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{Context, ContextError};
    ///
    /// let (parent, cancel) = Context::background().with_cancel();
    /// let (child, _keep) = parent.with_cancel();
    /// cancel.cancel_with(std::io::Error::other("shutting down"));
    /// let cause = child.cause().unwrap();
    /// assert_eq!(cause.to_string(), "shutting down");
    /// assert_eq!(child.err(), Some(ContextError::Cancelled));
    /// ```
    pub fn cause(&self) -> Option<Cause> {
        self.node.cause()
    }

    /// Returns the deadline: the earliest of this context's own and its
    /// ancestors', or `None`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::Context;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let start = tokio::time::Instant::now();
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(3));
    /// assert_eq!(ctx.deadline(), Some(start + Duration::from_secs(3)));
    /// assert_eq!(ctx.with_value(1u8).deadline(), ctx.deadline());
    /// # }
    /// ```
    pub fn deadline(&self) -> Option<Instant> {
        self.node.deadline()
    }

    /// Returns `Ok(())` while the context is live, `Err` once it is over: the
    /// `?`-friendly check for loops.
    ///
    /// Unlike [`is_cancelled`](Context::is_cancelled) and
    /// [`err`](Context::err), `check` does not wait for a timer to fire a
    /// deadline: on a live context that has one it also reads tokio's clock
    /// ([`tokio::time::Instant::now`], so paused time works), and once the
    /// clock is at or past the deadline it expires the context there and
    /// then — with every context that shares the deadline, as the timer
    /// would have — and returns `Err(DeadlineExceeded)`. So a loop of
    /// blocking chunks with `ctx.check()?` between them stops at its
    /// deadline even on a current_thread runtime it never yields to. The
    /// cost: one atomic load, plus one clock read (tens of nanoseconds)
    /// when the context has a deadline and is live.
    ///
    /// # Errors
    ///
    /// The context's [`ContextError`] once it is cancelled or past its
    /// deadline.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{Context, ContextError};
    ///
    /// fn crunch(ctx: &Context, chunks: usize) -> Result<usize, ContextError> {
    ///     let mut done = 0;
    ///     for _ in 0..chunks {
    ///         ctx.check()?;
    ///         done += 1;
    ///     }
    ///     Ok(done)
    /// }
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// assert_eq!(crunch(&ctx, 3), Ok(3));
    /// cancel.cancel();
    /// assert_eq!(crunch(&ctx, 3), Err(ContextError::Cancelled));
    /// ```
    #[inline]
    pub fn check(&self) -> Result<(), ContextError> {
        if let Some(error) = self.err() {
            return Err(error);
        }
        match self.deadline() {
            Some(deadline) => self.check_deadline(deadline),
            None => Ok(()),
        }
    }

    /// `check` on a live context with a deadline: expires it if the clock
    /// is past the deadline and no timer has yet.
    #[inline(never)]
    fn check_deadline(&self, deadline: Instant) -> Result<(), ContextError> {
        if Instant::now() < deadline {
            return Ok(());
        }
        let expired = Cancellation::new(ContextError::DeadlineExceeded, None);
        tree::cancel(Node::deadline_owner(&self.node), expired);
        // A cancel that raced this one may have won: report what the
        // context says now.
        Err(self.err().unwrap_or(ContextError::DeadlineExceeded))
    }

    /// Runs `fut` until it completes or this context is over, whichever is
    /// first. On cancellation `fut` is dropped at once (its destructors run),
    /// and it is never polled if the context is already over.
    ///
    /// # Errors
    ///
    /// The context's [`ContextError`] if it ends before `fut` completes.
    ///
    /// # Cancel safety
    ///
    /// As cancel safe as `fut`: dropping the returned future drops `fut`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::{Context, ContextError};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(50));
    /// assert_eq!(ctx.run(async { 1 + 1 }).await, Ok(2));
    /// let slow = tokio::time::sleep(Duration::from_secs(5));
    /// assert_eq!(ctx.run(slow).await, Err(ContextError::DeadlineExceeded));
    /// # }
    /// ```
    pub fn run<F: Future>(&self, fut: F) -> ContextRunFuture<'_, F> {
        ContextRunFuture::new(&self.node, fut)
    }

    /// [`run`](Context::run) for a fallible `fut`, flattened: its own error
    /// and the context's end come back as one `E`, for any error type that
    /// a [`ContextError`] converts into (`std::io::Error`,
    /// `anyhow::Error`, or your own enum with a `From<ContextError>`).
    /// Where `ctx.run(fut).await` gives `Result<Result<T, E>, ContextError>`,
    /// `ctx.try_run(fut).await?` gives `T`.
    ///
    /// # Errors
    ///
    /// `fut`'s own error, or the context's [`ContextError`] converted into
    /// `E` if the context ends before `fut` completes.
    ///
    /// # Cancel safety
    ///
    /// As cancel safe as `fut`: dropping the returned future drops `fut`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io;
    /// use std::time::Duration;
    /// use taskgroup::{Context, ContextError};
    ///
    /// async fn read_config(slow: bool) -> io::Result<String> {
    ///     if slow {
    ///         tokio::time::sleep(Duration::from_secs(5)).await;
    ///     }
    ///     Ok("port = 8080".to_string())
    /// }
    ///
    /// async fn load(ctx: &Context, slow: bool) -> io::Result<usize> {
    ///     let config = ctx.try_run(read_config(slow)).await?; // one `?`
    ///     Ok(config.len())
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(50));
    /// assert_eq!(load(&ctx, false).await.unwrap(), 11);
    /// let late = load(&ctx, true).await.unwrap_err();
    /// assert_eq!(late.kind(), io::ErrorKind::TimedOut);
    /// assert_eq!(
    ///     late.get_ref().and_then(|e| e.downcast_ref::<ContextError>()),
    ///     Some(&ContextError::DeadlineExceeded)
    /// );
    /// # }
    /// ```
    pub async fn try_run<T, E, F>(&self, fut: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
        E: From<ContextError>,
    {
        self.run(fut).await?
    }

    /// Sleeps for `duration`, or until this context is over.
    ///
    /// # Errors
    ///
    /// The context's [`ContextError`] if it ends first.
    ///
    /// # Panics
    ///
    /// Polling it outside a tokio runtime with a timer panics, as
    /// [`tokio::time::sleep`] does.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it only stops the sleep.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::{Context, ContextError};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// assert_eq!(ctx.sleep(Duration::from_millis(10)).await, Ok(()));
    /// cancel.cancel();
    /// assert_eq!(ctx.sleep(Duration::from_secs(10)).await, Err(ContextError::Cancelled));
    /// # }
    /// ```
    pub fn sleep(&self, duration: Duration) -> ContextRunFuture<'_, tokio::time::Sleep> {
        self.run(tokio::time::sleep(duration))
    }

    /// Arranges for `f` to run once, on its own tokio task, after this
    /// context is cancelled: Go's `context.AfterFunc`.
    ///
    /// The callback runs after [`err`](Context::err) is set; `cancel()` never
    /// waits for it. On a context already cancelled it is started at once; on
    /// one that can never be cancelled it never runs. Dropping the returned
    /// [`AfterCancel`] leaves the callback registered; its
    /// [`stop`](AfterCancel::stop) unregisters it. A registration holds no
    /// task and no timer until the context is cancelled.
    ///
    /// A panic in `f` stays on its task (tokio reports it) and reaches
    /// nobody else.
    ///
    /// The callback's task is spawned on the runtime current at this call.
    /// If that runtime has been dropped by the time the context is
    /// cancelled (say, by a deadline that a waiter on another runtime
    /// fired), the callback never runs: it is dropped on the cancelling
    /// thread. See [Deadlines and runtimes](Context#deadlines-and-runtimes).
    ///
    /// Two things to keep in mind. Dropping a [`CancelHandle`] cancels, so a
    /// callback also runs when its context simply goes out of scope at the
    /// end of a successful job: [`stop`](AfterCancel::stop) it first if it is
    /// only meant for an early cancel. And the context keeps the callback
    /// until it is cancelled or stopped: a callback that captures a clone of
    /// the same context, on a context that is never cancelled, keeps both
    /// alive.
    ///
    /// Unlike Go, a context lives only as long as something holds it: a
    /// clone, its [`CancelHandle`], or this [`AfterCancel`]. A context whose
    /// handle was [disarmed](CancelHandle::disarm) and whose clones and
    /// `AfterCancel` are all dropped is gone, and its callback with it,
    /// even if its parent is cancelled later.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime: the callback needs a
    /// runtime to run on.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Context;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let (tx, rx) = tokio::sync::oneshot::channel();
    /// let _reg = ctx.after_cancel(move || {
    ///     let _ = tx.send("closing the connection");
    /// });
    /// cancel.cancel();
    /// assert_eq!(rx.await.unwrap(), "closing the connection");
    /// # }
    /// ```
    #[track_caller]
    pub fn after_cancel<F>(&self, f: F) -> AfterCancel
    where
        F: FnOnce() + Send + 'static,
    {
        let callback = Callback::new(Box::new(f), runtime("after_cancel"));
        let registration = self
            .node
            .register(&callback)
            .map(|key| (self.node.clone(), key));
        AfterCancel {
            callback,
            registration,
        }
    }

    fn child(&self, spec: NodeSpec) -> Context {
        Context {
            node: Node::child(&self.node, spec),
        }
    }

    /// Runs cleanup that must finish although this context is cancelled:
    /// calls `f` with a *shielded* context and runs the future it returns
    /// for at most `budget`.
    ///
    /// The shielded context keeps this context's values, is not cancelled
    /// when this context is (by its parent, its deadline or its handle), and
    /// has a deadline of its own, `budget` from now; nested shields take the
    /// earlier of the two. This is Trio's `CancelScope(shield=True)`,
    /// Kotlin's `NonCancellable`, Go's `context.WithoutCancel` with a
    /// timeout, with the budget built in so that a shield cannot hang.
    ///
    /// Inside a task of a [`TaskGroup`](crate::TaskGroup), the group does
    /// not drop the task while the section runs: not at its cancel, not at
    /// the end of a [grace](crate::TaskGroupBuilder::grace), not when the
    /// group is dropped. After the section, a task of a cancelled group is
    /// dropped at its next await. `wait` and `shutdown` wait for the section.
    /// So the shield holds for at most `budget` past the cancel.
    ///
    /// Anywhere else (a plain tokio task, a scope, a `select!`), it only
    /// changes the context: whoever drops the `shield` future still drops
    /// the section with it, as with any future.
    ///
    /// A panic inside the section is the task's panic, as anywhere in it.
    ///
    /// # Errors
    ///
    /// [`ContextError::DeadlineExceeded`] when the budget ran out before
    /// the section finished; the section is dropped then. A zero budget
    /// gives it at once, without polling the section.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as [`with_timeout`](Context::with_timeout):
    /// the budget runs on tokio's timer. At its first poll inside a group
    /// task that is already inside 65,535 shielded sections at once
    /// (nested, or side by side in one `join`), with a message naming the
    /// limit: the panic is that task's.
    ///
    /// # Cancel safety
    ///
    /// As cancel safe as the section: dropping the future drops it (which,
    /// in a group task, only the group's owner can do by dropping the task's
    /// future, and the group does not while the section runs).
    ///
    /// # Examples
    ///
    /// A checkpoint write that a cancel must not cut in half:
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::{Context, ContextError, Outcome, TaskGroup};
    ///
    /// async fn write_checkpoint(ctx: &Context) -> Result<&'static str, ContextError> {
    ///     ctx.sleep(Duration::from_millis(50)).await?; // a slow disk
    ///     Ok("checkpoint written")
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mut group = TaskGroup::<&str, ContextError>::new();
    /// group.spawn(|ctx| async move {
    ///     // Cancelled 10 ms in, the write still finishes, within a second.
    ///     ctx.shield(Duration::from_secs(1), |ctx| async move { write_checkpoint(&ctx).await })
    ///         .await?
    /// });
    /// tokio::time::sleep(Duration::from_millis(10)).await;
    /// group.cancel();
    /// let outcomes = group.wait_outcomes().await;
    /// assert!(matches!(outcomes[0], Outcome::Ok("checkpoint written")));
    /// # }
    /// ```
    ///
    /// A task that should clean up *after* noticing the cancel needs time
    /// to notice it: a group [grace](crate::TaskGroupBuilder::grace). A
    /// shield entered during the grace finishes even if the grace ends
    /// first:
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::{ContextError, Outcome, TaskGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mut group = TaskGroup::<&str, ContextError>::builder()
    ///     .grace(Duration::from_millis(10))
    ///     .build();
    /// group.spawn(|ctx| async move {
    ///     let _ = ctx.sleep(Duration::from_secs(60)).await; // the job, cut short
    ///     ctx.shield(Duration::from_secs(1), |ctx| async move {
    ///         ctx.sleep(Duration::from_millis(200)).await?; // release the lock
    ///         Ok("unlocked")
    ///     })
    ///     .await?
    /// });
    /// tokio::task::yield_now().await;
    /// group.cancel();
    /// let outcomes = group.wait_outcomes().await;
    /// assert!(matches!(outcomes[0], Outcome::Ok("unlocked")));
    /// # }
    /// ```
    #[track_caller]
    pub fn shield<F, Fut>(
        &self,
        budget: Duration,
        f: F,
    ) -> impl Future<Output = Result<Fut::Output, ContextError>> + use<'_, F, Fut>
    where
        F: FnOnce(Context) -> Fut,
        Fut: Future,
    {
        let runtime = runtime("shield");
        async move {
            // Entered at the first poll: inside the group task's poll.
            let _mark = crate::polling::ShieldMark::enter();
            let own = Instant::now().checked_add(budget);
            let until = match (own, self.value::<ShieldedUntil>()) {
                (Some(own), Some(outer)) => Some(own.min(outer.0)),
                (None, Some(outer)) => Some(outer.0),
                (own, None) => own,
            };
            let mut shielded = self.without_cancel();
            if let Some(until) = until {
                shielded = shielded.with_value(ShieldedUntil(until));
            }
            let (shielded, handle) = shielded.with_optional_deadline(until, runtime, spawn_on);
            let out = shielded.run(f(shielded.clone())).await;
            handle.cancel();
            out
        }
    }

    /// A cancellable child with no handle: a group task's own context,
    /// which its group cancels (`TaskGroup::cancel_task`) through
    /// [`cancel_internal`](Context::cancel_internal).
    pub(crate) fn for_task(&self) -> Context {
        self.child(NodeSpec {
            own_cancel: true,
            defer_link: true,
            ..NodeSpec::plain()
        })
    }

    /// Whether a task's own context (from [`for_task`](Context::for_task))
    /// may serve another task: this is its last reference, and it is as
    /// it was made (never linked, awaited or cancelled itself), so nothing
    /// can tell it from a new one (tree invariant 10).
    pub(crate) fn is_spare(&mut self) -> bool {
        Arc::get_mut(&mut self.node).is_some_and(|node| node.is_pristine())
    }

    /// A cancellable child whose cancellation also runs `hook`, inside the
    /// cancel walk. For task groups.
    pub(crate) fn with_hook(&self, hook: Weak<dyn CancelHook>) -> Context {
        self.child(NodeSpec {
            own_cancel: true,
            hook: Some(hook),
            ..NodeSpec::plain()
        })
    }

    /// The address of this context's node: who it is, for as long as it
    /// lives (the dump tells groups apart by it).
    pub(crate) fn addr(&self) -> usize {
        Arc::as_ptr(&self.node) as usize
    }

    /// The addresses of this context's ancestors, nearest first, while
    /// `f` returns `true`. Only those it keeps: a node with nothing to look
    /// up and nothing to unlink from lets its parent go.
    pub(crate) fn ancestors(&self, mut f: impl FnMut(usize) -> bool) {
        let mut node = self.node.parent();
        while let Some(parent) = node {
            if !f(Arc::as_ptr(parent) as usize) {
                return;
            }
            node = parent.parent();
        }
    }

    /// Cancels this context; `true` if this call did it. For owners that
    /// hold no `CancelHandle` (task groups).
    pub(crate) fn cancel_internal(&self, cancellation: Cancellation) -> bool {
        tree::cancel(&self.node, cancellation)
    }
}

/// The deadline of the shielded section a context is in: a nested shield
/// takes the earlier one.
struct ShieldedUntil(Instant);

/// Held as the value of a `with_token` child (a type nobody else can
/// name): its drop stops the watcher; and what a waiter needs to watch the
/// token itself when the watcher is gone with its runtime, or runs on
/// another one (see [`ContextDoneFuture`]).
pub(crate) struct TokenLink {
    _stop: DropGuard,
    pub(crate) token: CancellationToken,
    /// The runtime the watcher task was spawned on.
    pub(crate) watched_on: tokio::runtime::Id,
    /// Cleared when the watcher task's future is gone: its runtime shut
    /// down (or it ended, with the context cancelled).
    pub(crate) watched: Arc<std::sync::atomic::AtomicBool>,
}

/// Clears [`TokenLink::watched`] when the watcher's future is dropped.
struct Unwatched(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Unwatched {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

pub(crate) fn cancellation(error: ContextError, cause: Option<Cause>) -> Cancellation {
    Cancellation::new(error, cause)
}

/// The timer of a context's own deadline: cancels the context with
/// `DeadlineExceeded` once the deadline passes, unless the context is gone
/// (it holds only a weak reference). Aborted when the context is
/// cancelled or dropped.
pub(crate) struct DeadlineTimer {
    node: Weak<Node>,
    deadline: Instant,
}

impl DeadlineTimer {
    pub(crate) async fn run(self) {
        tokio::time::sleep_until(self.deadline).await;
        if let Some(node) = self.node.upgrade() {
            let expired = Cancellation::new(ContextError::DeadlineExceeded, None);
            tree::cancel(&node, expired);
        }
    }
}

/// Starts a deadline's timer as a task of its own on `runtime`.
fn spawn_on(runtime: &Handle, timer: DeadlineTimer) -> AbortHandle {
    runtime.spawn(timer.run()).abort_handle()
}

#[track_caller]
fn runtime(what: &str) -> Handle {
    match Handle::try_current() {
        Ok(handle) => handle,
        Err(_) => panic!(
            "Context::{what} must be called within a tokio runtime: \
             it uses tokio's clock and spawns on the current runtime"
        ),
    }
}

impl Default for Context {
    /// The same as [`Context::background`].
    fn default() -> Context {
        Context::background()
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("err", &self.err())
            .field("deadline", &self.deadline())
            .finish_non_exhaustive()
    }
}

/// The right to cancel one [`Context`]: returned beside it by
/// [`Context::with_cancel`], [`with_timeout`](Context::with_timeout) and
/// [`with_deadline`](Context::with_deadline).
///
/// Dropping the handle cancels the context, so the Go idiom `defer cancel()`
/// needs no code: a context cannot outlive the scope that owns its handle by
/// accident. [`disarm`](CancelHandle::disarm) gives that up. The first
/// cancellation wins: later calls, with or without a cause, change nothing.
///
/// `CancelHandle` is `Send + Sync`; share one behind an `Arc` to let several
/// places cancel.
///
/// # Examples
///
/// ```
/// use taskgroup::Context;
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// {
///     let (scoped, _guard) = ctx.with_cancel();
///     // ... use `scoped` ...
///     # let _ = scoped;
/// } // `_guard` dropped here: `scoped` is cancelled, `ctx` is not
/// assert!(!ctx.is_cancelled());
/// cancel.cancel();
/// assert!(ctx.is_cancelled());
/// ```
#[must_use = "dropping a CancelHandle cancels its context at once"]
pub struct CancelHandle {
    node: Arc<Node>,
    armed: bool,
}

impl CancelHandle {
    fn new(ctx: &Context) -> CancelHandle {
        CancelHandle {
            node: ctx.node.clone(),
            armed: true,
        }
    }

    /// Cancels the context with [`ContextError::Cancelled`] as its cause.
    ///
    /// When this returns, the context and every descendant report
    /// [`err`](Context::err). A no-op if the context is already over.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{Context, ContextError};
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let grandchild = ctx.with_value(1u8).with_value(2u16);
    /// cancel.cancel();
    /// assert_eq!(grandchild.err(), Some(ContextError::Cancelled));
    /// ```
    pub fn cancel(&self) {
        tree::cancel(&self.node, Cancellation::new(ContextError::Cancelled, None));
    }

    /// Cancels the context with `cause`, which
    /// [`Context::cause`] then reports here and in every descendant; the
    /// error kind is [`ContextError::Cancelled`]. A no-op (the cause is
    /// dropped) if the context is already over: the first cause wins.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Context;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// cancel.cancel_with(std::io::Error::other("first"));
    /// cancel.cancel_with(std::io::Error::other("second"));
    /// assert_eq!(ctx.cause().unwrap().to_string(), "first");
    /// ```
    pub fn cancel_with<E>(&self, cause: E)
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let cause = Cause::new(cause);
        tree::cancel(
            &self.node,
            Cancellation::new(ContextError::Cancelled, Some(cause)),
        );
    }

    /// Returns `true` once the context is over, by this handle or otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// let (_ctx, cancel) = taskgroup::Context::background().with_cancel();
    /// assert!(!cancel.is_cancelled());
    /// cancel.cancel();
    /// assert!(cancel.is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.node.is_cancelled()
    }

    /// Gives up the handle without cancelling: the context then ends only
    /// through its parent or its deadline. If it has neither, it can never
    /// end, and its [`after_cancel`](Context::after_cancel) callbacks are
    /// dropped (they could never run).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Context;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// cancel.disarm();
    /// assert!(!ctx.is_cancelled());
    /// ```
    pub fn disarm(mut self) {
        self.armed = false;
        self.node.disarmed();
    }
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        // Unless nobody could ever see the cancel: the handle holds the
        // context's only reference and nothing hangs off it (tree
        // invariant 9), as when `let (ctx, cancel) = parent.with_cancel()`
        // is dropped context first.
        if self.armed && !tree::is_unobserved(&self.node) {
            // A plain cancel whose cause says why: `let (ctx, _) =
            // parent.with_timeout(d)` drops the handle at once, and the
            // user should read that, not a bare "context cancelled".
            tree::cancel(
                &self.node,
                Cancellation::new(ContextError::Cancelled, Some(Cause::handle_dropped())),
            );
        }
    }
}

impl fmt::Debug for CancelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelHandle")
            .field("cancelled", &self.is_cancelled())
            .field("armed", &self.armed)
            .finish()
    }
}

/// A callback registered by [`Context::after_cancel`].
///
/// Dropping it leaves the callback registered; [`stop`](AfterCancel::stop)
/// unregisters it.
///
/// # Examples
///
/// ```
/// use taskgroup::Context;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (ctx, cancel) = Context::background().with_cancel();
/// let reg = ctx.after_cancel(|| unreachable!("stopped before the cancel"));
/// assert!(reg.stop()); // prevented the call
/// assert!(!reg.stop()); // nothing left to prevent
/// cancel.cancel();
/// # }
/// ```
pub struct AfterCancel {
    callback: Arc<Callback>,
    /// The context's node, kept alive while this handle lives: a context
    /// whose clones and handle are all gone can still be cancelled by its
    /// parent, and the callback must still run then.
    registration: Option<(Arc<Node>, usize)>,
}

impl AfterCancel {
    /// Unregisters the callback. Returns `true` only if this prevented it
    /// from running: `false` if it already started (or was stopped before).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Context;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let reg = ctx.after_cancel(|| ());
    /// cancel.cancel(); // starts the callback
    /// assert!(!reg.stop()); // too late to prevent it
    /// # }
    /// ```
    pub fn stop(&self) -> bool {
        let prevented = self.callback.stop();
        if prevented && let Some((node, key)) = &self.registration {
            node.unregister(*key);
        }
        prevented
    }
}

impl fmt::Debug for AfterCancel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AfterCancel").finish_non_exhaustive()
    }
}
