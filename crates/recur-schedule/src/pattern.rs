//! Calendar patterns: per period (day, Monday-start week, month, year), aligned to the start's
//! period and taken every `interval` periods, the matching dates crossed with the times of day.
//! Generates naive wall-clock times in increasing order; the zone policy is applied by the caller.
use chrono::{Datelike, Days, Months, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Weekday};

use super::spec::{Frequency, PatternSpec};

const MAX_BY_DAY: usize = 35;
const MAX_BY_MONTH_DAY: usize = 62;
const MAX_AT_TIMES: usize = 96;
const MAX_INTERVAL: u32 = 1000;

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// A checked pattern, bound to the date and time of day of its start.
#[derive(Clone, Debug)]
pub struct PatternRule {
    freq: Frequency,
    interval: i64,
    /// Plain weekdays, bit `n` = `n` days from Monday.
    weekdays: u8,
    /// `(n, weekday)`: the n-th (negative: from the end) such weekday of the month.
    nth: Vec<(i32, Weekday)>,
    month_days: Vec<i32>,
    months: Vec<u32>,
    times: Vec<NaiveTime>,
    origin: NaiveDate,
    summary: String,
}

/// A pattern error: the spec field and the message.
pub type PatternError = (&'static str, String);

impl PatternRule {
    /// Checks `spec`; `start` is the start bound's wall-clock time, the source of the defaults.
    pub fn new(spec: &PatternSpec, start: NaiveDateTime) -> Result<PatternRule, PatternError> {
        let freq = spec.frequency;
        let interval = spec.interval.unwrap_or(1);
        if !(1..=MAX_INTERVAL).contains(&interval) {
            return Err((
                "pattern.interval",
                format!("must be between 1 and {MAX_INTERVAL}, got {interval}"),
            ));
        }
        let (weekdays, nth) = by_day(freq, &spec.by_day)?;
        let month_days = by_month_day(freq, &spec.by_month_day)?;
        let months = by_month(freq, &spec.by_month, start.month())?;
        let times = at_times(&spec.at_times, start.time())?;
        let origin = start.date();
        let weekdays = if freq == Frequency::Weekly && weekdays == 0 {
            1 << origin.weekday().num_days_from_monday()
        } else {
            weekdays
        };
        let mut rule = PatternRule {
            freq,
            interval: i64::from(interval),
            weekdays,
            nth,
            month_days,
            months,
            times,
            origin,
            summary: String::new(),
        };
        rule.summary = rule.describe(spec);
        Ok(rule)
    }

    /// Short text for printer columns, e.g. `WEEKLY MO,WE 09:00`.
    pub fn summary(&self) -> &str {
        &self.summary
    }

    fn describe(&self, spec: &PatternSpec) -> String {
        let mut parts = vec![match self.interval {
            1 => self.freq.as_str().to_string(),
            n => format!("{}/{n}", self.freq.as_str()),
        }];
        if self.freq == Frequency::Yearly {
            let names: Vec<&str> = self
                .months
                .iter()
                .filter_map(|m| MONTH_NAMES.get(*m as usize - 1).copied())
                .collect();
            parts.push(names.join(","));
        }
        if !self.month_days.is_empty() {
            let days: Vec<String> = self.month_days.iter().map(i32::to_string).collect();
            parts.push(days.join(","));
        }
        if !spec.by_day.is_empty() {
            let days: Vec<String> = spec
                .by_day
                .iter()
                .map(|d| d.trim().to_ascii_uppercase())
                .collect();
            parts.push(days.join(","));
        }
        let times: Vec<String> = self
            .times
            .iter()
            .map(|t| {
                if t.second() == 0 {
                    t.format("%H:%M").to_string()
                } else {
                    t.format("%H:%M:%S").to_string()
                }
            })
            .collect();
        parts.push(times.join(","));
        parts.join(" ")
    }

    /// Upper bound of one period in days, for search horizons.
    pub fn stride_days(&self) -> i64 {
        let period = match self.freq {
            Frequency::Daily => 1,
            Frequency::Weekly => 7,
            Frequency::Monthly => 31,
            Frequency::Yearly => 366,
        };
        period * self.interval
    }

    /// Generates the wall-clock times at or after `from`.
    pub fn generate_from(&self, from: NaiveDateTime) -> PatternGen<'_> {
        let p = self.period_of(from.date()).max(0);
        // Round up to the next period taken (a multiple of interval).
        let p = match p % self.interval {
            0 => p,
            r => p + (self.interval - r),
        };
        let mut generator = PatternGen {
            rule: self,
            period: p,
            buf: Vec::new(),
            idx: 0,
            done: false,
        };
        generator.fill(Some(from));
        generator
    }

    fn period_of(&self, d: NaiveDate) -> i64 {
        let o = self.origin;
        match self.freq {
            Frequency::Daily => (d - o).num_days(),
            Frequency::Weekly => (monday(d) - monday(o)).num_days().div_euclid(7),
            Frequency::Monthly => {
                (i64::from(d.year()) * 12 + i64::from(d.month0()))
                    - (i64::from(o.year()) * 12 + i64::from(o.month0()))
            }
            Frequency::Yearly => i64::from(d.year()) - i64::from(o.year()),
        }
    }

    /// The first day of period `p`, `None` past chrono's range.
    fn period_start(&self, p: i64) -> Option<NaiveDate> {
        let o = self.origin;
        let p_u = u64::try_from(p).ok()?;
        match self.freq {
            Frequency::Daily => o.checked_add_days(Days::new(p_u)),
            Frequency::Weekly => monday(o).checked_add_days(Days::new(p_u.checked_mul(7)?)),
            Frequency::Monthly => o
                .with_day(1)?
                .checked_add_months(Months::new(u32::try_from(p_u).ok()?)),
            Frequency::Yearly => {
                NaiveDate::from_ymd_opt(o.year().checked_add(i32::try_from(p).ok()?)?, 1, 1)
            }
        }
    }

    /// The dates of period `p`, ascending.
    fn dates(&self, p: i64, out: &mut Vec<NaiveDate>) -> Option<()> {
        out.clear();
        let first = self.period_start(p)?;
        match self.freq {
            Frequency::Daily => {
                let dom_ok = self.month_days.is_empty() || self.month_day_matches(first);
                let dow_ok = self.weekdays == 0 || self.weekday_matches(first);
                if dom_ok && dow_ok {
                    out.push(first);
                }
            }
            Frequency::Weekly => {
                for i in 0..7u64 {
                    if self.weekdays & (1 << i) != 0 {
                        out.push(first.checked_add_days(Days::new(i))?);
                    }
                }
            }
            Frequency::Monthly => self.month_dates(first.year(), first.month(), out),
            Frequency::Yearly => {
                for m in &self.months {
                    self.month_dates(first.year(), *m, out);
                }
            }
        }
        Some(())
    }

    fn weekday_matches(&self, d: NaiveDate) -> bool {
        self.weekdays & (1 << d.weekday().num_days_from_monday()) != 0
    }

    fn month_day_matches(&self, d: NaiveDate) -> bool {
        let len = days_in_month(d.year(), d.month()) as i32;
        let day = d.day() as i32;
        self.month_days
            .iter()
            .any(|&v| v == day || v == day - len - 1)
    }

    fn nth_matches(&self, d: NaiveDate, len: u32) -> bool {
        let w = d.weekday();
        let from_start = (d.day() as i32 - 1) / 7 + 1;
        let from_end = (len as i32 - d.day() as i32) / 7 + 1;
        self.nth
            .iter()
            .any(|&(n, nw)| nw == w && (n == from_start || -n == from_end))
    }

    /// Appends the matching dates of one month: `byMonthDay` (limited by `byDay` when both are
    /// set, RFC 5545), else `byDay`, else the start's day of month.
    fn month_dates(&self, year: i32, month: u32, out: &mut Vec<NaiveDate>) {
        let len = days_in_month(year, month);
        let by_day = self.weekdays != 0 || !self.nth.is_empty();
        let day_ok = |d: NaiveDate| !by_day || self.weekday_matches(d) || self.nth_matches(d, len);
        let begin = out.len();
        if !self.month_days.is_empty() {
            for &v in &self.month_days {
                let day = if v > 0 { v } else { len as i32 + 1 + v };
                if day >= 1
                    && day <= len as i32
                    && let Some(d) = NaiveDate::from_ymd_opt(year, month, day as u32)
                    && day_ok(d)
                {
                    out.push(d);
                }
            }
        } else if by_day {
            for day in 1..=len {
                if let Some(d) = NaiveDate::from_ymd_opt(year, month, day)
                    && day_ok(d)
                {
                    out.push(d);
                }
            }
        } else if let Some(d) = NaiveDate::from_ymd_opt(year, month, self.origin.day()) {
            out.push(d);
        }
        out[begin..].sort_unstable();
        let mut seen = begin;
        for i in begin..out.len() {
            if i == begin || out[i] != out[seen - 1] {
                out[seen] = out[i];
                seen += 1;
            }
        }
        out.truncate(seen);
    }
}

/// Wall-clock times of a pattern in increasing order.
pub struct PatternGen<'a> {
    rule: &'a PatternRule,
    period: i64,
    buf: Vec<NaiveDateTime>,
    idx: usize,
    done: bool,
}

impl PatternGen<'_> {
    /// Fills the buffer with period `self.period`, keeping times at or after `from`.
    fn fill(&mut self, from: Option<NaiveDateTime>) {
        let mut dates = Vec::new();
        self.buf.clear();
        self.idx = 0;
        if self.rule.dates(self.period, &mut dates).is_none() {
            self.done = true;
            return;
        }
        for d in dates {
            for t in &self.rule.times {
                let dt = d.and_time(*t);
                if from.is_none_or(|f| dt >= f) {
                    self.buf.push(dt);
                }
            }
        }
    }

    /// The next wall-clock time, or `None` when the next one would be after `limit`.
    pub fn next(&mut self, limit: NaiveDateTime) -> Option<NaiveDateTime> {
        loop {
            if self.done {
                return None;
            }
            if let Some(dt) = self.buf.get(self.idx) {
                if *dt > limit {
                    return None;
                }
                self.idx += 1;
                return Some(*dt);
            }
            self.period = self.period.checked_add(self.rule.interval)?;
            match self.rule.period_start(self.period) {
                Some(start) if start.and_time(NaiveTime::MIN) <= limit => self.fill(None),
                _ => {
                    self.done = true;
                    return None;
                }
            }
        }
    }
}

fn monday(d: NaiveDate) -> NaiveDate {
    d - Days::new(u64::from(d.weekday().num_days_from_monday()))
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if NaiveDate::from_ymd_opt(year, 2, 29).is_some() => 29,
        2 => 28,
        _ => 31,
    }
}

fn weekday(s: &str) -> Option<Weekday> {
    Some(match s {
        "MO" => Weekday::Mon,
        "TU" => Weekday::Tue,
        "WE" => Weekday::Wed,
        "TH" => Weekday::Thu,
        "FR" => Weekday::Fri,
        "SA" => Weekday::Sat,
        "SU" => Weekday::Sun,
        _ => return None,
    })
}

fn by_day(freq: Frequency, entries: &[String]) -> Result<(u8, Vec<(i32, Weekday)>), PatternError> {
    const F: &str = "pattern.byDay";
    if entries.len() > MAX_BY_DAY {
        return Err((
            F,
            format!("too many entries ({}, at most {MAX_BY_DAY})", entries.len()),
        ));
    }
    let mut mask = 0u8;
    let mut nth = Vec::new();
    for raw in entries {
        let e = raw.trim().to_ascii_uppercase();
        let shown: String = raw.chars().take(16).collect();
        let bad = || {
            (
                F,
                format!(
                    "{shown:?} is not a weekday (use MO, TU, WE, TH, FR, SA or SU, optionally preceded by 1 to 5 or -1 to -5, as in 1MO or -1FR)"
                ),
            )
        };
        if !e.is_ascii() || e.len() < 2 || e.len() > 4 {
            return Err(bad());
        }
        let (num, day) = e.split_at(e.len() - 2);
        let w = weekday(day).ok_or_else(bad)?;
        if num.is_empty() {
            mask |= 1 << w.num_days_from_monday();
            continue;
        }
        let n: i32 = num.parse().map_err(|_| bad())?;
        if n == 0 || !(-5..=5).contains(&n) {
            return Err((
                F,
                format!("{shown:?}: the ordinal must be 1 to 5 or -1 to -5"),
            ));
        }
        if !matches!(freq, Frequency::Monthly | Frequency::Yearly) {
            return Err((
                F,
                format!("{shown:?}: ordinals such as 1MO or -1FR need frequency MONTHLY or YEARLY"),
            ));
        }
        nth.push((n, w));
    }
    Ok((mask, nth))
}

fn by_month_day(freq: Frequency, days: &[i32]) -> Result<Vec<i32>, PatternError> {
    const F: &str = "pattern.byMonthDay";
    if days.is_empty() {
        return Ok(Vec::new());
    }
    if freq == Frequency::Weekly {
        return Err((
            F,
            "does not apply to WEEKLY (use byDay, or frequency MONTHLY)".into(),
        ));
    }
    if days.len() > MAX_BY_MONTH_DAY {
        return Err((
            F,
            format!(
                "too many entries ({}, at most {MAX_BY_MONTH_DAY})",
                days.len()
            ),
        ));
    }
    if let Some(bad) = days.iter().find(|d| **d == 0 || !(-31..=31).contains(*d)) {
        return Err((
            F,
            format!("{bad} is not a day of the month (use 1 to 31, or -1 for the last day to -31)"),
        ));
    }
    let mut v = days.to_vec();
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

fn by_month(freq: Frequency, months: &[u32], default: u32) -> Result<Vec<u32>, PatternError> {
    const F: &str = "pattern.byMonth";
    if !months.is_empty() && freq != Frequency::Yearly {
        return Err((F, format!("only applies to YEARLY, not {}", freq.as_str())));
    }
    if months.len() > 12 {
        return Err((
            F,
            format!("too many entries ({}, at most 12)", months.len()),
        ));
    }
    if let Some(bad) = months.iter().find(|m| !(1..=12).contains(*m)) {
        return Err((F, format!("{bad} is not a month (use 1 to 12)")));
    }
    let mut v = if months.is_empty() {
        vec![default]
    } else {
        months.to_vec()
    };
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

fn at_times(times: &[String], default: NaiveTime) -> Result<Vec<NaiveTime>, PatternError> {
    const F: &str = "pattern.atTimes";
    if times.len() > MAX_AT_TIMES {
        return Err((
            F,
            format!("too many entries ({}, at most {MAX_AT_TIMES})", times.len()),
        ));
    }
    let mut v = Vec::with_capacity(times.len().max(1));
    for raw in times {
        let s = raw.trim();
        let shown: String = raw.chars().take(16).collect();
        let bad = || {
            (
                F,
                format!(
                    "{shown:?} is not a time of day (use HH:MM, 24-hour, for example 09:00 or 17:30)"
                ),
            )
        };
        let (h, m) = s.split_once(':').ok_or_else(bad)?;
        if h.is_empty()
            || h.len() > 2
            || m.len() != 2
            || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let t = NaiveTime::from_hms_opt(
            h.parse().map_err(|_| bad())?,
            m.parse().map_err(|_| bad())?,
            0,
        )
        .ok_or_else(bad)?;
        v.push(t);
    }
    if v.is_empty() {
        // Whole seconds only: nominal instants never carry fractions.
        v.push(default.with_nanosecond(0).unwrap_or(default));
    }
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

#[cfg(test)]
mod tests;
