//! What the memo of our commits keeps per object: the statuses our last few writes replaced.
//! A relist from a lagging apiserver can show any of them again, not only the last.

/// Replaced statuses kept per object. A relist trailing by more of our writes to one object
/// within the memo's lifetime is not recognised (its write's guard still refuses it, but the
/// call is made).
pub(super) const KEPT: usize = 8;

/// Fingerprints of the statuses our last [`KEPT`] writes to one object replaced, oldest first.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Replaced {
    fingerprints: [u64; KEPT],
    len: usize,
}

impl Replaced {
    /// `self` with `fingerprint` added, the oldest dropped when full.
    pub(super) fn with(mut self, fingerprint: u64) -> Self {
        if self.len == KEPT {
            self.fingerprints.copy_within(1.., 0);
            self.len -= 1;
        }
        self.fingerprints[self.len] = fingerprint;
        self.len += 1;
        self
    }

    pub(super) fn contains(&self, fingerprint: u64) -> bool {
        self.fingerprints[..self.len].contains(&fingerprint)
    }
}

/// The object's namespace, name and UID hashed: the memo holds every delivery of the last 5
/// minutes, and 8 bytes a key keep that small.
pub(super) fn commit_id<K: kube::Resource>(obj: &K) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let meta = obj.meta();
    let mut hasher = std::hash::DefaultHasher::new();
    (&meta.namespace, &meta.name, &meta.uid).hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_few_oldest_first_out() {
        let mut replaced = Replaced::default();
        assert!(!replaced.contains(0));
        for f in 1..=KEPT as u64 + 2 {
            replaced = replaced.with(f);
        }
        assert!(!replaced.contains(1) && !replaced.contains(2));
        assert!((3..=KEPT as u64 + 2).all(|f| replaced.contains(f)));
    }
}
