//! How the group's loom models (`group::models`) run a runner made by
//! [`Runner::for_models`]: a model thread takes up a shard the runner
//! started or woke, and plays it as its tokio task would be polled: it
//! takes cells and runs them, its own queue included, until the runner
//! tells it to park or to exit. A parked shard's waker lists it again.
//! It keeps a woken cell as a shard does (invariant 10), but never frees
//! a LIFO slot (`unpin` would need tokio).

use super::*;

/// The waker a played shard parks with: lists the shard again, for a
/// model thread to play.
struct Relist {
    runner: Arc<Runner>,
    local: Arc<Local>,
    key: usize,
}

impl Wake for Relist {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(shards) = self.runner.lock().modelled.as_mut() {
            shards.push((self.local.clone(), self.key));
        }
    }
}

impl Runner {
    /// Plays one listed shard on this thread until it parks or exits;
    /// `false` if none is listed.
    pub(crate) fn play_modelled(self: &Arc<Self>) -> bool {
        let listed = self.lock().modelled.as_mut().and_then(Vec::pop);
        let Some((local, key)) = listed else {
            return false;
        };
        let waker = Waker::from(Arc::new(Relist {
            runner: self.clone(),
            local: local.clone(),
            key,
        }));
        // As `Shard::poll` does, but for `InShard`'s worker count (0 here:
        // no `unpin`, which would need tokio): the cell a woken sibling
        // leaves to this shard is kept (invariant 10), and the clock of a
        // batch is read afresh at each take.
        WokenHere::enter(Arc::as_ptr(self) as usize);
        while let Take::TaskCell(cell) = self.take(&local, key, &waker) {
            BATCH_BORN.with(|batch| batch.set((0, 0)));
            cell.run();
            while let Some(cell) = next_cell(&local) {
                cell.run();
            }
        }
        if let Some(kept) = WokenHere::leave() {
            self.push(kept);
        }
        true
    }
}

impl Runner {
    /// How many shards are counted (started and not exited).
    pub(crate) fn shards(&self) -> usize {
        self.lock().shards
    }

    /// What the runner holds, for a model that is stuck.
    pub(crate) fn describe(&self) -> String {
        let queue = self.lock();
        format!(
            "ready {}, parked {}, shards {}, idle {}, listed {}, cancelled {}, closed {}",
            queue.ready.len(),
            queue.parked.len(),
            queue.shards,
            queue.idle.len(),
            queue.modelled.as_ref().map_or(0, Vec::len),
            self.cancelled.load(SeqCst),
            self.closed.load(SeqCst),
        )
    }
}
