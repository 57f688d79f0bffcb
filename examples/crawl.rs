//! A web crawler over a made-up web: a dynamic fan-out with a limit, and
//! fail-fast when one page breaks.
//!
//! The "web" is generated in memory from a seed: every page links to 3 to 8
//! others, picked by a xorshift generator, so the same seed always gives the
//! same web. Fetching a page is an async function that takes the task's
//! [`Context`], waits a few milliseconds (`ctx.sleep`, different for every
//! page) and returns the page's links, or a server error for a "poisoned"
//! page. No network is involved.
//!
//! The crawler starts at page 0 in a [`TaskGroup`] named "crawl" with a
//! limit on concurrent fetches. One `select!` loop drives it: `next()` hands
//! out every page that comes back, whose unseen links go on a frontier
//! (checked against a `HashSet` of pages already seen), and `ready()` says
//! when the group has room for the next fetch from the frontier — the
//! backpressure that keeps the group at `limit` fetches however large the
//! web. A gauge counts the fetches in flight, to show the limit holds.
//!
//! It crawls twice:
//!
//! 1. With no poisoned page it visits every page reachable from page 0.
//! 2. With one poisoned page (by default the one halfway down a
//!    breadth-first walk, so the failure comes mid-crawl) the first error
//!    cancels the group: fetches in flight are dropped at their next await
//!    point. The crawler sees the failure come out of `next()` (before
//!    anything the cancel caused), stops following links, drains what is
//!    left, and
//!    reports the cause the group recorded in its context, which names the
//!    task and the error.
//!
//! ```text
//! cargo run --release --example crawl
//! cargo run --release --example crawl -- --limit 4 --pages 5000 --seed 7 --poison 123
//! ```
//!
//! Options: `--pages N` (default 2000) is the size of the web; `--seed S`
//! (default 1) picks the web; `--limit N` (default 16) is how many pages are
//! fetched at once; `--poison P` is the page that fails in the second run.

use std::collections::{HashSet, VecDeque};
use std::panic;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use taskgroup::{Cause, Context, ContextError, Outcome, TaskGroup};

type PageId = u32;

#[tokio::main]
async fn main() {
    let args = match Args::parse() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}\n{}", Args::USAGE);
            std::process::exit(2);
        }
    };

    let web = Arc::new(Web::generate(args.pages, args.seed));
    let reachable = web.breadth_first(0);
    println!(
        "web: {} pages, {} links (seed {}); {} reachable from page 0",
        web.links.len(),
        web.link_count(),
        args.seed,
        reachable.len(),
    );

    // Run 1: nothing fails, so the crawl ends when `next()` runs dry.
    let server = Server {
        web: web.clone(),
        poisoned: None,
    };
    let run = crawl(server, args.limit).await;
    println!(
        "run 1, no poison: visited {} pages (max {} in flight, limit {}) in {} ms",
        run.visited,
        run.max_in_flight,
        args.limit,
        run.elapsed.as_millis(),
    );
    if run.visited == reachable.len() {
        println!("  every page reachable from page 0 was crawled, each once");
    } else {
        println!(
            "  expected {} pages: the crawl missed some",
            reachable.len()
        );
    }

    // Run 2: one page fails, and the group cancels the rest of the crawl.
    let poisoned = args.poison.unwrap_or(reachable[reachable.len() / 2]);
    let server = Server {
        web,
        poisoned: Some(poisoned),
    };
    println!("run 2, page {poisoned} poisoned:");
    let run = crawl(server, args.limit).await;
    let Some(failure) = &run.failure else {
        println!(
            "  visited {} pages in {} ms: page {poisoned} is not reachable from page 0",
            run.visited,
            run.elapsed.as_millis(),
        );
        return;
    };
    println!(
        "  visited {} pages (max {} in flight, limit {}), then a fetch failed at {} ms: {}",
        run.visited,
        run.max_in_flight,
        args.limit,
        failure.at.as_millis(),
        failure.error,
    );
    println!("  cause: {}", failure.cause);
    println!(
        "  cancelled {} fetches: {} dropped mid-fetch, {} queued that never started",
        run.cancelled,
        run.cancelled - run.never_started,
        run.never_started,
    );
    if run.late_ok > 0 {
        println!(
            "  {} came back after the cancel (links not followed)",
            count(run.late_ok, "page", "pages"),
        );
    }
    if run.late_errors > 0 {
        println!(
            "  {} noticed the cancel by itself and returned an error",
            count(run.late_errors, "fetch", "fetches"),
        );
    }
    let context = run
        .context_err
        .map_or("live".to_string(), |err| err.to_string());
    println!(
        "  stopped: next() returned None at {} ms, all {} fetches accounted for; \
         the group's context: {context}",
        run.elapsed.as_millis(),
        run.spawned,
    );
}

/// "1 page", "2 pages".
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What a crawl saw.
#[derive(Default)]
struct Crawl {
    /// Pages fetched while the group was live; their links were followed.
    visited: usize,
    /// Fetches spawned, page 0 included.
    spawned: usize,
    /// Fetches whose closure the group never called: still queued for a
    /// slot when the group was cancelled.
    never_started: usize,
    /// Fetches that ended as [`Outcome::Cancelled`].
    cancelled: usize,
    /// Pages that came back after the group was cancelled.
    late_ok: usize,
    /// Errors other than the one that cancelled the group: fetches that
    /// noticed the cancel and returned.
    late_errors: usize,
    max_in_flight: usize,
    failure: Option<Failure>,
    context_err: Option<ContextError>,
    elapsed: Duration,
}

/// The first error, as `next()` handed it out.
struct Failure {
    error: FetchError,
    /// The cause the group recorded in its context when it cancelled itself.
    cause: Cause,
    at: Duration,
}

/// Crawls `server`'s web from page 0, at most `limit` fetches at a time.
async fn crawl(server: Server, limit: usize) -> Crawl {
    let start = Instant::now();
    let server = Arc::new(server);
    let gauge = Arc::new(Gauge::default());
    let mut group = TaskGroup::<Page, FetchError>::builder()
        .limit(limit)
        .name("crawl")
        .build();
    let mut report = Crawl::default();
    let mut seen = HashSet::from([0]);
    // Pages found but not yet fetched. They wait here, as page numbers,
    // rather than in the group as closures: the crawler feeds the group only
    // when `ready()` says it has room, so the group never holds more than
    // `limit` fetches, however large the web.
    let mut frontier = VecDeque::from([0]);

    // Outcomes come out of `next()` in completion order; links are spawned
    // into the group we are draining. `next()` returns `None` once every
    // fetch spawned has been handed out: with an empty frontier, the crawl
    // is over, whether it ran out of pages or was cancelled.
    loop {
        tokio::select! {
            biased;
            // Once the group is cancelled, anything spawned would never
            // start: stop feeding it.
            () = group.ready(), if !frontier.is_empty() && !group.context().is_cancelled() => {
                let page = frontier.pop_front().expect("the frontier is not empty");
                spawn_fetch(&mut group, &server, &gauge, page);
                report.spawned += 1;
            }
            next = group.next() => {
                let Some((_task, outcome)) = next else {
                    if frontier.is_empty() || group.context().is_cancelled() {
                        break;
                    }
                    continue;
                };
                match outcome {
                    Outcome::Ok(_) if group.context().is_cancelled() => report.late_ok += 1,
                    Outcome::Ok(page) => {
                        report.visited += 1;
                        frontier.extend(page.links.into_iter().filter(|&link| seen.insert(link)));
                    }
                    // The error that cancelled the group comes out of
                    // `next()` before anything the cancel caused (fetches
                    // that noticed it and returned errors of their own), and
                    // only once the group is cancelled: the cause it
                    // recorded names the task and the error.
                    Outcome::Err(error) if report.failure.is_none() => {
                        let cause = group
                            .context()
                            .cause()
                            .expect("a failed task cancels its group");
                        report.failure = Some(Failure {
                            error,
                            cause,
                            at: start.elapsed(),
                        });
                    }
                    Outcome::Err(_) => report.late_errors += 1,
                    Outcome::Cancelled => report.cancelled += 1,
                    Outcome::Panicked(payload) => panic::resume_unwind(payload),
                }
            }
        }
    }

    report.elapsed = start.elapsed();
    report.context_err = group.context().err();
    report.never_started = report.spawned - gauge.started.load(Ordering::Relaxed);
    report.max_in_flight = gauge.max.load(Ordering::Relaxed);
    report
}

/// Spawns the fetch of `page` into the crawl group.
fn spawn_fetch(
    group: &mut TaskGroup<Page, FetchError>,
    server: &Arc<Server>,
    gauge: &Arc<Gauge>,
    page: PageId,
) {
    let server = server.clone();
    let gauge = gauge.clone();
    // The group calls the closure when the fetch gets a slot; the future it
    // returns is dropped at an await point if the group is cancelled.
    group.spawn(move |ctx| {
        let in_flight = gauge.enter();
        async move {
            let page = fetch(&ctx, &server, page).await;
            drop(in_flight);
            page
        }
    });
}

/// A fetched page.
struct Page {
    links: Vec<PageId>,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("GET /page/{page}: 500 Internal Server Error")]
    Server { page: PageId },
    /// The fetch noticed its context end while waiting for the server.
    #[error("fetch interrupted: {0}")]
    Interrupted(#[from] ContextError),
}

/// Serves the generated web, slowly.
struct Server {
    web: Arc<Web>,
    poisoned: Option<PageId>,
}

/// "Fetches" `page`: waits as long as the server takes (or until `ctx`
/// ends), then returns its links, or fails for the poisoned page.
async fn fetch(ctx: &Context, server: &Server, page: PageId) -> Result<Page, FetchError> {
    ctx.sleep(latency(page)).await?;
    if server.poisoned == Some(page) {
        return Err(FetchError::Server { page });
    }
    Ok(Page {
        links: server.web.links[page as usize].clone(),
    })
}

/// How long the server takes to serve `page`: 1 to 4 ms, fixed per page.
fn latency(page: PageId) -> Duration {
    Duration::from_millis(1 + splitmix64(u64::from(page)) % 4)
}

/// Counts fetches in flight: now, at most, and in all.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
    started: AtomicUsize,
}

impl Gauge {
    /// Counts one more fetch in flight until the guard is dropped, which a
    /// cancelled fetch's guard is too.
    fn enter(self: &Arc<Self>) -> InFlight {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.max.fetch_max(now, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

struct InFlight(Arc<Gauge>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The generated web: `links[p]` are the pages page `p` links to.
struct Web {
    links: Vec<Vec<PageId>>,
}

impl Web {
    /// `pages` pages, each linking to 3 to 8 others; the same seed always
    /// gives the same web.
    fn generate(pages: PageId, seed: u64) -> Web {
        let mut rng = XorShift::new(seed);
        let links = (0..pages)
            .map(|_| {
                let count = 3 + rng.below(6);
                (0..count)
                    .map(|_| rng.below(u64::from(pages)) as PageId)
                    .collect()
            })
            .collect();
        Web { links }
    }

    fn link_count(&self) -> usize {
        self.links.iter().map(Vec::len).sum()
    }

    /// The pages reachable from `start`, in breadth-first order.
    fn breadth_first(&self, start: PageId) -> Vec<PageId> {
        let mut seen = HashSet::from([start]);
        let mut queue = VecDeque::from([start]);
        let mut order = Vec::new();
        while let Some(page) = queue.pop_front() {
            order.push(page);
            for &link in &self.links[page as usize] {
                if seen.insert(link) {
                    queue.push_back(link);
                }
            }
        }
        order
    }
}

/// Marsaglia's xorshift64: small, fast, deterministic.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        // xorshift's state must not be zero; spread small seeds out first.
        XorShift(splitmix64(seed).max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n`; the modulo bias is negligible for small `n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A one-shot integer hash (the splitmix64 finaliser).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Args {
    pages: PageId,
    seed: u64,
    limit: usize,
    poison: Option<PageId>,
}

impl Args {
    const USAGE: &str = "usage: crawl [--pages N] [--seed S] [--limit N] [--poison P]";

    fn parse() -> Result<Args, String> {
        let mut args = Args {
            pages: 2000,
            seed: 1,
            limit: 16,
            poison: None,
        };
        let mut rest = std::env::args().skip(1);
        while let Some(flag) = rest.next() {
            let mut number = || -> Result<u64, String> {
                let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
                value
                    .parse()
                    .map_err(|_| format!("{flag}: not a number: {value:?}"))
            };
            match flag.as_str() {
                "--pages" => {
                    args.pages = number()?
                        .try_into()
                        .map_err(|_| "--pages: too many pages".to_string())?;
                }
                "--seed" => args.seed = number()?,
                "--limit" => {
                    args.limit = number()?
                        .try_into()
                        .map_err(|_| "--limit: too large".to_string())?;
                }
                "--poison" => {
                    let page = number()?;
                    args.poison = Some(page.try_into().unwrap_or(PageId::MAX));
                }
                _ => return Err(format!("unknown option {flag:?}")),
            }
        }
        if args.pages == 0 {
            return Err("--pages must be at least 1".to_string());
        }
        if args.limit == 0 {
            return Err("--limit must be at least 1".to_string());
        }
        if let Some(page) = args.poison
            && page >= args.pages
        {
            return Err(format!(
                "--poison {page}: there are only {} pages",
                args.pages
            ));
        }
        Ok(args)
    }
}
