//! The RecurringTask controller.
//!
//! Each task carries its *pending* occurrence in `status.nextOccurrence`, key included, written
//! before it is due. When it falls due, the leader calls the backend with that key and then, in
//! one guarded status write, records the outcome and the following occurrence. A crash anywhere
//! in between leaves the same key pending, so the retry carries the same key (the backend
//! absorbs it); the guard (a JSON-patch test on the pending key) makes a stale writer fail
//! instead of overwriting progress. Scheduling is event-driven: the controller requeues at the
//! next due instant and never polls.
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::delivery::{About, Delivery, OCCURRENCE_EVENT_TYPE, Sent};
use super::settle::{Attempt, Settled, settle};
use super::{
    Action, Context, Error, Guard, MANAGER, conditions, from_jiff, key_instant, reason, truncate,
    uid, until,
};
use crate::api::{
    CatchUpPolicy, FailureSuspension, OccurrenceRecord, Outcome, PendingOccurrence, RecurringTask,
    RecurringTaskStatus, Reminder, ReminderSpec, TASK_LABEL, TaskRef, Trigger,
};
use crate::dapr;
use crate::schedule::{CompileContext, Occurrence, Schedule, ScheduleError, parse_duration};

/// Kind label for metrics and health.
pub const KIND: &str = "RecurringTask";
/// How many missed occurrences one reconcile looks at; a longer backlog is worked off over
/// several reconciles, so no reconcile's work is unbounded.
const BACKLOG_SCAN: usize = 10_000;
/// Under `catchUp: Skip`, an occurrence reached this late counts as missed.
const ON_TIME: Duration = Duration::from_secs(60);
/// Default `catchUp.window` for `Latest`.
const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);
/// Default `catchUp.maxOccurrences` for `All`.
const DEFAULT_MAX_CATCH_UP: usize = 100;
/// A task seen without a status of ours never fires an occurrence due longer ago than this.
pub const FIRST_SIGHT_LOOKBACK: chrono::TimeDelta = chrono::TimeDelta::hours(1);
pub use super::settle::IN_PROGRESS_LIMIT;

/// The idempotency key of a task's occurrence: a function of the task's UID and the nominal
/// instant only, so every replica, retry and restart computes the same one.
pub fn occurrence_key(uid: &str, nominal: DateTime<Utc>) -> String {
    format!("rt-{uid}-{}", key_instant(nominal))
}

/// Compiles the task's schedule; the anchor is the creation time, the jitter seed the UID.
pub fn compile(task: &RecurringTask) -> Result<Schedule, ScheduleError> {
    let anchor = task
        .meta()
        .creation_timestamp
        .as_ref()
        .map_or_else(Utc::now, |t| from_jiff(t.0));
    let seed = task.uid().unwrap_or_default();
    Schedule::compile(&task.spec.schedule, &CompileContext { anchor, seed })
}

/// What a reconcile decided, before any I/O.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// Write this status (no delivery now), then wake at `wake` if any.
    Update {
        status: Box<RecurringTaskStatus>,
        wake: Option<DateTime<Utc>>,
        note: Option<(EventType, &'static str, String)>,
    },
    /// Call the backend for the pending occurrence now.
    Deliver(PendingOccurrence),
    /// Nothing to do before `at`.
    Wait(DateTime<Utc>),
    /// Nothing to do until the spec changes.
    Idle,
}

/// Decides what to do with `task` at `now`. Pure: the heart of the controller, unit-tested.
pub fn plan(task: &RecurringTask, schedule: &Schedule, uid: &str, now: DateTime<Utc>) -> Plan {
    let old = task.status.clone().unwrap_or_default();
    let pending = old.next_occurrence.clone();

    if task.spec.suspend {
        let mut status = old.clone();
        // Resuming starts the failure count again.
        status.consecutive_failures = 0;
        status.next_occurrence = None;
        status.upcoming.clear();
        let mut note = None;
        if let Some(p) = pending.as_ref().filter(|p| p.due <= now) {
            // Falling due while suspended is never delivered later (kubernetes#110919).
            record(
                &mut status,
                skip_record(p, now, reason::SUSPENDED),
                task.history_limit(),
            );
        }
        if pending.is_some() {
            note = Some((
                EventType::Normal,
                reason::SUSPENDED,
                "deliveries suspended; nothing falling due meanwhile will be delivered later"
                    .into(),
            ));
        }
        finish_status(
            &mut status,
            task,
            schedule,
            now,
            Some((
                true,
                reason::SUSPENDED,
                "suspended: no occurrence is delivered",
            )),
        );
        return update_if_changed(&old, status, None, note);
    }

    // The instant the next occurrence must follow. A task no operator has seen yet starts at its
    // creation: what fell due since (the operator was down) is missed, and `catchUp` decides.
    // Otherwise never before now: resuming or editing a task never fires anything retroactively
    // (kubernetes#63371, #110919).
    // A status without observedGeneration is first sight, or a status wiped or lost: either way
    // nothing due more than FIRST_SIGHT_LOOKBACK ago fires, so a wiped status never replays
    // the task's whole past.
    let floor = if old.observed_generation.is_none() {
        task.meta()
            .creation_timestamp
            .as_ref()
            .map_or(now, |t| from_jiff(t.0).min(now))
            .max(now - FIRST_SIGHT_LOOKBACK)
    } else {
        old.last_occurrence
            .as_ref()
            .map_or(now, |l| l.nominal.max(now))
    };

    let Some(p) = pending else {
        let next = schedule.next_after(floor);
        let mut status = old.clone();
        // An event only when deliveries resume (after suspend, or an edit that revives an ended
        // schedule): first sight is in status alone, so starting over 10,000 tasks costs one
        // write each, not two.
        let note = next
            .as_ref()
            .filter(|_| old.observed_generation.is_some())
            .map(|o| {
                (
                    EventType::Normal,
                    reason::SCHEDULED,
                    format!("next occurrence due {}", o.due.to_rfc3339()),
                )
            });
        set_pending(&mut status, schedule, uid, next, None);
        let wake = status.next_occurrence.as_ref().map(|p| p.due);
        finish_status(&mut status, task, schedule, now, None);
        return update_if_changed(&old, status, wake, note);
    };

    // Still an occurrence of the current schedule? An edit (or a re-created object) may have
    // removed it; then it is replaced by the first occurrence after now, never an older one.
    let current = schedule
        .next_after(p.nominal - chrono::Duration::nanoseconds(1))
        .filter(|o| o.nominal == p.nominal && occurrence_key(uid, o.nominal) == p.idempotency_key);
    let Some(current) = current else {
        let mut status = old.clone();
        if p.due <= now && p.attempts > 0 {
            record(
                &mut status,
                skip_record(&p, now, "ScheduleChanged"),
                task.history_limit(),
            );
        }
        set_pending(&mut status, schedule, uid, schedule.next_after(floor), None);
        let wake = status.next_occurrence.as_ref().map(|p| p.due);
        finish_status(&mut status, task, schedule, now, None);
        return update_if_changed(&old, status, wake, None);
    };
    if current.due != p.due {
        // Jitter changed: same occurrence, new due instant.
        let mut status = old.clone();
        set_pending(&mut status, schedule, uid, Some(current), None);
        let wake = status.next_occurrence.as_ref().map(|p| p.due);
        finish_status(&mut status, task, schedule, now, None);
        return update_if_changed(&old, status, wake, None);
    }

    let ready_at = p.retry_at.map_or(p.due, |r| r.max(p.due));
    if ready_at > now {
        let mut status = old.clone();
        finish_status(&mut status, task, schedule, now, None);
        return match update_if_changed(&old, status, Some(ready_at), None) {
            Plan::Idle => Plan::Wait(ready_at),
            other => other,
        };
    }

    // Due. Look at what else has fallen due since (the backlog after downtime).
    let catch_up = task.spec.catch_up.clone().unwrap_or_default();
    let policy = catch_up.policy.unwrap_or_default();
    let mut backlog = vec![Occurrence {
        nominal: p.nominal,
        due: p.due,
    }];
    for o in schedule.iter_after(p.nominal) {
        if o.due > now || backlog.len() >= BACKLOG_SCAN {
            break;
        }
        backlog.push(o);
    }
    let truncated = backlog.len() >= BACKLOG_SCAN;
    let deliver_index = match policy {
        CatchUpPolicy::All => {
            let max = catch_up
                .max_occurrences
                .map_or(DEFAULT_MAX_CATCH_UP, |m| m as usize)
                .max(1);
            backlog.len().saturating_sub(max)
        }
        CatchUpPolicy::Latest | CatchUpPolicy::Skip => backlog.len() - 1,
    };
    let chosen = backlog[deliver_index];
    let lateness = (now - chosen.due).to_std().unwrap_or(Duration::ZERO);
    let in_retry = deliver_index == 0 && p.attempts > 0;
    let allowed = match policy {
        CatchUpPolicy::All => true,
        CatchUpPolicy::Latest => in_retry || lateness <= window(&catch_up),
        CatchUpPolicy::Skip => in_retry || lateness <= ON_TIME,
    };
    if deliver_index == 0 && allowed && !truncated {
        return Plan::Deliver(p);
    }

    // Skip the backlog before the chosen one (and the chosen one too when it is too late), then
    // make the chosen one pending: its key is in status before it is delivered.
    let skip_until = if allowed && !truncated {
        deliver_index
    } else {
        backlog.len()
    };
    let reason = if truncated {
        "BacklogTooLong"
    } else {
        "Missed"
    };
    let mut status = old.clone();
    let limit = task.history_limit();
    for (i, o) in backlog.iter().take(skip_until).enumerate() {
        let key = occurrence_key(uid, o.nominal);
        let attempts = if i == 0 { p.attempts } else { 0 };
        let rec = OccurrenceRecord {
            nominal: o.nominal,
            due: o.due,
            idempotency_key: key,
            outcome: Outcome::Skipped,
            finished_at: now,
            attempts,
            backend_id: None,
            reason: Some(format!("{reason} (catchUp.policy {policy:?})")),
            trigger: None,
            completed_at: None,
            trace_id: None,
        };
        record(&mut status, rec, limit);
    }
    let next = if skip_until < backlog.len() {
        Some(backlog[skip_until])
    } else {
        backlog.last().and_then(|o| schedule.next_after(o.nominal))
    };
    set_pending(&mut status, schedule, uid, next, None);
    let wake = status.next_occurrence.as_ref().map(|p| p.due);
    finish_status(&mut status, task, schedule, now, None);
    let note = (
        EventType::Warning,
        reason::OCCURRENCES_SKIPPED,
        format!(
            "missed occurrences were skipped under catchUp.policy {policy:?}; see status.history"
        ),
    );
    Plan::Update {
        status: Box::new(status),
        wake,
        note: Some(note),
    }
}

fn window(c: &crate::api::CatchUp) -> Duration {
    c.window
        .as_deref()
        .and_then(|w| parse_duration(w).ok())
        .unwrap_or(DEFAULT_WINDOW)
}

fn skip_record(p: &PendingOccurrence, now: DateTime<Utc>, reason: &str) -> OccurrenceRecord {
    OccurrenceRecord {
        nominal: p.nominal,
        due: p.due,
        idempotency_key: p.idempotency_key.clone(),
        outcome: Outcome::Skipped,
        finished_at: now,
        attempts: p.attempts,
        backend_id: None,
        reason: Some(reason.into()),
        trigger: None,
        completed_at: None,
        trace_id: None,
    }
}

/// Puts the trace id of the attempt at `key` into every record of that occurrence the attempt
/// finished (last occurrence, last manual run, history); a retry finishes none.
pub fn stamp_trace(status: &mut RecurringTaskStatus, key: &str, trace_id: Option<&str>) {
    let Some(trace_id) = trace_id else {
        return;
    };
    let records = status
        .last_occurrence
        .iter_mut()
        .chain(status.last_manual_run.iter_mut().map(|r| &mut r.record))
        .chain(status.history.iter_mut());
    for rec in records.filter(|r| r.idempotency_key == key && r.trace_id.is_none()) {
        rec.trace_id = Some(trace_id.to_owned());
    }
}

/// Adds a finished occurrence: counters, `lastOccurrence`, bounded history (newest first).
fn record(status: &mut RecurringTaskStatus, rec: OccurrenceRecord, limit: usize) {
    match rec.outcome {
        Outcome::Delivered => status.delivered += 1,
        Outcome::Failed => status.failed += 1,
        Outcome::Skipped => status.skipped += 1,
    }
    status.history.insert(0, rec.clone());
    status.history.truncate(limit);
    status.last_occurrence = Some(rec);
}

fn set_pending(
    status: &mut RecurringTaskStatus,
    schedule: &Schedule,
    uid: &str,
    next: Option<Occurrence>,
    retry: Option<(u32, DateTime<Utc>)>,
) {
    status.next_occurrence = next.map(|o| PendingOccurrence {
        nominal: o.nominal,
        due: o.due,
        idempotency_key: occurrence_key(uid, o.nominal),
        attempts: retry.map_or(0, |r| r.0),
        retry_at: retry.map(|r| r.1),
        in_progress: 0,
    });
    status.upcoming = match &status.next_occurrence {
        Some(p) => schedule
            .iter_after(p.nominal)
            .take(UPCOMING)
            .map(|o| o.due)
            .collect(),
        None => vec![],
    };
}

/// How many future due instants `status.upcoming` lists.
const UPCOMING: usize = 3;

/// `Ready` of a task: whether it is, why, and in words.
type Readiness = (bool, &'static str, &'static str);

fn readiness(status: &RecurringTaskStatus) -> Readiness {
    match &status.next_occurrence {
        Some(p) if p.attempts > 0 => (
            false,
            reason::BACKEND_UNAVAILABLE,
            "the backend is failing; the occurrence is retried with backoff",
        ),
        Some(_) => (true, reason::SCHEDULED, "the next occurrence is scheduled"),
        None => (
            true,
            reason::FINISHED,
            "the schedule has no further occurrences",
        ),
    }
}

fn finish_status(
    status: &mut RecurringTaskStatus,
    task: &RecurringTask,
    schedule: &Schedule,
    now: DateTime<Utc>,
    readiness_override: Option<Readiness>,
) {
    let generation = task.meta().generation;
    // recur's own patch made the generation after the one it judged; a later one without
    // `suspend` is a resume (or an edit): the failure count starts again.
    if !task.spec.suspend
        && status
            .failure_suspension
            .as_ref()
            .is_some_and(|fs| generation.is_some_and(|g| g > fs.generation))
    {
        status.failure_suspension = None;
        status.consecutive_failures = 0;
    }
    let (ready, why, message) = readiness_override.unwrap_or_else(|| readiness(status));
    status.observed_generation = generation;
    status.schedule = Some(schedule.summary());
    conditions(&mut status.conditions, generation, now).ready(ready, why, message);
    conditions(&mut status.conditions, generation, now).valid();
    let (suspended, why, message) = suspension(task, status);
    conditions(&mut status.conditions, generation, now).suspended(suspended, why, &message);
}

/// `Suspended` of a task: by its user (`Suspended`, their `suspendReason`) or by recur
/// (`TooManyFailures`), or not (`Active`).
fn suspension(task: &RecurringTask, status: &RecurringTaskStatus) -> (bool, &'static str, String) {
    if !task.spec.suspend {
        return (false, reason::ACTIVE, "occurrences are delivered".into());
    }
    if let Some(fs) = &status.failure_suspension {
        return (true, reason::TOO_MANY_FAILURES, fs.message.clone());
    }
    let message = task
        .spec
        .suspend_reason
        .clone()
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "suspended (spec.suspend); no suspendReason given".into());
    (true, reason::SUSPENDED, message)
}

fn update_if_changed(
    old: &RecurringTaskStatus,
    new: RecurringTaskStatus,
    wake: Option<DateTime<Utc>>,
    note: Option<(EventType, &'static str, String)>,
) -> Plan {
    if *old == new {
        wake.map_or(Plan::Idle, Plan::Wait)
    } else {
        Plan::Update {
            status: Box::new(new),
            wake,
            note,
        }
    }
}

/// The status after an attempt at the pending occurrence `p`.
pub fn after_attempt(
    task: &RecurringTask,
    schedule: &Schedule,
    uid: &str,
    p: &PendingOccurrence,
    outcome: &dapr::Outcome,
    now: DateTime<Utc>,
) -> RecurringTaskStatus {
    let mut status = task.status.clone().unwrap_or_default();
    let attempt = Attempt {
        key: &p.idempotency_key,
        attempts: p.attempts,
        in_progress: p.in_progress,
    };
    let (settled, failure) = settle(attempt, outcome, now);
    if failure.is_some() {
        status.last_failure = failure.map(Box::new);
    }
    match settled {
        Settled::Finished {
            outcome,
            attempts,
            backend_id,
            reason,
            ..
        } => {
            let rec = OccurrenceRecord {
                nominal: p.nominal,
                due: p.due,
                idempotency_key: p.idempotency_key.clone(),
                outcome,
                finished_at: now,
                attempts,
                backend_id,
                reason,
                trigger: None,
                completed_at: None,
                trace_id: None,
            };
            count_failures(task, &mut status, &rec, now);
            record(&mut status, rec, task.history_limit());
            set_pending(
                &mut status,
                schedule,
                uid,
                schedule.next_after(p.nominal),
                None,
            );
        }
        Settled::Retry {
            at,
            attempts,
            in_progress,
        } => {
            let same = Occurrence {
                nominal: p.nominal,
                due: p.due,
            };
            set_pending(&mut status, schedule, uid, Some(same), Some((attempts, at)));
            if let Some(next) = status.next_occurrence.as_mut() {
                next.in_progress = in_progress;
            }
        }
    }
    finish_status(&mut status, task, schedule, now, None);
    status
}

/// Keeps `consecutiveFailures` and, when it reaches `failurePolicy.suspendAfter`, decides the
/// suspension (the reconcile then patches `spec.suspend`; see `failures.rs`).
fn count_failures(
    task: &RecurringTask,
    status: &mut RecurringTaskStatus,
    rec: &OccurrenceRecord,
    now: DateTime<Utc>,
) {
    match rec.outcome {
        Outcome::Failed => {
            status.consecutive_failures = status.consecutive_failures.saturating_add(1)
        }
        Outcome::Delivered => status.consecutive_failures = 0,
        Outcome::Skipped => {}
    }
    let Some(limit) = task
        .spec
        .failure_policy
        .as_ref()
        .and_then(|f| f.suspend_after)
    else {
        return;
    };
    if status.consecutive_failures < limit || status.failure_suspension.is_some() {
        return;
    }
    let last = rec.reason.as_deref().unwrap_or("a permanent failure");
    status.failure_suspension = Some(Box::new(FailureSuspension {
        generation: task.meta().generation.unwrap_or_default(),
        time: now,
        failures: status.consecutive_failures,
        message: format!(
            "suspended by recur: {} occurrences in a row failed permanently (failurePolicy.suspendAfter {limit}, last: {last}); see status.lastFailure, then resume",
            status.consecutive_failures
        ),
    }));
}

/// What a task's event is about (pub/sub targets): an occurrence of task `name`, due at `due`.
pub fn about(name: &str, due: DateTime<Utc>) -> About<'_> {
    About {
        event_type: OCCURRENCE_EVENT_TYPE,
        plural: "recurringtasks",
        name,
        due,
    }
}

/// The JSON body sent for an occurrence: the same for the schedule, a manual run and a backfill
/// but for `trigger` (a manual run's `scheduled_at` is when it was asked for).
pub fn body(
    task: &RecurringTask,
    nominal: DateTime<Utc>,
    due: DateTime<Utc>,
    key: &str,
    trigger: Trigger,
) -> serde_json::Value {
    json!({
        "title": task.spec.title,
        "description": task.spec.description,
        "user_id": task.spec.user_id,
        "schedule": task.spec.schedule,
        "scheduled_at": nominal,
        "due_at": due,
        "idempotency_key": key,
        "trigger": trigger.as_str(),
        "namespace": task.namespace(),
        "task": {
            "namespace": task.namespace(),
            "name": task.name_any(),
            "uid": task.uid(),
        },
        "payload": task.spec.payload.clone().unwrap_or_default(),
    })
}

mod cached_history;
mod effects;
mod failures;
mod left_out;
mod manual;
mod reminders;

pub use left_out::LeftOut;
use left_out::Restored;
pub use manual::{ManualPlan, after_manual_attempt, manual_key, plan_manual};

use reminders::{ensure_reminders, prune_reminders};
pub use reminders::{reminder_name, task_label_value};

#[cfg(test)]
mod operations_tests;
#[cfg(test)]
mod tests;
