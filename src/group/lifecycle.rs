//! How a task is told apart and how a group winds down: the task builder
//! (names, per-task deadlines), what a task records about itself, and the
//! report a [`shutdown`](TaskGroup::shutdown) returns.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::TaskGroup;
use super::joiner::Joiner;
use super::outcome::TaskId;
use super::shared::{AsyncClosure, BlockingClosure};
use crate::{CancelHandle, Context};

/// Who a task is, from its spawn to its report: where it was spawned and
/// its name. The one record of both: each stage of a task's life keeps a
/// `Who` and adds what it knows then ([`Spawned`], [`Tag`], [`Meta`], which
/// keeps it as a smaller [`Site`]), and the public [`TaskInfo`] is made
/// from it.
#[derive(Clone)]
pub(super) struct Who {
    pub(super) at: &'static Location<'static>,
    pub(super) name: Option<Arc<str>>,
}

/// What the caller of `spawn` says about a task: who it is and its own
/// deadline. Kept with a queued closure until it starts.
pub(super) struct Spawned {
    pub(super) who: Who,
    pub(super) timeout: Option<Duration>,
}

impl Spawned {
    /// A task spawned by the caller, with no name and no deadline.
    #[track_caller]
    pub(super) fn here() -> Spawned {
        Spawned {
            who: Who {
                at: Location::caller(),
                name: None,
            },
            timeout: None,
        }
    }

    /// What the task keeps once started.
    pub(super) fn tag(&self, born: u64) -> Tag {
        Tag {
            who: self.who.clone(),
            born,
        }
    }
}

/// What a started task keeps about itself, for the shutdown report and the
/// `TaskFailed` cause: who it is, and when it was first polled, in
/// nanoseconds after the group's epoch ([`UNPOLLED`]: not yet).
#[derive(Clone)]
pub(super) struct Tag {
    pub(super) who: Who,
    pub(super) born: u64,
}

/// `Tag::born` of a task not yet polled.
pub(super) const UNPOLLED: u64 = u64::MAX;

/// Who a started async task is, kept in its runner cell: what a snapshot,
/// a shutdown report and a failure's cause name. Fixed at the start, but
/// for `born`, written once by the shard that first polls the task (the
/// holder of its queue entry) and read by anyone (relaxed: a snapshot is
/// weakly consistent).
pub(super) struct Meta {
    pub(super) id: TaskId,
    site: Site,
    /// As [`Tag::born`].
    born: AtomicU64,
    /// The task's span (`taskgroup.task`), entered around every poll.
    #[cfg(feature = "tracing")]
    pub(super) span: tracing::Span,
}

/// [`Who`] as a cell keeps it: two words, not three, for every task. A
/// name is rare, so a named task pays one allocation for both; every
/// other task keeps its spawn site alone.
enum Site {
    Unnamed(&'static Location<'static>),
    Named(Arc<Who>),
}

impl Meta {
    /// A task not yet polled.
    pub(super) fn new(id: TaskId, spawned: &Spawned) -> Meta {
        let site = match spawned.who.name {
            None => Site::Unnamed(spawned.who.at),
            Some(_) => Site::Named(Arc::new(spawned.who.clone())),
        };
        Meta {
            id,
            site,
            born: AtomicU64::new(UNPOLLED),
            #[cfg(feature = "tracing")]
            span: tracing::Span::none(),
        }
    }

    /// Where the task was spawned.
    pub(super) fn at(&self) -> &'static Location<'static> {
        match &self.site {
            Site::Unnamed(at) => at,
            Site::Named(who) => who.at,
        }
    }

    /// The task's name, if it has one.
    pub(super) fn name(&self) -> Option<&Arc<str>> {
        match &self.site {
            Site::Unnamed(_) => None,
            Site::Named(who) => who.name.as_ref(),
        }
    }

    /// Who the task is.
    fn who(&self) -> Who {
        match &self.site {
            Site::Unnamed(at) => Who { at, name: None },
            Site::Named(who) => Who::clone(who),
        }
    }

    /// When the task was first polled, as [`Tag::born`].
    pub(super) fn born(&self) -> u64 {
        self.born.load(Relaxed)
    }

    /// Records the first poll, at `now()`; later polls change nothing.
    /// Called by the holder of the cell's queue entry only.
    pub(super) fn polled(&self, now: impl FnOnce() -> u64) {
        if self.born.load(Relaxed) == UNPOLLED {
            self.born.store(now(), Relaxed);
        }
    }

    /// What the task's ending carries to the group.
    pub(super) fn tag(&self) -> Tag {
        Tag {
            who: self.who(),
            born: self.born(),
        }
    }
}

impl Tag {
    /// The task's info as of `age_at`, `born` counted from `epoch`; `group`
    /// is its group's name.
    pub(super) fn info(
        self,
        id: TaskId,
        group: &Option<Arc<str>>,
        epoch: tokio::time::Instant,
        age_at: tokio::time::Instant,
    ) -> TaskInfo {
        let age = if self.born == UNPOLLED {
            Duration::ZERO
        } else {
            let born = epoch + Duration::from_nanos(self.born);
            age_at.saturating_duration_since(born)
        };
        TaskInfo {
            id,
            name: self.who.name,
            group: group.clone(),
            spawned_at: self.who.at,
            age,
        }
    }
}

/// The blocking task of a group this thread runs, for
/// [`TaskInfo::current`]: set by its closure's thread for the closure's
/// run.
pub(super) struct RunsTask {
    id: TaskId,
    tag: Tag,
    group: Option<Arc<str>>,
    epoch: tokio::time::Instant,
}

thread_local! {
    static RUNS_BLOCKING: RefCell<Option<RunsTask>> = const { RefCell::new(None) };
}

impl RunsTask {
    /// A blocking task about to start; its age counts from [`enter`](Self::enter).
    pub(super) fn blocking(
        id: TaskId,
        spawned: &Spawned,
        group: &Option<Arc<str>>,
        epoch: tokio::time::Instant,
    ) -> RunsTask {
        RunsTask {
            id,
            tag: spawned.tag(UNPOLLED),
            group: group.clone(),
            epoch,
        }
    }

    /// Marks this thread as running the task until the guard is dropped.
    pub(super) fn enter(mut self) -> RunsTaskGuard {
        self.tag.born = since(self.epoch, tokio::time::Instant::now());
        let outer = RUNS_BLOCKING.with(|runs| runs.replace(Some(self)));
        RunsTaskGuard { outer }
    }

    /// The blocking task this thread runs, as of now.
    fn current() -> Option<TaskInfo> {
        RUNS_BLOCKING.with(|runs| {
            let runs = runs.borrow();
            let runs = runs.as_ref()?;
            let now = tokio::time::Instant::now();
            Some(runs.tag.clone().info(runs.id, &runs.group, runs.epoch, now))
        })
    }
}

/// Restores what the thread ran before, when dropped.
pub(super) struct RunsTaskGuard {
    outer: Option<RunsTask>,
}

impl Drop for RunsTaskGuard {
    fn drop(&mut self) {
        let outer = self.outer.take();
        // Not while the thread's locals are being destroyed.
        let _ = RUNS_BLOCKING.try_with(|runs| runs.replace(outer));
    }
}

/// Nanoseconds from `epoch` to `now`, for [`Tag::born`].
pub(super) fn since(epoch: tokio::time::Instant, now: tokio::time::Instant) -> u64 {
    let nanos = now.saturating_duration_since(epoch).as_nanos();
    u64::try_from(nanos).unwrap_or(UNPOLLED - 1)
}

/// One task as a [`ShutdownReport`] names it: its id, its name, where it
/// was spawned, and how long it had lived.
///
/// Its `Display` is one line for a log: `task 3 (users), spawned at
/// src/main.rs:12:9, 2.5s old`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use taskgroup::TaskGroup;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut group = TaskGroup::<(), String>::new();
/// group.build_task().name("stubborn").spawn(|_ctx| async {
///     // Ignores its context: dropped when the grace runs out.
///     tokio::time::sleep(Duration::from_secs(3600)).await;
///     Ok(())
/// });
/// tokio::task::yield_now().await; // let it start
/// let report = group.shutdown(Duration::from_secs(2)).await;
/// let straggler = &report.stragglers()[0];
/// assert_eq!(straggler.name(), Some("stubborn"));
/// assert_eq!(straggler.age(), Duration::from_secs(2));
/// assert_eq!(straggler.spawned_at().file(), file!());
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct TaskInfo {
    id: TaskId,
    name: Option<Arc<str>>,
    group: Option<Arc<str>>,
    spawned_at: &'static Location<'static>,
    age: Duration,
}

impl TaskInfo {
    /// The group task the caller runs in, as of now: `None` outside one.
    ///
    /// Inside a [`TaskGroup`]'s task, async (at every poll, so across its
    /// awaits) or blocking, this names the task: its id, its name, its
    /// group's name, where it was spawned and its age. It is what
    /// [`tokio::task::id`] would be for a tokio task of its own, which a
    /// group's async task is not (see [how the tasks
    /// run](TaskGroup#how-the-tasks-run)): use it in logs, and, with
    /// [`group`](TaskInfo::group), as a key for what a task keeps per task.
    /// Outside any group task (in a plain tokio task, say) it returns
    /// `None`. A task of a [`scope`](crate::scope) runs inside the scope's
    /// own future, so there it names the group task that awaits the scope,
    /// if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{TaskGroup, TaskInfo};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::<String, String>::builder().name("fetch").build();
    /// group.build_task().name("users").spawn(|_ctx| async {
    ///     tokio::task::yield_now().await; // still itself after an await
    ///     let me = TaskInfo::current().expect("inside a group task");
    ///     Ok(format!("{} of {}", me.name().unwrap(), me.group().unwrap()))
    /// });
    /// group.spawn_blocking(|_ctx| {
    ///     let me = TaskInfo::current().expect("inside a group task");
    ///     Ok(format!("task {}", me.id().index()))
    /// });
    /// assert_eq!(group.wait().await.unwrap(), ["users of fetch", "task 1"]);
    /// assert!(TaskInfo::current().is_none());
    /// # }
    /// ```
    pub fn current() -> Option<TaskInfo> {
        super::runner::current_task().or_else(RunsTask::current)
    }

    /// The name of the task's group, given with
    /// [`TaskGroupBuilder::name`](crate::TaskGroupBuilder::name), if any.
    ///
    /// # Examples
    ///
    /// See [`TaskInfo::current`].
    pub fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// The task's id, its spawn index in the group.
    ///
    /// # Examples
    ///
    /// See [`TaskInfo`].
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The name given with [`TaskBuilder::name`], if any.
    ///
    /// # Examples
    ///
    /// See [`TaskInfo`].
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Where the task was spawned: the caller of `spawn`,
    /// [`TaskBuilder::spawn`] or their siblings.
    ///
    /// # Examples
    ///
    /// See [`TaskInfo`].
    pub fn spawned_at(&self) -> &'static Location<'static> {
        self.spawned_at
    }

    /// How long the task had lived when the report was made, on tokio's
    /// clock (paused time included): from its first poll, read once per
    /// batch of polls (so to within a few microseconds), for an async task;
    /// from its start for a blocking one. Zero for an async task dropped
    /// before its first poll.
    ///
    /// # Examples
    ///
    /// See [`TaskInfo`].
    pub fn age(&self) -> Duration {
        self.age
    }
}

impl fmt::Display for TaskInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {}", self.id.index())?;
        if let Some(name) = &self.name {
            write!(f, " ({name})")?;
        }
        write!(f, ", spawned at {}, {:.1?} old", self.spawned_at, self.age)
    }
}

/// What [`TaskGroup::shutdown`] returns: what [`wait`](TaskGroup::wait)
/// would have returned, and the tasks that did not end on their own.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use taskgroup::{GroupError, TaskGroup};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut group = TaskGroup::<&str, String>::new();
/// group.spawn(|ctx| async move {
///     ctx.done().await; // winds down when told
///     Ok("flushed")
/// });
/// group.build_task().name("deaf").spawn(|_ctx| async {
///     std::future::pending::<()>().await;
///     Ok("never")
/// });
/// tokio::task::yield_now().await;
/// let report = group.shutdown(Duration::from_secs(1)).await;
/// assert!(matches!(report.output, Err(GroupError::Cancelled(_))));
/// let names: Vec<_> = report.stragglers().iter().map(|t| t.name()).collect();
/// assert_eq!(names, [Some("deaf")]);
/// assert!(report.still_blocking().is_empty());
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct ShutdownReport<O> {
    /// What [`wait`](TaskGroup::wait) returns for the group's joiner, with
    /// the tasks still blocking counted as [`Outcome::Cancelled`](crate::Outcome::Cancelled).
    pub output: O,
    pub(super) stragglers: Vec<TaskInfo>,
    pub(super) still_blocking: Vec<TaskInfo>,
}

impl<O> ShutdownReport<O> {
    /// The async tasks the group dropped unfinished once the grace ran out,
    /// in spawn order: the ones that ignored the cancel.
    ///
    /// # Examples
    ///
    /// See [`ShutdownReport`].
    pub fn stragglers(&self) -> &[TaskInfo] {
        &self.stragglers
    }

    /// The blocking tasks still running when the shutdown returned, in
    /// spawn order. They cannot be dropped and were not waited for; each
    /// returns when its code next looks at its context.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::<(), String>::new();
    /// let (started, running) = std::sync::mpsc::channel();
    /// let (release, released) = std::sync::mpsc::channel::<()>();
    /// group.build_task().name("index").spawn_blocking(move |_ctx| {
    ///     started.send(()).unwrap();
    ///     released.recv().unwrap(); // blocks, deaf to the cancel
    ///     Ok(())
    /// });
    /// running.recv().unwrap();
    /// let report = group.shutdown(Duration::from_millis(10)).await;
    /// assert_eq!(report.still_blocking()[0].name(), Some("index"));
    /// release.send(()).unwrap();
    /// # }
    /// ```
    pub fn still_blocking(&self) -> &[TaskInfo] {
        &self.still_blocking
    }
}

/// Spawns one task with a name or a deadline of its own: from
/// [`TaskGroup::build_task`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use taskgroup::{ContextError, TaskGroup};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut group = TaskGroup::<(), ContextError>::new();
/// group
///     .build_task()
///     .name("users")
///     .timeout(Duration::from_millis(300))
///     .spawn(|ctx| async move {
///         ctx.sleep(Duration::from_secs(5)).await // too slow
///     });
/// assert!(group.wait().await.is_err());
/// # }
/// ```
#[must_use = "a TaskBuilder spawns nothing until one of its spawn methods is called"]
pub struct TaskBuilder<'g, T, E, J> {
    group: &'g mut TaskGroup<T, E, J>,
    spawned: Spawned,
}

impl<'g, T, E, J> TaskBuilder<'g, T, E, J>
where
    T: Send + 'static,
    E: Send + 'static,
    J: Joiner<T, E>,
{
    pub(super) fn new(group: &'g mut TaskGroup<T, E, J>) -> Self {
        TaskBuilder {
            group,
            spawned: Spawned::here(),
        }
    }

    /// Names the task: the name appears in the [`TaskFailed`](crate::TaskFailed)
    /// cause when the task fails ("task 3 (users) failed: ..."), and in the
    /// [`TaskInfo`] of a shutdown report.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{TaskFailed, TaskGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::<(), String>::new();
    /// let ctx = group.context().clone();
    /// group.build_task().name("users").spawn(|_ctx| async { Err("timeout".to_string()) });
    /// let _ = group.wait().await;
    /// let cause = ctx.cause().unwrap();
    /// assert_eq!(cause.downcast_ref::<TaskFailed>().unwrap().task_name(), Some("users"));
    /// assert_eq!(cause.to_string(), "task 0 (users) failed: timeout");
    /// # }
    /// ```
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.spawned.who.name = Some(name.into());
        self
    }

    /// Gives the task a deadline of its own, `timeout` after it starts
    /// (after it leaves the queue, under a limit): its context is a child
    /// of the group's that only this task sees, cancelled with
    /// [`ContextError::DeadlineExceeded`](crate::ContextError::DeadlineExceeded)
    /// then. What the task returns decides its outcome, as for any task:
    /// one that returns the context's error fails, and under
    /// [`FailFast`](crate::FailFast) cancels its siblings.
    ///
    /// # Examples
    ///
    /// See [`TaskBuilder`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.spawned.timeout = Some(timeout);
        self
    }

    /// Spawns the task, as [`TaskGroup::spawn`] does.
    ///
    /// # Panics
    ///
    /// As [`TaskGroup::spawn`]. With a [`timeout`](TaskBuilder::timeout),
    /// also when the task starts outside a tokio runtime.
    ///
    /// # Examples
    ///
    /// See [`TaskBuilder`].
    #[track_caller]
    pub fn spawn<F, Fut>(self, f: F) -> TaskId
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let mut spawned = self.spawned;
        spawned.who.at = Location::caller();
        let admitted = self.group.shared.admit(spawned, AsyncClosure::new(f), true);
        admitted.unwrap_or_else(|_| unreachable!("a group's own spawn always admits"))
    }

    /// Spawns the task unless the group is at its limit or cancelled, as
    /// [`TaskGroup::try_spawn`] does.
    ///
    /// # Errors
    ///
    /// `Err(f)`, untouched, when running and queued tasks fill the limit or
    /// the group is cancelled.
    ///
    /// # Panics
    ///
    /// As [`TaskBuilder::spawn`].
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::<u8, String>::builder().limit(1).build();
    /// let first = group.build_task().name("a").try_spawn(|_ctx| async { Ok(1) });
    /// assert!(first.is_ok());
    /// let second = group.build_task().name("b").try_spawn(|_ctx| async { Ok(2) });
    /// assert!(second.is_err()); // full: the closure comes back
    /// assert_eq!(group.wait().await, Ok(vec![1]));
    /// # }
    /// ```
    #[track_caller]
    pub fn try_spawn<F, Fut>(self, f: F) -> Result<TaskId, F>
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let mut spawned = self.spawned;
        spawned.who.at = Location::caller();
        self.group.try_admit(spawned, f)
    }

    /// Spawns the task on tokio's blocking pool, as
    /// [`TaskGroup::spawn_blocking`] does.
    ///
    /// # Panics
    ///
    /// As [`TaskGroup::spawn_blocking`].
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{ContextError, TaskGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::<usize, ContextError>::new();
    /// group.build_task().name("index").spawn_blocking(|ctx| {
    ///     ctx.check()?;
    ///     Ok(42)
    /// });
    /// assert_eq!(group.wait().await, Ok(vec![42]));
    /// # }
    /// ```
    #[track_caller]
    pub fn spawn_blocking<F>(self, f: F) -> TaskId
    where
        F: FnOnce(Context) -> Result<T, E> + Send + 'static,
    {
        let mut spawned = self.spawned;
        spawned.who.at = Location::caller();
        let admitted = self.group.shared.admit(spawned, BlockingClosure(f), true);
        admitted.unwrap_or_else(|_| unreachable!("a group's own spawn always admits"))
    }
}

impl<T, E, J> fmt::Debug for TaskBuilder<'_, T, E, J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskBuilder")
            .field("name", &self.spawned.who.name)
            .field("timeout", &self.spawned.timeout)
            .field("spawned_at", &self.spawned.who.at)
            .finish_non_exhaustive()
    }
}

/// The handle of a task's own deadline, for as long as the task runs; its
/// end cancels the task's context plainly (not as a dropped handle would).
pub(super) struct EndOnDrop(pub(super) CancelHandle);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}
