//! A small map whose entries expire, for what a reconcile must remember between runs of the
//! same object without keeping it for ever: recur has no finalizers and never sees a deletion,
//! so an entry of a deleted object has to go by itself.
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Entries live at most `ttl`; expired ones are swept when the map has doubled since the last
/// sweep, so the cost stays amortised O(1) per insert and the size bounded by what was inserted
/// within one `ttl` (times two).
#[derive(Debug)]
pub(crate) struct Memo<K, V> {
    ttl: Duration,
    inner: Mutex<Inner<K, V>>,
}

#[derive(Debug)]
struct Inner<K, V> {
    map: HashMap<K, (V, Instant)>,
    /// Size after the last sweep; the next sweep comes at twice this (at least 64).
    swept_at: usize,
}

impl<K: Eq + Hash, V: Clone + PartialEq> Memo<K, V> {
    pub(crate) fn new(ttl: Duration) -> Self {
        Memo {
            ttl,
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                swept_at: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        // Every update is one map operation: a panic elsewhere cannot leave it half-written.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers `value` for `key` from `now` on.
    pub(crate) fn insert(&self, key: K, value: V, now: Instant) {
        self.put(&mut self.lock(), key, value, now);
    }

    /// Remembers `change(the live value of key)` for `key` from `now` on, under one lock.
    pub(crate) fn upsert(&self, key: K, now: Instant, change: impl FnOnce(Option<V>) -> V) {
        let mut inner = self.lock();
        let live = inner
            .map
            .remove(&key)
            .filter(|(_, at)| now.saturating_duration_since(*at) < self.ttl)
            .map(|(v, _)| v);
        self.put(&mut inner, key, change(live), now);
    }

    fn put(&self, inner: &mut Inner<K, V>, key: K, value: V, now: Instant) {
        inner.map.insert(key, (value, now));
        if inner.map.len() >= (inner.swept_at * 2).max(64) {
            let ttl = self.ttl;
            inner
                .map
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < ttl);
            inner.swept_at = inner.map.len();
        }
    }

    /// The live value of `key`, if any.
    pub(crate) fn get(&self, key: &K, now: Instant) -> Option<V> {
        self.get_aged(key, now).map(|(v, _)| v)
    }

    /// The live value of `key` with the time since it was remembered, if any.
    pub(crate) fn get_aged(&self, key: &K, now: Instant) -> Option<(V, Duration)> {
        let inner = self.lock();
        inner.map.get(key).and_then(|(v, at)| {
            let age = now.saturating_duration_since(*at);
            (age < self.ttl).then(|| (v.clone(), age))
        })
    }

    /// True when `key` holds `value`; any other entry of `key` is stale and removed.
    pub(crate) fn holds(&self, key: &K, value: &V, now: Instant) -> bool {
        let mut inner = self.lock();
        let live = inner
            .map
            .get(key)
            .filter(|(_, at)| now.saturating_duration_since(*at) < self.ttl)
            .map(|(v, _)| v == value);
        match live {
            Some(true) => true,
            Some(false) | None => {
                inner.map.remove(key);
                false
            }
        }
    }

    /// Forgets `key`.
    pub(crate) fn remove(&self, key: &K) {
        self.lock().map.remove(key);
    }

    /// Entries held, expired or not.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(300);

    #[test]
    fn holds_only_the_remembered_value_and_drops_any_other() {
        let memo = Memo::new(TTL);
        let t0 = Instant::now();
        memo.insert("a", "rv-1", t0);
        assert!(memo.holds(&"a", &"rv-1", t0));
        // The cache moved on: the entry is no longer needed and goes.
        assert!(!memo.holds(&"a", &"rv-2", t0));
        assert_eq!(memo.len(), 0);
        assert!(!memo.holds(&"a", &"rv-1", t0));
    }

    #[test]
    fn upsert_sees_only_a_live_value() {
        let memo = Memo::new(TTL);
        let t0 = Instant::now();
        memo.upsert("a", t0, |live| {
            assert_eq!(live, None);
            1
        });
        memo.upsert("a", t0, |live| live.unwrap_or(0) + 1);
        assert_eq!(memo.get(&"a", t0), Some(2));
        memo.upsert("a", t0 + TTL, |live| live.unwrap_or(0) + 10);
        assert_eq!(memo.get(&"a", t0 + TTL), Some(10));
    }

    #[test]
    fn entries_expire() {
        let memo = Memo::new(TTL);
        let t0 = Instant::now();
        memo.insert("a", 1, t0);
        assert_eq!(memo.get(&"a", t0 + TTL - Duration::from_secs(1)), Some(1));
        assert_eq!(memo.get(&"a", t0 + TTL), None);
        assert!(!memo.holds(&"a", &1, t0 + TTL));
    }

    #[test]
    fn the_age_of_an_entry_counts_from_its_last_update() {
        let memo = Memo::new(TTL);
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        memo.insert("a", 1, t0);
        assert_eq!(memo.get_aged(&"a", t0 + minute), Some((1, minute)));
        memo.upsert("a", t0 + minute, |live| live.unwrap_or(0) + 1);
        assert_eq!(memo.get_aged(&"a", t0 + minute * 2), Some((2, minute)));
        assert_eq!(memo.get_aged(&"a", t0 + minute + TTL), None);
    }

    /// The leak of issue 11 (4): one entry per object ever handled. Entries of objects never seen
    /// again (deleted, or Sent and idle) are swept once they expire, so a steady stream of
    /// objects keeps the map at what one TTL brings, not at everything since start.
    #[test]
    fn a_stream_of_objects_never_seen_again_stays_bounded() {
        let memo = Memo::new(TTL);
        let t0 = Instant::now();
        // 100,000 objects, one per 100 ms: 3,000 per TTL.
        let per_ttl = 3_000;
        let mut peak = 0;
        for i in 0..100_000u64 {
            memo.insert(i, i, t0 + Duration::from_millis(100 * i));
            peak = peak.max(memo.len());
        }
        assert!(peak <= 2 * per_ttl + 64, "peak {peak}");
    }
}
