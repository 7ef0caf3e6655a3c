//! Property tests of the schedule engine over random schedules of every kind, in zones with
//! unusual DST transitions. (In the library rather than under tests/ so they run without the
//! binaries.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::cases;
use crate::{
    CompileContext, Frequency, Occurrence, PatternSpec, Schedule, ScheduleSpec, parse_duration,
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};

const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Santiago",
    "America/Sao_Paulo",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/Havana",
];

/// How far past the start the reference walk goes.
const SPAN_DAYS: i64 = 120;

fn cron_expr() -> impl Strategy<Value = String> {
    (
        select(vec!["0", "30", "*/15", "5,35", "*/7", "59"]),
        select(vec!["*", "2", "0", "1-3", "*/5", "23", "0,2,4"]),
        select(vec!["*", "*", "1", "15", "31", "L", "*/10", "29"]),
        select(vec!["*", "*", "3", "10", "*/2", "3,4,9,10,11"]),
        select(vec!["*", "*", "0", "1-5", "5L", "SAT", "1#2"]),
    )
        .prop_map(|(mi, h, dom, mo, dow)| format!("{mi} {h} {dom} {mo} {dow}"))
}

fn pattern_spec() -> impl Strategy<Value = PatternSpec> {
    let times = subsequence(
        vec![
            "00:00", "00:30", "01:30", "02:00", "02:30", "03:00", "12:00", "23:30",
        ],
        0..4,
    );
    let plain = subsequence(vec!["MO", "TU", "WE", "TH", "FR", "SA", "SU"], 0..3);
    let ordinals = subsequence(vec!["1MO", "-1FR", "2TU", "5SU", "-2SA"], 0..2);
    let month_days = subsequence(vec![1, 15, 28, 29, 30, 31, -1, -7], 0..3);
    let months = subsequence(vec![1u32, 2, 3, 4, 9, 10, 11, 12], 0..3);
    (
        0..4usize,
        1..4u32,
        times,
        plain,
        ordinals,
        month_days,
        months,
    )
        .prop_map(
            |(f, interval, times, plain, ordinals, month_days, months)| {
                let frequency = [
                    Frequency::Daily,
                    Frequency::Weekly,
                    Frequency::Monthly,
                    Frequency::Yearly,
                ][f];
                let mut by_day: Vec<String> = plain.into_iter().map(String::from).collect();
                if matches!(frequency, Frequency::Monthly | Frequency::Yearly) {
                    by_day.extend(ordinals.into_iter().map(String::from));
                }
                PatternSpec {
                    frequency,
                    interval: Some(interval),
                    by_day,
                    by_month_day: if frequency == Frequency::Weekly {
                        vec![]
                    } else {
                        month_days
                    },
                    by_month: if frequency == Frequency::Yearly {
                        months
                    } else {
                        vec![]
                    },
                    at_times: times.into_iter().map(String::from).collect(),
                }
            },
        )
}

fn rrule_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (1..5u32).prop_map(|n| format!("FREQ=HOURLY;INTERVAL={n}")),
        (0..24u32, 0..60u32)
            .prop_map(|(h, m)| format!("FREQ=DAILY;BYHOUR={h};BYMINUTE={m};BYSECOND=0")),
        Just("RRULE:FREQ=WEEKLY;BYDAY=MO,FR,SU;BYHOUR=2;BYMINUTE=30;BYSECOND=0".to_string()),
        Just("FREQ=MONTHLY;BYMONTHDAY=-1,1;BYHOUR=0,12;BYMINUTE=0;BYSECOND=0".to_string()),
        Just(
            "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;BYHOUR=2;BYMINUTE=15;BYSECOND=0"
                .to_string()
        ),
        (7..90u32).prop_map(|n| format!("FREQ=MINUTELY;INTERVAL={n}")),
        Just("FREQ=DAILY;BYHOUR=2;BYMINUTE=0,30;BYSECOND=0\nEXDATE:20260329T003000Z".to_string()),
        // BYDAY mixing plain and numbered weekdays (src/rrule/byday.rs).
        Just("FREQ=MONTHLY;BYDAY=SU,-1FR;BYHOUR=1,2;BYMINUTE=30;BYSECOND=0".to_string()),
        Just(
            "FREQ=MONTHLY;INTERVAL=2;BYDAY=SA,SU,1MO,-1FR;BYSETPOS=2,-1;BYHOUR=0,2;BYMINUTE=30;BYSECOND=0"
                .to_string()
        ),
        Just("FREQ=YEARLY;BYDAY=20MO,-1TU,SU;BYSETPOS=1,-1,-3;BYHOUR=2;BYMINUTE=30".to_string()),
    ]
}

#[derive(Debug, Clone)]
enum Bound {
    None,
    End(i64),
    Count(u32),
}

fn spec_strategy() -> impl Strategy<Value = (ScheduleSpec, DateTime<Utc>)> {
    let kind = prop_oneof![
        cron_expr().prop_map(|c| ScheduleSpec {
            cron: Some(c),
            ..Default::default()
        }),
        pattern_spec().prop_map(|p| ScheduleSpec {
            pattern: Some(Box::new(p)),
            ..Default::default()
        }),
        rrule_text().prop_map(|r| ScheduleSpec {
            rrule: Some(r),
            ..Default::default()
        }),
        select(vec!["90m", "1h", "7m", "P1D", "25h", "PT45S"]).prop_map(|e| ScheduleSpec {
            every: Some(e.into()),
            ..Default::default()
        }),
    ];
    let bound = prop_oneof![
        Just(Bound::None),
        (3_600i64..400 * 86_400).prop_map(Bound::End),
        (1u32..40).prop_map(Bound::Count),
    ];
    let start = (2020i32..=2030, 1u32..=12, 1u32..=28, 0u32..86_400);
    (kind, select(ZONES.to_vec()), bound, start, any::<bool>()).prop_map(
        |(mut spec, zone, bound, (y, m, d, s), jitter)| {
            let start =
                Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap() + Duration::seconds(i64::from(s));
            spec.time_zone = Some(zone.into());
            spec.start_at = Some(start);
            spec.jitter = jitter.then(|| "90s".to_string());
            match bound {
                Bound::None => {}
                Bound::End(secs) => spec.end_at = Some(start + Duration::seconds(secs)),
                Bound::Count(n) => spec.count = Some(n),
            }
            (spec, start)
        },
    )
}

/// The instants (to the hour) at which `tz` changes offset during `year`.
fn transitions(tz: chrono_tz::Tz, year: i32) -> Vec<DateTime<Utc>> {
    use chrono::Offset;
    let offset = |t: DateTime<Utc>| tz.offset_from_utc_datetime(&t.naive_utc()).fix();
    let mut out = Vec::new();
    let mut t = Utc.with_ymd_and_hms(year, 1, 1, 0, 0, 0).unwrap();
    let end = Utc.with_ymd_and_hms(year + 1, 1, 1, 0, 0, 0).unwrap();
    let mut prev = offset(t);
    while t < end {
        t += Duration::minutes(30);
        let now = offset(t);
        if now != prev {
            out.push(t);
            prev = now;
        }
    }
    out
}

fn ctx() -> CompileContext {
    CompileContext {
        anchor: Utc.with_ymd_and_hms(2019, 6, 1, 0, 0, 0).unwrap(),
        seed: "prop-uid".into(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    #[test]
    fn iteration_and_next_after_agree((spec, start) in spec_strategy(), offsets in prop::collection::vec(0i64..SPAN_DAYS * 86_400, 12)) {
        let schedule = match Schedule::compile(&spec, &ctx()) {
            Ok(s) => s,
            Err(e) => {
                // Only the never-firing combinations may be refused.
                prop_assert!(e.message.contains("never fires"), "{spec:?}: {e}");
                return Ok(());
            }
        };
        let horizon = start + Duration::days(SPAN_DAYS);
        let walk: Vec<Occurrence> = schedule
            .iter_after(start - Duration::seconds(1))
            .take_while(|o| o.nominal <= horizon)
            .take(30_000)
            .collect();
        // Strictly increasing, inside the bounds, jitter within [0, 90s).
        for pair in walk.windows(2) {
            prop_assert!(pair[0].nominal < pair[1].nominal, "{spec:?}: {pair:?}");
        }
        for o in &walk {
            prop_assert!(o.nominal >= start);
            if let Some(end) = spec.end_at {
                prop_assert!(o.nominal <= end);
            }
            let j = o.due - o.nominal;
            let max = Duration::seconds(if spec.jitter.is_some() { 90 } else { 1 });
            prop_assert!(j >= Duration::zero() && j < max, "jitter {}", j);
        }
        // The count is honoured exactly (all generated schedules are endless).
        if let Some(n) = spec.count {
            prop_assert_eq!(schedule.iter_after(start - Duration::days(400)).count(), n as usize, "{:?}", spec);
        }
        // next_after(t) is the first occurrence of the walk after t, for random t and at and
        // around every occurrence.
        let Some(last) = walk.last().map(|o| o.nominal) else { return Ok(()) };
        let expected = |t: DateTime<Utc>| walk.iter().find(|o| o.nominal > t).copied();
        let mut probes: Vec<DateTime<Utc>> = offsets.iter().map(|o| start - Duration::days(2) + Duration::seconds(*o)).collect();
        for o in walk.iter().take(400) {
            probes.push(o.nominal);
            probes.push(o.nominal - Duration::seconds(1));
            probes.push(o.nominal - Duration::minutes(61));
        }
        for t in probes.into_iter().filter(|t| *t < last) {
            let got = schedule.next_after(t);
            prop_assert_eq!(got, expected(t), "{:?} after {}", spec, t);
            prop_assert!(got.is_some_and(|o| o.nominal > t));
        }
    }

    /// Dense schedules started within days of a DST transition, probed all around it.
    #[test]
    fn dense_schedules_across_transitions(
        zone in select(ZONES[1..].to_vec()),
        year in 2020i32..=2030,
        which in 0usize..4,
        lead in 0i64..4 * 86_400,
        kind in prop_oneof![
            select(vec!["*/15 * * * *", "0,30 * * * *", "*/7 0-4 * * *", "@hourly", "30 2 * * *", "0 0 * * *", "59 23 * * *"])
                .prop_map(|c| ScheduleSpec { cron: Some(c.into()), ..Default::default() }),
            select(vec!["FREQ=MINUTELY;INTERVAL=20", "FREQ=HOURLY", "FREQ=DAILY;BYHOUR=0,1,2,3;BYMINUTE=0,30;BYSECOND=0"])
                .prop_map(|r| ScheduleSpec { rrule: Some(r.into()), ..Default::default() }),
            subsequence(vec!["00:00", "00:15", "00:45", "01:00", "01:30", "02:00", "02:30", "02:45", "03:00", "03:30", "23:00", "23:30"], 1..6)
                .prop_map(|times| ScheduleSpec {
                    pattern: Some(Box::new(PatternSpec { at_times: times.into_iter().map(String::from).collect(), ..Default::default() })),
                    ..Default::default()
                }),
        ],
    ) {
        let tz: chrono_tz::Tz = zone.parse().unwrap();
        let changes = transitions(tz, year);
        let Some(change) = changes.get(which % changes.len().max(1)).copied() else { return Ok(()) };
        let start = change - Duration::seconds(lead);
        let spec = ScheduleSpec { time_zone: Some(zone.into()), start_at: Some(start), ..kind };
        let schedule = Schedule::compile(&spec, &ctx()).unwrap();
        let walk: Vec<Occurrence> = schedule
            .iter_after(start - Duration::seconds(1))
            .take_while(|o| o.nominal <= change + Duration::days(3))
            .collect();
        for pair in walk.windows(2) {
            prop_assert!(pair[0].nominal < pair[1].nominal);
        }
        let Some(last) = walk.last().map(|o| o.nominal) else { return Ok(()) };
        let mut t = start - Duration::hours(1);
        while t < last {
            let expected = walk.iter().find(|o| o.nominal > t).copied();
            prop_assert_eq!(schedule.next_after(t), expected, "{:?} after {}", spec, t);
            t += Duration::minutes(7);
        }
    }

    #[test]
    fn parsers_never_panic(text in "[0-9A-Za-z*/,#?@ :;=\\-\\n_.µ]{0,60}") {
        let _ = parse_duration(&text);
        for spec in [
            ScheduleSpec { cron: Some(text.clone()), ..Default::default() },
            ScheduleSpec { rrule: Some(text.clone()), ..Default::default() },
            ScheduleSpec { rrule: Some(format!("FREQ=DAILY;{text}")), ..Default::default() },
            ScheduleSpec { every: Some(text.clone()), ..Default::default() },
            ScheduleSpec { every: Some("1h".into()), time_zone: Some(text.clone()), jitter: Some(text.clone()), ..Default::default() },
            ScheduleSpec {
                pattern: Some(Box::new(PatternSpec { by_day: vec![text.clone()], at_times: vec![text.clone()], ..Default::default() })),
                ..Default::default()
            },
        ] {
            if let Ok(s) = Schedule::compile(&spec, &ctx()) {
                let _ = s.iter_after(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()).take(5).count();
            }
        }
    }

    #[test]
    fn rrule_part_soup_never_panics(
        freq in select(vec!["SECONDLY", "MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY"]),
        parts in prop::collection::vec(
            (
                select(vec!["BYSETPOS", "BYMONTH", "BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYDAY", "BYHOUR", "BYMINUTE", "BYSECOND", "INTERVAL", "WKST", "COUNT", "UNTIL"]),
                prop::collection::vec(prop_oneof![(-400i32..400).prop_map(|n| n.to_string()), select(vec!["MO", "-1FR", "53SU", "0", "65536", "99999999999", "20260101T000000Z", "SU"]).prop_map(String::from)], 1..4),
            ),
            0..4,
        ),
        zone in select(ZONES.to_vec()),
    ) {
        let mut text = format!("FREQ={freq}");
        for (key, values) in parts {
            text.push_str(&format!(";{key}={}", values.join(",")));
        }
        let spec = ScheduleSpec { rrule: Some(text), time_zone: Some(zone.into()), ..Default::default() };
        if let Ok(s) = Schedule::compile(&spec, &ctx()) {
            let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
            let walk: Vec<Occurrence> = s.iter_after(t).take(50).collect();
            for pair in walk.windows(2) {
                prop_assert!(pair[0].nominal < pair[1].nominal);
            }
            if let Some(o) = walk.get(10) {
                prop_assert_eq!(s.next_after(walk[9].nominal), Some(*o));
            }
        }
    }

    #[test]
    fn cron_field_soup_never_panics(fields in prop::collection::vec("[0-9LW#*/,\\-?]{1,8}", 5)) {
        let spec = ScheduleSpec { cron: Some(fields.join(" ")), ..Default::default() };
        if let Ok(s) = Schedule::compile(&spec, &ctx()) {
            let next = s.next_after(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
            prop_assert!(next.is_some());
        }
    }
}

proptest! {
    // Fewer cases: the never-firing combinations it draws each cost a 100-year search.
    #![proptest_config(ProptestConfig { cases: cases(64), ..ProptestConfig::default() })]

    /// An RRULE whose BYDAY mixes plain and numbered weekdays gives what the `pattern` form with
    /// the same fields gives: the pattern form expands BYDAY by itself, not through the crate.
    #[test]
    fn mixed_by_day_rrule_matches_the_pattern_form(
        yearly in any::<bool>(),
        interval in 1..4u32,
        plain in subsequence(vec!["MO", "TU", "WE", "TH", "FR", "SA", "SU"], 1..3),
        numbered in subsequence(vec!["1MO", "-1FR", "2TU", "5SU", "-2SA", "4TH", "-4WE"], 1..3),
        month_days in subsequence(vec![1, 13, 15, 28, 29, 30, 31, -1, -7], 0..3),
        months in subsequence(vec![1u32, 2, 3, 10, 11, 12], 1..3),
        (hour, minute) in (0..24u32, select(vec![0u32, 30])),
        zone in select(ZONES.to_vec()),
        (y, m, d, s) in (2020i32..=2030, 1u32..=12, 1u32..=28, 0u32..86_400),
    ) {
        let start = Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap() + Duration::seconds(i64::from(s));
        let by_day: Vec<String> = plain.iter().chain(&numbered).map(|d| d.to_string()).collect();
        let join = |v: Vec<String>| v.join(",");
        let mut rrule = format!(
            "FREQ={};INTERVAL={interval};BYDAY={};BYHOUR={hour};BYMINUTE={minute};BYSECOND=0",
            if yearly { "YEARLY" } else { "MONTHLY" },
            join(by_day.clone()),
        );
        if !month_days.is_empty() {
            rrule.push_str(&format!(";BYMONTHDAY={}", join(month_days.iter().map(i32::to_string).collect())));
        }
        if yearly {
            rrule.push_str(&format!(";BYMONTH={}", join(months.iter().map(u32::to_string).collect())));
        }
        let pattern = PatternSpec {
            frequency: if yearly { Frequency::Yearly } else { Frequency::Monthly },
            interval: Some(interval),
            by_day,
            by_month_day: month_days,
            by_month: if yearly { months } else { vec![] },
            at_times: vec![format!("{hour:02}:{minute:02}")],
        };
        let base = ScheduleSpec { time_zone: Some(zone.into()), start_at: Some(start), ..Default::default() };
        let walk = |spec: ScheduleSpec| {
            Schedule::compile(&spec, &ctx()).map(|s| {
                s.iter_after(start - Duration::seconds(1))
                    .take_while(|o| o.nominal <= start + Duration::days(800))
                    .take(300)
                    .map(|o| o.nominal)
                    .collect::<Vec<_>>()
            })
            .map_err(|e| e.message)
        };
        let from_rrule = walk(ScheduleSpec { rrule: Some(rrule.clone()), ..base.clone() });
        let from_pattern = walk(ScheduleSpec { pattern: Some(Box::new(pattern)), ..base });
        match (from_rrule, from_pattern) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{} in {} from {}", rrule, zone, start),
            (Err(a), Err(b)) => prop_assert!(a.contains("never fires") && b.contains("never fires"), "{rrule}: {a} / {b}"),
            (a, b) => prop_assert!(false, "{rrule} in {zone} from {start}: {a:?} / {b:?}"),
        }
    }
}
