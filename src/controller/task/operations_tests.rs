//! Unit tests of the operations on a task: run now, suspend with a reason, failurePolicy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::tests::{UID, manual_record, pending_at, t, task, update, with_pending, with_status};
use super::*;
use crate::api::{FailurePolicy, ManualRun, RUN_NOW_ANNOTATION, condition, is_run_now_token};

fn annotated(mut task: RecurringTask, token: &str) -> RecurringTask {
    task.metadata
        .annotations
        .get_or_insert_default()
        .insert(RUN_NOW_ANNOTATION.into(), token.into());
    task
}

fn delivered() -> dapr::Outcome {
    dapr::Outcome::Delivered {
        backend_id: Some("b-1".into()),
        replayed: false,
        status: 201,
    }
}

fn rejected() -> dapr::Outcome {
    dapr::Outcome::Rejected {
        status: 400,
        message: "no such project".into(),
    }
}

fn recorded(plan: ManualPlan) -> (RecurringTaskStatus, Option<&'static str>) {
    match plan {
        ManualPlan::Record { status, refused } => (*status, refused),
        other => panic!("expected a record, got {other:?}"),
    }
}

#[test]
fn tokens_are_short_lowercase_labels() {
    for good in ["a", "run-1", "manual-20261201t101500-3f2a", &"x".repeat(63)] {
        assert!(is_run_now_token(good), "{good}");
    }
    for bad in ["", "Run", "a b", "a/b", "a.b", "ü", &"x".repeat(64), "a\n"] {
        assert!(!is_run_now_token(bad), "{bad:?}");
    }
}

#[test]
fn a_new_token_is_recorded_with_its_key_before_any_call() {
    let task = annotated(task("1h"), "fix-42");
    let (status, refused) = recorded(plan_manual(&task, UID, t(10, 0, 0)));
    assert_eq!(refused, None);
    let p = status.manual_run.unwrap();
    assert_eq!(p.idempotency_key, format!("rt-{UID}-run-fix-42"));
    assert_eq!((p.token.as_str(), p.requested_at), ("fix-42", t(10, 0, 0)));
}

#[test]
fn a_recorded_request_is_delivered_then_the_token_never_runs_again() {
    let task = annotated(task("1h"), "fix-42");
    let (status, _) = recorded(plan_manual(&task, UID, t(10, 0, 0)));
    let task = with_status(task, status);
    let ManualPlan::Deliver(p) = plan_manual(&task, UID, t(10, 0, 1)) else {
        panic!("expected a delivery");
    };
    let after = after_manual_attempt(
        &task,
        task.status.clone().unwrap(),
        &p,
        &delivered(),
        t(10, 0, 2),
    );
    assert_eq!(after.manual_run, None);
    let last = after.last_manual_run.clone().unwrap();
    assert_eq!(last.token, "fix-42");
    assert_eq!(last.record.outcome, Outcome::Delivered);
    assert_eq!(last.record.trigger, Some(Trigger::Manual));
    assert_eq!(after.history[0].idempotency_key, p.idempotency_key);
    // The schedule's own record and counters are untouched.
    assert_eq!((after.delivered, after.last_occurrence.clone()), (0, None));
    let task = with_status(task, after);
    assert_eq!(plan_manual(&task, UID, t(10, 5, 0)), ManualPlan::None);
}

#[test]
fn a_failing_call_retries_the_same_key_after_backoff() {
    let task = annotated(task("1h"), "fix-42");
    let (status, _) = recorded(plan_manual(&task, UID, t(10, 0, 0)));
    let p = status.manual_run.clone().unwrap();
    let unavailable = dapr::Outcome::Retryable {
        reason: dapr::RetryReason::ServerError,
        message: "down".into(),
        retry_after: None,
    };
    let after = after_manual_attempt(&task, status, &p, &unavailable, t(10, 0, 1));
    let again = after.manual_run.clone().unwrap();
    assert_eq!(again.idempotency_key, p.idempotency_key);
    assert_eq!(again.attempts, 1);
    let retry_at = again.retry_at.unwrap();
    assert!(retry_at > t(10, 0, 1));
    let task = with_status(task, after);
    assert_eq!(
        plan_manual(&task, UID, t(10, 0, 1)),
        ManualPlan::Wait(retry_at)
    );
    assert!(matches!(
        plan_manual(&task, UID, retry_at),
        ManualPlan::Deliver(p) if p.attempts == 1
    ));
}

#[test]
fn a_pending_run_finishes_before_a_newer_token_is_looked_at() {
    let task = annotated(task("1h"), "first");
    let (status, _) = recorded(plan_manual(&task, UID, t(10, 0, 0)));
    let task = with_status(annotated(task, "second"), status);
    assert!(matches!(
        plan_manual(&task, UID, t(10, 0, 1)),
        ManualPlan::Deliver(p) if p.token == "first"
    ));
}

#[test]
fn a_suspended_task_refuses_the_run_and_records_the_token() {
    let mut task = annotated(task("1h"), "fix-42");
    task.spec.suspend = true;
    let (status, refused) = recorded(plan_manual(&task, UID, t(10, 0, 0)));
    assert!(refused.unwrap().contains("suspended"));
    assert_eq!(status.manual_run, None);
    let last = status.last_manual_run.clone().unwrap();
    assert_eq!(last.record.outcome, Outcome::Skipped);
    // Refused once: resuming does not run the old token.
    task.spec.suspend = false;
    let task = with_status(task, status);
    assert_eq!(plan_manual(&task, UID, t(10, 1, 0)), ManualPlan::None);
}

/// A run asked for before the task was suspended, and still retrying (the backend answered
/// 503), is not delivered while suspended: it ends skipped, as the schedule's pending occurrence
/// does, and resuming does not run it (a review found it delivered during the suspension).
#[test]
fn a_pending_run_is_skipped_when_the_task_is_suspended() {
    let task = annotated(task("1h"), "fix-42");
    let (status, _) = recorded(plan_manual(&task, UID, t(10, 0, 0)));
    let ManualPlan::Deliver(p) =
        plan_manual(&with_status(task.clone(), status.clone()), UID, t(10, 0, 0))
    else {
        panic!("the request is delivered next")
    };
    let unavailable = dapr::Outcome::Retryable {
        reason: dapr::RetryReason::ServerError,
        message: "HTTP 503".into(),
        retry_after: None,
    };
    let status = after_manual_attempt(&task, status, &p, &unavailable, t(10, 0, 1));
    assert!(status.manual_run.is_some(), "retried later");
    let mut suspended = with_status(task, status);
    suspended.spec.suspend = true;
    let (status, refused) = recorded(plan_manual(&suspended, UID, t(10, 5, 0)));
    assert!(refused.unwrap().contains("suspended"));
    assert_eq!(status.manual_run, None);
    let last = status.last_manual_run.clone().unwrap();
    assert_eq!(last.token, "fix-42");
    assert_eq!(last.record.outcome, Outcome::Skipped);
    assert_eq!(last.record.attempts, 1);
    let mut resumed = with_status(suspended, status);
    resumed.spec.suspend = false;
    assert_eq!(plan_manual(&resumed, UID, t(10, 6, 0)), ManualPlan::None);
}

/// A token that already ran and is in the history does not run again when it comes back (a
/// `git revert` of the annotation): its key would be the first run's. Said with an event.
#[test]
fn a_token_that_ran_before_another_does_not_run_again() {
    let mut task = annotated(task("1h"), "a");
    for (token, at) in [("a", t(10, 0, 0)), ("b", t(11, 0, 0))] {
        task = annotated(task, token);
        let (status, _) = recorded(plan_manual(&task, UID, at));
        task = with_status(task, status.clone());
        let ManualPlan::Deliver(p) = plan_manual(&task, UID, at) else {
            panic!("the request is delivered next")
        };
        let status = after_manual_attempt(&task, status, &p, &delivered(), at);
        task = with_status(task, status);
    }
    let again = annotated(task, "a");
    assert_eq!(
        plan_manual(&again, UID, t(12, 0, 0)),
        ManualPlan::TokenReused
    );
}

#[test]
fn a_garbage_token_is_not_run() {
    let task = annotated(task("1h"), "Not A Token");
    assert_eq!(
        plan_manual(&task, UID, t(10, 0, 0)),
        ManualPlan::InvalidToken
    );
    let task = annotated(self::task("1h"), "old");
    let task = with_status(
        task,
        RecurringTaskStatus {
            last_manual_run: Some(Box::new(ManualRun {
                token: "old".into(),
                record: manual_record("old"),
            })),
            ..Default::default()
        },
    );
    assert_eq!(plan_manual(&task, UID, t(10, 0, 0)), ManualPlan::None);
}

fn suspended_condition(status: &RecurringTaskStatus) -> (String, String, String) {
    let c = condition(&status.conditions, reason::SUSPENDED_CONDITION).unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[test]
fn the_suspended_condition_carries_the_users_reason() {
    let mut task = task("10s");
    let schedule = compile(&task).unwrap();
    let (status, _) = update(plan(&task, &schedule, UID, t(9, 0, 5)));
    assert_eq!(suspended_condition(&status).0, "False");
    task.spec.suspend = true;
    task.spec.suspend_reason = Some("INC-1234: backend migration until 14:00".into());
    let (status, _) = update(plan(&with_status(task, status), &schedule, UID, t(9, 0, 6)));
    assert_eq!(
        suspended_condition(&status),
        (
            "True".into(),
            reason::SUSPENDED.into(),
            "INC-1234: backend migration until 14:00".into()
        )
    );
}

/// A 10 s task with `suspendAfter: 3`, after `failures` rejected occurrences in a row.
fn after_failures(failures: u32) -> (RecurringTask, RecurringTaskStatus) {
    let mut base = task("10s");
    base.spec.failure_policy = Some(Box::new(FailurePolicy {
        suspend_after: Some(3),
    }));
    let schedule = compile(&base).unwrap();
    let mut task = with_pending(base, &pending_at(t(9, 0, 10)));
    let mut status = task.status.clone().unwrap();
    for i in 0..failures {
        let p = status.next_occurrence.clone().unwrap();
        status = after_attempt(&task, &schedule, UID, &p, &rejected(), t(9, 0, 11 + 10 * i));
        task = with_status(task, status.clone());
    }
    (task, status)
}

#[test]
fn suspend_after_decides_on_the_third_permanent_failure_in_a_row() {
    let (_, two) = after_failures(2);
    assert_eq!(two.consecutive_failures, 2);
    assert_eq!(two.failure_suspension, None);
    let (task, three) = after_failures(3);
    let fs = three.failure_suspension.clone().unwrap();
    assert_eq!((fs.failures, fs.generation), (3, 1));
    assert!(
        fs.message.contains("3 occurrences in a row"),
        "{}",
        fs.message
    );
    assert!(fs.message.chars().count() <= 256);
    // Recorded, and the spec not suspended yet: the reconcile still has to patch it.
    assert!(failures::undone(&task).is_some());
}

#[test]
fn a_delivery_between_failures_starts_the_count_again() {
    let (task, status) = after_failures(2);
    let schedule = compile(&task).unwrap();
    let p = status.next_occurrence.clone().unwrap();
    let status = after_attempt(&task, &schedule, UID, &p, &delivered(), t(9, 0, 40));
    assert_eq!(status.consecutive_failures, 0);
}

#[test]
fn once_suspended_the_condition_says_why_and_resuming_clears_the_decision() {
    let (mut task, status) = after_failures(3);
    let schedule = compile(&task).unwrap();
    // recur's patch: suspend, with the reason, one generation on.
    task.spec.suspend = true;
    task.spec.suspend_reason = Some(status.failure_suspension.clone().unwrap().message);
    task.metadata.generation = Some(2);
    let task = with_status(task, status);
    assert!(failures::undone(&task).is_none());
    let (status, _) = update(plan(&task, &schedule, UID, t(9, 1, 0)));
    let (state, why, _) = suspended_condition(&status);
    assert_eq!(
        (state.as_str(), why.as_str()),
        ("True", reason::TOO_MANY_FAILURES)
    );
    assert_eq!(status.consecutive_failures, 0);
    // The user resumes: generation 3, suspend false.
    let mut task = with_status(task, status);
    task.spec.suspend = false;
    task.metadata.generation = Some(3);
    let (status, _) = update(plan(&task, &schedule, UID, t(9, 2, 0)));
    assert_eq!(status.failure_suspension, None);
    assert_eq!(suspended_condition(&status).1, reason::ACTIVE);
    assert!(status.next_occurrence.is_some());
}

#[test]
fn an_edit_before_recurs_patch_wins_over_the_decision() {
    let (mut task, _) = after_failures(3);
    task.metadata.generation = Some(2);
    assert!(failures::undone(&task).is_none());
}

#[test]
fn a_task_is_overdue_from_its_pending_due_until_delivered_unless_suspended() {
    use crate::controller::Reconcile;
    let p = pending_at(t(9, 0, 0));
    let task = with_pending(task("1h"), &p);
    assert!(!task.overdue(t(8, 59, 59)), "not due yet");
    assert!(!task.overdue(p.due), "being delivered at its due instant");
    assert!(task.overdue(t(9, 0, 10)), "late by the grace");
    let mut retrying = p.clone();
    retrying.attempts = 1;
    assert!(
        with_pending(task.clone(), &retrying).overdue(t(9, 0, 1)),
        "retrying"
    );
    let mut suspended = task.clone();
    suspended.spec.suspend = true;
    assert!(
        !suspended.overdue(t(9, 5, 0)),
        "a suspended task owes nothing"
    );
    let mut fresh = task;
    fresh.status = None;
    assert!(!fresh.overdue(t(9, 5, 0)), "no status: nothing planned yet");
}
