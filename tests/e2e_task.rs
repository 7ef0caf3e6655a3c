//! RecurringTask end to end: the real apiserver, real daprd (or the stand-in when daprd is not
//! built), the recording backend and `recur run` as a process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams, PostParams};
use recur::api::{RecurringTask, condition};
use serde_json::json;
use support::stack::Stack;
use support::{TestNamespace, client, event_reasons, kubectl, wait_for, wait_for_value};

fn task_json(name: &str, every: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({
        "userId": "user-42",
        "title": format!("task {name}"),
        "schedule": {"every": every},
        "payload": {"n": 1},
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask", "metadata": {"name": name}, "spec": spec})
}

async fn create(api: &Api<RecurringTask>, body: serde_json::Value) -> RecurringTask {
    let task: RecurringTask = serde_json::from_value(body).unwrap();
    api.create(&PostParams::default(), &task).await.unwrap()
}

async fn get(api: &Api<RecurringTask>, name: &str) -> RecurringTask {
    api.get(name).await.unwrap()
}

/// Keys the backend accepted for task `uid`, in arrival order.
async fn keys_for(stack: &Stack, uid: &str) -> Vec<String> {
    stack
        .accepted("/api/tasks")
        .await
        .into_iter()
        .filter_map(|r| r.key)
        .filter(|k| k.starts_with(&format!("rt-{uid}-")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_two_seconds_delivers_distinct_keys_in_order_with_status_events_and_columns() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-every").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&[]).await;
    let api: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    let task = create(&api, task_json("tick", "2s", json!({}))).await;
    let uid = task.metadata.uid.clone().unwrap();

    let keys = wait_for_value(Duration::from_secs(40), "3 deliveries of task tick", || {
        let (stack, uid) = (&stack, uid.clone());
        async move {
            let keys = keys_for(stack, &uid).await;
            (keys.len() >= 3).then_some(keys)
        }
    })
    .await;
    let distinct: HashSet<_> = keys.iter().collect();
    assert_eq!(
        distinct.len(),
        keys.len(),
        "duplicate keys accepted: {keys:?}"
    );
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(sorted, keys, "occurrences arrived out of order");
    // Every request carried the user id and a body matching its key.
    for r in stack.accepted("/api/tasks").await {
        assert_eq!(r.user_id.as_deref(), Some("user-42"));
        assert!(r.scheduled_at.is_some() && r.due_at.is_some(), "{r:?}");
    }

    let task = wait_for_value(
        Duration::from_secs(20),
        "status to record 3 deliveries",
        || {
            let api = api.clone();
            async move {
                let t = get(&api, "tick").await;
                (t.status.as_ref().is_some_and(|s| s.delivered >= 3)).then_some(t)
            }
        },
    )
    .await;
    let status = task.status.clone().unwrap();
    let next = status.next_occurrence.clone().unwrap();
    assert!(next.idempotency_key.starts_with(&format!("rt-{uid}-")));
    let last = status.last_occurrence.clone().unwrap();
    assert!(
        keys.contains(&last.idempotency_key),
        "last occurrence {last:?} not among delivered keys"
    );
    assert!(last.backend_id.is_some(), "backend id kept: {last:?}");
    assert!(next.nominal > last.nominal);
    assert_eq!(status.upcoming.len(), 3);
    assert_eq!(status.observed_generation, task.metadata.generation);
    let ready = condition(&status.conditions, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Scheduled")
    );
    assert_eq!(status.schedule.as_deref(), Some("every 2s"));
    assert!(status.history.len() >= 3 && status.history.len() <= 10);

    // kubectl get shows the printer columns.
    let out = kubectl(["get", "rt", "tick", "-n", ns.name()]);
    let text = String::from_utf8_lossy(&out.stdout);
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "SCHEDULE",
            "NEXT",
            "LAST",
            "SUSPENDED",
            "SUSPEND",
            "REASON",
            "READY",
            "AGE"
        ],
        "{text}"
    );
    assert!(text.contains("every 2s") && text.contains("True"), "{text}");
    // kubectl wait works on the Ready condition (kstatus).
    let out = kubectl([
        "wait",
        "--for=condition=Ready",
        "rt/tick",
        "-n",
        ns.name(),
        "--timeout=10s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // First sight is in status alone: no event per task (10,000 tasks, 10,000 writes, not 20,000).
    let reasons = event_reasons(ns.name(), "");
    assert!(
        !reasons.iter().any(|r| r == "Scheduled"),
        "events: {reasons:?}"
    );
    // Metrics moved.
    let (code, metrics) = stack.operator_get(0, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("recur_occurrences_total{kind=\"RecurringTask\",outcome=\"delivered\"}"),
        "{metrics}"
    );
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_stops_deliveries_and_resume_does_not_backfill() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-suspend").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&[]).await;
    let api: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    let uid = create(
        &api,
        task_json("s", "1s", json!({"catchUp": {"policy": "All"}})),
    )
    .await
    .metadata
    .uid
    .unwrap();
    wait_for(Duration::from_secs(30), "a first delivery", || async {
        !keys_for(&stack, &uid).await.is_empty()
    })
    .await;

    api.patch(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": true}})),
    )
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(20),
        "status to show Suspended",
        || async {
            let t = get(&api, "s").await;
            t.status.as_ref().is_some_and(|s| {
                s.next_occurrence.is_none()
                    && condition(&s.conditions, "Ready").is_some_and(|c| c.reason == "Suspended")
            })
        },
    )
    .await;
    let before = keys_for(&stack, &uid).await.len();
    let suspended_at = chrono::Utc::now();
    // Stay suspended across several would-be occurrences; wait on the clock, with a deadline.
    wait_for(
        Duration::from_secs(10),
        "4 seconds of suspension",
        || async { chrono::Utc::now() - suspended_at > chrono::Duration::seconds(4) },
    )
    .await;
    assert_eq!(
        keys_for(&stack, &uid).await.len(),
        before,
        "delivered while suspended"
    );

    let resumed_at = chrono::Utc::now();
    api.patch(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(20),
        "a delivery after resume",
        || async { keys_for(&stack, &uid).await.len() > before },
    )
    .await;
    // Suspending and resuming are both told as events.
    wait_for(
        Duration::from_secs(20),
        "Suspended and Scheduled events",
        || async {
            let reasons = event_reasons(ns.name(), "");
            reasons.iter().any(|r| r == "Suspended") && reasons.iter().any(|r| r == "Scheduled")
        },
    )
    .await;
    // Nothing scheduled during the suspension was delivered (catchUp: All notwithstanding).
    for r in stack
        .accepted("/api/tasks")
        .await
        .iter()
        .filter(|r| r.key.as_deref().is_some_and(|k| k.contains(&uid)))
    {
        let at: chrono::DateTime<chrono::Utc> = r.scheduled_at.as_deref().unwrap().parse().unwrap();
        assert!(
            at < suspended_at || at > resumed_at,
            "occurrence {at} from the suspension was delivered"
        );
    }
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_does_not_fire_retroactively() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-edit").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&[]).await;
    let api: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    // Hourly from a start in the past: nothing is due in the next minutes.
    // Occurrences at half past, so none falls due while the test runs.
    let start = (chrono::Utc::now() - chrono::Duration::minutes(5 * 60 + 30)).to_rfc3339();
    let spec = json!({"schedule": {"every": "1h", "startAt": start}, "catchUp": {"policy": "All"}});
    let mut body = task_json("e", "1h", json!({}));
    body["spec"]["schedule"] = spec["schedule"].clone();
    body["spec"]["catchUp"] = spec["catchUp"].clone();
    let uid = create(&api, body).await.metadata.uid.unwrap();
    wait_for(Duration::from_secs(20), "a pending occurrence", || async {
        get(&api, "e")
            .await
            .status
            .is_some_and(|s| s.next_occurrence.is_some())
    })
    .await;
    // Edit to every 10 minutes from the same past start: dozens of past occurrences now "exist".
    let edited_at = chrono::Utc::now();
    api.patch(
        "e",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"schedule": {"every": "10m"}}})),
    )
    .await
    .unwrap();
    let next = wait_for_value(
        Duration::from_secs(20),
        "the pending occurrence to follow the edit",
        || async {
            let t = get(&api, "e").await;
            let s = t.status?;
            (s.observed_generation == t.metadata.generation).then_some(s.next_occurrence?)
        },
    )
    .await;
    assert!(
        next.nominal > edited_at,
        "next occurrence {} is before the edit",
        next.nominal
    );
    // Nothing scheduled before the edit was delivered because of it.
    for key in keys_for(&stack, &uid).await {
        let at = chrono::NaiveDateTime::parse_from_str(
            key.rsplit('-').next().unwrap().trim_end_matches('Z'),
            "%Y%m%dT%H%M%S",
        )
        .unwrap()
        .and_utc();
        assert!(
            at > edited_at,
            "the edit fired occurrence {key} from before it"
        );
    }
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_500_then_200_gets_the_occurrence_once() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-retry").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&[]).await;
    stack.faults(json!({"fail_next": 2})).await;
    let api: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    let uid = create(&api, task_json("r", "1h", json!({"schedule": {"every": "1h", "startAt": (chrono::Utc::now() + chrono::Duration::seconds(3)).to_rfc3339()}}))).await.metadata.uid.unwrap();
    let key = wait_for_value(
        Duration::from_secs(40),
        "the occurrence to be accepted after failures",
        || async { keys_for(&stack, &uid).await.into_iter().next() },
    )
    .await;
    let all: Vec<_> = stack
        .records()
        .await
        .into_iter()
        .filter(|r| r.key.as_deref() == Some(key.as_str()))
        .collect();
    assert_eq!(all.iter().filter(|r| r.accepted).count(), 1, "{all:?}");
    assert!(
        all.len() >= 3,
        "expected two failed attempts before success: {all:?}"
    );
    let status = wait_for_value(
        Duration::from_secs(20),
        "status to record the delivery",
        || async { get(&api, "r").await.status.filter(|s| s.delivered == 1) },
    )
    .await;
    assert_eq!(status.last_occurrence.as_ref().unwrap().attempts, 3);
    assert_eq!(status.last_failure.as_ref().unwrap().idempotency_key, key);
    assert_eq!(
        condition(&status.conditions, "Ready").unwrap().status,
        "True"
    );
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_and_restarting_the_operator_loses_and_duplicates_nothing() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-kill").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&[]).await;
    let api: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    let start = (chrono::Utc::now() + chrono::Duration::seconds(2))
        .with_nanosecond(0)
        .unwrap();
    let mut body = task_json(
        "k",
        "1s",
        json!({"catchUp": {"policy": "All", "maxOccurrences": 1000}}),
    );
    body["spec"]["schedule"]["startAt"] = json!(start.to_rfc3339());
    let uid = create(&api, body).await.metadata.uid.unwrap();
    for round in 0..3 {
        let seen = keys_for(&stack, &uid).await.len();
        wait_for(
            Duration::from_secs(30),
            &format!("deliveries before kill {round}"),
            || async { keys_for(&stack, &uid).await.len() >= seen + 2 },
        )
        .await;
        stack.kill_operator(0);
        // Down for a few occurrences.
        let killed = std::time::Instant::now();
        wait_for(Duration::from_secs(10), "3 s of downtime", || async {
            killed.elapsed() > Duration::from_secs(3)
        })
        .await;
        stack.restart_operator(0).await;
    }
    let end = chrono::Utc::now();
    // Every nominal second from start to end arrives exactly once (catchUp: All).
    let expected: Vec<String> = {
        let mut v = vec![];
        let mut t = start;
        while t <= end - chrono::Duration::seconds(1) {
            v.push(format!("rt-{uid}-{}", t.format("%Y%m%dT%H%M%S")));
            t += chrono::Duration::seconds(1);
        }
        v
    };
    wait_for(
        Duration::from_secs(60),
        "every expected occurrence to arrive",
        || async {
            let got: HashSet<String> = keys_for(&stack, &uid)
                .await
                .into_iter()
                .map(|k| k.trim_end_matches('Z').to_string())
                .collect();
            expected.iter().all(|k| got.contains(k))
        },
    )
    .await;
    let keys = keys_for(&stack, &uid).await;
    let distinct: HashSet<_> = keys.iter().collect();
    assert_eq!(
        distinct.len(),
        keys.len(),
        "an occurrence was accepted twice"
    );
    assert!(stack.operator_alive(0));
    ns.cleanup().await;
}

use chrono::Timelike;

/// The status once it records at least `n` scheduled deliveries.
async fn delivered_at_least(api: &Api<RecurringTask>, name: &str, n: u64) -> RecurringTask {
    wait_for_value(
        Duration::from_secs(40),
        &format!("{name} to record {n} deliveries"),
        || async move {
            let t = get(api, name).await;
            t.status
                .as_ref()
                .is_some_and(|s| s.delivered >= n)
                .then_some(t)
        },
    )
    .await
}

/// `historyLimit` records, newest first, each a delivery the backend accepted, none twice.
fn assert_history(task: &RecurringTask, accepted: &[String]) {
    let history = &task.status.as_ref().unwrap().history;
    let keys: Vec<&str> = history.iter().map(|r| r.idempotency_key.as_str()).collect();
    assert_eq!(history.len(), 3, "{keys:?}");
    assert_eq!(keys.iter().collect::<HashSet<_>>().len(), 3, "{keys:?}");
    assert!(
        history
            .windows(2)
            .all(|w| w[0].finished_at >= w[1].finished_at),
        "not newest first: {history:?}"
    );
    for key in &keys {
        assert!(accepted.iter().any(|a| a == key), "{key} never delivered");
    }
}

/// The watch cache holds tasks without their history (`docs/scaling.md`): every status write
/// puts its record first and drops those past `historyLimit` without the records it does not
/// hold, across a restart (the counts come back with the list) and with a manual run's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_keeps_the_newest_records_to_its_limit_though_the_cache_holds_none() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-history").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&[]).await;
    let api: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    let uid = create(&api, task_json("h", "1s", json!({"historyLimit": 3})))
        .await
        .metadata
        .uid
        .unwrap();

    let task = delivered_at_least(&api, "h", 5).await;
    assert_history(&task, &keys_for(&stack, &uid).await);
    let last = task
        .status
        .as_ref()
        .unwrap()
        .last_occurrence
        .clone()
        .unwrap();
    assert_eq!(
        task.status.as_ref().unwrap().history[0].idempotency_key,
        last.idempotency_key
    );

    stack.kill_operator(0);
    stack.restart_operator(0).await;
    let seen = task.status.as_ref().unwrap().delivered;
    let task = delivered_at_least(&api, "h", seen + 3).await;
    assert_history(&task, &keys_for(&stack, &uid).await);

    let out = kubectl([
        "annotate",
        "rt/h",
        "-n",
        ns.name(),
        "recur.dev/run-now=hist",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let task = wait_for_value(Duration::from_secs(30), "the manual run to finish", || {
        let api = api.clone();
        async move {
            let t = get(&api, "h").await;
            let ran = t.status.as_ref().and_then(|s| s.last_manual_run.as_ref());
            ran.is_some_and(|r| r.token == "hist").then_some(t)
        }
    })
    .await;
    let manual = format!("rt-{uid}-run-hist");
    let keys = keys_for(&stack, &uid).await;
    assert_history(&task, &keys);
    assert!(
        task.status
            .as_ref()
            .unwrap()
            .history
            .iter()
            .any(|r| r.idempotency_key == manual),
        "{:?}",
        task.status.as_ref().unwrap().history
    );
    assert_eq!(
        keys.iter().collect::<HashSet<_>>().len(),
        keys.len(),
        "a key delivered twice"
    );
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_only_the_operator_can_check_ends_ready_false_with_a_reason_and_event() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-invalid").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&[]).await;
    let api: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    let mut body = task_json("tz", "1h", json!({}));
    body["spec"]["schedule"] = json!({"cron": "0 9 * * *", "timeZone": "Europe/Berln"});
    create(&api, body).await;
    let cond = wait_for_value(
        Duration::from_secs(20),
        "Ready=False on an unknown zone",
        || async {
            let s = get(&api, "tz").await.status?;
            condition(&s.conditions, "Ready")
                .filter(|c| c.status == "False")
                .cloned()
        },
    )
    .await;
    assert_eq!(cond.reason, "InvalidSchedule");
    assert!(
        cond.message.contains("timeZone") && cond.message.contains("Europe/Berln"),
        "{}",
        cond.message
    );
    let warnings = event_reasons(ns.name(), "type=Warning");
    assert!(
        warnings.iter().any(|r| r == "InvalidSchedule"),
        "{warnings:?}"
    );
    // Fixing the spec makes it Ready again.
    api.patch(
        "tz",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"schedule": {"timeZone": "Europe/Berlin"}}})),
    )
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(20),
        "Ready=True after the fix",
        || async {
            get(&api, "tz").await.status.is_some_and(|s| {
                condition(&s.conditions, "Ready").is_some_and(|c| c.status == "True")
            })
        },
    )
    .await;
    assert!(stack.operator_alive(0));
    ns.cleanup().await;
}
