//! BYHOUR and BYMINUTE of SECONDLY and MINUTELY rules, which only limit (RFC 5545 3.3.10), applied
//! by us instead of the `rrule` crate. The crate (0.14) skips an hour or minute these parts
//! exclude by adding whole minutes or hours while the seconds (or minutes) stay put, so an
//! INTERVAL that does not divide 60 comes out of the skip in another phase: `FREQ=SECONDLY;
//! INTERVAL=7;BYHOUR=0` from 19:00 gave 00:00:06, 00:00:13... where origin + k * 7 s gives
//! 00:00:03, 00:00:10... The crate keeps the phase for every other part, so it iterates the rule
//! without these, and [`TimeLimits::next_allowed`] says where to restart it (from a start moved by
//! whole steps of the rule) when a time falls outside them.
use chrono::{NaiveDateTime, NaiveTime, Timelike};
use rrule::{Frequency, RRule, Unvalidated};

/// The hours and minutes a sub-hourly rule is limited to; an empty mask allows all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct TimeLimits {
    hours: u32,
    minutes: u64,
}

impl TimeLimits {
    /// Moves the parts we apply out of `parsed`, given the crate's reading of them in `validated`.
    /// Other frequencies keep them: there they expand, or limit whole periods the crate steps
    /// through one by one.
    pub(super) fn take(
        parsed: RRule<Unvalidated>,
        validated: &RRule,
    ) -> (TimeLimits, RRule<Unvalidated>) {
        let mask = |values: &[u8]| values.iter().fold(0u64, |m, v| m | 1u64 << (v % 64));
        match validated.get_freq() {
            Frequency::Secondly => (
                TimeLimits {
                    hours: mask(validated.get_by_hour()) as u32,
                    minutes: mask(validated.get_by_minute()),
                },
                parsed.by_hour(Vec::new()).by_minute(Vec::new()),
            ),
            Frequency::Minutely => (
                TimeLimits {
                    hours: mask(validated.get_by_hour()) as u32,
                    minutes: 0,
                },
                parsed.by_hour(Vec::new()),
            ),
            _ => (TimeLimits::default(), parsed),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.hours == 0 && self.minutes == 0
    }

    pub(super) fn allows(&self, t: NaiveDateTime) -> bool {
        hour_ok(self.hours, t.hour()) && minute_ok(self.minutes, t.minute())
    }

    /// The first time at or after `t` these limits allow: the start of an allowed minute (or
    /// hour), or `t` itself. `None` only past the end of the calendar.
    pub(super) fn next_allowed(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        if self.allows(t) {
            return Some(t);
        }
        let date = t.date();
        let first_minute = (0..60).find(|m| minute_ok(self.minutes, *m))?;
        let at = |d: chrono::NaiveDate, h: u32, m: u32| {
            NaiveTime::from_hms_opt(h, m, 0).map(|time| d.and_time(time))
        };
        if hour_ok(self.hours, t.hour())
            && let Some(m) = (t.minute() + 1..60).find(|m| minute_ok(self.minutes, *m))
        {
            return at(date, t.hour(), m);
        }
        if let Some(h) = (t.hour() + 1..24).find(|h| hour_ok(self.hours, *h)) {
            return at(date, h, first_minute);
        }
        let first_hour = (0..24).find(|h| hour_ok(self.hours, *h))?;
        at(date.succ_opt()?, first_hour, first_minute)
    }
}

fn hour_ok(mask: u32, hour: u32) -> bool {
    mask == 0 || mask & (1 << hour) != 0
}

fn minute_ok(mask: u64, minute: u32) -> bool {
    mask == 0 || mask & (1 << minute) != 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn limits(rule: &str) -> TimeLimits {
        let parsed: RRule<Unvalidated> = rule.parse().unwrap();
        let validated = parsed
            .clone()
            .validate(
                at("2026-01-01 00:00:00")
                    .and_utc()
                    .with_timezone(&rrule::Tz::UTC),
            )
            .unwrap();
        TimeLimits::take(parsed, &validated).0
    }

    #[test]
    fn next_allowed_finds_the_next_allowed_minute_hour_or_day() {
        let l = limits("FREQ=SECONDLY;BYHOUR=3,17;BYMINUTE=10,40");
        let next = |s: &str| l.next_allowed(at(s)).unwrap().to_string();
        assert_eq!(next("2026-01-01 03:10:59"), "2026-01-01 03:10:59");
        assert_eq!(next("2026-01-01 03:11:00"), "2026-01-01 03:40:00");
        assert_eq!(next("2026-01-01 03:41:00"), "2026-01-01 17:10:00");
        assert_eq!(next("2026-01-01 00:00:01"), "2026-01-01 03:10:00");
        assert_eq!(next("2026-01-01 17:40:01"), "2026-01-01 17:40:01");
        assert_eq!(next("2026-01-01 17:41:00"), "2026-01-02 03:10:00");
        assert_eq!(next("2026-12-31 23:59:59"), "2027-01-01 03:10:00");
    }

    #[test]
    fn only_sub_hourly_rules_hand_their_limits_over() {
        assert!(!limits("FREQ=MINUTELY;BYHOUR=0").is_empty());
        assert!(limits("FREQ=MINUTELY;BYMINUTE=5").is_empty());
        assert!(limits("FREQ=HOURLY;BYHOUR=0").is_empty());
        assert!(limits("FREQ=DAILY;BYHOUR=0;BYMINUTE=5").is_empty());
        assert!(limits("FREQ=SECONDLY;INTERVAL=7").is_empty());
    }
}
