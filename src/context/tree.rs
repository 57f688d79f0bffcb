//! The cancellation tree behind [`Context`](crate::Context).
//!
//! Every context is one [`Node`] behind one `Arc`. A node that can be
//! cancelled (it has a [`CancelHandle`](crate::CancelHandle), a deadline, or a
//! cancellable ancestor) is *linked*: its parent holds a `Weak` to it in a
//! slab, so that cancelling the parent reaches it. A node that can never be
//! cancelled (the background root, a `without_cancel` context) links nothing:
//! creating children of it takes no lock.
//!
//! # Invariants
//!
//! 1. A node's `state` is set once, together with its cause, under its
//!    own `inner` lock, and also while holding the stripe lock of the
//!    node's tree, `STRIPES[node.stripe]` — except for a node with no
//!    children linked (none can link while its `inner` lock is held), and
//!    for a node born cancelled, before anyone else can see it. The only
//!    later writes are the `SETTLED` mark of invariant 7 and the
//!    `AWAITED` mark of invariant 8, each an atomic or.
//! 2. Every node of a linked tree has the stripe of the tree's root: a linked
//!    child copies its parent's stripe.
//! 3. A child is linked into the parent's `inner.first` (if free) or
//!    `children` under the parent's `inner` lock, and only if the parent's
//!    `state` is unset at that moment. The canceller sets the parent's
//!    `state` under that lock and takes `first` and `children` in the same
//!    hold, so a child is either seen by the canceller or born cancelled:
//!    never missed, and nothing is linked to a cancelled node.
//! 4. The same holds for `inner.callbacks` (after-cancel registrations) and
//!    the group hook: registered while the state is unset and fired by the
//!    canceller, or run at once.
//! 5. A whole subtree is cancelled under one hold of the stripe lock, or is
//!    a single node with no children (invariant 1). So when [`cancel`]
//!    returns, whether this call set the state or found it set, every
//!    descendant's `state` is set: a state found set was set by a canceller
//!    that held the stripe lock for its whole walk, or had no walk to do,
//!    or it is marked settled (invariant 7).
//! 6. A node's `slot` (its key in the parent's slab, or `FIRST`) is read
//!    and written only under the parent's `inner` lock, except in the
//!    node's own drop, when no one else can reach it: there a slot at or
//!    above `WALKED` (set by the parent's canceller, which took the slab)
//!    needs no lock; and except for the walker's mark of invariant 7,
//!    which `is_settled` reads.
//! 7. A cancelled node is *settled* once every descendant's `state` is
//!    set: its `state` carries `SETTLED`, or its `slot` carries walk
//!    number `w` (`WALKED | w`) and its stripe's `walks` is at least `w`.
//!    A node cancelled with no children (a leaf, under its own lock, or
//!    born cancelled) is settled as it is set. The node a walk starts from
//!    gets `SETTLED` from that walk's canceller after it released the
//!    stripe lock. Every node the walk takes out of a parent's slab is
//!    marked with the walk's number before its state is set, and the walk
//!    publishes its number in `walks` (`Release`, read with `Acquire`)
//!    after its last state is set, so the walker need not come back to
//!    each node. (A node the walk finds set already was set by an earlier
//!    walk of the same stripe, by invariant 2, over before this one took
//!    the lock, or is a settled leaf.) A cancel that finds its node
//!    settled returns at once, without the stripe lock, and invariant 5
//!    still holds; one that finds the state set but not settled waits on
//!    the stripe lock.
//! 8. `AWAITED` is or'ed into `state` by every waiter before it looks at
//!    the state, and the canceller sets the error code with an or whose
//!    result says whether `AWAITED` was there: on one atomic, one of the
//!    two ors comes first, so either the canceller wakes the `Notify` or
//!    the waiter sees the state set. The canceller wakes it after the
//!    stripe lock is released.
//! 10. A *deferred* child (a task group's per-task context) is made
//!     without linking: `DEFERRED` is set in its `state` at birth, and
//!     while it is, the node reads as cancelled when its parent does
//!     ([`Node::error`], [`Node::cause`]), which keeps invariant 5 without
//!     the parent's lock. It is linked, as invariant 3 says, before
//!     anything but a context can see its cancellation: a waiter
//!     ([`Node::notify`]), a child, a callback, a token, a timer. The link
//!     takes the parent's `inner` lock and clears `DEFERRED` under it, so
//!     of two threads linking it one does; if the parent is cancelled by
//!     then, the node takes its cancellation instead (as a child born
//!     cancelled). Its own cancel needs no link: with no child, it is a
//!     leaf. Internally, whether its *own* state is set is read apart from
//!     the parent's ([`Node::own_error`]).
//! 9. `ATTACHED` is or'ed into `state` (under the node's `inner` lock)
//!    before anything but a context or a handle can see the node's
//!    cancellation: when its `extras` are made (callbacks, a timer, a
//!    token, a slab of children) or at birth for a group's hook. A linked
//!    child or a waiter holds a context, and so a strong reference. So a
//!    dropped handle that holds the node's only strong reference, with
//!    `ATTACHED` unset, skips the cancel ([`is_unobserved`]): nobody could
//!    ever see it, and the node is dropped right after. What the holder of
//!    the reference dropped before it attached is visible to that check:
//!    `Arc`'s release decrement, read by the count, and an acquire fence.
//!    A parent's walk that upgrades its `Weak` meanwhile only cancels the
//!    node itself, as it would have.
//!
//! # Lock order
//!
//! stripe lock, then a node's `inner` lock. An `inner` lock is never held
//! while taking a stripe lock, while dropping a node, or while running user
//! code. Everything that may run code beyond this module — waking waiters,
//! spawning callbacks, a task group's hook, dropping the nodes visited (a
//! user value's destructor may cancel) — runs after the stripe lock is
//! released, still inside [`cancel`], each step under its own
//! `catch_unwind`: a panic there never keeps the walk from finishing the
//! other nodes, and the first one is resumed when they all are. The walk
//! keeps only the nodes that have something to finish (a hook, a waiter,
//! a timer, a token, callbacks) or a value, and those whose last
//! reference it held; it lets go of the others as it goes, and frees
//! their emptied slabs (no user code) under the stripe lock.

use std::any::{Any, TypeId};
use std::cell::Cell;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};

use slab::Slab;
use tokio::runtime::{self, Handle};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Cause;
use crate::ContextError;
use crate::loom::{AtomicBool, AtomicU8, AtomicUsize, Mutex, MutexGuard};

/// A `slot` at or above this is no key in a slab: the node is unlinked.
/// The bits below say which walk of its stripe took it out of its
/// parent's slab (invariant 7); `UNLINKED` itself, no walk.
const WALKED: usize = 1 << (usize::BITS - 1);
const UNLINKED: usize = usize::MAX;
/// The `slot` of the child in its parent's `inner.first`: no slab key (a
/// slab would need `WALKED - 1` entries to reach it).
const FIRST: usize = WALKED - 1;
const LIVE: u8 = 0;
const CANCELLED: u8 = 1;
const DEADLINE_EXCEEDED: u8 = 2;
/// The bits of `state` that say whether, and how, the node is cancelled.
const ERROR: u8 = CANCELLED | DEADLINE_EXCEEDED;
/// Or'ed into a cancelled node's `state` once no walk is left to set a
/// state below it (invariant 7).
const SETTLED: u8 = 4;
/// Or'ed into `state` by the first waiter (invariant 8).
const AWAITED: u8 = 8;
/// Or'ed into `state` once something beyond contexts and the handle can
/// see the node's cancellation (invariant 9).
const ATTACHED: u8 = 16;
/// Set at birth in a deferred child, cleared once it is linked
/// (invariant 10).
const DEFERRED: u8 = 32;
const STRIPE_COUNT: usize = 64;
// `next_stripe` spreads threads over six bits.
const _: () = assert!(STRIPE_COUNT == 64);

/// One lock per cache line, so that trees on different stripes never
/// contend, and the number of walks done under it (invariant 7).
#[repr(align(64))]
struct Stripe {
    lock: Mutex<()>,
    /// How many walks have ended under `lock`: walk number `walks + 1` is
    /// the one holding it. Written only under `lock`, `Release`, after the
    /// walk's last state is set; read with `Acquire` by anyone.
    walks: AtomicUsize,
}

impl Stripe {
    #[cfg(not(loom))]
    const fn new() -> Stripe {
        Stripe {
            lock: Mutex::new(()),
            walks: AtomicUsize::new(0),
        }
    }

    #[cfg(loom)]
    fn new() -> Stripe {
        Stripe {
            lock: Mutex::new(()),
            walks: AtomicUsize::new(0),
        }
    }
}

#[cfg(not(loom))]
static STRIPES: [Stripe; STRIPE_COUNT] = [const { Stripe::new() }; STRIPE_COUNT];

// loom objects must be made inside each model run; two stripes are enough
// to model trees that share one and trees that do not.
#[cfg(loom)]
loom::lazy_static! {
    static ref STRIPES: [Stripe; 2] = [Stripe::new(), Stripe::new()];
}

fn stripe(stripe: u8) -> &'static Stripe {
    #[cfg(not(loom))]
    let stripes: &'static [Stripe] = &STRIPES;
    #[cfg(loom)]
    let stripes: &'static [Stripe] = &*STRIPES;
    &stripes[usize::from(stripe) % stripes.len()]
}

/// How many threads have picked a stripe: the next one's place in the
/// spread of starting stripes. Touched once per thread, not per root. std's
/// atomic under loom too: it only chooses a number, it orders nothing.
static THREADS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

thread_local! {
    /// The stripe this thread's last root took. The first is the thread's
    /// place in `THREADS` with its six bits reversed (0, 32, 16, 48, 8, ...):
    /// a process's first two threads start 32 stripes apart, its first four
    /// 16 apart, and so on; any 64 threads in a row start on different
    /// stripes; and threads that make roots at about the same rate stay
    /// apart. (A
    /// thread's own address is no help here: threads' stacks, and so their
    /// thread-locals, sit whole pages apart, and would all start alike.)
    static NEXT_STRIPE: Cell<u8> = Cell::new(
        THREADS.fetch_add(1, Ordering::Relaxed).reverse_bits() >> 2,
    );
}

/// Picks a stripe for a new tree root: the thread's round robin, so that
/// roots one thread makes (an accept loop's, say) and others cancel are
/// spread over the stripes too, and no shared counter is touched per root.
fn next_stripe() -> u8 {
    NEXT_STRIPE.with(|next| {
        let n = next.get().wrapping_add(1) % STRIPE_COUNT as u8;
        next.set(n);
        n
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No user code runs under our locks, so a poisoned lock only means a
    // panic (out of memory, say) in our own bookkeeping; the data is still
    // consistent at every await-free step.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The state of a cancelled node: the error kind and its cause.
#[derive(Clone, Debug)]
pub(crate) struct Cancellation {
    pub(crate) error: ContextError,
    pub(crate) cause: Cause,
}

impl Cancellation {
    pub(crate) fn new(error: ContextError, cause: Option<Cause>) -> Cancellation {
        Cancellation {
            error,
            cause: cause.unwrap_or_else(|| Cause::from(error)),
        }
    }
}

/// Code that must run synchronously, before [`cancel`] returns, when a node
/// is cancelled: a task group aborting its tasks. It runs with no lock of
/// this module held.
pub(crate) trait CancelHook: Send + Sync {
    fn on_cancel(&self);
}

/// An `after_cancel` callback: taken exactly once, by whoever gets to it
/// first, the canceller or [`Callback::stop`].
pub(crate) struct Callback {
    f: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    runtime: Handle,
}

impl Callback {
    pub(crate) fn new(f: Box<dyn FnOnce() + Send>, runtime: Handle) -> Arc<Callback> {
        Arc::new(Callback {
            f: Mutex::new(Some(f)),
            runtime,
        })
    }

    /// Starts the callback on its own task, unless it was stopped.
    fn fire(&self) {
        let f = lock(&self.f).take();
        if let Some(f) = f {
            drop(self.runtime.spawn(async move { f() }));
        }
    }

    /// Takes the callback away; `true` if it had not run and now never will.
    pub(crate) fn stop(&self) -> bool {
        let f = lock(&self.f).take();
        f.is_some()
    }
}

/// What a node's lock guards.
#[derive(Default)]
struct Inner {
    /// Set with `state` (invariant 1), read by `cause()`.
    cause: Option<Cause>,
    /// A child linked while this was empty (its `slot` is `FIRST`): a node
    /// with one child at a time, a link in a chain or a parent whose
    /// children come and go one by one, needs no `Extras` and no slab.
    first: Option<Weak<Node>>,
    /// What hangs off a node: out of line, because most nodes (leaves) have
    /// none of it, and a plain child should stay small.
    extras: Option<Box<Extras>>,
}

#[derive(Default)]
struct Extras {
    /// The children linked while `first` was taken.
    children: Slab<Weak<Node>>,
    callbacks: Slab<Arc<Callback>>,
    timer: Option<AbortHandle>,
    /// Handed out by `Context::to_token`: cancelled in the walk, with the
    /// hook, before `cancel` returns.
    token: Option<CancellationToken>,
    /// A task group's, set at creation: here rather than in the node,
    /// which only group contexts would use it in.
    hook: Option<Weak<dyn CancelHook>>,
}

/// A node's deadline, and the runtime whose timer task serves it: the one
/// current when the context that set it was made.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Deadline {
    at: Instant,
    served_on: runtime::Id,
}

/// What few nodes have, fixed at creation and never changed: read with
/// no lock. Out of line, so that a plain node (a task's own context) stays
/// small; a node has one only if it has a deadline of its own or a value.
struct Rare {
    /// Its own deadline: earlier than its parent's, if it has a parent it
    /// is linked to (a detached node's stands alone). A node that inherits
    /// its parent's has none here (`Node::inherits_deadline`).
    deadline: Option<Deadline>,
    /// The value, with its type: a lookup walking past a value of another
    /// type compares it, with no call through the value's vtable.
    value: Option<(TypeId, Box<dyn Any + Send + Sync>)>,
}

/// A node's `rare`, whose drop is one inlined test when it has none, as
/// most nodes do (the drop glue of an `Option<Box<Rare>>` was a call, even
/// for `None`: 13 instructions a node). The last field of `Node`, dropped
/// last, as the value was.
struct RareSlot(ManuallyDrop<Option<Box<Rare>>>);

impl RareSlot {
    fn get(&self) -> Option<&Rare> {
        self.0.as_deref()
    }
}

impl Drop for RareSlot {
    #[inline]
    fn drop(&mut self) {
        if self.0.is_some() {
            drop_rare(self.0.take());
        }
    }
}

#[cold]
#[inline(never)]
fn drop_rare(rare: Option<Box<Rare>>) {
    drop(rare);
}

impl Inner {
    /// Whether any child may still be linked here.
    fn has_children(&self) -> bool {
        self.first.is_some()
            || self
                .extras
                .as_ref()
                .is_some_and(|extras| !extras.children.is_empty())
    }
}

/// What a new node is, beyond what it inherits from its parent.
pub(crate) struct NodeSpec {
    /// It has a [`CancelHandle`](crate::CancelHandle) (or an owner that can
    /// cancel it, such as a task group).
    pub(crate) own_cancel: bool,
    /// Its own deadline, before taking the parent's into account, and the
    /// runtime that serves it (if it is earlier than the parent's).
    pub(crate) deadline: Option<(Instant, runtime::Id)>,
    pub(crate) value: Option<Box<dyn Any + Send + Sync>>,
    pub(crate) hook: Option<Weak<dyn CancelHook>>,
    /// Cut the link to the parent's cancellation (`without_cancel`).
    pub(crate) detach: bool,
    /// Link to the parent only once something beyond a context can see
    /// the node's cancellation (invariant 10).
    pub(crate) defer_link: bool,
}

impl NodeSpec {
    pub(crate) fn plain() -> NodeSpec {
        NodeSpec {
            own_cancel: false,
            deadline: None,
            value: None,
            hook: None,
            detach: false,
            defer_link: false,
        }
    }
}

/// In declaration order (`repr(C)`): what a dropped handle and a
/// cancel that finds the node settled read (`state`, `cancellable`,
/// `stripe`, `slot`) sits right after the `Arc`'s counts, which the drop
/// also touches, so that it takes one or two cache lines, not three, when
/// a million handles are dropped in a row. What few nodes have (a
/// deadline of their own, a value) is out of line, in `rare`, the last
/// field: a plain node, a task's own context, is 112 bytes on 64-bit
/// Linux (a 128-byte `Arc` allocation, a 144-byte glibc chunk), not 144.
/// (104, within glibc's fast bins, was measured too: fewer bytes, but more
/// instructions, spent consolidating the fast bins; issue 31.)
#[repr(C)]
pub(crate) struct Node {
    /// Invariant 1: `LIVE` until set once, with `inner.cause`, to the
    /// error's code (the `ERROR` bits), `SETTLED` or'ed in then or later
    /// (invariant 7), `AWAITED` at any time (invariant 8); an atomic load
    /// to read.
    state: AtomicU8,
    /// Whether anything can ever cancel this node.
    cancellable: bool,
    stripe: u8,
    /// Whether a cancellable ancestor can cancel it (it is linked).
    inherits: bool,
    /// Whether this node or an ancestor it can reach carries a value.
    has_values: bool,
    /// Whether its deadline is its parent's (inherited, or its own was
    /// no earlier): then `parent` is kept, and `rare` has no deadline.
    inherits_deadline: bool,
    /// Its only canceller, its handle, was given up (`disarm`) and it has
    /// no deadline and no cancellable ancestor: it can never be cancelled
    /// now, so after-cancel callbacks are dropped, not kept. Written under
    /// `inner`.
    abandoned: AtomicBool,
    /// Invariant 6: key in `parent.inner.children`, or at least
    /// `WALKED`: `WALKED` or'ed with the number of the walk that took it
    /// out (invariant 7), or `UNLINKED`.
    slot: AtomicUsize,
    /// Kept for value lookups and for unlinking; `None` when there is
    /// nothing to look up and nothing to unlink from.
    parent: Option<Arc<Node>>,
    /// Woken (all waiters) when `state` is set, if it was `AWAITED`.
    notify: Notify,
    inner: Mutex<Inner>,
    /// Its own deadline and its value, if it has either.
    rare: RareSlot,
}

#[cfg(not(loom))]
static BACKGROUND: std::sync::LazyLock<Arc<Node>> = std::sync::LazyLock::new(|| {
    Arc::new(Node::new(
        None,
        NodeSpec::plain(),
        next_stripe(),
        None,
        false,
    ))
});

impl Node {
    /// The node this one was made from, if it keeps it.
    pub(crate) fn parent(&self) -> Option<&Arc<Node>> {
        self.parent.as_ref()
    }

    /// `deadline`: its own, if earlier than its parent's; `inherits_deadline`:
    /// it has its parent's (which cancels it: it is linked).
    ///
    /// Inlined into [`Node::child`], its hot caller: the call and the
    /// moves of its arguments were about 20 instructions a node.
    #[inline(always)]
    fn new(
        parent: Option<Arc<Node>>,
        spec: NodeSpec,
        stripe: u8,
        deadline: Option<Deadline>,
        inherits_deadline: bool,
    ) -> Node {
        let detach = spec.detach;
        let parent_cancellable = parent.as_ref().is_some_and(|p| p.cancellable) && !detach;
        debug_assert!(!inherits_deadline || (parent_cancellable && deadline.is_none()));
        let has_values = spec.value.is_some() || parent.as_ref().is_some_and(|p| p.has_values);
        let rare = (deadline.is_some() || spec.value.is_some()).then(|| {
            Box::new(Rare {
                deadline,
                // The value's type, not the `Box`'s.
                value: spec.value.map(|value| (Any::type_id(&*value), value)),
            })
        });
        Node {
            // Invariant 9: a group's hook sees the cancel.
            state: AtomicU8::new(if spec.hook.is_some() { ATTACHED } else { LIVE }),
            notify: Notify::new(),
            // A parent is only worth keeping for its values or to unlink
            // from (and so for a deadline it inherits: the parent is
            // cancellable then).
            parent: parent.filter(|p| p.has_values || (p.cancellable && !detach)),
            slot: AtomicUsize::new(UNLINKED),
            cancellable: spec.own_cancel || deadline.is_some() || parent_cancellable,
            inherits: parent_cancellable,
            abandoned: AtomicBool::new(false),
            has_values,
            inherits_deadline,
            stripe,
            rare: RareSlot(ManuallyDrop::new(rare)),
            inner: Mutex::new(Inner {
                extras: spec.hook.map(|hook| {
                    Box::new(Extras {
                        hook: Some(hook),
                        ..Extras::default()
                    })
                }),
                ..Inner::default()
            }),
        }
    }

    /// The root that is never cancelled and has no deadline and no values.
    pub(crate) fn background() -> Arc<Node> {
        #[cfg(not(loom))]
        return BACKGROUND.clone();
        // A fresh root per call: loom objects must not outlive a model run.
        #[cfg(loom)]
        return Arc::new(Node::new(
            None,
            NodeSpec::plain(),
            next_stripe(),
            None,
            false,
        ));
    }

    /// Creates a child of `parent`, linked if `parent` can be cancelled, and
    /// born cancelled if `parent` already is.
    ///
    pub(crate) fn child(parent: &Arc<Node>, spec: NodeSpec) -> Arc<Node> {
        // Invariant 10: a deferred parent is linked before it has a child.
        parent.link_deferred();
        let detach = spec.detach;
        let defer = spec.defer_link && spec.hook.is_none();
        // The earlier of its own and its parent's (the parent's on a tie):
        // the parent's is looked up only to compare it with its own.
        let inherited = !detach && parent.has_deadline();
        let (deadline, inherits_deadline) = match spec.deadline {
            Some((at, served_on))
                if !inherited || parent.full_deadline().is_none_or(|theirs| at < theirs.at) =>
            {
                (Some(Deadline { at, served_on }), false)
            }
            _ => (None, inherited),
        };
        let link = parent.cancellable && !detach;
        let stripe = if link { parent.stripe } else { next_stripe() };
        let node = Arc::new(Node::new(
            Some(parent.clone()),
            spec,
            stripe,
            deadline,
            inherits_deadline,
        ));
        if link && defer && !parent.is_cancelled() {
            // Invariant 10: read through the parent until linked.
            node.state.fetch_or(DEFERRED, Ordering::Relaxed);
        } else if link {
            // Invariant 3: link under the parent's lock, or inherit its state.
            let mut inner = lock(&parent.inner);
            match (parent.error(), &inner.cause) {
                (Some(error), Some(cause)) => {
                    let cancellation = Cancellation::new(error, Some(cause.clone()));
                    drop(inner);
                    // Nothing below it yet: settled at once (invariant 7).
                    node.set_state(&mut lock(&node.inner), &cancellation, true);
                }
                _ => {
                    let weak = Arc::downgrade(&node);
                    let key = if inner.first.is_none() {
                        inner.first = Some(weak);
                        FIRST
                    } else {
                        parent.extras(&mut inner).children.insert(weak)
                    };
                    node.slot.store(key, Ordering::Relaxed);
                }
            }
        }
        node
    }

    /// `inner.extras`, made if need be, marking the node `ATTACHED`
    /// (invariant 9). `inner` is this node's, locked.
    fn extras<'a>(&self, inner: &'a mut Inner) -> &'a mut Extras {
        if inner.extras.is_none() {
            self.state.fetch_or(ATTACHED, Ordering::Release);
        }
        inner.extras.get_or_insert_with(Box::default)
    }

    /// The error, once cancelled: one atomic load (and the parent's, for
    /// a deferred node: invariant 10).
    pub(crate) fn error(&self) -> Option<ContextError> {
        let state = self.state.load(Ordering::Acquire);
        match state & ERROR {
            LIVE if state & DEFERRED != 0 => self.parent.as_ref()?.error(),
            LIVE => None,
            CANCELLED => Some(ContextError::Cancelled),
            _ => Some(ContextError::DeadlineExceeded),
        }
    }

    #[inline]
    pub(crate) fn is_cancelled(&self) -> bool {
        let state = self.state.load(Ordering::Acquire);
        if state & ERROR != LIVE {
            return true;
        }
        state & DEFERRED != 0 && self.parent.as_ref().is_some_and(|p| p.is_cancelled())
    }

    /// Whether it is a deferred node as it was born: never linked,
    /// awaited, attached or cancelled itself (invariant 10).
    pub(crate) fn is_pristine(&self) -> bool {
        self.state.load(Ordering::Relaxed) == DEFERRED
    }

    /// Whether this node's own state is set, whatever its parent's
    /// (invariant 10).
    fn own_error(&self) -> bool {
        self.state.load(Ordering::Acquire) & ERROR != LIVE
    }

    /// Invariant 10: links a deferred node to its parent, or gives it the
    /// parent's cancellation; a no-op for any other node.
    #[inline]
    fn link_deferred(self: &Arc<Self>) {
        if self.state.load(Ordering::Acquire) & DEFERRED != 0 {
            self.link_now();
        }
    }

    #[cold]
    fn link_now(self: &Arc<Self>) {
        let Some(parent) = self.parent.as_ref() else {
            return;
        };
        parent.link_deferred();
        let mut theirs = lock(&parent.inner);
        if self.state.load(Ordering::Acquire) & DEFERRED == 0 {
            // Another thread linked it.
            return;
        }
        match (parent.error(), &theirs.cause) {
            (Some(error), Some(cause)) => {
                let cancellation = Cancellation::new(error, Some(cause.clone()));
                drop(theirs);
                let mut inner = lock(&self.inner);
                // Its own state may be set already (its own cancel): kept.
                // It has no child yet: settled at once (invariant 7).
                let _ = self.set_state(&mut inner, &cancellation, true);
                self.state.fetch_and(!DEFERRED, Ordering::Release);
            }
            _ => {
                let weak = Arc::downgrade(self);
                let key = if theirs.first.is_none() {
                    theirs.first = Some(weak);
                    FIRST
                } else {
                    parent.extras(&mut theirs).children.insert(weak)
                };
                self.slot.store(key, Ordering::Relaxed);
                self.state.fetch_and(!DEFERRED, Ordering::Release);
            }
        }
    }

    /// The cause, once cancelled. Takes the node's lock: `cause` and
    /// `state` are set together under it.
    pub(crate) fn cause(&self) -> Option<Cause> {
        if !self.own_error() {
            // Deferred: the parent's, if it is cancelled (invariant 10).
            let state = self.state.load(Ordering::Acquire);
            return match &self.parent {
                Some(parent) if state & DEFERRED != 0 => parent.cause(),
                _ => None,
            };
        }
        lock(&self.inner).cause.clone()
    }

    /// Invariant 1: sets the state, unless set already; `inner` is this
    /// node's locked `Inner`. `settled`: no walk can be left below it
    /// (invariant 7). `None` if it was set already, else whether someone
    /// waits on `notify` (invariant 8).
    fn set_state(
        &self,
        inner: &mut Inner,
        cancellation: &Cancellation,
        settled: bool,
    ) -> Option<bool> {
        if self.own_error() {
            return None;
        }
        inner.cause = Some(cancellation.cause.clone());
        let code = match cancellation.error {
            ContextError::Cancelled => CANCELLED,
            ContextError::DeadlineExceeded => DEADLINE_EXCEEDED,
        };
        let settled = if settled { SETTLED } else { 0 };
        // Only `AWAITED` can be set meanwhile (we hold `inner`): an or, so
        // that it is not lost, and whose result says if it was there.
        let before = self.state.fetch_or(code | settled, Ordering::AcqRel);
        Some(before & AWAITED != 0)
    }

    /// Invariant 7: marks the node a walk started from as settled, once
    /// the walk's stripe lock is released. Only the canceller that set its
    /// state calls this.
    fn settle(&self) {
        self.state.fetch_or(SETTLED, Ordering::Release);
    }

    /// Invariant 7: cancelled, and every descendant too.
    fn is_settled(&self) -> bool {
        let state = self.state.load(Ordering::Acquire);
        if state & SETTLED != 0 {
            return true;
        }
        if state & ERROR == LIVE {
            return false;
        }
        // Set, so the `slot` written before it by the walk that took this
        // node out of its parent's slab (if one did) is visible. That walk
        // may still be going below: it is over once its stripe counts it.
        let slot = self.slot.load(Ordering::Relaxed);
        slot != UNLINKED
            && slot & WALKED != 0
            && slot & !WALKED <= stripe(self.stripe).walks.load(Ordering::Acquire)
    }

    /// Whether it has a deadline, its own or inherited.
    fn has_deadline(&self) -> bool {
        self.inherits_deadline || self.rare.get().is_some_and(|rare| rare.deadline.is_some())
    }

    /// The earlier of its own and its parent's deadline: its own, or the
    /// one of the ancestor it inherits it from ([`Node::deadline_owner`]),
    /// a step up for each node that inherits it: one for a task's context
    /// under a deadline, as many as a chain made under one.
    fn full_deadline(&self) -> Option<Deadline> {
        let mut node = self;
        while node.inherits_deadline {
            // Kept: an inheriting node's parent is cancellable.
            let parent = node.parent.as_deref();
            debug_assert!(
                parent.is_some(),
                "a node that inherits a deadline keeps its parent"
            );
            node = parent?;
        }
        node.rare.get()?.deadline
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.full_deadline().map(|deadline| deadline.at)
    }

    /// Whether a waiter polled on the runtime `here` should arm a timer of
    /// its own for this node's deadline: the task that serves it runs on
    /// another runtime, which may be gone or never driven. No lock: the
    /// deadline is fixed at creation.
    pub(crate) fn deadline_served_elsewhere(&self, here: runtime::Id) -> bool {
        self.full_deadline()
            .is_some_and(|deadline| deadline.served_on != here)
    }

    /// The `Notify` to wait on for the cancellation. Call before looking
    /// at the state.
    pub(crate) fn notify(self: &Arc<Self>) -> &Notify {
        // Invariant 10: a waiter must be reachable by the parent's walk.
        self.link_deferred();
        // Invariant 8: either the canceller's or in `set_state` finds
        // `AWAITED`, or this or comes after it and the caller's later look
        // at `state` sees it set. An or every time, even when `AWAITED` is
        // set already: a waiter woken (and so re-armed) must see the state
        // the canceller set before waking it, and a read-modify-write reads
        // the latest.
        self.state.fetch_or(AWAITED, Ordering::AcqRel);
        &self.notify
    }

    /// This node's own value, if it is a `T` (not an ancestor's).
    pub(crate) fn own_value<T: Any>(&self) -> Option<&T> {
        let (type_id, value) = self.rare.get()?.value.as_ref()?;
        if *type_id != TypeId::of::<T>() {
            return None;
        }
        value.downcast_ref::<T>()
    }

    /// Whether this node has a value of its own.
    fn has_own_value(&self) -> bool {
        self.rare.get().is_some_and(|rare| rare.value.is_some())
    }

    /// The parent whose cancel reaches this node, if any.
    pub(crate) fn cancel_parent(&self) -> Option<&Arc<Node>> {
        self.parent.as_ref().filter(|_| self.inherits)
    }

    /// The nearest value of type `T`, from this node up.
    pub(crate) fn value<T: Any>(&self) -> Option<&T> {
        let mut node = self;
        loop {
            if !node.has_values {
                return None;
            }
            if let Some(value) = node.own_value::<T>() {
                return Some(value);
            }
            node = node.parent.as_deref()?;
        }
    }

    /// Stores the abort handle of this node's deadline timer, or aborts it at
    /// once if the node was cancelled in the meantime.
    pub(crate) fn set_timer(self: &Arc<Self>, timer: AbortHandle) {
        self.link_deferred();
        let mut inner = lock(&self.inner);
        if self.is_cancelled() {
            timer.abort();
        } else {
            self.extras(&mut inner).timer = Some(timer);
        }
    }

    /// The node whose own deadline this node's is: itself, or the highest
    /// ancestor it inherited it from. Only that node has a timer task (a
    /// deadline is served only where it is earlier than the parent's), and
    /// expiring it expires everything that shares the deadline.
    pub(crate) fn deadline_owner(node: &Arc<Node>) -> &Arc<Node> {
        let mut owner = node;
        while owner.inherits_deadline
            && let Some(parent) = &owner.parent
        {
            owner = parent;
        }
        owner
    }

    /// Registers an after-cancel callback. Returns its key, or `None` when
    /// the callback was not stored: it was started at once (the node is
    /// cancelled) or the node can never be cancelled (it never runs).
    pub(crate) fn register(self: &Arc<Self>, callback: &Arc<Callback>) -> Option<usize> {
        if !self.cancellable {
            return None;
        }
        self.link_deferred();
        let mut inner = lock(&self.inner);
        if self.abandoned.load(Ordering::Relaxed) {
            return None;
        }
        if self.is_cancelled() {
            drop(inner);
            callback.fire();
            return None;
        }
        Some(self.extras(&mut inner).callbacks.insert(callback.clone()))
    }

    /// The node's handle was given up without cancelling. If nothing else
    /// can cancel it (no deadline, no cancellable ancestor), its after-cancel
    /// callbacks can never run: drop them now (outside the lock: they are
    /// user code), and refuse new ones, so a callback that holds its own
    /// context does not keep both alive forever.
    pub(crate) fn disarmed(&self) {
        if self.inherits || self.has_deadline() {
            return;
        }
        let mut inner = lock(&self.inner);
        let hook = inner
            .extras
            .as_ref()
            .is_some_and(|extras| extras.hook.is_some());
        if hook || self.is_cancelled() {
            return;
        }
        self.abandoned.store(true, Ordering::Relaxed);
        let callbacks = inner
            .extras
            .as_mut()
            .map(|extras| (std::mem::take(&mut extras.callbacks), extras.token.take()));
        drop(inner);
        drop(callbacks);
    }

    /// The token cancelled with this node: a fresh never-cancelled one,
    /// kept nowhere, when the node can never be cancelled; a cancelled one
    /// when it already is; else the node's own, made on first use and
    /// cancelled by [`Taken::finish`]. `token` is the one to keep, if the
    /// node has none yet (`with_token`'s watcher stop), else a new one.
    pub(crate) fn token(self: &Arc<Self>, token: Option<CancellationToken>) -> CancellationToken {
        if !self.cancellable {
            return token.unwrap_or_default();
        }
        self.link_deferred();
        // Under `inner`: the canceller sets the state and takes the extras
        // under it too, so a token stored here is always cancelled.
        let mut inner = lock(&self.inner);
        if self.abandoned.load(Ordering::Relaxed) {
            return token.unwrap_or_default();
        }
        if self.is_cancelled() {
            drop(inner);
            let token = token.unwrap_or_default();
            token.cancel();
            return token;
        }
        self.extras(&mut inner)
            .token
            .get_or_insert_with(|| token.unwrap_or_default())
            .clone()
    }

    /// Forgets a registration made by [`Node::register`]. A no-op once the
    /// node was cancelled (the canceller took them all).
    ///
    /// The last registration out of a slab grown past [`SLAB_KEPT`]
    /// entries frees it, as [`Node::unlink`] does for children.
    pub(crate) fn unregister(&self, key: usize) {
        let mut inner = lock(&self.inner);
        let mut emptied = None;
        let removed = inner.extras.as_mut().and_then(|extras| {
            let removed = extras.callbacks.try_remove(key);
            if extras.callbacks.is_empty() && extras.callbacks.capacity() > SLAB_KEPT {
                emptied = Some(std::mem::take(&mut extras.callbacks));
            }
            removed
        });
        drop(inner);
        // Outside the lock: the `Arc<Callback>` removed may be the last
        // (its closure was taken by `stop`), and the emptied slab holds only
        // vacant entries.
        drop(removed);
        drop(emptied);
    }

    /// Sets this node's state and takes what hangs off it: its live
    /// children go on `children`, marked as taken out by walk number
    /// `walk` (invariant 7), the rest is returned for [`Taken::finish`].
    /// `None` if the node was already cancelled. Must be called under the
    /// stripe lock (invariant 1), as walk number `walk` of the stripe.
    fn cancel_one(
        &self,
        cancellation: &Cancellation,
        walk: usize,
        children: &mut Vec<Arc<Node>>,
    ) -> Option<Taken> {
        let mut inner = lock(&self.inner);
        let wake = self.set_state(&mut inner, cancellation, false)?;
        let first = inner.first.take();
        let mut extras = inner.extras.take();
        drop(inner);
        let slab = extras
            .as_mut()
            .map(|extras| std::mem::take(&mut extras.children));
        let linked = first
            .into_iter()
            .chain(slab.into_iter().flatten().map(|(_, weak)| weak));
        for weak in linked {
            if let Some(child) = weak.upgrade() {
                // Invariant 6: the slab it was in is gone; its drop need
                // not come back to the lock. Written before its state, for
                // `is_settled` (invariant 7).
                child.slot.store(WALKED | walk, Ordering::Relaxed);
                children.push(child);
            }
        }
        Some(self.taken(extras, wake))
    }

    /// What is left to do for a node just cancelled. Extras with nothing
    /// to finish (only emptied slabs: no user code) are dropped here.
    fn taken(&self, mut extras: Option<Box<Extras>>, wake: bool) -> Taken {
        let hook = extras.as_mut().and_then(|extras| extras.hook.take());
        Taken {
            extras: extras.filter(|extras| {
                extras.timer.is_some() || extras.token.is_some() || !extras.callbacks.is_empty()
            }),
            hook: hook.as_ref().and_then(Weak::upgrade),
            wake,
        }
    }

    /// Cancels a node that has no children, without the stripe lock:
    /// `None` if it has children or is already cancelled (then only the
    /// stripe lock can tell that its walk is over). Under its own `inner`
    /// lock, so no child can link meanwhile (invariant 3), and with no
    /// subtree there is no walk to wait for (invariant 5).
    fn cancel_leaf(&self, cancellation: &Cancellation) -> Option<Taken> {
        let mut inner = lock(&self.inner);
        // Already set: a walker may have taken the children and still be
        // on its way down; the stripe lock waits for it. Unset with no
        // children, under this lock: nothing can link, and a walker sets the
        // state and takes the children under this lock too.
        if inner.has_children() || self.own_error() {
            return None;
        }
        // No children: settled as it is set (invariant 7).
        let wake = self.set_state(&mut inner, cancellation, true)?;
        let extras = inner.extras.take();
        drop(inner);
        Some(self.taken(extras, wake))
    }

    /// Unlinks this node from its parent. Invariant 6. Called only while
    /// the node is being dropped: no other reference exists, and the last
    /// one's release ordered any canceller's write of `slot` before this
    /// read, so a node its parent's canceller already unlinked skips the
    /// parent's lock.
    ///
    /// The last child out of a slab grown past [`SLAB_KEPT`] entries frees
    /// it: a long-lived parent that once held many children at once must
    /// not keep their peak for as long as it lives.
    fn unlink(&self) {
        if self.slot.load(Ordering::Relaxed) >= WALKED {
            return;
        }
        if let Some(parent) = &self.parent {
            let mut inner = lock(&parent.inner);
            let slot = self.slot.swap(UNLINKED, Ordering::Relaxed);
            let mut emptied = None;
            if slot == FIRST {
                // Invariant 6: `first` is this node's, unless a walker took
                // it (nothing links to a cancelled node).
                inner.first = None;
            } else if slot < WALKED
                && let Some(extras) = &mut inner.extras
            {
                extras.children.try_remove(slot);
                if extras.children.is_empty() && extras.children.capacity() > SLAB_KEPT {
                    emptied = Some(std::mem::take(&mut extras.children));
                }
            }
            drop(inner);
            // Only vacant entries: no node is dropped here.
            drop(emptied);
        }
    }
}

/// The most entries an empty children or callbacks slab keeps: enough for
/// a node whose children (registrations) come and go a few at a time to
/// reuse it without reallocating.
const SLAB_KEPT: usize = 64;

/// What a cancelled node leaves to do once the stripe lock is released.
struct Taken {
    /// Only extras with something to finish: a timer, a token or
    /// callbacks.
    extras: Option<Box<Extras>>,
    hook: Option<Arc<dyn CancelHook>>,
    /// Someone may wait on the node's `Notify`.
    wake: bool,
}

impl Taken {
    /// Whether there is nothing to finish: the walk need not keep the
    /// node for it.
    fn is_empty(&self) -> bool {
        self.extras.is_none() && self.hook.is_none() && !self.wake
    }

    /// Aborts the node's timer, runs its hook, wakes its waiters, starts
    /// its callbacks. Each step that can run user code is caught on its
    /// own, so a panic in one never skips the others; the first is kept in
    /// `panics`.
    fn finish(self, node: &Node, panics: &mut FirstPanic) {
        let mut extras = self.extras;
        if let Some(timer) = extras.as_mut().and_then(|extras| extras.timer.take()) {
            timer.abort();
        }
        // The hook first: a task group aborts its tasks before they are
        // woken, so a task woken by the cancel is never polled again.
        if let Some(hook) = self.hook {
            panics.catch(|| hook.on_cancel());
            // The group may have been dropped meanwhile: ours may be the
            // last reference, and its tasks' destructors run here.
            panics.catch(move || drop(hook));
        }
        if let Some(token) = extras.as_mut().and_then(|extras| extras.token.take()) {
            panics.catch(move || token.cancel());
        }
        if self.wake {
            panics.catch(|| node.notify.notify_waiters());
        }
        let Some(mut extras) = extras else {
            return;
        };
        for (_, callback) in std::mem::take(&mut extras.callbacks) {
            // On a runtime that has shut down, `fire` drops the closure here.
            panics.catch(move || callback.fire());
        }
        // Only emptied slabs are left.
        drop(extras);
    }
}

/// Lets go of a node the walk holds, under the stripe lock: if the walk's
/// reference is the last, the node is kept in `last` to be dropped once the
/// lock is released (its drop may run a user value's destructor).
fn release(node: Arc<Node>, last: &mut Vec<Node>) {
    if let Some(node) = Arc::into_inner(node) {
        last.push(node);
    }
}

/// The first panic caught while finishing a walk, resumed once every node
/// is finished. Later ones are dropped.
#[derive(Default)]
struct FirstPanic(Option<Box<dyn Any + Send>>);

impl FirstPanic {
    /// Runs `f` (it may run user code), keeping its panic if it is the
    /// first.
    fn catch(&mut self, f: impl FnOnce()) {
        let Err(payload) = catch_unwind(AssertUnwindSafe(f)) else {
            return;
        };
        if self.0.is_none() {
            self.0 = Some(payload);
        } else if let Err(nested) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            // A payload whose destructor panics: leak it rather than abort.
            std::mem::forget(nested);
        }
    }

    fn resume(self) {
        if let Some(payload) = self.0 {
            resume_unwind(payload);
        }
    }
}

/// Cancels `node` and its whole subtree with `cancellation`, unless it is
/// already cancelled. Returns `true` if this call cancelled it.
///
/// By invariant 5, every descendant reports the cancellation when this
/// returns. Wake-ups, callbacks and hooks run after the stripe lock is
/// released but before this returns.
/// Whether nobody but the caller, who holds `node`'s only strong
/// reference and is about to drop it, could ever see it cancelled
/// (invariant 9): a dropped handle need not cancel it then.
pub(crate) fn is_unobserved(node: &Arc<Node>) -> bool {
    if Arc::strong_count(node) != 1 {
        return false;
    }
    // The count read the release decrement of the reference dropped last:
    // what its holder attached before is visible from here.
    std::sync::atomic::fence(Ordering::Acquire);
    node.state.load(Ordering::Relaxed) & ATTACHED == 0
}

pub(crate) fn cancel(node: &Arc<Node>, cancellation: Cancellation) -> bool {
    if !node.cancellable {
        // Nothing can observe a change: it has no handle, no deadline and no
        // cancellable ancestor, so nothing calls this for it but owners that
        // never made it cancellable.
        return false;
    }
    if node.is_settled() {
        // Invariant 7: its whole subtree is cancelled already; a dropped
        // handle of a context cancelled through its parent ends here.
        return false;
    }
    if let Some(taken) = node.cancel_leaf(&cancellation) {
        if taken.is_empty() {
            return true;
        }
        let mut panics = FirstPanic::default();
        taken.finish(node, &mut panics);
        panics.resume();
        return true;
    }
    // Nodes to visit; nodes with something left to finish; nodes whose
    // last reference the walk held.
    let mut pending = Vec::new();
    let mut cancelled = Vec::new();
    let mut last = Vec::new();
    let root = {
        let stripe = stripe(node.stripe);
        let _stripe = lock(&stripe.lock);
        // Only walks write it, under this lock.
        let walk = stripe.walks.load(Ordering::Relaxed) + 1;
        let root = node.cancel_one(&cancellation, walk, &mut pending);
        while let Some(child) = pending.pop() {
            // A child already cancelled had its own subtree walked then.
            match child.cancel_one(&cancellation, walk, &mut pending) {
                // A node with a value is kept too, as every node once was:
                // if the walk's reference turns out to be the last, the
                // value's destructor runs after every hook, as it did.
                Some(taken) if !taken.is_empty() || child.has_own_value() => {
                    cancelled.push((child, taken));
                }
                _ => release(child, &mut last),
            }
        }
        // Invariant 7: every node this walk took out is settled now.
        stripe.walks.store(walk, Ordering::Release);
        root
    };
    let this_call = root.is_some();
    // Outside the stripe lock: this runs hooks, starts callbacks (on a
    // runtime that has shut down, that drops the closure here, and it may
    // own a `CancelHandle`), and the last reference to a child (and so a
    // user value's destructor) may go here.
    // Every node is finished even if user code panics in one (a callback's
    // destructor, when its runtime has shut down; a value's destructor,
    // when the walk held the last reference to its node): a skipped node
    // would leave its waiters and its group's tasks hanging. The first
    // panic is resumed at the end.
    let mut panics = FirstPanic::default();
    if let Some(taken) = root {
        // Invariant 7: the walk is over, the stripe lock released.
        node.settle();
        taken.finish(node, &mut panics);
    }
    for (node, taken) in cancelled {
        taken.finish(&node, &mut panics);
        panics.catch(move || drop(node));
    }
    for node in last {
        panics.catch(move || drop(node));
    }
    panics.resume();
    this_call
}

impl Drop for Node {
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(timer) = inner.extras.as_mut().and_then(|extras| extras.timer.take()) {
            timer.abort();
        }
        self.unlink();
        // Drop the chain of parents iteratively: a million nested contexts
        // must not recurse a million frames deep. A parent whose last
        // reference is ours is unlinked here and dropped with no parent of
        // its own, so its own `drop` does not recurse.
        let mut next = self.parent.take();
        while let Some(parent) = next {
            match Arc::into_inner(parent) {
                Some(mut node) => {
                    node.unlink();
                    next = node.parent.take();
                }
                None => break,
            }
        }
    }
}

#[cfg(all(test, not(loom), target_os = "linux", target_pointer_width = "64"))]
mod layout {
    use super::Node;

    /// A plain node stays small (issue 31): what few nodes have is out of
    /// line, in `Rare`.
    #[test]
    fn a_plain_node_is_112_bytes() {
        assert!(size_of::<Node>() <= 112, "{}", size_of::<Node>());
    }
}
