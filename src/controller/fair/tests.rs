//! The fair gate, driven by hand: futures are polled with a no-op waker, so who holds a permit
//! after each step is decided by the gate alone, never by a scheduler or a clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::publish::{Change, LINGER, Series};
use super::*;

fn poll(acquire: &mut Acquire) -> Poll<Result<Permit, Closed>> {
    Pin::new(acquire).poll(&mut Context::from_waker(Waker::noop()))
}

fn permit(acquire: &mut Acquire) -> Permit {
    match poll(acquire) {
        Poll::Ready(Ok(permit)) => permit,
        other => panic!("expected a permit, got {other:?}"),
    }
}

/// Waiters by label; `serve` gives back the permit held and returns who got it.
struct Line {
    gate: Arc<FairGate>,
    held: Option<Permit>,
    waiting: Vec<(String, Acquire)>,
}

impl Line {
    /// A gate of one permit, held, and waiters `(namespace, label)` queued in this order.
    fn new(waiters: &[(&str, &str)]) -> Line {
        let gate = Arc::new(FairGate::new(1));
        let held = Some(permit(&mut gate.acquire("holder")));
        let waiting = waiters
            .iter()
            .map(|(ns, label)| (label.to_string(), gate.acquire(ns)))
            .collect();
        Line {
            gate,
            held,
            waiting,
        }
    }

    fn serve(&mut self) -> String {
        drop(self.held.take());
        let mut ready = vec![];
        for (i, (_, acquire)) in self.waiting.iter_mut().enumerate() {
            match poll(acquire) {
                Poll::Ready(Ok(permit)) => ready.push((i, permit)),
                Poll::Ready(Err(Closed)) => panic!("closed"),
                Poll::Pending => {}
            }
        }
        assert_eq!(ready.len(), 1, "one permit, one waiter served");
        let (i, permit) = ready.remove(0);
        self.held = Some(permit);
        self.waiting.remove(i).0
    }

    fn serve_all(&mut self) -> Vec<String> {
        (0..self.waiting.len()).map(|_| self.serve()).collect()
    }
}

#[test]
fn namespaces_take_turns() {
    let mut line = Line::new(&[
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
        line.serve_all(),
        ["b1", "s1", "o1", "b2", "s2", "b3", "b4", "b5"]
    );
}

#[test]
fn a_few_waiting_are_served_within_a_few_permits_of_a_long_queue() {
    let mut waiters: Vec<(String, String)> = (0..10_000)
        .map(|i| ("big".to_string(), format!("big-{i}")))
        .collect();
    waiters.extend((0..10).map(|i| ("small".to_string(), format!("small-{i}"))));
    let refs: Vec<(&str, &str)> = waiters
        .iter()
        .map(|(n, l)| (n.as_str(), l.as_str()))
        .collect();
    let mut line = Line::new(&refs);
    let served: Vec<String> = (0..20).map(|_| line.serve()).collect();
    let small = served.iter().filter(|l| l.starts_with("small-")).count();
    assert_eq!(small, 10, "every other permit goes to small: {served:?}");
    assert_eq!(line.gate.waiting(), 10_000 - 10);
}

#[test]
fn first_come_first_served_within_a_namespace() {
    let labels: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
    let waiters: Vec<(&str, &str)> = labels.iter().map(|l| ("a", l.as_str())).collect();
    let mut line = Line::new(&waiters);
    assert_eq!(line.serve_all(), labels);
}

#[test]
fn a_namespace_that_emptied_rejoins_at_the_back_of_the_turn() {
    let mut line = Line::new(&[("a", "a1"), ("b", "b1"), ("a", "a2")]);
    // b's only waiter leaves: b is out of the turn, and comes back behind a.
    let (label, gone) = line.waiting.remove(1);
    assert_eq!(label, "b1");
    drop(gone);
    line.waiting
        .push(("b2".to_string(), line.gate.acquire("b")));
    assert_eq!(line.serve_all(), ["a1", "b2", "a2"]);
}

#[test]
fn waiters_are_counted_in_all_and_per_namespace() {
    let line = Line::new(&[("a", "a1"), ("b", "b1"), ("a", "a2")]);
    assert_eq!(line.gate.waiting(), 3);
    let mut by_namespace = line.gate.waiting_by_namespace();
    by_namespace.sort();
    assert_eq!(by_namespace, [(Arc::from("a"), 2), (Arc::from("b"), 1)]);
    drop(line.waiting);
    assert_eq!(line.gate.waiting(), 0);
    assert!(line.gate.waiting_by_namespace().is_empty());
}

#[test]
fn a_waiter_dropped_in_the_queue_leaves_it() {
    let mut line = Line::new(&[("a", "a1"), ("a", "a2")]);
    drop(line.waiting.remove(0));
    assert_eq!(line.gate.waiting(), 1);
    assert_eq!(line.serve_all(), ["a2"]);
}

#[test]
fn a_permit_handed_to_a_dropped_waiter_goes_to_the_next() {
    let mut line = Line::new(&[("a", "a1"), ("b", "b1")]);
    // a1 is handed the permit but dropped before it is polled.
    drop(line.held.take());
    let (_, a1) = line.waiting.remove(0);
    drop(a1);
    let (_, mut b1) = line.waiting.remove(0);
    let held = permit(&mut b1);
    assert_eq!(line.gate.available(), 0);
    drop(held);
    assert_eq!(line.gate.available(), 1, "no permit lost, none made up");
}

#[test]
fn a_permit_taken_at_once_but_never_polled_is_given_back() {
    let gate = Arc::new(FairGate::new(1));
    let acquire = gate.acquire("a");
    assert_eq!(gate.available(), 0);
    drop(acquire);
    assert_eq!(gate.available(), 1);
}

#[test]
fn closing_fails_the_waiters_and_later_acquires_but_not_held_permits() {
    let mut line = Line::new(&[("a", "a1"), ("b", "b1")]);
    line.gate.close();
    assert_eq!(line.gate.waiting(), 0);
    for (_, acquire) in &mut line.waiting {
        assert!(matches!(poll(acquire), Poll::Ready(Err(Closed))));
    }
    assert!(matches!(
        poll(&mut line.gate.acquire("c")),
        Poll::Ready(Err(Closed))
    ));
    drop(line.held.take());
    assert_eq!(line.gate.available(), 1);
}

/// Random steps (acquire, poll, drop a waiter, drop a permit) with a fixed seed: after every
/// step the permits held plus those free are N, and none is free while anyone waits.
#[test]
fn permits_never_exceed_n_whatever_the_steps() {
    const N: usize = 3;
    let gate = Arc::new(FairGate::new(N));
    let mut seed: u64 = 0x5eed;
    let mut next = |bound: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as usize) % bound
    };
    let mut waiting: Vec<Acquire> = vec![];
    let mut held: Vec<Permit> = vec![];
    for step in 0..20_000 {
        match next(4) {
            0 => waiting.push(gate.acquire(["a", "b", "c", "d"][next(4)])),
            1 if !waiting.is_empty() => drop(waiting.swap_remove(next(waiting.len()))),
            2 if !held.is_empty() => drop(held.swap_remove(next(held.len()))),
            _ => {}
        }
        // Some steps poll every waiter, some leave permits handed over but not yet taken.
        if next(2) == 0 {
            let mut still = vec![];
            for mut acquire in waiting.drain(..) {
                match poll(&mut acquire) {
                    Poll::Ready(Ok(permit)) => held.push(permit),
                    Poll::Ready(Err(Closed)) => panic!("closed"),
                    Poll::Pending => still.push(acquire),
                }
            }
            waiting = still;
            assert_eq!(held.len() + gate.available(), N, "step {step}");
        }
        assert!(held.len() <= N, "step {step}: {} permits held", held.len());
        assert!(
            gate.available() == 0 || gate.waiting() == 0,
            "step {step}: a permit is free while {} wait",
            gate.waiting()
        );
    }
    drop(waiting);
    drop(held);
    assert_eq!(gate.available(), N);
    assert_eq!(gate.waiting(), 0);
}

/// Counts a holder of a permit while it lives.
struct Running(Arc<AtomicUsize>);

impl Running {
    fn enter(running: Arc<AtomicUsize>, most: &AtomicUsize) -> Running {
        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(now, Ordering::SeqCst);
        Running(running)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The same bound with real tasks on a multi-threaded runtime, some of them aborted while they
/// wait or while they hold a permit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_never_hold_more_than_n_permits() {
    const N: usize = 4;
    let gate = Arc::new(FairGate::new(N));
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut tasks = vec![];
    for i in 0..400 {
        let (gate, running, most) = (gate.clone(), running.clone(), most.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire(["a", "b", "c"][i % 3]).await.unwrap();
            // Declared after the permit, so dropped before it, aborted or not.
            let _running = Running::enter(running, &most);
            tokio::task::yield_now().await;
        }));
    }
    for task in tasks.iter().step_by(7) {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    let most = most.load(Ordering::SeqCst);
    println!("at most {most} of {N} permits held at once");
    assert!((1..=N).contains(&most), "{most} permits held at once");
    assert_eq!(gate.available(), N);
    assert_eq!(gate.waiting(), 0);
}

#[tokio::test]
async fn a_waiter_is_woken_when_its_turn_comes() {
    let gate = Arc::new(FairGate::new(1));
    let held = gate.acquire("a").await.unwrap();
    let waiter = tokio::spawn({
        let gate = gate.clone();
        async move { gate.acquire("b").await.map(drop) }
    });
    // The waiter is queued (the place is taken in acquire) before the permit is given back.
    tokio::time::timeout(Duration::from_secs(10), async {
        while gate.waiting() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    drop(held);
    assert_eq!(waiter.await.unwrap(), Ok(()));
    assert_eq!(gate.available(), 1);
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
