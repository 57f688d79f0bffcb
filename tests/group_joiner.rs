//! Join policies: the `Joiner` contract (when `on_complete` runs, what
//! `finish` sees, what a `Decision::Cancel` beats), and the built-ins
//! `Supervise`, `FirstOk` and `hedge`. `FailFast` is the rest of the suite.

mod support;
use support::{drop_flag, message};

use std::future::pending;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt as _;
use support::{eventually, multi_thread};
use taskgroup::{
    AllFailed, CancelHandle, Cause, Context, ContextError, Decision, FirstOk, Joiner, Outcome,
    Supervise, TaskGroup, TaskId, Unread, hedge,
};
use tokio::time::Instant;

// ---------------------------------------------------------------------------
// Helpers

/// Keeps the panics these tests raise on purpose off stderr.
fn quiet_expected_panics() {
    support::quiet_panics(|message| message.starts_with("expected panic"));
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ok,
    Err,
    Cancelled,
    Panicked,
}

fn kind<T, E>(outcome: &Outcome<T, E>) -> Kind {
    match outcome {
        Outcome::Ok(_) => Kind::Ok,
        Outcome::Err(_) => Kind::Err,
        Outcome::Cancelled => Kind::Cancelled,
        Outcome::Panicked(_) => Kind::Panicked,
    }
}

/// What a `Recorder` saw: every `on_complete` call in order, and whether
/// two calls ever overlapped.
#[derive(Clone, Default)]
struct Log {
    calls: Arc<Mutex<Vec<(u64, Kind)>>>,
    inside: Arc<AtomicBool>,
    overlaps: Arc<AtomicUsize>,
}

impl Log {
    fn calls(&self) -> Vec<(u64, Kind)> {
        self.calls.lock().unwrap().clone()
    }

    fn saw(&self, id: TaskId) -> bool {
        self.calls().iter().any(|(seen, _)| *seen == id.index())
    }
}

/// Never cancels; logs every call; returns the unread outcomes' kinds.
struct Recorder(Log);

impl<T, E> Joiner<T, E> for Recorder {
    type Output = Vec<(u64, Kind)>;

    fn on_complete(&mut self, id: TaskId, outcome: &Outcome<T, E>, _group: &Context) -> Decision {
        if self.0.inside.swap(true, SeqCst) {
            self.0.overlaps.fetch_add(1, SeqCst);
        }
        // Long enough that a second call from another thread would overlap.
        for _ in 0..200 {
            std::hint::spin_loop();
        }
        self.0
            .calls
            .lock()
            .unwrap()
            .push((id.index(), kind(outcome)));
        self.0.inside.store(false, SeqCst);
        Decision::Continue
    }

    fn finish(self, unread: Unread<T, E>, _group: &Context) -> Self::Output {
        unread
            .map(|(id, outcome)| (id.index(), kind(&outcome)))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// The Joiner contract

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn on_complete_sees_every_kind_of_ending_once_and_finish_gets_them_in_spawn_order() {
    quiet_expected_panics();
    let log = Log::default();
    let mut group = TaskGroup::<u32, String, _>::builder()
        .limit(2)
        .joiner(Recorder(log.clone()))
        .build();
    let parked = Arc::new(AtomicUsize::new(0));
    let called = Arc::new(AtomicBool::new(false));
    group.spawn(|_ctx| async { Ok(0) });
    group.spawn(|_ctx| async { Err("one".to_string()) });
    group.spawn(|_ctx| async { panic!("expected panic: task 2") });
    for _ in 3..5 {
        let parked = parked.clone();
        group.spawn(move |_ctx| async move {
            parked.fetch_add(1, SeqCst);
            pending().await
        });
    }
    let c = called.clone();
    // Queued behind the two parked tasks when the group is cancelled.
    group.spawn(move |_ctx| {
        c.store(true, SeqCst);
        async { Ok(5) }
    });
    eventually("tasks 3 and 4 running", || parked.load(SeqCst) == 2).await;
    group.cancel();
    let c = called.clone();
    // Spawned into a cancelled group: never started.
    group.spawn(move |_ctx| {
        c.store(true, SeqCst);
        async { Ok(6) }
    });
    let unread = group.wait().await;

    let expected = vec![
        (0, Kind::Ok),
        (1, Kind::Err),
        (2, Kind::Panicked),
        (3, Kind::Cancelled),
        (4, Kind::Cancelled),
        (5, Kind::Cancelled),
        (6, Kind::Cancelled),
    ];
    assert_eq!(unread, expected);
    let mut calls = log.calls();
    calls.sort_unstable_by_key(|(id, _)| *id);
    assert_eq!(
        calls, expected,
        "each task reached on_complete exactly once"
    );
    assert!(!called.load(SeqCst), "no closure started after the cancel");
}

#[test]
fn on_complete_runs_one_call_at_a_time_and_before_next_hands_the_outcome_out() {
    let rt = multi_thread(4);
    rt.block_on(async {
        let log = Log::default();
        let mut group = TaskGroup::<u64, String, _>::builder()
            .joiner(Recorder(log.clone()))
            .build();
        let tasks = 4_000u64;
        for i in 0..tasks {
            group.spawn(move |_ctx| async move {
                for _ in 0..(i % 3) {
                    tokio::task::yield_now().await;
                }
                if i % 7 == 0 {
                    Err(format!("task {i}"))
                } else {
                    Ok(i)
                }
            });
        }
        // Hand half of them out; each was logged before it came out.
        let mut handed_out = Vec::new();
        for _ in 0..tasks / 2 {
            let (id, outcome) = group.next().await.unwrap();
            assert!(
                log.saw(id),
                "{id} came out of next before on_complete saw it"
            );
            assert_eq!(outcome.is_err(), id.index() % 7 == 0);
            handed_out.push(id.index());
        }
        let unread = group.wait().await;

        assert_eq!(
            log.overlaps.load(SeqCst),
            0,
            "two on_complete calls overlapped"
        );
        assert_eq!(log.calls().len() as u64, tasks);
        // finish saw exactly the tasks next did not hand out, in spawn order.
        let mut rest: Vec<u64> = (0..tasks).filter(|i| !handed_out.contains(i)).collect();
        rest.sort_unstable();
        assert_eq!(unread.iter().map(|(id, _)| *id).collect::<Vec<_>>(), rest);
    });
}

/// Cancels the group's parent from inside `on_complete`: the parent's
/// cancel runs the group's own cancel hook on this thread, which would
/// deadlock if `on_complete` ran under the group's lock.
struct CancelParentOnFirst {
    parent: Option<CancelHandle>,
    saw_cancelled_group: Arc<AtomicBool>,
}

impl Joiner<(), String> for CancelParentOnFirst {
    type Output = Option<ContextError>;

    fn on_complete(
        &mut self,
        _id: TaskId,
        _outcome: &Outcome<(), String>,
        group: &Context,
    ) -> Decision {
        if let Some(parent) = self.parent.take() {
            parent.cancel();
            self.saw_cancelled_group.store(group.is_cancelled(), SeqCst);
        }
        Decision::Continue
    }

    fn finish(self, _unread: Unread<(), String>, group: &Context) -> Self::Output {
        group.err()
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn on_complete_holds_no_lock_a_cancel_of_the_group_needs() {
    let (parent, handle) = Context::background().with_cancel();
    let saw = Arc::new(AtomicBool::new(false));
    let mut group = TaskGroup::builder()
        .joiner(CancelParentOnFirst {
            parent: Some(handle),
            saw_cancelled_group: saw.clone(),
        })
        .context(&parent)
        .build();
    let (flag, dropped) = drop_flag();
    group.spawn(|_ctx| async { Ok(()) });
    group.spawn(move |_ctx| async move {
        let _flag = flag;
        pending().await
    });
    let err = tokio::time::timeout(Duration::from_secs(60), group.wait())
        .await
        .expect("wait returns: no deadlock");
    assert_eq!(err, Some(ContextError::Cancelled));
    assert!(
        saw.load(SeqCst),
        "the group was cancelled when parent.cancel() returned"
    );
    assert!(dropped.load(SeqCst), "the parked task was dropped");
}

/// Cancels the group on the first `Ok`, with its own cause.
struct StopOnFirstOk;

#[derive(Debug)]
struct Enough;

impl std::fmt::Display for Enough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("enough")
    }
}

impl std::error::Error for Enough {}

impl Joiner<u32, String> for StopOnFirstOk {
    type Output = ();

    fn on_complete(
        &mut self,
        _id: TaskId,
        outcome: &Outcome<u32, String>,
        _group: &Context,
    ) -> Decision {
        if outcome.is_ok() {
            Decision::Cancel(Cause::new(Enough))
        } else {
            Decision::Continue
        }
    }

    fn finish(self, _unread: Unread<u32, String>, _group: &Context) {}
}

#[test]
fn a_cancel_decision_beats_a_queued_closure_to_the_slot() {
    let rt = multi_thread(2);
    for round in 0..2_000 {
        rt.block_on(async {
            let started = Arc::new(AtomicUsize::new(0));
            let mut group = TaskGroup::builder().limit(1).joiner(StopOnFirstOk).build();
            group.spawn(|_ctx| async { Ok(0) });
            for i in 1..5 {
                let started = started.clone();
                group.spawn(move |_ctx| {
                    started.fetch_add(1, SeqCst);
                    async move { Ok(i) }
                });
            }
            let ctx = group.context().clone();
            group.wait().await;
            assert_eq!(
                started.load(SeqCst),
                0,
                "round {round}: a queued closure started"
            );
            assert_eq!(ctx.cause().unwrap().to_string(), "enough");
        });
    }
}

/// Panics on the first outcome it sees.
struct PanicsOnFirst(Arc<AtomicUsize>);

impl Joiner<(), String> for PanicsOnFirst {
    type Output = ();

    fn on_complete(
        &mut self,
        _id: TaskId,
        _outcome: &Outcome<(), String>,
        _group: &Context,
    ) -> Decision {
        self.0.fetch_add(1, SeqCst);
        panic!("expected panic: in on_complete");
    }

    fn finish(self, _unread: Unread<(), String>, _group: &Context) {
        unreachable!("a joiner that panicked is never finished");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_panic_in_on_complete_cancels_the_group_and_wait_re_raises_it() {
    quiet_expected_panics();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut group = TaskGroup::builder()
        .limit(2)
        .joiner(PanicsOnFirst(calls.clone()))
        .build();
    let (flag, dropped) = drop_flag();
    let started = Arc::new(AtomicBool::new(false));
    group.spawn(|_ctx| async { Err("first".to_string()) });
    group.spawn(move |_ctx| async move {
        let _flag = flag;
        pending().await
    });
    let s = started.clone();
    group.spawn(move |_ctx| {
        s.store(true, SeqCst);
        async { Ok(()) }
    });
    let ctx = group.context().clone();
    let joined = tokio::time::timeout(
        Duration::from_secs(60),
        AssertUnwindSafe(group.wait()).catch_unwind(),
    )
    .await
    .expect("no hang");
    let payload = joined.expect_err("wait re-raises the joiner's panic");
    assert_eq!(message(&*payload), "expected panic: in on_complete");
    assert_eq!(calls.load(SeqCst), 1, "the joiner is not called again");
    assert!(dropped.load(SeqCst), "the parked task was dropped");
    assert!(!started.load(SeqCst), "the queued closure never started");
    let cause = ctx.cause().unwrap().to_string();
    assert!(cause.contains("joiner panicked"), "{cause}");
    assert!(cause.contains("expected panic: in on_complete"), "{cause}");
}

/// A cause whose destructor panics, when `loud`.
#[derive(Debug)]
struct LoudCause {
    loud: bool,
}

impl std::fmt::Display for LoudCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a loud cause")
    }
}

impl std::error::Error for LoudCause {}

impl Drop for LoudCause {
    fn drop(&mut self) {
        if self.loud {
            panic!("expected panic: dropping a cause");
        }
    }
}

/// Cancels on every error, the first time with a quiet cause, later with
/// causes that panic when dropped: the group keeps only the first, and
/// drops the others in its bookkeeping.
struct CancelsLoudly(usize);

impl Joiner<(), String> for CancelsLoudly {
    type Output = Vec<Outcome<(), String>>;

    fn on_complete(
        &mut self,
        _id: TaskId,
        outcome: &Outcome<(), String>,
        _group: &Context,
    ) -> Decision {
        if !outcome.is_err() {
            return Decision::Continue;
        }
        self.0 += 1;
        Decision::Cancel(Cause::new(LoudCause { loud: self.0 > 1 }))
    }

    fn finish(self, unread: Unread<(), String>, _group: &Context) -> Self::Output {
        unread.map(|(_, outcome)| outcome).collect()
    }
}

/// A cause nobody needs (a second decision to cancel) is dropped in the
/// group's bookkeeping, on the thread that delivers the ending. A panic
/// there is the group's own: `wait` re-raises it once every task has
/// ended, and the endings delivered on that thread after it are not lost
/// (they were, and `wait` hung).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_cause_that_panics_when_dropped_loses_no_later_ending() {
    quiet_expected_panics();
    let mut group = TaskGroup::builder()
        .grace(Duration::from_secs(1))
        .joiner(CancelsLoudly(0))
        .build();
    group.spawn(|_ctx| async { Err("first".to_string()) });
    // Each sees the cancel within the grace, and ends on its own, on the
    // one thread of this runtime: an error (a second decision, whose
    // cause is dropped), then a value.
    group.spawn(|ctx: Context| async move {
        ctx.done().await;
        Err("second".to_string())
    });
    group.spawn(|ctx: Context| async move {
        ctx.done().await;
        tokio::task::yield_now().await;
        Ok(())
    });
    let joined = tokio::time::timeout(
        Duration::from_secs(60),
        AssertUnwindSafe(group.wait()).catch_unwind(),
    )
    .await
    .expect("no ending is lost: wait returns");
    let payload = joined.expect_err("wait re-raises the destructor's panic");
    assert_eq!(message(&*payload), "expected panic: dropping a cause");
}

/// Cancels a context (another group's parent) on its first call, and
/// keeps every outcome.
struct CancelsOnFirst(Option<CancelHandle>);

impl Joiner<(), String> for CancelsOnFirst {
    type Output = Vec<Outcome<(), String>>;

    fn on_complete(
        &mut self,
        _id: TaskId,
        _outcome: &Outcome<(), String>,
        _group: &Context,
    ) -> Decision {
        if let Some(other) = self.0.take() {
            other.cancel();
        }
        Decision::Continue
    }

    fn finish(self, unread: Unread<(), String>, _group: &Context) -> Self::Output {
        unread.map(|(_, outcome)| outcome).collect()
    }
}

/// Deliveries nest across groups on one thread: A's joiner cancels B's
/// parent, which ends B's queued task, whose delivery runs B's joiner,
/// which cancels A's parent, which ends A's queued task while this thread
/// is still inside A's joiner. That ending is queued for A's delivery
/// (shared invariant 5), not delivered by taking A's joiner lock again,
/// which this thread holds. Run on a thread of its own: a deadlock there
/// fails the test instead of hanging it. (The same two joiners on two
/// threads at once can deadlock, as any two locks taken in both orders
/// can: `shared.rs`, lock order.)
#[test]
fn deliveries_nested_across_two_groups_on_one_thread_lose_nothing_and_never_deadlock() {
    let (done, joined) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let _ = done.send(rt.block_on(nested_deliveries()));
    });
    let (a, b, cancelled) = joined
        .recv_timeout(Duration::from_secs(60))
        .expect("both groups are joined: no ending lost, no deadlock");
    assert!(
        matches!(a[..], [Outcome::Ok(()), Outcome::Cancelled]),
        "{a:?}"
    );
    assert!(
        matches!(b[..], [Outcome::Cancelled, Outcome::Cancelled]),
        "{b:?}"
    );
    assert!(cancelled, "both parents were cancelled");
}

type Outcomes = Vec<Outcome<(), String>>;

async fn nested_deliveries() -> (Outcomes, Outcomes, bool) {
    let (parent_a, cancel_a) = Context::background().with_cancel();
    let (parent_b, cancel_b) = Context::background().with_cancel();
    let mut a = TaskGroup::builder()
        .context(&parent_a)
        .limit(1)
        .joiner(CancelsOnFirst(Some(cancel_b)))
        .build();
    let mut b = TaskGroup::builder()
        .context(&parent_b)
        .limit(1)
        .joiner(CancelsOnFirst(Some(cancel_a)))
        .build();
    b.spawn(|_ctx| async { pending().await });
    b.spawn(|_ctx| async { Ok(()) });
    a.spawn(|_ctx| async { Ok(()) });
    a.spawn(|_ctx| async { Ok(()) });
    let (a, b) = tokio::join!(a.wait(), b.wait());
    (a, b, parent_a.is_cancelled() && parent_b.is_cancelled())
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_policy_works_with_next_wait_outcomes_and_limits() {
    let mut group = TaskGroup::<u32, String, _>::builder()
        .limit(1)
        .joiner(Supervise)
        .build();
    for i in 0..3 {
        group.spawn(move |_ctx| async move { Ok(i) });
    }
    let (first, outcome) = group.next().await.unwrap();
    assert_eq!((first.index(), outcome.ok()), (0, Some(0)));
    let rest = group.wait_outcomes().await;
    assert_eq!(
        rest.into_iter().map(Outcome::ok).collect::<Vec<_>>(),
        [Some(1), Some(2)]
    );
}

// ---------------------------------------------------------------------------
// Supervise

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn supervise_never_cancels_and_returns_every_outcome_in_spawn_order() {
    quiet_expected_panics();
    let mut group = TaskGroup::<u32, String, _>::builder()
        .joiner(Supervise)
        .build();
    group.spawn(|_ctx| async { Err("zero".to_string()) });
    group.spawn(|ctx| async move {
        // The error and the panic before it did not cancel anything.
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!ctx.is_cancelled());
        Ok(1)
    });
    group.spawn(|_ctx| async { panic!("expected panic: task 2") });
    let outcomes = group.wait().await;
    assert_eq!(outcomes.len(), 3);
    assert_eq!(outcomes[0].as_ref_err(), Some("zero"));
    assert!(matches!(outcomes[1], Outcome::Ok(1)));
    let Outcome::Panicked(payload) = &outcomes[2] else {
        panic!("task 2 panicked: {:?}", outcomes[2]);
    };
    assert_eq!(message(&**payload), "expected panic: task 2");
}

/// `Outcome` has no `as_ref`; this reads an error without moving it.
trait ErrRef {
    fn as_ref_err(&self) -> Option<&str>;
}

impl<T> ErrRef for Outcome<T, String> {
    fn as_ref_err(&self) -> Option<&str> {
        match self {
            Outcome::Err(e) => Some(e),
            _ => None,
        }
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn supervise_under_a_parent_deadline_reports_the_unfinished_as_cancelled() {
    let (parent, _cancel) = Context::background().with_timeout(Duration::from_millis(15));
    let mut group = TaskGroup::<u32, String, _>::builder()
        .joiner(Supervise)
        .context(&parent)
        .build();
    group.spawn(|_ctx| async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok(0)
    });
    group.spawn(|_ctx| async {
        tokio::time::sleep(Duration::from_secs(100)).await;
        Ok(1)
    });
    let start = Instant::now();
    let outcomes = group.wait().await;
    assert_eq!(start.elapsed(), Duration::from_millis(15));
    assert!(matches!(outcomes[..], [Outcome::Ok(0), Outcome::Cancelled]));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn supervise_leaves_what_next_handed_out_out_of_wait() {
    let mut group = TaskGroup::<u32, String, _>::builder()
        .joiner(Supervise)
        .build();
    for ms in [20u32, 10, 30] {
        group.spawn(move |_ctx| async move {
            tokio::time::sleep(Duration::from_millis(ms.into())).await;
            Ok(ms)
        });
    }
    let (id, outcome) = group.next().await.unwrap();
    assert_eq!((id.index(), outcome.ok()), (1, Some(10)));
    let outcomes = group.wait().await;
    assert!(matches!(outcomes[..], [Outcome::Ok(20), Outcome::Ok(30)]));
}

// ---------------------------------------------------------------------------
// FirstOk

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn first_ok_returns_the_first_success_in_time_and_drops_the_rest() {
    let mut group = TaskGroup::<u64, String, _>::builder()
        .joiner(FirstOk)
        .build();
    let mut flags = Vec::new();
    for ms in [30u64, 10, 20] {
        let (flag, dropped) = drop_flag();
        flags.push(dropped);
        group.spawn(move |_ctx| async move {
            let _flag = flag;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(ms)
        });
    }
    group.spawn(|_ctx| async { Err("fails first".to_string()) });
    let start = Instant::now();
    assert_eq!(group.wait().await, Ok(10));
    assert_eq!(start.elapsed(), Duration::from_millis(10));
    assert!(
        flags.iter().all(|f| f.load(SeqCst)),
        "every loser was dropped"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn first_ok_when_all_fail_returns_every_error_in_spawn_order() {
    let mut group = TaskGroup::<(), String, _>::builder()
        .joiner(FirstOk)
        .build();
    for i in 0..3u64 {
        // Task 2 fails first, task 0 last.
        group.spawn(move |_ctx| async move {
            tokio::time::sleep(Duration::from_millis(10 * (3 - i))).await;
            Err(format!("replica {i} refused"))
        });
    }
    let all = group.wait().await.unwrap_err();
    let errors: Vec<(u64, String)> = all
        .errors()
        .iter()
        .map(|(id, e)| (id.index(), e.clone()))
        .collect();
    assert_eq!(
        errors,
        [
            (0, "replica 0 refused".to_string()),
            (1, "replica 1 refused".to_string()),
            (2, "replica 2 refused".to_string()),
        ]
    );
    assert_eq!(all.context_error(), None);
    assert_eq!(
        all.to_string(),
        "all 3 tasks failed; the first: replica 0 refused"
    );
    assert_eq!(all.into_errors().len(), 3);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn first_ok_cancelled_by_a_parent_deadline_says_so() {
    let (parent, _cancel) = Context::background().with_timeout(Duration::from_millis(50));
    let mut group = TaskGroup::<(), String, _>::builder()
        .joiner(FirstOk)
        .context(&parent)
        .build();
    group.spawn(|_ctx| async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Err("refused".to_string())
    });
    group.spawn(|_ctx| async {
        tokio::time::sleep(Duration::from_secs(100)).await;
        Ok(())
    });
    let start = Instant::now();
    let all: AllFailed<String> = group.wait().await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert_eq!(all.errors().len(), 1);
    assert_eq!(all.context_error(), Some(ContextError::DeadlineExceeded));
    assert_eq!(
        all.to_string(),
        "1 task failed and the rest were stopped (context deadline exceeded); the first: refused"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn first_ok_on_an_empty_group_has_no_errors() {
    let group = TaskGroup::<(), String, _>::builder()
        .joiner(FirstOk)
        .build();
    let all = group.wait().await.unwrap_err();
    assert!(all.errors().is_empty());
    assert_eq!(all.context_error(), None);
    assert_eq!(
        all.to_string(),
        "no task succeeded: there was no task to run"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn first_ok_re_raises_a_panic_after_joining_everything() {
    quiet_expected_panics();
    let mut group = TaskGroup::<(), String, _>::builder()
        .joiner(FirstOk)
        .build();
    let (flag, dropped) = drop_flag();
    group.spawn(|_ctx| async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        panic!("expected panic: a bug, not a failed attempt")
    });
    group.spawn(move |_ctx| async move {
        let _flag = flag;
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(())
    });
    let payload = AssertUnwindSafe(group.wait())
        .catch_unwind()
        .await
        .unwrap_err();
    assert_eq!(
        message(&*payload),
        "expected panic: a bug, not a failed attempt"
    );
    assert!(
        dropped.load(SeqCst),
        "the panic cancelled the other attempt"
    );
}

#[test]
fn first_ok_a_success_racing_a_failure_always_wins() {
    let rt = multi_thread(2);
    for round in 0..3_000u32 {
        rt.block_on(async {
            let mut group = TaskGroup::<u32, String, _>::builder()
                .joiner(FirstOk)
                .build();
            group.spawn(|_ctx| async { Err("lost".to_string()) });
            group.spawn(move |_ctx| async move { Ok(round) });
            group.spawn(move |_ctx| async move { Ok(round + 1) });
            let won = group.wait().await;
            assert!(
                won == Ok(round) || won == Ok(round + 1),
                "round {round}: {won:?}"
            );
        });
    }
}

// ---------------------------------------------------------------------------
// hedge

#[test]
fn hedge_with_no_attempts_panics_naming_them() {
    let payload = std::panic::catch_unwind(|| {
        drop(hedge(
            &Context::background(),
            0,
            Duration::from_millis(1),
            |_ctx, _n| async { Ok::<(), String>(()) },
        ));
    })
    .unwrap_err();
    let text = message(&*payload);
    assert!(text.contains("attempts must be at least 1"), "{text}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hedge_starts_an_attempt_each_delay_and_the_first_success_wins() {
    let start = Instant::now();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let (flag, dropped) = drop_flag();
    let flag = Arc::new(Mutex::new(Some(flag)));
    let s = starts.clone();
    let reply = hedge(
        &Context::background(),
        3,
        Duration::from_millis(40),
        move |ctx, attempt| {
            s.lock().unwrap().push((attempt, start.elapsed()));
            let flag = if attempt == 0 {
                flag.lock().unwrap().take()
            } else {
                None
            };
            async move {
                let _flag = flag;
                // Attempt 0 is slow (a tail); attempt 1 answers in 30 ms.
                let took = if attempt == 0 { 1_000 } else { 30 };
                ctx.sleep(Duration::from_millis(took))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(attempt)
            }
        },
    )
    .await;
    assert_eq!(reply, Ok(1));
    assert_eq!(start.elapsed(), Duration::from_millis(70));
    assert_eq!(
        *starts.lock().unwrap(),
        [(0, Duration::ZERO), (1, Duration::from_millis(40))],
        "attempt 2 was due at 80 ms, after the win"
    );
    assert!(dropped.load(SeqCst), "the slow attempt was dropped");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hedge_starts_the_next_attempt_at_once_when_one_fails() {
    let start = Instant::now();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let s = starts.clone();
    let reply = hedge(
        &Context::background(),
        3,
        Duration::from_millis(40),
        move |_ctx, attempt| {
            s.lock().unwrap().push(start.elapsed());
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if attempt < 2 {
                    Err(format!("attempt {attempt} failed"))
                } else {
                    Ok("third time")
                }
            }
        },
    )
    .await;
    assert_eq!(reply, Ok("third time"));
    assert_eq!(
        *starts.lock().unwrap(),
        [
            Duration::ZERO,
            Duration::from_millis(10),
            Duration::from_millis(20)
        ]
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hedge_when_every_attempt_fails_returns_all_their_errors() {
    let reply = hedge(
        &Context::background(),
        3,
        Duration::from_millis(40),
        |_ctx, attempt| async move { Err::<(), _>(format!("attempt {attempt} failed")) },
    )
    .await;
    let all = reply.unwrap_err();
    let errors: Vec<String> = all.into_errors().into_iter().map(|(_, e)| e).collect();
    assert_eq!(
        errors,
        ["attempt 0 failed", "attempt 1 failed", "attempt 2 failed"]
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hedge_under_a_deadline_stops_and_says_so() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(50));
    let start = Instant::now();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let reply = hedge(&ctx, 5, Duration::from_millis(20), move |_ctx, _attempt| {
        c.fetch_add(1, SeqCst);
        pending::<Result<(), String>>()
    })
    .await;
    let all = reply.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert_eq!(all.context_error(), Some(ContextError::DeadlineExceeded));
    assert_eq!(count.load(SeqCst), 3, "attempts at 0, 20 and 40 ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedge_is_a_send_static_future() {
    let ctx = Context::background();
    let handle = tokio::spawn(hedge(
        &ctx,
        2,
        Duration::from_millis(1),
        |_ctx, attempt| async move { Ok::<_, String>(attempt) },
    ));
    assert_eq!(handle.await.unwrap(), Ok(0));
}

/// A joiner that is not `Unpin` (it holds a `PhantomPinned`).
struct Pinned(std::marker::PhantomPinned);

impl Joiner<(), String> for Pinned {
    type Output = ();

    fn on_complete(
        &mut self,
        _id: TaskId,
        _outcome: &Outcome<(), String>,
        _group: &Context,
    ) -> Decision {
        Decision::Continue
    }

    fn finish(self, _unread: Unread<(), String>, _group: &Context) {}
}

#[tokio::test(flavor = "current_thread")]
async fn a_group_is_unpin_send_and_sync_whatever_its_joiner() {
    fn unpin_send_sync<X: Unpin + Send + Sync>(_: &X) {}
    let mut group = TaskGroup::builder()
        .joiner(Pinned(std::marker::PhantomPinned))
        .build();
    unpin_send_sync(&group);
    group.spawn(|_ctx| async { Ok(()) });
    // `len`, `is_empty`, `context` and `cancel` need no bounds at all.
    fn unbounded<T, E, J>(group: &TaskGroup<T, E, J>) -> (usize, bool, bool) {
        (
            group.len(),
            group.is_empty(),
            group.context().is_cancelled(),
        )
    }
    assert_eq!(unbounded(&group), (1, false, false));
    group.wait().await;
}

/// A panic outranks an `Ok` that ends after it, in `hedge` as in a
/// `FirstOk` group: attempt 0 panics while attempt 1 is inside one long
/// poll (it cannot be dropped there), and attempt 1 then returns `Ok`.
/// `hedge` re-raises the panic instead of returning that `Ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedge_reraises_a_panic_that_came_before_a_later_ok() {
    quiet_expected_panics();
    let outcome = hedge(
        &Context::background(),
        2,
        Duration::from_millis(1),
        |ctx, attempt| async move {
            if attempt == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                panic!("expected panic: attempt 0");
            }
            // One poll until the panic has cancelled the group (bounded),
            // then a success.
            let start = std::time::Instant::now();
            while !ctx.is_cancelled() && start.elapsed() < Duration::from_secs(5) {
                std::hint::spin_loop();
            }
            Ok::<u32, String>(1)
        },
    );
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        AssertUnwindSafe(outcome).catch_unwind(),
    )
    .await
    .expect("no hang");
    let payload = result.expect_err("the panic of attempt 0 is re-raised, not hidden by Ok(1)");
    let text = message(&*payload);
    assert!(text.contains("attempt 0"), "{text}");
}
