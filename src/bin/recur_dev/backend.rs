//! The seed's backend, recording everything it receives, with fault injection for chaos tests.
//!
//! `POST /api/tasks` and `POST /api/notifications` dedupe on `Idempotency-Key` (201 the first
//! time, 409 with the same id after); `POST /api/tasks/{id}/reminder-sent` answers 200. Every
//! request (but `/_dev/`) becomes a record; an injected fault answers instead of the handler, is
//! recorded as not accepted and leaves the key unused.
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::net::Conn;

/// How long a "timeout" fault holds a request before dropping it, unless `hang_ms` says otherwise.
const DEFAULT_HANG: Duration = Duration::from_secs(60);

pub struct BackendConfig {
    pub name: String,
    pub record: Option<PathBuf>,
    /// Seed of the fault dice (same seed, same sequence of faults for the same requests).
    pub seed: u64,
}

/// Fault injection; a POST replaces all of it (absent fields are 0/false).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Share of requests answered 503.
    pub fail_rate: f64,
    /// Share of requests held for `hang_ms` and then dropped (RST) without an answer.
    pub timeout_rate: f64,
    /// Share of requests whose connection is reset (RST) without an answer.
    pub reset_rate: f64,
    /// The next N requests are answered 503 (before the rates are consulted).
    pub fail_next: u32,
    /// Every request's connection is reset: the backend is gone (`/_dev/` still works).
    pub down: bool,
    /// How long a timeout fault holds a request (default 60 s, beyond any client timeout).
    pub hang_ms: Option<u64>,
}

impl Faults {
    fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("fail_rate", self.fail_rate),
            ("timeout_rate", self.timeout_rate),
            ("reset_rate", self.reset_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1 (got {rate})"));
            }
        }
        if self.fail_rate + self.timeout_rate + self.reset_rate > 1.0 + 1e-9 {
            return Err("fail_rate + timeout_rate + reset_rate must not exceed 1".into());
        }
        Ok(())
    }
}

/// One received request.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Record {
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub key: Option<String>,
    pub user_id: Option<String>,
    /// First time for this key on this endpoint, and answered 2xx.
    pub accepted: bool,
    /// Status answered (null when the connection was reset or dropped instead).
    pub status: Option<u16>,
    /// The injected fault, if any: fail, timeout, reset, down.
    pub fault: Option<&'static str>,
    /// The id this request created or repeated.
    pub id: Option<String>,
    pub title: Option<String>,
    pub received_at: String,
    pub scheduled_at: Option<String>,
    pub due_at: Option<String>,
    /// `received_at - due_at` in milliseconds.
    pub lag_ms: Option<i64>,
}

#[derive(Default)]
struct Inner {
    seq: u64,
    next_id: u64,
    /// (endpoint, key) to the id given the first time.
    keys: HashMap<(&'static str, String), String>,
    records: Vec<Record>,
    faults: Faults,
    dice: u64,
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
        dice: config.seed | 1,
        ..Inner::default()
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
    b.lock().faults = faults.clone();
    axum::Json(faults).into_response()
}

async fn get_faults(State(b): State<Backend>) -> Response {
    axum::Json(b.lock().faults.clone()).into_response()
}

/// What the dice chose for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Fail,
    Timeout,
    Reset,
    Down,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Fail => "fail",
            Fault::Timeout => "timeout",
            Fault::Reset => "reset",
            Fault::Down => "down",
        }
    }
}

impl Inner {
    /// xorshift64*: a uniform number in [0, 1).
    fn roll(&mut self) -> f64 {
        let mut x = self.dice;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.dice = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn fault(&mut self) -> Option<Fault> {
        if self.faults.down {
            return Some(Fault::Down);
        }
        if self.faults.fail_next > 0 {
            self.faults.fail_next -= 1;
            return Some(Fault::Fail);
        }
        let f = &self.faults;
        if f.fail_rate + f.timeout_rate + f.reset_rate <= 0.0 {
            return None;
        }
        let (reset, timeout, fail) = (f.reset_rate, f.timeout_rate, f.fail_rate);
        let r = self.roll();
        if r < reset {
            Some(Fault::Reset)
        } else if r < reset + timeout {
            Some(Fault::Timeout)
        } else if r < reset + timeout + fail {
            Some(Fault::Fail)
        } else {
            None
        }
    }
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

async fn api(
    State(b): State<Backend>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Whole milliseconds, so that lag_ms is exactly received_at - due_at as shown.
    let received = Utc::now().trunc_subsecs(3);
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
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    let field = |name: &str| json.as_ref().and_then(|j| text_field(j, name));
    let due_at = field("due_at");
    let lag_ms = due_at
        .as_deref()
        .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
        .map(|due| (received - due.with_timezone(&Utc)).num_milliseconds());
    let mut record = Record {
        seq: 0,
        method: method.to_string(),
        path: path.clone(),
        key: key.clone(),
        user_id,
        accepted: false,
        status: None,
        fault: None,
        id: None,
        title: field("title"),
        received_at: received.to_rfc3339_opts(SecondsFormat::Millis, true),
        scheduled_at: field("scheduled_at"),
        due_at,
        lag_ms,
    };
    let endpoint = endpoint(&method, &path);

    // Decide, record and log under one lock, so records (and the file) are in arrival order.
    let (fault, status, answer) = {
        let mut inner = b.lock();
        inner.seq += 1;
        record.seq = inner.seq;
        let (fault, status, answer) = match inner.fault() {
            Some(Fault::Fail) => (
                Some(Fault::Fail),
                Some(StatusCode::SERVICE_UNAVAILABLE),
                Value::Null,
            ),
            Some(fault) => (Some(fault), None, Value::Null),
            None => {
                let (status, answer) = answer(
                    &mut inner,
                    endpoint,
                    &path,
                    key.as_deref(),
                    json.is_some(),
                    &mut record,
                );
                (None, Some(status), answer)
            }
        };
        record.fault = fault.map(Fault::name);
        record.status = status.map(|s| s.as_u16());
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
        append(b.record_file.as_deref(), &record);
        inner.records.push(record);
        (fault, status, answer)
    };

    match (fault, status) {
        (Some(Fault::Fail), _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": "injected failure"})),
        )
            .into_response(),
        (Some(fault @ (Fault::Reset | Fault::Down)), _) => {
            tracing::debug!(peer = %conn.peer, fault = fault.name(), "resetting the connection");
            conn.reset();
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        (Some(Fault::Timeout), _) => {
            let hang = b
                .lock()
                .faults
                .hang_ms
                .map_or(DEFAULT_HANG, Duration::from_millis);
            let mut shutdown = b.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(hang) => {}
                _ = shutdown.wait_for(|s| *s) => {}
            }
            conn.reset();
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        (None, status) => (
            status.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            axum::Json(answer),
        )
            .into_response(),
    }
}

/// The normal answer to a request without a fault; marks the record accepted and uses the key
/// when it is a first time.
fn answer(
    inner: &mut Inner,
    endpoint: Option<&'static str>,
    path: &str,
    key: Option<&str>,
    is_json: bool,
    record: &mut Record,
) -> (StatusCode, Value) {
    let Some(endpoint) = endpoint else {
        return (
            StatusCode::NOT_FOUND,
            json!({"error": format!("no such endpoint: {path}")}),
        );
    };
    if endpoint == "reminder-sent" {
        let task_id = path
            .trim_end_matches('/')
            .trim_start_matches("/api/tasks/")
            .trim_end_matches("/reminder-sent");
        let dedupe = key.map_or_else(|| path.to_owned(), str::to_owned);
        record.id = Some(task_id.to_owned());
        record.accepted = inner
            .keys
            .insert(("reminder-sent", dedupe), task_id.to_owned())
            .is_none();
        return (
            StatusCode::OK,
            json!({"id": task_id, "reminder_sent": true}),
        );
    }
    let Some(key) = key else {
        return (
            StatusCode::BAD_REQUEST,
            json!({"error": "missing Idempotency-Key header"}),
        );
    };
    if !is_json {
        return (
            StatusCode::BAD_REQUEST,
            json!({"error": "the body must be JSON"}),
        );
    }
    if let Some(id) = inner.keys.get(&(endpoint, key.to_owned())) {
        record.id = Some(id.clone());
        return (
            StatusCode::CONFLICT,
            json!({"id": id, "error": "duplicate"}),
        );
    }
    inner.next_id += 1;
    let id = inner.next_id.to_string();
    inner.keys.insert((endpoint, key.to_owned()), id.clone());
    record.id = Some(id.clone());
    record.accepted = true;
    (
        StatusCode::CREATED,
        json!({"id": id, "idempotency_key": key}),
    )
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
#[path = "backend_tests.rs"]
mod tests;
