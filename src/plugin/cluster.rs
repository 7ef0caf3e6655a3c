//! The plugin's only I/O with Kubernetes: the client (kubeconfig, context, namespace), reading a
//! task, patches, and waiting on a condition with a deadline.
use std::future::Future;
use std::time::Duration;

use kube::api::{ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use super::{Error, Global};
use crate::api::{Backfill, RecurringTask};

/// The field manager of every write, so `managedFields` shows who set what.
pub const FIELD_MANAGER: &str = "kubectl-recur";
/// How often a `--wait` looks again.
const POLL: Duration = Duration::from_millis(500);

/// A client and the namespace the command works in.
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
    url: String,
}

/// Builds the client as kubectl would: `--kubeconfig`, else `$KUBECONFIG` or `~/.kube/config`
/// (else the in-cluster service account), at `--context` or the current context; the namespace
/// is `-n`, else the context's, else `default`.
pub async fn connect(g: &Global) -> Result<Cluster, Error> {
    let options = KubeConfigOptions {
        context: g.context.clone(),
        ..KubeConfigOptions::default()
    };
    let mut config = if let Some(path) = &g.kubeconfig {
        let file = Kubeconfig::read_from(path)
            .map_err(|e| Error::Config(format!("kubeconfig {}: {}", path.display(), chain(&e))))?;
        Config::from_custom_kubeconfig(file, &options)
            .await
            .map_err(|e| Error::Config(format!("kubeconfig {}: {}", path.display(), chain(&e))))?
    } else if g.context.is_some() {
        Config::from_kubeconfig(&options)
            .await
            .map_err(|e| Error::Config(format!("kubeconfig: {}", chain(&e))))?
    } else {
        Config::infer().await.map_err(|e| {
            Error::Config(format!(
                "no cluster to talk to (set KUBECONFIG or --kubeconfig): {}",
                chain(&e)
            ))
        })?
    };
    // A command makes a few short requests; none needs the unbounded wait a watch would.
    config.read_timeout = Some(Duration::from_secs(30));
    config.reset_reader_on_write = true;
    crate::user_agent::identify(&mut config, "kubectl-recur");
    let namespace = g
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| Error::Config(chain(&e)))?;
    Ok(Cluster {
        client,
        namespace,
        url,
    })
}

/// The name in `NAME`, `rt/NAME`, `recurringtask/NAME` or `recurringtasks.recur.dev/NAME`;
/// another kind (`reminder/x`, `pod/x`) is refused.
pub fn task_name(given: &str) -> Result<&str, Error> {
    let given_trimmed = given.trim();
    let name = match given_trimmed.split_once('/') {
        None => given_trimmed,
        Some((kind, name)) => {
            let kind = kind.to_ascii_lowercase();
            let kind = kind.strip_suffix(".recur.dev").unwrap_or(&kind);
            if !matches!(kind, "rt" | "recurringtask" | "recurringtasks") || name.contains('/') {
                return Err(Error::NotATask {
                    given: given.into(),
                });
            }
            name
        }
    };
    if name.is_empty() {
        return Err(Error::Usage("the task's NAME is empty".into()));
    }
    Ok(name)
}

impl Cluster {
    pub fn tasks(&self) -> Api<RecurringTask> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn backfills(&self) -> Api<Backfill> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Reads a task; a 404 says whether the task or the whole kind is missing.
    pub async fn task(&self, name: &str) -> Result<RecurringTask, Error> {
        let api = self.tasks();
        match api.get(name).await {
            Ok(task) => Ok(task),
            Err(kube::Error::Api(s)) if s.is_not_found() => {
                match api.list(&ListParams::default().limit(1)).await {
                    Err(kube::Error::Api(s)) if s.is_not_found() => Err(Error::NotInstalled {
                        resource: "recurringtasks",
                    }),
                    _ => Err(Error::TaskNotFound {
                        name: name.into(),
                        namespace: self.namespace.clone(),
                    }),
                }
            }
            Err(e) => Err(self.fail(format!("reading recurringtask {name}"), e)),
        }
    }

    /// A JSON merge patch of a task.
    pub async fn merge_task(
        &self,
        name: &str,
        patch: &serde_json::Value,
        action: &str,
    ) -> Result<RecurringTask, Error> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        self.tasks()
            .patch(name, &params, &Patch::Merge(patch))
            .await
            .map_err(|e| self.fail(format!("{action} recurringtask {name}"), e))
    }

    /// The error of a failed call: the API server's own words, or why it could not be reached.
    pub fn fail(&self, action: impl Into<String>, e: kube::Error) -> Error {
        let action = format!("{} in namespace {}", action.into(), self.namespace);
        let message = match e {
            kube::Error::Api(s) => format!("{} (HTTP {})", s.message, s.code),
            other => format!(
                "cannot reach the API server {}: {}",
                self.url,
                chain(&other)
            ),
        };
        Error::Api { action, message }
    }
}

/// An error and its causes, `a: b: c`: the root cause ("Connection refused") is what helps.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Calls `probe` until it yields a value, every half second, for at most `timeout`.
pub async fn poll<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, Error>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout {
                after: timeout,
                what: what.into(),
            });
        }
        tokio::time::sleep(POLL.min(left)).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn task_names_with_or_without_their_kind() {
        for given in [
            "standup",
            "rt/standup",
            "RecurringTask/standup",
            "recurringtasks/standup",
            "recurringtask.recur.dev/standup",
        ] {
            assert_eq!(task_name(given).unwrap(), "standup", "{given}");
        }
        for given in [
            "reminder/standup",
            "pod/x",
            "rt/a/b",
            "backfill.recur.dev/x",
        ] {
            assert!(
                matches!(task_name(given), Err(Error::NotATask { .. })),
                "{given}"
            );
        }
        assert!(matches!(task_name("rt/"), Err(Error::Usage(_))));
    }

    #[tokio::test]
    async fn poll_gives_up_at_its_deadline_and_names_what_it_waited_for() {
        let mut calls = 0;
        let err = poll(Duration::from_millis(600), "the operator", || {
            calls += 1;
            async { Ok::<Option<()>, Error>(None) }
        })
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "timed out after 0.6s waiting for the operator"
        );
        assert!(calls >= 2, "looked again before giving up: {calls}");
        let found = poll(Duration::from_secs(2), "x", || async { Ok(Some(7)) }).await;
        assert_eq!(found.unwrap(), 7);
    }
}
