//! The Reminder controller: a reminder is due once. Its key is written to status (phase
//! `Pending`) before it is due; when due, the leader calls the notification service with that
//! key, then, when `taskId` is set, tells the backend (`POST api/tasks/{taskId}/reminder-sent`,
//! key suffixed `-sent`). Each step is recorded before the next, so a crash repeats at most the
//! step in flight, under the same key.
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::delivery::{About, Delivery, REMINDER_EVENT_TYPE, Sent};
use super::{Action, Context, Error, Guard, conditions, key_instant, reason, truncate, uid, until};
use crate::api::{Failure, Phase, RecurringTask, Reminder, ReminderStatus};
use crate::dapr::{self, AppId, Method};
use crate::tenancy::Resolved;
use crate::validate;

/// Kind label for metrics and health.
pub const KIND: &str = "Reminder";

/// The idempotency key of a reminder: its UID and due instant.
pub fn reminder_key(uid: &str, due: DateTime<Utc>) -> String {
    format!("rem-{uid}-{}", key_instant(due))
}

/// What a reconcile decided, before any I/O.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// Write this status, then wake at the instant if any.
    Update(Box<ReminderStatus>, Option<DateTime<Utc>>),
    /// Call the notification service now.
    Notify,
    /// Tell the backend the reminder was sent.
    TellBackend(String),
    /// Nothing before this instant.
    Wait(DateTime<Utc>),
    /// Done, or nothing to do until the object changes.
    Idle,
}

/// A reminder first seen (no status of ours) more than this after it was due is not sent: a
/// wiped or restored status must not replay old reminders, and a late one is useless.
pub const FIRST_SIGHT_LOOKBACK: chrono::TimeDelta = chrono::TimeDelta::hours(1);
/// 409 answers in a row after which the reminder counts as sent (see the README's table).
pub use super::settle::IN_PROGRESS_LIMIT;

/// A skipped reminder is finished: `Ready=True` with the reason it was skipped. One skipped by an
/// older recur still says `Ready=False` (kstatus would wait on it forever): it is set right once.
fn skipped_is_done(old: ReminderStatus, generation: Option<i64>, now: DateTime<Utc>) -> Plan {
    let Some(ready) = crate::api::condition(&old.conditions, reason::READY) else {
        return Plan::Idle;
    };
    if ready.status == "True" {
        return Plan::Idle;
    }
    let (why, message) = (ready.reason.clone(), ready.message.clone());
    let mut status = old;
    conditions(&mut status.conditions, generation, now).ready(true, &why, &message);
    Plan::Update(Box::new(status), None)
}

/// Decides what to do at `now`. Pure.
pub fn plan(rem: &Reminder, uid: &str, now: DateTime<Utc>) -> Plan {
    let old = rem.status.clone().unwrap_or_default();
    let generation = rem.meta().generation;
    let key = reminder_key(uid, rem.spec.due_at);
    if old.phase == Some(Phase::Skipped) {
        return skipped_is_done(old, generation, now);
    }
    if matches!(old.phase, Some(Phase::Sent | Phase::Failed)) {
        return Plan::Idle;
    }
    if old.idempotency_key.as_deref() != Some(key.as_str()) {
        // First sight, or dueAt edited before it was sent: the key goes to status first.
        let mut status = old.clone();
        status.phase = Some(Phase::Pending);
        status.idempotency_key = Some(key);
        status.attempts = 0;
        status.in_progress = 0;
        status.retry_at = None;
        status.notified_at = None;
        status.observed_generation = generation;
        let (ready, reason, message) =
            if old.observed_generation.is_none() && rem.spec.due_at < now - FIRST_SIGHT_LOOKBACK {
                status.phase = Some(Phase::Skipped);
                (
                    true,
                    reason::TOO_LATE,
                    "first seen more than 1h after it was due: not sent",
                )
            } else {
                (true, reason::SCHEDULED, "the reminder is scheduled")
            };
        conditions(&mut status.conditions, generation, now).ready(ready, reason, message);
        conditions(&mut status.conditions, generation, now).valid();
        let wake = (status.phase == Some(Phase::Pending)).then_some(rem.spec.due_at);
        return Plan::Update(Box::new(status), wake);
    }
    let ready_at = old
        .retry_at
        .map_or(rem.spec.due_at, |r| r.max(rem.spec.due_at));
    if ready_at > now {
        return Plan::Wait(ready_at);
    }
    match (&old.notified_at, &rem.spec.task_id) {
        (None, _) => Plan::Notify,
        (Some(_), Some(task_id)) => Plan::TellBackend(task_id.clone()),
        (Some(_), None) => Plan::Idle,
    }
}

/// Why a reminder is not sent, and what becomes of it.
#[derive(Debug, PartialEq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
    /// Pending (look again later), Failed (until the spec changes) or Skipped (for good).
    pub phase: Phase,
}

/// Whether the reminder's task still wants it sent, judged on the task as read now. Pure.
pub fn task_refusal(rem: &Reminder, task: Option<&RecurringTask>, ns: &str) -> Option<Refusal> {
    let task_ref = rem.spec.task_ref.as_ref()?;
    let refusal = |reason, message: String, phase| {
        Some(Refusal {
            reason,
            message,
            phase,
        })
    };
    let Some(task) = task else {
        // A missing task may still be created: stay Pending and look again later.
        return refusal(
            reason::TASK_NOT_FOUND,
            format!(
                "spec.taskRef: task {:?} does not exist in namespace {ns}",
                task_ref.name
            ),
            Phase::Pending,
        );
    };
    // The same rule the webhook applies at admission.
    if let Err(denial) = crate::tenancy::task_owner(rem, task) {
        return refusal(reason::USER_MISMATCH, denial.to_string(), Phase::Failed);
    }
    // A reminder made for one occurrence follows it: suspending the task or editing the
    // occurrence away cancels it.
    let occurrence = rem.spec.occurrence_key.as_deref()?;
    if task.spec.suspend {
        return refusal(
            reason::TASK_SUSPENDED,
            format!("task {:?} is suspended: not sent", task_ref.name),
            Phase::Skipped,
        );
    }
    let pending = task
        .status
        .as_ref()
        .and_then(|s| s.next_occurrence.as_ref())
        .map(|p| p.idempotency_key.as_str());
    if pending != Some(occurrence) {
        return refusal(
            reason::OCCURRENCE_CHANGED,
            format!(
                "task {:?} no longer has occurrence {occurrence} pending (its schedule changed, or the occurrence passed): not sent",
                task_ref.name
            ),
            Phase::Skipped,
        );
    }
    None
}

/// Status after a call. `told_backend` says which call it was.
pub fn after_call(
    rem: &Reminder,
    outcome: &dapr::Outcome,
    told_backend: bool,
    now: DateTime<Utc>,
) -> ReminderStatus {
    let mut status = rem.status.clone().unwrap_or_default();
    let generation = rem.meta().generation;
    let key = status.idempotency_key.clone().unwrap_or_default();
    status.observed_generation = generation;
    let failure = |reason: &str, message: String| Failure {
        time: now,
        reason: reason.into(),
        message,
        idempotency_key: key.clone(),
    };
    let after = |wait: Duration| {
        now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(1))
    };
    let backoff = |attempts: u32| after(dapr::backoff(attempts, &key));
    // A circuit that is open made no call: nothing counts, the reminder waits for it (spread
    // over a few seconds, so the reminders waiting on it do not all wake at once).
    if let dapr::Outcome::CircuitOpen { retry_in, spread } = outcome {
        status.retry_at = Some(after(dapr::circuit_retry(*retry_in, *spread, &key)));
        return status;
    }
    status.attempts += 1;
    let in_progress = matches!(outcome, dapr::Outcome::InProgress);
    status.in_progress = if in_progress {
        status.in_progress + 1
    } else {
        0
    };
    let delivered = match outcome {
        dapr::Outcome::Delivered { .. } => true,
        dapr::Outcome::InProgress => status.in_progress >= IN_PROGRESS_LIMIT,
        _ => false,
    };
    if delivered {
        status.retry_at = None;
        status.in_progress = 0;
        if !told_backend {
            status.notified_at = Some(now);
        }
        if told_backend || rem.spec.task_id.is_none() {
            status.phase = Some(Phase::Sent);
            status.sent_at = Some(now);
            conditions(&mut status.conditions, generation, now).ready(
                true,
                reason::SENT,
                "the reminder was sent",
            );
        }
        return status;
    }
    match outcome {
        dapr::Outcome::Rejected { message, .. } | dapr::Outcome::KeyReused { message } => {
            let (reason, message) = match outcome {
                dapr::Outcome::KeyReused { .. } => (reason::KEY_REUSED, truncate(message, 256)),
                _ => (reason::REJECTED, truncate(message, 256)),
            };
            status.last_failure = Some(failure(reason, message.clone()));
            status.retry_at = None;
            if told_backend {
                // The notification went out; only the bookkeeping call was refused.
                status.phase = Some(Phase::Sent);
                status.sent_at = Some(now);
                conditions(&mut status.conditions, generation, now).ready(
                    true,
                    reason::SENT_BACKEND_NOT_TOLD,
                    &format!("sent, but the backend refused reminder-sent: {message}"),
                );
            } else {
                status.phase = Some(Phase::Failed);
                conditions(&mut status.conditions, generation, now).ready(
                    false,
                    reason,
                    &format!("the notification service refused it: {message}"),
                );
            }
        }
        dapr::Outcome::InProgress => {
            status.retry_at = Some(backoff(status.attempts));
        }
        dapr::Outcome::Retryable {
            message,
            retry_after,
            ..
        } => {
            status.last_failure =
                Some(failure(reason::BACKEND_UNAVAILABLE, truncate(message, 256)));
            // The service's Retry-After is a floor under the backoff.
            let wait = dapr::backoff(status.attempts, &key);
            status.retry_at = Some(after(retry_after.map_or(wait, |r| r.max(wait))));
            conditions(&mut status.conditions, generation, now).ready(
                false,
                reason::BACKEND_UNAVAILABLE,
                "the service is failing; retrying with backoff",
            );
        }
        dapr::Outcome::Delivered { .. } | dapr::Outcome::CircuitOpen { .. } => {}
    }
    status
}

/// The guard of a reminder's status write: the key and the attempt count we decided on. The
/// count alone is not enough: it starts again at 0 when `dueAt` is edited, so a late write of a
/// former leader could mark the edited reminder Sent.
pub fn guard(rem: &Reminder) -> Guard {
    match rem.status.as_ref() {
        Some(ReminderStatus {
            idempotency_key: Some(key),
            attempts,
            ..
        }) => Guard::Equals(vec![
            ("/status/idempotencyKey", json!(key)),
            ("/status/attempts", json!(attempts)),
        ]),
        _ => Guard::ResourceVersion(rem.resource_version().unwrap_or_default()),
    }
}

async fn write(
    rem: &Reminder,
    ctx: &Context,
    api: &Api<Reminder>,
    name: &str,
    status: &ReminderStatus,
) -> Result<bool, Error> {
    ctx.write_status(KIND, api, name, guard(rem), status).await
}

impl crate::controller::Reconcile for Reminder {
    const KIND: &'static str = KIND;

    fn overdue(&self, now: DateTime<Utc>) -> bool {
        let phase = self
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or_default();
        let retrying = self.status.as_ref().is_some_and(|s| s.attempts > 0);
        phase == Phase::Pending
            && (retrying || self.spec.due_at + crate::controller::OVERDUE_GRACE <= now)
    }

    fn wake_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let status = self.status.as_ref();
        let pending = status.and_then(|s| s.phase).unwrap_or_default() == Phase::Pending;
        pending
            .then(|| {
                status
                    .and_then(|s| s.retry_at)
                    .map_or(self.spec.due_at, |r| r.max(self.spec.due_at))
            })
            .filter(|at| *at > now)
    }

    fn decided_on(&self) -> Option<u64> {
        crate::controller::fingerprint(&self.status)
    }

    fn trim_for_cache(_ctx: &Context, event: &mut kube::runtime::watcher::Event<Self>) {
        crate::controller::runner::drop_labels_and_annotations(event);
    }

    async fn reconcile(&self, ctx: &Context, name: &str, ns: &str) -> Result<Action, Error> {
        let rem = self;
        if let Some(wait) = ctx.stale_wait(rem) {
            // Our own write of this reminder has not reached the cache yet.
            return Ok(Action::requeue(wait));
        }
        let uid = uid(rem)?;
        let api: Api<Reminder> = Api::namespaced(ctx.client.clone(), ns);
        let now = Utc::now();
        // The webhook's checks, for a reminder admitted before it existed.
        if let Err(e) = validate::reminder(rem) {
            let refusal = Refusal {
                reason: reason::invalid(e.problem),
                message: e.to_string(),
                phase: Phase::Failed,
            };
            return refuse(rem, ctx, &api, name, refusal, now).await;
        }
        let step = plan(rem, &uid, now);
        if matches!(step, Plan::Idle | Plan::Wait(_)) {
            return Ok(match step {
                Plan::Wait(at) => Action::requeue(until(at, now)),
                _ => Action::await_change(),
            });
        }
        // The tenant's policy as it stands now, before anything is written or sent.
        let effective = ctx.tenancy.effective(ns);
        let target = match effective.reminder(rem) {
            Ok(resolved) => resolved,
            Err(denial) => {
                let refusal = Refusal {
                    reason: reason::POLICY_DENIED,
                    message: denial.to_string(),
                    phase: Phase::Failed,
                };
                return refuse(rem, ctx, &api, name, refusal, now).await;
            }
        };
        // User isolation and the task's own wishes, read live (checked at first sight and before
        // the notification, never while merely waiting; once the notification is out, telling
        // the backend is bookkeeping that follows it whatever the task does meanwhile).
        if rem.spec.task_ref.is_some() && !matches!(step, Plan::TellBackend(_)) {
            let task = read_task(rem, ctx, ns).await?;
            if let Some(refusal) = task_refusal(rem, task.as_ref(), ns) {
                return refuse(rem, ctx, &api, name, refusal, now).await;
            }
        }
        match step {
            Plan::Update(status, wake) => {
                if !write(rem, ctx, &api, name, &status).await? {
                    return Ok(Action::requeue(Duration::from_millis(200)));
                }
                Ok(wake.map_or(Action::await_change(), |w| {
                    Action::requeue(until(w, Utc::now()))
                }))
            }
            Plan::TellBackend(task_id) => {
                // The operator's own setting, not the tenant's: a plain id means the backend of
                // the reminder's namespace, never recur's.
                let (Ok(app), Ok(meth)) = (
                    AppId::new(&ctx.settings.backend_app_id).and_then(|a| a.in_namespace(ns)),
                    Method::new(&format!("api/tasks/{task_id}/reminder-sent")),
                ) else {
                    let refusal = Refusal {
                        reason: reason::INVALID_SPEC,
                        message: "spec.taskId: not usable in a method path".into(),
                        phase: Phase::Failed,
                    };
                    return refuse(rem, ctx, &api, name, refusal, now).await;
                };
                let key = pending_key(rem);
                let body = json!({"reminder_sent": true, "user_id": rem.spec.user_id, "idempotency_key": key, "namespace": ns});
                let call = Call {
                    told_backend: true,
                    target: &Resolved::Invoke {
                        app_id: app,
                        method: meth,
                    },
                    key: format!("{key}-sent"),
                    body,
                    rate: effective.occurrences_per_second(),
                };
                deliver(rem, ctx, &api, name, ns, call).await
            }
            _ => {
                let key = pending_key(rem);
                let call = Call {
                    told_backend: false,
                    target: &target,
                    body: notification_body(rem, &key),
                    key,
                    rate: effective.occurrences_per_second(),
                };
                deliver(rem, ctx, &api, name, ns, call).await
            }
        }
    }
}

fn pending_key(rem: &Reminder) -> String {
    rem.status
        .as_ref()
        .and_then(|s| s.idempotency_key.clone())
        .unwrap_or_default()
}

/// The reminder's task as the API server has it now (a cache could be older than the reminder).
async fn read_task(
    rem: &Reminder,
    ctx: &Context,
    ns: &str,
) -> Result<Option<RecurringTask>, Error> {
    // A name that cannot be a task's names none (and must not reach the request's path).
    let Some(name) = rem.spec.task_ref.as_ref().and_then(|r| r.valid_name()) else {
        return Ok(None);
    };
    let tasks: Api<RecurringTask> = Api::namespaced(ctx.client.clone(), ns);
    super::bounded(tasks.get_opt(name)).await
}

/// One of the reminder's two calls.
struct Call<'a> {
    told_backend: bool,
    target: &'a Resolved,
    key: String,
    body: serde_json::Value,
    /// The tenant's deliveries per second, when its policy limits them.
    rate: Option<u32>,
}

async fn deliver(
    rem: &Reminder,
    ctx: &Context,
    api: &Api<Reminder>,
    name: &str,
    ns: &str,
    call: Call<'_>,
) -> Result<Action, Error> {
    if let Some(action) = ctx.may_call(rem, ns, call.rate) {
        return Ok(action);
    }
    let Sent { invoked, trace_id } = ctx
        .deliver(&Delivery {
            target: call.target,
            key: &call.key,
            user_id: &rem.spec.user_id,
            namespace: ns,
            body: &call.body,
            about: About {
                event_type: REMINDER_EVENT_TYPE,
                plural: "reminders",
                name,
                due: rem.spec.due_at,
            },
        })
        .await;
    let after = Utc::now();
    let mut status = after_call(rem, &invoked.outcome, call.told_backend, after);
    if trace_id.is_some() {
        status.trace_id = trace_id;
    }
    if !write(rem, ctx, api, name, &status).await? {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    ctx.mark_committed(rem);
    let lag = (after - rem.spec.due_at)
        .to_std()
        .unwrap_or(Duration::ZERO)
        .as_secs_f64();
    let which = if call.told_backend {
        "reminder-sent"
    } else {
        "notification"
    };
    match &invoked.outcome {
        _ if !call.told_backend && status.notified_at.is_some() => {
            ctx.metrics.occurrence(KIND, "delivered");
            ctx.metrics.firing_lag(KIND, lag);
            info!(key = %call.key, lag_ms = (lag * 1000.0) as u64, trace_id = status.trace_id.as_deref().unwrap_or_default(), "reminder delivered");
        }
        dapr::Outcome::Rejected { status: code, .. } => {
            if !call.told_backend {
                ctx.metrics.occurrence(KIND, "failed");
            }
            // A stable note, so repeats join one event series; the details are in status.
            let note = format!("{which} refused with HTTP {code}; see status.lastFailure");
            ctx.delivery_warning(rem, reason::DELIVERY_REJECTED, note)
                .await;
        }
        dapr::Outcome::KeyReused { .. } => {
            if !call.told_backend {
                ctx.metrics.occurrence(KIND, "failed");
            }
            let note = format!(
                "{which} refused with HTTP 422: the backend has this key with another payload; see status.lastFailure"
            );
            ctx.delivery_warning(rem, reason::KEY_REUSED, note).await;
        }
        dapr::Outcome::Retryable { .. } if status.attempts == 1 => {
            let note = format!("{which} failed; retrying with backoff; see status.lastFailure");
            ctx.delivery_warning(rem, reason::BACKEND_UNAVAILABLE, note)
                .await;
        }
        _ => {}
    }
    match (status.phase, status.retry_at) {
        (Some(Phase::Sent | Phase::Failed | Phase::Skipped), _) => Ok(Action::await_change()),
        (_, Some(at)) => Ok(Action::requeue(until(at, Utc::now()))),
        _ => Ok(Action::requeue(Duration::from_millis(1))),
    }
}

/// The JSON body sent to the notification service.
pub fn notification_body(rem: &Reminder, key: &str) -> serde_json::Value {
    json!({
        "user_id": rem.spec.user_id,
        "title": rem.spec.title,
        "message": rem.spec.message,
        "due_at": rem.spec.due_at,
        "task_id": rem.spec.task_id,
        "occurrence_key": rem.spec.occurrence_key,
        "idempotency_key": key,
        "namespace": rem.namespace(),
        "reminder": { "namespace": rem.namespace(), "name": rem.name_any(), "uid": rem.uid() },
    })
}

/// Records a refusal (phase, conditions, an event) once: only when the status changes. A reminder
/// skipped on purpose is done, so it is `Ready=True` with the reason it was skipped (kstatus then
/// reads it Current, and Flux's `wait` does not hang on it); Pending and Failed are `Ready=False`.
async fn refuse(
    rem: &Reminder,
    ctx: &Context,
    api: &Api<Reminder>,
    name: &str,
    refusal: Refusal,
    now: DateTime<Utc>,
) -> Result<Action, Error> {
    let Refusal {
        reason,
        message,
        phase,
    } = refusal;
    let old = rem.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let generation = rem.meta().generation;
    status.observed_generation = generation;
    status.phase = Some(phase);
    let retry = phase == Phase::Pending;
    conditions(&mut status.conditions, generation, now).ready(
        phase == Phase::Skipped,
        reason,
        &message,
    );
    conditions(&mut status.conditions, generation, now).stalled(
        phase == Phase::Failed,
        reason,
        &message,
    );
    if status != old {
        if !write(rem, ctx, api, name, &status).await? {
            return Ok(Action::requeue(Duration::from_millis(200)));
        }
        warn!(reason, message, "reminder not sent");
        let type_ = if phase == Phase::Skipped {
            EventType::Normal
        } else {
            EventType::Warning
        };
        ctx.event(rem, type_, reason, "Validate", message).await;
    }
    Ok(if retry {
        Action::requeue(Duration::from_secs(30))
    } else {
        Action::await_change()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use chrono::TimeZone;

    use super::*;

    const UID: &str = "7d1c0c4e-0000-4000-8000-000000000001";

    fn due() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 1, 9, 0, 0).unwrap()
    }

    /// A pending reminder in namespace `team-a`, its key in status.
    fn pending() -> Reminder {
        let mut rem: Reminder = serde_json::from_value(json!({
            "apiVersion": "recur.dev/v1alpha1", "kind": "Reminder",
            "metadata": {"name": "dentist", "namespace": "team-a", "uid": UID, "generation": 1},
            "spec": {"userId": "u-1", "title": "Dentist", "dueAt": due().to_rfc3339()}
        }))
        .unwrap();
        rem.status = Some(ReminderStatus {
            phase: Some(Phase::Pending),
            idempotency_key: Some(reminder_key(UID, due())),
            observed_generation: Some(1),
            ..Default::default()
        });
        rem
    }

    fn retry_at(outcome: &dapr::Outcome, now: DateTime<Utc>) -> DateTime<Utc> {
        after_call(&pending(), outcome, false, now)
            .retry_at
            .unwrap()
    }

    #[test]
    fn a_reminder_skipped_by_an_older_recur_is_made_ready_once() {
        let mut rem = pending();
        let now = due();
        let mut status = rem.status.clone().unwrap();
        status.phase = Some(Phase::Skipped);
        conditions(&mut status.conditions, Some(1), now).ready(
            false,
            reason::OCCURRENCE_CHANGED,
            "not sent",
        );
        rem.status = Some(status);
        let Plan::Update(fixed, None) = plan(&rem, UID, now) else {
            panic!("the old Ready=False is set right");
        };
        let ready = crate::api::condition(&fixed.conditions, "Ready").unwrap();
        assert_eq!(
            (
                ready.status.as_str(),
                ready.reason.as_str(),
                ready.message.as_str()
            ),
            ("True", reason::OCCURRENCE_CHANGED, "not sent")
        );
        assert_eq!(fixed.phase, Some(Phase::Skipped));
        rem.status = Some(*fixed);
        assert_eq!(plan(&rem, UID, now), Plan::Idle, "once");
    }

    #[test]
    fn a_reminder_first_seen_too_late_is_skipped_and_done() {
        let mut rem = pending();
        rem.status = None;
        let now = due() + chrono::Duration::hours(3);
        let Plan::Update(status, wake) = plan(&rem, UID, now) else {
            panic!("a first sight writes status");
        };
        assert_eq!((status.phase, wake), (Some(Phase::Skipped), None));
        let ready = crate::api::condition(&status.conditions, "Ready").unwrap();
        // Done on purpose: Ready=True, so kstatus does not wait on it forever.
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", reason::TOO_LATE)
        );
    }

    #[test]
    fn retry_after_is_a_floor_under_the_backoff() {
        let now = due();
        let key = reminder_key(UID, due());
        let backoff = chrono::Duration::from_std(dapr::backoff(1, &key)).unwrap();
        let unavailable = |retry_after| dapr::Outcome::Retryable {
            reason: dapr::RetryReason::ServerError,
            message: "HTTP 503".into(),
            retry_after,
        };
        assert_eq!(
            retry_at(&unavailable(Some(Duration::from_secs(90))), now),
            now + chrono::Duration::seconds(90)
        );
        for shorter in [None, Some(Duration::ZERO), Some(Duration::from_millis(100))] {
            assert_eq!(retry_at(&unavailable(shorter), now), now + backoff);
        }
    }

    #[test]
    fn circuit_open_retries_are_spread_and_not_attempts() {
        let now = due();
        let key = reminder_key(UID, due());
        let (retry_in, spread) = (Duration::from_secs(20), Duration::from_secs(5));
        let outcome = dapr::Outcome::CircuitOpen { retry_in, spread };
        let at = retry_at(&outcome, now);
        assert_eq!(
            at,
            now + chrono::Duration::from_std(dapr::circuit_retry(retry_in, spread, &key)).unwrap()
        );
        assert!(at >= now + chrono::Duration::seconds(20), "{at}");
        assert!(at < now + chrono::Duration::seconds(25), "{at}");
        assert_eq!(after_call(&pending(), &outcome, false, now).attempts, 0);
    }

    #[test]
    fn the_notification_names_the_tenant() {
        let rem = pending();
        let body = notification_body(&rem, "k");
        assert_eq!(body["namespace"], "team-a");
        assert_eq!(body["reminder"]["namespace"], "team-a");
    }
}
