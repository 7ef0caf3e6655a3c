//! Prometheus metrics (prometheus-client, OpenMetrics text). Every series is prefixed `recur_`.
//!
//! Labels carry only bounded values (resource kinds, namespaces and Dapr app ids, fixed outcome
//! words), never object names or user ids, so cardinality stays bounded by configuration. The
//! per-app series (by namespace and app id) are dropped with [`Metrics::forget_app`] once no
//! task uses the app (its breaker was evicted), so deleted tenants do not linger.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindReasonLabels {
    kind: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindOutcomeLabels {
    kind: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabels {
    namespace: String,
    app_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppOutcomeLabels {
    namespace: String,
    app_id: String,
    outcome: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Reconcile durations: 1 ms … 60 s.
fn reconcile_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

/// Lag between an occurrence's scheduled time and its delivery: 1 ms … 10 min.
fn lag_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        120.0, 300.0, 600.0,
    ])
}

/// Backend (Dapr invocation) call durations: 5 ms … 60 s.
fn backend_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

/// From an occurrence's due instant to its completion: 1 s … 7 days.
fn completion_histogram() -> Histogram {
    Histogram::new([
        1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0,
        86400.0, 259200.0, 604800.0,
    ])
}

/// The operator's metrics. Cheap to clone: clones share the same series.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// The registered families' names as exposed (see [`Metrics::families`]).
    families: Arc<Vec<String>>,
    reconciles: Family<KindLabels, Counter>,
    reconcile_errors: Family<KindReasonLabels, Counter>,
    reconcile_duration: HistogramFamily<KindLabels>,
    occurrences: Family<KindOutcomeLabels, Counter>,
    firing_lag: HistogramFamily<KindLabels>,
    backend_calls: HistogramFamily<AppOutcomeLabels>,
    breaker_state: Family<AppLabels, Gauge>,
    leader: Gauge,
    lease_slack_waits: Counter,
    watch_errors: Family<KindLabels, Counter>,
    shards_held: Gauge,
    pending: Family<KindLabels, Gauge>,
    status_writes: Family<KindOutcomeLabels, Counter>,
    events_suppressed: Family<ReasonLabels, Counter>,
    tasks_suspended: Family<ReasonLabels, Counter>,
    clock_skew: Gauge<f64, AtomicU64>,
    work_queue_waiting: Family<WorkQueueLabels, Gauge>,
    completions: Family<ResultLabels, Counter>,
    completion_seconds: Histogram,
    ready: Gauge,
    breaker_open_since: Family<AppLabels, Gauge<f64, AtomicU64>>,
    objects: Family<KindReadyLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindReadyLabels {
    kind: String,
    ready: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

/// Namespaces as labels: bounded by the cluster's namespaces, and only those with waiters lately
/// (see `controller::fair`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkQueueLabels {
    kind: String,
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every family registered (families appear once first used).
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("recur");
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            families: Arc::new(Vec::new()),
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Family::new_with_constructor(reconcile_histogram),
            occurrences: Family::default(),
            firing_lag: Family::new_with_constructor(lag_histogram),
            backend_calls: Family::new_with_constructor(backend_histogram),
            breaker_state: Family::default(),
            leader: Gauge::default(),
            lease_slack_waits: Counter::default(),
            watch_errors: Family::default(),
            shards_held: Gauge::default(),
            pending: Family::default(),
            status_writes: Family::default(),
            events_suppressed: Family::default(),
            tasks_suspended: Family::default(),
            clock_skew: Gauge::default(),
            work_queue_waiting: Family::default(),
            completions: Family::default(),
            completion_seconds: completion_histogram(),
            ready: Gauge::default(),
            breaker_open_since: Family::default(),
            objects: Family::default(),
        };
        // Counters get `_total` and units `_seconds` appended by the encoder.
        let mut reg = Registrar {
            registry: &mut registry,
            families: Vec::new(),
        };
        reg.add(
            "reconciles",
            "Reconciliations completed, by kind",
            m.reconciles.clone(),
        );
        reg.add(
            "reconcile_errors",
            "Reconciliations that failed, by kind and reason",
            m.reconcile_errors.clone(),
        );
        reg.seconds(
            "reconcile_duration",
            "Time spent in one reconciliation",
            m.reconcile_duration.clone(),
        );
        reg.add(
            "occurrences",
            "Occurrences handled, by kind and outcome (delivered, failed, skipped; a Backfill's also already_delivered)",
            m.occurrences.clone(),
        );
        reg.seconds(
            "firing_lag",
            "Delay between an occurrence's scheduled time and its delivery",
            m.firing_lag.clone(),
        );
        reg.seconds(
            "backend_call_duration",
            "Duration of calls to a backend app through Dapr, by namespace (tenant), app id and outcome",
            m.backend_calls.clone(),
        );
        reg.add(
            "circuit_breaker_state",
            "Circuit breaker state per namespace (tenant) and backend app (0 closed, 1 half-open, 2 open)",
            m.breaker_state.clone(),
        );
        reg.add(
            "leader",
            "1 if this replica holds the leader lease, else 0",
            m.leader.clone(),
        );
        reg.add(
            "lease_slack_waits",
            "Reconciles a leader deferred by 500 ms, acting on nothing, because its Lease would end before a call could finish (a renewal not yet answered); an object counts again at each deferral",
            m.lease_slack_waits.clone(),
        );
        reg.add(
            "watch_errors",
            "Errors of the watch of a kind (the API server refused, ended or broke it; it is made again with backoff): while they go on, that kind's watch cache does not follow the API server",
            m.watch_errors.clone(),
        );
        reg.add(
            "shards_held",
            "Shard Leases this replica holds (`--shards`; 1 or 0 with one Lease)",
            m.shards_held.clone(),
        );
        reg.add(
            "pending_occurrences",
            "Occurrences due or retrying but not yet delivered, by kind (with shards, of the shards this replica holds)",
            m.pending.clone(),
        );
        reg.add(
            "status_writes",
            "Status writes, by kind and outcome (ok, conflict, error)",
            m.status_writes.clone(),
        );
        reg.add(
            "events_suppressed",
            "Warning events not published because the object had one with the same reason lately",
            m.events_suppressed.clone(),
        );
        reg.add(
            "tasks_suspended",
            "Tasks recur suspended itself, by reason (TooManyFailures: failurePolicy.suspendAfter)",
            m.tasks_suspended.clone(),
        );
        reg.seconds(
            "clock_skew",
            "This replica's clock minus the API server's, as last measured",
            m.clock_skew.clone(),
        );
        reg.add(
            "work_queue_waiting",
            "Reconciles waiting for a worker, by kind and namespace (fair queueing)",
            m.work_queue_waiting.clone(),
        );
        reg.add(
            "completions",
            "Completion events received (spec.completion), by result: accepted, duplicate, unknown (no such task or key), refused (not the task's topic, or not through pub/sub), pending (answered RETRY), invalid (not a completion event), error (answered RETRY)",
            m.completions.clone(),
        );
        reg.seconds(
            "completion",
            "From an occurrence's due instant to the completion the backend reported",
            m.completion_seconds.clone(),
        );
        reg.add(
            "ready",
            "1 if this replica is ready (what /readyz answers: watch caches synced, clock trusted, Dapr sidecar healthy), else 0; evaluated at every scrape and probe",
            m.ready.clone(),
        );
        reg.seconds(
            "circuit_breaker_open_since",
            "Unix time the circuit breaker of a namespace (tenant) and backend app opened, 0 while it is closed (half-open counts as still open)",
            m.breaker_open_since.clone(),
        );
        reg.add(
            "objects",
            "Objects in the watch cache, by kind and whether their Ready condition is True",
            m.objects.clone(),
        );
        let families = reg.families;
        let m = Metrics {
            registry: Arc::new(registry),
            families: Arc::new(families),
            ..m
        };
        // Counters that no kind touches: there from the first scrape, like the kinds' own.
        for result in COMPLETION_RESULTS {
            m.completions
                .get_or_create(&result_labels(result))
                .inc_by(0);
        }
        m.tasks_suspended
            .get_or_create(&reason_labels(TOO_MANY_FAILURES))
            .inc_by(0);
        m
    }

    /// Creates `kind`'s counters at 0 for every known label value (occurrence outcomes, status
    /// write outcomes, reconcile error reasons) and its object counts, so `rate()` and
    /// `increase()` see the first increment and alerts do not miss the first failure. Called
    /// once per kind when its controller starts.
    pub fn init_kind(&self, kind: &str) {
        self.reconciles.get_or_create(&kind_labels(kind)).inc_by(0);
        self.watch_errors
            .get_or_create(&kind_labels(kind))
            .inc_by(0);
        for reason in RECONCILE_ERROR_REASONS {
            self.reconcile_errors
                .get_or_create(&KindReasonLabels {
                    kind: kind.to_owned(),
                    reason: (*reason).to_owned(),
                })
                .inc_by(0);
        }
        for outcome in occurrence_outcomes(kind) {
            self.occurrences
                .get_or_create(&kind_outcome(kind, outcome))
                .inc_by(0);
        }
        for outcome in STATUS_WRITE_OUTCOMES {
            self.status_writes
                .get_or_create(&kind_outcome(kind, outcome))
                .inc_by(0);
        }
        self.set_pending(kind, 0);
        self.set_objects(kind, 0, 0);
    }

    pub fn reconciled(&self, kind: &str) {
        self.reconciles.get_or_create(&kind_labels(kind)).inc();
    }

    pub fn reconcile_failed(&self, kind: &str, reason: &str) {
        let labels = KindReasonLabels {
            kind: kind.to_owned(),
            reason: reason.to_owned(),
        };
        self.reconcile_errors.get_or_create(&labels).inc();
    }

    pub fn reconcile_duration(&self, kind: &str, seconds: f64) {
        self.reconcile_duration
            .get_or_create(&kind_labels(kind))
            .observe(seconds);
    }

    /// `outcome` is one of `delivered`, `failed`, `skipped`, and for a backfill
    /// `already_delivered` (the backend had the key).
    pub fn occurrence(&self, kind: &str, outcome: &str) {
        self.occurrences
            .get_or_create(&kind_outcome(kind, outcome))
            .inc();
    }

    pub fn firing_lag(&self, kind: &str, seconds: f64) {
        self.firing_lag
            .get_or_create(&kind_labels(kind))
            .observe(seconds);
    }

    /// A call made for `namespace` (the tenant) to `app_id`; `outcome` is one of
    /// [`crate::dapr::Outcome::LABELS`].
    pub fn backend_call(&self, namespace: &str, app_id: &str, outcome: &str, seconds: f64) {
        let labels = AppOutcomeLabels {
            namespace: namespace.to_owned(),
            app_id: app_id.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.backend_calls.get_or_create(&labels).observe(seconds);
    }

    /// `state`: 0 closed, 1 half-open, 2 open. Also keeps the instant the breaker left closed
    /// (`recur_circuit_breaker_open_since_seconds`): states are published after every call, the
    /// one that opened the breaker included, so that is the instant it opened.
    pub fn breaker_state(&self, namespace: &str, app_id: &str, state: i64) {
        self.breaker_state_at(namespace, app_id, state, std::time::SystemTime::now());
    }

    fn breaker_state_at(
        &self,
        namespace: &str,
        app_id: &str,
        state: i64,
        now: std::time::SystemTime,
    ) {
        let labels = app_labels(namespace, app_id);
        self.breaker_state.get_or_create(&labels).set(state);
        let since = self.breaker_open_since.get_or_create(&labels);
        if state == 0 {
            since.set(0.0);
        } else if since.get() == 0.0 {
            let unix = now
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            since.set(unix);
        }
    }

    /// Drops every series of `app_id` as called for `namespace` (breaker state and call
    /// durations), once no task uses it.
    pub fn forget_app(&self, namespace: &str, app_id: &str) {
        self.breaker_state.remove(&app_labels(namespace, app_id));
        self.breaker_open_since
            .remove(&app_labels(namespace, app_id));
        // A family cannot be filtered, only asked by full label set: one per outcome word.
        for outcome in crate::dapr::Outcome::LABELS {
            self.backend_calls.remove(&AppOutcomeLabels {
                namespace: namespace.to_owned(),
                app_id: app_id.to_owned(),
                outcome: outcome.to_owned(),
            });
        }
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub fn lease_slack_wait(&self) {
        self.lease_slack_waits.inc();
    }

    pub fn watch_error(&self, kind: &str) {
        self.watch_errors.get_or_create(&kind_labels(kind)).inc();
    }

    pub fn set_shards_held(&self, held: usize) {
        self.shards_held
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    pub fn set_pending(&self, kind: &str, n: i64) {
        self.pending.get_or_create(&kind_labels(kind)).set(n);
    }

    /// `outcome` is one of `ok`, `conflict`, `error`.
    pub fn status_write(&self, kind: &str, outcome: &str) {
        self.status_writes
            .get_or_create(&kind_outcome(kind, outcome))
            .inc();
    }

    pub fn event_suppressed(&self, reason: &str) {
        self.events_suppressed
            .get_or_create(&reason_labels(reason))
            .inc();
    }

    /// recur suspended a task itself (`reason`: why, for example `TooManyFailures`).
    pub fn task_suspended(&self, reason: &str) {
        self.tasks_suspended
            .get_or_create(&reason_labels(reason))
            .inc();
    }

    pub fn set_clock_skew(&self, seconds: f64) {
        self.clock_skew.set(seconds);
    }

    pub fn set_work_queue_waiting(&self, kind: &str, namespace: &str, n: i64) {
        self.work_queue_waiting
            .get_or_create(&work_queue(kind, namespace))
            .set(n);
    }

    pub fn remove_work_queue_waiting(&self, kind: &str, namespace: &str) {
        self.work_queue_waiting.remove(&work_queue(kind, namespace));
    }

    /// A completion event's result (see the family's help).
    pub fn completion(&self, result: &str) {
        self.completions.get_or_create(&result_labels(result)).inc();
    }

    /// Whether this replica is ready (what `/readyz` answers).
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// `kind`'s objects in the watch cache: `ready` with `Ready=True`, `not_ready` the others
    /// (no Ready condition yet included).
    pub fn set_objects(&self, kind: &str, ready: i64, not_ready: i64) {
        for (label, n) in [("true", ready), ("false", not_ready)] {
            self.objects
                .get_or_create(&KindReadyLabels {
                    kind: kind.to_owned(),
                    ready: label.to_owned(),
                })
                .set(n);
        }
    }

    /// An accepted completion, `seconds` after its occurrence was due.
    pub fn completion_seconds(&self, seconds: f64) {
        self.completion_seconds.observe(seconds);
    }

    /// Every registered family's name as the exposition's `# TYPE` lines give it (prefix and
    /// unit included, a counter's without `_total`). A family appears in [`Metrics::encode`]
    /// only once it has a series.
    pub fn families(&self) -> &[String] {
        &self.families
    }

    /// The OpenMetrics text exposition (see [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing to a String cannot fail; keep whatever was produced rather than panic.
            tracing::error!("could not encode metrics: {e}");
        }
        out
    }
}

/// Why recur suspends a task itself (`reason::TOO_MANY_FAILURES`; kept here as a word so this
/// module needs nothing from the controllers).
const TOO_MANY_FAILURES: &str = "TooManyFailures";

/// `controller::Error::reason`'s words.
const RECONCILE_ERROR_REASONS: &[&str] = &["kube", "patch", "missing_field", "timeout"];

/// `Context::write_status`'s outcomes.
const STATUS_WRITE_OUTCOMES: &[&str] = &["ok", "conflict", "error"];

/// The completion results (`controller::completion::Received::label`).
const COMPLETION_RESULTS: &[&str] = &[
    "accepted",
    "duplicate",
    "unknown",
    "refused",
    "pending",
    "invalid",
    "error",
];

/// The occurrence outcomes each kind counts.
fn occurrence_outcomes(kind: &str) -> &'static [&'static str] {
    match kind {
        "RecurringTask" => &["delivered", "failed", "skipped"],
        "Backfill" => &["delivered", "already_delivered", "failed"],
        _ => &["delivered", "failed"],
    }
}

fn reason_labels(reason: &str) -> ReasonLabels {
    ReasonLabels {
        reason: reason.to_owned(),
    }
}

fn result_labels(result: &str) -> ResultLabels {
    ResultLabels {
        result: result.to_owned(),
    }
}

/// Registers families and remembers their exposed names.
struct Registrar<'a> {
    registry: &'a mut Registry,
    families: Vec<String>,
}

impl Registrar<'_> {
    fn add(&mut self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        self.registry.register(name, help, metric);
        self.families.push(format!("recur_{name}"));
    }

    /// A family in seconds (`_seconds` appended).
    fn seconds(
        &mut self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry
            .register_with_unit(name, help, Unit::Seconds, metric);
        self.families.push(format!("recur_{name}_seconds"));
    }
}

fn app_labels(namespace: &str, app_id: &str) -> AppLabels {
    AppLabels {
        namespace: namespace.to_owned(),
        app_id: app_id.to_owned(),
    }
}

fn kind_labels(kind: &str) -> KindLabels {
    KindLabels {
        kind: kind.to_owned(),
    }
}

fn work_queue(kind: &str, namespace: &str) -> WorkQueueLabels {
    WorkQueueLabels {
        kind: kind.to_owned(),
        namespace: namespace.to_owned(),
    }
}

fn kind_outcome(kind: &str, outcome: &str) -> KindOutcomeLabels {
    KindOutcomeLabels {
        kind: kind.to_owned(),
        outcome: outcome.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// The value of the sample line starting with `series` (name plus labels), if present.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.split(' ').next()?.parse().ok())
    }

    #[test]
    fn every_family_is_exposed_with_the_prefix() {
        let m = Metrics::new();
        m.reconciled("RecurringTask");
        m.reconcile_failed("RecurringTask", "schedule");
        m.reconcile_duration("RecurringTask", 0.02);
        m.occurrence("Reminder", "delivered");
        m.firing_lag("Reminder", 0.3);
        m.backend_call("team-a", "billing", "delivered", 0.04);
        m.breaker_state("team-a", "billing", 2);
        m.set_leader(true);
        m.lease_slack_wait();
        m.watch_error("Backfill");
        m.set_pending("Reminder", 3);
        m.status_write("Reminder", "conflict");
        m.set_ready(true);
        m.set_objects("Reminder", 4, 1);
        m.event_suppressed("DeliveryRejected");
        m.task_suspended("TooManyFailures");
        m.set_clock_skew(0.2);
        m.set_work_queue_waiting("RecurringTask", "team-a", 3);
        m.completion("accepted");
        m.completion_seconds(12.0);
        let text = m.encode();
        // Every family used once: the exposition names exactly the registered ones.
        let mut exposed = families(&text);
        exposed.sort();
        let mut registered = m.families().to_vec();
        registered.sort();
        assert_eq!(exposed, registered);
        assert_eq!(registered.len(), 22);
        for family in [
            "recur_reconciles",
            "recur_reconcile_errors",
            "recur_reconcile_duration_seconds",
            "recur_occurrences",
            "recur_firing_lag_seconds",
            "recur_backend_call_duration_seconds",
            "recur_circuit_breaker_state",
            "recur_leader",
            "recur_lease_slack_waits",
            "recur_watch_errors",
            "recur_shards_held",
            "recur_pending_occurrences",
            "recur_status_writes",
            "recur_ready",
            "recur_circuit_breaker_open_since_seconds",
            "recur_objects",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family} missing:\n{text}"
            );
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("recur_"), "unprefixed series {line}");
        }
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(
            sample(&text, r#"recur_reconciles_total{kind="RecurringTask"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"recur_reconcile_errors_total{kind="RecurringTask",reason="schedule"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"recur_backend_call_duration_seconds_count{namespace="team-a",app_id="billing",outcome="delivered"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"recur_circuit_breaker_state{namespace="team-a",app_id="billing"}"#
            ),
            Some(2.0)
        );
        assert_eq!(sample(&text, "recur_leader"), Some(1.0));
        assert_eq!(sample(&text, "recur_lease_slack_waits_total"), Some(1.0));
        assert_eq!(
            sample(&text, r#"recur_watch_errors_total{kind="Backfill"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"recur_pending_occurrences{kind="Reminder"}"#),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"recur_status_writes_total{kind="Reminder",outcome="conflict"}"#
            ),
            Some(1.0)
        );
    }

    #[test]
    fn values_move() {
        let m = Metrics::new();
        let clone = m.clone();
        m.reconciled("Reminder");
        clone.reconciled("Reminder");
        m.occurrence("Reminder", "skipped");
        m.set_leader(true);
        m.set_leader(false);
        m.set_pending("Reminder", 5);
        m.set_pending("Reminder", 2);
        m.reconcile_duration("Reminder", 0.003);
        m.reconcile_duration("Reminder", 0.2);
        let text = m.encode();
        assert_eq!(
            sample(&text, r#"recur_reconciles_total{kind="Reminder"}"#),
            Some(2.0),
            "clones share series"
        );
        assert_eq!(
            sample(
                &text,
                r#"recur_occurrences_total{kind="Reminder",outcome="skipped"}"#
            ),
            Some(1.0)
        );
        assert_eq!(sample(&text, "recur_leader"), Some(0.0));
        assert_eq!(
            sample(&text, r#"recur_pending_occurrences{kind="Reminder"}"#),
            Some(2.0)
        );
        let series = r#"recur_reconcile_duration_seconds"#;
        assert_eq!(
            sample(&text, &format!(r#"{series}_count{{kind="Reminder"}}"#)),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!(r#"{series}_bucket{{le="0.005",kind="Reminder"}}"#)
            ),
            Some(1.0)
        );
        let sum = sample(&text, &format!(r#"{series}_sum{{kind="Reminder"}}"#)).unwrap();
        assert!((sum - 0.203).abs() < 1e-9);
    }

    #[test]
    fn work_queue_waiting_is_per_namespace_and_removable() {
        let m = Metrics::new();
        m.set_work_queue_waiting("RecurringTask", "big", 9000);
        m.set_work_queue_waiting("RecurringTask", "small", 0);
        m.remove_work_queue_waiting("RecurringTask", "small");
        let text = m.encode();
        let series = |ns: &str| {
            sample(
                &text,
                &format!(r#"recur_work_queue_waiting{{kind="RecurringTask",namespace="{ns}"}}"#),
            )
        };
        assert_eq!(series("big"), Some(9000.0));
        assert_eq!(series("small"), None);
    }

    #[test]
    fn firing_lag_buckets_span_a_millisecond_to_ten_minutes() {
        let m = Metrics::new();
        m.firing_lag("Reminder", 0.0005);
        m.firing_lag("Reminder", 599.0);
        m.firing_lag("Reminder", 601.0);
        let text = m.encode();
        let bucket = |le: &str| {
            sample(
                &text,
                &format!(r#"recur_firing_lag_seconds_bucket{{le="{le}",kind="Reminder"}}"#),
            )
        };
        assert_eq!(bucket("0.001"), Some(1.0));
        assert_eq!(bucket("600.0"), Some(2.0));
        assert_eq!(bucket("+Inf"), Some(3.0));
    }

    #[test]
    fn a_forgotten_apps_series_disappear() {
        let m = Metrics::new();
        for outcome in ["delivered", "retryable", "circuit_open"] {
            m.backend_call("team-a", "billing", outcome, 0.1);
        }
        m.backend_call("team-b", "billing", "delivered", 0.1);
        m.breaker_state("team-a", "billing", 2);
        m.breaker_state("team-b", "billing", 0);
        let text = m.encode();
        assert!(
            text.contains(r#"namespace="team-a",app_id="billing""#),
            "{text}"
        );

        m.forget_app("team-a", "billing");
        let text = m.encode();
        assert!(
            !text.contains(r#"namespace="team-a""#),
            "team-a's series remain:\n{text}"
        );
        // The same app for another tenant is untouched.
        assert_eq!(
            sample(
                &text,
                r#"recur_circuit_breaker_state{namespace="team-b",app_id="billing"}"#
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"recur_backend_call_duration_seconds_count{namespace="team-b",app_id="billing",outcome="delivered"}"#
            ),
            Some(1.0)
        );
        // Forgetting what is not there is harmless; a new call brings the series back.
        m.forget_app("team-c", "billing");
        m.breaker_state("team-a", "billing", 0);
        assert_eq!(
            sample(
                &m.encode(),
                r#"recur_circuit_breaker_state{namespace="team-a",app_id="billing"}"#
            ),
            Some(0.0)
        );
    }

    /// Every `# TYPE` family name of an exposition.
    fn families(text: &str) -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_kinds_counters_start_at_zero_for_every_known_label() {
        let m = Metrics::new();
        // Before any kind starts: only the kind-less counters.
        let text = m.encode();
        assert_eq!(
            sample(
                &text,
                r#"recur_tasks_suspended_total{reason="TooManyFailures"}"#
            ),
            Some(0.0)
        );
        for result in COMPLETION_RESULTS {
            let series = format!(r#"recur_completions_total{{result="{result}"}}"#);
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
        assert_eq!(
            sample(
                &text,
                r#"recur_occurrences_total{kind="Reminder",outcome="failed"}"#
            ),
            None
        );

        for kind in ["RecurringTask", "Reminder", "Backfill"] {
            m.init_kind(kind);
        }
        m.occurrence("Reminder", "failed");
        // Called again (a controller restarted): nothing is reset.
        m.init_kind("Reminder");
        let text = m.encode();
        let expect_zero = |series: String| {
            assert_eq!(sample(&text, &series), Some(0.0), "{series}:\n{text}");
        };
        for kind in ["RecurringTask", "Reminder", "Backfill"] {
            expect_zero(format!(r#"recur_reconciles_total{{kind="{kind}"}}"#));
            expect_zero(format!(r#"recur_pending_occurrences{{kind="{kind}"}}"#));
            for ready in ["true", "false"] {
                expect_zero(format!(r#"recur_objects{{kind="{kind}",ready="{ready}"}}"#));
            }
            for reason in ["kube", "patch", "missing_field", "timeout"] {
                expect_zero(format!(
                    r#"recur_reconcile_errors_total{{kind="{kind}",reason="{reason}"}}"#
                ));
            }
            for outcome in ["ok", "conflict", "error"] {
                expect_zero(format!(
                    r#"recur_status_writes_total{{kind="{kind}",outcome="{outcome}"}}"#
                ));
            }
            if kind != "Reminder" {
                expect_zero(format!(
                    r#"recur_occurrences_total{{kind="{kind}",outcome="failed"}}"#
                ));
            }
            expect_zero(format!(
                r#"recur_occurrences_total{{kind="{kind}",outcome="delivered"}}"#
            ));
        }
        expect_zero(r#"recur_occurrences_total{kind="RecurringTask",outcome="skipped"}"#.into());
        expect_zero(
            r#"recur_occurrences_total{kind="Backfill",outcome="already_delivered"}"#.into(),
        );
        assert_eq!(
            sample(
                &text,
                r#"recur_occurrences_total{kind="Reminder",outcome="failed"}"#
            ),
            Some(1.0)
        );
        // Outcomes a kind never counts get no series.
        assert_eq!(
            sample(
                &text,
                r#"recur_occurrences_total{kind="Reminder",outcome="skipped"}"#
            ),
            None
        );
    }

    /// The words initialised are the words used.
    #[test]
    fn the_initialised_labels_are_the_ones_the_code_uses() {
        use crate::controller::Error;
        use crate::controller::completion::Received;
        let errors = [
            Error::Kube(kube::Error::Service(std::io::Error::other("x").into())),
            Error::Patch(serde_json::from_str::<()>("x").unwrap_err()),
            Error::MissingField("uid"),
            Error::Timeout(std::time::Duration::from_secs(10)),
        ];
        let reasons: Vec<&str> = errors.iter().map(Error::reason).collect();
        assert_eq!(reasons, RECONCILE_ERROR_REASONS);
        let results: Vec<&str> = [
            Received::Accepted,
            Received::Duplicate,
            Received::Unknown,
            Received::Refused,
            Received::Pending,
            Received::Invalid,
            Received::Error,
        ]
        .into_iter()
        .map(Received::label)
        .collect();
        assert_eq!(results, COMPLETION_RESULTS);
        assert_eq!(
            TOO_MANY_FAILURES,
            crate::controller::reason::TOO_MANY_FAILURES
        );
        for (kind, outcome) in [
            (crate::controller::task::KIND, "skipped"),
            (crate::controller::backfill::KIND, "already_delivered"),
        ] {
            assert!(occurrence_outcomes(kind).contains(&outcome), "{kind}");
        }
    }

    #[test]
    fn the_open_since_gauge_keeps_the_instant_the_breaker_left_closed() {
        let m = Metrics::new();
        let t0 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let later = t0 + std::time::Duration::from_secs(45);
        let since = |m: &Metrics| {
            sample(
                &m.encode(),
                r#"recur_circuit_breaker_open_since_seconds{namespace="team-a",app_id="billing"}"#,
            )
        };
        m.breaker_state_at("team-a", "billing", 0, t0);
        assert_eq!(since(&m), Some(0.0), "closed");
        m.breaker_state_at("team-a", "billing", 2, t0);
        assert_eq!(since(&m), Some(1_700_000_000.0), "opened");
        // Half-open, and open again after a failed probe: still the first instant.
        m.breaker_state_at("team-a", "billing", 1, later);
        m.breaker_state_at("team-a", "billing", 2, later);
        assert_eq!(since(&m), Some(1_700_000_000.0));
        m.breaker_state_at("team-a", "billing", 0, later);
        assert_eq!(since(&m), Some(0.0), "closed again");
        m.breaker_state_at("team-a", "billing", 2, later);
        assert_eq!(since(&m), Some(1_700_000_045.0), "opened again");
        // The real clock: a plausible unix time.
        m.breaker_state("team-b", "billing", 2);
        let now = sample(
            &m.encode(),
            r#"recur_circuit_breaker_open_since_seconds{namespace="team-b",app_id="billing"}"#,
        )
        .unwrap();
        assert!(now > 1_700_000_000.0, "{now}");
        m.forget_app("team-a", "billing");
        assert_eq!(since(&m), None, "forgotten with the app");
    }

    #[test]
    fn ready_and_objects_follow_their_last_setting() {
        let m = Metrics::new();
        assert_eq!(sample(&m.encode(), "recur_ready"), Some(0.0));
        m.set_ready(true);
        m.set_objects("RecurringTask", 7, 2);
        m.set_objects("RecurringTask", 6, 3);
        let text = m.encode();
        assert_eq!(sample(&text, "recur_ready"), Some(1.0));
        assert_eq!(
            sample(&text, r#"recur_objects{kind="RecurringTask",ready="true"}"#),
            Some(6.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"recur_objects{kind="RecurringTask",ready="false"}"#
            ),
            Some(3.0)
        );
        m.set_ready(false);
        assert_eq!(sample(&m.encode(), "recur_ready"), Some(0.0));
    }

    /// What a scrape right after start shows once the kinds are initialised: a family without
    /// a series is not exposed at all (no `# TYPE` line), so the per-app, per-namespace and
    /// per-reason ones and the histograms by kind appear with their first use.
    /// tests/e2e_metrics.rs checks that every family appears and moves in a real run.
    #[test]
    fn the_families_present_at_start() {
        let m = Metrics::new();
        for kind in ["RecurringTask", "Reminder", "Backfill"] {
            m.init_kind(kind);
        }
        let text = m.encode();
        let mut names = families(&text);
        names.sort();
        assert_eq!(
            names,
            [
                "recur_clock_skew_seconds",
                "recur_completion_seconds",
                "recur_completions",
                "recur_leader",
                "recur_lease_slack_waits",
                "recur_objects",
                "recur_occurrences",
                "recur_pending_occurrences",
                "recur_ready",
                "recur_reconcile_errors",
                "recur_reconciles",
                "recur_shards_held",
                "recur_status_writes",
                "recur_tasks_suspended",
                "recur_watch_errors",
            ]
        );
    }
}
