//! The reminders a task creates ahead of each occurrence, and their clean-up.
use super::*;
use crate::controller::bounded;

/// When reminder `tpl` of an occurrence due at `due` is due: `before` it (`None` for a `before`
/// that is not a duration, which validation refuses).
pub(super) fn remind_at(
    tpl: &crate::api::ReminderTemplate,
    due: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let before = chrono::Duration::from_std(parse_duration(&tpl.before).ok()?).ok()?;
    due.checked_sub_signed(before)
}

/// Creates (server-side apply, idempotent) the reminders of `spec.reminders` for occurrence `p`.
/// A failure fails the reconcile (retried with backoff) and is remembered, so the retry applies
/// them again even though the task's status needs no write.
pub(super) async fn ensure_reminders(
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
        let Some(due_at) = remind_at(tpl, p.due) else {
            continue;
        };
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
        // The task's labels too, so an operator serving a `--selector` serves its reminders.
        let mut labels = task.labels().clone();
        labels.insert(TASK_LABEL.to_string(), task_label_value(name));
        rem.metadata.labels = Some(labels);
        let params = PatchParams::apply(MANAGER).force();
        if let Err(err) = bounded(api.patch(&rem_name, &params, &Patch::Apply(&rem))).await {
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
pub(super) async fn prune_reminders(task: &RecurringTask, ctx: &Context, ns: &str, name: &str) {
    if task.spec.reminders.is_empty() {
        return;
    }
    let api: Api<Reminder> = Api::namespaced(ctx.client.clone(), ns);
    let lp = ListParams::default().labels(&format!("{TASK_LABEL}={}", task_label_value(name)));
    let Ok(list) = bounded(api.list(&lp)).await else {
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
        if let Err(err) = bounded(api.delete(&old.name_any(), &DeleteParams::default())).await {
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
    format!(
        "{keep}-{:016x}",
        crate::schedule::hash::fnv1a(name.as_bytes())
    )
}

/// `{task}-{instant}-{i}`, shortened with a hash when the task's name is long (names are DNS
/// subdomains, at most 253 characters).
pub fn reminder_name(task: &str, nominal: DateTime<Utc>, i: usize) -> String {
    let suffix = format!("{}-{i}", nominal.format("%Y%m%dt%H%M%S"));
    let max = 253 - suffix.len() - 1;
    if task.len() <= max {
        format!("{task}-{suffix}")
    } else {
        let hash = crate::schedule::hash::fnv1a(task.as_bytes());
        let keep = &task[..max - 17];
        format!("{}-{hash:016x}-{suffix}", keep.trim_end_matches(['-', '.']))
    }
}
