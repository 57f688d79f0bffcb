//! What hedging buys against a server with a slow tail: the same calls made
//! three ways, side by side, against a real local axum server.
//!
//! The server (127.0.0.1, a random port) answers `/` after 2–6 ms, except
//! about 1 request in 25, which takes 200 ms: a slow disk, a GC pause, a
//! cold cache. Which requests are slow depends only on the order the server
//! sees them, not on who sent them, so a second try is usually fast. Its
//! handler waits with `ctx.sleep` under taskgroup's `ContextLayer` and
//! `DisconnectListener`, so a call the client gives up stops on the server
//! too.
//!
//! The client makes `--calls` calls, `--concurrency` at a time, each way:
//!
//! 1. **No hedging**: one request per call.
//! 2. **Hedge at p95**: `taskgroup::hedge` with 2 attempts; the second is
//!    sent when the first has taken longer than the first run's p95 and
//!    the first answer wins. (The tail is 4%, not 5%, so that the p95 of
//!    the first run is a fast answer and not the edge of the tail.)
//! 3. **`FirstOk` over 2 replicas**: both requests at once; the first
//!    answer wins, the other is dropped.
//!
//! For each: p50, p99 and max latency per call, and requests sent per call
//! (what the hedge costs the server).
//!
//! ```text
//! cargo run --release --example hedged
//! cargo run --release --example hedged -- --calls 20000 --concurrency 64
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use taskgroup::http::{ConnectionContext, ContextLayer, DisconnectListener};
use taskgroup::{AllFailed, Context, FirstOk, TaskGroup, hedge};
use tokio::time::Instant;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

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
    let server = Server::start(&root).await;
    let client = http_client();
    let url: Arc<str> = format!("http://{}/", server.addr).into();
    println!(
        "server on {url}: 2-6 ms, 1 request in 25 takes 200 ms; {} calls, {} at a time\n",
        args.calls, args.concurrency
    );

    // Warm the connection pool, so the first run does not pay the connects.
    run(&args, &root, &server, |ctx| {
        let (client, url) = (client.clone(), url.clone());
        async move { fetch(&client, &url, &ctx).await }
    })
    .await;

    let plain = run(&args, &root, &server, |ctx| {
        let (client, url) = (client.clone(), url.clone());
        async move { fetch(&client, &url, &ctx).await }
    })
    .await;
    let p95 = plain.percentile(95);

    let hedged = run(&args, &root, &server, |ctx| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            hedge(&ctx, 2, p95, move |ctx, _attempt| {
                let (client, url) = (client.clone(), url.clone());
                async move { fetch(&client, &url, &ctx).await }
            })
            .await
            .map_err(|all| all.to_string())
        }
    })
    .await;

    let raced = run(&args, &root, &server, |ctx| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut race = TaskGroup::builder().joiner(FirstOk).context(&ctx).build();
            for _replica in 0..2 {
                let (client, url) = (client.clone(), url.clone());
                race.spawn(move |ctx| async move { fetch(&client, &url, &ctx).await });
            }
            let first: Result<(), AllFailed<String>> = race.wait().await;
            first.map_err(|all| all.to_string())
        }
    })
    .await;

    println!("| strategy | p50 | p99 | max | requests per call | failed |");
    println!("|---|---|---|---|---|---|");
    plain.row("no hedging");
    hedged.row(&format!("hedge after p95 ({:.1} ms)", ms(p95)));
    raced.row("FirstOk over 2 replicas");
}

/// Makes `args.calls` calls, `args.concurrency` at a time, through one
/// group with a limit, and measures each.
async fn run<F, Fut>(args: &Args, root: &Context, server: &Server, call: F) -> Run
where
    F: Fn(Context) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let sent_before = server.stats.requests.load(Ordering::Relaxed);
    let mut group = TaskGroup::<Duration, String>::builder()
        .limit(args.concurrency)
        .context(root)
        .build();
    for _ in 0..args.calls {
        group.ready().await;
        let fut = call(group.context().clone());
        group.spawn(move |_ctx| async move {
            let start = Instant::now();
            // A failed call is counted, not fatal: the run goes on.
            Ok(fut.await.map(|()| start.elapsed()).unwrap_or(Duration::MAX))
        });
    }
    let mut latencies = group.wait().await.expect("every call is measured");
    let failed = latencies.iter().filter(|l| **l == Duration::MAX).count();
    latencies.retain(|l| *l != Duration::MAX);
    latencies.sort_unstable();
    Run {
        latencies,
        failed,
        calls: args.calls,
        sent: server.stats.requests.load(Ordering::Relaxed) - sent_before,
    }
}

/// One way of calling, measured.
struct Run {
    latencies: Vec<Duration>,
    failed: usize,
    calls: usize,
    sent: u64,
}

impl Run {
    fn percentile(&self, p: usize) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (self.latencies.len() * p).div_ceil(100).max(1);
        self.latencies[rank - 1]
    }

    fn row(&self, name: &str) {
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} | {} |",
            ms(self.percentile(50)),
            ms(self.percentile(99)),
            ms(self.percentile(100)),
            self.sent as f64 / self.calls as f64,
            self.failed,
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// One GET; its context ending (a lost race, a deadline) drops it.
async fn fetch(client: &HttpClient, url: &str, ctx: &Context) -> Result<(), String> {
    let request = Request::get(url)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let answer = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        if response.status() != StatusCode::OK {
            return Err(format!("answered {}", response.status()));
        }
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    };
    ctx.run(answer).await.map_err(|e| e.to_string())?
}

/// The server: counts requests, and makes 1 in 25 slow.
struct Server {
    addr: SocketAddr,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
}

impl Server {
    async fn start(root: &Context) -> Server {
        let stats = Arc::new(Stats::default());
        let app = Router::new()
            .route("/", get(answer))
            .with_state(stats.clone())
            .layer(ContextLayer::new(root));
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
            .expect("server")
        });
        Server { addr, stats }
    }
}

async fn answer(State(stats): State<Arc<Stats>>, ctx: Context) -> StatusCode {
    let n = stats.requests.fetch_add(1, Ordering::Relaxed);
    let mix = splitmix(n);
    let latency = if mix.is_multiple_of(25) {
        Duration::from_millis(200)
    } else {
        Duration::from_millis(2 + (mix >> 8) % 5)
    };
    match ctx.sleep(latency).await {
        Ok(()) => StatusCode::OK,
        // The client gave up (a lost race): nobody reads this.
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// A 64-bit mix: which requests are slow, spread evenly.
fn splitmix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct Args {
    calls: usize,
    concurrency: usize,
}

impl Args {
    const USAGE: &str = "usage: hedged [--calls N] [--concurrency N]";

    fn parse() -> Result<Args, String> {
        let mut args = Args {
            calls: 4000,
            concurrency: 32,
        };
        let mut rest = std::env::args().skip(1);
        while let Some(flag) = rest.next() {
            let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let number: usize = value
                .parse()
                .map_err(|_| format!("{flag}: not a number: {value:?}"))?;
            match flag.as_str() {
                "--calls" => args.calls = number,
                "--concurrency" => args.concurrency = number,
                _ => return Err(format!("unknown option {flag:?}")),
            }
        }
        if args.calls == 0 || args.concurrency == 0 {
            return Err("--calls and --concurrency must be at least 1".to_string());
        }
        Ok(args)
    }
}
