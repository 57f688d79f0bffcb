//! The runner's queue: the cells ready to run, the parked ones, the
//! shards counted and their own queues, under one lock (invariants 1, 3–6,
//! 8, 11, 12), and the runner's operations on it.

use super::*;

/// What the queue lock guards. `ready` and `parked` give back what a burst
/// made them grow to once they drain, down to [`QUEUE_KEPT`] entries.
pub(super) struct Queue {
    pub(super) ready: VecDeque<Arc<TaskCell>>,
    /// Every cell that has ever returned `Pending` and not ended
    /// (invariant 3).
    pub(super) parked: Slab<Arc<TaskCell>>,
    /// Shards spawned and not exited.
    pub(super) shards: usize,
    /// Wakers of parked shards.
    pub(super) idle: Vec<Waker>,
    /// Every counted shard's own queue, to steal from (invariant 11).
    pub(super) locals: Slab<Arc<Local>>,
    /// The tokio tasks it started (invariant 13).
    pub(super) leases: Leases,
    /// Shards found inside one poll for at least [`STALL`] at the stall
    /// watch's last look, and when that was (invariant 12).
    pub(super) stalled: usize,
    pub(super) watched: Option<std::time::Instant>,
    /// The runtime the shards run on (invariant 8), and its number of
    /// workers: one shard per worker, more while some are stalled
    /// (invariant 12).
    pub(super) runtime: Option<Handle>,
    pub(super) workers: usize,
    /// In the group's loom models, where no tokio runtime runs shards: the
    /// shards started (or woken) and not yet taken up by a model thread
    /// ([`Runner::for_models`]). `None` everywhere else.
    #[cfg(loom)]
    pub(super) modelled: Option<Vec<(Arc<Local>, usize)>>,
}

impl Queue {
    /// Runs the shards on `runtime` from now on (invariant 8).
    pub(super) fn bind(&mut self, runtime: Handle) {
        self.workers = runtime.metrics().num_workers().max(1);
        self.runtime = Some(runtime);
    }

    /// Where a new shard is to run, and that runtime's number of workers.
    pub(super) fn shard_runtime(&self) -> Option<(Handle, usize)> {
        Some((self.runtime.clone()?, self.workers))
    }

    /// `ready` drained after a burst: swapped for a small one. The old one
    /// is returned, to be freed without the lock.
    #[inline]
    pub(super) fn shrink_ready(&mut self) -> Option<VecDeque<Arc<TaskCell>>> {
        (self.ready.is_empty() && self.ready.capacity() > QUEUE_KEPT)
            .then(|| std::mem::replace(&mut self.ready, VecDeque::with_capacity(QUEUE_KEPT)))
    }

    /// The same for `parked`.
    #[inline]
    pub(super) fn shrink_parked(&mut self) -> Option<Slab<Arc<TaskCell>>> {
        (self.parked.is_empty() && self.parked.capacity() > QUEUE_KEPT)
            .then(|| std::mem::replace(&mut self.parked, Slab::with_capacity(QUEUE_KEPT)))
    }

    /// Counts a new shard in, before it is spawned.
    pub(super) fn new_shard(&mut self) -> NewShard {
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
    pub(super) fn leave(&mut self, key: usize) {
        self.shards -= 1;
        self.locals.try_remove(key);
    }

    /// Who is to take cells that the caller leaves: an idle shard, else a
    /// new one while there are fewer than one per worker, plus one per
    /// stalled shard when the caller is a shard and may `watch`
    /// (invariant 12).
    #[inline]
    pub(super) fn help(&mut self, watch: bool) -> Help {
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

    /// Whether cells wait for a shard: in the queue, or in a shard's own.
    pub(super) fn has_backlog(&self) -> bool {
        !self.ready.is_empty()
            || self
                .locals
                .iter()
                .any(|(_, local)| !local.lock().is_empty())
    }

    /// The stall watch: how many shards have been inside one poll since
    /// its last look, at most one look per [`STALL`] (invariant 12).
    pub(super) fn stalls(&mut self) -> usize {
        // The group's models play shards on loom's threads, where the
        // clock would make one exploration differ from the next.
        #[cfg(loom)]
        if self.modelled.is_some() {
            return 0;
        }
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
    pub(super) fn steal(&mut self, local: &Local, key: usize) -> Option<Arc<TaskCell>> {
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

impl Runner {
    /// Queues a cell whose state says it must be pushed (invariant 1).
    #[inline]
    pub(super) fn push(self: &Arc<Self>, cell: Arc<TaskCell>) {
        // Only a new task may move the runner (invariant 8).
        let _ = self.enqueue(cell, false);
    }

    /// Queues a cell a waker scheduled, unless the shard this thread is
    /// polling keeps it (invariant 10).
    #[inline]
    pub(super) fn push_woken(self: &Arc<Self>, cell: Arc<TaskCell>) {
        if let Some(cell) = WokenHere::keep(Arc::as_ptr(self) as usize, cell) {
            self.push(cell);
        }
    }

    /// [`Runner::push`], and for a new task (`fresh`), pushed by the thread
    /// spawning it, the move to that thread's runtime if the group's has
    /// shut down (invariant 8).
    #[inline]
    pub(super) fn enqueue(
        self: &Arc<Self>,
        cell: Arc<TaskCell>,
        fresh: bool,
    ) -> Result<(), RuntimeGone> {
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
    #[inline]
    pub(super) fn bring(self: &Arc<Self>, help: Help, fresh: bool) -> Result<(), RuntimeGone> {
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
    pub(super) fn reopen(&self, queue: &mut Queue, runtime: Option<Handle>) {
        debug_assert_eq!(queue.shards, 0, "a shard of the old runtime is left");
        if let Some(runtime) = runtime {
            queue.bind(runtime);
        }
        self.closed.store(false, SeqCst);
    }

    /// Aborts every parked cell and queues each one its abort finds idle
    /// (a cancel), in one hold of the queue lock, with no list of them
    /// made first (for a million parked tasks, two lists of 8 MB and a
    /// second pass over cold cells). Then every idle shard is woken, and
    /// new shards are started up to one per worker. An abort is a change
    /// of the cell's state, never user code, so it may run under the lock;
    /// a cell registered after the lock is released sees `cancelled`, set
    /// before it (invariant 4). A closed runner ends the cells instead,
    /// where they would be queued (invariant 6).
    pub(super) fn abort_parked(self: &Arc<Self>) {
        let mut queue = self.lock();
        let closed = self.closed.load(SeqCst);
        let Queue { parked, ready, .. } = &mut *queue;
        let before = ready.len();
        let mut ended = Vec::new();
        for (_, cell) in parked.iter() {
            if cell.state.abort() == Scheduled::Push {
                if closed {
                    ended.push(cell.clone());
                } else {
                    ready.push_back(cell.clone());
                }
            }
        }
        if closed {
            drop(queue);
            return ended.into_iter().for_each(|cell| cell.end());
        }
        let many = queue.ready.len() - before;
        if many == 0 {
            return;
        }
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
    #[inline]
    pub(super) fn unpin(self: &Arc<Self>) {
        if IN_SHARD.with(ThreadCell::get) > 1 {
            // A shard is polled on one of its runtime's workers, which is
            // inside that runtime. Counted until it has run (invariant 13).
            let lease = Lease::new(self);
            drop(tokio::spawn(async move { drop(lease) }));
        }
    }

    /// A shard's next cell, once its own queue and kept cell are spent, or
    /// why it has none (invariants 5, 11 and 12).
    #[inline]
    pub(super) fn take(self: &Arc<Self>, local: &Local, key: usize, waker: &Waker) -> Take {
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
        Take::TaskCell(cell)
    }

    /// Puts a yielding shard's unpolled cells back at the head of the
    /// queue, for any shard to take, and the cell it kept (invariant 10)
    /// at the tail.
    pub(super) fn give_back(self: &Arc<Self>, local: &Local, kept: Option<Arc<TaskCell>>) {
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
    #[inline]
    pub(super) fn park(&self, cell: &Arc<TaskCell>) {
        let mut queue = self.lock();
        let key = queue.parked.insert(cell.clone());
        let key = u32::try_from(key)
            .ok()
            .filter(|&key| key != NOT_PARKED)
            .expect("fewer than 2^32 - 1 tasks of one group are parked at once");
        cell.parked_key.store(key, Relaxed);
    }

    /// A registered cell ended: out of `parked`. The last one out, with
    /// nothing queued, wakes the idle shards, to exit; with cells queued,
    /// the shard that runs the last of them does (invariant 5). A cell
    /// usually ends inside a shard's poll, with more of its batch to come:
    /// the shards woken must not wait for that poll (invariant 7), or a
    /// task spawned meanwhile would find them neither idle nor gone.
    #[inline]
    pub(super) fn unpark(self: &Arc<Self>, key: u32) {
        let mut queue = self.lock();
        let cell = queue.parked.try_remove(key as usize);
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
    pub(super) fn close(&self, local: &Local, key: Option<usize>) {
        // Before the lock: a shard polling its own cells sees it
        // (invariant 6).
        self.closed.store(true, SeqCst);
        let mut queue = self.lock();
        if let Some(key) = key {
            queue.leave(key);
        }
        let ready = std::mem::take(&mut queue.ready);
        let parked: Vec<Arc<TaskCell>> = queue.parked.iter().map(|(_, c)| c.clone()).collect();
        let idle = std::mem::take(&mut queue.idle);
        let own = std::mem::take(&mut *local.lock());
        drop(queue);
        idle.into_iter().for_each(Waker::wake);
        own.into_iter().chain(ready).for_each(|cell| cell.end());
        // A parked cell whose abort queues it is ours to end; any other is
        // queued or polled elsewhere, and ends where it would be queued.
        for cell in parked {
            if cell.state.abort() == Scheduled::Push {
                cell.end();
            }
        }
    }
}

/// What [`Runner::take`] found for a shard.
pub(super) enum Take {
    /// A cell to poll (and more in its own queue, maybe).
    TaskCell(Arc<TaskCell>),
    /// Nothing to run now, with cells parked: its waker is in `idle`.
    Park,
    /// Nothing left to run, or the runner closed: it has left the count.
    Exit,
}

/// Who takes the cells a shard cannot run now (invariant 5).
pub(super) enum Help {
    None,
    /// An idle shard, woken.
    Wake(Waker),
    /// A new shard, counted in `shards` and `locals`, to spawn.
    Start(NewShard),
}

/// A shard counted in before it is spawned: its own queue, its key in
/// `locals`, and where it runs ([`Queue::shard_runtime`]).
pub(super) struct NewShard {
    pub(super) local: Arc<Local>,
    pub(super) key: usize,
    pub(super) runtime: Option<(Handle, usize)>,
}
