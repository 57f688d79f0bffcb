//! Instruction counts of the group's hot paths, for callgrind: on a
//! current-thread runtime a run is deterministic, so the count compares
//! two builds exactly where wall-clock time on a shared machine cannot.
//!
//! `instructions SCENARIO N REPS` runs SCENARIO (`spawn_wait`: spawn N
//! no-op tasks and wait; `spawn_wait_joinset`: the same with a `JoinSet`,
//! its plain-tokio peer; `limit_one`: the same through `limit(1)`, a
//! handoff per task; `first_error`: N tasks parked on `ctx.sleep(1 h)`,
//! then one failing task, then `wait`; `cancel_fanout`: N tasks parked
//! on `ctx.done()`, then `cancel()` from outside, then `wait`;
//! `cancel_fanout_joinset`: its peer, a `JoinSet` of tasks parked on
//! clones of one `CancellationToken`; `small_groups`: N groups of one
//! no-op task each, built, spawned into and waited for one after the
//! other; `small_joinsets`: the same with a `JoinSet` per group;
//! `small_floor`: the same with a `JoinSet` plus the two contexts the
//! contract gives a group of one, the group's and its task's, which is
//! what a group whose tasks ran as plain tokio tasks could not do
//! without) REPS times. Count it at N and at 0
//! and divide the difference by N × REPS (benches/results/LOG.md, "Join policies"):
//!
//! With the `tracing` feature (`--features tracing`), the group and task
//! spans are there too; `TASKGROUP_SUBSCRIBER=registry` makes
//! tracing-subscriber's registry the subscriber, which records them.
//!
//! ```text
//! cargo build --release --example instructions
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/instructions spawn_wait 1000 20
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/instructions spawn_wait 0 1
//! ```
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use taskgroup::{GroupError, TaskGroup};

async fn spawn_wait(n: usize) {
    let mut group = TaskGroup::<(), Infallible>::new();
    for _ in 0..n {
        group.spawn(|_ctx| async { Ok(()) });
    }
    assert_eq!(group.wait().await.unwrap().len(), n);
}

/// The plain-tokio peer of `spawn_wait`: the same tasks in a `JoinSet`.
async fn spawn_wait_joinset(n: usize) {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        set.spawn(async { Ok::<(), Infallible>(()) });
    }
    let mut joined = 0;
    while let Some(task) = set.join_next().await {
        task.unwrap().unwrap();
        joined += 1;
    }
    assert_eq!(joined, n);
}

/// `spawn_wait` through `limit(1)`: every task but the first waits in the
/// group's queue and starts as the one before it ends (a handoff).
async fn limit_one(n: usize) {
    let mut group = TaskGroup::<(), Infallible>::builder().limit(1).build();
    for _ in 0..n {
        group.spawn(|_ctx| async { Ok(()) });
    }
    assert_eq!(group.wait().await.unwrap().len(), n);
}

async fn first_error(n: usize) {
    let mut group = TaskGroup::<(), usize>::new();
    for _ in 0..n {
        group.spawn(|ctx| async move {
            let _ = ctx.sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
    }
    tokio::task::yield_now().await;
    group.spawn(move |_ctx| async move { Err(n) });
    assert_eq!(group.wait().await, Err(GroupError::Failed(n)));
}

/// Yields until `parked` reaches `n`: the runtime polls every task that
/// counts itself before it parks. One yield is not enough: the group's
/// shard, or tokio's budget, hands the thread back after 128 polls.
async fn until_parked(parked: &AtomicUsize, n: usize) {
    while parked.load(Relaxed) < n {
        tokio::task::yield_now().await;
    }
}

/// N tasks parked on their context, then a cancel from outside, then
/// `wait`: the peers' `cancel_fanout` (issue 31).
async fn cancel_fanout(n: usize) {
    let parked = Arc::new(AtomicUsize::new(0));
    let mut group = TaskGroup::<(), Infallible>::new();
    for _ in 0..n {
        let parked = parked.clone();
        group.spawn(|ctx| async move {
            parked.fetch_add(1, Relaxed);
            ctx.done().await;
            Ok(())
        });
    }
    until_parked(&parked, n).await;
    group.cancel();
    let joined = group.wait().await;
    assert!(n == 0 || matches!(joined, Err(GroupError::Cancelled(_))));
}

/// The plain-tokio peer of `cancel_fanout`, as the peers' harness writes
/// it: a `JoinSet` of tasks parked on clones of one `CancellationToken`.
async fn cancel_fanout_joinset(n: usize) {
    let parked = Arc::new(AtomicUsize::new(0));
    let token = tokio_util::sync::CancellationToken::new();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (token, parked) = (token.clone(), parked.clone());
        set.spawn(async move {
            parked.fetch_add(1, Relaxed);
            token.cancelled().await
        });
    }
    until_parked(&parked, n).await;
    token.cancel();
    let mut joined = 0;
    while let Some(task) = set.join_next().await {
        task.unwrap();
        joined += 1;
    }
    assert_eq!(joined, n);
}

/// N groups of one no-op task, one after the other: what a small group
/// costs beyond its task (issue 25, item 4).
async fn small_groups(n: usize) {
    for _ in 0..n {
        let mut group = TaskGroup::<(), Infallible>::new();
        group.spawn(|_ctx| async { Ok(()) });
        assert_eq!(group.wait().await.unwrap().len(), 1);
    }
}

/// The plain-tokio peer of `small_groups`: a `JoinSet` of one task each.
async fn small_joinsets(n: usize) {
    for _ in 0..n {
        let mut set = tokio::task::JoinSet::new();
        set.spawn(async { Ok::<(), Infallible>(()) });
        let mut joined = 0;
        while let Some(task) = set.join_next().await {
            task.unwrap().unwrap();
            joined += 1;
        }
        assert_eq!(joined, 1);
    }
}

/// The floor of `small_groups` for a group whose tasks would run as plain
/// tokio tasks: a `JoinSet`, the group's context (cancelled at the end, as
/// `wait` does) and the task's own context under it.
async fn small_floor(n: usize) {
    for _ in 0..n {
        let (group, cancel) = taskgroup::Context::background().with_cancel();
        let (task, task_cancel) = group.with_cancel();
        let mut set = tokio::task::JoinSet::new();
        set.spawn(async move {
            let _own = (task, task_cancel);
            Ok::<(), Infallible>(())
        });
        let mut joined = 0;
        while let Some(task) = set.join_next().await {
            task.unwrap().unwrap();
            joined += 1;
        }
        cancel.cancel();
        assert_eq!(joined, 1);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: instructions \
        spawn_wait|spawn_wait_joinset|limit_one|first_error|cancel_fanout|cancel_fanout_joinset|small_groups|small_joinsets|small_floor \
        N REPS";
    let [_, scenario, n, reps] = &args[..] else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect(usage);
    let reps: usize = reps.parse().expect(usage);
    // `TASKGROUP_SUBSCRIBER=registry`: with tracing-subscriber's registry
    // as the thread's subscriber, which records every span (it matters
    // only with the `tracing` feature, which gives the group spans).
    let _subscriber =
        (std::env::var("TASKGROUP_SUBSCRIBER").as_deref() == Ok("registry")).then(|| {
            use tracing_subscriber::util::SubscriberInitExt;
            tracing_subscriber::registry().set_default()
        });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for _ in 0..reps {
            match scenario.as_str() {
                "spawn_wait" => spawn_wait(n).await,
                "spawn_wait_joinset" => spawn_wait_joinset(n).await,
                "limit_one" => limit_one(n).await,
                "first_error" => first_error(n).await,
                "cancel_fanout" => cancel_fanout(n).await,
                "cancel_fanout_joinset" => cancel_fanout_joinset(n).await,
                "small_groups" => small_groups(n).await,
                "small_joinsets" => small_joinsets(n).await,
                "small_floor" => small_floor(n).await,
                _ => panic!("{usage}"),
            }
        }
    });
}
