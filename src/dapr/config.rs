//! Where the sidecar is and how to authenticate to it, following Dapr's SDK conventions.
use std::fmt;
use std::time::Duration;

use super::DaprError;

/// Default `DAPR_HTTP_PORT`.
const DEFAULT_HTTP_PORT: u16 = 3500;

/// How to reach the Dapr sidecar.
#[derive(Clone, PartialEq, Eq)]
pub struct DaprConfig {
    /// Base URL of the sidecar's HTTP API, `http://host[:port]` (no path, no trailing slash).
    pub endpoint: String,
    /// Sent as `dapr-api-token` when set. Never printed.
    pub api_token: Option<String>,
    /// Total time for one invocation (connect, send, answer).
    pub timeout: Duration,
}

impl fmt::Debug for DaprConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DaprConfig")
            .field("endpoint", &self.endpoint)
            .field("api_token", &self.api_token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl DaprConfig {
    /// From explicit values. `endpoint` must be an `http://` URL without path, query or
    /// credentials; an empty token means none.
    pub fn new(
        endpoint: &str,
        api_token: Option<String>,
        timeout: Duration,
    ) -> Result<Self, DaprError> {
        Self::build(
            normalize_endpoint(endpoint, "endpoint")?,
            api_token,
            timeout,
        )
    }

    /// From the environment, as Dapr's SDKs do: `DAPR_HTTP_ENDPOINT` (a full `http://` URL) else
    /// `http://127.0.0.1:{DAPR_HTTP_PORT or 3500}`, and `DAPR_API_TOKEN` when set and not empty.
    pub fn from_env(timeout: Duration) -> Result<Self, DaprError> {
        Self::from_lookup(timeout, |name| std::env::var(name).ok())
    }

    /// [`DaprConfig::from_env`] with the variables supplied by `lookup` (for tests).
    pub fn from_lookup(
        timeout: Duration,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, DaprError> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let endpoint = match var("DAPR_HTTP_ENDPOINT") {
            Some(url) => normalize_endpoint(url.trim(), "DAPR_HTTP_ENDPOINT")?,
            None => {
                let port = match var("DAPR_HTTP_PORT") {
                    Some(p) => p
                        .trim()
                        .parse::<u16>()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or(DaprError::InvalidPort(p))?,
                    None => DEFAULT_HTTP_PORT,
                };
                format!("http://127.0.0.1:{port}")
            }
        };
        Self::build(endpoint, var("DAPR_API_TOKEN"), timeout)
    }

    fn build(
        endpoint: String,
        api_token: Option<String>,
        timeout: Duration,
    ) -> Result<Self, DaprError> {
        if timeout.is_zero() {
            return Err(DaprError::InvalidTimeout);
        }
        let api_token = api_token.filter(|t| !t.is_empty());
        Ok(DaprConfig {
            endpoint,
            api_token,
            timeout,
        })
    }

    /// Checks the fields again (they are public) and returns the normalized endpoint.
    pub(crate) fn validated_endpoint(&self) -> Result<String, DaprError> {
        if self.timeout.is_zero() {
            return Err(DaprError::InvalidTimeout);
        }
        normalize_endpoint(&self.endpoint, "endpoint")
    }
}

/// Accepts `http://host[:port][/]` and returns `http://host[:port]`. Anything that could change
/// where calls go (a path prefix, a query, credentials) is refused rather than guessed at.
fn normalize_endpoint(raw: &str, source_name: &'static str) -> Result<String, DaprError> {
    let bad = |reason: String| DaprError::InvalidEndpoint {
        source_name,
        reason,
    };
    let url = reqwest::Url::parse(raw).map_err(|e| bad(format!("not a URL ({e})")))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(bad(
                "https is not supported by this build (no TLS); use the sidecar's plain http:// address".into(),
            ));
        }
        other => {
            return Err(bad(format!(
                "scheme {other:?} is not supported; use http://host:port"
            )));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "must not contain credentials; use DAPR_API_TOKEN".into()
        ));
    }
    if !matches!(url.path(), "" | "/") {
        return Err(bad(format!(
            "must not have a path (found {:?})",
            url.path()
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment".into()));
    }
    // The origin drops the default port and re-serializes the host canonically.
    Ok(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const T: Duration = Duration::from_secs(10);

    use crate::test_env::env;

    #[test]
    fn defaults_to_loopback_3500() {
        let c = DaprConfig::from_lookup(T, env(&[])).unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:3500");
        assert_eq!(c.api_token, None);
        assert_eq!(c.timeout, T);
    }

    #[test]
    fn port_and_token_from_env() {
        let c = DaprConfig::from_lookup(
            T,
            env(&[("DAPR_HTTP_PORT", "3601"), ("DAPR_API_TOKEN", "s3cret")]),
        )
        .unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:3601");
        assert_eq!(c.api_token.as_deref(), Some("s3cret"));
        let c = DaprConfig::from_lookup(T, env(&[("DAPR_API_TOKEN", "")])).unwrap();
        assert_eq!(c.api_token, None);
    }

    #[test]
    fn endpoint_wins_over_port() {
        let c = DaprConfig::from_lookup(
            T,
            env(&[
                ("DAPR_HTTP_ENDPOINT", "http://localhost:4000/"),
                ("DAPR_HTTP_PORT", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(c.endpoint, "http://localhost:4000");
        let c = DaprConfig::from_lookup(T, env(&[("DAPR_HTTP_ENDPOINT", "http://[::1]")])).unwrap();
        assert_eq!(c.endpoint, "http://[::1]");
    }

    #[test]
    fn bad_values_are_named() {
        for port in ["0", "70000", "x", "-1"] {
            let e = DaprConfig::from_lookup(T, env(&[("DAPR_HTTP_PORT", port)])).unwrap_err();
            assert!(e.to_string().starts_with("DAPR_HTTP_PORT:"), "{e}");
        }
        let e = DaprConfig::from_lookup(T, env(&[("DAPR_HTTP_ENDPOINT", "https://dapr:3500")]))
            .unwrap_err();
        assert!(e.to_string().contains("https is not supported"), "{e}");
        assert!(e.to_string().starts_with("DAPR_HTTP_ENDPOINT:"), "{e}");
        for bad in [
            "127.0.0.1:3500",
            "ftp://x",
            "http://u:p@127.0.0.1:3500",
            "http://127.0.0.1:3500/v1.0/state",
            "http://127.0.0.1:3500?x=1",
            "http://127.0.0.1:3500#f",
            "http://",
        ] {
            assert!(DaprConfig::new(bad, None, T).is_err(), "{bad} accepted");
        }
        assert_eq!(
            DaprConfig::new("http://127.0.0.1:1", None, Duration::ZERO),
            Err(DaprError::InvalidTimeout)
        );
    }

    #[test]
    fn debug_hides_the_token() {
        let c = DaprConfig::new("http://127.0.0.1:3500", Some("hunter2".into()), T).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
