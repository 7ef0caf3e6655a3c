//! Reminders, leader election and metrics end to end on the real control plane.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use kube::api::{Api, DeleteParams, ListParams, PostParams};
use recur::api::{Phase, RecurringTask, Reminder, TASK_LABEL, condition};
use serde_json::json;
use support::stack::{ELECTION, Stack};
use support::{TestNamespace, client, wait_for, wait_for_value};

fn reminder(
    name: &str,
    user: &str,
    due: chrono::DateTime<chrono::Utc>,
    extra: serde_json::Value,
) -> Reminder {
    let mut body = json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "Reminder", "metadata": {"name": name},
        "spec": {"userId": user, "title": "Dentist", "message": "bring the card", "dueAt": due.to_rfc3339()}
    });
    for (k, v) in extra.as_object().unwrap() {
        body["spec"][k] = v.clone();
    }
    serde_json::from_value(body).unwrap()
}

fn task(name: &str, user: &str, extra: serde_json::Value) -> RecurringTask {
    let mut body = json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask", "metadata": {"name": name},
        "spec": {"userId": user, "title": format!("task {name}"), "schedule": {"every": "1h"}}
    });
    for (k, v) in extra.as_object().unwrap() {
        body["spec"][k] = v.clone();
    }
    serde_json::from_value(body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_reminder_is_delivered_once_at_its_due_time_then_the_backend_is_told() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-rem").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&[]).await;
    let api: Api<Reminder> = Api::namespaced(client.clone(), ns.name());
    let due = chrono::Utc::now() + chrono::Duration::seconds(3);
    let rem = api
        .create(
            &PostParams::default(),
            &reminder("dentist", "user-42", due, json!({"taskId": "1001"})),
        )
        .await
        .unwrap();
    let uid = rem.metadata.uid.unwrap();

    let status = wait_for_value(Duration::from_secs(30), "phase Sent", || async {
        api.get("dentist")
            .await
            .unwrap()
            .status
            .filter(|s| s.phase == Some(Phase::Sent))
    })
    .await;
    let key = status.idempotency_key.clone().unwrap();
    assert!(key.starts_with(&format!("rem-{uid}-")));
    let notes = stack.accepted("/api/notifications").await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].key.as_deref(), Some(key.as_str()));
    assert_eq!(notes[0].user_id.as_deref(), Some("user-42"));
    let received: chrono::DateTime<chrono::Utc> = notes[0].received_at.parse().unwrap();
    assert!(
        received >= due,
        "delivered before it was due: {received} < {due}"
    );
    let sent = stack.accepted("/api/tasks/1001/reminder-sent").await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].seq > notes[0].seq,
        "reminder-sent must follow the notification"
    );
    assert!(status.sent_at.unwrap() >= status.notified_at.unwrap());
    assert_eq!(
        condition(&status.conditions, "Ready").unwrap().reason,
        "Sent"
    );
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_for_another_users_task_is_refused_and_never_delivered() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-iso").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&[]).await;
    let tasks: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    tasks
        .create(&PostParams::default(), &task("alices", "alice", json!({})))
        .await
        .unwrap();
    let api: Api<Reminder> = Api::namespaced(client.clone(), ns.name());
    let due = chrono::Utc::now() + chrono::Duration::seconds(1);
    api.create(
        &PostParams::default(),
        &reminder(
            "sneaky",
            "mallory",
            due,
            json!({"taskRef": {"name": "alices"}}),
        ),
    )
    .await
    .unwrap();
    let status = wait_for_value(
        Duration::from_secs(20),
        "the reminder to be refused",
        || async {
            api.get("sneaky")
                .await
                .unwrap()
                .status
                .filter(|s| s.phase == Some(Phase::Failed))
        },
    )
    .await;
    let ready = condition(&status.conditions, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "UserMismatch")
    );
    assert!(ready.message.contains("another user"), "{}", ready.message);
    // Past its due time and still nothing was sent.
    wait_for(Duration::from_secs(10), "the due time to pass", || async {
        chrono::Utc::now() > due + chrono::Duration::seconds(2)
    })
    .await;
    assert!(stack.accepted("/api/notifications").await.is_empty());
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_reminders_fire_before_each_occurrence_and_are_garbage_collected_with_the_task() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-trem").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&[]).await;
    let tasks: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    let t = tasks
        .create(
            &PostParams::default(),
            &task(
                "standup",
                "user-42",
                json!({"schedule": {"every": "6s"}, "reminders": [{"before": "2s"}]}),
            ),
        )
        .await
        .unwrap();
    let uid = t.metadata.uid.unwrap();
    let rems: Api<Reminder> = Api::namespaced(client.clone(), ns.name());
    let lp = ListParams::default().labels(&format!("{TASK_LABEL}=standup"));
    // Two occurrences delivered, each preceded by its reminder.
    wait_for(
        Duration::from_secs(45),
        "two occurrences with reminders",
        || async {
            let tasks_done: Vec<_> = stack
                .accepted("/api/tasks")
                .await
                .into_iter()
                .filter(|r| r.key.as_deref().is_some_and(|k| k.contains(&uid)))
                .collect();
            tasks_done.len() >= 2
        },
    )
    .await;
    let records = stack.accepted("/api/notifications").await;
    let occurrences: Vec<_> = stack
        .accepted("/api/tasks")
        .await
        .into_iter()
        .filter(|r| r.key.as_deref().is_some_and(|k| k.contains(&uid)))
        .collect();
    for occ in &occurrences[..2] {
        let reminder = records.iter().find(|r| {
            r.due_at
                .as_deref()
                .and_then(|d| d.parse::<chrono::DateTime<chrono::Utc>>().ok())
                .zip(
                    occ.due_at
                        .as_deref()
                        .and_then(|d| d.parse::<chrono::DateTime<chrono::Utc>>().ok()),
                )
                .is_some_and(|(rd, od)| od - rd == chrono::Duration::seconds(2))
        });
        let reminder = reminder.unwrap_or_else(|| {
            panic!("no reminder 2s before occurrence {occ:?}; reminders: {records:?}")
        });
        assert!(
            reminder.seq < occ.seq,
            "reminder arrived after its occurrence"
        );
    }
    let owned = rems.list(&lp).await.unwrap().items;
    assert!(!owned.is_empty());
    for r in &owned {
        let owner = &r.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("RecurringTask", "standup", uid.as_str())
        );
        assert_eq!(r.spec.user_id, "user-42");
    }
    // Deleting the task deletes its reminders (kube-controller-manager's garbage collector).
    tasks
        .delete("standup", &DeleteParams::background())
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(60),
        "owned reminders to be garbage-collected",
        || async { rems.list(&lp).await.unwrap().items.is_empty() },
    )
    .await;
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_leader_election_deliver_each_occurrence_once_and_hand_over() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-lease").await;
    let mut stack = Stack::start(ns.name()).await;
    stack.start_operator(&ELECTION).await;
    stack.start_operator(&ELECTION).await;
    let tasks: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    let t = tasks
        .create(&PostParams::default(), &task("ha", "user-42", json!({"schedule": {"every": "1s"}, "catchUp": {"policy": "All", "maxOccurrences": 1000}})))
        .await
        .unwrap();
    let uid = t.metadata.uid.unwrap();

    wait_for(
        Duration::from_secs(30),
        "deliveries by the leader",
        || async { task_keys(&stack, &uid).await.len() >= 3 },
    )
    .await;
    // Exactly one replica reports leadership.
    let leader = wait_for_value(Duration::from_secs(10), "one leader", || async {
        let mut leaders = vec![];
        for i in 0..2 {
            let (_, m) = stack.operator_get(i, "/metrics").await;
            if m.lines()
                .any(|l| l.starts_with("recur_leader") && l.trim_end().ends_with(" 1"))
            {
                leaders.push(i);
            }
        }
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await;
    let standby = 1 - leader;
    let (code, _) = stack.operator_get(standby, "/health/ready").await;
    assert_eq!(code, 200, "a standby replica must be ready");
    stack.kill_operator(leader);
    let killed = std::time::Instant::now();
    let before = task_keys(&stack, &uid).await.len();
    wait_for(
        Duration::from_secs(20),
        "the standby to take over and deliver",
        || async { task_keys(&stack, &uid).await.len() > before + 2 },
    )
    .await;
    let handover = killed.elapsed();
    assert!(
        handover < Duration::from_secs(20),
        "handover took {handover:?}"
    );
    eprintln!("handover after SIGKILL of the leader: {handover:?} (lease duration 8s)");
    assert_once_each_without_gap(&task_keys(&stack, &uid).await, &uid);
    ns.cleanup().await;
}

/// `--shards 4` over two replicas: each takes two shards and delivers for its tasks only; when
/// one is killed the other takes its shards over. Every occurrence is accepted once, with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_shards_and_one_takes_over_the_others() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-shards").await;
    let mut stack = Stack::start(ns.name()).await;
    let sharded: Vec<&str> = ELECTION.iter().copied().chain(["--shards", "4"]).collect();
    let (a, b) = (
        stack.spawn_operator(&sharded),
        stack.spawn_operator(&sharded),
    );
    stack.wait_ready(a).await;
    stack.wait_ready(b).await;
    let tasks: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    let mut uids = vec![];
    for i in 0..8 {
        let spec = json!({"schedule": {"every": "1s"}, "catchUp": {"policy": "All", "maxOccurrences": 1000}});
        let t = tasks
            .create(
                &PostParams::default(),
                &task(&format!("s{i}"), "user-42", spec),
            )
            .await
            .unwrap();
        uids.push(t.metadata.uid.unwrap());
    }

    let shares = wait_for_value(Duration::from_secs(60), "two shards each", || async {
        let held = [
            metric(&stack, a, "recur_shards_held").await,
            metric(&stack, b, "recur_shards_held").await,
        ];
        (held == [Some(2.0), Some(2.0)]).then_some(held)
    })
    .await;
    eprintln!("shards held: {shares:?}");
    wait_for(Duration::from_secs(30), "every task delivered", || async {
        let accepted = stack.accepted("/api/tasks").await;
        uids.iter().all(|uid| {
            accepted
                .iter()
                .filter(|r| r.key.as_deref().is_some_and(|k| k.contains(uid.as_str())))
                .count()
                >= 3
        })
    })
    .await;
    // Both replicas deliver: neither holds every shard.
    for i in [a, b] {
        let delivered = metric(
            &stack,
            i,
            "recur_occurrences_total{kind=\"RecurringTask\",outcome=\"delivered\"}",
        )
        .await;
        assert!(
            delivered.is_some_and(|n| n > 0.0),
            "replica {i} delivered nothing"
        );
    }

    stack.kill_operator(a);
    let killed = std::time::Instant::now();
    let before = stack.accepted("/api/tasks").await.len();
    wait_for_value(
        Duration::from_secs(40),
        "the survivor to hold all four",
        || async { (metric(&stack, b, "recur_shards_held").await == Some(4.0)).then_some(()) },
    )
    .await;
    let taken_over = killed.elapsed();
    wait_for(
        Duration::from_secs(30),
        "deliveries of every task after the takeover",
        || async {
            let accepted = stack.accepted("/api/tasks").await;
            accepted.len() > before + 3 * uids.len()
                && uids.iter().all(|uid| {
                    accepted[before..]
                        .iter()
                        .any(|r| r.key.as_deref().is_some_and(|k| k.contains(uid.as_str())))
                })
        },
    )
    .await;
    eprintln!(
        "all four shards held {taken_over:?} after SIGKILL of the other replica (lease duration 8s)"
    );

    for uid in &uids {
        assert_once_each_without_gap(&task_keys(&stack, uid).await, uid);
    }
    ns.cleanup().await;
}

/// Every key of task `uid` accepted once, and (`catchUp: All`, every second) consecutive
/// seconds from the first to the last.
fn assert_once_each_without_gap(keys: &[String], uid: &str) {
    let distinct: HashSet<_> = keys.iter().collect();
    assert_eq!(
        distinct.len(),
        keys.len(),
        "task {uid}: an occurrence was accepted twice"
    );
    let mut sorted = keys.to_vec();
    sorted.sort();
    for pair in sorted.windows(2) {
        assert_eq!(
            key_instant(&pair[1]) - key_instant(&pair[0]),
            chrono::Duration::seconds(1),
            "task {uid}: gap between {} and {}",
            pair[0],
            pair[1]
        );
    }
}

/// The nominal instant a task's key ends with.
fn key_instant(key: &str) -> chrono::NaiveDateTime {
    chrono::NaiveDateTime::parse_from_str(
        key.rsplit('-').next().unwrap().trim_end_matches('Z'),
        "%Y%m%dT%H%M%S",
    )
    .unwrap()
}

/// The value of the sample `name` (with its labels, if any) of operator `i`, if it shows one.
async fn metric(stack: &Stack, i: usize, name: &str) -> Option<f64> {
    let (_, text) = stack.operator_get(i, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Keys of task `uid` the backend accepted, in arrival order.
async fn task_keys(stack: &Stack, uid: &str) -> Vec<String> {
    stack
        .accepted("/api/tasks")
        .await
        .into_iter()
        .filter_map(|r| r.key)
        .filter(|k| k.contains(uid))
        .collect()
}
