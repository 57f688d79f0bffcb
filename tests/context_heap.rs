//! Heap kept by a context after its children or its `after_cancel`
//! registrations go, counted by a counting global allocator, in its own
//! test binary. (The resident set cannot show it: glibc keeps freed small
//! chunks mapped.) The count is per thread: libtest's own threads allocate
//! while a test measures, and everything measured here is allocated and
//! freed on the test's thread.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::live_bytes;

use taskgroup::Context;

/// A long-lived parent that once held 100,000 children at once gives their
/// slab back when the last one goes: it kept 16 bytes per child ever linked
/// at once (2 MiB here, 16 MiB for a million), for as long as it lived.
#[test]
fn a_parent_frees_its_children_slab_when_the_last_child_goes() {
    let (root, _cancel) = Context::background().with_cancel();
    // The root's first child allocates its out-of-line extras, which stay.
    drop(root.with_cancel());
    let before = live_bytes();
    let children: Vec<_> = (0..100_000).map(|_| root.with_cancel()).collect();
    let held = live_bytes() - before;
    drop(children);
    let left = live_bytes() - before;
    println!("100,000 children: {held} B held, {left} B after they were dropped");
    assert!(held > 10_000_000, "the children are counted: {held} B");
    assert!(!root.is_cancelled());
    assert!(
        left < 1024,
        "{left} B still allocated after 100,000 children were dropped"
    );
}

/// The same for `after_cancel`: a long-lived context that once held
/// 100,000 registrations gives their slab back when the last one is
/// stopped.
#[test]
fn a_context_frees_its_callbacks_slab_when_the_last_registration_stops() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime for after_cancel");
    let _enter = runtime.enter();
    let (root, _cancel) = Context::background().with_cancel();
    // The first registration allocates the root's out-of-line extras,
    // which stay.
    assert!(root.after_cancel(|| ()).stop());
    let before = live_bytes();
    let registrations: Vec<_> = (0..100_000)
        .map(|i| root.after_cancel(move || assert!(i < 100_000)))
        .collect();
    let held = live_bytes() - before;
    for registration in &registrations {
        assert!(registration.stop());
    }
    let stopped = live_bytes() - before;
    drop(registrations);
    let left = live_bytes() - before;
    println!(
        "100,000 after_cancel registrations: {held} B held, {stopped} B after stop, \
         {left} B after the handles are dropped"
    );
    assert!(held > 1_000_000, "the registrations are counted: {held} B");
    assert!(!root.is_cancelled());
    assert!(
        left < 1024,
        "{left} B still allocated after 100,000 registrations were stopped"
    );
}
