//! Outgoing deadlines: [`propagate_deadline`] and [`PropagateDeadlineLayer`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{self, Poll};

use http::{HeaderMap, Request};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::grpc_timeout;
use crate::{Context, ContextError};

/// The error type of [`PropagateDeadline`]: the inner service's error, or a
/// [`ContextError`] when the request's context ended first. Downcast to
/// tell them apart.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Stamps `headers` with the time `ctx` has left, as a `grpc-timeout`
/// header, so the service called next shares the caller's budget.
///
/// - With a deadline, sets `grpc-timeout` to the time left until it
///   (rounded down, see [`grpc_timeout::encode`]), replacing any value
///   already there.
/// - Without one, removes any `grpc-timeout` already there: a stale budget
///   copied from an incoming request must not travel on.
///
/// Call it right before sending: the time left shrinks while you wait.
///
/// # Errors
///
/// The context's [`ContextError`] when it is already over — cancelled, or
/// its deadline reached even if its timer has not fired yet — so the caller
/// does not send a request nobody will wait for. `headers` is left as it
/// was.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use http::HeaderMap;
/// use taskgroup::http::propagate_deadline;
/// use taskgroup::{Context, ContextError};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let (ctx, cancel) = Context::background().with_timeout(Duration::from_millis(250));
/// let mut headers = HeaderMap::new();
/// propagate_deadline(&ctx, &mut headers).unwrap();
/// assert_eq!(headers["grpc-timeout"], "250000u");
///
/// // No deadline: a stale header is removed.
/// propagate_deadline(&Context::background(), &mut headers).unwrap();
/// assert!(headers.get("grpc-timeout").is_none());
///
/// // Over: do not send.
/// cancel.cancel();
/// assert_eq!(propagate_deadline(&ctx, &mut headers), Err(ContextError::Cancelled));
/// # }
/// ```
pub fn propagate_deadline(ctx: &Context, headers: &mut HeaderMap) -> Result<(), ContextError> {
    ctx.check()?;
    match ctx.deadline() {
        None => {
            headers.remove(grpc_timeout::HEADER);
        }
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ContextError::DeadlineExceeded);
            }
            headers.insert(grpc_timeout::HEADER, grpc_timeout::encode(left));
        }
    }
    Ok(())
}

/// A tower client [`Layer`] that applies [`propagate_deadline`] to every
/// request carrying a [`Context`] in its extensions, and gives up on the
/// call when that context ends.
///
/// For a request with a `Context` in its extensions, the service
///
/// - stamps `grpc-timeout` with the time the context has left (or removes a
///   stale one when it has no deadline);
/// - does not send the request when the context is already over, and fails
///   with its [`ContextError`];
/// - drops the call and fails with the context's [`ContextError`] when the
///   context ends before the response arrives, as Go's `http.Client` does
///   with a request's context.
///
/// A request without a `Context` goes through untouched. Errors are boxed,
/// as tower's own middleware does: downcast to [`ContextError`] to see that
/// the context ended.
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use http::{Request, Response};
/// use taskgroup::http::PropagateDeadlineLayer;
/// use taskgroup::{Context, ContextError};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// // Stands in for an HTTP client: echoes the header it was given.
/// let client = tower::service_fn(|req: Request<()>| async move {
///     let header = req.headers().get("grpc-timeout").cloned();
///     Ok::<_, Infallible>(Response::new(header))
/// });
/// let client = ServiceBuilder::new().layer(PropagateDeadlineLayer::new()).service(client);
///
/// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(2));
/// let mut request = Request::new(());
/// request.extensions_mut().insert(ctx);
/// let response = client.clone().oneshot(request).await.unwrap();
/// assert_eq!(response.body().as_ref().unwrap(), "2000000u");
///
/// let (over, cancel) = Context::background().with_cancel();
/// cancel.cancel();
/// let mut request = Request::new(());
/// request.extensions_mut().insert(over);
/// let err = client.oneshot(request).await.unwrap_err();
/// assert_eq!(err.downcast_ref(), Some(&ContextError::Cancelled));
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct PropagateDeadlineLayer {
    _private: (),
}

impl PropagateDeadlineLayer {
    /// The layer.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::http::PropagateDeadlineLayer;
    /// use tower::ServiceBuilder;
    ///
    /// let builder = ServiceBuilder::new().layer(PropagateDeadlineLayer::new());
    /// # let _ = builder;
    /// ```
    pub fn new() -> PropagateDeadlineLayer {
        PropagateDeadlineLayer { _private: () }
    }
}

impl<S> Layer<S> for PropagateDeadlineLayer {
    type Service = PropagateDeadline<S>;

    fn layer(&self, inner: S) -> PropagateDeadline<S> {
        PropagateDeadline { inner }
    }
}

/// The service made by [`PropagateDeadlineLayer`]; see there.
///
/// # Examples
///
/// ```
/// use taskgroup::http::PropagateDeadline;
///
/// let service = PropagateDeadline::new(tower::service_fn(|req: http::Request<()>| async move {
///     Ok::<_, std::convert::Infallible>(req.headers().len())
/// }));
/// # let _ = service;
/// ```
#[derive(Clone, Debug)]
pub struct PropagateDeadline<S> {
    inner: S,
}

impl<S> PropagateDeadline<S> {
    /// Wraps `inner`.
    ///
    /// # Examples
    ///
    /// See [`PropagateDeadline`].
    pub fn new(inner: S) -> PropagateDeadline<S> {
        PropagateDeadline { inner }
    }

    /// The wrapped service.
    ///
    /// # Examples
    ///
    /// ```
    /// let service = taskgroup::http::PropagateDeadline::new(5u8);
    /// assert_eq!(*service.get_ref(), 5);
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B> Service<Request<B>> for PropagateDeadline<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = PropagateDeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut task::Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let Some(ctx) = req.extensions().get::<Context>().cloned() else {
            return PropagateDeadlineFuture {
                state: Call::Sent {
                    future: self.inner.call(req),
                    done: None,
                },
            };
        };
        if let Err(error) = propagate_deadline(&ctx, req.headers_mut()) {
            return PropagateDeadlineFuture {
                state: Call::NotSent { error: Some(error) },
            };
        }
        let done: DoneFuture = Box::pin(async move {
            ctx.done().await;
            ctx.err().unwrap_or(ContextError::Cancelled)
        });
        PropagateDeadlineFuture {
            state: Call::Sent {
                future: self.inner.call(req),
                done: Some(done),
            },
        }
    }
}

type DoneFuture = Pin<Box<dyn Future<Output = ContextError> + Send>>;

pin_project! {
    /// Future returned by [`PropagateDeadline`]: the inner call, given up
    /// when the request's context ends.
    ///
    /// # Cancel safety
    ///
    /// As cancel safe as the inner call: dropping it drops that.
    ///
    /// # Examples
    ///
    /// ```
    /// use http::Request;
    /// use taskgroup::http::PropagateDeadline;
    /// use taskgroup::{Context, ContextError};
    /// use tower::Service;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut client = PropagateDeadline::new(tower::service_fn(|_req: Request<()>| {
    ///     std::future::pending::<Result<(), std::convert::Infallible>>()
    /// }));
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let mut request = Request::new(());
    /// request.extensions_mut().insert(ctx);
    /// let call = client.call(request);
    /// cancel.cancel(); // the caller gave up: so does the call
    /// assert_eq!(call.await.unwrap_err().downcast_ref(), Some(&ContextError::Cancelled));
    /// # }
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct PropagateDeadlineFuture<F> {
        #[pin]
        state: Call<F>,
    }
}

pin_project! {
    #[project = CallProj]
    enum Call<F> {
        Sent { #[pin] future: F, done: Option<DoneFuture> },
        NotSent { error: Option<ContextError> },
    }
}

impl<F, T, E> Future for PropagateDeadlineFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            CallProj::Sent { future, done } => {
                if let Poll::Ready(result) = future.poll(cx) {
                    return Poll::Ready(result.map_err(Into::into));
                }
                match done.as_mut().map(|done| done.as_mut().poll(cx)) {
                    Some(Poll::Ready(error)) => Poll::Ready(Err(error.into())),
                    _ => Poll::Pending,
                }
            }
            CallProj::NotSent { error } => Poll::Ready(Err(error
                .take()
                .expect("PropagateDeadlineFuture polled after completion")
                .into())),
        }
    }
}

impl<F> fmt::Debug for PropagateDeadlineFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            Call::Sent { .. } => "sent",
            Call::NotSent { .. } => "not sent",
        };
        f.debug_struct("PropagateDeadlineFuture")
            .field("state", &state)
            .finish()
    }
}
