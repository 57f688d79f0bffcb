//! Observability: `TaskGroup::snapshot`, `taskgroup::dump` and their
//! `Display`. Every test names its groups uniquely: the dump is
//! process-wide, and the other tests of this binary run beside them.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use support::{eventually, rounds};
use taskgroup::{Context, ContextError, GroupSnapshot, TaskGroup, TaskState};

/// The top-level group named `name` in a fresh dump, if any.
fn top_level(name: &str) -> Option<GroupSnapshot> {
    taskgroup::dump()
        .groups()
        .iter()
        .find(|g| g.name() == Some(name))
        .cloned()
}

/// Whether a group named `name` is anywhere in a fresh dump.
fn anywhere(name: &str) -> bool {
    fn walk(groups: &[GroupSnapshot], name: &str) -> bool {
        groups
            .iter()
            .any(|g| g.name() == Some(name) || walk(g.children(), name))
    }
    walk(taskgroup::dump().groups(), name)
}

fn states(snap: &GroupSnapshot) -> Vec<(u64, TaskState)> {
    snap.tasks()
        .iter()
        .map(|t| (t.id().index(), t.state()))
        .collect()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_parked_task_is_idle_one_beyond_the_limit_queued_and_an_unread_one_finished() {
    let mut group = TaskGroup::<u8, String>::builder()
        .name("states-idle-queued")
        .limit(2)
        .build();
    group.build_task().name("parked").spawn(|ctx| async move {
        ctx.done().await;
        Ok(0)
    });
    group.spawn(|_ctx| async { Ok(1) });
    group
        .build_task()
        .name("waiting")
        .spawn(|_ctx| async { Ok(2) });
    let line = line!() - 1;
    // Task 1 finishes in its first poll; its slot goes to task 2, which
    // finishes too.
    let expected = [
        (0, TaskState::Idle),
        (1, TaskState::Finished),
        (2, TaskState::Finished),
    ];
    eventually("tasks 1 and 2 finish", || {
        states(&group.snapshot()) == expected
    })
    .await;
    let snap = group.snapshot();
    assert_eq!(snap.tasks()[2].name(), Some("waiting"));
    assert_eq!(snap.tasks()[2].spawned_at().file(), file!());
    assert_eq!(snap.tasks()[2].spawned_at().line(), line);

    // Read one: it leaves the snapshot.
    let (id, _) = group.next().await.expect("a finished task");
    assert_eq!(id.index(), 1);
    assert_eq!(
        states(&group.snapshot()),
        [(0, TaskState::Idle), (2, TaskState::Finished)]
    );

    let mut limited = TaskGroup::<(), String>::builder()
        .name("states-queued")
        .limit(1)
        .build();
    limited.spawn(|ctx| async move {
        ctx.done().await;
        Ok(())
    });
    limited
        .build_task()
        .name("behind")
        .spawn(|_ctx| async { Ok(()) });
    let expected = [(0, TaskState::Idle), (1, TaskState::Queued)];
    eventually("task 0 parks", || states(&limited.snapshot()) == expected).await;
    let snap = limited.snapshot();
    assert_eq!(snap.tasks()[1].age(), Duration::ZERO, "not started");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn ages_are_on_tokios_clock_for_groups_and_tasks() {
    let mut group = TaskGroup::<(), String>::builder().name("ages").build();
    tokio::time::advance(Duration::from_secs(3)).await;
    group.spawn(|ctx| async move {
        ctx.done().await;
        Ok(())
    });
    tokio::task::yield_now().await;
    tokio::time::advance(Duration::from_secs(2)).await;
    let snap = group.snapshot();
    assert_eq!(snap.age(), Duration::from_secs(5));
    assert_eq!(snap.tasks()[0].age(), Duration::from_secs(2));
}

/// Waits on this thread (the test's `block_on`, not a worker) until
/// `done`, without tokio's clock. While a task spins on a worker, tokio
/// may turn no timer: the worker that last held the driver went back to
/// its task, and the other one sleeps on a condvar, not on the driver. So
/// `eventually`'s sleeps would wait for the spinner, which waits for the
/// test (seen once: a hang). Sets `release` before failing, so that no
/// spinner outlives the test.
fn spin_until(what: &str, release: &AtomicBool, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        if std::time::Instant::now() > deadline {
            release.store(true, SeqCst);
            panic!("{what} did not happen within 10 s");
        }
        thread::yield_now();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_task_mid_body_is_blocking_and_a_busy_one_running() {
    let mut group = TaskGroup::<(), String>::builder()
        .name("states-blocking-running")
        .build();
    let release = Arc::new(AtomicBool::new(false));
    let entered = Arc::new(AtomicUsize::new(0));
    let (r, e) = (release.clone(), entered.clone());
    group
        .build_task()
        .name("index")
        .spawn_blocking(move |_ctx| {
            e.fetch_add(1, SeqCst);
            while !r.load(SeqCst) {
                thread::yield_now();
            }
            Ok(())
        });
    let (r, e) = (release.clone(), entered.clone());
    group
        .build_task()
        .name("busy")
        .spawn(move |_ctx| async move {
            // Parked once (registered), then busy in its second poll.
            tokio::task::yield_now().await;
            e.fetch_add(1, SeqCst);
            while !r.load(SeqCst) {
                std::hint::spin_loop();
            }
            Ok(())
        });
    spin_until("both tasks are inside their bodies", &release, || {
        entered.load(SeqCst) == 2
    });
    let snap = group.snapshot();
    release.store(true, SeqCst);
    assert_eq!(
        states(&snap),
        [(0, TaskState::Blocking), (1, TaskState::Running)]
    );
    assert_eq!(snap.unlisted(), 0);
    assert_eq!(group.wait().await, Ok(vec![(), ()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_blocking_its_thread_in_its_first_poll_is_counted_unlisted() {
    let mut group = TaskGroup::<(), String>::builder()
        .name("states-unlisted")
        .build();
    let release = Arc::new(AtomicBool::new(false));
    let entered = Arc::new(AtomicBool::new(false));
    let (r, e) = (release.clone(), entered.clone());
    group.spawn(move |_ctx| async move {
        e.store(true, SeqCst);
        while !r.load(SeqCst) {
            std::hint::spin_loop();
        }
        Ok(())
    });
    spin_until("the task is in its first poll", &release, || {
        entered.load(SeqCst)
    });
    let snap = group.snapshot();
    release.store(true, SeqCst);
    assert!(snap.tasks().is_empty(), "{snap}");
    assert_eq!(snap.unlisted(), 1);
    assert!(
        snap.to_string().contains("1 more in their first poll"),
        "{snap}"
    );
    assert_eq!(group.wait().await, Ok(vec![()]));
}

/// With a grace, the task sees the cancel and enters a shield: shielded
/// during the grace and after its end, when the group does not drop it.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_task_inside_a_shield_after_the_cancel_is_shielded() {
    let mut group = TaskGroup::<(), ContextError>::builder()
        .name("states-shielded")
        .grace(Duration::from_secs(1))
        .build();
    let inside = Arc::new(AtomicBool::new(false));
    let flag = inside.clone();
    group.spawn(move |ctx| async move {
        ctx.done().await;
        ctx.shield(Duration::from_secs(10), |ctx| async move {
            flag.store(true, SeqCst);
            let _ = ctx.sleep(Duration::from_secs(5)).await;
        })
        .await?;
        Ok(())
    });
    tokio::task::yield_now().await;
    group.cancel();
    eventually("the task is inside its shield", || inside.load(SeqCst)).await;
    let snap = group.snapshot();
    assert_eq!(states(&snap), [(0, TaskState::Shielded)]);
    assert_eq!(snap.cancelled(), Some(ContextError::Cancelled));
    tokio::time::sleep(Duration::from_secs(2)).await; // past the grace
    assert_eq!(states(&group.snapshot()), [(0, TaskState::Shielded)]);
    let outcomes = group.wait_outcomes().await;
    assert!(
        outcomes[0].is_ok(),
        "the section finished: {:?}",
        outcomes[0]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_dropped_or_joined_group_leaves_the_dump() {
    let dropped = TaskGroup::<(), String>::builder()
        .name("leaves-dropped")
        .build();
    let mut joined = TaskGroup::<(), String>::builder()
        .name("leaves-joined")
        .build();
    joined.spawn(|_ctx| async { Ok(()) });
    assert!(top_level("leaves-dropped").is_some());
    assert!(top_level("leaves-joined").is_some());
    drop(dropped);
    assert!(!anywhere("leaves-dropped"));
    assert_eq!(joined.wait().await, Ok(vec![()]));
    assert!(!anywhere("leaves-joined"));
}

/// Three groups, each built from a task context of the one above, the
/// first on one runtime and the other two on another: nested three deep,
/// and only the first is top-level.
#[test]
fn groups_nest_by_context_ancestry_three_deep_across_two_runtimes() {
    let outer_rt = support::multi_thread(2);
    let inner_rt = support::multi_thread(2);
    let mut a =
        outer_rt.block_on(async { TaskGroup::<(), String>::builder().name("nest-a").build() });
    let (ctx_tx, ctx_rx) = std::sync::mpsc::channel::<Context>();
    outer_rt.block_on(async {
        a.spawn(move |ctx| async move {
            ctx_tx.send(ctx.clone()).unwrap();
            ctx.done().await;
            Ok(())
        });
    });
    let a_task_ctx = ctx_rx.recv().unwrap();
    let built = Arc::new(Barrier::new(2));
    let b = inner_rt.block_on(async {
        let mut b = TaskGroup::<(), String>::builder()
            .name("nest-b")
            .context(&a_task_ctx.with_value(7u8)) // a derived context nests too
            .build();
        let built = built.clone();
        b.spawn(move |ctx| async move {
            let mut c = TaskGroup::<(), String>::builder()
                .name("nest-c")
                .context(&ctx)
                .build();
            c.spawn(|ctx| async move {
                ctx.done().await;
                Ok(())
            });
            built.wait();
            ctx.done().await;
            drop(c);
            Ok(())
        });
        b
    });
    built.wait();
    // c's task parks (idle) once polled.
    let c_parked = || {
        top_level("nest-a").is_some_and(|a| {
            a.children().first().is_some_and(|b| {
                b.children()
                    .first()
                    .is_some_and(|c| states(c) == [(0, TaskState::Idle)])
            })
        })
    };
    outer_rt.block_on(eventually("c's task parks", c_parked));

    let a_snap = top_level("nest-a").expect("a is top-level");
    assert!(top_level("nest-b").is_none(), "b is nested, not top-level");
    assert!(top_level("nest-c").is_none(), "c is nested, not top-level");
    let b_snap = &a_snap.children()[0];
    assert_eq!(b_snap.name(), Some("nest-b"));
    let c_snap = &b_snap.children()[0];
    assert_eq!(c_snap.name(), Some("nest-c"));
    assert_eq!(states(c_snap), [(0, TaskState::Idle)]);
    // A group's own snapshot has the same subtree.
    let b_own = b.snapshot();
    assert_eq!(b_own.children()[0].name(), Some("nest-c"));

    let text = taskgroup::dump().to_string();
    let a_line = text.find("group \"nest-a\"").expect("a in the text");
    let b_line = text.find("  group \"nest-b\"").expect("b indented");
    let c_line = text.find("    group \"nest-c\"").expect("c indented twice");
    assert!(a_line < b_line && b_line < c_line, "{text}");

    inner_rt.block_on(async { b.cancel() });
    outer_rt.block_on(async { a.cancel() });
    inner_rt.block_on(async { assert!(b.wait().await.is_err()) });
    outer_rt.block_on(async { assert!(a.wait().await.is_err()) });
    assert!(!anywhere("nest-a") && !anywhere("nest-b") && !anywhere("nest-c"));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_display_is_a_tree_with_names_states_ages_locations_and_the_cause() {
    let mut group = TaskGroup::<(), String>::builder().name("display").build();
    group.build_task().name("users").spawn(|ctx| async move {
        ctx.done().await;
        Ok(())
    });
    let line = line!() - 4;
    group.spawn(|_ctx| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Err("backend down".to_string())
    });
    tokio::task::yield_now().await;
    tokio::time::advance(Duration::from_millis(1500)).await;
    tokio::task::yield_now().await;
    let text = group.snapshot().to_string();
    let expected_task = format!("  task 0 (users): finished, spawned at {}:{line}:", file!());
    assert!(text.starts_with("group \"display\", 1.5s old, cancelled (context cancelled: task 1 of group \"display\" failed: backend down)\n"), "{text}");
    assert!(text.contains(&expected_task), "{text}");
    assert!(text.contains("  task 1: finished, spawned at "), "{text}");
    let _ = group.wait().await;
}

/// A dump taken again and again while other threads build, nest, cancel
/// and drop groups: never a deadlock, a panic or a group seen twice.
#[test]
fn a_dump_races_groups_built_and_dropped_on_other_threads() {
    let rounds = rounds(2_000);
    let rt = support::multi_thread(2);
    let stop = Arc::new(AtomicBool::new(false));
    let churners: Vec<_> = (0..2)
        .map(|t| {
            let stop = stop.clone();
            let handle = rt.handle().clone();
            thread::spawn(move || {
                let mut built = 0usize;
                while !stop.load(SeqCst) {
                    handle.block_on(async {
                        let mut outer = TaskGroup::<(), String>::builder()
                            .name(format!("churn-{t}"))
                            .build();
                        outer.spawn(|ctx| async move {
                            let mut inner = TaskGroup::<(), String>::builder()
                                .name("churn-inner")
                                .context(&ctx)
                                .build();
                            inner.spawn(|ctx| async move {
                                tokio::task::yield_now().await;
                                ctx.check().map_err(|e| e.to_string())
                            });
                            inner.wait().await.map(drop).map_err(|e| e.to_string())
                        });
                        if built.is_multiple_of(2) {
                            outer.cancel();
                        }
                        let _ = outer.wait().await;
                    });
                    built += 1;
                }
                built
            })
        })
        .collect();
    // Weakly consistent: an inner group built after its outer one's stripe
    // was read shows at the top level in that dump, so only what holds
    // always is checked.
    let mut seen = 0usize;
    for _ in 0..rounds {
        let dump = taskgroup::dump();
        let churned = dump
            .groups()
            .iter()
            .filter(|g| g.name().is_some_and(|n| n.starts_with("churn-")));
        for group in churned {
            seen += group.children().len();
            for child in group.children() {
                assert_eq!(child.name(), Some("churn-inner"), "{dump}");
            }
        }
        assert!(!dump.to_string().is_empty());
    }
    stop.store(true, SeqCst);
    let built: usize = churners.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(built > 0);
    println!("{rounds} dumps beside {built} groups built and dropped; {seen} nested seen");
}
