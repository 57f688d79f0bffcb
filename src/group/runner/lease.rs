//! The tokio tasks the runner starts, counted until tokio is done with
//! them, so that a joined group leaves none alive (invariant 13).

use super::*;

/// Counts a tokio task the runner started (a shard, a grace's timer, a
/// task's deadline timer, a no-op that frees a LIFO slot) while its future
/// is alive (invariant 13).
pub(super) struct Lease(Arc<Runner>);

impl Lease {
    pub(super) fn new(runner: &Arc<Runner>) -> Lease {
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
pub(super) struct Leases {
    pub(super) alive: usize,
    pub(super) unconfirmed: usize,
    pub(super) ended_on: usize,
}

/// `Leases::ended_on` of ends on more than one thread: no thread's mark.
pub(super) const MIXED: usize = usize::MAX;

impl Leases {
    /// A lease ended on the thread `here`; returns whether none is alive.
    pub(super) fn end(&mut self, here: usize) -> bool {
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
    pub(super) fn confirm(&mut self) -> bool {
        self.unconfirmed -= 1;
        self.unconfirmed == 0 && self.alive == 0
    }

    /// Whether a waiter on the thread `here` sees no task of the runner
    /// alive: none is, and every end tokio may not have finished with
    /// happened on this thread, whose task has returned since (one task
    /// runs on a thread at a time), or there is none.
    pub(super) fn quiet_for(&self, here: usize) -> bool {
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
pub(super) struct LeaseEnd(Arc<Runner>);

impl LeaseEnd {
    pub(super) fn defer(runner: Arc<Runner>) {
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
/// threads and never 0. A mark is reused only by a thread made after the
/// one that had it ended, which orders every store the old thread made
/// before any load of the new one.
#[cfg(not(loom))]
pub(crate) fn thread_mark() -> usize {
    thread_local! {
        static MARK: u8 = const { 0 };
    }
    MARK.with(|mark| std::ptr::from_ref(mark).addr())
}

/// Under loom, a number each model thread draws once: loom runs its
/// threads on one of the OS's, and frees a finished thread's locals
/// without the ordering that reusing memory gives real threads, so an
/// address could repeat and meet a stale load.
#[cfg(loom)]
pub(crate) fn thread_mark() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
    ::loom::thread_local! {
        static MARK: usize = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    MARK.with(|mark| *mark)
}
