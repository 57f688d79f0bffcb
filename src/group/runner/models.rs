//! loom models of [`CellState`], the scheduling state machine of the
//! runner's cells (`state.rs`, invariants 1 and 2 of `mod.rs`, and the abort path):
//! every interleaving of a poll with wakes and aborts, within loom's
//! bounds; and models of the runner's own code where a shutdown races its
//! shards (invariant 6), and where the drop step of a cancel (at once, or
//! at the end of a grace) races a shield's entry, its exit and a wake
//! (invariant 9), at the end. Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --lib runner::models`
//! (`.ci/run` does, in its own target directory).
//!
//! Every model drives the runner's own code: real cells of a real runner
//! (`TaskCell::run`, its waker, `CellState`'s transitions, the runner's queue),
//! with the model's threads playing the shards, the wakers and the
//! cancels. The state-machine models' stand-in future ([`Reader`]) is ready
//! once it has seen every waker's data.
//!
//! The data sits under a lock, as a tokio channel's does, except in the
//! two models named `..._happens_before_the_next_poll`: there it is an
//! atomic with a release store and an acquire load, so only `CellState`'s
//! own orderings carry it from the waker to the poll, including a wake
//! coalesced into one already pending (the cell still `SCHEDULED`), which
//! must release too (tokio-rs/tokio#7622 fixed the same in tokio).
//!
//! Every state-machine model checks invariant 1 on the way (the cell is
//! never in the queue while it is polled, and never twice) and that no
//! poll or second end follows the future's drop.

use std::sync::Arc;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use loom::sync::Mutex;
use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize};
use loom::thread;

use super::CellState;

/// Who a model's task is: nobody in particular.
fn meta() -> crate::group::lifecycle::Meta {
    let spawned = crate::group::lifecycle::Spawned::here();
    crate::group::lifecycle::Meta::new(crate::TaskId(0), &spawned)
}

/// What the wakers of a state-machine model write, a bit each, under a
/// lock, or (with `atomic`) by a release store.
#[derive(Default)]
struct Data {
    locked: Mutex<u8>,
    atomic: AtomicU8,
    use_atomic: bool,
}

impl Data {
    fn write(&self, bit: u8) {
        if self.use_atomic {
            // One waker per such model: a plain release store, no RMW.
            let data = self.atomic.load(Relaxed);
            self.atomic.store(data | bit, Release);
        } else {
            *self.locked.lock().unwrap() |= bit;
        }
    }

    fn read(&self) -> u8 {
        if self.use_atomic {
            self.atomic.load(Acquire)
        } else {
            *self.locked.lock().unwrap()
        }
    }
}

/// The stand-in future of a state-machine model: ready once it has seen
/// `want`; counts its polls and its drop in `probe`, and checks at every
/// poll that its cell is not in the runner's queue meanwhile (invariant
/// 1). `during` runs inside its first poll (a waker started then).
struct Reader {
    data: Arc<Data>,
    want: u8,
    probe: Arc<Probe>,
    me: Arc<Mutex<Option<std::sync::Weak<super::TaskCell>>>>,
    during: Option<Box<dyn FnOnce() + Send>>,
}

impl std::future::Future for Reader {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        self.probe.polls.fetch_add(1, Relaxed);
        if let Some(me) = self
            .me
            .lock()
            .unwrap()
            .as_ref()
            .and_then(std::sync::Weak::upgrade)
        {
            let queued = me.runner.lock().ready.iter().any(|c| Arc::ptr_eq(c, &me));
            assert!(
                !queued,
                "invariant 1: the cell is queued while it is polled"
            );
        }
        if let Some(during) = self.during.take() {
            during();
        }
        if self.data.read() == self.want {
            self.probe.completed.store(true, Relaxed);
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.probe.drops.fetch_add(1, Relaxed);
    }
}

/// A state-machine model: one real cell of a real runner with one shard
/// counted (this thread plays it), its future a [`Reader`].
struct Model {
    runner: Arc<super::Runner>,
    cell: Arc<super::TaskCell>,
    data: Arc<Data>,
    probe: Arc<Probe>,
}

impl Model {
    /// A new cell, queued as `Runner::spawn` queues it.
    fn spawned(want: u8) -> Model {
        Model::spawned_with(want, false, None)
    }

    fn spawned_with(want: u8, use_atomic: bool, during: Option<Box<dyn FnOnce() + Send>>) -> Model {
        let runner = super::Runner::new(tokio::time::Instant::now(), None);
        // One shard per worker already: a push starts none.
        count_shard(&runner);
        let data = Arc::new(Data {
            use_atomic,
            ..Data::default()
        });
        let probe = Arc::new(Probe::default());
        let me = Arc::new(Mutex::new(None));
        let reader = Reader {
            data: data.clone(),
            want,
            probe: probe.clone(),
            me: me.clone(),
            during,
        };
        let cell = new_cell(&runner, Box::pin(reader));
        *me.lock().unwrap() = Some(Arc::downgrade(&cell));
        runner.push(cell.clone());
        Model {
            runner,
            cell,
            data,
            probe,
        }
    }

    /// A cell that was polled once and returned `Pending`: idle, parked,
    /// not queued.
    fn parked(want: u8) -> Model {
        assert_ne!(want, 0, "a parked cell is waiting for data");
        let model = Model::spawned(want);
        model.drain();
        assert!(model.cell.body.lock().unwrap().is_some(), "still pending");
        model
    }

    /// Runs the cells in the runner's queue, as a shard would, until none
    /// is left; checks the cell is never queued twice.
    fn drain(&self) {
        loop {
            let next = {
                let mut queue = self.runner.lock();
                let next = queue.ready.pop_front();
                let twice = next
                    .as_ref()
                    .is_some_and(|n| queue.ready.iter().any(|c| Arc::ptr_eq(c, n)));
                assert!(!twice, "invariant 1: the cell is queued twice");
                next
            };
            match next {
                Some(cell) => cell.run(),
                None => break,
            }
        }
    }

    /// A waker: writes its data, then wakes the cell through its real
    /// waker.
    fn wake(&self, bit: u8) {
        self.data.write(bit);
        std::task::Waker::from(self.cell.clone()).wake();
    }

    /// What `Runner::cancel` does to this cell: aborts it, and pushes it
    /// if the abort scheduled it. Returns whether it did.
    fn abort(&self) -> bool {
        let push = self.cell.state.abort() == super::Scheduled::Push;
        if push {
            self.runner.push(self.cell.clone());
        }
        push
    }

    fn queued(&self) -> usize {
        let queue = self.runner.lock();
        queue
            .ready
            .iter()
            .filter(|c| Arc::ptr_eq(c, &self.cell))
            .count()
    }

    /// Ended: the future dropped once, out of `parked`, and neither a wake
    /// nor an abort queues the cell again.
    fn assert_ended(&self) {
        assert_eq!(
            self.probe.drops.load(Relaxed),
            1,
            "the future is dropped once"
        );
        assert!(self.cell.body.lock().unwrap().is_none());
        assert_eq!(
            self.cell.state.schedule(),
            super::Scheduled::Already,
            "an ended cell is woken"
        );
        assert_eq!(
            self.cell.state.abort(),
            super::Scheduled::Already,
            "an ended cell is aborted"
        );
        assert_eq!(self.queued(), 0);
        assert!(
            self.runner.lock().parked.is_empty(),
            "an ended cell is parked"
        );
    }
}

/// Invariant 2: a wake from another thread racing the cell's first poll,
/// whether it lands while the cell is queued, polled, or idle after the
/// poll, is never lost: once the waker has returned and the queue is
/// drained, the last poll saw the waker's data and the cell completed.
/// Meanwhile the cell is never queued twice.
#[test]
fn wake_racing_a_poll_is_never_lost() {
    loom::model(|| race_a_wake_with_the_first_poll(Model::spawned(1)));
}

/// A wake from another thread racing the model's first poll, then the
/// queue drained: the wake was not lost, the cell completed and ended.
fn race_a_wake_with_the_first_poll(model: Model) {
    let model = Arc::new(model);
    let waker = {
        let model = model.clone();
        thread::spawn(move || model.wake(1))
    };
    model.drain();
    waker.join().unwrap();
    model.drain();
    assert!(model.probe.completed.load(Relaxed), "the wake was lost");
    model.assert_ended();
    assert!(model.probe.polls.load(Relaxed) <= 2);
}

/// Invariant 2, orderings: a wake that lands while the cell is being
/// polled (`NOTIFIED`, then `stop` queues it again) or after (idle, the
/// waker queues it) happens-before the next poll. The data is an atomic
/// with a release store and an acquire load, so only `CellState`'s own
/// orderings carry it to the runner; the waker starts inside the first
/// poll, once the cell is `RUNNING`, so its wake is never coalesced into a
/// pending one (the model below covers that case).
#[test]
fn wake_during_a_poll_happens_before_the_next_poll() {
    loom::model(|| {
        let slot: Arc<Mutex<Option<(Arc<Data>, std::task::Waker)>>> = Arc::new(Mutex::new(None));
        let handle = Arc::new(Mutex::new(None));
        let during: Box<dyn FnOnce() + Send> = {
            let (slot, handle) = (slot.clone(), handle.clone());
            Box::new(move || {
                let (data, waker) = slot.lock().unwrap().take().expect("set before the poll");
                *handle.lock().unwrap() = Some(thread::spawn(move || {
                    data.write(1);
                    waker.wake();
                }));
            })
        };
        let model = Model::spawned_with(1, true, Some(during));
        *slot.lock().unwrap() = Some((
            model.data.clone(),
            std::task::Waker::from(model.cell.clone()),
        ));
        model.drain();
        let waker = handle.lock().unwrap().take().expect("started in the poll");
        waker.join().unwrap();
        model.drain();
        assert!(model.probe.completed.load(Relaxed), "the wake was lost");
        model.assert_ended();
    });
}

/// Invariant 1: two wakes of an idle cell at once push it exactly once,
/// and the one poll that follows sees both wakers' data.
#[test]
fn two_wakes_at_once_push_once() {
    loom::model(|| {
        let model = Arc::new(Model::parked(0b11));
        let other = {
            let model = model.clone();
            thread::spawn(move || model.wake(0b01))
        };
        model.wake(0b10);
        other.join().unwrap();
        assert_eq!(model.queued(), 1, "pushed other than once");
        model.drain();
        assert!(model.probe.completed.load(Relaxed));
        assert_eq!(model.probe.polls.load(Relaxed), 2);
        model.assert_ended();
    });
}

/// An abort racing a poll and a wake: no poll starts after an abort that
/// happened-before its `start`, so once `abort` has returned at most the
/// poll already in progress finishes (at most one more poll than the
/// aborter counted); and once the queue is drained the cell is ended, its
/// future dropped exactly once and never polled after that.
#[test]
fn abort_racing_a_poll_and_a_wake_ends_the_cell_once() {
    loom::model(|| {
        let model = Arc::new(Model::spawned(1));
        let aborter = {
            let model = model.clone();
            thread::spawn(move || {
                model.abort();
                // An RMW reads the latest count: every poll started
                // before the abort but the one in progress, if any.
                model.probe.polls.fetch_add(0, AcqRel)
            })
        };
        let waker = {
            let model = model.clone();
            thread::spawn(move || model.wake(1))
        };
        model.drain();
        let polls_at_abort = aborter.join().unwrap();
        waker.join().unwrap();
        model.drain();
        let polls = model.probe.polls.load(Relaxed);
        assert!(
            polls <= polls_at_abort + 1,
            "{polls} polls, {polls_at_abort} when the abort returned"
        );
        model.assert_ended();
    });
}

/// Two aborts of an idle cell at once (a cancel and a close): exactly one
/// pushes it, and the runner that takes it ends it unpolled.
#[test]
fn two_aborts_of_an_idle_cell_push_once() {
    loom::model(|| {
        let model = Arc::new(Model::parked(1));
        let other = {
            let model = model.clone();
            thread::spawn(move || model.abort())
        };
        let mine = model.abort();
        let theirs = other.join().unwrap();
        assert!(mine ^ theirs, "pushed {} times", mine as u8 + theirs as u8);
        model.drain();
        assert_eq!(model.probe.polls.load(Relaxed), 1, "polled after the abort");
        assert!(!model.probe.completed.load(Relaxed));
        model.assert_ended();
    });
}

/// std's `Waker` contract: a call to `wake` happens-before the poll it
/// causes, so that poll sees what the waker wrote before waking, even
/// through a plain release store. Here the data is an atomic, not under a
/// lock.
///
/// This model found a bug, since fixed: when the wake landed while the
/// cell was still `SCHEDULED`, `schedule` wrote nothing (its update gave
/// up), so it released nothing, and the poll that followed could read the
/// data from before the wake and park for good. tokio had the same bug in
/// its task state and fixed it by storing the unchanged state instead
/// (tokio-rs/tokio#7622); `schedule` now does the same.
#[test]
fn wake_happens_before_the_next_poll() {
    loom::model(|| race_a_wake_with_the_first_poll(Model::spawned_with(1, true, None)));
}

// ---------------------------------------------------------------------------
// The runner's own code: `Runner::close` racing its shards (invariant 6)

/// What a model's stand-in task future saw: its polls and its drop.
#[derive(Default)]
struct Probe {
    polls: AtomicUsize,
    drops: AtomicUsize,
    /// A [`Reader`] returned `Ready`.
    completed: AtomicBool,
}

/// A stand-in task future: never ready; counts its polls and its drop.
struct Forever(Arc<Probe>);

impl std::future::Future for Forever {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.0.polls.fetch_add(1, Relaxed);
        std::task::Poll::Pending
    }
}

impl Drop for Forever {
    fn drop(&mut self) {
        self.0.drops.fetch_add(1, Relaxed);
    }
}

/// A new cell of `runner` running `body`, scheduled as `Runner::spawn`
/// leaves it for its first poll (neither queued nor parked).
fn new_cell(runner: &Arc<super::Runner>, body: super::TaskBody) -> Arc<super::TaskCell> {
    let cell = Arc::new(super::TaskCell {
        state: CellState::new(),
        body: Mutex::new(Some(body)),
        runner: runner.clone(),
        parked_key: loom::sync::atomic::AtomicU32::new(super::NOT_PARKED),
        shields: loom::sync::atomic::AtomicU16::new(0),
        stopped: loom::sync::atomic::AtomicBool::new(false),
        meta: meta(),
    });
    assert_eq!(
        cell.state.schedule(),
        super::Scheduled::Push,
        "a new cell is idle"
    );
    cell
}

/// A shard counted in `runner` (never spawned: the model's threads play
/// the shards): its own queue and its key.
type ModelShard = (Arc<super::Local>, usize);

fn count_shard(runner: &Arc<super::Runner>) -> ModelShard {
    let shard = runner.lock().new_shard();
    (shard.local, shard.key)
}

/// A runner with `shards` shards counted, and a new cell of it that a
/// shard has taken into its own queue: scheduled, neither queued nor
/// parked.
fn runner_with_a_taken_cell(
    shards: usize,
) -> (
    Arc<super::Runner>,
    Arc<super::TaskCell>,
    Arc<Probe>,
    Vec<ModelShard>,
) {
    let runner = super::Runner::new(tokio::time::Instant::now(), None);
    let shards = (0..shards).map(|_| count_shard(&runner)).collect();
    let probe = Arc::new(Probe::default());
    let cell = new_cell(&runner, Box::pin(Forever(probe.clone())));
    (runner, cell, probe, shards)
}

/// Plays a shard on this thread: takes from the runner and runs what it
/// takes, its own queue included, until told to park or exit.
fn play_shard(runner: &Arc<super::Runner>, (local, key): &ModelShard) {
    while let super::Take::TaskCell(cell) = runner.take(local, *key, std::task::Waker::noop()) {
        cell.run();
        while let Some(cell) = super::next_cell(local) {
            cell.run();
        }
    }
}

/// Invariant 6: a shard is dropped (its runtime shutting down) while
/// another shard takes up a cell from its batch for the first time, so the
/// cell is neither queued nor parked when `close` looks. Whatever the
/// interleaving, the cell is ended exactly once (its future dropped), is
/// never polled once `close` has returned, and is out of `parked`; and the
/// polling shard's next look at the queue tells it to exit.
#[test]
fn close_racing_a_shards_first_poll_of_a_cell_ends_it() {
    loom::model(|| {
        let (runner, cell, probe, mut shards) = runner_with_a_taken_cell(2);
        let (local, key) = shards.pop().unwrap();
        let closed = Arc::new(AtomicBool::new(false));
        let closer = {
            let (runner, closed) = (runner.clone(), closed.clone());
            thread::spawn(move || {
                runner.close(&local, Some(key));
                closed.store(true, Release);
            })
        };
        let closed_before = closed.load(Acquire);
        cell.clone().run();
        closer.join().unwrap();
        assert_eq!(probe.drops.load(Relaxed), 1, "the cell is ended once");
        assert!(probe.polls.load(Relaxed) <= 1);
        if closed_before {
            assert_eq!(probe.polls.load(Relaxed), 0, "polled after the close");
        }
        assert!(cell.body.lock().unwrap().is_none());
        assert_eq!(
            cell.state.schedule(),
            super::Scheduled::Already,
            "an ended cell is woken"
        );
        let queue = runner.lock();
        assert!(queue.parked.is_empty(), "an ended cell is still parked");
        assert!(queue.ready.is_empty());
        drop(queue);
        let waker = std::task::Waker::noop();
        let (local, key) = &shards[0];
        assert!(matches!(runner.take(local, *key, waker), super::Take::Exit));
    });
}

/// Invariant 6, the same race with the cell already parked (registered by
/// an earlier poll) and woken into the shard's batch: `close` aborts it
/// while the shard runs it, and either of them ends it, once.
#[test]
fn close_racing_a_shards_poll_of_a_parked_cell_ends_it_once() {
    loom::model(|| {
        let (runner, cell, probe, mut shards) = runner_with_a_taken_cell(2);
        // The first poll registers it; then a wake puts it in a batch.
        cell.clone().run();
        assert_ne!(cell.parked_key.load(Relaxed), super::NOT_PARKED);
        assert_eq!(
            cell.state.schedule(),
            super::Scheduled::Push,
            "a parked cell is idle"
        );
        let (local, key) = shards.pop().unwrap();
        let closer = {
            let runner = runner.clone();
            thread::spawn(move || runner.close(&local, Some(key)))
        };
        cell.clone().run();
        closer.join().unwrap();
        assert_eq!(probe.drops.load(Relaxed), 1, "the cell is ended once");
        assert!(probe.polls.load(Relaxed) <= 2);
        assert!(
            runner.lock().parked.is_empty(),
            "an ended cell is still parked"
        );
    });
}

/// Invariant 8: a runner closed with no shard left opens again for a new
/// task (on the runtime its spawner runs in), while a waker pushes a cell
/// of the old runtime that `close` aborted, before the close, between the
/// close and the reopening, or after. The cell is ended exactly once and
/// never polled again, whoever ends it: `close`, the waker (while closed),
/// or the new shard (unpolled, as aborted).
#[test]
fn reopen_racing_a_wake_of_a_cell_the_close_aborted_ends_it_unpolled() {
    loom::model(|| {
        let (runner, cell, probe, mut shards) = runner_with_a_taken_cell(1);
        cell.clone().run(); // its first poll: parked, idle
        let waker = {
            let cell = cell.clone();
            thread::spawn(move || std::task::Waker::from(cell).wake())
        };
        let (local, key) = shards.pop().unwrap();
        runner.close(&local, Some(key)); // the last shard
        let shard = {
            let mut queue = runner.lock();
            assert_eq!(queue.shards, 0);
            runner.reopen(&mut queue, None); // a new task moves the runner
            let shard = queue.new_shard(); // and this thread plays its new shard
            (shard.local, shard.key)
        };
        waker.join().unwrap();
        play_shard(&runner, &shard);
        assert_eq!(probe.drops.load(Relaxed), 1, "the cell is ended once");
        assert_eq!(probe.polls.load(Relaxed), 1, "polled after the close");
        assert!(
            runner.lock().parked.is_empty(),
            "an ended cell is still parked"
        );
    });
}

/// A stand-in task future that enters a shielded section in its first
/// poll and leaves it in its second; both return `Pending`. Its drop
/// counts a violation if the section is still held (invariant 9).
struct Shielded {
    probe: Arc<Probe>,
    mark: Option<crate::polling::ShieldMark>,
    violations: Arc<AtomicUsize>,
}

impl std::future::Future for Shielded {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let polls = self.probe.polls.fetch_add(1, Relaxed);
        if polls == 0 {
            self.mark = crate::polling::ShieldMark::enter();
            assert!(self.mark.is_some(), "a shield inside a cell's poll counts");
        } else {
            self.mark = None;
        }
        std::task::Poll::Pending
    }
}

impl Drop for Shielded {
    fn drop(&mut self) {
        if self.mark.is_some() {
            self.violations.fetch_add(1, Relaxed);
        }
        self.probe.drops.fetch_add(1, Relaxed);
    }
}

/// Invariant 9: a cancel's drop step races a cell's first poll, in which
/// the cell enters a shield. Whatever the interleaving, the cell's future
/// is never dropped while the shield is held; once the section ends (its
/// own wake, then a second poll), the cell is ended, once.
#[test]
fn cancel_racing_a_shields_entry_never_drops_the_section_and_ends_it_after() {
    loom::model(|| {
        let runner = super::Runner::new(tokio::time::Instant::now(), None);
        runner.lock().shards = 2;
        let probe = Arc::new(Probe::default());
        let violations = Arc::new(AtomicUsize::new(0));
        let cell = new_cell(
            &runner,
            Box::pin(Shielded {
                probe: probe.clone(),
                mark: None,
                violations: violations.clone(),
            }),
        );
        let canceller = {
            let runner = runner.clone();
            thread::spawn(move || runner.cancel())
        };
        cell.clone().run();
        canceller.join().unwrap();
        // The section ends: its own waker polls the cell again.
        std::task::Wake::wake_by_ref(&cell);
        loop {
            let next = runner.lock().ready.pop_front();
            match next {
                Some(next) => next.run(),
                None => break,
            }
        }
        assert_eq!(violations.load(Relaxed), 0, "dropped inside the shield");
        assert_eq!(probe.drops.load(Relaxed), 1, "the cell is ended once");
        let polls = probe.polls.load(Relaxed);
        assert!(
            polls == 0 || polls == 2,
            "entered the shield and left it: {polls} polls"
        );
        assert!(cell.body.lock().unwrap().is_none());
        assert!(runner.lock().parked.is_empty());
    });
}

/// Runs every cell in the runner's queue, as a shard's batch does, until
/// none is left.
fn drain(runner: &Arc<super::Runner>) {
    loop {
        let next = runner.lock().ready.pop_front();
        match next {
            Some(next) => next.run(),
            None => break,
        }
    }
}

/// A cell of a runner with two shards, polled once (so parked, idle), its
/// future `body`.
fn parked_cell(runner: &Arc<super::Runner>, body: super::TaskBody) -> Arc<super::TaskCell> {
    while runner.lock().shards < 2 {
        count_shard(runner);
    }
    let cell = new_cell(runner, body);
    cell.clone().run();
    assert_ne!(cell.parked_key.load(Relaxed), super::NOT_PARKED);
    cell
}

/// The race of both grace models: the drop step (`Runner::cancel`, which
/// the grace's timer calls) on one thread, a wake of `cell` on another,
/// and a shard running the queue on this one, then until it is empty.
fn race_the_graces_end_and_a_wake(runner: &Arc<super::Runner>, cell: &Arc<super::TaskCell>) {
    let grace_end = {
        let runner = runner.clone();
        thread::spawn(move || runner.cancel())
    };
    let waker = {
        let cell = cell.clone();
        thread::spawn(move || std::task::Wake::wake_by_ref(&cell))
    };
    drain(runner);
    grace_end.join().unwrap();
    waker.join().unwrap();
    drain(runner);
}

/// Invariant 4: the cancel (`Runner::cancel`, which aborts the parked
/// cells under the queue lock) races a shard's first poll of a cell, in
/// which the shard registers it in `parked` and then reads `cancelled`.
/// Either the cancel finds it parked and aborts it (queued, then ended by
/// the shard that runs the queue), or the shard sees the flag and ends it:
/// ended exactly once, polled at most once, and out of `parked`.
#[test]
fn cancel_racing_a_cells_first_registration_ends_it_once() {
    loom::model(|| {
        let (runner, cell, probe, _shards) = runner_with_a_taken_cell(2);
        let canceller = {
            let runner = runner.clone();
            thread::spawn(move || runner.cancel())
        };
        cell.clone().run();
        canceller.join().unwrap();
        drain(&runner);
        assert_eq!(probe.drops.load(Relaxed), 1, "the cell is ended once");
        assert!(probe.polls.load(Relaxed) <= 1);
        assert!(cell.body.lock().unwrap().is_none());
        let queue = runner.lock();
        assert!(queue.parked.is_empty(), "an ended cell is still parked");
        assert!(queue.ready.is_empty());
    });
}

/// Invariant 9, the grace's end: the drop step (`Runner::cancel`, which
/// the grace's timer calls) races a wake of a parked cell while a shard
/// runs the queue. Whoever pushes it, the cell is queued once at a time,
/// polled at most once more, and ended exactly once.
#[test]
fn wake_racing_the_graces_end_ends_the_cell_once() {
    loom::model(|| {
        let runner = super::Runner::new(tokio::time::Instant::now(), None);
        let probe = Arc::new(Probe::default());
        let cell = parked_cell(&runner, Box::pin(Forever(probe.clone())));
        race_the_graces_end_and_a_wake(&runner, &cell);
        assert_eq!(probe.drops.load(Relaxed), 1, "the cell is ended once");
        let polls = probe.polls.load(Relaxed);
        assert!(polls == 1 || polls == 2, "{polls} polls");
        assert!(cell.body.lock().unwrap().is_none());
        assert!(runner.lock().parked.is_empty());
        assert_eq!(
            cell.state.schedule(),
            super::Scheduled::Already,
            "an ended cell is woken"
        );
    });
}

/// Invariant 9, a shield's exit: a cell parked inside a shielded section
/// when the grace ends, while the section's own wake-up comes. The drop
/// step never drops the section; the cell is polled again (it leaves the
/// shield in that poll) and ended after it, once, whichever came first.
#[test]
fn wake_racing_the_graces_end_inside_a_shield_lets_the_section_leave_first() {
    loom::model(|| {
        let runner = super::Runner::new(tokio::time::Instant::now(), None);
        let probe = Arc::new(Probe::default());
        let violations = Arc::new(AtomicUsize::new(0));
        let body = Box::pin(Shielded {
            probe: probe.clone(),
            mark: None,
            violations: violations.clone(),
        });
        let cell = parked_cell(&runner, body);
        assert_eq!(cell.shields.load(Relaxed), 1, "parked inside its shield");
        race_the_graces_end_and_a_wake(&runner, &cell);
        assert_eq!(violations.load(Relaxed), 0, "dropped inside the shield");
        assert_eq!(probe.drops.load(Relaxed), 1, "the cell is ended once");
        assert_eq!(probe.polls.load(Relaxed), 2, "left the shield in a poll");
        assert!(cell.body.lock().unwrap().is_none());
        assert!(runner.lock().parked.is_empty());
    });
}

/// A stand-in task future that wakes `waker` in its first poll and is
/// ready: a task sending its sibling a message as it ends.
struct WakesThenEnds(Option<std::task::Waker>);

impl std::future::Future for WakesThenEnds {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if let Some(waker) = self.0.take() {
            waker.wake();
        }
        std::task::Poll::Ready(())
    }
}

/// Invariant 10: a shard polls the last cell of its batch, which wakes a
/// parked sibling (the shard keeps it), while a cancel's drop step runs on
/// another thread. Whether the cancel's abort or the wake schedules the
/// sibling, it is in one place at a time (kept, or queued), polled at most
/// once more, and ended exactly once; nothing is left kept or queued.
#[test]
fn a_kept_cell_racing_a_cancel_is_ended_once() {
    loom::model(|| {
        let runner = super::Runner::new(tokio::time::Instant::now(), None);
        let probe = Arc::new(Probe::default());
        let sibling = parked_cell(&runner, Box::pin(Forever(probe.clone())));
        let waker = std::task::Waker::from(sibling.clone());
        let sender = new_cell(&runner, Box::pin(WakesThenEnds(Some(waker))));
        let canceller = {
            let runner = runner.clone();
            thread::spawn(move || runner.cancel())
        };
        {
            // This thread is the sender's shard (one worker: no LIFO
            // slot to mind), its batch down to the sender.
            let _in_shard = super::InShard::enter(1, &runner);
            let local = super::Local::new();
            local.lock().push_back(sender.clone());
            while let Some(cell) = super::next_cell(&local) {
                cell.run();
            }
            assert!(
                super::WokenHere::take_kept().is_none(),
                "a cell is left kept"
            );
        }
        canceller.join().unwrap();
        drain(&runner);
        assert_eq!(probe.drops.load(Relaxed), 1, "the sibling is ended once");
        let polls = probe.polls.load(Relaxed);
        assert!(polls == 1 || polls == 2, "{polls} polls");
        assert!(sibling.body.lock().unwrap().is_none());
        assert!(sender.body.lock().unwrap().is_none());
        assert!(runner.lock().parked.is_empty());
        assert!(runner.lock().ready.is_empty());
    });
}

/// Invariant 10, the other way: with no cancel, the sibling woken by the
/// batch's last cell is kept, never queued, and polled by the same shard
/// before it takes from the queue again; a sibling woken by a cell with
/// more of its batch behind it is queued.
#[test]
fn the_batchs_last_cell_wakes_a_sibling_into_its_shard() {
    loom::model(|| {
        let runner = super::Runner::new(tokio::time::Instant::now(), None);
        let probes: Vec<Arc<Probe>> = (0..2).map(|_| Arc::new(Probe::default())).collect();
        let siblings: Vec<_> = probes
            .iter()
            .map(|probe| parked_cell(&runner, Box::pin(Forever(probe.clone()))))
            .collect();
        let senders: Vec<_> = siblings
            .iter()
            .map(|sibling| {
                let waker = std::task::Waker::from(sibling.clone());
                let sender = new_cell(&runner, Box::pin(WakesThenEnds(Some(waker))));
                sender
            })
            .collect();
        let _in_shard = super::InShard::enter(1, &runner);
        let batch = super::Local::new();
        batch.lock().extend(senders.iter().cloned());
        let first = super::next_cell(&batch).unwrap();
        first.run();
        assert_eq!(runner.lock().ready.len(), 1, "woken mid-batch: queued");
        let last = super::next_cell(&batch).unwrap();
        last.run();
        assert_eq!(runner.lock().ready.len(), 1, "woken by the last: kept");
        let kept = super::next_cell(&batch).expect("the kept sibling");
        assert!(Arc::ptr_eq(&kept, &siblings[1]));
        kept.run();
        assert!(super::next_cell(&batch).is_none());
        assert_eq!(
            probes[1].polls.load(Relaxed),
            2,
            "polled again by the shard"
        );
        assert_eq!(probes[0].polls.load(Relaxed), 1, "waits in the queue");
        drop(_in_shard);
        runner.cancel();
        drain(&runner);
        assert!(probes.iter().all(|probe| probe.drops.load(Relaxed) == 1));
    });
}

/// Invariant 11: a shard polls the cells of its own queue while another
/// shard, out of work, steals half of them. Each cell is in one place at a
/// time: polled exactly once, by one shard or the other, and nothing is
/// left in either queue; the cancel then ends each once.
#[test]
fn a_steal_racing_the_owners_polls_runs_each_cell_once() {
    loom::model(|| {
        let runner = super::Runner::new(tokio::time::Instant::now(), None);
        let owner = count_shard(&runner);
        let thief = count_shard(&runner);
        let probes: Vec<Arc<Probe>> = (0..2).map(|_| Arc::new(Probe::default())).collect();
        for probe in &probes {
            let cell = new_cell(&runner, Box::pin(Forever(probe.clone())));
            owner.0.lock().push_back(cell);
        }
        let stealer = {
            let runner = runner.clone();
            thread::spawn(move || play_shard(&runner, &thief))
        };
        while let Some(cell) = super::next_cell(&owner.0) {
            cell.run();
        }
        stealer.join().unwrap();
        for probe in &probes {
            assert_eq!(probe.polls.load(Relaxed), 1, "a cell polled twice or never");
        }
        assert!(owner.0.lock().is_empty());
        assert_eq!(runner.lock().parked.len(), 2);
        runner.cancel();
        drain(&runner);
        assert!(probes.iter().all(|probe| probe.drops.load(Relaxed) == 1));
        assert!(runner.lock().parked.is_empty());
    });
}

/// Invariants 6 and 11: a shard is dropped (its runtime shutting down)
/// while another steals from its own queue. Each cell is ended exactly
/// once, by the closing shard or by the thief (unpolled, or after the one
/// poll it started before it could see the close), and no cell is polled
/// once the thief has seen the runner closed.
#[test]
fn a_steal_racing_a_close_ends_each_cell_once() {
    loom::model(|| {
        let runner = super::Runner::new(tokio::time::Instant::now(), None);
        let (local, key) = count_shard(&runner);
        let thief = count_shard(&runner);
        let probes: Vec<Arc<Probe>> = (0..2).map(|_| Arc::new(Probe::default())).collect();
        for probe in &probes {
            let cell = new_cell(&runner, Box::pin(Forever(probe.clone())));
            local.lock().push_back(cell);
        }
        let closer = {
            let runner = runner.clone();
            thread::spawn(move || runner.close(&local, Some(key)))
        };
        play_shard(&runner, &thief);
        closer.join().unwrap();
        for probe in &probes {
            assert_eq!(probe.drops.load(Relaxed), 1, "a cell is ended once");
            assert!(probe.polls.load(Relaxed) <= 1);
        }
        let queue = runner.lock();
        assert!(queue.parked.is_empty(), "an ended cell is still parked");
        assert!(queue.ready.is_empty());
    });
}
