//! `kubectl recur backfill NAME --from --to`: creates a `Backfill` owned by the task, after
//! counting locally what the range holds (so an empty or oversized range is refused before
//! anything is written); `--wait` waits until it is Complete or Failed.
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use clap::Args;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ObjectMeta, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;

use super::cluster::{FIELD_MANAGER, connect, poll, task_name};
use super::output::{Format, Report, fields, json, utc};
use super::{Error, Global, parse_timeout};
use crate::api::{
    BACKFILL_DEFAULT_MAX, BACKFILL_DEFAULT_RATE, Backfill, BackfillPhase, BackfillSpec,
    BackfillStatus, RecurringTask, TaskRef,
};
use crate::cli::schedule::parse_instant;
use crate::schedule::Schedule;

#[derive(Args, Debug, Clone, PartialEq)]
pub struct BackfillArgs {
    /// The RecurringTask (NAME or rt/NAME).
    #[arg(value_name = "NAME")]
    pub task: String,
    /// The first instant of the range, inclusive (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_instant)]
    pub from: DateTime<Utc>,
    /// The end of the range, exclusive (RFC 3339), not in the future.
    #[arg(long, value_name = "TIME", value_parser = parse_instant)]
    pub to: DateTime<Utc>,
    /// The most occurrences the range may hold (default 1000, at most 10000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max: Option<u32>,
    /// Occurrences delivered per second, at most (default 10, at most 1000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rate: Option<u32>,
    /// The Backfill's name (default: generated, `<task>-xxxxx`).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Wait until the backfill is Complete or Failed.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_timeout)]
    pub timeout: Duration,
}

/// Occurrences with `from <= nominal < to`, counted up to `cap` (the Backfill's own range).
pub fn count_in_range(
    schedule: &Schedule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    cap: usize,
) -> usize {
    // Occurrences are whole seconds: strictly after `from - 1ns` is at or after `from`.
    let after = from - TimeDelta::nanoseconds(1);
    schedule
        .iter_after(after)
        .take_while(|o| o.nominal < to)
        .take(cap)
        .count()
}

/// Checks the range against the schedule and builds the object; pure.
pub fn build(
    task: &RecurringTask,
    schedule: &Schedule,
    args: &BackfillArgs,
    now: DateTime<Utc>,
) -> Result<(Backfill, usize), Error> {
    if args.from >= args.to {
        return Err(Error::Usage(format!(
            "--to ({}) must be after --from ({})",
            utc(args.to),
            utc(args.from)
        )));
    }
    if args.to > now {
        return Err(Error::Usage(format!(
            "--to ({}) is in the future: a backfill covers the past (the schedule itself delivers what falls due from now on)",
            utc(args.to)
        )));
    }
    let max = args.max.unwrap_or(BACKFILL_DEFAULT_MAX);
    let n = count_in_range(schedule, args.from, args.to, max as usize + 1);
    if n == 0 {
        return Err(Error::Refused(format!(
            "no occurrence of {} falls in [{}, {}): nothing to backfill",
            schedule.summary(),
            utc(args.from),
            utc(args.to)
        )));
    }
    if n > max as usize {
        return Err(Error::Refused(format!(
            "the range holds more than {max} occurrences of {} (--max {max}): narrow it or raise --max (at most 10000)",
            schedule.summary()
        )));
    }
    let uid = task
        .uid()
        .ok_or_else(|| Error::Refused("the task has no metadata.uid".into()))?;
    let name = task.name_any();
    let owner = OwnerReference {
        api_version: RecurringTask::api_version(&()).into_owned(),
        kind: RecurringTask::kind(&()).into_owned(),
        name: name.clone(),
        uid,
        ..OwnerReference::default()
    };
    let metadata = ObjectMeta {
        name: args.name.clone(),
        generate_name: args.name.is_none().then(|| format!("{name}-")),
        namespace: task.namespace(),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    };
    let spec = BackfillSpec {
        task_ref: TaskRef { name },
        from: args.from,
        to: args.to,
        max_occurrences: args.max,
        rate: args.rate,
        ttl_seconds_after_finished: None,
    };
    let backfill = Backfill {
        metadata,
        spec,
        status: None,
    };
    Ok((backfill, n))
}

pub async fn execute(g: &Global, args: &BackfillArgs, now: DateTime<Utc>) -> Result<Report, Error> {
    let cluster = connect(g).await?;
    let task = cluster.task(task_name(&args.task)?).await?;
    let schedule = crate::controller::task::compile(&task).map_err(|source| Error::Schedule {
        task: task.name_any(),
        source,
    })?;
    let (object, occurrences) = build(&task, &schedule, args, now)?;
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    let api = cluster.backfills();
    let mut created = match api.create(&params, &object).await {
        Ok(b) => b,
        Err(kube::Error::Api(s)) if s.is_not_found() => {
            return Err(Error::NotInstalled {
                resource: "backfills",
            });
        }
        Err(e) => {
            return Err(cluster.fail(format!("creating a backfill of {}", task.name_any()), e));
        }
    };
    if args.wait {
        let name = created.name_any();
        if g.output == Format::Text {
            eprintln!(
                "backfill {name} created; waiting up to {}s for it to finish",
                args.timeout.as_secs()
            );
        }
        let what = format!("backfill {name} to be Complete or Failed");
        created = poll(args.timeout, &what, || async {
            let b = api
                .get(&name)
                .await
                .map_err(|e| cluster.fail(format!("reading backfill {name}"), e))?;
            let done = b.status.as_ref().is_some_and(|s| {
                matches!(s.phase, BackfillPhase::Complete | BackfillPhase::Failed)
            });
            Ok(done.then_some(b))
        })
        .await?;
    }
    render(&created, occurrences, args.rate, g.output)
}

/// `-o json`.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct BackfillJson<'a> {
    pub namespace: Option<String>,
    pub name: String,
    pub task: &'a str,
    pub from: String,
    pub to: String,
    /// Occurrences of the schedule in `[from, to)`, as counted when it was created.
    pub occurrences: usize,
    pub max_occurrences: u32,
    pub rate: u32,
    /// The Backfill's status (`phase`, `total`, `delivered`, `alreadyDelivered`, `failed`, ...),
    /// null until the operator first writes it.
    pub status: Option<&'a BackfillStatus>,
}

pub fn render(
    b: &Backfill,
    occurrences: usize,
    rate: Option<u32>,
    format: Format,
) -> Result<Report, Error> {
    let status = b.status.as_ref();
    let failure = status
        .filter(|s| s.phase == BackfillPhase::Failed)
        .map(|s| {
            let why = s
                .conditions
                .iter()
                .find(|c| c.type_ == crate::controller::reason::STALLED)
                .map_or("see kubectl describe backfill", |c| c.message.as_str());
            format!("backfill {} failed: {why}", b.name_any())
        });
    let rate = rate.unwrap_or(BACKFILL_DEFAULT_RATE);
    let stdout = match format {
        Format::Json => json(&BackfillJson {
            namespace: b.namespace(),
            name: b.name_any(),
            task: &b.spec.task_ref.name,
            from: utc(b.spec.from),
            to: utc(b.spec.to),
            occurrences,
            max_occurrences: b.spec.max_occurrences.unwrap_or(BACKFILL_DEFAULT_MAX),
            rate,
            status,
        })?,
        Format::Text => {
            let mut out = format!(
                "backfill.recur.dev/{} created in {}\n",
                b.name_any(),
                b.namespace().unwrap_or_default()
            );
            let mut rows = vec![
                ("task", b.spec.task_ref.name.clone()),
                (
                    "range",
                    format!("[{}, {})", utc(b.spec.from), utc(b.spec.to)),
                ),
                (
                    "occurrences",
                    format!("{occurrences}, at most {rate} per second"),
                ),
            ];
            if let Some(s) = status {
                rows.push((
                    "phase",
                    format!(
                        "{:?}: {} delivered, {} already delivered, {} failed of {}",
                        s.phase, s.delivered, s.already_delivered, s.failed, s.total
                    ),
                ));
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use serde_json::json;

    use super::*;
    use crate::plugin::subject::fixtures::{UID, task};

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn args(from: &str, to: &str) -> BackfillArgs {
        BackfillArgs {
            task: "nightly".into(),
            from: at(from),
            to: at(to),
            max: None,
            rate: None,
            name: None,
            wait: false,
            timeout: Duration::from_secs(1),
        }
    }

    fn hourly() -> (RecurringTask, Schedule) {
        let t = task(json!({"cron": "0 * * * *"}), json!({}), json!(null));
        let s = crate::controller::task::compile(&t).unwrap();
        (t, s)
    }

    #[test]
    fn the_range_is_from_inclusive_to_exclusive() {
        let (_, s) = hourly();
        let n = count_in_range(
            &s,
            at("2026-03-01T00:00:00Z"),
            at("2026-03-01T03:00:00Z"),
            100,
        );
        assert_eq!(n, 3, "00:00, 01:00 and 02:00");
        assert_eq!(
            count_in_range(
                &s,
                at("2026-03-01T00:00:00Z"),
                at("2026-03-02T00:00:00Z"),
                5
            ),
            5,
            "capped"
        );
    }

    #[test]
    fn the_backfill_is_owned_by_the_task_and_named_after_it() {
        let (t, s) = hourly();
        let now = at("2026-03-28T00:00:00Z");
        let (mut b, n) = build(
            &t,
            &s,
            &args("2026-03-01T00:00:00Z", "2026-03-01T03:00:00Z"),
            now,
        )
        .unwrap();
        assert_eq!(n, 3);
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(
            v,
            json!({
                "apiVersion": "recur.dev/v1alpha1", "kind": "Backfill",
                "metadata": {"generateName": "nightly-", "namespace": "team-a",
                    "ownerReferences": [{"apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
                        "name": "nightly", "uid": UID}]},
                "spec": {"taskRef": {"name": "nightly"}, "from": "2026-03-01T00:00:00Z",
                    "to": "2026-03-01T03:00:00Z"},
            })
        );
        b.metadata.name = Some("nightly-x7k2p".into());
        let out = render(&b, n, None, Format::Text).unwrap();
        assert_eq!(
            out.stdout,
            "backfill.recur.dev/nightly-x7k2p created in team-a\n\
             task          nightly\n\
             range         [2026-03-01T00:00:00Z, 2026-03-01T03:00:00Z)\n\
             occurrences   3, at most 10 per second\n"
        );
    }

    #[test]
    fn empty_reversed_future_and_oversized_ranges_are_refused_before_writing() {
        let (t, s) = hourly();
        let now = at("2026-03-28T00:00:00Z");
        let err = |a: BackfillArgs| build(&t, &s, &a, now).unwrap_err().to_string();
        assert!(
            err(args("2026-03-01T01:00:00Z", "2026-03-01T00:00:00Z"))
                .contains("must be after --from")
        );
        assert!(
            err(args("2026-03-01T00:00:00Z", "2026-03-29T00:00:00Z")).contains("is in the future")
        );
        assert_eq!(
            err(args("2026-03-01T00:00:01Z", "2026-03-01T00:59:59Z")),
            "no occurrence of cron 0 * * * * falls in [2026-03-01T00:00:01Z, 2026-03-01T00:59:59Z): nothing to backfill"
        );
        let mut big = args("2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z");
        big.max = Some(10);
        assert!(err(big).contains("more than 10 occurrences"));
    }

    #[test]
    fn json_carries_the_status_counts() {
        let (t, s) = hourly();
        let mut a = args("2026-03-01T00:00:00Z", "2026-03-01T03:00:00Z");
        a.name = Some("fix-march".into());
        a.rate = Some(5);
        let (mut b, n) = build(&t, &s, &a, at("2026-03-28T00:00:00Z")).unwrap();
        assert_eq!(b.metadata.name.as_deref(), Some("fix-march"));
        assert_eq!(b.metadata.generate_name, None);
        b.status = Some(BackfillStatus {
            phase: BackfillPhase::Failed,
            total: 3,
            failed: 3,
            ..BackfillStatus::default()
        });
        let out = render(&b, n, a.rate, Format::Json).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["name"], json!("fix-march"));
        assert_eq!(v["rate"], json!(5));
        assert_eq!(v["maxOccurrences"], json!(1000));
        assert_eq!(v["status"]["phase"], json!("Failed"));
        assert_eq!(
            out.failure.as_deref(),
            Some("backfill fix-march failed: see kubectl describe backfill")
        );
    }
}
