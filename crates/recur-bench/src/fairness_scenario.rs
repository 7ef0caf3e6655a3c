//! Fairness between namespaces (tenants): `--tasks` RecurringTasks due in the same minute in one
//! namespace (the big one) and `--small-tasks` in another, due in that minute too. What the
//! small namespace's occurrences wait while the big one drains, with the one shared work queue
//! of kube-runtime (`recur run --fair-queue=false`, as before fair queueing) and with namespaces
//! taking turns for the workers (the default).
use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::Api;
use kube::{Client, ResourceExt};
use recur::api::RecurringTask;

use crate::args::{FairnessArgs, Queue};
use crate::cluster::{Bench, OneOff, connect, create_all, delete_namespace, fresh_namespace};
use crate::error::{Res, msg};
use crate::process::spawn_operator;
use crate::procfs::proc_stat;
use crate::recur_scenario::{
    Record, await_burst, create_tasks, pending_due, probe_rate, task_object, until_all_pending,
};
use crate::report::fairness_section;
use crate::results::{FairnessResult, FairnessRun, write_json};
use crate::say;
use crate::stats::lag_stats;
use crate::watch::Watch;

pub const BIG: &str = "bench-fair-big";
pub const SMALL: &str = "bench-fair-small";
/// The small namespace's tasks have user ids starting with this: the backend's records carry
/// the user id, which tells the namespaces apart.
const SMALL_USER: &str = "bench-small";
/// Bare status patches of the probe that sets the burst's lead (`probe_rate`).
const PROBE: usize = 500;

pub async fn run_fairness(a: FairnessArgs) -> Res<()> {
    let Bench {
        client,
        http,
        environment,
    } = connect(&a.common.kubeconfig, &a.op.sidecar, Duration::from_secs(60)).await?;
    let mut result = FairnessResult {
        environment,
        workers: a.op.workers,
        runs: vec![],
    };
    let rate = probe_rate(&client, PROBE.min(a.common.tasks)).await?;
    for queue in &a.queues {
        let run = fairness_run(&a, &client, &http, *queue, rate).await?;
        say(format!(
            "{}: small namespace lag p50 {} ms, p99 {} ms, max {} ms; big namespace drained in {:.2}s",
            run.system, run.small.p50_ms, run.small.p99_ms, run.small.max_ms, run.big_drain_s
        ));
        result.runs.push(run);
        // After each run, so that a failure later keeps what was measured.
        write_json(&a.common.out_dir, "fairness.json", &result)?;
    }
    let mut md = format!(
        "# Fairness benchmark\n\nMade by `recur-bench fairness --tasks {} --small-tasks {}` on {}: {} cores ({}); Kubernetes {}; Dapr sidecars: {}. Raw figures: `fairness.json`.\n",
        a.common.tasks,
        a.small_tasks,
        result.environment.date,
        result.environment.cores,
        result.environment.cpu,
        result.environment.kubernetes,
        result.environment.sidecar
    );
    fairness_section(&mut md, &result);
    let path = a.common.out_dir.join("fairness.md");
    std::fs::write(&path, &md).map_err(|e| msg(format!("writing {}: {e}", path.display())))?;
    print!("{md}");
    say(format!("wrote {}", path.display()));
    Ok(())
}

async fn create_small_tasks(client: &Client, n: usize, cron: &str) -> Res<()> {
    let tasks = (0..n)
        .map(|i| {
            let mut task = task_object(i, cron)?;
            task.metadata.name = Some(format!("small-{i:03}"));
            task.spec.user_id = format!("{SMALL_USER}-{i}");
            Ok(task)
        })
        .collect::<Res<Vec<_>>>()?;
    let took = create_all(
        &Api::<RecurringTask>::namespaced(client.clone(), SMALL),
        tasks,
    )
    .await?;
    say(format!(
        "created {n} RecurringTasks ({cron:?}) in {SMALL} in {:.1}s",
        took.as_secs_f64()
    ));
    Ok(())
}

/// What the watch keeps of a task: its namespace and the due instant of its pending occurrence.
type Seen = (Option<String>, Option<DateTime<Utc>>);

/// Whether every task of both namespaces is pending for `due`.
fn all_pending(seen: &HashMap<String, Seen>, big: usize, small: usize, due: DateTime<Utc>) -> bool {
    let ours: Vec<&Seen> = seen
        .values()
        .filter(|(ns, _)| matches!(ns.as_deref(), Some(BIG | SMALL)))
        .collect();
    let in_big = ours
        .iter()
        .filter(|(ns, _)| ns.as_deref() == Some(BIG))
        .count();
    in_big >= big && ours.len() - in_big >= small && ours.iter().all(|(_, d)| *d == Some(due))
}

async fn fairness_run(
    a: &FairnessArgs,
    client: &Client,
    http: &reqwest::Client,
    queue: Queue,
    rate: f64,
) -> Res<FairnessRun> {
    let (n, s) = (a.common.tasks, a.small_tasks);
    let (label, fair) = match queue {
        Queue::Shared => ("shared", false),
        Queue::Fair => ("fair", true),
    };
    fresh_namespace(client, BIG).await?;
    fresh_namespace(client, SMALL).await?;
    // A one-off burst (a daily cron) at an instant far enough ahead for every create and every
    // first status write, at the rate probed on this apiserver.
    let one = OneOff::for_writes(2 * (n + s), rate);
    let due = one.due;
    create_tasks(client, BIG, n, &one.cron).await?;
    create_small_tasks(client, s, &one.cron).await?;
    let watch = Watch::start(
        Api::<RecurringTask>::all(client.clone()),
        |t: &RecurringTask, _| (t.namespace(), pending_due(t)),
        move |seen: &HashMap<String, Seen>| all_pending(seen, n, s, due).then_some(()),
    )
    .await?;
    // One operator for every namespace, as in a cluster with tenants.
    let flag = format!("--fair-queue={fair}");
    let mut op = spawn_operator(
        &a.op,
        &a.common.kubeconfig,
        None,
        &format!("operator-fairness-{label}"),
        std::slice::from_ref(&flag),
    )?;
    op.wait_ready(http).await?;
    until_all_pending(
        client,
        watch,
        &one,
        &format!(
            "{label}: all {n} + {s} tasks to be pending for {}",
            due.format("%H:%M:%S")
        ),
    )
    .await?;

    let records_url = format!("{}/_dev/records", a.op.backend_url);
    http.delete(&records_url).send().await?.error_for_status()?;
    let delivered0 = op.delivered(http).await?;
    let stat0 = proc_stat(op.pid)?;
    if Utc::now() >= due {
        return Err(msg(
            "the records were cleared after the burst began; try again",
        ));
    }
    let records = await_burst(
        &op,
        http,
        &records_url,
        due,
        n + s,
        delivered0,
        "the fairness burst",
    )
    .await?;
    let stat1 = proc_stat(op.pid)?;
    op.stop().await;

    let (small, big): (Vec<&Record>, Vec<&Record>) = records.iter().partition(|r| {
        r.user_id
            .as_deref()
            .is_some_and(|u| u.starts_with(SMALL_USER))
    });
    let lags = |rs: &[&Record]| -> Vec<i64> { rs.iter().filter_map(|r| r.lag_ms).collect() };
    let drain = |rs: &[&Record]| -> f64 {
        rs.iter()
            .filter_map(|r| r.received())
            .max()
            .map_or(0.0, |last| (last - due).num_milliseconds() as f64 / 1000.0)
    };
    let mut notes = vec![];
    if small.len() != s || big.len() != n {
        notes.push(format!(
            "{} occurrences of the small namespace and {} of the big one arrived (of {s} and {n}): some twice, or some without their user id",
            small.len(),
            big.len()
        ));
    }
    let small_lags = lags(&small);
    let run = FairnessRun {
        queue: label.to_owned(),
        system: format!("recur run --workers {} {flag}", a.op.workers),
        big_tasks: n,
        small_tasks: s,
        due: Some(due),
        small: lag_stats(&small_lags),
        small_lags_ms: small_lags,
        big: lag_stats(&lags(&big)),
        big_drain_s: drain(&big),
        small_drain_s: drain(&small),
        cpu_s: stat1.cpu_s - stat0.cpu_s,
        peak_rss_mib: stat1.hwm_mib,
        notes,
    };
    delete_namespace(client, SMALL).await?;
    delete_namespace(client, BIG).await?;
    Ok(run)
}
