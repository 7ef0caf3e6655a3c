//! Rules whose BYDAY mixes plain and numbered weekdays, as in `FREQ=MONTHLY;BYDAY=MO,-1FR`
//! (every Monday and the last Friday of the month). RFC 5545 3.3.10 makes the BYDAY values a
//! list: a day matching any of them is in the set. The `rrule` crate (0.14) wants a day to match
//! a plain weekday *and* a numbered one, so such a rule never fires there.
//!
//! So we ask the crate for the days of each kind separately (one rule per kind, at midnight,
//! without BYSETPOS) and merge them. Numbered weekdays need FREQ=MONTHLY or YEARLY and cannot be
//! used with BYWEEKNO (both checked before we get here), so each day lies in its own period (a
//! month, or a year). For each period we take its merged days crossed with the rule's times of
//! day, in order, and apply BYSETPOS to that whole set, as the crate does for other rules. COUNT,
//! UNTIL and EXDATE are applied by the caller to the times given here.
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime};
use rrule::{Frequency, NWeekday, RRule, RRuleError, RRuleSet, RRuleSetIter, Unvalidated};

#[cfg(test)]
mod tests;

/// A rule with a mixed BYDAY, split into one rule per kind of weekday.
#[derive(Clone, Debug)]
pub(super) struct ByDayUnion {
    /// The days of the set: one rule per kind, at 00:00:00, without BYSETPOS.
    day_rules: Vec<RRule>,
    /// Periods are years (else months).
    yearly: bool,
    /// The times of each day: every hour × minute × second (the crate's order).
    hours: Vec<u8>,
    minutes: Vec<u8>,
    seconds: Vec<u8>,
    set_pos: Vec<i32>,
}

impl ByDayUnion {
    /// The split of `parsed`, or `None` when its BYDAY does not mix both kinds. `rule` is
    /// `parsed` validated for `dtstart` (its times of day and BYSETPOS are used as they are).
    pub(super) fn split(
        parsed: &RRule<Unvalidated>,
        rule: &RRule,
        dtstart: DateTime<rrule::Tz>,
    ) -> Result<Option<ByDayUnion>, RRuleError> {
        let yearly = match rule.get_freq() {
            Frequency::Yearly => true,
            Frequency::Monthly => false,
            _ => return Ok(None),
        };
        let (plain, numbered): (Vec<NWeekday>, Vec<NWeekday>) = parsed
            .get_by_weekday()
            .iter()
            .partition(|d| matches!(d, NWeekday::Every(_)));
        if plain.is_empty() || numbered.is_empty() {
            return Ok(None);
        }
        let day_rules = [plain, numbered]
            .into_iter()
            .map(|days| {
                parsed
                    .clone()
                    .by_weekday(days)
                    .by_set_pos(Vec::new())
                    .by_hour(vec![0])
                    .by_minute(vec![0])
                    .by_second(vec![0])
                    .validate(dtstart)
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(ByDayUnion {
            day_rules,
            yearly,
            hours: rule.get_by_hour().to_vec(),
            minutes: rule.get_by_minute().to_vec(),
            seconds: rule.get_by_second().to_vec(),
            set_pos: rule.get_by_set_pos().to_vec(),
        }))
    }

    /// Wall-clock times from the start of the period holding `base` on, none before `origin`.
    /// `base` must be the start of a period taken by the rule, or `origin` itself.
    pub(super) fn generate(&self, base: NaiveDateTime, origin: NaiveDateTime) -> ByDayUnionGen<'_> {
        let day = base.date();
        let first = if self.yearly {
            day.with_ordinal(1)
        } else {
            day.with_day(1)
        };
        let dtstart = first.unwrap_or(day).and_time(NaiveTime::MIN).and_utc();
        let set = self
            .day_rules
            .iter()
            .fold(
                RRuleSet::new(dtstart.with_timezone(&rrule::Tz::UTC)),
                |set, r| set.rrule(r.clone()),
            )
            .limit();
        ByDayUnionGen {
            union: self,
            days: (&set).into_iter(),
            last_day: None,
            ahead: None,
            period: Vec::new(),
            picks: None,
            next: 0,
            origin,
        }
    }

    fn period_of(&self, d: NaiveDate) -> (i32, u32) {
        (d.year(), if self.yearly { 0 } else { d.month() })
    }

    fn times_per_day(&self) -> usize {
        self.hours.len() * self.minutes.len() * self.seconds.len()
    }

    /// The `i`-th time of day.
    fn time(&self, i: usize) -> Option<NaiveTime> {
        let (s, m) = (self.seconds.len(), self.minutes.len());
        let second = self.seconds.get(i.checked_rem(s)?)?;
        let minute = self.minutes.get(i.checked_div(s)?.checked_rem(m)?)?;
        let hour = self.hours.get(i.checked_div(s.checked_mul(m)?)?)?;
        NaiveTime::from_hms_opt(u32::from(*hour), u32::from(*minute), u32::from(*second))
    }
}

/// The positions BYSETPOS picks in a set of `n`: 1 is the first, -1 the last; ascending.
fn set_positions(set_pos: &[i32], n: usize) -> Vec<usize> {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let mut picks: Vec<usize> = set_pos
        .iter()
        .map(|&p| {
            if p > 0 {
                i64::from(p) - 1
            } else {
                n + i64::from(p)
            }
        })
        .filter(|i| (0..n).contains(i))
        .filter_map(|i| usize::try_from(i).ok())
        .collect();
    picks.sort_unstable();
    picks.dedup();
    picks
}

/// Wall-clock times of a [`ByDayUnion`], increasing.
pub(super) struct ByDayUnionGen<'a> {
    union: &'a ByDayUnion,
    /// The merged days of the rules (equal days come one after the other).
    days: RRuleSetIter,
    last_day: Option<NaiveDate>,
    /// The first day of the next period, read ahead.
    ahead: Option<NaiveDate>,
    /// The days of the current period, ascending and distinct.
    period: Vec<NaiveDate>,
    /// The positions in the period's set (days × times) BYSETPOS picks; `None`: all of them.
    picks: Option<Vec<usize>>,
    /// The index in `picks`, or the position when all are taken.
    next: usize,
    origin: NaiveDateTime,
}

impl ByDayUnionGen<'_> {
    /// The next wall-clock time, or `None` when there is none in a period starting by `limit`.
    pub(super) fn next(&mut self, limit: NaiveDateTime) -> Option<NaiveDateTime> {
        loop {
            let position = match &self.picks {
                Some(picks) => picks.get(self.next).copied(),
                None => Some(self.next).filter(|p| *p < self.set_size()),
            };
            let Some(position) = position else {
                self.next_period(limit)?;
                continue;
            };
            self.next += 1;
            let t = self.at(position)?;
            if t >= self.origin {
                return Some(t);
            }
        }
    }

    /// Moves to the next period with days, if it starts by `limit`.
    fn next_period(&mut self, limit: NaiveDateTime) -> Option<()> {
        let first = match self.ahead.take() {
            Some(d) => d,
            None => self.next_day()?,
        };
        if first.and_time(NaiveTime::MIN) > limit {
            self.ahead = Some(first);
            return None;
        }
        let period = self.union.period_of(first);
        self.period.clear();
        self.period.push(first);
        while let Some(day) = self.next_day() {
            if self.union.period_of(day) != period {
                self.ahead = Some(day);
                break;
            }
            self.period.push(day);
        }
        self.picks = (!self.union.set_pos.is_empty())
            .then(|| set_positions(&self.union.set_pos, self.set_size()));
        self.next = 0;
        Some(())
    }

    /// The next distinct day of the merged rules.
    fn next_day(&mut self) -> Option<NaiveDate> {
        loop {
            let day = self.days.next()?.naive_utc().date();
            if self.last_day.replace(day) != Some(day) {
                return Some(day);
            }
        }
    }

    /// The size of the current period's set: days × times.
    fn set_size(&self) -> usize {
        self.period.len() * self.union.times_per_day()
    }

    /// The time at `position` in the current period's set.
    fn at(&self, position: usize) -> Option<NaiveDateTime> {
        let per_day = self.union.times_per_day();
        let day = self.period.get(position.checked_div(per_day)?)?;
        Some(day.and_time(self.union.time(position.checked_rem(per_day)?)?))
    }
}
