//! Probes and metrics over HTTP (axum).
//!
//! - `/health/live`, `/livez`: 200 `{"status":"alive"}`, else 503 with the reason. Liveness means
//!   "restarting would help": the async runtime has stopped running timers (its heartbeat, a
//!   5 s ticker, is older than `stall_after`, default 60 s), or a reconcile has been running for
//!   longer than [`RECONCILE_STUCK_AFTER`] (every API and Dapr call of a reconcile is bounded,
//!   so one that runs that long is stuck on a lock or a lost wake-up). An idle operator with no
//!   objects is alive: nothing needs to reconcile.
//! - `/health/ready`, `/readyz`: 200 `{"status":"ready"}` once every expected kind's watch store
//!   has synced, the clock agrees with the API server's (see `crate::clock`) and the optional
//!   dependency check passes; else 503 `{"status":"not ready","reason":...}`. Readiness ignores
//!   leadership: standbys are ready.
//! - `/metrics`: the OpenMetrics text exposition (`recur_ready` is readiness as of the scrape).
//!
//! Anything else is 404.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use serde_json::json;
use tokio::net::TcpListener;

use crate::metrics::{self, Metrics};

/// Liveness fails after this long without a heartbeat, unless configured otherwise.
pub const DEFAULT_STALL_AFTER: Duration = Duration::from_secs(60);

/// Liveness fails when one reconcile has run this long: each of its calls is bounded by 10 s
/// (Kubernetes) or the Dapr timeout, and it makes a handful of them.
pub const RECONCILE_STUCK_AFTER: Duration = Duration::from_secs(120);

/// The dependency check must answer within this, so the probe (Kubernetes' default
/// `timeoutSeconds` is 1) reports a reason instead of timing out.
pub const DEPENDENCY_CHECK_TIMEOUT: Duration = Duration::from_millis(800);

/// How long one answer of the dependency check stands. `/readyz` and every `/metrics` scrape
/// ask for readiness: without this, a burst of probes or scrapers is a burst of calls to the
/// sidecar (and through it, of health checks of the whole Dapr runtime).
pub const DEPENDENCY_CHECK_TTL: Duration = Duration::from_secs(1);

/// An extra readiness condition, e.g. the Dapr sidecar's outbound health. `Err` holds the reason.
pub type DependencyCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Errors of the HTTP server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("could not listen on {addr} for probes and metrics: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the probes and metrics server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Shared health state, updated by the controllers and read by the probes.
#[derive(Clone)]
pub struct Health {
    inner: Arc<HealthInner>,
}

struct HealthInner {
    stall_after: Duration,
    state: Mutex<HealthState>,
    /// The dependency check's last answer and when it came. An async lock, held while the
    /// check runs, so concurrent askers wait for that one answer instead of each calling.
    dependency_answer: tokio::sync::Mutex<Option<(tokio::time::Instant, Result<(), String>)>>,
}

struct HealthState {
    expected: BTreeSet<String>,
    synced: BTreeSet<String>,
    last_heartbeat: Instant,
    dependency: Option<DependencyCheck>,
    clock_problem: Option<String>,
    /// Start instants of the reconciles running now, by ticket.
    running: std::collections::HashMap<u64, Instant>,
    next_ticket: u64,
}

/// A running reconcile, for liveness; it ends when dropped.
pub struct Running {
    health: Health,
    ticket: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.health.state().running.remove(&self.ticket);
    }
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("Health")
            .field("stall_after", &self.inner.stall_after)
            .field("expected", &state.expected)
            .field("synced", &state.synced)
            .field("last_heartbeat", &state.last_heartbeat)
            .field("dependency_check", &state.dependency.is_some())
            .finish()
    }
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    /// Health with the default stall limit ([`DEFAULT_STALL_AFTER`]). The heartbeat clock starts now.
    pub fn new() -> Health {
        Health::with_stall_after(DEFAULT_STALL_AFTER)
    }

    /// Health whose liveness fails after `stall_after` without a heartbeat.
    pub fn with_stall_after(stall_after: Duration) -> Health {
        Health {
            inner: Arc::new(HealthInner {
                stall_after,
                state: Mutex::new(HealthState {
                    expected: BTreeSet::new(),
                    synced: BTreeSet::new(),
                    last_heartbeat: Instant::now(),
                    dependency: None,
                    clock_problem: None,
                    running: std::collections::HashMap::new(),
                    next_ticket: 0,
                }),
                dependency_answer: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// A controller's watch store for `kind` is ready.
    pub fn set_synced(&self, kind: &str) {
        self.state().synced.insert(kind.to_owned());
    }

    /// Registers a kind that must sync before the process is ready.
    pub fn expect_kind(&self, kind: &str) {
        self.state().expected.insert(kind.to_owned());
    }

    /// Called by the runtime's ticker; liveness fails when none arrives for `stall_after`.
    pub fn heartbeat(&self) {
        self.state().last_heartbeat = Instant::now();
    }

    /// Records a reconcile that starts now; it ends when the returned value is dropped.
    pub fn reconcile_started(&self) -> Running {
        let mut state = self.state();
        let ticket = state.next_ticket;
        state.next_ticket = state.next_ticket.wrapping_add(1);
        state.running.insert(ticket, Instant::now());
        Running {
            health: self.clone(),
            ticket,
        }
    }

    /// Adds a readiness condition (replacing any previous one). It must not block; it is given
    /// [`DEPENDENCY_CHECK_TIMEOUT`] to answer.
    pub fn set_dependency_check(
        &self,
        f: Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>,
    ) {
        self.state().dependency = Some(f);
        if let Ok(mut answer) = self.inner.dependency_answer.try_lock() {
            *answer = None;
        }
    }

    /// Sets (or clears) the reason this replica's clock cannot be trusted; readiness fails with it.
    pub fn set_clock_problem(&self, problem: Option<String>) {
        self.state().clock_problem = problem;
    }

    /// The reason this replica's clock cannot be trusted, if any.
    pub fn clock_problem(&self) -> Option<String> {
        self.state().clock_problem.clone()
    }

    /// Liveness as of `now`; `Err` holds the reason.
    fn liveness_at(&self, now: Instant) -> Result<(), String> {
        let state = self.state();
        let since = now.saturating_duration_since(state.last_heartbeat);
        if since > self.inner.stall_after {
            return Err(format!(
                "the runtime's heartbeat is {}s old (limit {}s)",
                since.as_secs(),
                self.inner.stall_after.as_secs()
            ));
        }
        let longest = state
            .running
            .values()
            .map(|started| now.saturating_duration_since(*started))
            .max()
            .unwrap_or_default();
        if longest > RECONCILE_STUCK_AFTER {
            return Err(format!(
                "a reconcile has been running for {}s (limit {}s)",
                longest.as_secs(),
                RECONCILE_STUCK_AFTER.as_secs()
            ));
        }
        Ok(())
    }

    /// Readiness; `Err` holds the reason.
    async fn readiness(&self) -> Result<(), String> {
        let check = {
            let state = self.state();
            let missing: Vec<&str> = state
                .expected
                .difference(&state.synced)
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "watch caches not synced yet: {}",
                    missing.join(", ")
                ));
            }
            if let Some(problem) = &state.clock_problem {
                return Err(problem.clone());
            }
            state.dependency.clone()
        };
        let Some(check) = check else {
            return Ok(());
        };
        let mut answer = self.inner.dependency_answer.lock().await;
        if let Some((answered, result)) = answer.as_ref()
            && answered.elapsed() < DEPENDENCY_CHECK_TTL
        {
            return result.clone();
        }
        let result = match tokio::time::timeout(DEPENDENCY_CHECK_TIMEOUT, check()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(format!("dependency check failed: {reason}")),
            Err(_) => Err(format!(
                "dependency check did not answer within {} ms",
                DEPENDENCY_CHECK_TIMEOUT.as_millis()
            )),
        };
        // Counted from the answer, so a slow check still stands for the whole second.
        *answer = Some((tokio::time::Instant::now(), result.clone()));
        result
    }

    fn state(&self) -> MutexGuard<'_, HealthState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Clone)]
struct AppState {
    health: Health,
    metrics: Arc<Metrics>,
}

/// The probe and metrics routes, for embedding or in-process tests.
pub fn router(health: Health, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/livez", get(live))
        .route("/health/ready", get(ready))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { health, metrics })
}

/// Listens on `addr` and serves [`router`] until `shutdown` completes (then drains connections).
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    serve_on(listener, health, metrics, shutdown).await
}

/// Like [`serve`] on an already bound listener (e.g. port 0 in tests).
pub async fn serve_on(
    listener: TcpListener,
    health: Health,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving probes and metrics");
    }
    axum::serve(listener, router(health, metrics))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServerError::Serve)
}

async fn live(State(app): State<AppState>) -> Response {
    match app.health.liveness_at(Instant::now()) {
        Ok(()) => (StatusCode::OK, axum::Json(json!({"status": "alive"}))).into_response(),
        Err(reason) => {
            tracing::warn!("liveness probe failing: {reason}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"status": "stalled", "reason": reason})),
            )
                .into_response()
        }
    }
}

async fn ready(State(app): State<AppState>) -> Response {
    let readiness = app.health.readiness().await;
    app.metrics.set_ready(readiness.is_ok());
    match readiness {
        Ok(()) => (StatusCode::OK, axum::Json(json!({"status": "ready"}))).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not ready", "reason": reason})),
        )
            .into_response(),
    }
}

/// `recur_ready` is what `/readyz` would answer now: evaluated here too, so it is current
/// even where nothing probes.
async fn metrics_text(State(app): State<AppState>) -> Response {
    app.metrics.set_ready(app.health.readiness().await.is_ok());
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        app.metrics.encode(),
    )
        .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A server on a loopback port 0; dropping the returned sender stops it.
    async fn start(
        health: Health,
        metrics: Arc<Metrics>,
    ) -> (
        String,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), ServerError>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve_on(listener, health, metrics, async move {
            let _ = stopped.await;
        }));
        (base, stop, task)
    }

    async fn get(url: &str) -> (StatusCode, String, Value) {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let resp = client.get(url).send().await.unwrap();
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = resp.text().await.unwrap();
        let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (status, content_type, json)
    }

    #[test]
    fn liveness_fails_after_stall_limit() {
        let health = Health::with_stall_after(Duration::from_secs(60));
        let now = Instant::now();
        assert!(health.liveness_at(now).is_ok());
        let err = health
            .liveness_at(now + Duration::from_secs(61))
            .unwrap_err();
        assert!(err.contains("the runtime's heartbeat is 61s old"), "{err}");
    }

    /// A reconcile that never ends fails liveness; one that ended, or an idle operator, does not.
    #[test]
    fn liveness_fails_on_a_stuck_reconcile() {
        let health = Health::new();
        let now = Instant::now();
        let stuck = health.reconcile_started();
        let quick = health.reconcile_started();
        drop(quick);
        health.heartbeat();
        let later = now + RECONCILE_STUCK_AFTER + Duration::from_secs(2);
        health.state().last_heartbeat = later;
        let err = health.liveness_at(later).unwrap_err();
        assert!(err.contains("a reconcile has been running for 12"), "{err}");
        drop(stuck);
        assert!(health.liveness_at(later).is_ok());
        assert!(health.state().running.is_empty());
    }

    #[tokio::test]
    async fn liveness_follows_heartbeats() {
        let health = Health::new();
        let (base, stop, task) = start(health.clone(), Arc::new(Metrics::new())).await;
        for path in ["/livez", "/health/live"] {
            let (status, _, body) = get(&format!("{base}{path}")).await;
            assert_eq!((status, body), (StatusCode::OK, json!({"status": "alive"})));
        }
        // Pretend the runtime's ticker has been silent for two minutes.
        health.state().last_heartbeat = Instant::now()
            .checked_sub(Duration::from_secs(120))
            .unwrap();
        let (status, _, body) = get(&format!("{base}/livez")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body["reason"].as_str().unwrap().contains("heartbeat is 12"),
            "{body}"
        );
        health.heartbeat();
        let (status, _, _) = get(&format!("{base}/health/live")).await;
        assert_eq!(status, StatusCode::OK);
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn readiness_waits_for_every_expected_kind() {
        let health = Health::new();
        health.expect_kind("RecurringTask");
        health.expect_kind("Reminder");
        let (base, stop, task) = start(health.clone(), Arc::new(Metrics::new())).await;

        let (status, _, body) = get(&format!("{base}/readyz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "not ready");
        assert_eq!(
            body["reason"],
            "watch caches not synced yet: RecurringTask, Reminder"
        );

        health.set_synced("RecurringTask");
        let (status, _, body) = get(&format!("{base}/health/ready")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["reason"], "watch caches not synced yet: Reminder");

        health.set_synced("Reminder");
        for path in ["/readyz", "/health/ready"] {
            let (status, _, body) = get(&format!("{base}{path}")).await;
            assert_eq!((status, body), (StatusCode::OK, json!({"status": "ready"})));
        }
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn dependency_check_gates_readiness() {
        let health = Health::new();
        let up = Arc::new(AtomicBool::new(false));
        let flag = up.clone();
        health.set_dependency_check(Arc::new(move || {
            let up = flag.load(Ordering::SeqCst);
            Box::pin(async move {
                if up {
                    Ok(())
                } else {
                    Err("dapr sidecar not healthy".to_owned())
                }
            })
        }));
        let (base, stop, task) = start(health.clone(), Arc::new(Metrics::new())).await;
        let (status, _, body) = get(&format!("{base}/readyz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body["reason"],
            "dependency check failed: dapr sidecar not healthy"
        );
        // The answer stands for DEPENDENCY_CHECK_TTL (see the next test); a new check replaces it.
        up.store(true, Ordering::SeqCst);
        let flag = up.clone();
        health.set_dependency_check(Arc::new(move || {
            let up = flag.load(Ordering::SeqCst);
            Box::pin(async move { if up { Ok(()) } else { Err("down".to_owned()) } })
        }));
        let (status, _, _) = get(&format!("{base}/readyz")).await;
        assert_eq!(status, StatusCode::OK);

        // A check that never answers is reported, not waited on forever.
        health.set_dependency_check(Arc::new(|| Box::pin(futures::future::pending())));
        let (status, _, body) = get(&format!("{base}/readyz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body["reason"].as_str().unwrap().contains("did not answer"),
            "{body}"
        );
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }

    /// Probes and scrapes in a burst share one call of the dependency check per second, and
    /// concurrent askers wait for the call in flight instead of making their own.
    #[tokio::test(start_paused = true)]
    async fn dependency_answers_are_shared_for_a_second() {
        let health = Health::new();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let up = Arc::new(AtomicBool::new(true));
        let (counter, flag) = (calls.clone(), up.clone());
        health.set_dependency_check(Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let up = flag.load(Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if up {
                    Ok(())
                } else {
                    Err("sidecar down".to_owned())
                }
            })
        }));
        let burst: Vec<_> = (0..20)
            .map(|_| {
                let health = health.clone();
                tokio::spawn(async move { health.readiness().await })
            })
            .collect();
        for asker in burst {
            assert_eq!(asker.await.unwrap(), Ok(()));
        }
        for _ in 0..20 {
            assert_eq!(health.readiness().await, Ok(()));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one call for 40 askers");

        // A second later the sidecar is asked again, and its new answer is seen.
        up.store(false, Ordering::SeqCst);
        tokio::time::advance(DEPENDENCY_CHECK_TTL).await;
        assert_eq!(
            health.readiness().await,
            Err("dependency check failed: sidecar down".to_owned())
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// `recur_ready` is what `/readyz` answers, also when only `/metrics` is asked.
    #[tokio::test]
    async fn the_ready_gauge_mirrors_readiness() {
        let health = Health::new();
        health.expect_kind("Reminder");
        let metrics = Arc::new(Metrics::new());
        let (base, stop, task) = start(health.clone(), metrics.clone()).await;
        let ready_gauge = |text: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix("recur_ready "))
                .map(str::to_owned)
        };
        let (_, _, body) = get(&format!("{base}/metrics")).await;
        assert_eq!(ready_gauge(body.as_str().unwrap()).as_deref(), Some("0"));
        health.set_synced("Reminder");
        let (_, _, body) = get(&format!("{base}/metrics")).await;
        assert_eq!(ready_gauge(body.as_str().unwrap()).as_deref(), Some("1"));
        // A probe that fails sets it too.
        health.set_clock_problem(Some("clock skew".into()));
        let (status, _, _) = get(&format!("{base}/readyz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ready_gauge(&metrics.encode()).as_deref(), Some("0"));
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn metrics_and_unknown_paths() {
        let metrics = Arc::new(Metrics::new());
        metrics.reconciled("Reminder");
        let (base, stop, task) = start(Health::new(), metrics.clone()).await;
        let (status, content_type, body) = get(&format!("{base}/metrics")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, metrics::CONTENT_TYPE);
        let text = body.as_str().unwrap();
        assert!(
            text.contains(r#"recur_reconciles_total{kind="Reminder"} 1"#),
            "{text}"
        );
        metrics.reconciled("Reminder");
        let (_, _, body) = get(&format!("{base}/metrics")).await;
        assert!(
            body.as_str()
                .unwrap()
                .contains(r#"recur_reconciles_total{kind="Reminder"} 2"#)
        );
        for path in ["/", "/health", "/metricsx", "/readyz/extra"] {
            let (status, _, _) = get(&format!("{base}{path}")).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        }
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn serve_reports_an_address_in_use() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = serve(
            addr,
            Health::new(),
            Arc::new(Metrics::new()),
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ServerError::Bind { .. }), "{err}");
    }
}
