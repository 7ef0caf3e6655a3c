#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: ScheduleArgs,
}

fn args(line: &[&str]) -> ScheduleArgs {
    let mut argv = vec!["recur-schedule"];
    argv.extend_from_slice(line);
    Cli::try_parse_from(argv).unwrap().args
}

fn now() -> DateTime<Utc> {
    "2026-03-28T00:00:00Z".parse().unwrap()
}

fn no_files(_: &std::path::Path) -> Result<String, String> {
    Err("No such file or directory (os error 2)".into())
}

fn run_line(line: &[&str]) -> Output {
    preview(&args(line), now(), &no_files)
}

#[test]
fn cron_in_berlin_across_spring_forward() {
    let out = run_line(&[
        "--cron",
        "30 2 * * *",
        "--time-zone",
        "Europe/Berlin",
        "--after",
        "2026-03-28T00:00:00Z",
        "--count",
        "3",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "2026-03-28T02:30:00+01:00\n2026-03-29T03:30:00+02:00\n2026-03-30T02:30:00+02:00\n"
    );
    assert_eq!(out.stderr, "");
}

#[test]
fn utc_and_json() {
    let out = run_line(&[
        "--cron",
        "30 2 * * *",
        "--time-zone",
        "Europe/Berlin",
        "--count",
        "2",
        "--utc",
        "--output",
        "json",
    ]);
    assert_eq!(out.code, 0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!([
            {"nominal": "2026-03-28T01:30:00Z", "due": "2026-03-28T01:30:00Z"},
            {"nominal": "2026-03-29T01:30:00Z", "due": "2026-03-29T01:30:00Z"},
        ])
    );
}

#[test]
fn pattern_flags() {
    let out = run_line(&[
        "--pattern",
        "weekly",
        "--by-day",
        "MO,WE",
        "--at",
        "09:00,17:30",
        "--time-zone",
        "America/New_York",
        "--count",
        "3",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "2026-03-30T09:00:00-04:00\n2026-03-30T17:30:00-04:00\n2026-04-01T09:00:00-04:00\n"
    );
    let out = run_line(&[
        "--pattern",
        "MONTHLY",
        "--by-month-day",
        "-1",
        "--at",
        "18:00",
        "--count",
        "2",
    ]);
    assert_eq!(out.stdout, "2026-03-31T18:00:00Z\n2026-04-30T18:00:00Z\n");
    let out = run_line(&[
        "--pattern",
        "YEARLY",
        "--by-month",
        "2",
        "--by-month-day",
        "29",
        "--at",
        "00:00",
        "--interval",
        "1",
        "--count",
        "1",
    ]);
    assert_eq!(out.stdout, "2028-02-29T00:00:00Z\n");
}

#[test]
fn rrule_with_exdate_lines() {
    let out = run_line(&[
        "--rrule",
        "FREQ=DAILY;BYHOUR=9;BYMINUTE=0;BYSECOND=0\nEXDATE:20260329T090000Z",
        "--count",
        "2",
    ]);
    assert_eq!(out.stdout, "2026-03-28T09:00:00Z\n2026-03-30T09:00:00Z\n");
    let out = run_line(&[
        "--rrule",
        "FREQ=DAILY;BYHOUR=9;BYMINUTE=0;BYSECOND=0\\nEXDATE:20260329T090000Z",
        "--count",
        "2",
    ]);
    assert_eq!(out.stdout, "2026-03-28T09:00:00Z\n2026-03-30T09:00:00Z\n");
}

#[test]
fn rrule_by_day_mixing_plain_and_numbered_weekdays() {
    // Every Monday and the last Friday of the month, as `--pattern MONTHLY --by-day MO,-1FR`.
    let out = run_line(&[
        "--rrule",
        "FREQ=MONTHLY;BYDAY=MO,-1FR;BYHOUR=9;BYMINUTE=0;BYSECOND=0",
        "--time-zone",
        "America/New_York",
        "--count",
        "5",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "2026-03-30T09:00:00-04:00\n2026-04-06T09:00:00-04:00\n2026-04-13T09:00:00-04:00\n2026-04-20T09:00:00-04:00\n2026-04-24T09:00:00-04:00\n"
    );
}

#[test]
fn every_with_jitter_shows_due() {
    let out = run_line(&[
        "--every",
        "90m",
        "--start-at",
        "2026-03-27T23:00:00Z",
        "--jitter",
        "1m",
        "--seed",
        "abc",
        "--count",
        "2",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].starts_with("2026-03-28T00:30:00Z  due 2026-03-28T00:3"),
        "{}",
        lines[0]
    );
    // Same seed, same output.
    assert_eq!(
        out,
        run_line(&[
            "--every",
            "90m",
            "--start-at",
            "2026-03-27T23:00:00Z",
            "--jitter",
            "1m",
            "--seed",
            "abc",
            "--count",
            "2"
        ])
    );
}

#[test]
fn ends_early_with_a_note() {
    let out = run_line(&[
        "--every",
        "1h",
        "--start-at",
        "2026-03-28T00:00:00Z",
        "--total",
        "3",
        "--count",
        "10",
    ]);
    assert_eq!(out.code, 0);
    assert_eq!(out.stdout.lines().count(), 2);
    assert_eq!(
        out.stderr,
        "note: the schedule ends: 2 occurrences after 2026-03-28T00:00:00Z\n"
    );
}

#[test]
fn errors_exit_2() {
    let out = run_line(&["--cron", "0 0 * * 8"]);
    assert_eq!(
        out,
        Output {
            stdout: String::new(),
            stderr: "error: cron: day-of-week value 8 is out of range 0-7\n".into(),
            code: 2
        }
    );
    let out = run_line(&["--cron", "@daily", "--every", "1h"]);
    assert_eq!(
        out.stderr,
        "error: give exactly one of --cron, --pattern, --rrule, --every or --file (got --cron, --every)\n"
    );
    assert_eq!(run_line(&[]).code, 2);
    assert_eq!(
        run_line(&["--cron", "@daily", "--at", "09:00"]).stderr,
        "error: --at only applies to --pattern\n"
    );
    assert_eq!(run_line(&["--cron", "@daily", "--count", "10001"]).code, 2);
    assert_eq!(run_line(&["--cron", "@daily", "--count", "0"]).code, 2);
    let out = run_line(&["--file", "missing.yaml"]);
    assert_eq!(
        out.stderr,
        "error: missing.yaml: No such file or directory (os error 2)\n"
    );
    assert_eq!(
        run_line(&["--cron", "@daily", "--time-zone", "Europe/Berln"]).code,
        2
    );
    assert!(Cli::try_parse_from(["x", "--pattern", "HOURLY"]).is_err());
    assert!(Cli::try_parse_from(["x", "--cron", "@daily", "--after", "yesterday"]).is_err());
}

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: recur.dev/v1alpha1
kind: RecurringTask
metadata:
  name: report
  namespace: demo
  uid: 0b6e2f4a-1111-2222-3333-444455556666
spec:
  title: Monthly report
  schedule:
    rrule: |
      RRULE:FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;BYHOUR=16;BYMINUTE=0;BYSECOND=0
      EXDATE;TZID=Asia/Tokyo:20260430T160000
    timeZone: Asia/Tokyo
    startAt: "2026-01-01T00:00:00+09:00"
    count: 12
    jitter: 2m
"#;

#[test]
fn manifest_file() {
    let source = source_from_manifest(MANIFEST).unwrap();
    assert_eq!(
        source.uid.as_deref(),
        Some("0b6e2f4a-1111-2222-3333-444455556666")
    );
    assert_eq!(source.spec.count, Some(12));
    assert_eq!(
        source.spec.start_at,
        Some("2025-12-31T15:00:00Z".parse().unwrap())
    );
    let read = |_: &std::path::Path| Ok::<_, String>(MANIFEST.to_string());
    let out = preview(
        &args(&["--file", "task.yaml", "--count", "3"]),
        now(),
        &read,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let nominal: Vec<&str> = out
        .stdout
        .lines()
        .map(|l| l.split("  due ").next().unwrap())
        .collect();
    assert_eq!(
        nominal,
        [
            "2026-03-31T16:00:00+09:00",
            "2026-05-29T16:00:00+09:00",
            "2026-06-30T16:00:00+09:00"
        ]
    );
    // Flags override the file.
    let out = preview(
        &args(&[
            "--file",
            "task.yaml",
            "--count",
            "1",
            "--time-zone",
            "UTC",
            "--total",
            "1",
        ]),
        now(),
        &read,
    );
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr
            .starts_with("note: the schedule ends: 0 occurrences")
    );
    assert_eq!(
        source_from_manifest("kind: ConfigMap\n").unwrap_err(),
        "no RecurringTask in the file"
    );
    assert!(
        source_from_manifest("kind: RecurringTask\nspec: {}\n")
            .unwrap_err()
            .contains("no spec.schedule")
    );
    assert!(
        source_from_manifest("kind: RecurringTask\nspec:\n  schedule:\n    count: many\n")
            .unwrap_err()
            .starts_with("spec.schedule: ")
    );
    assert!(
        source_from_manifest(": : :\n  - [")
            .unwrap_err()
            .starts_with("not valid YAML")
    );
}

#[test]
fn formatting() {
    let t: DateTime<Utc> = "2026-03-29T01:30:00Z".parse().unwrap();
    let o = Occurrence {
        nominal: t,
        due: t + chrono::Duration::milliseconds(1500),
    };
    let berlin: Tz = "Europe/Berlin".parse().unwrap();
    assert_eq!(
        format_text(&[o], berlin, false),
        "2026-03-29T03:30:00+02:00\n"
    );
    assert_eq!(
        format_text(&[o], berlin, true),
        "2026-03-29T03:30:00+02:00  due 2026-03-29T03:30:01.500+02:00\n"
    );
    assert_eq!(format_text(&[o], Tz::UTC, false), "2026-03-29T01:30:00Z\n");
    assert_eq!(format_json(&[], Tz::UTC), "[]\n");
    assert_eq!(
        format_json(&[o], Tz::UTC),
        "[\n  {\n    \"nominal\": \"2026-03-29T01:30:00Z\",\n    \"due\": \"2026-03-29T01:30:01.500Z\"\n  }\n]\n"
    );
}

/// A jitter as long as the spacing: an error for a new schedule (what `kubectl apply` refuses),
/// a note for a stored task's manifest (it has a creation time and keeps working).
#[test]
fn a_jitter_longer_than_the_spacing_is_an_error_for_a_new_schedule_only() {
    let out = run_line(&["--every", "1m", "--jitter", "10m", "--count", "2"]);
    assert_eq!(out.code, EXIT_ERROR);
    assert!(
        out.stderr
            .contains("jitter: 10m is not shorter than the time between two occurrences (1m)"),
        "{}",
        out.stderr
    );
    let stored = "apiVersion: recur.dev/v1alpha1\nkind: RecurringTask\nmetadata: {name: x, uid: u-1, creationTimestamp: '2026-01-01T00:00:00Z'}\nspec:\n  schedule: {every: 1m, jitter: 10m}\n";
    let read = |_: &std::path::Path| Ok::<_, String>(stored.to_string());
    let out = preview(
        &args(&["--file", "task.yaml", "--count", "2"]),
        now(),
        &read,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("note: jitter: 10m"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout.lines().count(), 2, "{}", out.stdout);
}
