//! A context is data: its deadline holds on whatever runtime waits on it,
//! even when the runtime it was made on is gone (dropped) or never driven
//! (a current_thread runtime nobody runs). Real short deadlines; the
//! timeouts around the waits only detect a hang, nothing waits for them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use taskgroup::{CancelHandle, Context, ContextError};
use tokio::runtime::{Builder, Runtime};
use tokio::time::Instant;

mod support;
use support::multi_thread;

const DEADLINE: Duration = Duration::from_millis(30);
/// Far past the deadline: reaching it means the deadline never fired.
const HANG: Duration = Duration::from_secs(10);

fn current_thread() -> Runtime {
    Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current_thread runtime")
}

/// A context with a deadline `DEADLINE` from now, made on `runtime`.
fn deadline_on(runtime: &Runtime) -> (Context, CancelHandle) {
    let _enter = runtime.enter();
    Context::background().with_timeout(DEADLINE)
}

/// Awaits `ctx.done()` on `runtime`; it must end at the deadline, not
/// before, with `DeadlineExceeded`.
fn done_at_the_deadline(runtime: &Runtime, ctx: &Context) {
    let deadline = ctx.deadline().expect("a deadline");
    runtime.block_on(async {
        tokio::time::timeout(HANG, ctx.done())
            .await
            .expect("done() ends at the deadline");
        assert!(Instant::now() >= deadline, "not before the deadline");
    });
    assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
}

#[test]
fn a_deadline_made_on_a_dropped_runtime_fires_on_the_runtime_that_waits() {
    let a = multi_thread(2);
    let (ctx, _cancel) = deadline_on(&a);
    drop(a);
    done_at_the_deadline(&current_thread(), &ctx);
}

#[test]
fn a_deadline_made_on_a_current_thread_runtime_nobody_drives_fires_elsewhere() {
    let a = current_thread();
    let (ctx, _cancel) = deadline_on(&a);
    done_at_the_deadline(&multi_thread(2), &ctx);
    drop(a);
}

/// The runtime goes after the waiter started waiting on another one.
#[test]
fn a_waiter_already_parked_when_the_deadline_runtime_is_dropped_still_ends() {
    let a = current_thread();
    let (ctx, _cancel) = deadline_on(&a);
    let b = multi_thread(2);
    let waiter = b.spawn({
        let ctx = ctx.clone();
        async move { ctx.done().await }
    });
    drop(a);
    b.block_on(async {
        tokio::time::timeout(HANG, waiter)
            .await
            .expect("the parked waiter ends at the deadline")
            .expect("the waiter returns");
    });
    assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
}

/// The context that owns the deadline expires, not only the one waited on:
/// a child's wait cancels the ancestor whose deadline it inherited, and a
/// sibling sees it too.
#[test]
fn a_child_waiting_on_an_inherited_deadline_expires_its_owner() {
    let a = current_thread();
    let (ctx, _cancel) = deadline_on(&a);
    let (child, _child_cancel) = ctx.with_cancel();
    let sibling = ctx.with_value(7u8);
    drop(a);
    done_at_the_deadline(&current_thread(), &child);
    assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
    assert_eq!(sibling.err(), Some(ContextError::DeadlineExceeded));
}

#[test]
fn run_and_sleep_end_at_a_deadline_whose_runtime_is_gone() {
    let a = current_thread();
    let (ctx, _cancel) = deadline_on(&a);
    drop(a);
    current_thread().block_on(async {
        let run = ctx.run(std::future::pending::<()>());
        let ran = tokio::time::timeout(HANG, run).await.expect("run() ends");
        assert_eq!(ran, Err(ContextError::DeadlineExceeded));
    });
    let a = current_thread();
    let (ctx, _cancel) = deadline_on(&a);
    drop(a);
    current_thread().block_on(async {
        let slept = tokio::time::timeout(HANG, ctx.sleep(Duration::from_secs(3600)))
            .await
            .expect("sleep() ends");
        assert_eq!(slept, Err(ContextError::DeadlineExceeded));
    });
}

/// What the `after_cancel` docs say: a callback registered on a live
/// runtime runs when a waiter elsewhere fires the deadline; one registered
/// on the runtime that is gone is dropped, never run.
#[test]
fn after_cancel_callbacks_when_the_deadline_runtime_is_gone() {
    let a = current_thread();
    let (ctx, _cancel) = deadline_on(&a);
    let ran_on_a = Arc::new(AtomicBool::new(false));
    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let _on_a = {
        let _enter = a.enter();
        let (ran, guard) = (ran_on_a.clone(), Dropped(dropped.clone()));
        ctx.after_cancel(move || {
            let _guard = guard;
            ran.store(true, Ordering::Release);
        })
    };
    drop(a);
    let b = current_thread();
    b.block_on(async {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _on_b = ctx.after_cancel(move || {
            let _ = tx.send(());
        });
        tokio::time::timeout(HANG, ctx.done())
            .await
            .expect("done() ends at the deadline");
        tokio::time::timeout(HANG, rx)
            .await
            .expect("the callback registered on B runs")
            .expect("it ran");
    });
    assert!(dropped.load(Ordering::Acquire), "A's callback was dropped");
    assert!(!ran_on_a.load(Ordering::Acquire), "A's callback never ran");
}

/// The common case is unchanged: a deadline awaited on the runtime that
/// serves it, under paused time, fires exactly at the deadline.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_deadline_awaited_on_its_own_runtime_fires_at_the_deadline() {
    let start = Instant::now();
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(5));
    ctx.done().await;
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
}

/// Polling a deadline's waiter outside any runtime arms nothing and does
/// not panic; it ends when the deadline's own runtime fires it.
#[test]
fn a_waiter_polled_outside_a_runtime_relies_on_the_serving_runtime() {
    let a = multi_thread(2);
    let (ctx, _cancel) = deadline_on(&a);
    let mut done = tokio_test::task::spawn(ctx.done());
    assert!(done.poll().is_pending());
    a.block_on(async {
        tokio::time::timeout(HANG, ctx.done())
            .await
            .expect("the serving runtime fires it");
    });
    assert!(done.is_woken());
    assert!(done.poll().is_ready());
}

/// A runtime without timers cannot arm one: its waiter relies on the
/// serving runtime, and neither panics nor hangs while that one is alive.
#[test]
fn a_waiter_on_a_runtime_without_timers_relies_on_the_serving_runtime() {
    let a = multi_thread(2);
    let (ctx, _cancel) = deadline_on(&a);
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn({
        let ctx = ctx.clone();
        move || {
            let no_timers = Builder::new_current_thread()
                .build()
                .expect("a runtime without timers");
            no_timers.block_on(ctx.done());
            let _ = tx.send(ctx.err());
        }
    });
    let ended = rx.recv_timeout(HANG).expect("done() ends at the deadline");
    assert_eq!(ended, Some(ContextError::DeadlineExceeded));
    waiter.join().expect("the waiter thread");
    drop(a);
}

#[test]
fn check_between_blocking_chunks_stops_at_the_deadline_on_a_current_thread_runtime() {
    // The program: an async task doing blocking chunks, never
    // yielding, on the runtime's only thread. Its timer task cannot run;
    // `check` reads the clock itself.
    let runtime = current_thread();
    let (stopped_after, chunks, flag_before, error) = runtime.block_on(async {
        let (ctx, _cancel) = Context::background().with_timeout(DEADLINE);
        let start = Instant::now();
        let mut chunks = 0u32;
        loop {
            // One chunk of blocking work: 1 ms of spinning.
            let chunk = std::time::Instant::now();
            while chunk.elapsed() < Duration::from_millis(1) {
                std::hint::spin_loop();
            }
            let flag_before = ctx.err();
            if let Err(error) = ctx.check() {
                break (start.elapsed(), chunks, flag_before, error);
            }
            assert!(start.elapsed() < HANG, "the deadline never fired");
            chunks += 1;
        }
    });
    assert_eq!(error, ContextError::DeadlineExceeded);
    // Nothing else fired it: the flag was still clear just before the
    // `check` that stopped the loop.
    assert_eq!(flag_before, None);
    assert!(
        stopped_after >= DEADLINE,
        "stopped early: {stopped_after:?}"
    );
    assert!(
        stopped_after < DEADLINE + Duration::from_millis(500),
        "stopped late: {stopped_after:?}"
    );
    assert!(chunks > 0);
}
