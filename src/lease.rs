//! Leader election on a `coordination.k8s.io/v1` Lease, with fencing.
//!
//! Semantics follow client-go's `leaderelection` package, with one deliberate difference: our
//! own leadership ends at a *local* deadline computed from the moment a successful acquire or
//! renew request was **sent**, minus a safety margin. A candidate only starts its expiry clock
//! when it *observes* our write, which happens after we sent it, so a holder that stops renewing
//! always stops acting before anyone else can take the lease over, however slow the network.
//!
//! Usage: build a [`LeaseElector`], hand out [`LeaseElector::leadership`] to whatever must be
//! fenced, and spawn [`LeaseElector::run`] with a shutdown future. On shutdown the lease is
//! released so a standby takes over at once.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Field manager recorded on our Lease writes.
const FIELD_MANAGER: &str = "recur-leader-election";

/// Errors of leader election.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The configuration cannot give the fencing guarantee (or cannot be written to a Lease).
    #[error("invalid leader election configuration: {0}")]
    InvalidConfig(String),
    /// Releasing the lease on shutdown failed; leadership had already been given up locally, so
    /// a standby simply waits for the lease to expire.
    #[error("could not release lease {namespace}/{name} on shutdown: {reason}")]
    Release {
        namespace: String,
        name: String,
        reason: String,
    },
}

/// Leader election settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Name of the Lease object.
    pub name: String,
    /// Namespace of the Lease object.
    pub namespace: String,
    /// Our holder identity; must be unique per process (see [`default_identity`]).
    pub identity: String,
    /// How long a lease is valid without renewal (written as `leaseDurationSeconds`, rounded up).
    pub lease_duration: Duration,
    /// Time between successful renewals.
    pub renew_period: Duration,
    /// Time between attempts when acquiring, or after a failed renewal.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// A config with the defaults: lease 15 s, renew every 5 s, retry every 2 s.
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        identity: impl Into<String>,
    ) -> LeaseConfig {
        LeaseConfig {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_period: Duration::from_secs(5),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Safety margin subtracted from the lease duration for our own deadline:
/// `max(lease_duration / 5, 2 s)`. It absorbs clock-rate differences between us and other
/// candidates (up to 20 %) and timer/scheduling slop; network delay needs no margin because our
/// deadline starts when the request is sent.
pub fn safety_margin(lease_duration: Duration) -> Duration {
    (lease_duration / 5).max(Duration::from_secs(2))
}

/// Our leadership deadline after a successful write sent at `sent`.
fn leadership_deadline(sent: Instant, lease_duration: Duration, margin: Duration) -> Instant {
    sent + lease_duration.saturating_sub(margin)
}

/// True iff `deadline` exists and is at least `d` after `now`.
fn deadline_allows(deadline: Option<Instant>, now: Instant, d: Duration) -> bool {
    match (deadline, now.checked_add(d)) {
        (Some(deadline), Some(needed)) => needed <= deadline,
        _ => false,
    }
}

/// How long another holder's lease lasts, from its `leaseDurationSeconds`; a missing or
/// non-positive value falls back to our own configured duration.
fn observed_duration(lease_duration_seconds: Option<i32>, fallback: Duration) -> Duration {
    match lease_duration_seconds {
        Some(s) if s > 0 => Duration::from_secs(u64::from(s.unsigned_abs())),
        _ => fallback,
    }
}

/// A lease observed (locally) at `observed_at` and unchanged since is expired once the
/// observation is older than its duration. Remote timestamps are never compared to our clock.
fn observation_expired(observed_at: Instant, duration: Duration, now: Instant) -> bool {
    now.saturating_duration_since(observed_at) > duration
}

/// Whether we currently lead. Cheap to clone and to query; the answer is computed from a local
/// deadline at each call, so it turns false on time even if the election task is stalled.
#[derive(Clone, Debug)]
pub struct Leadership {
    inner: Arc<LeadershipInner>,
}

#[derive(Debug)]
struct LeadershipInner {
    always: bool,
    deadline: Mutex<Option<Instant>>,
    /// False while this replica's clock is too far from the API server's (see `crate::clock`):
    /// schedule decisions use the local clock, so such a replica must not lead.
    clock_trusted: std::sync::atomic::AtomicBool,
    changes: watch::Sender<bool>,
}

impl Leadership {
    /// Leader election disabled: always leader.
    pub fn always() -> Leadership {
        Leadership::with(true)
    }

    fn follower() -> Leadership {
        Leadership::with(false)
    }

    fn with(always: bool) -> Leadership {
        let (changes, _) = watch::channel(always);
        Leadership {
            inner: Arc::new(LeadershipInner {
                always,
                deadline: Mutex::new(None),
                clock_trusted: std::sync::atomic::AtomicBool::new(true),
                changes,
            }),
        }
    }

    /// True iff we hold the lease now (`valid_for(Duration::ZERO)`).
    pub fn is_leader(&self) -> bool {
        self.valid_for(Duration::ZERO)
    }

    /// True iff we hold the lease and our local deadline is at least `d` away. Use it before an
    /// action that must finish while we still lead (e.g. pass the action's timeout).
    pub fn valid_for(&self, d: Duration) -> bool {
        self.clock_trusted()
            && (self.inner.always || deadline_allows(self.deadline(), Instant::now(), d))
    }

    /// Whether this replica's clock agrees with the API server's (true until measured).
    pub fn clock_trusted(&self) -> bool {
        self.inner
            .clock_trusted
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records whether the clock can be trusted. An untrusted replica stops acting at once and
    /// its elector hands the lease over; trusted again, it campaigns again (and a replica
    /// without election is announced as leader again, so every object is reconciled).
    pub fn set_clock_trusted(&self, trusted: bool) {
        self.inner
            .clock_trusted
            .store(trusted, std::sync::atomic::Ordering::Relaxed);
        self.announce();
    }

    /// Publishes the current state on `changes` if it differs from the last one published.
    fn announce(&self) {
        let now = self.clock_trusted() && (self.inner.always || self.deadline().is_some());
        self.inner
            .changes
            .send_if_modified(|leading| std::mem::replace(leading, now) != now);
    }

    /// A receiver that flips when leadership is gained or lost. A loss by lapse is announced
    /// when the election task notices (at the deadline); [`Leadership::is_leader`] is exact.
    pub fn changes(&self) -> watch::Receiver<bool> {
        self.inner.changes.subscribe()
    }

    fn deadline(&self) -> Option<Instant> {
        *self
            .inner
            .deadline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn set_deadline(&self, deadline: Option<Instant>) {
        *self
            .inner
            .deadline
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = deadline;
        self.announce();
    }

    /// A leader until `deadline`, for tests of what is gated on leadership.
    #[cfg(test)]
    pub(crate) fn leading_until(deadline: Instant) -> Leadership {
        let leadership = Leadership::follower();
        leadership.set_deadline(Some(deadline));
        leadership
    }
}

/// An identity unique to this process: `POD_NAME` (or the hostname), the pid and a short random
/// suffix, so that a restarted container never mistakes its predecessor's lease for its own.
pub fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "recur".to_owned());
    let pid = std::process::id();
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(pid);
    let suffix = hasher.finish() & 0xff_ffff;
    format!("{host}-{pid}-{suffix:06x}")
}

/// The last distinct state of someone else's lease we saw, and when (locally) we first saw it.
#[derive(Debug)]
struct Observation {
    key: (Option<String>, Option<MicroTime>, Option<String>),
    at: Instant,
}

/// Runs the election. See the module documentation.
pub struct LeaseElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    margin: Duration,
    duration_secs: i32,
    leadership: Leadership,
    /// The lease as we last wrote it while holding it (its resourceVersion is our next precondition).
    held: Option<Lease>,
    observed: Option<Observation>,
}

enum CallError {
    Api(kube::Error),
    TimedOut(Duration),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Api(e) => write!(f, "{e}"),
            CallError::TimedOut(d) => write!(f, "no answer from the API server within {d:?}"),
        }
    }
}

impl CallError {
    /// 409: our resourceVersion precondition failed, or the object already exists.
    fn is_conflict(&self) -> bool {
        matches!(self, CallError::Api(kube::Error::Api(s))
            if s.code == 409 || s.is_conflict() || s.is_already_exists())
    }
}

impl LeaseElector {
    /// Validates `cfg` and prepares an elector; nothing is sent until [`LeaseElector::run`].
    pub fn new(client: kube::Client, cfg: LeaseConfig) -> Result<LeaseElector, LeaseError> {
        let bad = |m: String| Err(LeaseError::InvalidConfig(m));
        if cfg.name.is_empty() || cfg.namespace.is_empty() {
            return bad("the lease name and namespace must not be empty".into());
        }
        if cfg.identity.is_empty() {
            return bad("the holder identity must not be empty".into());
        }
        if cfg.renew_period.is_zero() || cfg.retry_period.is_zero() {
            return bad("renew_period and retry_period must be greater than zero".into());
        }
        let margin = safety_margin(cfg.lease_duration);
        if cfg.lease_duration <= margin + cfg.renew_period {
            return bad(format!(
                "lease_duration ({:?}) must exceed renew_period ({:?}) plus the safety margin ({margin:?})",
                cfg.lease_duration, cfg.renew_period
            ));
        }
        let secs = cfg.lease_duration.as_secs() + u64::from(cfg.lease_duration.subsec_nanos() > 0);
        let Ok(duration_secs) = i32::try_from(secs) else {
            return bad(format!("lease_duration ({secs}s) is too long"));
        };
        Ok(LeaseElector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            margin,
            duration_secs,
            leadership: Leadership::follower(),
            held: None,
            observed: None,
        })
    }

    /// The handle to query and watch leadership.
    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// Campaigns for and keeps the lease until `shutdown` completes, then gives up leadership
    /// locally and releases the lease. API errors are logged and retried, never fatal; the only
    /// error is a failed release.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), LeaseError> {
        let mut shutdown = pin!(shutdown);
        loop {
            let wake = tokio::select! {
                biased;
                () = &mut shutdown => break,
                wake = self.step() => wake,
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
        self.release().await
    }

    /// One acquire or renew attempt; returns when to try next.
    async fn step(&mut self) -> Instant {
        if !self.leadership.clock_trusted() {
            // Hand the lease to a replica whose clock agrees with the API server's.
            if self.held.is_some() {
                warn!(lease = %self.cfg.name, "this replica's clock is skewed: giving up the lease");
                if let Err(e) = self.hand_over().await {
                    warn!("{e}");
                }
            }
            return Instant::now() + self.cfg.retry_period;
        }
        if self.announced() && !self.leadership.is_leader() {
            // Keep `held`: if nobody else wrote, renewing with its resourceVersion is still safe.
            self.announce_loss("the renewal deadline passed without a successful renewal");
        }
        if self.leadership.is_leader() {
            self.renew().await
        } else {
            self.try_acquire().await
        }
    }

    async fn try_acquire(&mut self) -> Instant {
        let retry = Instant::now() + self.cfg.retry_period;
        let current = match self.call(self.api.get_opt(&self.cfg.name)).await {
            Ok(current) => current,
            Err(e) => {
                warn!(lease = %self.cfg.name, "could not read the lease: {e}");
                return retry;
            }
        };
        let now = Instant::now();
        let Some(current) = current else {
            return self.create().await;
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let observed_at = self.observe(&current, now);
        if holder == self.cfg.identity {
            // Ours (e.g. our renewals lapsed locally but nobody took over): renewing with the
            // observed resourceVersion is as safe as a takeover.
            self.held = Some(current);
            return self.renew().await;
        }
        self.held = None; // someone else's now: nothing of ours to renew or release
        let duration = observed_duration(spec.lease_duration_seconds, self.cfg.lease_duration);
        if !holder.is_empty() && !observation_expired(observed_at, duration, now) {
            return retry
                .min(observed_at + duration + Duration::from_millis(1))
                .max(now);
        }
        let lease = self.claimed(&current);
        let sent = Instant::now();
        match self
            .call(self.api.replace(&self.cfg.name, &pp(), &lease))
            .await
        {
            Ok(written) => {
                self.gain(sent, written);
                sent + self.cfg.renew_period
            }
            Err(e) if e.is_conflict() => {
                info!(lease = %self.cfg.name, "another candidate took the lease first");
                Instant::now()
            }
            Err(e) => {
                warn!(lease = %self.cfg.name, "could not take over the lease: {e}");
                retry
            }
        }
    }

    async fn create(&mut self) -> Instant {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.cfg.name.clone()),
                namespace: Some(self.cfg.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec::default()),
        };
        let lease = self.claimed(&lease);
        let sent = Instant::now();
        match self.call(self.api.create(&pp(), &lease)).await {
            Ok(written) => {
                self.gain(sent, written);
                sent + self.cfg.renew_period
            }
            Err(e) if e.is_conflict() => {
                debug!(lease = %self.cfg.name, "another candidate created the lease first");
                Instant::now()
            }
            Err(e) => {
                warn!(lease = %self.cfg.name, "could not create the lease: {e}");
                Instant::now() + self.cfg.retry_period
            }
        }
    }

    async fn renew(&mut self) -> Instant {
        let Some(held) = &self.held else {
            return Instant::now();
        };
        let lease = self.claimed(held);
        let sent = Instant::now();
        match self
            .call(self.api.replace(&self.cfg.name, &pp(), &lease))
            .await
        {
            Ok(written) => {
                self.gain(sent, written);
                sent + self.cfg.renew_period
            }
            Err(e) if e.is_conflict() => {
                // Someone wrote the lease since our last write (possibly our own timed-out
                // renewal). Re-read it: if it is still ours we retry at once, else we lost.
                match self.call(self.api.get_opt(&self.cfg.name)).await {
                    Ok(Some(current)) if holder_of(&current) == self.cfg.identity => {
                        self.held = Some(current);
                        Instant::now()
                    }
                    Ok(current) => {
                        let by = current.as_ref().map(holder_of).unwrap_or_default();
                        self.lose(&format!("the lease was taken by {by:?}"));
                        Instant::now()
                    }
                    Err(e) => self.renew_failed(&e),
                }
            }
            Err(e) => self.renew_failed(&e),
        }
    }

    fn renew_failed(&self, e: &CallError) -> Instant {
        warn!(lease = %self.cfg.name, "could not renew the lease: {e}");
        let next = Instant::now() + self.cfg.retry_period;
        // Wake at the deadline at the latest, so the loss is announced on time.
        self.leadership.deadline().map_or(next, |d| next.min(d))
    }

    /// Records a distinct lease state with the local time we first saw it; returns that time.
    fn observe(&mut self, lease: &Lease, now: Instant) -> Instant {
        let spec = lease.spec.as_ref();
        let key = (
            spec.and_then(|s| s.holder_identity.clone()),
            spec.and_then(|s| s.renew_time.clone()),
            lease.metadata.resource_version.clone(),
        );
        match &self.observed {
            Some(o) if o.key == key => o.at,
            previous => {
                let holder = key.0.clone().unwrap_or_default();
                let changed = previous.as_ref().is_none_or(|p| p.key.0 != key.0);
                if changed && !holder.is_empty() && holder != self.cfg.identity {
                    info!(lease = %self.cfg.name, leader = %holder, "observed leader {holder}");
                }
                self.observed = Some(Observation { key, at: now });
                now
            }
        }
    }

    /// `base` rewritten to name us the holder, renewed now. Keeps its resourceVersion, which
    /// makes the write conditional on nobody else having written since we read it.
    fn claimed(&self, base: &Lease) -> Lease {
        let mut lease = base.clone();
        let old = lease.spec.take().unwrap_or_default();
        let now = Some(MicroTime(jiff::Timestamp::now()));
        let ours = old.holder_identity.as_deref() == Some(self.cfg.identity.as_str());
        let transitions = old.lease_transitions.unwrap_or(0);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(self.duration_secs),
            acquire_time: if ours {
                old.acquire_time.or(now.clone())
            } else {
                now.clone()
            },
            renew_time: now,
            // A new holder of an existing lease is a transition; a fresh lease starts at 0.
            lease_transitions: Some(if ours || base.metadata.resource_version.is_none() {
                transitions
            } else {
                transitions.saturating_add(1)
            }),
            ..old
        });
        lease
    }

    /// Whether we hold the lease as far as the election knows (whatever the clock says).
    fn announced(&self) -> bool {
        self.leadership.deadline().is_some()
    }

    fn gain(&mut self, sent: Instant, written: Lease) {
        let was_leader = self.announced();
        self.leadership.set_deadline(Some(leadership_deadline(
            sent,
            self.cfg.lease_duration,
            self.margin,
        )));
        self.held = Some(written);
        self.observed = None;
        if !was_leader {
            info!(lease = %self.cfg.name, identity = %self.cfg.identity, "became leader");
        }
    }

    fn announce_loss(&self, reason: &str) {
        self.leadership.set_deadline(None);
        warn!(lease = %self.cfg.name, identity = %self.cfg.identity, "lost leadership: {reason}");
    }

    fn lose(&mut self, reason: &str) {
        self.held = None;
        if self.announced() {
            self.announce_loss(reason);
        }
    }

    /// Stops leading locally first, then hands the lease over (empty holder, 1 s duration).
    async fn release(mut self) -> Result<(), LeaseError> {
        self.hand_over().await
    }

    async fn hand_over(&mut self) -> Result<(), LeaseError> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        if self.announced() {
            info!(lease = %self.cfg.name, "gave up leadership on shutdown");
        }
        self.leadership.set_deadline(None);
        let mut current = held;
        for _ in 0..2 {
            let mut lease = current.clone();
            let old = lease.spec.take().unwrap_or_default();
            lease.spec = Some(LeaseSpec {
                holder_identity: Some(String::new()),
                lease_duration_seconds: Some(1),
                renew_time: Some(MicroTime(jiff::Timestamp::now())),
                ..old
            });
            let err = match self
                .call(self.api.replace(&self.cfg.name, &pp(), &lease))
                .await
            {
                Ok(_) => {
                    info!(lease = %self.cfg.name, "released the lease");
                    return Ok(());
                }
                Err(e) if e.is_conflict() => e,
                Err(e) => return Err(self.release_error(&e)),
            };
            // Our cached resourceVersion is stale: release only if the lease is still ours.
            match self.call(self.api.get_opt(&self.cfg.name)).await {
                Ok(Some(fresh)) if holder_of(&fresh) == self.cfg.identity => current = fresh,
                Ok(_) => return Ok(()),
                Err(_) => return Err(self.release_error(&err)),
            }
        }
        Err(LeaseError::Release {
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.name.clone(),
            reason: "the lease kept changing under us".into(),
        })
    }

    fn release_error(&self, e: &CallError) -> LeaseError {
        LeaseError::Release {
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.name.clone(),
            reason: e.to_string(),
        }
    }

    /// Bounds every API call: never past our deadline while leading (so the loss is noticed on
    /// time), and never longer than one lease duration otherwise (kube has no read timeout).
    async fn call<T>(&self, fut: impl Future<Output = kube::Result<T>>) -> Result<T, CallError> {
        let mut limit = self.cfg.lease_duration;
        if let Some(deadline) = self.leadership.deadline() {
            limit = limit.min(deadline.saturating_duration_since(Instant::now()));
        }
        match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(CallError::Api(e)),
            Err(_) => Err(CallError::TimedOut(limit)),
        }
    }
}

fn holder_of(lease: &Lease) -> String {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default()
}

fn pp() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{Value, json};
    use tower_test::mock::{Handle, SendResponse};

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn margin_is_a_fifth_or_two_seconds() {
        assert_eq!(safety_margin(15 * S), 3 * S);
        assert_eq!(safety_margin(5 * S), 2 * S);
        assert_eq!(safety_margin(60 * S), 12 * S);
    }

    #[test]
    fn deadline_counts_from_send_time_minus_margin() {
        let sent = Instant::now();
        assert_eq!(leadership_deadline(sent, 15 * S, 3 * S), sent + 12 * S);
    }

    #[test]
    fn deadline_allows_only_before_it() {
        let now = Instant::now();
        let deadline = Some(now + 10 * S);
        assert!(deadline_allows(deadline, now, Duration::ZERO));
        assert!(deadline_allows(deadline, now, 10 * S));
        assert!(!deadline_allows(deadline, now, 11 * S));
        assert!(!deadline_allows(deadline, now + 11 * S, Duration::ZERO));
        assert!(!deadline_allows(None, now, Duration::ZERO));
    }

    #[test]
    fn expiry_is_judged_on_local_observation() {
        let seen = Instant::now();
        let d = observed_duration(Some(15), 60 * S);
        assert_eq!(d, 15 * S);
        assert!(!observation_expired(seen, d, seen + 15 * S));
        assert!(observation_expired(seen, d, seen + 16 * S));
        // A clock earlier than the observation never counts as expired.
        assert!(!observation_expired(seen + 5 * S, d, seen));
        assert_eq!(observed_duration(None, 60 * S), 60 * S);
        assert_eq!(observed_duration(Some(0), 60 * S), 60 * S);
    }

    /// The fencing invariant: the holder stops before a candidate that observed the holder's last
    /// write (at or after it was sent) can consider the lease expired, for any network delay.
    #[test]
    fn holder_stops_before_any_observer_can_take_over() {
        let base = Instant::now();
        for lease_secs in [3u32, 5, 15, 60, 137] {
            let duration = lease_secs * S;
            let margin = safety_margin(duration);
            for delay_ms in [0u64, 1, 500, 5_000, 120_000] {
                let sent = base;
                let observed = sent + Duration::from_millis(delay_ms);
                let deadline = leadership_deadline(sent, duration, margin);
                let secs = i32::try_from(lease_secs).unwrap();
                let other_duration = observed_duration(Some(secs), Duration::ZERO);
                // The first instant the observer may take over:
                let takeover = observed + other_duration;
                assert!(observation_expired(
                    observed,
                    other_duration,
                    takeover + Duration::from_nanos(1)
                ));
                assert!(
                    deadline + margin <= takeover,
                    "{lease_secs}s / {delay_ms}ms"
                );
                assert!(!deadline_allows(Some(deadline), takeover, Duration::ZERO));
            }
        }
    }

    #[tokio::test]
    async fn config_must_leave_room_for_renewals() {
        let client = mock_client().0;
        let mut cfg = LeaseConfig::new("recur", "default", "me");
        assert!(LeaseElector::new(client.clone(), cfg.clone()).is_ok());
        cfg.renew_period = 12 * S; // 15 s lease − 3 s margin leaves 12 s: not enough
        assert!(matches!(
            LeaseElector::new(client.clone(), cfg.clone()),
            Err(LeaseError::InvalidConfig(_))
        ));
        cfg = LeaseConfig::new("recur", "default", "");
        assert!(LeaseElector::new(client, cfg).is_err());
    }

    #[test]
    fn identities_differ() {
        let a = default_identity();
        assert!(!a.is_empty());
        assert!(a.contains(&std::process::id().to_string()));
        // RandomState is seeded per instance, so two identities are very unlikely to collide.
        let b = default_identity();
        let c = default_identity();
        assert!(a != b || b != c);
    }

    #[test]
    fn always_is_leader() {
        let l = Leadership::always();
        assert!(l.is_leader() && l.valid_for(3600 * S));
        assert!(*l.changes().borrow());
        let f = Leadership::follower();
        assert!(!f.is_leader());
        f.set_deadline(Some(Instant::now() + 10 * S));
        assert!(f.is_leader() && !f.valid_for(11 * S));
        f.set_deadline(Some(Instant::now() - S));
        assert!(
            !f.is_leader(),
            "a passed deadline means not leader, with no task running"
        );
    }

    // ---- mock API server ----

    type Mock = Handle<Request<Body>, Response<Body>>;

    fn mock_client() -> (kube::Client, Mock) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (kube::Client::new(service, "default"), handle)
    }

    const LEASE_URL: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases";

    async fn next(handle: &mut Mock) -> (Method, String, Value, SendResponse<Response<Body>>) {
        let (req, send) = tokio::time::timeout(10 * S, handle.next_request())
            .await
            .expect("timed out waiting for a request")
            .expect("the client was dropped");
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (method, path, body, send)
    }

    fn respond(send: SendResponse<Response<Body>>, code: StatusCode, body: &Value) {
        let bytes = serde_json::to_vec(body).unwrap();
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(bytes))
                .unwrap(),
        );
    }

    fn status(code: u16, reason: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": reason})
    }

    fn with_rv(mut lease: Value, rv: &str) -> Value {
        lease["metadata"]["resourceVersion"] = json!(rv);
        lease
    }

    fn other_holders_lease(rv: &str) -> Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "recur", "namespace": "default", "resourceVersion": rv},
            "spec": {"holderIdentity": "other", "leaseDurationSeconds": 1, "leaseTransitions": 4,
                     "acquireTime": "2020-01-01T00:00:00.000000Z", "renewTime": "2020-01-01T00:00:00.000000Z"}
        })
    }

    fn test_config() -> LeaseConfig {
        LeaseConfig {
            lease_duration: 60 * S,
            renew_period: 30 * S, // no renewal happens during a test
            retry_period: Duration::from_millis(100),
            ..LeaseConfig::new("recur", "default", "me")
        }
    }

    async fn wait_for(rx: &mut watch::Receiver<bool>, want: bool) {
        tokio::time::timeout(10 * S, rx.wait_for(|v| *v == want))
            .await
            .expect("timed out waiting for leadership change")
            .unwrap();
    }

    #[tokio::test]
    async fn creates_the_lease_when_absent_and_releases_on_shutdown() {
        let (client, mut handle) = mock_client();
        let elector = LeaseElector::new(client, test_config()).unwrap();
        let leadership = elector.leadership();
        let mut changes = leadership.changes();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(elector.run(async move {
            let _ = stopped.await;
        }));

        let (method, path, _, send) = next(&mut handle).await;
        assert_eq!(
            (method, path.as_str()),
            (Method::GET, &*format!("{LEASE_URL}/recur"))
        );
        respond(send, StatusCode::NOT_FOUND, &status(404, "NotFound"));

        let (method, path, body, send) = next(&mut handle).await;
        assert_eq!((method, path.as_str()), (Method::POST, LEASE_URL));
        assert_eq!(body["spec"]["holderIdentity"], "me");
        assert_eq!(body["spec"]["leaseDurationSeconds"], 60);
        assert_eq!(body["spec"]["leaseTransitions"], 0);
        assert!(body["spec"]["acquireTime"].is_string() && body["spec"]["renewTime"].is_string());
        assert!(
            !leadership.is_leader(),
            "not leader before the create succeeded"
        );
        respond(send, StatusCode::CREATED, &with_rv(body, "1"));

        wait_for(&mut changes, true).await;
        assert!(leadership.is_leader());
        assert!(leadership.valid_for(40 * S) && !leadership.valid_for(49 * S));

        stop.send(()).unwrap();
        let (method, path, body, send) = next(&mut handle).await;
        assert_eq!(
            (method, path.as_str()),
            (Method::PUT, &*format!("{LEASE_URL}/recur"))
        );
        assert!(
            !leadership.is_leader(),
            "leadership ends before the release is sent"
        );
        assert_eq!(body["metadata"]["resourceVersion"], "1");
        assert_eq!(body["spec"]["holderIdentity"], "");
        assert_eq!(body["spec"]["leaseDurationSeconds"], 1);
        respond(send, StatusCode::OK, &with_rv(body, "2"));
        task.await.unwrap().unwrap();
        assert!(!*changes.borrow());
    }

    #[tokio::test]
    async fn takes_over_only_after_local_expiry() {
        let (client, mut handle) = mock_client();
        let elector = LeaseElector::new(client, test_config()).unwrap();
        let leadership = elector.leadership();
        let mut changes = leadership.changes();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(elector.run(async move {
            let _ = stopped.await;
        }));

        // The lease's timestamps are years old, yet only local observation counts.
        let first_seen = Instant::now();
        let mut gets = 0;
        let takeover = loop {
            let (method, _, body, send) = next(&mut handle).await;
            if method == Method::PUT {
                break (body, send);
            }
            assert_eq!(method, Method::GET);
            gets += 1;
            respond(send, StatusCode::OK, &other_holders_lease("5"));
        };
        assert!(
            first_seen.elapsed() > S,
            "took over before the 1 s lease expired locally"
        );
        assert!(gets >= 2, "observed more than once before taking over");
        let (body, send) = takeover;
        assert_eq!(body["metadata"]["resourceVersion"], "5");
        assert_eq!(body["spec"]["holderIdentity"], "me");
        assert_eq!(body["spec"]["leaseTransitions"], 5);
        assert_eq!(body["spec"]["leaseDurationSeconds"], 60);
        assert!(!leadership.is_leader());
        respond(send, StatusCode::OK, &with_rv(body, "6"));
        wait_for(&mut changes, true).await;

        stop.send(()).unwrap();
        let (method, _, body, send) = next(&mut handle).await;
        assert_eq!(method, Method::PUT);
        assert_eq!(body["metadata"]["resourceVersion"], "6");
        assert_eq!(body["spec"]["holderIdentity"], "");
        respond(send, StatusCode::OK, &with_rv(body, "7"));
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn conflict_on_takeover_goes_back_to_observing() {
        let (client, mut handle) = mock_client();
        let elector = LeaseElector::new(client, test_config()).unwrap();
        let leadership = elector.leadership();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(elector.run(async move {
            let _ = stopped.await;
        }));

        // A released lease (empty holder) is taken at once…
        let (method, _, _, send) = next(&mut handle).await;
        assert_eq!(method, Method::GET);
        let mut released = other_holders_lease("8");
        released["spec"]["holderIdentity"] = json!("");
        respond(send, StatusCode::OK, &released);
        let (method, _, body, send) = next(&mut handle).await;
        assert_eq!(method, Method::PUT);
        assert_eq!(body["metadata"]["resourceVersion"], "8");
        // …but someone else won the race.
        respond(send, StatusCode::CONFLICT, &status(409, "Conflict"));

        let (method, _, _, send) = next(&mut handle).await;
        assert_eq!(method, Method::GET, "after a conflict we observe again");
        assert!(!leadership.is_leader());
        let mut won = other_holders_lease("9");
        won["spec"]["holderIdentity"] = json!("third");
        won["spec"]["leaseDurationSeconds"] = json!(60);
        respond(send, StatusCode::OK, &won);

        // While "third" holds a fresh lease we only read.
        let (method, _, _, send) = next(&mut handle).await;
        assert_eq!(method, Method::GET);
        assert!(!leadership.is_leader());
        stop.send(()).unwrap();
        drop(send); // the in-flight read is abandoned; nothing to release
        task.await.unwrap().unwrap();
        assert!(!leadership.is_leader());
    }

    /// Answers every request with a 500 until the elector task ends; returns its result.
    async fn fail_until_done(
        handle: &mut Mock,
        task: tokio::task::JoinHandle<Result<(), LeaseError>>,
    ) -> Result<(), LeaseError> {
        let mut task = task;
        loop {
            tokio::select! {
                done = &mut task => return done.unwrap(),
                req = handle.next_request() => match req {
                    Some((_, send)) => {
                        respond(send, StatusCode::INTERNAL_SERVER_ERROR, &status(500, "InternalError"))
                    }
                    None => return task.await.unwrap(),
                },
            }
        }
    }

    async fn become_leader_by_create(handle: &mut Mock) -> Instant {
        let (method, _, _, send) = next(handle).await;
        assert_eq!(method, Method::GET);
        respond(send, StatusCode::NOT_FOUND, &status(404, "NotFound"));
        let (method, _, body, send) = next(handle).await;
        assert_eq!(method, Method::POST);
        let received = Instant::now();
        respond(send, StatusCode::CREATED, &with_rv(body, "1"));
        received
    }

    #[tokio::test]
    async fn failed_renewals_lapse_at_the_send_time_deadline() {
        let (client, mut handle) = mock_client();
        let cfg = LeaseConfig {
            lease_duration: 3 * S, // margin 2 s: the deadline is 1 s after a renewal is sent
            renew_period: Duration::from_millis(500),
            retry_period: Duration::from_millis(100),
            ..LeaseConfig::new("recur", "default", "me")
        };
        let elector = LeaseElector::new(client, cfg).unwrap();
        let leadership = elector.leadership();
        let mut changes = leadership.changes();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(elector.run(async move {
            let _ = stopped.await;
        }));
        become_leader_by_create(&mut handle).await;
        wait_for(&mut changes, true).await;

        // A renewal whose answer is slow: the deadline still counts from when it was sent.
        let (method, _, body, send) = next(&mut handle).await;
        let renewal_received = Instant::now();
        assert_eq!(method, Method::PUT);
        assert_eq!(body["metadata"]["resourceVersion"], "1");
        assert_eq!(body["spec"]["holderIdentity"], "me");
        tokio::time::sleep(Duration::from_millis(300)).await; // simulated network latency
        respond(send, StatusCode::OK, &with_rv(body, "2"));

        // The next renewal carries the new resourceVersion; from now on every renewal fails.
        let (method, _, body, send) = next(&mut handle).await;
        assert_eq!(method, Method::PUT);
        assert_eq!(body["metadata"]["resourceVersion"], "2");
        let bound = (renewal_received + S + Duration::from_millis(1))
            .saturating_duration_since(Instant::now());
        assert!(
            !leadership.valid_for(bound),
            "deadline must be at most 1 s after the renewal was sent"
        );
        respond(
            send,
            StatusCode::INTERNAL_SERVER_ERROR,
            &status(500, "InternalError"),
        );
        loop {
            tokio::select! {
                biased;
                lost = changes.wait_for(|leading| !*leading) => { lost.unwrap(); break; }
                req = handle.next_request() => {
                    let (req, send) = req.unwrap();
                    // Renewals while leading; a read only once leadership has lapsed.
                    assert!(req.method() == Method::PUT || !leadership.is_leader());
                    respond(send, StatusCode::INTERNAL_SERVER_ERROR, &status(500, "InternalError"));
                }
            }
        }
        assert!(!leadership.is_leader());
        stop.send(()).unwrap();
        // Still recorded as holder, so shutdown tries to release; the API keeps failing.
        let result = fail_until_done(&mut handle, task).await;
        assert!(
            matches!(result, Err(LeaseError::Release { .. })),
            "{result:?}"
        );
        assert!(!leadership.is_leader());
    }

    #[tokio::test]
    async fn renewal_conflict_with_a_new_holder_loses_at_once() {
        let (client, mut handle) = mock_client();
        let cfg = LeaseConfig {
            renew_period: Duration::from_millis(100),
            ..test_config()
        };
        let elector = LeaseElector::new(client, cfg).unwrap();
        let leadership = elector.leadership();
        let mut changes = leadership.changes();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(elector.run(async move {
            let _ = stopped.await;
        }));
        become_leader_by_create(&mut handle).await;
        wait_for(&mut changes, true).await;

        let (method, _, _, send) = next(&mut handle).await;
        assert_eq!(method, Method::PUT);
        respond(send, StatusCode::CONFLICT, &status(409, "Conflict"));
        let (method, _, _, send) = next(&mut handle).await;
        assert_eq!(method, Method::GET, "a conflict is checked by re-reading");
        let mut taken = other_holders_lease("3");
        taken["spec"]["leaseDurationSeconds"] = json!(60);
        respond(send, StatusCode::OK, &taken);
        wait_for(&mut changes, false).await;
        assert!(!leadership.is_leader());

        stop.send(()).unwrap();
        // Not the holder any more: nothing to release, whatever else is in flight.
        fail_until_done(&mut handle, task).await.unwrap();
    }
}
