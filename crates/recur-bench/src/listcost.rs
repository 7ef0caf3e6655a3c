//! What a list of N RecurringTasks costs kube-apiserver, form by form, in one run on one machine:
//! the list an operator makes when it starts (and after every failover) is what bounds its time
//! to ready at 100,000 tasks. Each set of N tasks carries a status of one shape (a task that has
//! delivered nothing yet, or one with its history full); each form of list reads the whole set
//! in rounds, while kube-apiserver's and etcd's CPU are read from /proc and, for one more
//! pass, kube-apiserver is profiled through /debug/pprof. The bare client only counts: it skims
//! each page for its continue token and each event for its type, so its own CPU stays small;
//! the forms through kube-rs's watcher decode every task, as recur does.
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use futures::{AsyncBufReadExt, StreamExt};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use recur::api::RecurringTask;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::args::ListCostArgs;
use crate::cluster::{CONCURRENCY, delete_namespace, fresh_namespace, kube_client};
use crate::error::{Res, msg};
use crate::patchcost::{object_bytes, status_with};
use crate::pprof::Profile;
use crate::procfs::{environment, made_on, proc_stat};
use crate::recur_scenario::{create_tasks, task_name};
use crate::results::{Environment, write_json};
use crate::say;

/// Objects per page of the paged forms: kube-rs's watcher default, and recur's.
const PAGE: usize = 500;
/// The media type of a list of metadata only (what a metadata watcher asks for).
const METADATA_LIST: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
/// The longest wait for kube-apiserver to go quiet around a reading.
const QUIET_AT_MOST: Duration = Duration::from_secs(15);
/// The annotation on the bookmark that ends a streaming list's initial events.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// How the tasks are listed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Form {
    /// Pages of 500, no resourceVersion: the consistent read kube-rs's watcher makes by default.
    Paged,
    /// One response at `resourceVersion=0` (`NotOlderThan`): whatever the watch cache has.
    /// (With a limit kube-rs leaves the resourceVersion out, which would make it `paged`.)
    Any,
    /// The whole list in one response, no resourceVersion.
    Whole,
    /// A streaming list: a watch with `sendInitialEvents=true`, read until the bookmark that ends
    /// the initial events (recur's `--initial-list=auto` where the apiserver serves it).
    Stream,
    /// Pages of 500 of metadata only (`PartialObjectMetadataList`): what the objects' bodies
    /// leave out.
    Metadata,
    /// kube-rs's watcher with streaming lists, every task decoded into a `RecurringTask`, until
    /// the initial list is done: recur's list without its controller.
    KubeStream,
    /// kube-rs's watcher with pages of 500, every task decoded, until the list is done.
    KubePaged,
}

impl Form {
    fn name(self) -> &'static str {
        match self {
            Form::Paged => "paged",
            Form::Any => "any",
            Form::Whole => "whole",
            Form::Stream => "stream",
            Form::Metadata => "metadata",
            Form::KubeStream => "kube-stream",
            Form::KubePaged => "kube-paged",
        }
    }

    /// Whether the list's requests and bytes are counted (not through kube-rs's watcher).
    fn counted(self) -> bool {
        !matches!(self, Form::KubeStream | Form::KubePaged)
    }

    fn describe(self) -> &'static str {
        match self {
            Form::Paged => {
                "pages of 500, no resourceVersion (a consistent read; kube-rs's default)"
            }
            Form::Any => "one response at `resourceVersion=0`, `resourceVersionMatch=NotOlderThan`",
            Form::Whole => "one response, no resourceVersion",
            Form::Stream => {
                "a watch with `sendInitialEvents=true` until the bookmark ending the initial events"
            }
            Form::Metadata => "pages of 500 of `PartialObjectMetadataList` (metadata only)",
            Form::KubeStream => {
                "kube-rs's watcher, streaming list, each task decoded into a `RecurringTask` (recur's list)"
            }
            Form::KubePaged => "kube-rs's watcher, pages of 500, each task decoded",
        }
    }
}

/// One set of tasks: its namespace and the shape of every status in it.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Set {
    pub namespace: String,
    /// History records in every status (0: a task that has delivered nothing yet).
    pub history: usize,
    /// One task as `kubectl get -o json` returns it, and its managedFields alone, in bytes.
    pub object_bytes: usize,
    pub managed_fields_bytes: usize,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Reading {
    pub round: usize,
    pub form: String,
    pub history: usize,
    pub seconds: f64,
    pub requests: usize,
    pub objects: usize,
    pub bytes: usize,
    pub apiserver_cpu_s: f64,
    pub etcd_cpu_s: Option<f64>,
    pub client_cpu_s: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Profiled {
    pub form: String,
    pub history: usize,
    pub path: String,
    pub top: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct ListCostResult {
    pub environment: Environment,
    pub objects: usize,
    pub sets: Vec<Set>,
    pub readings: Vec<Reading>,
    pub profiles: Vec<Profiled>,
}

/// What one list brought back.
struct Listed {
    requests: usize,
    objects: usize,
    bytes: usize,
}

/// A page as the client skims it: the continue token and how many items, nothing decoded.
#[derive(Deserialize)]
struct Page {
    metadata: PageMeta,
    items: Vec<IgnoredAny>,
}

#[derive(Deserialize)]
struct PageMeta {
    #[serde(rename = "continue", default)]
    continue_: Option<String>,
}

/// A watch event as the client skims it: its type, and a bookmark's annotations.
#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: EventType,
    object: EventObject,
}

#[derive(Deserialize)]
#[serde(rename_all = "UPPERCASE")]
enum EventType {
    Added,
    Modified,
    Deleted,
    Bookmark,
    Error,
}

#[derive(Deserialize)]
struct EventObject {
    #[serde(default)]
    metadata: EventMeta,
}

#[derive(Deserialize, Default)]
struct EventMeta {
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

fn collection(ns: &str) -> String {
    format!("/apis/recur.dev/v1alpha1/namespaces/{ns}/recurringtasks")
}

fn get(uri: String) -> Res<http::Request<Vec<u8>>> {
    http::Request::get(uri)
        .body(vec![])
        .map_err(|e| msg(format!("building a request: {e}")))
}

/// Lists every task of `ns` in `form`.
async fn list(client: &Client, ns: &str, form: Form) -> Res<Listed> {
    let pages_of = ListParams::default().limit(PAGE as u32);
    match form {
        Form::Stream => stream(client, ns).await,
        Form::Whole => pages(client, ns, ListParams::default(), false).await,
        Form::Paged => pages(client, ns, pages_of, false).await,
        Form::Any => pages(client, ns, ListParams::default().match_any(), false).await,
        Form::Metadata => pages(client, ns, pages_of, true).await,
        Form::KubeStream => typed(client, ns, watcher::Config::default().streaming_lists()).await,
        Form::KubePaged => {
            typed(
                client,
                ns,
                watcher::Config::default().page_size(PAGE as u32),
            )
            .await
        }
    }
}

/// Lists through kube-rs's watcher, decoding every task, until its initial list is done.
async fn typed(client: &Client, ns: &str, config: watcher::Config) -> Res<Listed> {
    let api = Api::<RecurringTask>::namespaced(client.clone(), ns);
    let mut events = std::pin::pin!(watcher(api, config));
    let mut objects = 0;
    while let Some(event) = events.next().await {
        match event.map_err(|e| msg(format!("the watcher failed: {e}")))? {
            watcher::Event::InitApply(_) => objects += 1,
            watcher::Event::InitDone => {
                // Requests and bytes are not counted on this path.
                return Ok(Listed {
                    requests: 0,
                    objects,
                    bytes: 0,
                });
            }
            _ => {}
        }
    }
    Err(msg("the watcher ended before its initial list was done"))
}

async fn pages(client: &Client, ns: &str, params: ListParams, metadata_only: bool) -> Res<Listed> {
    let tasks = kube::core::Request::new(collection(ns));
    let mut out = Listed {
        requests: 0,
        objects: 0,
        bytes: 0,
    };
    let mut params = params;
    loop {
        let mut req = tasks
            .list(&params)
            .map_err(|e| msg(format!("building a list request: {e}")))?;
        if metadata_only {
            req.headers_mut().insert(
                http::header::ACCEPT,
                http::HeaderValue::from_static(METADATA_LIST),
            );
        }
        let text = client.request_text(req).await?;
        let page: Page = serde_json::from_str(&text)?;
        out.requests += 1;
        out.objects += page.items.len();
        out.bytes += text.len();
        match page.metadata.continue_.filter(|t| !t.is_empty()) {
            Some(t) => params = params.continue_token(&t),
            None => return Ok(out),
        }
    }
}

async fn stream(client: &Client, ns: &str) -> Res<Listed> {
    let uri = format!(
        "{}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=600",
        collection(ns)
    );
    let mut body = client.request_stream(get(uri)?).await?;
    let mut out = Listed {
        requests: 1,
        objects: 0,
        bytes: 0,
    };
    let mut line = String::new();
    loop {
        line.clear();
        let n = body
            .read_line(&mut line)
            .await
            .map_err(|e| msg(format!("reading the watch: {e}")))?;
        if n == 0 {
            return Err(msg(
                "the watch ended before the bookmark that ends the initial events",
            ));
        }
        out.bytes += n;
        let ev: Event = serde_json::from_str(&line)?;
        match ev.kind {
            EventType::Added => out.objects += 1,
            EventType::Bookmark
                if ev
                    .object
                    .metadata
                    .annotations
                    .get(INITIAL_EVENTS_END)
                    .is_some_and(|v| v == "true") =>
            {
                return Ok(out);
            }
            EventType::Error => {
                return Err(msg(format!(
                    "the watch answered an error: {}",
                    line.chars().take(300).collect::<String>()
                )));
            }
            EventType::Bookmark | EventType::Modified | EventType::Deleted => {}
        }
    }
}

/// Creates the `n` tasks of a set and writes each one's status of `history` records.
async fn prepare(client: &Client, ns: &str, n: usize, history: usize) -> Res<Set> {
    fresh_namespace(client, ns).await?;
    create_tasks(client, ns, n, "0 9 * * *").await?;
    let api = Api::<RecurringTask>::namespaced(client.clone(), ns);
    let started = Instant::now();
    // Step `history`: that many records, and the pending key one on.
    let step = history as u64;
    let results: Vec<Res<()>> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let pp = PatchParams {
                    field_manager: Some("recur".into()),
                    ..PatchParams::default()
                };
                let status = status_with(i, step, history);
                api.patch_status(
                    &task_name(i),
                    &pp,
                    &Patch::Merge(json!({ "status": status })),
                )
                .await?;
                Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect::<Res<Vec<()>>>()?;
    say(format!(
        "{ns}: {n} statuses of {history} history records written in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    let (object_bytes, managed_fields_bytes) = object_bytes(client, ns, &task_name(0)).await?;
    Ok(Set {
        namespace: ns.to_owned(),
        history,
        object_bytes,
        managed_fields_bytes,
    })
}

async fn reading(
    a: &ListCostArgs,
    client: &Client,
    set: &Set,
    form: Form,
    round: usize,
) -> Res<Reading> {
    let api0 = quiet(a.control_plane.apiserver_pid).await?;
    let etcd0 = a.control_plane.etcd_pid.map(proc_stat).transpose()?;
    let me0 = proc_stat(std::process::id())?;
    let started = Instant::now();
    let listed = list(client, &set.namespace, form).await?;
    let seconds = started.elapsed().as_secs_f64();
    // The list's garbage is collected after it: its CPU counts until kube-apiserver is quiet
    // again, not only while the list ran (else it fell on the next form's reading).
    let api1 = quiet(a.control_plane.apiserver_pid).await?;
    let etcd1 = a.control_plane.etcd_pid.map(proc_stat).transpose()?;
    let me1 = proc_stat(std::process::id())?;
    if listed.objects != a.common.tasks {
        return Err(msg(format!(
            "{} listed {} of the {} tasks of {}",
            form.name(),
            listed.objects,
            a.common.tasks,
            set.namespace
        )));
    }
    let r = Reading {
        round,
        form: form.name().to_owned(),
        history: set.history,
        seconds,
        requests: listed.requests,
        objects: listed.objects,
        bytes: listed.bytes,
        apiserver_cpu_s: api1.cpu_s - api0.cpu_s,
        etcd_cpu_s: etcd0.zip(etcd1).map(|(b, a)| a.cpu_s - b.cpu_s),
        client_cpu_s: me1.cpu_s - me0.cpu_s,
    };
    say(format!(
        "round {round}, {} over {} history records: {:.2}s, {} requests, {:.1} MB, apiserver {:.2} CPU s, client {:.2}",
        r.form,
        r.history,
        r.seconds,
        r.requests,
        r.bytes as f64 / 1e6,
        r.apiserver_cpu_s,
        r.client_cpu_s
    ));
    Ok(r)
}

/// The apiserver's CPU once it is quiet: once a quarter of a second has taken less than a
/// tenth of a core, or after [`QUIET_AT_MOST`] whatever it does.
async fn quiet(pid: u32) -> Res<crate::procfs::ProcStat> {
    let step = Duration::from_millis(250);
    let until = Instant::now() + QUIET_AT_MOST;
    let mut last = proc_stat(pid)?;
    loop {
        tokio::time::sleep(step).await;
        let now = proc_stat(pid)?;
        if now.cpu_s - last.cpu_s < 0.1 * step.as_secs_f64() {
            return Ok(now);
        }
        if Instant::now() >= until {
            say(format!(
                "kube-apiserver did not go quiet within {}s: this reading carries other work",
                QUIET_AT_MOST.as_secs()
            ));
            return Ok(now);
        }
        last = now;
    }
}

pub async fn run_listcost(a: ListCostArgs) -> Res<()> {
    let client = kube_client(&a.common.kubeconfig).await?;
    let n = a.common.tasks;
    let version = client.apiserver_version().await?;
    let mut result = ListCostResult {
        environment: environment(version.git_version, "none".into()),
        objects: n,
        ..ListCostResult::default()
    };
    for &h in &a.history {
        let set = prepare(&client, &format!("bench-listcost-h{h}"), n, h).await?;
        say(format!(
            "{}: one task is {} B, managedFields {} B",
            set.namespace, set.object_bytes, set.managed_fields_bytes
        ));
        result.sets.push(set);
    }
    // Rounds go over every form in turn, so a slow minute of the machine falls on all of them.
    for round in 1..=a.rounds {
        for set in &result.sets.clone() {
            for &form in &a.forms {
                let r = reading(&a, &client, set, form, round).await?;
                result.readings.push(r);
                write_json(&a.common.out_dir, "listcost.json", &result)?;
            }
        }
    }
    if let Some(dir) = &a.pprof_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| msg(format!("creating {}: {e}", dir.display())))?;
        for set in &result.sets.clone() {
            for &form in &a.forms {
                // Long enough for the slowest round of this list, and a second more.
                let longest = result
                    .readings
                    .iter()
                    .filter(|r| r.form == form.name() && r.history == set.history)
                    .map(|r| r.seconds)
                    .fold(0.0, f64::max);
                let seconds = longest.ceil() as u64 + 1;
                let path = dir.join(format!("list-{}-h{}.pb.gz", form.name(), set.history));
                quiet(a.control_plane.apiserver_pid).await?;
                let prof = Profile::start(
                    &a.control_plane.kubectl,
                    &a.common.kubeconfig,
                    seconds,
                    &path,
                )?;
                // Let the profile's request reach the apiserver before the list starts.
                tokio::time::sleep(Duration::from_millis(200)).await;
                list(&client, &set.namespace, form).await?;
                let top = prof.finish(25).await?;
                result.profiles.push(Profiled {
                    form: form.name().to_owned(),
                    history: set.history,
                    path: path.display().to_string(),
                    top,
                });
                write_json(&a.common.out_dir, "listcost.json", &result)?;
            }
        }
    }
    let md = markdown(&a, &result);
    let path = a.common.out_dir.join("listcost.md");
    std::fs::write(&path, &md).map_err(|e| msg(format!("writing {}: {e}", path.display())))?;
    print!("{md}");
    for set in &result.sets {
        delete_namespace(&client, &set.namespace).await?;
    }
    Ok(())
}

/// The median of the readings of one form over one set.
fn median(r: &ListCostResult, form: &str, history: usize, f: fn(&Reading) -> f64) -> f64 {
    let mut v: Vec<f64> = r
        .readings
        .iter()
        .filter(|x| x.form == form && x.history == history)
        .map(f)
        .collect();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    match (v.len() % 2, v.get(mid)) {
        (_, None) => 0.0,
        (1, Some(m)) => *m,
        (_, Some(m)) => (v[mid - 1] + m) / 2.0,
    }
}

fn markdown(a: &ListCostArgs, r: &ListCostResult) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Cost of listing RecurringTasks to kube-apiserver, by form\n\nMade by `recur-bench listcost --tasks {} --rounds {}` {}. Each set holds {} RecurringTasks in a namespace of its own, every status of one shape; each form lists a whole set, every form in turn, {} rounds. CPU from /proc of kube-apiserver from the list's start until it is quiet again (a quarter of a second under a tenth of a core: the list's garbage is collected after it){} and of the benchmark (the client: it skims each page for its continue token and each event for its type, except through kube-rs's watcher, which decodes every task) over the list; seconds are the list's own.\n",
        r.objects,
        a.rounds,
        made_on(&r.environment),
        r.objects,
        a.rounds,
        if a.control_plane.etcd_pid.is_some() {
            ", of etcd"
        } else {
            ""
        }
    );
    for s in &r.sets {
        let _ = writeln!(
            md,
            "- `{}`: {} history records; one task is {} B as returned, managedFields {} B",
            s.namespace, s.history, s.object_bytes, s.managed_fields_bytes
        );
    }
    let _ = writeln!(
        md,
        "\nMedians over the rounds:\n\n| form | history | seconds | requests | MB | apiserver CPU s | apiserver CPU µs per task | etcd CPU s | client CPU s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for s in &r.sets {
        for f in &a.forms {
            let name = f.name();
            let h = s.history;
            let api = median(r, name, h, |x| x.apiserver_cpu_s);
            let _ = writeln!(
                md,
                "| {name} | {h} | {:.2} | {} | {} | {api:.2} | {:.0} | {} | {:.2} |",
                median(r, name, h, |x| x.seconds),
                if f.counted() {
                    format!("{:.0}", median(r, name, h, |x| x.requests as f64))
                } else {
                    "–".to_owned()
                },
                if f.counted() {
                    format!("{:.1}", median(r, name, h, |x| x.bytes as f64) / 1e6)
                } else {
                    "–".to_owned()
                },
                api * 1e6 / r.objects.max(1) as f64,
                if a.control_plane.etcd_pid.is_some() {
                    format!("{:.2}", median(r, name, h, |x| x.etcd_cpu_s.unwrap_or(0.0)))
                } else {
                    String::new()
                },
                median(r, name, h, |x| x.client_cpu_s),
            );
        }
    }
    let _ = writeln!(
        md,
        "\nEvery reading:\n\n| round | form | history | seconds | apiserver CPU s | etcd CPU s | client CPU s |\n|---:|---|---:|---:|---:|---:|---:|"
    );
    for x in &r.readings {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.2} | {:.2} | {} | {:.2} |",
            x.round,
            x.form,
            x.history,
            x.seconds,
            x.apiserver_cpu_s,
            x.etcd_cpu_s.map_or(String::new(), |v| format!("{v:.2}")),
            x.client_cpu_s
        );
    }
    let _ = writeln!(md, "\nForms:\n");
    for f in &a.forms {
        let _ = writeln!(md, "- `{}`: {}", f.name(), f.describe());
    }
    for p in &r.profiles {
        let _ = writeln!(
            md,
            "\n### pprof top: {} over {} history records\n\n```\n{}\n```",
            p.form, p.history, p.top
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(seconds: &[f64]) -> ListCostResult {
        ListCostResult {
            readings: seconds
                .iter()
                .map(|&s| Reading {
                    form: "paged".into(),
                    seconds: s,
                    ..Reading::default()
                })
                .collect(),
            ..ListCostResult::default()
        }
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(
            median(&with(&[3.0, 1.0, 2.0]), "paged", 0, |x| x.seconds),
            2.0
        );
        assert_eq!(
            median(&with(&[4.0, 1.0, 3.0, 2.0]), "paged", 0, |x| x.seconds),
            2.5
        );
        assert_eq!(median(&with(&[]), "paged", 0, |x| x.seconds), 0.0);
        assert_eq!(median(&with(&[1.0]), "stream", 0, |x| x.seconds), 0.0);
    }
}
