//! The shards scenario (`recur-bench shards`, `scripts/bench.sh --shards S`): what dividing N
//! tasks among S `recur run` replicas buys, against one operator serving all N, on the same
//! cluster and the same tasks.
//!
//! A shard is a label: task i carries `recur.dev/shard: <i mod S>`, and replica k runs
//! `recur run --selector recur.dev/shard=<k> --lease-name recur-shard-<k>`, so the apiserver
//! lists, filters and encodes for each replica only its share, and each shard has a leader of
//! its own. This is how recur is sharded today (docs/scaling.md, "Past one leader"), with the
//! labels set by hand instead of by a webhook. The tasks are hourly with their first occurrence
//! hours ahead: nothing is delivered, so every figure is the cost of holding and writing the
//! objects.
//!
//! In this order:
//!
//! 1. one operator over every task: cold start (until its N status writes are answered),
//!    stopped; restarted with every status correct (until it has reconciled all N), stopped;
//! 2. every status removed (setup, not measured);
//! 3. S replicas started at once: cold start (until each has written its share), stopped;
//!    restarted at once, all statuses correct; then replica 0 stopped and started again while
//!    the others run (the failover of one replica);
//! 4. every status removed again; S replicas of `recur run --shards S` (no labels, the replicas
//!    share the shards out through Leases) started at once: cold start (until the statuses
//!    they wrote between them are N); then replica 0 killed (SIGKILL) while the others run:
//!    until they hold every shard, and until they have reconciled every task again;
//! 5. a bare client lists all N tasks, then shard 0's, with no operator running: the floor
//!    under each ready.
use std::time::{Duration, Instant};

use futures::future::join_all;
use kube::Client;
use kube::api::Api;
use recur::api::RecurringTask;

use crate::apiserver::{api_delta, apiserver_metrics};
use crate::args::ShardsArgs;
use crate::cluster::{Bench, connect, create_all, delete_namespace_within, fresh_namespace};
use crate::error::{Res, msg};
use crate::process::{Operator, signal, spawn_operator};
use crate::procfs::proc_stat;
use crate::recur_scenario::task_name;
use crate::results::{
    AutomaticShards, ReplicaRun, ShardsPhase, ShardsResult, Until, write_json, write_markdown,
};
use crate::say;
use crate::shards_report::shards_markdown;
use crate::spread_scenario::{
    OWN, clear_statuses, count_with_status, delete_timeout, statuses, task, writes,
};

/// How long after a phase's end its replicas' memory is read again.
const LOOK_ON: Duration = Duration::from_secs(30);

/// The namespace of every task.
pub const NS: &str = "bench-shards";
/// The label that puts a task in a shard.
pub const SHARD_LABEL: &str = "recur.dev/shard";

/// The label selector of shard `k`.
pub fn shard_selector(k: usize) -> String {
    format!("{SHARD_LABEL}={k}")
}

/// The indices of the `n` tasks in shard `k` of `s`: every i with i mod s = k.
pub fn shard_tasks(n: usize, s: usize, k: usize) -> impl Iterator<Item = usize> {
    (k..n).step_by(s.max(1))
}

/// One replica to start: its shard (every task when `None`) and how many tasks that is.
struct Target {
    shard: Option<usize>,
    tasks: usize,
}

impl Target {
    /// `recur run` flags beyond `--namespace`: the shard's selector and Lease.
    fn flags(&self) -> Vec<String> {
        self.shard.map_or_else(Vec::new, |k| {
            vec![
                "--selector".into(),
                shard_selector(k),
                "--lease-name".into(),
                format!("recur-shard-{k}"),
            ]
        })
    }
}

pub async fn run_shards(a: ShardsArgs) -> Res<()> {
    let (n, s) = (a.common.tasks, a.shards);
    if n < s || s < 2 {
        return Err(msg(
            "--shards must be at least 2 and --tasks at least --shards",
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
    let mut r = ShardsResult {
        environment,
        workers: a.op.workers,
        tasks: n,
        shards: s,
        command: format!("recur-bench shards --tasks {n} --shards {s}"),
        ..ShardsResult::default()
    };

    // Setup: N hourly tasks whose first occurrence is hours away, each labelled with its shard.
    let start_at = crate::cluster::next_second(chrono::Utc::now() + chrono::Duration::hours(6));
    delete_namespace_within(&client, NS, delete_timeout(n)).await?;
    fresh_namespace(&client, NS).await?;
    let api = Api::<RecurringTask>::namespaced(client.clone(), NS);
    let tasks = (0..n)
        .map(|i| {
            let mut t = task(i, start_at, 3600)?;
            t.metadata
                .labels
                .get_or_insert_default()
                .insert(SHARD_LABEL.into(), (i % s).to_string());
            Ok(t)
        })
        .collect::<Res<Vec<_>>>()?;
    r.create_s = create_all(&api, tasks).await?.as_secs_f64();
    say(format!(
        "created {n} RecurringTasks in {s} shards in {:.1}s",
        r.create_s
    ));

    // 1. One operator over every task.
    let one = [Target {
        shard: None,
        tasks: n,
    }];
    let (cold, ops) = phase(&a, &client, &http, "one-cold", &one, Until::Written).await?;
    r.phases.push(report(cold, "one operator, cold start"));
    stop_all(ops).await;
    let (restart, ops) = phase(&a, &client, &http, "one-restart", &one, Until::Reconciled).await?;
    r.phases.push(report(restart, "one operator, restart"));
    stop_all(ops).await;

    // 2. Every status removed.
    clear_statuses(&api, (0..n).map(task_name).collect()).await?;
    let left = count_with_status(&api).await?;
    if left > 0 {
        r.notes.push(format!(
            "{left} tasks still had a status when the replicas' cold start began"
        ));
    }

    // 3. S replicas.
    let replicas: Vec<Target> = (0..s)
        .map(|k| Target {
            shard: Some(k),
            tasks: shard_tasks(n, s, k).count(),
        })
        .collect();
    let (cold, ops) = phase(&a, &client, &http, "shards-cold", &replicas, Until::Written).await?;
    r.phases
        .push(report(cold, &format!("{s} replicas, cold start at once")));
    stop_all(ops).await;
    let (restart, mut ops) = phase(
        &a,
        &client,
        &http,
        "shards-restart",
        &replicas,
        Until::Reconciled,
    )
    .await?;
    r.phases
        .push(report(restart, &format!("{s} replicas, restart at once")));
    // Replica 0 alone, the others running.
    let first = ops.remove(0);
    first.stop().await;
    let (alone, again) = phase(
        &a,
        &client,
        &http,
        "shards-restart-0",
        &replicas[..1],
        Until::Reconciled,
    )
    .await?;
    r.phases.push(report(
        alone,
        &format!("replica 0 restarted, the other {} running", s - 1),
    ));
    stop_all(again).await;
    stop_all(ops).await;

    // 4. `recur run --shards S`: no labels, the replicas share the shards out themselves.
    clear_statuses(&api, (0..n).map(task_name).collect()).await?;
    let (cold, ops) = automatic_cold_start(&a, &client, &http, n).await?;
    r.phases.push(report(
        cold,
        &format!("{s} replicas of `--shards {s}`, cold start at once"),
    ));
    let mut automatic = takeover(&client, &http, ops, n, s).await?;
    automatic.rss_mib = r
        .phases
        .last()
        .map(|p| p.replicas.iter().map(|x| x.rss_later_mib).collect())
        .unwrap_or_default();
    r.automatic = Some(automatic);

    // 5. The floors: bare lists with no operator running.
    let listed = Instant::now();
    let all = statuses(&api, None).await?;
    r.bare_list_all_s = listed.elapsed().as_secs_f64();
    let listed = Instant::now();
    let share = statuses(&api, Some(&shard_selector(0))).await?;
    r.bare_list_one_s = listed.elapsed().as_secs_f64();
    say(format!(
        "a bare client listed all {} tasks in {:.2}s, the {} of {} in {:.2}s",
        all.len(),
        r.bare_list_all_s,
        share.len(),
        shard_selector(0),
        r.bare_list_one_s
    ));

    write_json(&a.common.out_dir, "shards.json", &r)?;
    write_markdown(&a.common.out_dir, "shards.md", &shards_markdown(&r))?;
    delete_namespace_within(&client, NS, delete_timeout(n)).await?;
    Ok(())
}

/// The Leases of `--shards`: a prefix of their own, apart from the label shards' Leases.
const AUTOMATIC_LEASE: &str = "recur-auto";
/// recur's default `--lease-duration`, which the replicas run with.
const LEASE_DURATION_S: f64 = 15.0;

/// S replicas of `recur run --shards S` started at once, until the status writes they made
/// between them are N (which replica writes which task is theirs to decide).
async fn automatic_cold_start(
    a: &ShardsArgs,
    client: &Client,
    http: &reqwest::Client,
    n: usize,
) -> Res<(ShardsPhase, Vec<Operator>)> {
    let s = a.shards;
    let flags: Vec<String> = vec![
        "--shards".into(),
        s.to_string(),
        "--lease-name".into(),
        AUTOMATIC_LEASE.into(),
    ];
    let before = apiserver_metrics(client).await?;
    let t0 = Instant::now();
    let mut ops = (0..s)
        .map(|k| {
            spawn_operator(
                &a.op,
                &a.common.kubeconfig,
                Some(NS),
                &format!("operator-automatic-cold-{k}"),
                &flags,
            )
        })
        .collect::<Res<Vec<_>>>()?;
    let mut ready = Vec::with_capacity(s);
    for op in &mut ops {
        op.wait_ready(http).await?;
        ready.push(t0.elapsed().as_secs_f64());
    }
    let deadline = Instant::now() + Duration::from_secs(120) + Duration::from_millis(50) * n as u32;
    let (done_s, written) = loop {
        let mut written = Vec::with_capacity(s);
        for op in &ops {
            written.push(op.status_writes_ok(http).await?);
        }
        if written.iter().sum::<f64>() >= n as f64 {
            break (t0.elapsed().as_secs_f64(), written);
        }
        if Instant::now() >= deadline {
            return Err(msg(format!(
                "the replicas wrote {:.0} of {n} statuses within {:?}; see {}",
                written.iter().sum::<f64>(),
                deadline.duration_since(t0),
                a.op.log_dir.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let after = apiserver_metrics(client).await?;
    let api = api_delta(&before, &after, OWN);
    let mut replicas = Vec::with_capacity(s);
    for (k, op) in ops.iter().enumerate() {
        let stat = proc_stat(op.pid)?;
        replicas.push(ReplicaRun {
            shard: Some(format!("`--shards {s}`, replica {k}")),
            tasks: written.get(k).copied().unwrap_or(0.0) as usize,
            ready_s: ready.get(k).copied().unwrap_or(0.0),
            done_s,
            cpu_s: stat.cpu_s,
            rss_mib: stat.rss_mib,
            rss_later_mib: 0.0,
            peak_rss_mib: stat.hwm_mib,
        });
    }
    look_on(&mut replicas, &ops).await?;
    Ok((
        ShardsPhase {
            what: String::new(),
            until: Until::Written,
            writes: writes(&api),
            api,
            replicas,
        },
        ops,
    ))
}

/// Replica 0 killed (SIGKILL, so its Leases expire rather than being released) while the
/// others run: until they hold every shard, and until they have reconciled every task since.
async fn takeover(
    client: &Client,
    http: &reqwest::Client,
    mut ops: Vec<Operator>,
    n: usize,
    s: usize,
) -> Res<AutomaticShards> {
    let killed = ops.remove(0);
    let (mut reconciled_before, mut cpu_before) = (0.0, 0.0);
    for op in &ops {
        reconciled_before += op.reconciles(http).await?;
        cpu_before += proc_stat(op.pid)?.cpu_s;
    }
    let before = apiserver_metrics(client).await?;
    signal(killed.pid, "-KILL").await;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(120) + Duration::from_millis(50) * n as u32;
    let (mut held_s, mut reconciled_s) = (None, None);
    while held_s.is_none() || reconciled_s.is_none() {
        let (mut held, mut reconciled) = (0.0, 0.0);
        for op in &ops {
            held += op.gauge(http, "recur_shards_held").await?;
            reconciled += op.reconciles(http).await?;
        }
        if held_s.is_none() && held >= s as f64 {
            held_s = Some(t0.elapsed().as_secs_f64());
        }
        if reconciled_s.is_none() && held_s.is_some() && reconciled >= reconciled_before + n as f64
        {
            reconciled_s = Some(t0.elapsed().as_secs_f64());
        }
        if Instant::now() >= deadline {
            return Err(msg(format!(
                "after the SIGKILL the others held {held:.0} of {s} shards and reconciled {:.0} of {n} tasks within {:?}",
                reconciled - reconciled_before,
                deadline.duration_since(t0)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = apiserver_metrics(client).await?;
    let mut cpu_after = 0.0;
    for op in &ops {
        cpu_after += proc_stat(op.pid)?.cpu_s;
    }
    let result = AutomaticShards {
        lease_duration_s: LEASE_DURATION_S,
        held_s: held_s.unwrap_or_default(),
        reconciled_s: reconciled_s.unwrap_or_default(),
        cpu_s: cpu_after - cpu_before,
        writes: writes(&api_delta(&before, &after, OWN)),
        rss_mib: vec![],
    };
    say(format!(
        "replica 0 killed: the others held all {s} shards after {:.2}s and had reconciled every task after {:.2}s ({:.1} CPU s, {:.0} writes); the Leases last {LEASE_DURATION_S:.0}s",
        result.held_s, result.reconciled_s, result.cpu_s, result.writes
    ));
    killed.stop().await;
    stop_all(ops).await;
    Ok(result)
}

fn report(mut phase: ShardsPhase, what: &str) -> ShardsPhase {
    what.clone_into(&mut phase.what);
    for rep in &phase.replicas {
        say(format!(
            "{what}: {} ready after {:.2}s, done after {:.2}s; RSS {:.0} MiB then, {:.0} MiB 30 s later (peak {:.0}), CPU {:.1}s",
            rep.shard.as_deref().unwrap_or("every task"),
            rep.ready_s,
            rep.done_s,
            rep.rss_mib,
            rep.rss_later_mib,
            rep.peak_rss_mib,
            rep.cpu_s
        ));
    }
    say(format!(
        "{what}: {} writes on recur resources",
        phase.writes
    ));
    phase
}

async fn stop_all(ops: Vec<Operator>) {
    join_all(ops.into_iter().map(Operator::stop)).await;
}

/// Starts one operator per target at once and waits until each is ready and has done `until`
/// for its share; returns the figures with the operators still running.
async fn phase(
    a: &ShardsArgs,
    client: &Client,
    http: &reqwest::Client,
    name: &str,
    targets: &[Target],
    until: Until,
) -> Res<(ShardsPhase, Vec<Operator>)> {
    let before = apiserver_metrics(client).await?;
    let t0 = Instant::now();
    let mut ops = targets
        .iter()
        .enumerate()
        .map(|(k, t)| {
            spawn_operator(
                &a.op,
                &a.common.kubeconfig,
                Some(NS),
                &format!("operator-{name}-{k}"),
                &t.flags(),
            )
        })
        .collect::<Res<Vec<_>>>()?;
    let runs = join_all(
        ops.iter_mut()
            .zip(targets)
            .map(|(op, t)| replica(op, http, t, until, t0)),
    )
    .await
    .into_iter()
    .collect::<Res<Vec<_>>>()?;
    let after = apiserver_metrics(client).await?;
    let api = api_delta(&before, &after, OWN);
    let mut runs = runs;
    look_on(&mut runs, &ops).await?;
    Ok((
        ShardsPhase {
            what: String::new(),
            until,
            writes: writes(&api),
            api,
            replicas: runs,
        },
        ops,
    ))
}

/// Memory once more after a fixed look-on (a figure of its own, not a wait for anything):
/// after a cold start the watch is still bringing the written tasks back into the cache.
async fn look_on(runs: &mut [ReplicaRun], ops: &[Operator]) -> Res<()> {
    tokio::time::sleep(LOOK_ON).await;
    for (run, op) in runs.iter_mut().zip(ops) {
        let stat = proc_stat(op.pid)?;
        run.rss_later_mib = stat.rss_mib;
        run.peak_rss_mib = stat.hwm_mib;
    }
    Ok(())
}

/// One replica of a phase: ready, then its share done; its CPU and memory then.
async fn replica(
    op: &mut Operator,
    http: &reqwest::Client,
    t: &Target,
    until: Until,
    t0: Instant,
) -> Res<ReplicaRun> {
    op.wait_ready(http).await?;
    let ready_s = t0.elapsed().as_secs_f64();
    let deadline =
        Instant::now() + Duration::from_secs(120) + Duration::from_millis(50) * t.tasks as u32;
    let done_s = loop {
        let done = match until {
            Until::Written => op.status_writes_ok(http).await?,
            Until::Reconciled => op.reconciles(http).await?,
        };
        if done >= t.tasks as f64 {
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
                "the operator did not finish its {} tasks within {:?}; see {}",
                t.tasks,
                deadline.duration_since(t0),
                op.log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stat = proc_stat(op.pid)?;
    Ok(ReplicaRun {
        shard: t.shard.map(shard_selector),
        tasks: t.tasks,
        ready_s,
        done_s,
        cpu_s: stat.cpu_s,
        rss_mib: stat.rss_mib,
        rss_later_mib: 0.0,
        peak_rss_mib: stat.hwm_mib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_divide_the_tasks_without_overlap() {
        for (n, s) in [(100_000, 2), (7, 3), (5, 5)] {
            let mut seen = vec![0u8; n];
            for k in 0..s {
                for i in shard_tasks(n, s, k) {
                    assert_eq!(i % s, k);
                    seen[i] += 1;
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "n={n} s={s}");
        }
        assert_eq!(shard_tasks(100_000, 2, 1).count(), 50_000);
    }
}
