//! The watch cache holds tasks without `status.history` (`left_out`): a write that adds a
//! record must know how many the object holds to drop those past the limit, and
//! [`write_status`] writes a task's status without sending back the history it does not have.
use kube::api::Api;

use super::KIND;
use crate::api::{RecurringTask, RecurringTaskStatus};
use crate::controller::{Context, Error, Guard, Prepended, bounded};

/// `status.history` as serialised.
pub(super) const HISTORY: &str = "history";

/// Writes `after` over `before` (the status the object has, as the watch cache shows it on
/// `task`, or as a write of this reconcile left it) if `guard` holds: `true` when written,
/// `false` when the guard no longer held. Field by field, so the history the object holds
/// stays, and the records `after.history` holds (all new: the cached task has none) go first.
pub(super) async fn write_status(
    ctx: &Context,
    api: &Api<RecurringTask>,
    (name, task): (&str, &RecurringTask),
    guard: Guard,
    before: Option<&RecurringTaskStatus>,
    after: &RecurringTaskStatus,
) -> Result<bool, Error> {
    let before = match before {
        Some(before) if before.history.is_empty() => before,
        // No status, or one with its history (not from the cache): nothing is lost by
        // writing the whole status.
        _ => return ctx.write_status(KIND, api, name, guard, after).await,
    };
    let held = match ctx.task_left_out.held(task) {
        Some(held) => held,
        None => match held_now(api, name, &guard).await? {
            Some(held) => held,
            None => return Ok(false),
        },
    };
    let prepended = Prepended {
        field: HISTORY,
        held,
        limit: task.history_limit(),
    };
    ctx.write_status_fields(KIND, api, name, guard, (before, after), prepended)
        .await
}

/// The history's length when the table has no count for the object decided on (a write of
/// this reconcile, or a relist, moved it on): read from the API server, if the write's guard
/// still holds there (else the write would conflict anyway).
async fn held_now(
    api: &Api<RecurringTask>,
    name: &str,
    guard: &Guard,
) -> Result<Option<usize>, Error> {
    let Some(fresh) = bounded(api.get_opt(name)).await? else {
        return Ok(None);
    };
    tracing::debug!(name, "history counted from the API server");
    let held = fresh.status.as_ref().map_or(0, |s| s.history.len());
    Ok(guard
        .holds_in(&serde_json::to_value(&fresh)?)
        .then_some(held))
}
