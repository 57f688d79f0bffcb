//! Runs a group's async tasks inside a few tokio tasks, its *shards*,
//! instead of one tokio task each.
//!
//! A tokio task costs a spawn, a join handle, a wake-up of a parked worker
//! and a free on another thread: most of what a fan-out of small tasks
//! spends. Here a task is a [`Cell`]: its future (boxed), a small state
//! machine and a [`Waker`] built from the cell itself. Cells ready to run
//! wait in one queue per group; up to one shard per runtime worker takes
//! them out in small batches and polls them. So the group keeps tokio's
//! parallelism, and a task costs about a tenth of a tokio task.
//!
//! What each task keeps, compared with a tokio task of its own:
//!
//! - Its panic: a cell's future is the group's `TaskFuture`, which catches
//!   a panic in every poll and in its destructor, and reports it as the
//!   task's outcome. Nothing unwinds into a shard.
//! - Its cancel: [`Cell::abort`] marks the cell and queues it if idle; the
//!   shard that takes it drops its future unpolled, as tokio's abort does.
//! - Its progress when a sibling blocks its thread: a shard takes at most
//!   [`BATCH`] cells at a time, so a task that blocks holds back at most
//!   `BATCH - 1` others; every other ready cell stays in the shared queue,
//!   and an idle shard takes it. A task woken later goes back to the shared
//!   queue too, never to the shard that polled it last.
//! - Its fairness: a shard polls at most [`TURN`] cells, or fewer when
//!   tokio's cooperative budget runs out, and then yields to tokio with
//!   its unpolled cells back at the head of the queue.
//!
//! # Invariants
//!
//! 1. A cell is in the queue (or a shard's batch) at most once: only the
//!    caller that moves its state to `SCHEDULED` pushes it ([`TaskState`]).
//! 2. A wake-up is never lost: a wake while the cell is being polled sets
//!    `NOTIFIED`, and the shard queues the cell again after the poll.
//! 3. A shard parks (leaves its waker in `idle`) or exits only under the
//!    queue lock and after seeing the queue empty; a push under the same
//!    lock wakes an idle shard, or spawns one when fewer than the limit
//!    exist. So a queued cell always has a shard coming for it.
//! 4. Shards exit once no cell is live (`live`, counted from
//!    [`Cell::new`] to its end), so a finished group leaves no tokio task.
//!    While cells are live and parked, idle shards stay parked.
//! 5. A shard dropped unfinished means its runtime is shutting down: the
//!    runner closes, drops every queued cell's future, has its owner (the
//!    group) abort every other cell, and from then on drops each cell's
//!    future where it is scheduled, as tokio drops its tasks at shutdown.
//!
//! # Lock order
//!
//! The queue lock is never held while polling or dropping a cell's future
//! (user code), waking a waker or spawning a shard. A cell's body lock is
//! held only by the shard running it, and never while taking the queue
//! lock.

use std::cell::Cell as ThreadCell;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::Ordering::{AcqRel, Acquire};
use std::sync::{Arc, OnceLock, PoisonError, Weak};
use std::task::{self, Poll, Wake, Waker};

use tokio::runtime::Handle;

use crate::context::CancelHook;
use crate::loom::{AtomicU8, AtomicUsize, Mutex, MutexGuard};

/// What a cell runs: the group's `TaskFuture` around the user's future.
pub(super) type Body = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How many cells a shard takes from the queue at once: the most a task
/// that blocks its thread can hold back.
const BATCH: usize = 16;

/// How many cells a shard polls before it yields to tokio.
const TURN: usize = 128;

/// A group's shards and their shared queue of cells ready to run.
pub(super) struct Runner {
    queue: Mutex<Queue>,
    /// Cells created and not yet ended (invariant 4).
    live: AtomicUsize,
    /// The runtime the group's first task was spawned on: its shards run
    /// there.
    runtime: OnceLock<(Handle, usize)>,
    /// The group: it aborts every cell when the runtime shuts down.
    owner: Weak<dyn CancelHook>,
}

struct Queue {
    ready: VecDeque<Arc<Cell>>,
    /// Shards spawned and not exited.
    shards: usize,
    /// Wakers of parked shards.
    idle: Vec<Waker>,
    /// The runtime is shutting down (invariant 5).
    closed: bool,
}

impl Runner {
    pub(super) fn new(owner: Weak<dyn CancelHook>) -> Arc<Runner> {
        Arc::new(Runner {
            queue: Mutex::new(Queue {
                ready: VecDeque::new(),
                shards: 0,
                idle: Vec::new(),
                closed: false,
            }),
            live: AtomicUsize::new(0),
            runtime: OnceLock::new(),
            owner,
        })
    }

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
        if self.runtime.get().is_none() {
            let handle = Handle::current();
            let workers = handle.metrics().num_workers().max(1);
            let _ = self.runtime.set((handle, workers));
        }
    }

    /// Whether the caller is polling one of this runner's cells.
    pub(super) fn is_running_here(self: &Arc<Self>) -> bool {
        POLLING.with(|running| running.get() == Arc::as_ptr(self) as usize)
    }

    /// Queues a cell whose state says it must be pushed (invariant 1).
    fn push(self: &Arc<Self>, cell: Arc<Cell>) {
        let mut queue = self.lock();
        if queue.closed {
            drop(queue);
            cell.end();
            return;
        }
        queue.ready.push_back(cell);
        let wake = queue.idle.pop();
        let spawn = wake.is_none() && queue.shards < self.max_shards();
        if spawn {
            queue.shards += 1;
        }
        drop(queue);
        if let Some(shard) = wake {
            shard.wake();
        } else if spawn {
            self.spawn_shard();
        }
    }

    /// Queues many cells at once (a cancel): one lock, and every idle
    /// shard woken.
    fn push_all(self: &Arc<Self>, cells: Vec<Arc<Cell>>) {
        if cells.is_empty() {
            return;
        }
        let mut queue = self.lock();
        if queue.closed {
            drop(queue);
            cells.into_iter().for_each(|cell| cell.end());
            return;
        }
        queue.ready.extend(cells);
        let idle = std::mem::take(&mut queue.idle);
        let spawn = idle.is_empty() && queue.shards == 0;
        if spawn {
            queue.shards += 1;
        }
        drop(queue);
        idle.into_iter().for_each(Waker::wake);
        if spawn {
            self.spawn_shard();
        }
    }

    fn max_shards(&self) -> usize {
        self.runtime.get().map_or(1, |(_, workers)| *workers)
    }

    fn spawn_shard(self: &Arc<Self>) {
        let shard = Shard {
            runner: self.clone(),
            batch: VecDeque::with_capacity(BATCH),
            finished: false,
        };
        match self.runtime.get() {
            // A runtime shutting down drops the shard unpolled: it closes
            // the runner (invariant 5).
            Some((handle, _)) => drop(handle.spawn(shard)),
            None => drop(shard),
        }
    }

    /// A shard's next batch, or why it has none.
    fn take(&self, batch: &mut VecDeque<Arc<Cell>>, waker: &Waker) -> Take {
        let mut queue = self.lock();
        if queue.closed {
            queue.shards -= 1;
            return Take::Exit;
        }
        if queue.ready.is_empty() {
            if self.live.load(Acquire) == 0 {
                queue.shards -= 1;
                return Take::Exit;
            }
            if !queue.idle.iter().any(|idle| idle.will_wake(waker)) {
                queue.idle.push(waker.clone());
            }
            return Take::Park;
        }
        let n = queue.ready.len().min(BATCH);
        batch.extend(queue.ready.drain(..n));
        // More left than this shard takes: bring a parked one in.
        let wake = if queue.ready.is_empty() {
            None
        } else {
            queue.idle.pop()
        };
        drop(queue);
        if let Some(shard) = wake {
            shard.wake();
        }
        Take::Batch
    }

    /// Puts a yielding shard's unpolled cells back at the head of the
    /// queue, for any shard to take.
    fn give_back(self: &Arc<Self>, batch: &mut VecDeque<Arc<Cell>>) {
        if batch.is_empty() {
            return;
        }
        let mut queue = self.lock();
        if queue.closed {
            drop(queue);
            batch.drain(..).for_each(|cell| cell.end());
            return;
        }
        while let Some(cell) = batch.pop_back() {
            queue.ready.push_front(cell);
        }
        let wake = queue.idle.pop();
        drop(queue);
        if let Some(shard) = wake {
            shard.wake();
        }
    }

    /// A cell ended: when it was the last, parked shards exit
    /// (invariant 4).
    fn ended(&self) {
        if self.live.fetch_sub(1, AcqRel) == 1 {
            let idle = std::mem::take(&mut self.lock().idle);
            idle.into_iter().for_each(Waker::wake);
        }
    }

    /// A shard was dropped unfinished: the runtime is shutting down
    /// (invariant 5).
    fn close(&self, batch: &mut VecDeque<Arc<Cell>>) {
        let mut queue = self.lock();
        queue.closed = true;
        queue.shards -= 1;
        let ready = std::mem::take(&mut queue.ready);
        let idle = std::mem::take(&mut queue.idle);
        drop(queue);
        idle.into_iter().for_each(Waker::wake);
        batch.drain(..).chain(ready).for_each(|cell| cell.end());
        // Parked cells: the group aborts them, and the closed runner drops
        // them where they are scheduled.
        if let Some(owner) = self.owner.upgrade() {
            owner.on_cancel();
        }
    }

    /// Marks `cells` cancelled and queues the idle ones, so that shards drop
    /// their futures unpolled (tokio's abort, for many at once).
    pub(super) fn abort(self: &Arc<Self>, cells: Vec<Arc<Cell>>) {
        let idle: Vec<Arc<Cell>> = cells.into_iter().filter(|cell| cell.state.abort()).collect();
        self.push_all(idle);
    }
}

enum Take {
    Batch,
    Park,
    Exit,
}

thread_local! {
    /// The runner whose cell this thread is polling, as an address (0:
    /// none): how `wait` knows it was called from its own group's task.
    static POLLING: ThreadCell<usize> = const { ThreadCell::new(0) };
}

/// Marks the thread as polling a runner's cell, until dropped.
struct Running {
    outer: usize,
}

impl Running {
    fn enter(runner: &Arc<Runner>) -> Running {
        let outer = POLLING.with(|running| running.replace(Arc::as_ptr(runner) as usize));
        Running { outer }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        POLLING.with(|running| running.set(self.outer));
    }
}

/// A tokio task that runs a runner's cells.
struct Shard {
    runner: Arc<Runner>,
    batch: VecDeque<Arc<Cell>>,
    finished: bool,
}

impl Future for Shard {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut polled = 0;
        loop {
            match this.runner.take(&mut this.batch, cx.waker()) {
                Take::Batch => {}
                Take::Park => return Poll::Pending,
                Take::Exit => {
                    this.finished = true;
                    return Poll::Ready(());
                }
            }
            while let Some(cell) = this.batch.pop_front() {
                cell.run();
                polled += 1;
                if polled >= TURN || !tokio::task::coop::has_budget_remaining() {
                    this.runner.give_back(&mut this.batch);
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        if !self.finished {
            self.runner.close(&mut self.batch);
        }
    }
}

/// One task of the group: its future and its scheduling state.
pub(super) struct Cell {
    state: TaskState,
    body: Mutex<Option<Body>>,
    runner: Arc<Runner>,
}

impl Cell {
    /// A new cell, live (invariant 4) and not yet queued: [`Cell::start`]
    /// queues it.
    pub(super) fn new(runner: &Arc<Runner>, body: Body) -> Arc<Cell> {
        runner.live.fetch_add(1, AcqRel);
        Arc::new(Cell {
            state: TaskState::new(),
            body: Mutex::new(Some(body)),
            runner: runner.clone(),
        })
    }

    /// Queues the cell for its first poll (unless an abort already did).
    pub(super) fn start(self: Arc<Self>) {
        self.wake();
    }

    /// Polls the cell once, or drops its future if it was aborted.
    fn run(self: Arc<Self>) {
        if self.state.start() {
            return self.end();
        }
        let waker = Waker::from(self.clone());
        let mut cx = task::Context::from_waker(&waker);
        let mut body = self.body.lock().unwrap_or_else(PoisonError::into_inner);
        let ready = match body.as_mut() {
            Some(fut) => {
                let _running = Running::enter(&self.runner);
                // The group's `TaskFuture` catches the user's panics; what
                // could still unwind here is a panic the group's own
                // bookkeeping resumes after recording it: the task has
                // already reported its outcome.
                catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)))
                    .map_or(true, |poll| poll.is_ready())
            }
            None => true,
        };
        drop(body);
        if ready {
            self.end();
        } else if self.state.stop() {
            let runner = self.runner.clone();
            runner.push(self);
        }
    }

    /// Ends the cell: drops its future (if a poll has not finished it) and
    /// counts it out. Called by the one holder of the cell's queue entry:
    /// the shard that took it, or, once the runner is closed, whoever
    /// would have queued it.
    fn end(&self) {
        self.state.end();
        let body = self
            .body
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // `TaskFuture` catches panics in its own destructor.
        drop(catch_unwind(AssertUnwindSafe(move || drop(body))));
        self.runner.ended();
    }

}

impl Wake for Cell {
    fn wake(self: Arc<Self>) {
        if self.state.schedule() {
            let runner = self.runner.clone();
            runner.push(self);
        }
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.state.schedule() {
            self.runner.push(self.clone());
        }
    }
}

const SCHEDULED: u8 = 1;
const RUNNING: u8 = 2;
const NOTIFIED: u8 = 4;
const CANCELLED: u8 = 8;
const ENDED: u8 = 16;

/// A cell's scheduling state: whether it is queued, being polled, woken
/// while polled, aborted, or ended. Each transition that returns `true`
/// obliges its caller to push the cell (invariants 1 and 2).
pub(super) struct TaskState(AtomicU8);

impl TaskState {
    pub(super) fn new() -> TaskState {
        TaskState(AtomicU8::new(0))
    }

    fn update(&self, f: impl Fn(u8) -> Option<u8>) -> Option<u8> {
        self.0.fetch_update(AcqRel, Acquire, f).ok()
    }

    /// A wake-up: idle → scheduled (push it); while polled → notified.
    pub(super) fn schedule(&self) -> bool {
        let prev = self.update(|s| {
            if s & (ENDED | SCHEDULED | NOTIFIED) != 0 {
                None
            } else if s & RUNNING != 0 {
                Some(s | NOTIFIED)
            } else {
                Some(s | SCHEDULED)
            }
        });
        prev.is_some_and(|s| s & RUNNING == 0)
    }

    /// An abort: marks the cell cancelled, and schedules it if idle.
    pub(super) fn abort(&self) -> bool {
        self.0.fetch_or(CANCELLED, AcqRel);
        self.schedule()
    }

    /// Taken from the queue: scheduled → running. Returns whether it was
    /// aborted (then it is not polled).
    pub(super) fn start(&self) -> bool {
        let prev = self
            .update(|s| Some((s & !SCHEDULED) | RUNNING))
            .unwrap_or_default();
        debug_assert!(prev & SCHEDULED != 0, "a cell ran without being queued");
        prev & CANCELLED != 0
    }

    /// A poll returned `Pending`: running → idle, or back to scheduled
    /// (push it) when woken or aborted meanwhile.
    pub(super) fn stop(&self) -> bool {
        let prev = self
            .update(|s| {
                if s & (NOTIFIED | CANCELLED) != 0 {
                    Some((s & !(RUNNING | NOTIFIED)) | SCHEDULED)
                } else {
                    Some(s & !RUNNING)
                }
            })
            .unwrap_or_default();
        prev & (NOTIFIED | CANCELLED) != 0
    }

    /// Ended: no transition pushes it again.
    pub(super) fn end(&self) {
        self.0.fetch_or(ENDED, AcqRel);
    }
}
