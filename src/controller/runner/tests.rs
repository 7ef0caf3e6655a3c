//! The runner's wait for a worker: its size, and what it decides without running a reconcile.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use kube::client::Body;
use kube::runtime::reflector::{self, ObjectRef, Store};
use serde_json::json;

use super::*;
use crate::api::RecurringTask;
use crate::controller::{Action, Context, dispatch};
use crate::lease::Leadership;

/// A context on a mock apiserver that nobody answers: a test that reached the API would hang
/// (and fail on its timeout) instead of passing.
fn context(leadership: Leadership) -> Arc<Context> {
    context_with_margin(leadership, Duration::ZERO)
}

fn context_with_margin(leadership: Leadership, lease_margin: Duration) -> Arc<Context> {
    let (service, _handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    Arc::new(crate::controller::test_context(
        service,
        "http://127.0.0.1:9",
        leadership,
        lease_margin,
    ))
}

fn task() -> Arc<RecurringTask> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "recur.dev/v1alpha1",
            "kind": "RecurringTask",
            "metadata": {"name": "standup", "namespace": "ns", "uid": "u-1", "generation": 1},
            "spec": {"userId": "u-1", "title": "Standup", "schedule": {"every": "1h"}},
        }))
        .unwrap(),
    )
}

fn empty_store() -> Store<RecurringTask> {
    reflector::store().0
}

/// A gate of one permit, held.
fn busy_gate() -> (Arc<FairGate>, fair::Permit) {
    let gate = Arc::new(FairGate::new(1));
    let held = futures::executor::block_on(gate.acquire("other")).unwrap();
    (gate, held)
}

#[tokio::test]
async fn what_waits_for_a_worker_is_small() {
    let ctx = context(Leadership::always());
    let (gate, _held) = busy_gate();
    let (done, _) = tokio::sync::mpsc::unbounded_channel();
    let r = ObjectRef::from_obj(task().as_ref());
    // The task of a due object, which is what waits (it holds the wait below).
    let task_future = dispatch::in_turn(r, ctx.clone(), gate.clone(), empty_store(), done);
    let waiting = reconcile_in_turn(task(), ctx.clone(), gate, empty_store());
    let unboxed = reconcile(task(), ctx);
    let size = std::mem::size_of_val(&task_future);
    println!(
        "per object waiting for a worker: its task {size} bytes, of which the wait {} bytes (the reconcile itself, boxed once it runs: {} bytes)",
        std::mem::size_of_val(&waiting),
        std::mem::size_of_val(&unboxed)
    );
    assert!(size <= 512, "{size} bytes wait per object");
}

#[tokio::test]
async fn a_replica_that_may_not_act_decides_without_a_worker() {
    let expired = Instant::now().checked_sub(Duration::from_secs(1)).unwrap();
    let ctx = context(Leadership::leading_until(expired));
    let (gate, _held) = busy_gate();
    let decided = tokio::time::timeout(
        Duration::from_secs(10),
        reconcile_in_turn(task(), ctx, gate.clone(), empty_store()),
    )
    .await
    .expect("it waited for a worker");
    assert_eq!(decided.unwrap(), Action::await_change());
    assert_eq!(gate.waiting(), 0);
}

#[tokio::test]
async fn a_reconcile_still_waiting_at_shutdown_gives_up() {
    let ctx = context(Leadership::always());
    let (gate, _held) = busy_gate();
    let waiting = tokio::spawn(reconcile_in_turn(task(), ctx, gate.clone(), empty_store()));
    tokio::time::timeout(Duration::from_secs(10), async {
        while gate.waiting() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    gate.close();
    let decided = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(decided.unwrap(), Action::await_change());
}

#[tokio::test]
async fn an_object_deleted_while_it_waited_is_not_reconciled() {
    let ctx = context(Leadership::always());
    let gate = Arc::new(FairGate::new(1));
    // The cache no longer holds the object once a worker is free: nothing to do, no API call.
    let decided = tokio::time::timeout(
        Duration::from_secs(10),
        reconcile_in_turn(task(), ctx, gate.clone(), empty_store()),
    )
    .await
    .unwrap();
    assert_eq!(decided.unwrap(), Action::await_change());
    assert_eq!(gate.available(), 1, "the worker is given back");
}

/// The next run is fixed when the reconcile decides, not when the loop reads what the task
/// said: after a restart the loop works through every object's answer, and a wait counted from
/// its reading made each next occurrence late by the loop's backlog (up to 0.9 s at 100,000
/// tasks, see docs/scaling.md).
#[tokio::test(start_paused = true)]
async fn the_next_run_is_fixed_when_the_reconcile_decides() {
    // A leader whose lease is too short for a delivery: asked back after a slack, no API call.
    let ctx = context_with_margin(
        Leadership::leading_until(Instant::now() + Duration::from_secs(600)),
        Duration::from_secs(3600),
    );
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(
        task().as_ref().clone(),
    ));
    let (done, mut read) = tokio::sync::mpsc::unbounded_channel();
    let r = ObjectRef::from_obj(task().as_ref());
    dispatch::in_turn(r, ctx, Arc::new(FairGate::new(1)), store, done).await;
    let decided = tokio::time::Instant::now();
    // The loop reads it two seconds later.
    tokio::time::advance(Duration::from_secs(2)).await;
    let (_, next) = read.recv().await.unwrap();
    assert_eq!(next, Some(decided + crate::controller::LEASE_SLACK_RETRY));
}
