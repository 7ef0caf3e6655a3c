//! The command line: one subcommand per phase of `scripts/bench.sh`.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "recur-bench",
    about = "Scale benchmark of recur against the CronJob controller (see scripts/bench.sh)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Start, idle, the limit and the burst of `recur run`; writes OUT_DIR/recur.json.
    Recur(RecurArgs),
    /// A burst of N CronJobs; writes OUT_DIR/cronjob-LABEL.json.
    Cronjob(CronArgs),
    /// Fairness between namespaces: N occurrences due in one namespace and a few in another in
    /// the same minute, with and without fair queueing; writes OUT_DIR/fairness.json and
    /// fairness.md.
    Fairness(FairnessArgs),
    /// N RecurringTasks (`every: 1h`) whose occurrences are spread uniformly over the hour
    /// (N/3600 per second; about 28/s for 100,000): the cold start (recur started with all N
    /// present and no status: time until every status.nextOccurrence is written), a restart
    /// with every status correct (writes, time to ready), idle (RSS, API requests), the steady
    /// state (firing lag p50/p99 over --window seconds), then the minimal client writing the
    /// same N statuses (the cold start's, read back and removed first, untimed) with the
    /// operator stopped; writes OUT_DIR/spread.json and spread.md. The tasks are created before
    /// recur starts (setup, not timed).
    Spread(SpreadArgs),
    /// What S replicas, each serving one label selector's share of N hourly tasks, take against one
    /// operator serving all N, on the same tasks: cold start, restart, and one replica's
    /// restart while the others run (time to ready and to done, CPU, RSS, writes); writes
    /// OUT_DIR/shards.json and shards.md.
    Shards(ShardsArgs),
    /// Writes spread.md again from OUT_DIR/spread.json.
    SpreadReport(SpreadReportArgs),
    /// Writes results.md, lag-*.dat and lag.plt from the JSON files in OUT_DIR.
    Report(ReportArgs),
    /// What a RecurringTask costs in recur's watch cache, whole and without parts of its
    /// status (no cluster needed): resident memory per task for N decoded tasks.
    CacheMemory(CacheMemoryArgs),
    /// What each form of the guarded status write costs kube-apiserver (CPU from /proc,
    /// latency, bytes, optionally pprof); writes OUT_DIR/patchcost.json and patchcost.md.
    Patchcost(PatchCostArgs),
    /// What a list of N RecurringTasks costs kube-apiserver, by form (paged, from the watch
    /// cache, whole, streaming, metadata only) and by status size (CPU from /proc, time, bytes,
    /// optionally pprof); writes OUT_DIR/listcost.json and listcost.md.
    Listcost(ListCostArgs),
}

#[derive(Args)]
pub struct CacheMemoryArgs {
    /// Tasks decoded and held.
    #[arg(long, default_value_t = 100_000)]
    pub tasks: usize,
    /// Occurrences each task has delivered (one history record each, up to its limit of 10).
    #[arg(long, default_value_t = 1)]
    pub deliveries: usize,
    /// Give each task the labels and annotations Helm and Argo CD put on the objects they
    /// manage (two labels, three annotations).
    #[arg(long)]
    pub tool_metadata: bool,
    /// Measure only this variant (in this process); by default each in a process of its own.
    #[arg(long, value_enum)]
    pub variant: Option<crate::cache_memory::Variant>,
}

#[derive(Args)]
pub struct PatchCostArgs {
    /// `--tasks` is the number of objects per set (at least 128).
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub control_plane: ControlPlane,
    /// Seconds of writes per phase.
    #[arg(long, default_value_t = 15)]
    pub seconds: u64,
    /// The forms measured, in this order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "json-test,json-test-delta,json-test-pending,merge-full,merge-rv,merge-bare,apply,apply-rv"
    )]
    pub forms: Vec<crate::patchcost::Form>,
    /// Sets of objects by extra field managers (0: recur's only; 6: six tools set a label each).
    #[arg(long, value_delimiter = ',', default_value = "0,6")]
    pub managers: Vec<usize>,
    /// Watches open on the namespace, for `--watch-forms` on the first set (0 is the main table).
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub watchers: Vec<usize>,
    /// The forms measured with watches open.
    #[arg(long, value_delimiter = ',', default_value = "json-test,merge-bare")]
    pub watch_forms: Vec<crate::patchcost::Form>,
    /// Rounds of every phase (the first one profiled when --pprof-dir is set).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Record a CPU profile of kube-apiserver for each phase of the first round here.
    #[arg(long)]
    pub pprof_dir: Option<PathBuf>,
}

/// The control plane's processes whose CPU the cost scenarios read, and how to profile them.
#[derive(Args)]
pub struct ControlPlane {
    /// Pid of kube-apiserver (its CPU is read from /proc).
    #[arg(long)]
    pub apiserver_pid: u32,
    /// Pid of etcd, if its CPU should be read too.
    #[arg(long)]
    pub etcd_pid: Option<u32>,
    /// kubectl, which fetches the apiserver's profiles.
    #[arg(long, default_value = "kubectl")]
    pub kubectl: PathBuf,
}

#[derive(Args)]
pub struct ListCostArgs {
    /// `--tasks` is the number of tasks per set.
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub control_plane: ControlPlane,
    /// The sets: history records in every status of each (0: a task that has delivered nothing
    /// yet, as in the restart of `spread`; 10: recur's default history limit, full).
    #[arg(long, value_delimiter = ',', default_value = "0,10")]
    pub history: Vec<usize>,
    /// The forms measured, in this order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "paged,any,whole,stream,metadata,kube-stream,kube-paged"
    )]
    pub forms: Vec<crate::listcost::Form>,
    /// Rounds over every form and set.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// After the rounds, list each set once more in each form under a CPU profile of
    /// kube-apiserver, written here.
    #[arg(long)]
    pub pprof_dir: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub struct Common {
    /// Kubeconfig of the (loopback) cluster.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench")]
    pub out_dir: PathBuf,
    /// Objects (RecurringTasks or CronJobs) in the burst.
    #[arg(long, default_value_t = 1000)]
    pub tasks: usize,
}

/// How the benchmark starts `recur run`.
#[derive(Args, Clone)]
pub struct OperatorArgs {
    /// The `recur` binary to run (a release build).
    #[arg(long, default_value = "target/release/recur")]
    pub recur_bin: PathBuf,
    /// URL of the recording backend (`recur-dev backend`).
    #[arg(long)]
    pub backend_url: String,
    /// DAPR_HTTP_PORT of the operator's sidecar.
    #[arg(long)]
    pub dapr_http_port: u16,
    /// What the sidecars are (for the report).
    #[arg(long, default_value = "unknown")]
    pub sidecar: String,
    /// `recur run --workers`.
    #[arg(long, default_value_t = 64)]
    pub workers: u16,
    /// Where the operators' logs go.
    #[arg(long, default_value = "target/bench")]
    pub log_dir: PathBuf,
}

#[derive(Args)]
pub struct RecurArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub op: OperatorArgs,
    /// Idle window, in seconds.
    #[arg(long, default_value_t = 60)]
    pub idle: u64,
    /// Record a system-wide CPU profile of the burst (`perf record -a -g -e cpu-clock`) here.
    #[arg(long)]
    pub perf_out: Option<PathBuf>,
    /// Record CPU profiles of kube-apiserver (/debug/pprof) during the limit and the burst here.
    #[arg(long)]
    pub pprof_dir: Option<PathBuf>,
    /// kubectl, which fetches the profiles.
    #[arg(long, default_value = "kubectl")]
    pub kubectl: PathBuf,
}

#[derive(Args)]
pub struct SpreadArgs {
    /// `--tasks` is the number of RecurringTasks spread over the hour.
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub op: OperatorArgs,
    /// The steady-state window, in seconds (10 to 3600): firing lag of the occurrences due in
    /// it. The target is over 10 minutes.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(10..=3600))]
    pub window: u64,
    /// The tasks' interval in seconds (60 to 3600; the tasks are hourly): a shorter one
    /// gives fewer tasks the same occurrences per second, which tells the number of objects and
    /// the rate apart.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(60..=3600))]
    pub period: u64,
    /// The shortest idle window after the restart, in seconds. The first occurrence is set far
    /// enough ahead for the setup, the cold start, the restart and this; the idle window lasts
    /// until shortly before it.
    #[arg(long, default_value_t = 60)]
    pub idle: u64,
    /// Restarts before the measured one, each `recur run --initial-list <form>` in this order
    /// (e.g. `streaming,paged,streaming,paged`), each after a bare client's list of the same
    /// tasks: how the list's form moves the time to ready, on one cluster. None by default.
    #[arg(long, value_delimiter = ',', value_enum)]
    pub compare_lists: Vec<recur::controller::initial_list::InitialList>,
}

#[derive(Args)]
pub struct ShardsArgs {
    /// `--tasks` is the number of RecurringTasks over all shards.
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub op: OperatorArgs,
    /// Replicas, each with a label selector and a Lease of its own (at least 2).
    #[arg(long, default_value_t = 2)]
    pub shards: usize,
}

#[derive(Args)]
pub struct SpreadReportArgs {
    /// Where spread.json is, and where spread.md goes.
    #[arg(long, default_value = "target/bench")]
    pub out_dir: PathBuf,
}

#[derive(Args)]
pub struct FairnessArgs {
    /// `--tasks` is the big namespace's RecurringTasks.
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub op: OperatorArgs,
    /// RecurringTasks of the small namespace, due in the same minute.
    #[arg(long, default_value_t = 10)]
    pub small_tasks: usize,
    /// The queues to measure, in this order: `shared` (`recur run --fair-queue=false`, one
    /// queue for every namespace, as before fair queueing) and `fair`.
    #[arg(long, value_delimiter = ',', default_value = "shared,fair")]
    pub queues: Vec<Queue>,
}

/// Which work queue `recur run` uses.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    /// One queue for every namespace (`--fair-queue=false`).
    Shared,
    /// Namespaces take turns (the default).
    Fair,
}

#[derive(Args)]
pub struct CronArgs {
    #[command(flatten)]
    pub common: Common,
    /// Name of this run (file name and namespace), e.g. default-qps.
    #[arg(long)]
    pub label: String,
    /// Pid of kube-controller-manager (for RSS and CPU).
    #[arg(long)]
    pub kcm_pid: u32,
    /// How kube-controller-manager's client is configured (for the report).
    #[arg(long, default_value = "")]
    pub kcm_flags: String,
    /// Bare status patches per second of this apiserver (recur's limit in the same run), which
    /// sets how far ahead the burst is; without it, 500 patches are probed first.
    #[arg(long)]
    pub writes_per_second: Option<f64>,
}

#[derive(Args)]
pub struct ReportArgs {
    /// Where the JSON results are, and where results.md, lag-*.dat and lag.plt go.
    #[arg(long, default_value = "target/bench")]
    pub out_dir: PathBuf,
    /// The command that produced the results (quoted in the report).
    #[arg(long, default_value = "make bench")]
    pub command: String,
}
