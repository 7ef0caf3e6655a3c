//! Tests of the client against canned answers over real HTTP on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::net::SocketAddr;
use std::sync::Mutex;

use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// What the canned server does with one connection.
#[derive(Clone)]
enum Reply {
    /// Writes this HTTP response and closes.
    Raw(String),
    /// Reads the request and never answers (until the test ends).
    Hang,
    /// Reads the request and resets the connection (RST).
    Reset,
    /// Reads the request and closes without answering.
    Close,
}

fn answer(status: u16, content_type: &str, body: &str) -> Reply {
    Reply::Raw(format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ))
}

fn json_answer(status: u16, body: serde_json::Value) -> Reply {
    answer(status, "application/json", &body.to_string())
}

#[derive(Clone, Debug)]
struct Seen {
    /// Request line and headers, header names lower-cased.
    head: String,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            (n.eq_ignore_ascii_case(name)).then(|| v.trim().to_owned())
        })
    }
    fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or_default()
    }
}

/// A loopback server answering connection `i` with `replies[i]` (the last one repeats).
struct Canned {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Canned {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Canned {
    async fn start(replies: Vec<Reply>) -> Canned {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            let mut i = 0;
            let mut held = Vec::new();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let reply = replies[i.min(replies.len() - 1)].clone();
                i += 1;
                let Some(request) = read_request(&mut stream).await else {
                    continue;
                };
                seen2.lock().unwrap().push(request);
                match reply {
                    Reply::Raw(text) => {
                        let _ = write_all(&stream, text.as_bytes()).await;
                    }
                    Reply::Hang => held.push(stream),
                    Reply::Reset => {
                        let _ = stream.set_zero_linger();
                        drop(stream);
                    }
                    Reply::Close => drop(stream),
                }
            }
        });
        Canned { addr, seen, task }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

// tokio's io-util extension traits are not enabled in this crate: use readiness + try_*.
async fn read_some(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn read_request(stream: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let n = read_some(stream, &mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = read_some(stream, &mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Seen {
        head,
        body: buf[head_end..].to_vec(),
    })
}

/// A clock the test moves by hand.
struct FakeClock(Mutex<Instant>);

impl FakeClock {
    fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap();
        *now += by;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap()
    }
}

fn client(endpoint: &str, token: Option<&str>, timeout: Duration) -> DaprClient {
    DaprClient::new(DaprConfig::new(endpoint, token.map(str::to_owned), timeout).unwrap()).unwrap()
}

struct Target {
    app: AppId,
    method: Method,
    body: serde_json::Value,
}

fn target() -> Target {
    Target {
        app: AppId::new("backend").unwrap(),
        method: Method::new("api/tasks").unwrap(),
        body: json!({"title": "Daily standup", "user_id": "u-1"}),
    }
}

impl Target {
    fn invocation<'a>(&'a self, key: &'a str, user: &'a str) -> Invocation<'a> {
        self.invocation_for("team-a", key, user)
    }

    fn invocation_for<'a>(&'a self, ns: &'a str, key: &'a str, user: &'a str) -> Invocation<'a> {
        Invocation {
            app_id: &self.app,
            method: &self.method,
            idempotency_key: key,
            user_id: user,
            namespace: ns,
            body: &self.body,
            trace: None,
        }
    }
}

async fn outcome_of(reply: Reply) -> Outcome {
    let server = Canned::start(vec![reply]).await;
    let t = target();
    client(&server.endpoint(), None, Duration::from_secs(5))
        .invoke(&t.invocation("k", "u"))
        .await
        .outcome
}

const SECRET: &str = "s3cr3t-token-value";

fn key(ns: &str, app: &str) -> (String, String) {
    (ns.to_owned(), app.to_owned())
}

#[tokio::test]
async fn sends_post_to_the_invoke_url_with_headers_and_body() {
    let server = Canned::start(vec![json_answer(201, json!({"id": "17"}))]).await;
    let t = target();
    let c = client(&server.endpoint(), Some(SECRET), Duration::from_secs(5));
    let invoked = c
        .invoke(&t.invocation("default/standup@2025-06-01T09:00:00Z", "ana maría\r\nx: y"))
        .await;
    assert_eq!(
        invoked.outcome,
        Outcome::Delivered {
            status: 201,
            backend_id: Some("17".into()),
            replayed: false,
        }
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(
        req.request_line(),
        "POST /v1.0/invoke/backend/method/api/tasks HTTP/1.1"
    );
    assert_eq!(
        req.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        req.header("idempotency-key").as_deref(),
        Some("default/standup@2025-06-01T09:00:00Z")
    );
    assert_eq!(
        req.header("x-user-id").as_deref(),
        Some("ana%20mar%C3%ADa%0D%0Ax:%20y")
    );
    assert_eq!(req.header("x").as_deref(), None, "a header was injected");
    assert_eq!(req.header("x-recur-namespace").as_deref(), Some("team-a"));
    assert_eq!(req.header("dapr-api-token").as_deref(), Some(SECRET));
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body, t.body);
}

#[tokio::test]
async fn no_token_header_without_a_token() {
    let server = Canned::start(vec![answer(204, "text/plain", "")]).await;
    let t = target();
    let out = client(&server.endpoint(), None, Duration::from_secs(5))
        .invoke(&t.invocation("k", "u"))
        .await;
    assert_eq!(
        out.outcome,
        Outcome::Delivered {
            status: 204,
            backend_id: None,
            replayed: false,
        }
    );
    assert_eq!(server.seen()[0].header("dapr-api-token"), None);
}

#[tokio::test]
async fn the_trace_context_travels_as_w3c_headers() {
    let server = Canned::start(vec![
        answer(204, "text/plain", ""),
        answer(204, "text/plain", ""),
        answer(204, "text/plain", ""),
    ])
    .await;
    let t = target();
    let c = client(&server.endpoint(), None, Duration::from_secs(5));
    let trace = TraceContext {
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        tracestate: Some("vendor=opaque".into()),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
    };
    let with = Invocation {
        trace: Some(&trace),
        ..t.invocation("k", "u")
    };
    c.invoke(&with).await;
    c.invoke(&t.invocation("k", "u")).await;
    let pubsub = PubSubName::new("pubsub").unwrap();
    let topic = Topic::new("occurrences").unwrap();
    let event = json!({"id": "k"});
    c.publish(&Publication {
        pubsub: &pubsub,
        topic: &topic,
        idempotency_key: "k",
        namespace: "team-a",
        event: &event,
        trace: Some(&trace),
    })
    .await;
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    for req in [&seen[0], &seen[2]] {
        assert_eq!(
            req.header("traceparent").as_deref(),
            Some(trace.traceparent.as_str())
        );
        assert_eq!(req.header("tracestate").as_deref(), Some("vendor=opaque"));
    }
    assert_eq!(seen[1].header("traceparent"), None);
    assert_eq!(seen[1].header("tracestate"), None);
}

#[test]
fn header_encoding_keeps_visible_ascii_only() {
    assert_eq!(encode_header("user-42"), "user-42");
    let visible = "!\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~AZaz09";
    assert_eq!(encode_header(visible), visible);
    assert_eq!(
        encode_header("a b%c\r\nd\u{e9}\u{7f}\0"),
        "a%20b%25c%0D%0Ad%C3%A9%7F%00"
    );
    for s in ["\u{202e}x", "é", "tab\there", &"\n".repeat(10)] {
        let e = encode_header(s);
        assert!(e.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{e}");
        assert!(HeaderValue::from_str(&e).is_ok());
    }
}

#[tokio::test]
async fn success_answers_carry_the_backend_id() {
    let cases = [
        (json_answer(201, json!({"id": 42})), Some("42")),
        (json_answer(200, json!({"task_id": "t-9"})), Some("t-9")),
        (
            json_answer(200, json!({"taskId": "a\u{7}b\nc"})),
            Some("ab c"),
        ),
        (
            json_answer(200, json!({"id": true, "task_id": 5})),
            Some("5"),
        ),
        (json_answer(200, json!({"id": ""})), None),
        (json_answer(202, json!(["id"])), None),
        (answer(200, "text/plain", "created"), None),
    ];
    for (reply, id) in cases {
        match outcome_of(reply).await {
            Outcome::Delivered { backend_id, .. } => assert_eq!(backend_id.as_deref(), id),
            other => panic!("{other:?}"),
        }
    }
    let long = "x".repeat(1000);
    match outcome_of(json_answer(201, json!({ "id": long }))).await {
        Outcome::Delivered {
            backend_id: Some(id),
            ..
        } => assert_eq!(id.chars().count(), 128),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn every_answer_class_is_classified() {
    let direct_invoke = |msg: &str| json!({"errorCode": "ERR_DIRECT_INVOKE", "message": msg});
    let retry = |reason| move |o: &Outcome| matches!(o, Outcome::Retryable { reason: r, .. } if *r == reason);
    let rejected = |status| move |o: &Outcome| matches!(o, Outcome::Rejected { status: s, .. } if *s == status);
    type Check = Box<dyn Fn(&Outcome) -> bool>;
    let cases: Vec<(&str, Reply, Check)> = vec![
        (
            "409",
            json_answer(409, json!({"id": "3", "error": "duplicate"})),
            Box::new(|o| *o == Outcome::InProgress),
        ),
        (
            "400",
            json_answer(400, json!({"error": "title missing"})),
            Box::new(rejected(400)),
        ),
        (
            "422",
            answer(422, "text/plain", "nope"),
            Box::new(
                |o| matches!(o, Outcome::KeyReused { message } if message == "HTTP 422: nope"),
            ),
        ),
        (
            "app 404",
            answer(404, "text/plain", "404 page not found"),
            Box::new(rejected(404)),
        ),
        (
            "app 403",
            json_answer(403, json!({"error": "forbidden"})),
            Box::new(rejected(403)),
        ),
        (
            "404 non-Dapr code",
            json_answer(404, json!({"errorCode": "not_found"})),
            Box::new(rejected(404)),
        ),
        (
            "redirect",
            answer(302, "text/plain", ""),
            Box::new(rejected(302)),
        ),
        (
            "sidecar 403",
            json_answer(
                403,
                direct_invoke(
                    "failed to invoke, id: backend, err: rpc error: code = PermissionDenied",
                ),
            ),
            Box::new(retry(RetryReason::SidecarRefused)),
        ),
        (
            "sidecar 404",
            json_answer(
                404,
                direct_invoke(
                    "failed getting app id either from the URL path or the header dapr-app-id",
                ),
            ),
            Box::new(retry(RetryReason::SidecarRefused)),
        ),
        (
            "401",
            answer(401, "text/plain; charset=utf-8", "invalid api token\n"),
            Box::new(retry(RetryReason::Unauthorized)),
        ),
        (
            "408",
            answer(408, "text/plain", ""),
            Box::new(retry(RetryReason::Timeout)),
        ),
        (
            "429",
            answer(429, "text/plain", "slow down"),
            Box::new(retry(RetryReason::RateLimited)),
        ),
        (
            "sidecar 500",
            json_answer(
                500,
                direct_invoke("failed to invoke, id: backend, err: connection refused"),
            ),
            Box::new(retry(RetryReason::SidecarUnavailable)),
        ),
        (
            "not ready",
            json_answer(500, direct_invoke("invoke API is not ready")),
            Box::new(retry(RetryReason::SidecarUnavailable)),
        ),
        (
            "500",
            answer(500, "text/plain", "boom"),
            Box::new(retry(RetryReason::ServerError)),
        ),
        (
            "502",
            answer(502, "text/plain", ""),
            Box::new(retry(RetryReason::ServerError)),
        ),
        (
            "503",
            json_answer(503, json!({"error": "unavailable"})),
            Box::new(retry(RetryReason::ServerError)),
        ),
    ];
    for (name, reply, check) in cases {
        let outcome = outcome_of(reply).await;
        assert!(check(&outcome), "{name}: {outcome:?}");
    }
}

#[tokio::test]
async fn messages_say_what_happened() {
    match outcome_of(json_answer(
        500,
        json!({"errorCode": "ERR_DIRECT_INVOKE", "message": "invoke API is not ready"}),
    ))
    .await
    {
        Outcome::Retryable { message, .. } => assert_eq!(
            message,
            "HTTP 500 ERR_DIRECT_INVOKE: invoke API is not ready"
        ),
        other => panic!("{other:?}"),
    }
    match outcome_of(json_answer(400, json!({"error": "title missing"}))).await {
        Outcome::Rejected { message, .. } => assert_eq!(message, "HTTP 400: title missing"),
        other => panic!("{other:?}"),
    }
    match outcome_of(answer(502, "text/plain", "")).await {
        Outcome::Retryable { message, .. } => assert_eq!(message, "HTTP 502: Bad Gateway"),
        other => panic!("{other:?}"),
    }
    match outcome_of(answer(401, "text/plain", "invalid api token\n")).await {
        Outcome::Retryable { message, .. } => assert!(
            message.ends_with("HTTP 401: invalid api token"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn network_text_is_sanitized_and_short() {
    let nasty = format!(
        "line1\r\nSet-Cookie: x\u{1b}[2J\u{0}{}",
        "y".repeat(100_000)
    );
    for status in [400, 503] {
        let outcome = outcome_of(answer(status, "text/plain", &nasty)).await;
        let message = match outcome {
            Outcome::Rejected { message, .. } | Outcome::Retryable { message, .. } => message,
            other => panic!("{other:?}"),
        };
        assert!(message.chars().count() <= 256, "{}", message.len());
        assert!(!message.chars().any(char::is_control), "{message:?}");
        assert!(
            message.starts_with(&format!("HTTP {status}: line1 Set-Cookie: x[2J")),
            "{message}"
        );
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let elsewhere = Canned::start(vec![json_answer(201, json!({"id": "1"}))]).await;
    let location = format!("{}/v1.0/state/store", elsewhere.endpoint());
    let redirect = Reply::Raw(format!(
        "HTTP/1.1 307 X\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    ));
    let outcome = outcome_of(redirect).await;
    assert!(
        matches!(outcome, Outcome::Rejected { status: 307, .. }),
        "{outcome:?}"
    );
    assert!(elsewhere.seen().is_empty(), "the redirect was followed");
}

#[tokio::test]
async fn transport_failures_are_retryable() {
    // Refused: a port that was just free.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let t = target();
    let c = client(
        &format!("http://127.0.0.1:{port}"),
        Some(SECRET),
        Duration::from_secs(5),
    );
    match c.invoke(&t.invocation("k", "u")).await.outcome {
        Outcome::Retryable {
            reason: RetryReason::Connection,
            message,
            retry_after: None,
        } => {
            assert!(
                message.starts_with(&format!(
                    "cannot connect to the Dapr sidecar at http://127.0.0.1:{port}"
                )),
                "{message}"
            );
            assert!(!message.contains(SECRET));
        }
        other => panic!("{other:?}"),
    }
    for reply in [Reply::Reset, Reply::Close] {
        let outcome = outcome_of(reply).await;
        assert!(
            matches!(
                outcome,
                Outcome::Retryable {
                    reason: RetryReason::Connection,
                    ..
                }
            ),
            "{outcome:?}"
        );
    }
    let hanging = Canned::start(vec![Reply::Hang]).await;
    let c = client(&hanging.endpoint(), None, Duration::from_millis(300));
    let invoked = c.invoke(&t.invocation("k", "u")).await;
    assert!(
        matches!(
            invoked.outcome,
            Outcome::Retryable {
                reason: RetryReason::Timeout,
                ..
            }
        ),
        "{invoked:?}"
    );
    assert!(invoked.elapsed >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_truncated_success_still_counts_as_delivered() {
    let reply =
        Reply::Raw("HTTP/1.1 201 Created\r\ncontent-length: 1000\r\n\r\n{\"id\": \"7\"".into());
    let outcome = outcome_of(reply).await;
    assert_eq!(
        outcome,
        Outcome::Delivered {
            status: 201,
            backend_id: None,
            replayed: false,
        }
    );
    let big = format!("{{\"id\": \"9\", \"pad\": \"{}\"}}", "p".repeat(200_000));
    assert!(matches!(
        outcome_of(answer(200, "application/json", &big)).await,
        Outcome::Delivered { status: 200, .. }
    ));
}

#[tokio::test]
async fn the_breaker_stops_calls_and_a_probe_closes_it() {
    let server = Canned::start(vec![
        answer(503, "text/plain", ""),
        answer(503, "text/plain", ""),
        json_answer(201, json!({"id": "1"})),
    ])
    .await;
    let clock = Arc::new(FakeClock(Mutex::new(Instant::now())));
    let config = DaprConfig::new(&server.endpoint(), None, Duration::from_secs(5)).unwrap();
    let breaker = BreakerConfig {
        failure_threshold: 2,
        cool_down: Duration::from_secs(30),
        probe_timeout: Duration::from_secs(5),
        idle_after: Duration::from_secs(600),
    };
    let c = DaprClient::with_breaker(config, breaker, clock.clone()).unwrap();
    let t = target();
    for _ in 0..2 {
        assert!(
            c.invoke(&t.invocation("k", "u"))
                .await
                .outcome
                .is_retryable()
        );
    }
    assert_eq!(
        c.breaker_states(),
        vec![(key("team-a", "backend"), BreakerState::Open)]
    );
    clock.advance(Duration::from_secs(10));
    let refused = c.invoke(&t.invocation("k", "u")).await;
    assert_eq!(
        refused,
        Invoked {
            outcome: Outcome::CircuitOpen {
                retry_in: Duration::from_secs(20),
                spread: Duration::from_secs(5),
            },
            elapsed: Duration::ZERO
        }
    );
    assert_eq!(server.seen().len(), 2, "an open breaker let a call through");
    // Another app id has its own breaker.
    let other = Target {
        app: AppId::new("notification-service").unwrap(),
        ..target()
    };
    assert!(matches!(
        c.invoke(&other.invocation("k", "u")).await.outcome,
        Outcome::Delivered { .. }
    ));
    clock.advance(Duration::from_secs(20));
    assert_eq!(
        c.breaker_states()[0],
        (key("team-a", "backend"), BreakerState::HalfOpen)
    );
    assert!(matches!(
        c.invoke(&t.invocation("k", "u")).await.outcome,
        Outcome::Delivered { .. }
    ));
    assert_eq!(
        c.breaker_states()[0],
        (key("team-a", "backend"), BreakerState::Closed)
    );
}

#[tokio::test]
async fn rejections_do_not_open_the_breaker() {
    let server = Canned::start(vec![json_answer(400, json!({"error": "bad"}))]).await;
    let config = DaprConfig::new(&server.endpoint(), None, Duration::from_secs(5)).unwrap();
    let breaker = BreakerConfig {
        failure_threshold: 1,
        ..BreakerConfig::default()
    };
    let c = DaprClient::with_breaker(config, breaker, Arc::new(SystemClock)).unwrap();
    let t = target();
    for _ in 0..3 {
        assert!(matches!(
            c.invoke(&t.invocation("k", "u")).await.outcome,
            Outcome::Rejected { .. }
        ));
    }
    assert_eq!(
        c.breaker_states(),
        vec![(key("team-a", "backend"), BreakerState::Closed)]
    );
}

#[tokio::test]
async fn outbound_health_needs_204() {
    let ok = Canned::start(vec![answer(204, "text/plain", "")]).await;
    client(&ok.endpoint(), Some(SECRET), Duration::from_secs(5))
        .outbound_healthy()
        .await
        .unwrap();
    assert_eq!(
        ok.seen()[0].request_line(),
        "GET /v1.0/healthz/outbound HTTP/1.1"
    );

    let not_ready =
        Canned::start(vec![json_answer(500, json!({"errorCode": "ERR_OUTBOUND_HEALTH_NOT_READY", "message": "dapr outbound is not ready"}))])
            .await;
    let err = client(&not_ready.endpoint(), None, Duration::from_secs(5))
        .outbound_healthy()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("HTTP 500 ERR_OUTBOUND_HEALTH_NOT_READY: dapr outbound is not ready"),
        "{err}"
    );

    let ok_but_200 = Canned::start(vec![answer(200, "text/plain", "ok")]).await;
    assert!(
        client(&ok_but_200.endpoint(), None, Duration::from_secs(5))
            .outbound_healthy()
            .await
            .is_err()
    );

    let hanging = Canned::start(vec![Reply::Hang]).await;
    let err = client(&hanging.endpoint(), None, Duration::from_millis(200))
        .outbound_healthy()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("timeout"), "{err}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert!(
        client(
            &format!("http://127.0.0.1:{port}"),
            None,
            Duration::from_secs(5)
        )
        .outbound_healthy()
        .await
        .is_err()
    );
}

#[test]
fn construction_checks_the_public_fields_and_hides_the_token() {
    let c = client(
        "http://127.0.0.1:3500",
        Some(SECRET),
        Duration::from_secs(1),
    );
    assert!(!format!("{c:?}").contains(SECRET));
    let bad = DaprConfig {
        endpoint: "https://x".into(),
        api_token: None,
        timeout: Duration::from_secs(1),
    };
    assert!(DaprClient::new(bad).is_err());
    let bad = DaprConfig {
        endpoint: "http://127.0.0.1:1".into(),
        api_token: Some("a\nb".into()),
        timeout: Duration::from_secs(1),
    };
    let err = DaprClient::new(bad).unwrap_err();
    assert_eq!(err, DaprError::InvalidToken);
    assert!(!err.to_string().contains("a\nb"));
}

#[test]
fn pure_classification_edges() {
    assert_eq!(
        classify(299, b"", None),
        Outcome::Delivered {
            status: 299,
            backend_id: None,
            replayed: false,
        }
    );
    assert!(matches!(
        classify(100, b"", None),
        Outcome::Rejected { status: 100, .. }
    ));
    assert!(matches!(
        classify(600, b"", None),
        Outcome::Retryable {
            reason: RetryReason::ServerError,
            ..
        }
    ));
    // Only Dapr-shaped codes count as sidecar errors.
    assert!(matches!(
        classify(403, br#"{"errorCode":"ERR_direct"}"#, None),
        Outcome::Rejected { .. }
    ));
    assert!(matches!(
        classify(403, br#"{"errorCode":"ERR_DIRECT_INVOKE"}"#, None),
        Outcome::Retryable { .. }
    ));
    assert!(matches!(
        classify(404, br#"{"errorCode":42}"#, None),
        Outcome::Rejected { .. }
    ));
}

/// The draft's replay of a first answer: same status and id, marked so metrics tell it apart.
#[tokio::test]
async fn a_replayed_answer_is_delivered_and_marked() {
    let body = json!({"id": "5"}).to_string();
    let reply = Reply::Raw(format!(
        "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nidempotent-replayed: true\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    let outcome = outcome_of(reply).await;
    assert_eq!(
        outcome,
        Outcome::Delivered {
            status: 201,
            backend_id: Some("5".into()),
            replayed: true,
        }
    );
    assert_eq!(outcome.label(), "duplicate");
}

/// An answer with a `Retry-After` header.
fn answer_retry_after(status: u16, retry_after: &str) -> Reply {
    Reply::Raw(format!(
        "HTTP/1.1 {status} X\r\nretry-after: {retry_after}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    ))
}

fn retry_after_of(outcome: &Outcome) -> Option<Duration> {
    match outcome {
        Outcome::Retryable { retry_after, .. } => *retry_after,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn retry_after_is_honoured_on_429_and_503_only() {
    let secs = |s| Some(Duration::from_secs(s));
    let cases = [
        (answer_retry_after(429, "120"), secs(120)),
        (answer_retry_after(503, "7"), secs(7)),
        (answer_retry_after(503, "86400"), secs(3600)),
        (
            answer_retry_after(429, "Fri, 31 Dec 9999 23:59:59 GMT"),
            secs(3600),
        ),
        (
            answer_retry_after(503, "Sun, 06 Nov 1994 08:49:37 GMT"),
            secs(0),
        ),
        (answer_retry_after(429, "soon"), None),
        (answer_retry_after(500, "30"), None),
        (answer_retry_after(502, "30"), None),
        (answer(429, "text/plain", "slow down"), None),
    ];
    for (reply, expected) in cases {
        let outcome = outcome_of(reply).await;
        assert_eq!(retry_after_of(&outcome), expected, "{outcome:?}");
    }
    // A Dapr 503 carries it too.
    let dapr = Reply::Raw(format!(
        "HTTP/1.1 503 X\r\nretry-after: 9\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        r#"{"errorCode":"ERR_DIRECT_INVOKE"}"#.len(),
        r#"{"errorCode":"ERR_DIRECT_INVOKE"}"#
    ));
    let outcome = outcome_of(dapr).await;
    assert!(
        matches!(
            outcome,
            Outcome::Retryable {
                reason: RetryReason::SidecarUnavailable,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(retry_after_of(&outcome), secs(9));
}

fn client_with(endpoint: &str, threshold: u32, clock: Arc<dyn Clock>) -> DaprClient {
    let config = DaprConfig::new(endpoint, None, Duration::from_secs(5)).unwrap();
    let breaker = BreakerConfig {
        failure_threshold: threshold,
        cool_down: Duration::from_secs(30),
        probe_timeout: Duration::from_secs(5),
        idle_after: Duration::from_secs(600),
    };
    DaprClient::with_breaker(config, breaker, clock).unwrap()
}

#[tokio::test]
async fn one_tenants_failures_do_not_open_anothers_breaker() {
    let server = Canned::start(vec![answer(503, "text/plain", "")]).await;
    let clock = Arc::new(FakeClock(Mutex::new(Instant::now())));
    let c = client_with(&server.endpoint(), 1, clock);
    let t = target();
    assert!(
        c.invoke(&t.invocation_for("team-a", "k", "u"))
            .await
            .outcome
            .is_retryable()
    );
    assert!(matches!(
        c.invoke(&t.invocation_for("team-a", "k", "u"))
            .await
            .outcome,
        Outcome::CircuitOpen { .. }
    ));
    // The same app, for another tenant: called.
    assert!(
        c.invoke(&t.invocation_for("team-b", "k", "u"))
            .await
            .outcome
            .is_retryable()
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].header("x-recur-namespace").as_deref(),
        Some("team-b")
    );
    assert_eq!(
        c.breaker_states(),
        vec![
            (key("team-a", "backend"), BreakerState::Open),
            (key("team-b", "backend"), BreakerState::Open)
        ]
    );
}

#[tokio::test]
async fn refusals_for_the_caller_do_not_count_against_the_breaker() {
    let dapr_error = json!({"errorCode": "ERR_DIRECT_INVOKE", "message": "denied"});
    let server = Canned::start(vec![
        answer(401, "text/plain", "invalid api token"),
        json_answer(403, dapr_error.clone()),
        json_answer(403, json!({"error": "forbidden"})),
        answer_retry_after(429, "1"),
        answer(401, "text/plain", "invalid api token"),
        json_answer(404, dapr_error),
    ])
    .await;
    let clock = Arc::new(FakeClock(Mutex::new(Instant::now())));
    let c = client_with(&server.endpoint(), 1, clock);
    let t = target();
    let expected = [
        Some(RetryReason::Unauthorized),
        Some(RetryReason::SidecarRefused),
        None,
        Some(RetryReason::RateLimited),
        Some(RetryReason::Unauthorized),
    ];
    for reason in expected {
        let outcome = c.invoke(&t.invocation("k", "u")).await.outcome;
        match (reason, &outcome) {
            (Some(reason), Outcome::Retryable { reason: r, .. }) => assert_eq!(*r, reason),
            (None, Outcome::Rejected { status: 403, .. }) => {}
            _ => panic!("{reason:?}: {outcome:?}"),
        }
        assert_eq!(
            c.breaker_states(),
            vec![(key("team-a", "backend"), BreakerState::Closed)],
            "after {outcome:?}"
        );
    }
    // A Dapr 404 (no route to the app id) counts: with a threshold of 1 it opens.
    let outcome = c.invoke(&t.invocation("k", "u")).await.outcome;
    assert!(
        matches!(
            outcome,
            Outcome::Retryable {
                reason: RetryReason::SidecarRefused,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(
        c.breaker_states(),
        vec![(key("team-a", "backend"), BreakerState::Open)]
    );
}

#[test]
fn verdicts_follow_the_status_table() {
    let retryable = |reason| Outcome::Retryable {
        reason,
        message: String::new(),
        retry_after: None,
    };
    let rejected = |status| Outcome::Rejected {
        status,
        message: String::new(),
    };
    let cases = [
        (
            retryable(RetryReason::Unauthorized),
            Some(401),
            Verdict::Neutral,
        ),
        (
            retryable(RetryReason::SidecarRefused),
            Some(403),
            Verdict::Neutral,
        ),
        (
            retryable(RetryReason::SidecarRefused),
            Some(404),
            Verdict::Failing,
        ),
        (
            retryable(RetryReason::RateLimited),
            Some(429),
            Verdict::Neutral,
        ),
        (retryable(RetryReason::Timeout), Some(408), Verdict::Failing),
        (retryable(RetryReason::Timeout), None, Verdict::Failing),
        (retryable(RetryReason::Connection), None, Verdict::Failing),
        (
            retryable(RetryReason::ServerError),
            Some(503),
            Verdict::Failing,
        ),
        (
            retryable(RetryReason::SidecarUnavailable),
            Some(500),
            Verdict::Failing,
        ),
        (rejected(403), Some(403), Verdict::Neutral),
        (rejected(400), Some(400), Verdict::Healthy),
        (Outcome::InProgress, Some(409), Verdict::Healthy),
        (classify(201, b"", None), Some(201), Verdict::Healthy),
    ];
    for (outcome, status, expected) in cases {
        assert_eq!(
            verdict(&outcome, status),
            expected,
            "{outcome:?} {status:?}"
        );
    }
}

#[tokio::test]
async fn idle_breakers_are_evicted_open_ones_too() {
    let ok = Canned::start(vec![json_answer(201, json!({"id": "1"}))]).await;
    let clock = Arc::new(FakeClock(Mutex::new(Instant::now())));
    let c = client_with(&ok.endpoint(), 1, clock.clone());
    let t = target();
    c.invoke(&t.invocation_for("team-a", "k", "u")).await;
    assert!(c.evict_idle().is_empty());
    clock.advance(Duration::from_secs(600));
    assert_eq!(c.evict_idle(), vec![key("team-a", "backend")]);
    assert!(c.breaker_states().is_empty());

    let down = Canned::start(vec![answer(503, "text/plain", "")]).await;
    let c = client_with(&down.endpoint(), 1, clock.clone());
    c.invoke(&t.invocation_for("team-b", "k", "u")).await;
    clock.advance(Duration::from_secs(599));
    assert!(c.evict_idle().is_empty(), "evicted before it was idle");
    assert_eq!(
        c.breaker_states(),
        vec![(key("team-b", "backend"), BreakerState::HalfOpen)]
    );
    // Nothing asked for it for 10 minutes: no task calls that app any more.
    clock.advance(Duration::from_secs(1));
    assert_eq!(c.evict_idle(), vec![key("team-b", "backend")]);
    assert!(c.breaker_states().is_empty());
}

#[test]
fn every_outcome_label_is_listed() {
    let outcomes = [
        classify(201, b"", None),
        Outcome::Delivered {
            status: 200,
            backend_id: None,
            replayed: true,
        },
        Outcome::InProgress,
        classify(422, b"", None),
        classify(400, b"", None),
        classify(500, b"", None),
        Outcome::CircuitOpen {
            retry_in: Duration::ZERO,
            spread: Duration::ZERO,
        },
    ];
    let labels: std::collections::BTreeSet<_> = outcomes.iter().map(Outcome::label).collect();
    assert_eq!(labels, Outcome::LABELS.into_iter().collect());
}
