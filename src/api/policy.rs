//! `TenantPolicy`: the platform team's word on what crosses namespaces. A namespace is a tenant;
//! without a policy its tasks may call only apps in their own namespace, with payloads of at most
//! 64 KiB. Policies grant more (other namespaces' apps, method prefixes), restrict user ids, and
//! set limits. Cluster-scoped: tenants who may create tasks cannot write it.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::METHOD_PATTERN;

/// Payload limit when no policy sets one.
pub const DEFAULT_MAX_PAYLOAD_BYTES: u32 = 64 * 1024;
/// The most any policy may allow: far below the API server's object limit (about 1.5 MB), so a
/// namespace cannot fill the operator's memory with a few hundred tasks.
pub const MAX_PAYLOAD_BYTES_CAP: u32 = 1024 * 1024;
/// A DNS-1123 label (namespace or app id).
pub const LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

/// What the tasks and reminders of the selected namespaces may do beyond their own namespace,
/// which user ids they may name, and their limits. Several policies may select one namespace:
/// grants add up (targets, user ids) and limits take the strictest value set.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "recur.dev",
    version = "v1alpha1",
    kind = "TenantPolicy",
    plural = "tenantpolicies",
    singular = "tenantpolicy",
    shortname = "tp",
    category = "recur",
    doc = "The platform's policy for the recur tasks of the namespaces it selects.",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TenantPolicySpec {
    /// The namespaces (tenants) this policy applies to. `{}` selects every namespace.
    pub namespace_selector: LabelSelector,

    /// Apps in other namespaces the selected namespaces' tasks and reminders may call. Apps in a
    /// task's own namespace need no grant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub targets: Vec<TargetGrant>,

    /// Pub/sub components and topics the selected namespaces' tasks and reminders may publish
    /// to, besides the topics named `<namespace>.<anything>` every namespace may use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub pubsub: Vec<PubSubGrant>,

    /// Which `userId`s the selected namespaces' tasks and reminders may name. Unset: any user id,
    /// which the backend must then read as "a user of this namespace" (`X-Recur-Namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self.allowed) > 0 || has(self.pattern) || has(self.fromNamespaceLabel)").message("userIds must set allowed, pattern or fromNamespaceLabel"))]
    pub user_ids: Option<UserIdRule>,

    /// Limits of each selected namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

/// Leave to call an app of another namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetGrant {
    /// The namespace of the app.
    #[schemars(regex(pattern = LABEL_PATTERN), length(max = 63))]
    pub namespace: String,
    /// The app id in that namespace, or `*` for any app of it.
    #[schemars(
        regex(pattern = r"^(\*|[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)$"),
        length(max = 63)
    )]
    pub app_id: String,
    /// Method prefixes that may be called, by whole path segments (`api/orders` allows
    /// `api/orders` and `api/orders/7`, not `api/orders-admin`). Empty: any method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(regex(pattern = METHOD_PATTERN), length(max = 256)))]
    pub methods: Vec<String>,
}

/// Leave to publish to topics of a pub/sub component.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PubSubGrant {
    /// The component's name, or `*` for any component of the operator's sidecar.
    #[schemars(
        regex(pattern = r"^(\*|[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)$"),
        length(max = 63)
    )]
    pub name: String,
    /// Topics: a name as it is, or a prefix ending in `*` (`billing.*`). At least one.
    #[schemars(
        length(min = 1, max = 64),
        inner(
            regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,248}\*?$|^\*$"),
            length(max = 250)
        )
    )]
    pub topics: Vec<String>,
}

/// The user ids a namespace's tasks may name: any of the rules set admits it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserIdRule {
    /// User ids allowed as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 253)))]
    pub allowed: Vec<String>,
    /// A regular expression (RE2 syntax, no look-around) the whole user id must match, for
    /// example `team-a-[a-z0-9-]+`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub pattern: Option<String>,
    /// A label of the namespace whose value is a user id the namespace may name, for example
    /// `recur.dev/user-id`: the namespace owner's label decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 317))]
    pub from_namespace_label: Option<String>,
}

/// Limits of one namespace. Where several policies set one, the smallest applies.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Most RecurringTasks in the namespace (checked when one is created; a `ResourceQuota` on
    /// `count/recurringtasks.recur.dev` is the hard guarantee).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub max_tasks: Option<u32>,
    /// Largest `payload`, as compact JSON bytes. Default 65536; at most 1048576.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_048_576))]
    pub max_payload_bytes: Option<u32>,
    /// Most deliveries per second from the namespace (tasks and reminders); occurrences beyond
    /// it wait their turn, none is dropped. Unset: no limit besides the fair share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000))]
    pub occurrences_per_second: Option<u32>,
}
