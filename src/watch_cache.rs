//! Waiting for a watch cache (a kube `Store`) to hold its first full list.
use std::time::Duration;

use kube::runtime::reflector::store::WriterDropped;
use kube::runtime::reflector::{Lookup, Store};

/// How often a waiter re-arms its wait: the longest a waiter sleeps past the first full list.
const REARM: Duration = Duration::from_millis(50);

/// Resolves once `store` is ready, for any number of waiters.
///
/// A store's readiness signal keeps a single waiting waker: with several waiters (the
/// controller's own runner, the readiness probe, the tenancy checks, the webhook) all but the
/// latest would sleep for ever. Re-arming the wait every [`REARM`] lets each one see it soon
/// (it was a second: readiness and the first reconciles came a second after every list).
pub async fn until_ready<K>(store: &Store<K>) -> Result<(), WriterDropped>
where
    K: Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        if let Ok(result) = tokio::time::timeout(REARM, store.wait_until_ready()).await {
            return result;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector::store;
    use kube::runtime::watcher::Event;

    use super::*;

    /// Every waiter sees the list within one re-arm, not only the one the store wakes.
    #[tokio::test(start_paused = true)]
    async fn every_waiter_sees_the_first_list_soon() {
        let (reader, mut writer) = store::<ConfigMap>();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let reader = reader.clone();
                tokio::spawn(async move {
                    until_ready(&reader).await.unwrap();
                    tokio::time::Instant::now()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let listed = tokio::time::Instant::now();
        writer.apply_watcher_event(&Event::InitDone);
        for waiter in waiters {
            let saw = waiter.await.unwrap() - listed;
            // Virtual time (the clock is paused): exact, not a wall-clock limit.
            assert!(
                saw <= Duration::from_millis(100),
                "a waiter saw the list {saw:?} after it came"
            );
        }
    }
}
