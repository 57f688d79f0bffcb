//! Three tonic services on loopback, A → B → C, and the scenarios the
//! gRPC issue names: shared by `examples/grpc_chain` and `tests/grpc.rs`.
//!
//! The services are one hand-written method, `/chain.Hop/Call`, over
//! `tonic::server::Grpc` and `tonic::client::Grpc` with prost's derive:
//! no `.proto` file, so no `protoc` to install. A fans out to two B calls
//! through a `TaskGroup`; each B calls C; C works for `work_ms` under its
//! context and records what it saw.
#![allow(dead_code)] // each user takes what it needs

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskCx, Poll};
use std::time::Duration;

use taskgroup::http::ContextLayer;
use taskgroup::http::tonic::{WatchedIncoming, call, outgoing, request_context};
use taskgroup::{Context, GroupError, TaskGroup};
use tokio::time::Instant;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

/// What a call asks.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Work {
    /// "deadline", "cancel", "fail": what the hops do.
    #[prost(string, tag = "1")]
    pub scenario: String,
    /// How long C works.
    #[prost(uint64, tag = "2")]
    pub work_ms: u64,
    /// Which of A's two B calls this is.
    #[prost(uint32, tag = "3")]
    pub branch: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Reply {
    #[prost(string, tag = "1")]
    pub note: String,
}

/// What C saw of one call.
#[derive(Clone, Debug)]
pub struct Seen {
    pub scenario: String,
    pub branch: u32,
    /// The budget C's context had when C started: its deadline, less now.
    pub budget: Option<Duration>,
    pub started: Instant,
    /// When C's context was cancelled, if it was before C's work was done.
    pub cancelled: Option<Instant>,
    pub cause: Option<String>,
    /// C's watcher has recorded how the call ended (or C's work finished):
    /// until then `cancelled` may still change.
    pub settled: bool,
}

/// What the hops report: C's calls, and the calls in flight at each hop.
#[derive(Default)]
pub struct Probe {
    pub seen: Mutex<Vec<Seen>>,
    pub in_flight: [AtomicUsize; 3],
    pub c_started: tokio::sync::Notify,
    pub c_cancelled: tokio::sync::Notify,
    /// Why A's calls' contexts ended, when they were cancelled.
    pub a_causes: Mutex<Vec<String>>,
}

/// Counts a call in flight at a hop while it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, SeqCst);
        InFlight(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// One hop's handler.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        req: Request<Work>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Reply>, Status>> + Send + '_>>;
}

/// A hand-written tonic service around a [`Handler`]: what tonic's codegen
/// would write for one unary method.
pub struct Hop<H>(pub Arc<H>);

impl<H> Clone for Hop<H> {
    fn clone(&self) -> Self {
        Hop(self.0.clone())
    }
}

impl<H: Handler> tonic::server::NamedService for Hop<H> {
    const NAME: &'static str = "chain.Hop";
}

struct Unary<H>(Arc<H>);

impl<H: Handler> tonic::server::UnaryService<Work> for Unary<H> {
    type Response = Reply;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Reply>, Status>> + Send>>;

    fn call(&mut self, request: Request<Work>) -> Self::Future {
        let handler = self.0.clone();
        Box::pin(async move { handler.handle(request).await })
    }
}

impl<H: Handler> tower_service::Service<http::Request<tonic::body::Body>> for Hop<H> {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut TaskCx<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let handler = self.0.clone();
        Box::pin(async move {
            if req.uri().path() != "/chain.Hop/Call" {
                return Ok(Status::unimplemented(req.uri().path().to_owned()).into_http());
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(Unary(handler), req).await)
        })
    }
}

/// A unary call of `/chain.Hop/Call`, as tonic's generated client makes it.
pub async fn hop_call(channel: Channel, req: Request<Work>) -> Result<Response<Reply>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static("/chain.Hop/Call");
    grpc.unary(req, path, tonic_prost::ProstCodec::default())
        .await
}

struct C {
    probe: Arc<Probe>,
}

impl Handler for C {
    fn handle(
        &self,
        req: Request<Work>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Reply>, Status>> + Send + '_>> {
        Box::pin(async move {
            let _in_flight = InFlight::new(&self.probe.in_flight[2]);
            let ctx = request_context(&req)?;
            let work = req.into_inner();
            let started = Instant::now();
            let index = {
                let mut seen = self.probe.seen.lock().unwrap();
                seen.push(Seen {
                    scenario: work.scenario.clone(),
                    branch: work.branch,
                    budget: ctx.deadline().map(|d| d.saturating_duration_since(started)),
                    started,
                    cancelled: None,
                    cause: None,
                    settled: false,
                });
                seen.len() - 1
            };
            self.probe.c_started.notify_waiters();
            // C's context, watched on a task of its own: its cancel is seen
            // whether the handler returns, or is dropped when the stream
            // is reset.
            let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (probe, watched, done) = (self.probe.clone(), ctx.clone(), finished.clone());
            tokio::spawn(async move {
                watched.done().await;
                {
                    let mut seen = probe.seen.lock().unwrap();
                    // Ended with the response, or cancelled first.
                    if !done.load(SeqCst) {
                        seen[index].cancelled = Some(Instant::now());
                        seen[index].cause = watched.cause().map(|c| c.to_string());
                    }
                    seen[index].settled = true;
                }
                probe.c_cancelled.notify_waiters();
            });
            let worked = ctx.sleep(Duration::from_millis(work.work_ms)).await;
            if worked.is_ok() {
                finished.store(true, SeqCst);
                self.probe.seen.lock().unwrap()[index].settled = true;
            }
            match worked {
                Ok(()) => Ok(Response::new(Reply {
                    note: format!("C worked {} ms", work.work_ms),
                })),
                Err(end) => Err(end.into()),
            }
        })
    }
}

struct B {
    probe: Arc<Probe>,
    c: Channel,
}

impl Handler for B {
    fn handle(
        &self,
        req: Request<Work>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Reply>, Status>> + Send + '_>> {
        Box::pin(async move {
            let _in_flight = InFlight::new(&self.probe.in_flight[1]);
            let ctx = request_context(&req)?;
            let work = req.into_inner();
            if work.scenario == "fail" && work.branch == 1 {
                let _ = ctx.sleep(Duration::from_millis(20)).await;
                return Err(Status::unavailable("branch 1's backend is down"));
            }
            let next = outgoing(&ctx, work)?;
            call(&ctx, hop_call(self.c.clone(), next)).await
        })
    }
}

struct A {
    probe: Arc<Probe>,
    b: Channel,
}

impl Handler for A {
    fn handle(
        &self,
        req: Request<Work>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Reply>, Status>> + Send + '_>> {
        Box::pin(async move {
            let _in_flight = InFlight::new(&self.probe.in_flight[0]);
            let ctx = request_context(&req)?;
            let work = req.into_inner();
            let (probe, watched) = (self.probe.clone(), ctx.clone());
            tokio::spawn(async move {
                watched.done().await;
                let cause = watched.cause().map(|c| c.to_string()).unwrap_or_default();
                probe.a_causes.lock().unwrap().push(cause);
            });
            // The fan-out: two B calls; the first failure cancels the other.
            let mut group = TaskGroup::<Reply, Status>::builder().context(&ctx).build();
            for branch in 0..2 {
                let b = self.b.clone();
                let work = Work {
                    branch,
                    ..work.clone()
                };
                group.spawn(move |ctx| async move {
                    let asked = outgoing(&ctx, work)?;
                    Ok(call(&ctx, hop_call(b, asked)).await?.into_inner())
                });
            }
            match group.wait().await {
                Ok(replies) => Ok(Response::new(Reply {
                    note: format!("{} branches answered", replies.len()),
                })),
                Err(GroupError::Failed(status)) => Err(status),
                Err(GroupError::Cancelled(end)) => Err(end.into()),
            }
        })
    }
}

/// The three services, running; dropping it shuts them down.
pub struct Chain {
    pub a: SocketAddr,
    /// The last hop, for calls made to it directly.
    pub c: SocketAddr,
    pub probe: Arc<Probe>,
    root: taskgroup::CancelHandle,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

async fn serve<H: Handler>(
    handler: H,
    root: &Context,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Each connection watched: a call's context descends from its
    // connection's, so the cause says whether the client closed the
    // connection or cancelled the call.
    let incoming = WatchedIncoming::new(listener, root);
    let layer = ContextLayer::new(root).max_timeout(Duration::from_secs(10));
    let stop = root.done_owned();
    let server = Server::builder()
        .layer(layer)
        .add_service(Hop(Arc::new(handler)))
        .serve_with_incoming_shutdown(incoming, stop);
    (addr, tokio::spawn(async move { server.await.unwrap() }))
}

fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .connect_lazy()
}

impl Chain {
    pub async fn start() -> Chain {
        let (root_ctx, root) = Context::background().with_cancel();
        let probe = Arc::new(Probe::default());
        let (c, c_server) = serve(
            C {
                probe: probe.clone(),
            },
            &root_ctx,
        )
        .await;
        let (b, b_server) = serve(
            B {
                probe: probe.clone(),
                c: channel(c),
            },
            &root_ctx,
        )
        .await;
        let (a, a_server) = serve(
            A {
                probe: probe.clone(),
                b: channel(b),
            },
            &root_ctx,
        )
        .await;
        Chain {
            a,
            c,
            probe,
            root,
            servers: vec![a_server, b_server, c_server],
        }
    }

    /// A channel to A.
    pub fn client(&self) -> Channel {
        channel(self.a)
    }

    /// A channel to C, the last hop.
    pub fn last_hop(&self) -> Channel {
        channel(self.c)
    }

    /// C's records for `scenario`, in the order C saw them.
    pub fn seen(&self, scenario: &str) -> Vec<Seen> {
        self.probe
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| {
                // `cancel` names every `cancel-N` try too.
                s.scenario == scenario
                    || s.scenario
                        .strip_prefix(scenario)
                        .is_some_and(|rest| rest.starts_with('-'))
            })
            .cloned()
            .collect()
    }

    /// Waits until no call is in flight at any hop; false after 2 s.
    /// Waits, at most 2 s, until `done` holds for what C has seen,
    /// looking again each time `signal` is notified; returns whether it
    /// held.
    pub async fn wait_for(
        &self,
        signal: &tokio::sync::Notify,
        done: impl Fn(&[Seen]) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            let notified = signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(&self.probe.seen.lock().unwrap()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return done(&self.probe.seen.lock().unwrap());
            }
        }
    }

    /// Whether every call has ended at every hop, and C's watcher has
    /// recorded how each of C's calls ended (it runs on a task of its
    /// own, so it may come after the hop's count), within 2 s.
    pub async fn quiet(&self) -> bool {
        for _ in 0..2_000 {
            let ended = self.probe.in_flight.iter().all(|n| n.load(SeqCst) == 0);
            if ended && self.probe.seen.lock().unwrap().iter().all(|s| s.settled) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        false
    }

    pub async fn stop(self) {
        self.root.cancel();
        for server in self.servers {
            let _ = server.await;
        }
    }
}

/// What the checks measured.
#[derive(Debug, Default)]
pub struct Findings {
    pub budget_ms: u64,
    pub last_hop_budget_ms: u64,
    pub deadline_status: String,
    pub cancel_to_last_hop_ms: f64,
    pub sibling_cancelled: bool,
}

/// Scenario 1: a client deadline of `budget` reaches C smaller; C stops at
/// it; the client gets `DEADLINE_EXCEEDED`.
///
/// The client is ours: a context with the deadline, [`outgoing`] and
/// [`call`]. (tonic's server answers an expired `grpc-timeout` with
/// `CANCELLED`, "Timeout expired"; `call` reads a `CANCELLED` after the
/// caller's deadline as `DEADLINE_EXCEEDED`, as the gRPC spec says.)
pub async fn deadline(chain: &Chain, budget: Duration) -> Result<(tonic::Code, Duration), String> {
    let (ctx, _cancel) = Context::background().with_timeout(budget);
    let req = outgoing(
        &ctx,
        Work {
            scenario: "deadline".into(),
            work_ms: 5_000,
            branch: 0,
        },
    )
    .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let status = match call(&ctx, hop_call(chain.client(), req)).await {
        Ok(_) => return Err("the call succeeded past its deadline".into()),
        Err(status) => status,
    };
    let took = started.elapsed();
    if !chain.quiet().await {
        return Err("calls still in flight after the deadline".into());
    }
    let seen = chain.seen("deadline");
    if seen.len() != 2 {
        return Err(format!("C saw {} calls, not 2", seen.len()));
    }
    let mut last = Duration::ZERO;
    for s in &seen {
        let Some(got) = s.budget else {
            return Err("C's context had no deadline".into());
        };
        if got >= budget {
            return Err(format!(
                "C's budget {got:?} is not below the client's {budget:?}"
            ));
        }
        if s.cancelled.is_none() {
            return Err("C's work did not stop at the deadline".into());
        }
        last = last.max(got);
    }
    if took > budget + Duration::from_millis(200) {
        return Err(format!(
            "the client waited {took:?} for a {budget:?} budget"
        ));
    }
    Ok((status.code(), last))
}

/// Scenario 2: the client drops its call once C works: C's context is
/// cancelled; returns how long after the drop. `try_no` names this try's
/// calls (`cancel-N`): a call of an earlier try still in transit between
/// two hops when that try ended (the other branch of A's fan-out) may
/// reach C later, and must not be taken for this one.
pub async fn cancel_once(chain: &Chain, try_no: usize) -> Result<Duration, String> {
    let scenario = format!("cancel-{try_no}");
    let call = tokio::spawn(hop_call(
        chain.client(),
        Request::new(Work {
            scenario: scenario.clone(),
            work_ms: 10_000,
            branch: 0,
        }),
    ));
    let this_call = |s: &Seen| s.scenario == scenario;
    if !chain
        .wait_for(&chain.probe.c_started, |seen| seen.iter().any(this_call))
        .await
    {
        return Err("this try's call did not reach C within 2 s".into());
    }
    let dropped = Instant::now();
    call.abort();
    let cancelled = |seen: &[Seen]| seen.iter().any(|s| this_call(s) && s.cancelled.is_some());
    if !chain.wait_for(&chain.probe.c_cancelled, cancelled).await {
        let in_flight: Vec<usize> = chain
            .probe
            .in_flight
            .iter()
            .map(|n| n.load(SeqCst))
            .collect();
        return Err(format!(
            "C's context was not cancelled within 2 s of the client's drop \
             (calls in flight at A, B, C: {in_flight:?})"
        ));
    }
    let latency = dropped.elapsed();
    if !chain.quiet().await {
        return Err("calls still in flight after the client dropped its call".into());
    }
    Ok(latency)
}

/// Scenario 3: B's call for branch 1 fails; A's group cancels branch 0,
/// whose C work stops. Returns whether it did.
pub async fn sibling(chain: &Chain) -> Result<bool, String> {
    let status = hop_call(
        chain.client(),
        Request::new(Work {
            scenario: "fail".into(),
            work_ms: 5_000,
            branch: 0,
        }),
    )
    .await
    .err()
    .ok_or("the call succeeded though a branch failed")?;
    if status.code() != tonic::Code::Unavailable {
        return Err(format!(
            "the client got {status:?}, not the branch's UNAVAILABLE"
        ));
    }
    if !chain.quiet().await {
        return Err("calls still in flight after the failure".into());
    }
    let seen = chain.seen("fail");
    Ok(seen.len() == 1 && seen[0].branch == 0 && seen[0].cancelled.is_some())
}

/// The median of some durations, in ms.
pub fn median_ms(mut all: Vec<Duration>) -> f64 {
    all.sort();
    all[all.len() / 2].as_secs_f64() * 1000.0
}
