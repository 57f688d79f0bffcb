//! A group task keeps every scheduling promise a tokio task makes: each
//! behaviour here is checked side by side with a `JoinSet` running the
//! same jobs, on 2- and 8-worker runtimes, so a failure says "a tokio task
//! would not do that". Nothing is timed: each test counts what it can see
//! (tasks running at once on distinct threads, a message received, tokio
//! tasks alive), and a job that waits for something the runner might never
//! let happen gives up after a bound, so a broken runner fails the test
//! instead of hanging it.
//!
//! The deliberate blocking (`std::sync::mpsc`, `block_in_place`) is the
//! subject: a user's task that blocks its thread.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use taskgroup::TaskGroup;
use tokio::task::JoinSet;

mod support;
use support::{DropCounter, alive_tasks, multi_thread};

fn rounds() -> usize {
    std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20)
}

/// A job: what one task runs, on either side.
type Job<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Where the jobs run.
#[derive(Clone, Copy, Debug)]
enum Side {
    Group,
    JoinSet,
}

const SIDES: [Side; 2] = [Side::Group, Side::JoinSet];

/// Spawns the jobs in order, as tasks of a new group or of a `JoinSet`,
/// and returns their results in spawn order.
async fn run_all<T: Send + 'static>(side: Side, jobs: Vec<Job<T>>) -> Vec<T> {
    match side {
        Side::Group => {
            let mut group = TaskGroup::<T, Infallible>::new();
            for job in jobs {
                group.spawn(move |_ctx| async move { Ok(job.await) });
            }
            group.wait().await.unwrap()
        }
        Side::JoinSet => {
            let mut set = JoinSet::new();
            for (index, job) in jobs.into_iter().enumerate() {
                set.spawn(async move { (index, job.await) });
            }
            let mut done = set.join_all().await;
            done.sort_by_key(|(index, _)| *index);
            done.into_iter().map(|(_, value)| value).collect()
        }
    }
}

/// How long a job waits for what it expects before it gives up: far more
/// than a working runner ever needs, and a bound on a broken one.
const GIVE_UP: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------
// Parallelism

/// The threads running a job right now, and the most distinct ones seen at
/// once.
#[derive(Default)]
struct Running {
    threads: Mutex<HashMap<ThreadId, usize>>,
    peak: AtomicUsize,
}

impl Running {
    /// A job starts on this thread: counts it, and returns how many
    /// distinct threads run a job now.
    fn enter(&self) -> usize {
        let mut threads = self.threads.lock().unwrap();
        *threads.entry(std::thread::current().id()).or_default() += 1;
        let distinct = threads.len();
        self.peak.fetch_max(distinct, SeqCst);
        distinct
    }

    fn leave(&self) {
        let mut threads = self.threads.lock().unwrap();
        let me = std::thread::current().id();
        let count = threads.get_mut(&me).unwrap();
        *count -= 1;
        if *count == 0 {
            threads.remove(&me);
        }
    }

    /// A CPU-bound job: spins on its thread (no await) until `target`
    /// distinct threads were seen running jobs at once, or `GIVE_UP`.
    fn cpu_job(self: &Arc<Self>, target: usize) -> Job<()> {
        let running = self.clone();
        Box::pin(async move {
            running.enter();
            let start = Instant::now();
            while running.peak.load(SeqCst) < target && start.elapsed() < GIVE_UP {
                std::hint::spin_loop();
            }
            running.leave();
        })
    }
}

/// k CPU-bound tasks, spawned from outside the runtime's workers, run on
/// min(k, workers) distinct threads at once, as k tokio tasks do: a shard
/// takes only its share of the ready tasks, and the rest of its own queue
/// is stolen by idle shards (runner invariant 11).
fn cpu_bound_tasks_run_on_every_worker(workers: usize) {
    let rt = multi_thread(workers);
    for k in [2, 4, 8, 17, 24] {
        let target = k.min(workers);
        for side in SIDES {
            let running = Arc::new(Running::default());
            let jobs = (0..k).map(|_| running.cpu_job(target)).collect();
            rt.block_on(run_all(side, jobs));
            let peak = running.peak.load(SeqCst);
            assert!(
                peak >= target,
                "{side:?}: {k} CPU-bound tasks on {workers} workers ran on at most {peak} \
                 threads at once; {target} expected"
            );
        }
    }
}

#[test]
fn cpu_bound_tasks_run_on_every_worker_of_two() {
    cpu_bound_tasks_run_on_every_worker(2);
}

#[test]
fn cpu_bound_tasks_run_on_every_worker_of_eight() {
    cpu_bound_tasks_run_on_every_worker(8);
}

/// The same when a group task spawns them into a group of its own, on a
/// worker: at least min(k, workers) − 1 threads at once (the spawning
/// task's worker may be the one still waiting).
#[test]
fn cpu_bound_tasks_spawned_from_a_task_run_on_every_worker_of_eight() {
    let rt = multi_thread(8);
    for k in [2, 4, 8, 17, 24] {
        let target = k.min(8) - 1;
        for side in SIDES {
            let running = Arc::new(Running::default());
            let jobs = (0..k).map(|_| running.cpu_job(target)).collect();
            rt.block_on(async move { tokio::spawn(run_all(side, jobs)).await.unwrap() });
            let peak = running.peak.load(SeqCst);
            assert!(
                peak >= target,
                "{side:?}: {k} CPU-bound tasks spawned from a task ran on at most {peak} \
                 threads at once; {target} expected"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// No hang a tokio task would not have

/// Task A waits synchronously for a message that task B, spawned right
/// after it, sends at its first poll. B runs on another worker, as a tokio
/// task would, and A hears from it: the first shard takes only its share
/// of the two, and the second shard takes the other.
fn a_task_waiting_synchronously_for_a_later_sibling_hears_from_it(from_a_task: bool) {
    let rt = multi_thread(2);
    for round in 0..20 {
        for side in SIDES {
            let (tx, rx) = mpsc::channel::<()>();
            let waiter: Job<bool> = Box::pin(async move { rx.recv_timeout(GIVE_UP).is_ok() });
            let sender: Job<bool> = Box::pin(async move { tx.send(()).is_ok() });
            let jobs = vec![waiter, sender];
            let heard = if from_a_task {
                rt.block_on(async move { tokio::spawn(run_all(side, jobs)).await.unwrap() })
            } else {
                rt.block_on(run_all(side, jobs))
            };
            assert!(
                heard[0],
                "{side:?}, round {round}: a task waiting synchronously for its sibling \
                 gave up after {GIVE_UP:?}: the sibling never ran"
            );
        }
    }
}

#[test]
fn a_task_waiting_synchronously_for_a_later_sibling_hears_from_it_spawned_from_outside() {
    a_task_waiting_synchronously_for_a_later_sibling_hears_from_it(false);
}

#[test]
fn a_task_waiting_synchronously_for_a_later_sibling_hears_from_it_spawned_from_a_task() {
    a_task_waiting_synchronously_for_a_later_sibling_hears_from_it(true);
}

// ---------------------------------------------------------------------------
// block_in_place

/// One task inside `block_in_place` for as long as its siblings take,
/// beside 200 short CPU-bound siblings: tokio hands that worker's core to
/// a new thread, and the siblings keep both workers busy, as tokio tasks
/// do. The group notices the shard stuck in one poll and starts another
/// beside it (runner invariant 12).
#[test]
fn block_in_place_leaves_every_worker_to_the_siblings() {
    const SIBLINGS: usize = 200;
    let rt = multi_thread(2);
    for side in SIDES {
        let running = Arc::new(Running::default());
        let finished = Arc::new(AtomicUsize::new(0));
        let blocked = Arc::new(AtomicBool::new(false));
        let mut jobs: Vec<Job<()>> = Vec::new();
        let (f, b) = (finished.clone(), blocked.clone());
        jobs.push(Box::pin(async move {
            tokio::task::block_in_place(|| {
                b.store(true, SeqCst);
                let start = Instant::now();
                while f.load(SeqCst) < SIBLINGS && start.elapsed() < GIVE_UP {
                    std::thread::yield_now();
                }
            });
        }));
        for _ in 0..SIBLINGS {
            let (running, finished, blocked) = (running.clone(), finished.clone(), blocked.clone());
            jobs.push(Box::pin(async move {
                // Each spins 1 ms once the blocker is in place.
                let start = Instant::now();
                while !blocked.load(SeqCst) && start.elapsed() < GIVE_UP {
                    std::hint::spin_loop();
                }
                running.enter();
                let start = Instant::now();
                while start.elapsed() < Duration::from_millis(1) {
                    std::hint::spin_loop();
                }
                running.leave();
                finished.fetch_add(1, SeqCst);
            }));
        }
        rt.block_on(run_all(side, jobs));
        let peak = running.peak.load(SeqCst);
        assert!(
            peak >= 2,
            "{side:?}: beside a task in block_in_place, its 200 siblings ran on at most \
             {peak} thread at once; 2 expected"
        );
    }
}

// ---------------------------------------------------------------------------
// Structured all the way down

/// Parked tasks woken by siblings (each wake from inside a shard may spawn
/// a no-op tokio task, runner invariant 7), and a grace (a timer task).
async fn busy_group_then_end(how: &str) {
    let mut group = TaskGroup::<usize, String>::builder()
        .grace(Duration::from_secs(30))
        .build();
    let mut relay: Option<tokio::sync::oneshot::Receiver<()>> = None;
    for task in 0..64 {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let prev = relay.replace(rx);
        group.spawn(move |_ctx| async move {
            if let Some(prev) = prev {
                prev.await.map_err(|e| e.to_string())?;
            }
            tokio::task::yield_now().await;
            let _ = tx.send(());
            if task == 63 {
                return Err("the last one fails: a cancel, and the grace's timer".into());
            }
            Ok(task)
        });
    }
    // A task with a deadline of its own: a context timer, ended with it.
    group
        .build_task()
        .timeout(Duration::from_secs(30))
        .spawn(|ctx| async move {
            tokio::task::yield_now().await;
            ctx.check().map_err(|e| e.to_string())?;
            Ok(64)
        });
    match how {
        "wait" => assert!(group.wait().await.is_err()),
        "wait_outcomes" => assert_eq!(group.wait_outcomes().await.len(), 65),
        "shutdown" => {
            let report = group.shutdown(Duration::from_secs(30)).await;
            assert!(report.output.is_err());
        }
        _ => unreachable!(),
    }
}

/// When `wait`, `wait_outcomes` or `shutdown` returns, every tokio task
/// the group started (shards, the grace's timer, the no-op tasks that free
/// a LIFO slot) has run to its end: the runtime's count of alive tasks is
/// back where it was before the group, at once, not eventually.
///
/// On the multi-thread runtime, tokio takes a finished task off its list
/// only after the task's last poll returned, on the worker that ran it,
/// while a waiter on another thread may already be running: the runner
/// counts a task of its own out only once tokio is done with it (runner
/// invariant 13). Run with `ROUNDS=6000` to look for that window.
async fn ended_groups_leave_no_tokio_task_alive() {
    for how in ["wait", "wait_outcomes", "shutdown"] {
        for round in 0..rounds() {
            let before = alive_tasks();
            busy_group_then_end(how).await;
            let after = alive_tasks();
            assert_eq!(
                after,
                before,
                "{how}, round {round}: {} tokio tasks of the group still alive after it returned",
                after as isize - before as isize
            );
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn ended_groups_leave_no_tokio_task_alive_current_thread() {
    ended_groups_leave_no_tokio_task_alive().await;
}

/// Waited for from a tokio task, as a server's handler would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_groups_leave_no_tokio_task_alive_multi_thread() {
    tokio::spawn(ended_groups_leave_no_tokio_task_alive())
        .await
        .unwrap();
}

/// Waited for from outside the runtime's workers (`block_on`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_groups_leave_no_tokio_task_alive_multi_thread_from_block_on() {
    ended_groups_leave_no_tokio_task_alive().await;
}

// ---------------------------------------------------------------------------
// Identity

/// `tokio::task::id()` inside a group's async task names the shard that
/// polls it; `TaskInfo::current()` names the task itself, the same before
/// and after every await, on whichever thread polls it, and a nested
/// group's task inside it is itself in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_info_current_names_each_task_across_awaits() {
    use taskgroup::{TaskId, TaskInfo};
    const TASKS: usize = 1000;
    assert!(TaskInfo::current().is_none(), "the test's own task");
    let mut group = TaskGroup::<(TaskId, TaskId, bool), String>::builder()
        .name("outer")
        .build();
    let mut ids = Vec::new();
    for task in 0..TASKS {
        let id = group
            .build_task()
            .name(format!("t{task}"))
            .spawn(move |_ctx| async move {
                let before = TaskInfo::current().ok_or("no task before the await")?;
                tokio::task::yield_now().await;
                if task % 10 == 0 {
                    // A nested group: its task is itself, then this one is
                    // this one again.
                    let mut inner = TaskGroup::<Option<String>, String>::builder()
                        .name("inner")
                        .build();
                    inner.spawn(|_ctx| async {
                        tokio::task::yield_now().await;
                        let me = TaskInfo::current();
                        Ok(me.and_then(|me| me.group().map(str::to_owned)))
                    });
                    let inner_group = inner.wait().await.map_err(|e| e.to_string())?;
                    assert_eq!(inner_group, [Some("inner".to_owned())]);
                }
                let after = TaskInfo::current().ok_or("no task after the await")?;
                let named = after.name() == Some(format!("t{task}").as_str())
                    && after.group() == Some("outer");
                Ok((before.id(), after.id(), named))
            });
        ids.push(id);
    }
    let seen = group.wait().await.unwrap();
    for (task, (id, (before, after, named))) in ids.into_iter().zip(seen).enumerate() {
        assert_eq!(before, id, "task {task} before its first await");
        assert_eq!(after, id, "task {task} after its awaits");
        assert!(named, "task {task}: its name or its group's");
    }

    let mut group = TaskGroup::<Option<TaskId>, String>::new();
    let id = group.spawn_blocking(|_ctx| Ok(TaskInfo::current().map(|me| me.id())));
    assert_eq!(group.wait().await.unwrap(), [Some(id)]);
    assert!(TaskInfo::current().is_none(), "the test's own task, after");
}

// ---------------------------------------------------------------------------
// Stealing under races

/// Many rounds on 2- and 4-worker runtimes: tasks that spin a little,
/// wake themselves, and spawn into a nested group, so that shards take
/// shares, steal from each other and park, while a std thread cancels the
/// group at a random moment. Every task is accounted for once (its value,
/// or `Cancelled`), every future is dropped by the time `wait_outcomes`
/// returns, and no tokio task of the group is left alive.
fn steals_racing_a_cancel_lose_no_task(workers: usize) {
    use std::sync::atomic::AtomicU64;
    use taskgroup::Outcome;
    const TASKS: usize = 64;
    let rounds = std::env::var("TASKGROUP_STRESS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(300);
    let rt = multi_thread(workers);
    let seed = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let next = || {
        // xorshift: which task spins, yields, nests; when the cancel comes.
        let mut x = seed.load(SeqCst);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        seed.store(x, SeqCst);
        x
    };
    for round in 0..rounds {
        let drops = Arc::new(AtomicUsize::new(0));
        let pick = next();
        let cancel_after = Duration::from_micros(pick % 400);
        let outcomes = rt.block_on(async {
            let before = alive_tasks();
            let mut group = TaskGroup::<usize, String>::new();
            for task in 0..TASKS {
                let guard = DropCounter(drops.clone());
                let bits = pick.rotate_left(task as u32);
                group.spawn(move |ctx| async move {
                    let _guard = guard;
                    let start = Instant::now();
                    while bits & 1 == 1 && start.elapsed() < Duration::from_micros(50) {
                        std::hint::spin_loop();
                    }
                    for _ in 0..(bits >> 1) % 4 {
                        wake_self().await;
                    }
                    if bits & 0b1000 != 0 {
                        let mut inner = TaskGroup::<usize, String>::with_context(&ctx);
                        inner.spawn(move |_ctx| async move { Ok(task) });
                        return inner.wait().await.map(|v| v[0]).map_err(|e| e.to_string());
                    }
                    Ok(task)
                });
            }
            let canceller = {
                let ctx = group.context().clone();
                let (tx, rx) = std::sync::mpsc::channel::<()>();
                let token = ctx.to_token();
                let thread = std::thread::spawn(move || {
                    let _ = rx.recv_timeout(cancel_after);
                    token.cancel();
                });
                (thread, tx)
            };
            let outcomes = group.wait_outcomes().await;
            let after = alive_tasks();
            drop(canceller.1);
            canceller.0.join().unwrap();
            assert_eq!(after, before, "round {round}: tokio tasks left alive");
            outcomes
        });
        assert_eq!(outcomes.len(), TASKS, "round {round}");
        for (task, outcome) in outcomes.iter().enumerate() {
            match outcome {
                Outcome::Ok(v) => assert_eq!(*v, task, "round {round}"),
                Outcome::Cancelled => {}
                Outcome::Err(e) => assert!(e.contains("cancel"), "round {round}, task {task}: {e}"),
                Outcome::Panicked(_) => panic!("round {round}, task {task} panicked"),
            }
        }
        assert_eq!(
            drops.load(SeqCst),
            TASKS,
            "round {round}: a future outlived wait_outcomes"
        );
    }
}

/// Returns `Pending` once, having woken itself: queued at once, where any
/// shard can take it.
async fn wake_self() {
    let mut woken = false;
    std::future::poll_fn(|cx| {
        if woken {
            return std::task::Poll::Ready(());
        }
        woken = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await;
}

#[test]
fn steals_racing_a_cancel_lose_no_task_on_two_workers() {
    steals_racing_a_cancel_lose_no_task(2);
}

#[test]
fn steals_racing_a_cancel_lose_no_task_on_four_workers() {
    steals_racing_a_cancel_lose_no_task(4);
}

/// A scope's task runs inside the scope's own future: `TaskInfo::current`
/// there names the group task that awaits the scope, and outside any group
/// task, nothing.
#[tokio::test(flavor = "current_thread")]
async fn task_info_current_in_a_scope_names_the_task_awaiting_it() {
    use taskgroup::{Context, TaskId, TaskInfo};
    let outside = taskgroup::scope(&Context::background(), async |s| {
        s.spawn(|_ctx| async { Ok::<_, String>(TaskInfo::current().map(|me| me.id())) });
    })
    .await
    .unwrap();
    assert_eq!(outside, [None]);

    let mut group = TaskGroup::<(TaskId, Option<TaskId>), String>::new();
    let id = group.spawn(|ctx| async move {
        let me = TaskInfo::current()
            .map(|me| me.id())
            .ok_or("not a group task")?;
        let inside = taskgroup::scope(&ctx, async |s| {
            s.spawn(|_ctx| async { Ok::<_, String>(TaskInfo::current().map(|me| me.id())) });
        })
        .await
        .map_err(|e| e.to_string())?;
        Ok((me, inside[0]))
    });
    let seen = group.wait().await.unwrap();
    assert_eq!(seen, [(id, Some(id))]);
}

/// A cancel from outside (the parent context, from a std thread) racing
/// the end of a group with a long grace: whether it comes before the last
/// task ends, while the runner tasks exit, or after `wait` has joined,
/// `wait` returns at once and leaves no grace timer alive; it never waits
/// for the grace.
#[test]
fn a_parent_cancel_racing_the_end_never_makes_wait_wait_for_the_grace() {
    use taskgroup::Context;
    let rt = multi_thread(2);
    let rounds = std::env::var("TASKGROUP_STRESS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(300);
    for round in 0..rounds {
        rt.block_on(async {
            let before = alive_tasks();
            let (parent, cancel) = Context::background().with_cancel();
            let mut group = TaskGroup::<usize, String>::builder()
                .context(&parent)
                .grace(Duration::from_secs(60))
                .build();
            for task in 0..8 {
                group.spawn(move |_ctx| async move {
                    wake_self().await;
                    Ok(task)
                });
            }
            let canceller = std::thread::spawn(move || {
                for _ in 0..round % 50 {
                    std::hint::spin_loop();
                }
                cancel.cancel();
            });
            let waited = tokio::time::timeout(Duration::from_secs(10), group.wait()).await;
            canceller.join().unwrap();
            assert!(waited.is_ok(), "round {round}: wait waited for the grace");
            assert_eq!(alive_tasks(), before, "round {round}: a timer left alive");
        });
    }
}
