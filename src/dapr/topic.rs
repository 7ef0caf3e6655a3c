//! Validated publish targets: a pub/sub component name and a topic. The publish URL is assembled
//! from these parts only, and each admits only characters that need no escaping in a path
//! segment, so no manifest can reach another Dapr API through them.
use std::fmt;

use super::DaprError;

/// Longest component name (a DNS-1123 subdomain's label limit, as Dapr's own resource names).
const PUBSUB_MAX: usize = 63;
/// Longest topic (Kafka's limit, the strictest of the common brokers).
const TOPIC_MAX: usize = 249;

/// The name of a Dapr pub/sub component of the operator's sidecar: a DNS-1123 label.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PubSubName(String);

impl PubSubName {
    pub fn new(raw: &str) -> Result<Self, DaprError> {
        let bad = |why: String| Err(DaprError::InvalidPubSub(why));
        if raw.is_empty() || raw.len() > PUBSUB_MAX {
            return bad(format!(
                "{raw:?} must be 1 to {PUBSUB_MAX} characters long (it is {})",
                raw.chars().count()
            ));
        }
        let edge_ok =
            |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let all_ok = raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !all_ok || !edge_ok(raw.chars().next()) || !edge_ok(raw.chars().last()) {
            return bad(format!(
                "{raw:?} must be a component name: lowercase letters, digits and '-', starting and ending with a letter or digit"
            ));
        }
        Ok(PubSubName(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PubSubName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A topic: letters, digits, `.`, `_` and `-`, starting with a letter or digit (the characters
/// Redis streams, Kafka, NATS and cloud brokers all accept).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(String);

impl Topic {
    pub fn new(raw: &str) -> Result<Self, DaprError> {
        let bad = |why: String| Err(DaprError::InvalidTopic(why));
        if raw.is_empty() || raw.len() > TOPIC_MAX {
            return bad(format!(
                "must be 1 to {TOPIC_MAX} characters long (it is {})",
                raw.chars().count()
            ));
        }
        let first_ok = raw
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        let all_ok = raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !all_ok || !first_ok {
            return bad(format!(
                "{:?} must be letters, digits, '.', '_' and '-', starting with a letter or digit",
                shorten(raw)
            ));
        }
        Ok(Topic(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// At most 64 characters of a refused value, so a huge one does not flood a message.
fn shorten(raw: &str) -> String {
    raw.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn component_names_are_labels() {
        for good in ["pubsub", "redis-pubsub", "p1"] {
            assert!(PubSubName::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "PubSub",
            "-x",
            "x-",
            "a/b",
            "a..b",
            "a.b",
            "state%2fstore",
            &"a".repeat(64),
        ] {
            let err = PubSubName::new(bad).unwrap_err().to_string();
            assert!(err.starts_with("target.pubsub.name: "), "{err}");
        }
    }

    #[test]
    fn topics_stay_in_their_path_segment() {
        for good in ["team-a.occurrences", "orders_v2", "A.b-c_d", "7"] {
            assert!(Topic::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".hidden",
            "a/b",
            "../state",
            "a b",
            "a%2Fb",
            "a?x=1",
            "é",
            &"t".repeat(250),
        ] {
            let err = Topic::new(bad).unwrap_err().to_string();
            assert!(err.starts_with("target.pubsub.topic: "), "{err}");
        }
    }
}
