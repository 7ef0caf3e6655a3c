//! A stand-in for daprd's service invocation API, for machines without a daprd build.
//!
//! What it reproduces (from dapr/dapr `pkg/api/http`): `/v1.0/invoke/{id}/method/{method...}` for
//! any verb, and the `dapr-app-id` header on any path (the header wins, the whole path is then the
//! method); query, body and headers forwarded, app status and body passed through; Dapr's error
//! bodies `{"errorCode","message"}` — 404 when no app id is given, 500 `ERR_DIRECT_INVOKE` when
//! the app id is unknown or the app unreachable, 500 "invoke API is not ready" when down; the API
//! token check (`dapr-api-token`, 401 text "invalid api token", GET healthz exempt); 204 healthz.
//! What it does not: name resolution, mTLS, resiliency policies, access control, gRPC.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::json;

use super::net::is_loopback_host;

/// What the sidecar forwards to.
#[derive(Clone, Debug)]
pub struct SidecarConfig {
    /// App id (without namespace) to base URL `http://127.0.0.1:PORT`.
    pub apps: HashMap<String, String>,
    /// When set, every call but GET healthz (and `/_dev/`) must carry it as `dapr-api-token`.
    pub api_token: Option<String>,
    /// How long to wait for an app's answer.
    pub app_timeout: Duration,
    /// Where a plain app id (no `.namespace`) resolves: nowhere when set, as for recur's own
    /// sidecar on a cluster; unset, plain ids reach the apps.
    pub own_namespace: Option<String>,
}

/// Parses `--app name=http://127.0.0.1:PORT`.
pub fn parse_app(spec: &str) -> Result<(String, String), String> {
    let (name, url) = spec
        .split_once('=')
        .ok_or_else(|| format!("--app {spec:?}: expected NAME=http://127.0.0.1:PORT"))?;
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !name_ok {
        return Err(format!(
            "--app {spec:?}: {name:?} is not an app id (a DNS-1123 label)"
        ));
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("--app {spec:?}: {url:?} is not a URL ({e})"))?;
    if parsed.scheme() != "http" || !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
        return Err(format!(
            "--app {spec:?}: the app URL must be http://HOST:PORT without a path"
        ));
    }
    if !parsed.host_str().is_some_and(is_loopback_host) {
        return Err(format!(
            "--app {spec:?}: the app must be on loopback (127.0.0.1, ::1, localhost)"
        ));
    }
    Ok((name.to_owned(), parsed.origin().ascii_serialization()))
}

#[derive(Clone)]
struct Sidecar {
    apps: Arc<HashMap<String, String>>,
    own_namespace: Option<Arc<str>>,
    token: Option<Arc<str>>,
    http: reqwest::Client,
    down: Arc<AtomicBool>,
}

/// The sidecar's routes.
pub fn router(config: SidecarConfig) -> Result<Router, String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never())
        .timeout(config.app_timeout)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let state = Sidecar {
        apps: Arc::new(config.apps),
        own_namespace: config.own_namespace.map(Arc::from),
        token: config.api_token.filter(|t| !t.is_empty()).map(Arc::from),
        http,
        down: Arc::new(AtomicBool::new(false)),
    };
    Ok(Router::new()
        .route("/v1.0/healthz", get(healthz))
        .route("/v1.0/healthz/outbound", get(healthz))
        .route("/_dev/faults", post(set_faults).get(get_faults))
        // Like daprd, invocation is the fallback for every other route.
        .fallback(invoke)
        .layer(middleware::from_fn_with_state(state.clone(), api_token))
        .with_state(state))
}

async fn healthz() -> StatusCode {
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SidecarFaults {
    #[serde(default)]
    down: bool,
}

async fn set_faults(State(s): State<Sidecar>, body: Bytes) -> Response {
    match serde_json::from_slice::<SidecarFaults>(&body) {
        Ok(f) => {
            s.down.store(f.down, Ordering::SeqCst);
            tracing::info!(down = f.down, "sidecar faults set");
            axum::Json(json!({"down": f.down})).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": format!("faults: {e}")})),
        )
            .into_response(),
    }
}

async fn get_faults(State(s): State<Sidecar>) -> Response {
    axum::Json(json!({"down": s.down.load(Ordering::SeqCst)})).into_response()
}

/// daprd's `APITokenAuthMiddleware`: `http.Error(w, "invalid api token", 401)` unless the header
/// matches; GET on the health endpoints is exempt. `/_dev/` (fault control) is exempt here too.
async fn api_token(State(s): State<Sidecar>, request: Request, next: Next) -> Response {
    let Some(token) = &s.token else {
        return next.run(request).await;
    };
    let path = request.uri().path().trim_matches('/');
    let exempt = (request.method() == Method::GET
        && matches!(path, "v1.0/healthz" | "v1.0/healthz/outbound"))
        || path.starts_with("_dev/")
        || path == "_dev";
    let given = request
        .headers()
        .get("dapr-api-token")
        .map(HeaderValue::as_bytes);
    if exempt || given.is_some_and(|g| constant_time_eq(g, token.as_bytes())) {
        return next.run(request).await;
    }
    let mut response = (StatusCode::UNAUTHORIZED, "invalid api token\n").into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn dapr_error(status: StatusCode, message: String) -> Response {
    (
        status,
        axum::Json(json!({"errorCode": "ERR_DIRECT_INVOKE", "message": message})),
    )
        .into_response()
}

/// Where a call goes: the app id and the method path (without leading `/`), as daprd's
/// `findTargetIDAndMethod` finds them.
fn target(uri: &Uri, headers: &HeaderMap) -> Option<(String, String)> {
    let path = uri.path();
    if let Some(id) = headers
        .get("dapr-app-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    {
        return Some((id.to_owned(), path.trim_start_matches('/').to_owned()));
    }
    let rest = path.strip_prefix("/v1.0/invoke/")?;
    let (id, method) = rest.split_once("/method/")?;
    let id = percent_decode_str(id).decode_utf8().ok()?.into_owned();
    (!id.is_empty()).then(|| (id, method.to_owned()))
}

/// Request headers that are about this hop, not the call: not forwarded either way.
fn hop_by_hop(name: &HeaderName, connection: &[String]) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "trailers"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    ) || connection
        .iter()
        .any(|c| c.eq_ignore_ascii_case(name.as_str()))
}

fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_owned()))
        .collect()
}

async fn invoke(
    State(s): State<Sidecar>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((id, app_method)) = target(&uri, &headers) else {
        return dapr_error(
            StatusCode::NOT_FOUND,
            "failed getting app id either from the URL path or the header dapr-app-id".into(),
        );
    };
    if s.down.load(Ordering::SeqCst) {
        return dapr_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "invoke API is not ready".into(),
        );
    }
    // `app.namespace` resolves to `app` (the apps stand for every tenant's); a plain id resolves
    // in the sidecar's own namespace, which holds no app when one is set.
    let (app, namespace) = match id.split_once('.') {
        Some((app, ns)) => (app, Some(ns)),
        None => (id.as_str(), s.own_namespace.as_deref()),
    };
    let found = s
        .apps
        .get(app)
        .filter(|_| namespace.is_none() || namespace != s.own_namespace.as_deref());
    let Some(base) = found else {
        tracing::info!(app_id = %id, "unknown app id");
        return dapr_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to invoke, id: {id}, err: couldn't find service: {id}"),
        );
    };
    let mut url = format!("{base}/{app_method}");
    if let Some(query) = uri.query() {
        url.push('?');
        url.push_str(query);
    }
    let connection = connection_tokens(&headers);
    let mut request = s.http.request(method.clone(), &url).body(body);
    for (name, value) in &headers {
        if hop_by_hop(name, &connection)
            || matches!(name.as_str(), "dapr-api-token" | "dapr-app-id")
        {
            continue;
        }
        request = request.header(name, value);
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(err) => {
            tracing::info!(app_id = %id, %err, "app unreachable");
            return dapr_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to invoke, id: {id}, err: {}", cause(&err)),
            );
        }
    };
    let status = answer.status();
    let answer_headers = answer.headers().clone();
    let answer_body = match answer.bytes().await {
        Ok(b) => b,
        Err(err) => {
            return dapr_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to invoke, id: {id}, err: {}", cause(&err)),
            );
        }
    };
    tracing::info!(app_id = %id, %method, method_path = %app_method, status = status.as_u16(), "invoked");
    let mut response = Response::new(Body::from(answer_body));
    *response.status_mut() = status;
    let connection = connection_tokens(&answer_headers);
    for (name, value) in &answer_headers {
        if !hop_by_hop(name, &connection) {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}

/// The error and its causes on one line (like Go's wrapped errors in daprd's messages).
fn cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests;
