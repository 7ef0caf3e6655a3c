//! The Helm chart (charts/recur) against the real tools: helm's strict lint and JSON-schema
//! checks, the real kube-apiserver's server-side dry-run of everything the chart renders, an
//! install whose ServiceAccount token is then shown to hold exactly the rights the operator
//! needs, the Pod Security Standard "restricted", the examples, and the CRD copies.
//!
//! Tests that need a cluster use the local control plane of tests/cluster (see tests/support).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

// ------------------------------------------------------------------------------------------------
// Running the tools

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    root().join("charts/recur")
}

/// `--kube-version` for rendering without a cluster: the version tests/cluster pins (helm's own
/// default follows its client-go, one minor older). Tests with a cluster ask it instead.
fn kube_version() -> [String; 2] {
    let pins = std::fs::read_to_string(root().join("tests/cluster/versions.sh")).unwrap();
    let version = pins
        .lines()
        .find_map(|l| l.strip_prefix("K8S_VERSION="))
        .expect("K8S_VERSION in tests/cluster/versions.sh");
    ["--kube-version".to_string(), version.trim().to_string()]
}

fn all_options() -> PathBuf {
    chart().join("ci/all-options-values.yaml")
}

/// A helm with its own config, cache and data directories, so tests neither read nor write the
/// user's (repositories, registry logins).
fn helm(home: &Path) -> Command {
    let mut cmd = Command::new(support::bin_dir().join("helm"));
    cmd.env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("HELM_KUBECONTEXT")
        .env_remove("HELM_NAMESPACE");
    cmd
}

/// kubectl as the cluster's admin.
fn kubectl() -> Command {
    let mut cmd = Command::new(support::bin_dir().join("kubectl"));
    cmd.arg("--kubeconfig").arg(support::kubeconfig());
    cmd
}

fn describe(cmd: &Command) -> String {
    let args: Vec<_> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    format!("{} {}", cmd.get_program().to_string_lossy(), args.join(" "))
}

/// Runs `cmd` (with `stdin` fed to it when given) and returns its output, whatever the status.
fn output(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", describe(cmd)));
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Runs `cmd` and returns its stdout; fails the test with stdout and stderr when it fails.
fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> String {
    let out = output(cmd, stdin);
    assert!(
        out.status.success(),
        "{} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        describe(cmd),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `helm template` of the chart into the given namespace, for the cluster's Kubernetes version.
fn template(home: &Path, release: &str, namespace: &str, args: &[&str]) -> String {
    let mut cmd = helm(home);
    cmd.args(["template", release])
        .arg(chart())
        .args(["--namespace", namespace]);
    cmd.args(["--kube-version", &server_version()]).args(args);
    run(&mut cmd, None)
}

/// The API server's version (`v1.37.2`), so rendering sees the cluster it is validated by.
fn server_version() -> String {
    let out = run(kubectl().args(["version", "-o", "json"]), None);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["serverVersion"]["gitVersion"]
        .as_str()
        .expect("serverVersion.gitVersion")
        .to_string()
}

/// The documents of a multi-document YAML stream, as JSON (empty documents dropped).
fn documents(yaml: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml)
        .unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{yaml}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn only<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = find(docs, kind);
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind}, found {}",
        found.len()
    );
    found[0]
}

/// The `recur run` arguments and the env of the operator container.
fn operator_container(docs: &[Value]) -> &Value {
    let containers = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(
        containers.len(),
        1,
        "one container (the Dapr sidecar is injected, not rendered)"
    );
    &containers[0]
}

fn args_of(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// Creates the CRDs of `paths` (server-side apply, idempotent) and waits until they are served.
fn apply_crds(paths: &[PathBuf]) {
    for path in paths {
        run(
            kubectl()
                .args(["apply", "--server-side", "--force-conflicts", "-f"])
                .arg(path),
            None,
        );
        run(
            kubectl()
                .args([
                    "wait",
                    "--for",
                    "condition=established",
                    "--timeout=60s",
                    "-f",
                ])
                .arg(path),
            None,
        );
    }
}

/// The chart's CRD files; fails with how to make them when there are none.
fn chart_crds() -> Vec<PathBuf> {
    let dir = chart().join("crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    assert!(
        !files.is_empty(),
        "{} holds no CRDs: generate them with `cargo run -- crd --out-dir crds` and copy crds/*.yaml there",
        dir.display()
    );
    files
}

fn servicemonitor_crd() -> PathBuf {
    root().join("tests/chart/servicemonitor-crd.yaml")
}

fn cert_manager_crds() -> PathBuf {
    root().join("tests/chart/cert-manager-crds.yaml")
}

fn dapr_crds() -> PathBuf {
    root().join("tests/chart/dapr-crds.yaml")
}

/// The object of `kind` named `name`.
fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// A namespace for one test (labelled like support's), deleted without waiting when dropped. The
/// tests here are synchronous (they drive helm and kubectl), hence not `support::TestNamespace`.
struct Namespace(String);

impl Namespace {
    fn new(prefix: &str) -> Namespace {
        let name = support::unique_name(prefix);
        run(kubectl().args(["create", "namespace", &name]), None);
        run(
            kubectl().args([
                "label",
                "namespace",
                &name,
                &format!("{}=true", support::TEST_LABEL),
            ]),
            None,
        );
        Namespace(name)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = output(
            kubectl().args([
                "delete",
                "namespace",
                &self.0,
                "--wait=false",
                "--ignore-not-found",
            ]),
            None,
        );
    }
}

/// A Helm release, uninstalled when dropped (so its ClusterRole and binding go too).
struct Release {
    home: tempfile::TempDir,
    name: String,
    namespace: String,
    /// What `helm install` printed (status and NOTES.txt).
    printed: String,
}

impl Release {
    fn install(name: &str, namespace: &str, args: &[&str]) -> Release {
        let home = tempfile::tempdir().unwrap();
        let mut cmd = helm(home.path());
        cmd.args(["install", name])
            .arg(chart())
            .args(["--namespace", namespace, "--kubeconfig"]);
        // The test cluster has no Service routing: the release's webhook must never be called, so
        // it reviews only objects labelled for it, which no test makes.
        let never = format!(
            r#"webhook.objectSelector={{"matchLabels":{{"recur.dev/chart-test-review":"{namespace}"}}}}"#
        );
        cmd.arg(support::kubeconfig())
            .args(["--timeout", "2m", "--set-json", &never])
            .args(args);
        let out = run(&mut cmd, None);
        assert!(
            out.contains("STATUS: deployed"),
            "helm install did not report a deployed release:\n{out}"
        );
        Release {
            home,
            name: name.to_string(),
            namespace: namespace.to_string(),
            printed: out,
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let mut cmd = helm(self.home.path());
        cmd.args([
            "uninstall",
            &self.name,
            "--namespace",
            &self.namespace,
            "--kubeconfig",
        ])
        .arg(support::kubeconfig());
        let _ = output(&mut cmd, None);
    }
}

// ------------------------------------------------------------------------------------------------
// A ServiceAccount's token as a kubeconfig (reused by the operator-as-chart-ServiceAccount tests)

/// Writes a kubeconfig into `dir` that authenticates with a fresh TokenRequest token of
/// ServiceAccount `namespace/service_account` (valid for an hour), with the admin kubeconfig's
/// server and CA, and returns its path. Nothing else of the admin's credentials is copied.
pub fn token_kubeconfig(namespace: &str, service_account: &str, dir: &Path) -> PathBuf {
    let token = run(
        kubectl().args([
            "create",
            "token",
            service_account,
            "-n",
            namespace,
            "--duration=1h",
        ]),
        None,
    );
    let token = token.trim();
    assert!(!token.is_empty(), "kubectl create token printed no token");
    let admin: Value = serde_json::from_str(&run(
        kubectl().args([
            "config",
            "view",
            "--raw",
            "--minify",
            "--flatten",
            "-o",
            "json",
        ]),
        None,
    ))
    .unwrap();
    let cluster = &admin["clusters"][0]["cluster"];
    let server = cluster["server"]
        .as_str()
        .expect("the admin kubeconfig names no server");
    let mut cluster_entry = json!({ "server": server });
    if let Some(ca) = cluster["certificate-authority-data"].as_str() {
        cluster_entry["certificate-authority-data"] = json!(ca);
    }
    let user = format!("system:serviceaccount:{namespace}:{service_account}");
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "cluster", "cluster": cluster_entry }],
        "users": [{ "name": user, "user": { "token": token } }],
        "contexts": [{ "name": "sa", "context": { "cluster": "cluster", "user": user, "namespace": namespace } }],
        "current-context": "sa",
    });
    let path = dir.join(format!("kubeconfig-{namespace}-{service_account}"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).unwrap();
    // JSON is YAML: kubectl and kube::Config read it as a kubeconfig.
    file.write_all(serde_json::to_string_pretty(&config).unwrap().as_bytes())
        .unwrap();
    path
}

/// What `kubectl auth can-i` answers for the holder of `kubeconfig`.
fn can_i(kubeconfig: &Path, args: &[&str]) -> bool {
    let mut cmd = Command::new(support::bin_dir().join("kubectl"));
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["auth", "can-i"])
        .args(args);
    let out = output(&mut cmd, None);
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match (out.status.code(), answer.as_str()) {
        (Some(0), "yes") => true,
        (Some(1), "no") => false,
        _ => panic!(
            "{} gave no yes/no answer ({}): {answer}\n{}",
            describe(&cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Asserts every `(args, expected)` and reports all the wrong answers at once. The API server's
/// RBAC authorizer reads bindings from an informer cache, so a binding just created may take a
/// moment to count: the checks are repeated until all hold or 30 s pass. A right that should be
/// missing cannot appear and vanish again, so the repetition hides no excess right.
fn assert_rights(kubeconfig: &Path, who: &str, checks: &[(&[&str], bool)]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let wrong: Vec<String> = checks
            .iter()
            .filter(|(args, expected)| can_i(kubeconfig, args) != *expected)
            .map(|(args, expected)| {
                format!(
                    "can-i {} should be {}",
                    args.join(" "),
                    if *expected { "yes" } else { "no" }
                )
            })
            .collect();
        if wrong.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{who} has the wrong rights (after 30 s):\n  {}",
            wrong.join("\n  ")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

// ------------------------------------------------------------------------------------------------
// 1. lint

#[test]
fn chart_passes_strict_lint_with_default_and_all_options_values() {
    let home = tempfile::tempdir().unwrap();
    for extra in [
        vec![],
        vec!["--values".to_string(), all_options().display().to_string()],
    ] {
        let out = run(
            helm(home.path())
                .args(["lint", "--strict"])
                .arg(chart())
                .args(&extra),
            None,
        );
        assert!(
            out.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{out}"
        );
        assert!(
            !out.contains("[WARNING]") && !out.contains("[ERROR]"),
            "{out}"
        );
    }
}

// ------------------------------------------------------------------------------------------------
// 2. everything rendered is valid for the real API server

#[test]
fn rendered_manifests_pass_server_side_dry_run() {
    // The ServiceMonitor's CRD is not part of Kubernetes: a trimmed copy of it stands in.
    apply_crds(&chart_crds());
    apply_crds(&[servicemonitor_crd(), cert_manager_crds(), dapr_crds()]);
    let home = tempfile::tempdir().unwrap();
    let release_ns = Namespace::new("chart-dry");
    let watched = Namespace::new("chart-dry-watched");
    let default = template(home.path(), "recur", &release_ns.0, &[]);
    let all = template(
        home.path(),
        "recur",
        &release_ns.0,
        &[
            "--values",
            &all_options().display().to_string(),
            "--set",
            &format!("watchNamespace={}", watched.0),
        ],
    );
    // Completion feedback with the chart's own Dapr Configuration (all-options names another).
    let completion = template(
        home.path(),
        "recur",
        &release_ns.0,
        &[
            "--set",
            "completion.enabled=true",
            "--set-json",
            r#"completion.subscriptions=[{"topic":"team-a.completed"}]"#,
        ],
    );
    for (name, manifests) in [
        ("default values", &default),
        ("all-options values", &all),
        ("completion values", &completion),
    ] {
        let docs = documents(manifests);
        let out = run(
            kubectl().args([
                "apply",
                "--server-side",
                "--dry-run=server",
                "--field-manager=chart-test",
                "-f",
                "-",
            ]),
            Some(manifests.as_bytes()),
        );
        let applied = out
            .lines()
            .filter(|l| l.ends_with("(server dry run)"))
            .count();
        assert_eq!(
            applied,
            docs.len(),
            "{name}: every document must be accepted:\n{out}"
        );
    }
    assert!(
        find(&documents(&all), "ServiceMonitor").len() == 1,
        "the all-options values render a ServiceMonitor"
    );
    assert_eq!(find(&documents(&all), "Subscription").len(), 2);
    assert_eq!(find(&documents(&completion), "Configuration").len(), 1);
}

/// What the options turn into, checked on the rendered objects.
#[test]
fn rendered_manifests_wire_the_options() {
    let home = tempfile::tempdir().unwrap();
    let render = |args: &[&str]| {
        let mut cmd = helm(home.path());
        cmd.args(["template", "rel"])
            .arg(chart())
            .args(["--namespace", "ops"])
            .args(kube_version())
            .args(args);
        documents(&run(&mut cmd, None))
    };

    // Defaults: every namespace, leader election, probes, restricted security context, Dapr.
    let docs = render(&[]);
    let c = operator_container(&docs);
    let args = args_of(c);
    assert_eq!(
        args[0], "run",
        "the image's CMD is replaced by the args, so they start with the subcommand"
    );
    // The pod's grace covers a reconcile in flight at SIGTERM, each step bounded: the task's
    // read (10 s), one event (10 s), the call (--dapr-timeout, 5 s) and the status write (10 s),
    // then the Lease's release. With 30 s, a kill could land between a call and its write.
    let grace =
        only(&docs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_i64()
            .unwrap();
    assert!(args.contains(&"--dapr-timeout=5s".to_string()), "{args:?}");
    assert!(
        grace >= 10 + 10 + 5 + 10 + 5,
        "terminationGracePeriodSeconds {grace}"
    );
    for want in [
        "--leader-elect",
        "--lease-name=rel-recur-leader",
        "--lease-namespace=ops",
        "--http-addr=0.0.0.0:8080",
        "--dapr-health-check=true",
    ] {
        assert!(
            args.contains(&want.to_string()),
            "missing {want} in {args:?}"
        );
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--namespace")),
        "no --namespace by default: {args:?}"
    );
    assert!(
        !args.iter().any(|a| a.starts_with("--selector")),
        "every object by default: {args:?}"
    );
    // A shard: its selector, and a Lease of its own (RBAC on that name).
    let shard = render(&[
        "--set",
        "operator.selector=recur.dev/shard=0",
        "--set",
        "leaderElection.leaseName=recur-shard-0",
    ]);
    let shard_args = args_of(operator_container(&shard));
    for want in ["--selector=recur.dev/shard=0", "--lease-name=recur-shard-0"] {
        assert!(
            shard_args.contains(&want.to_string()),
            "missing {want} in {shard_args:?}"
        );
    }
    let lease_rule = find(&shard, "Role")
        .into_iter()
        .flat_map(|r| r["rules"].as_array().cloned().unwrap_or_default())
        .find(|rule| rule["resources"] == json!(["leases"]) && rule.get("resourceNames").is_some());
    assert_eq!(
        lease_rule.map(|r| r["resourceNames"].clone()),
        Some(json!(["recur-shard-0"])),
        "the shard's Lease is the one the operator may update"
    );
    // Shards: the flag, get/update on each shard's and member slot's Lease and no other, and
    // list on the namespace's Leases, which one Lease never needs.
    let lease_rules = |docs: &[Value]| -> Vec<Value> {
        find(docs, "Role")
            .into_iter()
            .flat_map(|r| r["rules"].as_array().cloned().unwrap_or_default())
            .filter(|rule| rule["resources"] == json!(["leases"]))
            .collect()
    };
    assert!(
        !lease_rules(&docs)
            .iter()
            .any(|r| r["verbs"] == json!(["list"])),
        "one Lease needs no list"
    );
    let sharded = render(&["--set", "leaderElection.shards=2"]);
    assert!(args_of(operator_container(&sharded)).contains(&"--shards=2".to_string()));
    assert!(!args.iter().any(|a| a.starts_with("--shards")), "{args:?}");
    let rules = lease_rules(&sharded);
    assert_eq!(
        rules
            .iter()
            .find(|r| r.get("resourceNames").is_some())
            .map(|r| (r["resourceNames"].clone(), r["verbs"].clone())),
        Some((
            json!([
                "rel-recur-leader-shard-0",
                "rel-recur-leader-member-0",
                "rel-recur-leader-shard-1",
                "rel-recur-leader-member-1"
            ]),
            json!(["get", "update"])
        ))
    );
    assert!(
        rules
            .iter()
            .any(|r| r["verbs"] == json!(["list"]) && r.get("resourceNames").is_none())
    );
    // With election a rolling update may overlap pods: one more at a time, none fewer.
    let strategy = &only(&docs, "Deployment")["spec"]["strategy"];
    assert_eq!(
        strategy,
        &json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    );
    assert_eq!(
        c["image"], "ghcr.io/recur-dev/recur:0.1.0",
        "the tag defaults to appVersion"
    );
    assert_eq!(
        c["ports"],
        json!([
            { "name": "http", "containerPort": 8080, "protocol": "TCP" },
            { "name": "webhook", "containerPort": 9443, "protocol": "TCP" }
        ])
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({ "path": "/health/live", "port": "http" })
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({ "path": "/health/ready", "port": "http" })
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    assert_eq!(
        env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert!(
        !env.contains_key("DAPR_API_TOKEN"),
        "no token unless configured"
    );
    assert!(
        !env.contains_key("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "no span export unless configured"
    );
    assert_eq!(env["OTEL_SERVICE_NAME"]["value"], "recur");
    assert_eq!(env["OTEL_TRACES_SAMPLER"]["value"], "parentbased_always_on");
    let deployment = only(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"];
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["dapr.io/enabled"], "true");
    assert_eq!(ann["dapr.io/app-id"], "rel-recur");
    assert!(
        ann.get("dapr.io/app-port").is_none(),
        "recur is a Dapr client: no app port by default"
    );
    let spread = pod["spec"]["topologySpreadConstraints"].as_array().unwrap();
    assert_eq!(spread.len(), 2);
    for c in spread {
        assert_eq!(
            c["labelSelector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"],
            "spread over this release's pods"
        );
    }
    assert_eq!(find(&docs, "ClusterRole").len(), 1);
    assert_eq!(find(&docs, "ClusterRoleBinding").len(), 1);
    assert_eq!(
        find(&docs, "Role").len(),
        2,
        "the leader-election Role and the webhook Secret's"
    );
    assert_eq!(
        only(&docs, "PodDisruptionBudget")["spec"]["minAvailable"],
        1
    );
    assert!(find(&docs, "NetworkPolicy").is_empty() && find(&docs, "ServiceMonitor").is_empty());
    assert_eq!(
        named(&docs, "Service", "rel-recur")["spec"]["ports"],
        json!([{ "name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP" }])
    );

    // All options: namespaced RBAC, token by reference, extra metadata, optional objects.
    let docs = render(&["--values", &all_options().display().to_string()]);
    let c = operator_container(&docs);
    let args = args_of(c);
    assert!(
        args.contains(&"--namespace=recur-watched".to_string()),
        "{args:?}"
    );
    // watchNamespace: no cluster-wide rights on tasks and reminders; the ClusterRole only reads
    // TenantPolicies and namespaces (cert-manager mode: no webhook configuration rights).
    let cluster_rules = &only(&docs, "ClusterRole")["rules"];
    assert_eq!(
        cluster_rules,
        &json!([
            {"apiGroups": ["recur.dev"], "resources": ["tenantpolicies"], "verbs": ["list", "watch"]},
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}
        ])
    );
    let roles = find(&docs, "Role");
    assert_eq!(roles.len(), 2);
    assert!(
        roles
            .iter()
            .any(|r| r["metadata"]["namespace"] == "recur-watched"),
        "the watch Role lives in the watched namespace"
    );
    assert!(roles.iter().any(|r| r["metadata"]["namespace"] == "ops"
        && r["metadata"]["name"] == "recur-all-leader-election"));
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    assert_eq!(
        env["DAPR_API_TOKEN"]["valueFrom"]["secretKeyRef"],
        json!({ "name": "dapr-api-token", "key": "token" })
    );
    assert!(
        env["DAPR_API_TOKEN"].get("value").is_none(),
        "the token itself never appears in the manifest"
    );
    for (name, value) in [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://otel-collector.observability:4318",
        ),
        ("OTEL_SERVICE_NAME", "recur-prod"),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
    ] {
        assert_eq!(env[name]["value"], value, "{name}");
    }
    // Tracing on: the policy lets the pod reach the collector, and only on its port.
    let egress = only(&docs, "NetworkPolicy")["spec"]["egress"]
        .as_array()
        .unwrap();
    let otlp = egress
        .iter()
        .find(|rule| rule["ports"] == json!([{"port": 4318, "protocol": "TCP"}]))
        .expect("an egress rule to the collector's port");
    assert_eq!(
        otlp["to"][0]["podSelector"]["matchLabels"]["app"],
        "otel-collector"
    );
    let pod = &only(&docs, "Deployment")["spec"]["template"];
    assert_eq!(
        pod["metadata"]["annotations"]["dapr.io/api-token-secret"],
        "dapr-api-token"
    );
    assert_eq!(pod["metadata"]["annotations"]["dapr.io/app-port"], "8091");
    assert_eq!(pod["metadata"]["labels"]["tier"], "control");
    assert!(
        c["image"]
            .as_str()
            .unwrap()
            .ends_with("@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
    );
    for doc in &docs {
        assert_eq!(
            doc["metadata"]["labels"]["team"], "platform",
            "commonLabels on {}",
            doc["kind"]
        );
        assert_eq!(
            doc["metadata"]["annotations"]["example.test/owner"], "platform",
            "commonAnnotations on {}",
            doc["kind"]
        );
    }
    assert_eq!(
        only(&docs, "PodDisruptionBudget")["spec"]["minAvailable"],
        "50%"
    );
    assert_eq!(find(&docs, "NetworkPolicy").len(), 1);
    assert_eq!(
        only(&docs, "ServiceMonitor")["spec"]["endpoints"][0]["path"],
        "/metrics"
    );

    // One replica: no PodDisruptionBudget (minAvailable 1 would block every drain).
    let docs = render(&["--set", "replicaCount=1"]);
    assert!(find(&docs, "PodDisruptionBudget").is_empty());
    // No leader election: no Lease rights at all.
    let docs = render(&[
        "--set",
        "replicaCount=1",
        "--set",
        "leaderElection.enabled=false",
    ]);
    assert!(
        find(&docs, "Role")
            .iter()
            .all(|r| r["metadata"]["name"] != "rel-recur-leader-election"),
        "no Lease rights"
    );
    // The binary elects by default: turning it off must be said, and then the old pod must go
    // before the new one starts (two pods without election would both deliver).
    let args = args_of(operator_container(&docs));
    assert!(
        args.contains(&"--leader-elect=false".to_string()),
        "{args:?}"
    );
    assert!(!args.contains(&"--leader-elect".to_string()), "{args:?}");
    assert_eq!(
        only(&docs, "Deployment")["spec"]["strategy"]["type"],
        "Recreate"
    );
    // Without Dapr: no dapr.io annotations at all.
    let docs = render(&["--set", "dapr.enabled=false"]);
    let pod = &only(&docs, "Deployment")["spec"]["template"]["metadata"];
    assert!(pod.get("annotations").is_none(), "{pod}");
    // RBAC and ServiceAccount managed elsewhere.
    let docs = render(&[
        "--set",
        "rbac.create=false",
        "--set",
        "serviceAccount.create=false",
        "--set",
        "serviceAccount.name=recur-external",
    ]);
    for kind in [
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ] {
        assert!(find(&docs, kind).is_empty(), "{kind} rendered");
    }
    assert_eq!(
        only(&docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"],
        "recur-external"
    );
    let mut cmd = helm(home.path());
    cmd.args(["template", "rel"])
        .arg(chart())
        .args(kube_version())
        .args(["--set", "serviceAccount.create=false"]);
    let out = output(&mut cmd, None);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr)
                .contains("serviceAccount.name is required when serviceAccount.create is false")
    );
}

/// Completion feedback: the operator's app channel on loopback, the sidecar's app port, one
/// Subscription per topic scoped to the operator's app id, and the Configuration denying service
/// invocations; combinations that cannot work are refused.
#[test]
fn completion_feedback_subscribes_the_operators_sidecar() {
    let home = tempfile::tempdir().unwrap();
    let render = |args: &[&str]| {
        let mut cmd = helm(home.path());
        cmd.args(["template", "rel"])
            .arg(chart())
            .args(["--namespace", "ops"])
            .args(kube_version())
            .args(args);
        output(&mut cmd, None)
    };
    let docs = |args: &[&str]| {
        let out = render(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        documents(&String::from_utf8_lossy(&out.stdout))
    };

    // Off by default: no app port, no flag, nothing of Dapr's rendered.
    let off = docs(&[]);
    assert!(find(&off, "Subscription").is_empty() && find(&off, "Configuration").is_empty());
    let args = args_of(operator_container(&off));
    assert!(
        !args.iter().any(|a| a.starts_with("--app-addr")),
        "{args:?}"
    );

    let on = docs(&[
        "--set",
        "completion.enabled=true",
        "--set-json",
        r#"completion.subscriptions=[{"topic":"team-a.completed"},{"pubsub":"kafka","topic":"shared.done"}]"#,
    ]);
    let c = operator_container(&on);
    assert!(
        args_of(c).contains(&"--app-addr=127.0.0.1:8090".to_string()),
        "{:?}",
        args_of(c)
    );
    assert!(
        c["ports"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "completions", "containerPort": 8090, "protocol": "TCP"})),
        "{}",
        c["ports"]
    );
    let ann = &only(&on, "Deployment")["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(ann["dapr.io/app-port"], "8090");
    assert_eq!(ann["dapr.io/config"], "rel-recur-dapr");
    let subs = find(&on, "Subscription");
    assert_eq!(subs.len(), 2);
    for (sub, (name, pubsub, topic)) in subs.iter().zip([
        ("rel-recur-completion-0", "pubsub", "team-a.completed"),
        ("rel-recur-completion-1", "kafka", "shared.done"),
    ]) {
        assert_eq!(sub["apiVersion"], "dapr.io/v2alpha1");
        assert_eq!(sub["metadata"]["name"], name);
        assert_eq!(sub["metadata"]["namespace"], "ops");
        assert_eq!(
            sub["spec"],
            json!({"pubsubname": pubsub, "topic": topic,
                   "routes": {"default": format!("/completions/{pubsub}/{topic}")}})
        );
        assert_eq!(sub["scopes"], json!(["rel-recur"]));
    }
    let config = only(&on, "Configuration");
    assert_eq!(config["metadata"]["name"], "rel-recur-dapr");
    assert_eq!(
        config["spec"],
        json!({"accessControl": {"defaultAction": "deny"}})
    );

    // Another Configuration of the user's: it is used, and the chart renders none.
    let own = docs(&[
        "--set",
        "completion.enabled=true",
        "--set",
        "completion.denyInvocations=false",
        "--set",
        "dapr.config=tracing",
    ]);
    assert!(find(&own, "Configuration").is_empty());
    assert_eq!(
        only(&own, "Deployment")["spec"]["template"]["metadata"]["annotations"]["dapr.io/config"],
        "tracing"
    );

    for (args, says) in [
        (
            vec![
                "--set",
                "completion.enabled=true",
                "--set",
                "dapr.enabled=false",
            ],
            "completion.enabled needs dapr.enabled",
        ),
        (
            vec![
                "--set",
                "completion.enabled=true",
                "--set",
                "dapr.appPort=8080",
            ],
            "set dapr.appPort to 0",
        ),
        (
            vec![
                "--set",
                "completion.enabled=true",
                "--set",
                "completion.port=8080",
            ],
            "completion.port must differ",
        ),
        (
            vec![
                "--set",
                "completion.enabled=true",
                "--set",
                "dapr.config=tracing",
            ],
            "set completion.denyInvocations=false",
        ),
        (
            vec![
                "--set",
                "completion.enabled=true",
                "--set-json",
                r#"completion.subscriptions=[{"topic":"a/b"}]"#,
            ],
            "completion/subscriptions/0/topic",
        ),
    ] {
        let out = render(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    }
}

/// The admission webhook: its Service, configuration, flags and rights, with the self-managed
/// certificate (the default) and with cert-manager; and the default TenantPolicy.
#[test]
fn the_webhook_is_registered_with_least_privilege_in_both_certificate_modes() {
    let home = tempfile::tempdir().unwrap();
    let render = |args: &[&str]| {
        let mut cmd = helm(home.path());
        cmd.args(["template", "rel"])
            .arg(chart())
            .args(["--namespace", "ops"])
            .args(kube_version())
            .args(args);
        documents(&run(&mut cmd, None))
    };
    let service = |docs: &[Value]| {
        json!({"name": "rel-recur-webhook", "namespace": "ops", "path": "/validate", "port": 443})
            == only(docs, "ValidatingWebhookConfiguration")["webhooks"][0]["clientConfig"]["service"]
    };

    // Self-managed: the operator issues the certificate and publishes the CA.
    let docs = render(&[]);
    let args = args_of(operator_container(&docs));
    for want in [
        "--webhook-addr=0.0.0.0:9443",
        "--webhook-secret=rel-recur-webhook-tls",
        "--webhook-namespace=ops",
        "--webhook-service=rel-recur-webhook",
        "--webhook-configuration=rel-recur-ops",
    ] {
        assert!(
            args.contains(&want.to_string()),
            "missing {want} in {args:?}"
        );
    }
    assert!(!args.iter().any(|a| a.starts_with("--webhook-cert-dir")));
    assert_eq!(
        operator_container(&docs)["ports"][1],
        json!({"name": "webhook", "containerPort": 9443, "protocol": "TCP"})
    );
    assert_eq!(
        named(&docs, "Service", "rel-recur-webhook")["spec"]["ports"],
        json!([{"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}])
    );
    let config = only(&docs, "ValidatingWebhookConfiguration");
    assert_eq!(config["metadata"]["name"], "rel-recur-ops");
    assert!(config["metadata"].get("annotations").is_none(), "{config}");
    assert!(service(&docs));
    let webhooks = config["webhooks"].as_array().unwrap();
    assert_eq!(webhooks.len(), 2);
    for w in webhooks {
        assert_eq!(w["admissionReviewVersions"], json!(["v1"]));
        assert_eq!(w["sideEffects"], "None");
        assert_eq!(w["timeoutSeconds"], 5);
        assert_eq!(w["failurePolicy"], "Fail");
        assert!(
            w["clientConfig"].get("caBundle").is_none(),
            "the operator fills the caBundle: {w}"
        );
        assert!(w.get("objectSelector").is_none());
    }
    assert_eq!(webhooks[0]["name"], "tasks.recur.dev");
    assert_eq!(
        webhooks[0]["rules"],
        json!([{"apiGroups": ["recur.dev"], "apiVersions": ["v1alpha1"], "operations": ["CREATE", "UPDATE"],
                "resources": ["recurringtasks", "reminders", "backfills"], "scope": "Namespaced"}])
    );
    assert_eq!(
        webhooks[0]["namespaceSelector"],
        json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]})
    );
    assert_eq!(webhooks[1]["name"], "tenantpolicies.recur.dev");
    assert_eq!(
        webhooks[1]["rules"],
        json!([{"apiGroups": ["recur.dev"], "apiVersions": ["v1alpha1"], "operations": ["CREATE", "UPDATE"],
                "resources": ["tenantpolicies"], "scope": "Cluster"}])
    );
    assert!(webhooks[1].get("namespaceSelector").is_none());
    // The rights: the Secret by name (create cannot be named), this configuration by name,
    // and the tenancy reads.
    assert_eq!(
        named(&docs, "Role", "rel-recur-webhook")["rules"],
        json!([
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["rel-recur-webhook-tls"], "verbs": ["get", "update"]}
        ])
    );
    assert_eq!(
        named(&docs, "RoleBinding", "rel-recur-webhook")["roleRef"]["name"],
        "rel-recur-webhook"
    );
    let cluster_rules = only(&docs, "ClusterRole")["rules"].as_array().unwrap();
    let tail: Vec<&Value> = cluster_rules.iter().rev().take(3).rev().collect();
    assert_eq!(
        tail,
        vec![
            &json!({"apiGroups": ["recur.dev"], "resources": ["tenantpolicies"], "verbs": ["list", "watch"]}),
            &json!({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}),
            &json!({"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"],
                    "resourceNames": ["rel-recur-ops"], "verbs": ["get", "patch"]}),
        ]
    );
    assert!(find(&docs, "Certificate").is_empty() && find(&docs, "Issuer").is_empty());
    assert!(
        find(&docs, "TenantPolicy").is_empty(),
        "no default policy unless asked"
    );

    // The values narrow what is reviewed; kube-system stays excluded whatever they say.
    let docs = render(&[
        "--set-json",
        r#"webhook.excludeNamespaces=["tools","kube-system"]"#,
        "--set-json",
        r#"webhook.namespaceSelector={"matchLabels":{"tenant":"yes"},"matchExpressions":[{"key":"env","operator":"Exists"}]}"#,
        "--set-json",
        r#"webhook.objectSelector={"matchLabels":{"review":"yes"}}"#,
        "--set",
        "webhook.failurePolicy=Ignore",
        "--set",
        "webhook.timeoutSeconds=2",
        "--set",
        "watchNamespace=team-a",
    ]);
    let webhooks = only(&docs, "ValidatingWebhookConfiguration")["webhooks"].clone();
    assert_eq!(
        webhooks[0]["namespaceSelector"],
        json!({
            "matchLabels": {"tenant": "yes"},
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "tools"]},
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a"]},
                {"key": "env", "operator": "Exists"}
            ]
        })
    );
    for w in webhooks.as_array().unwrap() {
        assert_eq!(
            w["objectSelector"],
            json!({"matchLabels": {"review": "yes"}})
        );
        assert_eq!(w["failurePolicy"], "Ignore");
        assert_eq!(w["timeoutSeconds"], 2);
    }

    // cert-manager: a CA chain of Issuers and Certificates, the CA injected, the Secret mounted,
    // and no rights on Secrets or on the configuration.
    let docs = render(&["--set", "webhook.certManager.enabled=true"]);
    let c = operator_container(&docs);
    let args = args_of(c);
    assert!(
        args.contains(&"--webhook-cert-dir=/tls".to_string()),
        "{args:?}"
    );
    assert!(
        !args
            .iter()
            .any(|a| a.starts_with("--webhook-secret") || a.starts_with("--webhook-configuration"))
    );
    assert_eq!(
        c["volumeMounts"],
        json!([{"name": "webhook-tls", "mountPath": "/tls", "readOnly": true}])
    );
    assert_eq!(
        only(&docs, "Deployment")["spec"]["template"]["spec"]["volumes"],
        json!([{"name": "webhook-tls", "secret": {"secretName": "rel-recur-webhook-tls"}}])
    );
    let config = only(&docs, "ValidatingWebhookConfiguration");
    assert_eq!(
        config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "ops/rel-recur-webhook"
    );
    assert!(service(&docs));
    let serving = named(&docs, "Certificate", "rel-recur-webhook");
    assert_eq!(serving["spec"]["secretName"], "rel-recur-webhook-tls");
    assert_eq!(
        serving["spec"]["dnsNames"],
        json!([
            "rel-recur-webhook",
            "rel-recur-webhook.ops",
            "rel-recur-webhook.ops.svc",
            "rel-recur-webhook.ops.svc.cluster.local"
        ])
    );
    assert_eq!(serving["spec"]["issuerRef"]["name"], "rel-recur-webhook-ca");
    let ca = named(&docs, "Certificate", "rel-recur-webhook-ca");
    assert_eq!(ca["spec"]["isCA"], true);
    assert_eq!(ca["spec"]["issuerRef"]["name"], "rel-recur-selfsigned");
    assert_eq!(
        named(&docs, "Issuer", "rel-recur-selfsigned")["spec"],
        json!({"selfSigned": {}})
    );
    assert_eq!(
        named(&docs, "Issuer", "rel-recur-webhook-ca")["spec"],
        json!({"ca": {"secretName": "rel-recur-webhook-ca"}})
    );
    assert!(
        find(&docs, "Role")
            .iter()
            .all(|r| r["metadata"]["name"] != "rel-recur-webhook"),
        "no Secret rights with cert-manager"
    );
    let cluster = only(&docs, "ClusterRole").to_string();
    assert!(
        !cluster.contains("validatingwebhookconfigurations"),
        "{cluster}"
    );

    // A client CA (both certificate modes): the flag, the ConfigMap mounted beside cert-manager's
    // Secret; and the NetworkPolicy keeps the port to the peers given.
    let docs = render(&[
        "--set",
        "webhook.certManager.enabled=true",
        "--set",
        "webhook.clientCA.configMap=apiserver-webhook-ca",
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "networkPolicy.webhook.from[0].ipBlock.cidr=10.0.0.0/28",
    ]);
    let c = operator_container(&docs);
    assert!(
        args_of(c).contains(&"--webhook-client-ca=/webhook-client-ca/ca.crt".to_string()),
        "{:?}",
        args_of(c)
    );
    assert_eq!(
        c["volumeMounts"],
        json!([
            {"name": "webhook-tls", "mountPath": "/tls", "readOnly": true},
            {"name": "webhook-client-ca", "mountPath": "/webhook-client-ca", "readOnly": true}
        ])
    );
    assert_eq!(
        only(&docs, "Deployment")["spec"]["template"]["spec"]["volumes"],
        json!([
            {"name": "webhook-tls", "secret": {"secretName": "rel-recur-webhook-tls"}},
            {"name": "webhook-client-ca", "configMap": {"name": "apiserver-webhook-ca"}}
        ])
    );
    let ingress = &only(&docs, "NetworkPolicy")["spec"]["ingress"];
    assert_eq!(
        ingress[1],
        json!({"ports": [{"port": "webhook", "protocol": "TCP"}],
            "from": [{"ipBlock": {"cidr": "10.0.0.0/28"}}]})
    );
    let docs = render(&[]);
    assert!(
        !args_of(operator_container(&docs))
            .iter()
            .any(|a| a.starts_with("--webhook-client-ca"))
    );

    // Disabled: no webhook at all, and no rights for it.
    let docs = render(&["--set", "webhook.enabled=false"]);
    assert!(find(&docs, "ValidatingWebhookConfiguration").is_empty());
    assert_eq!(find(&docs, "Service").len(), 1);
    let args = args_of(operator_container(&docs));
    assert!(!args.iter().any(|a| a.starts_with("--webhook")), "{args:?}");
    assert_eq!(
        find(&docs, "Role").len(),
        1,
        "only the leader-election Role"
    );
    assert!(
        !only(&docs, "ClusterRole")
            .to_string()
            .contains("validatingwebhookconfigurations")
    );

    // A default TenantPolicy from the values.
    let docs = render(&[
        "--set",
        "tenancy.defaultPolicy.enabled=true",
        "--set-json",
        r#"tenancy.defaultPolicy.namespaceSelector={"matchLabels":{"team":"a"}}"#,
        "--set-json",
        r#"tenancy.defaultPolicy.targets=[{"namespace":"payments","appId":"orders","methods":["api/orders"]}]"#,
        "--set-json",
        r#"tenancy.defaultPolicy.limits={"maxPayloadBytes":1024}"#,
    ]);
    let policy = only(&docs, "TenantPolicy");
    assert_eq!(policy["apiVersion"], "recur.dev/v1alpha1");
    assert_eq!(policy["metadata"]["name"], "rel-recur-ops-default");
    assert_eq!(
        policy["spec"],
        json!({
            "namespaceSelector": {"matchLabels": {"team": "a"}},
            "targets": [{"namespace": "payments", "appId": "orders", "methods": ["api/orders"]}],
            "limits": {"maxPayloadBytes": 1024}
        })
    );
}

// ------------------------------------------------------------------------------------------------
// 3. the schema rejects wrong values with readable messages

#[test]
fn schema_rejects_wrong_values_with_readable_messages() {
    let home = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        (
            "wrong type",
            "replicaCount: \"two\"\n",
            "at '/replicaCount': got string, want integer",
        ),
        (
            "unknown key",
            "replicas: 2\n",
            "additional properties 'replicas' not allowed",
        ),
        (
            "unknown nested key",
            "dapr:\n  apiToken: s3cr3t\n",
            "at '/dapr': additional properties 'apiToken' not allowed",
        ),
        (
            "number for a duration",
            "leaderElection:\n  leaseDuration: 5\n",
            "at '/leaderElection/leaseDuration': got number, want string",
        ),
        (
            "malformed duration",
            "operator:\n  daprTimeout: 5 seconds\n",
            "at '/operator/daprTimeout'",
        ),
        (
            "collector endpoint without a scheme",
            "tracing:\n  otlpEndpoint: otel-collector:4318\n",
            "at '/tracing/otlpEndpoint'",
        ),
        (
            "https collector (no TLS client)",
            "tracing:\n  otlpEndpoint: https://otel-collector:4318\n",
            "at '/tracing/otlpEndpoint'",
        ),
        (
            "sampler ratio above 1",
            "tracing:\n  samplerArg: \"1.5\"\n",
            "at '/tracing/samplerArg'",
        ),
        (
            "bad enum",
            "operator:\n  logFormat: yaml\n",
            "at '/operator/logFormat'",
        ),
        (
            "bad image digest",
            "image:\n  digest: latest\n",
            "at '/image/digest'",
        ),
        (
            "label value not a string",
            "commonLabels:\n  tier: 3\n",
            "at '/commonLabels/tier': got number, want string",
        ),
        (
            "bad failure policy",
            "webhook:\n  failurePolicy: Retry\n",
            "at '/webhook/failurePolicy'",
        ),
        (
            "timeout beyond the API server's limit",
            "webhook:\n  timeoutSeconds: 31\n",
            "at '/webhook/timeoutSeconds'",
        ),
        (
            "unknown key of a default policy",
            "tenancy:\n  defaultPolicy:\n    selector: {}\n",
            "additional properties 'selector' not allowed",
        ),
    ];
    for (what, values, message) in cases {
        let file = home.path().join("values.yaml");
        std::fs::write(&file, values).unwrap();
        let out = output(
            helm(home.path())
                .args(["template", "r"])
                .arg(chart())
                .args(kube_version())
                .arg("--values")
                .arg(&file),
            None,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: {values:?} was accepted");
        assert!(
            stderr.contains("values don't meet the specifications of the schema"),
            "{what}: not a schema error:\n{stderr}"
        );
        assert!(
            stderr.contains(message),
            "{what}: expected {message:?} in:\n{stderr}"
        );
    }
    // What the schema cannot express, the templates refuse in words.
    let out = output(
        helm(home.path())
            .args(["template", "r"])
            .arg(chart())
            .args(kube_version())
            .args(["--set", "leaderElection.enabled=false"]),
        None,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("replicaCount > 1 needs leaderElection.enabled"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And the defaults themselves pass (the failures above are the values', not the schema's).
    run(
        helm(home.path())
            .args(["template", "r"])
            .arg(chart())
            .args(kube_version()),
        None,
    );
}

/// Every object in values.schema.json names its keys and refuses others (`additionalProperties:
/// false`), or is a map whose values have a type. The only open objects: what lies below
/// `affinity`'s three keys (a deep Kubernetes type the API server validates, and the dry-run
/// test exercises) and Helm's `global`.
#[test]
fn schema_is_draft_07_and_closes_every_object() {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(chart().join("values.schema.json")).unwrap())
            .unwrap();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    const OPEN: [&str; 4] = [
        "/definitions/affinity/properties/nodeAffinity",
        "/definitions/affinity/properties/podAffinity",
        "/definitions/affinity/properties/podAntiAffinity",
        "/properties/global",
    ];
    fn visit(at: &str, node: &Value, open: &mut Vec<String>) {
        let Value::Object(map) = node else { return };
        if map.get("type") == Some(&json!("object")) && !OPEN.contains(&at) {
            match map.get("additionalProperties") {
                Some(Value::Bool(false)) => {}
                Some(Value::Object(items)) if !items.is_empty() => {}
                _ => open.push(at.to_string()),
            }
        }
        for (key, child) in map {
            match child {
                Value::Object(_) => visit(&format!("{at}/{key}"), child, open),
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        visit(&format!("{at}/{key}/{i}"), item, open);
                    }
                }
                _ => {}
            }
        }
    }
    let mut open = vec![];
    visit("", &schema, &mut open);
    assert!(
        open.is_empty(),
        "objects that accept unknown keys: {open:?}"
    );
    // And the chart's values use every key the schema describes at the top level, and no other.
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap())
            .unwrap();
    let mut in_schema: Vec<&String> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "global")
        .collect();
    let mut in_values: Vec<&String> = values.as_object().unwrap().keys().collect();
    in_schema.sort();
    in_values.sort();
    assert_eq!(in_schema, in_values);
}

// ------------------------------------------------------------------------------------------------
// 4. installed: the ServiceAccount can do what the operator needs, and nothing else

#[test]
fn installed_service_account_has_least_privilege_cluster_wide() {
    // kubectl auth can-i resolves `recurringtasks.recur.dev` through discovery: the CRDs must be
    // served (helm install would create them too, unless another test just did).
    apply_crds(&chart_crds());
    let ns = Namespace::new("chart-rbac");
    let other = Namespace::new("chart-rbac-other");
    let release = Release::install("recur", &ns.0, &[]);
    // NOTES.txt tells how to upgrade the CRDs, which Helm never does.
    assert!(
        release
            .printed
            .contains("kubectl apply --server-side --force-conflicts -f charts/recur/crds/"),
        "{}",
        release.printed
    );
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = token_kubeconfig(&ns.0, "recur", dir.path());
    let (n, o) = (ns.0.as_str(), other.0.as_str());
    let lease = "leases.coordination.k8s.io/recur-leader";
    let vwc = format!("validatingwebhookconfigurations.admissionregistration.k8s.io/recur-{n}");
    let checks: &[(&[&str], bool)] = &[
        // What the operator needs.
        (&["list", "recurringtasks.recur.dev", "-A"], true),
        (&["watch", "recurringtasks.recur.dev", "-A"], true),
        (&["list", "recurringtasks.recur.dev", "-n", o], true),
        (&["watch", "recurringtasks.recur.dev", "-n", o], true),
        (&["get", "recurringtasks.recur.dev", "-n", o], true),
        // failurePolicy.suspendAfter suspends the task (spec.suspend, spec.suspendReason).
        (&["patch", "recurringtasks.recur.dev", "-n", o], true),
        (
            &[
                "patch",
                "recurringtasks.recur.dev",
                "--subresource=status",
                "-n",
                o,
            ],
            true,
        ),
        (&["list", "reminders.recur.dev", "-A"], true),
        (&["watch", "reminders.recur.dev", "-A"], true),
        (&["create", "reminders.recur.dev", "-n", o], true),
        (&["patch", "reminders.recur.dev", "-n", o], true),
        (&["delete", "reminders.recur.dev", "-n", o], true),
        (
            &[
                "patch",
                "reminders.recur.dev",
                "--subresource=status",
                "-n",
                o,
            ],
            true,
        ),
        // Backfills: watched; patched only to add the task's ownerReference; deleted after
        // their ttlSecondsAfterFinished; the guarded status write.
        (&["list", "backfills.recur.dev", "-A"], true),
        (&["watch", "backfills.recur.dev", "-A"], true),
        (&["get", "backfills.recur.dev", "-n", o], true),
        (&["patch", "backfills.recur.dev", "-n", o], true),
        (&["delete", "backfills.recur.dev", "-n", o], true),
        (
            &[
                "patch",
                "backfills.recur.dev",
                "--subresource=status",
                "-n",
                o,
            ],
            true,
        ),
        (&["create", "events.events.k8s.io", "-n", o], true),
        (&["patch", "events.events.k8s.io", "-n", o], true),
        (&["get", lease, "-n", n], true),
        (&["update", lease, "-n", n], true),
        (&["create", "leases.coordination.k8s.io", "-n", n], true),
        // What it must not do.
        (&["get", "secrets", "-n", n], false),
        (&["list", "secrets", "-A"], false),
        (&["list", "pods", "-n", n], false),
        (&["list", "pods", "-A"], false),
        (&["create", "leases.coordination.k8s.io", "-n", o], false),
        (&["get", lease, "-n", o], false),
        (
            &[
                "get",
                "leases.coordination.k8s.io/kube-controller-manager",
                "-n",
                n,
            ],
            false,
        ),
        (
            &[
                "update",
                "leases.coordination.k8s.io/another-lease",
                "-n",
                n,
            ],
            false,
        ),
        (&["list", "leases.coordination.k8s.io", "-n", n], false),
        (&["delete", lease, "-n", n], false),
        (&["update", "recurringtasks.recur.dev", "-n", o], false),
        (&["create", "recurringtasks.recur.dev", "-n", o], false),
        (&["delete", "recurringtasks.recur.dev", "-n", o], false),
        (
            &[
                "update",
                "recurringtasks.recur.dev",
                "--subresource=status",
                "-n",
                o,
            ],
            false,
        ),
        (&["update", "reminders.recur.dev", "-n", o], false),
        (&["create", "backfills.recur.dev", "-n", o], false),
        (&["update", "backfills.recur.dev", "-n", o], false),
        (
            &[
                "update",
                "backfills.recur.dev",
                "--subresource=status",
                "-n",
                o,
            ],
            false,
        ),
        (&["create", "events", "-n", o], false),
        (&["list", "events.events.k8s.io", "-n", o], false),
        (
            &["create", "customresourcedefinitions.apiextensions.k8s.io"],
            false,
        ),
        (&["create", "serviceaccounts/token", "-n", n], false),
        // The tenancy checks read every TenantPolicy and namespace, and change none: list and
        // watch feed their caches, nothing gets one.
        (&["list", "tenantpolicies.recur.dev"], true),
        (&["watch", "tenantpolicies.recur.dev"], true),
        (&["get", "tenantpolicies.recur.dev"], false),
        (&["create", "tenantpolicies.recur.dev"], false),
        (&["delete", "tenantpolicies.recur.dev"], false),
        (&["list", "namespaces"], true),
        (&["watch", "namespaces"], true),
        (&["get", &format!("namespaces/{o}")], false),
        (&["update", &format!("namespaces/{o}")], false),
        (&["create", "namespaces"], false),
        // The self-managed webhook certificate: its own Secret in the release namespace...
        (&["create", "secrets", "-n", n], true),
        (&["get", "secrets/recur-webhook-tls", "-n", n], true),
        (&["update", "secrets/recur-webhook-tls", "-n", n], true),
        (&["delete", "secrets/recur-webhook-tls", "-n", n], false),
        (&["get", "secrets/another", "-n", n], false),
        (&["update", "secrets/another", "-n", n], false),
        (&["create", "secrets", "-n", o], false),
        (&["get", "secrets/recur-webhook-tls", "-n", o], false),
        // ... and the caBundle of its own webhook configuration.
        (&["get", &vwc], true),
        // A JSON patch of the caBundle: never a whole update.
        (&["patch", &vwc], true),
        (&["update", &vwc], false),
        (&["delete", &vwc], false),
        (
            &[
                "patch",
                "validatingwebhookconfigurations.admissionregistration.k8s.io/another",
            ],
            false,
        ),
        (
            &[
                "list",
                "validatingwebhookconfigurations.admissionregistration.k8s.io",
            ],
            false,
        ),
        (
            &[
                "create",
                "validatingwebhookconfigurations.admissionregistration.k8s.io",
            ],
            false,
        ),
        (
            &[
                "patch",
                "mutatingwebhookconfigurations.admissionregistration.k8s.io/recur",
            ],
            false,
        ),
    ];
    assert_rights(&kubeconfig, "the chart's ServiceAccount", checks);

    // And real requests with the token, beyond what the authorizer says: the Lease dance of the
    // leader elector (create, get, update) works in the release namespace and nowhere else.
    let as_sa = |args: &[&str], stdin: Option<&[u8]>| {
        let mut cmd = Command::new(support::bin_dir().join("kubectl"));
        cmd.arg("--kubeconfig").arg(&kubeconfig).args(args);
        output(&mut cmd, stdin)
    };
    let lease_doc = |ns: &str| {
        format!(
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: recur-leader\n  namespace: {ns}\nspec:\n  holderIdentity: chart-test\n  leaseDurationSeconds: 15\n"
        )
    };
    let created = as_sa(&["create", "-f", "-"], Some(lease_doc(n).as_bytes()));
    assert!(
        created.status.success(),
        "creating the Lease: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    let got = as_sa(
        &["get", "lease", "recur-leader", "-n", n, "-o", "json"],
        None,
    );
    assert!(
        got.status.success(),
        "reading the Lease: {}",
        String::from_utf8_lossy(&got.stderr)
    );
    let mut lease_obj: Value = serde_json::from_slice(&got.stdout).unwrap();
    lease_obj["spec"]["holderIdentity"] = json!("chart-test-2");
    let replaced = as_sa(
        &["replace", "-f", "-"],
        Some(lease_obj.to_string().as_bytes()),
    );
    assert!(
        replaced.status.success(),
        "updating the Lease: {}",
        String::from_utf8_lossy(&replaced.stderr)
    );
    let denied = as_sa(&["create", "-f", "-"], Some(lease_doc(o).as_bytes()));
    assert!(
        !denied.status.success() && String::from_utf8_lossy(&denied.stderr).contains("forbidden"),
        "a Lease in another namespace must be forbidden"
    );
    let denied = as_sa(&["get", "secrets", "-n", n], None);
    assert!(
        !denied.status.success() && String::from_utf8_lossy(&denied.stderr).contains("forbidden"),
        "Secrets must be forbidden"
    );

    // patch on tasks is for failurePolicy only: the chart's ValidatingAdmissionPolicy lets the
    // ServiceAccount change spec.suspend and spec.suspendReason of a tenant's task, nothing else.
    let task = format!(
        "apiVersion: recur.dev/v1alpha1\nkind: RecurringTask\nmetadata:\n  name: guarded\n  namespace: {o}\nspec:\n  userId: u-1\n  title: guarded\n  schedule:\n    every: 1h\n"
    );
    run(kubectl().args(["create", "-f", "-"]), Some(task.as_bytes()));
    let patch_as_sa = |patch: &str| {
        as_sa(
            &[
                "patch",
                "rt",
                "guarded",
                "-n",
                o,
                "--type=merge",
                "-p",
                patch,
            ],
            None,
        )
    };
    // The policy is enforced once the API server has loaded it: retry the allowed patch until
    // a forbidden one is refused, within a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let retarget = patch_as_sa(r#"{"spec":{"target":{"appId":"payments.other"}}}"#);
        if !retarget.status.success() {
            let stderr = String::from_utf8_lossy(&retarget.stderr);
            assert!(
                stderr.contains("recur may change only spec.suspend and spec.suspendReason"),
                "{stderr}"
            );
            break;
        }
        // Loaded late: undo, and try again.
        run(
            kubectl().args([
                "patch",
                "rt",
                "guarded",
                "-n",
                o,
                "--type=json",
                "-p",
                r#"[{"op":"remove","path":"/spec/target"}]"#,
            ]),
            None,
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the ValidatingAdmissionPolicy never refused the operator's retargeting patch"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let relabel = patch_as_sa(r#"{"metadata":{"labels":{"shard":"b"}}}"#);
    assert!(!relabel.status.success(), "relabelling must be refused");
    // An owner that does not exist would have the garbage collector delete the task.
    let owned = patch_as_sa(
        r#"{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"gone","uid":"00000000-0000-0000-0000-000000000000"}]}}"#,
    );
    let stderr = String::from_utf8_lossy(&owned.stderr);
    assert!(
        !owned.status.success() && stderr.contains("ownerReferences or finalizers"),
        "an ownerReference must be refused: {stderr}"
    );
    let held = patch_as_sa(r#"{"metadata":{"finalizers":["example.com/hold"]}}"#);
    let stderr = String::from_utf8_lossy(&held.stderr);
    assert!(
        !held.status.success() && stderr.contains("ownerReferences or finalizers"),
        "a finalizer must be refused: {stderr}"
    );
    let suspend = patch_as_sa(r#"{"spec":{"suspend":true,"suspendReason":"chart test"}}"#);
    assert!(
        suspend.status.success(),
        "suspending must be allowed: {}",
        String::from_utf8_lossy(&suspend.stderr)
    );
    drop(release);
}

/// Shards as releases (`docs/scaling.md`): two releases of the chart in one namespace, each
/// serving one shard's label. Both install (no object of one is the other's), each
/// ServiceAccount may renew its own Lease and not the other's (a shard cannot stall another),
/// and uninstalling one leaves the other's cluster-wide objects in place.
#[test]
fn two_releases_serve_two_shards_side_by_side() {
    apply_crds(&chart_crds());
    let ns = Namespace::new("chart-shards");
    let n = ns.0.as_str();
    let install = |k: u8| {
        let selector = format!("operator.selector=recur.dev/shard={k}");
        Release::install(&format!("shard-{k}"), n, &["--set-string", &selector])
    };
    let zero = install(0);
    let one = install(1);
    let dir = tempfile::tempdir().unwrap();
    for (k, other) in [(0, 1), (1, 0)] {
        let kubeconfig = token_kubeconfig(n, &format!("shard-{k}-recur"), dir.path());
        let own = format!("leases.coordination.k8s.io/shard-{k}-recur-leader");
        let theirs = format!("leases.coordination.k8s.io/shard-{other}-recur-leader");
        let checks: &[(&[&str], bool)] = &[
            (&["get", &own, "-n", n], true),
            (&["update", &own, "-n", n], true),
            (&["get", &theirs, "-n", n], false),
            (&["update", &theirs, "-n", n], false),
            (&["list", "recurringtasks.recur.dev", "-A"], true),
        ];
        assert_rights(&kubeconfig, &format!("shard {k}'s ServiceAccount"), checks);
    }

    drop(zero);
    let cluster_wide = format!("shard-1-recur-{n}");
    let policy = format!("{cluster_wide}-task-writes");
    for (kind, name) in [
        ("clusterrole", &cluster_wide),
        ("clusterrolebinding", &cluster_wide),
        ("validatingwebhookconfiguration", &cluster_wide),
        ("validatingadmissionpolicy", &policy),
        ("validatingadmissionpolicybinding", &policy),
    ] {
        let got = output(kubectl().args(["get", kind, name.as_str()]), None);
        assert!(
            got.status.success(),
            "{kind} {name} went with the other release: {}",
            String::from_utf8_lossy(&got.stderr)
        );
    }
    drop(one);
}

#[test]
fn installed_service_account_is_confined_to_the_watched_namespace() {
    apply_crds(&chart_crds());
    let ns = Namespace::new("chart-ns");
    let watched = Namespace::new("chart-ns-watched");
    let other = Namespace::new("chart-ns-other");
    let _release = Release::install(
        "scoped",
        &ns.0,
        &[
            "--set",
            &format!("watchNamespace={}", watched.0),
            "--set",
            "replicaCount=1",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = token_kubeconfig(&ns.0, "scoped-recur", dir.path());
    let (n, w, o) = (ns.0.as_str(), watched.0.as_str(), other.0.as_str());
    let lease = "leases.coordination.k8s.io/scoped-recur-leader";
    let checks: &[(&[&str], bool)] = &[
        (&["list", "recurringtasks.recur.dev", "-n", w], true),
        (&["watch", "recurringtasks.recur.dev", "-n", w], true),
        (
            &[
                "patch",
                "recurringtasks.recur.dev",
                "--subresource=status",
                "-n",
                w,
            ],
            true,
        ),
        (&["create", "reminders.recur.dev", "-n", w], true),
        (&["delete", "reminders.recur.dev", "-n", w], true),
        (
            &[
                "patch",
                "reminders.recur.dev",
                "--subresource=status",
                "-n",
                w,
            ],
            true,
        ),
        (&["watch", "backfills.recur.dev", "-n", w], true),
        (&["delete", "backfills.recur.dev", "-n", w], true),
        (
            &[
                "patch",
                "backfills.recur.dev",
                "--subresource=status",
                "-n",
                w,
            ],
            true,
        ),
        (&["create", "events.events.k8s.io", "-n", w], true),
        (&["get", lease, "-n", n], true),
        (&["update", lease, "-n", n], true),
        (&["create", "leases.coordination.k8s.io", "-n", n], true),
        (&["list", "recurringtasks.recur.dev", "-A"], false),
        (&["list", "recurringtasks.recur.dev", "-n", o], false),
        (&["list", "recurringtasks.recur.dev", "-n", n], false),
        (&["create", "reminders.recur.dev", "-n", o], false),
        (&["list", "backfills.recur.dev", "-A"], false),
        (&["delete", "backfills.recur.dev", "-n", o], false),
        (&["create", "events.events.k8s.io", "-n", o], false),
        (&["create", "leases.coordination.k8s.io", "-n", w], false),
        (&["get", "secrets", "-n", w], false),
        (&["list", "pods", "-n", w], false),
        // Suspending a task after failures (the chart's ValidatingAdmissionPolicy confines the
        // patch to spec.suspend and spec.suspendReason): in the watched namespace only.
        (&["patch", "recurringtasks.recur.dev", "-n", w], true),
        (&["patch", "recurringtasks.recur.dev", "-n", o], false),
        // Policies are cluster-scoped and select namespaces by label: read everywhere.
        (&["list", "tenantpolicies.recur.dev"], true),
        (&["list", "namespaces"], true),
        (&["create", "tenantpolicies.recur.dev"], false),
        (&["create", "secrets", "-n", n], true),
        (&["create", "secrets", "-n", w], false),
    ];
    assert_rights(
        &kubeconfig,
        "the namespaced release's ServiceAccount",
        checks,
    );
}

// ------------------------------------------------------------------------------------------------
// The pod template meets the Pod Security Standard "restricted"

#[test]
fn pod_template_is_admitted_under_pod_security_restricted() {
    let ns = Namespace::new("chart-pss");
    run(
        kubectl().args([
            "label",
            "namespace",
            &ns.0,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=latest",
        ]),
        None,
    );
    let home = tempfile::tempdir().unwrap();
    for (name, args) in [
        ("default values", vec![]),
        (
            "all-options values",
            vec!["--values".to_string(), all_options().display().to_string()],
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let docs = documents(&template(home.path(), "pss", &ns.0, &args));
        let template = &only(&docs, "Deployment")["spec"]["template"];
        // The Deployment's pod template as a Pod: PodSecurity admission enforces on pods (it only
        // warns on workloads), so this is what a kubelet-less cluster can prove.
        // Its ServiceAccount exists, as on a real install (clusters with the ServiceAccount
        // admission plugin refuse pods of missing ones).
        let account = template["spec"]["serviceAccountName"].as_str().unwrap();
        let sa = json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": account, "namespace": ns.0 } });
        run(
            kubectl().args(["apply", "-f", "-"]),
            Some(sa.to_string().as_bytes()),
        );
        let mut metadata = template["metadata"].clone();
        metadata["name"] = json!("pss-check");
        metadata["namespace"] = json!(ns.0);
        let pod = json!({ "apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"] });
        run(
            kubectl().args(["create", "--dry-run=server", "-f", "-"]),
            Some(pod.to_string().as_bytes()),
        );
        // The check is real: the same pod with a privilege escalation allowed is refused.
        let mut bad = pod.clone();
        bad["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(true);
        let out = output(
            kubectl().args(["create", "--dry-run=server", "-f", "-"]),
            Some(bad.to_string().as_bytes()),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("violates PodSecurity \"restricted:latest\""),
            "{name}: {stderr}"
        );
    }
}

// ------------------------------------------------------------------------------------------------
// 5. the examples are valid for the API server

#[test]
fn examples_pass_server_side_dry_run() {
    apply_crds(&chart_crds());
    let examples = std::fs::canonicalize(root().join("examples")).unwrap();
    // The examples live in namespace recur-demo (examples/00-namespace.yaml); a dry-run does not
    // create it, so it is created for real first (idempotent).
    run(
        kubectl()
            .args(["apply", "-f"])
            .arg(examples.join("00-namespace.yaml")),
        None,
    );
    let out = run(
        kubectl()
            .args(["apply", "--dry-run=server", "-f"])
            .arg(&examples),
        None,
    );
    let expected: usize = std::fs::read_dir(&examples)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        .map(|e| documents(&std::fs::read_to_string(e.path()).unwrap()).len())
        .sum();
    let applied = out
        .lines()
        .filter(|l| l.ends_with("(server dry run)"))
        .count();
    assert_eq!(
        applied, expected,
        "every example document must be accepted:\n{out}"
    );
}

// ------------------------------------------------------------------------------------------------
// 6. the chart's CRDs are the generated ones

#[test]
fn chart_crds_equal_the_generated_crds() {
    let generated = root().join("crds");
    if !generated.is_dir() {
        eprintln!(
            "SKIPPED: {} does not exist yet (generate it with `cargo run -- crd --out-dir crds`)",
            generated.display()
        );
        return;
    }
    // A missing directory lists no files (and then fails the comparison below, with the names).
    let names = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".yaml"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let in_chart = chart().join("crds");
    assert_eq!(
        names(&generated),
        names(&in_chart),
        "charts/recur/crds/ must hold exactly the files of crds/"
    );
    assert!(!names(&generated).is_empty(), "crds/ holds no CRD");
    for name in names(&generated) {
        let a = std::fs::read(generated.join(&name)).unwrap();
        let b = std::fs::read(in_chart.join(&name)).unwrap();
        assert!(
            a == b,
            "charts/recur/crds/{name} differs from crds/{name}: copy it (cp crds/*.yaml charts/recur/crds/)"
        );
    }
}

// ------------------------------------------------------------------------------------------------
// Documentation: every value has a comment in values.yaml and a row in the README

/// Key paths of values.yaml, each with whether the comment block right above its line starts
/// with `# --` (the mark of a documented value). Keys inside list items get paths too; they are
/// never looked up.
fn commented_keys(values: &str) -> BTreeMap<String, bool> {
    let lines: Vec<&str> = values.lines().collect();
    let mut out = BTreeMap::new();
    let mut stack: Vec<(usize, String)> = vec![];
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        if trimmed.starts_with('#')
            || trimmed.starts_with('-')
            || key.is_empty()
            || key.contains(' ')
        {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        while stack.last().is_some_and(|(at, _)| *at >= indent) {
            stack.pop();
        }
        let path = stack
            .iter()
            .map(|(_, k)| k.as_str())
            .chain([key])
            .collect::<Vec<_>>()
            .join(".");
        let mut first = i;
        while first > 0 && lines[first - 1].trim().starts_with('#') {
            first -= 1;
        }
        out.insert(path, first < i && lines[first].trim().starts_with("# --"));
        stack.push((indent, key.to_string()));
    }
    out
}

/// README rows: `path` -> (type, default as JSON, description).
fn readme_rows(readme: &str) -> BTreeMap<String, (String, Value, String)> {
    let mut rows = BTreeMap::new();
    let table = readme
        .split_once("\n## Values\n")
        .map_or("", |(_, rest)| rest);
    assert!(!table.is_empty(), "README.md has no `## Values` section");
    for line in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        assert_eq!(cells.len(), 4, "a values row has 4 cells: {line}");
        let path = cells[0].trim_matches('`').to_string();
        let default: Value = serde_json::from_str(cells[2].trim_matches('`'))
            .unwrap_or_else(|e| panic!("default of {path} is not JSON ({e}): {line}"));
        rows.insert(path, (cells[1].to_string(), default, cells[3].to_string()));
    }
    rows
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "string",
        Value::Number(n) if n.is_i64() || n.is_u64() => "int",
        Value::Number(_) => "float",
        Value::Bool(_) => "bool",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
        Value::Null => "null",
    }
}

#[test]
fn every_value_is_commented_and_in_the_readme_table() {
    let text = std::fs::read_to_string(chart().join("values.yaml")).unwrap();
    let values: Value = serde_saphyr::from_str(&text).unwrap();
    let commented = commented_keys(&text);
    let rows = readme_rows(&std::fs::read_to_string(chart().join("README.md")).unwrap());
    let mut problems = vec![];
    let mut documented = vec![];
    // A key with a `# --` comment is one value; a key without one must be a map of such keys.
    fn walk(
        prefix: &str,
        v: &Value,
        commented: &BTreeMap<String, bool>,
        documented: &mut Vec<(String, Value)>,
        problems: &mut Vec<String>,
    ) {
        let Value::Object(map) = v else { return };
        for (k, child) in map {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if commented.get(&path).copied().unwrap_or(false) {
                documented.push((path, child.clone()));
            } else if matches!(child, Value::Object(m) if !m.is_empty()) {
                walk(&path, child, commented, documented, problems);
            } else {
                problems.push(format!("{path}: no `# --` comment above it in values.yaml"));
            }
        }
    }
    walk("", &values, &commented, &mut documented, &mut problems);
    for (path, default) in &documented {
        match rows.get(path) {
            None => problems.push(format!("{path}: no row in README.md")),
            Some((ty, readme_default, description)) => {
                if ty != type_name(default) {
                    problems.push(format!(
                        "{path}: README type {ty}, values.yaml has a {}",
                        type_name(default)
                    ));
                }
                if readme_default != default {
                    problems.push(format!(
                        "{path}: README default {readme_default}, values.yaml has {default}"
                    ));
                }
                if description.is_empty() {
                    problems.push(format!("{path}: empty description in README.md"));
                }
            }
        }
    }
    for path in rows.keys() {
        if !documented.iter().any(|(p, _)| p == path) {
            problems.push(format!(
                "{path}: README row for a value values.yaml does not have"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "values.yaml and README.md disagree:\n  {}",
        problems.join("\n  ")
    );
    assert!(
        documented.len() > 50,
        "found only {} documented values: is the parser right?",
        documented.len()
    );
}

// ------------------------------------------------------------------------------------------------
// The image the chart runs is the one the Dockerfile builds

#[test]
fn chart_defaults_match_the_dockerfile() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    for line in [
        "FROM gcr.io/distroless/static-debian12:nonroot",
        "USER 65532:65532",
        "ENTRYPOINT [\"/recur\"]",
        "CMD [\"run\"]",
        "cargo build --release --locked -p recur --bin recur",
    ] {
        assert!(dockerfile.contains(line), "Dockerfile lacks {line:?}");
    }
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap())
            .unwrap();
    assert_eq!(values["image"]["repository"], "ghcr.io/recur-dev/recur");
    assert_eq!(
        values["securityContext"]["runAsUser"], 65532,
        "the chart runs the image's user"
    );
    let chart_yaml: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(
        chart_yaml["appVersion"],
        env!("CARGO_PKG_VERSION"),
        "appVersion is the crate's version (the image tag)"
    );
    assert_eq!(chart_yaml["kubeVersion"], ">=1.33.0-0");
}

// ------------------------------------------------------------------------------------------------
// The operator itself, authenticated as the chart's ServiceAccount: the RBAC is enough for the
// task and reminder scenarios (the checks above prove it is no wider).

async fn wait_json(
    timeout: std::time::Duration,
    what: &str,
    args: Vec<String>,
    ok: impl Fn(&Value) -> bool,
) {
    support::wait_for(timeout, what, || {
        let args = args.clone();
        let ok = &ok;
        async move {
            let out = support::kubectl(&args);
            serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|v| ok(&v))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_runs_the_scenarios_with_only_the_chart_service_accounts_token() {
    apply_crds(&chart_crds());
    let ns = Namespace::new("chart-operator");
    let _release = Release::install("recur", &ns.0, &[]);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = token_kubeconfig(&ns.0, "recur", dir.path());
    let mut stack = support::stack::Stack::start(&ns.0).await;
    // Leader election on, as the chart runs it: the Lease lives in the release namespace.
    stack
        .start_operator_as(&kubeconfig, &["--leader-elect"])
        .await;
    let n = ns.0.clone();
    let manifest = format!(
        r#"{{"apiVersion":"recur.dev/v1alpha1","kind":"RecurringTask","metadata":{{"name":"rbac-task","namespace":"{n}"}},
            "spec":{{"userId":"user-9","title":"rbac","schedule":{{"every":"2s"}},"reminders":[{{"before":"1s"}}]}}}}"#
    );
    let file = dir.path().join("task.json");
    std::fs::write(&file, manifest).unwrap();
    run(kubectl().arg("apply").arg("-f").arg(&file), None);
    let due = (chrono::Utc::now() + chrono::Duration::seconds(3)).to_rfc3339();
    let reminder = format!(
        r#"{{"apiVersion":"recur.dev/v1alpha1","kind":"Reminder","metadata":{{"name":"rbac-rem","namespace":"{n}"}},
            "spec":{{"userId":"user-9","title":"r","dueAt":"{due}","taskId":"42","taskRef":{{"name":"rbac-task"}}}}}}"#
    );
    let file = dir.path().join("rem.json");
    std::fs::write(&file, reminder).unwrap();
    run(kubectl().arg("apply").arg("-f").arg(&file), None);
    let get = |what: &str| {
        vec![
            "get".to_string(),
            what.to_string(),
            "-n".into(),
            n.clone(),
            "-o".into(),
            "json".into(),
        ]
    };
    wait_json(
        std::time::Duration::from_secs(60),
        "two deliveries recorded in status",
        get("recurringtask/rbac-task"),
        |v| v["status"]["delivered"].as_u64().unwrap_or(0) >= 2,
    )
    .await;
    wait_json(
        std::time::Duration::from_secs(60),
        "the reminder sent",
        get("reminder/rbac-rem"),
        |v| v["status"]["phase"] == "Sent",
    )
    .await;
    wait_json(
        std::time::Duration::from_secs(60),
        "a task-made reminder sent",
        get("reminders"),
        |v| {
            v["items"].as_array().is_some_and(|items| {
                items.iter().any(|r| {
                    r["metadata"]["labels"]["recur.dev/task"] == "rbac-task"
                        && r["status"]["phase"] == "Sent"
                })
            })
        },
    )
    .await;
    let tasks = stack.accepted("/api/tasks").await.len();
    let notes = stack.accepted("/api/notifications").await.len();
    assert!(
        tasks >= 2 && notes >= 2,
        "tasks {tasks}, notifications {notes}"
    );
    let log = stack.operator_log(0);
    assert!(
        !log.contains("forbidden"),
        "the operator hit a permission it lacks:\n{log}"
    );
}

/// `leaderElection.shards=2`: the chart's RBAC is enough for two replicas to share the shards
/// out and deliver, with nothing forbidden on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_replicas_run_with_only_the_chart_service_accounts_token() {
    apply_crds(&chart_crds());
    let ns = Namespace::new("chart-shards");
    let _release = Release::install("recur", &ns.0, &["--set", "leaderElection.shards=2"]);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = token_kubeconfig(&ns.0, "recur", dir.path());
    let mut stack = support::stack::Stack::start(&ns.0).await;
    let flags = [support::stack::ELECTION.as_slice(), &["--shards", "2"]].concat();
    stack.start_operator_as(&kubeconfig, &flags).await;
    stack.start_operator_as(&kubeconfig, &flags).await;
    let n = ns.0.clone();
    for i in 0..4 {
        let manifest = format!(
            r#"{{"apiVersion":"recur.dev/v1alpha1","kind":"RecurringTask","metadata":{{"name":"shard-{i}","namespace":"{n}"}},
                "spec":{{"userId":"user-9","title":"shards","schedule":{{"every":"2s"}}}}}}"#
        );
        let file = dir.path().join(format!("task-{i}.json"));
        std::fs::write(&file, manifest).unwrap();
        run(kubectl().arg("apply").arg("-f").arg(&file), None);
    }
    wait_json(
        std::time::Duration::from_secs(60),
        "every task delivered twice",
        vec![
            "get".into(),
            "recurringtasks".into(),
            "-n".into(),
            n.clone(),
            "-o".into(),
            "json".into(),
        ],
        |v| {
            v["items"].as_array().is_some_and(|items| {
                items.len() == 4
                    && items
                        .iter()
                        .all(|t| t["status"]["delivered"].as_u64().unwrap_or(0) >= 2)
            })
        },
    )
    .await;
    let held = |i: usize| {
        let stack = &stack;
        async move {
            let (_, text) = stack.operator_get(i, "/metrics").await;
            text.lines().find_map(|l| {
                l.strip_prefix("recur_shards_held ")?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
        }
    };
    support::wait_for(
        std::time::Duration::from_secs(30),
        "one shard each",
        || async { held(0).await == Some(1.0) && held(1).await == Some(1.0) },
    )
    .await;
    for i in 0..2 {
        let log = stack.operator_log(i);
        assert!(
            !log.contains("forbidden"),
            "replica {i} hit a permission it lacks:\n{log}"
        );
    }
}

/// GitOps: after recur reconciled a task, the owner re-applies it with server-side apply under its
/// own field manager, changed, without `--force-conflicts`: recur owns nothing the user wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitops_reapply_after_reconciliation_has_no_conflict() {
    apply_crds(&chart_crds());
    let ns = Namespace::new("gitops");
    let mut stack = support::stack::Stack::start(&ns.0).await;
    stack.start_operator(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let write = |title: &str| {
        let file = dir.path().join("task.json");
        let body = format!(
            r#"{{"apiVersion":"recur.dev/v1alpha1","kind":"RecurringTask","metadata":{{"name":"g","namespace":"{}","labels":{{"team":"a"}}}},
                "spec":{{"userId":"u","title":"{title}","schedule":{{"every":"2s"}}}}}}"#,
            ns.0
        );
        std::fs::write(&file, body).unwrap();
        file
    };
    let file = write("first");
    run(
        kubectl()
            .args(["apply", "--server-side", "--field-manager=argocd", "-f"])
            .arg(&file),
        None,
    );
    let get = vec![
        "get".to_string(),
        "recurringtask/g".into(),
        "-n".into(),
        ns.0.clone(),
        "-o".into(),
        "json".into(),
    ];
    wait_json(
        std::time::Duration::from_secs(60),
        "a delivery recorded",
        get.clone(),
        |v| v["status"]["delivered"].as_u64().unwrap_or(0) >= 1,
    )
    .await;
    let file = write("second");
    let out = output(
        kubectl()
            .args(["apply", "--server-side", "--field-manager=argocd", "-f"])
            .arg(&file),
        None,
    );
    assert!(
        out.status.success(),
        "re-apply conflicted: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // recur's field manager owns status only.
    let obj: Value = serde_json::from_str(&run(
        kubectl().args([
            "get",
            "recurringtask/g",
            "-n",
            &ns.0,
            "-o",
            "json",
            "--show-managed-fields",
        ]),
        None,
    ))
    .unwrap();
    for entry in obj["metadata"]["managedFields"].as_array().unwrap() {
        if entry["manager"] == "recur" {
            assert_eq!(
                entry["subresource"], "status",
                "recur manages more than status: {entry}"
            );
        }
    }
    assert_eq!(obj["spec"]["title"], "second");
    assert_eq!(obj["metadata"]["labels"]["team"], "a");
}

/// Issue 11 (14): the project's helm is built as helm's Makefile builds a release (its default
/// Kubernetes version from its client-go, its version and commit), so rendering the chart with
/// no `--kube-version` and no cluster works, as it does for a user's helm.
#[test]
fn helm_renders_the_chart_without_a_kube_version() {
    let home = tempfile::tempdir().unwrap();
    let out = run(
        helm(home.path()).args(["template", "plain"]).arg(chart()),
        None,
    );
    assert!(find(&documents(&out), "Deployment").len() == 1, "{out}");
    let version = run(helm(home.path()).args(["version"]), None);
    let pins = std::fs::read_to_string(root().join("tests/cluster/versions.sh")).unwrap();
    let want = pins
        .lines()
        .find_map(|l| l.strip_prefix("HELM_VERSION="))
        .unwrap()
        .trim()
        .to_string();
    assert!(
        version.contains(&format!("Version:\"{want}\"")),
        "{version}"
    );
    assert!(!version.contains("GitCommit:\"\""), "no commit: {version}");
}
