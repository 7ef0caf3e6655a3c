//! The custom resources recur serves: `RecurringTask` and `Reminder` (`recur.dev/v1alpha1`).
//!
//! Everything the schema can check lives here as OpenAPI constraints and CEL rules, so `kubectl
//! apply` rejects the mistake with a message; what only the operator can check (time zones, cron
//! semantics) ends as `Ready=False` in status.
mod common;
mod reminder;
mod task;

pub use common::*;
pub use reminder::*;
pub use task::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every recur resource.
pub const GROUP: &str = "recur.dev";

/// The CRDs, in the order `recur crd` prints them.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![RecurringTask::crd(), Reminder::crd()]
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
