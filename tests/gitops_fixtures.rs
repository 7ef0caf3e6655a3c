//! GitOps health (issue 16): captures real RecurringTask, Reminder and Backfill objects from the
//! operator in the states Argo CD and Flux tell apart (ready, invalid, suspended, sent, failed,
//! running, complete, waiting for a task), writes them as `kubectl get -o json` printed them, and
//! runs the Go harness in `tests/gitops` on them: the Argo CD health checks in `deploy/argocd/`
//! (under gopher-lua, set up as Argo CD sets it up) and kstatus (`sigs.k8s.io/cli-utils`, what
//! Flux reads) must give the expected answers. `RECUR_GITOPS_UPDATE=1` also copies the captures
//! to `tests/gitops/testdata/`, which the Go test reads when run on its own. Last, the Argo CD
//! actions' merge patches (run-now, suspend, resume), as the harness computed them, are applied
//! to a live task and must do what they say.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::{DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};
use support::stack::Stack;
use support::{TestNamespace, client, kubectl, kubectl_input, wait_for_value};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn apply(ns: &str, kind: &str, name: &str, spec: Value) {
    let body = json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": kind,
        "metadata": {"name": name, "namespace": ns}, "spec": spec,
    });
    let out = kubectl_input(["apply", "-f", "-"], body.to_string().as_bytes());
    assert!(
        out.status.success(),
        "applying {kind}/{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn get(ns: &str, kind: &str, name: &str) -> Value {
    let out = kubectl([
        "get",
        "-n",
        ns,
        &format!("{kind}.recur.dev/{name}"),
        "-o",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// `type_` is `status` with `reason` (any reason when `None`).
fn has(obj: &Value, type_: &str, status: &str, reason: Option<&str>) -> bool {
    condition(obj, type_)
        .is_some_and(|c| c["status"] == status && reason.is_none_or(|r| c["reason"] == r))
}

fn observed(obj: &Value) -> bool {
    obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
}

/// Waits until `probe` holds for the object, and returns it.
async fn capture(
    ns: &str,
    kind: &str,
    name: &str,
    what: &str,
    probe: impl Fn(&Value) -> bool,
) -> Value {
    wait_for_value(
        Duration::from_secs(60),
        &format!("{kind}/{name}: {what}"),
        || {
            let obj = get(ns, kind, name);
            let ok = observed(&obj) && probe(&obj);
            async move { ok.then_some(obj) }
        },
    )
    .await
}

fn save(dir: &Path, file: &str, mut obj: Value) {
    // Keep the fixtures small and readable: managedFields say nothing about health.
    if let Some(meta) = obj["metadata"].as_object_mut() {
        meta.remove("managedFields");
    }
    std::fs::write(
        dir.join(format!("{file}.json")),
        serde_json::to_string_pretty(&obj).unwrap() + "\n",
    )
    .unwrap();
}

fn phase_is(phase: &'static str) -> impl Fn(&Value) -> bool {
    move |o: &Value| o["status"]["phase"] == phase
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argo_cd_health_and_kstatus_agree_on_objects_captured_from_the_operator() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "gitops").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&[]).await;
    let n = ns.name();
    // Per namespace: runs in parallel (other worktrees' tests, a rerun) do not mix. Kept when
    // the test fails, for a look.
    let work = PathBuf::from(REPO).join("target/gitops").join(n);
    let dir = work.join("fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    let now = Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap();
    let task = |title: &str, extra: Value| {
        let mut spec = json!({"userId": "user-7", "title": title, "schedule": {"every": "1h"}});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        spec
    };

    // Tasks: ready, an invalid schedule (no webhook here: recur itself marks it), suspended.
    apply(n, "RecurringTask", "ready", task("ready", json!({})));
    apply(
        n,
        "RecurringTask",
        "invalid",
        task("invalid", json!({"schedule": {"cron": "not a cron"}})),
    );
    apply(
        n,
        "RecurringTask",
        "paused",
        task(
            "paused",
            json!({"suspend": true, "suspendReason": "maintenance until Monday"}),
        ),
    );
    // Every second over the last 10 s, never by itself (catchUp Skip): backfills' ground.
    let from = now - TimeDelta::seconds(10);
    apply(
        n,
        "RecurringTask",
        "tick",
        task(
            "tick",
            json!({"schedule": {"every": "1s", "startAt": from, "endAt": now}, "catchUp": {"policy": "Skip"}}),
        ),
    );
    // 600 occurrences at 1/s: Running for minutes, long enough to be captured.
    let long_from = now - TimeDelta::seconds(600);
    apply(
        n,
        "RecurringTask",
        "slow",
        task(
            "slow",
            json!({"schedule": {"every": "1s", "startAt": long_from, "endAt": now}, "catchUp": {"policy": "Skip"}}),
        ),
    );

    save(
        &dir,
        "task-ready",
        capture(n, "RecurringTask", "ready", "Ready", |o| {
            has(o, "Ready", "True", None)
        })
        .await,
    );
    save(
        &dir,
        "task-invalid-schedule",
        capture(n, "RecurringTask", "invalid", "Stalled", |o| {
            has(o, "Stalled", "True", Some("InvalidSchedule"))
        })
        .await,
    );
    save(
        &dir,
        "task-suspended",
        capture(n, "RecurringTask", "paused", "Suspended", |o| {
            has(o, "Suspended", "True", Some("Suspended"))
        })
        .await,
    );

    // Reminders.
    let due_later = now + TimeDelta::hours(1);
    let rem = |extra: Value, due| {
        let mut spec = json!({"userId": "user-7", "title": "Dentist", "dueAt": due});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        spec
    };
    apply(n, "Reminder", "later", rem(json!({}), due_later));
    apply(
        n,
        "Reminder",
        "soon",
        rem(json!({}), now + TimeDelta::seconds(1)),
    );
    apply(
        n,
        "Reminder",
        "not-theirs",
        rem(
            json!({"userId": "mallory", "taskRef": {"name": "ready"}}),
            due_later,
        ),
    );
    apply(
        n,
        "Reminder",
        "no-task",
        rem(json!({"taskRef": {"name": "nonexistent"}}), due_later),
    );
    apply(
        n,
        "Reminder",
        "of-paused",
        rem(
            json!({"taskRef": {"name": "paused"}, "occurrenceKey": "made-for-an-occurrence"}),
            now + TimeDelta::seconds(1),
        ),
    );
    apply(
        n,
        "Reminder",
        "gone",
        rem(
            json!({"taskRef": {"name": "ready"}, "occurrenceKey": "no-longer-pending"}),
            now + TimeDelta::seconds(1),
        ),
    );
    save(
        &dir,
        "reminder-pending",
        capture(n, "Reminder", "later", "Pending and Ready", |o| {
            phase_is("Pending")(o) && has(o, "Ready", "True", None)
        })
        .await,
    );
    save(
        &dir,
        "reminder-sent",
        capture(n, "Reminder", "soon", "Sent", phase_is("Sent")).await,
    );
    save(
        &dir,
        "reminder-failed",
        capture(n, "Reminder", "not-theirs", "Failed", phase_is("Failed")).await,
    );
    save(
        &dir,
        "reminder-task-not-found",
        capture(n, "Reminder", "no-task", "TaskNotFound", |o| {
            has(o, "Ready", "False", Some("TaskNotFound"))
        })
        .await,
    );
    save(
        &dir,
        "reminder-task-suspended",
        capture(n, "Reminder", "of-paused", "Skipped", phase_is("Skipped")).await,
    );
    save(
        &dir,
        "reminder-skipped",
        capture(n, "Reminder", "gone", "Skipped", phase_is("Skipped")).await,
    );

    // Backfills.
    let bf = |task: &str, from, to, extra: Value| {
        let mut spec = json!({"taskRef": {"name": task}, "from": from, "to": to});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        spec
    };
    apply(n, "Backfill", "done", bf("tick", from, now, json!({})));
    apply(
        n,
        "Backfill",
        "too-many",
        bf("tick", from, now, json!({"maxOccurrences": 2})),
    );
    apply(
        n,
        "Backfill",
        "running",
        bf("slow", long_from, now, json!({"rate": 1})),
    );
    apply(
        n,
        "Backfill",
        "of-paused",
        bf("paused", from, now, json!({})),
    );
    save(
        &dir,
        "backfill-complete",
        capture(n, "Backfill", "done", "Complete", phase_is("Complete")).await,
    );
    save(
        &dir,
        "backfill-failed",
        capture(n, "Backfill", "too-many", "Failed", phase_is("Failed")).await,
    );
    save(
        &dir,
        "backfill-running",
        capture(n, "Backfill", "running", "Running", |o| {
            phase_is("Running")(o) && o["status"]["delivered"].as_u64().unwrap_or(0) > 0
        })
        .await,
    );
    save(
        &dir,
        "backfill-task-suspended",
        capture(n, "Backfill", "of-paused", "TaskSuspended", |o| {
            has(o, "Ready", "False", Some("TaskSuspended"))
        })
        .await,
    );

    if std::env::var("RECUR_GITOPS_UPDATE").as_deref() == Ok("1") {
        let testdata = PathBuf::from(REPO).join("tests/gitops/testdata");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), testdata.join(entry.file_name())).unwrap();
        }
    }
    let patches = work.join("patches");
    std::fs::create_dir_all(&patches).unwrap();
    run_go_harness(&dir, &patches);

    // The Argo CD actions' patches, as Argo CD sends them (merge patches), on a live task.
    let patch = |action: &str| {
        let body = std::fs::read(patches.join(format!("{action}.json"))).unwrap();
        let out = kubectl([
            "patch",
            "-n",
            n,
            "recurringtask.recur.dev/ready",
            "--type=merge",
            "-p",
            &String::from_utf8(body).unwrap(),
        ]);
        assert!(
            out.status.success(),
            "the {action} patch: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    patch("run-now");
    capture(
        n,
        "RecurringTask",
        "ready",
        "the run-now token's manual run",
        |o| o["status"]["lastManualRun"]["token"] == "argocd-20260501-093005",
    )
    .await;
    patch("suspend");
    capture(
        n,
        "RecurringTask",
        "ready",
        "suspended by the action",
        |o| {
            condition(o, "Suspended").is_some_and(|c| {
                c["status"] == "True"
                    && c["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("suspended from Argo CD"))
            })
        },
    )
    .await;
    patch("resume");
    let resumed = capture(n, "RecurringTask", "ready", "resumed by the action", |o| {
        has(o, "Suspended", "False", Some("Active")) && has(o, "Ready", "True", None)
    })
    .await;
    assert!(
        resumed["spec"].get("suspendReason").is_none(),
        "resume clears suspendReason: {}",
        resumed["spec"]
    );
    drop(stack);
    ns.cleanup().await;
    std::fs::remove_dir_all(&work).unwrap();
}

/// `go test ./...` in tests/gitops on the captured objects; the actions' patches go to `patches`.
fn run_go_harness(fixtures: &Path, patches: &Path) {
    let out = Command::new("go")
        .args(["test", "-count=1", "./..."])
        .current_dir(PathBuf::from(REPO).join("tests/gitops"))
        .env("RECUR_GITOPS_FIXTURES", fixtures)
        .env("RECUR_GITOPS_PATCHES", patches)
        .output()
        .unwrap_or_else(|e| panic!("running go (is it on PATH?): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "the Go harness failed:\n{text}");
}
