//! `Reminder`: a notification due once, standalone or created ahead of a task's occurrence.
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Failure, Target, TaskRef, conditions_schema};

/// Default Dapr app id of a reminder's target.
pub const REMINDER_DEFAULT_APP_ID: &str = "notification-service";
/// Default method of a reminder's target.
pub const REMINDER_DEFAULT_METHOD: &str = "api/notifications";
/// Label set on reminders a RecurringTask creates: the task's name.
pub const TASK_LABEL: &str = "recur.dev/task";

/// A reminder due once. When due, recur calls the notification service through the Dapr sidecar
/// with an idempotency key, then, when `taskId` is set, tells the backend it was sent.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "recur.dev",
    version = "v1alpha1",
    kind = "Reminder",
    plural = "reminders",
    singular = "reminder",
    namespaced,
    status = "ReminderStatus",
    shortname = "rem",
    category = "recur",
    doc = "A reminder due once, delivered through Dapr exactly once.",
    printcolumn(
        name = "Due",
        type_ = "string",
        json_path = ".spec.dueAt",
        description = "When the reminder is due"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "User", type_ = "string", json_path = ".spec.userId"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ReminderSpec {
    /// The user the reminder is for; carried by every call.
    #[schemars(length(max = 253))]
    #[x_kube(
        validation = Rule::new("self.trim().size() > 0").message("userId must not be empty"),
        validation = Rule::new(super::common::NO_CONTROL_CHARS).message("userId must not contain control characters")
    )]
    pub user_id: String,

    /// Title of the reminder.
    #[schemars(length(max = 256))]
    #[x_kube(
        validation = Rule::new("self.trim().size() > 0").message("title must not be empty"),
        validation = Rule::new(super::common::NO_CONTROL_CHARS).message("title must not contain control characters")
    )]
    pub title: String,

    /// Message body of the notification (newlines and tabs allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    #[x_kube(validation = Rule::new("!self.matches('[\\\\x00-\\\\x08\\\\x0b\\\\x0c\\\\x0e-\\\\x1f\\\\x7f]')").message("message must not contain control characters other than tab and newline"))]
    pub message: Option<String>,

    /// When the reminder is due (RFC 3339).
    pub due_at: DateTime<Utc>,

    /// The backend's id of the task this reminder is about. When set, the backend is told the
    /// reminder was sent (`POST api/tasks/{taskId}/reminder-sent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]{1,128}$"))]
    #[x_kube(validation = Rule::new("self != '.' && self != '..'").message("taskId must not be . or .."))]
    pub task_id: Option<String>,

    /// The RecurringTask (same namespace) this reminder belongs to. Its `userId` must equal this
    /// reminder's: a reminder for another user's task is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_ref: Option<TaskRef>,

    /// Key of the task occurrence this reminder precedes (set on reminders a task creates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub occurrence_key: Option<String>,

    /// Where the reminder is sent. Default: app `notification-service`, method `api/notifications`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
}

/// Lifecycle of a reminder.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Not yet sent.
    #[default]
    Pending,
    /// Sent (and, with `taskId`, the backend told).
    Sent,
    /// Refused permanently by the notification service, or refused by recur (see conditions).
    Failed,
    /// Not sent on purpose: its task was suspended or no longer has the occurrence, or it was
    /// first seen too long after it was due (see conditions).
    Skipped,
}

/// What the operator last observed and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
// One field for server-side apply: only the operator writes status, and a granular status made
// its managedFields entry list every leaf, a third of a task's bytes in every list and watch
// event (docs/scaling.md, "What a list costs").
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
pub struct ReminderStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and `Stalled`, as for RecurringTask.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Pending, Sent, Failed or Skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The idempotency key sent with every attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// When the notification service accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notified_at: Option<DateTime<Utc>>,
    /// When it was fully sent (notified, and the backend told when `taskId` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<DateTime<Utc>>,
    /// Calls made so far.
    #[serde(default)]
    pub attempts: u32,
    /// The W3C trace id of the latest call (see `RecurringTask`'s `lastOccurrence.traceId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Not retried before this instant (backoff after a failed attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime<Utc>>,
    /// 409 answers in a row ("a request with this key is still being processed").
    #[serde(default, skip_serializing_if = "is_zero")]
    pub in_progress: u32,
    /// The most recent failed call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Failure>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Reminder {
    /// The Dapr app id the reminder is delivered to.
    pub fn app_id(&self) -> &str {
        self.spec
            .target
            .as_ref()
            .map_or(REMINDER_DEFAULT_APP_ID, |t| {
                t.app_id_or(REMINDER_DEFAULT_APP_ID)
            })
    }

    /// The method the reminder is delivered to.
    pub fn method(&self) -> &str {
        self.spec
            .target
            .as_ref()
            .map_or(REMINDER_DEFAULT_METHOD, |t| {
                t.method_or(REMINDER_DEFAULT_METHOD)
            })
    }

    /// The topic the reminder is published to, when its target is pub/sub.
    pub fn pubsub(&self) -> Option<&super::common::PubSubTarget> {
        self.spec.target.as_ref()?.pubsub.as_ref()
    }
}

impl super::common::ForUser for Reminder {
    fn user_id(&self) -> &str {
        &self.spec.user_id
    }
}
