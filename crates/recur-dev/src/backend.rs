//! The seed's backend, recording everything it receives, with fault injection for chaos tests.
//!
//! `POST /api/tasks` and `POST /api/notifications` require an `Idempotency-Key` and behave as a
//! server following draft-ietf-httpapi-idempotency-key-header:
//!
//! - the first request with a key creates the task (201 and its id); the response is stored with
//!   a fingerprint of the request body;
//! - a repeat after that answer, with the same body, gets the stored response again (same status,
//!   same id) and `Idempotent-Replayed: true`;
//! - a repeat while the first is still being processed gets 409, one with a different body 422
//!   (both `application/problem+json` with a `title`).
//!
//! `POST /api/tasks/{id}/reminder-sent` answers 200. Every request (but `/_dev/`) becomes a
//! record, accepted only when it used its key for the first time; the record is listed from its
//! arrival (`answered_at` null until answered) and appended to the `--record` file once answered.
//!
//! Faults: an injected fault answers (or breaks the connection) instead of the handler, is
//! recorded as not accepted and leaves the key unused; `delay_ms` holds every request before it
//! is answered. The outcome is decided on arrival (a new key is claimed then), so a repeat that
//! arrives while the first is held is the "still being processed" case.
use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use percent_encoding::percent_decode_str;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::net::Conn;
use faults::{DEFAULT_HANG, Fault, Faults, Injector};
use idempotency::{Keys, Lookup, Stored, fingerprint};

mod faults;
mod idempotency;

pub struct BackendConfig {
    pub name: String,
    pub record: Option<PathBuf>,
    /// Seed of the fault dice (same seed, same sequence of faults for the same requests).
    pub seed: u64,
}

/// One received request.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Record {
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub key: Option<String>,
    pub user_id: Option<String>,
    /// The tenant the call was made for (`X-Recur-Namespace`).
    pub namespace: Option<String>,
    /// First time for this key on this endpoint, and answered 2xx.
    pub accepted: bool,
    /// Status answered (null when the connection was reset or dropped instead). Decided on
    /// arrival, so set while the request is still held.
    pub status: Option<u16>,
    /// The injected fault, if any: fail, timeout, reset, down.
    pub fault: Option<&'static str>,
    /// The id this request created or was replayed.
    pub id: Option<String>,
    pub title: Option<String>,
    /// When the request arrived (RFC 3339, milliseconds).
    pub received_at: String,
    /// When it was answered, or its connection reset or dropped; null while in flight.
    pub answered_at: Option<String>,
    pub scheduled_at: Option<String>,
    pub due_at: Option<String>,
    /// `received_at - due_at` in milliseconds.
    pub lag_ms: Option<i64>,
    /// The request's W3C `traceparent` header (the trace the caller's sidecar joined it to);
    /// left out when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

struct Inner {
    seq: u64,
    next_id: u64,
    keys: Keys,
    /// Keys (or paths) of the reminder-sent calls seen.
    sent: HashSet<String>,
    /// In arrival (`seq`) order.
    records: Vec<Record>,
    injector: Injector,
}

#[derive(Clone)]
struct Backend {
    inner: Arc<Mutex<Inner>>,
    record_file: Option<Arc<Mutex<File>>>,
    shutdown: watch::Receiver<bool>,
}

impl Backend {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The backend's routes. `shutdown` ends held ("timeout") requests early.
pub fn router(config: BackendConfig, shutdown: watch::Receiver<bool>) -> Result<Router, String> {
    let record_file = match &config.record {
        Some(path) => Some(Arc::new(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("--record {}: {e}", path.display()))?,
        ))),
        None => None,
    };
    let inner = Inner {
        seq: 0,
        next_id: 0,
        keys: Keys::default(),
        sent: HashSet::new(),
        records: vec![],
        injector: Injector::new(config.seed),
    };
    let state = Backend {
        inner: Arc::new(Mutex::new(inner)),
        record_file,
        shutdown,
    };
    tracing::info!(name = %config.name, "backend ready");
    Ok(Router::new()
        .route(
            "/_dev/records",
            axum::routing::get(get_records).delete(clear_records),
        )
        .route("/_dev/faults", post(set_faults).get(get_faults))
        .fallback(api)
        .with_state(state))
}

async fn get_records(State(b): State<Backend>) -> Response {
    axum::Json(b.lock().records.clone()).into_response()
}

async fn clear_records(State(b): State<Backend>) -> StatusCode {
    b.lock().records.clear();
    StatusCode::NO_CONTENT
}

async fn set_faults(State(b): State<Backend>, body: Bytes) -> Response {
    let faults = match serde_json::from_slice::<Faults>(&body)
        .map_err(|e| e.to_string())
        .and_then(|f| f.validate().map(|()| f))
    {
        Ok(f) => f,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": format!("faults: {e}")})),
            )
                .into_response();
        }
    };
    tracing::info!(?faults, "backend faults set");
    b.lock().injector.faults = faults.clone();
    axum::Json(faults).into_response()
}

async fn get_faults(State(b): State<Backend>) -> Response {
    axum::Json(b.lock().injector.faults.clone()).into_response()
}

/// Which endpoint a path is, and its key space.
fn endpoint(method: &Method, path: &str) -> Option<&'static str> {
    if method != Method::POST {
        return None;
    }
    match path.trim_end_matches('/') {
        "/api/tasks" => Some("tasks"),
        "/api/notifications" => Some("notifications"),
        p => {
            let id = p
                .strip_prefix("/api/tasks/")?
                .strip_suffix("/reminder-sent")?;
            (!id.is_empty() && !id.contains('/')).then_some("reminder-sent")
        }
    }
}

fn text_field(body: &Value, name: &str) -> Option<String> {
    match body.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Printable on one log line.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// What was decided for a request on its arrival.
enum Decision {
    Fault(Fault),
    Answer {
        status: StatusCode,
        body: Value,
        /// A stored response given again.
        replayed: bool,
        /// The (endpoint, key) this request claimed: its answer is stored under it.
        claimed: Option<(&'static str, String)>,
    },
}

async fn api(
    State(b): State<Backend>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let key = header("idempotency-key").filter(|k| !k.is_empty());
    let user_id =
        header("x-user-id").map(|u| percent_decode_str(&u).decode_utf8_lossy().into_owned());
    let namespace = header("x-recur-namespace")
        .map(|n| percent_decode_str(&n).decode_utf8_lossy().into_owned());
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    let field = |name: &str| json.as_ref().and_then(|j| text_field(j, name));
    let due_at = field("due_at");
    let due = due_at
        .as_deref()
        .and_then(|d| DateTime::parse_from_rfc3339(d).ok());
    let mut record = Record {
        seq: 0,
        method: method.to_string(),
        path: path.clone(),
        key: key.clone(),
        user_id,
        namespace,
        accepted: false,
        status: None,
        fault: None,
        id: None,
        title: field("title"),
        received_at: String::new(),
        answered_at: None,
        scheduled_at: field("scheduled_at"),
        due_at,
        lag_ms: None,
        traceparent: header("traceparent"),
    };
    let endpoint = endpoint(&method, &path);
    let request = Request {
        endpoint,
        path: &path,
        key: key.as_deref(),
        is_json: json.is_some(),
        fingerprint: fingerprint(&body),
    };

    // Stamp, decide and record under one lock: records are in arrival order, and a repeat's
    // received_at is never before the answer it was given as a replay.
    let (decision, delay) = {
        let mut inner = b.lock();
        let received = now();
        record.received_at = stamp(received);
        record.lag_ms = due.map(|due| (received - due.with_timezone(&Utc)).num_milliseconds());
        inner.seq += 1;
        record.seq = inner.seq;
        let decision = match inner.injector.next(record.namespace.as_deref()) {
            Some(fault) => Decision::Fault(fault),
            None => decide(&mut inner, &request, &mut record),
        };
        match &decision {
            Decision::Fault(fault) => {
                record.fault = Some(fault.name());
                record.status = match fault {
                    Fault::Fail => Some(StatusCode::SERVICE_UNAVAILABLE.as_u16()),
                    Fault::Reject => Some(StatusCode::BAD_REQUEST.as_u16()),
                    Fault::Reset | Fault::Down | Fault::Timeout => None,
                };
            }
            Decision::Answer { status, .. } => record.status = Some(status.as_u16()),
        }
        if record.accepted {
            println!(
                "received path={} key={} user={} title={:?} lag_ms={}",
                one_line(&path),
                one_line(record.key.as_deref().unwrap_or("-")),
                one_line(record.user_id.as_deref().unwrap_or("-")),
                record.title.as_deref().unwrap_or(""),
                record.lag_ms.map_or("-".to_owned(), |l| l.to_string()),
            );
        }
        inner.records.push(record.clone());
        (
            decision,
            inner.injector.faults.delay_ms.map(Duration::from_millis),
        )
    };

    // Finished in a task of its own: hyper drops this future when the client disconnects, and
    // the request must still complete (and release its key) as on a real server.
    tokio::spawn(finish(b, conn, record, decision, delay))
        .await
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Holds the request `delay`, then answers it (or breaks its connection) as decided.
async fn finish(
    b: Backend,
    conn: Conn,
    record: Record,
    decision: Decision,
    delay: Option<Duration>,
) -> Response {
    if let Some(delay) = delay {
        b.hold(delay).await;
    }
    match decision {
        Decision::Fault(Fault::Fail) => {
            b.answered(record, None);
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"error": "injected failure"})),
            )
                .into_response()
        }
        Decision::Fault(Fault::Reject) => {
            b.answered(record, None);
            (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "injected refusal: this request is invalid"})),
            )
                .into_response()
        }
        Decision::Fault(fault @ (Fault::Reset | Fault::Down)) => {
            tracing::debug!(peer = %conn.peer, fault = fault.name(), "resetting the connection");
            conn.reset();
            b.answered(record, None);
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        Decision::Fault(Fault::Timeout) => {
            let hang = b
                .lock()
                .injector
                .faults
                .hang_ms
                .map_or(DEFAULT_HANG, Duration::from_millis);
            b.hold(hang).await;
            conn.reset();
            b.answered(record, None);
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        Decision::Answer {
            status,
            body,
            replayed,
            claimed,
        } => {
            let store = claimed.map(|claimed| {
                let stored = Stored {
                    status,
                    body: body.clone(),
                };
                (claimed, stored)
            });
            b.answered(record, store);
            let mut response = (status, axum::Json(body)).into_response();
            let headers = response.headers_mut();
            if replayed {
                headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
            }
            if matches!(
                status,
                StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY
            ) {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/problem+json"),
                );
            }
            response
        }
    }
}

/// Now, in whole milliseconds: lag_ms is then exactly received_at - due_at as shown.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Backend {
    /// Waits `how_long`, or less when shutting down.
    async fn hold(&self, how_long: Duration) {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(how_long) => {}
            _ = shutdown.wait_for(|s| *s) => {}
        }
    }

    /// Marks the request answered now: stores its response under the key it claimed (under the
    /// same lock, so no repeat sees the key done before the first is answered), updates its
    /// record (unless the records were cleared meanwhile) and appends it to the file.
    fn answered(&self, mut record: Record, store: Option<((&'static str, String), Stored)>) {
        let mut inner = self.lock();
        record.answered_at = Some(stamp(now()));
        if let Some(((endpoint, key), stored)) = store {
            inner.keys.complete(endpoint, &key, stored);
        }
        if let Ok(i) = inner.records.binary_search_by_key(&record.seq, |r| r.seq) {
            inner.records[i].answered_at = record.answered_at.clone();
        }
        drop(inner);
        append(self.record_file.as_deref(), &record);
    }
}

/// What a request's handling needs to know.
struct Request<'a> {
    endpoint: Option<&'static str>,
    path: &'a str,
    key: Option<&'a str>,
    is_json: bool,
    fingerprint: u64,
}

/// The answer to a request without a fault; claims a new key and marks the record accepted.
fn decide(inner: &mut Inner, req: &Request<'_>, record: &mut Record) -> Decision {
    let answer = |status, body| Decision::Answer {
        status,
        body,
        replayed: false,
        claimed: None,
    };
    let problem = |status, title: &str| answer(status, json!({ "title": title }));
    let Some(endpoint) = req.endpoint else {
        return answer(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no such endpoint: {}", req.path)}),
        );
    };
    if endpoint == "reminder-sent" {
        let task_id = req
            .path
            .trim_end_matches('/')
            .trim_start_matches("/api/tasks/")
            .trim_end_matches("/reminder-sent");
        record.id = Some(task_id.to_owned());
        record.accepted = inner.sent.insert(req.key.unwrap_or(req.path).to_owned());
        return answer(
            StatusCode::OK,
            json!({"id": task_id, "reminder_sent": true}),
        );
    }
    let Some(key) = req.key else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "missing Idempotency-Key header"}),
        );
    };
    if !req.is_json {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "the body must be JSON"}),
        );
    }
    match inner.keys.begin(endpoint, key, req.fingerprint) {
        Lookup::New => {
            inner.next_id += 1;
            let id = inner.next_id.to_string();
            record.id = Some(id.clone());
            record.accepted = true;
            Decision::Answer {
                status: StatusCode::CREATED,
                body: json!({"id": id, "idempotency_key": key}),
                replayed: false,
                claimed: Some((endpoint, key.to_owned())),
            }
        }
        Lookup::Replay(stored) => {
            record.id = text_field(&stored.body, "id");
            Decision::Answer {
                status: stored.status,
                body: stored.body,
                replayed: true,
                claimed: None,
            }
        }
        Lookup::InFlight => problem(
            StatusCode::CONFLICT,
            "a request with this Idempotency-Key is being processed",
        ),
        Lookup::Mismatch => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Idempotency-Key reused with a different payload",
        ),
    }
}

/// Appends the record to the `--record` file as one JSON line.
fn append(file: Option<&Mutex<File>>, record: &Record) {
    let Some(file) = file else { return };
    match serde_json::to_string(record) {
        Ok(line) => {
            let mut file = file.lock().unwrap_or_else(PoisonError::into_inner);
            if let Err(err) = writeln!(file, "{line}").and_then(|()| file.flush()) {
                tracing::warn!(%err, "cannot append to the record file");
            }
        }
        Err(err) => tracing::warn!(%err, "cannot serialize a record"),
    }
}

#[cfg(test)]
mod tests;
