//! The `Context` contract (DESIGN.md, section "Context"), one behaviour per
//! test. Races live in `context_races.rs`, memory and cost in
//! `context_memory.rs`.

use std::error::Error as _;
use std::fmt::Debug;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, UnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use taskgroup::{AfterCancel, CancelHandle, Cause, Context, ContextError};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_test::task::spawn;
use tokio_test::{assert_pending, assert_ready, assert_ready_eq};

mod support;
use support::{message, yields};

// ---------------------------------------------------------------------------
// Helpers

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("shutdown: {0}")]
struct Shutdown(&'static str);

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("user clicked cancel")]
struct UserCancelled;

#[derive(Debug, thiserror::Error)]
#[error("request failed")]
struct RequestFailed(#[source] std::io::Error);

#[derive(Debug, PartialEq)]
struct RequestId(u64);

#[derive(Debug, PartialEq)]
struct TraceId(u64);

/// Sets its flag when dropped.
struct DropDetector(Arc<AtomicBool>);

impl DropDetector {
    fn new() -> (DropDetector, Arc<AtomicBool>) {
        let flag = Arc::new(AtomicBool::new(false));
        (DropDetector(flag.clone()), flag)
    }
}

impl Drop for DropDetector {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A future that never completes, counts its polls and owns a drop detector.
fn pending_probe() -> (impl Future<Output = ()>, Arc<AtomicUsize>, Arc<AtomicBool>) {
    let polls = Arc::new(AtomicUsize::new(0));
    let (detector, dropped) = DropDetector::new();
    let counter = polls.clone();
    let fut = poll_fn(move |_| {
        let _owned = &detector;
        counter.fetch_add(1, Ordering::SeqCst);
        Poll::Pending
    });
    (fut, polls, dropped)
}

/// The cause of `ctx` as a `Shutdown`, panicking with context if it is not.
fn shutdown_cause(ctx: &Context) -> &'static str {
    let cause = ctx
        .cause()
        .expect("context is cancelled, so it has a cause");
    match cause.downcast_ref::<Shutdown>() {
        Some(Shutdown(tag)) => tag,
        None => panic!("cause is not a Shutdown: {cause:?}"),
    }
}

fn context_error_cause(ctx: &Context) -> Option<ContextError> {
    ctx.cause()
        .and_then(|cause| cause.downcast_ref::<ContextError>().copied())
}

fn panic_message(f: impl FnOnce() + UnwindSafe) -> String {
    let payload = catch_unwind(f).expect_err("expected a panic");
    message(&*payload)
}

/// Waits (bounded, in real time) for the next message of an after-cancel
/// callback.
async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> Option<T> {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("callback did not report within 5 s")
}

/// Scheduler turns that let spawned tasks run (`yields(SETTLE)`): a
/// bounded number.
const SETTLE: u64 = 16;

// ---------------------------------------------------------------------------
// Auto traits and basic shape

fn assert_send_sync_static<T: Send + Sync + 'static>() {}
fn assert_clone_debug<T: Clone + Debug>() {}
fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}
fn assert_copy_eq_hash<T: Copy + Eq + std::hash::Hash>() {}
fn assert_send<T: Send>() {}

#[test]
fn context_is_clone_send_sync_static_debug() {
    assert_send_sync_static::<Context>();
    assert_clone_debug::<Context>();
    assert_eq!(
        std::mem::size_of::<Context>(),
        std::mem::size_of::<usize>(),
        "a Context is one Arc"
    );
}

#[test]
fn cancel_handle_is_send_sync() {
    assert_send_sync_static::<CancelHandle>();
    let (_ctx, cancel) = Context::background().with_cancel();
    assert!(format!("{cancel:?}").contains("CancelHandle"));
}

#[test]
fn cause_is_clone_send_sync_error() {
    assert_send_sync_static::<Cause>();
    assert_clone_debug::<Cause>();
    assert_error::<Cause>();
}

#[test]
fn context_error_is_copy_eq_error() {
    assert_copy_eq_hash::<ContextError>();
    assert_error::<ContextError>();
    let error = ContextError::Cancelled;
    let copy = error;
    assert_eq!(error, copy);
    assert_ne!(ContextError::Cancelled, ContextError::DeadlineExceeded);
}

#[test]
fn after_cancel_and_futures_are_send() {
    assert_send_sync_static::<AfterCancel>();
    assert_send::<taskgroup::ContextDoneFuture<'static>>();
    assert_send::<taskgroup::ContextRunFuture<'static, tokio::time::Sleep>>();
}

#[test]
fn context_error_display_strings() {
    assert_eq!(ContextError::Cancelled.to_string(), "context cancelled");
    assert_eq!(
        ContextError::DeadlineExceeded.to_string(),
        "context deadline exceeded"
    );
    assert!(ContextError::Cancelled.is_cancelled());
    assert!(!ContextError::Cancelled.is_deadline_exceeded());
    assert!(ContextError::DeadlineExceeded.is_deadline_exceeded());
    assert!(!ContextError::DeadlineExceeded.is_cancelled());
}

#[test]
fn context_debug_shows_its_state() {
    let (ctx, cancel) = Context::background().with_cancel();
    let live = format!("{ctx:?}");
    assert!(live.starts_with("Context"), "{live}");
    assert!(live.contains("None"), "{live}");
    cancel.cancel();
    let over = format!("{ctx:?}");
    assert!(over.contains("Cancelled"), "{over}");
}

// ---------------------------------------------------------------------------
// Background

#[test]
fn background_is_never_cancelled_and_has_no_deadline_or_values() {
    let root = Context::background();
    assert!(!root.is_cancelled());
    assert_eq!(root.err(), None);
    assert!(root.cause().is_none());
    assert_eq!(root.check(), Ok(()));
    assert_eq!(root.deadline(), None);
    assert_eq!(root.value::<u32>(), None);
    assert_eq!(root.value::<RequestId>(), None);
}

#[test]
fn default_context_is_background() {
    let ctx = Context::default();
    assert!(!ctx.is_cancelled());
    assert_eq!(ctx.deadline(), None);
    assert_eq!(ctx.value::<u8>(), None);
}

#[test]
fn with_cancel_with_value_and_without_cancel_need_no_runtime() {
    let (ctx, cancel) = Context::background().with_cancel();
    let ctx = ctx.with_value(RequestId(1));
    let detached = ctx.without_cancel();
    cancel.cancel();
    assert_eq!(ctx.check(), Err(ContextError::Cancelled));
    assert_eq!(detached.check(), Ok(()));
}

// ---------------------------------------------------------------------------
// Capability split: only a CancelHandle cancels

/// A callee gets a `Context` only: all it can do is derive and cancel its
/// own children.
fn callee(ctx: &Context) -> Context {
    let (mine, cancel) = ctx.with_cancel();
    cancel.cancel_with(Shutdown("callee"));
    mine
}

#[test]
fn callee_cancelling_its_own_child_never_cancels_caller() {
    let (caller, _cancel) = Context::background().with_cancel();
    let callee_ctx = callee(&caller);
    assert_eq!(callee_ctx.err(), Some(ContextError::Cancelled));
    assert_eq!(caller.err(), None);
    assert!(caller.cause().is_none());
}

#[test]
fn cancelling_child_never_cancels_parent_or_siblings() {
    let (parent, _cancel_parent) = Context::background().with_cancel();
    let (child, cancel_child) = parent.with_cancel();
    let (sibling, _cancel_sibling) = parent.with_cancel();
    let (grandchild, _cancel_grandchild) = child.with_cancel();
    cancel_child.cancel();
    assert!(child.is_cancelled());
    assert!(grandchild.is_cancelled());
    assert!(!parent.is_cancelled());
    assert!(!sibling.is_cancelled());
}

#[test]
fn clones_share_one_context() {
    let (ctx, cancel) = Context::background().with_cancel();
    let clone = ctx.clone();
    cancel.cancel_with(Shutdown("clone"));
    assert_eq!(clone.err(), Some(ContextError::Cancelled));
    assert_eq!(shutdown_cause(&clone), "clone");
}

// ---------------------------------------------------------------------------
// Cancellation reaches the whole subtree, synchronously

#[test]
fn cancel_parent_cancels_grandchild() {
    let (parent, cancel) = Context::background().with_cancel();
    let (child, _c) = parent.with_cancel();
    let (grandchild, _g) = child.with_cancel();
    cancel.cancel();
    assert_eq!(grandchild.err(), Some(ContextError::Cancelled));
}

/// Builds `depth` levels of `fanout` children each, mixing the kinds of
/// child, and returns every context below `root` with the handles to keep.
fn build_tree(root: &Context, depth: usize, fanout: usize) -> (Vec<Context>, Vec<CancelHandle>) {
    let mut all = Vec::new();
    let mut handles = Vec::new();
    let mut level = vec![root.clone()];
    for d in 0..depth {
        let mut next = Vec::new();
        for (i, ctx) in level.iter().enumerate() {
            for j in 0..fanout {
                let child = match (d + i + j) % 3 {
                    0 => {
                        let (child, handle) = ctx.with_cancel();
                        handles.push(handle);
                        child
                    }
                    1 => ctx.with_value(RequestId((d * 100 + j) as u64)),
                    _ => {
                        // Disarmed: only its ancestors can cancel it.
                        let (child, handle) = ctx.with_cancel();
                        handle.disarm();
                        child
                    }
                };
                next.push(child);
            }
        }
        all.extend(next.iter().cloned());
        level = next;
    }
    (all, handles)
}

#[test]
fn cancel_is_synchronous_for_whole_subtree() {
    let (root, cancel) = Context::background().with_cancel();
    let (tree, _handles) = build_tree(&root, 5, 4);
    assert_eq!(tree.len(), 4 + 16 + 64 + 256 + 1024);
    assert!(tree.iter().all(|ctx| ctx.err().is_none()));
    cancel.cancel_with(Shutdown("whole tree"));
    // No await, no yield: everything is visible when cancel returns.
    for ctx in &tree {
        assert_eq!(ctx.err(), Some(ContextError::Cancelled));
        assert_eq!(shutdown_cause(ctx), "whole tree");
    }
}

#[tokio::test(start_paused = true)]
async fn cancel_is_synchronous_through_deadline_children() {
    let (root, cancel) = Context::background().with_cancel();
    let (a, _a) = root.with_timeout(Duration::from_secs(60));
    let (b, _b) = a.with_deadline(Instant::now() + Duration::from_secs(30));
    let c = b.with_value(RequestId(3));
    let (d, _d) = c.with_timeout(Duration::MAX);
    cancel.cancel();
    for ctx in [&a, &b, &c, &d] {
        assert_eq!(ctx.err(), Some(ContextError::Cancelled));
        assert_eq!(context_error_cause(ctx), Some(ContextError::Cancelled));
    }
}

#[test]
fn child_cancelled_through_parent_reports_parent_error_and_cause() {
    let (parent, cancel) = Context::background().with_cancel();
    let (child, _c) = parent.with_cancel();
    let valued = child.with_value(TraceId(9));
    cancel.cancel_with(UserCancelled);
    for ctx in [&parent, &child, &valued] {
        assert_eq!(ctx.err(), Some(ContextError::Cancelled));
        let cause = ctx.cause().unwrap();
        assert_eq!(cause.downcast_ref::<UserCancelled>(), Some(&UserCancelled));
        assert_eq!(cause.to_string(), "user clicked cancel");
    }
}

#[tokio::test(start_paused = true)]
async fn child_cancelled_through_expired_parent_reports_deadline_exceeded() {
    let (parent, _p) = Context::background().with_timeout(Duration::from_secs(1));
    let (child, _c) = parent.with_cancel();
    let valued = child.with_value(1u8);
    valued.done().await;
    for ctx in [&parent, &child, &valued] {
        assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
        assert_eq!(
            context_error_cause(ctx),
            Some(ContextError::DeadlineExceeded)
        );
    }
}

// ---------------------------------------------------------------------------
// err() and cause(): set once, first cancel wins

#[test]
fn err_and_cause_are_none_until_cancelled() {
    let (ctx, cancel) = Context::background().with_cancel();
    assert_eq!(ctx.err(), None);
    assert!(ctx.cause().is_none());
    assert!(!ctx.is_cancelled());
    assert!(!cancel.is_cancelled());
    cancel.cancel();
    assert!(ctx.is_cancelled());
    assert!(cancel.is_cancelled());
}

#[test]
fn cancel_without_cause_reports_context_error_as_cause() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let cause = ctx.cause().unwrap();
    assert_eq!(
        cause.downcast_ref::<ContextError>(),
        Some(&ContextError::Cancelled)
    );
    assert_eq!(cause.to_string(), "context cancelled");
}

#[test]
fn first_cause_wins() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (child, _c) = ctx.with_cancel();
    cancel.cancel_with(Shutdown("first"));
    cancel.cancel_with(Shutdown("second"));
    cancel.cancel();
    assert_eq!(shutdown_cause(&ctx), "first");
    assert_eq!(shutdown_cause(&child), "first");
    assert_eq!(ctx.err(), Some(ContextError::Cancelled));
}

#[test]
fn plain_cancel_first_then_cause_is_ignored() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    cancel.cancel_with(Shutdown("too late"));
    assert_eq!(context_error_cause(&ctx), Some(ContextError::Cancelled));
    assert!(ctx.cause().unwrap().downcast_ref::<Shutdown>().is_none());
}

#[test]
fn err_never_changes_once_set() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (child, cancel_child) = parent.with_cancel();
    cancel_child.cancel_with(Shutdown("child"));
    let first = (child.err(), child.cause().unwrap().to_string());
    cancel_parent.cancel_with(Shutdown("parent"));
    cancel_child.cancel();
    drop(cancel_child);
    assert_eq!((child.err(), child.cause().unwrap().to_string()), first);
}

#[tokio::test(start_paused = true)]
async fn deadline_after_cancel_changes_nothing() {
    let (ctx, cancel) = Context::background().with_timeout(Duration::from_secs(1));
    cancel.cancel_with(Shutdown("before deadline"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(ctx.err(), Some(ContextError::Cancelled));
    assert_eq!(shutdown_cause(&ctx), "before deadline");
}

#[tokio::test(start_paused = true)]
async fn cancel_after_deadline_changes_nothing() {
    let (ctx, cancel) = Context::background().with_timeout(Duration::from_secs(1));
    ctx.done().await;
    cancel.cancel_with(Shutdown("after deadline"));
    assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
    assert_eq!(
        context_error_cause(&ctx),
        Some(ContextError::DeadlineExceeded)
    );
}

// Cause ordering between a parent and a child.

#[test]
fn parent_then_child_with_causes_child_keeps_parent_cause() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (child, cancel_child) = parent.with_cancel();
    cancel_parent.cancel_with(Shutdown("parent"));
    cancel_child.cancel_with(Shutdown("child"));
    assert_eq!(shutdown_cause(&parent), "parent");
    assert_eq!(shutdown_cause(&child), "parent");
}

#[test]
fn parent_then_child_without_causes_child_keeps_parent_state() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (child, cancel_child) = parent.with_cancel();
    cancel_parent.cancel();
    cancel_child.cancel_with(Shutdown("child"));
    assert_eq!(child.err(), Some(ContextError::Cancelled));
    assert_eq!(context_error_cause(&child), Some(ContextError::Cancelled));
}

#[test]
fn parent_with_cause_then_child_without_cause_keeps_parent_cause() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (child, cancel_child) = parent.with_cancel();
    cancel_parent.cancel_with(Shutdown("parent"));
    cancel_child.cancel();
    assert_eq!(shutdown_cause(&child), "parent");
}

#[test]
fn child_then_parent_with_causes_child_keeps_own_cause() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (child, cancel_child) = parent.with_cancel();
    let (grandchild, _g) = child.with_cancel();
    let (sibling, _s) = parent.with_cancel();
    cancel_child.cancel_with(Shutdown("child"));
    cancel_parent.cancel_with(Shutdown("parent"));
    assert_eq!(shutdown_cause(&child), "child");
    assert_eq!(shutdown_cause(&grandchild), "child");
    assert_eq!(shutdown_cause(&parent), "parent");
    assert_eq!(shutdown_cause(&sibling), "parent");
}

#[test]
fn child_then_parent_without_causes_child_keeps_own_state() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (child, cancel_child) = parent.with_cancel();
    cancel_child.cancel();
    cancel_parent.cancel_with(Shutdown("parent"));
    assert_eq!(child.err(), Some(ContextError::Cancelled));
    assert_eq!(context_error_cause(&child), Some(ContextError::Cancelled));
    assert_eq!(shutdown_cause(&parent), "parent");
}

#[test]
fn child_with_cause_then_parent_without_cause_child_keeps_own_cause() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (child, cancel_child) = parent.with_cancel();
    cancel_child.cancel_with(Shutdown("child"));
    cancel_parent.cancel();
    assert_eq!(shutdown_cause(&child), "child");
    assert_eq!(context_error_cause(&parent), Some(ContextError::Cancelled));
}

#[tokio::test(start_paused = true)]
async fn child_cancelled_before_parent_deadline_keeps_own_error() {
    let (parent, _p) = Context::background().with_timeout(Duration::from_secs(1));
    let (child, cancel_child) = parent.with_cancel();
    cancel_child.cancel_with(Shutdown("child"));
    parent.done().await;
    assert_eq!(parent.err(), Some(ContextError::DeadlineExceeded));
    assert_eq!(child.err(), Some(ContextError::Cancelled));
    assert_eq!(shutdown_cause(&child), "child");
}

// ---------------------------------------------------------------------------
// Born cancelled: deriving from a cancelled parent

#[test]
fn with_cancel_of_cancelled_parent_is_born_cancelled_with_parent_cause() {
    let (parent, cancel) = Context::background().with_cancel();
    cancel.cancel_with(Shutdown("gone"));
    let (child, child_cancel) = parent.with_cancel();
    assert!(child_cancel.is_cancelled());
    assert_eq!(child.err(), Some(ContextError::Cancelled));
    assert_eq!(shutdown_cause(&child), "gone");
    // Its own handle can no longer change anything.
    child_cancel.cancel_with(Shutdown("mine"));
    assert_eq!(shutdown_cause(&child), "gone");
}

#[test]
fn with_value_of_cancelled_parent_is_born_cancelled_with_parent_cause() {
    let (parent, cancel) = Context::background().with_cancel();
    cancel.cancel_with(Shutdown("gone"));
    let child = parent.with_value(RequestId(1));
    assert_eq!(child.err(), Some(ContextError::Cancelled));
    assert_eq!(shutdown_cause(&child), "gone");
    assert_eq!(child.value::<RequestId>(), Some(&RequestId(1)));
}

#[tokio::test(start_paused = true)]
async fn with_timeout_of_cancelled_parent_is_born_cancelled_with_parent_cause() {
    let (parent, cancel) = Context::background().with_cancel();
    cancel.cancel_with(Shutdown("gone"));
    let (child, _c) = parent.with_timeout(Duration::from_secs(1));
    assert_eq!(child.err(), Some(ContextError::Cancelled));
    assert_eq!(shutdown_cause(&child), "gone");
    // Nothing expires later either.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(child.err(), Some(ContextError::Cancelled));
    assert_eq!(shutdown_cause(&child), "gone");
}

#[tokio::test(start_paused = true)]
async fn with_deadline_of_cancelled_parent_is_born_cancelled_and_spawns_no_timer() {
    let (parent, cancel) = Context::background().with_cancel();
    cancel.cancel_with(Shutdown("gone"));
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let (child, _c) = parent.with_deadline(Instant::now() + Duration::from_secs(1));
    assert_eq!(child.err(), Some(ContextError::Cancelled));
    assert_eq!(shutdown_cause(&child), "gone");
    assert_eq!(metrics.num_alive_tasks(), before);
}

#[tokio::test(start_paused = true)]
async fn children_of_expired_parent_are_born_deadline_exceeded() {
    let (parent, _p) = Context::background().with_timeout(Duration::from_secs(1));
    parent.done().await;
    let (a, _a) = parent.with_cancel();
    let b = parent.with_value(2u8);
    let (c, _c) = parent.with_timeout(Duration::from_secs(10));
    for ctx in [&a, &b, &c] {
        assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
        assert_eq!(
            context_error_cause(ctx),
            Some(ContextError::DeadlineExceeded)
        );
    }
}

#[test]
fn born_cancelled_child_is_done_at_once() {
    let (parent, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let (child, _c) = parent.with_cancel();
    let mut done = spawn(child.done());
    assert_ready!(done.poll());
}

// ---------------------------------------------------------------------------
// CancelHandle: drop cancels, disarm does not

#[test]
fn dropping_cancel_handle_cancels_context_and_subtree() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (child, _keep) = ctx.with_cancel();
    drop(cancel);
    assert_eq!(ctx.err(), Some(ContextError::Cancelled));
    assert_eq!(child.err(), Some(ContextError::Cancelled));
    assert_eq!(context_error_cause(&child), Some(ContextError::Cancelled));
}

#[test]
fn handle_dropped_at_end_of_scope_cancels_scoped_context_only() {
    let (outer, _cancel) = Context::background().with_cancel();
    let inner = {
        let (inner, _guard) = outer.with_cancel();
        inner
    };
    assert!(inner.is_cancelled());
    assert!(!outer.is_cancelled());
}

#[test]
fn disarm_does_not_cancel() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (child, _c) = ctx.with_cancel();
    cancel.disarm();
    assert!(!ctx.is_cancelled());
    assert!(!child.is_cancelled());
}

#[test]
fn disarmed_context_is_still_cancelled_by_its_parent() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (child, cancel_child) = parent.with_cancel();
    cancel_child.disarm();
    cancel_parent.cancel_with(Shutdown("parent"));
    assert_eq!(shutdown_cause(&child), "parent");
}

#[test]
fn cancel_handle_can_be_shared_across_threads() {
    let (ctx, cancel) = Context::background().with_cancel();
    let cancel = Arc::new(cancel);
    let remote = cancel.clone();
    std::thread::spawn(move || remote.cancel_with(Shutdown("remote")))
        .join()
        .unwrap();
    assert_eq!(shutdown_cause(&ctx), "remote");
    assert!(cancel.is_cancelled());
}

#[test]
fn cancel_handle_reports_cancel_through_parent() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (_child, cancel_child) = parent.with_cancel();
    assert!(!cancel_child.is_cancelled());
    cancel_parent.cancel();
    assert!(cancel_child.is_cancelled());
}

// ---------------------------------------------------------------------------
// Deadlines

#[tokio::test(start_paused = true)]
async fn with_timeout_expires_at_its_deadline_on_tokio_clock() {
    let start = Instant::now();
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(2));
    assert_eq!(ctx.deadline(), Some(start + Duration::from_secs(2)));
    tokio::time::sleep(Duration::from_millis(1999)).await;
    assert_eq!(ctx.err(), None);
    ctx.done().await;
    assert_eq!(Instant::now(), start + Duration::from_secs(2));
    assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
    assert_eq!(
        context_error_cause(&ctx),
        Some(ContextError::DeadlineExceeded)
    );
}

#[tokio::test(start_paused = true)]
async fn with_deadline_expires_at_given_instant() {
    let at = Instant::now() + Duration::from_millis(750);
    let (ctx, _cancel) = Context::background().with_deadline(at);
    assert_eq!(ctx.deadline(), Some(at));
    ctx.done().await;
    assert_eq!(Instant::now(), at);
    assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
}

#[tokio::test(start_paused = true)]
async fn deadline_in_the_past_is_born_expired_without_panic() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let now = Instant::now();
    let past = now - Duration::from_secs(1);
    let (a, _a) = Context::background().with_deadline(past);
    let (b, _b) = Context::background().with_deadline(now);
    let (c, _c) = Context::background().with_timeout(Duration::ZERO);
    let (parent, _p) = Context::background().with_cancel();
    let (d, _d) = parent.with_deadline(past);
    for ctx in [&a, &b, &c, &d] {
        assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
        assert_eq!(
            context_error_cause(ctx),
            Some(ContextError::DeadlineExceeded)
        );
        let mut done = spawn(ctx.done());
        assert_ready!(done.poll());
    }
    assert_eq!(a.deadline(), Some(past));
    assert_eq!(b.deadline(), Some(now));
    assert!(
        !parent.is_cancelled(),
        "an expired child never cancels its parent"
    );
    // Born expired: no timer task was started for them.
    assert_eq!(metrics.num_alive_tasks(), before);
}

/// The given deadline is past, but so is the parent's (earlier) one, whose
/// timer has not had a chance to run yet: the child is still born expired.
#[test]
fn deadline_in_the_past_is_born_expired_even_before_parent_timer_runs() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let (parent, _p) = Context::background().with_timeout(Duration::from_millis(1));
        // Block the only thread: the parent's timer cannot fire meanwhile.
        std::thread::sleep(Duration::from_millis(20));
        let (child, _c) = parent.with_deadline(Instant::now());
        assert_eq!(child.deadline(), parent.deadline());
        assert_eq!(child.err(), Some(ContextError::DeadlineExceeded));
        let (timed, _t) = parent.with_timeout(Duration::ZERO);
        assert_eq!(timed.err(), Some(ContextError::DeadlineExceeded));
        parent.done().await;
        assert_eq!(parent.err(), Some(ContextError::DeadlineExceeded));
    });
}

#[tokio::test(start_paused = true)]
async fn child_deadline_later_than_parent_reports_parent_deadline_and_expires_with_it() {
    let start = Instant::now();
    let metrics = tokio::runtime::Handle::current().metrics();
    let (parent, _p) = Context::background().with_timeout(Duration::from_secs(1));
    let timers = metrics.num_alive_tasks();
    let (child, _c) = parent.with_timeout(Duration::from_secs(10));
    let (later, _l) = parent.with_deadline(start + Duration::from_secs(5));
    assert_eq!(child.deadline(), Some(start + Duration::from_secs(1)));
    assert_eq!(later.deadline(), Some(start + Duration::from_secs(1)));
    // The parent's timer serves them: no timer of their own.
    assert_eq!(metrics.num_alive_tasks(), timers);
    child.done().await;
    assert_eq!(Instant::now(), start + Duration::from_secs(1));
    for ctx in [&parent, &child, &later] {
        assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
        assert_eq!(
            context_error_cause(ctx),
            Some(ContextError::DeadlineExceeded)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn earlier_child_deadline_fires_first_and_parent_stays_live() {
    let start = Instant::now();
    let (parent, _p) = Context::background().with_timeout(Duration::from_secs(10));
    let (child, _c) = parent.with_timeout(Duration::from_secs(1));
    assert_eq!(child.deadline(), Some(start + Duration::from_secs(1)));
    assert_eq!(parent.deadline(), Some(start + Duration::from_secs(10)));
    child.done().await;
    assert_eq!(Instant::now(), start + Duration::from_secs(1));
    assert_eq!(child.err(), Some(ContextError::DeadlineExceeded));
    assert_eq!(parent.err(), None);
    parent.done().await;
    assert_eq!(Instant::now(), start + Duration::from_secs(10));
    assert_eq!(parent.err(), Some(ContextError::DeadlineExceeded));
}

#[tokio::test(start_paused = true)]
async fn deadline_is_inherited_through_values_and_cancel_children() {
    let start = Instant::now();
    let (ctx, _c) = Context::background().with_timeout(Duration::from_secs(3));
    let valued = ctx.with_value(1u16);
    let (child, _cc) = valued.with_cancel();
    assert_eq!(valued.deadline(), Some(start + Duration::from_secs(3)));
    assert_eq!(child.deadline(), Some(start + Duration::from_secs(3)));
    child.done().await;
    assert_eq!(Instant::now(), start + Duration::from_secs(3));
    assert_eq!(child.err(), Some(ContextError::DeadlineExceeded));
}

#[tokio::test(start_paused = true)]
async fn timeout_duration_max_means_no_deadline() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let (ctx, cancel) = Context::background().with_timeout(Duration::MAX);
    assert_eq!(ctx.deadline(), None);
    assert_eq!(
        metrics.num_alive_tasks(),
        before,
        "no timer for no deadline"
    );
    tokio::time::sleep(Duration::from_secs(86_400 * 365)).await;
    assert_eq!(ctx.err(), None);
    // Still cancellable by its handle.
    cancel.cancel();
    assert_eq!(ctx.err(), Some(ContextError::Cancelled));
}

#[tokio::test(start_paused = true)]
async fn timeout_duration_max_under_deadline_parent_keeps_parent_deadline() {
    let start = Instant::now();
    let (parent, _p) = Context::background().with_timeout(Duration::from_secs(2));
    let (child, _c) = parent.with_timeout(Duration::MAX);
    assert_eq!(child.deadline(), Some(start + Duration::from_secs(2)));
    child.done().await;
    assert_eq!(Instant::now(), start + Duration::from_secs(2));
    assert_eq!(child.err(), Some(ContextError::DeadlineExceeded));
}

#[tokio::test(start_paused = true)]
async fn cancelling_deadline_context_releases_its_timer() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let (ctx, cancel) = Context::background().with_timeout(Duration::from_secs(60));
    assert_eq!(metrics.num_alive_tasks(), before + 1);
    cancel.cancel();
    for _ in 0..100 {
        if metrics.num_alive_tasks() == before {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(metrics.num_alive_tasks(), before);
    assert_eq!(ctx.err(), Some(ContextError::Cancelled));
}

#[tokio::test(start_paused = true)]
async fn dropping_disarmed_deadline_context_releases_its_timer() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let (ctx, cancel) = Context::background().with_timeout(Duration::from_secs(60));
    cancel.disarm();
    assert_eq!(metrics.num_alive_tasks(), before + 1);
    drop(ctx);
    for _ in 0..100 {
        if metrics.num_alive_tasks() == before {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(metrics.num_alive_tasks(), before);
}

#[test]
#[should_panic(expected = "tokio runtime")]
fn with_timeout_outside_runtime_panics() {
    let _ = Context::background().with_timeout(Duration::from_secs(1));
}

#[test]
#[should_panic(expected = "tokio runtime")]
fn with_deadline_outside_runtime_panics() {
    let _ = Context::background().with_deadline(Instant::now() + Duration::from_secs(1));
}

#[test]
#[should_panic(expected = "tokio runtime")]
fn after_cancel_outside_runtime_panics() {
    let (ctx, _cancel) = Context::background().with_cancel();
    let _ = ctx.after_cancel(|| ());
}

#[test]
fn runtime_panics_name_the_method_and_the_runtime() {
    let timeout = panic_message(|| {
        let _ = Context::background().with_timeout(Duration::MAX);
    });
    assert!(timeout.contains("with_timeout"), "{timeout}");
    assert!(timeout.contains("tokio runtime"), "{timeout}");
    let deadline = panic_message(|| {
        let _ = Context::background().with_deadline(Instant::now());
    });
    assert!(deadline.contains("with_deadline"), "{deadline}");
    assert!(deadline.contains("tokio runtime"), "{deadline}");
    let (ctx, _cancel) = Context::background().with_cancel();
    let after = panic_message(AssertUnwindSafe(|| {
        let _ = ctx.after_cancel(|| ());
    }));
    assert!(after.contains("after_cancel"), "{after}");
    assert!(after.contains("tokio runtime"), "{after}");
}

// ---------------------------------------------------------------------------
// Values

#[test]
fn value_is_looked_up_by_type() {
    let ctx = Context::background()
        .with_value(RequestId(7))
        .with_value(TraceId(8));
    assert_eq!(ctx.value::<RequestId>(), Some(&RequestId(7)));
    assert_eq!(ctx.value::<TraceId>(), Some(&TraceId(8)));
    assert_eq!(ctx.value::<String>(), None);
}

#[test]
fn nearest_value_shadows_and_never_leaks_upward() {
    let outer = Context::background().with_value(RequestId(1));
    let inner = outer.with_value(TraceId(5)).with_value(RequestId(2));
    let sibling = outer.with_value(RequestId(3));
    assert_eq!(inner.value::<RequestId>(), Some(&RequestId(2)));
    assert_eq!(inner.value::<TraceId>(), Some(&TraceId(5)));
    assert_eq!(outer.value::<RequestId>(), Some(&RequestId(1)));
    assert_eq!(outer.value::<TraceId>(), None);
    assert_eq!(sibling.value::<RequestId>(), Some(&RequestId(3)));
}

#[test]
fn value_types_are_isolated() {
    let ctx = Context::background().with_value(7u32);
    assert_eq!(ctx.value::<u32>(), Some(&7));
    assert_eq!(ctx.value::<u64>(), None);
    assert_eq!(ctx.value::<i32>(), None);
    // Newtypes over the same representation are distinct keys.
    let ctx = ctx.with_value(RequestId(1));
    assert_eq!(ctx.value::<TraceId>(), None);
    assert_eq!(ctx.value::<u64>(), None);
    assert_eq!(ctx.value::<RequestId>(), Some(&RequestId(1)));
    assert_eq!(ctx.value::<u32>(), Some(&7));
    let ctx = ctx.with_value(9u64);
    assert_eq!(ctx.value::<u64>(), Some(&9));
    assert_eq!(ctx.value::<u32>(), Some(&7));
}

#[tokio::test(start_paused = true)]
async fn values_pass_through_every_kind_of_child() {
    let ctx = Context::background().with_value(RequestId(4));
    let (a, _a) = ctx.with_cancel();
    let (b, _b) = a.with_timeout(Duration::from_secs(1));
    let (c, _c) = b.with_deadline(Instant::now() + Duration::from_secs(1));
    let d = c.without_cancel();
    for ctx in [&a, &b, &c, &d] {
        assert_eq!(ctx.value::<RequestId>(), Some(&RequestId(4)));
    }
}

#[test]
fn values_stay_readable_after_cancel() {
    let (ctx, cancel) = Context::background().with_cancel();
    let ctx = ctx.with_value(RequestId(11));
    cancel.cancel();
    assert_eq!(ctx.value::<RequestId>(), Some(&RequestId(11)));
}

#[test]
fn value_is_dropped_with_its_last_context() {
    let (detector, dropped) = DropDetector::new();
    let (root, _cancel) = Context::background().with_cancel();
    let ctx = root.with_value(detector);
    let clone = ctx.clone();
    let child = ctx.with_value(1u8);
    drop(ctx);
    drop(clone);
    assert!(!dropped.load(Ordering::SeqCst), "the child still sees it");
    assert!(child.value::<DropDetector>().is_some());
    drop(child);
    assert!(dropped.load(Ordering::SeqCst));
}

// ---------------------------------------------------------------------------
// without_cancel

#[test]
fn without_cancel_is_never_cancelled_and_keeps_values() {
    let (parent, cancel) = Context::background().with_cancel();
    let parent = parent.with_value(RequestId(9));
    let detached = parent.without_cancel();
    cancel.cancel_with(Shutdown("request over"));
    assert!(parent.is_cancelled());
    assert!(!detached.is_cancelled());
    assert_eq!(detached.err(), None);
    assert!(detached.cause().is_none());
    assert_eq!(detached.check(), Ok(()));
    assert_eq!(detached.value::<RequestId>(), Some(&RequestId(9)));
}

#[test]
fn without_cancel_of_cancelled_parent_is_live() {
    let (parent, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let detached = parent.without_cancel();
    assert_eq!(detached.err(), None);
    let mut done = spawn(detached.done());
    assert_pending!(done.poll());
}

#[tokio::test(start_paused = true)]
async fn without_cancel_has_no_deadline() {
    let (parent, _cancel) = Context::background().with_timeout(Duration::from_secs(1));
    let detached = parent.without_cancel();
    assert_eq!(detached.deadline(), None);
    parent.done().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(detached.err(), None);
}

#[tokio::test(start_paused = true)]
async fn children_of_without_cancel_still_work() {
    let start = Instant::now();
    let (parent, cancel_parent) = Context::background().with_cancel();
    let detached = parent.with_value(TraceId(1)).without_cancel();
    let (child, cancel_child) = detached.with_cancel();
    let (grandchild, _g) = child.with_cancel();
    let (timed, _t) = detached.with_timeout(Duration::from_secs(2));

    cancel_parent.cancel();
    assert!(!child.is_cancelled(), "cut off from the parent");
    assert!(!timed.is_cancelled());

    cancel_child.cancel_with(Shutdown("own"));
    assert_eq!(shutdown_cause(&grandchild), "own");
    assert!(!detached.is_cancelled());

    assert_eq!(timed.deadline(), Some(start + Duration::from_secs(2)));
    timed.done().await;
    assert_eq!(Instant::now(), start + Duration::from_secs(2));
    assert_eq!(timed.err(), Some(ContextError::DeadlineExceeded));
    assert_eq!(timed.value::<TraceId>(), Some(&TraceId(1)));
    assert!(!detached.is_cancelled());
}

// ---------------------------------------------------------------------------
// done()

#[test]
fn done_is_pending_until_cancel_then_ready() {
    let (ctx, cancel) = Context::background().with_cancel();
    let mut done = spawn(ctx.done());
    assert_pending!(done.poll());
    assert_pending!(done.poll());
    assert!(!done.is_woken());
    cancel.cancel();
    assert!(done.is_woken());
    assert_ready!(done.poll());
}

#[test]
fn done_is_ready_at_once_when_already_cancelled() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let mut done = spawn(ctx.done());
    assert_ready!(done.poll());
}

#[test]
fn done_created_before_cancel_and_first_polled_after_is_ready() {
    let (ctx, cancel) = Context::background().with_cancel();
    let mut done = spawn(ctx.done());
    cancel.cancel();
    assert_ready!(done.poll());
}

#[test]
fn done_is_woken_by_ancestor_cancel() {
    let (root, cancel) = Context::background().with_cancel();
    let grandchild = root.with_value(1u8).with_value(2u16);
    let mut done = spawn(grandchild.done());
    assert_pending!(done.poll());
    cancel.cancel();
    assert!(done.is_woken());
    assert_ready!(done.poll());
}

#[test]
fn done_wakes_every_waiter() {
    let (ctx, cancel) = Context::background().with_cancel();
    let mut waiters: Vec<_> = (0..4).map(|_| spawn(ctx.done())).collect();
    for waiter in &mut waiters {
        assert_pending!(waiter.poll());
    }
    cancel.cancel();
    for waiter in &mut waiters {
        assert!(waiter.is_woken());
        assert_ready!(waiter.poll());
    }
}

#[test]
fn done_is_cancel_safe_dropping_one_loses_nothing() {
    let (ctx, cancel) = Context::background().with_cancel();
    {
        let mut first = spawn(ctx.done());
        assert_pending!(first.poll());
    }
    let mut second = spawn(ctx.done());
    assert_pending!(second.poll());
    cancel.cancel();
    assert!(second.is_woken());
    assert_ready!(second.poll());
}

#[test]
fn done_never_resolves_for_background() {
    let root = Context::background();
    let mut done = spawn(root.done());
    assert_pending!(done.poll());
    assert!(!done.is_woken());
}

#[tokio::test(start_paused = true)]
async fn done_resolves_at_deadline() {
    let start = Instant::now();
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(300));
    ctx.done().await;
    assert_eq!(Instant::now(), start + Duration::from_millis(300));
}

#[tokio::test]
async fn done_wakes_a_task_on_another_thread_of_the_runtime() {
    let (ctx, cancel) = Context::background().with_cancel();
    let waiter = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            ctx.done().await;
            ctx.cause().map(|c| c.to_string())
        }
    });
    tokio::task::yield_now().await;
    std::thread::spawn(move || cancel.cancel_with(Shutdown("thread")))
        .join()
        .unwrap();
    let cause = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("waiter woke")
        .unwrap();
    assert_eq!(cause.as_deref(), Some("shutdown: thread"));
}

// ---------------------------------------------------------------------------
// run()

#[tokio::test]
async fn run_returns_output_when_future_completes_first() {
    let (ctx, _cancel) = Context::background().with_cancel();
    assert_eq!(ctx.run(async { 40 + 2 }).await, Ok(42));
}

#[test]
fn run_never_polls_future_when_already_cancelled() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let (fut, polls, dropped) = pending_probe();
    let mut run = spawn(ctx.run(fut));
    assert_ready_eq!(run.poll(), Err(ContextError::Cancelled));
    assert_eq!(polls.load(Ordering::SeqCst), 0);
    assert!(dropped.load(Ordering::SeqCst), "dropped on the first poll");
}

#[test]
fn run_never_polls_ready_future_when_already_cancelled() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let polled = Arc::new(AtomicBool::new(false));
    let flag = polled.clone();
    let mut run = spawn(ctx.run(async move {
        flag.store(true, Ordering::SeqCst);
        1
    }));
    assert_ready_eq!(run.poll(), Err(ContextError::Cancelled));
    assert!(!polled.load(Ordering::SeqCst));
}

#[test]
fn run_drops_inner_future_at_once_on_cancel() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (fut, polls, dropped) = pending_probe();
    let mut run = spawn(ctx.run(fut));
    assert_pending!(run.poll());
    assert_eq!(polls.load(Ordering::SeqCst), 1);
    cancel.cancel_with(Shutdown("stop"));
    assert!(run.is_woken());
    assert_ready_eq!(run.poll(), Err(ContextError::Cancelled));
    // Dropped by the poll that saw the cancel, not when `run` goes away.
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(polls.load(Ordering::SeqCst), 1, "never polled after cancel");
    drop(run);
}

#[test]
fn run_is_woken_by_ancestor_cancel() {
    let (root, cancel) = Context::background().with_cancel();
    let ctx = root.with_value(1u8);
    let (fut, _polls, dropped) = pending_probe();
    let mut run = spawn(ctx.run(fut));
    assert_pending!(run.poll());
    cancel.cancel();
    assert!(run.is_woken());
    assert_ready_eq!(run.poll(), Err(ContextError::Cancelled));
    assert!(dropped.load(Ordering::SeqCst));
}

#[test]
fn dropping_run_future_drops_inner_future() {
    let (ctx, _cancel) = Context::background().with_cancel();
    let (fut, _polls, dropped) = pending_probe();
    let mut run = spawn(ctx.run(fut));
    assert_pending!(run.poll());
    assert!(!dropped.load(Ordering::SeqCst));
    drop(run);
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn run_ends_with_deadline_exceeded_at_deadline() {
    let start = Instant::now();
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(1));
    let (fut, _polls, dropped) = pending_probe();
    assert_eq!(ctx.run(fut).await, Err(ContextError::DeadlineExceeded));
    assert_eq!(Instant::now(), start + Duration::from_secs(1));
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test]
async fn run_on_background_runs_to_completion() {
    let root = Context::background();
    let value = root
        .run(async {
            tokio::task::yield_now().await;
            "done"
        })
        .await;
    assert_eq!(value, Ok("done"));
}

// ---------------------------------------------------------------------------
// sleep() and check()

#[tokio::test(start_paused = true)]
async fn sleep_completes_when_context_stays_live() {
    let start = Instant::now();
    let (ctx, _cancel) = Context::background().with_cancel();
    assert_eq!(ctx.sleep(Duration::from_millis(250)).await, Ok(()));
    assert_eq!(Instant::now(), start + Duration::from_millis(250));
}

#[tokio::test(start_paused = true)]
async fn sleep_ends_early_when_cancelled() {
    let start = Instant::now();
    let (ctx, cancel) = Context::background().with_cancel();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        cancel.cancel();
    });
    assert_eq!(
        ctx.sleep(Duration::from_secs(60)).await,
        Err(ContextError::Cancelled)
    );
    assert_eq!(Instant::now(), start + Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn sleep_past_deadline_ends_at_deadline() {
    let start = Instant::now();
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(2));
    assert_eq!(
        ctx.sleep(Duration::from_secs(60)).await,
        Err(ContextError::DeadlineExceeded)
    );
    assert_eq!(Instant::now(), start + Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn sleep_on_cancelled_context_returns_at_once() {
    let start = Instant::now();
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    assert_eq!(
        ctx.sleep(Duration::from_secs(60)).await,
        Err(ContextError::Cancelled)
    );
    assert_eq!(Instant::now(), start);
}

#[test]
fn check_is_ok_while_live_then_err() {
    let (ctx, cancel) = Context::background().with_cancel();
    assert_eq!(ctx.check(), Ok(()));
    cancel.cancel();
    assert_eq!(ctx.check(), Err(ContextError::Cancelled));
}

#[tokio::test(start_paused = true)]
async fn check_reports_deadline_exceeded() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(1));
    assert_eq!(ctx.check(), Ok(()));
    ctx.done().await;
    assert_eq!(ctx.check(), Err(ContextError::DeadlineExceeded));
}

#[test]
fn check_works_with_question_mark() {
    fn crunch(ctx: &Context, chunks: usize) -> Result<usize, ContextError> {
        let mut done = 0;
        for _ in 0..chunks {
            ctx.check()?;
            done += 1;
        }
        Ok(done)
    }
    let (ctx, cancel) = Context::background().with_cancel();
    assert_eq!(crunch(&ctx, 3), Ok(3));
    cancel.cancel();
    assert_eq!(crunch(&ctx, 3), Err(ContextError::Cancelled));
}

// ---------------------------------------------------------------------------
// after_cancel

#[tokio::test]
async fn after_cancel_runs_exactly_once() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let _reg = ctx.after_cancel(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        tx.send(()).unwrap();
    });
    cancel.cancel();
    cancel.cancel_with(Shutdown("again"));
    drop(cancel);
    assert_eq!(recv(&mut rx).await, Some(()));
    // The callback was consumed: its sender is gone, nothing more comes.
    assert_eq!(recv(&mut rx).await, None);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn after_cancel_runs_after_err_is_set() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let seen = ctx.clone();
    let _reg = ctx.after_cancel(move || {
        let cause = seen.cause().map(|c| c.to_string());
        tx.send((seen.err(), cause)).unwrap();
    });
    cancel.cancel_with(Shutdown("why"));
    let (err, cause) = recv(&mut rx).await.unwrap();
    assert_eq!(err, Some(ContextError::Cancelled));
    assert_eq!(cause.as_deref(), Some("shutdown: why"));
}

#[tokio::test]
async fn after_cancel_runs_on_its_own_task_and_cancel_never_waits() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let _reg = ctx.after_cancel(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        tx.send(tokio::task::try_id()).unwrap();
    });
    cancel.cancel();
    // Single-threaded runtime, no await yet: the callback cannot have run.
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    let task = recv(&mut rx).await.unwrap();
    assert!(task.is_some(), "the callback runs on a tokio task");
    assert_eq!(tokio::task::try_id(), None, "the test body is no task");
}

#[tokio::test]
async fn after_cancel_runs_on_ancestor_cancel() {
    let (root, cancel) = Context::background().with_cancel();
    let (child, _c) = root.with_cancel();
    let ctx = child.with_value(1u8);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let seen = ctx.clone();
    let _reg = ctx.after_cancel(move || tx.send(seen.err()).unwrap());
    cancel.cancel();
    assert_eq!(recv(&mut rx).await, Some(Some(ContextError::Cancelled)));
}

/// The registration keeps its context alive: with the context's clones
/// dropped and its handle disarmed, the parent's deadline still reaches it
/// and runs the callback (found by `context_model`).
#[tokio::test(start_paused = true)]
async fn after_cancel_runs_on_ancestor_deadline_after_its_context_and_handle_are_gone() {
    let (parent, _parent_cancel) = Context::background().with_timeout(Duration::from_millis(24));
    let (ctx, cancel) = parent.with_cancel();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let reg = ctx.after_cancel(move || tx.send(()).unwrap());
    drop(ctx);
    cancel.disarm();
    tokio::time::advance(Duration::from_millis(24)).await;
    assert_eq!(rx.recv().await, Some(()));
    assert!(!reg.stop(), "the callback ran: too late to prevent it");
}

#[tokio::test(start_paused = true)]
async fn after_cancel_runs_at_deadline() {
    let start = Instant::now();
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(3));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let seen = ctx.clone();
    let _reg = ctx.after_cancel(move || tx.send(seen.err()).unwrap());
    assert_eq!(rx.recv().await, Some(Some(ContextError::DeadlineExceeded)));
    assert_eq!(Instant::now(), start + Duration::from_secs(3));
}

#[tokio::test]
async fn after_cancel_stop_prevents_the_call() {
    let (ctx, cancel) = Context::background().with_cancel();
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let reg = ctx.after_cancel(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    assert!(reg.stop(), "prevented the call");
    assert!(!reg.stop(), "nothing left to prevent");
    cancel.cancel();
    yields(SETTLE).await;
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn after_cancel_stop_is_false_once_it_ran() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let reg = ctx.after_cancel(move || tx.send(()).unwrap());
    cancel.cancel();
    assert!(!reg.stop(), "started by the cancel: too late");
    assert_eq!(recv(&mut rx).await, Some(()));
    assert!(!reg.stop());
}

#[tokio::test]
async fn after_cancel_stop_is_false_after_the_callback_finished() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let reg = ctx.after_cancel(move || tx.send(()).unwrap());
    cancel.cancel();
    assert_eq!(recv(&mut rx).await, Some(()));
    assert!(!reg.stop());
}

#[tokio::test]
async fn after_cancel_on_cancelled_context_runs_at_once() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel_with(Shutdown("earlier"));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let seen = ctx.clone();
    let reg = ctx.after_cancel(move || tx.send(shutdown_cause(&seen)).unwrap());
    assert!(!reg.stop(), "already started");
    assert_eq!(recv(&mut rx).await, Some("earlier"));
}

#[tokio::test]
async fn after_cancel_never_runs_for_background() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let reg = Context::background().after_cancel(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    yields(SETTLE).await;
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert!(reg.stop(), "the first stop reports it never ran");
    assert!(!reg.stop());
}

#[tokio::test]
async fn after_cancel_never_runs_for_without_cancel() {
    let (ctx, cancel) = Context::background().with_cancel();
    let detached = ctx.without_cancel();
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let reg = detached.after_cancel(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    cancel.cancel();
    yields(SETTLE).await;
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert!(reg.stop());
}

#[tokio::test]
async fn dropping_after_cancel_leaves_it_registered() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let reg = ctx.after_cancel(move || tx.send(()).unwrap());
    drop(reg);
    cancel.cancel();
    assert_eq!(recv(&mut rx).await, Some(()));
}

#[tokio::test]
async fn after_cancel_on_dropped_uncancelled_context_never_runs() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.disarm();
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let reg = ctx.after_cancel(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    drop(ctx);
    yields(SETTLE).await;
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert!(reg.stop());
}

#[tokio::test]
async fn after_cancel_stopping_one_leaves_the_others() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let regs: Vec<_> = (0..4)
        .map(|i| {
            let tx = tx.clone();
            ctx.after_cancel(move || tx.send(i).unwrap())
        })
        .collect();
    drop(tx);
    assert!(regs[1].stop());
    assert!(regs[3].stop());
    cancel.cancel();
    let mut ran = Vec::new();
    while let Some(i) = recv(&mut rx).await {
        ran.push(i);
    }
    ran.sort_unstable();
    assert_eq!(ran, [0, 2]);
}

#[tokio::test]
async fn after_cancel_panic_stays_on_its_task() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _boom = ctx.after_cancel(|| panic!("callback panics on purpose"));
    let _ok = ctx.after_cancel(move || tx.send(()).unwrap());
    cancel.cancel();
    assert_eq!(recv(&mut rx).await, Some(()));
    assert!(ctx.is_cancelled());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_cancel_from_another_thread_runs_on_the_runtime() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let seen = ctx.clone();
    let _reg = ctx.after_cancel(move || tx.send(seen.err()).unwrap());
    std::thread::spawn(move || cancel.cancel()).join().unwrap();
    assert_eq!(recv(&mut rx).await, Some(Some(ContextError::Cancelled)));
}

/// Runs `f` on its own thread; fails instead of hanging if it deadlocks.
fn finishes_within(limit: Duration, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(limit) {
        Ok(()) => worker.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("deadlock: no return in {limit:?}")
        }
    }
}

/// Starting a callback on a runtime that has shut down drops it unrun; a
/// callback owning a `CancelHandle` of the same tree then cancels from inside
/// the canceller. That must not happen under the tree's lock.
#[test]
fn after_cancel_dropped_on_shut_down_runtime_may_cancel_without_deadlock() {
    finishes_within(Duration::from_secs(10), || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (ctx, cancel) = Context::background().with_cancel();
        let (sibling, sibling_cancel) = ctx.with_cancel();
        let (other_tree, other_cancel) = Context::background().with_cancel();
        let runs = Arc::new(AtomicUsize::new(0));
        let regs: Vec<AfterCancel> = rt.block_on(async {
            let counter = runs.clone();
            vec![
                ctx.after_cancel(move || drop(sibling_cancel)),
                ctx.after_cancel(move || drop(other_cancel)),
                ctx.after_cancel(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                }),
            ]
        });
        drop(rt);
        cancel.cancel();
        assert!(sibling.is_cancelled());
        // Dropped unrun, the closure's handle cancelled its context.
        assert!(other_tree.is_cancelled());
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        drop(regs);
    });
}

#[test]
fn value_owning_a_cancel_handle_cancels_on_drop_without_deadlock() {
    finishes_within(Duration::from_secs(10), || {
        let (parent, cancel_parent) = Context::background().with_cancel();
        let (sibling, _s) = parent.with_cancel();
        let holder = parent.with_value(cancel_parent);
        drop(holder);
        assert!(parent.is_cancelled());
        assert!(sibling.is_cancelled());
    });
}

// ---------------------------------------------------------------------------
// Cause

#[test]
fn cause_downcasts_to_the_original_error() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel_with(UserCancelled);
    let cause = ctx.cause().unwrap();
    assert_eq!(cause.downcast_ref::<UserCancelled>(), Some(&UserCancelled));
    assert!(cause.is::<UserCancelled>());
    assert!(cause.downcast_ref::<Shutdown>().is_none());
    assert!(cause.downcast_ref::<ContextError>().is_none());
    assert!(!cause.is::<ContextError>());
}

#[test]
fn cause_display_and_debug_are_the_wrapped_error() {
    let cause = Cause::new(Shutdown("disk"));
    assert_eq!(cause.to_string(), "shutdown: disk");
    assert_eq!(format!("{cause:?}"), format!("{:?}", Shutdown("disk")));
    assert_eq!(cause.as_error().to_string(), "shutdown: disk");
}

#[test]
fn cause_forwards_source() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel_with(RequestFailed(std::io::Error::other("connection reset")));
    let cause = ctx.cause().unwrap();
    assert_eq!(cause.to_string(), "request failed");
    let source = cause.source().expect("the wrapped error's source");
    assert_eq!(source.to_string(), "connection reset");
}

#[test]
fn forwarding_a_cause_does_not_double_wrap() {
    let (first, cancel_first) = Context::background().with_cancel();
    cancel_first.cancel_with(UserCancelled);
    let cause = first.cause().unwrap();

    let (second, cancel_second) = Context::background().with_cancel();
    cancel_second.cancel_with(cause.clone());
    let forwarded = second.cause().unwrap();
    assert_eq!(
        forwarded.downcast_ref::<UserCancelled>(),
        Some(&UserCancelled)
    );
    assert!(
        forwarded.downcast_ref::<Cause>().is_none(),
        "not a Cause in a Cause"
    );
    assert_eq!(forwarded.to_string(), cause.to_string());
    assert_eq!(format!("{forwarded:?}"), format!("{cause:?}"));

    let again = Cause::new(Cause::new(forwarded));
    assert!(again.is::<UserCancelled>());
    assert_eq!(format!("{again:?}"), "UserCancelled");
}

#[test]
fn forwarding_a_default_cause_keeps_the_context_error() {
    let (first, cancel_first) = Context::background().with_cancel();
    cancel_first.cancel();
    let (second, cancel_second) = Context::background().with_cancel();
    cancel_second.cancel_with(first.cause().unwrap());
    assert_eq!(context_error_cause(&second), Some(ContextError::Cancelled));
}

#[test]
fn cause_from_context_error_downcasts_to_it() {
    let from = Cause::from(ContextError::DeadlineExceeded);
    assert_eq!(
        from.downcast_ref::<ContextError>(),
        Some(&ContextError::DeadlineExceeded)
    );
    assert_eq!(from.to_string(), "context deadline exceeded");
    let new = Cause::new(ContextError::Cancelled);
    assert_eq!(
        new.downcast_ref::<ContextError>(),
        Some(&ContextError::Cancelled)
    );
    assert!(new.source().is_none());
}

#[test]
fn cancel_with_context_error_keeps_kind_cancelled() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel_with(ContextError::DeadlineExceeded);
    assert_eq!(ctx.err(), Some(ContextError::Cancelled));
    assert_eq!(
        context_error_cause(&ctx),
        Some(ContextError::DeadlineExceeded)
    );
}

#[test]
fn cause_clones_share_the_error() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel_with(std::io::Error::other("shared"));
    let a = ctx.cause().unwrap();
    let b = a.clone();
    let pa = a.downcast_ref::<std::io::Error>().unwrap() as *const std::io::Error;
    let pb = b.downcast_ref::<std::io::Error>().unwrap() as *const std::io::Error;
    assert_eq!(pa, pb, "a clone is a reference count, not a copy");
    let pc = ctx.cause().unwrap();
    let pc = pc.downcast_ref::<std::io::Error>().unwrap() as *const std::io::Error;
    assert_eq!(pa, pc);
}

#[test]
fn cause_reaches_every_descendant_as_the_same_error() {
    let (root, cancel) = Context::background().with_cancel();
    let (child, _c) = root.with_cancel();
    let grandchild = child.with_value(0u8);
    cancel.cancel_with(std::io::Error::other("one error"));
    let ptr = |ctx: &Context| {
        let cause = ctx.cause().unwrap();
        cause.downcast_ref::<std::io::Error>().unwrap() as *const std::io::Error
    };
    assert_eq!(ptr(&root), ptr(&child));
    assert_eq!(ptr(&root), ptr(&grandchild));
}

// ---------------------------------------------------------------------------
// Futures used across tasks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_futures_can_be_spawned() {
    let (ctx, cancel) = Context::background().with_cancel();
    let sleeper = tokio::spawn({
        let ctx = ctx.clone();
        async move { ctx.sleep(Duration::from_secs(60)).await }
    });
    let runner = tokio::spawn({
        let ctx = ctx.clone();
        async move { ctx.run(std::future::pending::<()>()).await }
    });
    let waiter = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            let mut done = pin!(ctx.done());
            (&mut done).await;
        }
    });
    tokio::task::yield_now().await;
    cancel.cancel();
    let all = async {
        (
            sleeper.await.unwrap(),
            runner.await.unwrap(),
            waiter.await.unwrap(),
        )
    };
    let (slept, ran, ()) = tokio::time::timeout(Duration::from_secs(5), all)
        .await
        .expect("all three woke");
    assert_eq!(slept, Err(ContextError::Cancelled));
    assert_eq!(ran, Err(ContextError::Cancelled));
}

/// A registration whose context can no longer be cancelled (its handle
/// given up, no deadline, no cancellable parent) costs nothing: the callback
/// is dropped, even one that holds a clone of its own context.
#[tokio::test]
async fn after_cancel_is_dropped_once_its_context_can_never_end() {
    let probe = Arc::new(());
    let (ctx, handle) = Context::background().with_cancel();
    let registration = {
        let (probe, keep) = (probe.clone(), ctx.clone());
        ctx.after_cancel(move || drop((probe, keep)))
    };
    drop(registration); // stays registered
    assert_eq!(Arc::strong_count(&probe), 2);
    handle.disarm();
    assert_eq!(Arc::strong_count(&probe), 1, "the callback was dropped");

    // Registered afterwards: never stored, dropped with its handle.
    let late = {
        let probe = probe.clone();
        ctx.after_cancel(move || drop(probe))
    };
    assert!(late.stop(), "it could never have run");
    assert_eq!(Arc::strong_count(&probe), 1);

    // With a cancellable parent, disarming keeps the callback: the parent
    // can still cancel it.
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (child, child_handle) = parent.with_cancel();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let _kept = child.after_cancel(move || {
        let _ = tx.send(());
    });
    child_handle.disarm();
    cancel_parent.cancel();
    rx.await.expect("the callback ran");
}

/// An application error with room for the context's end.
#[derive(Debug, PartialEq)]
enum FetchError {
    NotFound,
    Stopped(ContextError),
}

impl From<ContextError> for FetchError {
    fn from(error: ContextError) -> Self {
        FetchError::Stopped(error)
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn try_run_flattens_the_futures_error_and_the_contexts_end_into_one() {
    let (ctx, cancel) = Context::background().with_cancel();
    assert_eq!(ctx.try_run(async { Ok::<_, FetchError>(7) }).await, Ok(7));
    assert_eq!(
        ctx.try_run(async { Err::<u8, _>(FetchError::NotFound) })
            .await,
        Err(FetchError::NotFound)
    );
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let slow = async move {
        struct SetOnDrop(Arc<AtomicBool>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _guard = SetOnDrop(flag);
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok::<u8, FetchError>(1)
    };
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        cancel.cancel();
    });
    let start = Instant::now();
    assert_eq!(
        ctx.try_run(slow).await,
        Err(FetchError::Stopped(ContextError::Cancelled))
    );
    assert_eq!(start.elapsed(), Duration::from_millis(10));
    assert!(
        dropped.load(Ordering::SeqCst),
        "the future was dropped at the cancel"
    );
    canceller.await.unwrap();
}

// ---------------------------------------------------------------------------
// A handle dropped after its context: whatever hangs off the context still
// sees the cancel (the handle skips it only when nothing could).

#[tokio::test]
async fn a_handle_dropped_after_its_context_still_runs_its_callbacks() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _reg = ctx.after_cancel(move || tx.send(()).unwrap());
    drop(ctx);
    drop(cancel);
    assert_eq!(recv(&mut rx).await, Some(()));
}

#[test]
fn a_handle_dropped_after_its_context_still_cancels_its_token() {
    let (ctx, cancel) = Context::background().with_cancel();
    let token = ctx.to_token();
    drop(ctx);
    assert!(!token.is_cancelled());
    drop(cancel);
    assert!(token.is_cancelled());
}

#[test]
fn a_handle_dropped_after_its_context_still_cancels_its_children() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (child, _keep) = ctx.with_cancel();
    drop(ctx);
    drop(cancel);
    assert_eq!(child.err(), Some(ContextError::Cancelled));
    let cause = child.cause().unwrap();
    assert!(cause.to_string().contains("dropped"), "{cause}");
}

#[tokio::test]
async fn a_handle_dropped_after_its_context_still_cancels_a_group_on_it() {
    let (ctx, cancel) = Context::background().with_cancel();
    let mut group = taskgroup::TaskGroup::<(), String>::with_context(&ctx);
    group.spawn(|ctx| async move {
        ctx.done().await;
        Ok(())
    });
    drop(ctx);
    drop(cancel);
    // The group's cancel drops its task (no grace).
    let outcomes = group.wait_outcomes().await;
    assert!(outcomes[0].is_cancelled(), "{:?}", outcomes[0]);
}

/// Many threads drop contexts and their handles in both orders while the
/// parent is cancelled: every context left with a waiter is cancelled, and
/// no drop hangs or panics.
#[test]
fn handles_and_contexts_dropped_in_both_orders_across_threads_racing_a_parent_cancel() {
    for round in 0..200 {
        let (parent, cancel_parent) = Context::background().with_cancel();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let parent = parent.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let (ctx, cancel) = parent.with_cancel();
                        let token = (i % 3 == 0).then(|| ctx.to_token());
                        if (i + t + round) % 2 == 0 {
                            drop(ctx);
                            drop(cancel);
                        } else {
                            drop(cancel);
                            drop(ctx);
                        }
                        if let Some(token) = token {
                            assert!(token.is_cancelled(), "a token missed its context's cancel");
                        }
                    }
                })
            })
            .collect();
        if round % 2 == 0 {
            cancel_parent.cancel();
        }
        for thread in threads {
            thread.join().unwrap();
        }
        drop(cancel_parent);
        assert!(parent.is_cancelled());
    }
}
