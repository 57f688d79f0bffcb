//! The supervisor's driver: one task of its group that hears every run's
//! end and decides (restart, round, stop), and the state it shares with
//! the owner (module invariants 1–3).

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use super::backoff::{Backoff, Rng};
use super::{ChildReport, Factory, Restart, Run, Strategy, SupervisorError, SupervisorReport};
use crate::group::panic_message;
use crate::{Context, ContextDoneOwned, Decision, Joiner, Outcome, Spawner, TaskId, Unread};

/// What the driver hears: a run ended (from the group's joiner), a child
/// was added, or the owner can add no more (module invariant 2).
pub(crate) enum Msg<E> {
    Ended(TaskId, Outcome<(), E>),
    Added,
    Sealed,
}

/// The group's joiner: hands every run's end to the driver and keeps
/// nothing. The driver's own panic (a bug) is kept for `wait`.
pub(crate) struct SupervisorJoiner<E> {
    pub(crate) tx: mpsc::UnboundedSender<Msg<E>>,
    pub(crate) driver_panic: Arc<Mutex<Option<Box<dyn Any + Send>>>>,
}

/// The driver is the group's first task.
const DRIVER: TaskId = TaskId(0);

impl<E: Send + 'static> Joiner<(), E> for SupervisorJoiner<E> {
    type Output = ();

    fn on_complete(&mut self, _: TaskId, _: &Outcome<(), E>, _: &Context) -> Decision {
        Decision::Continue
    }

    fn keep(&mut self, id: TaskId, outcome: Outcome<(), E>, _: bool) -> Option<Outcome<(), E>> {
        if id == DRIVER {
            if let Outcome::Panicked(payload) = outcome {
                *self
                    .driver_panic
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(payload);
            }
        } else {
            // The driver outlives every run; if it is gone (dropped with
            // the supervisor), so is everything.
            let _ = self.tx.send(Msg::Ended(id, outcome));
        }
        None
    }

    fn finish(self, _: Unread<(), E>, _: &Context) {}
}

/// Where a child is.
pub(crate) enum Phase {
    /// A run is going on.
    Running {
        task: TaskId,
        stop: crate::CancelHandle,
        since: Instant,
    },
    /// Waiting out its backoff before the next start.
    Waiting { until: Instant },
    /// Not running and not to be started again (or not started yet).
    Ended,
}

pub(crate) struct Child<E> {
    pub(crate) name: Arc<str>,
    pub(crate) restart: Restart,
    pub(crate) backoff: Backoff,
    pub(crate) shutdown: Duration,
    pub(crate) significant: bool,
    pub(crate) factory: Factory<E>,
    /// Its runs that started: counted by each run as it calls the factory,
    /// at its first poll. A run stopped before that never ran the child's
    /// code and is not a start. A run's count comes before its end, which
    /// the driver hears before it starts the next run.
    pub(crate) starts: Arc<AtomicU32>,
    /// Restarts in a row without a healthy run, for the backoff.
    pub(crate) consecutive: u32,
    pub(crate) last_exit: Option<Outcome<(), E>>,
    pub(crate) phase: Phase,
}

pub(crate) struct State<E> {
    pub(crate) children: Vec<Child<E>>,
    /// The running runs: task → child (module invariant 1).
    pub(crate) running: HashMap<TaskId, usize>,
    pub(crate) stopping: bool,
    /// The owner is in `wait`: no child can be added any more.
    pub(crate) sealed: bool,
    pub(crate) result: Option<Result<SupervisorReport<E>, SupervisorError<E>>>,
}

pub(crate) struct SupervisorShared<E> {
    pub(crate) state: Mutex<State<E>>,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) strategy: Strategy,
    pub(crate) intensity: (u32, Duration),
    /// The supervisor's values, not its cancellation (module invariant 4).
    pub(crate) values: Context,
    pub(crate) spawner: Spawner<(), E, SupervisorJoiner<E>>,
}

/// The cause of a child's context when the supervisor stops it.
#[derive(Debug)]
struct Stopped {
    supervisor: Option<Arc<str>>,
    child: Arc<str>,
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.supervisor {
            Some(name) => write!(f, "child {:?} stopped by supervisor {name:?}", self.child),
            None => write!(f, "child {:?} stopped by its supervisor", self.child),
        }
    }
}

impl std::error::Error for Stopped {}

/// How a run ended, in a line.
pub(crate) fn describe<E: fmt::Display>(outcome: &Outcome<(), E>) -> String {
    match outcome {
        Outcome::Ok(()) => "ok".to_string(),
        Outcome::Err(e) => {
            // The group's bookkeeping survives any user code: a `Display`
            // that panics gives a placeholder.
            let shown = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.to_string()));
            format!(
                "error: {}",
                shown.unwrap_or_else(|_| "<the error's Display panicked>".to_owned())
            )
        }
        Outcome::Cancelled => "cancelled".to_string(),
        Outcome::Panicked(payload) => format!("panic: {}", panic_message(&**payload)),
    }
}

/// What an ending asks of the driver once the lock is released.
enum Then<E> {
    Nothing,
    /// Stop these children (reverse order), then start them again after
    /// `wait` (a `OneForAll` or `RestForOne` round).
    Round {
        members: Vec<usize>,
        wait: Duration,
    },
    /// Stop everything and end with this result.
    End(Result<(), SupervisorError<E>>),
}

impl<E> SupervisorShared<E> {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State<E>> {
        // No user code runs under this lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<E> SupervisorShared<E>
where
    E: fmt::Display + Send + 'static,
{
    /// Starts a run of child `index` (module invariant 1): its factory is
    /// called inside the task, at its first poll.
    pub(crate) fn start(&self, state: &mut State<E>, index: usize) {
        let child = &mut state.children[index];
        let (ctx, stop) = self.values.with_cancel();
        let started = child.starts.load(Relaxed);
        let run = Run { attempt: started };
        let task_name: Arc<str> = match &child.last_exit {
            None => child.name.clone(),
            Some(last) => format!(
                "{} (start {}, last end: {})",
                child.name,
                started + 1,
                describe(last)
            )
            .into(),
        };
        let factory = child.factory.clone();
        let starts = child.starts.clone();
        let spawned = self.spawner.spawn_named(task_name, move |_ctx| async move {
            starts.fetch_add(1, Relaxed);
            factory(ctx, run).await
        });
        match spawned {
            Ok(task) => {
                child.phase = Phase::Running {
                    task,
                    stop,
                    since: Instant::now(),
                };
                state.running.insert(task, index);
            }
            // The group has ended (the supervisor is being dropped).
            Err(_) => child.phase = Phase::Ended,
        }
    }

    /// The driver's loop: until the supervisor ends, hears run ends,
    /// starts what waited out its backoff, and stops everything when the
    /// supervisor's context is cancelled.
    pub(crate) async fn drive(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<Msg<E>>,
        done: ContextDoneOwned,
    ) {
        let mut done = std::pin::pin!(done);
        let mut rng = Rng::new();
        let mut restarts: VecDeque<Instant> = VecDeque::new();
        let mut buffered: VecDeque<Msg<E>> = VecDeque::new();
        let mut timer: Pin<Box<Sleep>> = Box::pin(tokio::time::sleep(Duration::ZERO));
        loop {
            let due = {
                let mut state = self.lock();
                if state.sealed && nothing_left(&state) {
                    let report = report(&mut state);
                    state.result = Some(Ok(report));
                    return;
                }
                next_due(&state)
            };
            if let Some(at) = due {
                timer.as_mut().reset(at);
            }
            enum Event<E> {
                Msg(Msg<E>),
                Cancelled,
                Due,
            }
            let event = poll_fn(|cx| {
                if let Some(msg) = buffered.pop_front() {
                    return Poll::Ready(Event::Msg(msg));
                }
                if let Poll::Ready(Some(msg)) = rx.poll_recv(cx) {
                    return Poll::Ready(Event::Msg(msg));
                }
                if done.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Cancelled);
                }
                if due.is_some() && timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Due);
                }
                Poll::Pending
            })
            .await;
            let then = match event {
                Event::Msg(Msg::Ended(task, outcome)) => {
                    self.ended(task, outcome, &mut restarts, &mut rng)
                }
                Event::Msg(Msg::Added | Msg::Sealed) => Then::Nothing,
                Event::Cancelled => Then::End(Ok(())),
                Event::Due => {
                    self.start_due();
                    Then::Nothing
                }
            };
            match then {
                Then::Nothing => {}
                Then::Round { members, wait } => {
                    self.round(&members, wait, &mut rx, &mut buffered).await;
                }
                Then::End(result) => {
                    self.stop_all(&mut rx, &mut buffered).await;
                    let mut state = self.lock();
                    state.result = Some(result.map(|()| report(&mut state)));
                    return;
                }
            }
        }
    }

    /// A run ended: records it, and says what follows (restart, round,
    /// end).
    fn ended(
        &self,
        task: TaskId,
        outcome: Outcome<(), E>,
        restarts: &mut VecDeque<Instant>,
        rng: &mut Rng,
    ) -> Then<E> {
        let mut state = self.lock();
        let Some(index) = state.running.remove(&task) else {
            return Then::Nothing;
        };
        let stopping = state.stopping;
        let child = &mut state.children[index];
        let since = match std::mem::replace(&mut child.phase, Phase::Ended) {
            Phase::Running { since, .. } => since,
            _ => Instant::now(),
        };
        if stopping {
            child.last_exit = Some(outcome);
            return Then::Nothing;
        }
        if child.significant && outcome.is_ok() {
            child.last_exit = Some(outcome);
            return Then::End(Ok(()));
        }
        let restart = match child.restart {
            Restart::Permanent => true,
            Restart::Transient => matches!(outcome, Outcome::Err(_) | Outcome::Panicked(_)),
            Restart::Temporary => false,
        };
        if !restart {
            child.last_exit = Some(outcome);
            return Then::Nothing;
        }
        // Intensity: this restart and those within the period before it.
        let now = Instant::now();
        let (max, period) = self.intensity;
        while restarts.front().is_some_and(|&at| at + period <= now) {
            restarts.pop_front();
        }
        if restarts.len() >= max as usize {
            return Then::End(Err(SupervisorError::IntensityExceeded {
                child: child.name.to_string(),
                restarts: max.saturating_add(1),
                within: period,
                last: outcome,
            }));
        }
        restarts.push_back(now);
        let healthy = now.saturating_duration_since(since) >= child.backoff.healthy_after();
        child.consecutive = if healthy { 1 } else { child.consecutive + 1 };
        let wait = child.backoff.wait(child.consecutive, rng);
        #[cfg(feature = "tracing")]
        tracing::info!(
            supervisor = self.name.as_deref(),
            child = &*child.name,
            attempt = child.starts.load(Relaxed),
            cause = %describe(&outcome),
            wait = ?wait,
            "restarting child"
        );
        child.last_exit = Some(outcome);
        let members: Vec<usize> = match self.strategy {
            Strategy::OneForOne => {
                child.phase = Phase::Waiting { until: now + wait };
                return Then::Nothing;
            }
            Strategy::OneForAll => (0..state.children.len()).collect(),
            Strategy::RestForOne => (index..state.children.len()).collect(),
        };
        Then::Round { members, wait }
    }

    /// A `OneForAll` or `RestForOne` round: stops the running members in
    /// reverse order, then has every member that is to run again (not a
    /// `Temporary` one the round stopped, nor one that had ended for good)
    /// wait `wait` and start again, in order. One restart for intensity.
    async fn round(
        &self,
        members: &[usize],
        wait: Duration,
        rx: &mut mpsc::UnboundedReceiver<Msg<E>>,
        buffered: &mut VecDeque<Msg<E>>,
    ) {
        // Which members run again: those running or waiting now, and the
        // one that failed (it is `Ended`, with its `last_exit` just set).
        let again: Vec<usize> = {
            let state = self.lock();
            members
                .iter()
                .copied()
                .filter(|&i| {
                    let child = &state.children[i];
                    match child.phase {
                        Phase::Running { .. } | Phase::Waiting { .. } => {
                            child.restart != Restart::Temporary
                        }
                        // The member whose end started the round.
                        Phase::Ended => child.last_exit.is_some() && Self::wants_restart(child),
                    }
                })
                .collect()
        };
        for &i in members.iter().rev() {
            self.stop_one(i, rx, buffered).await;
        }
        let mut state = self.lock();
        if state.stopping {
            return;
        }
        let until = Instant::now() + wait;
        for &i in members {
            let child = &mut state.children[i];
            child.phase = if again.contains(&i) {
                Phase::Waiting { until }
            } else {
                Phase::Ended
            };
        }
    }

    /// Whether the child's last end asks for a restart by its type.
    fn wants_restart(child: &Child<E>) -> bool {
        matches!(
            (child.restart, &child.last_exit),
            (Restart::Permanent, Some(_))
                | (
                    Restart::Transient,
                    Some(Outcome::Err(_) | Outcome::Panicked(_))
                )
        )
    }

    /// Starts, in order, every child whose backoff is over.
    fn start_due(&self) {
        let mut state = self.lock();
        if state.stopping {
            return;
        }
        let now = Instant::now();
        for index in 0..state.children.len() {
            if matches!(state.children[index].phase, Phase::Waiting { until } if until <= now) {
                self.start(&mut state, index);
            }
        }
    }

    /// Stops every child, last added first (module invariant 3).
    async fn stop_all(
        &self,
        rx: &mut mpsc::UnboundedReceiver<Msg<E>>,
        buffered: &mut VecDeque<Msg<E>>,
    ) {
        let count = {
            let mut state = self.lock();
            state.stopping = true;
            for child in &mut state.children {
                if matches!(child.phase, Phase::Waiting { .. }) {
                    child.phase = Phase::Ended;
                }
            }
            state.children.len()
        };
        for index in (0..count).rev() {
            self.stop_one(index, rx, buffered).await;
        }
    }

    /// Stops one child's run, if it has one: cancels its context, gives it
    /// its grace, then has the group drop it at its next await (shields
    /// hold), and waits for its end. Other messages meanwhile are kept for
    /// later, in order.
    async fn stop_one(
        &self,
        index: usize,
        rx: &mut mpsc::UnboundedReceiver<Msg<E>>,
        buffered: &mut VecDeque<Msg<E>>,
    ) {
        let (task, grace) = {
            let mut state = self.lock();
            let child = &mut state.children[index];
            let Phase::Running { task, stop, .. } = &child.phase else {
                if matches!(child.phase, Phase::Waiting { .. }) {
                    child.phase = Phase::Ended;
                }
                return;
            };
            stop.cancel_with(Stopped {
                supervisor: self.name.clone(),
                child: child.name.clone(),
            });
            (*task, child.shutdown)
        };
        // A message for this run may be among those kept already.
        if let Some(at) = buffered
            .iter()
            .position(|msg| matches!(msg, Msg::Ended(ended, _) if *ended == task))
        {
            let Some(Msg::Ended(_, outcome)) = buffered.remove(at) else {
                unreachable!("found at `at`");
            };
            return self.record_stopped(task, outcome);
        }
        let ended = tokio::time::timeout(grace, Self::hear_end(task, rx, buffered)).await;
        let outcome = match ended {
            Ok(outcome) => outcome,
            Err(_) => {
                // Its grace is over: dropped at its next await.
                self.spawner.cancel_task(task);
                Self::hear_end(task, rx, buffered).await
            }
        };
        self.record_stopped(task, outcome);
    }

    /// Waits for `task`'s end, keeping other messages for later.
    async fn hear_end(
        task: TaskId,
        rx: &mut mpsc::UnboundedReceiver<Msg<E>>,
        buffered: &mut VecDeque<Msg<E>>,
    ) -> Outcome<(), E> {
        loop {
            match rx.recv().await {
                Some(Msg::Ended(ended, outcome)) if ended == task => return outcome,
                Some(msg) => buffered.push_back(msg),
                // Only when the group is gone, with this task.
                None => return Outcome::Cancelled,
            }
        }
    }

    fn record_stopped(&self, task: TaskId, outcome: Outcome<(), E>) {
        let mut state = self.lock();
        if let Some(index) = state.running.remove(&task) {
            let child = &mut state.children[index];
            child.phase = Phase::Ended;
            child.last_exit = Some(outcome);
        }
    }
}

/// No child runs or waits for a restart.
fn nothing_left<E>(state: &State<E>) -> bool {
    state
        .children
        .iter()
        .all(|child| matches!(child.phase, Phase::Ended))
}

/// The earliest end of a backoff, if a child waits.
fn next_due<E>(state: &State<E>) -> Option<Instant> {
    state
        .children
        .iter()
        .filter_map(|child| match child.phase {
            Phase::Waiting { until } => Some(until),
            _ => None,
        })
        .min()
}

fn report<E>(state: &mut State<E>) -> SupervisorReport<E> {
    SupervisorReport {
        children: state
            .children
            .iter_mut()
            .map(|child| ChildReport {
                name: child.name.clone(),
                starts: child.starts.load(Relaxed),
                last_exit: child.last_exit.take(),
            })
            .collect(),
    }
}
