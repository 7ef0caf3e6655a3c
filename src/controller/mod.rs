//! The controllers, one per kind, and what they share: the [`Context`], conditions, events and
//! the guarded status write.
mod action;
pub mod backfill;
pub mod completion;
pub mod delivery;
mod dispatch;
pub mod fair;
pub mod initial_list;
pub mod rate;
pub mod reason;
pub mod reminder;
mod runner;
pub mod task;

mod memo;
mod replaced;
pub mod settle;
mod status;
pub mod time;

pub use action::Action;
pub use runner::{OVERDUE_GRACE, Reconcile};
pub(crate) use runner::{run, scoped_api};
pub use status::{Guard, Prepended, StatusWrite, guarded_patch, write_status};
pub use time::{from_jiff, to_jiff};

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use tracing::Instrument as _;

use crate::dapr::DaprClient;
use crate::lease::shards::Leaderships;
use crate::metrics::Metrics;
use crate::server::Health;
use fair::{FairGate, WorkQueues};
use memo::Memo;
use rate::RateLimiter;

/// Name under which recur writes status and creates objects (field manager, event reporter).
pub const MANAGER: &str = "recur";

/// Errors of one reconcile; each is retried by `error_policy` with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A status patch could not be built (a bug, not user input).
    #[error("building a status patch: {0}")]
    Patch(#[from] serde_json::Error),
    /// The object lacks a field the API server always sets (name, namespace, uid).
    #[error("object has no {0}")]
    MissingField(&'static str),
    /// The API server did not answer within [`API_TIMEOUT`].
    #[error("no answer from the Kubernetes API within {0:?}")]
    Timeout(Duration),
}

impl Error {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Patch(_) => "patch",
            Error::MissingField(_) => "missing_field",
            Error::Timeout(_) => "timeout",
        }
    }
}

/// The longest a reconcile waits for one Kubernetes API call (kube's own read timeout is near
/// five minutes, which would hold a worker, and a delivery, that long).
pub const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds one Kubernetes API call by [`API_TIMEOUT`].
pub(crate) async fn bounded<T, E: Into<Error>>(
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, Error> {
    match tokio::time::timeout(API_TIMEOUT, call).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(Error::Timeout(API_TIMEOUT)),
    }
}

/// How soon a leader whose lease is too close to its end for a call looks again: the lease is
/// renewed every few seconds, and nothing else would wake the object (no gain is announced to a
/// replica that never lost the lease).
const LEASE_SLACK_RETRY: Duration = Duration::from_millis(500);

/// Whether this replica may write or deliver for `obj` now: `None` when it may, else what to
/// return. A delivery starts only while the lease of `obj`'s shard (the one lease, unsharded)
/// stays ours for the whole call and its status write.
pub(crate) fn leadership_gate<K: Resource>(ctx: &Context, obj: &K) -> Option<Action> {
    let leadership = ctx.leaderships.of(obj);
    if leadership.valid_for(ctx.settings.lease_margin) {
        None
    } else if leadership.is_leader() {
        ctx.metrics.lease_slack_wait();
        Some(Action::requeue(LEASE_SLACK_RETRY))
    } else {
        // Not leading: gaining the lease (any shard's) reconciles every object again.
        Some(Action::await_change())
    }
}

/// Settings of the controllers, from the command line.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Reconciles running at once per kind.
    pub workers: u16,
    /// How many future due instants `status.upcoming` lists.
    pub upcoming: usize,
    /// App id told that a reminder was sent (`POST api/tasks/{taskId}/reminder-sent`).
    pub backend_app_id: String,
    /// A delivery starts only while the lease is ours for at least this long (call timeout plus
    /// the status write), so no call is in flight when another replica may take over.
    pub lease_margin: Duration,
    /// Only objects with matching labels are served (`--selector`).
    pub selector: Option<String>,
    /// How the watch caches get their full lists (`--initial-list`).
    pub initial_list: initial_list::InitialList,
}

/// Everything a reconcile needs.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub dapr: DaprClient,
    pub metrics: Arc<Metrics>,
    pub leaderships: Leaderships,
    pub health: Health,
    pub settings: Settings,
    /// Tenant policies and namespaces, for the checks before every call.
    pub tenancy: crate::tenancy::Tenancy,
    /// Per object, fingerprints of the statuses calls' outcomes were decided on, once those
    /// outcomes are written: while the watch cache shows one of them it is stale (our write has
    /// not arrived, or a relist from a lagging apiserver shows an older version again), and a
    /// reconcile waits instead of calling again. The status, not the resourceVersion: a label
    /// or spec change by someone else can land between the version decided on and our write,
    /// and its version still shows the old status.
    committed: Memo<u64, replaced::Replaced>,
    /// Warning events published lately, per object and reason (see [`Context::event`]).
    warned: Memo<(String, String), ()>,
    /// Tasks whose reminders for the pending occurrence (the value) could not all be created.
    reminders_owed: Memo<String, String>,
    /// Per object (UID), the reconciles in a row that failed: the error policy's backoff.
    failing: Memo<String, u32>,
    /// Keys of run-now tokens found in a task's history (a token set again after another), so
    /// the task is not read for it at every reconcile.
    refused_tokens: Memo<String, ()>,
    /// Per-namespace delivery rates (`limits.occurrencesPerSecond`), shared by every kind.
    pub rates: RateLimiter,
    /// The workers of each kind, shared fairly among namespaces.
    work_queues: WorkQueues,
    /// Tasks by UID, for completion events (`spec.completion`).
    pub(crate) tasks: completion::TaskIndex,
    /// What the watch cache left out of each task: its history's length, its conditions.
    pub(crate) task_left_out: task::LeftOut,
}

/// How long a committed write is remembered: far longer than a watch event takes to arrive, and
/// than a lagging apiserver's cache is likely to trail (a relist from it can show the status
/// from before our write again).
const COMMIT_MEMORY: Duration = Duration::from_secs(300);
/// How soon a reconcile that found a status our write replaced looks again: soon after the
/// write, since the watch event bringing it is due within milliseconds (and wakes the object by
/// itself); a quarter of the time since then later on, at most [`STALE_RECHECK_MAX`]. A status
/// that stays, because someone wrote the replaced one back, then costs a few dozen looks until
/// the memo forgets it, not one every 100 ms.
fn stale_recheck(since_our_write: Duration) -> Duration {
    (since_our_write / 4).clamp(STALE_RECHECK_MIN, STALE_RECHECK_MAX)
}
const STALE_RECHECK_MIN: Duration = Duration::from_millis(100);
const STALE_RECHECK_MAX: Duration = Duration::from_secs(10);
/// How long an object's failed reconciles are counted: longer than the longest backoff between
/// two of them, so the count only restarts after a success (or once the object is gone).
const FAILING_MEMORY: Duration = Duration::from_secs(3600);
/// The least wait after a failed reconcile.
const ERROR_RETRY_MIN: Duration = Duration::from_secs(5);
/// At most one Warning event per object and reason in this interval; status, history and
/// metrics carry every occurrence. Shorter than kube's 6-minute event cache, so a repeat after
/// it still joins the same event series.
const WARNING_INTERVAL: Duration = Duration::from_secs(300);

impl Context {
    /// One argument per shared service; built in `operator.rs` and the tests' fixture only.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        recorder: Recorder,
        dapr: DaprClient,
        metrics: Arc<Metrics>,
        leaderships: Leaderships,
        health: Health,
        settings: Settings,
        tenancy: crate::tenancy::Tenancy,
    ) -> Self {
        let settings_workers = settings.workers;
        Self {
            client,
            recorder,
            dapr,
            metrics,
            leaderships,
            health,
            settings,
            tenancy,
            committed: Memo::new(COMMIT_MEMORY),
            warned: Memo::new(WARNING_INTERVAL),
            failing: Memo::new(FAILING_MEMORY),
            refused_tokens: Memo::new(FAILING_MEMORY),
            reminders_owed: Memo::new(COMMIT_MEMORY),
            rates: RateLimiter::new(),
            work_queues: WorkQueues::new(usize::from(settings_workers), true),
            tasks: completion::TaskIndex::default(),
            task_left_out: task::LeftOut::default(),
        }
    }

    /// With `false`, kube-runtime's one shared queue bounds each kind's reconciles again (every
    /// namespace in one line), as before fair queueing: for comparisons only.
    pub fn with_fair_queue(mut self, on: bool) -> Self {
        self.work_queues = WorkQueues::new(usize::from(self.settings.workers), on);
        self
    }

    /// The gate through which `kind`'s reconciles take turns by namespace, `settings.workers`
    /// at a time; `None` when fair queueing is off.
    pub fn work_queue(&self, kind: &'static str) -> Option<Arc<FairGate>> {
        self.work_queues.for_kind(kind)
    }

    /// Remembers that the outcome of a call decided on `obj` (as the cache showed it) is written.
    pub(crate) fn mark_committed<K: Reconcile>(&self, obj: &K) {
        match obj.decided_on() {
            Some(status) => {
                self.committed
                    .upsert(replaced::commit_id(obj), Instant::now(), |replaced| {
                        replaced.unwrap_or_default().with(status)
                    })
            }
            None => self.committed.remove(&replaced::commit_id(obj)),
        }
    }

    /// `Some(wait)` while the cache shows `obj`'s status as it was before one of our last writes
    /// that succeeded, at whatever resourceVersion: acting on it would repeat a call whose
    /// outcome is already recorded, so the reconcile looks again after `wait`. The entries stay
    /// after the cache has shown our writes, for as long as the memo keeps them: a relist from a
    /// lagging apiserver can show an older status again.
    pub(crate) fn stale_wait<K: Reconcile>(&self, obj: &K) -> Option<Duration> {
        // The fingerprint serialises the status: only taken for an object we wrote lately.
        let id = replaced::commit_id(obj);
        let (replaced, age) = self.committed.get_aged(&id, Instant::now())?;
        obj.decided_on()
            .is_some_and(|status| replaced.contains(status))
            .then(|| stale_recheck(age))
    }

    /// [`Self::stale_wait`] as a yes or no.
    #[cfg(test)]
    pub(crate) fn is_stale<K: Reconcile>(&self, obj: &K) -> bool {
        self.stale_wait(obj).is_some()
    }

    /// Remembers that `task`'s reminders for the occurrence `key` still have to be created.
    pub(crate) fn owe_reminders<K: Resource>(&self, task: &K, key: &str) {
        self.reminders_owed
            .insert(object_id(task), key.to_string(), Instant::now());
    }

    /// `task`'s reminders were all created.
    pub(crate) fn reminders_paid<K: Resource>(&self, task: &K) {
        self.reminders_owed.remove(&object_id(task));
    }

    /// True when `task`'s reminders for `key` are owed (a failed creation to retry).
    pub(crate) fn reminders_owed<K: Resource>(&self, task: &K, key: &str) -> bool {
        self.reminders_owed
            .holds(&object_id(task), &key.to_string(), Instant::now())
    }

    /// Whether a call for `obj` of tenant `namespace` may start now: `None` when it may, else
    /// what to return. Right before every call, not only when the reconcile began (what it read
    /// from the API server since took time): the lease must still cover the call and its write
    /// ([`leadership_gate`]), and the tenant must not have used up its `per_second` deliveries
    /// (its policy's `limits.occurrencesPerSecond`; the call waits its turn, nothing is dropped).
    pub(crate) fn may_call<K: Resource>(
        &self,
        obj: &K,
        namespace: &str,
        per_second: Option<u32>,
    ) -> Option<Action> {
        if let Some(action) = leadership_gate(self, obj) {
            return Some(action);
        }
        let per_second = per_second?;
        self.rates
            .try_take(namespace, per_second, Instant::now())
            .err()
            .map(Action::requeue)
    }

    /// The guarded status write of every kind, bounded and counted (ok, conflict, error):
    /// `true` when written, `false` when the guard no longer held (re-read and decide again).
    pub(crate) async fn write_status<K, S>(
        &self,
        kind: &str,
        api: &kube::Api<K>,
        name: &str,
        guard: Guard,
        status: &S,
    ) -> Result<bool, Error>
    where
        K: Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
        S: serde::Serialize,
    {
        self.counted_write(kind, name, status::write_status(api, name, guard, status))
            .await
    }

    /// [`Context::write_status`] for a status the cache holds without `prepended.field`:
    /// `after` is written over `before` field by field (see [`status::write_fields`]).
    pub(crate) async fn write_status_fields<K, S>(
        &self,
        kind: &str,
        api: &kube::Api<K>,
        name: &str,
        guard: Guard,
        (before, after): (&S, &S),
        prepended: status::Prepended,
    ) -> Result<bool, Error>
    where
        K: Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
        S: serde::Serialize,
    {
        let write = status::write_fields(api, name, guard, before, after, prepended);
        self.counted_write(kind, name, write).await
    }

    /// A status write, bounded, traced and counted.
    async fn counted_write<K>(
        &self,
        kind: &str,
        name: &str,
        write: impl Future<Output = Result<StatusWrite<K>, Error>>,
    ) -> Result<bool, Error> {
        let span = tracing::info_span!(
            "status_write",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            recur.kind = kind,
            recur.name = name,
            recur.outcome = tracing::field::Empty,
        );
        let written = bounded(write).instrument(span.clone()).await;
        let (label, result) = match written {
            Ok(StatusWrite::Written(_)) => ("ok", Ok(true)),
            Ok(StatusWrite::Conflict) => ("conflict", Ok(false)),
            Err(err) => ("error", Err(err)),
        };
        span.record("recur.outcome", label);
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        self.metrics.status_write(kind, label);
        result
    }

    /// One Dapr invocation, with its duration and outcome counted (see [`Context::count_call`]).
    pub(crate) async fn invoke(
        &self,
        invocation: &crate::dapr::Invocation<'_>,
    ) -> crate::dapr::Invoked {
        let invoked = self.dapr.invoke(invocation).await;
        self.count_call(invocation.namespace, invocation.app_id.as_str(), &invoked);
        invoked
    }

    /// Counts a Dapr call to `destination` (an app id, or `pubsub/<component>`) with its
    /// duration and outcome, publishes every breaker's state, and drops the series of breakers
    /// no task uses any more.
    fn count_call(&self, namespace: &str, destination: &str, invoked: &crate::dapr::Invoked) {
        self.metrics.backend_call(
            namespace,
            destination,
            invoked.outcome.label(),
            invoked.elapsed.as_secs_f64(),
        );
        // Evicted first, so an evicted breaker's state is not published again just before.
        self.evict_idle_breakers();
        for ((namespace, app), state) in self.dapr.breaker_states() {
            self.metrics.breaker_state(&namespace, &app, state as i64);
        }
    }

    /// Drops the breakers no call asked for lately, and their metric series.
    pub(crate) fn evict_idle_breakers(&self) {
        for (namespace, app) in self.dapr.evict_idle() {
            self.metrics.forget_app(&namespace, &app);
        }
    }

    /// How long to wait after another failed reconcile of `key` (an object's UID): 5 s, then
    /// the delivery backoff's doubling (with its jitter) up to 5 minutes. Without it, a write
    /// refused for good after a call (RBAC, an admission policy) called the backend again every
    /// 5 s, and every object failing at once retried in lockstep.
    pub(crate) fn error_backoff(&self, key: &str) -> Duration {
        let mut failures = 1;
        self.failing.upsert(key.to_string(), Instant::now(), |n| {
            failures = n.unwrap_or(0).saturating_add(1);
            failures
        });
        crate::dapr::backoff(failures, key).max(ERROR_RETRY_MIN)
    }

    /// Whether the run-now key `key` was found in its task's history lately.
    pub(crate) fn refused_token(&self, key: &str) -> bool {
        self.refused_tokens
            .get(&key.to_string(), Instant::now())
            .is_some()
    }

    /// Remembers that the run-now key `key` is in its task's history.
    pub(crate) fn refuse_token(&self, key: String) {
        self.refused_tokens.insert(key, (), Instant::now());
    }

    /// A reconcile of `key` succeeded: the next failure waits the least again.
    pub(crate) fn reconciled_ok(&self, key: &str) {
        self.failing.remove(&key.to_string());
    }

    /// A Warning about a delivery (action `Deliver`), limited like every Warning.
    pub async fn delivery_warning<K>(&self, obj: &K, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        self.event(obj, EventType::Warning, reason, "Deliver", note)
            .await;
    }

    /// Publishes an event; failures are logged, never fatal (events are best effort).
    ///
    /// Warnings are limited to one per object and reason per [`WARNING_INTERVAL`], and the
    /// object is referred to without its resourceVersion: kube's recorder compares whole
    /// references, so a reference that changes with every status write would start a new Event
    /// each time instead of counting a series. Notes must therefore be stable texts (no keys or
    /// instants): the first note of a series is the one shown.
    pub async fn event<K>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) where
        K: Resource<DynamicType = ()>,
    {
        if type_ == EventType::Warning {
            let key = (object_id(obj), reason.to_string());
            let now = Instant::now();
            if self.warned.get(&key, now).is_some() {
                self.metrics.event_suppressed(reason);
                return;
            }
            self.warned.insert(key, (), now);
        }
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(&note, 1000)),
            action: action.into(),
            secondary: None,
        };
        if let Err(err) = bounded(self.recorder.publish(&ev, &event_reference(obj))).await {
            tracing::warn!(%err, reason, "could not publish event");
        }
    }
}

/// The reference events are about: the object without its resourceVersion (see [`Context::event`]).
fn event_reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    let mut reference = obj.object_ref(&());
    reference.resource_version = None;
    reference
}

/// A fingerprint of `status` (its JSON), for [`Reconcile::decided_on`]. `None` if it cannot be
/// serialised, which no recur status can fail (none has a map with non-text keys).
pub(crate) fn fingerprint<S: serde::Serialize>(status: &S) -> Option<u64> {
    use std::hash::Hasher as _;
    let bytes = serde_json::to_vec(status).ok()?;
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write(&bytes);
    Some(hasher.finish())
}

/// A stable id for an object: namespace/name/uid, so a re-created object is a new one.
pub fn object_id<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    format!(
        "{}/{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
        meta.uid.as_deref().unwrap_or_default()
    )
}

/// The two conditions every kind keeps, `Ready` and `Stalled`, written for one generation at one
/// instant: `conditions(&mut status.conditions, generation, now).ready(true, reason, message)`.
pub fn conditions(
    list: &mut Vec<Condition>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Conditions<'_> {
    Conditions {
        list,
        generation,
        now,
    }
}

/// See [`conditions`].
pub struct Conditions<'a> {
    list: &'a mut Vec<Condition>,
    generation: Option<i64>,
    now: DateTime<Utc>,
}

impl Conditions<'_> {
    /// `Ready` with its reason and message.
    pub fn ready(&mut self, ready: bool, why: &str, message: &str) -> &mut Self {
        set_condition(
            self.list,
            reason::READY,
            ready,
            why,
            message,
            self.generation,
            self.now,
        );
        self
    }

    /// `Stalled` with its reason and message.
    pub fn stalled(&mut self, stalled: bool, why: &str, message: &str) -> &mut Self {
        set_condition(
            self.list,
            reason::STALLED,
            stalled,
            why,
            message,
            self.generation,
            self.now,
        );
        self
    }

    /// `Stalled=False`: the spec is valid.
    /// `Suspended` with its reason and message.
    pub fn suspended(&mut self, suspended: bool, why: &str, message: &str) -> &mut Self {
        set_condition(
            self.list,
            reason::SUSPENDED_CONDITION,
            suspended,
            why,
            message,
            self.generation,
            self.now,
        );
        self
    }

    pub fn valid(&mut self) -> &mut Self {
        self.stalled(false, reason::VALID, "the spec is valid")
    }
}

/// Builds a condition, keeping `lastTransitionTime` when the status did not change.
fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let status = if status { "True" } else { "False" };
    let transition = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(to_jiff(now)));
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: truncate(message, 1000),
        observed_generation: generation,
        last_transition_time: transition,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// Truncates on a character boundary and drops control characters other than newline and tab,
/// since the text may come from the network and ends in status, events and logs.
pub fn truncate(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .take(max)
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

/// Requeue delay until `at`, at least a millisecond (never a busy loop on a past instant).
pub fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (at - now)
        .to_std()
        .unwrap_or(Duration::ZERO)
        .max(Duration::from_millis(1))
}

/// Name and namespace of an object, or an error if the API server did not set them.
pub fn name_ns<K: Resource>(obj: &K) -> Result<(String, String), Error> {
    let name = obj
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingField("metadata.name"))?;
    let ns = obj
        .meta()
        .namespace
        .clone()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    Ok((name, ns))
}

/// The UID, required for idempotency keys.
pub fn uid<K: ResourceExt>(obj: &K) -> Result<String, Error> {
    obj.uid().ok_or(Error::MissingField("metadata.uid"))
}

/// Formats an instant for keys: compact, sortable, second precision plus milliseconds when any.
pub fn key_instant(t: DateTime<Utc>) -> String {
    if t.timestamp_subsec_millis() == 0 {
        t.format("%Y%m%dT%H%M%SZ").to_string()
    } else {
        t.format("%Y%m%dT%H%M%S%.3fZ").to_string()
    }
}

/// The context of the controllers' unit tests: the mock API server `service` (kube's
/// `tower_test` pair), the sidecar at `sidecar_url`, one worker, and policy caches never filled
/// (every namespace has the default policy).
#[cfg(test)]
pub(crate) fn test_context(
    service: tower_test::mock::Mock<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >,
    sidecar_url: &str,
    leadership: crate::lease::Leadership,
    lease_margin: Duration,
) -> Context {
    let client = kube::Client::new(service, "ns");
    #[allow(clippy::unwrap_used)]
    let dapr = DaprClient::new(
        crate::dapr::DaprConfig::new(sidecar_url, None, Duration::from_secs(5)).unwrap(),
    )
    .unwrap();
    let recorder = Recorder::new(client.clone(), "recur-test".into());
    let settings = Settings {
        workers: 1,
        upcoming: 3,
        backend_app_id: "backend".into(),
        lease_margin,
        selector: None,
        initial_list: initial_list::InitialList::Auto,
    };
    let (tenancy, _never_driven) = crate::tenancy::Tenancy::watch(client.clone());
    Context::new(
        client,
        recorder,
        dapr,
        Arc::new(Metrics::new()),
        Leaderships::single(leadership),
        Health::new(),
        settings,
        tenancy,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn truncate_drops_control_characters_and_marks_cuts() {
        assert_eq!(truncate("a\u{1b}[31mb\nc", 100), "a[31mb\nc");
        assert_eq!(truncate("héllo", 2), "hé…");
    }

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn key_instants_are_compact_and_keep_milliseconds() {
        let t = at(2026, 3, 29, 1, 30);
        assert_eq!(key_instant(t), "20260329T013000Z");
        assert_eq!(
            key_instant(t + chrono::Duration::milliseconds(250)),
            "20260329T013000.250Z"
        );
    }

    #[test]
    fn conditions_keep_transition_time_while_status_is_unchanged() {
        let t0 = at(2026, 1, 1, 0, 0);
        let t1 = t0 + chrono::Duration::hours(1);
        let mut conds = vec![];
        set_condition(&mut conds, "Ready", true, "Scheduled", "a", Some(1), t0);
        set_condition(&mut conds, "Ready", true, "Scheduled", "b", Some(2), t1);
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time, Time(to_jiff(t0)));
        assert_eq!(conds[0].message, "b");
        set_condition(
            &mut conds,
            "Ready",
            false,
            "InvalidSchedule",
            "c",
            Some(3),
            t1,
        );
        assert_eq!(conds[0].last_transition_time, Time(to_jiff(t1)));
    }
}
