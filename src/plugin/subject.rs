//! The task a command looks at: read from the cluster (spec and status), or from a manifest
//! (`--file`, no cluster needed), and its schedule compiled exactly as the operator compiles it.
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use kube::{Resource, ResourceExt};

use super::cluster::{connect, task_name};
use super::output::{plural, utc};
use super::{Error, Global};
use crate::api::{RecurringTask, RecurringTaskStatus, condition};
use crate::controller::reason;
use crate::schedule::{CompileContext, Schedule, ScheduleSpec};

/// A task's schedule and what else a command shows about it.
#[derive(Debug, Clone)]
pub struct Subject {
    /// `standup in team-a`, or `the RecurringTask in task.yaml`.
    pub label: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The jitter seed and the keys' prefix; unknown for a manifest of a task not created yet.
    pub uid: Option<String>,
    /// `metadata.creationTimestamp`: the start when `startAt` is unset.
    pub created: Option<DateTime<Utc>>,
    pub spec: ScheduleSpec,
    /// The task as the API server returned it (absent for a manifest).
    pub task: Option<RecurringTask>,
}

impl Subject {
    pub fn from_task(task: RecurringTask) -> Subject {
        let namespace = task.namespace();
        let name = task.name_any();
        Subject {
            label: match &namespace {
                Some(ns) => format!("{name} in {ns}"),
                None => name.clone(),
            },
            namespace,
            name: Some(name),
            uid: task.uid(),
            created: task
                .meta()
                .creation_timestamp
                .as_ref()
                .map(|t| crate::controller::from_jiff(t.0)),
            spec: task.spec.schedule.clone(),
            task: Some(task),
        }
    }

    /// The first RecurringTask of a YAML file, as `recur schedule --file` reads it.
    pub fn from_manifest(path: &Path, text: &str) -> Result<Subject, Error> {
        let source =
            crate::cli::schedule::source_from_manifest(text).map_err(|message| Error::File {
                path: path.display().to_string(),
                message,
            })?;
        Ok(Subject {
            label: format!("the RecurringTask in {}", path.display()),
            namespace: None,
            name: None,
            uid: source.uid,
            created: source.created,
            spec: source.spec,
            task: None,
        })
    }

    /// The schedule the operator uses: the creation time as anchor, the UID as jitter seed. A
    /// manifest of a task not created yet starts at `now`, as if it were created now.
    pub fn compile(&self, now: DateTime<Utc>) -> Result<Schedule, Error> {
        let compiled = match &self.task {
            Some(task) => crate::controller::task::compile(task),
            None => Schedule::compile(
                &self.spec,
                &CompileContext {
                    anchor: self.created.unwrap_or(now),
                    seed: self.uid.clone().unwrap_or_default(),
                },
            ),
        };
        compiled.map_err(|source| Error::Schedule {
            task: self.label.clone(),
            source,
        })
    }

    pub fn status(&self) -> Option<&RecurringTaskStatus> {
        self.task.as_ref().and_then(|t| t.status.as_ref())
    }

    pub fn suspended(&self) -> bool {
        self.task.as_ref().is_some_and(|t| t.spec.suspend)
    }

    /// What an on-call engineer should know before trusting the computed instants.
    pub fn warnings(&self, now: DateTime<Utc>) -> Vec<String> {
        let mut out = vec![];
        let Some(task) = &self.task else {
            if self.uid.is_none() && self.spec.jitter.is_some() {
                out.push(
                    "the manifest has no metadata.uid: jitter is computed with an empty seed, so due instants differ once the task exists".into(),
                );
            }
            return out;
        };
        if task.spec.suspend {
            let why = task
                .spec
                .suspend_reason
                .as_deref()
                .filter(|r| !r.trim().is_empty())
                .map_or(String::new(), |r| format!(" ({r})"));
            out.push(format!(
                "the task is suspended{why}: nothing is delivered until `kubectl recur resume`, and what falls due meanwhile is never delivered"
            ));
        }
        let Some(status) = &task.status else {
            out.push("the task has no status yet: is the operator running?".into());
            return out;
        };
        if let (Some(seen), Some(generation)) =
            (status.observed_generation, task.metadata.generation)
            && seen < generation
        {
            out.push(format!(
                "the operator has not acted on the latest spec yet (status is of generation {seen}, the spec is {generation})"
            ));
        }
        if let Some(ready) = condition(&status.conditions, reason::READY)
            && ready.status == "False"
        {
            out.push(format!("Ready=False ({}): {}", ready.reason, ready.message));
        }
        if let Some(p) = &status.next_occurrence
            && p.due < now
        {
            let retry = p
                .retry_at
                .map_or(String::new(), |r| format!(", next try at {}", utc(r)));
            out.push(format!(
                "the occurrence of {} (due {}) is not delivered yet: {} failed{retry}",
                utc(p.nominal),
                utc(p.due),
                plural(p.attempts as usize, "attempt")
            ));
        }
        out
    }
}

/// Where a command reads its task: `NAME` from the cluster, or `--file`.
pub async fn load(
    g: &Global,
    name: Option<&str>,
    file: Option<&PathBuf>,
) -> Result<Subject, Error> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| Error::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        return Subject::from_manifest(path, &text);
    }
    let given = name.ok_or_else(|| Error::Usage("give a task's NAME or --file".into()))?;
    let cluster = connect(g).await?;
    let task = cluster.task(task_name(given)?).await?;
    Ok(Subject::from_task(task))
}

#[cfg(test)]
pub(crate) mod fixtures {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use crate::api::RecurringTask;

    pub const UID: &str = "c2343bef-b58e-4dca-985d-947106f3b494";

    /// A task as the API server returns it: metadata filled in, `schedule` and `extra` merged
    /// into the spec, `status` as given.
    pub fn task(
        schedule: serde_json::Value,
        extra: serde_json::Value,
        status: serde_json::Value,
    ) -> RecurringTask {
        let mut spec =
            serde_json::json!({"userId": "user-42", "title": "Nightly", "schedule": schedule});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            spec[k] = v;
        }
        let mut task = serde_json::json!({
            "apiVersion": "recur.dev/v1alpha1",
            "kind": "RecurringTask",
            "metadata": {
                "name": "nightly",
                "namespace": "team-a",
                "uid": UID,
                "generation": 1,
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "spec": spec,
        });
        if !status.is_null() {
            task["status"] = status;
        }
        serde_json::from_value(task).unwrap()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use serde_json::json;

    use super::fixtures::{UID, task};
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-03-28T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_task_compiles_with_its_uid_and_creation_time_like_the_operator() {
        let t = task(json!({"every": "90m"}), json!({}), json!(null));
        let s = Subject::from_task(t.clone());
        assert_eq!(s.label, "nightly in team-a");
        assert_eq!(s.uid.as_deref(), Some(UID));
        let ours = s.compile(now()).unwrap();
        let operators = crate::controller::task::compile(&t).unwrap();
        assert_eq!(
            ours.iter_after(now()).take(3).collect::<Vec<_>>(),
            operators.iter_after(now()).take(3).collect::<Vec<_>>()
        );
        // every 90m from the creation time, 2026-01-01T00:00Z.
        assert_eq!(
            ours.next_after(now()).unwrap().nominal,
            "2026-03-28T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
                + chrono::TimeDelta::minutes(90)
        );
    }

    #[test]
    fn warnings_name_suspension_an_unseen_spec_a_stuck_occurrence_and_readiness() {
        let t = task(
            json!({"cron": "30 2 * * *"}),
            json!({"suspend": true, "suspendReason": "migration (alice)"}),
            json!({
                "observedGeneration": 0,
                "conditions": [{"type": "Ready", "status": "False", "reason": "BackendUnavailable",
                    "message": "503 from backend", "lastTransitionTime": "2026-03-27T02:30:00Z"}],
                "nextOccurrence": {"nominal": "2026-03-27T02:30:00Z", "due": "2026-03-27T02:30:00Z",
                    "idempotencyKey": "k", "attempts": 3, "retryAt": "2026-03-28T00:05:00Z"},
            }),
        );
        let w = Subject::from_task(t).warnings(now());
        assert_eq!(
            w,
            [
                "the task is suspended (migration (alice)): nothing is delivered until `kubectl recur resume`, and what falls due meanwhile is never delivered",
                "the operator has not acted on the latest spec yet (status is of generation 0, the spec is 1)",
                "Ready=False (BackendUnavailable): 503 from backend",
                "the occurrence of 2026-03-27T02:30:00Z (due 2026-03-27T02:30:00Z) is not delivered yet: 3 attempts failed, next try at 2026-03-28T00:05:00Z",
            ]
        );
        let fresh = task(json!({"cron": "30 2 * * *"}), json!({}), json!(null));
        assert_eq!(
            Subject::from_task(fresh).warnings(now()),
            ["the task has no status yet: is the operator running?"]
        );
    }

    #[test]
    fn a_manifest_without_uid_warns_that_jitter_will_differ() {
        let yaml = "apiVersion: recur.dev/v1alpha1\nkind: RecurringTask\nmetadata: {name: x}\nspec:\n  schedule: {cron: '0 9 * * *', jitter: 5m}\n";
        let s = Subject::from_manifest(Path::new("task.yaml"), yaml).unwrap();
        assert_eq!(s.label, "the RecurringTask in task.yaml");
        assert_eq!(s.warnings(now()).len(), 1);
        let err = Subject::from_manifest(Path::new("x.yaml"), "kind: Reminder\n").unwrap_err();
        assert_eq!(err.to_string(), "x.yaml: no RecurringTask in the file");
    }
}
