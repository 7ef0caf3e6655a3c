//! The policy in force for one namespace, and the checks of a task or reminder against it. Pure:
//! the webhook and the operator build an [`Effective`] from what they have read and ask it.
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::denial::{Denial, Rule, policy_names};
use super::selector::selects;
use crate::api::{
    DEFAULT_MAX_PAYLOAD_BYTES, PubSubTarget, REMINDER_DEFAULT_APP_ID, REMINDER_DEFAULT_METHOD,
    RecurringTask, Reminder, TenantPolicy, UserIdRule,
};
use crate::dapr::{AppId, Method, PubSubName, Topic};

/// Longest compiled form of a user id pattern: a policy cannot make every check expensive.
const PATTERN_SIZE_LIMIT: usize = 1 << 16;

/// The policies that select one namespace, with the namespace's labels.
#[derive(Clone, Debug)]
pub struct Effective {
    namespace: String,
    labels: BTreeMap<String, String>,
    /// Selecting policies, by name.
    policies: Vec<Arc<TenantPolicy>>,
}

/// Where a tenant's occurrences go, after resolution and the policy's checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// Invoke `method` of `app_id`, the app id with its namespace (`backend.team-a`).
    Invoke { app_id: AppId, method: Method },
    /// Publish a CloudEvent to `topic` of the sidecar's component `pubsub`.
    Publish { pubsub: PubSubName, topic: Topic },
}

impl Resolved {
    /// The app id invoked, when the target is an app.
    pub fn app_id(&self) -> Option<&AppId> {
        match self {
            Resolved::Invoke { app_id, .. } => Some(app_id),
            Resolved::Publish { .. } => None,
        }
    }
}

/// `invoke <app id>/<method>` or `publish <component>/<topic>`: validated names only.
impl std::fmt::Display for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resolved::Invoke { app_id, method } => {
                write!(f, "invoke {}/{}", app_id.as_str(), method.as_str())
            }
            Resolved::Publish { pubsub, topic } => {
                write!(f, "publish {}/{}", pubsub.as_str(), topic.as_str())
            }
        }
    }
}

impl Effective {
    /// The policy of `namespace` (labelled `labels`) among `policies`. A policy whose selector is
    /// malformed selects nothing (the webhook refuses such policies; this only guards the
    /// operator against one stored before the webhook was installed).
    pub fn new(
        namespace: &str,
        labels: BTreeMap<String, String>,
        policies: impl IntoIterator<Item = Arc<TenantPolicy>>,
    ) -> Self {
        let mut selecting: Vec<Arc<TenantPolicy>> = policies
            .into_iter()
            .filter(|p| selects(&p.spec.namespace_selector, &labels).unwrap_or(false))
            .collect();
        selecting.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Effective {
            namespace: namespace.to_string(),
            labels,
            policies: selecting,
        }
    }

    /// The namespace (tenant).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn names(&self) -> Vec<&str> {
        self.policies
            .iter()
            .map(|p| p.metadata.name.as_deref().unwrap_or_default())
            .collect()
    }

    /// Resolves `app` (plain ids mean the tenant's own namespace) and checks that the tenant may
    /// call `method` on it: always in its own namespace, elsewhere only where a policy grants it.
    pub fn target(&self, field: &str, app: &AppId, method: &Method) -> Result<Resolved, Denial> {
        let resolved = app.in_namespace(&self.namespace).map_err(|e| Denial {
            field: field.to_string(),
            rule: Rule::Malformed,
            message: e.to_string(),
        })?;
        let target_ns = resolved.namespace().unwrap_or(&self.namespace);
        let granted = target_ns == self.namespace
            || self.policies.iter().any(|p| {
                p.spec.targets.iter().any(|g| {
                    g.namespace == target_ns
                        && (g.app_id == "*" || g.app_id == resolved.app())
                        && (g.methods.is_empty()
                            || g.methods.iter().any(|m| under(method.as_str(), m)))
                })
            });
        if granted {
            return Ok(Resolved::Invoke {
                app_id: resolved,
                method: method.clone(),
            });
        }
        let what = format!(
            "app {:?} of namespace {target_ns} (method {:?})",
            resolved.app(),
            method.as_str()
        );
        let message = if self.policies.is_empty() {
            format!(
                "{what} is outside namespace {ns}; no TenantPolicy selects namespace {ns}, so its tasks may call only apps of {ns} (the default; rule targets)",
                ns = self.namespace
            )
        } else {
            format!(
                "{what} is not granted to namespace {} by {} (rule targets)",
                self.namespace,
                policy_names(&self.names())
            )
        };
        Err(Denial {
            field: field.to_string(),
            rule: Rule::Targets,
            message,
        })
    }

    /// Checks that the tenant may publish to `topic` of `pubsub`: topics named
    /// `<namespace>.<anything>` on any component, others only where a policy grants them. Topics
    /// are shared by every tenant of a broker, so the namespace prefix is what keeps one
    /// tenant's events out of another's consumers.
    pub fn topic(&self, field: &str, target: &PubSubTarget) -> Result<Resolved, Denial> {
        let pubsub = PubSubName::new(&target.name).map_err(|e| malformed(field, e))?;
        let topic = Topic::new(&target.topic).map_err(|e| malformed(field, e))?;
        let own = topic
            .as_str()
            .strip_prefix(self.namespace.as_str())
            .is_some_and(|rest| rest.len() > 1 && rest.starts_with('.'));
        let granted = own
            || self.policies.iter().any(|p| {
                p.spec.pubsub.iter().any(|g| {
                    (g.name == "*" || g.name == pubsub.as_str())
                        && g.topics.iter().any(|t| topic_matches(t, topic.as_str()))
                })
            });
        if granted {
            return Ok(Resolved::Publish { pubsub, topic });
        }
        let what = format!("topic {:?} of pubsub {:?}", topic.as_str(), pubsub.as_str());
        let message = if self.policies.is_empty() {
            format!(
                "{what} is not a topic of namespace {ns}; no TenantPolicy selects namespace {ns}, so its tasks may publish only to topics named \"{ns}.<name>\" (the default; rule pubsub)",
                ns = self.namespace
            )
        } else {
            format!(
                "{what} is not granted to namespace {} by {}; its own topics are named \"{}.<name>\" (rule pubsub)",
                self.namespace,
                policy_names(&self.names()),
                self.namespace
            )
        };
        Err(Denial {
            field: field.to_string(),
            rule: Rule::PubSub,
            message,
        })
    }

    /// The destination of a target: its topic when it publishes, else its app and method
    /// (`app`, `method`: the target's values or the kind's defaults).
    fn destination(
        &self,
        field: &str,
        pubsub: Option<&PubSubTarget>,
        app: &str,
        method_: &str,
    ) -> Result<Resolved, Denial> {
        match pubsub {
            Some(target) => self.topic(&format!("{field}.pubsub"), target),
            None => self.target(
                field,
                &app_id(&format!("{field}.appId"), app)?,
                &method(&format!("{field}.method"), method_)?,
            ),
        }
    }

    /// Checks that the tenant may name `user_id`: any user id unless a selecting policy has a
    /// `userIds` rule, then one of those rules must admit it.
    pub fn user(&self, field: &str, user_id: &str) -> Result<(), Denial> {
        let rules: Vec<(&str, &UserIdRule)> = self
            .policies
            .iter()
            .filter_map(|p| {
                let name = p.metadata.name.as_deref().unwrap_or_default();
                p.spec.user_ids.as_ref().map(|r| (name, r))
            })
            .collect();
        if rules.is_empty() || rules.iter().any(|(_, r)| self.admits(r, user_id)) {
            return Ok(());
        }
        let names: Vec<&str> = rules.iter().map(|(n, _)| *n).collect();
        let shown: String = user_id.chars().take(80).collect();
        Err(Denial {
            field: field.to_string(),
            rule: Rule::UserIds,
            message: format!(
                "user id {shown:?} is not allowed in namespace {} by {} (rule userIds: {})",
                self.namespace,
                policy_names(&names),
                rules
                    .iter()
                    .map(|(_, r)| describe(r))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        })
    }

    fn admits(&self, rule: &UserIdRule, user_id: &str) -> bool {
        rule.allowed.iter().any(|u| u == user_id)
            || rule
                .from_namespace_label
                .as_ref()
                .is_some_and(|l| self.labels.get(l).is_some_and(|v| v == user_id))
            || rule
                .pattern
                .as_deref()
                .is_some_and(|p| full_match(p).is_ok_and(|re| re.is_match(user_id)))
    }

    /// The payload limit in bytes, and the policy that set it (`None`: the default).
    pub fn payload_limit(&self) -> (u32, Option<&str>) {
        self.smallest(|p| p.spec.limits.as_ref()?.max_payload_bytes)
            .map_or((DEFAULT_MAX_PAYLOAD_BYTES, None), |(v, n)| (v, Some(n)))
    }

    /// The most tasks the namespace may hold, and the policy that says so.
    pub fn max_tasks(&self) -> Option<(u32, &str)> {
        self.smallest(|p| p.spec.limits.as_ref()?.max_tasks)
    }

    /// Deliveries per second the namespace may make.
    pub fn occurrences_per_second(&self) -> Option<u32> {
        self.smallest(|p| p.spec.limits.as_ref()?.occurrences_per_second)
            .map(|(v, _)| v)
    }

    fn smallest(&self, limit: impl Fn(&TenantPolicy) -> Option<u32>) -> Option<(u32, &str)> {
        self.policies
            .iter()
            .filter_map(|p| Some((limit(p)?, p.metadata.name.as_deref().unwrap_or_default())))
            .min_by_key(|(v, _)| *v)
    }

    /// Checks the payload's size as compact JSON against the limit.
    pub fn payload(&self, payload: Option<&Map<String, Value>>) -> Result<(), Denial> {
        let Some(payload) = payload else {
            return Ok(());
        };
        let bytes = serde_json::to_vec(payload).map_or(usize::MAX, |b| b.len());
        let (limit, by) = self.payload_limit();
        if bytes <= limit as usize {
            return Ok(());
        }
        let source = match by {
            Some(name) => format!("set by TenantPolicy {name:?} (rule limits.maxPayloadBytes)"),
            None => "the default; a TenantPolicy's limits.maxPayloadBytes may raise it".into(),
        };
        Err(Denial {
            field: "spec.payload".into(),
            rule: Rule::MaxPayloadBytes,
            message: format!(
                "{bytes} bytes of JSON is over the limit of {limit} bytes for namespace {} ({source})",
                self.namespace
            ),
        })
    }

    /// Every check of a task: its target, its reminders' targets, its completion topic, its
    /// user id and its payload. `Ok` holds the resolved target of its occurrences.
    pub fn task(&self, task: &RecurringTask) -> Result<Resolved, Denial> {
        let resolved =
            self.destination("spec.target", task.pubsub(), task.app_id(), task.method())?;
        if let Some(completion) = &task.spec.completion {
            // The same rule as publishing: a namespace hears only its own topics, or granted ones.
            self.topic("spec.completion", &completion.target())?;
        }
        for (i, r) in task.spec.reminders.iter().enumerate() {
            let t = r.target.clone().unwrap_or_default();
            self.destination(
                &format!("spec.reminders[{i}].target"),
                t.pubsub.as_ref(),
                t.app_id_or(REMINDER_DEFAULT_APP_ID),
                t.method_or(REMINDER_DEFAULT_METHOD),
            )?;
        }
        self.user("spec.userId", &task.spec.user_id)?;
        self.payload(task.spec.payload.as_ref())?;
        Ok(resolved)
    }

    /// Every check of a reminder that needs no other object: its target and its user id.
    pub fn reminder(&self, rem: &Reminder) -> Result<Resolved, Denial> {
        let resolved = self.destination("spec.target", rem.pubsub(), rem.app_id(), rem.method())?;
        self.user("spec.userId", &rem.spec.user_id)?;
        Ok(resolved)
    }
}

/// Whether a grant's `pattern` (a topic, a prefix ending in `*`, or `*`) admits `topic`.
fn topic_matches(pattern: &str, topic: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
        None => pattern == topic,
    }
}

/// Whether `method` is `prefix` or below it, by whole segments.
fn under(method: &str, prefix: &str) -> bool {
    method
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// `pattern` anchored at both ends, compiled with a size limit.
pub(crate) fn full_match(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
}

fn describe(rule: &UserIdRule) -> String {
    let mut parts = vec![];
    if !rule.allowed.is_empty() {
        parts.push(format!("allowed {:?}", rule.allowed));
    }
    if let Some(p) = &rule.pattern {
        parts.push(format!("pattern {p:?}"));
    }
    if let Some(l) = &rule.from_namespace_label {
        parts.push(format!("fromNamespaceLabel {l:?}"));
    }
    parts.join(", ")
}

fn app_id(field: &str, raw: &str) -> Result<AppId, Denial> {
    AppId::new(raw).map_err(|e| malformed(field, e))
}

fn method(field: &str, raw: &str) -> Result<Method, Denial> {
    Method::new(raw).map_err(|e| malformed(field, e))
}

fn malformed(field: &str, err: crate::dapr::DaprError) -> Denial {
    // The error names `target.appId`, `target.method`, `target.pubsub.*` itself; keep only its
    // explanation.
    let text = err.to_string();
    let why = text.split_once(": ").map_or(text.as_str(), |(_, w)| w);
    Denial {
        field: field.to_string(),
        rule: Rule::Malformed,
        message: why.to_string(),
    }
}
