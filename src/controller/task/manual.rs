//! Run now: the `recur.dev/run-now` annotation asks for one extra delivery under the key
//! `rt-<uid>-run-<token>`. Like a scheduled occurrence, the request (its key) is written to
//! status before the call and the outcome after it, so a crash or a new leader retries the same
//! key, and a token already in `lastManualRun` or in the history never runs again. A run still
//! pending when the task is suspended is not delivered.
use super::cached_history::write_status;
use super::*;
use crate::api::{ManualRun, PendingManualRun, RUN_NOW_ANNOTATION, is_run_now_token};
use crate::controller::bounded;
use crate::controller::settle::{Attempt, Settled, settle};

/// The key of a manual run.
pub fn manual_key(uid: &str, token: &str) -> String {
    format!("rt-{uid}-run-{token}")
}

/// What the run-now annotation asks for now.
#[derive(Debug, PartialEq)]
pub enum ManualPlan {
    /// Nothing: no annotation, or its token already ran.
    None,
    /// A new token: write this status (the request, or its refusal) before anything else.
    Record {
        status: Box<RecurringTaskStatus>,
        refused: Option<&'static str>,
    },
    /// Call now for the pending run.
    Deliver(PendingManualRun),
    /// The pending run waits for its backoff.
    Wait(DateTime<Utc>),
    /// The annotation is not a token (the webhook refuses it; this is an object admitted
    /// without it).
    InvalidToken,
    /// The token ran before another (it is in the history): running it again would reuse its
    /// key.
    TokenReused,
}

/// Decides on the run-now annotation at `now`. Pure.
pub fn plan_manual(task: &RecurringTask, uid: &str, now: DateTime<Utc>) -> ManualPlan {
    let status = task.status.clone().unwrap_or_default();
    // A pending run finishes first, even if the annotation changed meanwhile: it was asked for.
    if let Some(p) = &status.manual_run {
        if task.spec.suspend {
            // Suspending holds every delivery, a run asked for before it too, as it does the
            // schedule's pending occurrence.
            let why = "the task was suspended before the run was delivered: it is not delivered (resume the task, then set a new token)";
            let mut status = status.clone();
            let rec = skipped(&p.idempotency_key, p.requested_at, p.attempts, why, now);
            finish(&mut status, task, &p.token, rec);
            return ManualPlan::Record {
                status: Box::new(status),
                refused: Some(why),
            };
        }
        return match p.retry_at.filter(|at| *at > now) {
            Some(at) => ManualPlan::Wait(at),
            None => ManualPlan::Deliver(p.as_ref().clone()),
        };
    }
    let Some(token) = task.annotations().get(RUN_NOW_ANNOTATION) else {
        return ManualPlan::None;
    };
    if !is_run_now_token(token) {
        return ManualPlan::InvalidToken;
    }
    if status.last_manual_run.as_ref().map(|r| r.token.as_str()) == Some(token.as_str()) {
        return ManualPlan::None;
    }
    let key = manual_key(uid, token);
    if status
        .history
        .iter()
        .any(|r| r.trigger == Some(Trigger::Manual) && r.idempotency_key == key)
    {
        return ManualPlan::TokenReused;
    }
    let mut status = status;
    if task.spec.suspend {
        let why =
            "the task is suspended: a manual run is refused (resume it, then set a new token)";
        finish(&mut status, task, token, skipped(&key, now, 0, why, now));
        return ManualPlan::Record {
            status: Box::new(status),
            refused: Some(why),
        };
    }
    status.manual_run = Some(Box::new(PendingManualRun {
        token: token.clone(),
        idempotency_key: key,
        requested_at: now,
        attempts: 0,
        retry_at: None,
        in_progress: 0,
    }));
    ManualPlan::Record {
        status: Box::new(status),
        refused: None,
    }
}

/// The status after an attempt at the pending run `p`, starting from `status`.
pub fn after_manual_attempt(
    task: &RecurringTask,
    mut status: RecurringTaskStatus,
    p: &PendingManualRun,
    outcome: &dapr::Outcome,
    now: DateTime<Utc>,
) -> RecurringTaskStatus {
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
        } => finish(
            &mut status,
            task,
            &p.token,
            OccurrenceRecord {
                nominal: p.requested_at,
                due: p.requested_at,
                idempotency_key: p.idempotency_key.clone(),
                outcome,
                finished_at: now,
                attempts,
                backend_id,
                reason,
                trigger: Some(Trigger::Manual),
                completed_at: None,
                trace_id: None,
            },
        ),
        Settled::Retry {
            at,
            attempts,
            in_progress,
        } => {
            status.manual_run = Some(Box::new(PendingManualRun {
                attempts,
                retry_at: Some(at),
                in_progress,
                ..p.clone()
            }));
        }
    }
    status
}

/// Whether `task` is a new token's (no run pending) with history records the cached copy does
/// not hold.
fn history_out_of_hand(ctx: &Context, task: &RecurringTask) -> bool {
    let Some(status) = &task.status else {
        return false;
    };
    status.manual_run.is_none()
        && status.history.is_empty()
        && ctx.task_left_out.held(task) != Some(0)
}

/// The record of a run not delivered: asked for at `requested_at`, after `attempts`, because
/// of `why`.
fn skipped(
    key: &str,
    requested_at: DateTime<Utc>,
    attempts: u32,
    why: &str,
    now: DateTime<Utc>,
) -> OccurrenceRecord {
    OccurrenceRecord {
        nominal: requested_at,
        due: requested_at,
        idempotency_key: key.to_string(),
        outcome: Outcome::Skipped,
        finished_at: now,
        attempts,
        backend_id: None,
        reason: Some(why.into()),
        trigger: Some(Trigger::Manual),
        completed_at: None,
        trace_id: None,
    }
}

/// A finished (or refused) run: `lastManualRun` and the history; the schedule's counters and
/// `lastOccurrence` are the schedule's alone.
fn finish(
    status: &mut RecurringTaskStatus,
    task: &RecurringTask,
    token: &str,
    rec: OccurrenceRecord,
) {
    status.manual_run = None;
    status.history.insert(0, rec.clone());
    status.history.truncate(task.history_limit());
    status.last_manual_run = Some(Box::new(ManualRun {
        token: token.to_string(),
        record: rec,
    }));
}

/// Acts on the run-now annotation. `Ok(Some)` ends the reconcile (the schedule's turn comes
/// right after); `Ok(None)` lets the schedule go on, with `wake` set when the pending run waits
/// for its backoff.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    task: &RecurringTask,
    ctx: &Context,
    api: &Api<RecurringTask>,
    name: &str,
    ns: &str,
    uid: &str,
    target: &crate::tenancy::Resolved,
    per_second: Option<u32>,
    wake: &mut Option<Duration>,
) -> Result<Option<Action>, Error> {
    let now = Utc::now();
    let mut plan = plan_manual(task, uid, now);
    let token = task.annotations().get(RUN_NOW_ANNOTATION).cloned();
    let fresh;
    let task = if matches!(plan, ManualPlan::Record { .. }) && history_out_of_hand(ctx, task) {
        if token
            .as_deref()
            .is_some_and(|t| ctx.refused_token(&manual_key(uid, t)))
        {
            // Found in the history a moment ago and left on the task (with GitOps, for good):
            // not read again at every reconcile.
            plan = ManualPlan::TokenReused;
            task
        } else {
            // A new token: whether it ran before is in the history, which the watch cache
            // leaves out. Tokens are rare; read the task.
            let Some(read) = bounded(api.get_opt(name)).await? else {
                return Ok(Some(Action::await_change()));
            };
            fresh = read;
            plan = plan_manual(&fresh, uid, now);
            // The token as read: the cache may still show an older one.
            if let (ManualPlan::TokenReused, Some(t)) =
                (&plan, fresh.annotations().get(RUN_NOW_ANNOTATION))
            {
                ctx.refuse_token(manual_key(uid, t));
            }
            &fresh
        }
    } else {
        task
    };
    let (status, p) = match plan {
        ManualPlan::None => return Ok(None),
        ManualPlan::Wait(at) => {
            *wake = Some(until(at, now));
            return Ok(None);
        }
        ManualPlan::InvalidToken | ManualPlan::TokenReused => {
            let note = if plan == ManualPlan::TokenReused {
                format!(
                    "the {RUN_NOW_ANNOTATION} token ran before (see status.history); no manual run: set a new token"
                )
            } else {
                format!(
                    "the {RUN_NOW_ANNOTATION} annotation is not a token of 1 to 63 characters a-z, 0-9 and '-'; no manual run"
                )
            };
            ctx.event(
                task,
                EventType::Warning,
                reason::RUN_REFUSED,
                "RunNow",
                note,
            )
            .await;
            return Ok(None);
        }
        ManualPlan::Record { status, refused } => {
            // Written before the call, guarded by the resourceVersion: the object we decided on.
            let guard = Guard::ResourceVersion(task.resource_version().unwrap_or_default());
            if !write_status(ctx, api, (name, task), guard, task.status.as_ref(), &status).await? {
                return Ok(Some(Action::requeue(Duration::from_millis(200))));
            }
            ctx.mark_committed(task);
            if let Some(why) = refused {
                ctx.event(
                    task,
                    EventType::Warning,
                    reason::RUN_REFUSED,
                    "RunNow",
                    why.into(),
                )
                .await;
            }
            // The call is decided on the request as the cache shows it, in a reconcile of its
            // own: made here, it would be decided on a status the memo of our commits does
            // not know, and a reconcile of the request's version, before the outcome's
            // arrived, would call again.
            return Ok(Some(Action::requeue(Duration::ZERO)));
        }
        ManualPlan::Deliver(p) => (task.status.clone().unwrap_or_default(), Box::new(p)),
    };
    if let Some(action) = ctx.may_call(task, ns, per_second) {
        return Ok(Some(action));
    }
    let body = body(
        task,
        p.requested_at,
        p.requested_at,
        &p.idempotency_key,
        Trigger::Manual,
    );
    let Sent { invoked, trace_id } = ctx
        .deliver(&Delivery {
            target,
            key: &p.idempotency_key,
            user_id: &task.spec.user_id,
            namespace: ns,
            body: &body,
            about: about(name, p.requested_at),
        })
        .await;
    let now = Utc::now();
    let before = status.clone();
    let mut after = after_manual_attempt(task, status, &p, &invoked.outcome, now);
    stamp_trace(&mut after, &p.idempotency_key, trace_id.as_deref());
    let guard = Guard::Equals(
        std::iter::once((
            "/status/manualRun/idempotencyKey",
            serde_json::Value::String(p.idempotency_key.clone()),
        ))
        .chain(crate::controller::completion::unchanged_completions(task))
        .collect(),
    );
    if !write_status(ctx, api, (name, task), guard, Some(&before), &after).await? {
        return Ok(Some(Action::requeue(Duration::from_millis(200))));
    }
    ctx.mark_committed(task);
    if let Some(run) = after
        .last_manual_run
        .as_ref()
        .filter(|r| r.token == p.token)
    {
        let (type_, label) = match run.record.outcome {
            Outcome::Delivered => (EventType::Normal, "delivered"),
            _ => (EventType::Warning, "failed"),
        };
        ctx.metrics.occurrence(KIND, label);
        info!(key = %p.idempotency_key, namespace = %ns, name = %name, outcome = label, "manual run finished");
        let trace = trace_id
            .as_deref()
            .map(|t| format!(", trace {t}"))
            .unwrap_or_default();
        let note = format!(
            "manual run {:?} {label} (key {}{trace}); see status.lastManualRun",
            p.token, p.idempotency_key
        );
        ctx.event(task, type_, reason::MANUAL_RUN, "RunNow", note)
            .await;
    }
    Ok(Some(Action::requeue(Duration::ZERO)))
}
