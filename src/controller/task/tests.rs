//! Unit tests of the task controller's decisions (`plan`, `after_attempt`): no I/O.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;
use crate::api::{CatchUp, RecurringTaskSpec};
use crate::schedule::ScheduleSpec;
use chrono::TimeZone;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub(super) const UID: &str = "0b6e2f4a-1111-2222-3333-444455556666";

pub(super) fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, h, m, s).single().unwrap()
}

pub(super) fn task(every: &str) -> RecurringTask {
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
            suspend_reason: None,
            failure_policy: None,
            catch_up: None,
            target: None,
            reminders: vec![],
            history_limit: None,
            completion: None,
        },
    );
    task.metadata.namespace = Some("ns".into());
    task.metadata.uid = Some(UID.into());
    task.metadata.generation = Some(1);
    task.metadata.creation_timestamp = Some(Time(crate::controller::to_jiff(t(9, 0, 4))));
    task
}

/// The record of run-now token `token`, delivered at 9:00:01.
pub(super) fn manual_record(token: &str) -> OccurrenceRecord {
    OccurrenceRecord {
        nominal: t(9, 0, 0),
        due: t(9, 0, 0),
        idempotency_key: manual_key(UID, token),
        outcome: Outcome::Delivered,
        finished_at: t(9, 0, 1),
        attempts: 1,
        backend_id: None,
        reason: None,
        trigger: Some(Trigger::Manual),
        completed_at: None,
        trace_id: None,
    }
}

pub(super) fn with_status(mut task: RecurringTask, status: RecurringTaskStatus) -> RecurringTask {
    task.status = Some(status);
    task
}

/// A 10 s task whose 9:00:10 occurrence is pending, and its status after one attempt at `at`.
struct Attempt {
    task: RecurringTask,
    schedule: Schedule,
    p: PendingOccurrence,
    status: RecurringTaskStatus,
}

fn attempt(outcome: &dapr::Outcome, at: DateTime<Utc>) -> Attempt {
    let base = task("10s");
    let schedule = compile(&base).unwrap();
    let p = pending_at(t(9, 0, 10));
    let task = with_pending(base, &p);
    let status = after_attempt(&task, &schedule, UID, &p, outcome, at);
    Attempt {
        task,
        schedule,
        p,
        status,
    }
}

/// `task` with `catchUp.policy` set (and `maxOccurrences` when given).
fn with_catch_up(
    mut task: RecurringTask,
    policy: CatchUpPolicy,
    max: Option<u32>,
) -> RecurringTask {
    task.spec.catch_up = Some(Box::new(CatchUp {
        policy: Some(policy),
        window: None,
        max_occurrences: max,
    }));
    task
}

/// `task` with `p` pending, as after the first status write.
pub(super) fn with_pending(task: RecurringTask, p: &PendingOccurrence) -> RecurringTask {
    with_status(
        task,
        RecurringTaskStatus {
            next_occurrence: Some(p.clone()),
            ..Default::default()
        },
    )
}

pub(super) fn pending_at(nominal: DateTime<Utc>) -> PendingOccurrence {
    PendingOccurrence {
        nominal,
        due: nominal,
        idempotency_key: occurrence_key(UID, nominal),
        attempts: 0,
        retry_at: None,
        in_progress: 0,
    }
}

/// A delivered occurrence an hour before `nominal`.
pub(super) fn earlier_record(nominal: DateTime<Utc>) -> OccurrenceRecord {
    let earlier = nominal - chrono::Duration::hours(1);
    OccurrenceRecord {
        nominal: earlier,
        due: earlier,
        idempotency_key: occurrence_key(UID, earlier),
        outcome: Outcome::Delivered,
        finished_at: earlier,
        attempts: 1,
        backend_id: None,
        reason: None,
        trigger: None,
        completed_at: None,
        trace_id: None,
    }
}

pub(super) fn update(plan: Plan) -> (RecurringTaskStatus, Option<DateTime<Utc>>) {
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
fn a_pending_occurrence_waits_without_writing_then_is_delivered_with_its_key() {
    let base = task("10s");
    let schedule = compile(&base).unwrap();
    let (status, _) = update(plan(&base, &schedule, UID, t(9, 0, 5)));
    let task = with_status(base, status);
    assert_eq!(
        plan(&task, &schedule, UID, t(9, 0, 7)),
        Plan::Wait(t(9, 0, 10))
    );
    match plan(&task, &schedule, UID, t(9, 0, 10)) {
        Plan::Deliver(p) => assert_eq!(p.idempotency_key, occurrence_key(UID, t(9, 0, 10))),
        other => panic!("expected delivery, got {other:?}"),
    }
}

#[test]
fn delivery_records_the_outcome_and_the_next_key_in_one_status() {
    let outcome = dapr::Outcome::Delivered {
        status: 201,
        backend_id: Some("42".into()),
        replayed: false,
    };
    let Attempt { status, .. } = attempt(&outcome, t(9, 0, 10));
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
fn the_trace_id_goes_to_the_records_of_the_occurrence_it_finished() {
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let delivered = dapr::Outcome::Delivered {
        status: 201,
        backend_id: None,
        replayed: false,
    };
    let Attempt { mut status, p, .. } = attempt(&delivered, t(9, 0, 10));
    let mut older = status.history[0].clone();
    older.idempotency_key = "an-older-key".into();
    status.history.push(older);
    stamp_trace(&mut status, &p.idempotency_key, Some(TRACE));
    assert_eq!(
        status.last_occurrence.unwrap().trace_id.as_deref(),
        Some(TRACE)
    );
    assert_eq!(status.history[0].trace_id.as_deref(), Some(TRACE));
    assert_eq!(
        status.history[1].trace_id, None,
        "another occurrence's record"
    );

    // A retry finished nothing: no record takes its trace.
    let retry = dapr::Outcome::Retryable {
        reason: dapr::RetryReason::ServerError,
        message: "HTTP 500".into(),
        retry_after: None,
    };
    let Attempt { mut status, p, .. } = attempt(&retry, t(9, 0, 10));
    stamp_trace(&mut status, &p.idempotency_key, Some(TRACE));
    assert!(status.last_occurrence.is_none() && status.history.is_empty());
}

#[test]
fn a_retryable_failure_keeps_the_same_key_and_backs_off() {
    let outcome = dapr::Outcome::Retryable {
        reason: dapr::RetryReason::ServerError,
        message: "HTTP 500".into(),
        retry_after: None,
    };
    let Attempt {
        task,
        schedule,
        p,
        status,
    } = attempt(&outcome, t(9, 0, 10));
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

/// The retry instant written after `outcome` at `at`.
fn retry_at_after(outcome: &dapr::Outcome, at: DateTime<Utc>) -> DateTime<Utc> {
    attempt(outcome, at)
        .status
        .next_occurrence
        .unwrap()
        .retry_at
        .unwrap()
}

#[test]
fn retry_after_is_a_floor_under_the_backoff() {
    let at = t(9, 0, 10);
    let key = pending_at(t(9, 0, 10)).idempotency_key;
    let backoff = dapr::backoff(1, &key);
    let rate_limited = |retry_after| dapr::Outcome::Retryable {
        reason: dapr::RetryReason::RateLimited,
        message: "HTTP 429".into(),
        retry_after,
    };
    // A longer Retry-After wins ...
    let asked = Duration::from_secs(600);
    assert_eq!(
        retry_at_after(&rate_limited(Some(asked)), at),
        at + chrono::Duration::from_std(asked).unwrap()
    );
    // ... a shorter one (or none) leaves the backoff.
    let backoff_at = at + chrono::Duration::from_std(backoff).unwrap();
    for retry_after in [None, Some(Duration::ZERO), Some(backoff / 2)] {
        assert_eq!(retry_at_after(&rate_limited(retry_after), at), backoff_at);
    }
    // And the capped maximum is honoured as it is.
    assert_eq!(
        retry_at_after(&rate_limited(Some(dapr::RETRY_AFTER_CAP)), at),
        at + chrono::Duration::hours(1)
    );
}

#[test]
fn the_body_names_the_tenant() {
    let task = task("10s");
    let p = pending_at(t(9, 0, 10));
    let body = body(
        &task,
        p.nominal,
        p.due,
        &p.idempotency_key,
        Trigger::Schedule,
    );
    assert_eq!(body["namespace"], "ns");
    assert_eq!(body["task"]["namespace"], "ns");
}

#[test]
fn circuit_open_retries_are_spread_after_the_breaker_half_opens() {
    let at = t(9, 0, 10);
    let key = pending_at(t(9, 0, 10)).idempotency_key;
    let retry_in = Duration::from_secs(20);
    let spread = Duration::from_secs(5);
    let outcome = dapr::Outcome::CircuitOpen { retry_in, spread };
    let retry_at = retry_at_after(&outcome, at);
    assert_eq!(
        retry_at,
        at + chrono::Duration::from_std(dapr::circuit_retry(retry_in, spread, &key)).unwrap()
    );
    assert!(retry_at >= at + chrono::Duration::seconds(20), "{retry_at}");
    assert!(retry_at < at + chrono::Duration::seconds(25), "{retry_at}");
}

#[test]
fn a_permanent_rejection_is_recorded_as_failed_and_the_task_moves_on() {
    let outcome = dapr::Outcome::Rejected {
        status: 400,
        message: "bad \u{1b}request".into(),
    };
    let Attempt { status, .. } = attempt(&outcome, t(9, 0, 11));
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
    base.spec.catch_up = Some(Box::new(CatchUp {
        policy: Some(policy),
        window: window.map(Into::into),
        max_occurrences: max,
    }));
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
    let base = with_catch_up(task("10m"), CatchUpPolicy::Skip, None);
    let schedule = compile(&base).unwrap();
    let task = with_pending(base, &pending_at(t(9, 10, 0)));
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
    let task = with_pending(base, &p);
    let status = after_attempt(
        &task,
        &schedule,
        UID,
        &p,
        &dapr::Outcome::Delivered {
            status: 200,
            backend_id: None,
            replayed: true,
        },
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
    base.spec.catch_up = Some(Box::new(CatchUp {
        policy: Some(CatchUpPolicy::All),
        ..Default::default()
    }));
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

mod fuzz {
    //! Arbitrary schedule text through the whole spec-to-status path: compile, plan, every
    //! delivery outcome. Nothing may panic, and what is written must stay consistent.
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9*/,LW#?A-Z -]{0,40}",
            "(FREQ=(DAILY|WEEKLY|MONTHLY|YEARLY|HOURLY|MINUTELY);)?[A-Z=0-9;,+-]{0,60}",
            "[0-9]{0,6}(ms|s|m|h|d|)",
            "P[0-9]{0,4}(D|W|)T?[0-9]{0,4}[HMS]?",
            ".{0,30}",
        ]
    }

    fn spec() -> impl Strategy<Value = ScheduleSpec> {
        (
            0..4usize,
            text(),
            proptest::option::of(
                "(UTC|Europe/Berlin|America/Santiago|Australia/Lord_Howe|Nowhere/Zone|)",
            ),
            proptest::option::of(0u32..2000),
            proptest::option::of(text()),
            proptest::option::of(-5_000_000_000i64..300_000_000_000),
        )
            .prop_map(|(kind, text, zone, count, jitter, start)| {
                let mut spec = ScheduleSpec {
                    time_zone: zone,
                    count,
                    jitter,
                    ..Default::default()
                };
                spec.start_at = start.and_then(|s| DateTime::from_timestamp(s, 0));
                match kind {
                    0 => spec.cron = Some(text),
                    1 => spec.rrule = Some(text),
                    2 => spec.every = Some(text),
                    _ => spec.every = Some(format!("{}s", text.len() + 1)),
                }
                spec
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: crate::schedule::props::cases(512), ..ProptestConfig::default() })]
        #[test]
        fn no_spec_makes_the_status_path_panic_or_go_backwards(spec in spec(), now_s in 1_600_000_000i64..2_000_000_000) {
            let now = DateTime::from_timestamp(now_s, 0).unwrap();
            let mut task = task("1h");
            task.spec.schedule = spec;
            task.spec.catch_up = Some(Box::new(CatchUp { policy: Some(CatchUpPolicy::All), max_occurrences: Some(5), ..Default::default() }));
            let Ok(schedule) = compile(&task) else { return Ok(()) };
            let mut clock = now;
            for step in 0..6 {
                match plan(&task, &schedule, UID, clock) {
                    Plan::Update { status, .. } => {
                        if let (Some(next), Some(last)) = (&status.next_occurrence, &status.last_occurrence) {
                            prop_assert!(next.nominal > last.nominal, "next {} not after last {}", next.nominal, last.nominal);
                        }
                        task.status = Some(*status);
                    }
                    Plan::Deliver(p) => {
                        let outcome = match step % 4 {
                            0 => dapr::Outcome::Delivered { status: 201, backend_id: Some("1".into()), replayed: false },
                            1 => dapr::Outcome::Retryable { reason: dapr::RetryReason::ServerError, message: "x".into(), retry_after: None },
                            2 => dapr::Outcome::Rejected { status: 400, message: "\u{0}bad".into() },
                            _ => dapr::Outcome::InProgress,
                        };
                        let status = after_attempt(&task, &schedule, UID, &p, &outcome, clock);
                        if let Some(next) = &status.next_occurrence {
                            prop_assert!(next.nominal >= p.nominal);
                        }
                        prop_assert!(status.history.len() <= task.history_limit());
                        // The memo of our commits holds every version showing the status an
                        // outcome was decided on, less its history: an outcome that changed only
                        // the history would hold the task's reconciles for the memo's lifetime.
                        let decided_on = crate::controller::Reconcile::decided_on(&task);
                        task.status = Some(status);
                        prop_assert_ne!(decided_on, crate::controller::Reconcile::decided_on(&task));
                    }
                    Plan::Wait(at) => clock = at,
                    Plan::Idle => break,
                }
            }
        }
    }
}

/// Issue 11 (5): a 409 says the key is still being processed: asked again with backoff, not
/// recorded; after IN_PROGRESS_LIMIT of them in a row it counts as delivered.
#[test]
fn answers_409_are_retried_then_taken_as_delivered() {
    let base = task("10s");
    let schedule = compile(&base).unwrap();
    let mut p = pending_at(t(9, 0, 10));
    let mut now = t(9, 0, 10);
    for n in 1..IN_PROGRESS_LIMIT {
        let task = with_pending(base.clone(), &p);
        let status = after_attempt(&task, &schedule, UID, &p, &dapr::Outcome::InProgress, now);
        assert!(status.last_occurrence.is_none(), "409 #{n} recorded");
        let next = status.next_occurrence.unwrap();
        assert_eq!(next.idempotency_key, p.idempotency_key);
        assert_eq!(next.in_progress, n);
        assert!(next.retry_at.unwrap() > now);
        now = next.retry_at.unwrap();
        p = next;
    }
    let task = with_pending(base, &p);
    let status = after_attempt(&task, &schedule, UID, &p, &dapr::Outcome::InProgress, now);
    let last = status.last_occurrence.unwrap();
    assert_eq!(last.outcome, Outcome::Delivered);
    assert_eq!(last.idempotency_key, p.idempotency_key);
    assert!(last.reason.unwrap().contains("409"));
    assert_eq!(status.next_occurrence.unwrap().in_progress, 0);
}

/// A success after some 409s resets the count; a 422 fails the occurrence with its own reason.
#[test]
fn answers_422_fail_with_their_own_reason() {
    let outcome = dapr::Outcome::KeyReused {
        message: "HTTP 422: Idempotency-Key reused with a different payload".into(),
    };
    let Attempt { status, .. } = attempt(&outcome, t(9, 0, 10));
    assert_eq!(status.last_occurrence.unwrap().outcome, Outcome::Failed);
    assert_eq!(status.last_failure.unwrap().reason, "KeyReused");
    assert_eq!(status.failed, 1);
    assert_eq!(status.next_occurrence.unwrap().nominal, t(9, 0, 20));
}

/// Issue 11 (6): a status wiped from a long-lived task (no observedGeneration) does not replay
/// its past under `catchUp: All`: nothing older than the lookback before now is delivered.
#[test]
fn a_wiped_status_replays_nothing_older_than_the_lookback() {
    let mut base = with_catch_up(task("10m"), CatchUpPolicy::All, Some(1000));
    // Created a week ago, status wiped: first reconcile now.
    base.metadata.creation_timestamp = Some(Time(crate::controller::to_jiff(
        t(9, 0, 0) - chrono::Duration::days(7),
    )));
    base.spec.schedule.start_at = Some(t(9, 0, 0) - chrono::Duration::days(7));
    let schedule = compile(&base).unwrap();
    let now = t(9, 0, 5);
    let (status, _) = update(plan(&base, &schedule, UID, now));
    let first = status.next_occurrence.unwrap();
    assert!(
        first.nominal >= now - FIRST_SIGHT_LOOKBACK,
        "a wiped status would replay from {}",
        first.nominal
    );
    assert!(
        first.nominal < now,
        "the lookback still catches up recent ones"
    );
}

/// Issue 11 (7): label values are at most 63 characters, so a long task name still gets its
/// reminders (the apply used to fail on the label and was only logged).
#[test]
fn task_label_values_fit_a_label_and_stay_distinct() {
    assert_eq!(task_label_value("standup"), "standup");
    let a = format!("{}-a", "x".repeat(100));
    let b = format!("{}-b", "x".repeat(100));
    for v in [task_label_value(&a), task_label_value(&b)] {
        assert!(v.len() <= 63, "{v}");
        assert!(
            v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        );
        assert!(v.starts_with('x') && v.chars().last().unwrap().is_ascii_alphanumeric());
    }
    assert_ne!(task_label_value(&a), task_label_value(&b));
    assert_eq!(task_label_value(&"y".repeat(63)), "y".repeat(63));
}

mod reconcile_steps {
    //! One reconcile against a mock apiserver (kube-rs's tower-test verifier pattern): the due
    //! occurrence is delivered through a real loopback HTTP "sidecar", then exactly one guarded
    //! status patch is sent, testing the delivered key and recording the next one.
    use super::*;
    use crate::controller::Context;
    use crate::lease::Leadership;
    use http::{Method, Request, Response};
    use kube::client::Body;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-request HTTP server on 127.0.0.1 answering 201 with a backend id; returns its URL
    /// and a receiver for the request it got.
    async fn sidecar() -> (String, tokio::sync::oneshot::Receiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let _ = tx.send(answer(&mut sock).await);
        });
        (url, rx)
    }

    /// An HTTP server on 127.0.0.1 answering every request 201 with a backend id; returns its
    /// URL and the number of requests it has answered.
    async fn counting_sidecar() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                answer(&mut sock).await;
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        (url, calls)
    }

    /// Reads one HTTP request from `sock` and answers it 201 with a backend id (closing the
    /// connection); returns the request.
    async fn answer(sock: &mut tokio::net::TcpStream) -> String {
        let mut buf = vec![0u8; 65536];
        let mut got = Vec::new();
        loop {
            let n = sock.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    break;
                }
            }
        }
        let body = r#"{"id":"7"}"#;
        let resp = format!(
            "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        sock.write_all(resp.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&got).to_string()
    }

    /// A context on the mock apiserver `service` and the sidecar at `url`.
    fn context(
        service: tower_test::mock::Mock<Request<Body>, Response<Body>>,
        url: &str,
        leadership: Leadership,
        lease_margin: std::time::Duration,
    ) -> Context {
        crate::controller::test_context(service, url, leadership, lease_margin)
    }

    /// A leader's context on a mock apiserver, with no sidecar listening.
    fn leader_on_mock() -> (
        Context,
        tower_test::mock::Handle<Request<Body>, Response<Body>>,
    ) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let ctx = context(
            service,
            "http://127.0.0.1:9",
            Leadership::always(),
            std::time::Duration::ZERO,
        );
        (ctx, handle)
    }

    /// A leader's context on a mock apiserver and a sidecar that counts the calls it answers.
    async fn leader_calling_counted() -> (
        Context,
        tower_test::mock::Handle<Request<Body>, Response<Body>>,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let (url, calls) = counting_sidecar().await;
        let ctx = context(
            service,
            &url,
            Leadership::always(),
            std::time::Duration::ZERO,
        );
        (ctx, handle, calls)
    }

    /// `task` as the watch cache holds it (`trim_for_cache`, which also fills the side table).
    fn as_cached(ctx: &Context, task: RecurringTask) -> RecurringTask {
        use kube::runtime::watcher::Event;
        let mut event = Event::Apply(task);
        crate::controller::Reconcile::trim_for_cache(ctx, &mut event);
        let Event::Apply(cached) = event else {
            unreachable!()
        };
        cached
    }

    /// The mock apiserver answers one request, which must be `method`, with `object`; the task
    /// then reports the next request, if one comes before the client goes.
    fn answer_once(
        handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
        method: Method,
        object: RecurringTask,
    ) -> tokio::task::JoinHandle<Option<String>> {
        answer_in_turn(handle, vec![(method, object)])
    }

    /// The mock apiserver answers the requests in turn, each of which must be of its method,
    /// with its object; the task then reports the next request, if one comes before the client
    /// goes.
    fn answer_in_turn(
        mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
        answers: Vec<(Method, RecurringTask)>,
    ) -> tokio::task::JoinHandle<Option<String>> {
        tokio::spawn(async move {
            for (method, object) in answers {
                let (req, send) = handle.next_request().await.expect("a request");
                assert_eq!(req.method(), method, "{}", req.uri());
                send.send_response(
                    Response::builder()
                        .body(Body::from(serde_json::to_vec(&object).unwrap()))
                        .unwrap(),
                );
            }
            handle
                .next_request()
                .await
                .map(|(req, _)| format!("{} {}", req.method(), req.uri()))
        })
    }

    #[tokio::test]
    async fn a_due_occurrence_is_delivered_then_committed_with_one_guarded_patch() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let (url, request) = sidecar().await;
        let ctx = context(
            service,
            &url,
            Leadership::always(),
            std::time::Duration::ZERO,
        );

        let now = Utc::now();
        let nominal = DateTime::from_timestamp(now.timestamp() - 1, 0).unwrap();
        let mut task = task("1h");
        task.spec.schedule = ScheduleSpec {
            every: Some("1h".into()),
            start_at: Some(nominal),
            ..Default::default()
        };
        task.metadata.creation_timestamp = Some(Time(crate::controller::to_jiff(
            nominal - chrono::Duration::hours(1),
        )));
        let pending = pending_at(nominal);
        task.status = Some(RecurringTaskStatus {
            observed_generation: Some(1),
            next_occurrence: Some(pending.clone()),
            history: vec![earlier_record(nominal); 2],
            ..Default::default()
        });
        task.metadata.resource_version = Some("41".into());
        let returned = task.clone();
        // As the watch cache holds it: without its two records, counted.
        let task = as_cached(&ctx, task);
        let expected = pending.clone();

        let verifier = tokio::spawn(async move {
            let pending = expected;
            let (req, send) = handle.next_request().await.expect("a status patch");
            assert_eq!(req.method(), Method::PATCH);
            assert_eq!(
                req.uri().path(),
                "/apis/recur.dev/v1alpha1/namespaces/ns/recurringtasks/standup/status"
            );
            let body = req.into_body().collect_bytes().await.unwrap();
            let ops: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(ops[0]["op"], "test");
            assert_eq!(ops[0]["path"], "/status/nextOccurrence/idempotencyKey");
            assert_eq!(ops[0]["value"], pending.idempotency_key.as_str());
            // Field by field: the new record goes first, the two held stay and are not sent.
            let mut status = serde_json::Map::new();
            let mut history = vec![];
            for op in ops.as_array().unwrap().iter().skip(1) {
                assert_eq!(op["op"], "add", "{op}");
                let path = op["path"].as_str().unwrap();
                match path.strip_prefix("/status/history") {
                    Some(index) => history.push((index.to_string(), op["value"].clone())),
                    None => {
                        let field = path.strip_prefix("/status/").unwrap();
                        status.insert(field.into(), op["value"].clone());
                    }
                }
            }
            assert_eq!(history.len(), 1, "{ops}");
            assert_eq!(history[0].0, "/0");
            assert_eq!(
                history[0].1["idempotencyKey"],
                pending.idempotency_key.as_str()
            );
            let status = serde_json::Value::Object(status);
            assert_eq!(
                status["lastOccurrence"]["idempotencyKey"],
                pending.idempotency_key.as_str()
            );
            assert_eq!(status["lastOccurrence"]["backendId"], "7");
            assert_eq!(status["delivered"], 1);
            let next_key = occurrence_key(UID, nominal + chrono::Duration::hours(1));
            assert_eq!(
                status["nextOccurrence"]["idempotencyKey"],
                next_key.as_str()
            );
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&returned).unwrap()))
                    .unwrap(),
            );
        });

        let action = crate::controller::Reconcile::reconcile(&task, &ctx, "standup", "ns")
            .await
            .unwrap();
        verifier.await.unwrap();
        let sent = request.await.unwrap();
        // Issue 13: a plain app id is the app of the task's own namespace, and the call names
        // its tenant (header and body).
        assert!(
            sent.starts_with("POST /v1.0/invoke/backend.ns/method/api/tasks HTTP/1.1"),
            "{sent}"
        );
        assert!(sent.contains("\"namespace\":\"ns\""), "{sent}");
        let lower = sent.to_ascii_lowercase();
        assert!(
            lower.contains(&format!(
                "idempotency-key: {}",
                pending.idempotency_key.to_ascii_lowercase()
            )),
            "{sent}"
        );
        assert!(lower.contains("x-user-id: u-1"), "{sent}");
        assert!(lower.contains("x-recur-namespace: ns"), "{sent}");
        // Requeued for the next occurrence, not left waiting for a change.
        assert_ne!(action, Action::await_change());
    }

    /// An hourly task starting an hour from now, with the first status recur writes for it.
    fn first_due_in_an_hour() -> RecurringTask {
        let now = Utc::now();
        let mut task = task("1h");
        task.spec.schedule.start_at = Some(now + chrono::Duration::hours(1));
        let schedule = compile(&task).unwrap();
        let Plan::Update { status, .. } = plan(&task, &schedule, UID, now) else {
            panic!("a new task's first status")
        };
        task.status = Some(*status);
        task
    }

    /// An hourly task at resourceVersion 41 whose pending occurrence fell due a second ago.
    fn due_a_second_ago() -> RecurringTask {
        let nominal = DateTime::from_timestamp(Utc::now().timestamp() - 1, 0).unwrap();
        let mut task = task("1h");
        task.spec.schedule.start_at = Some(nominal);
        task.metadata.creation_timestamp = Some(Time(crate::controller::to_jiff(
            nominal - chrono::Duration::hours(1),
        )));
        task.status = Some(RecurringTaskStatus {
            observed_generation: Some(1),
            next_occurrence: Some(pending_at(nominal)),
            ..Default::default()
        });
        task.metadata.resource_version = Some("41".into());
        task
    }

    /// A version between the one a delivery was decided on and our write of its outcome (here
    /// someone labels the task) still shows the occurrence pending. It waits for our write
    /// instead of calling the backend again (it used to call again: the memo of our commits
    /// knew only the version decided on).
    #[tokio::test]
    async fn a_version_between_the_decision_and_our_write_is_not_delivered_again() {
        let (ctx, handle, calls) = leader_calling_counted().await;
        let task = due_a_second_ago();
        let mut labelled = task.clone();
        labelled.metadata.resource_version = Some("42".into());
        labelled
            .metadata
            .labels
            .get_or_insert_default()
            .insert("team".into(), "blue".into());
        let mut ours = task.clone();
        ours.metadata.resource_version = Some("43".into());
        // The apiserver takes one status patch; a second request is reported.
        let server = answer_once(handle, Method::PATCH, ours);

        let cached = as_cached(&ctx, task);
        let action = crate::controller::Reconcile::reconcile(&cached, &ctx, "standup", "ns")
            .await
            .unwrap();
        assert_ne!(action, Action::await_change());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);

        let cached = as_cached(&ctx, labelled);
        let action = crate::controller::Reconcile::reconcile(&cached, &ctx, "standup", "ns").await;
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the backend was called again for the occurrence whose outcome is written"
        );
        assert_eq!(
            action.ok(),
            Some(Action::requeue(std::time::Duration::from_millis(100)))
        );
        drop(ctx);
        assert_eq!(server.await.unwrap(), None, "a request after our write");
    }

    /// A relist from a lagging apiserver (kube-runtime relists after a watch error, from any
    /// apiserver's cache) can show the version from before our write after the cache has shown
    /// our write. It waits, and does not call the backend again (the memo of our commits used
    /// to drop its entry at the first version that differed, our write's).
    #[tokio::test]
    async fn a_relist_older_than_our_write_is_not_delivered_again() {
        let (ctx, handle, calls) = leader_calling_counted().await;
        let calls = move || calls.load(std::sync::atomic::Ordering::SeqCst);
        let task = due_a_second_ago();
        let mut ours = task.clone();
        ours.metadata.resource_version = Some("42".into());
        let server = answer_once(handle, Method::PATCH, ours);

        let cached = as_cached(&ctx, task.clone());
        crate::controller::Reconcile::reconcile(&cached, &ctx, "standup", "ns")
            .await
            .unwrap();
        assert_eq!(calls(), 1);

        // The cache shows a version after our write: a status with nothing due for an hour.
        let mut written = first_due_in_an_hour();
        written.metadata.resource_version = Some("42".into());
        let action = crate::controller::Reconcile::reconcile(
            &as_cached(&ctx, written),
            &ctx,
            "standup",
            "ns",
        )
        .await
        .unwrap();
        assert_ne!(action, Action::await_change());

        // Then the relist's older version.
        let action =
            crate::controller::Reconcile::reconcile(&as_cached(&ctx, task), &ctx, "standup", "ns")
                .await;
        assert_eq!(
            calls(),
            1,
            "the backend was called again for a delivered occurrence"
        );
        assert_eq!(
            action.ok(),
            Some(Action::requeue(std::time::Duration::from_millis(100)))
        );
        drop(ctx);
        assert_eq!(server.await.unwrap(), None, "a request after our write");
    }

    /// A status our write replaced that stays in the cache (someone wrote it back) is looked at
    /// less and less often until the memo forgets it, not every 100 ms for 5 minutes.
    #[tokio::test]
    async fn a_replaced_status_that_stays_is_looked_at_less_and_less() {
        let (ctx, _handle) = leader_on_mock();
        let task = due_a_second_ago();
        async fn looks_again_after(ctx: &Context, task: &RecurringTask) -> Option<Action> {
            let cached = as_cached(ctx, task.clone());
            crate::controller::Reconcile::reconcile(&cached, ctx, "standup", "ns")
                .await
                .ok()
        }
        let remember = |ago: std::time::Duration| {
            let at = std::time::Instant::now()
                .checked_sub(ago)
                .expect("the machine has been up a minute");
            ctx.committed
                .upsert(crate::controller::replaced::commit_id(&task), at, |_| {
                    crate::controller::replaced::Replaced::default()
                        .with(crate::controller::Reconcile::decided_on(&task).unwrap_or(0))
                });
        };

        remember(std::time::Duration::ZERO);
        assert_eq!(
            looks_again_after(&ctx, &task).await,
            Some(Action::requeue(std::time::Duration::from_millis(100))),
            "just after our write, its watch event is due any moment"
        );
        remember(std::time::Duration::from_secs(60));
        assert_eq!(
            looks_again_after(&ctx, &task).await,
            Some(Action::requeue(std::time::Duration::from_secs(10))),
            "a minute after our write"
        );
    }

    /// A relist can trail by more than one of our writes: a retried delivery wrote its first
    /// attempt's outcome, then its second's. The status before either still waits, as does the
    /// one between; the status our last write made does not.
    #[tokio::test]
    async fn a_relist_trailing_two_of_our_writes_still_waits() {
        let (ctx, _handle) = leader_on_mock();
        let attempt = |n: u32| {
            let mut task = due_a_second_ago();
            if let Some(status) = task.status.as_mut() {
                status.consecutive_failures = n;
            }
            task
        };
        // Each write is remembered by the version its outcome was decided on.
        ctx.mark_committed(&attempt(0));
        ctx.mark_committed(&attempt(1));
        assert!(ctx.is_stale(&attempt(0)), "two writes back");
        assert!(ctx.is_stale(&attempt(1)), "one write back");
        assert!(!ctx.is_stale(&attempt(2)), "our last write's status");
    }

    /// A version between a failed attempt's decision and our write of it, here someone's edit,
    /// would write status with the pending key unchanged (a retry keeps it), so its guard would
    /// pass on our write and put back the status from before the attempt: its count, failure
    /// and backoff gone. It waits for our write instead, whatever it would write: a status
    /// update (a jitter edit) or an invalid spec's. (Only deliveries used to be checked against
    /// the memo of our commits.)
    #[tokio::test]
    async fn a_version_between_a_failed_attempt_and_our_write_does_not_undo_it() {
        let jitter = |t: &mut RecurringTask| t.spec.schedule.jitter = Some("30m".into());
        let invalid = |t: &mut RecurringTask| t.spec.schedule.every = Some("0s".into());
        for (what, edit) in [
            ("jitter", &jitter as &dyn Fn(&mut RecurringTask)),
            ("invalid", &invalid),
        ] {
            // No sidecar listens: the attempt fails and is retried with backoff.
            let (ctx, handle) = leader_on_mock();
            let task = due_a_second_ago();
            let mut edited = task.clone();
            edited.metadata.resource_version = Some("42".into());
            edited.metadata.generation = Some(2);
            edit(&mut edited);
            match compile(&edited) {
                Ok(schedule) => assert!(
                    matches!(
                        plan(&edited, &schedule, UID, Utc::now()),
                        Plan::Update { .. }
                    ),
                    "{what}: the edit alone plans a status update"
                ),
                Err(_) => assert_eq!(what, "invalid"),
            }
            let mut ours = task.clone();
            ours.metadata.resource_version = Some("43".into());
            // The apiserver takes the failed attempt's status patch and its Event (answered
            // with anything: an Event's failure is only logged); a further request is reported.
            let server = answer_in_turn(
                handle,
                vec![(Method::PATCH, ours.clone()), (Method::POST, ours)],
            );

            let cached = as_cached(&ctx, task);
            let action = crate::controller::Reconcile::reconcile(&cached, &ctx, "standup", "ns")
                .await
                .unwrap();
            assert_ne!(action, Action::await_change());

            let cached = as_cached(&ctx, edited);
            let action =
                crate::controller::Reconcile::reconcile(&cached, &ctx, "standup", "ns").await;
            assert_eq!(
                action.ok(),
                Some(Action::requeue(std::time::Duration::from_millis(100))),
                "{what}"
            );
            drop(ctx);
            assert_eq!(
                server.await.unwrap(),
                None,
                "{what}: a request after our write"
            );
        }
    }

    /// A run-now request is written, then called in a reconcile of its own on the request as
    /// the cache shows it, once: a reconcile of the request's version before the outcome's
    /// arrives waits. (The call used to follow the request's write in the same reconcile,
    /// decided on a status the memo of our commits did not know, and that reconcile called
    /// again.)
    #[tokio::test]
    async fn a_manual_run_is_called_once_while_its_outcome_is_on_its_way() {
        use crate::api::RUN_NOW_ANNOTATION;
        let (ctx, handle, calls) = leader_calling_counted().await;
        let calls = move || calls.load(std::sync::atomic::Ordering::SeqCst);
        let now = Utc::now();
        let mut asked = first_due_in_an_hour();
        asked
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(RUN_NOW_ANNOTATION.into(), "run-1".into());
        asked.metadata.resource_version = Some("41".into());
        let ManualPlan::Record { status, .. } = plan_manual(&asked, UID, now) else {
            panic!("a run-now annotation not yet recorded")
        };
        let mut requested = asked.clone();
        requested.status = Some(*status);
        requested.metadata.resource_version = Some("42".into());
        let mut done = requested.clone();
        done.metadata.resource_version = Some("43".into());
        let server = answer_in_turn(
            handle,
            vec![(Method::PATCH, requested.clone()), (Method::PATCH, done)],
        );
        let reconcile = |cached: RecurringTask| {
            let ctx = &ctx;
            async move { crate::controller::Reconcile::reconcile(&cached, ctx, "standup", "ns").await }
        };
        let waits = Some(Action::requeue(std::time::Duration::from_millis(100)));

        // The request is written; nothing is called yet.
        let action = reconcile(as_cached(&ctx, asked.clone())).await;
        assert_eq!(
            action.ok(),
            Some(Action::requeue(std::time::Duration::ZERO))
        );
        assert_eq!(calls(), 0, "called before the request was in the cache");
        // The cache still shows the task before the request: it waits for it.
        assert_eq!(reconcile(as_cached(&ctx, asked)).await.ok(), waits);
        // The request arrives: called once, and the outcome written.
        let action = reconcile(as_cached(&ctx, requested.clone())).await;
        assert_eq!(calls(), 1);
        assert!(action.is_ok(), "{action:?}");
        // The request's version again, the outcome not yet arrived: no second call.
        let action = reconcile(as_cached(&ctx, requested)).await;
        assert_eq!(calls(), 1, "the run was called again");
        assert_eq!(action.ok(), waits);
        drop(ctx);
        // The run's Normal event may follow the outcome; nothing else does.
        let next = server.await.unwrap();
        assert!(
            next.as_deref().is_none_or(|r| r.contains("/events")),
            "a request after the outcome's write: {next:?}"
        );
    }

    /// A token that comes back after another is found in the history, which the watch cache
    /// leaves out: the task is read, nothing is written or called, and a Warning says why.
    #[tokio::test]
    async fn a_token_back_after_another_is_found_in_the_history_the_cache_leaves_out() {
        use crate::api::{ManualRun, RUN_NOW_ANNOTATION};
        let (ctx, handle, calls) = leader_calling_counted().await;
        let mut task = first_due_in_an_hour();
        let run = manual_record;
        let status = task.status.as_mut().unwrap();
        status.history = vec![run("b"), run("a")];
        status.last_manual_run = Some(Box::new(ManualRun {
            token: "b".into(),
            record: run("b"),
        }));
        task.metadata
            .annotations
            .get_or_insert_default()
            .insert(RUN_NOW_ANNOTATION.into(), "a".into());
        task.metadata.resource_version = Some("41".into());
        let server = answer_once(handle, Method::GET, task.clone());
        let cached = as_cached(&ctx, task);
        assert!(cached.status.as_ref().unwrap().history.is_empty());
        let action = crate::controller::Reconcile::reconcile(&cached, &ctx, "standup", "ns").await;
        assert!(action.is_ok(), "{action:?}");
        // Again (the annotation stays): not read again; its Warning is not repeated either.
        let again = crate::controller::Reconcile::reconcile(&cached, &ctx, "standup", "ns").await;
        assert!(again.is_ok(), "{again:?}");
        drop(ctx);
        let next = server.await.unwrap();
        assert!(
            next.as_deref()
                .is_some_and(|r| r.starts_with("POST") && r.contains("/events")),
            "the request after the read: {next:?}"
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    /// A task the watch cache holds without its conditions (`left_out`) is decided on with them
    /// put back: a status already current makes no write (without them every task would be
    /// rewritten after a restart). When the cache's copy is not the version they were taken
    /// from, the task is read from the API server once, and still not written.
    #[tokio::test]
    async fn a_current_task_cached_without_its_conditions_is_not_written() {
        let (ctx, handle) = leader_on_mock();
        let mut task = first_due_in_an_hour();
        task.metadata.resource_version = Some("41".into());
        let mut returned = task.clone();
        returned.metadata.resource_version = Some("42".into());
        let cached = as_cached(&ctx, task);
        assert!(cached.status.as_ref().unwrap().conditions.is_empty());
        // The first request must be the read of the second reconcile: a write by the first
        // would come here instead and fail the test.
        let server = answer_once(handle, Method::GET, returned);
        let action = crate::controller::Reconcile::reconcile(&cached, &ctx, "standup", "ns")
            .await
            .unwrap();
        assert_ne!(action, Action::await_change());
        let mut newer = cached;
        newer.metadata.resource_version = Some("42".into());
        let action = crate::controller::Reconcile::reconcile(&newer, &ctx, "standup", "ns")
            .await
            .unwrap();
        assert_ne!(action, Action::await_change());
        drop(ctx);
        assert_eq!(server.await.unwrap(), None, "a request after the read");
    }

    /// Issue 11 (2): a leader whose lease slack dips below the margin keeps the task scheduled
    /// (a short requeue) instead of dropping it until some change that never comes.
    #[tokio::test]
    async fn a_leader_short_of_lease_slack_looks_again_soon() {
        let (service, _handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        // Leader for 5 more seconds: less than the 6 s a call and its write may take.
        let leadership = Leadership::leading_until(
            std::time::Instant::now() + std::time::Duration::from_secs(5),
        );
        assert!(leadership.is_leader());
        let ctx = context(
            service,
            "http://127.0.0.1:9",
            leadership,
            std::time::Duration::from_secs(6),
        );
        let metrics = ctx.metrics.clone();
        let task = task("1h");
        let action = crate::controller::runner::reconcile(Arc::new(task), Arc::new(ctx))
            .await
            .unwrap();
        assert_ne!(action, Action::await_change(), "the task went dormant");
        assert_eq!(
            action,
            Action::requeue(std::time::Duration::from_millis(500))
        );
        // On-call sees the pause: deliveries held for a late renewal are counted.
        assert!(
            metrics
                .encode()
                .contains("\nrecur_lease_slack_waits_total 1\n"),
            "{}",
            metrics.encode()
        );
    }

    /// The lease is checked again right before the call: it was checked when the reconcile
    /// began, but the task's read from the API server (up to 10 s) can outlast the margin, and
    /// a call started after that may overlap the next leader's (a review found the task's two
    /// calls unchecked where a reminder's and a backfill's re-check).
    #[tokio::test]
    async fn a_lease_that_runs_short_during_the_task_read_stops_the_call() {
        lease_runs_short_during_the_read(due_a_second_ago()).await;
    }

    /// The same for a manual run whose request is recorded.
    #[tokio::test]
    async fn a_lease_that_runs_short_during_the_task_read_stops_the_manual_run() {
        use crate::api::RUN_NOW_ANNOTATION;
        let mut asked = first_due_in_an_hour();
        asked
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(RUN_NOW_ANNOTATION.into(), "run-1".into());
        let ManualPlan::Record { status, .. } = plan_manual(&asked, UID, Utc::now()) else {
            panic!("a run-now annotation not yet recorded")
        };
        asked.status = Some(*status);
        asked.metadata.resource_version = Some("41".into());
        lease_runs_short_during_the_read(asked).await;
    }

    /// Reconciles `task` (due, at resourceVersion 41) cached at 41 but seen at 42, so that its
    /// conditions are read from the API server, and lets the lease run short during that read:
    /// nothing may be called or written.
    async fn lease_runs_short_during_the_read(task: RecurringTask) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let (url, calls) = counting_sidecar().await;
        let margin = std::time::Duration::from_secs(6);
        let leadership = Leadership::leading_until(std::time::Instant::now() + margin * 100);
        let ctx = Arc::new(context(service, &url, leadership.clone(), margin));
        let mut newer = task.clone();
        newer.metadata.resource_version = Some("42".into());
        let mut cached = as_cached(&ctx, task);
        cached.metadata.resource_version = Some("42".into());
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("the task's read");
            assert_eq!(req.method(), Method::GET, "{}", req.uri());
            // No renewal while the read was under way: the lease now ends within the margin.
            leadership.lapse_at(std::time::Instant::now() + margin / 2);
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&newer).unwrap()))
                    .unwrap(),
            );
            handle
                .next_request()
                .await
                .map(|(req, _)| format!("{} {}", req.method(), req.uri()))
        });
        let metrics = ctx.metrics.clone();
        let result = crate::controller::runner::reconcile(Arc::new(cached), ctx).await;
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "called with the lease ending within the margin ({result:?})"
        );
        assert_eq!(
            result.unwrap(),
            Action::requeue(std::time::Duration::from_millis(500))
        );
        assert!(
            metrics
                .encode()
                .contains("\nrecur_lease_slack_waits_total 1\n"),
            "{}",
            metrics.encode()
        );
        assert_eq!(server.await.unwrap(), None, "a request after the read");
    }

    /// A status write the API server fails is counted as an error (it used to be counted not
    /// at all) and returned, so the error policy retries it.
    #[tokio::test]
    async fn a_failed_status_write_is_counted_as_an_error() {
        let (ctx, mut handle) = leader_on_mock();
        tokio::spawn(async move {
            let (_, send) = handle.next_request().await.expect("a status patch");
            let body = serde_json::json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                "code": 500, "reason": "InternalError", "message": "etcd timeout"});
            send.send_response(
                Response::builder()
                    .status(500)
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            );
        });
        let api: kube::Api<RecurringTask> = kube::Api::namespaced(ctx.client.clone(), "ns");
        let guard = Guard::ResourceVersion("1".into());
        let result = ctx
            .write_status(
                KIND,
                &api,
                "standup",
                guard,
                &RecurringTaskStatus::default(),
            )
            .await;
        assert!(result.is_err(), "{result:?}");
        let text = ctx.metrics.encode();
        assert!(
            text.contains("recur_status_writes_total{kind=\"RecurringTask\",outcome=\"error\"} 1"),
            "{text}"
        );
    }
}
