//! Watches kept open in the background, reporting once a condition holds on what they saw.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::apiserver::open_task_watches;
use crate::error::{Res, msg};
use crate::say;

/// A watch kept open in the background. It reports `R` once `check` holds on the objects seen so
/// far and stays open (draining events) until it is closed, so the caller decides when the
/// apiserver sees it end.
pub struct Watch<R> {
    result: oneshot::Receiver<Res<(Instant, R)>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl<R: Send + 'static> Watch<R> {
    /// Starts the watch and returns once its initial list is done.
    pub async fn start<K, V>(
        api: Api<K>,
        mut extract: impl FnMut(&K, Option<&V>) -> V + Send + 'static,
        mut check: impl FnMut(&HashMap<String, V>) -> Option<R> + Send + 'static,
    ) -> Res<Self>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
        V: Send + 'static,
    {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (result_tx, result) = oneshot::channel();
        let (stop, mut stop_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut stream =
                std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
            let mut seen: HashMap<String, V> = HashMap::new();
            let mut ready = Some(ready_tx);
            let mut result_tx = Some(result_tx);
            loop {
                let event = tokio::select! {
                    _ = &mut stop_rx => return,
                    event = stream.next() => event,
                };
                let event = match event {
                    None => {
                        if let Some(tx) = result_tx.take() {
                            let _ = tx.send(Err(msg("the watch ended")));
                        }
                        return;
                    }
                    Some(Err(e)) => {
                        say(format!("watch error (retrying): {e}"));
                        continue;
                    }
                    Some(Ok(event)) => event,
                };
                match event {
                    watcher::Event::Init => seen.clear(),
                    watcher::Event::InitApply(o) | watcher::Event::Apply(o) => {
                        let name = o.name_any();
                        let value = extract(&o, seen.get(&name));
                        seen.insert(name, value);
                    }
                    watcher::Event::Delete(o) => {
                        seen.remove(&o.name_any());
                    }
                    watcher::Event::InitDone => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                }
                if ready.is_none()
                    && result_tx.is_some()
                    && let Some(r) = check(&seen)
                    && let Some(tx) = result_tx.take()
                {
                    let _ = tx.send(Ok((Instant::now(), r)));
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(120), ready_rx)
            .await
            .map_err(|_| msg("the watch did not list within 120s"))?
            .map_err(|_| msg("the watch ended before listing"))?;
        Ok(Watch {
            result,
            stop: Some(stop),
            task,
        })
    }

    /// Waits for the result, at most `timeout`.
    pub async fn result(&mut self, timeout: Duration, what: &str) -> Res<(Instant, R)> {
        match tokio::time::timeout(timeout, &mut self.result).await {
            Err(_) => Err(msg(format!(
                "timed out after {timeout:?} waiting for {what}"
            ))),
            Ok(Err(_)) => Err(msg(format!("the watch for {what} ended"))),
            Ok(Ok(r)) => r,
        }
    }

    /// Closes the watch (the apiserver counts a watch in `apiserver_request_total` when it ends).
    pub async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
    }
}

/// Closes a watch on recurringtasks and waits until the apiserver has seen it end, so that it
/// is counted before the next snapshot rather than inside the window.
pub async fn close_task_watch<R: Send + 'static>(client: &Client, watch: Watch<R>) -> Res<()> {
    let open = open_task_watches(client).await?;
    watch.close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_task_watches(client).await? > open - 1.0 {
        if Instant::now() >= deadline {
            say("the apiserver still counts the closed watch after 10s; going on");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
