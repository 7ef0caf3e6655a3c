//! Table tests for hard dates, through the public API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use chrono_tz::Tz;

use super::*;

pub(crate) fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn ctx() -> CompileContext {
    CompileContext {
        anchor: t("2020-01-01T00:00:00Z"),
        seed: "0b6e2f4a-uid".into(),
    }
}

fn cron(expr: &str, zone: &str) -> ScheduleSpec {
    ScheduleSpec {
        cron: Some(expr.into()),
        time_zone: Some(zone.into()),
        ..Default::default()
    }
}

fn pattern(
    freq: Frequency,
    zone: &str,
    start: &str,
    f: impl FnOnce(&mut PatternSpec),
) -> ScheduleSpec {
    let mut p = PatternSpec {
        frequency: freq,
        ..Default::default()
    };
    f(&mut p);
    ScheduleSpec {
        pattern: Some(Box::new(p)),
        time_zone: Some(zone.into()),
        start_at: Some(t(start)),
        ..Default::default()
    }
}

fn compile(spec: &ScheduleSpec) -> Schedule {
    Schedule::compile(spec, &ctx()).unwrap()
}

fn compile_err(spec: &ScheduleSpec) -> String {
    Schedule::compile(spec, &ctx()).unwrap_err().to_string()
}

/// The next `n` nominal instants after `after`, in the schedule's zone.
pub(crate) fn upcoming(s: &Schedule, after: &str, n: usize) -> Vec<String> {
    let tz = s.time_zone();
    s.iter_after(t(after))
        .take(n)
        .map(|o| o.nominal.with_timezone(&tz).to_rfc3339())
        .collect()
}

/// Asserts that `next_after` agrees with iteration at every step of `upcoming`.
pub(crate) fn assert_steps_agree(s: &Schedule, after: &str, n: usize) {
    let all: Vec<Occurrence> = s.iter_after(t(after)).take(n).collect();
    let mut prev = t(after);
    for o in &all {
        assert_eq!(s.next_after(prev), Some(*o), "after {prev}");
        // And from just before it, and from a second before.
        assert_eq!(s.next_after(o.nominal - Duration::seconds(1)), Some(*o));
        prev = o.nominal;
    }
}

#[test]
fn berlin_spring_forward_moves_0230_to_0330() {
    let s = compile(&cron("30 2 * * *", "Europe/Berlin"));
    assert_eq!(
        upcoming(&s, "2026-03-28T00:00:00Z", 3),
        [
            "2026-03-28T02:30:00+01:00",
            "2026-03-29T03:30:00+02:00",
            "2026-03-30T02:30:00+02:00",
        ]
    );
    assert_steps_agree(&s, "2026-03-27T00:00:00Z", 5);
    assert_eq!(s.summary(), "cron 30 2 * * * (Europe/Berlin)");
}

#[test]
fn berlin_fall_back_runs_0230_once() {
    let s = compile(&cron("30 2 * * *", "Europe/Berlin"));
    assert_eq!(
        upcoming(&s, "2026-10-24T00:00:00Z", 3),
        [
            "2026-10-24T02:30:00+02:00",
            "2026-10-25T02:30:00+02:00",
            "2026-10-26T02:30:00+01:00",
        ]
    );
    // Asking from inside the repeated hour (after its first pass) gives the next day.
    assert_eq!(
        upcoming(&s, "2026-10-25T00:30:00Z", 1),
        ["2026-10-26T02:30:00+01:00"]
    );
}

#[test]
fn quarter_hours_on_spring_forward_day_fire_once_each() {
    let s = compile(&cron("*/15 * * * *", "Europe/Berlin"));
    assert_eq!(
        upcoming(&s, "2026-03-29T00:30:00Z", 6),
        [
            "2026-03-29T01:45:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-29T03:15:00+02:00",
            "2026-03-29T03:30:00+02:00",
            "2026-03-29T03:45:00+02:00",
            "2026-03-29T04:00:00+02:00",
        ]
    );
    assert_steps_agree(&s, "2026-03-29T00:00:00Z", 12);
}

#[test]
fn hourly_across_fall_back_fires_the_repeated_hour_once() {
    let s = compile(&cron("@hourly", "Europe/Berlin"));
    assert_eq!(
        upcoming(&s, "2026-10-24T22:30:00Z", 4),
        [
            "2026-10-25T01:00:00+02:00",
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T03:00:00+01:00",
            "2026-10-25T04:00:00+01:00",
        ]
    );
    assert_steps_agree(&s, "2026-10-24T20:00:00Z", 8);
}

#[test]
fn new_york_both_transitions() {
    let s = compile(&cron("30 2 * * *", "America/New_York"));
    assert_eq!(
        upcoming(&s, "2026-03-07T12:00:00Z", 3),
        [
            "2026-03-08T03:30:00-04:00",
            "2026-03-09T02:30:00-04:00",
            "2026-03-10T02:30:00-04:00",
        ]
    );
    let s = compile(&cron("30 1 * * *", "America/New_York"));
    assert_eq!(
        upcoming(&s, "2026-10-31T12:00:00Z", 3),
        [
            "2026-11-01T01:30:00-04:00",
            "2026-11-02T01:30:00-05:00",
            "2026-11-03T01:30:00-05:00",
        ]
    );
}

#[test]
fn lord_howe_half_hour_shifts() {
    // +10:30 -> +11:00 at 02:00 on 2026-10-04; +11:00 -> +10:30 at 02:00 on 2026-04-05.
    let s = compile(&cron("15 2 * * *", "Australia/Lord_Howe"));
    assert_eq!(
        upcoming(&s, "2026-10-02T12:00:00Z", 3),
        [
            "2026-10-03T02:15:00+10:30",
            "2026-10-04T02:45:00+11:00",
            "2026-10-05T02:15:00+11:00",
        ]
    );
    let s = compile(&cron("45 1 * * *", "Australia/Lord_Howe"));
    assert_eq!(
        upcoming(&s, "2026-04-03T12:00:00Z", 3),
        [
            "2026-04-04T01:45:00+11:00",
            "2026-04-05T01:45:00+11:00",
            "2026-04-06T01:45:00+10:30",
        ]
    );
}

#[test]
fn midnight_transitions_fire_once_a_day() {
    let midnight = |zone: &str| {
        compile(&ScheduleSpec {
            start_at: Some(t("2018-01-01T00:00:00Z")),
            ..cron("0 0 * * *", zone)
        })
    };
    // Santiago: 2026-09-06 00:00 -> 01:00 (gap at midnight); 2026-04-05 00:00 -> 04-04 23:00.
    assert_eq!(
        upcoming(&midnight("America/Santiago"), "2026-09-05T00:00:00Z", 3),
        [
            "2026-09-05T00:00:00-04:00",
            "2026-09-06T01:00:00-03:00",
            "2026-09-07T00:00:00-03:00",
        ]
    );
    assert_eq!(
        upcoming(&midnight("America/Santiago"), "2026-04-03T12:00:00Z", 3),
        [
            "2026-04-04T00:00:00-03:00",
            "2026-04-05T00:00:00-04:00",
            "2026-04-06T00:00:00-04:00",
        ]
    );
    // Havana: 2026-03-08 00:00 -> 01:00; 2026-11-01 01:00 -> 00:00 (midnight repeats).
    assert_eq!(
        upcoming(&midnight("America/Havana"), "2026-03-07T00:00:00Z", 3),
        [
            "2026-03-07T00:00:00-05:00",
            "2026-03-08T01:00:00-04:00",
            "2026-03-09T00:00:00-04:00",
        ]
    );
    assert_eq!(
        upcoming(&midnight("America/Havana"), "2026-10-31T00:00:00Z", 3),
        [
            "2026-10-31T00:00:00-04:00",
            "2026-11-01T00:00:00-04:00",
            "2026-11-02T00:00:00-05:00",
        ]
    );
    // Sao Paulo, when it still had DST: 2018-11-04 00:00 -> 01:00.
    assert_eq!(
        upcoming(&midnight("America/Sao_Paulo"), "2018-11-03T00:00:00Z", 3),
        [
            "2018-11-03T00:00:00-03:00",
            "2018-11-04T01:00:00-02:00",
            "2018-11-05T00:00:00-02:00",
        ]
    );
}

#[test]
fn apia_skipped_day_merges_with_the_next() {
    // 2011-12-30 did not exist in Samoa: its 09:00 reads as 12-31 09:00+14:00, where the 31st's
    // own 09:00 is the same instant and merges with it (one occurrence).
    let s = compile(&ScheduleSpec {
        start_at: Some(t("2011-01-01T00:00:00Z")),
        ..cron("0 9 * * *", "Pacific/Apia")
    });
    assert_eq!(
        upcoming(&s, "2011-12-28T00:00:00Z", 4),
        [
            "2011-12-28T09:00:00-10:00",
            "2011-12-29T09:00:00-10:00",
            "2011-12-31T09:00:00+14:00",
            "2012-01-01T09:00:00+14:00",
        ]
    );
    assert_steps_agree(&s, "2011-12-27T00:00:00Z", 6);
}

#[test]
fn leap_days() {
    let s = compile(&cron("0 0 29 2 *", "UTC"));
    assert_eq!(
        upcoming(&s, "2026-01-01T00:00:00Z", 3),
        [
            "2028-02-29T00:00:00+00:00",
            "2032-02-29T00:00:00+00:00",
            "2036-02-29T00:00:00+00:00",
        ]
    );
    // 2100 is not a leap year.
    assert_eq!(
        upcoming(&s, "2096-03-01T00:00:00Z", 1),
        ["2104-02-29T00:00:00+00:00"]
    );
    let s = compile(&pattern(
        Frequency::Yearly,
        "Europe/Berlin",
        "2024-02-29T08:00:00Z",
        |_| {},
    ));
    assert_eq!(
        upcoming(&s, "2024-01-01T00:00:00Z", 3),
        [
            "2024-02-29T09:00:00+01:00",
            "2028-02-29T09:00:00+01:00",
            "2032-02-29T09:00:00+01:00",
        ]
    );
    let s = compile(&ScheduleSpec {
        rrule: Some("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29;BYHOUR=12;BYMINUTE=0;BYSECOND=0".into()),
        start_at: Some(t("2025-01-01T00:00:00Z")),
        ..Default::default()
    });
    assert_eq!(
        upcoming(&s, "2025-01-01T00:00:00Z", 2),
        ["2028-02-29T12:00:00+00:00", "2032-02-29T12:00:00+00:00"]
    );
}

#[test]
fn month_ends() {
    let s = compile(&pattern(
        Frequency::Monthly,
        "UTC",
        "2026-01-01T00:00:00Z",
        |p| {
            p.by_month_day = vec![31];
            p.at_times = vec!["12:00".into()];
        },
    ));
    assert_eq!(
        upcoming(&s, "2026-01-01T00:00:00Z", 3),
        [
            "2026-01-31T12:00:00+00:00",
            "2026-03-31T12:00:00+00:00",
            "2026-05-31T12:00:00+00:00",
        ]
    );
    let s = compile(&pattern(
        Frequency::Monthly,
        "Asia/Tokyo",
        "2028-01-01T00:00:00Z",
        |p| {
            p.by_month_day = vec![-1];
            p.at_times = vec!["18:00".into()];
        },
    ));
    assert_eq!(
        upcoming(&s, "2028-01-01T00:00:00Z", 3),
        [
            "2028-01-31T18:00:00+09:00",
            "2028-02-29T18:00:00+09:00",
            "2028-03-31T18:00:00+09:00",
        ]
    );
    let s = compile(&pattern(
        Frequency::Monthly,
        "Europe/Berlin",
        "2026-01-01T00:00:00Z",
        |p| {
            p.by_day = vec!["-1FR".into()];
            p.at_times = vec!["17:00".into()];
        },
    ));
    assert_eq!(
        upcoming(&s, "2026-01-01T00:00:00Z", 3),
        [
            "2026-01-30T17:00:00+01:00",
            "2026-02-27T17:00:00+01:00",
            "2026-03-27T17:00:00+01:00",
        ]
    );
    let s = compile(&ScheduleSpec {
        rrule: Some("RRULE:FREQ=MONTHLY;BYMONTHDAY=-1;BYHOUR=9;BYMINUTE=0;BYSECOND=0".into()),
        time_zone: Some("America/New_York".into()),
        start_at: Some(t("2027-01-15T00:00:00Z")),
        ..Default::default()
    });
    assert_eq!(
        upcoming(&s, "2027-01-15T00:00:00Z", 2),
        ["2027-01-31T09:00:00-05:00", "2027-02-28T09:00:00-05:00"]
    );
}

#[test]
fn year_boundaries_and_week_53() {
    let s = compile(&cron("30 23 31 12 *", "Pacific/Chatham"));
    assert_eq!(
        upcoming(&s, "2026-06-01T00:00:00Z", 2),
        ["2026-12-31T23:30:00+13:45", "2027-12-31T23:30:00+13:45"]
    );
    let s = compile(&pattern(
        Frequency::Daily,
        "Europe/Berlin",
        "2026-12-30T00:00:00Z",
        |p| {
            p.at_times = vec!["23:59".into(), "00:01".into()];
        },
    ));
    assert_eq!(
        upcoming(&s, "2026-12-31T12:00:00Z", 3),
        [
            "2026-12-31T23:59:00+01:00",
            "2027-01-01T00:01:00+01:00",
            "2027-01-01T23:59:00+01:00",
        ]
    );
    // ISO week 53 of 2026 starts Monday 2026-12-28; the next one is in 2032.
    let s = compile(&ScheduleSpec {
        rrule: Some("FREQ=YEARLY;BYWEEKNO=53;BYDAY=MO;BYHOUR=8;BYMINUTE=0;BYSECOND=0".into()),
        start_at: Some(t("2026-01-01T00:00:00Z")),
        ..Default::default()
    });
    assert_eq!(
        upcoming(&s, "2026-01-01T00:00:00Z", 2),
        ["2026-12-28T08:00:00+00:00", "2032-12-27T08:00:00+00:00"]
    );
    // Every other week across the boundary keeps its phase.
    let s = compile(&pattern(
        Frequency::Weekly,
        "UTC",
        "2026-12-21T10:00:00Z",
        |p| p.interval = Some(2),
    ));
    assert_eq!(
        upcoming(&s, "2026-12-21T00:00:00Z", 3),
        [
            "2026-12-21T10:00:00+00:00",
            "2027-01-04T10:00:00+00:00",
            "2027-01-18T10:00:00+00:00",
        ]
    );
}

#[test]
fn pattern_in_dst_zone_and_summary() {
    let s = compile(&pattern(
        Frequency::Weekly,
        "America/New_York",
        "2026-03-01T00:00:00Z",
        |p| {
            p.by_day = vec!["MO".into(), "WE".into()];
            p.at_times = vec!["09:00".into()];
        },
    ));
    assert_eq!(s.summary(), "WEEKLY MO,WE 09:00 (America/New_York)");
    assert_eq!(
        upcoming(&s, "2026-03-06T00:00:00Z", 2),
        ["2026-03-09T09:00:00-04:00", "2026-03-11T09:00:00-04:00"]
    );
}

#[test]
fn pattern_defaults_come_from_the_anchor() {
    // No startAt: the anchor (creation time) gives weekday and time of day, rounded up to a second.
    let spec = ScheduleSpec {
        pattern: Some(Box::new(PatternSpec {
            frequency: Frequency::Weekly,
            ..Default::default()
        })),
        time_zone: Some("Europe/Berlin".into()),
        ..Default::default()
    };
    let ctx = CompileContext {
        anchor: t("2026-01-07T08:15:30.250Z"),
        seed: "s".into(),
    };
    let s = Schedule::compile(&spec, &ctx).unwrap();
    assert_eq!(
        upcoming(&s, "2026-01-01T00:00:00Z", 2),
        ["2026-01-07T09:15:31+01:00", "2026-01-14T09:15:31+01:00"]
    );
}

#[test]
fn every_keeps_its_phase() {
    let spec = ScheduleSpec {
        every: Some("PT90M".into()),
        start_at: Some(t("2026-01-01T00:00:07Z")),
        ..Default::default()
    };
    let s = compile(&spec);
    assert_eq!(s.summary(), "every PT90M");
    assert_eq!(
        upcoming(&s, "2025-01-01T00:00:00Z", 3),
        [
            "2026-01-01T00:00:07+00:00",
            "2026-01-01T01:30:07+00:00",
            "2026-01-01T03:00:07+00:00",
        ]
    );
    // Long after the start (startAt in the past): still on the 90-minute grid.
    let now = t("2026-03-29T01:17:00Z");
    let next = s.next_after(now).unwrap().nominal;
    assert_eq!((next - t("2026-01-01T00:00:07Z")).num_seconds() % 5400, 0);
    assert!(next > now && next - now <= Duration::minutes(90));
    // Exactly on an occurrence: the next one.
    assert_eq!(
        s.next_after(next).unwrap().nominal,
        next + Duration::minutes(90)
    );
    // DST does not matter to elapsed time.
    let spec = ScheduleSpec {
        time_zone: Some("Europe/Berlin".into()),
        every: Some("1h".into()),
        ..spec
    };
    let s = compile(&spec);
    let hours: Vec<_> = s
        .iter_after(t("2026-03-29T00:00:00Z"))
        .take(3)
        .map(|o| o.nominal)
        .collect();
    assert_eq!(
        hours,
        [
            t("2026-03-29T00:00:07Z"),
            t("2026-03-29T01:00:07Z"),
            t("2026-03-29T02:00:07Z")
        ]
    );
    assert_eq!(s.summary(), "every 1h");
}

#[test]
fn every_from_the_anchor_includes_the_anchor() {
    let spec = ScheduleSpec {
        every: Some("10s".into()),
        ..Default::default()
    };
    let s = Schedule::compile(
        &spec,
        &CompileContext {
            anchor: t("2026-01-01T00:00:00.5Z"),
            seed: String::new(),
        },
    )
    .unwrap();
    assert_eq!(
        s.next_after(t("2025-12-31T00:00:00Z")).unwrap().nominal,
        t("2026-01-01T00:00:01Z")
    );
}

#[test]
fn bounds_and_count() {
    let base = ScheduleSpec {
        cron: Some("0 12 * * *".into()),
        start_at: Some(t("2026-01-01T12:00:00Z")),
        ..Default::default()
    };
    let s = compile(&ScheduleSpec {
        count: Some(3),
        ..base.clone()
    });
    let all: Vec<_> = s
        .iter_after(t("2020-01-01T00:00:00Z"))
        .map(|o| o.nominal)
        .collect();
    assert_eq!(
        all,
        [
            t("2026-01-01T12:00:00Z"),
            t("2026-01-02T12:00:00Z"),
            t("2026-01-03T12:00:00Z")
        ]
    );
    assert_eq!(s.next_after(t("2026-01-03T12:00:00Z")), None);
    let s = compile(&ScheduleSpec {
        end_at: Some(t("2026-01-02T12:00:00Z")),
        ..base.clone()
    });
    assert_eq!(s.iter_after(t("2020-01-01T00:00:00Z")).count(), 2);
    assert_eq!(
        s.occurrences_between(t("2026-01-01T12:00:00Z"), t("2030-01-01T00:00:00Z"))
            .len(),
        1
    );
    let s = compile(&ScheduleSpec {
        every: Some("1h".into()),
        cron: None,
        count: Some(2),
        ..base.clone()
    });
    assert_eq!(s.iter_after(t("2020-01-01T00:00:00Z")).count(), 2);
    assert_eq!(
        compile_err(&ScheduleSpec {
            count: Some(2),
            end_at: Some(t("2027-01-01T00:00:00Z")),
            ..base.clone()
        }),
        "count: count and endAt cannot both be set"
    );
    assert_eq!(
        compile_err(&ScheduleSpec {
            end_at: Some(t("2025-01-01T00:00:00Z")),
            ..base.clone()
        }),
        "endAt: endAt must be after startAt"
    );
    assert_eq!(
        compile_err(&ScheduleSpec {
            count: Some(u32::MAX),
            ..base.clone()
        }),
        "count: must be between 1 and 100000, got 4294967295"
    );
    assert_eq!(
        compile_err(&ScheduleSpec {
            count: Some(0),
            ..base
        }),
        "count: must be between 1 and 100000, got 0"
    );
}

#[test]
fn count_counts_dst_merged_occurrences_once() {
    // Hourly in Berlin from 00:00 on spring-forward day: 00:00, 01:00, 03:00 (the 02:00 shifted
    // onto it), 04:00: four occurrences, none twice.
    let s = compile(&ScheduleSpec {
        cron: Some("0 * * * *".into()),
        time_zone: Some("Europe/Berlin".into()),
        start_at: Some(t("2026-03-28T23:00:00Z")),
        count: Some(4),
        ..Default::default()
    });
    let tz = s.time_zone();
    let all: Vec<String> = s
        .iter_after(t("2026-03-28T00:00:00Z"))
        .map(|o| o.nominal.with_timezone(&tz).to_rfc3339())
        .collect();
    assert_eq!(
        all,
        [
            "2026-03-29T00:00:00+01:00",
            "2026-03-29T01:00:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-29T04:00:00+02:00",
        ]
    );
}

#[test]
fn a_time_after_the_gap_fires_before_a_skipped_time_shifted_past_it() {
    // 02:30 does not exist on 2026-03-29 in Berlin and happens at 03:30+02:00; 03:00 exists and
    // comes first. Both happen, in instant order, the day before and after as usual.
    let spec = pattern(
        Frequency::Daily,
        "Europe/Berlin",
        "2026-03-27T23:00:00Z",
        |p| p.at_times = vec!["02:30".into(), "03:00".into()],
    );
    let s = compile(&spec);
    assert_eq!(
        upcoming(&s, "2026-03-27T23:00:00Z", 6),
        [
            "2026-03-28T02:30:00+01:00",
            "2026-03-28T03:00:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-29T03:30:00+02:00",
            "2026-03-30T02:30:00+02:00",
            "2026-03-30T03:00:00+02:00",
        ]
    );
    assert_steps_agree(&s, "2026-03-27T23:00:00Z", 6);
    // From between the two, and with `count` counting both.
    assert_eq!(
        upcoming(&s, "2026-03-29T01:00:00Z", 1),
        ["2026-03-29T03:30:00+02:00"]
    );
    let s = compile(&ScheduleSpec {
        count: Some(4),
        ..spec
    });
    assert_eq!(
        upcoming(&s, "2026-03-29T00:00:00Z", 10),
        ["2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00"]
    );
}

#[test]
fn rrule_keeps_a_time_after_the_gap_that_a_shifted_time_passes() {
    let spec = |text: &str| ScheduleSpec {
        rrule: Some(text.into()),
        time_zone: Some("Europe/Berlin".into()),
        start_at: Some(t("2026-03-28T23:00:00Z")),
        ..Default::default()
    };
    // BYSETPOS picks 02:30 and 03:00 of 02:00, 02:30, 03:00 and 03:30.
    let s = compile(&spec(
        "FREQ=DAILY;BYHOUR=2,3;BYMINUTE=0,30;BYSECOND=0;BYSETPOS=2,3",
    ));
    assert_eq!(
        upcoming(&s, "2026-03-28T23:00:00Z", 3),
        [
            "2026-03-29T03:00:00+02:00",
            "2026-03-29T03:30:00+02:00",
            "2026-03-30T02:30:00+02:00",
        ]
    );
    assert_steps_agree(&s, "2026-03-28T23:00:00Z", 4);
    // An EXDATE of the skipped 02:30 removes it alone.
    let s = compile(&spec(
        "FREQ=DAILY;BYHOUR=2,3;BYMINUTE=0,30;BYSECOND=0;BYSETPOS=2,3\nEXDATE;TZID=Europe/Berlin:20260329T023000",
    ));
    assert_eq!(
        upcoming(&s, "2026-03-28T23:00:00Z", 2),
        ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    );
    // Without BYSETPOS: every 45 minutes from midnight gives 02:15 (03:15+02:00) before 03:00.
    let s = compile(&spec("FREQ=MINUTELY;INTERVAL=45"));
    assert_eq!(
        upcoming(&s, "2026-03-29T00:00:00Z", 4),
        [
            "2026-03-29T01:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-29T03:15:00+02:00",
            "2026-03-29T03:45:00+02:00",
        ]
    );
    assert_steps_agree(&s, "2026-03-28T23:00:00Z", 8);
}

#[test]
fn cron_keeps_a_time_after_a_half_hour_gap_that_a_shifted_time_passes() {
    // Lord Howe skips 02:00-02:30 on 2026-10-04: 02:10 happens at 02:40+11:00, after 02:35.
    let s = compile(&cron("10,35 2 * * *", "Australia/Lord_Howe"));
    assert_eq!(
        upcoming(&s, "2026-10-02T12:00:00Z", 6),
        [
            "2026-10-03T02:10:00+10:30",
            "2026-10-03T02:35:00+10:30",
            "2026-10-04T02:35:00+11:00",
            "2026-10-04T02:40:00+11:00",
            "2026-10-05T02:10:00+11:00",
            "2026-10-05T02:35:00+11:00",
        ]
    );
    assert_steps_agree(&s, "2026-10-02T12:00:00Z", 6);
}

#[test]
fn rrule_count_until_and_exdate() {
    let start = Some(t("2026-03-27T00:00:00Z"));
    let spec = |text: &str| ScheduleSpec {
        rrule: Some(text.into()),
        time_zone: Some("Europe/Berlin".into()),
        start_at: start,
        ..Default::default()
    };
    // EXDATE in the gap removes the shifted occurrence (same instant); COUNT counts it anyway.
    let s = compile(&spec(
        "FREQ=DAILY;COUNT=4;BYHOUR=2;BYMINUTE=30;BYSECOND=0\nEXDATE;TZID=Europe/Berlin:20260329T023000",
    ));
    assert_eq!(
        upcoming(&s, "2026-01-01T00:00:00Z", 10),
        [
            "2026-03-27T02:30:00+01:00",
            "2026-03-28T02:30:00+01:00",
            "2026-03-30T02:30:00+02:00",
        ]
    );
    let s = compile(&spec(
        "FREQ=DAILY;UNTIL=20260329T013000Z;BYHOUR=2;BYMINUTE=30;BYSECOND=0",
    ));
    assert_eq!(upcoming(&s, "2026-01-01T00:00:00Z", 10).len(), 3);
    let s = compile(&spec(
        "FREQ=DAILY;UNTIL=20260328;BYHOUR=2;BYMINUTE=30;BYSECOND=0",
    ));
    assert_eq!(upcoming(&s, "2026-01-01T00:00:00Z", 10).len(), 2);
    assert_eq!(
        compile_err(&ScheduleSpec {
            count: Some(2),
            ..spec("FREQ=DAILY;COUNT=3")
        }),
        "count: count cannot be combined with COUNT in rrule"
    );
    assert_eq!(
        compile_err(&ScheduleSpec {
            end_at: Some(t("2027-01-01T00:00:00Z")),
            ..spec("FREQ=DAILY;COUNT=3")
        }),
        "endAt: endAt cannot be combined with COUNT in rrule"
    );
    assert_eq!(
        compile_err(&ScheduleSpec {
            count: Some(2),
            ..spec("FREQ=DAILY;UNTIL=20270101T000000Z")
        }),
        "count: count cannot be combined with UNTIL in rrule"
    );
    assert_eq!(
        compile_err(&spec("FREQ=DAILY;COUNT=2;UNTIL=20270101T000000Z")),
        "rrule: UNTIL and COUNT cannot both be set (RFC 5545)"
    );
    // A spec count counts real occurrences (after EXDATE).
    let s = compile(&ScheduleSpec {
        count: Some(3),
        ..spec("FREQ=DAILY;BYHOUR=12;BYMINUTE=0;BYSECOND=0\nEXDATE:20260328T110000Z")
    });
    assert_eq!(
        upcoming(&s, "2026-01-01T00:00:00Z", 10),
        [
            "2026-03-27T12:00:00+01:00",
            "2026-03-29T12:00:00+02:00",
            "2026-03-30T12:00:00+02:00",
        ]
    );
    assert_eq!(
        s.summary(),
        "rrule FREQ=DAILY;BYHOUR=12;BYMINUTE=0;BYSECOND=0 (Europe/Berlin)"
    );
}

#[test]
fn rrule_start_is_a_bound_not_an_occurrence() {
    let s = compile(&ScheduleSpec {
        rrule: Some("FREQ=WEEKLY;BYDAY=MO".into()),
        start_at: Some(t("2026-01-01T09:00:00Z")), // a Thursday
        ..Default::default()
    });
    assert_eq!(
        upcoming(&s, "2025-01-01T00:00:00Z", 2),
        ["2026-01-05T09:00:00+00:00", "2026-01-12T09:00:00+00:00"]
    );
}

#[test]
fn never_firing_schedules_are_refused() {
    assert_eq!(
        compile_err(&cron("0 0 30 2 *", "UTC")),
        "cron: the schedule never fires: no listed day of the month exists in the listed months"
    );
    let spec = pattern(Frequency::Monthly, "UTC", "2026-04-10T00:00:00Z", |p| {
        p.by_month_day = vec![31];
        p.interval = Some(12);
    });
    assert_eq!(
        compile_err(&spec),
        "pattern: the schedule never fires (no occurrence within 100 years of the start)"
    );
    let spec = pattern(Frequency::Yearly, "UTC", "2026-04-10T00:00:00Z", |p| {
        p.by_month = vec![2];
        p.by_month_day = vec![30];
    });
    assert!(compile_err(&spec).starts_with("pattern: the schedule never fires"));
    let spec = ScheduleSpec {
        rrule: Some("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30".into()),
        ..Default::default()
    };
    assert_eq!(
        compile_err(&spec),
        "rrule: the schedule never fires (no occurrence within 100 years of the start)"
    );
    let spec = ScheduleSpec {
        rrule: Some("FREQ=HOURLY;INTERVAL=24;BYHOUR=5".into()),
        ..Default::default()
    };
    assert!(compile_err(&spec).starts_with("rrule: the schedule never fires"));
    // Year 9999 is past what croner evaluates: refused, not a panic.
    let spec = ScheduleSpec {
        start_at: Some(t("9999-06-01T00:00:00Z")),
        ..cron("0 0 * * *", "UTC")
    };
    assert!(compile_err(&spec).starts_with("cron: the schedule never fires"));
}

#[test]
fn exhausted_is_not_an_error() {
    let spec = ScheduleSpec {
        cron: Some("0 0 * * *".into()),
        start_at: Some(t("2020-01-01T00:00:00Z")),
        end_at: Some(t("2020-01-03T00:00:00Z")),
        ..Default::default()
    };
    let s = compile(&spec);
    assert_eq!(s.next_after(t("2026-01-01T00:00:00Z")), None);
}

#[test]
fn messages_name_the_field() {
    assert_eq!(
        compile_err(&cron("0 0 * * 8", "UTC")),
        "cron: day-of-week value 8 is out of range 0-7"
    );
    assert_eq!(
        compile_err(&cron("60 0 * * *", "UTC")),
        "cron: minute value 60 is out of range 0-59"
    );
    assert_eq!(
        compile_err(&cron("0 0 0 * * *", "UTC")),
        "cron: expected 5 fields (minute hour day-of-month month day-of-week), got 6: a seconds field is not supported (the finest resolution is one minute)"
    );
    assert_eq!(
        compile_err(&cron("0 0 * * *", "Europe/Berln")),
        "timeZone: unknown zone \"Europe/Berln\" (did you mean \"Europe/Berlin\"?)"
    );
    let every = |e: &str| ScheduleSpec {
        every: Some(e.into()),
        ..Default::default()
    };
    assert_eq!(compile_err(&every("0s")), "every: must be at least 1s");
    assert_eq!(
        compile_err(&every("1500ms")),
        "every: 1500ms is not a whole number of seconds"
    );
    assert_eq!(
        compile_err(&every("3651d")),
        "every: 3651d is more than the maximum of 3650 days"
    );
    assert!(compile_err(&every("5 minutes")).starts_with("every: "));
    let jitter = |j: &str| ScheduleSpec {
        jitter: Some(j.into()),
        ..every("1h")
    };
    assert_eq!(
        compile_err(&jitter("25h")),
        "jitter: 25h is more than the maximum of 24h"
    );
    assert!(compile_err(&jitter("-1m")).starts_with("jitter: negative"));
    assert_eq!(
        compile_err(&ScheduleSpec::default()),
        "cron: set exactly one of cron, pattern, rrule or every (none is set)"
    );
    assert_eq!(
        compile_err(&ScheduleSpec {
            cron: Some("@daily".into()),
            ..every("1h")
        }),
        "every: set exactly one of cron, pattern, rrule or every (cron is also set)"
    );
    let spec = pattern(Frequency::Weekly, "UTC", "2026-01-01T00:00:00Z", |p| {
        p.by_day = vec!["-1FR".into()]
    });
    assert!(compile_err(&spec).starts_with("pattern.byDay: "));
    let spec = ScheduleSpec {
        rrule: Some("DTSTART:20260101T000000Z\nRRULE:FREQ=DAILY".into()),
        ..Default::default()
    };
    assert_eq!(
        compile_err(&spec),
        "rrule: DTSTART is not supported: set startAt (and timeZone) instead"
    );
}

#[test]
fn huge_inputs_are_errors() {
    let mib = "1".repeat(1 << 20);
    let cases = [
        ScheduleSpec {
            cron: Some(mib.clone()),
            ..Default::default()
        },
        ScheduleSpec {
            rrule: Some(mib.clone()),
            ..Default::default()
        },
        ScheduleSpec {
            every: Some(mib.clone()),
            ..Default::default()
        },
        ScheduleSpec {
            cron: Some("@daily".into()),
            time_zone: Some(mib.clone()),
            ..Default::default()
        },
        ScheduleSpec {
            cron: Some("@daily".into()),
            jitter: Some(mib.clone()),
            ..Default::default()
        },
        pattern(Frequency::Daily, "UTC", "2026-01-01T00:00:00Z", |p| {
            p.at_times = vec![mib.clone()]
        }),
        pattern(Frequency::Daily, "UTC", "2026-01-01T00:00:00Z", |p| {
            p.by_day = vec![mib.clone()]
        }),
        pattern(Frequency::Daily, "UTC", "2026-01-01T00:00:00Z", |p| {
            p.by_month_day = vec![i32::MIN]
        }),
        pattern(Frequency::Yearly, "UTC", "2026-01-01T00:00:00Z", |p| {
            p.by_month = vec![u32::MAX]
        }),
        ScheduleSpec {
            every: Some("99999999999999999999d".into()),
            ..Default::default()
        },
    ];
    for spec in &cases {
        assert!(Schedule::compile(spec, &ctx()).is_err());
    }
}

#[test]
fn extreme_instants_do_not_panic() {
    for spec in [
        cron("*/5 * * * *", "Pacific/Kiritimati"),
        pattern(
            Frequency::Daily,
            "America/Santiago",
            "2026-01-01T00:00:00Z",
            |_| {},
        ),
        ScheduleSpec {
            rrule: Some("FREQ=HOURLY".into()),
            time_zone: Some("Asia/Kolkata".into()),
            ..Default::default()
        },
        ScheduleSpec {
            every: Some("1s".into()),
            ..Default::default()
        },
    ] {
        let s = compile(&spec);
        for at in [
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            t("9999-12-31T23:59:59Z"),
        ] {
            let _ = s.next_after(at);
            let _ = s.iter_after(at).take(3).count();
        }
        let ctx = CompileContext {
            anchor: DateTime::<Utc>::MAX_UTC,
            seed: String::new(),
        };
        let _ = Schedule::compile(
            &ScheduleSpec {
                start_at: None,
                ..spec.clone()
            },
            &ctx,
        );
        let ctx = CompileContext {
            anchor: DateTime::<Utc>::MIN_UTC,
            seed: String::new(),
        };
        let _ = Schedule::compile(
            &ScheduleSpec {
                start_at: None,
                ..spec
            },
            &ctx,
        );
    }
}

#[test]
fn jitter_is_deterministic_and_bounded() {
    let spec = ScheduleSpec {
        jitter: Some("2m".into()),
        ..cron("*/5 * * * *", "Europe/Berlin")
    };
    let a = compile(&spec);
    let b = compile(&spec);
    let other = Schedule::compile(
        &spec,
        &CompileContext {
            seed: "another-uid".into(),
            ..ctx()
        },
    )
    .unwrap();
    let from = t("2026-03-29T00:00:00Z");
    let xs: Vec<Occurrence> = a.iter_after(from).take(200).collect();
    let ys: Vec<Occurrence> = b.iter_after(from).take(200).collect();
    let zs: Vec<Occurrence> = other.iter_after(from).take(200).collect();
    assert_eq!(xs, ys);
    let mut differ = 0;
    for (x, z) in xs.iter().zip(&zs) {
        assert_eq!(x.nominal, z.nominal);
        let j = x.due - x.nominal;
        assert!(j >= Duration::zero() && j < Duration::minutes(2), "{j}");
        differ += usize::from(x.due != z.due);
    }
    assert!(differ > 190, "{differ}");
    // Pinned: changing the hash would move every task's due instants on upgrade.
    assert_eq!(
        xs[0].due - xs[0].nominal,
        Duration::milliseconds(PINNED_JITTER_MS)
    );
    // Without jitter, due is nominal.
    let plain = compile(&cron("*/5 * * * *", "Europe/Berlin"));
    assert!(plain.iter_after(from).take(20).all(|o| o.due == o.nominal));
}

const PINNED_JITTER_MS: i64 = 58_231;

/// Occurrences are delivered one at a time, in order: with a jitter as long as the time between
/// two of them, one could fall due before the one ahead of it and be counted as missed while
/// the operator ran (a review found `every: 1m` with `jitter: 10m` skipping occurrences).
/// Refused where a spec is written, naming the spacing; `compile` still accepts it, so a task
/// stored before keeps working.
#[test]
fn a_jitter_not_shorter_than_the_spacing_is_refused() {
    let from = t("2026-05-01T00:00:00Z");
    let fits = |spec: &ScheduleSpec| compile(spec).jitter_fits(spec.jitter.as_deref(), from);
    let every = |e: &str, j: &str| ScheduleSpec {
        every: Some(e.into()),
        jitter: Some(j.into()),
        ..Default::default()
    };
    let twice_a_day = |zone: &str, times: [&str; 2], j: &str| ScheduleSpec {
        jitter: Some(j.into()),
        ..pattern(Frequency::Daily, zone, "2026-01-01T00:00:00Z", |p| {
            p.at_times = times.iter().map(|t| t.to_string()).collect();
        })
    };
    for (spec, words) in [
        (
            every("1m", "10m"),
            "jitter: 10m is not shorter than the time between two occurrences (1m)",
        ),
        (every("1m", "1m"), "(1m)"),
        (
            ScheduleSpec {
                jitter: Some("5m".into()),
                ..cron("*/5 9-17 * * 1-5", "Europe/Berlin")
            },
            "(5m)",
        ),
        (twice_a_day("UTC", ["09:00", "10:30"], "2h"), "(1h30m)"),
        // Two hours apart, but one hour on the day clocks go forward (2027-03-28, 02:00 shifted
        // to 03:00+02:00): the year looked at holds that day.
        (
            twice_a_day("Europe/Berlin", ["01:30", "03:30"], "90m"),
            "(1h)",
        ),
    ] {
        let e = fits(&spec).unwrap_err().to_string();
        assert!(e.contains(words), "{e}");
    }
    fits(&every("1m", "59s")).unwrap();
    fits(&twice_a_day("UTC", ["09:00", "10:30"], "1h29m")).unwrap();
    fits(&ScheduleSpec {
        jitter: Some("4m59s".into()),
        ..cron("*/5 9-17 * * 1-5", "Europe/Berlin")
    })
    .unwrap();
    // One occurrence: no spacing to keep.
    fits(&ScheduleSpec {
        count: Some(1),
        ..every("1h", "2h")
    })
    .unwrap();
}

/// Every local day of a daily schedule maps to exactly one instant, 2020-2030, in zones with
/// unusual transitions (exhaustive rather than sampled).
#[test]
fn daily_schedules_fire_once_per_local_day_2020_2030() {
    let zones = [
        "Europe/Berlin",
        "America/New_York",
        "America/Santiago",
        "America/Sao_Paulo",
        "Australia/Lord_Howe",
        "Pacific/Chatham",
        "America/Havana",
    ];
    for zone in zones {
        let tz: Tz = zone.parse().unwrap();
        for time in [
            "00:00", "00:30", "01:30", "02:00", "02:30", "02:45", "03:00", "23:30",
        ] {
            let (h, m) = time.split_once(':').unwrap();
            let spec = ScheduleSpec {
                cron: Some(format!(
                    "{} {} * * *",
                    m.trim_start_matches('0').parse::<u32>().unwrap_or(0),
                    h.parse::<u32>().unwrap()
                )),
                time_zone: Some(zone.into()),
                start_at: Some(t("2020-01-01T00:00:00Z")),
                end_at: Some(t("2031-01-01T00:00:00Z")),
                ..Default::default()
            };
            let pat = pattern(Frequency::Daily, zone, "2020-01-01T00:00:00Z", |p| {
                p.at_times = vec![time.into()]
            });
            let pat = ScheduleSpec {
                end_at: Some(t("2031-01-01T00:00:00Z")),
                ..pat
            };
            for s in [compile(&spec), compile(&pat)] {
                let first = s
                    .next_after(t("2020-01-01T12:00:00Z"))
                    .unwrap()
                    .nominal
                    .with_timezone(&tz);
                let mut day = first.date_naive();
                assert!(
                    day <= NaiveDate::from_ymd_opt(2020, 1, 3).unwrap(),
                    "{zone} {time}: {first}"
                );
                let mut prev = None;
                for o in s.iter_after(t("2020-01-01T12:00:00Z")) {
                    let local = o.nominal.with_timezone(&tz);
                    if local.date_naive() > NaiveDate::from_ymd_opt(2030, 12, 30).unwrap() {
                        break;
                    }
                    assert_eq!(local.date_naive(), day, "{zone} {time}: {local}");
                    assert!(prev.is_none_or(|p| o.nominal > p));
                    prev = Some(o.nominal);
                    day = day.succ_opt().unwrap();
                }
                assert_eq!(day.year(), 2030, "{zone} {time}");
            }
        }
    }
}

#[test]
fn schedules_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<Schedule>();
    shareable::<ScheduleError>();
}
