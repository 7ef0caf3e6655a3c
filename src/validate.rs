//! What the CRD schema cannot check, one pure function per kind: time zones, cron field ranges,
//! RRULE syntax, schedules that never fire, durations out of range, target paths, the run-now
//! token and a backfill's range. The webhook refuses with these words at `kubectl apply`; the
//! controllers call the same functions for objects admitted before the webhook existed, so both
//! say the same thing (and the schedule's words are the CLI's: `recur schedule` prints
//! [`ScheduleError`] too). No I/O: the caller passes the clock and any object looked up.
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use kube::ResourceExt;

use crate::api::{
    BACKFILL_DEFAULT_MAX, BACKFILL_MAX_CAP, Backfill, RUN_NOW_ANNOTATION, RUN_NOW_TOKEN_MAX,
    RecurringTask, Reminder, is_run_now_token,
};
use crate::controller::time::from_jiff;
use crate::dapr::{AppId, DaprError, Method};
use crate::schedule::{CompileContext, Schedule, ScheduleError, ScheduleSpec, parse_duration};

/// Longest `reminders[].before` and `catchUp.window`: far beyond any real use, and it keeps
/// `due - before` representable (a lead of a million years would overflow the instant).
const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// How far in the future a backfill's `to` may be: the clocks of the API server, the operator
/// and the client that computed `to` differ a little.
pub const BACKFILL_CLOCK_SKEW: TimeDelta = TimeDelta::minutes(1);

/// What kind of problem: the controllers name the `Ready=False` reason after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// `spec.schedule` cannot be used (`InvalidSchedule`).
    Schedule,
    /// A target's app id or method, or a path made of the spec (`InvalidTarget`).
    Target,
    /// Any other field: a duration, the run-now token, a backfill's range (`InvalidSpec`).
    Spec,
}

/// A spec that cannot be acted on: the field at fault and the problem in words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The field as a path from the object's root, e.g. `spec.schedule.cron`,
    /// `spec.reminders[0].before`, `metadata.annotations["recur.dev/run-now"]`.
    pub field: String,
    pub problem: Problem,
    /// What is wrong, in words for the user.
    pub message: String,
}

impl Invalid {
    fn spec(field: impl Into<String>, message: impl Into<String>) -> Invalid {
        Invalid {
            field: field.into(),
            problem: Problem::Spec,
            message: message.into(),
        }
    }
}

impl From<ScheduleError> for Invalid {
    fn from(e: ScheduleError) -> Invalid {
        Invalid {
            field: format!("spec.schedule.{}", e.field),
            problem: Problem::Schedule,
            message: e.message,
        }
    }
}

/// Checks a task's spec and returns its compiled schedule: the schedule compiles (the CLI's
/// checks) and fires at least once, the targets are usable, and the durations are in range.
/// `now` stands in for the creation time of an object not created yet (the anchor of a
/// schedule without `startAt`).
pub fn task(task: &RecurringTask, now: DateTime<Utc>) -> Result<Schedule, Invalid> {
    let anchor = task
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, |t| from_jiff(t.0));
    let seed = task.uid().unwrap_or_default();
    let spec = &task.spec.schedule;
    let schedule = Schedule::compile(spec, &CompileContext { anchor, seed })?;
    fires(spec, &schedule, anchor)?;
    target("spec.target", Some(task.app_id()), Some(task.method()))?;
    for (i, r) in task.spec.reminders.iter().enumerate() {
        let field = format!("spec.reminders[{i}].before");
        if duration(&field, &r.before)?.is_zero() {
            return Err(Invalid::spec(
                field,
                format!("{:?} must be more than 0s", r.before),
            ));
        }
        if let Some(t) = &r.target {
            // Unset parts take the reminder's defaults, which are valid.
            target(
                &format!("spec.reminders[{i}].target"),
                t.app_id.as_deref(),
                t.method.as_deref(),
            )?;
        }
    }
    if let Some(window) = task.spec.catch_up.as_ref().and_then(|c| c.window.as_ref()) {
        let field = "spec.catchUp.window";
        if duration(field, window)?.as_secs() < 1 {
            return Err(Invalid::spec(
                field,
                format!("{window:?} must be at least 1s (policy Skip delivers none)"),
            ));
        }
    }
    Ok(schedule)
}

/// [`task`], plus what is checked only where a schedule is written (the admission webhook, on
/// a create or a change of `spec.schedule`, `old` being the task before): a task stored before
/// such a check keeps working, and so do other changes to it, such as recur's own suspension.
pub fn task_as_written(
    task: &RecurringTask,
    old: Option<&RecurringTask>,
    now: DateTime<Utc>,
) -> Result<Schedule, Invalid> {
    let schedule = self::task(task, now)?;
    if old.is_none_or(|o| o.spec.schedule != task.spec.schedule) {
        schedule.jitter_fits(task.spec.schedule.jitter.as_deref(), now)?;
    }
    Ok(schedule)
}

/// A schedule that compiles may still hold no occurrence between its start and its end (`endAt`
/// before the first one, an RRULE's `UNTIL`, or `COUNT` instances all removed by `EXDATE`).
fn fires(spec: &ScheduleSpec, schedule: &Schedule, anchor: DateTime<Utc>) -> Result<(), Invalid> {
    let start = spec.start_at.unwrap_or(anchor);
    // Occurrences are whole seconds: after `start - 1s` means at or after `start`.
    let before = start
        .checked_sub_signed(TimeDelta::seconds(1))
        .unwrap_or(start);
    if schedule.next_after(before).is_some() {
        return Ok(());
    }
    let start = instant(start);
    let (field, message) = match spec.end_at {
        Some(end) => (
            "endAt",
            format!(
                "the schedule never fires: no occurrence between the start ({start}) and endAt ({})",
                instant(end)
            ),
        ),
        // An RRULE's own UNTIL or COUNT (with EXDATE) ends it; any other kind only when its
        // occurrences are beyond the year 9999.
        None => (
            kind_field(spec),
            format!(
                "the schedule never fires: no occurrence after the start ({start}) within its bounds"
            ),
        ),
    };
    Err(ScheduleError { field, message }.into())
}

/// The schedule's kind as named in the spec.
fn kind_field(spec: &ScheduleSpec) -> &'static str {
    [
        ("cron", spec.cron.is_some()),
        ("pattern", spec.pattern.is_some()),
        ("rrule", spec.rrule.is_some()),
    ]
    .into_iter()
    .find_map(|(name, set)| set.then_some(name))
    .unwrap_or("every")
}

/// The `recur.dev/run-now` token, if the annotation is set: 1 to 63 of `[a-z0-9-]`, since it
/// becomes part of an idempotency key and of the run's record.
pub fn run_now(task: &RecurringTask) -> Result<Option<&str>, Invalid> {
    let Some(token) = task.annotations().get(RUN_NOW_ANNOTATION) else {
        return Ok(None);
    };
    if is_run_now_token(token) {
        return Ok(Some(token));
    }
    Err(Invalid::spec(
        format!("metadata.annotations[{RUN_NOW_ANNOTATION:?}]"),
        format!(
            "{} is not a run-now token: use 1 to {RUN_NOW_TOKEN_MAX} lowercase letters, digits and hyphens (for example 2026-05-01-a); each token runs the task once",
            shorten(token)
        ),
    ))
}

/// Checks a reminder's spec: its target, and its `taskId` as part of the path the backend is
/// told on (`api/tasks/{taskId}/reminder-sent`).
pub fn reminder(rem: &Reminder) -> Result<(), Invalid> {
    target("spec.target", Some(rem.app_id()), Some(rem.method()))?;
    if let Some(id) = &rem.spec.task_id
        && let Err(e) = Method::new(&format!("api/tasks/{id}/reminder-sent"))
    {
        return Err(Invalid {
            field: "spec.taskId".into(),
            problem: Problem::Target,
            message: format!(
                "{id:?} cannot be part of the path api/tasks/{{taskId}}/reminder-sent: {}",
                explanation(&e)
            ),
        });
    }
    Ok(())
}

/// Checks what a backfill says on its own: `to` is not in the future (beyond
/// [`BACKFILL_CLOCK_SKEW`]).
pub fn backfill(bf: &Backfill, now: DateTime<Utc>) -> Result<(), Invalid> {
    if bf.spec.to <= now + BACKFILL_CLOCK_SKEW {
        return Ok(());
    }
    Err(Invalid::spec(
        "spec.to",
        format!(
            "{} is in the future (it is {} now); a backfill covers the past only, and the schedule itself delivers what falls due from now on",
            instant(bf.spec.to),
            instant(now)
        ),
    ))
}

/// Checks a backfill against its task: the task's spec is usable, and its schedule holds at most
/// `maxOccurrences` occurrences in `[from, to)`. Returns how many it holds. `now` as for
/// [`task`].
pub fn backfill_of(
    bf: &Backfill,
    task: &RecurringTask,
    now: DateTime<Utc>,
) -> Result<u64, Invalid> {
    let schedule = self::task(task, now).map_err(|e| Invalid {
        field: "spec.taskRef".into(),
        problem: e.problem,
        message: format!("task {:?} cannot be backfilled: {e}", task.name_any()),
    })?;
    backfill_total(bf, &schedule)
}

/// The occurrences of `schedule` in the backfill's `[from, to)`, refused when over
/// `maxOccurrences`. Counts at most [`BACKFILL_MAX_CAP`] + 1, so the work is bounded.
pub fn backfill_total(bf: &Backfill, schedule: &Schedule) -> Result<u64, Invalid> {
    let (from, to) = (bf.spec.from, bf.spec.to);
    let max = bf.spec.max_occurrences.unwrap_or(BACKFILL_DEFAULT_MAX);
    // Nominal instants have no fraction below the nanosecond: after `from - 1ns` is `>= from`.
    let after = from
        .checked_sub_signed(TimeDelta::nanoseconds(1))
        .unwrap_or(from);
    let limit = usize::try_from(BACKFILL_MAX_CAP).unwrap_or(usize::MAX);
    let count = schedule
        .iter_after(after)
        .take_while(|o| o.nominal < to)
        .take(limit.saturating_add(1))
        .count();
    let total = u64::try_from(count).unwrap_or(u64::MAX);
    if total <= u64::from(max) {
        return Ok(total);
    }
    let holds = if count > limit {
        format!(
            "more than {BACKFILL_MAX_CAP} occurrences (the most a backfill may deliver); split the range"
        )
    } else {
        format!("{total} occurrences")
    };
    let allowed = match bf.spec.max_occurrences {
        Some(_) => format!("maxOccurrences is {max}"),
        None => format!("maxOccurrences is {max} by default"),
    };
    Err(Invalid::spec(
        "spec.maxOccurrences",
        format!(
            "the schedule holds {holds} in [{}, {}); {allowed}",
            instant(from),
            instant(to)
        ),
    ))
}

/// A target's app id and method (those set), as the Dapr client will build them.
fn target(field: &str, app_id: Option<&str>, method: Option<&str>) -> Result<(), Invalid> {
    let bad = |part: &str, e: DaprError| Invalid {
        field: format!("{field}.{part}"),
        problem: Problem::Target,
        message: explanation(&e),
    };
    if let Some(app_id) = app_id {
        AppId::new(app_id).map_err(|e| bad("appId", e))?;
    }
    if let Some(method) = method {
        Method::new(method).map_err(|e| bad("method", e))?;
    }
    Ok(())
}

/// A duration up to [`MAX_DURATION`], in `parse_duration`'s words.
fn duration(field: &str, text: &str) -> Result<Duration, Invalid> {
    let d = parse_duration(text).map_err(|m| Invalid::spec(field, m))?;
    if d > MAX_DURATION {
        return Err(Invalid::spec(
            field,
            format!(
                "{} is more than the maximum of {} days",
                text.trim(),
                MAX_DURATION.as_secs() / 86_400
            ),
        ));
    }
    Ok(d)
}

/// The explanation of a target error, without the `target.appId: ` it starts with (the field is
/// named separately).
fn explanation(e: &DaprError) -> String {
    match e {
        DaprError::InvalidAppId(why) | DaprError::InvalidMethod(why) => why.clone(),
        other => other.to_string(),
    }
}

fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A user's value quoted for a message, cut after 80 characters.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{:?}...", &s[..i]),
        None => format!("{s:?}"),
    }
}

#[cfg(test)]
mod tests;
