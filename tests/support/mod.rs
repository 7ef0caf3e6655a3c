//! Helpers for integration tests that need a real control plane (etcd, kube-apiserver and
//! kube-controller-manager, built by `tests/cluster/build.sh`). A test file includes them with
//! `mod support;`.
//!
//! The first use in a test process either reuses the cluster `KUBECONFIG` names (when it is on
//! loopback and answers `/readyz`, as under `make test`; `RECUR_TEST_REUSE_CLUSTER=0` forbids
//! that) or starts one with `tests/cluster/up.sh --watch-parent <this pid>`, which tears it down
//! when the test process exits. Each test gets its own namespace from [`TestNamespace`].
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::OsStr;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

pub mod checker;
pub mod otelcol;
pub mod stack;
pub mod webhook;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Label on every namespace a test creates, so leftovers are easy to find.
pub const TEST_LABEL: &str = "recur.dev/test";

/// The directory holding kubectl, kube-apiserver, etcd, helm, ...: `$RECUR_BIN_DIR`, else what
/// `tests/cluster/build.sh` prints (it builds whatever is missing first, which takes minutes once).
pub fn bin_dir() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(dir) = std::env::var_os("RECUR_BIN_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        let out = Command::new(format!("{REPO}/tests/cluster/build.sh"))
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("could not run tests/cluster/build.sh: {e}"));
        assert!(
            out.status.success(),
            "tests/cluster/build.sh failed ({}); its messages are above",
            out.status
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

struct Cluster {
    kubeconfig: PathBuf,
}

/// The cluster of this test process, started (or found) on first use. A failed start is
/// remembered: every test that needs the cluster then fails with the same message.
fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    match CLUSTER.get_or_init(start_or_reuse) {
        Ok(cluster) => cluster,
        Err(e) => panic!("{e}"),
    }
}

fn start_or_reuse() -> Result<Cluster, String> {
    let reuse = std::env::var("RECUR_TEST_REUSE_CLUSTER").as_deref() != Ok("0");
    if let Some(kubeconfig) = std::env::var_os("KUBECONFIG").filter(|v| reuse && !v.is_empty()) {
        let kubeconfig = PathBuf::from(kubeconfig);
        match reusable(&kubeconfig) {
            Ok(()) => return Ok(Cluster { kubeconfig }),
            Err(why) => eprintln!(
                "[support] not reusing KUBECONFIG={}: {why}; starting a cluster of our own",
                kubeconfig.display()
            ),
        }
    }
    start_cluster(None).map(|kubeconfig| Cluster { kubeconfig })
}

/// Starts a control plane with `tests/cluster/up.sh` in `dir` (default: a fresh temporary
/// directory), torn down when this test process exits at the latest; returns its kubeconfig.
/// For a test that needs a cluster of its own (the shared one is [`kubeconfig`]).
pub fn start_cluster(dir: Option<&Path>) -> Result<PathBuf, String> {
    let out = Command::new(format!("{REPO}/tests/cluster/up.sh"))
        .arg("--watch-parent")
        .arg(std::process::id().to_string())
        .args(dir)
        .env("RECUR_BIN_DIR", bin_dir())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("could not run tests/cluster/up.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "tests/cluster/up.sh failed ({}); its messages are above",
            out.status
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("export KUBECONFIG="))
        .map(PathBuf::from)
        .filter(|path| path.is_file())
        .ok_or_else(|| format!("tests/cluster/up.sh printed no usable KUBECONFIG: {stdout:?}"))
}

/// A cluster may be reused only when it is on loopback (never someone's real cluster) and ready.
fn reusable(kubeconfig: &Path) -> Result<(), String> {
    let config = Kubeconfig::read_from(kubeconfig).map_err(|e| format!("unreadable: {e}"))?;
    let context = config
        .current_context
        .as_deref()
        .ok_or("it has no current-context")?;
    let cluster_name = config
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .ok_or_else(|| format!("its context {context} is missing"))?;
    let server = config
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .ok_or_else(|| format!("its cluster {cluster_name} has no server"))?;
    let host = server
        .parse::<http::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(str::to_owned))
        .ok_or_else(|| format!("its server {server} is not a URL"))?;
    if !matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]") {
        return Err(format!("its server {server} is not on loopback"));
    }
    let out = Command::new(bin_dir().join("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["get", "--raw", "/readyz", "--request-timeout=5s"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run kubectl: {e}"))?;
    if out.status.success() && out.stdout.trim_ascii() == b"ok" {
        Ok(())
    } else {
        Err(format!(
            "{server}/readyz did not answer ok: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Path of the admin kubeconfig of the test cluster (blocks while the cluster starts).
pub fn kubeconfig() -> &'static Path {
    &cluster().kubeconfig
}

/// A kube `Config` for the test cluster's admin. Tests may change it (another token, say).
pub async fn config() -> Config {
    // Starting the cluster blocks for seconds: keep it off the async runtime's thread.
    let path = tokio::task::spawn_blocking(|| kubeconfig().to_path_buf())
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let kubeconfig = Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("reading kubeconfig {}: {e}", path.display()));
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", path.display()))
}

/// A new admin client for the test cluster. Make one per test: a client belongs to the tokio
/// runtime it was made on, and each `#[tokio::test]` has its own.
pub async fn client() -> Client {
    Client::try_from(config().await).unwrap_or_else(|e| panic!("building a kube client: {e}"))
}

/// Runs the built kubectl against the test cluster and returns what it did (status, output).
pub fn kubectl<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(bin_dir().join("kubectl"))
        .env("KUBECONFIG", kubeconfig())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running kubectl: {e}"))
}

/// Like [`kubectl`], with `input` on kubectl's standard input (`-f -`).
pub fn kubectl_input<I, S>(args: I, input: &[u8]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    use std::io::Write;
    let mut child = Command::new(bin_dir().join("kubectl"))
        .env("KUBECONFIG", kubeconfig())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running kubectl: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("running kubectl: {e}"))
}

/// The reasons of the events in `namespace` that match `field_selector` (`""` for all), as
/// kubectl lists them.
pub fn event_reasons(namespace: &str, field_selector: &str) -> Vec<String> {
    let out = kubectl([
        "get",
        "events.events.k8s.io",
        "-n",
        namespace,
        "--field-selector",
        field_selector,
        "-o",
        "json",
    ]);
    assert!(
        out.status.success(),
        "kubectl get events: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str().map(String::from))
        .collect()
}

/// A DNS-label-safe name, unique across tests and test processes: `prefix-<pid>-<n>-<time>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut clean: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(30)
        .collect();
    clean = clean.trim_matches('-').to_owned();
    if !clean.starts_with(|c: char| c.is_ascii_lowercase()) {
        clean.insert_str(0, "t-");
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{clean}-{:x}-{}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos % 0x10000
    )
}

/// A namespace of one test, labelled [`TEST_LABEL`]. Call [`TestNamespace::cleanup`] at the end;
/// if the test never gets there (it failed), `Drop` asks kubectl to delete it without waiting.
pub struct TestNamespace {
    name: String,
    client: Client,
    cleaned: bool,
}

impl TestNamespace {
    pub async fn new(client: &Client, prefix: &str) -> Self {
        let name = unique_name(prefix);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("creating test namespace {name}: {e}"));
        Self {
            name,
            client: client.clone(),
            cleaned: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Deletes the namespace (and so everything in it) without waiting for it to be gone.
    pub async fn cleanup(mut self) {
        self.cleaned = true;
        match Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => panic!("deleting test namespace {}: {e}", self.name),
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // The cluster exists, or this namespace would not.
        delete_quietly("namespace", &self.name);
    }
}

/// Deletes `kind`/`name` without waiting and without a word, for `Drop`: no async there (the
/// runtime may be shutting down) and no panic (we may be unwinding), so a best-effort kubectl.
pub fn delete_quietly(kind: &str, name: &str) {
    let _ = Command::new(bin_dir().join("kubectl"))
        .env("KUBECONFIG", kubeconfig())
        .args(["delete", kind, name, "--wait=false", "--ignore-not-found"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Polls `condition` until it is true; panics naming `what` when `timeout` passes first.
pub async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for_value(timeout, what, || {
        let check = condition();
        async move { check.await.then_some(()) }
    })
    .await
}

/// Polls `probe` until it yields a value and returns it; panics naming `what` when `timeout`
/// passes first. A probe that hangs counts against the same deadline.
pub async fn wait_for_value<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        if let Ok(Some(value)) = tokio::time::timeout(left, probe()).await {
            return value;
        }
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(delay.min(left)).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}
