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
/// The burst's "before" snapshot is taken this long before the burst instant, once every object
/// is ready for it.
pub const MARGIN: Duration = Duration::from_secs(8);

/// The burst instant and the schedule that makes it a one-off: a daily cron (`M H * * *`, UTC)
/// at a minute far enough ahead that every object can be created, and every first occurrence
/// written, before it. Whatever the machine's speed the objects are all ready for the same
/// instant, and each fires once in the window (its next occurrence is a day later), where a
/// `* * * * *` burst needs the whole setup to fit in one minute.
#[derive(Clone, Debug)]
pub struct OneOff {
    pub due: DateTime<Utc>,
    pub cron: String,
}

impl OneOff {
    /// The first minute boundary at least `lead` after `now`.
    pub fn after(now: DateTime<Utc>, lead: Duration) -> Self {
        let at =
            now + chrono::Duration::from_std(lead).unwrap_or_else(|_| chrono::Duration::days(1));
        let due = if at.second() == 0 && at.nanosecond() == 0 {
            at
        } else {
            next_minute(at)
        };
        OneOff {
            due,
            cron: format!("{} {} * * *", due.minute(), due.hour()),
        }
    }

    /// A one-off burst for `writes` API writes of setup (creates, first status writes), from
    /// `per_second`, the bare-patch rate measured in the same run (the limit): the setup is
    /// given three times what the writes would take at that rate, plus 30 s (operator start and
    /// list, namespace creation), so it fits however slow the apiserver is.
    pub fn for_writes(writes: usize, per_second: f64) -> Self {
        let lead = Duration::from_secs(30) + Duration::from_secs_f64(lead_secs(writes, per_second));
        let one = Self::after(Utc::now(), lead);
        say(format!(
            "burst instant {} (cron {:?}): {writes} setup writes at a third of {per_second:.0}/s, plus 30 s",
            one.due.format("%H:%M:%S"),
            one.cron
        ));
        one
    }

    /// How long the setup may take: until [`MARGIN`] before the burst instant.
    pub fn setup_left(&self) -> Duration {
        let at = self.due - chrono::Duration::from_std(MARGIN).unwrap_or_default();
        (at - Utc::now()).to_std().unwrap_or_default()
    }

    /// Sleeps until [`MARGIN`] before the burst instant (the "before" snapshot is taken then, so
    /// the window does not grow with the lead); fails if that moment is already past.
    pub async fn until_snapshot(&self) -> Res<()> {
        let at = self.due - chrono::Duration::from_std(MARGIN).unwrap_or_default();
        match (at - Utc::now()).to_std() {
            Ok(left) => {
                tokio::time::sleep(left).await;
                Ok(())
            }
            Err(_) => Err(msg(format!(
                "setup overran: it is {} and the burst is at {}; every object had to be ready {}s before it",
                Utc::now().format("%H:%M:%S"),
                self.due.format("%H:%M:%S"),
                MARGIN.as_secs()
            ))),
        }
    }
}

/// Seconds for `writes` writes at a third of `per_second` (at least 1/s).
fn lead_secs(writes: usize, per_second: f64) -> f64 {
    3.0 * writes as f64 / per_second.max(1.0)
}

/// Fails with a clear message when the RecurringTask CRD is not served (crds/ not applied).
pub async fn ensure_crd(client: &Client) -> Res<()> {
    Api::<recur::api::RecurringTask>::all(client.clone())
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(|e| {
            msg(format!(
                "the RecurringTask CRD is not usable ({e}); apply crds/ first"
            ))
        })?;
    Ok(())
}

/// What every scenario that runs `recur run` starts from.
pub struct Bench {
    /// A client of the loopback cluster, whose recur CRDs are usable.
    pub client: Client,
    /// For the operators' endpoints and the recording backend, `timeout` a request.
    pub http: reqwest::Client,
    /// The machine and the versions, for the report.
    pub environment: crate::results::Environment,
}

pub async fn connect(kubeconfig: &Path, sidecar: &str, timeout: Duration) -> Res<Bench> {
    let client = kube_client(kubeconfig).await?;
    let http = reqwest::Client::builder().timeout(timeout).build()?;
    ensure_crd(&client).await?;
    let version = client.apiserver_version().await?;
    Ok(Bench {
        environment: crate::procfs::environment(version.git_version, sidecar.to_owned()),
        client,
        http,
    })
}

pub async fn kube_client(path: &Path) -> Res<Client> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let mut config =
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    // The minimal client's requests, told from recur's in an audit log.
    recur::user_agent::identify(&mut config, "recur-bench");
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
    delete_namespace_within(client, name, Duration::from_secs(600)).await
}

/// Deletes a namespace and waits up to `timeout` until it is gone.
pub async fn delete_namespace_within(client: &Client, name: &str, timeout: Duration) -> Res<()> {
    let api = Api::<Namespace>::all(client.clone());
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    let started = Instant::now();
    wait_until(timeout, &format!("namespace {name} to be deleted"), || {
        let api = api.clone();
        async move { matches!(api.get_opt(name).await, Ok(None)) }
    })
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

/// `t` rounded up to a whole second.
pub fn next_second(t: DateTime<Utc>) -> DateTime<Utc> {
    if t.nanosecond() == 0 {
        return t;
    }
    DateTime::from_timestamp(t.timestamp() + 1, 0).unwrap_or(t)
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
    fn one_offs_are_daily_crons_at_the_first_minute_after_the_lead() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T23:58:30Z")
            .unwrap()
            .with_timezone(&Utc);
        let one = OneOff::after(now, Duration::from_secs(100));
        assert_eq!(one.due.to_rfc3339(), "2026-01-02T00:01:00+00:00");
        assert_eq!(one.cron, "1 0 * * *");
        let exact = OneOff::after(now, Duration::from_secs(30));
        assert_eq!(exact.due.to_rfc3339(), "2026-01-01T23:59:00+00:00");
        assert_eq!(exact.cron, "59 23 * * *");
        // 10,000 tasks: a create and a first status write each, at 240 patches/s.
        assert_eq!(lead_secs(20_000, 240.0).round(), 250.0);
    }

    #[test]
    fn minute_boundaries() {
        let t = DateTime::parse_from_rfc3339("2026-01-01T10:00:59.9Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(next_minute(t).to_rfc3339(), "2026-01-01T10:01:00+00:00");
        assert_eq!(next_second(t).to_rfc3339(), "2026-01-01T10:01:00+00:00");
        let whole = next_minute(t);
        assert_eq!(next_second(whole), whole);
    }
}
