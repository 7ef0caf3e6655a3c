//! Tenancy enforced by the operator (issue 13), on the real control plane with real daprd and
//! the recording backend: a plain app id is the tenant's own, every call names its tenant, a
//! policy revoked after admission stops deliveries, and one tenant's failing calls leave another
//! tenant's calls to the same app alone. (Refusals at `kubectl apply` are in e2e_admission.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use recur::api::{RecurringTask, TenantPolicy, condition};
use serde_json::json;
use support::stack::{Record, Stack};
use support::{TestNamespace, client, unique_name, wait_for, wait_for_value};

/// The label that lets one test's policies select only its own namespaces.
const TENANT_LABEL: &str = "recur.dev/test-tenant";

fn task(name: &str, labels: &str, spec: serde_json::Value) -> RecurringTask {
    let mut body = json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
        "metadata": {"name": name, "labels": {"recur.dev/test-run": labels}},
        "spec": {"userId": "user-42", "title": format!("task {name}"), "schedule": {"every": "2s"}}
    });
    for (k, v) in spec.as_object().unwrap() {
        body["spec"][k] = v.clone();
    }
    serde_json::from_value(body).unwrap()
}

/// Labels namespace `ns` as tenant `tenant` of this test.
async fn label_namespace(client: &Client, ns: &str, tenant: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    api.patch(
        ns,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {TENANT_LABEL: tenant}}})),
    )
    .await
    .unwrap();
}

/// A policy selecting the namespaces labelled `tenant`.
async fn apply_policy(client: &Client, name: &str, tenant: &str, spec: serde_json::Value) {
    let mut body = json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "TenantPolicy",
        "metadata": {"name": name},
        "spec": {"namespaceSelector": {"matchLabels": {TENANT_LABEL: tenant}}}
    });
    for (k, v) in spec.as_object().unwrap() {
        body["spec"][k] = v.clone();
    }
    let api: Api<TenantPolicy> = Api::all(client.clone());
    api.patch(
        name,
        &PatchParams::apply("e2e-tenancy").force(),
        &Patch::Apply(&body),
    )
    .await
    .unwrap();
}

async fn delete_policy(client: &Client, name: &str) {
    let api: Api<TenantPolicy> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
}

/// The task's `Ready` condition as (status, reason, message).
async fn ready(api: &Api<RecurringTask>, name: &str) -> Option<(String, String, String)> {
    let task = api.get(name).await.ok()?;
    let status = task.status?;
    let c = condition(&status.conditions, "Ready")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn uid(task: &RecurringTask) -> String {
    task.metadata.uid.clone().unwrap()
}

/// The records of `task`'s occurrences (by the key prefix its uid gives).
fn of(records: &[Record], uid: &str) -> Vec<Record> {
    let prefix = format!("rt-{uid}-");
    records
        .iter()
        .filter(|r| r.key.as_deref().is_some_and(|k| k.starts_with(&prefix)))
        .cloned()
        .collect()
}

/// A task with the default target in namespace `ns` calls `backend.<ns>`, and the call names
/// its tenant: `X-Recur-Namespace` (read by the backend through real daprd) and the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_app_id_is_the_tenants_own_and_every_call_names_its_tenant() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "ten-own").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&[]).await;
    let api: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    let created = api
        .create(&PostParams::default(), &task("own", "x", json!({})))
        .await
        .unwrap();
    let uid = uid(&created);
    let delivered = wait_for_value(
        Duration::from_secs(30),
        "an occurrence of the task to reach the backend",
        || async {
            of(&stack.records().await, &uid)
                .into_iter()
                .find(|r| r.accepted)
        },
    )
    .await;
    assert_eq!(delivered.path, "/api/tasks");
    assert_eq!(delivered.namespace.as_deref(), Some(ns.name()));
    // The operator called the app of the task's namespace, not recur's own `backend`.
    let log = stack.operator_log(0);
    let wanted = format!("backend.{}", ns.name());
    assert!(
        log.lines()
            .any(|l| l.contains("dapr invocation") && l.contains(&wanted)),
        "no invocation of {wanted} in the operator's log"
    );
    ns.cleanup().await;
}

/// A task admitted under a policy that is later revoked ends `Ready=False` with reason
/// `PolicyDenied` and is sent nothing more; granted again, it resumes with the occurrences
/// after the grant (none of those missed while denied).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_stops_deliveries_and_a_new_grant_resumes_them_without_backfill() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "ten-revoke").await;
    let tenant = unique_name("revoke");
    label_namespace(&client, ns.name(), &tenant).await;
    let shared = unique_name("shared");
    let policy = unique_name("grant");
    let grant =
        json!({"targets": [{"namespace": shared, "appId": "backend", "methods": ["api/tasks"]}]});

    let mut stack = Stack::start(ns.name()).await;
    apply_policy(&client, &policy, &tenant, grant.clone()).await;
    let run = unique_name("run");
    stack
        .start_selector_operator(&format!("recur.dev/test-run={run}"), &[])
        .await;
    let api: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    let target = json!({"target": {"appId": format!("backend.{shared}")}});
    let crossing = uid(&api
        .create(&PostParams::default(), &task("crossing", &run, target))
        .await
        .unwrap());
    // A task of the namespace's own app, which no policy change touches: the clock of this test.
    let own = uid(&api
        .create(&PostParams::default(), &task("own", &run, json!({})))
        .await
        .unwrap());
    wait_for(
        Duration::from_secs(30),
        "the granted task to deliver twice",
        || async {
            of(&stack.records().await, &crossing)
                .iter()
                .filter(|r| r.accepted)
                .count()
                >= 2
        },
    )
    .await;

    delete_policy(&client, &policy).await;
    let (_, _, message) = wait_for_value(
        Duration::from_secs(30),
        "the task to be refused by policy",
        || async {
            ready(&api, "crossing")
                .await
                .filter(|(s, r, _)| s == "False" && r == "PolicyDenied")
        },
    )
    .await;
    assert!(
        message.contains(&format!("namespace {shared}")),
        "{message}"
    );
    assert!(message.contains("no TenantPolicy selects"), "{message}");
    let sent_when_denied = of(&stack.records().await, &crossing).len();
    // Three more occurrences of the other task: the denied one would have fallen due meanwhile.
    let own_before = of(&stack.records().await, &own).len();
    wait_for(
        Duration::from_secs(30),
        "three more occurrences of the own-app task",
        || async { of(&stack.records().await, &own).len() >= own_before + 3 },
    )
    .await;
    assert_eq!(
        of(&stack.records().await, &crossing).len(),
        sent_when_denied,
        "a denied task was called"
    );

    let regranted = chrono::Utc::now();
    apply_policy(&client, &policy, &tenant, grant).await;
    let resumed = wait_for_value(
        Duration::from_secs(30),
        "the task to deliver again once granted",
        || async {
            let records = of(&stack.records().await, &crossing);
            (records.len() > sent_when_denied).then(|| records[sent_when_denied].clone())
        },
    )
    .await;
    let nominal = chrono::DateTime::parse_from_rfc3339(resumed.scheduled_at.as_deref().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert!(
        nominal > regranted - chrono::Duration::seconds(2),
        "an occurrence missed while denied was delivered late: {nominal} (granted again at {regranted})"
    );
    wait_for(
        Duration::from_secs(30),
        "the task to be Ready again",
        || async {
            ready(&api, "crossing")
                .await
                .is_some_and(|(s, _, _)| s == "True")
        },
    )
    .await;
    delete_policy(&client, &policy).await;
    ns.cleanup().await;
}

/// What the webhook refuses at apply is refused again by the operator for an object that got
/// past it (stored before the webhook was installed): a user id outside the policy and a payload
/// over the default limit end `PolicyDenied`, and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_ids_and_payloads_outside_the_policy_are_never_sent() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "ten-limits").await;
    let tenant = unique_name("limits");
    label_namespace(&client, ns.name(), &tenant).await;
    let policy = unique_name("users");
    let mut stack = Stack::start(ns.name()).await;
    apply_policy(
        &client,
        &policy,
        &tenant,
        json!({"userIds": {"pattern": "team-a-[a-z]+"}}),
    )
    .await;
    let run = unique_name("run");
    stack
        .start_selector_operator(&format!("recur.dev/test-run={run}"), &[])
        .await;
    let api: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    let stranger = uid(&api
        .create(
            &PostParams::default(),
            &task("stranger", &run, json!({"userId": "mallory"})),
        )
        .await
        .unwrap());
    let big = json!({"userId": "team-a-bob", "payload": {"blob": "x".repeat(70 * 1024)}});
    let heavy = uid(&api
        .create(&PostParams::default(), &task("heavy", &run, big))
        .await
        .unwrap());
    let fine = uid(&api
        .create(
            &PostParams::default(),
            &task("fine", &run, json!({"userId": "team-a-bob"})),
        )
        .await
        .unwrap());
    for (name, words) in [
        ("stranger", format!("TenantPolicy {policy:?} (rule userIds")),
        ("heavy", "over the limit of 65536 bytes".to_string()),
    ] {
        let (_, _, message) = wait_for_value(
            Duration::from_secs(30),
            &format!("task {name} to be refused by policy"),
            || async {
                ready(&api, name)
                    .await
                    .filter(|(s, r, _)| s == "False" && r == "PolicyDenied")
            },
        )
        .await;
        assert!(message.contains(&words), "{name}: {message}");
    }
    // The permitted task of the same namespace delivers: the operator is working, and calls none
    // of the refused ones.
    wait_for(
        Duration::from_secs(30),
        "the permitted task to deliver twice",
        || async {
            of(&stack.records().await, &fine)
                .iter()
                .filter(|r| r.accepted)
                .count()
                >= 2
        },
    )
    .await;
    let records = stack.records().await;
    assert!(
        of(&records, &stranger).is_empty(),
        "a refused user id was sent"
    );
    assert!(
        of(&records, &heavy).is_empty(),
        "an oversized payload was sent"
    );
    delete_policy(&client, &policy).await;
    ns.cleanup().await;
}

/// Two tenants call the same app; every call of tenant A fails until A's breaker opens. Tenant
/// B's calls to that app keep going through, each on its first attempt: breakers are per tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_failures_do_not_open_the_breaker_of_another_tenant_of_the_same_app() {
    let client = client().await;
    let a = TestNamespace::new(&client, "ten-a").await;
    let b = TestNamespace::new(&client, "ten-b").await;
    let tenant = unique_name("pair");
    label_namespace(&client, a.name(), &tenant).await;
    label_namespace(&client, b.name(), &tenant).await;
    let shared = unique_name("shared");
    let policy = unique_name("shared-app");
    let mut stack = Stack::start(a.name()).await;
    apply_policy(
        &client,
        &policy,
        &tenant,
        json!({"targets": [{"namespace": shared, "appId": "backend"}]}),
    )
    .await;
    // A's calls fail (503) wherever they go; B's are answered.
    stack
        .faults(json!({"fail_rate": 1.0, "namespace": a.name()}))
        .await;
    let run = unique_name("run");
    stack
        .start_selector_operator(&format!("recur.dev/test-run={run}"), &[])
        .await;
    let target =
        json!({"target": {"appId": format!("backend.{shared}")}, "schedule": {"every": "1s"}});
    let (api_a, api_b): (Api<RecurringTask>, Api<RecurringTask>) = (
        Api::namespaced(client.clone(), a.name()),
        Api::namespaced(client.clone(), b.name()),
    );
    for i in 0..3 {
        api_a
            .create(
                &PostParams::default(),
                &task(&format!("a-{i}"), &run, target.clone()),
            )
            .await
            .unwrap();
    }
    let mut uids_b = vec![];
    for i in 0..3 {
        let t = api_b
            .create(
                &PostParams::default(),
                &task(&format!("b-{i}"), &run, target.clone()),
            )
            .await
            .unwrap();
        uids_b.push(uid(&t));
    }
    let open_a = |metrics: &str, ns: &str| {
        metrics.lines().any(|l| {
            l.starts_with("recur_circuit_breaker_state{")
                && l.contains(&format!("namespace=\"{ns}\""))
                && l.ends_with(" 2")
        })
    };
    wait_for(
        Duration::from_secs(60),
        "tenant A's breaker to open",
        || async {
            let (_, metrics) = stack.operator_get(0, "/metrics").await;
            open_a(&metrics, a.name())
        },
    )
    .await;
    // While it is open, each of B's tasks delivers three more occurrences.
    let counts = |records: &[Record]| -> Vec<usize> {
        uids_b
            .iter()
            .map(|u| of(records, u).iter().filter(|r| r.accepted).count())
            .collect()
    };
    let before = counts(&stack.records().await);
    wait_for(
        Duration::from_secs(30),
        "three more occurrences of each of B's tasks",
        || async {
            let now = counts(&stack.records().await);
            now.iter().zip(&before).all(|(n, b)| *n >= b + 3)
        },
    )
    .await;
    let (_, metrics) = stack.operator_get(0, "/metrics").await;
    assert!(
        open_a(&metrics, a.name()),
        "A's breaker closed during the test"
    );
    assert!(!open_a(&metrics, b.name()), "B's breaker opened");
    for i in 0..3 {
        let status = api_b.get(&format!("b-{i}")).await.unwrap().status.unwrap();
        assert!(
            status.last_failure.is_none(),
            "b-{i}: {:?}",
            status.last_failure
        );
        for rec in &status.history {
            assert_eq!(rec.attempts, 1, "b-{i}: {rec:?}");
        }
    }
    // Every call B made got an answer: none met a fault or an open breaker.
    let records = stack.records().await;
    for u in &uids_b {
        assert!(of(&records, u).iter().all(|r| r.fault.is_none()));
    }
    delete_policy(&client, &policy).await;
    a.cleanup().await;
    b.cleanup().await;
}
