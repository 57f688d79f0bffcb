//! A shard: a tokio task that polls a runner's cells, from a queue of its
//! own that the others steal from (invariants 5–7, 10–12), and how one is
//! handed to tokio (invariant 8).

use super::*;

impl Runner {
    /// Starts the shard counted in `shards` for it. If its runtime has
    /// shut down, a new task (`fresh`) moves the runner to the caller's
    /// runtime when no other shard is left (invariant 8); else the runner
    /// closes, as when a runtime drops a shard (invariant 6).
    pub(super) fn spawn_shard(
        self: &Arc<Self>,
        shard: NewShard,
        fresh: bool,
    ) -> Result<(), RuntimeGone> {
        let NewShard {
            local,
            key,
            runtime,
        } = shard;
        let Some((runtime, workers)) = runtime else {
            // In the group's models, a model thread plays it.
            #[cfg(loom)]
            if let Some(shards) = self.lock().modelled.as_mut() {
                shards.push((local, key));
                return Ok(());
            }
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
    pub(super) fn hand_over(
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
            hint: (workers > 1).then(|| StallHint::new(self, local)),
            _lease: Lease::new(self),
        };
        let me = Arc::as_ptr(self) as usize;
        let outer = HANDING_OVER.with(|handing| handing.replace(me));
        let task = runtime.spawn(shard);
        let refused = HANDING_OVER.with(|handing| handing.replace(outer)) == REFUSED;
        drop(task);
        !refused
    }
}

/// A tokio task that runs a runner's cells.
pub(super) struct Shard {
    pub(super) runner: Arc<Runner>,
    /// The cells it took and has not polled yet, open to the other
    /// shards (invariant 11); its key in `Queue::locals`.
    pub(super) local: Arc<Local>,
    pub(super) key: usize,
    /// Its runtime's number of workers (invariant 7).
    pub(super) workers: usize,
    pub(super) finished: bool,
    /// Told by tokio when this shard's worker enters `block_in_place`
    /// (invariant 12); none on a runtime with one worker.
    pub(super) hint: Option<Arc<StallHint>>,
    /// Counts it among the runner's live tokio tasks (invariant 13).
    pub(super) _lease: Lease,
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
                    Take::TaskCell(cell) => {
                        BATCH_BORN.with(|batch| batch.set((0, 0)));
                        if let Some(hint) = &this.hint {
                            hint.defer();
                        }
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
            if polled >= SHARD_TURN || !tokio::task::coop::has_budget_remaining() {
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
pub(super) fn next_cell(local: &Local) -> Option<Arc<TaskCell>> {
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
pub(super) struct Local {
    pub(super) cells: Mutex<VecDeque<Arc<TaskCell>>>,
    /// Counts the polls its shard starts and ends: odd while it polls.
    pub(super) beat: AtomicUsize,
    /// `beat` as the stall watch last read it.
    pub(super) seen: AtomicUsize,
}

impl Local {
    pub(super) fn new() -> Arc<Local> {
        Arc::new(Local {
            // Allocated at its first share of more than one cell: a shard
            // of a small group never needs it.
            cells: Mutex::new(VecDeque::new()),
            beat: AtomicUsize::new(0),
            seen: AtomicUsize::new(0),
        })
    }

    #[inline]
    pub(super) fn lock(&self) -> MutexGuard<'_, VecDeque<Arc<TaskCell>>> {
        // No user code runs under this lock.
        self.cells.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether its shard has been inside one poll since the watch's last
    /// look, and records what it sees now.
    pub(super) fn stalled(&self) -> bool {
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

/// Marks the thread as polling a shard of `runner`, until dropped.
pub(super) struct InShard<'a> {
    pub(super) outer: usize,
    pub(super) runner: &'a Arc<Runner>,
}

impl<'a> InShard<'a> {
    pub(super) fn enter(workers: usize, runner: &'a Arc<Runner>) -> InShard<'a> {
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

/// What tells the runner that a shard's worker is entering
/// `tokio::task::block_in_place` (invariant 12). A shard hands it to
/// tokio's list of deferred wake-ups each time it takes cells: tokio wakes
/// that list when its worker parks, and when a task on it enters
/// `block_in_place`, just before the worker is handed to a new thread. So
/// a wake-up that finds the shard inside a poll comes from
/// `block_in_place`: the runner brings another shard in at once, which
/// tokio runs on the worker handed over. (If tokio stops waking the list
/// there, the stall watch's look at the next take still notices.) It is
/// handed over once per stay on a worker's list: `armed_on` names the
/// thread whose list holds it, until tokio wakes it.
pub(super) struct StallHint {
    runner: std::sync::Weak<Runner>,
    local: std::sync::Weak<Local>,
    armed_on: AtomicUsize,
}

impl StallHint {
    pub(super) fn new(runner: &Arc<Runner>, local: &Arc<Local>) -> Arc<StallHint> {
        Arc::new(StallHint {
            runner: Arc::downgrade(runner),
            local: Arc::downgrade(local),
            armed_on: AtomicUsize::new(0),
        })
    }

    /// Hands the hint to tokio's deferred wake-ups of this worker, unless
    /// that list holds it already (a no-op outside a worker: the yield is
    /// over at once).
    #[inline]
    fn defer(self: &Arc<Self>) {
        let here = thread_mark();
        if self.armed_on.load(Relaxed) == here {
            return;
        }
        self.armed_on.store(here, Relaxed);
        let waker = Waker::from(self.clone());
        let yielded = std::pin::pin!(tokio::task::yield_now());
        let _ = yielded.poll(&mut task::Context::from_waker(&waker));
    }
}

impl Wake for StallHint {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.armed_on.store(0, Relaxed);
        let (Some(runner), Some(local)) = (self.runner.upgrade(), self.local.upgrade()) else {
            return;
        };
        if local.beat.load(Relaxed) % 2 == 1 {
            runner.stall_seen();
        }
    }
}

impl Runner {
    /// A shard's worker enters `block_in_place` inside one of its polls
    /// ([`StallHint`]): while cells wait, an idle shard is woken, or one
    /// more shard starts, up to twice the workers (invariant 12).
    fn stall_seen(self: &Arc<Self>) {
        let mut queue = self.lock();
        if self.closed.load(SeqCst) || queue.shards >= 2 * queue.workers || !queue.has_backlog() {
            return;
        }
        let help = match queue.idle.pop() {
            Some(shard) => Help::Wake(shard),
            None => Help::Start(queue.new_shard()),
        };
        drop(queue);
        let _ = self.bring(help, false);
    }
}
