//! `recur-bench cache-memory`: what one RecurringTask costs in recur's watch cache, and which
//! parts of it cost what. No cluster: a task as recur writes it (`--deliveries` delivered
//! occurrences, one history record each) is serialised as the apiserver sends it, then decoded
//! N times (names and UIDs differ) into the typed object the cache holds, each in an `Arc`,
//! with parts of it dropped in each variant; the resident memory that adds is measured from
//! /proc (the allocator's overhead included, as in the operator).
use std::sync::Arc;

use chrono::{TimeDelta, TimeZone, Utc};
use kube::runtime::watcher::Event;
use recur::api::RecurringTask;
use recur::controller::task::{LeftOut, Plan, after_attempt, compile, plan};
use serde_json::json;

use crate::args::CacheMemoryArgs;
use crate::error::{Res, msg};
use crate::procfs::proc_stat;

/// What a variant keeps of each object.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Variant {
    /// Everything but `managedFields`: what the cache held before it left the history out.
    Whole,
    /// Without `status.history` only: what the cache held before the conditions left it.
    NoHistory,
    /// As the cache holds it: without `status.history`, `status.conditions` and the metadata no
    /// reconcile reads, taken out by the operator's own `LeftOut` (the count and the conditions
    /// it keeps included).
    Cached,
    /// Without `status.history`, `status.upcoming` and `status.conditions`.
    NoConditions,
    /// Metadata and spec only.
    NoStatus,
}

const VARIANTS: [Variant; 5] = [
    Variant::Whole,
    Variant::NoHistory,
    Variant::Cached,
    Variant::NoConditions,
    Variant::NoStatus,
];

fn trim(task: RecurringTask, variant: Variant, lengths: &LeftOut) -> RecurringTask {
    let mut task = task;
    match variant {
        Variant::Whole => {}
        Variant::NoHistory => {
            if let Some(status) = task.status.as_mut() {
                status.history = vec![];
            }
        }
        Variant::Cached => {
            let mut event = Event::Apply(task);
            lengths.take_from(&mut event);
            let Event::Apply(cached) = event else {
                unreachable!("take_from keeps the event's kind")
            };
            task = cached;
        }
        Variant::NoConditions => {
            if let Some(status) = task.status.as_mut() {
                status.history = vec![];
                status.upcoming = vec![];
                status.conditions = vec![];
            }
        }
        Variant::NoStatus => task.status = None,
    }
    task
}

/// The sample's UID; each copy gets its own.
const SAMPLE_UID: &str = "3f1c8a2e-5b7d-4c9a-8e21-6d0f4b9a7c13";

/// One task as recur leaves it after `deliveries` hourly occurrences (one history record each,
/// up to the default `historyLimit` of 10), as JSON; with `tools`, the labels and annotations
/// Helm and Argo CD put on each object they manage.
fn sample(deliveries: usize, tools: bool) -> Res<String> {
    let start = Utc
        .with_ymd_and_hms(2026, 12, 5, 0, 0, 0)
        .single()
        .ok_or_else(|| msg("no such instant"))?;
    let uid = SAMPLE_UID;
    let mut task: RecurringTask = serde_json::from_value(json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
        "metadata": {"name": "task-000000", "namespace": "recur-bench", "uid": uid,
            "resourceVersion": "123456789", "generation": 1,
            "creationTimestamp": "2026-12-05T00:00:00Z"},
        "spec": {"userId": "bench-user-23", "title": "Benchmark task 123",
            "schedule": {"every": "1h", "startAt": "2026-12-05T00:10:00Z"}}
    }))?;
    if tools {
        task.metadata.labels = Some(
            [
                ("app.kubernetes.io/managed-by", "Helm"),
                ("app.kubernetes.io/instance", "reminders"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into(),
        );
        task.metadata.annotations = Some(
            [
                ("meta.helm.sh/release-name", "reminders"),
                ("meta.helm.sh/release-namespace", "recur-bench"),
                (
                    "argocd.argoproj.io/tracking-id",
                    "reminders:recur.dev/RecurringTask:recur-bench/task-000000",
                ),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into(),
        );
    }
    let schedule = compile(&task).map_err(|e| msg(format!("schedule: {e}")))?;
    if let Plan::Update { status, .. } = plan(&task, &schedule, uid, start) {
        task.status = Some(*status);
    }
    let delivered = recur::dapr::Outcome::Delivered {
        status: 200,
        backend_id: Some("backend".into()),
        replayed: false,
    };
    for hour in 0..deliveries.max(1) {
        let now = start + TimeDelta::minutes(10) + TimeDelta::hours(hour as i64);
        let Plan::Deliver(p) = plan(&task, &schedule, uid, now) else {
            return Err(msg("the sample task was not due"));
        };
        task.status = Some(after_attempt(&task, &schedule, uid, &p, &delivered, now));
    }
    Ok(serde_json::to_string(&task)?)
}

fn rss_bytes() -> Res<f64> {
    Ok(proc_stat(std::process::id())?.rss_mib * 1024.0 * 1024.0)
}

/// Every variant in a process of its own (memory freed by one would be reused by the next),
/// or only `--variant`.
pub fn run_cache_memory(a: CacheMemoryArgs) -> Res<()> {
    let n = a.tasks.max(1);
    if let Some(variant) = a.variant {
        return measure(n, a.deliveries, a.tool_metadata, variant);
    }
    let text = sample(a.deliveries, a.tool_metadata)?;
    println!(
        "one task as the apiserver sends it (managedFields aside), after {} deliveries: {} bytes of JSON",
        a.deliveries.max(1),
        text.len()
    );
    println!(
        "inline sizes: RecurringTask {} B (metadata {} B, spec {} B, status {} B); a history record {} B, a condition {} B",
        size_of::<RecurringTask>(),
        size_of::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(),
        size_of::<recur::api::RecurringTaskSpec>(),
        size_of::<recur::api::RecurringTaskStatus>(),
        size_of::<recur::api::OccurrenceRecord>(),
        size_of::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>(),
    );
    println!("| kept in the cache | resident memory for {n} tasks | per task |");
    println!("|---|---:|---:|");
    let exe = std::env::current_exe().map_err(|e| msg(format!("finding recur-bench: {e}")))?;
    for variant in VARIANTS {
        let name = clap::ValueEnum::to_possible_value(&variant)
            .map(|v| v.get_name().to_owned())
            .ok_or_else(|| msg("a variant without a name"))?;
        let status = std::process::Command::new(&exe)
            .args([
                "cache-memory",
                "--tasks",
                &n.to_string(),
                "--variant",
                &name,
                "--deliveries",
                &a.deliveries.to_string(),
            ])
            .args(a.tool_metadata.then_some("--tool-metadata"))
            .status()
            .map_err(|e| msg(format!("starting {}: {e}", exe.display())))?;
        if !status.success() {
            return Err(msg(format!("measuring {name}: {status}")));
        }
    }
    Ok(())
}

fn measure(n: usize, deliveries: usize, tools: bool, variant: Variant) -> Res<()> {
    let text = sample(deliveries, tools)?;
    let before = rss_bytes()?;
    let lengths = LeftOut::default();
    let mut held: Vec<Arc<RecurringTask>> = Vec::with_capacity(n);
    for i in 0..n {
        // Names and UIDs differ, as in a cluster (the count is kept by UID).
        let one = text
            .replacen("task-000000", &format!("task-{i:06}"), 1)
            .replace(SAMPLE_UID, &format!("{}{i:012}", &SAMPLE_UID[..24]));
        let task: RecurringTask = serde_json::from_str(&one)?;
        held.push(Arc::new(trim(task, variant, &lengths)));
    }
    let added = rss_bytes()? - before;
    std::hint::black_box((&held, &lengths));
    println!(
        "| {variant:?} | {:.0} MiB | {:.0} B |",
        added / 1024.0 / 1024.0,
        added / n as f64
    );
    Ok(())
}
