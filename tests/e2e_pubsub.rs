//! Occurrences published as CloudEvents through Dapr pub/sub, end to end: the real apiserver,
//! real daprd with the `pubsub.redis` component, Redis from Debian, two subscriber apps each
//! behind its own daprd (so each gets every event), and `recur run` as a process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use kube::api::{Api, PostParams};
use recur::api::{RecurringTask, Reminder, condition};
use serde_json::{Value, json};
use support::stack::{Event, PUBSUB, Stack};
use support::webhook::{HOLD, Webhook, hold_status_policy};
use support::{TestNamespace, client, kubectl, kubectl_input, wait_for, wait_for_value};

fn real_dapr() -> bool {
    std::env::var("RECUR_REAL_DAPR").as_deref() != Ok("0")
}

/// A task publishing every `every` to `topic`, from `start`.
fn task(name: &str, every: &str, topic: &str, start: DateTime<Utc>) -> RecurringTask {
    serde_json::from_value(json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
        "metadata": {"name": name},
        "spec": {
            "userId": "user-7", "title": format!("task {name}"),
            "schedule": {"every": every, "startAt": start.to_rfc3339()},
            "catchUp": {"policy": "All", "maxOccurrences": 1000},
            "payload": {"note": "a \"quoted\" value\nwith a newline"},
            "target": {"pubsub": {"name": PUBSUB, "topic": topic}}
        }
    }))
    .unwrap()
}

/// A whole second a little ahead, so the first occurrence is not missed while the task is made.
fn soon() -> DateTime<Utc> {
    (Utc::now() + chrono::Duration::seconds(3))
        .with_nanosecond(0)
        .unwrap()
}

fn key(uid: &str, t: DateTime<Utc>) -> String {
    support::checker::task_key(uid, t)
}

/// The ids of a subscriber's events, in arrival order.
fn ids(events: &[Event]) -> Vec<String> {
    events.iter().filter_map(|e| e.id.clone()).collect()
}

/// Each of `expected` arrived, in order of first arrival, and nothing else did; returns how
/// many arrivals were redeliveries of an id already seen (at-least-once brokers may repeat).
fn all_in_order(events: &[Event], expected: &[String], who: &str) -> usize {
    let mut first_seen = vec![];
    let mut seen = BTreeSet::new();
    for id in ids(events) {
        if seen.insert(id.clone()) {
            first_seen.push(id);
        }
    }
    assert_eq!(first_seen, expected, "{who}: ids in order of first arrival");
    events.len() - first_seen.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_subscribers_get_every_occurrence_once_in_order_with_its_key_as_id() {
    if !real_dapr() {
        return;
    }
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-pubsub").await;
    let topic = format!("{}.occurrences", ns.name());
    let mut stack = Stack::start_with_pubsub(ns.name(), &[&topic]).await;
    stack.start_operator(&[]).await;
    let api: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    let start = soon();
    let created = api
        .create(&PostParams::default(), &task("ticks", "1s", &topic, start))
        .await
        .unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    let expected: Vec<String> = (0..6)
        .map(|i| key(&uid, start + chrono::Duration::seconds(i)))
        .collect();

    for subscriber in 0..2 {
        stack
            .wait_events(subscriber, Duration::from_secs(60), "6 events", |e| {
                e.len() >= 6
            })
            .await;
    }
    // The status agrees: delivered, each key once.
    let task = wait_for_value(Duration::from_secs(30), "6 delivered in status", || {
        let api = api.clone();
        async move {
            let t = api.get("ticks").await.unwrap();
            (t.status.as_ref()?.delivered >= 6).then_some(t)
        }
    })
    .await;
    assert!(
        task.status
            .unwrap()
            .history
            .iter()
            .all(|r| r.backend_id.is_none())
    );
    for subscriber in 0..2 {
        let events = stack.events(subscriber).await;
        let head: Vec<Event> = events
            .iter()
            .filter(|e| e.id.as_ref().is_some_and(|id| expected.contains(id)))
            .cloned()
            .collect();
        let repeats = all_in_order(&head, &expected, &format!("subscriber {subscriber}"));
        assert_eq!(repeats, 0, "no publish was retried, so no id repeats");
        let first = &head[0];
        // What a consumer gets (the README quotes it).
        println!(
            "{}",
            serde_json::to_string_pretty(&first.cloudevent).unwrap()
        );
        assert_eq!(first.kind.as_deref(), Some("dev.recur.occurrence.due"));
        assert_eq!(
            first.source.as_deref(),
            Some(format!("/namespaces/{}/recurringtasks/ticks", ns.name()).as_str())
        );
        assert_eq!(first.subject.as_deref(), Some("user-7"));
        assert_eq!(
            first.time.as_deref(),
            Some(
                start
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                    .as_str()
            )
        );
        assert_eq!(first.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(first.topic.as_deref(), Some(topic.as_str()));
        let data = first.data.clone().unwrap();
        assert_eq!(data["idempotency_key"], expected[0]);
        assert_eq!(data["trigger"], "schedule");
        assert_eq!(data["task"]["uid"], uid.as_str());
        assert_eq!(
            data["payload"]["note"],
            "a \"quoted\" value\nwith a newline"
        );
    }

    // A reminder publishes too, as `dev.recur.reminder.due`.
    let reminders: Api<Reminder> = Api::namespaced(client.clone(), ns.name());
    let due = soon();
    let rem: Reminder = serde_json::from_value(json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "Reminder",
        "metadata": {"name": "call-back"},
        "spec": {"userId": "user-7", "title": "Call back", "dueAt": due.to_rfc3339(),
                 "target": {"pubsub": {"name": PUBSUB, "topic": topic}}}
    }))
    .unwrap();
    reminders
        .create(&PostParams::default(), &rem)
        .await
        .unwrap();
    let events = stack
        .wait_events(1, Duration::from_secs(60), "the reminder's event", |e| {
            e.iter()
                .any(|e| e.kind.as_deref() == Some("dev.recur.reminder.due"))
        })
        .await;
    let event = events
        .iter()
        .find(|e| e.kind.as_deref() == Some("dev.recur.reminder.due"))
        .unwrap();
    assert!(
        event.id.as_deref().is_some_and(|id| id.starts_with("rem-")),
        "{event:?}"
    );
    assert_eq!(
        event.source.as_deref(),
        Some(format!("/namespaces/{}/reminders/call-back", ns.name()).as_str())
    );
    assert_eq!(event.data.as_ref().unwrap()["title"], "Call back");
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_with_consumers_down_loses_nothing() {
    if !real_dapr() {
        return;
    }
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-pubsub-redis").await;
    let topic = format!("{}.occurrences", ns.name());
    let mut stack = Stack::start_with_pubsub(ns.name(), &[&topic]).await;
    stack.start_operator(&[]).await;
    let api: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    let start = soon();
    let uid = api
        .create(&PostParams::default(), &task("ticks", "1s", &topic, start))
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    stack
        .wait_events(0, Duration::from_secs(60), "the first events", |e| {
            e.len() >= 2
        })
        .await;

    // Consumers down, then the broker down while occurrences fall due: the publishes fail and
    // recur retries them with the same ids; then the broker, then the consumers, come back.
    stack.subscribers_down().await;
    stack.stop_redis().await;
    let down_at = Utc::now();
    wait_for_value(
        Duration::from_secs(30),
        "a failed publish in status",
        || {
            let api = api.clone();
            async move {
                let t = api.get("ticks").await.unwrap();
                let p = t.status?.next_occurrence?;
                (p.attempts >= 1).then_some(())
            }
        },
    )
    .await;
    // The backlog is visible to whoever is paged: recur_pending_occurrences counts the task.
    wait_for(
        Duration::from_secs(30),
        "recur_pending_occurrences >= 1",
        || async { pending(&stack).await >= 1.0 },
    )
    .await;
    // A whole scheduled second inside the outage, whatever the waits above found true already
    // (a backlog from before the stop satisfies both at once: seen once in CI, where Redis was
    // then back before any occurrence fell due).
    let due_inside = down_at.with_nanosecond(0).unwrap() + chrono::Duration::seconds(2);
    while Utc::now() <= due_inside {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack.start_redis().await;
    let up_at = Utc::now();
    let delivered_before_up = api.get("ticks").await.unwrap().status.unwrap().delivered;
    // The retries back off (and the component's breaker may open) while Redis is down: the wait
    // covers the longest backoff reached here.
    wait_for(
        Duration::from_secs(180),
        "publishes after Redis is back",
        || {
            let api = api.clone();
            async move {
                api.get("ticks").await.unwrap().status.unwrap().delivered >= delivered_before_up + 3
            }
        },
    )
    .await;
    let recovered_in = Utc::now() - up_at;
    // Caught up: the backlog is gone (the task's next occurrence is not due yet).
    wait_for(
        Duration::from_secs(60),
        "recur_pending_occurrences back to 0",
        || async { pending(&stack).await == 0.0 },
    )
    .await;
    stack.subscribers_up().await;

    let cutoff = Utc::now().with_nanosecond(0).unwrap() - chrono::Duration::seconds(2);
    let expected: Vec<String> = (0..)
        .map(|i| start + chrono::Duration::seconds(i))
        .take_while(|t| *t <= cutoff)
        .map(|t| key(&uid, t))
        .collect();
    let while_down = (0..)
        .map(|i| start + chrono::Duration::seconds(i))
        .take_while(|t| *t <= cutoff)
        .filter(|t| *t >= down_at && *t <= up_at)
        .count();
    assert!(while_down >= 1, "occurrences fell due while Redis was down");
    let mut redeliveries = 0;
    for subscriber in 0..2 {
        let events = stack
            .wait_events(
                subscriber,
                Duration::from_secs(180),
                "every occurrence",
                |e| {
                    let got: BTreeSet<String> = ids(e).into_iter().collect();
                    expected.iter().all(|k| got.contains(k))
                },
            )
            .await;
        let head: Vec<Event> = events
            .into_iter()
            .filter(|e| e.id.as_ref().is_some_and(|id| expected.contains(id)))
            .collect();
        redeliveries += all_in_order(&head, &expected, &format!("subscriber {subscriber}"));
    }
    println!(
        "pubsub redis restart: expected={} lost=0 redeliveries={redeliveries} (consumers dedup on id); {while_down} fell due while Redis was down; 3 more published {} ms after it was back",
        expected.len(),
        recovered_in.num_milliseconds()
    );
    ns.cleanup().await;
}

/// `recur_pending_occurrences{kind="RecurringTask"}` of operator 0 (-1 before it is first set).
async fn pending(stack: &Stack) -> f64 {
    let (_, text) = stack.operator_get(0, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(r#"recur_pending_occurrences{kind="RecurringTask"} "#))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0)
}

fn label(ns: &str, name: &str, set: bool) {
    let arg = if set {
        format!("{HOLD}=true")
    } else {
        format!("{HOLD}-")
    };
    let out = kubectl(["label", "-n", ns, &format!("recurringtask/{name}"), &arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_but_not_recorded_is_published_again_with_the_same_id() {
    if !real_dapr() {
        return;
    }
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-pubsub-kill").await;
    let topic = format!("{}.occurrences", ns.name());
    let mut stack = Stack::start_with_pubsub(ns.name(), &[&topic]).await;
    let _policy = hold_status_policy(ns.name());
    stack.start_operator(&[]).await;
    let api: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());

    // The policy takes effect when the API server has loaded it: a probe task's status write is
    // refused then.
    let probe = api
        .create(&PostParams::default(), &task("probe", "1h", &topic, soon()))
        .await
        .unwrap();
    label(ns.name(), "probe", true);
    wait_for(
        Duration::from_secs(30),
        "the hold policy to refuse status writes",
        || {
            let out = kubectl([
                "patch",
                "-n",
                ns.name(),
                "recurringtask/probe",
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"skipped":7}}"#,
            ]);
            let held = !out.status.success()
                && String::from_utf8_lossy(&out.stderr).contains("held by the test");
            async move { held }
        },
    )
    .await;
    drop(probe);

    // Hourly from a minute ahead: the pending occurrence is in status long before it is due.
    let start = (Utc::now() + chrono::Duration::seconds(20))
        .with_nanosecond(0)
        .unwrap();
    let uid = api
        .create(&PostParams::default(), &task("once", "1h", &topic, start))
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let k = key(&uid, start);
    wait_for(Duration::from_secs(30), "the pending key in status", || {
        let (api, k) = (api.clone(), k.clone());
        async move {
            api.get("once")
                .await
                .unwrap()
                .status
                .and_then(|s| s.next_occurrence)
                .is_some_and(|p| p.idempotency_key == k)
        }
    })
    .await;
    label(ns.name(), "once", true);
    // Published (the subscriber has it), not recorded (the status write is refused); then the
    // operator dies.
    stack
        .wait_events(0, Duration::from_secs(60), "the occurrence's event", |e| {
            ids(e).contains(&k)
        })
        .await;
    stack.kill_operator(0);
    let status = api.get("once").await.unwrap().status.unwrap();
    assert_eq!(status.delivered, 0, "the delivery was not recorded");
    label(ns.name(), "once", false);
    let before = ids(&stack.events(0).await)
        .iter()
        .filter(|i| **i == k)
        .count();
    stack.restart_operator(0).await;

    let task = wait_for_value(Duration::from_secs(60), "the delivery recorded", || {
        let api = api.clone();
        async move {
            let t = api.get("once").await.unwrap();
            (t.status.as_ref()?.delivered == 1).then_some(t)
        }
    })
    .await;
    let status = task.status.unwrap();
    assert_eq!(status.last_occurrence.unwrap().idempotency_key, k);
    for subscriber in 0..2 {
        let events = stack
            .wait_events(
                subscriber,
                Duration::from_secs(30),
                "the republished event",
                |e| subscriber != 0 || ids(e).iter().filter(|i| **i == k).count() > before,
            )
            .await;
        let mine: Vec<&Event> = events
            .iter()
            .filter(|e| e.source.as_deref().is_some_and(|s| s.ends_with("/once")))
            .collect();
        let distinct: BTreeSet<&str> = mine.iter().filter_map(|e| e.id.as_deref()).collect();
        assert_eq!(
            distinct,
            BTreeSet::from([k.as_str()]),
            "every publish of the occurrence carries its key"
        );
        assert!(
            mine.len() >= 2,
            "published before the kill and again after: {}",
            mine.len()
        );
    }
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_of_another_namespace_is_refused_at_apply_and_by_the_operator() {
    if !real_dapr() {
        return;
    }
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-pubsub-tenancy").await;
    let topic = format!("{}.occurrences", ns.name());
    // The subscribers listen on the foreign topic too: were anything published there, they
    // would have it.
    let mut stack = Stack::start_with_pubsub(ns.name(), &[&topic, "payments.occurrences"]).await;
    let webhook = Webhook::create(ns.name());
    let flags = webhook.flags(webhook.port);
    stack
        .start_operator(&flags.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    webhook.answering().await;
    let foreign = task("sneaky", "1s", "payments.occurrences", soon());
    let mut manifest = serde_json::to_value(&foreign).unwrap();
    manifest["metadata"]["namespace"] = Value::String(ns.name().to_string());
    let out = kubectl_input(["apply", "-f", "-"], manifest.to_string().as_bytes());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "admitted a foreign topic");
    assert!(err.contains("denied the request"), "{err}");
    assert!(
        err.contains(r#"spec.target.pubsub: topic "payments.occurrences" of pubsub "pubsub" is not a topic of namespace"#),
        "{err}"
    );

    // Admitted while the webhook was away (deleted here), the operator refuses it too.
    drop(webhook);
    let api: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    wait_for(
        Duration::from_secs(30),
        "the apply to pass without the webhook",
        || {
            let ok = kubectl_input(["apply", "-f", "-"], manifest.to_string().as_bytes())
                .status
                .success();
            async move { ok }
        },
    )
    .await;
    let ready = wait_for_value(Duration::from_secs(30), "Ready=False", || {
        let api = api.clone();
        async move {
            let t = api.get("sneaky").await.unwrap();
            let c = condition(&t.status.as_ref()?.conditions, "Ready")?.clone();
            (c.status == "False").then_some(c)
        }
    })
    .await;
    assert_eq!(ready.reason, "PolicyDenied");
    assert!(
        ready.message.contains("payments.occurrences"),
        "{}",
        ready.message
    );
    let status = api.get("sneaky").await.unwrap().status.unwrap();
    assert_eq!(status.delivered, 0);
    for subscriber in 0..2 {
        let events = stack.events(subscriber).await;
        assert!(
            events
                .iter()
                .all(|e| e.topic.as_deref() != Some("payments.occurrences")),
            "nothing was published to the foreign topic: {events:?}"
        );
    }
    ns.cleanup().await;
}
