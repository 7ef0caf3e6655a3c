//! The one status write recur makes, against the real apiserver: a guarded JSON patch is a
//! compare-and-swap. A failed guard must come back as `Conflict` (re-read, 200 ms), never as an
//! error (the error policy's backoff, 5 s and longer, and a warning), and a status the schema
//! rejects must stay an error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use kube::api::{Api, PostParams};
use recur::api::{Phase, RecurringTask, Reminder};
use recur::controller::reminder::{guard as reminder_guard, reminder_key};
use recur::controller::{Guard, StatusWrite, write_status};
use serde_json::json;
use support::webhook::{HOLD, hold_status_policy};
use support::{TestNamespace, client, wait_for_value};

#[tokio::test]
async fn a_guarded_status_write_is_a_compare_and_swap() {
    // The CRDs, whatever ran before on this cluster.
    tokio::task::spawn_blocking(support::stack::install_crds)
        .await
        .unwrap();
    let client = client().await;
    let ns = TestNamespace::new(&client, "status-write").await;
    let api: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    let task: RecurringTask = serde_json::from_value(json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
        "metadata": {"name": "cas"},
        "spec": {"userId": "u", "title": "t", "schedule": {"every": "1h"}},
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &task).await.unwrap();
    let first_rv = created.metadata.resource_version.clone().unwrap();
    let pending = |key: &str| {
        json!({"nextOccurrence": {
            "nominal": "2030-01-01T00:00:00Z", "due": "2030-01-01T00:00:00Z",
            "idempotencyKey": key,
        }})
    };

    // No status yet: guarded by resourceVersion.
    let written = write_status(
        &api,
        "cas",
        Guard::ResourceVersion(first_rv.clone()),
        &pending("rt-a"),
    )
    .await
    .unwrap();
    assert!(matches!(written, StatusWrite::Written(_)), "{written:?}");

    // The same resourceVersion again is stale now.
    let stale = write_status(
        &api,
        "cas",
        Guard::ResourceVersion(first_rv),
        &pending("rt-b"),
    )
    .await
    .unwrap();
    assert!(matches!(stale, StatusWrite::Conflict), "{stale:?}");

    // A key guard that does not hold.
    let key_guard =
        |key: &str| Guard::Equals(vec![("/status/nextOccurrence/idempotencyKey", json!(key))]);
    let wrong = write_status(&api, "cas", key_guard("rt-other"), &pending("rt-b"))
        .await
        .unwrap();
    assert!(matches!(wrong, StatusWrite::Conflict), "{wrong:?}");
    let key_now = |t: &RecurringTask| {
        t.status
            .as_ref()
            .and_then(|s| s.next_occurrence.as_ref())
            .map(|p| p.idempotency_key.clone())
    };
    assert_eq!(
        key_now(&api.get("cas").await.unwrap()).as_deref(),
        Some("rt-a")
    );

    // The guard that holds moves it on.
    let moved = write_status(&api, "cas", key_guard("rt-a"), &pending("rt-b"))
        .await
        .unwrap();
    match moved {
        StatusWrite::Written(t) => assert_eq!(key_now(&t).as_deref(), Some("rt-b")),
        StatusWrite::Conflict => panic!("the holding guard conflicted"),
    }

    // recur's status writes are one field for server-side apply (the schema makes status
    // atomic): its managedFields entry names `status` alone, not every leaf under it, which
    // made a third of a task's bytes in every list and watch event.
    let written = api.get("cas").await.unwrap();
    let entries = written.metadata.managed_fields.unwrap_or_default();
    let ours = entries
        .iter()
        .find(|e| e.subresource.as_deref() == Some("status"))
        .expect("no managedFields entry for the status write");
    let fields = serde_json::to_value(ours.fields_v1.as_ref().unwrap()).unwrap();
    assert_eq!(fields, json!({"f:status": {}}), "{entries:?}");

    // A status the schema rejects is an error that names the field, not a conflict.
    let bad = json!({"nextOccurrence": {"nominal": "2030-01-01T00:00:00Z",
        "due": "2030-01-01T00:00:00Z", "idempotencyKey": 7}});
    let err = write_status(&api, "cas", key_guard("rt-b"), &bad)
        .await
        .expect_err("a status of the wrong type was accepted");
    assert!(
        err.to_string().contains("idempotencyKey"),
        "the error does not name the field: {err}"
    );
    ns.cleanup().await;
}

/// Issue 11 (11): a former leader decided to notify reminder key K1 with attempts 0; meanwhile
/// `dueAt` was edited and the new leader wrote key K2, attempts 0 again. The former leader's
/// late write must conflict: guarded on attempts alone it marked the edited reminder Sent.
#[tokio::test]
async fn a_late_reminder_write_cannot_mark_an_edited_reminder_sent() {
    // The CRDs, whatever ran before on this cluster.
    tokio::task::spawn_blocking(support::stack::install_crds)
        .await
        .unwrap();
    let client = client().await;
    let ns = TestNamespace::new(&client, "rem-guard").await;
    let api: Api<Reminder> = Api::namespaced(client.clone(), ns.name());
    let rem: Reminder = serde_json::from_value(json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "Reminder",
        "metadata": {"name": "edited"},
        "spec": {"userId": "u", "title": "t", "dueAt": "2030-01-01T00:00:00Z"},
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &rem).await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    let due_1 = "2030-01-01T00:00:00Z".parse().unwrap();
    let due_2 = "2030-01-02T00:00:00Z".parse().unwrap();
    let pending = |key: String| json!({"phase": "Pending", "idempotencyKey": key, "attempts": 0});
    let written = write_status(
        &api,
        "edited",
        reminder_guard(&created),
        &pending(reminder_key(&uid, due_1)),
    )
    .await
    .unwrap();
    // What the former leader saw and decided on.
    let StatusWrite::Written(seen_by_old_leader) = written else {
        panic!("the first write conflicted");
    };
    // The edit and the new leader's write of the new key.
    let StatusWrite::Written(_) = write_status(
        &api,
        "edited",
        reminder_guard(&seen_by_old_leader),
        &pending(reminder_key(&uid, due_2)),
    )
    .await
    .unwrap() else {
        panic!("the new leader's write conflicted");
    };
    // The former leader's late write: K1 sent.
    let late = json!({"phase": "Sent", "idempotencyKey": reminder_key(&uid, due_1), "attempts": 1});
    let outcome = write_status(&api, "edited", reminder_guard(&seen_by_old_leader), &late)
        .await
        .unwrap();
    assert!(matches!(outcome, StatusWrite::Conflict), "{outcome:?}");
    let now = api.get("edited").await.unwrap().status.unwrap();
    assert_eq!(now.phase, Some(Phase::Pending));
    assert_eq!(now.idempotency_key, Some(reminder_key(&uid, due_2)));
    ns.cleanup().await;
}

/// An admission policy refusing the write answers 422 like a failed guard `test`: the write must
/// come back as an error (back-off, `status_write{outcome="error"}`, the alert), not as a conflict
/// retried every 200 ms for as long as the policy stands. A guard that fails under the same
/// policy is still a conflict.
#[tokio::test]
async fn a_write_an_admission_policy_refuses_is_an_error_not_a_conflict() {
    tokio::task::spawn_blocking(support::stack::install_crds)
        .await
        .unwrap();
    let client = client().await;
    let ns = TestNamespace::new(&client, "status-refused").await;
    let api: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    let task: RecurringTask = serde_json::from_value(json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
        "metadata": {"name": "held", "labels": {HOLD: "true"}},
        "spec": {"userId": "u", "title": "t", "schedule": {"every": "1h"}},
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &task).await.unwrap();
    let pending = json!({"nextOccurrence": {
        "nominal": "2030-01-01T00:00:00Z", "due": "2030-01-01T00:00:00Z", "idempotencyKey": "rt-a",
    }});
    let rv = created.metadata.resource_version.clone().unwrap();
    let first = write_status(&api, "held", Guard::ResourceVersion(rv), &pending)
        .await
        .unwrap();
    assert!(matches!(first, StatusWrite::Written(_)), "{first:?}");
    let key_guard =
        |key: &str| Guard::Equals(vec![("/status/nextOccurrence/idempotencyKey", json!(key))]);

    let _policy = hold_status_policy(ns.name());
    // The same write again (its guard holds) until the API server has loaded the policy.
    let refused = wait_for_value(
        std::time::Duration::from_secs(30),
        "the policy refusing a status write",
        || {
            let api = api.clone();
            let pending = pending.clone();
            async move {
                match write_status(&api, "held", key_guard("rt-a"), &pending).await {
                    Ok(StatusWrite::Written(_)) => None,
                    other => Some(other),
                }
            }
        },
    )
    .await;
    let err = match refused {
        Err(err) => err,
        Ok(outcome) => panic!("a refused write whose guard holds came back as {outcome:?}"),
    };
    assert!(
        err.to_string()
            .contains("status writes are held by the test"),
        "the error carries the policy's message: {err}"
    );
    let stale = write_status(&api, "held", key_guard("rt-other"), &pending)
        .await
        .unwrap();
    assert!(matches!(stale, StatusWrite::Conflict), "{stale:?}");
    ns.cleanup().await;
}
