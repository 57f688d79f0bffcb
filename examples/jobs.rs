//! The story this crate exists for, in a browser: a job that processes a
//! large file, a user who clicks "Cancel", and work that stops at once and
//! lets go of the file.
//!
//! An axum server on 127.0.0.1 serves one HTML page (plain JS, no
//! framework). At start it generates a file of `--mb` MiB in a temp dir.
//! Every job hashes that file 1 MiB chunk by chunk on a blocking thread
//! (`spawn_blocking`), calling `ctx.check()?` between chunks — one atomic
//! load — while it holds an exclusive lock on the file
//! (`std::fs::File::lock`): a second job waits for the lock. Progress
//! streams to the page over Server-Sent Events. The page has three jobs:
//!
//! 1. **Tied to the page**: the job runs under its request's `Context`
//!    (taskgroup's `ContextLayer` and `DisconnectListener`). Closing the tab
//!    drops the event stream's connection, which cancels the context: the
//!    job stops and the lock is free.
//! 2. **In the background**: the job's context is a child of the server's
//!    root, and its `CancelHandle` is kept in the server's state by job id.
//!    The Cancel button cancels it, and so does the deadline from the "Time
//!    limit" field. The page shows "Stopped: context cancelled" (or "context
//!    deadline exceeded"), how many milliseconds passed from the click to the
//!    work stopping, and that the server took the file lock right after.
//! 3. **Without a context**, the bad example: the same loop, with nothing
//!    to check. Cancel answers, but the work keeps crunching and holding the
//!    lock until it is done, and the page says so.
//!
//! The API the page uses: `POST /jobs` (`?time_limit_ms=N` for a deadline),
//! `POST /jobs/no-context`, `GET /jobs/{id}` (JSON), `GET /jobs/{id}/events`
//! (SSE), `POST /jobs/{id}/cancel`, `GET /jobs` (the latest jobs) and
//! `GET /page-job` (SSE: starts a job tied to that request). Every answer
//! is JSON with a `message` a person can read: an unknown job is `404`, a
//! second Cancel is a no-op that says so, and more than `--max-jobs` jobs
//! at once get `503` ("busy") instead of a queue.
//!
//! ```text
//! cargo run --release --example jobs
//! cargo run --release --example jobs -- --port 8080 --mb 512 --chunk-delay-ms 5
//! ```
//!
//! Then open the printed address. Options: `--port N` (default 3000; 0
//! picks a free one), `--mb N` (default 256, at least 1) is the size of the
//! generated file, `--chunk-delay-ms N` (default 20) is a pause after each
//! chunk — the pace that keeps a job running long enough to click Cancel
//! (a real job is slow because the work is; here hashing 1 MiB takes well
//! under a millisecond), `--max-jobs N` (default 8) is how many jobs may
//! run or wait for the lock at once. Bad options exit with code 2, a port
//! in use with code 1, each with a message saying what is wrong. Ctrl-C
//! (or SIGTERM) stops every job that has a context, waits for the one
//! without, and removes the temp dir.
//!
//! `scripts/browser-check.sh` drives this page in headless Chromium
//! (tests/browser.rs); `cargo test --example jobs` runs the HTTP checks
//! below without a browser.

// This example needs Rust 1.89 for `File::lock`; the library itself needs
// only the `rust-version` in Cargo.toml.
#![allow(clippy::incompatible_msrv)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fs::{File, TryLockError};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use serde_json::{Value, json};
use taskgroup::http::{ConnectionContext, ContextLayer, DisconnectListener};
use taskgroup::{CancelHandle, Context, ContextError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// The job reads and hashes the file this much at a time, checking its
/// context in between.
const CHUNK: usize = 1 << 20;

/// How often a job waiting for the file lock tries it again. An OS file
/// lock has no wake-up to wait on, and a blocking `lock()` could not be
/// cancelled: the job's blocking thread tries, checks its context, and
/// sleeps this long (a thread sleep: it is not async code).
const LOCK_RETRY: Duration = Duration::from_millis(5);

/// `GET /jobs` lists at most this many jobs, the latest first; older ended
/// jobs are forgotten.
const KEEP_JOBS: usize = 50;

#[tokio::main]
async fn main() {
    let args = match Args::parse_from(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("jobs: {message}\n{}", Args::USAGE);
            std::process::exit(2);
        }
    };
    // Bind first: a port in use is reported before minutes of setup.
    let listener = match bind(args.port).await {
        Ok(listener) => listener,
        Err(message) => {
            eprintln!("jobs: {message}");
            std::process::exit(1);
        }
    };
    let addr = listener.local_addr().expect("local address");
    println!("jobs: listening on http://{addr}/");

    let dir = temp_dir().expect("create a temp dir");
    let path = dir.path().join("input.bin");
    let started = Instant::now();
    let generated = tokio::task::spawn_blocking({
        let path = path.clone();
        move || generate_file(&path, args.mb)
    })
    .await
    .expect("generate the file");
    if let Err(error) = generated {
        eprintln!("jobs: could not write {}: {error}", path.display());
        drop(dir); // `exit` runs no destructors
        std::process::exit(1);
    }
    println!(
        "jobs: generated {} ({} MiB) in {:.1?}",
        path.display(),
        args.mb,
        started.elapsed()
    );

    // The server's root: Ctrl-C (or SIGTERM) cancels it, and with it every
    // request and every background job.
    let (root, shutdown) = Context::background().with_cancel();
    let app = App::new(&root, path, &args);
    let listener = DisconnectListener::new(listener, &root);
    println!("jobs: ready: open http://{addr}/ in a browser (Ctrl-C stops)");
    let server = axum::serve(
        listener,
        router(app, &root).into_make_service_with_connect_info::<ConnectionContext>(),
    )
    .with_graceful_shutdown(root.done_owned());
    tokio::spawn(async move {
        let signal = stop_signal().await;
        println!("jobs: {signal}: stopping every job");
        shutdown.cancel();
    });
    if let Err(error) = server.await {
        eprintln!("jobs: server: {error}");
    }
    // `dir` (and the file) go when `main` returns; the runtime then waits
    // for blocking jobs still running — only a job without a context can be.
}

/// Resolves at Ctrl-C, or at SIGTERM on Unix (what `kill` sends); says
/// which. Either way `main` returns, and the temp dir is removed.
async fn stop_signal() -> &'static str {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => term.recv().await,
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<Option<()>>();
    tokio::select! {
        () = ctrl_c => "Ctrl-C",
        _ = term => "SIGTERM",
    }
}

/// Binds 127.0.0.1:`port`, or says clearly why not.
async fn bind(port: u16) -> Result<tokio::net::TcpListener, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| match error.kind() {
            io::ErrorKind::AddrInUse => format!(
                "port {port} is already in use on 127.0.0.1 (another server is listening \
                 there): stop it, or pick another port with --port"
            ),
            _ => format!("cannot listen on port {port} of 127.0.0.1: {error}"),
        })
}

/// The routes, with a request `Context` for every request.
fn router(app: Arc<App>, root: &Context) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/jobs", get(list_jobs).post(start_background))
        .route("/jobs/no-context", post(start_without_context))
        .route("/jobs/{id}", get(job_status))
        .route("/jobs/{id}/events", get(job_events))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/page-job", get(page_job))
        .with_state(app)
        // No `max_timeout`: a job tied to its page lives as long as the page.
        .layer(ContextLayer::new(root))
}

// ---------------------------------------------------------------------------
// State

/// The server's state: the file, and the jobs by id.
struct App {
    /// The server's root: background jobs are its children.
    root: Context,
    file: PathBuf,
    total_chunks: u64,
    chunk_delay: Duration,
    max_jobs: usize,
    /// One permit per job running or waiting for the lock.
    slots: Arc<Semaphore>,
    jobs: Mutex<BTreeMap<u64, Arc<Job>>>,
    next_id: AtomicU64,
    /// The id of the job holding the file lock, 0 for none (for messages;
    /// the lock itself is the file's).
    lock_holder: AtomicU64,
}

impl App {
    fn new(root: &Context, file: PathBuf, args: &Args) -> Arc<App> {
        Arc::new(App {
            root: root.clone(),
            file,
            total_chunks: args.mb,
            chunk_delay: Duration::from_millis(args.chunk_delay_ms),
            max_jobs: args.max_jobs,
            slots: Arc::new(Semaphore::new(args.max_jobs)),
            jobs: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            lock_holder: AtomicU64::new(0),
        })
    }

    fn job(&self, id: u64) -> Option<Arc<Job>> {
        self.jobs.lock().unwrap().get(&id).cloned()
    }

    /// A new job of `kind`, if a slot is free.
    fn new_job(
        &self,
        kind: Kind,
        cancel: Option<CancelHandle>,
        deadline: Option<Instant>,
    ) -> Result<(Arc<Job>, OwnedSemaphorePermit), Busy> {
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Busy(self.max_jobs))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let job = Arc::new(Job {
            id,
            kind,
            total_chunks: self.total_chunks,
            cancel: Mutex::new(cancel),
            cancel_asked: OnceLock::new(),
            deadline,
            status: watch::Sender::new(Status {
                state: JobState::Waiting { holder: 0 },
                chunks: 0,
                chunks_at_cancel: None,
            }),
        });
        let mut jobs = self.jobs.lock().unwrap();
        jobs.insert(id, job.clone());
        // Forget the oldest ended jobs.
        while jobs.len() > KEEP_JOBS {
            let Some(oldest) = jobs
                .iter()
                .find(|(_, job)| job.status.borrow().state.has_ended())
                .map(|(&id, _)| id)
            else {
                break;
            };
            jobs.remove(&oldest);
        }
        Ok((job, permit))
    }

    /// Starts `job` on a blocking thread, under `ctx` (`None`: the bad
    /// example). The permit is held until the work has stopped.
    fn run(self: &Arc<App>, job: Arc<Job>, ctx: Option<Context>, permit: OwnedSemaphorePermit) {
        let app = self.clone();
        // Note when the context ends (a click is noted before the cancel,
        // so this only counts for a page that went away).
        let noted = ctx.as_ref().map(|ctx| {
            let job = job.clone();
            ctx.after_cancel(move || job.note_cancel())
        });
        tokio::task::spawn_blocking(move || {
            let ended = crunch(&app, &job, ctx.as_ref());
            // The work has stopped and its file is closed: the lock is
            // released. Show that by taking it.
            let stopped_at = Instant::now();
            let lock = match File::open(&app.file).map(|file| file.try_lock()) {
                Ok(Ok(())) => LockAfter::Free,
                Ok(Err(TryLockError::WouldBlock)) => {
                    LockAfter::Held(app.lock_holder.load(Ordering::Relaxed))
                }
                Ok(Err(TryLockError::Error(error))) | Err(error) => {
                    LockAfter::Unknown(error.to_string())
                }
            };
            if let Some(noted) = noted {
                noted.stop();
            }
            let state = match ended {
                Ok(Ended::Finished { checksum }) => JobState::Finished {
                    checksum,
                    took: match job.status.borrow().state {
                        JobState::Running { since } => since.elapsed(),
                        _ => Duration::ZERO,
                    },
                    ended_at: stopped_at,
                    lock,
                },
                Ok(Ended::Stopped(error)) => {
                    // A page that went away is noted by `after_cancel`, on a
                    // task of its own: it may not have run yet. Then the
                    // work saw the cancel first, at `stopped_at`.
                    let _ = job.cancel_asked.set(stopped_at);
                    let ctx = ctx.as_ref().expect("only a context stops a job");
                    let cause = ctx.cause().map(|cause| cause.to_string());
                    // From the click (or the page going away), or from the
                    // deadline, to the work stopping.
                    let since = match error {
                        ContextError::DeadlineExceeded => job.deadline,
                        ContextError::Cancelled => job.cancel_asked.get().copied(),
                    };
                    JobState::Stopped {
                        error,
                        cause: cause.filter(|cause| *cause != error.to_string()),
                        stop_latency: since
                            .map(|since| stopped_at.saturating_duration_since(since)),
                        lock,
                    }
                }
                Err(error) => JobState::Failed(error.to_string()),
            };
            job.status.send_modify(|status| status.state = state);
            // The handle's context is over; dropping the handle now is a no-op.
            job.cancel.lock().unwrap().take();
            drop(permit);
        });
    }
}

/// No slot for another job: `--max-jobs` of them run or wait already.
struct Busy(usize);

impl IntoResponse for Busy {
    fn into_response(self) -> Response {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({
                "message": format!(
                    "Busy: {} jobs are already running or waiting for the file. \
                     Try again when one of them ends.",
                    self.0
                )
            }),
        )
    }
}

/// What kind of job, for the page and its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Under its request's context: stops when its page goes away.
    Page,
    /// Under a child of the root, with its `CancelHandle` in the state.
    Background,
    /// The bad example: no context at all.
    NoContext,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Page => "page",
            Kind::Background => "background",
            Kind::NoContext => "no-context",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::Page => "tied to its page",
            Kind::Background => "background",
            Kind::NoContext => "no context",
        }
    }
}

/// One job: what it is, how to cancel it, and its progress.
struct Job {
    id: u64,
    kind: Kind,
    /// The file's size in chunks.
    total_chunks: u64,
    /// A background job's handle, until the job ends.
    cancel: Mutex<Option<CancelHandle>>,
    /// When the Cancel click reached the server, or the page went away.
    cancel_asked: OnceLock<Instant>,
    /// When the time limit runs out.
    deadline: Option<Instant>,
    status: watch::Sender<Status>,
}

impl Job {
    fn note_cancel(&self) {
        let _ = self.cancel_asked.set(Instant::now());
    }
}

/// A job's progress, as the blocking thread publishes it.
#[derive(Debug, Clone)]
struct Status {
    state: JobState,
    chunks: u64,
    /// The chunk count when Cancel reached a job without a context.
    chunks_at_cancel: Option<u64>,
}

#[derive(Debug, Clone)]
enum JobState {
    /// Waiting for the file lock, held by job `holder` (0: about to get it).
    Waiting {
        holder: u64,
    },
    Running {
        since: Instant,
    },
    Finished {
        checksum: u64,
        took: Duration,
        ended_at: Instant,
        lock: LockAfter,
    },
    Stopped {
        error: ContextError,
        /// The cause, when it says more than `error`.
        cause: Option<String>,
        stop_latency: Option<Duration>,
        lock: LockAfter,
    },
    Failed(String),
}

impl JobState {
    fn has_ended(&self) -> bool {
        matches!(
            self,
            JobState::Finished { .. } | JobState::Stopped { .. } | JobState::Failed(_)
        )
    }
}

/// The file lock, tried by the server right after a job stopped.
#[derive(Debug, Clone)]
enum LockAfter {
    Free,
    Held(u64),
    Unknown(String),
}

impl LockAfter {
    fn describe(&self) -> String {
        match self {
            LockAfter::Free => {
                "The file lock is free again: the server took it right after.".to_string()
            }
            LockAfter::Held(holder) if *holder != 0 => {
                format!("The file lock is taken again, by job {holder}, which was waiting for it.")
            }
            LockAfter::Held(_) => "The file lock is still taken.".to_string(),
            LockAfter::Unknown(error) => format!("Could not try the file lock: {error}"),
        }
    }
}

// ---------------------------------------------------------------------------
// The work

/// How the work ended, when it did not fail.
enum Ended {
    Finished { checksum: u64 },
    Stopped(ContextError),
}

/// Why the chunk loop stopped early.
#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error(transparent)]
    Stopped(#[from] ContextError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Checks `ctx`; a job without one has nothing to check.
fn check(ctx: Option<&Context>) -> Result<(), ContextError> {
    ctx.map_or(Ok(()), Context::check)
}

/// The job: takes the file's lock (waiting while another job has it), then
/// hashes the file chunk by chunk until it is done or `ctx` is cancelled.
/// Runs on a blocking thread; the lock goes with the file, when this returns.
fn crunch(app: &App, job: &Job, ctx: Option<&Context>) -> io::Result<Ended> {
    let result = (|| -> Result<u64, JobError> {
        let mut file = File::open(&app.file)?;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    check(ctx)?;
                    let holder = app.lock_holder.load(Ordering::Relaxed);
                    job.status.send_if_modified(|status| {
                        let changed =
                            !matches!(status.state, JobState::Waiting { holder: h } if h == holder);
                        status.state = JobState::Waiting { holder };
                        changed
                    });
                    std::thread::sleep(LOCK_RETRY);
                }
                Err(TryLockError::Error(error)) => return Err(error.into()),
            }
        }
        app.lock_holder.store(job.id, Ordering::Relaxed);
        job.status.send_modify(|status| {
            status.state = JobState::Running {
                since: Instant::now(),
            }
        });
        let result = hash_chunks(app, job, ctx, &mut file);
        // Only our own id: the next holder may already have stored its own.
        let _ = app
            .lock_holder
            .compare_exchange(job.id, 0, Ordering::Relaxed, Ordering::Relaxed);
        result
        // `file` is closed here, and with it the lock released.
    })();
    match result {
        Ok(checksum) => Ok(Ended::Finished { checksum }),
        Err(JobError::Stopped(error)) => Ok(Ended::Stopped(error)),
        Err(JobError::Io(error)) => Err(error),
    }
}

/// The chunk loop: `ctx.check()?` before every chunk.
fn hash_chunks(
    app: &App,
    job: &Job,
    ctx: Option<&Context>,
    file: &mut File,
) -> Result<u64, JobError> {
    let mut buf = vec![0; CHUNK];
    let mut hash = Fnv1a64::new();
    loop {
        check(ctx)?;
        let len = read_chunk(file, &mut buf)?;
        if len == 0 {
            return Ok(hash.finish());
        }
        hash.write(&buf[..len]);
        job.status.send_modify(|status| status.chunks += 1);
        // The demo's pace (`--chunk-delay-ms`): stands for slow blocking
        // I/O, on this blocking thread; the context is checked before the
        // next chunk.
        std::thread::sleep(app.chunk_delay);
    }
}

/// Fills `buf` as far as the file allows; returns the number of bytes read,
/// less than `buf.len()` only at the end of the file.
fn read_chunk(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// FNV-1a over 64-bit words: fast even in a debug build.
struct Fnv1a64(u64);

impl Fnv1a64 {
    fn new() -> Fnv1a64 {
        Fnv1a64(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        let (words, rest) = bytes.as_chunks::<8>();
        for word in words {
            self.0 ^= u64::from_le_bytes(*word);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        for &byte in rest {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Writes `size_mb` MiB of pseudo-random bytes to `path`.
fn generate_file(path: &Path, size_mb: u64) -> io::Result<()> {
    let mut out = File::create(path)?;
    let mut buf = vec![0; CHUNK];
    // Marsaglia's xorshift64: fast, and plenty random for test data.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..size_mb {
        let (words, _) = buf.as_chunks_mut::<8>();
        for word in words {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *word = x.to_le_bytes();
        }
        out.write_all(&buf)?;
    }
    out.sync_all()
}

// ---------------------------------------------------------------------------
// Handlers

/// A JSON answer.
fn reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn no_such_job(id: u64) -> Response {
    reply(
        StatusCode::NOT_FOUND,
        json!({
            "message": format!(
                "There is no job {id} on this server: it never existed, or it ended long \
                 ago and was forgotten."
            )
        }),
    )
}

/// `GET /`: the page.
async fn page(State(app): State<Arc<App>>) -> Html<String> {
    Html(PAGE.replace("{MB}", &app.total_chunks.to_string()))
}

/// `POST /jobs[?time_limit_ms=N]`: a background job.
async fn start_background(State(app): State<Arc<App>>, RawQuery(query): RawQuery) -> Response {
    let time_limit = match time_limit(query.as_deref()) {
        Ok(limit) => limit,
        Err(message) => return reply(StatusCode::BAD_REQUEST, json!({ "message": message })),
    };
    // A child of the server's root, not of this request's context: the
    // job outlives the request. Its handle goes into the state.
    let (ctx, cancel) = match time_limit {
        Some(limit) => app.root.with_timeout(limit),
        None => app.root.with_cancel(),
    };
    let deadline = ctx.deadline().map(|deadline| deadline.into_std());
    let (job, permit) = match app.new_job(Kind::Background, Some(cancel), deadline) {
        Ok(job) => job,
        Err(busy) => return busy.into_response(),
    };
    let id = job.id;
    app.run(job, Some(ctx), permit);
    let limit = time_limit.map_or(String::new(), |limit| {
        format!(" with a time limit of {} ms", limit.as_millis())
    });
    reply(
        StatusCode::CREATED,
        json!({ "id": id, "message": format!("Started background job {id}{limit}.") }),
    )
}

/// The `time_limit_ms` of a query string, if any.
fn time_limit(query: Option<&str>) -> Result<Option<Duration>, String> {
    let mut limit = None;
    for pair in query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "time_limit_ms" => match value.parse::<u64>() {
                Ok(0) | Err(_) => {
                    return Err(format!(
                        "The time limit must be a whole number of milliseconds above 0, \
                         not {value:?}."
                    ));
                }
                Ok(ms) => limit = Some(Duration::from_millis(ms)),
            },
            _ => {
                return Err(format!(
                    "Unknown parameter {key:?}: only time_limit_ms is known."
                ));
            }
        }
    }
    Ok(limit)
}

/// `POST /jobs/no-context`: the bad example.
async fn start_without_context(State(app): State<Arc<App>>) -> Response {
    let (job, permit) = match app.new_job(Kind::NoContext, None, None) {
        Ok(job) => job,
        Err(busy) => return busy.into_response(),
    };
    let id = job.id;
    app.run(job, None, permit);
    reply(
        StatusCode::CREATED,
        json!({
            "id": id,
            "message": format!("Started job {id} without a context: nothing can stop it.")
        }),
    )
}

/// `GET /page-job`: a job under this request's context, and its progress
/// as the response. The job ends when the response does.
async fn page_job(State(app): State<Arc<App>>, ctx: Context) -> Response {
    let (job, permit) = match app.new_job(Kind::Page, None, None) {
        Ok(job) => job,
        Err(busy) => return busy.into_response(),
    };
    app.run(job.clone(), Some(ctx), permit);
    events(job).into_response()
}

/// `GET /jobs`: the latest jobs, newest first.
async fn list_jobs(State(app): State<Arc<App>>) -> Response {
    let jobs: Vec<Arc<Job>> = app.jobs.lock().unwrap().values().rev().cloned().collect();
    let jobs: Vec<Value> = jobs.iter().map(|job| snapshot(job)).collect();
    reply(StatusCode::OK, json!({ "jobs": jobs }))
}

/// `GET /jobs/{id}`: one job, as JSON.
async fn job_status(State(app): State<Arc<App>>, UrlPath(id): UrlPath<u64>) -> Response {
    match app.job(id) {
        Some(job) => reply(StatusCode::OK, snapshot(&job)),
        None => no_such_job(id),
    }
}

/// `GET /jobs/{id}/events`: a job's progress as Server-Sent Events.
async fn job_events(State(app): State<Arc<App>>, UrlPath(id): UrlPath<u64>) -> Response {
    match app.job(id) {
        Some(job) => events(job).into_response(),
        None => no_such_job(id),
    }
}

/// `POST /jobs/{id}/cancel`.
async fn cancel_job(State(app): State<Arc<App>>, UrlPath(id): UrlPath<u64>) -> Response {
    let Some(job) = app.job(id) else {
        return no_such_job(id);
    };
    let (message, cancelled) = match job.kind {
        Kind::NoContext => {
            let first = job.cancel_asked.get().is_none();
            job.note_cancel();
            job.status.send_modify(|status| {
                status.chunks_at_cancel.get_or_insert(status.chunks);
            });
            let again = if first { "" } else { " (again)" };
            let message = if job.status.borrow().state.has_ended() {
                format!("Job {id} has already ended; Cancel{again} changes nothing.")
            } else {
                format!(
                    "Cancel{again} sent, but job {id} was started without a context: nothing \
                     tells its work to stop. It keeps running and keeps the file locked."
                )
            };
            (message, false)
        }
        Kind::Page => (
            format!(
                "Job {id} is tied to its page: close that tab (or press Disconnect there) \
                 to stop it."
            ),
            false,
        ),
        Kind::Background => {
            let guard = job.cancel.lock().unwrap();
            match guard.as_ref() {
                Some(cancel) if !cancel.is_cancelled() => {
                    // Note the click first: the stop latency counts from here.
                    job.note_cancel();
                    cancel.cancel();
                    (format!("Cancelling job {id}."), true)
                }
                // Cancelled (or out of time) and still stopping, or ended.
                _ => {
                    let message = match &job.status.borrow().state {
                        JobState::Stopped { error, .. } => format!(
                            "Job {id} has already stopped ({error}): cancelling it again                              does nothing."
                        ),
                        JobState::Finished { .. } | JobState::Failed(_) => {
                            format!("Job {id} has already ended: there is nothing to cancel.")
                        }
                        _ => format!(
                            "Job {id} was already cancelled and is stopping: cancelling it                              again does nothing."
                        ),
                    };
                    (message, false)
                }
            }
        }
    };
    reply(
        StatusCode::OK,
        json!({ "id": id, "cancelled": cancelled, "message": message }),
    )
}

/// A job's status as the page reads it: the numbers, and a sentence.
fn snapshot(job: &Job) -> Value {
    let status = job.status.borrow().clone();
    let total = job.total_chunks;
    let chunks = status.chunks;
    let mut value = json!({
        "id": job.id,
        "kind": job.kind.name(),
        "chunks": chunks,
        "total": total,
    });
    let (state, text) = match &status.state {
        JobState::Waiting { holder: 0 } => ("waiting", "Waiting for the file lock.".to_string()),
        JobState::Waiting { holder } => (
            "waiting",
            format!("Waiting for the file lock: job {holder} holds it."),
        ),
        JobState::Running { .. } => match status.chunks_at_cancel {
            Some(at_cancel) => (
                "running",
                format!(
                    "Still running after Cancel: {} more chunks since you clicked (chunk \
                     {chunks} of {total}). This job has no context, so nothing tells it to \
                     stop, and it still holds the file lock.",
                    chunks - at_cancel
                ),
            ),
            None => (
                "running",
                format!(
                    "Processing the file: chunk {chunks} of {total} ({}%), holding its lock.",
                    chunks * 100 / total.max(1)
                ),
            ),
        },
        JobState::Finished {
            checksum,
            took,
            ended_at,
            lock,
        } => {
            let text = match (job.kind, job.cancel_asked.get()) {
                (Kind::NoContext, Some(asked)) => format!(
                    "Finished anyway, {} ms after you clicked Cancel: Cancel never reached \
                     the work. All {total} chunks, checksum {checksum:016x}. {}",
                    ended_at.saturating_duration_since(*asked).as_millis(),
                    lock.describe()
                ),
                _ => format!(
                    "Finished: all {total} chunks in {:.1} s, checksum {checksum:016x}. {}",
                    took.as_secs_f64(),
                    lock.describe()
                ),
            };
            value["lock"] = json!(lock.describe());
            ("finished", text)
        }
        JobState::Stopped {
            error,
            cause,
            stop_latency,
            lock,
        } => {
            let why = cause
                .as_ref()
                .map_or(String::new(), |cause| format!(" ({cause})"));
            let text = format!(
                "Stopped: {error}{why}, after chunk {chunks} of {total}. {}",
                lock.describe()
            );
            value["error"] = json!(error.to_string());
            value["lock"] = json!(lock.describe());
            value["lock_free"] = json!(matches!(lock, LockAfter::Free));
            if let Some(latency) = stop_latency {
                value["stop_ms"] = json!(latency.as_secs_f64() * 1e3);
            }
            ("stopped", text)
        }
        JobState::Failed(error) => ("failed", format!("Failed: {error}")),
    };
    value["state"] = json!(state);
    value["text"] = json!(text);
    value["describe"] = json!(job.kind.describe());
    if let Some(at_cancel) = status.chunks_at_cancel {
        value["chunks_since_cancel"] = json!(chunks - at_cancel);
    }
    value
}

/// A job's snapshots as Server-Sent Events, one per change, until it ends.
fn events(job: Arc<Job>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = job.status.subscribe();
    let stream = futures::stream::unfold(Some((rx, true)), move |state| {
        let job = Arc::clone(&job);
        async move {
            let (mut rx, first) = state?;
            if !first {
                // The sender lives in `job`, which this stream holds.
                rx.changed().await.ok()?;
            }
            let ended = rx.borrow_and_update().state.has_ended();
            let data = snapshot(&job).to_string();
            let next = if ended { None } else { Some((rx, false)) };
            Some((Ok(Event::default().data(data)), next))
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

// ---------------------------------------------------------------------------
// Setup

/// A fresh directory under the system temp dir, removed with its contents
/// when dropped.
fn temp_dir() -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix("taskgroup-jobs-").tempdir()
}

/// Command-line options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Args {
    port: u16,
    mb: u64,
    chunk_delay_ms: u64,
    max_jobs: usize,
}

impl Args {
    const USAGE: &str = "usage: jobs [--port N] [--mb N] [--chunk-delay-ms N] [--max-jobs N]";

    fn parse_from(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
        let mut parsed = Args {
            port: 3000,
            mb: 256,
            chunk_delay_ms: 20,
            max_jobs: 8,
        };
        let mut rest = args.into_iter();
        while let Some(flag) = rest.next() {
            let mut number = || -> Result<u64, String> {
                let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
                value
                    .parse()
                    .map_err(|_| format!("{flag}: not a number: {value:?}"))
            };
            match flag.as_str() {
                "--port" => {
                    let port = number()?;
                    parsed.port = u16::try_from(port)
                        .map_err(|_| format!("--port: {port} is not a port (0 to 65535)"))?;
                }
                "--mb" => parsed.mb = number()?,
                "--chunk-delay-ms" => parsed.chunk_delay_ms = number()?,
                "--max-jobs" => {
                    parsed.max_jobs = usize::try_from(number()?).unwrap_or(usize::MAX);
                }
                _ => return Err(format!("unknown option {flag:?}")),
            }
        }
        if parsed.mb == 0 {
            return Err("--mb must be at least 1 (the file's size in MiB), not 0".to_string());
        }
        if parsed.max_jobs == 0 {
            return Err("--max-jobs must be at least 1".to_string());
        }
        Ok(parsed)
    }
}

// ---------------------------------------------------------------------------
// The page

const PAGE: &str = include_str!("jobs.html");

// ---------------------------------------------------------------------------
// The HTTP checks, without a browser: `cargo test --example jobs`.

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;

    /// A server's router over a small file, and what must outlive it.
    struct Server {
        router: Router,
        _root: CancelHandle,
        _dir: tempfile::TempDir,
    }

    impl Server {
        /// `mb` MiB at `chunk_delay_ms` a chunk, `max_jobs` at once.
        fn start(mb: u64, chunk_delay_ms: u64, max_jobs: usize) -> Server {
            let dir = temp_dir().unwrap();
            let path = dir.path().join("input.bin");
            generate_file(&path, mb).unwrap();
            let args = Args {
                port: 0,
                mb,
                chunk_delay_ms,
                max_jobs,
            };
            let (root, cancel) = Context::background().with_cancel();
            let router = router(App::new(&root, path, &args), &root);
            Server {
                router,
                _root: cancel,
                _dir: dir,
            }
        }

        async fn call(&self, method: Method, uri: &str) -> (StatusCode, Value) {
            let request = Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap();
            let response = self.router.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            let value = serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            (status, value)
        }

        async fn start_job(&self, uri: &str) -> u64 {
            let (status, body) = self.call(Method::POST, uri).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            body["id"].as_u64().unwrap()
        }

        /// Polls job `id` until `done` holds of it; panics after 10 s.
        async fn wait_for(&self, id: u64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
            let start = Instant::now();
            loop {
                let (status, job) = self.call(Method::GET, &format!("/jobs/{id}")).await;
                assert_eq!(status, StatusCode::OK, "{job}");
                if done(&job) {
                    return job;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "job {id}: still not {what} after 10 s: {job}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    fn state_is(state: &'static str) -> impl Fn(&Value) -> bool {
        move |job| job["state"] == state
    }

    fn args(line: &str) -> Result<Args, String> {
        Args::parse_from(line.split_whitespace().map(str::to_string))
    }

    #[test]
    fn bad_options_say_what_is_wrong() {
        assert_eq!(args("").unwrap().port, 3000);
        assert_eq!(args("--mb 12 --port 0").unwrap().mb, 12);
        let zero = args("--mb 0").unwrap_err();
        assert!(zero.contains("--mb must be at least 1"), "{zero}");
        let word = args("--mb lots").unwrap_err();
        assert_eq!(word, "--mb: not a number: \"lots\"");
        let missing = args("--mb").unwrap_err();
        assert_eq!(missing, "--mb needs a value");
        let port = args("--port 70000").unwrap_err();
        assert!(port.contains("70000 is not a port"), "{port}");
        assert!(args("--max-jobs 0").unwrap_err().contains("--max-jobs"));
        assert!(args("--verbose").unwrap_err().contains("unknown option"));
    }

    #[tokio::test]
    async fn a_port_in_use_is_named() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = taken.local_addr().unwrap().port();
        let message = bind(port).await.unwrap_err();
        assert!(
            message.contains(&format!("port {port} is already in use")),
            "{message}"
        );
    }

    #[tokio::test]
    async fn the_page_has_its_buttons() {
        let server = Server::start(1, 0, 1);
        let (status, page) = server.call(Method::GET, "/").await;
        assert_eq!(status, StatusCode::OK);
        let page = page.as_str().unwrap();
        for text in ["Process file", "Cancel", "Time limit", "without a context"] {
            assert!(page.contains(text), "the page lacks {text:?}");
        }
    }

    #[tokio::test]
    async fn an_unknown_job_is_404_with_a_message() {
        let server = Server::start(1, 0, 1);
        for (method, uri) in [
            (Method::GET, "/jobs/999"),
            (Method::GET, "/jobs/999/events"),
            (Method::POST, "/jobs/999/cancel"),
        ] {
            let (status, body) = server.call(method, uri).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            let message = body["message"].as_str().unwrap();
            assert!(message.contains("There is no job 999"), "{uri}: {message}");
        }
    }

    #[tokio::test]
    async fn cancel_stops_the_job_frees_the_lock_and_a_second_cancel_is_a_no_op() {
        let server = Server::start(64, 20, 2);
        let id = server.start_job("/jobs").await;
        server.wait_for(id, "running", state_is("running")).await;

        let (status, first) = server
            .call(Method::POST, &format!("/jobs/{id}/cancel"))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(first["cancelled"], true, "{first}");
        let (status, second) = server
            .call(Method::POST, &format!("/jobs/{id}/cancel"))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(second["cancelled"], false, "{second}");
        let message = second["message"].as_str().unwrap();
        assert!(message.contains("does nothing"), "{message}");

        let job = server.wait_for(id, "stopped", state_is("stopped")).await;
        assert_eq!(job["error"], "context cancelled");
        assert_eq!(job["lock_free"], true, "{job}");
        assert!(job["chunks"].as_u64().unwrap() < 64, "{job}");
        assert!(
            job["text"]
                .as_str()
                .unwrap()
                .starts_with("Stopped: context cancelled")
        );
        // The stop is measured from the click reaching the server.
        assert!(job["stop_ms"].as_f64().unwrap() < 1000.0, "{job}");

        // And once it has stopped, Cancel still says it does nothing.
        let (_, third) = server
            .call(Method::POST, &format!("/jobs/{id}/cancel"))
            .await;
        assert_eq!(third["cancelled"], false);
        assert!(
            third["message"]
                .as_str()
                .unwrap()
                .contains("already stopped")
        );
    }

    #[tokio::test]
    async fn the_time_limit_ends_a_job_with_deadline_exceeded() {
        let server = Server::start(64, 20, 2);
        let id = server.start_job("/jobs?time_limit_ms=100").await;
        let job = server.wait_for(id, "stopped", state_is("stopped")).await;
        assert_eq!(job["error"], "context deadline exceeded");
        assert_eq!(job["lock_free"], true, "{job}");
    }

    #[tokio::test]
    async fn a_bad_time_limit_is_400() {
        let server = Server::start(1, 0, 1);
        for query in [
            "time_limit_ms=0",
            "time_limit_ms=soon",
            "time_limit_ms=",
            "limit=5",
        ] {
            let (status, body) = server.call(Method::POST, &format!("/jobs?{query}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
            assert!(body["message"].is_string(), "{query}: {body}");
        }
    }

    #[tokio::test]
    async fn a_job_without_a_context_runs_on_after_cancel() {
        let server = Server::start(16, 10, 2);
        let id = server.start_job("/jobs/no-context").await;
        server.wait_for(id, "running", state_is("running")).await;
        let (status, answer) = server
            .call(Method::POST, &format!("/jobs/{id}/cancel"))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["cancelled"], false);
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains("without a context"), "{message}");
        // It keeps going after the cancel...
        let job = server
            .wait_for(id, "two chunks on", |job| {
                job["state"] == "running" && job["chunks_since_cancel"].as_u64() >= Some(2)
            })
            .await;
        assert!(
            job["text"]
                .as_str()
                .unwrap()
                .starts_with("Still running after Cancel")
        );
        // ...to the end.
        let job = server.wait_for(id, "finished", state_is("finished")).await;
        assert_eq!(job["chunks"], 16);
        assert!(job["text"].as_str().unwrap().starts_with("Finished anyway"));
    }

    #[tokio::test]
    async fn a_hundred_jobs_at_once_get_a_clear_busy() {
        let server = Server::start(64, 20, 3);
        let calls = (0..100).map(|_| server.call(Method::POST, "/jobs"));
        let answers = futures::future::join_all(calls).await;
        let started: Vec<u64> = answers
            .iter()
            .filter(|(status, _)| *status == StatusCode::CREATED)
            .map(|(_, body)| body["id"].as_u64().unwrap())
            .collect();
        assert_eq!(started.len(), 3, "{answers:?}");
        for (status, body) in answers.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
            assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE);
            let message = body["message"].as_str().unwrap();
            assert!(message.starts_with("Busy: 3 jobs"), "{message}");
        }
        // One holds the file lock; the other two wait for it.
        let start = Instant::now();
        loop {
            let (_, list) = server.call(Method::GET, "/jobs").await;
            let jobs = list["jobs"].as_array().unwrap();
            let waiting: Vec<&Value> = jobs
                .iter()
                .filter(|job| job["state"] == "waiting")
                .collect();
            if waiting.len() == 2 && jobs.iter().any(|job| job["state"] == "running") {
                let text = waiting[0]["text"].as_str().unwrap();
                assert!(text.starts_with("Waiting for the file lock"), "{text}");
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "{list}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for &id in &started {
            server
                .call(Method::POST, &format!("/jobs/{id}/cancel"))
                .await;
        }
        for &id in &started {
            server.wait_for(id, "stopped", state_is("stopped")).await;
        }
        // The slots are free again.
        let id = server.start_job("/jobs").await;
        server
            .call(Method::POST, &format!("/jobs/{id}/cancel"))
            .await;
        server.wait_for(id, "stopped", state_is("stopped")).await;
    }
}
