//! The `recur` command: `run` the operator, print the `crd`s, preview a `schedule`.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc in every build, the static musl image's too: glibc's malloc took a quarter of
/// recur's CPU in a burst. Against glibc's, at 10,000 occurrences due in one minute: 1.00 CPU s
/// per 1,000 instead of 1.32-1.47, peak RSS 50 MiB instead of 52-54 (mimalloc: 1.15 s,
/// 74 MiB). See docs/scaling.md.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "recur",
    version,
    about = "Recurring tasks and reminders for Kubernetes, delivered through Dapr exactly once"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator.
    Run(Box<recur::operator::RunArgs>),
    /// Print the CustomResourceDefinitions (what crds/ holds), or write one file per CRD.
    Crd {
        /// Write `<name>.yaml` files into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<std::path::PathBuf>,
    },
    /// Preview the upcoming occurrences of a schedule.
    Schedule(Box<recur::cli::schedule::ScheduleArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => recur::operator::main(*args),
        Command::Crd { out_dir } => crd(out_dir),
        Command::Schedule(args) => recur::cli::schedule::run(*args),
    }
}

fn crd(out_dir: Option<std::path::PathBuf>) -> ExitCode {
    let result = match out_dir {
        None => recur::api::crds_yaml()
            .map(|yaml| print!("{yaml}"))
            .map_err(|e| e.to_string()),
        Some(dir) => recur::api::crd_files()
            .map_err(|e| e.to_string())
            .and_then(|files| {
                files.into_iter().try_for_each(|(name, yaml)| {
                    std::fs::write(dir.join(&name), yaml).map_err(|e| format!("{name}: {e}"))
                })
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
