//! What one guarded status write costs kube-apiserver, form by form, in one run on one machine:
//! N RecurringTasks with a realistic status (10 history records, conditions, upcoming), then for
//! each form a time-boxed phase of status writes at concurrency [`CONCURRENCY`], each moving the
//! pending key on by one (as recur does after a delivery), while kube-apiserver's CPU is read
//! from /proc (and, optionally, profiled through /debug/pprof). Ratios within the run are what
//! matters; the machine may be busy with other work.
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, core::Request};
use recur::api::RecurringTask;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::args::PatchCostArgs;
use crate::cluster::{CONCURRENCY, delete_namespace, fresh_namespace, kube_client};
use crate::error::{Res, msg};
use crate::pprof::Profile;
use crate::procfs::{environment, made_on, proc_stat};
use crate::recur_scenario::{create_tasks, task_name};
use crate::results::{Environment, write_json};
use crate::say;

const NS: &str = "bench-patchcost";
const MANAGER: &str = "recur";
/// History records in every status (recur's default `historyLimit`).
const HISTORY: usize = 10;
/// The step every object starts at: its history is full from the first write measured.
const START: u64 = HISTORY as u64;

/// How a status write is expressed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Form {
    /// Today's: a JSON patch that tests the pending key, then adds the whole `/status`.
    JsonTest,
    /// A JSON patch that tests the pending key, then changes only what a delivery changes
    /// (pending, last occurrence, one history record in and one out, upcoming, counters).
    JsonTestDelta,
    /// A JSON patch that tests the pending key, then replaces only `/status/nextOccurrence`.
    JsonTestPending,
    /// A merge patch of the whole status, no precondition (no compare-and-swap).
    MergeFull,
    /// A merge patch of the whole status with `metadata.resourceVersion` (a precondition on
    /// every change of the object, labels and annotations included).
    MergeRv,
    /// A merge patch of `status.nextOccurrence` alone, no precondition: the limit's write.
    MergeBare,
    /// Server-side apply of the whole status (force), no precondition.
    Apply,
    /// Server-side apply of the whole status with `metadata.resourceVersion`.
    ApplyRv,
}

impl Form {
    fn name(self) -> &'static str {
        match self {
            Form::JsonTest => "json-test",
            Form::JsonTestDelta => "json-test-delta",
            Form::JsonTestPending => "json-test-pending",
            Form::MergeFull => "merge-full",
            Form::MergeRv => "merge-rv",
            Form::MergeBare => "merge-bare",
            Form::Apply => "apply",
            Form::ApplyRv => "apply-rv",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Form::JsonTest => {
                "JSON patch: `test` the pending key, `add /status` (today's guarded write)"
            }
            Form::JsonTestDelta => {
                "JSON patch: `test` the pending key, then only what changed (8 ops: pending, last occurrence, history in/out, upcoming, delivered, Ready message)"
            }
            Form::JsonTestPending => {
                "JSON patch: `test` the pending key, `replace /status/nextOccurrence`"
            }
            Form::MergeFull => "merge patch of the whole status, no precondition",
            Form::MergeRv => "merge patch of the whole status + `metadata.resourceVersion`",
            Form::MergeBare => "merge patch of `status.nextOccurrence` only (the limit's write)",
            Form::Apply => "server-side apply of the whole status (force), no precondition",
            Form::ApplyRv => "server-side apply of the whole status + `metadata.resourceVersion`",
        }
    }
}

/// Per-object state the guards need: the step of its pending key and its resourceVersion.
struct ObjState {
    step: u64,
    rv: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Phase {
    pub round: usize,
    pub form: String,
    pub description: String,
    /// Extra field managers on each object (0: recur's only).
    pub managers: usize,
    /// Watches open on the namespace during the phase (besides kube-controller-manager's).
    pub watchers: usize,
    pub seconds: f64,
    pub writes: usize,
    pub conflicts: usize,
    pub errors: usize,
    pub writes_per_s: f64,
    pub apiserver_cpu_ms_per_write: f64,
    pub etcd_cpu_ms_per_write: Option<f64>,
    pub client_cpu_ms_per_write: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub request_bytes: f64,
    pub response_bytes: f64,
    pub profile: Option<String>,
    pub profile_top: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct PatchCostResult {
    pub environment: Environment,
    pub objects: usize,
    pub concurrency: usize,
    /// One object as `kubectl get -o json` shows it, and its managedFields alone, in bytes.
    pub object_bytes: Vec<(usize, usize, usize)>,
    pub phases: Vec<Phase>,
}

/// The pending key of object `i` at step `k`: as long as recur's `rt-<uid>-<nominal>`.
fn key(i: usize, k: u64) -> String {
    format!(
        "rt-{i:08}-0000-4000-8000-{k:012}-{}",
        at(k).to_rfc3339_opts(SecondsFormat::Secs, true)
    )
}

/// The nominal instant of step `k`: a daily task.
fn at(k: u64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 9, 0, 0)
        .single()
        .unwrap_or_default()
        + chrono::Duration::days(k as i64)
}

fn pending(i: usize, k: u64) -> Value {
    let t = at(k).to_rfc3339_opts(SecondsFormat::Secs, true);
    json!({"nominal": t, "due": t, "idempotencyKey": key(i, k), "attempts": 0})
}

fn record(i: usize, k: u64) -> Value {
    let t = at(k).to_rfc3339_opts(SecondsFormat::Secs, true);
    let done =
        (at(k) + chrono::Duration::milliseconds(840)).to_rfc3339_opts(SecondsFormat::Millis, true);
    json!({
        "nominal": t, "due": t, "idempotencyKey": key(i, k), "outcome": "Delivered",
        "finishedAt": done, "attempts": 1,
        "backendId": format!("task-{i}-{k}"),
        "traceId": format!("{:016x}{:016x}", i as u64 * 7919 + 1, k + 104_729),
    })
}

/// The whole status recur writes once step `k`'s occurrence is pending: conditions, the next
/// instants, the last occurrence and [`HISTORY`] records.
fn status(i: usize, k: u64) -> Value {
    status_with(i, k, HISTORY)
}

/// [`status`] with `records` history records (at most `k`); with none and `k` 0, the status of
/// a task that has delivered nothing yet.
pub fn status_with(i: usize, k: u64, records: usize) -> Value {
    let since = "2029-12-31T08:00:00Z";
    let history: Vec<Value> = (k.saturating_sub(records as u64)..k)
        .rev()
        .map(|j| record(i, j))
        .collect();
    json!({
        "observedGeneration": 1,
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Scheduled", "observedGeneration": 1,
             "lastTransitionTime": since,
             "message": format!("next occurrence at {}", at(k).to_rfc3339_opts(SecondsFormat::Secs, true))},
            {"type": "Suspended", "status": "False", "reason": "Active", "observedGeneration": 1,
             "lastTransitionTime": since, "message": "deliveries are on"},
        ],
        "schedule": "cron \"0 9 * * *\" in UTC",
        "nextOccurrence": pending(i, k),
        "upcoming": (k..k + 3).map(|j| at(j).to_rfc3339_opts(SecondsFormat::Secs, true)).collect::<Vec<_>>(),
        "lastOccurrence": if k > 0 { record(i, k - 1) } else { Value::Null },
        "history": history,
        "delivered": k, "failed": 0, "skipped": 0, "consecutiveFailures": 0, "completed": 0,
    })
}

fn object_name(managers: usize, i: usize) -> String {
    if managers == 0 {
        task_name(i)
    } else {
        format!("fat{managers}-{i:05}")
    }
}

/// The request of one write of `form` moving object `i` from step `k` to `k + 1`.
fn request(form: Form, name: &str, i: usize, k: u64, rv: &str) -> Res<http::Request<Vec<u8>>> {
    let req = Request::new(format!(
        "/apis/recur.dev/v1alpha1/namespaces/{NS}/recurringtasks"
    ));
    let pp = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..PatchParams::default()
    };
    let test =
        json!({"op": "test", "path": "/status/nextOccurrence/idempotencyKey", "value": key(i, k)});
    let built = match form {
        Form::JsonTest => {
            let ops = json!([test, {"op": "add", "path": "/status", "value": status(i, k + 1)}]);
            req.patch_subresource(
                "status",
                name,
                &pp,
                &Patch::Json::<()>(serde_json::from_value(ops)?),
            )
        }
        Form::JsonTestDelta => {
            let next = status(i, k + 1);
            let ops = json!([test,
                {"op": "replace", "path": "/status/nextOccurrence", "value": next["nextOccurrence"]},
                {"op": "replace", "path": "/status/lastOccurrence", "value": next["lastOccurrence"]},
                {"op": "remove", "path": format!("/status/history/{}", HISTORY - 1)},
                {"op": "add", "path": "/status/history/0", "value": next["history"][0]},
                {"op": "replace", "path": "/status/upcoming", "value": next["upcoming"]},
                {"op": "replace", "path": "/status/delivered", "value": next["delivered"]},
                {"op": "replace", "path": "/status/conditions/0/message", "value": next["conditions"][0]["message"]},
            ]);
            req.patch_subresource(
                "status",
                name,
                &pp,
                &Patch::Json::<()>(serde_json::from_value(ops)?),
            )
        }
        Form::JsonTestPending => {
            let ops = json!([test, {"op": "replace", "path": "/status/nextOccurrence", "value": pending(i, k + 1)}]);
            req.patch_subresource(
                "status",
                name,
                &pp,
                &Patch::Json::<()>(serde_json::from_value(ops)?),
            )
        }
        Form::MergeFull => req.patch_subresource(
            "status",
            name,
            &pp,
            &Patch::Merge(json!({"status": status(i, k + 1)})),
        ),
        Form::MergeRv => req.patch_subresource(
            "status",
            name,
            &pp,
            &Patch::Merge(json!({"metadata": {"resourceVersion": rv}, "status": status(i, k + 1)})),
        ),
        Form::MergeBare => req.patch_subresource(
            "status",
            name,
            &pp,
            &Patch::Merge(json!({"status": {"nextOccurrence": pending(i, k + 1)}})),
        ),
        Form::Apply | Form::ApplyRv => {
            let mut metadata = json!({"name": name});
            if form == Form::ApplyRv {
                metadata["resourceVersion"] = json!(rv);
            }
            let body = json!({"apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
                "metadata": metadata, "status": status(i, k + 1)});
            req.patch_subresource(
                "status",
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(body),
            )
        }
    };
    built.map_err(|e| msg(format!("building the patch: {e}")))
}

/// Creates `n` objects (the names of `managers`), writes each one's status at step [`START`] and gives
/// each `managers` more field managers (a label each, as other tools would set).
async fn prepare(client: &Client, n: usize, managers: usize) -> Res<Vec<Mutex<ObjState>>> {
    let api = Api::<RecurringTask>::namespaced(client.clone(), NS);
    if managers == 0 {
        create_tasks(client, NS, n, "0 9 * * *").await?;
    } else {
        let tasks = (0..n)
            .map(|i| {
                let mut t = crate::recur_scenario::task_object(i, "0 9 * * *")?;
                t.metadata.name = Some(object_name(managers, i));
                Ok(t)
            })
            .collect::<Res<Vec<_>>>()?;
        crate::cluster::create_all(&api, tasks).await?;
    }
    let started = Instant::now();
    let results: Vec<Res<String>> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = object_name(managers, i);
                for m in 0..managers {
                    let pp = PatchParams {
                        field_manager: Some(format!("bench-tool-{m}")),
                        ..PatchParams::default()
                    };
                    let label = json!({"metadata": {"labels": {format!("tool-{m}.example.com/owner"): format!("team-{m}")}}});
                    api.patch(&name, &pp, &Patch::Merge(&label)).await?;
                }
                let pp = PatchParams {
                    field_manager: Some(MANAGER.into()),
                    ..PatchParams::default()
                };
                let t = api
                    .patch_status(&name, &pp, &Patch::Merge(json!({"status": status(i, START)})))
                    .await?;
                Ok(t.metadata.resource_version.unwrap_or_default())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut states = Vec::with_capacity(n);
    for r in results.into_iter() {
        states.push(r?);
    }
    say(format!(
        "prepared {n} objects with {managers} extra field managers in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    // The resourceVersions came back out of order: read them again in order.
    let list = api.list(&Default::default()).await?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let name = object_name(managers, i);
        let rv = list
            .items
            .iter()
            .find(|t| t.metadata.name.as_deref() == Some(name.as_str()))
            .and_then(|t| t.metadata.resource_version.clone())
            .ok_or_else(|| msg(format!("{name} is not listed")))?;
        out.push(Mutex::new(ObjState { step: START, rv }));
    }
    Ok(out)
}

/// One RecurringTask of `ns` as the apiserver returns it, in bytes, and its managedFields alone.
pub async fn object_bytes(client: &Client, ns: &str, name: &str) -> Res<(usize, usize)> {
    let req = Request::new(format!(
        "/apis/recur.dev/v1alpha1/namespaces/{ns}/recurringtasks"
    ))
    .get(name, &Default::default())
    .map_err(|e| msg(format!("building GET: {e}")))?;
    let text = client.request_text(req).await?;
    let v: Value = serde_json::from_str(&text)?;
    let mf = serde_json::to_vec(&v["metadata"]["managedFields"])?.len();
    Ok((text.len(), mf))
}

/// Opens `k` watches on the namespace, each drained by a task of its own.
async fn open_watches(client: &Client, k: usize) -> Vec<tokio::task::JoinHandle<()>> {
    (0..k)
        .map(|_| {
            let api = Api::<RecurringTask>::namespaced(client.clone(), NS);
            tokio::spawn(async move {
                let mut stream =
                    std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
                while stream.next().await.is_some() {}
            })
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn phase(
    a: &PatchCostArgs,
    client: &Client,
    objects: &Arc<Vec<Mutex<ObjState>>>,
    form: Form,
    managers: usize,
    watchers: usize,
    round: usize,
    profile: bool,
) -> Res<Phase> {
    let n = objects.len();
    let watches = open_watches(client, watchers).await;
    if watchers > 0 {
        // Let the watches list and settle.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let label = format!("r{round}-{}-m{managers}-w{watchers}", form.name());
    let prof = match (&a.pprof_dir, profile) {
        (Some(dir), true) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| msg(format!("creating {}: {e}", dir.display())))?;
            let path = dir.join(format!("{label}.pb.gz"));
            Some(Profile::start(
                &a.control_plane.kubectl,
                &a.common.kubeconfig,
                a.seconds,
                &path,
            )?)
        }
        _ => None,
    };
    let api0 = proc_stat(a.control_plane.apiserver_pid)?;
    let etcd0 = a.control_plane.etcd_pid.map(proc_stat).transpose()?;
    let me0 = proc_stat(std::process::id())?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(a.seconds);
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let client = client.clone();
            let objects = objects.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut out: Vec<(u128, usize, usize, u8)> = vec![];
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed) % n;
                    let mut st = objects[i].lock().await;
                    let name = object_name(managers, i);
                    let req = match request(form, &name, i, st.step, &st.rv) {
                        Ok(r) => r,
                        Err(_) => {
                            out.push((0, 0, 0, 2));
                            continue;
                        }
                    };
                    let sent = req.body().len();
                    let t0 = Instant::now();
                    let res = client.request_text(req).await;
                    let us = t0.elapsed().as_micros();
                    match res {
                        Ok(text) => {
                            let rv = serde_json::from_str::<Value>(&text)
                                .ok()
                                .and_then(|v| {
                                    v["metadata"]["resourceVersion"].as_str().map(str::to_owned)
                                })
                                .unwrap_or_default();
                            st.step += 1;
                            st.rv = rv;
                            out.push((us, sent, text.len(), 0));
                        }
                        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 => {
                            out.push((us, sent, 0, 1));
                        }
                        Err(_) => out.push((us, sent, 0, 2)),
                    }
                }
                out
            })
        })
        .collect();
    let mut all = vec![];
    for w in workers {
        all.extend(
            w.await
                .map_err(|e| msg(format!("a writer panicked: {e}")))?,
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    let api1 = proc_stat(a.control_plane.apiserver_pid)?;
    let etcd1 = a.control_plane.etcd_pid.map(proc_stat).transpose()?;
    let me1 = proc_stat(std::process::id())?;
    for w in watches {
        w.abort();
    }
    let ok: Vec<&(u128, usize, usize, u8)> = all.iter().filter(|r| r.3 == 0).collect();
    let writes = ok.len();
    let per = |cpu: f64| {
        if writes == 0 {
            0.0
        } else {
            cpu * 1000.0 / writes as f64
        }
    };
    let mut lat: Vec<u128> = ok.iter().map(|r| r.0).collect();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let idx = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[idx] as f64 / 1000.0
    };
    let mean = |f: fn(&&(u128, usize, usize, u8)) -> usize| -> f64 {
        if ok.is_empty() {
            0.0
        } else {
            ok.iter().map(f).sum::<usize>() as f64 / ok.len() as f64
        }
    };
    let (profile, profile_top) = match prof {
        Some(p) => {
            let path = a
                .pprof_dir
                .clone()
                .unwrap_or_default()
                .join(format!("{label}.pb.gz"));
            let top = p.finish(25).await?;
            (Some(path.display().to_string()), Some(top))
        }
        None => (None, None),
    };
    let result = Phase {
        round,
        form: form.name().to_owned(),
        description: form.describe().to_owned(),
        managers,
        watchers,
        seconds: elapsed,
        writes,
        conflicts: all.iter().filter(|r| r.3 == 1).count(),
        errors: all.iter().filter(|r| r.3 == 2).count(),
        writes_per_s: writes as f64 / elapsed,
        apiserver_cpu_ms_per_write: per(api1.cpu_s - api0.cpu_s),
        etcd_cpu_ms_per_write: etcd0.zip(etcd1).map(|(b, a)| per(a.cpu_s - b.cpu_s)),
        client_cpu_ms_per_write: per(me1.cpu_s - me0.cpu_s),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        request_bytes: mean(|r| r.1),
        response_bytes: mean(|r| r.2),
        profile,
        profile_top,
    };
    say(format!(
        "{label}: {} writes in {:.1}s ({:.0}/s), apiserver {:.2} CPU ms/write, p50 {:.1} ms, p99 {:.1} ms, {:.0} B sent, {:.0} B back, {} conflicts, {} errors",
        result.writes,
        result.seconds,
        result.writes_per_s,
        result.apiserver_cpu_ms_per_write,
        result.p50_ms,
        result.p99_ms,
        result.request_bytes,
        result.response_bytes,
        result.conflicts,
        result.errors
    ));
    Ok(result)
}

pub async fn run_patchcost(a: PatchCostArgs) -> Res<()> {
    let client = kube_client(&a.common.kubeconfig).await?;
    let n = a.common.tasks;
    if n < 2 * CONCURRENCY {
        return Err(msg(format!("--tasks must be at least {}", 2 * CONCURRENCY)));
    }
    let version = client.apiserver_version().await?;
    let mut result = PatchCostResult {
        environment: environment(version.git_version, "none".into()),
        objects: n,
        concurrency: CONCURRENCY,
        ..PatchCostResult::default()
    };
    fresh_namespace(&client, NS).await?;
    let mut sets = vec![];
    for &m in &a.managers {
        let objects = Arc::new(prepare(&client, n, m).await?);
        let (obj, mf) = object_bytes(&client, NS, &object_name(m, 0)).await?;
        say(format!(
            "{m} extra managers: one object is {obj} B, managedFields {mf} B"
        ));
        result.object_bytes.push((m, obj, mf));
        sets.push((m, objects));
    }
    for round in 1..=a.rounds {
        for (m, objects) in &sets {
            for &form in &a.forms {
                let p = phase(&a, &client, objects, form, *m, 0, round, round == 1).await?;
                result.phases.push(p);
                write_json(&a.common.out_dir, "patchcost.json", &result)?;
            }
        }
        // Watch fan-out, on recur's own objects only.
        if let Some((m, objects)) = sets.first() {
            for &w in a.watchers.iter().filter(|w| **w > 0) {
                for &form in &a.watch_forms {
                    let p = phase(&a, &client, objects, form, *m, w, round, false).await?;
                    result.phases.push(p);
                    write_json(&a.common.out_dir, "patchcost.json", &result)?;
                }
            }
        }
    }
    let md = markdown(&a, &result);
    let path = a.common.out_dir.join("patchcost.md");
    std::fs::write(&path, &md).map_err(|e| msg(format!("writing {}: {e}", path.display())))?;
    print!("{md}");
    delete_namespace(&client, NS).await?;
    Ok(())
}

fn markdown(a: &PatchCostArgs, r: &PatchCostResult) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Cost of a status write to kube-apiserver, by form\n\nMade by `recur-bench patchcost --tasks {} --seconds {} --rounds {}` {}. {} RecurringTasks with a realistic status ({HISTORY} history records, 2 conditions, 3 upcoming instants); each phase writes for {} s at concurrency {}, every write moving an object's pending key on by one. CPU from /proc of kube-apiserver{} and of the benchmark (the client) over the phase, divided by the successful writes.\n",
        r.objects,
        a.seconds,
        a.rounds,
        made_on(&r.environment),
        r.objects,
        a.seconds,
        r.concurrency,
        if a.control_plane.etcd_pid.is_some() {
            ", of etcd"
        } else {
            ""
        }
    );
    for (m, obj, mf) in &r.object_bytes {
        let _ = writeln!(
            md,
            "- objects with {m} extra field managers: {obj} B as returned (managedFields {mf} B)"
        );
    }
    let _ = writeln!(
        md,
        "\n| round | form | extra managers | watchers | writes/s | apiserver CPU ms/write | etcd CPU ms/write | client CPU ms/write | p50 | p99 | bytes sent | bytes back | conflicts | errors |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for p in &r.phases {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.0} | {:.2} | {} | {:.2} | {:.1} ms | {:.1} ms | {:.0} | {:.0} | {} | {} |",
            p.round,
            p.form,
            p.managers,
            p.watchers,
            p.writes_per_s,
            p.apiserver_cpu_ms_per_write,
            p.etcd_cpu_ms_per_write
                .map_or("".to_owned(), |v| format!("{v:.2}")),
            p.client_cpu_ms_per_write,
            p.p50_ms,
            p.p99_ms,
            p.request_bytes,
            p.response_bytes,
            p.conflicts,
            p.errors
        );
    }
    let _ = writeln!(md, "\nForms:\n");
    for f in &a.forms {
        let _ = writeln!(md, "- `{}`: {}", f.name(), f.describe());
    }
    for p in r.phases.iter().filter(|p| p.profile_top.is_some()) {
        let _ = writeln!(
            md,
            "\n### pprof top: {} ({} extra managers)\n\n```\n{}\n```",
            p.form,
            p.managers,
            p.profile_top.as_deref().unwrap_or_default()
        );
    }
    md
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_status_carries_ten_records_and_the_key_moves_on() {
        let s = status(3, 12);
        assert_eq!(s["history"].as_array().unwrap().len(), HISTORY);
        assert_eq!(s["nextOccurrence"]["idempotencyKey"], json!(key(3, 12)));
        assert_eq!(s["history"][0]["idempotencyKey"], json!(key(3, 11)));
        assert_ne!(key(3, 12), key(3, 13));
        let r = request(Form::JsonTest, "x", 3, 12, "7").unwrap();
        let body: Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(body[0]["op"], json!("test"));
        assert_eq!(body[0]["value"], json!(key(3, 12)));
        assert_eq!(
            body[1]["value"]["nextOccurrence"]["idempotencyKey"],
            json!(key(3, 13))
        );
        // The delta patch turns step 12's status into step 13's.
        let r = request(Form::JsonTestDelta, "x", 3, 12, "7").unwrap();
        let ops: json_patch::Patch = serde_json::from_slice(r.body()).unwrap();
        let mut doc = json!({"status": status(3, 12)});
        json_patch::patch(&mut doc, &ops).unwrap();
        assert_eq!(doc["status"], status(3, 13));
        let r = request(Form::ApplyRv, "x", 3, 12, "7").unwrap();
        let body: Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(body["metadata"]["resourceVersion"], json!("7"));
    }
}
