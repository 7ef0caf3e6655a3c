//! Validated invocation targets. The invoke URL is assembled from these parts only, and each part
//! admits only characters that need no escaping and cannot leave its path segment(s).
use std::fmt;

use super::DaprError;

/// Longest DNS-1123 label.
const LABEL_MAX: usize = 63;
/// Longest method path.
const METHOD_MAX: usize = 256;

/// A Dapr app id: a DNS-1123 label, optionally `app.namespace` (also a label).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppId(String);

impl AppId {
    pub fn new(raw: &str) -> Result<Self, DaprError> {
        let bad = |why: String| Err(DaprError::InvalidAppId(why));
        if raw.is_empty() {
            return bad("must not be empty".into());
        }
        if raw.len() > 2 * LABEL_MAX + 1 {
            return bad(format!(
                "is {} characters long; at most {} are allowed",
                raw.chars().count(),
                2 * LABEL_MAX + 1
            ));
        }
        let mut parts = raw.split('.');
        let app = parts.next().unwrap_or_default();
        let namespace = parts.next();
        if parts.next().is_some() {
            return bad(format!(
                "{} must be an app id or app-id.namespace (one dot at most)",
                quoted(raw)
            ));
        }
        if let Err(why) = dns_label(app) {
            return bad(format!("{}: the app id {why}", quoted(raw)));
        }
        if let Some(ns) = namespace
            && let Err(why) = dns_label(ns)
        {
            return bad(format!("{}: the namespace {why}", quoted(raw)));
        }
        Ok(AppId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The app id without its `.namespace` suffix.
    pub fn app(&self) -> &str {
        self.0.split('.').next().unwrap_or(&self.0)
    }

    /// The `.namespace` suffix, when the id names one.
    pub fn namespace(&self) -> Option<&str> {
        self.0.split_once('.').map(|(_, ns)| ns)
    }

    /// This app in `namespace` (`app.namespace`), unless the id already names a namespace: how
    /// a tenant's plain `backend` comes to mean the `backend` of the tenant's own namespace.
    pub fn in_namespace(&self, namespace: &str) -> Result<AppId, DaprError> {
        match self.namespace() {
            Some(_) => Ok(self.clone()),
            None => AppId::new(&format!("{}.{namespace}", self.0)),
        }
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A method path of the target app, e.g. `api/tasks` or `api/tasks/42/reminder-sent`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Method(String);

impl Method {
    pub fn new(raw: &str) -> Result<Self, DaprError> {
        let bad = |why: String| Err(DaprError::InvalidMethod(why));
        if raw.is_empty() {
            return bad("must not be empty".into());
        }
        if raw.len() > METHOD_MAX {
            return bad(format!(
                "is {} bytes long; at most {METHOD_MAX} are allowed",
                raw.len()
            ));
        }
        if let Some(c) = raw.chars().find(|c| !is_unreserved(*c) && *c != '/') {
            let what = match c {
                '?' => "a query ('?')".to_owned(),
                '#' => "a fragment ('#')".to_owned(),
                '%' => "percent-escapes ('%')".to_owned(),
                ':' => "':' (it must be a path of the app, not a URL)".to_owned(),
                c if c.is_whitespace() || c.is_control() => {
                    format!("whitespace or control characters ({:?})", c)
                }
                c => format!("{c:?}"),
            };
            return bad(format!(
                "{} must not contain {what}; use letters, digits, '.', '_', '~', '-' and '/' between segments",
                quoted(raw)
            ));
        }
        if raw.starts_with('/') {
            return bad(format!(
                "{} must not start with '/' (write \"api/tasks\", not \"/api/tasks\")",
                quoted(raw)
            ));
        }
        for segment in raw.split('/') {
            match segment {
                "" => {
                    return bad(format!(
                        "{} has an empty path segment ('//' or a trailing '/')",
                        quoted(raw)
                    ));
                }
                "." | ".." => {
                    return bad(format!(
                        "{} must not contain '.' or '..' segments",
                        quoted(raw)
                    ));
                }
                _ => {}
            }
        }
        Ok(Method(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `{endpoint}/v1.0/invoke/{app}/method/{method}`. `endpoint` is a normalized `http://host:port`
/// and the parts are validated, so plain concatenation cannot produce anything else.
pub(crate) fn invoke_url(endpoint: &str, app: &AppId, method: &Method) -> String {
    format!(
        "{endpoint}/v1.0/invoke/{}/method/{}",
        app.as_str(),
        method.as_str()
    )
}

/// RFC 3986 unreserved characters (ASCII only).
fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
}

fn dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > LABEL_MAX {
        return Err(format!(
            "is {} characters long; at most {LABEL_MAX} are allowed",
            s.len()
        ));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("may contain only lowercase letters, digits and '-' (a DNS-1123 label)".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// The value for an error message: quoted, escaped, and cut short.
fn quoted(raw: &str) -> String {
    let mut s: String = raw.chars().take(80).collect();
    if s.len() < raw.len() {
        s.push('…');
    }
    format!("{s:?}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const EP: &str = "http://127.0.0.1:3500";

    #[test]
    fn good_targets_build_the_invoke_url() {
        let app = AppId::new("backend").unwrap();
        let m = Method::new("api/tasks").unwrap();
        assert_eq!(
            invoke_url(EP, &app, &m),
            "http://127.0.0.1:3500/v1.0/invoke/backend/method/api/tasks"
        );
        let app = AppId::new("notification-service.prod-1").unwrap();
        assert_eq!(app.app(), "notification-service");
        let m = Method::new("api/tasks/42/reminder-sent").unwrap();
        assert_eq!(
            invoke_url(EP, &app, &m),
            "http://127.0.0.1:3500/v1.0/invoke/notification-service.prod-1/method/api/tasks/42/reminder-sent"
        );
        for ok in ["a", "v1.0/x_y~z", "...a/b..", "a.b/c-d", &"x".repeat(256)] {
            assert!(Method::new(ok).is_ok(), "{ok}");
        }
        for ok in [
            "a",
            "0",
            "a-b",
            &"a".repeat(63),
            &format!("{}.{}", "a".repeat(63), "b".repeat(63)),
        ] {
            assert!(AppId::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn hostile_methods_are_refused() {
        let hostile = [
            "../../v1.0/state",
            "..",
            ".",
            "a/./b",
            "a/../b",
            "a/%2e%2e/b",
            "%2e%2e",
            "http://evil",
            "//evil/x",
            "/api/tasks",
            "api/tasks/",
            "a//b",
            "x?y",
            "x#y",
            "x\ny",
            "x\r\nHost: evil",
            "x y",
            "x\ty",
            "x\0y",
            "tâches",
            "a\u{202e}b",
            "ａpi",
            "a\\b",
            "a;b",
            "a@b",
            "",
            &"x".repeat(257),
        ];
        for m in hostile {
            let err = Method::new(m).expect_err(m);
            assert!(err.to_string().starts_with("target.method: "), "{err}");
        }
    }

    #[test]
    fn hostile_app_ids_are_refused() {
        let hostile = [
            "",
            "Backend",
            "back_end",
            "-backend",
            "backend-",
            "a.b.c",
            "a.",
            ".a",
            "a..b",
            "http://evil",
            "http%3A%2F%2Fevil",
            "evil.com:80",
            "../state",
            "a/b",
            "a b",
            "a\n",
            "bäckend",
            &"a".repeat(64),
            &format!("a.{}", "b".repeat(64)),
        ];
        for a in hostile {
            let err = AppId::new(a).expect_err(a);
            assert!(err.to_string().starts_with("target.appId: "), "{err}");
        }
    }

    #[test]
    fn urls_never_leave_the_invoke_api() {
        // Whatever validated parts are combined, the URL parses to the sidecar host and a path
        // under /v1.0/invoke/{app}/method/ that the URL parser leaves unchanged.
        let apps = ["backend", "a.b", "x-1"];
        let methods = ["api/tasks", "...", "a..b/..c", "~/_", "v1.0/state/x"];
        for a in apps {
            for m in methods {
                let (app, method) = (AppId::new(a).unwrap(), Method::new(m).unwrap());
                let url = invoke_url(EP, &app, &method);
                let parsed = reqwest::Url::parse(&url).unwrap();
                assert_eq!(parsed.host_str(), Some("127.0.0.1"));
                assert_eq!(parsed.port(), Some(3500));
                assert_eq!(parsed.path(), format!("/v1.0/invoke/{a}/method/{m}"));
                assert_eq!(parsed.query(), None);
                assert_eq!(parsed.fragment(), None);
            }
        }
    }

    #[test]
    fn error_messages_quote_and_shorten_the_value() {
        let err = Method::new(&format!("{}?", "a".repeat(300)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 256"), "{err}");
        let err = Method::new("a\nb").unwrap_err().to_string();
        assert!(!err.contains('\n'), "{err}");
        let err = AppId::new(&format!("B{}", "a".repeat(100)))
            .unwrap_err()
            .to_string();
        assert!(err.len() < 200, "{err}");
    }
}
