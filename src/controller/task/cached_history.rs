//! The watch cache holds tasks without `status.history`: up to `historyLimit` records (10 by
//! default) are most of an aged task's memory (`docs/scaling.md`), and reconcile never decides
//! on them. It only adds records, and a write that adds one must know how many the object holds
//! to drop those past the limit. [`HistoryLengths`] keeps that count, per UID and for the
//! resourceVersion it was counted at, so it is used only with the very object it describes;
//! [`write_status`] writes a task's status without sending back the history it does not have.
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::watcher::Event;

use super::KIND;
use crate::api::{RecurringTask, RecurringTaskStatus};
use crate::controller::{Context, Error, Guard, Prepended, bounded};

/// `status.history` as serialised.
const HISTORY: &str = "history";

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
    let held = match ctx.task_history.held(task) {
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

/// Records in each cached task's history, by UID.
#[derive(Debug, Default)]
pub struct HistoryLengths {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_uid: HashMap<String, Counted>,
    /// Bumped by each relist; entries not seen again by its end belong to deleted tasks.
    listing: u64,
}

#[derive(Debug)]
struct Counted {
    resource_version: String,
    records: u16,
    listing: u64,
}

impl HistoryLengths {
    /// Takes the history out of every task in `event` (bound for the watch cache), counting it.
    pub fn take_from(&self, event: &mut Event<RecurringTask>) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            Event::Apply(task) | Event::InitApply(task) => {
                let records = task.status.as_mut().map_or(0, |s| {
                    // Replaced, not cleared: clearing would keep the allocation.
                    std::mem::take(&mut s.history).len()
                });
                let (Some(uid), Some(resource_version)) = (task.uid(), task.resource_version())
                else {
                    return;
                };
                let listing = inner.listing;
                inner.by_uid.insert(
                    uid,
                    Counted {
                        resource_version,
                        records: u16::try_from(records).unwrap_or(u16::MAX),
                        listing,
                    },
                );
            }
            Event::Delete(task) => {
                if let Some(uid) = task.uid() {
                    inner.by_uid.remove(&uid);
                }
            }
            Event::Init => inner.listing += 1,
            Event::InitDone => {
                let listing = inner.listing;
                inner.by_uid.retain(|_, c| c.listing == listing);
            }
        }
    }

    /// How many history records `task` holds, if `task` is the cached object they were counted
    /// on (same UID and resourceVersion).
    pub fn held(&self, task: &RecurringTask) -> Option<usize> {
        let uid = task.metadata.uid.as_deref()?;
        let rv = task.metadata.resource_version.as_deref()?;
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .by_uid
            .get(uid)
            .filter(|c| c.resource_version == rv)
            .map(|c| usize::from(c.records))
    }

    /// Tasks counted (for tests and the memory benchmark).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_uid
            .len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::api::{OccurrenceRecord, RecurringTaskStatus};
    use serde_json::json;

    fn task(uid: &str, rv: &str, records: usize) -> RecurringTask {
        let mut task: RecurringTask = serde_json::from_value(json!({
            "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
            "metadata": {"name": uid, "namespace": "ns", "uid": uid, "resourceVersion": rv},
            "spec": {"userId": "u", "title": "t", "schedule": {"every": "1h"}}
        }))
        .unwrap();
        let record: OccurrenceRecord = serde_json::from_value(json!({
            "nominal": "2026-12-05T00:00:00Z", "due": "2026-12-05T00:00:00Z",
            "idempotencyKey": "k", "outcome": "Delivered",
            "finishedAt": "2026-12-05T00:00:01Z", "attempts": 1
        }))
        .unwrap();
        task.status = Some(RecurringTaskStatus {
            history: vec![record; records],
            ..Default::default()
        });
        task
    }

    fn apply(lengths: &HistoryLengths, task: RecurringTask) -> RecurringTask {
        let mut event = Event::Apply(task);
        lengths.take_from(&mut event);
        let Event::Apply(task) = event else {
            unreachable!()
        };
        task
    }

    #[test]
    fn the_cache_gets_no_history_and_the_count_holds_for_that_version_only() {
        let lengths = HistoryLengths::default();
        let cached = apply(&lengths, task("a", "7", 3));
        assert!(cached.status.as_ref().unwrap().history.is_empty());
        assert_eq!(lengths.held(&cached), Some(3));
        // Another version of the same task (an older snapshot, or one newer than the count).
        assert_eq!(lengths.held(&task("a", "6", 0)), None);
        let newer = apply(&lengths, task("a", "8", 4));
        assert_eq!(lengths.held(&newer), Some(4));
        assert_eq!(lengths.held(&cached), None);
        // Without a status: nothing held.
        let mut fresh = task("b", "1", 0);
        fresh.status = None;
        assert_eq!(lengths.held(&apply(&lengths, fresh)), Some(0));
    }

    #[test]
    fn the_history_field_is_named_as_serialised() {
        let status = serde_json::to_value(task("a", "1", 1).status).unwrap();
        assert!(status.get(HISTORY).is_some_and(|h| h.is_array()));
    }

    #[test]
    fn deleted_tasks_leave_no_count_whether_seen_deleted_or_missing_from_a_relist() {
        let lengths = HistoryLengths::default();
        apply(&lengths, task("a", "1", 1));
        apply(&lengths, task("b", "1", 1));
        apply(&lengths, task("c", "1", 1));
        lengths.take_from(&mut Event::Delete(task("a", "2", 1)));
        assert_eq!(lengths.len(), 2);
        // A relist that no longer finds "c": deleted while the watch was down.
        lengths.take_from(&mut Event::Init);
        let mut b = Event::InitApply(task("b", "3", 2));
        lengths.take_from(&mut b);
        // Until the list is complete, the old counts stay (the cache still shows the old list).
        assert_eq!(lengths.held(&task("c", "1", 0)), Some(1));
        lengths.take_from(&mut Event::InitDone);
        assert_eq!(lengths.len(), 1);
        assert_eq!(lengths.held(&task("b", "3", 0)), Some(2));
    }
}
