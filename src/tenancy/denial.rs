//! Why a task or reminder is refused: the field, the rule, and the policy that decided.
use std::fmt;

/// The policy rule a refusal is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// `spec.targets`: an app of another namespace that no policy grants.
    Targets,
    /// `spec.pubsub`: a topic outside the namespace's own that no policy grants.
    PubSub,
    /// `spec.userIds`: a user id no policy admits.
    UserIds,
    /// `spec.limits.maxPayloadBytes`.
    MaxPayloadBytes,
    /// `spec.limits.maxTasks`.
    MaxTasks,
    /// A reminder's `taskRef`/`taskId` names a task of another user.
    TaskOwner,
    /// The object cannot be read as its kind, or a policy is malformed.
    Malformed,
    /// The spec itself cannot be acted on, whatever the policy ([`crate::validate`]).
    Spec,
}

impl Rule {
    /// The rule as written in the policy (`spec.` omitted).
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Targets => "targets",
            Rule::PubSub => "pubsub",
            Rule::UserIds => "userIds",
            Rule::MaxPayloadBytes => "limits.maxPayloadBytes",
            Rule::MaxTasks => "limits.maxTasks",
            Rule::TaskOwner => "taskRef",
            Rule::Malformed => "schema",
            Rule::Spec => "spec",
        }
    }
}

/// A refusal: shown by `kubectl apply` (webhook) and in the `Ready` condition (operator).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The field of the refused object, e.g. `spec.target.appId`.
    pub field: String,
    pub rule: Rule,
    /// What is wrong and which policy (or the default) decided, in words.
    pub message: String,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for Denial {}

/// `TenantPolicy "a"`, `TenantPolicies "a", "b"`, for messages.
pub(crate) fn policy_names(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    match quoted.len() {
        1 => format!("TenantPolicy {}", quoted[0]),
        _ => format!("TenantPolicies {}", quoted.join(", ")),
    }
}
