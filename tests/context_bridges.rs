//! DESIGN.md's "Ecosystem bridges" for `Context`: `done_owned`.
//!
//! Timing is deterministic: paused time for deadlines, poll-level checks
//! with `tokio_test`; no sleep stands for a signal.

use std::future::Future;
use std::time::Duration;

use taskgroup::{Context, ContextDoneOwned, ContextError};
use tokio::time::sleep;
use tokio_test::{assert_pending, assert_ready, task};

fn assert_static_send_sync<F: Future<Output = ()> + Send + Sync + Unpin + 'static>(f: F) -> F {
    f
}

// ---------------------------------------------------------------------------
// done_owned

#[test]
fn done_owned_is_static_send_and_outlives_its_context_handle() {
    let (ctx, cancel) = Context::background().with_cancel();
    let child = ctx.with_value(3u8);
    let done: ContextDoneOwned = assert_static_send_sync(child.done_owned());
    drop(child);
    drop(ctx);
    let mut done = task::spawn(done);
    assert_pending!(done.poll());
    cancel.cancel();
    assert!(done.is_woken());
    assert_ready!(done.poll());
}

#[test]
fn done_owned_on_a_cancelled_context_is_ready_at_once() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let mut done = task::spawn(ctx.done_owned());
    assert_ready!(done.poll());
    assert!(format!("{:?}", ctx.done_owned()).contains("done: true"));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn done_owned_resolves_at_the_deadline() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(2));
    let started = tokio::time::Instant::now();
    tokio::spawn(ctx.done_owned()).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn done_owned_of_background_never_resolves() {
    let mut done = task::spawn(Context::background().done_owned());
    assert_pending!(done.poll());
    sleep(Duration::from_secs(3600)).await;
    assert!(!done.is_woken());
    assert_pending!(done.poll());
}
