//! Model-based test of the cancellation tree: proptest builds random trees
//! of contexts from random operations, on a current-thread runtime with
//! paused time, and after every step checks what every node says —
//! `err()`, `cause()`, `deadline()`, `value()`, `done()`, its handle's
//! `is_cancelled()` and its `after_cancel` callbacks — against a small pure
//! model.
//!
//! The model: each node knows its parent link (attached, detached by
//! `without_cancel`, or none for the root), its own deadline and its own
//! cancellation (when, with which error and cause). A node's effective
//! cancellation is the earliest own cancellation along the path from it up
//! to the nearest detach point; its deadline is the minimum of the own
//! deadlines along the same path. A cancel reaching a node already
//! cancelled (on that path) changes nothing.
//!
//! A failing case shrinks to a short list of operations whose node numbers
//! are creation indexes (node 0 is `Context::background()`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use futures::FutureExt as _;
use proptest::prelude::*;
use taskgroup::{AfterCancel, CancelHandle, Context, ContextError};
use tokio::time::Instant;

mod support;
use support::yields;

/// Cases per property: each is up to 40 operations, checked on every node
/// after each one.
const CASES: u32 = 1_000;

/// A cause given to `cancel_with`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("model cause {0}")]
struct ModelCause(u8);

/// The value a `with_value` node carries: its node number.
#[derive(Debug, PartialEq)]
struct NodeValue(usize);

/// One step. Node numbers are taken modulo the number of nodes so far.
#[derive(Debug, Clone)]
enum Op {
    WithCancel(usize),
    /// `with_timeout(ms)`, or `Duration::MAX` for `None`.
    WithTimeout(usize, Option<u64>),
    /// `with_deadline(now + ms)`; negative: in the past.
    WithDeadline(usize, i64),
    WithValue(usize),
    WithoutCancel(usize),
    Cancel(usize),
    CancelWith(usize, u8),
    /// Drops the node's handle: cancels it.
    DropHandle(usize),
    Disarm(usize),
    /// Drops the test's `Context` of the node (its handle stays).
    DropContext(usize),
    AfterCancel(usize),
    /// Stops the n-th `after_cancel` registration.
    Stop(usize),
    /// Advances paused time by this many milliseconds.
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let node = 0..12usize;
    prop_oneof![
        3 => node.clone().prop_map(Op::WithCancel),
        2 => (node.clone(), prop_oneof![4 => (0..60u64).prop_map(Some), 1 => Just(None)])
            .prop_map(|(n, ms)| Op::WithTimeout(n, ms)),
        2 => (node.clone(), -20..60i64).prop_map(|(n, ms)| Op::WithDeadline(n, ms)),
        2 => node.clone().prop_map(Op::WithValue),
        1 => node.clone().prop_map(Op::WithoutCancel),
        2 => node.clone().prop_map(Op::Cancel),
        2 => (node.clone(), 0..4u8).prop_map(|(n, c)| Op::CancelWith(n, c)),
        1 => node.clone().prop_map(Op::DropHandle),
        1 => node.clone().prop_map(Op::Disarm),
        1 => node.clone().prop_map(Op::DropContext),
        1 => node.clone().prop_map(Op::AfterCancel),
        1 => (0..6usize).prop_map(Op::Stop),
        3 => (0..40u64).prop_map(Op::Advance),
    ]
}

// ---------------------------------------------------------------------------
// The model

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Root,
    Attached(usize),
    Detached(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelCauseKind {
    Context(ContextError),
    Given(u8),
}

/// An own cancellation: when (ms since the start, then step order), the
/// error and the cause.
#[derive(Debug, Clone, Copy)]
struct Event {
    at: (i64, u64),
    error: ContextError,
    cause: ModelCauseKind,
}

#[derive(Debug)]
struct ModelNode {
    link: Link,
    own_deadline: Option<i64>,
    own_cancel: Option<Event>,
    has_value: bool,
}

#[derive(Default)]
struct Model {
    nodes: Vec<ModelNode>,
    now: i64,
    seq: u64,
}

impl Model {
    /// The node and its ancestors up to the nearest detach point.
    fn path(&self, mut n: usize) -> Vec<usize> {
        let mut path = vec![n];
        while let Link::Attached(parent) = self.nodes[n].link {
            n = parent;
            path.push(n);
        }
        path
    }

    fn effective(&self, n: usize) -> Option<Event> {
        self.path(n)
            .into_iter()
            .filter_map(|m| self.nodes[m].own_cancel)
            .min_by_key(|event| event.at)
    }

    fn deadline(&self, n: usize) -> Option<i64> {
        self.path(n)
            .into_iter()
            .filter_map(|m| self.nodes[m].own_deadline)
            .min()
    }

    fn value(&self, mut n: usize) -> Option<usize> {
        loop {
            if self.nodes[n].has_value {
                return Some(n);
            }
            match self.nodes[n].link {
                Link::Root => return None,
                Link::Attached(p) | Link::Detached(p) => n = p,
            }
        }
    }

    /// Cancels `n` at `at` unless it is already cancelled.
    fn cancel(&mut self, n: usize, at: i64, error: ContextError, cause: ModelCauseKind) {
        if self.effective(n).is_some() {
            return;
        }
        self.seq += 1;
        self.nodes[n].own_cancel = Some(Event {
            at: (at, self.seq),
            error,
            cause,
        });
    }

    fn add(&mut self, link: Link, own_deadline: Option<i64>, has_value: bool) -> usize {
        self.nodes.push(ModelNode {
            link,
            own_deadline,
            own_cancel: None,
            has_value,
        });
        let n = self.nodes.len() - 1;
        // A deadline at or before now: born expired (unless the parent
        // already ended it).
        if own_deadline.is_some_and(|d| d <= self.now) {
            self.cancel(
                n,
                self.now,
                ContextError::DeadlineExceeded,
                ModelCauseKind::Context(ContextError::DeadlineExceeded),
            );
        }
        n
    }

    /// Moves time forward, firing own deadlines in time order.
    fn advance(&mut self, ms: i64) {
        let until = self.now + ms;
        let mut due: Vec<(i64, usize)> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(n, node)| node.own_deadline.map(|d| (d, n)))
            .filter(|&(d, _)| d > self.now && d <= until)
            .collect();
        due.sort();
        for (d, n) in due {
            self.cancel(
                n,
                d,
                ContextError::DeadlineExceeded,
                ModelCauseKind::Context(ContextError::DeadlineExceeded),
            );
        }
        self.now = until;
    }
}

// ---------------------------------------------------------------------------
// The real thing, driven beside the model

struct Real {
    /// `None` once the test dropped it.
    ctx: Option<Context>,
    handle: Option<CancelHandle>,
}

struct Registration {
    node: usize,
    reg: AfterCancel,
    runs: Arc<AtomicUsize>,
    stopped: bool,
}

fn observed_cause(ctx: &Context) -> Option<ModelCauseKind> {
    let cause = ctx.cause()?;
    if let Some(given) = cause.downcast_ref::<ModelCause>() {
        return Some(ModelCauseKind::Given(given.0));
    }
    let error = cause
        .downcast_ref::<ContextError>()
        .expect("a cause is ours or a ContextError");
    Some(ModelCauseKind::Context(*error))
}

/// Scheduler turns that let timer tasks and `after_cancel` callbacks run
/// (`yields(SETTLE)`).
const SETTLE: u64 = 8;

async fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let start = Instant::now();
    let at = |ms: i64| {
        if ms >= 0 {
            start + Duration::from_millis(ms as u64)
        } else {
            start - Duration::from_millis(ms.unsigned_abs())
        }
    };
    let mut model = Model::default();
    model.add(Link::Root, None, false);
    let mut real = vec![Real {
        ctx: Some(Context::background()),
        handle: None,
    }];
    let mut regs: Vec<Registration> = Vec::new();

    for (step, op) in ops.into_iter().enumerate() {
        let len = real.len();
        let pick = |n: usize| n % len;
        match op {
            Op::WithCancel(p) | Op::WithTimeout(p, _) | Op::WithDeadline(p, _) => {
                let p = pick(p);
                let Some(parent) = real[p].ctx.clone() else {
                    continue;
                };
                let (ctx, handle, own_deadline) = match op {
                    Op::WithCancel(_) => {
                        let (ctx, handle) = parent.with_cancel();
                        (ctx, handle, None)
                    }
                    Op::WithTimeout(_, Some(ms)) => {
                        let (ctx, handle) = parent.with_timeout(Duration::from_millis(ms));
                        (ctx, handle, Some(model.now + ms as i64))
                    }
                    Op::WithTimeout(_, None) => {
                        let (ctx, handle) = parent.with_timeout(Duration::MAX);
                        (ctx, handle, None)
                    }
                    Op::WithDeadline(_, ms) => {
                        let (ctx, handle) = parent.with_deadline(at(model.now + ms));
                        (ctx, handle, Some(model.now + ms))
                    }
                    _ => unreachable!(),
                };
                model.add(Link::Attached(p), own_deadline, false);
                real.push(Real {
                    ctx: Some(ctx),
                    handle: Some(handle),
                });
            }
            Op::WithValue(p) => {
                let p = pick(p);
                let Some(parent) = &real[p].ctx else { continue };
                let n = model.add(Link::Attached(p), None, true);
                let ctx = parent.with_value(NodeValue(n));
                real.push(Real {
                    ctx: Some(ctx),
                    handle: None,
                });
            }
            Op::WithoutCancel(p) => {
                let p = pick(p);
                let Some(parent) = &real[p].ctx else { continue };
                let ctx = parent.without_cancel();
                model.add(Link::Detached(p), None, false);
                real.push(Real {
                    ctx: Some(ctx),
                    handle: None,
                });
            }
            Op::Cancel(n) | Op::CancelWith(n, _) | Op::DropHandle(n) => {
                let n = pick(n);
                let Some(handle) = &real[n].handle else {
                    continue;
                };
                let cause = match op {
                    Op::CancelWith(_, c) => {
                        handle.cancel_with(ModelCause(c));
                        ModelCauseKind::Given(c)
                    }
                    Op::Cancel(_) => {
                        handle.cancel();
                        ModelCauseKind::Context(ContextError::Cancelled)
                    }
                    _ => {
                        drop(real[n].handle.take());
                        ModelCauseKind::Context(ContextError::Cancelled)
                    }
                };
                model.cancel(n, model.now, ContextError::Cancelled, cause);
            }
            Op::Disarm(n) => {
                if let Some(handle) = real[pick(n)].handle.take() {
                    handle.disarm();
                }
            }
            Op::DropContext(n) => {
                let n = pick(n);
                // Node 0 stays: the root every tree grows from.
                if n != 0 {
                    real[n].ctx = None;
                }
            }
            Op::AfterCancel(n) => {
                let n = pick(n);
                let Some(ctx) = &real[n].ctx else { continue };
                let runs = Arc::new(AtomicUsize::new(0));
                let reg = ctx.after_cancel({
                    let runs = runs.clone();
                    move || {
                        runs.fetch_add(1, SeqCst);
                    }
                });
                regs.push(Registration {
                    node: n,
                    reg,
                    runs,
                    stopped: false,
                });
            }
            Op::Stop(r) => {
                if regs.is_empty() {
                    continue;
                }
                let r = r % regs.len();
                let registration = &mut regs[r];
                let prevented = registration.reg.stop();
                let cancelled = model.effective(registration.node).is_some();
                // Every earlier step settled: a cancelled node's callback has
                // started, so stop prevents it only while the node is live
                // (or was stopped already: then nothing is left to prevent).
                prop_assert_eq!(
                    prevented,
                    !cancelled && !registration.stopped,
                    "step {}: stop() on a registration of node {}",
                    step,
                    registration.node
                );
                registration.stopped = true;
            }
            Op::Advance(ms) => {
                tokio::time::advance(Duration::from_millis(ms)).await;
                model.advance(ms as i64);
            }
        }
        yields(SETTLE).await;
        check(&model, &real, &regs, step, at)?;
    }
    Ok(())
}

fn check(
    model: &Model,
    real: &[Real],
    regs: &[Registration],
    step: usize,
    at: impl Fn(i64) -> Instant,
) -> Result<(), TestCaseError> {
    for (n, node) in real.iter().enumerate() {
        let expected = model.effective(n);
        if let Some(handle) = &node.handle {
            prop_assert_eq!(
                handle.is_cancelled(),
                expected.is_some(),
                "step {}: node {} handle",
                step,
                n
            );
        }
        let Some(ctx) = &node.ctx else { continue };
        prop_assert_eq!(
            ctx.err(),
            expected.map(|e| e.error),
            "step {}: node {} err()",
            step,
            n
        );
        prop_assert_eq!(ctx.is_cancelled(), expected.is_some());
        prop_assert_eq!(
            observed_cause(ctx),
            expected.map(|e| e.cause),
            "step {}: node {} cause()",
            step,
            n
        );
        prop_assert_eq!(
            ctx.deadline(),
            model.deadline(n).map(&at),
            "step {}: node {} deadline()",
            step,
            n
        );
        prop_assert_eq!(
            ctx.value::<NodeValue>().map(|v| v.0),
            model.value(n),
            "step {}: node {} value()",
            step,
            n
        );
        prop_assert_eq!(
            ctx.done().now_or_never().is_some(),
            expected.is_some(),
            "step {}: node {} done()",
            step,
            n
        );
    }
    for registration in regs {
        let runs = registration.runs.load(SeqCst);
        let n = registration.node;
        let cancelled = model.effective(n).is_some();
        prop_assert!(
            runs <= 1,
            "step {}: a callback of node {} ran twice",
            step,
            n
        );
        if !cancelled {
            prop_assert_eq!(runs, 0, "step {}: node {} live, callback ran", step, n);
        } else if !registration.stopped && real[n].ctx.is_some() {
            // A node the test still holds: its cancel started the callback,
            // which has run since.
            prop_assert_eq!(runs, 1, "step {}: node {} cancelled, callback", step, n);
        }
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(run_case(ops))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        ..ProptestConfig::default()
    })]

    /// Every node of a random tree says what the model says, after every
    /// step.
    #[test]
    fn random_trees_match_the_model(ops in prop::collection::vec(op(), 1..40)) {
        run(ops)?;
    }
}

// ---------------------------------------------------------------------------
// Cases the model found or that pin down its trickiest rules, kept as plain
// tests so they run whatever proptest draws.

#[test]
fn model_child_cancelled_before_parent_deadline_keeps_its_own_cause() {
    run(vec![
        Op::WithTimeout(0, Some(10)),
        Op::WithCancel(1),
        Op::CancelWith(2, 3),
        Op::Advance(10),
    ])
    .unwrap();
}

#[test]
fn model_detached_subtree_keeps_values_and_its_own_deadlines() {
    run(vec![
        Op::WithValue(0),
        Op::WithTimeout(1, Some(5)),
        Op::WithoutCancel(2),
        Op::WithDeadline(3, 20),
        Op::Advance(5),
        Op::Advance(15),
    ])
    .unwrap();
}

#[test]
fn model_past_deadline_under_cancelled_parent_keeps_the_parents_cause() {
    run(vec![
        Op::WithCancel(0),
        Op::CancelWith(1, 1),
        Op::WithDeadline(1, -5),
        Op::AfterCancel(2),
    ])
    .unwrap();
}
