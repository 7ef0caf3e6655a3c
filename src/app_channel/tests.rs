//! The app channel over loopback, with a mock API server: what Dapr is answered, what is
//! counted, and the guarded write of an accepted completion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use kube::runtime::reflector::store;
use kube::runtime::watcher;
use serde_json::{Value, json};
use tower_test::mock::Handle;

use super::*;
use crate::api::RecurringTask;
use crate::lease::Leadership;

const UID: &str = "0b6e2f4a-1111-2222-3333-444455556666";
const KEY: &str = "rt-0b6e2f4a-1111-2222-3333-444455556666-20260501T090000Z";

/// The task as the API server has it at resourceVersion `rv`: its 9:00 occurrence delivered.
fn task(rv: &str) -> Value {
    json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
        "metadata": {"name": "report", "namespace": "team-a", "uid": UID, "resourceVersion": rv},
        "spec": {"userId": "u-1", "title": "Report", "schedule": {"every": "1h"},
                 "completion": {"topic": "team-a.completed"}},
        "status": {"delivered": 1, "history": [{
            "nominal": "2026-05-01T09:00:00Z", "due": "2026-05-01T09:00:00Z",
            "idempotencyKey": KEY, "outcome": "Delivered",
            "finishedAt": "2026-05-01T09:00:01Z", "attempts": 1}]},
    })
}

type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// What `start` returns: the server's URL, the context, the API server's handle, and the writer
/// of the task cache (when there is one: the cache lives as long as it).
type Started = (
    String,
    Arc<Context>,
    ApiHandle,
    Option<kube::runtime::reflector::store::Writer<RecurringTask>>,
);

/// The app channel on a loopback port, on a context whose API server is the returned handle;
/// `with_task`: the task controller's cache (listed) holds the task.
async fn start(with_task: bool) -> Started {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = Arc::new(crate::controller::test_context(
        service,
        "http://127.0.0.1:9",
        Leadership::always(),
        Duration::ZERO,
    ));
    let mut cache = None;
    if with_task {
        let (reader, mut writer) = store::<RecurringTask>();
        let cached: RecurringTask = serde_json::from_value(task("5")).unwrap();
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitApply(cached));
        writer.apply_watcher_event(&watcher::Event::InitDone);
        ctx.tasks.share(reader);
        cache = Some(writer);
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, router(ctx.clone())).into_future());
    (base, ctx, handle, cache)
}

fn completion(key: &str) -> Value {
    json!({"specversion": "1.0", "id": "e-1", "source": "backend", "type": "task.completed",
           "time": "2026-05-01T09:20:00Z", "topic": "team-a.completed", "pubsubname": "pubsub",
           "data": {"idempotencyKey": key}})
}

/// POSTs `body` to `path` (with Dapr's caller header when `invoked`); status and JSON answer.
async fn post(base: &str, path: &str, body: &Value, invoked: bool) -> (u16, Value) {
    let mut request = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{base}{path}"))
        .header("content-type", "application/cloudevents+json")
        .body(body.to_string());
    if invoked {
        request = request.header("dapr-caller-app-id", "intruder");
    }
    let resp = request.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn count(ctx: &Context, result: &str) -> u64 {
    let series = format!("recur_completions_total{{result=\"{result}\"}} ");
    ctx.metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0)
}

const ROUTE: &str = "/completions/pubsub/team-a.completed";

#[tokio::test]
async fn what_cannot_be_a_completion_is_dropped_or_refused_and_counted() {
    let (base, ctx, _api, _) = start(false).await;
    // A service invocation of the route, whatever it carries.
    let (status, _) = post(&base, ROUTE, &completion(KEY), true).await;
    assert_eq!(status, 403);
    assert_eq!(count(&ctx, "refused"), 1);
    // Not a route of recur's subscriptions; not a completion event.
    let (status, answer) = post(&base, "/completions/Bad_Name/x", &completion(KEY), false).await;
    assert_eq!((status, answer), (200, json!({"status": "DROP"})));
    let (status, answer) = post(&base, ROUTE, &json!({"type": "task.created"}), false).await;
    assert_eq!((status, answer), (200, json!({"status": "DROP"})));
    assert_eq!(count(&ctx, "invalid"), 2);
    // Before the task controller's cache exists, a completion is asked again later.
    let (status, answer) = post(&base, ROUTE, &completion(KEY), false).await;
    assert_eq!((status, answer), (200, json!({"status": "RETRY"})));
    assert_eq!(count(&ctx, "error"), 1);
    // Nothing else is served: subscriptions are declarative.
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{base}/dapr/subscribe"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}

#[tokio::test]
async fn a_key_of_no_cached_task_is_dropped_without_asking_the_api_server() {
    let (base, ctx, mut api, _cache) = start(true).await;
    let other = "rt-99999999-1111-2222-3333-444455556666-20260501T090000Z";
    let (status, answer) = post(&base, ROUTE, &completion(other), false).await;
    assert_eq!((status, answer), (200, json!({"status": "DROP"})));
    assert_eq!(count(&ctx, "unknown"), 1);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), api.next_request())
            .await
            .is_err(),
        "no API request"
    );
}

/// Reads the task (at `rv`) for the next GET, and checks the PATCH after it: a test of that
/// resourceVersion, then the status; answers it with `code`.
async fn read_then_write(api: &mut ApiHandle, rv: &str, code: u16) -> Value {
    let (req, send) = api.next_request().await.expect("a GET");
    assert_eq!(req.method(), Method::GET);
    assert_eq!(
        req.uri().path(),
        "/apis/recur.dev/v1alpha1/namespaces/team-a/recurringtasks/report"
    );
    send.send_response(
        Response::builder()
            .body(Body::from(task(rv).to_string().into_bytes()))
            .unwrap(),
    );
    let (req, send) = api.next_request().await.expect("a PATCH");
    assert_eq!(req.method(), Method::PATCH);
    assert_eq!(
        req.uri().path(),
        "/apis/recur.dev/v1alpha1/namespaces/team-a/recurringtasks/report/status"
    );
    let ops: Value =
        serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
    assert_eq!(
        ops[0],
        json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv})
    );
    let reply = match code {
        200 => task(rv),
        _ => json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code,
                    "reason": "Conflict", "message": "the object has been modified"}),
    };
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(reply.to_string().into_bytes()))
            .unwrap(),
    );
    ops[1].clone()
}

#[tokio::test]
async fn a_completion_is_written_guarded_and_read_again_after_a_conflict() {
    let (base, ctx, mut api, _cache) = start(true).await;
    let server = tokio::spawn(async move {
        read_then_write(&mut api, "5", 409).await;
        read_then_write(&mut api, "6", 200).await
    });
    let (status, answer) = post(&base, ROUTE, &completion(KEY), false).await;
    assert_eq!((status, answer), (200, json!({"status": "SUCCESS"})));
    let written = server.await.unwrap();
    assert_eq!(written["op"], "add");
    assert_eq!(written["path"], "/status");
    let status = &written["value"];
    assert_eq!(status["completed"], 1);
    assert_eq!(status["history"][0]["completedAt"], "2026-05-01T09:20:00Z");
    assert_eq!(status["lastCompletion"]["idempotencyKey"], KEY);
    assert_eq!(status["lastCompletion"]["secondsAfterDue"], 1200.0);
    assert_eq!(count(&ctx, "accepted"), 1);
    let text = ctx.metrics.encode();
    assert!(text.contains("recur_completion_seconds_count 1"), "{text}");
    assert!(
        text.contains("recur_status_writes_total{kind=\"RecurringTask\",outcome=\"conflict\"} 1"),
        "{text}"
    );
}
