//! Runs a group's async tasks inside a few tokio tasks, its *shards*,
//! instead of one tokio task each.
//!
//! A tokio task costs a spawn, a join handle, a wake-up of a parked worker
//! and a free on another thread: most of what a fan-out of small tasks
//! spends. Here a task is a [`Cell`]: its future (boxed), a small state
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
//! - Its fairness: a shard polls at most [`TURN`] cells, or fewer when
//!   tokio's cooperative budget runs out, and then yields to tokio with its
//!   unpolled cells back at the head of the queue.
//! - Its end at runtime shutdown: once the runtime drops the first shard,
//!   no cell is polled again, and every future is dropped by the time the
//!   runtime's drop returns, those in another shard's own queue included.
//!
//! # Invariants
//!
//! 1. A cell is in the queue (or a shard's batch) at most once: only the
//!    caller that moves its state to `SCHEDULED` pushes it ([`TaskState`]).
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
//!     tasks. A shard that yields (`TURN`, or tokio's budget) queues the
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
//!     twice the workers. A shard with nothing to run exits instead of
//!     parking while there are more shards than workers.
//! 13. Every tokio task the runner starts (a shard, a grace's timer, a
//!     no-op that frees a LIFO slot) holds a [`Lease`] in its future, and
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
//! held only by whoever holds its queue entry, and never while taking the
//! queue lock.

use std::cell::{Cell as ThreadCell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::{Arc, PoisonError};
use std::task::{self, Poll, Wake, Waker};
use std::time::Duration;

use slab::Slab;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::lifecycle::{Meta, since};
use crate::loom::{AtomicBool, AtomicU8, AtomicU32, AtomicUsize, Mutex, MutexGuard};

// A child module, so that its models can drive the runner's own code.
#[cfg(all(test, loom))]
#[path = "runner_loom.rs"]
mod runner_loom;

/// What a cell runs: the group's `TaskFuture` around the user's future.
pub(super) type Body = Pin<Box<dyn Task>>;

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
const TURN: usize = 128;

/// How long a shard may be inside one poll before the stall watch lets
/// another shard start beside it (invariant 12).
const STALL: Duration = Duration::from_millis(2);

/// `Cell::parked_key` of a cell not in `parked`.
const NOT_PARKED: usize = usize::MAX;

/// The most entries `ready` and `parked` keep once they drain: a group
/// whose tasks come and go a few at a time reuses them; one that once held
/// a burst lets the peak go (a million parked tasks grew them to 24 MiB).
const KEPT: usize = 64;

/// A group's shards and their shared queue of cells ready to run.
pub(super) struct Runner {
    /// On a cache line of its own: every cell's creation and end touches
    /// the runner's reference count, which must not slow the lock.
    queue: CacheLine<Mutex<Queue>>,
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

/// What the queue lock guards. `ready` and `parked` give back what a burst
/// made them grow to once they drain, down to [`KEPT`] entries.
struct Queue {
    ready: VecDeque<Arc<Cell>>,
    /// Every cell that has ever returned `Pending` and not ended
    /// (invariant 3).
    parked: Slab<Arc<Cell>>,
    /// Shards spawned and not exited.
    shards: usize,
    /// Wakers of parked shards.
    idle: Vec<Waker>,
    /// Every counted shard's own queue, to steal from (invariant 11).
    locals: Slab<Arc<Local>>,
    /// The tokio tasks it started (invariant 13).
    leases: Leases,
    /// Shards found inside one poll for at least [`STALL`] at the stall
    /// watch's last look, and when that was (invariant 12).
    stalled: usize,
    watched: Option<std::time::Instant>,
    /// The runtime the shards run on (invariant 8), and its number of
    /// workers: at most one shard per worker.
    runtime: Option<Handle>,
    workers: usize,
}

impl Queue {
    /// Runs the shards on `runtime` from now on (invariant 8).
    fn bind(&mut self, runtime: Handle) {
        self.workers = runtime.metrics().num_workers().max(1);
        self.runtime = Some(runtime);
    }

    /// Where a new shard is to run, and that runtime's number of workers.
    fn shard_runtime(&self) -> Option<(Handle, usize)> {
        Some((self.runtime.clone()?, self.workers))
    }

    /// `ready` drained after a burst: swapped for a small one. The old one
    /// is returned, to be freed without the lock.
    fn shrink_ready(&mut self) -> Option<VecDeque<Arc<Cell>>> {
        (self.ready.is_empty() && self.ready.capacity() > KEPT)
            .then(|| std::mem::replace(&mut self.ready, VecDeque::with_capacity(KEPT)))
    }

    /// The same for `parked`.
    fn shrink_parked(&mut self) -> Option<Slab<Arc<Cell>>> {
        (self.parked.is_empty() && self.parked.capacity() > KEPT)
            .then(|| std::mem::replace(&mut self.parked, Slab::with_capacity(KEPT)))
    }

    /// Counts a new shard in, before it is spawned.
    fn new_shard(&mut self) -> NewShard {
        self.shards += 1;
        let local = Local::new();
        let key = self.locals.insert(local.clone());
        NewShard {
            local,
            key,
            runtime: self.shard_runtime(),
        }
    }

    /// Counts the shard with `key` out: it exits, or was dropped.
    fn leave(&mut self, key: usize) {
        self.shards -= 1;
        self.locals.try_remove(key);
    }

    /// Who is to take cells that the caller leaves: an idle shard, else a
    /// new one while there are fewer than one per worker, plus one per
    /// stalled shard when the caller is a shard and may `watch`
    /// (invariant 12).
    fn help(&mut self, watch: bool) -> Help {
        if let Some(shard) = self.idle.pop() {
            return Help::Wake(shard);
        }
        let mut allowed = self.workers;
        if watch && self.shards >= allowed {
            allowed += self.stalls();
        }
        if self.shards < allowed {
            Help::Start(self.new_shard())
        } else {
            Help::None
        }
    }

    /// The stall watch: how many shards have been inside one poll since
    /// its last look, at most one look per [`STALL`] (invariant 12).
    fn stalls(&mut self) -> usize {
        let now = std::time::Instant::now();
        if self
            .watched
            .is_some_and(|at| now.duration_since(at) < STALL)
        {
            return self.stalled;
        }
        self.watched = Some(now);
        let stalled = self.locals.iter().filter(|(_, local)| local.stalled());
        self.stalled = stalled.count().min(self.workers);
        self.stalled
    }

    /// Steals half of another shard's own queue into `local`, and returns
    /// the first cell stolen (invariant 11). Only a shard holding the
    /// queue lock steals, so no two shards' queues are ever locked the
    /// other way round.
    fn steal(&mut self, local: &Local, key: usize) -> Option<Arc<Cell>> {
        for (other_key, other) in self.locals.iter() {
            if other_key == key {
                continue;
            }
            let mut theirs = other.lock();
            let half = theirs.len().div_ceil(2);
            if half == 0 {
                continue;
            }
            let mut stolen = theirs.drain(..half);
            let first = stolen.next();
            local.lock().extend(stolen);
            return first;
        }
        None
    }
}

/// Why a new task could not be run: its group's runtime has shut down, and
/// the task was spawned outside any runtime (invariant 8).
struct RuntimeGone;

impl Runner {
    pub(super) fn new(epoch: Instant, name: Option<Arc<str>>) -> Arc<Runner> {
        Arc::new(Runner {
            queue: CacheLine(Mutex::new(Queue {
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
            })),
            cancelled: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            bound: AtomicBool::new(false),
            epoch,
            name,
            quiet: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // No user code runs under this lock.
        self.queue.0.lock().unwrap_or_else(PoisonError::into_inner)
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
    pub(super) fn spawn(self: &Arc<Self>, meta: Meta, body: Body) {
        let cell = Arc::new(Cell {
            state: TaskState::new(),
            body: Mutex::new(Some(body)),
            runner: self.clone(),
            parked_key: AtomicUsize::new(NOT_PARKED),
            shields: AtomicU32::new(0),
            meta,
        });
        let scheduled = cell.state.schedule();
        debug_assert!(scheduled, "a new cell is idle");
        if let Err(RuntimeGone) = self.enqueue(cell, true) {
            panic!(
                "TaskGroup::spawn called outside a tokio runtime, and the runtime this \
                 group's tasks ran on has shut down: spawn from within a runtime, and the \
                 group's tasks run there"
            );
        }
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
        let parked: Vec<Arc<Cell>> = self.lock().parked.iter().map(|(_, c)| c.clone()).collect();
        let idle: Vec<Arc<Cell>> = parked.into_iter().filter(|c| c.state.abort()).collect();
        self.push_all(idle);
    }

    /// The live cells the queue lock can see, for a snapshot: every one
    /// in `parked` and every one queued that is not (a cell a shard has
    /// taken for its first poll is neither: invariant 3). Clones only: the
    /// caller reads them without the lock. Dropping a clone never runs a
    /// task's code: a cell is let go by the runner only once ended.
    pub(super) fn cells(&self) -> Vec<Arc<Cell>> {
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

    /// Queues a cell whose state says it must be pushed (invariant 1).
    fn push(self: &Arc<Self>, cell: Arc<Cell>) {
        // Only a new task may move the runner (invariant 8).
        let _ = self.enqueue(cell, false);
    }

    /// Queues a cell a waker scheduled, unless the shard this thread is
    /// polling keeps it (invariant 10).
    fn push_woken(self: &Arc<Self>, cell: Arc<Cell>) {
        if let Some(cell) = WokenHere::keep(Arc::as_ptr(self) as usize, cell) {
            self.push(cell);
        }
    }

    /// [`Runner::push`], and for a new task (`fresh`), pushed by the thread
    /// spawning it, the move to that thread's runtime if the group's has
    /// shut down (invariant 8).
    fn enqueue(self: &Arc<Self>, cell: Arc<Cell>, fresh: bool) -> Result<(), RuntimeGone> {
        let mut queue = self.lock();
        if self.closed.load(SeqCst) {
            if !fresh || queue.shards > 0 {
                drop(queue);
                cell.end();
                return Ok(());
            }
            let Ok(runtime) = Handle::try_current() else {
                drop(queue);
                cell.end();
                return Err(RuntimeGone);
            };
            self.reopen(&mut queue, Some(runtime));
        }
        queue.ready.push_back(cell);
        let help = queue.help(false);
        drop(queue);
        self.bring(help, fresh)
    }

    /// Wakes the idle shard or starts the shard that `help` names; then,
    /// from inside a shard's poll, frees the LIFO slot (invariant 7).
    fn bring(self: &Arc<Self>, help: Help, fresh: bool) -> Result<(), RuntimeGone> {
        match help {
            Help::None => return Ok(()),
            Help::Wake(shard) => shard.wake(),
            Help::Start(shard) => self.spawn_shard(shard, fresh)?,
        }
        self.unpin();
        Ok(())
    }

    /// Opens a closed runner with no shard left, on `runtime` (invariant
    /// 8). Under the queue lock.
    fn reopen(&self, queue: &mut Queue, runtime: Option<Handle>) {
        debug_assert_eq!(queue.shards, 0, "a shard of the old runtime is left");
        if let Some(runtime) = runtime {
            queue.bind(runtime);
        }
        self.closed.store(false, SeqCst);
    }

    /// Queues many cells at once (a cancel): one lock, every idle shard
    /// woken, and new shards started up to one per worker.
    fn push_all(self: &Arc<Self>, cells: Vec<Arc<Cell>>) {
        if cells.is_empty() {
            return;
        }
        let mut queue = self.lock();
        if self.closed.load(SeqCst) {
            drop(queue);
            return cells.into_iter().for_each(|cell| cell.end());
        }
        let many = cells.len();
        queue.ready.extend(cells);
        let idle = std::mem::take(&mut queue.idle);
        let mut start = Vec::new();
        while queue.shards < queue.workers && idle.len() + start.len() < many {
            start.push(queue.new_shard());
        }
        drop(queue);
        let roused = !start.is_empty() || !idle.is_empty();
        idle.into_iter().for_each(Waker::wake);
        for shard in start {
            let _ = self.spawn_shard(shard, false);
        }
        if roused {
            self.unpin();
        }
    }

    /// Called right after waking or spawning a shard: from inside a
    /// shard's poll, on a runtime with other workers to steal it, spawns a
    /// no-op tokio task on that runtime to take this worker's LIFO slot, so
    /// that the shard just woken goes where an idle worker can steal it
    /// instead of waiting for this poll (invariant 7). Elsewhere (outside
    /// the runtime, or in a tokio task of the user's) it does nothing.
    fn unpin(self: &Arc<Self>) {
        if IN_SHARD.with(ThreadCell::get) > 1 {
            // A shard is polled on one of its runtime's workers, which is
            // inside that runtime. Counted until it has run (invariant 13).
            let lease = Lease::new(self);
            drop(tokio::spawn(async move { drop(lease) }));
        }
    }

    /// Starts the shard counted in `shards` for it. If its runtime has
    /// shut down, a new task (`fresh`) moves the runner to the caller's
    /// runtime when no other shard is left (invariant 8); else the runner
    /// closes, as when a runtime drops a shard (invariant 6).
    fn spawn_shard(self: &Arc<Self>, shard: NewShard, fresh: bool) -> Result<(), RuntimeGone> {
        let NewShard {
            local,
            key,
            runtime,
        } = shard;
        let Some((runtime, workers)) = runtime else {
            // Unbound: no runtime to run it (never, past `bind`).
            self.close(&local, Some(key));
            return Ok(());
        };
        if self.hand_over(&runtime, workers, &local, key) {
            return Ok(());
        }
        let mut gone = false;
        if fresh {
            let mut queue = self.lock();
            if queue.shards == 1 && !self.closed.load(SeqCst) {
                match Handle::try_current() {
                    Ok(current) => {
                        queue.bind(current.clone());
                        let workers = queue.workers;
                        drop(queue);
                        // Refused again: the caller's runtime is the one
                        // shutting down, and the task is cancelled with it.
                        if self.hand_over(&current, workers, &local, key) {
                            return Ok(());
                        }
                    }
                    Err(_) => gone = true,
                }
            }
        }
        // What the refused shard's drop would have done (invariant 6).
        self.close(&local, Some(key));
        if gone { Err(RuntimeGone) } else { Ok(()) }
    }

    /// Spawns a shard on `runtime`. Returns `false` if the runtime refused
    /// it: it has shut down, and tokio dropped the shard inside `spawn`.
    /// The shard's drop tells that from a shutdown under it, by
    /// [`HANDING_OVER`], and leaves the rest to the caller (invariant 8).
    fn hand_over(
        self: &Arc<Self>,
        runtime: &Handle,
        workers: usize,
        local: &Arc<Local>,
        key: usize,
    ) -> bool {
        let shard = Shard {
            runner: self.clone(),
            local: local.clone(),
            key,
            workers,
            finished: false,
            _lease: Lease::new(self),
        };
        let me = Arc::as_ptr(self) as usize;
        let outer = HANDING_OVER.with(|handing| handing.replace(me));
        let task = runtime.spawn(shard);
        let refused = HANDING_OVER.with(|handing| handing.replace(outer)) == REFUSED;
        drop(task);
        !refused
    }

    /// A shard's next cell, once its own queue and kept cell are spent, or
    /// why it has none (invariants 5, 11 and 12).
    fn take(self: &Arc<Self>, local: &Local, key: usize, waker: &Waker) -> Take {
        let mut queue = self.lock();
        if self.closed.load(SeqCst) {
            queue.leave(key);
            return Take::Exit;
        }
        let cell = if let Some(first) = queue.ready.pop_front() {
            // Its share of the queue: no more than the other shards leave
            // for themselves, so that ready cells spread over the workers.
            let share = (queue.ready.len() + 1).div_ceil(queue.shards).min(BATCH);
            let mut cells = local.lock();
            cells.extend(queue.ready.drain(..share - 1));
            drop(cells);
            first
        } else if let Some(first) = queue.steal(local, key) {
            first
        } else if queue.parked.is_empty() || queue.shards > queue.workers {
            // Nothing left to run, or one shard more than the workers (a
            // stall is over): exits. The last one out wakes the idle
            // shards, to exit too.
            queue.leave(key);
            let idle = if queue.parked.is_empty() {
                std::mem::take(&mut queue.idle)
            } else {
                Vec::new()
            };
            drop(queue);
            idle.into_iter().for_each(Waker::wake);
            return Take::Exit;
        } else {
            if !queue.idle.iter().any(|idle| idle.will_wake(waker)) {
                queue.idle.push(waker.clone());
            }
            return Take::Park;
        };
        let spent = queue.shrink_ready();
        // Cells left in the queue or in this shard's own: bring another
        // shard in to take or steal them.
        let help = if queue.ready.is_empty() && local.lock().is_empty() {
            Help::None
        } else {
            queue.help(true)
        };
        drop(queue);
        drop(spent);
        let _ = self.bring(help, false);
        Take::Cell(cell)
    }

    /// Puts a yielding shard's unpolled cells back at the head of the
    /// queue, for any shard to take, and the cell it kept (invariant 10)
    /// at the tail.
    fn give_back(self: &Arc<Self>, local: &Local, kept: Option<Arc<Cell>>) {
        let mut queue = self.lock();
        let mut cells = local.lock();
        if cells.is_empty() && kept.is_none() {
            return;
        }
        if self.closed.load(SeqCst) {
            let cells = std::mem::take(&mut *cells);
            drop(queue);
            return cells.into_iter().chain(kept).for_each(|cell| cell.end());
        }
        while let Some(cell) = cells.pop_back() {
            queue.ready.push_front(cell);
        }
        drop(cells);
        queue.ready.extend(kept);
        let wake = queue.idle.pop();
        drop(queue);
        if let Some(shard) = wake {
            shard.wake();
        }
    }

    /// Registers a cell that returned `Pending` for the first time
    /// (invariant 3). The caller reads `cancelled` and `closed` after it
    /// (invariants 4 and 6), and ends the cell if it must.
    fn park(&self, cell: &Arc<Cell>) {
        let mut queue = self.lock();
        let key = queue.parked.insert(cell.clone());
        cell.parked_key.store(key, Relaxed);
    }

    /// A registered cell ended: out of `parked`. The last one out, with
    /// nothing queued, wakes the idle shards, to exit; with cells queued,
    /// the shard that runs the last of them does (invariant 5). A cell
    /// usually ends inside a shard's poll, with more of its batch to come:
    /// the shards woken must not wait for that poll (invariant 7), or a
    /// task spawned meanwhile would find them neither idle nor gone.
    fn unpark(self: &Arc<Self>, key: usize) {
        let mut queue = self.lock();
        let cell = queue.parked.try_remove(key);
        let spent = queue.shrink_parked();
        let idle = if queue.parked.is_empty() && queue.ready.is_empty() {
            std::mem::take(&mut queue.idle)
        } else {
            Vec::new()
        };
        drop(queue);
        drop(spent);
        drop(cell);
        if !idle.is_empty() {
            idle.into_iter().for_each(Waker::wake);
            self.unpin();
        }
    }

    /// A shard was dropped unfinished: its runtime is shutting down
    /// (invariant 6). `key`: the shard's in `locals`, if it counts there.
    fn close(&self, local: &Local, key: Option<usize>) {
        // Before the lock: a shard polling its own cells sees it
        // (invariant 6).
        self.closed.store(true, SeqCst);
        let mut queue = self.lock();
        if let Some(key) = key {
            queue.leave(key);
        }
        let ready = std::mem::take(&mut queue.ready);
        let parked: Vec<Arc<Cell>> = queue.parked.iter().map(|(_, c)| c.clone()).collect();
        let idle = std::mem::take(&mut queue.idle);
        let own = std::mem::take(&mut *local.lock());
        drop(queue);
        idle.into_iter().for_each(Waker::wake);
        own.into_iter().chain(ready).for_each(|cell| cell.end());
        // A parked cell whose abort queues it is ours to end; any other is
        // queued or polled elsewhere, and ends where it would be queued.
        for cell in parked {
            if cell.state.abort() {
                cell.end();
            }
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

/// Keeps a value off the cache lines of its neighbours (128 bytes: two
/// lines, as adjacent-line prefetchers pair them).
#[repr(align(128))]
struct CacheLine<T>(T);

/// What [`Runner::take`] found for a shard.
enum Take {
    /// A cell to poll (and more in its own queue, maybe).
    Cell(Arc<Cell>),
    /// Nothing to run now, with cells parked: its waker is in `idle`.
    Park,
    /// Nothing left to run, or the runner closed: it has left the count.
    Exit,
}

/// Who takes the cells a shard cannot run now (invariant 5).
enum Help {
    None,
    /// An idle shard, woken.
    Wake(Waker),
    /// A new shard, counted in `shards` and `locals`, to spawn.
    Start(NewShard),
}

/// A shard counted in before it is spawned: its own queue, its key in
/// `locals`, and where it runs ([`Queue::shard_runtime`]).
struct NewShard {
    local: Arc<Local>,
    key: usize,
    runtime: Option<(Handle, usize)>,
}

/// What a thread is polling: a runner's cell, as addresses (0: none),
/// and the number of shielded sections that cell is inside, written back
/// to the cell when its poll returns (invariant 9).
#[derive(Clone, Copy)]
struct Polled {
    runner: usize,
    cell: usize,
    shields: u32,
}

const NOT_POLLING: Polled = Polled {
    runner: 0,
    cell: 0,
    shields: 0,
};

thread_local! {
    /// The cell this thread is polling: how `wait` knows it was called
    /// from its own group's task, and where a shield counts itself.
    static POLLING: ThreadCell<Polled> = const { ThreadCell::new(NOT_POLLING) };


    /// The clock, read at most once per batch a shard polls, as
    /// nanoseconds after its runner's epoch (with the runner's address; 0:
    /// not read in this batch): when a task was first polled, to within one
    /// batch, for a tenth of what reading the clock for every task would
    /// cost.
    static BATCH_BORN: ThreadCell<(usize, u64)> = const { ThreadCell::new((0, 0)) };

    /// The number of workers of the runtime whose shard this thread is
    /// polling (0: none), so this thread is one of them (invariant 7).
    static IN_SHARD: ThreadCell<usize> = const { ThreadCell::new(0) };

    /// The runner handing a new shard to tokio on this thread, as an
    /// address (0: none), or [`REFUSED`] once that shard was dropped
    /// meanwhile (invariant 8).
    static HANDING_OVER: ThreadCell<usize> = const { ThreadCell::new(0) };
}

#[cfg(not(loom))]
thread_local! {
    /// The cells the shard this thread is polling keeps (invariant 10).
    static WOKEN_HERE: RefCell<WokenHere> = const { RefCell::new(WokenHere::NONE) };

    /// The cell this thread is polling, for [`current_task`].
    static POLLED_CELL: ThreadCell<Option<Arc<Cell>>> = const { ThreadCell::new(None) };
}

// loom's, in its models: loom runs its threads on one of the OS's.
#[cfg(loom)]
loom::thread_local! {
    static WOKEN_HERE: RefCell<WokenHere> = RefCell::new(WokenHere::NONE);
    static POLLED_CELL: ThreadCell<Option<Arc<Cell>>> = ThreadCell::new(None);
}

/// `HANDING_OVER` once the runtime has refused the shard: no runner's
/// address.
const REFUSED: usize = 1;

/// Marks the thread as polling a shard of `runner`, until dropped.
struct InShard<'a> {
    outer: usize,
    runner: &'a Arc<Runner>,
}

impl<'a> InShard<'a> {
    fn enter(workers: usize, runner: &'a Arc<Runner>) -> InShard<'a> {
        WokenHere::enter(Arc::as_ptr(runner) as usize);
        InShard {
            outer: IN_SHARD.with(|in_shard| in_shard.replace(workers)),
            runner,
        }
    }
}

impl Drop for InShard<'_> {
    fn drop(&mut self) {
        IN_SHARD.with(|in_shard| in_shard.set(self.outer));
        // None, unless a shard's poll unwinds: nothing then polls the
        // cell it kept, so it goes to the queue.
        if let Some(cell) = WokenHere::leave() {
            self.runner.push(cell);
        }
    }
}

/// The cell a shard keeps (invariant 10), in [`WOKEN_HERE`].
struct WokenHere {
    /// The runner whose shard this thread is polling, as an address (0:
    /// none).
    runner: usize,
    /// Whether it may keep a cell now: while it polls the last cell of its
    /// batch, or the cell it kept, and keeps none yet.
    open: bool,
    kept: Option<Arc<Cell>>,
}

impl WokenHere {
    const NONE: WokenHere = WokenHere {
        runner: 0,
        open: false,
        kept: None,
    };

    /// A shard of `runner` starts polling on this thread. Shards never
    /// nest: one tokio task is polled at a time.
    fn enter(runner: usize) {
        WOKEN_HERE.with(|here| {
            let mut here = here.borrow_mut();
            debug_assert!(here.kept.is_none(), "a shard left a cell behind");
            here.runner = runner;
            here.open = false;
        });
    }

    /// The shard's poll ends: the cell it kept, none unless it unwinds.
    fn leave() -> Option<Arc<Cell>> {
        WOKEN_HERE.with(|here| {
            let mut here = here.borrow_mut();
            here.runner = 0;
            here.open = false;
            here.kept.take()
        })
    }

    /// Keeps `cell`, woken by a cell of `runner`, for the shard this thread
    /// is polling, if that is a shard of `runner` that may keep one; else
    /// hands it back, to be queued.
    fn keep(runner: usize, cell: Arc<Cell>) -> Option<Arc<Cell>> {
        let mut cell = Some(cell);
        // Not while the thread's locals are being destroyed, and never
        // re-entered: no code of a task runs while it is borrowed.
        let _ = WOKEN_HERE.try_with(|here| {
            if let Ok(mut here) = here.try_borrow_mut()
                && here.runner == runner
                && here.open
            {
                here.open = false;
                here.kept = cell.take();
            }
        });
        cell
    }

    /// The shard polls the last cell of its batch: it may keep a cell.
    fn open() {
        WOKEN_HERE.with(|here| here.borrow_mut().open = true);
    }

    /// The kept cell to poll next, if any; the shard may keep another
    /// while it polls it. With none, it keeps no more.
    fn next() -> Option<Arc<Cell>> {
        WOKEN_HERE.with(|here| {
            let mut here = here.borrow_mut();
            let cell = here.kept.take();
            here.open = cell.is_some();
            cell
        })
    }

    /// The shard yields: the cell it kept, and it keeps no more.
    fn take_kept() -> Option<Arc<Cell>> {
        WOKEN_HERE.with(|here| {
            let mut here = here.borrow_mut();
            here.open = false;
            here.kept.take()
        })
    }
}

/// Marks the thread as polling a runner's cell, until dropped; then
/// writes the cell's shield count back (invariant 9).
struct Polling<'a> {
    outer: Polled,
    outer_cell: Option<Arc<Cell>>,
    cell: &'a Cell,
}

impl<'a> Polling<'a> {
    fn enter(cell: &'a Arc<Cell>) -> Polling<'a> {
        let polled = Polled {
            runner: Arc::as_ptr(&cell.runner) as usize,
            cell: Arc::as_ptr(cell) as usize,
            shields: cell.shields.load(Relaxed),
        };
        let outer = POLLING.with(|polling| polling.replace(polled));
        let outer_cell = POLLED_CELL.with(|polled| polled.replace(Some(cell.clone())));
        Polling {
            outer,
            outer_cell,
            cell,
        }
    }
}

impl Drop for Polling<'_> {
    fn drop(&mut self) {
        let polled = POLLING.with(|polling| polling.replace(self.outer));
        self.cell.shields.store(polled.shields, Relaxed);
        let outer_cell = self.outer_cell.take();
        POLLED_CELL.with(|polled| polled.replace(outer_cell));
    }
}

/// The group task whose cell this thread is polling, as of now
/// ([`TaskInfo::current`](super::TaskInfo::current)).
pub(super) fn current_task() -> Option<super::TaskInfo> {
    // Taken out and put back: nothing else runs on this thread meanwhile.
    let cell = POLLED_CELL.with(ThreadCell::take)?;
    let (runner, meta) = (&cell.runner, &cell.meta);
    let info = meta
        .tag()
        .info(meta.id, &runner.name, runner.epoch, Instant::now());
    POLLED_CELL.with(|polled| polled.set(Some(cell)));
    Some(info)
}

/// When a cell of `runner` being polled now was first polled: the clock as
/// this shard's batch first read it (see [`BATCH_BORN`]), after the
/// runner's epoch.
fn batch_born(runner: &Arc<Runner>) -> u64 {
    let me = Arc::as_ptr(runner) as usize;
    BATCH_BORN.with(|batch| {
        let (read_for, born) = batch.get();
        if read_for == me {
            return born;
        }
        let born = since(runner.epoch, Instant::now());
        batch.set((me, born));
        born
    })
}

/// A shielded section entered inside the poll of a group's task: while one
/// is alive, a cancel's drop step passes that task by (invariant 9).
pub(crate) struct ShieldMark {
    cell: usize,
}

impl ShieldMark {
    /// Counts a shielded section in the task being polled, if the caller
    /// is polling one of a group's tasks.
    pub(crate) fn enter() -> Option<ShieldMark> {
        POLLING.with(|polling| {
            let mut polled = polling.get();
            if polled.cell == 0 {
                return None;
            }
            polled.shields += 1;
            polling.set(polled);
            Some(ShieldMark { cell: polled.cell })
        })
    }
}

impl Drop for ShieldMark {
    fn drop(&mut self) {
        POLLING.with(|polling| {
            let mut polled = polling.get();
            // Dropped anywhere but in its own task's poll, the task's
            // future is being dropped: its count no longer matters.
            if polled.cell == self.cell {
                polled.shields -= 1;
                polling.set(polled);
            }
        });
    }
}

/// A tokio task that runs a runner's cells.
struct Shard {
    runner: Arc<Runner>,
    /// The cells it took and has not polled yet, open to the other
    /// shards (invariant 11); its key in `Queue::locals`.
    local: Arc<Local>,
    key: usize,
    /// Its runtime's number of workers (invariant 7).
    workers: usize,
    finished: bool,
    /// Counts it among the runner's live tokio tasks (invariant 13).
    _lease: Lease,
}

impl Future for Shard {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let _in_shard = InShard::enter(this.workers, &this.runner);

        let mut polled = 0;
        loop {
            let cell = match next_cell(&this.local) {
                Some(cell) => cell,
                None => match this.runner.take(&this.local, this.key, cx.waker()) {
                    Take::Cell(cell) => {
                        BATCH_BORN.with(|batch| batch.set((0, 0)));
                        cell
                    }
                    Take::Park => return Poll::Pending,
                    Take::Exit => {
                        this.finished = true;
                        return Poll::Ready(());
                    }
                },
            };
            this.local.beat.fetch_add(1, Relaxed);
            cell.run();
            this.local.beat.fetch_add(1, Relaxed);
            polled += 1;
            if polled >= TURN || !tokio::task::coop::has_budget_remaining() {
                let kept = WokenHere::take_kept();
                this.runner.give_back(&this.local, kept);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    }
}

/// A shard's next cell to poll: from its own queue, then the one it kept
/// (invariant 10). Lets the shard keep a cell while it polls the last cell
/// of its own queue, or the kept one.
#[inline]
fn next_cell(local: &Local) -> Option<Arc<Cell>> {
    let mut cells = local.lock();
    match cells.pop_front() {
        Some(cell) => {
            if cells.is_empty() {
                WokenHere::open();
            }
            Some(cell)
        }
        None => {
            drop(cells);
            WokenHere::next()
        }
    }
}

/// A shard's own queue: the cells it took from the runner's and has not
/// polled yet, where an idle shard steals from (invariant 11), and its
/// heartbeat for the stall watch (invariant 12).
struct Local {
    cells: Mutex<VecDeque<Arc<Cell>>>,
    /// Counts the polls its shard starts and ends: odd while it polls.
    beat: AtomicUsize,
    /// `beat` as the stall watch last read it.
    seen: AtomicUsize,
}

impl Local {
    fn new() -> Arc<Local> {
        Arc::new(Local {
            // Allocated at its first share of more than one cell: a shard
            // of a small group never needs it.
            cells: Mutex::new(VecDeque::new()),
            beat: AtomicUsize::new(0),
            seen: AtomicUsize::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Arc<Cell>>> {
        // No user code runs under this lock.
        self.cells.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether its shard has been inside one poll since the watch's last
    /// look, and records what it sees now.
    fn stalled(&self) -> bool {
        let beat = self.beat.load(Relaxed);
        let seen = self.seen.swap(beat, Relaxed);
        beat % 2 == 1 && beat == seen
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let me = Arc::as_ptr(&self.runner) as usize;
        if HANDING_OVER.with(|handing| handing.get()) == me {
            // Refused by a runtime that has shut down: never started, and
            // its spawner decides (invariant 8).
            HANDING_OVER.with(|handing| handing.set(REFUSED));
        } else {
            self.runner.close(&self.local, Some(self.key));
        }
    }
}

/// Counts a tokio task the runner started (a shard, a grace's timer, a
/// no-op that frees a LIFO slot) while its future is alive (invariant 13).
struct Lease(Arc<Runner>);

impl Lease {
    fn new(runner: &Arc<Runner>) -> Lease {
        runner.lock().leases.alive += 1;
        Lease(runner.clone())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let runner = &self.0;
        let none_alive = runner.lock().leases.end(thread_mark());
        LeaseEnd::defer(runner.clone());
        if none_alive {
            // A waiter on this thread may go on at once (invariant 13).
            runner.quiet.notify_waiters();
        }
    }
}

/// The runner's tokio tasks as [`Runner::quiet`] sees them (invariant 13),
/// under the queue lock: how many are alive, and how many ended without
/// tokio having taken them off its list for sure yet, and on which thread
/// they all ended ([`MIXED`] if not on one).
#[derive(Default)]
struct Leases {
    alive: usize,
    unconfirmed: usize,
    ended_on: usize,
}

/// `Leases::ended_on` of ends on more than one thread: no thread's mark.
const MIXED: usize = usize::MAX;

impl Leases {
    /// A lease ended on the thread `here`; returns whether none is alive.
    fn end(&mut self, here: usize) -> bool {
        self.alive -= 1;
        self.ended_on = if self.unconfirmed == 0 || self.ended_on == here {
            here
        } else {
            MIXED
        };
        self.unconfirmed += 1;
        self.alive == 0
    }

    /// tokio has taken an ended lease's task off its list; returns whether
    /// that makes the runner quiet for every thread.
    fn confirm(&mut self) -> bool {
        self.unconfirmed -= 1;
        self.unconfirmed == 0 && self.alive == 0
    }

    /// Whether a waiter on the thread `here` sees no task of the runner
    /// alive: none is, and every end tokio may not have finished with
    /// happened on this thread, whose task has returned since (one task
    /// runs on a thread at a time), or there is none.
    fn quiet_for(&self, here: usize) -> bool {
        self.alive == 0 && (self.unconfirmed == 0 || self.ended_on == here)
    }
}

/// A lease's end, confirmed once tokio has taken its task off its list
/// (invariant 13). A lease ends inside its task's future, on the thread
/// that polls or drops it, and tokio takes the task off its list only once
/// that poll returns: a waiter of [`Runner::quiet`] on another thread
/// could read the runtime's count of alive tasks before that. On a worker,
/// tokio defers the wake-up of a task that yields
/// ([`tokio::task::yield_now`]) until the task it is polling has returned;
/// so the end is confirmed by a waker handed to one, when it is woken or
/// dropped (unwoken, if the runtime shuts down first). Elsewhere the yield
/// is over at once and the end is confirmed then.
struct LeaseEnd(Arc<Runner>);

impl LeaseEnd {
    fn defer(runner: Arc<Runner>) {
        let waker = Waker::from(Arc::new(LeaseEnd(runner)));
        let yielded = std::pin::pin!(tokio::task::yield_now());
        // Ready or not, the end is confirmed with the last clone of
        // `waker`: here, or where tokio keeps it.
        let _ = yielded.poll(&mut task::Context::from_waker(&waker));
    }
}

impl Wake for LeaseEnd {
    fn wake(self: Arc<Self>) {}
}

impl Drop for LeaseEnd {
    fn drop(&mut self) {
        let runner = &self.0;
        if runner.lock().leases.confirm() {
            runner.quiet.notify_waiters();
        }
    }
}

/// Tells threads apart: the address of a thread-local, unique among live
/// threads and never 0.
pub(super) fn thread_mark() -> usize {
    thread_local! {
        static MARK: u8 = const { 0 };
    }
    MARK.with(|mark| std::ptr::from_ref(mark).addr())
}

/// One task of the group: its future and its scheduling state.
pub(super) struct Cell {
    state: TaskState,
    body: Mutex<Option<Body>>,
    runner: Arc<Runner>,
    /// Its key in `parked`, once registered (invariant 3). Written and read
    /// under the queue lock, or by the holder of its queue entry.
    parked_key: AtomicUsize,
    /// The shielded sections its future is inside (invariant 9). Written
    /// by the holder of its queue entry only; read by snapshots too.
    shields: AtomicU32,
    /// Who the task is.
    meta: Meta,
}

impl Cell {
    /// Polls the cell once, or ends it if aborted, cancelled or closed. The
    /// caller held its queue entry (invariant 1).
    fn run(self: Arc<Self>) {
        let aborted = self.state.start();
        if self.must_end() || (aborted && !self.is_shielded()) {
            return self.end();
        }
        let waker = Waker::from(self.clone());
        let mut cx = task::Context::from_waker(&waker);
        let mut body = self.body.lock().unwrap_or_else(PoisonError::into_inner);
        let ready = match body.as_mut() {
            Some(fut) => {
                let _polling = Polling::enter(&self);
                #[cfg(feature = "tracing")]
                let _entered = self.meta.span.enter();
                self.meta.polled(|| batch_born(&self.runner));
                // The group's `TaskFuture` catches the user's panics; what
                // could still unwind here is a panic the group's own
                // bookkeeping resumes after recording it: the task has
                // already reported its outcome.
                catch_unwind(AssertUnwindSafe(|| {
                    fut.as_mut().poll_task(&mut cx, &self.meta)
                }))
                .map_or(true, |poll| poll.is_ready())
            }
            None => true,
        };
        drop(body);
        if ready {
            return self.end_finished();
        }
        if self.parked_key.load(Relaxed) == NOT_PARKED {
            self.runner.park(&self);
        }
        if self.must_end() {
            // Cancelled or closed before `cancel` or `close` could see it,
            // or its last shielded section just ended (invariant 9).
            return self.end();
        }
        if self.state.stop() {
            let runner = self.runner.clone();
            runner.push(self);
        }
    }

    /// Whether the cell must not be polled again: its runtime is shutting
    /// down, or the drop step came and it is not shielded (invariant 9).
    fn must_end(&self) -> bool {
        self.runner.closed.load(SeqCst)
            || (self.runner.cancelled.load(SeqCst) && !self.is_shielded())
    }

    /// Ends the cell: drops its future (if a poll has not finished it) and
    /// counts it out. Called by the holder of its queue entry (or while it
    /// runs), once: `ENDED` keeps it from being queued again.
    fn end(&self) {
        let body = self.take_ended();
        self.abandon(body);
        self.unpark();
    }

    /// [`Cell::end`] after a poll that returned `Ready`: the future has
    /// reported its task, and is only dropped.
    #[inline]
    fn end_finished(&self) {
        let body = self.take_ended();
        drop(catch_unwind(AssertUnwindSafe(move || drop(body))));
        self.unpark();
    }

    /// Marks the cell ended (never queued again) and takes its future.
    #[inline]
    fn take_ended(&self) -> Option<Body> {
        self.state.end();
        self.body
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    #[inline]
    fn unpark(&self) {
        let key = self.parked_key.load(Relaxed);
        if key != NOT_PARKED {
            self.runner.unpark(key);
        }
    }
}

impl Cell {
    /// Who the task is.
    pub(super) fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Whether the task waits for a wake-up (parked), as of now.
    pub(super) fn is_idle(&self) -> bool {
        self.state.is_idle()
    }

    /// Whether the task has ended (its future dropped).
    pub(super) fn is_ended(&self) -> bool {
        self.state.is_ended()
    }

    /// Whether the task is inside a shielded section, as of its last poll.
    pub(super) fn is_shielded(&self) -> bool {
        self.shields.load(Relaxed) > 0
    }

    /// Drops a future taken out of the cell, telling it first if it had
    /// not finished. `TaskFuture` catches panics in its own destructor.
    fn abandon(&self, body: Option<Body>) {
        if let Some(mut body) = body {
            drop(catch_unwind(AssertUnwindSafe(move || {
                #[cfg(feature = "tracing")]
                let _entered = self.meta.span.enter();
                body.as_mut().abandon(&self.meta);
                drop(body);
            })));
        }
    }
}

impl Drop for Cell {
    /// Every path of the runner ends a cell before letting go of it; a
    /// cell dropped with its future still in it (none known) still reports
    /// its task, with who it was.
    fn drop(&mut self) {
        let body = self
            .body
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.abandon(body);
    }
}

impl Wake for Cell {
    fn wake(self: Arc<Self>) {
        if self.state.schedule() {
            let runner = self.runner.clone();
            runner.push_woken(self);
        }
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.state.schedule() {
            self.runner.push_woken(self.clone());
        }
    }
}

const SCHEDULED: u8 = 1;
const RUNNING: u8 = 2;
const NOTIFIED: u8 = 4;
const CANCELLED: u8 = 8;
const ENDED: u8 = 16;

/// A cell's scheduling state: whether it is queued, being polled, woken
/// while polled, aborted, or ended. A transition that returns `true`
/// obliges its caller to push the cell (invariants 1 and 2).
pub(crate) struct TaskState(AtomicU8);

impl TaskState {
    pub(crate) fn new() -> TaskState {
        TaskState(AtomicU8::new(0))
    }

    fn update(&self, f: impl FnMut(u8) -> Option<u8>) -> Result<u8, u8> {
        self.0.fetch_update(AcqRel, Acquire, f)
    }

    fn is_ended(&self) -> bool {
        self.0.load(Relaxed) & ENDED != 0
    }

    /// Neither queued, polled nor ended: waiting for a wake-up.
    fn is_idle(&self) -> bool {
        self.0.load(Relaxed) & (SCHEDULED | RUNNING | NOTIFIED | ENDED) == 0
    }

    /// A wake-up: idle → scheduled (push it); while polled → notified.
    ///
    /// A wake that finds a poll already pending (`SCHEDULED` or `NOTIFIED`)
    /// still writes the state back unchanged: that write releases what the
    /// waker did before waking to the pending poll's `start` (std's `Waker`
    /// contract: a wake happens-before the poll it causes). Giving up
    /// without a write would let that poll read stale data and park for
    /// good, the bug tokio fixed in tokio-rs/tokio#7622.
    pub(crate) fn schedule(&self) -> bool {
        let prev = self.update(|s| {
            if s & ENDED != 0 {
                None
            } else if s & (SCHEDULED | NOTIFIED) != 0 {
                Some(s)
            } else if s & RUNNING != 0 {
                Some(s | NOTIFIED)
            } else {
                Some(s | SCHEDULED)
            }
        });
        prev.is_ok_and(|s| s & (SCHEDULED | NOTIFIED | RUNNING) == 0)
    }

    /// An abort: marks the cell cancelled, and schedules it if idle (push
    /// it); a cell being polled is queued again when the poll returns.
    pub(crate) fn abort(&self) -> bool {
        self.0.fetch_or(CANCELLED, AcqRel);
        self.schedule()
    }

    /// Taken from the queue: scheduled → running. Returns whether it was
    /// aborted; then it must not be polled, unless it is shielded
    /// (invariant 9): the abort is used up, so that a shielded cell that
    /// returns `Pending` goes idle instead of being queued again at once.
    pub(crate) fn start(&self) -> bool {
        let prev = self.0.fetch_xor(SCHEDULED | RUNNING, AcqRel);
        debug_assert!(
            prev & (SCHEDULED | RUNNING) == SCHEDULED,
            "a cell ran without being queued"
        );
        if prev & CANCELLED != 0 {
            // An abort meanwhile finds the cell running, and marks it
            // notified: it is queued again all the same.
            self.0.fetch_and(!CANCELLED, AcqRel);
        }
        prev & CANCELLED != 0
    }

    /// A poll returned `Pending`: running → idle, or back to scheduled
    /// (push it) when woken or aborted meanwhile.
    pub(crate) fn stop(&self) -> bool {
        let prev = self.update(|s| {
            if s & (NOTIFIED | CANCELLED) != 0 {
                Some((s & !(RUNNING | NOTIFIED)) | SCHEDULED)
            } else {
                Some(s & !RUNNING)
            }
        });
        prev.is_ok_and(|s| s & (NOTIFIED | CANCELLED) != 0)
    }

    /// Ended: no transition queues it again.
    pub(crate) fn end(&self) {
        self.0.fetch_or(ENDED, AcqRel);
    }
}
