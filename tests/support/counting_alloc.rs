//! A counting global allocator, counted per thread, for the heap tests
//! (`tests/context_heap.rs`, `tests/group_heap.rs`): include it with
//! `#[path = "support/counting_alloc.rs"] mod counting_alloc;`. It becomes
//! the binary's global allocator, so it is not in `support/mod.rs`, which
//! every test binary uses.
//!
//! Per thread, because libtest's own threads allocate while a test
//! measures: a test that drives everything it measures on its own thread
//! (a current-thread runtime) counts only its own allocations and frees.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct CountingAlloc;

thread_local! {
    /// Bytes allocated minus bytes freed by this thread (frees of another
    /// thread's allocations count against it). `const` and with no
    /// destructor, so the allocator may touch it at any point of a
    /// thread's life without allocating.
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
}

fn count(bytes: isize) {
    // `try_with` keeps the allocator from ever panicking, even if a thread
    // allocates while its thread-locals are being torn down.
    let _ = LIVE_BYTES.try_with(|live| live.set(live.get() + bytes));
}

/// Bytes this thread has allocated and not freed, so far.
pub fn live_bytes() -> isize {
    LIVE_BYTES.with(Cell::get)
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged and only adds bookkeeping on a thread-local counter (which
// does not allocate), so `System`'s guarantees carry over.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            count(l.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        count(-(l.size() as isize));
        // SAFETY: `p` was allocated by `System` (every allocation goes
        // through this allocator) with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: forwarded as is; `p` came from `System` with layout `l`.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            count(new as isize - l.size() as isize);
        }
        q
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;
