//! Runs a group's async tasks inside a few tokio tasks, its *shards*,
//! instead of one tokio task each.
//!
//! A tokio task costs a spawn, a join handle, a wake-up of a parked worker
//! and a free on another thread: most of what a fan-out of small tasks
//! spends. Here a task is a [`TaskCell`]: its future (boxed), a small state
//! machine, and a [`Waker`] made from the cell itself. Cells ready to run
//! wait in one queue per group; up to one shard per runtime worker takes
//! its share of them into a queue of its own and polls them, and an idle
//! shard steals from the others' queues. So the group keeps tokio's
//! parallelism and work stealing at a fraction of a tokio task's cost.
//!
//! What each task keeps, compared with a tokio task of its own:
//!
//! - Its panic: a cell's future is the group's `TaskFuture`, which catches
//!   a panic in every poll and in its destructor and reports it as the
//!   task's outcome. Nothing unwinds into a shard.
//! - Its cancel: [`Runner::cancel`] marks the runner cancelled and aborts
//!   every parked cell, which queues it; a shard drops the future of every
//!   cell it takes from then on, unpolled, as tokio's abort does.
//! - Its parallelism: a shard takes no more than its share of the ready
//!   cells (at most [`BATCH`]), brings an idle or new shard in for what it
//!   leaves, and its own queue is open to the others (invariant 11). So k
//!   ready tasks run on min(k, workers) threads, as k tokio tasks do.
//! - Its progress when a sibling blocks its thread: the blocked shard's
//!   own queue is stolen by the others, so a task that blocks holds back
//!   at most the one task its shard keeps to poll next (invariant 10), as
//!   a tokio task holds back the one in its worker's LIFO slot. A shard
//!   stuck in one poll (`block_in_place` hands its worker to another
//!   thread) lets one more shard start beside it (invariant 12).
//! - Its fairness: a shard polls at most [`SHARD_TURN`] cells, or fewer when
//!   tokio's cooperative budget runs out, and then yields to tokio with its
//!   unpolled cells back at the head of the queue.
//! - Its end at runtime shutdown: once the runtime drops the first shard,
//!   no cell is polled again, and every future is dropped by the time the
//!   runtime's drop returns, those in another shard's own queue included.
//!
//! # Invariants
//!
//! 1. A cell is in the queue (or a shard's batch) at most once: only the
//!    caller that moves its state to `SCHEDULED` pushes it ([`CellState`]).
//!    Whoever holds that queue entry alone may poll or end the cell.
//! 2. A wake-up is never lost: a wake while the cell is being polled sets
//!    `NOTIFIED`, and the shard queues the cell again after the poll.
//! 3. A cell that has ever returned `Pending` is in `parked` until it ends:
//!    registered by its shard while still `RUNNING`, so before anyone else
//!    can run or end it. A live cell is always queued, in a shard's hands,
//!    or in `parked`; so `cancel` and `close` reach every one.
//! 4. `cancel` sets `cancelled` before it takes the queue lock to abort
//!    the parked cells; a shard that registers a cell reads `cancelled`
//!    after releasing that lock. So either `cancel` aborts the cell, or the
//!    shard sees the flag and ends it. Once `cancelled` is set, no future
//!    is polled again.
//! 5. A shard parks (leaves its waker in `idle`) or exits only under the
//!    queue lock and after seeing the queue empty: it exits when `parked`
//!    is empty too, else parks. A push under the same lock wakes an idle
//!    shard, or spawns one while fewer than one per worker exist. The end
//!    of the last parked cell with nothing queued, and every shard that
//!    exits, wakes all idle shards, to exit. So a queued cell always has a
//!    shard coming for it, and a group with no live task leaves no tokio
//!    task behind.
//! 6. A shard dropped unfinished means its runtime is shutting down: the
//!    runner closes, ends every queued and parked cell, and from then on
//!    ends each cell where it would be queued, as tokio drops its tasks at
//!    shutdown. The cells another shard has taken into its batch are
//!    neither queued nor parked: as with `cancelled` in invariant 4,
//!    `close` sets `closed` before it takes the queue lock, and a shard
//!    reads it before each poll and after registering a cell. So that shard
//!    polls none of them again and ends each one, or `close` aborts it.
//!    Then no cell is left for a later cancel to end on its own thread. A
//!    cell that a waker or a cancel scheduled before `close` could abort
//!    it is still ended by that pusher, on its thread, where tokio would
//!    leave the drop to the shutdown: left so, since once the last shard
//!    is gone no thread of that runtime is left to hand it to.
//! 7. A shard woken or spawned from inside a shard's poll (to take cells,
//!    or to exit) never waits for that poll to end. tokio runs a task
//!    woken or spawned on one of its workers next on that same worker,
//!    from a slot no other worker steals from (its LIFO slot): there, the
//!    new shard would wait behind the rest of the current shard's turn,
//!    and if a cell polled in it blocks its thread, so would every queued
//!    cell, not only that cell's batch (with tokio tasks only the one task
//!    in that slot would), and so would every task spawned meanwhile,
//!    which finds that shard neither idle nor gone. So right after it, a
//!    no-op tokio task is spawned too ([`Runner::unpin`]): it takes the
//!    slot, and the shard goes to the worker's run queue, where an idle
//!    worker is told to steal it.
//! 8. The shards run on the runtime the group's first task was spawned
//!    on, until it shuts down: a runner closed with none of its shards
//!    left (invariant 6), or whose new shard that runtime refused (tokio
//!    drops a task spawned on a runtime that has shut down inside `spawn`,
//!    which [`Runner::hand_over`] tells from a shutdown under a running
//!    shard), moves to the runtime of the thread spawning a new task, and
//!    opens again. Only with no shard left, so no shard of the old runtime
//!    ever sees `closed` cleared; a cell of the old runtime still being
//!    woken then was aborted by `close`, and whoever takes it ends it
//!    unpolled. Spawned outside any runtime then, the task is ended and
//!    `spawn` panics, saying why.
//! 9. A cancel reaches the runner in two steps: the signal (the group's
//!    contexts are cancelled; tasks go on being polled) and the drop step,
//!    [`Runner::cancel`], now, at the end of the group's grace
//!    ([`Runner::cancel_after`], a tokio task whose drop cancels, so an
//!    abort or a shutdown of its runtime drops the tasks then), or when
//!    the group is dropped. After the drop step a cell is ended by whoever
//!    holds its entry, at the next `run` or right after a poll that
//!    returned `Pending`, unless it is shielded: its `shields` count, kept
//!    in the thread's `POLLING` while it is polled and written back after,
//!    is above zero. The count changes only inside the cell's own poll (a
//!    shield is entered in its first poll, and left when it completes or
//!    is dropped there; a shield dropped with the task's future elsewhere
//!    does not count), so the holder of the entry always reads it right.
//!    One task alone gets the same drop step through [`Runner::stop`]
//!    (`TaskGroup::cancel_task`): its cell's `stopped` is set, never
//!    unset, before the cell is aborted, and is read wherever `cancelled`
//!    is.
//!    An abort that finds a shielded cell is used up at `start`, so the
//!    cell polls on and parks as usual; the poll in which its last shield
//!    ends is followed by the check, which ends it. A closed runner ends
//!    every cell, shielded or not, as tokio drops every task at shutdown.
//! 10. A cell woken by a cell of the same runner, polled by a shard that
//!     has no other cell of its batch left to poll, is kept by that shard
//!     ([`WOKEN_HERE`]) instead of queued, if it keeps none yet: it is in
//!     the shard's hands, as its batch is (so invariants 3, 4 and 6 read
//!     the same), and the shard polls it once it has polled the cell that
//!     woke it, before it takes from the queue again. One cell at a time,
//!     as tokio's LIFO slot holds one task: the cell being polled and the
//!     kept one are never more than a batch (the bound of invariant 7's
//!     blocking task stays), and every other cell woken meanwhile is
//!     queued, for the idle shards on other workers to run in parallel. No
//!     shard is woken for the kept cell, so a message between two tasks of
//!     a group costs no wake-up of another worker, as between two tokio
//!     tasks. A shard that yields (`SHARD_TURN`, or tokio's budget) queues the
//!     kept cell at the tail, behind the cells that were waiting: a pair of
//!     tasks messaging each other never keeps a queued one from its turn. A
//!     cell that wakes itself (`NOTIFIED`, queued by `stop`) is queued,
//!     never kept: a task that yields lets the others run first.
//! 11. A shard's own queue ([`Local`]) holds the cells it took and has not
//!     polled yet; it is a batch in the shard's hands, as far as invariants
//!     1, 3, 4 and 6 go. Its shard pops from it under its own lock; any
//!     other shard takes from it only under the queue lock (stealing half,
//!     in [`Queue::steal`]), so no two shards' locks are ever taken the
//!     other way round, and a steal is ordered with every take, park and
//!     exit. A shard takes its share of the queue (the ready cells divided
//!     by the shards, at most [`BATCH`]), and whenever it leaves cells in
//!     the queue or in its own, it wakes an idle shard or starts a new one
//!     ([`Queue::help`]). A shard parks or exits only after finding the
//!     queue and every other shard's own empty, under the queue lock, and
//!     only with its own empty. So a ready cell is never stuck behind a
//!     busy shard while another shard idles.
//! 12. A shard counts its polls twice ([`Local::beat`]: odd while inside
//!     one). A shard that takes cells and leaves some while one shard per
//!     worker is running looks at the others' beats, at most once per
//!     [`STALL`]: a shard whose beat has not moved since the last look has
//!     been inside one poll for at least that long (blocking its thread,
//!     or inside `block_in_place`, whose worker tokio hands to a new
//!     thread), and one more shard may start for each such one, up to
//!     twice the workers. `block_in_place` is noticed at once, without
//!     waiting for a look: each shard leaves a [`StallHint`] in tokio's
//!     deferred wake-ups of its worker at every take, which tokio wakes
//!     when that worker parks (the shard is between polls then) or when a
//!     task on it enters `block_in_place` (the shard is inside a poll):
//!     then, while cells wait, an idle shard is woken or one more starts,
//!     and tokio runs it on the worker it hands to a new thread. A shard
//!     with nothing to run exits instead of parking while there are more
//!     shards than workers.
//! 13. Every tokio task the runner starts (a shard, a grace's timer, the
//!     timer of a task's own deadline, a no-op that frees a LIFO slot)
//!     holds a [`Lease`] in its future, and
//!     [`Runner::quiet`] resolves once none is left. A lease is counted
//!     out only once tokio has taken its task off its list ([`LeaseEnd`]),
//!     so when `quiet` returns, the runtime's count of alive tasks no
//!     longer includes any of them. No lease is taken once the group is
//!     joined: no cell is left to wake a shard, and a grace's timer is not
//!     started when no shard is left (nothing is left to end on its own).
//!
//! # Lock order
//!
//! The queue lock is never held while polling or dropping a cell's future
//! (user code), waking a waker, or spawning a shard. A cell's body lock is
//! taken only by whoever holds its queue entry, so it is never contended;
//! it is held across the poll, in which the task's code may take the queue
//! lock (waking a sibling) or the group's locks (its end), never the other
//! way round. A shard's own queue lock is taken alone by its shard, or
//! under the queue lock by anyone else (invariant 11); never the other way.
//!
//! # Files
//!
//! One concern each, as tokio's `runtime/task/` is laid out:
//!
//! - `mod.rs`: this map, the [`Runner`] and what the group calls on it
//!   (spawn, cancel, the grace's end, a snapshot's cells, `quiet`);
//! - `state.rs`: [`CellState`], a cell's atomic state, and its named
//!   transitions ([`Scheduled`], [`Started`], [`Stopped`]);
//! - `cell.rs`: [`TaskCell`], one task: `run` polls or ends it, its waker;
//! - `queue.rs`: [`Queue`], what the queue lock guards, and the runner's
//!   operations on it: push, take, steal, park, close;
//! - `shard.rs`: [`Shard`], the tokio task that polls cells, its own queue
//!   ([`Local`]), and how one is handed to tokio;
//! - `here.rs`: the thread-locals (what a thread is polling, the cell a
//!   shard keeps, the clock of a batch) and their guards; the shield count
//!   they share with `context/` is in `crate::polling`;
//! - `lease.rs`: the tokio tasks the runner starts, counted until tokio is
//!   done with them;
//! - `models.rs`: the loom models (under `--cfg loom`).

use std::cell::{Cell as ThreadCell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::{Arc, PoisonError, Weak};
use std::task::{self, Poll, Wake, Waker};
use std::time::Duration;

use slab::Slab;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::lifecycle::{Meta, since};
use crate::loom::{AtomicBool, AtomicU8, AtomicU16, AtomicU32, AtomicUsize, Mutex, MutexGuard};
use crate::polling::{POLLING, Polled};

mod cell;
mod here;
mod lease;
mod queue;
mod shard;
mod state;

// A child module, so that its models can drive the runner's own code.
#[cfg(all(test, loom))]
mod models;
// What the group's models (`group::models`) play shards with.
#[cfg(all(test, loom))]
mod played;

pub(super) use cell::TaskCell;
pub(super) use here::current_task;
use here::*;
pub(super) use lease::thread_mark;
use lease::*;
use queue::*;
use shard::*;
use state::*;

/// What a cell runs: the group's `TaskFuture` around the user's future.
pub(super) type TaskBody = Pin<Box<dyn Task>>;

/// A cell's future, told who its task is ([`Meta`], kept in the cell) on
/// every poll and when it is dropped unfinished, so that it need not keep
/// a copy.
pub(super) trait Task: Send {
    /// Polls the future once.
    fn poll_task(self: Pin<&mut Self>, cx: &mut task::Context<'_>, meta: &Meta) -> Poll<()>;

    /// The runner drops the future unfinished (a cancel, or its runtime
    /// shutting down): called just before.
    fn abandon(self: Pin<&mut Self>, meta: &Meta);
}

/// Any plain future is a task that ignores who it is: the runner's own
/// models and tests run those.
impl<F: Future<Output = ()> + Send> Task for F {
    fn poll_task(self: Pin<&mut Self>, cx: &mut task::Context<'_>, _: &Meta) -> Poll<()> {
        self.poll(cx)
    }

    fn abandon(self: Pin<&mut Self>, _: &Meta) {}
}

/// The most cells a shard takes from the queue at once, into its own
/// (invariant 11): one lock of the queue for up to this many polls.
const BATCH: usize = 16;

/// How many cells a shard polls before it yields to tokio.
const SHARD_TURN: usize = 128;

/// How long a shard may be inside one poll before the stall watch lets
/// another shard start beside it (invariant 12).
const STALL: Duration = Duration::from_millis(2);

/// `TaskCell::parked_key` of a cell not in `parked`.
const NOT_PARKED: u32 = u32::MAX;

/// The most entries `ready` and `parked` keep once they drain: a group
/// whose tasks come and go a few at a time reuses them; one that once held
/// a burst lets the peak go (a million parked tasks grew them to 24 MiB).
const QUEUE_KEPT: usize = 64;

/// A group's shards and their shared queue of cells ready to run.
#[repr(C)]
pub(super) struct Runner {
    /// Puts the queue lock 128 bytes past the start of the `Arc`'s
    /// allocation (its two counts take 16), off the cache lines, and their
    /// prefetch pair, of the reference count that every cell's creation
    /// and end touches. Padding, not an alignment: an over-aligned
    /// allocation is glibc's `posix_memalign`, ~900 instructions a group.
    _apart: [u8; 112],
    queue: Mutex<Queue>,
    /// The group was cancelled: no future is polled again (invariant 4).
    cancelled: AtomicBool,
    /// The runtime is shutting down: no future is polled again, and every
    /// cell is ended where it would be queued (invariant 6).
    closed: AtomicBool,
    /// `Queue::runtime` is set: [`Runner::bind`]'s look without the lock.
    bound: AtomicBool,
    /// When the group was built: what a task's `born` counts from.
    pub(super) epoch: Instant,
    /// The group's name, for [`current_task`].
    name: Option<Arc<str>>,
    /// The end of the last of the tokio tasks it started (invariant 13).
    quiet: Notify,
}

/// Why a new task could not be run: its group's runtime has shut down, and
/// the task was spawned outside any runtime (invariant 8).
struct RuntimeGone;

impl Runner {
    pub(super) fn new(epoch: Instant, name: Option<Arc<str>>) -> Arc<Runner> {
        Arc::new(Runner {
            _apart: [0; 112],
            queue: Mutex::new(Queue {
                ready: VecDeque::new(),
                parked: Slab::new(),
                shards: 0,
                idle: Vec::new(),
                locals: Slab::new(),
                leases: Leases::default(),
                stalled: 0,
                watched: None,
                runtime: None,
                workers: 1,
                #[cfg(loom)]
                modelled: None,
            }),
            cancelled: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            bound: AtomicBool::new(false),
            epoch,
            name,
            quiet: Notify::new(),
        })
    }

    /// A runner whose shards the group's loom models play on their own
    /// threads (`group::models`): bound to no runtime, with two workers'
    /// worth of shards, each started or woken shard listed in
    /// `Queue::modelled` for [`Runner::play_modelled`].
    #[cfg(loom)]
    pub(super) fn for_models(epoch: Instant, name: Option<Arc<str>>) -> Arc<Runner> {
        let runner = Runner::new(epoch, name);
        {
            let mut queue = runner.lock();
            queue.workers = 2;
            queue.modelled = Some(Vec::new());
        }
        runner.bound.store(true, Release);
        runner
    }

    #[inline]
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // No user code runs under this lock.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Binds the runner to the current runtime, the first time.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, with tokio's message, when not yet bound.
    #[track_caller]
    pub(super) fn bind(&self) {
        if !self.bound.load(Acquire) {
            let runtime = Handle::current();
            let mut queue = self.lock();
            if queue.runtime.is_none() {
                queue.bind(runtime);
            }
            self.bound.store(true, Release);
        }
    }

    /// Runs `body` as a new task.
    ///
    /// # Panics
    ///
    /// When the group's runtime has shut down and the caller is outside
    /// any runtime (invariant 8); the task is ended first, so it counts as
    /// cancelled.
    #[track_caller]
    pub(super) fn spawn(self: &Arc<Self>, meta: Meta, body: TaskBody) -> Weak<TaskCell> {
        let cell = Arc::new(TaskCell {
            state: CellState::new(),
            body: Mutex::new(Some(body)),
            runner: self.clone(),
            parked_key: AtomicU32::new(NOT_PARKED),
            shields: AtomicU16::new(0),
            stopped: AtomicBool::new(false),
            meta,
        });
        let scheduled = cell.state.schedule();
        debug_assert_eq!(scheduled, Scheduled::Push, "a new cell is idle");
        let weak = Arc::downgrade(&cell);
        if let Err(RuntimeGone) = self.enqueue(cell, true) {
            panic!(
                "TaskGroup::spawn called outside a tokio runtime, and the runtime this \
                 group's tasks ran on has shut down: spawn from within a runtime, and the \
                 group's tasks run there"
            );
        }
        weak
    }

    /// The drop step for one task (`TaskGroup::cancel_task`): its future
    /// is not polled again unless shielded, and is dropped by a shard, as
    /// [`Runner::cancel`] does for every task (invariant 9). Idempotent; a
    /// cell already ended is left alone.
    pub(super) fn stop(self: &Arc<Self>, cell: &Weak<TaskCell>) {
        let Some(cell) = cell.upgrade() else {
            return;
        };
        cell.stopped.store(true, SeqCst);
        if cell.state.abort() == Scheduled::Push {
            self.push(cell);
        }
    }

    /// [`Runner::stop`] once `grace` has passed, by a timer counted as the
    /// runner's (invariant 13), or at once when the runner has no runtime
    /// to run one on. The caller aborts the timer when the task ends first.
    pub(super) fn stop_after(
        self: &Arc<Self>,
        cell: Weak<TaskCell>,
        grace: Duration,
    ) -> Option<AbortHandle> {
        let runtime = self.lock().runtime.clone();
        let Some(runtime) = runtime else {
            self.stop(&cell);
            return None;
        };
        let runner = self.clone();
        let lease = Lease::new(self);
        let timer = runtime.spawn(async move {
            let _lease = lease;
            tokio::time::sleep(grace).await;
            runner.stop(&cell);
        });
        Some(timer.abort_handle())
    }

    /// Whether the caller is polling one of this runner's cells.
    pub(super) fn is_running_here(self: &Arc<Self>) -> bool {
        POLLING.with(|polling| polling.get().runner == Arc::as_ptr(self) as usize)
    }

    /// The drop step of a cancel: no future is polled again, except a
    /// shielded one's, and each one's future is dropped by a shard
    /// (invariants 4 and 9). Idempotent.
    pub(super) fn cancel(self: &Arc<Self>) {
        if self.cancelled.swap(true, SeqCst) {
            // Every parked cell was aborted then; one parked since sees
            // the flag when it registers (invariant 4).
            return;
        }
        self.abort_parked();
    }

    /// The live cells the queue lock can see, for a snapshot: every one
    /// in `parked` and every one queued that is not (a cell a shard has
    /// taken for its first poll is neither: invariant 3). Clones only: the
    /// caller reads them without the lock. Dropping a clone never runs a
    /// task's code: a cell is let go by the runner only once ended.
    pub(super) fn cells(&self) -> Vec<Arc<TaskCell>> {
        let queue = self.lock();
        let parked = queue.parked.iter().map(|(_, cell)| cell.clone());
        let unparked = queue
            .ready
            .iter()
            .filter(|cell| cell.parked_key.load(Relaxed) == NOT_PARKED)
            .cloned();
        let mut cells = Vec::with_capacity(queue.parked.len() + queue.ready.len());
        cells.extend(parked);
        cells.extend(unparked);
        cells
    }

    /// Whether the drop step has come (invariant 9).
    pub(super) fn is_cancelled(&self) -> bool {
        self.cancelled.load(SeqCst)
    }

    /// The drop step after a grace: [`Runner::cancel`] once `grace` has
    /// passed on the runtime the shards run on, or at once when the runner
    /// has no shard (no task left to run). The timer is a tokio task
    /// whose drop cancels: aborting it, or its runtime shutting down, drops
    /// the tasks then (invariant 9).
    pub(super) fn cancel_after(self: &Arc<Self>, grace: Duration) -> Option<AbortHandle> {
        // No shard: no task is left to end on its own (invariant 5), and
        // one started from now on is never polled, so no timer outlives
        // a joined group (invariant 13).
        let runtime = {
            let queue = self.lock();
            queue.runtime.clone().filter(|_| queue.shards > 0)
        };
        let Some(runtime) = runtime else {
            self.cancel();
            return None;
        };
        let at_end = CancelOnDrop(self.clone());
        let lease = Lease::new(self);
        let timer = runtime.spawn(async move {
            let _lease = lease;
            tokio::time::sleep(grace).await;
            drop(at_end);
        });
        Some(timer.abort_handle())
    }

    /// Starts the timer of a task's own deadline on `runtime`, counted as
    /// the runner's (invariant 13): the task's context aborts it when the
    /// task ends.
    pub(super) fn spawn_timer(
        self: &Arc<Self>,
        runtime: &Handle,
        timer: crate::context::DeadlineTimer,
    ) -> AbortHandle {
        let lease = Lease::new(self);
        let timer = runtime.spawn(async move {
            let _lease = lease;
            timer.run().await;
        });
        timer.abort_handle()
    }

    /// Resolves once no tokio task the runner started is alive: every
    /// shard has exited, and every timer and no-op task it spawned has
    /// run or been dropped (invariant 13). The caller makes sure none is
    /// started again (the group is joined, its grace timer aborted).
    pub(super) async fn quiet(&self) {
        loop {
            let quiet = self.quiet.notified();
            let mut quiet = std::pin::pin!(quiet);
            quiet.as_mut().enable();
            if self.lock().leases.quiet_for(thread_mark()) {
                break;
            }
            quiet.await;
        }
    }
}

/// The end of a grace: the drop step, when the timer fires or is dropped.
struct CancelOnDrop(Arc<Runner>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}
