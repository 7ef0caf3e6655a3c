//! The spread scenario (`recur-bench spread`, `scripts/bench.sh --spread`): N RecurringTasks on
//! `every: 1h` (or `--period`) whose occurrences are spread uniformly over the period, task i at
//! `first_due + floor(i × period / N)` seconds (its `startAt`), so N/period fall due each second
//! (about 28/s for 100,000 hourly). The tasks are created before recur starts (setup, not
//! measured).
//! Then, in this order:
//!
//! 1. cold start: `recur run` started with all N present and none with a status; the time until
//!    its N status writes are answered (its `recur_status_writes_total{outcome="ok"}`), then
//!    checked: every task shows `status.nextOccurrence`;
//! 2. restart: that operator stopped and a new one started with every status already correct;
//!    the time to `/health/ready`, to every task reconciled once, and the writes meanwhile;
//!    before it, a bare client lists the N tasks (the floor under ready);
//! 3. idle: from then until shortly before `first_due` (nothing is due before it): API
//!    requests, CPU and RSS;
//! 4. steady state: the firing lag of every occurrence due in `[first_due, first_due +
//!    window)`, from the recording backend's records;
//! 5. the minimal client: the same N status writes again, the operator stopped: every status
//!    the cold start wrote is read back (not measured), removed (not measured), then written by
//!    a bare client, one merge patch per task, 64 in flight; the cold start is compared with it.
//!
//! Every phase happens before the first occurrence but the steady state, so the cold start, the
//! restart and the idle window see no occurrence fall due: `first_due` is set from a probe of
//! the apiserver's write rate, with room for the creates and the cold start's writes at half
//! that rate, the restart and `--idle`. If the setup overruns it anyway, the deliveries that
//! happened are reported with the phase they fell into.
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use clap::ValueEnum;
use futures::StreamExt;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use recur::api::{RecurringTask, RecurringTaskStatus};
use serde_json::json;

use crate::apiserver::{api_delta, apiserver_metrics};
use crate::args::SpreadArgs;
use crate::cluster::{
    Bench, CONCURRENCY, MARGIN, connect, create_all, delete_namespace_within, fresh_namespace,
};
use crate::error::{Res, msg};
use crate::process::{Operator, spawn_operator};
use crate::procfs::proc_stat;
use crate::recur_scenario::{Record, probe_rate, task_name};
use crate::report::requests_on_own;
use crate::results::{
    ApiDelta, ComparedRestart, Limit, SpreadCold, SpreadIdle, SpreadRestart, SpreadResult,
    SpreadSteady, write_json,
};
use crate::say;
use crate::spread_report::spread_markdown;
use crate::stats::{lag_stats, per};

/// The namespace of the spread tasks.
pub const NS: &str = "bench-spread";
/// The resources that are recur's (requests on them are the operator's).
pub const OWN: &[&str] = &["recurringtasks", "reminders"];
/// Tasks of the write-rate probe that sets the first occurrence.
const PROBE: usize = 500;
/// Task `i` of `n`'s offset in the period: `floor(i × period / n)` seconds, so that the `n`
/// occurrences are spread uniformly (`n / period` per second; for `n` ≤ period at most one per
/// second).
pub fn offset_secs(i: usize, n: usize, period: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    (i as u128 * u128::from(period) / n as u128) as u64
}

/// How many of the `n` tasks fall due in the first `window` seconds of the period: those with
/// `offset_secs < window`, i.e. `i < window × n / period`.
pub fn due_in_window(n: usize, window: u64, period: u64) -> usize {
    let w = window.min(period) as u128;
    (w * n as u128)
        .div_ceil(u128::from(period.max(1)))
        .min(n as u128) as usize
}

/// How far ahead the first occurrence is: 30 s, plus the creates and the cold start's first
/// status writes (`2n`) at half of `per_second` (the probed bare-patch rate), plus each of the
/// `restarts` (30 s and 1 ms per task for its list and reconciles), plus the idle window.
pub fn lead(n: usize, per_second: f64, restarts: usize, idle: Duration) -> Duration {
    let writes = 2.0 * n as f64;
    let restart = 30.0 + n as f64 / 1000.0;
    let secs = 30.0 + 2.0 * writes / per_second.max(1.0) + restarts as f64 * restart;
    Duration::from_secs_f64(secs) + idle
}

/// Whether a request's verb changes something.
pub fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "POST" | "PUT" | "PATCH" | "DELETE" | "DELETECOLLECTION" | "APPLY"
    )
}

/// Write requests on recur's resources in `api`.
pub fn writes(api: &ApiDelta) -> f64 {
    requests_on_own(api, is_write)
}

/// Task `i` of the spread: `every: <period>` from `start_at`.
pub fn task(i: usize, start_at: DateTime<Utc>, period: u64) -> Res<RecurringTask> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "recur.dev/v1alpha1",
        "kind": "RecurringTask",
        "metadata": {"name": task_name(i)},
        "spec": {
            "userId": format!("bench-user-{}", i % 100),
            "title": format!("Benchmark task {i}"),
            "schedule": {
                "every": every(period),
                "startAt": start_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            },
        }
    }))?)
}

/// The tasks' `every`: whole minutes or hours where they are, else seconds.
fn every(period: u64) -> String {
    match period {
        p if p % 3600 == 0 => format!("{}h", p / 3600),
        p if p % 60 == 0 => format!("{}m", p / 60),
        p => format!("{p}s"),
    }
}

/// How long to wait for a namespace of `n` tasks to go.
pub fn delete_timeout(n: usize) -> Duration {
    Duration::from_secs(600) + Duration::from_millis(20) * n as u32
}

pub async fn run_spread(a: SpreadArgs) -> Res<()> {
    let n = a.common.tasks;
    if n == 0 {
        return Err(msg("--tasks must be at least 1"));
    }
    if a.window > a.period {
        return Err(msg(
            "--window must not exceed --period: each task falls due once in the window",
        ));
    }
    let Bench {
        client,
        http,
        environment,
    } = connect(
        &a.common.kubeconfig,
        &a.op.sidecar,
        Duration::from_secs(120),
    )
    .await?;
    let mut r = SpreadResult {
        environment,
        workers: a.op.workers,
        tasks: n,
        period_s: a.period,
        ..SpreadResult::default()
    };

    // Setup: the probe, the first occurrence, the creates.
    r.probe_per_second = probe_rate(&client, PROBE.min(n)).await?;
    delete_namespace_within(&client, NS, delete_timeout(n)).await?;
    fresh_namespace(&client, NS).await?;
    let restarts = 1 + a.compare_lists.len();
    let lead = lead(n, r.probe_per_second, restarts, Duration::from_secs(a.idle));
    let first_due = crate::cluster::next_second(
        Utc::now()
            + chrono::Duration::from_std(lead).unwrap_or_else(|_| chrono::Duration::hours(1)),
    );
    r.first_due = Some(first_due);
    r.schedule = format!(
        "every: {}, startAt: {} + floor(i × {} / {n}) s for task i",
        every(a.period),
        first_due.to_rfc3339_opts(SecondsFormat::Secs, true),
        a.period
    );
    say(format!(
        "first occurrence at {} ({:.0}s ahead: {n} creates and {n} first writes at half of {:.0}/s, {restarts} restart(s), and an idle window of at least {}s)",
        first_due.format("%H:%M:%S"),
        lead.as_secs_f64(),
        r.probe_per_second,
        a.idle
    ));
    let tasks = (0..n)
        .map(|i| {
            task(
                i,
                first_due + chrono::Duration::seconds(offset_secs(i, n, a.period) as i64),
                a.period,
            )
        })
        .collect::<Res<Vec<_>>>()?;
    let api = Api::<RecurringTask>::namespaced(client.clone(), NS);
    let took = create_all(&api, tasks).await?;
    r.create_s = took.as_secs_f64();
    say(format!(
        "created {n} RecurringTasks (every {}, spread over it) in {NS} in {:.1}s",
        every(a.period),
        r.create_s
    ));

    // 1. Cold start.
    let (cold, op) = cold_start(&a, &client, &http).await?;
    say(format!(
        "cold start: ready after {:.2}s, every nextOccurrence written after {:.2}s ({} writes on recur resources, {} delivered); peak RSS {:.0} MiB",
        cold.ready_s, cold.all_pending_s, cold.writes, cold.delivered, cold.peak_rss_mib
    ));
    r.cold = cold;
    op.stop().await;

    // 2a. The restarts of --compare-lists, each after a bare list, each stopped again.
    for (k, form) in a.compare_lists.iter().enumerate() {
        let form = form
            .to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default();
        let (_, bare_list_s) = bare_list(&client).await?;
        let (restart, op) = restart(
            &a,
            &client,
            &http,
            bare_list_s,
            &["--initial-list".to_owned(), form.clone()],
            &format!("operator-spread-restart-{k}-{form}"),
        )
        .await?;
        say(format!(
            "restart {k} (--initial-list {form}; bare list {bare_list_s:.2}s): ready after {:.2}s, every task reconciled after {:.2}s; {} writes until settled",
            restart.ready_s, restart.settled_s, restart.writes_until_settled
        ));
        op.stop().await;
        r.compared.push(ComparedRestart {
            initial_list: form,
            restart,
        });
    }
    // What the cold start wrote, for the minimal client to write again. Timed as the floor
    // under the restart's readiness: the same list with no operator running.
    let (written, bare_list_s) = bare_list(&client).await?;
    say(format!(
        "a bare client listed the {n} tasks (500 a page, decoded) in {bare_list_s:.2}s"
    ));
    let pending = written
        .iter()
        .filter(|(_, st)| st.next_occurrence.is_some())
        .count();
    if pending < n {
        r.notes.push(format!(
            "after the cold start's {n} status writes, {pending} of {n} tasks showed a nextOccurrence"
        ));
    }

    // 2. Restart, 3. idle.
    let (restart, mut op) = restart(
        &a,
        &client,
        &http,
        bare_list_s,
        &[],
        "operator-spread-restart",
    )
    .await?;
    say(format!(
        "restart: ready after {:.2}s, every task reconciled after {:.2}s; {} writes until ready, {} until settled",
        restart.ready_s,
        restart.settled_s,
        restart.writes_until_ready,
        restart.writes_until_settled
    ));
    r.restart = restart;
    let idle = idle(&a, &client, &http, &op, first_due, &mut r.notes).await?;
    say(format!(
        "idle {:.0}s: {} writes, {:.1} requests/min on recur resources ({:.1}/min in all), {:.3} CPU s, RSS {:.0} MiB",
        idle.window_s,
        idle.writes,
        idle.own_per_minute,
        idle.all_per_minute,
        idle.cpu_s,
        idle.rss_mib
    ));
    r.idle = idle;

    // 4. Steady state.
    let steady = steady(&a, &client, &http, &mut op, first_due, &mut r.notes).await?;
    say(format!(
        "steady state {:.0}s: {} of {} occurrences, lag p50 {} ms, p99 {} ms, max {} ms; {:.2} requests per occurrence on recur resources; {:.2} CPU s per 1000; peak RSS {:.0} MiB",
        steady.window_s,
        steady.occurrences,
        steady.expected,
        steady.lag.p50_ms,
        steady.lag.p99_ms,
        steady.lag.max_ms,
        steady.api_per_occurrence_own,
        steady.cpu_s_per_1000,
        steady.peak_rss_mib
    ));
    r.steady = steady;
    op.stop().await;

    // 5. The minimal client: the cold start's own status writes again, onto the same tasks
    // as the cold start found them, without a status (removed first, not measured).
    let spread = Api::<RecurringTask>::namespaced(client.clone(), NS);
    let cleared = clear_statuses(&spread, (0..n).map(task_name).collect()).await?;
    let left = count_with_status(&spread).await?;
    say(format!(
        "removed the status of {n} tasks in {:.1}s (setup of the minimal client); {left} still have one",
        cleared.as_secs_f64()
    ));
    if left > 0 {
        r.notes.push(format!(
            "{left} tasks still had a status when the minimal client started"
        ));
    }
    let minimal = write_statuses(&client, &written).await?;
    say(format!(
        "minimal client: {} status patches in {:.2}s ({:.0}/s, {} errors)",
        minimal.patches, minimal.drain_s, minimal.per_second, minimal.errors
    ));
    r.minimal = minimal;
    if r.cold.delivered > 0.0 {
        r.notes.push(format!(
            "{} occurrences were delivered during the cold start: the setup overran the first occurrence, and the cold start's figures include those deliveries",
            r.cold.delivered
        ));
    }
    if r.restart.delivered > 0.0 {
        r.notes.push(format!(
            "{} occurrences were delivered during the restart: its writes include theirs",
            r.restart.delivered
        ));
    }

    let compared = r
        .compared
        .iter()
        .map(|c| c.initial_list.as_str())
        .collect::<Vec<_>>()
        .join(",");
    r.command = format!(
        "recur-bench spread --tasks {n} --window {} --idle {}{}{}",
        a.window,
        a.idle,
        match a.period {
            3600 => String::new(),
            p => format!(" --period {p}"),
        },
        match compared.as_str() {
            "" => String::new(),
            c => format!(" --compare-lists {c}"),
        }
    );
    write_json(&a.common.out_dir, "spread.json", &r)?;
    write_spread_md(&a.common.out_dir, &r)?;
    delete_namespace_within(&client, NS, delete_timeout(n)).await?;
    Ok(())
}

/// The floor under a restart's readiness: the spread tasks' statuses listed by a bare client
/// with no operator running, and the seconds that took.
async fn bare_list(client: &Client) -> Res<(Vec<(String, RecurringTaskStatus)>, f64)> {
    let listed = Instant::now();
    let written = statuses(&Api::namespaced(client.clone(), NS), None).await?;
    Ok((written, listed.elapsed().as_secs_f64()))
}

/// The status of every task in `api` (matching `selector`, if any) as it is now, by name
/// (listed 500 at a time).
pub async fn statuses(
    api: &Api<RecurringTask>,
    selector: Option<&str>,
) -> Res<Vec<(String, RecurringTaskStatus)>> {
    let mut out = vec![];
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(500);
        if let Some(selector) = selector {
            lp = lp.labels(selector);
        }
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await?;
        out.extend(
            page.items
                .into_iter()
                .filter_map(|t| Some((t.metadata.name?, t.status?))),
        );
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(out);
        }
    }
}

/// The minimal client: one JSON merge patch per task setting `status` to `written`'s,
/// `CONCURRENCY` in flight, as fast as the apiserver takes them.
async fn write_statuses(client: &Client, written: &[(String, RecurringTaskStatus)]) -> Res<Limit> {
    let api = Api::<RecurringTask>::namespaced(client.clone(), NS);
    let before = apiserver_metrics(client).await?;
    let started = Instant::now();
    let failed: Vec<kube::Error> = futures::stream::iter(written)
        .map(|(name, status)| {
            let api = api.clone();
            async move {
                api.patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": status })),
                )
                .await
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|r| async move { r.err() })
        .collect()
        .await;
    let drain_s = started.elapsed().as_secs_f64();
    let after = apiserver_metrics(client).await?;
    if let Some(first) = failed.first() {
        say(format!(
            "minimal client: {} patches failed; the first: {first}",
            failed.len()
        ));
    }
    Ok(Limit {
        patches: written.len(),
        concurrency: CONCURRENCY,
        drain_s,
        per_second: per(written.len() as f64, drain_s),
        errors: failed.len(),
        api: api_delta(&before, &after, OWN),
        cost: Default::default(),
    })
}

/// Removes the status of the tasks `names` in `api`'s namespace (a merge patch `{"status": null}`
/// on the status subresource each, `CONCURRENCY` in flight); returns how long it took.
pub async fn clear_statuses(api: &Api<RecurringTask>, names: Vec<String>) -> Res<Duration> {
    let started = Instant::now();
    let patch = json!({"status": null});
    let failed: Vec<kube::Error> = futures::stream::iter(names)
        .map(|name| {
            let (api, patch) = (api.clone(), &patch);
            async move {
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|r| async move { r.err() })
        .collect()
        .await;
    if let Some(first) = failed.first() {
        return Err(msg(format!(
            "removing the status of {} tasks failed; the first: {first}",
            failed.len()
        )));
    }
    Ok(started.elapsed())
}

/// Tasks in `api` that have a status, listed 500 at a time.
pub async fn count_with_status(api: &Api<RecurringTask>) -> Res<usize> {
    let mut count = 0;
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(500);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await?;
        count += page.items.iter().filter(|t| t.status.is_some()).count();
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(count);
        }
    }
}

/// Writes `dir/spread.md` from `r` and prints it.
fn write_spread_md(dir: &std::path::Path, r: &SpreadResult) -> Res<()> {
    crate::results::write_markdown(dir, "spread.md", &spread_markdown(r))
}

/// `recur-bench spread-report`: `spread.md` again from `spread.json` (after a change of the
/// report, without running the scenario again).
pub fn spread_report(a: crate::args::SpreadReportArgs) -> Res<()> {
    let r: SpreadResult = crate::results::read_json(&a.out_dir.join("spread.json"))?;
    write_spread_md(&a.out_dir, &r)
}

/// Starts recur over the N tasks without status; returns once every task shows
/// `status.nextOccurrence`, with the operator still running.
async fn cold_start(
    a: &SpreadArgs,
    client: &Client,
    http: &reqwest::Client,
) -> Res<(SpreadCold, Operator)> {
    let n = a.common.tasks;
    let before = apiserver_metrics(client).await?;
    let t0 = Instant::now();
    let mut op = spawn_operator(
        &a.op,
        &a.common.kubeconfig,
        Some(NS),
        "operator-spread-cold",
        &[],
    )?;
    op.wait_ready(http).await?;
    let ready_s = t0.elapsed().as_secs_f64();
    // Done when recur has had N status writes answered (its own counter, polled every 50 ms):
    // no watch of the benchmark's adds to the apiserver's work meanwhile, as none does for the
    // minimal client. That every task then shows a nextOccurrence is checked after.
    let deadline = Instant::now() + Duration::from_secs(120) + Duration::from_millis(50) * n as u32;
    let all_pending_s = loop {
        if op.status_writes_ok(http).await? >= n as f64 {
            break t0.elapsed().as_secs_f64();
        }
        if let Ok(Some(status)) = op.child.try_wait() {
            return Err(msg(format!(
                "the operator exited ({status}); see {}",
                op.log.display()
            )));
        }
        if Instant::now() >= deadline {
            return Err(msg(format!(
                "the cold start did not write {n} statuses within {:?}; see {}",
                deadline.duration_since(t0),
                op.log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stat = proc_stat(op.pid)?;
    let delivered = op.delivered(http).await?;
    let after = apiserver_metrics(client).await?;
    let api = api_delta(&before, &after, OWN);
    Ok((
        SpreadCold {
            ready_s,
            all_pending_s,
            writes: writes(&api),
            api,
            delivered,
            cpu_s: stat.cpu_s,
            peak_rss_mib: stat.hwm_mib,
        },
        op,
    ))
}

/// Starts recur again over the N tasks, every status correct, with `extra` arguments; returns
/// once it has reconciled every task once, with the operator still running.
async fn restart(
    a: &SpreadArgs,
    client: &Client,
    http: &reqwest::Client,
    bare_list_s: f64,
    extra: &[String],
    log_name: &str,
) -> Res<(SpreadRestart, Operator)> {
    let n = a.common.tasks;
    let before = apiserver_metrics(client).await?;
    let t0 = Instant::now();
    let mut op = spawn_operator(&a.op, &a.common.kubeconfig, Some(NS), log_name, extra)?;
    op.wait_ready(http).await?;
    let ready_s = t0.elapsed().as_secs_f64();
    let stat_ready = proc_stat(op.pid)?;
    let at_ready = apiserver_metrics(client).await?;
    let deadline = Instant::now() + Duration::from_secs(120) + Duration::from_millis(10) * n as u32;
    loop {
        if op.reconciles(http).await? >= n as f64 {
            break;
        }
        if Instant::now() >= deadline {
            return Err(msg(format!(
                "the restarted operator did not reconcile all {n} tasks within {:?}; see {}",
                deadline.duration_since(t0),
                op.log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settled_s = t0.elapsed().as_secs_f64();
    let delivered = op.delivered(http).await?;
    let after = apiserver_metrics(client).await?;
    let api = api_delta(&before, &after, OWN);
    Ok((
        SpreadRestart {
            ready_s,
            settled_s,
            writes_until_ready: writes(&api_delta(&before, &at_ready, OWN)),
            writes_until_settled: writes(&api),
            api_until_settled: api,
            delivered,
            cpu_until_ready_s: stat_ready.cpu_s,
            rss_at_ready_mib: stat_ready.rss_mib,
            bare_list_s,
        },
        op,
    ))
}

/// The idle window: from now until [`MARGIN`] before `first_due` (the restart is settled).
async fn idle(
    a: &SpreadArgs,
    client: &Client,
    http: &reqwest::Client,
    op: &Operator,
    first_due: DateTime<Utc>,
    notes: &mut Vec<String>,
) -> Res<SpreadIdle> {
    let end = first_due - chrono::Duration::from_std(MARGIN).unwrap_or_default();
    let window = (end - Utc::now()).to_std().unwrap_or_default();
    if window < Duration::from_secs(a.idle) {
        notes.push(format!(
            "the idle window lasted {:.0} s, less than --idle {}: the setup took longer than the lead allowed",
            window.as_secs_f64(),
            a.idle
        ));
    }
    say(format!(
        "idle window of {:.0}s, until {}",
        window.as_secs_f64(),
        end.format("%H:%M:%S")
    ));
    let before = apiserver_metrics(client).await?;
    let delivered0 = op.delivered(http).await?;
    let stat0 = proc_stat(op.pid)?;
    let t0 = Instant::now();
    // The window itself is what is measured: nothing to wait for.
    tokio::time::sleep(window).await;
    let window_s = t0.elapsed().as_secs_f64();
    let stat1 = proc_stat(op.pid)?;
    let delivered = op.delivered(http).await? - delivered0;
    let after = apiserver_metrics(client).await?;
    let api = api_delta(&before, &after, OWN);
    let minutes = window_s / 60.0;
    Ok(SpreadIdle {
        window_s,
        writes: writes(&api),
        own_per_minute: per(api.own, minutes),
        all_per_minute: per(api.all, minutes),
        api,
        cpu_s: stat1.cpu_s - stat0.cpu_s,
        rss_mib: stat1.rss_mib,
        delivered,
    })
}

/// The steady state: every occurrence due in `[first_due, first_due + window)`.
async fn steady(
    a: &SpreadArgs,
    client: &Client,
    http: &reqwest::Client,
    op: &mut Operator,
    first_due: DateTime<Utc>,
    notes: &mut Vec<String>,
) -> Res<SpreadSteady> {
    let n = a.common.tasks;
    let end = first_due + chrono::Duration::seconds(a.window as i64);
    let expected = due_in_window(n, a.window, a.period);
    let records_url = format!("{}/_dev/records", a.op.backend_url);
    http.delete(&records_url).send().await?.error_for_status()?;
    let before = apiserver_metrics(client).await?;
    let recur_before = op.metrics(http).await?;
    let stat0 = proc_stat(op.pid)?;
    let delivered0 = op.delivered(http).await?;
    if Utc::now() >= first_due {
        let late = "the steady state's snapshot was taken after its first occurrence: the first arrivals may be missing from the records";
        say(late);
        notes.push(late.to_owned());
    }
    say(format!(
        "steady state: {expected} occurrences due from {} to {}",
        first_due.format("%H:%M:%S"),
        end.format("%H:%M:%S")
    ));
    if let Ok(left) = (end - Utc::now()).to_std() {
        tokio::time::sleep(left).await;
    }
    // Then until every occurrence of the window has arrived (at most 3 minutes more and 10 ms
    // per occurrence).
    let deadline =
        Instant::now() + Duration::from_secs(180) + Duration::from_millis(10) * expected as u32;
    let in_window: Vec<Record> = loop {
        if let Ok(Some(status)) = op.child.try_wait() {
            return Err(msg(format!(
                "the operator exited ({status}); see {}",
                op.log.display()
            )));
        }
        let records: Vec<Record> = http.get(&records_url).send().await?.json().await?;
        let of_window: Vec<Record> = records
            .into_iter()
            .filter(|r| r.accepted_due().is_some_and(|d| d >= first_due && d < end))
            .collect();
        if of_window.len() >= expected || Instant::now() >= deadline {
            break of_window;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let stat1 = proc_stat(op.pid)?;
    let delivered = op.delivered(http).await? - delivered0;
    let after = apiserver_metrics(client).await?;
    // Both sides' /metrics around the window, for what the report does not show (latency
    // histograms of the status writes, the work queue): the difference of each pair.
    for (name, text) in [
        ("steady-apiserver-metrics-before.txt", &before),
        ("steady-apiserver-metrics-after.txt", &after),
        ("steady-recur-metrics-before.txt", &recur_before),
        ("steady-recur-metrics-after.txt", &op.metrics(http).await?),
    ] {
        let path = a.common.out_dir.join(name);
        std::fs::write(&path, text).map_err(|e| msg(format!("writing {}: {e}", path.display())))?;
    }
    let api = api_delta(&before, &after, OWN);
    let lags: Vec<i64> = in_window.iter().filter_map(|r| r.lag_ms).collect();
    let cpu_s = stat1.cpu_s - stat0.cpu_s;
    Ok(SpreadSteady {
        window_s: a.window as f64,
        expected,
        occurrences: in_window.len(),
        lag: lag_stats(&lags),
        lags_ms: lags,
        delivered,
        api_per_occurrence_own: per(api.own, delivered),
        api,
        cpu_s,
        cpu_s_per_1000: per(cpu_s * 1000.0, delivered),
        peak_rss_mib: stat1.hwm_mib,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn offsets_spread_uniformly_over_the_hour() {
        let n = 100_000;
        let mut per_second = vec![0usize; 3600];
        for i in 0..n {
            let o = offset_secs(i, n, 3600);
            assert!(o < 3600);
            per_second[o as usize] += 1;
        }
        // 100,000 / 3600 = 27.8: every second gets 27 or 28.
        assert!(per_second.iter().all(|&c| c == 27 || c == 28));
        assert_eq!(per_second.iter().sum::<usize>(), n);
        // Fewer tasks than seconds: at most one per second, first at 0.
        assert_eq!(offset_secs(0, 3000, 3600), 0);
        assert_eq!(offset_secs(1, 3000, 3600), 1);
        assert_eq!(offset_secs(2999, 3000, 3600), 3598);
        assert_eq!(offset_secs(0, 0, 3600), 0);
        // A 6-minute period: 10,000 tasks give the hourly 100,000's 27.8 a second.
        assert_eq!(offset_secs(9999, 10_000, 360), 359);
    }

    #[test]
    fn due_in_window_counts_the_offsets_below_it() {
        for (n, w) in [
            (100_000, 600),
            (3000, 180),
            (7, 10),
            (1, 3600),
            (5000, 3600),
            (3601, 1),
        ] {
            let brute = (0..n).filter(|&i| offset_secs(i, n, 3600) < w).count();
            assert_eq!(due_in_window(n, w, 3600), brute, "n={n} w={w}");
        }
        assert_eq!(due_in_window(100_000, 600, 3600), 16_667);
        assert_eq!(due_in_window(10_000, 60, 360), 1_667);
    }

    #[test]
    fn the_lead_covers_the_setup_writes_at_half_the_probed_rate() {
        // 100,000 tasks at 400 patches/s: 200,000 writes at 200/s, the restart, 300 s idle.
        let l = lead(100_000, 400.0, 1, Duration::from_secs(300));
        assert_eq!(l.as_secs(), 30 + 1000 + 30 + 100 + 300);
        // Each further restart adds its own time.
        let l = lead(100_000, 400.0, 3, Duration::from_secs(300));
        assert_eq!(l.as_secs(), 30 + 1000 + 3 * (30 + 100) + 300);
        // A rate of 0 is read as 1/s, not a division by zero.
        assert!(lead(10, 0.0, 1, Duration::ZERO).as_secs() >= 60);
    }

    #[test]
    fn writes_are_the_changing_verbs_on_recur_resources() {
        let api = ApiDelta {
            own_resources: vec!["recurringtasks".into(), "reminders".into()],
            by_request: [
                ("WATCH recurringtasks", 2.0),
                ("LIST recurringtasks", 3.0),
                ("PATCH recurringtasks/status", 4.0),
                ("POST reminders", 1.0),
                ("PUT leases", 29.0),
                ("POST events", 5.0),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
            ..ApiDelta::default()
        };
        assert_eq!(writes(&api), 5.0);
        assert!(!is_write("GET"));
        assert!(is_write("APPLY"));
    }
}
