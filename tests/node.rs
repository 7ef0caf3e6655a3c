//! The node of `tests/cluster/node.sh` (issue 17): a control plane of its own started with
//! `up.sh --node`, a node (kubelet, kube-proxy, kube-scheduler, containerd, runc, CNI, CoreDNS,
//! all built from pinned modules), and `node-smoke.sh` proving pods run there under the
//! restricted profile, answer by pod IP and ClusterIP, resolve cluster names and reach the API
//! server with their ServiceAccount token; then `node-dapr.sh scenario`: Dapr's own chart,
//! recur's chart with injected sidecars under the restricted profile, deliveries through two
//! sidecars with mTLS, a leader failover and a rollout restart with nothing lost or duplicated.
//! Then `down.sh` must leave nothing behind.
//!
//! Needs root, the node's tools (`RECUR_NODE=1 tests/cluster/build.sh`, which `.ci/run`
//! runs) and recur's images (`make images`, which `make test` runs first). `RECUR_NODE=0` skips it on a machine that cannot run a node; CI never sets it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn script(name: &str, args: &[&str], dir: &Path) -> Output {
    let out = Command::new(format!("{REPO}/tests/cluster/{name}"))
        .args(args)
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The processes whose cgroup is a pod's (under kubepods), as "PID COMMAND LINE".
fn pod_processes() -> std::collections::BTreeSet<String> {
    let mut found = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cgroup) = std::fs::read_to_string(entry.path().join("cgroup")) else {
            continue;
        };
        if cgroup.contains("kubepods") {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.insert(format!(
                "{} {}",
                entry.file_name().to_string_lossy(),
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    found
}

/// Tears the cluster (and its node) down when the test ends, passed or not.
struct Cluster<'a>(&'a Path);

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        let _ = script("down.sh", &[], self.0);
    }
}

#[test]
fn a_node_runs_dapr_and_recur_from_their_charts_and_loses_nothing_across_failover_and_rollout() {
    if std::env::var("RECUR_NODE").as_deref() == Ok("0") {
        eprintln!("RECUR_NODE=0: the node test is skipped");
        return;
    }
    // Processes in a pod's cgroup before the node exists are not the node's (were this machine
    // itself a Kubernetes pod, they would all be).
    let before = pod_processes();
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("cluster");
    let up = script("up.sh", &["--node"], &dir);
    assert!(up.status.success(), "up.sh --node failed");
    let _cluster = Cluster(&dir);
    let node = script("node.sh", &[], &dir);
    assert!(node.status.success(), "node.sh failed");

    let smoke = script("node-smoke.sh", &[], &dir);
    let stdout = String::from_utf8_lossy(&smoke.stdout).to_string();
    print!("{stdout}");
    assert!(smoke.status.success(), "node-smoke.sh failed");
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("node-smoke:"))
        .expect("node-smoke's summary line");
    for want in [
        "ready=2/2",
        "pod_ip=ok",
        "from_pod=ok",
        "dns=ok",
        "apiserver=ok",
    ] {
        assert!(summary.contains(want), "{want} missing from: {summary}");
    }
    assert!(summary.contains("cluster_ip=ok"), "{summary}");

    // Dapr's chart, recur's chart with injected sidecars, the backends, examples/; deliveries
    // through both sidecars, a leader failover and a rollout restart (node-dapr.sh).
    let images = Path::new(REPO).join("target/images/recur.tar");
    assert!(
        images.exists(),
        "{} is missing: run `make images` (make test builds it)",
        images.display()
    );
    let scenario = script("node-dapr.sh", &["scenario"], &dir);
    let stdout = String::from_utf8_lossy(&scenario.stdout).to_string();
    print!("{stdout}");
    assert!(scenario.status.success(), "node-dapr.sh scenario failed");
    let line = stdout
        .lines()
        .rfind(|l| l.starts_with("node:"))
        .expect("the scenario's result line");
    let fields: std::collections::HashMap<&str, &str> = line["node:".len()..]
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .collect();
    for (field, want) in [
        ("recur_ready", "2/2"),
        ("daprd_injected", "yes"),
        ("lost", "0"),
        ("duplicated", "0"),
        ("rollout_lost", "0"),
    ] {
        assert_eq!(fields.get(field), Some(&want), "{field} in: {line}");
    }
    let delivered: u64 = fields["delivered"].parse().expect("delivered is a number");
    assert!(delivered > 0, "nothing delivered: {line}");
    let failover: f64 = fields["failover_s"]
        .parse()
        .expect("failover_s is a number");
    assert!(failover > 0.0, "no failover measured: {line}");

    // --down leaves no process of the node and no bridge.
    let down = script("node.sh", &["--down"], &dir);
    assert!(down.status.success(), "node.sh --down failed");
    let procs = Command::new("pgrep")
        .args(["-f", &dir.display().to_string()])
        .output()
        .unwrap();
    let left: Vec<String> = String::from_utf8_lossy(&procs.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    // The control plane's own processes name the directory too: only the node's must be gone.
    for pid in &left {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        for program in ["kubelet", "containerd", "kube-proxy", "coredns"] {
            assert!(
                !cmdline.contains(&format!("/{program} ")),
                "{program} still runs after --down: {cmdline}"
            );
        }
    }
    // ... no process of any pod (every container's cgroup is under kubepods), and not the Redis
    // on the node's address.
    let left: Vec<String> = pod_processes().difference(&before).cloned().collect();
    assert!(
        left.is_empty(),
        "pods' processes still run after --down: {left:?}"
    );
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            !cmdline.starts_with("redis-server 198.18.0.1:"),
            "the node's Redis still runs after --down: {cmdline}"
        );
    }
    let bridge = Command::new("ip")
        .args(["link", "show", "recur0"])
        .output()
        .unwrap();
    assert!(
        !bridge.status.success(),
        "the bridge recur0 is still there after --down"
    );
}
