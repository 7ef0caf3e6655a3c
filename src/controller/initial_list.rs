//! How a kind's watch cache gets its full list, at start and after every relist.
//!
//! kube-runtime's default is a paged LIST: 500 objects a request, the next page asked for only
//! once the last is decoded, so the apiserver and recur take turns. At 100,000 tasks that was
//! 201 requests and 19.3 s before a restarted operator was ready
//! (`docs/bench/results-n100000-spread-paged.md`). A streaming list (a WATCH with `sendInitialEvents`,
//! the apiserver's WatchList feature, on by default since Kubernetes 1.34) is one request served
//! from the apiserver's watch cache, decoded while it is sent, one object at a time.
//!
//! An apiserver without the feature refuses such a watch with 422, and kube-runtime's watcher
//! would retry it for ever and never sync: `auto` asks once, for nothing (a label no object has),
//! and falls back to pages when refused.
use kube::api::{Api, WatchParams};

/// `--initial-list`: how full lists are fetched.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InitialList {
    /// Streaming where the apiserver serves it, else paged.
    #[default]
    Auto,
    /// Always streaming (fails to sync on an apiserver without WatchList).
    Streaming,
    /// Always paged LISTs.
    Paged,
}

/// A label no object carries: the probe's answer is the check alone, not a list.
const PROBE_SELECTOR: &str = "recur.dev/initial-list-probe=none";

/// The strategy for `api`'s kind: `wanted`, or for `auto` what the apiserver accepts.
pub async fn resolve<K>(api: &Api<K>, kind: &str, wanted: InitialList) -> InitialList
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + 'static,
{
    if wanted != InitialList::Auto {
        return wanted;
    }
    let params = WatchParams::streaming_lists()
        .labels(PROBE_SELECTOR)
        .timeout(1);
    let answer = api.watch(&params, "0").await.map(drop);
    let chosen = decide(&answer);
    match &answer {
        Ok(()) => tracing::info!(kind, "full lists: streaming"),
        Err(err) => tracing::info!(kind, %err, "full lists: paged (streaming refused)"),
    }
    chosen
}

/// The probe's answer as a strategy. Anything but acceptance means pages: they work on every
/// apiserver, and a wrong guess towards streaming would leave the cache empty for ever.
fn decide(answer: &Result<(), kube::Error>) -> InitialList {
    match answer {
        Ok(()) => InitialList::Streaming,
        Err(_) => InitialList::Paged,
    }
}

#[cfg(test)]
mod tests {
    use super::{InitialList, decide};

    #[test]
    fn only_an_accepted_probe_means_streaming() {
        assert_eq!(decide(&Ok(())), InitialList::Streaming);
        let refused: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 422, "reason": "Invalid",
            "message": "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled",
            "details": {"causes": [{"reason": "FieldValueForbidden", "field": "sendInitialEvents"}]},
        }))
        .unwrap_or_default();
        assert_eq!(
            decide(&Err(kube::Error::Api(refused.boxed()))),
            InitialList::Paged
        );
        let unreachable = kube::Error::Service("connection refused".into());
        assert_eq!(decide(&Err(unreachable)), InitialList::Paged);
    }
}
