//! Every conversion between chrono (the schedule maths) and jiff (kube 5's timestamps), in one
//! place. jiff spans years -9999..=9999 and chrono far more, so chrono to jiff can fail: it
//! saturates at jiff's bounds, and says so, instead of falling back to 1970 as the old helpers
//! did. Schedules never produce instants past 9999 (the engine bounds them), so saturation is a
//! guard, not a path a real occurrence takes.
use chrono::{DateTime, Utc};

/// chrono to jiff; an instant beyond jiff's range becomes its nearest bound.
pub fn to_jiff(t: DateTime<Utc>) -> jiff::Timestamp {
    let nanos = i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0);
    match jiff::Timestamp::new(t.timestamp(), nanos) {
        Ok(ts) => ts,
        Err(_) if t.timestamp() < 0 => jiff::Timestamp::MIN,
        Err(_) => jiff::Timestamp::MAX,
    }
}

/// jiff to chrono. Every jiff instant exists in chrono; the bound is only there for the type.
/// jiff truncates toward zero (-0.5 s is second 0, nanosecond -500,000,000) where chrono wants a
/// non-negative nanosecond, so a negative fraction borrows a second.
pub fn from_jiff(t: jiff::Timestamp) -> DateTime<Utc> {
    let (mut secs, mut nanos) = (t.as_second(), i64::from(t.subsec_nanosecond()));
    if nanos < 0 {
        secs -= 1;
        nanos += 1_000_000_000;
    }
    let nanos = u32::try_from(nanos).unwrap_or(0);
    DateTime::from_timestamp(secs, nanos).unwrap_or(if secs < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_keep_the_instant_to_the_nanosecond() {
        for s in [
            "2026-03-29T01:30:00.123456789Z",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.5Z",
            "9999-12-30T21:00:00Z",
        ] {
            let t: DateTime<Utc> = s.parse().unwrap();
            assert_eq!(from_jiff(to_jiff(t)), t, "{s}");
        }
    }

    /// The helper this module replaces turned every instant in (-1 s, 0) into the epoch.
    #[test]
    fn a_negative_fraction_borrows_a_second() {
        let t = jiff::Timestamp::new(0, -500_000_000).unwrap();
        assert_eq!(
            from_jiff(t),
            "1969-12-31T23:59:59.5Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn out_of_range_saturates_never_1970() {
        let far = DateTime::<Utc>::MAX_UTC;
        assert_eq!(to_jiff(far), jiff::Timestamp::MAX);
        assert_eq!(to_jiff(DateTime::<Utc>::MIN_UTC), jiff::Timestamp::MIN);
        assert_ne!(to_jiff(far), jiff::Timestamp::UNIX_EPOCH);
    }
}
