//! Shards: the objects split by UID into S parts, each with a Lease of its own, which the
//! replicas share out among themselves (`recur run --shards S`).
//!
//! Every replica holds at most one of S member Leases (`<lease>-member-<k>`), which is how the
//! replicas count each other, and campaigns for shard Leases (`<lease>-shard-<k>`) up to its
//! share (`plan`). Each Lease is held through a [`LeaseElector`] with the same fencing as the
//! single leader's; the balancer only says which ones to want, from one LIST of the namespace's
//! Leases per period. A replica reconciles every object but delivers and writes only for the
//! objects of the shards it holds ([`Leaderships::of`]).
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{Leadership, LeaseConfig, LeaseElector, LeaseError, Observation, Want, live_hold};

mod plan;
use plan::{Holder, plan};

/// The shard of an object: FNV-1a of its UID modulo the count. The UID never changes, so an
/// object never moves between shards (an owner reference, which a user can edit or orphan,
/// could move it under a call in flight); the hash is fixed across builds and replicas.
pub fn shard_of<K: Resource>(obj: &K, shards: u16) -> u16 {
    let uid = obj.meta().uid.as_deref().unwrap_or_default();
    let hash = crate::schedule::hash::fnv1a(uid.as_bytes());
    // The remainder is below `shards`, a u16.
    u16::try_from(hash % u64::from(shards.max(1))).unwrap_or(0)
}

/// The leadership of each shard this replica may act for: one Lease for every object, or one
/// per shard. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Leaderships {
    shards: Arc<[Leadership]>,
    /// The member slots' leaderships, which follow the clock check as the shards' do.
    members: Arc<[Leadership]>,
}

impl Leaderships {
    /// One Lease for every object.
    pub fn single(leadership: Leadership) -> Leaderships {
        Leaderships {
            shards: Arc::from([leadership]),
            members: Arc::from([]),
        }
    }

    /// The leadership that gates `obj`.
    pub fn of<K: Resource>(&self, obj: &K) -> &Leadership {
        let count = u16::try_from(self.shards.len()).unwrap_or(u16::MAX);
        let k = if count > 1 { shard_of(obj, count) } else { 0 };
        // `shard_of` is below the count; a single Lease is index 0.
        &self.shards[usize::from(k).min(self.shards.len() - 1)]
    }

    /// Whether this replica's gauges count `obj` as its work: always with one Lease (a
    /// standby's count is what it would inherit), else while it holds `obj`'s shard.
    pub fn counts<K: Resource>(&self, obj: &K) -> bool {
        self.shards.len() == 1 || self.of(obj).is_leader()
    }

    /// Yields each time a shard is gained (and at start for each held): what makes the
    /// controllers reconcile every object again.
    pub fn gained(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        futures::stream::select_all(self.shards.iter().map(|l| l.gained().boxed()))
    }

    /// Whether this replica's clock agrees with the API server's.
    pub fn clock_trusted(&self) -> bool {
        self.shards.iter().all(Leadership::clock_trusted)
    }

    /// See [`Leadership::set_clock_trusted`]: every shard and member Lease at once.
    pub fn set_clock_trusted(&self, trusted: bool) {
        for l in self.shards.iter().chain(self.members.iter()) {
            l.set_clock_trusted(trusted);
        }
    }

    /// Keeps `recur_leader` (any shard held) and `recur_shards_held` up to date, from now on.
    pub fn report_to(&self, metrics: Arc<crate::metrics::Metrics>) {
        let mut changes: Vec<_> = self.shards.iter().map(Leadership::changes).collect();
        tokio::spawn(async move {
            loop {
                let held = changes
                    .iter_mut()
                    .map(|rx| *rx.borrow_and_update())
                    .filter(|&held| held)
                    .count();
                metrics.set_leader(held > 0);
                metrics.set_shards_held(held);
                let waits = changes.iter_mut().map(|rx| Box::pin(rx.changed()));
                if futures::future::select_all(waits).await.0.is_err() {
                    return;
                }
            }
        });
    }
}

/// `recur run --shards`: the Leases' names and timings, from the single leader's config.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// `name` is the prefix of every Lease (`<name>-shard-<k>`, `<name>-member-<k>`).
    pub lease: LeaseConfig,
    pub shards: u16,
    /// How long a delivery started under a shard's Lease may still run when it is given back.
    pub hand_back_after: Duration,
}

/// The shard count every shard and member Lease is written with: replicas of another count
/// (a rollout that changes it) must not serve at the same time, since they split the objects
/// differently.
pub const SHARDS_ANNOTATION: &str = "recur.dev/shards";

impl ShardConfig {
    /// Whether `name` is one of the Leases of this prefix, whatever the shard count: the one
    /// leader's, or a shard's or member slot's.
    fn is_ours(&self, name: &str) -> bool {
        let Some(rest) = name.strip_prefix(self.lease.name.as_str()) else {
            return false;
        };
        let numbered = |tail: &str| !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit());
        rest.is_empty()
            || rest.strip_prefix("-shard-").is_some_and(numbered)
            || rest.strip_prefix("-member-").is_some_and(numbered)
    }

    fn shard(&self, k: usize) -> String {
        format!("{}-shard-{k}", self.lease.name)
    }

    fn member(&self, k: usize) -> String {
        format!("{}-member-{k}", self.lease.name)
    }
}

/// Starts the electors of every shard and member Lease and the balancer that tells them what
/// to hold. The balancer stops taking shards when `stop_taking` completes (the controllers
/// stop); the electors stop, releasing what they hold, when `release()` completes.
pub fn start<F>(
    client: kube::Client,
    cfg: ShardConfig,
    stop_taking: impl Future<Output = ()> + Send + 'static,
    release: impl Fn() -> F,
) -> Result<(Leaderships, tokio::task::JoinHandle<Result<(), LeaseError>>), LeaseError>
where
    F: Future<Output = ()> + Send + 'static,
{
    if cfg.shards < 2 {
        return Err(LeaseError::InvalidConfig(format!(
            "{} shards: shards are for 2 or more (1 is the one leader's Lease)",
            cfg.shards
        )));
    }
    let count = usize::from(cfg.shards);
    let mut lease = cfg.lease.clone();
    lease
        .annotations
        .insert(SHARDS_ANNOTATION.into(), cfg.shards.to_string());
    let elector = |name: String| -> Result<_, LeaseError> {
        let (tx, rx) = watch::channel(Want::default());
        let lease = LeaseConfig {
            name,
            ..lease.clone()
        };
        let elector = LeaseElector::new(client.clone(), lease)?
            .wanted_by(rx)
            .handing_back_after(cfg.hand_back_after);
        Ok((elector, tx))
    };
    // Every elector is built (and its configuration checked) before any runs.
    let mut electors = Vec::with_capacity(2 * count);
    let (mut shard_wants, mut member_wants) = (Vec::new(), Vec::new());
    for k in 0..count {
        let (shard, tx) = elector(cfg.shard(k))?;
        shard_wants.push(tx);
        let (member, tx) = elector(cfg.member(k))?;
        member_wants.push(tx);
        electors.push((shard, member));
    }
    let (mut shards, mut members) = (Vec::new(), Vec::new());
    let mut tasks = Vec::with_capacity(2 * count);
    for (shard, member) in electors {
        shards.push(shard.leadership());
        members.push(member.leadership());
        tasks.push(tokio::spawn(shard.run(release())));
        tasks.push(tokio::spawn(member.run(release())));
    }
    let leaderships = Leaderships {
        shards: shards.into(),
        members: members.into(),
    };
    let balancer = Balancer {
        api: Api::namespaced(client, &cfg.lease.namespace),
        cfg,
        seen: HashMap::new(),
        leaderships: leaderships.clone(),
        shard_wants,
        member_wants,
        stepped_back: false,
    };
    let task = tokio::spawn(async move {
        tokio::select! {
            () = stop_taking => {}
            () = balancer.run() => {}
        }
        let mut result = Ok(());
        for task in tasks {
            match task.await {
                Ok(Err(e)) => result = Err(e),
                Ok(Ok(())) => {}
                Err(e) => warn!("a lease elector ended abnormally: {e}"),
            }
        }
        result
    });
    Ok((leaderships, task))
}

struct Balancer {
    api: Api<Lease>,
    cfg: ShardConfig,
    /// Each Lease's last distinct state and when we first saw it, by name (only Leases of the
    /// prefix that the last list showed).
    seen: HashMap<String, Observation>,
    leaderships: Leaderships,
    shard_wants: Vec<watch::Sender<Want>>,
    member_wants: Vec<watch::Sender<Want>>,
    /// Whether the last look found a live Lease of another shard count.
    stepped_back: bool,
}

impl Balancer {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(self.cfg.lease.retry_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let limit = self.cfg.lease.lease_duration;
            let leases =
                match tokio::time::timeout(limit, self.api.list(&ListParams::default())).await {
                    Ok(Ok(list)) => list.items,
                    Ok(Err(e)) => {
                        warn!("could not list the shard leases: {e}");
                        continue;
                    }
                    Err(_) => {
                        warn!("could not list the shard leases within {limit:?}");
                        continue;
                    }
                };
            self.balance(&leases, Instant::now());
        }
    }

    fn balance(&mut self, leases: &[Lease], now: Instant) {
        let ours: HashMap<String, &Lease> = leases
            .iter()
            .map(|l| (l.name_any(), l))
            .filter(|(name, _)| self.cfg.is_ours(name))
            .collect();
        self.seen.retain(|name, _| ours.contains_key(name));
        // Every Lease of the prefix held by a live other replica, with the shard count it was
        // written under (the one leader's Lease: 1).
        let mut holders: HashMap<&str, String> = HashMap::new();
        let mut foreign = None;
        for (name, lease) in &ours {
            if let Some(holder) = self.live_holder(name, lease, now) {
                let shards = shards_written(lease);
                if shards != Some(self.cfg.shards) && holder != self.cfg.lease.identity {
                    foreign = Some((name.as_str(), shards));
                }
                holders.insert(name.as_str(), holder);
            }
        }
        match (foreign, self.stepped_back) {
            (Some((name, shards)), false) => warn!(
                lease = name,
                shards = ?shards,
                "a replica with another shard count holds a Lease: serving nothing until it is gone"
            ),
            (None, true) => info!("no replica with another shard count is left"),
            _ => {}
        }
        self.stepped_back = foreign.is_some();
        let count = usize::from(self.cfg.shards);
        let identity = self.cfg.lease.identity.as_str();
        let holder = |name: String, mine: &Leadership| -> Holder {
            match holders.get(name.as_str()) {
                // Ours by our deadline, or by the Lease while it is being handed back.
                _ if mine.is_leader() => Holder::Me,
                Some(h) if h == identity => Holder::Me,
                Some(h) => Holder::Other(h.clone()),
                None => Holder::Free,
            }
        };
        let members: Vec<Holder> = (0..count)
            .map(|k| holder(self.cfg.member(k), &self.leaderships.members[k]))
            .collect();
        let shards: Vec<Holder> = (0..count)
            .map(|k| holder(self.cfg.shard(k), &self.leaderships.shards[k]))
            .collect();
        let wants = if self.stepped_back {
            plan::Wants {
                member: None,
                shards: vec![false; count],
            }
        } else {
            plan(
                &members,
                &shards,
                crate::schedule::hash::fnv1a(identity.as_bytes()),
            )
        };
        for (k, tx) in self.member_wants.iter().enumerate() {
            let seen = self.seen.get(&self.cfg.member(k)).cloned();
            send(tx, wants.member == Some(k), seen);
        }
        for (k, tx) in self.shard_wants.iter().enumerate() {
            let seen = self.seen.get(&self.cfg.shard(k)).cloned();
            let wanted = wants.shards.get(k).copied().unwrap_or(false);
            if send(tx, wanted, seen) && wanted && shards[k] != Holder::Me {
                info!(shard = k, "taking shard");
            }
        }
    }

    /// The holder of `lease` unless it is released or has not changed for longer than its
    /// duration since we first saw its current state (which is remembered here).
    fn live_holder(&mut self, name: &str, lease: &Lease, now: Instant) -> Option<String> {
        let seen = Observation::of(lease, self.seen.get(name), now);
        let at = seen.at;
        match self.seen.get_mut(name) {
            Some(o) => *o = seen,
            None => {
                self.seen.insert(name.to_owned(), seen);
            }
        }
        live_hold(lease, at, self.cfg.lease.lease_duration, now).map(|(holder, _)| holder)
    }
}

/// The shard count a Lease was last written under: its annotation, or 1 for one without it
/// (the one leader's Lease, which no shard count writes).
fn shards_written(lease: &Lease) -> Option<u16> {
    match lease.annotations().get(SHARDS_ANNOTATION) {
        Some(v) => v.parse().ok(),
        None => Some(1),
    }
}

/// Tells an elector whether to hold its Lease, waking it only when that changes (its view of
/// the Lease rides along); true when it changed.
fn send(tx: &watch::Sender<Want>, wanted: bool, seen: Option<Observation>) -> bool {
    tx.send_if_modified(|want| {
        let changed = want.wanted != wanted;
        *want = Want { wanted, seen };
        changed
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn lease_with(uid: &str, owner: Option<&str>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                owner_references: owner.map(|o| {
                    vec![OwnerReference {
                        uid: o.into(),
                        controller: Some(true),
                        ..OwnerReference::default()
                    }]
                }),
                ..ObjectMeta::default()
            },
            spec: None,
        }
    }

    /// An owner reference can be edited or orphaned; the shard follows the object's own UID.
    #[test]
    fn an_owner_does_not_move_an_object() {
        let uid = "7d1f3c2a-0000-4000-8000-0000000000ff";
        let owned = lease_with(uid, Some("7d1f3c2a-0000-4000-8000-000000000001"));
        for shards in 2..=16 {
            assert_eq!(
                shard_of(&owned, shards),
                shard_of(&lease_with(uid, None), shards)
            );
        }
    }

    #[test]
    fn the_leases_of_the_prefix_are_recognised_whatever_the_count() {
        let cfg = ShardConfig {
            lease: LeaseConfig::new("recur-leader", "ops", "me"),
            shards: 2,
            hand_back_after: Duration::ZERO,
        };
        for ours in [
            "recur-leader",
            "recur-leader-shard-0",
            "recur-leader-shard-17",
            "recur-leader-member-3",
        ] {
            assert!(cfg.is_ours(ours), "{ours}");
        }
        for other in [
            "recur-leader-2",
            "recur-leader-shard-",
            "recur-leader-shard-x",
            "other-leader-shard-0",
            "recur-leaders",
        ] {
            assert!(!cfg.is_ours(other), "{other}");
        }
    }

    /// The shard is a fixed function of the UID: replicas of different builds agree on it.
    #[test]
    fn the_shard_of_a_uid_never_changes() {
        // FNV-1a 64 of the UID's text, modulo the count (worked out independently).
        let obj = lease_with("7d1f3c2a-0000-4000-8000-000000000001", None);
        assert_eq!(
            [8, 7, 64, 1].map(|shards| shard_of(&obj, shards)),
            [5, 4, 5, 0]
        );
    }

    #[test]
    fn uids_spread_over_the_shards() {
        let mut counts = [0u32; 8];
        for i in 0..8000u32 {
            let uid = format!("7d1f3c2a-0000-4000-8000-{i:012x}");
            counts[usize::from(shard_of(&lease_with(&uid, None), 8))] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..=1200).contains(&c)),
            "{counts:?}"
        );
    }
}

#[cfg(test)]
mod balance_tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn balancer(shards: u16) -> (Balancer, Vec<watch::Receiver<Want>>) {
        let (service, _handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let client = kube::Client::new(service, "ops");
        let count = usize::from(shards);
        let mut receivers = vec![];
        let mut wants = || {
            let (tx, rx) = watch::channel(Want::default());
            receivers.push(rx);
            tx
        };
        let member_wants: Vec<_> = (0..count).map(|_| wants()).collect();
        let shard_wants: Vec<_> = (0..count).map(|_| wants()).collect();
        let leaderships = Leaderships {
            shards: (0..count).map(|_| Leadership::follower()).collect(),
            members: (0..count).map(|_| Leadership::follower()).collect(),
        };
        let b = Balancer {
            api: Api::namespaced(client, "ops"),
            cfg: ShardConfig {
                lease: LeaseConfig::new("recur", "ops", "me"),
                shards,
                hand_back_after: Duration::ZERO,
            },
            seen: HashMap::new(),
            leaderships,
            shard_wants,
            member_wants,
            stepped_back: false,
        };
        (b, receivers)
    }

    fn held(name: &str, holder: &str, shards: Option<&str>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some("1".into()),
                annotations: shards
                    .map(|n| [(SHARDS_ANNOTATION.to_string(), n.to_string())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(15),
                ..LeaseSpec::default()
            }),
        }
    }

    fn wanted(receivers: &[watch::Receiver<Want>]) -> Vec<bool> {
        receivers.iter().map(|rx| rx.borrow().wanted).collect()
    }

    /// A rollout that changes the shard count: while a replica of the old count holds any
    /// Lease of the prefix, the new one serves nothing (they split the objects differently).
    #[tokio::test]
    async fn a_live_lease_of_another_shard_count_keeps_a_replica_out() {
        let (mut b, rx) = balancer(2);
        let now = Instant::now();
        b.balance(&[held("recur", "old-leader", None)], now);
        assert_eq!(wanted(&rx), [false; 4], "the one leader's Lease is held");
        b.balance(&[held("recur-shard-3", "old", Some("4"))], now);
        assert_eq!(wanted(&rx), [false; 4], "a Lease of 4 shards is held");
        // Released, or expired by our own observation: served again.
        b.balance(&[held("recur", "", None)], now);
        assert_eq!(
            wanted(&rx)[..2].iter().filter(|&&w| w).count(),
            1,
            "a member slot first"
        );
        let (mut b, rx) = balancer(2);
        b.balance(&[held("recur-shard-3", "old", Some("4"))], now);
        b.balance(
            &[held("recur-shard-3", "old", Some("4"))],
            now + Duration::from_secs(16),
        );
        assert_eq!(wanted(&rx)[..2].iter().filter(|&&w| w).count(), 1);
        // A peer of the same count is no obstacle.
        let (mut b, rx) = balancer(2);
        b.balance(&[held("recur-member-0", "peer", Some("2"))], now);
        assert_eq!(wanted(&rx)[..2], [false, true]);
    }
}
