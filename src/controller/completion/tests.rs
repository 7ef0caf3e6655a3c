//! Unit tests of completion feedback's decisions (`key_uid`, `parse`, `decide`): no I/O.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::collections::BTreeMap;

use chrono::TimeZone;
use serde_json::json;

use super::*;
use crate::api::{CompletionTopic, OccurrenceRecord, PendingManualRun, PendingOccurrence, Trigger};
use crate::controller::task::manual_key;
use crate::controller::task::occurrence_key;
use crate::tenancy::Rule;

const UID: &str = "0b6e2f4a-1111-2222-3333-444455556666";

fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, h, m, s).single().unwrap()
}

fn route(pubsub: &str, topic: &str) -> Route {
    Route {
        pubsub: PubSubName::new(pubsub).unwrap(),
        topic: Topic::new(topic).unwrap(),
    }
}

/// The route of `task()`'s completion topic.
fn own() -> Route {
    route("pubsub", "team-a.completed")
}

fn team_a() -> Effective {
    Effective::new("team-a", BTreeMap::new(), vec![])
}

fn delivered(nominal: DateTime<Utc>, key: String) -> OccurrenceRecord {
    OccurrenceRecord {
        nominal,
        due: nominal,
        idempotency_key: key,
        outcome: Outcome::Delivered,
        finished_at: nominal + chrono::Duration::seconds(1),
        attempts: 1,
        backend_id: Some("7".into()),
        reason: None,
        trigger: None,
        completed_at: None,
        trace_id: None,
    }
}

/// A task of team-a with `completion.topic: team-a.completed`, two delivered occurrences (9:00,
/// 10:00; the later one also `lastOccurrence`) and 11:00 pending.
fn task() -> RecurringTask {
    let task: RecurringTask = serde_json::from_value(json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
        "metadata": {"name": "report", "namespace": "team-a", "uid": UID, "resourceVersion": "5"},
        "spec": {"userId": "u-1", "title": "Report", "schedule": {"every": "1h"},
                 "completion": {"topic": "team-a.completed"}},
    }))
    .unwrap();
    let nine = delivered(t(9, 0, 0), occurrence_key(UID, t(9, 0, 0)));
    let ten = delivered(t(10, 0, 0), occurrence_key(UID, t(10, 0, 0)));
    RecurringTask {
        status: Some(RecurringTaskStatus {
            history: vec![ten.clone(), nine],
            last_occurrence: Some(ten),
            delivered: 2,
            next_occurrence: Some(PendingOccurrence {
                nominal: t(11, 0, 0),
                due: t(11, 0, 0),
                idempotency_key: occurrence_key(UID, t(11, 0, 0)),
                attempts: 0,
                retry_at: None,
                in_progress: 0,
            }),
            ..Default::default()
        }),
        ..task
    }
}

/// A completion event as the backend publishes it (through its sidecar) for `key`, at `time`.
fn body(key: &str, time: &str) -> Vec<u8> {
    json!({
        "specversion": "1.0", "id": "evt-1", "source": "backend", "type": "task.completed",
        "time": time, "datacontenttype": "application/json",
        "topic": "team-a.completed", "pubsubname": "pubsub",
        "data": {"idempotencyKey": key, "taskId": "7"},
    })
    .to_string()
    .into_bytes()
}

fn event(key: &str, time: &str) -> Event {
    parse(&body(key, time)).unwrap()
}

#[test]
fn keys_name_the_uid_of_their_task() {
    let scheduled = occurrence_key(UID, t(9, 0, 0));
    let millis = occurrence_key(UID, t(9, 0, 0) + chrono::Duration::milliseconds(250));
    let manual = manual_key(UID, "deploy-42");
    for key in [&scheduled, &millis, &manual] {
        assert_eq!(key_uid(key), Some(UID), "{key}");
        assert!(well_formed_key(key), "{key}");
    }
    for bad in [
        "",
        "rt-",
        "x-0b6e2f4a-1111-2222-3333-444455556666-20260501T090000Z",
        "rt-0b6e2f4a-1111-2222-3333-444455556666",
        "rt-0b6e2f4a-1111-2222-3333-444455556666-",
        "rt-0b6e2f4a-1111-2222-3333-44445555666-20260501T090000Z",
        "rt-0b6e2f4a11111-2222-3333-444455556666-20260501T090000Z",
        "rt-0b6e2f4g-1111-2222-3333-444455556666-20260501T090000Z",
        "rt-0b6e2f4a-1111-2222-3333-444455556666x20260501T090000Z",
        "rt-é6e2f4a-1111-2222-3333-444455556666-x",
    ] {
        assert_eq!(key_uid(bad), None, "{bad}");
    }
    // Shaped like a key, but with what a key never holds (it would reach logs and status).
    for bad in [
        format!("{scheduled}\nforged log line"),
        format!("{scheduled} x"),
        format!("{scheduled}/x"),
        format!("{manual}{}", "a".repeat(KEY_MAX)),
    ] {
        assert!(!well_formed_key(&bad), "{bad:?}");
    }
}

#[test]
fn an_event_is_read_with_either_spelling_of_the_key() {
    let key = occurrence_key(UID, t(9, 0, 0));
    let e = event(&key, "2026-05-01T09:20:00.500Z");
    assert_eq!(e.key, key);
    assert_eq!(
        e.time,
        Some(t(9, 20, 0) + chrono::Duration::milliseconds(500))
    );
    let snake = json!({"type": "task.completed", "data": {"idempotency_key": key}});
    let e = parse(snake.to_string().as_bytes()).unwrap();
    assert_eq!((e.key.as_str(), e.time), (key.as_str(), None));
    // A time that is not RFC 3339 is no time: the arrival counts instead.
    let e = event(&key, "yesterday");
    assert_eq!(e.time, None);
}

#[test]
fn what_is_not_a_completion_event_says_why_without_its_values() {
    let key = occurrence_key(UID, t(9, 0, 0));
    let cases: Vec<(Vec<u8>, NotACompletion)> = vec![
        (b"not json".to_vec(), NotACompletion::NotJson),
        (b"[1, 2]".to_vec(), NotACompletion::NotJson),
        (
            json!({"type": "task.created", "data": {"idempotencyKey": key}})
                .to_string()
                .into_bytes(),
            NotACompletion::OtherType,
        ),
        (
            json!({"data": {"idempotencyKey": key}}).to_string().into_bytes(),
            NotACompletion::OtherType,
        ),
        (
            json!({"type": "task.completed"}).to_string().into_bytes(),
            NotACompletion::NoKey,
        ),
        (
            json!({"type": "task.completed", "data": {"idempotencyKey": 42}})
                .to_string()
                .into_bytes(),
            NotACompletion::NoKey,
        ),
        (
            json!({"type": "task.completed", "data": "rt-x"})
                .to_string()
                .into_bytes(),
            NotACompletion::NoKey,
        ),
        (
            json!({"type": "task.completed", "data": {"idempotencyKey": "order-17"}})
                .to_string()
                .into_bytes(),
            NotACompletion::NotAKey,
        ),
        (
            json!({"type": "task.completed", "data": {"idempotencyKey": format!("{key}\u{1b}[31m")}})
                .to_string()
                .into_bytes(),
            NotACompletion::NotAKey,
        ),
        (
            format!(
                r#"{{"type":"task.completed","data":{{"idempotencyKey":"{key}"}},"pad":"{}"}}"#,
                "x".repeat(EVENT_MAX_BYTES)
            )
            .into_bytes(),
            NotACompletion::TooLarge,
        ),
    ];
    for (body, want) in cases {
        let got = parse(&body).unwrap_err();
        assert_eq!(
            got,
            want,
            "{}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
        assert!(!got.to_string().contains("rt-"), "{got}");
    }
}

#[test]
fn a_delivered_occurrences_completion_is_recorded_once() {
    let task = task();
    let key = occurrence_key(UID, t(9, 0, 0));
    let received = t(9, 30, 0);
    let Decision::Accept {
        status,
        seconds_after_due,
    } = decide(
        &task,
        &team_a(),
        &own(),
        &event(&key, "2026-05-01T09:20:00Z"),
        received,
    )
    else {
        panic!("not accepted");
    };
    assert_eq!(seconds_after_due, 1200.0);
    assert_eq!(status.completed, Some(1));
    assert_eq!(
        status.last_completion,
        Some(Box::new(LastCompletion {
            idempotency_key: key.clone(),
            completed_at: t(9, 20, 0),
            received_at: received,
            seconds_after_due: Some(1200.0),
        }))
    );
    assert_eq!(status.history[1].idempotency_key, key);
    assert_eq!(status.history[1].completed_at, Some(t(9, 20, 0)));
    // Nothing else moved: the other record, lastOccurrence (10:00), counters, the pending one.
    let old = task.status.clone().unwrap();
    assert_eq!(status.history[0], old.history[0]);
    assert_eq!(status.last_occurrence, old.last_occurrence);
    assert_eq!(
        (status.delivered, &status.next_occurrence),
        (2, &old.next_occurrence)
    );

    // The same event again, once recorded: a duplicate, however it is timed.
    let done = RecurringTask {
        status: Some(*status),
        ..task
    };
    for time in ["2026-05-01T09:20:00Z", "2026-05-01T09:25:00Z"] {
        assert_eq!(
            decide(&done, &team_a(), &own(), &event(&key, time), t(9, 40, 0)),
            Decision::Duplicate
        );
    }
    // The next one counts on, and marks lastOccurrence too (it is the 10:00 record).
    let key10 = occurrence_key(UID, t(10, 0, 0));
    let Decision::Accept { status, .. } = decide(
        &done,
        &team_a(),
        &own(),
        &event(&key10, "2026-05-01T10:05:00Z"),
        t(10, 6, 0),
    ) else {
        panic!("not accepted");
    };
    assert_eq!(status.completed, Some(2));
    assert_eq!(
        status.last_occurrence.unwrap().completed_at,
        Some(t(10, 5, 0))
    );
    assert_eq!(status.history[0].completed_at, Some(t(10, 5, 0)));
    assert_eq!(status.history[1].completed_at, Some(t(9, 20, 0)));
}

#[test]
fn completion_time_is_the_events_unless_it_is_missing_or_ahead_of_its_arrival() {
    let task = task();
    let key = occurrence_key(UID, t(9, 0, 0));
    let received = t(9, 30, 0);
    for (time, want) in [
        ("2026-05-01T09:31:00Z", received),
        ("not a time", received),
        // Before the due instant (a backend clock behind ours): no negative delay.
        ("2026-05-01T08:59:00Z", t(8, 59, 0)),
    ] {
        let Decision::Accept {
            status,
            seconds_after_due,
        } = decide(&task, &team_a(), &own(), &event(&key, time), received)
        else {
            panic!("not accepted: {time}");
        };
        let last = status.last_completion.unwrap();
        assert_eq!(last.completed_at, want, "{time}");
        assert_eq!(
            seconds_after_due,
            ((want - t(9, 0, 0)).num_seconds().max(0)) as f64,
            "{time}"
        );
    }
}

#[test]
fn a_completion_of_a_manual_run_marks_its_record_and_last_manual_run() {
    let mut task = task();
    let key = manual_key(UID, "deploy-42");
    let mut run = delivered(t(9, 30, 0), key.clone());
    run.trigger = Some(Trigger::Manual);
    let status = task.status.as_mut().unwrap();
    status.history.insert(0, run.clone());
    status.last_manual_run = Some(Box::new(crate::api::ManualRun {
        token: "deploy-42".into(),
        record: run,
    }));
    let Decision::Accept { status, .. } = decide(
        &task,
        &team_a(),
        &own(),
        &event(&key, "2026-05-01T09:45:00Z"),
        t(9, 50, 0),
    ) else {
        panic!("not accepted");
    };
    assert_eq!(status.history[0].completed_at, Some(t(9, 45, 0)));
    assert_eq!(
        status.last_manual_run.unwrap().record.completed_at,
        Some(t(9, 45, 0))
    );
}

#[test]
fn the_pending_occurrence_or_manual_run_is_asked_again_later() {
    let mut task = task();
    let pending = occurrence_key(UID, t(11, 0, 0));
    assert_eq!(
        decide(
            &task,
            &team_a(),
            &own(),
            &event(&pending, "2026-05-01T11:00:05Z"),
            t(11, 0, 6)
        ),
        Decision::Pending
    );
    let run = manual_key(UID, "now");
    task.status.as_mut().unwrap().manual_run = Some(Box::new(PendingManualRun {
        token: "now".into(),
        idempotency_key: run.clone(),
        requested_at: t(10, 30, 0),
        attempts: 0,
        retry_at: None,
        in_progress: 0,
    }));
    assert_eq!(
        decide(
            &task,
            &team_a(),
            &own(),
            &event(&run, "2026-05-01T10:30:05Z"),
            t(10, 31, 0)
        ),
        Decision::Pending
    );
}

#[test]
fn keys_the_task_never_delivered_are_unknown() {
    let mut task = task();
    let at = |key: &str| {
        decide(
            &task,
            &team_a(),
            &own(),
            &event(key, "2026-05-01T12:00:00Z"),
            t(12, 0, 0),
        )
    };
    // Expired from the history, never scheduled, a backfill's (its own status keeps it).
    for key in [
        occurrence_key(UID, t(8, 0, 0)),
        occurrence_key(UID, t(9, 0, 1)),
        manual_key(UID, "never"),
    ] {
        assert_eq!(at(&key), Decision::Unknown, "{key}");
    }
    // Skipped or refused by the backend: no task was created that could complete.
    let status = task.status.as_mut().unwrap();
    status.history[1].outcome = Outcome::Skipped;
    status.history[0].outcome = Outcome::Failed;
    for key in [
        occurrence_key(UID, t(9, 0, 0)),
        occurrence_key(UID, t(10, 0, 0)),
    ] {
        assert_eq!(
            decide(
                &task,
                &team_a(),
                &own(),
                &event(&key, "2026-05-01T12:00:00Z"),
                t(12, 0, 0)
            ),
            Decision::Unknown,
            "{key}"
        );
    }
    // A task of the same name created again has another UID: the old keys are not its own.
    let mut again = self::task();
    again.metadata.uid = Some("99999999-1111-2222-3333-444455556666".into());
    assert_eq!(
        decide(
            &again,
            &team_a(),
            &own(),
            &event(&occurrence_key(UID, t(9, 0, 0)), "2026-05-01T12:00:00Z"),
            t(12, 0, 0)
        ),
        Decision::Unknown
    );
}

#[test]
fn only_the_tasks_own_completion_topic_is_heard() {
    let task = task();
    let key = occurrence_key(UID, t(9, 0, 0));
    let e = event(&key, "2026-05-01T09:20:00Z");
    // Another namespace's topic, another component.
    for r in [
        route("pubsub", "team-b.completed"),
        route("kafka", "team-a.completed"),
    ] {
        assert_eq!(
            decide(&task, &team_a(), &r, &e, t(9, 30, 0)),
            Decision::Refused(Refusal::OtherTopic),
            "{r:?}"
        );
    }
    // An envelope claiming the task's topic while it came on another (a raw publish to
    // team-b's topic), or claiming another while it came on the task's.
    let mut forged = e.clone();
    forged.claimed_topic = Some("team-a.completed".into());
    assert_eq!(
        decide(
            &task,
            &team_a(),
            &route("pubsub", "team-b.completed"),
            &forged,
            t(9, 30, 0)
        ),
        Decision::Refused(Refusal::OtherTopic)
    );
    forged.claimed_topic = Some("team-b.completed".into());
    assert_eq!(
        decide(&task, &team_a(), &own(), &forged, t(9, 30, 0)),
        Decision::Refused(Refusal::OtherTopic)
    );
    let mut forged = e.clone();
    forged.claimed_pubsub = Some("kafka".into());
    assert_eq!(
        decide(&task, &team_a(), &own(), &forged, t(9, 30, 0)),
        Decision::Refused(Refusal::OtherTopic)
    );
    // No envelope attributes at all (a raw publish to the right topic): the route decides.
    let mut raw = e.clone();
    raw.claimed_topic = None;
    raw.claimed_pubsub = None;
    assert!(matches!(
        decide(&task, &team_a(), &own(), &raw, t(9, 30, 0)),
        Decision::Accept { .. }
    ));
    // A task without completion feedback hears nothing.
    let mut deaf = task.clone();
    deaf.spec.completion = None;
    assert_eq!(
        decide(&deaf, &team_a(), &own(), &e, t(9, 30, 0)),
        Decision::Refused(Refusal::NoFeedback)
    );
    // An explicit component is compared as the default is.
    let mut kafka = task.clone();
    kafka.spec.completion = Some(Box::new(CompletionTopic {
        pubsub: Some("kafka".into()),
        topic: "team-a.completed".into(),
    }));
    assert!(matches!(
        decide(
            &kafka,
            &team_a(),
            &route("kafka", "team-a.completed"),
            &raw,
            t(9, 30, 0)
        ),
        Decision::Accept { .. }
    ));
}

#[test]
fn a_topic_the_namespace_may_no_longer_use_is_refused() {
    // Admitted under a policy granting `shared.done`, which no policy grants any more.
    let mut task = task();
    task.spec.completion = Some(Box::new(CompletionTopic {
        pubsub: None,
        topic: "shared.done".into(),
    }));
    let key = occurrence_key(UID, t(9, 0, 0));
    let mut e = event(&key, "2026-05-01T09:20:00Z");
    e.claimed_topic = Some("shared.done".into());
    let Decision::Refused(Refusal::Policy(denial)) = decide(
        &task,
        &team_a(),
        &route("pubsub", "shared.done"),
        &e,
        t(9, 30, 0),
    ) else {
        panic!("not refused by the policy");
    };
    assert_eq!(
        (denial.field.as_str(), denial.rule),
        ("spec.completion", Rule::PubSub)
    );
}

#[test]
fn the_controllers_writes_test_the_completions_count_only_when_written() {
    let mut task = task();
    assert_eq!(unchanged_completions(&task), None);
    task.status.as_mut().unwrap().completed = Some(0);
    assert_eq!(
        unchanged_completions(&task),
        Some(("/status/completed", json!(0)))
    );
    task.status.as_mut().unwrap().completed = Some(3);
    assert_eq!(
        unchanged_completions(&task),
        Some(("/status/completed", json!(3)))
    );
    task.status = None;
    assert_eq!(unchanged_completions(&task), None);
}

#[test]
fn the_count_is_always_written_so_the_next_write_can_test_it() {
    let written = serde_json::to_value(RecurringTaskStatus::default()).unwrap();
    assert_eq!(written["completed"], json!(0));
    let read: RecurringTaskStatus = serde_json::from_value(json!({})).unwrap();
    assert_eq!(read.completed, None, "absent: a status of an older recur");
    let read: RecurringTaskStatus = serde_json::from_value(written).unwrap();
    assert_eq!(read.completed, Some(0));
}

#[test]
fn results_map_to_dapr_answers() {
    for (received, label, answer) in [
        (Received::Accepted, "accepted", Answer::Success),
        (Received::Duplicate, "duplicate", Answer::Success),
        (Received::Unknown, "unknown", Answer::Drop),
        (Received::Refused, "refused", Answer::Drop),
        (Received::Invalid, "invalid", Answer::Drop),
        (Received::Pending, "pending", Answer::Retry),
        (Received::Error, "error", Answer::Retry),
    ] {
        assert_eq!((received.label(), received.answer()), (label, answer));
    }
    assert_eq!(
        [Answer::Success, Answer::Retry, Answer::Drop].map(Answer::as_str),
        ["SUCCESS", "RETRY", "DROP"]
    );
}
