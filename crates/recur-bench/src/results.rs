//! What a run measured, as written to (and read back from) the JSON files in the output
//! directory: `recur.json` and `cronjob-<label>.json`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Res, msg};
use crate::say;

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct LagStats {
    pub count: usize,
    pub p50_ms: i64,
    pub p99_ms: i64,
    pub max_ms: i64,
    pub mean_ms: f64,
}

/// Apiserver requests between two snapshots of `apiserver_request_total`.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct ApiDelta {
    /// Every request the apiserver finished in the window, from any client.
    pub all: f64,
    /// Requests on `own_resources` (any verb).
    pub own: f64,
    pub own_resources: Vec<String>,
    /// "VERB resource[/subresource]" to count; non-resource URLs are "VERB (non-resource)".
    pub by_request: BTreeMap<String, f64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Burst {
    pub system: String,
    pub tasks: usize,
    pub due: Option<DateTime<Utc>>,
    /// The objects' schedule: a daily cron at the burst's minute (a one-off in the window).
    #[serde(default)]
    pub schedule: String,
    /// Occurrences of the burst minute that arrived (recur) or Jobs created (CronJob).
    pub occurrences: usize,
    pub lag: LagStats,
    pub lags_ms: Vec<i64>,
    /// From the burst minute to the last arrival.
    pub drain_s: f64,
    pub per_second: f64,
    pub api: ApiDelta,
    /// Occurrences finished in the snapshot window (the denominator of the per-occurrence rates).
    pub occurrences_in_window: f64,
    pub api_per_occurrence_own: f64,
    pub api_per_occurrence_all: f64,
    pub peak_rss_mib: f64,
    pub cpu_s: f64,
    pub cpu_s_per_1000: f64,
    pub notes: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Limit {
    pub patches: usize,
    pub concurrency: usize,
    pub drain_s: f64,
    pub per_second: f64,
    pub errors: usize,
    pub api: ApiDelta,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Start {
    pub tasks: usize,
    /// Operator start to `/health/ready`.
    pub ready_s: f64,
    /// Operator start to every task showing `status.nextOccurrence`.
    pub all_pending_s: f64,
    pub api: ApiDelta,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Idle {
    pub window_s: f64,
    pub api: ApiDelta,
    pub cpu_s: f64,
    pub rss_mib: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Environment {
    pub kubernetes: String,
    pub sidecar: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub cpu: String,
    pub date: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct RecurResult {
    pub environment: Environment,
    pub workers: u16,
    pub start: Start,
    pub idle: Idle,
    pub limit: Limit,
    pub burst: Burst,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct CronResult {
    pub label: String,
    pub kcm_flags: String,
    pub burst: Burst,
    /// CronJobs whose Job was for a later minute: the burst minute was skipped for them.
    pub skipped: usize,
    /// Lag from the scheduled time to the bench's watch seeing the Job (millisecond resolution;
    /// creationTimestamp has whole seconds).
    pub observed_lag: LagStats,
    pub observed_lags_ms: Vec<i64>,
    pub observed_drain_s: f64,
}

/// One run of the fairness scenario: a big and a small namespace due in the same minute.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct FairnessRun {
    /// `fair` or `shared` (see `recur-bench fairness --queues`).
    pub queue: String,
    /// How `recur run` was started, for the report.
    pub system: String,
    pub big_tasks: usize,
    pub small_tasks: usize,
    pub due: Option<DateTime<Utc>>,
    /// Firing lag of the small namespace's occurrences (arrival at the backend minus due).
    pub small: LagStats,
    pub small_lags_ms: Vec<i64>,
    /// Firing lag of the big namespace's occurrences.
    pub big: LagStats,
    /// From the due minute to the big namespace's last arrival.
    pub big_drain_s: f64,
    /// From the due minute to the small namespace's last arrival.
    pub small_drain_s: f64,
    /// CPU (utime + stime) of `recur run` from before the due minute to the last arrival.
    pub cpu_s: f64,
    /// VmHWM of `recur run`: its peak, start included.
    pub peak_rss_mib: f64,
    pub notes: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct FairnessResult {
    pub environment: Environment,
    pub workers: u16,
    pub runs: Vec<FairnessRun>,
}

pub fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Res<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| msg(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(value)?)
        .map_err(|e| msg(format!("writing {}: {e}", path.display())))?;
    say(format!("wrote {}", path.display()));
    Ok(path)
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Res<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| msg(format!("reading {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| msg(format!("{}: {e}", path.display())))
}
