//! The shards scenario's markdown (`shards.md`, copied to `docs/bench/shards-n<N>.md`).
use std::fmt::Write as _;

use crate::report::{breakdown, fmt_s};
use crate::results::{ShardsPhase, ShardsResult, Until};

/// The slowest replica's time to done, and the largest RSS of any replica 30 s after.
fn slowest(p: &ShardsPhase) -> (f64, f64) {
    p.replicas.iter().fold((0.0, 0.0), |(d, r), x| {
        (d.max(x.done_s), r.max(x.rss_later_mib))
    })
}

/// The cold start of one operator (no shard), or of the replicas (each with its shard).
fn cold_start(r: &ShardsResult, sharded: bool) -> Option<&ShardsPhase> {
    r.phases.iter().find(|p| {
        p.until == Until::Written && p.replicas.iter().all(|x| x.shard.is_some() == sharded)
    })
}

pub fn shards_markdown(r: &ShardsResult) -> String {
    let env = &r.environment;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Shards: {} RecurringTasks on one operator and on {} replicas\n",
        r.tasks, r.shards
    );
    let _ = writeln!(
        md,
        "Made by `{}` on {}: {} cores ({}), {:.0} GiB of memory; Kubernetes {} (etcd and kube-apiserver of `tests/cluster/up.sh`, on loopback); `recur run --workers {}` each. Raw figures: `target/bench/shards.json`.\n",
        r.command, env.date, env.cores, env.cpu, env.memory_gib, env.kubernetes, r.workers
    );
    let _ = writeln!(
        md,
        "All tasks are in one namespace. A shard is a label: task i carries `recur.dev/shard: <i mod {}>`, and replica k runs `recur run --selector recur.dev/shard=<k> --lease-name recur-shard-<k>`, so the apiserver lists and encodes for each replica only its share, and each shard has a leader of its own (docs/scaling.md). The tasks are hourly with their first occurrence hours away: nothing is delivered. Creating them took {:.0} s (setup).\n",
        r.shards, r.create_s
    );
    md.push_str("| phase | replica | tasks | ready | done | CPU | RSS when done | RSS 30 s later | peak RSS |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for p in &r.phases {
        for x in &p.replicas {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.1} s | {:.0} MiB | {:.0} MiB | {:.0} MiB |",
                p.what,
                x.shard.as_deref().unwrap_or("every task"),
                x.tasks,
                fmt_s(x.ready_s),
                fmt_s(x.done_s),
                x.cpu_s,
                x.rss_mib,
                x.rss_later_mib,
                x.peak_rss_mib
            );
        }
    }
    md.push_str(
        "\n- *done*: a cold start's share of status writes answered (every task's first `nextOccurrence`), or a restart's share of tasks reconciled once. Times are from the phase's start, when every replica of it was started at once.\n- *CPU* and *RSS when done* at that instant; *RSS 30 s later* and *peak* (VmHWM) 30 s after the phase's last replica was done.\n",
    );
    md.push_str("\n| phase | writes on recur resources | requests |\n|---|---:|---|\n");
    for p in &r.phases {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {} |",
            p.what,
            p.writes,
            breakdown(&p.api)
        );
    }
    let _ = writeln!(
        md,
        "\nA bare kube-rs client with no operator running listed (500 a page, decoded) all {} tasks in {} and shard 0's (its label selector) in {}: the floor under a ready that waits for the list.",
        r.tasks,
        fmt_s(r.bare_list_all_s),
        fmt_s(r.bare_list_one_s)
    );
    if let (Some(one), Some(many)) = (cold_start(r, false), cold_start(r, true)) {
        let (d1, m1) = slowest(one);
        let (d2, m2) = slowest(many);
        let _ = writeln!(
            md,
            "\nCold start: the slowest of {} replicas was done in {} against {} for one operator ({:.2}x); the largest replica held {:.0} MiB against {:.0} MiB.",
            r.shards,
            fmt_s(d2),
            fmt_s(d1),
            d2 / d1.max(f64::MIN_POSITIVE),
            m2,
            m1
        );
    }
    if let Some(auto) = &r.automatic {
        let _ = writeln!(
            md,
            "\n`recur run --shards {s}` on {s} replicas (no labels; the replicas share the shards out through Leases `recur-auto-shard-<k>`, and every replica caches every task): after a SIGKILL of replica 0 the others held all {s} shards {} later (Leases of {:.0} s) and had reconciled every task again {} after it, with {:.1} CPU s and {:.0} writes on recur resources, and no list: their caches hold every task. RSS after the cold start: {} MiB.",
            fmt_s(auto.held_s),
            auto.lease_duration_s,
            fmt_s(auto.reconciled_s),
            auto.cpu_s,
            auto.writes,
            auto.rss_mib
                .iter()
                .map(|m| format!("{m:.0}"))
                .collect::<Vec<_>>()
                .join(" and "),
            s = r.shards
        );
    }
    for note in &r.notes {
        let _ = writeln!(md, "\n- {note}");
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::ReplicaRun;

    fn phase(until: Until, shards: &[Option<&str>], done_s: f64, rss: f64) -> ShardsPhase {
        ShardsPhase {
            what: "a phase".into(),
            until,
            replicas: shards
                .iter()
                .map(|s| ReplicaRun {
                    shard: s.map(str::to_owned),
                    done_s,
                    rss_later_mib: rss,
                    ..ReplicaRun::default()
                })
                .collect(),
            ..ShardsPhase::default()
        }
    }

    /// The summary compares the two cold starts, found by what they waited for and whether
    /// their replicas had shards, whatever the phases are called.
    #[test]
    fn the_summary_compares_the_cold_starts() {
        let r = ShardsResult {
            shards: 2,
            phases: vec![
                phase(Until::Reconciled, &[None], 1.0, 1.0),
                phase(Until::Written, &[None], 400.0, 312.0),
                phase(Until::Reconciled, &[Some("s=0"), Some("s=1")], 2.0, 2.0),
                phase(Until::Written, &[Some("s=0"), Some("s=1")], 408.0, 169.0),
            ],
            ..ShardsResult::default()
        };
        let md = shards_markdown(&r);
        assert!(
            md.contains("done in 408.0 s against 400.0 s for one operator (1.02x); the largest replica held 169 MiB against 312 MiB"),
            "{md}"
        );
        assert!(
            !md.contains("--shards 2"),
            "no automatic phase, no paragraph"
        );
        let r = ShardsResult {
            automatic: Some(crate::results::AutomaticShards {
                lease_duration_s: 15.0,
                held_s: 17.2,
                reconciled_s: 19.9,
                cpu_s: 3.4,
                writes: 0.0,
                rss_mib: vec![201.0, 198.0],
            }),
            ..r
        };
        let md = shards_markdown(&r);
        assert!(
            md.contains("held all 2 shards 17.2 s later (Leases of 15 s) and had reconciled every task again 19.9 s after it, with 3.4 CPU s and 0 writes"),
            "{md}"
        );
        assert!(md.contains("201 and 198 MiB"), "{md}");
    }
}
