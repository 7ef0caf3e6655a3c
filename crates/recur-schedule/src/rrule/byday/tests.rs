//! RRULEs whose BYDAY mixes plain and numbered weekdays, through the public API. RFC 5545 3.3.10:
//! the BYDAY values are a list, so a day matching any of them is in the set; BYSETPOS picks from
//! that set within each period; COUNT counts the merged occurrences. Every expected date below
//! was worked out by hand from a printed calendar, not by the code under test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use crate::tests::{assert_steps_agree, t, upcoming};
use crate::{CompileContext, Schedule, ScheduleSpec};

fn ctx() -> CompileContext {
    CompileContext {
        anchor: t("2020-01-01T00:00:00Z"),
        seed: "byday-uid".into(),
    }
}

fn spec(text: &str, zone: &str, start: &str) -> ScheduleSpec {
    ScheduleSpec {
        rrule: Some(text.into()),
        time_zone: Some(zone.into()),
        start_at: Some(t(start)),
        ..Default::default()
    }
}

fn compile(text: &str, zone: &str, start: &str) -> Schedule {
    Schedule::compile(&spec(text, zone, start), &ctx()).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn compile_err(text: &str) -> String {
    Schedule::compile(&spec(text, "UTC", "2026-01-01T00:00:00Z"), &ctx())
        .unwrap_err()
        .to_string()
}

#[test]
fn monthly_every_monday_and_last_friday_across_spring_forward() {
    // New York springs forward on Sunday 2026-03-08.
    let s = compile(
        "RRULE:FREQ=MONTHLY;BYDAY=MO,-1FR;BYHOUR=9;BYMINUTE=0;BYSECOND=0",
        "America/New_York",
        "2026-02-01T05:00:00Z",
    );
    assert_eq!(
        upcoming(&s, "2026-01-01T00:00:00Z", 12),
        [
            "2026-02-02T09:00:00-05:00",
            "2026-02-09T09:00:00-05:00",
            "2026-02-16T09:00:00-05:00",
            "2026-02-23T09:00:00-05:00",
            "2026-02-27T09:00:00-05:00",
            "2026-03-02T09:00:00-05:00",
            "2026-03-09T09:00:00-04:00",
            "2026-03-16T09:00:00-04:00",
            "2026-03-23T09:00:00-04:00",
            "2026-03-27T09:00:00-04:00",
            "2026-03-30T09:00:00-04:00",
            "2026-04-06T09:00:00-04:00",
        ]
    );
    assert_steps_agree(&s, "2026-01-01T00:00:00Z", 40);
    // A numbered weekday that is also listed plain happens once.
    let s = compile(
        "FREQ=MONTHLY;BYDAY=MO,1MO,-1MO;BYHOUR=9;BYMINUTE=0;BYSECOND=0",
        "UTC",
        "2026-02-01T00:00:00Z",
    );
    assert_eq!(
        upcoming(&s, "2026-01-01T00:00:00Z", 5),
        [
            "2026-02-02T09:00:00+00:00",
            "2026-02-09T09:00:00+00:00",
            "2026-02-16T09:00:00+00:00",
            "2026-02-23T09:00:00+00:00",
            "2026-03-02T09:00:00+00:00",
        ]
    );
}

#[test]
fn monthly_mixed_by_day_fires_the_repeated_time_once_at_fall_back() {
    // New York falls back on Sunday 2026-11-01: 01:30 happens twice, the first (EDT) is taken.
    let s = compile(
        "FREQ=MONTHLY;BYDAY=SU,-1MO;BYHOUR=1;BYMINUTE=30;BYSECOND=0",
        "America/New_York",
        "2026-10-20T04:00:00Z",
    );
    assert_eq!(
        upcoming(&s, "2026-10-01T00:00:00Z", 9),
        [
            "2026-10-25T01:30:00-04:00",
            "2026-10-26T01:30:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-08T01:30:00-05:00",
            "2026-11-15T01:30:00-05:00",
            "2026-11-22T01:30:00-05:00",
            "2026-11-29T01:30:00-05:00",
            "2026-11-30T01:30:00-05:00",
            "2026-12-06T01:30:00-05:00",
        ]
    );
    assert_steps_agree(&s, "2026-10-01T00:00:00Z", 20);
}

#[test]
fn bysetpos_picks_from_the_union_within_each_month() {
    // Feb 2026: {2, 9, 16, 23, 27}; Mar: {2, 9, 16, 23, 27, 30}; Apr: {6, 13, 20, 24, 27};
    // May: {4, 11, 18, 25, 29}. Positions 1 and -2 of each.
    let s = compile(
        "FREQ=MONTHLY;BYDAY=MO,-1FR;BYSETPOS=1,-2;BYHOUR=9;BYMINUTE=0;BYSECOND=0",
        "UTC",
        "2026-02-01T00:00:00Z",
    );
    assert_eq!(
        upcoming(&s, "2026-01-01T00:00:00Z", 8),
        [
            "2026-02-02T09:00:00+00:00",
            "2026-02-23T09:00:00+00:00",
            "2026-03-02T09:00:00+00:00",
            "2026-03-27T09:00:00+00:00",
            "2026-04-06T09:00:00+00:00",
            "2026-04-24T09:00:00+00:00",
            "2026-05-04T09:00:00+00:00",
            "2026-05-25T09:00:00+00:00",
        ]
    );
    assert_steps_agree(&s, "2026-01-01T00:00:00Z", 20);
    // The set is days × times: the third from last is the second-to-last day at 17:00.
    let s = compile(
        "FREQ=MONTHLY;BYDAY=MO,-1FR;BYSETPOS=-3;BYHOUR=9,17;BYMINUTE=0;BYSECOND=0",
        "UTC",
        "2026-02-01T00:00:00Z",
    );
    assert_eq!(
        upcoming(&s, "2026-01-01T00:00:00Z", 3),
        [
            "2026-02-23T17:00:00+00:00",
            "2026-03-27T17:00:00+00:00",
            "2026-04-24T17:00:00+00:00",
        ]
    );
    // Positions count over the whole month, as without the numbered weekday: from a start on
    // 2026-02-10 the first of February (the 2nd) is before it, so March's comes first.
    for text in [
        "FREQ=MONTHLY;BYDAY=MO,-1FR;BYSETPOS=1;BYHOUR=9;BYMINUTE=0;BYSECOND=0",
        "FREQ=MONTHLY;BYDAY=MO;BYSETPOS=1;BYHOUR=9;BYMINUTE=0;BYSECOND=0",
    ] {
        let s = compile(text, "UTC", "2026-02-10T00:00:00Z");
        assert_eq!(
            upcoming(&s, "2026-01-01T00:00:00Z", 2),
            ["2026-03-02T09:00:00+00:00", "2026-04-06T09:00:00+00:00"],
            "{text}"
        );
    }
}

#[test]
fn count_until_and_exdate_apply_to_the_merged_occurrences() {
    let berlin = |text: &str| compile(text, "Europe/Berlin", "2026-01-31T23:00:00Z");
    let all = |s: &Schedule| upcoming(s, "2026-01-01T00:00:00Z", 100);
    // COUNT=7 counts the excluded last Friday (Feb 27).
    let s = berlin(
        "FREQ=MONTHLY;BYDAY=MO,-1FR;COUNT=7;BYHOUR=9;BYMINUTE=0;BYSECOND=0\nEXDATE;TZID=Europe/Berlin:20260227T090000",
    );
    assert_eq!(
        all(&s),
        [
            "2026-02-02T09:00:00+01:00",
            "2026-02-09T09:00:00+01:00",
            "2026-02-16T09:00:00+01:00",
            "2026-02-23T09:00:00+01:00",
            "2026-03-02T09:00:00+01:00",
            "2026-03-09T09:00:00+01:00",
        ]
    );
    // COUNT after BYSETPOS, across Berlin's spring forward (2026-03-29).
    let s = berlin("FREQ=MONTHLY;BYDAY=MO,-1FR;BYSETPOS=-1;COUNT=3;BYHOUR=9;BYMINUTE=0;BYSECOND=0");
    assert_eq!(
        all(&s),
        [
            "2026-02-27T09:00:00+01:00",
            "2026-03-30T09:00:00+02:00",
            "2026-04-27T09:00:00+02:00",
        ]
    );
    // UNTIL (floating: Berlin time) is inclusive.
    let s =
        berlin("FREQ=MONTHLY;BYDAY=MO,-1FR;UNTIL=20260316T090000;BYHOUR=9;BYMINUTE=0;BYSECOND=0");
    assert_eq!(
        all(&s),
        [
            "2026-02-02T09:00:00+01:00",
            "2026-02-09T09:00:00+01:00",
            "2026-02-16T09:00:00+01:00",
            "2026-02-23T09:00:00+01:00",
            "2026-02-27T09:00:00+01:00",
            "2026-03-02T09:00:00+01:00",
            "2026-03-09T09:00:00+01:00",
            "2026-03-16T09:00:00+01:00",
        ]
    );
}

#[test]
fn yearly_with_by_month_numbers_weekdays_within_the_month() {
    // Every Sunday of November and Thanksgiving (4TH), New York, 01:30 (repeated at fall back,
    // 2026-11-01 and 2027-11-07). Nov 2026: Sundays 1, 8, 15, 22, 29, Thursdays 5, 12, 19, 26.
    // Nov 2027: Sundays 7, 14, 21, 28, Thursdays 4, 11, 18, 25.
    let s = compile(
        "FREQ=YEARLY;BYMONTH=11;BYDAY=4TH,SU;BYHOUR=1;BYMINUTE=30;BYSECOND=0",
        "America/New_York",
        "2026-10-01T04:00:00Z",
    );
    assert_eq!(
        upcoming(&s, "2026-01-01T00:00:00Z", 11),
        [
            "2026-11-01T01:30:00-04:00",
            "2026-11-08T01:30:00-05:00",
            "2026-11-15T01:30:00-05:00",
            "2026-11-22T01:30:00-05:00",
            "2026-11-26T01:30:00-05:00",
            "2026-11-29T01:30:00-05:00",
            "2027-11-07T01:30:00-04:00",
            "2027-11-14T01:30:00-05:00",
            "2027-11-21T01:30:00-05:00",
            "2027-11-25T01:30:00-05:00",
            "2027-11-28T01:30:00-05:00",
        ]
    );
    assert_steps_agree(&s, "2026-01-01T00:00:00Z", 30);
    // BYSETPOS over the year's set. Nov 2028: Sundays 5, 12, 19, 26, Thursdays 2, 9, 16, 23, 30.
    let s = compile(
        "FREQ=YEARLY;BYMONTH=11;BYDAY=4TH,SU;BYSETPOS=-2;BYHOUR=1;BYMINUTE=30;BYSECOND=0",
        "America/New_York",
        "2026-10-01T04:00:00Z",
    );
    assert_eq!(
        upcoming(&s, "2026-01-01T00:00:00Z", 3),
        [
            "2026-11-26T01:30:00-05:00",
            "2027-11-25T01:30:00-05:00",
            "2028-11-23T01:30:00-05:00",
        ]
    );
}

#[test]
fn yearly_without_by_month_numbers_weekdays_within_the_year() {
    // 20MO: the 20th Monday of the year (2026-05-18, 2027-05-17); -1TU: the last Tuesday of the
    // year (2026-12-29, 2027-12-28), not of each month (2027-01-26 is not one); SA: every Saturday.
    let s = compile(
        "FREQ=YEARLY;BYDAY=20MO,-1TU,SA;BYHOUR=12;BYMINUTE=0;BYSECOND=0",
        "UTC",
        "2026-01-01T00:00:00Z",
    );
    let cases: [(&str, [&str; 3]); 4] = [
        (
            "2026-05-10T00:00:00Z",
            [
                "2026-05-16T12:00:00+00:00",
                "2026-05-18T12:00:00+00:00",
                "2026-05-23T12:00:00+00:00",
            ],
        ),
        (
            "2026-12-20T00:00:00Z",
            [
                "2026-12-26T12:00:00+00:00",
                "2026-12-29T12:00:00+00:00",
                "2027-01-02T12:00:00+00:00",
            ],
        ),
        (
            "2027-01-20T00:00:00Z",
            [
                "2027-01-23T12:00:00+00:00",
                "2027-01-30T12:00:00+00:00",
                "2027-02-06T12:00:00+00:00",
            ],
        ),
        (
            "2027-05-10T00:00:00Z",
            [
                "2027-05-15T12:00:00+00:00",
                "2027-05-17T12:00:00+00:00",
                "2027-05-22T12:00:00+00:00",
            ],
        ),
    ];
    for (after, expected) in cases {
        assert_eq!(upcoming(&s, after, 3), expected, "after {after}");
    }
    // First and last of each year's set: 2026 from Saturday Jan 3 to Tuesday Dec 29, 2027 from
    // Saturday Jan 2 to Tuesday Dec 28.
    let s = compile(
        "FREQ=YEARLY;BYDAY=20MO,-1TU,SA;BYSETPOS=1,-1;BYHOUR=12;BYMINUTE=0;BYSECOND=0",
        "UTC",
        "2026-01-01T00:00:00Z",
    );
    assert_eq!(
        upcoming(&s, "2025-01-01T00:00:00Z", 4),
        [
            "2026-01-03T12:00:00+00:00",
            "2026-12-29T12:00:00+00:00",
            "2027-01-02T12:00:00+00:00",
            "2027-12-28T12:00:00+00:00",
        ]
    );
}

#[test]
fn month_days_limit_the_union() {
    // The 1st, 13th or 30th, when it is a Friday or the month's first Monday (2026-06-01).
    let s = compile(
        "FREQ=MONTHLY;BYMONTHDAY=1,13,30;BYDAY=FR,1MO;BYHOUR=9;BYMINUTE=0;BYSECOND=0",
        "UTC",
        "2026-01-01T00:00:00Z",
    );
    assert_eq!(
        upcoming(&s, "2025-01-01T00:00:00Z", 8),
        [
            "2026-01-30T09:00:00+00:00",
            "2026-02-13T09:00:00+00:00",
            "2026-03-13T09:00:00+00:00",
            "2026-05-01T09:00:00+00:00",
            "2026-06-01T09:00:00+00:00",
            "2026-10-30T09:00:00+00:00",
            "2026-11-13T09:00:00+00:00",
            "2027-01-01T09:00:00+00:00",
        ]
    );
}

#[test]
fn interval_keeps_the_start_month_phase() {
    // Every other month from January 2026: Wednesdays and the first Monday. The first Monday of
    // January (the 5th) is before the start.
    let s = compile(
        "FREQ=MONTHLY;INTERVAL=2;BYDAY=WE,1MO;BYHOUR=8;BYMINUTE=0;BYSECOND=0",
        "UTC",
        "2026-01-15T00:00:00Z",
    );
    assert_eq!(
        upcoming(&s, "2026-01-01T00:00:00Z", 9),
        [
            "2026-01-21T08:00:00+00:00",
            "2026-01-28T08:00:00+00:00",
            "2026-03-02T08:00:00+00:00",
            "2026-03-04T08:00:00+00:00",
            "2026-03-11T08:00:00+00:00",
            "2026-03-18T08:00:00+00:00",
            "2026-03-25T08:00:00+00:00",
            "2026-05-04T08:00:00+00:00",
            "2026-05-06T08:00:00+00:00",
        ]
    );
    assert_steps_agree(&s, "2026-01-01T00:00:00Z", 60);
}

#[test]
fn numbered_weekdays_are_refused_where_rfc_5545_forbids_them() {
    for text in [
        "FREQ=YEARLY;BYWEEKNO=20;BYDAY=1MO",
        "FREQ=YEARLY;BYWEEKNO=20;BYDAY=MO,-1FR",
    ] {
        let e = compile_err(text);
        assert!(e.contains("BYWEEKNO"), "{text}: {e}");
    }
    assert!(compile_err("FREQ=WEEKLY;BYDAY=MO,1FR").contains("need FREQ=MONTHLY"));
    // Plain weekdays with BYWEEKNO stay allowed.
    compile(
        "FREQ=YEARLY;BYWEEKNO=20;BYDAY=MO,FR",
        "UTC",
        "2026-01-01T00:00:00Z",
    );
    // A mixed rule that matches nothing is still found out.
    assert_eq!(
        compile_err("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30;BYDAY=MO,-1FR"),
        "rrule: the schedule never fires (no occurrence within 100 years of the start)"
    );
}
