//! The sidecar over real HTTP on loopback, in front of an echo app and of the demo backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use axum::extract::Request;
use serde_json::Value;

use super::*;
use crate::backend::{self, BackendConfig};
use crate::net::testing::{Running, http, start};

/// An app answering with what it received; `x-answer-status` picks the status.
fn echo_app() -> Router {
    Router::new().fallback(|request: Request| async move {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20)
            .await
            .unwrap_or_default();
        let headers: serde_json::Map<String, Value> = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    Value::String(v.to_str().unwrap_or("?").to_owned()),
                )
            })
            .collect();
        let status = parts
            .headers
            .get("x-answer-status")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::OK);
        let echo = json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        });
        (status, [("x-app", "echo")], axum::Json(echo))
    })
}

async fn sidecar(apps: &[(&str, &Running)], token: Option<&str>) -> Running {
    let apps: HashMap<String, String> = apps
        .iter()
        .map(|(n, r)| (n.to_string(), format!("http://{}", r.addr)))
        .collect();
    let config = SidecarConfig {
        apps,
        api_token: token.map(str::to_owned),
        app_timeout: Duration::from_secs(5),
        own_namespace: None,
    };
    start(move |_| router(config).unwrap()).await
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn forwards_verb_path_query_body_and_headers() {
    let app = start(|_| echo_app()).await;
    let dapr = sidecar(&[("backend", &app)], None).await;
    let client = http(Duration::from_secs(5));
    let response = client
        .put(dapr.url("/v1.0/invoke/backend/method/api/tasks/7?x=1&y=%20"))
        .header("idempotency-key", "k-1")
        .header("x-user-id", "u%201")
        .header("x-answer-status", "202")
        .header("dapr-api-token", "leak?")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "drop me")
        .body("{\"a\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers().get("x-app").unwrap(), "echo");
    let (_, echo) = json_of(response).await;
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/api/tasks/7");
    assert_eq!(echo["query"], "x=1&y=%20");
    assert_eq!(echo["body"], "{\"a\":1}");
    let headers = &echo["headers"];
    assert_eq!(headers["idempotency-key"], "k-1");
    assert_eq!(headers["x-user-id"], "u%201");
    assert!(
        headers.get("dapr-api-token").is_none(),
        "the token was forwarded: {headers}"
    );
    assert!(
        headers.get("x-hop").is_none(),
        "a hop-by-hop header was forwarded: {headers}"
    );
}

#[tokio::test]
async fn header_form_and_namespaced_ids() {
    let app = start(|_| echo_app()).await;
    let dapr = sidecar(&[("backend", &app)], None).await;
    let client = http(Duration::from_secs(5));
    let (status, echo) = json_of(
        client
            .post(dapr.url("/api/notifications"))
            .header("dapr-app-id", "backend")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, echo["path"].as_str()),
        (200, Some("/api/notifications"))
    );
    assert!(echo["headers"].get("dapr-app-id").is_none());
    let (status, echo) = json_of(
        client
            .post(dapr.url("/v1.0/invoke/backend.default/method/api/tasks"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, echo["path"].as_str()), (200, Some("/api/tasks")));
    // The header wins over the path, whose whole is then the method.
    let (status, echo) = json_of(
        client
            .get(dapr.url("/v1.0/invoke/other/method/x"))
            .header("dapr-app-id", "backend")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, echo["path"].as_str()),
        (200, Some("/v1.0/invoke/other/method/x"))
    );
}

#[tokio::test]
async fn dapr_errors_for_missing_unknown_and_unreachable_apps() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let apps = HashMap::from([("backend".to_owned(), format!("http://127.0.0.1:{port}"))]);
    let config = SidecarConfig {
        apps,
        api_token: None,
        app_timeout: Duration::from_secs(5),
        own_namespace: None,
    };
    let dapr = start(move |_| router(config).unwrap()).await;
    let client = http(Duration::from_secs(5));

    let (status, body) = json_of(client.post(dapr.url("/api/tasks")).send().await.unwrap()).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"errorCode": "ERR_DIRECT_INVOKE", "message": "failed getting app id either from the URL path or the header dapr-app-id"})
    );

    let (status, body) = json_of(
        client
            .post(dapr.url("/v1.0/invoke/nobody/method/api/tasks"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(body["errorCode"], "ERR_DIRECT_INVOKE");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("failed to invoke, id: nobody, err: "),
        "{body}"
    );

    let (status, body) = json_of(
        client
            .post(dapr.url("/v1.0/invoke/backend/method/api/tasks"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(body["errorCode"], "ERR_DIRECT_INVOKE");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("failed to invoke, id: backend, err: "),
        "{body}"
    );
}

#[tokio::test]
async fn api_token_is_checked_like_daprd() {
    let app = start(|_| echo_app()).await;
    let dapr = sidecar(&[("backend", &app)], Some("tok")).await;
    let client = http(Duration::from_secs(5));
    let url = dapr.url("/v1.0/invoke/backend/method/api/tasks");
    for token in [None, Some("wrong"), Some("tok2"), Some("")] {
        let mut request = client.post(&url);
        if let Some(t) = token {
            request = request.header("dapr-api-token", t);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{token:?}");
        assert_eq!(
            response.headers().get("content-type").unwrap(),
            "text/plain; charset=utf-8"
        );
        assert_eq!(response.text().await.unwrap(), "invalid api token\n");
    }
    let response = client
        .post(&url)
        .header("dapr-api-token", "tok")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // GET healthz is exempt; other verbs are not.
    for path in ["/v1.0/healthz", "/v1.0/healthz/outbound"] {
        assert_eq!(
            client.get(dapr.url(path)).send().await.unwrap().status(),
            204
        );
        assert_eq!(
            client.post(dapr.url(path)).send().await.unwrap().status(),
            401
        );
    }
    // Fault control is exempt.
    assert_eq!(
        client
            .post(dapr.url("/_dev/faults"))
            .body("{\"down\": false}")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn down_answers_not_ready_until_up_again() {
    let app = start(|_| echo_app()).await;
    let dapr = sidecar(&[("backend", &app)], None).await;
    let client = http(Duration::from_secs(5));
    let url = dapr.url("/v1.0/invoke/backend/method/api/tasks");
    assert_eq!(
        client
            .post(dapr.url("/_dev/faults"))
            .body("{\"down\": true}")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (status, body) = json_of(client.post(&url).send().await.unwrap()).await;
    assert_eq!(
        (status, body),
        (
            500,
            json!({"errorCode": "ERR_DIRECT_INVOKE", "message": "invoke API is not ready"})
        )
    );
    assert_eq!(
        client
            .get(dapr.url("/v1.0/healthz/outbound"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        client
            .post(dapr.url("/_dev/faults"))
            .body("{\"dwn\": true}")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        client
            .post(dapr.url("/_dev/faults"))
            .body("{\"down\": false}")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(client.post(&url).send().await.unwrap().status(), 200);
}

/// recur's own client through the stand-in to the demo backend: the path the demo takes.
#[tokio::test]
async fn recur_client_through_sidecar_to_backend() {
    use recur::dapr::{
        AppId, DaprClient, DaprConfig, Invocation, Method as DaprMethod, Outcome, RetryReason,
    };

    let backend = start(|rx| {
        backend::router(
            BackendConfig {
                name: "backend".into(),
                record: None,
                seed: 7,
            },
            rx,
        )
        .unwrap()
    })
    .await;
    let dapr = sidecar(&[("backend", &backend)], Some("tok")).await;
    let endpoint = format!("http://{}", dapr.addr);
    let client = DaprClient::new(
        DaprConfig::new(&endpoint, Some("tok".into()), Duration::from_secs(5)).unwrap(),
    )
    .unwrap();
    client.outbound_healthy().await.unwrap();

    let app = AppId::new("backend").unwrap();
    let method = DaprMethod::new("api/tasks").unwrap();
    let body =
        json!({"title": "Daily standup", "user_id": "ana", "due_at": "2025-06-01T09:00:00Z"});
    let inv = Invocation {
        app_id: &app,
        method: &method,
        idempotency_key: "ns/t@1",
        user_id: "ana maría",
        namespace: "ns",
        body: &body,
        trace: None,
    };
    let first = client.invoke(&inv).await.outcome;
    assert_eq!(
        first,
        Outcome::Delivered {
            status: 201,
            backend_id: Some("1".into()),
            replayed: false,
        }
    );
    // The repeat is the backend's replay, its Idempotent-Replayed header passed through.
    assert_eq!(
        client.invoke(&inv).await.outcome,
        Outcome::Delivered {
            status: 201,
            backend_id: Some("1".into()),
            replayed: true,
        }
    );

    let records: Vec<Value> = http(Duration::from_secs(5))
        .get(backend.url("/_dev/records"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["user_id"], "ana maría");
    assert_eq!(records[0]["key"], "ns/t@1");
    assert_eq!(
        (
            records[0]["accepted"].as_bool(),
            records[1]["accepted"].as_bool()
        ),
        (Some(true), Some(false))
    );

    // A wrong token is a configuration problem: retryable, and says so.
    let wrong = DaprClient::new(
        DaprConfig::new(&endpoint, Some("nope".into()), Duration::from_secs(5)).unwrap(),
    )
    .unwrap();
    let inv2 = Invocation {
        idempotency_key: "ns/t@2",
        ..inv
    };
    assert!(matches!(
        wrong.invoke(&inv2).await.outcome,
        Outcome::Retryable {
            reason: RetryReason::Unauthorized,
            ..
        }
    ));

    // Backend faults come through as the app's 503 / as the sidecar's ERR_DIRECT_INVOKE.
    let control = http(Duration::from_secs(5));
    control
        .post(backend.url("/_dev/faults"))
        .body("{\"fail_next\": 1}")
        .send()
        .await
        .unwrap();
    assert!(matches!(
        client.invoke(&inv2).await.outcome,
        Outcome::Retryable {
            reason: RetryReason::ServerError,
            ..
        }
    ));
    control
        .post(backend.url("/_dev/faults"))
        .body("{\"reset_rate\": 1}")
        .send()
        .await
        .unwrap();
    assert!(matches!(
        client.invoke(&inv2).await.outcome,
        Outcome::Retryable {
            reason: RetryReason::SidecarUnavailable,
            ..
        }
    ));
    control
        .post(backend.url("/_dev/faults"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        client.invoke(&inv2).await.outcome,
        Outcome::Delivered {
            status: 201,
            backend_id: Some("2".into()),
            replayed: false,
        }
    );
}

/// Like recur's sidecar on a cluster: a plain app id resolves in the sidecar's own namespace,
/// which holds no app, while `app.namespace` reaches the app.
#[tokio::test]
async fn plain_ids_resolve_in_the_sidecars_own_empty_namespace() {
    let app = start(|_| echo_app()).await;
    let config = SidecarConfig {
        apps: [("backend".to_owned(), format!("http://{}", app.addr))].into(),
        api_token: None,
        app_timeout: Duration::from_secs(5),
        own_namespace: Some("recur-system".into()),
    };
    let dapr = start(move |_| router(config).unwrap()).await;
    let client = http(Duration::from_secs(5));
    for (id, status) in [
        ("backend", 500),
        ("backend.recur-system", 500),
        ("backend.team-a", 200),
    ] {
        let response = client
            .post(dapr.url(&format!("/v1.0/invoke/{id}/method/api/tasks")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{id}");
    }
}
