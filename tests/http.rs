//! The HTTP integration (features `http` and `axum`), end to end: a real
//! axum server on 127.0.0.1:0 and real clients (raw TCP for HTTP/1.1 cases
//! that need exact bytes on the wire, hyper's HTTP/1.1 and HTTP/2 clients,
//! hyper-util's pooled client). No mocks.
//!
//! Timing claims are measured, never slept into: a gauge counts the fan-out
//! tasks in flight, and each test waits for it to reach a value. Run with
//! `--nocapture` to see the measured disconnect-to-stop times.
#![cfg(feature = "axum")]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::{get, post};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use taskgroup::http::{
    ConnectionContext, ContextLayer, DisconnectListener, Disconnected, PropagateDeadlineLayer,
    RunToCompletion,
};
use taskgroup::{CancelHandle, Cause, Context, ContextError, TaskGroup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tower::{ServiceBuilder, ServiceExt};

/// Fan-out tasks each handler spawns.
const FANOUT: usize = 8;
/// How long a test waits for something that should take milliseconds,
/// before failing instead of hanging.
const PATIENCE: Duration = Duration::from_secs(5);
/// The bound the issue sets on a disconnect reaching the fan-out.
const STOP_WITHIN: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------
// Helpers

/// Counts work in flight; tests wait for it to reach a value.
#[derive(Clone)]
struct Gauge(Arc<watch::Sender<usize>>);

struct Entered(Gauge);

impl Gauge {
    fn new() -> Gauge {
        Gauge(Arc::new(watch::channel(0).0))
    }

    fn enter(&self) -> Entered {
        self.0.send_modify(|n| *n += 1);
        Entered(self.clone())
    }

    fn get(&self) -> usize {
        *self.0.borrow()
    }

    async fn reach(&self, n: usize) {
        let mut rx = self.0.subscribe();
        timeout(PATIENCE, rx.wait_for(|v| *v == n))
            .await
            .unwrap_or_else(|_| panic!("gauge stuck at {} waiting for {n}", self.get()))
            .unwrap();
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        (self.0).0.send_modify(|n| *n -= 1);
    }
}

#[derive(Clone)]
struct AppState {
    /// Fan-out tasks alive.
    tasks: Gauge,
    /// Each request's context, sent as its handler starts.
    contexts: mpsc::UnboundedSender<Context>,
}

/// A handler's fan-out: `FANOUT` tasks that would run for a minute, each
/// counted by the gauge while alive. Returns once the group ends.
async fn fan_out(ctx: &Context, state: &AppState) -> String {
    let _ = state.contexts.send(ctx.clone());
    let mut group = TaskGroup::<(), ContextError>::with_context(ctx);
    for _ in 0..FANOUT {
        let entered = state.tasks.enter();
        group.spawn(move |ctx| async move {
            let _entered = entered;
            ctx.sleep(Duration::from_secs(60)).await
        });
    }
    format!("{:?}", group.wait().await)
}

/// A handler that holds its request body and never reads it.
async fn unread(State(state): State<AppState>, ctx: Context, body: Body) -> String {
    let answer = fan_out(&ctx, &state).await;
    drop(body);
    answer
}

/// A handler that reads its request body to the end first.
async fn read(State(state): State<AppState>, ctx: Context, body: Bytes) -> String {
    assert!(!body.is_empty());
    fan_out(&ctx, &state).await
}

struct Server {
    addr: SocketAddr,
    shutdown: CancelHandle,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `app` (with `ContextLayer` on `root`) on 127.0.0.1:0, through
    /// `DisconnectListener` if `watched`.
    async fn start(app: Router<()>, layer: ContextLayer, watched: bool) -> Server {
        let (root, shutdown) = Context::background().with_cancel();
        Server::start_on(app, layer, watched, root, shutdown).await
    }

    async fn start_on(
        app: Router<()>,
        layer: ContextLayer,
        watched: bool,
        root: Context,
        shutdown: CancelHandle,
    ) -> Server {
        Server::serve(app.layer(layer), watched, root, shutdown).await
    }

    /// Serves `app`, which has its `ContextLayer` already.
    async fn serve(
        app: Router<()>,
        watched: bool,
        root: Context,
        shutdown: CancelHandle,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = if watched {
            let listener = DisconnectListener::new(listener, &root);
            let app = app.into_make_service_with_connect_info::<ConnectionContext>();
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() })
        } else {
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() })
        };
        Server {
            addr,
            shutdown,
            task,
        }
    }

    async fn fanout(watched: bool) -> (Server, AppState, mpsc::UnboundedReceiver<Context>) {
        let (contexts, rx) = mpsc::unbounded_channel();
        let state = AppState {
            tasks: Gauge::new(),
            contexts,
        };
        let app = Router::new()
            .route("/unread", post(unread).get(unread))
            .route("/read", post(read))
            .with_state(state.clone());
        let (root, shutdown) = Context::background().with_cancel();
        let layer = ContextLayer::new(&root);
        let server = Server::start_on(app, layer, watched, root, shutdown).await;
        (server, state, rx)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.task.abort();
    }
}

/// Waits until the fan-out has started, runs `hang_up`, then measures how
/// long until every fan-out task is gone.
async fn time_to_stop(state: &AppState, label: &str, hang_up: impl FnOnce()) -> Duration {
    state.tasks.reach(FANOUT).await;
    let start = Instant::now();
    hang_up();
    state.tasks.reach(0).await;
    let took = start.elapsed();
    println!("{label}: client hang-up to fan-out stopped in {took:?}");
    assert!(took < STOP_WITHIN, "{label}: took {took:?}");
    took
}

const POST_BODY: &[u8] = b"POST /read HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello";
/// A large upload of which the client has sent the first 64 KiB when it
/// hangs up: more than hyper takes in for a handler that does not read, and
/// little enough that the kernel's receive buffer holds the rest, so the
/// FIN can arrive. (A client whose unsent data is stuck behind a full
/// receive window cannot deliver its FIN at all: see the module docs.)
fn post_unread() -> Vec<u8> {
    let mut request =
        b"POST /unread HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n".to_vec();
    request.resize(request.len() + 64 * 1024, b'x');
    request
}
const PIPELINED: &[u8] =
    b"GET /unread HTTP/1.1\r\nhost: x\r\n\r\nGET /unread HTTP/1.1\r\nhost: x\r\n\r\n";

async fn raw_client(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// An HTTP/2 client connection, and a second handle on its socket to cut
/// it with: hyper runs the connection on a task of its own, so dropping
/// what `handshake` returns does not close the socket.
async fn h2_client(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    std::net::TcpStream,
) {
    use std::os::fd::AsFd;
    let stream = TcpStream::connect(addr).await.unwrap();
    // As browsers and gRPC clients do: no Nagle delay on small frames
    // such as RST_STREAM.
    stream.set_nodelay(true).unwrap();
    let cut = std::net::TcpStream::from(stream.as_fd().try_clone_to_owned().unwrap());
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    (sender, cut)
}

fn get_request(path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("http://localhost{path}"))
        .body(Empty::new())
        .unwrap()
}

/// The cause of the next request context handed out, once it has ended.
async fn next_cause(contexts: &mut mpsc::UnboundedReceiver<Context>) -> Cause {
    let ctx = timeout(PATIENCE, contexts.recv()).await.unwrap().unwrap();
    timeout(PATIENCE, ctx.done()).await.unwrap();
    ctx.cause().unwrap()
}

fn disconnected(cause: &Cause) -> Disconnected {
    *cause
        .downcast_ref::<Disconnected>()
        .unwrap_or_else(|| panic!("cause: {cause}"))
}

// ---------------------------------------------------------------------------
// A client that goes away: its handler's fan-out stops within 100 ms.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_body_read_hang_up_stops_fan_out_even_without_the_listener() {
    for watched in [false, true] {
        let (server, state, mut causes) = Server::fanout(watched).await;
        let client = raw_client(server.addr, POST_BODY).await;
        time_to_stop(
            &state,
            &format!("HTTP/1.1 body read, watched={watched}"),
            || drop(client),
        )
        .await;
        let cause = disconnected(&next_cause(&mut causes).await);
        if !watched {
            // hyper saw the end of the connection and dropped the response.
            assert_eq!(cause, Disconnected::ResponseDropped);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_body_unread_hang_up_stops_fan_out_with_the_listener() {
    let (server, state, mut causes) = Server::fanout(true).await;
    let client = raw_client(server.addr, &post_unread()).await;
    time_to_stop(&state, "HTTP/1.1 body unread, watched", || drop(client)).await;
    assert_eq!(
        disconnected(&next_cause(&mut causes).await),
        Disconnected::PeerClosed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_pipelined_hang_up_stops_fan_out_with_the_listener() {
    let (server, state, mut causes) = Server::fanout(true).await;
    let client = raw_client(server.addr, PIPELINED).await;
    time_to_stop(&state, "HTTP/1.1 pipelined, watched", || drop(client)).await;
    assert_eq!(
        disconnected(&next_cause(&mut causes).await),
        Disconnected::PeerClosed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_reset_stops_fan_out_with_the_listener() {
    let (server, state, mut causes) = Server::fanout(true).await;
    let client = raw_client(server.addr, &post_unread()).await;
    client.set_zero_linger().unwrap(); // close with an RST
    time_to_stop(&state, "HTTP/1.1 reset, watched", || drop(client)).await;
    assert_eq!(
        disconnected(&next_cause(&mut causes).await),
        Disconnected::PeerReset
    );
}

/// The hole the listener closes: without it, hyper does not notice a client
/// that hangs up while the body is unread or a pipelined request is
/// buffered. Checked over a bounded window (the claim is that nothing
/// happens), then the server is shut down to end the handlers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_listener_hyper_misses_unread_bodies_and_pipelined_requests() {
    for request in [post_unread(), PIPELINED.to_vec()] {
        let (server, state, _contexts) = Server::fanout(false).await;
        let client = raw_client(server.addr, &request).await;
        state.tasks.reach(FANOUT).await;
        drop(client);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(state.tasks.get(), FANOUT, "hyper noticed after all?");
        server.shutdown.cancel();
        state.tasks.reach(0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_stream_reset_stops_its_fan_out_and_spares_the_connection() {
    for watched in [false, true] {
        let (server, state, mut causes) = Server::fanout(watched).await;
        let (sender, _conn) = h2_client(server.addr).await;
        let call = tokio::spawn(sender.clone().send_request(get_request("/unread")));
        time_to_stop(
            &state,
            &format!("HTTP/2 stream reset, watched={watched}"),
            || {
                call.abort() // drops the response future: RST_STREAM(CANCEL)
            },
        )
        .await;
        assert_eq!(
            disconnected(&next_cause(&mut causes).await),
            Disconnected::ResponseDropped
        );

        // The connection lives on: the next request on it runs its fan-out.
        let call = tokio::spawn(sender.clone().send_request(get_request("/unread")));
        state.tasks.reach(FANOUT).await;
        call.abort();
        state.tasks.reach(0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connection_drop_stops_every_fan_out() {
    for watched in [false, true] {
        let (server, state, _contexts) = Server::fanout(watched).await;
        let (sender, cut) = h2_client(server.addr).await;
        let calls: Vec<_> = (0..3)
            .map(|_| tokio::spawn(sender.clone().send_request(get_request("/unread"))))
            .collect();
        state.tasks.reach(3 * FANOUT).await;
        let start = Instant::now();
        cut.shutdown(std::net::Shutdown::Both).unwrap(); // the connection drops
        state.tasks.reach(0).await;
        let took = start.elapsed();
        println!("HTTP/2 connection drop (3 requests), watched={watched}: stopped in {took:?}");
        assert!(took < STOP_WITHIN, "took {took:?}");
        drop(calls);
    }
}

// ---------------------------------------------------------------------------
// Shutdown

#[derive(Debug, thiserror::Error)]
#[error("server shutting down")]
struct ShuttingDown;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_every_in_flight_request_context() {
    let in_flight = Gauge::new();
    let app = Router::new().route(
        "/",
        get({
            let in_flight = in_flight.clone();
            move |ctx: Context| async move {
                let _entered = in_flight.enter();
                ctx.done().await;
                format!("{}", ctx.cause().unwrap())
            }
        }),
    );
    for watched in [false, true] {
        let (root, shutdown) = Context::background().with_cancel();
        let server = Server::start_on(
            app.clone(),
            ContextLayer::new(&root),
            watched,
            root,
            shutdown,
        )
        .await;

        // Four HTTP/1.1 connections and four streams on one HTTP/2
        // connection.
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build_http::<Empty<Bytes>>();
        let (h2, _conn) = h2_client(server.addr).await;
        let mut calls = Vec::new();
        for _ in 0..4 {
            let url = format!("http://{}/", server.addr);
            let request = Request::get(url).body(Empty::new()).unwrap();
            let call = client.request(request);
            calls.push(tokio::spawn(async move {
                call.await.map_err(|e| e.to_string())
            }));
            let call = h2.clone().send_request(get_request("/"));
            calls.push(tokio::spawn(async move {
                call.await.map_err(|e| e.to_string())
            }));
        }
        in_flight.reach(8).await;
        server.shutdown.cancel_with(ShuttingDown);
        for call in calls {
            let response = call.await.unwrap().unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "server shutting down");
        }
        in_flight.reach(0).await;
    }
}

// ---------------------------------------------------------------------------
// Deadlines across the wire

/// What service B saw: its header, its request context, and when it
/// started.
struct Seen {
    header: Option<String>,
    ctx: Context,
    start: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_in_and_out_cuts_a_two_hop_chain_at_the_first_deadline() {
    // B: fans out work that would take a minute. Its own limit (10 s) is
    // far beyond A's budget.
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Seen>();
    let b_tasks = Gauge::new();
    let b = Router::new().route(
        "/work",
        get({
            let b_tasks = b_tasks.clone();
            move |ctx: Context, headers: http::HeaderMap| async move {
                let header = headers
                    .get("grpc-timeout")
                    .map(|v| v.to_str().unwrap().to_string());
                let _ = seen_tx.send(Seen {
                    header,
                    ctx: ctx.clone(),
                    start: Instant::now(),
                });
                let mut group = TaskGroup::<(), ContextError>::with_context(&ctx);
                for _ in 0..FANOUT {
                    let entered = b_tasks.enter();
                    group.spawn(move |ctx| async move {
                        let _entered = entered;
                        ctx.sleep(Duration::from_secs(60)).await
                    });
                }
                format!("{:?}", group.wait().await)
            }
        }),
    );
    let b = Server::start(
        b,
        ContextLayer::new(&Context::background()).max_timeout(Duration::from_secs(10)),
        true,
    )
    .await;

    // A: calls B with its own request context, through the client layer.
    let client = ServiceBuilder::new()
        .layer(PropagateDeadlineLayer::new())
        .service(
            hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .build_http::<Empty<Bytes>>(),
        );
    let b_url = format!("http://{}/work", b.addr);
    let a = Router::new().route(
        "/",
        get(move |ctx: Context| async move {
            let mut request = Request::get(&b_url).body(Empty::<Bytes>::new()).unwrap();
            request.extensions_mut().insert(ctx.clone());
            let answer = async {
                let response = client.oneshot(request).await?;
                let body = ctx.run(response.into_body().collect()).await??;
                Ok::<_, taskgroup::http::BoxError>(body.to_bytes())
            };
            match answer.await {
                Ok(body) => (
                    StatusCode::OK,
                    format!("B: {}", String::from_utf8_lossy(&body)),
                ),
                Err(e) => match e.downcast_ref::<ContextError>() {
                    Some(e) => (StatusCode::GATEWAY_TIMEOUT, e.to_string()),
                    None => (StatusCode::BAD_GATEWAY, e.to_string()),
                },
            }
        }),
    );
    let a = Server::start(a, ContextLayer::new(&Context::background()), true).await;

    // The caller gives A 300 ms.
    let caller = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let request = Request::get(format!("http://{}/", a.addr))
        .header("grpc-timeout", "300m")
        .body(Empty::new())
        .unwrap();
    let start = Instant::now();
    let response = caller.request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let a_took = start.elapsed();
    // A gave up at its deadline; or, the two deadlines falling in the same
    // timer tick, B's own "deadline exceeded" reached A just in time.
    assert!(
        (status, &body[..]) == (StatusCode::GATEWAY_TIMEOUT, b"context deadline exceeded")
            || (status, &body[..]) == (StatusCode::OK, b"B: Err(Cancelled(DeadlineExceeded))"),
        "{status} {body:?}"
    );

    // B got A's remaining budget, a little under 300 ms...
    let seen = timeout(PATIENCE, seen_rx.recv()).await.unwrap().unwrap();
    let header = seen.header.unwrap();
    let sent = taskgroup::http::grpc_timeout::decode(&header.parse().unwrap()).unwrap();
    assert!(
        sent <= Duration::from_millis(300) && sent > Duration::from_millis(200),
        "{header}"
    );
    // ...and its work was cut there, not at its own 10 s limit: by its own
    // deadline or by A hanging up, whichever came first.
    timeout(PATIENCE, seen.ctx.done()).await.unwrap();
    b_tasks.reach(0).await;
    let b_ran = seen.start.elapsed();
    assert!(
        b_ran >= Duration::from_millis(150) && b_ran < Duration::from_millis(300) + STOP_WITHIN,
        "B's work ran {b_ran:?}"
    );
    assert!(
        a_took >= Duration::from_millis(290) && a_took < Duration::from_secs(1),
        "{a_took:?}"
    );
    println!(
        "two hops: A answered in {a_took:?}; B got grpc-timeout {header}, its work ran {b_ran:?} ({})",
        seen.ctx.cause().unwrap()
    );
}

/// A handler that reports the time its context has left.
async fn time_left(ctx: Context) -> String {
    match ctx.deadline() {
        None => "none".to_string(),
        Some(d) => format!("{}", d.saturating_duration_since(Instant::now()).as_secs()),
    }
}

async fn call_with_header(addr: SocketAddr, value: &'static str) -> (StatusCode, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::get("/")
        .header("host", "localhost")
        .header("grpc-timeout", value)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_grpc_timeouts_get_400_and_a_huge_one_is_capped() {
    let app = Router::new().route("/", get(time_left));
    let capped = Server::start(
        app.clone(),
        ContextLayer::new(&Context::background()).max_timeout(Duration::from_secs(2)),
        false,
    )
    .await;
    for value in ["-1m", "+5S", "5x", "123456789S", "", "1.5S", "5"] {
        let (status, body) = call_with_header(capped.addr, value).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{value:?}: {body}");
        assert!(
            body.starts_with(&format!("invalid grpc-timeout \"{value}\": ")),
            "{body}"
        );
        println!("grpc-timeout {value:?} -> 400 {}", body.trim_end());
    }
    // Two of them: which one would be the budget?
    let mut stream = raw_client(
        capped.addr,
        b"GET / HTTP/1.1\r\nhost: x\r\ngrpc-timeout: 1S\r\ngrpc-timeout: 2S\r\nconnection: close\r\n\r\n",
    )
    .await;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.ends_with("more than one grpc-timeout header\n"),
        "{answer}"
    );

    // Legal but huge: accepted, and the server's limit wins.
    assert_eq!(
        call_with_header(capped.addr, "99999999H").await,
        (StatusCode::OK, "1".to_string())
    );
    assert_eq!(
        call_with_header(capped.addr, "1S").await,
        (StatusCode::OK, "0".to_string())
    );

    // With no limit, the huge value is simply a far deadline: no overflow.
    let unlimited = Server::start(app, ContextLayer::new(&Context::background()), false).await;
    let (status, secs) = call_with_header(unlimited.addr, "99999999H").await;
    assert_eq!(status, StatusCode::OK);
    assert!(secs.parse::<u64>().unwrap() > 99_999_998 * 3600, "{secs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_request_maximum_applies_without_a_header() {
    let app = Router::new().route(
        "/",
        get(|ctx: Context| async move {
            let start = Instant::now();
            ctx.done().await;
            format!(
                "{:?} after {}",
                ctx.err().unwrap(),
                start.elapsed().as_millis()
            )
        }),
    );
    let server = Server::start(
        app,
        ContextLayer::new(&Context::background()).max_timeout(Duration::from_millis(100)),
        false,
    )
    .await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let response = client
        .request(
            Request::get(format!("http://{}/", server.addr))
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8(body.to_vec()).unwrap();
    let (err, ms) = body.split_once(" after ").unwrap();
    assert_eq!(err, "DeadlineExceeded");
    let ms: u64 = ms.parse().unwrap();
    assert!(
        (95..100 + STOP_WITHIN.as_millis() as u64).contains(&ms),
        "{ms} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_never_cuts_a_handler_short() {
    let app = Router::new().route(
        "/",
        get(|ctx: Context| async move {
            // Ignores its context past the deadline, and still answers.
            tokio::time::sleep(Duration::from_millis(60)).await;
            format!("answered anyway ({:?})", ctx.err())
        }),
    );
    let server = Server::start(
        app,
        ContextLayer::new(&Context::background()).max_timeout(Duration::from_millis(10)),
        false,
    )
    .await;
    let (status, body) = call_with_header(server.addr, "5m").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "answered anyway (Some(DeadlineExceeded))");
}

// ---------------------------------------------------------------------------
// Drop or run to completion: what a handler's own code does after the
// client hangs up.

/// A handler in the style of Go's tutorial: works in steps, and logs why
/// when its context ends in step 3. `alive` counts it while it runs.
#[derive(Clone)]
struct Steps {
    alive: Gauge,
    log: mpsc::UnboundedSender<String>,
}

async fn steps(State(steps): State<Steps>, ctx: Context) -> String {
    let _alive = steps.alive.enter();
    match ctx.sleep(Duration::from_secs(60)).await {
        Ok(()) => "step 3 done".to_string(),
        Err(e) => {
            let cause = ctx.cause().expect("a cancelled context has a cause");
            let line = format!("Failed: step 3: {e}: {cause}");
            steps.log.send(line.clone()).unwrap();
            line
        }
    }
}

async fn steps_server<M>(
    layer: ContextLayer<M>,
    watched: bool,
) -> (Server, Steps, mpsc::UnboundedReceiver<String>)
where
    ContextLayer<M>: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
    <ContextLayer<M> as tower::Layer<axum::routing::Route>>::Service: tower::Service<
            Request<Body>,
            Response: axum::response::IntoResponse + 'static,
            Error: Into<Infallible> + 'static,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static,
{
    let (log, lines) = mpsc::unbounded_channel();
    let state = Steps {
        alive: Gauge::new(),
        log,
    };
    let app = Router::new()
        .route("/steps", get(steps))
        .with_state(state.clone())
        .layer(layer);
    let (root, shutdown) = Context::background().with_cancel();
    (
        Server::serve(app, watched, root, shutdown).await,
        state,
        lines,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_to_completion_lets_the_handler_log_its_cancel_once_after_the_client_hangs_up() {
    for watched in [false, true] {
        let (root, _keep) = Context::background().with_cancel();
        let layer = ContextLayer::new(&root).run_to_completion(PATIENCE);
        let (server, state, mut lines) = steps_server(layer, watched).await;
        let client = raw_client(server.addr, b"GET /steps HTTP/1.1\r\nhost: x\r\n\r\n").await;
        state.alive.reach(1).await;
        let start = Instant::now();
        drop(client);
        let line = timeout(PATIENCE, lines.recv()).await.unwrap().unwrap();
        println!(
            "run_to_completion (watched: {watched}): hang-up to the handler's log line in {:?}",
            start.elapsed()
        );
        if watched {
            // The watch or hyper, whichever saw the hang-up first.
            assert!(
                line.starts_with("Failed: step 3: context cancelled: "),
                "{line}"
            );
            let gone = [
                Disconnected::ResponseDropped,
                Disconnected::PeerClosed,
                Disconnected::PeerReset,
            ];
            assert!(
                gone.iter().any(|g| line.ends_with(&g.to_string())),
                "{line}"
            );
        } else {
            assert_eq!(
                line,
                format!(
                    "Failed: step 3: context cancelled: {}",
                    Disconnected::ResponseDropped
                )
            );
        }
        // The handler ran to its end, and logged exactly once.
        state.alive.reach(0).await;
        assert!(matches!(
            lines.try_recv(),
            Err(mpsc::error::TryRecvError::Empty)
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_handler_whose_client_hangs_up_is_dropped_before_its_error_path() {
    let layer = ContextLayer::new(&Context::background());
    let (server, state, mut lines) = steps_server(layer, false).await;
    let client = raw_client(server.addr, b"GET /steps HTTP/1.1\r\nhost: x\r\n\r\n").await;
    state.alive.reach(1).await;
    drop(client);
    // Dropped at its await: gone, and nothing after the await ran.
    state.alive.reach(0).await;
    assert!(matches!(
        lines.try_recv(),
        Err(mpsc::error::TryRecvError::Empty)
    ));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn run_to_completion_drops_a_handler_that_ignores_its_cancel_after_the_grace() {
    use tower::{Layer, Service};
    const GRACE: Duration = Duration::from_millis(250);
    let alive = Gauge::new();
    let counted = alive.clone();
    let layer = ContextLayer::new(&Context::background()).run_to_completion(GRACE);
    let mode: RunToCompletion = *layer.mode();
    assert_eq!(mode.grace(), GRACE);
    let mut service = layer.layer(tower::service_fn(move |_req: Request<()>| {
        let entered = counted.enter();
        async move {
            let _entered = entered;
            // Ignores its context: never ends on its own.
            std::future::pending::<Result<http::Response<String>, Infallible>>().await
        }
    }));
    let response = service.call(Request::new(()));
    tokio::task::yield_now().await;
    assert_eq!(alive.get(), 1);
    // While the client waits, the layer never cuts the handler short.
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(alive.get(), 1);
    // The client goes: the handler has GRACE more, then it is dropped.
    let left = Instant::now();
    drop(response);
    // The handler's task wakes up to the news (no time passes).
    tokio::task::yield_now().await;
    tokio::time::advance(GRACE - Duration::from_millis(1)).await;
    assert_eq!(alive.get(), 1);
    alive.reach(0).await;
    assert_eq!(left.elapsed(), GRACE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_to_completion_answers_as_before_and_re_raises_a_handler_panic() {
    let (root, _keep) = Context::background().with_cancel();
    let app = Router::new()
        .route(
            "/",
            get(|ctx: Context| async move { format!("live: {}", !ctx.is_cancelled()) }),
        )
        .route(
            "/panic",
            get(|| async {
                panic!("handler panicked on purpose");
                #[allow(unreachable_code)] // the handler's return type
                ""
            }),
        )
        .layer(ContextLayer::new(&root).run_to_completion(PATIENCE));
    let (root, shutdown) = Context::background().with_cancel();
    let server = Server::serve(app, false, root, shutdown).await;
    let (status, body) = call_with_header(server.addr, "5S").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "live: true"));
    // The panic reaches hyper's connection task as it would without the
    // option: the connection is closed without an answer.
    let mut stream = raw_client(server.addr, b"GET /panic HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut answer = Vec::new();
    timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
}

// ---------------------------------------------------------------------------
// Streamed bodies

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_keeps_its_context_alive_until_it_ends() {
    // The handler answers at once with a body that a task feeds, one chunk
    // each time the test says so; the task reports whether the request's
    // context is still live at each chunk.
    let (ctx_tx, mut ctx_rx) = mpsc::unbounded_channel::<Context>();
    let (go_tx, go_rx) = mpsc::unbounded_channel::<()>();
    let go_rx = Arc::new(tokio::sync::Mutex::new(go_rx));
    let app = Router::new().route(
        "/stream",
        get(move |ctx: Context| {
            let ctx_tx = ctx_tx.clone();
            let go_rx = go_rx.clone();
            async move {
                let _ = ctx_tx.send(ctx.clone());
                let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(1);
                tokio::spawn(async move {
                    let mut go = go_rx.lock().await;
                    for i in 0..3 {
                        if go.recv().await.is_none() {
                            return;
                        }
                        let chunk = format!("chunk {i}, live: {}\n", !ctx.is_cancelled());
                        if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                            return;
                        }
                    }
                });
                Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|item| (item, rx))
                }))
            }
        }),
    );
    let server = Server::start(app, ContextLayer::new(&Context::background()), true).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);

    // Read to the end: live at every chunk, cancelled once it ended.
    let response = sender
        .send_request(
            Request::get("/stream")
                .header("host", "x")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let ctx = ctx_rx.recv().await.unwrap();
    let mut body = response.into_body();
    let mut text = String::new();
    for _ in 0..3 {
        assert!(!ctx.is_cancelled(), "cancelled while streaming");
        go_tx.send(()).unwrap();
        let frame = body.frame().await.unwrap().unwrap();
        text.push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap());
    }
    assert!(body.frame().await.is_none());
    assert_eq!(
        text,
        "chunk 0, live: true\nchunk 1, live: true\nchunk 2, live: true\n"
    );
    timeout(PATIENCE, ctx.done()).await.unwrap();
    assert_eq!(
        ctx.cause().unwrap().downcast_ref::<ContextError>(),
        Some(&ContextError::Cancelled)
    );

    // Hang up mid-stream: cancelled with BodyDropped (or PeerClosed, if the
    // watch is first).
    sender.ready().await.unwrap();
    let response = sender
        .send_request(
            Request::get("/stream")
                .header("host", "x")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let ctx = ctx_rx.recv().await.unwrap();
    go_tx.send(()).unwrap();
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    assert!(!ctx.is_cancelled());
    drop((body, sender));
    timeout(PATIENCE, ctx.done()).await.unwrap();
    let gone = disconnected(&ctx.cause().unwrap());
    assert!(
        matches!(gone, Disconnected::BodyDropped | Disconnected::PeerClosed),
        "{gone:?}"
    );
}

// ---------------------------------------------------------------------------
// The extractor

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extractor_without_the_layer_answers_500_naming_it() {
    let app = Router::new().route("/", get(|_ctx: Context| async { "unreachable" }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut stream = raw_client(
        addr,
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
    assert!(answer.contains("taskgroup::http::ContextLayer"), "{answer}");
    server.abort();
}

// ---------------------------------------------------------------------------
// Connections

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_contexts_descend_from_their_connection_context() {
    let contexts = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new().route(
        "/",
        get({
            let contexts = contexts.clone();
            move |ctx: Context, info: axum::extract::ConnectInfo<ConnectionContext>| async move {
                contexts.lock().unwrap().push((ctx, info.0));
                "ok"
            }
        }),
    );
    let server = Server::start(app, ContextLayer::new(&Context::background()), true).await;
    let mut client = raw_client(server.addr, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut buf = [0u8; 256];
    let n = client.read(&mut buf).await.unwrap();
    assert!(buf[..n].ends_with(b"ok"));
    let (request, connection) = contexts.lock().unwrap().pop().unwrap();
    // The response is over: the request's context is, the connection's not.
    timeout(PATIENCE, request.done()).await.unwrap();
    assert!(!connection.context().is_cancelled());
    drop(client);
    timeout(PATIENCE, connection.context().done())
        .await
        .unwrap();
    assert_eq!(
        disconnected(&connection.context().cause().unwrap()),
        Disconnected::PeerClosed
    );
}

// ---------------------------------------------------------------------------
// Responses hyper finishes without polling the body to its end (trailers, a
// length met, HEAD, 204): the request is over, not abandoned by the client.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_hyper_ends_early_are_not_taken_for_a_client_that_went_away() {
    use axum::response::IntoResponse;
    use http::HeaderMap;
    use http_body::Frame;

    let (contexts, mut seen) = mpsc::unbounded_channel::<Context>();
    let with_trailers = {
        let contexts = contexts.clone();
        move |ctx: Context| async move {
            contexts.send(ctx).unwrap();
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let frames = vec![
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"hi"))),
                Ok(Frame::trailers(trailers)),
            ];
            Body::new(http_body_util::StreamBody::new(futures::stream::iter(
                frames,
            )))
        }
    };
    let exact = {
        let contexts = contexts.clone();
        move |ctx: Context| async move {
            contexts.send(ctx).unwrap();
            "exactly this long"
        }
    };
    let no_content = move |ctx: Context| async move {
        contexts.send(ctx).unwrap();
        StatusCode::NO_CONTENT.into_response()
    };
    let app = Router::new()
        .route("/trailers", get(with_trailers))
        .route("/exact", get(exact))
        .route("/no-content", get(no_content));
    let (root, shutdown) = Context::background().with_cancel();
    let server = Server::start_on(app, ContextLayer::new(&root), false, root, shutdown).await;

    for (method, path) in [
        ("GET", "/trailers"),
        ("GET", "/exact"),
        ("HEAD", "/exact"),
        ("GET", "/no-content"),
    ] {
        let stream = TcpStream::connect(server.addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(format!("http://localhost{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        response.into_body().collect().await.unwrap();
        let cause = next_cause(&mut seen).await;
        assert!(
            cause.downcast_ref::<Disconnected>().is_none(),
            "{method} {path}: the request ended with {cause}"
        );
        // The connection stays open: the end came from the response itself.
        drop(sender);
    }
}
