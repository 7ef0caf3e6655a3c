//! The custom resources recur serves: `RecurringTask`, `Reminder` and `Backfill`
//! (`recur.dev/v1alpha1`), and
//! the platform team's cluster-scoped `TenantPolicy`.
//!
//! Everything the schema can check lives here as OpenAPI constraints and CEL rules, so `kubectl
//! apply` rejects the mistake with a message; what only the operator can check (time zones, cron
//! semantics) ends as `Ready=False` in status.
// kube's `printcolumn(...)` attributes repeat keys by design, which clippy mistakes for duplicates.
#![allow(clippy::duplicated_attributes)]

mod backfill;
mod common;
mod policy;
mod reminder;
mod task;

pub use backfill::*;
pub use common::*;
pub use policy::*;
pub use reminder::*;
pub use task::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every recur resource.
pub const GROUP: &str = "recur.dev";

/// The CRDs, in the order `recur crd` prints them.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        RecurringTask::crd(),
        Reminder::crd(),
        Backfill::crd(),
        TenantPolicy::crd(),
    ]
    .into_iter()
    .map(drop_unknown_formats)
    .collect()
}

/// schemars names Rust integer widths (`uint32`, `uint64`) as formats the apiserver does not know
/// and warns about on every apply; the `minimum: 0` next to them already says what matters.
fn drop_unknown_formats(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                let unknown = map.get("format").and_then(|f| f.as_str()).is_some_and(|f| {
                    matches!(
                        f,
                        "uint"
                            | "uint8"
                            | "uint16"
                            | "uint32"
                            | "uint64"
                            | "int8"
                            | "int16"
                            | "double"
                            | "float"
                    )
                });
                if unknown {
                    map.remove("format");
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let Ok(mut value) = serde_json::to_value(&crd) else {
        return crd;
    };
    walk(&mut value);
    serde_json::from_value(value).unwrap_or(crd)
}

/// The CRDs as one multi-document YAML stream: exactly what `crds/` and the chart hold.
pub fn crds_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
    }
    Ok(out)
}

/// The file name under `crds/` for each CRD, paired with its YAML document.
pub fn crd_files() -> Result<Vec<(String, String)>, serde_saphyr::SerializeError> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = format!("{}.yaml", crd.metadata.name.clone().unwrap_or_default());
            Ok((name, format!("---\n{}", serde_saphyr::to_string(&crd)?)))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    /// Each task the operator serves stays in its watch cache as this type (100,000 at scale,
    /// `docs/scaling.md`), so the parts most tasks leave unset are boxed: unboxed, the struct
    /// was 1,824 bytes before anything it points to.
    #[test]
    fn a_cached_task_is_small_inline() {
        let (task, spec, status) = (
            size_of::<super::RecurringTask>(),
            size_of::<super::RecurringTaskSpec>(),
            size_of::<super::RecurringTaskStatus>(),
        );
        println!("RecurringTask {task} B inline (spec {spec} B, status {status} B)");
        assert!(task <= 1_200, "RecurringTask is {task} bytes inline");
    }

    /// A task's name goes into the path of an API request unencoded: only a DNS-1123 subdomain
    /// passes, and the schema's pattern says the same.
    #[test]
    fn only_object_names_are_used_as_task_names() {
        let re = regex::Regex::new(super::common::OBJECT_NAME_PATTERN).unwrap();
        for good in ["report", "nightly-report", "a.b-c.d", "0", &"a".repeat(253)] {
            assert!(super::is_object_name(good), "{good}");
            assert!(re.is_match(good), "{good}");
        }
        for bad in [
            "",
            "x?resourceVersion=0",
            "x/status",
            "..",
            "a..b",
            "-a",
            "a-",
            "A",
            "a b",
            "%2e%2e",
            &"a".repeat(254),
        ] {
            assert!(!super::is_object_name(bad), "{bad}");
            let task_ref = super::TaskRef { name: bad.into() };
            assert_eq!(task_ref.valid_name(), None, "{bad}");
            if bad.len() <= 253 {
                assert!(!re.is_match(bad), "{bad}");
            }
        }
    }
}
