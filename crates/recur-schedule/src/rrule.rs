//! RFC 5545 recurrence rules, evaluated by the `rrule` crate on naive wall-clock time (a UTC
//! DTSTART holding the local wall time), so that the zone policy stays ours.
//!
//! We parse the text ourselves first: `UNTIL`, `COUNT` and `EXDATE` become instant bounds and
//! filters applied after the zone policy, `DTSTART` is refused (the start comes from `startAt`),
//! and the crate's own readings of floating times (it would use the machine's local zone) are
//! never reached. A BYDAY mixing plain and numbered weekdays (`MO,-1FR`), which the crate
//! intersects instead of joining, is expanded by [`byday`].
use std::collections::HashSet;

use chrono::{
    DateTime, Datelike, Days, Months, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Timelike, Utc,
};
use chrono_tz::Tz;
use rrule::{Frequency, RRule, RRuleSet, RRuleSetIter, Unvalidated};

use super::zone;
use byday::{ByDayUnion, ByDayUnionGen};
use time_limits::TimeLimits;

mod byday;
mod time_limits;

/// Most `EXDATE` values accepted.
const MAX_EXDATES: usize = 1000;
/// Largest `COUNT` accepted (as for `count`).
pub const MAX_COUNT: u32 = 100_000;

/// A checked rule with its bounds and exclusions.
#[derive(Clone, Debug)]
pub struct RruleRule {
    rule: RRule,
    /// Set when BYDAY mixes plain and numbered weekdays: generates instead of `rule`.
    by_day_union: Option<ByDayUnion>,
    /// BYHOUR and BYMINUTE of a SECONDLY or MINUTELY rule, taken out of `rule`.
    time_limits: TimeLimits,
    freq: Frequency,
    interval: i64,
    week_start: chrono::Weekday,
    origin: NaiveDateTime,
    /// `COUNT`: occurrences of the rule, counted before `EXDATE` removes any (RFC 5545).
    pub count: Option<u32>,
    /// `UNTIL`, as an instant.
    pub until: Option<DateTime<Utc>>,
    ex_instants: HashSet<i64>,
    ex_dates: HashSet<NaiveDate>,
    /// The rule line as written, without `RRULE:`.
    pub text: String,
}

impl RruleRule {
    /// Parses `text` for zone `tz`, starting at wall-clock time `origin`.
    pub fn parse(text: &str, tz: Tz, origin: NaiveDateTime) -> Result<RruleRule, String> {
        let mut rule_line: Option<String> = None;
        let mut ex_instants = HashSet::new();
        let mut ex_dates = HashSet::new();
        let mut ex_count = 0usize;
        for line in unfold(text) {
            let upper = line.to_ascii_uppercase();
            if upper.starts_with("DTSTART") {
                return Err("DTSTART is not supported: set startAt (and timeZone) instead".into());
            }
            if upper.starts_with("EXDATE") {
                let (instants, dates) = parse_exdate(&line, tz)?;
                ex_count += instants.len() + dates.len();
                if ex_count > MAX_EXDATES {
                    return Err(format!("too many EXDATE values (at most {MAX_EXDATES})"));
                }
                ex_instants.extend(instants);
                ex_dates.extend(dates);
                continue;
            }
            let body = if let Some(rest) = upper.strip_prefix("RRULE:") {
                rest.to_string()
            } else if upper.starts_with("RRULE;") {
                return Err("RRULE parameters are not supported (write RRULE:FREQ=...)".into());
            } else if upper.starts_with("FREQ=") || (upper.contains('=') && !upper.contains(':')) {
                upper.clone()
            } else {
                let name: String = line
                    .split([':', ';'])
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(20)
                    .collect();
                return Err(format!(
                    "unsupported line {name:?} (only the rule and EXDATE lines are allowed)"
                ));
            };
            if rule_line.replace(body).is_some() {
                return Err("more than one rule line (combine them, or use several tasks)".into());
            }
        }
        let Some(rule_line) = rule_line else {
            return Err("missing the rule, for example FREQ=WEEKLY;BYDAY=MO".into());
        };
        let parts = RuleParts::split(&rule_line)?;
        let until = parts
            .until
            .as_deref()
            .map(|u| parse_until(u, tz))
            .transpose()?;
        let count = parts.count;
        let unvalidated: RRule<Unvalidated> = parts.rest.parse().map_err(|e| crate_message(&e))?;
        let dtstart = origin.and_utc().with_timezone(&rrule::Tz::UTC);
        let rule = unvalidated
            .clone()
            .validate(dtstart)
            .map_err(|e| crate_message(&e))?;
        let by_day_union =
            ByDayUnion::split(&unvalidated, &rule, dtstart).map_err(|e| crate_message(&e))?;
        let (time_limits, rule) = match TimeLimits::take(unvalidated, &rule) {
            (limits, _) if limits.is_empty() => (limits, rule),
            (limits, rest) => (
                limits,
                rest.validate(dtstart).map_err(|e| crate_message(&e))?,
            ),
        };
        Ok(RruleRule {
            by_day_union,
            time_limits,
            freq: rule.get_freq(),
            interval: i64::from(rule.get_interval()),
            week_start: rule.get_week_start(),
            rule,
            origin,
            count,
            until,
            ex_instants,
            ex_dates,
            text: rule_line.trim_start_matches("RRULE:").to_string(),
        })
    }

    /// Whether `EXDATE` removes the occurrence generated at wall-clock `local`, resolved to `at`.
    pub fn excluded(&self, local: NaiveDateTime, at: DateTime<Utc>) -> bool {
        self.ex_instants.contains(&at.timestamp()) || self.ex_dates.contains(&local.date())
    }

    /// Upper bound of one step of the rule, for search horizons.
    pub fn stride(&self) -> TimeDelta {
        let unit = match self.freq {
            Frequency::Secondly => TimeDelta::seconds(1),
            Frequency::Minutely => TimeDelta::minutes(1),
            Frequency::Hourly => TimeDelta::hours(1),
            Frequency::Daily => TimeDelta::days(1),
            Frequency::Weekly => TimeDelta::weeks(1),
            Frequency::Monthly => TimeDelta::days(31),
            Frequency::Yearly => TimeDelta::days(366),
        };
        unit * i32::try_from(self.interval).unwrap_or(i32::MAX)
    }

    /// Generates the wall-clock times at or after `from`. The crate always iterates from its
    /// DTSTART, so it gets a DTSTART moved forward by whole steps of the rule (the start of an
    /// aligned period): the rule's defaults (BYHOUR, BYMONTHDAY...) were fixed at validation from
    /// the real start, so the moved one changes nothing but where iteration begins.
    pub fn generate_from(&self, from: NaiveDateTime) -> RruleGen<'_> {
        RruleGen {
            rule: self,
            times: self.times_from(from),
            from,
            done: false,
        }
    }

    fn times_from(&self, from: NaiveDateTime) -> Times<'_> {
        let base = self.aligned_base(from).unwrap_or(self.origin);
        match &self.by_day_union {
            Some(union) => Times::ByDayUnion(union.generate(base, self.origin)),
            None => {
                let set = RRuleSet::new(base.and_utc().with_timezone(&rrule::Tz::UTC))
                    .rrule(self.rule.clone())
                    .limit();
                Times::Crate((&set).into_iter())
            }
        }
    }

    /// The start of the latest period taken by the rule that begins at or before `from`, or the
    /// origin itself when `from` is in the first period.
    fn aligned_base(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        let o = self.origin;
        let n = self.interval;
        if from <= o {
            return Some(o);
        }
        let (period_origin, steps): (NaiveDateTime, i64) = match self.freq {
            Frequency::Secondly => (o, (from - o).num_seconds()),
            Frequency::Minutely => {
                let po = o.with_second(0)?;
                (po, (from - po).num_minutes())
            }
            Frequency::Hourly => {
                let po = o.with_second(0)?.with_minute(0)?;
                (po, (from - po).num_hours())
            }
            Frequency::Daily => {
                let po = o.date().and_time(NaiveTime::MIN);
                (po, (from - po).num_days())
            }
            Frequency::Weekly => {
                let po = self.week_start_of(o.date()).and_time(NaiveTime::MIN);
                (po, (from - po).num_days() / 7)
            }
            Frequency::Monthly => {
                let po = o.date().with_day(1)?.and_time(NaiveTime::MIN);
                let months = (i64::from(from.year()) * 12 + i64::from(from.month0()))
                    - (i64::from(o.year()) * 12 + i64::from(o.month0()));
                (po, months)
            }
            Frequency::Yearly => {
                let po = NaiveDate::from_ymd_opt(o.year(), 1, 1)?.and_time(NaiveTime::MIN);
                (po, i64::from(from.year()) - i64::from(o.year()))
            }
        };
        let k = steps.div_euclid(n) * n;
        if k <= 0 {
            return Some(o);
        }
        let k_u32 = u32::try_from(k).ok();
        match self.freq {
            Frequency::Secondly => period_origin.checked_add_signed(TimeDelta::try_seconds(k)?),
            Frequency::Minutely => period_origin.checked_add_signed(TimeDelta::try_minutes(k)?),
            Frequency::Hourly => period_origin.checked_add_signed(TimeDelta::try_hours(k)?),
            Frequency::Daily => period_origin.checked_add_days(Days::new(u64::try_from(k).ok()?)),
            Frequency::Weekly => {
                period_origin.checked_add_days(Days::new(u64::try_from(k).ok()?.checked_mul(7)?))
            }
            Frequency::Monthly => period_origin.checked_add_months(Months::new(k_u32?)),
            Frequency::Yearly => {
                period_origin.checked_add_months(Months::new(k_u32?.checked_mul(12)?))
            }
        }
    }

    fn week_start_of(&self, d: NaiveDate) -> NaiveDate {
        let back =
            (7 + d.weekday().num_days_from_monday() - self.week_start.num_days_from_monday()) % 7;
        d - Days::new(u64::from(back))
    }
}

/// Wall-clock times of a rule, in increasing order.
pub struct RruleGen<'a> {
    rule: &'a RruleRule,
    times: Times<'a>,
    from: NaiveDateTime,
    done: bool,
}

enum Times<'a> {
    Crate(RRuleSetIter),
    ByDayUnion(ByDayUnionGen<'a>),
}

impl RruleGen<'_> {
    /// The next wall-clock time, or `None` when the next one would be after `limit`.
    pub fn next(&mut self, limit: NaiveDateTime) -> Option<NaiveDateTime> {
        while !self.done {
            let next = match &mut self.times {
                Times::Crate(iter) => iter.next().map(|t| t.naive_utc()),
                Times::ByDayUnion(g) => g.next(limit),
            };
            let Some(t) = next else { break };
            if t > limit {
                break;
            }
            if t < self.from {
                continue;
            }
            if !self.rule.time_limits.allows(t) {
                // Nothing before the next allowed time (after t) is in the set: restart there.
                let Some(next) = self.rule.time_limits.next_allowed(t) else {
                    break;
                };
                self.from = next;
                self.times = self.rule.times_from(next);
                continue;
            }
            return Some(t);
        }
        self.done = true;
        None
    }
}

/// The rule parts we handle ourselves, and the rest for the crate.
struct RuleParts {
    until: Option<String>,
    count: Option<u32>,
    rest: String,
}

impl RuleParts {
    fn split(line: &str) -> Result<RuleParts, String> {
        let mut seen = HashSet::new();
        let mut until = None;
        let mut count = None;
        let mut rest = Vec::new();
        let mut freq = None;
        let mut ordinal_by_day = false;
        let mut by_week_no = false;
        for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = part.split_once('=') else {
                return Err(format!("{part:?} is not NAME=VALUE"));
            };
            if !seen.insert(key.to_string()) {
                return Err(format!("{key} appears twice"));
            }
            match key {
                "UNTIL" => until = Some(value.to_string()),
                "COUNT" => {
                    let n: u32 = value
                        .parse()
                        .map_err(|_| format!("COUNT {value:?} is not a number"))?;
                    if !(1..=MAX_COUNT).contains(&n) {
                        return Err(format!("COUNT must be between 1 and {MAX_COUNT}, got {n}"));
                    }
                    count = Some(n);
                }
                "INTERVAL" => {
                    let n: u64 = value
                        .parse()
                        .map_err(|_| format!("INTERVAL {value:?} is not a number"))?;
                    if n == 0 {
                        return Err("INTERVAL must be at least 1".into());
                    }
                    rest.push(part.to_string());
                }
                "FREQ" => {
                    freq = Some(value.to_string());
                    rest.push(part.to_string());
                }
                "BYWEEKNO" => {
                    by_week_no = true;
                    rest.push(part.to_string());
                }
                "BYDAY" => {
                    ordinal_by_day = value.split(',').any(|d| {
                        d.trim()
                            .starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '-')
                    });
                    rest.push(part.to_string());
                }
                _ => rest.push(part.to_string()),
            }
        }
        if until.is_some() && count.is_some() {
            return Err("UNTIL and COUNT cannot both be set (RFC 5545)".into());
        }
        // The crate silently ignores ordinals with other frequencies (WEEKLY;BYDAY=1MO fires daily).
        if ordinal_by_day && !matches!(freq.as_deref(), Some("MONTHLY" | "YEARLY")) {
            return Err(
                "BYDAY ordinals such as 1MO or -1FR need FREQ=MONTHLY or FREQ=YEARLY".into(),
            );
        }
        if ordinal_by_day && by_week_no {
            return Err(
                "BYDAY ordinals such as 1MO or -1FR cannot be combined with BYWEEKNO (RFC 5545)"
                    .into(),
            );
        }
        Ok(RuleParts {
            until,
            count,
            rest: rest.join(";"),
        })
    }
}

/// Lines of the text, with RFC 5545 folding (a line starting with a space continues the previous
/// one) undone; blank lines dropped.
fn unfold(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for raw in text.split('\n') {
        let raw = raw.trim_end_matches('\r');
        if let Some(cont) = raw.strip_prefix([' ', '\t'])
            && let Some(last) = lines.last_mut()
        {
            last.push_str(cont);
            continue;
        }
        let line = raw.trim();
        if !line.is_empty() {
            lines.push(line.to_string());
        }
    }
    lines
}

/// `UNTIL`: `...Z` is an instant; a floating date-time is wall-clock time in the schedule's zone;
/// a date means through the end of that day there.
fn parse_until(value: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    let bad = || format!("UNTIL {value:?} is not a date-time such as 20261231T235959Z");
    match ical_value(value).ok_or_else(bad)? {
        IcalValue::Utc(t) => Ok(t),
        IcalValue::Floating(local) => zone::resolve(tz, local).ok_or_else(bad),
        IcalValue::Date(d) => {
            zone::resolve(tz, d.and_hms_opt(23, 59, 59).ok_or_else(bad)?).ok_or_else(bad)
        }
    }
}

enum IcalValue {
    Utc(DateTime<Utc>),
    Floating(NaiveDateTime),
    Date(NaiveDate),
}

fn ical_value(v: &str) -> Option<IcalValue> {
    let v = v.trim();
    if v.len() == 8 {
        return NaiveDate::parse_from_str(v, "%Y%m%d")
            .ok()
            .map(IcalValue::Date);
    }
    let (body, utc) = match v.strip_suffix(['Z', 'z']) {
        Some(b) => (b, true),
        None => (v, false),
    };
    if body.len() != 15 {
        return None;
    }
    let local = NaiveDateTime::parse_from_str(body, "%Y%m%dT%H%M%S").ok()?;
    Some(if utc {
        IcalValue::Utc(local.and_utc())
    } else {
        IcalValue::Floating(local)
    })
}

type ExDates = (Vec<i64>, Vec<NaiveDate>);

/// `EXDATE[;TZID=Zone][;VALUE=DATE-TIME|DATE]:v1,v2,...`
fn parse_exdate(line: &str, tz: Tz) -> Result<ExDates, String> {
    let Some((head, values)) = line.split_once(':') else {
        return Err("EXDATE line without values (write EXDATE:20261224T090000Z)".into());
    };
    let mut zone_for_values = tz;
    let mut has_tzid = false;
    for param in head.split(';').skip(1) {
        let (k, v) = param.split_once('=').unwrap_or((param, ""));
        match k.trim().to_ascii_uppercase().as_str() {
            "TZID" => {
                zone_for_values =
                    zone::parse_zone(v.trim()).map_err(|e| format!("EXDATE TZID: {e}"))?;
                has_tzid = true;
            }
            "VALUE" if matches!(v.trim().to_ascii_uppercase().as_str(), "DATE" | "DATE-TIME") => {}
            other => {
                return Err(format!(
                    "EXDATE parameter {other:?} is not supported (TZID and VALUE are)"
                ));
            }
        }
    }
    let mut instants = Vec::new();
    let mut dates = Vec::new();
    for value in values.split(',').map(str::trim).filter(|v| !v.is_empty()) {
        if instants.len() + dates.len() >= MAX_EXDATES {
            return Err(format!("too many EXDATE values (at most {MAX_EXDATES})"));
        }
        let shown: String = value.chars().take(24).collect();
        let bad = || {
            format!(
                "EXDATE {shown:?} is not a date-time such as 20261224T090000Z, 20261224T090000 or 20261224"
            )
        };
        match ical_value(value).ok_or_else(bad)? {
            IcalValue::Utc(_) if has_tzid => {
                return Err(format!(
                    "EXDATE {shown:?}: a UTC time (Z) cannot have a TZID"
                ));
            }
            IcalValue::Utc(t) => instants.push(t.timestamp()),
            IcalValue::Floating(local) => instants.push(
                zone::resolve(zone_for_values, local)
                    .ok_or_else(bad)?
                    .timestamp(),
            ),
            IcalValue::Date(d) => dates.push(d),
        }
    }
    Ok((instants, dates))
}

/// The crate's message without its prefix.
fn crate_message(e: &rrule::RRuleError) -> String {
    let s = e.to_string();
    for prefix in [
        "RRule parsing error: ",
        "RRule validation error: ",
        "RRule iteration error: ",
    ] {
        if let Some(rest) = s.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    fn take(rule: &RruleRule, from: &str, n: usize) -> Vec<String> {
        let mut g = rule.generate_from(at(from));
        let limit = at("9999-01-01 00:00");
        (0..n)
            .map_while(|_| g.next(limit))
            .map(|t| t.format("%Y-%m-%d %H:%M %a").to_string())
            .collect()
    }

    fn berlin() -> Tz {
        "Europe/Berlin".parse().unwrap()
    }

    #[test]
    fn last_workday_of_month() {
        let r = RruleRule::parse(
            "RRULE:FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;BYHOUR=16;BYMINUTE=0;BYSECOND=0\n",
            berlin(),
            at("2026-01-01 00:00"),
        )
        .unwrap();
        assert_eq!(
            take(&r, "2026-01-01 00:00", 3),
            [
                "2026-01-30 16:00 Fri",
                "2026-02-27 16:00 Fri",
                "2026-03-31 16:00 Tue"
            ]
        );
        // From later on, the moved DTSTART gives the same sequence.
        assert_eq!(take(&r, "2026-02-28 00:00", 1), ["2026-03-31 16:00 Tue"]);
    }

    #[test]
    fn moved_start_keeps_phase_for_every_frequency() {
        let cases = [
            ("FREQ=SECONDLY;INTERVAL=7", "2026-01-01 10:00"),
            ("FREQ=MINUTELY;INTERVAL=7", "2026-01-01 10:03"),
            ("FREQ=HOURLY;INTERVAL=5", "2026-01-01 10:03"),
            ("FREQ=DAILY;INTERVAL=3", "2026-01-01 10:03"),
            (
                "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,SU;WKST=SU",
                "2026-01-01 10:03",
            ),
            ("FREQ=MONTHLY;INTERVAL=5", "2026-01-31 10:03"),
            ("FREQ=YEARLY;INTERVAL=2", "2024-02-29 10:03"),
            ("FREQ=YEARLY;BYWEEKNO=1,53;BYDAY=MO", "2026-01-01 10:03"),
            (
                "FREQ=MONTHLY;INTERVAL=5;BYDAY=SU,-1FR;BYSETPOS=2,-1;BYHOUR=9,17",
                "2026-01-31 10:03",
            ),
            (
                "FREQ=YEARLY;INTERVAL=2;BYDAY=20MO,-1TU,SA",
                "2024-02-29 10:03",
            ),
        ];
        for (text, start) in cases {
            let r = RruleRule::parse(text, Tz::UTC, at(start)).unwrap();
            let all = take(&r, start, 400);
            for i in [1usize, 17, 150, 399] {
                let Some(expected) = all.get(i) else { continue };
                let from =
                    NaiveDateTime::parse_from_str(&expected[..16], "%Y-%m-%d %H:%M").unwrap();
                let got = take(&r, &from.format("%Y-%m-%d %H:%M").to_string(), 1);
                assert_eq!(got.first(), Some(expected), "{text} from {from}");
            }
        }
    }

    /// SECONDLY and MINUTELY rules whose parts only limit, against a brute-force walk of
    /// origin + k * INTERVAL: the crate keeps the phase of INTERVAL when it skips hours or minutes
    /// that BYHOUR or BYMINUTE exclude only if we do that skipping (it moves whole minutes or
    /// hours and loses the phase of an INTERVAL that does not divide them).
    #[test]
    fn sub_hourly_rules_keep_their_phase_across_skipped_hours() {
        let cases = [
            ("FREQ=SECONDLY;INTERVAL=7;BYHOUR=0", 7),
            ("FREQ=SECONDLY;INTERVAL=13;BYMINUTE=5,50", 13),
            ("FREQ=SECONDLY;INTERVAL=90;BYHOUR=3,17;BYMINUTE=1,2,3", 90),
            ("FREQ=SECONDLY;INTERVAL=7;BYHOUR=0;BYSECOND=1,2,3,4,5,6", 7),
            ("FREQ=SECONDLY;INTERVAL=11;BYDAY=SA;BYHOUR=23", 11),
            ("FREQ=MINUTELY;INTERVAL=7;BYHOUR=0,13", 7 * 60),
            (
                "FREQ=MINUTELY;INTERVAL=25;BYHOUR=9;BYMINUTE=0,5,10,15,20,25,30",
                25 * 60,
            ),
            ("FREQ=MINUTELY;INTERVAL=7;BYMONTHDAY=1,15;BYHOUR=2", 7 * 60),
        ];
        let origin =
            NaiveDateTime::parse_from_str("2026-01-01 10:00:03", "%Y-%m-%d %H:%M:%S").unwrap();
        for (text, step) in cases {
            let r = RruleRule::parse(text, Tz::UTC, origin).unwrap();
            let parts: Vec<(&str, Vec<u32>)> = text
                .split(';')
                .filter_map(|p| p.split_once('='))
                .filter(|(k, _)| k.starts_with("BY") && *k != "BYDAY")
                .map(|(k, v)| (k, v.split(',').map(|n| n.parse().unwrap()).collect()))
                .collect();
            let saturdays_only = text.contains("BYDAY=SA");
            let matches = |t: NaiveDateTime| {
                (!saturdays_only || t.weekday() == chrono::Weekday::Sat)
                    && parts.iter().all(|(k, v)| {
                        let field = match *k {
                            "BYHOUR" => t.hour(),
                            "BYMINUTE" => t.minute(),
                            "BYSECOND" => t.second(),
                            "BYMONTHDAY" => t.day(),
                            _ => unreachable!("{k}"),
                        };
                        v.contains(&field)
                    })
            };
            let end = origin + TimeDelta::days(40);
            let expected: Vec<NaiveDateTime> = (0..)
                .map(|k| origin + TimeDelta::seconds(k * step))
                .take_while(|t| *t < end)
                .filter(|t| matches(*t))
                .take(300)
                .collect();
            let mut g = r.generate_from(origin);
            let got: Vec<NaiveDateTime> = (0..expected.len()).map_while(|_| g.next(end)).collect();
            let first_difference = got.iter().zip(&expected).position(|(g, e)| g != e);
            assert_eq!(first_difference, None, "{text} from the origin");
            assert_eq!(got.len(), expected.len(), "{text} from the origin");
            // From just after any occurrence, the next is the next of the walk.
            for pair in expected.windows(2).step_by(7) {
                let mut g = r.generate_from(pair[0] + TimeDelta::seconds(1));
                assert_eq!(g.next(end), Some(pair[1]), "{text} after {}", pair[0]);
            }
        }
    }

    #[test]
    fn exdates_and_until() {
        let r = RruleRule::parse(
            "FREQ=DAILY;BYHOUR=9;BYMINUTE=0;BYSECOND=0;UNTIL=20261231\nEXDATE;TZID=Europe/Berlin:20261224T090000,20261225T090000\nEXDATE:20261226T080000Z\nEXDATE;VALUE=DATE:20261227",
            berlin(),
            at("2026-12-01 00:00"),
        )
        .unwrap();
        assert_eq!(r.until, Some("2026-12-31T22:59:59Z".parse().unwrap()));
        let ex = |s: &str| {
            let local = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
            r.excluded(local, zone::resolve(berlin(), local).unwrap())
        };
        assert!(ex("2026-12-24 09:00"));
        assert!(ex("2026-12-25 09:00"));
        assert!(ex("2026-12-26 09:00"));
        assert!(ex("2026-12-27 09:00"));
        assert!(!ex("2026-12-28 09:00"));
    }

    #[test]
    fn errors() {
        let err = |t: &str| RruleRule::parse(t, Tz::UTC, at("2026-01-01 00:00")).unwrap_err();
        assert!(err("DTSTART:20260101T000000Z\nRRULE:FREQ=DAILY").contains("set startAt"));
        assert!(err("FREQ=DAILY;COUNT=3;UNTIL=20260201T000000Z").contains("UNTIL and COUNT"));
        assert!(err("FREQ=DAILY;INTERVAL=0").contains("INTERVAL must be at least 1"));
        assert!(err("FREQ=WEEKLY;BYDAY=1MO").contains("need FREQ=MONTHLY"));
        assert!(err("FREQ=DAILY;COUNT=0").contains("between 1 and"));
        assert!(err("FREQ=DAILY;COUNT=4294967295").contains("between 1 and"));
        assert!(err("FREQ=SOMETIMES").contains("SOMETIMES"));
        assert!(err("FREQ=DAILY;FOO=1").contains("FOO"));
        assert!(err("FREQ=DAILY;BYHOUR=25").contains("BYHOUR"));
        assert!(err("FREQ=DAILY\nFREQ=WEEKLY").contains("more than one"));
        assert!(err("EXDATE:20260101T000000Z").contains("missing the rule"));
        assert!(err("FREQ=DAILY\nEXDATE:2026").contains("is not a date-time"));
        assert!(
            err("FREQ=DAILY\nEXDATE;TZID=Europe/Berln:20260101T000000").contains("did you mean")
        );
        assert!(err("FREQ=DAILY\nRDATE:20260101T000000Z").contains("unsupported line"));
        assert!(err("FREQ=DAILY;FREQ=DAILY").contains("twice"));
        assert!(err("FREQ=DAILY;UNTIL=tomorrow").contains("UNTIL"));
        assert!(err("FREQ=DAILY;INTERVAL=99999999999999999999").contains("INTERVAL"));
    }
}
