//! Request contexts for tower, hyper and axum servers, and deadlines across
//! the wire (feature `http`; axum support with feature `axum`).
//!
//! Go hands every handler `r.Context()`, cancelled when the client goes
//! away, and gRPC carries a caller's deadline to the next service. A Rust
//! server drops the handler's future when the client goes, but the tasks the
//! handler spawned run on. This module gives handlers both, on the stack
//! they already use:
//!
//! - [`ContextLayer`]: every request gets its own [`Context`](crate::Context), a child of the
//!   server's root (cancel the root to shut down), with a deadline from the
//!   `grpc-timeout` header and an optional maximum, cancelled when the
//!   response is over or the client goes away. Pass it to a
//!   [`TaskGroup`](crate::TaskGroup) and the fan-out stops with the request.
//!   A client that goes away drops the handler (hyper's way), or, with
//!   [`ContextLayer::run_to_completion`], lets it see the cancel and finish
//!   its error path (Go's way): see [below](#drop-or-run-to-completion).
//! - `Context` as an axum extractor: `async fn handler(ctx: Context)`
//!   (feature `axum`).
//! - [`grpc_timeout`]: the header's codec; [`propagate_deadline`] and
//!   [`PropagateDeadlineLayer`] stamp outgoing requests with the time left,
//!   so a chain of services shares one budget, with any gRPC stack.
//! - `tonic` (feature `tonic`): the same for gRPC over tonic: the
//!   request's context in a handler, outgoing calls within the caller's
//!   budget, `ContextError` ↔ `tonic::Status`.
//! - [`WatchedIo`] and `DisconnectListener` (feature `axum`): catch the
//!   clients that hang
//!   up while hyper is not looking (below).
//!
//! # The handler pattern
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use taskgroup::http::{ConnectionContext, ContextLayer, DisconnectListener};
//! use taskgroup::{Context, TaskGroup};
//!
//! async fn search(ctx: Context) -> String {
//!     // The fan-out lives and dies with the request: the client hanging
//!     // up, the deadline, or a shutdown cancels `ctx`, the group, and its
//!     // tasks.
//!     let mut group = TaskGroup::<String, String>::builder().limit(8).context(&ctx).build();
//!     for shard in 0..32 {
//!         group.spawn(move |ctx| async move {
//!             ctx.sleep(Duration::from_millis(2)).await.map_err(|e| e.to_string())?;
//!             Ok(format!("shard {shard}"))
//!         });
//!     }
//!     match group.wait().await {
//!         Ok(hits) => format!("{} shards answered", hits.len()),
//!         Err(e) => format!("search stopped: {e}"),
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (root, shutdown) = Context::background().with_cancel();
//! let app = Router::new()
//!     .route("/search", get(search))
//!     .layer(ContextLayer::new(&root).max_timeout(Duration::from_secs(5)));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let server = tokio::spawn(
//!     axum::serve(
//!         DisconnectListener::new(listener, &root),
//!         app.into_make_service_with_connect_info::<ConnectionContext>(),
//!     )
//!     .with_graceful_shutdown(root.done_owned())
//!     .into_future(),
//! );
//!
//! // A client with a 1 s budget, sent as `grpc-timeout`.
//! let stream = tokio::net::TcpStream::connect(addr).await?;
//! let (mut client, conn) =
//!     hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
//! tokio::spawn(conn);
//! let request = http::Request::get("/search")
//!     .header("host", "localhost")
//!     .header("grpc-timeout", "1S")
//!     .body(http_body_util::Empty::<bytes::Bytes>::new())?;
//! let response = client.send_request(request).await?;
//! let body = http_body_util::BodyExt::collect(response.into_body()).await?.to_bytes();
//! assert_eq!(body, "32 shards answered");
//!
//! drop(client);
//! shutdown.cancel();
//! server.await??;
//! # Ok(())
//! # }
//! ```
//!
//! # Drop or run to completion
//!
//! When a client goes away, hyper drops the response future. What that
//! does to the handler's own code depends on where [`ContextLayer`] runs it:
//!
//! | | [`ContextLayer::new(&root)`](ContextLayer::new) (the default, [`DropOnDisconnect`]) | [`.run_to_completion(grace)`](ContextLayer::run_to_completion) ([`RunToCompletion`]) |
//! |---|---|---|
//! | where the handler runs | inside the response future, on the connection's task | on a tokio task of its own; the response future waits for it |
//! | while the client waits | the same: the layer never cuts a handler short | the same |
//! | the client goes away | the handler is dropped at the await it is parked on: **nothing after that await runs** (no log line, no rollback call); its destructors run, and its context is cancelled, so the tasks it handed the context to stop | the handler's context is cancelled (cause [`Disconnected`]) and the handler goes on: its `ctx.sleep`, `ctx.run` or `ctx.check()` returns the error and **its error path runs to the end**, as in Go; what it returns is dropped |
//! | a handler that ignores its context | dropped at its next await anyway | dropped at its next await once `grace` has passed since the client went away |
//! | cost per request | nothing extra | a tokio task and a oneshot channel; the handler's future must be `Send + 'static` |
//!
//! Which is right:
//!
//! - **Drop** (the default) when the handler only computes an answer —
//!   reads, searches, a fan-out through a [`TaskGroup`](crate::TaskGroup) —
//!   or cleans up in destructors (guards, a transaction that rolls back when
//!   dropped). Nobody is waiting for the answer, and dropping stops the work
//!   soonest.
//! - **Run to completion** when the code after an await *must* run: logging
//!   or counting why a request failed (`"Failed: step 3: context
//!   cancelled"`), a compensating call to another service, releasing a lock
//!   or rolling back through an async API (there is no async drop). This
//!   is Go's model; the `grace` keeps a handler that ignores its context
//!   from running forever (the request's deadline cancels the context but
//!   does not drop the handler, so the grace counts from the hang-up: a
//!   client that gives up exactly at the deadline still leaves the handler
//!   time for its error path).
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use taskgroup::Context;
//! use taskgroup::http::ContextLayer;
//!
//! async fn transfer(ctx: Context) -> String {
//!     match ctx.sleep(Duration::from_secs(5)).await {
//!         Ok(()) => "done".to_string(),
//!         // With `run_to_completion` this runs when the client hangs up;
//!         // without it the handler is dropped at the `await` above.
//!         Err(e) => {
//!             let line = format!("Failed: step 3: {e}: {}", ctx.cause().unwrap());
//!             eprintln!("{line}");
//!             line
//!         }
//!     }
//! }
//!
//! let (root, _shutdown) = Context::background().with_cancel();
//! let app: Router = Router::new().route("/transfer", get(transfer)).layer(
//!     ContextLayer::new(&root)
//!         .max_timeout(Duration::from_secs(10))
//!         .run_to_completion(Duration::from_secs(2)),
//! );
//! # let _ = app;
//! ```
//!
//! # What each protocol catches
//!
//! A client that goes away reaches the request's context in one of two
//! ways: hyper notices and drops the response future
//! ([`Disconnected::ResponseDropped`]), or the connection watch of
//! [`WatchedIo`] sees the peer's FIN or RST and cancels the connection's
//! context, which the request's descends from ([`Disconnected::PeerClosed`],
//! [`Disconnected::PeerReset`]).
//!
//! | the client… | hyper alone | with `DisconnectListener` / [`WatchedIo`] |
//! |---|---|---|
//! | HTTP/1.1: hangs up after the handler read the body to the end | caught: hyper reads on, sees the end, drops the response future | caught (by both) |
//! | HTTP/1.1: hangs up while the handler leaves the body unread (more of it than the one chunk hyper takes in ahead: a large or unfinished upload) | **missed**: nothing reads the socket; the handler and its tasks run on | caught: FIN seen by the watch |
//! | HTTP/1.1: hangs up with a pipelined request buffered behind this one | **missed**: hyper does not read past buffered bytes | caught: FIN seen by the watch |
//! | HTTP/1.1: resets the connection (RST) | caught only if hyper is reading at that moment | caught: RST seen by the watch |
//! | HTTP/2: resets one stream (`RST_STREAM`, a cancelled request) | caught: hyper drops that stream's response future; the connection and its other requests go on | the same (the connection is not closed) |
//! | HTTP/2: drops the connection | caught: hyper always reads an HTTP/2 connection | caught (by both) |
//! | HTTP/1.1: hangs up with its upload stuck behind a full receive window | missed | **missed**: its FIN waits behind the unsent data and never arrives; use a deadline |
//! | goes silent without FIN or RST (cable pulled, machine off) | missed | missed: use a deadline, or TCP keepalive |
//!
//! A small body that arrived whole is taken in by hyper even when the
//! handler does not read it, and then hyper sees the end as in the first
//! row. A client that half-closes (shuts down its sending side and waits for the
//! answer) counts as gone, as it does for Go's server and for hyper's
//! default `half_close(false)`. Behind a proxy the peer is the proxy: a
//! client that hangs up shows only if the proxy then closes its upstream
//! connection (HTTP/1.1) or resets the stream (HTTP/2).
//!
//! An HTTP/2 client that leaves Nagle's algorithm on (no `TCP_NODELAY`) may
//! hold a small `RST_STREAM` frame back until its previous segment is
//! acknowledged: about 40 ms on loopback, measured. Browsers and gRPC
//! clients set `TCP_NODELAY`.
//!
//! Measured on loopback (`tests/http.rs` prints the numbers with
//! `--nocapture`): from the client closing its socket to the last of a
//! handler's eight fan-out tasks being dropped took 0.2 to 2.5 ms in every
//! caught case, on a 2-core machine running the tests in parallel; the
//! tests hold it to under 100 ms.
//!
//! # Deadlines across the wire
//!
//! An incoming `grpc-timeout` becomes the request context's deadline (the
//! earlier of it and [`ContextLayer::max_timeout`]); a malformed one is
//! answered `400 Bad Request`. Outgoing, [`propagate_deadline`] or
//! [`PropagateDeadlineLayer`] stamp each request with the time its context
//! has left. In a chain A → B → C every hop then works to the first
//! caller's deadline, less the time spent in transit.

mod body;
pub mod grpc_timeout;
mod layer;
mod propagate;
#[cfg(feature = "tonic")]
pub mod tonic;
mod watch;
#[cfg(feature = "axum")]
mod with_axum;

pub use body::ContextBody;
pub use layer::{
    ContextLayer, ContextResponseFuture, ContextService, DropOnDisconnect, HandlerTask,
    RunToCompletion,
};
pub use propagate::{
    BoxError, PropagateDeadline, PropagateDeadlineFuture, PropagateDeadlineLayer,
    propagate_deadline,
};
pub use watch::{ConnectionContext, Watchable, WatchedIo};
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use with_axum::{DisconnectListener, MissingContextLayer};

/// Why a request's or a connection's [`Context`](crate::Context) was cancelled because the
/// client went away: the [`Cause`](crate::Cause) this module records.
///
/// A request that simply ends (its response sent) is cancelled with no
/// special cause, as in Go; a server that shuts down cancels with whatever
/// cause it gives its root.
///
/// # Examples
///
/// ```
/// use taskgroup::Context;
/// use taskgroup::http::Disconnected;
///
/// fn why(ctx: &Context) -> String {
///     match ctx.cause() {
///         None => "still running".into(),
///         Some(cause) => match cause.downcast_ref::<Disconnected>() {
///             Some(gone) => format!("client gone: {gone}"),
///             None => format!("stopped: {cause}"),
///         },
///     }
/// }
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// assert_eq!(why(&ctx), "still running");
/// cancel.cancel_with(Disconnected::PeerClosed);
/// assert_eq!(why(&ctx), "client gone: the client closed the connection");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Disconnected {
    /// The response future was dropped before the response was ready: hyper
    /// saw the client go (an HTTP/1.1 connection that ended while hyper was
    /// reading it, an HTTP/2 stream reset or connection loss), or a
    /// middleware abandoned the request.
    #[error("the request was dropped before its response was ready: the client went away")]
    ResponseDropped,
    /// The response body was dropped before its end: the client went away
    /// while it streamed.
    #[error("the response body was dropped before its end: the client went away")]
    BodyDropped,
    /// The client closed its side of the connection (a FIN), seen by
    /// [`WatchedIo`].
    #[error("the client closed the connection")]
    PeerClosed,
    /// The connection was reset (an RST), seen by [`WatchedIo`].
    #[error("the client reset the connection")]
    PeerReset,
}
