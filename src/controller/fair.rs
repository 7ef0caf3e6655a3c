//! Fair sharing of a kind's reconcile workers among namespaces (tenants).
//!
//! kube-runtime's controller has one work queue for every namespace: a namespace with 10,000
//! occurrences due in a minute would hold every worker until they are all out, and another
//! namespace's occurrences of that minute would wait behind them. A [`FairGate`] holds the
//! workers instead: a reconcile waits for a [`Permit`] in its namespace's queue (first come,
//! first served within it), and a permit given back goes to the next namespace in turn, so a
//! namespace with a few waiting is served within a few permits however long another's queue is.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;

use tokio::sync::{Notify, oneshot};

mod publish;
#[cfg(test)]
mod tests;

pub(crate) use publish::publish_waiting;

/// The gate of a kind was closed (the operator is shutting down): nothing more is let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the work queue is closed: the operator is shutting down")]
pub struct Closed;

/// N permits shared among namespaces in turn; see the module documentation.
#[derive(Debug)]
pub struct FairGate {
    state: Mutex<State>,
    /// Signalled when the number of waiters changes or the gate closes (for the metric).
    changed: Notify,
}

#[derive(Debug)]
struct State {
    /// Permits nobody holds. Invariant: while any is free nobody waits (a permit given back
    /// goes straight to a waiter), so a newcomer never passes those already waiting.
    free: usize,
    next_id: u64,
    /// Per namespace its waiters by arrival (ids only grow): only namespaces with waiters.
    queues: HashMap<Arc<str>, BTreeMap<u64, oneshot::Sender<()>>>,
    /// The namespaces with waiters, in the order they are served next; each exactly once.
    turn: VecDeque<Arc<str>>,
    waiting: usize,
    closed: bool,
}

impl FairGate {
    /// A gate of `permits` permits (at least one).
    pub fn new(permits: usize) -> Self {
        FairGate {
            state: Mutex::new(State {
                free: permits.max(1),
                next_id: 0,
                queues: HashMap::new(),
                turn: VecDeque::new(),
                waiting: 0,
                closed: false,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update keeps the state whole between statements that cannot panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A permit for work of `namespace`: at once if one is free, else in turn. The place in
    /// the queue is taken now (not at the first poll); dropping the future gives it up.
    pub fn acquire(self: &Arc<Self>, namespace: &str) -> Acquire {
        let mut state = self.lock();
        let step = if state.closed {
            Step::Closed
        } else if state.free > 0 {
            state.free -= 1;
            Step::Granted
        } else {
            let namespace = match state.queues.get_key_value(namespace) {
                Some((key, _)) => key.clone(),
                None => {
                    let key: Arc<str> = Arc::from(namespace);
                    state.turn.push_back(key.clone());
                    key
                }
            };
            let (tx, rx) = oneshot::channel();
            let id = state.next_id;
            state.next_id += 1;
            state
                .queues
                .entry(namespace.clone())
                .or_default()
                .insert(id, tx);
            state.waiting += 1;
            self.changed.notify_one();
            Step::Waiting { namespace, id, rx }
        };
        Acquire {
            gate: self.clone(),
            step,
        }
    }

    /// Closes the gate: every waiter and every later [`FairGate::acquire`] fails with
    /// [`Closed`]; permits held stay valid until dropped.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        // Dropping the senders wakes their waiters with an error.
        state.queues.clear();
        state.turn.clear();
        state.waiting = 0;
        self.changed.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Waiters, all namespaces together.
    pub fn waiting(&self) -> usize {
        self.lock().waiting
    }

    /// Waiters per namespace, only namespaces with any.
    pub fn waiting_by_namespace(&self) -> Vec<(Arc<str>, usize)> {
        self.lock()
            .queues
            .iter()
            .map(|(namespace, queue)| (namespace.clone(), queue.len()))
            .collect()
    }

    /// Permits free now.
    pub fn available(&self) -> usize {
        self.lock().free
    }

    /// Resolves once the waiters may have changed since the last call (one call at a time).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// A permit is given back: the next waiter in turn gets it, else it is free.
    fn release(&self) {
        let mut state = self.lock();
        if state.hand_over() {
            self.changed.notify_one();
        }
    }
}

impl State {
    /// Gives one permit to the next waiter in turn, else marks it free; true when the waiters
    /// changed. A waiter whose future is gone is skipped: the permit goes to the one after it.
    fn hand_over(&mut self) -> bool {
        let mut handed = false;
        while let Some(tx) = self.next_waiter() {
            handed = true;
            if tx.send(()).is_ok() {
                return true;
            }
        }
        self.free += 1;
        handed
    }

    /// Takes the first waiter of the namespace whose turn it is, and moves that namespace to
    /// the back of the turn if it still has waiters.
    fn next_waiter(&mut self) -> Option<oneshot::Sender<()>> {
        while let Some(namespace) = self.turn.pop_front() {
            let Some(queue) = self.queues.get_mut(&namespace) else {
                continue;
            };
            let Some((_, tx)) = queue.pop_first() else {
                self.queues.remove(&namespace);
                continue;
            };
            self.waiting = self.waiting.saturating_sub(1);
            if queue.is_empty() {
                self.queues.remove(&namespace);
            } else {
                self.turn.push_back(namespace);
            }
            return Some(tx);
        }
        None
    }

    /// Removes waiter `id` of `namespace`; false when it is no longer queued (granted, or the
    /// gate closed).
    fn remove(&mut self, namespace: &Arc<str>, id: u64) -> bool {
        let Some(queue) = self.queues.get_mut(namespace) else {
            return false;
        };
        if queue.remove(&id).is_none() {
            return false;
        }
        self.waiting = self.waiting.saturating_sub(1);
        if queue.is_empty() {
            self.queues.remove(namespace);
            self.turn.retain(|n| n != namespace);
        }
        true
    }
}

/// Work may run while this is held; dropping it gives the permit to the next in turn.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<FairGate>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gate.release();
    }
}

/// The future of [`FairGate::acquire`]. Small (it is what 10,000 waiting reconciles hold) and
/// cancel-safe: dropped while queued it leaves the queue; dropped after a permit was handed to
/// it but before it was polled, it hands that permit on.
#[derive(Debug)]
pub struct Acquire {
    gate: Arc<FairGate>,
    step: Step,
}

#[derive(Debug)]
enum Step {
    /// A permit was free at once: this future holds it until polled.
    Granted,
    Waiting {
        namespace: Arc<str>,
        id: u64,
        rx: oneshot::Receiver<()>,
    },
    Closed,
    Done,
}

impl Future for Acquire {
    type Output = Result<Permit, Closed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let granted = match &mut this.step {
            Step::Granted => true,
            Step::Waiting { rx, .. } => match Pin::new(rx).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(received) => received.is_ok(),
            },
            // Polled again after it completed: there is nothing more to give.
            Step::Closed | Step::Done => false,
        };
        this.step = Step::Done;
        Poll::Ready(if granted {
            Ok(Permit {
                gate: this.gate.clone(),
            })
        } else {
            Err(Closed)
        })
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.step, Step::Done) {
            Step::Granted => self.gate.release(),
            Step::Waiting {
                namespace,
                id,
                mut rx,
            } => {
                let mut state = self.gate.lock();
                if state.remove(&namespace, id) {
                    self.gate.changed.notify_one();
                    return;
                }
                // No longer queued: either a permit was sent (it is ours to hand on) or the
                // gate closed. Closing the receiver first settles a send racing with this drop.
                rx.close();
                if rx.try_recv().is_ok() && state.hand_over() {
                    self.gate.changed.notify_one();
                }
            }
            Step::Closed | Step::Done => {}
        }
    }
}

/// One gate per kind, each of `permits` permits, made when a kind first asks; or none at all
/// when fair queueing is off (kube-runtime's own shared queue then bounds concurrency).
#[derive(Debug)]
pub(crate) struct WorkQueues {
    permits: usize,
    enabled: bool,
    gates: Mutex<HashMap<&'static str, Arc<FairGate>>>,
}

impl WorkQueues {
    pub(crate) fn new(permits: usize, enabled: bool) -> Self {
        WorkQueues {
            permits,
            enabled,
            gates: Mutex::new(HashMap::new()),
        }
    }

    /// The gate of `kind`, or `None` when fair queueing is off.
    pub(crate) fn for_kind(&self, kind: &'static str) -> Option<Arc<FairGate>> {
        if !self.enabled {
            return None;
        }
        let mut gates = self.gates.lock().unwrap_or_else(PoisonError::into_inner);
        Some(
            gates
                .entry(kind)
                .or_insert_with(|| Arc::new(FairGate::new(self.permits)))
                .clone(),
        )
    }
}
