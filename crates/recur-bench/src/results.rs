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
    /// Where the burst's time and the machine's CPU went (absent in older results).
    #[serde(default)]
    pub cost: WindowCost,
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
    /// Where the limit's time and the machine's CPU went (absent in older results).
    #[serde(default)]
    pub cost: WindowCost,
}

/// Where a window's time and CPU went: kube-apiserver's and recur's own histograms (means of
/// the window's observations) and /proc. `None` where the window has no observation or the
/// reading was not asked for.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct WindowCost {
    /// kube-apiserver's mean time to serve a PATCH of recurringtasks/status, from its
    /// `apiserver_request_duration_seconds`.
    pub apiserver_patch_ms: Option<f64>,
    /// Of that, kube-apiserver's mean time per etcd update of a RecurringTask, from its
    /// `etcd_request_duration_seconds`.
    #[serde(default)]
    pub etcd_update_ms: Option<f64>,
    /// The share of the machine's cores busy (not idle, not waiting for I/O), from /proc/stat.
    pub machine_busy: Option<f64>,
    /// CPU per status patch of every process by command name (kube-apiserver, etcd, daprd,
    /// recur, recur-dev, ...), from /proc over the window.
    #[serde(default)]
    pub cpu_ms_per_patch_by_command: std::collections::BTreeMap<String, f64>,
    /// recur's mean backend call (the Dapr invocation, request to answer).
    pub backend_call_ms: Option<f64>,
    /// recur's mean reconcile of a RecurringTask (a delivery and its status write, or a look
    /// at its own write's watch event).
    pub reconcile_ms: Option<f64>,
    /// recur's reconciles of RecurringTasks in the window.
    pub reconciles: Option<f64>,
    /// The burst's /proc window began at its instant and ended once recur's last status write
    /// was answered, and CPU was each process's own difference. `false` in the results from
    /// before that (2026-12-07, 04:00), whose window began 8 s before the instant, when nothing
    /// fires, and ended at the last arrival, and whose CPU was summed by command name over the
    /// processes running at both ends.
    #[serde(default)]
    pub from_instant: bool,
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
    /// The limit's patches again, on the burst's tasks once delivered (their objects as recur
    /// left them): what the bigger object alone costs the apiserver (absent in older results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_delivered: Option<Limit>,
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

/// The spread scenario (`recur-bench spread`): N tasks of one period (an hour unless
/// `--period`) spread uniformly over it.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct SpreadResult {
    /// The command that produced it (quoted in the report).
    #[serde(default)]
    pub command: String,
    pub environment: Environment,
    pub workers: u16,
    pub tasks: usize,
    /// The tasks' interval in seconds (older results: an hour).
    #[serde(default = "hour")]
    pub period_s: u64,
    /// `every: <period>` with `startAt` = `first_due` + floor(i × period / N) s for task i.
    pub schedule: String,
    /// The first occurrence of the first task: the start of the steady-state window.
    pub first_due: Option<DateTime<Utc>>,
    /// Bare status patches per second of a 500-task probe, which set `first_due`.
    pub probe_per_second: f64,
    /// Creating the N tasks (setup, not part of the figures).
    pub create_s: f64,
    pub cold: SpreadCold,
    pub restart: SpreadRestart,
    /// The restarts of `--compare-lists`, before `restart`, in their order.
    #[serde(default)]
    pub compared: Vec<ComparedRestart>,
    pub idle: SpreadIdle,
    pub steady: SpreadSteady,
    /// The minimal client: N bare status patches, after the operator stopped.
    pub minimal: Limit,
    pub notes: Vec<String>,
}

fn hour() -> u64 {
    3600
}

/// recur started with all N tasks present and none with a status.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct SpreadCold {
    /// Operator start to `/health/ready`.
    pub ready_s: f64,
    /// Operator start to N status writes answered (every task's first `nextOccurrence`).
    pub all_pending_s: f64,
    pub api: ApiDelta,
    /// Write requests (POST, PUT, PATCH, DELETE) on recur resources in that time.
    pub writes: f64,
    /// Occurrences delivered in that time (0 unless the setup overran the first occurrence).
    pub delivered: f64,
    pub cpu_s: f64,
    /// VmHWM of this operator process at the end of the cold start.
    pub peak_rss_mib: f64,
}

/// recur stopped and started again with every status already correct.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct SpreadRestart {
    /// Operator start to `/health/ready`.
    pub ready_s: f64,
    /// Operator start to `recur_reconciles_total{kind="RecurringTask"}` reaching N: every task
    /// looked at once.
    pub settled_s: f64,
    /// Write requests on recur resources from the start to ready, and to settled.
    pub writes_until_ready: f64,
    pub writes_until_settled: f64,
    pub api_until_settled: ApiDelta,
    /// Occurrences delivered from the start to settled (0 unless one fell due).
    pub delivered: f64,
    /// The operator's CPU seconds from its start to ready: its share of the list (the rest of
    /// the wait is the apiserver's).
    #[serde(default)]
    pub cpu_until_ready_s: f64,
    /// Its resident memory at ready (the list just decoded).
    #[serde(default)]
    pub rss_at_ready_mib: f64,
    /// A bare kube-rs client's paged LIST of the same N tasks (500 a page, decoded) with no
    /// operator running, just before the restart: what readiness cannot beat. 0: not measured.
    #[serde(default)]
    pub bare_list_s: f64,
}

/// A restart with `recur run --initial-list <form>`.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct ComparedRestart {
    /// The form: `streaming`, `paged` or `auto`.
    pub initial_list: String,
    pub restart: SpreadRestart,
}

/// From the restarted operator's settling to shortly before the first occurrence.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct SpreadIdle {
    pub window_s: f64,
    pub api: ApiDelta,
    pub writes: f64,
    /// Requests on recur resources per minute, and every request the apiserver finished per
    /// minute (any client).
    pub own_per_minute: f64,
    pub all_per_minute: f64,
    pub cpu_s: f64,
    /// VmRSS at the end of the window.
    pub rss_mib: f64,
    pub delivered: f64,
}

/// The occurrences due in [first_due, first_due + window).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct SpreadSteady {
    pub window_s: f64,
    /// Occurrences due in the window by the schedule.
    pub expected: usize,
    /// Of those, arrived at the backend (accepted).
    pub occurrences: usize,
    pub lag: LagStats,
    pub lags_ms: Vec<i64>,
    /// Occurrences the operator counts delivered from the snapshot before the window to the
    /// one after the last arrival (the denominator of the rates).
    pub delivered: f64,
    pub api: ApiDelta,
    pub api_per_occurrence_own: f64,
    pub cpu_s: f64,
    pub cpu_s_per_1000: f64,
    /// VmHWM of the restarted operator (restart, idle and steady state).
    pub peak_rss_mib: f64,
}

/// The shards scenario (`recur-bench shards`): one operator over N tasks, then S replicas each
/// over one label selector's share.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct ShardsResult {
    pub command: String,
    pub environment: Environment,
    pub workers: u16,
    pub tasks: usize,
    pub shards: usize,
    /// Creating the N tasks (setup, not part of the figures).
    pub create_s: f64,
    pub phases: Vec<ShardsPhase>,
    /// A bare client's paged list (500 a page, decoded) of all N tasks, and of shard 0's (by
    /// its label selector), with no operator running.
    pub bare_list_all_s: f64,
    pub bare_list_one_s: f64,
    /// The same tasks on S replicas of `recur run --shards S` (no labels).
    #[serde(default)]
    pub automatic: Option<AutomaticShards>,
    pub notes: Vec<String>,
}

/// `recur run --shards S` on S replicas: the cold start (in `ShardsResult::phases`), then a
/// SIGKILL of replica 0 with the others running.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct AutomaticShards {
    /// The Leases' duration (`--lease-duration`, recur's default).
    pub lease_duration_s: f64,
    /// From the SIGKILL until the other replicas held every shard (`recur_shards_held`).
    pub held_s: f64,
    /// From the SIGKILL until they had reconciled every task again (after gaining a shard a
    /// replica reconciles every object; no list, its cache holds them all).
    pub reconciled_s: f64,
    /// CPU seconds of the other replicas over that time.
    pub cpu_s: f64,
    /// Write requests on recur resources over that time.
    pub writes: f64,
    /// RSS of each replica after the cold start (each caches every task).
    pub rss_mib: Vec<f64>,
}

/// What a phase of the shards scenario waits for, per replica.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Until {
    /// Its share of status writes answered (its `recur_status_writes_total{outcome="ok"}`): a
    /// cold start.
    #[default]
    Written,
    /// Its share of RecurringTasks reconciled once (`recur_reconciles_total`): a restart.
    Reconciled,
}

/// Operators started at once, each until its share is done.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct ShardsPhase {
    pub what: String,
    pub until: Until,
    pub replicas: Vec<ReplicaRun>,
    /// Write requests on recur resources from the start to the last replica done.
    pub writes: f64,
    pub api: ApiDelta,
}

/// One `recur run` of a phase.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct ReplicaRun {
    /// `--selector`; `None`: every task.
    pub shard: Option<String>,
    pub tasks: usize,
    /// Start to `/health/ready`.
    pub ready_s: f64,
    /// Start to its share written (a cold start) or reconciled (a restart).
    pub done_s: f64,
    /// CPU seconds and VmRSS when done; VmRSS 30 s later, and VmHWM then.
    pub cpu_s: f64,
    pub rss_mib: f64,
    pub rss_later_mib: f64,
    pub peak_rss_mib: f64,
}

pub fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Res<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| msg(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(value)?)
        .map_err(|e| msg(format!("writing {}: {e}", path.display())))?;
    say(format!("wrote {}", path.display()));
    Ok(path)
}

/// Writes `md` to `dir/name` and prints it (stdout carries the reports).
pub fn write_markdown(dir: &Path, name: &str, md: &str) -> Res<()> {
    let path = dir.join(name);
    std::fs::write(&path, md).map_err(|e| msg(format!("writing {}: {e}", path.display())))?;
    print!("{md}");
    say(format!("wrote {}", path.display()));
    Ok(())
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Res<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| msg(format!("reading {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| msg(format!("{}: {e}", path.display())))
}
