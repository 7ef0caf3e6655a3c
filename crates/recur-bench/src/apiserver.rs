//! The apiserver's request counters: snapshots of its `/metrics` and what changed between two.
use std::collections::BTreeMap;

use kube::Client;
use kube::api::GetParams;

use crate::error::{Res, msg};
use crate::prometheus::{label, sample_sum, samples};
use crate::results::ApiDelta;

/// `apiserver_request_total` summed per "VERB resource[/subresource]".
pub fn request_totals(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (name, labels, value) in samples(text) {
        if name != "apiserver_request_total" {
            continue;
        }
        let resource = label(&labels, "resource");
        let sub = label(&labels, "subresource");
        let what = match (resource, sub) {
            ("", _) => "(non-resource)".to_owned(),
            (r, "") => r.to_owned(),
            (r, s) => format!("{r}/{s}"),
        };
        *out.entry(format!("{} {what}", label(&labels, "verb")))
            .or_insert(0.0) += value;
    }
    out
}

/// The apiserver's own metrics, read with the kubeconfig's (admin) credentials.
pub async fn apiserver_metrics(client: &Client) -> Res<String> {
    let request = kube::core::Request::new("")
        .get("metrics", &GetParams::default())
        .map_err(|e| msg(format!("building GET /metrics: {e}")))?;
    Ok(client.request_text(request).await?)
}

/// Whether a "VERB resource[/subresource]" key is about one of `resources`.
pub fn is_own<S: AsRef<str>>(key: &str, resources: &[S]) -> bool {
    let what = key.split_once(' ').map_or("", |(_, w)| w);
    let resource = what.split('/').next().unwrap_or("");
    resources.iter().any(|r| r.as_ref() == resource)
}

pub fn api_delta(before: &str, after: &str, own: &[&str]) -> ApiDelta {
    let (b, a) = (request_totals(before), request_totals(after));
    let mut by_request = BTreeMap::new();
    for (key, value) in &a {
        let d = value - b.get(key).copied().unwrap_or(0.0);
        if d > 0.0 {
            by_request.insert(key.clone(), d);
        }
    }
    ApiDelta {
        // fold from +0.0: an empty f64 sum() is -0.0, printed "-0".
        all: by_request.values().fold(0.0, |a, v| a + v),
        own: by_request
            .iter()
            .filter(|(k, _)| is_own(k, own))
            .fold(0.0, |a, (_, v)| a + v),
        own_resources: own.iter().map(|s| s.to_string()).collect(),
        by_request,
    }
}

/// The mean of a histogram over a window: the change of its `_sum` over the change of its
/// `_count`, both summed over the series with the labels `want`; `None` without observations.
pub fn window_mean(before: &str, after: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let delta = |suffix: &str| {
        let series = format!("{name}_{suffix}");
        sample_sum(after, &series, want) - sample_sum(before, &series, want)
    };
    let count = delta("count");
    (count > 0.0).then(|| delta("sum") / count)
}

/// The series of kube-apiserver's request metrics for status patches of RecurringTasks.
pub const STATUS_PATCH: &[(&str, &str)] = &[
    ("verb", "PATCH"),
    ("resource", "recurringtasks"),
    ("subresource", "status"),
];

/// kube-apiserver's mean time per status patch of a RecurringTask between two snapshots, in ms.
pub fn status_patch_ms(before: &str, after: &str) -> Option<f64> {
    window_mean(
        before,
        after,
        "apiserver_request_duration_seconds",
        STATUS_PATCH,
    )
    .map(|s| s * 1000.0)
}

/// Status patches of RecurringTasks the apiserver answered between two snapshots.
pub fn status_patches(before: &str, after: &str) -> f64 {
    sample_sum(after, "apiserver_request_total", STATUS_PATCH)
        - sample_sum(before, "apiserver_request_total", STATUS_PATCH)
}

/// Open watches on recurringtasks, from `apiserver_longrunning_requests`.
pub async fn open_task_watches(client: &Client) -> Res<f64> {
    let text = apiserver_metrics(client).await?;
    Ok(sample_sum(
        &text,
        "apiserver_longrunning_requests",
        &[("verb", "WATCH"), ("resource", "recurringtasks")],
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="recur.dev",resource="recurringtasks",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 10
apiserver_request_total{code="409",component="apiserver",dry_run="",group="recur.dev",resource="recurringtasks",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 1
apiserver_request_total{code="200",component="",dry_run="",group="",resource="",scope="",subresource="/metrics",verb="GET",version=""} 3
apiserver_longrunning_requests{component="apiserver",group="recur.dev",resource="recurringtasks",scope="namespace",subresource="",verb="WATCH",version="v1alpha1"} 2
"#;

    #[test]
    fn request_totals_sum_over_codes() {
        let totals = request_totals(BEFORE);
        assert_eq!(totals.get("PATCH recurringtasks/status"), Some(&11.0));
        assert_eq!(totals.get("GET (non-resource)"), Some(&3.0));
        assert_eq!(
            sample_sum(
                BEFORE,
                "apiserver_longrunning_requests",
                &[("verb", "WATCH"), ("resource", "recurringtasks")]
            ),
            2.0
        );
    }

    #[test]
    fn window_means_divide_the_sums_change_by_the_counts() {
        let series = r#"{verb="PATCH",resource="recurringtasks",subresource="status"}"#;
        let at = |sum: f64, count: f64| {
            format!(
                "apiserver_request_duration_seconds_sum{series} {sum}\napiserver_request_duration_seconds_count{series} {count}\n"
            )
        };
        let (before, after) = (at(2.0, 100.0), at(14.0, 300.0));
        assert_eq!(status_patch_ms(&before, &after), Some(60.0));
        assert_eq!(status_patch_ms(&before, &before), None);
    }

    #[test]
    fn deltas_split_own_resources_from_the_rest() {
        let after = BEFORE
            .replace("v1alpha1\"} 10", "v1alpha1\"} 1010")
            .replace("version=\"\"} 3", "version=\"\"} 4");
        let d = api_delta(BEFORE, &after, &["recurringtasks", "reminders"]);
        assert_eq!(d.own, 1000.0);
        assert_eq!(d.all, 1001.0);
        assert!(is_own("PATCH recurringtasks/status", &["recurringtasks"]));
        assert!(!is_own("GET (non-resource)", &["recurringtasks"]));
    }
}
