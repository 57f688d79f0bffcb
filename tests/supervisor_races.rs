//! The races of supervision, thousands of rounds on 2- and 4-worker
//! runtimes with the real clock and millisecond times: children ending
//! while the supervisor stops, a restart's backoff timer racing a cancel,
//! a `OneForAll` round racing a second failure. Every round checks that
//! `wait` returns (bounded), that no run starts after it returned, and
//! that the report counts every start. `TASKGROUP_STRESS_ROUNDS` changes
//! the number of rounds, `TASKGROUP_STRESS_SEED` replays one.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{Rng, multi_thread, rounds, seed_from_env_or_clock};
use taskgroup::{Backoff, Strategy, Supervisor, SupervisorReport};

fn quiet_panics() {
    support::quiet_panics(|message| message == "race panic");
}

/// What a round's children report.
struct Seen {
    starts: Mutex<Vec<u32>>,
    /// `wait` has returned: no run may start after.
    returned: AtomicBool,
    late: AtomicU32,
    /// Failing first runs wait for it to open before their clocks start:
    /// for a round that must find every child added.
    gate: tokio::sync::Semaphore,
}

impl Default for Seen {
    fn default() -> Self {
        Seen {
            starts: Mutex::default(),
            returned: AtomicBool::new(false),
            late: AtomicU32::new(0),
            gate: tokio::sync::Semaphore::new(OPEN),
        }
    }
}

/// Permits enough for every failing first run: an open gate.
const OPEN: usize = 1 << 20;

impl Seen {
    /// A closed gate: failing first runs wait for [`Seen::open`].
    fn gated() -> Seen {
        Seen {
            gate: tokio::sync::Semaphore::new(0),
            ..Seen::default()
        }
    }

    fn open(&self) {
        self.gate.add_permits(OPEN);
    }

    fn started(&self, child: usize) {
        if self.returned.load(SeqCst) {
            self.late.fetch_add(1, SeqCst);
        }
        self.starts.lock().unwrap()[child] += 1;
    }

    fn check<E>(&self, report: &SupervisorReport<E>, label: &str) {
        assert_eq!(
            self.late.load(SeqCst),
            0,
            "{label}: a run started after wait returned"
        );
        let starts: Vec<u32> = report.children().iter().map(|c| c.starts()).collect();
        assert_eq!(
            *self.starts.lock().unwrap(),
            starts,
            "{label}: every start counted"
        );
    }
}

/// A child that, at each start, runs for `ms` and ends as `how` says:
/// 0 `Ok`, 1 `Err`, 2 panic, 3 serves until cancelled.
fn add_child(
    sup: &mut Supervisor<String>,
    seen: &Arc<Seen>,
    index: usize,
    script: Vec<(u8, u64)>,
    backoff: Backoff,
    grace: Duration,
) {
    seen.starts.lock().unwrap().push(0);
    let seen = seen.clone();
    sup.child(format!("c{index}"))
        .backoff(backoff)
        .shutdown(grace)
        .spawn(move |ctx, run| {
            let seen = seen.clone();
            let (how, ms) = script[(run.attempt() as usize).min(script.len() - 1)];
            let first = run.attempt() == 0;
            async move {
                seen.started(index);
                if first && matches!(how, 1 | 2) {
                    let _ = seen.gate.acquire().await;
                }
                match how {
                    3 => {
                        ctx.done().await;
                        Ok(())
                    }
                    _ => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        match how {
                            0 => Ok(()),
                            1 => Err("race error".to_string()),
                            _ => panic!("race panic"),
                        }
                    }
                }
            }
        });
}

async fn bounded<T>(label: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{label}: hung"))
}

/// Children end (ok, error, panic) around the moment the supervisor is
/// shut down.
async fn ending_while_stopping(rng: &mut Rng, label: &str) {
    let seen = Arc::new(Seen::default());
    let strategy = [
        Strategy::OneForOne,
        Strategy::OneForAll,
        Strategy::RestForOne,
    ][rng.below(3) as usize];
    let mut sup = Supervisor::<String>::builder()
        .strategy(strategy)
        .intensity(1_000, Duration::from_secs(1))
        .build();
    for index in 0..1 + rng.below(4) as usize {
        let script: Vec<(u8, u64)> = (0..3).map(|_| (rng.below(4) as u8, rng.below(3))).collect();
        add_child(
            &mut sup,
            &seen,
            index,
            script,
            Backoff::none(),
            Duration::from_millis(rng.below(3)),
        );
    }
    tokio::time::sleep(Duration::from_millis(rng.below(4))).await;
    let report = bounded(label, sup.shutdown()).await;
    seen.returned.store(true, SeqCst);
    let report = report.unwrap_or_else(|e| panic!("{label}: {e}"));
    tokio::time::sleep(Duration::from_millis(2)).await;
    seen.check(&report, label);
}

/// A child waits out a 1–2 ms backoff while the supervisor is cancelled.
async fn backoff_racing_a_cancel(rng: &mut Rng, label: &str) {
    let seen = Arc::new(Seen::default());
    let mut sup = Supervisor::<String>::builder()
        .intensity(1_000, Duration::from_secs(1))
        .build();
    let backoff = Backoff::exponential(Duration::from_millis(1), Duration::from_millis(2));
    add_child(&mut sup, &seen, 0, vec![(1, 0)], backoff, Duration::ZERO);
    add_child(
        &mut sup,
        &seen,
        1,
        vec![(3, 0)],
        Backoff::none(),
        Duration::ZERO,
    );
    tokio::time::sleep(Duration::from_micros(rng.below(3000))).await;
    sup.cancel();
    let report = bounded(label, sup.wait()).await;
    seen.returned.store(true, SeqCst);
    let report = report.unwrap_or_else(|e| panic!("{label}: {e}"));
    tokio::time::sleep(Duration::from_millis(3)).await;
    seen.check(&report, label);
}

/// Two children of a `OneForAll` supervisor fail at about the same time:
/// the second failure lands during the first's round. After it, every
/// child runs again.
async fn round_racing_a_second_failure(rng: &mut Rng, label: &str) {
    // The failures start their clocks once every child is added: a child
    // added after a failure is no member of its round.
    let seen = Arc::new(Seen::gated());
    let mut sup = Supervisor::<String>::builder()
        .strategy(Strategy::OneForAll)
        .intensity(1_000, Duration::from_secs(1))
        .build();
    let grace = Duration::from_millis(rng.below(2));
    add_child(&mut sup, &seen, 0, vec![(3, 0)], Backoff::none(), grace);
    add_child(
        &mut sup,
        &seen,
        1,
        vec![(1, rng.below(2)), (3, 0)],
        Backoff::none(),
        grace,
    );
    add_child(
        &mut sup,
        &seen,
        2,
        vec![(2, rng.below(2)), (3, 0)],
        Backoff::none(),
        grace,
    );
    add_child(&mut sup, &seen, 3, vec![(3, 0)], Backoff::none(), grace);
    seen.open();
    // Until every child has been restarted at least once.
    let waited = tokio::time::timeout(Duration::from_secs(3), async {
        while seen.starts.lock().unwrap().iter().any(|&n| n < 2) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    if waited.is_err() {
        let starts = seen.starts.lock().unwrap().clone();
        panic!(
            "{label}: hung; starts {starts:?}; {sup:?}\n{}",
            taskgroup::dump()
        );
    }
    let report = bounded(label, sup.shutdown()).await;
    seen.returned.store(true, SeqCst);
    let report = report.unwrap_or_else(|e| panic!("{label}: {e}"));
    seen.check(&report, label);
    // One or two rounds, never a child left behind.
    let starts: Vec<u32> = report.children().iter().map(|c| c.starts()).collect();
    assert!(
        starts.iter().all(|&n| (2..=3).contains(&n)),
        "{label}: {starts:?}"
    );
    assert!(
        starts.windows(2).all(|w| w[0] == w[1]),
        "{label}: rounds restart all: {starts:?}"
    );
}

/// One round, on the runtime `run_rounds` made.
type Round = for<'a> fn(&'a mut Rng, &'a str) -> std::pin::Pin<Box<dyn Future<Output = ()> + 'a>>;

fn run_rounds(name: &str, workers: usize, default: usize, round: Round) {
    quiet_panics();
    let seed = seed_from_env_or_clock();
    let mut rng = Rng::new(seed);
    let runtime = multi_thread(workers);
    for n in 0..rounds(default) {
        let label = format!("{name}, {workers} workers, round {n}, TASKGROUP_STRESS_SEED={seed}");
        runtime.block_on(round(&mut rng, &label));
    }
}

#[test]
fn children_ending_while_the_supervisor_stops_2_workers() {
    run_rounds("ending_while_stopping", 2, 1_000, |rng, label| {
        Box::pin(ending_while_stopping(rng, label))
    });
}

#[test]
fn children_ending_while_the_supervisor_stops_4_workers() {
    run_rounds("ending_while_stopping", 4, 1_000, |rng, label| {
        Box::pin(ending_while_stopping(rng, label))
    });
}

#[test]
fn a_backoff_timer_racing_a_cancel_2_workers() {
    run_rounds("backoff_racing_a_cancel", 2, 1_000, |rng, label| {
        Box::pin(backoff_racing_a_cancel(rng, label))
    });
}

#[test]
fn a_backoff_timer_racing_a_cancel_4_workers() {
    run_rounds("backoff_racing_a_cancel", 4, 1_000, |rng, label| {
        Box::pin(backoff_racing_a_cancel(rng, label))
    });
}

#[test]
fn a_one_for_all_round_racing_a_second_failure_2_workers() {
    run_rounds("round_racing_a_second_failure", 2, 1_000, |rng, label| {
        Box::pin(round_racing_a_second_failure(rng, label))
    });
}

#[test]
fn a_one_for_all_round_racing_a_second_failure_4_workers() {
    run_rounds("round_racing_a_second_failure", 4, 1_000, |rng, label| {
        Box::pin(round_racing_a_second_failure(rng, label))
    });
}
