//! The processes the benchmark starts and stops: `recur run` and `perf record`.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::args::OperatorArgs;
use crate::error::{Res, msg};
use crate::prometheus::sample_sum;
use crate::say;

pub struct Operator {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub http_port: u16,
    pub log: PathBuf,
}

pub fn free_port() -> Res<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| msg(format!("no free port on 127.0.0.1: {e}")))
}

/// Starts `recur run` for `namespace` (all namespaces when `None`) with `extra` flags; its log
/// goes to `<log_dir>/<name>.log`.
pub fn spawn_operator(
    a: &OperatorArgs,
    kubeconfig: &Path,
    namespace: Option<&str>,
    name: &str,
    extra: &[String],
) -> Res<Operator> {
    let http_port = free_port()?;
    std::fs::create_dir_all(&a.log_dir)
        .map_err(|e| msg(format!("creating {}: {e}", a.log_dir.display())))?;
    let log = a.log_dir.join(format!("{name}.log"));
    let file =
        std::fs::File::create(&log).map_err(|e| msg(format!("creating {}: {e}", log.display())))?;
    let err = file
        .try_clone()
        .map_err(|e| msg(format!("{}: {e}", log.display())))?;
    let mut command = tokio::process::Command::new(&a.recur_bin);
    command.arg("run");
    if let Some(namespace) = namespace {
        command.args(["--namespace", namespace]);
    }
    let child = command
        .arg("--workers")
        .arg(a.workers.to_string())
        .args(extra)
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{http_port}"))
        .env("KUBECONFIG", kubeconfig)
        .env("DAPR_HTTP_PORT", a.dapr_http_port.to_string())
        .env_remove("DAPR_HTTP_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| msg(format!("starting {}: {e}", a.recur_bin.display())))?;
    let pid = child
        .id()
        .ok_or_else(|| msg("the operator exited at once"))?;
    say(format!(
        "started recur run{} --workers {}{} (pid {pid}, log {})",
        namespace.map_or(String::new(), |n| format!(" --namespace {n}")),
        a.workers,
        extra.iter().map(|e| format!(" {e}")).collect::<String>(),
        log.display()
    ));
    Ok(Operator {
        child,
        pid,
        http_port,
        log,
    })
}

impl Operator {
    pub async fn wait_ready(&mut self, http: &reqwest::Client) -> Res<()> {
        let url = format!("http://127.0.0.1:{}/health/ready", self.http_port);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(msg(format!(
                    "the operator exited ({status}); see {}",
                    self.log.display()
                )));
            }
            if http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(msg(format!(
                    "the operator was not ready within 120s; see {}",
                    self.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn metrics(&self, http: &reqwest::Client) -> Res<String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.http_port);
        Ok(http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    pub async fn delivered(&self, http: &reqwest::Client) -> Res<f64> {
        Ok(sample_sum(
            &self.metrics(http).await?,
            "recur_occurrences_total",
            &[("kind", "RecurringTask"), ("outcome", "delivered")],
        ))
    }

    /// Status writes of RecurringTasks the apiserver accepted so far
    /// (`recur_status_writes_total{outcome="ok"}`).
    pub async fn status_writes_ok(&self, http: &reqwest::Client) -> Res<f64> {
        Ok(sample_sum(
            &self.metrics(http).await?,
            "recur_status_writes_total",
            &[("kind", "RecurringTask"), ("outcome", "ok")],
        ))
    }

    /// Reconciles of RecurringTasks so far (`recur_reconciles_total`).
    pub async fn reconciles(&self, http: &reqwest::Client) -> Res<f64> {
        Ok(sample_sum(
            &self.metrics(http).await?,
            "recur_reconciles_total",
            &[("kind", "RecurringTask")],
        ))
    }

    /// The sum of the samples of gauge `name` (no labels), e.g. `recur_shards_held`.
    pub async fn gauge(&self, http: &reqwest::Client, name: &str) -> Res<f64> {
        Ok(sample_sum(&self.metrics(http).await?, name, &[]))
    }

    /// SIGTERM, then SIGKILL after 15 s.
    pub async fn stop(mut self) {
        signal(self.pid, "-TERM").await;
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            say(format!(
                "operator {} ignored SIGTERM for 15s: killing it",
                self.pid
            ));
            let _ = self.child.kill().await;
        }
    }
}

/// Sends `signal` (`-TERM`, `-INT`) to `pid` with kill(1); a process already gone is no error.
pub async fn signal(pid: u32, signal: &str) {
    let _ = tokio::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .await;
}

/// `perf record` of the whole machine (every process, so the apiserver, etcd and the sidecar
/// show next to recur), stopped with SIGINT so that it writes its file.
pub struct Perf {
    child: tokio::process::Child,
    pid: u32,
    path: PathBuf,
}

impl Perf {
    pub fn start(path: &Path) -> Res<Self> {
        let child = tokio::process::Command::new("perf")
            .args(["record", "-a", "-g", "-e", "cpu-clock", "-F", "499", "-o"])
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                msg(format!(
                    "starting perf record: {e} (apt-get install linux-perf)"
                ))
            })?;
        let pid = child
            .id()
            .ok_or_else(|| msg("perf record exited at once"))?;
        say(format!(
            "perf record -a running (pid {pid}) into {}",
            path.display()
        ));
        Ok(Perf {
            child,
            pid,
            path: path.to_owned(),
        })
    }

    pub async fn stop(mut self) -> Res<()> {
        signal(self.pid, "-INT").await;
        let status = tokio::time::timeout(Duration::from_secs(120), self.child.wait())
            .await
            .map_err(|_| msg("perf record did not stop within 120s"))?
            .map_err(|e| msg(format!("waiting for perf record: {e}")))?;
        say(format!(
            "perf record ended ({status}): {}",
            self.path.display()
        ));
        Ok(())
    }
}
