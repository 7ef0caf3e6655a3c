//! One circuit breaker per tenant (namespace) and app id, so a failing backend stops costing a
//! timeout per occurrence and gets a rest, while other apps, and other tenants calling the same
//! app, are unaffected: one tenant's failures (its own app, its own access policy, its own quota)
//! never hold back another's calls.
//!
//! Closed: calls pass; `failure_threshold` consecutive failures open it. Open: calls are refused
//! for `cool_down`. Then half-open: one probe passes (others are refused until it ends or
//! `probe_timeout` passes); success closes, failure opens again. Results of calls that started
//! under an earlier state (a generation ago) are ignored, so stragglers cannot flip the state.
//!
//! A [`Verdict::Neutral`] answer (refused for this caller: 401, 403, 429) says nothing about
//! whether the app is up: it neither counts as a failure nor resets the count; a neutral probe
//! frees the probe slot, so the next call probes.
//!
//! Breakers that no call asked for in `idle_after` are evicted, whatever their state
//! ([`Breakers::evict_idle`]), so the map (and the metric series that follow it) only holds
//! what some task still uses: a task held back by an open breaker asks again within its backoff.
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
    /// A closed breaker without failures that no call used for this long is forgotten.
    pub idle_after: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            cool_down: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(10),
            idle_after: Duration::from_secs(600),
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

/// How a permitted call went, for the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The app answered (delivered, rejected, ...): it is up.
    Healthy,
    /// The app or the route to it is in trouble (5xx, timeouts, no connection).
    Failing,
    /// Refused for this caller (unauthorized, forbidden, rate limited): says nothing either way.
    Neutral,
}

/// A breaker's key: (tenant namespace, app id).
pub(crate) type Key = (String, String);

#[derive(Debug)]
struct Breaker {
    state: State,
    /// Bumped on every state change; a [`Permit`] from another generation records nothing.
    generation: u64,
    /// The last permit asked for or result recorded, for [`Breakers::evict_idle`].
    last_used: Instant,
}

/// Leave to make one call, obtained from [`Breakers::try_acquire`].
#[derive(Clone, Debug)]
pub(crate) struct Permit {
    key: Key,
    generation: u64,
}

/// The breakers of all (namespace, app id) pairs.
#[derive(Debug)]
pub(crate) struct Breakers {
    config: BreakerConfig,
    map: Mutex<HashMap<Key, Breaker>>,
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

    pub(crate) fn config(&self) -> &BreakerConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Breaker>> {
        // A panic while holding the lock cannot leave a breaker half-updated (every update is a
        // single assignment), so a poisoned lock is still usable.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A permit for `namespace` to call `app` now, or how long to wait before asking again.
    pub(crate) fn try_acquire(
        &self,
        namespace: &str,
        app: &str,
        now: Instant,
    ) -> Result<Permit, Duration> {
        let key = (namespace.to_owned(), app.to_owned());
        let mut map = self.lock();
        let b = map.entry(key.clone()).or_insert(Breaker {
            state: State::Closed { failures: 0 },
            generation: 0,
            last_used: now,
        });
        b.last_used = b.last_used.max(now);
        match b.state {
            State::Closed { .. } => {}
            State::Open { until } if now < until => return Err(until - now),
            State::Open { .. } => {
                b.state = State::HalfOpen { probe_started: now };
                b.generation += 1;
            }
            State::HalfOpen { probe_started } => {
                // Saturating: a probe timeout past what an Instant holds means never.
                let probe_deadline = probe_started
                    .checked_add(self.config.probe_timeout)
                    .unwrap_or(now + Duration::from_secs(86_400));
                if now < probe_deadline {
                    return Err(probe_deadline - now);
                }
                // The previous probe never reported: let a new one through.
                b.state = State::HalfOpen { probe_started: now };
                b.generation += 1;
            }
        }
        Ok(Permit {
            key,
            generation: b.generation,
        })
    }

    /// Records how the permitted call went (see [`Verdict`]).
    pub(crate) fn record(&self, permit: Permit, verdict: Verdict, now: Instant) {
        let mut map = self.lock();
        let Some(b) = map.get_mut(&permit.key) else {
            return;
        };
        b.last_used = b.last_used.max(now);
        if b.generation != permit.generation {
            return;
        }
        let next = match (b.state, verdict) {
            (State::Closed { .. }, Verdict::Neutral) => return,
            (State::Closed { .. }, Verdict::Healthy) => State::Closed { failures: 0 },
            (State::Closed { failures }, Verdict::Failing) => {
                let failures = failures.saturating_add(1);
                if failures >= self.config.failure_threshold {
                    State::Open {
                        until: now + self.config.cool_down,
                    }
                } else {
                    State::Closed { failures }
                }
            }
            (State::HalfOpen { .. }, Verdict::Healthy) => State::Closed { failures: 0 },
            (State::HalfOpen { .. }, Verdict::Failing) => State::Open {
                until: now + self.config.cool_down,
            },
            // The probe learnt nothing: the next call probes, with no further wait.
            (State::HalfOpen { .. }, Verdict::Neutral) => State::Open { until: now },
            // Open breakers hand out no permits of their own generation.
            (State::Open { .. }, _) => return,
        };
        // Counting within Closed is not a state change: concurrent calls keep counting.
        if std::mem::discriminant(&b.state) != std::mem::discriminant(&next) {
            b.generation += 1;
        }
        b.state = next;
    }

    /// The state of every breaker kept, by (namespace, app id). An open breaker whose cool-down
    /// has passed shows as half-open: the next call will probe.
    pub(crate) fn states(&self, now: Instant) -> Vec<(Key, BreakerState)> {
        let map = self.lock();
        let mut out: Vec<(Key, BreakerState)> = map
            .iter()
            .map(|(key, b)| {
                let state = match b.state {
                    State::Closed { .. } => BreakerState::Closed,
                    State::Open { until } if now < until => BreakerState::Open,
                    State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
                };
                (key.clone(), state)
            })
            .collect();
        out.sort();
        out
    }

    /// Forgets the breakers no call asked for in `idle_after`, whatever their state, and
    /// returns their keys (sorted), so the caller can drop what it keeps per key. A task waiting
    /// on an open breaker asks again within its backoff (at most 5 minutes, under the default
    /// 10 minutes), so only breakers of apps no task calls any more go; kept, a failing one would
    /// report an open breaker, and fire its alert, for good.
    pub(crate) fn evict_idle(&self, now: Instant) -> Vec<Key> {
        let idle_after = self.config.idle_after;
        let mut evicted = Vec::new();
        self.lock().retain(|key, b| {
            let idle = now.saturating_duration_since(b.last_used) >= idle_after;
            if idle {
                evicted.push(key.clone());
            }
            !idle
        });
        evicted.sort();
        evicted
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
            idle_after: IDLE,
        })
    }

    const IDLE: Duration = Duration::from_secs(600);
    /// The tenant of the tests that use one.
    const NS: &str = "team-a";

    fn key(ns: &str, app: &str) -> Key {
        (ns.to_owned(), app.to_owned())
    }

    fn acquire(b: &Breakers, app: &str, now: Instant) -> Result<Permit, Duration> {
        b.try_acquire(NS, app, now)
    }

    fn state_of(b: &Breakers, ns: &str, app: &str, now: Instant) -> BreakerState {
        b.states(now)
            .into_iter()
            .find(|(k, _)| *k == key(ns, app))
            .map(|(_, s)| s)
            .unwrap()
    }

    fn state(b: &Breakers, app: &str, now: Instant) -> BreakerState {
        state_of(b, NS, app, now)
    }

    fn call(b: &Breakers, ns: &str, app: &str, verdict: Verdict, now: Instant) {
        let p = b.try_acquire(ns, app, now).unwrap();
        b.record(p, verdict, now);
    }

    fn fail(b: &Breakers, app: &str, now: Instant) {
        call(b, NS, app, Verdict::Failing, now);
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let b = breakers(5);
        let t0 = Instant::now();
        for _ in 0..4 {
            fail(&b, "backend", t0);
        }
        // A success resets the count.
        let p = acquire(&b, "backend", t0).unwrap();
        b.record(p, Verdict::Healthy, t0);
        for _ in 0..4 {
            fail(&b, "backend", t0);
        }
        assert_eq!(state(&b, "backend", t0), BreakerState::Closed);
        fail(&b, "backend", t0);
        assert_eq!(state(&b, "backend", t0), BreakerState::Open);
        assert_eq!(
            acquire(&b, "backend", t0 + Duration::from_secs(10)).unwrap_err(),
            Duration::from_secs(20)
        );
        // Other apps are unaffected.
        assert!(acquire(&b, "notification-service", t0).is_ok());
    }

    #[test]
    fn half_open_lets_one_probe_and_success_closes() {
        let b = breakers(1);
        let t0 = Instant::now();
        fail(&b, "a", t0);
        let t1 = t0 + COOL;
        assert_eq!(state(&b, "a", t1), BreakerState::HalfOpen);
        let probe = acquire(&b, "a", t1).unwrap();
        // While the probe runs, others wait (at most the probe timeout).
        let wait = acquire(&b, "a", t1 + Duration::from_secs(1)).unwrap_err();
        assert_eq!(wait, PROBE - Duration::from_secs(1));
        assert_eq!(state(&b, "a", t1), BreakerState::HalfOpen);
        b.record(probe, Verdict::Healthy, t1 + Duration::from_secs(2));
        assert_eq!(state(&b, "a", t1), BreakerState::Closed);
        assert!(acquire(&b, "a", t1 + Duration::from_secs(2)).is_ok());
    }

    #[test]
    fn failed_probe_reopens_for_a_full_cool_down() {
        let b = breakers(2);
        let t0 = Instant::now();
        fail(&b, "a", t0);
        fail(&b, "a", t0);
        let t1 = t0 + COOL + Duration::from_secs(5);
        let probe = acquire(&b, "a", t1).unwrap();
        let t2 = t1 + Duration::from_secs(3);
        b.record(probe, Verdict::Failing, t2);
        assert_eq!(state(&b, "a", t2), BreakerState::Open);
        assert_eq!(acquire(&b, "a", t2).unwrap_err(), COOL);
        assert!(acquire(&b, "a", t2 + COOL).is_ok());
    }

    #[test]
    fn a_lost_probe_does_not_wedge_the_breaker() {
        let b = breakers(1);
        let t0 = Instant::now();
        fail(&b, "a", t0);
        let lost = acquire(&b, "a", t0 + COOL).unwrap();
        let t1 = t0 + COOL + PROBE;
        let second = acquire(&b, "a", t1).unwrap();
        // The late report of the lost probe is ignored ...
        b.record(lost, Verdict::Failing, t1);
        assert_eq!(state(&b, "a", t1), BreakerState::HalfOpen);
        // ... and the new probe decides.
        b.record(second, Verdict::Healthy, t1);
        assert_eq!(state(&b, "a", t1), BreakerState::Closed);
    }

    #[test]
    fn stragglers_from_before_opening_are_ignored() {
        let b = breakers(2);
        let t0 = Instant::now();
        let slow_ok = acquire(&b, "a", t0).unwrap();
        let slow_fail = acquire(&b, "a", t0).unwrap();
        fail(&b, "a", t0);
        fail(&b, "a", t0);
        assert_eq!(state(&b, "a", t0), BreakerState::Open);
        b.record(slow_ok, Verdict::Healthy, t0);
        b.record(slow_fail, Verdict::Failing, t0);
        assert_eq!(state(&b, "a", t0), BreakerState::Open);
        assert_eq!(acquire(&b, "a", t0).unwrap_err(), COOL);
    }

    #[test]
    fn concurrent_calls_keep_counting_while_closed() {
        // Ten calls start together; one succeeds first, the others then fail. The success resets
        // the count but does not void the others' failures.
        let b = breakers(5);
        let t0 = Instant::now();
        let permits: Vec<Permit> = (0..10).map(|_| acquire(&b, "a", t0).unwrap()).collect();
        let mut permits = permits.into_iter();
        b.record(permits.next().unwrap(), Verdict::Healthy, t0);
        for p in permits {
            b.record(p, Verdict::Failing, t0);
        }
        assert_eq!(state(&b, "a", t0), BreakerState::Open);
    }

    #[test]
    fn states_are_sorted_and_numbered_for_metrics() {
        let b = breakers(1);
        let t0 = Instant::now();
        fail(&b, "zeta", t0);
        acquire(&b, "alpha", t0).unwrap();
        assert_eq!(
            b.states(t0),
            vec![
                (key(NS, "alpha"), BreakerState::Closed),
                (key(NS, "zeta"), BreakerState::Open)
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

    #[test]
    fn one_tenant_failing_leaves_another_tenants_breaker_closed() {
        let b = breakers(2);
        let t0 = Instant::now();
        for _ in 0..5 {
            if b.try_acquire("team-a", "backend", t0).is_ok() {
                call(&b, "team-a", "backend", Verdict::Failing, t0);
            }
        }
        assert_eq!(state_of(&b, "team-a", "backend", t0), BreakerState::Open);
        // The same app, called for another tenant, is still called.
        assert!(b.try_acquire("team-b", "backend", t0).is_ok());
        assert_eq!(state_of(&b, "team-b", "backend", t0), BreakerState::Closed);
        assert_eq!(
            b.states(t0),
            vec![
                (key("team-a", "backend"), BreakerState::Open),
                (key("team-b", "backend"), BreakerState::Closed)
            ]
        );
    }

    #[test]
    fn neutral_answers_neither_open_nor_close() {
        let b = breakers(2);
        let t0 = Instant::now();
        fail(&b, "a", t0);
        // Any number of refusals (401/403/429) neither open the breaker nor reset the count ...
        for _ in 0..10 {
            call(&b, NS, "a", Verdict::Neutral, t0);
        }
        assert_eq!(state(&b, "a", t0), BreakerState::Closed);
        // ... so one more failure is the second in a row.
        fail(&b, "a", t0);
        assert_eq!(state(&b, "a", t0), BreakerState::Open);
        // A neutral probe leaves it half-open, and the next call probes at once.
        let t1 = t0 + COOL;
        let probe = acquire(&b, "a", t1).unwrap();
        b.record(probe, Verdict::Neutral, t1);
        assert_eq!(state(&b, "a", t1), BreakerState::HalfOpen);
        let probe = acquire(&b, "a", t1).unwrap();
        assert!(acquire(&b, "a", t1).is_err(), "two probes at once");
        b.record(probe, Verdict::Healthy, t1);
        assert_eq!(state(&b, "a", t1), BreakerState::Closed);
    }

    #[test]
    fn idle_breakers_are_evicted_whatever_their_state() {
        let b = breakers(1);
        let t0 = Instant::now();
        call(&b, "team-a", "quiet", Verdict::Healthy, t0);
        call(&b, "team-a", "busy", Verdict::Healthy, t0);
        call(&b, "team-b", "down", Verdict::Failing, t0);
        let b2 = breakers(3);
        call(&b2, NS, "flaky", Verdict::Failing, t0);
        // Not idle long enough yet.
        assert!(b.evict_idle(t0 + IDLE - Duration::from_secs(1)).is_empty());
        call(&b, "team-a", "busy", Verdict::Healthy, t0 + IDLE);
        // An open breaker is kept while calls still ask for it (holding them back is its
        // work: a task waiting on it asks again within its backoff, at most 5 minutes).
        let probe_at = t0 + IDLE - Duration::from_secs(1);
        call(&b, "team-b", "down", Verdict::Failing, probe_at);
        let evicted = b.evict_idle(t0 + IDLE);
        assert_eq!(evicted, vec![key("team-a", "quiet")]);
        assert_eq!(
            b.states(t0 + IDLE)
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>(),
            vec![key("team-a", "busy"), key("team-b", "down")]
        );
        let later = probe_at + IDLE - Duration::from_secs(1);
        assert!(b.evict_idle(later).is_empty());
        assert_eq!(
            b.states(later),
            vec![
                (key("team-a", "busy"), BreakerState::Closed),
                (key("team-b", "down"), BreakerState::HalfOpen)
            ]
        );
        // Once nothing has asked for one for IDLE (its tasks deleted, or pointed at another
        // app), it goes with its metric series: left, it would report an open breaker
        // (and fire the alert) for an app no task calls. So does a closed one still counting
        // failures.
        let much_later = t0 + IDLE * 2;
        assert_eq!(
            b.evict_idle(much_later),
            vec![key("team-a", "busy"), key("team-b", "down")]
        );
        assert!(b.states(much_later).is_empty());
        assert_eq!(b2.evict_idle(much_later), vec![key(NS, "flaky")]);
        // An evicted breaker starts afresh when used again; a late result for it is ignored.
        let b3 = breakers(1);
        let late = b3.try_acquire(NS, "x", t0).unwrap();
        assert_eq!(b3.evict_idle(t0 + IDLE), vec![key(NS, "x")]);
        b3.record(late, Verdict::Failing, t0 + IDLE);
        assert!(b3.states(t0 + IDLE).is_empty());
        assert!(b3.try_acquire(NS, "x", t0 + IDLE).is_ok());
    }
}
