//! Defects found by review (issue 11), each shown on the real control plane with the recording
//! backend: the test failed before its fix.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use recur::api::{Phase, RecurringTask, Reminder, ReminderStatus, condition};
use serde_json::json;
use support::stack::Stack;
use support::{TestNamespace, client, wait_for, wait_for_value};

fn reminder(name: &str, due: chrono::DateTime<chrono::Utc>) -> Reminder {
    serde_json::from_value(json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "Reminder", "metadata": {"name": name},
        "spec": {"userId": "user-42", "title": "Dentist", "dueAt": due.to_rfc3339()}
    }))
    .unwrap()
}

fn task(name: &str, spec: serde_json::Value) -> RecurringTask {
    let mut body = json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask", "metadata": {"name": name},
        "spec": {"userId": "user-42", "title": format!("task {name}"), "schedule": {"every": "1h"}}
    });
    for (k, v) in spec.as_object().unwrap() {
        body["spec"][k] = v.clone();
    }
    serde_json::from_value(body).unwrap()
}

/// The status of reminder `name` once it has reached `phase` (30 s at most).
async fn reaches(api: &Api<Reminder>, name: &str, phase: Phase) -> ReminderStatus {
    wait_for_value(
        Duration::from_secs(30),
        &format!("reminder {name} to reach {phase:?}"),
        || async {
            api.get(name)
                .await
                .unwrap()
                .status
                .filter(|s| s.phase == Some(phase))
        },
    )
    .await
}

/// (1) Reminders that meet the open breaker of notification-service are sent once it closes.
/// Before the fix, the call marker "key/attempts" stayed the same across a circuit-open write,
/// so every later reconcile took its own committed write for a stale cache and requeued every
/// 100 ms for ever: none of these reminders was ever sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_due_while_the_breaker_is_open_are_sent_when_it_closes() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "hard-breaker").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&[]).await;
    // Every call fails until the breaker of notification-service is open (5 failures in a row).
    stack.faults(json!({"fail_rate": 1.0})).await;
    let api: Api<Reminder> = Api::namespaced(client.clone(), ns.name());
    let due = chrono::Utc::now() + chrono::Duration::seconds(2);
    let names: Vec<String> = (0..8).map(|i| format!("blip-{i}")).collect();
    for name in &names {
        api.create(&PostParams::default(), &reminder(name, due))
            .await
            .unwrap();
    }
    wait_for(
        Duration::from_secs(60),
        "the breaker to refuse a call",
        || async {
            let (_, metrics) = stack.operator_get(0, "/metrics").await;
            metrics.lines().any(|l| {
                l.starts_with("recur_backend_call_duration_seconds_count")
                    && l.contains("circuit_open")
            })
        },
    )
    .await;
    // Reminders' calls publish the breaker's state too (it used to be only tasks').
    // Per tenant (issue 13): the reminder's namespace, and its own notification-service.
    let (_, metrics) = stack.operator_get(0, "/metrics").await;
    let series = format!(
        "recur_circuit_breaker_state{{namespace=\"{ns}\",app_id=\"notification-service.{ns}\"}}",
        ns = ns.name()
    );
    assert!(
        metrics.lines().any(|l| l.starts_with(&series)),
        "{series} missing from {metrics}"
    );
    stack.faults(json!({})).await;
    wait_for(
        Duration::from_secs(120),
        "every reminder to be sent after the breaker closes",
        || async {
            let list = api.list(&ListParams::default()).await.unwrap().items;
            list.len() == names.len()
                && list
                    .iter()
                    .all(|r| r.status.as_ref().and_then(|s| s.phase) == Some(Phase::Sent))
        },
    )
    .await;
    let keys: Vec<String> = stack
        .accepted("/api/notifications")
        .await
        .into_iter()
        .filter_map(|r| r.key)
        .collect();
    let distinct: HashSet<&String> = keys.iter().collect();
    assert_eq!(keys.len(), names.len(), "{keys:?}");
    assert_eq!(distinct.len(), names.len(), "a reminder was accepted twice");
    ns.cleanup().await;
}

/// (8) A task whose every occurrence is refused makes one Event (a series), not one per
/// occurrence: the note is stable and the object reference carries no resourceVersion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanently_failing_task_makes_one_warning_event_not_one_per_occurrence() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "hard-events").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&[]).await;
    let tasks: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    // The backend has no such route: an app's 404, refused for good.
    tasks
        .create(
            &PostParams::default(),
            &task(
                "refused",
                json!({"schedule": {"every": "1s"}, "target": {"method": "api/no-such-route"}}),
            ),
        )
        .await
        .unwrap();
    let failed = wait_for_value(
        Duration::from_secs(60),
        "six refused occurrences",
        || async {
            let t = tasks.get("refused").await.unwrap();
            t.status.map(|s| s.failed).filter(|f| *f >= 6)
        },
    )
    .await;
    let rejected = support::event_reasons(ns.name(), "")
        .into_iter()
        .filter(|r| r == "DeliveryRejected")
        .count();
    assert_eq!(
        rejected, 1,
        "{failed} refused occurrences made {rejected} DeliveryRejected events"
    );
    let (_, metrics) = stack.operator_get(0, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("recur_events_suppressed_total{reason=\"DeliveryRejected\"}")),
        "{metrics}"
    );
    ns.cleanup().await;
}

/// (7) A task whose name is longer than a label value (63 characters) still gets its reminders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_with_a_long_name_gets_its_reminders() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "hard-longname").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&[]).await;
    let name = format!("weekly-report-for-the-finance-team-{}", "x".repeat(60));
    assert!(name.len() > 63);
    let tasks: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    let start = chrono::Utc::now() + chrono::Duration::seconds(8);
    tasks
        .create(
            &PostParams::default(),
            &task(
                &name,
                json!({"schedule": {"every": "1h", "startAt": start.to_rfc3339()},
                       "reminders": [{"before": "3s"}]}),
            ),
        )
        .await
        .unwrap();
    let rems: Api<Reminder> = Api::namespaced(client.clone(), ns.name());
    let sent = wait_for_value(
        Duration::from_secs(40),
        "the long-named task's reminder to be sent",
        || async {
            rems.list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .find(|r| r.status.as_ref().and_then(|s| s.phase) == Some(Phase::Sent))
        },
    )
    .await;
    assert_eq!(sent.spec.task_ref.unwrap().name, name);
    let label = sent.metadata.labels.unwrap()["recur.dev/task"].clone();
    assert!(label.len() <= 63, "{label}");
    assert_eq!(stack.accepted("/api/notifications").await.len(), 1);
    ns.cleanup().await;
}

/// (12) A reminder created for an occurrence follows its task: suspending the task before the
/// reminder is due cancels it (phase Skipped, reason TaskSuspended) and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspending_a_task_cancels_its_pending_reminders() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "hard-suspend").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&[]).await;
    let tasks: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    let start = chrono::Utc::now() + chrono::Duration::seconds(15);
    tasks
        .create(
            &PostParams::default(),
            &task(
                "paused",
                json!({"schedule": {"every": "1h", "startAt": start.to_rfc3339()},
                       "reminders": [{"before": "8s"}]}),
            ),
        )
        .await
        .unwrap();
    let rems: Api<Reminder> = Api::namespaced(client.clone(), ns.name());
    let created = wait_for_value(Duration::from_secs(20), "the reminder", || async {
        rems.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .next()
    })
    .await;
    let due = created.spec.due_at;
    tasks
        .patch(
            "paused",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await
        .unwrap();
    let name = created.metadata.name.clone().unwrap();
    let status = reaches(&rems, &name, Phase::Skipped).await;
    let ready = condition(&status.conditions, "Ready").unwrap();
    // Skipped on purpose is done: Ready=True, so kstatus (Flux) reads it Current.
    assert_eq!(
        (ready.reason.as_str(), ready.status.as_str()),
        ("TaskSuspended", "True")
    );
    wait_for(Duration::from_secs(20), "the due time to pass", || async {
        chrono::Utc::now() > due + chrono::Duration::seconds(2)
    })
    .await;
    assert!(stack.accepted("/api/notifications").await.is_empty());
    ns.cleanup().await;
}

/// (6) A reminder first seen long after it was due (a status wiped or restored, or created
/// late) is not sent: phase Skipped, reason TooLate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_first_seen_hours_after_it_was_due_is_not_sent() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "hard-late").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&[]).await;
    let api: Api<Reminder> = Api::namespaced(client.clone(), ns.name());
    let long_ago = chrono::Utc::now() - chrono::Duration::hours(3);
    let recent = chrono::Utc::now() - chrono::Duration::minutes(5);
    api.create(&PostParams::default(), &reminder("stale", long_ago))
        .await
        .unwrap();
    api.create(&PostParams::default(), &reminder("late", recent))
        .await
        .unwrap();
    let stale = reaches(&api, "stale", Phase::Skipped).await;
    let ready = condition(&stale.conditions, "Ready").unwrap();
    assert_eq!(
        (ready.reason.as_str(), ready.status.as_str()),
        ("TooLate", "True")
    );
    // Within the lookback a late reminder is still sent.
    reaches(&api, "late", Phase::Sent).await;
    let keys: Vec<_> = stack
        .accepted("/api/notifications")
        .await
        .into_iter()
        .filter_map(|r| r.key)
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    ns.cleanup().await;
}

/// A control plane of this test's own, torn down when it ends (passed or not).
struct OwnCluster {
    dir: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
}

impl OwnCluster {
    fn up(dir: &std::path::Path) -> OwnCluster {
        let kubeconfig = support::start_cluster(Some(dir)).unwrap_or_else(|e| panic!("{e}"));
        OwnCluster {
            dir: dir.to_path_buf(),
            kubeconfig,
        }
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/cluster/down.sh"
        ))
        .arg(&self.dir)
        .output();
    }
}

/// An operator started where a CRD it watches is missing (a `helm upgrade` that skipped applying
/// the new version's CRDs) stops at once, naming the kind and how to install it. Before the fix
/// it checked RecurringTask and Reminder only, and waited unready for ever on Backfill's watch.
#[test]
fn an_operator_missing_a_crd_it_watches_stops_and_names_it() {
    // Its own control plane: the shared one has every CRD, and the other tests need them.
    let parent = tempfile::tempdir().unwrap();
    let cluster = OwnCluster::up(&parent.path().join("cluster"));
    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new(support::bin_dir().join("kubectl"))
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .args(args)
            .output()
            .expect("running kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/crds");
    for plural in ["recurringtasks", "reminders", "tenantpolicies"] {
        kubectl(&["apply", "-f", &format!("{crds}/{plural}.recur.dev.yaml")]);
        kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            &format!("crd/{plural}.recur.dev"),
        ]);
    }

    let mut operator = std::process::Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(["run", "--leader-elect=false", "--dapr-health-check=false"])
        .args(["--http-addr", "127.0.0.1:0"])
        // Nothing from the test's own environment (RECUR_LOG, RECUR_NAMESPACE, ...).
        .env_clear()
        .env("KUBECONFIG", &cluster.kubeconfig)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting recur run");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = operator.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            operator.kill().unwrap();
            let out = operator.wait_with_output().unwrap();
            panic!(
                "recur run kept running without the Backfill CRD; its output:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = operator.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!status.success(), "recur run exited successfully: {said}");
    assert!(
        said.contains("Backfill CRD not usable") && said.contains("kubectl apply"),
        "the error names neither the kind nor the fix: {said}"
    );
}
