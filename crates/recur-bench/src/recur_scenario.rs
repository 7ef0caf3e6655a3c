//! The recur side: start and idle of `recur run` over N quiet tasks, the limit (bare status
//! patches, no operator), and the burst of N RecurringTasks due in the same minute.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use futures::StreamExt;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use recur::api::RecurringTask;
use serde::Deserialize;
use serde_json::json;

use crate::apiserver::{api_delta, apiserver_metrics};
use crate::args::RecurArgs;
use crate::cluster::{
    Bench, CONCURRENCY, OneOff, connect, create_all, delete_namespace, fresh_namespace, next_minute,
};
use crate::error::{Res, msg};
use crate::pprof::Profile;
use crate::process::{Operator, Perf, spawn_operator};
use crate::procfs::proc_stat;
use crate::results::{Burst, Idle, Limit, RecurResult, Start, WindowCost, write_json};
use crate::say;
use crate::stats::{lag_stats, per};
use crate::watch::{Watch, close_task_watch};
use crate::window_cost::{ProcMeter, window_cost};

pub fn task_name(i: usize) -> String {
    format!("bench-{i:05}")
}

pub fn task_object(i: usize, cron: &str) -> Res<RecurringTask> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "recur.dev/v1alpha1",
        "kind": "RecurringTask",
        "metadata": {"name": task_name(i)},
        "spec": {
            "userId": format!("bench-user-{}", i % 100),
            "title": format!("Benchmark task {i}"),
            "schedule": {"cron": cron},
        }
    }))?)
}

pub fn pending_due(task: &RecurringTask) -> Option<DateTime<Utc>> {
    task.status
        .as_ref()
        .and_then(|s| s.next_occurrence.as_ref())
        .map(|p| p.due)
}

pub async fn create_tasks(client: &Client, ns: &str, n: usize, cron: &str) -> Res<Duration> {
    let tasks = (0..n)
        .map(|i| task_object(i, cron))
        .collect::<Res<Vec<_>>>()?;
    let took = create_all(&Api::<RecurringTask>::namespaced(client.clone(), ns), tasks).await?;
    say(format!(
        "created {n} RecurringTasks ({cron:?}) in {ns} in {:.1}s",
        took.as_secs_f64()
    ));
    Ok(took)
}

/// The burst's namespace; its tasks stay after the burst for the limit on delivered tasks.
const BURST_NS: &str = "bench-burst";

pub async fn run_recur(a: RecurArgs) -> Res<()> {
    let n = a.common.tasks;
    let Bench {
        client,
        http,
        environment,
    } = connect(&a.common.kubeconfig, &a.op.sidecar, Duration::from_secs(60)).await?;
    let mut result = RecurResult {
        environment,
        workers: a.op.workers,
        ..RecurResult::default()
    };

    // 1. Start and idle: an hourly schedule half an hour away, so nothing fires.
    let ns = "bench-idle";
    fresh_namespace(&client, ns).await?;
    let minute = (Utc::now().minute() + 30) % 60;
    let created = create_tasks(&client, ns, n, &format!("{minute} * * * *")).await?;
    let (start, idle) = start_and_idle(&a, &client, &http, ns).await?;
    say(format!(
        "start: ready after {:.2}s, every task pending after {:.2}s ({} API requests on recur resources); idle {:.0}s: {} requests on recur resources, {:.3} CPU s",
        start.ready_s, start.all_pending_s, start.api.own, idle.window_s, idle.api.own, idle.cpu_s
    ));
    result.start = start;
    result.idle = idle;

    // 2. The limit: one status patch per task, nothing else, no operator running. Its profile
    // lasts as long as the creates took (about the limit's duration; idle after it adds no
    // samples).
    let prof = pprof_start(&a, "limit", created.as_secs().max(3))?;
    let (limit, before, after) = limit(&client, ns, n).await?;
    keep_metrics(&a.op.log_dir, "apiserver-limit-before", &before)?;
    keep_metrics(&a.op.log_dir, "apiserver-limit-after", &after)?;
    pprof_finish(prof).await?;
    say(format!(
        "limit: {} status patches in {:.2}s ({:.0}/s, {} errors)",
        limit.patches, limit.drain_s, limit.per_second, limit.errors
    ));
    result.limit = limit;
    delete_namespace(&client, ns).await?;

    // 3. The burst, a one-off scheduled from the limit just measured.
    let burst = recur_burst(&a, &client, &http, result.limit.per_second).await?;
    result.burst = burst;

    // 4. The limit again, on the burst's tasks as recur left them (the operator stopped): the
    // same bare patches on objects one delivery bigger.
    let (delivered, before, after) = self::limit(&client, BURST_NS, n).await?;
    keep_metrics(&a.op.log_dir, "apiserver-limit-delivered-before", &before)?;
    keep_metrics(&a.op.log_dir, "apiserver-limit-delivered-after", &after)?;
    say(format!(
        "limit on the delivered tasks: {} status patches in {:.2}s ({:.0}/s, {} errors)",
        delivered.patches, delivered.drain_s, delivered.per_second, delivered.errors
    ));
    result.limit_delivered = Some(delivered);
    delete_namespace(&client, BURST_NS).await?;
    write_json(&a.common.out_dir, "recur.json", &result)?;
    Ok(())
}

/// Starts a profile of kube-apiserver named `name` if `--pprof-dir` is set.
fn pprof_start(a: &RecurArgs, name: &str, seconds: u64) -> Res<Option<Profile>> {
    let Some(dir) = &a.pprof_dir else {
        return Ok(None);
    };
    std::fs::create_dir_all(dir).map_err(|e| msg(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join(format!("{name}.pb.gz"));
    say(format!(
        "profiling kube-apiserver for {seconds}s: {}",
        path.display()
    ));
    Ok(Some(Profile::start(
        &a.kubectl,
        &a.common.kubeconfig,
        seconds,
        &path,
    )?))
}

async fn pprof_finish(p: Option<Profile>) -> Res<()> {
    if let Some(p) = p {
        let top = p.finish(25).await?;
        say(format!("kube-apiserver's profile:\n{top}"));
    }
    Ok(())
}

pub async fn start_and_idle(
    a: &RecurArgs,
    client: &Client,
    http: &reqwest::Client,
    ns: &str,
) -> Res<(Start, Idle)> {
    let n = a.common.tasks;
    let api = Api::<RecurringTask>::namespaced(client.clone(), ns);
    let mut watch = Watch::start(
        api,
        |t: &RecurringTask, _| pending_due(t).is_some(),
        move |seen| (seen.len() >= n && seen.values().all(|p| *p)).then_some(()),
    )
    .await?;
    let before = apiserver_metrics(client).await?;
    let t0 = Instant::now();
    let mut op = spawn_operator(&a.op, &a.common.kubeconfig, Some(ns), "operator-idle", &[])?;
    op.wait_ready(http).await?;
    let ready_s = t0.elapsed().as_secs_f64();
    let timeout = Duration::from_secs(120) + Duration::from_millis(50) * n as u32;
    let (at, ()) = watch
        .result(timeout, "every task to show status.nextOccurrence")
        .await?;
    let after = apiserver_metrics(client).await?;
    let start = Start {
        tasks: n,
        ready_s,
        all_pending_s: at.duration_since(t0).as_secs_f64(),
        api: api_delta(&before, &after, &["recurringtasks", "reminders"]),
    };
    close_task_watch(client, watch).await?;

    let window = Duration::from_secs(a.idle);
    say(format!("idle window of {}s", a.idle));
    let before = apiserver_metrics(client).await?;
    let cpu0 = proc_stat(op.pid)?;
    // The window itself is what is measured: nothing to wait for.
    tokio::time::sleep(window).await;
    let cpu1 = proc_stat(op.pid)?;
    let after = apiserver_metrics(client).await?;
    let idle = Idle {
        window_s: window.as_secs_f64(),
        api: api_delta(&before, &after, &["recurringtasks", "reminders"]),
        cpu_s: cpu1.cpu_s - cpu0.cpu_s,
        rss_mib: cpu1.rss_mib,
    };
    op.stop().await;
    Ok((start, idle))
}

/// Writes a `/metrics` text to `dir/name.metrics`.
fn keep_metrics(dir: &std::path::Path, name: &str, text: &str) -> Res<()> {
    let path = dir.join(format!("{name}.metrics"));
    std::fs::write(&path, text).map_err(|e| msg(format!("writing {}: {e}", path.display())))
}

/// The limit, and the apiserver's `/metrics` before and after it.
pub async fn limit(client: &Client, ns: &str, n: usize) -> Res<(Limit, String, String)> {
    let api = Api::<RecurringTask>::namespaced(client.clone(), ns);
    let nominal = next_minute(Utc::now()) + chrono::Duration::days(1);
    let at = nominal.to_rfc3339_opts(SecondsFormat::Secs, true);
    let before = apiserver_metrics(client).await?;
    let meter = ProcMeter::start()?;
    let started = Instant::now();
    let results: Vec<Result<RecurringTask, kube::Error>> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let at = at.clone();
            async move {
                let patch = json!({"status": {"nextOccurrence": {
                    "nominal": at, "due": at,
                    "idempotencyKey": format!("rt-limit-{i}-{at}"), "attempts": 0
                }}});
                api.patch_status(
                    &task_name(i),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let drain = started.elapsed().as_secs_f64();
    let proc = meter.stop()?;
    let after = apiserver_metrics(client).await?;
    let errors = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        say(format!("limit: {errors} patches failed; the first: {e}"));
    }
    let limit = Limit {
        patches: n,
        concurrency: CONCURRENCY,
        drain_s: drain,
        per_second: per(n as f64, drain),
        errors,
        api: api_delta(&before, &after, &["recurringtasks", "reminders"]),
        cost: window_cost((&before, &after), proc, None),
    };
    Ok((limit, before, after))
}

/// One request the recording backend received (the fields the benchmark reads).
#[derive(Deserialize)]
pub struct Record {
    path: String,
    accepted: bool,
    received_at: String,
    due_at: Option<String>,
    pub lag_ms: Option<i64>,
    /// The task's `userId` (the `X-User-Id` header).
    pub user_id: Option<String>,
}

impl Record {
    /// A task's occurrence of the minute `due`, accepted by the backend (not a replay).
    pub fn delivers(&self, due: DateTime<Utc>) -> bool {
        self.accepted
            && self.path == "/api/tasks"
            && self
                .due_at
                .as_deref()
                .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
                .is_some_and(|d| d == due)
    }

    /// The due instant of an accepted delivery of a task's occurrence (not a replay).
    pub fn accepted_due(&self) -> Option<DateTime<Utc>> {
        if !self.accepted || self.path != "/api/tasks" {
            return None;
        }
        self.due_at
            .as_deref()
            .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
            .map(|d| d.with_timezone(&Utc))
    }

    pub fn received(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.received_at)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// The backend's records of the `want` occurrences due at `due`, once the operator counts them
/// delivered (after their status writes) and the backend at `records_url` holds them all;
/// `delivered0` is the operator's count before the burst, `what` names the burst in the error.
pub async fn await_burst(
    op: &Operator,
    http: &reqwest::Client,
    records_url: &str,
    due: DateTime<Utc>,
    want: usize,
    delivered0: f64,
    what: &str,
) -> Res<Vec<Record>> {
    let deadline = Instant::now()
        + (due - Utc::now()).to_std().unwrap_or_default()
        + Duration::from_secs(180)
        + Duration::from_millis(100) * want as u32;
    loop {
        let delivered = op.delivered(http).await? - delivered0;
        if delivered >= want as f64 {
            let records: Vec<Record> = http.get(records_url).send().await?.json().await?;
            let of_burst: Vec<Record> = records.into_iter().filter(|r| r.delivers(due)).collect();
            if of_burst.len() >= want {
                return Ok(of_burst);
            }
        }
        if Instant::now() >= deadline {
            return Err(msg(format!(
                "{what} did not finish: {delivered} of {want} occurrences delivered; see {}",
                op.log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The bare-patch rate of this apiserver, measured on a sample of `k` fresh RecurringTasks in a
/// namespace of its own (for the scenarios that do not measure the limit themselves).
pub async fn probe_rate(client: &Client, k: usize) -> Res<f64> {
    let ns = "bench-probe";
    fresh_namespace(client, ns).await?;
    let minute = (Utc::now().minute() + 30) % 60;
    create_tasks(client, ns, k, &format!("{minute} * * * *")).await?;
    let (probe, _, _) = limit(client, ns, k).await?;
    delete_namespace(client, ns).await?;
    say(format!(
        "probe: {k} bare status patches at {:.0}/s",
        probe.per_second
    ));
    Ok(probe.per_second)
}

/// Waits until every one of `n` tasks seen by `watch` is pending for `one.due`, no later than
/// [`crate::cluster::MARGIN`] before it, then until that moment.
pub async fn until_all_pending<R: Send + 'static>(
    client: &Client,
    mut watch: Watch<R>,
    one: &OneOff,
    what: &str,
) -> Res<()> {
    let waited = watch.result(one.setup_left(), what).await;
    close_task_watch(client, watch).await?;
    waited.map_err(|e| {
        msg(format!(
            "{e}: the setup did not fit in its lead before {} (a slower moment than the limit measured?)",
            one.due.format("%H:%M:%S")
        ))
    })?;
    say(format!("{what}: done"));
    one.until_snapshot().await
}

pub async fn recur_burst(
    a: &RecurArgs,
    client: &Client,
    http: &reqwest::Client,
    limit_per_second: f64,
) -> Res<Burst> {
    let n = a.common.tasks;
    let ns = BURST_NS;
    fresh_namespace(client, ns).await?;
    // A create and a first status write per task before the burst instant.
    let one = OneOff::for_writes(2 * n, limit_per_second);
    create_tasks(client, ns, n, &one.cron).await?;
    let api = Api::<RecurringTask>::namespaced(client.clone(), ns);
    let due = one.due;
    let watch = Watch::start(
        api,
        |t: &RecurringTask, _| pending_due(t),
        move |seen: &HashMap<String, Option<DateTime<Utc>>>| {
            (seen.len() >= n && seen.values().all(|d| *d == Some(due))).then_some(())
        },
    )
    .await?;
    let mut op = spawn_operator(&a.op, &a.common.kubeconfig, Some(ns), "operator-burst", &[])?;
    op.wait_ready(http).await?;
    until_all_pending(
        client,
        watch,
        &one,
        &format!("every task to be pending for {}", due.format("%H:%M:%S")),
    )
    .await?;

    let clear = format!("{}/_dev/records", a.op.backend_url);
    http.delete(&clear).send().await?.error_for_status()?;
    let before = apiserver_metrics(client).await?;
    let stat0 = proc_stat(op.pid)?;
    let delivered0 = op.delivered(http).await?;
    let op_before = op.metrics(http).await?;
    let writes0 = op.status_writes_ok(http).await?;
    let perf = match &a.perf_out {
        Some(path) => Some(Perf::start(path)?),
        None => None,
    };
    // From the snapshot (MARGIN before the instant) to about the end of the drain.
    let secs = crate::cluster::MARGIN.as_secs_f64() + 2.0 * n as f64 / limit_per_second.max(1.0);
    let prof = pprof_start(a, "burst", secs.ceil().max(5.0) as u64)?;
    if Utc::now() >= due {
        return Err(msg(
            "the snapshot before the burst was taken after the burst began; try again",
        ));
    }
    // /proc from the instant on, so that the machine's busy share is the drain's alone.
    if let Ok(wait) = (due - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
    let meter = ProcMeter::start()?;
    let records = await_burst(&op, http, &clear, due, n, delivered0, "the burst").await?;
    // The last deliveries' status writes are still in flight: the CPU window ends with them.
    crate::cluster::wait_until(
        Duration::from_secs(60),
        "recur's status writes of the burst",
        || async {
            op.status_writes_ok(http)
                .await
                .is_ok_and(|w| w >= writes0 + n as f64)
        },
    )
    .await?;
    let proc = meter.stop()?;
    let stat1 = proc_stat(op.pid)?;
    let delivered = op.delivered(http).await? - delivered0;
    let op_after = op.metrics(http).await?;
    let after = apiserver_metrics(client).await?;
    // Kept whole: the histograms' buckets say more than the report's means.
    for (name, text) in [
        ("operator-burst-before", &op_before),
        ("operator-burst-after", &op_after),
        ("apiserver-burst-before", &before),
        ("apiserver-burst-after", &after),
    ] {
        keep_metrics(&a.op.log_dir, name, text)?;
    }
    if let Some(perf) = perf {
        perf.stop().await?;
    }
    pprof_finish(prof).await?;
    op.stop().await;

    let lags: Vec<i64> = records.iter().filter_map(|r| r.lag_ms).collect();
    let last = records
        .iter()
        .filter_map(Record::received)
        .max()
        .unwrap_or(due);
    let drain_s = (last - due).num_milliseconds() as f64 / 1000.0;
    let api = api_delta(&before, &after, &["recurringtasks", "reminders"]);
    let cpu_s = stat1.cpu_s - stat0.cpu_s;
    let mut notes = vec![];
    if delivered > n as f64 {
        notes.push(format!(
            "{} occurrences besides the burst's were delivered inside the window",
            delivered - n as f64
        ));
    }
    let burst = Burst {
        system: format!("recur (--workers {})", a.op.workers),
        tasks: n,
        due: Some(due),
        schedule: one.cron.clone(),
        occurrences: records.len(),
        lag: lag_stats(&lags),
        lags_ms: lags,
        drain_s,
        per_second: per(records.len() as f64, drain_s),
        occurrences_in_window: delivered,
        api_per_occurrence_own: per(api.own, delivered),
        api_per_occurrence_all: per(api.all, delivered),
        api,
        peak_rss_mib: stat1.hwm_mib,
        cpu_s,
        cpu_s_per_1000: per(cpu_s * 1000.0, delivered),
        cost: WindowCost {
            from_instant: true,
            ..window_cost((&before, &after), proc, Some((&op_before, &op_after)))
        },
        notes,
    };
    say(format!(
        "recur burst: lag p50 {} ms, p99 {} ms, max {} ms; drained in {:.2}s ({:.0}/s); {:.2} API requests per occurrence on recur resources ({:.2} all); peak RSS {:.0} MiB; {:.2} CPU s per 1000",
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
    Ok(burst)
}
