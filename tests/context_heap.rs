//! Heap kept by a parent after its children go, counted by a counting
//! global allocator: alone in its own test binary, since the count is the
//! whole process's. (The resident set cannot show it: glibc keeps freed
//! small chunks mapped.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

use taskgroup::Context;

struct CountingAlloc;
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged and only adds bookkeeping on a separate atomic, so `System`'s
// guarantees carry over.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(l.size() as isize, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE_BYTES.fetch_sub(l.size() as isize, Relaxed);
        // SAFETY: `p` was allocated by `System` (every allocation goes
        // through this allocator) with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: forwarded as is; `p` came from `System` with layout `l`.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            LIVE_BYTES.fetch_add(new as isize - l.size() as isize, Relaxed);
        }
        q
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// A long-lived parent that once held 100,000 children at once gives their
/// slab back when the last one goes: it kept 16 bytes per child ever linked
/// at once (2 MiB here, 16 MiB for a million), for as long as it lived.
#[test]
fn a_parent_frees_its_children_slab_when_the_last_child_goes() {
    let (root, _cancel) = Context::background().with_cancel();
    // The root's first child allocates its out-of-line extras, which stay.
    drop(root.with_cancel());
    let before = LIVE_BYTES.load(Relaxed);
    let children: Vec<_> = (0..100_000).map(|_| root.with_cancel()).collect();
    let held = LIVE_BYTES.load(Relaxed) - before;
    drop(children);
    let left = LIVE_BYTES.load(Relaxed) - before;
    assert!(held > 10_000_000, "the children are counted: {held} B");
    assert!(!root.is_cancelled());
    assert!(
        left < 1024,
        "{left} B still allocated after 100,000 children were dropped"
    );
}
