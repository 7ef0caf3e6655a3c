//! Publishing the self-managed CA: the `caBundle` of every webhook of the
//! ValidatingWebhookConfiguration, with a JSON patch of just that field (what else the
//! configuration holds belongs to whoever installed it: Helm, or the tests).
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::{ApiError, bounded};

/// Errors of publishing the CA bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("ValidatingWebhookConfiguration {0} does not exist (yet)")]
    Missing(String),
    #[error("reading ValidatingWebhookConfiguration {0}: {1}")]
    Read(String, ApiError),
    #[error("patching the caBundle of ValidatingWebhookConfiguration {0}: {1}")]
    Patch(String, ApiError),
}

/// The JSON patch setting `bundle` on each webhook whose caBundle differs; each change first
/// tests the webhook's name, so a configuration reordered meanwhile fails instead of changing
/// the wrong entry. Empty when nothing differs.
fn patch_for(config: &ValidatingWebhookConfiguration, bundle: &ByteString) -> Vec<Value> {
    let mut ops = vec![];
    for (i, webhook) in config.webhooks.iter().flatten().enumerate() {
        if webhook.client_config.ca_bundle.as_ref() == Some(bundle) {
            continue;
        }
        ops.push(
            json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": webhook.name}),
        );
        // ByteString serializes as base64, as the API expects.
        ops.push(json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": bundle}));
    }
    ops
}

/// Sets `ca_bundle` (PEM) on every webhook of configuration `name`; returns how many changed.
pub(crate) async fn publish(
    api: &Api<ValidatingWebhookConfiguration>,
    name: &str,
    ca_bundle: &str,
) -> Result<usize, BundleError> {
    let config = bounded(api.get_opt(name))
        .await
        .map_err(|e| BundleError::Read(name.to_string(), e))?
        .ok_or_else(|| BundleError::Missing(name.to_string()))?;
    let bundle = ByteString(ca_bundle.as_bytes().to_vec());
    let ops = patch_for(&config, &bundle);
    if ops.is_empty() {
        return Ok(0);
    }
    let changed = ops.len() / 2;
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops))
        .map_err(|e| BundleError::Patch(name.to_string(), ApiError::Encode(e)))?;
    let params = PatchParams {
        field_manager: Some("recur".to_string()),
        ..PatchParams::default()
    };
    bounded(api.patch(name, &params, &Patch::Json::<()>(patch)))
        .await
        .map_err(|e| BundleError::Patch(name.to_string(), e))?;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn only_webhooks_with_another_bundle_are_patched_each_after_a_name_test() {
        let config: ValidatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": {"name": "recur"},
            "webhooks": [
                {"name": "tasks.recur.dev", "clientConfig": {"url": "https://127.0.0.1:1/validate"},
                 "admissionReviewVersions": ["v1"], "sideEffects": "None"},
                {"name": "policies.recur.dev", "clientConfig": {"url": "https://127.0.0.1:1/validate", "caBundle": "Q0E="},
                 "admissionReviewVersions": ["v1"], "sideEffects": "None"}
            ]
        }))
        .unwrap();
        let ops = patch_for(&config, &ByteString(b"CA".to_vec()));
        assert_eq!(
            Value::Array(ops),
            json!([
                {"op": "test", "path": "/webhooks/0/name", "value": "tasks.recur.dev"},
                {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "Q0E="}
            ])
        );
        assert!(patch_for(&config, &ByteString(b"other".to_vec())).len() == 4);
    }
}
