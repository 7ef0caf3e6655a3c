//! The dispatch loop and a due object's task: who gets a task (only an object with a worker),
//! and what a task decides without the API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use kube::client::Body;
use kube::runtime::reflector::{self, ObjectRef, Store};
use serde_json::json;

use super::*;
use crate::api::RecurringTask;
use crate::controller::fair::FairGate;
use crate::controller::{Context, dispatch};
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
    Arc::new(named("standup"))
}

fn named(name: &str) -> RecurringTask {
    serde_json::from_value(json!({
        "apiVersion": "recur.dev/v1alpha1",
        "kind": "RecurringTask",
        "metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}"), "generation": 1},
        "spec": {"userId": "u-1", "title": "Standup", "schedule": {"every": "1h"}},
    }))
    .unwrap()
}

fn empty_store() -> Store<RecurringTask> {
    reflector::store().0
}

#[tokio::test]
async fn an_object_gone_from_the_cache_is_not_reconciled() {
    let ctx = context(Leadership::always());
    let (done, mut read) = tokio::sync::mpsc::unbounded_channel();
    let r = dispatch::Key::of(task().as_ref());
    // Deleted while it waited for a worker: nothing to do, no API call (the mock would hang).
    tokio::time::timeout(
        Duration::from_secs(10),
        dispatch::in_turn(r.clone(), ctx, empty_store(), done),
    )
    .await
    .unwrap();
    assert_eq!(read.recv().await.unwrap(), (r, None));
}

/// A task per turn, so its size is paid 100,000 times after a restart: with the reconcile
/// inline it was 13 KB, and the heap kept 75 MiB more after the turns than with it boxed
/// (docs/scaling.md).
#[tokio::test]
async fn a_turn_is_a_small_task() {
    let ctx = context(Leadership::always());
    let (done, _) = tokio::sync::mpsc::unbounded_channel();
    let r = dispatch::Key::of(task().as_ref());
    let turn = dispatch::in_turn(r, ctx.clone(), empty_store(), done);
    let inline = crate::controller::runner::reconcile(task(), ctx);
    let size = std::mem::size_of_val(&turn);
    println!(
        "a turn's task: {size} bytes (its reconcile, boxed: {} bytes)",
        std::mem::size_of_val(&inline)
    );
    assert!(size <= 512, "{size} bytes per turn");
}

/// kube-runtime's scheduler keeps every object's key twice (its map and its timer queue), all
/// the time: each copy is a pointer to one allocation of the key's text, not a reference of
/// four strings.
#[test]
fn a_key_is_shared_not_copied() {
    let key = dispatch::Key::of(task().as_ref());
    let copy = key.clone();
    let (a, b) = (key.parts().1, copy.parts().1);
    assert!(std::ptr::eq(a, b), "a copy of a key copies its text");
    let size = std::mem::size_of::<dispatch::Key>();
    let reference = std::mem::size_of::<ObjectRef<RecurringTask>>();
    println!(
        "a key: {size} bytes a copy and {} of text once (an ObjectRef: {reference} bytes and its strings)",
        a.len()
    );
    assert!(size <= 16, "{size} bytes a copy");
}

/// 300 objects due at once on 2 workers, each reconcile held in its first API call: 2 run,
/// 298 wait as names in the gate with no task of their own (a waiting task cost 950 bytes, and
/// all 100,000 objects wait at once after a restart). Then every object runs in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_object_with_a_worker_has_a_task() {
    const OBJECTS: usize = 300;
    const WORKERS: usize = 2;
    let (service, mut api) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = Arc::new(crate::controller::test_context(
        service,
        "http://127.0.0.1:9",
        Leadership::always(),
        Duration::ZERO,
    ));
    let gate = Arc::new(FairGate::new(WORKERS));
    let (store, mut writer) = reflector::store();
    let names: Vec<String> = (0..OBJECTS).map(|i| format!("task-{i:03}")).collect();
    let objects: Vec<_> = names.iter().map(|n| named(n)).collect();
    // The first list, as the watcher brings it.
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Init);
    for o in &objects {
        writer.apply_watcher_event(&kube::runtime::watcher::Event::InitApply(o.clone()));
    }
    writer.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(dispatch::run(
        ctx,
        gate.clone(),
        futures::stream::iter(objects.into_iter().map(Ok)).chain(futures::stream::pending()),
        store,
        futures::stream::pending(),
        async move {
            let _ = stopped.await;
        },
    ));
    // Two reconciles reach the API and stay there; every other object waits.
    let mut held = vec![];
    for _ in 0..WORKERS {
        held.push(
            tokio::time::timeout(Duration::from_secs(10), api.next_request())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        while gate.waiting() < OBJECTS - WORKERS {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
        - tasks_before;
    println!("{OBJECTS} due on {WORKERS} workers: {tasks} tasks alive");
    // The loop and the two running reconciles (a task per waiting object made it 301).
    assert!(tasks <= 1 + WORKERS, "{tasks} tasks for {OBJECTS} objects");
    assert_eq!(gate.available(), 0);
    // Answered (with an error), each reconcile ends and hands its worker on: every object runs.
    let mut reconciled: HashSet<String> = HashSet::new();
    let answer = |(req, send): (
        Request<Body>,
        tower_test::mock::SendResponse<Response<Body>>,
    ),
                  reconciled: &mut HashSet<String>| {
        if let Some(name) = names.iter().find(|n| req.uri().path().contains(n.as_str())) {
            reconciled.insert(name.clone());
        }
        send.send_response(Response::builder().status(500).body(Body::empty()).unwrap());
    };
    for pending in held.drain(..) {
        answer(pending, &mut reconciled);
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        while reconciled.len() < OBJECTS {
            let pending = api.next_request().await.unwrap();
            answer(pending, &mut reconciled);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} of {OBJECTS} objects reconciled", reconciled.len()));
    // Shutdown: the loop ends once the reconciles running end.
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut run = run;
        loop {
            tokio::select! {
                ended = &mut run => break ended.unwrap(),
                Some(pending) = api.next_request() => answer(pending, &mut reconciled),
            }
        }
    })
    .await
    .unwrap();
    assert!(gate.is_closed());
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
    let r = dispatch::Key::of(task().as_ref());
    dispatch::in_turn(r, ctx, store, done).await;
    let decided = tokio::time::Instant::now();
    // The loop reads it two seconds later.
    tokio::time::advance(Duration::from_secs(2)).await;
    let (_, next) = read.recv().await.unwrap();
    assert_eq!(next, Some(decided + crate::controller::LEASE_SLACK_RETRY));
}

/// SIGTERM before the tenant policies are loaded (their watch refused by RBAC, or slow) ends the
/// controller at once: it waited for them first, so the process ignored the signal until it was
/// killed, and an elector that had taken the Lease never handed it back.
#[tokio::test]
async fn shutdown_before_the_policies_load_ends_the_controller() {
    let (service, _handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let mut ctx = crate::controller::test_context(
        service,
        "http://127.0.0.1:9",
        Leadership::always(),
        Duration::ZERO,
    );
    // Watches that are never driven: the policies never load.
    let (tenancy, _never_driven) = crate::tenancy::Tenancy::watch(ctx.client.clone());
    ctx.tenancy = tenancy;
    let run = run::<RecurringTask>(
        Arc::new(ctx),
        None,
        futures::stream::pending(),
        futures::future::ready(()),
    );
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the controller ignored the shutdown while the policies were loading");
}

/// An object whose reconcile keeps failing backs off (5 s, then doubling towards 5 minutes),
/// and a reconcile that succeeds starts it again at 5 s. A status write refused for good after
/// a call (RBAC, an admission policy) used to call the backend again every 5 s, for ever.
#[tokio::test]
async fn a_failing_object_backs_off_until_a_reconcile_succeeds() {
    let ctx = context(Leadership::leading_until(Instant::now()));
    let err = || crate::controller::Error::Timeout(Duration::from_secs(10));
    let waits: Vec<Duration> = (0..8)
        .map(|_| {
            error_policy(task(), &err(), ctx.clone())
                .requeue_after()
                .unwrap()
        })
        .collect();
    assert_eq!(waits[0], Duration::from_secs(5), "{waits:?}");
    assert!(waits.windows(2).all(|w| w[0] <= w[1]), "{waits:?}");
    assert!(waits[7] >= Duration::from_secs(60), "{waits:?}");
    assert!(
        waits.iter().all(|w| *w <= Duration::from_secs(300)),
        "{waits:?}"
    );
    // Another object starts at 5 s.
    let other = Arc::new(named("other"));
    assert_eq!(
        error_policy(other, &err(), ctx.clone()).requeue_after(),
        Some(Duration::from_secs(5))
    );
    // A reconcile that succeeds (here a follower's, which leaves the object alone) resets it.
    reconcile(task(), ctx.clone()).await.unwrap();
    assert_eq!(
        error_policy(task(), &err(), ctx).requeue_after(),
        Some(Duration::from_secs(5))
    );
}

/// Reminders and backfills are cached without labels and annotations, which their reconciles
/// never read: a reminder copies every label of its task, and a task keeps up to 100 reminders,
/// so a tenant's large labels filled the operator's memory a hundred times over.
#[tokio::test]
async fn reminders_and_backfills_are_cached_without_labels_and_annotations() {
    use kube::runtime::watcher::Event;
    let big: std::collections::BTreeMap<String, String> = (0..50)
        .map(|i| (format!("example.com/label-{i}"), "x".repeat(63)))
        .collect();
    let reminder: crate::api::Reminder = serde_json::from_value(json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "Reminder",
        "metadata": {"name": "r", "namespace": "ns", "uid": "u-r", "labels": big,
                     "annotations": {"note": "y".repeat(10_000)},
                     "ownerReferences": [{"apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
                                          "name": "t", "uid": "u-t"}]},
        "spec": {"userId": "u-1", "title": "t", "dueAt": "2030-01-01T00:00:00Z"}
    }))
    .unwrap();
    let ctx = context(Leadership::always());
    let mut event = Event::Apply(reminder);
    crate::controller::Reconcile::trim_for_cache(&ctx, &mut event);
    let Event::Apply(cached) = event else {
        unreachable!()
    };
    assert_eq!(cached.metadata.labels, None);
    assert_eq!(cached.metadata.annotations, None);
    assert_eq!(
        cached.metadata.owner_references.as_ref().map(Vec::len),
        Some(1)
    );

    let backfill: crate::api::Backfill = serde_json::from_value(json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "Backfill",
        "metadata": {"name": "b", "namespace": "ns", "uid": "u-b", "labels": {"team": "a"},
                     "annotations": {"note": "y"}},
        "spec": {"taskRef": {"name": "t"}, "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}
    }))
    .unwrap();
    let mut event = Event::InitApply(backfill);
    crate::controller::Reconcile::trim_for_cache(&ctx, &mut event);
    let Event::InitApply(cached) = event else {
        unreachable!()
    };
    assert_eq!(cached.metadata.labels, None);
    assert_eq!(cached.metadata.annotations, None);
}

/// A watch error (the API server refused or broke the watch) is counted per kind and logged
/// as a warning: it was logged at debug only, so a cache going stale showed nowhere.
#[tokio::test]
async fn a_watch_error_is_counted() {
    let ctx = context(Leadership::always());
    let metrics = ctx.metrics.clone();
    let gate = Arc::new(FairGate::new(1));
    let failed = kube::runtime::watcher::Error::NoResourceVersion;
    let objects = futures::stream::iter([Err::<RecurringTask, _>(failed)]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(dispatch::run(
        ctx,
        gate,
        objects,
        empty_store(),
        futures::stream::pending(),
        async move {
            let _ = stopped.await;
        },
    ));
    let counted = "recur_watch_errors_total{kind=\"RecurringTask\"} 1\n";
    let deadline = Instant::now() + Duration::from_secs(10);
    while !metrics.encode().contains(counted) {
        assert!(Instant::now() < deadline, "{}", metrics.encode());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap();
}

/// The backoff never makes a coming occurrence late: a failing task whose next occurrence is
/// due in a minute looks again by then, however often it failed; once due, it backs off.
#[tokio::test]
async fn a_failing_object_still_wakes_for_its_next_occurrence() {
    let ctx = context(Leadership::always());
    let err = || crate::controller::Error::Timeout(Duration::from_secs(10));
    let due_in = |secs: i64| {
        let due = chrono::Utc::now() + chrono::Duration::seconds(secs);
        let mut task = named("soon");
        task.status = Some(crate::api::RecurringTaskStatus {
            next_occurrence: Some(crate::api::PendingOccurrence {
                nominal: due,
                due,
                idempotency_key: "rt-u-soon-x".into(),
                attempts: 0,
                retry_at: None,
                in_progress: 0,
            }),
            ..Default::default()
        });
        Arc::new(task)
    };
    let mut last = Duration::ZERO;
    for _ in 0..10 {
        last = error_policy(due_in(60), &err(), ctx.clone())
            .requeue_after()
            .unwrap();
    }
    assert!(last <= Duration::from_secs(60), "{last:?}");
    // Its reminder is created 30 s before the occurrence: by then.
    let mut reminded = due_in(60).as_ref().clone();
    reminded.spec.reminders = vec![crate::api::ReminderTemplate {
        before: "30s".into(),
        ..Default::default()
    }];
    let wait = error_policy(Arc::new(reminded.clone()), &err(), ctx.clone())
        .requeue_after()
        .unwrap();
    assert!(wait <= Duration::from_secs(30), "{wait:?}");
    // A manual run due already (its wake past) does not hide the occurrence's.
    let mut manual = due_in(60).as_ref().clone();
    manual.status.as_mut().unwrap().manual_run = Some(Box::new(crate::api::PendingManualRun {
        token: "t".into(),
        idempotency_key: "rt-u-soon-run-t".into(),
        requested_at: chrono::Utc::now() - chrono::Duration::seconds(5),
        attempts: 1,
        retry_at: None,
        in_progress: 0,
    }));
    let wait = error_policy(Arc::new(manual), &err(), ctx.clone())
        .requeue_after()
        .unwrap();
    assert!(wait <= Duration::from_secs(60), "{wait:?}");
    // Overdue: the wake is past, the backoff (many failures in a row) stands.
    let overdue = error_policy(due_in(-60), &err(), ctx)
        .requeue_after()
        .unwrap();
    assert!(overdue > Duration::from_secs(60), "{overdue:?}");
}
