//! What is running, and why is it stuck: a live dump of every task group in
//! the process, served over HTTP by the process itself.
//!
//! Two routes are all it takes, in any axum app, with no change where the
//! groups are built:
//!
//! ```text
//! GET /debug/tasks        the tree as text (`taskgroup::dump()`'s Display)
//! GET /debug/tasks.json   the same tree as JSON (feature `serde`)
//! ```
//!
//! To have something to look at, the example runs a small crawler: a group
//! "crawler" with a limit of 4, whose named tasks wait on slow fetches
//! (idle), index on the blocking pool (blocking), or wait for a slot
//! (queued), one of them with a group of its own nested under it
//! ("retries"). Then it serves the dump until Ctrl-C, or, with `--once`,
//! fetches its own endpoint once, prints what came back, and exits.
//!
//! ```text
//! cargo run --example task_dump                 # then: curl localhost:3001/debug/tasks
//! cargo run --example task_dump -- --once
//! cargo run --example task_dump -- --port 0 --once --json
//! ```
//!
//! Options: `--port N` (default 3001; 0 picks a free one), `--once`,
//! `--json` (with `--once`: fetch the JSON route).

use std::error::Error;
use std::time::Duration;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use taskgroup::{Context, TaskGroup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The dump as text: an indented tree, one line per task.
async fn dump_text() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        taskgroup::dump().to_string(),
    )
}

/// The same tree as JSON.
async fn dump_json() -> impl IntoResponse {
    let json = serde_json::to_string_pretty(&taskgroup::dump()).expect("a dump serializes");
    ([(CONTENT_TYPE, "application/json")], json)
}

/// The two debug routes, to merge into an app.
fn debug_routes() -> Router {
    Router::new()
        .route("/debug/tasks", get(dump_text))
        .route("/debug/tasks.json", get(dump_json))
}

/// A crawler with something in every state: fetches parked on slow
/// answers, an indexer on the blocking pool, pages queued behind the
/// limit, and a nested group of retries.
fn start_crawler(root: &Context) -> TaskGroup<(), String> {
    let mut crawler = TaskGroup::builder()
        .name("crawler")
        .limit(4)
        .context(root)
        .build();
    for site in ["example.com", "example.org"] {
        crawler
            .build_task()
            .name(format!("fetch {site}"))
            .spawn(|ctx| async move {
                // A backend that never answers: parked until cancelled.
                ctx.sleep(Duration::from_secs(3600))
                    .await
                    .map_err(|e| e.to_string())
            });
    }
    crawler.build_task().name("index").spawn_blocking(|ctx| {
        while ctx.check().is_ok() {
            std::thread::sleep(Duration::from_millis(5)); // a chunk of work
        }
        Ok(())
    });
    crawler
        .build_task()
        .name("fetch example.net")
        .spawn(|ctx| async move {
            let mut retries = TaskGroup::<(), String>::builder()
                .name("retries")
                .context(&ctx)
                .build();
            for attempt in 1..=2 {
                retries
                    .build_task()
                    .name(format!("attempt {attempt}"))
                    .spawn(|ctx| async move {
                        // Backing off until the group is cancelled.
                        ctx.done().await;
                        Ok(())
                    });
            }
            retries.wait().await.map(drop).map_err(|e| e.to_string())
        });
    crawler
        .build_task()
        .name("fetch example.edu")
        .spawn(|_ctx| async { Ok(()) }); // beyond the limit: queued
    crawler
}

/// `GET path` on `addr`, the body of the answer.
async fn fetch(addr: std::net::SocketAddr, path: &str) -> Result<String, Box<dyn Error>> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or("no end of the headers")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("unexpected answer: {head}").into());
    }
    Ok(body.to_owned())
}

struct Options {
    port: u16,
    once: bool,
    json: bool,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        port: 3001,
        once: false,
        json: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                let value = args.next().ok_or("--port needs a number")?;
                options.port = value
                    .parse()
                    .map_err(|_| format!("--port: not a port number: {value:?}"))?;
            }
            "--once" => options.once = true,
            "--json" => options.json = true,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let options = match options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("task_dump: {message}");
            eprintln!("usage: task_dump [--port N] [--once] [--json]");
            std::process::exit(2);
        }
    };
    let (root, cancel) = Context::background().with_cancel();
    let crawler = start_crawler(&root);

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port))
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1:{}: {e}", options.port))?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(
        axum::serve(listener, debug_routes())
            .with_graceful_shutdown(root.done_owned())
            .into_future(),
    );

    if options.once {
        // Let the tasks reach where they wait.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let path = if options.json {
            "/debug/tasks.json"
        } else {
            "/debug/tasks"
        };
        print!("{}", fetch(addr, path).await?);
    } else {
        println!(
            "serving the task dump at http://{addr}/debug/tasks (and /debug/tasks.json); Ctrl-C stops"
        );
        tokio::signal::ctrl_c().await?;
    }
    cancel.cancel();
    let _ = crawler.wait().await;
    server.await??;
    Ok(())
}
