//! `Context` under real threads: cancels racing child creation, readers,
//! other cancels and `after_cancel` registrations. Thousands of rounds each,
//! lined up with barriers; every test runs under a watchdog so a deadlock
//! fails instead of hanging.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use taskgroup::{CancelHandle, Context, ContextError};

mod support;
use support::multi_thread;

/// A cause that says who cancelled which node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cancelled by {by} at node {node}")]
struct Tag {
    by: usize,
    node: usize,
}

fn tag(ctx: &Context) -> Option<Tag> {
    ctx.cause().map(|cause| {
        *cause
            .downcast_ref::<Tag>()
            .expect("every cause here is a Tag")
    })
}

/// Runs `f` on its own thread and fails the test if it takes longer than
/// `limit` (a deadlock), instead of hanging the suite.
fn with_watchdog<F: FnOnce() + Send + 'static>(name: &str, limit: Duration, f: F) {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    let worker = thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            f();
            let _ = tx.send(());
        })
        .unwrap();
    match rx.recv_timeout(limit) {
        Ok(()) => worker.join().unwrap(),
        // The worker panicked: re-raise its panic here.
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{name}: no progress after {limit:?}: deadlock?")
        }
    }
    eprintln!("{name}: {:?}", start.elapsed());
}

/// xorshift64*: a tiny deterministic generator, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

// ---------------------------------------------------------------------------

/// Every child created while the parent is being cancelled reports `err()`
/// once both sides finish: it was linked and reached by the walk, or born
/// cancelled. Stronger: the canceller, right after `cancel_with` returns,
/// finds every child whose creation had completed already cancelled.
#[test]
fn cancel_racing_child_creation_never_misses_a_child() {
    with_watchdog(
        "cancel_racing_child_creation",
        Duration::from_secs(60),
        || {
            const ROUNDS: usize = 2_000;
            let rt = multi_thread(2);
            let (mut linked, mut born) = (0usize, 0usize);
            for round in 0..ROUNDS {
                let (root, _keep_root) = Context::background().with_cancel();
                let (parent, cancel) = root.with_cancel();
                let created: Mutex<Vec<Context>> = Mutex::new(Vec::new());
                let barrier = Barrier::new(2);
                let expected = Tag { by: round, node: 0 };
                let handles = thread::scope(|s| {
                    let creator = s.spawn(|| {
                        let _rt = rt.enter();
                        let mut handles: Vec<CancelHandle> = Vec::new();
                        let mut seen_before = 0;
                        let mut after = 0;
                        barrier.wait();
                        for i in 0..256 {
                            let was_cancelled = parent.is_cancelled();
                            let child = match i % 4 {
                                0 => {
                                    let (child, handle) = parent.with_cancel();
                                    handles.push(handle);
                                    child
                                }
                                1 => parent.with_value(i),
                                2 => {
                                    let (child, handle) =
                                        parent.with_timeout(Duration::from_secs(60));
                                    handles.push(handle);
                                    child
                                }
                                _ => {
                                    // A grandchild, through the last child made.
                                    let last = created.lock().unwrap().last().cloned();
                                    let base = last.unwrap_or_else(|| parent.clone());
                                    let (child, handle) = base.with_cancel();
                                    handles.push(handle);
                                    child
                                }
                            };
                            created.lock().unwrap().push(child);
                            if was_cancelled {
                                after += 1;
                                if after == 4 {
                                    break;
                                }
                            } else {
                                seen_before += 1;
                            }
                        }
                        (handles, seen_before)
                    });
                    let canceller = s.spawn(|| {
                        barrier.wait();
                        cancel.cancel_with(expected);
                        // Every creation that completed is visible, cancelled.
                        for child in created.lock().unwrap().iter() {
                            assert_eq!(child.err(), Some(ContextError::Cancelled));
                            assert_eq!(tag(child), Some(expected));
                        }
                    });
                    canceller.join().unwrap();
                    creator.join().unwrap()
                });
                let (handles, seen_before) = handles;
                linked += seen_before;
                let created = created.into_inner().unwrap();
                born += created.len() - seen_before;
                for child in &created {
                    assert_eq!(child.err(), Some(ContextError::Cancelled), "round {round}");
                    assert_eq!(tag(child), Some(expected), "round {round}");
                }
                assert!(!root.is_cancelled());
                drop(handles);
            }
            eprintln!("children created before the cancel was seen: {linked}, after: {born}");
            assert!(born > 0);
        },
    );
}

/// A reader never sees the cancellation half-set: `err()` Some implies
/// `cause()` Some with the cause given, and the other way round.
#[test]
fn cancel_racing_cause_readers_never_sees_half_set_state() {
    with_watchdog(
        "cancel_racing_cause_readers",
        Duration::from_secs(60),
        || {
            const ROUNDS: usize = 3_000;
            let mut reads_before = 0usize;
            for round in 0..ROUNDS {
                let (ctx, cancel) = Context::background().with_cancel();
                let (child, _c) = ctx.with_cancel();
                let grandchild = child.with_value(round);
                let expected = Tag { by: round, node: 0 };
                let barrier = Barrier::new(3);
                let live_reads = thread::scope(|s| {
                    let readers: Vec<_> = [&ctx, &grandchild]
                        .into_iter()
                        .enumerate()
                        .map(|(i, watched)| {
                            let barrier = &barrier;
                            s.spawn(move || {
                                barrier.wait();
                                let mut live = 0usize;
                                loop {
                                    // Alternate the read order.
                                    let err_first = live % 2 == i % 2;
                                    let (err, cause) = if err_first {
                                        let err = watched.err();
                                        (err, tag(watched))
                                    } else {
                                        let cause = tag(watched);
                                        (watched.err(), cause)
                                    };
                                    match (err, cause) {
                                        (None, None) => {
                                            live += 1;
                                            // Two cores, three threads: let the canceller in.
                                            if live.is_multiple_of(32) {
                                                thread::yield_now();
                                            }
                                        }
                                        (Some(ContextError::Cancelled), Some(tag)) => {
                                            assert_eq!(tag, expected);
                                            assert!(watched.is_cancelled());
                                            assert_eq!(
                                                watched.check(),
                                                Err(ContextError::Cancelled)
                                            );
                                            return live;
                                        }
                                        // Cancelled between the two reads: the first one
                                        // saw it live, the second one saw it over.
                                        (None, Some(_)) if err_first => live += 1,
                                        (Some(ContextError::Cancelled), None) if !err_first => {
                                            live += 1;
                                        }
                                        other => panic!("round {round}: half-set state {other:?}"),
                                    }
                                }
                            })
                        })
                        .collect();
                    barrier.wait();
                    cancel.cancel_with(expected);
                    readers
                        .into_iter()
                        .map(|r| r.join().unwrap())
                        .sum::<usize>()
                });
                reads_before += live_reads;
            }
            eprintln!("reads that saw the context live: {reads_before}");
        },
    );
}

/// Several threads call `cancel_with` on one context at once: one cause
/// wins, every descendant agrees on it, and every caller, winner or not,
/// finds the whole subtree cancelled when its call returns.
#[test]
fn concurrent_cancel_with_one_cause_wins_and_descendants_agree() {
    with_watchdog("concurrent_cancel_with", Duration::from_secs(60), || {
        const ROUNDS: usize = 1_000;
        const THREADS: usize = 4;
        let mut wins = [0usize; THREADS];
        for round in 0..ROUNDS {
            let (root, cancel) = Context::background().with_cancel();
            let mut descendants = Vec::new();
            let mut keep = Vec::new();
            let mut frontier = vec![root.clone()];
            for _ in 0..3 {
                let mut next = Vec::new();
                for ctx in &frontier {
                    let (a, ha) = ctx.with_cancel();
                    keep.push(ha);
                    next.push(a);
                    next.push(ctx.with_value(round));
                }
                descendants.extend(next.iter().cloned());
                frontier = next;
            }
            let barrier = Barrier::new(THREADS);
            thread::scope(|s| {
                for by in 0..THREADS {
                    let (barrier, cancel, descendants) = (&barrier, &cancel, &descendants);
                    s.spawn(move || {
                        barrier.wait();
                        cancel.cancel_with(Tag { by, node: 0 });
                        for ctx in descendants {
                            assert_eq!(ctx.err(), Some(ContextError::Cancelled), "round {round}");
                        }
                    });
                }
            });
            let winner = tag(&root).expect("root cancelled");
            wins[winner.by] += 1;
            for ctx in &descendants {
                assert_eq!(tag(ctx), Some(winner), "round {round}");
            }
        }
        eprintln!("wins per thread: {wins:?}");
    });
}

/// A random tree of a few hundred contexts; several threads cancel random
/// nodes (each with its own cause) and create new children while they do.
/// No deadlock; afterwards every node under a cancelled one is cancelled, and
/// each node's cause is its own canceller's or its parent's.
#[test]
fn concurrent_cancels_across_a_tree_keep_causes_consistent() {
    with_watchdog(
        "concurrent_cancels_across_a_tree",
        Duration::from_secs(60),
        || {
            const ROUNDS: usize = 200;
            const NODES: usize = 300;
            const THREADS: usize = 4;
            const OPS: usize = 60;
            const MAIN: usize = usize::MAX;
            let mut own_wins = 0usize;
            for round in 0..ROUNDS {
                let mut rng = Rng::new(round as u64);
                let (root, root_cancel) = Context::background().with_cancel();
                let mut ctxs = vec![root];
                let mut parent = vec![None];
                let mut handles: Vec<Option<CancelHandle>> = vec![Some(root_cancel)];
                let mut children: Vec<Vec<usize>> = vec![Vec::new()];
                for i in 1..NODES {
                    let p = rng.below(i);
                    let (ctx, handle) = if rng.below(5) == 0 {
                        (ctxs[p].with_value(i), None)
                    } else {
                        let (ctx, handle) = ctxs[p].with_cancel();
                        (ctx, Some(handle))
                    };
                    ctxs.push(ctx);
                    parent.push(Some(p));
                    handles.push(handle);
                    children.push(Vec::new());
                    children[p].push(i);
                }
                let subtree = |n: usize| {
                    let mut all = vec![n];
                    let mut i = 0;
                    while i < all.len() {
                        all.extend(&children[all[i]]);
                        i += 1;
                    }
                    all
                };

                let barrier = Barrier::new(THREADS);
                let extra = thread::scope(|s| {
                    let workers: Vec<_> = (0..THREADS)
                        .map(|by| {
                            let (barrier, ctxs, handles, subtree) =
                                (&barrier, &ctxs, &handles, &subtree);
                            s.spawn(move || {
                                let mut rng = Rng::new((round * THREADS + by) as u64 + 1_000_000);
                                let mut extra = Vec::new();
                                barrier.wait();
                                for _ in 0..OPS {
                                    let n = rng.below(NODES);
                                    if rng.below(3) == 0 {
                                        // Create a child, noting what the parent was first.
                                        let before = tag(&ctxs[n]);
                                        let (child, handle) = ctxs[n].with_cancel();
                                        if let Some(before) = before {
                                            assert_eq!(tag(&child), Some(before), "born cancelled");
                                        }
                                        extra.push((n, child, handle));
                                    } else if let Some(handle) = &handles[n] {
                                        handle.cancel_with(Tag { by, node: n });
                                        for m in subtree(n) {
                                            assert!(ctxs[m].is_cancelled(), "subtree of {n}: {m}");
                                        }
                                    }
                                }
                                extra
                            })
                        })
                        .collect();
                    workers
                        .into_iter()
                        .flat_map(|w| w.join().unwrap())
                        .collect::<Vec<_>>()
                });

                let check = |own_wins: &mut usize| {
                    for n in 0..NODES {
                        let state = (ctxs[n].err(), tag(&ctxs[n]));
                        match parent[n] {
                            Some(p) if ctxs[p].is_cancelled() => {
                                assert_eq!(
                                    state.0,
                                    Some(ContextError::Cancelled),
                                    "node {n} under {p}"
                                );
                            }
                            _ => {}
                        }
                        if let Some(t) = state.1 {
                            if t.node == n {
                                assert!(handles[n].is_some(), "only a handle cancels");
                                *own_wins += 1;
                            } else {
                                let p = parent[n]
                                    .expect("the root is only cancelled by its own handle");
                                assert_eq!(Some(t), tag(&ctxs[p]), "node {n} vs parent {p}");
                            }
                        } else {
                            assert_eq!(state.0, None);
                        }
                    }
                    for (p, child, _handle) in &extra {
                        assert_eq!(tag(child), tag(&ctxs[*p]));
                    }
                };
                check(&mut own_wins);
                // Finally cancel the root: everything ends, causes still consistent.
                handles[0]
                    .as_ref()
                    .unwrap()
                    .cancel_with(Tag { by: MAIN, node: 0 });
                assert!(ctxs.iter().all(Context::is_cancelled));
                let mut ignored = 0;
                check(&mut ignored);
            }
            eprintln!("nodes whose own cancel won: {own_wins}");
        },
    );
}

/// `after_cancel` registrations (and `stop`s) racing a cancel: every
/// callback runs exactly once, except those whose `stop()` returned true,
/// which never run; each sees `err()` set when it runs.
#[test]
fn after_cancel_racing_cancel_runs_each_callback_exactly_once() {
    with_watchdog(
        "after_cancel_racing_cancel",
        Duration::from_secs(60),
        || {
            const ROUNDS: usize = 2_000;
            const PER_ROUND: usize = 8;
            let rt = multi_thread(2);
            let runs: Arc<Vec<AtomicU8>> =
                Arc::new((0..ROUNDS * PER_ROUND).map(|_| AtomicU8::new(0)).collect());
            let early = Arc::new(AtomicBool::new(false));
            let total_runs = Arc::new(AtomicUsize::new(0));
            let mut prevented = vec![false; ROUNDS * PER_ROUND];
            for round in 0..ROUNDS {
                let (ctx, cancel) = Context::background().with_cancel();
                let barrier = Barrier::new(2);
                let stops = thread::scope(|s| {
                    let registrar = s.spawn(|| {
                        let _rt = rt.enter();
                        barrier.wait();
                        let mut stops = Vec::new();
                        for k in 0..PER_ROUND {
                            let id = round * PER_ROUND + k;
                            let (runs, early, total, seen) =
                                (runs.clone(), early.clone(), total_runs.clone(), ctx.clone());
                            let reg = ctx.after_cancel(move || {
                                if seen.err().is_none() {
                                    early.store(true, Ordering::SeqCst);
                                }
                                runs[id].fetch_add(1, Ordering::SeqCst);
                                total.fetch_add(1, Ordering::SeqCst);
                            });
                            // Stop every other one at once, racing the cancel;
                            // drop the rest (they stay registered).
                            if k % 2 == 1 {
                                stops.push((id, reg.stop()));
                            }
                        }
                        stops
                    });
                    barrier.wait();
                    cancel.cancel();
                    registrar.join().unwrap()
                });
                for (id, stopped) in stops {
                    prevented[id] = stopped;
                }
            }
            let expected = prevented.iter().filter(|p| !**p).count();
            // Every callback runs on a task of its own: wait until every one
            // has run and no callback task is left alive, so a wrongly
            // doubled callback has run too before the counts are read.
            let deadline = Instant::now() + Duration::from_secs(20);
            while (total_runs.load(Ordering::SeqCst) < expected
                || rt.metrics().num_alive_tasks() > 0)
                && Instant::now() < deadline
            {
                thread::yield_now();
            }
            assert_eq!(
                rt.metrics().num_alive_tasks(),
                0,
                "callback tasks never ended"
            );
            rt.shutdown_timeout(Duration::from_secs(5));
            assert!(
                !early.load(Ordering::SeqCst),
                "a callback ran before err() was set"
            );
            for (id, prevented) in prevented.iter().enumerate() {
                let ran = runs[id].load(Ordering::SeqCst);
                assert_eq!(
                    ran,
                    u8::from(!prevented),
                    "callback {id}, stop() said {prevented}"
                );
            }
            assert_eq!(total_runs.load(Ordering::SeqCst), expected);
            let stopped = prevented.iter().filter(|p| **p).count();
            eprintln!(
                "callbacks: {} registered, {stopped} prevented by stop(), {expected} ran",
                ROUNDS * PER_ROUND
            );
            assert!(stopped > 0);
        },
    );
}
