//! `kubectl recur explain-schedule NAME` (or `-f task.yaml`): the schedule in words, its zone and
//! daylight-saving policy, start and end, jitter, and the next instants the engine computes.
use std::path::PathBuf;

use chrono::{DateTime, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use clap::Args;
use serde::Serialize;

use super::output::{Format, Report, fields, json, local, rfc3339_in, utc};
use super::subject::{Subject, load};
use super::{Error, Global};
use crate::schedule::{Schedule, ScheduleSpec};

mod words;

#[derive(Args, Debug, Clone, PartialEq)]
pub struct ExplainArgs {
    /// The RecurringTask (NAME or rt/NAME).
    #[arg(
        value_name = "NAME",
        required_unless_present = "file",
        conflicts_with = "file"
    )]
    pub name: Option<String>,
    /// Read the task from a manifest instead of the cluster (no cluster needed).
    #[arg(short = 'f', long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// How many of the next instants to show (0 to 100).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub count: u8,
}

pub async fn execute(g: &Global, args: &ExplainArgs, now: DateTime<Utc>) -> Result<Report, Error> {
    let subject = load(g, args.name.as_deref(), args.file.as_ref()).await?;
    let schedule = subject.compile(now)?;
    let explanation = explain(&subject, &schedule, now, usize::from(args.count));
    render(&subject, &explanation, g.output)
}

/// The explanation; also `-o json` (camelCase).
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// As `status.schedule` and `kubectl get` show it.
    pub summary: String,
    pub kind: Kind,
    /// The rule in words.
    pub description: String,
    pub time_zone: String,
    #[serde(skip)]
    pub zone: Tz,
    /// The zone's offset now, and its next change within a year.
    pub offset: String,
    /// How local times skipped or repeated by a daylight-saving change are handled; null when
    /// the zone does not apply (`every`) or has no change within a year.
    pub daylight_saving: Option<String>,
    pub start: String,
    pub end: String,
    pub jitter: Option<String>,
    pub next: Vec<NextJson>,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NextJson {
    /// `due`, for the text.
    #[serde(skip)]
    pub at: DateTime<Utc>,
    pub nominal: String,
    pub due: String,
    pub due_local: String,
}

/// The schedule's kind (`cron`, `pattern`, `rrule`, `every` in JSON).
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Cron,
    Pattern,
    Rrule,
    Every,
}

/// The kind and the rule in words; `start` gives a pattern's and a rule's defaults.
fn describe(spec: &ScheduleSpec, start: NaiveDateTime) -> (Kind, String) {
    if let Some(cron) = &spec.cron {
        (Kind::Cron, words::cron(cron))
    } else if let Some(pattern) = &spec.pattern {
        (Kind::Pattern, words::pattern(pattern, start))
    } else if let Some(rule) = &spec.rrule {
        (Kind::Rrule, words::rrule(rule, start))
    } else {
        (
            Kind::Every,
            format!(
                "Every {} of elapsed time, counted from the start; time zones and daylight saving do not apply",
                spec.every.as_deref().unwrap_or_default().trim()
            ),
        )
    }
}

/// Pure: everything `explain-schedule` says about `subject`'s compiled `schedule` at `now`.
pub fn explain(
    subject: &Subject,
    schedule: &Schedule,
    now: DateTime<Utc>,
    count: usize,
) -> Explanation {
    let spec = &subject.spec;
    let zone = schedule.time_zone();
    let start = spec.start_at.or(subject.created).unwrap_or(now);
    let (kind, description) = describe(spec, start.with_timezone(&zone).naive_local());
    let calendar = kind != Kind::Every;
    let change = next_offset_change(zone, now);
    let offset = match &change {
        Some((at, to)) => format!(
            "UTC{} now; UTC{to} from {}",
            offset_at(zone, now),
            local(*at, zone)
        ),
        None => format!("UTC{}, no change within a year", offset_at(zone, now)),
    };
    let daylight_saving = (calendar && change.is_some()).then(|| {
        "a local time skipped when clocks spring forward happens as long after the change as it was after the skipped hour's start (02:30 becomes 03:30); a local time that happens twice when clocks fall back happens once, the first time".to_owned()
    });
    let start_text = match (spec.start_at, subject.created) {
        (Some(s), _) => format!("{} (startAt)", utc(s)),
        (None, Some(c)) => format!("{} (when the task was created; no startAt)", utc(c)),
        (None, None) => "when the task is created (no startAt)".to_owned(),
    };
    let end = if let Some(e) = spec.end_at {
        format!("{} (endAt)", utc(e))
    } else if let Some(n) = spec.count {
        format!("after {n} occurrences in all (count)")
    } else if let Some(e) = spec.rrule.as_deref().and_then(words::rrule_end) {
        e
    } else {
        "never".to_owned()
    };
    let next: Vec<NextJson> = schedule
        .iter_after(now)
        .take(count)
        .map(|o| NextJson {
            at: o.due,
            nominal: utc(o.nominal),
            due: utc(o.due),
            due_local: rfc3339_in(o.due, zone),
        })
        .collect();
    let end = if count > 0 && next.is_empty() {
        format!("{end}: the schedule has ended, nothing falls due after now")
    } else {
        end
    };
    Explanation {
        summary: schedule.summary(),
        kind,
        description,
        time_zone: zone.name().to_owned(),
        zone,
        offset,
        daylight_saving,
        start: start_text,
        end,
        jitter: spec.jitter.as_deref().map(|j| {
            format!(
                "each occurrence is due a fixed pseudo-random delay below {} after its nominal instant, derived from the task's UID and the instant (the same on every replica and restart)",
                j.trim()
            )
        }),
        next,
    }
}

/// `+01:00`.
fn offset_at(zone: Tz, t: DateTime<Utc>) -> String {
    zone.offset_from_utc_datetime(&t.naive_utc())
        .fix()
        .to_string()
}

/// The first instant within a year after `now` at which the zone's offset changes, and the new
/// offset: found day by day, then by bisection over whole seconds (tz changes fall on whole
/// seconds, so the instant found is exact, not somewhere in the last second searched).
fn next_offset_change(zone: Tz, now: DateTime<Utc>) -> Option<(DateTime<Utc>, String)> {
    let off = |secs: i64| {
        DateTime::from_timestamp(secs, 0)
            .map(|t| zone.offset_from_utc_datetime(&t.naive_utc()).fix())
    };
    const DAY: i64 = 86_400;
    let first = off(now.timestamp())?;
    let mut lo = now.timestamp();
    for _ in 0..366 {
        let hi = lo + DAY;
        if off(hi)? != first {
            // Invariant: `a` has the old offset, `b` the new one.
            let (mut a, mut b) = (lo, hi);
            while b - a > 1 {
                let mid = a + (b - a) / 2;
                if off(mid)? == first {
                    a = mid;
                } else {
                    b = mid;
                }
            }
            return Some((DateTime::from_timestamp(b, 0)?, off(b)?.to_string()));
        }
        lo = hi;
    }
    None
}

pub fn render(subject: &Subject, e: &Explanation, format: Format) -> Result<Report, Error> {
    let mut warnings = vec![];
    if subject.task.is_none() && subject.uid.is_none() && subject.spec.jitter.is_some() {
        warnings.push(
            "the manifest has no metadata.uid: the jitter shown is for an empty seed; the created task's differs".into(),
        );
    }
    let stdout = match format {
        Format::Json => json(e)?,
        Format::Text => {
            let mut out = format!("{}: {}\n", subject.label, e.summary);
            let mut rows = vec![
                ("schedule", format!("{}.", e.description)),
                ("time zone", format!("{} ({})", e.time_zone, e.offset)),
            ];
            if let Some(d) = &e.daylight_saving {
                rows.push(("DST", d.clone()));
            }
            rows.push(("starts", e.start.clone()));
            rows.push(("ends", e.end.clone()));
            if let Some(j) = &e.jitter {
                rows.push(("jitter", j.clone()));
            }
            for (i, n) in e.next.iter().enumerate() {
                rows.push((
                    if i == 0 { "next" } else { "" },
                    format!("{} ({})", local(n.at, e.zone), n.due),
                ));
            }
            out.push_str(&fields(&rows));
            out
        }
    };
    Ok(Report {
        stdout,
        warnings,
        failure: None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use serde_json::json;

    use super::*;
    use crate::plugin::subject::fixtures::task;

    fn now() -> DateTime<Utc> {
        "2026-03-28T00:00:00Z".parse().unwrap()
    }

    fn explained(schedule: serde_json::Value) -> (Subject, Explanation) {
        let s = Subject::from_task(task(schedule, json!({}), json!({"observedGeneration": 1})));
        let compiled = s.compile(now()).unwrap();
        let e = explain(&s, &compiled, now(), 2);
        (s, e)
    }

    #[test]
    fn a_cron_in_berlin_in_words_with_the_dst_change_ahead() {
        let (s, e) =
            explained(json!({"cron": "30 2 * * *", "timeZone": "Europe/Berlin", "jitter": "2m"}));
        assert_eq!(e.description, "At 02:30 every day");
        assert_eq!(
            e.offset,
            "UTC+01:00 now; UTC+02:00 from Sun 2026-03-29 03:00:00 +02:00"
        );
        assert!(
            e.daylight_saving
                .as_deref()
                .unwrap()
                .contains("02:30 becomes 03:30")
        );
        assert_eq!(
            e.start,
            "2026-01-01T00:00:00Z (when the task was created; no startAt)"
        );
        assert_eq!(e.end, "never");
        assert!(e.jitter.as_deref().unwrap().contains("below 2m"));
        let out = render(&s, &e, Format::Text).unwrap().stdout;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "nightly in team-a: cron 30 2 * * * (Europe/Berlin)"
        );
        assert_eq!(lines[1], "schedule    At 02:30 every day.");
        assert_eq!(
            lines[2],
            "time zone   Europe/Berlin (UTC+01:00 now; UTC+02:00 from Sun 2026-03-29 03:00:00 +02:00)"
        );
        assert!(
            lines[7].starts_with("next        Sat 2026-03-28 02:3"),
            "{out}"
        );
        assert!(
            lines[8].starts_with("            Sun 2026-03-29 03:3"),
            "{out}"
        );
        assert_eq!(lines.len(), 9, "{out}");
    }

    #[test]
    fn every_ignores_zones_and_says_when_it_ends() {
        let (_, e) =
            explained(json!({"every": "90m", "startAt": "2026-03-01T00:00:00Z", "count": 3}));
        assert_eq!(e.kind, Kind::Every);
        assert!(e.description.starts_with("Every 90m of elapsed time"));
        assert_eq!(e.offset, "UTC+00:00, no change within a year");
        assert_eq!(e.daylight_saving, None);
        assert_eq!(e.start, "2026-03-01T00:00:00Z (startAt)");
        assert_eq!(
            e.end,
            "after 3 occurrences in all (count): the schedule has ended, nothing falls due after now"
        );
        assert!(e.next.is_empty());
    }

    #[test]
    fn json_is_the_explanation_in_camel_case() {
        let (s, e) = explained(
            json!({"pattern": {"frequency": "WEEKLY", "byDay": ["MO"], "atTimes": ["09:00"]},
            "timeZone": "America/New_York"}),
        );
        let v: serde_json::Value =
            serde_json::from_str(&render(&s, &e, Format::Json).unwrap().stdout).unwrap();
        assert_eq!(v["kind"], json!("pattern"));
        assert_eq!(v["description"], json!("Every week on Monday at 09:00"));
        assert_eq!(v["timeZone"], json!("America/New_York"));
        assert_eq!(v["jitter"], json!(null));
        assert_eq!(
            v["next"][0],
            json!({"nominal": "2026-03-30T13:00:00Z", "due": "2026-03-30T13:00:00Z",
                "dueLocal": "2026-03-30T09:00:00-04:00"})
        );
        assert!(v["daylightSaving"].is_string());
    }
}
