//! How the dispatch loop names an object.
use std::fmt;
use std::sync::Arc;

use kube::runtime::reflector::{Lookup, ObjectRef};

/// An object as the loop, kube-runtime's scheduler and a turn's task hold it: its namespace and
/// name, `namespace/name`, in one shared allocation. The scheduler keeps two copies of every
/// key (its map and its timer queue) for every object of the kind at all times; an `ObjectRef`
/// is 96 bytes inline and two strings of its own, this is a pointer to one (at 100,000 tasks
/// about 15 MiB less, `docs/scaling.md`).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Key(Arc<str>);

impl Key {
    /// Object `name` of `namespace` ("" for none).
    pub fn new(namespace: &str, name: &str) -> Self {
        Key(format!("{namespace}/{name}").into())
    }

    /// `obj`'s key.
    pub fn of<K: kube::Resource>(obj: &K) -> Self {
        let meta = obj.meta();
        Key::new(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }

    /// Namespace ("" for none) and name: split at the first `/`, as a namespace holds none.
    pub fn parts(&self) -> (&str, &str) {
        self.0.split_once('/').unwrap_or(("", &self.0))
    }

    /// The reference the watch cache is looked up by.
    pub fn object_ref<K: Lookup<DynamicType = ()>>(&self) -> ObjectRef<K> {
        let (namespace, name) = self.parts();
        let r = ObjectRef::new(name);
        if namespace.is_empty() {
            r
        } else {
            r.within(namespace)
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RecurringTask;

    #[test]
    fn a_key_gives_back_its_namespace_and_name_and_the_cache_reference() {
        let key = Key::new("team-a", "standup.daily");
        assert_eq!(key.parts(), ("team-a", "standup.daily"));
        assert_eq!(
            key.object_ref::<RecurringTask>(),
            ObjectRef::new("standup.daily").within("team-a")
        );
        assert_eq!(key.to_string(), "team-a/standup.daily");
        // Without a namespace (no kind of recur's is cluster-scoped, but the key holds).
        let bare = Key::new("", "x");
        assert_eq!(bare.parts(), ("", "x"));
        assert_eq!(bare.object_ref::<RecurringTask>(), ObjectRef::new("x"));
        // Keys of different objects differ even where their concatenations could meet.
        assert_ne!(Key::new("a", "b-c"), Key::new("a-b", "c"));
    }
}
