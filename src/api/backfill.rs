//! `Backfill`: deliver every occurrence of a task's schedule in a past range, with the keys the
//! schedule itself would have used, so occurrences already delivered are not delivered twice.
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Failure, TaskRef, conditions_schema};

/// Default `maxOccurrences`.
pub const BACKFILL_DEFAULT_MAX: u32 = 1_000;
/// Hard cap of `maxOccurrences`.
pub const BACKFILL_MAX_CAP: u32 = 10_000;
/// Default `rate`, occurrences per second.
pub const BACKFILL_DEFAULT_RATE: u32 = 10;
/// Default `ttlSecondsAfterFinished`: a finished backfill is deleted a day later.
pub const BACKFILL_DEFAULT_TTL_SECONDS: u32 = 86_400;

/// Delivers the occurrences of a task's schedule in `[from, to)`, in order, under the keys the
/// schedule uses (`rt-<uid>-<nominal>`); the backend answers a key it already has with its first
/// answer, so nothing is delivered twice. Owned by the task (deleted with it).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "recur.dev",
    version = "v1alpha1",
    kind = "Backfill",
    plural = "backfills",
    singular = "backfill",
    namespaced,
    status = "BackfillStatus",
    shortname = "bf",
    category = "recur",
    doc = "Delivers a task's occurrences over a past range, under the schedule's own keys.",
    printcolumn(name = "Task", type_ = "string", json_path = ".spec.taskRef.name"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Total", type_ = "integer", json_path = ".status.total"),
    printcolumn(name = "Delivered", type_ = "integer", json_path = ".status.delivered"),
    printcolumn(
        name = "Already",
        type_ = "integer",
        json_path = ".status.alreadyDelivered",
        description = "Occurrences the backend already had"
    ),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failed"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("timestamp(self.from) < timestamp(self.to)").message("to must be after from: a backfill covers [from, to)").field_path(".to"),
    validation = Rule::new("self == oldSelf").message("a Backfill's spec cannot be changed; create another one")
)]
#[serde(rename_all = "camelCase")]
pub struct BackfillSpec {
    /// The RecurringTask, in the backfill's namespace.
    pub task_ref: TaskRef,
    /// The first instant of the range (inclusive), RFC 3339.
    pub from: DateTime<Utc>,
    /// The end of the range (exclusive), RFC 3339; not in the future (the schedule itself
    /// delivers what falls due from now on).
    pub to: DateTime<Utc>,
    /// The most occurrences the range may hold; more fails the backfill before anything is
    /// delivered. Default 1000, at most 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_occurrences: Option<u32>,
    /// Occurrences delivered per second, at most. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub rate: Option<u32>,
    /// Seconds after it finished (Complete or Failed) the backfill is deleted. Default 86400.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31_536_000))]
    pub ttl_seconds_after_finished: Option<u32>,
}

/// Where a backfill is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BackfillPhase {
    /// Not started (the task is not found yet, or not ready).
    #[default]
    Pending,
    /// Delivering.
    Running,
    /// Every occurrence in the range ended: delivered, already delivered or failed.
    Complete,
    /// The backfill cannot run (too many occurrences, a schedule or target the task cannot
    /// use); nothing more is delivered.
    Failed,
}

/// What a backfill did so far.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
// One field for server-side apply: only the operator writes status, and a granular status made
// its managedFields entry list every leaf, a third of a task's bytes in every list and watch
// event (docs/scaling.md, "What a list costs").
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
pub struct BackfillStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the backfill is.
    #[serde(default)]
    pub phase: BackfillPhase,
    /// `Ready` (kstatus: True once Complete) and `Stalled` (True when Failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The task's UID when the backfill started: the keys are made of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_uid: Option<String>,
    /// Occurrences of the schedule in the range.
    #[serde(default)]
    pub total: u64,
    /// Occurrences the backend accepted now.
    #[serde(default)]
    pub delivered: u64,
    /// Occurrences the backend already had under the same key (its replay, or 409).
    #[serde(default)]
    pub already_delivered: u64,
    /// Occurrences the backend refused for good.
    #[serde(default)]
    pub failed: u64,
    /// The nominal instant of the next occurrence to deliver; its key is in `nextKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<DateTime<Utc>>,
    /// The idempotency key of `next`, written before it is delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_key: Option<String>,
    /// The W3C trace id of the latest delivery (see `RecurringTask`'s `lastOccurrence.traceId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_trace_id: Option<String>,
    /// Failed attempts at `next` so far.
    #[serde(default, skip_serializing_if = "super::task::is_zero")]
    pub attempts: u32,
    /// `next` is not retried before this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime<Utc>>,
    /// When the backfill started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished (Complete or Failed); the TTL counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The most recent failed call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Failure>,
}
