//! The effects of a task's plan: the status write, the delivery and its aftermath.
use super::cached_history::write_status;
use super::*;
use super::{Restored, failures, manual};
use crate::controller::bounded;
use crate::controller::completion::unchanged_completions;
use crate::validate;

impl crate::controller::Reconcile for RecurringTask {
    const KIND: &'static str = KIND;

    fn overdue(&self, now: DateTime<Utc>) -> bool {
        let Some(status) = &self.status else {
            return false;
        };
        let late = |due: DateTime<Utc>| due + crate::controller::OVERDUE_GRACE <= now;
        !self.spec.suspend
            && (status
                .next_occurrence
                .as_ref()
                .is_some_and(|p| p.attempts > 0 || late(p.due))
                || status
                    .manual_run
                    .as_ref()
                    .is_some_and(|m| m.attempts > 0 || late(m.requested_at)))
    }

    fn wake_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let status = self.status.as_ref()?;
        let pending = status.next_occurrence.as_ref();
        let call = pending.map(|p| p.retry_at.map_or(p.due, |r| r.max(p.due)));
        let manual = status
            .manual_run
            .as_ref()
            .map(|m| m.retry_at.unwrap_or(m.requested_at));
        // The pending occurrence's reminders are created before it, when they are due.
        let reminders = pending.into_iter().flat_map(|p| {
            self.spec
                .reminders
                .iter()
                .filter_map(move |r| super::reminders::remind_at(r, p.due))
        });
        call.into_iter()
            .chain(manual)
            .chain(reminders)
            .filter(|at| *at > now)
            .min()
    }

    /// The history is left out: the watch cache holds only its length, a read from the API
    /// server all of it. Every outcome written moves the pending occurrence, its attempts or the
    /// manual run, which the rest shows.
    fn decided_on(&self) -> Option<u64> {
        let mut status = self.status.clone();
        if let Some(s) = &mut status {
            s.history.clear();
        }
        crate::controller::fingerprint(&status)
    }

    async fn reconcile(&self, ctx: &Context, name: &str, ns: &str) -> Result<Action, Error> {
        let api: Api<RecurringTask> = Api::namespaced(ctx.client.clone(), ns);
        // The cache left the conditions out: put back, or read with the object from the
        // apiserver when the cache's copy is not the version they were taken from.
        let whole = match ctx.task_left_out.restore(self) {
            Restored::AsCached => None,
            Restored::Whole(whole) => Some(whole),
            Restored::Unknown => match bounded(api.get_opt(name)).await? {
                Some(fresh) => {
                    tracing::debug!(name, "conditions read from the API server");
                    Some(Box::new(fresh))
                }
                None => return Ok(Action::await_change()),
            },
        };
        let task = whole.as_deref().unwrap_or(self);
        if let Some(wait) = ctx.stale_wait(task) {
            // Our own write replaced this status and has not reached the cache yet. Whatever is
            // decided on it (a call, a status update, a suspension, an invalid spec) could repeat
            // a call or put back what that write recorded, its guard (the pending key) passing
            // when a retry kept the key.
            return Ok(Action::requeue(wait));
        }
        let uid = uid(task)?;
        let now = Utc::now();

        // The webhook's checks, for a task admitted before it existed (or while it was down).
        let schedule = match validate::task(task, now) {
            Ok(s) => s,
            Err(e) => {
                let why = reason::invalid(e.problem);
                return invalid(task, ctx, &api, name, &e.to_string(), why, now).await;
            }
        };

        // The tenant's policy, as it stands now: a task admitted under an older policy stops here.
        let effective = ctx.tenancy.effective(ns);
        let target = match effective.task(task) {
            Ok(resolved) => resolved,
            Err(denial) => {
                return invalid(
                    task,
                    ctx,
                    &api,
                    name,
                    &denial.to_string(),
                    reason::POLICY_DENIED,
                    now,
                )
                .await;
            }
        };

        if let Some(fs) = failures::undone(task) {
            return failures::suspend(task, ctx, &api, name, fs).await;
        }
        let per_second = effective.occurrences_per_second();
        let mut manual_wake = None;
        if let Some(action) = manual::run(
            task,
            ctx,
            &api,
            name,
            ns,
            &uid,
            &target,
            per_second,
            &mut manual_wake,
        )
        .await?
        {
            return Ok(action);
        }
        scheduled(
            task, ctx, &api, name, ns, &uid, &schedule, &target, per_second, now,
        )
        .await
        .map(|action| action.no_later_than(manual_wake))
    }

    fn share_cache(ctx: &Context, cache: &kube::runtime::reflector::Store<Self>) {
        ctx.tasks.share(cache.clone());
    }

    fn trim_for_cache(ctx: &Context, event: &mut kube::runtime::watcher::Event<Self>) {
        ctx.task_left_out.take_from(event);
    }

    fn is_ready(&self, ctx: &Context) -> bool {
        ctx.task_left_out.is_ready(self)
    }
}

/// The schedule's turn: plan, then its effects.
#[allow(clippy::too_many_arguments)]
async fn scheduled(
    task: &RecurringTask,
    ctx: &Context,
    api: &Api<RecurringTask>,
    name: &str,
    ns: &str,
    uid: &str,
    schedule: &Schedule,
    target: &crate::tenancy::Resolved,
    per_second: Option<u32>,
    now: DateTime<Utc>,
) -> Result<Action, Error> {
    let plan = plan(task, schedule, uid, now);
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
            if !commit(ctx, api, name, task, &status).await? {
                return Ok(Action::requeue(Duration::from_millis(200)));
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
            // How late the decision itself is: the firing lag before the call.
            let late_ms = (now - p.due).num_milliseconds();
            tracing::debug!(key = %p.idempotency_key, late_ms, "occurrence due");
            if let Some(action) = ctx.may_call(task, ns, per_second) {
                return Ok(action);
            }
            deliver(task, ctx, api, name, ns, uid, schedule, target, p).await
        }
    }
}

/// Writes `status`, decided on `task` as cached, behind the task's [`guard`].
async fn commit(
    ctx: &Context,
    api: &Api<RecurringTask>,
    name: &str,
    task: &RecurringTask,
    status: &RecurringTaskStatus,
) -> Result<bool, Error> {
    let before = task.status.as_ref();
    write_status(ctx, api, (name, task), guard(task), before, status).await
}

/// The guard of a task's status write: the pending key when there is one (and the completions
/// count, so a completion recorded meanwhile is not overwritten).
fn guard(task: &RecurringTask) -> Guard {
    match task
        .status
        .as_ref()
        .and_then(|s| s.next_occurrence.as_ref())
    {
        Some(p) => Guard::Equals(
            std::iter::once((
                "/status/nextOccurrence/idempotencyKey",
                serde_json::Value::String(p.idempotency_key.clone()),
            ))
            .chain(unchanged_completions(task))
            .collect(),
        ),
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
    target: &crate::tenancy::Resolved,
    p: PendingOccurrence,
) -> Result<Action, Error> {
    let body = body(
        task,
        p.nominal,
        p.due,
        &p.idempotency_key,
        Trigger::Schedule,
    );
    let Sent { invoked, trace_id } = ctx
        .deliver(&Delivery {
            target,
            key: &p.idempotency_key,
            user_id: &task.spec.user_id,
            namespace: ns,
            body: &body,
            about: about(name, p.due),
        })
        .await;
    let now = Utc::now();
    let outcome_label = invoked.outcome.label();
    let mut status = after_attempt(task, schedule, uid, &p, &invoked.outcome, now);
    stamp_trace(&mut status, &p.idempotency_key, trace_id.as_deref());
    if !commit(ctx, api, name, task, &status).await? {
        // Someone else moved the task on (a stale cache or a former leader); the backend has
        // the key, so the next reconcile re-decides from the fresh object.
        return Ok(Action::requeue(Duration::from_millis(200)));
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
            info!(key = %key, namespace = %ns, name = %name, lag_ms = (lag * 1000.0) as u64, outcome = outcome_label, trace_id = trace_id.as_deref().unwrap_or_default(), "occurrence delivered");
        }
        (dapr::Outcome::Rejected { status: code, .. }, _) => {
            ctx.metrics.occurrence(KIND, "failed");
            warn!(key = %key, namespace = %ns, name = %name, code, "occurrence rejected by the backend");
            // A stable note, so repeats join one event series; the key and the backend's
            // words are in status.lastFailure and the history.
            let note =
                format!("an occurrence was rejected with HTTP {code}; see status.lastFailure");
            ctx.delivery_warning(task, reason::DELIVERY_REJECTED, note)
                .await;
        }
        (dapr::Outcome::KeyReused { .. }, _) => {
            ctx.metrics.occurrence(KIND, "failed");
            warn!(key = %key, namespace = %ns, name = %name, "the backend has this key with another payload");
            let note = "an occurrence was refused with HTTP 422: the backend has its key with another payload (the task was edited between attempts); see status.lastFailure".to_string();
            ctx.delivery_warning(task, reason::KEY_REUSED, note).await;
        }
        (dapr::Outcome::Retryable { .. }, _) => {
            warn!(key = %key, namespace = %ns, name = %name, attempts = p.attempts + 1, "delivery failed; retrying with backoff");
            if p.attempts == 0 {
                let note =
                    "delivery failed; retrying with backoff; see status.lastFailure".to_string();
                ctx.delivery_warning(task, reason::BACKEND_UNAVAILABLE, note)
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
    conditions(&mut status.conditions, generation, now).ready(false, reason, message);
    conditions(&mut status.conditions, generation, now).stalled(true, reason, message);
    if status == old {
        return Ok(Action::await_change());
    }
    if !commit(ctx, api, name, task, &status).await? {
        return Ok(Action::requeue(Duration::from_millis(200)));
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
