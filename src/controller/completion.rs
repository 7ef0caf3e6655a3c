//! Completion feedback (`spec.completion`): the backend publishes a `task.completed` CloudEvent
//! whose data carries an occurrence's idempotency key once the task it created is done; recur's
//! sidecar delivers it (a declarative Subscription, route `/completions/<pubsub>/<topic>`) and
//! recur records it in the task's status. This module decides, without I/O; `receive` finds the
//! task, reads it and writes.
//!
//! Trust: the route names the topic the message was consumed from (daprd picks the route of the
//! subscription, and the subscriptions are recur's own). The envelope's `topic` and
//! `pubsubname` are the publisher's to write (a `rawPayload` publish reaches the broker as
//! sent), so they are compared with the route, never believed. A task hears only its own
//! `spec.completion` topic, which the tenancy rules confine to its namespace: an event naming a
//! task on another namespace's topic is refused.
//!
//! Concurrency: the write is guarded by the resourceVersion of the object decided on, and every
//! status write of the task controller tests `status.completed` ([`unchanged_completions`]):
//! whichever writes second re-reads instead of overwriting the other's progress.
use chrono::{DateTime, Utc};
use kube::ResourceExt;
use serde::Deserialize;
use serde_json::Value;

use crate::api::{LastCompletion, Outcome, RecurringTask, RecurringTaskStatus};
use crate::dapr::{PubSubName, Topic};
use crate::tenancy::{Denial, Effective};

mod receive;

pub use receive::TaskIndex;

/// The CloudEvent `type` of a completion.
pub const COMPLETED_EVENT_TYPE: &str = "task.completed";
/// Largest event read; a completion is a few hundred bytes.
pub const EVENT_MAX_BYTES: usize = 64 * 1024;
/// Longest key recur makes: `rt-` + UID + `-run-` + a 63-character token is 107.
const KEY_MAX: usize = 128;
/// A Kubernetes UID: a UUID in its 36-character text form.
const UID_LEN: usize = 36;

/// The UID of the task a key of recur's names (`rt-<uid>-<rest>`), if `key` has that shape.
pub fn key_uid(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("rt-")?;
    let uid = rest.get(..UID_LEN)?;
    let suffix = rest.get(UID_LEN..)?.strip_prefix('-')?;
    let uuid_shaped = uid.char_indices().all(|(i, c)| match i {
        8 | 13 | 18 | 23 => c == '-',
        _ => c.is_ascii_hexdigit(),
    });
    (uuid_shaped && !suffix.is_empty()).then_some(uid)
}

/// Whether `key` could be a key of recur's: bounded, of the characters keys are made of
/// (UID, instants, run-now tokens), naming a UID. Only such a key is ever logged or stored.
fn well_formed_key(key: &str) -> bool {
    key.len() <= KEY_MAX
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && key_uid(key).is_some()
}

/// The subscription an event came through: the route's component and topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub pubsub: PubSubName,
    pub topic: Topic,
}

/// A completion event, read and checked for shape; `key` is well formed.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub key: String,
    /// The event's `time`, when it has a valid one.
    pub time: Option<DateTime<Utc>>,
    /// The envelope's `pubsubname` and `topic`: compared with the route only.
    claimed_pubsub: Option<String>,
    claimed_topic: Option<String>,
}

/// Why a body is not a completion event. The texts name the problem only, never a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotACompletion {
    #[error("the event is larger than {EVENT_MAX_BYTES} bytes")]
    TooLarge,
    #[error("the body is not a JSON CloudEvent")]
    NotJson,
    #[error("the event's type is not {COMPLETED_EVENT_TYPE:?}")]
    OtherType,
    #[error("the event's data has no idempotencyKey string")]
    NoKey,
    #[error("the idempotency key is not one recur makes")]
    NotAKey,
}

/// The envelope fields read; the rest is ignored.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: Option<Value>,
    time: Option<Value>,
    topic: Option<Value>,
    pubsubname: Option<Value>,
    data: Option<Value>,
}

/// Reads a delivered CloudEvent (`application/cloudevents+json`).
pub fn parse(body: &[u8]) -> Result<Event, NotACompletion> {
    if body.len() > EVENT_MAX_BYTES {
        return Err(NotACompletion::TooLarge);
    }
    let envelope: Envelope = serde_json::from_slice(body).map_err(|_| NotACompletion::NotJson)?;
    if envelope.kind.as_ref().and_then(Value::as_str) != Some(COMPLETED_EVENT_TYPE) {
        return Err(NotACompletion::OtherType);
    }
    let data = envelope.data.as_ref();
    let key = ["idempotencyKey", "idempotency_key"]
        .iter()
        .find_map(|field| data?.get(field)?.as_str())
        .ok_or(NotACompletion::NoKey)?;
    if !well_formed_key(key) {
        return Err(NotACompletion::NotAKey);
    }
    let text = |v: Option<Value>| v.and_then(|v| v.as_str().map(str::to_owned));
    let time = text(envelope.time)
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc));
    Ok(Event {
        key: key.to_owned(),
        time,
        claimed_pubsub: text(envelope.pubsubname),
        claimed_topic: text(envelope.topic),
    })
}

/// Why an event naming a task is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The task has no `spec.completion`.
    NoFeedback,
    /// The event came on another topic than the task's `spec.completion` (another
    /// namespace's, say), or its envelope claims another than it came on.
    OtherTopic,
    /// The task's namespace may no longer use its completion topic.
    Policy(Denial),
}

impl Refusal {
    /// For logs.
    pub fn describe(&self) -> String {
        match self {
            Refusal::NoFeedback => "the task has no spec.completion".into(),
            Refusal::OtherTopic => {
                "the event did not come on the task's spec.completion topic".into()
            }
            Refusal::Policy(denial) => denial.to_string(),
        }
    }
}

/// What to do with a completion event for `task`.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Record it: write `status`.
    Accept {
        status: Box<RecurringTaskStatus>,
        /// From the occurrence's due instant to its completion.
        seconds_after_due: f64,
    },
    /// The key's completion is recorded already.
    Duplicate,
    /// The task knows no delivered occurrence of this key (another task's, an expired
    /// history entry, a skipped or failed one, a guess).
    Unknown,
    /// The key is the task's pending occurrence or manual run: the backend finished before
    /// recur recorded the delivery. Asked again later (Dapr redelivers).
    Pending,
    Refused(Refusal),
}

/// Decides on `event`, received at `received` through `route`, for `task` (as just read)
/// under its namespace's `effective` policy.
pub fn decide(
    task: &RecurringTask,
    effective: &Effective,
    route: &Route,
    event: &Event,
    received: DateTime<Utc>,
) -> Decision {
    let Some(completion) = &task.spec.completion else {
        return Decision::Refused(Refusal::NoFeedback);
    };
    let target = completion.target();
    let claims_other =
        |claimed: &Option<String>, real: &str| claimed.as_deref().is_some_and(|c| c != real);
    if target.name != route.pubsub.as_str()
        || target.topic != route.topic.as_str()
        || claims_other(&event.claimed_pubsub, route.pubsub.as_str())
        || claims_other(&event.claimed_topic, route.topic.as_str())
    {
        return Decision::Refused(Refusal::OtherTopic);
    }
    if let Err(denial) = effective.topic("spec.completion", &target) {
        return Decision::Refused(Refusal::Policy(denial));
    }
    if task.uid().as_deref() != key_uid(&event.key) {
        // A task of the same name, created again: its keys are others.
        return Decision::Unknown;
    }
    let old = task.status.clone().unwrap_or_default();
    let Some(record) = old.history.iter().find(|r| r.idempotency_key == event.key) else {
        let pending = old
            .next_occurrence
            .as_ref()
            .map(|p| &p.idempotency_key)
            .into_iter()
            .chain(old.manual_run.as_ref().map(|m| &m.idempotency_key))
            .any(|k| *k == event.key);
        return if pending {
            Decision::Pending
        } else {
            Decision::Unknown
        };
    };
    if record.outcome != Outcome::Delivered {
        return Decision::Unknown;
    }
    if record.completed_at.is_some() {
        return Decision::Duplicate;
    }
    // A backend's clock ahead of ours would record a completion in the future.
    let completed_at = event.time.filter(|t| *t <= received).unwrap_or(received);
    let seconds_after_due = ((completed_at - record.due).num_milliseconds().max(0) as f64) / 1000.0;
    let mut status = old.clone();
    let key = event.key.as_str();
    let records = status
        .history
        .iter_mut()
        .chain(status.last_occurrence.as_mut())
        .chain(status.last_manual_run.as_mut().map(|m| &mut m.record));
    for r in records.filter(|r| r.idempotency_key == key) {
        r.completed_at = Some(completed_at);
    }
    status.completed = Some(old.completed.unwrap_or(0) + 1);
    status.last_completion = Some(Box::new(LastCompletion {
        idempotency_key: event.key.clone(),
        completed_at,
        received_at: received,
        seconds_after_due: Some(seconds_after_due),
    }));
    Decision::Accept {
        status: Box::new(status),
        seconds_after_due,
    }
}

/// The test the task controller adds to each of its status writes: `status.completed` as it
/// read it. A completion recorded meanwhile makes the write conflict (the controller re-reads
/// and decides on the status with it) instead of being overwritten by a status built without
/// it. A status no recur with completion feedback has written has no count to test.
pub fn unchanged_completions(task: &RecurringTask) -> Option<(&'static str, Value)> {
    let n = task.status.as_ref()?.completed?;
    Some(("/status/completed", Value::from(n)))
}

/// What became of one event: the metric's `result`, and Dapr's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    Accepted,
    Duplicate,
    Unknown,
    Refused,
    Pending,
    Invalid,
    /// Not decided or not written (watch cache not synced, API error, conflicts): retried.
    Error,
}

/// Dapr's app-side answers to a pub/sub delivery (`{"status": ...}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Processed: acknowledged.
    Success,
    /// Delivered again later.
    Retry,
    /// Never delivered again (and to the dead-letter topic, when one is set).
    Drop,
}

impl Answer {
    pub fn as_str(self) -> &'static str {
        match self {
            Answer::Success => "SUCCESS",
            Answer::Retry => "RETRY",
            Answer::Drop => "DROP",
        }
    }
}

impl Received {
    /// The `result` label of `recur_completions_total`.
    pub fn label(self) -> &'static str {
        match self {
            Received::Accepted => "accepted",
            Received::Duplicate => "duplicate",
            Received::Unknown => "unknown",
            Received::Refused => "refused",
            Received::Pending => "pending",
            Received::Invalid => "invalid",
            Received::Error => "error",
        }
    }

    /// Dapr's answer: what will never be accepted is dropped, not redelivered for ever.
    pub fn answer(self) -> Answer {
        match self {
            Received::Accepted | Received::Duplicate => Answer::Success,
            Received::Pending | Received::Error => Answer::Retry,
            Received::Unknown | Received::Refused | Received::Invalid => Answer::Drop,
        }
    }
}

#[cfg(test)]
mod tests;
