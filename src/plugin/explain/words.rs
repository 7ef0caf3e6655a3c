//! A schedule's rule in English. Only wording: the schedule engine has already accepted the spec
//! (explain compiles first), so anything not worded here is quoted as written rather than
//! guessed at; the next instants printed beside the words are the engine's own.
use chrono::{Datelike, NaiveDateTime, Timelike, Weekday};

use crate::schedule::{Frequency, PatternSpec};

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const CRON_WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const CRON_MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn ordinal(n: i32) -> String {
    let word = match n.abs() {
        1 => "first",
        2 => "second",
        3 => "third",
        4 => "fourth",
        5 => "fifth",
        _ => return format!("{n}."),
    };
    match (n < 0, n) {
        (true, -1) => "last".into(),
        (true, _) => format!("{word}-to-last"),
        (false, _) => word.into(),
    }
}

fn weekday_name(n: u32) -> Option<&'static str> {
    WEEKDAYS.get((n % 7) as usize).copied()
}

fn month_name(n: u32) -> Option<&'static str> {
    MONTHS.get(n.checked_sub(1)? as usize).copied()
}

/// One comma-separated item of a cron field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Any,
    Value(u32),
    Range(u32, u32),
    /// `*/s`, `a/s`, `a-b/s`.
    Step(Option<u32>, Option<u32>, u32),
}

fn value(s: &str, names: &[&str], first: u32) -> Option<u32> {
    s.parse().ok().or_else(|| {
        names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(s))
            .and_then(|i| u32::try_from(i).ok())
            .map(|i| i + first)
    })
}

fn item(s: &str, names: &[&str], first: u32) -> Option<Item> {
    let (base, step) = match s.split_once('/') {
        Some((b, st)) => (b, Some(st.parse::<u32>().ok()?)),
        None => (s, None),
    };
    let (from, to) = match base {
        "*" | "?" => (None, None),
        _ => match base.split_once('-') {
            Some((a, b)) => (Some(value(a, names, first)?), Some(value(b, names, first)?)),
            None => (Some(value(base, names, first)?), None),
        },
    };
    Some(match (from, to, step) {
        (None, None, None) | (None, None, Some(1)) => Item::Any,
        (Some(a), None, None) => Item::Value(a),
        (Some(a), Some(b), None) => Item::Range(a, b),
        (from, to, Some(s)) => Item::Step(from, to, s),
        (None, Some(_), None) => return None,
    })
}

fn items(field: &str, names: &[&str], first: u32) -> Option<Vec<Item>> {
    field.split(',').map(|s| item(s, names, first)).collect()
}

fn values(items: &[Item]) -> Option<Vec<u32>> {
    items
        .iter()
        .map(|i| match i {
            Item::Value(v) => Some(*v),
            _ => None,
        })
        .collect()
}

/// Items of a numeric field (`minute`, `hour`, day of month) in words; `show` formats a value.
fn numeric(items: &[Item], unit: &str, show: &dyn Fn(u32) -> String) -> String {
    if let Some(vs) = values(items) {
        let shown: Vec<String> = vs.iter().map(|v| show(*v)).collect();
        let unit = if vs.len() == 1 {
            unit.to_owned()
        } else {
            format!("{unit}s")
        };
        return format!("{unit} {}", and_list(&shown));
    }
    let parts: Vec<String> = items
        .iter()
        .map(|i| match *i {
            Item::Any => format!("every {unit}"),
            Item::Value(v) => format!("{unit} {}", show(v)),
            Item::Range(a, b) => format!("{unit}s {} through {}", show(a), show(b)),
            Item::Step(None, _, s) => format!("every {s} {unit}s"),
            Item::Step(Some(a), None, s) => format!("every {s} {unit}s from {unit} {}", show(a)),
            Item::Step(Some(a), Some(b), s) => {
                format!("every {s} {unit}s from {} through {}", show(a), show(b))
            }
        })
        .collect();
    and_list(&parts)
}

/// Items of a named field (months, weekdays) in words.
fn named(items: &[Item], name: &dyn Fn(u32) -> Option<&'static str>, unit: &str) -> Option<String> {
    let parts: Option<Vec<String>> = items
        .iter()
        .map(|i| {
            Some(match *i {
                Item::Any => format!("every {unit}"),
                Item::Value(v) => name(v)?.to_owned(),
                Item::Range(a, b) => format!("{} through {}", name(a)?, name(b)?),
                Item::Step(from, to, s) => {
                    let from = from.map_or(Some(String::new()), |a| {
                        name(a).map(|n| format!(" from {n}"))
                    })?;
                    let to = to.map_or(Some(String::new()), |b| {
                        name(b).map(|n| format!(" through {n}"))
                    })?;
                    format!("every {s} {unit}s{from}{to}")
                }
            })
        })
        .collect();
    parts.map(|p| and_list(&p))
}

fn restricted(field: &str) -> bool {
    !matches!(field, "*" | "?" | "*/1")
}

/// A 5-field cron expression (or an `@` alias) in words: `At 02:30 every day`.
pub fn cron(expr: &str) -> String {
    let e = expr.trim();
    let alias = match e.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => Some("At 00:00 on 1 January, once a year"),
        "@monthly" => Some("At 00:00 on the first day of every month"),
        "@weekly" => Some("At 00:00 every Sunday"),
        "@daily" | "@midnight" => Some("At 00:00 every day"),
        "@hourly" => Some("At minute 0 of every hour"),
        _ => None,
    };
    if let Some(a) = alias {
        return a.into();
    }
    let fields: Vec<&str> = e.split_whitespace().collect();
    let [minute, hour, dom, month, dow] = fields.as_slice() else {
        return format!("By the cron expression `{e}`");
    };
    let (time, simple) = cron_time(minute, hour);
    // A time already in clauses ("Every 15 minutes, in hours 09 through 17") takes the days as
    // one more clause; otherwise "in hours 09 through 17 on Monday" would read as one phrase.
    let on = if time.contains(", ") { ", on" } else { " on" };
    let days = match (restricted(dom), restricted(dow)) {
        (false, false) if simple => " every day".to_owned(),
        (false, false) => String::new(),
        (true, false) => format!("{on} {}", cron_dom(dom)),
        (false, true) => format!("{on} {}", cron_dow(dow)),
        // Vixie cron: either day field may match.
        (true, true) => format!("{on} {} or on {}", cron_dom(dom), cron_dow(dow)),
    };
    let months = if restricted(month) {
        let words = items(month, &CRON_MONTHS, 1)
            .and_then(|i| named(&i, &month_name, "month"))
            .unwrap_or_else(|| format!("month `{month}`"));
        format!(", in {words}")
    } else {
        String::new()
    };
    format!("{time}{days}{months}")
}

/// The time of day, and whether it is a short list of plain times (`At 09:00 and 17:30`).
fn cron_time(minute: &str, hour: &str) -> (String, bool) {
    let ms = items(minute, &[], 0);
    let hs = items(hour, &[], 0);
    let (Some(ms), Some(hs)) = (ms, hs) else {
        return (format!("At minute `{minute}` of hour `{hour}`"), false);
    };
    if let (Some(mv), Some(hv)) = (values(&ms), values(&hs))
        && mv.len() * hv.len() <= 8
    {
        let mut times: Vec<(u32, u32)> = hv
            .iter()
            .flat_map(|h| mv.iter().map(move |m| (*h, *m)))
            .collect();
        times.sort_unstable();
        let shown: Vec<String> = times
            .iter()
            .map(|(h, m)| format!("{h:02}:{m:02}"))
            .collect();
        return (format!("At {}", and_list(&shown)), true);
    }
    let plain = |v: u32| v.to_string();
    let two = |v: u32| format!("{v:02}");
    let minute_words = match ms.as_slice() {
        [Item::Any] => "Every minute".to_owned(),
        _ if values(&ms).is_some() => format!("At {}", numeric(&ms, "minute", &plain)),
        _ => capitalize(&numeric(&ms, "minute", &plain)),
    };
    let hour_words = match hs.as_slice() {
        [Item::Any] if values(&ms).is_some() => " of every hour".to_owned(),
        [Item::Any] => String::new(),
        [Item::Step(None, None, s)] => format!(", every {s} hours"),
        _ => format!(", in {}", numeric(&hs, "hour", &two)),
    };
    (format!("{minute_words}{hour_words}"), false)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn cron_dom(field: &str) -> String {
    let mut specials = vec![];
    let mut plain = vec![];
    for part in field.split(',') {
        let upper = part.to_ascii_uppercase();
        if upper == "L" {
            specials.push("the last day of the month".to_owned());
        } else if upper == "LW" {
            specials.push("the last weekday of the month".to_owned());
        } else if let Some(day) = upper.strip_suffix('W').and_then(|d| d.parse::<u32>().ok()) {
            specials.push(format!("the weekday nearest day {day} of the month"));
        } else {
            plain.push(part);
        }
    }
    let mut parts = vec![];
    if !plain.is_empty() {
        let joined = plain.join(",");
        parts.push(match items(&joined, &[], 0) {
            Some(i) => format!("{} of the month", numeric(&i, "day", &|v| v.to_string())),
            None => format!("day-of-month `{joined}`"),
        });
    }
    parts.extend(specials);
    and_list(&parts)
}

fn cron_dow(field: &str) -> String {
    let mut parts = vec![];
    let mut plain = vec![];
    for part in field.split(',') {
        let upper = part.to_ascii_uppercase();
        if let Some((d, n)) = upper.split_once('#')
            && let (Some(d), Ok(n)) = (value(d, &CRON_WEEKDAYS, 0), n.parse::<i32>())
            && let Some(name) = weekday_name(d)
        {
            parts.push(format!("the {} {name} of the month", ordinal(n)));
        } else if let Some(d) = upper
            .strip_suffix('L')
            .and_then(|d| value(d, &CRON_WEEKDAYS, 0))
            && let Some(name) = weekday_name(d)
        {
            parts.push(format!("the last {name} of the month"));
        } else {
            plain.push(part);
        }
    }
    if !plain.is_empty() {
        let joined = plain.join(",");
        let words = items(&joined, &CRON_WEEKDAYS, 0)
            .and_then(|i| named(&i, &weekday_name, "day"))
            .unwrap_or_else(|| format!("day-of-week `{joined}`"));
        parts.insert(0, words);
    }
    and_list(&parts)
}

fn weekday_of(w: Weekday) -> &'static str {
    weekday_name(w.num_days_from_sunday()).unwrap_or("?")
}

fn by_day_words(by_day: &[String]) -> String {
    let parts: Vec<String> = by_day
        .iter()
        .map(|d| {
            let d = d.trim().to_ascii_uppercase();
            let split = d.len().saturating_sub(2);
            let (n, day) = d.split_at(split);
            let name = ["SU", "MO", "TU", "WE", "TH", "FR", "SA"]
                .iter()
                .position(|x| *x == day)
                .and_then(|i| WEEKDAYS.get(i))
                .copied()
                .unwrap_or(day);
            match n.parse::<i32>() {
                Ok(n) => format!("the {} {name}", ordinal(n)),
                Err(_) => name.to_owned(),
            }
        })
        .collect();
    and_list(&parts)
}

fn month_day_words(days: &[i32]) -> String {
    let parts: Vec<String> = days
        .iter()
        .map(|d| match *d {
            -1 => "the last day".to_owned(),
            d if d < 0 => format!("the {} day", ordinal(d)),
            d => format!("day {d}"),
        })
        .collect();
    and_list(&parts)
}

/// A calendar pattern in words; defaults come from `start` (the start's wall-clock time), as
/// the engine takes them.
pub fn pattern(p: &PatternSpec, start: NaiveDateTime) -> String {
    let n = p.interval.unwrap_or(1);
    let period = match p.frequency {
        Frequency::Daily => "day",
        Frequency::Weekly => "week",
        Frequency::Monthly => "month",
        Frequency::Yearly => "year",
    };
    let mut s = if n == 1 {
        format!("Every {period}")
    } else {
        format!("Every {n} {period}s")
    };
    let months: Vec<u32> = match (p.frequency, p.by_month.is_empty()) {
        (Frequency::Yearly, true) => vec![start.month()],
        _ => p.by_month.clone(),
    };
    if !months.is_empty() {
        let names: Vec<String> = months
            .iter()
            .filter_map(|m| month_name(*m))
            .map(String::from)
            .collect();
        s.push_str(&format!(" in {}", and_list(&names)));
    }
    let month_days = match p.frequency {
        Frequency::Monthly | Frequency::Yearly
            if p.by_day.is_empty() && p.by_month_day.is_empty() =>
        {
            i32::try_from(start.day())
                .map(|d| vec![d])
                .unwrap_or_default()
        }
        _ => p.by_month_day.clone(),
    };
    let by_day = if p.frequency == Frequency::Weekly && p.by_day.is_empty() {
        weekday_of(start.weekday()).to_owned()
    } else {
        by_day_words(&p.by_day)
    };
    match (month_days.is_empty(), by_day.is_empty()) {
        (true, true) => {}
        (false, true) => s.push_str(&format!(" on {}", month_day_words(&month_days))),
        (true, false) if p.frequency == Frequency::Daily => {
            s.push_str(&format!(", only on {by_day}"));
        }
        (true, false) => s.push_str(&format!(" on {by_day}")),
        (false, false) => s.push_str(&format!(
            " on {}, when it is {by_day}",
            month_day_words(&month_days)
        )),
    }
    let times: Vec<String> = if p.at_times.is_empty() {
        vec![format!("{:02}:{:02}", start.hour(), start.minute())]
    } else {
        p.at_times.iter().map(|t| t.trim().to_owned()).collect()
    };
    s.push_str(&format!(" at {}", and_list(&times)));
    if month_days.iter().any(|d| d.abs() > 28) {
        s.push_str(" (months without that day are skipped)");
    }
    if n > 1 {
        s.push_str(&format!(
            " (counted from the {period} of {})",
            start.format("%Y-%m-%d")
        ));
    }
    s
}

/// An RFC 5545 rule: its frequency in words, the rest quoted.
pub fn rrule(text: &str, start: NaiveDateTime) -> String {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let rule = lines.next().unwrap_or_default();
    let rule = rule.strip_prefix("RRULE:").unwrap_or(rule);
    let exdates = lines
        .filter(|l| l.to_ascii_uppercase().starts_with("EXDATE"))
        .count();
    let part = |key: &str| {
        rule.split(';').find_map(|kv| {
            kv.split_once('=')
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case(key))
                .map(|(_, v)| v.trim().to_owned())
        })
    };
    let period = match part("FREQ").map(|f| f.to_ascii_uppercase()).as_deref() {
        Some("SECONDLY") => "second",
        Some("MINUTELY") => "minute",
        Some("HOURLY") => "hour",
        Some("DAILY") => "day",
        Some("WEEKLY") => "week",
        Some("MONTHLY") => "month",
        _ => "year",
    };
    let every = match part("INTERVAL").and_then(|i| i.parse::<u32>().ok()) {
        Some(n) if n > 1 => format!("Every {n} {period}s"),
        _ => format!("Every {period}"),
    };
    let mut s = format!("{every}, by the RFC 5545 rule `{rule}`");
    if part("BYHOUR").is_none() && part("BYMINUTE").is_none() {
        s.push_str(&format!(
            ", at the start's time of day ({:02}:{:02})",
            start.hour(),
            start.minute()
        ));
    }
    if exdates > 0 {
        s.push_str(&format!(
            "; {exdates} EXDATE line{} exclude{} dates",
            if exdates == 1 { "" } else { "s" },
            if exdates == 1 { "s" } else { "" }
        ));
    }
    s
}

/// The end a rule sets itself (`COUNT`, `UNTIL`), quoted.
pub fn rrule_end(text: &str) -> Option<String> {
    let rule = text.lines().next()?.trim();
    rule.split(';')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| {
            let k = k.trim().trim_start_matches("RRULE:");
            k.eq_ignore_ascii_case("COUNT") || k.eq_ignore_ascii_case("UNTIL")
        })
        .map(|(k, v)| format!("as the rule says: {}={}", k.trim_start_matches("RRULE:"), v))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn cron_in_words() {
        for (expr, words) in [
            ("30 2 * * *", "At 02:30 every day"),
            ("0 9 * * MON-FRI", "At 09:00 on Monday through Friday"),
            (
                "0 9,17 * * 1,3",
                "At 09:00 and 17:00 on Monday and Wednesday",
            ),
            (
                "*/15 9-17 * * 1-5",
                "Every 15 minutes, in hours 09 through 17, on Monday through Friday",
            ),
            ("0 */2 * * *", "At minute 0, every 2 hours"),
            ("5 * * * *", "At minute 5 of every hour"),
            ("0,30 * * * *", "At minutes 0 and 30 of every hour"),
            ("* * * * *", "Every minute"),
            ("0 0 L * *", "At 00:00 on the last day of the month"),
            ("0 0 1,15 * *", "At 00:00 on days 1 and 15 of the month"),
            ("0 12 1 1 *", "At 12:00 on day 1 of the month, in January"),
            ("0 8 1 * MON", "At 08:00 on day 1 of the month or on Monday"),
            ("0 18 * * 5L", "At 18:00 on the last Friday of the month"),
            ("0 9 * * 1#2", "At 09:00 on the second Monday of the month"),
            (
                "0 9 15W * *",
                "At 09:00 on the weekday nearest day 15 of the month",
            ),
            (
                "0 9 * JUN-AUG 0,6",
                "At 09:00 on Sunday and Saturday, in June through August",
            ),
            ("@daily", "At 00:00 every day"),
            ("@HOURLY", "At minute 0 of every hour"),
        ] {
            assert_eq!(cron(expr), words, "{expr}");
        }
    }

    fn start() -> NaiveDateTime {
        // A Wednesday.
        "2026-01-07T08:15:00".parse().unwrap()
    }

    fn p(frequency: Frequency) -> PatternSpec {
        PatternSpec {
            frequency,
            ..PatternSpec::default()
        }
    }

    #[test]
    fn patterns_in_words_with_the_start_s_defaults() {
        assert_eq!(pattern(&p(Frequency::Daily), start()), "Every day at 08:15");
        assert_eq!(
            pattern(&p(Frequency::Weekly), start()),
            "Every week on Wednesday at 08:15"
        );
        let mut weekly = p(Frequency::Weekly);
        weekly.by_day = vec!["MO".into(), "WE".into()];
        weekly.at_times = vec!["09:00".into(), "17:30".into()];
        assert_eq!(
            pattern(&weekly, start()),
            "Every week on Monday and Wednesday at 09:00 and 17:30"
        );
        let mut monthly = p(Frequency::Monthly);
        monthly.by_day = vec!["-1FR".into()];
        monthly.at_times = vec!["18:00".into()];
        assert_eq!(
            pattern(&monthly, start()),
            "Every month on the last Friday at 18:00"
        );
        let mut last = p(Frequency::Monthly);
        last.by_month_day = vec![-1, 31];
        last.interval = Some(2);
        assert_eq!(
            pattern(&last, start()),
            "Every 2 months on the last day and day 31 at 08:15 (months without that day are skipped) (counted from the month of 2026-01-07)"
        );
        assert_eq!(
            pattern(&p(Frequency::Yearly), start()),
            "Every year in January on day 7 at 08:15"
        );
        let mut daily = p(Frequency::Daily);
        daily.by_day = vec!["SA".into(), "SU".into()];
        assert_eq!(
            pattern(&daily, start()),
            "Every day, only on Saturday and Sunday at 08:15"
        );
        let mut friday13 = p(Frequency::Monthly);
        friday13.by_day = vec!["FR".into()];
        friday13.by_month_day = vec![13];
        assert_eq!(
            pattern(&friday13, start()),
            "Every month on day 13, when it is Friday at 08:15"
        );
    }

    #[test]
    fn rrules_in_words() {
        assert_eq!(
            rrule(
                "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1\nEXDATE:20261224T090000Z",
                start()
            ),
            "Every month, by the RFC 5545 rule `FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1`, at the start's time of day (08:15); 1 EXDATE line excludes dates"
        );
        assert_eq!(
            rrule(
                "RRULE:FREQ=WEEKLY;INTERVAL=2;BYHOUR=9;BYMINUTE=0;COUNT=4",
                start()
            ),
            "Every 2 weeks, by the RFC 5545 rule `FREQ=WEEKLY;INTERVAL=2;BYHOUR=9;BYMINUTE=0;COUNT=4`"
        );
        assert_eq!(
            rrule_end("RRULE:FREQ=WEEKLY;COUNT=4").as_deref(),
            Some("as the rule says: COUNT=4")
        );
        assert_eq!(rrule_end("FREQ=DAILY"), None);
    }
}
