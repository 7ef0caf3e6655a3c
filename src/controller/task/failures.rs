//! `failurePolicy.suspendAfter`: the status write that counted the last failure also recorded
//! the decision (`status.failureSuspension`, with the generation it judged); this effect then
//! suspends the spec. A crash in between leaves the decision in status, so the next reconcile
//! completes it; a user's edit in between (a newer generation) wins and clears it.
use super::*;
use crate::api::FailureSuspension;
use crate::controller::{StatusWrite, bounded, guarded_patch};

/// The decision still to apply: recorded for the current generation, and the spec not yet
/// suspended.
pub(super) fn undone(task: &RecurringTask) -> Option<&FailureSuspension> {
    let fs = task.status.as_ref()?.failure_suspension.as_ref()?;
    (!task.spec.suspend && task.meta().generation == Some(fs.generation)).then_some(fs)
}

/// Sets `spec.suspend` and `spec.suspendReason` if the generation is still the one judged.
pub(super) async fn suspend(
    task: &RecurringTask,
    ctx: &Context,
    api: &Api<RecurringTask>,
    name: &str,
    fs: &FailureSuspension,
) -> Result<Action, Error> {
    let guard = Guard::Equals(vec![("/metadata/generation", json!(fs.generation))]);
    let ops = vec![
        json!({"op": "add", "path": "/spec/suspend", "value": true}),
        json!({"op": "add", "path": "/spec/suspendReason", "value": truncate(&fs.message, 240)}),
    ];
    match bounded(guarded_patch(api, name, guard, ops, false)).await? {
        StatusWrite::Conflict => return Ok(Action::requeue(Duration::from_millis(200))),
        StatusWrite::Written(_) => {}
    }
    warn!(failures = fs.failures, "task suspended by failurePolicy");
    ctx.metrics.task_suspended(reason::TOO_MANY_FAILURES);
    ctx.event(
        task,
        EventType::Warning,
        reason::TOO_MANY_FAILURES,
        "Suspend",
        format!(
            "suspended after {} occurrences in a row failed permanently (failurePolicy.suspendAfter); see status.lastFailure, fix the cause, then resume (spec.suspend: false)",
            fs.failures
        ),
    )
    .await;
    // The patch is a spec change: the watch brings the suspended task back.
    Ok(Action::await_change())
}
