//! The exactly-once checker: compares what the recording backend received with what the
//! schedules say should have arrived.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::fmt;

use chrono::{DateTime, Utc};

use super::stack::Record;

/// The figures of one run; `Display` is the summary line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Occurrences the schedules say should have arrived.
    pub expected: usize,
    /// Expected occurrences that arrived (accepted under their key).
    pub delivered: usize,
    /// Expected occurrences that never arrived.
    pub lost: usize,
    /// Occurrences accepted more than once: the same nominal instant under two keys, the same key
    /// accepted twice, or a key the schedule never produced.
    pub duplicated: usize,
    /// Requests that repeated an already accepted key (absorbed by idempotency).
    pub repeats: usize,
    /// Faults injected.
    pub faults: usize,
    /// Worst firing lag (arrival minus due) of an accepted occurrence.
    pub worst_lag_ms: i64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "expected={} delivered={} lost={} duplicated={} repeats={} faults={} worst_lag_ms={}",
            self.expected,
            self.delivered,
            self.lost,
            self.duplicated,
            self.repeats,
            self.faults,
            self.worst_lag_ms
        )
    }
}

/// The key recur derives for a task's occurrence (independently re-stated here on purpose).
pub fn task_key(uid: &str, nominal: DateTime<Utc>) -> String {
    format!("rt-{uid}-{}", nominal.format("%Y%m%dT%H%M%SZ"))
}

/// `expected`: per task UID, the nominal instants that must have arrived.
pub fn check(
    records: &[Record],
    expected: &HashMap<String, Vec<DateTime<Utc>>>,
    faults: usize,
) -> Summary {
    let expected_keys: HashSet<String> = expected
        .iter()
        .flat_map(|(uid, times)| times.iter().map(move |t| task_key(uid, *t)))
        .collect();
    let mut accepted: HashMap<&str, usize> = HashMap::new();
    let mut per_occurrence: HashMap<(String, String), HashSet<&str>> = HashMap::new();
    let mut summary = Summary {
        expected: expected_keys.len(),
        faults,
        ..Summary::default()
    };
    let mut seen: HashSet<&str> = HashSet::new();
    for r in records {
        let Some(key) = r.key.as_deref() else {
            continue;
        };
        let Some(uid) = expected
            .keys()
            .find(|uid| key.starts_with(&format!("rt-{uid}-")))
        else {
            continue;
        };
        if r.accepted {
            *accepted.entry(key).or_default() += 1;
            if let Some(at) = &r.scheduled_at {
                per_occurrence
                    .entry((uid.clone(), at.clone()))
                    .or_default()
                    .insert(key);
            }
            summary.worst_lag_ms = summary.worst_lag_ms.max(r.lag_ms.unwrap_or(0));
        } else if seen.contains(key) {
            summary.repeats += 1;
        }
        seen.insert(key);
    }
    summary.delivered = expected_keys
        .iter()
        .filter(|k| accepted.contains_key(k.as_str()))
        .count();
    summary.lost = summary.expected - summary.delivered;
    let twice: usize = accepted.values().map(|n| n.saturating_sub(1)).sum();
    let two_keys: usize = per_occurrence
        .values()
        .map(|keys| keys.len().saturating_sub(1))
        .sum();
    // Keys no schedule produced are only counted when they fall inside the checked span.
    let foreign = accepted
        .keys()
        .filter(|k| !expected_keys.contains(**k) && within_span(k, expected))
        .count();
    summary.duplicated = twice + two_keys + foreign;
    summary
}

fn within_span(key: &str, expected: &HashMap<String, Vec<DateTime<Utc>>>) -> bool {
    let Some(at) = key.rsplit('-').next() else {
        return false;
    };
    let Ok(at) = chrono::NaiveDateTime::parse_from_str(at.trim_end_matches('Z'), "%Y%m%dT%H%M%S")
    else {
        return false;
    };
    let at = at.and_utc();
    expected
        .iter()
        .filter(|(uid, _)| key.starts_with(&format!("rt-{uid}-")))
        .any(|(_, times)| {
            times.first().is_some_and(|f| at >= *f) && times.last().is_some_and(|l| at <= *l)
        })
}
