//! Interop with tokio-graceful-shutdown (DESIGN.md's "Ecosystem bridges"):
//! a `Toplevel` whose subsystem runs a `TaskGroup` under
//! `ctx.with_token(&subsys.create_cancellation_token())`. Requesting
//! shutdown stops the group's tasks and the toplevel ends cleanly.
//!
//! No sleep stands for a signal: the shutdown is requested once every task
//! has said (on a channel) that it is running, and the test measures the
//! time from the request to the group joined.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use taskgroup::{Context, ContextError, GroupError, TaskGroup};
use tokio::sync::{mpsc, oneshot};
use tokio_graceful_shutdown::{SubsystemBuilder, SubsystemHandle, Toplevel};

const TASKS: usize = 8;
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts its own drop: the task's future was dropped or returned.
struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

type Joined = (Result<Vec<()>, GroupError<ContextError>>, Instant);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_shutdown_stops_the_group_and_the_toplevel_ends_cleanly() {
    let ended = Arc::new(AtomicUsize::new(0));
    let (running_tx, mut running_rx) = mpsc::unbounded_channel::<()>();
    let (joined_tx, joined_rx) = oneshot::channel::<Joined>();
    let (requested_tx, requested_rx) = oneshot::channel::<Instant>();

    let task_ended = Arc::clone(&ended);
    let workers = async move |subsys: &mut SubsystemHandle| -> Result<(), Infallible> {
        let ctx = Context::background().with_token(&subsys.create_cancellation_token());
        let mut group = TaskGroup::<(), ContextError>::with_context(&ctx);
        for i in 0..TASKS {
            let guard = Guard(Arc::clone(&task_ended));
            let running = running_tx.clone();
            group.spawn(move |ctx| async move {
                let _guard = guard;
                running.send(()).unwrap();
                if i % 2 == 0 {
                    // Parks on `done()`, then reports why it ended.
                    ctx.done().await;
                    Err(ctx.err().unwrap())
                } else {
                    // Parks in a future that never ends, run under the context.
                    ctx.run(std::future::pending::<()>()).await
                }
            });
        }
        drop(running_tx);
        let result = group.wait().await;
        let _ = joined_tx.send((result, Instant::now()));
        Ok(())
    };

    let trigger = async move |subsys: &mut SubsystemHandle| -> Result<(), Infallible> {
        for _ in 0..TASKS {
            running_rx.recv().await.expect("every task reports running");
        }
        let _ = requested_tx.send(Instant::now());
        subsys.request_shutdown();
        subsys.on_shutdown_requested().await;
        Ok(())
    };

    let toplevel = Toplevel::new(async move |s: &mut SubsystemHandle| {
        s.start(SubsystemBuilder::new("workers", workers));
        s.start(SubsystemBuilder::new("trigger", trigger));
    });
    let ended_cleanly = tokio::time::timeout(
        SHUTDOWN_TIMEOUT * 2,
        toplevel.handle_shutdown_requests(SHUTDOWN_TIMEOUT),
    )
    .await
    .expect("the toplevel ends");
    let toplevel_done = Instant::now();

    assert!(ended_cleanly.is_ok(), "toplevel: {ended_cleanly:?}");
    let requested = requested_rx.await.expect("shutdown was requested");
    let (result, joined) = joined_rx.await.expect("the group was joined");
    assert_eq!(result, Err(GroupError::Cancelled(ContextError::Cancelled)));
    assert_eq!(
        ended.load(Ordering::SeqCst),
        TASKS,
        "every task's future ended"
    );

    let to_joined = joined - requested;
    let to_toplevel = toplevel_done - requested;
    println!(
        "request_shutdown -> group joined: {to_joined:?}; -> toplevel ended: {to_toplevel:?} \
         (shutdown timeout {SHUTDOWN_TIMEOUT:?})"
    );
    assert!(
        to_joined < SHUTDOWN_TIMEOUT / 10,
        "group joined after {to_joined:?}"
    );
    assert!(
        to_toplevel < SHUTDOWN_TIMEOUT / 10,
        "toplevel ended after {to_toplevel:?}"
    );
}
