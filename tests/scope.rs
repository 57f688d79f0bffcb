//! Scoped groups (`taskgroup::scope`, `scope_local` and the builder's two):
//! tasks that borrow, every outcome, panics, deadlines, drops, fairness,
//! a stress run through a limit, and heap that stays flat.
//!
//! The heap test counts with the counting allocator, per thread: it drives
//! its scope on a current-thread runtime of its own thread.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
mod support;

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures::FutureExt as _;
use taskgroup::{
    Cause, Context, ContextError, Decision, FirstOk, GroupError, Joiner, LocalScope, Outcome,
    Scope, Supervise, TaskFailed, TaskGroup, TaskId, Unread,
};
use tokio::time::{Instant, sleep};

use support::{DropCounter, Rng, drop_flag, message, seed_from_env_or_clock};

const HOUR: Duration = Duration::from_secs(3600);

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

/// A joiner that cancels on the first error, as FailFast does, and returns
/// how every task ended, in spawn order.
struct Record;

impl<T, E> Joiner<T, E> for Record {
    type Output = Vec<&'static str>;

    fn on_complete(&mut self, _: TaskId, outcome: &Outcome<T, E>, group: &Context) -> Decision {
        if outcome.is_err() && !group.is_cancelled() {
            return Decision::Cancel(Cause::new(ContextError::Cancelled));
        }
        Decision::Continue
    }

    fn finish(self, unread: Unread<T, E>, _: &Context) -> Vec<&'static str> {
        unread
            .map(|(_, outcome)| match outcome {
                Outcome::Ok(_) => "ok",
                Outcome::Err(_) => "err",
                Outcome::Cancelled => "cancelled",
                Outcome::Panicked(_) => "panicked",
            })
            .collect()
    }
}

fn assert_send<F: Future + Send>(fut: F) -> F {
    fut
}

#[tokio::test(start_paused = true)]
async fn tasks_borrow_from_the_caller_and_values_come_back_in_spawn_order() {
    let ctx = Context::background();
    let urls: Vec<String> = (0..5).map(|i| format!("u{i}")).collect();
    let mut seen = Vec::new(); // borrowed mutably by the body, after the tasks
    let start = Instant::now();
    let out = taskgroup::scope(&ctx, async |s| {
        for (i, url) in urls.iter().enumerate() {
            // Later tasks finish first.
            s.spawn(move |_ctx| async move {
                sleep(Duration::from_millis(50 - 10 * i as u64)).await;
                Ok::<_, String>(url.as_str())
            });
        }
        seen.push(s.len());
    })
    .await;
    assert_eq!(out.unwrap(), ["u0", "u1", "u2", "u3", "u4"]);
    assert_eq!(seen, [5]);
    assert_eq!(start.elapsed(), Duration::from_millis(50));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn async_closure_bodies_work_too() {
    let ctx = Context::background();
    let words = ["a", "bb"];
    let out = taskgroup::scope(&ctx, async |s| {
        for w in &words {
            s.spawn(move |_| async move { Ok::<_, String>(w.len()) });
        }
    })
    .await;
    assert_eq!(out, Ok(vec![1, 2]));
    let out = TaskGroup::builder()
        .limit(1)
        .scope_local(async |s| {
            let rc = Rc::new(3);
            s.spawn(move |_| async move { Ok::<_, String>(*rc) });
        })
        .await;
    assert_eq!(out, Ok(vec![3]));
}

#[tokio::test(start_paused = true)]
async fn borrowed_data_is_dropped_exactly_once_whether_a_task_finished_failed_was_cancelled_or_never_started()
 {
    let ctx = Context::background();
    let data_drops = counter();
    let task_drops = counter();
    let data = DropCounter(data_drops.clone());
    let out = TaskGroup::builder()
        .joiner(Record)
        .limit(3)
        .context(&ctx)
        .scope(async |s: Scope<'_, u32, String, Record>| {
            let data = &data;
            let owned = || DropCounter(task_drops.clone());
            // 0 finishes, 1 fails at 10 ms, 2 is parked when it does,
            // 3 and 4 wait behind the limit and never start.
            let mine = owned();
            s.spawn(move |_| async move {
                let _mine = mine;
                let _ = data.0.load(SeqCst);
                Ok(0)
            });
            let mine = owned();
            s.spawn(move |_| async move {
                let _mine = mine;
                sleep(Duration::from_millis(10)).await;
                Err(format!("failed beside {}", data.0.load(SeqCst)))
            });
            for _ in 2..5 {
                let mine = owned();
                s.spawn(move |_| async move {
                    let _mine = mine;
                    sleep(HOUR).await;
                    Ok(data.0.load(SeqCst) as u32)
                });
            }
        })
        .await;
    assert_eq!(out, ["ok", "err", "cancelled", "cancelled", "cancelled"]);
    assert_eq!(task_drops.load(SeqCst), 5, "each task's own value once");
    assert_eq!(
        data_drops.load(SeqCst),
        0,
        "the borrowed data is the caller's"
    );
    drop(data);
    assert_eq!(data_drops.load(SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_task_spawned_after_the_cancel_never_starts_and_counts_as_cancelled() {
    let called = AtomicBool::new(false);
    let dropped = counter();
    let out = TaskGroup::<(), String>::builder()
        .joiner(Supervise)
        .scope(async |s| {
            s.cancel();
            let mine = DropCounter(dropped.clone());
            let called = &called;
            s.spawn(move |_| {
                called.store(true, SeqCst);
                let _mine = mine;
                async { Ok(()) }
            });
        })
        .await;
    assert!(matches!(out[..], [Outcome::Cancelled]));
    assert!(!called.load(SeqCst));
    assert_eq!(dropped.load(SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_first_error_cancels_the_scope_and_drops_the_body_and_siblings_at_their_next_await() {
    let ctx = Context::background();
    let (sibling, sibling_dropped) = drop_flag();
    let (body_guard, body_dropped) = drop_flag();
    let start = Instant::now();
    let out = TaskGroup::builder()
        .name("fetch")
        .context(&ctx)
        .scope(async |s| {
            let _guard = body_guard;
            s.spawn(|_| async move {
                let _sibling = sibling;
                sleep(HOUR).await; // ignores its context
                Ok(1)
            });
            let cause = Arc::new(Mutex::new(None));
            let seen = cause.clone();
            s.spawn(move |ctx| async move {
                ctx.done().await;
                *seen.lock().unwrap() = ctx.cause();
                Ok(2)
            });
            s.spawn(|_| async {
                sleep(Duration::from_millis(5)).await;
                Err("backend 2 is down".to_string())
            });
            sleep(HOUR).await; // the body is dropped here too
            unreachable!("the body is dropped at its await");
        })
        .await;
    assert_eq!(
        out,
        Err(GroupError::Failed("backend 2 is down".to_string()))
    );
    assert_eq!(start.elapsed(), Duration::from_millis(5));
    assert!(sibling_dropped.load(SeqCst) && body_dropped.load(SeqCst));
}

#[tokio::test(start_paused = true)]
async fn a_named_scope_names_itself_in_the_cause_of_a_failure() {
    let scope_ctx = Mutex::new(None);
    let out = TaskGroup::builder()
        .name("fetch")
        .scope(async |s| {
            *scope_ctx.lock().unwrap() = Some(s.context().clone());
            s.spawn(|_| async { Ok(()) });
            s.spawn(|_| async { Err("refused".to_string()) });
        })
        .await;
    assert_eq!(out, Err(GroupError::Failed("refused".to_string())));
    let ctx = scope_ctx.into_inner().unwrap().unwrap();
    let cause = ctx.cause().expect("cancelled with a cause");
    let failed = cause
        .downcast_ref::<TaskFailed>()
        .expect("a TaskFailed cause");
    assert_eq!((failed.task().index(), failed.group()), (1, Some("fetch")));
    assert!(cause.to_string().contains("refused"), "{cause}");
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_a_task_is_re_raised_after_every_task_is_dropped() {
    let (sibling, sibling_dropped) = drop_flag();
    let ctx = Context::background();
    let scoped = taskgroup::scope(&ctx, async |s| {
        s.spawn(|_| async move {
            let _sibling = sibling;
            sleep(HOUR).await;
            Ok::<(), String>(())
        });
        s.spawn(|_| async {
            sleep(Duration::from_millis(1)).await;
            panic!("task bug");
        });
    });
    let payload = AssertUnwindSafe(scoped).catch_unwind().await.unwrap_err();
    assert_eq!(message(&*payload), "task bug");
    assert!(sibling_dropped.load(SeqCst));
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_the_body_is_re_raised_after_every_task_is_dropped() {
    let (task, task_dropped) = drop_flag();
    let ctx = Context::background();
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let saw = saw_cancel.clone();
    let scoped = taskgroup::scope(&ctx, async |s| {
        s.spawn(|ctx| async move {
            let _task = task;
            let _ = ctx.sleep(HOUR).await; // a cancel ends it
            saw.store(ctx.is_cancelled(), SeqCst);
            Ok::<(), String>(())
        });
        sleep(Duration::from_millis(1)).await;
        panic!("body bug");
    });
    let payload = AssertUnwindSafe(scoped).catch_unwind().await.unwrap_err();
    assert_eq!(message(&*payload), "body bug");
    assert!(task_dropped.load(SeqCst));
    // The task was dropped at its await, before it could look.
    assert!(!saw_cancel.load(SeqCst));
}

#[tokio::test(start_paused = true)]
async fn supervise_in_a_scope_reports_a_panic_instead_of_raising_it() {
    let out = TaskGroup::<u8, String>::builder()
        .joiner(Supervise)
        .scope(async |s| {
            s.spawn(|_| async { panic!("reported") });
            s.spawn(|_| async { Ok(2) });
        })
        .await;
    assert!(out[0].is_panicked() && matches!(out[1], Outcome::Ok(2)));
}

#[tokio::test(start_paused = true)]
async fn first_ok_in_a_scope_drops_the_losers_and_the_body() {
    let start = Instant::now();
    let replicas = ["eu", "us", "ap"];
    let out = TaskGroup::<&str, String>::builder()
        .joiner(FirstOk)
        .scope(async |s| {
            // A hedge by hand: a new attempt every 40 ms.
            for (i, name) in replicas.iter().enumerate() {
                s.spawn(move |_| async move {
                    sleep(Duration::from_millis(100 - 45 * i as u64)).await;
                    Ok(*name)
                });
                sleep(Duration::from_millis(40)).await;
            }
        })
        .await;
    // "us" starts at 40 ms and answers at 95 ms; "ap" (80 + 10 = 90 ms)
    // answers first.
    assert_eq!(out, Ok("ap"));
    assert_eq!(start.elapsed(), Duration::from_millis(90));
}

#[tokio::test(start_paused = true)]
async fn a_parent_deadline_ends_the_scope_at_the_deadline() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(100));
    let (task, task_dropped) = drop_flag();
    let start = Instant::now();
    let out = taskgroup::scope(&ctx, async |s| {
        s.spawn(|_| async move {
            let _task = task;
            sleep(HOUR).await; // ignores its context: dropped at the deadline
            Ok::<(), String>(())
        });
        s.spawn(|_| async { Ok(()) });
        sleep(HOUR).await;
    })
    .await;
    assert_eq!(
        out,
        Err(GroupError::Cancelled(ContextError::DeadlineExceeded))
    );
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert!(task_dropped.load(SeqCst));
}

#[tokio::test(start_paused = true)]
async fn a_body_that_returns_before_its_tasks_still_joins_them() {
    let start = Instant::now();
    let body_done = Cell::new(None);
    let out = taskgroup::scope(&Context::background(), async |s| {
        for ms in [30, 10, 20] {
            s.spawn(move |_| async move {
                sleep(Duration::from_millis(ms)).await;
                Ok::<_, String>(ms)
            });
        }
        body_done.set(Some(start.elapsed()));
    })
    .await;
    assert_eq!(out, Ok(vec![30, 10, 20]));
    assert_eq!(body_done.get(), Some(Duration::ZERO));
    assert_eq!(start.elapsed(), Duration::from_millis(30));
}

#[tokio::test(start_paused = true)]
async fn a_body_that_awaits_its_own_tasks_sees_their_results() {
    let out = taskgroup::scope(&Context::background(), async |s| {
        let (tx, rx) = tokio::sync::oneshot::channel();
        s.spawn(|_| async move {
            sleep(Duration::from_millis(5)).await;
            tx.send(20).unwrap();
            Ok::<_, String>(1)
        });
        let n = rx.await.unwrap(); // a task of this very scope
        s.spawn(move |_| async move { Ok(n + 1) });
    })
    .await;
    assert_eq!(out, Ok(vec![1, 21]));
}

#[tokio::test(start_paused = true)]
async fn a_task_can_spawn_into_its_own_scope() {
    let out = taskgroup::scope(&Context::background(), async |s| {
        let inner = s.clone();
        s.spawn(move |_| async move {
            for i in 1..4 {
                inner.spawn(move |_| async move { Ok::<_, String>(i * 10) });
            }
            Ok(0)
        });
    })
    .await;
    assert_eq!(out, Ok(vec![0, 10, 20, 30]));
}

#[test]
fn dropping_the_scope_future_halfway_drops_the_body_and_every_task_at_once() {
    let data_drops = counter();
    let data = DropCounter(data_drops.clone());
    let task_drops = counter();
    let late_called = AtomicBool::new(false);
    let (body_guard, body_dropped) = drop_flag();
    {
        // A handle kept in the caller's frame, beside the borrowed data.
        // (Behind an `Arc` moved in: a slot the body borrowed would stay
        // borrowed by the handle in it, as long as it lives.)
        let kept = Arc::new(Mutex::new(None));
        {
            let (slot, data, task_drops) = (kept.clone(), &data, &task_drops);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _guard = rt.enter();
            let scoped = TaskGroup::<usize, String>::builder()
                .limit(2)
                .scope(async move |s| {
                    let _body = body_guard;
                    *slot.lock().unwrap() = Some(s.clone());
                    for _ in 0..4 {
                        let mine = DropCounter(task_drops.clone());
                        s.spawn(move |_| async move {
                            let _mine = mine;
                            std::future::pending::<()>().await;
                            Ok(data.0.load(SeqCst))
                        });
                    }
                    std::future::pending::<()>().await;
                });
            let mut scoped = tokio_test::task::spawn(scoped);
            assert!(scoped.poll().is_pending());
            assert_eq!(task_drops.load(SeqCst), 0);
            drop(scoped);
            // Two running, two waiting: all dropped, each once, with the body.
            assert_eq!(task_drops.load(SeqCst), 4);
            assert!(body_dropped.load(SeqCst));
        }
        // The handle outlived the scope future: what it spawns never runs.
        let handle = kept.lock().unwrap().take().unwrap();
        assert!(handle.context().is_cancelled());
        let late = &late_called;
        handle.spawn(move |_| {
            late.store(true, SeqCst);
            async { Ok(0) }
        });
        assert!(handle.try_spawn(|_| async { Ok(0) }).is_err());
        assert!(handle.is_empty());
    }
    assert!(!late_called.load(SeqCst));
    assert_eq!(data_drops.load(SeqCst), 0);
    drop(data);
    assert_eq!(data_drops.load(SeqCst), 1);
}

#[test]
fn forgetting_the_scope_future_is_sound_its_tasks_are_never_polled_again() {
    let polls = AtomicUsize::new(0);
    let mut data = vec![1, 2, 3];
    {
        let data = &data;
        let polls = &polls;
        let scoped = taskgroup::scope(&Context::background(), async |s| {
            s.spawn(move |_| async move {
                poll_fn(|_| {
                    polls.fetch_add(1, SeqCst);
                    let _ = data.len();
                    Poll::<()>::Pending
                })
                .await;
                Ok::<_, String>(())
            });
        });
        let mut scoped = Box::pin(scoped);
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(scoped.as_mut().poll(&mut cx).is_pending());
        std::mem::forget(scoped); // leaks the task, no unsafe anywhere
    }
    // The borrow is over: `data` may be changed and dropped, and nothing
    // polls the leaked task again.
    data.push(4);
    drop(data);
    assert_eq!(polls.load(SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_tasks_through_a_limit_of_64() {
    const TASKS: u64 = 10_000;
    let seed = seed_from_env_or_clock();
    let running = AtomicUsize::new(0);
    let peak = AtomicUsize::new(0);
    let input: Vec<u64> = (0..TASKS).collect();
    let out = TaskGroup::<u64, String>::builder()
        .limit(64)
        .scope(async |s| {
            let mut rng = Rng::new(seed);
            for x in &input {
                let (running, peak) = (&running, &peak);
                let (yields, remote) = (rng.below(4), rng.chance(20));
                if rng.chance(50) {
                    s.ready().await;
                }
                s.spawn(move |_| async move {
                    let now = running.fetch_add(1, SeqCst) + 1;
                    peak.fetch_max(now, SeqCst);
                    for _ in 0..yields {
                        tokio::task::yield_now().await;
                    }
                    if remote {
                        // Woken from another thread.
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        std::thread::spawn(move || tx.send(()).unwrap());
                        rx.await.unwrap();
                    }
                    running.fetch_sub(1, SeqCst);
                    Ok(x * 2)
                });
            }
        })
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    assert_eq!(out.len(), TASKS as usize);
    assert!(out.iter().enumerate().all(|(i, v)| *v == 2 * i as u64));
    let peak = peak.load(SeqCst);
    assert!(peak <= 64 && peak > 1, "seed {seed}: peak {peak}");
}

/// 10,000 tasks through a limit of 64 with `ready()`, each holding 1 KiB
/// across an await: the heap never holds more than the limit's worth of
/// tasks (10 MiB if they were all alive), and the scope gives everything
/// back when it returns, run after run.
#[test]
fn ten_thousand_tasks_through_a_limit_of_64_keep_the_heap_flat() {
    use counting_alloc::live_bytes;
    const TASKS: usize = 10_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let run = || async {
            let peak = AtomicUsize::new(0);
            let out = TaskGroup::<(), String>::builder()
                .limit(64)
                .joiner(Supervise)
                .scope(async |s| {
                    for _ in 0..TASKS {
                        s.ready().await;
                        let peak = &peak;
                        s.spawn(move |_| async move {
                            let buffer = vec![1u8; 1024];
                            tokio::task::yield_now().await;
                            peak.fetch_max(live_bytes().max(0) as usize, SeqCst);
                            drop(buffer);
                            Ok(())
                        });
                    }
                })
                .await;
            assert_eq!(out.len(), TASKS);
            drop(out);
            peak.load(SeqCst) as isize
        };
        run().await; // what the allocator keeps once
        let before = live_bytes();
        for round in 0..3 {
            let peak = run().await;
            let grown = peak - before;
            // 64 tasks of ~1.2 KiB, plus the outcomes (40 B a task, in a
            // VecDeque that doubles): under 1 MiB.
            assert!(
                grown < 1 << 20,
                "round {round}: peak {grown} B over the baseline"
            );
            assert!(
                (live_bytes() - before).abs() < 4096,
                "round {round}: {} B kept after the scope returned",
                live_bytes() - before
            );
        }
    });
}

/// Documented: a task that never yields holds back the body and every
/// sibling until it returns, since they share its poll; one that yields
/// lets them run.
#[tokio::test(flavor = "current_thread")]
async fn a_task_that_never_yields_holds_back_its_siblings_until_it_returns() {
    for yields in [false, true] {
        let sibling_ran = AtomicBool::new(false);
        let body_ran_again = AtomicBool::new(false);
        let spins = AtomicUsize::new(0);
        let out = taskgroup::scope(&Context::background(), async |s| {
            let (sibling_ran, spins) = (&sibling_ran, &spins);
            s.spawn(move |_| async move {
                // Spin until the sibling has run, or 100,000 rounds.
                for _ in 0..100_000 {
                    if sibling_ran.load(SeqCst) {
                        break;
                    }
                    spins.fetch_add(1, SeqCst);
                    if yields {
                        tokio::task::yield_now().await;
                    }
                }
                Ok::<_, String>(sibling_ran.load(SeqCst))
            });
            s.spawn(move |_| async move {
                sibling_ran.store(true, SeqCst);
                Ok(true)
            });
            tokio::task::yield_now().await;
            body_ran_again.store(true, SeqCst);
        })
        .await;
        if yields {
            // The sibling ran at the spinner's first yield.
            assert_eq!(out, Ok(vec![true, true]));
            assert!(spins.load(SeqCst) < 10);
        } else {
            // The sibling ran only once the spinner had returned.
            assert_eq!(out, Ok(vec![false, true]));
            assert_eq!(spins.load(SeqCst), 100_000);
        }
        assert!(body_ran_again.load(SeqCst));
    }
}

/// futures-rs#2387: a task that wakes itself at once, forever, must not
/// starve the body or a sibling (nor the rest of the runtime).
#[tokio::test(flavor = "current_thread")]
async fn a_task_that_wakes_itself_at_once_cannot_starve_the_body_siblings_or_the_runtime() {
    let stop = Arc::new(AtomicBool::new(false));
    // Another tokio task on this one thread, outside the scope.
    let outside = tokio::spawn({
        let stop = stop.clone();
        async move {
            tokio::task::yield_now().await;
            stop.store(true, SeqCst);
        }
    });
    let sibling_polls = AtomicUsize::new(0);
    let body_polls = AtomicUsize::new(0);
    let out = taskgroup::scope(&Context::background(), async |s| {
        let (stop, sibling_polls) = (&stop, &sibling_polls);
        // Wakes itself in every poll (not through tokio's deferred yield).
        s.spawn(move |_| async move {
            let mut polls = 0u64;
            poll_fn(|cx| {
                polls += 1;
                if stop.load(SeqCst) {
                    return Poll::Ready(());
                }
                cx.waker().wake_by_ref();
                Poll::Pending
            })
            .await;
            Ok::<_, String>(polls)
        });
        s.spawn(move |_| async move {
            poll_fn(|cx| {
                sibling_polls.fetch_add(1, SeqCst);
                if stop.load(SeqCst) {
                    return Poll::Ready(());
                }
                cx.waker().wake_by_ref();
                Poll::Pending
            })
            .await;
            Ok(0)
        });
        poll_fn(|cx| {
            body_polls.fetch_add(1, SeqCst);
            if stop.load(SeqCst) {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await;
    })
    .await;
    outside.await.unwrap();
    let spinner_polls = out.unwrap()[0];
    // Each got its turns, round by round: none ran far ahead.
    let (sibling, body) = (
        sibling_polls.load(SeqCst) as u64,
        body_polls.load(SeqCst) as u64,
    );
    assert!(
        spinner_polls.abs_diff(sibling) <= 1,
        "{spinner_polls} vs {sibling}"
    );
    assert!(
        spinner_polls.abs_diff(body) <= 1,
        "{spinner_polls} vs {body}"
    );
    // The outside task ran after one turn of at most 128 polls.
    assert!(spinner_polls <= 128, "{spinner_polls}");
}

/// tokio's cooperative budget: a task whose resources are always ready
/// (an unbounded channel) is cut short by the budget, and the scope yields
/// to the runtime instead of spinning.
#[tokio::test(flavor = "current_thread")]
async fn tokio_s_cooperative_budget_makes_the_scope_yield_to_the_runtime() {
    let stop = Arc::new(AtomicBool::new(false));
    let outside = tokio::spawn({
        let stop = stop.clone();
        async move { stop.store(true, SeqCst) }
    });
    let rounds = taskgroup::scope(&Context::background(), async |s| {
        let stop = &stop;
        s.spawn(move |_| async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let mut rounds = 0u64;
            while !stop.load(SeqCst) {
                tx.send(()).unwrap();
                rx.recv().await.unwrap(); // always ready, but budgeted
                rounds += 1;
            }
            Ok::<_, String>(rounds)
        });
    })
    .await
    .unwrap()[0];
    outside.await.unwrap();
    assert!(
        rounds <= 256,
        "{rounds} rounds before the runtime got a turn"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scope_future_is_send_and_runs_inside_tokio_spawn() {
    let ctx = Context::background();
    let joined = tokio::spawn(async move {
        let pages: Vec<String> = (0..100).map(|i| format!("p{i}")).collect();
        let scoped = taskgroup::scope(&ctx, async |s| {
            for page in &pages {
                s.spawn(move |ctx| async move {
                    ctx.check().map_err(|e| e.to_string())?;
                    tokio::task::yield_now().await;
                    Ok::<_, String>(page.len())
                });
            }
        });
        assert_send(scoped).await
    })
    .await
    .unwrap();
    assert_eq!(joined.unwrap().len(), 100);
    let builder_scoped = TaskGroup::<u8, String>::builder().scope(async |s| {
        s.spawn(|_| async { Ok(1) });
    });
    assert_eq!(assert_send(builder_scoped).await, Ok(vec![1]));
}

#[tokio::test(flavor = "current_thread")]
async fn scope_local_tasks_may_hold_rc_and_refcell_across_awaits() {
    let log = RefCell::new(Vec::new());
    let out = taskgroup::scope_local(&Context::background(), async |s| {
        let log = &log;
        for i in 0..3 {
            let shared = Rc::new(i);
            s.spawn(move |_| async move {
                tokio::task::yield_now().await;
                log.borrow_mut().push(*shared);
                Ok::<_, String>(Rc::strong_count(&shared))
            });
        }
    })
    .await;
    assert_eq!(out, Ok(vec![1, 1, 1]));
    let mut log = log.into_inner();
    log.sort_unstable(); // tokio wakes yielded tasks in its own order
    assert_eq!(log, [0, 1, 2]);
}

#[tokio::test(flavor = "current_thread")]
async fn try_spawn_gives_the_closure_back_when_full_or_cancelled() {
    let out = TaskGroup::<u8, String>::builder()
        .limit(2)
        .scope(async |s| {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            assert!(s.try_spawn(|_| async { Ok(1) }).is_ok());
            assert!(
                s.try_spawn(|_| async move {
                    rx.await.unwrap();
                    Ok(2)
                })
                .is_ok()
            );
            let back = s.try_spawn(|_| async { Ok(3) }).unwrap_err();
            tokio::task::yield_now().await; // task 0 ends
            assert_eq!(s.len(), 1);
            let id = s.try_spawn(back).ok().unwrap();
            assert_eq!(id.index(), 2);
            tx.send(()).unwrap();
        })
        .await;
    assert_eq!(out, Ok(vec![1, 2, 3]));
    let out = taskgroup::scope(&Context::background(), async |s| {
        s.cancel();
        assert!(s.try_spawn(|_| async { Ok::<u8, String>(1) }).is_err());
    })
    .await;
    assert_eq!(
        out,
        Ok(vec![]),
        "no task ended before the cancel: none failed"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_body_waiting_in_ready_is_dropped_by_a_cancel() {
    let out = TaskGroup::<(), String>::builder()
        .limit(1)
        .scope(async |s| {
            s.spawn(|_| std::future::pending());
            let canceller = s.clone();
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                canceller.cancel();
            });
            s.ready().await; // full until the cancel
            unreachable!("the body is dropped by the cancel while it waits");
        })
        .await;
    assert_eq!(out, Err(GroupError::Cancelled(ContextError::Cancelled)));
}

#[tokio::test(flavor = "current_thread")]
async fn a_scope_without_tasks_returns_at_once() {
    let out = taskgroup::scope(&Context::background(), async |_s: Scope<'_, u8, String>| {}).await;
    assert_eq!(out, Ok(vec![]));
    let out = TaskGroup::<u8, String>::builder()
        .joiner(FirstOk)
        .scope(async |_s| {})
        .await;
    assert!(out.unwrap_err().errors().is_empty());
}

/// `scope_local`'s body takes a `LocalScope`, `Scope`'s twin: the same
/// methods, for tasks that hold `Rc`s; a clone spawns from inside a task,
/// and `try_spawn` gives the closure back once the limit is full.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_local_scope_has_the_methods_of_a_scope_and_spawns_from_its_own_tasks() {
    let ctx = Context::background();
    let seen = RefCell::new(Vec::new());
    let out = TaskGroup::<u32, String>::builder()
        .limit(2)
        .context(&ctx)
        .scope_local(async |s: LocalScope<'_, u32, String>| {
            assert!(format!("{s:?}").starts_with("LocalScope"));
            assert!(!s.context().is_cancelled() && s.is_empty());
            let (inner, seen) = (s.clone(), &seen);
            let seven = Rc::new(7);
            s.spawn(move |_| async move {
                tokio::task::yield_now().await; // an Rc held across an await
                inner.spawn(move |_| async move {
                    seen.borrow_mut().push(*seven);
                    Ok(*seven)
                });
                Ok(1)
            });
            assert!(s.try_spawn(|_| async { Ok(2) }).is_ok());
            assert_eq!(s.len(), 2);
            let refused = s.try_spawn(|_| async { Ok(3) }).unwrap_err();
            s.ready().await;
            assert!(s.len() < 2);
            let _ = s.try_spawn(refused);
        })
        .await;
    let mut values = out.unwrap();
    values.sort_unstable();
    assert_eq!(values, [1, 2, 3, 7]);
    assert_eq!(seen.into_inner(), [7]);
}

/// `LocalScope::cancel` drops a running task (its `Rc` with it) at its
/// next await and ends the scope as a `Scope`'s cancel does.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_local_scope_s_cancel_drops_its_tasks_and_their_rcs() {
    let held = Rc::new(());
    let outcomes = TaskGroup::<(), String>::builder()
        .joiner(Supervise)
        .scope_local(async |s| {
            let in_task = held.clone();
            s.spawn(move |_| async move {
                let _held = in_task;
                sleep(HOUR).await;
                Ok(())
            });
            tokio::task::yield_now().await;
            assert_eq!(Rc::strong_count(&held), 2);
            s.cancel();
            std::future::pending::<()>().await; // dropped by the cancel
        })
        .await;
    assert!(matches!(outcomes[..], [Outcome::Cancelled]));
    assert_eq!(Rc::strong_count(&held), 1);
}

/// A local scope's `ready` from its task that holds the only slot panics
/// too, naming `LocalScope::ready`, instead of hanging.
#[tokio::test(flavor = "current_thread")]
async fn local_scope_ready_from_its_task_holding_the_only_slot_names_local_scope() {
    let scope = TaskGroup::<u32, String>::builder()
        .limit(1)
        .scope_local(async |s| {
            let s2 = s.clone();
            s.spawn(move |_ctx| async move {
                s2.ready().await;
                Ok(1)
            });
        });
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        AssertUnwindSafe(scope).catch_unwind(),
    )
    .await
    .expect("no hang");
    let text = message(&*result.unwrap_err());
    assert!(text.contains("LocalScope::ready"), "{text}");
}

/// A shield inside a scoped task only changes its context (documented on
/// `scope`): the first error drops the shielded task and a deaf one at
/// their next await, at once, in a scope without a grace.
#[tokio::test(start_paused = true)]
async fn a_shield_in_a_scoped_task_does_not_keep_it_from_the_drop() {
    let ctx = Context::background();
    let (deaf, deaf_dropped) = drop_flag();
    let (shielded, shielded_dropped) = drop_flag();
    let start = Instant::now();
    let out = taskgroup::scope(&ctx, async |s| {
        s.spawn(|_| async move {
            let _deaf = deaf;
            sleep(HOUR).await;
            Ok(1)
        });
        s.spawn(|ctx| async move {
            ctx.shield(HOUR, |_| async move {
                let _shielded = shielded;
                sleep(HOUR).await;
            })
            .await
            .map_err(|e| e.to_string())?;
            Ok(2)
        });
        s.spawn(|_| async {
            sleep(Duration::from_millis(5)).await;
            Err("down".to_string())
        });
    })
    .await;
    assert_eq!(out, Err(GroupError::Failed("down".to_string())));
    assert_eq!(start.elapsed(), Duration::from_millis(5));
    assert!(deaf_dropped.load(SeqCst), "no grace in this scope");
    assert!(shielded_dropped.load(SeqCst), "no shield in a scope");
}

/// A builder's grace holds in a scope as in a group: at the cancel,
/// waiting tasks never start and later spawns are refused, every context
/// is cancelled at once, and the body and the running tasks go on; a task
/// that ends within the grace reports what it returned (`Ok` or `Err`),
/// and the one still running when it runs out is dropped then, at its
/// await.
#[tokio::test(start_paused = true)]
async fn a_scope_s_grace_lets_running_tasks_end_on_their_own_and_drops_the_rest_when_it_ends() {
    let grace = Duration::from_secs(5);
    let cancel_at = Duration::from_millis(5);
    let (deaf, deaf_dropped) = drop_flag();
    let queued_started = AtomicBool::new(false);
    let body_saw_the_grace = AtomicBool::new(false);
    let start = Instant::now();
    let outcomes = TaskGroup::<&str, String>::builder()
        .limit(3)
        .grace(grace)
        .joiner(Supervise)
        .scope(async |s| {
            s.spawn(|ctx| async move {
                ctx.done().await;
                sleep(Duration::from_secs(1)).await; // a flush, within the grace
                Ok("flushed")
            });
            s.spawn(|_| async move {
                let _deaf = deaf;
                sleep(HOUR).await; // never looks at its context
                Ok("deaf")
            });
            s.spawn(|ctx| async move {
                ctx.done().await;
                sleep(Duration::from_secs(2)).await;
                Err("flush failed".to_string())
            });
            let queued = &queued_started;
            s.spawn(move |_| async move {
                queued.store(true, SeqCst); // behind the limit: never runs
                Ok("queued")
            });
            sleep(cancel_at).await;
            s.cancel();
            assert!(s.try_spawn(|_| async { Ok("late") }).is_err());
            s.spawn(|_| async { Ok("late") }); // never starts
            sleep(Duration::from_secs(3)).await; // the body has the grace too
            body_saw_the_grace.store(true, SeqCst);
        })
        .await;
    assert_eq!(start.elapsed(), cancel_at + grace);
    assert!(matches!(
        outcomes[..],
        [
            Outcome::Ok("flushed"),
            Outcome::Cancelled,
            Outcome::Err(_),
            Outcome::Cancelled,
            Outcome::Cancelled,
        ]
    ));
    assert!(deaf_dropped.load(SeqCst), "dropped when the grace ran out");
    assert!(!queued_started.load(SeqCst), "a waiting task never starts");
    assert!(body_saw_the_grace.load(SeqCst));
}

/// A scope whose tasks all end within the grace returns then, without
/// waiting for the grace to run out; the first error is still the
/// outcome (here in a `scope_local`, which has the grace too).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_scope_returns_as_soon_as_its_tasks_end_within_the_grace() {
    let local = Rc::new("state");
    let start = Instant::now();
    let out = TaskGroup::<&str, String>::builder()
        .grace(HOUR)
        .scope_local(async |s| {
            let local = local.clone();
            s.spawn(move |ctx| async move {
                ctx.done().await;
                sleep(Duration::from_secs(1)).await; // an Rc held across it
                Ok(*local)
            });
            s.spawn(|_| async {
                sleep(Duration::from_millis(5)).await;
                Err("down".to_string())
            });
        })
        .await;
    assert_eq!(out, Err(GroupError::Failed("down".to_string())));
    assert_eq!(start.elapsed(), Duration::from_millis(1005));
}

/// A scope made under a context already cancelled starts nothing, grace
/// or not: its body is dropped unpolled and returns at once, as a group
/// starts nothing it admits once cancelled. The grace is for what was
/// already running.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_scope_born_cancelled_never_polls_its_body_even_with_a_grace() {
    let (parent, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let polled = Arc::new(AtomicBool::new(false));
    let (body, body_dropped) = drop_flag();
    let start = Instant::now();
    let out = TaskGroup::<u32, String>::builder()
        .grace(HOUR)
        .context(&parent)
        .scope({
            let polled = polled.clone();
            async move |s| {
                let _body = body;
                polled.store(true, SeqCst);
                s.spawn(|_| async { Ok(1) });
            }
        })
        .await;
    // No task ever ran: nothing failed, nothing was cut short (a group
    // with no task, cancelled, waits `Ok` too).
    assert_eq!(out, Ok(vec![]));
    assert!(
        !polled.load(SeqCst),
        "the body was polled under a cancelled context"
    );
    assert!(body_dropped.load(SeqCst));
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "no grace for what never started"
    );
}

/// Dropping a scope's future in its grace still drops the body and every
/// task at once; a cancel from outside (the parent's) starts the grace
/// too.
#[tokio::test(start_paused = true)]
async fn dropping_a_scope_future_in_its_grace_drops_every_task_at_once() {
    let (parent, cancel) = Context::background().with_cancel();
    let (task, task_dropped) = drop_flag();
    let (body, body_dropped) = drop_flag();
    let scope = TaskGroup::<(), String>::builder()
        .grace(HOUR)
        .context(&parent)
        .scope(async |s| {
            let _body = body;
            s.spawn(|_| async move {
                let _task = task;
                sleep(HOUR * 2).await;
                Ok(())
            });
            std::future::pending::<()>().await;
        });
    let mut scope = tokio_test::task::spawn(scope);
    assert!(scope.poll().is_pending());
    cancel.cancel();
    assert!(scope.is_woken(), "the outside cancel wakes the scope");
    assert!(scope.poll().is_pending(), "in the grace");
    sleep(Duration::from_secs(60)).await;
    assert!(!task_dropped.load(SeqCst) && !body_dropped.load(SeqCst));
    drop(scope);
    assert!(task_dropped.load(SeqCst) && body_dropped.load(SeqCst));
}
