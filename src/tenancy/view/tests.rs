//! The admission review on a mock API server: the spec's own checks before the policy's, judged
//! again only when the spec changes, and a backfill counted against its task.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::core::admission::AdmissionReview;
use serde_json::{Value, json};

use super::*;

/// A Tenancy whose API server knows the tasks in `tasks` (namespace `team-a`); counts the GETs.
fn tenancy(tasks: Vec<Value>) -> (Tenancy, Arc<AtomicUsize>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let gets = Arc::new(AtomicUsize::new(0));
    let counted = gets.clone();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let path = req.uri().path().to_string();
            let name = path.rsplit('/').next().unwrap_or_default();
            assert!(
                path.starts_with("/apis/recur.dev/v1alpha1/namespaces/team-a/recurringtasks/"),
                "{path}"
            );
            let found = tasks.iter().find(|t| t["metadata"]["name"] == name);
            let (status, body) = match found {
                Some(t) => (StatusCode::OK, t.clone()),
                None => (
                    StatusCode::NOT_FOUND,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "reason": "NotFound", "code": 404, "message": "not found"}),
                ),
            };
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(body.to_string().into_bytes()))
                    .unwrap(),
            );
        }
    });
    let (tenancy, _drive) = Tenancy::watch(Client::new(service, "default"));
    (tenancy, gets)
}

fn task(name: &str, schedule: Value) -> Value {
    json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
        "metadata": {"name": name, "namespace": "team-a", "uid": "u-1",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"userId": "alice", "title": "t", "schedule": schedule}
    })
}

fn backfill(from: &str, to: &str, max: Option<u32>) -> Value {
    let mut b = json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "Backfill",
        "metadata": {"name": "b", "namespace": "team-a"},
        "spec": {"taskRef": {"name": "hourly"}, "from": from, "to": to}
    });
    if let Some(m) = max {
        b["spec"]["maxOccurrences"] = json!(m);
    }
    b
}

fn request(object: &Value, old: Option<&Value>) -> AdmissionRequest<DynamicObject> {
    let kind = object["kind"].as_str().unwrap();
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "1",
            "kind": {"group": "recur.dev", "version": "v1alpha1", "kind": kind},
            "resource": {"group": "recur.dev", "version": "v1alpha1", "resource": "x"},
            "name": object["metadata"]["name"], "namespace": "team-a",
            "operation": if old.is_some() { "UPDATE" } else { "CREATE" },
            "userInfo": {"username": "alice"},
            "object": object, "oldObject": old,
        }
    }))
    .unwrap();
    review.try_into().unwrap()
}

#[tokio::test]
async fn a_bad_schedule_is_refused_with_the_spec_rule_before_any_policy() {
    let (tenancy, _) = tenancy(vec![]);
    let bad = task("bad", json!({"cron": "60 * * * *"}));
    let d = tenancy.review(&request(&bad, None)).await.unwrap_err();
    assert_eq!(d.rule, Rule::Spec);
    assert_eq!(
        d.to_string(),
        "spec.schedule.cron: minute value 60 is out of range 0-59"
    );
    let good = task("good", json!({"every": "1h"}));
    tenancy.review(&request(&good, None)).await.unwrap();
}

#[tokio::test]
async fn an_update_is_judged_again_only_when_the_spec_or_the_token_changes() {
    let (tenancy, _) = tenancy(vec![]);
    // Admitted before the webhook existed: a label can still be added.
    let old = task("old", json!({"cron": "0 0 30 2 *"}));
    let mut labelled = old.clone();
    labelled["metadata"]["labels"] = json!({"team": "a"});
    tenancy
        .review(&request(&labelled, Some(&old)))
        .await
        .unwrap();
    // An edit of the spec is judged.
    let mut edited = labelled.clone();
    edited["spec"]["title"] = json!("t2");
    let d = tenancy
        .review(&request(&edited, Some(&old)))
        .await
        .unwrap_err();
    assert_eq!(d.field, "spec.schedule.cron");
    assert!(d.message.contains("never fires"), "{d}");

    let good = task("good", json!({"every": "1h"}));
    let mut asked = good.clone();
    asked["metadata"]["annotations"] = json!({RUN_NOW_ANNOTATION: "Now please"});
    let d = tenancy
        .review(&request(&asked, Some(&good)))
        .await
        .unwrap_err();
    assert_eq!(d.field, "metadata.annotations[\"recur.dev/run-now\"]");
    asked["metadata"]["annotations"] = json!({RUN_NOW_ANNOTATION: "2026-05-01-a"});
    tenancy.review(&request(&asked, Some(&good))).await.unwrap();
}

#[tokio::test]
async fn a_backfill_is_counted_against_its_task_when_the_task_exists() {
    let hourly = task(
        "hourly",
        json!({"every": "1h", "startAt": "2026-01-01T00:00:00Z"}),
    );
    let (tenancy, gets) = tenancy(vec![hourly]);
    let two_days = backfill("2026-02-01T00:00:00Z", "2026-02-03T00:00:00Z", Some(10));
    let d = tenancy.review(&request(&two_days, None)).await.unwrap_err();
    assert_eq!(
        (d.field.as_str(), d.rule),
        ("spec.maxOccurrences", Rule::Spec)
    );
    assert!(d.message.contains("holds 48 occurrences"), "{d}");
    let fits = backfill("2026-02-01T00:00:00Z", "2026-02-03T00:00:00Z", Some(48));
    tenancy.review(&request(&fits, None)).await.unwrap();
    // A task applied after its backfill (GitOps order) is not there yet: admitted.
    let mut later = two_days.clone();
    later["spec"]["taskRef"]["name"] = json!("later");
    tenancy.review(&request(&later, None)).await.unwrap();
    // `to` in the future is refused without asking the API server.
    let before = gets.load(Ordering::SeqCst);
    let future = (Utc::now() + chrono::Duration::minutes(5)).to_rfc3339();
    let ahead = backfill("2026-02-01T00:00:00Z", &future, None);
    let d = tenancy.review(&request(&ahead, None)).await.unwrap_err();
    assert_eq!(d.field, "spec.to");
    assert!(d.message.contains("is in the future"), "{d}");
    assert_eq!(gets.load(Ordering::SeqCst), before);
    // The operator's metadata update of an admitted backfill is not judged again.
    let mut owned = two_days.clone();
    owned["metadata"]["labels"] = json!({"recur.dev/task": "hourly"});
    tenancy
        .review(&request(&owned, Some(&two_days)))
        .await
        .unwrap();
    assert_eq!(gets.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn a_completion_topic_of_another_namespace_is_refused_at_apply() {
    let (tenancy, _) = tenancy(vec![]);
    let mut own = task("own", json!({"every": "1h"}));
    own["spec"]["completion"] = json!({"topic": "team-a.completed"});
    tenancy.review(&request(&own, None)).await.unwrap();
    let mut foreign = task("foreign", json!({"every": "1h"}));
    foreign["spec"]["completion"] = json!({"topic": "team-b.completed"});
    let d = tenancy.review(&request(&foreign, None)).await.unwrap_err();
    assert_eq!(
        (d.field.as_str(), d.rule),
        ("spec.completion", Rule::PubSub)
    );
}
