//! Backfill end to end: the real apiserver (with kube-controller-manager's garbage collector),
//! real daprd, the recording backend and `recur run` as a process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use kube::api::{Api, DeleteParams, PostParams};
use recur::api::{Backfill, BackfillPhase, RecurringTask, Trigger, condition};
use recur::controller::task::{body, compile, occurrence_key};
use recur::schedule::Occurrence;
use serde_json::json;
use support::stack::{Record, Stack};
use support::{TestNamespace, client, kubectl, wait_for, wait_for_value};

/// Now, to the second (schedules given with `startAt` then have whole-second occurrences).
fn now_s() -> DateTime<Utc> {
    Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap()
}

/// Creates task `name` with `spec` over a default user id and title.
async fn create_task(
    api: &Api<RecurringTask>,
    name: &str,
    spec: serde_json::Value,
) -> RecurringTask {
    let mut full = json!({"userId": "user-42", "title": format!("task {name}")});
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    let task: RecurringTask = serde_json::from_value(json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask", "metadata": {"name": name},
        "spec": full
    }))
    .unwrap();
    api.create(&PostParams::default(), &task).await.unwrap()
}

/// A schedule every second over `[from, end]` whose missed occurrences the schedule itself never
/// delivers (`catchUp: Skip`): all of them are the backfill's.
fn past_only(from: DateTime<Utc>, end: DateTime<Utc>) -> serde_json::Value {
    json!({
        "schedule": {"every": "1s", "startAt": from, "endAt": end},
        "catchUp": {"policy": "Skip"},
    })
}

async fn create_backfill(
    api: &Api<Backfill>,
    name: &str,
    task: &str,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    extra: serde_json::Value,
) -> Backfill {
    let mut spec = json!({"taskRef": {"name": task}, "from": from, "to": to});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let bf: Backfill = serde_json::from_value(json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "Backfill", "metadata": {"name": name},
        "spec": spec
    }))
    .unwrap();
    api.create(&PostParams::default(), &bf).await.unwrap()
}

/// Waits until backfill `name` is in `phase`, and returns it.
async fn wait_phase(
    api: &Api<Backfill>,
    name: &str,
    phase: BackfillPhase,
    within: Duration,
) -> Backfill {
    wait_for_value(
        within,
        &format!("backfill {name} to be {phase:?}"),
        || async {
            let bf = api.get(name).await.ok()?;
            (bf.status.as_ref()?.phase == phase).then_some(bf)
        },
    )
    .await
}

/// The occurrences of the task's schedule in `[from, to)` with their keys, in order, as the task
/// itself computes them.
fn in_range(
    task: &RecurringTask,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<(Occurrence, String)> {
    let uid = task.metadata.uid.clone().unwrap();
    compile(task)
        .unwrap()
        .iter_after(from - TimeDelta::nanoseconds(1))
        .take_while(|o| o.nominal < to)
        .map(|o| (o, occurrence_key(&uid, o.nominal)))
        .collect()
}

fn keys_of(occurrences: &[(Occurrence, String)]) -> BTreeSet<String> {
    occurrences.iter().map(|(_, k)| k.clone()).collect()
}

/// Asserts the invariant of a finished backfill over `keys`: every occurrence counted once,
/// and the backend created each key exactly once (whoever delivered it).
async fn assert_each_key_once(stack: &Stack, bf: &Backfill, keys: &BTreeSet<String>) {
    let status = bf.status.clone().unwrap();
    assert_eq!(status.total, keys.len() as u64, "{status:?}");
    assert_eq!(status.failed, 0, "{status:?}");
    assert_eq!(
        status.delivered + status.already_delivered,
        status.total,
        "{status:?}"
    );
    let mut created: HashMap<&str, usize> = HashMap::new();
    for r in stack.accepted("/api/tasks").await {
        if let Some(key) = r.key.as_deref().and_then(|k| keys.get(k)) {
            *created.entry(key.as_str()).or_default() += 1;
        }
    }
    for key in keys {
        let n = created.get(key.as_str()).copied().unwrap_or(0);
        assert_eq!(n, 1, "key {key} created {n} times");
    }
    let ready = condition(&status.conditions, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Complete")
    );
    let stalled = condition(&status.conditions, "Stalled").unwrap();
    assert_eq!(stalled.status, "False");
    assert_eq!((status.next, status.next_key), (None, None));
}

fn received_at(r: &Record) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&r.received_at)
        .unwrap()
        .with_timezone(&Utc)
}

/// The calls the backend received for `keys` from `since` on, in arrival order.
async fn calls(stack: &Stack, keys: &BTreeSet<String>, since: DateTime<Utc>) -> Vec<Record> {
    stack
        .records()
        .await
        .into_iter()
        .filter(|r| r.path == "/api/tasks")
        .filter(|r| r.key.as_deref().is_some_and(|k| keys.contains(k)))
        .filter(|r| received_at(r) >= since)
        .collect()
}

/// Asserts that `calls` (one backfill's, without a pause) kept to `rate` per second: n calls
/// span at least n - 2 periods (the first call may come late in its slot, the last early).
/// Returns the rate achieved.
fn assert_paced(calls: &[Record], rate: u32) -> f64 {
    assert!(calls.len() >= 3, "too few calls to measure: {calls:?}");
    let span = received_at(&calls[calls.len() - 1]) - received_at(&calls[0]);
    let period = TimeDelta::microseconds(1_000_000 / i64::from(rate));
    assert!(
        span >= period * (calls.len() as i32 - 2),
        "{} calls in {span} at rate {rate}",
        calls.len()
    );
    (calls.len() - 1) as f64 / (span.num_milliseconds() as f64 / 1000.0)
}

/// The body the backend stored for `key` is the backfill's, `"trigger": "backfill"` included: the
/// same request again is answered with the backend's replay, while the schedule's body for that
/// key (`"trigger": "schedule"`) is refused as another payload (422).
async fn assert_stored_as_backfill(stack: &Stack, task: &RecurringTask, o: &Occurrence, key: &str) {
    let http = reqwest::Client::new();
    let send = |trigger: Trigger| {
        let bytes = serde_json::to_vec(&body(task, o.nominal, o.due, key, trigger)).unwrap();
        http.post(format!("{}/api/tasks", stack.backend_url))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(bytes)
            .send()
    };
    let replay = send(Trigger::Backfill).await.unwrap();
    assert!(
        replay.status().is_success()
            && replay
                .headers()
                .get("idempotent-replayed")
                .is_some_and(|v| v == "true"),
        "the backfill's body again: {replay:?}"
    );
    let other = send(Trigger::Schedule).await.unwrap();
    assert_eq!(
        other.status().as_u16(),
        422,
        "the schedule's body: {other:?}"
    );
}

/// The HTTP status the backend gave each call with `key`, in arrival order (decided on arrival,
/// so known while a call is held).
async fn answers(stack: &Stack, key: &str) -> Vec<Option<u64>> {
    let records: Vec<serde_json::Value> =
        reqwest::get(format!("{}/_dev/records", stack.backend_url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    records
        .iter()
        .filter(|r| r["key"] == key)
        .map(|r| r["status"].as_u64())
        .collect()
}

/// `kubectl get` in `ns`, as a person sees it (printed for the docs with --nocapture).
fn show(ns: &str, what: &str) -> String {
    let out = kubectl(["get", what, "-n", ns]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("$ kubectl get {what} -n {ns}\n{text}");
    text
}

/// (1) The schedule delivered part of the range already: the backfill delivers the rest, at
/// its rate, under the schedule's keys and marked `"trigger": "backfill"`, and counts those as
/// already delivered; the backend created every key exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_over_a_partly_delivered_range_delivers_each_key_once() {
    let started = Instant::now();
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-backfill").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&[]).await;
    let tasks: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    let backfills: Api<Backfill> = Api::namespaced(client.clone(), ns.name());
    // Every second since 15 s ago: the schedule delivers from its creation on (catchUp Latest:
    // the most recent missed one, then each as it falls due), not what was due before.
    let from = now_s() - TimeDelta::seconds(15);
    let task = create_task(
        &tasks,
        "tick",
        json!({"schedule": {"every": "1s", "startAt": from}}),
    )
    .await;
    let uid = task.metadata.uid.clone().unwrap();
    let prefix = format!("rt-{uid}-");
    wait_for(
        Duration::from_secs(30),
        "4 deliveries by the schedule",
        || async {
            let keys = stack.accepted("/api/tasks").await;
            keys.iter()
                .filter(|r| r.key.as_deref().is_some_and(|k| k.starts_with(&prefix)))
                .count()
                >= 4
        },
    )
    .await;
    // To the second: the occurrence due now, maybe still in flight, is the schedule's alone.
    let to = now_s();
    let occurrences = in_range(&task, from, to);
    let keys = keys_of(&occurrences);
    let by_schedule: BTreeSet<String> = stack
        .accepted("/api/tasks")
        .await
        .into_iter()
        .filter_map(|r| r.key)
        .filter(|k| keys.contains(k))
        .collect();
    assert!(by_schedule.len() >= 3, "{by_schedule:?}");
    assert!(
        by_schedule.len() < keys.len(),
        "the range is partly delivered"
    );

    let created_at = Utc::now();
    create_backfill(&backfills, "fill", "tick", (from, to), json!({})).await;
    let bf = wait_phase(
        &backfills,
        "fill",
        BackfillPhase::Complete,
        Duration::from_secs(60),
    )
    .await;
    let listing = show(ns.name(), "bf");
    assert!(
        listing.contains("fill") && listing.contains("Complete"),
        "{listing}"
    );
    assert_each_key_once(&stack, &bf, &keys).await;
    let status = bf.status.clone().unwrap();
    // What the schedule had delivered before the backfill started is not delivered again: the
    // backend has those keys (with the schedule's body: 422), counted as already delivered.
    assert!(
        status.already_delivered >= by_schedule.len() as u64 && status.delivered >= 1,
        "{status:?}, schedule delivered {by_schedule:?}"
    );
    assert_eq!(status.task_uid.as_deref(), Some(uid.as_str()));
    let (started_at, finished_at) = (status.started_at.unwrap(), status.finished_at.unwrap());
    // In order, one call per occurrence (no failures, no retries), at the default rate of 10/s.
    let made = calls(&stack, &keys, created_at).await;
    let called: Vec<&str> = made.iter().filter_map(|r| r.key.as_deref()).collect();
    let expected: Vec<&str> = occurrences.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(called, expected, "the backfill's calls, in order");
    let achieved = assert_paced(&made, 10);
    println!(
        "backfill: {} occurrences ({} delivered, {} already delivered) in {} ms, {achieved:.1}/s at rate 10",
        status.total,
        status.delivered,
        status.already_delivered,
        (finished_at - started_at).num_milliseconds()
    );
    // The first occurrence of the range is the backfill's, never the schedule's.
    let (first, first_key) = &occurrences[0];
    assert!(!by_schedule.contains(first_key));
    assert_stored_as_backfill(&stack, &task, first, first_key).await;
    // Owned by the task, without blocking its deletion.
    let owners = bf.metadata.owner_references.clone().unwrap_or_default();
    assert!(
        owners.iter().any(|o| o.uid == uid
            && o.kind == "RecurringTask"
            && o.controller == Some(false)
            && o.block_owner_deletion == Some(false)),
        "{owners:?}"
    );
    // The deliveries are counted by kind.
    let (code, metrics) = stack.operator_get(0, "/metrics").await;
    assert_eq!(code, 200);
    for outcome in ["delivered", "already_delivered"] {
        let series = format!("recur_occurrences_total{{kind=\"Backfill\",outcome=\"{outcome}\"}}");
        assert!(metrics.contains(&series), "{series} missing:\n{metrics}");
    }
    ns.cleanup().await;
    println!("test 1 took {:?}", started.elapsed());
}

/// (2) The operator is SIGKILLed mid-backfill: the restarted one resumes from status, with the
/// key that was pending there, and the backend still creates every key exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_resumes_after_the_operator_is_killed() {
    let started = Instant::now();
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-backfill-kill").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&[]).await;
    let tasks: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    let backfills: Api<Backfill> = Api::namespaced(client.clone(), ns.name());
    // 20 occurrences, all in the past and skipped by the schedule: all the backfill's.
    let from = now_s() - TimeDelta::seconds(60);
    let end = from + TimeDelta::seconds(19);
    let task = create_task(&tasks, "past", past_only(from, end)).await;
    let to = end + TimeDelta::seconds(1);
    let occurrences = in_range(&task, from, to);
    let keys = keys_of(&occurrences);
    let order: Vec<&str> = occurrences.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(keys.len(), 20);
    // 2 per second: about 10 s, time enough to kill the operator in the middle.
    create_backfill(&backfills, "slow", "past", (from, to), json!({"rate": 2})).await;
    wait_for(Duration::from_secs(30), "4 deliveries", || async {
        let bf = backfills.get("slow").await.ok();
        bf.and_then(|bf| bf.status)
            .is_some_and(|s| s.delivered >= 4)
    })
    .await;
    // The backend holds the next call for a minute: SIGKILL the operator while it is in flight.
    stack.faults(json!({"delay_ms": 60_000})).await;
    let in_flight =
        wait_for_value(Duration::from_secs(10), "a call in flight", || async {
            stack.records().await.into_iter().find(|r| {
                r.answered_at.is_none() && r.key.as_deref().is_some_and(|k| keys.contains(k))
            })
        })
        .await;
    stack.kill_operator(0);
    stack.faults(json!({})).await;
    let at_kill = backfills.get("slow").await.unwrap().status.unwrap();
    assert_eq!(at_kill.phase, BackfillPhase::Running, "{at_kill:?}");
    // The key of the call in flight was in status before the call.
    let pending = at_kill.next_key.clone().unwrap();
    assert_eq!(in_flight.key.as_deref(), Some(pending.as_str()));
    let pending_index = order.iter().position(|k| *k == pending).unwrap();
    assert!(pending_index >= 4, "{at_kill:?}");
    let delivered_at_kill = at_kill.delivered;
    let last_seq_at_kill = in_flight.seq;
    stack.restart_operator(0).await;
    let bf = wait_phase(
        &backfills,
        "slow",
        BackfillPhase::Complete,
        Duration::from_secs(60),
    )
    .await;
    assert_each_key_once(&stack, &bf, &keys).await;
    let status = bf.status.clone().unwrap();
    assert!(status.delivered >= delivered_at_kill, "{status:?}");
    assert_eq!(
        status.started_at, at_kill.started_at,
        "resumed, not restarted"
    );
    // Resumed from status: the first call after the kill is the pending key (again, if the
    // killed operator had sent it), and nothing before it is called again.
    let records = stack.records().await;
    let after: Vec<usize> = records
        .iter()
        .filter(|r| r.seq > last_seq_at_kill)
        .filter_map(|r| order.iter().position(|k| Some(*k) == r.key.as_deref()))
        .collect();
    assert_eq!(after.first(), Some(&pending_index), "{after:?}");
    assert!(after.iter().all(|i| *i >= pending_index), "{after:?}");
    // One call per key, but the pending one: twice, and the backend's 409 to the second (the
    // first is still held) counts it as already delivered.
    let calls_of = |key: &str| {
        records
            .iter()
            .filter(|r| r.key.as_deref() == Some(key))
            .count()
    };
    for key in &order {
        let expected = if *key == pending { 2 } else { 1 };
        assert_eq!(calls_of(key), expected, "{key}");
    }
    assert_eq!(
        answers(&stack, &pending).await,
        [Some(201), Some(409)],
        "the backend's answers to the pending key"
    );
    assert_eq!(
        (status.delivered, status.already_delivered),
        (19, 1),
        "{status:?}"
    );
    let (started_at, finished_at) = (status.started_at.unwrap(), status.finished_at.unwrap());
    println!(
        "killed at {delivered_at_kill} delivered with {pending} in flight (the backend answered \
         its second call 409); complete: {} delivered, {} already delivered, {} ms from start to finish at rate 2",
        status.delivered,
        status.already_delivered,
        (finished_at - started_at).num_milliseconds()
    );
    assert_stored_as_backfill(&stack, &task, &occurrences[0].0, &occurrences[0].1).await;
    ns.cleanup().await;
    println!("test 2 took {:?}", started.elapsed());
}

/// (3) What a backfill refuses and how it goes: too many occurrences fail it before anything is
/// delivered; a target the tenant's policy refuses fails it as it stops the task's own
/// deliveries; a task of another namespace is never found; a Complete backfill goes after its
/// `ttlSecondsAfterFinished`, not before; deleting the task deletes its backfills (garbage
/// collector).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_ttl_and_the_task_owning_its_backfills() {
    let started = Instant::now();
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-backfill-owner").await;
    let other = TestNamespace::new(&client, "e2e-backfill-other").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&[]).await;
    let tasks: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    let backfills: Api<Backfill> = Api::namespaced(client.clone(), ns.name());
    let from = now_s() - TimeDelta::seconds(60);
    let end = from + TimeDelta::seconds(19);
    let range = (from, end + TimeDelta::seconds(1));
    let owner = create_task(&tasks, "owner", past_only(from, end)).await;
    let brief = create_task(
        &tasks,
        "brief",
        past_only(from, from + TimeDelta::seconds(2)),
    )
    .await;
    let mut denied_spec = past_only(from, end);
    denied_spec["target"] = json!({"appId": format!("backend.{}", other.name())});
    let elsewhere = create_task(&tasks, "elsewhere", denied_spec).await;
    let theirs_api: Api<RecurringTask> = Api::namespaced(client.clone(), other.name());
    create_task(&theirs_api, "theirs", past_only(from, end)).await;

    create_backfill(
        &backfills,
        "too-many",
        "owner",
        range,
        json!({"maxOccurrences": 5}),
    )
    .await;
    create_backfill(
        &backfills,
        "short-lived",
        "brief",
        range,
        json!({"ttlSecondsAfterFinished": 3}),
    )
    .await;
    create_backfill(&backfills, "denied", "elsewhere", range, json!({})).await;
    create_backfill(&backfills, "cross", "theirs", range, json!({})).await;

    // Too many: Failed before anything is delivered.
    let bf = wait_phase(
        &backfills,
        "too-many",
        BackfillPhase::Failed,
        Duration::from_secs(30),
    )
    .await;
    let status = bf.status.clone().unwrap();
    let stalled = condition(&status.conditions, "Stalled").unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "TooManyOccurrences")
    );
    assert!(
        stalled.message.contains("spec.maxOccurrences (5)")
            && stalled.message.contains("20 occurrences"),
        "{}",
        stalled.message
    );
    let ready = condition(&status.conditions, "Ready").unwrap();
    assert_eq!(ready.status, "False");
    assert_eq!(
        (status.total, status.delivered, status.next_key),
        (0, 0, None)
    );
    let owners = bf.metadata.owner_references.clone().unwrap_or_default();
    let owner_uid = owner.metadata.uid.clone().unwrap();
    assert!(owners.iter().any(|o| o.uid == owner_uid), "{owners:?}");

    // Refused by the tenant's policy (the default: only apps of its own namespace), as the
    // task's own deliveries are.
    let bf = wait_phase(
        &backfills,
        "denied",
        BackfillPhase::Failed,
        Duration::from_secs(30),
    )
    .await;
    let status = bf.status.clone().unwrap();
    let stalled = condition(&status.conditions, "Stalled").unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "PolicyDenied"),
        "{}",
        stalled.message
    );
    assert!(
        stalled.message.contains("task \"elsewhere\"") && stalled.message.contains("rule targets"),
        "{}",
        stalled.message
    );

    // A task of another namespace is not the backfill's: it waits for one of its own.
    let bf = wait_for_value(
        Duration::from_secs(30),
        "backfill cross to wait for a task of its namespace",
        || async {
            let bf = backfills.get("cross").await.ok()?;
            let ready = condition(&bf.status.as_ref()?.conditions, "Ready")?.clone();
            (ready.reason == "TaskNotFound").then_some(bf)
        },
    )
    .await;
    let status = bf.status.clone().unwrap();
    assert_eq!(
        (status.phase, status.started_at, status.task_uid.clone()),
        (BackfillPhase::Pending, None, None)
    );
    assert!(bf.metadata.owner_references.unwrap_or_default().is_empty());

    // The TTL: deleted by the operator 3 s after it completed, not before.
    let bf = wait_phase(
        &backfills,
        "short-lived",
        BackfillPhase::Complete,
        Duration::from_secs(30),
    )
    .await;
    let brief_keys = keys_of(&in_range(&brief, range.0, range.1));
    assert!(brief_keys.len() >= 2, "{brief_keys:?}");
    assert_each_key_once(&stack, &bf, &brief_keys).await;
    show(ns.name(), "bf");
    let finished = bf.status.unwrap().finished_at.unwrap();
    wait_for(
        Duration::from_secs(30),
        "backfill short-lived deleted after its TTL",
        || async { matches!(backfills.get_opt("short-lived").await, Ok(None)) },
    )
    .await;
    let gone = Utc::now();
    assert!(
        gone >= finished + TimeDelta::seconds(3),
        "deleted before its TTL: finished {finished}, gone by {gone}"
    );
    println!(
        "short-lived: finished {finished}, seen deleted {} ms later (ttlSecondsAfterFinished 3)",
        (gone - finished).num_milliseconds()
    );
    // The default TTL (a day) keeps the others.
    assert!(backfills.get_opt("too-many").await.unwrap().is_some());

    // Nothing of the refused tasks was sent.
    let records = stack.records().await;
    for task in [&owner, &elsewhere] {
        let prefix = format!("rt-{}-", task.metadata.uid.clone().unwrap());
        assert!(
            !records
                .iter()
                .any(|r| r.key.as_deref().is_some_and(|k| k.starts_with(&prefix))),
            "something of task {:?} was sent",
            task.metadata.name
        );
    }

    // The garbage collector deletes the backfill with its task. (Its view of a newly installed
    // CRD is refreshed every 30 s, hence the generous deadline.)
    tasks
        .delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    let deleted = Instant::now();
    wait_for(
        Duration::from_secs(90),
        "backfill too-many deleted with its task",
        || async { matches!(backfills.get_opt("too-many").await, Ok(None)) },
    )
    .await;
    println!(
        "too-many: deleted by the garbage collector {:?} after its task",
        deleted.elapsed()
    );
    // Only the owner's: the others stay.
    assert!(backfills.get_opt("denied").await.unwrap().is_some());
    ns.cleanup().await;
    other.cleanup().await;
    println!("test 3 took {:?}", started.elapsed());
}
