//! The validating admission webhook (issue 13) on the real control plane: the API server calls
//! the operator's webhook (self-managed certificate, on 127.0.0.1) and the real kubectl shows
//! why a task, reminder or TenantPolicy that breaks the tenancy policy is refused.
//!
//! Each test has its own namespace, labelled `team=<namespace>`, its own TenantPolicies (whose
//! selectors name that label, so no other test's namespace is affected) and its own webhook
//! configuration (see tests/support/webhook.rs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::stack::{Stack, free_port};
use support::webhook::{ClusterObject, POLICY_LABEL, Webhook};
use support::{TestNamespace, client, kubectl, kubectl_input, unique_name, wait_for};

/// How long the operator may take to see a TenantPolicy (its watch cache) or to publish its CA.
const SETTLE: Duration = Duration::from_secs(60);

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `kubectl apply -f -` of `manifest`, plus `extra` flags.
fn apply(manifest: &Value, extra: &[&str]) -> Output {
    let mut args = vec!["apply", "-f", "-"];
    args.extend_from_slice(extra);
    kubectl_input(args, manifest.to_string().as_bytes())
}

fn task(ns: &str, name: &str, user: &str, spec: Value) -> Value {
    let mut task = json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"userId": user, "title": format!("task {name}"), "schedule": {"every": "1h"}}
    });
    for (k, v) in spec.as_object().unwrap() {
        task["spec"][k] = v.clone();
    }
    task
}

/// A TenantPolicy for the test's namespace (`team=<ns>`), routed to the test's webhook.
fn policy(webhook: &Webhook, name: &str, spec: Value) -> (Value, ClusterObject) {
    let mut policy = json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "TenantPolicy",
        "metadata": {"name": name, "labels": {POLICY_LABEL: webhook.policy_label}},
        "spec": {"namespaceSelector": {"matchLabels": {"team": webhook.namespace}}}
    });
    for (k, v) in spec.as_object().unwrap() {
        policy["spec"][k] = v.clone();
    }
    let guard = ClusterObject {
        kind: "tenantpolicy".into(),
        name: name.into(),
    };
    (policy, guard)
}

/// The test's namespace, labelled for its policies, with the backend, sidecars and `replicas`
/// operators serving the webhook (the first on the configuration's port).
async fn setup(prefix: &str) -> (TestNamespace, Stack, Webhook) {
    setup_with(prefix, &[]).await
}

/// [`setup`], the operator started with `extra` flags too.
async fn setup_with(prefix: &str, extra: &[String]) -> (TestNamespace, Stack, Webhook) {
    let client = client().await;
    let ns = TestNamespace::new(&client, prefix).await;
    let out = kubectl([
        "label",
        "namespace",
        ns.name(),
        &format!("team={}", ns.name()),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut stack = Stack::start(ns.name()).await;
    let webhook = Webhook::create(ns.name());
    let mut flags = webhook.flags(webhook.port);
    flags.extend_from_slice(extra);
    stack.start_operator(&strs(&flags)).await;
    webhook.answering().await;
    (ns, stack, webhook)
}

/// Asserts that applying `manifest` is refused by the webhook with every one of `words`.
fn refused(manifest: &Value, words: &[&str]) -> String {
    let out = apply(manifest, &[]);
    let err = stderr(&out);
    assert!(!out.status.success(), "admitted: {manifest}");
    assert!(
        err.contains("denied the request"),
        "not the webhook's refusal: {err}"
    );
    for word in words {
        assert!(err.contains(word), "{word:?} missing in: {err}");
    }
    err
}

/// With `--webhook-client-ca` the webhook answers the API server, which presents the client
/// certificate its AdmissionConfiguration names (tests/cluster/up.sh), and nobody else: a
/// review posted straight to the port, as any pod of the cluster could, gets no answer (without
/// the flag it is answered: the next test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_the_webhook_answers_the_api_server_only() {
    let pki = std::path::Path::new(&std::env::var("KUBECONFIG").expect("KUBECONFIG"))
        .parent()
        .unwrap()
        .join("pki");
    let ca = pki.join("webhook-client-ca.crt");
    let (ns, _stack, webhook) = setup_with(
        "adm-client-ca",
        &[format!("--webhook-client-ca={}", ca.display())],
    )
    .await;
    // `answering` applied a task through the API server: it was answered. A refusal too.
    refused(
        &task(
            ns.name(),
            "orders-sync",
            "alice",
            json!({"target": {"appId": "orders.payments"}}),
        ),
        &[&format!("no TenantPolicy selects namespace {}", ns.name())],
    );
    let post = |cert: &[&str]| post_review(webhook.port, ns.name(), cert);
    let forged = post(&[]);
    let answer = String::from_utf8_lossy(&forged.stdout);
    assert!(
        !forged.status.success() && !answer.contains("AdmissionReview"),
        "answered a client without a certificate: {answer}"
    );
    // The same request with the API server's client certificate is answered: the refusal above
    // is the certificate's doing, not curl's or the port's.
    let (crt, key) = (
        pki.join("webhook-client.crt"),
        pki.join("webhook-client.key"),
    );
    let (crt, key) = (crt.to_str().unwrap(), key.to_str().unwrap());
    let signed = post(&["--cert", crt, "--key", key]);
    let answer = String::from_utf8_lossy(&signed.stdout);
    assert!(
        signed.status.success() && answer.contains(r#""uid":"forged""#),
        "{answer} {}",
        stderr(&signed)
    );
}

/// Without `--webhook-client-ca` (the default) the same review posted straight to the port is
/// answered: what the chart README's "Who may call the webhook" warns of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_client_ca_a_review_posted_to_the_port_is_answered() {
    let (ns, _stack, webhook) = setup("adm-open").await;
    let forged = post_review(webhook.port, ns.name(), &[]);
    let answer = String::from_utf8_lossy(&forged.stdout);
    assert!(
        forged.status.success() && answer.contains(r#""uid":"forged""#),
        "{answer} {}",
        stderr(&forged)
    );
}

/// POSTs a review of a new task in `namespace`, as if from the API server, straight to the
/// webhook on `port` with curl (`cert`: its extra arguments, such as a client certificate).
fn post_review(port: u16, namespace: &str, cert: &[&str]) -> Output {
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "forged", "operation": "CREATE", "namespace": namespace, "name": "x",
            "userInfo": {},
            "kind": {"group": "recur.dev", "version": "v1alpha1", "kind": "RecurringTask"},
            "resource": {"group": "recur.dev", "version": "v1alpha1", "resource": "recurringtasks"},
            "object": task(namespace, "x", "alice", json!({}))
        }
    })
    .to_string();
    let url = format!("https://127.0.0.1:{port}/validate");
    let mut args = vec![
        "-sk",
        "--max-time",
        "10",
        "-H",
        "content-type: application/json",
    ];
    args.extend_from_slice(cert);
    args.extend_from_slice(&["--data-binary", &review, &url]);
    std::process::Command::new("curl")
        .args(&args)
        .output()
        .unwrap()
}

/// (a) Without a TenantPolicy a task may call only its own namespace's apps; kubectl says so.
/// (b) A policy granting `orders` of `payments` under `api/orders` admits the same task once the
/// operator's cache has it, and still refuses a method outside the prefix, naming the policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_calling_another_namespace_is_refused_until_a_tenant_policy_grants_it() {
    let (ns, _stack, webhook) = setup("adm-targets").await;
    let n = ns.name();
    let orders = task(
        n,
        "orders-sync",
        "alice",
        json!({"target": {"appId": "orders.payments", "method": "api/orders"}}),
    );
    let err = refused(
        &orders,
        &[
            "admission webhook \"tasks.recur.dev\" denied the request: spec.target: app \"orders\" of namespace payments",
            &format!("no TenantPolicy selects namespace {n}"),
            "(the default; rule targets)",
        ],
    );
    assert!(err.contains("Forbidden"), "{err}");
    let out = kubectl(["get", "recurringtask", "orders-sync", "-n", n]);
    assert!(!out.status.success(), "a refused task was stored");
    // The task's own namespace needs no grant.
    let local = task(n, "local", "alice", json!({"target": {"appId": "backend"}}));
    let out = apply(&local, &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    let name = unique_name("payments-clients");
    let (grant, _guard) = policy(
        &webhook,
        &name,
        json!({"targets": [{"namespace": "payments", "appId": "orders", "methods": ["api/orders"]}]}),
    );
    let out = apply(&grant, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for(SETTLE, "the operator to see the TenantPolicy", || {
        let ok = apply(&orders, &[]).status.success();
        async move { ok }
    })
    .await;
    // Below the prefix by whole segments only.
    let deeper = task(
        n,
        "orders-items",
        "alice",
        json!({"target": {"appId": "orders.payments", "method": "api/orders/7/items"}}),
    );
    let out = apply(&deeper, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let admin = task(
        n,
        "orders-admin",
        "alice",
        json!({"target": {"appId": "orders.payments", "method": "api/orders-admin"}}),
    );
    refused(
        &admin,
        &[
            "spec.target: app \"orders\" of namespace payments (method \"api/orders-admin\")",
            &format!("TenantPolicy \"{name}\" (rule targets)"),
        ],
    );
    // An edit is reviewed too: the admitted task cannot be turned to another method.
    let mut edited = orders.clone();
    edited["spec"]["target"]["method"] = json!("admin/shutdown");
    refused(&edited, &["(rule targets)"]);
    ns.cleanup().await;
}

/// (c) a user id outside the policy's `userIds`, (d) a payload over the 64 KiB default, (e) a
/// reminder naming another user's task and (f) a TenantPolicy whose pattern does not compile
/// are each refused, with the rule and the limit in the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_ids_payloads_task_owners_and_policy_patterns_are_checked_at_apply() {
    let (ns, _stack, webhook) = setup("adm-rules").await;
    let n = ns.name();
    let name = unique_name("team-users");
    let (users, _guard) = policy(
        &webhook,
        &name,
        json!({"userIds": {"allowed": ["alice", "bob"], "pattern": "svc-[a-z]+"}}),
    );
    let out = apply(&users, &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    // (c) Until the operator's cache has the policy, any user id is admitted (dry-run: nothing
    // is stored while waiting).
    let mallory = task(n, "by-mallory", "mallory", json!({}));
    wait_for(SETTLE, "the operator to see the userIds policy", || {
        let refused = !apply(&mallory, &["--dry-run=server"]).status.success();
        async move { refused }
    })
    .await;
    refused(
        &mallory,
        &[
            "spec.userId: user id \"mallory\" is not allowed in namespace",
            &format!(
                "TenantPolicy \"{name}\" (rule userIds: allowed [\"alice\", \"bob\"], pattern \"svc-[a-z]+\")"
            ),
        ],
    );
    let bot = task(n, "by-bot", "svc-reports", json!({}));
    let out = apply(&bot, &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    // (d) 70 000 bytes of payload, over the default limit of 64 KiB.
    let big = task(
        n,
        "big",
        "alice",
        json!({"payload": {"blob": "x".repeat(70_000)}}),
    );
    refused(
        &big,
        &[
            "spec.payload: 70011 bytes of JSON is over the limit of 65536 bytes",
            "limits.maxPayloadBytes",
        ],
    );
    let small = task(
        n,
        "small",
        "alice",
        json!({"payload": {"blob": "x".repeat(1_000)}}),
    );
    let out = apply(&small, &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    // (e) bob's reminder may not name alice's task; alice's may.
    let due = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let reminder = |name: &str, user: &str| {
        json!({
            "apiVersion": "recur.dev/v1alpha1", "kind": "Reminder",
            "metadata": {"name": name, "namespace": n},
            "spec": {"userId": user, "title": "ping", "dueAt": due, "taskRef": {"name": "small"}}
        })
    };
    refused(
        &reminder("bobs", "bob"),
        &[
            "spec.taskRef: task \"small\" belongs to another user",
            "its own userId",
        ],
    );
    let out = apply(&reminder("alices", "alice"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    // (f) A policy whose user id pattern is no regular expression.
    let broken_name = unique_name("broken");
    let (broken, _broken_guard) = policy(
        &webhook,
        &broken_name,
        json!({"userIds": {"pattern": "team-a-[a-z"}}),
    );
    refused(
        &broken,
        &[
            "admission webhook \"tenantpolicies.recur.dev\" denied the request: spec.userIds.pattern: not a valid regular expression",
        ],
    );
    let out = kubectl(["get", "tenantpolicy", &broken_name]);
    assert!(!out.status.success(), "a refused policy was stored");
    ns.cleanup().await;
}

/// (g) Two replicas starting at once share one CA: exactly one issues the Secret, the other
/// reads it; the CA is published as every webhook's caBundle; a restarted replica serves the
/// same Secret; no key appears in the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_self_managed_ca_published_as_the_ca_bundle_and_kept_across_restarts() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "adm-ca").await;
    let mut stack = Stack::start(ns.name()).await;
    let webhook = Webhook::create(ns.name());
    let second_port = free_port();
    let a = stack.spawn_operator(&strs(&webhook.flags(webhook.port)));
    let b = stack.spawn_operator(&strs(&webhook.flags(second_port)));
    stack.wait_ready(a).await;
    stack.wait_ready(b).await;
    webhook.answering().await;

    let secret = webhook.secret().expect("the operator's Secret");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let data = |s: &Value, key: &str| -> Vec<u8> {
        base64_decode(
            s["data"][key]
                .as_str()
                .unwrap_or_else(|| panic!("{key} in the Secret")),
        )
    };
    let ca = data(&secret, "ca.crt");
    let serving = data(&secret, "tls.crt");
    let config = webhook.configuration();
    let webhooks = config["webhooks"].as_array().unwrap();
    assert_eq!(webhooks.len(), 2);
    for w in webhooks {
        let bundle = base64_decode(w["clientConfig"]["caBundle"].as_str().unwrap());
        assert_eq!(bundle, ca, "caBundle of {}", w["name"]);
    }
    let issued = |stack: &Stack| {
        (0..2)
            .map(|i| {
                stack
                    .operator_log(i)
                    .matches("webhook certificate issued")
                    .count()
            })
            .sum::<usize>()
    };
    assert_eq!(
        issued(&stack),
        1,
        "one replica issues, the other reads its Secret"
    );
    // Both replicas serve a certificate the published CA vouches for.
    for port in [webhook.port, second_port] {
        handshake(port, &ca)
            .await
            .unwrap_or_else(|e| panic!("TLS to 127.0.0.1:{port} with the published CA: {e}"));
    }

    stack.terminate_operator(a).await;
    stack.restart_operator(a).await;
    webhook.answering().await;
    let after = webhook.secret().unwrap();
    assert_eq!(data(&after, "ca.crt"), ca, "the restart kept the CA");
    assert_eq!(
        data(&after, "tls.crt"),
        serving,
        "and the serving certificate"
    );
    assert_eq!(issued(&stack), 1);
    handshake(webhook.port, &ca).await.unwrap();
    // No key material in the logs: neither PEM markers nor a line of either key.
    let key_lines: Vec<String> = ["ca.key", "tls.key"]
        .iter()
        .flat_map(|k| {
            String::from_utf8(data(&after, k))
                .unwrap()
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!key_lines.is_empty());
    for i in 0..2 {
        let log = stack.operator_log(i);
        assert!(
            !log.contains("PRIVATE KEY"),
            "a key in the log of operator {i}"
        );
        for line in &key_lines {
            assert!(
                !log.contains(line.as_str()),
                "a line of a key in the log of operator {i}"
            );
        }
    }
    ns.cleanup().await;
}

fn base64_decode(text: &str) -> Vec<u8> {
    // k8s_openapi's ByteString is base64 in JSON: let serde decode it.
    serde_json::from_value::<k8s_openapi::ByteString>(json!(text))
        .unwrap()
        .0
}

/// A TLS handshake with 127.0.0.1:`port` trusting only `ca_pem`.
async fn handshake(port: u16, ca_pem: &[u8]) -> Result<(), String> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
