//! The named futures returned by [`Context`](crate::Context).

use std::cell::Cell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{self, Poll};

use pin_project_lite::pin_project;
use tokio::runtime::{self, Handle};
use tokio::sync::futures::Notified;
use tokio::time::Sleep;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::TokenLink;
use super::tree::{self, Cancellation, Node};
use crate::ContextError;

pin_project! {
    /// Future returned by [`Context::done`](crate::Context::done): resolves
    /// once the context is cancelled.
    ///
    /// Polled on a runtime other than the one serving the context's
    /// deadline, it arms a timer for the deadline there too (see
    /// [Deadlines and runtimes](crate::Context#deadlines-and-runtimes)).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it loses nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{Context, ContextDoneFuture};
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let done: ContextDoneFuture<'_> = ctx.done();
    /// let mut done = tokio_test::task::spawn(done);
    /// assert!(done.poll().is_pending());
    /// cancel.cancel();
    /// assert!(done.is_woken()); // the cancel wakes the waiting task
    /// assert!(done.poll().is_ready());
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct ContextDoneFuture<'a> {
        node: &'a Arc<Node>,
        // Created before the first look at the state, so a cancel between
        // that look and the first poll still wakes it.
        #[pin]
        notified: Notified<'a>,
        // The deadline's timer of our own, on the runtime this future is
        // polled on, armed when the task serving the deadline runs on
        // another runtime: that one may be gone or never driven.
        timer: Option<Pin<Box<Sleep>>>,
        // The token of a `with_token` link this waiter watches itself, and
        // the node it links: armed when the link's watcher task is gone
        // with its runtime, or runs on another one.
        token: Option<(Arc<Node>, Pin<Box<WaitForCancellationFutureOwned>>)>,
        // Whether the first poll that waits has looked at the deadline.
        checked: bool,
    }
}

impl<'a> ContextDoneFuture<'a> {
    pub(super) fn new(node: &'a Arc<Node>) -> ContextDoneFuture<'a> {
        ContextDoneFuture {
            node,
            notified: node.notify().notified(),
            timer: None,
            token: None,
            checked: false,
        }
    }

    /// Whether the context is over, with the error if so.
    fn poll_done(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<ContextError> {
        let mut this = self.project();
        loop {
            if let Some(error) = this.node.error() {
                return Poll::Ready(error);
            }
            if this.notified.as_mut().poll(cx).is_ready() {
                this.notified.set(this.node.notify().notified());
                continue;
            }
            if !*this.checked {
                *this.checked = true;
                *this.timer = own_timer(this.node);
                *this.token = own_token_watch(this.node);
            }
            if let Some((linked, token)) = this.token
                && token.as_mut().poll(cx).is_ready()
            {
                // The token was cancelled: cancel the context it links, as
                // its watcher task would have.
                let linked = linked.clone();
                *this.token = None;
                tree::cancel(&linked, Cancellation::new(ContextError::Cancelled, None));
                continue;
            }
            let Some(timer) = this.timer else {
                return Poll::Pending;
            };
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // Ours fired first: expire the context that owns the deadline,
            // as its own timer task would have.
            *this.timer = None;
            let expired = Cancellation::new(ContextError::DeadlineExceeded, None);
            tree::cancel(Node::deadline_owner(this.node), expired);
        }
    }
}

/// A timer for `node`'s deadline on the runtime the caller is polled on, if
/// the task that serves the deadline runs on another one (the runtime that
/// was current when the deadline was made). `None` when there is no
/// deadline, when it is served here, or when there is nothing to arm a
/// timer on: no runtime, or one without timers (tokio panics at
/// `sleep_until` then, with a message that says so; the waiter relies on
/// the serving runtime, as it always did).
///
/// Checked once per future, at its first poll that waits: a handle clone
/// and a compare when the deadline is served here, no lock.
fn own_timer(node: &Node) -> Option<Pin<Box<Sleep>>> {
    thread_local! {
        /// The last runtime found without timers on this thread: tokio's
        /// panic message is printed once, not once per waiter.
        static NO_TIMERS: Cell<Option<runtime::Id>> = const { Cell::new(None) };
    }
    let deadline = node.deadline()?;
    let here = Handle::try_current().ok()?.id();
    if !node.deadline_served_elsewhere(here) || NO_TIMERS.get() == Some(here) {
        return None;
    }
    let timer = catch_unwind(AssertUnwindSafe(|| {
        Box::pin(tokio::time::sleep_until(deadline))
    }));
    if timer.is_err() {
        NO_TIMERS.set(Some(here));
    }
    timer.ok()
}

/// The nearest `with_token` link whose cancel reaches `node` (the node or
/// an ancestor) that a waiter polled here must watch itself: its watcher
/// task is gone (its runtime shut down) or runs on another runtime, which
/// may be gone or never driven. `None` outside a runtime, or when every
/// link on the way is watched here. Checked once per future, at its first
/// poll that waits.
fn own_token_watch(
    node: &Arc<Node>,
) -> Option<(Arc<Node>, Pin<Box<WaitForCancellationFutureOwned>>)> {
    let here = Handle::try_current().ok()?.id();
    let mut at = node;
    loop {
        if let Some(link) = at.own_value::<TokenLink>()
            && (!link.watched.load(Ordering::Acquire) || link.watched_on != here)
        {
            let cancelled = Box::pin(link.token.clone().cancelled_owned());
            return Some((at.clone(), cancelled));
        }
        at = at.cancel_parent()?;
    }
}

impl Future for ContextDoneFuture<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<()> {
        self.poll_done(cx).map(drop)
    }
}

impl std::fmt::Debug for ContextDoneFuture<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextDoneFuture")
            .field("done", &self.node.is_cancelled())
            .finish()
    }
}

/// Future returned by [`Context::done_owned`](crate::Context::done_owned):
/// [`ContextDoneFuture`] that owns its context, so it is `'static + Send`
/// and can be handed to an API that keeps it, such as
/// `axum::serve(..).with_graceful_shutdown(..)`, without an `async move`
/// wrapper.
///
/// It is the same future as [`done`](crate::Context::done)'s (the same
/// waiting and deadline rules), boxed once when created.
///
/// # Cancel safety
///
/// Cancel safe: dropping it loses nothing.
///
/// # Examples
///
/// ```
/// use taskgroup::{Context, ContextDoneOwned};
///
/// fn assert_static_send<F: std::future::Future + Send + 'static>(f: F) -> F {
///     f
/// }
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// let done: ContextDoneOwned = assert_static_send(ctx.done_owned());
/// drop(ctx); // the future keeps the context alive
/// let mut done = tokio_test::task::spawn(done);
/// assert!(done.poll().is_pending());
/// cancel.cancel();
/// assert!(done.is_woken());
/// assert!(done.poll().is_ready());
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct ContextDoneOwned {
    node: Arc<Node>,
    done: Pin<Box<dyn Future<Output = ()> + Send + Sync>>,
}

impl ContextDoneOwned {
    pub(super) fn new(node: &Arc<Node>) -> ContextDoneOwned {
        let owned = Arc::clone(node);
        ContextDoneOwned {
            node: Arc::clone(node),
            // `done()`'s future, made at the first poll from a node it owns:
            // it looks at the state after creating its waiter, as always.
            done: Box::pin(async move { ContextDoneFuture::new(&owned).await }),
        }
    }
}

impl Future for ContextDoneOwned {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<()> {
        self.done.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for ContextDoneOwned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextDoneOwned")
            .field("done", &self.node.is_cancelled())
            .finish()
    }
}

pin_project! {
    /// Future returned by [`Context::run`](crate::Context::run) and
    /// [`Context::sleep`](crate::Context::sleep): the inner future's output,
    /// or the context's error if it ends first.
    ///
    /// # Cancel safety
    ///
    /// As cancel safe as the inner future, which dropping this drops.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{Context, ContextError, ContextRunFuture};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let run: ContextRunFuture<'_, _> = ctx.run(std::future::pending::<()>());
    /// cancel.cancel();
    /// assert_eq!(run.await, Err(ContextError::Cancelled));
    /// # }
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct ContextRunFuture<'a, F> {
        #[pin]
        done: ContextDoneFuture<'a>,
        // `None` once finished: on cancellation the inner future is dropped
        // at once, not when this future is.
        #[pin]
        fut: Option<F>,
    }
}

impl<'a, F: Future> ContextRunFuture<'a, F> {
    pub(super) fn new(node: &'a Arc<Node>, fut: F) -> ContextRunFuture<'a, F> {
        ContextRunFuture {
            done: ContextDoneFuture::new(node),
            fut: Some(fut),
        }
    }
}

impl<F: Future> Future for ContextRunFuture<'_, F> {
    type Output = Result<F::Output, ContextError>;

    fn poll(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // The context first: work is never started or continued once it is over.
        if let Some(error) = this.done.node.error() {
            this.fut.set(None);
            return Poll::Ready(Err(error));
        }
        let Some(fut) = this.fut.as_mut().as_pin_mut() else {
            panic!("ContextRunFuture polled after completion");
        };
        if let Poll::Ready(output) = fut.poll(cx) {
            this.fut.set(None);
            return Poll::Ready(Ok(output));
        }
        match this.done.poll_done(cx) {
            Poll::Ready(error) => {
                this.fut.set(None);
                Poll::Ready(Err(error))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F> std::fmt::Debug for ContextRunFuture<'_, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextRunFuture")
            .field("done", &self.done)
            .field("finished", &self.fut.is_none())
            .finish()
    }
}
