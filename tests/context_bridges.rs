//! DESIGN.md's "Ecosystem bridges" for `Context`: `done_owned`,
//! `to_token` and `with_token`.
//!
//! Timing is deterministic: paused time for deadlines, poll-level checks
//! with `tokio_test`; no sleep stands for a signal.

mod support;
use std::future::Future;
use std::time::Duration;
use support::{alive_tasks, payload_str, run_until_idle};

use taskgroup::{Context, ContextDoneOwned, ContextError};
use tokio::time::sleep;
use tokio_test::{assert_pending, assert_ready, task};
use tokio_util::sync::CancellationToken;

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

// ---------------------------------------------------------------------------
// to_token

#[test]
fn to_token_of_a_child_is_cancelled_inside_the_parents_cancel() {
    let (parent, cancel) = Context::background().with_cancel();
    let child = parent.with_value("v");
    let token = child.to_token();
    let again = child.to_token();
    assert!(!token.is_cancelled());
    cancel.cancel();
    // No task, no timer: cancelled when `cancel` returns.
    assert!(token.is_cancelled() && again.is_cancelled());
    assert!(child.is_cancelled());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn to_token_is_cancelled_at_the_deadline() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(2));
    let token = ctx.to_token();
    let started = tokio::time::Instant::now();
    token.cancelled().await;
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
}

#[test]
fn to_token_of_background_is_never_cancelled_and_of_a_cancelled_context_is_cancelled() {
    let token = Context::background().to_token();
    assert!(!token.is_cancelled());
    let detached = Context::background().with_cancel().0.without_cancel();
    assert!(!detached.to_token().is_cancelled());
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    assert!(ctx.to_token().is_cancelled());
}

#[test]
fn cancelling_the_token_never_cancels_the_context() {
    let (ctx, _cancel) = Context::background().with_cancel();
    let token = ctx.to_token();
    token.cancel();
    assert!(!ctx.is_cancelled());
    assert_eq!(ctx.err(), None);
    // And a later token from it is the same, cancelled one: a token
    // carries no cause and is the context's only one-way signal.
    assert!(ctx.to_token().is_cancelled());
}

// ---------------------------------------------------------------------------
// with_token

#[test]
fn with_token_on_a_cancelled_token_is_born_cancelled_without_a_runtime() {
    let token = CancellationToken::new();
    token.cancel();
    let ctx = Context::background().with_token(&token);
    assert_eq!(ctx.err(), Some(ContextError::Cancelled));
    assert_eq!(
        ctx.cause().unwrap().downcast_ref::<ContextError>(),
        Some(&ContextError::Cancelled)
    );
}

#[test]
fn with_token_outside_a_runtime_panics_naming_it() {
    let token = CancellationToken::new();
    let panic = std::panic::catch_unwind(|| Context::background().with_token(&token)).unwrap_err();
    let text = payload_str(&*panic);
    assert!(
        text.contains("with_token") && text.contains("runtime"),
        "{text}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn with_token_is_cancelled_by_the_token_and_the_watcher_ends() {
    let before = alive_tasks();
    let token = CancellationToken::new();
    let (parent, _cancel) = Context::background().with_cancel();
    let ctx = parent.with_token(&token);
    let grandchild = ctx.with_value(1u8);
    assert_eq!(alive_tasks(), before + 1);
    token.cancel();
    ctx.done().await;
    assert_eq!(ctx.err(), Some(ContextError::Cancelled));
    assert!(grandchild.is_cancelled());
    assert!(!parent.is_cancelled(), "a child never cancels its parent");
    run_until_idle().await;
    assert_eq!(alive_tasks(), before);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn with_token_watcher_ends_when_the_context_is_cancelled_first() {
    let before = alive_tasks();
    let token = CancellationToken::new();
    let (parent, cancel) = Context::background().with_cancel();
    let ctx = parent.with_token(&token);
    run_until_idle().await;
    assert_eq!(alive_tasks(), before + 1);
    cancel.cancel();
    assert!(ctx.is_cancelled());
    run_until_idle().await;
    assert_eq!(alive_tasks(), before);
    // The token is untouched: the bridge is one way.
    assert!(!token.is_cancelled());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn with_token_watcher_ends_when_the_context_is_dropped() {
    let before = alive_tasks();
    let token = CancellationToken::new();
    let ctx = Context::background().with_token(&token);
    run_until_idle().await;
    assert_eq!(alive_tasks(), before + 1);
    drop(ctx);
    run_until_idle().await;
    assert_eq!(alive_tasks(), before);
    assert!(!token.is_cancelled());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn with_token_under_a_cancelled_parent_is_born_cancelled_with_no_watcher() {
    let before = alive_tasks();
    let (parent, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let ctx = parent.with_token(&CancellationToken::new());
    assert!(ctx.is_cancelled());
    assert_eq!(alive_tasks(), before);
}

/// A `with_token` child made on a runtime that then shuts down: its
/// watcher task died with that runtime, and a cancel of the token later,
/// from another runtime, still reaches the child: its `done()` resolves
/// there, and `err()` says `Cancelled` from then on. The same for a
/// grandchild, and for a child whose runtime is alive but never driven.
#[test]
fn with_token_child_outlives_the_runtime_it_was_made_on() {
    let token = CancellationToken::new();
    let (first, child) = with_token_on_a_runtime_of_its_own(&token);
    let grandchild = child.with_value("request 7");
    drop(first);
    let second = support::multi_thread(2);
    second.block_on(async {
        let waiter = tokio::spawn({
            let grandchild = grandchild.clone();
            async move { grandchild.done().await }
        });
        tokio::task::yield_now().await;
        token.cancel();
        tokio::time::timeout(Duration::from_secs(2), child.done())
            .await
            .expect("the child's done() resolves after the token's cancel");
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("the grandchild's done() resolves too")
            .unwrap();
    });
    assert_eq!(child.err(), Some(ContextError::Cancelled));
    assert_eq!(grandchild.err(), Some(ContextError::Cancelled));
}

/// The same with the watcher's runtime alive but never driven again (a
/// current_thread runtime nobody blocks on): a waiter on another runtime
/// watches the token itself.
#[test]
fn with_token_child_of_an_undriven_runtime_is_cancelled_by_its_token() {
    let token = CancellationToken::new();
    let (first, child) = with_token_on_a_runtime_of_its_own(&token);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    second.block_on(async {
        let cancel = tokio::spawn({
            let token = token.clone();
            async move { token.cancel() }
        });
        tokio::time::timeout(Duration::from_secs(2), child.done())
            .await
            .expect("the child's done() resolves after the token's cancel");
        cancel.await.unwrap();
    });
    assert_eq!(child.err(), Some(ContextError::Cancelled));
    drop(first);
}

/// A `with_token` child of the background context, made on a
/// current_thread runtime of its own (its watcher task runs there), and
/// that runtime.
fn with_token_on_a_runtime_of_its_own(
    token: &CancellationToken,
) -> (tokio::runtime::Runtime, Context) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let child = runtime.block_on(async { Context::background().with_token(token) });
    (runtime, child)
}
