//! [`ContextBody`]: the response body that keeps its request's context
//! alive until it ends.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{self, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::Disconnected;
use crate::CancelHandle;

pin_project! {
    /// The response body of a [`ContextService`](super::ContextService): the
    /// handler's own body, holding its request's [`Context`](crate::Context)
    /// open until the body ends.
    ///
    /// A streamed body (server-sent events, a chunked download) keeps a live
    /// context while it streams, as in Go: a task that feeds the stream can
    /// watch the same context and stop when the client goes away. The
    /// context is cancelled when the body yields its last frame or an error
    /// (plain [`ContextError::Cancelled`](crate::ContextError::Cancelled):
    /// the request is over), or when the body is dropped before its end —
    /// the client went away or the connection broke — with the cause
    /// [`Disconnected::BodyDropped`].
    ///
    /// The answer to a malformed `grpc-timeout` header is a short text body
    /// of this type too, which is why the wrapped body's chunks must convert
    /// from [`Bytes`]; those of axum, hyper and `http-body-util` do.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use http::{Request, Response};
    /// use http_body_util::{BodyExt, Full};
    /// use taskgroup::Context;
    /// use taskgroup::http::ContextLayer;
    /// use tower::{ServiceBuilder, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    /// let handler = tower::service_fn(move |req: Request<()>| {
    ///     let ctx = req.extensions().get::<Context>().unwrap().clone();
    ///     tx.send(ctx).unwrap();
    ///     async { Ok::<_, Infallible>(Response::new(Full::new(bytes::Bytes::from("hello")))) }
    /// });
    /// let service = ServiceBuilder::new()
    ///     .layer(ContextLayer::new(&Context::background()))
    ///     .service(handler);
    ///
    /// let response = service.oneshot(Request::new(())).await.unwrap();
    /// let ctx = rx.recv().await.unwrap();
    /// assert!(!ctx.is_cancelled()); // the body is not sent yet
    /// let body = response.into_body().collect().await.unwrap().to_bytes();
    /// assert_eq!(body, "hello");
    /// assert!(ctx.is_cancelled()); // the body ended: the request is over
    /// # }
    /// ```
    pub struct ContextBody<B> {
        #[pin]
        kind: Kind<B>,
        request: Option<CancelHandle>,
        // Set when `is_end_stream` said the body has nothing more to send:
        // hyper then drops it without polling it to the end.
        ended: AtomicBool,
        // Bytes still to hand out when the body announced its exact size
        // (read at the first poll; `None` until then): hyper drops a body
        // whose length is met without polling for the end.
        remaining: Option<Option<u64>>,
    }

    impl<B> PinnedDrop for ContextBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(request) = this.request.take() {
                if this.ended.load(Ordering::Relaxed) {
                    // Over: a plain cancel, not "its handle was dropped".
                    request.cancel();
                } else {
                    request.cancel_with(Disconnected::BodyDropped);
                }
            }
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Wrapped { #[pin] body: B },
        Message { data: Option<Bytes> },
    }
}

impl<B> ContextBody<B> {
    pub(super) fn new(body: B, request: Option<CancelHandle>) -> ContextBody<B> {
        ContextBody {
            kind: Kind::Wrapped { body },
            request,
            ended: AtomicBool::new(false),
            remaining: None,
        }
    }

    pub(super) fn message(text: String) -> ContextBody<B> {
        ContextBody {
            kind: Kind::Message {
                data: Some(Bytes::from(text)),
            },
            request: None,
            ended: AtomicBool::new(false),
            remaining: None,
        }
    }

    /// The handler's body, or `None` for the layer's own answer to a
    /// malformed `grpc-timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use http::{Request, Response};
    /// # use taskgroup::Context;
    /// # use taskgroup::http::ContextLayer;
    /// # use tower::{Layer, ServiceExt};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let service = ContextLayer::new(&Context::background()).layer(tower::service_fn(
    ///     |_req: Request<()>| async { Ok::<_, Infallible>(Response::new(String::from("hi"))) },
    /// ));
    /// let response = service.oneshot(Request::new(())).await.unwrap();
    /// assert_eq!(response.body().get_ref().map(String::as_str), Some("hi"));
    /// # }
    /// ```
    pub fn get_ref(&self) -> Option<&B> {
        match &self.kind {
            Kind::Wrapped { body } => Some(body),
            Kind::Message { .. } => None,
        }
    }
}

impl<B> Body for ContextBody<B>
where
    B: Body,
    B::Data: From<Bytes>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Wrapped { body } => {
                let remaining = this
                    .remaining
                    .get_or_insert_with(|| body.size_hint().exact());
                let frame = std::task::ready!(body.poll_frame(cx));
                let last = match &frame {
                    // Trailers come last; hyper sends them and drops the body.
                    Some(Ok(frame)) if frame.is_trailers() => true,
                    Some(Ok(frame)) => match (remaining.as_mut(), frame.data_ref()) {
                        (Some(remaining), Some(data)) => {
                            *remaining = remaining.saturating_sub(data.remaining() as u64);
                            *remaining == 0
                        }
                        _ => false,
                    },
                    // The end, or an error.
                    None | Some(Err(_)) => true,
                };
                if last {
                    // The response is over: cancelled with no special
                    // cause.
                    if let Some(request) = this.request.take() {
                        request.cancel();
                    }
                }
                Poll::Ready(frame)
            }
            KindProj::Message { data } => {
                Poll::Ready(data.take().map(|data| Ok(Frame::data(B::Data::from(data)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let ended = match &self.kind {
            Kind::Wrapped { body } => body.is_end_stream(),
            Kind::Message { data } => data.is_none(),
        };
        if ended {
            self.ended.store(true, Ordering::Relaxed);
        }
        ended
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Wrapped { body } => body.size_hint(),
            Kind::Message { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

impl<B> fmt::Debug for ContextBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Wrapped { .. } => "wrapped",
            Kind::Message { .. } => "message",
        };
        f.debug_struct("ContextBody")
            .field("kind", &kind)
            .field("request_live", &self.request.is_some())
            .finish()
    }
}
