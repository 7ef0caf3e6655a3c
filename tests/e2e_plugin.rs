//! `kubectl recur` end to end: the real kube-apiserver, the built kubectl, and the plugin found
//! by kubectl on `PATH` (the cargo target directory's `kubectl-recur`), invoked as `kubectl recur
//! ...` exactly as a user would.
//!
//! No operator runs here, on purpose: the plugin talks to the apiserver only (issue 14), so every
//! command must work while the operator is down. What the operator would write (`status`) is
//! written by the test through the status subresource where a command reads it (`history`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use kube::api::{Api, Patch, PatchParams, PostParams};
use recur::api::{Backfill, RUN_NOW_ANNOTATION, RecurringTask};
use serde_json::{Value, json};
use support::{TestNamespace, bin_dir, client, kubeconfig};

/// Built by cargo for this test, beside `recur` in the target directory.
const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-recur");

fn plugin_dir() -> &'static Path {
    Path::new(PLUGIN).parent().unwrap()
}

/// What one command did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "expected success: {self:#?}");
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:#?}"))
    }
}

/// The built kubectl against the test cluster, with `path` as its `PATH`.
fn kubectl_with_path(path: OsString, args: &[&str]) -> Run {
    let out = Command::new(bin_dir().join("kubectl"))
        .env("KUBECONFIG", kubeconfig())
        .env("PATH", path)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running kubectl: {e}"));
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `PATH` with the plugin's directory first (then the cluster tools and the inherited `PATH`).
fn path_with_plugin() -> OsString {
    let inherited = std::env::var_os("PATH").unwrap_or_default();
    let dirs = [plugin_dir().to_path_buf(), bin_dir().to_path_buf()]
        .into_iter()
        .chain(std::env::split_paths(&inherited));
    std::env::join_paths(dirs).unwrap()
}

/// `kubectl recur <args>`.
fn recur(args: &[&str]) -> Run {
    let mut all = vec!["recur"];
    all.extend_from_slice(args);
    kubectl_with_path(path_with_plugin(), &all)
}

/// A test's namespace and its tasks, CRDs installed.
struct Setup {
    ns: TestNamespace,
    tasks: Api<RecurringTask>,
    backfills: Api<Backfill>,
}

impl Setup {
    async fn new(prefix: &str) -> Setup {
        tokio::task::spawn_blocking(support::stack::install_crds)
            .await
            .unwrap();
        let client = client().await;
        let ns = TestNamespace::new(&client, prefix).await;
        Setup {
            tasks: Api::namespaced(client.clone(), ns.name()),
            backfills: Api::namespaced(client, ns.name()),
            ns,
        }
    }

    fn ns(&self) -> &str {
        self.ns.name()
    }

    /// Creates task `name` with `schedule` (and a default user id and title).
    async fn task(&self, name: &str, schedule: Value) -> RecurringTask {
        let task: RecurringTask = serde_json::from_value(json!({
            "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
            "metadata": {"name": name},
            "spec": {"userId": "user-42", "title": format!("task {name}"), "schedule": schedule},
        }))
        .unwrap();
        self.tasks
            .create(&PostParams::default(), &task)
            .await
            .unwrap()
    }

    /// `kubectl recur <command> <name> -n <ns> <rest>`.
    fn recur(&self, command: &str, name: &str, rest: &[&str]) -> Run {
        let mut args = vec![command, name, "-n", self.ns()];
        args.extend_from_slice(rest);
        recur(&args)
    }
}

fn uid(task: &RecurringTask) -> String {
    task.metadata.uid.clone().unwrap()
}

/// A table row's cells (three or more spaces apart).
fn columns(line: &str) -> Vec<&str> {
    line.split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

// ------------------------------------------------------------------------------------------------

#[test]
fn kubectl_finds_the_plugin_on_path_and_only_there() {
    let list = kubectl_with_path(path_with_plugin(), &["plugin", "list"]);
    let ours = plugin_dir().join("kubectl-recur");
    assert!(
        list.stdout.lines().any(|l| Path::new(l.trim()) == ours),
        "kubectl plugin list does not show {}: {list:#?}",
        ours.display()
    );
    let version = recur(&["--version"]);
    version.ok();
    assert_eq!(
        version.stdout.trim(),
        format!("kubectl-recur {}", env!("CARGO_PKG_VERSION"))
    );
    let help = recur(&["--help"]);
    help.ok();
    assert!(help.stdout.contains("Usage: kubectl recur"), "{help:#?}");

    // Without the plugin's directory on PATH kubectl has no `recur` command: what ran above was
    // found through PATH, as an installed plugin is.
    let without = kubectl_with_path(bin_dir().as_os_str().to_owned(), &["recur", "--version"]);
    assert_ne!(without.code, Some(0), "{without:#?}");
    assert!(
        without.stderr.contains("unknown command \"recur\""),
        "{without:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_shows_due_instants_in_the_zone_and_in_utc() {
    let s = Setup::new("e2e-plugin-next").await;
    // 02:30 in Berlin, across the spring-forward night of 2026-03-29 (02:30 does not exist).
    let task = s
        .task(
            "nightly",
            json!({"cron": "30 2 * * *", "timeZone": "Europe/Berlin",
                "startAt": "2026-01-01T00:00:00Z"}),
        )
        .await;
    let after = ["--after", "2026-03-28T00:00:00Z", "--count", "3"];

    let text = s.recur("next", "nightly", &after);
    text.ok();
    assert_eq!(
        text.stdout,
        format!(
            "nightly in {}: cron 30 2 * * * (Europe/Berlin)\n\
             DUE (Europe/Berlin)              DUE (UTC)\n\
             Sat 2026-03-28 02:30:00 +01:00   2026-03-28T01:30:00Z\n\
             Sun 2026-03-29 03:30:00 +02:00   2026-03-29T01:30:00Z\n\
             Mon 2026-03-30 02:30:00 +02:00   2026-03-30T00:30:00Z\n",
            s.ns()
        )
    );
    // No operator has written status: said on stderr, never mixed into the output.
    assert!(
        text.stderr.contains("the task has no status yet"),
        "{text:#?}"
    );

    let mut json_args = after.to_vec();
    json_args.extend(["-o", "json"]);
    let run = s.recur("next", "rt/nightly", &json_args);
    let v = run.ok().json();
    assert_eq!(
        keys(&v),
        BTreeSet::from([
            "namespace",
            "name",
            "uid",
            "schedule",
            "timeZone",
            "suspended",
            "after",
            "occurrences",
            "pending"
        ])
    );
    assert_eq!(v["namespace"], json!(s.ns()));
    assert_eq!(v["name"], json!("nightly"));
    assert_eq!(v["uid"], json!(uid(&task)));
    assert_eq!(v["timeZone"], json!("Europe/Berlin"));
    assert_eq!(v["suspended"], json!(false));
    assert_eq!(v["pending"], json!(null));
    let occurrences = v["occurrences"].as_array().unwrap();
    assert_eq!(occurrences.len(), 3);
    assert_eq!(
        keys(&occurrences[1]),
        BTreeSet::from(["nominal", "due", "dueLocal", "idempotencyKey"])
    );
    assert_eq!(
        occurrences[1],
        json!({"nominal": "2026-03-29T01:30:00Z", "due": "2026-03-29T01:30:00Z",
            "dueLocal": "2026-03-29T03:30:00+02:00",
            "idempotencyKey": format!("rt-{}-20260329T013000Z", uid(&task))})
    );
    assert_eq!(
        occurrences[0]["dueLocal"],
        json!("2026-03-28T02:30:00+01:00")
    );
    s.ns.cleanup().await;
}

/// `[a-z0-9-]{1,63}`, what the operator accepts as a run-now token.
fn valid_token(t: &str) -> bool {
    (1..=63).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_sets_the_run_now_annotation_with_a_fresh_token_each_time() {
    let s = Setup::new("e2e-plugin-run").await;
    let task = s.task("report", json!({"every": "1h"})).await;
    let annotation = |t: &RecurringTask| {
        t.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RUN_NOW_ANNOTATION))
            .cloned()
    };
    assert_eq!(annotation(&task), None);

    let first = s.recur("run", "report", &["-o", "json"]);
    let v = first.ok().json();
    let token = v["token"].as_str().unwrap().to_owned();
    assert!(valid_token(&token), "{token:?}");
    assert_eq!(v["requested"], json!(true));
    assert_eq!(
        v["idempotencyKey"],
        json!(format!("rt-{}-run-{token}", uid(&task)))
    );
    assert_eq!(
        annotation(&s.tasks.get("report").await.unwrap()).as_deref(),
        Some(token.as_str())
    );

    let second = s.recur("run", "report", &[]);
    second.ok();
    assert!(
        second.stdout.starts_with(&format!(
            "recurringtask report in {}: run requested",
            s.ns()
        )),
        "{second:#?}"
    );
    let now = annotation(&s.tasks.get("report").await.unwrap()).unwrap();
    assert!(valid_token(&now), "{now:?}");
    assert_ne!(now, token, "two runs have two tokens");
    assert!(
        second.stdout.contains(&format!("token   {now}\n")),
        "{second:#?}"
    );
    // No operator picked the first token up, and the user is told it is being replaced.
    assert!(
        second
            .stderr
            .contains(&format!("replacing run-now token {token:?}")),
        "{second:#?}"
    );

    // A token of the user's own, and one the operator would not accept.
    s.recur("run", "report", &["--token", "deploy-42"]).ok();
    assert_eq!(
        annotation(&s.tasks.get("report").await.unwrap()).as_deref(),
        Some("deploy-42")
    );
    let bad = s.recur("run", "report", &["--token", "Deploy_42"]);
    assert_eq!(bad.code, Some(2), "{bad:#?}");
    assert!(
        bad.stderr.contains("--token") && bad.stderr.contains("is not a token"),
        "{bad:#?}"
    );
    s.ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_with_a_reason_and_resume_change_the_spec() {
    let s = Setup::new("e2e-plugin-suspend").await;
    s.task("sync", json!({"every": "1h"})).await;

    let reason = "backend migration, until 14:00 UTC (alice)";
    let out = s.recur("suspend", "sync", &["--reason", reason]);
    out.ok();
    assert!(
        out.stdout.starts_with(&format!(
            "recurringtask sync in {} suspended: {reason}\n",
            s.ns()
        )),
        "{out:#?}"
    );
    let spec = s.tasks.get("sync").await.unwrap().spec;
    assert!(spec.suspend);
    assert_eq!(spec.suspend_reason.as_deref(), Some(reason));

    // Again: nothing changes, and the user hears that it already was.
    let again = s.recur("suspend", "sync", &["--reason", reason, "-o", "json"]);
    let v = again.ok().json();
    assert_eq!(
        (v["suspend"].clone(), v["wasSuspended"].clone()),
        (json!(true), json!(true))
    );
    assert!(
        again.stderr.contains("the task was already suspended"),
        "{again:#?}"
    );

    let v = s.recur("resume", "sync", &["-o", "json"]).ok().json();
    assert_eq!(
        v,
        json!({"namespace": s.ns(), "name": "sync", "suspend": false, "suspendReason": null,
            "wasSuspended": true})
    );
    let spec = s.tasks.get("sync").await.unwrap().spec;
    assert!(!spec.suspend);
    assert_eq!(spec.suspend_reason, None, "resuming removes the reason");
    s.ns.cleanup().await;
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_creates_a_backfill_of_the_task_over_the_range() {
    let s = Setup::new("e2e-plugin-backfill").await;
    let task = s
        .task(
            "hourly",
            json!({"cron": "0 * * * *", "startAt": "2026-01-01T00:00:00Z"}),
        )
        .await;
    // Six whole hours, a day ago: in the past whenever the test runs.
    let from = (Utc::now() - TimeDelta::days(1))
        .duration_trunc(TimeDelta::hours(1))
        .unwrap();
    let to = from + TimeDelta::hours(6);
    let (from_s, to_s) = (rfc3339(from), rfc3339(to));

    let run = s.recur(
        "backfill",
        "hourly",
        &["--from", &from_s, "--to", &to_s, "-o", "json"],
    );
    let v = run.ok().json();
    assert_eq!(v["task"], json!("hourly"));
    assert_eq!(v["occurrences"], json!(6), "[from, to) holds six hours");
    assert_eq!(
        (v["from"].clone(), v["to"].clone()),
        (json!(from_s), json!(to_s))
    );
    let name = v["name"].as_str().unwrap();
    assert!(name.starts_with("hourly-"), "a generated name: {name}");

    let created = s.backfills.get(name).await.unwrap();
    assert_eq!(created.spec.task_ref.name, "hourly");
    assert_eq!((created.spec.from, created.spec.to), (from, to));
    let owners = created.metadata.owner_references.unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(
        (
            owners[0].kind.as_str(),
            owners[0].name.as_str(),
            &owners[0].uid
        ),
        ("RecurringTask", "hourly", &uid(&task))
    );

    let text = s.recur(
        "backfill",
        "hourly",
        &[
            "--from", &from_s, "--to", &to_s, "--name", "catch-up", "--rate", "2",
        ],
    );
    text.ok();
    assert_eq!(
        text.stdout,
        format!(
            "backfill.recur.dev/catch-up created in {}\n\
             task          hourly\n\
             range         [{from_s}, {to_s})\n\
             occurrences   6, at most 2 per second\n",
            s.ns()
        )
    );
    assert_eq!(
        s.backfills.get("catch-up").await.unwrap().spec.rate,
        Some(2)
    );

    // A range reaching into the future is refused before anything is written.
    let future = rfc3339(Utc::now() + TimeDelta::hours(1));
    let refused = s.recur("backfill", "hourly", &["--from", &from_s, "--to", &future]);
    assert_eq!(refused.code, Some(2), "{refused:#?}");
    assert!(refused.stderr.contains("is in the future"), "{refused:#?}");
    assert_eq!(
        s.backfills
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    s.ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lists_the_status_newest_first_with_its_manual_runs() {
    let s = Setup::new("e2e-plugin-history").await;
    let task = s.task("nightly", json!({"cron": "0 9 * * *"})).await;

    // Before any operator wrote status.
    let empty = s.recur("history", "nightly", &[]);
    empty.ok();
    assert_eq!(
        empty.stdout,
        format!(
            "recurringtask nightly in {}: 0 delivered, 0 failed, 0 skipped\nno finished occurrences yet\n",
            s.ns()
        )
    );
    assert!(
        empty.stderr.contains("is the operator running?"),
        "{empty:#?}"
    );

    // What the operator writes, written here through the status subresource (oldest first).
    let uid = uid(&task);
    let scheduled = json!({"nominal": "2026-11-25T09:00:00Z", "due": "2026-11-25T09:00:00Z",
        "idempotencyKey": format!("rt-{uid}-20261125T090000Z"), "outcome": "Delivered",
        "finishedAt": "2026-11-25T09:00:00.120Z", "attempts": 1, "backendId": "1001"});
    let manual = json!({"nominal": "2026-11-25T10:15:00Z", "due": "2026-11-25T10:15:00Z",
        "idempotencyKey": format!("rt-{uid}-run-deploy-42"), "outcome": "Failed",
        "finishedAt": "2026-11-25T10:15:01Z", "attempts": 1, "reason": "HTTP 400: bad payload",
        "trigger": "Manual"});
    s.tasks
        .patch_status(
            "nightly",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"delivered": 1, "failed": 1,
                "history": [scheduled, manual],
                "lastManualRun": {"token": "deploy-42", "record": manual}}})),
        )
        .await
        .unwrap();

    let text = s.recur("history", "nightly", &[]);
    text.ok();
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "recurringtask nightly in {}: 1 delivered, 1 failed, 0 skipped",
            s.ns()
        )
    );
    assert_eq!(
        columns(lines[1]),
        [
            "NOMINAL", "DUE", "OUTCOME", "TRIGGER", "ATTEMPTS", "KEY", "REASON"
        ]
    );
    let newest = format!("rt-{uid}-run-deploy-42");
    let oldest = format!("rt-{uid}-20261125T090000Z");
    assert_eq!(
        columns(lines[2]),
        [
            "2026-11-25T10:15:00Z",
            "2026-11-25T10:15:00Z",
            "Failed",
            "Manual",
            "1",
            &newest,
            "HTTP 400: bad payload"
        ]
    );
    assert_eq!(
        columns(lines[3]),
        [
            "2026-11-25T09:00:00Z",
            "2026-11-25T09:00:00Z",
            "Delivered",
            "Schedule",
            "1",
            &oldest
        ]
    );
    assert_eq!(
        lines[5],
        "last manual run   deploy-42 Failed at 2026-11-25T10:15:01Z"
    );
    assert!(text.stderr.is_empty(), "{text:#?}");

    let v = s.recur("history", "nightly", &["-o", "json"]).ok().json();
    assert_eq!(v["history"][0]["trigger"], json!("Manual"));
    assert_eq!(v["history"][1]["trigger"], json!("Schedule"));
    assert_eq!(v["history"][1]["backendId"], json!("1001"));
    assert_eq!(v["lastManualRun"]["token"], json!("deploy-42"));
    assert_eq!(
        (v["delivered"].clone(), v["failed"].clone()),
        (json!(1), json!(1))
    );
    s.ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_schedule_says_the_schedule_in_words_with_its_next_instants() {
    let s = Setup::new("e2e-plugin-explain").await;
    s.task(
        "standup",
        json!({"cron": "0 9 * * MON-FRI", "timeZone": "Europe/Berlin",
            "startAt": "2026-01-01T00:00:00Z"}),
    )
    .await;

    let text = s.recur("explain-schedule", "standup", &[]);
    text.ok();
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "standup in {}: cron 0 9 * * MON-FRI (Europe/Berlin)",
            s.ns()
        )
    );
    assert_eq!(lines[1], "schedule    At 09:00 on Monday through Friday.");
    assert!(
        lines[2].starts_with("time zone   Europe/Berlin (UTC+0"),
        "{text:#?}"
    );
    assert!(
        text.stdout
            .contains("starts      2026-01-01T00:00:00Z (startAt)\nends        never\n"),
        "{text:#?}"
    );
    let next: Vec<&&str> = lines
        .iter()
        .skip_while(|l| !l.starts_with("next "))
        .collect();
    assert_eq!(next.len(), 3, "three instants by default: {text:#?}");
    for line in next {
        assert!(line.contains(" 09:00:00 +0"), "09:00 Berlin time: {line}");
        assert!(
            !line.contains("Sat ") && !line.contains("Sun "),
            "a weekday: {line}"
        );
    }

    let v = s
        .recur("explain", "standup", &["--count", "5", "-o", "json"])
        .ok()
        .json();
    assert_eq!(v["kind"], json!("cron"));
    assert_eq!(v["description"], json!("At 09:00 on Monday through Friday"));
    assert_eq!(v["timeZone"], json!("Europe/Berlin"));
    assert!(
        v["daylightSaving"].is_string(),
        "Berlin changes its offset yearly: {v}"
    );
    let next = v["next"].as_array().unwrap();
    assert_eq!(next.len(), 5);
    for n in next {
        let local = DateTime::parse_from_rfc3339(n["dueLocal"].as_str().unwrap()).unwrap();
        assert_eq!(local.format("%H:%M:%S").to_string(), "09:00:00", "{n}");
        let due: DateTime<Utc> = n["due"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            due,
            local.with_timezone(&Utc),
            "the same instant in UTC: {n}"
        );
    }
    s.ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_fail_with_a_message_that_names_the_thing() {
    let s = Setup::new("e2e-plugin-errors").await;
    let ns = s.ns().to_owned();
    for command in [
        "next",
        "run",
        "suspend",
        "resume",
        "history",
        "explain-schedule",
    ] {
        let out = s.recur(command, "nope", &[]);
        assert_eq!(out.code, Some(1), "{command}: {out:#?}");
        assert_eq!(
            out.stderr.trim(),
            format!("error: recurringtask \"nope\" not found in namespace \"{ns}\""),
            "{command}"
        );
        assert!(out.stdout.is_empty(), "{command}: {out:#?}");
    }
    let out = s.recur(
        "backfill",
        "nope",
        &[
            "--from",
            "2026-01-01T00:00:00Z",
            "--to",
            "2026-01-02T00:00:00Z",
        ],
    );
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(
        out.stderr.contains("recurringtask \"nope\" not found"),
        "{out:#?}"
    );

    // Bad command lines: exit 2, naming the flag or argument.
    for (args, named) in [
        (&["next", "x", "--count", "0"][..], "--count"),
        (
            &[
                "backfill",
                "x",
                "--from",
                "yesterday",
                "--to",
                "2026-01-01T00:00:00Z",
            ],
            "--from",
        ),
        (&["backfill", "x", "--from", "2026-01-01T00:00:00Z"], "--to"),
        (&["next", "x", "-o", "yaml"], "--output"),
        (&["history", "reminder/x"], "reminder/x"),
        (&["frobnicate"], "frobnicate"),
    ] {
        let out = recur(args);
        assert_eq!(out.code, Some(2), "{args:?}: {out:#?}");
        assert!(
            out.stderr.contains(named),
            "{args:?} names {named}: {out:#?}"
        );
    }
    s.ns.cleanup().await;
}
