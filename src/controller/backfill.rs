//! The Backfill controller: delivers every occurrence of a task's schedule in `[from, to)`, in
//! order, under the keys the schedule itself uses (`rt-<uid>-<nominal>`), so the backend absorbs
//! those it already has.
//!
//! Exactly once, as for a task: the occurrence about to be delivered (`next`, `nextKey`) is in
//! status before its call, and one guarded write records its outcome together with the
//! following occurrence. A crash, or a new leader, calls the same key again; the backend
//! answers with its replay (counted as `alreadyDelivered`).
//!
//! Pacing: one occurrence per reconcile, and `retryAt` set `1/rate` after the slot of the one
//! before (not after its end: the call and the write would slow it below `rate`). The pace is
//! in status, not in memory, because every status write wakes the object again at once (the
//! work queue keeps the earliest request) and a restarted operator must not burst either; no
//! worker waits in a sleep meanwhile.
//!
//! Decisions an on-call engineer can rely on:
//! - `to` in the future is clamped to the start (`startedAt`): what falls due after it is the
//!   schedule's to deliver.
//! - The occurrence the task's schedule has pending, and any after it, wait until the schedule
//!   has moved past them: the schedule's own call must not find its key taken.
//! - A suspended task holds its backfill (Pending, or Running without deliveries, `Ready=False`
//!   with reason `TaskSuspended`) until it is resumed: suspending a task stops all of its
//!   deliveries.
//! - The task must stay the one the backfill started with (its UID is in the keys): deleted or
//!   re-created means Failed (and the garbage collector deletes the backfill with its owner).
//! - A `409` (the key is being processed) or `422` (the backend has the key with another body,
//!   such as the schedule's own `"trigger": "schedule"`) means the backend has that occurrence:
//!   `alreadyDelivered`, like a replay.
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::settle::{Attempt, Settled, settle};
use super::task::occurrence_key;
use super::{conditions, reason};
use crate::api::{
    BACKFILL_DEFAULT_MAX, BACKFILL_DEFAULT_RATE, BACKFILL_DEFAULT_TTL_SECONDS, BACKFILL_MAX_CAP,
    Backfill, BackfillPhase, BackfillStatus, Failure, Outcome, RecurringTask,
};
use crate::dapr;
use crate::schedule::{Occurrence, Schedule};
use crate::tenancy::Resolved;

mod effects;

/// Kind label for metrics and health.
pub const KIND: &str = "Backfill";
/// How soon a backfill waiting for its task (missing or suspended) looks again: nothing about
/// the backfill changes when the task does.
pub const TASK_RECHECK: Duration = Duration::from_secs(10);
/// How far the occurrences of a range are counted, to name their number when there are too
/// many; beyond it the message says "more than".
const COUNT_LIMIT: usize = 100_000;

/// The task as a backfill sees it, read just now.
pub enum TaskView<'a> {
    /// No task of that name in the backfill's namespace.
    Missing,
    /// Found, but its schedule or target cannot be used: why (a reason), and in words.
    Unusable {
        task: &'a RecurringTask,
        reason: &'static str,
        message: String,
    },
    /// Found and usable: its compiled schedule and resolved target.
    Usable {
        task: &'a RecurringTask,
        schedule: &'a Schedule,
        target: &'a Resolved,
    },
}

/// The occurrence to deliver now.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    pub nominal: DateTime<Utc>,
    pub due: DateTime<Utc>,
    pub key: String,
    /// Failed attempts at it so far.
    pub attempts: u32,
}

/// An event to publish after a status write.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    pub type_: EventType,
    pub reason: &'static str,
    pub message: String,
}

/// What a reconcile of an unfinished backfill decided, before any I/O.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// Write this status (no call), then look again at `wake` if any.
    Update {
        status: Box<BackfillStatus>,
        wake: Option<DateTime<Utc>>,
        note: Option<Note>,
    },
    /// Call the backend for this occurrence now (its key is in status).
    Deliver(Pending),
    /// Nothing to do before this instant.
    Wait(DateTime<Utc>),
}

/// What becomes of a finished backfill.
#[derive(Debug, PartialEq)]
pub enum Expiry {
    /// `ttlSecondsAfterFinished` has passed: delete it.
    Delete,
    /// Delete it at this instant.
    At(DateTime<Utc>),
}

/// `None` while the backfill is not finished; else whether it goes now or when
/// (`ttlSecondsAfterFinished` after `finishedAt`). Pure.
pub fn expiry(bf: &Backfill, now: DateTime<Utc>) -> Option<Expiry> {
    let at = expires_at(bf, bf.status.as_ref()?, now)?;
    Some(if at <= now {
        Expiry::Delete
    } else {
        Expiry::At(at)
    })
}

/// When a backfill with `status` is deleted: `None` while it is not finished.
pub fn expires_at(
    bf: &Backfill,
    status: &BackfillStatus,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if !matches!(
        status.phase,
        BackfillPhase::Complete | BackfillPhase::Failed
    ) {
        return None;
    }
    // Every write that finishes a backfill sets finishedAt; one without it (edited by hand)
    // has no instant to count from and is kept.
    let finished = status.finished_at.unwrap_or(now);
    let ttl = bf
        .spec
        .ttl_seconds_after_finished
        .unwrap_or(BACKFILL_DEFAULT_TTL_SECONDS);
    Some(
        finished
            .checked_add_signed(chrono::Duration::seconds(i64::from(ttl)))
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
    )
}

/// `spec.maxOccurrences`, its default and its hard cap applied.
pub fn max_occurrences(bf: &Backfill) -> u64 {
    u64::from(
        bf.spec
            .max_occurrences
            .unwrap_or(BACKFILL_DEFAULT_MAX)
            .clamp(1, BACKFILL_MAX_CAP),
    )
}

/// The time between two deliveries: `1/spec.rate`.
pub fn pace(bf: &Backfill) -> chrono::Duration {
    let rate = bf.spec.rate.unwrap_or(BACKFILL_DEFAULT_RATE).max(1);
    chrono::Duration::microseconds(1_000_000 / i64::from(rate))
}

/// When the occurrence after one called at its slot `retry_at` (`None`: at once) may be called:
/// `1/rate` after that slot, so the call and its status write do not slow the pace below
/// `spec.rate`, and never before `now`, so a backfill resumed late does not burst (calls are one
/// at a time: at most one slot in each `1/rate`).
fn next_slot(bf: &Backfill, retry_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
    let slot = retry_at.map_or(now, |at| at.min(now));
    (slot + pace(bf)).max(now)
}

/// The end of the range (exclusive): `spec.to`, clamped to the start once started.
pub fn range_end(bf: &Backfill, status: &BackfillStatus) -> DateTime<Utc> {
    status
        .started_at
        .map_or(bf.spec.to, |started| bf.spec.to.min(started))
}

/// When a backfill waiting on its task looks again: [`TASK_RECHECK`] after `now`.
fn task_recheck(now: DateTime<Utc>) -> DateTime<Utc> {
    now + chrono::Duration::from_std(TASK_RECHECK).unwrap_or_default()
}

/// The occurrences of `schedule` in `[from, end)`, in order.
fn in_range(
    schedule: &Schedule,
    from: DateTime<Utc>,
    end: DateTime<Utc>,
) -> impl Iterator<Item = Occurrence> + '_ {
    schedule
        .iter_after(just_before(from))
        .take_while(move |o| o.nominal < end)
}

/// The last instant before `t`: nominal instants have no fraction below the nanosecond, so what
/// comes after it is `>= t`.
fn just_before(t: DateTime<Utc>) -> DateTime<Utc> {
    t.checked_sub_signed(chrono::Duration::nanoseconds(1))
        .unwrap_or(t)
}

/// The ownerReference a backfill gets to its task: the garbage collector deletes it with the
/// task. Not a controller reference (the task's controller does not manage backfills), and it
/// does not block the task's deletion.
pub fn owner_reference(task: &RecurringTask) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: RecurringTask::api_version(&()).into_owned(),
        kind: RecurringTask::kind(&()).into_owned(),
        name: task.meta().name.clone()?,
        uid: task.uid()?,
        controller: Some(false),
        block_owner_deletion: Some(false),
    })
}

/// True when `bf` must get an ownerReference to `task` before anything else: the task is the
/// one the backfill started with (or it has not started) and does not own it yet.
pub fn needs_owner(bf: &Backfill, task: &RecurringTask) -> bool {
    let Some(uid) = task.uid() else {
        return false;
    };
    let started_with = bf.status.as_ref().and_then(|s| s.task_uid.as_deref());
    started_with.is_none_or(|u| u == uid) && !bf.owner_references().iter().any(|o| o.uid == uid)
}

/// Decides what to do with an unfinished backfill at `now`. Pure.
pub fn plan(bf: &Backfill, task: &TaskView<'_>, now: DateTime<Utc>) -> Plan {
    let old = bf.status.clone().unwrap_or_default();
    let started = old.started_at.is_some();
    let name = &bf.spec.task_ref.name;
    let (task, schedule) = match task {
        TaskView::Missing if started => {
            return fail(
                bf,
                &old,
                reason::TASK_NOT_FOUND,
                format!("task {name:?} was deleted during the backfill; nothing more is delivered"),
                now,
            );
        }
        TaskView::Missing => {
            let ns = bf.meta().namespace.as_deref().unwrap_or_default();
            return wait_for_task(
                bf,
                &old,
                reason::TASK_NOT_FOUND,
                format!(
                    "spec.taskRef: task {name:?} does not exist in namespace {ns}; the backfill starts when it is created"
                ),
                now,
            );
        }
        TaskView::Unusable {
            task,
            reason,
            message,
        } => {
            return match recreated(bf, &old, task, now) {
                Some(plan) => plan,
                None => fail(bf, &old, reason, message.clone(), now),
            };
        }
        TaskView::Usable { task, schedule, .. } => (*task, *schedule),
    };
    if let Some(plan) = recreated(bf, &old, task, now) {
        return plan;
    }
    if task.spec.suspend {
        let message = if started {
            format!("task {name:?} is suspended: deliveries resume when it is resumed")
        } else {
            format!("task {name:?} is suspended: the backfill starts when it is resumed")
        };
        return wait_for_task(bf, &old, reason::TASK_SUSPENDED, message, now);
    }
    let uid = task.uid().unwrap_or_default();
    if !started {
        return start(bf, &old, schedule, &uid, now);
    }
    let (Some(nominal), Some(key)) = (old.next, old.next_key.clone()) else {
        // Running with nothing left (a write interrupted by hand): finish it.
        let mut status = old.clone();
        complete(bf, &mut status, now);
        return update(&old, status, None, Some(completed_note(bf)));
    };
    // An edit of the task's schedule may have removed the occurrence; the rest of the range
    // would no longer be the total counted at the start.
    let current = schedule
        .next_after(just_before(nominal))
        .filter(|o| o.nominal == nominal && occurrence_key(&uid, o.nominal) == key);
    let Some(current) = current else {
        return fail(
            bf,
            &old,
            reason::SCHEDULE_CHANGED,
            format!(
                "the schedule of task {name:?} changed during the backfill: {} is no longer one of its occurrences; create another backfill for the rest of the range",
                nominal.to_rfc3339()
            ),
            now,
        );
    };
    // What the task's schedule still has pending (its jittered due instant not reached, or its
    // call retrying) is the schedule's: sent first from here, the schedule's own call would find
    // the key taken with another body (422) and record a failure. Once the schedule has moved
    // past it, it is sent from here too (the backend has it: `alreadyDelivered`).
    let schedules = task
        .status
        .as_ref()
        .and_then(|s| s.next_occurrence.as_ref())
        .filter(|p| p.nominal <= nominal);
    // Conditions as they are while delivering (say, after the task was resumed), or waiting.
    let mut status = old.clone();
    running(bf, &mut status, now);
    if schedules.is_some() {
        let message = format!(
            "waiting: {} is still pending in task {name:?}'s own schedule (its jitter, or its retries); it is sent once the schedule has moved past it",
            nominal.to_rfc3339()
        );
        conditions(&mut status.conditions, bf.meta().generation, now).ready(
            false,
            reason::BACKFILLING,
            &message,
        );
    }
    let ready_at = old.retry_at.filter(|at| *at > now);
    let wake = match schedules {
        Some(p) => {
            let recheck = task_recheck(now);
            let schedule_moves = p.retry_at.unwrap_or(p.due);
            Some(recheck.max(schedule_moves).max(ready_at.unwrap_or(now)))
        }
        None => None,
    };
    if status != old {
        return update(&old, status, Some(wake.or(ready_at).unwrap_or(now)), None);
    }
    if let Some(at) = wake {
        return Plan::Wait(at);
    }
    match ready_at {
        Some(at) => Plan::Wait(at),
        None => Plan::Deliver(Pending {
            nominal,
            due: current.due,
            key,
            attempts: old.attempts,
        }),
    }
}

/// Failed when the task is not the one the backfill started with: its keys are made of the
/// first task's UID.
fn recreated(
    bf: &Backfill,
    old: &BackfillStatus,
    task: &RecurringTask,
    now: DateTime<Utc>,
) -> Option<Plan> {
    let started_with = old.task_uid.as_deref()?;
    let uid = task.uid().unwrap_or_default();
    (started_with != uid).then(|| {
        fail(
            bf,
            old,
            reason::TASK_RECREATED,
            format!(
                "task {:?} was deleted and created again (UID {started_with} became {uid}) during the backfill; the keys of the new task differ, nothing more is delivered",
                bf.spec.task_ref.name
            ),
            now,
        )
    })
}

/// Counts the range and, unless it holds too many, makes its first occurrence `next`.
fn start(
    bf: &Backfill,
    old: &BackfillStatus,
    schedule: &Schedule,
    uid: &str,
    now: DateTime<Utc>,
) -> Plan {
    let end = bf.spec.to.min(now);
    let from = bf.spec.from;
    let counted = in_range(schedule, from, end).take(COUNT_LIMIT + 1).count() as u64;
    let max = max_occurrences(bf);
    if counted > max {
        let count = if counted > COUNT_LIMIT as u64 {
            format!("more than {COUNT_LIMIT}")
        } else {
            counted.to_string()
        };
        return fail(
            bf,
            old,
            reason::TOO_MANY_OCCURRENCES,
            format!(
                "the range holds {count} occurrences of task {:?}, more than spec.maxOccurrences ({max}); nothing was delivered: narrow the range or raise spec.maxOccurrences (at most {BACKFILL_MAX_CAP})",
                bf.spec.task_ref.name
            ),
            now,
        );
    }
    let mut status = old.clone();
    status.task_uid = Some(uid.to_string());
    status.total = counted;
    status.delivered = 0;
    status.already_delivered = 0;
    status.failed = 0;
    status.attempts = 0;
    status.retry_at = None;
    status.started_at = Some(now);
    status.finished_at = None;
    let first = in_range(schedule, from, end).next();
    status.next = first.map(|o| o.nominal);
    status.next_key = first.map(|o| occurrence_key(uid, o.nominal));
    if first.is_none() {
        complete(bf, &mut status, now);
        return update(old, status, None, Some(completed_note(bf)));
    }
    status.phase = BackfillPhase::Running;
    running(bf, &mut status, now);
    let clamped = if end < bf.spec.to {
        " (spec.to is later than the start: the schedule itself delivers what falls due from now on)"
    } else {
        ""
    };
    let note = Note {
        type_: EventType::Normal,
        reason: reason::BACKFILLING,
        message: format!(
            "delivering {counted} occurrences of task {:?} in [{}, {}){clamped}",
            bf.spec.task_ref.name,
            from.to_rfc3339(),
            end.to_rfc3339()
        ),
    };
    update(old, status, Some(now), Some(note))
}

/// The status after an attempt at `p`: counted and the next occurrence made pending (paced by
/// `spec.rate`), or the same one retried with backoff.
pub fn after_call(
    bf: &Backfill,
    schedule: &Schedule,
    p: &Pending,
    outcome: &dapr::Outcome,
    now: DateTime<Utc>,
) -> BackfillStatus {
    let mut status = bf.status.clone().unwrap_or_default();
    let tally = tally(p, outcome, now);
    match tally {
        Tally::Retry {
            at,
            attempts,
            failure,
        } => {
            status.attempts = attempts;
            status.retry_at = Some(at);
            if failure.is_some() {
                status.last_failure = failure;
            }
            running(bf, &mut status, now);
            return status;
        }
        Tally::Delivered => status.delivered += 1,
        Tally::Already => status.already_delivered += 1,
        Tally::Failed(failure) => {
            status.failed += 1;
            if failure.is_some() {
                status.last_failure = failure;
            }
        }
    }
    status.attempts = 0;
    let uid = status.task_uid.clone().unwrap_or_default();
    let next = schedule
        .next_after(p.nominal)
        .filter(|o| o.nominal < range_end(bf, &status));
    match next {
        Some(o) => {
            status.next = Some(o.nominal);
            status.next_key = Some(occurrence_key(&uid, o.nominal));
            status.retry_at = Some(next_slot(bf, status.retry_at, now));
            running(bf, &mut status, now);
        }
        None => complete(bf, &mut status, now),
    }
    status
}

/// How an attempt counts.
#[derive(Debug, PartialEq)]
pub enum Tally {
    /// The backend took the occurrence now.
    Delivered,
    /// The backend had it already (a replay, 409 or 422).
    Already,
    /// Refused for good; the failure is for `lastFailure`.
    Failed(Option<Failure>),
    /// The same key again at `at`.
    Retry {
        at: DateTime<Utc>,
        attempts: u32,
        failure: Option<Failure>,
    },
}

/// Counts an attempt's outcome. The shared rules (`settle`) but for 409 and 422, which for a
/// backfill both mean the backend holds the key already: the occurrence is there, be it the
/// schedule's delivery (another `trigger` in the body, hence 422) or one in flight (409).
pub fn tally(p: &Pending, outcome: &dapr::Outcome, now: DateTime<Utc>) -> Tally {
    if matches!(
        outcome,
        dapr::Outcome::InProgress | dapr::Outcome::KeyReused { .. }
    ) {
        return Tally::Already;
    }
    let attempt = Attempt {
        key: &p.key,
        attempts: p.attempts,
        in_progress: 0,
    };
    match settle(attempt, outcome, now) {
        (
            Settled::Finished {
                outcome: Outcome::Delivered,
                already,
                ..
            },
            _,
        ) => {
            if already {
                Tally::Already
            } else {
                Tally::Delivered
            }
        }
        (Settled::Finished { .. }, failure) => Tally::Failed(failure),
        (
            Settled::Retry {
                at,
                attempts,
                in_progress: _,
            },
            failure,
        ) => Tally::Retry {
            at,
            attempts,
            failure,
        },
    }
}

/// The conditions while delivering.
fn running(bf: &Backfill, status: &mut BackfillStatus, now: DateTime<Utc>) {
    let generation = bf.meta().generation;
    status.observed_generation = generation;
    status.phase = BackfillPhase::Running;
    let (why, message) = if status.attempts > 0 {
        (
            reason::BACKEND_UNAVAILABLE,
            "the backend is failing; the occurrence is retried with backoff",
        )
    } else {
        (reason::BACKFILLING, "delivering the range's occurrences")
    };
    conditions(&mut status.conditions, generation, now).ready(false, why, message);
    conditions(&mut status.conditions, generation, now).valid();
}

/// Every occurrence of the range ended.
fn complete(bf: &Backfill, status: &mut BackfillStatus, now: DateTime<Utc>) {
    let generation = bf.meta().generation;
    status.observed_generation = generation;
    status.phase = BackfillPhase::Complete;
    status.next = None;
    status.next_key = None;
    status.attempts = 0;
    status.retry_at = None;
    status.finished_at = Some(now);
    let message = format!(
        "complete: of {} occurrences, {} delivered, {} already delivered, {} failed",
        status.total, status.delivered, status.already_delivered, status.failed
    );
    conditions(&mut status.conditions, generation, now).ready(true, reason::COMPLETE, &message);
    conditions(&mut status.conditions, generation, now).valid();
}

fn completed_note(bf: &Backfill) -> Note {
    Note {
        type_: EventType::Normal,
        reason: reason::COMPLETE,
        message: format!(
            "every occurrence of task {:?} in the range ended; see status for the counts",
            bf.spec.task_ref.name
        ),
    }
}

/// Failed for good: nothing more is delivered.
fn fail(
    bf: &Backfill,
    old: &BackfillStatus,
    why: &'static str,
    message: String,
    now: DateTime<Utc>,
) -> Plan {
    let generation = bf.meta().generation;
    let mut status = old.clone();
    status.observed_generation = generation;
    status.phase = BackfillPhase::Failed;
    status.next = None;
    status.next_key = None;
    status.attempts = 0;
    status.retry_at = None;
    status.finished_at = Some(now);
    conditions(&mut status.conditions, generation, now).ready(false, why, &message);
    conditions(&mut status.conditions, generation, now).stalled(true, why, &message);
    let note = Note {
        type_: EventType::Warning,
        reason: why,
        message,
    };
    update(old, status, None, Some(note))
}

/// Not delivering until the task is there and not suspended; looked at again after
/// [`TASK_RECHECK`].
fn wait_for_task(
    bf: &Backfill,
    old: &BackfillStatus,
    why: &'static str,
    message: String,
    now: DateTime<Utc>,
) -> Plan {
    let generation = bf.meta().generation;
    let mut status = old.clone();
    status.observed_generation = generation;
    conditions(&mut status.conditions, generation, now).ready(false, why, &message);
    conditions(&mut status.conditions, generation, now).valid();
    let wake = task_recheck(now);
    // One event when it starts waiting, not one per look.
    let note = (condition_reason(old) != Some(why)).then_some(Note {
        type_: EventType::Normal,
        reason: why,
        message,
    });
    update(old, status, Some(wake), note)
}

fn condition_reason(status: &BackfillStatus) -> Option<&str> {
    crate::api::condition(&status.conditions, reason::READY).map(|c| c.reason.as_str())
}

fn update(
    old: &BackfillStatus,
    new: BackfillStatus,
    wake: Option<DateTime<Utc>>,
    note: Option<Note>,
) -> Plan {
    match wake {
        Some(at) if *old == new => Plan::Wait(at),
        _ => Plan::Update {
            status: Box::new(new),
            wake,
            note,
        },
    }
}

/// A backfill acts for its task's user, whom only the task names: the reconcile span shows none.
impl crate::api::ForUser for Backfill {
    fn user_id(&self) -> &str {
        ""
    }
}

#[cfg(test)]
mod tests;
