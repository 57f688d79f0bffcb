//! Observability behind features: the dump as JSON (`serde`), the spans
//! and events (`tracing`) seen through a real `fmt` subscriber, and the
//! dump served over real HTTP by an axum app, as `examples/task_dump.rs`
//! serves it.

mod support;

use std::time::Duration;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::Value;
use support::{Captured, eventually};
use taskgroup::{Outcome, Supervise, TaskGroup, TaskState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Waits until the group's first task has parked: idle in its snapshot.
async fn first_task_parks(group: &TaskGroup<(), String>) {
    eventually("the first task parks", || {
        group
            .snapshot()
            .tasks()
            .first()
            .is_some_and(|t| t.state() == TaskState::Idle)
    })
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_dump_round_trips_through_serde_json() {
    let mut group = TaskGroup::<(), String>::builder()
        .name("json-outer")
        .limit(1)
        .build();
    group.build_task().name("parked").spawn(|ctx| async move {
        let inner = TaskGroup::<(), String>::builder()
            .name("json-inner")
            .context(&ctx)
            .build();
        ctx.done().await;
        drop(inner);
        Ok(())
    });
    group.spawn(|_ctx| async { Ok(()) });
    let line = line!() - 1;
    first_task_parks(&group).await;
    tokio::time::advance(Duration::from_millis(250)).await;

    let text = serde_json::to_string(&taskgroup::dump()).unwrap();
    let parsed: Value = serde_json::from_str(&text).unwrap();
    let outer = parsed["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "json-outer")
        .expect("the outer group, at the top level");
    assert_eq!(outer["cancelled"], Value::Null);
    assert_eq!(outer["unlisted"], 0);
    let tasks = outer["tasks"].as_array().unwrap();
    assert_eq!(tasks[0]["id"], 0);
    assert_eq!(tasks[0]["name"], "parked");
    assert_eq!(tasks[0]["state"], "idle");
    assert_eq!(tasks[0]["age_secs"], 0.25);
    assert_eq!(tasks[1]["name"], Value::Null);
    assert_eq!(tasks[1]["state"], "queued");
    let spawned_at = tasks[1]["spawned_at"].as_str().unwrap();
    assert!(
        spawned_at.starts_with(&format!("{}:{line}:", file!())),
        "{spawned_at}"
    );
    assert_eq!(outer["children"][0]["name"], "json-inner");
    assert_eq!(outer["children"][0]["tasks"], Value::Array(vec![]));
    // The same tree, serialized again from what was parsed.
    assert_eq!(serde_json::to_value(&parsed).unwrap(), parsed);

    group.cancel();
    let _ = group.wait().await;
}

/// Every group and task gets its span; an event inside a task carries
/// both, under the span that was current when the group was built; the
/// cancel, a panic and a straggler are events of their own.
#[test]
fn spans_and_events_reach_a_real_fmt_subscriber() {
    // Global: the blocking pool's threads see it too. The only test here
    // that sets one; the others' events land in the buffer as well, and
    // every check below looks for this test's own lines.
    let captured = Captured::global();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let request = tracing::info_span!("request", id = 7);
        let mut group = request.in_scope(|| {
            TaskGroup::<(), String>::builder()
                .name("traced")
                .joiner(Supervise)
                .build()
        });
        group.build_task().name("fetch").spawn(|_ctx| async {
            tracing::info!("hello from a task");
            tokio::task::yield_now().await;
            tracing::info!("polled again");
            Ok(())
        });
        group
            .build_task()
            .name("bad")
            .spawn(|_ctx| async { panic!("expected panic: boom") });
        group.build_task().name("index").spawn_blocking(|_ctx| {
            tracing::info!("inside a blocking task");
            Ok(())
        });
        group.build_task().name("deaf").spawn(|_ctx| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
        eventually("three tasks end", || {
            group
                .snapshot()
                .tasks()
                .iter()
                .filter(|t| t.state() == TaskState::Finished)
                .count()
                == 3
        })
        .await;
        let report = group.shutdown(Duration::from_secs(1)).await;
        assert!(matches!(report.output[1], Outcome::Panicked(_)));
        assert_eq!(report.stragglers()[0].name(), Some("deaf"));
    });
    let text = captured.text();
    let group = r#"request{id=7}:taskgroup.group{name="traced"}"#;
    // This test's lines: other tests' groups log to the same subscriber.
    let line_with = |needle: &str| {
        text.lines()
            .find(|line| line.contains(needle) && line.contains(r#"name="traced""#))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
            .to_owned()
    };
    let hello = line_with("hello from a task");
    assert!(
        hello.contains(&format!(r#"{group}:taskgroup.task{{id=0 name="fetch"}}"#)),
        "{hello}"
    );
    assert!(
        line_with("polled again").contains(r#"taskgroup.task{id=0 name="fetch"}"#),
        "every poll enters the task's span"
    );
    assert!(
        line_with("inside a blocking task").contains(r#"taskgroup.task{id=2 name="index"}"#),
        "a blocking task's body runs in its span"
    );
    let panicked = line_with("task panicked");
    assert!(panicked.contains("ERROR"), "{panicked}");
    assert!(panicked.contains("task=1"), "{panicked}");
    assert!(panicked.contains(r#"name="bad""#), "{panicked}");
    assert!(panicked.contains("expected panic: boom"), "{panicked}");
    let cancelled = line_with("group cancelled");
    assert!(cancelled.contains(group), "{cancelled}");
    assert!(cancelled.contains("error=context cancelled"), "{cancelled}");
    let straggler = line_with("straggler dropped");
    assert!(straggler.contains("WARN"), "{straggler}");
    assert!(straggler.contains(r#"name="deaf""#), "{straggler}");
    assert!(straggler.contains("task=3"), "{straggler}");
    assert!(straggler.contains("age=1s"), "{straggler}");
}

/// The pattern `examples/task_dump.rs` serves: two routes in an axum app.
fn debug_routes() -> Router {
    async fn text() -> impl IntoResponse {
        (
            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
            taskgroup::dump().to_string(),
        )
    }
    async fn json() -> impl IntoResponse {
        (
            [(CONTENT_TYPE, "application/json")],
            serde_json::to_string(&taskgroup::dump()).unwrap(),
        )
    }
    Router::new()
        .route("/debug/tasks", get(text))
        .route("/debug/tasks.json", get(json))
}

/// `GET path` over a real TCP connection: the status line and the body.
async fn get_over_http(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dump_is_served_over_real_http_as_text_and_json() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, debug_routes()).await });

    let mut group = TaskGroup::<(), String>::builder().name("served").build();
    group.build_task().name("waiting").spawn(|ctx| async move {
        ctx.done().await;
        Ok(())
    });
    first_task_parks(&group).await;

    let (status, body) = get_over_http(addr, "/debug/tasks").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("group \"served\""), "{body}");
    assert!(body.contains("  task 0 (waiting): idle"), "{body}");

    let (status, body) = get_over_http(addr, "/debug/tasks.json").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let json: Value = serde_json::from_str(&body).unwrap();
    let served = json["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "served")
        .expect("the group in the JSON");
    assert_eq!(served["tasks"][0]["state"], "idle");

    group.cancel();
    let _ = group.wait().await;
    server.abort();
}
