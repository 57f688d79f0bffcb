//! The named futures returned by [`Context`](crate::Context).

use std::future::Future;
use std::pin::Pin;
use std::task::{self, Poll};

use pin_project_lite::pin_project;
use tokio::sync::futures::Notified;

use super::tree::Node;
use crate::ContextError;

pin_project! {
    /// Future returned by [`Context::done`](crate::Context::done): resolves
    /// once the context is cancelled.
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
        node: &'a Node,
        // Created before the first look at the state, so a cancel between
        // that look and the first poll still wakes it.
        #[pin]
        notified: Notified<'a>,
    }
}

impl<'a> ContextDoneFuture<'a> {
    pub(super) fn new(node: &'a Node) -> ContextDoneFuture<'a> {
        ContextDoneFuture {
            node,
            notified: node.notify().notified(),
        }
    }

    /// Whether the context is over, with the error if so.
    fn poll_done(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<ContextError> {
        let mut this = self.project();
        loop {
            if let Some(error) = this.node.error() {
                return Poll::Ready(error);
            }
            match this.notified.as_mut().poll(cx) {
                Poll::Ready(()) => this.notified.set(this.node.notify().notified()),
                Poll::Pending => return Poll::Pending,
            }
        }
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
    pub(super) fn new(node: &'a Node, fut: F) -> ContextRunFuture<'a, F> {
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
