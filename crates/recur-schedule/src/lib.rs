//! The schedule engine: from a [`ScheduleSpec`] to the instants at which a task recurs. Pure: no
//! I/O, no clock, no Kubernetes types.
//!
//! # Kinds
//!
//! Exactly one of:
//! - `cron`: 5 fields (minute hour day-of-month month day-of-week) as Kubernetes CronJob accepts
//!   them: names (`JAN`-`DEC`, `SUN`-`SAT`), ranges, steps, lists, `*` and `?`, weekdays 0-7 (0 and
//!   7 are Sunday), `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight`,
//!   `@hourly`, and `L`, `LW`, `15W`, `5L`, `1#2`. When both day fields are restricted a day
//!   matching either fires (Vixie cron); `*` and `*/1` count as unrestricted, `*/2` does not.
//!   A seconds field, and `CRON_TZ=`/`TZ=` prefixes, are refused.
//! - `pattern`: per period (day, week starting Monday, month, year), aligned to the period of
//!   the start and taken every `interval` periods; within it the matching dates (`byMonth`,
//!   `byMonthDay`, `byDay`) at each of `atTimes`. A day that does not exist is skipped (MONTHLY on
//!   the 31st skips short months; -1 is the last day of every month). With both `byMonthDay` and
//!   `byDay`, a day must match both. Defaults come from the start: WEEKLY's weekday, MONTHLY's and
//!   YEARLY's day of month, YEARLY's month, and the time of day.
//! - `rrule`: an RFC 5545 RRULE (with or without `RRULE:`), then optional `EXDATE` lines (UTC
//!   `...Z`, `TZID=Zone` local, floating = the schedule's zone, or `VALUE=DATE` for a whole day).
//!   DTSTART is the start's wall-clock time; a `DTSTART` line is refused. `UNTIL` is an instant
//!   bound (a date means through that day); `COUNT` counts the rule's instances before `EXDATE`
//!   removes any (RFC 5545); `UNTIL` with `COUNT` is refused. The start is a bound, not an
//!   occurrence: it fires only if the rule matches it. `BYDAY` values are a union, numbered or
//!   not (`FREQ=MONTHLY;BYDAY=MO,-1FR`: every Monday and the last Friday); numbered ones need
//!   MONTHLY or YEARLY (within the month with `BYMONTH`, else the year), and not `BYWEEKNO`.
//! - `every`: start + k × interval, pure elapsed time (whole seconds, 1s to 3650 days),
//!   unaffected by DST.
//!
//! # Bounds
//!
//! Every occurrence's nominal instant is `>= startAt` (or, without it, the anchor: the task's
//! creation time), rounded up to a whole second, and `<= endAt` when set. `count` keeps the first
//! `count` occurrences from the start, then there are none. `count` with `endAt`, and a rule's own
//! `COUNT`/`UNTIL` with either, are errors. An exhausted schedule is not an error: `next_after`
//! returns `None`.
//!
//! # Time zones and DST
//!
//! Calendar kinds (cron, pattern, rrule) generate naive wall-clock times in `timeZone` (default
//! UTC), and one function (`zone::resolve`) turns each into an instant, so each nominal local
//! occurrence happens exactly once:
//! - a time in a gap (spring forward) takes the offset from before the gap, i.e. it happens as
//!   much after the transition as it was after the gap's start: Berlin 02:30 on 2026-03-29 is
//!   03:30+02:00 (RFC 5545 3.3.5);
//! - a repeated time (fall back) happens once, at its first instant;
//! - instants strictly increase, each once: a time shifted out of a gap onto the instant of
//!   another is one occurrence (a `*/15` cron on spring-forward day gives 03:00, 03:15, 03:30
//!   and 03:45 once each: 02:00-02:45 land on them). A time after the gap still happens when a
//!   shifted one passes it, first (`atTimes` 02:30 and 03:00 give 03:00, then 02:30 at 03:30).
//!   Only a day skipped whole (Pacific/Apia, 2011-12-30) makes two nominal days share one
//!   instant: it happens once.
//! - `count`, `COUNT`, bounds and `EXDATE` apply to the instants after this policy.
//!
//! `next_after(t)` gives exactly what iterating from the start gives: it replays wall-clock times
//! from 54 hours before `t` whenever the zone's offset changed in the 30 hours before `t` (gaps
//! are at most 24 hours), so it sees the times shifted from before `t` to after it.
//!
//! `occurrences_between(from, to)` returns at most 100 000 occurrences.
//!
//! # Never-firing schedules
//!
//! `compile` searches for a first occurrence within 100 years of the start (ignoring `endAt` and
//! `count`) and fails when there is none (`0 0 30 2 *`, MONTHLY on the 31st every 12 months from
//! April, an RRULE that matches nothing). Every search is bounded.
//!
//! # Jitter
//!
//! `due = nominal + j` with `j` in `[0, jitter)` milliseconds from a fixed hash (FNV-1a with a
//! splitmix64 finalizer) of the seed (the task's UID) and the nominal second: the same on every
//! replica and restart. At most 24h.
use std::collections::VecDeque;
use std::sync::OnceLock;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Timelike, Utc};
use chrono_tz::Tz;

mod cron;
mod duration;
pub mod hash;
mod jitter;
mod pattern;
mod rrule;
mod spec;
mod zone;

#[cfg(any(test, feature = "test-support"))]
pub mod props;
#[cfg(test)]
mod tests;

pub use duration::{DURATION_PATTERN, parse_duration};
pub use spec::{
    AT_TIME_PATTERN, BY_DAY_PATTERN, Frequency, PatternSpec, ScheduleSpec, ZONE_PATTERN,
};
pub use zone::parse_zone;

use cron::CronRule;
use pattern::{PatternGen, PatternRule};
use rrule::{RruleGen, RruleRule};

/// Largest `count`.
pub const MAX_COUNT: u32 = 100_000;
/// Most occurrences [`Schedule::occurrences_between`] returns.
pub const MAX_BETWEEN: usize = 100_000;
/// Longest `every` (3650 days).
const MAX_EVERY_SECS: i64 = 3650 * 86_400;
/// How far a search goes without finding anything.
const HORIZON: TimeDelta = TimeDelta::days(36_525);
/// Wall-clock replay before `t` when the offset changed recently (2 × the largest gap + margin).
const REPLAY: TimeDelta = TimeDelta::hours(54);
/// How far back an offset change forces the replay (the largest gap + margin).
const STABLE_WINDOW: TimeDelta = TimeDelta::hours(30);

/// What `compile` needs besides the spec.
#[derive(Clone, Debug, PartialEq)]
pub struct CompileContext {
    /// Used when `startAt` is absent (the controller passes the creation time): the lower bound
    /// of occurrences, the phase of `every`, and the source of `pattern` defaults.
    pub anchor: DateTime<Utc>,
    /// The task's UID: makes jitter deterministic per task.
    pub seed: String,
}

/// One occurrence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Occurrence {
    /// The schedule's instant: the occurrence's identity (the idempotency key derives from it).
    pub nominal: DateTime<Utc>,
    /// When it is due: `nominal` plus the jitter.
    pub due: DateTime<Utc>,
}

/// A schedule that cannot be used, with the spec field at fault (camelCase, as in the CRD).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ScheduleError {
    /// `cron`, `pattern.byDay`, `rrule`, `every`, `timeZone`, `startAt`, `endAt`, `count`,
    /// `jitter`...
    pub field: &'static str,
    /// What is wrong, in words for the user.
    pub message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> ScheduleError {
    ScheduleError {
        field,
        message: message.into(),
    }
}

/// A compiled schedule: cheap to query, safe to share.
#[derive(Clone, Debug)]
pub struct Schedule {
    kind: Kind,
    tz: Tz,
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
    count: Option<u32>,
    /// `COUNT` of an RRULE counts instances before `EXDATE`; `count` counts real occurrences.
    count_includes_excluded: bool,
    /// The nominal instant of the `count`-th occurrence, found on first use.
    count_end: OnceLock<Option<DateTime<Utc>>>,
    jitter_ms: u64,
    seed: String,
    summary: String,
}

#[derive(Clone, Debug)]
enum Kind {
    Cron(CronRule),
    Pattern(PatternRule),
    Rrule(Box<RruleRule>),
    /// Interval in seconds.
    Every(i64),
}

impl Schedule {
    /// Checks `spec` and prepares it for queries.
    pub fn compile(spec: &ScheduleSpec, ctx: &CompileContext) -> Result<Schedule, ScheduleError> {
        let kind_field = kind_field(spec)?;
        let tz = match spec.time_zone.as_deref() {
            None => Tz::UTC,
            Some(name) => parse_zone(name.trim()).map_err(|m| err("timeZone", m))?,
        };
        let start = ceil_second(spec.start_at.unwrap_or(ctx.anchor));
        if let (Some(s), Some(e)) = (spec.start_at, spec.end_at)
            && e <= s
        {
            return Err(err("endAt", "endAt must be after startAt"));
        }
        if spec.count.is_some() && spec.end_at.is_some() {
            return Err(err("count", "count and endAt cannot both be set"));
        }
        if let Some(n) = spec.count
            && !(1..=MAX_COUNT).contains(&n)
        {
            return Err(err(
                "count",
                format!("must be between 1 and {MAX_COUNT}, got {n}"),
            ));
        }
        let jitter_ms = spec
            .jitter
            .as_deref()
            .map(parse_jitter)
            .transpose()?
            .unwrap_or(0);
        let start_local = zone::local_of(tz, start);
        let mut end = spec.end_at;
        let mut count = spec.count;
        let mut count_includes_excluded = false;
        let zone_suffix = if tz == Tz::UTC {
            String::new()
        } else {
            format!(" ({})", tz.name())
        };
        let (kind, summary) = match kind_field {
            "cron" => {
                let text = spec.cron.as_deref().unwrap_or_default();
                let rule = CronRule::parse(text).map_err(|m| err("cron", m))?;
                let summary = format!("cron {}{zone_suffix}", rule.text);
                (Kind::Cron(rule), summary)
            }
            "pattern" => {
                let p = spec.pattern.clone().unwrap_or_default();
                let rule = PatternRule::new(&p, start_local).map_err(|(f, m)| err(f, m))?;
                let summary = format!("{}{zone_suffix}", rule.summary());
                (Kind::Pattern(rule), summary)
            }
            "rrule" => {
                let text = spec.rrule.as_deref().unwrap_or_default();
                if text.len() > 4096 {
                    return Err(err(
                        "rrule",
                        format!("is too long ({} characters, at most 4096)", text.len()),
                    ));
                }
                let rule = RruleRule::parse(text, tz, start_local).map_err(|m| err("rrule", m))?;
                let own = match (rule.count, rule.until) {
                    (Some(_), _) => Some("COUNT"),
                    (_, Some(_)) => Some("UNTIL"),
                    _ => None,
                };
                if let Some(own) = own {
                    if spec.count.is_some() {
                        return Err(err(
                            "count",
                            format!("count cannot be combined with {own} in rrule"),
                        ));
                    }
                    if spec.end_at.is_some() {
                        return Err(err(
                            "endAt",
                            format!("endAt cannot be combined with {own} in rrule"),
                        ));
                    }
                }
                if rule.count.is_some() {
                    count = rule.count;
                    count_includes_excluded = true;
                }
                end = end.or(rule.until);
                let summary = format!("rrule {}{zone_suffix}", shorten(&rule.text, 60));
                (Kind::Rrule(Box::new(rule)), summary)
            }
            _ => {
                let text = spec.every.as_deref().unwrap_or_default().trim();
                (Kind::Every(parse_every(text)?), format!("every {text}"))
            }
        };
        let schedule = Schedule {
            kind,
            tz,
            start,
            end,
            count,
            count_includes_excluded,
            count_end: OnceLock::new(),
            jitter_ms,
            seed: ctx.seed.clone(),
            summary,
        };
        if !matches!(schedule.kind, Kind::Every(_)) {
            let from = schedule.before_start();
            match schedule.raw_iter(from, None, true, HORIZON).next() {
                None => {
                    return Err(err(
                        kind_field,
                        "the schedule never fires (no occurrence within 100 years of the start)",
                    ));
                }
                Some(first) if first > last_representable() => {
                    return Err(err(
                        kind_field,
                        "the schedule never fires before the year 10000",
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(schedule)
    }

    /// Occurrences are delivered one at a time, in order, so each must fall due before the
    /// next: the jitter (`spec.jitter`, its text `jitter`) must be shorter than the shortest
    /// time between two occurrences in the year from `from` (or from the start, if later),
    /// looking at [`SPACING_SAMPLE`] occurrences at most. A year holds every daylight-saving
    /// change, which brings two local times closer. Checked where a spec is written (admission,
    /// the CLI), not by [`Schedule::compile`]: a task stored before the check keeps working.
    pub fn jitter_fits(
        &self,
        jitter: Option<&str>,
        from: DateTime<Utc>,
    ) -> Result<(), ScheduleError> {
        let Some(text) = jitter.filter(|_| self.jitter_ms > 0) else {
            return Ok(());
        };
        let start = from.max(self.start);
        let until = start
            .checked_add_signed(TimeDelta::days(366))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let after = start
            .checked_sub_signed(TimeDelta::seconds(1))
            .unwrap_or(start);
        let nominals: Vec<_> = self
            .iter_after(after)
            .take_while(|o| o.nominal < until)
            .take(SPACING_SAMPLE)
            .map(|o| o.nominal)
            .collect();
        let spacing_ms = nominals
            .windows(2)
            .map(|w| (w[1] - w[0]).num_milliseconds())
            .min();
        match spacing_ms {
            Some(spacing) if i64::try_from(self.jitter_ms).unwrap_or(i64::MAX) >= spacing => {
                let spacing = duration::spoken_ms(spacing);
                Err(err(
                    "jitter",
                    format!(
                        "{} is not shorter than the time between two occurrences ({spacing}): one would fall due before the one ahead of it; use a jitter under {spacing}",
                        text.trim()
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// The first occurrence whose nominal instant is strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<Occurrence> {
        self.iter_after(t).next()
    }

    /// The occurrences whose nominal instants are strictly after `t`, in increasing order.
    /// They end with year 9999: RFC 3339 (and so Kubernetes' `date-time`) cannot write later
    /// instants, and an occurrence that cannot be recorded must not be produced.
    pub fn iter_after(&self, t: DateTime<Utc>) -> impl Iterator<Item = Occurrence> + '_ {
        let end = self.effective_end();
        let horizon = HORIZON + self.stride();
        self.raw_iter(t.max(self.before_start()), end, true, horizon)
            .map(|nominal| self.occurrence(nominal))
            .take_while(|o| o.due <= last_representable())
    }

    /// The occurrences with `from < nominal <= to`, at most [`MAX_BETWEEN`].
    pub fn occurrences_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Occurrence> {
        self.iter_after(from)
            .take_while(|o| o.nominal <= to)
            .take(MAX_BETWEEN)
            .collect()
    }

    /// The zone wall-clock times are read in.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// Short text for a printer column: `cron 30 2 * * * (Europe/Berlin)`, `every 90m`,
    /// `WEEKLY MO,WE 09:00 (America/New_York)`.
    pub fn summary(&self) -> String {
        self.summary.clone()
    }

    fn occurrence(&self, nominal: DateTime<Utc>) -> Occurrence {
        let j = jitter::jitter_ms(&self.seed, nominal, self.jitter_ms);
        let due = i64::try_from(j)
            .ok()
            .and_then(TimeDelta::try_milliseconds)
            .and_then(|d| nominal.checked_add_signed(d))
            .unwrap_or(nominal);
        Occurrence { nominal, due }
    }

    /// Just before the start: occurrences are whole seconds, so `> start - 1s` is `>= start`.
    fn before_start(&self) -> DateTime<Utc> {
        self.start
            .checked_sub_signed(TimeDelta::seconds(1))
            .unwrap_or(self.start)
    }

    /// `endAt`/`UNTIL`, or the `count`-th occurrence.
    fn effective_end(&self) -> Option<DateTime<Utc>> {
        let Some(n) = self.count else { return self.end };
        *self.count_end.get_or_init(|| {
            if let Kind::Every(secs) = self.kind {
                let offset = TimeDelta::try_seconds(secs.checked_mul(i64::from(n) - 1)?)?;
                return self.start.checked_add_signed(offset);
            }
            let from = self.before_start();
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            self.raw_iter(
                from,
                self.end,
                !self.count_includes_excluded,
                HORIZON + self.stride(),
            )
            .nth(n.saturating_sub(1))
        })
    }

    /// Upper bound of the distance between two consecutive generated times.
    fn stride(&self) -> TimeDelta {
        match &self.kind {
            Kind::Pattern(p) => TimeDelta::days(p.stride_days()),
            Kind::Rrule(r) => r.stride(),
            Kind::Cron(_) | Kind::Every(_) => TimeDelta::zero(),
        }
    }

    /// Nominal instants strictly after `after` (and at or after the start), up to `end`.
    fn raw_iter(
        &self,
        after: DateTime<Utc>,
        end: Option<DateTime<Utc>>,
        apply_exdates: bool,
        horizon: TimeDelta,
    ) -> RawIter<'_> {
        let kind = match &self.kind {
            Kind::Every(secs) => {
                let step = TimeDelta::seconds(*secs);
                let next = if after < self.start {
                    Some(self.start)
                } else {
                    let k = (after - self.start).num_seconds() / secs + 1;
                    k.checked_mul(*secs)
                        .and_then(TimeDelta::try_seconds)
                        .and_then(|d| self.start.checked_add_signed(d))
                };
                return RawIter::Every { next, step, end };
            }
            Kind::Cron(c) => GenKind::Cron(c),
            Kind::Pattern(p) => GenKind::Pattern(p),
            Kind::Rrule(r) => GenKind::Rrule(r),
        };
        let local_after = zone::local_of(self.tz, after);
        let stable = after
            .checked_sub_signed(STABLE_WINDOW)
            .is_some_and(|from| zone::offset_stable(self.tz, from, after));
        // Without a recent offset change, no wall-clock time before `after`'s can produce an
        // instant after `after`; otherwise replay far enough back to see the times a gap
        // shifted past it, and merge the same instants as a walk from the start would.
        let from = if stable {
            local_after
        } else {
            local_after
                .checked_sub_signed(REPLAY)
                .unwrap_or(local_after)
        };
        let generator = match kind {
            GenKind::Cron(c) => LocalGen::Cron {
                rule: c,
                cursor: from
                    .checked_sub_signed(TimeDelta::seconds(1))
                    .unwrap_or(from),
            },
            GenKind::Pattern(p) => LocalGen::Pattern(p.generate_from(from)),
            GenKind::Rrule(r) => LocalGen::Rrule(Box::new(r.generate_from(from))),
        };
        let exdates = match (&self.kind, apply_exdates) {
            (Kind::Rrule(r), true) => Some(r.as_ref()),
            _ => None,
        };
        RawIter::Calendar(Box::new(CalIter {
            tz: self.tz,
            generator,
            exdates,
            pending: VecDeque::new(),
            settled: None,
            max_seen: None,
            after,
            start: self.start,
            end,
            progress: from,
            horizon,
            exhausted: false,
            done: false,
        }))
    }
}

/// At most how many occurrences are looked at for a schedule's shortest spacing (a year of a
/// two-hourly schedule; only where a spec is written, never per reconcile).
const SPACING_SAMPLE: usize = 20_000;

fn parse_jitter(text: &str) -> Result<u64, ScheduleError> {
    let d = parse_duration(text).map_err(|m| err("jitter", m))?;
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms > jitter::MAX_JITTER_MS {
        return Err(err(
            "jitter",
            format!("{} is more than the maximum of 24h", text.trim()),
        ));
    }
    Ok(ms)
}

/// The `every` interval in whole seconds.
fn parse_every(text: &str) -> Result<i64, ScheduleError> {
    let d = parse_duration(text).map_err(|m| err("every", m))?;
    if d.subsec_nanos() != 0 {
        return Err(err(
            "every",
            format!("{text} is not a whole number of seconds"),
        ));
    }
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    if secs < 1 {
        return Err(err("every", "must be at least 1s"));
    }
    if secs > MAX_EVERY_SECS {
        return Err(err(
            "every",
            format!("{text} is more than the maximum of 3650 days"),
        ));
    }
    Ok(secs)
}

/// Which kind is set; exactly one must be.
fn kind_field(spec: &ScheduleSpec) -> Result<&'static str, ScheduleError> {
    let set: Vec<&'static str> = [
        ("cron", spec.cron.is_some()),
        ("pattern", spec.pattern.is_some()),
        ("rrule", spec.rrule.is_some()),
        ("every", spec.every.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, is_set)| is_set.then_some(name))
    .collect();
    match set.as_slice() {
        [one] => Ok(one),
        [] => Err(err(
            "cron",
            "set exactly one of cron, pattern, rrule or every (none is set)",
        )),
        [first, second, ..] => Err(err(
            second,
            format!("set exactly one of cron, pattern, rrule or every ({first} is also set)"),
        )),
    }
}

fn ceil_second(t: DateTime<Utc>) -> DateTime<Utc> {
    if t.nanosecond() == 0 {
        return t;
    }
    t.with_nanosecond(0)
        .and_then(|s| s.checked_add_signed(TimeDelta::seconds(1)))
        .unwrap_or(t)
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

enum GenKind<'a> {
    Cron(&'a CronRule),
    Pattern(&'a PatternRule),
    Rrule(&'a RruleRule),
}

/// Naive wall-clock times of a calendar kind, increasing.
enum LocalGen<'a> {
    Cron {
        rule: &'a CronRule,
        cursor: NaiveDateTime,
    },
    Pattern(PatternGen<'a>),
    // Boxed: the crate's iterator is several times the size of the other variants.
    Rrule(Box<RruleGen<'a>>),
}

impl LocalGen<'_> {
    fn next(&mut self, limit: NaiveDateTime) -> Option<NaiveDateTime> {
        match self {
            LocalGen::Cron { rule, cursor } => {
                let next = rule.next_after(*cursor).filter(|n| *n <= limit)?;
                *cursor = next;
                Some(next)
            }
            LocalGen::Pattern(g) => g.next(limit),
            LocalGen::Rrule(g) => g.next(limit),
        }
    }
}

enum RawIter<'a> {
    Every {
        next: Option<DateTime<Utc>>,
        step: TimeDelta,
        end: Option<DateTime<Utc>>,
    },
    Calendar(Box<CalIter<'a>>),
}

/// 9999-12-31T23:59:59Z, the last instant RFC 3339 can write.
fn last_representable() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl Iterator for RawIter<'_> {
    type Item = DateTime<Utc>;

    fn next(&mut self) -> Option<DateTime<Utc>> {
        match self {
            RawIter::Every { next, step, end } => {
                let t = next.take().filter(|t| end.is_none_or(|e| *t <= e))?;
                *next = t.checked_add_signed(*step);
                Some(t)
            }
            RawIter::Calendar(c) => c.next(),
        }
    }
}

/// Wall-clock times through the zone policy, with bounds and `EXDATE`.
struct CalIter<'a> {
    tz: Tz,
    generator: LocalGen<'a>,
    exdates: Option<&'a RruleRule>,
    /// Instants generated and not yet produced, in order, each with the first wall-clock time
    /// that gave it (its `EXDATE` check). A skipped time waits here: its instant can come after
    /// those of times that follow it (Berlin 02:30 on spring-forward day is 03:30+02:00, after
    /// 03:00). Empty but around a gap: an existing time with nothing held goes at once.
    pending: VecDeque<(DateTime<Utc>, NaiveDateTime)>,
    /// The instant of the latest existing wall-clock time generated. Existing times give
    /// increasing instants, and a skipped one comes after all earlier existing ones, so no time
    /// still to come gives an instant at or before it: pending instants up to it can go.
    settled: Option<DateTime<Utc>>,
    /// The latest instant let go: a time giving it again is the same occurrence.
    max_seen: Option<DateTime<Utc>>,
    after: DateTime<Utc>,
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
    /// The latest wall-clock time generated, from which the horizon counts.
    progress: NaiveDateTime,
    horizon: TimeDelta,
    /// The generator has nothing more: every pending instant can go.
    exhausted: bool,
    done: bool,
}

impl CalIter<'_> {
    /// The earliest pending instant, once no time still to come can give an earlier one.
    fn take_settled(&mut self) -> Option<(DateTime<Utc>, NaiveDateTime)> {
        let (first, _) = self.pending.front()?;
        if !self.exhausted && self.settled.is_none_or(|s| *first > s) {
            return None;
        }
        let (at, local) = self.pending.pop_front()?;
        self.max_seen = Some(at);
        Some((at, local))
    }

    /// The next wall-clock time's instant, when it can go at once (it exists and nothing is
    /// held); otherwise it is held in `pending`, or merged, or the generator is exhausted.
    fn generate(&mut self) -> Option<(DateTime<Utc>, NaiveDateTime)> {
        let limit = self
            .progress
            .checked_add_signed(self.horizon)
            .unwrap_or(NaiveDateTime::MAX);
        let Some(local) = self.generator.next(limit) else {
            self.exhausted = true;
            return None;
        };
        self.progress = local;
        let Some((at, skipped)) = zone::resolve_marked(self.tz, local) else {
            self.exhausted = true;
            return None;
        };
        if !skipped {
            self.settled = Some(at);
        }
        // A time pushed out of a gap onto another's instant is that occurrence: it happens once.
        if self.max_seen.is_some_and(|m| at <= m) {
            return None;
        }
        if !skipped && self.pending.is_empty() {
            self.max_seen = Some(at);
            return Some((at, local));
        }
        if let Err(i) = self.pending.binary_search_by_key(&at, |(a, _)| *a) {
            self.pending.insert(i, (at, local));
        }
        None
    }
}

impl Iterator for CalIter<'_> {
    type Item = DateTime<Utc>;

    fn next(&mut self) -> Option<DateTime<Utc>> {
        while !self.done {
            let next = match self.take_settled() {
                Some(held) => Some(held),
                None if self.exhausted => break,
                None => self.generate(),
            };
            let Some((at, local)) = next else {
                continue;
            };
            if at <= self.after || at < self.start {
                continue;
            }
            if self.end.is_some_and(|e| at > e) {
                break;
            }
            if self.exdates.is_some_and(|r| r.excluded(local, at)) {
                continue;
            }
            return Some(at);
        }
        self.done = true;
        None
    }
}
