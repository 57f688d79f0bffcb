//! What is running, and why is it stuck: snapshots of live groups and
//! their tasks, nested by context ancestry, and the process-wide registry
//! behind [`dump`].
//!
//! The registry keeps one entry per live group, never per task: a weak
//! reference, added when the group is built and removed when it is
//! dropped, in one of [`STRIPES`] slabs (a thread's groups go to its own
//! stripe, so threads building groups rarely meet on a lock). A snapshot
//! reads what the group already keeps: its queue, its blocking tasks, its
//! finished outcomes, and the runner's cells.
//!
//! # Invariants
//!
//! 1. A dump never runs user code. It upgrades a group's weak reference
//!    only under its stripe's lock, and lets go of it before releasing
//!    that lock; a group leaves the registry (under the same lock) first
//!    thing in its drop, while the `TaskGroup` still holds its own strong
//!    reference. So the dump's reference is never the last one, and no
//!    task value, joiner or closure is dropped by it. A snapshot clones
//!    names (`Arc<str>`), causes (`Arc`) and runner cells; a cell's last
//!    reference never holds a task's future (the runner lets go of a cell
//!    only once it has ended), and the dump lets go of the cells it read
//!    only after the stripe lock (closing a task's span may run a tracing
//!    subscriber).
//! 2. A dump never blocks a task for longer than a copy: it takes a
//!    group's state lock to copy its queue, blocking tasks and finished
//!    outcomes' names, and the runner's queue lock to clone its cells, one
//!    at a time and never together; it never waits for a task to do
//!    anything.
//!
//! # Lock order
//!
//! A stripe lock, then a group's state lock or its runner's queue lock.
//! Nothing takes a stripe lock while holding either: a group is built and
//! dropped under no lock of its own.

use std::fmt;
use std::panic::Location;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use slab::Slab;

use tokio::time::Instant;

use super::joiner::Joiner;
use super::lifecycle::UNPOLLED;
use super::outcome::TaskId;
use super::runner::TaskCell;
use super::shared::Shared;
use crate::{Cause, Context, ContextError};

/// A live group, as the registry sees it.
pub(super) trait Observed: Send + Sync {
    /// The group's context: who it is, and whose child.
    fn context(&self) -> &Context;

    /// The group and its tasks as of now, without its children. The
    /// runner cells it read go into `read`, for the caller to let go of
    /// once it holds no lock (a cell that ended meanwhile may be let go of
    /// last there, and its span closed).
    fn observe(&self, read: &mut Vec<Arc<TaskCell>>) -> GroupSnapshot;
}

/// How many slabs the registry is split into.
const STRIPES: usize = 16;

/// Every live group, a weak reference each (invariant 1).
static REGISTRY: [Mutex<Slab<Weak<dyn Observed>>>; STRIPES] =
    [const { Mutex::new(Slab::new()) }; STRIPES];

/// Hands each thread its stripe, in turn.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STRIPE: usize = NEXT_STRIPE.fetch_add(1, Relaxed) % STRIPES;
}

fn lock(stripe: usize) -> std::sync::MutexGuard<'static, Slab<Weak<dyn Observed>>> {
    // No user code runs under a stripe lock (invariant 1).
    REGISTRY[stripe]
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// A group's entry in the registry; dropping it removes the entry. The
/// group's first field, so that it goes before the group lets go of its
/// own strong reference (invariant 1).
pub(super) struct Registration {
    stripe: usize,
    key: usize,
}

impl Registration {
    /// Adds `group` to the registry, in the calling thread's stripe.
    pub(super) fn new(group: Weak<dyn Observed>) -> Registration {
        // A group built while the thread's locals are being torn down
        // still registers, in the first stripe.
        let stripe = STRIPE.try_with(|stripe| *stripe).unwrap_or(0);
        let key = lock(stripe).insert(group);
        Registration { stripe, key }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let removed = lock(self.stripe).try_remove(self.key);
        // A weak reference: dropping it runs no user code, lock or not.
        drop(removed);
    }
}

/// One group's snapshot, with what it takes to nest it.
struct Flat {
    /// Its context's address.
    addr: usize,
    /// Its context's ancestors' addresses, nearest first.
    ancestors: Vec<usize>,
    snapshot: GroupSnapshot,
}

/// Every live group, flat, in no order.
fn collect() -> Vec<Flat> {
    let mut flats = Vec::new();
    let mut read = Vec::new();
    for stripe in 0..STRIPES {
        let groups = lock(stripe);
        for (_, group) in groups.iter() {
            let Some(group) = group.upgrade() else {
                continue; // being dropped
            };
            let ctx = group.context();
            let mut ancestors = Vec::new();
            ctx.ancestors(|addr| {
                ancestors.push(addr);
                true
            });
            flats.push(Flat {
                addr: ctx.addr(),
                ancestors,
                snapshot: group.observe(&mut read),
            });
            // Never the last reference (invariant 1).
            drop(group);
        }
        drop(groups);
        read.clear(); // under no lock
    }
    flats
}

/// Nests `flats` by context ancestry: each group under the nearest
/// ancestor context that is a group's. Returns the top-level groups, and,
/// if asked for `root` (a group's context address), that group alone with
/// its subtree.
fn nest(flats: Vec<Flat>, root: Option<usize>) -> Vec<GroupSnapshot> {
    let index: std::collections::HashMap<usize, usize> = flats
        .iter()
        .enumerate()
        .map(|(i, flat)| (flat.addr, i))
        .collect();
    let parents: Vec<Option<usize>> = flats
        .iter()
        .map(|flat| {
            flat.ancestors
                .iter()
                .find_map(|addr| index.get(addr).copied())
        })
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); flats.len()];
    let mut tops = Vec::new();
    for (i, parent) in parents.iter().enumerate() {
        match parent {
            Some(parent) => children[*parent].push(i),
            None => tops.push(i),
        }
    }
    let mut slots: Vec<Option<GroupSnapshot>> =
        flats.into_iter().map(|flat| Some(flat.snapshot)).collect();
    fn build(
        i: usize,
        slots: &mut [Option<GroupSnapshot>],
        children: &[Vec<usize>],
    ) -> GroupSnapshot {
        let mut group = slots[i].take().expect("each group is nested once");
        group.children = children[i]
            .iter()
            .map(|&child| build(child, slots, children))
            .collect();
        oldest_first(&mut group.children);
        group
    }
    let picked = match root {
        Some(addr) => index.get(&addr).copied().into_iter().collect(),
        None => tops,
    };
    let mut groups: Vec<GroupSnapshot> = picked
        .into_iter()
        .map(|i| build(i, &mut slots, &children))
        .collect();
    oldest_first(&mut groups);
    groups
}

fn oldest_first(groups: &mut [GroupSnapshot]) {
    groups.sort_by_key(|group| std::cmp::Reverse(group.age));
}

/// A snapshot of every live [`TaskGroup`](crate::TaskGroup) in the
/// process, nested by context ancestry: a group built from one of another
/// group's task contexts (or any context derived from one) is that group's
/// child, never also a top-level entry. A group dropped (or joined by
/// `wait`) has left; one dropped while the dump runs is skipped.
///
/// The dump is *weakly consistent*: it looks at one group at a time, each
/// under that group's own locks for as long as a copy takes, so it is
/// not one instant across groups, and a task may have moved on by the
/// time the dump returns. It never calls user code (no `Debug` of task
/// values, no destructor of theirs), never waits for a task, and costs
/// nothing while nobody calls it beyond one registry entry per group.
///
/// Scoped groups ([`scope`](crate::scope)) are not listed: they live inside
/// the future of the task that awaits them, which is listed.
///
/// Its `Display`, from `examples/task_dump.rs` (which serves it over HTTP):
///
/// ```text
/// 1 live task group (top level)
/// group "crawler", 52.0ms old
///   task 0 (fetch example.com): idle, 51.9ms old, spawned at examples/task_dump.rs:69:14
///   task 1 (fetch example.org): idle, 51.9ms old, spawned at examples/task_dump.rs:69:14
///   task 2 (index): blocking, 51.9ms old, spawned at examples/task_dump.rs:79:10
///   task 3 (fetch example.net): idle, 51.8ms old, spawned at examples/task_dump.rs:88:10
///   task 4 (fetch example.edu): queued, spawned at examples/task_dump.rs:108:10
///   group "retries", 51.8ms old
///     task 0 (attempt 1): idle, 51.8ms old, spawned at examples/task_dump.rs:97:22
///     task 1 (attempt 2): idle, 51.8ms old, spawned at examples/task_dump.rs:97:22
/// ```
///
/// A group that was cancelled says so and why:
/// `group "fetch", 1.5s old, cancelled (context cancelled: task 1 of group
/// "fetch" failed: backend down)`.
///
/// # Examples
///
/// ```
/// use taskgroup::{TaskGroup, TaskState};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut fetch = TaskGroup::<(), String>::builder().name("fetch").build();
/// fetch.build_task().name("users").spawn(|ctx| async move {
///     ctx.done().await; // parked until the group is cancelled
///     Ok(())
/// });
/// tokio::task::yield_now().await;
///
/// let dump = taskgroup::dump();
/// let group = dump
///     .groups()
///     .iter()
///     .find(|g| g.name() == Some("fetch"))
///     .expect("a live group is in the dump");
/// assert_eq!(group.tasks()[0].name(), Some("users"));
/// assert_eq!(group.tasks()[0].state(), TaskState::Idle);
/// let text = dump.to_string();
/// assert!(text.contains("group \"fetch\", 0.0ns old\n  task 0 (users): idle, 0.0ns old, spawned at "));
/// # }
/// ```
pub fn dump() -> Dump {
    Dump {
        groups: nest(collect(), None),
    }
}

/// The snapshot of the group whose context is at `addr`, with its subtree,
/// or `None` if it is not registered.
pub(super) fn subtree(addr: usize) -> Option<GroupSnapshot> {
    nest(collect(), Some(addr)).pop()
}

/// What [`dump`] returns: every live group, nested. Its `Display` is an
/// indented tree, its `Serialize` (feature `serde`) the same tree as JSON.
///
/// # Examples
///
/// See [`dump`].
#[derive(Clone, Debug)]
pub struct Dump {
    groups: Vec<GroupSnapshot>,
}

impl Dump {
    /// The top-level groups: those not built from another live group's
    /// context, oldest first.
    ///
    /// # Examples
    ///
    /// See [`dump`].
    pub fn groups(&self) -> &[GroupSnapshot] {
        &self.groups
    }
}

impl fmt::Display for Dump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.groups.len() {
            0 => return writeln!(f, "no live task groups"),
            1 => writeln!(f, "1 live task group (top level)")?,
            n => writeln!(f, "{n} live task groups (top level)")?,
        }
        for group in &self.groups {
            group.write_tree(f, 0)?;
        }
        Ok(())
    }
}

/// One group as of a [`snapshot`](crate::TaskGroup::snapshot) or a
/// [`dump`]: its name, whether it was cancelled and why, its tasks, and the
/// groups nested under it.
///
/// # Examples
///
/// ```
/// use taskgroup::{TaskGroup, TaskState};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut group = TaskGroup::<(), String>::builder().name("crawl").limit(1).build();
/// group.spawn(|ctx| async move {
///     ctx.done().await;
///     Ok(())
/// });
/// group.spawn(|_ctx| async { Ok(()) }); // beyond the limit: queued
/// tokio::task::yield_now().await;
///
/// let snap = group.snapshot();
/// assert_eq!(snap.name(), Some("crawl"));
/// assert_eq!(snap.cancelled(), None);
/// let states: Vec<TaskState> = snap.tasks().iter().map(|t| t.state()).collect();
/// assert_eq!(states, [TaskState::Idle, TaskState::Queued]);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct GroupSnapshot {
    pub(super) name: Option<Arc<str>>,
    pub(super) cancelled: Option<ContextError>,
    pub(super) cause: Option<Cause>,
    pub(super) age: Duration,
    pub(super) tasks: Vec<TaskSnapshot>,
    pub(super) unlisted: usize,
    pub(super) children: Vec<GroupSnapshot>,
}

impl GroupSnapshot {
    /// The name given with [`TaskGroupBuilder::name`](crate::TaskGroupBuilder::name).
    ///
    /// # Examples
    ///
    /// See [`GroupSnapshot`].
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Whether the group's context was cancelled, and how: what
    /// [`Context::err`] said.
    ///
    /// # Examples
    ///
    /// See [`GroupSnapshot`].
    pub fn cancelled(&self) -> Option<ContextError> {
        self.cancelled
    }

    /// Why the group's context was cancelled: what [`Context::cause`]
    /// said (for a group that failed, a [`TaskFailed`](crate::TaskFailed)
    /// naming the task).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{TaskFailed, TaskGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::<(), String>::new();
    /// group.spawn(|_ctx| async { Err("disk full".to_string()) });
    /// group.spawn(|ctx| async move {
    ///     ctx.done().await;
    ///     Ok(())
    /// });
    /// while group.context().err().is_none() {
    ///     tokio::task::yield_now().await;
    /// }
    /// let snap = group.snapshot();
    /// let cause = snap.cause().expect("cancelled by the failure");
    /// assert_eq!(cause.downcast_ref::<TaskFailed>().unwrap().task().index(), 0);
    /// # }
    /// ```
    pub fn cause(&self) -> Option<&Cause> {
        self.cause.as_ref()
    }

    /// How long the group has lived, on tokio's clock.
    ///
    /// # Examples
    ///
    /// See [`GroupSnapshot`].
    pub fn age(&self) -> Duration {
        self.age
    }

    /// The group's tasks that have not been handed out yet, in spawn
    /// order: queued, started (running, idle, blocking, shielded) and
    /// finished but unread.
    ///
    /// A task that a worker has taken for its very first poll is between
    /// the queues the snapshot reads, and is counted in
    /// [`unlisted`](GroupSnapshot::unlisted) instead.
    ///
    /// # Examples
    ///
    /// See [`GroupSnapshot`].
    pub fn tasks(&self) -> &[TaskSnapshot] {
        &self.tasks
    }

    /// Started tasks the snapshot could not list: taken by a worker for
    /// their first poll, which has not returned yet. Nonzero when a task
    /// blocks its thread in its first poll, or for a moment.
    ///
    /// # Examples
    ///
    /// See [`GroupSnapshot`].
    pub fn unlisted(&self) -> usize {
        self.unlisted
    }

    /// The live groups built from this group's context or its tasks'
    /// contexts (or contexts derived from those), oldest first.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let outer = TaskGroup::<(), String>::builder().name("request").build();
    /// let inner = TaskGroup::<(), String>::builder()
    ///     .name("fan-out")
    ///     .context(outer.context())
    ///     .build();
    /// let snap = outer.snapshot();
    /// assert_eq!(snap.children()[0].name(), Some("fan-out"));
    /// drop(inner);
    /// assert!(outer.snapshot().children().is_empty());
    /// # }
    /// ```
    pub fn children(&self) -> &[GroupSnapshot] {
        &self.children
    }

    fn write_tree(&self, f: &mut fmt::Formatter<'_>, depth: usize) -> fmt::Result {
        let pad = depth * 2;
        write!(f, "{:pad$}group", "")?;
        match &self.name {
            Some(name) => write!(f, " {name:?}")?,
            None => write!(f, " (unnamed)")?,
        }
        write!(f, ", {:.1?} old", self.age)?;
        if let Some(err) = self.cancelled {
            match &self.cause {
                Some(cause) => write!(f, ", cancelled ({err}: {cause})")?,
                None => write!(f, ", cancelled ({err})")?,
            }
        }
        writeln!(f)?;
        let inner = pad + 2;
        if self.tasks.is_empty() && self.unlisted == 0 && self.children.is_empty() {
            writeln!(f, "{:inner$}(no tasks)", "")?;
        }
        for task in &self.tasks {
            writeln!(f, "{:inner$}{task}", "")?;
        }
        if self.unlisted > 0 {
            writeln!(f, "{:inner$}{} more in their first poll", "", self.unlisted)?;
        }
        for child in &self.children {
            child.write_tree(f, depth + 1)?;
        }
        Ok(())
    }
}

impl fmt::Display for GroupSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_tree(f, 0)
    }
}

/// One task in a [`GroupSnapshot`].
///
/// Its `Display` is one line: `task 3 (users): idle, 2.5s old, spawned at
/// src/main.rs:12:9`.
///
/// # Examples
///
/// ```
/// use taskgroup::{TaskGroup, TaskState};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut group = TaskGroup::<(), String>::new();
/// group.build_task().name("tick").spawn(|ctx| async move {
///     ctx.done().await;
///     Ok(())
/// });
/// tokio::task::yield_now().await;
/// tokio::time::advance(std::time::Duration::from_secs(2)).await;
///
/// let snap = group.snapshot();
/// let task = &snap.tasks()[0];
/// assert_eq!(task.id().index(), 0);
/// assert_eq!(task.name(), Some("tick"));
/// assert_eq!(task.state(), TaskState::Idle);
/// assert_eq!(task.age(), std::time::Duration::from_secs(2));
/// assert_eq!(task.spawned_at().file(), file!());
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct TaskSnapshot {
    pub(super) id: TaskId,
    pub(super) name: Option<Arc<str>>,
    pub(super) state: TaskState,
    pub(super) age: Duration,
    pub(super) spawned_at: &'static Location<'static>,
}

impl TaskSnapshot {
    /// The task's id, its spawn index in the group.
    ///
    /// # Examples
    ///
    /// See [`TaskSnapshot`].
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The name given with [`TaskBuilder::name`](crate::TaskBuilder::name).
    ///
    /// # Examples
    ///
    /// See [`TaskSnapshot`].
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// What the task was doing.
    ///
    /// # Examples
    ///
    /// See [`TaskSnapshot`].
    pub fn state(&self) -> TaskState {
        self.state
    }

    /// How long since the task started, on tokio's clock: since its first
    /// poll for an async task (read once per batch of polls), since its
    /// start for a blocking one; zero for a queued task, and for a finished
    /// one (the group keeps only where it was spawned and its name).
    ///
    /// # Examples
    ///
    /// See [`TaskSnapshot`].
    pub fn age(&self) -> Duration {
        self.age
    }

    /// Where the task was spawned (the caller of `spawn` or its siblings).
    ///
    /// # Examples
    ///
    /// See [`TaskSnapshot`].
    pub fn spawned_at(&self) -> &'static Location<'static> {
        self.spawned_at
    }
}

impl fmt::Display for TaskSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {}", self.id.index())?;
        if let Some(name) = &self.name {
            write!(f, " ({name})")?;
        }
        if matches!(self.state, TaskState::Queued | TaskState::Finished) {
            // No age kept (see `age`).
            return write!(f, ": {}, spawned at {}", self.state, self.spawned_at);
        }
        write!(
            f,
            ": {}, {:.1?} old, spawned at {}",
            self.state, self.age, self.spawned_at
        )
    }
}

/// What a task in a [`TaskSnapshot`] was doing.
///
/// # Examples
///
/// ```
/// use taskgroup::TaskState;
///
/// assert_eq!(TaskState::Idle.to_string(), "idle");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Beyond the group's [limit](crate::TaskGroupBuilder::limit): its
    /// closure has not been called yet.
    Queued,
    /// Being polled, or woken and waiting in the group's queue to be.
    Running,
    /// Parked: waiting for a wake-up (a timer, a channel, the context).
    Idle,
    /// A [`spawn_blocking`](crate::TaskGroup::spawn_blocking) task whose
    /// closure is running (or about to) on tokio's blocking pool.
    Blocking,
    /// Inside a [`Context::shield`] section, which the group does not drop
    /// (running or parked).
    Shielded,
    /// Ended, its outcome not yet handed out by
    /// [`next`](crate::TaskGroup::next) or [`wait`](crate::TaskGroup::wait).
    Finished,
}

impl TaskState {
    fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Idle => "idle",
            TaskState::Blocking => "blocking",
            TaskState::Shielded => "shielded",
            TaskState::Finished => "finished",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(feature = "serde")]
mod json {
    //! The snapshot types as JSON, the shape of the `Display` tree:
    //! `{"groups": [{"name", "age_secs", "cancelled", "cause", "tasks":
    //! [{"id", "name", "state", "age_secs", "spawned_at"}], "unlisted",
    //! "children": [..]}]}`. Written by hand: names are `Arc<str>` and
    //! locations `&'static Location`, which serde does not serialize.

    use serde::ser::{Serialize, SerializeStruct, Serializer};

    use super::{Dump, GroupSnapshot, TaskSnapshot, TaskState};

    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    impl Serialize for Dump {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut out = s.serialize_struct("Dump", 1)?;
            out.serialize_field("groups", &self.groups)?;
            out.end()
        }
    }

    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    impl Serialize for GroupSnapshot {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut out = s.serialize_struct("GroupSnapshot", 7)?;
            out.serialize_field("name", &self.name.as_deref())?;
            out.serialize_field("age_secs", &self.age.as_secs_f64())?;
            let cancelled = self.cancelled.map(|err| err.to_string());
            out.serialize_field("cancelled", &cancelled)?;
            let cause = self.cause.as_ref().map(ToString::to_string);
            out.serialize_field("cause", &cause)?;
            out.serialize_field("tasks", &self.tasks)?;
            out.serialize_field("unlisted", &self.unlisted)?;
            out.serialize_field("children", &self.children)?;
            out.end()
        }
    }

    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    impl Serialize for TaskSnapshot {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut out = s.serialize_struct("TaskSnapshot", 5)?;
            out.serialize_field("id", &self.id.index())?;
            out.serialize_field("name", &self.name.as_deref())?;
            out.serialize_field("state", &self.state)?;
            out.serialize_field("age_secs", &self.age.as_secs_f64())?;
            out.serialize_field("spawned_at", &self.spawned_at.to_string())?;
            out.end()
        }
    }

    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    impl Serialize for TaskState {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(self.as_str())
        }
    }
}

impl<T, E, J> Observed for Shared<T, E, J>
where
    T: Send + 'static,
    E: Send + 'static,
    J: Joiner<T, E>,
{
    fn context(&self) -> &Context {
        &self.ctx
    }

    /// Copies what the group keeps, under its state lock and then its
    /// runner's queue lock, one at a time (invariant 2).
    fn observe(&self, read: &mut Vec<Arc<TaskCell>>) -> GroupSnapshot {
        let now = Instant::now();
        let age = |born: u64| {
            if born == UNPOLLED {
                Duration::ZERO
            } else {
                now.saturating_duration_since(self.epoch + Duration::from_nanos(born))
            }
        };
        let snapshot = |id, name: Option<&Arc<str>>, state, age, spawned_at| TaskSnapshot {
            id,
            name: name.cloned(),
            state,
            age,
            spawned_at,
        };
        let mut tasks = Vec::new();
        let state = self.lock();
        for (id, spawned) in state.queued() {
            let name = spawned.who.name.as_ref();
            tasks.push(snapshot(
                id,
                name,
                TaskState::Queued,
                Duration::ZERO,
                spawned.who.at,
            ));
        }
        for (id, tag) in state.blocking() {
            let name = tag.who.name.as_ref();
            tasks.push(snapshot(
                id,
                name,
                TaskState::Blocking,
                age(tag.born),
                tag.who.at,
            ));
        }
        for (id, at, name) in state.finished() {
            if let Some(at) = at {
                tasks.push(snapshot(id, name, TaskState::Finished, Duration::ZERO, at));
            }
        }
        let started = state.started_async();
        drop(state);
        let mut listed = 0;
        let start = read.len();
        read.extend(self.cells());
        for cell in &read[start..] {
            if cell.is_ended() {
                continue;
            }
            let meta = cell.meta();
            let state = if cell.is_shielded() {
                TaskState::Shielded
            } else if cell.is_idle() {
                TaskState::Idle
            } else {
                TaskState::Running
            };
            tasks.push(snapshot(
                meta.id,
                meta.name(),
                state,
                age(meta.born()),
                meta.at(),
            ));
            listed += 1;
        }
        tasks.sort_by_key(|task| task.id);
        GroupSnapshot {
            name: self.name.clone(),
            cancelled: self.ctx.err(),
            cause: self.ctx.cause(),
            age: now.saturating_duration_since(self.epoch),
            tasks,
            unlisted: started.saturating_sub(listed),
            children: Vec::new(),
        }
    }
}
