//! The runner: a group's async tasks run as cells inside a few tokio tasks
//! (its shards) instead of one tokio task each. These tests hold it to the
//! per-task contract tokio tasks gave, through the public API only:
//!
//! - a task that blocks its thread holds back at most one sibling (the one
//!   its shard keeps to poll next, as tokio's LIFO slot holds one task),
//!   however the others were queued, woken or spawned: the rest of its
//!   shard's own queue is stolen by the other shards;
//! - a busy group leaves turns to the rest of the runtime;
//! - wake-ups from foreign threads, cancel, panics, runtime shutdown and
//!   nesting reach every task, and each task is accounted for once;
//! - a group leaves no tokio task behind once its tasks are gone.
//!
//! No fixed sleep stands for "long enough": waits poll a real condition
//! (bounded), and the deliberate `std::thread::sleep`s block a worker on
//! purpose (the hostage tests, and a shutdown with a batch in a shard's
//! hands). The randomized stress prints its seed when it fails;
//! rerun it with `TASKGROUP_STRESS_SEED=<seed>`, and change its number of
//! rounds with `TASKGROUP_STRESS_ROUNDS`.

use std::future::{Future, pending};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{self, Poll};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use taskgroup::{Context, ContextError, GroupError, Outcome, TaskFailed, TaskGroup, TaskState};

mod support;
use support::ms;
use support::{
    DropCounter, Rng, SeedReport, Token, alive_tasks, eventually, payload_str, rounds,
    seed_from_env_or_clock,
};
use tokio::sync::{mpsc, oneshot, watch};

// ---------------------------------------------------------------------------
// Helpers

/// The runner's turn: a shard polls at most this many cells before it
/// yields to tokio.
const TURN: usize = 128;

/// Counts its drop, then panics: a task whose destructor panics.
struct PanicOnDrop {
    task: usize,
    drops: Arc<AtomicUsize>,
}

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        self.drops.fetch_add(1, SeqCst);
        std::panic::panic_any(format!("expected panic: drop {}", self.task));
    }
}

/// Yields once as a hand-written future does: wakes itself at once and
/// returns `Pending`. Unlike `tokio::task::yield_now`, whose wake-up tokio
/// defers until the tokio task polling it (here, a shard) yields, this one
/// is ready to run again at once: only the runner's own turn limit keeps a
/// shard from polling it forever, and its cell goes back to the group's
/// queue straight from the poll.
fn self_wake() -> SelfWake {
    SelfWake(false)
}

struct SelfWake(bool);

impl Future for SelfWake {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Runs `f` within 10 s, or fails the test instead of hanging it.
async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

/// Silences the panics these tests raise on purpose (payloads starting with
/// "expected panic"); any other panic still prints.
fn quiet_expected_panics() {
    // The misuse panic of the `wait` test is caught and checked.
    support::quiet_panics(|message| {
        message.starts_with("expected panic") || message.contains("own tasks")
    });
}

/// A short name for an outcome, for messages.
fn kind<T, E>(outcome: &Outcome<T, E>) -> &'static str {
    match outcome {
        Outcome::Ok(_) => "Ok",
        Outcome::Err(_) => "Err",
        Outcome::Cancelled => "Cancelled",
        Outcome::Panicked(_) => "Panicked",
    }
}

// ---------------------------------------------------------------------------
// 1. A task that blocks its thread holds back at most one sibling

/// Quick tasks beside the blocker.
const QUICK: usize = 200;

/// What a task blocking its thread may hold back: the one task its shard
/// keeps to poll next (runner invariant 10), as a tokio task may hold back
/// the one in its worker's LIFO slot. The rest of the shard's own queue
/// is stolen by the other shards (invariant 11).
const HOSTAGES: usize = 1;

/// One blocker among `QUICK` quick tasks, and what they report.
#[derive(Default)]
struct Hostages {
    /// The blocker has started blocking its thread.
    blocking: AtomicBool,
    /// Quick tasks parked so far (in the tests that park them first).
    parked: AtomicUsize,
    /// Quick tasks finished so far; `changed` tells the blocker.
    finished: Mutex<usize>,
    changed: Condvar,
}

impl Hostages {
    /// The blocker's body. Blocks its thread (deliberately: that is the
    /// subject) for 200 ms, then on until all quick tasks but `HOSTAGES`
    /// have finished, for 3 s at most. So a slow machine never fails the
    /// test by being slow: only a runner that holds more than one task back
    /// keeps the blocker blocking, and its hostages then finish after it.
    /// Returns when it releases its thread.
    fn block_thread(&self) -> Instant {
        self.blocking.store(true, SeqCst);
        std::thread::sleep(ms(200));
        let finished = self.finished.lock().unwrap();
        let _finished = self
            .changed
            .wait_timeout_while(finished, Duration::from_secs(3), |n| *n < QUICK - HOSTAGES)
            .unwrap();
        Instant::now()
    }

    /// A quick task's end: counted, and the blocker told.
    fn finish(&self) -> Instant {
        *self.finished.lock().unwrap() += 1;
        self.changed.notify_all();
        Instant::now()
    }

    /// Spawns the quick tasks, each parked on one of `wakes` until it is
    /// woken, then finishing.
    fn spawn_parked(
        self: &Arc<Self>,
        group: &mut TaskGroup<Instant, String>,
        wakes: Vec<oneshot::Receiver<()>>,
    ) {
        for wake in wakes {
            let this = self.clone();
            group.spawn(move |_ctx| async move {
                this.parked.fetch_add(1, SeqCst);
                wake.await.map_err(|e| e.to_string())?;
                Ok(this.finish())
            });
        }
    }

    /// Counts the quick tasks that finished after the blocker released its
    /// thread, and checks there are at most `HOSTAGES`.
    fn assert_bounded(&self, released: Instant, quick_finished: &[Instant]) {
        assert!(self.blocking.load(SeqCst), "the blocker blocked");
        assert_eq!(quick_finished.len(), QUICK);
        let hostages = quick_finished.iter().filter(|&&at| at > released).count();
        assert!(
            hostages <= HOSTAGES,
            "{hostages} of {QUICK} quick tasks finished only after the blocking task \
             released its thread; at most {HOSTAGES} (the task its shard keeps) may"
        );
    }
}

/// `QUICK` oneshot channels: their senders, and their receivers.
fn wakes() -> (Vec<oneshot::Sender<()>>, Vec<oneshot::Receiver<()>>) {
    (0..QUICK).map(|_| oneshot::channel::<()>()).unzip()
}

/// One blocker, spawned first (it heads the queue, so the shard that takes
/// it takes its share of the quick tasks into its own queue), blocking its
/// thread with `block`, and `QUICK` quick tasks that go back to the queue
/// once each (a woken task goes to the shared queue, not to the shard that
/// polled it last): at most `HOSTAGES` finish after it.
async fn a_blocker_among_quick_tasks(block: fn(&Hostages) -> Instant) {
    let hostages = Arc::new(Hostages::default());
    let mut group = TaskGroup::<Instant, String>::new();
    let h = hostages.clone();
    group.spawn(move |_ctx| async move { Ok(block(&h)) });
    for _ in 0..QUICK {
        let h = hostages.clone();
        group.spawn(move |_ctx| async move {
            self_wake().await;
            Ok(h.finish())
        });
    }
    let times = within("the group", group.wait()).await.unwrap();
    hostages.assert_bounded(times[0], &times[1..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_blocking_its_thread_holds_back_at_most_one() {
    a_blocker_among_quick_tasks(Hostages::block_thread).await;
}

/// The same with the blocker inside `tokio::task::block_in_place`: tokio
/// hands that worker to another thread, and the shard stuck in the
/// blocker's poll holds back at most the task it keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_blocking_in_place_holds_back_at_most_one() {
    a_blocker_among_quick_tasks(|h| tokio::task::block_in_place(|| h.block_thread())).await;
}

/// Tasks parked on channels, then woken by a sibling: the first wake-up
/// comes from a worker thread (the sibling's shard), where tokio runs a
/// woken or spawned tokio task next on that same thread (its "LIFO slot",
/// which no other worker can steal). A shard woken there must not stay
/// stuck behind a task that then blocks that thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_woken_by_a_sibling_then_blocking_holds_back_at_most_one() {
    let hostages = Arc::new(Hostages::default());
    let mut group = TaskGroup::<Instant, String>::new();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let (blocker_tx, blocker_rx) = oneshot::channel::<()>();
    let (quick_txs, quick_rxs) = wakes();

    // Task 0: the trigger. Wakes the blocker first, then every quick task.
    let h = hostages.clone();
    group.spawn(move |_ctx| async move {
        h.parked.fetch_add(1, SeqCst);
        go_rx.await.map_err(|e| e.to_string())?;
        blocker_tx.send(()).map_err(|()| "blocker gone")?;
        for tx in quick_txs {
            tx.send(()).map_err(|()| "quick task gone")?;
        }
        Ok(Instant::now())
    });
    // Task 1: the blocker.
    let h = hostages.clone();
    group.spawn(move |_ctx| async move {
        h.parked.fetch_add(1, SeqCst);
        blocker_rx.await.map_err(|e| e.to_string())?;
        Ok(h.block_thread())
    });
    hostages.spawn_parked(&mut group, quick_rxs);
    eventually("every task parked", || {
        hostages.parked.load(SeqCst) == QUICK + 2
    })
    .await;
    go_tx.send(()).unwrap();
    let times = within("the group", group.wait()).await.unwrap();
    hostages.assert_bounded(times[1], &times[2..]);
}

/// The waker blocks its own thread right after waking its siblings, in the
/// same poll: as with tokio tasks, where only the one task in that
/// worker's LIFO slot would wait, at most one may wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_blocking_right_after_waking_its_siblings_holds_back_at_most_one() {
    let hostages = Arc::new(Hostages::default());
    let mut group = TaskGroup::<Instant, String>::new();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let (quick_txs, quick_rxs) = wakes();
    let h = hostages.clone();
    group.spawn(move |_ctx| async move {
        h.parked.fetch_add(1, SeqCst);
        go_rx.await.map_err(|e| e.to_string())?;
        for tx in quick_txs {
            tx.send(()).map_err(|()| "quick task gone")?;
        }
        Ok(h.block_thread())
    });
    hostages.spawn_parked(&mut group, quick_rxs);
    eventually("every task parked", || {
        hostages.parked.load(SeqCst) == QUICK + 1
    })
    .await;
    go_tx.send(()).unwrap();
    let times = within("the group", group.wait()).await.unwrap();
    hostages.assert_bounded(times[0], &times[1..]);
}

/// The same with the waker's own wake-ups coming from a std thread: every
/// wake-up reaches the runtime from outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_woken_from_outside_then_blocking_holds_back_at_most_one() {
    let hostages = Arc::new(Hostages::default());
    let mut group = TaskGroup::<Instant, String>::new();
    let (blocker_tx, blocker_rx) = oneshot::channel::<()>();
    let (quick_txs, quick_rxs) = wakes();
    let h = hostages.clone();
    group.spawn(move |_ctx| async move {
        h.parked.fetch_add(1, SeqCst);
        blocker_rx.await.map_err(|e| e.to_string())?;
        Ok(h.block_thread())
    });
    hostages.spawn_parked(&mut group, quick_rxs);
    eventually("every task parked", || {
        hostages.parked.load(SeqCst) == QUICK + 1
    })
    .await;
    // The blocker first, and only once it blocks, the others.
    blocker_tx.send(()).unwrap();
    eventually("the blocker blocking", || hostages.blocking.load(SeqCst)).await;
    let waker = std::thread::spawn(move || {
        for tx in quick_txs {
            tx.send(()).unwrap();
        }
    });
    let times = within("the group", group.wait()).await.unwrap();
    waker.join().unwrap();
    hostages.assert_bounded(times[0], &times[1..]);
}

/// The hostage test of the exit path: the last parked task ending inside a
/// shard's poll wakes the idle shards, to exit (runner invariant 5). That wake comes from a worker thread, where tokio
/// runs a woken task next on the same thread (its LIFO slot), so the woken
/// shard must not wait there if the next task of the batch blocks the
/// thread: it would stay counted as a live shard, not idle, and a task
/// spawned meanwhile would find no shard to run it while the other worker
/// idles. Each round: task T, parked, is woken from a tokio task that
/// spawns the blocker B right after, so that one shard takes both; T blocks
/// its thread for 10 ms (time for the other shard to go idle) and ends,
/// the last parked task; then B blocks until a task spawned once it
/// blocks has finished (1 s at most). That task is not in B's batch: it
/// must not wait for B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_blocking_after_the_last_parked_task_ended_holds_back_no_task_outside_its_batch() {
    #[derive(Default)]
    struct Round {
        blocking: AtomicBool,
        finished: Mutex<Option<Instant>>,
        changed: Condvar,
    }
    let baseline = alive_tasks();
    for round in 0..rounds(10) {
        let state = Arc::new(Round::default());
        let mut group = TaskGroup::<Instant, String>::new();
        let (wake_tx, wake_rx) = oneshot::channel::<()>();
        let (parked_tx, parked_rx) = oneshot::channel::<()>();
        group.spawn(move |_ctx| async move {
            let _ = parked_tx.send(());
            wake_rx.await.map_err(|e| e.to_string())?;
            std::thread::sleep(ms(10));
            Ok(Instant::now())
        });
        parked_rx.await.unwrap();
        eventually("one shard, idle", || alive_tasks() == baseline + 1).await;
        let s = state.clone();
        let mut group = tokio::spawn(async move {
            wake_tx.send(()).unwrap();
            group.spawn(move |_ctx| async move {
                s.blocking.store(true, SeqCst);
                let finished = s.finished.lock().unwrap();
                let _finished = s
                    .changed
                    .wait_timeout_while(finished, Duration::from_secs(1), |at| at.is_none())
                    .unwrap();
                Ok(Instant::now())
            });
            group
        })
        .await
        .unwrap();
        eventually("the blocker blocking", || state.blocking.load(SeqCst)).await;
        let spawned = Instant::now();
        let s = state.clone();
        group.spawn(move |_ctx| async move {
            let now = Instant::now();
            *s.finished.lock().unwrap() = Some(now);
            s.changed.notify_all();
            Ok(now)
        });
        let times = within("the group", group.wait()).await.unwrap();
        let (released, finished) = (times[1], times[2]);
        assert!(
            finished < released,
            "round {round}: a task spawned while a sibling blocked its thread ran \
             {:?} after its spawn, only once the blocker released its thread",
            finished - spawned
        );
        eventually("the shards exiting", || alive_tasks() == baseline).await;
    }
}

// ---------------------------------------------------------------------------
// 2. Fairness with the rest of the runtime

/// A plain tokio task that counts its turns, and the most steps the
/// group's tasks took between two of them (they add to `since_tick`). It
/// wakes itself at once rather than through `yield_now`, whose wake-up
/// tokio defers to its next look at the I/O driver (every 61 ticks on a
/// busy runtime): so it counts its turns.
struct Ticker {
    ticks: Arc<AtomicUsize>,
    since_tick: Arc<AtomicUsize>,
    most_between_ticks: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Ticker {
    fn start() -> Ticker {
        let ticks = Arc::new(AtomicUsize::new(0));
        let since_tick = Arc::new(AtomicUsize::new(0));
        let most_between_ticks = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s, m, st) = (
            ticks.clone(),
            since_tick.clone(),
            most_between_ticks.clone(),
            stop.clone(),
        );
        let task = tokio::spawn(async move {
            while !st.load(SeqCst) {
                t.fetch_add(1, SeqCst);
                m.fetch_max(s.swap(0, SeqCst), SeqCst);
                self_wake().await;
            }
        });
        Ticker {
            ticks,
            since_tick,
            most_between_ticks,
            stop,
            task,
        }
    }

    /// Stops it; returns the most steps between two of its turns.
    async fn stop(self) -> usize {
        self.stop.store(true, SeqCst);
        self.task.await.unwrap();
        self.most_between_ticks.load(SeqCst)
    }
}

/// Group tasks that are always ready to run (three ways) share a
/// current-thread runtime with a plain tokio task: that task keeps getting
/// turns while they run, and between two of its turns the group's shard
/// polls at most a turn's worth of cells (plus what a poll may do within
/// tokio's coop budget).
#[tokio::test(flavor = "current_thread")]
async fn busy_group_tasks_leave_turns_to_other_tokio_tasks() {
    const ITERATIONS: usize = 3_000;
    let ticker = Ticker::start();
    let (ticks, since_tick) = (ticker.ticks.clone(), ticker.since_tick.clone());

    let mut group = TaskGroup::<usize, String>::new();
    for task in 0..9 {
        let (t, s) = (ticks.clone(), since_tick.clone());
        group.spawn(move |_ctx| async move {
            let start = t.load(SeqCst);
            let step = || s.fetch_add(1, SeqCst);
            match task % 3 {
                // Runnable again at once: only the turn limit stops it.
                0 => {
                    for _ in 0..ITERATIONS {
                        step();
                        self_wake().await;
                    }
                }
                // tokio's yield.
                1 => {
                    for _ in 0..ITERATIONS {
                        step();
                        tokio::task::yield_now().await;
                    }
                }
                // An always-ready channel: each receive spends tokio's coop
                // budget, the shard's budget for its whole turn.
                _ => {
                    let (tx, mut rx) = mpsc::unbounded_channel();
                    for i in 0..ITERATIONS {
                        tx.send(i).unwrap();
                    }
                    for i in 0..ITERATIONS {
                        step();
                        assert_eq!(rx.recv().await, Some(i));
                    }
                }
            }
            Ok(t.load(SeqCst) - start)
        });
    }
    let advanced = within("the busy group", group.wait()).await.unwrap();
    let most = ticker.stop().await;

    for (task, ticks) in advanced.iter().enumerate() {
        assert!(
            *ticks >= 10,
            "the other tokio task got {ticks} turns while busy task {task} ran \
             {ITERATIONS} steps: the group starves the runtime ({advanced:?})"
        );
    }
    assert!(
        most <= 2 * TURN,
        "the group took {most} steps between two turns of the other task \
         (a turn is {TURN} polls, plus at most {TURN} steps of coop budget)"
    );
}

/// A baton two tasks pass back and forth: each waits for its turn, then
/// hands it over and wakes the other directly. No tokio resource is
/// involved, so tokio's coop budget never runs out: only the runner's own
/// turn limit bounds a shard's poll.
#[derive(Default)]
struct Baton {
    /// Whose turn it is: 0 or 1.
    turn: AtomicUsize,
    wakers: Mutex<[Option<task::Waker>; 2]>,
}

impl Baton {
    async fn wait_turn(&self, me: usize) {
        std::future::poll_fn(|cx| {
            if self.turn.load(SeqCst) == me {
                return Poll::Ready(());
            }
            self.wakers.lock().unwrap()[me] = Some(cx.waker().clone());
            if self.turn.load(SeqCst) == me {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    fn pass(&self, me: usize) {
        self.turn.store(1 - me, SeqCst);
        let other = self.wakers.lock().unwrap()[1 - me].take();
        if let Some(waker) = other {
            waker.wake();
        }
    }
}

/// Two tasks of a group pass a baton, each waking the other from inside
/// its own poll: the shard keeps the task just woken and polls it next
/// (as tokio runs a task woken by a task next). It still leaves turns to
/// a plain tokio task, at most a turn's worth of polls apart, and a third
/// task of the group, queued behind them, runs while they go on.
#[tokio::test(flavor = "current_thread")]
async fn tasks_passing_a_baton_leave_turns_to_tokio_and_to_their_siblings() {
    const PASSES: usize = 20_000;
    let ticker = Ticker::start();
    let since_tick = ticker.since_tick.clone();

    let baton = Arc::new(Baton::default());
    let passes = Arc::new(AtomicUsize::new(0));
    let mut group = TaskGroup::<usize, String>::new();
    for me in 0..2 {
        let (baton, passes, s) = (baton.clone(), passes.clone(), since_tick.clone());
        group.spawn(move |_ctx| async move {
            for _ in 0..PASSES {
                baton.wait_turn(me).await;
                s.fetch_add(1, SeqCst);
                passes.fetch_add(1, SeqCst);
                baton.pass(me);
            }
            Ok(0)
        });
    }
    // Queued once the two are under way: waits for a pass or two first.
    let p = passes.clone();
    group.spawn(move |_ctx| async move {
        while p.load(SeqCst) < 10 {
            self_wake().await;
        }
        Ok(p.load(SeqCst))
    });
    let done = within("the baton", group.wait()).await.unwrap();
    let ticks = ticker.ticks.load(SeqCst);
    let most = ticker.stop().await;

    assert!(
        done[2] < PASSES,
        "the third task ran only after {} of {} passes: the pair starved it",
        done[2],
        2 * PASSES
    );
    assert!(ticks >= 10, "the tokio task got {ticks} turns");
    assert!(
        most <= TURN,
        "the pair passed the baton {most} times between two turns of the other \
         task (a turn is {TURN} polls)"
    );
}

/// A task wakes eight siblings at once, each of which then keeps its
/// thread busy: the shard keeps at most one of them to run next (as
/// tokio's LIFO slot holds one task), so the others go to the queue and
/// run on the other worker in parallel. Each woken task spins until it has
/// seen two different threads run woken tasks (or 5 s pass): with all of
/// them kept on the waker's thread, none would ever see a second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn siblings_woken_at_once_run_on_both_workers() {
    const SIBLINGS: usize = 8;
    let threads = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let parked = Arc::new(AtomicUsize::new(0));
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..SIBLINGS).map(|_| oneshot::channel::<()>()).unzip();
    let mut group = TaskGroup::<bool, String>::new();
    for rx in rxs {
        let (threads, parked) = (threads.clone(), parked.clone());
        group.spawn(move |_ctx| async move {
            parked.fetch_add(1, SeqCst);
            rx.await.map_err(|e| e.to_string())?;
            threads.lock().unwrap().insert(std::thread::current().id());
            let start = Instant::now();
            // Busy on purpose: this thread is taken while it waits.
            while threads.lock().unwrap().len() < 2 && start.elapsed() < Duration::from_secs(5) {
                std::hint::spin_loop();
            }
            Ok(threads.lock().unwrap().len() >= 2)
        });
    }
    let p = parked.clone();
    group.spawn(move |_ctx| async move {
        p.fetch_add(1, SeqCst);
        go_rx.await.map_err(|e| e.to_string())?;
        for tx in txs {
            tx.send(()).map_err(|()| "sibling gone")?;
        }
        Ok(true)
    });
    eventually("every task parked", || parked.load(SeqCst) == SIBLINGS + 1).await;
    go_tx.send(()).unwrap();
    let saw = within("the siblings", group.wait()).await.unwrap();
    assert!(
        saw.iter().all(|&two| two),
        "the woken siblings ran on one thread only: {saw:?}"
    );
}

/// Cells that each drain an always-ready channel spend tokio's coop budget,
/// which is the shard's for its whole turn. Once it has run out, the shard
/// yields to tokio rather than poll more cells, which could only be told to
/// come back later: each cell checks, as it is polled, that the budget is
/// not already spent.
#[tokio::test(flavor = "current_thread")]
async fn a_shard_yields_once_tokios_coop_budget_runs_out() {
    const CELLS: usize = 32;
    const MESSAGES: usize = 1_000;
    let polls = Arc::new(AtomicUsize::new(0));
    let polls_without_budget = Arc::new(AtomicUsize::new(0));
    let mut group = TaskGroup::<(), String>::new();
    for _ in 0..CELLS {
        let (polls, spent) = (polls.clone(), polls_without_budget.clone());
        group.spawn(move |_ctx| {
            let mut drain = Box::pin(async move {
                let (tx, mut rx) = mpsc::unbounded_channel();
                for i in 0..MESSAGES {
                    tx.send(i).unwrap();
                }
                for i in 0..MESSAGES {
                    assert_eq!(rx.recv().await, Some(i));
                }
                Ok(())
            });
            std::future::poll_fn(move |cx| {
                polls.fetch_add(1, SeqCst);
                if !tokio::task::coop::has_budget_remaining() {
                    spent.fetch_add(1, SeqCst);
                }
                drain.as_mut().poll(cx)
            })
        });
    }
    within("the draining group", group.wait()).await.unwrap();
    let polls = polls.load(SeqCst);
    // A cell's poll receives at most a budget's worth (128) of messages.
    assert!(polls >= CELLS * (MESSAGES / 128), "{polls} polls");
    let spent = polls_without_budget.load(SeqCst);
    assert_eq!(
        spent, 0,
        "{spent} of {polls} cell polls came after the shard's coop budget ran out"
    );
}

// ---------------------------------------------------------------------------
// 3. Wake-ups from foreign threads

/// 1,000 tasks park on oneshots whose senders four std threads fire, in
/// reverse order, once every task is parked: all complete, each with its
/// own value, in spawn order.
async fn tasks_woken_from_std_threads_complete_in_spawn_order() {
    const TASKS: usize = 1_000;
    const THREADS: usize = 4;
    let parked = Arc::new(AtomicUsize::new(0));
    let mut group = TaskGroup::<usize, String>::new();
    let mut senders: Vec<Vec<(usize, oneshot::Sender<usize>)>> =
        (0..THREADS).map(|_| Vec::new()).collect();
    for task in 0..TASKS {
        let (tx, rx) = oneshot::channel();
        senders[task % THREADS].push((task, tx));
        let parked = parked.clone();
        group.spawn(move |_ctx| async move {
            parked.fetch_add(1, SeqCst);
            rx.await.map_err(|e| e.to_string())
        });
    }
    eventually("every task parked", || parked.load(SeqCst) == TASKS).await;
    let threads: Vec<_> = senders
        .into_iter()
        .map(|mut senders| {
            std::thread::spawn(move || {
                while let Some((task, tx)) = senders.pop() {
                    tx.send(task * 3 + 1).unwrap();
                }
            })
        })
        .collect();
    let values = within("the woken tasks", group.wait()).await.unwrap();
    for thread in threads {
        thread.join().unwrap();
    }
    let expected: Vec<usize> = (0..TASKS).map(|task| task * 3 + 1).collect();
    assert_eq!(values, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wakes_from_std_threads_reach_every_task_multi_thread() {
    tasks_woken_from_std_threads_complete_in_spawn_order().await;
}

#[tokio::test(flavor = "current_thread")]
async fn wakes_from_std_threads_reach_every_task_current_thread() {
    tasks_woken_from_std_threads_complete_in_spawn_order().await;
}

// ---------------------------------------------------------------------------
// 4. Cancel reaches parked tasks; 5. no tokio task is left behind

/// 10,000 tasks parked, half on a future that never completes and half on
/// their context: a cancel drops every one, `wait_outcomes` reports them
/// all cancelled with every future already dropped, and the shards (never
/// more than one per worker) exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_drops_ten_thousand_parked_tasks_and_the_shards_exit() {
    const TASKS: usize = 10_000;
    let baseline = alive_tasks();
    let parked = Arc::new(AtomicUsize::new(0));
    let drops = Arc::new(AtomicUsize::new(0));
    let mut group = TaskGroup::<(), String>::new();
    for task in 0..TASKS {
        let counter = DropCounter(drops.clone());
        let parked = parked.clone();
        group.spawn(move |ctx| async move {
            let _counter = counter;
            parked.fetch_add(1, SeqCst);
            if task % 2 == 0 {
                pending::<()>().await;
            } else {
                ctx.done().await;
            }
            Ok(())
        });
    }
    // Counted before its await, a task is parked only once its poll has
    // returned: one the cancel finds mid-poll sees its context cancelled
    // in that poll and returns `Ok`, as a tokio task would.
    eventually("every task parked", || {
        parked.load(SeqCst) == TASKS
            && group
                .snapshot()
                .tasks()
                .iter()
                .all(|task| task.state() == TaskState::Idle)
    })
    .await;
    let shards = alive_tasks() - baseline;
    assert!(
        (1..=2).contains(&shards),
        "{shards} shards for a group on 2 workers"
    );
    assert_eq!(drops.load(SeqCst), 0);

    group.cancel();
    let outcomes = within("wait_outcomes after the cancel", group.wait_outcomes()).await;
    assert_eq!(
        drops.load(SeqCst),
        TASKS,
        "a task future outlived wait_outcomes"
    );
    assert_eq!(outcomes.len(), TASKS);
    for (task, outcome) in outcomes.iter().enumerate() {
        assert!(
            outcome.is_cancelled(),
            "task {task}: {} instead of Cancelled",
            kind(outcome)
        );
    }
    eventually("the shards exiting", || alive_tasks() == baseline).await;
}

/// A group whose tasks finish at once, and one whose tasks park (on
/// channels, timers and each other) and then finish: once `wait` returns,
/// the runtime goes back to the tokio tasks it had before.
async fn finished_groups_leave_no_tokio_task_behind() {
    let baseline = alive_tasks();

    let mut group = TaskGroup::<usize, String>::new();
    for task in 0..500 {
        group.spawn(move |_ctx| async move {
            if task % 2 == 0 {
                self_wake().await;
            }
            Ok(task)
        });
    }
    let values = within("the quick group", group.wait()).await.unwrap();
    assert_eq!(values, (0..500).collect::<Vec<_>>());
    eventually("the quick group's shards exiting", || {
        alive_tasks() == baseline
    })
    .await;

    let mut group = TaskGroup::<usize, String>::new();
    let mut senders = Vec::new();
    let parked = Arc::new(AtomicUsize::new(0));
    // Each third task also waits for the task before it: wakes among
    // siblings, from whichever worker runs that one.
    let mut relay: Option<oneshot::Receiver<usize>> = None;
    for task in 0..300 {
        let parked = parked.clone();
        let (to_next, from_me) = oneshot::channel();
        let from_prev = relay.replace(from_me);
        let (tx, rx) = oneshot::channel::<usize>();
        senders.push(tx);
        group.spawn(move |_ctx| async move {
            parked.fetch_add(1, SeqCst);
            let mine = rx.await.map_err(|e| e.to_string())?;
            tokio::time::sleep(Duration::from_micros(50 * (task as u64 % 4))).await;
            if task % 3 == 0
                && let Some(prev) = from_prev
            {
                let got = prev.await.map_err(|e| e.to_string())?;
                assert_eq!(got, task - 1);
            }
            let _ = to_next.send(task);
            Ok(mine)
        });
    }
    eventually("every task parked", || parked.load(SeqCst) == 300).await;
    let shards = alive_tasks() - baseline;
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    assert!(
        (1..=workers).contains(&shards),
        "{shards} shards for a group on {workers} workers"
    );
    for (task, tx) in senders.into_iter().enumerate().rev() {
        tx.send(task * 2).unwrap();
    }
    let values = within("the parked group", group.wait()).await.unwrap();
    assert_eq!(values, (0..300).map(|t| t * 2).collect::<Vec<_>>());
    eventually("the parked group's shards exiting", || {
        alive_tasks() == baseline
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_groups_leave_no_tokio_task_behind_multi_thread() {
    finished_groups_leave_no_tokio_task_behind().await;
}

#[tokio::test(flavor = "current_thread")]
async fn finished_groups_leave_no_tokio_task_behind_current_thread() {
    finished_groups_leave_no_tokio_task_behind().await;
}

/// Groups dropped without waiting, with tasks finished, parked and still
/// running: their futures are dropped and their shards exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_groups_leave_no_tokio_task_behind() {
    let baseline = alive_tasks();
    let drops = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    for round in 0..20 {
        let mut group = TaskGroup::<(), String>::new();
        for task in 0..50 {
            let (counter, started) = (DropCounter(drops.clone()), started.clone());
            group.spawn(move |_ctx| async move {
                let _counter = counter;
                started.fetch_add(1, SeqCst);
                match task % 3 {
                    0 => Ok(()),
                    1 => pending().await,
                    _ => loop {
                        self_wake().await;
                    },
                }
            });
        }
        let want = (round + 1) * 50;
        eventually("every task started", || started.load(SeqCst) == want).await;
        drop(group);
    }
    eventually("every future dropped", || drops.load(SeqCst) == 20 * 50).await;
    eventually("the shards exiting", || alive_tasks() == baseline).await;
}

// ---------------------------------------------------------------------------
// 6. Nested groups

type Tree = Vec<Vec<Vec<usize>>>;

/// Three levels of groups, each built inside a task of the one above from
/// its context: values come back in spawn order at every level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_nested_three_deep_inside_tasks_join_in_spawn_order() {
    let baseline = alive_tasks();
    let mut outer = TaskGroup::<Vec<Vec<usize>>, String>::new();
    for a in 0..4 {
        outer.spawn(move |ctx| async move {
            let mut middle = TaskGroup::<Vec<usize>, String>::with_context(&ctx);
            for b in 0..4 {
                middle.spawn(move |ctx| async move {
                    let mut inner = TaskGroup::<usize, String>::with_context(&ctx);
                    for c in 0..4 {
                        inner.spawn(move |_ctx| async move {
                            if (a + b + c) % 2 == 0 {
                                self_wake().await;
                            }
                            Ok(a * 100 + b * 10 + c)
                        });
                    }
                    inner.wait().await.map_err(|e| e.to_string())
                });
            }
            middle.wait().await.map_err(|e| e.to_string())
        });
    }
    let tree: Tree = within("the nested groups", outer.wait()).await.unwrap();
    let expected: Tree = (0..4)
        .map(|a| {
            (0..4)
                .map(|b| (0..4).map(|c| a * 100 + b * 10 + c).collect())
                .collect()
        })
        .collect();
    assert_eq!(tree, expected);
    eventually("every shard exiting", || alive_tasks() == baseline).await;
}

/// Cancelling the outer group cancels the contexts three groups down before
/// `cancel` returns, and every parked task at every level is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_outer_group_reaches_tasks_three_groups_down() {
    let baseline = alive_tasks();
    let drops = Arc::new(AtomicUsize::new(0));
    let contexts: Arc<Mutex<Vec<Context>>> = Arc::default();
    let mut outer = TaskGroup::<(), String>::new();
    for _ in 0..3 {
        let (d, cx) = (drops.clone(), contexts.clone());
        outer.spawn(move |ctx| async move {
            let _counter = DropCounter(d.clone());
            let mut middle = TaskGroup::<(), String>::with_context(&ctx);
            for _ in 0..3 {
                let (d, cx) = (d.clone(), cx.clone());
                middle.spawn(move |ctx| async move {
                    let _counter = DropCounter(d.clone());
                    let mut inner = TaskGroup::<(), String>::with_context(&ctx);
                    for task in 0..3 {
                        let (d, cx) = (d.clone(), cx.clone());
                        inner.spawn(move |ctx| async move {
                            let _counter = DropCounter(d);
                            cx.lock().unwrap().push(ctx.clone());
                            if task == 0 {
                                ctx.done().await;
                            }
                            pending().await
                        });
                    }
                    inner.wait().await.map(drop).map_err(|e| e.to_string())
                });
            }
            middle.wait().await.map(drop).map_err(|e| e.to_string())
        });
    }
    eventually("every innermost task parked", || {
        contexts.lock().unwrap().len() == 27
    })
    .await;
    assert_eq!(drops.load(SeqCst), 0);

    outer.cancel();
    // Synchronous: every descendant context reports it at once.
    for ctx in contexts.lock().unwrap().iter() {
        assert_eq!(ctx.err(), Some(ContextError::Cancelled));
    }
    let outcomes = within("the outer group", outer.wait_outcomes()).await;
    assert_eq!(outcomes.len(), 3);
    assert!(outcomes.iter().all(Outcome::is_cancelled));
    // The outer tasks' futures are gone; the groups they held were dropped
    // with them, and their own shards drop their tasks.
    eventually("every future at every level dropped", || {
        drops.load(SeqCst) == 3 + 9 + 27
    })
    .await;
    contexts.lock().unwrap().clear();
    eventually("every shard exiting", || alive_tasks() == baseline).await;
}

type Slot = Arc<Mutex<Option<TaskGroup<&'static str, String>>>>;

/// `wait` called from one of the group's own tasks, while its siblings are
/// parked (on other shards, too): a clear panic, not a hang; and the group,
/// dropped by the failed call, drops those siblings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_from_a_task_of_a_group_with_parked_siblings_panics_naming_own_tasks() {
    quiet_expected_panics();
    const SIBLINGS: usize = 40;
    let baseline = alive_tasks();
    let slot: Slot = Arc::default();
    let parked = Arc::new(AtomicUsize::new(0));
    let drops = Arc::new(AtomicUsize::new(0));
    let mut group = TaskGroup::new();
    for task in 0..SIBLINGS {
        let (p, counter) = (parked.clone(), DropCounter(drops.clone()));
        group.spawn(move |ctx| async move {
            let _counter = counter;
            p.fetch_add(1, SeqCst);
            if task % 2 == 0 {
                ctx.done().await;
            }
            pending().await
        });
    }
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let (result_tx, result_rx) = oneshot::channel();
    let s = slot.clone();
    group.spawn(move |_ctx| async move {
        go_rx.await.map_err(|e| e.to_string())?;
        let group = s.lock().unwrap().take().expect("the group is in its slot");
        let result = AssertUnwindSafe(group.wait()).catch_unwind().await;
        let message = result
            .map_err(|payload| payload_str(&*payload).to_owned())
            .map(|_| ());
        let _ = result_tx.send(message);
        Ok("done")
    });
    eventually("the siblings parked", || parked.load(SeqCst) == SIBLINGS).await;
    *slot.lock().unwrap() = Some(group);
    go_tx.send(()).unwrap();
    let message = within("the task calling wait", result_rx)
        .await
        .unwrap()
        .expect_err("wait from one of the group's own tasks returned");
    assert!(message.contains("own tasks"), "{message}");
    eventually("the parked siblings dropped", || {
        drops.load(SeqCst) == SIBLINGS
    })
    .await;
    eventually("every shard exiting", || alive_tasks() == baseline).await;
}

// ---------------------------------------------------------------------------
// 7. Runtime shutdown

/// A runtime dropped while a group has parked cells, cells queued or being
/// polled (always runnable), and cells being woken again and again from std
/// threads all through the shutdown: every task future is dropped by the
/// time the runtime is, and the group, now outside any runtime, reports
/// every task cancelled at the first poll.
#[test]
fn runtime_shutdown_drops_parked_queued_and_woken_tasks() {
    const PARKED: usize = 2_000;
    const BUSY: usize = 200;
    const WOKEN: usize = 500;
    const TASKS: usize = PARKED + BUSY + WOKEN;
    let runtime = support::multi_thread(2);
    let drops = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let bell = Arc::new(tokio::sync::Notify::new());
    let group = runtime.block_on(async {
        let mut group = TaskGroup::<(), String>::new();
        for task in 0..TASKS {
            let (counter, started) = (DropCounter(drops.clone()), started.clone());
            match task % 5 {
                // Woken from outside, again and again.
                4 if task / 5 < WOKEN => {
                    let bell = bell.clone();
                    group.spawn(move |_ctx| async move {
                        let _counter = counter;
                        started.fetch_add(1, SeqCst);
                        loop {
                            bell.notified().await;
                        }
                    });
                }
                // Always runnable: queued or being polled.
                3 if task / 5 < BUSY => {
                    group.spawn(move |_ctx| async move {
                        let _counter = counter;
                        started.fetch_add(1, SeqCst);
                        loop {
                            self_wake().await;
                        }
                    });
                }
                _ => {
                    group.spawn(move |_ctx| async move {
                        let _counter = counter;
                        started.fetch_add(1, SeqCst);
                        pending().await
                    });
                }
            }
        }
        eventually("every task started", || started.load(SeqCst) == TASKS).await;
        group
    });
    assert_eq!(drops.load(SeqCst), 0);

    // Wake-ups racing the shutdown: before, while and after the shards
    // are dropped.
    let stop = Arc::new(AtomicBool::new(false));
    let ringers: Vec<_> = (0..2)
        .map(|_| {
            let (bell, stop) = (bell.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(SeqCst) {
                    bell.notify_waiters();
                }
            })
        })
        .collect();
    drop(runtime);
    stop.store(true, SeqCst);
    for ringer in ringers {
        ringer.join().unwrap();
    }
    assert_eq!(
        drops.load(SeqCst),
        TASKS,
        "task futures outlived their runtime"
    );
    let outcomes = group
        .wait_outcomes()
        .now_or_never()
        .expect("the group is joined once its runtime is gone");
    assert_eq!(outcomes.len(), TASKS);
    for (task, outcome) in outcomes.iter().enumerate() {
        assert!(
            outcome.is_cancelled(),
            "task {task}: {} instead of Cancelled",
            kind(outcome)
        );
    }
}

/// Tasks of [`shut_down_with_a_batch_in_hand`]: one parked, the rest
/// blocking their thread first.
const SLEEPERS: usize = 16;
const SHUTDOWN_TASKS: usize = 1 + SLEEPERS;

/// Runs `group` on a new 2-worker runtime and drops the runtime while one
/// shard is in the middle of its batch: one task parked for good (it keeps
/// the shards alive), then `SLEEPERS` tasks that block their thread for
/// 5 ms and park for good, and the runtime dropped while the first of them
/// blocks. Each task future holds a `guard()`. Returns how many sleepers
/// had started. (The 5 ms sleeps block a worker on purpose: they keep a
/// batch in a shard's hands through the shutdown.)
fn shut_down_with_a_batch_in_hand<G: Send + 'static>(
    group: &mut TaskGroup<(), String>,
    guard: impl Fn() -> G,
) -> usize {
    let runtime = support::multi_thread(2);
    let sleeping = Arc::new(AtomicUsize::new(0));
    runtime.block_on(async {
        let (parked_tx, parked_rx) = oneshot::channel();
        let held = guard();
        group.spawn(move |_ctx| async move {
            let _held = held;
            let _ = parked_tx.send(());
            pending().await
        });
        parked_rx.await.unwrap();
        for _ in 0..SLEEPERS {
            let (held, sleeping) = (guard(), sleeping.clone());
            group.spawn(move |_ctx| async move {
                let _held = held;
                sleeping.fetch_add(1, SeqCst);
                std::thread::sleep(ms(5));
                pending().await
            });
        }
        eventually("a task blocking its thread", || sleeping.load(SeqCst) > 0).await;
    });
    drop(runtime);
    sleeping.load(SeqCst)
}

/// A runtime dropped while one shard is in the middle of its batch: the
/// cells it has taken are neither queued nor parked, so the shard whose
/// drop closes the runner cannot end them; the shard still polling must.
/// Every task future is dropped by the time the runtime is, and on a new
/// runtime the group is joined at once, every task cancelled.
#[test]
fn runtime_shutdown_ends_the_cells_in_a_shards_batch() {
    let after = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for round in 0..rounds(30) {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut group = TaskGroup::<(), String>::new();
        let sleepers = shut_down_with_a_batch_in_hand(&mut group, || DropCounter(drops.clone()));
        assert_eq!(
            drops.load(SeqCst),
            SHUTDOWN_TASKS,
            "round {round}: task futures outlived their runtime ({sleepers} of {SLEEPERS} \
             sleepers had started)"
        );
        let outcomes = after.block_on(within(
            "wait_outcomes on a new runtime",
            group.wait_outcomes(),
        ));
        assert_eq!(outcomes.len(), SHUTDOWN_TASKS);
        for (task, outcome) in outcomes.iter().enumerate() {
            assert!(
                outcome.is_cancelled(),
                "round {round}, task {task}: {} instead of Cancelled",
                kind(outcome)
            );
        }
    }
}

/// Tries the lock in its `Drop`, as a task's value might lock it; counts
/// the drops that found it held by the canceller. (Drops on two workers at
/// once during the shutdown may find it held by each other: not counted.)
struct LockOnDrop {
    lock: Arc<Mutex<()>>,
    canceller_holds_it: Arc<AtomicBool>,
    found_held: Arc<AtomicUsize>,
}

impl Drop for LockOnDrop {
    fn drop(&mut self) {
        if self.lock.try_lock().is_err() && self.canceller_holds_it.load(SeqCst) {
            self.found_held.fetch_add(1, SeqCst);
        }
    }
}

/// The deadlock: a user's `Drop` that holds a `std::sync::Mutex`
/// while it drops a `CancelHandle`, once the runtime under the group has
/// shut down, must not have the cancel drop task futures (whose own `Drop`
/// takes that lock) on its thread: tokio never drops a task's future
/// inline in an abort. With every future dropped by the shutdown, the
/// cancel finds none left. (A wake or cancel that races the shutdown
/// itself still may: see the runner's invariant 6.)
#[test]
fn a_cancel_after_the_runtime_shut_down_drops_no_task_future_on_its_thread() {
    for round in 0..rounds(30) {
        let lock = Arc::new(Mutex::new(()));
        let canceller_holds_it = Arc::new(AtomicBool::new(false));
        let found_held = Arc::new(AtomicUsize::new(0));
        let (parent, cancel) = Context::background().with_cancel();
        let mut group = TaskGroup::<(), String>::with_context(&parent);
        let guard = || LockOnDrop {
            lock: lock.clone(),
            canceller_holds_it: canceller_holds_it.clone(),
            found_held: found_held.clone(),
        };
        shut_down_with_a_batch_in_hand(&mut group, guard);
        {
            let _held = lock.lock().unwrap();
            canceller_holds_it.store(true, SeqCst);
            drop(cancel);
            canceller_holds_it.store(false, SeqCst);
        }
        assert_eq!(
            found_held.load(SeqCst),
            0,
            "round {round}: the cancel dropped task futures on its own thread, under the \
             caller's lock (a deadlock had they locked it)"
        );
        assert!(group.context().is_cancelled());
        let outcomes = group
            .wait_outcomes()
            .now_or_never()
            .expect("the group is joined once its runtime is gone");
        assert_eq!(outcomes.len(), SHUTDOWN_TASKS);
    }
}

/// A runtime of the given flavor (multi-thread: 2 workers).
fn runtime(multi_thread: bool) -> tokio::runtime::Runtime {
    if multi_thread {
        support::multi_thread(2)
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }
}

/// A group outlives the runtime its tasks ran on: a task run there and
/// taken with `next`, then the runtime dropped. With none of its shards
/// left, the group's next task runs on the runtime it is spawned from, and
/// `wait` there returns its value: never a `Cancelled` that nothing caused.
/// Every mix of flavors, with the old runtime dropped after the group's
/// shards exited, or with a task still parked on it (which the shutdown
/// cancels, and `next` then reports).
#[test]
fn a_group_whose_runtime_is_gone_runs_new_tasks_on_the_runtime_it_is_used_from() {
    for (old_multi_thread, new_multi_thread, parked) in [
        (true, false, false),
        (true, true, true),
        (false, true, false),
        (false, false, true),
        (true, false, true),
        (false, true, true),
    ] {
        let case = format!(
            "old runtime multi-thread: {old_multi_thread}, new: {new_multi_thread}, \
             a task parked on the old one: {parked}"
        );
        let mut group = TaskGroup::<u32, String>::new();
        let old = runtime(old_multi_thread);
        old.block_on(async {
            let baseline = alive_tasks();
            group.spawn(|_ctx| async { Ok(1) });
            if parked {
                let (parked_tx, parked_rx) = oneshot::channel();
                group.spawn(move |_ctx| async move {
                    let _ = parked_tx.send(());
                    pending().await
                });
                parked_rx.await.unwrap();
            }
            let (_, outcome) = within("next on the old runtime", group.next())
                .await
                .unwrap();
            assert!(
                matches!(outcome, Outcome::Ok(1)),
                "{case}: {}",
                kind(&outcome)
            );
            if !parked {
                eventually("the shards exiting", || alive_tasks() == baseline).await;
            }
        });
        drop(old);
        runtime(new_multi_thread).block_on(async {
            if parked {
                let (_, outcome) = within("next on the new runtime", group.next())
                    .await
                    .unwrap();
                assert!(outcome.is_cancelled(), "{case}: {}", kind(&outcome));
            }
            let baseline = alive_tasks();
            group.spawn(|_ctx| async {
                tokio::task::yield_now().await;
                Ok(2)
            });
            let values = within("wait on the new runtime", group.wait()).await;
            assert_eq!(values, Ok(vec![2]), "{case}");
            eventually("the shards exiting", || alive_tasks() == baseline).await;
        });
    }
}

// ---------------------------------------------------------------------------
// 8. Panics stay per task

/// 1,000 tasks released at once: every 20th panics in a poll, every 20th
/// (offset by 10) parks for good holding a value whose destructor panics,
/// the rest finish after a few yields. The first panic cancels the group
/// while most cells are queued; each task is then reported as what it did:
/// the destructor panics (run by the cancel) all as panics, a poll panic as
/// a panic exactly when it panicked, the others `Ok` exactly when they
/// returned, else cancelled; and every future is dropped, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_in_polls_and_destructors_stay_with_their_tasks() {
    quiet_expected_panics();
    const TASKS: usize = 1_000;
    let drops = Arc::new(AtomicUsize::new(0));
    let parked = Arc::new(AtomicUsize::new(0));
    let returned: Arc<Vec<AtomicBool>> =
        Arc::new((0..TASKS).map(|_| AtomicBool::new(false)).collect());
    let (go_tx, go_rx) = watch::channel(false);
    let mut group = TaskGroup::<usize, String>::new();
    let ctx = group.context().clone();
    for task in 0..TASKS {
        let (parked, returned, mut go) = (parked.clone(), returned.clone(), go_rx.clone());
        let counter = DropCounter(drops.clone());
        let bomb = (task % 20 == 10).then(|| PanicOnDrop {
            task,
            drops: drops.clone(),
        });
        group.spawn(move |_ctx| async move {
            let _counter = counter;
            let _bomb = bomb;
            parked.fetch_add(1, SeqCst);
            go.wait_for(|&go| go).await.map_err(|e| e.to_string())?;
            match task % 20 {
                0 => {
                    for _ in 0..task % 7 {
                        self_wake().await;
                    }
                    returned[task].store(true, SeqCst);
                    std::panic::panic_any(format!("expected panic: poll {task}"))
                }
                10 => pending().await,
                _ => {
                    for _ in 0..task % 5 {
                        self_wake().await;
                    }
                    returned[task].store(true, SeqCst);
                    Ok(task)
                }
            }
        });
    }
    eventually("every task parked", || parked.load(SeqCst) == TASKS).await;
    go_tx.send(true).unwrap();
    let outcomes = within("the panicking group", group.wait_outcomes()).await;
    assert_eq!(
        drops.load(SeqCst),
        TASKS + TASKS / 20,
        "a task future outlived wait_outcomes"
    );
    assert_eq!(outcomes.len(), TASKS);
    let mut poll_panics = 0;
    let mut panics = 0;
    for (task, outcome) in outcomes.into_iter().enumerate() {
        let did_return = returned[task].load(SeqCst);
        let what = kind(&outcome);
        match (task % 20, outcome) {
            (10, Outcome::Panicked(payload)) => {
                assert_eq!(
                    payload_str(&*payload),
                    format!("expected panic: drop {task}")
                );
                panics += 1;
            }
            (0, Outcome::Panicked(payload)) if did_return => {
                assert_eq!(
                    payload_str(&*payload),
                    format!("expected panic: poll {task}")
                );
                poll_panics += 1;
                panics += 1;
            }
            (10, _) => panic!("task {task}, whose destructor panics, reported {what}"),
            (_, Outcome::Ok(value)) if did_return => assert_eq!(value, task),
            (_, Outcome::Cancelled) if !did_return => {}
            _ => panic!("task {task} (returned: {did_return}) reported {what}"),
        }
    }
    assert!(poll_panics >= 1, "no poll panic was reported");
    assert_eq!(panics, TASKS / 20 + poll_panics);
    let cause = ctx.cause().expect("a panic cancelled the group");
    let failed = cause
        .downcast_ref::<TaskFailed>()
        .expect("a TaskFailed cause");
    assert!(failed.is_panic());
    assert_eq!(failed.task().index() % 20, 0, "a poll panic cancelled it");
}

/// 1,000 parked tasks, every 10th holding a value whose destructor panics:
/// a cancel from outside drops them all, the shards go on past each panic,
/// and exactly the 100 destructor panics are reported, each with its task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_while_a_cancel_drops_parked_tasks_are_each_reported() {
    quiet_expected_panics();
    const TASKS: usize = 1_000;
    let baseline = alive_tasks();
    let drops = Arc::new(AtomicUsize::new(0));
    let parked = Arc::new(AtomicUsize::new(0));
    let mut group = TaskGroup::<(), String>::new();
    for task in 0..TASKS {
        let (drops, parked) = (drops.clone(), parked.clone());
        group.spawn(move |ctx| async move {
            parked.fetch_add(1, SeqCst);
            if task % 10 == 0 {
                let _bomb = PanicOnDrop { task, drops };
                ctx.done().await;
                pending().await
            } else {
                let _counter = DropCounter(drops);
                pending().await
            }
        });
    }
    eventually("every task parked", || parked.load(SeqCst) == TASKS).await;
    group.cancel();
    let outcomes = within("wait_outcomes after the cancel", group.wait_outcomes()).await;
    assert_eq!(
        drops.load(SeqCst),
        TASKS,
        "a task future outlived wait_outcomes"
    );
    assert_eq!(outcomes.len(), TASKS);
    let mut panics = 0;
    for (task, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Outcome::Panicked(payload) if task % 10 == 0 => {
                assert_eq!(
                    payload_str(&*payload),
                    format!("expected panic: drop {task}")
                );
                panics += 1;
            }
            Outcome::Cancelled if task % 10 != 0 => {}
            other => panic!("task {task} reported {}", kind(&other)),
        }
    }
    assert_eq!(panics, TASKS / 10);
    eventually("every shard exiting", || alive_tasks() == baseline).await;
}

// ---------------------------------------------------------------------------
// 9. Randomized stress across threads

/// How a task ended, as it recorded just before returning or panicking.
const RUNNING: u8 = 0;
const RETURNED_OK: u8 = 1;
const RETURNED_ERR: u8 = 2;
const PANICKING: u8 = 3;

/// What a stress task does before it ends.
#[derive(Clone, Copy, Debug)]
enum Wait {
    /// Nothing: ends in its first poll.
    Nothing,
    /// Wakes itself `n` times.
    Yields(u8),
    /// Waits for an earlier sibling (which may be on another shard and
    /// thread) to signal it.
    Sibling(usize),
    /// Waits for the std waker thread.
    Foreign,
    /// Waits for its context (so, for the cancel).
    Done,
    /// Never returns.
    Forever,
}

#[derive(Clone, Copy, Debug)]
enum End {
    Ok,
    Err,
    Panic,
}

#[derive(Clone, Copy, Debug)]
enum Finish {
    WaitOutcomes,
    Wait,
    DropGroup,
    DropWait,
}

type StressGroup = TaskGroup<usize, usize>;

/// Wakes from other threads, siblings waking siblings, completions, a
/// cancel from a std thread at a random moment and drops of the group all
/// race; after each round every task is accounted for exactly once, as what
/// it did, no user future outlives `wait_outcomes`/`wait`, and the runtime
/// is back to its baseline of tokio tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_wakes_cancels_and_drops_across_threads_lose_no_task() {
    quiet_expected_panics();
    let seed = seed_from_env_or_clock();
    let mut rng = Rng::new(seed);
    let mut report = SeedReport {
        test: "runner stress",
        seed,
        round: 0,
    };
    let baseline = alive_tasks();
    // A fixed count, not a time budget: a loaded machine takes longer, and
    // never plays fewer rounds (about 2 s on a quiet 2-core machine).
    for round in 0..rounds(600) {
        report.round = round;
        stress_round(&mut rng, baseline).await;
    }
}

async fn stress_round(rng: &mut Rng, baseline: usize) {
    let count = 1 + rng.below(40) as usize;
    let finish = match rng.below(8) {
        0..=2 => Finish::WaitOutcomes,
        3..=4 => Finish::Wait,
        5..=6 => Finish::DropGroup,
        _ => Finish::DropWait,
    };
    let (parent, parent_cancel) = Context::background().with_cancel();
    let mut group = StressGroup::with_context(&parent);
    let ctx = group.context().clone();
    let alive = Arc::new(AtomicUsize::new(0));
    let ended: Arc<Vec<AtomicU8>> = Arc::new((0..count).map(|_| AtomicU8::new(RUNNING)).collect());

    // Who signals whom: a task waiting on a sibling holds the receiver, the
    // sibling the sender (fired as it ends, or dropped with it).
    let mut waits = Vec::with_capacity(count);
    let mut ends = Vec::with_capacity(count);
    let mut signals: Vec<Vec<oneshot::Sender<()>>> = (0..count).map(|_| Vec::new()).collect();
    let mut receivers: Vec<Option<oneshot::Receiver<()>>> = Vec::with_capacity(count);
    let mut foreign = Vec::new();
    for task in 0..count {
        let wait = match rng.below(100) {
            0..10 => Wait::Nothing,
            10..40 => Wait::Yields(rng.below(4) as u8 + 1),
            40..65 if task > 0 => Wait::Sibling(rng.below(task as u64) as usize),
            40..80 => Wait::Foreign,
            80..92 => Wait::Done,
            _ => Wait::Forever,
        };
        let (tx, rx) = oneshot::channel();
        receivers.push(match wait {
            Wait::Sibling(from) => {
                signals[from].push(tx);
                Some(rx)
            }
            Wait::Foreign => {
                foreign.push(tx);
                Some(rx)
            }
            _ => None,
        });
        waits.push(wait);
        ends.push(match rng.below(100) {
            0..85 => End::Ok,
            85..97 => End::Err,
            _ => End::Panic,
        });
    }

    // The std threads: one fires the foreign wake-ups in a random order,
    // one cancels the group's parent at a random moment (a round whose
    // tasks never return ends there at the latest).
    for i in (1..foreign.len()).rev() {
        foreign.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let waker_spins = rng.below(200);
    let waker = std::thread::spawn(move || {
        for tx in foreign {
            for _ in 0..waker_spins {
                std::hint::spin_loop();
            }
            let _ = tx.send(());
        }
    });
    let cancel_yields = rng.below(300);
    let canceller = std::thread::spawn(move || {
        for _ in 0..cancel_yields {
            std::thread::yield_now();
        }
        parent_cancel.cancel();
    });

    for task in 0..count {
        let token = Token::new(&alive);
        let ended = ended.clone();
        let wait = waits[task];
        let end = ends[task];
        let rx = receivers[task].take();
        let to_signal = std::mem::take(&mut signals[task]);
        group.spawn(move |ctx| async move {
            let _token = token;
            match wait {
                Wait::Nothing => {}
                Wait::Yields(n) => {
                    for _ in 0..n {
                        self_wake().await;
                    }
                }
                // The sender dropped (its task was cancelled, or ended
                // unwinding) is a wake-up too.
                Wait::Sibling(_) | Wait::Foreign => {
                    let _ = rx.expect("a receiver").await;
                }
                Wait::Done => ctx.done().await,
                Wait::Forever => pending().await,
            }
            for tx in to_signal {
                let _ = tx.send(());
            }
            match end {
                End::Ok => {
                    ended[task].store(RETURNED_OK, SeqCst);
                    Ok(task)
                }
                End::Err => {
                    ended[task].store(RETURNED_ERR, SeqCst);
                    Err(task)
                }
                End::Panic => {
                    ended[task].store(PANICKING, SeqCst);
                    std::panic::panic_any(format!("expected panic: stress {task}"))
                }
            }
        });
        if rng.chance(10) {
            tokio::task::yield_now().await;
        }
    }

    let check_outcomes = |outcomes: Vec<Outcome<usize, usize>>| {
        assert_eq!(outcomes.len(), count, "a task missing or reported twice");
        for (task, outcome) in outcomes.into_iter().enumerate() {
            let did = ended[task].load(SeqCst);
            match (did, outcome) {
                (RETURNED_OK, Outcome::Ok(value)) => assert_eq!(value, task),
                (RETURNED_ERR, Outcome::Err(value)) => assert_eq!(value, task),
                (PANICKING, Outcome::Panicked(payload)) => {
                    assert_eq!(
                        payload_str(&*payload),
                        format!("expected panic: stress {task}")
                    );
                }
                (RUNNING, Outcome::Cancelled) => {}
                (did, outcome) => panic!(
                    "task {task} ({:?}, {:?}) recorded {did} but reported {}",
                    waits[task],
                    ends[task],
                    kind(&outcome)
                ),
            }
        }
    };

    match finish {
        Finish::WaitOutcomes => {
            let outcomes = within("wait_outcomes", group.wait_outcomes()).await;
            assert_eq!(alive.load(SeqCst), 0, "user code outlived wait_outcomes");
            check_outcomes(outcomes);
        }
        Finish::Wait => {
            let result = AssertUnwindSafe(within("wait", group.wait()))
                .catch_unwind()
                .await;
            assert_eq!(alive.load(SeqCst), 0, "user code outlived wait");
            let did = |task: usize| ended[task].load(SeqCst);
            match result {
                Ok(Ok(values)) => {
                    assert_eq!(values, (0..count).collect::<Vec<_>>());
                    assert!((0..count).all(|task| did(task) == RETURNED_OK));
                }
                Ok(Err(GroupError::Failed(task))) => assert_eq!(did(task), RETURNED_ERR),
                Ok(Err(GroupError::Cancelled(error))) => {
                    // Only the parent cancels from outside here.
                    assert_eq!(error, ContextError::Cancelled);
                    assert!(parent.is_cancelled());
                }
                Err(payload) => {
                    let text = payload_str(&*payload);
                    let task: usize = text
                        .strip_prefix("expected panic: stress ")
                        .and_then(|t| t.parse().ok())
                        .unwrap_or_else(|| panic!("a foreign panic: {text:?}"));
                    assert_eq!(did(task), PANICKING);
                }
            }
        }
        Finish::DropGroup => {
            for _ in 0..rng.below(4) {
                tokio::task::yield_now().await;
            }
            drop(group);
        }
        Finish::DropWait => {
            let polls = rng.below(6);
            tokio::select! {
                biased;
                outcomes = group.wait_outcomes() => {
                    assert_eq!(alive.load(SeqCst), 0, "user code outlived wait_outcomes");
                    check_outcomes(outcomes);
                }
                () = async {
                    for _ in 0..polls {
                        tokio::task::yield_now().await;
                    }
                } => {}
            }
        }
    }

    assert!(
        ctx.is_cancelled(),
        "the group context is cancelled at the end"
    );
    eventually("every closure and future dropped", || {
        alive.load(SeqCst) == 0
    })
    .await;
    eventually("the runtime going back to its baseline of tasks", || {
        alive_tasks() == baseline
    })
    .await;
    waker.join().unwrap();
    canceller.join().unwrap();
}
