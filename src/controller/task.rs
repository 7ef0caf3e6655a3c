//! The RecurringTask controller.
//!
//! Each task carries its *pending* occurrence in `status.nextOccurrence`, key included, written
//! before it is due. When it falls due, the leader calls the backend with that key and then, in
//! one guarded status write, records the outcome and the following occurrence. A crash anywhere
//! in between leaves the same key pending, so the retry carries the same key (the backend
//! absorbs it); the guard (a JSON-patch test on the pending key) makes a stale writer fail
//! instead of overwriting progress. Scheduling is event-driven: the controller requeues at the
//! next due instant and never polls.
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, info, info_span, warn};

use super::{
    Context, Error, Guard, MANAGER, StatusWrite, key_instant, name_ns, set_condition, truncate,
    uid, until, write_status,
};
use crate::api::{
    CatchUpPolicy, Failure, OccurrenceRecord, Outcome, PendingOccurrence, RecurringTask,
    RecurringTaskStatus, Reminder, ReminderSpec, TASK_LABEL, TaskRef,
};
use crate::dapr::{self, AppId, Invocation, Method};
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
/// 409 answers in a row after which an occurrence counts as delivered (see the README's table).
pub const IN_PROGRESS_LIMIT: u32 = 5;

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

fn from_jiff(t: jiff::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32).unwrap_or_default()
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
    let generation = task.meta().generation;
    let pending = old.next_occurrence.clone();

    if task.spec.suspend {
        let mut status = old.clone();
        status.next_occurrence = None;
        status.upcoming.clear();
        let mut note = None;
        if let Some(p) = pending.as_ref().filter(|p| p.due <= now) {
            // Falling due while suspended is never delivered later (kubernetes#110919).
            record(
                &mut status,
                skip_record(p, now, "Suspended"),
                task.history_limit(),
            );
        }
        if pending.is_some() {
            note = Some((
                EventType::Normal,
                "Suspended",
                "deliveries suspended; nothing falling due meanwhile will be delivered later"
                    .into(),
            ));
        }
        finish_status(
            &mut status,
            schedule,
            generation,
            now,
            Some(("Suspended", "suspended: no occurrence is delivered")),
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
                    "Scheduled",
                    format!("next occurrence due {}", o.due.to_rfc3339()),
                )
            });
        set_pending(&mut status, schedule, uid, next, None);
        let wake = status.next_occurrence.as_ref().map(|p| p.due);
        finish_status(&mut status, schedule, generation, now, None);
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
        finish_status(&mut status, schedule, generation, now, None);
        return update_if_changed(&old, status, wake, None);
    };
    if current.due != p.due {
        // Jitter changed: same occurrence, new due instant.
        let mut status = old.clone();
        set_pending(&mut status, schedule, uid, Some(current), None);
        let wake = status.next_occurrence.as_ref().map(|p| p.due);
        finish_status(&mut status, schedule, generation, now, None);
        return update_if_changed(&old, status, wake, None);
    }

    let ready_at = p.retry_at.map_or(p.due, |r| r.max(p.due));
    if ready_at > now {
        let mut status = old.clone();
        finish_status(&mut status, schedule, generation, now, None);
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
    finish_status(&mut status, schedule, generation, now, None);
    let note = (
        EventType::Warning,
        "OccurrencesSkipped",
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

fn ready_reason(status: &RecurringTaskStatus) -> (&'static str, &'static str) {
    match &status.next_occurrence {
        Some(p) if p.attempts > 0 => (
            "BackendUnavailable",
            "the backend is failing; the occurrence is retried with backoff",
        ),
        Some(_) => ("Scheduled", "the next occurrence is scheduled"),
        None => ("Finished", "the schedule has no further occurrences"),
    }
}

fn finish_status(
    status: &mut RecurringTaskStatus,
    schedule: &Schedule,
    generation: Option<i64>,
    now: DateTime<Utc>,
    reason: Option<(&'static str, &'static str)>,
) {
    let (reason, message) = reason.unwrap_or_else(|| ready_reason(status));
    status.observed_generation = generation;
    status.schedule = Some(schedule.summary());
    let ready = reason != "BackendUnavailable";
    set_condition(
        &mut status.conditions,
        "Ready",
        ready,
        reason,
        message,
        generation,
        now,
    );
    set_condition(
        &mut status.conditions,
        "Stalled",
        false,
        "Valid",
        "the spec is valid",
        generation,
        now,
    );
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
    let generation = task.meta().generation;
    let attempts = p.attempts + 1;
    let finished = |outcome, backend_id, reason| OccurrenceRecord {
        nominal: p.nominal,
        due: p.due,
        idempotency_key: p.idempotency_key.clone(),
        outcome,
        finished_at: now,
        attempts,
        backend_id,
        reason,
    };
    let in_progress = if matches!(outcome, dapr::Outcome::InProgress) {
        p.in_progress + 1
    } else {
        0
    };
    let done = match outcome {
        dapr::Outcome::Delivered {
            backend_id,
            replayed,
            ..
        } => Some(finished(
            Outcome::Delivered,
            backend_id.clone(),
            replayed.then(|| "the backend replayed its answer for this key".into()),
        )),
        dapr::Outcome::InProgress if in_progress >= IN_PROGRESS_LIMIT => Some(finished(
            Outcome::Delivered,
            None,
            Some(format!(
                "the backend answered 409 (key in use) {in_progress} times: taken as delivered"
            )),
        )),
        dapr::Outcome::Rejected {
            status: code,
            message,
        } => {
            let message = truncate(message, 256);
            status.last_failure = Some(Failure {
                time: now,
                reason: "Rejected".into(),
                message: format!("HTTP {code}: {message}"),
                idempotency_key: p.idempotency_key.clone(),
            });
            Some(finished(
                Outcome::Failed,
                None,
                Some(format!("rejected with HTTP {code}")),
            ))
        }
        dapr::Outcome::KeyReused { message } => {
            status.last_failure = Some(Failure {
                time: now,
                reason: "KeyReused".into(),
                message: truncate(message, 256),
                idempotency_key: p.idempotency_key.clone(),
            });
            Some(finished(
                Outcome::Failed,
                None,
                Some("HTTP 422: the backend has this key with another payload (edited between attempts)".into()),
            ))
        }
        dapr::Outcome::Retryable { message, .. } => {
            status.last_failure = Some(Failure {
                time: now,
                reason: "BackendUnavailable".into(),
                message: truncate(message, 256),
                idempotency_key: p.idempotency_key.clone(),
            });
            None
        }
        dapr::Outcome::InProgress | dapr::Outcome::CircuitOpen { .. } => None,
    };
    match done {
        Some(rec) => {
            record(&mut status, rec, task.history_limit());
            set_pending(
                &mut status,
                schedule,
                uid,
                schedule.next_after(p.nominal),
                None,
            );
        }
        None => {
            let retry_in = match outcome {
                dapr::Outcome::CircuitOpen { retry_in } => *retry_in,
                _ => dapr::backoff(attempts, &p.idempotency_key),
            };
            let retry_at =
                now + chrono::Duration::from_std(retry_in).unwrap_or(chrono::Duration::seconds(1));
            let nominal = Occurrence {
                nominal: p.nominal,
                due: p.due,
            };
            let attempts = if matches!(outcome, dapr::Outcome::CircuitOpen { .. }) {
                p.attempts.max(1)
            } else {
                attempts
            };
            set_pending(
                &mut status,
                schedule,
                uid,
                Some(nominal),
                Some((attempts, retry_at)),
            );
            if let Some(next) = status.next_occurrence.as_mut() {
                next.in_progress = in_progress;
            }
        }
    }
    finish_status(&mut status, schedule, generation, now, None);
    status
}

/// The JSON body sent for an occurrence.
pub fn body(task: &RecurringTask, p: &PendingOccurrence) -> serde_json::Value {
    json!({
        "title": task.spec.title,
        "description": task.spec.description,
        "user_id": task.spec.user_id,
        "schedule": task.spec.schedule,
        "scheduled_at": p.nominal,
        "due_at": p.due,
        "idempotency_key": p.idempotency_key,
        "task": {
            "namespace": task.namespace(),
            "name": task.name_any(),
            "uid": task.uid(),
        },
        "payload": task.spec.payload.clone().unwrap_or_default(),
    })
}

async fn reconcile(task: Arc<RecurringTask>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (name, ns) = name_ns(task.as_ref())?;
    let span = info_span!("reconcile", kind = KIND, namespace = %ns, name = %name, user = %task.spec.user_id);
    async move {
        let started = Instant::now();
        ctx.metrics.reconciled(KIND);
        ctx.health.heartbeat();
        let result = reconcile_inner(&task, &ctx, &name, &ns).await;
        ctx.metrics
            .reconcile_duration(KIND, started.elapsed().as_secs_f64());
        result
    }
    .instrument(span)
    .await
}

async fn reconcile_inner(
    task: &RecurringTask,
    ctx: &Context,
    name: &str,
    ns: &str,
) -> Result<Action, Error> {
    // Only the leader writes or delivers; leadership gained triggers a reconcile of every task.
    if let Some(action) = super::leadership_gate(ctx) {
        return Ok(action);
    }
    let uid = uid(task)?;
    let api: Api<RecurringTask> = Api::namespaced(ctx.client.clone(), ns);
    let now = Utc::now();

    let schedule = match compile(task) {
        Ok(s) => s,
        Err(err) => {
            return invalid(
                task,
                ctx,
                &api,
                name,
                &format!("spec.schedule.{err}"),
                "InvalidSchedule",
                now,
            )
            .await;
        }
    };
    let (app_id, method) = match (AppId::new(task.app_id()), Method::new(task.method())) {
        (Ok(a), Ok(m)) => (a, m),
        (Err(e), _) | (_, Err(e)) => {
            return invalid(
                task,
                ctx,
                &api,
                name,
                &format!("spec.{e}"),
                "InvalidTarget",
                now,
            )
            .await;
        }
    };
    if let Some(bad) = task
        .spec
        .reminders
        .iter()
        .find_map(|r| match parse_duration(&r.before) {
            Ok(d) if d.is_zero() => Some(format!("{:?} must be more than 0s", r.before)),
            Ok(_) => None,
            Err(e) => Some(e),
        })
    {
        return invalid(
            task,
            ctx,
            &api,
            name,
            &format!("spec.reminders.before: {bad}"),
            "InvalidSpec",
            now,
        )
        .await;
    }

    let plan = plan(task, &schedule, &uid, now);
    if let (Plan::Wait(_) | Plan::Idle, Some(p)) = (
        &plan,
        task.status
            .as_ref()
            .and_then(|s| s.next_occurrence.as_ref()),
    ) && ctx.reminders_owed(task, &p.idempotency_key)
    {
        ensure_reminders(task, ctx, ns, name, p).await?;
    }
    match plan {
        Plan::Idle => Ok(Action::await_change()),
        Plan::Wait(at) => Ok(Action::requeue(until(at, now))),
        Plan::Update { status, wake, note } => {
            let new_pending = status.next_occurrence.clone();
            match super::bounded(write_status(&api, name, guard(task), status.as_ref())).await? {
                StatusWrite::Conflict => {
                    ctx.metrics.status_write(KIND, "conflict");
                    return Ok(Action::requeue(Duration::from_millis(200)));
                }
                StatusWrite::Written(_) => ctx.metrics.status_write(KIND, "ok"),
            }
            if let Some((type_, reason, text)) = note {
                ctx.event(task, type_, reason, "Schedule", text).await;
            }
            let skipped = status
                .skipped
                .saturating_sub(task.status.as_ref().map_or(0, |s| s.skipped));
            for _ in 0..skipped {
                ctx.metrics.occurrence(KIND, "skipped");
            }
            if let Some(p) = &new_pending {
                ensure_reminders(task, ctx, ns, name, p).await?;
            }
            Ok(wake.map_or(Action::await_change(), |w| {
                Action::requeue(until(w, Utc::now()))
            }))
        }
        Plan::Deliver(p) => {
            deliver(
                task, ctx, &api, name, ns, &uid, &schedule, &app_id, &method, p,
            )
            .await
        }
    }
}

/// The guard of a task's status write: the pending key when there is one.
fn guard(task: &RecurringTask) -> Guard {
    match task
        .status
        .as_ref()
        .and_then(|s| s.next_occurrence.as_ref())
    {
        Some(p) => Guard::Equals(vec![(
            "/status/nextOccurrence/idempotencyKey",
            serde_json::Value::String(p.idempotency_key.clone()),
        )]),
        None => Guard::ResourceVersion(task.resource_version().unwrap_or_default()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn deliver(
    task: &RecurringTask,
    ctx: &Context,
    api: &Api<RecurringTask>,
    name: &str,
    ns: &str,
    uid: &str,
    schedule: &Schedule,
    app_id: &AppId,
    method: &Method,
    p: PendingOccurrence,
) -> Result<Action, Error> {
    if ctx.is_stale(task) {
        // Our own commit has not reached the cache yet: wait for it rather than call again.
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    let body = body(task, &p);
    let invoked = ctx
        .dapr
        .invoke(&Invocation {
            app_id,
            method,
            idempotency_key: &p.idempotency_key,
            user_id: &task.spec.user_id,
            body: &body,
        })
        .await;
    let now = Utc::now();
    let outcome_label = invoked.outcome.label();
    ctx.metrics.backend_call(
        app_id.as_str(),
        outcome_label,
        invoked.elapsed.as_secs_f64(),
    );
    for (app, state) in ctx.dapr.breaker_states() {
        ctx.metrics.breaker_state(&app, state as i64);
    }
    let status = after_attempt(task, schedule, uid, &p, &invoked.outcome, now);
    match super::bounded(write_status(api, name, guard(task), &status)).await? {
        StatusWrite::Conflict => {
            // Someone else moved the task on (a stale cache or a former leader); the backend has
            // the key, so the next reconcile re-decides from the fresh object.
            ctx.metrics.status_write(KIND, "conflict");
            return Ok(Action::requeue(Duration::from_millis(200)));
        }
        StatusWrite::Written(_) => ctx.metrics.status_write(KIND, "ok"),
    }
    ctx.mark_committed(task);
    let key = &p.idempotency_key;
    let lag = (now - p.due)
        .to_std()
        .unwrap_or(Duration::ZERO)
        .as_secs_f64();
    let finished = status.last_occurrence.as_ref().map(|l| &l.idempotency_key) == Some(key);
    match (&invoked.outcome, finished) {
        (dapr::Outcome::Delivered { .. } | dapr::Outcome::InProgress, true) => {
            ctx.metrics.occurrence(KIND, "delivered");
            ctx.metrics.firing_lag(KIND, lag);
            info!(key = %key, namespace = %ns, name = %name, lag_ms = (lag * 1000.0) as u64, outcome = outcome_label, "occurrence delivered");
        }
        (dapr::Outcome::Rejected { status: code, .. }, _) => {
            ctx.metrics.occurrence(KIND, "failed");
            warn!(key = %key, namespace = %ns, name = %name, code, "occurrence rejected by the backend");
            // A stable note, so repeats join one event series; the key and the backend's
            // words are in status.lastFailure and the history.
            let note =
                format!("an occurrence was rejected with HTTP {code}; see status.lastFailure");
            ctx.event(
                task,
                EventType::Warning,
                "DeliveryRejected",
                "Deliver",
                note,
            )
            .await;
        }
        (dapr::Outcome::KeyReused { .. }, _) => {
            ctx.metrics.occurrence(KIND, "failed");
            warn!(key = %key, namespace = %ns, name = %name, "the backend has this key with another payload");
            let note = "an occurrence was refused with HTTP 422: the backend has its key with another payload (the task was edited between attempts); see status.lastFailure".to_string();
            ctx.event(task, EventType::Warning, "KeyReused", "Deliver", note)
                .await;
        }
        (dapr::Outcome::Retryable { .. }, _) => {
            warn!(key = %key, namespace = %ns, name = %name, attempts = p.attempts + 1, "delivery failed; retrying with backoff");
            if p.attempts == 0 {
                let note =
                    "delivery failed; retrying with backoff; see status.lastFailure".to_string();
                ctx.event(
                    task,
                    EventType::Warning,
                    "BackendUnavailable",
                    "Deliver",
                    note,
                )
                .await;
            }
        }
        _ => {}
    }
    // A new pending occurrence gets its reminders; sent ones beyond the history are pruned.
    if let Some(next) = status
        .next_occurrence
        .as_ref()
        .filter(|n| n.idempotency_key != *key)
    {
        ensure_reminders(task, ctx, ns, name, next).await?;
        prune_reminders(task, ctx, ns, name).await;
    }
    let wake = status
        .next_occurrence
        .as_ref()
        .map(|n| n.retry_at.map_or(n.due, |r| r.max(n.due)));
    Ok(wake.map_or(Action::await_change(), |w| {
        Action::requeue(until(w, Utc::now()))
    }))
}

/// Marks the task `Ready=False`/`Stalled=True` with `reason` (once: only when it changes).
async fn invalid(
    task: &RecurringTask,
    ctx: &Context,
    api: &Api<RecurringTask>,
    name: &str,
    message: &str,
    reason: &'static str,
    now: DateTime<Utc>,
) -> Result<Action, Error> {
    let old = task.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let generation = task.meta().generation;
    status.observed_generation = generation;
    status.next_occurrence = None;
    status.upcoming.clear();
    set_condition(
        &mut status.conditions,
        "Ready",
        false,
        reason,
        message,
        generation,
        now,
    );
    set_condition(
        &mut status.conditions,
        "Stalled",
        true,
        reason,
        message,
        generation,
        now,
    );
    if status == old {
        return Ok(Action::await_change());
    }
    match super::bounded(write_status(api, name, guard(task), &status)).await? {
        StatusWrite::Conflict => return Ok(Action::requeue(Duration::from_millis(200))),
        StatusWrite::Written(_) => ctx.metrics.status_write(KIND, "ok"),
    }
    warn!(reason, message, "spec cannot be acted on");
    ctx.event(
        task,
        EventType::Warning,
        reason,
        "Validate",
        message.to_string(),
    )
    .await;
    Ok(Action::await_change())
}

/// Creates (server-side apply, idempotent) the reminders of `spec.reminders` for occurrence `p`.
/// A failure fails the reconcile (retried with backoff) and is remembered, so the retry applies
/// them again even though the task's status needs no write.
async fn ensure_reminders(
    task: &RecurringTask,
    ctx: &Context,
    ns: &str,
    name: &str,
    p: &PendingOccurrence,
) -> Result<(), Error> {
    if task.spec.reminders.is_empty() {
        return Ok(());
    }
    let Some(owner) = task.controller_owner_ref(&()) else {
        return Ok(());
    };
    let api: Api<Reminder> = Api::namespaced(ctx.client.clone(), ns);
    let now = Utc::now();
    for (i, tpl) in task.spec.reminders.iter().enumerate() {
        let Ok(before) = parse_duration(&tpl.before) else {
            continue;
        };
        let Ok(before) = chrono::Duration::from_std(before) else {
            continue;
        };
        let due_at = p.due - before;
        if due_at < now {
            // Too late to remind ahead of this occurrence; the next one gets its reminder.
            continue;
        }
        let rem_name = reminder_name(name, p.nominal, i);
        let mut rem = Reminder::new(
            &rem_name,
            ReminderSpec {
                user_id: task.spec.user_id.clone(),
                title: task.spec.title.clone(),
                message: tpl.message.clone().or_else(|| {
                    Some(format!(
                        "{} is due at {}",
                        task.spec.title,
                        p.due.to_rfc3339()
                    ))
                }),
                due_at,
                task_id: None,
                task_ref: Some(TaskRef {
                    name: name.to_string(),
                }),
                occurrence_key: Some(p.idempotency_key.clone()),
                target: tpl.target.clone(),
            },
        );
        rem.metadata.owner_references = Some(vec![owner.clone()]);
        rem.metadata.labels = Some([(TASK_LABEL.to_string(), task_label_value(name))].into());
        let params = PatchParams::apply(MANAGER).force();
        if let Err(err) = super::bounded(api.patch(&rem_name, &params, &Patch::Apply(&rem))).await {
            warn!(%err, reminder = %rem_name, "could not create reminder; retrying");
            ctx.owe_reminders(task, &p.idempotency_key);
            return Err(err);
        }
    }
    ctx.reminders_paid(task);
    Ok(())
}

/// Deletes finished (sent, skipped, failed) reminders of this task beyond its history limit,
/// oldest first.
async fn prune_reminders(task: &RecurringTask, ctx: &Context, ns: &str, name: &str) {
    if task.spec.reminders.is_empty() {
        return;
    }
    let api: Api<Reminder> = Api::namespaced(ctx.client.clone(), ns);
    let lp = ListParams::default().labels(&format!("{TASK_LABEL}={}", task_label_value(name)));
    let Ok(list) = super::bounded(api.list(&lp)).await else {
        return;
    };
    let mut finished: Vec<_> = list
        .items
        .into_iter()
        .filter(|r| r.spec.task_ref.as_ref().is_some_and(|t| t.name == name))
        .filter(|r| {
            !matches!(
                r.status.as_ref().and_then(|s| s.phase),
                None | Some(crate::api::Phase::Pending)
            )
        })
        .collect();
    finished.sort_by_key(|r| std::cmp::Reverse(r.spec.due_at));
    for old in finished.iter().skip(task.history_limit()) {
        if let Err(err) =
            super::bounded(api.delete(&old.name_any(), &DeleteParams::default())).await
        {
            warn!(%err, reminder = %old.name_any(), "could not prune reminder");
        }
    }
}

/// The value of the `recur.dev/task` label: the task's name, or when that is longer than a label
/// value may be (63 characters), its first 46 characters and a hash of the whole name.
pub fn task_label_value(name: &str) -> String {
    const MAX: usize = 63;
    if name.len() <= MAX {
        return name.to_string();
    }
    let keep = name[..MAX - 17].trim_end_matches(['-', '.', '_']);
    format!("{keep}-{:016x}", super::fnv1a(name.as_bytes()))
}

/// `{task}-{instant}-{i}`, shortened with a hash when the task's name is long (names are DNS
/// subdomains, at most 253 characters).
pub fn reminder_name(task: &str, nominal: DateTime<Utc>, i: usize) -> String {
    let suffix = format!("{}-{i}", nominal.format("%Y%m%dt%H%M%S"));
    let max = 253 - suffix.len() - 1;
    if task.len() <= max {
        format!("{task}-{suffix}")
    } else {
        let hash = super::fnv1a(task.as_bytes());
        let keep = &task[..max - 17];
        format!("{}-{hash:016x}-{suffix}", keep.trim_end_matches(['-', '.']))
    }
}

fn error_policy(task: Arc<RecurringTask>, err: &Error, ctx: Arc<Context>) -> Action {
    super::retry_after_error(KIND, task.as_ref(), err, &ctx)
}

/// Runs the RecurringTask controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    leadership_gained: impl futures::Stream<Item = ()> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    super::run_controller::<RecurringTask, _>(
        ctx,
        namespace,
        KIND,
        leadership_gained,
        shutdown,
        reconcile,
        error_policy,
    )
    .await;
}

#[cfg(test)]
#[path = "task_tests.rs"]
mod tests;
