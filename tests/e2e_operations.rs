//! Operating a task end to end (the real apiserver, real daprd, the recording backend, `recur
//! run` as a process): run now with the `recur.dev/run-now` annotation, suspend with a reason,
//! and failurePolicy.suspendAfter.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams, PostParams};
use recur::api::{Outcome, RecurringTask, Trigger, condition};
use serde_json::json;
use support::stack::Stack;
use support::{TestNamespace, client, event_reasons, kubectl, wait_for_value};

async fn create(
    api: &Api<RecurringTask>,
    name: &str,
    every: &str,
    extra: serde_json::Value,
) -> RecurringTask {
    let mut spec = json!({
        "userId": "user-7",
        "title": format!("task {name}"),
        "schedule": {"every": every},
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let task: RecurringTask = serde_json::from_value(json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    api.create(&PostParams::default(), &task).await.unwrap()
}

fn annotate(ns: &str, name: &str, token: &str) {
    let out = kubectl([
        "annotate",
        "--overwrite",
        "-n",
        ns,
        &format!("recurringtask/{name}"),
        &format!("recur.dev/run-now={token}"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the task's `lastManualRun` is `token`'s, and returns the task.
async fn manual_run_of(api: &Api<RecurringTask>, name: &str, token: &str) -> RecurringTask {
    wait_for_value(
        Duration::from_secs(30),
        &format!("lastManualRun {token} of {name}"),
        || {
            let api = api.clone();
            async move {
                let task = api.get(name).await.unwrap();
                let done = task
                    .status
                    .as_ref()
                    .and_then(|s| s.last_manual_run.as_ref())
                    .is_some_and(|r| r.token == token);
                done.then_some(task)
            }
        },
    )
    .await
}

/// Requests the backend got with `key`: (all, accepted as new).
async fn calls_with(stack: &Stack, key: &str) -> (usize, usize) {
    let records = stack.records().await;
    let with: Vec<_> = records
        .iter()
        .filter(|r| r.key.as_deref() == Some(key))
        .collect();
    (with.len(), with.iter().filter(|r| r.accepted).count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_now_token_delivers_once_even_set_twice_and_across_a_sigkill() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-runnow").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&[]).await;
    let api: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    // Hourly: nothing falls due during the test but the manual runs.
    let task = create(&api, "report", "1h", json!({})).await;
    let uid = task.metadata.uid.clone().unwrap();

    annotate(ns.name(), "report", "first");
    let task = manual_run_of(&api, "report", "first").await;
    let status = task.status.unwrap();
    let run = status.last_manual_run.unwrap();
    let key = format!("rt-{uid}-run-first");
    assert_eq!(run.record.idempotency_key, key);
    assert_eq!(run.record.outcome, Outcome::Delivered);
    assert_eq!(status.history[0].trigger, Some(Trigger::Manual));
    assert_eq!(status.delivered, 0, "a manual run is not the schedule's");
    assert_eq!(calls_with(&stack, &key).await, (1, 1));
    assert!(event_reasons(ns.name(), "regarding.name=report").contains(&"ManualRun".to_string()));
    // What an operator sees (the README quotes it).
    let out = kubectl([
        "get",
        "rt",
        "report",
        "-n",
        ns.name(),
        "-o",
        "jsonpath={.status.lastManualRun}",
    ]);
    println!("lastManualRun: {}", String::from_utf8_lossy(&out.stdout));

    // Set twice: another token, then `first` again (a `git revert`). `first` is in the
    // history: it does not run again under its key, and a RunRefused Warning says so.
    annotate(ns.name(), "report", "second");
    manual_run_of(&api, "report", "second").await;
    annotate(ns.name(), "report", "first");
    wait_for_value(Duration::from_secs(30), "the RunRefused event", || {
        let n = ns.name().to_string();
        async move {
            event_reasons(&n, "regarding.name=report")
                .contains(&"RunRefused".to_string())
                .then_some(())
        }
    })
    .await;
    assert_eq!(calls_with(&stack, &key).await, (1, 1), "{key} called again");
    let status = api.get("report").await.unwrap().status.unwrap();
    assert_eq!(status.last_manual_run.unwrap().token, "second");

    // SIGKILL while the call is held by a slow backend: the restarted operator retries the
    // very key written to status before the call.
    stack.faults(json!({"delay_ms": 4000})).await;
    annotate(ns.name(), "report", "third");
    let key3 = format!("rt-{uid}-run-third");
    wait_for_value(Duration::from_secs(20), "the held call", || {
        let (stack, key3) = (&stack, key3.clone());
        async move { (calls_with(stack, &key3).await.0 >= 1).then_some(()) }
    })
    .await;
    stack.kill_operator(0);
    stack.faults(json!({})).await;
    stack.restart_operator(0).await;
    let task = manual_run_of(&api, "report", "third").await;
    let run = task.status.unwrap().last_manual_run.unwrap();
    assert_eq!(run.record.outcome, Outcome::Delivered);
    let (calls, accepted) = calls_with(&stack, &key3).await;
    assert_eq!(accepted, 1, "{calls} calls with {key3}");
    assert!(
        calls >= 2,
        "the restarted operator called again with the same key ({calls})"
    );
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_task_shows_its_reason_and_refuses_a_manual_run() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-suspend").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&[]).await;
    let api: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    let reason = "INC-4711: billing migration until 14:00 UTC";
    let task = create(
        &api,
        "billing",
        "1h",
        json!({"suspend": true, "suspendReason": reason}),
    )
    .await;
    let uid = task.metadata.uid.clone().unwrap();
    let suspended = wait_for_value(Duration::from_secs(20), "Suspended=True", || {
        let api = api.clone();
        async move {
            let task = api.get("billing").await.unwrap();
            let c = condition(&task.status.as_ref()?.conditions, "Suspended")?.clone();
            (c.status == "True").then_some(c)
        }
    })
    .await;
    assert_eq!(
        (suspended.reason.as_str(), suspended.message.as_str()),
        ("Suspended", reason)
    );
    let out = kubectl(["get", "rt", "billing", "-n", ns.name()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().next().unwrap().contains("SUSPENDED"), "{text}");
    assert!(text.contains("INC-4711"), "{text}");
    println!("{text}");

    annotate(ns.name(), "billing", "now");
    let task = manual_run_of(&api, "billing", "now").await;
    let run = task.status.unwrap().last_manual_run.unwrap();
    assert_eq!(run.record.outcome, Outcome::Skipped);
    assert!(event_reasons(ns.name(), "regarding.name=billing").contains(&"RunRefused".to_string()));
    assert_eq!(
        calls_with(&stack, &format!("rt-{uid}-run-now")).await,
        (0, 0)
    );
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_after_three_rejections_suspends_and_resuming_starts_over() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-failpolicy").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&[]).await;
    stack
        .faults(json!({"reject": true, "namespace": ns.name()}))
        .await;
    let api: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    create(
        &api,
        "flaky",
        "2s",
        json!({"failurePolicy": {"suspendAfter": 3}}),
    )
    .await;

    let task = wait_for_value(Duration::from_secs(40), "recur to suspend flaky", || {
        let api = api.clone();
        async move {
            let task = api.get("flaky").await.unwrap();
            let c = condition(&task.status.as_ref()?.conditions, "Suspended")?.clone();
            (task.spec.suspend && c.reason == "TooManyFailures").then_some(task)
        }
    })
    .await;
    let status = task.status.clone().unwrap();
    assert_eq!(
        status.failed, 3,
        "suspended after the third, no fourth: {status:?}"
    );
    assert_eq!(status.delivered, 0);
    assert!(
        task.spec
            .suspend_reason
            .as_deref()
            .unwrap()
            .contains("3 occurrences in a row")
    );
    assert!(status.next_occurrence.is_none());
    assert!(
        event_reasons(ns.name(), "regarding.name=flaky").contains(&"TooManyFailures".to_string())
    );
    let out = kubectl(["get", "rt", "flaky", "-n", ns.name()]);
    println!("{}", String::from_utf8_lossy(&out.stdout));
    let out = kubectl([
        "get",
        "events",
        "-n",
        ns.name(),
        "--field-selector",
        "reason=TooManyFailures",
    ]);
    println!("{}", String::from_utf8_lossy(&out.stdout));
    let (_, metrics) = stack.operator_get(0, "/metrics").await;
    assert!(
        metrics.contains("recur_tasks_suspended_total{reason=\"TooManyFailures\"} 1"),
        "{metrics}"
    );

    // Resume once the backend is fixed: deliveries start again, the decision is cleared.
    stack.faults(json!({})).await;
    api.patch(
        "flaky",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false, "suspendReason": null}})),
    )
    .await
    .unwrap();
    let task = wait_for_value(Duration::from_secs(30), "a delivery after resuming", || {
        let api = api.clone();
        async move {
            let task = api.get("flaky").await.unwrap();
            (task.status.as_ref()?.delivered >= 1).then_some(task)
        }
    })
    .await;
    let status = task.status.unwrap();
    assert_eq!(status.failure_suspension, None);
    assert_eq!(status.consecutive_failures, 0);
    assert!(!task.spec.suspend);
    ns.cleanup().await;
}
