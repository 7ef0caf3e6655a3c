#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use super::*;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

const NOW: &str = "2026-05-01T12:00:00Z";

/// A task created at 2026-01-01 with `spec` merged into a valid one.
fn task_with(spec: Value) -> RecurringTask {
    let mut t = json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
        "metadata": {"name": "t", "namespace": "ns", "uid": "u-1",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"userId": "u", "title": "t", "schedule": {"every": "1h"}}
    });
    for (k, v) in spec.as_object().unwrap() {
        t["spec"][k] = v.clone();
    }
    serde_json::from_value(t).unwrap()
}

fn schedule(schedule: Value) -> RecurringTask {
    task_with(json!({ "schedule": schedule }))
}

fn refused(t: &RecurringTask) -> Invalid {
    task(t, at(NOW)).expect_err("refused")
}

#[test]
fn a_valid_task_compiles_to_its_schedule() {
    let s = task(&task_with(json!({})), at(NOW)).unwrap();
    assert_eq!(s.summary(), "every 1h");
    // Without a creation time (a create under review), `now` is the anchor.
    let mut t = task_with(json!({}));
    t.metadata.creation_timestamp = None;
    let s = task(&t, at(NOW)).unwrap();
    assert_eq!(
        s.next_after(at(NOW)).unwrap().nominal,
        at("2026-05-01T13:00:00Z")
    );
}

#[test]
fn schedule_errors_are_the_clis_words_under_spec_schedule() {
    for (spec, field, words) in [
        (
            json!({"cron": "0 0 * * *", "timeZone": "Europe/Berln"}),
            "spec.schedule.timeZone",
            "unknown zone \"Europe/Berln\"",
        ),
        (
            json!({"cron": "60 * * * *"}),
            "spec.schedule.cron",
            "minute value 60 is out of range 0-59",
        ),
        (
            json!({"cron": "0 0 30 2 *"}),
            "spec.schedule.cron",
            "the schedule never fires",
        ),
        (
            json!({"every": "0s"}),
            "spec.schedule.every",
            "must be at least 1s",
        ),
        (
            json!({"every": "500ms"}),
            "spec.schedule.every",
            "500ms is not a whole number of seconds",
        ),
        (
            json!({"every": "1h", "jitter": "48h"}),
            "spec.schedule.jitter",
            "48h is more than the maximum of 24h",
        ),
        (
            json!({"rrule": "FREQ=DAILY;INTERVAL=0"}),
            "spec.schedule.rrule",
            "INTERVAL must be at least 1",
        ),
    ] {
        let e = refused(&schedule(spec.clone()));
        assert_eq!(e.problem, Problem::Schedule, "{spec}");
        assert_eq!(e.field, field, "{spec}: {e}");
        assert!(e.message.contains(words), "{spec}: {e}");
        // The CLI prints the engine's error: the same words after the field.
        let spec: ScheduleSpec = serde_json::from_value(spec).unwrap();
        let cli = Schedule::compile(
            &spec,
            &CompileContext {
                anchor: at(NOW),
                seed: String::new(),
            },
        )
        .unwrap_err();
        assert_eq!(e.to_string(), format!("spec.schedule.{cli}"));
    }
}

#[test]
fn a_schedule_whose_window_holds_no_occurrence_never_fires() {
    let e = refused(&schedule(json!({
        "cron": "0 0 * * *",
        "startAt": "2026-03-01T01:00:00Z", "endAt": "2026-03-01T23:00:00Z"
    })));
    assert_eq!(e.problem, Problem::Schedule);
    assert_eq!(e.field, "spec.schedule.endAt");
    assert_eq!(
        e.message,
        "the schedule never fires: no occurrence between the start (2026-03-01T01:00:00Z) and endAt (2026-03-01T23:00:00Z)"
    );
    // Without startAt the start is the creation time.
    let e = refused(&schedule(
        json!({"cron": "0 0 * * *", "endAt": "2025-06-01T00:00:00Z"}),
    ));
    assert!(
        e.message.contains("the start (2026-01-01T00:00:00Z)"),
        "{e}"
    );
    // An RRULE's own UNTIL before the start.
    let e = refused(&schedule(json!({
        "rrule": "FREQ=DAILY;UNTIL=20250101T000000Z", "startAt": "2026-03-01T00:00:00Z"
    })));
    assert_eq!(e.field, "spec.schedule.rrule");
    assert!(e.message.starts_with("the schedule never fires"), "{e}");
    // COUNT instances that EXDATE removes, every one.
    let e = refused(&schedule(json!({
        "rrule": "FREQ=DAILY;COUNT=1\nEXDATE:20260301T090000Z",
        "startAt": "2026-03-01T09:00:00Z"
    })));
    assert_eq!(e.field, "spec.schedule.rrule");
    // One occurrence in the window is enough, even long past.
    task(
        &schedule(json!({
            "cron": "0 0 * * *",
            "startAt": "2020-03-01T00:00:00Z", "endAt": "2020-03-01T00:00:00.5Z"
        })),
        at(NOW),
    )
    .unwrap();
}

#[test]
fn durations_are_checked_for_range() {
    let cases = [
        (
            json!({"reminders": [{"before": "15m"}, {"before": "0s"}]}),
            "spec.reminders[1].before",
            "\"0s\" must be more than 0s",
        ),
        (
            json!({"reminders": [{"before": "99999d"}]}),
            "spec.reminders[0].before",
            "99999d is more than the maximum of 3650 days",
        ),
        (
            json!({"reminders": [{"before": "99999999999999999999999h"}]}),
            "spec.reminders[0].before",
            "is too large",
        ),
        (
            json!({"catchUp": {"window": "0s"}}),
            "spec.catchUp.window",
            "must be at least 1s",
        ),
        (
            json!({"catchUp": {"window": "500ms"}}),
            "spec.catchUp.window",
            "must be at least 1s",
        ),
        (
            json!({"catchUp": {"window": "P5000D"}}),
            "spec.catchUp.window",
            "more than the maximum of 3650 days",
        ),
    ];
    for (spec, field, words) in cases {
        let e = refused(&task_with(spec.clone()));
        assert_eq!(
            (e.field.as_str(), e.problem),
            (field, Problem::Spec),
            "{spec}"
        );
        assert!(e.message.contains(words), "{spec}: {e}");
    }
    task(
        &task_with(json!({"reminders": [{"before": "15m"}], "catchUp": {"window": "3650d"}})),
        at(NOW),
    )
    .unwrap();
}

#[test]
fn targets_are_checked_as_the_dapr_client_builds_them() {
    // Past the schema (an old CRD, or a client that skips it): the client's own checks.
    let e = refused(&task_with(json!({"target": {"appId": "Bad_App"}})));
    assert_eq!(
        (e.field.as_str(), e.problem),
        ("spec.target.appId", Problem::Target)
    );
    assert!(e.message.contains("Bad_App"), "{e}");
    let e = refused(&task_with(
        json!({"reminders": [{"before": "1m", "target": {"method": "a/../b"}}]}),
    ));
    assert_eq!(e.field, "spec.reminders[0].target.method");
    assert_eq!(e.problem, Problem::Target);
}

#[test]
fn the_run_now_token_is_a_short_lowercase_word() {
    let with = |v: &str| {
        let mut t = task_with(json!({}));
        t.metadata.annotations = Some([(RUN_NOW_ANNOTATION.to_string(), v.to_string())].into());
        t
    };
    assert_eq!(run_now(&task_with(json!({}))).unwrap(), None);
    for ok in ["a", "2026-05-01-a", "run-1", &"x".repeat(63)] {
        assert_eq!(run_now(&with(ok)).unwrap(), Some(ok), "{ok}");
    }
    for bad in ["", "Now", "a b", "a_b", "ü", "a\nb", &"x".repeat(64)] {
        let e = run_now(&with(bad)).expect_err(bad);
        assert_eq!(e.field, "metadata.annotations[\"recur.dev/run-now\"]");
        assert_eq!(e.problem, Problem::Spec);
        assert!(
            e.message.contains(
                "is not a run-now token: use 1 to 63 lowercase letters, digits and hyphens"
            ),
            "{e}"
        );
    }
    let e = run_now(&with(&"X".repeat(500))).unwrap_err();
    assert!(e.message.len() < 300, "the value is cut: {e}");
}

fn reminder_with(spec: Value) -> Reminder {
    let mut r = json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "Reminder",
        "metadata": {"name": "r", "namespace": "ns"},
        "spec": {"userId": "u", "title": "t", "dueAt": "2026-06-01T00:00:00Z"}
    });
    for (k, v) in spec.as_object().unwrap() {
        r["spec"][k] = v.clone();
    }
    serde_json::from_value(r).unwrap()
}

#[test]
fn a_reminders_task_id_must_fit_in_the_path_the_backend_is_told_on() {
    reminder(&reminder_with(json!({"taskId": "task-42.v1"}))).unwrap();
    // Past the schema (which refuses it too).
    let e = reminder(&reminder_with(json!({"taskId": ".."}))).unwrap_err();
    assert_eq!(
        (e.field.as_str(), e.problem),
        ("spec.taskId", Problem::Target)
    );
    assert!(
        e.message.contains("api/tasks/{taskId}/reminder-sent"),
        "{e}"
    );
    let e = reminder(&reminder_with(json!({"target": {"appId": "a.b.c"}}))).unwrap_err();
    assert_eq!(e.field, "spec.target.appId");
}

fn backfill_with(from: &str, to: &str, max: Option<u32>) -> Backfill {
    let mut b = json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "Backfill",
        "metadata": {"name": "b", "namespace": "ns"},
        "spec": {"taskRef": {"name": "t"}, "from": from, "to": to}
    });
    if let Some(m) = max {
        b["spec"]["maxOccurrences"] = json!(m);
    }
    serde_json::from_value(b).unwrap()
}

#[test]
fn a_backfill_covers_the_past_only_give_or_take_a_minute() {
    let now = at(NOW);
    let to = |d: TimeDelta| backfill_with("2026-04-01T00:00:00Z", &instant(now + d), None);
    backfill(&to(TimeDelta::zero()), now).unwrap();
    backfill(&to(TimeDelta::seconds(59)), now).unwrap();
    let e = backfill(&to(TimeDelta::minutes(2)), now).unwrap_err();
    assert_eq!((e.field.as_str(), e.problem), ("spec.to", Problem::Spec));
    assert_eq!(
        e.message,
        "2026-05-01T12:02:00Z is in the future (it is 2026-05-01T12:00:00Z now); a backfill covers the past only, and the schedule itself delivers what falls due from now on"
    );
}

#[test]
fn a_backfill_counts_its_tasks_occurrences_in_the_half_open_range() {
    let hourly = schedule(json!({"every": "1h", "startAt": "2026-01-01T00:00:00Z"}));
    let now = at(NOW);
    // [00:00, 03:00): 00:00, 01:00, 02:00.
    let bf = backfill_with("2026-02-01T00:00:00Z", "2026-02-01T03:00:00Z", None);
    assert_eq!(backfill_of(&bf, &hourly, now).unwrap(), 3);
    let bf = backfill_with("2026-02-01T00:00:00.5Z", "2026-02-01T03:00:00Z", None);
    assert_eq!(backfill_of(&bf, &hourly, now).unwrap(), 2);
    // Two days of hours, at most 10.
    let bf = backfill_with("2026-02-01T00:00:00Z", "2026-02-03T00:00:00Z", Some(10));
    let e = backfill_of(&bf, &hourly, now).unwrap_err();
    assert_eq!(
        (e.field.as_str(), e.problem),
        ("spec.maxOccurrences", Problem::Spec)
    );
    assert_eq!(
        e.message,
        "the schedule holds 48 occurrences in [2026-02-01T00:00:00Z, 2026-02-03T00:00:00Z); maxOccurrences is 10"
    );
    assert_eq!(
        backfill_of(
            &backfill_with("2026-02-01T00:00:00Z", "2026-02-03T00:00:00Z", Some(48)),
            &hourly,
            now
        )
        .unwrap(),
        48
    );
    // The default of 1000.
    let minutely = schedule(json!({"every": "1m", "startAt": "2026-01-01T00:00:00Z"}));
    let bf = backfill_with("2026-02-01T00:00:00Z", "2026-02-02T00:00:00Z", None);
    let e = backfill_of(&bf, &minutely, now).unwrap_err();
    assert!(e.message.contains("holds 1440 occurrences"), "{e}");
    assert!(
        e.message.ends_with("maxOccurrences is 1000 by default"),
        "{e}"
    );
    // Past the hard cap the count stops.
    let secondly = schedule(json!({"every": "1s", "startAt": "2026-01-01T00:00:00Z"}));
    let bf = backfill_with("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", Some(10_000));
    let e = backfill_of(&bf, &secondly, now).unwrap_err();
    assert!(
        e.message.contains("holds more than 10000 occurrences"),
        "{e}"
    );
}

#[test]
fn a_backfill_of_a_task_that_cannot_be_used_says_why() {
    let bf = backfill_with("2026-02-01T00:00:00Z", "2026-02-02T00:00:00Z", None);
    let e = backfill_of(&bf, &schedule(json!({"cron": "61 * * * *"})), at(NOW)).unwrap_err();
    assert_eq!(
        (e.field.as_str(), e.problem),
        ("spec.taskRef", Problem::Schedule)
    );
    assert!(
        e.message
            .starts_with("task \"t\" cannot be backfilled: spec.schedule.cron: minute value 61"),
        "{e}"
    );
}

/// Not an assertion of speed: the figures show what a review costs at worst.
#[test]
fn the_slowest_checks_print_their_cost() {
    for spec in [
        json!({"cron": "0 0 30 2 *"}),
        json!({"cron": "0 0 29 2 *", "startAt": "9999-03-01T00:00:00Z"}),
        json!({"pattern": {"frequency": "MONTHLY", "byMonthDay": [31], "interval": 12, "atTimes": ["09:00"]}, "startAt": "2026-04-01T00:00:00Z"}),
        json!({"rrule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"}),
        json!({"cron": "* * * * *", "count": 100000}),
    ] {
        let started = std::time::Instant::now();
        let outcome = task(&schedule(spec.clone()), at(NOW)).map(|_| ());
        println!("{spec}: {outcome:?} in {:?}", started.elapsed());
    }
}

/// A jitter as long as the spacing is refused where the spec is written (the webhook), not by
/// the controller's check: a task stored before the rule keeps delivering (stopped, it would
/// lose its pending occurrence and fail its backfills).
#[test]
fn a_jitter_longer_than_the_spacing_is_refused_when_written_only() {
    let t = schedule(json!({"every": "1m", "jitter": "10m"}));
    assert!(task(&t, at(NOW)).is_ok());
    let e = task_as_written(&t, None, at(NOW)).unwrap_err();
    assert_eq!(e.field, "spec.schedule.jitter");
    assert!(
        e.message
            .contains("not shorter than the time between two occurrences (1m)"),
        "{e}"
    );
    // Stored before the rule: a change that leaves the schedule alone (recur suspending it
    // after failures, say) is admitted; a change of the schedule is checked.
    let mut suspended = t.clone();
    suspended.spec.suspend = true;
    assert!(task_as_written(&suspended, Some(&t), at(NOW)).is_ok());
    let mut rescheduled = t.clone();
    rescheduled.spec.schedule.every = Some("2m".into());
    assert!(task_as_written(&rescheduled, Some(&t), at(NOW)).is_err());
}
