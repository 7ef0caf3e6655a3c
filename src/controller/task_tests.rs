//! Unit tests of the task controller's decisions (`plan`, `after_attempt`): no I/O.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;
use crate::api::{CatchUp, RecurringTaskSpec};
use crate::schedule::ScheduleSpec;
use chrono::TimeZone;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

const UID: &str = "0b6e2f4a-1111-2222-3333-444455556666";

fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, h, m, s).single().unwrap()
}

fn task(every: &str) -> RecurringTask {
    let mut task = RecurringTask::new(
        "standup",
        RecurringTaskSpec {
            user_id: "u-1".into(),
            title: "Daily standup".into(),
            description: None,
            payload: None,
            schedule: ScheduleSpec {
                every: Some(every.into()),
                start_at: Some(t(9, 0, 0)),
                ..Default::default()
            },
            suspend: false,
            catch_up: None,
            target: None,
            reminders: vec![],
            history_limit: None,
        },
    );
    task.metadata.namespace = Some("ns".into());
    task.metadata.uid = Some(UID.into());
    task.metadata.generation = Some(1);
    task.metadata.creation_timestamp = Some(Time(crate::controller::to_jiff(t(9, 0, 4))));
    task
}

fn with_status(mut task: RecurringTask, status: RecurringTaskStatus) -> RecurringTask {
    task.status = Some(status);
    task
}

fn pending_at(nominal: DateTime<Utc>) -> PendingOccurrence {
    PendingOccurrence {
        nominal,
        due: nominal,
        idempotency_key: occurrence_key(UID, nominal),
        attempts: 0,
        retry_at: None,
    }
}

fn update(plan: Plan) -> (RecurringTaskStatus, Option<DateTime<Utc>>) {
    match plan {
        Plan::Update { status, wake, .. } => (*status, wake),
        other => panic!("expected an update, got {other:?}"),
    }
}

#[test]
fn keys_depend_only_on_uid_and_nominal_instant() {
    assert_eq!(
        occurrence_key(UID, t(9, 0, 0)),
        format!("rt-{UID}-20260501T090000Z")
    );
    assert_ne!(
        occurrence_key(UID, t(9, 0, 0)),
        occurrence_key(UID, t(9, 0, 10))
    );
    assert_ne!(
        occurrence_key(UID, t(9, 0, 0)),
        occurrence_key("other-uid", t(9, 0, 0))
    );
}

#[test]
fn first_reconcile_schedules_the_first_occurrence_after_now_and_writes_its_key() {
    let task = task("10s");
    let schedule = compile(&task).unwrap();
    let (status, wake) = update(plan(&task, &schedule, UID, t(9, 0, 5)));
    let p = status.next_occurrence.unwrap();
    assert_eq!(p.nominal, t(9, 0, 10));
    assert_eq!(p.idempotency_key, occurrence_key(UID, t(9, 0, 10)));
    assert_eq!(wake, Some(t(9, 0, 10)));
    assert_eq!(status.upcoming, vec![t(9, 0, 20), t(9, 0, 30), t(9, 0, 40)]);
    assert_eq!(status.observed_generation, Some(1));
    let ready = crate::api::condition(&status.conditions, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Scheduled")
    );
}

#[test]
fn a_pending_occurrence_not_yet_due_waits_without_writing() {
    let base = task("10s");
    let schedule = compile(&base).unwrap();
    let (status, _) = update(plan(&base, &schedule, UID, t(9, 0, 5)));
    let task = with_status(base, status);
    assert_eq!(
        plan(&task, &schedule, UID, t(9, 0, 7)),
        Plan::Wait(t(9, 0, 10))
    );
}

#[test]
fn a_due_occurrence_is_delivered_with_the_key_already_in_status() {
    let base = task("10s");
    let schedule = compile(&base).unwrap();
    let (status, _) = update(plan(&base, &schedule, UID, t(9, 0, 5)));
    let task = with_status(base, status);
    match plan(&task, &schedule, UID, t(9, 0, 10)) {
        Plan::Deliver(p) => assert_eq!(p.idempotency_key, occurrence_key(UID, t(9, 0, 10))),
        other => panic!("expected delivery, got {other:?}"),
    }
}

#[test]
fn delivery_records_the_outcome_and_the_next_key_in_one_status() {
    let base = task("10s");
    let schedule = compile(&base).unwrap();
    let p = pending_at(t(9, 0, 10));
    let task = with_status(
        base,
        RecurringTaskStatus {
            next_occurrence: Some(p.clone()),
            ..Default::default()
        },
    );
    let outcome = dapr::Outcome::Delivered {
        status: 201,
        backend_id: Some("42".into()),
    };
    let status = after_attempt(&task, &schedule, UID, &p, &outcome, t(9, 0, 10));
    let last = status.last_occurrence.clone().unwrap();
    assert_eq!(
        (last.outcome, last.attempts, last.backend_id.as_deref()),
        (Outcome::Delivered, 1, Some("42"))
    );
    assert_eq!(status.next_occurrence.unwrap().nominal, t(9, 0, 20));
    assert_eq!(status.delivered, 1);
    assert_eq!(status.history.len(), 1);
}

#[test]
fn a_retryable_failure_keeps_the_same_key_and_backs_off() {
    let base = task("10s");
    let schedule = compile(&base).unwrap();
    let p = pending_at(t(9, 0, 10));
    let task = with_status(
        base,
        RecurringTaskStatus {
            next_occurrence: Some(p.clone()),
            ..Default::default()
        },
    );
    let outcome = dapr::Outcome::Retryable {
        reason: dapr::RetryReason::ServerError,
        message: "HTTP 500".into(),
    };
    let status = after_attempt(&task, &schedule, UID, &p, &outcome, t(9, 0, 10));
    let next = status.next_occurrence.clone().unwrap();
    assert_eq!(next.idempotency_key, p.idempotency_key);
    assert_eq!(next.attempts, 1);
    assert!(next.retry_at.unwrap() > t(9, 0, 10));
    assert_eq!(
        status.last_failure.as_ref().unwrap().reason,
        "BackendUnavailable"
    );
    let ready = crate::api::condition(&status.conditions, "Ready").unwrap();
    assert_eq!(ready.status, "False");
    // While retrying, it is not due before retryAt.
    let task = with_status(task, status.clone());
    assert_eq!(
        plan(&task, &schedule, UID, t(9, 0, 10)),
        Plan::Wait(next.retry_at.unwrap())
    );
}

#[test]
fn a_permanent_rejection_is_recorded_as_failed_and_the_task_moves_on() {
    let base = task("10s");
    let schedule = compile(&base).unwrap();
    let p = pending_at(t(9, 0, 10));
    let task = with_status(
        base,
        RecurringTaskStatus {
            next_occurrence: Some(p.clone()),
            ..Default::default()
        },
    );
    let outcome = dapr::Outcome::Rejected {
        status: 400,
        message: "bad \u{1b}request".into(),
    };
    let status = after_attempt(&task, &schedule, UID, &p, &outcome, t(9, 0, 11));
    assert_eq!(status.failed, 1);
    assert_eq!(status.last_occurrence.unwrap().outcome, Outcome::Failed);
    assert!(!status.last_failure.unwrap().message.contains('\u{1b}'));
    assert_eq!(status.next_occurrence.unwrap().nominal, t(9, 0, 20));
}

#[test]
fn suspending_clears_the_pending_occurrence_and_resuming_does_not_backfill() {
    let base = task("10s");
    let schedule = compile(&base).unwrap();
    let mut suspended = with_status(
        base,
        RecurringTaskStatus {
            next_occurrence: Some(pending_at(t(9, 0, 10))),
            ..Default::default()
        },
    );
    suspended.spec.suspend = true;
    let (status, wake) = update(plan(&suspended, &schedule, UID, t(9, 0, 5)));
    assert!(status.next_occurrence.is_none());
    assert_eq!(wake, None);
    assert_eq!(
        crate::api::condition(&status.conditions, "Ready")
            .unwrap()
            .reason,
        "Suspended"
    );
    // Resumed an hour later: the next occurrence is the first after now, nothing in between.
    let mut resumed = with_status(suspended, status);
    resumed.spec.suspend = false;
    let (status, _) = update(plan(&resumed, &schedule, UID, t(10, 0, 3)));
    assert_eq!(status.next_occurrence.unwrap().nominal, t(10, 0, 10));
    assert_eq!(status.skipped, 0);
    assert_eq!(status.delivered, 0);
}

#[test]
fn an_edit_of_the_schedule_never_fires_retroactively() {
    let base = task("10s");
    let pending = pending_at(t(9, 0, 10));
    let mut edited = with_status(
        base,
        RecurringTaskStatus {
            next_occurrence: Some(pending),
            ..Default::default()
        },
    );
    // Edited at 09:00:05 to every 7s from 09:00:00: 09:00:07 is the first after now; 09:00:00 is
    // in the past and must not fire.
    edited.spec.schedule.every = Some("7s".into());
    let schedule = compile(&edited).unwrap();
    let (status, _) = update(plan(&edited, &schedule, UID, t(9, 0, 5)));
    assert_eq!(status.next_occurrence.unwrap().nominal, t(9, 0, 7));
    assert_eq!(status.skipped + status.delivered, 0);
}

fn overdue(
    policy: CatchUpPolicy,
    window: Option<&str>,
    max: Option<u32>,
) -> (RecurringTaskStatus, Plan) {
    let mut base = task("10s");
    base.spec.catch_up = Some(CatchUp {
        policy: Some(policy),
        window: window.map(Into::into),
        max_occurrences: max,
    });
    let schedule = compile(&base).unwrap();
    let task = with_status(
        base,
        RecurringTaskStatus {
            next_occurrence: Some(pending_at(t(9, 0, 10))),
            ..Default::default()
        },
    );
    // The operator was down from 09:00:05 to 09:01:05: 6 occurrences (09:00:10 .. 09:01:00) are due.
    let plan = plan(&task, &schedule, UID, t(9, 1, 5));
    (task.status.clone().unwrap(), plan)
}

#[test]
fn catch_up_all_delivers_every_missed_occurrence_in_order() {
    let (_, plan) = overdue(CatchUpPolicy::All, None, None);
    match plan {
        Plan::Deliver(p) => assert_eq!(p.nominal, t(9, 0, 10)),
        other => panic!("expected delivery of the oldest, got {other:?}"),
    }
}

#[test]
fn catch_up_all_skips_the_oldest_beyond_max_occurrences() {
    let (_, plan) = overdue(CatchUpPolicy::All, None, Some(2));
    let (status, wake) = update(plan);
    assert_eq!(status.skipped, 4);
    // The newest two remain; the first of them is now pending (key in status before delivery).
    assert_eq!(status.next_occurrence.unwrap().nominal, t(9, 0, 50));
    assert_eq!(wake, Some(t(9, 0, 50)));
}

#[test]
fn catch_up_latest_keeps_only_the_newest_within_the_window() {
    let (status, wake) = update(overdue(CatchUpPolicy::Latest, None, None).1);
    assert_eq!(status.skipped, 5);
    assert_eq!(status.next_occurrence.unwrap().nominal, t(9, 1, 0));
    assert_eq!(wake, Some(t(9, 1, 0)));
    // Beyond the window, even the newest is skipped; the next is the first after now.
    let (status, _) = update(overdue(CatchUpPolicy::Latest, Some("2s"), None).1);
    assert_eq!(status.skipped, 6);
    assert_eq!(status.next_occurrence.unwrap().nominal, t(9, 1, 10));
}

#[test]
fn catch_up_skip_delivers_nothing_that_was_missed() {
    let mut base = task("10m");
    base.spec.catch_up = Some(CatchUp {
        policy: Some(CatchUpPolicy::Skip),
        ..Default::default()
    });
    let schedule = compile(&base).unwrap();
    let task = with_status(
        base,
        RecurringTaskStatus {
            next_occurrence: Some(pending_at(t(9, 10, 0))),
            ..Default::default()
        },
    );
    // Reached 5 minutes late: missed.
    let (status, _) = update(plan(&task, &schedule, UID, t(9, 15, 0)));
    assert_eq!(status.skipped, 1);
    assert_eq!(status.next_occurrence.unwrap().nominal, t(9, 20, 0));
    // Reached 3 seconds late (a restart): on time, delivered.
    assert!(matches!(
        plan(&task, &schedule, UID, t(9, 10, 3)),
        Plan::Deliver(_)
    ));
}

#[test]
fn a_finished_schedule_is_ready_with_reason_finished() {
    let mut base = task("10s");
    base.spec.schedule.count = Some(2);
    let schedule = compile(&base).unwrap();
    let p = pending_at(t(9, 0, 10));
    let task = with_status(
        base,
        RecurringTaskStatus {
            next_occurrence: Some(p.clone()),
            ..Default::default()
        },
    );
    let status = after_attempt(
        &task,
        &schedule,
        UID,
        &p,
        &dapr::Outcome::AlreadyDelivered,
        t(9, 0, 10),
    );
    assert!(status.next_occurrence.is_none());
    assert_eq!(
        crate::api::condition(&status.conditions, "Ready")
            .unwrap()
            .reason,
        "Finished"
    );
}

#[test]
fn reminder_names_are_valid_dns_subdomains_even_for_long_task_names() {
    let long = "a".repeat(253);
    let name = reminder_name(&long, t(9, 0, 0), 0);
    assert!(name.len() <= 253, "{}", name.len());
    assert_eq!(
        reminder_name("standup", t(9, 0, 0), 1),
        "standup-20260501t090000-1"
    );
}

#[test]
fn occurrences_due_between_creation_and_the_first_reconcile_are_missed_not_dropped() {
    // Created at 08:00, starting 09:00, every 10s; no operator ran until 09:00:35.
    let mut base = task("10s");
    base.metadata.creation_timestamp = Some(Time(crate::controller::to_jiff(t(8, 0, 0))));
    base.spec.catch_up = Some(CatchUp {
        policy: Some(CatchUpPolicy::All),
        ..Default::default()
    });
    let schedule = compile(&base).unwrap();
    let (status, wake) = update(plan(&base, &schedule, UID, t(9, 0, 35)));
    assert_eq!(status.next_occurrence.clone().unwrap().nominal, t(9, 0, 0));
    assert_eq!(wake, Some(t(9, 0, 0)));
    // The next reconcile delivers it, then the ones after, in order.
    let task = with_status(base, status);
    assert!(
        matches!(plan(&task, &schedule, UID, t(9, 0, 35)), Plan::Deliver(p) if p.nominal == t(9, 0, 0))
    );
}
