//! `recur-bench`: the scale benchmark behind `make bench` (driven by `scripts/bench.sh`, which
//! starts the control plane, the recording backend and the Dapr sidecars first).
//!
//! - `recur`: start and idle of `recur run`, the limit (bare status patches), and a burst of N
//!   RecurringTasks due in the same minute; writes `recur.json`.
//! - `cronjob`: the same burst as N CronJobs handled by kube-controller-manager; writes
//!   `cronjob-<label>.json`.
//! - `report`: reads those files and writes `results.md`, the lag CDFs (`lag-*.dat`) and a
//!   gnuplot script (`lag.plt`) that draws `lag.png`.
//!
//! Figures are printed, never asserted: this is not a test. Every wait is a condition with a
//! deadline (or the wall clock reaching a minute boundary). Only loopback clusters are accepted.
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, GetParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config, Resource, ResourceExt};
use recur::api::RecurringTask;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::oneshot;

/// Label on every namespace the benchmark creates.
const BENCH_LABEL: &str = "recur.dev/bench";
/// Concurrency of the benchmark's own writes (creates, the limit's patches).
const CONCURRENCY: usize = 64;
/// The annotation the CronJob controller puts on each Job it creates.
const SCHEDULED_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// The burst is measured only when every task is pending for a minute at least this far ahead
/// (the "before" snapshot is taken in between).
const MARGIN: Duration = Duration::from_secs(8);

#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Msg(String),
}

type Res<T> = Result<T, BenchError>;

fn msg(s: impl Into<String>) -> BenchError {
    BenchError::Msg(s.into())
}

#[derive(Parser)]
#[command(
    name = "recur-bench",
    about = "Scale benchmark of recur against the CronJob controller (see scripts/bench.sh)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start, idle, the limit and the burst of `recur run`; writes OUT_DIR/recur.json.
    Recur(RecurArgs),
    /// A burst of N CronJobs; writes OUT_DIR/cronjob-LABEL.json.
    Cronjob(CronArgs),
    /// Writes results.md, lag-*.dat and lag.plt from the JSON files in OUT_DIR.
    Report(ReportArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// Kubeconfig of the (loopback) cluster.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench")]
    out_dir: PathBuf,
    /// Objects (RecurringTasks or CronJobs) in the burst.
    #[arg(long, default_value_t = 1000)]
    tasks: usize,
}

#[derive(Args)]
struct RecurArgs {
    #[command(flatten)]
    common: Common,
    /// The `recur` binary to run (a release build).
    #[arg(long, default_value = "target/release/recur")]
    recur_bin: PathBuf,
    /// URL of the recording backend (`recur-dev backend`).
    #[arg(long)]
    backend_url: String,
    /// DAPR_HTTP_PORT of the operator's sidecar.
    #[arg(long)]
    dapr_http_port: u16,
    /// What the sidecars are (for the report).
    #[arg(long, default_value = "unknown")]
    sidecar: String,
    /// `recur run --workers`.
    #[arg(long, default_value_t = 64)]
    workers: u16,
    /// Idle window, in seconds.
    #[arg(long, default_value_t = 60)]
    idle: u64,
    /// Where the operators' logs go.
    #[arg(long, default_value = "target/bench")]
    log_dir: PathBuf,
    /// Record a system-wide CPU profile of the burst (`perf record -a -g -e cpu-clock`) here.
    #[arg(long)]
    perf_out: Option<PathBuf>,
}

#[derive(Args)]
struct CronArgs {
    #[command(flatten)]
    common: Common,
    /// Name of this run (file name and namespace), e.g. default-qps.
    #[arg(long)]
    label: String,
    /// Pid of kube-controller-manager (for RSS and CPU).
    #[arg(long)]
    kcm_pid: u32,
    /// How kube-controller-manager's client is configured (for the report).
    #[arg(long, default_value = "")]
    kcm_flags: String,
}

#[derive(Args)]
struct ReportArgs {
    /// Where the JSON results are, and where results.md, lag-*.dat and lag.plt go.
    #[arg(long, default_value = "target/bench")]
    out_dir: PathBuf,
    /// The command that produced the results (quoted in the report).
    #[arg(long, default_value = "make bench")]
    command: String,
}

// --- results ------------------------------------------------------------------------------------

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct LagStats {
    count: usize,
    p50_ms: i64,
    p99_ms: i64,
    max_ms: i64,
    mean_ms: f64,
}

/// Apiserver requests between two snapshots of `apiserver_request_total`.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct ApiDelta {
    /// Every request the apiserver finished in the window, from any client.
    all: f64,
    /// Requests on `own_resources` (any verb).
    own: f64,
    own_resources: Vec<String>,
    /// "VERB resource[/subresource]" to count; non-resource URLs are "VERB (non-resource)".
    by_request: BTreeMap<String, f64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct Burst {
    system: String,
    tasks: usize,
    due: Option<DateTime<Utc>>,
    /// Occurrences of the burst minute that arrived (recur) or Jobs created (CronJob).
    occurrences: usize,
    lag: LagStats,
    lags_ms: Vec<i64>,
    /// From the burst minute to the last arrival.
    drain_s: f64,
    per_second: f64,
    api: ApiDelta,
    /// Occurrences finished in the snapshot window (the denominator of the per-occurrence rates).
    occurrences_in_window: f64,
    api_per_occurrence_own: f64,
    api_per_occurrence_all: f64,
    peak_rss_mib: f64,
    cpu_s: f64,
    cpu_s_per_1000: f64,
    notes: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct Limit {
    patches: usize,
    concurrency: usize,
    drain_s: f64,
    per_second: f64,
    errors: usize,
    api: ApiDelta,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct Start {
    tasks: usize,
    /// Operator start to `/health/ready`.
    ready_s: f64,
    /// Operator start to every task showing `status.nextOccurrence`.
    all_pending_s: f64,
    api: ApiDelta,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct Idle {
    window_s: f64,
    api: ApiDelta,
    cpu_s: f64,
    rss_mib: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct Environment {
    kubernetes: String,
    sidecar: String,
    cores: usize,
    memory_gib: f64,
    cpu: String,
    date: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct RecurResult {
    environment: Environment,
    workers: u16,
    start: Start,
    idle: Idle,
    limit: Limit,
    burst: Burst,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct CronResult {
    label: String,
    kcm_flags: String,
    burst: Burst,
    /// CronJobs whose Job was for a later minute: the burst minute was skipped for them.
    skipped: usize,
    /// Lag from the scheduled time to the bench's watch seeing the Job (millisecond resolution;
    /// creationTimestamp has whole seconds).
    observed_lag: LagStats,
    observed_lags_ms: Vec<i64>,
    observed_drain_s: f64,
}

// --- main ---------------------------------------------------------------------------------------

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("recur-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Recur(a) => run_recur(a).await,
            Command::Cronjob(a) => run_cronjob(a).await,
            Command::Report(a) => report(a),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("recur-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn say(text: impl AsRef<str>) {
    eprintln!(
        "[recur-bench {}] {}",
        Utc::now().format("%H:%M:%S%.3f"),
        text.as_ref()
    );
}

// --- the cluster --------------------------------------------------------------------------------

async fn kube_client(path: &Path) -> Res<Client> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    // Load goes only to a cluster on this machine, never to someone's real one.
    let host = config.cluster_url.host().unwrap_or_default().to_owned();
    if !matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]" | "::1") {
        return Err(msg(format!(
            "the kubeconfig {} points at {}: recur-bench runs only against a cluster on loopback",
            path.display(),
            config.cluster_url
        )));
    }
    Ok(Client::try_from(config)?)
}

/// Deletes `name` if it exists (waiting until it is gone), then creates it afresh.
async fn fresh_namespace(client: &Client, name: &str) -> Res<()> {
    delete_namespace(client, name).await?;
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {BENCH_LABEL: "true"}}
    }))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(())
}

/// Deletes a namespace and waits (up to 10 minutes) until it is gone.
async fn delete_namespace(client: &Client, name: &str) -> Res<()> {
    let api = Api::<Namespace>::all(client.clone());
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    let started = Instant::now();
    wait_until(
        Duration::from_secs(600),
        &format!("namespace {name} to be deleted"),
        || {
            let api = api.clone();
            async move { matches!(api.get_opt(name).await, Ok(None)) }
        },
    )
    .await?;
    say(format!(
        "namespace {name} deleted in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Polls `check` (at most every 250 ms) until it holds; fails naming `what` after `timeout`.
async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Res<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(true) = tokio::time::timeout(left, check()).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(msg(format!(
                "timed out after {timeout:?} waiting for {what}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Creates `objects` with `CONCURRENCY` requests in flight; returns how long it took.
async fn create_all<K>(api: &Api<K>, objects: Vec<K>) -> Res<Duration>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let started = Instant::now();
    let results: Vec<Result<K, kube::Error>> = futures::stream::iter(objects)
        .map(|o| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &o).await }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let errors: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    if let Some(first) = errors.first() {
        return Err(msg(format!(
            "{} creates failed; the first: {first}",
            errors.len()
        )));
    }
    Ok(started.elapsed())
}

/// Sleeps until the next minute boundary of the wall clock (plus 100 ms).
async fn until_next_minute() {
    let now = Utc::now();
    let into = Duration::from_millis(
        u64::from(now.second()) * 1000 + u64::from(now.nanosecond() / 1_000_000).min(999),
    );
    let left = Duration::from_secs(60).saturating_sub(into) + Duration::from_millis(100);
    say(format!(
        "waiting {:.1}s for the next minute",
        left.as_secs_f64()
    ));
    tokio::time::sleep(left).await;
}

fn next_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = (t.timestamp().div_euclid(60) + 1) * 60;
    DateTime::from_timestamp(secs, 0).unwrap_or(t)
}

// --- metrics ------------------------------------------------------------------------------------

/// One sample of a Prometheus/OpenMetrics text: name, labels, value.
fn samples(text: &str) -> impl Iterator<Item = (&str, Vec<(String, String)>, f64)> {
    text.lines().filter_map(|line| {
        if line.starts_with('#') || line.trim().is_empty() {
            return None;
        }
        let name_end = line.find(['{', ' '])?;
        let name = &line[..name_end];
        let (labels, rest) = if line[name_end..].starts_with('{') {
            let (labels, len) = parse_labels(&line[name_end + 1..])?;
            (labels, &line[name_end + 1 + len..])
        } else {
            (vec![], &line[name_end..])
        };
        let value = rest.split_whitespace().next()?.parse().ok()?;
        Some((name, labels, value))
    })
}

/// Parses `k="v",k2="v2"}`; returns the labels and the length consumed, closing brace included.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, usize)> {
    let mut labels = vec![];
    let mut chars = s.char_indices().peekable();
    loop {
        let (i, c) = chars.next()?;
        match c {
            '}' => return Some((labels, i + 1)),
            ',' | ' ' => continue,
            _ => {}
        }
        let mut key = String::from(c);
        loop {
            let (_, c) = chars.next()?;
            if c == '=' {
                break;
            }
            key.push(c);
        }
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            let (_, c) = chars.next()?;
            match c {
                '\\' => value.push(chars.next()?.1),
                '"' => break,
                c => value.push(c),
            }
        }
        labels.push((key, value));
    }
}

fn label<'a>(labels: &'a [(String, String)], key: &str) -> &'a str {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// The sum of series `name` whose labels include all of `want`.
fn sample_sum(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    samples(text)
        .filter(|(n, labels, _)| *n == name && want.iter().all(|(k, v)| label(labels, k) == *v))
        .map(|(_, _, v)| v)
        .sum()
}

/// `apiserver_request_total` summed per "VERB resource[/subresource]".
fn request_totals(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (name, labels, value) in samples(text) {
        if name != "apiserver_request_total" {
            continue;
        }
        let resource = label(&labels, "resource");
        let sub = label(&labels, "subresource");
        let what = match (resource, sub) {
            ("", _) => "(non-resource)".to_owned(),
            (r, "") => r.to_owned(),
            (r, s) => format!("{r}/{s}"),
        };
        *out.entry(format!("{} {what}", label(&labels, "verb")))
            .or_insert(0.0) += value;
    }
    out
}

/// The apiserver's own metrics, read with the kubeconfig's (admin) credentials.
async fn apiserver_metrics(client: &Client) -> Res<String> {
    let request = kube::core::Request::new("")
        .get("metrics", &GetParams::default())
        .map_err(|e| msg(format!("building GET /metrics: {e}")))?;
    Ok(client.request_text(request).await?)
}

/// Whether a "VERB resource[/subresource]" key is about one of `resources`.
fn is_own<S: AsRef<str>>(key: &str, resources: &[S]) -> bool {
    let what = key.split_once(' ').map_or("", |(_, w)| w);
    let resource = what.split('/').next().unwrap_or("");
    resources.iter().any(|r| r.as_ref() == resource)
}

fn api_delta(before: &str, after: &str, own: &[&str]) -> ApiDelta {
    let (b, a) = (request_totals(before), request_totals(after));
    let mut by_request = BTreeMap::new();
    for (key, value) in &a {
        let d = value - b.get(key).copied().unwrap_or(0.0);
        if d > 0.0 {
            by_request.insert(key.clone(), d);
        }
    }
    ApiDelta {
        // fold from +0.0: an empty f64 sum() is -0.0, printed "-0".
        all: by_request.values().fold(0.0, |a, v| a + v),
        own: by_request
            .iter()
            .filter(|(k, _)| is_own(k, own))
            .fold(0.0, |a, (_, v)| a + v),
        own_resources: own.iter().map(|s| s.to_string()).collect(),
        by_request,
    }
}

/// Open watches on recurringtasks, from `apiserver_longrunning_requests`.
async fn open_task_watches(client: &Client) -> Res<f64> {
    let text = apiserver_metrics(client).await?;
    Ok(sample_sum(
        &text,
        "apiserver_longrunning_requests",
        &[("verb", "WATCH"), ("resource", "recurringtasks")],
    ))
}

// --- processes ----------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default)]
struct ProcStat {
    cpu_s: f64,
    hwm_mib: f64,
    rss_mib: f64,
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (utime + stime) and memory (VmHWM, VmRSS) of a process.
fn proc_stat(pid: u32) -> Res<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| msg(format!("reading /proc/{pid}/stat: {e}")))?;
    // Fields after the command name (which may hold spaces and parentheses).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| msg(format!("/proc/{pid}/stat is not readable as stat")))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Res<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| msg(format!("/proc/{pid}/stat has no field {}", i + 3)))
    };
    // utime is field 14 and stime field 15 of stat(5); `rest` starts at field 3.
    let cpu_s = (ticks(11)? + ticks(12)?) / clock_ticks();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| msg(format!("reading /proc/{pid}/status: {e}")))?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(ProcStat {
        cpu_s,
        hwm_mib: kib("VmHWM:") / 1024.0,
        rss_mib: kib("VmRSS:") / 1024.0,
    })
}

struct Operator {
    child: tokio::process::Child,
    pid: u32,
    http_port: u16,
    log: PathBuf,
}

fn free_port() -> Res<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| msg(format!("no free port on 127.0.0.1: {e}")))
}

fn spawn_operator(a: &RecurArgs, namespace: &str, name: &str) -> Res<Operator> {
    let http_port = free_port()?;
    std::fs::create_dir_all(&a.log_dir)
        .map_err(|e| msg(format!("creating {}: {e}", a.log_dir.display())))?;
    let log = a.log_dir.join(format!("{name}.log"));
    let file =
        std::fs::File::create(&log).map_err(|e| msg(format!("creating {}: {e}", log.display())))?;
    let err = file
        .try_clone()
        .map_err(|e| msg(format!("{}: {e}", log.display())))?;
    let child = tokio::process::Command::new(&a.recur_bin)
        .args(["run", "--namespace", namespace, "--workers"])
        .arg(a.workers.to_string())
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{http_port}"))
        .env("KUBECONFIG", &a.common.kubeconfig)
        .env("DAPR_HTTP_PORT", a.dapr_http_port.to_string())
        .env_remove("DAPR_HTTP_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| msg(format!("starting {}: {e}", a.recur_bin.display())))?;
    let pid = child
        .id()
        .ok_or_else(|| msg("the operator exited at once"))?;
    say(format!(
        "started recur run --namespace {namespace} --workers {} (pid {pid}, log {})",
        a.workers,
        log.display()
    ));
    Ok(Operator {
        child,
        pid,
        http_port,
        log,
    })
}

impl Operator {
    async fn wait_ready(&mut self, http: &reqwest::Client) -> Res<()> {
        let url = format!("http://127.0.0.1:{}/health/ready", self.http_port);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(msg(format!(
                    "the operator exited ({status}); see {}",
                    self.log.display()
                )));
            }
            if http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(msg(format!(
                    "the operator was not ready within 120s; see {}",
                    self.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn metrics(&self, http: &reqwest::Client) -> Res<String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.http_port);
        Ok(http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    async fn delivered(&self, http: &reqwest::Client) -> Res<f64> {
        Ok(sample_sum(
            &self.metrics(http).await?,
            "recur_occurrences_total",
            &[("kind", "RecurringTask"), ("outcome", "delivered")],
        ))
    }

    /// SIGTERM, then SIGKILL after 15 s.
    async fn stop(mut self) {
        signal(self.pid, "-TERM").await;
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            say(format!(
                "operator {} ignored SIGTERM for 15s: killing it",
                self.pid
            ));
            let _ = self.child.kill().await;
        }
    }
}

/// Sends `signal` (`-TERM`, `-INT`) to `pid` with kill(1); a process already gone is no error.
async fn signal(pid: u32, signal: &str) {
    let _ = tokio::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .await;
}

/// `perf record` of the whole machine (every process, so the apiserver, etcd and the sidecar
/// show next to recur), stopped with SIGINT so that it writes its file.
struct Perf {
    child: tokio::process::Child,
    pid: u32,
    path: PathBuf,
}

impl Perf {
    fn start(path: &Path) -> Res<Self> {
        let child = tokio::process::Command::new("perf")
            .args(["record", "-a", "-g", "-e", "cpu-clock", "-F", "499", "-o"])
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                msg(format!(
                    "starting perf record: {e} (apt-get install linux-perf)"
                ))
            })?;
        let pid = child
            .id()
            .ok_or_else(|| msg("perf record exited at once"))?;
        say(format!(
            "perf record -a running (pid {pid}) into {}",
            path.display()
        ));
        Ok(Perf {
            child,
            pid,
            path: path.to_owned(),
        })
    }

    async fn stop(mut self) -> Res<()> {
        signal(self.pid, "-INT").await;
        let status = tokio::time::timeout(Duration::from_secs(120), self.child.wait())
            .await
            .map_err(|_| msg("perf record did not stop within 120s"))?
            .map_err(|e| msg(format!("waiting for perf record: {e}")))?;
        say(format!(
            "perf record ended ({status}): {}",
            self.path.display()
        ));
        Ok(())
    }
}

// --- watching -----------------------------------------------------------------------------------

/// A watch kept open in the background. It reports `R` once `check` holds on the objects seen so
/// far and stays open (draining events) until it is closed, so the caller decides when the
/// apiserver sees it end.
struct Watch<R> {
    result: oneshot::Receiver<Res<(Instant, R)>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl<R: Send + 'static> Watch<R> {
    /// Starts the watch and returns once its initial list is done.
    async fn start<K, V>(
        api: Api<K>,
        mut extract: impl FnMut(&K, Option<&V>) -> V + Send + 'static,
        mut check: impl FnMut(&HashMap<String, V>) -> Option<R> + Send + 'static,
    ) -> Res<Self>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
        V: Send + 'static,
    {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (result_tx, result) = oneshot::channel();
        let (stop, mut stop_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut stream =
                std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
            let mut seen: HashMap<String, V> = HashMap::new();
            let mut ready = Some(ready_tx);
            let mut result_tx = Some(result_tx);
            loop {
                let event = tokio::select! {
                    _ = &mut stop_rx => return,
                    event = stream.next() => event,
                };
                let event = match event {
                    None => {
                        if let Some(tx) = result_tx.take() {
                            let _ = tx.send(Err(msg("the watch ended")));
                        }
                        return;
                    }
                    Some(Err(e)) => {
                        say(format!("watch error (retrying): {e}"));
                        continue;
                    }
                    Some(Ok(event)) => event,
                };
                match event {
                    watcher::Event::Init => seen.clear(),
                    watcher::Event::InitApply(o) | watcher::Event::Apply(o) => {
                        let name = o.name_any();
                        let value = extract(&o, seen.get(&name));
                        seen.insert(name, value);
                    }
                    watcher::Event::Delete(o) => {
                        seen.remove(&o.name_any());
                    }
                    watcher::Event::InitDone => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                }
                if ready.is_none()
                    && result_tx.is_some()
                    && let Some(r) = check(&seen)
                    && let Some(tx) = result_tx.take()
                {
                    let _ = tx.send(Ok((Instant::now(), r)));
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(120), ready_rx)
            .await
            .map_err(|_| msg("the watch did not list within 120s"))?
            .map_err(|_| msg("the watch ended before listing"))?;
        Ok(Watch {
            result,
            stop: Some(stop),
            task,
        })
    }

    /// Waits for the result, at most `timeout`.
    async fn result(&mut self, timeout: Duration, what: &str) -> Res<(Instant, R)> {
        match tokio::time::timeout(timeout, &mut self.result).await {
            Err(_) => Err(msg(format!(
                "timed out after {timeout:?} waiting for {what}"
            ))),
            Ok(Err(_)) => Err(msg(format!("the watch for {what} ended"))),
            Ok(Ok(r)) => r,
        }
    }

    /// Closes the watch (the apiserver counts a watch in `apiserver_request_total` when it ends).
    async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
    }
}

/// Closes a watch on recurringtasks and waits until the apiserver has seen it end, so that it
/// is counted before the next snapshot rather than inside the window.
async fn close_task_watch<R: Send + 'static>(client: &Client, watch: Watch<R>) -> Res<()> {
    let open = open_task_watches(client).await?;
    watch.close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_task_watches(client).await? > open - 1.0 {
        if Instant::now() >= deadline {
            say("the apiserver still counts the closed watch after 10s; going on");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

// --- statistics ---------------------------------------------------------------------------------

fn lag_stats(lags: &[i64]) -> LagStats {
    let mut sorted = lags.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    // Nearest rank.
    let rank = |q: f64| -> i64 {
        if n == 0 {
            return 0;
        }
        let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
        sorted[i]
    };
    LagStats {
        count: n,
        p50_ms: rank(0.50),
        p99_ms: rank(0.99),
        max_ms: sorted.last().copied().unwrap_or(0),
        mean_ms: if n == 0 {
            0.0
        } else {
            sorted.iter().sum::<i64>() as f64 / n as f64
        },
    }
}

fn per(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Res<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| msg(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(value)?)
        .map_err(|e| msg(format!("writing {}: {e}", path.display())))?;
    say(format!("wrote {}", path.display()));
    Ok(path)
}

fn environment(kubernetes: String, sidecar: String) -> Environment {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let memory_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    Environment {
        kubernetes,
        sidecar,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_gib,
        cpu,
        date: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
    }
}

// --- recur --------------------------------------------------------------------------------------

fn task_name(i: usize) -> String {
    format!("bench-{i:05}")
}

fn task_object(i: usize, cron: &str) -> Res<RecurringTask> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "recur.dev/v1alpha1",
        "kind": "RecurringTask",
        "metadata": {"name": task_name(i)},
        "spec": {
            "userId": format!("bench-user-{}", i % 100),
            "title": format!("Benchmark task {i}"),
            "schedule": {"cron": cron},
        }
    }))?)
}

fn pending_due(task: &RecurringTask) -> Option<DateTime<Utc>> {
    task.status
        .as_ref()
        .and_then(|s| s.next_occurrence.as_ref())
        .map(|p| p.due)
}

async fn create_tasks(client: &Client, ns: &str, n: usize, cron: &str) -> Res<()> {
    let tasks = (0..n)
        .map(|i| task_object(i, cron))
        .collect::<Res<Vec<_>>>()?;
    let took = create_all(&Api::<RecurringTask>::namespaced(client.clone(), ns), tasks).await?;
    say(format!(
        "created {n} RecurringTasks ({cron:?}) in {ns} in {:.1}s",
        took.as_secs_f64()
    ));
    Ok(())
}

async fn run_recur(a: RecurArgs) -> Res<()> {
    let n = a.common.tasks;
    let client = kube_client(&a.common.kubeconfig).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    Api::<RecurringTask>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await
        .map_err(|e| {
            msg(format!(
                "the RecurringTask CRD is not usable ({e}); apply crds/ first"
            ))
        })?;
    let version = client.apiserver_version().await?;
    let mut result = RecurResult {
        environment: environment(version.git_version, a.sidecar.clone()),
        workers: a.workers,
        ..RecurResult::default()
    };

    // 1. Start and idle: an hourly schedule half an hour away, so nothing fires.
    let ns = "bench-idle";
    fresh_namespace(&client, ns).await?;
    let minute = (Utc::now().minute() + 30) % 60;
    create_tasks(&client, ns, n, &format!("{minute} * * * *")).await?;
    let (start, idle) = start_and_idle(&a, &client, &http, ns).await?;
    say(format!(
        "start: ready after {:.2}s, every task pending after {:.2}s ({} API requests on recur resources); idle {:.0}s: {} requests on recur resources, {:.3} CPU s",
        start.ready_s, start.all_pending_s, start.api.own, idle.window_s, idle.api.own, idle.cpu_s
    ));
    result.start = start;
    result.idle = idle;

    // 2. The limit: one status patch per task, nothing else, no operator running.
    let limit = limit(&client, ns, n).await?;
    say(format!(
        "limit: {} status patches in {:.2}s ({:.0}/s, {} errors)",
        limit.patches, limit.drain_s, limit.per_second, limit.errors
    ));
    result.limit = limit;
    delete_namespace(&client, ns).await?;

    // 3. The burst.
    let burst = recur_burst(&a, &client, &http).await?;
    result.burst = burst;
    write_json(&a.common.out_dir, "recur.json", &result)?;
    Ok(())
}

async fn start_and_idle(
    a: &RecurArgs,
    client: &Client,
    http: &reqwest::Client,
    ns: &str,
) -> Res<(Start, Idle)> {
    let n = a.common.tasks;
    let api = Api::<RecurringTask>::namespaced(client.clone(), ns);
    let mut watch = Watch::start(
        api,
        |t: &RecurringTask, _| pending_due(t).is_some(),
        move |seen| (seen.len() >= n && seen.values().all(|p| *p)).then_some(()),
    )
    .await?;
    let before = apiserver_metrics(client).await?;
    let t0 = Instant::now();
    let mut op = spawn_operator(a, ns, "operator-idle")?;
    op.wait_ready(http).await?;
    let ready_s = t0.elapsed().as_secs_f64();
    let timeout = Duration::from_secs(120) + Duration::from_millis(50) * n as u32;
    let (at, ()) = watch
        .result(timeout, "every task to show status.nextOccurrence")
        .await?;
    let after = apiserver_metrics(client).await?;
    let start = Start {
        tasks: n,
        ready_s,
        all_pending_s: at.duration_since(t0).as_secs_f64(),
        api: api_delta(&before, &after, &["recurringtasks", "reminders"]),
    };
    close_task_watch(client, watch).await?;

    let window = Duration::from_secs(a.idle);
    say(format!("idle window of {}s", a.idle));
    let before = apiserver_metrics(client).await?;
    let cpu0 = proc_stat(op.pid)?;
    // The window itself is what is measured: nothing to wait for.
    tokio::time::sleep(window).await;
    let cpu1 = proc_stat(op.pid)?;
    let after = apiserver_metrics(client).await?;
    let idle = Idle {
        window_s: window.as_secs_f64(),
        api: api_delta(&before, &after, &["recurringtasks", "reminders"]),
        cpu_s: cpu1.cpu_s - cpu0.cpu_s,
        rss_mib: cpu1.rss_mib,
    };
    op.stop().await;
    Ok((start, idle))
}

async fn limit(client: &Client, ns: &str, n: usize) -> Res<Limit> {
    let api = Api::<RecurringTask>::namespaced(client.clone(), ns);
    let nominal = next_minute(Utc::now()) + chrono::Duration::days(1);
    let at = nominal.to_rfc3339_opts(SecondsFormat::Secs, true);
    let before = apiserver_metrics(client).await?;
    let started = Instant::now();
    let results: Vec<Result<RecurringTask, kube::Error>> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let at = at.clone();
            async move {
                let patch = json!({"status": {"nextOccurrence": {
                    "nominal": at, "due": at,
                    "idempotencyKey": format!("rt-limit-{i}-{at}"), "attempts": 0
                }}});
                api.patch_status(
                    &task_name(i),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let drain = started.elapsed().as_secs_f64();
    let after = apiserver_metrics(client).await?;
    let errors = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        say(format!("limit: {errors} patches failed; the first: {e}"));
    }
    Ok(Limit {
        patches: n,
        concurrency: CONCURRENCY,
        drain_s: drain,
        per_second: per(n as f64, drain),
        errors,
        api: api_delta(&before, &after, &["recurringtasks", "reminders"]),
    })
}

/// One request the recording backend received (the fields the benchmark reads).
#[derive(Deserialize)]
struct Record {
    path: String,
    accepted: bool,
    received_at: String,
    due_at: Option<String>,
    lag_ms: Option<i64>,
}

async fn recur_burst(a: &RecurArgs, client: &Client, http: &reqwest::Client) -> Res<Burst> {
    let n = a.common.tasks;
    let ns = "bench-burst";
    fresh_namespace(client, ns).await?;
    create_tasks(client, ns, n, "* * * * *").await?;
    // The operator writes every task's first occurrence (the next minute) as it starts: start
    // it early in a minute so that all of them are pending for the same one.
    if Utc::now().second() > 20 {
        until_next_minute().await;
    }
    let api = Api::<RecurringTask>::namespaced(client.clone(), ns);
    let mut watch = Watch::start(
        api,
        |t: &RecurringTask, _| pending_due(t),
        move |seen: &HashMap<String, Option<DateTime<Utc>>>| {
            if seen.len() < n {
                return None;
            }
            let first = (*seen.values().next()?)?;
            let same = seen.values().all(|d| *d == Some(first));
            let ahead = (first - Utc::now()).to_std().unwrap_or_default();
            (same && ahead >= MARGIN).then_some(first)
        },
    )
    .await?;
    let mut op = spawn_operator(a, ns, "operator-burst")?;
    op.wait_ready(http).await?;
    // Normally the first minute; if the start spilled over a minute boundary, a later one.
    let timeout = Duration::from_secs(300) + Duration::from_millis(100) * n as u32;
    let (_, due) = watch
        .result(timeout, "every task to be pending for the same minute")
        .await?;
    close_task_watch(client, watch).await?;
    say(format!(
        "all {n} tasks pending for {}",
        due.format("%H:%M:%S")
    ));

    let clear = format!("{}/_dev/records", a.backend_url);
    http.delete(&clear).send().await?.error_for_status()?;
    let before = apiserver_metrics(client).await?;
    let stat0 = proc_stat(op.pid)?;
    let delivered0 = op.delivered(http).await?;
    let perf = match &a.perf_out {
        Some(path) => Some(Perf::start(path)?),
        None => None,
    };
    if Utc::now() >= due {
        return Err(msg(
            "the snapshot before the burst was taken after the burst began; try again",
        ));
    }
    // Completion: recur counts an occurrence as delivered after its status write.
    let deadline = Instant::now()
        + (due - Utc::now()).to_std().unwrap_or_default()
        + Duration::from_secs(180)
        + Duration::from_millis(100) * n as u32;
    let records = loop {
        let delivered = op.delivered(http).await? - delivered0;
        if delivered >= n as f64 {
            let records: Vec<Record> = http.get(&clear).send().await?.json().await?;
            let of_burst: Vec<Record> = records
                .into_iter()
                .filter(|r| {
                    r.accepted
                        && r.path == "/api/tasks"
                        && r.due_at
                            .as_deref()
                            .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
                            .is_some_and(|d| d == due)
                })
                .collect();
            if of_burst.len() >= n {
                break of_burst;
            }
        }
        if Instant::now() >= deadline {
            return Err(msg(format!(
                "the burst did not finish: {delivered} occurrences delivered; see {}",
                op.log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let stat1 = proc_stat(op.pid)?;
    let delivered = op.delivered(http).await? - delivered0;
    let after = apiserver_metrics(client).await?;
    if let Some(perf) = perf {
        perf.stop().await?;
    }
    op.stop().await;

    let lags: Vec<i64> = records.iter().filter_map(|r| r.lag_ms).collect();
    let last = records
        .iter()
        .filter_map(|r| DateTime::parse_from_rfc3339(&r.received_at).ok())
        .map(|t| t.with_timezone(&Utc))
        .max()
        .unwrap_or(due);
    let drain_s = (last - due).num_milliseconds() as f64 / 1000.0;
    let api = api_delta(&before, &after, &["recurringtasks", "reminders"]);
    let cpu_s = stat1.cpu_s - stat0.cpu_s;
    let mut notes = vec![];
    if delivered > n as f64 {
        notes.push(format!(
            "{} occurrences of the following minute were delivered inside the window too",
            delivered - n as f64
        ));
    }
    let burst = Burst {
        system: format!("recur (--workers {})", a.workers),
        tasks: n,
        due: Some(due),
        occurrences: records.len(),
        lag: lag_stats(&lags),
        lags_ms: lags,
        drain_s,
        per_second: per(records.len() as f64, drain_s),
        occurrences_in_window: delivered,
        api_per_occurrence_own: per(api.own, delivered),
        api_per_occurrence_all: per(api.all, delivered),
        api,
        peak_rss_mib: stat1.hwm_mib,
        cpu_s,
        cpu_s_per_1000: per(cpu_s * 1000.0, delivered),
        notes,
    };
    say(format!(
        "recur burst: lag p50 {} ms, p99 {} ms, max {} ms; drained in {:.2}s ({:.0}/s); {:.2} API requests per occurrence on recur resources ({:.2} all); peak RSS {:.0} MiB; {:.2} CPU s per 1000",
        burst.lag.p50_ms,
        burst.lag.p99_ms,
        burst.lag.max_ms,
        burst.drain_s,
        burst.per_second,
        burst.api_per_occurrence_own,
        burst.api_per_occurrence_all,
        burst.peak_rss_mib,
        burst.cpu_s_per_1000
    ));
    delete_namespace(client, ns).await?;
    Ok(burst)
}

// --- CronJob ------------------------------------------------------------------------------------

fn cronjob_object(i: usize) -> Res<CronJob> {
    // Suspended Jobs: no kubelet runs pods here, and the job controller then makes none, so
    // only the CronJob controller's work is measured. Forbid: the (never finishing) Job of the
    // burst minute keeps later minutes from adding more.
    Ok(serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": format!("bench-{i:05}")},
        "spec": {
            "schedule": "* * * * *",
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {"spec": {
                "suspend": true,
                "template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "task", "image": "registry.invalid/never-pulled:1"}]
                }}
            }}
        }
    }))?)
}

/// What the benchmark keeps of each Job: when it was first seen, its creation and its schedule.
#[derive(Clone, Copy)]
struct SeenJob {
    observed: DateTime<Utc>,
    created: Option<DateTime<Utc>>,
    scheduled: Option<DateTime<Utc>>,
}

fn seen_job(job: &Job, before: Option<&SeenJob>) -> SeenJob {
    let scheduled = job
        .annotations()
        .get(SCHEDULED_ANNOTATION)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc));
    SeenJob {
        observed: before.map_or_else(Utc::now, |b| b.observed),
        created: job.creation_timestamp().map(|t| {
            DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
                .unwrap_or_default()
        }),
        scheduled,
    }
}

async fn run_cronjob(a: CronArgs) -> Res<()> {
    let n = a.common.tasks;
    let client = kube_client(&a.common.kubeconfig).await?;
    let ns = format!("bench-cron-{}", a.label);
    fresh_namespace(&client, &ns).await?;
    // The ServiceAccount controller makes `default` in a new namespace: kcm is working.
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &ns);
    wait_until(
        Duration::from_secs(120),
        "kube-controller-manager to create the default ServiceAccount",
        || {
            let sa = sa.clone();
            async move { matches!(sa.get_opt("default").await, Ok(Some(_))) }
        },
    )
    .await?;
    let jobs = Api::<Job>::namespaced(client.clone(), &ns);
    let mut watch = Watch::start(jobs, seen_job, move |seen: &HashMap<String, SeenJob>| {
        (seen.len() >= n).then(|| seen.values().copied().collect::<Vec<_>>())
    })
    .await?;
    let cronjobs = (0..n).map(cronjob_object).collect::<Res<Vec<_>>>()?;
    // Every CronJob must exist before the minute it is measured for: create them all in the
    // first seconds of a minute.
    if Utc::now().second() >= 2 {
        until_next_minute().await;
    }
    let due = next_minute(Utc::now());
    let api = Api::<CronJob>::namespaced(client.clone(), &ns);
    let took = create_all(&api, cronjobs).await?;
    say(format!(
        "created {n} CronJobs in {ns} in {:.1}s, all due at {}",
        took.as_secs_f64(),
        due.format("%H:%M:%S")
    ));
    if Utc::now() + MARGIN > due {
        cleanup_cronjobs(&client, &ns).await?;
        return Err(msg(format!(
            "creating {n} CronJobs took {:.0}s: too late for the minute {due}; use fewer --tasks",
            took.as_secs_f64()
        )));
    }
    let before = apiserver_metrics(&client).await?;
    let stat0 = proc_stat(a.kcm_pid)?;
    let timeout = (due - Utc::now()).to_std().unwrap_or_default()
        + Duration::from_secs(180)
        + Duration::from_millis(300) * n as u32;
    let waited = watch
        .result(timeout, &format!("{n} Jobs from the CronJob controller"))
        .await;
    let stat1 = proc_stat(a.kcm_pid)?;
    let after = apiserver_metrics(&client).await?;
    // Closed after the snapshot: this watch is not counted in the window.
    watch.close().await;
    cleanup_cronjobs(&client, &ns).await?;
    let (_, jobs) = waited?;

    let ms =
        |from: DateTime<Utc>, to: Option<DateTime<Utc>>| to.map(|t| (t - from).num_milliseconds());
    let lags: Vec<i64> = jobs
        .iter()
        .filter_map(|j| j.scheduled.and_then(|s| ms(s, j.created)))
        .collect();
    let observed_lags: Vec<i64> = jobs
        .iter()
        .filter_map(|j| j.scheduled.and_then(|s| ms(s, Some(j.observed))))
        .collect();
    let skipped = jobs.iter().filter(|j| j.scheduled != Some(due)).count();
    let last_created = jobs.iter().filter_map(|j| j.created).max().unwrap_or(due);
    let last_observed = jobs.iter().map(|j| j.observed).max().unwrap_or(due);
    let drain_s = (last_created - due).num_milliseconds() as f64 / 1000.0;
    let observed_drain_s = (last_observed - due).num_milliseconds() as f64 / 1000.0;
    let api = api_delta(&before, &after, &["cronjobs", "jobs"]);
    let cpu_s = stat1.cpu_s - stat0.cpu_s;
    let occurrences = jobs.len() as f64;
    let mut notes = vec![
        "lag and drain from Job metadata.creationTimestamp (whole seconds, rounded down) against the annotation batch.kubernetes.io/cronjob-scheduled-timestamp".to_owned(),
        "RSS and CPU are the whole kube-controller-manager process (the job controller handles the new Jobs too)".to_owned(),
    ];
    if skipped > 0 {
        notes.push(format!(
            "{skipped} CronJobs got their Job for a later minute: the controller skipped the burst minute for them"
        ));
    }
    let burst = Burst {
        system: format!(
            "CronJob controller, kube-controller-manager {}",
            a.kcm_flags
        ),
        tasks: n,
        due: Some(due),
        occurrences: jobs.len(),
        lag: lag_stats(&lags),
        lags_ms: lags,
        drain_s,
        per_second: per(occurrences, drain_s),
        occurrences_in_window: occurrences,
        api_per_occurrence_own: per(api.own, occurrences),
        api_per_occurrence_all: per(api.all, occurrences),
        api,
        peak_rss_mib: stat1.hwm_mib,
        cpu_s,
        cpu_s_per_1000: per(cpu_s * 1000.0, occurrences),
        notes,
    };
    say(format!(
        "CronJob burst ({}): lag p50 {} ms, p99 {} ms, max {} ms; drained in {:.1}s ({:.1}/s); {skipped} skipped; {:.2} API requests per occurrence on cronjobs/jobs ({:.2} all); kcm peak RSS {:.0} MiB; {:.2} CPU s per 1000",
        a.label,
        burst.lag.p50_ms,
        burst.lag.p99_ms,
        burst.lag.max_ms,
        burst.drain_s,
        burst.per_second,
        burst.api_per_occurrence_own,
        burst.api_per_occurrence_all,
        burst.peak_rss_mib,
        burst.cpu_s_per_1000
    ));
    let result = CronResult {
        label: a.label.clone(),
        kcm_flags: a.kcm_flags.clone(),
        burst,
        skipped,
        observed_lag: lag_stats(&observed_lags),
        observed_lags_ms: observed_lags,
        observed_drain_s,
    };
    write_json(
        &a.common.out_dir,
        &format!("cronjob-{}.json", a.label),
        &result,
    )?;
    delete_namespace(&client, &ns).await?;
    Ok(())
}

/// Deletes the CronJobs at once (they would go on creating Jobs every minute); the namespace
/// takes the Jobs with it.
async fn cleanup_cronjobs(client: &Client, ns: &str) -> Res<()> {
    let api = Api::<CronJob>::namespaced(client.clone(), ns);
    api.delete_collection(&DeleteParams::background(), &ListParams::default())
        .await?;
    Ok(())
}

// --- report -------------------------------------------------------------------------------------

fn read_json<T: DeserializeOwned>(path: &Path) -> Res<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| msg(format!("reading {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| msg(format!("{}: {e}", path.display())))
}

fn fmt_ms(ms: i64) -> String {
    if ms.abs() < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.2} s", ms as f64 / 1000.0)
    }
}

fn fmt_s(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.2} s")
    } else {
        format!("{s:.1} s")
    }
}

/// "VERB what: n" for the requests on `own` resources, then the busiest others.
fn breakdown(api: &ApiDelta) -> String {
    let own: Vec<String> = api
        .by_request
        .iter()
        .filter(|(k, _)| is_own(k, &api.own_resources))
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let mut others: Vec<(&String, &f64)> = api
        .by_request
        .iter()
        .filter(|(k, _)| !is_own(k, &api.own_resources))
        .collect();
    others.sort_by(|a, b| b.1.total_cmp(a.1));
    let others: Vec<String> = others
        .iter()
        .take(4)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let own = if own.is_empty() {
        "none".to_owned()
    } else {
        own.join(", ")
    };
    if others.is_empty() {
        format!("{own} (no others)")
    } else {
        format!("{own} (others, busiest first: {})", others.join(", "))
    }
}

/// Writes `lag` (milliseconds) as an empirical CDF: seconds (at least 1 ms, for a log axis) and
/// the fraction of occurrences at or below it.
fn write_cdf(path: &Path, lags_ms: &[i64]) -> Res<()> {
    let mut sorted = lags_ms.to_vec();
    sorted.sort_unstable();
    let n = sorted.len() as f64;
    let mut out = String::from("# lag_seconds fraction\n");
    for (i, ms) in sorted.iter().enumerate() {
        let _ = writeln!(
            out,
            "{:.3} {:.5}",
            (*ms).max(1) as f64 / 1000.0,
            (i + 1) as f64 / n
        );
    }
    std::fs::write(path, out).map_err(|e| msg(format!("writing {}: {e}", path.display())))
}

fn gnuplot_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The issue's targets, each with its figure from this run and whether it was met.
fn targets(md: &mut String, recur: &RecurResult, crons: &[CronResult]) {
    let b = &recur.burst;
    let met = |ok: bool| if ok { "met" } else { "**missed**" };
    let _ = writeln!(md, "\n## Against the targets\n");
    let _ = writeln!(md, "| target | this run | |");
    let _ = writeln!(md, "|---|---|---|");
    let _ = writeln!(
        md,
        "| one status write per occurrence | {:.2} requests on recur resources per occurrence | {} |",
        b.api_per_occurrence_own,
        met(b.api_per_occurrence_own <= 1.005)
    );
    let ratio = per(b.drain_s, recur.limit.drain_s);
    let _ = writeln!(
        md,
        "| drain within 1.5x of the minimal client's | {} against {}: {ratio:.2}x | {} |",
        fmt_s(b.drain_s),
        fmt_s(recur.limit.drain_s),
        met(ratio <= 1.5)
    );
    // The CronJob run with the raised client QPS is the last one (labels sort after default-qps).
    match crons.iter().rfind(|c| c.label != "default-qps") {
        Some(c) => {
            let x = per(b.per_second, c.burst.per_second);
            let _ = writeln!(
                md,
                "| at least 5x the CronJob controller's on-time throughput with raised QPS (occurrences, or Jobs, per second of drain) | {:.0}/s against {:.0}/s ({}; {} of its {} Jobs were for a later minute): {x:.2}x | {} |",
                b.per_second,
                c.burst.per_second,
                c.kcm_flags,
                c.skipped,
                c.burst.occurrences,
                met(x >= 5.0)
            );
        }
        None => {
            let _ = writeln!(
                md,
                "| at least 5x the CronJob controller's throughput with raised QPS | no raised-QPS CronJob run in this report | |"
            );
        }
    }
    let rss = b.peak_rss_mib.max(recur.idle.rss_mib);
    let _ = writeln!(
        md,
        "| operator RSS under 128 MiB | peak {:.0} MiB in the burst, {:.0} MiB idle with {} tasks | {} |",
        b.peak_rss_mib,
        recur.idle.rss_mib,
        recur.start.tasks,
        met(rss < 128.0)
    );
    let idle = &recur.idle.api;
    let watches = requests_on_own(idle, |verb| verb == "WATCH");
    let others = requests_on_own(idle, |verb| verb != "WATCH");
    let _ = writeln!(
        md,
        "| no API request while idle beyond the watches | {others} requests on recur resources in {:.0} s besides {watches} watches ending (kube-runtime restarts a watch every 290 s); recur ran without `--leader-elect` (with it: one Lease renewal per 5 s) | {} |",
        recur.idle.window_s,
        met(others < 0.5)
    );
}

/// Requests on the run's own resources whose verb passes `verb`.
fn requests_on_own(api: &ApiDelta, verb: impl Fn(&str) -> bool) -> f64 {
    api.by_request
        .iter()
        .filter(|(request, _)| {
            verb(request.split(' ').next().unwrap_or_default())
                && is_own(request, &api.own_resources)
        })
        .fold(0.0, |a, (_, n)| a + n)
}

fn report(a: ReportArgs) -> Res<()> {
    let dir = &a.out_dir;
    let recur: RecurResult = read_json(&dir.join("recur.json"))?;
    let mut crons: Vec<CronResult> = vec![];
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| msg(format!("reading {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("cronjob-") && n.ends_with(".json"))
        })
        .collect();
    names.sort();
    for path in &names {
        crons.push(read_json(path)?);
    }
    let env = &recur.environment;
    let n = recur.burst.tasks;
    let limit = recur.limit.drain_s;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Scale benchmark: {n} occurrences due in the same minute\n"
    );
    let _ = writeln!(
        md,
        "Made by `{}` on {}: {} cores ({}), {:.0} GiB of memory; Kubernetes {} (etcd, kube-apiserver and kube-controller-manager of `tests/cluster/up.sh`, on loopback); Dapr sidecars: {}. Raw figures: `target/bench/*.json`.\n",
        a.command, env.date, env.cores, env.cpu, env.memory_gib, env.kubernetes, env.sidecar
    );
    let _ = writeln!(md, "## Burst\n");
    let _ = writeln!(
        md,
        "{n} RecurringTasks with `schedule: {{cron: \"* * * * *\"}}` delivered by `recur run --workers {}` through its Dapr sidecar to the recording backend (lag: arrival at the backend minus the due minute), against {n} CronJobs with the same schedule (lag: the Job's creation minus its scheduled time).\n",
        recur.workers
    );
    let _ = writeln!(
        md,
        "| system | occurrences | lag p50 | lag p99 | lag max | drain | occurrences/s | API requests/occurrence (own resources) | API requests/occurrence (all) | peak RSS | CPU s per 1,000 | drain vs the limit |"
    );
    let _ = writeln!(
        md,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut bursts = vec![&recur.burst];
    bursts.extend(crons.iter().map(|c| &c.burst));
    for b in &bursts {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.2} | {:.2} | {:.0} MiB | {:.2} | {:.1}x |",
            b.system,
            b.occurrences,
            fmt_ms(b.lag.p50_ms),
            fmt_ms(b.lag.p99_ms),
            fmt_ms(b.lag.max_ms),
            fmt_s(b.drain_s),
            b.per_second,
            b.api_per_occurrence_own,
            b.api_per_occurrence_all,
            b.peak_rss_mib,
            b.cpu_s_per_1000,
            per(b.drain_s, limit),
        );
    }
    let _ = writeln!(
        md,
        "\n- *drain*: from the due minute to the last arrival (recur) or the last Job's creation (CronJob). *The limit*: {} bare status patches at concurrency {} took {}; *drain vs the limit* is a drain divided by that.",
        recur.limit.patches,
        recur.limit.concurrency,
        fmt_s(limit)
    );
    let _ = writeln!(
        md,
        "- *API requests*: the delta of kube-apiserver's `apiserver_request_total` (all verbs, all codes) over the burst, divided by the occurrences finished in that window. *Own resources*: requests whose `resource` label is recurringtasks or reminders (recur), cronjobs or jobs (CronJob). *All*: every request the apiserver finished, from any client (kube-controller-manager's other controllers, Events, the benchmark's own GET /metrics); watches count when they end, so long-running watches are in neither."
    );
    let _ = writeln!(
        md,
        "- *RSS* is VmHWM (the process's peak) and *CPU* utime+stime over the window, from /proc, of `recur run` alone (not its sidecar) and of the whole kube-controller-manager."
    );
    for b in &bursts {
        let _ = writeln!(md, "- {}: requests {}.", b.system, breakdown(&b.api));
        for note in &b.notes {
            let _ = writeln!(md, "  {note}.");
        }
    }
    for c in &crons {
        let _ = writeln!(
            md,
            "- {}: seen by the benchmark's watch (millisecond resolution): lag p50 {}, p99 {}, max {}; the last Job seen {} after the minute. {} of {} CronJobs skipped the burst minute.",
            c.burst.system,
            fmt_ms(c.observed_lag.p50_ms),
            fmt_ms(c.observed_lag.p99_ms),
            fmt_ms(c.observed_lag.max_ms),
            fmt_s(c.observed_drain_s),
            c.skipped,
            c.burst.tasks
        );
    }
    if crons.is_empty() {
        let _ = writeln!(md, "- The CronJob runs are missing from this report.");
    }

    targets(&mut md, &recur, &crons);

    let l = &recur.limit;
    let _ = writeln!(md, "\n## The limit\n");
    let _ = writeln!(
        md,
        "A minimal kube-rs client sends one JSON merge patch of `status.nextOccurrence` per RecurringTask, {} in flight, as fast as the apiserver accepts them (no operator running).\n",
        l.concurrency
    );
    let _ = writeln!(
        md,
        "| patches | drain | patches/s | errors | API requests |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---|");
    let _ = writeln!(
        md,
        "| {} | {} | {:.0} | {} | {} |",
        l.patches,
        fmt_s(l.drain_s),
        l.per_second,
        l.errors,
        breakdown(&l.api)
    );

    let (st, idle) = (&recur.start, &recur.idle);
    let _ = writeln!(md, "\n## Start and idle\n");
    let _ = writeln!(
        md,
        "{} RecurringTasks on an hourly schedule half an hour away (nothing fires); `recur run` started with all of them already there.\n",
        st.tasks
    );
    let _ = writeln!(
        md,
        "| ready (/health/ready) | every task shows status.nextOccurrence | API requests on recur resources during start | idle window | API requests on recur resources in the window | all API requests in the window | CPU in the window | RSS after the window |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        md,
        "| {} | {} | {} | {:.0} s | {} | {} | {:.3} s | {:.0} MiB |",
        fmt_s(st.ready_s),
        fmt_s(st.all_pending_s),
        st.api.own,
        idle.window_s,
        idle.api.own,
        idle.api.all,
        idle.cpu_s,
        idle.rss_mib
    );
    let _ = writeln!(md, "\n- Start: requests {}.", breakdown(&st.api));
    let _ = writeln!(md, "- Idle: requests {}.", breakdown(&idle.api));

    // The plot: empirical CDFs of the lag.
    let mut plots = vec![];
    write_cdf(&dir.join("lag-recur.dat"), &recur.burst.lags_ms)?;
    plots.push((
        "lag-recur.dat".to_owned(),
        "recur: arrival at the backend".to_owned(),
    ));
    for c in &crons {
        let file = format!("lag-cronjob-{}.dat", c.label);
        write_cdf(&dir.join(&file), &c.observed_lags_ms)?;
        // "at its default client QPS (...)" / "with --kube-api-qps=..." read shorter after "kcm".
        let how = c
            .kcm_flags
            .trim_start_matches("at its ")
            .trim_start_matches("with ");
        plots.push((file, format!("CronJob controller, kcm {how}: Job seen")));
    }
    let mut plt = String::new();
    let _ = writeln!(
        plt,
        "# Written by recur-bench report; run in its directory."
    );
    let _ = writeln!(plt, "set terminal pngcairo size 1000,660 font \",11\"");
    let _ = writeln!(plt, "set output 'lag.png'");
    let _ = writeln!(
        plt,
        "set title {}",
        gnuplot_string(&format!(
            "Firing lag of {n} occurrences due in the same minute ({})",
            env.date
        ))
    );
    let _ = writeln!(
        plt,
        "set xlabel \"lag after the scheduled time (seconds, log scale; 0 drawn at 1 ms)\""
    );
    let _ = writeln!(plt, "set ylabel \"fraction of occurrences\"");
    let _ = writeln!(
        plt,
        "set logscale x\nset xrange [0.001:*]\nset yrange [0:1.02]"
    );
    let _ = writeln!(plt, "set grid\nset key below Left reverse");
    let series: Vec<String> = plots
        .iter()
        .map(|(file, title)| {
            format!(
                "'{file}' using 1:2 with steps linewidth 2 title {}",
                gnuplot_string(title)
            )
        })
        .collect();
    let _ = writeln!(plt, "plot {}", series.join(", \\\n     "));
    std::fs::write(dir.join("lag.plt"), plt).map_err(|e| msg(format!("writing lag.plt: {e}")))?;
    let _ = writeln!(
        md,
        "\n![Firing lag: empirical CDF](lag.png)\n\nThe plot: for each system, the fraction of the burst's occurrences that had arrived (recur) or whose Job the benchmark's watch had seen (CronJob) by a given lag."
    );
    let path = dir.join("results.md");
    std::fs::write(&path, &md).map_err(|e| msg(format!("writing {}: {e}", path.display())))?;
    print!("{md}");
    say(format!("wrote {}, lag.plt and lag-*.dat", path.display()));
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="recur.dev",resource="recurringtasks",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 10
apiserver_request_total{code="409",component="apiserver",dry_run="",group="recur.dev",resource="recurringtasks",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 1
apiserver_request_total{code="200",component="",dry_run="",group="",resource="",scope="",subresource="/metrics",verb="GET",version=""} 3
apiserver_longrunning_requests{component="apiserver",group="recur.dev",resource="recurringtasks",scope="namespace",subresource="",verb="WATCH",version="v1alpha1"} 2
"#;

    #[test]
    fn labels_with_escapes_and_values_parse() {
        let text = "m{a=\"x\\\"y\",b=\"\"} 4.5\nn 2\n";
        let all: Vec<_> = samples(text).collect();
        assert_eq!(all.len(), 2);
        assert_eq!(label(&all[0].1, "a"), "x\"y");
        assert_eq!(all[0].2, 4.5);
        assert_eq!((all[1].0, all[1].2), ("n", 2.0));
    }

    #[test]
    fn own_requests_split_watches_from_the_rest() {
        let api = ApiDelta {
            own_resources: vec!["recurringtasks".into(), "reminders".into()],
            by_request: [
                ("WATCH recurringtasks", 2.0),
                ("WATCH reminders", 1.0),
                ("PATCH recurringtasks/status", 4.0),
                ("WATCH recurringtasksx", 9.0),
                ("PUT leases", 29.0),
                ("GET (non-resource)", 78.0),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
            ..ApiDelta::default()
        };
        assert_eq!(requests_on_own(&api, |v| v == "WATCH"), 3.0);
        assert_eq!(requests_on_own(&api, |v| v != "WATCH"), 4.0);
    }

    #[test]
    fn request_totals_sum_over_codes() {
        let totals = request_totals(BEFORE);
        assert_eq!(totals.get("PATCH recurringtasks/status"), Some(&11.0));
        assert_eq!(totals.get("GET (non-resource)"), Some(&3.0));
        assert_eq!(
            sample_sum(
                BEFORE,
                "apiserver_longrunning_requests",
                &[("verb", "WATCH"), ("resource", "recurringtasks")]
            ),
            2.0
        );
    }

    #[test]
    fn deltas_split_own_resources_from_the_rest() {
        let after = BEFORE
            .replace("v1alpha1\"} 10", "v1alpha1\"} 1010")
            .replace("version=\"\"} 3", "version=\"\"} 4");
        let d = api_delta(BEFORE, &after, &["recurringtasks", "reminders"]);
        assert_eq!(d.own, 1000.0);
        assert_eq!(d.all, 1001.0);
        assert!(is_own("PATCH recurringtasks/status", &["recurringtasks"]));
        assert!(!is_own("GET (non-resource)", &["recurringtasks"]));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let lags: Vec<i64> = (1..=100).rev().collect();
        let s = lag_stats(&lags);
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms, s.count), (50, 99, 100, 100));
        assert_eq!(lag_stats(&[]).max_ms, 0);
        assert_eq!(lag_stats(&[7]).p99_ms, 7);
    }

    #[test]
    fn minute_boundaries() {
        let t = DateTime::parse_from_rfc3339("2026-01-01T10:00:59.9Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(next_minute(t).to_rfc3339(), "2026-01-01T10:01:00+00:00");
    }
}
