//! Dapr service invocation and pub/sub: the only ways recur talks to the outside world.
//!
//! Every call goes to `{endpoint}/v1.0/invoke/{appId}/method/{method}` of the sidecar, built from
//! a validated [`AppId`] and [`Method`] only, or to `{endpoint}/v1.0/publish/{pubsub}/{topic}`,
//! built from a validated [`PubSubName`] and [`Topic`], so no manifest can point the operator at
//! another Dapr API (state, secrets, ...) or, through Dapr's external-URL invocation, at another
//! host.
//!
//! [`DaprClient::invoke`] never fails: it classifies whatever happened into an [`Outcome`]
//! (delivered, duplicate, rejected for good, retry later, circuit open). [`DaprError`] is only for
//! configuration and validation.
mod backoff;
mod breaker;
mod client;
mod config;
mod retry_after;
mod target;
mod topic;

pub use backoff::{backoff, circuit_retry, circuit_spread};
pub use breaker::{BreakerConfig, BreakerState, Clock, SystemClock};
pub use client::{DaprClient, Invocation, Invoked, Outcome, Publication, RetryReason};
pub use config::DaprConfig;
pub use retry_after::{RETRY_AFTER_CAP, parse_retry_after};
pub use target::{AppId, Method};
pub use topic::{PubSubName, Topic};

/// Configuration and validation errors of the Dapr client. Outcomes of calls are not errors.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DaprError {
    /// `target.appId` is not a DNS-1123 label (optionally `app.namespace`).
    #[error("target.appId: {0}")]
    InvalidAppId(String),
    /// `target.method` is not a plain relative path.
    #[error("target.method: {0}")]
    InvalidMethod(String),
    /// `target.pubsub.name` is not a component name.
    #[error("target.pubsub.name: {0}")]
    InvalidPubSub(String),
    /// `target.pubsub.topic` has characters a topic cannot have here.
    #[error("target.pubsub.topic: {0}")]
    InvalidTopic(String),
    /// The sidecar endpoint (`DAPR_HTTP_ENDPOINT` or an explicit value) is unusable.
    #[error("{source_name}: {reason}")]
    InvalidEndpoint {
        source_name: &'static str,
        reason: String,
    },
    /// `DAPR_HTTP_PORT` is not a port number.
    #[error("DAPR_HTTP_PORT: {0:?} is not a port number (1-65535)")]
    InvalidPort(String),
    /// The API token cannot be sent as a header (its value is never shown).
    #[error("DAPR_API_TOKEN: contains characters that cannot be sent in an HTTP header")]
    InvalidToken,
    /// The call timeout is zero.
    #[error("the Dapr call timeout must be greater than zero")]
    InvalidTimeout,
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client for the Dapr sidecar: {0}")]
    Client(String),
    /// The sidecar's outbound health check did not answer 204.
    #[error("the Dapr sidecar at {endpoint} is not ready: {detail}")]
    Unhealthy { endpoint: String, detail: String },
}

/// Most characters of a network-supplied message that go into status, events and logs.
pub(crate) const MESSAGE_LIMIT: usize = 256;
/// Most characters of a backend id.
pub(crate) const BACKEND_ID_LIMIT: usize = 128;

/// Makes text from the network safe to store in Kubernetes status and events: whitespace controls
/// become spaces, other control and bidi-override characters are dropped, runs of spaces collapse,
/// and the result is cut to `max` characters (with `…` when cut).
pub(crate) fn sanitize(text: &str, max: usize) -> String {
    let mut cleaned = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            c if c.is_whitespace() => {
                if !cleaned.is_empty() && !cleaned.ends_with(' ') {
                    cleaned.push(' ');
                }
            }
            c if c.is_control() || is_bidi_control(c) => {}
            c => cleaned.push(c),
        }
    }
    let cleaned = cleaned.trim_end();
    if cleaned.chars().count() <= max {
        return cleaned.to_owned();
    }
    let mut cut: String = cleaned.chars().take(max.saturating_sub(1)).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

/// Characters that reorder displayed text (Trojan Source style tricks in `kubectl describe`).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_drops_controls_and_collapses_whitespace() {
        assert_eq!(
            sanitize("  a\r\nb\t\tc\u{1b}[31m\u{7f}d \u{202e}e  ", 100),
            "a b c[31md e"
        );
        assert_eq!(sanitize("", 10), "");
        assert_eq!(sanitize("\n\n", 10), "");
    }

    #[test]
    fn sanitize_truncates_by_characters() {
        let long = "é".repeat(300);
        let out = sanitize(&long, MESSAGE_LIMIT);
        assert_eq!(out.chars().count(), MESSAGE_LIMIT);
        assert!(out.ends_with('…'));
        assert_eq!(sanitize("abcdef", 6), "abcdef");
        assert_eq!(sanitize("abcdefg", 6), "abcde…");
        assert!(sanitize(&"a ".repeat(500), 20).chars().count() <= 20);
    }

    #[test]
    fn errors_name_the_field() {
        assert!(
            DaprError::InvalidAppId("x".into())
                .to_string()
                .starts_with("target.appId: ")
        );
        assert!(
            DaprError::InvalidMethod("x".into())
                .to_string()
                .starts_with("target.method: ")
        );
    }
}
