//! `kubectl recur run NAME`: one extra run now, through the `recur.dev/run-now` annotation. The
//! operator delivers each token at most once, under the key `rt-<uid>-run-<token>`, and records
//! it in `status.lastManualRun`; `--wait` waits for that record.
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use clap::Args;
use kube::ResourceExt;
use serde::Serialize;
use serde_json::json;

use super::cluster::{Cluster, connect, poll, task_name};
use super::output::{Format, Report, fields, json, plural, utc};
use super::{Error, Global, parse_timeout};
use crate::api::{OccurrenceRecord, Outcome, RUN_NOW_ANNOTATION, RecurringTask};

/// Longest token the operator accepts.
const MAX_TOKEN: usize = 63;

#[derive(Args, Debug, Clone, PartialEq)]
pub struct RunArgs {
    /// The RecurringTask (NAME or rt/NAME).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The run's token ([a-z0-9-], at most 63): a token runs at most once, so repeating the
    /// command with the same token is safe. Default: a fresh one.
    #[arg(long, value_name = "TOKEN", value_parser = check_token)]
    pub token: Option<String>,
    /// Wait until the operator records the run's outcome.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

/// `manual-<yyyymmdd>-<hhmmss>-<4 hex>`: sortable, readable in a log, and two runs asked for in
/// the same second still differ (a token runs only once).
pub fn fresh_token(now: DateTime<Utc>, entropy: u64) -> String {
    format!(
        "manual-{}-{:04x}",
        now.format("%Y%m%d-%H%M%S"),
        entropy & 0xffff
    )
}

/// Sixteen bits that differ between two invocations in the same second: std's per-process
/// random hasher keys over the time and the pid (no crypto needed, only distinct tokens).
fn entropy() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    RandomState::new().hash_one((nanos, std::process::id()))
}

/// `--token`: what the operator accepts, `[a-z0-9-]{1,63}`.
pub fn check_token(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= MAX_TOKEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a token: 1 to {MAX_TOKEN} lowercase letters, digits or '-'"
        ))
    }
}

/// The idempotency key of a manual run (`RUN_NOW_ANNOTATION`'s contract).
pub fn manual_key(uid: &str, token: &str) -> String {
    format!("rt-{uid}-run-{token}")
}

/// What `run` decided before writing.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPlan {
    pub token: String,
    pub key: String,
    /// The token already ran: its record, and nothing to write.
    pub already: Option<OccurrenceRecord>,
    pub warnings: Vec<String>,
}

/// Decides the token and what to tell the user; pure.
pub fn plan(
    task: &RecurringTask,
    token: Option<&str>,
    now: DateTime<Utc>,
    entropy: u64,
) -> RunPlan {
    let uid = task.uid().unwrap_or_default();
    let token = token.map_or_else(|| fresh_token(now, entropy), str::to_owned);
    let status = task.status.as_ref();
    let already = status
        .and_then(|s| s.last_manual_run.as_ref())
        .filter(|m| m.token == token)
        .map(|m| m.record.clone());
    let mut warnings = vec![];
    if task.spec.suspend && already.is_none() {
        warnings.push(
            "the task is suspended: the operator refuses manual runs of a suspended task (event RunRefused); resume it first".into(),
        );
    }
    // A token the operator has not picked up yet would be replaced, and never run.
    let current = task.annotations().get(RUN_NOW_ANNOTATION);
    let picked_up = |t: &String| {
        status.is_some_and(|s| {
            s.last_manual_run.as_ref().is_some_and(|m| &m.token == t)
                || s.manual_run.as_ref().is_some_and(|m| &m.token == t)
        })
    };
    if let Some(pending) = current.filter(|t| **t != token && !picked_up(t)) {
        warnings.push(format!(
            "replacing run-now token {pending:?}, which the operator has not picked up yet: it will not run"
        ));
    }
    if let Some(m) = status
        .and_then(|s| s.manual_run.as_ref())
        .filter(|m| m.token != token)
    {
        warnings.push(format!(
            "the manual run {:?} is still in progress ({}); this one follows it",
            m.token,
            plural(m.attempts as usize, "failed attempt")
        ));
    }
    RunPlan {
        key: manual_key(&uid, &token),
        token,
        already,
        warnings,
    }
}

/// The merge patch that asks for the run.
pub fn patch(token: &str) -> serde_json::Value {
    json!({"metadata": {"annotations": {RUN_NOW_ANNOTATION: token}}})
}

pub async fn execute(g: &Global, args: &RunArgs, now: DateTime<Utc>) -> Result<Report, Error> {
    let cluster = connect(g).await?;
    let name = task_name(&args.name)?;
    let task = cluster.task(name).await?;
    let plan = plan(&task, args.token.as_deref(), now, entropy());
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    let mut record = plan.already.clone();
    if record.is_none() {
        cluster
            .merge_task(name, &patch(&plan.token), "annotating")
            .await?;
        if args.wait {
            if g.output == Format::Text {
                eprintln!(
                    "run requested with token {}; waiting up to {}s for the operator",
                    plan.token,
                    args.timeout.as_secs()
                );
            }
            record = Some(wait(&cluster, name, &plan.token, args.timeout).await?);
        }
    }
    render(&task, &plan, record.as_ref(), g.output)
}

/// Waits until `status.lastManualRun` is this token's, failing early when it cannot come.
async fn wait(
    cluster: &Cluster,
    name: &str,
    token: &str,
    timeout: Duration,
) -> Result<OccurrenceRecord, Error> {
    let what = format!("the operator to record the manual run {token:?} in status.lastManualRun");
    poll(timeout, &what, || async {
        let task = cluster.task(name).await?;
        let status = task.status.as_ref();
        if let Some(m) = status
            .and_then(|s| s.last_manual_run.as_ref())
            .filter(|m| m.token == token)
        {
            return Ok(Some(m.record.clone()));
        }
        let replaced = task
            .annotations()
            .get(RUN_NOW_ANNOTATION)
            .is_some_and(|t| t != token);
        let in_progress = status
            .and_then(|s| s.manual_run.as_ref())
            .is_some_and(|m| m.token == token);
        if replaced && !in_progress {
            return Err(Error::Refused(format!(
                "the run-now annotation was replaced before the operator picked up {token:?}"
            )));
        }
        if task.spec.suspend {
            return Err(Error::Refused(format!(
                "the task is suspended: the operator does not run {token:?} (resume it, then run again)"
            )));
        }
        Ok(None)
    })
    .await
}

/// `-o json`.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct RunJson<'a> {
    pub namespace: Option<String>,
    pub name: String,
    pub uid: Option<String>,
    pub token: &'a str,
    pub idempotency_key: &'a str,
    /// False when the token had already run (nothing was written).
    pub requested: bool,
    /// `status.lastManualRun.record` of this token, when known (`--wait`, or it already ran).
    pub record: Option<&'a OccurrenceRecord>,
}

pub fn render(
    task: &RecurringTask,
    plan: &RunPlan,
    record: Option<&OccurrenceRecord>,
    format: Format,
) -> Result<Report, Error> {
    let failure = record.and_then(|r| match r.outcome {
        Outcome::Delivered => None,
        Outcome::Failed | Outcome::Skipped => Some(format!(
            "the manual run {:?} ended {:?}: {}",
            plan.token,
            r.outcome,
            r.reason.as_deref().unwrap_or("no reason recorded")
        )),
    });
    let stdout = match format {
        Format::Json => json(&RunJson {
            namespace: task.namespace(),
            name: task.name_any(),
            uid: task.uid(),
            token: &plan.token,
            idempotency_key: &plan.key,
            requested: plan.already.is_none(),
            record,
        })?,
        Format::Text => {
            let what = if plan.already.is_some() {
                "already ran (nothing written)"
            } else {
                "run requested (recur.dev/run-now)"
            };
            let ns = task.namespace().unwrap_or_default();
            let mut out = format!("recurringtask {} in {ns}: {what}\n", task.name_any());
            let mut rows = vec![("token", plan.token.clone()), ("key", plan.key.clone())];
            if let Some(r) = record {
                rows.push(("outcome", outcome(r)));
            }
            out.push_str(&fields(&rows));
            out
        }
    };
    Ok(Report {
        stdout,
        warnings: vec![],
        failure,
    })
}

/// `Delivered at 2026-11-25T11:25:35Z after 1 attempt, backend id 1001`.
fn outcome(r: &OccurrenceRecord) -> String {
    let mut s = format!(
        "{:?} at {} after {}",
        r.outcome,
        utc(r.finished_at),
        plural(r.attempts as usize, "attempt")
    );
    if let Some(id) = &r.backend_id {
        s.push_str(&format!(", backend id {id}"));
    }
    if let Some(why) = &r.reason {
        s.push_str(&format!(": {why}"));
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use serde_json::json;

    use super::*;
    use crate::plugin::subject::fixtures::{UID, task};

    fn now() -> DateTime<Utc> {
        "2026-11-25T11:25:34Z".parse().unwrap()
    }

    #[test]
    fn fresh_tokens_are_valid_sortable_and_differ_by_their_entropy() {
        let a = fresh_token(now(), 0x3f9a);
        assert_eq!(a, "manual-20261125-112534-3f9a");
        assert_eq!(check_token(&a), Ok(a.clone()));
        assert_ne!(fresh_token(now(), 1), fresh_token(now(), 2));
        assert_eq!(fresh_token(now(), 0x1_0001), "manual-20261125-112534-0001");
        assert_ne!(entropy(), entropy(), "two runs in one process differ");
        for bad in ["", "Run1", "a_b", "a b", &"x".repeat(64), "ü"] {
            assert!(check_token(bad).is_err(), "{bad:?}");
        }
        assert!(check_token(&"x".repeat(63)).is_ok());
    }

    #[test]
    fn the_key_and_the_patch_follow_the_annotation_contract() {
        let t = task(json!({"every": "1h"}), json!({}), json!(null));
        let p = plan(&t, Some("deploy-42"), now(), 0);
        assert_eq!(p.key, format!("rt-{UID}-run-deploy-42"));
        assert!(p.already.is_none() && p.warnings.is_empty());
        assert_eq!(
            patch("deploy-42"),
            json!({"metadata": {"annotations": {"recur.dev/run-now": "deploy-42"}}})
        );
        let fresh = plan(&t, None, now(), 0xabcd);
        assert_eq!(fresh.token, "manual-20261125-112534-abcd");
    }

    #[test]
    fn a_token_that_already_ran_is_reported_not_requested_again() {
        let record = json!({"nominal": "2026-11-25T11:00:00Z", "due": "2026-11-25T11:00:00Z",
            "idempotencyKey": format!("rt-{UID}-run-deploy-42"), "outcome": "Delivered",
            "finishedAt": "2026-11-25T11:00:01Z", "attempts": 1, "backendId": "1001",
            "trigger": "Manual"});
        let t = task(
            json!({"every": "1h"}),
            json!({}),
            json!({"lastManualRun": {"token": "deploy-42", "record": record}}),
        );
        let p = plan(&t, Some("deploy-42"), now(), 0);
        assert!(p.already.is_some());
        let out = render(&t, &p, p.already.as_ref(), Format::Text).unwrap();
        assert_eq!(
            out.stdout,
            format!(
                "recurringtask nightly in team-a: already ran (nothing written)\n\
                 token     deploy-42\n\
                 key       rt-{UID}-run-deploy-42\n\
                 outcome   Delivered at 2026-11-25T11:00:01Z after 1 attempt, backend id 1001\n"
            )
        );
        assert_eq!(out.failure, None);
        let v: serde_json::Value = serde_json::from_str(
            &render(&t, &p, p.already.as_ref(), Format::Json)
                .unwrap()
                .stdout,
        )
        .unwrap();
        assert_eq!(v["requested"], json!(false));
        assert_eq!(v["record"]["backendId"], json!("1001"));
        assert_eq!(
            v["idempotencyKey"],
            json!(format!("rt-{UID}-run-deploy-42"))
        );
    }

    #[test]
    fn warnings_for_a_suspended_task_and_a_token_not_picked_up() {
        let mut t = task(
            json!({"every": "1h"}),
            json!({"suspend": true}),
            json!({"manualRun": {"token": "older", "idempotencyKey": "k",
                "requestedAt": "2026-11-25T11:00:00Z", "attempts": 2}}),
        );
        t.metadata.annotations =
            Some([(RUN_NOW_ANNOTATION.to_owned(), "unseen".to_owned())].into());
        let p = plan(&t, Some("mine"), now(), 0);
        assert_eq!(p.warnings.len(), 3, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("suspended"));
        assert!(p.warnings[1].contains("\"unseen\""));
        assert!(p.warnings[2].contains("\"older\" is still in progress (2 failed attempts)"));
    }

    #[test]
    fn a_refused_run_is_a_failure_after_its_output() {
        let t = task(json!({"every": "1h"}), json!({}), json!(null));
        let p = plan(&t, Some("x"), now(), 0);
        let rec: OccurrenceRecord = serde_json::from_value(json!({"nominal": "2026-11-25T11:00:00Z",
            "due": "2026-11-25T11:00:00Z", "idempotencyKey": "k", "outcome": "Failed",
            "finishedAt": "2026-11-25T11:00:01Z", "attempts": 1, "reason": "HTTP 400: bad payload"}))
        .unwrap();
        let out = render(&t, &p, Some(&rec), Format::Text).unwrap();
        assert!(out.stdout.contains("outcome   Failed at"), "{}", out.stdout);
        assert_eq!(
            out.failure.as_deref(),
            Some("the manual run \"x\" ended Failed: HTTP 400: bad payload")
        );
    }
}
