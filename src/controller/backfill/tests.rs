//! Unit tests of the backfill controller's decisions (`plan`, `after_call`, `expiry`): no I/O.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::collections::HashSet;

use chrono::TimeZone;
use serde_json::json;

use super::*;
use crate::api::Trigger;
use crate::controller::task::{body, compile};
use crate::dapr::{AppId, Method};

const UID: &str = "0b6e2f4a-1111-2222-3333-444455556666";

fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, h, m, s).single().unwrap()
}

/// A task every `every` from 9:00:00, created then.
fn task(every: &str) -> RecurringTask {
    serde_json::from_value(json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
        "metadata": {"name": "report", "namespace": "ns", "uid": UID, "generation": 1,
                     "creationTimestamp": "2026-05-01T09:00:00Z"},
        "spec": {"userId": "u-1", "title": "Report",
                 "schedule": {"every": every, "startAt": "2026-05-01T09:00:00Z"}}
    }))
    .unwrap()
}

/// A backfill of task `report` over `[from, to)` with `extra` spec fields.
fn backfill(from: DateTime<Utc>, to: DateTime<Utc>, extra: serde_json::Value) -> Backfill {
    let mut spec = json!({"taskRef": {"name": "report"}, "from": from, "to": to});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "Backfill",
        "metadata": {"name": "bf", "namespace": "ns", "uid": "bf-uid", "generation": 1,
                     "resourceVersion": "1"},
        "spec": spec
    }))
    .unwrap()
}

fn target() -> Resolved {
    Resolved::Invoke {
        app_id: AppId::new("backend.ns").unwrap(),
        method: Method::new("api/tasks").unwrap(),
    }
}

/// Plans `bf` against the usable `task`.
fn plan_with(bf: &Backfill, task: &RecurringTask, now: DateTime<Utc>) -> Plan {
    let schedule = compile(task).unwrap();
    let target = target();
    plan(
        bf,
        &TaskView::Usable {
            task,
            schedule: &schedule,
            target: &target,
        },
        now,
    )
}

fn updated(plan: Plan) -> (BackfillStatus, Option<DateTime<Utc>>, Option<Note>) {
    match plan {
        Plan::Update { status, wake, note } => (*status, wake, note),
        other => panic!("expected an update, got {other:?}"),
    }
}

fn with_status(mut bf: Backfill, status: BackfillStatus) -> Backfill {
    bf.status = Some(status);
    bf
}

fn ready(status: &BackfillStatus) -> (String, String) {
    let c = crate::api::condition(&status.conditions, reason::READY).unwrap();
    (c.status.clone(), c.reason.clone())
}

fn stalled(status: &BackfillStatus) -> String {
    crate::api::condition(&status.conditions, reason::STALLED)
        .unwrap()
        .status
        .clone()
}

fn delivered() -> dapr::Outcome {
    dapr::Outcome::Delivered {
        status: 201,
        backend_id: Some("7".into()),
        replayed: false,
    }
}

fn replayed() -> dapr::Outcome {
    dapr::Outcome::Delivered {
        status: 201,
        backend_id: Some("7".into()),
        replayed: true,
    }
}

fn unavailable(retry_after: Option<Duration>) -> dapr::Outcome {
    dapr::Outcome::Retryable {
        reason: dapr::RetryReason::ServerError,
        message: "HTTP 503".into(),
        retry_after,
    }
}

/// The backfill of [9:00, 9:01) of a 10 s task, started at 10:00: six occurrences.
fn started() -> (Backfill, RecurringTask) {
    let task = task("10s");
    let bf = backfill(t(9, 0, 0), t(9, 1, 0), json!({}));
    let (status, _, _) = updated(plan_with(&bf, &task, t(10, 0, 0)));
    (with_status(bf, status), task)
}

#[test]
fn the_start_counts_the_range_and_makes_its_first_occurrence_pending() {
    let task = task("10s");
    let bf = backfill(t(9, 0, 0), t(9, 1, 0), json!({}));
    let now = t(10, 0, 0);
    let (status, wake, note) = updated(plan_with(&bf, &task, now));
    assert_eq!(status.phase, BackfillPhase::Running);
    // 9:00:00 (from is inclusive) to 9:00:50 (to is exclusive).
    assert_eq!(status.total, 6);
    assert_eq!(status.next, Some(t(9, 0, 0)));
    assert_eq!(
        status.next_key.as_deref(),
        Some(format!("rt-{UID}-20260501T090000Z").as_str())
    );
    assert_eq!(status.task_uid.as_deref(), Some(UID));
    assert_eq!(status.started_at, Some(now));
    assert_eq!(
        (status.delivered, status.already_delivered, status.failed),
        (0, 0, 0)
    );
    assert_eq!(ready(&status), ("False".into(), reason::BACKFILLING.into()));
    assert_eq!(stalled(&status), "False");
    assert_eq!(wake, Some(now));
    let note = note.unwrap();
    assert_eq!(
        (note.type_, note.reason),
        (EventType::Normal, reason::BACKFILLING)
    );
    assert!(
        note.message.contains("delivering 6 occurrences"),
        "{note:?}"
    );
}

/// An occurrence the task's schedule still has pending (its due instant jittered later, or its
/// call retrying) is the schedule's: the backfill waits until the schedule has moved past it,
/// then sends it (the backend has it: `alreadyDelivered`). Sent first, the schedule's own call
/// got 422 and recorded a delivered occurrence as failed (a review found it).
#[test]
fn an_occurrence_the_schedule_still_has_pending_waits_for_the_schedule() {
    let (bf, mut task) = started();
    let pending = |nominal: DateTime<Utc>| crate::api::PendingOccurrence {
        nominal,
        due: nominal + chrono::Duration::minutes(30),
        idempotency_key: crate::controller::task::occurrence_key(UID, nominal),
        attempts: 0,
        retry_at: None,
        in_progress: 0,
    };
    task.status = Some(crate::api::RecurringTaskStatus {
        next_occurrence: Some(pending(t(9, 0, 0))),
        ..Default::default()
    });
    let now = t(10, 0, 1);
    // Said once in the Ready condition (Argo CD: Progressing), then waited on without writes.
    let (status, wake, _) = match plan_with(&bf, &task, now) {
        Plan::Update { status, wake, note } => (*status, wake, note),
        other => panic!("delivered the schedule's pending occurrence: {other:?}"),
    };
    assert!(wake.is_some_and(|at| at > now), "{wake:?}");
    let c = crate::api::condition(&status.conditions, reason::READY).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", reason::BACKFILLING)
    );
    assert!(
        c.message
            .contains("still pending in task \"report\"'s own schedule"),
        "{c:?}"
    );
    let bf = with_status(bf, status);
    match plan_with(&bf, &task, now) {
        Plan::Wait(at) => assert!(at > now, "{at}"),
        other => panic!("{other:?}"),
    }
    // The schedule moved on: the condition says so again, then the occurrence goes.
    task.status.as_mut().unwrap().next_occurrence = Some(pending(t(9, 0, 10)));
    let (status, _, _) = updated(plan_with(&bf, &task, now));
    let c = crate::api::condition(&status.conditions, reason::READY).unwrap();
    assert_eq!(c.message, "delivering the range's occurrences");
    let bf = with_status(bf, status);
    assert!(matches!(
        plan_with(&bf, &task, now),
        Plan::Deliver(p) if p.nominal == t(9, 0, 0)
    ));
}

#[test]
fn the_first_pending_occurrence_is_delivered_under_the_schedules_key() {
    let (bf, task) = started();
    let p = match plan_with(&bf, &task, t(10, 0, 1)) {
        Plan::Deliver(p) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        p,
        Pending {
            nominal: t(9, 0, 0),
            due: t(9, 0, 0),
            key: crate::controller::task::occurrence_key(UID, t(9, 0, 0)),
            attempts: 0,
        }
    );
    // The body is the schedule's, marked as a backfill.
    let body = body(&task, p.nominal, p.due, &p.key, Trigger::Backfill);
    assert_eq!(body["trigger"], "backfill");
    assert_eq!(body["idempotency_key"], p.key.as_str());
}

#[test]
fn a_range_ending_in_the_future_is_clamped_to_the_start() {
    let task = task("10s");
    let bf = backfill(t(9, 0, 0), t(12, 0, 0), json!({}));
    let now = t(9, 0, 35);
    let (status, _, note) = updated(plan_with(&bf, &task, now));
    // 9:00:00 to 9:00:30: what falls due from 9:00:35 on is the schedule's.
    assert_eq!(status.total, 4);
    assert_eq!(range_end(&bf, &status), now);
    assert!(note.unwrap().message.contains("spec.to is later"));
    // Later reconciles keep the end recorded at the start: the last one completes it.
    let mut bf = with_status(bf, status);
    let schedule = compile(&task).unwrap();
    for (i, nominal) in [t(9, 0, 0), t(9, 0, 10), t(9, 0, 20), t(9, 0, 30)]
        .into_iter()
        .enumerate()
    {
        let p = Pending {
            nominal,
            due: nominal,
            key: crate::controller::task::occurrence_key(UID, nominal),
            attempts: 0,
        };
        let status = after_call(&bf, &schedule, &p, &delivered(), t(10, 0, i as u32));
        bf = with_status(bf, status);
    }
    let status = bf.status.unwrap();
    assert_eq!(status.phase, BackfillPhase::Complete);
    assert_eq!(status.delivered, 4);
}

#[test]
fn too_many_occurrences_fail_before_anything_is_delivered() {
    let task = task("10s");
    let bf = backfill(t(9, 0, 0), t(9, 1, 10), json!({"maxOccurrences": 5}));
    let (status, wake, note) = updated(plan_with(&bf, &task, t(10, 0, 0)));
    assert_eq!(status.phase, BackfillPhase::Failed);
    assert_eq!(status.next, None);
    assert_eq!(status.next_key, None);
    assert_eq!(status.started_at, None);
    assert_eq!(status.finished_at, Some(t(10, 0, 0)));
    assert_eq!(wake, None);
    let c = crate::api::condition(&status.conditions, reason::STALLED).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", reason::TOO_MANY_OCCURRENCES)
    );
    assert!(
        c.message.contains("holds 7 occurrences") && c.message.contains("spec.maxOccurrences (5)"),
        "{}",
        c.message
    );
    assert_eq!(note.unwrap().type_, EventType::Warning);
}

#[test]
fn a_huge_range_is_counted_only_so_far() {
    let task = task("1s");
    let bf = backfill(
        t(9, 0, 0),
        t(9, 0, 0) + chrono::Duration::days(3),
        json!({"maxOccurrences": 10000}),
    );
    let (status, _, _) = updated(plan_with(
        &bf,
        &task,
        t(9, 0, 0) + chrono::Duration::days(4),
    ));
    assert_eq!(status.phase, BackfillPhase::Failed);
    let (_, why) = ready(&status);
    assert_eq!(why, reason::TOO_MANY_OCCURRENCES);
    let c = crate::api::condition(&status.conditions, reason::READY).unwrap();
    assert!(c.message.contains("more than 100000"), "{}", c.message);
}

#[test]
fn the_hard_cap_bounds_max_occurrences_and_rate_sets_the_pace() {
    let bf = backfill(t(9, 0, 0), t(9, 1, 0), json!({}));
    assert_eq!(max_occurrences(&bf), 1000);
    assert_eq!(pace(&bf), chrono::Duration::milliseconds(100));
    let bf = backfill(
        t(9, 0, 0),
        t(9, 1, 0),
        json!({"maxOccurrences": 50000, "rate": 2}),
    );
    assert_eq!(max_occurrences(&bf), 10_000);
    assert_eq!(pace(&bf), chrono::Duration::milliseconds(500));
}

#[test]
fn an_empty_range_completes_at_once() {
    let task = task("10s");
    // Before the schedule's start.
    let bf = backfill(t(8, 0, 0), t(9, 0, 0), json!({}));
    let (status, _, note) = updated(plan_with(&bf, &task, t(10, 0, 0)));
    assert_eq!(status.phase, BackfillPhase::Complete);
    assert_eq!(status.total, 0);
    assert_eq!(ready(&status), ("True".into(), reason::COMPLETE.into()));
    assert_eq!(note.unwrap().reason, reason::COMPLETE);
}

#[test]
fn a_missing_task_is_waited_for_until_it_is_created() {
    let bf = backfill(t(9, 0, 0), t(9, 1, 0), json!({}));
    let now = t(10, 0, 0);
    let (status, wake, note) = updated(plan(&bf, &TaskView::Missing, now));
    assert_eq!(status.phase, BackfillPhase::Pending);
    assert_eq!(
        ready(&status),
        ("False".into(), reason::TASK_NOT_FOUND.into())
    );
    assert_eq!(stalled(&status), "False");
    assert_eq!(wake, Some(now + chrono::Duration::seconds(10)));
    assert_eq!(note.unwrap().reason, reason::TASK_NOT_FOUND);
    // Looked at again: nothing to write, no second event.
    let bf = with_status(bf, status);
    let later = now + chrono::Duration::seconds(10);
    assert_eq!(
        plan(&bf, &TaskView::Missing, later),
        Plan::Wait(later + chrono::Duration::seconds(10))
    );
    // Created: it starts.
    let (status, _, _) = updated(plan_with(&bf, &task("10s"), later));
    assert_eq!(status.phase, BackfillPhase::Running);
    assert_eq!(ready(&status), ("False".into(), reason::BACKFILLING.into()));
}

#[test]
fn a_task_deleted_or_recreated_during_the_backfill_fails_it() {
    let (bf, _) = started();
    let (status, _, _) = updated(plan(&bf, &TaskView::Missing, t(10, 0, 1)));
    assert_eq!(status.phase, BackfillPhase::Failed);
    assert_eq!(ready(&status).1, reason::TASK_NOT_FOUND);

    let mut again = task("10s");
    again.metadata.uid = Some("another-uid".into());
    let (status, _, _) = updated(plan_with(&bf, &again, t(10, 0, 1)));
    assert_eq!(status.phase, BackfillPhase::Failed);
    assert_eq!(ready(&status).1, reason::TASK_RECREATED);
    assert_eq!(stalled(&status), "True");
    // Not adopted by the new task either.
    assert!(!needs_owner(&bf, &again));
}

#[test]
fn an_unusable_task_fails_the_backfill() {
    let task = task("10s");
    let bf = backfill(t(9, 0, 0), t(9, 1, 0), json!({}));
    let view = TaskView::Unusable {
        task: &task,
        reason: reason::POLICY_DENIED,
        message: "spec.target.appId: denied by policy p".into(),
    };
    let (status, _, _) = updated(plan(&bf, &view, t(10, 0, 0)));
    assert_eq!(status.phase, BackfillPhase::Failed);
    assert_eq!(ready(&status).1, reason::POLICY_DENIED);
    assert_eq!(stalled(&status), "True");
}

#[test]
fn a_suspended_task_holds_the_backfill_until_it_is_resumed() {
    let mut suspended = task("10s");
    suspended.spec.suspend = true;
    // Before the start: Pending.
    let bf = backfill(t(9, 0, 0), t(9, 1, 0), json!({}));
    let (status, _, note) = updated(plan_with(&bf, &suspended, t(10, 0, 0)));
    assert_eq!(status.phase, BackfillPhase::Pending);
    assert_eq!(ready(&status).1, reason::TASK_SUSPENDED);
    assert_eq!(status.started_at, None);
    assert!(note.is_some());
    // Running: nothing is delivered meanwhile, the pending key stays.
    let (bf, task) = started();
    let (status, _, _) = updated(plan_with(&bf, &suspended, t(10, 0, 1)));
    assert_eq!(status.phase, BackfillPhase::Running);
    assert_eq!(ready(&status).1, reason::TASK_SUSPENDED);
    assert_eq!(status.next_key, bf.status.as_ref().unwrap().next_key);
    // Resumed: the condition says so, then delivery goes on.
    let bf = with_status(bf, status);
    let (status, wake, _) = updated(plan_with(&bf, &task, t(10, 0, 20)));
    assert_eq!(ready(&status).1, reason::BACKFILLING);
    assert_eq!(wake, Some(t(10, 0, 20)));
    let bf = with_status(bf, status);
    assert!(matches!(
        plan_with(&bf, &task, t(10, 0, 20)),
        Plan::Deliver(_)
    ));
}

#[test]
fn the_pace_and_backoff_are_waited_for() {
    let (bf, task) = started();
    let mut status = bf.status.clone().unwrap();
    status.retry_at = Some(t(10, 0, 5));
    let bf = with_status(bf, status);
    assert_eq!(plan_with(&bf, &task, t(10, 0, 1)), Plan::Wait(t(10, 0, 5)));
    assert!(matches!(
        plan_with(&bf, &task, t(10, 0, 5)),
        Plan::Deliver(_)
    ));
}

/// The pace counts from the slot a call was allowed at, not from its end: a call and its write
/// taking 40 ms do not slow 10 per second to 7; a call allowed long ago (a late resume, a slow
/// backend) makes the next one wait for nothing, and the one after that is paced again.
#[test]
fn the_pace_counts_from_the_previous_slot_and_never_bursts() {
    let (bf, task) = started();
    let schedule = compile(&task).unwrap();
    let ms = chrono::Duration::milliseconds;
    let slot = t(10, 0, 5);
    let mut status = bf.status.clone().unwrap();
    status.retry_at = Some(slot);
    let bf = with_status(bf, status);
    let Plan::Deliver(p) = plan_with(&bf, &task, slot + ms(10)) else {
        panic!()
    };
    let status = after_call(&bf, &schedule, &p, &delivered(), slot + ms(40));
    assert_eq!(status.retry_at, Some(slot + ms(100)));

    // Allowed 10 s ago: the next at once, not a catch-up burst of 100.
    let late = slot + chrono::Duration::seconds(10);
    let status = after_call(&bf, &schedule, &p, &delivered(), late);
    assert_eq!(status.retry_at, Some(late));
    let bf = with_status(bf, status);
    let Plan::Deliver(p) = plan_with(&bf, &task, late) else {
        panic!()
    };
    let status = after_call(&bf, &schedule, &p, &delivered(), late + ms(5));
    assert_eq!(status.retry_at, Some(late + ms(100)));
}

#[test]
fn an_edited_schedule_that_drops_the_pending_occurrence_fails_the_backfill() {
    let (bf, _) = started();
    let mut status = bf.status.clone().unwrap();
    status.next = Some(t(9, 0, 10));
    status.next_key = Some(crate::controller::task::occurrence_key(UID, t(9, 0, 10)));
    let bf = with_status(bf, status);
    // Every 15 s now: 9:00:10 is no longer an occurrence.
    let (status, _, _) = updated(plan_with(&bf, &task("15s"), t(10, 0, 1)));
    assert_eq!(status.phase, BackfillPhase::Failed);
    assert_eq!(ready(&status).1, reason::SCHEDULE_CHANGED);
}

#[test]
fn outcomes_count_as_delivered_already_delivered_or_failed() {
    let (bf, task) = started();
    let schedule = compile(&task).unwrap();
    let now = t(10, 0, 1);
    let Plan::Deliver(p) = plan_with(&bf, &task, now) else {
        panic!()
    };
    let cases = [
        (delivered(), (1, 0, 0)),
        (replayed(), (0, 1, 0)),
        (dapr::Outcome::InProgress, (0, 1, 0)),
        (
            dapr::Outcome::KeyReused {
                message: "other payload".into(),
            },
            (0, 1, 0),
        ),
        (
            dapr::Outcome::Rejected {
                status: 400,
                message: "bad".into(),
            },
            (0, 0, 1),
        ),
    ];
    for (outcome, counts) in cases {
        let status = after_call(&bf, &schedule, &p, &outcome, now);
        assert_eq!(
            (status.delivered, status.already_delivered, status.failed),
            counts,
            "{outcome:?}"
        );
        // Moved on to the next occurrence, paced by spec.rate (default 10 per second).
        assert_eq!(status.next, Some(t(9, 0, 10)), "{outcome:?}");
        assert_eq!(
            status.next_key,
            Some(crate::controller::task::occurrence_key(UID, t(9, 0, 10)))
        );
        assert_eq!(
            status.retry_at,
            Some(now + chrono::Duration::milliseconds(100))
        );
        assert_eq!(status.attempts, 0);
    }
    let rejected = after_call(
        &bf,
        &schedule,
        &p,
        &dapr::Outcome::Rejected {
            status: 400,
            message: "bad".into(),
        },
        now,
    );
    let failure = rejected.last_failure.unwrap();
    assert_eq!(failure.reason, reason::REJECTED);
    assert_eq!(failure.idempotency_key, p.key);
}

#[test]
fn a_failing_backend_retries_the_same_key_with_backoff_and_retry_after_as_a_floor() {
    let (bf, task) = started();
    let schedule = compile(&task).unwrap();
    let now = t(10, 0, 1);
    let Plan::Deliver(p) = plan_with(&bf, &task, now) else {
        panic!()
    };
    let backoff = chrono::Duration::from_std(dapr::backoff(1, &p.key)).unwrap();
    let status = after_call(&bf, &schedule, &p, &unavailable(None), now);
    assert_eq!(status.next_key.as_deref(), Some(p.key.as_str()));
    assert_eq!(status.attempts, 1);
    assert_eq!(status.retry_at, Some(now + backoff));
    assert_eq!(
        (status.delivered, status.already_delivered, status.failed),
        (0, 0, 0)
    );
    assert_eq!(ready(&status).1, reason::BACKEND_UNAVAILABLE);
    assert_eq!(
        status.last_failure.unwrap().reason,
        reason::BACKEND_UNAVAILABLE
    );
    let status = after_call(
        &bf,
        &schedule,
        &p,
        &unavailable(Some(Duration::from_secs(90))),
        now,
    );
    assert_eq!(status.retry_at, Some(now + chrono::Duration::seconds(90)));
    // The retry carries the same key and the attempt count.
    let bf = with_status(bf, status);
    let Plan::Deliver(again) = plan_with(&bf, &task, now + chrono::Duration::seconds(90)) else {
        panic!()
    };
    assert_eq!((again.key, again.attempts), (p.key, 1));
}

/// The whole range, with every kind of outcome and a crash that repeats a call: each key is
/// called in order, and the counts add up to the total.
#[test]
fn a_whole_range_ends_complete_with_counts_adding_up_to_the_total() {
    let task = task("10s");
    let schedule = compile(&task).unwrap();
    let mut bf = backfill(t(9, 0, 0), t(9, 2, 0), json!({"rate": 2}));
    let mut now = t(10, 0, 0);
    let (status, _, _) = updated(plan_with(&bf, &task, now));
    bf = with_status(bf, status);
    let total = bf.status.as_ref().unwrap().total;
    assert_eq!(total, 12);
    let mut keys = vec![];
    let mut calls = 0;
    loop {
        match plan_with(&bf, &task, now) {
            Plan::Wait(at) => now = at,
            Plan::Update { .. } => panic!("no update while delivering"),
            Plan::Deliver(p) => {
                calls += 1;
                let outcome = match calls {
                    2 | 5 => replayed(),
                    3 => unavailable(None),
                    7 => dapr::Outcome::Rejected {
                        status: 400,
                        message: "bad".into(),
                    },
                    // The operator died after this call, before writing: the same key again.
                    9 => {
                        keys.push(p.key.clone());
                        continue;
                    }
                    _ => delivered(),
                };
                if !outcome.is_retryable() {
                    keys.push(p.key.clone());
                }
                let status = after_call(&bf, &schedule, &p, &outcome, now);
                let done = status.phase == BackfillPhase::Complete;
                bf = with_status(bf, status);
                if done {
                    break;
                }
            }
        }
    }
    let status = bf.status.unwrap();
    assert_eq!(
        status.delivered + status.already_delivered + status.failed,
        total
    );
    assert_eq!(status.failed, 1);
    assert_eq!(status.already_delivered, 2);
    assert_eq!(status.finished_at, Some(now));
    assert_eq!(ready(&status), ("True".into(), reason::COMPLETE.into()));
    assert_eq!(
        (status.next, status.next_key, status.retry_at),
        (None, None, None)
    );
    // Every key of the range, in order; the crashed call's key twice in a row.
    let expected: Vec<String> = in_range(&schedule, t(9, 0, 0), t(9, 2, 0))
        .map(|o| crate::controller::task::occurrence_key(UID, o.nominal))
        .collect();
    let mut unique = keys.clone();
    unique.dedup();
    assert_eq!(unique, expected);
    assert_eq!(keys.len(), expected.len() + 1);
    assert_eq!(keys.iter().collect::<HashSet<_>>().len(), expected.len());
}

#[test]
fn a_finished_backfill_is_deleted_after_its_ttl() {
    let (bf, _) = started();
    assert_eq!(expiry(&bf, t(10, 0, 0)), None);
    let mut status = bf.status.clone().unwrap();
    status.phase = BackfillPhase::Complete;
    status.finished_at = Some(t(10, 0, 0));
    let done = with_status(bf.clone(), status.clone());
    assert_eq!(
        expiry(&done, t(10, 0, 1)),
        Some(Expiry::At(t(10, 0, 0) + chrono::Duration::days(1)))
    );
    assert_eq!(
        expiry(&done, t(10, 0, 0) + chrono::Duration::days(1)),
        Some(Expiry::Delete)
    );
    let mut short = bf.clone();
    short.spec.ttl_seconds_after_finished = Some(0);
    status.phase = BackfillPhase::Failed;
    let short = with_status(short, status.clone());
    assert_eq!(expiry(&short, t(10, 0, 0)), Some(Expiry::Delete));
    // No finishedAt (edited by hand): kept.
    status.finished_at = None;
    let kept = with_status(bf, status);
    assert!(matches!(expiry(&kept, t(12, 0, 0)), Some(Expiry::At(_))));
}

#[test]
fn the_backfill_is_owned_by_its_task_without_blocking_its_deletion() {
    let task = task("10s");
    let bf = backfill(t(9, 0, 0), t(9, 1, 0), json!({}));
    assert!(needs_owner(&bf, &task));
    let reference = owner_reference(&task).unwrap();
    assert_eq!(reference.api_version, "recur.dev/v1alpha1");
    assert_eq!(reference.kind, "RecurringTask");
    assert_eq!(reference.name, "report");
    assert_eq!(reference.uid, UID);
    assert_eq!(reference.controller, Some(false));
    assert_eq!(reference.block_owner_deletion, Some(false));
    let mut owned = bf.clone();
    owned.metadata.owner_references = Some(vec![reference]);
    assert!(!needs_owner(&owned, &task));
}
