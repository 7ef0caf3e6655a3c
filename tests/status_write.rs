//! The one status write recur makes, against the real apiserver: a guarded JSON patch is a
//! compare-and-swap. A failed guard must come back as `Conflict` (re-read, 200 ms), never as an
//! error (5 s back-off and a warning), and a status the schema rejects must stay an error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use kube::api::{Api, PostParams};
use recur::api::RecurringTask;
use recur::controller::{Guard, StatusWrite, write_status};
use serde_json::json;
use support::{TestNamespace, client};

#[tokio::test]
async fn a_guarded_status_write_is_a_compare_and_swap() {
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
    let key_guard = |key: &str| Guard::Equals {
        path: "/status/nextOccurrence/idempotencyKey",
        value: json!(key),
    };
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
