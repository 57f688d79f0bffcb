//! User code that panics inside a cancel walk: a context value's destructor
//! run when the canceller lets go of the last reference to its node. The
//! walk must still finish every node it cancelled (waiters woken, group
//! hooks run, `after_cancel` callbacks started) and only then resume the
//! first panic.

mod support;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use support::{Rng, rounds, seed_from_env_or_clock};
use taskgroup::{Context, ContextError, TaskGroup};

const PANIC_MESSAGE: &str = "PanicOnDrop dropped";

/// A context value whose destructor panics.
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        std::panic::panic_any(PANIC_MESSAGE);
    }
}

fn is_ours(payload: &(dyn std::any::Any + Send)) -> bool {
    payload.downcast_ref::<&str>() == Some(&PANIC_MESSAGE)
}

/// The racy test panics tens of thousands of times on purpose: keep the
/// default hook for every other panic, silence ours.
fn quiet_panic_hook() {
    support::quiet_panics(|message| message == PANIC_MESSAGE);
}

/// Spins a little, then yields: the machine may have fewer free cores than
/// the two threads that take turns here.
fn wait_until(mut ready: impl FnMut() -> bool) {
    let mut spins = 0u32;
    while !ready() {
        if spins < 200 {
            spins += 1;
            std::hint::spin_loop();
        } else {
            thread::yield_now();
        }
    }
}

/// The repro, deterministic. Under one root: a group `h` with a task
/// parked forever (the root's first child), a value context `b` whose value
/// panics when dropped, then a `limit(1)` group whose second, queued closure
/// holds the last clone of `b`. The walk finishes the nodes in reverse:
/// the limited group (its hook drops the queued closure, and with it every
/// reference to `b` but the canceller's), then `b` (the canceller drops the
/// last reference: the panic), then `h`, which must still be finished.
#[tokio::test]
async fn a_panicking_value_destructor_does_not_stop_the_cancel_walk() {
    quiet_panic_hook();
    let (root, rc) = Context::background().with_cancel();

    let mut h = TaskGroup::<(), ContextError>::builder()
        .context(&root)
        .build();
    h.spawn(|_ctx| std::future::pending());
    let h_ctx = h.context().clone();
    let (fired_tx, fired_rx) = tokio::sync::oneshot::channel();
    let _callback = h_ctx.after_cancel(move || {
        let _ = fired_tx.send(());
    });

    let b = root.with_value(PanicOnDrop);

    let mut limited = TaskGroup::<(), ContextError>::builder()
        .limit(1)
        .context(&root)
        .build();
    limited.spawn(|_ctx| std::future::pending());
    limited.spawn(move |_ctx| async move {
        let _b = b;
        Ok(())
    });

    // A waiter already parked in `done()` when the cancel comes: only a
    // wake-up polls it again.
    let parked = Arc::new(AtomicBool::new(false));
    let waiter = tokio::spawn({
        let (ctx, parked) = (h_ctx.clone(), parked.clone());
        async move {
            let done = ctx.done();
            parked.store(true, Ordering::Relaxed);
            done.await;
        }
    });
    // One thread: once the flag is up, the waiter has been polled and is
    // parked in `done()`.
    support::eventually("the waiter parks", || parked.load(Ordering::Relaxed)).await;

    let cancelled = catch_unwind(AssertUnwindSafe(|| rc.cancel()));
    let payload = cancelled.expect_err("the value's panic is resumed after the walk");
    assert!(is_ours(&*payload), "the first panic is the one resumed");
    assert_eq!(h_ctx.err(), Some(ContextError::Cancelled));

    // Timeouts here only detect a hang; nothing waits for them to pass.
    let limit = Duration::from_secs(5);
    tokio::time::timeout(limit, waiter)
        .await
        .expect("h's done() waiter is woken")
        .expect("the waiter returns");
    tokio::time::timeout(limit, fired_rx)
        .await
        .expect("h's after_cancel callback is started")
        .expect("the callback ran");
    let waited = tokio::time::timeout(limit, h.wait())
        .await
        .expect("h's cancel hook ran: its parked task was dropped");
    assert!(waited.is_err());
    let waited = tokio::time::timeout(limit, limited.wait())
        .await
        .expect("the limited group is finished too");
    assert!(waited.is_err());
}

/// The racy variant: another thread drops the last `Context` of the
/// panicking value while `cancel` walks. Whichever thread lets go last runs
/// the destructor; when it is the canceller, the walk must still finish the
/// node after it (a waiter parked on it is woken). Tens of thousands of
/// rounds (`TASKGROUP_STRESS_ROUNDS`), with a jitter on each side so the
/// drop lands anywhere in the walk.
#[test]
fn a_value_dropped_on_another_thread_during_the_walk_never_stops_it() {
    quiet_panic_hook();
    let rounds = rounds(30_000);
    let seed = seed_from_env_or_clock();
    let mut rng = Rng::new(seed);

    let round = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let slot: Arc<Mutex<Option<(Context, u32)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let dropper = {
        let (round, dropped, slot, stop) =
            (round.clone(), dropped.clone(), slot.clone(), stop.clone());
        thread::spawn(move || {
            let mut seen = 0;
            let mut panics = 0usize;
            loop {
                let mut now = seen;
                wait_until(|| {
                    now = round.load(Ordering::Acquire);
                    now != seen || stop.load(Ordering::Acquire)
                });
                if now == seen {
                    return panics;
                }
                seen = now;
                let (b, spins) = slot
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
                    .expect("a context every round");
                for _ in 0..spins {
                    std::hint::spin_loop();
                }
                if catch_unwind(AssertUnwindSafe(move || drop(b))).is_err() {
                    panics += 1;
                }
                dropped.store(now, Ordering::Release);
            }
        })
    };

    let started = Instant::now();
    let mut canceller_panics = 0usize;
    for r in 1..=rounds {
        let (root, rc) = Context::background().with_cancel();
        // Finished last: the node whose waiter must be woken.
        let (victim, _victim_cancel) = root.with_cancel();
        let mut waiter = tokio_test::task::spawn(victim.done());
        assert!(waiter.poll().is_pending());
        let b = root.with_value(PanicOnDrop);
        // Finished before `b`: they widen the window between the walk
        // taking its reference to `b` and dropping it.
        let fillers: Vec<_> = (0..4).map(|i| root.with_value(i)).collect();

        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some((b, rng.below(400) as u32));
        round.store(r, Ordering::Release);
        for _ in 0..rng.below(400) {
            std::hint::spin_loop();
        }
        if catch_unwind(AssertUnwindSafe(|| rc.cancel())).is_err() {
            canceller_panics += 1;
        }
        assert!(victim.is_cancelled(), "round {r} (seed {seed})");
        assert!(
            waiter.is_woken(),
            "round {r} (seed {seed}): the walk stopped at the panic; the waiter was never woken"
        );
        wait_until(|| dropped.load(Ordering::Acquire) == r);
        drop(fillers);
    }
    stop.store(true, Ordering::Release);
    let dropper_panics = dropper.join().expect("the dropper thread");
    assert_eq!(canceller_panics + dropper_panics, rounds);
    println!(
        "{rounds} rounds in {:?} (seed {seed}): the destructor ran in the walk {canceller_panics} times, \
         on the other thread {dropper_panics} times",
        started.elapsed()
    );
}

/// The group's own bookkeeping runs user code too: a failing task's
/// decision cancels the group, and that cancel may drop a value's last
/// reference. It runs on whichever thread the failing task ended on, where
/// nobody would see a panic; `wait` re-raises it after the join instead,
/// like a task's.
///
/// A `limit(1)` group: the running task fails; the queued closure holds
/// the only clone of `b`, a child of the group's context whose value panics
/// when dropped. The decision's cancel walk takes a reference to `b`, runs
/// the group's hook (which drops the queued closure, and with it that
/// clone), then lets go of `b` last: the panic, inside the cancel.
#[tokio::test]
async fn a_panic_in_user_code_the_groups_cancel_ran_reaches_wait() {
    quiet_panic_hook();
    let mut group = TaskGroup::<(), String>::builder().limit(1).build();
    let b = group.context().with_value(PanicOnDrop);
    group.spawn(|_ctx| async { Err("boom".to_owned()) });
    group.spawn(move |_ctx| async move {
        let _b = b;
        Ok(())
    });
    let joined = tokio::time::timeout(
        Duration::from_secs(60),
        futures::FutureExt::catch_unwind(AssertUnwindSafe(group.wait())),
    )
    .await
    .expect("no hang");
    let payload = joined.expect_err("wait re-raises the panic the cancel resumed");
    assert!(is_ours(&*payload), "the value's own panic, not another");
}
