//! `recur run`: wires the controllers, the lease, the Dapr client and the HTTP server together.
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use kube::api::{Api, ListParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, Config};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::sync::watch;
use tracing::{error, info};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::api::{Backfill, RecurringTask, Reminder, TenantPolicy};
use crate::controller::initial_list::InitialList;
use crate::controller::{self, Context, Settings};
use crate::dapr::{DaprClient, DaprConfig};
use crate::lease::shards::{self, Leaderships, ShardConfig};
use crate::lease::{self, Leadership, LeaseConfig, LeaseElector};
use crate::metrics::Metrics;
use crate::server::{self, Health};
use crate::tenancy::Tenancy;
use crate::traces;

/// Flags of `recur run`; each defaults from a `RECUR_`-prefixed environment variable.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "RECUR_NAMESPACE")]
    pub namespace: Option<String>,
    /// Serve only recur objects whose labels match this selector (e.g. `shard=a`): shards, or a
    /// canary operator next to the stable one. A task's reminders carry the task's labels.
    #[arg(long, env = "RECUR_SELECTOR")]
    pub selector: Option<String>,
    /// How each kind's full list is fetched at start and after a relist: `streaming` (one
    /// WATCH with sendInitialEvents, Kubernetes 1.34+), `paged` (LISTs of 500), or `auto`
    /// (streaming if the apiserver accepts it, asked once per kind at start).
    #[arg(long, env = "RECUR_INITIAL_LIST", value_enum, default_value_t = InitialList::Auto)]
    pub initial_list: InitialList,
    /// Address of the probe and metrics server.
    #[arg(long, env = "RECUR_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Address where the Dapr sidecar delivers completion events (`spec.completion`), the
    /// sidecar's app port; a loopback address (`127.0.0.1:8090`). Unset: no completion feedback.
    #[arg(long, env = "RECUR_APP_ADDR")]
    pub app_addr: Option<SocketAddr>,
    /// Elect a leader among replicas with a coordination.k8s.io Lease; only the leader delivers.
    /// On by default: `--leader-elect=false` is for a single instance only (two instances
    /// without election would both deliver).
    #[arg(long, env = "RECUR_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub leader_elect: bool,
    /// Largest tolerated difference between this replica's clock and the API server's; beyond
    /// it the replica is not ready and does not lead (schedule decisions use the local clock).
    #[arg(long, env = "RECUR_MAX_CLOCK_SKEW", default_value = "10s", value_parser = duration)]
    pub max_clock_skew: Duration,
    /// Name of the Lease (default `recur-leader`). Required with `--selector`: operators of
    /// different shards sharing one Lease would leave every shard but the leader's unserved.
    #[arg(long, env = "RECUR_LEASE_NAME")]
    pub lease_name: Option<String>,
    /// Split the objects into this many shards by UID, each with a Lease of its own
    /// (`<lease-name>-shard-<k>`), which the replicas share out among themselves: each holds
    /// about shards / replicas and delivers for those only. 1: one leader delivers for every
    /// object. Needs leader election; replicas beyond this count wait as standbys.
    #[arg(long, env = "RECUR_SHARDS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=SHARDS_MAX))]
    pub shards: u16,
    /// Namespace of the Lease (default: POD_NAMESPACE, else the kubeconfig's namespace).
    #[arg(long, env = "RECUR_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long a Lease is valid without renewal.
    #[arg(long, env = "RECUR_LEASE_DURATION", default_value = "15s", value_parser = duration)]
    pub lease_duration: Duration,
    /// How often the holder renews the Lease. A renewal has the lease duration minus this, the
    /// safety margin and the delivery margin (--dapr-timeout plus 1s) to be answered before
    /// deliveries pause for it: 4s with the defaults (client-go's leaders retry every 2s too).
    #[arg(long, env = "RECUR_LEASE_RENEW_PERIOD", default_value = "2s", value_parser = duration)]
    pub lease_renew_period: Duration,
    /// Reconciles running at once per kind (deliveries in flight).
    #[arg(long, env = "RECUR_WORKERS", default_value_t = 64)]
    pub workers: u16,
    /// Share each kind's workers among namespaces in turn. Hidden: `=false` brings back the one
    /// queue of every namespace, where a namespace's burst delays the others (for comparisons).
    #[arg(long, env = "RECUR_FAIR_QUEUE", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_missing_value = "true", hide = true)]
    pub fair_queue: bool,
    /// Timeout of one call through the Dapr sidecar.
    #[arg(long, env = "RECUR_DAPR_TIMEOUT", default_value = "5s", value_parser = call_timeout)]
    pub dapr_timeout: Duration,
    /// Readiness waits for the Dapr sidecar's /v1.0/healthz/outbound.
    #[arg(long, env = "RECUR_DAPR_HEALTH_CHECK", default_value_t = true, action = clap::ArgAction::Set)]
    pub dapr_health_check: bool,
    /// App id told that a reminder was sent (`POST api/tasks/{taskId}/reminder-sent`).
    #[arg(long, env = "RECUR_BACKEND_APP_ID", default_value = "backend")]
    pub backend_app_id: String,
    /// Log format.
    #[arg(long, env = "RECUR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "RECUR_LOG", default_value = "info,kube=warn")]
    pub log: String,
    /// The validating admission webhook (off unless --webhook-addr is set).
    #[command(flatten)]
    pub webhook: crate::webhook::WebhookArgs,
}

/// Log output format.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum LogFormat {
    Text,
    Json,
}

fn duration(s: &str) -> Result<Duration, String> {
    crate::schedule::parse_duration(s)
}

/// The longest `--dapr-timeout`: a call held longer would hold its worker, and the Lease, as
/// long, and outlast the 10 minutes after which a breaker nobody asked for is dropped.
const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// `--dapr-timeout`: 1 ms to [`MAX_CALL_TIMEOUT`] (a timeout near `Duration::MAX` overflowed
/// instants, with or without leader election).
fn call_timeout(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d < Duration::from_millis(1) || d > MAX_CALL_TIMEOUT {
        return Err(format!("{s} is not between 1ms and 5m"));
    }
    Ok(d)
}

/// Runs the operator until SIGTERM or SIGINT.
pub fn main(args: RunArgs) -> ExitCode {
    let var = |k: &str| std::env::var(k).ok();
    let export = traces::Export::from_env(var);
    let provider = match export.check(var).and_then(|()| traces::provider(&export)) {
        Ok(provider) => provider,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    init_logs(args.log_format, &args.log, &provider);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        // Named threads: a profile (`scripts/bench.sh --perf`) tells the processes apart.
        .thread_name("recur-worker")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!("{err}");
            ExitCode::FAILURE
        }
    };
    // Sends the spans still batched; an unreachable collector costs at most its timeout.
    if let Err(err) = provider.shutdown() {
        eprintln!("warning: traces not flushed at exit: {err}");
    }
    code
}

/// Logs to stderr through `filter`; recur's own spans (whatever the log level) also to
/// `provider`, which gives each delivery its trace context.
fn init_logs(format: LogFormat, filter: &str, provider: &SdkTracerProvider) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file or a collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => fmt.with_filter(filter).boxed(),
    };
    let spans = tracing_subscriber::filter::Targets::new()
        .with_target(env!("CARGO_CRATE_NAME"), tracing::Level::INFO);
    let result = tracing_subscriber::registry()
        .with(fmt)
        .with(traces::layer(provider).with_filter(spans))
        .try_init();
    if let Err(err) = result {
        eprintln!("warning: logging was set up already: {err}");
    }
}

/// Most shards: each is two Leases a replica may hold, renewed every few seconds.
const SHARDS_MAX: i64 = 64;

/// The Lease of a replica that elects a leader without `--lease-name`.
const DEFAULT_LEASE: &str = "recur-leader";

/// The Lease `args` name, or why they cannot run: an operator of a shard (`--selector`) on the
/// default Lease would wait as a standby of whichever operator holds it, whatever its shard,
/// and its own objects would never be delivered.
fn lease_name(args: &RunArgs) -> Result<String, String> {
    match (&args.lease_name, &args.selector) {
        (Some(name), _) => Ok(name.clone()),
        (None, Some(selector)) if args.leader_elect => Err(format!(
            "--selector {selector:?} needs --lease-name: each shard needs a Lease of its own, or the operators of other shards holding {DEFAULT_LEASE:?} keep this one a standby and its objects undelivered"
        )),
        (None, _) => Ok(DEFAULT_LEASE.to_owned()),
    }
}

async fn run(args: RunArgs) -> Result<(), String> {
    let lease_name = lease_name(&args)?;
    if args.shards > 1 && !args.leader_elect {
        return Err(format!(
            "--shards {} needs leader election: without Leases every replica would deliver for every shard",
            args.shards
        ));
    }
    let mut config = Config::infer()
        .await
        .map_err(|e| format!("cannot load a kubeconfig or in-cluster config: {e}"))?;
    crate::user_agent::identify(&mut config, "recur");
    let default_ns = config.default_namespace.clone();
    let webhook_ns = crate::webhook::namespace(&args.webhook, &default_ns);
    let client =
        Client::try_from(config).map_err(|e| format!("cannot build a Kubernetes client: {e}"))?;
    check_crds(&client, args.namespace.as_deref()).await?;

    let dapr = DaprClient::new(DaprConfig::from_env(args.dapr_timeout).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let metrics = Arc::new(Metrics::new());
    let health = Health::new();
    if args.dapr_health_check {
        let probe = dapr.clone();
        health.set_dependency_check(Arc::new(move || {
            let probe = probe.clone();
            Box::pin(async move {
                probe
                    .outbound_healthy()
                    .await
                    .map_err(|e| format!("dapr sidecar: {e}"))
            })
        }));
    }

    // Shutdown in order: on a signal the controllers stop taking work and finish what is in
    // flight while the lease is still renewed; only then is the lease handed over (a standby
    // taking over earlier could call a key whose first call is still running), and last the
    // probe server stops.
    let (shutdown_tx, shutdown_rx) = watch::channel(Stage::Running);
    let reached = move |stage: Stage| {
        let mut rx = shutdown_rx.clone();
        async move {
            let _ = rx.wait_for(|now| *now >= stage).await;
        }
    };
    let shutdown = {
        let reached = reached.clone();
        move || reached(Stage::StopControllers)
    };
    let signal_tx = shutdown_tx.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down: finishing the deliveries in flight");
        let _ = signal_tx.send(Stage::StopControllers);
    });

    let lease_margin = lease_margin(&args);
    if args.leader_elect {
        let slack = renewal_slack(&args).ok_or_else(|| {
            format!(
                "--lease-duration {:?} is too short: minus the renew period and the safety margin it must exceed --dapr-timeout plus 1s ({:?})",
                args.lease_duration, lease_margin
            )
        })?;
        info!(
            slack_ms = slack.as_millis() as u64,
            "a Lease renewal answered later than this after it was sent pauses deliveries until it is"
        );
    }
    let identity = lease::default_identity();
    let (leaderships, lease_task) = if args.leader_elect {
        let namespace = args
            .lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or(default_ns);
        let cfg = LeaseConfig {
            name: lease_name,
            namespace,
            identity: identity.clone(),
            lease_duration: args.lease_duration,
            renew_period: args.lease_renew_period,
            retry_period: args.lease_renew_period.min(Duration::from_secs(2)),
            annotations: Default::default(),
        };
        if args.shards > 1 {
            let shards = ShardConfig {
                lease: cfg,
                shards: args.shards,
                hand_back_after: lease_margin,
            };
            let release = reached.clone();
            let (leaderships, task) = shards::start(
                client.clone(),
                shards,
                reached(Stage::StopControllers),
                move || release(Stage::ReleaseLease),
            )
            .map_err(|e| format!("leader election: {e}"))?;
            (leaderships, Some(task))
        } else {
            let elector = LeaseElector::new(client.clone(), cfg)
                .map_err(|e| format!("leader election: {e}"))?
                .handing_back_after(lease_margin);
            let leadership = Leaderships::single(elector.leadership());
            let release = reached(Stage::ReleaseLease);
            (leadership, Some(tokio::spawn(elector.run(release))))
        }
    } else {
        (Leaderships::single(Leadership::always()), None)
    };

    let settings = Settings {
        workers: args.workers.max(1),
        upcoming: 3,
        backend_app_id: args.backend_app_id.clone(),
        lease_margin,
        selector: args.selector.clone(),
        initial_list: args.initial_list,
    };
    let reporter = Reporter {
        controller: "recur".into(),
        instance: Some(identity),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let (tenancy, drive) = Tenancy::watch(client.clone());
    tokio::spawn(drive);
    let ctx = Context::new(
        client.clone(),
        recorder,
        dapr,
        metrics.clone(),
        leaderships.clone(),
        health.clone(),
        settings,
        tenancy.clone(),
    );
    let ctx = Arc::new(ctx.with_fair_queue(args.fair_queue));

    // The runtime's heartbeat (see server.rs: liveness also fails on a stuck reconcile).
    let beat = health.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            beat.heartbeat();
        }
    });

    tokio::spawn(crate::clock::watch(
        client.clone(),
        args.max_clock_skew,
        leaderships.clone(),
        metrics.clone(),
        health.clone(),
        shutdown(),
    ));
    let server = tokio::spawn(server::serve(
        args.http_addr,
        health.clone(),
        metrics.clone(),
        reached(Stage::StopServer),
    ));
    // Admission is every replica's work, not the leader's; it stops with the probe server. It
    // judges with the controllers' own policy caches.
    let webhook = crate::webhook::start(
        &args.webhook,
        client.clone(),
        &webhook_ns,
        tenancy.clone(),
        &health,
        reached(Stage::StopServer),
    )
    .await
    .map_err(|e| e.to_string())?;
    // Every replica takes completion events (one consumer group for the app id), leader or not;
    // they stop with the controllers, whose watch cache finds their tasks.
    let app_channel = match args.app_addr {
        Some(addr) => Some(tokio::spawn(
            crate::app_channel::bind(addr, ctx.clone(), shutdown())
                .await
                .map_err(|e| e.to_string())?,
        )),
        None => None,
    };
    leaderships.report_to(metrics.clone());
    // Spawned, not polled by this thread: a controller's watch stream is fed by the HTTP
    // connection's task on a worker, and a task it wakes on the same worker runs there next,
    // where waking this thread would cost two thread switches per message (about four per
    // object while a list streams in).
    let tasks = tokio::spawn(controller::run::<RecurringTask>(
        ctx.clone(),
        args.namespace.clone(),
        futures::stream::select(leaderships.gained(), tenancy.changes()),
        shutdown(),
    ));
    let reminders = tokio::spawn(controller::run::<Reminder>(
        ctx.clone(),
        args.namespace.clone(),
        futures::stream::select(leaderships.gained(), tenancy.changes()),
        shutdown(),
    ));
    let backfills = tokio::spawn(controller::run::<Backfill>(
        ctx.clone(),
        args.namespace.clone(),
        futures::stream::select(leaderships.gained(), tenancy.changes()),
        shutdown(),
    ));
    info!(leader_elect = args.leader_elect, namespace = ?args.namespace, http = %args.http_addr, app = ?args.app_addr, "recur started");
    if let Err(err) = tokio::try_join!(tasks, reminders, backfills) {
        // A controller that panicked takes the process down, as it did when polled here.
        match err.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(err) => return Err(format!("controller task: {err}")),
        }
    }
    if let Some(app_channel) = app_channel {
        match app_channel.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!("{err}"),
            Err(err) => tracing::warn!("app channel task: {err}"),
        }
    }
    info!("controllers stopped; releasing the lease");
    let _ = shutdown_tx.send(Stage::ReleaseLease);
    if let Some(task) = lease_task
        && let Ok(Err(err)) = task.await
    {
        tracing::warn!("{err}");
    }
    let _ = shutdown_tx.send(Stage::StopServer);
    if let Some(webhook) = webhook
        && let Err(err) = webhook.await
    {
        tracing::warn!("admission webhook task: {err}");
    }
    match server.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(format!("http server: {err}")),
        Err(err) => Err(format!("http server task: {err}")),
    }
}

/// The steps of an orderly shutdown, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Running,
    StopControllers,
    ReleaseLease,
    StopServer,
}

/// How to install or upgrade the CRDs (the chart or `kubectl apply -f crds/` installs them; the
/// operator never does). Helm installs them on the first install only, so a `helm upgrade` that
/// skipped this step lacks every kind added since.
const CRD_HINT: &str = "install or upgrade them with `kubectl apply --server-side --force-conflicts -f crds/` (a chart's own CRDs: charts/recur/crds/; Helm installs CRDs on the first install only, never on upgrade)";

/// A delivery starts only while the lease stays ours for the whole call plus the status write.
fn lease_margin(args: &RunArgs) -> Duration {
    // Saturating: a timeout near `Duration::MAX` is refused by `renewal_slack`'s check, not a
    // panic.
    args.dapr_timeout.saturating_add(Duration::from_secs(1))
}

/// How late a renewal's answer may come before deliveries pause: the leadership deadline of the
/// last renewal (sent one renew period before the next), less the delivery margin. `None` when
/// there is no time left at all, which cannot fence a delivery.
fn renewal_slack(args: &RunArgs) -> Option<Duration> {
    args.lease_duration
        .checked_sub(lease::safety_margin(args.lease_duration))?
        .checked_sub(args.lease_renew_period)?
        .checked_sub(lease_margin(args))
        .filter(|slack| !slack.is_zero())
}

/// Fails with [`CRD_HINT`] unless every kind the operator watches is served: a missing one would
/// leave its watch retrying for ever and the operator never ready, with no word why.
async fn check_crds(client: &Client, namespace: Option<&str>) -> Result<(), String> {
    usable(controller::scoped_api::<RecurringTask>(client, namespace)).await?;
    usable(controller::scoped_api::<Reminder>(client, namespace)).await?;
    usable(controller::scoped_api::<Backfill>(client, namespace)).await?;
    // Tenancy reads policies cluster-wide, whatever `--namespace` says.
    usable(Api::<TenantPolicy>::all(client.clone())).await
}

/// One list of at most one object: the kind is served and this identity may list it.
async fn usable<K>(api: Api<K>) -> Result<(), String>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let kind = K::kind(&());
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(format!(
            "{kind} CRD not usable: the apiserver serves no {} in {} (not installed, or installed from an older version); {CRD_HINT}",
            K::plural(&()),
            K::api_version(&())
        )),
        // Not the CRD's fault: the rules this identity was given (e.g. `rbac.create=false`).
        Err(kube::Error::Api(status)) if status.code == 403 => Err(format!(
            "{kind}: this identity may not list {}.{} ({}); grant it `list` and `watch` as the chart's RBAC does",
            K::plural(&()),
            K::group(&()),
            status.message
        )),
        Err(e) => Err(format!("{kind} CRD not usable ({e}); {CRD_HINT}")),
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod lease_name_tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(flags: &[&str]) -> RunArgs {
        Cli::try_parse_from(std::iter::once("recur").chain(flags.iter().copied()))
            .unwrap()
            .run
    }

    /// A renewal answered 3 s after it was sent leaves the leader free to deliver with the
    /// default flags. With the 5 s renew period of before, a renewal had 1 s, and kube-apiserver,
    /// saturated by a 10,000-task burst on a core of its own, took 0.8 to 1 s on its side to
    /// answer one (its request histogram, `scripts/bench.sh --pin`, 2026-12-07).
    #[test]
    fn a_renewal_answered_seconds_late_does_not_pause_deliveries_by_default() {
        let a = args(&[]);
        let sent = std::time::Instant::now();
        let deadline = lease::leadership_deadline(
            sent,
            a.lease_duration,
            lease::safety_margin(a.lease_duration),
        );
        let next_sent = sent + a.lease_renew_period;
        let answered = next_sent + Duration::from_secs(3);
        // Until the answer the last renewal's deadline is the one in force.
        assert!(
            lease::deadline_allows(Some(deadline), answered, lease_margin(&a)),
            "deliveries pause {:?} after the renewal was sent",
            renewal_slack(&a)
        );
        assert_eq!(renewal_slack(&a), Some(Duration::from_secs(4)));
        // No time left at all is refused at start (the check `run` makes).
        assert_eq!(renewal_slack(&args(&["--lease-duration", "10s"])), None);
        // A timeout near Duration::MAX is refused as a flag, not a panic, with or without
        // leader election (the breaker's probe deadline overflowed without it).
        let huge = format!("{}s", u64::MAX);
        for flags in [
            vec!["--dapr-timeout", huge.as_str()],
            vec!["--dapr-timeout", huge.as_str(), "--leader-elect=false"],
            vec!["--dapr-timeout", "0s"],
            vec!["--dapr-timeout", "500us"],
            vec!["--dapr-timeout", "6m"],
        ] {
            let err = Cli::try_parse_from(std::iter::once("recur").chain(flags.iter().copied()))
                .err()
                .expect("refused");
            assert!(err.to_string().contains("--dapr-timeout"), "{err}");
        }
        assert_eq!(
            args(&["--dapr-timeout", "5m"]).dapr_timeout,
            Duration::from_secs(300)
        );
    }

    /// Two shards on the default Lease: one of them would never deliver. Refused at start,
    /// naming both flags.
    #[test]
    fn a_shard_needs_a_lease_of_its_own() {
        let err = lease_name(&args(&["--selector", "recur.dev/shard=1"])).unwrap_err();
        assert!(
            err.contains("--selector") && err.contains("--lease-name"),
            "{err}"
        );
        assert_eq!(
            lease_name(&args(&[
                "--selector",
                "recur.dev/shard=1",
                "--lease-name",
                "recur-shard-1"
            ])),
            Ok("recur-shard-1".to_owned())
        );
        // No election, no Lease to share.
        assert!(lease_name(&args(&["--selector", "a=b", "--leader-elect=false"])).is_ok());
        assert_eq!(lease_name(&args(&[])), Ok(DEFAULT_LEASE.to_owned()));
    }
}
