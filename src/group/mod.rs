//! [`TaskGroup`]: Go's errgroup, with results, limits, panics, and no task
//! outliving its group.

mod builder;
mod error;
mod hedge;
mod joiner;
mod lifecycle;
mod observe;
mod outcome;
pub(crate) mod panics;
mod runner;
mod shared;
mod spawner;
mod task;

// A child of `group`, so that its models can reach the group's runner.
#[cfg(all(test, loom))]
mod models;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, PoisonError, Weak};
use std::task::Poll;
use std::time::Duration;

pub(crate) use builder::BuilderParts;
pub use builder::TaskGroupBuilder;
pub use error::{GroupError, TaskFailed};
pub use hedge::hedge;
pub use joiner::{
    AllFailed, Decision, Discard, FailFast, FirstOk, Joiner, Supervise, Tally, Unread,
};
use lifecycle::Spawned;
pub use lifecycle::{ShutdownReport, TaskBuilder, TaskInfo};
pub use observe::{Dump, GroupSnapshot, TaskSnapshot, TaskState, dump};
pub use outcome::{Outcome, TaskId};
pub(crate) use panics::panic_message;
use shared::{AsyncClosure, BlockingClosure, Shared};
pub use spawner::Spawner;

use crate::context::cancellation;
use crate::loom::{Mutex, MutexGuard};
use crate::{Context, ContextError};

/// A set of tasks that share one [`Context`], fail together and are joined
/// together: Go's `errgroup.WithContext`, done the Rust way.
///
/// Spawn one task per branch of a fan-out with [`spawn`](TaskGroup::spawn).
/// Each task gets the group's context and returns `Result<T, E>`. The first
/// `Err` (in time) or panic cancels the group: its context is cancelled with a
/// [`TaskFailed`](crate::TaskFailed) cause, and every task still running is
/// dropped at its next await point, so a sibling that ignores its context
/// cannot leak. [`wait`](TaskGroup::wait) joins every task and returns the
/// values in spawn order, or the first error.
///
/// The group works without being polled: a failure cancels the siblings at
/// once, and tasks queued by a [limit](TaskGroupBuilder::limit) start as
/// slots free, whether or not anyone is inside `wait` or `next`.
///
/// Dropping the group (or the `wait` future) cancels its context at once,
/// and every async task's future is dropped right after, by the group's
/// runner on the runtime's workers (not on the dropping thread, as tokio's
/// abort leaves the drop to a worker); only a blocking task still running
/// outlives it, until it returns.
///
/// # How it ends: join policies
///
/// The paragraphs above describe the default policy, [`FailFast`]. A group
/// built with [`TaskGroupBuilder::joiner`] ends the way its [`Joiner`]
/// says; limits, [`next`](TaskGroup::next),
/// [`wait_outcomes`](TaskGroup::wait_outcomes) and every other rule hold
/// under each.
///
/// | policy | a task fails | a task succeeds | a task panics | cancelled from outside | [`wait`](TaskGroup::wait) returns |
/// |---|---|---|---|---|---|
/// | [`FailFast`] (default) | cancels the rest | goes on | cancels the rest; `wait` re-raises it | the rest are dropped | `Result<Vec<T>, GroupError<E>>`: every value in spawn order, or the first error, or `Cancelled` |
/// | [`Supervise`] | goes on | goes on | goes on; reported, not re-raised | the rest are dropped | `Vec<Outcome<T, E>>`: every outcome in spawn order |
/// | [`FirstOk`] | goes on | the first cancels the rest | cancels the rest; `wait` re-raises it | the rest are dropped | `Result<T, AllFailed<E>>`: the first value, or every error (and the context error, if any) |
/// | your own [`Joiner`] | its `on_complete` decides | its `on_complete` decides | its `on_complete` decides | the rest are dropped | its `finish` decides |
///
/// [`hedge`] runs staggered attempts of one call under `FirstOk`.
///
/// # Cancellation, step by step
///
/// A cancel (the first error under [`FailFast`], [`cancel`](TaskGroup::cancel),
/// the parent context's cancel or deadline, [`shutdown`](TaskGroup::shutdown),
/// or dropping the group) comes in two steps: the *signal*, then the *drop*.
/// Here is what a task sees at each.
///
/// 1. **The signal, at once.** The group's context and every context
///    derived from it are cancelled: [`Context::done`] resolves,
///    [`Context::check`] and [`Context::err`] return the error, and
///    [`Context::cause`] says why (a [`TaskFailed`](crate::TaskFailed) naming
///    the task that failed). Queued closures (beyond a
///    [limit](TaskGroupBuilder::limit)) never start: each is reported as
///    cancelled. Blocking tasks are told too (their context), but a thread
///    cannot be taken back: each runs until its closure returns.
/// 2. **The grace, if the group has one.** With
///    [`grace(d)`](TaskGroupBuilder::grace) (default zero) or
///    [`shutdown(d)`](TaskGroup::shutdown), async tasks keep running for
///    `d`: a task that sees the signal and ends on its own within it reports
///    what it returned, not `Cancelled`. Without a grace this step takes no
///    time.
/// 3. **The drop.** Every async task still running is dropped at its next
///    await point: its future's destructor runs (on one of the group's
///    runner tasks), so guards are released, and its outcome is
///    [`Outcome::Cancelled`]. `shutdown` names each one in
///    [`stragglers`](ShutdownReport::stragglers).
///
/// **Inside a shield.** A task inside [`Context::shield`] when the drop
/// comes, at once or at the grace's end or at the group's drop, is not
/// dropped: its section runs to its end (its own context is not
/// cancelled), for at most the shield's budget. The task is dropped at the
/// first await after the section, unless it returns first. `wait` and
/// `shutdown` wait for the section; a shield entered during the grace is
/// kept too.
///
/// ```
/// use std::time::Duration;
/// use taskgroup::{Outcome, Supervise, TaskGroup};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut group = TaskGroup::<&str, String>::builder().joiner(Supervise).build();
/// // Sees the signal, saves its state under a shield, and returns.
/// group.build_task().name("saver").spawn(|ctx| async move {
///     ctx.done().await;
///     let saved = ctx
///         .shield(Duration::from_secs(1), |ctx| async move {
///             ctx.sleep(Duration::from_millis(300)).await // writing the checkpoint
///         })
///         .await;
///     saved.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
///     Ok("checkpoint saved")
/// });
/// // Ignores the signal: dropped when the grace runs out.
/// group.build_task().name("deaf").spawn(|_ctx| async {
///     tokio::time::sleep(Duration::from_secs(3600)).await;
///     Ok("never")
/// });
/// tokio::task::yield_now().await;
///
/// let report = group.shutdown(Duration::from_millis(100)).await;
/// assert!(matches!(report.output[0], Outcome::Ok("checkpoint saved")));
/// assert!(matches!(report.output[1], Outcome::Cancelled));
/// let names: Vec<_> = report.stragglers().iter().map(|t| t.name()).collect();
/// assert_eq!(names, [Some("deaf")]);
/// # }
/// ```
///
/// # How the tasks run
///
/// An async task is not a tokio task of its own. The group runs its tasks
/// inside a few tokio tasks of its own (its *runner tasks*), about one per
/// runtime worker: each takes its share of the ready tasks into a queue of
/// its own and polls them, and one that runs out steals half of another's.
/// A large fan-out costs less than the same tasks in a `JoinSet` (about
/// three quarters at 100,000 tasks; a group of one or two tasks costs more,
/// see BENCHMARKS.md), and keeps every scheduling promise a tokio task
/// makes:
///
/// - parallelism: k ready tasks run on min(k, workers) threads at once, as
///   k tokio tasks do, however few they are;
/// - a task that blocks its thread (a synchronous call, a long poll,
///   [`block_in_place`](https://docs.rs/tokio/1/tokio/task/fn.block_in_place.html)) holds back at most
///   one sibling, the one its runner task keeps to poll next, as a tokio
///   task holds back the one in its worker's LIFO slot; the others are
///   taken by the other runner tasks, and when a task enters
///   `block_in_place`, another runner task is brought in at once for the
///   worker tokio hands to a new thread (one stuck in a single poll for a
///   few milliseconds lets another start beside it too). So a task waiting
///   synchronously for a sibling spawned after it is not left waiting;
/// - a panic in a task is that task's outcome, and never disturbs another;
/// - a cancel drops every task's future, wherever it is parked;
/// - tokio's cooperative budget is kept: the group yields to the rest of
///   the runtime after 128 polls, or sooner when the budget runs out;
/// - structure all the way down: when [`wait`](TaskGroup::wait),
///   [`wait_outcomes`](TaskGroup::wait_outcomes) or
///   [`shutdown`](TaskGroup::shutdown) returns, no tokio task the group
///   started is alive (its runner tasks, its grace's timer, a task's own
///   deadline timer), and the
///   runtime's count of alive tasks is back where it was;
/// - a runtime shutting down drops every task's future by the time its
///   drop returns, wherever the task was, and polls none of them once it
///   has dropped the first of the group's runner tasks.
///
/// What differs, and what tools see: [`tokio::task::id`] inside a task
/// names the runner task polling it, which may change between polls;
/// [`TaskInfo::current`] names the task itself (its id, name and group),
/// for logs and per-task keys. tokio-console and the runtime's task
/// metrics (`num_alive_tasks`, poll counts) see the runner tasks, at most
/// about one per worker while the group has work, none once it is idle
/// with nothing parked, not one entry per group task: a snapshot
/// ([`TaskGroup::snapshot`], [`dump`](crate::dump)) lists the tasks
/// themselves. A wake or a cancel that comes while the runtime is shutting
/// down, just as it drops the group's runner tasks, may drop that task's
/// future on the thread that wakes or cancels (tokio leaves that drop to
/// the shutdown). A blocking task
/// ([`spawn_blocking`](TaskGroup::spawn_blocking)) is a task on tokio's
/// blocking pool, as with tokio.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use taskgroup::{Context, GroupError, TaskGroup};
///
/// async fn fetch(ctx: &Context, id: u32) -> Result<String, String> {
///     ctx.sleep(Duration::from_millis(10 * u64::from(id)))
///         .await
///         .map_err(|e| e.to_string())?;
///     if id == 3 {
///         return Err(format!("backend {id} is down"));
///     }
///     Ok(format!("page {id}"))
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut group = TaskGroup::new();
/// for id in [2, 1] {
///     group.spawn(move |ctx| async move { fetch(&ctx, id).await });
/// }
/// // Values come back in spawn order, whatever the completion order.
/// assert_eq!(group.wait().await, Ok(vec!["page 2".to_string(), "page 1".to_string()]));
///
/// let mut group = TaskGroup::new();
/// for id in 1..=5 {
///     group.spawn(move |ctx| async move { fetch(&ctx, id).await });
/// }
/// // Task 3 fails at 30 ms; tasks 4 and 5 are cancelled, not waited for.
/// assert_eq!(
///     group.wait().await,
///     Err(GroupError::Failed("backend 3 is down".to_string()))
/// );
/// # }
/// ```
pub struct TaskGroup<T, E, J = FailFast> {
    /// Its entry in the registry behind [`dump`]: first, so that it goes
    /// before `shared` (observe.rs, invariant 1).
    _registration: observe::Registration,
    shared: Arc<Shared<T, E, J>>,
    /// The [`Stream`](futures_core::Stream) impl's waiter for `progress`,
    /// kept between a `Pending` and the next poll. `next` and `join` drop a
    /// stale one first: a waiter nobody polls would otherwise take a
    /// wake-up meant for them. Locked only by those `&self` methods; the
    /// stream reaches it through `&mut`.
    stream_waiter: Mutex<Option<StreamWaiter>>,
}

/// A wait for the group's `progress` that owns its group, so that the
/// `Stream` can keep it between polls.
type StreamWaiter = Pin<Box<dyn Future<Output = ()> + Send>>;

impl<T, E> TaskGroup<T, E>
where
    T: Send + 'static,
    E: fmt::Display + Send + 'static,
{
    /// Creates a group with no limit, whose context is a child of
    /// [`Context::background`].
    ///
    /// The task types usually come from the tasks. When every task only
    /// ever returns `Ok(..)`, nothing says what `E` is, and rustc stops with
    /// E0283, "type annotations needed ... cannot satisfy `_: Display`":
    /// name the error type, `TaskGroup::<T, MyError>::new()` (or
    /// `TaskGroup::<_, std::io::Error>::new()`), or return a typed error
    /// somewhere (`Err::<T, MyError>(..)`).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::<u8, String>::new();
    /// assert!(group.is_empty());
    /// group.spawn(|_ctx| async { Ok(1) });
    /// assert_eq!(group.wait().await, Ok(vec![1]));
    /// # }
    /// ```
    pub fn new() -> Self {
        TaskGroupBuilder::new().build()
    }

    /// Creates a group whose context is a child of `ctx`: cancelling `ctx`
    /// cancels the group. Go's `errgroup.WithContext`.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{Context, ContextError, GroupError, TaskGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (request, cancel) = Context::background().with_cancel();
    /// let mut group = TaskGroup::<(), String>::with_context(&request);
    /// group.spawn(|ctx| async move {
    ///     ctx.done().await;
    ///     Ok(())
    /// });
    /// cancel.cancel(); // the client went away
    /// assert_eq!(group.wait().await, Err(GroupError::Cancelled(ContextError::Cancelled)));
    /// # }
    /// ```
    pub fn with_context(ctx: &Context) -> Self {
        TaskGroupBuilder::new().context(ctx).build()
    }
}

impl<T, E> TaskGroup<T, E> {
    /// Returns a builder for a group with a limit, a name, a parent
    /// context, or a [join policy](TaskGroupBuilder::joiner).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{Context, TaskGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let root = Context::background();
    /// let mut group = TaskGroup::<usize, String>::builder()
    ///     .limit(8)
    ///     .name("fetch")
    ///     .context(&root)
    ///     .build();
    /// for i in 0..20 {
    ///     group.spawn(move |_ctx| async move { Ok(i) });
    /// }
    /// assert_eq!(group.wait().await.unwrap().len(), 20);
    /// # }
    /// ```
    pub fn builder() -> TaskGroupBuilder<T, E> {
        TaskGroupBuilder::new()
    }
}

impl<T, E, J> TaskGroup<T, E, J> {
    /// The group's context: the one every task receives. Derive from it to
    /// nest groups; cancelling the group cancels them too.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::TaskGroup;
    ///
    /// let group = TaskGroup::<(), String>::new();
    /// let ctx = group.context().clone();
    /// group.cancel();
    /// assert!(ctx.is_cancelled());
    /// ```
    pub fn context(&self) -> &Context {
        &self.shared.ctx
    }

    /// Cancels the group from outside: its context is cancelled, running
    /// async tasks are dropped at their next await point, queued ones never
    /// start. [`wait`](TaskGroup::wait) then reports
    /// [`GroupError::Cancelled`](crate::GroupError::Cancelled) unless every task had already finished
    /// `Ok`.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{ContextError, GroupError, TaskGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::<(), String>::new();
    /// group.spawn(|_ctx| std::future::pending()); // ignores its context
    /// group.cancel();
    /// assert_eq!(group.wait().await, Err(GroupError::Cancelled(ContextError::Cancelled)));
    /// # }
    /// ```
    pub fn cancel(&self) {
        self.shared
            .ctx
            .cancel_internal(cancellation(ContextError::Cancelled, None));
    }

    /// The number of tasks spawned and not yet handed out: queued, running,
    /// or finished but unread.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::<(), String>::new();
    /// group.spawn(|_ctx| async { Ok(()) });
    /// assert_eq!(group.len(), 1);
    /// group.next().await;
    /// assert_eq!(group.len(), 0);
    /// # }
    /// ```
    pub fn len(&self) -> usize {
        self.shared.lock().len()
    }

    /// Returns `true` if [`len`](TaskGroup::len) is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// let group = taskgroup::TaskGroup::<(), String>::new();
    /// assert!(group.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A handle that spawns into this group from anywhere, its own tasks
    /// included (a server's accept loop), and cancels single tasks. It
    /// never keeps the group alive: once the group has ended (its `wait`,
    /// `wait_outcomes` or `shutdown` joined every task, or it was dropped)
    /// every spawn through it gives the closure back. See [`Spawner`].
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut crawl = TaskGroup::<u32, String>::new();
    /// let more = crawl.spawner();
    /// crawl.spawn(move |_ctx| async move {
    ///     // A page finds two links, and fetches them as siblings.
    ///     for depth in [1, 2] {
    ///         more.spawn(move |_ctx| async move { Ok(depth) }).map_err(|_| "ended")?;
    ///     }
    ///     Ok(0)
    /// });
    /// assert_eq!(crawl.wait().await, Ok(vec![0, 1, 2]));
    /// # }
    /// ```
    pub fn spawner(&self) -> Spawner<T, E, J> {
        self.shared.spawners.store(true, Relaxed);
        Spawner::new(&self.shared)
    }
}

impl<T, E, J> TaskGroup<T, E, J>
where
    T: Send + 'static,
    E: Send + 'static,
    J: Joiner<T, E>,
{
    fn from_builder(
        parent: &Context,
        name: Option<Arc<str>>,
        limit: Option<usize>,
        grace: Duration,
        joiner: J,
    ) -> TaskGroup<T, E, J> {
        let shared = Shared::new(parent, name, limit, grace, joiner);
        let observed: Weak<dyn observe::Observed> = Arc::downgrade(&shared) as _;
        TaskGroup {
            _registration: observe::Registration::new(observed),
            shared,
            stream_waiter: Mutex::new(None),
        }
    }

    /// Spawns a task: calls `f` with the group's context and runs the
    /// future it returns on the current tokio runtime, inside the group's
    /// runner (see [how the tasks run](TaskGroup#how-the-tasks-run)).
    ///
    /// Never blocks. Over the [limit](TaskGroupBuilder::limit) the closure
    /// waits in the group, and is called when a slot frees; if the group is
    /// cancelled first it is never called. In a group already cancelled it is
    /// never called either, and the task counts as
    /// [`Outcome::Cancelled`] (or [`Outcome::Panicked`] if dropping `f`
    /// panics). A panic in `f` itself is the task's panic.
    ///
    /// # Panics
    ///
    /// Panics outside a tokio runtime, as [`tokio::spawn`] does, when the
    /// group has not run a task yet. The group's tasks all run on the
    /// runtime its first task was spawned on, for as long as it lives; once
    /// it has shut down, with none of the group's tasks left running there,
    /// the next task moves the group to the runtime it is spawned from.
    /// Spawned outside any runtime then, it panics with a message saying
    /// so ("... the runtime this group's tasks ran on has shut down ..."),
    /// and the task counts as cancelled. A task spawned while that runtime
    /// is shutting down is cancelled with the others, as tokio's are.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::<String, std::io::Error>::new();
    /// for name in ["a", "b"] {
    ///     group.spawn(move |ctx| async move {
    ///         ctx.check()?; // ContextError converts into io::Error
    ///         Ok(name.to_uppercase())
    ///     });
    /// }
    /// assert_eq!(group.wait().await.unwrap(), ["A", "B"]);
    /// # }
    /// ```
    #[track_caller]
    pub fn spawn<F, Fut>(&mut self, f: F) -> TaskId
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let admitted = self
            .shared
            .admit(Spawned::here(), AsyncClosure::new(f), true);
        admitted.unwrap_or_else(|_| unreachable!("a group's own spawn always admits"))
    }

    /// Spawns a task unless the group is at its limit or cancelled; then it
    /// gives the closure back.
    ///
    /// "At the limit" counts running and queued tasks, so `try_spawn` never
    /// queues.
    ///
    /// # Errors
    ///
    /// `Err(f)`, untouched, when running and queued tasks fill the limit or
    /// the group is cancelled.
    ///
    /// # Panics
    ///
    /// As [`spawn`](TaskGroup::spawn).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::<(), String>::builder().limit(1).build();
    /// let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    /// assert!(group.try_spawn(|_ctx| async move { rx.await.map_err(|e| e.to_string()) }).is_ok());
    /// let refused = group.try_spawn(|_ctx| async { Ok(()) });
    /// assert!(refused.is_err()); // the closure is handed back
    /// tx.send(()).unwrap();
    /// group.ready().await;
    /// assert!(group.try_spawn(refused.unwrap_err()).is_ok());
    /// group.wait().await.unwrap();
    /// # }
    /// ```
    #[track_caller]
    pub fn try_spawn<F, Fut>(&mut self, f: F) -> Result<TaskId, F>
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        self.try_admit(Spawned::here(), f)
    }

    fn try_admit<F, Fut>(&mut self, spawned: Spawned, f: F) -> Result<TaskId, F>
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        self.shared
            .admit(spawned, AsyncClosure::new(f), false)
            .map_err(|body| body.0)
    }

    /// Spawns a blocking task on tokio's blocking thread pool, for CPU-heavy
    /// or blocking I/O work. It counts against the limit like any task.
    ///
    /// A blocking task cannot be dropped halfway: when the group is
    /// cancelled it goes on until it returns, so it should check its context
    /// ([`Context::check`]) between steps. `wait` joins it. A blocking task
    /// that has not started when the group is cancelled never starts.
    ///
    /// # Panics
    ///
    /// Panics outside a tokio runtime, as [`tokio::task::spawn_blocking`]
    /// does.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{ContextError, TaskGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::<u64, ContextError>::new();
    /// group.spawn_blocking(|ctx| {
    ///     let mut sum = 0;
    ///     for chunk in 0..1_000u64 {
    ///         ctx.check()?; // stop between chunks once cancelled
    ///         sum += chunk;
    ///     }
    ///     Ok(sum)
    /// });
    /// assert_eq!(group.wait().await, Ok(vec![499_500]));
    /// # }
    /// ```
    #[track_caller]
    pub fn spawn_blocking<F>(&mut self, f: F) -> TaskId
    where
        F: FnOnce(Context) -> Result<T, E> + Send + 'static,
    {
        let admitted = self.shared.admit(Spawned::here(), BlockingClosure(f), true);
        admitted.unwrap_or_else(|_| unreachable!("a group's own spawn always admits"))
    }

    /// Cancels one task on its own: its context is cancelled (the group's
    /// stays live), a queued task never starts, and a running async task
    /// that does not return is dropped at its next await, once the group's
    /// [grace](TaskGroupBuilder::grace) has passed ([shields](Context::shield)
    /// hold, as for a group cancel). A blocking task must notice its
    /// context. Returns `true` while the task has not ended (again during
    /// its grace or shield), `false` for an unknown id or a task that has
    /// ended.
    ///
    /// The task's outcome is what it returned, or
    /// [`Outcome::Cancelled`]. An `Err` it returns after the cancel is a
    /// consequence, not a failure: no built-in joiner cancels the group for
    /// it. [`next`](TaskGroup::next) and [`wait_outcomes`](TaskGroup::wait_outcomes)
    /// show it; under [`FailFast`], `wait` leaves out the tasks
    /// `cancel_task` ended without a value; [`Discard`](struct@crate::Discard) counts them as
    /// cancelled. When it returns, the task's context already reports
    /// [`err`](Context::err).
    ///
    /// A started task is found in constant time, through an index by id
    /// that the group's first `cancel_task` makes (a group that never
    /// calls it keeps none); a queued one by a look through the queue,
    /// which holds only what waits past the limit.
    ///
    /// # Examples
    ///
    /// Kick one client, keep serving the others:
    ///
    /// ```
    /// use taskgroup::{ContextError, TaskGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut clients = TaskGroup::<&str, ContextError>::new();
    /// let alice = clients.spawn(|ctx| async move {
    ///     ctx.done().await;
    ///     Err(ctx.err().unwrap()) // says why it stopped
    /// });
    /// clients.spawn(|_ctx| async { Ok("bob served") });
    /// tokio::task::yield_now().await;
    /// assert!(clients.cancel_task(alice));
    /// assert!(!clients.context().is_cancelled());
    /// // Alice's `Err` is the kick's consequence: left out, not a failure.
    /// assert_eq!(clients.wait().await, Ok(vec!["bob served"]));
    /// # }
    /// ```
    pub fn cancel_task(&self, id: TaskId) -> bool {
        self.shared.cancel_task(id)
    }

    /// Starts a task with a name or a deadline of its own: the
    /// [`TaskBuilder`]'s `spawn`, `try_spawn` and `spawn_blocking` spawn it
    /// as the group's own methods do.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::{Outcome, Supervise, TaskGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mut group = TaskGroup::builder().joiner(Supervise).build();
    /// group
    ///     .build_task()
    ///     .name("slow")
    ///     .timeout(Duration::from_millis(100))
    ///     .spawn(|ctx| async move { ctx.sleep(Duration::from_secs(1)).await.map(|()| 1) });
    /// group.build_task().name("fast").spawn(|_ctx| async { Ok(2) });
    /// let outcomes = group.wait().await;
    /// assert!(matches!(outcomes[0], Outcome::Err(taskgroup::ContextError::DeadlineExceeded)));
    /// assert!(matches!(outcomes[1], Outcome::Ok(2)));
    /// # }
    /// ```
    pub fn build_task(&mut self) -> TaskBuilder<'_, T, E, J> {
        TaskBuilder::new(self)
    }

    /// Waits until the group has room for another task: until running and
    /// queued tasks no longer fill the limit. Returns at once in a group
    /// without a limit, and as soon as the group is cancelled.
    ///
    /// This is the backpressure point for a producer of many tasks: calling
    /// `ready().await` before each `spawn` keeps the queue empty, so memory
    /// stays flat however many tasks go through.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it reserves nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::<u64, String>::builder().limit(4).build();
    /// for i in 0..1_000 {
    ///     group.ready().await;
    ///     assert!(group.len() <= 4 + i as usize); // unread results count too
    ///     group.spawn(move |_ctx| async move { Ok(i) });
    /// }
    /// assert_eq!(group.wait().await.unwrap().len(), 1_000);
    /// # }
    /// ```
    pub async fn ready(&self) {
        if self.shared.limit.is_none() {
            return;
        }
        let mut woken = false;
        loop {
            let freed = self.shared.slot_freed.notified();
            if self.shared.ctx.is_cancelled() {
                return;
            }
            let room = {
                let state = self.shared.lock();
                let room = self.shared.has_room(&state);
                // Full, and the one running task is the caller: no slot can
                // ever free while it waits.
                if !room && state.only_one_running() {
                    self.refuse_own_task(state, "ready");
                }
                room
            };
            if room {
                // A freed slot wakes one waiter, and this call reserves
                // nothing: pass the wake-up on to any other `ready` caller,
                // or it would wait on while there is room.
                if woken {
                    self.shared.slot_freed.notify_one();
                }
                return;
            }
            freed.await;
            woken = true;
        }
    }

    /// Waits for the next task to finish and hands it out, in completion
    /// order; `None` once every task spawned has been handed out.
    ///
    /// Spawning while draining works: a crawler can spawn the links each
    /// page yields. [`wait`](TaskGroup::wait) and
    /// [`wait_outcomes`](TaskGroup::wait_outcomes) later report only on the
    /// tasks `next` did not hand out. A failure handed out here has already
    /// cancelled the group, as always. Several `next` calls may wait at
    /// once; each task is handed to one of them, and all see the end.
    ///
    /// # Panics
    ///
    /// When called from the group's last running task, which would wait
    /// for itself forever.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a task is removed from the group only in the poll that
    /// returns it, so dropping this future in a `select!` loses nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::{Outcome, TaskGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mut group = TaskGroup::<u64, String>::new();
    /// for ms in [30, 10, 20] {
    ///     group.spawn(move |ctx| async move {
    ///         ctx.sleep(Duration::from_millis(ms)).await.map_err(|e| e.to_string())?;
    ///         Ok(ms)
    ///     });
    /// }
    /// let mut order = Vec::new();
    /// while let Some((_id, outcome)) = group.next().await {
    ///     if let Outcome::Ok(ms) = outcome {
    ///         order.push(ms);
    ///     }
    /// }
    /// assert_eq!(order, [10, 20, 30]);
    /// # }
    /// ```
    pub async fn next(&self) -> Option<(TaskId, Outcome<T, E>)> {
        self.drop_stream_waiter();
        let mut woken = false;
        loop {
            let progress = self.shared.progress.notified();
            if let Some(found) = self.next_step(woken) {
                return found;
            }
            progress.await;
            woken = true;
        }
    }

    /// One look at the group for [`next`](TaskGroup::next) and the
    /// `Stream` impl: `Some` with what to hand out (a task, or `None` for
    /// the end), or `None` to wait for `progress`. `woken`: the caller was
    /// woken by `progress` since its last look.
    fn next_step(&self, woken: bool) -> Option<Option<(TaskId, Outcome<T, E>)>> {
        let mut state = self.shared.lock();
        let found = state.pop_done();
        // `next` takes `&self`, so several calls may wait at once, and a
        // task's completion wakes only one of them: a call that was woken
        // passes the wake-up on when another caller has something to see
        // (a further result, or the end), or that caller would wait
        // forever.
        let joined = state.is_joined();
        if found.is_some() || joined {
            let pass_on = woken && (state.has_done() || joined);
            drop(state);
            if pass_on {
                self.shared.progress.notify_one();
            }
            return Some(found);
        }
        // The caller waits: every ending wakes it from now on (shared
        // invariant 10).
        state.watch();
        // Nothing finished and one task running: if it is the caller, it
        // would wait for itself forever (closures queued behind it cannot
        // start while it holds its slot).
        if state.only_one_running() {
            self.refuse_own_task(state, "next");
        }
        None
    }

    /// Drops the `Stream`'s waiter left from a poll nobody followed up (a
    /// `select!` that dropped `StreamExt::next`). Dropping a waiter that
    /// was woken passes the wake-up on to the next one (tokio's `Notified`
    /// does), so it is not lost.
    fn drop_stream_waiter(&self) {
        let stale = self
            .stream_waiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(stale);
    }

    /// Hands out a task that has already finished, if any, without waiting:
    /// for a producer loop that drains results as it spawns, so they do not
    /// pile up until `wait`.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{Outcome, TaskGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::<u8, String>::new();
    /// assert!(group.try_next().is_none());
    /// let (started, running) = tokio::sync::oneshot::channel();
    /// let id = group.spawn(|_ctx| async move {
    ///     started.send(()).unwrap();
    ///     Ok(7)
    /// });
    /// // On this single-threaded runtime the task runs, and finishes, while
    /// // this one waits.
    /// running.await.unwrap();
    /// assert!(matches!(group.try_next(), Some((done, Outcome::Ok(7))) if done == id));
    /// assert!(group.try_next().is_none());
    /// # }
    /// ```
    pub fn try_next(&self) -> Option<(TaskId, Outcome<T, E>)> {
        self.shared.lock().pop_done()
    }

    /// Joins every task and returns what the group's
    /// [joiner](TaskGroupBuilder::joiner) makes of the outcomes
    /// [`next`](TaskGroup::next) did not hand out.
    ///
    /// Under the default, [`FailFast`], that is the values in spawn order,
    /// or the first error:
    ///
    /// - `Ok(values)` when every task (not handed out by `next`) returned
    ///   `Ok` before the group was cancelled, if it was.
    /// - `Err(GroupError::Failed(e))` with the first error in time: the one
    ///   that cancelled the group. Errors returned after the group was
    ///   cancelled never replace it.
    /// - `Err(GroupError::Cancelled(_))` when the group was cancelled from
    ///   outside (or by a failure that `next` already handed out) before
    ///   every task finished.
    ///
    /// Under [`Supervise`] it is every [`Outcome`]; under [`FirstOk`] the
    /// first success or [`AllFailed`].
    ///
    /// When it returns, the group context is cancelled (as Go does); the
    /// joiner's [`finish`](Joiner::finish) runs just before that.
    ///
    /// # Errors
    ///
    /// As the joiner decides: for `FailFast`, [`GroupError::Failed`](crate::GroupError::Failed) or
    /// [`GroupError::Cancelled`](crate::GroupError::Cancelled).
    ///
    /// # Panics
    ///
    /// If a task panicked, `FailFast` and `FirstOk` join every other task
    /// and then resume the first panic, with its payload, in the caller: a
    /// panic outranks any error. `Supervise` and
    /// [`wait_outcomes`](TaskGroup::wait_outcomes) report panics instead. A
    /// panic in the joiner's own `on_complete` is resumed here too, after
    /// every task was joined.
    ///
    /// Also panics when called from one of the group's own tasks (the group
    /// moved into it), which would wait for itself forever.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, by design: dropping the future drops the group, which
    /// cancels it and drops every async task; the results are lost.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::<u32, String>::new();
    /// for i in 0..3 {
    ///     group.spawn(move |_ctx| async move { Ok(i * 10) });
    /// }
    /// assert_eq!(group.wait().await, Ok(vec![0, 10, 20]));
    /// # }
    /// ```
    pub async fn wait(self) -> J::Output {
        let unread = self.join().await;
        self.finish(unread)
    }

    /// What `wait` returns once the tasks are joined: re-raises a panic of
    /// the group's own bookkeeping, else asks the joiner. Cancels the group
    /// either way.
    fn finish(self, unread: Unread<T, E>) -> J::Output {
        self.resume_own_panic();
        let Some(joiner) = self.shared.take_joiner() else {
            unreachable!("only `wait` takes the joiner, and only a panic drops it");
        };
        let output = joiner.finish(unread, &self.shared.ctx);
        drop(self);
        output
    }

    /// Re-raises the first panic of the group's own bookkeeping (a joiner's
    /// `on_complete`, or user code its cancel ran), after dropping the
    /// group.
    fn resume_own_panic(&self) {
        let own_panic = self.shared.lock().take_panic();
        if let Some(payload) = own_panic {
            // The group is dropped by the unwind, which cancels it, as on
            // every return.
            std::panic::resume_unwind(payload);
        }
    }

    /// What the group and its tasks are doing, as of now, with the live
    /// groups nested under it (built from its context or its tasks'): the
    /// part of [`dump`] that is this group. Weakly consistent, never calls
    /// user code, never waits for a task (see [`dump`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{TaskGroup, TaskState};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mut group = TaskGroup::<(), String>::builder().name("index").build();
    /// group.build_task().name("scan").spawn(|ctx| async move {
    ///     ctx.done().await;
    ///     Ok(())
    /// });
    /// tokio::task::yield_now().await;
    /// let snap = group.snapshot();
    /// assert_eq!(snap.tasks()[0].state(), TaskState::Idle);
    /// let text = snap.to_string();
    /// assert!(text.starts_with("group \"index\", 0.0ns old\n  task 0 (scan): idle, 0.0ns old, spawned at "));
    /// # }
    /// ```
    pub fn snapshot(&self) -> GroupSnapshot {
        let addr = self.shared.ctx.addr();
        observe::subtree(addr)
            .unwrap_or_else(|| observe::Observed::observe(&*self.shared, &mut Vec::new()))
    }

    /// Cancels the group, gives its tasks `grace` to end on their own,
    /// drops the async tasks still running, and reports: what
    /// [`wait`](TaskGroup::wait) returns, the tasks that had to be dropped
    /// ([`stragglers`](ShutdownReport::stragglers)), and the blocking tasks
    /// still running ([`still_blocking`](ShutdownReport::still_blocking)),
    /// each named and with where it was spawned.
    ///
    /// Returns as soon as every task has ended, possibly long before
    /// `grace` is over. A [shielded](Context::shield) section is waited
    /// for, up to its budget; a blocking task is not (it cannot be
    /// dropped), so a shutdown never hangs on one: it counts as
    /// [`Outcome::Cancelled`] in the output.
    ///
    /// `grace` replaces the group's own [grace](TaskGroupBuilder::grace)
    /// for this shutdown; on a group already cancelled and in its grace,
    /// whichever ends first ends it. The cancel is a plain one, as
    /// [`cancel`](TaskGroup::cancel)'s.
    ///
    /// # Panics
    ///
    /// As [`wait`](TaskGroup::wait): the first task panic (under joiners
    /// that re-raise), or a panic of the group's own bookkeeping, is
    /// re-raised here once every task was joined; and when called from one
    /// of the group's own tasks, which would wait for itself. Outside a
    /// tokio runtime with a timer, as [`tokio::time::sleep`] does.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future drops the group, which drops
    /// every async task at once (but shielded ones), as dropping the `wait`
    /// future does.
    ///
    /// # Examples
    ///
    /// A server's graceful shutdown:
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mut jobs = TaskGroup::<(), String>::new();
    /// jobs.build_task().name("polite").spawn(|ctx| async move {
    ///     ctx.done().await;
    ///     tokio::time::sleep(Duration::from_millis(200)).await; // wind down
    ///     Ok(())
    /// });
    /// jobs.build_task().name("deaf").spawn(|_ctx| async {
    ///     loop {
    ///         tokio::time::sleep(Duration::from_secs(1)).await;
    ///     }
    /// });
    /// tokio::task::yield_now().await;
    /// // ... on ctrl-c:
    /// let report = jobs.shutdown(Duration::from_secs(2)).await;
    /// for task in report.stragglers() {
    ///     eprintln!("dropped after the grace: {task}");
    /// }
    /// assert_eq!(report.stragglers().len(), 1);
    /// assert_eq!(report.stragglers()[0].name(), Some("deaf"));
    /// # }
    /// ```
    pub async fn shutdown(self, grace: Duration) -> ShutdownReport<J::Output> {
        self.refuse_own_task(self.shared.lock(), "shutdown");
        self.drop_stream_waiter();
        self.shared.drive();
        self.shared
            .ctx
            .cancel_internal(cancellation(ContextError::Cancelled, None));
        let _ = tokio::time::timeout(grace, self.settled()).await;
        self.shared.drop_tasks();
        self.settled().await;
        self.shared.quiesce().await;
        let now = tokio::time::Instant::now();
        let (stragglers, still_blocking, unread) = {
            let mut state = self.shared.lock();
            let (stragglers, still) = state.take_report(&self.shared.name, self.shared.epoch, now);
            (stragglers, still, state.take_unread())
        };
        #[cfg(feature = "tracing")]
        for task in &stragglers {
            tracing::warn!(
                parent: &self.shared.span,
                task = task.id().index(),
                name = task.name(),
                spawned_at = %task.spawned_at(),
                age = ?task.age(),
                "straggler dropped at the end of the shutdown's grace"
            );
        }
        ShutdownReport {
            output: self.finish(unread),
            stragglers,
            still_blocking,
        }
    }

    /// Waits until every task has ended but the blocking ones still
    /// running.
    async fn settled(&self) {
        loop {
            let progress = self.shared.progress.notified();
            if self.shared.lock().is_settled() {
                return;
            }
            progress.await;
        }
    }

    /// Joins every task and returns each one's [`Outcome`], in spawn order:
    /// values, errors, cancellations and panics alike, whatever the
    /// joiner. Tasks handed out by [`next`](TaskGroup::next) are not
    /// repeated.
    ///
    /// When it returns, the group context is cancelled.
    ///
    /// # Panics
    ///
    /// When called from one of the group's own tasks, as
    /// [`wait`](TaskGroup::wait) does.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future drops the group, as for
    /// [`wait`](TaskGroup::wait).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{Outcome, TaskGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::<u32, String>::new();
    /// group.spawn(|_ctx| async { Ok(1) });
    /// group.spawn(|_ctx| async { panic!("bug") });
    /// let outcomes = group.wait_outcomes().await;
    /// assert!(matches!(outcomes[0], Outcome::Ok(1)));
    /// assert!(outcomes[1].is_panicked());
    /// # }
    /// ```
    pub async fn wait_outcomes(self) -> Vec<Outcome<T, E>> {
        let unread = self.join().await;
        self.resume_own_panic();
        unread.collect_in_spawn_order(|_, outcome| Some(outcome))
    }

    /// Waits until every task has finished and was delivered to the
    /// joiner, and takes what they left.
    async fn join(&self) -> Unread<T, E> {
        {
            let mut state = self.shared.lock();
            // Consumed by `wait` or `wait_outcomes`: no shutdown can follow.
            state.unreport();
            self.refuse_own_task(state, "wait");
        }
        self.drop_stream_waiter();
        let unread = loop {
            let progress = self.shared.progress.notified();
            {
                let mut state = self.shared.lock();
                if state.is_joined() {
                    break state.take_unread();
                }
            }
            progress.await;
        };
        self.shared.quiesce().await;
        unread
    }

    /// Panics if called from one of the group's own tasks, which would wait
    /// for itself forever: a clear panic instead of a hang.
    fn refuse_own_task(&self, state: MutexGuard<'_, shared::State<T, E>>, what: &str) {
        let own = self.shared.runs_caller(&state);
        drop(state);
        assert!(
            !own,
            "TaskGroup::{what} called from one of the group's own tasks: \
             it would wait for itself forever"
        );
    }
}

/// The group as a [`Stream`](futures_core::Stream) of finished tasks:
/// each item is what [`next`](TaskGroup::next) would return, with the same
/// rules, so [`StreamExt`](https://docs.rs/futures/0.3/futures/stream/trait.StreamExt.html)
/// combinators work on `&mut group`.
///
/// The stream ends when `next` would return `None`: every task spawned has
/// been handed out. Spawning again afterwards makes it yield again.
/// [`size_hint`](futures_core::Stream::size_hint) is exact until a
/// [`spawner`](TaskGroup::spawner) is made: [`len`](TaskGroup::len) tasks
/// are still to come while the stream holds the group (`&mut`), since only
/// the group's owner can spawn. Once a spawner exists, `len` is the lower
/// bound and there is no upper one.
///
/// # Panics
///
/// Like [`next`](TaskGroup::next): when polled from the group's last
/// running task, which would wait for itself forever.
///
/// # Cancel safety
///
/// Cancel safe, like `next`: a task is removed from the group only in the
/// poll that returns it, so dropping a `StreamExt::next()` future in a
/// `select!` loses nothing. A wake-up it was owed is passed on to the next
/// `next` or `wait`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use futures::{Stream, StreamExt};
/// use taskgroup::{Outcome, TaskGroup};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut group = TaskGroup::<u64, String>::new();
/// for ms in [30, 10, 20] {
///     group.spawn(move |ctx| async move {
///         ctx.sleep(Duration::from_millis(ms)).await.map_err(|e| e.to_string())?;
///         Ok(ms)
///     });
/// }
/// assert_eq!(group.size_hint(), (3, Some(3)));
/// // The first two to finish, in completion order.
/// let first: Vec<u64> = (&mut group)
///     .filter_map(|(_id, outcome)| async move {
///         match outcome {
///             Outcome::Ok(ms) => Some(ms),
///             _ => None,
///         }
///     })
///     .take(2)
///     .collect()
///     .await;
/// assert_eq!(first, [10, 20]);
/// assert_eq!(group.len(), 1);
/// # }
/// ```
impl<T, E, J> futures_core::Stream for TaskGroup<T, E, J>
where
    T: Send + 'static,
    E: Send + 'static,
    J: Joiner<T, E>,
{
    type Item = (TaskId, Outcome<T, E>);

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let waiter = this
            .stream_waiter
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        // `next`'s loop, with its waiter kept in the group between polls.
        let mut woken = false;
        if let Some(progress) = waiter.as_mut() {
            if progress.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            *waiter = None;
            woken = true;
        }
        loop {
            if let Some(found) = this.next_step(woken) {
                return Poll::Ready(found);
            }
            // `progress` is only ever `notify_one`'d, which keeps a permit
            // for a waiter that comes later: made after the look, its
            // `Notified` misses nothing.
            let shared = Arc::clone(&this.shared);
            let mut progress: StreamWaiter =
                Box::pin(async move { shared.progress.notified().await });
            if progress.as_mut().poll(cx).is_pending() {
                *this
                    .stream_waiter
                    .get_mut()
                    .unwrap_or_else(PoisonError::into_inner) = Some(progress);
                return Poll::Pending;
            }
            woken = true;
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let len = self.len();
        if self.shared.has_spawners() {
            // A spawner may add tasks while the stream runs.
            return (len, None);
        }
        (len, Some(len))
    }
}

impl<T, E> Default for TaskGroup<T, E>
where
    T: Send + 'static,
    E: fmt::Display + Send + 'static,
{
    fn default() -> Self {
        TaskGroup::new()
    }
}

impl<T, E, J> Drop for TaskGroup<T, E, J> {
    fn drop(&mut self) {
        // A spawner's closure comes back from now on (shared invariant 12).
        self.shared.lock().end();
        if !self.shared.grace.is_zero() {
            // No grace once the group is gone: no task outlives it.
            self.shared.drive();
        }
        self.shared
            .ctx
            .cancel_internal(cancellation(ContextError::Cancelled, None));
        self.shared.drop_tasks();
    }
}

impl<T, E, J> fmt::Debug for TaskGroup<T, E, J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskGroup")
            .field("name", &self.shared.name)
            .field("limit", &self.shared.limit)
            .field("grace", &self.shared.grace)
            .field("spawned", &self.shared.lock().spawned())
            .field("cancelled", &self.shared.ctx.is_cancelled())
            .finish_non_exhaustive()
    }
}
