//! Time zones and the one DST policy every calendar kind shares: how a wall-clock time becomes an
//! instant.
//!
//! - A wall-clock time that exists once is that instant.
//! - A time repeated by a fall-back change happens once, at its first instant.
//! - A time skipped by a spring-forward change happens at the offset in force before the change
//!   (RFC 5545 3.3.5): Berlin 02:30 on 2026-03-29 is 01:30 UTC, shown as 03:30+02:00.
//!
//! A time pushed out of a gap can land on another time's instant (one occurrence), or after the
//! instants of times that follow it: the caller produces the instants in order, once each.
use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::{GapInfo, Tz};

/// Parses an IANA zone name, suggesting the closest known name when it is unknown.
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    if name.len() > 64 {
        return Err(format!(
            "zone name is too long ({} characters, at most 64)",
            name.len()
        ));
    }
    if let Ok(tz) = Tz::from_str(name) {
        return Ok(tz);
    }
    Err(match closest_zone(name) {
        Some(best) => format!("unknown zone {name:?} (did you mean {best:?}?)"),
        None => format!(
            "unknown zone {name:?} (use an IANA name such as Europe/Berlin or America/New_York)"
        ),
    })
}

/// The known zone name closest to `name` (case-insensitive edit distance), if reasonably close.
fn closest_zone(name: &str) -> Option<&'static str> {
    let wanted: Vec<char> = name.to_ascii_lowercase().chars().collect();
    let mut best: Option<(usize, &'static str)> = None;
    for tz in chrono_tz::TZ_VARIANTS {
        let candidate: Vec<char> = tz.name().to_ascii_lowercase().chars().collect();
        let d = edit_distance(&wanted, &candidate);
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, tz.name()));
        }
    }
    // A suggestion further away than a third of the name is noise.
    best.filter(|(d, _)| *d <= (wanted.len() / 3).max(2))
        .map(|(_, n)| n)
}

fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The wall-clock time of `t` in `tz`.
pub fn local_of(tz: Tz, t: DateTime<Utc>) -> NaiveDateTime {
    let utc = t.naive_utc();
    let offset = TimeDelta::seconds(i64::from(
        tz.offset_from_utc_datetime(&utc).fix().local_minus_utc(),
    ));
    // At the very edges of chrono's range the wall-clock time may not exist: stay on UTC.
    utc.checked_add_signed(offset).unwrap_or(utc)
}

/// The instant of the wall-clock time `local` in `tz`, by the policy in the module docs. `None`
/// only at the edges of chrono's range.
pub fn resolve(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    resolve_marked(tz, local).map(|(at, _)| at)
}

/// [`resolve`], and whether `local` was skipped: only a skipped time's instant can come after
/// the instants of wall-clock times that follow it.
pub fn resolve_marked(tz: Tz, local: NaiveDateTime) -> Option<(DateTime<Utc>, bool)> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some((t.with_timezone(&Utc), false)),
        LocalResult::Ambiguous(first, _) => Some((first.with_timezone(&Utc), false)),
        LocalResult::None => resolve_in_gap(tz, local).map(|at| (at, true)),
    }
}

/// A skipped wall-clock time, read with the offset in force just before the gap.
fn resolve_in_gap(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let before = GapInfo::new(&local, &tz)
        .and_then(|gap| gap.begin)
        .map(|(_, offset)| offset.fix().local_minus_utc());
    match before {
        Some(secs) => local
            .checked_sub_signed(TimeDelta::seconds(i64::from(secs)))
            .map(|n| n.and_utc()),
        // A gap at the very start of the zone's history: read it as the first instant after.
        None => GapInfo::new(&local, &tz)
            .and_then(|gap| gap.end)
            .map(|t| t.with_timezone(&Utc)),
    }
}

/// Whether `tz` keeps one UTC offset over the whole of `[from, to]`, sampled every two hours (no
/// zone has two transitions that cancel out within two hours).
pub fn offset_stable(tz: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
    let offset = |t: DateTime<Utc>| tz.offset_from_utc_datetime(&t.naive_utc()).fix();
    let first = offset(from);
    let step = TimeDelta::hours(2);
    let mut t = from;
    while t < to {
        t = match t.checked_add_signed(step) {
            Some(next) => next.min(to),
            None => return false,
        };
        if offset(t) != first {
            return false;
        }
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn local(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, 0)
            .unwrap()
    }

    fn shown(tz: Tz, t: DateTime<Utc>) -> String {
        t.with_timezone(&tz).to_rfc3339()
    }

    #[test]
    fn gap_takes_the_offset_before() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let t = resolve(berlin, local(2026, 3, 29, 2, 30)).unwrap();
        assert_eq!(shown(berlin, t), "2026-03-29T03:30:00+02:00");
        let ny: Tz = "America/New_York".parse().unwrap();
        let t = resolve(ny, local(2026, 3, 8, 2, 15)).unwrap();
        assert_eq!(shown(ny, t), "2026-03-08T03:15:00-04:00");
        let lh: Tz = "Australia/Lord_Howe".parse().unwrap();
        // Lord Howe moves from +10:30 to +11:00 at 02:00 on the first Sunday of October.
        let t = resolve(lh, local(2026, 10, 4, 2, 10)).unwrap();
        assert_eq!(shown(lh, t), "2026-10-04T02:40:00+11:00");
    }

    #[test]
    fn overlap_takes_the_first_instant() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let t = resolve(berlin, local(2026, 10, 25, 2, 30)).unwrap();
        assert_eq!(shown(berlin, t), "2026-10-25T02:30:00+02:00");
    }

    #[test]
    fn whole_day_gap_in_apia() {
        // Samoa skipped 2011-12-30 entirely (-10:00 to +14:00).
        let apia: Tz = "Pacific/Apia".parse().unwrap();
        let t = resolve(apia, local(2011, 12, 30, 9, 0)).unwrap();
        assert_eq!(shown(apia, t), "2011-12-31T09:00:00+14:00");
    }

    #[test]
    fn unknown_zone_suggests() {
        assert_eq!(
            parse_zone("Europe/Berln").unwrap_err(),
            "unknown zone \"Europe/Berln\" (did you mean \"Europe/Berlin\"?)"
        );
        assert!(
            parse_zone("Mars/Olympus_Mons")
                .unwrap_err()
                .starts_with("unknown zone")
        );
        assert!(
            parse_zone(&"x".repeat(1 << 20))
                .unwrap_err()
                .contains("too long")
        );
        assert_eq!(parse_zone("UTC").unwrap(), Tz::UTC);
    }

    #[test]
    fn stability_sees_transitions() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert!(offset_stable(
            berlin,
            t("2026-03-27T00:00:00Z"),
            t("2026-03-29T00:59:59Z")
        ));
        assert!(!offset_stable(
            berlin,
            t("2026-03-27T00:00:00Z"),
            t("2026-03-29T01:00:00Z")
        ));
    }
}
