//! A whole recur setup on loopback for end-to-end tests: the recording demo backend
//! (`recur-dev backend`), the Dapr sidecars (real daprd when built, else `recur-dev sidecar`, via
//! `tests/cluster/sidecars.sh`) and any number of `recur run` processes watching one namespace.
//! [`Stack::start_with_pubsub`] adds pub/sub (real daprd only): a Redis (`tests/cluster/redis.sh`),
//! the Component `pubsub` (pubsub.redis) and two recording subscribers behind daprd of their own.
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
    /// The request's `traceparent` header, when it had one.
    #[serde(default)]
    pub traceparent: Option<String>,
}

/// One CloudEvent a subscriber received (`recur-dev subscriber`'s record), as daprd delivered it.
#[derive(Clone, Debug, Deserialize)]
pub struct Event {
    /// Arrival order at this subscriber, from 1.
    pub seq: u64,
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub source: Option<String>,
    pub subject: Option<String>,
    pub time: Option<String>,
    /// Added by daprd: the topic and the pub/sub component.
    pub topic: Option<String>,
    pub pubsubname: Option<String>,
    pub datacontenttype: Option<String>,
    pub data: Option<serde_json::Value>,
    /// The delivery's `Content-Type` and `traceparent` headers.
    pub content_type: Option<String>,
    pub traceparent_header: Option<String>,
    /// The event's own `traceparent` attribute (daprd adds it), when it had one.
    #[serde(default)]
    pub traceparent: Option<String>,
    /// The whole delivered body.
    pub cloudevent: serde_json::Value,
    pub received_at: String,
}

/// The pub/sub part of a stack.
struct PubSub {
    redis_port: u16,
    /// `SUBSCRIBER_A_URL`, `SUBSCRIBER_B_URL`: the recording apps.
    subscriber_urls: Vec<String>,
}

/// The pub/sub component [`Stack::start_with_pubsub`] sets up.
pub const PUBSUB: &str = "pubsub";

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
    pubsub: Option<PubSub>,
    /// `127.0.0.1:PORT` of the OTLP/HTTP collector the sidecars and operators export spans to.
    otlp: Option<String>,
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
        Self::start_stack(namespace, None, &[], None).await
    }

    /// Like [`Stack::start`], with tracing: every daprd exports its spans (every request sampled)
    /// to the OTLP/HTTP receiver at `otlp_hostport` (`127.0.0.1:PORT`, a
    /// [`super::otelcol::Collector`]'s `otlp_hostport()`), and every `recur run` the stack starts
    /// gets `OTEL_EXPORTER_OTLP_ENDPOINT=http://<otlp_hostport>` and `OTEL_SERVICE_NAME=recur`.
    /// Needs real daprd.
    pub async fn start_with_tracing(namespace: &str, otlp_hostport: &str) -> Stack {
        Self::start_stack(namespace, None, &[], Some(otlp_hostport)).await
    }

    /// [`Stack::start_with_pubsub`] and [`Stack::start_with_tracing`] together: the subscribers'
    /// daprd export their spans too.
    pub async fn start_with_pubsub_and_tracing(
        namespace: &str,
        topics: &[&str],
        otlp_hostport: &str,
    ) -> Stack {
        assert!(!topics.is_empty(), "needs a topic");
        Self::start_stack(namespace, Some(topics), &[], Some(otlp_hostport)).await
    }

    /// Like [`Stack::start`], with pub/sub: a Redis in the stack's directory, the Component
    /// [`PUBSUB`] (recur's sidecar publishes to it) and two subscribers, each a recording app
    /// behind a daprd of its own, subscribed to every topic of `topics` (route `/events`); each
    /// gets every event ([`Stack::events`]). Needs real daprd and Debian's `redis-server`.
    pub async fn start_with_pubsub(namespace: &str, topics: &[&str]) -> Stack {
        assert!(!topics.is_empty(), "start_with_pubsub needs a topic");
        Self::start_stack(namespace, Some(topics), &[], None).await
    }

    /// Like [`Stack::start_with_pubsub`], and the operator's own sidecar delivers the
    /// `completion_topics` to the operator (completion feedback): it gets an app port
    /// ([`Stack::recur_app_port`], for `recur run --app-addr`) and a Subscription to each topic,
    /// scoped to app id `recur`, route `/completions/pubsub/<topic>`.
    pub async fn start_with_completions(
        namespace: &str,
        topics: &[&str],
        completion_topics: &[&str],
    ) -> Stack {
        assert!(!topics.is_empty() && !completion_topics.is_empty());
        Self::start_stack(namespace, Some(topics), completion_topics, None).await
    }

    async fn start_stack(
        namespace: &str,
        topics: Option<&[&str]>,
        completion_topics: &[&str],
        otlp: Option<&str>,
    ) -> Stack {
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
        let redis_port = match topics {
            Some(_) => {
                // Gone with this process even if the stack is never dropped.
                let parent = std::process::id().to_string();
                let out = script("redis.sh", &["--watch-parent", &parent], dir.path()).await;
                Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
            }
            None => None,
        };
        let pubsub_env = redis_port.clone().zip(topics.map(|t| t.join(",")));
        let completion_env = completion_topics.join(",");
        // The script picks free ports before daprd binds them, so another process can take one
        // in between: a failed start is tried once more, with fresh ports.
        let mut out = sidecars(dir.path(), &backend_url, &pubsub_env, &completion_env, otlp).await;
        if !out.status.success() {
            eprintln!(
                "tests/cluster/sidecars.sh failed ({}): once more, with fresh ports",
                out.status
            );
            out = sidecars(dir.path(), &backend_url, &pubsub_env, &completion_env, otlp).await;
        }
        if !out.status.success() && redis_port.is_some() {
            script("redis.sh", &["--down"], dir.path()).await;
        }
        assert!(
            out.status.success(),
            "tests/cluster/sidecars.sh failed: {}",
            out.status
        );
        let dapr_port = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let pubsub = redis_port.map(|port| {
            let env = std::fs::read_to_string(dir.path().join("sidecars.env")).unwrap();
            let subscriber_urls = ["SUBSCRIBER_A_URL", "SUBSCRIBER_B_URL"]
                .iter()
                .map(|var| {
                    env.lines()
                        .find_map(|l| l.strip_prefix(&format!("{var}=")))
                        .unwrap_or_else(|| panic!("{var} is missing from sidecars.env: {env}"))
                        .to_owned()
                })
                .collect();
            PubSub {
                redis_port: port.parse().unwrap(),
                subscriber_urls,
            }
        });
        Stack {
            dir,
            backend,
            backend_url,
            dapr_port,
            namespace: namespace.into(),
            operators: vec![],
            http,
            pubsub,
            otlp: otlp.map(str::to_owned),
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
    /// tenants in several namespaces, untouched by the other tests' operators and objects. Its
    /// Lease is the stack's own, as a shard's is.
    pub async fn start_selector_operator(&mut self, selector: &str, extra: &[&str]) -> usize {
        let mut args = vec![
            "--selector".to_string(),
            selector.to_string(),
            "--lease-name".to_string(),
            format!("recur-{}", self.namespace),
        ];
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
        let mut command = Command::new(RECUR);
        command
            .args(&op.args)
            .env("KUBECONFIG", &op.kubeconfig)
            .env("DAPR_HTTP_PORT", self.dapr_port.to_string())
            .env_remove("DAPR_HTTP_ENDPOINT")
            .env("RECUR_LOG", "info,recur=debug,kube=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(otlp) = &self.otlp {
            // OTLP/HTTP to <endpoint>/v1/traces; the batch exported every 100 ms, not 5 s.
            command
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
                .env("OTEL_SERVICE_NAME", "recur")
                .env("OTEL_BSP_SCHEDULE_DELAY", "100");
        }
        let child = command.spawn().unwrap();
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

/// Pub/sub, for stacks from [`Stack::start_with_pubsub`].
impl Stack {
    fn pubsub(&self) -> &PubSub {
        self.pubsub
            .as_ref()
            .expect("this stack has no pub/sub: start it with Stack::start_with_pubsub")
    }

    pub fn redis_port(&self) -> u16 {
        self.pubsub().redis_port
    }

    /// The app port of the operator's sidecar (`recur run --app-addr 127.0.0.1:<port>`), for
    /// stacks from [`Stack::start_with_completions`]. One operator of the stack can listen there.
    pub fn recur_app_port(&self) -> u16 {
        let env = std::fs::read_to_string(self.dir.path().join("sidecars.env")).unwrap_or_default();
        env.lines()
            .find_map(|l| l.strip_prefix("RECUR_APP_PORT="))
            .and_then(|p| p.parse().ok())
            .expect("no RECUR_APP_PORT: start the stack with Stack::start_with_completions")
    }

    /// Base URL of subscriber `i`'s recording app (0: `subscriber-a`, 1: `subscriber-b`).
    pub fn subscriber_url(&self, i: usize) -> &str {
        &self.pubsub().subscriber_urls[i]
    }

    /// Every event subscriber `i` received, in arrival order, redeliveries included.
    pub async fn events(&self, subscriber: usize) -> Vec<Event> {
        let url = format!("{}/_dev/events", self.subscriber_url(subscriber));
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until subscriber `i`'s events satisfy `done` and returns them; panics naming
    /// `what` after `timeout`.
    pub async fn wait_events(
        &self,
        subscriber: usize,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Event]) -> bool,
    ) -> Vec<Event> {
        let url = format!("{}/_dev/events", self.subscriber_url(subscriber));
        let what = format!("subscriber {subscriber}: {what}");
        let (http, done) = (&self.http, &done);
        super::wait_for_value(timeout, &what, || {
            let url = url.clone();
            async move {
                let events: Vec<Event> = http.get(url).send().await.ok()?.json().await.ok()?;
                done(&events).then_some(events)
            }
        })
        .await
    }

    /// POSTs `cloudevent` to recur's sidecar: `/v1.0/publish/pubsub/{topic}` as
    /// `application/cloudevents+json`. Returns daprd's status and body (204 and "" when
    /// published), or the transport error.
    pub async fn publish(
        &self,
        topic: &str,
        cloudevent: &serde_json::Value,
    ) -> Result<(u16, String), String> {
        let url = format!(
            "http://127.0.0.1:{}/v1.0/publish/{PUBSUB}/{topic}",
            self.dapr_port
        );
        let resp = self
            .http
            .post(url)
            .header("content-type", "application/cloudevents+json")
            .body(cloudevent.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await.unwrap_or_default()))
    }

    /// Stops Redis (SIGTERM; every acknowledged write is on disk) and starts it again on the
    /// same port with the same data.
    pub async fn restart_redis(&self) {
        self.pubsub();
        script("redis.sh", &["--restart"], self.dir()).await;
    }

    /// Stops Redis; [`Stack::start_redis`] starts it again on the same port, same data.
    pub async fn stop_redis(&self) {
        self.pubsub();
        script("redis.sh", &["--stop"], self.dir()).await;
    }

    pub async fn start_redis(&self) {
        self.pubsub();
        script("redis.sh", &["--start"], self.dir()).await;
    }

    /// Consumers down: stops both subscribers' daprd (SIGTERM). Their apps stay up, with what
    /// they recorded; Redis keeps what is published meanwhile for their consumer groups.
    pub async fn subscribers_down(&self) {
        self.pubsub();
        script("sidecars.sh", &["--subscribers-down"], self.dir()).await;
    }

    /// Starts both subscribers' daprd again and waits until they are subscribed.
    pub async fn subscribers_up(&self) {
        self.pubsub();
        script("sidecars.sh", &["--subscribers-up"], self.dir()).await;
    }
}

/// Runs `tests/cluster/<name> <args...> <dir>` off the async runtime; panics when it fails.
async fn script(name: &str, args: &[&str], dir: &Path) -> std::process::Output {
    let mut command = Command::new(format!("{REPO}/tests/cluster/{name}"));
    command
        .args(args)
        .arg(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    let what = format!("tests/cluster/{name} {} {}", args.join(" "), dir.display());
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    assert!(out.status.success(), "{what} failed: {}", out.status);
    out
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
        if self.pubsub.is_some() {
            let _ = Command::new(format!("{REPO}/tests/cluster/redis.sh"))
                .arg("--down")
                .arg(self.dir.path())
                .stdin(Stdio::null())
                .status();
        }
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

/// Runs `tests/cluster/sidecars.sh` for a stack in `dir` in front of the backend at `url`.
async fn sidecars(
    dir: &Path,
    url: &str,
    pubsub_env: &Option<(String, String)>,
    completion_env: &str,
    otlp: Option<&str>,
) -> std::process::Output {
    let (dir_path, url) = (dir.to_path_buf(), url.to_owned());
    let (pubsub_env, completion_env) = (pubsub_env.clone(), completion_env.to_owned());
    let otlp_env = otlp.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(format!("{REPO}/tests/cluster/sidecars.sh"));
        command
            .arg(&dir_path)
            .arg(&url)
            .env("RECUR_DEV_BIN", recur_dev())
            .env_remove("REDIS_PORT")
            .env_remove("RECUR_COMPLETION_TOPICS")
            .env_remove("OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some((port, topics)) = pubsub_env {
            command
                .env("REDIS_PORT", port)
                .env("SUBSCRIBE_TOPICS", topics);
        }
        if !completion_env.is_empty() {
            command.env("RECUR_COMPLETION_TOPICS", completion_env);
        }
        if let Some(otlp) = otlp_env {
            command.env("OTLP_ENDPOINT", otlp);
        }
        command.output().unwrap()
    })
    .await
    .unwrap()
}
