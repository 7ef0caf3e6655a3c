//! `kubectl recur suspend NAME [--reason]` and `resume NAME`: merge patches of `spec.suspend` and
//! `spec.suspendReason` (resuming removes the reason, so a stale one never shows).
use clap::Args;
use kube::ResourceExt;
use serde::Serialize;
use serde_json::json;

use super::cluster::{connect, task_name};
use super::output::{Format, Report, json};
use super::{Error, Global};
use crate::api::RecurringTask;

/// `spec.suspendReason`'s limit in the CRD.
const MAX_REASON: usize = 256;

#[derive(Args, Debug, Clone, PartialEq)]
pub struct SuspendArgs {
    /// The RecurringTask (NAME or rt/NAME).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Why, shown in the Suspended condition and `kubectl get` (who, what, until when).
    #[arg(long, value_name = "TEXT", value_parser = check_reason)]
    pub reason: Option<String>,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct ResumeArgs {
    /// The RecurringTask (NAME or rt/NAME).
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// `--reason`: what the CRD admits, checked here so the message names the flag.
pub fn check_reason(s: &str) -> Result<String, String> {
    if s.chars().count() > MAX_REASON {
        return Err(format!("at most {MAX_REASON} characters"));
    }
    if s.chars().any(char::is_control) {
        return Err("no control characters (newlines, tabs)".into());
    }
    Ok(s.to_owned())
}

/// The merge patch of `suspend`: without a reason, an old reason is removed (it would lie).
pub fn suspend_patch(reason: Option<&str>) -> serde_json::Value {
    json!({"spec": {"suspend": true, "suspendReason": reason.filter(|r| !r.trim().is_empty())}})
}

/// The merge patch of `resume`.
pub fn resume_patch() -> serde_json::Value {
    json!({"spec": {"suspend": false, "suspendReason": null}})
}

pub async fn execute_suspend(g: &Global, args: &SuspendArgs) -> Result<Report, Error> {
    let cluster = connect(g).await?;
    let name = task_name(&args.name)?;
    let before = cluster.task(name).await?;
    let after = cluster
        .merge_task(name, &suspend_patch(args.reason.as_deref()), "suspending")
        .await?;
    render(&before, &after, g.output)
}

pub async fn execute_resume(g: &Global, args: &ResumeArgs) -> Result<Report, Error> {
    let cluster = connect(g).await?;
    let name = task_name(&args.name)?;
    let before = cluster.task(name).await?;
    let after = cluster
        .merge_task(name, &resume_patch(), "resuming")
        .await?;
    render(&before, &after, g.output)
}

/// `-o json`.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct SuspendJson<'a> {
    pub namespace: Option<String>,
    pub name: String,
    pub suspend: bool,
    pub suspend_reason: Option<&'a str>,
    pub was_suspended: bool,
}

/// What changed, from the task before and after the patch.
pub fn render(
    before: &RecurringTask,
    after: &RecurringTask,
    format: Format,
) -> Result<Report, Error> {
    let mut warnings = vec![];
    let (was, now) = (before.spec.suspend, after.spec.suspend);
    if was == now {
        warnings.push(format!(
            "the task was already {}",
            if now {
                "suspended"
            } else {
                "active (not suspended)"
            }
        ));
    }
    let by_failures = before
        .status
        .as_ref()
        .and_then(|s| s.failure_suspension.as_ref());
    let stdout = match format {
        Format::Json => json(&SuspendJson {
            namespace: after.namespace(),
            name: after.name_any(),
            suspend: now,
            suspend_reason: after.spec.suspend_reason.as_deref(),
            was_suspended: was,
        })?,
        Format::Text => {
            let head = format!(
                "recurringtask {} in {}",
                after.name_any(),
                after.namespace().unwrap_or_default()
            );
            if now {
                let why = after
                    .spec
                    .suspend_reason
                    .as_deref()
                    .map_or(String::new(), |r| format!(": {r}"));
                format!(
                    "{head} suspended{why}\nnothing is delivered until `kubectl recur resume`; what falls due meanwhile is never delivered\n"
                )
            } else {
                let mut out = format!(
                    "{head} resumed\noccurrences are delivered from the next one after now; missed ones are not (see `kubectl recur backfill`)\n"
                );
                if let Some(fs) = by_failures.filter(|_| was) {
                    out.push_str(&format!(
                        "it was suspended by failurePolicy after {} failures in a row ({}); the count starts again\n",
                        fs.failures, fs.message
                    ));
                }
                out
            }
        }
    };
    Ok(Report {
        stdout,
        warnings,
        failure: None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use serde_json::json;

    use super::*;
    use crate::plugin::subject::fixtures::task;

    #[test]
    fn patches_set_and_clear_the_reason() {
        assert_eq!(
            suspend_patch(Some("db migration (alice)")),
            json!({"spec": {"suspend": true, "suspendReason": "db migration (alice)"}})
        );
        assert_eq!(
            suspend_patch(None),
            json!({"spec": {"suspend": true, "suspendReason": null}})
        );
        assert_eq!(
            resume_patch(),
            json!({"spec": {"suspend": false, "suspendReason": null}})
        );
        assert!(check_reason("until 14:00 UTC").is_ok());
        assert!(check_reason("two\nlines").is_err());
        assert!(check_reason(&"x".repeat(257)).is_err());
    }

    #[test]
    fn suspend_and_resume_say_what_happens_to_occurrences() {
        let active = task(json!({"every": "1h"}), json!({}), json!(null));
        let suspended = task(
            json!({"every": "1h"}),
            json!({"suspend": true, "suspendReason": "migration"}),
            json!({"failureSuspension": {"generation": 3, "time": "2026-03-01T00:00:00Z",
                "failures": 5, "message": "5 occurrences in a row failed"}}),
        );
        let out = render(&active, &suspended, Format::Text).unwrap();
        assert_eq!(
            out.stdout,
            "recurringtask nightly in team-a suspended: migration\nnothing is delivered until `kubectl recur resume`; what falls due meanwhile is never delivered\n"
        );
        assert!(out.warnings.is_empty());
        let out = render(&suspended, &active, Format::Text).unwrap();
        assert!(
            out.stdout.ends_with(
                "it was suspended by failurePolicy after 5 failures in a row (5 occurrences in a row failed); the count starts again\n"
            ),
            "{}",
            out.stdout
        );
        let out = render(&active, &active, Format::Json).unwrap();
        assert_eq!(
            out.warnings,
            ["the task was already active (not suspended)"]
        );
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(
            v,
            json!({"namespace": "team-a", "name": "nightly", "suspend": false,
                "suspendReason": null, "wasSuspended": false})
        );
    }
}
