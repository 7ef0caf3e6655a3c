//! What the operator knows of tenancy: every `TenantPolicy` and every namespace's labels, from
//! watch caches, and the admission review built on them.
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, PartialObjectMeta};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::broadcast;

use super::denial::{Denial, Rule};
use super::effective::{Effective, full_match};
use super::selector::selects;
use crate::api::{Backfill, RUN_NOW_ANNOTATION, RecurringTask, Reminder, TenantPolicy};
use crate::validate;
use crate::watch_cache::until_ready;

/// The watch caches of policies and namespaces, and a client for the few reads admission needs.
/// Cheap to clone.
#[derive(Clone)]
pub struct Tenancy {
    policies: Store<TenantPolicy>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    client: Client,
    changed: broadcast::Sender<()>,
}

impl Tenancy {
    /// Starts nothing: returns the view and the future that keeps its caches current (spawn it).
    pub fn watch(client: Client) -> (Tenancy, impl Future<Output = ()> + Send + 'static) {
        let (policies, policy_writer) = reflector::store();
        let (namespaces, namespace_writer) = reflector::store();
        let (changed, _) = broadcast::channel(16);
        let tenancy = Tenancy {
            policies,
            namespaces,
            client: client.clone(),
            changed: changed.clone(),
        };
        let policy_events = reflector::reflector(
            policy_writer,
            watcher(
                Api::<TenantPolicy>::all(client.clone()),
                watcher::Config::default(),
            ),
        )
        .default_backoff();
        let namespace_events = reflector::reflector(
            namespace_writer,
            // Labels are all that is read: metadata-only requests.
            watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client),
                watcher::Config::default(),
            ),
        )
        .default_backoff();
        let drive = async move {
            let policies = policy_events.for_each(move |event| {
                match event {
                    // A policy was added, changed or removed after the first list: every object
                    // is judged again, so a revoked grant stops deliveries now, not at the next one.
                    Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                        let _ = changed.send(());
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(%err, "watching TenantPolicies"),
                }
                futures::future::ready(())
            });
            let namespaces = namespace_events.for_each(|event| {
                if let Err(err) = event {
                    tracing::warn!(%err, "watching namespaces");
                }
                futures::future::ready(())
            });
            futures::join!(policies, namespaces);
        };
        (tenancy, drive)
    }

    /// Resolves once both caches hold their first full list (before that every namespace would
    /// look unselected, and a granted task would be refused). Any number may wait.
    pub async fn wait_synced(&self) -> Result<(), reflector::store::WriterDropped> {
        until_ready(&self.policies).await?;
        until_ready(&self.namespaces).await
    }

    /// Ticks whenever a policy changes (after the first list).
    pub fn changes(&self) -> impl Stream<Item = ()> + Send + 'static {
        // A lagging receiver missed ticks, not information: one tick judges everything again.
        futures::stream::unfold(self.changed.subscribe(), |mut rx| async move {
            match rx.recv().await {
                Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => Some(((), rx)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
    }

    /// The policy in force for `namespace`, as the caches have it now.
    pub fn effective(&self, namespace: &str) -> Effective {
        let labels = self
            .namespaces
            .get(&ObjectRef::new(namespace))
            .and_then(|ns| ns.metadata.labels.clone())
            .unwrap_or_default();
        Effective::new(namespace, labels, self.policies.state())
    }

    /// The admission decision on a request for a recur object (other kinds and deletions pass):
    /// first the spec's own checks ([`validate`], on a create or when the spec changes, so an
    /// object admitted before them can still be labelled or deleted), then the tenancy policy.
    pub async fn review(&self, request: &AdmissionRequest<DynamicObject>) -> Result<(), Denial> {
        if matches!(request.operation, Operation::Delete | Operation::Connect) {
            return Ok(());
        }
        let Some(object) = request.object.as_ref() else {
            return Ok(());
        };
        let namespace = request.namespace.clone().unwrap_or_default();
        let now = Utc::now();
        match request.kind.kind.as_str() {
            "RecurringTask" => {
                let task: RecurringTask = typed(object)?;
                let old: Option<RecurringTask> = old(request);
                let checked = task.clone();
                off_thread(move || {
                    if old.as_ref().is_none_or(|o| o.spec != checked.spec) {
                        validate::task_as_written(&checked, old.as_ref(), now)?;
                    }
                    if old
                        .as_ref()
                        .is_none_or(|o| run_now_token(o) != run_now_token(&checked))
                    {
                        validate::run_now(&checked)?;
                    }
                    Ok(())
                })
                .await?;
                let effective = self.effective(&namespace);
                effective.task(&task)?;
                if request.operation == Operation::Create
                    && let Some((max, policy)) = effective.max_tasks()
                {
                    self.room_for_a_task(&namespace, max, policy).await?;
                }
                Ok(())
            }
            "Reminder" => {
                let rem: Reminder = typed(object)?;
                let old: Option<Reminder> = old(request);
                if old.as_ref().is_none_or(|o| o.spec != rem.spec) {
                    validate::reminder(&rem).map_err(invalid)?;
                }
                self.effective(&namespace).reminder(&rem)?;
                let Some(task_ref) = &rem.spec.task_ref else {
                    return Ok(());
                };
                // A task that does not exist yet may be applied after its reminder (GitOps
                // order); the operator checks it again before sending.
                match self.task(&namespace, &task_ref.name).await {
                    Some(task) => task_owner(&rem, &task),
                    None => Ok(()),
                }
            }
            "Backfill" => {
                let bf: Backfill = typed(object)?;
                // The spec cannot change (CEL), and `to` is judged against the clock of the
                // create: an update of the metadata is not judged again.
                let old: Option<Backfill> = old(request);
                if old.is_some_and(|o| o.spec == bf.spec) {
                    return Ok(());
                }
                validate::backfill(&bf, now).map_err(invalid)?;
                // As for a reminder, the task may come later; the operator counts again before
                // delivering anything.
                match self.task(&namespace, &bf.spec.task_ref.name).await {
                    Some(task) => {
                        off_thread(move || validate::backfill_of(&bf, &task, now).map(|_| ())).await
                    }
                    None => Ok(()),
                }
            }
            "TenantPolicy" => {
                let policy: TenantPolicy = typed(object)?;
                well_formed(&policy)
            }
            _ => Ok(()),
        }
    }

    /// The task `name` of `namespace`; `None` when it does not exist or the API server does not
    /// answer within [`LOOKUP_TIMEOUT`].
    async fn task(&self, namespace: &str, name: &str) -> Option<RecurringTask> {
        // Not a name a task can have: none (and never in the request's path).
        if !crate::api::is_object_name(name) {
            return None;
        }
        let tasks: Api<RecurringTask> = Api::namespaced(self.client.clone(), namespace);
        bounded(tasks.get_opt(name)).await.ok().flatten()
    }

    /// Refuses a new task when the namespace already holds `max`.
    async fn room_for_a_task(&self, namespace: &str, max: u32, policy: &str) -> Result<(), Denial> {
        let tasks: Api<RecurringTask> = Api::namespaced(self.client.clone(), namespace);
        let lp = ListParams::default().limit(max.saturating_add(1));
        // Unanswered, the count is unknown: the quota is a limit, not a security boundary, so
        // the task is admitted rather than refused for the API server's hiccup.
        let Ok(Ok(list)) = tokio::time::timeout(LOOKUP_TIMEOUT, tasks.list_metadata(&lp)).await
        else {
            return Ok(());
        };
        let count = list.items.len() + usize::from(list.metadata.continue_.is_some());
        if count < max as usize {
            return Ok(());
        }
        Err(Denial {
            field: "metadata.namespace".into(),
            rule: Rule::MaxTasks,
            message: format!(
                "namespace {namespace} already holds {count} RecurringTasks; TenantPolicy {policy:?} allows at most {max} (rule limits.maxTasks)"
            ),
        })
    }
}

/// Admission answers within the webhook's timeout even when the API server is slow to answer.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

async fn bounded<T>(
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, Option<kube::Error>> {
    match tokio::time::timeout(LOOKUP_TIMEOUT, call).await {
        Ok(result) => result.map_err(Some),
        Err(_) => Err(None),
    }
}

/// The object as its kind; the CRD schema has already checked it, so this fails only on a
/// version skew between the CRDs and this operator.
fn typed<K: serde::de::DeserializeOwned>(object: &DynamicObject) -> Result<K, Denial> {
    serde_json::to_value(object)
        .and_then(serde_json::from_value)
        .map_err(|e| Denial {
            field: "spec".into(),
            rule: Rule::Malformed,
            message: format!("cannot be read by this recur version: {e}"),
        })
}

/// The object before an update, when it can be read (else it is judged as new).
fn old<K: serde::de::DeserializeOwned>(request: &AdmissionRequest<DynamicObject>) -> Option<K> {
    let old = request.old_object.as_ref()?;
    serde_json::to_value(old)
        .and_then(serde_json::from_value)
        .ok()
}

/// The run-now annotation's value, whatever it is.
fn run_now_token(task: &RecurringTask) -> Option<&String> {
    task.annotations().get(RUN_NOW_ANNOTATION)
}

/// A spec refused by [`validate`], as a refusal.
fn invalid(e: validate::Invalid) -> Denial {
    Denial {
        field: e.field,
        rule: Rule::Spec,
        message: e.message,
    }
}

/// Runs spec checks on the blocking pool: a schedule's search for its first occurrence or a
/// backfill's count is bounded but may take a while, and must neither stall the controllers
/// sharing the runtime nor escape the review's deadline. A check that fails to finish refuses.
async fn off_thread(
    check: impl FnOnce() -> Result<(), validate::Invalid> + Send + 'static,
) -> Result<(), Denial> {
    match tokio::task::spawn_blocking(check).await {
        Ok(outcome) => outcome.map_err(invalid),
        Err(e) => Err(Denial {
            field: "spec".into(),
            rule: Rule::Spec,
            message: format!("could not be checked: {e}"),
        }),
    }
}

/// A reminder may only name a task of its own user (the namespace is its own by construction).
pub fn task_owner(rem: &Reminder, task: &RecurringTask) -> Result<(), Denial> {
    if task.spec.user_id == rem.spec.user_id {
        return Ok(());
    }
    Err(Denial {
        field: "spec.taskRef".into(),
        rule: Rule::TaskOwner,
        message: format!(
            "task {:?} belongs to another user; a reminder may only name a task of its own userId",
            task.name_any()
        ),
    })
}

/// A policy the operator can apply: its selector and its user id pattern are valid.
fn well_formed(policy: &TenantPolicy) -> Result<(), Denial> {
    selects(&policy.spec.namespace_selector, &BTreeMap::new()).map_err(|why| Denial {
        field: format!("spec.{}", why.split_once(':').map_or("", |(f, _)| f)),
        rule: Rule::Malformed,
        message: why
            .split_once(": ")
            .map_or(why.clone(), |(_, w)| w.to_string()),
    })?;
    if let Some(pattern) = policy
        .spec
        .user_ids
        .as_ref()
        .and_then(|u| u.pattern.as_deref())
        && let Err(err) = full_match(pattern)
    {
        return Err(Denial {
            field: "spec.userIds.pattern".into(),
            rule: Rule::Malformed,
            message: format!("not a valid regular expression: {err}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
