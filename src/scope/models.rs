//! loom models of invariant 3 of `mod.rs`, "a wake-up is never lost":
//! every way a scope's future can be woken from another thread (a task's
//! waker, a spawn through a handle, a cancel of its context) races the
//! scope future's own poll, and the future must never return `Pending`
//! for good while a task is ready, a task is spawned, or its context is
//! cancelled. Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --lib scope::models`
//! (`.ci/run` does, in its own target directory).
//!
//! Every model drives the scope's own code: a real [`scope`] future,
//! awaited with `loom::future::block_on` on the model's main thread, whose
//! tasks wait on a [`Signal`] that another thread fires. `block_on` parks
//! the thread whenever the future returns `Pending`, and only its waker
//! unparks it: a lost wake-up leaves every thread parked, which loom
//! reports as a deadlock, and the model fails.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Poll, Waker};

use loom::sync::Mutex;
use loom::thread;

use super::{Scope, scope};
use crate::{CancelHandle, Context, ContextError, GroupError};

/// A one-shot event, fired on one thread and awaited on another, as a
/// tokio channel would be: the flag and the waiter's waker under a lock,
/// the waker woken outside it.
#[derive(Default)]
struct Signal {
    state: Mutex<(bool, Option<Waker>)>,
}

impl Signal {
    fn fire(&self) {
        let waker = {
            let mut state = self.state.lock().unwrap();
            state.0 = true;
            state.1.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    async fn wait(&self) {
        poll_fn(|cx| {
            let mut state = self.state.lock().unwrap();
            if state.0 {
                Poll::Ready(())
            } else {
                state.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }
}

type Handle = Scope<'static, u8, String>;

/// A task waits on a signal that another thread fires, maybe while the
/// scope future is polling (its waker then only queues the slot, and the
/// future's last look must find it), maybe once it has returned `Pending`
/// (the waker wakes it). Either way the task is polled again and the
/// scope returns its value.
#[test]
fn a_task_woken_from_another_thread_while_the_scope_polls_is_polled_again() {
    loom::model(|| {
        let signal = Arc::new(Signal::default());
        let waited = signal.clone();
        let fut = scope(&Context::background(), move |s: Handle| async move {
            s.spawn(move |_ctx| async move {
                waited.wait().await;
                Ok(1)
            });
        });
        let firing = thread::spawn(move || signal.fire());
        assert_eq!(loom::future::block_on(fut), Ok(vec![1]));
        firing.join().unwrap();
    });
}

/// Another thread spawns through a clone of the handle while the scope
/// future polls: the spawn pushes under the `spawned` lock and wakes the
/// future unless it is polling, whose last look then sees the push. The
/// spawned task is run (it fires the signal the body waits on), so the
/// scope ends.
#[test]
fn a_task_spawned_from_another_thread_while_the_scope_polls_is_run() {
    loom::model(|| {
        let signal = Arc::new(Signal::default());
        let waited = signal.clone();
        let mut handle = None;
        let fut = scope(&Context::background(), |s: Handle| {
            handle = Some(s.clone());
            async move {
                waited.wait().await; // fired by the other thread's task
            }
        });
        let handle = handle.expect("the body was called at once");
        let spawner = thread::spawn(move || {
            handle.spawn(move |_ctx| async move {
                signal.fire();
                Ok(2)
            });
        });
        assert_eq!(loom::future::block_on(fut), Ok(vec![2]));
        spawner.join().unwrap();
    });
}

/// Another thread cancels the scope's parent while the scope future
/// polls; the only task never looks at its context, so nothing but the
/// cancel hook can wake the future. Either the loop sees the cancel, or
/// the hook's wake-up reaches the future: the task is dropped and the
/// scope returns `Cancelled`.
#[test]
fn a_cancel_from_another_thread_while_the_scope_polls_ends_it() {
    loom::model(|| {
        let (parent, cancel): (Context, CancelHandle) = Context::background().with_cancel();
        let fut = scope(&parent, |s: Handle| {
            // Spawned before the race, so the scope has a task whatever
            // the cancel finds (a body dropped unpolled spawns nothing).
            s.spawn(|_ctx| std::future::pending());
            async {}
        });
        let cancelling = thread::spawn(move || cancel.cancel());
        assert_eq!(
            loom::future::block_on(fut),
            Err(GroupError::Cancelled(ContextError::Cancelled))
        );
        cancelling.join().unwrap();
    });
}
