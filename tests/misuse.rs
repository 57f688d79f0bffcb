//! Every misuse in the crate docs' "Errors and misuse" table, one test per
//! row, named after it: each gets a clear error or a documented panic,
//! never a hang, and no task is lost.

mod support;
use support::{alive_tasks, eventually_within};
use support::{drop_flag, message};

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt as _;
use taskgroup::{Context, ContextError, GroupError, Outcome, TaskFailed, TaskGroup};
use tokio::time::Instant;

// ---------------------------------------------------------------------------
// Helpers

/// Panics when dropped, with a "misuse panic" payload.
struct PanicOnDrop(&'static str);

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            std::panic::panic_any(format!("misuse panic: {}", self.0));
        }
    }
}

/// Keeps the panics these tests raise on purpose off stderr.
fn quiet_expected_panics() {
    support::quiet_panics(|message| message.starts_with("misuse panic"));
}

/// How long these tests wait for a task to end or be dropped.
const BOUND: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Rows

#[test]
fn limit_zero_panics_naming_the_limit() {
    let payload = catch_unwind(|| TaskGroup::<(), String>::builder().limit(0)).unwrap_err();
    assert!(
        message(&*payload).contains("limit"),
        "{}",
        message(&*payload)
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn deadline_in_the_past_is_born_expired() {
    let before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let (ctx, _cancel) =
        Context::background().with_deadline(Instant::now() - Duration::from_secs(5));
    assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
    assert_eq!(
        ctx.cause().unwrap().downcast_ref::<ContextError>(),
        Some(&ContextError::DeadlineExceeded)
    );
    let (now, _cancel) = Context::background().with_timeout(Duration::ZERO);
    assert_eq!(now.err(), Some(ContextError::DeadlineExceeded));
    // No timer task for a deadline already gone.
    assert_eq!(alive_tasks(), before);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_deadline_on_a_blocked_current_thread_runtime_fires_at_check_not_at_is_cancelled() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(300));
    let child = ctx.with_value(7u8);
    let called = Arc::new(AtomicBool::new(false));
    let flag = called.clone();
    let _reg = ctx.after_cancel(move || flag.store(true, SeqCst));

    // The clock moves, but this task never yields: the deadline's timer
    // task cannot run on the runtime's only thread (the blocking chunks of
    // the issue). `advance` moves the clock on its first poll.
    assert!(
        tokio::time::advance(Duration::from_millis(299))
            .now_or_never()
            .is_none()
    );
    assert_eq!(child.check(), Ok(()), "before the deadline");
    assert!(
        tokio::time::advance(Duration::from_millis(1_700))
            .now_or_never()
            .is_none()
    );
    // The flag alone has not seen it: no timer has run.
    assert!(!ctx.is_cancelled());
    assert_eq!(ctx.err(), None);
    // `check` reads the clock: the child expires the context that owns the
    // deadline, with every context sharing it, at once.
    assert_eq!(child.check(), Err(ContextError::DeadlineExceeded));
    assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
    assert_eq!(child.err(), Some(ContextError::DeadlineExceeded));
    assert_eq!(
        ctx.cause().unwrap().downcast_ref::<ContextError>(),
        Some(&ContextError::DeadlineExceeded)
    );
    // Its after_cancel callback runs once the thread is free again.
    assert!(!called.load(SeqCst));
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    assert!(called.load(SeqCst));

    // A context cancelled before its deadline keeps saying Cancelled.
    let (early, cancel) = Context::background().with_timeout(Duration::from_millis(10));
    cancel.cancel();
    assert!(
        tokio::time::advance(Duration::from_secs(1))
            .now_or_never()
            .is_none()
    );
    assert_eq!(early.check(), Err(ContextError::Cancelled));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn timeouts_that_overflow_mean_no_deadline() {
    let (ctx, cancel) = Context::background().with_timeout(Duration::MAX);
    assert_eq!(ctx.deadline(), None);
    assert_eq!(ctx.err(), None);
    // Under a parent with a deadline, the parent's stays.
    let (parent, _p) = Context::background().with_timeout(Duration::from_secs(1));
    let (child, _c) = parent.with_timeout(Duration::MAX);
    assert_eq!(child.deadline(), parent.deadline());
    // A sleep that overflows waits until the context ends, no panic.
    let sleeper = {
        let ctx = ctx.clone();
        tokio::spawn(async move { ctx.sleep(Duration::MAX).await })
    };
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(!sleeper.is_finished());
    cancel.cancel();
    assert_eq!(sleeper.await.unwrap(), Err(ContextError::Cancelled));
}

#[tokio::test(flavor = "current_thread")]
async fn spawn_after_cancel_never_runs_and_counts_as_cancelled() {
    let mut group = TaskGroup::<u8, String>::new();
    group.cancel();
    let called = Arc::new(AtomicUsize::new(0));
    let c = called.clone();
    group.spawn(move |_ctx| {
        c.fetch_add(1, SeqCst);
        async { Ok(1) }
    });
    let c = called.clone();
    group.spawn_blocking(move |_ctx| {
        c.fetch_add(1, SeqCst);
        Ok(2)
    });
    // try_spawn hands the closure back instead.
    assert!(group.try_spawn(|_ctx| async { Ok(3) }).is_err());
    assert_eq!(group.len(), 2);
    let outcomes = group.wait_outcomes().await;
    assert!(outcomes.iter().all(Outcome::is_cancelled), "{outcomes:?}");
    assert_eq!(outcomes.len(), 2);
    assert_eq!(called.load(SeqCst), 0);

    let mut group = TaskGroup::<u8, String>::new();
    group.cancel();
    group.spawn(|_ctx| async { Ok(1) });
    assert_eq!(
        group.wait().await,
        Err(GroupError::Cancelled(ContextError::Cancelled))
    );
}

#[test]
fn after_cancel_outside_a_runtime_panics_naming_it() {
    let (ctx, _cancel) = Context::background().with_cancel();
    let payload = catch_unwind(AssertUnwindSafe(|| ctx.after_cancel(|| ()))).unwrap_err();
    let text = message(&*payload);
    assert!(
        text.contains("after_cancel") && text.contains("runtime"),
        "{text}"
    );
}

#[test]
fn with_timeout_or_with_deadline_outside_a_runtime_panics_naming_it() {
    let ctx = Context::background();
    let payload = catch_unwind(AssertUnwindSafe(|| {
        ctx.with_timeout(Duration::from_secs(1))
    }))
    .unwrap_err();
    let text = message(&*payload);
    assert!(
        text.contains("with_timeout") && text.contains("runtime"),
        "{text}"
    );
    let deadline = std::time::Instant::now().into();
    let payload = catch_unwind(AssertUnwindSafe(|| ctx.with_deadline(deadline))).unwrap_err();
    let text = message(&*payload);
    assert!(
        text.contains("with_deadline") && text.contains("runtime"),
        "{text}"
    );
}

#[test]
fn spawn_outside_a_runtime_panics_and_the_task_counts_as_cancelled() {
    let mut group = TaskGroup::<u8, String>::new();
    let payload = catch_unwind(AssertUnwindSafe(|| {
        group.spawn(|_ctx| async { Ok(1) });
    }))
    .unwrap_err();
    assert!(
        message(&*payload).contains("runtime"),
        "{}",
        message(&*payload)
    );
    let payload = catch_unwind(AssertUnwindSafe(|| {
        group.spawn_blocking(|_ctx| Ok(2));
    }))
    .unwrap_err();
    assert!(
        message(&*payload).contains("runtime"),
        "{}",
        message(&*payload)
    );
    // Nothing lost, nothing hangs: both tasks are accounted for, and the
    // group joins even without a runtime.
    assert_eq!(group.len(), 2);
    let outcomes = group
        .wait_outcomes()
        .now_or_never()
        .expect("every task is accounted for: ready at the first poll");
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(Outcome::is_cancelled), "{outcomes:?}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_task_that_never_checks_its_context_is_dropped_at_its_next_await() {
    let mut group = TaskGroup::<(), String>::new();
    let (flag, dropped) = drop_flag();
    group.spawn(move |_ctx| async move {
        let _flag = flag;
        std::future::pending::<()>().await;
        Ok(())
    });
    group.spawn(|_ctx| async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Err("boom".to_string())
    });
    let result = tokio::time::timeout(Duration::from_secs(60), group.wait()).await;
    assert_eq!(result.unwrap(), Err(GroupError::Failed("boom".to_string())));
    assert!(dropped.load(SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_task_that_never_yields_is_joined_not_dropped() {
    let mut group = TaskGroup::<&str, &str>::new();
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel();
    let release = Arc::new(AtomicBool::new(false));
    let r = release.clone();
    group.spawn(move |_ctx| async move {
        let _ = entered_tx.send(());
        // Busy, never awaiting, never checking its context.
        while !r.load(SeqCst) {
            std::hint::spin_loop();
        }
        Ok("spun")
    });
    entered_rx.await.unwrap();
    let ctx = group.context().clone();
    group.spawn(|_ctx| async { Err("boom") });
    // The failure cancels the group at once; the spinner cannot be dropped
    // in the middle of a poll, so wait must join it.
    ctx.done().await;
    let waiter = tokio::spawn(async move { group.wait_outcomes().await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished(), "wait cannot return while it spins");
    release.store(true, SeqCst);
    let outcomes = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(outcomes[0], Outcome::Ok("spun")));
    assert!(matches!(outcomes[1], Outcome::Err("boom")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_task_that_never_checks_its_context_is_joined_by_wait() {
    let mut group = TaskGroup::<u8, String>::new();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel();
    group.spawn_blocking(move |_ctx| {
        let _ = entered_tx.send(());
        rx.recv().unwrap(); // ignores the context entirely
        Ok(1)
    });
    // Once started (a blocking task not started by the cancel never is).
    entered_rx.await.unwrap();
    group.spawn(|_ctx| async { Err("boom".to_string()) });
    let ctx = group.context().clone();
    let waiter = tokio::spawn(group.wait());
    ctx.done().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished(), "wait joins the blocking task");
    tx.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), waiter).await;
    assert_eq!(
        result.unwrap().unwrap(),
        Err(GroupError::Failed("boom".to_string()))
    );

    // Dropping the group does not wait for it: it returns when it returns.
    let mut group = TaskGroup::<u8, String>::new();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (flag, dropped) = drop_flag();
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel();
    group.spawn_blocking(move |_ctx| {
        let _flag = flag;
        let _ = entered_tx.send(());
        rx.recv().unwrap();
        Ok(1)
    });
    entered_rx.await.unwrap();
    drop(group);
    assert!(!dropped.load(SeqCst));
    tx.send(()).unwrap();
    eventually_within("the blocking task returning", BOUND, || {
        dropped.load(SeqCst)
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_panic_inside_after_cancel_stays_on_its_task() {
    quiet_expected_panics();
    let (ctx, cancel) = Context::background().with_cancel();
    let ran = Arc::new(AtomicUsize::new(0));
    let _a = ctx.after_cancel(|| panic!("misuse panic: in a callback"));
    let r = ran.clone();
    let _b = ctx.after_cancel(move || {
        r.fetch_add(1, SeqCst);
    });
    // cancel() returns normally: the callbacks run on their own tasks.
    cancel.cancel();
    assert_eq!(ctx.err(), Some(ContextError::Cancelled));
    eventually_within("the other callback running", BOUND, || {
        ran.load(SeqCst) == 1
    })
    .await;
    // And the runtime goes on.
    assert_eq!(tokio::spawn(async { 7 }).await.unwrap(), 7);
}

type Shared = Arc<Mutex<Option<TaskGroup<&'static str, String>>>>;
type SharedArc = Arc<Mutex<Option<Arc<TaskGroup<&'static str, String>>>>>;

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropping_the_group_inside_one_of_its_own_tasks_cancels_it_and_drops_the_rest() {
    let before = alive_tasks();
    let slot: Shared = Arc::new(Mutex::new(None));
    let mut group = TaskGroup::new();
    let ctx = group.context().clone();
    let (flag, sibling_dropped) = drop_flag();
    group.spawn(move |_ctx| async move {
        let _flag = flag;
        std::future::pending::<()>().await;
        Ok("never")
    });
    let (after_tx, after_rx) = tokio::sync::oneshot::channel();
    let s = slot.clone();
    group.spawn(move |ctx| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let taken = s.lock().unwrap().take();
        drop(taken); // this task's own group
        // The drop cancelled the group, this task's context too, and
        // returned: no deadlock. The task goes on until its next await.
        let _ = after_tx.send(ctx.err());
        tokio::task::yield_now().await;
        unreachable!("dropped at the await above");
    });
    *slot.lock().unwrap() = Some(group);
    let seen = tokio::time::timeout(Duration::from_secs(60), after_rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, Some(ContextError::Cancelled));
    assert!(ctx.is_cancelled());
    assert!(slot.lock().unwrap().is_none());
    // Every task is dropped; nothing is left on the runtime.
    eventually_within("the tasks being dropped", BOUND, || {
        sibling_dropped.load(SeqCst) && alive_tasks() == before
    })
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn waiting_on_the_group_inside_one_of_its_own_tasks_panics_instead_of_hanging() {
    quiet_expected_panics();
    let slot: Shared = Arc::new(Mutex::new(None));
    let mut group = TaskGroup::new();
    let s = slot.clone();
    let (result_tx, result_rx) = tokio::sync::oneshot::channel();
    group.spawn(move |_ctx| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let taken = s.lock().unwrap().take().unwrap();
        // Would wait for itself forever.
        let result = AssertUnwindSafe(taken.wait()).catch_unwind().await;
        let _ = result_tx.send(result.map_err(|payload| message(&*payload)).map(|_| ()));
        Ok("done")
    });
    *slot.lock().unwrap() = Some(group);
    let result = tokio::time::timeout(Duration::from_secs(60), result_rx)
        .await
        .expect("no hang")
        .unwrap();
    let text = result.unwrap_err();
    assert!(text.contains("own tasks"), "{text}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn next_from_the_groups_last_running_task_panics_instead_of_hanging() {
    quiet_expected_panics();
    let mut group = TaskGroup::<&'static str, String>::new();
    let slot: SharedArc = Arc::default();
    let s = slot.clone();
    let (result_tx, result_rx) = tokio::sync::oneshot::channel();
    group.spawn(|_ctx| async { Ok("first") });
    group.spawn(move |_ctx| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let group = s.lock().unwrap().take().unwrap();
        // The other task's outcome comes out; then only this task is left.
        let first = group.next().await.map(|(_, o)| o.ok());
        let again = AssertUnwindSafe(group.next()).catch_unwind().await;
        let _ = result_tx.send((first, again.map_err(|p| message(&*p)).map(|_| ())));
        Ok("second")
    });
    *slot.lock().unwrap() = Some(Arc::new(group));
    let (first, again) = tokio::time::timeout(Duration::from_secs(60), result_rx)
        .await
        .expect("no hang")
        .unwrap();
    assert_eq!(first, Some(Some("first")));
    let text = again.unwrap_err();
    assert!(text.contains("own tasks"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_from_the_only_running_task_with_closures_queued_behind_the_limit_panics() {
    quiet_expected_panics();
    let mut group = TaskGroup::<&'static str, String>::builder()
        .limit(1)
        .build();
    let slot: SharedArc = Arc::default();
    let s = slot.clone();
    let (result_tx, result_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    group.spawn(move |_ctx| async move {
        go_rx.await.unwrap();
        let group = s.lock().unwrap().take().unwrap();
        // The queued closure cannot start while this task holds the slot.
        let result = AssertUnwindSafe(group.next()).catch_unwind().await;
        let _ = result_tx.send(result.map_err(|p| message(&*p)).map(|_| ()));
        Ok("running")
    });
    group.spawn(|_ctx| async { Ok("queued") });
    *slot.lock().unwrap() = Some(Arc::new(group));
    go_tx.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(60), result_rx)
        .await
        .expect("no hang")
        .unwrap();
    let text = result.unwrap_err();
    assert!(
        text.contains("TaskGroup::next") && text.contains("own tasks"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_from_a_task_holding_the_only_slot_panics_instead_of_hanging() {
    quiet_expected_panics();
    let mut group = TaskGroup::<&'static str, String>::builder()
        .limit(1)
        .build();
    let slot: SharedArc = Arc::default();
    let s = slot.clone();
    let (result_tx, result_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    group.spawn(move |_ctx| async move {
        go_rx.await.unwrap();
        let group = s.lock().unwrap().take().unwrap();
        // No slot can free while this task holds the only one.
        let result = AssertUnwindSafe(group.ready()).catch_unwind().await;
        let _ = result_tx.send(result.map_err(|p| message(&*p)));
        Ok("running")
    });
    *slot.lock().unwrap() = Some(Arc::new(group));
    go_tx.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(60), result_rx)
        .await
        .expect("no hang")
        .unwrap();
    let text = result.unwrap_err();
    assert!(
        text.contains("TaskGroup::ready") && text.contains("own tasks"),
        "{text}"
    );
}

/// The same misuse in a scope: its only running task waits for a slot it
/// holds itself. The scope re-raises the task's panic, naming `ready`.
#[tokio::test(flavor = "current_thread")]
async fn scope_ready_from_its_task_holding_the_only_slot_panics_instead_of_hanging() {
    quiet_expected_panics();
    let scope = TaskGroup::<u32, String>::builder()
        .limit(1)
        .scope(async |s| {
            let s2 = s.clone();
            s.spawn(move |_ctx| async move {
                s2.ready().await;
                Ok(1)
            });
        });
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        AssertUnwindSafe(scope).catch_unwind(),
    )
    .await
    .expect("no hang");
    let text = message(&*result.unwrap_err());
    assert!(
        text.contains("Scope::ready") && text.contains("own task"),
        "{text}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_cancel_handle_bound_to_underscore_cancels_at_once_and_the_cause_says_why() {
    // `_` is not a binding: the handle is dropped on this line, and a
    // dropped handle cancels. The error kind stays `Cancelled` (not
    // `DeadlineExceeded`); the cause names the mistake.
    let (ctx, _) = Context::background().with_timeout(Duration::from_secs(5));
    assert_eq!(ctx.err(), Some(ContextError::Cancelled));
    let cause = ctx.cause().unwrap();
    assert_eq!(
        cause.to_string(),
        "context cancelled: its CancelHandle was dropped"
    );
    assert_eq!(
        cause.downcast_ref::<ContextError>(),
        Some(&ContextError::Cancelled)
    );
    // Children see the same cause; `_cancel` keeps the context alive.
    let (kept, _cancel) = Context::background().with_timeout(Duration::from_secs(5));
    assert_eq!(kept.err(), None);
    let (parent, handle) = Context::background().with_cancel();
    let child = parent.with_value(1u8);
    drop(handle);
    assert_eq!(
        child.cause().unwrap().to_string(),
        "context cancelled: its CancelHandle was dropped"
    );
    // An explicit cancel says nothing of the kind.
    let (plain, handle) = Context::background().with_cancel();
    handle.cancel();
    drop(handle);
    assert_eq!(plain.cause().unwrap().to_string(), "context cancelled");
}

/// An error whose `Display` panics.
#[derive(Debug, PartialEq)]
struct BadDisplay;

impl fmt::Display for BadDisplay {
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        panic!("misuse panic: Display")
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_panic_in_an_errors_display_still_cancels_and_returns_the_error() {
    quiet_expected_panics();
    let mut group = TaskGroup::<(), BadDisplay>::new();
    let ctx = group.context().clone();
    group.spawn(|_ctx| async { Err(BadDisplay) });
    group.spawn(|ctx| async move {
        ctx.done().await;
        Ok(())
    });
    let result = tokio::time::timeout(Duration::from_secs(10), group.wait()).await;
    assert_eq!(result.unwrap(), Err(GroupError::Failed(BadDisplay)));
    let cause = ctx.cause().unwrap();
    let failed = cause.downcast_ref::<TaskFailed>().unwrap();
    assert_eq!(failed.task().index(), 0);
    assert!(
        failed.message().contains("Display panicked"),
        "{}",
        failed.message()
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_closure_whose_destructor_panics_is_its_tasks_panic() {
    quiet_expected_panics();
    // Queued behind the limit, then discarded by the cancel.
    let mut group = TaskGroup::<(), String>::builder().limit(1).build();
    group.spawn(|ctx| async move {
        ctx.done().await;
        Ok(())
    });
    let guard = PanicOnDrop("queued");
    group.spawn(move |_ctx| {
        let _guard = guard;
        async { Ok(()) }
    });
    group.cancel();
    let outcomes = group.wait_outcomes().await;
    assert!(outcomes[1].is_panicked(), "{outcomes:?}");

    // Spawned into a group already cancelled: never called, dropped at
    // once, and its destructor's panic is the task's outcome.
    let mut group = TaskGroup::<(), String>::new();
    group.cancel();
    let guard = PanicOnDrop("spawned after cancel");
    let spawned = catch_unwind(AssertUnwindSafe(|| {
        group.spawn(move |_ctx| {
            let _guard = guard;
            async { Ok(()) }
        });
    }));
    assert!(spawned.is_ok(), "spawn itself does not panic");
    let guard = PanicOnDrop("blocking spawned after cancel");
    group.spawn_blocking(move |_ctx| {
        let _guard = guard;
        Ok(())
    });
    let outcomes = group.wait_outcomes().await;
    assert_eq!(outcomes.len(), 2);
    for outcome in outcomes {
        let payload = outcome.into_panic().expect("the destructor's panic");
        assert!(message(&*payload).starts_with("misuse panic"));
    }

    // Called: the captures it does not move into its future are dropped in
    // the call, inside the task, and `wait` re-raises that panic.
    let mut group = TaskGroup::<(), String>::new();
    let guard = PanicOnDrop("called");
    group.spawn(move |_ctx| {
        drop(guard);
        async { Ok(()) }
    });
    let payload = AssertUnwindSafe(group.wait())
        .catch_unwind()
        .await
        .unwrap_err();
    assert_eq!(message(&*payload), "misuse panic: called");
}

/// A hand-written future that is ready at once and keeps a guard that
/// panics when dropped.
struct ReadyWithGuard {
    _guard: PanicOnDrop,
}

impl std::future::Future for ReadyWithGuard {
    type Output = Result<u8, String>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::task::Poll::Ready(Ok(5))
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_task_future_whose_destructor_panics_is_its_tasks_panic() {
    quiet_expected_panics();
    // Dropped by the cancel, at an await point.
    let mut group = TaskGroup::<u8, String>::new();
    group.spawn(|_ctx| async {
        let _guard = PanicOnDrop("dropped by the cancel");
        std::future::pending::<()>().await;
        Ok(1)
    });
    tokio::task::yield_now().await; // let it start
    group.cancel();
    let outcomes = group.wait_outcomes().await;
    let payload = outcomes.into_iter().next().unwrap().into_panic();
    assert_eq!(
        message(&*payload.expect("the destructor's panic, not Cancelled")),
        "misuse panic: dropped by the cancel"
    );

    // Dropped after it completed: the panic outranks its value, and wait
    // re-raises it.
    let mut group = TaskGroup::<u8, String>::new();
    group.spawn(|_ctx| ReadyWithGuard {
        _guard: PanicOnDrop("dropped after Ok"),
    });
    let payload = AssertUnwindSafe(group.wait())
        .catch_unwind()
        .await
        .unwrap_err();
    assert_eq!(message(&*payload), "misuse panic: dropped after Ok");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropping_the_wait_future_halfway_cancels_and_drops_every_task() {
    let before = alive_tasks();
    let mut group = TaskGroup::<(), String>::builder().limit(2).build();
    let ctx = group.context().clone();
    let mut flags = Vec::new();
    for _ in 0..4 {
        let (flag, dropped) = drop_flag();
        flags.push(dropped);
        group.spawn(move |_ctx| async move {
            let _flag = flag;
            std::future::pending::<()>().await;
            Ok(())
        });
    }
    let cut = tokio::time::timeout(Duration::from_millis(10), group.wait()).await;
    assert!(cut.is_err(), "the wait future was dropped halfway");
    assert!(ctx.is_cancelled());
    // Queued closures are dropped unstarted at once; running tasks are
    // aborted, and dropped as soon as the runtime gets to them.
    assert!(flags[2].load(SeqCst) && flags[3].load(SeqCst));
    eventually_within("every task dropped and gone", BOUND, || {
        flags.iter().all(|f| f.load(SeqCst)) && alive_tasks() == before
    })
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn concurrent_next_calls_both_see_the_end() {
    let mut group = TaskGroup::<u8, String>::new();
    group.spawn(|_ctx| async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok(1)
    });
    let both = async { tokio::join!(group.next(), group.next()) };
    let (a, b) = tokio::time::timeout(Duration::from_secs(60), both)
        .await
        .expect("neither next() may hang");
    let got: Vec<u8> = [a, b]
        .into_iter()
        .flatten()
        .filter_map(|(_, o)| o.ok())
        .collect();
    assert_eq!(got, [1]);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn concurrent_ready_calls_all_see_the_room() {
    let mut group = TaskGroup::<u8, String>::builder().limit(1).build();
    group.spawn(|_ctx| async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok(1)
    });
    let all = async { tokio::join!(group.ready(), group.ready(), group.ready()) };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("no ready() may wait on while there is room");
    assert_eq!(group.wait().await, Ok(vec![1]));
}

#[test]
fn the_runtime_shutting_down_under_a_group_cancels_its_tasks() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = TaskGroup::<u8, String>::builder().limit(1).build();
    let (flag, dropped) = drop_flag();
    runtime.block_on(async {
        group.spawn(move |_ctx| async move {
            let _flag = flag;
            std::future::pending::<()>().await;
            Ok(1)
        });
        group.spawn(|_ctx| async { Ok(2) }); // queued behind the limit
        tokio::task::yield_now().await;
    });
    drop(runtime);
    assert!(dropped.load(SeqCst));
    // Every task accounted for, and wait does not hang without a runtime.
    let outcomes = group
        .wait_outcomes()
        .now_or_never()
        .expect("every task is accounted for: ready at the first poll");
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(Outcome::is_cancelled), "{outcomes:?}");
}

#[test]
fn spawn_outside_a_runtime_once_the_groups_runtime_is_gone_panics_naming_it() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = TaskGroup::<u8, String>::new();
    runtime.block_on(async {
        group.spawn(|_ctx| async { Ok(1) });
        assert!(matches!(group.next().await, Some((_, Outcome::Ok(1)))));
    });
    drop(runtime);
    let payload = catch_unwind(AssertUnwindSafe(|| {
        group.spawn(|_ctx| async { Ok(2) });
    }))
    .expect_err("spawn outside a runtime, the group's own gone, did not panic");
    let text = message(&*payload);
    assert!(
        text.contains("shut down") && text.contains("outside a tokio runtime"),
        "{text}"
    );
    // The task is accounted for, as cancelled, and the group still joins.
    assert_eq!(group.len(), 1);
    let outcomes = group
        .wait_outcomes()
        .now_or_never()
        .expect("every task is accounted for: ready at the first poll");
    assert_eq!(outcomes.len(), 1);
    assert!(outcomes[0].is_cancelled(), "{outcomes:?}");
}

#[test]
fn cancelling_twice_keeps_the_first_cause() {
    #[derive(Debug, thiserror::Error)]
    #[error("first")]
    struct First;
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel_with(First);
    cancel.cancel();
    cancel.cancel_with(std::io::Error::other("second"));
    assert!(ctx.cause().unwrap().is::<First>());
    assert_eq!(ctx.err(), Some(ContextError::Cancelled));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn done_on_a_context_that_can_never_be_cancelled_never_resolves() {
    let (ctx, cancel) = Context::background().with_cancel();
    let detached = ctx.without_cancel();
    cancel.cancel();
    for never in [Context::background(), detached] {
        let done = tokio::time::timeout(Duration::from_secs(3600), never.done()).await;
        assert!(done.is_err(), "documented: it never resolves");
        // Work under it simply runs.
        assert_eq!(never.run(async { 5 }).await, Ok(5));
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn ready_on_a_full_group_returns_once_cancelled() {
    let mut group = TaskGroup::<(), String>::builder().limit(1).build();
    group.spawn(|_ctx| std::future::pending());
    let ready = tokio::time::timeout(Duration::from_secs(3600), group.ready()).await;
    assert!(ready.is_err(), "documented: waits while the limit is full");
    group.cancel();
    tokio::time::timeout(Duration::from_secs(1), group.ready())
        .await
        .expect("returns at once once cancelled");
    assert_eq!(
        group.wait().await,
        Err(GroupError::Cancelled(ContextError::Cancelled))
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_run_future_polled_after_completion_panics() {
    let ctx = Context::background();
    let mut run = Box::pin(ctx.run(async { 1 }));
    assert_eq!((&mut run).await, Ok(1));
    let again = AssertUnwindSafe(&mut run).catch_unwind().await;
    assert!(message(&*again.unwrap_err()).contains("polled after completion"));
}

// ---------------------------------------------------------------------------
// Lifecycle

#[tokio::test(start_paused = true)]
async fn a_shield_with_a_zero_budget_never_runs_its_section() {
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let mut group = TaskGroup::<(), ContextError>::new();
    group.spawn(move |ctx| async move {
        ctx.shield(
            Duration::ZERO,
            |_ctx| async move { flag.store(true, SeqCst) },
        )
        .await
    });
    assert_eq!(
        group.wait().await,
        Err(GroupError::Failed(ContextError::DeadlineExceeded))
    );
    assert!(!ran.load(SeqCst));
}

#[tokio::test]
async fn more_than_65535_shields_at_once_in_one_task_panic_naming_the_limit() {
    let mut group = TaskGroup::<usize, ContextError>::new();
    group.spawn(move |ctx| async move {
        // Sections that never end: every shield entered stays entered.
        let sections = (0..65_536).map(|_| {
            ctx.shield(Duration::MAX, |_ctx| std::future::pending::<()>())
                .boxed()
        });
        let mut sections: Vec<_> = sections.collect();
        // The first 65,535 enter their shields and wait; the next panics.
        std::future::poll_fn(|cx| {
            for section in &mut sections {
                assert!(section.poll_unpin(cx).is_pending());
            }
            std::task::Poll::Ready(())
        })
        .await;
        Ok(sections.len())
    });
    let outcomes = group.wait_outcomes().await;
    let [Outcome::Panicked(payload)] = &outcomes[..] else {
        panic!("expected the task's panic, got {outcomes:?}");
    };
    let text = message(payload.as_ref());
    assert!(text.contains("at most 65535 shielded sections"), "{text}");
    assert!(text.contains("Context::shield"), "{text}");
}

#[tokio::test]
async fn shutdown_from_one_of_the_groups_own_tasks_panics_instead_of_hanging() {
    // The group moved into its own task, which shuts it down.
    let own = TaskGroup::<(), String>::new();
    let mut holder = TaskGroup::<String, String>::new();
    let slot = Arc::new(Mutex::new(Some(own)));
    let (tx, rx) = tokio::sync::oneshot::channel();
    {
        let mut guard = slot.lock().unwrap();
        let g = guard.as_mut().unwrap();
        let slot = slot.clone();
        g.spawn(move |_ctx| async move {
            let me = slot.lock().unwrap().take().unwrap();
            let caught = AssertUnwindSafe(me.shutdown(Duration::from_secs(1)))
                .catch_unwind()
                .await;
            let _ = tx.send(message(&*caught.expect_err("shutdown must panic")));
            Ok(())
        });
    }
    holder.spawn(|_ctx| async move { rx.await.map_err(|e| e.to_string()) });
    let said = holder.wait().await.unwrap().remove(0);
    assert!(
        said.contains("TaskGroup::shutdown called from one of the group's own tasks"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grace_on_a_group_of_blocking_tasks_changes_nothing() {
    let mut group = TaskGroup::<u32, ContextError>::builder()
        .grace(Duration::from_millis(1))
        .build();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (started, running) = std::sync::mpsc::channel();
    group.spawn_blocking(move |_ctx| {
        started.send(()).unwrap();
        released.recv().unwrap();
        Ok(7)
    });
    running.recv().unwrap();
    group.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await; // past the grace
    release.send(()).unwrap();
    let outcomes = group.wait_outcomes().await;
    assert!(matches!(outcomes[0], Outcome::Ok(7)), "joined, not dropped");
}
