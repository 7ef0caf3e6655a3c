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
    /// Requests sent while an earlier one with the same key was still unanswered (see
    /// [`overlapping`]).
    pub overlapping: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "expected={} delivered={} lost={} duplicated={} repeats={} faults={} worst_lag_ms={} overlapping={}",
            self.expected,
            self.delivered,
            self.lost,
            self.duplicated,
            self.repeats,
            self.faults,
            self.worst_lag_ms,
            self.overlapping
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
    summary.overlapping = overlapping(records);
    summary
}

/// Requests whose key was called again while an earlier request with the same key was still
/// unanswered: per key, in arrival (`seq`) order, a request counts (once) when some earlier one's
/// `[received_at, answered_at]` reaches past its `received_at`. Faults count like answers (a reset
/// request ends when it was reset), except a "timeout" fault: the backend holds it far past the
/// caller's timeout, so the caller has given up on it (a call it no longer has in flight) long
/// before the backend drops it. One still in flight (`answered_at` unset) is open-ended.
/// Records without a key or with unreadable times are left out.
pub fn overlapping(records: &[Record]) -> usize {
    let time = |t: &str| DateTime::parse_from_rfc3339(t).ok().map(|t| t.to_utc());
    // Per key: (seq, received, answered) of each call.
    type Call = (u64, DateTime<Utc>, DateTime<Utc>);
    let mut by_key: HashMap<&str, Vec<Call>> = HashMap::new();
    for r in records {
        let Some(key) = r.key.as_deref() else {
            continue;
        };
        if r.fault.as_deref() == Some("timeout") {
            continue;
        }
        let Some(received) = time(&r.received_at) else {
            continue;
        };
        let answered = match r.answered_at.as_deref() {
            None => DateTime::<Utc>::MAX_UTC,
            Some(t) => match time(t) {
                Some(t) => t,
                None => continue,
            },
        };
        by_key
            .entry(key)
            .or_default()
            .push((r.seq, received, answered));
    }
    by_key
        .values_mut()
        .map(|calls| {
            calls.sort_unstable_by_key(|(seq, ..)| *seq);
            let mut open_until: Option<DateTime<Utc>> = None;
            let mut count = 0;
            for (_, received, answered) in calls.iter() {
                if open_until.is_some_and(|until| until > *received) {
                    count += 1;
                }
                open_until = open_until.max(Some(*answered));
            }
            count
        })
        .sum()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, key: Option<&str>, received: &str, answered: Option<&str>) -> Record {
        let at = |ms: &str| format!("2026-01-01T00:00:{ms}Z");
        Record {
            seq,
            path: "/api/tasks".into(),
            key: key.map(str::to_owned),
            user_id: None,
            namespace: None,
            accepted: false,
            fault: None,
            received_at: if received.is_empty() {
                String::new()
            } else {
                at(received)
            },
            answered_at: answered.map(at),
            scheduled_at: None,
            due_at: None,
            lag_ms: None,
            traceparent: None,
        }
    }

    #[test]
    fn overlapping_counts_calls_made_while_the_key_was_in_flight() {
        let records = vec![
            // a: the second call comes while the first is held; the third after both answers.
            // Out of order on purpose: arrival is seq.
            rec(2, Some("a"), "00.500", Some("00.600")),
            rec(1, Some("a"), "00.000", Some("01.000")),
            rec(3, Some("a"), "01.500", Some("01.600")),
            // b: a dropped request never answered (still hanging): both later calls overlap it.
            rec(4, Some("b"), "00.000", None),
            rec(5, Some("b"), "05.000", Some("05.100")),
            rec(6, Some("b"), "06.000", Some("06.100")),
            // c: answered the very moment the next one arrived is not an overlap.
            rec(7, Some("c"), "00.000", Some("00.100")),
            rec(8, Some("c"), "00.100", Some("00.200")),
            // Another key in flight at the same time is not an overlap either.
            rec(9, Some("d"), "00.550", Some("09.000")),
            // Without a key, or without a readable arrival: left out.
            rec(10, None, "00.000", None),
            rec(11, None, "00.100", None),
            rec(12, Some("e"), "", None),
            rec(13, Some("e"), "", None),
        ];
        assert_eq!(overlapping(&records), 3);
        assert_eq!(overlapping(&records[..3]), 1);
        assert_eq!(overlapping(&[]), 0);
        let s = check(&records, &HashMap::new(), 0);
        assert_eq!(s.overlapping, 3);
        assert!(
            s.to_string().ends_with(" worst_lag_ms=0 overlapping=3"),
            "{s}"
        );
    }

    /// A request the backend held past the caller's timeout ("timeout" fault) is one the caller
    /// gave up on: its retry is no overlap.
    #[test]
    fn a_retry_after_a_timeout_fault_is_no_overlap() {
        let mut hung = rec(1, Some("a"), "00.000", Some("59.000"));
        hung.fault = Some("timeout".into());
        let retry = rec(2, Some("a"), "03.000", Some("03.100"));
        assert_eq!(overlapping(&[hung.clone(), retry.clone()]), 0);
        hung.fault = None;
        assert_eq!(overlapping(&[hung, retry]), 1);
    }
}
