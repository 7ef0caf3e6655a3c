//! The controller loop with fair queueing.
//!
//! kube-runtime's watch, cache and scheduler stay (the scheduler keeps one request per object,
//! the earliest), its runner does not: kube-runtime 5's runner polls every reconcile it started
//! whenever one of them wakes, and scans every held request for each one it takes. With 10,000
//! reconciles waiting for a worker that is quadratic (the fairness benchmark drained 28
//! occurrences a second instead of 200, the runner's scans taking most of the operator's CPU).
//! Here a due object waits for a worker in its namespace's queue (`fair`), as a name, and gets
//! a task once a worker is its; this loop alone knows which objects are queued or running, in
//! a map, so that an object is never reconciled twice at once, and hands each worker given back
//! to the next object in turn.
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use kube::runtime::reflector::Store;
use kube::runtime::scheduler::{ScheduleRequest, scheduler};
use kube::runtime::watcher;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Context;
use super::fair::{Entry, FairGate, Turn};
use super::runner::{Reconcile, error_policy, reconcile, watch_failed};

/// The next run of an object whose reconcile panicked, as after an error.
const AFTER_PANIC: Duration = Duration::from_secs(5);

type Request = ScheduleRequest<Key>;

mod key;
pub(super) use key::Key;

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
    let (again_tx, again_rx) = mpsc::unbounded_channel::<Request>();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let metrics = ctx.metrics.clone();
    let changed = objects.filter_map(move |res| {
        let metrics = metrics.clone();
        async move {
            match res {
                Ok(obj) => Some(now(Key::of(&obj))),
                Err(err) => {
                    watch_failed::<K>(&metrics, &err);
                    None
                }
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
                    .map(|obj| now(Key::of(obj.as_ref()))),
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
        flights: HashMap::new(),
        running: 0,
    };
    // Due before the cache holds its first full list: started once it does.
    let mut backlog: Option<HashSet<Key>> = Some(HashSet::new());
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
    // The objects still waiting are dropped; those running finish.
    in_flight.gate.close();
    while in_flight.running > 0 {
        match done_rx.recv().await {
            Some(_) => in_flight.running -= 1,
            None => break,
        }
    }
}

fn now(r: Key) -> Request {
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

/// Where an object the loop knows of stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flight {
    /// Waiting for a worker: it will decide on the object as the cache shows it then, so being
    /// due again changes nothing.
    Queued,
    /// Reconciling; `again` when it became due meanwhile (it runs once more after).
    Running { again: bool },
}

/// The objects queued or running, and the tasks running.
struct InFlight<K: Reconcile> {
    ctx: Arc<Context>,
    gate: Arc<FairGate>,
    store: Store<K>,
    done: mpsc::UnboundedSender<Finished>,
    flights: HashMap<Key, Flight>,
    /// Tasks started and not yet heard of as ended (each holds a worker of `gate`).
    running: usize,
}

impl<K: Reconcile> InFlight<K> {
    /// `r` is due: a worker for it now or in its namespace's turn, or, if it is running,
    /// another run after this one.
    fn due(&mut self, r: Key) {
        match self.flights.get_mut(&r) {
            Some(Flight::Running { again }) => *again = true,
            Some(Flight::Queued) => {}
            None => {
                tracing::trace!(object = %r, "due");
                // A namespaced kind's object always has a namespace; one without would fail its
                // reconcile (and be retried) like any other error.
                let (namespace, name) = r.parts();
                match self.gate.enter(namespace, name) {
                    Entry::Run => self.start(r),
                    Entry::Queued => {
                        self.flights.insert(r, Flight::Queued);
                    }
                    // Shutting down: the next leader reconciles every object anyway.
                    Entry::Closed => {}
                }
            }
        }
    }

    /// Starts `r`'s task on a worker already its.
    fn start(&mut self, r: Key) {
        self.flights
            .insert(r.clone(), Flight::Running { again: false });
        self.running += 1;
        tokio::spawn(in_turn(
            r,
            self.ctx.clone(),
            self.store.clone(),
            self.done.clone(),
        ));
    }

    /// `r`'s task ended asking for a run at `next`: its worker goes to the next object in turn,
    /// and this says when to run `r` next.
    fn finished(&mut self, r: &Key, next: Option<Instant>) -> Option<Instant> {
        self.running = self.running.saturating_sub(1);
        if let Some(turn) = self.gate.release() {
            self.handed(turn);
        }
        let again = matches!(
            self.flights.remove(r),
            Some(Flight::Running { again: true })
        );
        // After a restart every object was in flight at once; the map would keep room for all
        // of them for good.
        if self.flights.capacity() > FLIGHTS_KEPT
            && self.flights.len() < self.flights.capacity() / 8
        {
            self.flights.shrink_to(self.flights.len() * 2);
        }
        if again { Some(Instant::now()) } else { next }
    }

    /// A waiting object was handed a worker.
    fn handed(&mut self, turn: Turn) {
        if turn.waited > SLOW_TURN {
            tracing::debug!(
                kind = K::KIND,
                namespace = %turn.namespace,
                waited_ms = turn.waited.as_millis() as u64,
                "waited for a worker"
            );
        }
        let probe = Key::new(&turn.namespace, &turn.name);
        // The key made when the object became due: the scheduler and this map keep sharing
        // one allocation of it.
        let r = match self.flights.remove_entry(&probe) {
            Some((r, _)) => r,
            None => probe,
        };
        self.start(r);
    }
}

/// Room the map of objects in flight keeps whatever it held before.
const FLIGHTS_KEPT: usize = 1024;

/// A wait for a worker longer than this is logged (debug).
const SLOW_TURN: Duration = Duration::from_millis(50);

/// The task of an object handed a worker: its reconcile, on the object as the cache shows it
/// now (it may have waited long), and the word to the loop when done.
pub(super) async fn in_turn<K: Reconcile>(
    r: Key,
    ctx: Arc<Context>,
    store: Store<K>,
    done: mpsc::UnboundedSender<Finished>,
) {
    let mut done = Done {
        r: Some(r),
        next: None,
        tx: done,
    };
    if let Some(r) = &done.r {
        tracing::trace!(object = %r, "turn");
    }
    let Some(obj) = done.r.as_ref().and_then(|r| store.get(&r.object_ref())) else {
        // Gone from the cache: nothing to do until it comes back.
        done.next = Some(None);
        return;
    };
    // Boxed, so that the task itself stays small (296 bytes, `a_turn_is_a_small_task`): a task
    // is made for every turn, and with the reconcile inline each was 13 KB, made and freed
    // 100,000 times after a restart among allocations that live on (the scheduler's keys). The
    // heap kept 75 MiB more after those turns than with the reconcile boxed.
    let action = match Box::pin(reconcile(obj.clone(), ctx.clone())).await {
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
type Finished = (Key, Option<Instant>);

/// Tells the loop that a task ended, even by a panic (then with a retry like an error's), so
/// that its object is never left marked in flight.
struct Done {
    r: Option<Key>,
    /// When to run the object next, once decided (`None` until then: a panic retries it).
    next: Option<Option<Instant>>,
    tx: mpsc::UnboundedSender<Finished>,
}

impl Drop for Done {
    fn drop(&mut self) {
        if let Some(r) = self.r.take() {
            // Closed only once the loop is gone, and nothing is waited for then.
            let next = self.next.unwrap_or_else(|| Some(after(AFTER_PANIC)));
            let _ = self.tx.send((r, next));
        }
    }
}
