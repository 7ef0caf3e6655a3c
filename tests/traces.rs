//! Traces end to end: `recur run` exporting OTLP/HTTP to a real OpenTelemetry Collector
//! (`otelcol-recur`, built from the pinned collector modules), real daprd sidecars exporting
//! theirs to the same collector, and the recording backend and subscribers noting the
//! `traceparent` they receive. One delivery is one trace: recur's reconcile, its deliver and
//! status-write spans, the sidecars' spans, and the backend, all under one trace id, which is the
//! one in `status.lastOccurrence.traceId`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use kube::api::{Api, Patch, PatchParams, PostParams};
use recur::api::RecurringTask;
use serde_json::json;
use support::otelcol::{Collector, Span, SpanKind};
use support::stack::{PUBSUB, Stack};
use support::{TestNamespace, client, kubectl, wait_for_value};

fn real_dapr() -> bool {
    std::env::var("RECUR_REAL_DAPR").as_deref() != Ok("0")
}

fn task(name: &str, every: &str, target: Option<serde_json::Value>) -> RecurringTask {
    let mut spec = json!({
        "userId": "user-7",
        "title": format!("task {name}"),
        "schedule": {"every": every, "startAt": soon().to_rfc3339()},
        "payload": {"n": 1},
    });
    if let Some(target) = target {
        spec["target"] = target;
    }
    serde_json::from_value(json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}

/// A whole second a little ahead, so the first occurrence is not missed while the task is made.
fn soon() -> DateTime<Utc> {
    (Utc::now() + chrono::Duration::seconds(3))
        .with_nanosecond(0)
        .unwrap()
}

/// The key and trace id of the task's last occurrence, once it has both.
async fn last_traced(api: &Api<RecurringTask>, name: &str) -> (String, String) {
    wait_for_value(
        Duration::from_secs(60),
        "an occurrence with its trace id in status",
        || {
            let api = api.clone();
            let name = name.to_string();
            async move {
                let t = api.get(&name).await.ok()?;
                let last = t.status?.last_occurrence?;
                Some((last.idempotency_key, last.trace_id?))
            }
        },
    )
    .await
}

/// The `traceparent` header the backend received with `key`.
async fn backend_traceparent(stack: &Stack, key: &str) -> String {
    stack
        .records()
        .await
        .into_iter()
        .find(|r| r.key.as_deref() == Some(key))
        .expect("the backend got the occurrence")
        .traceparent
        .expect("the backend got a traceparent")
}

/// The trace id of a W3C `traceparent` (`00-<trace>-<span>-<flags>`).
fn trace_of(traceparent: &str) -> &str {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "not a traceparent: {traceparent:?}");
    assert_eq!((parts[0], parts[1].len(), parts[2].len()), ("00", 32, 16));
    parts[1]
}

fn is_hex_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The trace as an indented tree (service, scope, span name, kind, duration), printed for the
/// reader of the test's output (the README shows one).
fn tree(trace: &[Span]) -> String {
    fn walk(trace: &[Span], parent: Option<&str>, depth: usize, out: &mut String) {
        let mut children: Vec<&Span> = trace
            .iter()
            .filter(|s| s.parent_span_id.as_deref() == parent)
            .collect();
        children.sort_by_key(|s| s.start_unix_nano);
        for s in children {
            let ms = s.end_unix_nano.saturating_sub(s.start_unix_nano) as f64 / 1e6;
            let who = match s.scope.as_deref() {
                Some("recur") => "recur".to_string(),
                _ => format!("daprd {}", s.service.as_deref().unwrap_or("?")),
            };
            out.push_str(&format!(
                "{:indent$}{who:<22} {} [{:?}] {ms:.1} ms span {}\n",
                "",
                s.name,
                s.kind,
                s.span_id,
                indent = depth * 2
            ));
            walk(trace, Some(&s.span_id), depth + 1, out);
        }
    }
    let mut out = String::new();
    walk(trace, None, 0, &mut out);
    out
}

/// A collector in `dir` (its start blocks while it waits for the receiver).
async fn start_collector(dir: &std::path::Path) -> Collector {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || Collector::start(&dir))
        .await
        .unwrap()
}

fn by_id<'a>(spans: &'a [Span], id: &str) -> Option<&'a Span> {
    spans.iter().find(|s| s.span_id == id)
}

/// Spans of the trace not made by recur, i.e. by the sidecars.
fn sidecar_spans(spans: &[Span]) -> Vec<&Span> {
    spans
        .iter()
        .filter(|s| s.scope.as_deref() != Some("recur"))
        .collect()
}

/// Checks recur's three spans of one delivery of `key`: a root `reconcile`, under it the
/// client `deliver` span of the key and the client `status_write` span. Returns the deliver
/// span.
fn assert_recur_spans<'a>(spans: &'a [Span], key: &str) -> &'a Span {
    let deliver = spans
        .iter()
        .find(|s| s.name == "deliver" && s.attr("recur.idempotency_key") == Some(key))
        .unwrap_or_else(|| panic!("no deliver span of {key}"));
    assert_eq!(deliver.kind, SpanKind::Client, "{deliver}");
    assert_eq!(deliver.service.as_deref(), Some("recur"), "{deliver}");
    assert_eq!(
        deliver.attr("recur.outcome"),
        Some("delivered"),
        "{deliver}"
    );
    let parent = deliver
        .parent_span_id
        .as_deref()
        .expect("deliver has a parent");
    let reconcile = by_id(spans, parent).expect("the deliver span's parent is in the trace");
    assert_eq!(reconcile.name, "reconcile", "{reconcile}");
    assert_eq!(
        reconcile.parent_span_id, None,
        "reconcile is the root: {reconcile}"
    );
    let write = spans
        .iter()
        .find(|s| s.name == "status_write" && s.parent_span_id.as_deref() == Some(parent))
        .expect("a status_write span under the same reconcile");
    assert_eq!(write.attr("recur.outcome"), Some("ok"), "{write}");
    assert!(
        write.start_unix_nano >= deliver.end_unix_nano,
        "the status is written after the call returns"
    );
    deliver
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_invocation_is_one_trace_from_recur_through_both_sidecars_to_the_backend() {
    if !real_dapr() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let collector = start_collector(dir.path()).await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "traces").await;
    let mut stack = Stack::start_with_tracing(ns.name(), &collector.otlp_hostport()).await;
    stack.start_operator(&[]).await;
    let api: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    api.create(&PostParams::default(), &task("report", "1h", None))
        .await
        .unwrap();

    let (key, trace_id) = last_traced(&api, "report").await;
    assert!(is_hex_id(&trace_id), "{trace_id:?}");
    // The backend joined the trace: the traceparent it got (from its own sidecar) has the id.
    let traceparent = backend_traceparent(&stack, &key).await;
    assert_eq!(trace_of(&traceparent), trace_id);

    // recur's spans and both sidecars' spans reached the collector under that trace id.
    let spans = collector
        .wait_spans(
            Duration::from_secs(60),
            "recur's deliver span and spans of both sidecars",
            |all| {
                let trace: Vec<&Span> = all.iter().filter(|s| s.trace_id == trace_id).collect();
                let services = |svc: &str| {
                    trace.iter().any(|s| {
                        s.service.as_deref() == Some(svc) && s.scope.as_deref() != Some("recur")
                    })
                };
                trace.iter().any(|s| s.name == "deliver")
                    && trace.iter().any(|s| s.name == "status_write")
                    && services("recur")
                    && services("backend")
            },
        )
        .await;
    let trace: Vec<Span> = spans
        .into_iter()
        .filter(|s| s.trace_id == trace_id)
        .collect();
    let deliver = assert_recur_spans(&trace, &key);
    // The operator's sidecar continued recur's deliver span: its server span is a child of it.
    let sidecars = sidecar_spans(&trace);
    let first_hop = sidecars
        .iter()
        .find(|s| s.parent_span_id.as_deref() == Some(deliver.span_id.as_str()))
        .unwrap_or_else(|| panic!("no sidecar span under deliver; sidecar spans: {sidecars:#?}"));
    assert_eq!(first_hop.service.as_deref(), Some("recur"), "{first_hop}");
    // Every sidecar span hangs off a span of the trace: one tree, no orphan.
    for s in &sidecars {
        let parent = s
            .parent_span_id
            .as_deref()
            .expect("a sidecar span has a parent");
        assert!(by_id(&trace, parent).is_some(), "orphan sidecar span {s}");
    }
    // The backend's traceparent names a span of the backend's sidecar.
    let backend_parent = traceparent.split('-').nth(2).unwrap();
    let hop = by_id(&trace, backend_parent).expect("the backend's parent span is in the trace");
    assert_eq!(hop.service.as_deref(), Some("backend"), "{hop}");
    eprintln!(
        "trace {trace_id} of {key}:\n{}backend app: traceparent {traceparent}",
        tree(&trace)
    );

    // A manual run: the same trail, and its Normal event names the trace.
    kubectl([
        "annotate",
        "-n",
        ns.name(),
        "recurringtask",
        "report",
        "recur.dev/run-now=traced",
    ]);
    let (run_key, run_trace) = wait_for_value(
        Duration::from_secs(60),
        "the manual run's record with a trace id",
        || {
            let api = api.clone();
            async move {
                let run = api.get("report").await.ok()?.status?.last_manual_run?;
                Some((run.record.idempotency_key, run.record.trace_id?))
            }
        },
    )
    .await;
    assert_ne!(run_trace, trace_id, "each delivery is a trace of its own");
    let note = wait_for_value(Duration::from_secs(30), "the ManualRun event", || {
        let ns = ns.name().to_string();
        async move {
            let out = kubectl([
                "get",
                "events.events.k8s.io",
                "-n",
                &ns,
                "--field-selector",
                "reason=ManualRun,type=Normal",
                "-o",
                "jsonpath={.items[*].note}",
            ]);
            let notes = String::from_utf8_lossy(&out.stdout).to_string();
            notes.contains("delivered").then_some(notes)
        }
    })
    .await;
    assert!(note.contains(&format!("trace {run_trace}")), "{note}");
    collector
        .wait_spans(
            Duration::from_secs(60),
            "the manual run's deliver span",
            |all| {
                all.iter().any(|s| {
                    s.trace_id == run_trace
                        && s.name == "deliver"
                        && s.attr("recur.idempotency_key") == Some(run_key.as_str())
                })
            },
        )
        .await;
    stack.terminate_operator(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_event_carries_the_trace_to_the_subscribers() {
    if !real_dapr() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let collector = start_collector(dir.path()).await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "traces-pubsub").await;
    let topic = format!("{}.occurrences", ns.name());
    let mut stack =
        Stack::start_with_pubsub_and_tracing(ns.name(), &[&topic], &collector.otlp_hostport())
            .await;
    stack.start_operator(&[]).await;
    let api: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    let target = json!({"pubsub": {"name": PUBSUB, "topic": topic}});
    api.create(&PostParams::default(), &task("ticks", "1h", Some(target)))
        .await
        .unwrap();
    let (key, trace_id) = last_traced(&api, "ticks").await;

    for subscriber in 0..2 {
        let events = stack
            .wait_events(subscriber, Duration::from_secs(60), "the event", |e| {
                e.iter().any(|e| e.id.as_deref() == Some(key.as_str()))
            })
            .await;
        let event = events
            .iter()
            .find(|e| e.id.as_deref() == Some(key.as_str()))
            .unwrap();
        let header = event
            .traceparent_header
            .as_deref()
            .expect("the subscriber got a traceparent header");
        assert_eq!(trace_of(header), trace_id, "subscriber {subscriber}");
        let attribute = event
            .traceparent
            .as_deref()
            .expect("the event has a traceparent attribute");
        assert_eq!(trace_of(attribute), trace_id, "subscriber {subscriber}");
    }
    let spans = collector
        .wait_spans(
            Duration::from_secs(60),
            "recur's spans and the subscribers' sidecars' spans",
            |all| {
                let trace: Vec<&Span> = all.iter().filter(|s| s.trace_id == trace_id).collect();
                trace.iter().any(|s| s.name == "status_write")
                    && ["subscriber-a", "subscriber-b"]
                        .iter()
                        .all(|svc| trace.iter().any(|s| s.service.as_deref() == Some(*svc)))
            },
        )
        .await;
    let trace: Vec<Span> = spans
        .into_iter()
        .filter(|s| s.trace_id == trace_id)
        .collect();
    let deliver = assert_recur_spans(&trace, &key);
    assert_eq!(
        deliver.attr("recur.destination"),
        Some(format!("publish {PUBSUB}/{topic}").as_str())
    );
    stack.terminate_operator(0).await;
}

/// Without a collector nothing is exported, yet each delivery still carries a trace context
/// and its trace id lands in status: a sidecar or backend that traces can still be joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_exporter_deliveries_still_carry_a_trace_context() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "traces-off").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&[]).await;
    let api: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    api.create(&PostParams::default(), &task("quiet", "1h", None))
        .await
        .unwrap();
    let (key, trace_id) = last_traced(&api, "quiet").await;
    assert!(is_hex_id(&trace_id), "{trace_id:?}");
    assert_eq!(trace_of(&backend_traceparent(&stack, &key).await), trace_id);
    // The history keeps it too, and a second task gets a different trace.
    let t = api.get("quiet").await.unwrap();
    assert_eq!(
        t.status.unwrap().history[0].trace_id.as_deref(),
        Some(trace_id.as_str())
    );
    api.patch(
        "quiet",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"recur.dev/run-now": "again"}}})),
    )
    .await
    .unwrap();
    let again = wait_for_value(Duration::from_secs(60), "the manual run's trace id", || {
        let api = api.clone();
        async move {
            api.get("quiet")
                .await
                .ok()?
                .status?
                .last_manual_run?
                .record
                .trace_id
        }
    })
    .await;
    assert_ne!(again, trace_id);
    stack.terminate_operator(0).await;
}
