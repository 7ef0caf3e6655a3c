//! `recur-dev`: development servers for the demo, the integration tests and the chaos harness.
//!
//! - `sidecar`: a Dapr-compatible stand-in for daprd's HTTP service invocation API.
//! - `backend`: the seed's backend (`/api/tasks`, `/api/notifications`, reminder-sent), recording
//!   every request and injecting faults on demand.
//! - `subscriber`: a pub/sub subscriber app behind daprd, recording every CloudEvent delivered.
//!
//! All listen on loopback only, log to stderr (`RECUR_DEV_LOG`, default `info`) and exit cleanly
//! on SIGTERM or SIGINT.
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use tokio::sync::watch;

mod backend;
mod net;
mod sidecar;
mod subscriber;

#[derive(Parser)]
#[command(
    name = "recur-dev",
    version,
    about = "Development servers for recur: a Dapr sidecar stand-in, a recording backend and a pub/sub subscriber"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A Dapr-compatible sidecar stand-in (service invocation, health, API token).
    Sidecar(SidecarArgs),
    /// The demo backend: dedupes on Idempotency-Key, records every request, injects faults.
    Backend(BackendArgs),
    /// A pub/sub subscriber app: records every CloudEvent daprd delivers to POST /events.
    Subscriber(SubscriberArgs),
}

#[derive(Args)]
struct SidecarArgs {
    /// Address to listen on (loopback only), e.g. 127.0.0.1:3500.
    #[arg(long)]
    listen: SocketAddr,
    /// An app this sidecar can invoke, NAME=http://127.0.0.1:PORT (repeatable).
    #[arg(long = "app", value_name = "NAME=URL", value_parser = sidecar::parse_app)]
    apps: Vec<(String, String)>,
    /// Require the token in this environment variable as `dapr-api-token` (as daprd does with
    /// DAPR_API_TOKEN); unset or empty means no check.
    #[arg(long, value_name = "VAR")]
    api_token_env: Option<String>,
    /// How long to wait for an app's answer before answering 500 ERR_DIRECT_INVOKE.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    app_timeout: Duration,
    /// The sidecar's own namespace: a plain app id resolves there, where no app lives, as it
    /// would for recur's sidecar on a cluster (unset: plain ids reach the apps).
    #[arg(long)]
    own_namespace: Option<String>,
}

#[derive(Args)]
struct BackendArgs {
    /// Address to listen on (loopback only), e.g. 127.0.0.1:8081.
    #[arg(long)]
    listen: SocketAddr,
    /// Name shown in the logs.
    #[arg(long, default_value = "backend")]
    name: String,
    /// Also append every request as a JSON line to this file.
    #[arg(long, value_name = "FILE.jsonl")]
    record: Option<std::path::PathBuf>,
    /// Seed of the fault dice (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Args)]
struct SubscriberArgs {
    /// Address to listen on (loopback only), e.g. 127.0.0.1:8083.
    #[arg(long)]
    listen: SocketAddr,
    /// Name shown in the logs.
    #[arg(long, default_value = "subscriber")]
    name: String,
    /// Print one line per event on stdout: `event id=... type=... subject=... time=...`.
    #[arg(long)]
    log: bool,
}

/// `250ms`, `5s`, `2m` or a number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 250ms, 5s or 2m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    if d.is_zero() {
        return Err("the duration must be greater than zero".into());
    }
    Ok(d)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("RECUR_DEV_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // stdout is reserved for the backend's "received ..." and the subscriber's "event ..." lines.
    // Colours only on a terminal: the logs usually go to files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        // Named threads: a profile (`scripts/bench.sh --perf`) tells the processes apart.
        .thread_name("recur-dev-wkr")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("recur-dev: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Sidecar(args) => run_sidecar(args).await,
            Command::Backend(args) => run_backend(args).await,
            Command::Subscriber(args) => run_subscriber(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("recur-dev: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    let addr = net::loopback(addr)?;
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// Turns SIGTERM/SIGINT into the shutdown signal the servers watch.
fn shutdown_on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        net::termination().await;
        tracing::info!("shutting down");
        let _ = tx.send(true);
    });
    rx
}

async fn run_sidecar(args: SidecarArgs) -> Result<(), String> {
    let listener = bind(args.listen).await?;
    let api_token = match &args.api_token_env {
        Some(var) => std::env::var(var).ok().filter(|t| !t.is_empty()),
        None => None,
    };
    if let (Some(var), None) = (&args.api_token_env, &api_token) {
        tracing::warn!("{var} is unset or empty: the API token check is off (as in daprd)");
    }
    let names: Vec<&str> = args.apps.iter().map(|(n, _)| n.as_str()).collect();
    tracing::info!(apps = ?names, token_check = api_token.is_some(), "sidecar listening on http://{}", args.listen);
    let config = sidecar::SidecarConfig {
        apps: args.apps.iter().cloned().collect(),
        api_token,
        app_timeout: args.app_timeout,
        own_namespace: args.own_namespace.clone(),
    };
    let router = sidecar::router(config)?;
    net::serve(listener, router, shutdown_on_signal())
        .await
        .map_err(|e| format!("serving: {e}"))
}

async fn run_backend(args: BackendArgs) -> Result<(), String> {
    let listener = bind(args.listen).await?;
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    tracing::info!(name = %args.name, seed, "backend listening on http://{}", args.listen);
    let shutdown = shutdown_on_signal();
    let config = backend::BackendConfig {
        name: args.name,
        record: args.record,
        seed,
    };
    let router = backend::router(config, shutdown.clone())?;
    net::serve(listener, router, shutdown)
        .await
        .map_err(|e| format!("serving: {e}"))
}

async fn run_subscriber(args: SubscriberArgs) -> Result<(), String> {
    let listener = bind(args.listen).await?;
    tracing::info!(name = %args.name, "subscriber listening on http://{}", args.listen);
    let router = subscriber::router(subscriber::SubscriberConfig {
        name: args.name,
        log: args.log,
    });
    net::serve(listener, router, shutdown_on_signal())
        .await
        .map_err(|e| format!("serving: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent_and_parses_the_documented_forms() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "recur-dev",
            "sidecar",
            "--listen",
            "127.0.0.1:3500",
            "--app",
            "backend=http://127.0.0.1:8081",
            "--app",
            "notification-service=http://127.0.0.1:8082",
            "--api-token-env",
            "DAPR_API_TOKEN",
        ])
        .unwrap();
        let Command::Sidecar(args) = cli.command else {
            panic!("not sidecar")
        };
        assert_eq!(args.apps.len(), 2);
        assert_eq!(
            args.apps[1],
            (
                "notification-service".to_owned(),
                "http://127.0.0.1:8082".to_owned()
            )
        );
        assert_eq!(args.app_timeout, Duration::from_secs(60));
        let cli = Cli::try_parse_from([
            "recur-dev",
            "backend",
            "--listen",
            "127.0.0.1:8081",
            "--name",
            "backend",
            "--record",
            "/tmp/r.jsonl",
        ])
        .unwrap();
        assert!(
            matches!(cli.command, Command::Backend(BackendArgs { ref name, .. }) if name == "backend")
        );
        let cli = Cli::try_parse_from([
            "recur-dev",
            "subscriber",
            "--listen",
            "127.0.0.1:8083",
            "--name",
            "subscriber-a",
            "--log",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Subscriber(SubscriberArgs { ref name, log: true, .. }) if name == "subscriber-a"
        ));
        for bad in [
            "backend=https://127.0.0.1:1",
            "backend=http://10.0.0.1:80",
            "Backend=http://127.0.0.1:1",
            "x",
        ] {
            assert!(
                Cli::try_parse_from([
                    "recur-dev",
                    "sidecar",
                    "--listen",
                    "127.0.0.1:1",
                    "--app",
                    bad
                ])
                .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[tokio::test]
    async fn refuses_non_loopback_addresses() {
        let err = bind("0.0.0.0:0".parse().unwrap()).await.unwrap_err();
        assert!(err.contains("only loopback"), "{err}");
    }
}
