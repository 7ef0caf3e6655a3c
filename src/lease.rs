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
    /// Releasing the lease (on shutdown, or handing it back) failed; leadership had already been
    /// given up locally, so another replica simply waits for the lease to expire.
    #[error("could not release lease {namespace}/{name}: {reason}")]
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
    /// Annotations written on the Lease with every acquire and renewal (shards: their count).
    pub annotations: std::collections::BTreeMap<String, String>,
}

impl LeaseConfig {
    /// A config with the defaults: lease 15 s, renew every 2 s, retry every 2 s.
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
            renew_period: Duration::from_secs(2),
            retry_period: Duration::from_secs(2),
            annotations: std::collections::BTreeMap::new(),
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
pub(crate) fn leadership_deadline(
    sent: Instant,
    lease_duration: Duration,
    margin: Duration,
) -> Instant {
    sent + lease_duration.saturating_sub(margin)
}

/// True iff `deadline` exists and is at least `d` after `now`.
pub(crate) fn deadline_allows(deadline: Option<Instant>, now: Instant, d: Duration) -> bool {
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

/// Who holds `lease` at `now` by our own watch alone, and until when: the holder it names while
/// it has stayed as first seen at `observed_at` for no longer than its duration (`fallback`
/// when it states none). None when it names nobody or that has run out. The elector and the
/// shard balancer both judge a Lease by this.
fn live_hold(
    lease: &Lease,
    observed_at: Instant,
    fallback: Duration,
    now: Instant,
) -> Option<(String, Instant)> {
    let spec = lease.spec.as_ref();
    let holder = spec
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())?;
    let duration = observed_duration(spec.and_then(|s| s.lease_duration_seconds), fallback);
    (!observation_expired(observed_at, duration, now))
        .then(|| (holder.to_owned(), observed_at + duration))
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
    /// Flips with `clock_trusted`: wakes the elector to hand the lease over at once.
    clock_changes: watch::Sender<bool>,
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
                clock_changes: watch::channel(true).0,
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
        self.inner.clock_changes.send_if_modified(|was| {
            let changed = *was != trusted;
            *was = trusted;
            changed
        });
        self.announce();
    }

    /// Publishes the current state on `changes` if it differs from the last one published.
    fn announce(&self) {
        let now = self.clock_trusted() && (self.inner.always || self.deadline().is_some());
        self.inner
            .changes
            .send_if_modified(|leading| std::mem::replace(leading, now) != now);
    }

    /// A stream that yields each time this replica becomes leader (and once at start when it
    /// is): what makes the controllers reconcile every object again.
    pub fn gained(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        use futures::StreamExt;
        futures::stream::unfold((self.changes(), true), |(mut rx, first)| async move {
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let leading = *rx.borrow_and_update();
            Some((leading, (rx, false)))
        })
        .filter_map(|leading| futures::future::ready(leading.then_some(())))
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

    /// Moves the lease's end to `deadline`, as a renewal that did not come would.
    #[cfg(test)]
    pub(crate) fn lapse_at(&self, deadline: Instant) {
        self.set_deadline(Some(deadline));
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
#[derive(Clone, Debug)]
struct Observation {
    key: ObservedKey,
    at: Instant,
}

/// A lease's holder, renew time and resourceVersion: any write changes it.
type ObservedKey = (Option<String>, Option<MicroTime>, Option<String>);

impl Observation {
    /// `lease` as first seen in its present version: `previous` when nothing was written to
    /// the lease since, else a new observation made `now`.
    fn of(lease: &Lease, previous: Option<&Observation>, now: Instant) -> Observation {
        let key = Self::key_of(lease);
        match previous {
            Some(o) if o.key == key => o.clone(),
            _ => Observation { key, at: now },
        }
    }

    fn key_of(lease: &Lease) -> ObservedKey {
        let spec = lease.spec.as_ref();
        (
            spec.and_then(|s| s.holder_identity.clone()),
            spec.and_then(|s| s.renew_time.clone()),
            lease.metadata.resource_version.clone(),
        )
    }
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
    /// `None`: always campaign (one leader). `Some`: hold the lease only while wanted.
    want: Option<watch::Receiver<Want>>,
    /// How long deliveries started under the lease may still run after we stop starting them:
    /// a lease given back is released only then.
    hand_back_after: Duration,
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
            want: None,
            hand_back_after: Duration::ZERO,
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
        let mut clock = self.leadership.inner.clock_changes.subscribe();
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
                () = want_changed(self.want.as_mut()) => {}
                // A skewed clock hands the lease over now, not at the next renewal.
                Ok(()) = clock.changed() => {}
            }
        }
        self.release().await
    }

    /// One acquire or renew attempt; returns when to try next.
    async fn step(&mut self) -> Instant {
        if !self.wanted() {
            if self.held.is_some() {
                self.give_back().await;
            } else if self.announced() {
                self.leadership.set_deadline(None);
            }
            // Woken by the next change of what is wanted.
            return Instant::now() + IDLE;
        }
        if !self.leadership.clock_trusted() {
            // Hand the lease to a replica whose clock agrees with the API server's.
            if self.held.is_some() {
                warn!(lease = %self.cfg.name, "this replica's clock is skewed: giving up the lease");
                self.give_back().await;
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
        if let Some((_, ends)) = live_hold(&current, observed_at, self.cfg.lease_duration, now) {
            return retry.min(ends + Duration::from_millis(1)).max(now);
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
        let seen = Observation::of(lease, self.observed.as_ref(), now);
        let holder = seen.key.0.as_deref().unwrap_or_default();
        let changed = self.observed.as_ref().is_none_or(|p| p.key.0 != seen.key.0);
        if changed && !holder.is_empty() && holder != self.cfg.identity {
            info!(lease = %self.cfg.name, leader = %holder, "observed leader {holder}");
        }
        let at = seen.at;
        self.observed = Some(seen);
        at
    }

    /// `base` rewritten to name us the holder, renewed now. Keeps its resourceVersion, which
    /// makes the write conditional on nobody else having written since we read it.
    fn claimed(&self, base: &Lease) -> Lease {
        let mut lease = base.clone();
        if !self.cfg.annotations.is_empty() {
            let annotations = lease.metadata.annotations.get_or_insert_default();
            for (k, v) in &self.cfg.annotations {
                annotations.insert(k.clone(), v.clone());
            }
        }
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

pub mod shards;
mod want;
pub(crate) use want::Want;
use want::{IDLE, want_changed};

#[cfg(test)]
mod tests;
