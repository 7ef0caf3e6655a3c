//! The subscriber over real HTTP on loopback, fed as daprd feeds it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::time::Duration;

use super::*;
use crate::net::testing::{Running, http, start};

async fn subscriber() -> Running {
    start(|_| {
        router(SubscriberConfig {
            name: "subscriber-a".into(),
            log: false,
        })
    })
    .await
}

/// A CloudEvent as daprd delivers it: the publisher's fields plus topic, pubsubname and trace.
fn cloudevent(id: &str) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "recur/team-a/standup",
        "type": "dev.recur.occurrence",
        "subject": "standup",
        "time": "2030-01-01T09:00:00Z",
        "datacontenttype": "application/json",
        "data": {"task": "standup", "n": 1},
        "topic": "team-a.occurrences",
        "pubsubname": "pubsub",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    })
}

async fn deliver(http: &reqwest::Client, server: &Running, body: String) -> (u16, Value) {
    let response = http
        .post(server.url("/events"))
        .header("content-type", "application/cloudevents+json")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn events(http: &reqwest::Client, server: &Running) -> Vec<Value> {
    http.get(server.url("/_dev/events"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn records_each_delivery_in_arrival_order_without_deduplicating() {
    let server = subscriber().await;
    let http = http(Duration::from_secs(5));
    for id in ["a", "b", "a"] {
        let (status, body) = deliver(&http, &server, cloudevent(id).to_string()).await;
        assert_eq!((status, body), (200, json!({"status": "SUCCESS"})), "{id}");
    }
    let events = events(&http, &server).await;
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a", "b", "a"], "a redelivery is a record of its own");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let first = &events[0];
    assert_eq!(first["type"], "dev.recur.occurrence");
    assert_eq!(first["source"], "recur/team-a/standup");
    assert_eq!(first["subject"], "standup");
    assert_eq!(first["time"], "2030-01-01T09:00:00Z");
    assert_eq!(first["topic"], "team-a.occurrences");
    assert_eq!(first["pubsubname"], "pubsub");
    assert_eq!(first["datacontenttype"], "application/json");
    assert_eq!(first["data"], json!({"task": "standup", "n": 1}));
    assert_eq!(first["content_type"], "application/cloudevents+json");
    assert_eq!(
        first["traceparent_header"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(
        first["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "the event's own traceparent attribute"
    );
    assert_eq!(first["cloudevent"], cloudevent("a"), "the body as received");
    let received = chrono::DateTime::parse_from_rfc3339(first["received_at"].as_str().unwrap());
    assert!(received.is_ok(), "{first}");
}

#[tokio::test]
async fn acknowledges_and_keeps_what_is_not_a_cloudevent() {
    let server = subscriber().await;
    let http = http(Duration::from_secs(5));
    let (status, body) = deliver(&http, &server, "not json".into()).await;
    assert_eq!((status, body), (200, json!({"status": "SUCCESS"})));
    let (status, _) = deliver(&http, &server, json!({"id": 7}).to_string()).await;
    assert_eq!(status, 200);
    let events = events(&http, &server).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["cloudevent"], "not json");
    assert_eq!(events[0]["id"], Value::Null);
    assert_eq!(
        events[1]["id"], "7",
        "a non-string field is shown as its JSON"
    );
    assert_eq!(events[1]["data"], Value::Null);
    assert!(
        events[1].get("traceparent").is_none(),
        "no traceparent attribute, no field: {}",
        events[1]
    );
}

#[tokio::test]
async fn clearing_keeps_numbering_and_other_routes_are_not_found() {
    let server = subscriber().await;
    let http = http(Duration::from_secs(5));
    deliver(&http, &server, cloudevent("a").to_string()).await;
    let status = http
        .delete(server.url("/_dev/events"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    assert!(events(&http, &server).await.is_empty());
    deliver(&http, &server, cloudevent("b").to_string()).await;
    let events = events(&http, &server).await;
    assert_eq!((events.len(), events[0]["seq"].as_u64()), (1, Some(2)));
    // daprd asks the app for programmatic subscriptions: there are none.
    let status = http
        .get(server.url("/dapr/subscribe"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    let status = http
        .get(server.url("/events"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 405);
}

#[test]
fn log_lines() {
    let mut event = Event {
        seq: 1,
        id: Some("rt-1-2030-01-01T09:00:00Z".into()),
        kind: Some("dev.recur.occurrence".into()),
        source: None,
        subject: Some("standup\nnext".into()),
        time: Some("2030-01-01T09:00:00Z".into()),
        topic: None,
        pubsubname: None,
        datacontenttype: None,
        data: None,
        content_type: None,
        traceparent_header: None,
        traceparent: None,
        cloudevent: Value::Null,
        received_at: String::new(),
    };
    assert_eq!(
        log_line(&event),
        "event id=rt-1-2030-01-01T09:00:00Z type=dev.recur.occurrence subject=standup next \
         time=2030-01-01T09:00:00Z"
    );
    event.kind = None;
    event.subject = None;
    assert!(log_line(&event).contains(" type=- subject=- "));
}
