//! A real OpenTelemetry Collector on loopback for the trace tests (`tests/cluster/otelcol.sh`:
//! `otelcol-recur`, built by `tests/cluster/build.sh`): an OTLP receiver (HTTP and gRPC) whose
//! spans land in `DIR/traces.jsonl`, one OTLP JSON `ExportTraceServiceRequest` a line, flushed
//! every 100 ms. [`Collector::spans`] reads them back; [`Collector::wait_spans`] polls for them.
//!
//! Senders: recur with `OTEL_EXPORTER_OTLP_ENDPOINT=`[`Collector::endpoint`] (OTLP/HTTP, it posts
//! to `<endpoint>/v1/traces`), daprd with `OTLP_ENDPOINT=`[`Collector::otlp_hostport`] given to
//! `tests/cluster/sidecars.sh` (see `Stack::start_with_tracing`).
//!
//! In the file (verified with the collector v0.161.0): `traceId`, `spanId` and `parentSpanId` are
//! lowercase hex (32, 16 and 16 digits; `parentSpanId` absent or `""` for a root span), `kind` is
//! the enum's number (2 = server), an `intValue` is a JSON string.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A running collector; dropping it stops it (`otelcol.sh --down`).
pub struct Collector {
    dir: PathBuf,
    http_port: u16,
    grpc_port: u16,
    pid: u32,
    traces: PathBuf,
}

/// OTLP `Span.SpanKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    /// From the number the collector writes (or the enum's name, `SPAN_KIND_SERVER`).
    fn parse(v: Option<&Value>) -> SpanKind {
        let n = match v {
            Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
            Some(Value::String(s)) => match s.as_str() {
                "SPAN_KIND_INTERNAL" => 1,
                "SPAN_KIND_SERVER" => 2,
                "SPAN_KIND_CLIENT" => 3,
                "SPAN_KIND_PRODUCER" => 4,
                "SPAN_KIND_CONSUMER" => 5,
                _ => 0,
            },
            _ => 0,
        };
        match n {
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }
}

/// One span as the collector received it, with its resource's attributes.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// The resource's `service.name` (daprd: its app id; recur: `OTEL_SERVICE_NAME`).
    pub service: Option<String>,
    /// Every attribute of the resource, as text.
    pub resource: BTreeMap<String, String>,
    /// The instrumentation scope's name.
    pub scope: Option<String>,
    /// Lowercase hex, 32 digits.
    pub trace_id: String,
    /// Lowercase hex, 16 digits.
    pub span_id: String,
    /// `None` for a root span.
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: SpanKind,
    /// The span's attributes, as text: a string as is, an int, double or bool as its JSON, an
    /// array or map as its OTLP JSON.
    pub attributes: BTreeMap<String, String>,
    /// `status.code`: 0 unset, 1 ok, 2 error.
    pub status_code: u64,
    pub status_message: Option<String>,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
}

impl Span {
    /// The attribute `key`, as text.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// The `traceparent` a W3C propagator makes of this span (sampled).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} {:?} trace={} span={} parent={} {:?}",
            self.service.as_deref().unwrap_or("-"),
            self.name,
            self.kind,
            self.trace_id,
            self.span_id,
            self.parent_span_id.as_deref().unwrap_or("-"),
            self.attributes
        )
    }
}

/// The text of an OTLP `AnyValue`.
fn any_value(v: &Value) -> String {
    let Some(map) = v.as_object() else {
        return v.to_string();
    };
    match map.iter().next() {
        Some((k, _)) if k == "arrayValue" || k == "kvlistValue" => v.to_string(),
        // stringValue, an intValue (a JSON string in OTLP JSON), bytesValue (base64).
        Some((_, Value::String(s))) => s.clone(),
        // boolValue, doubleValue (and an intValue written as a number).
        Some((_, scalar)) => scalar.to_string(),
        None => String::new(),
    }
}

fn attributes(list: Option<&Value>) -> BTreeMap<String, String> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|kv| {
            let key = kv.get("key")?.as_str()?.to_owned();
            Some((key, kv.get("value").map(any_value).unwrap_or_default()))
        })
        .collect()
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn number(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// The spans of one line of the file (an `ExportTraceServiceRequest` in OTLP JSON).
pub fn parse_line(line: &str) -> Result<Vec<Span>, String> {
    let request: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let mut spans = vec![];
    for rs in request["resourceSpans"].as_array().into_iter().flatten() {
        let resource = attributes(rs.pointer("/resource/attributes"));
        let service = resource.get("service.name").cloned();
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            let scope = text(ss.pointer("/scope/name"));
            for s in ss["spans"].as_array().into_iter().flatten() {
                spans.push(Span {
                    service: service.clone(),
                    resource: resource.clone(),
                    scope: scope.clone(),
                    trace_id: text(s.get("traceId")).unwrap_or_default(),
                    span_id: text(s.get("spanId")).unwrap_or_default(),
                    parent_span_id: text(s.get("parentSpanId")),
                    name: text(s.get("name")).unwrap_or_default(),
                    kind: SpanKind::parse(s.get("kind")),
                    attributes: attributes(s.get("attributes")),
                    status_code: number(s.pointer("/status/code")),
                    status_message: text(s.pointer("/status/message")),
                    start_unix_nano: number(s.get("startTimeUnixNano")),
                    end_unix_nano: number(s.get("endTimeUnixNano")),
                });
            }
        }
    }
    Ok(spans)
}

fn env_value<'a>(env: &'a str, var: &str) -> &'a str {
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{var}=")))
        .unwrap_or_else(|| panic!("{var} is missing from otelcol.env: {env}"))
}

impl Collector {
    /// Starts a collector with its files in `dir` (created if missing; its configuration, log
    /// and traces.jsonl) and waits until it accepts OTLP. Blocks (seconds; minutes when
    /// `otelcol-recur` must be built first): from async code call it in `spawn_blocking`.
    /// Stopped on drop, or when this test process exits.
    pub fn start(dir: &Path) -> Collector {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new(format!("{REPO}/tests/cluster/otelcol.sh"))
            .arg("--watch-parent")
            .arg(std::process::id().to_string())
            .arg(dir)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("running tests/cluster/otelcol.sh: {e}"));
        assert!(
            out.status.success(),
            "tests/cluster/otelcol.sh {} failed ({}); its messages are above",
            dir.display(),
            out.status
        );
        let env = std::fs::read_to_string(dir.join("otelcol.env")).unwrap();
        let collector = Collector {
            dir: dir.to_path_buf(),
            http_port: env_value(&env, "OTLP_HTTP_PORT").parse().unwrap(),
            grpc_port: env_value(&env, "OTLP_GRPC_PORT").parse().unwrap(),
            pid: env_value(&env, "OTELCOL_PID").parse().unwrap(),
            traces: PathBuf::from(env_value(&env, "TRACES_FILE")),
        };
        let printed = String::from_utf8_lossy(&out.stdout);
        assert_eq!(printed.trim(), collector.endpoint(), "otelcol.sh's output");
        collector
    }

    /// The OTLP/HTTP endpoint, `http://127.0.0.1:PORT` (for `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `127.0.0.1:PORT` of the OTLP/HTTP receiver: `OTLP_ENDPOINT` of `sidecars.sh` (daprd).
    pub fn otlp_hostport(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// `127.0.0.1:PORT` of the OTLP/gRPC receiver (plaintext).
    pub fn grpc_hostport(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file the spans are written to.
    pub fn traces_file(&self) -> &Path {
        &self.traces
    }

    /// Every span received so far, in the order written. A last line still being written (no
    /// newline yet) is left for the next call.
    pub fn spans(&self) -> Vec<Span> {
        let text = match std::fs::read_to_string(&self.traces) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return vec![],
            Err(e) => panic!("reading {}: {e}", self.traces.display()),
        };
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .filter(|l| !l.trim().is_empty())
            .flat_map(|line| {
                parse_line(line).unwrap_or_else(|e| {
                    panic!(
                        "{}: a line is not OTLP JSON ({e}): {line}",
                        self.traces.display()
                    )
                })
            })
            .collect()
    }

    /// The spans of trace `trace_id` (lowercase hex).
    pub fn trace(&self, trace_id: &str) -> Vec<Span> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }

    /// Polls the file every 100 ms until `done` holds of all the spans received, and returns
    /// them; panics with `what` and every span seen when `timeout` passes first.
    pub async fn wait_spans(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Span]) -> bool,
    ) -> Vec<Span> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if Instant::now() >= deadline {
                let seen: Vec<String> = spans.iter().map(|s| format!("  {s}")).collect();
                panic!(
                    "timed out after {timeout:?} waiting for spans: {what}; the collector \
                     received {} span(s):\n{}\n(log: {})",
                    spans.len(),
                    seen.join("\n"),
                    self.dir.join("otelcol.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        // Best effort, without a word: we may be unwinding.
        let _ = Command::new(format!("{REPO}/tests/cluster/otelcol.sh"))
            .arg("--down")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
