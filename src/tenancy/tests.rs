#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::json;

use super::*;
use crate::api::{
    Limits, PubSubGrant, PubSubTarget, RecurringTask, Reminder, TargetGrant, TenantPolicy,
    TenantPolicySpec, UserIdRule,
};
use crate::dapr::{AppId, Method};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn policy(name: &str, team: &str, spec: impl FnOnce(&mut TenantPolicySpec)) -> Arc<TenantPolicy> {
    let mut s = TenantPolicySpec {
        namespace_selector: LabelSelector {
            match_labels: Some(labels(&[("team", team)])),
            ..Default::default()
        },
        targets: vec![],
        pubsub: vec![],
        user_ids: None,
        limits: None,
    };
    spec(&mut s);
    Arc::new(TenantPolicy::new(name, s))
}

fn grant(ns: &str, app: &str, methods: &[&str]) -> TargetGrant {
    TargetGrant {
        namespace: ns.into(),
        app_id: app.into(),
        methods: methods.iter().map(|m| m.to_string()).collect(),
    }
}

fn team_a(policies: Vec<Arc<TenantPolicy>>) -> Effective {
    Effective::new(
        "team-a",
        labels(&[("team", "a"), ("recur.dev/user-id", "alice")]),
        policies,
    )
}

fn call(e: &Effective, app: &str, method: &str) -> Result<Resolved, Denial> {
    e.target(
        "spec.target",
        &AppId::new(app).unwrap(),
        &Method::new(method).unwrap(),
    )
}

fn task(spec: serde_json::Value) -> RecurringTask {
    let mut base = json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
        "metadata": {"name": "t", "namespace": "team-a"},
        "spec": {"userId": "alice", "title": "x", "schedule": {"cron": "* * * * *"}}
    });
    for (k, v) in spec.as_object().unwrap() {
        base["spec"][k] = v.clone();
    }
    serde_json::from_value(base).unwrap()
}

#[test]
fn plain_app_ids_mean_the_tenants_own_namespace() {
    let e = team_a(vec![]);
    let r = call(&e, "backend", "api/tasks").unwrap();
    assert_eq!(r.app_id().unwrap().as_str(), "backend.team-a");
    let r = call(&e, "backend.team-a", "anything/at/all").unwrap();
    assert_eq!(r.app_id().unwrap().as_str(), "backend.team-a");
}

#[test]
fn other_namespaces_are_refused_by_default_and_the_message_says_why() {
    let e = team_a(vec![]);
    let d = call(&e, "orders.payments", "admin/shutdown").unwrap_err();
    assert_eq!(d.rule, Rule::Targets);
    assert_eq!(d.field, "spec.target");
    assert!(
        d.message
            .contains("no TenantPolicy selects namespace team-a"),
        "{d}"
    );
    assert!(
        d.message.contains("\"orders\" of namespace payments"),
        "{d}"
    );
}

#[test]
fn grants_name_namespace_app_and_method_prefixes_by_whole_segments() {
    let p = policy("payments-clients", "a", |s| {
        s.targets = vec![
            grant("payments", "orders", &["api/orders"]),
            grant("shared", "*", &[]),
        ];
    });
    let e = team_a(vec![p]);
    assert_eq!(
        call(&e, "orders.payments", "api/orders")
            .unwrap()
            .app_id()
            .unwrap()
            .as_str(),
        "orders.payments"
    );
    call(&e, "orders.payments", "api/orders/7/items").unwrap();
    let d = call(&e, "orders.payments", "api/orders-admin").unwrap_err();
    assert!(
        d.message
            .contains("TenantPolicy \"payments-clients\" (rule targets)"),
        "{d}"
    );
    call(&e, "orders.payments", "admin/shutdown").unwrap_err();
    call(&e, "billing.payments", "api/orders").unwrap_err();
    call(&e, "anything.shared", "x/y").unwrap();
}

#[test]
fn a_policy_selecting_another_namespace_grants_nothing_here() {
    let p = policy("team-b", "b", |s| {
        s.targets = vec![grant("payments", "*", &[])]
    });
    let e = team_a(vec![p]);
    let d = call(&e, "orders.payments", "api/orders").unwrap_err();
    assert!(d.message.contains("no TenantPolicy selects"), "{d}");
}

#[test]
fn grants_add_up_across_policies() {
    let p1 = policy("one", "a", |s| s.targets = vec![grant("x", "app", &[])]);
    let p2 = policy("two", "a", |s| s.targets = vec![grant("y", "app", &[])]);
    let e = team_a(vec![p2, p1]);
    call(&e, "app.x", "m").unwrap();
    call(&e, "app.y", "m").unwrap();
    let d = call(&e, "app.z", "m").unwrap_err();
    assert!(d.message.contains("TenantPolicies \"one\", \"two\""), "{d}");
}

#[test]
fn user_ids_are_free_within_the_namespace_unless_a_policy_says_otherwise() {
    assert!(team_a(vec![]).user("spec.userId", "anyone").is_ok());
    let p = policy("users", "a", |s| {
        s.user_ids = Some(UserIdRule {
            allowed: vec!["svc-bot".into()],
            pattern: Some("team-a-[a-z]+".into()),
            from_namespace_label: Some("recur.dev/user-id".into()),
        })
    });
    let e = team_a(vec![p]);
    for ok in ["svc-bot", "team-a-bob", "alice"] {
        e.user("spec.userId", ok).unwrap();
    }
    // The pattern must match the whole id.
    for bad in [
        "mallory",
        "x-team-a-bob",
        "team-a-bob2",
        "team-a-",
        "alice ",
    ] {
        let d = e.user("spec.userId", bad).unwrap_err();
        assert_eq!(d.rule, Rule::UserIds);
        assert!(d.message.contains("TenantPolicy \"users\""), "{d}");
        assert!(d.message.contains("pattern \"team-a-[a-z]+\""), "{d}");
    }
}

#[test]
fn an_invalid_pattern_admits_no_one_by_itself() {
    let p = policy("broken", "a", |s| {
        s.user_ids = Some(UserIdRule {
            pattern: Some("(".into()),
            ..Default::default()
        })
    });
    assert!(team_a(vec![p]).user("spec.userId", "(").is_err());
}

#[test]
fn payloads_over_the_limit_are_refused_with_the_limit_and_its_source() {
    let big = "x".repeat(70 * 1024);
    let t = task(json!({"payload": {"blob": big}}));
    let d = team_a(vec![]).task(&t).unwrap_err();
    assert_eq!(d.rule, Rule::MaxPayloadBytes);
    assert_eq!(d.field, "spec.payload");
    assert!(d.message.contains("limit of 65536 bytes"), "{d}");
    assert!(d.message.contains("the default"), "{d}");
    let raise = policy("big", "a", |s| {
        s.limits = Some(Limits {
            max_payload_bytes: Some(128 * 1024),
            ..Default::default()
        })
    });
    team_a(vec![raise.clone()]).task(&t).unwrap();
    // The strictest limit of all selecting policies applies.
    let lower = policy("small", "a", |s| {
        s.limits = Some(Limits {
            max_payload_bytes: Some(1024),
            ..Default::default()
        })
    });
    let d = team_a(vec![raise, lower])
        .task(&task(json!({"payload": {"blob": "y".repeat(2000)}})))
        .unwrap_err();
    assert!(d.message.contains("TenantPolicy \"small\""), "{d}");
}

#[test]
fn a_task_is_checked_whole_including_its_reminders_targets() {
    let e = team_a(vec![]);
    assert_eq!(
        e.task(&task(json!({}))).unwrap().app_id().unwrap().as_str(),
        "backend.team-a"
    );
    let t = task(
        json!({"reminders": [{"before": "5m"}, {"before": "1m", "target": {"appId": "pager.ops"}}]}),
    );
    let d = e.task(&t).unwrap_err();
    assert_eq!(d.field, "spec.reminders[1].target");
}

#[test]
fn a_reminder_is_checked_and_resolved_in_its_namespace() {
    let rem: Reminder = serde_json::from_value(json!({
        "apiVersion": "recur.dev/v1alpha1", "kind": "Reminder",
        "metadata": {"name": "r", "namespace": "team-a"},
        "spec": {"userId": "alice", "title": "x", "dueAt": "2030-01-01T00:00:00Z"}
    }))
    .unwrap();
    let r = team_a(vec![]).reminder(&rem).unwrap();
    assert_eq!(r.app_id().unwrap().as_str(), "notification-service.team-a");
}

#[test]
fn limits_take_the_smallest_value_set() {
    let p1 = policy("one", "a", |s| {
        s.limits = Some(Limits {
            max_tasks: Some(10),
            occurrences_per_second: Some(50),
            ..Default::default()
        })
    });
    let p2 = policy("two", "a", |s| {
        s.limits = Some(Limits {
            max_tasks: Some(5),
            ..Default::default()
        })
    });
    let e = team_a(vec![p1, p2]);
    assert_eq!(e.max_tasks(), Some((5, "two")));
    assert_eq!(e.occurrences_per_second(), Some(50));
    assert_eq!(
        e.payload_limit(),
        (crate::api::DEFAULT_MAX_PAYLOAD_BYTES, None)
    );
}

fn topic(e: &Effective, name: &str, topic: &str) -> Result<Resolved, Denial> {
    e.topic(
        "spec.target.pubsub",
        &PubSubTarget {
            name: name.into(),
            topic: topic.into(),
        },
    )
}

#[test]
fn a_namespace_publishes_to_its_own_topics_only_by_default() {
    let e = team_a(vec![]);
    let r = topic(&e, "pubsub", "team-a.occurrences").unwrap();
    assert!(
        matches!(&r, Resolved::Publish { topic, .. } if topic.as_str() == "team-a.occurrences")
    );
    assert_eq!(r.app_id(), None);
    // Another tenant's topic, one that merely starts like ours, and the bare prefix.
    for other in [
        "team-b.occurrences",
        "team-ab.x",
        "team-a.",
        "team-a",
        "orders",
    ] {
        let d = topic(&e, "pubsub", other).unwrap_err();
        assert_eq!(
            (d.field.as_str(), d.rule),
            ("spec.target.pubsub", Rule::PubSub),
            "{other}"
        );
        assert!(
            d.message
                .contains("no TenantPolicy selects namespace team-a"),
            "{}",
            d.message
        );
        assert!(
            d.message.contains(r#"topics named "team-a.<name>""#),
            "{}",
            d.message
        );
    }
}

#[test]
fn pubsub_grants_name_components_and_topics_or_prefixes() {
    let p = policy("shared-events", "a", |s| {
        s.pubsub = vec![
            PubSubGrant {
                name: "kafka".into(),
                topics: vec!["billing.*".into(), "audit".into()],
            },
            PubSubGrant {
                name: "*".into(),
                topics: vec!["alerts".into()],
            },
        ]
    });
    let e = team_a(vec![p]);
    for ok in [
        ("kafka", "billing.invoices"),
        ("kafka", "audit"),
        ("redis", "alerts"),
        ("kafka", "alerts"),
    ] {
        assert!(topic(&e, ok.0, ok.1).is_ok(), "{ok:?}");
    }
    for refused in [
        ("redis", "billing.invoices"),
        ("kafka", "audit.x"),
        ("kafka", "billing"),
    ] {
        let d = topic(&e, refused.0, refused.1).unwrap_err();
        assert!(
            d.message
                .contains("not granted to namespace team-a by TenantPolicy \"shared-events\""),
            "{}",
            d.message
        );
    }
}

#[test]
fn a_task_publishing_is_resolved_to_its_topic_and_its_reminders_are_checked_too() {
    let e = team_a(vec![]);
    let t = task(json!({"target": {"pubsub": {"name": "pubsub", "topic": "team-a.ticks"}}}));
    assert!(matches!(e.task(&t).unwrap(), Resolved::Publish { .. }));
    let t = task(
        json!({"reminders": [{"before": "5m", "target": {"pubsub": {"name": "pubsub", "topic": "team-b.x"}}}]}),
    );
    let d = e.task(&t).unwrap_err();
    assert_eq!(d.field, "spec.reminders[0].target.pubsub");
    let t = task(json!({"target": {"pubsub": {"name": "Bad_Name", "topic": "team-a.x"}}}));
    let d = e.task(&t).unwrap_err();
    assert_eq!(
        (d.field.as_str(), d.rule),
        ("spec.target.pubsub", Rule::Malformed)
    );
}

#[test]
fn a_tasks_completion_topic_follows_the_topic_rule() {
    let e = team_a(vec![]);
    assert!(
        e.task(&task(json!({"completion": {"topic": "team-a.completed"}})))
            .is_ok()
    );
    let d = e
        .task(&task(json!({"completion": {"topic": "team-b.completed"}})))
        .unwrap_err();
    assert_eq!(
        (d.field.as_str(), d.rule),
        ("spec.completion", Rule::PubSub)
    );
    // The component defaults to `pubsub`; a grant of another component does not cover it.
    let p = policy("shared", "a", |s| {
        s.pubsub = vec![PubSubGrant {
            name: "kafka".into(),
            topics: vec!["done".into()],
        }]
    });
    let e = team_a(vec![p]);
    assert!(
        e.task(&task(
            json!({"completion": {"pubsub": "kafka", "topic": "done"}})
        ))
        .is_ok()
    );
    let d = e
        .task(&task(json!({"completion": {"topic": "done"}})))
        .unwrap_err();
    assert_eq!(d.rule, Rule::PubSub);
}
