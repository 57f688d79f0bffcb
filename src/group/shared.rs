//! The bookkeeping a task group shares with its tasks, the same for every
//! join policy: admitting a task (start it, queue it, or record it as never
//! started), delivering each ending to the group's [`Joiner`], recording
//! it, applying the joiner's decision, and handing the freed slot on.
//!
//! # Invariants
//!
//! 1. Every task spawned ends in exactly one [`Ended`], passed to
//!    [`Shared::complete`] once: by its [`Completion`] (run to the end, or
//!    dropped unfinished), by [`Shared::record_unstarted`] for a task never
//!    started, or by [`Shared::discard`] for queued tasks, once their
//!    closures are dropped. `complete` hands it to the joiner, then pushes
//!    its outcome to `done`.
//! 2. `running` counts started task bodies not yet recorded; `queue` holds
//!    closures waiting for a slot and is non-empty only while `running`
//!    fills the limit or a starter (below) is about to take from it;
//!    `discarding` counts closures taken out to be dropped unstarted. The
//!    group is joined when all three are zero/empty, so `wait` returns
//!    only after every task's user code is dropped and every ending was
//!    delivered to the joiner.
//! 3. Nothing is queued or started once the group context is cancelled, or
//!    while a joiner's decision is cancelling it: `admit` checks under the
//!    state lock, the hook empties the queue under it after the context's
//!    state is set, a starter checks `cancelling` and the context under it,
//!    and a queued closure re-checks just before it is called (a blocking
//!    one on its pool thread, since the pool may start it long after).
//! 4. Every started task is stopped on cancel. An async task runs in the
//!    group's [`Runner`], which the hook cancels: it drops every task's
//!    future, whether queued, running or parked. A started blocking task's
//!    abort handle is stored in `tasks` (matched by task id, since keys are
//!    reused), or, if the group was cancelled first, aborted by the code
//!    that stores it: so the hook or `track` aborts it (which stops it only
//!    before its closure starts; after that it must poll its context).
//! 5. The joiner is called one ending at a time, under the joiner lock, and
//!    the ending is pushed to `done` before that lock is released: `done`
//!    is in the order of the calls. An ending that arrives on the thread
//!    already inside the joiner (user code there dropped or cancelled
//!    something) is queued in `deferred` and delivered by that thread right
//!    after, never by taking the lock again. The thread inside is the one
//!    whose mark is in `delivering`, set and cleared by [`Delivering`] on
//!    every return and unwind: a mark left behind would send that
//!    thread's later endings to `deferred`, where nobody takes them. A
//!    panic of user code the delivery runs (a cause nobody needs, dropped)
//!    is kept (invariant 9), and the queued endings are still delivered.
//! 6. The first [`Decision::Cancel`] while the group is live makes its task
//!    `cancelled_by` and sets `cancelling` before its outcome is in `done`;
//!    `cancelling` hides `done` from `next` until the cancel has returned,
//!    so outcomes the cancel causes always come after it. `running` keeps
//!    counting that task until then: its slot cannot go to a queued
//!    closure, and `wait` sees `cancelled_by` settled.
//! 7. At most one thread starts queued closures at a time (`starting`):
//!    calling one is user code that may panic, and its failure must cancel
//!    the group before a later closure starts. A slot freed meanwhile is
//!    taken by that starter, which looks again once its closure returned.
//! 8. The cancel hook stops what is queued and aborts blocking tasks at
//!    once; the async tasks are dropped by the runner's drop step (runner
//!    invariant 9): at once without a grace, else by a timer the hook
//!    starts, unless a shutdown or the group's drop has taken the step
//!    over (`driven`), which then calls [`Shared::drop_tasks`] itself. An
//!    async task dropped unfinished is recorded in `stragglers`, with who
//!    it was; only a cancel or a runtime shutdown drops one, and each task
//!    once, so the list is bounded by the tasks running at the cancel.
//!    Only `shutdown` reads it: once `wait` or `wait_outcomes` joins the
//!    group, or the group is gone, it is emptied and nothing more is kept
//!    (`unreported`).
//! 9. A panic of the group's own bookkeeping (the joiner's `on_complete`,
//!    user code a decision's cancel ran, or the destructor of a decision's
//!    cause nobody needs) is kept in `panic` and re-raised by `wait`,
//!    `wait_outcomes` and `shutdown` after the join: it may happen on a
//!    shard's thread, where nobody would see it. A joiner's panic also
//!    cancels the group (the joiner is gone); the others do not by
//!    themselves (the cause's is no task's outcome).
//! 10. An ending wakes a waiter of `progress` only if one may care: once
//!     `next` or the group's `Stream` has waited (`watched`, never unset),
//!     every ending does; before, only an ending after which the group is
//!     settled (what `wait` and a shutdown wait for; a joined group is
//!     settled). Whether it is settled is read under the state lock where
//!     the ending is recorded, or where the cancelling task's slot is
//!     released; the cancel hook always wakes. So `wait` sleeps until the
//!     end instead of being woken, and taking the state lock, for every
//!     task (a million wake-ups of the waiting thread for a million tasks).
//! 11. Every started task has its own context, a child of the group's,
//!     made and entered in `own` under the state lock where its slot is
//!     taken (`admit`, `claim_start`), and taken out where its ending is
//!     recorded. [`Shared::cancel_task`] finds a task under the same lock:
//!     a queued one is taken out of `queue` and recorded as never started;
//!     a started one is found through `by_id`, an index of `own` by task
//!     id that `cancel_task`'s first call makes and `own_context` and
//!     `vacate` keep from then on (so a group that never calls it pays
//!     nothing per task, and a server that does finds a task in constant
//!     time, not by a scan under the lock);
//!     a started one is marked `stopped` there, then its context is
//!     cancelled (after the lock), then its cell, if the entry has it, is
//!     stopped by the runner, at once or at the end of the group's grace.
//!     An async task's cell is entered after the runner has it, under the
//!     lock, which also reads `stopped`: so either `cancel_task` finds the
//!     cell, or the starter finds the mark and stops the cell itself. An
//!     ending's `stopped` is read by `decide` (from the entry, once a
//!     `cancel_task` has run: `any_stopped`) and used for the whole
//!     ending: a task stopped and ending without a value (an `Err`, or
//!     `Cancelled`) while the group is live never cancels the group, and
//!     is listed in `stopped`; once the group is cancelled, its end is
//!     that cancel's consequence, as any task's is.
//! 12. Once `ended` is set (a `wait`, `wait_outcomes` or `shutdown` found
//!     the group joined or settled, under the lock where it took the
//!     outcomes; or the group was dropped), `admit` gives every closure
//!     back: nothing is accepted that nobody would join.
//!
//! # Lock order
//!
//! The joiner lock may be held while taking the state lock, never the
//! other way. The state lock is never held while cancelling the context
//! (whose hook takes it), spawning, aborting, or running or dropping user
//! code; the joiner lock only while running the joiner. A task's own
//! context is made under the state lock: that takes the group context's
//! node lock, which is never held while taking this one (the tree runs
//! hooks after releasing its locks); it is dropped after the state lock
//! (its after-cancel callbacks are user code).
//!
//! A joiner's own code that ends tasks of another group (by cancelling
//! that group's context, say) takes that group's joiner lock inside this
//! one's: two groups whose joiners do that to each other, on two threads
//! at once, can deadlock, as any two locks taken in both orders can. On
//! one thread the nesting is safe (invariant 5). The built-in joiners
//! never end another group's tasks.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, Location, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use slab::Slab;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::joiner::{Decision, Joiner, Unread};
use super::lifecycle::{EndOnDrop, Meta, RunsTask, Spawned, Tag, TaskInfo, UNPOLLED, since};
use super::outcome::{Outcome, TaskId};
use super::panics::{JoinerPanicked, drop_all_catching, drop_catching, panic_message};
use super::runner::{Runner, TaskCell, thread_mark};
use super::task::{BlockingCompletion, Completion, TaskFuture};
use crate::context::{CancelHook, cancellation};
use crate::loom::{AtomicBool, AtomicUsize, Mutex, MutexGuard};
use crate::{Cause, Context, ContextError, TaskFailed};

pub(super) type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// A closure waiting for a slot.
pub(super) enum Work<T, E> {
    Async(Box<dyn FnOnce(Context) -> BoxFuture<T, E> + Send>),
    Blocking(Box<dyn FnOnce(Context) -> Result<T, E> + Send>),
}

/// A queued closure whose slot was just reserved: a blocking one with its
/// key in `tasks`.
enum Start<T, E> {
    Async(Admitted, Box<dyn FnOnce(Context) -> BoxFuture<T, E> + Send>),
    Blocking(Admitted, Box<dyn FnOnce(Context) -> Result<T, E> + Send>),
}

/// A task's body as `spawn`, `try_spawn` and `spawn_blocking` hand it to
/// [`Shared::admit`]: started at once, or boxed into the queue.
pub(super) trait Closure<T, E>: Send + 'static {
    /// Takes an entry in `tasks` when started.
    const BLOCKING: bool;

    fn into_work(self) -> Work<T, E>;

    fn start<J: Joiner<T, E>>(self, shared: &Arc<Shared<T, E, J>>, start: Admitted)
    where
        T: Send + 'static,
        E: Send + 'static;
}

/// What a task admitted to a slot starts with: who it is, its entry in
/// `own` and the context made for it (invariant 11), and a blocking task's
/// entry in `tasks`.
pub(super) struct Admitted {
    pub(super) id: TaskId,
    pub(super) spawned: Spawned,
    pub(super) own: usize,
    pub(super) ctx: Context,
    pub(super) key: Option<usize>,
}

/// An async task's closure.
pub(super) struct AsyncClosure<F, Fut>(pub(super) F, PhantomData<fn() -> Fut>);

impl<F, Fut> AsyncClosure<F, Fut> {
    pub(super) fn new(f: F) -> Self {
        AsyncClosure(f, PhantomData)
    }
}

impl<T, E, F, Fut> Closure<T, E> for AsyncClosure<F, Fut>
where
    T: 'static,
    E: 'static,
    F: FnOnce(Context) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
{
    const BLOCKING: bool = false;

    fn into_work(self) -> Work<T, E> {
        let f = self.0;
        Work::Async(Box::new(move |ctx| Box::pin(f(ctx))))
    }

    fn start<J: Joiner<T, E>>(self, shared: &Arc<Shared<T, E, J>>, start: Admitted)
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        shared.start_async(start, self.0);
    }
}

/// A blocking task's closure.
pub(super) struct BlockingClosure<F>(pub(super) F);

impl<T, E, F> Closure<T, E> for BlockingClosure<F>
where
    F: FnOnce(Context) -> Result<T, E> + Send + 'static,
{
    const BLOCKING: bool = true;

    fn into_work(self) -> Work<T, E> {
        Work::Blocking(Box::new(self.0))
    }

    fn start<J: Joiner<T, E>>(self, shared: &Arc<Shared<T, E, J>>, start: Admitted)
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        shared.start_blocking(start, self.0);
    }
}

/// How a task ended, on its way to the joiner (invariant 1).
pub(super) struct Ended<T, E> {
    pub(super) id: TaskId,
    pub(super) outcome: Outcome<T, E>,
    pub(super) held: Held,
    /// Who it was: its name for the joiner's cause, and all of it for the
    /// shutdown report if the group dropped it (invariant 8). `None` for a
    /// blocking task: its entry in `tasks` says it.
    pub(super) tag: Option<Tag>,
    /// [`Shared::cancel_task`] took it out of the queue (invariant 11).
    pub(super) stopped: bool,
}

/// What an ended task gives back.
#[derive(Clone, Copy)]
pub(super) enum Held {
    /// A slot: it was started. `own` is its entry in `own`, `key` its
    /// entry in `tasks` (blocking); `ran` is `false` when it was dropped
    /// before finishing by the group's cancel or its runtime's end (not by
    /// `cancel_task`, which `record` tells apart).
    Slot {
        own: usize,
        key: Option<usize>,
        ran: bool,
    },
    /// Nothing: it never started (counted in `discarding`).
    Unstarted,
}

/// The most entries an emptied queue keeps: a group whose tasks come and
/// go a few at a time reuses them; one that once held a burst frees it.
const STATE_KEPT: usize = 64;

/// A started task's own context, for [`Shared::cancel_task`]
/// (invariant 11).
pub(super) struct Own {
    id: TaskId,
    ctx: Context,
    /// An async task's cell, once the runner has it.
    cell: Option<Weak<TaskCell>>,
    /// `cancel_task` cancelled it.
    stopped: bool,
}

/// What the state lock guards, by concern.
pub(super) struct State<T, E> {
    /// Who holds a slot, who waits for one, and what each started task
    /// keeps for `cancel_task` and a shutdown.
    slots: Slots<T, E>,
    /// The endings not yet handed out, and what the joiner's decisions
    /// made of them.
    results: Results<T, E>,
    /// What only a report reads: the group's own panic, the stragglers.
    diagnostics: Diagnostics,
    /// How the group winds down.
    teardown: Teardown,
}

/// The slots (invariants 2, 4, 7, 11).
struct Slots<T, E> {
    /// The id of the next task spawned: its spawn index.
    next_id: u64,
    running: usize,
    queue: VecDeque<(TaskId, Spawned, Work<T, E>)>,
    /// Closures being dropped unstarted (invariant 2).
    discarding: usize,
    /// A thread is starting queued closures (invariant 7).
    starting: bool,
    /// Every started task's own context (invariant 11).
    own: Slab<Own>,
    /// Own contexts of ended tasks that nothing but the task ever saw,
    /// for the next tasks: dropped once no task runs.
    spare: Vec<Context>,
    /// Abort handles of started blocking tasks, `None` until spawned
    /// (invariant 4), and who they are, for a shutdown's report.
    tasks: Slab<(TaskId, Option<AbortHandle>, Tag)>,
    /// By key in `own`: the timer that ends a task `cancel_task` stopped,
    /// once the group's grace has run out. Kept apart from `own`, where
    /// every started task has an entry and few would use the field;
    /// `None` in a group that never armed one.
    stop_timers: Option<HashMap<usize, AbortHandle>>,
    /// `own`'s keys by task id, for `cancel_task`: made by its first call
    /// (one scan of `own`), kept up to date from then on. `None` in a
    /// group that never used it, which so pays nothing for it per task.
    by_id: Option<HashMap<TaskId, usize>>,
}

/// The endings (invariants 5, 6, 10, 11).
struct Results<T, E> {
    /// Finished, not yet handed out, in completion order.
    done: VecDeque<(TaskId, Outcome<T, E>)>,
    /// Where each task in `done` was spawned, in the same order, for a
    /// snapshot (`None`: a blocking task the shutdown stopped waiting for,
    /// in `done` as cancelled), in runs: a fan-out's tasks come from one
    /// spawn site, so this stays an entry or two however many finish.
    done_at: VecDeque<(Option<&'static Location<'static>>, usize)>,
    /// The names of the named tasks in `done`, in the same order.
    done_names: VecDeque<(TaskId, Arc<str>)>,
    /// Tasks in `done` that returned `Ok` only after the group was
    /// cancelled (they saw the cancel and wound down).
    late_ok: Vec<TaskId>,
    /// Tasks in `done` that `cancel_task` stopped and that ended without a
    /// value (invariant 11).
    stopped: Vec<TaskId>,
    /// The task whose joiner decision cancelled the group (invariant 6).
    cancelled_by: Option<TaskId>,
    /// A decision is cancelling the group: `done` is not handed out until
    /// it has (invariant 6).
    cancelling: bool,
    /// Endings that arrived inside the joiner, on its thread (invariant 5).
    deferred: VecDeque<Ended<T, E>>,
    /// `next` or the `Stream` has waited for an ending (invariant 10).
    watched: bool,
}

/// What a report reads (invariants 8, 9).
#[derive(Default)]
struct Diagnostics {
    /// The first panic of the group's own bookkeeping, for `wait`: the
    /// joiner's `on_complete`, or user code that a decision's cancel ran
    /// (invariant 9).
    panic: Option<Box<dyn Any + Send>>,
    /// Async tasks the group dropped unfinished (invariant 8).
    stragglers: Vec<(TaskId, Tag)>,
    /// No shutdown can report `stragglers` any more: `wait` or
    /// `wait_outcomes` is joining the group, or the group is gone. From
    /// then on none is kept (a million tasks dropped by the first error
    /// would otherwise keep a million entries until `wait` returns).
    unreported: bool,
}

/// The wind-down (invariants 8, 12).
#[derive(Default)]
struct Teardown {
    /// Nothing is accepted any more (invariant 12).
    ended: bool,
    /// A shutdown, the group's drop, or a `wait` that has joined every task
    /// decides when the tasks are dropped: the cancel hook starts no grace
    /// (invariant 8).
    driven: bool,
    /// The timer that ends the grace (invariant 8).
    grace_timer: Option<AbortHandle>,
}

impl<T, E> State<T, E> {
    fn new() -> Self {
        State {
            slots: Slots {
                next_id: 0,
                running: 0,
                queue: VecDeque::new(),
                discarding: 0,
                starting: false,
                own: Slab::new(),
                spare: Vec::new(),
                tasks: Slab::new(),
                stop_timers: None,
                by_id: None,
            },
            results: Results {
                done: VecDeque::new(),
                done_at: VecDeque::new(),
                done_names: VecDeque::new(),
                late_ok: Vec::new(),
                stopped: Vec::new(),
                cancelled_by: None,
                cancelling: false,
                deferred: VecDeque::new(),
                watched: false,
            },
            diagnostics: Diagnostics::default(),
            teardown: Teardown::default(),
        }
    }

    fn outstanding(&self) -> usize {
        self.slots.running + self.slots.queue.len() + self.slots.discarding
    }

    pub(super) fn is_joined(&self) -> bool {
        self.slots.running == 0 && self.slots.queue.is_empty() && self.slots.discarding == 0
    }

    /// Tasks spawned and not handed out: a task whose decision is
    /// cancelling the group is in `done` and still counted as running
    /// (invariant 6): counted once.
    pub(super) fn len(&self) -> usize {
        self.outstanding() + self.results.done.len() - usize::from(self.results.cancelling)
    }

    /// Whether a finished task waits to be handed out.
    pub(super) fn has_done(&self) -> bool {
        !self.results.done.is_empty()
    }

    /// Whether one started task holds the group's only running slot and
    /// nothing else can end on its own: if the caller is that task, waiting
    /// for the group would wait for itself.
    pub(super) fn only_one_running(&self) -> bool {
        self.slots.running == 1 && self.slots.discarding == 0
    }

    /// Whether every task has ended but the blocking ones still running:
    /// where a shutdown stops waiting.
    pub(super) fn is_settled(&self) -> bool {
        self.slots.running == self.slots.tasks.len()
            && self.slots.queue.is_empty()
            && self.slots.discarding == 0
    }

    /// Takes every queued closure out to be dropped unstarted; they stay
    /// outstanding until [`Shared::discard`] records them.
    fn take_queue(&mut self) -> VecDeque<(TaskId, Spawned, Work<T, E>)> {
        let queued = std::mem::take(&mut self.slots.queue);
        self.slots.discarding += queued.len();
        queued
    }

    /// `next` or the `Stream` is about to wait for an ending: every ending
    /// wakes a waiter from now on (invariant 10).
    pub(super) fn watch(&mut self) {
        self.results.watched = true;
    }

    /// The next finished task to hand out, unless a decision is still
    /// cancelling the group.
    pub(super) fn pop_done(&mut self) -> Option<(TaskId, Outcome<T, E>)> {
        if self.results.cancelling {
            return None;
        }
        let (id, outcome) = self.results.done.pop_front()?;
        if let Some((_, run)) = self.results.done_at.front_mut() {
            *run -= 1;
            if *run == 0 {
                self.results.done_at.pop_front();
            }
        }
        if self
            .results
            .done_names
            .front()
            .is_some_and(|(named, _)| *named == id)
        {
            self.results.done_names.pop_front();
        }
        if !self.results.late_ok.is_empty() {
            self.results.late_ok.retain(|&late| late != id);
        }
        if !self.results.stopped.is_empty() {
            self.results.stopped.retain(|&stopped| stopped != id);
        }
        if self.results.done.is_empty() && self.results.done.capacity() > STATE_KEPT {
            // Drained after a burst: let the peak go.
            self.results.done = VecDeque::new();
            self.results.done_at = VecDeque::new();
            self.results.done_names = VecDeque::new();
            self.results.late_ok = Vec::new();
            self.results.stopped = Vec::new();
        }
        Some((id, outcome))
    }

    /// What a joined group leaves to its joiner. The group has ended
    /// (invariant 12).
    pub(super) fn take_unread(&mut self) -> Unread<T, E> {
        self.teardown.ended = true;
        self.results.done_at = VecDeque::new();
        self.results.done_names = VecDeque::new();
        Unread::new(
            std::mem::take(&mut self.results.done),
            self.results.cancelled_by,
            !self.results.late_ok.is_empty(),
            std::mem::take(&mut self.results.stopped),
        )
    }

    /// The group is gone: nothing is accepted any more (invariant 12), and
    /// no shutdown will report its stragglers.
    pub(super) fn end(&mut self) {
        self.teardown.ended = true;
        self.unreport();
    }

    /// `wait` or `wait_outcomes` joins the group, or it is gone: no
    /// shutdown will read its stragglers (only `shutdown` reports them).
    pub(super) fn unreport(&mut self) {
        if !self.diagnostics.unreported {
            self.diagnostics.unreported = true;
            self.diagnostics.stragglers = Vec::new();
        }
    }

    /// Whether nothing is accepted any more (invariant 12).
    pub(super) fn has_ended(&self) -> bool {
        self.teardown.ended
    }

    /// How many tasks were spawned (accepted) so far.
    pub(super) fn spawned(&self) -> u64 {
        self.slots.next_id
    }

    pub(super) fn take_panic(&mut self) -> Option<Box<dyn Any + Send>> {
        self.diagnostics.panic.take()
    }

    /// What a shutdown reports once the group is settled: the stragglers
    /// and the blocking tasks still running, each in spawn order, as of
    /// `now`. The ones still running count as cancelled in what `finish`
    /// is given.
    pub(super) fn take_report(
        &mut self,
        group: &Option<Arc<str>>,
        epoch: Instant,
        now: Instant,
    ) -> (Vec<TaskInfo>, Vec<TaskInfo>) {
        let mut stragglers: Vec<TaskInfo> = std::mem::take(&mut self.diagnostics.stragglers)
            .into_iter()
            .map(|(id, tag)| tag.info(id, group, epoch, now))
            .collect();
        stragglers.sort_by_key(TaskInfo::id);
        let mut still: Vec<TaskInfo> = self
            .slots
            .tasks
            .iter()
            .map(|(_, (id, _, tag))| tag.clone().info(*id, group, epoch, now))
            .collect();
        still.sort_by_key(TaskInfo::id);
        for task in &still {
            self.results.done.push_back((task.id(), Outcome::Cancelled));
            push_run(&mut self.results.done_at, None);
        }
        (stragglers, still)
    }
}

impl<T, E> Slots<T, E> {
    /// The key in `own` of the started task `id`, if it has not ended:
    /// through `by_id`, made here at the first call.
    fn own_key(&mut self, id: TaskId) -> Option<usize> {
        let own = &self.own;
        let by_id = self
            .by_id
            .get_or_insert_with(|| own.iter().map(|(key, entry)| (entry.id, key)).collect());
        by_id.get(&id).copied()
    }

    /// The grace timer of the ended task whose `own` key is `own`, if
    /// `cancel_task` stopped it (rare: out of the path of every task).
    #[cold]
    fn take_stop_timer(
        timers: &mut HashMap<usize, AbortHandle>,
        own: usize,
    ) -> Option<AbortHandle> {
        let timer = timers.remove(&own);
        if timers.is_empty() && timers.capacity() > STATE_KEPT {
            *timers = HashMap::new();
        }
        timer
    }

    /// What an ended task held, out of `own` and `tasks` (its tag filled
    /// in from a blocking task's entry): its own context goes to `spare`
    /// or, through `after`, is dropped without the lock (invariant 11).
    /// Returns `held`, counted as having run when `cancel_task` dropped it
    /// while the group is `live`: no straggler of a shutdown, and the
    /// queue goes on.
    fn vacate(
        &mut self,
        mut held: Held,
        tag: &mut Option<Tag>,
        live: bool,
        after: &mut After<T, E>,
    ) -> Held {
        let Held::Slot { own, key, ran } = &mut held else {
            return held;
        };
        let mut entry = self.own.remove(*own);
        let timer = match &mut self.stop_timers {
            None => None,
            Some(timers) => Self::take_stop_timer(timers, *own),
        };
        if entry.stopped && live {
            *ran = true;
        }
        if let Some(by_id) = &mut self.by_id {
            by_id.remove(&entry.id);
            if by_id.is_empty() && by_id.capacity() > STATE_KEPT {
                *by_id = HashMap::new();
            }
        }
        if self.own.is_empty() && self.own.capacity() > STATE_KEPT {
            self.own = Slab::new();
        }
        // Kept only for a task that may start while this one's slot is
        // still counted: others run, or one waits in the queue (a group
        // going idle lets its spares go at once).
        let next_may_start = self.running > 1 || !self.queue.is_empty();
        if next_may_start
            && timer.is_none()
            && self.spare.len() < STATE_KEPT
            && entry.ctx.is_spare()
        {
            // Invariant 11: nobody saw it but the task, which is gone.
            self.spare.push(entry.ctx);
        } else {
            after.let_go(entry, timer);
        }
        if let Some(key) = *key {
            if let Some((_, _, kept)) = self.tasks.try_remove(key) {
                tag.get_or_insert(kept);
            }
            if self.tasks.is_empty() && self.tasks.capacity() > STATE_KEPT {
                self.tasks = Slab::new();
            }
        }
        held
    }
}

impl<T, E> Results<T, E> {
    /// The first decision to cancel while the group is live: `id` is the
    /// task that cancels it, and `done` waits until the cancel has
    /// returned (invariant 6). `false` if one came first.
    fn cancel_by(&mut self, id: TaskId) -> bool {
        if self.cancelled_by.is_some() || self.cancelling {
            return false;
        }
        self.cancelled_by = Some(id);
        self.cancelling = true;
        true
    }

    /// Keeps an ending for `next` and the joiner's `finish`, with who it
    /// was for a snapshot.
    fn keep(
        &mut self,
        id: TaskId,
        outcome: Outcome<T, E>,
        tag: Option<Tag>,
        stopped: bool,
        live: bool,
    ) {
        if outcome.is_ok() && !live {
            self.late_ok.push(id);
        }
        if stopped {
            self.stopped.push(id);
        }
        self.done.push_back((id, outcome));
        push_run(&mut self.done_at, tag.as_ref().map(|tag| tag.who.at));
        if let Some(name) = tag.and_then(|tag| tag.who.name) {
            self.done_names.push_back((id, name));
        }
    }
}

impl Diagnostics {
    /// An async task the group dropped unfinished (invariant 8).
    fn straggler(&mut self, id: TaskId, tag: &Option<Tag>) {
        if self.unreported {
            return;
        }
        if let Some(tag) = tag {
            self.stragglers.push((id, tag.clone()));
        }
    }
}

/// What a snapshot reads of the state, under its lock (observe.rs).
impl<T, E> State<T, E> {
    /// The queued tasks, in spawn order.
    pub(super) fn queued(&self) -> impl Iterator<Item = (TaskId, &Spawned)> {
        self.slots
            .queue
            .iter()
            .map(|(id, spawned, _)| (*id, spawned))
    }

    /// The started blocking tasks still running.
    pub(super) fn blocking(&self) -> impl Iterator<Item = (TaskId, &Tag)> {
        self.slots.tasks.iter().map(|(_, (id, _, tag))| (*id, tag))
    }

    /// The finished tasks not yet handed out, in completion order: where
    /// each was spawned (`None`: a blocking task a shutdown stopped
    /// waiting for) and its name. `done_at` and `done_names` follow
    /// `done`'s order, so one walk pairs them.
    pub(super) fn finished(
        &self,
    ) -> impl Iterator<
        Item = (
            TaskId,
            Option<&'static Location<'static>>,
            Option<&Arc<str>>,
        ),
    > {
        let mut names = self.results.done_names.iter().peekable();
        let spawned_at = self
            .results
            .done_at
            .iter()
            .flat_map(|&(at, run)| std::iter::repeat_n(at, run));
        self.results
            .done
            .iter()
            .zip(spawned_at)
            .map(move |((id, _), at)| {
                let name = names.next_if(|(named, _)| named == id);
                (*id, at, name.map(|(_, name)| name))
            })
    }

    /// How many started async tasks hold a slot: a task whose decision is
    /// cancelling is in `done` and still counted as running (invariant 6).
    pub(super) fn started_async(&self) -> usize {
        self.slots.running - self.slots.tasks.len() - usize::from(self.results.cancelling)
    }
}

/// Appends `at` to the runs of spawn locations of `done`: once per task,
/// hence inlined.
#[inline]
fn push_run(
    runs: &mut VecDeque<(Option<&'static Location<'static>>, usize)>,
    at: Option<&'static Location<'static>>,
) {
    match runs.back_mut() {
        Some((last, run)) if same_place(*last, at) => *run += 1,
        _ => runs.push_back((at, 1)),
    }
}

/// The same location, by address: one spawn site's calls share it, and
/// comparing file names would cost more than the run saves.
fn same_place(
    a: Option<&'static Location<'static>>,
    b: Option<&'static Location<'static>>,
) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => std::ptr::eq(a, b),
        (a, b) => a.is_none() && b.is_none(),
    }
}

/// What an ending leaves to do once the joiner lock is released.
struct After<T, E> {
    /// This ending's decision cancels the group, with this cause.
    cancel: Option<Cause>,
    /// The slot of the task that cancels, released after the cancel.
    canceller: Option<Held>,
    /// Queued closures to drop unstarted.
    unstarted: VecDeque<(TaskId, Spawned, Work<T, E>)>,
    /// A queued closure this thread is to start (invariant 7).
    start: Option<Start<T, E>>,
    freed_slot: bool,
    /// Wake a waiter of `progress` (invariant 10).
    notify: bool,
    /// Ended tasks' own contexts, to drop without the lock (invariant
    /// 11), each with the grace timer `cancel_task` armed for it, if any,
    /// to abort: one for most endings, more when deferred ones were
    /// recorded in the same turn.
    let_go: Option<(Own, Option<AbortHandle>)>,
    let_go_more: Vec<(Own, Option<AbortHandle>)>,
    /// The spare contexts of a group gone idle.
    spare: Vec<Context>,
}

impl<T, E> After<T, E> {
    fn new() -> Self {
        After {
            cancel: None,
            canceller: None,
            unstarted: VecDeque::new(),
            start: None,
            freed_slot: false,
            notify: false,
            let_go: None,
            let_go_more: Vec::new(),
            spare: Vec::new(),
        }
    }

    fn let_go(&mut self, own: Own, timer: Option<AbortHandle>) {
        match self.let_go {
            None => self.let_go = Some((own, timer)),
            Some(_) => self.let_go_more.push((own, timer)),
        }
    }
}

pub(super) struct Shared<T, E, J> {
    pub(super) ctx: Context,
    pub(super) name: Option<Arc<str>>,
    pub(super) limit: Option<usize>,
    /// How long a cancel lets running async tasks end on their own
    /// before they are dropped (invariant 8).
    pub(super) grace: Duration,
    /// When the group was built: what a task's [`Tag::born`] counts from.
    pub(super) epoch: Instant,
    /// The group's span, `taskgroup.group`: the parent of its tasks'.
    #[cfg(feature = "tracing")]
    pub(super) span: tracing::Span,
    /// Runs the async tasks.
    runner: Arc<Runner>,
    state: Mutex<State<T, E>>,
    /// `None` once `wait` took it, or once it panicked.
    joiner: Mutex<Option<J>>,
    /// The [`thread_mark`] of the thread inside the joiner, or 0
    /// (invariant 5); set and cleared by [`Delivering`].
    delivering: AtomicUsize,
    /// `cancel_task` has marked a task `stopped` (invariant 11): until
    /// then, an ending need not look.
    any_stopped: AtomicBool,
    /// A [`Spawner`](super::Spawner) was made: tasks may come from
    /// elsewhere than the group's owner.
    pub(super) spawners: AtomicBool,
    /// Itself, for the cancel hook, which is handed `&self`.
    me: Weak<Self>,
    /// A task finished (or the group was cancelled): for `next` and `wait`.
    /// Only ever `notify_one`'d (the group's `Stream` relies on it).
    pub(super) progress: Notify,
    /// A slot freed up (or the group was cancelled): for `ready`.
    pub(super) slot_freed: Notify,
}

impl<T, E, J> Shared<T, E, J> {
    /// The runner, whose shards the group's loom models play.
    #[cfg(all(test, loom))]
    pub(super) fn runner(&self) -> &Arc<Runner> {
        &self.runner
    }

    /// What the group's bookkeeping holds, for a model that is stuck.
    #[cfg(all(test, loom))]
    pub(super) fn describe(&self) -> String {
        let state = self.lock();
        format!(
            "running {}, queued {}, done {}, cancelling {}, cancelled_by {:?}, deferred {}, discarding {}, starting {}, watched {}",
            state.slots.running,
            state.slots.queue.len(),
            state.results.done.len(),
            state.results.cancelling,
            state.results.cancelled_by,
            state.results.deferred.len(),
            state.slots.discarding,
            state.slots.starting,
            state.results.watched,
        )
    }

    /// The runner's live cells, for a snapshot (observe.rs).
    pub(super) fn cells(&self) -> Vec<Arc<TaskCell>> {
        self.runner.cells()
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State<T, E>> {
        // User code never runs under this lock, so poison carries no meaning.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the limit leaves room for one more task now.
    pub(super) fn has_room(&self, state: &State<T, E>) -> bool {
        self.limit.is_none_or(|limit| state.outstanding() < limit)
    }

    /// Whether the caller is one of this group's started tasks: polled by
    /// its runner, or a blocking task of it.
    pub(super) fn runs_caller(&self, state: &State<T, E>) -> bool {
        if self.runner.is_running_here() {
            return true;
        }
        let Some(me) = tokio::task::try_id() else {
            return false;
        };
        state
            .slots
            .tasks
            .iter()
            .any(|(_, (_, handle, _))| handle.as_ref().is_some_and(|h| h.id() == me))
    }

    /// Whether a spawner was ever made for the group.
    pub(super) fn has_spawners(&self) -> bool {
        self.spawners.load(Relaxed)
    }

    /// Takes the joiner out, for `finish`.
    pub(super) fn take_joiner(&self) -> Option<J> {
        self.joiner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl<T, E, J> Shared<T, E, J>
where
    T: Send + 'static,
    E: Send + 'static,
    J: Joiner<T, E>,
{
    pub(super) fn new(
        parent: &Context,
        name: Option<Arc<str>>,
        limit: Option<usize>,
        grace: Duration,
        joiner: J,
    ) -> Arc<Self> {
        let epoch = Instant::now();
        // Its parent is the span current here, where the group is built.
        #[cfg(feature = "tracing")]
        let span = tracing::info_span!("taskgroup.group", name = name.as_deref());
        #[cfg(not(loom))]
        let runner = Runner::new(epoch, name.clone());
        // In the group's loom models, model threads play the shards.
        #[cfg(loom)]
        let runner = Runner::for_models(epoch, name.clone());
        Arc::new_cyclic(|me: &Weak<Self>| {
            let hook: Weak<dyn CancelHook> = me.clone();
            Shared {
                ctx: parent.with_hook(hook),
                name,
                limit,
                grace,
                epoch,
                #[cfg(feature = "tracing")]
                span,
                runner,
                state: Mutex::new(State::new()),
                joiner: Mutex::new(Some(joiner)),
                delivering: AtomicUsize::new(0),
                any_stopped: AtomicBool::new(false),
                spawners: AtomicBool::new(false),
                me: me.clone(),
                progress: Notify::new(),
                slot_freed: Notify::new(),
            }
        })
    }

    /// Admits a task and gives it the next id: starts it if the limit has
    /// room, else queues it (or, with `queue == false`, gives it back); in
    /// a cancelled group it is recorded as never started (or given back,
    /// with `queue == false`). Once the group has ended it is always given
    /// back (invariant 12).
    ///
    /// # Panics
    ///
    /// As [`Shared::start_async`] and [`Shared::start_blocking`].
    #[track_caller]
    pub(super) fn admit<B: Closure<T, E>>(
        self: &Arc<Self>,
        spawned: Spawned,
        body: B,
        queue: bool,
    ) -> Result<TaskId, B> {
        // A blocking task's age counts from here; an async task's from its
        // first poll, where reading the clock costs less (see `batch_now`).
        let born = B::BLOCKING.then(|| since(self.epoch, Instant::now()));
        let mut state = self.lock();
        if state.teardown.ended {
            return Err(body);
        }
        let id = TaskId(state.slots.next_id);
        if self.ctx.is_cancelled() {
            if !queue {
                return Err(body);
            }
            state.slots.next_id += 1;
            self.record_unstarted(state, id, &spawned, body);
        } else if self.has_room(&state) {
            state.slots.next_id += 1;
            state.slots.running += 1;
            let key = born.map(|born| state.slots.tasks.insert((id, None, spawned.tag(born))));
            let (own, ctx) = self.own_context(&mut state, id);
            drop(state);
            body.start(
                self,
                Admitted {
                    id,
                    spawned,
                    own,
                    ctx,
                    key,
                },
            );
        } else if queue {
            state.slots.next_id += 1;
            state.slots.queue.push_back((id, spawned, body.into_work()));
        } else {
            return Err(body);
        }
        Ok(id)
    }

    /// Makes a task's own context and enters it in `own` (invariant 11).
    fn own_context(&self, state: &mut State<T, E>, id: TaskId) -> (usize, Context) {
        let ctx = state
            .slots
            .spare
            .pop()
            .unwrap_or_else(|| self.ctx.for_task());
        let own = state.slots.own.insert(Own {
            id,
            ctx: ctx.clone(),
            cell: None,
            stopped: false,
        });
        if let Some(by_id) = &mut state.slots.by_id {
            by_id.insert(id, own);
        }
        (own, ctx)
    }

    /// Records a task that will never start (the group was cancelled): drops
    /// its closure `f` without the state lock (user code), and records it as
    /// cancelled, or as panicked if the closure's destructor panics, as
    /// [`Shared::discard`] does for queued ones (invariants 1 and 2).
    fn record_unstarted<X>(
        self: &Arc<Self>,
        mut state: MutexGuard<'_, State<T, E>>,
        id: TaskId,
        spawned: &Spawned,
        f: X,
    ) {
        state.slots.discarding += 1;
        drop(state);
        let outcome = drop_catching(f).map_or(Outcome::Cancelled, Outcome::Panicked);
        self.complete(Ended {
            id,
            outcome,
            held: Held::Unstarted,
            tag: Some(spawned.tag(UNPOLLED)),
            stopped: false,
        });
    }

    /// Calls `f` for its future and hands that to the group's runner.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, with tokio's message, unless an earlier
    /// task bound the group to one; the task is then recorded as
    /// cancelled.
    #[track_caller]
    fn start_async<F, Fut>(self: &Arc<Self>, start: Admitted, f: F)
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let Admitted {
            id,
            spawned,
            own,
            ctx,
            ..
        } = start;
        let completion = Completion::new(self, own);
        self.runner.bind();
        // Invariant 3: the last look before user code runs.
        if self.ctx.is_cancelled() {
            // Dropped before `completion` reports the task cancelled.
            return match drop_catching(f) {
                Some(payload) => {
                    completion.finish(id, Outcome::Panicked(payload), Some(spawned.tag(UNPOLLED)));
                }
                None => completion.never_started(id),
            };
        }
        #[allow(unused_mut)] // without the `tracing` feature
        let mut meta = Meta::new(id, &spawned);
        #[cfg(feature = "tracing")]
        {
            meta.span = self.task_span(id, &spawned);
        }
        let Some(timeout) = spawned.timeout else {
            let fut = match catch_unwind(AssertUnwindSafe(move || f(ctx))) {
                Ok(fut) => fut,
                Err(payload) => {
                    return completion.finish(id, Outcome::Panicked(payload), Some(meta.tag()));
                }
            };
            let cell = self
                .runner
                .spawn(meta, Box::pin(TaskFuture::new(fut, completion)));
            return self.enter_cell(own, id, cell);
        };
        // A deadline of its own: a child of its own context, ended with the
        // task. Its timer is the runner's, so that `wait` sees it gone
        // (runner invariant 13).
        let runner = &self.runner;
        let (ctx, handle) = ctx
            .with_timeout_spawned_by(timeout, |runtime, timer| runner.spawn_timer(runtime, timer));
        let end = EndOnDrop(handle);
        let fut = match catch_unwind(AssertUnwindSafe(move || f(ctx))) {
            Ok(fut) => fut,
            Err(payload) => {
                return completion.finish(id, Outcome::Panicked(payload), Some(meta.tag()));
            }
        };
        let fut = async move {
            let _end = end;
            fut.await
        };
        let cell = self
            .runner
            .spawn(meta, Box::pin(TaskFuture::new(fut, completion)));
        self.enter_cell(own, id, cell);
    }

    /// The id of the started task whose `own` key is `own`, for a
    /// [`Completion`] dropped unreported, which keeps no id: its entry
    /// lives until the task's ending is recorded (invariant 11).
    #[cold]
    #[inline(never)]
    pub(super) fn own_id(&self, own: usize) -> TaskId {
        self.lock()
            .slots
            .own
            .get(own)
            .map(|entry| entry.id)
            .expect("a started task keeps its `own` entry until it reports")
    }

    /// Enters a started task's cell in its `own` entry, or stops the cell
    /// if `cancel_task` marked the task first (invariant 11). The entry is
    /// gone if the task has ended already.
    fn enter_cell(&self, own: usize, id: TaskId, cell: Weak<TaskCell>) {
        let mut state = self.lock();
        let Some(entry) = state.slots.own.get_mut(own).filter(|entry| entry.id == id) else {
            return;
        };
        if !entry.stopped {
            entry.cell = Some(cell);
            return;
        }
        entry.cell = Some(cell.clone());
        drop(state);
        self.stop_cell(own, id, cell);
    }

    /// The drop step for a task `cancel_task` stopped: at once, or at the
    /// end of the group's grace by a timer kept in `stop_timers`, which its
    /// ending aborts.
    fn stop_cell(&self, own: usize, id: TaskId, cell: Weak<TaskCell>) {
        if self.grace.is_zero() {
            return self.runner.stop(&cell);
        }
        let Some(timer) = self.runner.stop_after(cell, self.grace) else {
            return;
        };
        let mut state = self.lock();
        match state.slots.own.get(own).filter(|entry| entry.id == id) {
            Some(_) => {
                let timers = state.slots.stop_timers.get_or_insert_with(HashMap::new);
                timers.insert(own, timer);
            }
            None => {
                // Ended meanwhile: nothing left to stop.
                drop(state);
                timer.abort();
            }
        }
    }

    /// Runs `f` on tokio's blocking pool.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::task::spawn_blocking` does.
    #[track_caller]
    fn start_blocking<F>(self: &Arc<Self>, start: Admitted, f: F)
    where
        F: FnOnce(Context) -> Result<T, E> + Send + 'static,
    {
        let Admitted {
            id,
            spawned,
            own,
            ctx,
            key,
        } = start;
        let key = key.expect("a blocking task is admitted with its key");
        let completion = BlockingCompletion::new(self, id, own, key);
        let timeout = spawned.timeout;
        #[cfg(feature = "tracing")]
        let span = self.task_span(id, &spawned);
        if self.ctx.is_cancelled() {
            if let Some(payload) = drop_catching(f) {
                completion.finish(Outcome::Panicked(payload));
            }
            return;
        }
        let current = RunsTask::blocking(id, &spawned, &self.name, self.epoch);
        let task = tokio::task::spawn_blocking(move || {
            let current = current.enter();
            // Invariant 3: the pool may run this long after the look above,
            // and an abort stops it only until it has started.
            if ctx.is_cancelled() {
                if let Some(payload) = drop_catching(f) {
                    completion.finish(Outcome::Panicked(payload));
                }
                return; // `completion` reports it cancelled
            }
            #[cfg(feature = "tracing")]
            let _entered = span.enter();
            let _current = current;
            let run = move || match timeout {
                None => f(ctx),
                Some(timeout) => {
                    // A deadline of its own, ended with the task.
                    let (ctx, handle) = ctx.with_timeout(timeout);
                    let _end = EndOnDrop(handle);
                    f(ctx)
                }
            };
            let outcome = match catch_unwind(AssertUnwindSafe(run)) {
                Ok(result) => Outcome::from_result(result),
                Err(payload) => Outcome::Panicked(payload),
            };
            completion.finish(outcome);
        });
        self.track(key, id, task.abort_handle());
    }

    /// Invariant 4: stores a started blocking task's abort handle, or
    /// aborts the task if the group was cancelled before the handle could be
    /// stored.
    fn track(&self, key: usize, id: TaskId, handle: AbortHandle) {
        let mut state = self.lock();
        match state.slots.tasks.get_mut(key) {
            Some((owner, slot, _)) if *owner == id => *slot = Some(handle.clone()),
            // Already finished: its entry is gone (and maybe reused).
            _ => return,
        }
        drop(state);
        if self.ctx.is_cancelled() {
            handle.abort();
        }
    }

    /// A task ended: delivers it to the joiner and records it
    /// (invariants 1, 5), applies a decision to cancel (invariant 6), and
    /// hands its slot on (invariant 7).
    pub(super) fn complete(self: &Arc<Self>, ended: Ended<T, E>) {
        #[cfg(feature = "tracing")]
        self.trace_panic(&ended);
        let me = thread_mark();
        if self.delivering.load(Relaxed) == me {
            // Invariant 5: from inside the joiner, on its thread.
            self.lock().results.deferred.push_back(ended);
            return;
        }
        let mut joiner = self.joiner.lock().unwrap_or_else(PoisonError::into_inner);
        let delivery = Delivering::enter(&self.delivering, me);
        let mut after = After::new();
        // Not through an `Option`: an ending is large, and this is the
        // path of every task (moving it in and out cost a `memcpy` each).
        let mut ended = ended;
        loop {
            self.read_stopped(&mut ended);
            let (decision, kept) = self.decide(&mut joiner, &mut ended);
            let mut state = self.lock();
            let unused = self.record(&mut state, ended, decision, kept, &mut after);
            let next = if unused.is_none() {
                state.results.deferred.pop_front()
            } else {
                // A cause nobody needs: dropped without the lock (user
                // code), still inside the joiner's turn. A panic there is
                // the group's own (invariant 9), and the endings queued
                // behind this one are still delivered.
                drop(state);
                let panicked = drop_catching(unused);
                let mut state = self.lock();
                if let Some(payload) = panicked {
                    state.diagnostics.panic.get_or_insert(payload);
                }
                state.results.deferred.pop_front()
            };
            match next {
                Some(deferred) => ended = deferred,
                None => break,
            }
        }
        drop(delivery);
        drop(joiner);
        // By reference: `After` is large, and every ending settles.
        self.settle(&mut after);
    }

    /// Whether `cancel_task` stopped the task and it ended without a value
    /// while the group is live (invariant 11): read once, for the whole
    /// ending.
    #[inline]
    fn read_stopped(&self, ended: &mut Ended<T, E>) {
        if !ended.stopped
            && self.any_stopped.load(Acquire)
            && let Held::Slot { own, .. } = ended.held
        {
            ended.stopped = self
                .lock()
                .slots
                .own
                .get(own)
                .is_some_and(|entry| entry.stopped);
        }
        if ended.stopped
            && (matches!(ended.outcome, Outcome::Ok(_) | Outcome::Panicked(_))
                || self.ctx.is_cancelled())
        {
            // A value or a panic is the task's own, stopped or not; an end
            // after the group's cancel is that cancel's consequence.
            ended.stopped = false;
        }
    }

    /// Asks the joiner what `ended` means for the group, and whether the
    /// group keeps its outcome (`false`: the joiner took it). A panic there
    /// cancels the group and is kept for `wait`; the joiner is not asked
    /// again.
    fn decide(&self, joiner: &mut Option<J>, ended: &mut Ended<T, E>) -> (Decision, bool) {
        let Some(j) = joiner.as_mut() else {
            return (Decision::Continue, true);
        };
        let mut kept = true;
        let asked = catch_unwind(AssertUnwindSafe(|| {
            let decision = j.on_complete(ended.id, &ended.outcome, &self.ctx);
            let outcome = std::mem::replace(&mut ended.outcome, Outcome::Cancelled);
            match j.keep(ended.id, outcome, ended.stopped) {
                Some(outcome) => ended.outcome = outcome,
                None => kept = false,
            }
            decision
        }));
        match asked {
            Ok(decision) => (decision, kept),
            Err(payload) => {
                let cause = Cause::new(JoinerPanicked {
                    task: ended.id,
                    message: panic_message(&*payload).to_owned(),
                    of: "group",
                });
                self.lock().diagnostics.panic.get_or_insert(payload);
                let _ = drop_catching(joiner.take());
                // A panic in `keep` took the outcome with it: the task is
                // recorded as cancelled, and `wait` re-raises the panic.
                (Decision::Cancel(cause), kept)
            }
        }
    }

    /// Records an ending the joiner has seen: pushes it to `done` if the
    /// joiner left it `kept`, makes its decision the group's if it is the
    /// first to cancel (invariant 6) and the task was not stopped without
    /// a value (invariant 11), and otherwise releases what it held.
    /// Returns a cause that will not be used, to be dropped without the
    /// lock.
    fn record(
        &self,
        state: &mut State<T, E>,
        ended: Ended<T, E>,
        decision: Decision,
        kept: bool,
        after: &mut After<T, E>,
    ) -> Option<Cause> {
        let Ended {
            id,
            outcome,
            held,
            mut tag,
            stopped,
        } = ended;
        let live = !self.ctx.is_cancelled();
        let held = state.slots.vacate(held, &mut tag, live, after);
        if let Held::Slot {
            key: None,
            ran: false,
            ..
        } = held
        {
            state.diagnostics.straggler(id, &tag);
        }
        let mut unused = None;
        let mut cancels = false;
        if let Decision::Cancel(cause) = decision {
            if !stopped && live && state.results.cancel_by(id) {
                let name = tag.as_ref().and_then(|tag| tag.who.name.as_ref());
                after.cancel = Some(self.label(cause, id, name));
                cancels = true;
            } else {
                unused = Some(cause);
            }
        }
        if kept {
            state.results.keep(id, outcome, tag, stopped, live);
        }
        if cancels {
            after.canceller = Some(held);
        } else {
            self.release(state, held, after);
        }
        after.notify = state.results.watched || state.is_settled();
        unused
    }

    /// A [`TaskFailed`] cause, as the built-in joiners make it, gets the
    /// group's name, and the task's if it is about this task.
    fn label(&self, cause: Cause, id: TaskId, task: Option<&Arc<str>>) -> Cause {
        let Some(failed) = cause.downcast_ref::<TaskFailed>() else {
            return cause;
        };
        let group = failed.group.is_none() && self.name.is_some();
        let named = failed.name.is_none() && failed.task == id && task.is_some();
        if !group && !named {
            return cause;
        }
        Cause::new(TaskFailed {
            group: failed.group.clone().or_else(|| self.name.clone()),
            name: failed.name.clone().or_else(|| task.cloned()),
            ..failed.clone()
        })
    }

    /// Gives back what an ended task held: its slot, to a queued closure if
    /// the group is live and no thread is starting one (invariant 7), else
    /// the queue is dropped when the group is over or its runtime is going
    /// away.
    fn release(&self, state: &mut State<T, E>, held: Held, after: &mut After<T, E>) {
        match held {
            Held::Unstarted => state.slots.discarding -= 1,
            Held::Slot { ran, .. } => {
                state.slots.running -= 1;
                after.freed_slot = true;
                if state.slots.queue.is_empty() {
                    // Nothing waits for the slot (always so without a limit).
                } else if !ran || self.ctx.is_cancelled() {
                    after.unstarted.append(&mut state.take_queue());
                } else if after.start.is_none() {
                    // Takes a spare context, if this task left one.
                    after.start = self.claim_start(state);
                }
                if state.slots.running == 0 && !state.slots.spare.is_empty() {
                    // Idle: a long-lived group keeps nothing of its peak.
                    after.spare = std::mem::take(&mut state.slots.spare);
                }
            }
        }
    }

    /// Takes the next queued closure and its slot, if this thread may start
    /// it (invariants 3 and 7).
    fn claim_start(&self, state: &mut State<T, E>) -> Option<Start<T, E>> {
        if state.slots.queue.is_empty() {
            return None;
        }
        let room = self.limit.is_none_or(|limit| state.slots.running < limit);
        if state.slots.starting || state.results.cancelling || !room || self.ctx.is_cancelled() {
            return None;
        }
        let (id, spawned, work) = state.slots.queue.pop_front()?;
        if state.slots.queue.is_empty() && state.slots.queue.capacity() > STATE_KEPT {
            state.slots.queue = VecDeque::new();
        }
        state.slots.starting = true;
        state.slots.running += 1;
        let (own, ctx) = self.own_context(state, id);
        Some(match work {
            Work::Async(f) => Start::Async(
                Admitted {
                    id,
                    spawned,
                    own,
                    ctx,
                    key: None,
                },
                f,
            ),
            Work::Blocking(f) => {
                let tag = spawned.tag(since(self.epoch, Instant::now()));
                let key = state.slots.tasks.insert((id, None, tag));
                Start::Blocking(
                    Admitted {
                        id,
                        spawned,
                        own,
                        ctx,
                        key: Some(key),
                    },
                    f,
                )
            }
        })
    }

    /// Applies what the endings left: the cancel first, then the slot of
    /// the task that cancelled, the wake-ups, the closures to drop, and the
    /// closure to start.
    fn settle(self: &Arc<Self>, after: &mut After<T, E>) {
        if let Some(cause) = after.cancel.take() {
            let error = cancellation(ContextError::Cancelled, Some(cause));
            // The cancel finishes every node, then resumes a panic from user
            // code it ran (a value's destructor): finish the bookkeeping
            // first, or `wait` and `next` would wait for this task forever.
            let (won, escaped) =
                match catch_unwind(AssertUnwindSafe(|| self.ctx.cancel_internal(error))) {
                    Ok(won) => (won, None),
                    Err(payload) => (true, Some(payload)),
                };
            let mut state = self.lock();
            state.results.cancelling = false;
            if !won {
                // Cancelled some other way first: this decision came after.
                state.results.cancelled_by = None;
            }
            if let Some(payload) = escaped {
                // User code the cancel ran panicked (a context value's
                // destructor, an `after_cancel` callback). This thread may
                // be a shard's, where nobody would see it: `wait` re-raises
                // it (invariant 9). Kept before the task's slot is
                // released, so a `wait` that sees the group joined sees it.
                state.diagnostics.panic.get_or_insert(payload);
            }
            if let Some(held) = after.canceller.take() {
                self.release(&mut state, held, after);
            }
            // `done` is no longer hidden from `next` (invariant 6).
            after.notify = true;
        }
        if after.notify {
            self.progress.notify_one();
        }
        if after.freed_slot && self.limit.is_some() {
            // Only `ready` waits for a slot, and without a limit it never
            // waits.
            self.slot_freed.notify_one();
        }
        if !after.unstarted.is_empty() {
            self.discard(std::mem::take(&mut after.unstarted));
        }
        for (own, timer) in after
            .let_go
            .take()
            .into_iter()
            .chain(after.let_go_more.drain(..))
        {
            if let Some(timer) = timer {
                timer.abort();
            }
            // The task's own context: a callback registered on it is user
            // code, dropped here.
            let _ = drop_catching(own.ctx);
        }
        // Nothing but their tasks saw them: no user code.
        after.spare = Vec::new();
        if let Some(start) = after.start.take() {
            self.start_queued(start);
        }
    }

    /// Starts `first`, then every queued closure that finds a slot while
    /// this thread is the starter (invariant 7).
    fn start_queued(self: &Arc<Self>, first: Start<T, E>) {
        let mut start = first;
        loop {
            let started = catch_unwind(AssertUnwindSafe(|| match start {
                Start::Async(start, f) => self.start_async(start, f),
                Start::Blocking(start, f) => self.start_blocking(start, f),
            }));
            let mut state = self.lock();
            state.slots.starting = false;
            if let Err(payload) = started {
                // Not user code (that is caught where it runs): tokio's
                // refusal to spawn. The task has been recorded.
                drop(state);
                resume_unwind(payload);
            }
            match self.claim_start(&mut state) {
                Some(next) => start = next,
                None => return,
            }
        }
    }

    /// Drops queued closures taken out by [`State::take_queue`], each
    /// recorded as cancelled, or as panicked if its destructor panics
    /// (invariants 1 and 2). Called without the state lock: dropping a
    /// closure runs user code, whose panic must not escape into the
    /// canceller and leave the group unjoinable.
    fn discard(self: &Arc<Self>, queued: VecDeque<(TaskId, Spawned, Work<T, E>)>) {
        for (id, spawned, work) in queued {
            self.discard_one(id, &spawned, work, false);
        }
    }

    /// Drops one queued closure taken out of the queue and records it as
    /// never started; `stopped`: by `cancel_task`.
    fn discard_one(
        self: &Arc<Self>,
        id: TaskId,
        spawned: &Spawned,
        work: Work<T, E>,
        stopped: bool,
    ) {
        let outcome = drop_catching(work).map_or(Outcome::Cancelled, Outcome::Panicked);
        self.complete(Ended {
            id,
            outcome,
            held: Held::Unstarted,
            tag: Some(spawned.tag(UNPOLLED)),
            stopped,
        });
    }

    /// Cancels one task on its own (invariant 11): a queued one never
    /// starts; a started one's context is cancelled, and an async one is
    /// dropped at its next await once the group's grace has passed
    /// (shields hold). `false` when no task with that id is queued or
    /// running.
    pub(super) fn cancel_task(self: &Arc<Self>, id: TaskId) -> bool {
        let mut state = self.lock();
        if let Some(at) = state
            .slots
            .queue
            .iter()
            .position(|(queued, ..)| *queued == id)
        {
            let (id, spawned, work) = state.slots.queue.remove(at).expect("found at `at`");
            state.slots.discarding += 1;
            drop(state);
            self.discard_one(id, &spawned, work, true);
            return true;
        }
        let Some(own) = state.slots.own_key(id) else {
            return false;
        };
        let entry = state.slots.own.get_mut(own).filter(|entry| entry.id == id);
        debug_assert!(entry.is_some(), "`by_id` names only live tasks");
        let Some(entry) = entry else {
            return false;
        };
        if entry.stopped {
            // Stopped before: in its grace or a shield.
            return true;
        }
        entry.stopped = true;
        self.any_stopped.store(true, Release);
        let ctx = entry.ctx.clone();
        let cell = entry.cell.clone();
        let blocking = state
            .slots
            .tasks
            .iter()
            .find(|(_, (task, ..))| *task == id)
            .and_then(|(_, (_, handle, _))| handle.clone());
        drop(state);
        // Invariant 11: the mark, then the context, then the cell.
        if !self.ctx.is_cancelled() {
            // A task of a cancelled group keeps the group's cause.
            let cause = Cause::new(TaskCancelled { task: id });
            ctx.cancel_internal(cancellation(ContextError::Cancelled, Some(cause)));
        }
        drop(ctx);
        if let Some(cell) = cell {
            self.stop_cell(own, id, cell);
        }
        if let Some(task) = blocking {
            // Stops it only before its closure has started.
            task.abort();
        }
        true
    }
}

#[cfg(feature = "tracing")]
impl<T, E, J> Shared<T, E, J> {
    /// A task's span, `taskgroup.task`, child of the group's.
    fn task_span(&self, id: TaskId, spawned: &Spawned) -> tracing::Span {
        tracing::info_span!(
            parent: &self.span,
            "taskgroup.task",
            id = id.index(),
            name = spawned.who.name.as_deref()
        )
    }

    /// The event for a task's panic, on its way to the joiner; no lock is
    /// held.
    fn trace_panic(&self, ended: &Ended<T, E>) {
        if let Outcome::Panicked(payload) = &ended.outcome {
            let name = ended.tag.as_ref().and_then(|tag| tag.who.name.as_deref());
            tracing::error!(
                parent: &self.span,
                task = ended.id.index(),
                name,
                panic = panic_message(&**payload),
                "task panicked"
            );
        }
    }
}

impl<T, E, J> Shared<T, E, J> {
    /// The second step of a cancel, after the signal: drops the async
    /// tasks now, or once the group's grace has passed (invariant 8).
    fn begin_grace(&self) {
        if self.grace.is_zero() {
            return self.runner.cancel();
        }
        let Some(timer) = self.runner.cancel_after(self.grace) else {
            return;
        };
        let mut state = self.lock();
        if state.teardown.driven {
            // The group was dropped meanwhile, and dropped its tasks.
            drop(state);
            timer.abort();
        } else {
            state.teardown.grace_timer = Some(timer);
        }
    }

    /// Once the group is joined or settled: stops its grace's timer, which
    /// has no task left to drop, and waits until no tokio task its runner
    /// started is alive (runner invariant 13). So when `wait`,
    /// `wait_outcomes` or `shutdown` returns, the group has left nothing
    /// running in the runtime.
    pub(super) async fn quiesce(&self) {
        // Taken over (`driven`) under the lock where a cancel arriving now,
        // from a parent say, would store the timer it starts: either the
        // timer is taken here, or `begin_grace` sees `driven` and aborts it
        // (invariant 8). Else that timer would keep `quiet` waiting for the
        // whole grace.
        let timer = {
            let mut state = self.lock();
            state.teardown.driven = true;
            state.teardown.grace_timer.take()
        };
        if let Some(timer) = timer {
            timer.abort();
        }
        self.runner.quiet().await;
    }

    /// Takes over the second step of a cancel from the cancel hook: a
    /// shutdown, or the group's drop, decides when the tasks are dropped
    /// (invariant 8).
    pub(super) fn drive(&self) {
        self.lock().teardown.driven = true;
    }

    /// Drops every async task now, but shielded ones (invariant 8): the end
    /// of a grace cut short. Called once the group context is cancelled.
    pub(super) fn drop_tasks(&self) {
        if self.runner.is_cancelled() {
            return;
        }
        let mut state = self.lock();
        state.teardown.driven = true;
        let timer = state.teardown.grace_timer.take();
        drop(state);
        self.runner.cancel();
        if let Some(timer) = timer {
            timer.abort();
        }
    }
}

impl<T, E, J> CancelHook for Shared<T, E, J>
where
    T: Send + 'static,
    E: Send + 'static,
    J: Joiner<T, E>,
{
    /// Aborts every running task and records the queued ones as cancelled.
    fn on_cancel(&self) {
        #[cfg(feature = "tracing")]
        if let Some(err) = self.ctx.err() {
            // A cause that is only the error says nothing more.
            match self
                .ctx
                .cause()
                .filter(|c| c.downcast_ref::<ContextError>().is_none())
            {
                Some(cause) => {
                    tracing::info!(parent: &self.span, error = %err, cause = %cause, "group cancelled");
                }
                None => tracing::info!(parent: &self.span, error = %err, "group cancelled"),
            }
        }
        let mut state = self.lock();
        let blocking: Vec<AbortHandle> = state
            .slots
            .tasks
            .iter()
            .filter_map(|(_, (_, handle, _))| handle.clone())
            .collect();
        let queued = state.take_queue();
        let driven = state.teardown.driven;
        drop(state);
        if !driven {
            self.begin_grace();
        }
        for task in blocking {
            task.abort();
        }
        // Every producer waiting in `ready` returns now, not only one.
        self.slot_freed.notify_waiters();
        if !queued.is_empty() {
            // The hook holds `&self`; recording needs the `Arc`. The group
            // is alive while its context is being cancelled through it,
            // unless the last handle is being dropped right now, and then
            // nobody can read the outcomes.
            if let Some(me) = self.me.upgrade() {
                me.discard(queued);
            } else {
                drop_all_catching(queued);
            }
        }
        self.progress.notify_one();
    }
}

/// The cause of a task's own context when `cancel_task` cancelled it.
#[derive(Debug)]
struct TaskCancelled {
    task: TaskId,
}

impl std::fmt::Display for TaskCancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} was cancelled on its own (cancel_task)", self.task)
    }
}

impl std::error::Error for TaskCancelled {}

/// A thread's turn in a group's joiner (invariant 5): the group's
/// `delivering` holds the thread's mark from [`Delivering::enter`] until
/// this is dropped, on return or unwind, so that no mark outlives its turn
/// (a mark left behind would send every later ending of that thread to
/// `deferred`, which nobody drains).
struct Delivering<'a>(&'a AtomicUsize);

impl<'a> Delivering<'a> {
    #[inline]
    fn enter(delivering: &'a AtomicUsize, me: usize) -> Delivering<'a> {
        delivering.store(me, Relaxed);
        Delivering(delivering)
    }
}

impl Drop for Delivering<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.store(0, Relaxed);
    }
}
