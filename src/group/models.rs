//! loom models of the group's own bookkeeping (`shared.rs`): a group's
//! tasks start, end and are cancelled on several threads at once, and
//! every interleaving, within loom's bounds, keeps the invariants of
//! `shared.rs` (3, 5, 6, 7, 8, 10, 11 and 12). The models run the real
//! `TaskGroup`: under `--cfg loom` its runner is one whose shards the
//! model's threads play (`Runner::for_models`, `runner/played.rs`), since
//! loom cannot run a tokio runtime; the runner's own models are in
//! `runner/models.rs`.
//! Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --lib group::models`.
//!
//! The thread-locals a model thread could see another's value of are
//! loom's under `--cfg loom` (`polling.rs`, `runner/here.rs`), and a
//! thread's mark is a number it draws (`thread_mark`), not an address:
//! loom reuses a finished thread's memory without the ordering that
//! reusing memory gives real threads, and the first runs of these models
//! lost an ending to that (a stale `delivering` equal to a reused mark),
//! which real threads cannot. The models of invariants 6, 7, 10, 11 and
//! 12 fail on a mutant of what they check: a `next` that hands out the
//! cancelling ending before the cancel has returned, a starter that does
//! not look at `starting` (and a limit not kept), a woken `next` or
//! `ready` that does not pass the wake-up on, a `cancel_task` that does not cancel the
//! task's context or does not stop its cell, an `admit` that accepts a
//! task once the group has ended, a group's drop that leaves its tasks
//! to a grace. The
//! cancel model's queued closure is kept from starting by three looks
//! (the hook empties the queue, the starter and the closure's own last
//! look read the context): it passes with the first two taken out.
//!
//! What the played shards leave out: `unpin` (runner invariant 7), which
//! spawns a tokio task; a played shard keeps woken cells (invariant 10)
//! and reads the clock per batch as a real one does.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::task::{Context as TaskContext, Poll, Wake, Waker};

use loom::sync::Mutex;
use loom::sync::atomic::{AtomicBool, AtomicUsize};
use loom::thread;

use super::runner::Runner;
use crate::{Context, Discard, Joiner, Outcome, TaskGroup, TaskId};

/// Tells the thread driving a model's group that its future was woken.
/// std's atomic: the waker reaches the waking thread through tokio's
/// `Notify`, whose std atomics loom does not see, so loom could not order
/// a loom atomic's store there after its creation.
struct Woken(std::sync::atomic::AtomicBool);

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, SeqCst);
    }
}

/// How many looks in a row at a future, with no shard played and no
/// wake-up in between, make a model stuck (a lost wake-up or a lost
/// ending): it fails saying what the group holds, instead of running into
/// loom's bound on branches. The models need a handful.
const STUCK: usize = 100;

/// Ready at its second poll; wakes its task at the first, so a task that
/// awaits it parks once (its cell queued again) and is still running when
/// another could start.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A model's hold on its group: the runner whose shards the model's
/// threads play, and what the group's bookkeeping holds, for a model that
/// is stuck. Outlives the group's handle (`wait` takes it by value).
#[derive(Clone)]
struct Model {
    runner: Arc<Runner>,
    describe: Arc<dyn Fn() -> String + Send + Sync>,
}

impl Model {
    fn of<T, E, J>(group: &TaskGroup<T, E, J>) -> Model
    where
        T: Send + 'static,
        E: Send + 'static,
        J: Joiner<T, E>,
    {
        let shared = group.shared.clone();
        Model {
            runner: shared.runner().clone(),
            describe: Arc::new(move || shared.describe()),
        }
    }

    /// Runs `fut` (a `wait`, `next` or `ready` of the group) to its end on
    /// this thread, playing the group's listed shards between polls, and
    /// yielding to the model's other threads when there is neither a
    /// shard to play nor a wake-up of `fut`. (It yields rather than parks:
    /// loom's `unpark` of a thread blocked in a `join` would resume that
    /// join.)
    fn drive<F: Future>(&self, fut: F) -> F::Output {
        let woken = Arc::new(Woken(std::sync::atomic::AtomicBool::new(false)));
        let waker = Waker::from(woken.clone());
        let mut fut = pin!(fut);
        let mut idle = 0;
        loop {
            woken.0.store(false, SeqCst);
            if let Poll::Ready(output) = fut.as_mut().poll(&mut TaskContext::from_waker(&waker)) {
                return output;
            }
            let mut played = false;
            while self.runner.play_modelled() {
                played = true;
            }
            if played || woken.0.load(SeqCst) {
                idle = 0;
                continue;
            }
            idle += 1;
            assert!(idle < STUCK, "stuck: {}", self.describe());
            thread::yield_now();
        }
    }

    /// A thread that plays the group's listed shards until none is left.
    fn player(&self) -> thread::JoinHandle<()> {
        let runner = self.runner.clone();
        thread::spawn(move || while runner.play_modelled() {})
    }

    /// Plays the listed shards on this thread until none is left.
    fn play_all(&self) {
        while self.runner.play_modelled() {}
    }

    fn describe(&self) -> String {
        format!("{} | {}", self.runner.describe(), (self.describe)())
    }
}

/// Invariant 7 (and 2): at most one thread calls queued closures at a
/// time, and a slot freed meanwhile is taken by that starter. A group
/// limited to two tasks, two running and two queued: the two running ones
/// end on two threads at once, and each frees a slot. Every closure is
/// called once, never two at once, never more than two tasks run, and
/// `wait` returns every value, in spawn order.
#[test]
fn two_slots_freed_at_once_start_one_closure_at_a_time() {
    loom::model(|| {
        let calling = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let mut group = TaskGroup::<u8, String>::builder().limit(2).build();
        for value in 1..=4 {
            let calling = calling.clone();
            let running = running.clone();
            group.spawn(move |_ctx| {
                assert_eq!(calling.fetch_add(1, SeqCst), 0, "two closures at once");
                calling.fetch_sub(1, SeqCst);
                async move {
                    assert!(running.fetch_add(1, SeqCst) < 2, "past the limit");
                    // Parked once, so that it still runs when a shard could
                    // start another.
                    YieldOnce(false).await;
                    running.fetch_sub(1, SeqCst);
                    Ok(value)
                }
            });
        }
        let model = Model::of(&group);
        let player = model.player();
        let values = model.drive(group.wait());
        player.join().unwrap();
        assert_eq!(values, Ok(vec![1, 2, 3, 4]));
    });
}

/// Invariant 6: two tasks fail on two threads at once. Exactly one of the
/// failures is the group's cancel, and it comes first in what `next`
/// hands out, once the cancel has returned: the third task, which the
/// cancel ends, comes after it.
#[test]
fn two_failures_at_once_make_one_cancel_and_it_comes_first() {
    loom::model(|| {
        let mut group = TaskGroup::<(), u8>::new();
        let a = group.spawn(|_ctx| async { Err(1) });
        let b = group.spawn(|_ctx| async { Err(2) });
        let parked = group.spawn(|ctx: Context| async move {
            ctx.done().await;
            Ok(())
        });
        let model = Model::of(&group);
        let other = model.player();
        let mut seen: Vec<(TaskId, Outcome<(), u8>)> = Vec::new();
        while let Some(next) = model.drive(group.next()) {
            if seen.is_empty() {
                // The cancel has returned before its cause is handed out.
                assert!(group.context().is_cancelled(), "{next:?} before the cancel");
            }
            seen.push(next);
        }
        other.join().unwrap();
        assert_eq!(seen.len(), 3);
        let (first, outcome) = &seen[0];
        assert!(
            matches!((first, outcome), (id, Outcome::Err(1)) if *id == a)
                || matches!((first, outcome), (id, Outcome::Err(2)) if *id == b),
            "a failure comes first, not the task its cancel ended: {seen:?}"
        );
        let ended = seen.iter().find(|(id, _)| *id == parked).unwrap();
        assert!(matches!(ended.1, Outcome::Cancelled | Outcome::Ok(())));
        let cause = group.context().cause().expect("the group is cancelled");
        let by = cause.downcast_ref::<crate::TaskFailed>().map(|f| f.task());
        assert_eq!(by, Some(*first), "the cancel names the first failure");
    });
}

/// Invariant 11: `cancel_task` on a queued task races the thread that
/// frees its slot and starts it. Either the task never starts, or its
/// closure gets a context that reports the cancel by the time
/// `cancel_task` returns; and `wait` ends either way.
#[test]
fn cancel_task_racing_the_start_of_a_queued_task_is_seen_by_its_context() {
    loom::model(|| {
        let started: Arc<Mutex<Option<Context>>> = Arc::new(Mutex::new(None));
        let cancel_returned = Arc::new(AtomicBool::new(false));
        let mut group = TaskGroup::<(), String>::builder().limit(1).build();
        group.spawn(|_ctx| async { Ok(()) });
        let queued = {
            let started = started.clone();
            let cancel_returned = cancel_returned.clone();
            group.spawn(move |ctx: Context| {
                if cancel_returned.load(SeqCst) {
                    assert!(ctx.is_cancelled(), "started after cancel_task returned");
                }
                *started.lock().unwrap() = Some(ctx.clone());
                async move {
                    ctx.done().await;
                    Ok(())
                }
            })
        };
        let model = Model::of(&group);
        let player = model.player();
        assert!(group.cancel_task(queued), "queued or running");
        cancel_returned.store(true, SeqCst);
        if let Some(ctx) = started.lock().unwrap().as_ref() {
            assert!(
                ctx.is_cancelled(),
                "cancel_task returned before its context knew"
            );
        }
        let outcomes = model.drive(group.wait_outcomes());
        player.join().unwrap();
        assert!(matches!(outcomes[0], Outcome::Ok(())));
        assert!(matches!(outcomes[1], Outcome::Cancelled | Outcome::Ok(())));
    });
}

/// Invariant 12, and the servers section's promise: a task spawned through
/// a `Spawner` on another thread while `wait` joins the group is joined by
/// that `wait`, or its closure is given back; never accepted and then left
/// out.
#[test]
fn a_spawn_through_a_spawner_racing_wait_is_joined_or_given_back() {
    loom::model(|| {
        let mut group = TaskGroup::<u8, String>::new();
        group.spawn(|_ctx| async { Ok(1) });
        let spawner = group.spawner();
        let elsewhere = thread::spawn(move || spawner.spawn(|_ctx| async { Ok(2) }).is_ok());
        let model = Model::of(&group);
        let values = model.drive(group.wait());
        let accepted = elsewhere.join().unwrap();
        let joined = if accepted { vec![1, 2] } else { vec![1] };
        assert_eq!(values, Ok(joined), "accepted: {accepted}");
    });
}

/// Invariants 3 and 8: a cancel from another thread (the group's parent)
/// races the start of the group's first task and its wait on its
/// context. The task is dropped or sees the cancel, the closure queued
/// behind it never starts, and `wait` reports the cancel.
#[test]
fn a_cancel_from_another_thread_racing_the_first_start_ends_the_group() {
    loom::model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let queued_ran = Arc::new(AtomicBool::new(false));
        let mut group = TaskGroup::<(), String>::builder()
            .context(&parent)
            .limit(1)
            .build();
        group.spawn(|ctx: Context| async move {
            ctx.done().await;
            Ok(())
        });
        let ran = queued_ran.clone();
        group.spawn(move |_ctx| {
            ran.store(true, SeqCst);
            async { Ok(()) }
        });
        let canceller = thread::spawn(move || cancel.cancel());
        let model = Model::of(&group);
        let joined = model.drive(group.wait());
        canceller.join().unwrap();
        assert!(
            matches!(joined, Err(crate::GroupError::Cancelled(_))),
            "{joined:?}"
        );
        assert!(
            !queued_ran.load(SeqCst),
            "a closure started after the cancel"
        );
    });
}

/// Invariant 10 and `next`'s hand-over: two threads wait in `next` on a
/// group of one task at once, each playing shards. The ending wakes one
/// waiter; the group is joined then, so that waiter passes the wake-up on,
/// and the other gets the end: one gets the task, the other `None`.
#[test]
fn two_callers_of_next_at_once_get_the_task_and_the_end() {
    fn value(next: Option<(TaskId, Outcome<u8, String>)>) -> Option<u8> {
        match next {
            Some((_, Outcome::Ok(value))) => Some(value),
            None => None,
            other => panic!("a task's value or the end, not {other:?}"),
        }
    }
    loom::model(|| {
        let mut group = TaskGroup::<u8, String>::new();
        group.spawn(|_ctx| async { Ok(1) });
        let group = Arc::new(group);
        let model = Model::of(&group);
        let other = {
            let group = group.clone();
            let model = model.clone();
            thread::spawn(move || value(model.drive(group.next())))
        };
        let mine = value(model.drive(group.next()));
        let theirs = other.join().unwrap();
        let mut got = [mine, theirs];
        got.sort_unstable();
        assert_eq!(got, [None, Some(1)]);
    });
}

/// The servers section, invariants 11 and 12 together: a server's group
/// (`Discard`) with one connection that never looks at its context. The
/// owner stops that task with `cancel_task` while a shard may be polling
/// it and another thread spawns through a `Spawner`; the owner then
/// waits. The stopped task is dropped at its await and counts as
/// cancelled; the spawned one counts as ok only if it was accepted;
/// nothing fails, and `wait` ends.
#[test]
fn cancel_task_and_a_spawner_racing_wait_in_a_discard_group_tally_every_task() {
    loom::model(|| {
        let mut group = TaskGroup::<(), String, _>::builder()
            .joiner(Discard)
            .build();
        // A connection that never looks at its context: only the drop step
        // of `cancel_task` ends it.
        let parked = group.spawn(|_ctx| std::future::pending::<Result<(), String>>());
        let spawner = group.spawner();
        let elsewhere = thread::spawn(move || spawner.spawn(|_ctx| async { Ok(()) }).is_ok());
        let model = Model::of(&group);
        let player = model.player();
        assert!(group.cancel_task(parked), "the parked task was running");
        let tally = model.drive(group.wait());
        let accepted = elsewhere.join().unwrap();
        player.join().unwrap();
        assert_eq!(tally.failed(), 0);
        assert_eq!(tally.panicked(), 0);
        assert_eq!(tally.cancelled(), 1, "the stopped task: {tally:?}");
        assert_eq!(
            tally.ok(),
            u64::from(accepted),
            "{tally:?}, accepted: {accepted}"
        );
    });
}

/// `ready`'s hand-over: two producers wait in `ready` on a full group
/// (limit one) while its task ends on a shard. The freed slot wakes one of
/// them; `ready` reserves nothing, so that one passes the wake-up on, and
/// both return.
#[test]
fn two_producers_in_ready_both_return_when_a_slot_frees() {
    loom::model(|| {
        let mut group = TaskGroup::<(), String>::builder().limit(1).build();
        group.spawn(|_ctx| async {
            YieldOnce(false).await;
            Ok(())
        });
        let group = Arc::new(group);
        let model = Model::of(&group);
        let other = {
            let group = group.clone();
            let model = model.clone();
            thread::spawn(move || model.drive(group.ready()))
        };
        model.drive(group.ready());
        other.join().unwrap();
        let group = Arc::try_unwrap(group).unwrap_or_else(|_| panic!("one owner left"));
        assert_eq!(model.drive(group.wait()), Ok(vec![()]));
    });
}

/// A future that never ends, and says when it is dropped.
struct Forever(Arc<AtomicBool>);

impl Future for Forever {
    type Output = Result<(), String>;

    fn poll(self: std::pin::Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Self::Output> {
        Poll::Pending
    }
}

impl Drop for Forever {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

/// No task outlives its group: the group, built with a grace, is dropped
/// while a shard may be polling its tasks, one that ignores its context
/// and one queued behind the limit. Once the shards have run out of work, the running task's
/// future is dropped, the queued closure was never called, and no shard
/// is left.
#[test]
fn dropping_the_group_while_a_shard_polls_drops_every_task() {
    loom::model(|| {
        let dropped = Arc::new(AtomicBool::new(false));
        let called = Arc::new(AtomicBool::new(false));
        // With a grace, which a dropped group does not give its tasks.
        let mut group = TaskGroup::<(), String>::builder()
            .limit(1)
            .grace(std::time::Duration::from_secs(1))
            .build();
        let forever = Forever(dropped.clone());
        group.spawn(move |_ctx| forever);
        let queued = called.clone();
        group.spawn(move |_ctx| {
            queued.store(true, SeqCst);
            async { Ok(()) }
        });
        let model = Model::of(&group);
        let player = model.player();
        drop(group);
        player.join().unwrap();
        model.play_all();
        assert!(
            dropped.load(SeqCst),
            "a task outlived its group: {}",
            model.describe()
        );
        assert!(
            !called.load(SeqCst),
            "a queued closure started after the drop"
        );
        assert_eq!(model.runner.shards(), 0, "{}", model.describe());
    });
}
