//! The schedule as users write it (embedded in the `RecurringTask` CRD). The schema constraints
//! here catch the simple mistakes at `kubectl apply`; everything else is checked by
//! [`super::Schedule::compile`], which names the field in its error.
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::DURATION_PATTERN;

/// IANA zone names: `Europe/Berlin`, `America/Argentina/Buenos_Aires`, `UTC`, `Etc/GMT+5`.
pub const ZONE_PATTERN: &str = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$";
/// `byDay` entries: a weekday, optionally preceded by an ordinal (1..5 or -1..-5).
pub const BY_DAY_PATTERN: &str = r"^([+-]?[1-5])?(MO|TU|WE|TH|FR|SA|SU)$";
/// `atTimes` entries: 24-hour `HH:MM`.
pub const AT_TIME_PATTERN: &str = r"^([01][0-9]|2[0-3]):[0-5][0-9]$";

/// When a task recurs. Set exactly one of `cron`, `pattern`, `rrule` or `every`; the optional
/// fields bound and shift the occurrences.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// A 5-field cron expression (minute hour day-of-month month day-of-week) as Kubernetes
    /// CronJob accepts it, for example `30 2 * * *` or `0 9 * * MON-FRI`; also `@hourly`,
    /// `@daily` (`@midnight`), `@weekly`, `@monthly`, `@yearly` (`@annually`), `L` (last day of
    /// month, `5L` last Friday), `15W` (nearest weekday) and `1#2` (second Monday). When both
    /// day-of-month and day-of-week are restricted, a day matching either fires. Evaluated in
    /// `timeZone`; do not prefix `CRON_TZ=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub cron: Option<String>,

    /// A calendar pattern: every `interval` days, weeks, months or years, on the given days, at
    /// the given times of day in `timeZone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<Box<PatternSpec>>,

    /// An RFC 5545 recurrence rule, for example `FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1`,
    /// with or without the `RRULE:` prefix, optionally followed by `EXDATE` lines (one per line:
    /// `EXDATE:20261224T090000Z`, `EXDATE;TZID=Europe/Berlin:20261224T090000`, or floating times
    /// read in `timeZone`). Wall-clock times come from `startAt` in `timeZone`; do not add a
    /// `DTSTART` line. `UNTIL` and `COUNT` work as in RFC 5545 but cannot be combined with
    /// `endAt` or `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub rrule: Option<String>,

    /// A fixed interval between occurrences, counted in elapsed time from `startAt` (or from
    /// when the task was created) and unaffected by daylight saving time: `90m`, `6h`, `1h30m`,
    /// `30s`, or ISO 8601 `PT90M`, `P1D`. At least one second, at most 3650 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(min = 1, max = 32))]
    pub every: Option<String>,

    /// The IANA time zone the schedule's wall-clock times are read in, for example
    /// `Europe/Berlin`. Default `UTC`. A time skipped by a daylight-saving change happens at the
    /// same offset as before the change (02:30 becomes 03:30); a repeated time happens once, the
    /// first time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = ZONE_PATTERN), length(min = 1, max = 64))]
    pub time_zone: Option<String>,

    /// No occurrence before this instant (RFC 3339). It also sets the phase of `every` and the
    /// defaults of `pattern` (weekday, day of month, month and time of day, read in `timeZone`).
    /// Default: when the task was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<DateTime<Utc>>,

    /// No occurrence after this instant (RFC 3339). Cannot be combined with `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<DateTime<Utc>>,

    /// The total number of occurrences, counted from `startAt` (1 to 100000); after the last
    /// one the task is finished. Cannot be combined with `endAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub count: Option<u32>,

    /// Spread load: each occurrence is delayed by a fixed pseudo-random amount below this
    /// duration (at most `24h`, and shorter than the time between two occurrences), the same
    /// for a given task and occurrence on every replica and restart. For example `2m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(min = 1, max = 32))]
    pub jitter: Option<String>,
}

/// A calendar pattern, in the spirit of RFC 5545 but with fewer ways to go wrong.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PatternSpec {
    /// The period: `DAILY`, `WEEKLY` (weeks start on Monday), `MONTHLY` or `YEARLY`.
    pub frequency: Frequency,

    /// Every how many periods, counted from the period of `startAt`. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub interval: Option<u32>,

    /// Weekdays: `MO`, `TU`, `WE`, `TH`, `FR`, `SA`, `SU`. With `MONTHLY` or `YEARLY` an
    /// ordinal may precede: `1MO` the first Monday, `-1FR` the last Friday of the month. With
    /// `DAILY` it keeps only those weekdays. Default for `WEEKLY`: the weekday of `startAt`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 35), inner(regex(pattern = BY_DAY_PATTERN)))]
    pub by_day: Vec<String>,

    /// Days of the month, 1 to 31, or -1 (the last day) to -31. Months without that day are
    /// skipped. Not with `WEEKLY`. With `byDay` too, a day must match both. Default for
    /// `MONTHLY` and `YEARLY` without `byDay`: the day of month of `startAt`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 62), inner(range(min = -31, max = 31)))]
    pub by_month_day: Vec<i32>,

    /// Months, 1 to 12 (`YEARLY` only). Default: the month of `startAt`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 12), inner(range(min = 1, max = 12)))]
    pub by_month: Vec<u32>,

    /// Times of day, `HH:MM` (24-hour), in `timeZone`. Default: the time of day of `startAt`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 96), inner(regex(pattern = AT_TIME_PATTERN)))]
    pub at_times: Vec<String>,
}

/// The period of a [`PatternSpec`].
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum Frequency {
    /// Every day (or every `interval` days).
    #[default]
    Daily,
    /// Every week, Monday to Sunday.
    Weekly,
    /// Every month.
    Monthly,
    /// Every year.
    Yearly,
}

impl Frequency {
    /// The name as written in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Frequency::Daily => "DAILY",
            Frequency::Weekly => "WEEKLY",
            Frequency::Monthly => "MONTHLY",
            Frequency::Yearly => "YEARLY",
        }
    }
}

impl std::str::FromStr for Frequency {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "DAILY" => Ok(Frequency::Daily),
            "WEEKLY" => Ok(Frequency::Weekly),
            "MONTHLY" => Ok(Frequency::Monthly),
            "YEARLY" => Ok(Frequency::Yearly),
            other => Err(format!(
                "unknown frequency {other:?} (expected DAILY, WEEKLY, MONTHLY or YEARLY)"
            )),
        }
    }
}
