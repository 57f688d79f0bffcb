//! loom models of the supervisor's own synchronization (module invariants
//! 1 and 3): the owner and the driver share one state lock, and a run's
//! end reaches the driver through a channel. The models run the protocol
//! on loom's `Mutex` and channel (the driver itself needs tokio's timer
//! and channel, which loom does not model). Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --lib supervisor::models`.

use std::collections::HashMap;

use loom::sync::{Arc, Mutex, mpsc};
use loom::thread;

/// Invariant 1: the owner spawns a run and records it under the lock; the
/// run may end, and its end reach the driver, before the record is made.
/// The driver takes the lock to look the run up, so it always finds it.
#[test]
fn a_runs_end_always_finds_the_run_it_belongs_to() {
    loom::model(|| {
        let running = Arc::new(Mutex::new(HashMap::<u64, usize>::new()));
        let (ended, hear) = mpsc::channel::<u64>();
        let owner = {
            let running = running.clone();
            thread::spawn(move || {
                let mut state = running.lock().unwrap();
                // The spawn: the run may end at once, on another thread.
                let run = thread::spawn(move || ended.send(7).unwrap());
                state.insert(7, 0);
                drop(state);
                run.join().unwrap();
            })
        };
        let task = hear.recv().unwrap();
        let child = running.lock().unwrap().remove(&task);
        assert_eq!(child, Some(0), "the driver found the run's child");
        owner.join().unwrap();
    });
}

/// Invariant 3: the owner adds a child while the driver starts stopping.
/// Either the owner sees `stopping` and leaves the child unstarted, or the
/// driver's stop sees it running and stops it: none is left running.
#[test]
fn a_child_added_while_stopping_is_never_left_running() {
    struct State {
        stopping: bool,
        running: Vec<bool>,
    }
    loom::model(|| {
        let state = Arc::new(Mutex::new(State {
            stopping: false,
            running: vec![true],
        }));
        let owner = {
            let state = state.clone();
            thread::spawn(move || {
                let mut state = state.lock().unwrap();
                let start = !state.stopping;
                state.running.push(start);
            })
        };
        // The driver: mark stopping, then stop the children it sees, last
        // first, one lock hold each.
        let count = {
            let mut state = state.lock().unwrap();
            state.stopping = true;
            state.running.len()
        };
        for index in (0..count).rev() {
            state.lock().unwrap().running[index] = false;
        }
        owner.join().unwrap();
        let state = state.lock().unwrap();
        assert!(
            state.running.iter().all(|running| !running),
            "a child was left running"
        );
    });
}
