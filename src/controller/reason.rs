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
/// A reminder's `taskRef` names no task (yet).
pub const TASK_NOT_FOUND: &str = "TaskNotFound";
/// A reminder's task belongs to another user.
pub const USER_MISMATCH: &str = "UserMismatch";
/// A reminder's task is suspended.
pub const TASK_SUSPENDED: &str = "TaskSuspended";
/// A reminder's occurrence is no longer its task's pending one.
pub const OCCURRENCE_CHANGED: &str = "OccurrenceChanged";
