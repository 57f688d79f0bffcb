//! [`WatchedIo`]: a connection whose peer is watched for hanging up, with a
//! [`Context`] that ends when it does.
//!
//! # How the watch works
//!
//! hyper reads a connection only when it wants bytes: while a handler runs
//! with its request body unread, or with a pipelined request already
//! buffered, nothing reads the socket and a client that hangs up goes
//! unnoticed. Reading ahead on hyper's behalf is no answer: the bytes would
//! have to be buffered, and a client's FIN sits behind every byte it sent.
//!
//! The kernel knows sooner. When the peer's FIN is processed, Linux marks
//! the socket's receive side shut down even while unread data is queued
//! before it, and `epoll` reports `EPOLLRDHUP`; a reset (RST) raises
//! `EPOLLERR` and `EPOLLHUP` and discards the queue. So the watcher takes a
//! second handle on the same socket (`dup`: a new file descriptor, its own
//! registration with tokio's reactor, no bytes consumed) and waits on its
//! readiness in a small task. Plain readability (more data) is cleared and
//! waited on again; read-closed or error readiness cancels the connection's
//! context. hyper's own handle, its reads, writes and buffers are
//! untouched.
//!
//! Reads that hyper does make are watched too: a read that returns end of
//! file or a reset cancels the context at once, on every platform.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{self, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf, Ready};
use tokio::task::AbortHandle;

use super::Disconnected;
use crate::{CancelHandle, Context};

/// A socket type whose peer [`WatchedIo`] can watch: tokio's `TcpStream`,
/// and `UnixStream` on Unix.
///
/// Sealed: the watch relies on the socket's readiness as the reactor reports
/// it, which this crate knows only for these types.
///
/// # Examples
///
/// ```
/// use taskgroup::Context;
/// use taskgroup::http::{Watchable, WatchedIo};
///
/// fn serve_watched<T: Watchable>(io: T, root: &Context) -> WatchedIo<T> {
///     WatchedIo::new(io, root)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let _client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
/// let (stream, _) = listener.accept().await?;
/// let io = serve_watched(stream, &Context::background());
/// assert!(!io.context().is_cancelled());
/// # Ok(())
/// # }
/// ```
pub trait Watchable: sealed::Socket + AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl Watchable for tokio::net::TcpStream {}

#[cfg(unix)]
impl Watchable for tokio::net::UnixStream {}

mod sealed {
    use std::future::Future;
    use std::io;

    use tokio::io::{Interest, Ready};

    #[allow(
        unreachable_pub,
        reason = "the sealed-trait pattern: public, but unnameable outside the crate"
    )]
    pub trait Socket: Sized {
        /// A second handle on the same socket, registered on its own with
        /// the reactor.
        fn probe(&self) -> io::Result<Self>;
        /// Waits for readiness, as `TcpStream::ready`.
        fn ready_for(&self, interest: Interest) -> impl Future<Output = io::Result<Ready>> + Send;
        /// Clears the readable readiness, so the next `ready_for` waits for
        /// a new event.
        fn clear_readable(&self);
    }

    macro_rules! socket {
        ($ty:ty, $std:ty) => {
            impl Socket for $ty {
                #[cfg(unix)]
                fn probe(&self) -> io::Result<Self> {
                    use std::os::fd::AsFd;
                    // A dup shares the open file description, and with it
                    // O_NONBLOCK, which `from_std` requires.
                    let fd = self.as_fd().try_clone_to_owned()?;
                    <$ty>::from_std(<$std>::from(fd))
                }

                #[cfg(not(unix))]
                fn probe(&self) -> io::Result<Self> {
                    Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "watching a peer needs Unix readiness semantics",
                    ))
                }

                fn ready_for(
                    &self,
                    interest: Interest,
                ) -> impl Future<Output = io::Result<Ready>> + Send {
                    self.ready(interest)
                }

                fn clear_readable(&self) {
                    // An operation that reports WouldBlock clears the
                    // readiness it ran under; read-closed and error are
                    // final and stay.
                    let _ = self.try_io(Interest::READABLE, || {
                        Err::<(), _>(io::ErrorKind::WouldBlock.into())
                    });
                }
            }
        };
    }

    socket!(tokio::net::TcpStream, std::net::TcpStream);
    #[cfg(unix)]
    socket!(tokio::net::UnixStream, std::os::unix::net::UnixStream);
}

/// The [`Context`] of one connection, cancelled when the peer hangs up or
/// the connection ends: what the request contexts made by
/// [`ContextLayer`](super::ContextLayer) descend from on a watched
/// connection.
///
/// [`ContextLayer`](super::ContextLayer) finds it in a request's extensions,
/// as is or, with the `axum` feature, inside axum's `ConnectInfo` (which
/// `DisconnectListener` (feature `axum`) fills in). Its cause
/// says why it ended: [`Disconnected::PeerClosed`] or
/// [`Disconnected::PeerReset`], or plain
/// [`ContextError::Cancelled`](crate::ContextError::Cancelled) when the
/// server closed the connection.
///
/// # Examples
///
/// ```
/// use taskgroup::Context;
/// use taskgroup::http::WatchedIo;
/// use tokio::io::AsyncWriteExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let mut client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
/// let (stream, _) = listener.accept().await?;
///
/// let io = WatchedIo::new(stream, &Context::background());
/// let connection = io.connection();
/// client.write_all(b"GET / HTTP/1.1\r\n\r\n").await?; // never read by anyone
/// assert!(!connection.context().is_cancelled());
/// drop(client); // the peer hangs up
/// connection.context().done().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ConnectionContext {
    context: Context,
}

impl ConnectionContext {
    /// The connection's context.
    ///
    /// # Examples
    ///
    /// See [`ConnectionContext`].
    pub fn context(&self) -> &Context {
        &self.context
    }
}

/// A connection (a `TcpStream` or `UnixStream`) whose peer is watched for
/// hanging up, with a [`Context`] that is cancelled when it does: the
/// per-connection context of Go's `net/http`, which hyper does not have.
///
/// Use it directly with hyper (serve `TokioIo::new(io)` and give the
/// connection's context to [`ContextLayer::new`](super::ContextLayer::new)),
/// or through `DisconnectListener` (feature `axum`) with
/// `axum::serve`.
///
/// The connection's context is a child of the `parent` given to
/// [`new`](WatchedIo::new) and is cancelled
///
/// - when the peer closes its side of the connection (a FIN), even while
///   bytes it sent wait unread — a request body the handler never read, or
///   a pipelined request — with the cause [`Disconnected::PeerClosed`];
/// - when the connection is reset (an RST), with [`Disconnected::PeerReset`];
/// - when `parent` is cancelled;
/// - when the `WatchedIo` is dropped: the server is done with the
///   connection.
///
/// A peer that shuts down only its sending side and still waits for an
/// answer (a TCP half-close) counts as gone, as it does for Go's server and
/// for hyper (whose `half_close` option is off by default). A peer that
/// vanishes without a FIN or RST (a cable pulled, a machine powered off) is
/// not noticed: TCP keepalive or a deadline is the answer to that. Behind
/// a proxy, the peer is the proxy: a client that hangs up shows here only
/// if the proxy then closes (or, over HTTP/2, resets) its request.
///
/// The watch needs Unix readiness semantics (`EPOLLRDHUP` on Linux, `EV_EOF`
/// with kqueue); elsewhere, and when the second handle on the socket
/// cannot be had (out of file descriptors), the connection is served
/// unwatched: its context ends only when a read sees the end or a reset, or
/// when it is dropped ([`is_watched`](WatchedIo::is_watched) says which).
/// Costs per connection: one `dup`, one reactor registration, and one task
/// that wakes when data or a FIN arrives. Two consequences of the second
/// handle: a server hits its file-descriptor limit at half as many
/// connections, and when the connection is dropped the socket closes (and
/// its FIN or RST goes out) only once the aborted watch task has been
/// dropped too, a scheduler turn later.
///
/// # Examples
///
/// Served by hyper directly, with the connection's context as the root of
/// its requests' contexts. The client sends two pipelined requests and
/// hangs up while the first runs: hyper, with the second buffered, does not
/// look at the socket, but the watch sees the FIN.
///
/// ```
/// use axum::{Router, routing::get};
/// use hyper_util::rt::TokioIo;
/// use hyper_util::service::TowerToHyperService;
/// use taskgroup::Context;
/// use taskgroup::http::{ContextLayer, Disconnected, WatchedIo};
/// use tokio::io::AsyncWriteExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let (root, _shutdown) = Context::background().with_cancel();
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let app = Router::new().route(
///     "/",
///     get(move |ctx: Context| async move {
///         tx.send(ctx.clone()).unwrap();
///         ctx.done().await; // runs until the client goes
///     }),
/// );
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let mut client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
/// let (stream, _) = listener.accept().await?;
/// let io = WatchedIo::new(stream, &root);
/// let service = tower::Layer::layer(&ContextLayer::new(io.context()), app);
/// tokio::spawn(
///     hyper::server::conn::http1::Builder::new()
///         .serve_connection(TokioIo::new(io), TowerToHyperService::new(service)),
/// );
///
/// client
///     .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\nGET / HTTP/1.1\r\nhost: x\r\n\r\n")
///     .await?;
/// let request = rx.recv().await.unwrap(); // the first request is running
/// drop(client);
/// request.done().await;
/// let cause = request.cause().unwrap();
/// assert_eq!(cause.downcast_ref(), Some(&Disconnected::PeerClosed));
/// # Ok(())
/// # }
/// ```
pub struct WatchedIo<T> {
    io: T,
    context: Context,
    cancel: Arc<CancelHandle>,
    watcher: Option<AbortHandle>,
}

impl<T: Watchable> WatchedIo<T> {
    /// Wraps `io`, gives it a context that is a child of `parent`, and
    /// starts watching its peer.
    ///
    /// # Panics
    ///
    /// Panics outside a tokio runtime: the watch is a task.
    ///
    /// # Examples
    ///
    /// See [`WatchedIo`] and [`ConnectionContext`].
    #[track_caller]
    pub fn new(io: T, parent: &Context) -> WatchedIo<T> {
        let (context, cancel) = parent.with_cancel();
        let cancel = Arc::new(cancel);
        let watcher = match io.probe() {
            Ok(probe) => {
                let watch = watch(probe, cancel.clone());
                Some(tokio::spawn(watch).abort_handle())
            }
            Err(_) => None,
        };
        WatchedIo {
            io,
            context,
            cancel,
            watcher,
        }
    }
}

impl<T> WatchedIo<T> {
    /// The connection's context.
    ///
    /// # Examples
    ///
    /// ```
    /// # use taskgroup::Context;
    /// # use taskgroup::http::WatchedIo;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let _client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
    /// # let (stream, _) = listener.accept().await?;
    /// let (root, shutdown) = Context::background().with_cancel();
    /// let io = WatchedIo::new(stream, &root);
    /// assert!(!io.context().is_cancelled());
    /// shutdown.cancel();
    /// assert!(io.context().is_cancelled());
    /// # Ok(())
    /// # }
    /// ```
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The connection's context, in the form
    /// [`ContextLayer`](super::ContextLayer) looks for in a request's
    /// extensions.
    ///
    /// # Examples
    ///
    /// See [`ConnectionContext`].
    pub fn connection(&self) -> ConnectionContext {
        ConnectionContext {
            context: self.context.clone(),
        }
    }

    /// `true` if the peer is watched; `false` where the watch could not be
    /// set up (see [`WatchedIo`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # use taskgroup::Context;
    /// # use taskgroup::http::WatchedIo;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let _client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
    /// # let (stream, _) = listener.accept().await?;
    /// let io = WatchedIo::new(stream, &Context::background());
    /// assert_eq!(io.is_watched(), cfg!(unix));
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_watched(&self) -> bool {
        self.watcher.is_some()
    }

    /// The wrapped connection.
    ///
    /// # Examples
    ///
    /// ```
    /// # use taskgroup::Context;
    /// # use taskgroup::http::WatchedIo;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
    /// # let (stream, _) = listener.accept().await?;
    /// let io = WatchedIo::new(stream, &Context::background());
    /// assert_eq!(io.get_ref().peer_addr()?, client.local_addr()?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// The wrapped connection, mutably. Reading from it directly bypasses
    /// the end-of-file check of [`WatchedIo`]'s own reads (the watch goes
    /// on).
    ///
    /// # Examples
    ///
    /// ```
    /// # use taskgroup::Context;
    /// # use taskgroup::http::WatchedIo;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let _client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
    /// # let (stream, _) = listener.accept().await?;
    /// let mut io = WatchedIo::new(stream, &Context::background());
    /// io.get_mut().set_nodelay(true)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.io
    }
}

/// Waits on the probe's readiness until the peer closes or resets.
async fn watch<T: Watchable>(probe: T, cancel: Arc<CancelHandle>) {
    loop {
        let ready: Ready = match probe.ready_for(Interest::READABLE | Interest::ERROR).await {
            Ok(ready) => ready,
            // The reactor is gone: the runtime is shutting down.
            Err(_) => return,
        };
        if ready.is_error() {
            return cancel.cancel_with(Disconnected::PeerReset);
        }
        if ready.is_read_closed() {
            return cancel.cancel_with(Disconnected::PeerClosed);
        }
        // Only data: wait for the next event.
        probe.clear_readable();
    }
}

impl<T> Drop for WatchedIo<T> {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(watcher) = &self.watcher {
            watcher.abort();
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let asked = buf.remaining() > 0;
        let result = std::task::ready!(Pin::new(&mut self.io).poll_read(cx, buf));
        match &result {
            Ok(()) if asked && buf.filled().len() == before => {
                self.cancel.cancel_with(Disconnected::PeerClosed);
            }
            Err(e) if is_reset(e) => self.cancel.cancel_with(Disconnected::PeerReset),
            _ => {}
        }
        Poll::Ready(result)
    }
}

fn is_reset(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<T: fmt::Debug> fmt::Debug for WatchedIo<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchedIo")
            .field("io", &self.io)
            .field("context", &self.context)
            .field("watched", &self.is_watched())
            .finish()
    }
}
