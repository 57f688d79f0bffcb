//! What glibc's malloc charges for memory allocated on one thread and
//! freed on another: the shape of a task spawned on one worker and ended
//! on another. Thread A allocates a 96-byte and a 208-byte chunk per item
//! (the runner cell and a small task's boxed future) and hands them to
//! thread B in batches of 16, which frees them. The same hand-off with no
//! heap memory in the items measures the hand-off alone; the same
//! allocations freed on thread A measure the allocator alone.
//!
//! ```text
//! rustc -O benches/results/2026-12-07-cross-thread-free.rs -o /tmp/cross-thread-free
//! /tmp/cross-thread-free 1000000
//! ```
use std::hint::black_box;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// Two heap blocks, or none.
enum Item {
    Heap(#[allow(dead_code)] Box<[u8; 80]>, #[allow(dead_code)] Box<[u8; 192]>),
    Inline(#[allow(dead_code)] [u8; 16]),
}

fn make(heap: bool) -> Item {
    if heap {
        Item::Heap(black_box(Box::new([1; 80])), black_box(Box::new([2; 192])))
    } else {
        Item::Inline(black_box([1; 16]))
    }
}

/// ns per item, items dropped on the thread that made them.
fn same_thread(n: usize, heap: bool) -> f64 {
    let t0 = Instant::now();
    let mut batch = Vec::with_capacity(16);
    for _ in 0..n {
        batch.push(make(heap));
        if batch.len() == 16 {
            batch.clear();
        }
    }
    drop(batch);
    t0.elapsed().as_nanos() as f64 / n as f64
}

/// ns per item, items handed to a second thread in batches of 16 and
/// dropped there.
fn across(n: usize, heap: bool) -> f64 {
    type Queue = (Mutex<(Vec<Vec<Item>>, bool)>, Condvar);
    let queue: Arc<Queue> = Arc::new((Mutex::new((Vec::new(), false)), Condvar::new()));
    let theirs = queue.clone();
    let t0 = Instant::now();
    let freer = std::thread::spawn(move || {
        loop {
            let mut q = theirs.0.lock().unwrap();
            while q.0.is_empty() && !q.1 {
                q = theirs.1.wait(q).unwrap();
            }
            let batches = std::mem::take(&mut q.0);
            let done = q.1;
            drop(q);
            drop(batches);
            if done && theirs.0.lock().unwrap().0.is_empty() {
                return;
            }
        }
    });
    let mut batch = Vec::with_capacity(16);
    for _ in 0..n {
        batch.push(make(heap));
        if batch.len() == 16 {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(16));
            queue.0.lock().unwrap().0.push(full);
            queue.1.notify_one();
        }
    }
    {
        let mut q = queue.0.lock().unwrap();
        q.0.push(batch);
        q.1 = true;
    }
    queue.1.notify_one();
    freer.join().unwrap();
    t0.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let n = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("n: a number"))
        .unwrap_or(1_000_000);
    for _ in 0..3 {
        println!(
            "n={n} heap: same thread {:.1} ns/item, across threads {:.1}; no heap: same thread {:.1}, across threads {:.1}",
            same_thread(n, true),
            across(n, true),
            same_thread(n, false),
            across(n, false),
        );
    }
}
