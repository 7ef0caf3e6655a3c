//! The Reminder controller: a reminder is due once. Its key is written to status (phase
//! `Pending`) before it is due; when due, the leader calls the notification service with that
//! key, then, when `taskId` is set, tells the backend (`POST api/tasks/{taskId}/reminder-sent`,
//! key suffixed `-sent`). Each step is recorded before the next, so a crash repeats at most the
//! step in flight, under the same key.
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, info, info_span, warn};

use super::{
    Context, Error, Guard, StatusWrite, key_instant, name_ns, object_id, set_condition, truncate,
    uid, until, write_status,
};
use crate::api::{Failure, Phase, RecurringTask, Reminder, ReminderStatus};
use crate::dapr::{self, AppId, Invocation, Method};

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

/// Decides what to do at `now`. Pure.
pub fn plan(rem: &Reminder, uid: &str, now: DateTime<Utc>) -> Plan {
    let old = rem.status.clone().unwrap_or_default();
    let generation = rem.meta().generation;
    let key = reminder_key(uid, rem.spec.due_at);
    if matches!(old.phase, Some(Phase::Sent | Phase::Failed)) {
        return Plan::Idle;
    }
    if old.idempotency_key.as_deref() != Some(key.as_str()) {
        // First sight, or dueAt edited before it was sent: the key goes to status first.
        let mut status = old.clone();
        status.phase = Some(Phase::Pending);
        status.idempotency_key = Some(key);
        status.attempts = 0;
        status.retry_at = None;
        status.notified_at = None;
        status.observed_generation = generation;
        set_condition(
            &mut status.conditions,
            "Ready",
            true,
            "Scheduled",
            "the reminder is scheduled",
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
        return Plan::Update(Box::new(status), Some(rem.spec.due_at));
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
    status.attempts += 1;
    status.observed_generation = generation;
    let failure = |reason: &str, message: String| Failure {
        time: now,
        reason: reason.into(),
        message,
        idempotency_key: key.clone(),
    };
    match outcome {
        dapr::Outcome::Delivered { .. } | dapr::Outcome::AlreadyDelivered => {
            status.retry_at = None;
            if !told_backend {
                status.notified_at = Some(now);
            }
            if told_backend || rem.spec.task_id.is_none() {
                status.phase = Some(Phase::Sent);
                status.sent_at = Some(now);
                set_condition(
                    &mut status.conditions,
                    "Ready",
                    true,
                    "Sent",
                    "the reminder was sent",
                    generation,
                    now,
                );
            }
        }
        dapr::Outcome::Rejected {
            status: code,
            message,
        } => {
            let message = format!("HTTP {code}: {}", truncate(message, 256));
            status.last_failure = Some(failure("Rejected", message.clone()));
            status.retry_at = None;
            if told_backend {
                // The notification went out; only the bookkeeping call was refused.
                status.phase = Some(Phase::Sent);
                status.sent_at = Some(now);
                set_condition(
                    &mut status.conditions,
                    "Ready",
                    true,
                    "SentBackendNotTold",
                    &format!("sent, but the backend refused reminder-sent: {message}"),
                    generation,
                    now,
                );
            } else {
                status.phase = Some(Phase::Failed);
                set_condition(
                    &mut status.conditions,
                    "Ready",
                    false,
                    "Rejected",
                    &format!("the notification service refused it: {message}"),
                    generation,
                    now,
                );
            }
        }
        dapr::Outcome::Retryable { message, .. } => {
            status.last_failure = Some(failure("BackendUnavailable", truncate(message, 256)));
            let delay = dapr::backoff(status.attempts, &key);
            status.retry_at = Some(
                now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(1)),
            );
            set_condition(
                &mut status.conditions,
                "Ready",
                false,
                "BackendUnavailable",
                "the service is failing; retrying with backoff",
                generation,
                now,
            );
        }
        dapr::Outcome::CircuitOpen { retry_in } => {
            status.attempts -= 1;
            status.retry_at = Some(
                now + chrono::Duration::from_std(*retry_in).unwrap_or(chrono::Duration::seconds(1)),
            );
        }
    }
    status
}

async fn reconcile(rem: Arc<Reminder>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (name, ns) = name_ns(rem.as_ref())?;
    let span = info_span!("reconcile", kind = KIND, namespace = %ns, name = %name, user = %rem.spec.user_id);
    async move {
        let started = Instant::now();
        ctx.metrics.reconciled(KIND);
        ctx.health.heartbeat();
        let result = reconcile_inner(&rem, &ctx, &name, &ns).await;
        ctx.metrics
            .reconcile_duration(KIND, started.elapsed().as_secs_f64());
        result
    }
    .instrument(span)
    .await
}

fn guard(rem: &Reminder) -> Guard {
    match rem.status.as_ref().and_then(|s| s.idempotency_key.clone()) {
        // The attempt counter moves with every write, so it pins the exact state we decided on.
        Some(_) => Guard::Equals {
            path: "/status/attempts",
            value: json!(rem.status.as_ref().map_or(0, |s| s.attempts)),
        },
        None => Guard::ResourceVersion(rem.resource_version().unwrap_or_default()),
    }
}

async fn write(
    rem: &Reminder,
    ctx: &Context,
    api: &Api<Reminder>,
    name: &str,
    status: &ReminderStatus,
) -> Result<bool, Error> {
    match write_status(api, name, guard(rem), status).await? {
        StatusWrite::Conflict => {
            ctx.metrics.status_write(KIND, "conflict");
            Ok(false)
        }
        StatusWrite::Written(_) => {
            ctx.metrics.status_write(KIND, "ok");
            Ok(true)
        }
    }
}

async fn reconcile_inner(
    rem: &Reminder,
    ctx: &Context,
    name: &str,
    ns: &str,
) -> Result<Action, Error> {
    if rem.meta().deletion_timestamp.is_some() {
        ctx.forget(&object_id(rem));
        return Ok(Action::await_change());
    }
    if !ctx.leadership.valid_for(ctx.settings.lease_margin) {
        return Ok(Action::await_change());
    }
    let uid = uid(rem)?;
    let api: Api<Reminder> = Api::namespaced(ctx.client.clone(), ns);
    let now = Utc::now();
    let (app_id, method) = match (AppId::new(rem.app_id()), Method::new(rem.method())) {
        (Ok(a), Ok(m)) => (a, m),
        (Err(e), _) | (_, Err(e)) => {
            return refuse(
                rem,
                ctx,
                &api,
                name,
                "InvalidTarget",
                &format!("spec.{e}"),
                now,
            )
            .await;
        }
    };
    // User isolation: a reminder may only name a task of the same user (checked until it is sent).
    if matches!(
        rem.status.as_ref().and_then(|s| s.phase),
        None | Some(Phase::Pending)
    ) && let Some(task_ref) = &rem.spec.task_ref
    {
        {
            let tasks: Api<RecurringTask> = Api::namespaced(ctx.client.clone(), ns);
            match tasks.get_opt(&task_ref.name).await? {
                Some(task) if task.spec.user_id != rem.spec.user_id => {
                    let msg = format!(
                        "spec.taskRef: task {:?} belongs to another user; a reminder may only name a task of its own userId",
                        task_ref.name
                    );
                    return refuse(rem, ctx, &api, name, "UserMismatch", &msg, now).await;
                }
                Some(_) => {}
                None => {
                    let msg = format!(
                        "spec.taskRef: task {:?} does not exist in namespace {ns}",
                        task_ref.name
                    );
                    return refuse(rem, ctx, &api, name, "TaskNotFound", &msg, now).await;
                }
            }
        }
    }

    let id = object_id(rem);
    match plan(rem, &uid, now) {
        Plan::Idle => Ok(Action::await_change()),
        Plan::Wait(at) => Ok(Action::requeue(until(at, now))),
        Plan::Update(status, wake) => {
            if !write(rem, ctx, &api, name, &status).await? {
                return Ok(Action::requeue(Duration::from_millis(200)));
            }
            Ok(wake.map_or(Action::await_change(), |w| {
                Action::requeue(until(w, Utc::now()))
            }))
        }
        step @ (Plan::Notify | Plan::TellBackend(_)) => {
            let key = rem
                .status
                .as_ref()
                .and_then(|s| s.idempotency_key.clone())
                .unwrap_or_default();
            let marker = format!("{key}/{}", rem.status.as_ref().map_or(0, |s| s.attempts));
            if ctx.is_committed(&id, &marker) {
                return Ok(Action::requeue(Duration::from_millis(100)));
            }
            let (told_backend, app, meth, call_key, body) = match &step {
                Plan::TellBackend(task_id) => {
                    let (Ok(app), Ok(meth)) = (
                        AppId::new(&ctx.settings.backend_app_id),
                        Method::new(&format!("api/tasks/{task_id}/reminder-sent")),
                    ) else {
                        return refuse(
                            rem,
                            ctx,
                            &api,
                            name,
                            "InvalidSpec",
                            "spec.taskId: not usable in a method path",
                            now,
                        )
                        .await;
                    };
                    let body = json!({"reminder_sent": true, "user_id": rem.spec.user_id, "idempotency_key": key});
                    (true, app, meth, format!("{key}-sent"), body)
                }
                _ => (
                    false,
                    app_id.clone(),
                    method.clone(),
                    key.clone(),
                    notification_body(rem, &key),
                ),
            };
            let invoked = ctx
                .dapr
                .invoke(&Invocation {
                    app_id: &app,
                    method: &meth,
                    idempotency_key: &call_key,
                    user_id: &rem.spec.user_id,
                    body: &body,
                })
                .await;
            let after = Utc::now();
            ctx.metrics.backend_call(
                app.as_str(),
                label(&invoked.outcome),
                invoked.elapsed.as_secs_f64(),
            );
            let status = after_call(rem, &invoked.outcome, told_backend, after);
            if !write(rem, ctx, &api, name, &status).await? {
                return Ok(Action::requeue(Duration::from_millis(200)));
            }
            ctx.mark_committed(&id, &marker);
            let lag = (after - rem.spec.due_at)
                .to_std()
                .unwrap_or(Duration::ZERO)
                .as_secs_f64();
            match &invoked.outcome {
                dapr::Outcome::Delivered { .. } | dapr::Outcome::AlreadyDelivered
                    if !told_backend =>
                {
                    ctx.metrics.occurrence(KIND, "delivered");
                    ctx.metrics.firing_lag(KIND, lag);
                    info!(key = %key, lag_ms = (lag * 1000.0) as u64, "reminder delivered");
                }
                dapr::Outcome::Rejected {
                    status: code,
                    message,
                } => {
                    if !told_backend {
                        ctx.metrics.occurrence(KIND, "failed");
                    }
                    let note = format!(
                        "{} refused with HTTP {code}: {}",
                        if told_backend {
                            "reminder-sent"
                        } else {
                            "notification"
                        },
                        truncate(message, 200)
                    );
                    ctx.event(rem, EventType::Warning, "DeliveryRejected", "Deliver", note)
                        .await;
                }
                dapr::Outcome::Retryable { message, .. } if status.attempts == 1 => {
                    let note = format!(
                        "reminder {key}: {}; retrying with backoff",
                        truncate(message, 200)
                    );
                    ctx.event(
                        rem,
                        EventType::Warning,
                        "BackendUnavailable",
                        "Deliver",
                        note,
                    )
                    .await;
                }
                _ => {}
            }
            match (status.phase, status.retry_at) {
                (Some(Phase::Sent | Phase::Failed), _) => Ok(Action::await_change()),
                (_, Some(at)) => Ok(Action::requeue(until(at, Utc::now()))),
                _ => Ok(Action::requeue(Duration::from_millis(1))),
            }
        }
    }
}

fn label(o: &dapr::Outcome) -> &'static str {
    match o {
        dapr::Outcome::Delivered { .. } => "delivered",
        dapr::Outcome::AlreadyDelivered => "duplicate",
        dapr::Outcome::Rejected { .. } => "rejected",
        dapr::Outcome::Retryable { .. } => "retryable",
        dapr::Outcome::CircuitOpen { .. } => "circuit_open",
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
        "reminder": { "namespace": rem.namespace(), "name": rem.name_any(), "uid": rem.uid() },
    })
}

/// Refuses the reminder for good (until its spec changes): phase Failed, Ready=False, an event.
async fn refuse(
    rem: &Reminder,
    ctx: &Context,
    api: &Api<Reminder>,
    name: &str,
    reason: &'static str,
    message: &str,
    now: DateTime<Utc>,
) -> Result<Action, Error> {
    let old = rem.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let generation = rem.meta().generation;
    status.observed_generation = generation;
    // A missing task may still be created: stay Pending and look again later.
    let retry = reason == "TaskNotFound";
    status.phase = Some(if retry { Phase::Pending } else { Phase::Failed });
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
        !retry,
        reason,
        message,
        generation,
        now,
    );
    if status != old {
        if !write(rem, ctx, api, name, &status).await? {
            return Ok(Action::requeue(Duration::from_millis(200)));
        }
        warn!(reason, message, "reminder refused");
        ctx.event(
            rem,
            EventType::Warning,
            reason,
            "Validate",
            message.to_string(),
        )
        .await;
    }
    Ok(if retry {
        Action::requeue(Duration::from_secs(30))
    } else {
        Action::await_change()
    })
}

fn error_policy(rem: Arc<Reminder>, err: &Error, ctx: Arc<Context>) -> Action {
    super::retry_after_error(KIND, rem.as_ref(), err, &ctx)
}

/// Runs the Reminder controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    leadership_gained: impl futures::Stream<Item = ()> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    super::run_controller::<Reminder, _>(
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
