//! axum support (feature `axum`): [`Context`] as an extractor, and
//! [`DisconnectListener`] for `axum::serve`.

use std::convert::Infallible;
use std::fmt;
use std::io;

use axum::extract::connect_info::Connected;
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};

use super::{ConnectionContext, Watchable, WatchedIo};
use crate::Context;

/// Extracts the request's [`Context`], put there by
/// [`ContextLayer`](super::ContextLayer): `async fn handler(ctx: Context)`.
///
/// Without the layer the request is answered `500 Internal Server Error`
/// with a message naming the missing layer ([`MissingContextLayer`]); take
/// an `Option<Context>` to handle that case yourself.
///
/// # Examples
///
/// ```
/// use axum::{Router, body::Body, routing::get};
/// use http::{Request, StatusCode};
/// use taskgroup::Context;
/// use taskgroup::http::ContextLayer;
/// use tower::ServiceExt;
///
/// async fn handler(ctx: Context) -> String {
///     format!("cancelled: {}", ctx.is_cancelled())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let app = Router::new().route("/", get(handler));
///
/// let with_layer = app.clone().layer(ContextLayer::new(&Context::background()));
/// let response = with_layer.oneshot(Request::new(Body::empty())).await.unwrap();
/// assert_eq!(response.status(), StatusCode::OK);
///
/// // Forgot the layer: a 500 that says so.
/// let response = app.oneshot(Request::new(Body::empty())).await.unwrap();
/// assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
/// let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
/// assert!(String::from_utf8_lossy(&body).contains("ContextLayer"));
/// # }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl<S: Send + Sync> FromRequestParts<S> for Context {
    type Rejection = MissingContextLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Context, Self::Rejection> {
        parts
            .extensions
            .get::<Context>()
            .cloned()
            .ok_or(MissingContextLayer { _private: () })
    }
}

/// Extracts the request's [`Context`] if
/// [`ContextLayer`](super::ContextLayer) put one there: `Option<Context>`
/// as a handler argument.
///
/// # Examples
///
/// ```
/// use axum::{Router, body::Body, routing::get};
/// use http::Request;
/// use taskgroup::Context;
/// use tower::ServiceExt;
///
/// async fn handler(ctx: Option<Context>) -> &'static str {
///     if ctx.is_some() { "layered" } else { "bare" }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let app = Router::new().route("/", get(handler));
/// let response = app.oneshot(Request::new(Body::empty())).await.unwrap();
/// let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
/// assert_eq!(body, "bare");
/// # }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl<S: Send + Sync> OptionalFromRequestParts<S> for Context {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Context>, Infallible> {
        Ok(parts.extensions.get::<Context>().cloned())
    }
}

/// The rejection of the [`Context`] extractor when the request has no
/// context: the router lacks [`ContextLayer`](super::ContextLayer).
///
/// It answers `500 Internal Server Error` (a server bug, not the client's)
/// with its `Display` as a text body.
///
/// # Examples
///
/// ```
/// use axum::response::IntoResponse;
/// use axum::extract::FromRequestParts;
/// use taskgroup::Context;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (mut parts, ()) = http::Request::new(()).into_parts();
/// let missing = Context::from_request_parts(&mut parts, &()).await.unwrap_err();
/// assert_eq!(
///     missing.to_string(),
///     "no request context: add taskgroup::http::ContextLayer to the router \
///      (`.layer(ContextLayer::new(&root))`) to extract a Context"
/// );
/// assert_eq!(missing.into_response().status(), 500);
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingContextLayer {
    _private: (),
}

impl fmt::Display for MissingContextLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "no request context: add taskgroup::http::ContextLayer to the router \
             (`.layer(ContextLayer::new(&root))`) to extract a Context",
        )
    }
}

impl std::error::Error for MissingContextLayer {}

impl IntoResponse for MissingContextLayer {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

/// A listener for `axum::serve` that watches every connection for the peer
/// hanging up: each connection is a [`WatchedIo`] whose context — a child of
/// the root given here — is cancelled when the client goes, and the request
/// contexts of [`ContextLayer`](super::ContextLayer) descend from it.
///
/// hyper alone notices an HTTP/1.1 client that hangs up only while the
/// request body has been read to the end and nothing else is buffered; this
/// closes the rest (a body left unread, a pipelined request behind it, a
/// reset). See [the module docs](super#what-each-protocol-catches) for what
/// each protocol catches.
///
/// Two steps: wrap the listener, and serve with
/// `into_make_service_with_connect_info::<ConnectionContext>()`, which is how
/// axum hands a connection's data to its requests. Give the listener the
/// same root as the layer: a request on a watched connection descends from
/// the listener's root.
///
/// # Examples
///
/// A client uploads part of a large body and hangs up while the handler,
/// which does not read it, runs: hyper does not look at the socket, the
/// listener's watch sees the FIN.
///
/// ```
/// use axum::{Router, body::Body, routing::post};
/// use taskgroup::Context;
/// use taskgroup::http::{ConnectionContext, ContextLayer, DisconnectListener, Disconnected};
/// use tokio::io::AsyncWriteExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let (root, _shutdown) = Context::background().with_cancel();
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let app = Router::new()
///     .route(
///         "/upload",
///         post(move |ctx: Context, _body: Body| async move {
///             // Holds the body, never reads it; runs until the client goes.
///             tx.send(ctx.clone()).unwrap();
///             ctx.done().await;
///         }),
///     )
///     .layer(ContextLayer::new(&root));
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let addr = listener.local_addr()?;
/// let listener = DisconnectListener::new(listener, &root);
/// tokio::spawn(
///     axum::serve(listener, app.into_make_service_with_connect_info::<ConnectionContext>())
///         .into_future(),
/// );
///
/// let mut client = tokio::net::TcpStream::connect(addr).await?;
/// let mut upload = b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n".to_vec();
/// upload.resize(upload.len() + 64 * 1024, b'x');
/// client.write_all(&upload).await?;
/// let request = rx.recv().await.unwrap(); // the handler is running
/// drop(client);
/// request.done().await;
/// let cause = request.cause().unwrap();
/// assert_eq!(cause.downcast_ref(), Some(&Disconnected::PeerClosed));
/// # Ok(())
/// # }
/// ```
pub struct DisconnectListener<L> {
    listener: L,
    root: Context,
}

impl<L> DisconnectListener<L> {
    /// Wraps `listener`; each connection's context is a child of `root`.
    ///
    /// # Examples
    ///
    /// See [`DisconnectListener`].
    pub fn new(listener: L, root: &Context) -> DisconnectListener<L> {
        DisconnectListener {
            listener,
            root: root.clone(),
        }
    }

    /// The wrapped listener.
    ///
    /// # Examples
    ///
    /// ```
    /// # use taskgroup::Context;
    /// # use taskgroup::http::DisconnectListener;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let addr = tcp.local_addr()?;
    /// let listener = DisconnectListener::new(tcp, &Context::background());
    /// assert_eq!(listener.get_ref().local_addr()?, addr);
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_ref(&self) -> &L {
        &self.listener
    }
}

impl<L> Listener for DisconnectListener<L>
where
    L: Listener,
    L::Io: Watchable,
{
    type Io = WatchedIo<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.listener.accept().await;
        (WatchedIo::new(io, &self.root), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

impl<L: fmt::Debug> fmt::Debug for DisconnectListener<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DisconnectListener")
            .field("listener", &self.listener)
            .field("root", &self.root)
            .finish()
    }
}

/// Hands each connection's context to its requests: serve with
/// `app.into_make_service_with_connect_info::<ConnectionContext>()`.
///
/// A handler can also extract it, as
/// `ConnectInfo(connection): ConnectInfo<ConnectionContext>`.
impl<L> Connected<IncomingStream<'_, DisconnectListener<L>>> for ConnectionContext
where
    L: Listener,
    L::Io: Watchable,
{
    fn connect_info(stream: IncomingStream<'_, DisconnectListener<L>>) -> ConnectionContext {
        stream.io().connection()
    }
}
