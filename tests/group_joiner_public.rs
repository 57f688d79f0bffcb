//! A joiner written outside the crate can do everything the built-ins do:
//! `FailFast` and `Discard` rebuilt here from public items only (the
//! `Joiner` trait with `keep`, `Unread`'s accessors, `TaskFailed::new`),
//! each run side by side with the built-in on the same scenarios.

use std::any::Any;
use std::time::Duration;

use taskgroup::{
    Cause, Context, ContextError, Decision, Discard, FailFast, GroupError, Joiner, Outcome,
    TaskFailed, TaskGroup, TaskId, Unread,
};

/// `FailFast`, from public items.
struct MyFailFast;

impl<T, E: std::fmt::Display> Joiner<T, E> for MyFailFast {
    type Output = Result<Vec<T>, GroupError<E>>;

    fn on_complete(&mut self, id: TaskId, outcome: &Outcome<T, E>, group: &Context) -> Decision {
        if group.is_cancelled() {
            return Decision::Continue;
        }
        match outcome {
            Outcome::Err(e) => {
                Decision::Cancel(Cause::new(TaskFailed::new(id, false, e.to_string())))
            }
            Outcome::Panicked(_) => Decision::Cancel(Cause::new(TaskFailed::new(
                id,
                true,
                "panicked".to_string(),
            ))),
            Outcome::Ok(_) | Outcome::Cancelled => Decision::Continue,
        }
    }

    fn finish(self, mut unread: Unread<T, E>, group: &Context) -> Self::Output {
        let cancelled_by = unread.cancelled_by();
        let late_ok = unread.has_late_ok();
        let mut values = Vec::new();
        let mut first_error = None;
        let mut first_panic: Option<(TaskId, Box<dyn Any + Send>)> = None;
        let mut all_ok = true;
        while let Some((id, outcome)) = unread.next() {
            match outcome {
                Outcome::Ok(value) => values.push(value),
                Outcome::Panicked(payload) => {
                    // The one that cancelled the group, else the first.
                    let wins = first_panic.is_none() || cancelled_by == Some(id);
                    if wins {
                        first_panic = Some((id, payload));
                    }
                }
                Outcome::Err(e) if cancelled_by == Some(id) => first_error = Some(e),
                _ if unread.is_stopped(id) => {}
                _ => all_ok = false,
            }
        }
        if let Some((_, payload)) = first_panic {
            std::panic::resume_unwind(payload);
        }
        if let Some(e) = first_error {
            return Err(GroupError::Failed(e));
        }
        if all_ok && !late_ok {
            return Ok(values);
        }
        Err(GroupError::Cancelled(
            group.err().unwrap_or(ContextError::Cancelled),
        ))
    }
}

/// `Discard`, from public items: counts, keeps the first panic, keeps no
/// outcome.
#[derive(Default)]
struct MyDiscard {
    ok: u64,
    failed: u64,
    panicked: u64,
    cancelled: u64,
    first_panic: Option<Box<dyn Any + Send>>,
}

impl<T, E> Joiner<T, E> for MyDiscard {
    type Output = (u64, u64, u64, u64, Option<Box<dyn Any + Send>>);

    fn on_complete(&mut self, _: TaskId, _: &Outcome<T, E>, _: &Context) -> Decision {
        Decision::Continue
    }

    fn keep(&mut self, _: TaskId, outcome: Outcome<T, E>, stopped: bool) -> Option<Outcome<T, E>> {
        match outcome {
            Outcome::Ok(_) => self.ok += 1,
            Outcome::Err(_) if stopped => self.cancelled += 1,
            Outcome::Err(_) => self.failed += 1,
            Outcome::Cancelled => self.cancelled += 1,
            Outcome::Panicked(payload) => {
                self.panicked += 1;
                self.first_panic.get_or_insert(payload);
            }
        }
        None
    }

    fn finish(self, unread: Unread<T, E>, _: &Context) -> Self::Output {
        assert_eq!(unread.len(), 0, "nothing was kept");
        (
            self.ok,
            self.failed,
            self.panicked,
            self.cancelled,
            self.first_panic,
        )
    }
}

/// The scenarios: each fills a group the same way, whatever its joiner.
async fn scenario<J: Joiner<u32, String>>(which: u8, joiner: J) -> J::Output {
    let mut group = TaskGroup::<u32, String>::builder()
        .joiner(joiner)
        .name("same")
        .grace(Duration::from_millis(50))
        .build();
    match which {
        // All succeed.
        0 => {
            for n in 0..4 {
                group.spawn(move |_ctx| async move { Ok(n) });
            }
        }
        // The second fails; the third, if that cancels the group, sees
        // the cancel and returns an error.
        1 => {
            group.spawn(|_ctx| async { Ok(1) });
            group.spawn(|_ctx| async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Err("down".to_string())
            });
            group.spawn(|ctx| async move {
                match ctx.sleep(Duration::from_millis(100)).await {
                    Ok(()) => Ok(3),
                    Err(_) => Err("gave up".to_string()),
                }
            });
        }
        // Cancelled from outside while one task waits.
        2 => {
            group.spawn(|_ctx| async { Ok(1) });
            group.spawn(|ctx| async move {
                ctx.done().await;
                Err("cancelled".to_string())
            });
            tokio::time::sleep(Duration::from_millis(5)).await;
            group.cancel();
        }
        // One task stopped by `cancel_task`, which then returns an error.
        3 => {
            group.spawn(|_ctx| async { Ok(1) });
            let id = group.spawn(|ctx| async move {
                ctx.done().await;
                Err("kicked".to_string())
            });
            group.spawn(|_ctx| async { Ok(3) });
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(group.cancel_task(id));
        }
        _ => unreachable!(),
    }
    group.wait().await
}

#[tokio::test(start_paused = true)]
async fn fail_fast_rebuilt_from_public_items_agrees_with_the_built_in() {
    for which in 0..4 {
        let built_in = scenario(which, FailFast).await;
        let rebuilt = scenario(which, MyFailFast).await;
        assert_eq!(built_in, rebuilt, "scenario {which}");
    }
    assert_eq!(scenario(0, MyFailFast).await, Ok(vec![0, 1, 2, 3]));
    assert_eq!(
        scenario(1, MyFailFast).await,
        Err(GroupError::Failed("down".to_string()))
    );
    assert_eq!(
        scenario(2, MyFailFast).await,
        Err(GroupError::Cancelled(ContextError::Cancelled))
    );
    assert_eq!(scenario(3, MyFailFast).await, Ok(vec![1, 3]));
}

#[tokio::test(start_paused = true)]
async fn discard_rebuilt_from_public_items_agrees_with_the_built_in() {
    for which in 0..4 {
        let mut built_in = scenario(which, Discard).await;
        let (ok, failed, panicked, cancelled, first_panic) =
            scenario(which, MyDiscard::default()).await;
        assert_eq!(
            (
                built_in.ok(),
                built_in.failed(),
                built_in.panicked(),
                built_in.cancelled()
            ),
            (ok, failed, panicked, cancelled),
            "scenario {which}"
        );
        assert_eq!(built_in.take_panic().is_some(), first_panic.is_some());
    }
    let (ok, failed, _, cancelled, _) = scenario(3, MyDiscard::default()).await;
    assert_eq!((ok, failed, cancelled), (2, 0, 1));
}

#[tokio::test]
async fn a_rebuilt_discard_keeps_the_first_panic() {
    let mut group = TaskGroup::<u32, String>::builder()
        .joiner(MyDiscard::default())
        .build();
    group.spawn(|_ctx| async { panic!("first") });
    group.spawn(|_ctx| async { Ok(1) });
    let (ok, _, panicked, _, first) = group.wait().await;
    assert_eq!((ok, panicked), (1, 1));
    assert_eq!(first.unwrap().downcast_ref::<&str>(), Some(&"first"));
}

#[tokio::test]
async fn a_rebuilt_fail_fast_re_raises_the_first_panic_after_the_join() {
    let mut group = TaskGroup::<u32, String>::builder()
        .joiner(MyFailFast)
        .build();
    group.spawn(|_ctx| async { panic!("bug") });
    group.spawn(|ctx| async move {
        ctx.done().await;
        Ok(2)
    });
    let joined = tokio::spawn(group.wait()).await.unwrap_err();
    assert!(joined.is_panic());
    let payload = joined.into_panic();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"bug"));
}
