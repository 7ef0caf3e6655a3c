//! One controller shape for every kind: a kind implements [`Reconcile`] (its pure `plan` and its
//! effects live in its own module); the runner owns what every kind shares: the watch cache,
//! concurrency, spans, metrics, the liveness heartbeat, leadership gating, readiness and the
//! error policy. A new kind is a module with a `Reconcile` impl and one line in `operator.rs`.
//!
//! Concurrency is the fair gate's (`fair`): every due object waits for a worker in its
//! namespace's turn, as a name, and gets a task once it has one (`dispatch`, which replaces
//! kube-runtime's runner for that).
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::reflector::Store;
use tracing::{Instrument, info_span};

use super::fair;
use super::initial_list::{self, InitialList};
use super::{Action, Context, Error, dispatch, leadership_gate, name_ns};

/// What a kind tells the runner.
pub trait Reconcile:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + crate::api::ForUser
    + Conditions
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// The kind's name in metrics, health and spans.
    const KIND: &'static str;

    /// One reconcile of `self`, named `name` in namespace `ns`. The runner has already checked
    /// that this replica may act (leader, lease slack); the kind decides with its pure `plan`
    /// and carries out the effects.
    fn reconcile(
        &self,
        ctx: &Context,
        name: &str,
        ns: &str,
    ) -> impl Future<Output = Result<Action, Error>> + Send;

    /// Offered the kind's watch cache once it exists, for readers outside the controller (the
    /// completion receiver finds tasks by UID in it).
    fn share_cache(_ctx: &Context, _cache: &Store<Self>) {}

    /// Takes out of each object bound for the watch cache what the kind never decides on
    /// (beyond the metadata every kind drops).
    fn trim_for_cache(_ctx: &Context, _event: &mut kube::runtime::watcher::Event<Self>) {}

    /// Whether the object owes a delivery that is retrying, or due more than [`OVERDUE_GRACE`]
    /// ago, at `now`: counted in `recur_pending_occurrences`, the backlog an on-call engineer
    /// looks at first.
    fn overdue(&self, now: chrono::DateTime<chrono::Utc>) -> bool;

    /// The first instant after `now` at which the object owes something by its status as cached
    /// (a due instant, a retry, a reminder to create): a failed reconcile looks again no later
    /// than that, whatever its backoff.
    fn wake_at(&self, now: chrono::DateTime<chrono::Utc>) -> Option<chrono::DateTime<chrono::Utc>>;

    /// A fingerprint of what a decision to call rests on: the status, less what only records
    /// past outcomes and may be held in another form by the cache (a task's history). It stays
    /// the same from the version a call was decided on until our write of its outcome arrives
    /// ([`Context::stale_wait`](super::Context::stale_wait)); `None` when it cannot be taken.
    fn decided_on(&self) -> Option<u64>;

    /// Whether the cached object is `Ready=True` (for `recur_objects`); a kind whose cache
    /// leaves the conditions out answers from where it keeps them.
    fn is_ready(&self, _ctx: &Context) -> bool {
        is_ready(self.conditions())
    }
}

/// How late a delivery may be before it counts as backlog: an occurrence being delivered right
/// at its due instant is not one (with tasks every second, one always is).
pub const OVERDUE_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// How often `recur_pending_occurrences` is counted from the watch cache.
const PENDING_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Counts the kind's overdue objects (`recur_pending_occurrences`) and its objects by readiness
/// (`recur_objects`) in the watch cache every [`PENDING_EVERY`], on every replica (a standby's
/// count is the backlog a handover would inherit). With shards a replica counts the overdue
/// objects of the shards it holds only, so the holders' counts add up to the backlog.
async fn report_pending<K: Reconcile>(store: Store<K>, ctx: Arc<Context>) {
    if crate::watch_cache::until_ready(&store).await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(PENDING_EVERY);
    loop {
        tick.tick().await;
        let now = chrono::Utc::now();
        let (mut overdue, mut ready, mut not_ready) = (0usize, 0usize, 0usize);
        for o in store.state() {
            overdue += usize::from(ctx.leaderships.counts(o.as_ref()) && o.overdue(now));
            if o.is_ready(&ctx) {
                ready += 1;
            } else {
                not_ready += 1;
            }
        }
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        ctx.metrics.set_pending(K::KIND, count(overdue));
        ctx.metrics
            .set_objects(K::KIND, count(ready), count(not_ready));
        // Also when no call comes: the breaker of the only app called may be the idle one.
        ctx.evict_idle_breakers();
    }
}

/// The status conditions of a kind's object, for `recur_objects{kind, ready}`.
pub trait Conditions {
    /// `status.conditions` (empty before the first status write).
    fn conditions(&self) -> &[Condition];
}

impl Conditions for crate::api::RecurringTask {
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}

impl Conditions for crate::api::Reminder {
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}

impl Conditions for crate::api::Backfill {
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}

/// `Ready=True`; no Ready condition (not reconciled yet) counts as not ready.
pub(crate) fn is_ready(conditions: &[Condition]) -> bool {
    crate::api::condition(conditions, super::reason::READY)
        .is_some_and(|c| says_ready(&c.type_, &c.status))
}

/// A condition of this type and status says `Ready=True`.
pub(crate) fn says_ready(type_: &str, status: &str) -> bool {
    type_ == super::reason::READY && status == "True"
}

/// A namespaced kind's API over what the operator serves: `namespace`, or every namespace.
/// The controllers watch through it, and the start-up check lists through it.
pub(crate) fn scoped_api<K>(client: &kube::Client, namespace: Option<&str>) -> kube::Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => kube::Api::namespaced(client.clone(), ns),
        None => kube::Api::all(client.clone()),
    }
}

/// Runs the controller of kind `K` (all namespaces, or one) until `shutdown` resolves.
pub(crate) async fn run<K: Reconcile>(
    ctx: Arc<Context>,
    namespace: Option<String>,
    leadership_gained: impl futures::Stream<Item = ()> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    ctx.health.expect_kind(K::KIND);
    ctx.metrics.init_kind(K::KIND);
    // Shared: the start below waits on it too, so a SIGTERM while the policies or the first
    // list are slow (or refused) ends the controller at once instead of when it is killed.
    let shutdown = shutdown.shared();
    // Judging an object before the policies are known would refuse what a policy grants.
    let synced = tokio::select! {
        synced = ctx.tenancy.wait_synced() => synced,
        () = shutdown.clone() => return,
    };
    if let Err(err) = synced {
        tracing::error!(%err, kind = K::KIND, "tenant policies never synced");
        return;
    }
    let api: kube::Api<K> = scoped_api(&ctx.client, namespace.as_deref());
    let (reader, writer) = kube::runtime::reflector::store();
    K::share_cache(&ctx, &reader);
    let mut config = kube::runtime::watcher::Config::default().any_semantic();
    if let Some(selector) = &ctx.settings.selector {
        config = config.labels(selector);
    }
    let initial = tokio::select! {
        initial = initial_list::resolve(&api, K::KIND, ctx.settings.initial_list) => initial,
        () = shutdown.clone() => return,
    };
    if initial == InitialList::Streaming {
        config = config.streaming_lists();
    }
    let objects = kube::runtime::reflector(
        writer,
        // The watch cache keeps every object of the kind; what reconcile never reads
        // (managedFields and kubectl's copy of the whole object) is dropped before it is stored:
        // at 10,000 tasks that is most of the operator's memory.
        kube::runtime::watcher(api, config)
            .modify(prune_unread_metadata)
            .map_ok({
                let ctx = ctx.clone();
                move |mut event| {
                    K::trim_for_cache(&ctx, &mut event);
                    event
                }
            }),
    )
    .applied_objects();
    tokio::spawn(mark_synced(reader.clone(), ctx.health.clone(), K::KIND));
    tokio::spawn(report_pending(reader.clone(), ctx.clone()));
    if let Some(gate) = ctx.work_queue(K::KIND) {
        tokio::spawn(fair::publish_waiting(
            gate.clone(),
            ctx.metrics.clone(),
            K::KIND,
        ));
        // The same backoff on watch errors as kube-runtime's controller.
        let objects = objects.default_backoff();
        dispatch::run(ctx, gate, objects, reader, leadership_gained, shutdown).await;
        return;
    }
    // Fair queueing off: kube-runtime's runner, one queue for every namespace.
    let controller = Controller::for_stream(objects, reader)
        .with_config(Config::default().concurrency(ctx.settings.workers))
        .reconcile_all_on(leadership_gained)
        .graceful_shutdown_on(shutdown);
    controller
        .run(
            |obj, ctx| async move { reconcile::<K>(obj, ctx).await.map(Into::into) },
            |obj, err, ctx| error_policy::<K>(obj, err, ctx).into(),
            ctx.clone(),
        )
        .for_each(|res| {
            match res {
                Err(kube::runtime::controller::Error::QueueError(err)) => {
                    watch_failed::<K>(&ctx.metrics, &err);
                }
                // Reconcile errors are logged and counted by the error policy.
                Err(err) => tracing::debug!(%err, kind = K::KIND, "controller event"),
                Ok(_) => {}
            }
            futures::future::ready(())
        })
        .await;
}

/// The shared wrapper of every reconcile.
pub(crate) async fn reconcile<K: Reconcile>(
    obj: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let (name, ns) = name_ns(obj.as_ref())?;
    let span = info_span!("reconcile", kind = K::KIND, namespace = %ns, name = %name, user = %obj.user_id());
    async move {
        let started = Instant::now();
        ctx.metrics.reconciled(K::KIND);
        // Liveness watches reconciles that never end (see server.rs).
        let _running = ctx.health.reconcile_started();
        let result = match leadership_gate(&ctx, obj.as_ref()) {
            Some(action) => Ok(action),
            None => obj.reconcile(&ctx, &name, &ns).await,
        };
        if result.is_ok() {
            ctx.reconciled_ok(&failure_key(obj.as_ref()));
        }
        ctx.metrics
            .reconcile_duration(K::KIND, started.elapsed().as_secs_f64());
        result
    }
    .instrument(span)
    .await
}

/// The error policy of every kind: log, count, retry with a backoff per object (5 s, doubling up
/// to 5 minutes; kube-runtime keeps none, and deliveries back off through `retryAt` in status
/// only when their outcome could be written).
pub(super) fn error_policy<K: Reconcile>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    let mut wait = ctx.error_backoff(&failure_key(obj.as_ref()));
    // A failure must not make a coming occurrence late: the backoff is for what keeps failing
    // once due (a wake already past leaves it whole).
    let now = chrono::Utc::now();
    if let Some(until) = obj.wake_at(now).and_then(|at| (at - now).to_std().ok()) {
        wait = wait.min(until);
    }
    tracing::warn!(kind = K::KIND, namespace = ?obj.meta().namespace, name = ?obj.meta().name, %err, retry_in_ms = wait.as_millis() as u64, "reconcile failed");
    ctx.metrics.reconcile_failed(K::KIND, err.reason());
    Action::requeue(wait)
}

/// Reports a failed watch of kind `K` (made again with backoff): until then its cache goes
/// stale, so it is a warning and counted, not a debug line.
pub(super) fn watch_failed<K: Reconcile>(
    metrics: &crate::metrics::Metrics,
    err: &kube::runtime::watcher::Error,
) {
    tracing::warn!(%err, kind = K::KIND, "watch failed; retrying with backoff");
    metrics.watch_error(K::KIND);
}

/// What an object's failures are counted under: its UID (its namespace and name without one).
fn failure_key<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    meta.uid.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        )
    })
}

/// For kinds whose reconcile reads neither labels nor annotations (reminders, backfills): drops
/// them from an object bound for the watch cache. A reminder carries every label of its task
/// (so a shard's selector finds it), and a task keeps up to 100 reminders: labels a tenant made
/// large would otherwise sit in the operator's memory a hundred times over.
pub(crate) fn drop_labels_and_annotations<K: Resource>(
    event: &mut kube::runtime::watcher::Event<K>,
) {
    use kube::runtime::watcher::Event;
    if let Event::Apply(obj) | Event::InitApply(obj) = event {
        let meta = obj.meta_mut();
        meta.labels = None;
        meta.annotations = None;
    }
}

/// Drops the metadata reconcile never reads from an object bound for the watch cache.
fn prune_unread_metadata<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Marks `kind` synced in `health` once the controller's watch cache holds its first full list.
async fn mark_synced<K>(
    store: kube::runtime::reflector::Store<K>,
    health: crate::server::Health,
    kind: &'static str,
) where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    match crate::watch_cache::until_ready(&store).await {
        Ok(()) => {
            tracing::info!(kind, "watch cache synced");
            health.set_synced(kind);
        }
        Err(err) => tracing::error!(kind, %err, "watch cache never synced"),
    }
}

#[cfg(test)]
mod tests;
