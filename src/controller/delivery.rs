//! One delivery of any kind and trigger, to where the tenancy check resolved it: an app's method
//! (service invocation) or a topic, as a CloudEvent 1.0 (pub/sub). The idempotency key is the
//! `Idempotency-Key` header of a call and the `id` of an event, so either way a consumer dedups
//! on the same value.
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tracing::{Instrument as _, field, info_span};

use super::Context;
use crate::dapr::{Invocation, Invoked, Outcome, Publication};
use crate::tenancy::Resolved;
use crate::traces::{self, TraceContext};

/// CloudEvent `type` of a task's occurrence.
pub const OCCURRENCE_EVENT_TYPE: &str = "dev.recur.occurrence.due";
/// CloudEvent `type` of a reminder.
pub const REMINDER_EVENT_TYPE: &str = "dev.recur.reminder.due";

/// What is delivered, and for whom.
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'a> {
    pub target: &'a Resolved,
    pub key: &'a str,
    pub user_id: &'a str,
    /// The tenant: the namespace of the object delivered.
    pub namespace: &'a str,
    /// The JSON body of an invocation, the `data` of an event.
    pub body: &'a Value,
    pub about: About<'a>,
}

/// What an event is about: its `type`, `source` and `time`.
#[derive(Clone, Copy, Debug)]
pub struct About<'a> {
    pub event_type: &'static str,
    /// The resource, e.g. `recurringtasks`.
    pub plural: &'static str,
    pub name: &'a str,
    /// When the occurrence was due.
    pub due: DateTime<Utc>,
}

/// One delivery made: the call's result and the trace it is part of.
#[derive(Clone, Debug)]
pub struct Sent {
    pub invoked: Invoked,
    /// The trace id of the `deliver` span, for `status.lastOccurrence.traceId`.
    pub trace_id: Option<String>,
}

/// The CloudEvent of `d`: `id` the key, `source` the object
/// (`/namespaces/<ns>/<plural>/<name>`), `subject` the user id, `time` the due instant, `data`
/// the body an invocation would send, and the distributed-tracing extension (`traceparent`,
/// `tracestate`) when there is a trace. Every value comes from a validated spec or from recur,
/// and JSON encoding keeps each in its attribute.
pub fn cloud_event(d: &Delivery<'_>, trace: Option<&TraceContext>) -> Value {
    let mut event = json!({
        "specversion": "1.0",
        "id": d.key,
        "source": format!("/namespaces/{}/{}/{}", d.namespace, d.about.plural, d.about.name),
        "type": d.about.event_type,
        "subject": d.user_id,
        "time": d.about.due.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        "datacontenttype": "application/json",
        "data": d.body,
    });
    if let (Some(trace), Some(attributes)) = (trace, event.as_object_mut()) {
        attributes.insert("traceparent".into(), trace.traceparent.clone().into());
        if let Some(state) = &trace.tracestate {
            attributes.insert("tracestate".into(), state.clone().into());
        }
    }
    event
}

impl Context {
    /// Delivers `d` (invoke or publish) in a `deliver` span whose trace context travels with
    /// the call, counted like every Dapr call.
    pub(crate) async fn deliver(&self, d: &Delivery<'_>) -> Sent {
        let span = info_span!(
            "deliver",
            otel.kind = "client",
            otel.status_code = field::Empty,
            k8s.namespace.name = d.namespace,
            recur.resource = d.about.plural,
            recur.name = d.about.name,
            recur.idempotency_key = d.key,
            recur.destination = %d.target,
            recur.outcome = field::Empty,
        );
        let trace = traces::context_of(&span);
        let invoked = self.send(d, trace.as_ref()).instrument(span.clone()).await;
        span.record("recur.outcome", invoked.outcome.label());
        if !matches!(
            invoked.outcome,
            Outcome::Delivered { .. } | Outcome::InProgress
        ) {
            span.record("otel.status_code", "ERROR");
        }
        Sent {
            invoked,
            trace_id: trace.map(|t| t.trace_id),
        }
    }

    async fn send(&self, d: &Delivery<'_>, trace: Option<&TraceContext>) -> Invoked {
        match d.target {
            Resolved::Invoke { app_id, method } => {
                self.invoke(&Invocation {
                    app_id,
                    method,
                    idempotency_key: d.key,
                    user_id: d.user_id,
                    namespace: d.namespace,
                    body: d.body,
                    trace,
                })
                .await
            }
            Resolved::Publish { pubsub, topic } => {
                let event = cloud_event(d, trace);
                let publication = Publication {
                    pubsub,
                    topic,
                    idempotency_key: d.key,
                    namespace: d.namespace,
                    event: &event,
                    trace,
                };
                let invoked = self.dapr.publish(&publication).await;
                self.count_call(d.namespace, &publication.destination(), &invoked);
                invoked
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::dapr::{PubSubName, Topic};

    #[test]
    fn the_event_carries_the_key_as_id_and_the_body_as_data() {
        let target = Resolved::Publish {
            pubsub: PubSubName::new("pubsub").unwrap(),
            topic: Topic::new("team-a.occurrences").unwrap(),
        };
        let body = json!({"title": "Report \"Q3\"\n", "idempotency_key": "rt-u-20260101T090000Z"});
        let due = DateTime::parse_from_rfc3339("2026-01-01T09:00:01.250Z")
            .unwrap()
            .with_timezone(&Utc);
        let d = Delivery {
            target: &target,
            key: "rt-u-20260101T090000Z",
            user_id: "user-42",
            namespace: "team-a",
            body: &body,
            about: About {
                event_type: OCCURRENCE_EVENT_TYPE,
                plural: "recurringtasks",
                name: "report",
                due,
            },
        };
        let trace = TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: None,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        };
        let mut traced = cloud_event(&d, Some(&trace));
        assert_eq!(
            traced.as_object_mut().unwrap().remove("traceparent"),
            Some(json!(trace.traceparent))
        );
        assert_eq!(traced, cloud_event(&d, None));
        assert_eq!(
            cloud_event(&d, None),
            json!({
                "specversion": "1.0",
                "id": "rt-u-20260101T090000Z",
                "source": "/namespaces/team-a/recurringtasks/report",
                "type": "dev.recur.occurrence.due",
                "subject": "user-42",
                "time": "2026-01-01T09:00:01.250Z",
                "datacontenttype": "application/json",
                "data": body,
            })
        );
    }
}
