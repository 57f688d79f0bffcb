//! Supervision (DESIGN.md, "Supervision: restarts for long-lived tasks"),
//! one test per sentence of the contract, on tokio's paused clock wherever
//! time is the subject. The races are in `supervisor_races.rs`.

mod support;

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskgroup::{
    Backoff, Context, Outcome, Restart, Run, Strategy, Supervisor, SupervisorError, TaskState,
};
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

/// What the children did, in order, with the paused clock's time since the
/// test began.
#[derive(Clone)]
struct Log {
    began: Instant,
    lines: Arc<Mutex<Vec<(u64, String)>>>,
}

impl Log {
    fn new() -> Log {
        Log {
            began: Instant::now(),
            lines: Arc::default(),
        }
    }

    fn say(&self, line: impl Into<String>) {
        let at = self.began.elapsed().as_millis() as u64;
        self.lines.lock().unwrap().push((at, line.into()));
    }

    /// The lines, without times.
    fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// The lines, each with its time in ms.
    fn timed(&self) -> Vec<(u64, String)> {
        self.lines.lock().unwrap().clone()
    }

    /// The lines that start with `prefix`.
    fn only(&self, prefix: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l.starts_with(prefix))
            .collect()
    }
}

/// What a run of a child does.
#[derive(Clone, Copy, Debug)]
enum Act {
    /// Returns `Ok` after so many ms.
    Ok(u64),
    /// Returns `Err` after so many ms.
    Err(u64),
    /// Panics after so many ms.
    Panic(u64),
    /// Runs until its context is cancelled, then winds down for so many
    /// ms and returns `Ok`.
    Serve(u64),
    /// Ignores its context: only a drop ends it.
    Deaf,
}

/// A child factory that logs `start <name>#<attempt>` and `stop <name>`
/// (its context cancelled) and `end <name>`, and acts as `script` says
/// for each attempt.
fn child(
    log: &Log,
    name: &'static str,
    script: impl Fn(u32) -> Act + Send + Sync + 'static,
) -> impl Fn(Context, Run) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
+ Send
+ Sync
+ 'static {
    let log = log.clone();
    move |ctx, run| {
        let log = log.clone();
        let act = script(run.attempt());
        Box::pin(async move {
            log.say(format!("start {name}#{}", run.attempt()));
            let _ended = Said(log.clone(), format!("end {name}"));
            match act {
                Act::Ok(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(())
                }
                Act::Err(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Err(format!("{name} failed"))
                }
                Act::Panic(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    panic!("{name} panicked");
                }
                Act::Serve(wind_down) => {
                    ctx.done().await;
                    log.say(format!("stop {name}"));
                    tokio::time::sleep(Duration::from_millis(wind_down)).await;
                    Ok(())
                }
                Act::Deaf => {
                    loop {
                        tokio::time::sleep(MS).await;
                        if ctx.is_cancelled() {
                            log.say(format!("stop {name}"));
                            // ... and goes on regardless.
                            loop {
                                tokio::time::sleep(MS).await;
                            }
                        }
                    }
                }
            }
        })
    }
}

/// Logs its line when dropped: when a run's future is gone.
struct Said(Log, String);

impl Drop for Said {
    fn drop(&mut self) {
        self.0.say(std::mem::take(&mut self.1));
    }
}

fn quiet_panics() {
    support::quiet_panics(|message| message.ends_with("panicked"));
}

fn supervisor(strategy: Strategy) -> Supervisor<String> {
    Supervisor::<String>::builder()
        .name("test")
        .strategy(strategy)
        .intensity(100, Duration::from_secs(60))
        .build()
}

// --- Children, contexts, runs ---------------------------------------------

#[tokio::test(start_paused = true)]
async fn children_start_when_spawned_in_order_and_run_counts_attempts() {
    let log = Log::new();
    let mut sup = supervisor(Strategy::OneForOne);
    for name in ["a", "b", "c"] {
        sup.child(name).spawn(child(&log, name, |_| Act::Serve(0)));
    }
    tokio::time::sleep(MS).await;
    assert_eq!(log.lines(), ["start a#0", "start b#0", "start c#0"]);
    let report = sup.shutdown().await.unwrap();
    let names: Vec<_> = report
        .children()
        .iter()
        .map(|c| (c.name(), c.starts()))
        .collect();
    assert_eq!(names, [("a", 1), ("b", 1), ("c", 1)]);
}

#[tokio::test(start_paused = true)]
async fn a_factory_needs_no_clone_of_what_it_captures_and_is_called_per_start() {
    struct NotClone(AtomicU32);
    let calls = Arc::new(NotClone(AtomicU32::new(0)));
    let seen = calls.clone();
    let mut sup = supervisor(Strategy::OneForOne);
    sup.child("counter").spawn(move |_ctx, run| {
        seen.0.fetch_add(1, SeqCst);
        async move {
            if run.attempt() < 3 {
                return Err(format!("attempt {}", run.attempt()));
            }
            std::future::pending().await
        }
    });
    tokio::time::sleep(MS).await;
    let report = sup.shutdown().await.unwrap();
    assert_eq!(calls.0.load(SeqCst), 4);
    assert_eq!(report.children()[0].starts(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_childs_context_has_the_supervisors_values_and_only_the_supervisor_cancels_it() {
    #[derive(Debug, PartialEq)]
    struct Region(&'static str);
    let (root, root_cancel) = Context::background().with_cancel();
    let parent = root.with_value(Region("eu-west"));
    let mut sup = Supervisor::<String>::builder().context(&parent).build();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Mutex::new(Some(tx));
    sup.child("worker").spawn(move |ctx, _| {
        if let Some(tx) = tx.lock().unwrap().take() {
            let _ = tx.send(ctx.clone());
        }
        async move {
            ctx.done().await;
            Ok(())
        }
    });
    let ctx = rx.await.unwrap();
    assert_eq!(ctx.value::<Region>(), Some(&Region("eu-west")));
    assert_eq!(ctx.deadline(), None);
    // The parent's cancel reaches the child through the supervisor, which
    // stops it; the tree does not cancel it directly.
    root_cancel.cancel();
    assert!(sup.context().is_cancelled());
    let report = sup.wait().await.unwrap();
    assert!(ctx.is_cancelled());
    assert_eq!(
        ctx.cause().unwrap().to_string(),
        "child \"worker\" stopped by its supervisor"
    );
    assert!(report.children()[0].last_exit().unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_supervisors_deadline_stops_its_children_one_by_one() {
    let log = Log::new();
    let (parent, _keep) = Context::background().with_timeout(Duration::from_millis(100));
    let mut sup = Supervisor::<String>::builder().context(&parent).build();
    sup.child("a").spawn(child(&log, "a", |_| Act::Serve(10)));
    sup.child("b").spawn(child(&log, "b", |_| Act::Serve(10)));
    let report = sup.wait().await.unwrap();
    assert_eq!(
        log.timed(),
        [
            (0, "start a#0".to_string()),
            (0, "start b#0".to_string()),
            (100, "stop b".to_string()),
            (110, "end b".to_string()),
            (110, "stop a".to_string()),
            (120, "end a".to_string()),
        ]
    );
    assert_eq!(report.children().len(), 2);
}

// --- Restart types under OneForOne ----------------------------------------

#[tokio::test(start_paused = true)]
async fn each_restart_type_restarts_after_the_ends_it_names() {
    quiet_panics();
    let table = [
        (Restart::Permanent, Act::Ok(5), true),
        (Restart::Permanent, Act::Err(5), true),
        (Restart::Permanent, Act::Panic(5), true),
        (Restart::Transient, Act::Ok(5), false),
        (Restart::Transient, Act::Err(5), true),
        (Restart::Transient, Act::Panic(5), true),
        (Restart::Temporary, Act::Ok(5), false),
        (Restart::Temporary, Act::Err(5), false),
        (Restart::Temporary, Act::Panic(5), false),
    ];
    for (restart, act, restarted) in table {
        let log = Log::new();
        let mut sup = supervisor(Strategy::OneForOne);
        sup.child("x")
            .restart(restart)
            .spawn(child(&log, "x", move |attempt| {
                if attempt == 0 { act } else { Act::Serve(0) }
            }));
        sup.child("keep")
            .spawn(child(&log, "keep", |_| Act::Serve(0)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let starts = log.only("start x");
        let expected: &[&str] = if restarted {
            &["start x#0", "start x#1"]
        } else {
            &["start x#0"]
        };
        assert_eq!(starts, expected, "{restart:?} after {act:?}");
        let report = sup.shutdown().await.unwrap();
        assert_eq!(report.children()[0].starts(), if restarted { 2 } else { 1 });
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_is_restarted_and_kept_as_last_exit() {
    quiet_panics();
    let log = Log::new();
    let mut sup = supervisor(Strategy::OneForOne);
    sup.child("flaky").spawn(child(&log, "flaky", |a| {
        if a == 0 { Act::Panic(1) } else { Act::Serve(0) }
    }));
    sup.child("once")
        .restart(Restart::Temporary)
        .spawn(child(&log, "once", |_| Act::Panic(2)));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(log.only("start flaky"), ["start flaky#0", "start flaky#1"]);
    let report = sup.shutdown().await.unwrap();
    let once = report.children()[1].last_exit().unwrap();
    let Outcome::Panicked(payload) = once else {
        panic!("not a panic")
    };
    assert_eq!(support::message(&**payload), "once panicked");
}

// --- Strategies -----------------------------------------------------------

/// With four children, b failing: `OneForAll` stops d, c and a (last
/// added first) and starts all four in order; `RestForOne` stops d and c
/// and starts b, c and d.
#[tokio::test(start_paused = true)]
async fn rounds_stop_in_reverse_and_start_in_order() {
    let first = ["start a#0", "start b#0", "start c#0", "start d#0", "end b"];
    let cases: [(Strategy, &[&str], [u32; 4]); 2] = [
        (
            Strategy::OneForAll,
            &[
                "stop d",
                "end d",
                "stop c",
                "end c",
                "stop a",
                "end a",
                "start a#1",
                "start b#1",
                "start c#1",
                "start d#1",
            ],
            [2, 2, 2, 2],
        ),
        (
            Strategy::RestForOne,
            &[
                "stop d",
                "end d",
                "stop c",
                "end c",
                "start b#1",
                "start c#1",
                "start d#1",
            ],
            [1, 2, 2, 2],
        ),
    ];
    for (strategy, then, starts) in cases {
        let log = Log::new();
        let mut sup = supervisor(strategy);
        for name in ["a", "b", "c", "d"] {
            sup.child(name).spawn(child(&log, name, move |n| {
                if name == "b" && n == 0 {
                    Act::Err(10)
                } else {
                    Act::Serve(0)
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let expected: Vec<&str> = first.iter().chain(then).copied().collect();
        assert_eq!(log.lines(), expected, "{strategy:?}");
        let report = sup.shutdown().await.unwrap();
        let counted: Vec<u32> = report.children().iter().map(|c| c.starts()).collect();
        assert_eq!(counted, starts, "{strategy:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn in_a_round_temporary_children_stay_stopped_and_transient_ones_come_back() {
    let log = Log::new();
    let mut sup = supervisor(Strategy::OneForAll);
    sup.child("temp")
        .restart(Restart::Temporary)
        .spawn(child(&log, "temp", |_| Act::Serve(0)));
    sup.child("trans")
        .restart(Restart::Transient)
        .spawn(child(&log, "trans", |_| Act::Serve(0)));
    sup.child("fails").spawn(child(&log, "fails", |a| {
        if a == 0 { Act::Err(5) } else { Act::Serve(0) }
    }));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        log.only("start"),
        [
            "start temp#0",
            "start trans#0",
            "start fails#0",
            "start trans#1",
            "start fails#1"
        ]
    );
    let report = sup.shutdown().await.unwrap();
    let starts: Vec<u32> = report.children().iter().map(|c| c.starts()).collect();
    assert_eq!(starts, [1, 2, 2]);
}

// --- Intensity ------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn more_restarts_than_the_intensity_stop_everything_and_name_the_child() {
    let log = Log::new();
    let mut sup = Supervisor::<String>::builder()
        .name("svc")
        .intensity(2, Duration::from_secs(5))
        .build();
    sup.child("steady")
        .spawn(child(&log, "steady", |_| Act::Serve(0)));
    sup.child("bad").spawn(child(&log, "bad", |_| Act::Err(10)));
    sup.child("later")
        .spawn(child(&log, "later", |_| Act::Serve(0)));
    let err = sup.wait().await.unwrap_err();
    let SupervisorError::IntensityExceeded {
        child,
        restarts,
        within,
        last,
    } = &err;
    assert_eq!(
        (child.as_str(), *restarts, *within),
        ("bad", 3, Duration::from_secs(5))
    );
    assert!(matches!(last, Outcome::Err(e) if e == "bad failed"));
    assert!(err.to_string().contains("\"bad\""), "{err}");
    // Stopped in reverse start order once the third restart was refused.
    assert_eq!(log.only("stop"), ["stop later", "stop steady"],);
    assert_eq!(
        log.only("start bad"),
        ["start bad#0", "start bad#1", "start bad#2"]
    );
}

#[tokio::test(start_paused = true)]
async fn restarts_of_every_child_count_together_within_a_sliding_period() {
    let log = Log::new();
    let mut sup = Supervisor::<String>::builder()
        .intensity(2, Duration::from_millis(100))
        .build();
    // a fails at 40 and 80 (then serves); b fails at 60 ms: the third
    // restart within 100 ms.
    sup.child("a").spawn(child(&log, "a", |n| {
        if n < 2 { Act::Err(40) } else { Act::Serve(0) }
    }));
    sup.child("b").spawn(child(&log, "b", |n| {
        if n == 0 { Act::Err(60) } else { Act::Serve(0) }
    }));
    let err = sup.wait().await.unwrap_err();
    let SupervisorError::IntensityExceeded { child: who, .. } = &err;
    assert_eq!(who, "a");

    // Spread out, the same restarts are fine: the window slides.
    let log = Log::new();
    let mut sup = Supervisor::<String>::builder()
        .intensity(1, Duration::from_millis(100))
        .build();
    sup.child("a").spawn(child(&log, "a", |n| {
        if n < 3 { Act::Err(150) } else { Act::Serve(0) }
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(log.only("start a").len(), 4);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_one_for_all_round_counts_as_one_restart() {
    let log = Log::new();
    let mut sup = Supervisor::<String>::builder()
        .strategy(Strategy::OneForAll)
        .intensity(1, Duration::from_secs(5))
        .build();
    for name in ["a", "b", "c"] {
        sup.child(name).spawn(child(&log, name, |_| Act::Serve(0)));
    }
    sup.child("bad").spawn(child(&log, "bad", |n| {
        if n < 2 { Act::Err(10) } else { Act::Serve(0) }
    }));
    // First round: 4 children restarted, one restart: allowed. The second
    // round is the second restart: refused.
    let err = sup.wait().await.unwrap_err();
    let SupervisorError::IntensityExceeded {
        child, restarts, ..
    } = &err;
    assert_eq!((child.as_str(), *restarts), ("bad", 2));
    assert_eq!(log.only("start a"), ["start a#0", "start a#1"]);
}

// --- Backoff --------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn backoff_doubles_to_its_cap_and_resets_after_a_healthy_run() {
    let log = Log::new();
    let mut sup = supervisor(Strategy::OneForOne);
    // Fails at once 5 times, then runs 1 s (healthy: reset_after 1 s),
    // fails, then fails at once again.
    sup.child("x")
        .backoff(
            Backoff::exponential(Duration::from_millis(100), Duration::from_millis(500))
                .reset_after(Duration::from_secs(1)),
        )
        .spawn(child(&log, "x", |n| {
            if n == 5 { Act::Err(1000) } else { Act::Err(0) }
        }));
    tokio::time::sleep(Duration::from_millis(3050)).await;
    let starts: Vec<u64> = log
        .timed()
        .into_iter()
        .filter(|(_, l)| l.starts_with("start"))
        .map(|(at, _)| at)
        .collect();
    // 100, 200, 400, 500 (capped), 500; the run of 1 s resets: 100, 200.
    assert_eq!(
        &starts[..8],
        [0, 100, 300, 700, 1200, 1700, 2800, 3000],
        "{starts:?}"
    );
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn backoff_none_restarts_at_once() {
    let log = Log::new();
    let mut sup = supervisor(Strategy::OneForOne);
    sup.child("x").spawn(child(&log, "x", |n| {
        if n < 3 { Act::Err(0) } else { Act::Serve(0) }
    }));
    tokio::time::sleep(MS).await;
    let times: Vec<u64> = log
        .timed()
        .into_iter()
        .filter(|(_, l)| l.starts_with("start"))
        .map(|(t, _)| t)
        .collect();
    assert_eq!(times, [0, 0, 0, 0]);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn jitter_stays_within_its_band_and_spreads() {
    let log = Log::new();
    let mut sup = Supervisor::<String>::builder()
        .intensity(1_000, Duration::from_secs(1))
        .build();
    sup.child("x")
        .backoff(
            Backoff::exponential(Duration::from_millis(100), Duration::from_millis(100))
                .jitter(0.2),
        )
        .spawn(child(&log, "x", |_| Act::Err(0)));
    tokio::time::sleep(Duration::from_secs(30)).await;
    sup.cancel();
    let _ = sup.wait().await;
    let starts: Vec<u64> = log
        .timed()
        .into_iter()
        .filter(|(_, l)| l.starts_with("start"))
        .map(|(t, _)| t)
        .collect();
    let waits: Vec<u64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(waits.len() > 200, "{} restarts", waits.len());
    assert!(waits.iter().all(|&w| (80..=120).contains(&w)), "{waits:?}");
    let low = waits.iter().filter(|&&w| w < 90).count();
    let high = waits.iter().filter(|&&w| w > 110).count();
    // Uniform over ±20 ms: a quarter of them below 90, a quarter above 110.
    assert!(
        low > waits.len() / 8 && high > waits.len() / 8,
        "low {low}, high {high} of {}",
        waits.len()
    );
}

#[test]
#[should_panic(expected = "min (1s) is greater than max (100ms)")]
fn backoff_refuses_a_min_above_its_max() {
    let _ = Backoff::exponential(Duration::from_secs(1), Duration::from_millis(100));
}

#[test]
#[should_panic(expected = "1.5 is not within 0.0..=1.0")]
fn backoff_refuses_a_jitter_outside_its_band() {
    let _ = Backoff::exponential(Duration::from_millis(1), Duration::from_secs(1)).jitter(1.5);
}

// --- Stopping -------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn children_stop_one_after_the_other_in_reverse_each_within_its_grace() {
    let log = Log::new();
    let mut sup = supervisor(Strategy::OneForOne);
    sup.child("a").spawn(child(&log, "a", |_| Act::Serve(0)));
    sup.child("b")
        .shutdown(Duration::from_millis(100))
        .spawn(child(&log, "b", |_| Act::Serve(30)));
    sup.child("c")
        .shutdown(Duration::from_millis(50))
        .spawn(child(&log, "c", |_| Act::Deaf));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let report = sup.shutdown().await.unwrap();
    let stops: Vec<(u64, String)> = log
        .timed()
        .into_iter()
        .filter(|(_, l)| !l.starts_with("start"))
        .collect();
    assert_eq!(
        stops,
        [
            (11, "stop c".to_string()), // the deaf one notices, at its next ms
            (60, "end c".to_string()),  // dropped when its 50 ms grace ran out
            (60, "stop b".to_string()), // only then is b cancelled
            (90, "end b".to_string()),  // winds down in 30 ms, within its grace
            (90, "stop a".to_string()),
            (90, "end a".to_string()),
        ]
    );
    let ends: Vec<bool> = report
        .children()
        .iter()
        .map(|c| c.last_exit().unwrap().is_ok())
        .collect();
    assert_eq!(
        ends,
        [true, true, false],
        "the deaf one was dropped: Cancelled"
    );
}

#[tokio::test(start_paused = true)]
async fn a_shield_holds_while_its_child_is_stopped() {
    let log = Log::new();
    let mut sup = supervisor(Strategy::OneForOne);
    let saved = log.clone();
    sup.child("flusher")
        .shutdown(Duration::from_millis(10))
        .spawn(move |ctx, _| {
            let saved = saved.clone();
            async move {
                ctx.done().await;
                let _ = ctx
                    .shield(Duration::from_secs(1), |_| async {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        saved.say("flushed");
                    })
                    .await;
                std::future::pending::<()>().await;
                Ok(())
            }
        });
    tokio::time::sleep(MS).await;
    let started = Instant::now();
    let report = sup.shutdown().await.unwrap();
    assert_eq!(log.lines(), ["flushed"]);
    assert_eq!(started.elapsed(), Duration::from_millis(300));
    assert!(report.children()[0].last_exit().unwrap().is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn nothing_restarts_once_the_supervisor_is_stopping() {
    let log = Log::new();
    let mut sup = supervisor(Strategy::OneForOne);
    sup.child("a").spawn(child(&log, "a", |_| Act::Serve(0)));
    // b fails while a's stop is under way.
    sup.child("b").spawn(child(&log, "b", |_| Act::Err(20)));
    sup.child("c")
        .shutdown(Duration::from_millis(50))
        .spawn(child(&log, "c", |_| Act::Deaf));
    tokio::time::sleep(Duration::from_millis(10)).await;
    sup.shutdown().await.unwrap();
    assert_eq!(log.only("start b"), ["start b#0"]);
}

#[test]
fn a_significant_permanent_child_is_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut sup = Supervisor::<String>::builder().build();
        let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            sup.child("main")
                .significant()
                .spawn(|_, _| async { Ok(()) });
        }));
        let message = support::message(&*refused.unwrap_err());
        assert!(
            message.contains("\"main\"") && message.contains("Permanent"),
            "{message}"
        );
        sup.shutdown().await.unwrap();
    });
}

#[tokio::test(start_paused = true)]
async fn a_significant_childs_normal_end_stops_the_supervisor() {
    let log = Log::new();
    let mut sup = supervisor(Strategy::OneForOne);
    sup.child("server")
        .spawn(child(&log, "server", |_| Act::Serve(0)));
    sup.child("job")
        .restart(Restart::Transient)
        .significant()
        .spawn(child(&log, "job", |n| {
            if n == 0 { Act::Err(10) } else { Act::Ok(10) }
        }));
    let report = sup.wait().await.unwrap();
    assert_eq!(log.only("start job"), ["start job#0", "start job#1"]);
    assert_eq!(log.only("stop"), ["stop server"]);
    assert!(report.children()[1].last_exit().unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn wait_returns_once_no_child_is_left_to_run() {
    let log = Log::new();
    let mut sup = supervisor(Strategy::OneForOne);
    sup.child("once")
        .restart(Restart::Temporary)
        .spawn(child(&log, "once", |_| Act::Err(10)));
    sup.child("job")
        .restart(Restart::Transient)
        .spawn(child(&log, "job", |_| Act::Ok(20)));
    let started = Instant::now();
    let report = sup.wait().await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(20));
    assert!(report.children()[0].last_exit().unwrap().is_err());
    assert!(report.children()[1].last_exit().unwrap().is_ok());
    let empty = Supervisor::<String>::builder().build();
    assert!(empty.wait().await.unwrap().children().is_empty());
}

// --- Working unpolled, names -----------------------------------------------

#[tokio::test(start_paused = true)]
async fn restarts_happen_while_nobody_awaits_wait() {
    let log = Log::new();
    let mut sup = supervisor(Strategy::OneForOne);
    sup.child("x")
        .backoff(Backoff::exponential(
            Duration::from_millis(10),
            Duration::from_millis(10),
        ))
        .spawn(child(&log, "x", |n| {
            if n < 3 { Act::Err(5) } else { Act::Serve(0) }
        }));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(log.only("start x").len(), 4);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn dump_shows_the_supervisor_its_children_their_starts_and_last_ends() {
    let log = Log::new();
    // A name of its own: the dump is the whole process's.
    let mut sup = Supervisor::<String>::builder().name("dumped").build();
    sup.child("purge").spawn(child(&log, "purge", |n| {
        if n == 0 { Act::Err(5) } else { Act::Serve(0) }
    }));
    sup.child("health")
        .spawn(child(&log, "health", |_| Act::Serve(0)));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let dump = taskgroup::dump();
    let group = dump
        .groups()
        .iter()
        .find(|g| g.name() == Some("dumped"))
        .expect("the supervisor is a group");
    let tasks: Vec<(Option<&str>, TaskState)> = group
        .tasks()
        .iter()
        .map(|t| (t.name(), t.state()))
        .collect();
    assert!(
        tasks.contains(&(Some("supervisor"), TaskState::Idle)),
        "{tasks:?}"
    );
    assert!(
        tasks.contains(&(Some("health"), TaskState::Idle)),
        "{tasks:?}"
    );
    assert!(
        tasks.contains(&(
            Some("purge (start 2, last end: error: purge failed)"),
            TaskState::Idle
        )),
        "{tasks:?}"
    );
    sup.shutdown().await.unwrap();
}

/// Every restart type under every strategy, with the order of starts and
/// stops observed: b, between a and c, fails once (with an `Err`, or ends
/// `Ok`).
#[tokio::test(start_paused = true)]
async fn each_restart_type_under_each_strategy_in_order() {
    use Restart::{Permanent, Temporary, Transient};
    use Strategy::{OneForAll, OneForOne, RestForOne};
    let first = ["start a#0", "start b#0", "start c#0", "end b"];
    let alone: &[&str] = &["start b#1"];
    let all: &[&str] = &[
        "stop c",
        "end c",
        "stop a",
        "end a",
        "start a#1",
        "start b#1",
        "start c#1",
    ];
    let rest: &[&str] = &["stop c", "end c", "start b#1", "start c#1"];
    let none: &[&str] = &[];
    let table: [(Strategy, Restart, Act, &[&str]); 18] = [
        (OneForOne, Permanent, Act::Err(5), alone),
        (OneForOne, Permanent, Act::Ok(5), alone),
        (OneForOne, Transient, Act::Err(5), alone),
        (OneForOne, Transient, Act::Ok(5), none),
        (OneForOne, Temporary, Act::Err(5), none),
        (OneForOne, Temporary, Act::Ok(5), none),
        (OneForAll, Permanent, Act::Err(5), all),
        (OneForAll, Permanent, Act::Ok(5), all),
        (OneForAll, Transient, Act::Err(5), all),
        (OneForAll, Transient, Act::Ok(5), none),
        (OneForAll, Temporary, Act::Err(5), none),
        (OneForAll, Temporary, Act::Ok(5), none),
        (RestForOne, Permanent, Act::Err(5), rest),
        (RestForOne, Permanent, Act::Ok(5), rest),
        (RestForOne, Transient, Act::Err(5), rest),
        (RestForOne, Transient, Act::Ok(5), none),
        (RestForOne, Temporary, Act::Err(5), none),
        (RestForOne, Temporary, Act::Ok(5), none),
    ];
    for (strategy, restart, act, then) in table {
        let log = Log::new();
        let mut sup = supervisor(strategy);
        sup.child("a").spawn(child(&log, "a", |_| Act::Serve(0)));
        sup.child("b")
            .restart(restart)
            .spawn(child(
                &log,
                "b",
                move |n| if n == 0 { act } else { Act::Serve(0) },
            ));
        sup.child("c").spawn(child(&log, "c", |_| Act::Serve(0)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let expected: Vec<&str> = first.iter().chain(then).copied().collect();
        assert_eq!(
            log.lines(),
            expected,
            "{strategy:?}, {restart:?}, b: {act:?}"
        );
        sup.shutdown().await.unwrap();
    }
}
