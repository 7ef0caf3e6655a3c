//! One completion event's effects: find the task by the UID in its key (the task controller's
//! watch cache), read it, decide, and record the completion with a guarded status write. Any
//! replica may receive an event (one consumer group for the operator's app id), so this runs
//! without the lease: the write is guarded by the resourceVersion it decided on.
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::Utc;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use tracing::{debug, info, warn};

use super::{Decision, Received, Route, decide, key_uid, parse};
use crate::api::RecurringTask;
use crate::controller::memo::Memo;
use crate::controller::task::KIND;
use crate::controller::{Context, Guard, bounded};
use crate::watch_cache::until_ready;

/// Conflicting writes (the leader, or another replica with the same event) before the event
/// is handed back to Dapr for a later delivery.
const WRITE_ATTEMPTS: usize = 3;
/// How long an event waits for the watch cache's first list before it is asked again later.
const CACHE_WAIT: Duration = Duration::from_secs(2);
/// How long a UID's task is remembered; an entry is checked against the cache on every use.
const INDEX_MEMORY: Duration = Duration::from_secs(3600);

/// Tasks by UID, over the task controller's watch cache (shared once it exists).
pub struct TaskIndex {
    cache: OnceLock<Store<RecurringTask>>,
    /// UID to namespace and name, for the tasks found lately: spares a scan of the cache.
    found: Memo<String, (String, String)>,
}

/// The cache has not listed the tasks yet: every task would look unknown.
#[derive(Debug)]
struct NotReady;

impl Default for TaskIndex {
    fn default() -> Self {
        TaskIndex {
            cache: OnceLock::new(),
            found: Memo::new(INDEX_MEMORY),
        }
    }
}

impl TaskIndex {
    /// Takes the task controller's watch cache (the first one offered).
    pub(crate) fn share(&self, cache: Store<RecurringTask>) {
        let _ = self.cache.set(cache);
    }

    /// Namespace and name of the task whose UID is `uid`, if the cache has it.
    async fn find(&self, uid: &str) -> Result<Option<(String, String)>, NotReady> {
        let cache = self.cache.get().ok_or(NotReady)?;
        match tokio::time::timeout(CACHE_WAIT, until_ready(cache)).await {
            Ok(Ok(())) => {}
            _ => return Err(NotReady),
        }
        let now = Instant::now();
        let has_uid = |t: &RecurringTask| t.uid().as_deref() == Some(uid);
        if let Some((ns, name)) = self.found.get(&uid.to_string(), now) {
            let cached = cache.get(&ObjectRef::new(&name).within(&ns));
            if cached.is_some_and(|t| has_uid(&t)) {
                return Ok(Some((ns, name)));
            }
        }
        let Some(task) = cache.find(|t| has_uid(t)) else {
            return Ok(None);
        };
        let (Some(ns), name) = (task.namespace(), task.name_any()) else {
            return Ok(None);
        };
        self.found
            .insert(uid.to_string(), (ns.clone(), name.clone()), now);
        Ok(Some((ns, name)))
    }
}

impl Context {
    /// Handles one completion event `body` delivered through `route`: decides, records,
    /// counts. Logs name the task and, once it is known to the task, the key; nothing else
    /// from the event.
    pub async fn receive_completion(&self, route: &Route, body: &[u8]) -> Received {
        let received = self.completion(route, body).await;
        self.metrics.completion(received.label());
        received
    }

    async fn completion(&self, route: &Route, body: &[u8]) -> Received {
        let event = match parse(body) {
            Ok(event) => event,
            Err(why) => {
                debug!(topic = %route.topic, %why, "not a completion event; dropped");
                return Received::Invalid;
            }
        };
        let Some(uid) = key_uid(&event.key) else {
            return Received::Invalid;
        };
        let (ns, name) = match self.tasks.find(uid).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                debug!(topic = %route.topic, "a completion for no task recur serves; dropped");
                return Received::Unknown;
            }
            Err(NotReady) => return Received::Error,
        };
        let api: Api<RecurringTask> = Api::namespaced(self.client.clone(), &ns);
        for _ in 0..WRITE_ATTEMPTS {
            let task = match bounded(api.get_opt(&name)).await {
                Ok(Some(task)) => task,
                Ok(None) => return Received::Unknown,
                Err(err) => {
                    warn!(namespace = %ns, name = %name, %err, "reading a task for a completion");
                    return Received::Error;
                }
            };
            let effective = self.tenancy.effective(&ns);
            let (status, seconds) = match decide(&task, &effective, route, &event, Utc::now()) {
                Decision::Accept {
                    status,
                    seconds_after_due,
                } => (status, seconds_after_due),
                Decision::Duplicate => {
                    debug!(namespace = %ns, name = %name, key = %event.key, "completion already recorded");
                    return Received::Duplicate;
                }
                Decision::Unknown => {
                    debug!(namespace = %ns, name = %name, "a completion for a key the task does not know; dropped");
                    return Received::Unknown;
                }
                Decision::Pending => {
                    debug!(namespace = %ns, name = %name, key = %event.key, "completion of a delivery not recorded yet; asked again later");
                    return Received::Pending;
                }
                Decision::Refused(why) => {
                    warn!(namespace = %ns, name = %name, pubsub = %route.pubsub, topic = %route.topic, why = why.describe(), "completion event refused");
                    return Received::Refused;
                }
            };
            let guard = Guard::ResourceVersion(task.resource_version().unwrap_or_default());
            match self
                .write_status(KIND, &api, &name, guard, status.as_ref())
                .await
            {
                Ok(true) => {
                    self.metrics.completion_seconds(seconds);
                    info!(namespace = %ns, name = %name, key = %event.key, seconds_after_due = seconds, "occurrence completed");
                    return Received::Accepted;
                }
                Ok(false) => continue,
                Err(err) => {
                    warn!(namespace = %ns, name = %name, %err, "recording a completion");
                    return Received::Error;
                }
            }
        }
        debug!(namespace = %ns, name = %name, "completion write kept conflicting; asked again later");
        Received::Error
    }
}
