//! A pub/sub subscriber app behind a daprd sidecar: records every CloudEvent Dapr delivers.
//!
//! `POST /events` is the route of the declarative Subscriptions `tests/cluster/sidecars.sh`
//! writes. Dapr delivers each message as a CloudEvent (JSON, `application/cloudevents+json`); the
//! app records it, as received, and answers 200 `{"status":"SUCCESS"}` (Dapr then acknowledges
//! the message to the broker). Nothing is deduplicated: a redelivery is a second record, so tests
//! can count duplicates. A body that is not JSON is recorded too (as text) and acknowledged.
//!
//! `GET /_dev/events` lists the records in arrival order; `DELETE /_dev/events` clears them.
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Value, json};

pub struct SubscriberConfig {
    /// Name shown in the logs.
    pub name: String,
    /// Print one `event id=... type=... subject=... time=...` line per event on stdout.
    pub log: bool,
}

/// One delivery received on `/events`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Event {
    /// Arrival order, from 1.
    pub seq: u64,
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub source: Option<String>,
    pub subject: Option<String>,
    pub time: Option<String>,
    /// The topic and pub/sub component Dapr delivered it from (fields Dapr adds to the event).
    pub topic: Option<String>,
    pub pubsubname: Option<String>,
    pub datacontenttype: Option<String>,
    pub data: Option<Value>,
    /// The request's `Content-Type` and `traceparent` headers.
    pub content_type: Option<String>,
    pub traceparent_header: Option<String>,
    /// The event's own `traceparent` attribute (daprd sets it to the publisher's trace); left out
    /// when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The whole body as received: the JSON, or its text when it is not JSON.
    pub cloudevent: Value,
    /// When it arrived (RFC 3339, milliseconds).
    pub received_at: String,
}

#[derive(Default)]
struct Inner {
    /// The last event's number; not reset by clearing the events.
    seq: u64,
    /// In arrival (`seq`) order.
    events: Vec<Event>,
}

#[derive(Clone)]
struct Subscriber {
    inner: Arc<Mutex<Inner>>,
    log: bool,
}

impl Subscriber {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The subscriber's routes.
pub fn router(config: SubscriberConfig) -> Router {
    let state = Subscriber {
        inner: Arc::default(),
        log: config.log,
    };
    tracing::info!(name = %config.name, "subscriber ready");
    Router::new()
        .route("/events", post(receive))
        .route("/_dev/events", get(list).delete(clear))
        .with_state(state)
}

async fn list(State(s): State<Subscriber>) -> Response {
    axum::Json(s.lock().events.clone()).into_response()
}

async fn clear(State(s): State<Subscriber>) -> StatusCode {
    s.lock().events.clear();
    StatusCode::NO_CONTENT
}

async fn receive(State(s): State<Subscriber>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let cloudevent = serde_json::from_slice::<Value>(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let field = |name: &str| match cloudevent.get(name) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    };
    let mut event = Event {
        seq: 0,
        id: field("id"),
        kind: field("type"),
        source: field("source"),
        subject: field("subject"),
        time: field("time"),
        topic: field("topic"),
        pubsubname: field("pubsubname"),
        datacontenttype: field("datacontenttype"),
        data: cloudevent.get("data").cloned(),
        content_type: header("content-type"),
        traceparent_header: header("traceparent"),
        traceparent: field("traceparent"),
        cloudevent: Value::Null,
        received_at: String::new(),
    };
    event.cloudevent = cloudevent;
    {
        // Numbered, stamped and stored under one lock: the list is in arrival order.
        let mut inner = s.lock();
        inner.seq += 1;
        event.seq = inner.seq;
        event.received_at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        if s.log {
            println!("{}", log_line(&event));
        }
        inner.events.push(event);
    }
    axum::Json(json!({"status": "SUCCESS"})).into_response()
}

/// The `--log` line of an event: `event id=... type=... subject=... time=...` (`-` when absent).
pub fn log_line(event: &Event) -> String {
    let show = |v: &Option<String>| {
        v.as_deref()
            .unwrap_or("-")
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
    };
    format!(
        "event id={} type={} subject={} time={}",
        show(&event.id),
        show(&event.kind),
        show(&event.subject),
        show(&event.time)
    )
}

#[cfg(test)]
mod tests;
