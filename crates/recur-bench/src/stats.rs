//! Lag statistics and rates.
use crate::results::LagStats;

pub fn lag_stats(lags: &[i64]) -> LagStats {
    let mut sorted = lags.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    // Nearest rank.
    let rank = |q: f64| -> i64 {
        if n == 0 {
            return 0;
        }
        let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
        sorted[i]
    };
    LagStats {
        count: n,
        p50_ms: rank(0.50),
        p99_ms: rank(0.99),
        max_ms: sorted.last().copied().unwrap_or(0),
        mean_ms: if n == 0 {
            0.0
        } else {
            sorted.iter().sum::<i64>() as f64 / n as f64
        },
    }
}

pub fn per(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let lags: Vec<i64> = (1..=100).rev().collect();
        let s = lag_stats(&lags);
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms, s.count), (50, 99, 100, 100));
        assert_eq!(lag_stats(&[]).max_ms, 0);
        assert_eq!(lag_stats(&[7]).p99_ms, 7);
    }
}
