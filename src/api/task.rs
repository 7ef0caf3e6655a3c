//! `RecurringTask`: a task that recurs on a schedule; each occurrence is delivered to a backend
//! through Dapr service invocation, exactly once, under a deterministic idempotency key.
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    DURATION_PATTERN, Failure, OccurrenceRecord, PUBSUB_NAME_PATTERN, PubSubTarget, TOPIC_PATTERN,
    Target, conditions_schema, free_object_schema,
};
use crate::schedule::ScheduleSpec;

/// Default Dapr app id of a task's target.
pub const TASK_DEFAULT_APP_ID: &str = "backend";
/// Default method of a task's target.
pub const TASK_DEFAULT_METHOD: &str = "api/tasks";
/// The annotation that asks for one extra run now: its value, a token of `[a-z0-9-]{1,63}`,
/// makes the key `rt-<uid>-run-<token>`, so one token runs at most once.
pub const RUN_NOW_ANNOTATION: &str = "recur.dev/run-now";
/// Longest run-now token (a DNS label's length, so keys stay short).
pub const RUN_NOW_TOKEN_MAX: usize = 63;

/// Whether `token` may be a run-now token: 1 to 63 of `a-z`, `0-9` and `-`.
pub fn is_run_now_token(token: &str) -> bool {
    (1..=RUN_NOW_TOKEN_MAX).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Default number of finished occurrences kept in `status.history`.
pub const DEFAULT_HISTORY_LIMIT: u32 = 10;

/// A task that recurs on a schedule. At every occurrence recur calls the target service through
/// the Dapr sidecar with a deterministic idempotency key, so each occurrence is created exactly
/// once.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "recur.dev",
    version = "v1alpha1",
    kind = "RecurringTask",
    plural = "recurringtasks",
    singular = "recurringtask",
    namespaced,
    status = "RecurringTaskStatus",
    shortname = "rt",
    category = "recur",
    doc = "A task that recurs on a schedule; each occurrence is delivered once through Dapr.",
    printcolumn(
        name = "Schedule",
        type_ = "string",
        json_path = ".status.schedule",
        description = "The schedule, summarized"
    ),
    printcolumn(
        name = "Next",
        type_ = "string",
        json_path = ".status.nextOccurrence.due",
        description = "When the next occurrence is due"
    ),
    printcolumn(
        name = "Last",
        type_ = "date",
        json_path = ".status.lastOccurrence.finishedAt",
        description = "When the last occurrence finished"
    ),
    printcolumn(
        name = "Suspended",
        type_ = "boolean",
        json_path = ".spec.suspend",
        description = "Whether deliveries are suspended"
    ),
    printcolumn(
        name = "Suspend Reason",
        type_ = "string",
        json_path = ".spec.suspendReason",
        description = "Why (a user's words, or recur's when failurePolicy suspended the task)"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Delivered",
        type_ = "integer",
        json_path = ".status.delivered",
        priority = 1
    ),
    printcolumn(
        name = "Completed",
        type_ = "integer",
        json_path = ".status.completed",
        priority = 1
    ),
    printcolumn(
        name = "User",
        type_ = "string",
        json_path = ".spec.userId",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RecurringTaskSpec {
    /// The user the task belongs to. Every call to the backend and every event carries it, so the
    /// backend can keep users' data apart.
    #[schemars(length(max = 253))]
    #[x_kube(
        validation = Rule::new("self.trim().size() > 0").message("userId must not be empty"),
        validation = Rule::new(super::common::NO_CONTROL_CHARS).message("userId must not contain control characters")
    )]
    pub user_id: String,

    /// Title of each task the occurrence creates.
    #[schemars(length(max = 256))]
    #[x_kube(
        validation = Rule::new("self.trim().size() > 0").message("title must not be empty"),
        validation = Rule::new(super::common::NO_CONTROL_CHARS).message("title must not contain control characters")
    )]
    pub title: String,

    /// Longer description sent with each occurrence (newlines and tabs allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    #[x_kube(validation = Rule::new("!self.matches('[\\\\x00-\\\\x08\\\\x0b\\\\x0c\\\\x0e-\\\\x1f\\\\x7f]')").message("description must not contain control characters other than tab and newline"))]
    pub description: Option<String>,

    /// Free JSON object sent unchanged with every occurrence as `payload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_object_schema")]
    pub payload: Option<serde_json::Map<String, serde_json::Value>>,

    /// When the task recurs: exactly one of `cron`, `pattern`, `rrule` or `every`, with optional
    /// `timeZone`, `startAt`, `endAt` or `count`, and `jitter`.
    #[x_kube(
        validation = Rule::new("(has(self.cron) ? 1 : 0) + (has(self.pattern) ? 1 : 0) + (has(self.rrule) ? 1 : 0) + (has(self.every) ? 1 : 0) == 1").message("set exactly one of cron, pattern, rrule or every"),
        validation = Rule::new("!(has(self.count) && has(self.endAt))").message("count and endAt cannot both be set"),
        validation = Rule::new("!has(self.startAt) || !has(self.endAt) || timestamp(self.startAt) < timestamp(self.endAt)").message("endAt must be after startAt")
    )]
    pub schedule: ScheduleSpec,

    /// Stop delivering occurrences while true. Occurrences that fall due while suspended are never
    /// delivered later, and resuming never backfills them.
    #[serde(default)]
    pub suspend: bool,

    /// Why the task is suspended (who, what, until when), shown in the `Suspended` condition and
    /// `kubectl get`. recur writes it when `failurePolicy` suspends the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new(super::common::NO_CONTROL_CHARS).message("suspendReason must not contain control characters"))]
    pub suspend_reason: Option<String>,

    /// What to do when occurrences keep failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<Box<FailurePolicy>>,

    /// What to do with occurrences missed while no operator was running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<Box<CatchUp>>,

    /// The service each occurrence is delivered to. Default: app `backend`, method `api/tasks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Box<Target>>,

    /// Reminders to create ahead of each occurrence, for example `[{before: 15m}]`. Each becomes a
    /// `Reminder` owned by this task (deleted with it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub reminders: Vec<ReminderTemplate>,

    /// Finished occurrences kept in `status.history`, and sent reminders kept, per task. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: Option<u32>,

    /// Completion feedback: the topic on which the backend publishes a `task.completed`
    /// CloudEvent carrying an occurrence's idempotency key once the task it created is done.
    /// recur records it in `status.lastCompletion`, `status.completed` and the occurrence's
    /// history record. Unset: no feedback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion: Option<Box<CompletionTopic>>,
}

/// Default pub/sub component of `spec.completion`.
pub const COMPLETION_DEFAULT_PUBSUB: &str = "pubsub";

/// Where the backend reports finished occurrences. Without a TenantPolicy grant, only topics
/// named `<namespace>.<anything>` may be used.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompletionTopic {
    /// The pub/sub component of the operator's Dapr sidecar. Default `pubsub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = PUBSUB_NAME_PATTERN), length(max = 63))]
    pub pubsub: Option<String>,
    /// The topic. The operator's sidecar must be subscribed to it (the chart's
    /// `completion.subscriptions`).
    #[schemars(regex(pattern = TOPIC_PATTERN), length(max = 249))]
    pub topic: String,
}

impl CompletionTopic {
    /// The component and topic, defaults applied.
    pub fn target(&self) -> PubSubTarget {
        PubSubTarget {
            name: self
                .pubsub
                .clone()
                .unwrap_or_else(|| COMPLETION_DEFAULT_PUBSUB.to_string()),
            topic: self.topic.clone(),
        }
    }
}

/// What recur does when occurrences keep failing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicy {
    /// Suspend the task (`spec.suspend: true`, with a `suspendReason`) after this many
    /// occurrences in a row failed permanently (refused by the backend). Resuming starts the
    /// count again. Unset: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub suspend_after: Option<u32>,
}

/// Catch-up policy for occurrences that fell due while no operator was running.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatchUp {
    /// `Skip`: deliver none of them. `Latest` (default): deliver only the most recent one, and only
    /// if it is no older than `window`. `All`: deliver them all in order, at most
    /// `maxOccurrences` (the oldest beyond that are skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<CatchUpPolicy>,
    /// How late a missed occurrence may still be delivered under `Latest` (for example `1h`).
    /// Default `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub window: Option<String>,
    /// Under `All`, the most missed occurrences delivered. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_occurrences: Option<u32>,
}

/// See `catchUp.policy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CatchUpPolicy {
    /// Deliver none of the missed occurrences.
    Skip,
    /// Deliver only the most recent missed occurrence, within `window`.
    #[default]
    Latest,
    /// Deliver every missed occurrence in order, at most `maxOccurrences`.
    All,
}

/// A reminder created ahead of each occurrence.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReminderTemplate {
    /// How long before the occurrence is due the reminder is sent, for example `15m`.
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub before: String,
    /// Message of the reminder. Default: the task's title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
    /// Where the reminder is sent. Default: app `notification-service`, method `api/notifications`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
}

/// The next occurrence, written to status before it is due so that a restarted or new leader
/// retries the very same key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingOccurrence {
    /// The scheduled instant: the occurrence's identity.
    pub nominal: DateTime<Utc>,
    /// When it is due (nominal plus jitter).
    pub due: DateTime<Utc>,
    /// The idempotency key sent with every attempt.
    pub idempotency_key: String,
    /// Failed attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// Not retried before this instant (backoff after a failed attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime<Utc>>,
    /// 409 answers in a row ("a request with this key is still being processed").
    #[serde(default, skip_serializing_if = "is_zero")]
    pub in_progress: u32,
}

pub(crate) fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What the operator last observed and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
// One field for server-side apply: only the operator writes status, and a granular status made
// its managedFields entry list every leaf, a third of a task's bytes in every list and watch
// event (docs/scaling.md, "What a list costs").
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
pub struct RecurringTaskStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (True while the schedule is valid and deliveries succeed) and `Stalled` (True when
    /// the spec cannot be acted on until it is changed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The schedule, summarized for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The next occurrence and its idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_occurrence: Option<PendingOccurrence>,
    /// Due instants of the next few occurrences after `nextOccurrence`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upcoming: Vec<DateTime<Utc>>,
    /// The most recently finished occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_occurrence: Option<OccurrenceRecord>,
    /// The most recent failed call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Box<Failure>>,
    /// Occurrences delivered.
    #[serde(default)]
    pub delivered: u64,
    /// Occurrences that failed permanently.
    #[serde(default)]
    pub failed: u64,
    /// Occurrences skipped (missed while down, per `catchUp`).
    #[serde(default)]
    pub skipped: u64,
    /// The last `historyLimit` finished occurrences (scheduled and manual runs), newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<OccurrenceRecord>,
    /// Scheduled occurrences in a row that failed permanently (for `failurePolicy`); 0 after a
    /// delivery and while suspended.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consecutive_failures: u32,
    /// Set when `failurePolicy.suspendAfter` suspended the task: the generation it judged and
    /// why. Cleared when the task is resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_suspension: Option<Box<FailureSuspension>>,
    /// The run asked for by the `recur.dev/run-now` annotation and not finished yet; its key is
    /// in status before the call, like a scheduled occurrence's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_run: Option<Box<PendingManualRun>>,
    /// The most recent finished manual run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_manual_run: Option<Box<ManualRun>>,
    /// Occurrences the backend reported completed (`spec.completion`), each key counted once.
    // Always written, 0 included: the task controller's status writes test it (see
    // `controller::completion`). `None` when absent: a CRD older than completion feedback.
    #[serde(default, serialize_with = "count_or_zero")]
    #[schemars(with = "u64")]
    pub completed: Option<u64>,
    /// The most recent completion the backend reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_completion: Option<Box<LastCompletion>>,
}

fn count_or_zero<S: serde::Serializer>(n: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(n.unwrap_or(0))
}

/// A completion reported on the task's `spec.completion` topic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastCompletion {
    /// The key of the occurrence (or manual run) completed.
    pub idempotency_key: String,
    /// When the backend completed it: the event's `time`, or `receivedAt` when the event has
    /// none (or one later than its arrival).
    pub completed_at: DateTime<Utc>,
    /// When recur received the event.
    pub received_at: DateTime<Utc>,
    /// From the occurrence's due instant to `completedAt`, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_after_due: Option<f64>,
}

/// Why `failurePolicy` suspended a task.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureSuspension {
    /// The task's generation when recur decided; recur's own patch of `spec.suspend` makes the
    /// next one, and any later generation with `suspend: false` is a resume.
    pub generation: i64,
    /// When recur decided.
    pub time: DateTime<Utc>,
    /// The permanent failures in a row that reached `suspendAfter`.
    pub failures: u32,
    /// The words written to `spec.suspendReason`.
    pub message: String,
}

/// A manual run requested with the `recur.dev/run-now` annotation, before it finished.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingManualRun {
    /// The annotation's token.
    pub token: String,
    /// `rt-<uid>-run-<token>`.
    pub idempotency_key: String,
    /// When recur first saw the request.
    pub requested_at: DateTime<Utc>,
    /// Failed attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// Not retried before this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime<Utc>>,
    /// 409 answers in a row.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub in_progress: u32,
}

/// A finished manual run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManualRun {
    /// The annotation's token: a token seen here never runs again.
    pub token: String,
    /// How it ended (also in `history`, with `trigger: Manual`).
    pub record: OccurrenceRecord,
}

impl RecurringTask {
    /// The Dapr app id occurrences are delivered to.
    pub fn app_id(&self) -> &str {
        self.spec
            .target
            .as_ref()
            .map_or(TASK_DEFAULT_APP_ID, |t| t.app_id_or(TASK_DEFAULT_APP_ID))
    }

    /// The method occurrences are delivered to.
    pub fn method(&self) -> &str {
        self.spec
            .target
            .as_ref()
            .map_or(TASK_DEFAULT_METHOD, |t| t.method_or(TASK_DEFAULT_METHOD))
    }

    /// The topic occurrences are published to, when the target is pub/sub.
    pub fn pubsub(&self) -> Option<&super::common::PubSubTarget> {
        self.spec.target.as_ref()?.pubsub.as_ref()
    }

    /// How many finished occurrences to keep.
    pub fn history_limit(&self) -> usize {
        self.spec.history_limit.unwrap_or(DEFAULT_HISTORY_LIMIT) as usize
    }
}

impl super::common::ForUser for RecurringTask {
    fn user_id(&self) -> &str {
        &self.spec.user_id
    }
}
