//! Condition types and the reasons recur writes into conditions, events and status, in one
//! place (as linkerd's policy controller keeps them): the API users script against. Code never
//! branches on these strings; it decides on typed values and names the reason last.

/// kstatus' readiness condition.
pub const READY: &str = "Ready";
/// True when the spec cannot be acted on until it is changed.
pub const STALLED: &str = "Stalled";

/// The spec is valid (`Stalled=False`).
pub const VALID: &str = "Valid";
/// The next occurrence (or the reminder) is scheduled.
pub const SCHEDULED: &str = "Scheduled";
/// Deliveries are suspended (`spec.suspend`).
pub const SUSPENDED: &str = "Suspended";
/// `failurePolicy.suspendAfter` occurrences in a row failed permanently: recur suspended the task.
pub const TOO_MANY_FAILURES: &str = "TooManyFailures";
/// The `Suspended` condition's type.
pub const SUSPENDED_CONDITION: &str = "Suspended";
/// `Suspended=False`: deliveries are active.
pub const ACTIVE: &str = "Active";
/// A manual run (`recur.dev/run-now`) was delivered, or refused by the backend.
pub const MANUAL_RUN: &str = "ManualRun";
/// A manual run was not made: the task is suspended, or the token is not valid.
pub const RUN_REFUSED: &str = "RunRefused";
/// The schedule has no further occurrences.
pub const FINISHED: &str = "Finished";
/// The backend or the sidecar is failing; the occurrence is retried with backoff.
pub const BACKEND_UNAVAILABLE: &str = "BackendUnavailable";
/// The schedule cannot be compiled.
pub const INVALID_SCHEDULE: &str = "InvalidSchedule";
/// `target` names no usable app id or method.
pub const INVALID_TARGET: &str = "InvalidTarget";
/// The tenant's policy (or the default) refuses the target, the user id or the payload.
pub const POLICY_DENIED: &str = "PolicyDenied";
/// Another field cannot be acted on.
pub const INVALID_SPEC: &str = "InvalidSpec";
/// The backend refused an occurrence for good.
pub const REJECTED: &str = "Rejected";
/// The backend knows the key with another payload (HTTP 422).
pub const KEY_REUSED: &str = "KeyReused";
/// An event: an occurrence was refused (4xx).
pub const DELIVERY_REJECTED: &str = "DeliveryRejected";
/// An event: missed occurrences were skipped under `catchUp`.
pub const OCCURRENCES_SKIPPED: &str = "OccurrencesSkipped";
/// A reminder was sent.
pub const SENT: &str = "Sent";
/// A reminder was sent, but the backend refused `reminder-sent`.
pub const SENT_BACKEND_NOT_TOLD: &str = "SentBackendNotTold";
/// A reminder first seen more than the lookback after it was due.
pub const TOO_LATE: &str = "TooLate";
/// A reminder's or a backfill's `taskRef` names no task (yet), or no longer.
pub const TASK_NOT_FOUND: &str = "TaskNotFound";
/// A reminder's task belongs to another user.
pub const USER_MISMATCH: &str = "UserMismatch";
/// A reminder's or a backfill's task is suspended.
pub const TASK_SUSPENDED: &str = "TaskSuspended";
/// A reminder's occurrence is no longer its task's pending one.
pub const OCCURRENCE_CHANGED: &str = "OccurrenceChanged";
/// A backfill is delivering its range (`Ready=False` until it is complete).
pub const BACKFILLING: &str = "Backfilling";
/// Every occurrence of a backfill's range ended (`Ready=True`).
pub const COMPLETE: &str = "Complete";
/// A backfill's range holds more occurrences than `spec.maxOccurrences`.
pub const TOO_MANY_OCCURRENCES: &str = "TooManyOccurrences";
/// A backfill's task was deleted and created again (another UID, other keys).
pub const TASK_RECREATED: &str = "TaskRecreated";
/// The task's schedule changed under a backfill: its pending occurrence is gone.
pub const SCHEDULE_CHANGED: &str = "ScheduleChanged";

/// The `Ready=False` reason for a spec the webhook's checks ([`crate::validate`]) refuse.
pub fn invalid(problem: crate::validate::Problem) -> &'static str {
    use crate::validate::Problem;
    match problem {
        Problem::Schedule => INVALID_SCHEDULE,
        Problem::Target => INVALID_TARGET,
        Problem::Spec => INVALID_SPEC,
    }
}
