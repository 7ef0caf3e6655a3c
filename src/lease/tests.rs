//! Unit tests of the lease: the fencing arithmetic, and the elector against a mock API server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{Handle, SendResponse};

const S: Duration = Duration::from_secs(1);

#[test]
fn margin_is_a_fifth_or_two_seconds() {
    assert_eq!(safety_margin(15 * S), 3 * S);
    assert_eq!(safety_margin(5 * S), 2 * S);
    assert_eq!(safety_margin(60 * S), 12 * S);
}

#[test]
fn deadline_counts_from_send_time_minus_margin() {
    let sent = Instant::now();
    assert_eq!(leadership_deadline(sent, 15 * S, 3 * S), sent + 12 * S);
}

#[test]
fn deadline_allows_only_before_it() {
    let now = Instant::now();
    let deadline = Some(now + 10 * S);
    assert!(deadline_allows(deadline, now, Duration::ZERO));
    assert!(deadline_allows(deadline, now, 10 * S));
    assert!(!deadline_allows(deadline, now, 11 * S));
    assert!(!deadline_allows(deadline, now + 11 * S, Duration::ZERO));
    assert!(!deadline_allows(None, now, Duration::ZERO));
}

#[test]
fn expiry_is_judged_on_local_observation() {
    let seen = Instant::now();
    let d = observed_duration(Some(15), 60 * S);
    assert_eq!(d, 15 * S);
    assert!(!observation_expired(seen, d, seen + 15 * S));
    assert!(observation_expired(seen, d, seen + 16 * S));
    // A clock earlier than the observation never counts as expired.
    assert!(!observation_expired(seen + 5 * S, d, seen));
    assert_eq!(observed_duration(None, 60 * S), 60 * S);
    assert_eq!(observed_duration(Some(0), 60 * S), 60 * S);
}

#[test]
fn a_hold_lasts_its_duration_from_our_first_sight_of_its_version() {
    let lease = |holder: &str, secs: Option<i32>, rv: &str| Lease {
        metadata: ObjectMeta {
            resource_version: Some(rv.into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: secs,
            ..LeaseSpec::default()
        }),
    };
    let t0 = Instant::now();
    let held = lease("a", Some(15), "1");
    let seen = Observation::of(&held, None, t0);
    assert_eq!(seen.at, t0);
    // The same version seen later keeps the first sight; a write starts it again.
    assert_eq!(Observation::of(&held, Some(&seen), t0 + 9 * S).at, t0);
    let renewed = lease("a", Some(15), "2");
    assert_eq!(
        Observation::of(&renewed, Some(&seen), t0 + 9 * S).at,
        t0 + 9 * S
    );
    assert_eq!(
        live_hold(&held, t0, 60 * S, t0 + 15 * S),
        Some(("a".to_owned(), t0 + 15 * S))
    );
    assert_eq!(live_hold(&held, t0, 60 * S, t0 + 16 * S), None);
    // No duration stated: ours; nobody named: nobody holds it.
    assert!(live_hold(&lease("a", None, "1"), t0, 60 * S, t0 + 59 * S).is_some());
    assert_eq!(live_hold(&lease("", Some(15), "1"), t0, 60 * S, t0), None);
}

/// The fencing invariant: the holder stops before a candidate that observed the holder's last
/// write (at or after it was sent) can consider the lease expired, for any network delay.
#[test]
fn holder_stops_before_any_observer_can_take_over() {
    let base = Instant::now();
    for lease_secs in [3u32, 5, 15, 60, 137] {
        let duration = lease_secs * S;
        let margin = safety_margin(duration);
        for delay_ms in [0u64, 1, 500, 5_000, 120_000] {
            let sent = base;
            let observed = sent + Duration::from_millis(delay_ms);
            let deadline = leadership_deadline(sent, duration, margin);
            let secs = i32::try_from(lease_secs).unwrap();
            let other_duration = observed_duration(Some(secs), Duration::ZERO);
            // The first instant the observer may take over:
            let takeover = observed + other_duration;
            assert!(observation_expired(
                observed,
                other_duration,
                takeover + Duration::from_nanos(1)
            ));
            assert!(
                deadline + margin <= takeover,
                "{lease_secs}s / {delay_ms}ms"
            );
            assert!(!deadline_allows(Some(deadline), takeover, Duration::ZERO));
        }
    }
}

#[tokio::test]
async fn config_must_leave_room_for_renewals() {
    let client = mock_client().0;
    let mut cfg = LeaseConfig::new("recur", "default", "me");
    assert!(LeaseElector::new(client.clone(), cfg.clone()).is_ok());
    cfg.renew_period = 12 * S; // 15 s lease − 3 s margin leaves 12 s: not enough
    assert!(matches!(
        LeaseElector::new(client.clone(), cfg.clone()),
        Err(LeaseError::InvalidConfig(_))
    ));
    cfg = LeaseConfig::new("recur", "default", "");
    assert!(LeaseElector::new(client, cfg).is_err());
}

#[test]
fn identities_differ() {
    let a = default_identity();
    assert!(!a.is_empty());
    assert!(a.contains(&std::process::id().to_string()));
    // RandomState is seeded per instance, so two identities are very unlikely to collide.
    let b = default_identity();
    let c = default_identity();
    assert!(a != b || b != c);
}

#[test]
fn always_is_leader() {
    let l = Leadership::always();
    assert!(l.is_leader() && l.valid_for(3600 * S));
    assert!(*l.changes().borrow());
    let f = Leadership::follower();
    assert!(!f.is_leader());
    f.set_deadline(Some(Instant::now() + 10 * S));
    assert!(f.is_leader() && !f.valid_for(11 * S));
    f.set_deadline(Some(Instant::now() - S));
    assert!(
        !f.is_leader(),
        "a passed deadline means not leader, with no task running"
    );
}

// ---- mock API server ----

type Mock = Handle<Request<Body>, Response<Body>>;

fn mock_client() -> (kube::Client, Mock) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

const LEASE_URL: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases";

async fn next(handle: &mut Mock) -> (Method, String, Value, SendResponse<Response<Body>>) {
    let (req, send) = tokio::time::timeout(10 * S, handle.next_request())
        .await
        .expect("timed out waiting for a request")
        .expect("the client was dropped");
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (method, path, body, send)
}

fn respond(send: SendResponse<Response<Body>>, code: StatusCode, body: &Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(bytes))
            .unwrap(),
    );
}

fn status(code: u16, reason: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": reason})
}

fn with_rv(mut lease: Value, rv: &str) -> Value {
    lease["metadata"]["resourceVersion"] = json!(rv);
    lease
}

fn other_holders_lease(rv: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "recur", "namespace": "default", "resourceVersion": rv},
        "spec": {"holderIdentity": "other", "leaseDurationSeconds": 1, "leaseTransitions": 4,
                 "acquireTime": "2020-01-01T00:00:00.000000Z", "renewTime": "2020-01-01T00:00:00.000000Z"}
    })
}

fn test_config() -> LeaseConfig {
    LeaseConfig {
        lease_duration: 60 * S,
        renew_period: 30 * S, // no renewal happens during a test
        retry_period: Duration::from_millis(100),
        ..LeaseConfig::new("recur", "default", "me")
    }
}

/// `request` must release the lease (an empty holder, written over resourceVersion `from`);
/// it is answered as accepted.
fn release_answered(request: (Method, String, Value, SendResponse<Response<Body>>), from: &str) {
    let (method, _, body, send) = request;
    assert_eq!(method, Method::PUT);
    assert_eq!(body["metadata"]["resourceVersion"], from);
    assert_eq!(body["spec"]["holderIdentity"], "");
    respond(
        send,
        StatusCode::OK,
        &with_rv(body, &format!("{from}-released")),
    );
}

async fn wait_for(rx: &mut watch::Receiver<bool>, want: bool) {
    tokio::time::timeout(10 * S, rx.wait_for(|v| *v == want))
        .await
        .expect("timed out waiting for leadership change")
        .unwrap();
}

#[tokio::test]
async fn creates_the_lease_when_absent_and_releases_on_shutdown() {
    let (client, mut handle) = mock_client();
    let elector = LeaseElector::new(client, test_config()).unwrap();
    let leadership = elector.leadership();
    let mut changes = leadership.changes();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(elector.run(async move {
        let _ = stopped.await;
    }));

    let (method, path, _, send) = next(&mut handle).await;
    assert_eq!(
        (method, path.as_str()),
        (Method::GET, &*format!("{LEASE_URL}/recur"))
    );
    respond(send, StatusCode::NOT_FOUND, &status(404, "NotFound"));

    let (method, path, body, send) = next(&mut handle).await;
    assert_eq!((method, path.as_str()), (Method::POST, LEASE_URL));
    assert_eq!(body["spec"]["holderIdentity"], "me");
    assert_eq!(body["spec"]["leaseDurationSeconds"], 60);
    assert_eq!(body["spec"]["leaseTransitions"], 0);
    assert!(body["spec"]["acquireTime"].is_string() && body["spec"]["renewTime"].is_string());
    assert!(
        !leadership.is_leader(),
        "not leader before the create succeeded"
    );
    respond(send, StatusCode::CREATED, &with_rv(body, "1"));

    wait_for(&mut changes, true).await;
    assert!(leadership.is_leader());
    assert!(leadership.valid_for(40 * S) && !leadership.valid_for(49 * S));

    stop.send(()).unwrap();
    let (method, path, body, send) = next(&mut handle).await;
    assert_eq!(
        (method, path.as_str()),
        (Method::PUT, &*format!("{LEASE_URL}/recur"))
    );
    assert!(
        !leadership.is_leader(),
        "leadership ends before the release is sent"
    );
    assert_eq!(body["metadata"]["resourceVersion"], "1");
    assert_eq!(body["spec"]["holderIdentity"], "");
    assert_eq!(body["spec"]["leaseDurationSeconds"], 1);
    respond(send, StatusCode::OK, &with_rv(body, "2"));
    task.await.unwrap().unwrap();
    assert!(!*changes.borrow());
}

#[tokio::test]
async fn takes_over_only_after_local_expiry() {
    let (client, mut handle) = mock_client();
    let elector = LeaseElector::new(client, test_config()).unwrap();
    let leadership = elector.leadership();
    let mut changes = leadership.changes();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(elector.run(async move {
        let _ = stopped.await;
    }));

    // The lease's timestamps are years old, yet only local observation counts.
    let first_seen = Instant::now();
    let mut gets = 0;
    let takeover = loop {
        let (method, _, body, send) = next(&mut handle).await;
        if method == Method::PUT {
            break (body, send);
        }
        assert_eq!(method, Method::GET);
        gets += 1;
        respond(send, StatusCode::OK, &other_holders_lease("5"));
    };
    assert!(
        first_seen.elapsed() > S,
        "took over before the 1 s lease expired locally"
    );
    assert!(gets >= 2, "observed more than once before taking over");
    let (body, send) = takeover;
    assert_eq!(body["metadata"]["resourceVersion"], "5");
    assert_eq!(body["spec"]["holderIdentity"], "me");
    assert_eq!(body["spec"]["leaseTransitions"], 5);
    assert_eq!(body["spec"]["leaseDurationSeconds"], 60);
    assert!(!leadership.is_leader());
    respond(send, StatusCode::OK, &with_rv(body, "6"));
    wait_for(&mut changes, true).await;

    stop.send(()).unwrap();
    release_answered(next(&mut handle).await, "6");
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn conflict_on_takeover_goes_back_to_observing() {
    let (client, mut handle) = mock_client();
    let elector = LeaseElector::new(client, test_config()).unwrap();
    let leadership = elector.leadership();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(elector.run(async move {
        let _ = stopped.await;
    }));

    // A released lease (empty holder) is taken at once…
    let (method, _, _, send) = next(&mut handle).await;
    assert_eq!(method, Method::GET);
    let mut released = other_holders_lease("8");
    released["spec"]["holderIdentity"] = json!("");
    respond(send, StatusCode::OK, &released);
    let (method, _, body, send) = next(&mut handle).await;
    assert_eq!(method, Method::PUT);
    assert_eq!(body["metadata"]["resourceVersion"], "8");
    // …but someone else won the race.
    respond(send, StatusCode::CONFLICT, &status(409, "Conflict"));

    let (method, _, _, send) = next(&mut handle).await;
    assert_eq!(method, Method::GET, "after a conflict we observe again");
    assert!(!leadership.is_leader());
    let mut won = other_holders_lease("9");
    won["spec"]["holderIdentity"] = json!("third");
    won["spec"]["leaseDurationSeconds"] = json!(60);
    respond(send, StatusCode::OK, &won);

    // While "third" holds a fresh lease we only read.
    let (method, _, _, send) = next(&mut handle).await;
    assert_eq!(method, Method::GET);
    assert!(!leadership.is_leader());
    stop.send(()).unwrap();
    drop(send); // the in-flight read is abandoned; nothing to release
    task.await.unwrap().unwrap();
    assert!(!leadership.is_leader());
}

/// Answers every request with a 500 until the elector task ends; returns its result.
async fn fail_until_done(
    handle: &mut Mock,
    task: tokio::task::JoinHandle<Result<(), LeaseError>>,
) -> Result<(), LeaseError> {
    let mut task = task;
    loop {
        tokio::select! {
            done = &mut task => return done.unwrap(),
            req = handle.next_request() => match req {
                Some((_, send)) => {
                    respond(send, StatusCode::INTERNAL_SERVER_ERROR, &status(500, "InternalError"))
                }
                None => return task.await.unwrap(),
            },
        }
    }
}

async fn become_leader_by_create(handle: &mut Mock) -> Instant {
    let (method, _, _, send) = next(handle).await;
    assert_eq!(method, Method::GET);
    respond(send, StatusCode::NOT_FOUND, &status(404, "NotFound"));
    let (method, _, body, send) = next(handle).await;
    assert_eq!(method, Method::POST);
    let received = Instant::now();
    respond(send, StatusCode::CREATED, &with_rv(body, "1"));
    received
}

#[tokio::test]
async fn failed_renewals_lapse_at_the_send_time_deadline() {
    let (client, mut handle) = mock_client();
    let cfg = LeaseConfig {
        lease_duration: 3 * S, // margin 2 s: the deadline is 1 s after a renewal is sent
        renew_period: Duration::from_millis(500),
        retry_period: Duration::from_millis(100),
        ..LeaseConfig::new("recur", "default", "me")
    };
    let elector = LeaseElector::new(client, cfg).unwrap();
    let leadership = elector.leadership();
    let mut changes = leadership.changes();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(elector.run(async move {
        let _ = stopped.await;
    }));
    become_leader_by_create(&mut handle).await;
    wait_for(&mut changes, true).await;

    // A renewal whose answer is slow: the deadline still counts from when it was sent.
    let (method, _, body, send) = next(&mut handle).await;
    let renewal_received = Instant::now();
    assert_eq!(method, Method::PUT);
    assert_eq!(body["metadata"]["resourceVersion"], "1");
    assert_eq!(body["spec"]["holderIdentity"], "me");
    tokio::time::sleep(Duration::from_millis(300)).await; // simulated network latency
    respond(send, StatusCode::OK, &with_rv(body, "2"));

    // The next renewal carries the new resourceVersion; from now on every renewal fails.
    let (method, _, body, send) = next(&mut handle).await;
    assert_eq!(method, Method::PUT);
    assert_eq!(body["metadata"]["resourceVersion"], "2");
    let bound =
        (renewal_received + S + Duration::from_millis(1)).saturating_duration_since(Instant::now());
    assert!(
        !leadership.valid_for(bound),
        "deadline must be at most 1 s after the renewal was sent"
    );
    respond(
        send,
        StatusCode::INTERNAL_SERVER_ERROR,
        &status(500, "InternalError"),
    );
    loop {
        tokio::select! {
            biased;
            lost = changes.wait_for(|leading| !*leading) => { lost.unwrap(); break; }
            req = handle.next_request() => {
                let (req, send) = req.unwrap();
                // Renewals while leading; a read only once leadership has lapsed.
                assert!(req.method() == Method::PUT || !leadership.is_leader());
                respond(send, StatusCode::INTERNAL_SERVER_ERROR, &status(500, "InternalError"));
            }
        }
    }
    assert!(!leadership.is_leader());
    stop.send(()).unwrap();
    // Still recorded as holder, so shutdown tries to release; the API keeps failing.
    let result = fail_until_done(&mut handle, task).await;
    assert!(
        matches!(result, Err(LeaseError::Release { .. })),
        "{result:?}"
    );
    assert!(!leadership.is_leader());
}

#[tokio::test]
async fn renewal_conflict_with_a_new_holder_loses_at_once() {
    let (client, mut handle) = mock_client();
    let cfg = LeaseConfig {
        renew_period: Duration::from_millis(100),
        ..test_config()
    };
    let elector = LeaseElector::new(client, cfg).unwrap();
    let leadership = elector.leadership();
    let mut changes = leadership.changes();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(elector.run(async move {
        let _ = stopped.await;
    }));
    become_leader_by_create(&mut handle).await;
    wait_for(&mut changes, true).await;

    let (method, _, _, send) = next(&mut handle).await;
    assert_eq!(method, Method::PUT);
    respond(send, StatusCode::CONFLICT, &status(409, "Conflict"));
    let (method, _, _, send) = next(&mut handle).await;
    assert_eq!(method, Method::GET, "a conflict is checked by re-reading");
    let mut taken = other_holders_lease("3");
    taken["spec"]["leaseDurationSeconds"] = json!(60);
    respond(send, StatusCode::OK, &taken);
    wait_for(&mut changes, false).await;
    assert!(!leadership.is_leader());

    stop.send(()).unwrap();
    // Not the holder any more: nothing to release, whatever else is in flight.
    fail_until_done(&mut handle, task).await.unwrap();
}

/// A shard's elector campaigns only while wanted; when no longer wanted it stops acting at
/// once but releases the Lease only after the deliveries started under it can have finished.
#[tokio::test]
async fn a_lease_no_longer_wanted_is_released_after_the_work_under_it_can_end() {
    let (client, mut handle) = mock_client();
    let (want, wants) = watch::channel(Want::default());
    let hand_back_after = S;
    let mut cfg = test_config();
    cfg.annotations
        .insert("recur.dev/shards".into(), "4".into());
    let elector = LeaseElector::new(client, cfg)
        .unwrap()
        .wanted_by(wants)
        .handing_back_after(hand_back_after);
    let leadership = elector.leadership();
    let mut changes = leadership.changes();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(elector.run(async move {
        let _ = stopped.await;
    }));

    // Not wanted: the first request comes only once it is.
    want.send_modify(|w| w.wanted = true);
    let (method, _, _, send) = next(&mut handle).await;
    assert_eq!(method, Method::GET);
    respond(send, StatusCode::NOT_FOUND, &status(404, "NotFound"));
    let (method, _, body, send) = next(&mut handle).await;
    assert_eq!(method, Method::POST);
    assert_eq!(body["metadata"]["annotations"]["recur.dev/shards"], "4");
    respond(send, StatusCode::CREATED, &with_rv(body, "1"));
    wait_for(&mut changes, true).await;

    want.send_modify(|w| w.wanted = false);
    wait_for(&mut changes, false).await;
    let stopped_acting = Instant::now();
    assert!(!leadership.is_leader());
    let (method, _, body, send) = next(&mut handle).await;
    assert!(
        stopped_acting.elapsed() >= hand_back_after - Duration::from_millis(50),
        "released {:?} after it stopped acting",
        stopped_acting.elapsed()
    );
    release_answered((method, String::new(), body, send), "1");

    // Nothing more is sent: no campaign, nothing to release on shutdown.
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(
        handle.next_request().await.is_none(),
        "a request after the release"
    );
}

/// The balancer's observation of a Lease counts: a Lease it has seen unchanged for longer than
/// its duration is taken at once, not watched for another whole duration.
#[tokio::test]
async fn an_expiry_the_balancer_watched_is_not_watched_again() {
    let (client, mut handle) = mock_client();
    let lease = other_holders_lease("5");
    let seen = Observation {
        key: Observation::key_of(&serde_json::from_value(lease.clone()).unwrap()),
        at: Instant::now()
            .checked_sub(2 * S)
            .expect("the machine has been up for 2 s"),
    };
    let (_want, wants) = watch::channel(Want {
        wanted: true,
        seen: Some(seen),
    });
    let elector = LeaseElector::new(client, test_config())
        .unwrap()
        .wanted_by(wants);
    let mut changes = elector.leadership().changes();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(elector.run(async move {
        let _ = stopped.await;
    }));

    // Its 1 s duration passed under the balancer's eyes: one GET, then the takeover.
    let (method, _, _, send) = next(&mut handle).await;
    assert_eq!(method, Method::GET);
    respond(send, StatusCode::OK, &lease);
    let (method, _, body, send) = next(&mut handle).await;
    assert_eq!(method, Method::PUT, "took over without observing again");
    assert_eq!(body["spec"]["holderIdentity"], "me");
    respond(send, StatusCode::OK, &with_rv(body, "6"));
    wait_for(&mut changes, true).await;

    stop.send(()).unwrap();
    release_answered(next(&mut handle).await, "6");
    task.await.unwrap().unwrap();
}

/// A replica whose clock turns out skewed stops acting at once, and releases the Lease only
/// once a call started under it can have ended: a standby taking it at once could otherwise
/// call a key whose first call is still running.
#[tokio::test]
async fn a_skewed_clock_releases_the_lease_after_the_work_under_it_can_end() {
    let (client, mut handle) = mock_client();
    let hand_back_after = S;
    let elector = LeaseElector::new(client, test_config())
        .unwrap()
        .handing_back_after(hand_back_after);
    let leadership = elector.leadership();
    let mut changes = leadership.changes();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(elector.run(async move {
        let _ = stopped.await;
    }));
    let (method, _, _, send) = next(&mut handle).await;
    assert_eq!(method, Method::GET);
    respond(send, StatusCode::NOT_FOUND, &status(404, "NotFound"));
    let (_, _, body, send) = next(&mut handle).await;
    respond(send, StatusCode::CREATED, &with_rv(body, "1"));
    wait_for(&mut changes, true).await;

    leadership.set_clock_trusted(false);
    let stopped_acting = Instant::now();
    assert!(
        !leadership.valid_for(Duration::ZERO),
        "stops acting at once"
    );
    let (method, _, body, send) = next(&mut handle).await;
    assert!(
        stopped_acting.elapsed() >= hand_back_after - Duration::from_millis(50),
        "released {:?} after it stopped acting",
        stopped_acting.elapsed()
    );
    release_answered((method, String::new(), body, send), "1");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
