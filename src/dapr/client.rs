//! The invocation client: one POST to the sidecar per attempt, classified into an [`Outcome`].
//!
//! Classification (status of the answer, and whether its body is a Dapr error, i.e. a JSON object
//! whose `errorCode` looks like `ERR_...`; Dapr's message texts are never matched):
//!
//! | answer                                         | outcome                                     | breaker  |
//! |------------------------------------------------|---------------------------------------------|----------|
//! | 2xx                                            | `Delivered` (backend id from `id`/`task_id`/`taskId`; `replayed` with `Idempotent-Replayed: true`) | success |
//! | 409                                            | `InProgress` (a request with this key is still being processed) | success |
//! | 422                                            | `KeyReused` (the key was used with another payload) | success |
//! | 401                                            | `Retryable(Unauthorized)`                   | neutral  |
//! | 403 with a Dapr error                          | `Retryable(SidecarRefused)`                 | neutral  |
//! | 404 with a Dapr error                          | `Retryable(SidecarRefused)`                 | failure  |
//! | 408                                            | `Retryable(Timeout)`                        | failure  |
//! | 429                                            | `Retryable(RateLimited)`, with `Retry-After` | neutral |
//! | 5xx with a Dapr error (`ERR_DIRECT_INVOKE`...) | `Retryable(SidecarUnavailable)` (503: with `Retry-After`) | failure |
//! | other 5xx                                      | `Retryable(ServerError)` (503: with `Retry-After`) | failure |
//! | other 1xx/3xx/4xx                              | `Rejected` (redirects are not followed)     | success (the app's 403: neutral) |
//! | no connection, reset, broken answer            | `Retryable(Connection)`                     | failure  |
//! | no answer within the timeout                   | `Retryable(Timeout)`                        | failure  |
//!
//! A publish ([`DaprClient::publish`], `POST /v1.0/publish/{pubsub}/{topic}` with a CloudEvent)
//! goes through the same table: the sidecar answers 204 once the broker has the event, 404
//! `ERR_PUBSUB_NOT_FOUND` for an unknown component and 403 `ERR_PUBSUB_FORBIDDEN` for a topic the
//! component's scoping denies (deployment problems: retried, as above), 400 for a request it
//! cannot read (`Rejected`) and 500 `ERR_PUBSUB_PUBLISH_MESSAGE` while the broker is down
//! (retried). Its breaker is keyed by the component (`pubsub/{name}`) instead of an app id.
//!
//! Breakers are kept per tenant (the namespace a call is made for, also sent as
//! `X-Recur-Namespace`) and app id. A *neutral* answer counts neither way: 401, 403 and 429 say
//! the app (or the sidecar) refuses *this caller* (a token, an access policy, a quota), not that
//! the app is down; counting them would let one tenant's misconfiguration or quota open the
//! breaker, and a success would hide a real outage. A Dapr 404 (no route to the app id) still
//! counts. `Retry-After` of a 429 or 503 (seconds or an HTTP-date, at most 1 hour; garbage is
//! ignored) is a floor under the controllers' backoff.
//!
//! 409 and 422 follow the IETF `Idempotency-Key` header draft (draft-ietf-httpapi-idempotency-key-header):
//! a conforming backend replays its first answer (2xx) for a repeated key, answers 409 while
//! the first request with that key is still being processed and 422 when the key comes with a
//! different payload (for recur: the spec was edited between two attempts). The controllers ask
//! again after a 409 and, after a few 409s in a row, take the occurrence as delivered (older
//! backends answer every repeat with 409).
//!
//! Why 401 and sidecar 403/404 are retried: they say nothing about the occurrence, only about the
//! deployment (a wrong or rotated `DAPR_API_TOKEN`/app token, a Dapr access-control policy that
//! denies recur, an app id the sidecar cannot route). Marking occurrences failed for good would
//! lose every one of them until someone notices; retrying keeps them, the message in status says
//! what to fix, and the backoff (up to 5 minutes) keeps the hammering down (401 and 403 are
//! neutral for the breaker, above; a Dapr 404 also opens it). Real Dapr answers an
//! unknown or unreachable app id with 500 `ERR_DIRECT_INVOKE`, and 404 only when no app id was
//! given at all, which recur's URLs always include. A 403/404 *without* a Dapr error comes from
//! the app itself and is a `Rejected`.
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use tracing::debug;

use super::backoff::circuit_spread;
use super::breaker::{BreakerConfig, BreakerState, Breakers, Clock, SystemClock, Verdict};
use super::retry_after::parse_retry_after;
use super::target::{AppId, Method, invoke_url};
use super::topic::{PubSubName, Topic};
use super::{BACKEND_ID_LIMIT, DaprConfig, DaprError, MESSAGE_LIMIT, sanitize};
use crate::traces::TraceContext;

/// Most bytes of an answer's body read (enough for an id or an error message).
const BODY_LIMIT: usize = 64 * 1024;
/// Timeout of the outbound health check (capped by the call timeout).
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Header values: everything but visible ASCII, and `%` itself, is percent-encoded, so a value can
/// neither split a header nor be refused by the HTTP library.
const HEADER_UNSAFE: &AsciiSet = &CONTROLS.add(b' ').add(b'%');

/// One call: `POST {app}/{method}` with a JSON body.
#[derive(Clone, Copy, Debug)]
pub struct Invocation<'a> {
    pub app_id: &'a AppId,
    pub method: &'a Method,
    /// Sent as `Idempotency-Key`: the backend's duplicate detection.
    pub idempotency_key: &'a str,
    /// Sent as `X-User-Id`.
    pub user_id: &'a str,
    /// The tenant the call is made for (the namespace of the task or reminder): sent as
    /// `X-Recur-Namespace`, and the key of the breaker with the app id.
    pub namespace: &'a str,
    pub body: &'a serde_json::Value,
    /// Sent as `traceparent` (and `tracestate`): the sidecars and the app join the trace.
    pub trace: Option<&'a TraceContext>,
}

/// One publish: a CloudEvent 1.0 (`application/cloudevents+json`) to a topic of a pub/sub
/// component of the operator's sidecar. The event's `id` is the idempotency key: consumers
/// dedup on it, since a publish retried after a lost answer reaches the broker twice.
#[derive(Clone, Copy, Debug)]
pub struct Publication<'a> {
    pub pubsub: &'a PubSubName,
    pub topic: &'a Topic,
    /// The event's `id`, for logs.
    pub idempotency_key: &'a str,
    /// The tenant the event is published for: the key of the breaker with the component.
    pub namespace: &'a str,
    pub event: &'a serde_json::Value,
    /// Sent as `traceparent` (and `tracestate`), like the event's own attributes.
    pub trace: Option<&'a TraceContext>,
}

impl Publication<'_> {
    /// The breaker's (and the metrics') name of the destination.
    pub fn destination(&self) -> String {
        format!("pubsub/{}", self.pubsub)
    }
}

/// What came of a call, and how long it took (zero when the breaker refused it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invoked {
    pub outcome: Outcome,
    pub elapsed: Duration,
}

/// The classified result of one call. Messages are sanitized and at most 256 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer; `replayed` when the backend said it repeats its first answer for the key.
    Delivered {
        status: u16,
        backend_id: Option<String>,
        replayed: bool,
    },
    /// 409: a request with this key is still being processed, or (older backends) was before.
    InProgress,
    /// 422: the backend knows this key with a different payload.
    KeyReused { message: String },
    /// The app refused this call for good (4xx other than those retried, 1xx/3xx).
    Rejected { status: u16, message: String },
    /// Try again later with the same idempotency key, and not before `retry_after` when set
    /// (the `Retry-After` of a 429 or 503, at most an hour).
    Retryable {
        reason: RetryReason,
        message: String,
        retry_after: Option<Duration>,
    },
    /// Not called: the breaker of this tenant and app id is open for `retry_in`. Callers
    /// waiting on it should spread their retries over `spread` after that (see
    /// [`super::circuit_retry`]).
    CircuitOpen {
        retry_in: Duration,
        spread: Duration,
    },
}

impl Outcome {
    /// Every [`Outcome::label`], for dropping a metric series of each.
    pub const LABELS: [&'static str; 7] = [
        "delivered",
        "duplicate",
        "in_progress",
        "key_reused",
        "rejected",
        "retryable",
        "circuit_open",
    ];

    /// True for the outcomes worth another attempt later (not all count against the breaker).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Outcome::Retryable { .. })
    }

    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered {
                replayed: false, ..
            } => "delivered",
            Outcome::Delivered { replayed: true, .. } => "duplicate",
            Outcome::InProgress => "in_progress",
            Outcome::KeyReused { .. } => "key_reused",
            Outcome::Rejected { .. } => "rejected",
            Outcome::Retryable { .. } => "retryable",
            Outcome::CircuitOpen { .. } => "circuit_open",
        }
    }
}

/// Why a call is worth retrying.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetryReason {
    /// No connection to the sidecar, or it broke before a complete answer.
    Connection,
    /// No answer within the timeout (or HTTP 408).
    Timeout,
    /// HTTP 429.
    RateLimited,
    /// A 5xx from the app.
    ServerError,
    /// A 5xx Dapr error: the sidecar could not reach or resolve the app, or is not ready.
    SidecarUnavailable,
    /// A 403/404 Dapr error: access control denies the call, or the sidecar cannot route it.
    SidecarRefused,
    /// HTTP 401: the API token (recur to sidecar, or sidecar to app) is wrong or missing.
    Unauthorized,
}

impl RetryReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Connection => "connection",
            RetryReason::Timeout => "timeout",
            RetryReason::RateLimited => "rate_limited",
            RetryReason::ServerError => "server_error",
            RetryReason::SidecarUnavailable => "sidecar_unavailable",
            RetryReason::SidecarRefused => "sidecar_refused",
            RetryReason::Unauthorized => "unauthorized",
        }
    }
}

impl fmt::Display for RetryReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Dapr invocation client. Cheap to clone; clones share the connection pool and breakers.
#[derive(Clone)]
pub struct DaprClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    endpoint: String,
    /// Marked sensitive, so it is not shown by `Debug` of the request either.
    token: Option<HeaderValue>,
    timeout: Duration,
    breakers: Breakers,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for DaprClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DaprClient")
            .field("endpoint", &self.inner.endpoint)
            .field(
                "api_token",
                &self.inner.token.as_ref().map(|_| "<redacted>"),
            )
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl DaprClient {
    /// A client with the default breakers (5 failures, 30 s cool-down) on the real clock.
    pub fn new(config: DaprConfig) -> Result<Self, DaprError> {
        let breaker = BreakerConfig {
            probe_timeout: config.timeout,
            ..BreakerConfig::default()
        };
        Self::with_breaker(config, breaker, Arc::new(SystemClock))
    }

    /// A client with the given breaker tuning and clock.
    pub fn with_breaker(
        config: DaprConfig,
        breaker: BreakerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, DaprError> {
        let endpoint = config.validated_endpoint()?;
        let token = match &config.api_token {
            Some(t) if !t.is_empty() => {
                let mut value = HeaderValue::from_str(t).map_err(|_| DaprError::InvalidToken)?;
                value.set_sensitive(true);
                Some(value)
            }
            _ => None,
        };
        let http = reqwest::Client::builder()
            // The sidecar is local: a proxy from the environment must not see the calls or the
            // token, redirects must not send them elsewhere, and retries are ours to decide.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| DaprError::Client(e.to_string()))?;
        Ok(DaprClient {
            inner: Arc::new(Inner {
                http,
                endpoint,
                token,
                timeout: config.timeout,
                breakers: Breakers::new(breaker),
                clock,
            }),
        })
    }

    /// The sidecar's base URL.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// Calls `POST {endpoint}/v1.0/invoke/{app}/method/{method}` unless the breaker of the
    /// invocation's tenant and app is open.
    pub async fn invoke(&self, inv: &Invocation<'_>) -> Invoked {
        let url = invoke_url(&self.inner.endpoint, inv.app_id, inv.method);
        let request = self
            .inner
            .http
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("idempotency-key", header_value(inv.idempotency_key))
            .header("x-user-id", header_value(inv.user_id))
            .header("x-recur-namespace", header_value(inv.namespace));
        let request = with_trace(request, inv.trace);
        let invoked = self
            .guarded(inv.namespace, inv.app_id.as_str(), request, inv.body)
            .await;
        debug!(
            namespace = inv.namespace,
            app_id = inv.app_id.as_str(),
            method = inv.method.as_str(),
            key = inv.idempotency_key,
            outcome = invoked.outcome.label(),
            elapsed_ms = invoked.elapsed.as_millis() as u64,
            "dapr invocation"
        );
        invoked
    }

    /// Publishes `POST {endpoint}/v1.0/publish/{pubsub}/{topic}` unless the breaker of the
    /// tenant and component is open. The sidecar passes a CloudEvent it is given through, `id`
    /// included, adding its own tracing and routing attributes.
    pub async fn publish(&self, publication: &Publication<'_>) -> Invoked {
        let url = format!(
            "{}/v1.0/publish/{}/{}",
            self.inner.endpoint,
            publication.pubsub.as_str(),
            publication.topic.as_str()
        );
        let request = self.inner.http.post(url).header(
            CONTENT_TYPE,
            HeaderValue::from_static("application/cloudevents+json"),
        );
        let request = with_trace(request, publication.trace);
        let destination = publication.destination();
        let invoked = self
            .guarded(
                publication.namespace,
                &destination,
                request,
                publication.event,
            )
            .await;
        debug!(
            namespace = publication.namespace,
            pubsub = publication.pubsub.as_str(),
            topic = publication.topic.as_str(),
            key = publication.idempotency_key,
            outcome = invoked.outcome.label(),
            elapsed_ms = invoked.elapsed.as_millis() as u64,
            "dapr publish"
        );
        invoked
    }

    /// Sends `request` with `body` unless the breaker of `(namespace, destination)` is open, and
    /// records the answer with that breaker.
    async fn guarded(
        &self,
        namespace: &str,
        destination: &str,
        request: reqwest::RequestBuilder,
        body: &serde_json::Value,
    ) -> Invoked {
        let acquired =
            self.inner
                .breakers
                .try_acquire(namespace, destination, self.inner.clock.now());
        let permit = match acquired {
            Ok(permit) => permit,
            Err(retry_in) => {
                debug!(
                    namespace,
                    destination,
                    retry_in_ms = retry_in.as_millis() as u64,
                    "circuit open; not calling"
                );
                let spread = circuit_spread(self.inner.breakers.config().cool_down);
                return Invoked {
                    outcome: Outcome::CircuitOpen { retry_in, spread },
                    elapsed: Duration::ZERO,
                };
            }
        };
        let started = Instant::now();
        let (outcome, status) = self.send(request, body).await;
        let elapsed = started.elapsed();
        self.inner
            .breakers
            .record(permit, verdict(&outcome, status), self.inner.clock.now());
        Invoked { outcome, elapsed }
    }

    /// The outcome, and the HTTP status when there was an answer.
    async fn send(
        &self,
        mut request: reqwest::RequestBuilder,
        body: &serde_json::Value,
    ) -> (Outcome, Option<u16>) {
        let body = match serde_json::to_vec(body) {
            Ok(body) => body,
            Err(e) => {
                let outcome = Outcome::Rejected {
                    status: 0,
                    message: sanitize(&format!("the request body: {e}"), MESSAGE_LIMIT),
                };
                return (outcome, None);
            }
        };
        request = request.body(body);
        if let Some(token) = &self.inner.token {
            request = request.header("dapr-api-token", token.clone());
        }
        match request.send().await {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let replayed = response
                    .headers()
                    .get("idempotent-replayed")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
                // Only 429 and 503 define it; on any other answer it means nothing.
                let retry_after = matches!(status, 429 | 503)
                    .then(|| response.headers().get("retry-after"))
                    .flatten()
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
                let body = read_limited(&mut response).await;
                let outcome = match classify(status, &body, retry_after) {
                    Outcome::Delivered {
                        status, backend_id, ..
                    } => Outcome::Delivered {
                        status,
                        backend_id,
                        replayed,
                    },
                    other => other,
                };
                (outcome, Some(status))
            }
            Err(err) => (self.transport_failure(&err), None),
        }
    }

    fn transport_failure(&self, err: &reqwest::Error) -> Outcome {
        let endpoint = &self.inner.endpoint;
        let (reason, message) = if err.is_timeout() {
            (
                RetryReason::Timeout,
                format!(
                    "no answer within {:?} (the sidecar or the app is slow or hanging)",
                    self.inner.timeout
                ),
            )
        } else if err.is_connect() {
            (
                RetryReason::Connection,
                format!(
                    "cannot connect to the Dapr sidecar at {endpoint}: {}",
                    root_cause(err)
                ),
            )
        } else {
            (
                RetryReason::Connection,
                format!(
                    "the call to the Dapr sidecar at {endpoint} broke off: {}",
                    root_cause(err)
                ),
            )
        };
        Outcome::Retryable {
            reason,
            message: sanitize(&message, MESSAGE_LIMIT),
            retry_after: None,
        }
    }

    /// The state of every breaker kept, by `(namespace, app id)`, sorted (for metrics).
    pub fn breaker_states(&self) -> Vec<((String, String), BreakerState)> {
        self.inner.breakers.states(self.inner.clock.now())
    }

    /// Forgets the breakers no call asked for in `BreakerConfig::idle_after`, whatever their
    /// state, and returns their `(namespace, app id)`, sorted, so what is kept per app (metric
    /// series) can follow.
    pub fn evict_idle(&self) -> Vec<(String, String)> {
        self.inner.breakers.evict_idle(self.inner.clock.now())
    }

    /// `GET {endpoint}/v1.0/healthz/outbound` must answer 204 within 2 s: the sidecar can serve
    /// recur's calls. For the readiness probe.
    pub async fn outbound_healthy(&self) -> Result<(), DaprError> {
        let url = format!("{}/v1.0/healthz/outbound", self.inner.endpoint);
        let mut request = self
            .inner
            .http
            .get(url)
            .timeout(HEALTH_TIMEOUT.min(self.inner.timeout));
        // Dapr exempts the health endpoints from token checks; sending it anyway costs nothing.
        if let Some(token) = &self.inner.token {
            request = request.header("dapr-api-token", token.clone());
        }
        let unhealthy = |detail: String| DaprError::Unhealthy {
            endpoint: self.inner.endpoint.clone(),
            detail: sanitize(&detail, MESSAGE_LIMIT),
        };
        match request.send().await {
            Ok(response) if response.status().as_u16() == 204 => Ok(()),
            Ok(mut response) => {
                let status = response.status().as_u16();
                let body = read_limited(&mut response).await;
                Err(unhealthy(describe(
                    status,
                    &body,
                    dapr_error(&body).as_ref(),
                )))
            }
            Err(err) if err.is_timeout() => Err(unhealthy(
                "no answer within the health-check timeout".into(),
            )),
            Err(err) => Err(unhealthy(root_cause(&err))),
        }
    }
}

/// Reads at most [`BODY_LIMIT`] bytes of the body; what arrived before an error is kept (the
/// status already tells the outcome, the body only adds details).
async fn read_limited(response: &mut reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = BODY_LIMIT - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= BODY_LIMIT {
            break;
        }
    }
    body
}

/// Percent-encodes a header value (see [`HEADER_UNSAFE`]).
/// Adds the W3C trace context headers. Both values are recur's own (built by the propagator from
/// span ids), never a user's; one that is not a valid header value is left out.
fn with_trace(
    request: reqwest::RequestBuilder,
    trace: Option<&TraceContext>,
) -> reqwest::RequestBuilder {
    let Some(trace) = trace else {
        return request;
    };
    let mut request = request;
    if let Ok(value) = HeaderValue::from_str(&trace.traceparent) {
        request = request.header("traceparent", value);
    }
    if let Some(Ok(value)) = trace.tracestate.as_deref().map(HeaderValue::from_str) {
        request = request.header("tracestate", value);
    }
    request
}

pub(crate) fn encode_header(value: &str) -> String {
    utf8_percent_encode(value, HEADER_UNSAFE).to_string()
}

fn header_value(value: &str) -> HeaderValue {
    // The encoded value is visible ASCII only, which `HeaderValue` always accepts.
    HeaderValue::from_str(&encode_header(value)).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The innermost cause of a transport error (e.g. "Connection refused (os error 111)"); the
/// outer layers only repeat the URL.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// What the breaker makes of an outcome (see the module docs); `status` when there was an answer.
fn verdict(outcome: &Outcome, status: Option<u16>) -> Verdict {
    match (status, outcome) {
        // Refused for this caller, by the app or the sidecar: nothing about the app's health.
        (Some(401 | 403 | 429), _) => Verdict::Neutral,
        (_, Outcome::Retryable { .. }) => Verdict::Failing,
        _ => Verdict::Healthy,
    }
}

/// Classifies an answer (see the module docs); `retry_after` is the parsed `Retry-After`,
/// kept for 429 and 503 only.
pub(crate) fn classify(status: u16, body: &[u8], retry_after: Option<Duration>) -> Outcome {
    let dapr = dapr_error(body);
    let message = || describe(status, body, dapr.as_ref());
    let retry_after = retry_after.filter(|_| matches!(status, 429 | 503));
    let retry = |reason, message: String| Outcome::Retryable {
        reason,
        message: sanitize(&message, MESSAGE_LIMIT),
        retry_after,
    };
    match status {
        200..=299 => Outcome::Delivered {
            status,
            backend_id: backend_id(body),
            replayed: false,
        },
        409 => Outcome::InProgress,
        422 => Outcome::KeyReused {
            message: sanitize(&message(), MESSAGE_LIMIT),
        },
        401 => retry(
            RetryReason::Unauthorized,
            format!(
                "not authorized (check DAPR_API_TOKEN and the app's API token): {}",
                message()
            ),
        ),
        403 | 404 if dapr.is_some() => retry(
            RetryReason::SidecarRefused,
            format!(
                "the Dapr sidecar refused the call (access control or app id routing): {}",
                message()
            ),
        ),
        408 => retry(RetryReason::Timeout, message()),
        429 => retry(RetryReason::RateLimited, message()),
        500.. if dapr.is_some() => retry(RetryReason::SidecarUnavailable, message()),
        500.. => retry(RetryReason::ServerError, message()),
        _ => Outcome::Rejected {
            status,
            message: sanitize(&message(), MESSAGE_LIMIT),
        },
    }
}

/// A Dapr API error: `(errorCode, message)` when the body is a JSON object whose `errorCode` has
/// Dapr's form (`ERR_` and upper-case letters, digits, `_`).
fn dapr_error(body: &[u8]) -> Option<(String, String)> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = value.get("errorCode")?.as_str()?;
    let well_formed = code.len() <= 64
        && code.starts_with("ERR_")
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if !well_formed {
        return None;
    }
    let message = value
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or_default();
    Some((code.to_owned(), message.to_owned()))
}

/// `HTTP 503: <why>`; `<why>` from a Dapr error, a JSON `message`/`error`/`detail`/`title`, the
/// body text, or the status's reason phrase.
fn describe(status: u16, body: &[u8], dapr: Option<&(String, String)>) -> String {
    if let Some((code, message)) = dapr {
        return sanitize(&format!("HTTP {status} {code}: {message}"), MESSAGE_LIMIT);
    }
    let from_json = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            ["message", "error", "detail", "title"]
                .iter()
                .find_map(|k| v.get(*k).and_then(|m| m.as_str()).map(str::to_owned))
        });
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let text = sanitize(&text, MESSAGE_LIMIT);
    let text = if text.is_empty() {
        reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("no details")
            .to_owned()
    } else {
        text
    };
    sanitize(&format!("HTTP {status}: {text}"), MESSAGE_LIMIT)
}

/// The id the backend gave the created object: `id`, `task_id` or `taskId`, a string or a number.
fn backend_id(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    ["id", "task_id", "taskId"].iter().find_map(|k| {
        let id = match value.get(*k)? {
            serde_json::Value::String(s) => sanitize(s, BACKEND_ID_LIMIT),
            serde_json::Value::Number(n) => sanitize(&n.to_string(), BACKEND_ID_LIMIT),
            _ => return None,
        };
        (!id.is_empty()).then_some(id)
    })
}

#[cfg(test)]
mod tests;
