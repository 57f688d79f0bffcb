//! The README's main job: fetch 1,000 URLs through one `TaskGroup` with a
//! limit, from a real HTTP server, with a real HTTP client.
//!
//! It starts an origin server on 127.0.0.1 (a random port): axum, with
//! taskgroup's `ContextLayer` and `DisconnectListener`, so every request has
//! a `Context` that ends with its deadline (sent by the client as
//! `grpc-timeout`) or when its client hangs up. `/item/{id}` answers after a
//! latency that depends on the id — most in tens of milliseconds, a long
//! tail past 100 ms — and about 1 in 100 ids answer `503`; `/poison` always
//! fails. The handler waits out its latency with `ctx.sleep`, so it stops
//! the moment its request is over, and counts the times it did.
//!
//! The client is hyper-util's pooled HTTP/1.1 client behind taskgroup's
//! `PropagateDeadlineLayer`: a request that carries a `Context` is stamped
//! with its deadline and given up when it ends.
//!
//! Three runs over the same URLs:
//!
//! 1. **Fetch them all**, `--limit` at a time, with a progress bar, then a
//!    summary: how many, p50/p99 latency, wall time against the sum of the
//!    latencies (what fetching one by one would take). A `503` is an
//!    answer here, counted, not an error.
//! 2. **Fail fast**: one URL is poisoned, and an error status other than
//!    `503` is an error. The first error cancels the group: the fetches in flight are
//!    dropped (the origin sees those clients hang up and stops their
//!    handlers), and the queued ones are never sent.
//! 3. **A deadline per request**: each fetch gets its own budget
//!    (`--deadline-ms`). Slow items give up at it, on both sides: the
//!    client drops the call, and the origin, which got the budget as
//!    `grpc-timeout`, stops its handler.
//!
//! Runs 2 and 3 count both sides and say how they add up: `client:` is
//! what the group saw (a fetch dropped in flight was sent, and its answer
//! not read yet), `origin:` what the server saw (a handler stopped is one
//! whose request context ended while it still worked). The two differ by
//! the requests whose handler had already answered, or that never reached
//! one.
//!
//! Each run draws a progress bar on stderr when stderr is a terminal; when
//! it is not (a pipe, a log file, CI) it prints one summary line per run
//! there instead, so stdout reads the same either way.
//!
//! With `--compare`, it does none of the three runs: it runs run 1 (fetch
//! them all, `--limit` at a time) against the same origin, in the same
//! process, once through `TaskGroup` as above and once written by hand
//! with `tokio::task::JoinSet`, a `tokio::sync::Semaphore` (a permit
//! acquired before each spawn and held by the task: the limit) and a
//! `tokio_util::sync::CancellationToken` that every task selects on, its
//! results collected in spawn order. After one untimed warm-up of each, it
//! runs `--rounds` rounds (default 5) of both, the order swapped every
//! round, and prints per round and as medians: the wall time, and the
//! process's CPU time (user + system) over the run, from `/proc/self/stat`
//! (in clock ticks, 10 ms) and from `/proc/self/task/*/schedstat` (each
//! thread's time on a CPU, in ns). The CPU time is the whole process's:
//! the origin's handlers, hyper on both sides and the fan-out; only the
//! fan-out differs between the two.
//!
//! ```text
//! cargo run --release --example fanout_fetch
//! cargo run --release --example fanout_fetch -- --urls 5000 --limit 128 --poison-at 1000 --deadline-ms 30
//! cargo run --release --example fanout_fetch -- --compare --rounds 5
//! ```

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use taskgroup::http::{
    ConnectionContext, ContextLayer, DisconnectListener, PropagateDeadline, PropagateDeadlineLayer,
};
use taskgroup::{Context, ContextError, GroupError, Outcome, TaskGroup};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

#[tokio::main]
async fn main() {
    let args = match Args::parse() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}\n{}", Args::USAGE);
            std::process::exit(2);
        }
    };

    let (root, _shutdown) = Context::background().with_cancel();
    let origin = Origin::start(&root).await;
    let client = http_client();
    let urls: Vec<String> = (0..args.urls)
        .map(|id| format!("http://{}/item/{id}", origin.addr))
        .collect();
    if args.compare {
        compare(&client, &urls, args.limit, args.rounds).await;
        return;
    }
    println!(
        "origin on http://{}: {} URLs, fetched {} at a time\n",
        origin.addr, args.urls, args.limit
    );

    // Run 1: everything.
    println!("1. fetch them all");
    let before = origin.stats.snapshot();
    let run = fetch_all(&client, &urls, args.limit).await;
    run.report();
    let after = origin.stats.snapshot();
    println!(
        "   the origin received {} requests\n",
        after.received - before.received
    );

    // Run 2: fail fast on a poisoned URL.
    println!("2. fail fast: URL {} is poisoned", args.poison_at);
    let mut poisoned = urls.clone();
    poisoned[args.poison_at] = format!("http://{}/poison", origin.addr);
    let before = origin.stats.snapshot();
    let client_side = fail_fast(&client, &poisoned, args.limit).await;
    origin.settle().await;
    let origin_side = origin.stats.snapshot().since(before);
    // Each request the client dropped in flight either reached a handler
    // that was still working (stopped: the origin saw its client hang up),
    // reached one that had already answered (the answer was on its way),
    // or never reached a handler at all.
    let not_arrived = client_side.sent.saturating_sub(origin_side.received);
    let answered = client_side
        .dropped
        .saturating_sub(origin_side.stopped + not_arrived);
    println!(
        "   origin: received {} requests; of the {} the client dropped in flight,\n           \
         {} handlers were still working and stopped when their client hung up,\n           \
         {answered} had already answered (the reply was on its way){}\n",
        origin_side.received,
        client_side.dropped,
        origin_side.stopped,
        if not_arrived > 0 {
            format!(", {not_arrived} never reached a handler")
        } else {
            String::new()
        },
    );

    // Run 3: a deadline per request.
    let deadline = Duration::from_millis(args.deadline_ms);
    println!("3. a deadline of {deadline:?} per request");
    let before = origin.stats.snapshot();
    let gave_up = with_deadline(&client, &urls, args.limit, deadline).await;
    origin.settle().await;
    let origin_side = origin.stats.snapshot().since(before);
    if let Some(run) = gave_up {
        // A handler the origin stopped either answered 504 in time (its
        // deadline, the client's rounded down, ran out first) or found its
        // client gone. A fetch that gave up reached such a handler, one
        // that answered too late, or none at all.
        let not_arrived = urls.len().saturating_sub(origin_side.received);
        let stopped_gone = origin_side.stopped.saturating_sub(run.timed_out);
        let late = run.gave_up.saturating_sub(stopped_gone + not_arrived);
        println!(
            "   origin: received {} requests and stopped {} handlers at their deadline \
             (sent as grpc-timeout) or hang-up:\n           \
             {} answered 504, {stopped_gone} found their client gone;\n           \
             of the other {} fetches that gave up, {late} answered too late, \
             {not_arrived} never reached a handler in time",
            origin_side.received,
            origin_side.stopped,
            run.timed_out,
            run.gave_up - stopped_gone.min(run.gave_up),
        );
    }
}

// ---------------------------------------------------------------------------
// The client side

type HttpClient = PropagateDeadline<Client<HttpConnector, Empty<Bytes>>>;

fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    tower::ServiceBuilder::new()
        .layer(PropagateDeadlineLayer::new())
        .service(client)
}

/// One answer.
#[derive(Debug)]
struct Fetched {
    status: StatusCode,
    latency: Duration,
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error("{0}")]
    Http(String),
    #[error("{url} answered {status}")]
    Status { url: String, status: StatusCode },
}

/// Counts requests handed to the HTTP client.
static SENT: AtomicUsize = AtomicUsize::new(0);

/// GETs `url` under `ctx`: the request carries the context, so the client
/// layer stamps its deadline and gives up when it ends.
async fn fetch(ctx: &Context, client: &HttpClient, url: &str) -> Result<Fetched, FetchError> {
    ctx.check()?;
    let mut request = Request::get(url)
        .body(Empty::new())
        .map_err(|e| FetchError::Http(e.to_string()))?;
    request.extensions_mut().insert(ctx.clone());
    let start = Instant::now();
    SENT.fetch_add(1, Ordering::Relaxed);
    let response = client.clone().oneshot(request).await.map_err(|e| {
        match e.downcast_ref::<ContextError>() {
            Some(&e) => FetchError::Context(e),
            None => FetchError::Http(e.to_string()),
        }
    })?;
    let status = response.status();
    ctx.run(response.into_body().collect())
        .await?
        .map_err(|e| FetchError::Http(e.to_string()))?;
    Ok(Fetched {
        status,
        latency: start.elapsed(),
    })
}

/// Run 1.
struct Run {
    fetched: Vec<Fetched>,
    wall: Duration,
}

async fn fetch_all(client: &HttpClient, urls: &[String], limit: usize) -> Run {
    fetch_all_with(
        client,
        urls,
        limit,
        Progress::new("fetch them all", urls.len()),
    )
    .await
}

async fn fetch_all_with(
    client: &HttpClient,
    urls: &[String],
    limit: usize,
    mut progress: Progress,
) -> Run {
    let start = Instant::now();
    let mut group = TaskGroup::<Fetched, FetchError>::builder()
        .limit(limit)
        .name("fetch")
        .build();
    for url in urls {
        let (client, url) = (client.clone(), url.clone());
        group.spawn(move |ctx| async move { fetch(&ctx, &client, &url).await });
    }
    let mut fetched = Vec::with_capacity(urls.len());
    while let Some((_id, outcome)) = group.next().await {
        match outcome {
            Outcome::Ok(f) => {
                progress.tick(!f.status.is_success());
                fetched.push(f);
            }
            Outcome::Err(e) => panic!("fetch failed: {e}"),
            other => panic!("fetch did not finish: {other:?}"),
        }
    }
    progress.finish();
    Run {
        fetched,
        wall: start.elapsed(),
    }
}

impl Run {
    fn report(&self) {
        let mut latencies: Vec<Duration> = self.fetched.iter().map(|f| f.latency).collect();
        latencies.sort();
        let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
        let sum: Duration = latencies.iter().sum();
        let failed = self
            .fetched
            .iter()
            .filter(|f| !f.status.is_success())
            .count();
        println!(
            "   {} fetched: {} ok, {} answered 503 (the origin's ~1% failures)",
            self.fetched.len(),
            self.fetched.len() - failed,
            failed
        );
        println!(
            "   latency p50 {:.1} ms, p99 {:.1} ms",
            ms(pct(50)),
            ms(pct(99))
        );
        println!(
            "   wall {:.0} ms vs {:.0} ms one by one (the sum of the latencies): {:.0}x",
            ms(self.wall),
            ms(sum),
            sum.as_secs_f64() / self.wall.as_secs_f64()
        );
    }
}

/// What the client saw in run 2.
struct FailFast {
    /// Requests handed to the HTTP client.
    sent: usize,
    /// Of those, the ones dropped before their answer was read.
    dropped: usize,
}

/// Run 2.
async fn fail_fast(client: &HttpClient, urls: &[String], limit: usize) -> FailFast {
    let start = Instant::now();
    let sent_before = SENT.load(Ordering::Relaxed);
    let mut group = TaskGroup::<Fetched, FetchError>::builder()
        .limit(limit)
        .name("fetch")
        .build();
    let group_ctx = group.context().clone();
    for url in urls {
        let (client, url) = (client.clone(), url.clone());
        group.spawn(move |ctx| async move {
            let fetched = fetch(&ctx, &client, &url).await?;
            // 503 is an answer (overloaded: retry later); any other error
            // status is fatal.
            if !fetched.status.is_success() && fetched.status != StatusCode::SERVICE_UNAVAILABLE {
                return Err(FetchError::Status {
                    url,
                    status: fetched.status,
                });
            }
            Ok(fetched)
        });
    }
    let mut progress = Progress::new("fail fast", urls.len());
    let (mut ok, mut failed, mut cancelled) = (0, 0, 0);
    while let Some((_id, outcome)) = group.next().await {
        progress.tick(!outcome.is_ok());
        match outcome {
            Outcome::Ok(_) => ok += 1,
            Outcome::Err(_) => failed += 1,
            Outcome::Cancelled => cancelled += 1,
            Outcome::Panicked(payload) => std::panic::resume_unwind(payload),
        }
    }
    progress.finish();
    let wall = start.elapsed();
    let sent = SENT.load(Ordering::Relaxed) - sent_before;
    match group_ctx.cause() {
        Some(cause) => println!("   stopped after {:.0} ms: {cause}", ms(wall)),
        None => println!("   nothing failed ({:.0} ms)", ms(wall)),
    }
    let dropped = sent - ok - failed;
    println!(
        "   client: {ok} fetched, {failed} failed, {cancelled} cancelled:\n           \
         {dropped} in flight (sent, answer not read yet) and dropped, \
         {} still queued and never sent",
        urls.len() - sent
    );
    FailFast { sent, dropped }
}

/// What the client saw in run 3.
struct DeadlineRun {
    /// Answers that came in time with the origin's `504`: its handler's
    /// deadline ran out first.
    timed_out: usize,
    /// Fetches that gave up at their deadline.
    gave_up: usize,
}

/// Run 3; `None` if it failed.
async fn with_deadline(
    client: &HttpClient,
    urls: &[String],
    limit: usize,
    deadline: Duration,
) -> Option<DeadlineRun> {
    let start = Instant::now();
    let mut group = TaskGroup::<Option<Fetched>, FetchError>::builder()
        .limit(limit)
        .name("fetch")
        .build();
    for url in urls {
        let (client, url) = (client.clone(), url.clone());
        group.spawn(move |ctx| async move {
            // This request's own budget, under the group's context.
            let (ctx, _cancel) = ctx.with_timeout(deadline);
            match fetch(&ctx, &client, &url).await {
                Ok(fetched) => Ok(Some(fetched)),
                Err(FetchError::Context(ContextError::DeadlineExceeded)) => Ok(None),
                Err(e) => Err(e),
            }
        });
    }
    let mut progress = Progress::new("a deadline per request", urls.len());
    let (mut in_time, mut timed_out, mut gave_up) = (0, 0, 0);
    while let Some((_id, outcome)) = group.next().await {
        progress.tick(!matches!(&outcome, Outcome::Ok(Some(f)) if f.status.is_success()));
        match outcome {
            Outcome::Ok(Some(fetched)) => {
                in_time += 1;
                timed_out += usize::from(fetched.status == StatusCode::GATEWAY_TIMEOUT);
            }
            Outcome::Ok(None) => gave_up += 1,
            // Any other error fails the group; `wait` reports it.
            Outcome::Err(_) | Outcome::Cancelled => {}
            Outcome::Panicked(payload) => std::panic::resume_unwind(payload),
        }
    }
    progress.finish();
    match group.wait().await {
        Ok(_) => {
            println!(
                "   client: {in_time} answered within {deadline:?} ({timed_out} of them \
                 504: the origin's deadline came first),\n           \
                 {gave_up} gave up at it ({:.0} ms in all)",
                ms(start.elapsed())
            );
            Some(DeadlineRun { timed_out, gave_up })
        }
        Err(GroupError::Failed(e)) => {
            println!("   failed: {e}");
            None
        }
        Err(GroupError::Cancelled(e)) => {
            println!("   cancelled: {e}");
            None
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A progress bar on stderr, redrawn in place with `\r` when stderr is a
/// terminal; when it is not (a log file, a pipe, CI), one summary line per
/// phase instead, once the phase is over.
struct Progress {
    phase: &'static str,
    start: Instant,
    total: usize,
    done: usize,
    failed: usize,
    drawn: Option<Instant>,
    terminal: bool,
    /// Draws nothing and prints nothing (`--compare`'s rounds).
    quiet: bool,
}

impl Progress {
    fn new(phase: &'static str, total: usize) -> Progress {
        Progress {
            phase,
            start: Instant::now(),
            total,
            done: 0,
            failed: 0,
            drawn: None,
            terminal: std::io::stderr().is_terminal(),
            quiet: false,
        }
    }

    /// A progress bar that counts but shows nothing.
    fn quiet(phase: &'static str, total: usize) -> Progress {
        Progress {
            quiet: true,
            ..Progress::new(phase, total)
        }
    }

    fn tick(&mut self, failed: bool) {
        self.done += 1;
        self.failed += usize::from(failed);
        if self
            .drawn
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(50))
        {
            self.draw();
        }
    }

    fn draw(&mut self) {
        if !self.terminal || self.quiet {
            return;
        }
        const WIDTH: usize = 40;
        let filled = WIDTH * self.done / self.total.max(1);
        let bar = format!("{}{}", "#".repeat(filled), ".".repeat(WIDTH - filled));
        eprint!(
            "\r   [{bar}] {}/{} ({} failed)",
            self.done, self.total, self.failed
        );
        let _ = std::io::stderr().flush();
        self.drawn = Some(Instant::now());
    }

    fn finish(&mut self) {
        if self.quiet {
            return;
        }
        if self.terminal {
            self.draw();
            eprintln!();
        } else {
            eprintln!(
                "   [{}] {}/{} done ({} failed) in {:.0} ms",
                self.phase,
                self.done,
                self.total,
                self.failed,
                ms(self.start.elapsed())
            );
        }
    }
}

// ---------------------------------------------------------------------------
// `--compare`: run 1 through `TaskGroup` and written by hand

/// Run 1 without taskgroup: a `JoinSet`, a `Semaphore` permit acquired
/// before each spawn and held by the task (the limit), and a
/// `CancellationToken` every task selects on, cancelled by the first
/// error (Go's errgroup by hand). The requests carry no `Context`, so the
/// client's `PropagateDeadline` layer passes them straight through. The
/// results are kept in spawn order.
async fn fetch_all_by_hand(
    client: &HttpClient,
    urls: &[String],
    limit: usize,
    mut progress: Progress,
) -> Run {
    let start = Instant::now();
    let token = CancellationToken::new();
    let permits = Arc::new(Semaphore::new(limit));
    let mut set = JoinSet::new();
    let mut slots: Vec<Option<Fetched>> = (0..urls.len()).map(|_| None).collect();
    let mut reap = |joined: Result<(usize, Result<Fetched, FetchError>), _>,
                    progress: &mut Progress| {
        match joined {
            Ok((i, Ok(f))) => {
                progress.tick(!f.status.is_success());
                slots[i] = Some(f);
            }
            Ok((_, Err(e))) => panic!("fetch failed: {e}"),
            Err(e) => panic!("fetch did not finish: {e}"),
        }
    };
    for (i, url) in urls.iter().enumerate() {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        set.spawn(async move {
            let _permit = permit;
            let fetched = tokio::select! {
                biased;
                () = token.cancelled() => Err(FetchError::Context(ContextError::Cancelled)),
                fetched = fetch_plain(&client, &url) => fetched,
            };
            if fetched.is_err() {
                token.cancel();
            }
            (i, fetched)
        });
        while let Some(joined) = set.try_join_next() {
            reap(joined, &mut progress);
        }
    }
    while let Some(joined) = set.join_next().await {
        reap(joined, &mut progress);
    }
    progress.finish();
    Run {
        fetched: slots
            .into_iter()
            .map(|f| f.expect("every task joined"))
            .collect(),
        wall: start.elapsed(),
    }
}

/// `fetch` without a `Context`: the same request, the same client.
async fn fetch_plain(client: &HttpClient, url: &str) -> Result<Fetched, FetchError> {
    let request = Request::get(url)
        .body(Empty::new())
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let start = Instant::now();
    SENT.fetch_add(1, Ordering::Relaxed);
    let response = client
        .clone()
        .oneshot(request)
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    Ok(Fetched {
        status,
        latency: start.elapsed(),
    })
}

/// The process's CPU time so far, two ways.
#[derive(Clone, Copy)]
struct CpuTime {
    /// User and system time of every thread, ended ones included, from
    /// `/proc/self/stat` (fields 14 and 15), in clock ticks.
    user_ticks: u64,
    sys_ticks: u64,
    /// Time on a CPU of the threads alive now, from
    /// `/proc/self/task/*/schedstat`, in ns. The runtime's threads live as
    /// long as the process (the fetches start no blocking threads: the
    /// URLs' hosts are IP addresses), so a difference of two is exact.
    on_cpu_ns: u64,
}

/// `USER_HZ`: the unit of `/proc/self/stat`'s times, 100 on Linux
/// (`getconf CLK_TCK`).
const TICKS_PER_SEC: u64 = 100;

impl CpuTime {
    /// `None` where there is no `/proc` (not Linux).
    fn now() -> Option<CpuTime> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The name, field 2, is in parentheses and may hold spaces: field
        // 3 is the first after the last `)`.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        let mut on_cpu_ns = 0;
        for thread in std::fs::read_dir("/proc/self/task").ok()? {
            let path = thread.ok()?.path().join("schedstat");
            // A thread may end between the listing and the read.
            if let Ok(schedstat) = std::fs::read_to_string(path) {
                on_cpu_ns += schedstat.split_whitespace().next()?.parse::<u64>().ok()?;
            }
        }
        Some(CpuTime {
            user_ticks: field(14)?,
            sys_ticks: field(15)?,
            on_cpu_ns,
        })
    }
}

/// One timed run of one side.
#[derive(Clone, Copy)]
struct Measured {
    wall: Duration,
    user: Duration,
    sys: Duration,
    on_cpu: Duration,
}

impl Measured {
    fn cpu(&self) -> Duration {
        self.user + self.sys
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    TaskGroup,
    ByHand,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::TaskGroup => "TaskGroup",
            Side::ByHand => "JoinSet+Semaphore+CancellationToken",
        }
    }
}

/// Runs run 1 once on `side`, timed, and checks its answers against the
/// origin's profile.
async fn measure(side: Side, client: &HttpClient, urls: &[String], limit: usize) -> Measured {
    let progress = Progress::quiet("fetch them all", urls.len());
    let before = CpuTime::now();
    let run = match side {
        Side::TaskGroup => fetch_all_with(client, urls, limit, progress).await,
        Side::ByHand => fetch_all_by_hand(client, urls, limit, progress).await,
    };
    let after = CpuTime::now();
    let failing = (0..urls.len() as u64)
        .filter(|&id| item_profile(id).1)
        .count();
    let answered_503 = run
        .fetched
        .iter()
        .filter(|f| f.status == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert_eq!(run.fetched.len(), urls.len(), "{}: every URL", side.name());
    assert_eq!(answered_503, failing, "{}: the 503s", side.name());
    let ticks = |t: u64| Duration::from_nanos(t * 1_000_000_000 / TICKS_PER_SEC);
    match (before, after) {
        (Some(before), Some(after)) => Measured {
            wall: run.wall,
            user: ticks(after.user_ticks - before.user_ticks),
            sys: ticks(after.sys_ticks - before.sys_ticks),
            on_cpu: Duration::from_nanos(after.on_cpu_ns.saturating_sub(before.on_cpu_ns)),
        },
        _ => Measured {
            wall: run.wall,
            user: Duration::ZERO,
            sys: Duration::ZERO,
            on_cpu: Duration::ZERO,
        },
    }
}

/// One figure of a `Measured`.
type Column = fn(&Measured) -> Duration;

/// `--compare`: run 1 on both sides, `rounds` times after a warm-up.
async fn compare(client: &HttpClient, urls: &[String], limit: usize, rounds: usize) {
    println!(
        "run 1 (fetch them all: {} URLs, {limit} at a time), TaskGroup against \
         JoinSet + Semaphore + CancellationToken,\n\
         same origin, same process: a warm-up of each, then {rounds} rounds, \
         the order swapped every round\n",
        urls.len()
    );
    if CpuTime::now().is_none() {
        println!("   (no /proc here: CPU times read 0)\n");
    }
    // The warm-up opens the client's pooled connections (`limit` of them)
    // and grows the allocator's heap; neither is timed.
    for side in [Side::TaskGroup, Side::ByHand] {
        measure(side, client, urls, limit).await;
    }
    let mut taskgroup = Vec::with_capacity(rounds);
    let mut by_hand = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Side::TaskGroup, Side::ByHand]
        } else {
            [Side::ByHand, Side::TaskGroup]
        };
        for side in order {
            let m = measure(side, client, urls, limit).await;
            println!(
                "   round {}  {:<36} wall {:6.1} ms   cpu {:5.0} ms (user {:.0} + sys {:.0})   \
                 on-cpu {:6.1} ms",
                round + 1,
                side.name(),
                ms(m.wall),
                ms(m.cpu()),
                ms(m.user),
                ms(m.sys),
                ms(m.on_cpu),
            );
            match side {
                Side::TaskGroup => taskgroup.push(m),
                Side::ByHand => by_hand.push(m),
            }
        }
    }
    println!("\n   median (min-max) over {rounds} rounds:");
    let summary = |runs: &[Measured], of: Column| {
        let mut values: Vec<Duration> = runs.iter().map(of).collect();
        values.sort();
        (
            values[values.len() / 2],
            values[0],
            values[values.len() - 1],
        )
    };
    let columns: [(&str, Column); 3] = [
        ("wall", |m| m.wall),
        ("cpu (user+sys)", Measured::cpu),
        ("on-cpu", |m| m.on_cpu),
    ];
    for (side, runs) in [(Side::TaskGroup, &taskgroup), (Side::ByHand, &by_hand)] {
        let cells: Vec<String> = columns
            .iter()
            .map(|&(label, of)| {
                let (median, min, max) = summary(runs, of);
                format!(
                    "{label} {:.1} ms ({:.1}-{:.1})",
                    ms(median),
                    ms(min),
                    ms(max)
                )
            })
            .collect();
        println!("   {:<36} {}", side.name(), cells.join("   "));
    }
    let ratios: Vec<String> = columns
        .iter()
        .map(|&(label, of)| {
            let (ours, _, _) = summary(&taskgroup, of);
            let (theirs, _, _) = summary(&by_hand, of);
            let per_request = (ours.as_secs_f64() - theirs.as_secs_f64()) * 1e6 / urls.len() as f64;
            format!(
                "{label} {:.3}x ({per_request:+.1} us per request)",
                ours.as_secs_f64() / theirs.as_secs_f64()
            )
        })
        .collect();
    println!("   TaskGroup / by hand (medians): {}", ratios.join(", "));
}

// ---------------------------------------------------------------------------
// The origin server

#[derive(Default)]
struct Stats {
    received: AtomicUsize,
    in_flight: AtomicUsize,
    stopped: AtomicUsize,
}

#[derive(Clone, Copy)]
struct Snapshot {
    received: usize,
    stopped: usize,
}

impl Snapshot {
    /// The counts since `before`.
    fn since(self, before: Snapshot) -> Snapshot {
        Snapshot {
            received: self.received - before.received,
            stopped: self.stopped - before.stopped,
        }
    }
}

impl Stats {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            received: self.received.load(Ordering::Relaxed),
            stopped: self.stopped.load(Ordering::Relaxed),
        }
    }
}

struct Origin {
    addr: SocketAddr,
    stats: Arc<Stats>,
}

impl Origin {
    async fn start(root: &Context) -> Origin {
        let stats = Arc::new(Stats::default());
        let app = Router::new()
            .route("/item/{id}", get(item))
            .route("/poison", get(poison))
            .with_state(stats.clone())
            .layer(ContextLayer::new(root).max_timeout(Duration::from_secs(5)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local address");
        let listener = DisconnectListener::new(listener, root);
        let shutdown = root.done_owned();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<ConnectionContext>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
            .expect("origin server")
        });
        Origin { addr, stats }
    }

    /// Waits (briefly) for handlers still finishing after their clients
    /// gave up, so the counts are complete.
    async fn settle(&self) {
        let start = Instant::now();
        while self.stats.in_flight.load(Ordering::Relaxed) > 0
            && start.elapsed() < Duration::from_secs(2)
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// `/item/{id}`: answers after the item's latency, or stops when its
/// request is over.
async fn item(
    State(stats): State<Arc<Stats>>,
    Path(id): Path<u64>,
    ctx: Context,
) -> (StatusCode, String) {
    let mut handling = Handling::start(stats);
    let (latency, fails) = item_profile(id);
    match ctx.sleep(latency).await {
        Ok(()) if fails => {
            handling.finished = true;
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "origin overloaded".to_string(),
            )
        }
        Ok(()) => {
            handling.finished = true;
            (StatusCode::OK, format!("item {id}"))
        }
        // The deadline passed, or the client went away: stop the work.
        Err(e) => (StatusCode::GATEWAY_TIMEOUT, e.to_string()),
    }
}

/// Counts a handler in flight, and as stopped if it ends (or hyper drops
/// it, on seeing its client go) before finishing its work.
struct Handling {
    stats: Arc<Stats>,
    finished: bool,
}

impl Handling {
    fn start(stats: Arc<Stats>) -> Handling {
        stats.received.fetch_add(1, Ordering::Relaxed);
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Handling {
            stats,
            finished: false,
        }
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        if !self.finished {
            self.stats.stopped.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `/poison`: fails after a moment.
async fn poison(State(stats): State<Arc<Stats>>) -> (StatusCode, &'static str) {
    stats.received.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(5)).await;
    (StatusCode::INTERNAL_SERVER_ERROR, "poisoned")
}

/// An item's latency and whether it fails, from its id: 3 ms plus a cubed
/// uniform draw of up to 150 ms (median about 22 ms, p99 about 148 ms),
/// and about 1 in 100 ids fail.
fn item_profile(id: u64) -> (Duration, bool) {
    // splitmix64: a well-mixed hash of the id.
    let mut z = id.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = (z >> 11) as f64 / (1u64 << 53) as f64;
    let latency = Duration::from_secs_f64(0.003 + 0.150 * u * u * u);
    (latency, z % 100 == 7)
}

// ---------------------------------------------------------------------------
// Options

struct Args {
    urls: usize,
    limit: usize,
    poison_at: usize,
    deadline_ms: u64,
    compare: bool,
    rounds: usize,
}

impl Args {
    const USAGE: &str = "usage: fanout_fetch [--urls N] [--limit N] [--poison-at I] [--deadline-ms MS] \
         [--compare [--rounds N]]";

    fn parse() -> Result<Args, String> {
        let mut args = Args {
            urls: 1000,
            limit: 64,
            poison_at: 300,
            deadline_ms: 40,
            compare: false,
            rounds: 5,
        };
        let mut rest = std::env::args().skip(1);
        while let Some(flag) = rest.next() {
            if flag == "--compare" {
                args.compare = true;
                continue;
            }
            let mut number = || -> Result<u64, String> {
                let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
                value
                    .parse()
                    .map_err(|_| format!("{flag}: not a number: {value:?}"))
            };
            let size = |n: u64| usize::try_from(n).map_err(|_| "too large".to_string());
            match flag.as_str() {
                "--urls" => args.urls = size(number()?)?,
                "--limit" => args.limit = size(number()?)?,
                "--poison-at" => args.poison_at = size(number()?)?,
                "--deadline-ms" => args.deadline_ms = number()?,
                "--rounds" => args.rounds = size(number()?)?,
                _ => return Err(format!("unknown option {flag:?}")),
            }
        }
        if args.urls == 0 {
            return Err("--urls must be at least 1".to_string());
        }
        if args.limit == 0 {
            return Err("--limit must be at least 1".to_string());
        }
        if args.rounds == 0 {
            return Err("--rounds must be at least 1".to_string());
        }
        if args.poison_at >= args.urls {
            return Err(format!(
                "--poison-at {}: there are only {} URLs",
                args.poison_at, args.urls
            ));
        }
        Ok(args)
    }
}
