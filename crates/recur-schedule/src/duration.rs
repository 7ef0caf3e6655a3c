//! Durations as users write them: Go style (`1h30m`, `90s`, `500ms`, `1.5h`, `2d`) or ISO 8601
//! (`PT90M`, `P1DT2H`, `P2W`).
use std::time::Duration;

/// The language [`parse_duration`] accepts, as a schema regex (the parser also checks ranges).
pub const DURATION_PATTERN: &str = r"^(([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h|d))+|P([0-9]+W)?([0-9]+D)?(T([0-9]+H)?([0-9]+M)?([0-9]+(\.[0-9]+)?S)?)?)$";

/// Longest duration text accepted; anything longer is a mistake (or an attack), not a duration.
const MAX_LEN: usize = 64;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parses a non-negative duration: Go style, a sequence of `<number><unit>` with units `ns`,
/// `us` (`µs`), `ms`, `s`, `m`, `h`, `d` (24h) and optional decimal fractions (`1.5h`), or ISO
/// 8601 `P[nW][nD][T[nH][nM][n[.f]S]]`. Years and months are refused: they have no fixed length.
/// A bare `0` is zero; whether zero is acceptable is the caller's decision.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration (write for example 90s, 15m, 1h30m or PT90M)".into());
    }
    if s.len() > MAX_LEN {
        return Err(format!(
            "duration is too long ({} characters, at most {MAX_LEN})",
            s.len()
        ));
    }
    if s.starts_with('-') {
        return Err(format!("negative duration {s:?} is not allowed"));
    }
    let nanos = if s.starts_with(['P', 'p']) {
        parse_iso(s)?
    } else {
        parse_go(s)?
    };
    let secs =
        u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| format!("duration {s:?} is too large"))?;
    // The remainder is below 10^9, so it fits.
    let sub = u32::try_from(nanos % NANOS_PER_SEC).unwrap_or(0);
    Ok(Duration::new(secs, sub))
}

/// A number with an optional fraction, multiplied by `unit` nanoseconds (fraction truncated).
fn scaled(int: &str, frac: &str, unit: u128, whole: &str) -> Result<u128, String> {
    let too_large = || format!("duration {whole:?} is too large");
    let i: u128 = int.parse().map_err(|_| too_large())?;
    let mut n = i.checked_mul(unit).ok_or_else(too_large)?;
    if !frac.is_empty() {
        // At most 18 fraction digits matter for nanoseconds of any unit here.
        let digits = &frac[..frac.len().min(18)];
        let f: u128 = digits.parse().map_err(|_| too_large())?;
        let scale = 10u128.pow(u32::try_from(digits.len()).unwrap_or(18));
        n = n.checked_add(f * unit / scale).ok_or_else(too_large)?;
    }
    Ok(n)
}

/// Splits `digits[.digits]` off the front of `s`: (integer, fraction, rest).
fn number(s: &str) -> (&str, &str, &str) {
    let int_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (int, rest) = s.split_at(int_end);
    if let Some(after_dot) = rest.strip_prefix('.') {
        let frac_end = after_dot
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after_dot.len());
        let (frac, rest) = after_dot.split_at(frac_end);
        (int, frac, rest)
    } else {
        (int, "", rest)
    }
}

fn parse_go(whole: &str) -> Result<u128, String> {
    if whole == "0" {
        return Ok(0);
    }
    let mut rest = whole;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (int, frac, after) = number(rest);
        if int.is_empty() {
            return Err(format!(
                "invalid duration {whole:?}: expected a number at {rest:?} (write for example 90s, 15m, 1h30m or PT90M)"
            ));
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3_600 * NANOS_PER_SEC,
            "d" => 86_400 * NANOS_PER_SEC,
            "" => {
                return Err(format!(
                    "missing unit in duration {whole:?} (for example {int}s or {int}m)"
                ));
            }
            other => {
                return Err(format!(
                    "unknown unit {other:?} in duration {whole:?} (use ns, us, ms, s, m, h or d, or ISO 8601 like PT90M)"
                ));
            }
        };
        let part = scaled(int, frac, nanos, whole)?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("duration {whole:?} is too large"))?;
        rest = next;
    }
    Ok(total)
}

fn parse_iso(whole: &str) -> Result<u128, String> {
    let upper = whole.to_ascii_uppercase();
    let body = &upper[1..];
    let (date_part, time_part) = match body.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (body, None),
    };
    const DAY: u128 = 86_400 * NANOS_PER_SEC;
    let mut total = iso_section(whole, date_part, &[('W', 7 * DAY), ('D', DAY)], false)?;
    let mut any = !date_part.is_empty();
    if let Some(time) = time_part {
        if time.is_empty() {
            return Err(format!(
                "invalid ISO 8601 duration {whole:?}: nothing after T"
            ));
        }
        let units = [
            ('H', 3_600 * NANOS_PER_SEC),
            ('M', 60 * NANOS_PER_SEC),
            ('S', NANOS_PER_SEC),
        ];
        let t = iso_section(whole, time, &units, true)?;
        total = total
            .checked_add(t)
            .ok_or_else(|| format!("duration {whole:?} is too large"))?;
        any = true;
    }
    if !any {
        return Err(format!(
            "invalid ISO 8601 duration {whole:?}: no components (write for example PT90M or P1D)"
        ));
    }
    Ok(total)
}

/// One side of the `T`: designators in `units` order, each at most once.
fn iso_section(
    whole: &str,
    section: &str,
    units: &[(char, u128)],
    time: bool,
) -> Result<u128, String> {
    let mut rest = section;
    let mut next_allowed = 0;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (int, frac, after) = number(rest);
        let Some(designator) = after.chars().next() else {
            return Err(format!(
                "invalid ISO 8601 duration {whole:?}: number without designator"
            ));
        };
        if int.is_empty() {
            return Err(format!(
                "invalid ISO 8601 duration {whole:?}: expected a number before {designator:?}"
            ));
        }
        if designator == 'Y' || (designator == 'M' && !time) {
            return Err(format!(
                "ISO 8601 duration {whole:?}: years and months have no fixed length (use days, or a pattern or rrule schedule)"
            ));
        }
        let Some(pos) = units.iter().position(|(c, _)| *c == designator) else {
            return Err(format!(
                "invalid ISO 8601 duration {whole:?}: unexpected {designator:?}"
            ));
        };
        if pos < next_allowed {
            return Err(format!(
                "invalid ISO 8601 duration {whole:?}: {designator:?} out of order"
            ));
        }
        if !frac.is_empty() && designator != 'S' {
            return Err(format!(
                "ISO 8601 duration {whole:?}: only seconds may have a fraction"
            ));
        }
        next_allowed = pos + 1;
        let part = scaled(int, frac, units[pos].1, whole)?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("duration {whole:?} is too large"))?;
        rest = &after[designator.len_utf8()..];
    }
    Ok(total)
}

/// `ms` milliseconds as the shortest Go-style text: `1h30m`, `2d`, `45s`, `1m0.5s` is `60500ms`.
pub fn spoken_ms(ms: i64) -> String {
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let mut secs = ms / 1000;
    if secs == 0 {
        return "0s".into();
    }
    let mut text = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            text.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn secs(s: &str) -> u64 {
        parse_duration(s).unwrap().as_secs()
    }

    #[test]
    fn go_style() {
        assert_eq!(secs("90m"), 5400);
        assert_eq!(secs("1h30m"), 5400);
        assert_eq!(secs("2s"), 2);
        assert_eq!(secs("6h"), 21600);
        assert_eq!(secs("1d"), 86400);
        assert_eq!(secs("1.5h"), 5400);
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1µs").unwrap(), Duration::from_micros(1));
        assert_eq!(
            parse_duration("1us2ns").unwrap(),
            Duration::from_nanos(1002)
        );
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn iso_8601() {
        assert_eq!(secs("PT90M"), 5400);
        assert_eq!(secs("P1D"), 86400);
        assert_eq!(secs("P1DT2H"), 93600);
        assert_eq!(secs("P2W"), 14 * 86400);
        assert_eq!(secs("pt1h30m"), 5400);
        assert_eq!(
            parse_duration("PT1.5S").unwrap(),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn rejections_say_why() {
        let err = |s: &str| parse_duration(s).unwrap_err();
        assert!(err("").contains("empty"));
        assert!(err("-5m").contains("negative"));
        assert!(err("5x").contains("unknown unit \"x\""));
        assert!(err("90").contains("missing unit"));
        assert!(err("h").contains("expected a number"));
        assert!(err("P1M").contains("no fixed length"));
        assert!(err("P1Y").contains("no fixed length"));
        assert!(err("P").contains("no components"));
        assert!(err("PT").contains("nothing after T"));
        assert!(err("PT1H2H").contains("out of order"));
        assert!(err("PT1.5H").contains("fraction"));
        assert!(err("99999999999999999999999h").contains("too large"));
        assert!(err("18446744073709551615d").contains("too large"));
        assert!(err(&"1h".repeat(1 << 19)).contains("too long"));
    }

    #[test]
    fn pattern_and_parser_agree_on_examples() {
        // Every example in the CRD docs must parse.
        for s in [
            "90m", "6h", "1h30m", "2s", "PT90M", "P1D", "2m", "24h", "1h", "15m", "10s",
        ] {
            assert!(parse_duration(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn spoken_durations_are_the_shortest_go_text() {
        assert_eq!(spoken_ms(90 * 60_000), "1h30m");
        assert_eq!(spoken_ms(2 * 86_400_000), "2d");
        assert_eq!(spoken_ms(45_000), "45s");
        assert_eq!(spoken_ms(60_500), "60500ms");
        assert_eq!(spoken_ms(0), "0s");
        assert_eq!(
            parse_duration(&spoken_ms(93_784_000)).unwrap().as_secs(),
            93_784
        );
    }
}
