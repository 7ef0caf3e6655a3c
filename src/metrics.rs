//! Prometheus metrics (prometheus-client, OpenMetrics text). Every series is prefixed `recur_`.
//!
//! Labels carry only bounded values (resource kinds, Dapr app ids, fixed outcome words), never
//! object names or user ids, so cardinality stays bounded by configuration.

use std::sync::Arc;

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
    app_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppOutcomeLabels {
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

/// The operator's metrics. Cheap to clone: clones share the same series.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciles: Family<KindLabels, Counter>,
    reconcile_errors: Family<KindReasonLabels, Counter>,
    reconcile_duration: HistogramFamily<KindLabels>,
    occurrences: Family<KindOutcomeLabels, Counter>,
    firing_lag: HistogramFamily<KindLabels>,
    backend_calls: HistogramFamily<AppOutcomeLabels>,
    breaker_state: Family<AppLabels, Gauge>,
    leader: Gauge,
    pending: Family<KindLabels, Gauge>,
    status_writes: Family<KindOutcomeLabels, Counter>,
    events_suppressed: Family<ReasonLabels, Counter>,
    clock_skew: Gauge<f64, std::sync::atomic::AtomicU64>,
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
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Family::new_with_constructor(reconcile_histogram),
            occurrences: Family::default(),
            firing_lag: Family::new_with_constructor(lag_histogram),
            backend_calls: Family::new_with_constructor(backend_histogram),
            breaker_state: Family::default(),
            leader: Gauge::default(),
            pending: Family::default(),
            status_writes: Family::default(),
            events_suppressed: Family::default(),
            clock_skew: Gauge::default(),
        };
        // Counters get `_total` and units `_seconds` appended by the encoder.
        registry.register(
            "reconciles",
            "Reconciliations completed, by kind",
            m.reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed, by kind and reason",
            m.reconcile_errors.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "Time spent in one reconciliation",
            Unit::Seconds,
            m.reconcile_duration.clone(),
        );
        registry.register(
            "occurrences",
            "Occurrences handled, by kind and outcome (delivered, failed, skipped)",
            m.occurrences.clone(),
        );
        registry.register_with_unit(
            "firing_lag",
            "Delay between an occurrence's scheduled time and its delivery",
            Unit::Seconds,
            m.firing_lag.clone(),
        );
        registry.register_with_unit(
            "backend_call_duration",
            "Duration of calls to a backend app through Dapr, by app id and outcome",
            Unit::Seconds,
            m.backend_calls.clone(),
        );
        registry.register(
            "circuit_breaker_state",
            "Circuit breaker state per backend app (0 closed, 1 half-open, 2 open)",
            m.breaker_state.clone(),
        );
        registry.register(
            "leader",
            "1 if this replica holds the leader lease, else 0",
            m.leader.clone(),
        );
        registry.register(
            "pending_occurrences",
            "Occurrences due or retrying but not yet delivered, by kind",
            m.pending.clone(),
        );
        registry.register(
            "status_writes",
            "Status writes, by kind and outcome (ok, conflict, error)",
            m.status_writes.clone(),
        );
        registry.register(
            "events_suppressed",
            "Warning events not published because the object had one with the same reason lately",
            m.events_suppressed.clone(),
        );
        registry.register_with_unit(
            "clock_skew",
            "This replica's clock minus the API server's, as last measured",
            Unit::Seconds,
            m.clock_skew.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            ..m
        }
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

    /// `outcome` is one of `delivered`, `failed`, `skipped`.
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

    pub fn backend_call(&self, app_id: &str, outcome: &str, seconds: f64) {
        let labels = AppOutcomeLabels {
            app_id: app_id.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.backend_calls.get_or_create(&labels).observe(seconds);
    }

    /// `state`: 0 closed, 1 half-open, 2 open.
    pub fn breaker_state(&self, app_id: &str, state: i64) {
        let labels = AppLabels {
            app_id: app_id.to_owned(),
        };
        self.breaker_state.get_or_create(&labels).set(state);
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
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
        let labels = ReasonLabels {
            reason: reason.to_owned(),
        };
        self.events_suppressed.get_or_create(&labels).inc();
    }

    pub fn set_clock_skew(&self, seconds: f64) {
        self.clock_skew.set(seconds);
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

fn kind_labels(kind: &str) -> KindLabels {
    KindLabels {
        kind: kind.to_owned(),
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
        m.backend_call("billing", "ok", 0.04);
        m.breaker_state("billing", 2);
        m.set_leader(true);
        m.set_pending("Reminder", 3);
        m.status_write("Reminder", "conflict");
        let text = m.encode();
        for family in [
            "recur_reconciles",
            "recur_reconcile_errors",
            "recur_reconcile_duration_seconds",
            "recur_occurrences",
            "recur_firing_lag_seconds",
            "recur_backend_call_duration_seconds",
            "recur_circuit_breaker_state",
            "recur_leader",
            "recur_pending_occurrences",
            "recur_status_writes",
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
                r#"recur_backend_call_duration_seconds_count{app_id="billing",outcome="ok"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"recur_circuit_breaker_state{app_id="billing"}"#),
            Some(2.0)
        );
        assert_eq!(sample(&text, "recur_leader"), Some(1.0));
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
}
