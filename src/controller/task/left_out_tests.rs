//! The side table of what the watch cache leaves out of a task: counts, conditions, versions.
#![allow(clippy::unwrap_used, clippy::panic)]
use super::*;
use crate::api::{OccurrenceRecord, RecurringTaskStatus};
use crate::controller::task::occurrence_key;
use crate::controller::{conditions, reason};
use chrono::{TimeZone, Utc};
use serde_json::json;

const UID_A: &str = "3f1c8a2e-5b7d-4c9a-8e21-6d0f4b9a7c13";

fn task(uid: &str, rv: &str, records: usize) -> RecurringTask {
    let mut task: RecurringTask = serde_json::from_value(json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
        "metadata": {"name": uid, "namespace": "ns", "uid": uid, "resourceVersion": rv},
        "spec": {"userId": "u", "title": "t", "schedule": {"every": "1h"}}
    }))
    .unwrap();
    let record: OccurrenceRecord = serde_json::from_value(json!({
        "nominal": "2026-12-05T00:00:00Z", "due": "2026-12-05T00:00:00Z",
        "idempotencyKey": "k", "outcome": "Delivered",
        "finishedAt": "2026-12-05T00:00:01Z", "attempts": 1
    }))
    .unwrap();
    task.status = Some(RecurringTaskStatus {
        history: vec![record; records],
        ..Default::default()
    });
    task
}

/// `task` with the conditions recur gives a scheduled task, `message` as Ready's.
fn with_conditions(mut task: RecurringTask, message: &str) -> RecurringTask {
    let now = Utc.with_ymd_and_hms(2026, 12, 5, 0, 0, 0).unwrap();
    let status = task.status.get_or_insert_with(Default::default);
    conditions(&mut status.conditions, Some(3), now)
        .ready(true, reason::SCHEDULED, message)
        .valid();
    task
}

fn apply(left_out: &LeftOut, task: RecurringTask) -> RecurringTask {
    let mut event = Event::Apply(task);
    left_out.take_from(&mut event);
    let Event::Apply(task) = event else {
        unreachable!()
    };
    task
}

fn json(task: &RecurringTask) -> serde_json::Value {
    serde_json::to_value(task).unwrap()
}

fn texts(left_out: &LeftOut) -> usize {
    left_out.inner.lock().unwrap().shared.texts.len()
}

#[test]
fn the_cache_gets_no_history_and_the_count_holds_for_that_version_only() {
    let left_out = LeftOut::default();
    let cached = apply(&left_out, task("a", "7", 3));
    assert!(cached.status.as_ref().unwrap().history.is_empty());
    assert_eq!(left_out.held(&cached), Some(3));
    // Another version of the same task (an older snapshot, or one newer than the count).
    assert_eq!(left_out.held(&task("a", "6", 0)), None);
    let newer = apply(&left_out, task("a", "8", 4));
    assert_eq!(left_out.held(&newer), Some(4));
    assert_eq!(left_out.held(&cached), None);
    // Without a status: nothing held.
    let mut fresh = task("b", "1", 0);
    fresh.status = None;
    assert_eq!(left_out.held(&apply(&left_out, fresh)), Some(0));
}

#[test]
fn the_history_field_is_named_as_serialised() {
    let status = serde_json::to_value(task("a", "1", 1).status).unwrap();
    assert!(
        status
            .get(super::super::cached_history::HISTORY)
            .is_some_and(|h| h.is_array())
    );
}

#[test]
fn deleted_tasks_leave_nothing_whether_seen_deleted_or_missing_from_a_relist() {
    let left_out = LeftOut::default();
    apply(&left_out, task("a", "1", 1));
    apply(&left_out, task("b", "1", 1));
    apply(&left_out, task("c", "1", 1));
    left_out.take_from(&mut Event::Delete(task("a", "2", 1)));
    assert_eq!(left_out.len(), 2);
    // A relist that no longer finds "c": deleted while the watch was down.
    left_out.take_from(&mut Event::Init);
    let mut b = Event::InitApply(task("b", "3", 2));
    left_out.take_from(&mut b);
    // Until the list is complete, the old counts stay (the cache still shows the old list).
    assert_eq!(left_out.held(&task("c", "1", 0)), Some(1));
    left_out.take_from(&mut Event::InitDone);
    assert_eq!(left_out.len(), 1);
    assert_eq!(left_out.held(&task("b", "3", 0)), Some(2));
}

#[test]
fn the_cache_gets_no_conditions_and_reconcile_gets_them_back_for_that_version_only() {
    let left_out = LeftOut::default();
    let whole = with_conditions(task(UID_A, "7", 0), "the next occurrence is scheduled");
    assert_eq!(whole.status.as_ref().unwrap().conditions.len(), 2);
    let cached = apply(&left_out, whole.clone());
    assert!(cached.status.as_ref().unwrap().conditions.is_empty());
    let Restored::Whole(restored) = left_out.restore(&cached) else {
        panic!("the conditions were kept");
    };
    assert_eq!(json(&restored), json(&whole), "every field back as it was");
    assert!(left_out.is_ready(&cached));
    // Another version: the table cannot say what its conditions are.
    let mut other = cached.clone();
    other.metadata.resource_version = Some("8".into());
    assert!(matches!(left_out.restore(&other), Restored::Unknown));
    // An object that still has its conditions, or has no status, is used as it is.
    assert!(matches!(left_out.restore(&whole), Restored::AsCached));
    let mut bare = task("b", "1", 0);
    bare.status = None;
    assert!(matches!(left_out.restore(&bare), Restored::AsCached));
}

/// `task` with a pending occurrence and a last one, each keyed `key(nominal)`.
fn with_keys(
    mut task: RecurringTask,
    key: impl Fn(chrono::DateTime<Utc>) -> String,
) -> RecurringTask {
    let last = Utc.with_ymd_and_hms(2026, 12, 5, 0, 0, 0).unwrap();
    let next = last + chrono::TimeDelta::hours(1);
    let status = task.status.get_or_insert_with(Default::default);
    status.next_occurrence = Some(
        serde_json::from_value(json!({
            "nominal": next, "due": next, "idempotencyKey": key(next), "attempts": 0
        }))
        .unwrap(),
    );
    status.last_occurrence = Some(
        serde_json::from_value(json!({
            "nominal": last, "due": last, "idempotencyKey": key(last), "outcome": "Delivered",
            "finishedAt": last, "attempts": 1, "backendId": "7"
        }))
        .unwrap(),
    );
    task
}

fn keys(task: &RecurringTask) -> (&str, &str) {
    let status = task.status.as_ref().unwrap();
    (
        &status.next_occurrence.as_ref().unwrap().idempotency_key,
        &status.last_occurrence.as_ref().unwrap().idempotency_key,
    )
}

/// The keys a task's UID and instants give stay out of the cache, whether its conditions go
/// too or stay; reconcile gets them back for that version only.
#[test]
fn derived_keys_leave_the_cache_and_come_back_for_that_version_only() {
    let left_out = LeftOut::default();
    let derived = |t| occurrence_key(UID_A, t);
    let whole = with_keys(with_conditions(task(UID_A, "7", 2), "scheduled"), derived);
    let cached = apply(&left_out, whole.clone());
    assert_eq!(keys(&cached), ("", ""));
    let Restored::Whole(restored) = left_out.restore(&cached) else {
        panic!("the keys were kept");
    };
    let mut expected = whole.clone();
    expected.status.as_mut().unwrap().history.clear();
    assert_eq!(
        json(&restored),
        json(&expected),
        "every field back as it was"
    );
    let mut other = cached.clone();
    other.metadata.resource_version = Some("8".into());
    assert!(matches!(left_out.restore(&other), Restored::Unknown));

    // The conditions kept in the object (no condition to share): the keys still go and come.
    let bare = with_keys(task(UID_A, "9", 0), derived);
    let cached = apply(&left_out, bare.clone());
    assert_eq!(keys(&cached), ("", ""));
    assert!(matches!(left_out.restore(&cached), Restored::Whole(w) if json(&w) == json(&bare)));
}

/// A key the UID and instant do not give (a manual run's, one written by hand, another task's)
/// stays in the cached object as written; so does an empty one, which nothing can restore.
#[test]
fn keys_of_another_form_stay_in_the_cache() {
    let left_out = LeftOut::default();
    for key in [
        "manual-run-1",
        "",
        &occurrence_key("another-uid", Utc::now()),
    ] {
        let whole = with_keys(task(UID_A, "7", 0), |_| key.to_string());
        let cached = apply(&left_out, whole.clone());
        assert_eq!(keys(&cached), (key, key));
        assert!(matches!(
            left_out.inner.lock().unwrap().by_uid.values().next(),
            Some(Entry {
                keys: Keys {
                    next: false,
                    last: false
                },
                ..
            })
        ));
        match left_out.restore(&cached) {
            Restored::AsCached => {}
            Restored::Whole(w) => assert_eq!(json(&w), json(&whole)),
            Restored::Unknown => panic!("the table has this version"),
        }
    }
}

#[test]
fn tasks_share_their_condition_strings() {
    let left_out = LeftOut::default();
    for i in 0..100 {
        let uid = format!("{UID_A:.30}{i:06}");
        apply(&left_out, with_conditions(task(&uid, "7", 0), "scheduled"));
    }
    // Ready, True, Scheduled, "scheduled", Stalled, False, Valid, "the spec is valid".
    assert_eq!(texts(&left_out), 8);
    let inner = left_out.inner.lock().unwrap();
    assert_eq!(inner.shared.shapes.len(), 1);
    assert!(
        inner
            .by_uid
            .values()
            .all(|e| matches!(e.conditions, Some(Kept::Together { .. })))
    );
}

#[test]
fn conditions_that_changed_apart_come_back_each_with_its_own_instant() {
    let left_out = LeftOut::default();
    let mut whole = with_conditions(task(UID_A, "7", 0), "scheduled");
    let later = Utc.with_ymd_and_hms(2026, 12, 5, 3, 0, 0).unwrap();
    let status = whole.status.as_mut().unwrap();
    status.conditions[1].last_transition_time = Time(crate::controller::to_jiff(later));
    status.conditions[1].observed_generation = Some(4);
    let cached = apply(&left_out, whole.clone());
    assert!(matches!(
        left_out.inner.lock().unwrap().by_uid.values().next(),
        Some(Entry {
            conditions: Some(Kept::Apart { .. }),
            ..
        })
    ));
    let Restored::Whole(restored) = left_out.restore(&cached) else {
        panic!("the conditions were kept");
    };
    assert_eq!(json(&restored), json(&whole));
}

#[test]
fn a_task_whose_strings_find_the_table_full_keeps_its_conditions() {
    let left_out = LeftOut::default();
    for i in 0..MAX_SHARED {
        left_out
            .inner
            .lock()
            .unwrap()
            .shared
            .text_index(&format!("t{i}"));
    }
    let whole = with_conditions(task(UID_A, "7", 1), "a message never seen");
    let cached = apply(&left_out, whole.clone());
    let status = cached.status.as_ref().unwrap();
    assert_eq!(status.conditions, whole.status.as_ref().unwrap().conditions);
    assert!(status.history.is_empty(), "the history still goes");
    assert!(matches!(left_out.restore(&cached), Restored::AsCached));
    assert!(left_out.is_ready(&cached));
    // One whose strings are all known still gives them up.
    let known = with_conditions(task("b", "1", 0), "t0");
    let mut known_status = known.status.clone().unwrap();
    for c in &mut known_status.conditions {
        c.type_ = "t1".into();
        c.status = "t2".into();
        c.reason = "t3".into();
        c.message = "t4".into();
    }
    let mut known = known;
    known.status = Some(known_status);
    let cached = apply(&left_out, known.clone());
    assert!(cached.status.as_ref().unwrap().conditions.is_empty());
    assert!(matches!(left_out.restore(&cached), Restored::Whole(w) if json(&w) == json(&known)));
    assert!(!left_out.is_ready(&cached));
}

#[test]
fn uids_and_versions_are_equal_exactly_when_their_strings_are() {
    assert_eq!(Uid::of(UID_A), Uid::of(UID_A));
    assert!(matches!(Uid::of(UID_A), Uid::Uuid(_)));
    let upper = UID_A.to_uppercase();
    assert!(matches!(Uid::of(&upper), Uid::Other(_)));
    assert_ne!(Uid::of(&upper), Uid::of(UID_A));
    let moved = format!("{}-{}", &UID_A[..7], &UID_A[8..]);
    assert_ne!(Uid::of(&moved), Uid::of(UID_A));
    assert!(matches!(Uid::of("not-a-uuid"), Uid::Other(_)));
    assert!(matches!(Uid::of(&UID_A.replace('-', "x")), Uid::Other(_)));

    assert!(Version::of("7").is("7"));
    assert!(matches!(Version::of("7"), Version::Number(7)));
    assert!(!Version::of("7").is("007"));
    assert!(!Version::of("007").is("7"));
    assert!(Version::of("007").is("007"));
    assert!(Version::of("abc").is("abc"));
    assert!(!Version::of("abc").is("7"));
    assert!(!Version::of("18446744073709551616").is("0"));
    assert!(Version::of("0").is("0"));
    assert!(!Version::of("+7").is("7"));
    assert!(Version::of("+7").is("+7"));
}

/// The labels and annotations tools put on every object stay out of the cache; the run-now
/// annotation stays in, and so do a task's labels when it has reminders to give them to.
#[test]
fn only_the_metadata_a_reconcile_reads_is_cached() {
    use crate::api::RUN_NOW_ANNOTATION;
    let left_out = LeftOut::default();
    let mut labelled = task(UID_A, "1", 0);
    labelled.metadata.labels = Some(
        [
            (
                "app.kubernetes.io/managed-by".to_string(),
                "Helm".to_string(),
            ),
            ("recur.dev/shard".to_string(), "0".to_string()),
        ]
        .into(),
    );
    labelled.metadata.annotations = Some(
        [
            ("meta.helm.sh/release-name".to_string(), "app".to_string()),
            (RUN_NOW_ANNOTATION.to_string(), "run-1".to_string()),
        ]
        .into(),
    );
    let cached = apply(&left_out, labelled.clone());
    assert_eq!(cached.metadata.labels, None);
    assert_eq!(
        cached.metadata.annotations,
        Some([(RUN_NOW_ANNOTATION.to_string(), "run-1".to_string())].into())
    );

    let mut with_reminders = labelled.clone();
    with_reminders.spec.reminders = serde_json::from_value(json!([{"before": "15m"}])).unwrap();
    let cached = apply(&left_out, with_reminders.clone());
    assert_eq!(cached.metadata.labels, with_reminders.metadata.labels);

    let mut foreign_only = labelled;
    foreign_only
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .remove(RUN_NOW_ANNOTATION);
    let cached = apply(&left_out, foreign_only);
    assert_eq!(cached.metadata.annotations, None, "no empty map is kept");
}
