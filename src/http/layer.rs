//! [`ContextLayer`]: a [`Context`] for every request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{self, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{ConnectionContext, ContextBody, Disconnected, grpc_timeout};
use crate::{CancelHandle, Context};

/// A tower [`Layer`] that gives every request its own [`Context`]: Go's
/// `r.Context()`, for tower, hyper and axum servers.
///
/// The context of a request is
///
/// - a child of the server's root given to [`new`](ContextLayer::new), so
///   cancelling the root (shutting down) cancels every request at once — or,
///   on a connection watched by [`WatchedIo`](super::WatchedIo) or
///   `DisconnectListener` (feature `axum`), a child of that
///   connection's context, itself a child of the root the listener was
///   given: give both the same root;
/// - in the request's extensions, where a handler finds it
///   (`req.extensions().get::<Context>()`, or with the `axum` feature simply
///   a `ctx: Context` argument);
/// - given a deadline: the earlier of the request's `grpc-timeout` header
///   and [`max_timeout`](ContextLayer::max_timeout), if either is there;
/// - cancelled when the response is over: its body has been sent to the end
///   or dropped ([`ContextBody`]), so a streamed body keeps its context live
///   while it streams; or when the response future is dropped before the
///   response is ready — hyper drops it when it sees the client go
///   (cause [`Disconnected::ResponseDropped`]).
///
/// The layer only cancels the context; it never cuts a handler short by
/// itself. As in Go, the handler decides what to answer when its context
/// ends (tower's `Timeout` layer is there for a hard cut).
///
/// When the client goes away, hyper drops the response future, and with it
/// (by default, [`DropOnDisconnect`]) the handler, at the await it is
/// parked on: code after that await never runs.
/// [`run_to_completion`](ContextLayer::run_to_completion) runs the handler
/// on a task of its own instead, so it sees the cancel and finishes its
/// error path; see [Drop or run to
/// completion](super#drop-or-run-to-completion).
///
/// A malformed `grpc-timeout` (empty, a sign, a fraction, more than 8
/// digits, an unknown unit) is answered `400 Bad Request` with a text body
/// saying what is wrong ([`grpc_timeout::DecodeError`]), and the inner
/// service is not called. So is a request with more than one
/// `grpc-timeout`.
///
/// # Examples
///
/// An axum server whose handler fans out under its request's context
/// (feature `axum`):
///
/// ```
/// use std::time::Duration;
/// use axum::{Router, routing::get};
/// use taskgroup::http::ContextLayer;
/// use taskgroup::{Context, TaskGroup};
///
/// async fn handler(ctx: Context) -> String {
///     let mut group = TaskGroup::<u32, String>::with_context(&ctx);
///     for backend in 0..3 {
///         group.spawn(move |ctx| async move {
///             ctx.sleep(Duration::from_millis(5)).await.map_err(|e| e.to_string())?;
///             Ok(backend)
///         });
///     }
///     match group.wait().await {
///         Ok(replies) => format!("{} replies", replies.len()),
///         Err(e) => format!("gave up: {e}"),
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (root, shutdown) = Context::background().with_cancel();
/// let app = Router::new()
///     .route("/", get(handler))
///     .layer(ContextLayer::new(&root).max_timeout(Duration::from_secs(10)));
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let addr = listener.local_addr()?;
/// let server = tokio::spawn(
///     axum::serve(listener, app)
///         .with_graceful_shutdown(root.done_owned())
///         .into_future(),
/// );
///
/// // A real client on loopback.
/// let stream = tokio::net::TcpStream::connect(addr).await?;
/// let (mut sender, conn) =
///     hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
/// tokio::spawn(conn);
/// let request = http::Request::get("/")
///     .header("host", "localhost")
///     .body(http_body_util::Empty::<bytes::Bytes>::new())?;
/// let response = sender.send_request(request).await?;
/// let body = http_body_util::BodyExt::collect(response.into_body()).await?.to_bytes();
/// assert_eq!(body, "3 replies");
///
/// drop(sender);
/// shutdown.cancel(); // every request context is cancelled; the server drains
/// server.await??;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ContextLayer<M = DropOnDisconnect> {
    root: Context,
    max_timeout: Option<Duration>,
    mode: M,
}

/// The default way a [`ContextLayer`] runs a handler: inside the response
/// future, so a client that goes away drops the handler at its next await
/// (hyper drops the response future) and nothing after that await runs.
///
/// See [Drop or run to completion](super#drop-or-run-to-completion), and
/// [`RunToCompletion`] for the other way.
///
/// # Examples
///
/// ```
/// use taskgroup::Context;
/// use taskgroup::http::{ContextLayer, DropOnDisconnect};
///
/// let layer: ContextLayer<DropOnDisconnect> = ContextLayer::new(&Context::background());
/// # let _ = layer;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropOnDisconnect;

/// A [`ContextLayer`] that runs each handler on a tokio task of its own, so
/// a handler whose client went away sees its context cancelled and runs
/// its own error path to the end; made by
/// [`ContextLayer::run_to_completion`].
///
/// See [Drop or run to completion](super#drop-or-run-to-completion).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use taskgroup::Context;
/// use taskgroup::http::{ContextLayer, RunToCompletion};
///
/// let layer: ContextLayer<RunToCompletion> =
///     ContextLayer::new(&Context::background()).run_to_completion(Duration::from_secs(2));
/// assert_eq!(layer.mode().grace(), Duration::from_secs(2));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunToCompletion {
    grace: Duration,
}

impl RunToCompletion {
    /// How long a handler may go on after its client went away before it
    /// is dropped: the `grace` given to
    /// [`run_to_completion`](ContextLayer::run_to_completion).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::Context;
    /// use taskgroup::http::ContextLayer;
    ///
    /// let layer = ContextLayer::new(&Context::background())
    ///     .run_to_completion(Duration::from_millis(500));
    /// assert_eq!(layer.mode().grace(), Duration::from_millis(500));
    /// ```
    pub fn grace(&self) -> Duration {
        self.grace
    }
}

impl ContextLayer {
    /// A layer whose request contexts are children of `root`.
    ///
    /// Cancel `root` to cancel every request in flight (and any request that
    /// comes after: its context is born cancelled).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Context;
    /// use taskgroup::http::ContextLayer;
    ///
    /// let (root, _shutdown) = Context::background().with_cancel();
    /// let layer = ContextLayer::new(&root);
    /// # let _ = layer;
    /// ```
    pub fn new(root: &Context) -> ContextLayer {
        ContextLayer {
            root: root.clone(),
            max_timeout: None,
            mode: DropOnDisconnect,
        }
    }

    /// Runs every handler on a tokio task of its own, so that a handler
    /// whose client went away is not dropped: it sees its request context
    /// cancelled (cause [`Disconnected`]) and finishes its own error path,
    /// as a Go handler does after `ctx.Err()`.
    ///
    /// Nothing changes while the client waits: the response future waits
    /// for the handler's task, and the layer never cuts the handler short.
    /// Once the client is gone (the response future is dropped), the
    /// handler's task goes on, for at most `grace` more: a handler still
    /// running then is dropped at its next await, so one that ignores its
    /// context cannot run forever. What a detached handler returns is
    /// dropped (there is no one to send it to).
    ///
    /// The bound counts from the client leaving, not from the request's
    /// deadline: a client that gives up exactly at the deadline (`curl -m
    /// 1` with `grpc-timeout: 1S`) still leaves the handler `grace` to log
    /// and clean up. The deadline itself still cancels the context as
    /// before.
    ///
    /// See [Drop or run to completion](super#drop-or-run-to-completion)
    /// for when each is right. The handler's future must be `Send +
    /// 'static` (axum's always are); tokio task-locals of the connection's
    /// task are not visible in it. A detached handler is not waited for by
    /// a graceful shutdown: `axum::serve` may return while it finishes
    /// (within `grace`).
    ///
    /// # Panics
    ///
    /// The service panics at `call` outside a tokio runtime (it spawns the
    /// handler's task). A panic in the handler is raised again in the
    /// response future while the client waits, as without this option;
    /// after the client left, tokio reports it on the handler's task.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use std::time::Duration;
    /// use http::{Request, Response};
    /// use taskgroup::Context;
    /// use taskgroup::http::{ContextLayer, Disconnected};
    /// use tower::{Layer, Service};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let (log, mut lines) = tokio::sync::mpsc::unbounded_channel();
    /// let layer = ContextLayer::new(&Context::background()).run_to_completion(Duration::from_secs(1));
    /// let mut service = layer.layer(tower::service_fn(move |req: Request<()>| {
    ///     let log = log.clone();
    ///     async move {
    ///         let ctx = req.extensions().get::<Context>().unwrap().clone();
    ///         if let Err(e) = ctx.sleep(Duration::from_secs(60)).await {
    ///             // The error path: it runs although the client is gone.
    ///             log.send(format!("step 3 failed: {e}: {}", ctx.cause().unwrap())).unwrap();
    ///         }
    ///         Ok::<_, Infallible>(Response::new(String::new()))
    ///     }
    /// }));
    /// let response = service.call(Request::new(()));
    /// tokio::task::yield_now().await; // the handler starts
    /// drop(response); // the client went away: hyper drops the response future
    /// assert_eq!(
    ///     lines.recv().await.unwrap(),
    ///     format!("step 3 failed: context cancelled: {}", Disconnected::ResponseDropped),
    /// );
    /// # }
    /// ```
    pub fn run_to_completion(self, grace: Duration) -> ContextLayer<RunToCompletion> {
        ContextLayer {
            root: self.root,
            max_timeout: self.max_timeout,
            mode: RunToCompletion { grace },
        }
    }
}

impl<M> ContextLayer<M> {
    /// Gives every request at most `timeout`: its deadline is the earlier
    /// of `timeout` from its arrival and its `grpc-timeout` header.
    ///
    /// `Duration::MAX` (or any timeout too large to add to now) means no
    /// limit. The limit only cancels the context; the handler still
    /// answers.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use std::time::Duration;
    /// use http::{Request, Response};
    /// use taskgroup::Context;
    /// use taskgroup::http::ContextLayer;
    /// use tower::{Layer, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let layer = ContextLayer::new(&Context::background()).max_timeout(Duration::from_millis(50));
    /// let service = layer.layer(tower::service_fn(|req: Request<()>| async move {
    ///     let ctx = req.extensions().get::<Context>().unwrap().clone();
    ///     let waited = ctx.sleep(Duration::from_secs(60)).await;
    ///     Ok::<_, Infallible>(Response::new(format!("{waited:?}")))
    /// }));
    /// let response = service.oneshot(Request::new(())).await.unwrap();
    /// assert_eq!(response.body().get_ref().unwrap(), "Err(DeadlineExceeded)");
    /// # }
    /// ```
    pub fn max_timeout(mut self, timeout: Duration) -> ContextLayer<M> {
        self.max_timeout = Some(timeout);
        self
    }

    /// How this layer runs handlers: [`DropOnDisconnect`] (the default) or
    /// [`RunToCompletion`].
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Context;
    /// use taskgroup::http::{ContextLayer, DropOnDisconnect};
    ///
    /// assert_eq!(*ContextLayer::new(&Context::background()).mode(), DropOnDisconnect);
    /// ```
    pub fn mode(&self) -> &M {
        &self.mode
    }
}

impl<S, M: Clone> Layer<S> for ContextLayer<M> {
    type Service = ContextService<S, M>;

    fn layer(&self, inner: S) -> ContextService<S, M> {
        ContextService {
            inner,
            root: self.root.clone(),
            max_timeout: self.max_timeout,
            mode: self.mode.clone(),
        }
    }
}

impl<M: fmt::Debug> fmt::Debug for ContextLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextLayer")
            .field("root", &self.root)
            .field("max_timeout", &self.max_timeout)
            .field("mode", &self.mode)
            .finish()
    }
}

/// The service made by [`ContextLayer`]: gives each request its own
/// [`Context`] and calls the inner service with it in the request's
/// extensions.
///
/// See [`ContextLayer`] for what the context is and when it ends.
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use taskgroup::Context;
/// use taskgroup::http::ContextLayer;
/// use tower::{Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let service = ContextLayer::new(&Context::background()).layer(tower::service_fn(
///     |req: Request<()>| async move {
///         let live = !req.extensions().get::<Context>().unwrap().is_cancelled();
///         Ok::<_, Infallible>(Response::new(format!("live: {live}")))
///     },
/// ));
/// let response = service.oneshot(Request::new(())).await.unwrap();
/// assert_eq!(response.body().get_ref().unwrap(), "live: true");
/// # }
/// ```
#[derive(Clone)]
pub struct ContextService<S, M = DropOnDisconnect> {
    inner: S,
    root: Context,
    max_timeout: Option<Duration>,
    mode: M,
}

impl<S, M> ContextService<S, M> {
    /// The wrapped service.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Context;
    /// use taskgroup::http::ContextLayer;
    /// use tower::Layer;
    ///
    /// let service = ContextLayer::new(&Context::background()).layer(7u8);
    /// assert_eq!(*service.get_ref(), 7);
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The parent of a request's context: its connection's, if it came on
    /// a watched connection, else the root.
    fn parent<'a, B>(&'a self, req: &'a Request<B>) -> &'a Context {
        let extensions = req.extensions();
        if let Some(connection) = extensions.get::<ConnectionContext>() {
            return connection.context();
        }
        #[cfg(feature = "axum")]
        if let Some(info) = extensions.get::<axum::extract::ConnectInfo<ConnectionContext>>() {
            return info.0.context();
        }
        &self.root
    }

    /// Derives the request's context and puts it in the request's
    /// extensions: the handle that ends it, and whether the request is a
    /// HEAD; or the message of a `400` for a malformed `grpc-timeout`.
    fn prepare<B>(&self, req: &mut Request<B>) -> Result<(CancelHandle, bool), String> {
        let header = header_timeout(req)?;
        let timeout = match (header, self.max_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let parent = self.parent(req);
        let (ctx, cancel) = match timeout {
            Some(timeout) => parent.with_timeout(timeout),
            None => parent.with_cancel(),
        };
        req.extensions_mut().insert(ctx);
        Ok((cancel, req.method() == http::Method::HEAD))
    }
}

/// The request's own timeout: its `grpc-timeout` header, if any.
fn header_timeout<B>(req: &Request<B>) -> Result<Option<Duration>, String> {
    let mut values = req.headers().get_all(grpc_timeout::HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("more than one grpc-timeout header".to_string());
    }
    grpc_timeout::decode(value)
        .map(Some)
        .map_err(|e| e.to_string())
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ContextService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ContextBody<ResBody>>;
    type Error = S::Error;
    type Future = ContextResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut task::Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    /// Derives the request's context and calls the inner service.
    ///
    /// # Panics
    ///
    /// Panics outside a tokio runtime when the request has a deadline, as
    /// [`Context::with_timeout`] does.
    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        match self.prepare(&mut req) {
            Ok((cancel, head)) => ContextResponseFuture::called(self.inner.call(req), head, cancel),
            Err(message) => ContextResponseFuture::reject(message),
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ContextService<S, RunToCompletion>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ContextBody<ResBody>>;
    type Error = S::Error;
    type Future = ContextResponseFuture<HandlerTask<Result<Response<ResBody>, S::Error>>, ResBody>;

    fn poll_ready(&mut self, cx: &mut task::Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    /// Derives the request's context, calls the inner service and runs its
    /// future on a task of its own ([`ContextLayer::run_to_completion`]).
    ///
    /// # Panics
    ///
    /// Panics outside a tokio runtime.
    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        match self.prepare(&mut req) {
            Ok((cancel, head)) => {
                let handler = HandlerTask::spawn(self.inner.call(req), self.mode.grace);
                ContextResponseFuture::called(handler, head, cancel)
            }
            Err(message) => ContextResponseFuture::reject(message),
        }
    }
}

impl<S: fmt::Debug, M: fmt::Debug> fmt::Debug for ContextService<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextService")
            .field("inner", &self.inner)
            .field("root", &self.root)
            .field("max_timeout", &self.max_timeout)
            .field("mode", &self.mode)
            .finish()
    }
}

/// A handler running on a tokio task of its own
/// ([`ContextLayer::run_to_completion`]): resolves to what the handler
/// returns, and re-raises its panic.
///
/// # Cancel safety
///
/// Dropping it leaves the handler running (that is the point): the
/// handler's task then has the layer's grace to end, and is dropped at its
/// next await after that. What it returns is dropped.
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use http::{Request, Response};
/// use taskgroup::Context;
/// use taskgroup::http::ContextLayer;
/// use tower::{Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = ContextLayer::new(&Context::background()).run_to_completion(Duration::from_secs(1));
/// let service = layer.layer(tower::service_fn(|_: Request<()>| async {
///     Ok::<_, Infallible>(Response::new("answered on its own task"))
/// }));
/// let response = service.oneshot(Request::new(())).await.unwrap();
/// assert_eq!(*response.body().get_ref().unwrap(), "answered on its own task");
/// # }
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct HandlerTask<T> {
    task: tokio::task::JoinHandle<Option<T>>,
    // Dropped with this future: tells the task its client is gone.
    _attached: tokio::sync::oneshot::Sender<()>,
}

impl<T: Send + 'static> HandlerTask<T> {
    fn spawn<F>(handler: F, grace: Duration) -> HandlerTask<T>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let (attached, mut detached) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut handler = std::pin::pin!(handler);
            // While the client waits: the handler, as if it ran inside the
            // response future.
            let output = std::future::poll_fn(|cx| {
                if let Poll::Ready(output) = handler.as_mut().poll(cx) {
                    return Poll::Ready(Some(output));
                }
                Pin::new(&mut detached).poll(cx).map(|_| None)
            })
            .await;
            if output.is_some() {
                return output;
            }
            // The client is gone (and the context cancelled, by
            // `ContextResponseFuture`'s drop): `grace` more to end.
            tokio::time::timeout(grace, handler).await.ok()
        });
        HandlerTask {
            task,
            _attached: attached,
        }
    }
}

impl<T> Future for HandlerTask<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<T> {
        match std::task::ready!(Pin::new(&mut self.task).poll(cx)) {
            Ok(Some(output)) => Poll::Ready(output),
            // The task gives up only once this future is dropped.
            Ok(None) => unreachable!("a handler task gave up while its client waited"),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => panic!("the handler's task was cancelled: the runtime is shutting down"),
        }
    }
}

impl<T> fmt::Debug for HandlerTask<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerTask")
            .field("finished", &self.task.is_finished())
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// Future returned by [`ContextService`]: the inner service's response
    /// with its body wrapped in a [`ContextBody`].
    ///
    /// # Cancel safety
    ///
    /// Dropping it before it is ready drops the inner service's future and
    /// cancels the request's context with the cause
    /// [`Disconnected::ResponseDropped`]: this is how a client that went
    /// away reaches the handler's tasks when hyper notices it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use http::{Request, Response};
    /// use taskgroup::Context;
    /// use taskgroup::http::{ContextLayer, Disconnected};
    /// use tower::{Layer, Service};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    /// let mut service = ContextLayer::new(&Context::background()).layer(tower::service_fn(
    ///     move |req: Request<()>| {
    ///         tx.send(req.extensions().get::<Context>().unwrap().clone()).unwrap();
    ///         std::future::pending::<Result<Response<String>, Infallible>>()
    ///     },
    /// ));
    /// let future = service.call(Request::new(()));
    /// let ctx = rx.recv().await.unwrap();
    /// drop(future); // the client went away
    /// let cause = ctx.cause().unwrap();
    /// assert_eq!(cause.downcast_ref(), Some(&Disconnected::ResponseDropped));
    /// # }
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct ContextResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
        request: Option<CancelHandle>,
    }

    impl<F, B> PinnedDrop for ContextResponseFuture<F, B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(request) = this.project().request.take() {
                request.cancel_with(Disconnected::ResponseDropped);
            }
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        // `head`: a response to HEAD has no body to send.
        Called { #[pin] future: F, head: bool },
        Rejected { response: Option<Response<ContextBody<B>>> },
    }
}

impl<F, B> ContextResponseFuture<F, B> {
    fn called(future: F, head: bool, request: CancelHandle) -> ContextResponseFuture<F, B> {
        ContextResponseFuture {
            state: State::Called { future, head },
            request: Some(request),
        }
    }

    fn reject(message: String) -> ContextResponseFuture<F, B> {
        let mut response = Response::new(ContextBody::message(message + "\n"));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        ContextResponseFuture {
            state: State::Rejected {
                response: Some(response),
            },
            request: None,
        }
    }
}

impl<F, B, E> Future for ContextResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ContextBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.state.project() {
            StateProj::Called { future, head } => {
                let result = std::task::ready!(future.poll(cx));
                // On an error the request is over: cancelled with no
                // special cause. On a response the body takes the handle,
                // unless it is one hyper never sends (HEAD, 1xx, 204, 304):
                // then the response is over with its head, and the request
                // ends now.
                let mut request = this.request.take();
                let result = result.map(|response| {
                    let status = response.status();
                    let bodiless = *head
                        || status.is_informational()
                        || status == StatusCode::NO_CONTENT
                        || status == StatusCode::NOT_MODIFIED;
                    let body_request = if bodiless { None } else { request.take() };
                    response.map(|body| ContextBody::new(body, body_request))
                });
                if let Some(request) = request {
                    request.cancel();
                }
                Poll::Ready(result)
            }
            StateProj::Rejected { response } => Poll::Ready(Ok(response
                .take()
                .expect("ContextResponseFuture polled after completion"))),
        }
    }
}

impl<F, B> fmt::Debug for ContextResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Rejected { .. } => "rejected",
        };
        f.debug_struct("ContextResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
