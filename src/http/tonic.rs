//! gRPC over tonic (feature `tonic`): a request's [`Context`] in a handler,
//! outgoing calls that carry the caller's remaining budget and are reset
//! when the caller's context ends, and [`ContextError`] ↔
//! [`tonic::Status`].
//!
//! Which layer goes where:
//!
//! - **Server**: [`ContextLayer`](super::ContextLayer) on the tonic server
//!   (`Server::builder().layer(ContextLayer::new(&root))`). Every call gets
//!   a context, a child of `root`, with the caller's `grpc-timeout` as its
//!   deadline (capped by [`max_timeout`](super::ContextLayer::max_timeout)),
//!   cancelled when the client resets the stream or goes away (hyper drops
//!   the handler then). A malformed or duplicated `grpc-timeout` is refused
//!   before the handler runs. In the handler, [`request_context`].
//! - **Connections**: serve from [`WatchedIncoming`]
//!   (`serve_with_incoming`) and each connection gets a context of its
//!   own, which its calls' contexts descend from: a client that closes or
//!   resets its connection cancels them with
//!   [`Disconnected::PeerClosed`](super::Disconnected::PeerClosed) or
//!   [`PeerReset`](super::Disconnected::PeerReset), while a call the
//!   client cancels alone (an HTTP/2 stream reset) ends with
//!   [`ResponseDropped`](super::Disconnected::ResponseDropped): the cause
//!   says which.
//! - **Client**: [`outgoing`] builds a request that carries the caller's
//!   remaining budget as its `grpc-timeout`, and [`call`] runs the call
//!   under the caller's context: when that context ends, the call's future
//!   is dropped, and tonic resets the stream (`RST_STREAM`), which cancels
//!   the context of the service called. (Or wrap the channel in
//!   [`PropagateDeadlineLayer`](super::PropagateDeadlineLayer) and put the
//!   context in each request's extensions: the same, as a layer.)
//!
//! # Examples
//!
//! A hop in a chain: take the caller's context, call the next service
//! within what is left of the caller's budget.
//!
//! ```no_run
//! # #![allow(dead_code)]
//! use taskgroup::http::tonic::{call, outgoing, request_context};
//! use tonic::{Request, Response, Status};
//!
//! # struct Next;
//! # impl Next {
//! #     async fn lookup(&mut self, req: Request<String>) -> Result<Response<String>, Status> { Ok(Response::new(req.into_inner())) }
//! # }
//! async fn handle(req: Request<String>, next: &mut Next) -> Result<Response<String>, Status> {
//!     let ctx = request_context(&req)?;
//!     let asked = outgoing(&ctx, req.into_inner())?;
//!     let answer = call(&ctx, next.lookup(asked)).await?;
//!     Ok(Response::new(answer.into_inner()))
//! }
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{self, Poll};

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tonic::transport::server::Connected;
use tonic::{Code, Request, Status};

use super::{ConnectionContext, Watchable, WatchedIo};
use crate::{Context, ContextError};

/// The connections a tonic server accepts, each a [`WatchedIo`] with a
/// context of its own, a child of `parent`: give it to
/// `Server::serve_with_incoming`, with [`ContextLayer`](super::ContextLayer)
/// on the server, and each call's context descends from its connection's
/// (see [the module](self)). Sets `TCP_NODELAY` on each connection, as
/// tonic's own listener does.
///
/// # Examples
///
/// ```no_run
/// # #![allow(dead_code)]
/// use taskgroup::Context;
/// use taskgroup::http::ContextLayer;
/// use taskgroup::http::tonic::WatchedIncoming;
///
/// # async fn run(routes: tonic::service::Routes) -> Result<(), Box<dyn std::error::Error>> {
/// let (root, _shutdown) = Context::background().with_cancel();
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
/// tonic::transport::Server::builder()
///     .layer(ContextLayer::new(&root))
///     .add_routes(routes)
///     .serve_with_incoming(WatchedIncoming::new(listener, &root))
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct WatchedIncoming {
    listener: TcpListener,
    parent: Context,
}

impl WatchedIncoming {
    /// Accepts from `listener`; each connection's context is a child of
    /// `parent` (cancel it to close them all).
    ///
    /// # Examples
    ///
    /// See [`WatchedIncoming`].
    pub fn new(listener: TcpListener, parent: &Context) -> WatchedIncoming {
        WatchedIncoming {
            listener,
            parent: parent.clone(),
        }
    }
}

impl futures_core::Stream for WatchedIncoming {
    type Item = io::Result<WatchedIo<TcpStream>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.listener.poll_accept(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok((stream, _))) => {
                let _ = stream.set_nodelay(true);
                Poll::Ready(Some(Ok(WatchedIo::new(stream, &this.parent))))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Some(Err(error))),
        }
    }
}

/// tonic puts a watched connection's [`ConnectionContext`] in every call's
/// extensions, where [`ContextLayer`](super::ContextLayer) finds it.
impl<T: Watchable> Connected for WatchedIo<T> {
    type ConnectInfo = ConnectionContext;

    fn connect_info(&self) -> ConnectionContext {
        self.connection()
    }
}

/// The context the server's [`ContextLayer`](super::ContextLayer) gave
/// this call.
///
/// # Errors
///
/// `Status::internal`, saying so, when the server has no `ContextLayer`:
/// a handler can `?` it.
///
/// # Examples
///
/// ```
/// use taskgroup::Context;
/// use taskgroup::http::tonic::request_context;
///
/// let mut req = tonic::Request::new(());
/// assert!(request_context(&req).is_err());
/// req.extensions_mut().insert(Context::background());
/// assert!(request_context(&req).is_ok());
/// ```
pub fn request_context<T>(req: &Request<T>) -> Result<Context, Status> {
    req.extensions().get::<Context>().cloned().ok_or_else(|| {
        Status::internal(
            "no request context: add taskgroup::http::ContextLayer to the tonic server",
        )
    })
}

/// A request for an outgoing call made on behalf of `ctx`: it carries the
/// time left before `ctx`'s deadline as its `grpc-timeout` (none if `ctx`
/// has no deadline), and `ctx` in its extensions (for
/// [`PropagateDeadlineLayer`](super::PropagateDeadlineLayer), if the
/// channel has it).
///
/// # Errors
///
/// The status of `ctx`'s end ([`From<ContextError>`](#impl-From<ContextError>-for-Status)),
/// when it has ended or its deadline has passed: nothing is sent then.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use taskgroup::Context;
/// use taskgroup::http::tonic::outgoing;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let (ctx, cancel) = Context::background().with_timeout(Duration::from_millis(300));
/// tokio::time::sleep(Duration::from_millis(100)).await;
/// let req = outgoing(&ctx, "hello").unwrap();
/// assert_eq!(req.metadata().get("grpc-timeout").unwrap(), "200000u");
/// cancel.cancel();
/// assert_eq!(outgoing(&ctx, "hello").unwrap_err().code(), tonic::Code::Cancelled);
/// # }
/// ```
pub fn outgoing<T>(ctx: &Context, message: T) -> Result<Request<T>, Status> {
    ctx.check()?;
    let mut req = Request::new(message);
    if let Some(deadline) = ctx.deadline() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ContextError::DeadlineExceeded.into());
        }
        req.set_timeout(left);
    }
    req.extensions_mut().insert(ctx.clone());
    Ok(req)
}

/// Runs an outgoing call under `ctx`: when `ctx` ends first, the call's
/// future is dropped (tonic resets its stream, and the service called sees
/// its context cancelled) and the result is `ctx`'s end as a `Status`. A
/// `CANCELLED` from the other side that arrives once `ctx`'s deadline has
/// passed reads as `DEADLINE_EXCEEDED`, as the gRPC spec says.
///
/// # Errors
///
/// The call's own `Status`, or `ctx`'s end as one.
///
/// # Cancel safety
///
/// As cancel safe as the call: dropping this drops it (and resets the
/// stream).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use taskgroup::Context;
/// use taskgroup::http::tonic::call;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(50));
/// let slow = async {
///     tokio::time::sleep(Duration::from_secs(5)).await;
///     Ok::<_, tonic::Status>("late")
/// };
/// let status = call(&ctx, slow).await.unwrap_err();
/// assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
/// # }
/// ```
pub async fn call<R, F>(ctx: &Context, fut: F) -> Result<R, Status>
where
    F: Future<Output = Result<R, Status>>,
{
    match ctx.run(fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(status)) => Err(reconcile(ctx, status)),
        Err(end) => Err(end.into()),
    }
}

/// A `CANCELLED` that arrives after our own deadline passed is the
/// deadline's doing.
fn reconcile(ctx: &Context, status: Status) -> Status {
    let expired = ctx
        .deadline()
        .is_some_and(|deadline| deadline <= Instant::now());
    if status.code() == Code::Cancelled && expired {
        return Status::deadline_exceeded(status.message().to_owned());
    }
    status
}

/// The context error a status stands for: `CANCELLED` is
/// [`ContextError::Cancelled`] (or [`DeadlineExceeded`](ContextError::DeadlineExceeded)
/// once `ctx`'s deadline has passed), `DEADLINE_EXCEEDED` is
/// `DeadlineExceeded`; any other status, `None`.
///
/// # Examples
///
/// ```
/// use taskgroup::{Context, ContextError};
/// use taskgroup::http::tonic::context_error;
///
/// let ctx = Context::background();
/// assert_eq!(context_error(&tonic::Status::cancelled("gone"), &ctx), Some(ContextError::Cancelled));
/// assert_eq!(context_error(&tonic::Status::not_found("no"), &ctx), None);
/// ```
pub fn context_error(status: &Status, ctx: &Context) -> Option<ContextError> {
    match reconcile(ctx, Status::new(status.code(), "")).code() {
        Code::Cancelled => Some(ContextError::Cancelled),
        Code::DeadlineExceeded => Some(ContextError::DeadlineExceeded),
        _ => None,
    }
}

/// `Cancelled` is `CANCELLED`, `DeadlineExceeded` is `DEADLINE_EXCEEDED`,
/// with the error's message.
///
/// # Examples
///
/// ```
/// use taskgroup::ContextError;
///
/// let status: tonic::Status = ContextError::DeadlineExceeded.into();
/// assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
/// ```
impl From<ContextError> for Status {
    fn from(error: ContextError) -> Status {
        match error {
            ContextError::Cancelled => Status::cancelled(error.to_string()),
            ContextError::DeadlineExceeded => Status::deadline_exceeded(error.to_string()),
        }
    }
}
