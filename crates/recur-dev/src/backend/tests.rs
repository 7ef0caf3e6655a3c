//! The backend over real HTTP on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::time::Instant;

use super::*;
use crate::net::testing::{Running, http, start};

async fn backend(record: Option<PathBuf>) -> Running {
    start(move |rx| {
        router(
            BackendConfig {
                name: "backend".into(),
                record,
                seed: 42,
            },
            rx,
        )
        .unwrap()
    })
    .await
}

struct Client {
    http: reqwest::Client,
    server: Running,
}

impl Client {
    async fn new() -> Client {
        Client {
            http: http(Duration::from_secs(5)),
            server: backend(None).await,
        }
    }

    async fn post(
        &self,
        path: &str,
        key: Option<&str>,
        body: Value,
    ) -> Result<(u16, Value), reqwest::Error> {
        let answer = self.call(path, key, body).await?;
        Ok((answer.status, answer.body))
    }

    /// A POST and everything the idempotency tests look at in its answer.
    async fn call(
        &self,
        path: &str,
        key: Option<&str>,
        body: Value,
    ) -> Result<Answer, reqwest::Error> {
        call(&self.http, self.server.url(path), key, body).await
    }

    async fn faults(&self, faults: Value) -> u16 {
        self.http
            .post(self.server.url("/_dev/faults"))
            .json(&faults)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn records(&self) -> Vec<Value> {
        self.http
            .get(self.server.url("/_dev/records"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    /// The `Idempotent-Replayed` header.
    replayed: Option<String>,
    content_type: Option<String>,
    body: Value,
}

async fn call(
    http: &reqwest::Client,
    url: String,
    key: Option<&str>,
    body: Value,
) -> Result<Answer, reqwest::Error> {
    let mut request = http
        .post(url)
        .json(&body)
        .header("x-user-id", "ana%20mar%C3%ADa");
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (replayed, content_type) = (header("idempotent-replayed"), header("content-type"));
    Ok(Answer {
        status: response.status().as_u16(),
        replayed,
        content_type,
        body: response.json().await.unwrap_or(Value::Null),
    })
}

fn time(record: &Value, field: &str) -> DateTime<Utc> {
    let text = record[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {record}"));
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

/// Polls the records until `done` holds of them.
async fn records_until(c: &Client, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let records = c.records().await;
        if done(&records) {
            return records;
        }
        assert!(Instant::now() < deadline, "{what}: {records:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn task(title: &str) -> Value {
    json!({"title": title, "user_id": "ana", "scheduled_at": "2025-06-01T09:00:00Z", "due_at": "2025-06-01T09:00:00Z"})
}

#[tokio::test]
async fn tasks_and_notifications_dedupe_on_the_key() {
    let c = Client::new().await;
    let (status, body) = c.post("/api/tasks", Some("k1"), task("a")).await.unwrap();
    assert_eq!(
        (status, body.clone()),
        (201, json!({"id": "1", "idempotency_key": "k1"}))
    );
    let (status, body) = c.post("/api/tasks", Some("k1"), task("a")).await.unwrap();
    assert_eq!(
        (status, body),
        (201, json!({"id": "1", "idempotency_key": "k1"}))
    );
    let (status, body) = c.post("/api/tasks", Some("k2"), task("b")).await.unwrap();
    assert_eq!((status, &body["id"]), (201, &json!("2")));
    // Notifications have their own key space.
    let (status, body) = c
        .post("/api/notifications", Some("k1"), json!({"title": "r"}))
        .await
        .unwrap();
    assert_eq!((status, &body["id"]), (201, &json!("3")));
    assert_eq!(
        c.post("/api/notifications", Some("k1"), json!({"title": "r"}))
            .await
            .unwrap()
            .0,
        201
    );
    // Without a key, or a JSON body: refused, nothing used.
    assert_eq!(c.post("/api/tasks", None, task("c")).await.unwrap().0, 400);
    let raw = c
        .http
        .post(c.server.url("/api/tasks"))
        .header("idempotency-key", "k9")
        .body("no json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    assert_eq!(
        c.post("/api/tasks", Some("k9"), task("c")).await.unwrap().0,
        201
    );
    // Other paths are recorded 404s.
    assert_eq!(
        c.post("/api/users/1", Some("k1"), json!({}))
            .await
            .unwrap()
            .0,
        404
    );

    let accepted: Vec<bool> = c
        .records()
        .await
        .iter()
        .map(|r| r["accepted"].as_bool().unwrap())
        .collect();
    assert_eq!(
        accepted,
        [true, false, true, true, false, false, false, true, false]
    );
}

#[tokio::test]
async fn a_repeat_after_the_answer_replays_it() {
    let c = Client::new().await;
    let first = c.call("/api/tasks", Some("k1"), task("a")).await.unwrap();
    assert_eq!((first.status, first.replayed), (201, None));
    for _ in 0..2 {
        let again = c.call("/api/tasks", Some("k1"), task("a")).await.unwrap();
        assert_eq!(
            (again.status, again.replayed.as_deref(), &again.body),
            (201, Some("true"), &first.body)
        );
    }
    let records = c.records().await;
    let seen: Vec<(bool, &Value, &Value)> = records
        .iter()
        .map(|r| (r["accepted"].as_bool().unwrap(), &r["status"], &r["id"]))
        .collect();
    let (created, id) = (json!(201), json!("1"));
    assert_eq!(
        seen,
        [
            (true, &created, &id),
            (false, &created, &id),
            (false, &created, &id)
        ]
    );
}

#[tokio::test]
async fn a_repeat_while_the_first_is_held_gets_409() {
    let c = Client::new().await;
    // Long enough for the repeat to arrive while the first is held, even on a busy machine.
    assert_eq!(c.faults(json!({"delay_ms": 3000})).await, 200);
    let send = || {
        let (http, url) = (c.http.clone(), c.server.url("/api/tasks"));
        tokio::spawn(async move { call(&http, url, Some("k"), task("a")).await })
    };
    let first = send();
    records_until(&c, "the first request to arrive", |r| r.len() == 1).await;
    let second = send();
    let records = records_until(&c, "the repeat to arrive", |r| r.len() == 2).await;
    assert_eq!(
        (&records[0]["answered_at"], &records[1]["status"]),
        (&Value::Null, &json!(409)),
        "the repeat was decided while the first was in flight"
    );
    let (first, second) = (
        first.await.unwrap().unwrap(),
        second.await.unwrap().unwrap(),
    );
    assert_eq!(
        (first.status, &first.body),
        (201, &json!({"id": "1", "idempotency_key": "k"}))
    );
    assert_eq!(
        (
            second.status,
            second.replayed,
            second.content_type.as_deref(),
            &second.body
        ),
        (
            409,
            None,
            Some("application/problem+json"),
            &json!({"title": "a request with this Idempotency-Key is being processed"})
        )
    );
    let records = c.records().await;
    assert_eq!(
        (
            records[0]["accepted"].as_bool(),
            records[1]["accepted"].as_bool()
        ),
        (Some(true), Some(false))
    );
    // The records show the overlap: the repeat arrived before the first was answered.
    assert!(time(&records[1], "received_at") < time(&records[0], "answered_at"));
    assert!(
        time(&records[0], "answered_at") - time(&records[0], "received_at")
            >= chrono::Duration::milliseconds(3000)
    );
}

#[tokio::test]
async fn a_key_reused_with_another_payload_gets_422() {
    let c = Client::new().await;
    assert_eq!(
        c.post("/api/tasks", Some("k"), task("a")).await.unwrap().0,
        201
    );
    let other = c.call("/api/tasks", Some("k"), task("b")).await.unwrap();
    assert_eq!(
        (other.status, other.content_type.as_deref(), &other.body),
        (
            422,
            Some("application/problem+json"),
            &json!({"title": "Idempotency-Key reused with a different payload"})
        )
    );
    // The first payload still gets its answer replayed.
    let same = c.call("/api/tasks", Some("k"), task("a")).await.unwrap();
    assert_eq!((same.status, &same.body["id"]), (201, &json!("1")));
    let records = c.records().await;
    assert_eq!(records[1]["accepted"], false);
    assert_eq!(records[1]["status"], 422);
    assert_eq!(records[1]["id"], Value::Null);
}

#[tokio::test]
async fn delay_ms_holds_every_request() {
    let c = Client::new().await;
    assert_eq!(c.faults(json!({"delay_ms": 400})).await, 200);
    let held = chrono::Duration::milliseconds(400);
    let start = Instant::now();
    assert_eq!(
        c.post("/api/tasks", Some("k"), task("a")).await.unwrap().0,
        201
    );
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    // Faults and unknown paths are held too.
    assert_eq!(
        c.faults(json!({"delay_ms": 400, "fail_next": 1})).await,
        200
    );
    let start = Instant::now();
    assert_eq!(
        c.post("/api/tasks", Some("k2"), task("a")).await.unwrap().0,
        503
    );
    assert_eq!(
        c.post("/api/nope", Some("k3"), json!({})).await.unwrap().0,
        404
    );
    assert!(
        start.elapsed() >= Duration::from_millis(800),
        "{:?}",
        start.elapsed()
    );
    for r in c.records().await {
        assert!(
            time(&r, "answered_at") - time(&r, "received_at") >= held,
            "{r}"
        );
    }
    // Without a delay, answers are immediate again.
    assert_eq!(c.faults(json!({})).await, 200);
    let start = Instant::now();
    assert_eq!(
        c.post("/api/tasks", Some("k4"), task("a")).await.unwrap().0,
        201
    );
    assert!(
        start.elapsed() < Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_request_whose_client_gave_up_still_completes() {
    let c = Client::new().await;
    assert_eq!(c.faults(json!({"delay_ms": 600})).await, 200);
    let impatient = http(Duration::from_millis(100));
    let err = call(&impatient, c.server.url("/api/tasks"), Some("k"), task("a"))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    // The backend finishes it anyway: the key is not left in flight.
    records_until(&c, "the abandoned request to be answered", |r| {
        r.first().is_some_and(|r| r["answered_at"].is_string())
    })
    .await;
    let again = c.call("/api/tasks", Some("k"), task("a")).await.unwrap();
    assert_eq!(
        (again.status, again.replayed.as_deref(), &again.body["id"]),
        (201, Some("true"), &json!("1"))
    );
}

#[tokio::test]
async fn reminder_sent_is_recorded_and_answered_200() {
    let c = Client::new().await;
    let (status, body) = c
        .post(
            "/api/tasks/17/reminder-sent",
            Some("r1-sent"),
            json!({"reminder_sent": true}),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, body),
        (200, json!({"id": "17", "reminder_sent": true}))
    );
    assert_eq!(
        c.post("/api/tasks/17/reminder-sent", Some("r1-sent"), json!({}))
            .await
            .unwrap()
            .0,
        200
    );
    let records = c.records().await;
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["path"], "/api/tasks/17/reminder-sent");
    assert_eq!(
        (
            records[0]["accepted"].as_bool(),
            records[1]["accepted"].as_bool()
        ),
        (Some(true), Some(false))
    );
}

#[tokio::test]
async fn records_carry_what_the_tests_need() {
    let c = Client::new().await;
    let due = (Utc::now() - chrono::Duration::milliseconds(1500)).trunc_subsecs(3);
    let body = json!({
        "title": "Daily standup",
        "scheduled_at": "2025-06-01T09:00:00Z",
        "due_at": due.to_rfc3339_opts(SecondsFormat::Millis, true),
    });
    c.post(
        "/api/tasks",
        Some("ns/t@2025-06-01T09:00:00Z"),
        body.clone(),
    )
    .await
    .unwrap();
    let records = c.records().await;
    let r = &records[0];
    assert_eq!(r["seq"], 1);
    assert_eq!(r["path"], "/api/tasks");
    assert_eq!(r["key"], "ns/t@2025-06-01T09:00:00Z");
    assert_eq!(r["user_id"], "ana maría");
    assert_eq!(r["accepted"], true);
    assert_eq!(r["status"], 201);
    assert_eq!(r["title"], "Daily standup");
    assert_eq!(r["scheduled_at"], "2025-06-01T09:00:00Z");
    let received = DateTime::parse_from_rfc3339(r["received_at"].as_str().unwrap()).unwrap();
    assert!(r["received_at"].as_str().unwrap().ends_with('Z'));
    assert!(r["answered_at"].as_str().unwrap().ends_with('Z'));
    assert!(time(r, "answered_at") >= received);
    let lag = r["lag_ms"].as_i64().unwrap();
    assert_eq!(lag, (received.with_timezone(&Utc) - due).num_milliseconds());
    assert!(lag >= 1500, "{lag}");
    // DELETE clears the records, not the keys.
    let status = c
        .http
        .delete(c.server.url("/_dev/records"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    assert!(c.records().await.is_empty());
    let again = c
        .call("/api/tasks", Some("ns/t@2025-06-01T09:00:00Z"), body)
        .await
        .unwrap();
    assert_eq!(
        (again.status, again.replayed.as_deref()),
        (201, Some("true"))
    );
}

#[tokio::test]
async fn failures_are_recorded_and_leave_the_key_unused() {
    let c = Client::new().await;
    assert_eq!(c.faults(json!({"fail_next": 2})).await, 200);
    for _ in 0..2 {
        let (status, body) = c.post("/api/tasks", Some("k"), task("a")).await.unwrap();
        assert_eq!((status, body), (503, json!({"error": "injected failure"})));
    }
    assert_eq!(
        c.post("/api/tasks", Some("k"), task("a")).await.unwrap().0,
        201
    );
    let records = c.records().await;
    let faults: Vec<&Value> = records.iter().map(|r| &r["fault"]).collect();
    assert_eq!(faults, [&json!("fail"), &json!("fail"), &Value::Null]);
    assert_eq!(records[0]["accepted"], false);
    assert_eq!(records[2]["accepted"], true);
}

#[tokio::test]
async fn resets_and_down_break_the_connection_but_not_dev_control() {
    let c = Client::new().await;
    for faults in [json!({"reset_rate": 1.0}), json!({"down": true})] {
        assert_eq!(c.faults(faults.clone()).await, 200);
        let err = c
            .post("/api/tasks", Some("k"), task("a"))
            .await
            .unwrap_err();
        assert!(
            !err.is_timeout() && err.status().is_none(),
            "{faults}: {err:?}"
        );
        assert!(
            c.http
                .get(c.server.url("/_dev/records"))
                .send()
                .await
                .unwrap()
                .status()
                .is_success()
        );
    }
    assert_eq!(c.faults(json!({})).await, 200);
    assert_eq!(
        c.post("/api/tasks", Some("k"), task("a")).await.unwrap().0,
        201
    );
    let records = c.records().await;
    let faults: Vec<&Value> = records.iter().map(|r| &r["fault"]).collect();
    assert_eq!(faults, [&json!("reset"), &json!("down"), &Value::Null]);
    assert_eq!(records[0]["status"], Value::Null);
}

#[tokio::test]
async fn timeouts_hang_past_the_client_and_shutdown_ends_them() {
    let c = Client::new().await;
    assert_eq!(
        c.faults(json!({"timeout_rate": 1.0, "hang_ms": 60_000}))
            .await,
        200
    );
    let quick = http(Duration::from_millis(300));
    let err = quick
        .post(c.server.url("/api/tasks"))
        .header("idempotency-key", "k")
        .json(&task("a"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    // A hanging request does not hold up shutdown for its whole hang.
    let slow = tokio::spawn({
        let (http, url) = (c.http.clone(), c.server.url("/api/tasks"));
        async move {
            http.post(url)
                .header("idempotency-key", "k")
                .json(&task("a"))
                .send()
                .await
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.records().await.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the second request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.server.stop().await.unwrap();
    assert!(slow.await.unwrap().is_err(), "a hung request got an answer");
}

#[tokio::test]
async fn rates_are_validated_and_faults_replace_each_other() {
    let c = Client::new().await;
    for bad in [
        json!({"fail_rate": 1.5}),
        json!({"fail_rate": 0.6, "reset_rate": 0.6}),
        json!({"nope": 1}),
        json!({"fail_rate": -0.1}),
        json!({"delay_ms": 120_001}),
    ] {
        assert_eq!(c.faults(bad.clone()).await, 400, "{bad}");
    }
    assert_eq!(c.faults(json!({"delay_ms": 120_000})).await, 200);
    assert_eq!(c.faults(json!({"fail_rate": 0.5, "down": true})).await, 200);
    assert_eq!(c.faults(json!({"fail_rate": 0.25})).await, 200);
    let now: Value = c
        .http
        .get(c.server.url("/_dev/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(now["fail_rate"], 0.25);
    assert_eq!(now["down"], false);
    assert_eq!(now["delay_ms"], Value::Null);
}

#[tokio::test]
async fn fault_rates_are_roughly_honoured() {
    let c = Client::new().await;
    assert_eq!(c.faults(json!({"fail_rate": 0.3})).await, 200);
    let mut failed = 0;
    for i in 0..400 {
        if c.post("/api/tasks", Some(&format!("k{i}")), task("a"))
            .await
            .unwrap()
            .0
            == 503
        {
            failed += 1;
        }
    }
    assert!(
        (80..=160).contains(&failed),
        "{failed} of 400 failed at a 30% rate"
    );
}

#[tokio::test]
async fn record_file_gets_one_json_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.jsonl");
    let server = backend(Some(path.clone())).await;
    let client = http(Duration::from_secs(5));
    for key in ["a", "a", "b"] {
        client
            .post(server.url("/api/tasks"))
            .header("idempotency-key", key)
            .json(&task("t"))
            .send()
            .await
            .unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let keys: Vec<(&str, bool)> = lines
        .iter()
        .map(|l| (l["key"].as_str().unwrap(), l["accepted"].as_bool().unwrap()))
        .collect();
    assert_eq!(keys, [("a", true), ("a", false), ("b", true)]);
    assert!(lines.iter().all(|l| l["answered_at"].is_string()), "{text}");
    let bad = router(
        BackendConfig {
            name: "x".into(),
            record: Some(dir.path().join("no/such/dir.jsonl")),
            seed: 1,
        },
        watch::channel(false).1,
    );
    assert!(bad.unwrap_err().contains("--record"));
}

#[tokio::test]
async fn a_reset_is_a_real_rst() {
    let c = Client::new().await;
    assert_eq!(c.faults(json!({"reset_rate": 1.0})).await, 200);
    let addr = c.server.addr;
    let outcome = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let body = "{}";
        let request = format!(
            "POST /api/tasks HTTP/1.1\r\nhost: x\r\nidempotency-key: k\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut buf = [0u8; 1024];
        stream.read(&mut buf).map_err(|e| e.kind())
    })
    .await
    .unwrap();
    assert_eq!(
        outcome,
        Err(std::io::ErrorKind::ConnectionReset),
        "expected RST, got {outcome:?}"
    );
}

#[tokio::test]
async fn records_the_traceparent_header_when_there_is_one() {
    let c = Client::new().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let status = c
        .http
        .post(c.server.url("/api/tasks"))
        .header("idempotency-key", "t1")
        .header("traceparent", traceparent)
        .json(&task("traced"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 201);
    assert_eq!(
        c.post("/api/tasks", Some("t2"), task("untraced"))
            .await
            .unwrap()
            .0,
        201
    );
    let records = c.records().await;
    assert_eq!(records[0]["traceparent"], traceparent, "{records:#?}");
    assert!(
        records[1].get("traceparent").is_none(),
        "no header, no field: {records:#?}"
    );
}
