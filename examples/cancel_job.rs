//! Cancelling a long-running blocking job: the classic `Context` story.
//!
//! A background job checksums a large file on a blocking thread
//! ([`tokio::task::spawn_blocking`]). While it runs it holds a lock on the
//! file (a lock file, created with `create_new` and removed when the job's
//! guard is dropped), and between 1 MiB chunks it calls `ctx.check()?`: one
//! atomic load, cheap enough for the hot loop.
//!
//! Then the user "clicks cancel": a timer fires (or Ctrl-C is pressed,
//! whichever comes first), and the UI calls
//! `cancel.cancel_with(UserCancelled)`. The job notices at its next chunk,
//! returns how far it got together with the cause, and its guard releases
//! the lock on the way out, so the lock can be taken again at once. An
//! `after_cancel` callback logs the moment the cancel was requested.
//!
//! If the job finishes before anyone clicks, it reports the checksum instead.
//!
//! ```text
//! cargo run --release --example cancel_job
//! cargo run --release --example cancel_job -- --size-mb 16 --cancel-after-ms 100000
//! ```
//!
//! Options: `--size-mb N` (default 256) is the size of the generated file;
//! `--cancel-after-ms N` (default 200) is when the simulated click comes,
//! counted from the start of the job.

use std::error::Error;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use taskgroup::{Cause, Context, ContextError};
use tokio::task::JoinHandle;

/// The job reads and checksums the file this much at a time, checking its
/// context in between.
const CHUNK: usize = 1 << 20;

/// The job reports its progress this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(50);

/// The cause the UI gives when the user cancels the job.
#[derive(Debug, thiserror::Error)]
#[error("user clicked cancel")]
struct UserCancelled;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = match Args::parse() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}\n{}", Args::USAGE);
            std::process::exit(2);
        }
    };

    // Listen for Ctrl-C from the start: it then never kills the process
    // (which would leave the temp dir behind), and counts as a click once
    // the job runs.
    let ctrl_c = tokio::spawn(tokio::signal::ctrl_c());

    let dir = temp_dir()?;
    let input = dir.path().join("input.bin");
    let lock = dir.path().join("input.bin.lock");

    let started = Instant::now();
    let generated = tokio::task::spawn_blocking({
        let input = input.clone();
        move || generate_file(&input, args.size_mb)
    })
    .await??;
    println!(
        "generated {} ({} MiB) in {:.1?}",
        input.display(),
        generated / CHUNK as u64,
        started.elapsed()
    );

    // The job's context, and the handle the UI keeps to cancel it.
    let (ctx, cancel) = Context::background().with_cancel();

    // Log the moment the cancel is requested. The callback takes no
    // arguments, so it reads the cause from its own clone of the context.
    let on_cancel = ctx.after_cancel({
        let ctx = ctx.clone();
        move || {
            let cause = ctx.cause().expect("cancelled contexts have a cause");
            println!("[ctx] cancel requested ({cause})");
        }
    });

    let job_started = Instant::now();
    let mut job = tokio::task::spawn_blocking({
        let ctx = ctx.clone();
        let (input, lock) = (input.clone(), lock.clone());
        move || checksum_job(&ctx, &input, &lock)
    });

    // Wait for the job, or for the user to click cancel first.
    let (report, clicked) = tokio::select! {
        report = &mut job => (report??, None),
        how = user_clicks_cancel(args.cancel_after, ctrl_c) => {
            let clicked = Instant::now();
            println!(
                "[ui] cancel clicked ({how}) after {:.1?}",
                job_started.elapsed()
            );
            cancel.cancel_with(UserCancelled);
            (job.await??, Some(clicked))
        }
    };
    let stopped_at = Instant::now();
    let Progress {
        bytes,
        chunks,
        total_chunks,
    } = report.progress;

    match report.outcome {
        Outcome::Completed { checksum } => {
            // Nobody will cancel now: unregister the log line, so that
            // dropping `cancel` at the end of `main` does not print it.
            on_cancel.stop();
            let elapsed = stopped_at - job_started;
            println!(
                "completed all {chunks} chunks ({} MiB) in {elapsed:.1?}: FNV-1a checksum {checksum:016x}",
                bytes / CHUNK as u64,
            );
        }
        Outcome::Cancelled { cause } => {
            let clicked = clicked.expect("only the click cancels the job");
            println!(
                "cancelled after {chunks} of {total_chunks} chunks (cause: {cause}) \
                 in {:.1?} after the click",
                stopped_at - clicked
            );
            // The cause is the very error given to `cancel_with`.
            assert!(cause.is::<UserCancelled>());
        }
    }

    // The job dropped its lock guard on the way out: the lock is free again.
    let relock = LockFile::acquire(&lock)?;
    println!("[ui] took the lock again right after: {}", lock.display());
    drop(relock);

    Ok(())
}

/// How far the job got.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    bytes: u64,
    chunks: u64,
    total_chunks: u64,
}

/// How the job ended.
#[derive(Debug)]
enum Outcome {
    Completed { checksum: u64 },
    Cancelled { cause: Cause },
}

/// What the job hands back: its progress, and how it ended.
#[derive(Debug)]
struct JobReport {
    progress: Progress,
    outcome: Outcome,
}

/// Why the chunk loop stopped early.
#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error(transparent)]
    Stopped(#[from] ContextError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The background job: takes the lock, then checksums `input` chunk by
/// chunk until it is done or `ctx` is cancelled. Runs on a blocking thread.
fn checksum_job(ctx: &Context, input: &Path, lock: &Path) -> io::Result<JobReport> {
    let _lock = LockFile::acquire(lock)?;
    println!("[job] took the lock {}", lock.display());

    let mut file = File::open(input)?;
    let mut progress = Progress {
        total_chunks: file.metadata()?.len().div_ceil(CHUNK as u64),
        ..Progress::default()
    };
    let outcome = match checksum_chunks(ctx, &mut file, &mut progress) {
        Ok(checksum) => Outcome::Completed { checksum },
        Err(JobError::Stopped(error)) => {
            // `check()` gives only the kind of error; the cause (who
            // cancelled, and why) is on the context.
            let cause = ctx.cause().unwrap_or_else(|| error.into());
            println!("[job] stopped after chunk {}: {error}", progress.chunks);
            Outcome::Cancelled { cause }
        }
        Err(JobError::Io(error)) => return Err(error),
    };
    // `_lock` is dropped as this returns: the lock file is gone before the
    // caller sees the report.
    Ok(JobReport { progress, outcome })
}

/// The chunk loop, with `?` for both cancellation and I/O errors.
/// `progress` is updated in place, so that it survives an early return.
fn checksum_chunks(
    ctx: &Context,
    file: &mut File,
    progress: &mut Progress,
) -> Result<u64, JobError> {
    let mut buf = vec![0; CHUNK];
    let mut hash = Fnv1a::new();
    let mut last_report = Instant::now();
    loop {
        ctx.check()?;
        let len = read_chunk(file, &mut buf)?;
        if len == 0 {
            return Ok(hash.finish());
        }
        hash.write(&buf[..len]);
        progress.bytes += len as u64;
        progress.chunks += 1;
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            println!(
                "[job] {} of {} chunks",
                progress.chunks, progress.total_chunks
            );
        }
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

/// Resolves when the user "clicks cancel": after `after`, or at Ctrl-C,
/// whichever comes first. Returns what happened, for the log.
async fn user_clicks_cancel(after: Duration, ctrl_c: JoinHandle<io::Result<()>>) -> &'static str {
    let ctrl_c = async {
        if !matches!(ctrl_c.await, Ok(Ok(()))) {
            // No signal handling here: only the timer can click.
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = tokio::time::sleep(after) => "timer",
        () = ctrl_c => "Ctrl-C",
    }
}

/// A lock held by the existence of a file: taking it fails while another
/// holder has it, and dropping the guard releases it.
#[derive(Debug)]
struct LockFile {
    path: PathBuf,
}

impl LockFile {
    fn acquire(path: &Path) -> io::Result<LockFile> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|error| {
                io::Error::new(error.kind(), format!("lock {}: {error}", path.display()))
            })?;
        Ok(LockFile {
            path: path.to_owned(),
        })
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        match fs::remove_file(&self.path) {
            Ok(()) => println!("[lock] released {}", self.path.display()),
            Err(error) => eprintln!("[lock] could not release {}: {error}", self.path.display()),
        }
    }
}

/// Writes `size_mb` MiB of pseudo-random bytes to `path`; returns the size.
fn generate_file(path: &Path, size_mb: u64) -> io::Result<u64> {
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
    Ok(size_mb * CHUNK as u64)
}

/// 64-bit FNV-1a.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A fresh directory under the system temp dir, removed with its contents
/// when dropped.
fn temp_dir() -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("taskgroup-cancel-job-")
        .tempdir()
}

/// Command-line options.
#[derive(Debug, Clone, Copy)]
struct Args {
    size_mb: u64,
    cancel_after: Duration,
}

impl Args {
    const USAGE: &str = "usage: cancel_job [--size-mb N] [--cancel-after-ms N]";

    fn parse() -> Result<Args, String> {
        let mut args = Args {
            size_mb: 256,
            cancel_after: Duration::from_millis(200),
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
                "--size-mb" => args.size_mb = number()?,
                "--cancel-after-ms" => args.cancel_after = Duration::from_millis(number()?),
                _ => return Err(format!("unknown option {flag:?}")),
            }
        }
        Ok(args)
    }
}
