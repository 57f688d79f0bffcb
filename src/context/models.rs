//! loom models of a deferred child (tree invariant 10): a group task's own
//! context, read through its parent until something needs it linked. In
//! the crate, since `Context::for_task` is not public. Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --lib context::models`.

use loom::thread;

use super::{Cause, Context, ContextError, cancellation};

#[derive(Debug)]
struct By(&'static str);

impl std::fmt::Display for By {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cancelled by {}", self.0)
    }
}

impl std::error::Error for By {}

fn by(ctx: &Context) -> Option<&'static str> {
    ctx.cause()
        .and_then(|cause| cause.downcast_ref::<By>().map(|by| by.0))
}

/// A thread that waits on `ctx` and returns who cancelled it.
fn wait_for_cause(ctx: &Context) -> thread::JoinHandle<Option<&'static str>> {
    let ctx = ctx.clone();
    thread::spawn(move || {
        loom::future::block_on(ctx.done());
        by(&ctx)
    })
}

fn cancel(ctx: &Context, who: &'static str) -> bool {
    ctx.cancel_internal(cancellation(
        ContextError::Cancelled,
        Some(Cause::new(By(who))),
    ))
}

/// A waiter on a deferred child links it; the parent's cancel, racing
/// the link, either finds it linked and wakes it, or the link finds the
/// parent cancelled and takes its cancellation. Either way the waiter
/// wakes, with the parent's cause.
#[test]
fn a_waiter_on_a_deferred_child_is_woken_by_the_parents_cancel() {
    loom::model(|| {
        let (parent, _handle) = Context::background().with_cancel();
        let task = parent.for_task();
        let waiter = wait_for_cause(&task);
        assert!(cancel(&parent, "parent"));
        assert!(task.is_cancelled(), "visible through the parent at once");
        assert_eq!(by(&task), Some("parent"));
        assert_eq!(waiter.join().unwrap(), Some("parent"));
    });
}

/// Two waiters link the same deferred child at once: one links it, the
/// other finds it linked; the parent's cancel wakes both.
#[test]
fn two_waiters_linking_one_deferred_child_are_both_woken() {
    loom::model(|| {
        let (parent, _handle) = Context::background().with_cancel();
        let task = parent.for_task();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let task = task.clone();
                thread::spawn(move || {
                    loom::future::block_on(task.done());
                    task.err()
                })
            })
            .collect();
        cancel(&parent, "parent");
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap(), Some(ContextError::Cancelled));
        }
    });
}

/// The task's own cancel (`cancel_task`) races a waiter's link and the
/// parent's cancel: the waiter wakes, and the child reports whichever
/// cancel reached it first, for good.
#[test]
fn own_cancel_racing_a_link_and_the_parents_cancel() {
    loom::model(|| {
        let (parent, _handle) = Context::background().with_cancel();
        let task = parent.for_task();
        let waiter = wait_for_cause(&task);
        let own = {
            let task = task.clone();
            thread::spawn(move || cancel(&task, "own"))
        };
        cancel(&parent, "parent");
        own.join().unwrap();
        let seen = waiter.join().unwrap();
        assert!(matches!(seen, Some("own" | "parent")));
        assert_eq!(by(&task), seen, "the cause never changes once seen");
    });
}

/// A child made from a deferred context links it first: the parent's
/// cancel, racing that, reaches the grandchild.
#[test]
fn a_child_of_a_deferred_context_is_reached_by_the_parents_cancel() {
    loom::model(|| {
        let (parent, _handle) = Context::background().with_cancel();
        let task = parent.for_task();
        let maker = thread::spawn(move || task.with_cancel());
        let cancelled = cancel(&parent, "parent");
        let (child, _child_handle) = maker.join().unwrap();
        assert!(cancelled);
        assert!(child.is_cancelled());
        assert_eq!(by(&child), Some("parent"));
    });
}
