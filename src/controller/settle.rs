//! How one delivery attempt ends, the same for every trigger (schedule, manual run, backfill):
//! finished, with the record's outcome and reason, or retried under the same key, and when.
//! The README's response table is this function.
use chrono::{DateTime, Utc};

use super::{reason, truncate};
use crate::api::{Failure, Outcome};
use crate::dapr;

/// 409 answers in a row after which an occurrence counts as delivered (see the README's table).
pub const IN_PROGRESS_LIMIT: u32 = 5;

/// An attempt at one key, before its outcome.
#[derive(Clone, Copy, Debug)]
pub struct Attempt<'a> {
    pub key: &'a str,
    /// Failed attempts before this one.
    pub attempts: u32,
    /// 409 answers in a row before this one.
    pub in_progress: u32,
}

/// What the attempt settled.
#[derive(Clone, Debug, PartialEq)]
pub enum Settled {
    /// The occurrence is over.
    Finished {
        outcome: Outcome,
        /// Calls made for it, this one included.
        attempts: u32,
        backend_id: Option<String>,
        reason: Option<String>,
        /// The backend had the key already (its replay, or 409 until taken as delivered).
        already: bool,
    },
    /// Try the same key again at `at`.
    Retry {
        at: DateTime<Utc>,
        attempts: u32,
        in_progress: u32,
    },
}

/// Settles `outcome` of `attempt`; the failure, when there is one, is for `status.lastFailure`.
pub fn settle(
    attempt: Attempt<'_>,
    outcome: &dapr::Outcome,
    now: DateTime<Utc>,
) -> (Settled, Option<Failure>) {
    let attempts = attempt.attempts + 1;
    let failure = |reason: &str, message: String| Failure {
        time: now,
        reason: reason.into(),
        message,
        idempotency_key: attempt.key.to_string(),
    };
    let finished = |outcome, backend_id, reason, already| Settled::Finished {
        outcome,
        attempts,
        backend_id,
        reason,
        already,
    };
    let in_progress = if matches!(outcome, dapr::Outcome::InProgress) {
        attempt.in_progress + 1
    } else {
        0
    };
    match outcome {
        dapr::Outcome::Delivered {
            backend_id,
            replayed,
            ..
        } => (
            finished(
                Outcome::Delivered,
                backend_id.clone(),
                replayed.then(|| "the backend replayed its answer for this key".into()),
                *replayed,
            ),
            None,
        ),
        dapr::Outcome::InProgress if in_progress >= IN_PROGRESS_LIMIT => (
            finished(
                Outcome::Delivered,
                None,
                Some(format!(
                    "the backend answered 409 (key in use) {in_progress} times: taken as delivered"
                )),
                true,
            ),
            None,
        ),
        dapr::Outcome::Rejected {
            status: code,
            message,
        } => (
            finished(
                Outcome::Failed,
                None,
                Some(format!("rejected with HTTP {code}")),
                false,
            ),
            Some(failure(
                reason::REJECTED,
                format!("HTTP {code}: {}", truncate(message, 256)),
            )),
        ),
        dapr::Outcome::KeyReused { message } => (
            finished(
                Outcome::Failed,
                None,
                Some("HTTP 422: the backend has this key with another payload (edited between attempts)".into()),
                false,
            ),
            Some(failure(reason::KEY_REUSED, truncate(message, 256))),
        ),
        dapr::Outcome::Retryable {
            message,
            retry_after,
            ..
        } => {
            // The app's Retry-After is a floor: never sooner than it asks, nor than backoff.
            let backoff = dapr::backoff(attempts, attempt.key);
            let wait = retry_after.map_or(backoff, |after| after.max(backoff));
            (
                retry(now, wait, attempts, 0),
                Some(failure(reason::BACKEND_UNAVAILABLE, truncate(message, 256))),
            )
        }
        dapr::Outcome::CircuitOpen { retry_in, spread } => {
            // Not a call: the attempt count stays (at least 1, so Ready says the backend fails).
            let wait = dapr::circuit_retry(*retry_in, *spread, attempt.key);
            (retry(now, wait, attempt.attempts.max(1), 0), None)
        }
        dapr::Outcome::InProgress => (
            retry(now, dapr::backoff(attempts, attempt.key), attempts, in_progress),
            None,
        ),
    }
}

fn retry(
    now: DateTime<Utc>,
    wait: std::time::Duration,
    attempts: u32,
    in_progress: u32,
) -> Settled {
    Settled::Retry {
        at: now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(1)),
        attempts,
        in_progress,
    }
}
