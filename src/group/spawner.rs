//! [`Spawner`]: a handle that adds tasks to a group from anywhere, its own
//! tasks included, without keeping the group alive.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Weak};

use super::joiner::Joiner;
use super::lifecycle::Spawned;
use super::outcome::TaskId;
use super::shared::{AsyncClosure, Shared};
use crate::Context;

/// A handle that spawns into a [`TaskGroup`](crate::TaskGroup) from
/// anywhere: a task of the group (a server's accept loop), another task,
/// another thread. Made by [`TaskGroup::spawner`](crate::TaskGroup::spawner).
///
/// It is `Clone + Send + Sync` and never keeps the group alive: the
/// group's owner decides when it ends. A spawn gives the closure back
/// (`Err(f)`) only once the group has ended: its `wait`, `wait_outcomes` or
/// `shutdown` has joined every task, or it was dropped. Until then it
/// behaves as [`TaskGroup::spawn`](crate::TaskGroup::spawn): past the
/// limit the closure queues; into a cancelled group the task counts as
/// cancelled and never starts. A task spawned while `wait` is waiting is
/// joined by that `wait`.
///
/// # Examples
///
/// A server's accept loop as a task of the group it feeds:
///
/// ```
/// use taskgroup::{Discard, TaskGroup};
/// use tokio::io::AsyncWriteExt;
/// use tokio::net::{TcpListener, TcpStream};
///
/// # #[tokio::main]
/// # async fn main() -> std::io::Result<()> {
/// let listener = TcpListener::bind("127.0.0.1:0").await?;
/// let addr = listener.local_addr()?;
/// let mut conns = TaskGroup::<(), std::io::Error>::builder().joiner(Discard).build();
/// let spawner = conns.spawner();
/// conns.build_task().name("accept").spawn(move |ctx| async move {
///     while let Ok(Ok((mut socket, _))) = ctx.run(listener.accept()).await {
///         let served = spawner.spawn(|_ctx| async move { socket.write_all(b"hello\n").await });
///         if served.is_err() {
///             break; // the group has ended
///         }
///     }
///     Ok(())
/// });
/// let mut client = TcpStream::connect(addr).await?;
/// let mut line = String::new();
/// tokio::io::AsyncReadExt::read_to_string(&mut client, &mut line).await?;
/// assert_eq!(line, "hello\n");
/// let report = conns.shutdown(std::time::Duration::from_secs(1)).await;
/// assert_eq!(report.output.failed(), 0);
/// # Ok(())
/// # }
/// ```
pub struct Spawner<T, E, J> {
    shared: Weak<Shared<T, E, J>>,
    ctx: Context,
}

impl<T, E, J> Spawner<T, E, J> {
    pub(super) fn new(shared: &Arc<Shared<T, E, J>>) -> Self {
        Spawner {
            shared: Arc::downgrade(shared),
            ctx: shared.ctx.clone(),
        }
    }

    /// The group's context, as [`TaskGroup::context`](crate::TaskGroup::context)
    /// gives it: cancelled when the group is.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let group = TaskGroup::<(), String>::new();
    /// let spawner = group.spawner();
    /// group.cancel();
    /// assert!(spawner.context().is_cancelled());
    /// # }
    /// ```
    pub fn context(&self) -> &Context {
        &self.ctx
    }
}

impl<T, E, J> Spawner<T, E, J>
where
    T: Send + 'static,
    E: Send + 'static,
    J: Joiner<T, E>,
{
    /// Spawns a task into the group, as
    /// [`TaskGroup::spawn`](crate::TaskGroup::spawn) does, and returns its
    /// id.
    ///
    /// # Errors
    ///
    /// `Err(f)`, untouched, once the group has ended (joined by `wait`,
    /// `wait_outcomes` or `shutdown`, or dropped): nothing would join the
    /// task.
    ///
    /// # Panics
    ///
    /// As [`TaskGroup::spawn`](crate::TaskGroup::spawn): outside a tokio
    /// runtime when the group has not run a task yet.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::<u32, String>::new();
    /// let spawner = group.spawner();
    /// group.spawn(move |_ctx| async move {
    ///     // A task adds a sibling.
    ///     spawner.spawn(|_ctx| async { Ok(2) }).map_err(|_| "ended".to_string())?;
    ///     Ok(1)
    /// });
    /// assert_eq!(group.wait().await, Ok(vec![1, 2]));
    /// # }
    /// ```
    #[track_caller]
    pub fn spawn<F, Fut>(&self, f: F) -> Result<TaskId, F>
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        self.admit(Spawned::here(), f, true)
    }

    /// [`spawn`](Spawner::spawn), with a name for the task (a supervisor's
    /// child: the name shows in `dump`, causes and reports).
    #[track_caller]
    pub(crate) fn spawn_named<F, Fut>(&self, name: Arc<str>, f: F) -> Result<TaskId, F>
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let mut spawned = Spawned::here();
        spawned.who.name = Some(name);
        self.admit(spawned, f, true)
    }

    /// Spawns a task unless the group is at its limit, cancelled or ended,
    /// as [`TaskGroup::try_spawn`](crate::TaskGroup::try_spawn) does.
    ///
    /// # Errors
    ///
    /// `Err(f)`, untouched, when running and queued tasks fill the limit,
    /// the group is cancelled, or it has ended.
    ///
    /// # Panics
    ///
    /// As [`spawn`](Spawner::spawn).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let group = TaskGroup::<(), String>::builder().limit(1).build();
    /// let spawner = group.spawner();
    /// assert!(spawner.try_spawn(|ctx| async move { ctx.done().await; Ok(()) }).is_ok());
    /// assert!(spawner.try_spawn(|_ctx| async { Ok(()) }).is_err()); // full
    /// drop(group);
    /// assert!(spawner.try_spawn(|_ctx| async { Ok(()) }).is_err()); // ended
    /// # }
    /// ```
    #[track_caller]
    pub fn try_spawn<F, Fut>(&self, f: F) -> Result<TaskId, F>
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        self.admit(Spawned::here(), f, false)
    }

    /// Admits `f` into the group, if it is still there (see
    /// `Shared::admit`); the closure comes back otherwise.
    fn admit<F, Fut>(&self, spawned: Spawned, f: F, queue: bool) -> Result<TaskId, F>
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let Some(shared) = self.shared.upgrade() else {
            return Err(f);
        };
        shared
            .admit(spawned, AsyncClosure::new(f), queue)
            .map_err(|closure| closure.0)
    }

    /// Cancels one task of the group on its own, as
    /// [`TaskGroup::cancel_task`](crate::TaskGroup::cancel_task) does.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::{Outcome, TaskGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = TaskGroup::<(), String>::new();
    /// let spawner = group.spawner();
    /// let id = group.spawn(|ctx| async move {
    ///     ctx.done().await;
    ///     Ok(())
    /// });
    /// assert!(spawner.cancel_task(id));
    /// // Without a grace, it is dropped at once, as on a group cancel.
    /// assert!(matches!(group.wait_outcomes().await[..], [Outcome::Cancelled]));
    /// assert!(!spawner.cancel_task(id)); // ended
    /// # }
    /// ```
    pub fn cancel_task(&self, id: TaskId) -> bool {
        self.shared
            .upgrade()
            .is_some_and(|shared| shared.cancel_task(id))
    }
}

impl<T, E, J> Clone for Spawner<T, E, J> {
    fn clone(&self) -> Self {
        Spawner {
            shared: self.shared.clone(),
            ctx: self.ctx.clone(),
        }
    }
}

impl<T, E, J> fmt::Debug for Spawner<T, E, J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = self.shared.upgrade();
        f.debug_struct("Spawner")
            .field("group", &shared.as_ref().and_then(|s| s.name.as_deref()))
            .field(
                "ended",
                &shared.as_ref().is_none_or(|s| s.lock().has_ended()),
            )
            .field("cancelled", &self.ctx.is_cancelled())
            .finish()
    }
}
