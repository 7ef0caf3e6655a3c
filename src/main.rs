//! The `recur` command: `run` the operator, print the `crd`s, preview a `schedule`.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
