//! `kubectl recur next NAME`: the next occurrences, computed locally with the operator's engine,
//! due instants in the task's zone and in UTC (and the nominal instant when there is jitter).
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use clap::Args;
use serde::Serialize;

use super::output::{Format, Report, json, local, plural, rfc3339_in, table, utc};
use super::subject::{Subject, load};
use super::{Error, Global};
use crate::api::PendingOccurrence;
use crate::cli::schedule::parse_instant;
use crate::controller::task::occurrence_key;
use crate::schedule::{Occurrence, Schedule};

#[derive(Args, Debug, Clone, PartialEq)]
pub struct NextArgs {
    /// The RecurringTask (NAME or rt/NAME).
    #[arg(
        value_name = "NAME",
        required_unless_present = "file",
        conflicts_with = "file"
    )]
    pub name: Option<String>,
    /// Read the task from a manifest instead of the cluster.
    #[arg(short = 'f', long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// How many occurrences (1 to 1000).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub count: u16,
    /// Occurrences after this instant (RFC 3339) instead of after now.
    #[arg(long, value_name = "TIME", value_parser = parse_instant)]
    pub after: Option<DateTime<Utc>>,
}

pub async fn execute(g: &Global, args: &NextArgs, now: DateTime<Utc>) -> Result<Report, Error> {
    let subject = load(g, args.name.as_deref(), args.file.as_ref()).await?;
    let schedule = subject.compile(now)?;
    let after = args.after.unwrap_or(now);
    render(
        &subject,
        &schedule,
        after,
        usize::from(args.count),
        now,
        g.output,
    )
}

/// `-o json`: the task, its schedule and the occurrences after `after`.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct NextJson<'a> {
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
    pub uid: Option<&'a str>,
    /// The schedule, summarized (as `status.schedule`).
    pub schedule: String,
    pub time_zone: &'a str,
    pub suspended: bool,
    pub after: String,
    pub occurrences: Vec<OccurrenceJson>,
    /// The operator's `status.nextOccurrence`, as it is now.
    pub pending: Option<&'a PendingOccurrence>,
}

#[derive(Serialize, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OccurrenceJson {
    /// The scheduled instant (UTC): the occurrence's identity.
    pub nominal: String,
    /// When it is due (UTC): nominal plus jitter.
    pub due: String,
    /// `due` at the task's zone's offset.
    pub due_local: String,
    /// `rt-<uid>-<nominal>`; null when the UID is unknown (a manifest).
    pub idempotency_key: Option<String>,
}

/// The whole output of `next`, from what was read.
pub fn render(
    subject: &Subject,
    schedule: &Schedule,
    after: DateTime<Utc>,
    count: usize,
    now: DateTime<Utc>,
    format: Format,
) -> Result<Report, Error> {
    let occurrences: Vec<Occurrence> = schedule.iter_after(after).take(count).collect();
    let zone = schedule.time_zone();
    let mut warnings = subject.warnings(now);
    if occurrences.len() < count {
        warnings.push(format!(
            "the schedule ends: {} after {}",
            plural(occurrences.len(), "occurrence"),
            utc(after)
        ));
    }
    let stdout = match format {
        Format::Json => json(&NextJson {
            namespace: subject.namespace.as_deref(),
            name: subject.name.as_deref(),
            uid: subject.uid.as_deref(),
            schedule: schedule.summary(),
            time_zone: zone.name(),
            suspended: subject.suspended(),
            after: utc(after),
            occurrences: occurrences
                .iter()
                .map(|o| OccurrenceJson {
                    nominal: utc(o.nominal),
                    due: utc(o.due),
                    due_local: rfc3339_in(o.due, zone),
                    idempotency_key: subject.uid.as_deref().map(|u| occurrence_key(u, o.nominal)),
                })
                .collect(),
            pending: subject.status().and_then(|s| s.next_occurrence.as_ref()),
        })?,
        Format::Text => text(subject, schedule, &occurrences, zone),
    };
    Ok(Report {
        stdout,
        warnings,
        failure: None,
    })
}

fn text(subject: &Subject, schedule: &Schedule, occurrences: &[Occurrence], zone: Tz) -> String {
    let jitter = subject
        .spec
        .jitter
        .as_deref()
        .map_or(String::new(), |j| format!(", jitter {j}"));
    let mut out = format!("{}: {}{jitter}\n", subject.label, schedule.summary());
    if occurrences.is_empty() {
        out.push_str("no further occurrences\n");
        return out;
    }
    let zoned = zone != Tz::UTC;
    let jittered = subject.spec.jitter.is_some();
    let nominal_h = format!("NOMINAL ({})", zone.name());
    let due_h = format!("DUE ({})", zone.name());
    let mut header = vec![];
    if jittered {
        header.push(nominal_h.as_str());
    }
    if zoned {
        header.push(due_h.as_str());
    }
    header.push("DUE (UTC)");
    let rows: Vec<Vec<String>> = occurrences
        .iter()
        .map(|o| {
            let mut row = vec![];
            if jittered {
                row.push(local(o.nominal, zone));
            }
            if zoned {
                row.push(local(o.due, zone));
            }
            row.push(utc(o.due));
            row
        })
        .collect();
    out.push_str(&table(&header, &rows));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use serde_json::json;

    use super::*;
    use crate::plugin::subject::fixtures::{UID, task};

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn run(subject: &Subject, count: usize, format: Format) -> Report {
        let now = at("2026-03-28T00:00:00Z");
        let schedule = subject.compile(now).unwrap();
        render(subject, &schedule, now, count, now, format).unwrap()
    }

    #[test]
    fn text_shows_the_zone_and_utc_across_spring_forward() {
        let s = Subject::from_task(task(
            json!({"cron": "30 2 * * *", "timeZone": "Europe/Berlin"}),
            json!({}),
            json!({"observedGeneration": 1}),
        ));
        let out = run(&s, 3, Format::Text);
        assert_eq!(
            out.stdout,
            "nightly in team-a: cron 30 2 * * * (Europe/Berlin)\n\
             DUE (Europe/Berlin)              DUE (UTC)\n\
             Sat 2026-03-28 02:30:00 +01:00   2026-03-28T01:30:00Z\n\
             Sun 2026-03-29 03:30:00 +02:00   2026-03-29T01:30:00Z\n\
             Mon 2026-03-30 02:30:00 +02:00   2026-03-30T00:30:00Z\n"
        );
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    }

    #[test]
    fn jitter_adds_the_nominal_column_and_utc_alone_has_one_column() {
        let s = Subject::from_task(task(
            json!({"every": "1h", "jitter": "10m"}),
            json!({}),
            json!({"observedGeneration": 1}),
        ));
        let out = run(&s, 2, Format::Text);
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines[0], "nightly in team-a: every 1h, jitter 10m");
        assert_eq!(lines[1], "NOMINAL (UTC)                    DUE (UTC)");
        assert!(lines[2].starts_with("Sat 2026-03-28 01:00:00 +00:00   2026-03-28T01:0"));
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn json_lists_nominal_due_local_and_key_with_the_pending_occurrence() {
        let s = Subject::from_task(task(
            // `count` counts from the start: without a startAt it would count from creation
            // (2026-01-01), and the one occurrence would be long past.
            json!({"cron": "0 9 * * MON", "timeZone": "America/New_York", "count": 1,
                "startAt": "2026-03-28T00:00:00Z"}),
            json!({}),
            json!({"observedGeneration": 1, "nextOccurrence": {"nominal": "2026-03-30T13:00:00Z",
                "due": "2026-03-30T13:00:00Z", "idempotencyKey": "rt-x", "attempts": 0}}),
        ));
        let out = run(&s, 2, Format::Json);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(
            v,
            json!({
                "namespace": "team-a", "name": "nightly", "uid": UID,
                "schedule": "cron 0 9 * * MON (America/New_York)",
                "timeZone": "America/New_York", "suspended": false,
                "after": "2026-03-28T00:00:00Z",
                "occurrences": [{
                    "nominal": "2026-03-30T13:00:00Z", "due": "2026-03-30T13:00:00Z",
                    "dueLocal": "2026-03-30T09:00:00-04:00",
                    "idempotencyKey": format!("rt-{UID}-20260330T130000Z"),
                }],
                "pending": {"nominal": "2026-03-30T13:00:00Z", "due": "2026-03-30T13:00:00Z",
                    "idempotencyKey": "rt-x", "attempts": 0},
            })
        );
        // count: 1, so the second is missing and said so (on standard error).
        assert_eq!(
            out.warnings,
            ["the schedule ends: 1 occurrence after 2026-03-28T00:00:00Z"]
        );
    }

    #[test]
    fn an_ended_schedule_says_so() {
        let s = Subject::from_task(task(
            json!({"every": "1h", "endAt": "2026-02-01T00:00:00Z"}),
            json!({}),
            json!({"observedGeneration": 1}),
        ));
        let out = run(&s, 5, Format::Text);
        assert_eq!(
            out.stdout,
            "nightly in team-a: every 1h\nno further occurrences\n"
        );
    }
}
