//! One task of a group: its future, its scheduling state, and the waker
//! made from it. `TaskCell::run` polls it once or ends it (invariants 1–4, 9).

use super::*;

/// One task of the group: its future and its scheduling state. 72 bytes
/// on 64-bit targets without the `tracing` feature (an 88-byte `Arc`
/// allocation, a 96-byte glibc chunk): hence a parked key of four bytes
/// (a group never parks 2^32 tasks), a shield count of two
/// ([`MAX_SHIELDS`](crate::polling::MAX_SHIELDS)) and who the task is as a
/// two-word [`Meta`].
pub(crate) struct TaskCell {
    pub(super) state: CellState,
    pub(super) body: Mutex<Option<TaskBody>>,
    pub(super) runner: Arc<Runner>,
    /// Its key in `parked`, once registered (invariant 3). Written and read
    /// under the queue lock, or by the holder of its queue entry.
    pub(super) parked_key: AtomicU32,
    /// The shielded sections its future is inside (invariant 9). Written
    /// by the holder of its queue entry only; read by snapshots too.
    pub(super) shields: AtomicU16,
    /// Stopped on its own by `TaskGroup::cancel_task`: like the runner's
    /// `cancelled`, for this cell only (invariant 9). Never unset.
    pub(super) stopped: AtomicBool,
    /// Who the task is.
    pub(super) meta: Meta,
}

impl TaskCell {
    /// Polls the cell once, or ends it if aborted, cancelled or closed. The
    /// caller held its queue entry (invariant 1).
    #[inline]
    pub(super) fn run(self: Arc<Self>) {
        let aborted = self.state.start() == Started::Aborted;
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
        if self.state.stop() == Stopped::Push {
            let runner = self.runner.clone();
            runner.push(self);
        }
    }

    /// Whether the cell must not be polled again: its runtime is shutting
    /// down, or the drop step came and it is not shielded (invariant 9).
    #[inline]
    pub(super) fn must_end(&self) -> bool {
        self.runner.closed.load(SeqCst)
            || ((self.runner.cancelled.load(SeqCst) || self.stopped.load(SeqCst))
                && !self.is_shielded())
    }

    /// Ends the cell: drops its future (if a poll has not finished it) and
    /// counts it out. Called by the holder of its queue entry (or while it
    /// runs), once: `ENDED` keeps it from being queued again.
    #[inline]
    pub(super) fn end(&self) {
        let body = self.take_ended();
        self.abandon(body);
        self.unpark();
    }

    /// [`TaskCell::end`] after a poll that returned `Ready`: the future has
    /// reported its task, and is only dropped.
    #[inline]
    pub(super) fn end_finished(&self) {
        let body = self.take_ended();
        drop(catch_unwind(AssertUnwindSafe(move || drop(body))));
        self.unpark();
    }

    /// Marks the cell ended (never queued again) and takes its future.
    #[inline]
    pub(super) fn take_ended(&self) -> Option<TaskBody> {
        self.state.end();
        self.body
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    #[inline]
    pub(super) fn unpark(&self) {
        let key = self.parked_key.load(Relaxed);
        if key != NOT_PARKED {
            self.runner.unpark(key);
        }
    }
}

impl TaskCell {
    /// Who the task is.
    pub(crate) fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Whether the task waits for a wake-up (parked), as of now.
    pub(crate) fn is_idle(&self) -> bool {
        self.state.is_idle()
    }

    /// Whether the task has ended (its future dropped).
    pub(crate) fn is_ended(&self) -> bool {
        self.state.is_ended()
    }

    /// Whether the task is inside a shielded section, as of its last poll.
    pub(crate) fn is_shielded(&self) -> bool {
        self.shields.load(Relaxed) > 0
    }

    /// Drops a future taken out of the cell, telling it first if it had
    /// not finished. `TaskFuture` catches panics in its own destructor.
    #[inline]
    pub(super) fn abandon(&self, body: Option<TaskBody>) {
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

impl Drop for TaskCell {
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

impl Wake for TaskCell {
    fn wake(self: Arc<Self>) {
        if self.state.schedule() == Scheduled::Push {
            let runner = self.runner.clone();
            runner.push_woken(self);
        }
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.state.schedule() == Scheduled::Push {
            self.runner.push_woken(self.clone());
        }
    }
}

#[cfg(all(test, not(loom), not(feature = "tracing"), target_pointer_width = "64"))]
mod tests {
    use super::*;

    /// A cell is 72 bytes, an 88-byte `Arc` allocation: a 96-byte glibc
    /// chunk, where 104 took 112 (the `tracing` feature adds the span).
    #[test]
    fn a_task_cell_is_72_bytes() {
        assert_eq!(size_of::<TaskCell>(), 72);
    }
}
