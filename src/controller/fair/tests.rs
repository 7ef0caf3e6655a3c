//! The fair gate, driven by hand: who holds a worker after each step is decided by the gate
//! alone, never by a scheduler or a clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::publish::{Change, LINGER, Series};
use super::*;

/// A gate of one worker, held, with objects `(namespace, name)` queued in this order.
fn line(waiters: &[(&str, &str)]) -> FairGate {
    let gate = FairGate::new(1);
    assert_eq!(gate.enter("holder", "held"), Entry::Run);
    for (ns, name) in waiters {
        assert_eq!(gate.enter(ns, name), Entry::Queued);
    }
    gate
}

/// The worker held is given back `n` times: who got it each time.
fn serve(gate: &FairGate, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| gate.release().expect("someone waits").name.to_string())
        .collect()
}

#[test]
fn namespaces_take_turns() {
    let gate = line(&[
        ("big", "b1"),
        ("big", "b2"),
        ("big", "b3"),
        ("big", "b4"),
        ("big", "b5"),
        ("small", "s1"),
        ("small", "s2"),
        ("other", "o1"),
    ]);
    assert_eq!(
        serve(&gate, 8),
        ["b1", "s1", "o1", "b2", "s2", "b3", "b4", "b5"]
    );
    assert_eq!(gate.release(), None, "nobody waits: the worker is free");
    assert_eq!(gate.available(), 1);
}

#[test]
fn a_few_waiting_are_served_within_a_few_workers_of_a_long_queue() {
    let mut waiters: Vec<(String, String)> = (0..10_000)
        .map(|i| ("big".to_string(), format!("big-{i}")))
        .collect();
    waiters.extend((0..10).map(|i| ("small".to_string(), format!("small-{i}"))));
    let refs: Vec<(&str, &str)> = waiters
        .iter()
        .map(|(n, l)| (n.as_str(), l.as_str()))
        .collect();
    let gate = line(&refs);
    let served = serve(&gate, 20);
    let small = served.iter().filter(|l| l.starts_with("small-")).count();
    assert_eq!(small, 10, "every other worker goes to small: {served:?}");
    assert_eq!(gate.waiting(), 10_000 - 10);
}

#[test]
fn first_come_first_served_within_a_namespace() {
    let names: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
    let waiters: Vec<(&str, &str)> = names.iter().map(|l| ("a", l.as_str())).collect();
    let gate = line(&waiters);
    assert_eq!(serve(&gate, 10), names);
}

#[test]
fn a_namespace_that_emptied_rejoins_at_the_back_of_the_turn() {
    let gate = line(&[("a", "a1"), ("b", "b1"), ("a", "a2"), ("a", "a3")]);
    assert_eq!(serve(&gate, 2), ["a1", "b1"]);
    // b has no waiter left: out of the turn, it comes back behind a.
    assert_eq!(gate.enter("b", "b2"), Entry::Queued);
    assert_eq!(serve(&gate, 3), ["a2", "b2", "a3"]);
}

#[test]
fn a_turn_says_whose_and_how_long_it_waited() {
    let gate = line(&[("team-a", "standup")]);
    let before = Instant::now();
    let turn = gate.release().unwrap();
    assert_eq!((&*turn.namespace, &*turn.name), ("team-a", "standup"));
    assert!(turn.waited <= before.elapsed() + Duration::from_secs(1));
}

#[test]
fn waiters_are_counted_in_all_and_per_namespace() {
    let gate = line(&[("a", "a1"), ("b", "b1"), ("a", "a2")]);
    assert_eq!(gate.waiting(), 3);
    let mut by_namespace = gate.waiting_by_namespace();
    by_namespace.sort();
    assert_eq!(by_namespace, [(Arc::from("a"), 2), (Arc::from("b"), 1)]);
    serve(&gate, 3);
    assert_eq!(gate.waiting(), 0);
    assert!(gate.waiting_by_namespace().is_empty());
}

#[test]
fn closing_drops_the_waiters_and_refuses_later_objects_but_not_held_workers() {
    let gate = line(&[("a", "a1"), ("b", "b1")]);
    gate.close();
    assert!(gate.is_closed());
    assert_eq!(gate.waiting(), 0);
    assert_eq!(gate.enter("c", "c1"), Entry::Closed);
    assert_eq!(gate.available(), 0, "the held worker stays held");
    assert_eq!(gate.release(), None);
    assert_eq!(gate.available(), 1);
}

/// Random steps (an object due, a run ending) with a fixed seed: after every step the workers
/// held plus those free are N, and none is free while anyone waits.
#[test]
fn workers_never_exceed_n_whatever_the_steps() {
    const N: usize = 3;
    let gate = FairGate::new(N);
    let mut seed: u64 = 0x5eed;
    let mut next = |bound: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as usize) % bound
    };
    let mut held = 0usize;
    let mut queued = 0usize;
    for step in 0..20_000 {
        if next(2) == 0 {
            match gate.enter(["a", "b", "c", "d"][next(4)], &format!("o{step}")) {
                Entry::Run => held += 1,
                Entry::Queued => queued += 1,
                Entry::Closed => panic!("closed"),
            }
        } else if held > 0 {
            // The run ends: its worker goes to the next in turn, or is free.
            if gate.release().is_some() {
                queued -= 1;
            } else {
                held -= 1;
            }
        }
        assert!(held <= N, "step {step}: {held} workers held");
        assert_eq!(held + gate.available(), N, "step {step}");
        assert_eq!(gate.waiting(), queued, "step {step}");
        assert!(
            gate.available() == 0 || gate.waiting() == 0,
            "step {step}: a worker is free while {} wait",
            gate.waiting()
        );
    }
    while held > 0 {
        if gate.release().is_none() {
            held -= 1;
        }
    }
    assert_eq!(gate.available(), N);
    assert_eq!(gate.waiting(), 0);
}

async fn heard(gate: &FairGate) -> bool {
    tokio::time::timeout(Duration::from_secs(10), gate.changed())
        .await
        .is_ok()
}

/// The metric's publisher is told when an object starts waiting, when one is handed a worker,
/// and when the gate closes.
#[tokio::test]
async fn the_metric_hears_of_every_change_of_the_waiters() {
    let gate = FairGate::new(1);
    assert_eq!(gate.enter("a", "a1"), Entry::Run);
    assert_eq!(gate.enter("b", "b1"), Entry::Queued);
    assert!(heard(&gate).await, "queued");
    assert!(gate.release().is_some());
    assert!(heard(&gate).await, "handed a worker");
    gate.close();
    assert!(heard(&gate).await, "closed");
}

#[test]
fn gauges_stay_at_zero_for_a_while_then_go() {
    let mut series = Series::default();
    let t0 = Instant::now();
    let a: Arc<str> = Arc::from("a");
    let b: Arc<str> = Arc::from("b");
    assert_eq!(
        series.update(vec![(a.clone(), 3)], t0),
        [Change::Set(a.clone(), 3)]
    );
    assert_eq!(series.next_removal(), None);
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(
        series.update(vec![(b.clone(), 1)], t1),
        [Change::Set(b.clone(), 1), Change::Set(a.clone(), 0)]
    );
    assert_eq!(series.next_removal(), Some(t1 + LINGER));
    let t2 = t1 + LINGER - Duration::from_secs(1);
    assert_eq!(series.update(vec![], t2), [Change::Set(b.clone(), 0)]);
    assert_eq!(
        series.update(vec![], t1 + LINGER),
        [Change::Remove(a.clone())]
    );
    // b waits again before its removal: its series stays.
    assert_eq!(
        series.update(vec![(b.clone(), 2)], t1 + LINGER),
        [Change::Set(b.clone(), 2)]
    );
    assert_eq!(series.next_removal(), None);
}
