#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;

fn spec(freq: Frequency) -> PatternSpec {
    PatternSpec {
        frequency: freq,
        ..Default::default()
    }
}

fn at(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
}

fn take(rule: &PatternRule, from: &str, n: usize) -> Vec<String> {
    let mut g = rule.generate_from(at(from));
    let limit = at("9999-01-01 00:00");
    (0..n)
        .map_while(|_| g.next(limit))
        .map(|t| t.format("%Y-%m-%d %H:%M %a").to_string())
        .collect()
}

#[test]
fn weekly_defaults_to_start_weekday_and_time() {
    let rule = PatternRule::new(&spec(Frequency::Weekly), at("2026-01-07 08:15")).unwrap();
    assert_eq!(
        take(&rule, "2026-01-07 08:15", 2),
        ["2026-01-07 08:15 Wed", "2026-01-14 08:15 Wed"]
    );
    assert_eq!(rule.summary(), "WEEKLY 08:15");
}

#[test]
fn weekly_interval_aligned_to_start_week_across_the_year() {
    let mut s = spec(Frequency::Weekly);
    s.interval = Some(2);
    s.by_day = vec!["MO".into(), "FR".into()];
    s.at_times = vec!["17:30".into(), "09:00".into(), "09:00".into()];
    // Start on Wednesday 2025-12-24: its week (Mon 22nd) is period 0.
    let rule = PatternRule::new(&s, at("2025-12-24 12:00")).unwrap();
    assert_eq!(
        take(&rule, "2025-12-24 12:00", 6),
        [
            "2025-12-26 09:00 Fri",
            "2025-12-26 17:30 Fri",
            "2026-01-05 09:00 Mon",
            "2026-01-05 17:30 Mon",
            "2026-01-09 09:00 Fri",
            "2026-01-09 17:30 Fri",
        ]
    );
    assert_eq!(rule.summary(), "WEEKLY/2 MO,FR 09:00,17:30");
    // Starting mid-sequence keeps the phase.
    assert_eq!(take(&rule, "2025-12-30 00:00", 1), ["2026-01-05 09:00 Mon"]);
}

#[test]
fn monthly_31st_skips_short_months() {
    let mut s = spec(Frequency::Monthly);
    s.by_month_day = vec![31];
    let rule = PatternRule::new(&s, at("2026-01-01 10:00")).unwrap();
    assert_eq!(
        take(&rule, "2026-01-01 00:00", 4),
        [
            "2026-01-31 10:00 Sat",
            "2026-03-31 10:00 Tue",
            "2026-05-31 10:00 Sun",
            "2026-07-31 10:00 Fri",
        ]
    );
}

#[test]
fn monthly_default_day_skips_short_months_too() {
    let rule = PatternRule::new(&spec(Frequency::Monthly), at("2026-01-31 10:00")).unwrap();
    assert_eq!(
        take(&rule, "2026-01-31 00:00", 2),
        ["2026-01-31 10:00 Sat", "2026-03-31 10:00 Tue"]
    );
}

#[test]
fn last_day_of_month_including_leap_february() {
    let mut s = spec(Frequency::Monthly);
    s.by_month_day = vec![-1];
    s.at_times = vec!["18:00".into()];
    let rule = PatternRule::new(&s, at("2028-01-10 00:00")).unwrap();
    assert_eq!(
        take(&rule, "2028-01-10 00:00", 3),
        [
            "2028-01-31 18:00 Mon",
            "2028-02-29 18:00 Tue",
            "2028-03-31 18:00 Fri",
        ]
    );
    let rule = PatternRule::new(&s, at("2027-02-01 00:00")).unwrap();
    assert_eq!(take(&rule, "2027-02-01 00:00", 1), ["2027-02-28 18:00 Sun"]);
}

#[test]
fn last_friday_and_first_monday() {
    let mut s = spec(Frequency::Monthly);
    s.by_day = vec!["-1FR".into(), "1mo".into()];
    s.at_times = vec!["09:00".into()];
    let rule = PatternRule::new(&s, at("2026-01-01 00:00")).unwrap();
    assert_eq!(
        take(&rule, "2026-01-01 00:00", 4),
        [
            "2026-01-05 09:00 Mon",
            "2026-01-30 09:00 Fri",
            "2026-02-02 09:00 Mon",
            "2026-02-27 09:00 Fri",
        ]
    );
}

#[test]
fn month_day_and_weekday_intersect() {
    // Friday the 13th.
    let mut s = spec(Frequency::Monthly);
    s.by_day = vec!["FR".into()];
    s.by_month_day = vec![13];
    s.at_times = vec!["00:00".into()];
    let rule = PatternRule::new(&s, at("2026-01-01 00:00")).unwrap();
    assert_eq!(
        take(&rule, "2026-01-01 00:00", 3),
        [
            "2026-02-13 00:00 Fri",
            "2026-03-13 00:00 Fri",
            "2026-11-13 00:00 Fri",
        ]
    );
}

#[test]
fn yearly_leap_day_and_thanksgiving() {
    let rule = PatternRule::new(&spec(Frequency::Yearly), at("2024-02-29 07:00")).unwrap();
    assert_eq!(
        take(&rule, "2024-02-29 07:00", 3),
        [
            "2024-02-29 07:00 Thu",
            "2028-02-29 07:00 Tue",
            "2032-02-29 07:00 Sun",
        ]
    );
    let mut s = spec(Frequency::Yearly);
    s.by_month = vec![11];
    s.by_day = vec!["4TH".into()];
    s.at_times = vec!["12:00".into()];
    let rule = PatternRule::new(&s, at("2026-01-01 00:00")).unwrap();
    assert_eq!(
        take(&rule, "2026-01-01 00:00", 2),
        ["2026-11-26 12:00 Thu", "2027-11-25 12:00 Thu"]
    );
    assert_eq!(rule.summary(), "YEARLY NOV 4TH 12:00");
}

#[test]
fn daily_with_filters_and_year_boundary() {
    let mut s = spec(Frequency::Daily);
    s.by_day = vec!["SA".into(), "SU".into()];
    s.at_times = vec!["23:30".into()];
    let rule = PatternRule::new(&s, at("2026-12-30 00:00")).unwrap();
    assert_eq!(
        take(&rule, "2026-12-30 00:00", 3),
        [
            "2027-01-02 23:30 Sat",
            "2027-01-03 23:30 Sun",
            "2027-01-09 23:30 Sat",
        ]
    );
    let mut s = spec(Frequency::Daily);
    s.interval = Some(3);
    s.at_times = vec!["00:00".into()];
    let rule = PatternRule::new(&s, at("2026-12-30 00:00")).unwrap();
    assert_eq!(
        take(&rule, "2026-12-31 00:00", 2),
        ["2027-01-02 00:00 Sat", "2027-01-05 00:00 Tue"]
    );
}

#[test]
fn field_errors() {
    let start = at("2026-01-01 00:00");
    let err = |s: PatternSpec| PatternRule::new(&s, start).unwrap_err();
    let mut s = spec(Frequency::Weekly);
    s.by_day = vec!["1MO".into()];
    assert_eq!(err(s.clone()).0, "pattern.byDay");
    assert!(err(s).1.contains("need frequency MONTHLY or YEARLY"));
    let mut s = spec(Frequency::Daily);
    s.by_day = vec!["-1FR".into()];
    assert!(err(s).1.contains("MONTHLY or YEARLY"));
    let mut s = spec(Frequency::Monthly);
    s.by_day = vec!["XX".into()];
    assert!(err(s).1.contains("is not a weekday"));
    let mut s = spec(Frequency::Monthly);
    s.by_day = vec!["6MO".into()];
    assert!(err(s).1.contains("ordinal must be 1 to 5"));
    let mut s = spec(Frequency::Weekly);
    s.by_month_day = vec![1];
    assert_eq!(err(s).0, "pattern.byMonthDay");
    let mut s = spec(Frequency::Monthly);
    s.by_month_day = vec![0];
    assert!(err(s).1.contains("0 is not a day of the month"));
    let mut s = spec(Frequency::Monthly);
    s.by_month = vec![1];
    assert_eq!(err(s).0, "pattern.byMonth");
    let mut s = spec(Frequency::Yearly);
    s.by_month = vec![13];
    assert!(err(s).1.contains("13 is not a month"));
    let mut s = spec(Frequency::Daily);
    s.at_times = vec!["24:00".into()];
    assert_eq!(err(s.clone()).0, "pattern.atTimes");
    s.at_times = vec!["9am".into()];
    assert!(err(s).1.contains("is not a time of day"));
    let mut s = spec(Frequency::Daily);
    s.interval = Some(0);
    assert_eq!(err(s.clone()).0, "pattern.interval");
    s.interval = Some(u32::MAX);
    assert_eq!(err(s).0, "pattern.interval");
    let mut s = spec(Frequency::Daily);
    s.at_times = vec!["00:00".into(); 100_000];
    assert!(err(s).1.contains("too many"));
}
