//! [`hedge`]: staggered attempts of one call, the first success wins. A
//! user of the group and of [`FirstOk`], so beside the group, not among
//! the join policies it uses.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use crate::{AllFailed, Context, FirstOk, Outcome, TaskGroup, TaskId};

/// Runs up to `attempts` attempts of one call, staggered, and returns the
/// first success: a hedged request (tower's `Hedge`, "The Tail at Scale").
///
/// Attempt 0 starts at once. Attempt `k + 1` starts when attempt `k` has
/// run `delay` without any attempt succeeding, or at once when an attempt
/// fails. The first `Ok` wins: the other attempts are dropped at their next
/// await and their results discarded. `f(ctx, attempt)` makes attempt
/// number `attempt` (from 0); `ctx` is the context the attempts share, a
/// child of `ctx`, cancelled once one wins.
///
/// The attempts run as tasks of a [`TaskGroup`] with the [`FirstOk`]
/// policy, on the current runtime, and the future returned needs no borrow
/// of `ctx`: it is `'static` and `Send`.
///
/// # Errors
///
/// [`AllFailed`] with every attempt's error, in attempt order, when all of
/// them failed; with [`context_error`](AllFailed::context_error) `Some`
/// when `ctx` was cancelled (or its deadline passed) before any attempt
/// succeeded.
///
/// # Panics
///
/// Panics at once if `attempts` is 0. If an attempt panics, the others are
/// cancelled and joined, and the panic is resumed in the caller. `f` itself
/// runs in the caller's task, as the future is polled: a panic there
/// unwinds out of the future, which drops every attempt. Like
/// [`TaskGroup::spawn`], the future must be polled inside a tokio runtime.
///
/// # Cancel safety
///
/// Dropping the future drops every attempt still running.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use taskgroup::{Context, hedge};
///
/// // Attempt 0 hits a slow replica (200 ms); attempt 1, sent after 40 ms,
/// // answers in 20 ms.
/// async fn call(ctx: Context, attempt: u32) -> Result<String, String> {
///     let latency = if attempt == 0 { 200 } else { 20 };
///     ctx.sleep(Duration::from_millis(latency)).await.map_err(|e| e.to_string())?;
///     Ok(format!("answer from attempt {attempt}"))
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let ctx = Context::background();
/// let start = tokio::time::Instant::now();
/// let reply = hedge(&ctx, 3, Duration::from_millis(40), call).await;
/// assert_eq!(reply, Ok("answer from attempt 1".to_string()));
/// assert_eq!(start.elapsed(), Duration::from_millis(60));
/// # }
/// ```
#[track_caller]
pub fn hedge<T, E, F, Fut>(
    ctx: &Context,
    attempts: u32,
    delay: Duration,
    mut f: F,
) -> impl Future<Output = Result<T, AllFailed<E>>> + Send + 'static
where
    T: Send + 'static,
    E: Send + 'static,
    F: FnMut(Context, u32) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
{
    assert!(
        attempts > 0,
        "hedge: attempts must be at least 1, got 0: no attempt could ever run"
    );
    let ctx = ctx.clone();
    async move {
        let mut group = TaskGroup::builder().joiner(FirstOk).context(&ctx).build();
        let mut launch = |group: &mut TaskGroup<T, E, FirstOk>, attempt: u32| {
            // Every task of the group gets the group's context: call `f`
            // with it here, so `f` itself need not move into a task.
            let fut = f(group.context().clone(), attempt);
            group.spawn(move |_ctx| fut);
            Instant::now().checked_add(delay)
        };
        let mut next_at = launch(&mut group, 0);
        let mut started = 1;
        let mut errors: Vec<(TaskId, E)> = Vec::new();
        let mut panic = None;
        loop {
            let more = started < attempts && !group.context().is_cancelled();
            let ended = {
                let mut next = pin!(group.next());
                let mut timer = pin!(next_at.filter(|_| more).map(sleep_until));
                poll_fn(|cx| {
                    if let Poll::Ready(ended) = next.as_mut().poll(cx) {
                        return Poll::Ready(Some(ended));
                    }
                    match timer.as_mut().as_pin_mut().map(|t| t.poll(cx)) {
                        Some(Poll::Ready(())) => Poll::Ready(None),
                        _ => Poll::Pending,
                    }
                })
                .await
            };
            let start_now = match ended {
                // The delay ran out with no success.
                None => true,
                Some(None) if more => true,
                Some(None) => break,
                // A panic is a bug, never a failed attempt: an `Ok` that
                // ends after one (an attempt inside a long poll when the
                // panic cancelled it) does not hide it.
                Some(Some((_, Outcome::Ok(value)))) if panic.is_none() => return Ok(value),
                Some(Some((_, Outcome::Ok(_)))) => false,
                Some(Some((id, Outcome::Err(error)))) => {
                    errors.push((id, error));
                    more
                }
                Some(Some((_, Outcome::Cancelled))) => false,
                Some(Some((_, Outcome::Panicked(payload)))) => {
                    // FirstOk has cancelled the others: join them first.
                    panic.get_or_insert(payload);
                    false
                }
            };
            if start_now {
                next_at = launch(&mut group, started);
                started += 1;
            }
        }
        if let Some(payload) = panic {
            std::panic::resume_unwind(payload);
        }
        errors.sort_unstable_by_key(|(id, _)| *id);
        Err(AllFailed::new(errors, group.context().err()))
    }
}
