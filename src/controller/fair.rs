//! Fair sharing of a kind's reconcile workers among namespaces (tenants).
//!
//! kube-runtime's controller has one work queue for every namespace: a namespace with 10,000
//! occurrences due in a minute would hold every worker until they are all out, and another
//! namespace's occurrences of that minute would wait behind them. A [`FairGate`] holds the
//! workers instead: a due object that finds none free waits in its namespace's queue (first
//! come, first served within it), and a worker given back goes to the next namespace in turn,
//! so a namespace with a few waiting is served within a few workers however long another's
//! queue is.
//!
//! What waits is the object's name, not a task: after a restart or in a burst every object of
//! the kind may wait at once (100,000 of them), and a parked task cost about 950 bytes each
//! where a name costs a few dozen. The dispatch loop (`dispatch`) asks the gate with
//! [`FairGate::enter`] and starts a reconcile's task only when a worker is its.
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

mod publish;
#[cfg(test)]
mod tests;

pub(crate) use publish::publish_waiting;

/// N workers shared among namespaces in turn; see the module documentation.
#[derive(Debug)]
pub struct FairGate {
    state: Mutex<State>,
    /// Signalled when the number of waiters changes or the gate closes (for the metric).
    changed: Notify,
}

/// What [`FairGate::enter`] decided for a due object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A worker was free: it is the object's until given back with [`FairGate::release`].
    Run,
    /// Every worker is busy: the object waits in its namespace's queue, and a later
    /// [`FairGate::release`] hands it a worker.
    Queued,
    /// The gate is closed (the operator is shutting down): nothing more runs.
    Closed,
}

/// A waiting object handed a worker by [`FairGate::release`].
#[derive(Debug, PartialEq, Eq)]
pub struct Turn {
    pub namespace: Arc<str>,
    pub name: Box<str>,
    /// How long it waited for the worker.
    pub waited: Duration,
}

#[derive(Debug)]
struct State {
    /// Workers nobody holds. Invariant: while any is free nobody waits (a worker given back
    /// goes straight to a waiter), so a newcomer never passes those already waiting.
    free: usize,
    /// Per namespace its waiting objects by arrival: only namespaces with waiters.
    queues: HashMap<Arc<str>, VecDeque<(Box<str>, Instant)>>,
    /// The namespaces with waiters, in the order they are served next; each exactly once.
    turn: VecDeque<Arc<str>>,
    waiting: usize,
    closed: bool,
}

impl FairGate {
    /// A gate of `workers` workers (at least one).
    pub fn new(workers: usize) -> Self {
        FairGate {
            state: Mutex::new(State {
                free: workers.max(1),
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

    /// Object `name` of `namespace` is due: it runs now if a worker is free, else it waits in
    /// turn. The caller asks once per object until that object's run ends (the gate does not
    /// look for the same name twice).
    pub fn enter(&self, namespace: &str, name: &str) -> Entry {
        let mut state = self.lock();
        if state.closed {
            return Entry::Closed;
        }
        if state.free > 0 {
            state.free -= 1;
            return Entry::Run;
        }
        let queue = match state.queues.get_key_value(namespace) {
            Some((key, _)) => key.clone(),
            None => {
                let key: Arc<str> = Arc::from(namespace);
                state.turn.push_back(key.clone());
                key
            }
        };
        state
            .queues
            .entry(queue)
            .or_default()
            .push_back((Box::from(name), Instant::now()));
        state.waiting += 1;
        self.changed.notify_one();
        Entry::Queued
    }

    /// A worker is given back: the next waiting object in turn, which now holds it, or `None`
    /// when nobody waits (the worker is free).
    pub fn release(&self) -> Option<Turn> {
        let mut state = self.lock();
        let turn = state.next_waiter();
        match &turn {
            Some(_) => self.changed.notify_one(),
            None => state.free += 1,
        }
        turn
    }

    /// Closes the gate: the waiting objects are dropped and every later [`FairGate::enter`]
    /// says [`Entry::Closed`]; workers held stay held until given back.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
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

    /// Workers free now.
    pub fn available(&self) -> usize {
        self.lock().free
    }

    /// Resolves once the waiters may have changed since the last call (one call at a time).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

impl State {
    /// Takes the first waiter of the namespace whose turn it is, and moves that namespace to
    /// the back of the turn if it still has waiters.
    fn next_waiter(&mut self) -> Option<Turn> {
        while let Some(namespace) = self.turn.pop_front() {
            let Some(queue) = self.queues.get_mut(&namespace) else {
                continue;
            };
            let Some((name, since)) = queue.pop_front() else {
                self.queues.remove(&namespace);
                continue;
            };
            self.waiting = self.waiting.saturating_sub(1);
            if queue.is_empty() {
                self.queues.remove(&namespace);
            } else {
                self.turn.push_back(namespace.clone());
            }
            return Some(Turn {
                namespace,
                name,
                waited: since.elapsed(),
            });
        }
        None
    }
}

/// One gate per kind, each of `workers` workers, made when a kind first asks; or none at all
/// when fair queueing is off (kube-runtime's own shared queue then bounds concurrency).
#[derive(Debug)]
pub(crate) struct WorkQueues {
    workers: usize,
    enabled: bool,
    gates: Mutex<HashMap<&'static str, Arc<FairGate>>>,
}

impl WorkQueues {
    pub(crate) fn new(workers: usize, enabled: bool) -> Self {
        WorkQueues {
            workers,
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
                .or_insert_with(|| Arc::new(FairGate::new(self.workers)))
                .clone(),
        )
    }
}
