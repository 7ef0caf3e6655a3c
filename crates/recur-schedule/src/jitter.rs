//! Deterministic jitter: the same task (seed) and occurrence get the same delay on every replica
//! and restart, so the due instant (and the wake-up) never moves between reconciles.
use chrono::{DateTime, Utc};

use crate::hash::{Fnv1a, mix64};

/// Largest jitter accepted, in milliseconds (24h).
pub const MAX_JITTER_MS: u64 = 24 * 3600 * 1000;

/// The delay in milliseconds, in `[0, max_ms)`, for `seed` (the task's UID) and `nominal`.
pub fn jitter_ms(seed: &str, nominal: DateTime<Utc>, max_ms: u64) -> u64 {
    if max_ms == 0 {
        return 0;
    }
    // FNV-1a 64 over the seed, a separator no UTF-8 text contains, and the nominal second.
    let mut h = Fnv1a::new();
    h.write(seed.as_bytes());
    h.write(&[0xff]);
    h.write(&nominal.timestamp().to_le_bytes());
    // FNV's low bits mix poorly; splitmix64's finalizer spreads them before the modulo.
    mix64(h.finish()) % max_ms
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_bounded_and_spread() {
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let max = 120_000;
        let a = jitter_ms("uid-1", t0, max);
        assert_eq!(a, jitter_ms("uid-1", t0, max));
        // Pinned: a change of hash would move every due instant of every task.
        assert_eq!(jitter_ms("uid-1", t0, max), a);
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            let t = t0 + chrono::Duration::minutes(i);
            let j = jitter_ms("uid-1", t, max);
            assert!(j < max);
            seen.insert(j / 1000);
        }
        // 1000 draws over 120 one-second buckets: all but a few are hit if the spread is fair.
        assert!(seen.len() > 110, "{}", seen.len());
        // Different tasks get different delays for the same instant.
        let others: std::collections::HashSet<u64> = (0..100)
            .map(|i| jitter_ms(&format!("uid-{i}"), t0, max))
            .collect();
        assert!(others.len() > 90);
        assert_eq!(jitter_ms("uid-1", t0, 0), 0);
        assert_eq!(jitter_ms("uid-1", t0, 1), 0);
    }

    /// Fixed outputs: jitter moves due instants already written to users' status, so the hash
    /// behind it must never change.
    #[test]
    fn jitter_ms_pinned_outputs() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let t0 = at("2026-01-01T00:00:00Z");
        assert_eq!(jitter_ms("uid-1", t0, 120_000), 24_653);
        assert_eq!(
            jitter_ms("uid-1", at("2026-01-01T00:01:00Z"), 120_000),
            33_964
        );
        assert_eq!(jitter_ms("uid-1", t0, MAX_JITTER_MS), 3_504_653);
        let uid = "9f0c1e2a-4b5d-4c6e-8f70-1a2b3c4d5e6f";
        assert_eq!(
            jitter_ms(uid, at("2025-03-30T01:30:00Z"), 3_600_000),
            3_037_072
        );
        assert_eq!(jitter_ms("", DateTime::UNIX_EPOCH, 1_000), 842);
    }
}
