//! `kubectl recur`: the kubectl plugin for operating RecurringTasks (the `kubectl-recur` binary,
//! installed next to `recur`, so kubectl finds it on `PATH`).
//!
//! It talks to the Kubernetes API server only, never to the operator's own endpoints, so it works
//! while the operator is down: it reads tasks, computes occurrences with the operator's own
//! schedule engine (same anchor and jitter seed, so it agrees with `status`), and writes what a
//! user would write by hand: the `recur.dev/run-now` annotation, `spec.suspend`, a `Backfill`.
//!
//! Each command reads (module `cluster`), then renders through a pure function of what it read
//! (unit-tested with fixed inputs); `-o json` prints one JSON document with camelCase keys.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use clap::{Args, Parser, Subcommand};

pub mod backfill;
pub mod cluster;
pub mod explain;
pub mod history;
pub mod next;
pub mod output;
pub mod run;
pub mod subject;
pub mod suspend;

pub use output::{Format, Report};

/// Exit status of an error in the command line itself (clap's too).
const EXIT_USAGE: u8 = 2;
/// Exit status of every other failure.
const EXIT_FAILURE: u8 = 1;

const EXAMPLES: &str = "Examples:
  kubectl recur next standup -n team-a --count 10
  kubectl recur run standup --wait
  kubectl recur backfill standup --from 2026-11-24T00:00:00Z --to 2026-11-25T00:00:00Z
  kubectl recur suspend standup --reason 'backend migration, until 14:00 UTC (alice)'
  kubectl recur resume standup
  kubectl recur history standup -o json
  kubectl recur explain-schedule standup
  kubectl recur explain-schedule -f task.yaml

NAME is a RecurringTask's name (or rt/NAME). The namespace defaults to the kubeconfig context's.
Exit status: 0 done, 1 failed (not found, refused, timed out, the run failed), 2 bad command line.";

/// Operate recur's RecurringTasks: preview, run now, backfill, suspend, resume, history.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl-recur",
    bin_name = "kubectl recur",
    version,
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes, before or after its name.
#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct Global {
    /// The namespace (default: the kubeconfig context's namespace).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// The kubeconfig context (default: the current context).
    #[arg(long, global = true, value_name = "CONTEXT")]
    pub context: Option<String>,
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The next occurrences of a task, in its time zone and in UTC.
    Next(next::NextArgs),
    /// Run a task once now: sets the recur.dev/run-now annotation with a fresh token.
    Run(run::RunArgs),
    /// Deliver a task's occurrences over a past range again (creates a Backfill).
    Backfill(backfill::BackfillArgs),
    /// Stop delivering a task's occurrences (spec.suspend).
    Suspend(suspend::SuspendArgs),
    /// Deliver a suspended task's occurrences again, from the next one on.
    Resume(suspend::ResumeArgs),
    /// The task's finished occurrences, newest first, and its manual runs.
    History(history::HistoryArgs),
    /// The task's schedule in words: kind, zone and DST policy, bounds, jitter, next instants.
    #[command(visible_alias = "explain")]
    ExplainSchedule(explain::ExplainArgs),
}

/// Why a command failed, in words for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig cannot be used (already worded, naming the file or context).
    #[error("{0}")]
    Config(String),
    #[error("recurringtask {name:?} not found in namespace {namespace:?}")]
    TaskNotFound { name: String, namespace: String },
    #[error(
        "the API server does not serve {resource}.recur.dev: are recur's CRDs installed? (kubectl get crd {resource}.recur.dev)"
    )]
    NotInstalled { resource: &'static str },
    #[error(
        "{given:?} is not a RecurringTask: kubectl recur works on recurringtasks (rt); give NAME or rt/NAME"
    )]
    NotATask { given: String },
    /// The API server refused, or could not be reached; `action` says what was being done.
    #[error("{action}: {message}")]
    Api { action: String, message: String },
    /// A flag's value cannot be used (after clap's own checks).
    #[error("{0}")]
    Usage(String),
    /// What was asked cannot happen (a run of a suspended task, a backfill of an empty range).
    #[error("{0}")]
    Refused(String),
    #[error("the schedule of {task} cannot be used: {source}")]
    Schedule {
        task: String,
        #[source]
        source: crate::schedule::ScheduleError,
    },
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("timed out after {} waiting for {what}", seconds(*.after))]
    Timeout { after: Duration, what: String },
    #[error("encoding JSON: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

impl Error {
    /// The process's exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::NotATask { .. } => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }
}

/// The `kubectl-recur` binary.
pub fn main() -> ExitCode {
    // Bad flags exit 2 with clap's message; --help and --version exit 0.
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&Error::Runtime(e)),
    };
    match runtime.block_on(execute(&cli)) {
        Ok(report) => {
            print!("{}", report.stdout);
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            match &report.failure {
                None => ExitCode::SUCCESS,
                Some(why) => {
                    eprintln!("error: {why}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &Error) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(e.exit_code())
}

/// Runs one parsed command line.
pub async fn execute(cli: &Cli) -> Result<Report, Error> {
    let now = Utc::now();
    let g = &cli.global;
    match &cli.command {
        Command::Next(a) => next::execute(g, a, now).await,
        Command::Run(a) => run::execute(g, a, now).await,
        Command::Backfill(a) => backfill::execute(g, a, now).await,
        Command::Suspend(a) => suspend::execute_suspend(g, a).await,
        Command::Resume(a) => suspend::execute_resume(g, a).await,
        Command::History(a) => history::execute(g, a).await,
        Command::ExplainSchedule(a) => explain::execute(g, a, now).await,
    }
}

/// `--timeout`: a duration such as `60s`, `2m` or `PT1M`, above zero and at most a day.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = crate::schedule::parse_duration(s)?;
    if d.is_zero() || d > Duration::from_secs(86_400) {
        return Err(format!("{s:?} must be above 0 and at most 24h"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn parse(line: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kubectl-recur").chain(line.iter().copied()))
    }

    #[test]
    fn global_flags_go_before_or_after_the_command() {
        let a = parse(&["-n", "team-a", "next", "standup", "-o", "json"]).unwrap();
        let b = parse(&["next", "standup", "--namespace=team-a", "--output", "json"]).unwrap();
        assert_eq!(a.global, b.global);
        assert_eq!(a.global.namespace.as_deref(), Some("team-a"));
        assert_eq!(a.global.output, Format::Json);
    }

    #[test]
    fn bad_command_lines_are_refused_with_the_usage_status() {
        for line in [
            &["next"][..],
            &["next", "a", "--count", "0"],
            &["next", "a", "-o", "yaml"],
            &[
                "backfill",
                "a",
                "--from",
                "yesterday",
                "--to",
                "2026-01-01T00:00:00Z",
            ],
            &["backfill", "a", "--from", "2026-01-01T00:00:00Z"],
            &["run", "a", "--timeout", "0s"],
            &["frobnicate"],
        ] {
            let err = parse(line).map(|_| ()).unwrap_err();
            assert_eq!(err.exit_code(), i32::from(EXIT_USAGE), "{line:?}: {err}");
        }
        assert!(
            parse(&["explain", "a"]).is_ok(),
            "alias of explain-schedule"
        );
    }

    #[test]
    fn timeouts_are_positive_and_at_most_a_day() {
        assert_eq!(parse_timeout("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_timeout("PT2M"), Ok(Duration::from_secs(120)));
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("25h").is_err());
        assert!(parse_timeout("soon").is_err());
    }
}
