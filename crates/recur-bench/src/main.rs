//! `recur-bench`: the scale benchmark behind `make bench` (driven by `scripts/bench.sh`, which
//! starts the control plane, the recording backend and the Dapr sidecars first).
//!
//! - `recur`: start and idle of `recur run`, the limit (bare status patches), and a burst of N
//!   RecurringTasks due in the same minute; writes `recur.json`.
//! - `cronjob`: the same burst as N CronJobs handled by kube-controller-manager; writes
//!   `cronjob-<label>.json`.
//! - `fairness`: N RecurringTasks due in one namespace and a few in another in the same minute,
//!   with one shared work queue and with fair queueing; writes `fairness.json` and
//!   `fairness.md`.
//! - `patchcost`: what each form of the guarded status write (JSON patch with `test`, merge patch
//!   with a resourceVersion, server-side apply, ...) costs kube-apiserver: CPU per write from
//!   /proc, latency, bytes, with and without extra field managers and watches, optionally with
//!   pprof profiles (`pprof`); writes `patchcost.json` and `patchcost.md`.
//! - `listcost`: what a list of N RecurringTasks costs kube-apiserver, by form (paged, from the
//!   watch cache, whole, streaming, metadata only) and by status size: the list that bounds an
//!   operator's time to ready after a restart; writes `listcost.json` and `listcost.md`.
//! - `spread`: N RecurringTasks on `every: 1h` spread uniformly over the hour (about 28
//!   occurrences per second for 100,000): the cold start against the minimal client writing the
//!   same N patches, a restart with every status correct, idle, and the steady-state firing lag;
//!   writes `spread.json` and `spread.md` with the targets (`spread-report` writes `spread.md`
//!   again from `spread.json`).
//! - `shards`: N hourly tasks served by one operator, then by S replicas, each with a label
//!   selector and a Lease of its own: cold start, restart, and one replica's restart while the
//!   others run; writes
//!   `shards.json` and `shards.md`.
//! - `cache-memory`: what one RecurringTask costs in the watch cache, whole and without parts of
//!   its status (no cluster).
//! - `report`: reads those files and writes `results.md`, the lag CDFs (`lag-*.dat`) and a
//!   gnuplot script (`lag.plt`) that draws `lag.png`.
//!
//! Figures are printed, never asserted: this is not a test. Every wait is a condition with a
//! deadline (or the wall clock reaching a minute boundary). Only loopback clusters are accepted.
//!
//! The runs are `recur_scenario`, `fairness_scenario`, `spread_scenario` and `cronjob_scenario`; they drive the
//! cluster (`cluster`, `watch`), the processes (`process`) and measure through `/proc`
//! (`procfs`) and `/metrics` (`prometheus`, `apiserver`). `results` and `stats` are what they write; `report` and `plot`
//! turn that into `results.md` and the lag plot, `spread_report` into `spread.md`.
mod apiserver;
mod args;
mod cache_memory;
mod cluster;
mod cronjob_scenario;
mod error;
mod fairness_scenario;
mod listcost;
mod patchcost;
mod plot;
mod pprof;
mod process;
mod procfs;
mod prometheus;
mod recur_scenario;
mod report;
mod results;
mod shards_report;
mod shards_scenario;
mod spread_report;
mod spread_scenario;
mod stats;
mod watch;
mod window_cost;

/// recur's allocator (src/main.rs), so `cache-memory` measures what the operator would hold.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::process::ExitCode;

use chrono::Utc;
use clap::Parser;

use args::{Cli, Command};
use cache_memory::run_cache_memory;
use cronjob_scenario::run_cronjob;
use error::msg;
use fairness_scenario::run_fairness;
use listcost::run_listcost;
use patchcost::run_patchcost;
use recur_scenario::run_recur;
use report::report;
use shards_scenario::run_shards;
use spread_scenario::{run_spread, spread_report};

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
        let run = async {
            match cli.command {
                Command::Recur(a) => run_recur(a).await,
                Command::Cronjob(a) => run_cronjob(a).await,
                Command::Fairness(a) => run_fairness(a).await,
                Command::Spread(a) => run_spread(a).await,
                Command::Shards(a) => run_shards(a).await,
                Command::SpreadReport(a) => spread_report(a),
                Command::Report(a) => report(a),
                Command::Patchcost(a) => run_patchcost(a).await,
                Command::Listcost(a) => run_listcost(a).await,
                Command::CacheMemory(a) => run_cache_memory(a),
            }
        };
        // Stopped by a signal, the run is dropped where it stands: the operators it started
        // go with it (kill_on_drop), instead of running on without their benchmark. The run is
        // polled first: a command that never awaits (cache-memory, the reports) ends in that
        // poll before the handlers exist, and a signal stops it the default way.
        tokio::select! {
            biased;
            result = run => result,
            signal = stopped() => Err(msg(format!("stopped by {signal}"))),
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

/// The first of SIGINT and SIGTERM (never, if neither can be watched).
async fn stopped() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        _ => std::future::pending().await,
    }
}

/// Progress on stderr, timestamped (stdout carries the report).
pub fn say(text: impl AsRef<str>) {
    eprintln!(
        "[recur-bench {}] {}",
        Utc::now().format("%H:%M:%S%.3f"),
        text.as_ref()
    );
}
