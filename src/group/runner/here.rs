//! What the current thread is doing for a runner: the thread-locals a
//! shard and a cell's poll set, and the guards that set them.

use super::*;

#[cfg(not(loom))]
thread_local! {
    /// The clock, read at most once per batch a shard polls, as
    /// nanoseconds after its runner's epoch (with the runner's address; 0:
    /// not read in this batch): when a task was first polled, to within one
    /// batch, for a tenth of what reading the clock for every task would
    /// cost.
    pub(super) static BATCH_BORN: ThreadCell<(usize, u64)> = const { ThreadCell::new((0, 0)) };

    /// The number of workers of the runtime whose shard this thread is
    /// polling (0: none), so this thread is one of them (invariant 7).
    pub(super) static IN_SHARD: ThreadCell<usize> = const { ThreadCell::new(0) };

    /// The runner handing a new shard to tokio on this thread, as an
    /// address (0: none), or [`REFUSED`] once that shard was dropped
    /// meanwhile (invariant 8).
    pub(super) static HANDING_OVER: ThreadCell<usize> = const { ThreadCell::new(0) };
}

// loom's, in its models (see `WOKEN_HERE`).
#[cfg(loom)]
::loom::thread_local! {
    pub(super) static BATCH_BORN: ThreadCell<(usize, u64)> = ThreadCell::new((0, 0));
    pub(super) static IN_SHARD: ThreadCell<usize> = ThreadCell::new(0);
    pub(super) static HANDING_OVER: ThreadCell<usize> = ThreadCell::new(0);
}

#[cfg(not(loom))]
thread_local! {
    /// The cells the shard this thread is polling keeps (invariant 10).
    pub(super) static WOKEN_HERE: RefCell<WokenHere> = const { RefCell::new(WokenHere::NONE) };

    /// The cell this thread is polling, for [`current_task`].
    pub(super) static POLLED_CELL: ThreadCell<Option<Arc<TaskCell>>> = const { ThreadCell::new(None) };
}

// loom's, in its models: loom runs its threads on one of the OS's.
#[cfg(loom)]
::loom::thread_local! {
    pub(super) static WOKEN_HERE: RefCell<WokenHere> = RefCell::new(WokenHere::NONE);
    pub(super) static POLLED_CELL: ThreadCell<Option<Arc<TaskCell>>> = ThreadCell::new(None);
}

/// `HANDING_OVER` once the runtime has refused the shard: no runner's
/// address.
pub(super) const REFUSED: usize = 1;

/// The cell a shard keeps (invariant 10), in [`WOKEN_HERE`].
pub(super) struct WokenHere {
    /// The runner whose shard this thread is polling, as an address (0:
    /// none).
    pub(super) runner: usize,
    /// Whether it may keep a cell now: while it polls the last cell of its
    /// batch, or the cell it kept, and keeps none yet.
    pub(super) open: bool,
    pub(super) kept: Option<Arc<TaskCell>>,
}

impl WokenHere {
    const NONE: WokenHere = WokenHere {
        runner: 0,
        open: false,
        kept: None,
    };

    /// A shard of `runner` starts polling on this thread. Shards never
    /// nest: one tokio task is polled at a time.
    #[inline]
    pub(super) fn enter(runner: usize) {
        WOKEN_HERE.with(|here| {
            let mut here = here.borrow_mut();
            debug_assert!(here.kept.is_none(), "a shard left a cell behind");
            here.runner = runner;
            here.open = false;
        });
    }

    /// The shard's poll ends: the cell it kept, none unless it unwinds.
    pub(super) fn leave() -> Option<Arc<TaskCell>> {
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
    #[inline]
    pub(super) fn keep(runner: usize, cell: Arc<TaskCell>) -> Option<Arc<TaskCell>> {
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
    #[inline]
    pub(super) fn open() {
        WOKEN_HERE.with(|here| here.borrow_mut().open = true);
    }

    /// The kept cell to poll next, if any; the shard may keep another
    /// while it polls it. With none, it keeps no more.
    #[inline]
    pub(super) fn next() -> Option<Arc<TaskCell>> {
        WOKEN_HERE.with(|here| {
            let mut here = here.borrow_mut();
            let cell = here.kept.take();
            here.open = cell.is_some();
            cell
        })
    }

    /// The shard yields: the cell it kept, and it keeps no more.
    pub(super) fn take_kept() -> Option<Arc<TaskCell>> {
        WOKEN_HERE.with(|here| {
            let mut here = here.borrow_mut();
            here.open = false;
            here.kept.take()
        })
    }
}

/// Marks the thread as polling a runner's cell, until dropped; then
/// writes the cell's shield count back (invariant 9).
pub(super) struct Polling<'a> {
    pub(super) outer: Polled,
    pub(super) outer_cell: Option<Arc<TaskCell>>,
    pub(super) cell: &'a TaskCell,
}

impl<'a> Polling<'a> {
    #[inline]
    pub(super) fn enter(cell: &'a Arc<TaskCell>) -> Polling<'a> {
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
    #[inline]
    fn drop(&mut self) {
        let polled = POLLING.with(|polling| polling.replace(self.outer));
        self.cell.shields.store(polled.shields, Relaxed);
        let outer_cell = self.outer_cell.take();
        POLLED_CELL.with(|polled| polled.replace(outer_cell));
    }
}

/// The group task whose cell this thread is polling, as of now
/// ([`TaskInfo::current`](crate::TaskInfo::current)).
pub(crate) fn current_task() -> Option<crate::TaskInfo> {
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
#[inline]
pub(super) fn batch_born(runner: &Arc<Runner>) -> u64 {
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
