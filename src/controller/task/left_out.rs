//! What the watch cache leaves out of each task, and what it keeps of that on the side.
//!
//! At 100,000 tasks the cache is most of the operator's memory (`docs/scaling.md`). Two parts of
//! a task's status cost much and are decided on little:
//! - `status.history`: up to `historyLimit` records, which reconcile never reads (it only adds
//!   records; a write must know how many the object holds, to drop those past the limit). The
//!   table keeps their count.
//! - `status.conditions`: three conditions of four strings each, about 1 KB a task, though recur
//!   writes a handful of distinct strings across every task. The table keeps their strings
//!   once for every task ([`Shared`]) and each task's instants, and [`LeftOut::restore`] puts
//!   them back in the task a reconcile decides on.
//! - the idempotency keys of the pending and the last occurrence, about 64 bytes each on the heap,
//!   when they are the ones the task's UID and the occurrence's instant give
//!   ([`occurrence_key`]): [`LeftOut::restore`] makes them again.
//!
//! Both are kept for the resourceVersion they were taken from, so they are used only with the
//! very object they belong to; for another version the caller reads the task from the apiserver.
//!
//! Metadata that no reconcile reads is dropped outright ([`drop_unread_metadata`]): labels and
//! annotations that tools put on every object (Helm's, Argo CD's, a team's) cost a map of their
//! own per task, about 600 bytes for a single label.
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::watcher::Event;

use crate::api::RecurringTask;
use crate::controller::task::occurrence_key;

/// The prefix of the annotations a reconcile reads (`recur.dev/run-now`).
const OWN_ANNOTATIONS: &str = "recur.dev/";

/// Drops from a task bound for the cache the labels and annotations no reconcile reads: labels
/// are read only to give them to the task's reminders (which a task without `spec.reminders`
/// has none of), annotations only under `recur.dev/`. The object is read by nothing else
/// between the watch and a reconcile; what is written back is status and JSON-patched fields,
/// never the whole object.
pub(crate) fn drop_unread_metadata(task: &mut RecurringTask) {
    if task.spec.reminders.is_empty() {
        task.metadata.labels = None;
    }
    if let Some(annotations) = task.metadata.annotations.as_mut() {
        annotations.retain(|key, _| key.starts_with(OWN_ANNOTATIONS));
        if annotations.is_empty() {
            task.metadata.annotations = None;
        }
    }
}

/// Distinct condition strings, and distinct shapes, shared at most: past it, a task whose
/// conditions bring a new one keeps them in its cached object (user-written suspend reasons and
/// failure texts vary).
const MAX_SHARED: usize = 4096;

/// What the cache left out of each task, by UID; see the module documentation.
#[derive(Debug, Default)]
pub struct LeftOut {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_uid: HashMap<Uid, Entry>,
    shared: Shared,
    /// Bumped by each relist; entries not seen again by its end belong to deleted tasks.
    listing: u64,
}

#[derive(Debug)]
struct Entry {
    resource_version: Version,
    records: u16,
    /// `None` when the conditions stayed in the cached object.
    conditions: Option<Kept>,
    keys: Keys,
    listing: u64,
}

/// Which idempotency keys the cached object lacks because [`occurrence_key`] gives them back.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Keys {
    next: bool,
    last: bool,
}

impl Keys {
    fn any(self) -> bool {
        self.next || self.last
    }
}

/// Empties `key` if it is the one `uid` and `nominal` give, and says whether it did.
fn take_derived(key: &mut String, uid: &str, nominal: chrono::DateTime<chrono::Utc>) -> bool {
    let derived = !key.is_empty() && *key == occurrence_key(uid, nominal);
    if derived {
        // Replaced, not cleared: clearing would keep the allocation.
        *key = String::new();
    }
    derived
}

/// A task's conditions as the table keeps them: their strings as a shape shared with every
/// task whose conditions read the same ([`Shared`]), and when each last changed.
#[derive(Debug)]
enum Kept {
    /// Every condition changed at the same instant and generation (conditions written together,
    /// as most tasks' are): nothing of its own allocated.
    Together { shape: u32, since: Since },
    /// Each condition its own instant and generation.
    Apart { shape: u32, since: Box<[Since]> },
}

/// When a condition last changed, and the generation it describes.
#[derive(Debug, Clone, PartialEq)]
struct Since {
    last_transition_time: Time,
    observed_generation: Option<i64>,
}

impl Since {
    fn of(c: &Condition) -> Self {
        Since {
            last_transition_time: c.last_transition_time.clone(),
            observed_generation: c.observed_generation,
        }
    }
}

/// What [`LeftOut::restore`] found for a cached task.
#[derive(Debug)]
pub enum Restored {
    /// Nothing was taken out of the object that reconcile decides on (or it never went through
    /// the cache): use it as it is.
    AsCached,
    /// The object with its conditions and keys put back.
    Whole(Box<RecurringTask>),
    /// The table keeps another version of the object (a newer one came, or a relist is
    /// running): read it from the apiserver.
    Unknown,
}

impl LeftOut {
    /// Takes the history, the conditions and the derived keys out of every task in `event`
    /// (bound for the watch cache), keeping the history's length, the conditions and which keys
    /// went.
    pub fn take_from(&self, event: &mut Event<RecurringTask>) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            Event::Apply(task) | Event::InitApply(task) => {
                drop_unread_metadata(task);
                let (Some(uid_text), Some(resource_version)) = (
                    task.metadata.uid.as_deref(),
                    task.metadata.resource_version.as_deref(),
                ) else {
                    return;
                };
                let (uid, resource_version) = (Uid::of(uid_text), Version::of(resource_version));
                let (mut records, mut conditions, mut keys) = (0, None, Keys::default());
                if let Some(status) = task.status.as_mut() {
                    // Replaced, not cleared: clearing would keep the allocation.
                    records = std::mem::take(&mut status.history).len();
                    conditions = inner.shared.keep(&status.conditions);
                    if conditions.is_some() {
                        status.conditions = Vec::new();
                    }
                    if let Some(p) = status.next_occurrence.as_mut() {
                        keys.next = take_derived(&mut p.idempotency_key, uid_text, p.nominal);
                    }
                    if let Some(l) = status.last_occurrence.as_mut() {
                        keys.last = take_derived(&mut l.idempotency_key, uid_text, l.nominal);
                    }
                }
                let listing = inner.listing;
                inner.by_uid.insert(
                    uid,
                    Entry {
                        resource_version,
                        records: u16::try_from(records).unwrap_or(u16::MAX),
                        conditions,
                        keys,
                        listing,
                    },
                );
            }
            Event::Delete(task) => {
                if let Some(uid) = task.metadata.uid.as_deref() {
                    inner.by_uid.remove(&Uid::of(uid));
                }
            }
            Event::Init => inner.listing += 1,
            Event::InitDone => {
                let listing = inner.listing;
                inner.by_uid.retain(|_, e| e.listing == listing);
            }
        }
    }

    /// How many history records `task` holds, if `task` is the cached object they were counted
    /// on (same UID and resourceVersion).
    pub fn held(&self, task: &RecurringTask) -> Option<usize> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.entry_of(task).map(|e| usize::from(e.records))
    }

    /// `task` as reconcile must see it: with the conditions and keys the cache left out put
    /// back.
    pub fn restore(&self, task: &RecurringTask) -> Restored {
        let Some(status) = &task.status else {
            return Restored::AsCached;
        };
        let keyless = |key: Option<&String>| key.is_some_and(String::is_empty);
        if !status.conditions.is_empty()
            && !keyless(status.next_occurrence.as_ref().map(|p| &p.idempotency_key))
            && !keyless(status.last_occurrence.as_ref().map(|l| &l.idempotency_key))
        {
            // Nothing taken out (kept in the object, or never through the cache).
            return Restored::AsCached;
        }
        let Some(uid) = task.metadata.uid.as_deref() else {
            // Never through the cache: it keeps only objects with a UID.
            return Restored::AsCached;
        };
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = inner.entry_of(task) else {
            return Restored::Unknown;
        };
        if entry.conditions.is_none() && !entry.keys.any() {
            return Restored::AsCached;
        }
        let conditions = entry
            .conditions
            .as_ref()
            .map(|k| inner.shared.conditions(k));
        let keys = entry.keys;
        drop(inner);
        let mut whole = task.clone();
        if let Some(status) = whole.status.as_mut() {
            if let Some(conditions) = conditions {
                status.conditions = conditions;
            }
            if let Some(p) = status.next_occurrence.as_mut().filter(|_| keys.next) {
                p.idempotency_key = occurrence_key(uid, p.nominal);
            }
            if let Some(l) = status.last_occurrence.as_mut().filter(|_| keys.last) {
                l.idempotency_key = occurrence_key(uid, l.nominal);
            }
        }
        Restored::Whole(Box::new(whole))
    }

    /// Whether the cached `task` is `Ready=True` (for `recur_objects`); its own conditions when
    /// the table keeps none of another version.
    pub fn is_ready(&self, task: &RecurringTask) -> bool {
        let own = task.status.as_ref().map_or(&[][..], |s| &s.conditions);
        if !own.is_empty() {
            return crate::controller::runner::is_ready(own);
        }
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(kept) = task
            .metadata
            .uid
            .as_deref()
            .and_then(|uid| inner.by_uid.get(&Uid::of(uid)))
            .and_then(|e| e.conditions.as_ref())
        else {
            return false;
        };
        inner.shared.is_ready(kept)
    }

    /// Tasks counted (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_uid
            .len()
    }
}

impl Inner {
    /// The entry of `task`'s UID, if it was taken from this very version of it.
    fn entry_of(&self, task: &RecurringTask) -> Option<&Entry> {
        let uid = task.metadata.uid.as_deref()?;
        let rv = task.metadata.resource_version.as_deref()?;
        self.by_uid
            .get(&Uid::of(uid))
            .filter(|e| e.resource_version.is(rv))
    }
}

/// The condition strings kept, each once, and the shapes they make (each condition's type,
/// status, reason and message, in order), each once.
#[derive(Debug, Default)]
struct Shared {
    texts: Vec<Box<str>>,
    text_index: HashMap<Box<str>, u32>,
    shapes: Vec<Shape>,
    shape_index: HashMap<Shape, u32>,
}

/// Each condition's type, status, reason and message, as indices into [`Shared`]'s texts.
type Shape = Box<[[u32; 4]]>;

impl Shared {
    /// `conditions` with their strings and shape shared, or `None` when one of them is new and
    /// the table is full (the conditions then stay where they are).
    fn keep(&mut self, conditions: &[Condition]) -> Option<Kept> {
        let (first, _) = conditions.split_first()?;
        let mut shape = Vec::with_capacity(conditions.len());
        for c in conditions {
            shape.push([
                self.text_index(&c.type_)?,
                self.text_index(&c.status)?,
                self.text_index(&c.reason)?,
                self.text_index(&c.message)?,
            ]);
        }
        let shape = self.shape_index(shape.into_boxed_slice())?;
        let since = Since::of(first);
        Some(if conditions.iter().all(|c| Since::of(c) == since) {
            Kept::Together { shape, since }
        } else {
            Kept::Apart {
                shape,
                since: conditions.iter().map(Since::of).collect(),
            }
        })
    }

    fn text_index(&mut self, text: &str) -> Option<u32> {
        if let Some(&i) = self.text_index.get(text) {
            return Some(i);
        }
        let i = u32::try_from(self.texts.len())
            .ok()
            .filter(|&i| (i as usize) < MAX_SHARED)?;
        self.texts.push(text.into());
        self.text_index.insert(text.into(), i);
        Some(i)
    }

    fn shape_index(&mut self, shape: Shape) -> Option<u32> {
        if let Some(&i) = self.shape_index.get(&shape) {
            return Some(i);
        }
        let i = u32::try_from(self.shapes.len())
            .ok()
            .filter(|&i| (i as usize) < MAX_SHARED)?;
        self.shapes.push(shape.clone());
        self.shape_index.insert(shape, i);
        Some(i)
    }

    fn text(&self, i: u32) -> &str {
        self.texts.get(i as usize).map_or("", |t| t)
    }

    fn shape(&self, kept: &Kept) -> &[[u32; 4]] {
        let (Kept::Together { shape, .. } | Kept::Apart { shape, .. }) = kept;
        self.shapes.get(*shape as usize).map_or(&[], |s| s)
    }

    fn conditions(&self, kept: &Kept) -> Vec<Condition> {
        self.shape(kept)
            .iter()
            .enumerate()
            .filter_map(|(i, &[type_, status, reason, message])| {
                let since = match kept {
                    Kept::Together { since, .. } => since,
                    Kept::Apart { since, .. } => since.get(i)?,
                };
                Some(Condition {
                    type_: self.text(type_).into(),
                    status: self.text(status).into(),
                    reason: self.text(reason).into(),
                    message: self.text(message).into(),
                    last_transition_time: since.last_transition_time.clone(),
                    observed_generation: since.observed_generation,
                })
            })
            .collect()
    }

    fn is_ready(&self, kept: &Kept) -> bool {
        self.shape(kept).iter().any(|&[type_, status, ..]| {
            crate::controller::runner::says_ready(self.text(type_), self.text(status))
        })
    }
}

/// A UID as a number when it is the usual UUID (16 bytes, against a 36-character string).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Uid {
    Uuid(u128),
    Other(Box<str>),
}

impl Uid {
    /// Dashes of a UUID's canonical form (8-4-4-4-12 lowercase hex digits).
    const DASHES: [usize; 4] = [8, 13, 18, 23];

    fn of(uid: &str) -> Self {
        Self::uuid(uid).map_or_else(|| Uid::Other(uid.into()), Uid::Uuid)
    }

    /// The number of a UUID in canonical form; any other UID is kept as written, so that two
    /// UIDs are equal exactly when their strings are.
    fn uuid(uid: &str) -> Option<u128> {
        if uid.len() != 36 {
            return None;
        }
        let mut n = 0u128;
        for (i, c) in uid.bytes().enumerate() {
            if Self::DASHES.contains(&i) {
                if c != b'-' {
                    return None;
                }
                continue;
            }
            let digit = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => return None,
            };
            n = (n << 4) | u128::from(digit);
        }
        Some(n)
    }
}

/// A resourceVersion as a number when it is one (as etcd's are; the API calls them opaque).
#[derive(Debug, PartialEq, Eq)]
enum Version {
    Number(u64),
    Other(Box<str>),
}

impl Version {
    fn of(rv: &str) -> Self {
        match Self::number(rv) {
            Some(n) => Version::Number(n),
            None => Version::Other(rv.into()),
        }
    }

    /// `rv` as a number if it is one in canonical form ("007" is not: it would come back as "7").
    fn number(rv: &str) -> Option<u64> {
        if rv.len() > 1 && rv.starts_with('0') || rv.starts_with('+') {
            return None;
        }
        rv.parse().ok()
    }

    fn is(&self, rv: &str) -> bool {
        match self {
            Version::Number(n) => Self::number(rv) == Some(*n),
            Version::Other(text) => &**text == rv,
        }
    }
}

#[cfg(test)]
#[path = "left_out_tests.rs"]
mod tests;
