//! `recur_work_queue_waiting{kind, namespace}`: reconciles waiting for a worker, per namespace.
//!
//! Published at most once a second while the queues change (a burst changes them thousands of
//! times a second; scrapes come every 15 s or more) and not at all while they stay as they are.
//! A namespace's series stays at 0 for [`LINGER`] after its last waiter left, then goes: removed
//! at once, it would vanish before a scrape saw it reach 0 (a graph would end on its last
//! non-zero value) and a namespace bursting every minute would churn a new series each time;
//! kept for ever, every namespace that ever waited would stay a series.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::FairGate;
use crate::metrics::Metrics;

/// How long a namespace's series stays at 0 before it is removed.
pub(crate) const LINGER: Duration = Duration::from_secs(600);
/// At most one publication per this interval.
const EVERY: Duration = Duration::from_secs(1);

/// Publishes the waiters of `gate` (kind `kind`) until the gate closes.
pub(crate) async fn publish_waiting(
    gate: Arc<FairGate>,
    metrics: Arc<Metrics>,
    kind: &'static str,
) {
    let mut series = Series::default();
    loop {
        match series.next_removal() {
            Some(at) => {
                let at = tokio::time::Instant::from_std(at);
                let _ = tokio::time::timeout_at(at, gate.changed()).await;
            }
            None => gate.changed().await,
        }
        let closed = gate.is_closed();
        for change in series.update(gate.waiting_by_namespace(), Instant::now()) {
            match change {
                Change::Set(namespace, n) => metrics.set_work_queue_waiting(kind, &namespace, n),
                Change::Remove(namespace) => metrics.remove_work_queue_waiting(kind, &namespace),
            }
        }
        if closed {
            return;
        }
        // Changes during the pause are not lost: `changed` then resolves at once.
        tokio::time::sleep(EVERY).await;
    }
}

/// A change to one namespace's series.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Set(Arc<str>, i64),
    Remove(Arc<str>),
}

/// The namespaces that have a series: `None` while they have waiters, else since when they have
/// had none.
#[derive(Debug, Default)]
pub(crate) struct Series {
    idle_since: HashMap<Arc<str>, Option<Instant>>,
}

impl Series {
    /// The changes that bring the series to `waiting` (namespaces with waiters) as of `now`.
    pub(crate) fn update(&mut self, waiting: Vec<(Arc<str>, usize)>, now: Instant) -> Vec<Change> {
        let mut changes = Vec::with_capacity(waiting.len());
        let busy: HashSet<Arc<str>> = waiting.iter().map(|(n, _)| n.clone()).collect();
        for (namespace, n) in waiting {
            changes.push(Change::Set(
                namespace.clone(),
                i64::try_from(n).unwrap_or(i64::MAX),
            ));
            self.idle_since.insert(namespace, None);
        }
        self.idle_since.retain(|namespace, since| {
            if busy.contains(namespace) {
                return true;
            }
            match since {
                None => {
                    *since = Some(now);
                    changes.push(Change::Set(namespace.clone(), 0));
                    true
                }
                Some(at) if now.saturating_duration_since(*at) >= LINGER => {
                    changes.push(Change::Remove(namespace.clone()));
                    false
                }
                Some(_) => true,
            }
        });
        changes
    }

    /// When the first series at 0 is due for removal.
    pub(crate) fn next_removal(&self) -> Option<Instant> {
        self.idle_since
            .values()
            .flatten()
            .min()
            .map(|at| *at + LINGER)
    }
}
