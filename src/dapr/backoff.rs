//! Retry delays: exponential with deterministic jitter, so that a retry's time can be recomputed
//! by any replica from the status alone, and occurrences failing together spread out.
use std::time::Duration;

use crate::schedule::hash::{Fnv1a, splitmix64};

/// First delay.
const BASE_MS: u64 = 1_000;
/// Nominal delays stop growing here; with +20% jitter the longest delay is exactly 5 minutes.
const NOMINAL_CAP_MS: u64 = 250_000;
/// Jitter amplitude in parts per million of the nominal delay (±20%).
const JITTER_PPM: u64 = 200_000;

/// The wait after the `attempt`-th failed attempt (1-based; 0 counts as 1) of the call keyed
/// `key`: nominally 1 s, 2 s, 4 s, ... up to 250 s, each moved by a jitter of ±20% derived from
/// `key` and `attempt`. Always between 800 ms and 5 minutes; never overflows.
pub fn backoff(attempt: u32, key: &str) -> Duration {
    let doublings = attempt.saturating_sub(1).min(20);
    let nominal = BASE_MS
        .saturating_mul(1u64 << doublings)
        .min(NOMINAL_CAP_MS);
    // A point in [0, 2 * JITTER_PPM] from the hash; subtract JITTER_PPM for [-20%, +20%].
    let point = mix(key, attempt) % (2 * JITTER_PPM + 1);
    let scaled = nominal * (1_000_000 - JITTER_PPM + point) / 1_000_000;
    Duration::from_millis(scaled.max(1))
}

/// The most by which a wake-up after an open breaker is spread ([`circuit_spread`]).
const CIRCUIT_SPREAD_CAP: Duration = Duration::from_secs(5);

/// How widely wake-ups after a breaker with this cool-down are spread: `min(5 s, cool_down/2)`,
/// wide enough that a crowd of waiting calls does not arrive at one instant, narrow enough
/// that a short cool-down is not stretched by much.
pub fn circuit_spread(cool_down: Duration) -> Duration {
    CIRCUIT_SPREAD_CAP.min(cool_down / 2)
}

/// When to try again the call keyed `key` that an open breaker refused for `retry_in`: that
/// instant plus a deterministic offset in `[0, spread)` from the key. Without it, every call
/// waiting on the breaker would wake at the instant it half-opens, and all but the probe be
/// refused again together.
pub fn circuit_retry(retry_in: Duration, spread: Duration, key: &str) -> Duration {
    let spread_ms = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX);
    if spread_ms == 0 {
        return retry_in;
    }
    let mut h = Fnv1a::new();
    // A salt of its own, so the offset is independent of the key's backoff jitter.
    h.write(b"circuit\0");
    h.write(key.as_bytes());
    let offset = splitmix64(h.finish()) % spread_ms;
    retry_in.saturating_add(Duration::from_millis(offset))
}

/// FNV-1a over the key and attempt, finished with splitmix64: stable across builds and platforms
/// (unlike `DefaultHasher`), which matters because replicas must agree on the delay.
fn mix(key: &str, attempt: u32) -> u64 {
    let mut h = Fnv1a::new();
    h.write(key.as_bytes());
    h.write(&attempt.to_le_bytes());
    splitmix64(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nominal_ms(attempt: u32) -> u64 {
        (1_000u64 << attempt.saturating_sub(1).min(20)).min(250_000)
    }

    #[test]
    fn grows_exponentially_within_jitter_bounds() {
        for key in ["a", "default/daily-standup@2025-01-01T09:00:00Z", ""] {
            for attempt in 0..40 {
                let d = backoff(attempt, key).as_millis() as u64;
                let n = nominal_ms(attempt);
                assert!(
                    d >= n * 8 / 10 && d <= n * 12 / 10,
                    "attempt {attempt}: {d} ms vs nominal {n}"
                );
                assert!(d <= 300_000, "attempt {attempt}: {d} ms");
                assert!(d >= 800, "attempt {attempt}: {d} ms");
            }
        }
    }

    #[test]
    fn extreme_attempts_are_capped_and_do_not_overflow() {
        for attempt in [u32::MAX, u32::MAX - 1, 64, 65, 1 << 31] {
            let d = backoff(attempt, "k");
            assert!(
                d > Duration::ZERO && d <= Duration::from_secs(300),
                "{attempt}: {d:?}"
            );
            assert!(d >= Duration::from_secs(200), "{attempt}: {d:?}");
        }
    }

    /// Fixed outputs: retry times computed from them are written to users' status, so the
    /// formula and its hash must never change.
    #[test]
    fn backoff_pinned_outputs() {
        let ms = |attempt, key| backoff(attempt, key).as_millis();
        assert_eq!(ms(0, "key-1"), 1_080);
        assert_eq!(ms(1, "key-1"), 1_011);
        assert_eq!(ms(2, "key-1"), 2_296);
        assert_eq!(ms(3, "key-1"), 3_784);
        assert_eq!(ms(30, "key-1"), 205_241);
        assert_eq!(ms(u32::MAX, "k"), 207_036);
        assert_eq!(ms(5, ""), 17_208);
        let key = "default/daily-standup@2025-01-01T09:00:00Z";
        assert_eq!(ms(10, key), 232_129);
    }

    #[test]
    fn deterministic_per_key_and_attempt() {
        assert_eq!(backoff(3, "key-1"), backoff(3, "key-1"));
        // Pinned values: a change to the formula changes retry times written in status.
        assert_eq!(backoff(1, "key-1"), Duration::from_millis(1_011));
        assert_eq!(backoff(3, "key-1"), Duration::from_millis(3_784));
        assert_eq!(backoff(30, "key-1"), Duration::from_millis(205_241));
        assert_ne!(backoff(3, "key-1"), backoff(3, "key-2"));
        assert_ne!(backoff(9, "key-1"), backoff(10, "key-1") / 2);
        let spread: std::collections::HashSet<_> =
            (0..50).map(|i| backoff(5, &format!("key-{i}"))).collect();
        assert!(
            spread.len() > 40,
            "jitter does not spread keys: {} distinct of 50",
            spread.len()
        );
        let mean = (0..1000)
            .map(|i| backoff(10, &format!("k{i}")).as_millis() as f64)
            .sum::<f64>()
            / 1000.0;
        let n = nominal_ms(10) as f64;
        assert!(
            (mean - n).abs() < n * 0.03,
            "jitter is biased: mean {mean} vs {n}"
        );
    }

    #[test]
    fn circuit_spread_is_half_the_cool_down_up_to_5s() {
        assert_eq!(
            circuit_spread(Duration::from_secs(30)),
            Duration::from_secs(5)
        );
        assert_eq!(
            circuit_spread(Duration::from_secs(4)),
            Duration::from_secs(2)
        );
        assert_eq!(circuit_spread(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn circuit_retries_spread_over_the_window_and_never_early() {
        let retry_in = Duration::from_millis(12_345);
        for spread in [Duration::from_secs(5), Duration::from_millis(500)] {
            const BUCKETS: usize = 50;
            let mut hit = [false; BUCKETS];
            for i in 0..1000 {
                let key = format!("rt-0b5e6c1a-{i}-20260101T090000Z");
                let at = circuit_retry(retry_in, spread, &key);
                assert!(at >= retry_in, "{key}: {at:?} before {retry_in:?}");
                let offset = at - retry_in;
                assert!(offset < spread, "{key}: {offset:?} beyond {spread:?}");
                assert_eq!(
                    at,
                    circuit_retry(retry_in, spread, &key),
                    "not deterministic"
                );
                hit[(offset.as_nanos() * BUCKETS as u128 / spread.as_nanos()) as usize] = true;
            }
            let covered = hit.iter().filter(|h| **h).count();
            assert!(
                covered * 10 >= BUCKETS * 8,
                "{spread:?}: 1000 keys cover only {covered} of {BUCKETS} slices"
            );
        }
        // No window, no offset; no overflow at the far end.
        assert_eq!(circuit_retry(retry_in, Duration::ZERO, "k"), retry_in);
        assert_eq!(
            circuit_retry(Duration::MAX, Duration::from_secs(5), "k"),
            Duration::MAX
        );
    }
}
