//! A whole recur setup on loopback for end-to-end tests: the recording demo backend
//! (`recur-dev backend`), the Dapr sidecars (real daprd when built, else `recur-dev sidecar`, via
//! `tests/cluster/sidecars.sh`) and any number of `recur run` processes watching one namespace.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::Deserialize;

use super::{kubeconfig, wait_for};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// Operator flags of the tests with leader election: an 8 s lease renewed every second, calls
/// of at most 2 s (so a call and its write fit the lease's slack).
pub const ELECTION: [&str; 7] = [
    "--leader-elect",
    "--lease-duration",
    "8s",
    "--lease-renew-period",
    "1s",
    "--dapr-timeout",
    "2s",
];

const RECUR: &str = env!("CARGO_BIN_EXE_recur");

/// One request the recording backend received.
#[derive(Clone, Debug, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub path: String,
    pub key: Option<String>,
    pub user_id: Option<String>,
    /// The tenant the call was made for (`X-Recur-Namespace`).
    #[serde(default)]
    pub namespace: Option<String>,
    pub accepted: bool,
    /// The fault the backend injected instead of answering, if any (fail, timeout, reset, down).
    #[serde(default)]
    pub fault: Option<String>,
    pub received_at: String,
    /// When it was answered, or its connection reset or dropped; `None` while in flight.
    #[serde(default)]
    pub answered_at: Option<String>,
    #[serde(default)]
    pub scheduled_at: Option<String>,
    #[serde(default)]
    pub due_at: Option<String>,
    #[serde(default)]
    pub lag_ms: Option<i64>,
}

pub struct Operator {
    child: Option<Child>,
    kubeconfig: PathBuf,
    pub http_port: u16,
    pub log: PathBuf,
    args: Vec<String>,
}

pub struct Stack {
    dir: tempfile::TempDir,
    backend: Child,
    pub backend_url: String,
    pub dapr_port: u16,
    pub namespace: String,
    pub operators: Vec<Operator>,
    http: reqwest::Client,
}

/// `recur-dev` belongs to another package of the workspace, so Cargo defines no
/// `CARGO_BIN_EXE_recur-dev` here; it is built into the same directory as `recur`.
fn recur_dev() -> PathBuf {
    let name = format!("recur-dev{}", std::env::consts::EXE_SUFFIX);
    let path = Path::new(RECUR).with_file_name(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (make test does)",
        path.display()
    );
    path
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// Installs recur's CRDs (once per test process; server-side apply, idempotent) and waits until
/// the apiserver serves them.
pub fn install_crds() {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let out = super::kubectl([
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &format!("{REPO}/crds/"),
        ]);
        assert!(
            out.status.success(),
            "installing the CRDs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = super::kubectl([
            "wait",
            "--for=condition=Established",
            "crd/recurringtasks.recur.dev",
            "crd/reminders.recur.dev",
            "crd/backfills.recur.dev",
            "crd/tenantpolicies.recur.dev",
            "--timeout=60s",
        ]);
        assert!(
            out.status.success(),
            "CRDs not established: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

impl Stack {
    /// Starts the backend and the sidecars (not yet an operator), after installing the CRDs.
    pub async fn start(namespace: &str) -> Stack {
        tokio::task::spawn_blocking(install_crds).await.unwrap();
        let dir = tempfile::Builder::new()
            .prefix("recur-stack.")
            .tempdir()
            .unwrap();
        let backend_port = free_port();
        let backend_url = format!("http://127.0.0.1:{backend_port}");
        let backend = Command::new(recur_dev())
            .args([
                "backend",
                "--listen",
                &format!("127.0.0.1:{backend_port}"),
                "--name",
                "backend",
            ])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("backend.log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("backend.err")).unwrap())
            .spawn()
            .unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let probe = http.clone();
        let url = format!("{backend_url}/_dev/records");
        wait_for(
            Duration::from_secs(30),
            "the demo backend to answer",
            || {
                let (probe, url) = (probe.clone(), url.clone());
                async move {
                    probe
                        .get(url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                }
            },
        )
        .await;
        let dir_path = dir.path().to_path_buf();
        let url = backend_url.clone();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(format!("{REPO}/tests/cluster/sidecars.sh"))
                .arg(&dir_path)
                .arg(&url)
                .env("RECUR_DEV_BIN", recur_dev())
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "tests/cluster/sidecars.sh failed: {}",
            out.status
        );
        let dapr_port = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        Stack {
            dir,
            backend,
            backend_url,
            dapr_port,
            namespace: namespace.into(),
            operators: vec![],
            http,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `recur run --namespace <ns>` with `extra` flags and waits until it is ready.
    pub async fn start_operator(&mut self, extra: &[&str]) -> usize {
        self.start_operator_as(kubeconfig(), extra).await
    }

    /// Like [`Stack::start_operator`], authenticated by `kubeconfig` instead of the admin's.
    pub async fn start_operator_as(&mut self, kubeconfig: &Path, extra: &[&str]) -> usize {
        let mut args = vec!["--namespace".to_string(), self.namespace.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.launch(kubeconfig, args).await
    }

    /// An operator of every namespace that serves only objects labelled `selector`: one test's
    /// tenants in several namespaces, untouched by the other tests' operators and objects.
    pub async fn start_selector_operator(&mut self, selector: &str, extra: &[&str]) -> usize {
        let mut args = vec!["--selector".to_string(), selector.to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.launch(kubeconfig(), args).await
    }

    async fn launch(&mut self, kubeconfig: &Path, extra: Vec<String>) -> usize {
        let i = self.spawn_operator_as(kubeconfig, extra);
        self.wait_ready(i).await;
        i
    }

    /// Starts `recur run --namespace <ns>` with `extra` flags without waiting for it to be
    /// ready (replicas starting at once); see [`Stack::wait_ready`].
    pub fn spawn_operator(&mut self, extra: &[&str]) -> usize {
        let mut args = vec!["--namespace".to_string(), self.namespace.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.spawn_operator_as(kubeconfig(), args)
    }

    fn spawn_operator_as(&mut self, kubeconfig: &Path, extra: Vec<String>) -> usize {
        let http_port = free_port();
        let log = self
            .dir
            .path()
            .join(format!("operator-{}.log", self.operators.len()));
        let mut args: Vec<String> = vec![
            "run".into(),
            "--http-addr".into(),
            format!("127.0.0.1:{http_port}"),
            "--lease-namespace".into(),
            self.namespace.clone(),
        ];
        args.extend(extra);
        let mut op = Operator {
            child: None,
            kubeconfig: kubeconfig.to_path_buf(),
            http_port,
            log,
            args,
        };
        self.spawn(&mut op);
        self.operators.push(op);
        self.operators.len() - 1
    }

    fn spawn(&self, op: &mut Operator) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&op.log)
            .unwrap();
        let child = Command::new(RECUR)
            .args(&op.args)
            .env("KUBECONFIG", &op.kubeconfig)
            .env("DAPR_HTTP_PORT", self.dapr_port.to_string())
            .env_remove("DAPR_HTTP_ENDPOINT")
            .env("RECUR_LOG", "info,recur=debug,kube=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        op.child = Some(child);
    }

    /// Waits for `/health/ready` of operator `i`.
    pub async fn wait_ready(&self, i: usize) {
        let url = format!(
            "http://127.0.0.1:{}/health/ready",
            self.operators[i].http_port
        );
        let http = self.http.clone();
        let log = self.operators[i].log.clone();
        wait_for(
            Duration::from_secs(60),
            &format!("operator {i} to be ready (log: {})", log.display()),
            || {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    http.get(url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                }
            },
        )
        .await;
    }

    /// SIGKILLs operator `i` (no chance to clean up: the crash case).
    pub fn kill_operator(&mut self, i: usize) {
        if let Some(mut child) = self.operators[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERMs operator `i` (a pod's shutdown) and waits for it to exit, at most 60 s.
    pub async fn terminate_operator(&mut self, i: usize) {
        let Some(mut child) = self.operators[i].child.take() else {
            return;
        };
        signal(child.id(), "-TERM");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if child.try_wait().unwrap().is_some() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "operator {i} did not exit within 60 s of SIGTERM (log: {})",
                self.operators[i].log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) operator `i`: a stalled process, whose timers and
    /// lease renewals are late when it resumes.
    pub fn pause_operator(&self, i: usize, paused: bool) {
        let pid = self.operators[i].child.as_ref().unwrap().id();
        signal(pid, if paused { "-STOP" } else { "-CONT" });
    }

    /// Starts operator `i` again with the same flags.
    pub async fn restart_operator(&mut self, i: usize) {
        let mut op = std::mem::replace(
            &mut self.operators[i],
            Operator {
                child: None,
                kubeconfig: PathBuf::new(),
                http_port: 0,
                log: PathBuf::new(),
                args: vec![],
            },
        );
        self.spawn(&mut op);
        self.operators[i] = op;
        self.wait_ready(i).await;
    }

    /// True when operator `i` is still running (it never panics or exits on its own).
    pub fn operator_alive(&mut self, i: usize) -> bool {
        self.operators[i]
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn operator_log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.operators[i].log).unwrap_or_default()
    }

    /// Every request the backend received, in arrival order.
    pub async fn records(&self) -> Vec<Record> {
        let url = format!("{}/_dev/records", self.backend_url);
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Accepted (first-time) requests to `path`.
    pub async fn accepted(&self, path: &str) -> Vec<Record> {
        self.records()
            .await
            .into_iter()
            .filter(|r| r.accepted && r.path == path)
            .collect()
    }

    /// Sets the backend's fault injection (`fail_rate`, `timeout_rate`, `reset_rate`, `fail_next`,
    /// `down`, `hang_ms`, `delay_ms`).
    pub async fn faults(&self, faults: serde_json::Value) {
        let url = format!("{}/_dev/faults", self.backend_url);
        let resp = self.http.post(url).json(&faults).send().await.unwrap();
        assert!(
            resp.status().is_success(),
            "setting faults: {}",
            resp.status()
        );
    }

    /// Pids of the sidecar processes (the operator's own sidecar first).
    pub fn sidecar_pids(&self) -> Vec<i32> {
        let env = std::fs::read_to_string(self.dir.path().join("sidecars.env")).unwrap_or_default();
        env.lines()
            .find_map(|l| l.strip_prefix("SIDECAR_PIDS="))
            .map(|v| {
                v.trim_matches('"')
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the operator's own sidecar: calls through it hang
    /// and time out, as with a sidecar that is down.
    pub fn freeze_sidecar(&self, frozen: bool) {
        let pid = self.sidecar_pids()[0];
        signal(pid as u32, if frozen { "-STOP" } else { "-CONT" });
    }

    /// GETs a path of operator `i`'s HTTP server.
    pub async fn operator_get(&self, i: usize, path: &str) -> (u16, String) {
        let url = format!("http://127.0.0.1:{}{path}", self.operators[i].http_port);
        let resp = self.http.get(url).send().await.unwrap();
        (
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        )
    }
}

/// Sends `sig` (`-TERM`, `-STOP`, ...) to `pid` with kill(1).
fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

impl Drop for Stack {
    fn drop(&mut self) {
        for op in &mut self.operators {
            if let Some(mut child) = op.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = Command::new(format!("{REPO}/tests/cluster/sidecars.sh"))
            .arg("--down")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .status();
        let _ = self.backend.kill();
        let _ = self.backend.wait();
        if std::thread::panicking() {
            // Keep what is needed to understand a failure.
            for entry in std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    eprintln!("--- tail of {}:", path.display());
                    for line in tail.iter().rev() {
                        eprintln!("{line}");
                    }
                }
            }
        }
    }
}
