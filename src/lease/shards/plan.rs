//! Which Leases a replica wants, from one look at all of them: a pure function, so the
//! balancing rules are tested without an apiserver.

/// Who holds one Lease, as this replica sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Holder {
    /// Missing, released, or unchanged for longer than its duration (by our own observation).
    Free,
    /// This replica.
    Me,
    /// Another replica, by its holder identity.
    Other(String),
}

/// What to hold: the member slot (`None`: none can be had) and, per shard, whether to hold it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Wants {
    pub member: Option<usize>,
    pub shards: Vec<bool>,
}

/// The Leases to want, given who holds each member slot and each shard; `seed` spreads the
/// replicas' first looks for a free slot (a hash of the identity).
///
/// A replica counts as a member while it holds a member slot; there are as many slots as
/// shards, so replicas beyond that hold nothing and wait. With M members each wants at most
/// ceil(S / M) shards: free ones first, then those held by a replica that is no longer a
/// member (its Lease expires soon). One holding more than ceil(S / M) gives the rest back, and
/// while other members hold fewer than floor(S / M) (one that has just joined) it gives back
/// what they lack too, down to that floor, and takes nothing more until they have it. A
/// replica without a slot keeps what it holds while a slot is free to take, and gives all back
/// when none is.
pub(super) fn plan(members: &[Holder], shards: &[Holder], seed: u64) -> Wants {
    let mine: Vec<usize> = positions(shards, |h| *h == Holder::Me);
    let Some(slot) = members.iter().position(|h| *h == Holder::Me) else {
        let count = members.len();
        let start = usize::try_from(seed % count.max(1) as u64).unwrap_or(0);
        let member = (0..count)
            .map(|i| (start + i) % count)
            .find(|&k| members[k] == Holder::Free);
        let keep = member.is_some();
        let shards = shards.iter().map(|h| keep && *h == Holder::Me).collect();
        return Wants { member, shards };
    };
    let mut others: Vec<&str> = members
        .iter()
        .filter_map(|h| match h {
            Holder::Other(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    // A replica seen in two slots (a lapsed one not yet expired) is one member.
    others.sort_unstable();
    others.dedup();
    let count = shards.len();
    let m = others.len() + 1;
    let (most, least) = (count.div_ceil(m), count / m);
    let held_by = |id: &str| {
        shards
            .iter()
            .filter(|h| matches!(h, Holder::Other(o) if o == id))
            .count()
    };
    // What the members short of the floor lack between them.
    let short: usize = others
        .iter()
        .map(|id| least.saturating_sub(held_by(id)))
        .sum();

    let mut wants = vec![false; count];
    let keep = mine
        .len()
        .saturating_sub(short)
        .max(least.max(1))
        .min(mine.len())
        .min(most);
    for &k in mine.iter().take(keep) {
        wants[k] = true;
    }
    // While a member lacks its floor, the shards given back are its to take.
    let cap = if short > 0 { least } else { most };
    // Each member starts looking at its own part of the ring, so replicas joining at once
    // reach for different shards.
    let start = (slot * most) % count.max(1);
    let ring = (0..count).map(|i| (start + i) % count);
    let orphaned = |h: &Holder| matches!(h, Holder::Other(id) if !others.contains(&id.as_str()));
    let free = ring.clone().filter(|&k| shards[k] == Holder::Free);
    let taken_over = ring.filter(|&k| orphaned(&shards[k]));
    for k in free.chain(taken_over).take(cap.saturating_sub(keep)) {
        wants[k] = true;
    }
    Wants {
        member: Some(slot),
        shards: wants,
    }
}

fn positions(holders: &[Holder], pred: impl Fn(&Holder) -> bool) -> Vec<usize> {
    holders
        .iter()
        .enumerate()
        .filter_map(|(k, h)| pred(h).then_some(k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::Holder::{Free, Me};
    use super::*;

    /// `plan` with the first look at slot 0.
    fn plan_(members: &[Holder], shards: &[Holder]) -> Wants {
        plan(members, shards, 0)
    }

    fn other(id: &str) -> Holder {
        Holder::Other(id.into())
    }

    fn wanted(w: &Wants) -> Vec<usize> {
        positions_of(&w.shards)
    }

    fn positions_of(v: &[bool]) -> Vec<usize> {
        v.iter()
            .enumerate()
            .filter_map(|(k, &b)| b.then_some(k))
            .collect()
    }

    #[test]
    fn a_lone_replica_takes_a_slot_then_every_shard() {
        let w = plan_(&[Free, Free, Free, Free], &[Free, Free, Free, Free]);
        assert_eq!(w.member, Some(0));
        assert!(wanted(&w).is_empty(), "no shard before a member slot");
        let w = plan_(&[Me, Free, Free, Free], &[Free, Free, Free, Free]);
        assert_eq!(wanted(&w), vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_replica_joining_gets_half_from_the_one_holding_all() {
        let a = other("a");
        // The one holding all gives back the shards above its share once the newcomer is a member.
        let w = plan_(&[Me, a.clone(), Free, Free], &[Me, Me, Me, Me]);
        assert_eq!(wanted(&w), vec![0, 1]);
        // The newcomer wants the free ones, and nothing its live peer holds.
        let b = other("b");
        let w = plan_(
            &[b.clone(), Me, Free, Free],
            &[b.clone(), b.clone(), Free, Free],
        );
        assert_eq!(wanted(&w), vec![2, 3]);
        let w = plan_(
            &[b.clone(), Me, Free, Free],
            &[b.clone(), b.clone(), b.clone(), b],
        );
        assert!(
            wanted(&w).is_empty(),
            "a live member's shards are not taken"
        );
    }

    #[test]
    fn shards_of_a_replica_that_left_are_taken_over() {
        // "gone" holds shards but no member slot any more.
        let gone = other("gone");
        let w = plan_(&[Me, Free], &[Me, gone.clone(), gone, Me]);
        assert_eq!(wanted(&w), vec![0, 1, 2, 3]);
    }

    #[test]
    fn an_uneven_count_is_shared_without_churn() {
        let b = other("b");
        // 5 shards over 2: 3 and 2 is balanced; the one with 3 keeps them.
        let w = plan_(&[Me, b.clone()], &[Me, Me, Me, b.clone(), b.clone()]);
        assert_eq!(wanted(&w), vec![0, 1, 2]);
        // One with 4 gives back one only while the other has fewer than 2.
        let w = plan_(&[Me, b.clone()], &[Me, Me, Me, Me, b.clone()]);
        assert_eq!(wanted(&w), vec![0, 1, 2]);
    }

    #[test]
    fn without_a_slot_a_replica_keeps_what_it_holds_only_while_one_is_free() {
        let (a, b) = (other("a"), other("b"));
        let w = plan_(&[a.clone(), Free], &[Me, Free, a.clone(), b.clone()]);
        assert_eq!(w.member, Some(1));
        assert_eq!(wanted(&w), vec![0], "keeps, takes nothing new");
        let w = plan_(&[a.clone(), b.clone()], &[Me, Free, a, b]);
        assert_eq!(w.member, None);
        assert!(wanted(&w).is_empty(), "no slot to be had: gives all back");
    }

    #[test]
    fn replicas_look_for_a_slot_from_different_places() {
        let w = plan(&[Free, Free, Free, Free], &[Free, Free, Free, Free], 6);
        assert_eq!(w.member, Some(2));
        let w = plan(
            &[Free, Free, other("a"), Free],
            &[Free, Free, Free, Free],
            6,
        );
        assert_eq!(w.member, Some(3));
    }

    /// A giver does not race the newcomer for what it gave back: with 4 shards over 3, the two
    /// holding 2 each gave one back, and neither takes a free one while the third has none.
    #[test]
    fn a_giver_leaves_what_it_gave_back_to_the_newcomer() {
        let (b, c) = (other("b"), other("c"));
        let w = plan_(&[Me, b.clone(), c.clone()], &[Me, Free, b.clone(), Free]);
        assert_eq!(wanted(&w), vec![0]);
        // The newcomer takes both.
        let a = other("a");
        let w = plan_(&[a.clone(), b.clone(), Me], &[a, Free, b, Free]);
        assert_eq!(wanted(&w), vec![1, 3]);
    }

    #[test]
    fn a_replica_in_two_slots_counts_once() {
        let b = other("b");
        // b lapsed from slot 1 and took slot 2: two members, not three.
        let w = plan_(&[Me, b.clone(), b.clone()], &[Free, Free, Free, Free]);
        assert_eq!(wanted(&w), vec![0, 1]);
    }

    /// As above, but every replica plans on the same view each round (as replicas ticking
    /// together do): gives back apply, then takes, the first taker winning a race. It settles
    /// and then stays put.
    #[test]
    fn replicas_planning_at_once_settle_and_stay() {
        for shards in 1..=8usize {
            for replicas in 1..=shards {
                let ids: Vec<String> = (0..replicas).map(|r| format!("r{r}")).collect();
                let mut holders: Vec<Option<usize>> = vec![None; shards];
                let mut changes_by_round = vec![];
                for _round in 0..4 * shards + 3 {
                    let plans: Vec<Wants> = (0..replicas)
                        .map(|me| {
                            let view = |owner: Option<usize>| match owner {
                                None => Free,
                                Some(o) if o == me => Me,
                                Some(o) => other(&ids[o]),
                            };
                            let members: Vec<Holder> = (0..shards)
                                .map(|slot| view((slot < replicas).then_some(slot)))
                                .collect();
                            let view_shards: Vec<Holder> =
                                holders.iter().map(|&h| view(h)).collect();
                            plan(&members, &view_shards, me as u64)
                        })
                        .collect();
                    let mut changes = 0;
                    for (me, w) in plans.iter().enumerate() {
                        for (k, &want) in w.shards.iter().enumerate() {
                            if holders[k] == Some(me) && !want {
                                holders[k] = None;
                                changes += 1;
                            }
                        }
                    }
                    for (me, w) in plans.iter().enumerate() {
                        for (k, &want) in w.shards.iter().enumerate() {
                            if want && holders[k].is_none() {
                                holders[k] = Some(me);
                                changes += 1;
                            }
                        }
                    }
                    changes_by_round.push(changes);
                }
                let tail = &changes_by_round[changes_by_round.len() - 3..];
                assert_eq!(
                    tail,
                    [0, 0, 0],
                    "{shards} shards, {replicas} replicas: {changes_by_round:?}"
                );
                assert!(holders.iter().all(Option::is_some), "{holders:?}");
                for r in 0..replicas {
                    let n = holders.iter().filter(|&&h| h == Some(r)).count();
                    assert!(
                        n <= shards.div_ceil(replicas) && n >= shards / replicas,
                        "{shards} shards, {replicas} replicas: r{r} holds {n}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_shard_is_wanted_by_exactly_one_member_once_settled() {
        // Replicas take turns planning on what the others hold, as they would over a few ticks;
        // at every count of replicas and shards, it settles with each shard wanted once.
        for shards in 1..=8usize {
            for replicas in 1..=shards {
                let ids: Vec<String> = (0..replicas).map(|r| format!("r{r}")).collect();
                let members: Vec<String> = ids.clone();
                let mut holders: Vec<Option<usize>> = vec![None; shards];
                for _round in 0..4 * shards {
                    for me in 0..replicas {
                        let view = |owner: Option<usize>| match owner {
                            None => Free,
                            Some(o) if o == me => Me,
                            Some(o) => other(&ids[o]),
                        };
                        let member_view: Vec<Holder> = (0..shards)
                            .map(|slot| view(members.get(slot).map(|_| slot)))
                            .collect();
                        let shard_view: Vec<Holder> = holders.iter().map(|&h| view(h)).collect();
                        let w = plan(&member_view, &shard_view, me as u64);
                        for (k, want) in w.shards.iter().enumerate() {
                            match (holders[k], want) {
                                (Some(o), false) if o == me => holders[k] = None,
                                (None, true) => holders[k] = Some(me),
                                _ => {}
                            }
                        }
                    }
                }
                assert!(
                    holders.iter().all(Option::is_some),
                    "{shards} shards, {replicas} replicas: {holders:?}"
                );
                let most = shards.div_ceil(replicas);
                for r in 0..replicas {
                    let n = holders.iter().filter(|&&h| h == Some(r)).count();
                    assert!(
                        n <= most && n >= shards / replicas,
                        "{shards} shards, {replicas} replicas: r{r} holds {n}"
                    );
                }
            }
        }
    }
}
