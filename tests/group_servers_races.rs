//! The races of long-lived groups, thousands of rounds on 2- and 4-worker
//! runtimes: spawners spawning while `wait` joins and while the group ends
//! (every closure is given back or its task joined; none runs after
//! `wait` returned), and `cancel_task` racing the task's own end and a
//! group cancel (the group never fails for a stopped task, the stopped
//! task's context reports its error when `cancel_task` returns).
//! `TASKGROUP_STRESS_ROUNDS` changes the number of rounds,
//! `TASKGROUP_STRESS_SEED` replays one.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use support::{Rng, multi_thread, rounds, seed_from_env_or_clock, yields};
use taskgroup::{Context, ContextError, GroupError, Spawner, TaskGroup};

/// What every round checks about the tasks it spawned.
#[derive(Default)]
struct Ledger {
    accepted: AtomicUsize,
    given_back: AtomicUsize,
    ran: AtomicUsize,
    /// A task started after `wait` returned.
    late: AtomicUsize,
    waited: AtomicBool,
}

impl Ledger {
    /// A task body that records that it ran, and whether `wait` had
    /// returned by then.
    fn task(
        self: &Arc<Self>,
        value: u64,
        pause: u64,
    ) -> impl FnOnce(Context) -> std::pin::Pin<Box<dyn Future<Output = Result<u64, String>> + Send>>
    + Send
    + 'static {
        let ledger = self.clone();
        move |_ctx| {
            Box::pin(async move {
                if ledger.waited.load(SeqCst) {
                    ledger.late.fetch_add(1, SeqCst);
                }
                ledger.ran.fetch_add(1, SeqCst);
                yields(pause).await;
                Ok(value)
            })
        }
    }

    fn spawn(
        self: &Arc<Self>,
        spawner: &Spawner<u64, String, taskgroup::FailFast>,
        value: u64,
        pause: u64,
    ) {
        match spawner.spawn(self.task(value, pause)) {
            Ok(_) => self.accepted.fetch_add(1, SeqCst),
            Err(f) => {
                // Given back untouched: dropped here, never run.
                drop(f);
                self.given_back.fetch_add(1, SeqCst)
            }
        };
    }
}

/// Feeders inside the group and a producer outside it spawn through
/// spawners while the owner waits: `wait` joins exactly the accepted
/// tasks, and the producer's late spawns come back.
async fn spawns_while_wait_joins(rng: &mut Rng) {
    let ledger = Arc::new(Ledger::default());
    let mut group = TaskGroup::<u64, String>::new();
    let spawner = group.spawner();
    let feeders = 1 + rng.below(3);
    for feeder in 0..feeders {
        let (spawner, ledger) = (spawner.clone(), ledger.clone());
        let (count, pause) = (1 + rng.below(6), rng.below(4));
        group.spawn(move |_ctx| async move {
            for n in 0..count {
                ledger.spawn(&spawner, feeder * 100 + n, pause);
                yields(pause).await;
            }
            Ok(1_000 + feeder)
        });
    }
    let producer = {
        let (spawner, ledger) = (spawner.clone(), ledger.clone());
        let (count, pause) = (1 + rng.below(20), rng.below(3));
        tokio::spawn(async move {
            for n in 0..count {
                ledger.spawn(&spawner, 10_000 + n, 0);
                yields(pause).await;
            }
        })
    };
    if rng.chance(50) {
        yields(rng.below(5)).await;
    }
    let values = group.wait().await.expect("every task returns Ok");
    ledger.waited.store(true, SeqCst);
    producer.await.unwrap();
    let accepted = ledger.accepted.load(SeqCst);
    assert_eq!(
        values.len(),
        feeders as usize + accepted,
        "wait joined the feeders and every accepted task"
    );
    assert_eq!(
        ledger.ran.load(SeqCst),
        accepted,
        "every accepted task ran once"
    );
    assert_eq!(
        ledger.late.load(SeqCst),
        0,
        "no task ran after wait returned"
    );
    assert!(spawner.spawn(ledger.task(0, 0)).is_err(), "ended");
}

/// The group is dropped (or shut down) while a producer spawns: every
/// spawn either comes back or its task is accounted for by the group:
/// run, or recorded as cancelled without running.
async fn spawns_racing_the_end(rng: &mut Rng) {
    let ledger = Arc::new(Ledger::default());
    let group = TaskGroup::<u64, String>::new();
    let spawner = group.spawner();
    let count = 1 + rng.below(30);
    let producer = {
        let ledger = ledger.clone();
        tokio::spawn(async move {
            for n in 0..count {
                ledger.spawn(&spawner, n, 1);
                tokio::task::yield_now().await;
            }
        })
    };
    yields(rng.below(8)).await;
    if rng.chance(50) {
        drop(group);
    } else {
        let report = group.shutdown(std::time::Duration::ZERO).await;
        ledger.waited.store(true, SeqCst);
        match report.output {
            Ok(values) => assert_eq!(values.len(), ledger.ran.load(SeqCst)),
            Err(GroupError::Cancelled(ContextError::Cancelled)) => {}
            Err(other) => panic!("a shutdown reports {other:?}"),
        }
    }
    producer.await.unwrap();
    let (accepted, back) = (ledger.accepted.load(SeqCst), ledger.given_back.load(SeqCst));
    assert_eq!(accepted + back, count as usize, "every spawn answered");
    assert!(ledger.ran.load(SeqCst) <= accepted);
    assert_eq!(
        ledger.late.load(SeqCst),
        0,
        "no task ran after shutdown returned"
    );
}

/// `cancel_task` on random tasks, racing their own ends and, in some
/// rounds, a cancel of the group's parent. A task returns `Err` only when
/// its context is cancelled (a consequence): the group never reports
/// `Failed`, and a task `cancel_task` returned `true` for reports its
/// error at once. Under a grace of a minute every task still ends within
/// a few yields of its cancel, so `wait` returns at once: a grace timer
/// left behind by a task that ended while `cancel_task` was arming it
/// would hold `wait` for the minute, past the round's 10 s.
async fn cancel_task_racing_ends_and_a_group_cancel(rng: &mut Rng) {
    let (parent, parent_cancel) = Context::background().with_cancel();
    let grace = match rng.below(10) {
        0..=2 => std::time::Duration::from_millis(1),
        3..=4 => std::time::Duration::from_secs(60),
        _ => std::time::Duration::ZERO,
    };
    let mut builder = TaskGroup::<u64, String>::builder()
        .context(&parent)
        .grace(grace);
    if rng.chance(30) {
        builder = builder.limit(1 + rng.below(3) as usize);
    }
    let mut group = builder.build();
    let tasks = 1 + rng.below(8) as usize;
    let contexts: Arc<Vec<Mutex<Option<Context>>>> =
        Arc::new((0..tasks).map(|_| Mutex::new(None)).collect());
    let mut ids = Vec::new();
    for n in 0..tasks {
        let contexts = contexts.clone();
        let pause = rng.below(6);
        ids.push(group.spawn(move |ctx| async move {
            *contexts[n].lock().unwrap() = Some(ctx.clone());
            for _ in 0..pause {
                if ctx.is_cancelled() {
                    return Err(format!("task {n}: {}", ctx.err().unwrap()));
                }
                tokio::task::yield_now().await;
            }
            Ok(n as u64)
        }));
    }
    let spawner = group.spawner();
    let picks: Vec<usize> = (0..1 + rng.below(4))
        .map(|_| rng.below(tasks as u64) as usize)
        .collect();
    let stops = {
        let (ids, contexts, pause) = (ids.clone(), contexts.clone(), rng.below(4));
        tokio::spawn(async move {
            let mut stopped = 0;
            for pick in picks {
                yields(pause).await;
                let started = contexts[pick].lock().unwrap().clone();
                if spawner.cancel_task(ids[pick]) {
                    stopped += 1;
                    if let Some(ctx) = started {
                        assert!(ctx.is_cancelled(), "cancelled when cancel_task returns");
                    }
                }
            }
            stopped
        })
    };
    let outside = rng.chance(40);
    if outside {
        yields(rng.below(6)).await;
        parent_cancel.cancel();
    }
    let result = group.wait().await;
    stops.await.unwrap();
    match result {
        Ok(values) => assert!(values.len() <= tasks),
        Err(GroupError::Cancelled(ContextError::Cancelled)) => {
            assert!(outside, "only the outside cancel cancels the group")
        }
        Err(other) => panic!("the group failed for a stopped task: {other:?}"),
    }
}

fn run_rounds(
    name: &str,
    workers: usize,
    default: usize,
    round: for<'a> fn(&'a mut Rng) -> std::pin::Pin<Box<dyn Future<Output = ()> + 'a>>,
) {
    let seed = seed_from_env_or_clock();
    let mut rng = Rng::new(seed);
    let runtime = multi_thread(workers);
    let rounds = rounds(default);
    for n in 0..rounds {
        let label = format!("{name}, {workers} workers, round {n}, TASKGROUP_STRESS_SEED={seed}");
        runtime.block_on(async {
            let done =
                tokio::time::timeout(std::time::Duration::from_secs(10), round(&mut rng)).await;
            assert!(done.is_ok(), "{label}: hung");
        });
    }
}

#[test]
fn spawners_spawning_while_wait_joins_2_workers() {
    run_rounds("spawns_while_wait_joins", 2, 2_000, |rng| {
        Box::pin(spawns_while_wait_joins(rng))
    });
}

#[test]
fn spawners_spawning_while_wait_joins_4_workers() {
    run_rounds("spawns_while_wait_joins", 4, 2_000, |rng| {
        Box::pin(spawns_while_wait_joins(rng))
    });
}

#[test]
fn spawns_racing_the_groups_end_2_workers() {
    run_rounds("spawns_racing_the_end", 2, 2_000, |rng| {
        Box::pin(spawns_racing_the_end(rng))
    });
}

#[test]
fn spawns_racing_the_groups_end_4_workers() {
    run_rounds("spawns_racing_the_end", 4, 2_000, |rng| {
        Box::pin(spawns_racing_the_end(rng))
    });
}

#[test]
fn cancel_task_racing_ends_and_group_cancels_2_workers() {
    run_rounds("cancel_task_racing", 2, 3_000, |rng| {
        Box::pin(cancel_task_racing_ends_and_a_group_cancel(rng))
    });
}

#[test]
fn cancel_task_racing_ends_and_group_cancels_4_workers() {
    run_rounds("cancel_task_racing", 4, 3_000, |rng| {
        Box::pin(cancel_task_racing_ends_and_a_group_cancel(rng))
    });
}
