//! Per-namespace delivery rates (`limits.occurrencesPerSecond` of a TenantPolicy): a token
//! bucket per namespace whose burst is one second's worth of its rate.
//!
//! The bucket is kept as the instant it is next empty of debt (GCRA, the "generic cell rate
//! algorithm"): exact in integer time, one instant per namespace, no refill ticks. Pure: the
//! caller passes `now`, so tests need no clock.
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A namespace not seen for this long is forgotten (its bucket would be full again anyway).
pub const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Forgotten namespaces are swept at most this often, so a take stays O(1) amortised.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Token buckets, one per namespace. Shared by every kind (the limit covers tasks and
/// reminders together).
#[derive(Debug, Default)]
pub struct RateLimiter {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    buckets: HashMap<String, Bucket>,
    swept: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// The theoretical arrival time: when the bucket holds no debt. A take is allowed while it
    /// is at most `burst - 1` intervals ahead of now.
    tat: Instant,
    seen: Instant,
}

impl RateLimiter {
    pub fn new() -> Self {
        RateLimiter::default()
    }

    /// Takes one token of `namespace`'s bucket, `per_second` tokens a second with a burst of
    /// `per_second`; `Err` is how long until the next token. A rate of 0 counts as 1 (the policy
    /// allows 1 to 100,000; this never divides by zero).
    pub fn try_take(&self, namespace: &str, per_second: u32, now: Instant) -> Result<(), Duration> {
        let rate = per_second.max(1);
        let interval = Duration::from_secs(1) / rate;
        // A full bucket lets `rate` through at once: the last of them finds the debt
        // `rate - 1` intervals ahead.
        let tolerance = interval * (rate - 1);
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.sweep(now);
        let bucket = match inner.buckets.get_mut(namespace) {
            Some(bucket) => bucket,
            None => inner.buckets.entry(namespace.to_owned()).or_insert(Bucket {
                tat: now,
                seen: now,
            }),
        };
        bucket.seen = bucket.seen.max(now);
        let tat = bucket.tat.max(now);
        let ahead = tat.saturating_duration_since(now);
        if ahead > tolerance {
            return Err(ahead - tolerance);
        }
        bucket.tat = tat + interval;
        Ok(())
    }

    /// Namespaces with a bucket.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .buckets
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn sweep(&mut self, now: Instant) {
        let due = self
            .swept
            .is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_EVERY);
        if !due {
            return;
        }
        self.swept = Some(now);
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.seen) < FORGET_AFTER);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_full_bucket_lets_one_seconds_worth_through_then_paces() {
        let limiter = RateLimiter::new();
        let t0 = Instant::now();
        for i in 0..5 {
            assert_eq!(limiter.try_take("a", 5, t0), Ok(()), "take {i}");
        }
        // Empty: the next token comes one interval (200 ms) later.
        assert_eq!(limiter.try_take("a", 5, t0), Err(S / 5));
        let later = t0 + S / 10;
        assert_eq!(limiter.try_take("a", 5, later), Err(S / 10));
        assert_eq!(limiter.try_take("a", 5, t0 + S / 5), Ok(()));
        assert_eq!(limiter.try_take("a", 5, t0 + S / 5), Err(S / 5));
    }

    #[test]
    fn over_time_the_rate_holds() {
        let limiter = RateLimiter::new();
        let t0 = Instant::now();
        let mut taken = 0;
        // Try every millisecond for 10 s: the burst (10) plus 10 a second.
        for ms in 0..10_000 {
            if limiter
                .try_take("a", 10, t0 + Duration::from_millis(ms))
                .is_ok()
            {
                taken += 1;
            }
        }
        assert_eq!(taken, 10 + 100 - 1);
    }

    #[test]
    fn namespaces_have_their_own_buckets() {
        let limiter = RateLimiter::new();
        let t0 = Instant::now();
        assert_eq!(limiter.try_take("a", 1, t0), Ok(()));
        assert_eq!(limiter.try_take("a", 1, t0), Err(S));
        assert_eq!(limiter.try_take("b", 1, t0), Ok(()));
    }

    #[test]
    fn a_bucket_refills_up_to_its_burst_only() {
        let limiter = RateLimiter::new();
        let t0 = Instant::now();
        assert_eq!(limiter.try_take("a", 2, t0), Ok(()));
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(limiter.try_take("a", 2, t1), Ok(()));
        assert_eq!(limiter.try_take("a", 2, t1), Ok(()));
        assert_eq!(limiter.try_take("a", 2, t1), Err(S / 2));
    }

    #[test]
    fn a_rate_of_zero_is_one_and_a_lowered_rate_applies_at_once() {
        let limiter = RateLimiter::new();
        let t0 = Instant::now();
        assert_eq!(limiter.try_take("a", 0, t0), Ok(()));
        assert_eq!(limiter.try_take("a", 0, t0), Err(S));
        assert_eq!(limiter.try_take("b", 100, t0), Ok(()));
        assert_eq!(limiter.try_take("b", 1, t0), Err(S / 100));
    }

    #[test]
    fn namespaces_not_seen_for_ten_minutes_are_forgotten() {
        let limiter = RateLimiter::new();
        let t0 = Instant::now();
        limiter.try_take("old", 1, t0).unwrap();
        limiter.try_take("busy", 1, t0).unwrap();
        let t1 = t0 + FORGET_AFTER / 2;
        let _ = limiter.try_take("busy", 1, t1);
        assert_eq!(limiter.len(), 2);
        let t2 = t0 + FORGET_AFTER;
        let _ = limiter.try_take("busy", 1, t2);
        assert_eq!(limiter.len(), 1, "old is forgotten, busy is not");
        // A forgotten namespace comes back with a full bucket.
        assert_eq!(limiter.try_take("old", 1, t2), Ok(()));
    }
}
