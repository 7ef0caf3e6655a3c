//! `kubectl recur history NAME`: `status.history` newest first (scheduled, manual and backfilled
//! occurrences), the manual runs, and the counters.
use clap::Args;
use kube::ResourceExt;
use serde::Serialize;

use super::cluster::{connect, task_name};
use super::output::{Format, Report, fields, json, table, utc};
use super::{Error, Global};
use crate::api::{
    ManualRun, OccurrenceRecord, Outcome, PendingManualRun, PendingOccurrence, RecurringTask,
    Trigger,
};

#[derive(Args, Debug, Clone, PartialEq)]
pub struct HistoryArgs {
    /// The RecurringTask (NAME or rt/NAME).
    #[arg(value_name = "NAME")]
    pub name: String,
}

pub async fn execute(g: &Global, args: &HistoryArgs) -> Result<Report, Error> {
    let cluster = connect(g).await?;
    let task = cluster.task(task_name(&args.name)?).await?;
    render(&task, g.output)
}

/// One finished occurrence in `-o json`: the record with its trigger spelled out.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct RecordJson<'a> {
    pub nominal: String,
    pub due: String,
    pub finished_at: String,
    pub outcome: Outcome,
    /// `Schedule` when the record has none (it predates triggers).
    pub trigger: Trigger,
    pub attempts: u32,
    pub idempotency_key: &'a str,
    pub backend_id: Option<&'a str>,
    pub reason: Option<&'a str>,
}

/// `-o json`.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct HistoryJson<'a> {
    pub namespace: Option<String>,
    pub name: String,
    pub uid: Option<String>,
    pub delivered: u64,
    pub failed: u64,
    pub skipped: u64,
    /// Newest first.
    pub history: Vec<RecordJson<'a>>,
    pub last_manual_run: Option<&'a ManualRun>,
    /// A manual run asked for and not finished.
    pub manual_run: Option<&'a PendingManualRun>,
    pub next_occurrence: Option<&'a PendingOccurrence>,
}

fn record_json(r: &OccurrenceRecord) -> RecordJson<'_> {
    RecordJson {
        nominal: utc(r.nominal),
        due: utc(r.due),
        finished_at: utc(r.finished_at),
        outcome: r.outcome,
        trigger: r.trigger.unwrap_or_default(),
        attempts: r.attempts,
        idempotency_key: &r.idempotency_key,
        backend_id: r.backend_id.as_deref(),
        reason: r.reason.as_deref(),
    }
}

pub fn render(task: &RecurringTask, format: Format) -> Result<Report, Error> {
    let status = task.status.clone().unwrap_or_default();
    // Newest first, whatever order status keeps.
    let mut records: Vec<&OccurrenceRecord> = status.history.iter().collect();
    records.sort_by_key(|r| std::cmp::Reverse(r.finished_at));
    let mut warnings = vec![];
    if task.status.is_none() {
        warnings.push("the task has no status yet: is the operator running?".into());
    }
    let stdout = match format {
        Format::Json => json(&HistoryJson {
            namespace: task.namespace(),
            name: task.name_any(),
            uid: task.uid(),
            delivered: status.delivered,
            failed: status.failed,
            skipped: status.skipped,
            history: records.iter().map(|r| record_json(r)).collect(),
            last_manual_run: task
                .status
                .as_ref()
                .and_then(|s| s.last_manual_run.as_deref()),
            manual_run: task.status.as_ref().and_then(|s| s.manual_run.as_deref()),
            next_occurrence: task
                .status
                .as_ref()
                .and_then(|s| s.next_occurrence.as_ref()),
        })?,
        Format::Text => {
            let mut out = format!(
                "recurringtask {} in {}: {} delivered, {} failed, {} skipped\n",
                task.name_any(),
                task.namespace().unwrap_or_default(),
                status.delivered,
                status.failed,
                status.skipped
            );
            if records.is_empty() {
                out.push_str("no finished occurrences yet\n");
            } else {
                let rows: Vec<Vec<String>> = records
                    .iter()
                    .map(|r| {
                        vec![
                            utc(r.nominal),
                            utc(r.due),
                            format!("{:?}", r.outcome),
                            format!("{:?}", r.trigger.unwrap_or_default()),
                            r.attempts.to_string(),
                            r.idempotency_key.clone(),
                            r.reason.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                out.push_str(&table(
                    &[
                        "NOMINAL", "DUE", "OUTCOME", "TRIGGER", "ATTEMPTS", "KEY", "REASON",
                    ],
                    &rows,
                ));
            }
            let mut more = vec![];
            if let Some(m) = &status.last_manual_run {
                more.push((
                    "last manual run",
                    format!(
                        "{} {:?} at {}",
                        m.token,
                        m.record.outcome,
                        utc(m.record.finished_at)
                    ),
                ));
            }
            if let Some(m) = &status.manual_run {
                more.push((
                    "manual run in progress",
                    format!("{} ({} failed attempts)", m.token, m.attempts),
                ));
            }
            if let Some(p) = &status.next_occurrence {
                more.push((
                    "next occurrence",
                    format!("{} due {}", utc(p.nominal), utc(p.due)),
                ));
            }
            if !more.is_empty() {
                out.push('\n');
                out.push_str(&fields(&more));
            }
            out
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
    use crate::plugin::subject::fixtures::{UID, task};

    fn with_history() -> RecurringTask {
        let scheduled = json!({"nominal": "2026-11-25T09:00:00Z", "due": "2026-11-25T09:00:00Z",
            "idempotencyKey": format!("rt-{UID}-20261125T090000Z"), "outcome": "Delivered",
            "finishedAt": "2026-11-25T09:00:00.120Z", "attempts": 1, "backendId": "1001"});
        let manual = json!({"nominal": "2026-11-25T10:15:00Z", "due": "2026-11-25T10:15:00Z",
            "idempotencyKey": format!("rt-{UID}-run-deploy-42"), "outcome": "Failed",
            "finishedAt": "2026-11-25T10:15:01Z", "attempts": 1, "reason": "HTTP 400: bad payload",
            "trigger": "Manual"});
        task(
            json!({"cron": "0 9 * * *"}),
            json!({}),
            json!({"delivered": 1, "failed": 1,
                "history": [scheduled, manual],
                "lastManualRun": {"token": "deploy-42", "record": manual},
                "nextOccurrence": {"nominal": "2026-11-26T09:00:00Z", "due": "2026-11-26T09:00:00Z",
                    "idempotencyKey": "k", "attempts": 0}}),
        )
    }

    #[test]
    fn text_lists_newest_first_with_trigger_and_the_manual_runs() {
        let out = render(&with_history(), Format::Text).unwrap();
        // The UID written out, so the columns line up here as they do on a terminal.
        assert_eq!(UID, "c2343bef-b58e-4dca-985d-947106f3b494");
        let expected = "recurringtask nightly in team-a: 1 delivered, 1 failed, 0 skipped
NOMINAL                DUE                    OUTCOME     TRIGGER    ATTEMPTS   KEY                                                        REASON
2026-11-25T10:15:00Z   2026-11-25T10:15:00Z   Failed      Manual     1          rt-c2343bef-b58e-4dca-985d-947106f3b494-run-deploy-42      HTTP 400: bad payload
2026-11-25T09:00:00Z   2026-11-25T09:00:00Z   Delivered   Schedule   1          rt-c2343bef-b58e-4dca-985d-947106f3b494-20261125T090000Z

last manual run   deploy-42 Failed at 2026-11-25T10:15:01Z
next occurrence   2026-11-26T09:00:00Z due 2026-11-26T09:00:00Z
";
        assert_eq!(out.stdout, expected);
    }

    #[test]
    fn json_spells_out_the_trigger_and_keeps_the_manual_run() {
        let out = render(&with_history(), Format::Json).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["history"][0]["trigger"], json!("Manual"));
        assert_eq!(v["history"][1]["trigger"], json!("Schedule"));
        assert_eq!(v["history"][1]["backendId"], json!("1001"));
        assert_eq!(
            v["history"][1]["finishedAt"],
            json!("2026-11-25T09:00:00.120Z")
        );
        assert_eq!(v["lastManualRun"]["token"], json!("deploy-42"));
        assert_eq!(v["manualRun"], json!(null));
        assert_eq!(
            (v["delivered"].clone(), v["failed"].clone()),
            (json!(1), json!(1))
        );
    }

    #[test]
    fn a_task_without_status_has_no_history_yet() {
        let t = task(json!({"cron": "0 9 * * *"}), json!({}), json!(null));
        let out = render(&t, Format::Text).unwrap();
        assert_eq!(
            out.stdout,
            "recurringtask nightly in team-a: 0 delivered, 0 failed, 0 skipped\nno finished occurrences yet\n"
        );
        assert_eq!(out.warnings.len(), 1);
    }
}
