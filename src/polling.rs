//! What the current thread is polling, as far as a shield cares: the
//! cell of a group's task, and how many shielded sections it is inside.
//! The group's runner sets it around each poll (runner invariant 9);
//! [`Context::shield`](crate::Context::shield) counts itself in it. Here,
//! not in `group/`, so that `context/` need not import `group/`.

use std::cell::Cell as ThreadCell;

/// What a thread is polling: a runner's cell, as addresses (0: none),
/// and the number of shielded sections that cell is inside, written back
/// to the cell when its poll returns (invariant 9).
#[derive(Clone, Copy)]
pub(crate) struct Polled {
    pub(crate) runner: usize,
    pub(crate) cell: usize,
    pub(crate) shields: u16,
}

/// The most shielded sections one group task may be inside at once
/// (nested, or side by side in a `join`): the cell keeps the count in
/// two bytes, one of the fields that keep a task's cell in a smaller
/// allocation.
pub(crate) const MAX_SHIELDS: u16 = u16::MAX;

const NOT_POLLING: Polled = Polled {
    runner: 0,
    cell: 0,
    shields: 0,
};

#[cfg(not(loom))]
thread_local! {
    /// The cell this thread is polling: how `wait` knows it was called
    /// from its own group's task, and where a shield counts itself.
    pub(crate) static POLLING: ThreadCell<Polled> = const { ThreadCell::new(NOT_POLLING) };
}

// loom's, in its models: loom runs its threads on one of the OS's, and a
// model thread may be switched out in the middle of a poll.
#[cfg(loom)]
::loom::thread_local! {
    pub(crate) static POLLING: ThreadCell<Polled> = ThreadCell::new(NOT_POLLING);
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
            polled.shields = polled.shields.checked_add(1).unwrap_or_else(|| {
                panic!(
                    "a group task may be inside at most {MAX_SHIELDS} shielded \
                     sections at once (`Context::shield`)"
                )
            });
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
