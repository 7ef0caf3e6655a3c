//! 5-field cron, checked field by field here (so errors are ours and name the field), then
//! normalized to plain numbers and handed to croner, which evaluates it on naive wall-clock time.
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use chrono::NaiveDateTime;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// Longest cron text accepted.
const MAX_LEN: usize = 256;

const FIELDS: &str = "minute hour day-of-month month day-of-week";

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
/// The most days each month can have (February: leap years).
const MONTH_MAX_DAYS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Field {
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

impl Field {
    const ALL: [Field; 5] = [
        Field::Minute,
        Field::Hour,
        Field::DayOfMonth,
        Field::Month,
        Field::DayOfWeek,
    ];

    fn name(self) -> &'static str {
        match self {
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day-of-month",
            Field::Month => "month",
            Field::DayOfWeek => "day-of-week",
        }
    }

    fn range(self) -> (u32, u32) {
        match self {
            Field::Minute => (0, 59),
            Field::Hour => (0, 23),
            Field::DayOfMonth => (1, 31),
            Field::Month => (1, 12),
            Field::DayOfWeek => (0, 7),
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            Field::Month => &MONTHS,
            Field::DayOfWeek => &WEEKDAYS,
            _ => &[],
        }
    }
}

/// One field after checking: whether it is a wildcard (for the day-of-month/day-of-week OR
/// rule), the numeric text for croner, and the plain values it can take (for the never-fires
/// check; `L`/`W`/`#` forms are recorded as `special`).
struct Parsed {
    star: bool,
    text: String,
    values: Vec<u32>,
    special: bool,
}

/// A checked cron expression.
#[derive(Clone, Debug)]
pub struct CronRule {
    cron: Arc<Cron>,
    /// The expression as written (trimmed), for summaries.
    pub text: String,
}

impl CronRule {
    /// Parses and checks `expr`; the error is a message without the field prefix.
    pub fn parse(expr: &str) -> Result<CronRule, String> {
        Self::parse_with(expr, &PARSED)
    }

    /// [`CronRule::parse`] sharing croner's parses through `croned`.
    fn parse_with(expr: &str, croned: &Croned) -> Result<CronRule, String> {
        let text = expr.trim();
        if text.is_empty() {
            return Err(
                "empty expression (expected 5 fields: minute hour day-of-month month day-of-week)"
                    .into(),
            );
        }
        if text.len() > MAX_LEN {
            return Err(format!(
                "expression is too long ({} characters, at most {MAX_LEN})",
                text.len()
            ));
        }
        let upper = text.to_ascii_uppercase();
        if upper.starts_with("CRON_TZ=") || upper.starts_with("TZ=") {
            return Err(
                "time zone prefixes (CRON_TZ=, TZ=) are not supported: set timeZone instead".into(),
            );
        }
        let expanded = if upper.starts_with('@') {
            alias(&upper)?
        } else {
            upper.as_str()
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            let hint = match parts.len() {
                6 => ": a seconds field is not supported (the finest resolution is one minute)",
                7 => ": seconds and year fields are not supported",
                _ => "",
            };
            return Err(format!(
                "expected 5 fields ({FIELDS}), got {}{hint}",
                parts.len()
            ));
        }
        let mut parsed = Vec::with_capacity(5);
        for (field, part) in Field::ALL.into_iter().zip(&parts) {
            parsed.push(parse_field(field, part)?);
        }
        check_possible(&parsed[2], &parsed[3], &parsed[4])?;
        let normalized: Vec<&str> = parsed.iter().map(|p| p.text.as_str()).collect();
        let cron = croned
            .get_or_parse(normalized.join(" "))
            .map_err(|e| format!("cannot evaluate {text:?}: {e}"))?;
        Ok(CronRule {
            cron,
            text: text.to_string(),
        })
    }

    /// The first matching wall-clock minute strictly after `t`, or `None` (croner gives up past
    /// year 5000).
    pub fn next_after(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        self.cron.find_next_occurrence(&t, false).ok()
    }
}

/// Expressions croner has parsed, shared by every schedule that uses one. A reconcile compiles
/// its task's schedule each time, and croner's pattern of any expression holds a table of
/// the years 1 to 5000, filled one entry at a time (about 5 KB and 5,000 steps a parse).
static PARSED: LazyLock<Croned> = LazyLock::new(Croned::default);

/// At most this many expressions are kept (about 1.4 MiB).
const PARSED_MAX: usize = 256;

#[derive(Default)]
struct Croned {
    inner: Mutex<CronedInner>,
}

#[derive(Default)]
struct CronedInner {
    /// Each expression's parse and the tick of its last use.
    by_text: HashMap<String, (Arc<Cron>, u64)>,
    tick: u64,
}

impl Croned {
    /// croner's pattern of `normalized` (plain numbers, checked by us), parsed once.
    fn get_or_parse(&self, normalized: String) -> Result<Arc<Cron>, croner::errors::CronError> {
        // A panic elsewhere cannot leave the map half-written: every update is one operation.
        let lock = || self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cron) = lock().used(&normalized) {
            return Ok(cron);
        }
        // Parsed outside the lock; two threads parsing the same text keep the first.
        let cron = Arc::new(
            CronParser::builder()
                .seconds(Seconds::Disallowed)
                .year(Year::Disallowed)
                .build()
                .parse(&normalized)?,
        );
        let mut inner = lock();
        if let Some(first) = inner.used(&normalized) {
            return Ok(first);
        }
        if inner.by_text.len() >= PARSED_MAX {
            // The least recently used goes: one-off expressions (a tenant's many, or the
            // webhook's checks) do not push out the ones every reconcile compiles.
            let oldest = inner
                .by_text
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(text, _)| text.clone());
            if let Some(oldest) = oldest {
                inner.by_text.remove(&oldest);
            }
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.by_text.insert(normalized, (Arc::clone(&cron), tick));
        Ok(cron)
    }
}

impl CronedInner {
    /// The parse of `text`, if kept, marked as used now.
    fn used(&mut self, text: &str) -> Option<Arc<Cron>> {
        self.tick += 1;
        let tick = self.tick;
        let (cron, used) = self.by_text.get_mut(text)?;
        *used = tick;
        Some(Arc::clone(cron))
    }
}

fn alias(upper: &str) -> Result<&'static str, String> {
    Ok(match upper {
        "@YEARLY" | "@ANNUALLY" => "0 0 1 1 *",
        "@MONTHLY" => "0 0 1 * *",
        "@WEEKLY" => "0 0 * * 0",
        "@DAILY" | "@MIDNIGHT" => "0 0 * * *",
        "@HOURLY" => "0 * * * *",
        other if other.starts_with("@EVERY") => {
            return Err(
                "@every is not supported here: use the every field (for example every: 90m)".into(),
            );
        }
        other => {
            return Err(format!(
                "unknown alias {:?} (known: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly)",
                other.to_ascii_lowercase()
            ));
        }
    })
}

fn parse_field(field: Field, part: &str) -> Result<Parsed, String> {
    let mut star = false;
    let mut special = false;
    let mut texts = Vec::new();
    let mut values = Vec::new();
    for item in part.split(',') {
        if item.is_empty() {
            return Err(format!(
                "{} field {part:?} has an empty list item",
                field.name()
            ));
        }
        let (text, item_star, item_values, item_special) = parse_item(field, item)?;
        star |= item_star;
        special |= item_special;
        texts.push(text);
        values.extend(item_values);
    }
    let text = if star {
        "*".to_string()
    } else {
        texts.join(",")
    };
    Ok(Parsed {
        star,
        text,
        values,
        special,
    })
}

/// One list item: (croner text, is a wildcard, values, is an L/W/# form).
fn parse_item(field: Field, item: &str) -> Result<(String, bool, Vec<u32>, bool), String> {
    let name = field.name();
    let (min, max) = field.range();
    // Day-of-month specials: L, LW, NW.
    if field == Field::DayOfMonth {
        if item == "L" || item == "LW" {
            return Ok((item.to_string(), false, Vec::new(), true));
        }
        if let Some(day) = item.strip_suffix('W') {
            let d = value(field, day)?;
            return Ok((format!("{d}W"), false, vec![d], true));
        }
        if item.starts_with('L') {
            return Err(format!(
                "{name} {item:?} is not supported (use L for the last day, or LW)"
            ));
        }
    }
    // Day-of-week specials: NL (last N-day of the month), N#k (k-th N-day).
    if field == Field::DayOfWeek {
        if item == "L" {
            return Err(format!(
                "{name} \"L\" alone is ambiguous: write 5L for the last Friday, 0L for the last Sunday"
            ));
        }
        if let Some(day) = item.strip_suffix('L') {
            let d = value(field, day)?;
            return Ok((format!("{d}L"), false, vec![d], true));
        }
        if let Some((day, nth)) = item.split_once('#') {
            let d = value(field, day)?;
            let n: u32 = nth
                .parse()
                .map_err(|_| format!("{name} {item:?}: expected N#k with k from 1 to 5"))?;
            if !(1..=5).contains(&n) {
                return Err(format!(
                    "{name} {item:?}: occurrence {n} is out of range 1-5"
                ));
            }
            return Ok((format!("{d}#{n}"), false, vec![d], true));
        }
    }
    let (base, step) = match item.split_once('/') {
        Some((b, s)) => {
            let step: u32 = s
                .parse()
                .map_err(|_| format!("{name} step {s:?} in {item:?} is not a number"))?;
            if step == 0 {
                return Err(format!("{name} step in {item:?} must be at least 1"));
            }
            if step > max {
                return Err(format!(
                    "{name} step {step} in {item:?} is larger than the range {min}-{max}"
                ));
            }
            (b, Some(step))
        }
        None => (item, None),
    };
    let wildcard =
        base == "*" || (base == "?" && matches!(field, Field::DayOfMonth | Field::DayOfWeek));
    if base == "?" && !wildcard {
        return Err(format!(
            "{name} does not accept \"?\" (only day-of-month and day-of-week do)"
        ));
    }
    let (lo, hi, text_base) = if wildcard {
        (min, max, "*".to_string())
    } else if let Some((a, b)) = base.split_once('-') {
        let (a, b) = (value(field, a)?, value(field, b)?);
        if a > b {
            return Err(format!("{name} range {base:?} is backwards ({a} > {b})"));
        }
        (a, b, format!("{a}-{b}"))
    } else {
        let a = value(field, base)?;
        match step {
            // `N/step` means `N-max/step` (as in Kubernetes); croner wants it spelled out.
            Some(_) => (a, max, format!("{a}-{max}")),
            None => (a, a, a.to_string()),
        }
    };
    let step_v = step.unwrap_or(1);
    let values: Vec<u32> = (lo..=hi).step_by(step_v as usize).collect();
    // Kubernetes (robfig/cron) treats `*` and `*/1` as a wildcard, `*/2` as a restriction.
    let star = wildcard && step_v == 1;
    let text = match step {
        Some(s) => format!("{text_base}/{s}"),
        None => text_base,
    };
    Ok((text, star, values, false))
}

/// A number or (for month and day-of-week) a three-letter name, within the field's range.
fn value(field: Field, s: &str) -> Result<u32, String> {
    let (min, max) = field.range();
    let name = field.name();
    if let Some(i) = field.names().iter().position(|n| *n == s) {
        let i = u32::try_from(i).unwrap_or(0);
        return Ok(if field == Field::Month { i + 1 } else { i });
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        let hint = match field {
            Field::Month => " (use 1-12 or JAN-DEC)",
            Field::DayOfWeek => " (use 0-7 or SUN-SAT)",
            _ => "",
        };
        return Err(format!("{name} value {s:?} is not a number{hint}"));
    }
    let v: u64 = s.parse().unwrap_or(u64::MAX);
    if v < u64::from(min) || v > u64::from(max) {
        let shown = if s.len() > 12 {
            format!("{}...", &s[..12])
        } else {
            s.to_string()
        };
        return Err(format!("{name} value {shown} is out of range {min}-{max}"));
    }
    Ok(u32::try_from(v).unwrap_or(0))
}

/// Refuses expressions that can never match, such as `0 0 30 2 *`: only possible when the day of
/// month is restricted, the weekday is not (otherwise the OR rule lets weekdays through), and no
/// listed day exists in any listed month.
fn check_possible(dom: &Parsed, month: &Parsed, dow: &Parsed) -> Result<(), String> {
    if dom.star || !dow.star || dom.text.contains('L') {
        return Ok(());
    }
    let fits = dom.values.iter().any(|d| {
        month.values.iter().any(|m| {
            MONTH_MAX_DAYS
                .get(*m as usize - 1)
                .is_some_and(|max| d <= max)
        })
    });
    if fits || (dom.values.is_empty() && dom.special) {
        return Ok(());
    }
    Err("the schedule never fires: no listed day of the month exists in the listed months".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn err(expr: &str) -> String {
        CronRule::parse(expr).unwrap_err()
    }

    fn next_n(expr: &str, from: &str, n: usize) -> Vec<String> {
        let rule = CronRule::parse(expr).unwrap();
        let mut t = NaiveDateTime::parse_from_str(from, "%Y-%m-%d %H:%M").unwrap();
        (0..n)
            .map(|_| {
                t = rule.next_after(t).unwrap();
                t.format("%Y-%m-%d %H:%M %a").to_string()
            })
            .collect()
    }

    /// Every schedule of one expression shares croner's parse, whatever its spelling (names or
    /// numbers, an alias), and still evaluates as its own.
    #[test]
    fn one_expression_is_parsed_once() {
        // A map of its own: the shared one may drop any entry while other tests run.
        let croned = Croned::default();
        let parse = |expr| CronRule::parse_with(expr, &croned).unwrap();
        let (a, b) = (parse("0 9 * * MON"), parse(" 0 9 * * 1 "));
        assert!(Arc::ptr_eq(&a.cron, &b.cron));
        assert_eq!(
            (a.text.as_str(), b.text.as_str()),
            ("0 9 * * MON", "0 9 * * 1")
        );
        let daily = parse("@daily");
        assert!(Arc::ptr_eq(&daily.cron, &parse("0 0 * * *").cron));
        assert!(!Arc::ptr_eq(&a.cron, &daily.cron));
        let monday = NaiveDateTime::parse_from_str("2026-12-07 09:00", "%Y-%m-%d %H:%M").unwrap();
        let from = NaiveDateTime::parse_from_str("2026-12-01 00:00", "%Y-%m-%d %H:%M").unwrap();
        assert_eq!(b.next_after(from), Some(monday));
        assert_eq!(
            daily.next_after(monday),
            Some(
                monday
                    .date()
                    .succ_opt()
                    .unwrap()
                    .and_hms_opt(0, 0, 0)
                    .unwrap()
            )
        );
    }

    /// However many expressions are seen, at most PARSED_MAX are kept: the least recently
    /// used go, so one in use all along stays through 1,440 one-off ones.
    #[test]
    fn the_parsed_expressions_stay_bounded_and_the_used_ones_stay() {
        let croned = Croned::default();
        let hot = croned.get_or_parse("0 9 * * 1".into()).unwrap();
        for m in 0..60 {
            for h in 0..24 {
                croned.get_or_parse(format!("{m} {h} * * *")).unwrap();
                let again = croned.get_or_parse("0 9 * * 1".into()).unwrap();
                assert!(Arc::ptr_eq(&hot, &again), "{m} {h}");
            }
        }
        let inner = croned.inner.lock().unwrap();
        assert_eq!(inner.by_text.len(), PARSED_MAX);
        assert!(inner.by_text.contains_key("59 23 * * *"));
        assert!(!inner.by_text.contains_key("0 0 * * *"));
    }

    #[test]
    fn field_messages() {
        assert_eq!(err("0 0 * * 8"), "day-of-week value 8 is out of range 0-7");
        assert_eq!(err("60 * * * *"), "minute value 60 is out of range 0-59");
        assert_eq!(err("0 24 * * *"), "hour value 24 is out of range 0-23");
        assert_eq!(
            err("0 0 0 * *"),
            "day-of-month value 0 is out of range 1-31"
        );
        assert_eq!(err("0 0 * 13 *"), "month value 13 is out of range 1-12");
        assert_eq!(
            err("0 0 0 * * *"),
            "expected 5 fields (minute hour day-of-month month day-of-week), got 6: a seconds field is not supported (the finest resolution is one minute)"
        );
        assert_eq!(
            err("0 0 *"),
            "expected 5 fields (minute hour day-of-month month day-of-week), got 3"
        );
        assert!(err("CRON_TZ=Europe/Berlin 0 0 * * *").contains("set timeZone instead"));
        assert!(err("TZ=UTC 0 0 * * *").contains("set timeZone instead"));
        assert_eq!(
            err("*/0 * * * *"),
            "minute step in \"*/0\" must be at least 1"
        );
        assert_eq!(
            err("0 0 * * 5-1"),
            "day-of-week range \"5-1\" is backwards (5 > 1)"
        );
        assert_eq!(
            err("0 0 * FOO *"),
            "month value \"FOO\" is not a number (use 1-12 or JAN-DEC)"
        );
        assert_eq!(
            err("0 0 * * 1,,2"),
            "day-of-week field \"1,,2\" has an empty list item"
        );
        assert!(err("@every 1h").contains("use the every field"));
        assert!(err("@fortnightly").contains("unknown alias \"@fortnightly\""));
        assert!(err("0 0 * * L").contains("5L"));
        assert!(err("0 ? * * *").contains("does not accept"));
        assert!(err("99999999999999999999 * * * *").contains("out of range 0-59"));
        assert!(err(&"* ".repeat(1 << 19)).contains("too long"));
        assert!(err("").contains("empty"));
    }

    #[test]
    fn never_fires() {
        assert!(err("0 0 30 2 *").contains("never fires"));
        assert!(err("0 0 31 4,6,9,11 *").contains("never fires"));
        assert!(err("0 0 30W 2 *").contains("never fires"));
        // With a weekday the OR rule makes it fire on Mondays.
        assert!(CronRule::parse("0 0 30 2 1").is_ok());
        assert!(CronRule::parse("0 0 29 2 *").is_ok());
    }

    #[test]
    fn names_aliases_and_sunday() {
        assert_eq!(
            next_n("0 9 * * MON-FRI", "2026-01-02 10:00", 2),
            ["2026-01-05 09:00 Mon", "2026-01-06 09:00 Tue"]
        );
        assert_eq!(
            next_n("0 0 * * 7", "2026-01-01 00:00", 1),
            ["2026-01-04 00:00 Sun"]
        );
        assert_eq!(
            next_n("0 0 * * 0", "2026-01-01 00:00", 1),
            ["2026-01-04 00:00 Sun"]
        );
        assert_eq!(
            next_n("0 0 1 jan *", "2026-01-01 00:00", 1),
            ["2027-01-01 00:00 Fri"]
        );
        assert_eq!(
            next_n("@yearly", "2026-01-01 00:00", 1),
            ["2027-01-01 00:00 Fri"]
        );
        assert_eq!(
            next_n("@annually", "2026-01-01 00:00", 1),
            ["2027-01-01 00:00 Fri"]
        );
        assert_eq!(
            next_n("@monthly", "2026-01-01 00:00", 1),
            ["2026-02-01 00:00 Sun"]
        );
        assert_eq!(
            next_n("@weekly", "2026-01-01 00:00", 1),
            ["2026-01-04 00:00 Sun"]
        );
        assert_eq!(
            next_n("@daily", "2026-01-01 00:00", 1),
            ["2026-01-02 00:00 Fri"]
        );
        assert_eq!(
            next_n("@midnight", "2026-01-01 00:00", 1),
            ["2026-01-02 00:00 Fri"]
        );
        assert_eq!(
            next_n("@hourly", "2026-01-01 00:00", 1),
            ["2026-01-01 01:00 Thu"]
        );
        assert_eq!(
            next_n("5/20 * * * *", "2026-01-01 00:00", 3),
            [
                "2026-01-01 00:05 Thu",
                "2026-01-01 00:25 Thu",
                "2026-01-01 00:45 Thu"
            ]
        );
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // Both restricted: either matches (Vixie cron, Kubernetes).
        assert_eq!(
            next_n("0 0 13 * FRI", "2026-02-01 00:00", 3),
            [
                "2026-02-06 00:00 Fri",
                "2026-02-13 00:00 Fri",
                "2026-02-20 00:00 Fri"
            ]
        );
        // `?` and `*/1` are wildcards: only the other field restricts.
        assert_eq!(
            next_n("0 0 ? * 1", "2026-01-01 00:00", 1),
            ["2026-01-05 00:00 Mon"]
        );
        assert_eq!(
            next_n("0 0 */1 * 1", "2026-01-01 00:00", 1),
            ["2026-01-05 00:00 Mon"]
        );
        // `*/2` restricts (odd days), so it is OR with Mondays.
        assert_eq!(
            next_n("0 0 */2 * 1", "2026-01-01 00:00", 3),
            [
                "2026-01-03 00:00 Sat",
                "2026-01-05 00:00 Mon",
                "2026-01-07 00:00 Wed"
            ]
        );
    }

    #[test]
    fn last_nearest_and_nth() {
        assert_eq!(
            next_n("0 0 L * *", "2026-01-01 00:00", 2),
            ["2026-01-31 00:00 Sat", "2026-02-28 00:00 Sat"]
        );
        assert_eq!(
            next_n("0 0 LW * *", "2026-01-01 00:00", 2),
            ["2026-01-30 00:00 Fri", "2026-02-27 00:00 Fri"]
        );
        assert_eq!(
            next_n("0 0 15W * *", "2026-02-01 00:00", 1),
            ["2026-02-16 00:00 Mon"]
        );
        assert_eq!(
            next_n("0 0 * * 5L", "2026-01-01 00:00", 2),
            ["2026-01-30 00:00 Fri", "2026-02-27 00:00 Fri"]
        );
        assert_eq!(
            next_n("0 0 * * MON#1", "2026-01-01 00:00", 1),
            ["2026-01-05 00:00 Mon"]
        );
        assert_eq!(
            next_n("0 0 * * 1#5", "2026-01-01 00:00", 1),
            ["2026-03-30 00:00 Mon"]
        );
        assert_eq!(
            next_n("0 0 29 2 *", "2026-01-01 00:00", 2),
            ["2028-02-29 00:00 Tue", "2032-02-29 00:00 Sun"]
        );
    }

    #[test]
    fn croner_gives_up_far_away() {
        let rule = CronRule::parse("0 0 1 1 *").unwrap();
        let t = NaiveDate::from_ymd_opt(5000, 6, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        assert_eq!(rule.next_after(t), None);
    }
}
