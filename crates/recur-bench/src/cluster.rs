//! The (loopback) cluster: the client, the benchmark's namespaces, bulk creates, and waits on
//! conditions and on the wall clock's minute boundaries.
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::{Res, msg};
use crate::say;

/// Label on every namespace the benchmark creates.
pub const BENCH_LABEL: &str = "recur.dev/bench";
/// Concurrency of the benchmark's own writes (creates, the limit's patches).
pub const CONCURRENCY: usize = 64;
/// The burst is measured only when every task is pending for a minute at least this far ahead
/// (the "before" snapshot is taken in between).
pub const MARGIN: Duration = Duration::from_secs(8);

pub async fn kube_client(path: &Path) -> Res<Client> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    // Load goes only to a cluster on this machine, never to someone's real one.
    let host = config.cluster_url.host().unwrap_or_default().to_owned();
    if !matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]" | "::1") {
        return Err(msg(format!(
            "the kubeconfig {} points at {}: recur-bench runs only against a cluster on loopback",
            path.display(),
            config.cluster_url
        )));
    }
    Ok(Client::try_from(config)?)
}

/// Deletes `name` if it exists (waiting until it is gone), then creates it afresh.
pub async fn fresh_namespace(client: &Client, name: &str) -> Res<()> {
    delete_namespace(client, name).await?;
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {BENCH_LABEL: "true"}}
    }))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(())
}

/// Deletes a namespace and waits (up to 10 minutes) until it is gone.
pub async fn delete_namespace(client: &Client, name: &str) -> Res<()> {
    let api = Api::<Namespace>::all(client.clone());
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    let started = Instant::now();
    wait_until(
        Duration::from_secs(600),
        &format!("namespace {name} to be deleted"),
        || {
            let api = api.clone();
            async move { matches!(api.get_opt(name).await, Ok(None)) }
        },
    )
    .await?;
    say(format!(
        "namespace {name} deleted in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Polls `check` (at most every 250 ms) until it holds; fails naming `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Res<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(true) = tokio::time::timeout(left, check()).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(msg(format!(
                "timed out after {timeout:?} waiting for {what}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Creates `objects` with `CONCURRENCY` requests in flight; returns how long it took.
pub async fn create_all<K>(api: &Api<K>, objects: Vec<K>) -> Res<Duration>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let started = Instant::now();
    let results: Vec<Result<K, kube::Error>> = futures::stream::iter(objects)
        .map(|o| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &o).await }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let errors: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    if let Some(first) = errors.first() {
        return Err(msg(format!(
            "{} creates failed; the first: {first}",
            errors.len()
        )));
    }
    Ok(started.elapsed())
}

/// Sleeps until the next minute boundary of the wall clock (plus 100 ms).
pub async fn until_next_minute() {
    let now = Utc::now();
    let into = Duration::from_millis(
        u64::from(now.second()) * 1000 + u64::from(now.nanosecond() / 1_000_000).min(999),
    );
    let left = Duration::from_secs(60).saturating_sub(into) + Duration::from_millis(100);
    say(format!(
        "waiting {:.1}s for the next minute",
        left.as_secs_f64()
    ));
    tokio::time::sleep(left).await;
}

pub fn next_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = (t.timestamp().div_euclid(60) + 1) * 60;
    DateTime::from_timestamp(secs, 0).unwrap_or(t)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn minute_boundaries() {
        let t = DateTime::parse_from_rfc3339("2026-01-01T10:00:59.9Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(next_minute(t).to_rfc3339(), "2026-01-01T10:01:00+00:00");
    }
}
