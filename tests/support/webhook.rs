//! The admission webhook of an operator on loopback: a ValidatingWebhookConfiguration that sends
//! the reviews of one test's namespace (and of the TenantPolicies labelled for that test) to
//! `https://127.0.0.1:<port>/validate`, created with an empty `caBundle` before the operator
//! starts; the operator, in self-managed mode, fills it. Deleted when dropped, so no test's
//! webhook outlives it (with failurePolicy Fail it would refuse what it no longer answers).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};

use super::stack::free_port;
use super::{delete_quietly, kubectl, kubectl_input, unique_name};

/// Label that routes a TenantPolicy to one test's webhook (cluster-scoped objects have no
/// namespace to select them by).
pub const POLICY_LABEL: &str = "recur.dev/admission-test";

/// Name of the Secret of the self-managed certificate (the operator's default).
pub const SECRET: &str = "recur-webhook-tls";

pub struct Webhook {
    /// Name of the ValidatingWebhookConfiguration.
    pub configuration: String,
    /// Namespace of the operator's Secret, and the namespace whose objects are reviewed.
    pub namespace: String,
    /// The port of the first operator; [`Webhook::flags`] picks others for more replicas.
    pub port: u16,
    /// Value of [`POLICY_LABEL`] on this test's TenantPolicies.
    pub policy_label: String,
}

impl Webhook {
    /// Creates the configuration for the objects of `namespace`, calling a free loopback port.
    pub fn create(namespace: &str) -> Webhook {
        let configuration = unique_name("recur-admission");
        let port = free_port();
        let url = format!("https://127.0.0.1:{port}/validate");
        let entry = |name: &str, resources: &[&str], scope: &str| {
            json!({
                "name": name,
                "clientConfig": {"url": url},
                "rules": [{
                    "apiGroups": ["recur.dev"], "apiVersions": ["v1alpha1"],
                    "operations": ["CREATE", "UPDATE"], "resources": resources, "scope": scope
                }],
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "timeoutSeconds": 5,
                "failurePolicy": "Fail"
            })
        };
        let mut objects = entry(
            "tasks.recur.dev",
            &["recurringtasks", "reminders", "backfills"],
            "Namespaced",
        );
        objects["namespaceSelector"] =
            json!({"matchLabels": {"kubernetes.io/metadata.name": namespace}});
        let mut policies = entry("tenantpolicies.recur.dev", &["tenantpolicies"], "Cluster");
        policies["objectSelector"] = json!({"matchLabels": {POLICY_LABEL: configuration}});
        let config = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": configuration, "labels": {super::TEST_LABEL: "true"}},
            "webhooks": [objects, policies]
        });
        let out = kubectl_input(["create", "-f", "-"], config.to_string().as_bytes());
        assert!(
            out.status.success(),
            "creating ValidatingWebhookConfiguration {configuration}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Webhook {
            policy_label: configuration.clone(),
            configuration,
            namespace: namespace.to_string(),
            port,
        }
    }

    /// `recur run` flags serving this webhook on `port` (the configuration's port for the
    /// replica the API server calls), self-managed certificate in the test's namespace.
    pub fn flags(&self, port: u16) -> Vec<String> {
        [
            "--webhook-addr",
            &format!("127.0.0.1:{port}"),
            "--webhook-host",
            "127.0.0.1",
            "--webhook-configuration",
            &self.configuration,
            "--webhook-namespace",
            &self.namespace,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Waits until the API server reaches the webhook and trusts it: a server-side dry run of a
    /// plain task is admitted (before the operator publishes its CA the call fails, and with
    /// `failurePolicy: Fail` so does the apply).
    pub async fn answering(&self) {
        let probe = json!({
            "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
            "metadata": {"name": "webhook-probe", "namespace": self.namespace},
            "spec": {"userId": "probe", "title": "probe", "schedule": {"every": "1h"}}
        })
        .to_string();
        super::wait_for(
            std::time::Duration::from_secs(60),
            "the API server to call the webhook",
            || {
                let ok = kubectl_input(["apply", "--dry-run=server", "-f", "-"], probe.as_bytes())
                    .status
                    .success();
                async move { ok }
            },
        )
        .await;
    }

    /// The configuration as the API server has it.
    pub fn configuration(&self) -> Value {
        let out = kubectl([
            "get",
            "validatingwebhookconfiguration",
            &self.configuration,
            "-o",
            "json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The operator's Secret, if it exists.
    pub fn secret(&self) -> Option<Value> {
        let out = kubectl(["get", "secret", SECRET, "-n", &self.namespace, "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        delete_quietly("validatingwebhookconfiguration", &self.configuration);
    }
}

/// A cluster-scoped object deleted when dropped (TenantPolicies outlive test namespaces).
pub struct ClusterObject {
    pub kind: String,
    pub name: String,
}

impl Drop for ClusterObject {
    fn drop(&mut self) {
        delete_quietly(&self.kind, &self.name);
    }
}

/// The label [`hold_status_policy`] refuses status writes for.
pub const HOLD: &str = "test.recur.dev/hold-status";

/// A ValidatingAdmissionPolicy (and its binding) refusing status writes of tasks labelled
/// [`HOLD`] in `ns`, with the policy's default reason (422 Invalid, the same code a failed
/// JSON-patch `test` gets); deleted when the returned objects are dropped. It takes effect once
/// the API server has loaded it (a second or so): wait for a refused write.
pub fn hold_status_policy(ns: &str) -> Vec<ClusterObject> {
    let name = format!("hold-status-{ns}");
    let selector = json!({"matchLabels": {"kubernetes.io/metadata.name": ns}});
    let objects = [
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [{"apiGroups": ["recur.dev"], "apiVersions": ["*"],
                        "operations": ["UPDATE"], "resources": ["recurringtasks/status"]}],
                    "namespaceSelector": selector
                },
                "validations": [{
                    "expression": format!("!has(object.metadata.labels) || !('{HOLD}' in object.metadata.labels)"),
                    "message": "status writes are held by the test"
                }]
            }
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {"policyName": name, "validationActions": ["Deny"],
                     "matchResources": {"namespaceSelector": selector}}
        }),
    ];
    objects
        .iter()
        .map(|o| {
            let out = kubectl_input(["create", "-f", "-"], o.to_string().as_bytes());
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            ClusterObject {
                kind: o["kind"].as_str().unwrap().to_lowercase(),
                name: name.clone(),
            }
        })
        .collect()
}
