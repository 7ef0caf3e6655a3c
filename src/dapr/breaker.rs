//! One circuit breaker per app id, so a failing backend stops costing a timeout per occurrence
//! and gets a rest, while other apps are unaffected.
//!
//! Closed: calls pass; `failure_threshold` consecutive retryable failures open it. Open: calls are
//! refused for `cool_down`. Then half-open: one probe passes (others are refused until it ends or
//! `probe_timeout` passes); success closes, failure opens again. Results of calls that started
//! under an earlier state (a generation ago) are ignored, so stragglers cannot flip the state.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Breaker state, as exported in metrics: 0 closed, 1 half-open, 2 open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half-open",
            BreakerState::Open => "open",
        }
    }
}

/// Breaker tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive retryable failures that open the breaker (at least 1).
    pub failure_threshold: u32,
    /// How long an open breaker refuses calls before letting a probe through.
    pub cool_down: Duration,
    /// How long a probe may take before another one is allowed (a probe whose caller vanished
    /// must not keep the breaker half-open for ever). The client sets it to its call timeout.
    pub probe_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            cool_down: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(10),
        }
    }
}

/// The time source of the breakers; tests inject a fake one instead of sleeping.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

#[derive(Clone, Copy, Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_started: Instant },
}

#[derive(Debug)]
struct Breaker {
    state: State,
    /// Bumped on every state change; a [`Permit`] from another generation records nothing.
    generation: u64,
}

/// Leave to make one call, obtained from [`Breakers::try_acquire`].
#[derive(Clone, Debug)]
pub(crate) struct Permit {
    app: String,
    generation: u64,
}

/// The breakers of all app ids.
#[derive(Debug)]
pub(crate) struct Breakers {
    config: BreakerConfig,
    map: Mutex<HashMap<String, Breaker>>,
}

impl Breakers {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        let config = BreakerConfig {
            failure_threshold: config.failure_threshold.max(1),
            ..config
        };
        Breakers {
            config,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Breaker>> {
        // A panic while holding the lock cannot leave a breaker half-updated (every update is a
        // single assignment), so a poisoned lock is still usable.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A permit to call `app` now, or how long to wait before asking again.
    pub(crate) fn try_acquire(&self, app: &str, now: Instant) -> Result<Permit, Duration> {
        let mut map = self.lock();
        let b = map.entry(app.to_owned()).or_insert(Breaker {
            state: State::Closed { failures: 0 },
            generation: 0,
        });
        match b.state {
            State::Closed { .. } => {}
            State::Open { until } if now < until => return Err(until - now),
            State::Open { .. } => {
                b.state = State::HalfOpen { probe_started: now };
                b.generation += 1;
            }
            State::HalfOpen { probe_started } => {
                let probe_deadline = probe_started + self.config.probe_timeout;
                if now < probe_deadline {
                    return Err(probe_deadline - now);
                }
                // The previous probe never reported: let a new one through.
                b.state = State::HalfOpen { probe_started: now };
                b.generation += 1;
            }
        }
        Ok(Permit {
            app: app.to_owned(),
            generation: b.generation,
        })
    }

    /// Records how the permitted call went: `failed` for retryable failures (the target or the
    /// sidecar is in trouble), not for answers such as rejections.
    pub(crate) fn record(&self, permit: Permit, failed: bool, now: Instant) {
        let mut map = self.lock();
        let Some(b) = map.get_mut(&permit.app) else {
            return;
        };
        if b.generation != permit.generation {
            return;
        }
        let next = match (b.state, failed) {
            (State::Closed { .. }, false) => State::Closed { failures: 0 },
            (State::Closed { failures }, true) => {
                let failures = failures.saturating_add(1);
                if failures >= self.config.failure_threshold {
                    State::Open {
                        until: now + self.config.cool_down,
                    }
                } else {
                    State::Closed { failures }
                }
            }
            (State::HalfOpen { .. }, false) => State::Closed { failures: 0 },
            (State::HalfOpen { .. }, true) => State::Open {
                until: now + self.config.cool_down,
            },
            // Open breakers hand out no permits of their own generation.
            (State::Open { .. }, _) => return,
        };
        // Counting within Closed is not a state change: concurrent calls keep counting.
        if std::mem::discriminant(&b.state) != std::mem::discriminant(&next) {
            b.generation += 1;
        }
        b.state = next;
    }

    /// The state of every breaker seen so far, by app id. An open breaker whose cool-down has
    /// passed shows as half-open: the next call will probe.
    pub(crate) fn states(&self, now: Instant) -> Vec<(String, BreakerState)> {
        let map = self.lock();
        let mut out: Vec<(String, BreakerState)> = map
            .iter()
            .map(|(app, b)| {
                let state = match b.state {
                    State::Closed { .. } => BreakerState::Closed,
                    State::Open { until } if now < until => BreakerState::Open,
                    State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
                };
                (app.clone(), state)
            })
            .collect();
        out.sort();
        out
    }
}

impl PartialOrd for BreakerState {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for BreakerState {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (*self as u8).cmp(&(*other as u8))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const COOL: Duration = Duration::from_secs(30);
    const PROBE: Duration = Duration::from_secs(10);

    fn breakers(threshold: u32) -> Breakers {
        Breakers::new(BreakerConfig {
            failure_threshold: threshold,
            cool_down: COOL,
            probe_timeout: PROBE,
        })
    }

    fn state(b: &Breakers, app: &str, now: Instant) -> BreakerState {
        b.states(now)
            .into_iter()
            .find(|(a, _)| a == app)
            .map(|(_, s)| s)
            .unwrap()
    }

    fn fail(b: &Breakers, app: &str, now: Instant) {
        let p = b.try_acquire(app, now).unwrap();
        b.record(p, true, now);
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let b = breakers(5);
        let t0 = Instant::now();
        for _ in 0..4 {
            fail(&b, "backend", t0);
        }
        // A success resets the count.
        let p = b.try_acquire("backend", t0).unwrap();
        b.record(p, false, t0);
        for _ in 0..4 {
            fail(&b, "backend", t0);
        }
        assert_eq!(state(&b, "backend", t0), BreakerState::Closed);
        fail(&b, "backend", t0);
        assert_eq!(state(&b, "backend", t0), BreakerState::Open);
        assert_eq!(
            b.try_acquire("backend", t0 + Duration::from_secs(10))
                .unwrap_err(),
            Duration::from_secs(20)
        );
        // Other apps are unaffected.
        assert!(b.try_acquire("notification-service", t0).is_ok());
    }

    #[test]
    fn half_open_lets_one_probe_and_success_closes() {
        let b = breakers(1);
        let t0 = Instant::now();
        fail(&b, "a", t0);
        let t1 = t0 + COOL;
        assert_eq!(state(&b, "a", t1), BreakerState::HalfOpen);
        let probe = b.try_acquire("a", t1).unwrap();
        // While the probe runs, others wait (at most the probe timeout).
        let wait = b.try_acquire("a", t1 + Duration::from_secs(1)).unwrap_err();
        assert_eq!(wait, PROBE - Duration::from_secs(1));
        assert_eq!(state(&b, "a", t1), BreakerState::HalfOpen);
        b.record(probe, false, t1 + Duration::from_secs(2));
        assert_eq!(state(&b, "a", t1), BreakerState::Closed);
        assert!(b.try_acquire("a", t1 + Duration::from_secs(2)).is_ok());
    }

    #[test]
    fn failed_probe_reopens_for_a_full_cool_down() {
        let b = breakers(2);
        let t0 = Instant::now();
        fail(&b, "a", t0);
        fail(&b, "a", t0);
        let t1 = t0 + COOL + Duration::from_secs(5);
        let probe = b.try_acquire("a", t1).unwrap();
        let t2 = t1 + Duration::from_secs(3);
        b.record(probe, true, t2);
        assert_eq!(state(&b, "a", t2), BreakerState::Open);
        assert_eq!(b.try_acquire("a", t2).unwrap_err(), COOL);
        assert!(b.try_acquire("a", t2 + COOL).is_ok());
    }

    #[test]
    fn a_lost_probe_does_not_wedge_the_breaker() {
        let b = breakers(1);
        let t0 = Instant::now();
        fail(&b, "a", t0);
        let lost = b.try_acquire("a", t0 + COOL).unwrap();
        let t1 = t0 + COOL + PROBE;
        let second = b.try_acquire("a", t1).unwrap();
        // The late report of the lost probe is ignored ...
        b.record(lost, true, t1);
        assert_eq!(state(&b, "a", t1), BreakerState::HalfOpen);
        // ... and the new probe decides.
        b.record(second, false, t1);
        assert_eq!(state(&b, "a", t1), BreakerState::Closed);
    }

    #[test]
    fn stragglers_from_before_opening_are_ignored() {
        let b = breakers(2);
        let t0 = Instant::now();
        let slow_ok = b.try_acquire("a", t0).unwrap();
        let slow_fail = b.try_acquire("a", t0).unwrap();
        fail(&b, "a", t0);
        fail(&b, "a", t0);
        assert_eq!(state(&b, "a", t0), BreakerState::Open);
        b.record(slow_ok, false, t0);
        b.record(slow_fail, true, t0);
        assert_eq!(state(&b, "a", t0), BreakerState::Open);
        assert_eq!(b.try_acquire("a", t0).unwrap_err(), COOL);
    }

    #[test]
    fn concurrent_calls_keep_counting_while_closed() {
        // Ten calls start together; one succeeds first, the others then fail. The success resets
        // the count but does not void the others' failures.
        let b = breakers(5);
        let t0 = Instant::now();
        let permits: Vec<Permit> = (0..10).map(|_| b.try_acquire("a", t0).unwrap()).collect();
        let mut permits = permits.into_iter();
        b.record(permits.next().unwrap(), false, t0);
        for p in permits {
            b.record(p, true, t0);
        }
        assert_eq!(state(&b, "a", t0), BreakerState::Open);
    }

    #[test]
    fn states_are_sorted_and_numbered_for_metrics() {
        let b = breakers(1);
        let t0 = Instant::now();
        fail(&b, "zeta", t0);
        b.try_acquire("alpha", t0).unwrap();
        assert_eq!(
            b.states(t0),
            vec![
                ("alpha".to_owned(), BreakerState::Closed),
                ("zeta".to_owned(), BreakerState::Open)
            ]
        );
        assert_eq!(BreakerState::Closed as i64, 0);
        assert_eq!(BreakerState::HalfOpen as i64, 1);
        assert_eq!(BreakerState::Open as i64, 2);
        // A threshold of 0 behaves as 1.
        let b = breakers(0);
        fail(&b, "a", t0);
        assert_eq!(state(&b, "a", t0), BreakerState::Open);
    }
}
