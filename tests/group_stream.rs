//! `TaskGroup` as a `futures_core::Stream`: DESIGN.md's "Ecosystem
//! bridges", `impl Stream for TaskGroup<T, E, J>` = `next()`.
//!
//! Timing is deterministic: paused time and channels for ordering; no
//! sleep stands for a signal.

mod support;
use support::message;
use support::ms;

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt as _, Stream, StreamExt};
use taskgroup::{Outcome, Supervise, TaskGroup, TaskId};
use tokio::sync::oneshot;
use tokio::time::sleep;
use tokio_test::{assert_pending, assert_ready, task};

/// A group of tasks that sleep `delays` ms each and return their delay.
fn sleepers(delays: &[u64]) -> TaskGroup<u64, String> {
    let mut group = TaskGroup::new();
    for &d in delays {
        group.spawn(move |ctx| async move {
            ctx.sleep(ms(d)).await.map_err(|e| e.to_string())?;
            Ok(d)
        });
    }
    group
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn collect_yields_every_task_in_completion_order_then_ends() {
    let mut group = sleepers(&[30, 10, 20]);
    let items: Vec<(TaskId, Outcome<u64, String>)> = (&mut group).collect().await;
    let values: Vec<u64> = items.into_iter().filter_map(|(_, o)| o.ok()).collect();
    assert_eq!(values, [10, 20, 30]);
    assert!(group.is_empty());
    // Ended: as `next` returns `None`, so does the stream, at once.
    assert!(StreamExt::next(&mut group).await.is_none());
    assert!(group.next().await.is_none());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn take_and_filter_map_leave_the_rest_to_wait() {
    let mut group = TaskGroup::<u64, String>::new();
    for d in [40, 10, 30, 20] {
        group.spawn(move |ctx| async move {
            ctx.sleep(ms(d)).await.map_err(|e| e.to_string())?;
            if d == 10 { Err("ten".into()) } else { Ok(d) }
        });
    }
    let mut supervised = TaskGroup::builder().joiner(Supervise).build();
    for d in [20u64, 10] {
        supervised.spawn(move |ctx| async move {
            ctx.sleep(ms(d)).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(d)
        });
    }
    // The failure at 10 ms cancels a FailFast group; the stream shows it.
    let first_two: Vec<Outcome<u64, String>> = (&mut group).map(|(_, o)| o).take(2).collect().await;
    assert!(matches!(&first_two[0], Outcome::Err(e) if e == "ten"));
    assert!(first_two[1].is_cancelled());
    assert_eq!(group.len(), 2);
    assert!(group.wait().await.is_err());

    // Any joiner: Supervise keeps going, filter_map picks the values.
    let oks: Vec<u64> = (&mut supervised)
        .filter_map(|(_, o)| async move { o.ok() })
        .collect()
        .await;
    assert_eq!(oks, [10, 20]);
    assert!(supervised.wait().await.is_empty());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn size_hint_is_len_exactly() {
    let mut group = sleepers(&[10, 20, 30]);
    assert_eq!(group.size_hint(), (3, Some(3)));
    StreamExt::next(&mut group).await.unwrap();
    assert_eq!(group.size_hint(), (2, Some(2)));
    let len = group.len();
    let by_ref = &mut group;
    assert_eq!(Stream::size_hint(&by_ref), (len, Some(len)));
    let rest = (&mut group).count().await;
    assert_eq!(rest, 2);
    assert_eq!(group.size_hint(), (0, Some(0)));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn wakes_when_a_task_finishes_after_a_pending() {
    let mut group = TaskGroup::<u8, String>::new();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    group.spawn(|_ctx| async move {
        go_rx.await.map_err(|e| e.to_string())?;
        Ok(7)
    });
    {
        let mut next = task::spawn(StreamExt::next(&mut group));
        assert_pending!(next.poll());
        assert!(!next.is_woken());
        go_tx.send(()).unwrap();
        // Let the group's runner poll the task to completion.
        sleep(ms(1)).await;
        assert!(next.is_woken());
        let (_, outcome) = assert_ready!(next.poll()).unwrap();
        assert!(matches!(outcome, Outcome::Ok(7)));
    }
    // And then it ends.
    let mut next = task::spawn(StreamExt::next(&mut group));
    assert!(assert_ready!(next.poll()).is_none());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn spawning_after_the_end_makes_it_yield_again() {
    let mut group = sleepers(&[]);
    assert!(StreamExt::next(&mut group).await.is_none());
    group.spawn(|_ctx| async { Ok(5) });
    let (_, outcome) = StreamExt::next(&mut group).await.unwrap();
    assert!(matches!(outcome, Outcome::Ok(5)));
    assert!(StreamExt::next(&mut group).await.is_none());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn cancel_safe_under_select_nothing_is_lost() {
    // Results at 0, 3, 6, ... ms; the ticker fires every 2 ms, so most
    // polls of the stream are dropped while pending.
    let delays: Vec<u64> = (0..20).map(|i| i * 3).collect();
    let mut group = sleepers(&delays);
    let mut ticker = tokio::time::interval(ms(2));
    let (mut got, mut ticks) = (Vec::new(), 0);
    loop {
        tokio::select! {
            item = StreamExt::next(&mut group) => match item {
                Some((_, outcome)) => got.push(outcome.ok().unwrap()),
                None => break,
            },
            _ = ticker.tick() => ticks += 1,
        }
    }
    assert_eq!(got, delays);
    assert!(ticks > 10, "the select dropped pending polls: {ticks}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_dropped_pending_poll_does_not_swallow_a_wake_up_meant_for_next() {
    let mut group = TaskGroup::<u8, String>::new();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    group.spawn(|_ctx| async move {
        go_rx.await.map_err(|e| e.to_string())?;
        Ok(1)
    });
    // Registers the stream's waiter, then drops the `next()` future.
    tokio::select! {
        biased;
        _ = StreamExt::next(&mut group) => unreachable!("nothing finished"),
        () = std::future::ready(()) => {}
    }
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        sleep(ms(5)).await;
        tx.send(()).unwrap();
        go_tx.send(()).unwrap();
    });
    // The inherent `next`, then `wait`, still see the task finish.
    let seen = tokio::time::timeout(Duration::from_secs(60), group.next())
        .await
        .expect("next was woken");
    assert!(matches!(seen, Some((_, Outcome::Ok(1)))));
    rx.await.unwrap();

    let mut group = TaskGroup::<u8, String>::new();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    group.spawn(|_ctx| async move {
        go_rx.await.map_err(|e| e.to_string())?;
        Ok(2)
    });
    let mut polled = task::spawn(StreamExt::next(&mut group));
    assert_pending!(polled.poll());
    drop(polled);
    tokio::spawn(async move {
        sleep(ms(5)).await;
        go_tx.send(()).unwrap();
    });
    let values = tokio::time::timeout(Duration::from_secs(60), group.wait())
        .await
        .expect("wait was woken");
    assert_eq!(values, Ok(vec![2]));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_panicking_task_is_an_item_not_a_panic() {
    let mut group = TaskGroup::<u8, String>::new();
    group.spawn(|_ctx| async { panic!("boom") });
    let items: Vec<_> = (&mut group).collect().await;
    assert_eq!(items.len(), 1);
    assert!(items[0].1.is_panicked());
}

type Slot = Arc<Mutex<Option<TaskGroup<&'static str, String>>>>;

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn polled_from_the_groups_last_running_task_panics_instead_of_hanging() {
    let slot: Slot = Arc::default();
    let s = slot.clone();
    let (result_tx, result_rx) = oneshot::channel();
    let mut group = TaskGroup::new();
    group.spawn(|_ctx| async { Ok("first") });
    group.spawn(move |_ctx| async move {
        sleep(ms(5)).await;
        let mut group = s.lock().unwrap().take().unwrap();
        // The other task's outcome comes out; then only this task is left.
        let first = StreamExt::next(&mut group).await.map(|(_, o)| o.ok());
        let again = AssertUnwindSafe(StreamExt::next(&mut group))
            .catch_unwind()
            .await;
        let _ = result_tx.send((first, again.map_err(|p| message(&*p)).map(|_| ())));
        // Dropping the group here would drop this very task: put it back.
        *s.lock().unwrap() = Some(group);
        Ok("second")
    });
    *slot.lock().unwrap() = Some(group);
    let (first, again) = tokio::time::timeout(Duration::from_secs(60), result_rx)
        .await
        .expect("no hang")
        .unwrap();
    assert_eq!(first, Some(Some("first")));
    let text = again.unwrap_err();
    assert!(
        text.contains("own tasks") && text.contains("next"),
        "{text}"
    );
}

/// The stream keeps the group `Unpin + Send + Sync`.
#[test]
fn the_group_stays_unpin_send_and_sync() {
    fn assert_stream<S: Stream + Unpin + Send + Sync>() {}
    assert_stream::<TaskGroup<u8, String>>();
    assert_stream::<TaskGroup<std::cell::Cell<u8>, String, Supervise>>();
}
