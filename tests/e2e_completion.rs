//! Completion feedback end to end, on the real control plane, real daprd and a real Redis: the
//! backend's `task.completed` events reach the operator through its own sidecar's declarative
//! Subscriptions, and a completion of a delivered occurrence updates the task's status once;
//! repeated, unknown and foreign events change nothing and are counted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use kube::api::{Api, PostParams};
use recur::api::{Outcome, RecurringTask, RecurringTaskStatus, condition};
use serde_json::{Value, json};
use support::stack::{PUBSUB, Stack};
use support::{TestNamespace, client, wait_for_value};

/// How long an event may take from the publish to the operator (a loaded machine included).
const DELIVERY: Duration = Duration::from_secs(60);

/// A completion as a backend publishes it: its own CloudEvent naming the occurrence's key.
fn completed(id: &str, key: &str, time: &str) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "backend",
        "type": "task.completed",
        "time": time,
        "datacontenttype": "application/json",
        "data": {"idempotencyKey": key, "taskId": "t-1"},
    })
}

async fn publish(stack: &Stack, topic: &str, event: &Value) {
    let answer = stack.publish(topic, event).await.unwrap();
    assert_eq!(answer, (204, String::new()), "publishing {event}");
}

/// Publishes `body` as it is (`metadata.rawPayload=true`): daprd neither wraps it nor sets its
/// `topic` and `pubsubname`, so whatever the body claims reaches the subscribers.
async fn publish_raw(stack: &Stack, topic: &str, body: &Value) {
    let url = format!(
        "http://127.0.0.1:{}/v1.0/publish/{PUBSUB}/{topic}?metadata.rawPayload=true",
        stack.dapr_port
    );
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204, "raw publish of {body}");
}

/// `recur_completions_total{result="<result>"}` of operator 0 (0 before the first).
async fn completions(stack: &Stack, result: &str) -> u64 {
    let (_, metrics) = stack.operator_get(0, "/metrics").await;
    let series = format!("recur_completions_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0)
}

async fn wait_completions(stack: &Stack, result: &str, n: u64) {
    wait_for_value(DELIVERY, &format!("{n} completion(s) {result}"), || async {
        (completions(stack, result).await >= n).then_some(())
    })
    .await;
    assert_eq!(completions(stack, result).await, n, "{result}");
}

async fn status(api: &Api<RecurringTask>, name: &str) -> RecurringTaskStatus {
    api.get(name).await.unwrap().status.unwrap_or_default()
}

/// The keys of the task's first `n` delivered occurrences, oldest first.
async fn delivered_keys(api: &Api<RecurringTask>, name: &str, n: usize) -> Vec<String> {
    wait_for_value(DELIVERY, &format!("{n} deliveries of {name}"), || async {
        let mut keys: Vec<String> = status(api, name)
            .await
            .history
            .iter()
            .rev()
            .filter(|r| r.outcome == Outcome::Delivered)
            .map(|r| r.idempotency_key.clone())
            .collect();
        keys.truncate(n);
        (keys.len() == n).then_some(keys)
    })
    .await
}

fn completed_at(s: &RecurringTaskStatus, key: &str) -> Option<chrono::DateTime<Utc>> {
    s.history
        .iter()
        .find(|r| r.idempotency_key == key)
        .unwrap_or_else(|| panic!("{key} left the history: {s:?}"))
        .completed_at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_event_updates_status_once_and_foreign_events_are_refused() {
    if std::env::var("RECUR_REAL_DAPR").as_deref() == Ok("0") {
        eprintln!("skipped: completion feedback needs real daprd (RECUR_REAL_DAPR=0)");
        return;
    }
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-completion").await;
    let other = TestNamespace::new(&client, "e2e-completion-other").await;
    let own_topic = format!("{}.completed", ns.name());
    let other_topic = format!("{}.completed", other.name());
    // The operator's sidecar subscribes to both topics (as one release serving both tenants
    // would); a subscriber records what reaches the task's own topic.
    let mut stack =
        Stack::start_with_completions(ns.name(), &[&own_topic], &[&own_topic, &other_topic]).await;
    let app_addr = format!("127.0.0.1:{}", stack.recur_app_port());
    stack.start_operator(&["--app-addr", &app_addr]).await;

    let api: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    let task: RecurringTask = serde_json::from_value(json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
        "metadata": {"name": "report"},
        "spec": {"userId": "user-42", "title": "Report", "schedule": {"every": "5s"},
                 "historyLimit": 100, "completion": {"topic": own_topic}},
    }))
    .unwrap();
    let uid = api
        .create(&PostParams::default(), &task)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let keys = delivered_keys(&api, "report", 2).await;
    let (first, second) = (&keys[0], &keys[1]);

    // The backend completes the first occurrence: status records it.
    let done_at =
        (Utc::now() - chrono::Duration::seconds(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let event = completed("done-1", first, &done_at);
    publish(&stack, &own_topic, &event).await;
    let s = wait_for_value(DELIVERY, "status.completed = 1", || async {
        let s = status(&api, "report").await;
        (s.completed == Some(1)).then_some(s)
    })
    .await;
    let last = s.last_completion.clone().unwrap();
    assert_eq!(&last.idempotency_key, first);
    assert_eq!(
        last.completed_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        done_at
    );
    assert!(last.received_at >= last.completed_at, "{last:?}");
    let due = s
        .history
        .iter()
        .find(|r| &r.idempotency_key == first)
        .unwrap()
        .due;
    let after_due = last.seconds_after_due.unwrap();
    assert_eq!(
        after_due,
        ((last.completed_at - due).num_milliseconds().max(0) as f64) / 1000.0
    );
    assert_eq!(completed_at(&s, first), Some(last.completed_at));
    assert_eq!(completed_at(&s, second), None);
    assert_eq!(completions(&stack, "accepted").await, 1);
    let (_, metrics) = stack.operator_get(0, "/metrics").await;
    assert!(
        metrics.contains("recur_completion_seconds_count 1"),
        "{metrics}"
    );
    // The subscriber on the same topic saw the very event (the operator is one consumer group).
    stack
        .wait_events(0, DELIVERY, "the completion event", |events| {
            events.iter().any(|e| e.id.as_deref() == Some("done-1"))
        })
        .await;

    // The same event again (a redelivery, a retrying backend): counted once.
    publish(&stack, &own_topic, &event).await;
    wait_completions(&stack, "duplicate", 1).await;
    let s = status(&api, "report").await;
    assert_eq!(s.completed, Some(1));
    assert_eq!(s.last_completion.as_ref(), Some(&last));

    // Keys of no task recur serves, and a key of this task it never delivered: ignored.
    let stranger = "rt-00000000-1111-2222-3333-444455556666-20260101T000000Z";
    publish(&stack, &own_topic, &completed("done-2", stranger, &done_at)).await;
    let never = format!("rt-{uid}-run-never-requested");
    publish(&stack, &own_topic, &completed("done-3", &never, &done_at)).await;
    wait_completions(&stack, "unknown", 2).await;

    // The second occurrence's completion on another namespace's topic: refused. Also when the
    // event claims the task's topic (a raw publish passes the claim through unchanged).
    publish(&stack, &other_topic, &completed("done-4", second, &done_at)).await;
    let mut forged = completed("done-5", second, &done_at);
    forged["topic"] = json!(own_topic);
    forged["pubsubname"] = json!(PUBSUB);
    publish_raw(&stack, &other_topic, &forged).await;
    wait_completions(&stack, "refused", 2).await;
    let s = status(&api, "report").await;
    assert_eq!(s.completed, Some(1));
    assert_eq!(s.last_completion.as_ref(), Some(&last));
    assert_eq!(completed_at(&s, second), None);

    // The same completion on the task's own topic is taken: the refusals were the topic's.
    publish(&stack, &own_topic, &completed("done-6", second, &done_at)).await;
    let s = wait_for_value(DELIVERY, "status.completed = 2", || async {
        let s = status(&api, "report").await;
        (s.completed == Some(2)).then_some(s)
    })
    .await;
    assert_eq!(&s.last_completion.as_ref().unwrap().idempotency_key, second);
    assert!(completed_at(&s, second).is_some());
    assert_eq!(completed_at(&s, first), Some(last.completed_at));
    assert_eq!(completions(&stack, "accepted").await, 2);
    assert_eq!(completions(&stack, "invalid").await, 0);
    // Deliveries went on meanwhile: the controller's writes and the completions' did not undo
    // each other.
    assert!(s.delivered >= 2, "{s:?}");

    // A task may not listen on another namespace's topic.
    let foreign: RecurringTask = serde_json::from_value(json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
        "metadata": {"name": "eavesdropper"},
        "spec": {"userId": "user-42", "title": "Listen", "schedule": {"every": "1h"},
                 "completion": {"topic": other_topic}},
    }))
    .unwrap();
    api.create(&PostParams::default(), &foreign).await.unwrap();
    let message = wait_for_value(DELIVERY, "eavesdropper PolicyDenied", || async {
        let s = status(&api, "eavesdropper").await;
        let ready = condition(&s.conditions, "Ready")?;
        (ready.status == "False" && ready.reason == "PolicyDenied").then(|| ready.message.clone())
    })
    .await;
    assert!(message.starts_with("spec.completion: "), "{message}");

    drop(stack);
    other.cleanup().await;
    ns.cleanup().await;
}
