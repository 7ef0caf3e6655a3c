//! Waiting for a watch cache (a kube `Store`) to hold its first full list.
use std::time::Duration;

use kube::runtime::reflector::store::WriterDropped;
use kube::runtime::reflector::{Lookup, Store};

/// Resolves once `store` is ready, for any number of waiters.
///
/// A store's readiness signal keeps a single waiting waker: with several waiters (the
/// controller's own runner, the readiness probe, the tenancy checks, the webhook) all but the
/// latest would sleep for ever. Re-arming the wait every second lets each one see it.
pub async fn until_ready<K>(store: &Store<K>) -> Result<(), WriterDropped>
where
    K: Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        if let Ok(result) =
            tokio::time::timeout(Duration::from_secs(1), store.wait_until_ready()).await
        {
            return result;
        }
    }
}
