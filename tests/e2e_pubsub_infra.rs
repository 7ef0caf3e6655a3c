//! The pub/sub test infrastructure on real daprd and a real Redis, without the operator: CloudEvents
//! published through recur's sidecar reach two independent subscribers, with their ids, in order,
//! and nothing is lost when Redis restarts while the consumers are down. Also pins down what daprd
//! does with a CloudEvent it is given (`application/cloudevents+json`), which decides how the
//! operator builds its events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::stack::{Event, PUBSUB, Stack};
use support::{unique_name, wait_for_value};

/// How long a published event may take to reach a subscriber (a loaded CI machine included).
const DELIVERY: Duration = Duration::from_secs(60);

/// An occurrence as the operator would publish it: a complete CloudEvent 1.0 of our own.
fn occurrence(ns: &str, id: &str, n: u32) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": format!("/recur/namespaces/{ns}/recurringtasks/standup"),
        "type": "dev.recur.occurrence",
        "subject": "standup",
        "time": format!("2030-01-01T09:{n:02}:00Z"),
        "datacontenttype": "application/json",
        "data": {"task": "standup", "n": n, "big": 12_345_678_901_234_567_890_u64},
    })
}

/// Publishes until daprd accepts (204), retrying what fails (Redis restarting); returns how many
/// attempts it took.
async fn publish_retrying(stack: &Stack, topic: &str, event: &Value) -> u32 {
    let attempts = AtomicU32::new(0);
    let last = std::sync::Mutex::new(String::new());
    let what = format!("daprd to accept the publication of {}", event["id"]);
    wait_for_value(Duration::from_secs(60), &what, || async {
        attempts.fetch_add(1, Ordering::SeqCst);
        let answer = stack.publish(topic, event).await;
        let accepted = matches!(answer, Ok((204, _)));
        *last.lock().unwrap() = format!("{answer:?}");
        accepted.then_some(())
    })
    .await;
    let attempts = attempts.load(Ordering::SeqCst);
    if attempts > 1 {
        let last = last.lock().unwrap();
        eprintln!(
            "published {} after {attempts} attempts ({last})",
            event["id"]
        );
    }
    attempts
}

fn ids(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e.id.as_deref().unwrap_or("<none>"))
        .collect()
}

fn has_all(events: &[Event], want: &[String]) -> bool {
    let got: HashSet<&str> = ids(events).into_iter().collect();
    want.iter().all(|id| got.contains(id.as_str()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_subscribers_get_every_event_in_order_across_a_redis_restart_with_consumers_down() {
    if std::env::var("RECUR_REAL_DAPR").as_deref() == Ok("0") {
        eprintln!("skipped: pub/sub needs real daprd (RECUR_REAL_DAPR=0)");
        return;
    }
    let ns = unique_name("pubsub-infra");
    let topic = format!("{ns}.occurrences");
    let stack = Stack::start_with_pubsub(&ns, &[&topic]).await;
    let all: Vec<String> = (1..=10).map(|n| format!("{ns}-occ-{n}")).collect();
    let published: Vec<Value> = (1..=10)
        .map(|n| occurrence(&ns, &all[n as usize - 1], n))
        .collect();

    // Both subscribers get the first five, ids and order kept.
    for event in &published[..5] {
        let answer = stack.publish(&topic, event).await.unwrap();
        assert_eq!(answer, (204, String::new()), "publishing {}", event["id"]);
    }
    for sub in 0..2 {
        let events = stack
            .wait_events(sub, DELIVERY, "the first 5 events", |e| {
                has_all(e, &all[..5])
            })
            .await;
        assert_eq!(
            ids(&events),
            all[..5],
            "subscriber {sub}: in order, once each"
        );
        // daprd passes our CloudEvent through: every field as published, nothing wrapped; it
        // adds topic, pubsubname and the (here empty) trace fields.
        for (event, sent) in events.iter().zip(&published) {
            let mut expected = sent.as_object().unwrap().clone();
            expected.insert("topic".into(), json!(topic));
            expected.insert("pubsubname".into(), json!(PUBSUB));
            for trace in ["traceid", "traceparent", "tracestate"] {
                let added = &event.cloudevent[trace];
                assert!(added.is_string(), "{trace} in {}", event.cloudevent);
                expected.insert(trace.into(), added.clone());
            }
            assert_eq!(
                event.cloudevent,
                Value::Object(expected),
                "subscriber {sub}"
            );
            assert_eq!(
                event.content_type.as_deref(),
                Some("application/cloudevents+json")
            );
        }
        eprintln!(
            "subscriber {sub} received (first): {}; traceparent header {:?}",
            events[0].cloudevent, events[0].traceparent_header
        );
    }

    // A pub/sub component that does not exist.
    let url = format!(
        "http://127.0.0.1:{}/v1.0/publish/no-such-pubsub/{topic}",
        stack.dapr_port
    );
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/cloudevents+json")
        .body(published[0].to_string())
        .send()
        .await
        .unwrap();
    let (status, body) = (resp.status().as_u16(), resp.text().await.unwrap());
    eprintln!("unknown pubsub: {status} {body}");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("ERR_PUBSUB_NOT_FOUND"), "{body}");

    // Consumers down; Redis restarted while events fall due; Redis down for a while.
    stack.subscribers_down().await;
    stack.restart_redis().await;
    for event in &published[5..8] {
        publish_retrying(&stack, &topic, event).await;
    }
    stack.stop_redis().await;
    let probe = json!({"specversion": "1.0", "id": format!("{ns}-probe"), "source": "test", "type": "probe"});
    let started = Instant::now();
    let (status, body) = stack.publish(&format!("{ns}.probe"), &probe).await.unwrap();
    eprintln!(
        "publish while Redis is down: {status} after {:?}: {body}",
        started.elapsed()
    );
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("ERR_PUBSUB_PUBLISH_MESSAGE"), "{body}");
    stack.start_redis().await;
    for event in &published[8..] {
        publish_retrying(&stack, &topic, event).await;
    }
    // Nothing reached the subscribers while their daprd was down.
    for sub in 0..2 {
        assert_eq!(ids(&stack.events(sub).await), all[..5], "subscriber {sub}");
    }

    // Consumers up: each gets the rest, once each, after the first five.
    stack.subscribers_up().await;
    for sub in 0..2 {
        let events = stack
            .wait_events(sub, DELIVERY, "all 10 events", |e| has_all(e, &all))
            .await;
        let got = ids(&events);
        let distinct: HashSet<&str> = got.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            got.len(),
            "subscriber {sub}: an event came twice: {got:?}"
        );
        assert_eq!(got, all, "subscriber {sub}: all 10, in publishing order");
        for (event, sent) in events.iter().zip(&published) {
            assert_eq!(event.kind.as_deref(), Some("dev.recur.occurrence"));
            assert_eq!(event.time.as_deref(), sent["time"].as_str());
            assert_eq!(event.data.as_ref(), Some(&sent["data"]));
            assert_eq!(event.topic.as_deref(), Some(topic.as_str()));
        }
    }
}
