//! The jobs example's page in a real browser: headless Chromium, driven
//! over WebDriver (chromedriver) with fantoccini.
//!
//! It needs a running `jobs` example and a chromedriver, so it runs only
//! when `TASKGROUP_BROWSER=1`; `scripts/browser-check.sh` installs
//! Chromium if missing, starts both, sets the variables below and runs
//! `cargo test --test browser`. Without `TASKGROUP_BROWSER=1` (a plain
//! `cargo test` on a machine without a browser) it says so and passes.
//!
//! - `TASKGROUP_JOBS_URL`: the example's address, `http://127.0.0.1:PORT`.
//! - `TASKGROUP_WEBDRIVER`: chromedriver's, `http://127.0.0.1:PORT`.
//! - `TASKGROUP_CHROME_PROFILE`: a fresh, empty directory for Chromium's
//!   profile.
//! - `TASKGROUP_BROWSER_OUT`: where the screenshots go (default
//!   `target/browser`).
//! - `TASKGROUP_CANCEL_RUNS`: how many times to measure Cancel (default 5).
//!
//! The checks, each through the page as a person would use it: Cancel
//! stops a background job within 200 ms, measured by the page from the
//! click to the news that the work stopped, and the server takes the file
//! lock right after; closing the tab stops the job tied to it; the time
//! limit ends a job with "deadline exceeded"; a job without a context
//! keeps running after Cancel, and the page says so. The last line is
//! `N passed, M failed`; any failure exits non-zero.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

/// The most a Cancel may take, click to the page hearing the work stopped.
const CANCEL_BUDGET_MS: f64 = 200.0;

/// How long one check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

type Check = Result<(), String>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    if std::env::var("TASKGROUP_BROWSER").as_deref() != Ok("1") {
        println!(
            "browser check skipped: it needs Chromium, chromedriver and the jobs example \
             running; scripts/browser-check.sh sets TASKGROUP_BROWSER=1 and runs it"
        );
        return ExitCode::SUCCESS;
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("browser check: {message}");
            println!("0 passed, 1 failed");
            return ExitCode::FAILURE;
        }
    };
    let browser = match connect(&config).await {
        Ok(browser) => browser,
        Err(message) => {
            eprintln!("browser check: {message}");
            println!("0 passed, 1 failed");
            return ExitCode::FAILURE;
        }
    };

    let mut report = Report::default();
    report
        .check(
            "the page loads and says what it does",
            page_loads(&browser, &config),
        )
        .await;
    let mut latencies = Vec::new();
    for run in 1..=config.cancel_runs {
        let name = format!("Cancel stops the background job within 200 ms, lock freed (run {run})");
        let screenshot = (run == 1).then(|| config.out.join("after-cancel.png"));
        let check = cancel_stops_the_job(&browser, &config, screenshot, &mut latencies);
        report.check(&name, check).await;
    }
    report
        .check(
            "closing the tab stops the job tied to it, lock freed",
            closing_the_tab_stops_its_job(&browser, &config),
        )
        .await;
    report
        .check(
            "the time limit ends a job with \"deadline exceeded\"",
            time_limit_ends_the_job(&browser, &config),
        )
        .await;
    report
        .check(
            "the job without a context keeps running after Cancel, and the page says so",
            no_context_keeps_running(&browser, &config),
        )
        .await;
    if let Err(error) = browser.close().await {
        eprintln!("closing the browser session: {error}");
    }

    if !latencies.is_empty() {
        latencies.sort_by(f64::total_cmp);
        let median = latencies[latencies.len() / 2];
        println!(
            "click to stop, as the page measured it, over {} runs: min {:.0} ms, median {:.0} ms, \
             max {:.0} ms ({})",
            latencies.len(),
            latencies[0],
            median,
            latencies[latencies.len() - 1],
            latencies
                .iter()
                .map(|ms| format!("{ms:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!("{} passed, {} failed", report.passed, report.failed);
    if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

struct Config {
    jobs_url: String,
    webdriver: String,
    profile: String,
    out: PathBuf,
    cancel_runs: u32,
}

impl Config {
    fn from_env() -> Result<Config, String> {
        let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
        let out = std::env::var("TASKGROUP_BROWSER_OUT").map_or_else(
            |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser"),
            PathBuf::from,
        );
        std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        let cancel_runs = match std::env::var("TASKGROUP_CANCEL_RUNS") {
            Ok(runs) => runs
                .parse()
                .map_err(|_| format!("TASKGROUP_CANCEL_RUNS: not a number: {runs:?}"))?,
            Err(_) => 5,
        };
        Ok(Config {
            jobs_url: var("TASKGROUP_JOBS_URL")?,
            webdriver: var("TASKGROUP_WEBDRIVER")?,
            profile: var("TASKGROUP_CHROME_PROFILE")?,
            out,
            cancel_runs,
        })
    }
}

/// A WebDriver session with headless Chromium, with the flags this closed
/// network needs (no background connections, no QUIC) and a fresh profile.
async fn connect(config: &Config) -> Result<Client, String> {
    let capabilities = json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=900,1200",
                format!("--user-data-dir={}", config.profile),
            ],
        }
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!("an object")
    };
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&config.webdriver)
        .await
        .map_err(|error| format!("no WebDriver session at {}: {error}", config.webdriver))
}

#[derive(Default)]
struct Report {
    passed: u32,
    failed: u32,
}

impl Report {
    async fn check(&mut self, name: &str, check: impl Future<Output = Check>) {
        let start = Instant::now();
        let result = match tokio::time::timeout(CHECK_TIMEOUT, check).await {
            Ok(result) => result,
            Err(_) => Err(format!("no result after {CHECK_TIMEOUT:?}")),
        };
        let took = start.elapsed();
        match result {
            Ok(()) => {
                self.passed += 1;
                println!("ok      {name} ({:.1} s)", took.as_secs_f64());
            }
            Err(why) => {
                self.failed += 1;
                println!("FAILED  {name} ({:.1} s): {why}", took.as_secs_f64());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Page helpers

fn failed(what: &str) -> impl FnOnce(fantoccini::error::CmdError) -> String + '_ {
    move |error| format!("{what}: {error}")
}

async fn click(browser: &Client, id: &str) -> Check {
    let element = browser.find(Locator::Id(id)).await.map_err(failed(id))?;
    element.click().await.map_err(failed(id))
}

async fn text(browser: &Client, id: &str) -> Result<String, String> {
    let element = browser.find(Locator::Id(id)).await.map_err(failed(id))?;
    element.text().await.map_err(failed(id))
}

async fn attr(browser: &Client, id: &str, name: &str) -> Result<Option<String>, String> {
    let element = browser.find(Locator::Id(id)).await.map_err(failed(id))?;
    element.attr(name).await.map_err(failed(id))
}

/// The page's `data-chunks` of a panel's status, 0 before the first event.
async fn chunks(browser: &Client, id: &str) -> Result<u64, String> {
    Ok(attr(browser, id, "data-chunks")
        .await?
        .and_then(|chunks| chunks.parse().ok())
        .unwrap_or(0))
}

/// Polls `id`'s text until `done` holds of it; fails after `timeout`, with
/// the last text seen.
async fn wait_for_text(
    browser: &Client,
    id: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> Result<String, String> {
    let start = Instant::now();
    loop {
        // An element that is not there yet (the job list) is just not done.
        let seen = text(browser, id).await.unwrap_or_default();
        if done(&seen) {
            return Ok(seen);
        }
        if start.elapsed() > timeout {
            return Err(format!(
                "#{id} not {what} after {timeout:?}; it says {seen:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the panel's job runs and has done `at_least` chunks.
async fn wait_running(browser: &Client, status: &str, at_least: u64) -> Check {
    let start = Instant::now();
    loop {
        let state = attr(browser, status, "data-state").await?;
        if state.as_deref() == Some("running") && chunks(browser, status).await? >= at_least {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(20) {
            let seen = text(browser, status).await?;
            return Err(format!(
                "#{status}: the job is not running after 20 s: {seen:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn open_page(browser: &Client, config: &Config) -> Check {
    browser
        .goto(&format!("{}/", config.jobs_url))
        .await
        .map_err(failed("open the page"))
}

const LOCK_FREE: &str = "The file lock is free again: the server took it right after.";

// ---------------------------------------------------------------------------
// The checks

async fn page_loads(browser: &Client, config: &Config) -> Check {
    open_page(browser, config).await?;
    let title = browser.title().await.map_err(failed("title"))?;
    if !title.contains("Cancel a file job") {
        return Err(format!("title {title:?}"));
    }
    for (id, label) in [
        ("page-start", "Process file"),
        ("bg-start", "Process file"),
        ("bg-cancel", "Cancel"),
        ("bad-start", "Process file without a context"),
        ("bad-cancel", "Cancel"),
    ] {
        let seen = text(browser, id).await?;
        if seen != label {
            return Err(format!("button #{id} says {seen:?}, not {label:?}"));
        }
    }
    let status = text(browser, "bg-status").await?;
    if status != "Not started." {
        return Err(format!("#bg-status says {status:?} before any job"));
    }
    Ok(())
}

/// Starts a background job on the open page, clicks Cancel once it runs,
/// and checks what the page says; returns the page's click-to-stop
/// milliseconds and its sentence about them.
async fn start_and_cancel(browser: &Client) -> Result<(f64, String), String> {
    click(browser, "bg-start").await?;
    wait_running(browser, "bg-status", 3).await?;
    click(browser, "bg-cancel").await?;
    let status = wait_for_text(
        browser,
        "bg-status",
        "stopped",
        Duration::from_secs(5),
        |text| text.starts_with("Stopped:"),
    )
    .await?;
    if !status.starts_with("Stopped: context cancelled") {
        return Err(format!("#bg-status says {status:?}"));
    }
    if !status.contains(LOCK_FREE) {
        return Err(format!(
            "the page does not say the lock is free: {status:?}"
        ));
    }
    let ms: f64 = attr(browser, "bg-latency", "data-ms")
        .await?
        .and_then(|ms| ms.parse().ok())
        .ok_or("#bg-latency has no data-ms")?;
    let latency = text(browser, "bg-latency").await?;
    if !latency.contains(&format!(
        "The work stopped {ms} ms after you clicked Cancel"
    )) {
        return Err(format!("#bg-latency says {latency:?}"));
    }
    // The server's answer to the click shows too.
    wait_for_text(
        browser,
        "bg-reply",
        "answered",
        Duration::from_secs(5),
        |text| text.starts_with("The server answered: Cancelling job"),
    )
    .await?;
    Ok((ms, latency))
}

async fn cancel_stops_the_job(
    browser: &Client,
    config: &Config,
    screenshot: Option<PathBuf>,
    latencies: &mut Vec<f64>,
) -> Check {
    open_page(browser, config).await?;
    let (ms, latency) = start_and_cancel(browser).await?;
    latencies.push(ms);
    println!("        {latency}");
    if let Some(path) = screenshot {
        let png = browser.screenshot().await.map_err(failed("screenshot"))?;
        std::fs::write(&path, png).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("        screenshot: {}", path.display());
    }
    if ms > CANCEL_BUDGET_MS {
        return Err(format!(
            "{ms} ms from the click to the stop, over the {CANCEL_BUDGET_MS} ms budget"
        ));
    }
    Ok(())
}

async fn closing_the_tab_stops_its_job(browser: &Client, config: &Config) -> Check {
    open_page(browser, config).await?;
    let watcher = browser.window().await.map_err(failed("this tab"))?;
    let tab = browser
        .new_window(true)
        .await
        .map_err(failed("open a tab"))?;
    browser
        .switch_to_window(tab.handle)
        .await
        .map_err(failed("switch to the new tab"))?;
    open_page(browser, config).await?;
    click(browser, "page-start").await?;
    wait_running(browser, "page-status", 3).await?;
    let id = attr(browser, "page-status", "data-id")
        .await?
        .ok_or("#page-status has no data-id")?;
    browser
        .close_window()
        .await
        .map_err(failed("close the tab"))?;
    browser
        .switch_to_window(watcher)
        .await
        .map_err(failed("back to the first tab"))?;
    // The first tab lists every job on the server.
    let seen = wait_for_text(
        browser,
        &format!("job-{id}"),
        "stopped",
        Duration::from_secs(10),
        |text| text.contains("Stopped:"),
    )
    .await?;
    let expected = format!("Job {id} (tied to its page): Stopped: context cancelled");
    if !seen.starts_with(&expected) || !seen.contains(LOCK_FREE) {
        return Err(format!("job {id} is listed as {seen:?}"));
    }
    println!("        {seen}");
    Ok(())
}

async fn time_limit_ends_the_job(browser: &Client, config: &Config) -> Check {
    open_page(browser, config).await?;
    let limit = browser
        .find(Locator::Id("bg-limit"))
        .await
        .map_err(failed("bg-limit"))?;
    limit.send_keys("0.5").await.map_err(failed("bg-limit"))?;
    click(browser, "bg-start").await?;
    let status = wait_for_text(
        browser,
        "bg-status",
        "ended",
        Duration::from_secs(20),
        |text| text.starts_with("Stopped:") || text.starts_with("Finished"),
    )
    .await?;
    if !status.starts_with("Stopped: context deadline exceeded") || !status.contains(LOCK_FREE) {
        return Err(format!("#bg-status says {status:?}"));
    }
    println!("        {status}");
    let latency = text(browser, "bg-latency").await?;
    if !latency.starts_with("The time limit ran out") {
        return Err(format!("#bg-latency says {latency:?}"));
    }
    Ok(())
}

async fn no_context_keeps_running(browser: &Client, config: &Config) -> Check {
    open_page(browser, config).await?;
    // A background job cancelled first, on the same page, for the picture
    // of the two side by side.
    start_and_cancel(browser).await?;
    click(browser, "bad-start").await?;
    wait_running(browser, "bad-status", 3).await?;
    let at_click = chunks(browser, "bad-status").await?;
    click(browser, "bad-cancel").await?;
    wait_for_text(
        browser,
        "bad-reply",
        "answered",
        Duration::from_secs(5),
        |text| text.contains("was started without a context: nothing tells its work to stop"),
    )
    .await?;
    // Well after the click, the work goes on, and the page says so.
    let start = Instant::now();
    loop {
        let status = text(browser, "bad-status").await?;
        if !status.starts_with("Still running after Cancel") && !status.starts_with("Finished") {
            return Err(format!("#bad-status says {status:?} after Cancel"));
        }
        if chunks(browser, "bad-status").await? >= at_click + 5 {
            println!("        {status}");
            break;
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(format!("no progress after Cancel: {status:?}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let path = config.out.join("no-context.png");
    let png = browser.screenshot().await.map_err(failed("screenshot"))?;
    std::fs::write(&path, png).map_err(|e| format!("{}: {e}", path.display()))?;
    // The two jobs side by side, small enough for the README
    // (docs/jobs-cancel.png is a copy).
    let path = config.out.join("cancel-vs-no-context.png");
    let story = browser
        .find(Locator::Id("story"))
        .await
        .map_err(failed("story"))?;
    let png = story.screenshot().await.map_err(failed("screenshot"))?;
    std::fs::write(&path, png).map_err(|e| format!("{}: {e}", path.display()))?;
    println!(
        "        screenshots: {}, {}",
        config.out.join("no-context.png").display(),
        path.display()
    );
    // To the very end, and the lock is only free after that.
    let status = wait_for_text(
        browser,
        "bad-status",
        "finished",
        Duration::from_secs(50),
        |text| !text.starts_with("Still running"),
    )
    .await?;
    if !status.starts_with("Finished anyway") || !status.contains(LOCK_FREE) {
        return Err(format!("#bad-status says {status:?}"));
    }
    println!("        {status}");
    Ok(())
}
