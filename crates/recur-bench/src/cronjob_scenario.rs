//! The CronJob side: the same burst as N CronJobs, handled by kube-controller-manager.
use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::apiserver::{api_delta, apiserver_metrics};
use crate::args::CronArgs;
use crate::cluster::{
    OneOff, create_all, delete_namespace, fresh_namespace, kube_client, wait_until,
};
use crate::error::Res;
use crate::procfs::proc_stat;
use crate::recur_scenario::probe_rate;
use crate::results::{Burst, CronResult, write_json};
use crate::say;
use crate::stats::{lag_stats, per};
use crate::watch::Watch;

/// The annotation the CronJob controller puts on each Job it creates.
pub const SCHEDULED_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

pub fn cronjob_object(i: usize, cron: &str) -> Res<CronJob> {
    // Suspended Jobs: no kubelet runs pods here, and the job controller then makes none, so
    // only the CronJob controller's work is measured. The schedule is recur's one-off daily
    // cron: the same instant and the same semantics for both systems (with `* * * * *` a
    // CronJob the controller reaches more than a minute late gets the next minute's Job
    // instead, and the N creates would have to fit in the minute before). Forbid: the (never
    // finishing) Job of the burst keeps a later run from adding more.
    Ok(serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": format!("bench-{i:05}")},
        "spec": {
            "schedule": cron,
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {"spec": {
                "suspend": true,
                "template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "task", "image": "registry.invalid/never-pulled:1"}]
                }}
            }}
        }
    }))?)
}

/// What the benchmark keeps of each Job: when it was first seen, its creation and its schedule.
#[derive(Clone, Copy)]
pub struct SeenJob {
    observed: DateTime<Utc>,
    created: Option<DateTime<Utc>>,
    scheduled: Option<DateTime<Utc>>,
}

pub fn seen_job(job: &Job, before: Option<&SeenJob>) -> SeenJob {
    let scheduled = job
        .annotations()
        .get(SCHEDULED_ANNOTATION)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc));
    SeenJob {
        observed: before.map_or_else(Utc::now, |b| b.observed),
        created: job.creation_timestamp().map(|t| {
            DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
                .unwrap_or_default()
        }),
        scheduled,
    }
}

pub async fn run_cronjob(a: CronArgs) -> Res<()> {
    let n = a.common.tasks;
    let client = kube_client(&a.common.kubeconfig).await?;
    let ns = format!("bench-cron-{}", a.label);
    fresh_namespace(&client, &ns).await?;
    // The ServiceAccount controller makes `default` in a new namespace: kcm is working.
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &ns);
    wait_until(
        Duration::from_secs(120),
        "kube-controller-manager to create the default ServiceAccount",
        || {
            let sa = sa.clone();
            async move { matches!(sa.get_opt("default").await, Ok(Some(_))) }
        },
    )
    .await?;
    let jobs = Api::<Job>::namespaced(client.clone(), &ns);
    let mut watch = Watch::start(jobs, seen_job, move |seen: &HashMap<String, SeenJob>| {
        (seen.len() >= n).then(|| seen.values().copied().collect::<Vec<_>>())
    })
    .await?;
    // Every CronJob must exist before the burst instant: N creates at a third of the bare-patch
    // rate (recur's limit of the same run, or a probe), plus 30 s.
    let rate = match a.writes_per_second {
        Some(r) => r,
        None => probe_rate(&client, 500.min(n)).await?,
    };
    let one = OneOff::for_writes(n, rate);
    let due = one.due;
    let cronjobs = (0..n)
        .map(|i| cronjob_object(i, &one.cron))
        .collect::<Res<Vec<_>>>()?;
    let api = Api::<CronJob>::namespaced(client.clone(), &ns);
    let took = create_all(&api, cronjobs).await?;
    say(format!(
        "created {n} CronJobs ({:?}) in {ns} in {:.1}s, all due at {}",
        one.cron,
        took.as_secs_f64(),
        due.format("%H:%M:%S")
    ));
    if let Err(e) = one.until_snapshot().await {
        cleanup_cronjobs(&client, &ns).await?;
        return Err(e);
    }
    let before = apiserver_metrics(&client).await?;
    let stat0 = proc_stat(a.kcm_pid)?;
    let timeout = (due - Utc::now()).to_std().unwrap_or_default()
        + Duration::from_secs(180)
        + Duration::from_millis(300) * n as u32;
    let waited = watch
        .result(timeout, &format!("{n} Jobs from the CronJob controller"))
        .await;
    let stat1 = proc_stat(a.kcm_pid)?;
    let after = apiserver_metrics(&client).await?;
    // Closed after the snapshot: this watch is not counted in the window.
    watch.close().await;
    cleanup_cronjobs(&client, &ns).await?;
    let (_, jobs) = waited?;

    let ms =
        |from: DateTime<Utc>, to: Option<DateTime<Utc>>| to.map(|t| (t - from).num_milliseconds());
    let lags: Vec<i64> = jobs
        .iter()
        .filter_map(|j| j.scheduled.and_then(|s| ms(s, j.created)))
        .collect();
    let observed_lags: Vec<i64> = jobs
        .iter()
        .filter_map(|j| j.scheduled.and_then(|s| ms(s, Some(j.observed))))
        .collect();
    let skipped = jobs.iter().filter(|j| j.scheduled != Some(due)).count();
    let last_created = jobs.iter().filter_map(|j| j.created).max().unwrap_or(due);
    let last_observed = jobs.iter().map(|j| j.observed).max().unwrap_or(due);
    let drain_s = (last_created - due).num_milliseconds() as f64 / 1000.0;
    let observed_drain_s = (last_observed - due).num_milliseconds() as f64 / 1000.0;
    let api = api_delta(&before, &after, &["cronjobs", "jobs"]);
    let cpu_s = stat1.cpu_s - stat0.cpu_s;
    let occurrences = jobs.len() as f64;
    let mut notes = vec![
        "lag and drain from Job metadata.creationTimestamp (whole seconds, rounded down) against the annotation batch.kubernetes.io/cronjob-scheduled-timestamp".to_owned(),
        "RSS and CPU are the whole kube-controller-manager process (the job controller handles the new Jobs too)".to_owned(),
    ];
    if skipped > 0 {
        notes.push(format!(
            "{skipped} CronJobs got their Job for a later minute: the controller skipped the burst minute for them"
        ));
    }
    let burst = Burst {
        system: format!(
            "CronJob controller, kube-controller-manager {}",
            a.kcm_flags
        ),
        tasks: n,
        due: Some(due),
        schedule: one.cron.clone(),
        occurrences: jobs.len(),
        lag: lag_stats(&lags),
        lags_ms: lags,
        drain_s,
        per_second: per(occurrences, drain_s),
        occurrences_in_window: occurrences,
        api_per_occurrence_own: per(api.own, occurrences),
        api_per_occurrence_all: per(api.all, occurrences),
        api,
        peak_rss_mib: stat1.hwm_mib,
        cpu_s,
        cpu_s_per_1000: per(cpu_s * 1000.0, occurrences),
        cost: Default::default(),
        notes,
    };
    say(format!(
        "CronJob burst ({}): lag p50 {} ms, p99 {} ms, max {} ms; drained in {:.1}s ({:.1}/s); {skipped} skipped; {:.2} API requests per occurrence on cronjobs/jobs ({:.2} all); kcm peak RSS {:.0} MiB; {:.2} CPU s per 1000",
        a.label,
        burst.lag.p50_ms,
        burst.lag.p99_ms,
        burst.lag.max_ms,
        burst.drain_s,
        burst.per_second,
        burst.api_per_occurrence_own,
        burst.api_per_occurrence_all,
        burst.peak_rss_mib,
        burst.cpu_s_per_1000
    ));
    let result = CronResult {
        label: a.label.clone(),
        kcm_flags: a.kcm_flags.clone(),
        burst,
        skipped,
        observed_lag: lag_stats(&observed_lags),
        observed_lags_ms: observed_lags,
        observed_drain_s,
    };
    write_json(
        &a.common.out_dir,
        &format!("cronjob-{}.json", a.label),
        &result,
    )?;
    delete_namespace(&client, &ns).await?;
    Ok(())
}

/// Deletes the CronJobs at once (they would go on creating Jobs every minute); the namespace
/// takes the Jobs with it.
pub async fn cleanup_cronjobs(client: &Client, ns: &str) -> Res<()> {
    let api = Api::<CronJob>::namespaced(client.clone(), ns);
    api.delete_collection(&DeleteParams::background(), &ListParams::default())
        .await?;
    Ok(())
}
