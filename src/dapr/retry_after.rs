//! `Retry-After` (RFC 9110 §10.2.3) of 429 and 503 answers: how long the app asks callers to
//! stay away. Honoured as a floor under the backoff, never as a way to retry sooner.
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

/// The longest wait honoured: a wrong or hostile value must not park an occurrence for days.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// The wait a `Retry-After` value asks for at `now`: delta-seconds (`120`) or an HTTP-date
/// (`Sun, 06 Nov 1994 08:49:37 GMT`, and the two obsolete forms HTTP still requires readers to
/// accept). Capped at [`RETRY_AFTER_CAP`]; a date in the past is no wait; anything else
/// (negative, fractional, garbage) is `None`, as if the header were absent.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: too large for u64 is still "very long", so it is capped, not ignored.
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds).min(RETRY_AFTER_CAP));
    }
    let at = http_date(value)?;
    let wait = (at - now).to_std().unwrap_or(Duration::ZERO);
    Some(wait.min(RETRY_AFTER_CAP))
}

/// An HTTP-date in any of its three forms, always GMT.
fn http_date(value: &str) -> Option<DateTime<Utc>> {
    // IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 2822 with zone GMT).
    if let Ok(t) = DateTime::parse_from_rfc2822(value) {
        return Some(t.with_timezone(&Utc));
    }
    // RFC 850, `Sunday, 06-Nov-94 08:49:37 GMT`, and asctime, `Sun Nov  6 08:49:37 1994`.
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(value, format).ok())
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use chrono::TimeZone;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
    }

    fn parse(value: &str) -> Option<Duration> {
        parse_retry_after(value, now())
    }

    #[test]
    fn delta_seconds() {
        assert_eq!(parse("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse("3600"), Some(RETRY_AFTER_CAP));
        // Longer waits, however long, are capped at one hour.
        assert_eq!(parse("3601"), Some(RETRY_AFTER_CAP));
        assert_eq!(parse("99999999999999999999999"), Some(RETRY_AFTER_CAP));
    }

    #[test]
    fn http_dates_in_all_three_forms() {
        let in_90s = Some(Duration::from_secs(90));
        assert_eq!(parse("Sun, 01 Mar 2026 12:01:30 GMT"), in_90s);
        assert_eq!(parse("Sunday, 01-Mar-26 12:01:30 GMT"), in_90s);
        assert_eq!(parse("Sun Mar  1 12:01:30 2026"), in_90s);
        // Past dates ask for no wait; far ones are capped.
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(
            parse("Mon, 02 Mar 2026 12:00:00 GMT"),
            Some(RETRY_AFTER_CAP)
        );
    }

    #[test]
    fn garbage_is_ignored() {
        for value in [
            "",
            "  ",
            "-5",
            "1.5",
            "+10",
            "10s",
            "soon",
            "0x10",
            "Sun, 01 Mar 2026 25:01:30 GMT",
            "Sun, 32 Mar 2026 12:01:30 GMT",
            "2026-03-01T12:01:30Z",
            "١٢٣",
        ] {
            assert_eq!(parse(value), None, "{value:?}");
        }
    }
}
