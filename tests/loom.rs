//! loom models of the cancellation tree (`src/context/tree.rs`): every
//! interleaving of cancel, child creation, waiting and drop, within loom's
//! bounds. Run with
//! `RUSTFLAGS="--cfg loom" cargo test --release --test loom`
//! (`.ci/run` does, with `LOOM_MAX_PREEMPTIONS=3`). The models of the
//! runner's task states are unit tests, in `src/group/runner/models.rs`:
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --lib runner::models`.
#![cfg(loom)]

use loom::sync::Mutex;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use std::sync::Arc;
use taskgroup::{Context, ContextError};

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("cancelled by {0}")]
struct By(&'static str);

fn by(ctx: &Context) -> Option<&'static str> {
    ctx.cause()
        .and_then(|cause| cause.downcast_ref::<By>().map(|by| by.0))
}

/// Invariant 3: a child created while its parent is being cancelled is
/// either linked and cancelled by the walk, or born cancelled; and a child
/// whose creation finished before `cancel()` returned is cancelled when it
/// returns.
#[test]
fn cancel_racing_child_creation_never_misses_the_child() {
    loom::model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let published = Arc::new(Mutex::new(None));
        let creator = {
            let (parent, published) = (parent.clone(), published.clone());
            thread::spawn(move || {
                let (child, handle) = parent.with_cancel();
                *published.lock().unwrap() = Some(child.clone());
                (child, handle)
            })
        };
        cancel.cancel();
        if let Some(child) = published.lock().unwrap().as_ref() {
            assert_eq!(child.err(), Some(ContextError::Cancelled));
        }
        let (child, _handle) = creator.join().unwrap();
        assert_eq!(child.err(), Some(ContextError::Cancelled));
    });
}

/// Invariant 5: two cancels of nested contexts at once. Whichever returns,
/// the subtree under what it cancelled is cancelled; the first cause on each
/// node wins and a child agrees with the node that cancelled it.
#[test]
fn nested_cancels_at_once_each_see_their_subtree_cancelled() {
    loom::model(|| {
        let (root, cancel_root) = Context::background().with_cancel();
        let (mid, cancel_mid) = root.with_cancel();
        let leaf = mid.with_value(1u8);

        let outer = {
            let (mid, leaf) = (mid.clone(), leaf.clone());
            thread::spawn(move || {
                cancel_root.cancel_with(By("root"));
                assert!(mid.is_cancelled());
                assert!(leaf.is_cancelled());
            })
        };
        cancel_mid.cancel_with(By("mid"));
        assert!(leaf.is_cancelled());
        outer.join().unwrap();

        assert_eq!(by(&root), Some("root"));
        assert_eq!(by(&leaf), by(&mid));
        drop(cancel_mid);
    });
}

/// The same race, the other way round: the spawned thread cancels `mid`
/// and checks, the main thread cancels the root. Loom shows the spawned
/// thread the main thread's walk half done, not the reverse (see
/// `cancel_finding_the_context_cancelled_sees_its_subtree_cancelled`), so
/// only this order tries a cancel of `mid` that finds it set by a walk from
/// the root still going below it.
#[test]
fn nested_cancels_at_once_each_see_their_subtree_cancelled_the_other_way_round() {
    loom::model(|| {
        let (root, cancel_root) = Context::background().with_cancel();
        let (mid, cancel_mid) = root.with_cancel();
        let leaf = mid.with_value(1u8);

        let inner = {
            let leaf = leaf.clone();
            thread::spawn(move || {
                cancel_mid.cancel_with(By("mid"));
                assert!(leaf.is_cancelled());
                cancel_mid
            })
        };
        cancel_root.cancel_with(By("root"));
        assert!(mid.is_cancelled());
        assert!(leaf.is_cancelled());
        drop(inner.join().unwrap());

        assert_eq!(by(&root), Some("root"));
        assert_eq!(by(&leaf), by(&mid));
    });
}

/// Two threads cancel the same context with different causes: one wins, and
/// each caller sees the subtree cancelled with the winner's cause.
#[test]
fn concurrent_cancels_of_one_context_agree_on_one_cause() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let child = ctx.with_value(());
        let cancel = Arc::new(cancel);
        let other = {
            let (cancel, child) = (cancel.clone(), child.clone());
            thread::spawn(move || {
                cancel.cancel_with(By("a"));
                by(&child).expect("cancelled when cancel returns")
            })
        };
        cancel.cancel_with(By("b"));
        let mine = by(&child).expect("cancelled when cancel returns");
        let theirs = other.join().unwrap();
        assert_eq!(mine, theirs);
        assert_eq!(by(&ctx), Some(mine));
    });
}

/// The wake-up protocol (`AWAITED` in the state, invariant 8): a waiter that starts waiting
/// while the cancel is in flight is always woken. A lost wake-up would leave
/// the waiter blocked, which loom reports as a deadlock.
#[test]
fn done_is_always_woken_by_a_concurrent_cancel() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let waiter = {
            let ctx = ctx.clone();
            thread::spawn(move || {
                loom::future::block_on(ctx.done());
                ctx.err()
            })
        };
        cancel.cancel();
        assert_eq!(waiter.join().unwrap(), Some(ContextError::Cancelled));
    });
}

/// The wake-up protocol in a walk: a waiter on a child, which the walk
/// from its parent sets, is always woken (`AWAITED` is or'ed into the
/// child's state, and the walk's or finds it, or the waiter's look at the
/// state finds the walk's).
#[test]
fn done_on_a_child_is_always_woken_by_a_concurrent_cancel_of_its_parent() {
    loom::model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let (child, _child_handle) = parent.with_cancel();
        let waiter = {
            let child = child.clone();
            thread::spawn(move || {
                loom::future::block_on(child.done());
                child.err()
            })
        };
        cancel.cancel();
        assert_eq!(waiter.join().unwrap(), Some(ContextError::Cancelled));
        assert!(child.is_cancelled());
    });
}

/// Two waiters at once: the second finds `AWAITED` already set; both are
/// woken, and each sees the state once woken. (With a waiter that skips its
/// or when it finds `AWAITED`, loom finds one woken, re-armed, and shown
/// the state from before the cancel for good.)
#[test]
fn two_waiters_are_both_woken_by_a_concurrent_cancel() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let ctx = ctx.clone();
                thread::spawn(move || {
                    loom::future::block_on(ctx.done());
                    ctx.err()
                })
            })
            .collect();
        cancel.cancel();
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap(), Some(ContextError::Cancelled));
        }
    });
}

/// A child dropped while its parent is cancelled: the unlink and the walk
/// meet on the parent's lock and the child's slot; nothing is visited
/// twice, nothing deadlocks, and a surviving sibling is cancelled.
#[test]
fn child_dropped_while_parent_is_cancelled() {
    loom::model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let (doomed, doomed_handle) = parent.with_cancel();
        doomed_handle.disarm();
        let sibling = parent.with_value(2u8);
        let dropped = Arc::new(AtomicBool::new(false));
        let dropper = {
            let dropped = dropped.clone();
            thread::spawn(move || {
                drop(doomed);
                dropped.store(true, Ordering::Release);
            })
        };
        cancel.cancel();
        assert!(sibling.is_cancelled());
        dropper.join().unwrap();
        assert!(dropped.load(Ordering::Acquire));
        // A child made now is born cancelled, not linked to a dead slab.
        assert!(parent.with_value(3u8).is_cancelled());
    });
}

/// The same with the dropped child in the parent's slab and the survivor
/// in its first place (`inner.first`): each way of being linked meets the
/// walk.
#[test]
fn slab_child_dropped_while_parent_is_cancelled() {
    loom::model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let first = parent.with_value(1u8);
        let (doomed, doomed_handle) = parent.with_cancel();
        doomed_handle.disarm();
        let dropper = thread::spawn(move || drop(doomed));
        cancel.cancel();
        assert!(first.is_cancelled());
        dropper.join().unwrap();
        assert!(parent.with_value(3u8).is_cancelled());
    });
}

/// Invariant 7: a cancel that finds its context settled returns without
/// the stripe lock, and still sees the subtree cancelled; one that finds
/// it cancelled but not settled waits for the walk; and so does a handle
/// dropped after its context was cancelled from above. A chain, so that
/// the walk from the root is still going below `mid` once it set `mid`.
/// (The checking cancels run on the spawned thread: loom shows it the main
/// thread's walk half done, and not the other way round.)
#[test]
fn cancel_finding_the_context_cancelled_sees_its_subtree_cancelled() {
    loom::model(|| {
        let (root, cancel_root) = Context::background().with_cancel();
        let (mid, cancel_mid) = root.with_cancel();
        let (leaf, cancel_leaf) = mid.with_cancel();
        let below = leaf.with_value(1u8);

        let checker = thread::spawn(move || {
            // Whoever sets `mid`, when this returns `leaf` and `below` are.
            cancel_mid.cancel();
            assert!(leaf.is_cancelled());
            assert!(below.is_cancelled());
            // A handle dropped after its context was cancelled from above.
            drop(cancel_leaf);
            assert!(below.is_cancelled());
        });
        cancel_root.cancel();
        assert!(mid.is_cancelled());
        checker.join().unwrap();
    });
}

/// Invariant 9: a child whose context is dropped, then its handle (the
/// skipped cancel: the handle holds the only reference), while its parent
/// is cancelled and its token-holding sibling is dropped the same way. The
/// walk may take the child out of the parent's slot at any point of the
/// drop: nothing deadlocks, and the sibling, which has something attached
/// (a token), is cancelled whichever comes first.
#[test]
fn an_unobserved_handle_drop_racing_the_parents_cancel() {
    loom::model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let (child, child_handle) = parent.with_cancel();
        let (sibling, sibling_handle) = parent.with_cancel();
        let token = sibling.to_token();
        let dropper = thread::spawn(move || {
            drop(child);
            drop(child_handle);
            drop(sibling);
            drop(sibling_handle);
        });
        cancel.cancel();
        dropper.join().unwrap();
        assert!(token.is_cancelled(), "an attached token missed the cancel");
        assert!(parent.with_value(3u8).is_cancelled());
    });
}
