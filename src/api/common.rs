//! Types shared by both kinds: the Dapr target, occurrence records and conditions.
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::{JsonSchema, json_schema};
use serde::{Deserialize, Serialize};

/// A DNS-1123 label, optionally followed by `.namespace` (Dapr's cross-namespace form).
pub const APP_ID_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?$";
/// Path segments of unreserved characters separated by single slashes: no `..`, no query.
pub const METHOD_PATTERN: &str =
    r"^[A-Za-z0-9_~-][A-Za-z0-9._~-]*(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*$";
/// Go-style (`90m`, `1h30m`) or ISO 8601 (`PT90M`, `P1D`) durations; the operator checks ranges.
pub use crate::schedule::DURATION_PATTERN;

/// CEL: no ASCII control characters (they would corrupt logs, headers and `kubectl` output).
pub const NO_CONTROL_CHARS: &str = "!self.matches('[\\\\x00-\\\\x1f\\\\x7f]')";

/// A Dapr pub/sub component name (a DNS-1123 label).
pub const PUBSUB_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";
/// A topic: letters, digits, `.`, `_`, `-`, starting with a letter or digit.
pub const TOPIC_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,248}$";

/// Where an occurrence is delivered: a Dapr app id and the method invoked on it
/// (`POST {sidecar}/v1.0/invoke/{appId}/method/{method}`), or a topic it is published to as a
/// CloudEvent (`POST {sidecar}/v1.0/publish/{pubsub.name}/{pubsub.topic}`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.pubsub) || (!has(self.appId) && !has(self.method))").message("set either pubsub or appId/method, not both: an occurrence is published or invoked"))]
pub struct Target {
    /// Dapr app id of the service to call: a DNS-1123 label, or `app.namespace` to call an app
    /// in another namespace. Defaults to `backend` for tasks and `notification-service` for
    /// reminders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = APP_ID_PATTERN), length(max = 127))]
    pub app_id: Option<String>,
    /// Method (HTTP path below the app) to invoke, for example `api/tasks`: segments of letters,
    /// digits, `.`, `_`, `~` and `-`, separated by `/`. Defaults to `api/tasks` for tasks and
    /// `api/notifications` for reminders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = METHOD_PATTERN), length(max = 256))]
    pub method: Option<String>,
    /// Publish each occurrence to this topic instead of invoking an app: a CloudEvent whose
    /// `id` is the idempotency key (consumers dedup on it). Without a TenantPolicy grant, only
    /// topics named `<namespace>.<anything>` may be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pubsub: Option<PubSubTarget>,
}

/// A topic of a pub/sub component of the operator's Dapr sidecar.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PubSubTarget {
    /// The component's name (`metadata.name` of the Dapr Component of type `pubsub.*`).
    #[schemars(regex(pattern = PUBSUB_NAME_PATTERN), length(max = 63))]
    pub name: String,
    /// The topic.
    #[schemars(regex(pattern = TOPIC_PATTERN), length(max = 249))]
    pub topic: String,
}

impl Target {
    /// The app id, or the kind's default.
    pub fn app_id_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.app_id.as_deref().unwrap_or(default)
    }

    /// The method, or the kind's default.
    pub fn method_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.method.as_deref().unwrap_or(default)
    }
}

/// How one occurrence ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Outcome {
    /// The backend accepted it (2xx, or its replay of the first answer for the key), or kept
    /// answering 409 for the key (see the README's response table).
    Delivered,
    /// The backend refused it permanently (4xx other than those retried); it is not retried.
    Failed,
    /// It was not delivered on purpose: missed while the operator was down (see `catchUp`).
    Skipped,
}

/// A finished occurrence.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OccurrenceRecord {
    /// The scheduled instant: the occurrence's identity.
    pub nominal: DateTime<Utc>,
    /// When it was due (nominal plus jitter).
    pub due: DateTime<Utc>,
    /// The idempotency key sent with every attempt.
    pub idempotency_key: String,
    /// How it ended.
    pub outcome: Outcome,
    /// When it ended (delivered, failed or skipped).
    pub finished_at: DateTime<Utc>,
    /// Calls made for it (0 when skipped).
    pub attempts: u32,
    /// The id the backend gave the created task, when its answer had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_id: Option<String>,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What made it: the schedule (unset), a manual run or a backfill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// When the backend reported the task it created completed (`spec.completion`); a key
    /// is counted as completed once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// The W3C trace id of the attempt that finished it: look it up in the trace backend the
    /// operator exports to (the Dapr sidecars and the backend join the same trace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// What made an occurrence, sent in the body as `trigger` (`schedule`, `manual`, `backfill`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Trigger {
    /// The task's schedule.
    #[default]
    Schedule,
    /// The `recur.dev/run-now` annotation.
    Manual,
    /// A `Backfill`.
    Backfill,
}

impl Trigger {
    /// The body's `trigger` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Backfill => "backfill",
        }
    }
}

/// The most recent failed call, kept until it is superseded by another failure.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// When the call failed.
    pub time: DateTime<Utc>,
    /// A short machine-readable reason, for example `BackendUnavailable` or `Rejected`.
    pub reason: String,
    /// What the backend or the sidecar said, truncated.
    pub message: String,
    /// The key of the occurrence the call was for.
    pub idempotency_key: String,
}

/// Conditions as a list-map keyed by `type` (one condition per type), as Kubernetes declares
/// them. Server-side apply does not merge them per type here: every kind's status is one field.
pub fn conditions_schema(_: &mut schemars::generate::SchemaGenerator) -> schemars::Schema {
    json_schema!({
        "type": "array",
        "description": "Standard Kubernetes conditions. `Ready` is True while the resource is healthy (kstatus).",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": { "type": "string", "format": "date-time" },
                "message": { "type": "string", "maxLength": 32768 },
                "observedGeneration": { "type": "integer", "format": "int64", "minimum": 0 },
                "reason": { "type": "string", "maxLength": 1024 },
                "status": { "type": "string", "enum": ["True", "False", "Unknown"] },
                "type": { "type": "string", "maxLength": 316 }
            }
        }
    })
}

/// A free-form JSON object, stored as given.
pub fn free_object_schema(_: &mut schemars::generate::SchemaGenerator) -> schemars::Schema {
    json_schema!({
        "type": "object",
        "description": "Free JSON object sent unchanged with every occurrence as `payload`.",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Returns the condition of `type_` in `conditions`.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// An object's name (a DNS-1123 subdomain), as the API server requires of a RecurringTask.
pub const OBJECT_NAME_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A reference to a RecurringTask in the reminder's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskRef {
    /// Name of the RecurringTask.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub name: String,
}

impl TaskRef {
    /// The name, when it can be a RecurringTask's: it goes into the path of an API request,
    /// which kube-rs does not encode, so `x?resourceVersion=0` or `x/status` would change the
    /// request (an object admitted before the schema checked the name).
    pub fn valid_name(&self) -> Option<&str> {
        is_object_name(&self.name).then_some(self.name.as_str())
    }
}

/// Whether `s` is a DNS-1123 subdomain of at most 253 characters.
pub fn is_object_name(s: &str) -> bool {
    let label = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b.first() != Some(&b'-')
            && b.last() != Some(&b'-')
    };
    s.len() <= 253 && s.split('.').all(label)
}

/// A resource that acts for one user of the application (`spec.userId`).
pub trait ForUser {
    fn user_id(&self) -> &str;
}
