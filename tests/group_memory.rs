//! Memory of finished groups, alone in its own test binary: the resident
//! set is the whole process's, so no other test may allocate beside it.
#![cfg(target_os = "linux")]

use taskgroup::TaskGroup;

mod support;
use support::{alive_tasks, eventually, rss_bytes};

/// A finished group frees its runner and the ended cells it keeps for
/// reuse: they must not keep each other alive. 10,000 groups of 64 tasks
/// leave the resident set flat (a leaked runner with its cells would cost
/// several KB each, tens of MB in all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_groups_free_their_runners_and_spare_cells() {
    async fn groups(count: usize) {
        for _ in 0..count {
            let mut group = TaskGroup::<u32, String>::new();
            for i in 0..64 {
                group.spawn(move |_ctx| async move {
                    tokio::task::yield_now().await;
                    Ok(i)
                });
            }
            assert_eq!(group.wait().await.map(|v| v.len()), Ok(64));
        }
    }
    let baseline = alive_tasks();
    groups(1_000).await; // warm the allocator up
    eventually("runner tasks gone", || alive_tasks() == baseline).await;
    let before = rss_bytes();
    groups(10_000).await;
    eventually("runner tasks gone", || alive_tasks() == baseline).await;
    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < 12 << 20,
        "RSS grew by {} KB over 10,000 finished groups",
        grown >> 10
    );
}
