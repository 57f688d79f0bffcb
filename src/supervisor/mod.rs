//! Supervision: restarts for long-lived tasks (Erlang/OTP's supervisors,
//! with Akka's backoff). A [`Supervisor`] is a task group whose tasks are
//! its children's runs and one more, its driver, which restarts children
//! as their [`Restart`] type and the [`Strategy`] say, within the
//! supervisor's intensity, and stops them one by one in reverse order.
//!
//! # Invariants
//!
//! 1. Every child's state is in `State`, under one lock, which the owner
//!    (adding a child) and the driver (everything else) take; neither
//!    awaits while holding it, nor runs user code under it (a child's
//!    factory is called inside its task, at its first poll). A run is in
//!    `running` from its spawn to its ending, both under the lock, so the
//!    driver always finds the child an ending belongs to.
//! 2. The group's joiner sends every run's ending to the driver and keeps
//!    nothing; the driver is the only receiver. While it waits for one
//!    child to stop it buffers the other messages, in order, and handles
//!    them next.
//! 3. Once `stopping` is set (under the lock), nothing starts: the owner
//!    adds children unstarted, the driver starts no run, and what waits
//!    for a restart ends. The driver then stops every running child in
//!    reverse order of addition, one at a time, and ends with the result.
//! 4. A child's context is made from the supervisor's values with
//!    `without_cancel`: only the driver cancels it (no tree cancel reaches
//!    all children at once). The group's own context is detached from the
//!    supervisor's too; the group is cancelled only when the supervisor
//!    is dropped.

mod backoff;
mod driver;
#[cfg(all(test, loom))]
mod models;

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;

pub use backoff::Backoff;
use driver::{Child, Msg, Phase, State, SupervisorJoiner, SupervisorShared};

use crate::{CancelHandle, Context, Outcome, TaskGroup};

/// How a supervisor restarts its children when one of them must be
/// restarted (OTP's strategies).
///
/// # Examples
///
/// ```
/// use taskgroup::Strategy;
///
/// assert_eq!(Strategy::default(), Strategy::OneForOne);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Restart the child alone. The default.
    #[default]
    OneForOne,
    /// Stop every other child (in reverse start order), then start them
    /// all again, in order: for children that only work together.
    OneForAll,
    /// Stop the children started after it (in reverse order), then start
    /// it and them again, in order: for children that depend on the ones
    /// before them.
    RestForOne,
}

/// When a child is restarted after it ends (OTP's restart types).
///
/// # Examples
///
/// ```
/// use taskgroup::Restart;
///
/// assert_eq!(Restart::default(), Restart::Permanent);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Restart {
    /// After any end, `Ok` included: a worker that must always run. The
    /// default.
    #[default]
    Permanent,
    /// Only after an `Err` or a panic: a job that may finish.
    Transient,
    /// Never.
    Temporary,
}

/// What a child's factory is told about this start.
///
/// # Examples
///
/// See [`ChildBuilder::spawn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    attempt: u32,
}

impl Run {
    /// How many of the child's earlier runs started (called the factory):
    /// 0 at its first start, n at its n-th restart, unless a run was
    /// stopped before its first poll (see [`ChildReport::starts`]).
    ///
    /// # Examples
    ///
    /// See [`ChildBuilder::spawn`].
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

/// A child's factory, boxed: called for every start.
pub(crate) type Factory<E> =
    Arc<dyn Fn(Context, Run) -> Pin<Box<dyn Future<Output = Result<(), E>> + Send>> + Send + Sync>;

/// Builds a [`Supervisor`]: its name, parent context, [`Strategy`] and
/// restart intensity. Made by [`Supervisor::builder`].
///
/// # Examples
///
/// See [`Supervisor`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct SupervisorBuilder<E> {
    name: Option<Arc<str>>,
    context: Option<Context>,
    strategy: Strategy,
    intensity: (u32, Duration),
    _errors: std::marker::PhantomData<fn() -> E>,
}

impl<E> SupervisorBuilder<E> {
    /// The supervisor's name: in `dump()`, causes, tracing and its errors.
    ///
    /// # Examples
    ///
    /// See [`Supervisor`].
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The supervisor's parent: its cancel or deadline stops the children,
    /// one by one; its values reach every child. Default: a new root.
    ///
    /// # Examples
    ///
    /// See [`Supervisor`].
    pub fn context(mut self, parent: &Context) -> Self {
        self.context = Some(parent.clone());
        self
    }

    /// How children are restarted. Default [`Strategy::OneForOne`].
    ///
    /// # Examples
    ///
    /// See [`Supervisor`].
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// More than `max` restarts within any `period` stop the supervisor
    /// with [`SupervisorError::IntensityExceeded`]. Restarts of every
    /// child count together; a `OneForAll` or `RestForOne` round counts as
    /// one. Default: 3 in 5 s.
    ///
    /// # Panics
    ///
    /// If `period` is zero, naming it.
    ///
    /// # Examples
    ///
    /// See [`SupervisorError`].
    #[track_caller]
    pub fn intensity(mut self, max: u32, period: Duration) -> Self {
        assert!(
            !period.is_zero(),
            "Supervisor intensity: the period must be above zero"
        );
        self.intensity = (max, period);
        self
    }
}

impl<E> SupervisorBuilder<E>
where
    E: fmt::Display + Send + 'static,
{
    /// Builds the supervisor. Its driver (a task of its group) starts on
    /// the current runtime at once.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::{Strategy, Supervisor};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let sup = Supervisor::<String>::builder()
    ///     .name("workers")
    ///     .strategy(Strategy::RestForOne)
    ///     .intensity(5, Duration::from_secs(10))
    ///     .build();
    /// assert!(format!("{sup:?}").contains("RestForOne"));
    /// assert!(sup.shutdown().await.unwrap().children().is_empty());
    /// # }
    /// ```
    #[track_caller]
    pub fn build(self) -> Supervisor<E> {
        let parent = self.context.unwrap_or_else(Context::background);
        let (ctx, cancel) = parent.with_cancel();
        let (tx, rx) = mpsc::unbounded_channel();
        let driver_panic = Arc::new(Mutex::new(None));
        let mut builder = TaskGroup::<(), E>::builder()
            .joiner(SupervisorJoiner {
                tx: tx.clone(),
                driver_panic: driver_panic.clone(),
            })
            // Invariant 4: cancelled by nothing but the supervisor's drop.
            .context(&ctx.without_cancel());
        if let Some(name) = &self.name {
            builder = builder.name(name.to_string());
        }
        let mut group = builder.build();
        let shared = Arc::new(SupervisorShared {
            state: Mutex::new(State {
                children: Vec::new(),
                running: std::collections::HashMap::new(),
                stopping: false,
                sealed: false,
                result: None,
            }),
            name: self.name,
            strategy: self.strategy,
            intensity: self.intensity,
            values: ctx.without_cancel(),
            spawner: group.spawner(),
        });
        let driver = shared.clone();
        let done = ctx.done_owned();
        group
            .build_task()
            .name("supervisor")
            .spawn(move |_ctx| async move {
                driver.drive(rx, done).await;
                Ok(())
            });
        Supervisor {
            ctx,
            cancel,
            group,
            shared,
            tx,
            driver_panic,
        }
    }
}

/// Restarts long-lived tasks when they fail, without a storm, and stops
/// them in order: OTP's supervisor on top of a [`TaskGroup`].
///
/// Children are added with [`child`](Supervisor::child) and start at once,
/// in the order added. Each child is a factory called for every start,
/// with a fresh [`Context`] (the supervisor's values; cancelled by the
/// supervisor only) and its [`Run`]. The supervisor restarts them as their
/// [`Restart`] type and its [`Strategy`] say, after their [`Backoff`],
/// whether or not anyone awaits [`wait`](Supervisor::wait); more than its
/// intensity's restarts within its period stop it with
/// [`SupervisorError::IntensityExceeded`].
///
/// Stopping (its context cancelled, [`shutdown`](Supervisor::shutdown), a
/// significant child's normal end, the intensity exceeded) stops the
/// children one after the other, in the reverse of the order they were
/// added: each one's context is cancelled, it gets its
/// [`shutdown`](ChildBuilder::shutdown) grace to end, then it is dropped
/// at its next await ([shields](Context::shield) hold). Dropping the
/// supervisor instead drops every child at once.
///
/// `dump()` shows it as a group (its name) whose tasks are its running
/// children, by name, with their number of starts and last end, beside
/// its driver (`supervisor`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use taskgroup::{Backoff, Context, Strategy, Supervisor};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut sup = Supervisor::<String>::builder()
///     .name("services")
///     .strategy(Strategy::OneForOne)
///     .intensity(3, Duration::from_secs(5))
///     .build();
/// sup.child("purge")
///     .backoff(Backoff::exponential(Duration::from_millis(100), Duration::from_secs(10)))
///     .spawn(|ctx: Context, run| async move {
///         // Fails twice, then purges until stopped.
///         if run.attempt() < 2 {
///             return Err(format!("database not ready (attempt {})", run.attempt()));
///         }
///         ctx.done().await;
///         Ok(())
///     });
/// tokio::time::sleep(Duration::from_secs(1)).await;
/// let report = sup.shutdown().await.unwrap();
/// let purge = &report.children()[0];
/// assert_eq!((purge.name(), purge.starts()), ("purge", 3));
/// assert!(purge.last_exit().unwrap().is_ok());
/// # }
/// ```
pub struct Supervisor<E> {
    ctx: Context,
    cancel: CancelHandle,
    group: TaskGroup<(), E, SupervisorJoiner<E>>,
    shared: Arc<SupervisorShared<E>>,
    tx: mpsc::UnboundedSender<Msg<E>>,
    driver_panic: Arc<Mutex<Option<Box<dyn Any + Send>>>>,
}

impl<E> Supervisor<E> {
    /// A builder: name, parent context, strategy, intensity.
    ///
    /// # Examples
    ///
    /// See [`Supervisor`].
    pub fn builder() -> SupervisorBuilder<E> {
        SupervisorBuilder {
            name: None,
            context: None,
            strategy: Strategy::OneForOne,
            intensity: (3, Duration::from_secs(5)),
            _errors: std::marker::PhantomData,
        }
    }

    /// The supervisor's context: cancelling it (or its parent, or its
    /// deadline passing) stops the children in order. Each child's context
    /// has its values but not its cancellation.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::Supervisor;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let sup = Supervisor::<String>::builder().build();
    /// assert!(!sup.context().is_cancelled());
    /// sup.cancel();
    /// assert!(sup.context().is_cancelled());
    /// assert!(sup.wait().await.is_ok());
    /// # }
    /// ```
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Cancels the supervisor's context: it stops its children one by one
    /// and ends; [`wait`](Supervisor::wait) then returns the report.
    ///
    /// # Examples
    ///
    /// See [`context`](Supervisor::context).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

impl<E> Supervisor<E>
where
    E: fmt::Display + Send + 'static,
{
    /// Adds a child named `name`; [`ChildBuilder::spawn`] starts it.
    ///
    /// # Examples
    ///
    /// See [`ChildBuilder`].
    pub fn child(&mut self, name: impl Into<Arc<str>>) -> ChildBuilder<'_, E> {
        ChildBuilder {
            sup: self,
            name: name.into(),
            restart: Restart::Permanent,
            backoff: Backoff::none(),
            shutdown: Duration::from_secs(5),
            significant: false,
        }
    }

    /// Waits until the supervisor has ended, and says how: `Ok` with the
    /// report when its context was cancelled (after stopping every child),
    /// when a significant child ended with `Ok`, or when no child is left
    /// to run (temporary and transient ones ended); `Err` when its
    /// intensity was exceeded.
    ///
    /// Not needed for restarts: they happen whether or not this is awaited.
    ///
    /// # Errors
    ///
    /// [`SupervisorError::IntensityExceeded`], after every child was
    /// stopped.
    ///
    /// # Panics
    ///
    /// If the supervisor's own bookkeeping panicked (a bug), that panic.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future drops the supervisor, which
    /// drops every child at once.
    ///
    /// # Examples
    ///
    /// See [`Supervisor`] and [`SupervisorError`].
    pub async fn wait(self) -> Result<SupervisorReport<E>, SupervisorError<E>> {
        let Supervisor {
            ctx: _ctx,
            cancel,
            group,
            shared,
            tx,
            driver_panic,
        } = self;
        // No child can be added from now on: the driver may end once no
        // child is left to run.
        shared.lock().sealed = true;
        let _ = tx.send(Msg::Sealed);
        group.wait().await;
        drop(cancel);
        if let Some(payload) = driver_panic
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            std::panic::resume_unwind(payload);
        }
        shared
            .lock()
            .result
            .take()
            .expect("the driver sets the result before it ends")
    }

    /// Cancels the supervisor's context, stops the children one by one in
    /// reverse order (each within its grace), and returns what
    /// [`wait`](Supervisor::wait) returns.
    ///
    /// # Errors
    ///
    /// As [`wait`](Supervisor::wait): an intensity exceeded before the
    /// shutdown came.
    ///
    /// # Panics
    ///
    /// As [`wait`](Supervisor::wait).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`wait`](Supervisor::wait).
    ///
    /// # Examples
    ///
    /// See [`Supervisor`].
    pub async fn shutdown(self) -> Result<SupervisorReport<E>, SupervisorError<E>> {
        self.cancel.cancel();
        self.wait().await
    }
}

impl<E> fmt::Debug for SupervisorBuilder<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorBuilder")
            .field("name", &self.name)
            .field("strategy", &self.strategy)
            .field("intensity", &self.intensity)
            .finish_non_exhaustive()
    }
}

impl<E> fmt::Debug for ChildBuilder<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildBuilder")
            .field("name", &self.name)
            .field("restart", &self.restart)
            .field("backoff", &self.backoff)
            .field("shutdown", &self.shutdown)
            .field("significant", &self.significant)
            .finish_non_exhaustive()
    }
}

impl<E> fmt::Debug for Supervisor<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Supervisor")
            .field("name", &self.shared.name)
            .field("strategy", &self.shared.strategy)
            .field("children", &state.children.len())
            .field("stopping", &state.stopping)
            .finish_non_exhaustive()
    }
}

/// Adds one child to a [`Supervisor`]: its [`Restart`] type, [`Backoff`],
/// shutdown grace and whether it is significant. Made by
/// [`Supervisor::child`]; [`spawn`](ChildBuilder::spawn) starts it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use taskgroup::{Backoff, Restart, Supervisor};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut sup = Supervisor::<String>::builder().build();
/// sup.child("migrate")
///     .restart(Restart::Transient) // again only if it fails
///     .significant() // once it is done, the service is done
///     .shutdown(Duration::from_secs(1))
///     .backoff(Backoff::exponential(Duration::from_millis(50), Duration::from_secs(1)))
///     .spawn(|_ctx, _run| async { Ok(()) });
/// let report = sup.wait().await.unwrap();
/// assert_eq!(report.children()[0].starts(), 1);
/// # }
/// ```
#[must_use = "a child builder starts nothing until `spawn` is called"]
pub struct ChildBuilder<'s, E> {
    sup: &'s mut Supervisor<E>,
    name: Arc<str>,
    restart: Restart,
    backoff: Backoff,
    shutdown: Duration,
    significant: bool,
}

impl<E> ChildBuilder<'_, E>
where
    E: fmt::Display + Send + 'static,
{
    /// When it is restarted. Default [`Restart::Permanent`].
    ///
    /// # Examples
    ///
    /// See [`ChildBuilder`].
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// How long it waits before each restart. Default
    /// [`Backoff::none`]: at once.
    ///
    /// # Examples
    ///
    /// See [`ChildBuilder`].
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Its grace when stopped: from its own context's cancel until it is
    /// dropped at its next await. Default 5 s.
    ///
    /// # Examples
    ///
    /// See [`ChildBuilder`].
    pub fn shutdown(mut self, grace: Duration) -> Self {
        self.shutdown = grace;
        self
    }

    /// Its normal end (`Ok`) stops the supervisor, which then returns
    /// `Ok(report)`. Only for a `Transient` or `Temporary` child.
    ///
    /// # Examples
    ///
    /// See [`ChildBuilder`].
    pub fn significant(mut self) -> Self {
        self.significant = true;
        self
    }

    /// Adds the child and starts it: `factory(ctx, run)` is called for
    /// every start, inside the child's task, so it needs no `Clone` of what
    /// it captures (it borrows it for each start). A child added while a
    /// `OneForAll` or `RestForOne` round is under way is not part of that
    /// round; once the supervisor is stopping, it is added but not started.
    ///
    /// # Panics
    ///
    /// When the child is `significant` and `Permanent` (it would never
    /// end normally, so it could never stop the supervisor: OTP refuses
    /// it too), naming the child.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use taskgroup::Supervisor;
    ///
    /// struct Db; // not Clone: shared by reference to each start
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let db = Arc::new(Db);
    /// let mut sup = Supervisor::<String>::builder().intensity(10, Duration::from_secs(1)).build();
    /// sup.child("consumer").spawn(move |ctx, run| {
    ///     let db = db.clone();
    ///     async move {
    ///         let _db: &Db = &db;
    ///         if run.attempt() == 0 {
    ///             return Err("broker went away".to_string());
    ///         }
    ///         ctx.done().await;
    ///         Ok(())
    ///     }
    /// });
    /// tokio::time::sleep(Duration::from_millis(10)).await;
    /// let report = sup.shutdown().await.unwrap();
    /// assert_eq!(report.children()[0].starts(), 2);
    /// # }
    /// ```
    #[track_caller]
    pub fn spawn<F, Fut>(self, factory: F)
    where
        F: Fn(Context, Run) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        assert!(
            !(self.significant && self.restart == Restart::Permanent),
            "child {:?}: a significant child must be Transient or Temporary; a Permanent \
             one is restarted after any end, so its end could never stop the supervisor",
            self.name
        );
        let factory: Factory<E> = Arc::new(move |ctx, run| Box::pin(factory(ctx, run)));
        let shared = &self.sup.shared;
        let mut state = shared.lock();
        state.children.push(Child {
            name: self.name,
            restart: self.restart,
            backoff: self.backoff,
            shutdown: self.shutdown,
            significant: self.significant,
            factory,
            starts: Arc::default(),
            consecutive: 0,
            last_exit: None,
            phase: Phase::Ended,
        });
        let index = state.children.len() - 1;
        if !state.stopping {
            shared.start(&mut state, index);
        }
        drop(state);
        let _ = self.sup.tx.send(Msg::Added);
    }
}

/// What a supervisor reports when it ends normally: each child, in the
/// order added, with its number of starts and its last end.
///
/// # Examples
///
/// See [`Supervisor`].
pub struct SupervisorReport<E> {
    pub(crate) children: Vec<ChildReport<E>>,
}

impl<E> SupervisorReport<E> {
    /// Each child, in the order it was added.
    ///
    /// # Examples
    ///
    /// See [`Supervisor`].
    pub fn children(&self) -> &[ChildReport<E>] {
        &self.children
    }
}

impl<E: fmt::Debug> fmt::Debug for SupervisorReport<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorReport")
            .field("children", &self.children)
            .finish()
    }
}

/// One child in a [`SupervisorReport`].
///
/// # Examples
///
/// See [`Supervisor`].
pub struct ChildReport<E> {
    pub(crate) name: Arc<str>,
    pub(crate) starts: u32,
    pub(crate) last_exit: Option<Outcome<(), E>>,
}

impl<E> ChildReport<E> {
    /// The name it was added with.
    ///
    /// # Examples
    ///
    /// See [`Supervisor`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many times it was started: how many of its runs called its
    /// factory. A run the supervisor stopped before its first poll (its
    /// grace over before any worker got to it) never ran the child's code
    /// and is not counted, though a restart it was (so this can be less
    /// than 1 + the restarts).
    ///
    /// # Examples
    ///
    /// See [`Supervisor`].
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// How its last run ended (`None`: no run of it has ended). A panic's
    /// payload is here as [`Outcome::Panicked`]; a run stopped by the
    /// supervisor ended as it returned, or `Cancelled` if it had to be
    /// dropped, before its first poll too (then it is not in
    /// [`starts`](Self::starts)).
    ///
    /// # Examples
    ///
    /// See [`Supervisor`].
    pub fn last_exit(&self) -> Option<&Outcome<(), E>> {
        self.last_exit.as_ref()
    }
}

impl<E: fmt::Debug> fmt::Debug for ChildReport<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildReport")
            .field("name", &self.name)
            .field("starts", &self.starts)
            .field("last_exit", &self.last_exit)
            .finish()
    }
}

/// Why a supervisor ended abnormally.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use taskgroup::{Outcome, Supervisor, SupervisorError};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut sup = Supervisor::<String>::builder()
///     .name("ingest")
///     .intensity(2, Duration::from_secs(5))
///     .build();
/// sup.child("reader").spawn(|_ctx, run| async move { Err(format!("bad input #{}", run.attempt())) });
/// let err = sup.wait().await.unwrap_err();
/// let SupervisorError::IntensityExceeded { child, restarts, within, last } = &err;
/// assert_eq!((child.as_str(), *restarts, *within), ("reader", 3, Duration::from_secs(5)));
/// assert!(matches!(last, Outcome::Err(e) if e == "bad input #2"));
/// assert_eq!(
///     err.to_string(),
///     "child \"reader\" needed 3 restarts within 5s, more than its intensity allows; last end: error: bad input #2"
/// );
/// # }
/// ```
pub enum SupervisorError<E> {
    /// More than the intensity's `max` restarts within its period: every
    /// child was stopped.
    IntensityExceeded {
        /// The child whose end needed the refused restart.
        child: String,
        /// `max + 1`: the restarts within `within`, the refused one
        /// counted.
        restarts: u32,
        /// The intensity's period.
        within: Duration,
        /// How that child's last run ended.
        last: Outcome<(), E>,
    },
}

impl<E: fmt::Display> fmt::Display for SupervisorError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SupervisorError::IntensityExceeded {
                child,
                restarts,
                within,
                last,
            } => {
                write!(
                    f,
                    "child {child:?} needed {restarts} restarts within {within:?}, more than its \
                     intensity allows; last end: {}",
                    driver::describe(last)
                )
            }
        }
    }
}

impl<E: fmt::Display> fmt::Debug for SupervisorError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<E: fmt::Display> std::error::Error for SupervisorError<E> {}
