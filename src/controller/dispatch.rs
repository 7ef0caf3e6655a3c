//! The controller loop with fair queueing.
//!
//! kube-runtime's watch, cache and scheduler stay (the scheduler keeps one request per object,
//! the earliest), its runner does not: kube-runtime 5's runner polls every reconcile it started
//! whenever one of them wakes, and scans every held request for each one it takes. With 10,000
//! reconciles waiting for a worker that is quadratic (the fairness benchmark drained 28
//! occurrences a second instead of 200, the runner's scans taking most of the operator's CPU).
//! Here a due object gets a small task of its own, which waits in its namespace's queue
//! (`fair`) and then reconciles; this loop alone knows which objects are in flight, in a map,
//! so that an object is never reconciled twice at once.
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::scheduler::{ScheduleRequest, scheduler};
use kube::runtime::watcher;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Context;
use super::fair::FairGate;
use super::runner::{Reconcile, error_policy, reconcile_in_turn};

/// The next run of an object whose reconcile panicked, as after an error.
const AFTER_PANIC: Duration = Duration::from_secs(5);

type Request<K> = ScheduleRequest<ObjectRef<K>>;

/// Reconciles `K` through `gate` until `shutdown`: on every change of an object (`objects`,
/// which also fills `store`), for every object on each `everything_again`, and when a reconcile
/// asked for it. Then the reconciles still waiting give up and those running finish.
pub(crate) async fn run<K: Reconcile>(
    ctx: Arc<Context>,
    gate: Arc<FairGate>,
    objects: impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    store: Store<K>,
    everything_again: impl Stream<Item = ()> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (again_tx, again_rx) = mpsc::unbounded_channel::<Request<K>>();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let changed = objects.filter_map(|res| async move {
        match res {
            Ok(obj) => Some(now(ObjectRef::from_obj(&obj))),
            Err(err) => {
                tracing::debug!(%err, kind = K::KIND, "watch");
                None
            }
        }
    });
    let everything = {
        let store = store.clone();
        everything_again.flat_map(move |()| {
            futures::stream::iter(
                store
                    .state()
                    .into_iter()
                    .map(|obj| now(ObjectRef::from_obj(obj.as_ref()))),
            )
        })
    };
    let requested = futures::stream::unfold(again_rx, |mut rx| async move {
        rx.recv().await.map(|request| (request, rx))
    });
    let requests = futures::stream::select(futures::stream::select(changed, everything), requested);
    let mut due = std::pin::pin!(scheduler(requests));
    let ready = {
        let store = store.clone();
        // Fused: once resolved it stays pending, so a select may poll it again.
        async move { crate::watch_cache::until_ready(&store).await }.fuse()
    };
    let mut ready = std::pin::pin!(ready);
    let mut in_flight = InFlight {
        ctx,
        gate,
        store,
        done: done_tx,
        again: HashMap::new(),
    };
    // Due before the cache holds its first full list: started once it does.
    let mut backlog: Option<HashSet<ObjectRef<K>>> = Some(HashSet::new());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            // A dropped writer means the watch is gone (shutdown follows): nothing starts.
            Ok(()) = &mut ready, if backlog.is_some() => {
                for r in backlog.take().unwrap_or_default() {
                    in_flight.due(r);
                }
            }
            Some(r) = due.next() => match backlog.as_mut() {
                Some(backlog) => {
                    backlog.insert(r);
                }
                None => in_flight.due(r),
            },
            Some((r, next)) = done_rx.recv() => {
                if let Some(run_at) = in_flight.finished(&r, next) {
                    // The receiver lives in `due`, as long as this loop.
                    let _ = again_tx.send(ScheduleRequest { message: r, run_at });
                }
            }
        }
    }
    in_flight.gate.close();
    while !in_flight.again.is_empty() {
        match done_rx.recv().await {
            Some((r, _)) => {
                in_flight.again.remove(&r);
            }
            None => break,
        }
    }
}

fn now<K>(r: ObjectRef<K>) -> Request<K>
where
    K: kube::runtime::reflector::Lookup,
{
    ScheduleRequest {
        message: r,
        run_at: Instant::now(),
    }
}

/// A year from now: later than any schedule a reconcile asks for (kube-runtime's scheduler
/// clamps it further).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

/// The objects with a task, each with whether it is due again once that task ends.
struct InFlight<K: Reconcile> {
    ctx: Arc<Context>,
    gate: Arc<FairGate>,
    store: Store<K>,
    done: mpsc::UnboundedSender<Finished<K>>,
    again: HashMap<ObjectRef<K>, bool>,
}

impl<K: Reconcile> InFlight<K> {
    /// `r` is due: a task for it, or, if it has one, another run after it.
    fn due(&mut self, r: ObjectRef<K>) {
        if let Some(again) = self.again.get_mut(&r) {
            *again = true;
            return;
        }
        self.again.insert(r.clone(), false);
        tracing::trace!(object = %r, "due");
        tokio::spawn(in_turn(
            r,
            self.ctx.clone(),
            self.gate.clone(),
            self.store.clone(),
            self.done.clone(),
        ));
    }

    /// `r`'s task ended asking for a run at `next`: when to run it next.
    fn finished(&mut self, r: &ObjectRef<K>, next: Option<Instant>) -> Option<Instant> {
        match self.again.remove(r) {
            Some(true) => Some(Instant::now()),
            _ => next,
        }
    }
}

/// The task of one due object: its turn, its reconcile, and the word to the loop when done.
pub(super) async fn in_turn<K: Reconcile>(
    r: ObjectRef<K>,
    ctx: Arc<Context>,
    gate: Arc<FairGate>,
    store: Store<K>,
    done: mpsc::UnboundedSender<Finished<K>>,
) {
    let mut done = Done {
        r: Some(r),
        next: None,
        tx: done,
    };
    // Logged from `done.r`, not from `r` before it moves: that kept `r` in the future's state
    // too, 48 bytes more per waiting object (`what_waits_for_a_worker_is_small`).
    if let Some(r) = &done.r {
        tracing::trace!(object = %r, "turn");
    }
    let Some(obj) = done.r.as_ref().and_then(|r| store.get(r)) else {
        // Gone from the cache: nothing to do until it comes back.
        done.next = Some(None);
        return;
    };
    let action = match reconcile_in_turn(obj.clone(), ctx.clone(), gate, store).await {
        Ok(action) => action,
        Err(err) => error_policy(obj, &err, ctx),
    };
    // The instant is fixed now, when the reconcile decided: the loop may read this message
    // much later (at a restart it works through every object's), and a wait counted from then
    // would make the next run late by that much.
    done.next = Some(action.requeue_after().map(after));
}

/// `wait` from now, as an instant (a year at most: kube-runtime's scheduler clamps it further).
fn after(wait: Duration) -> Instant {
    Instant::now().checked_add(wait).unwrap_or_else(far_future)
}

/// What a task tells the loop when it ends: its object, and when to run it next (if at all).
type Finished<K> = (ObjectRef<K>, Option<Instant>);

/// Tells the loop that a task ended, even by a panic (then with a retry like an error's), so
/// that its object is never left marked in flight.
struct Done<K: Reconcile> {
    r: Option<ObjectRef<K>>,
    /// When to run the object next, once decided (`None` until then: a panic retries it).
    next: Option<Option<Instant>>,
    tx: mpsc::UnboundedSender<Finished<K>>,
}

impl<K: Reconcile> Drop for Done<K> {
    fn drop(&mut self) {
        if let Some(r) = self.r.take() {
            // Closed only once the loop is gone, and nothing is waited for then.
            let next = self.next.unwrap_or_else(|| Some(after(AFTER_PANIC)));
            let _ = self.tx.send((r, next));
        }
    }
}
