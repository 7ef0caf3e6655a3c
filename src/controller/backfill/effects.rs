//! The effects of a backfill's plan: ownership, the status write, the call, the TTL deletion.
use std::time::Duration;

use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::events::EventType;
use serde_json::json;
use tracing::{info, warn};

use super::{
    Expiry, KIND, Note, Pending, Plan, TASK_RECHECK, TaskView, after_call, expires_at, expiry,
    needs_owner, owner_reference, plan,
};
use crate::api::{Backfill, BackfillPhase, BackfillStatus, RecurringTask, Trigger};
use crate::controller::delivery::{Delivery, Sent};
use crate::controller::task::{body, compile};
use crate::controller::{
    Action, Context, Error, Guard, StatusWrite, bounded, guarded_patch, reason, until,
};
use crate::dapr;
use crate::tenancy::Rule;

impl crate::controller::Reconcile for Backfill {
    const KIND: &'static str = KIND;

    /// A running backfill's whole range is past: it is overdue until it completes.
    fn overdue(&self, _now: chrono::DateTime<chrono::Utc>) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.phase == BackfillPhase::Running)
    }

    fn wake_at(&self, now: chrono::DateTime<chrono::Utc>) -> Option<chrono::DateTime<chrono::Utc>> {
        self.status
            .as_ref()
            .and_then(|s| s.retry_at)
            .filter(|at| *at > now)
    }

    fn decided_on(&self) -> Option<u64> {
        crate::controller::fingerprint(&self.status)
    }

    fn trim_for_cache(_ctx: &Context, event: &mut kube::runtime::watcher::Event<Self>) {
        crate::controller::runner::drop_labels_and_annotations(event);
    }

    async fn reconcile(&self, ctx: &Context, name: &str, ns: &str) -> Result<Action, Error> {
        let bf = self;
        if let Some(wait) = ctx.stale_wait(bf) {
            // Our own write has not reached the cache yet: acting on the old status would call
            // its key again.
            return Ok(Action::requeue(wait));
        }
        let api: Api<Backfill> = Api::namespaced(ctx.client.clone(), ns);
        let now = chrono::Utc::now();
        match expiry(bf, now) {
            Some(Expiry::Delete) => return delete(bf, &api, name).await,
            Some(Expiry::At(at)) => return Ok(Action::requeue(until(at, now))),
            None => {}
        }

        // The task as the API server has it now: its suspension and UID decide.
        let tasks: Api<RecurringTask> = Api::namespaced(ctx.client.clone(), ns);
        // A name that cannot be a task's names none (and must not reach the request's path).
        let task = match bf.spec.task_ref.valid_name() {
            Some(name) => bounded(tasks.get_opt(name)).await?,
            None => None,
        };
        let effective = ctx.tenancy.effective(ns);
        let schedule = task.as_ref().map(compile);
        let target = task.as_ref().map(|t| effective.task(t));
        let view = match (&task, &schedule, &target) {
            (Some(task), Some(Err(err)), _) => TaskView::Unusable {
                task,
                reason: reason::INVALID_SCHEDULE,
                message: format!("task {:?}: spec.schedule.{err}", bf.spec.task_ref.name),
            },
            // The checks made before each of the task's own deliveries, named for the task.
            (Some(task), _, Some(Err(denial))) => TaskView::Unusable {
                task,
                reason: match denial.rule {
                    Rule::Malformed => reason::INVALID_TARGET,
                    _ => reason::POLICY_DENIED,
                },
                message: format!("task {:?}: {denial}", bf.spec.task_ref.name),
            },
            (Some(task), Some(Ok(schedule)), Some(Ok(target))) => TaskView::Usable {
                task,
                schedule,
                target,
            },
            _ => TaskView::Missing,
        };
        // Owned by the task before anything else, so the garbage collector deletes it with it.
        if let Some(task) = &task
            && needs_owner(bf, task)
        {
            return adopt(bf, task, &api, name).await;
        }

        match plan(bf, &view, now) {
            Plan::Wait(at) => Ok(Action::requeue(until(at, now))),
            Plan::Update { status, wake, note } => {
                if !write(bf, ctx, &api, name, &status).await? {
                    return Ok(Action::requeue(Duration::from_millis(200)));
                }
                ctx.mark_committed(bf);
                if let Some(note) = note {
                    publish(bf, ctx, &status, note).await;
                }
                Ok(next_action(bf, &status, wake))
            }
            Plan::Deliver(p) => {
                let TaskView::Usable {
                    task,
                    schedule,
                    target,
                } = view
                else {
                    // The plan delivers for a usable task only.
                    return Ok(Action::requeue(TASK_RECHECK));
                };
                if let Some(action) = ctx.may_call(bf, ns, effective.occurrences_per_second()) {
                    return Ok(action);
                }
                let body = body(task, p.nominal, p.due, &p.key, Trigger::Backfill);
                let Sent { invoked, trace_id } = ctx
                    .deliver(&Delivery {
                        target,
                        key: &p.key,
                        user_id: &task.spec.user_id,
                        namespace: ns,
                        body: &body,
                        about: crate::controller::task::about(&bf.spec.task_ref.name, p.due),
                    })
                    .await;
                let now = chrono::Utc::now();
                let mut status = after_call(bf, schedule, &p, &invoked.outcome, now);
                if trace_id.is_some() {
                    status.last_trace_id = trace_id;
                }
                if !write(bf, ctx, &api, name, &status).await? {
                    // Someone else moved it on (a stale cache or a former leader); the backend
                    // has the key, so the next reconcile decides again on the fresh object.
                    return Ok(Action::requeue(Duration::from_millis(200)));
                }
                ctx.mark_committed(bf);
                aftermath(bf, ctx, &p, &invoked.outcome, &status).await;
                Ok(next_action(bf, &status, None))
            }
        }
    }
}

/// The guard of a backfill's status write: the key in flight when there is one (a stale writer
/// then fails instead of counting an occurrence twice), else the object we decided on.
fn guard(bf: &Backfill) -> Guard {
    match bf.status.as_ref().and_then(|s| s.next_key.as_ref()) {
        Some(key) => Guard::Equals(vec![("/status/nextKey", json!(key))]),
        None => Guard::ResourceVersion(bf.metadata.resource_version.clone().unwrap_or_default()),
    }
}

async fn write(
    bf: &Backfill,
    ctx: &Context,
    api: &Api<Backfill>,
    name: &str,
    status: &BackfillStatus,
) -> Result<bool, Error> {
    ctx.write_status(KIND, api, name, guard(bf), status).await
}

/// When to look again after a write: at `wake` when the plan set one, else at the pace or
/// backoff of `next`, or at the TTL once finished.
fn next_action(
    bf: &Backfill,
    status: &BackfillStatus,
    wake: Option<chrono::DateTime<chrono::Utc>>,
) -> Action {
    let now = chrono::Utc::now();
    let at = wake
        .or_else(|| expires_at(bf, status, now))
        .or_else(|| status.next.map(|_| status.retry_at.unwrap_or(now)));
    at.map_or(Action::await_change(), |at| Action::requeue(until(at, now)))
}

/// Adds the ownerReference to the task (a JSON patch guarded by the resourceVersion, so no
/// other owner added meanwhile is lost).
async fn adopt(
    bf: &Backfill,
    task: &RecurringTask,
    api: &Api<Backfill>,
    name: &str,
) -> Result<Action, Error> {
    let Some(reference) = owner_reference(task) else {
        return Err(Error::MissingField("metadata.uid of the task"));
    };
    let mut references = bf.metadata.owner_references.clone().unwrap_or_default();
    references.push(reference);
    let ops = vec![json!({"op": "add", "path": "/metadata/ownerReferences", "value": references})];
    let guard = Guard::ResourceVersion(bf.metadata.resource_version.clone().unwrap_or_default());
    match bounded(guarded_patch(api, name, guard, ops, false)).await? {
        // The patch's watch event reconciles it again.
        StatusWrite::Written(_) => Ok(Action::await_change()),
        StatusWrite::Conflict => Ok(Action::requeue(Duration::from_millis(200))),
    }
}

/// Deletes a backfill whose TTL passed (only this object: a re-created one of the same name
/// has another UID).
async fn delete(bf: &Backfill, api: &Api<Backfill>, name: &str) -> Result<Action, Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: bf.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match bounded(api.delete(name, &params)).await {
        Ok(_) => {
            info!("finished backfill deleted after its ttlSecondsAfterFinished");
            Ok(Action::await_change())
        }
        // Gone already, or another object by now.
        Err(Error::Kube(kube::Error::Api(status))) if status.code == 404 || status.code == 409 => {
            Ok(Action::await_change())
        }
        Err(err) => Err(err),
    }
}

async fn publish(bf: &Backfill, ctx: &Context, status: &BackfillStatus, note: Note) {
    match note.type_ {
        EventType::Warning => {
            warn!(reason = note.reason, message = %note.message, "backfill failed")
        }
        EventType::Normal => info!(reason = note.reason, message = %note.message, "backfill"),
    }
    ctx.event(bf, note.type_, note.reason, "Backfill", note.message)
        .await;
    if status.phase == BackfillPhase::Complete && status.failed > 0 {
        complete_with_failures(bf, ctx).await;
    }
}

async fn complete_with_failures(bf: &Backfill, ctx: &Context) {
    let note =
        "some occurrences were refused by the backend; see status.failed and status.lastFailure"
            .to_string();
    ctx.delivery_warning(bf, reason::DELIVERY_REJECTED, note)
        .await;
}

/// Metrics, logs and events of one call.
async fn aftermath(
    bf: &Backfill,
    ctx: &Context,
    p: &Pending,
    outcome: &dapr::Outcome,
    status: &BackfillStatus,
) {
    let old = bf.status.clone().unwrap_or_default();
    let label = if status.delivered > old.delivered {
        Some("delivered")
    } else if status.already_delivered > old.already_delivered {
        Some("already_delivered")
    } else if status.failed > old.failed {
        Some("failed")
    } else {
        None
    };
    if let Some(label) = label {
        ctx.metrics.occurrence(KIND, label);
        info!(key = %p.key, outcome = label, "backfill occurrence");
    }
    match outcome {
        dapr::Outcome::Rejected { status: code, .. } => {
            // A stable note, so repeats join one event series; the details are in status.
            let note =
                format!("an occurrence was refused with HTTP {code}; see status.lastFailure");
            ctx.delivery_warning(bf, reason::DELIVERY_REJECTED, note)
                .await;
        }
        dapr::Outcome::Retryable { .. } if p.attempts == 0 => {
            warn!(key = %p.key, "backfill delivery failed; retrying with backoff");
            let note = "delivery failed; retrying with backoff; see status.lastFailure".to_string();
            ctx.delivery_warning(bf, reason::BACKEND_UNAVAILABLE, note)
                .await;
        }
        _ => {}
    }
    if status.phase == BackfillPhase::Complete {
        let note = super::completed_note(bf);
        info!(
            total = status.total,
            delivered = status.delivered,
            already_delivered = status.already_delivered,
            failed = status.failed,
            "backfill complete"
        );
        ctx.event(bf, note.type_, note.reason, "Backfill", note.message)
            .await;
        if status.failed > 0 {
            complete_with_failures(bf, ctx).await;
        }
    }
}
