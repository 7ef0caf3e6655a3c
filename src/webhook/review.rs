//! `POST /validate`: an `AdmissionReview` in, the decision out. A refusal carries the tenancy
//! check's words (`field: message`, naming the policy and the rule), which `kubectl apply`
//! prints after "admission webhook ... denied the request:".
use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::{DynamicObject, Status};

use crate::tenancy::Denial;

/// A review must be answered within this (body included); the API server's own timeout
/// (`timeoutSeconds`, 5 s in the chart) is the other bound. The policy checks bound each API
/// call they make at 2 s.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

/// Largest review accepted: an UPDATE carries the object twice, and an object may be about
/// 1.5 MB.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Said while the policy caches are still loading: refusing is the safe answer, since an empty
/// cache would wrongly refuse granted tasks, or admit under the wrong policy.
pub(crate) const NOT_READY: &str =
    "recur has not loaded the TenantPolicies and namespaces yet; try again in a few seconds";

/// What decides on a request: the tenancy checks (a fake in tests).
pub(crate) trait Admit: Clone + Send + Sync + 'static {
    /// Whether decisions can be made yet (the policy caches hold their first full list).
    fn ready(&self) -> bool;
    /// `Err` refuses the request.
    fn review(
        &self,
        request: &AdmissionRequest<DynamicObject>,
    ) -> impl Future<Output = Result<(), Denial>> + Send;
}

/// The webhook's routes; anything but `POST /validate` is 404 (or 405).
pub(crate) fn router<A: Admit>(admit: A) -> Router {
    Router::new()
        .route("/validate", post(validate::<A>))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(deadline))
        .with_state(admit)
}

/// Bounds reading the body and deciding. Past it the call fails, and the API server applies the
/// webhook's failurePolicy.
async fn deadline(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                timeout_ms = REQUEST_TIMEOUT.as_millis() as u64,
                "admission review not answered in time"
            );
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the admission review did not finish in time",
            )
                .into_response()
        }
    }
}

async fn validate<A: Admit>(State(admit): State<A>, body: Bytes) -> Response {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(e) => return bad_request(format!("the body is not an AdmissionReview: {e}")),
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(e) => return bad_request(format!("the AdmissionReview has no request: {e}")),
    };
    let response = decide(&admit, &request).await;
    axum::Json(response.into_review()).into_response()
}

fn bad_request(message: String) -> Response {
    tracing::debug!(%message, "malformed admission review");
    (StatusCode::BAD_REQUEST, message).into_response()
}

/// The answer to one request.
pub(crate) async fn decide<A: Admit>(
    admit: &A,
    request: &AdmissionRequest<DynamicObject>,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let kind = request.kind.kind.as_str();
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let name = request.name.as_str();
    if !admit.ready() {
        tracing::info!(
            kind,
            namespace,
            name,
            "admission refused: policy caches not loaded yet"
        );
        return refuse(response, 503, "ServiceUnavailable", NOT_READY);
    }
    match admit.review(request).await {
        Ok(()) => {
            tracing::debug!(kind, namespace, name, operation = ?request.operation, "admitted");
            response
        }
        Err(denial) => {
            tracing::info!(
                kind,
                namespace,
                name,
                operation = ?request.operation,
                field = %denial.field,
                rule = denial.rule.as_str(),
                "admission refused"
            );
            let rule = denial.rule.as_str();
            let mut response = refuse(response, 403, "Forbidden", &denial.to_string());
            // The rule for audit logs, without parsing the message.
            response
                .audit_annotations
                .insert("rule".to_string(), rule.to_string());
            response
        }
    }
}

fn refuse(
    mut response: AdmissionResponse,
    code: u16,
    reason: &str,
    message: &str,
) -> AdmissionResponse {
    response.allowed = false;
    response.result = Status::failure(message, reason).with_code(code);
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::tenancy::Rule;
    use axum::body::Body;
    use serde_json::{Value, json};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tower::ServiceExt;

    /// Refuses objects whose spec.userId is "mallory"; ready when told.
    #[derive(Clone)]
    struct Fake {
        ready: Arc<AtomicBool>,
        slow: bool,
    }

    impl Admit for Fake {
        fn ready(&self) -> bool {
            self.ready.load(Ordering::SeqCst)
        }
        async fn review(&self, request: &AdmissionRequest<DynamicObject>) -> Result<(), Denial> {
            if self.slow {
                tokio::time::sleep(REQUEST_TIMEOUT * 2).await;
            }
            let user = request
                .object
                .as_ref()
                .and_then(|o| o.data["spec"]["userId"].as_str())
                .unwrap_or_default();
            if user == "mallory" {
                return Err(Denial {
                    field: "spec.userId".into(),
                    rule: Rule::UserIds,
                    message:
                        "user id \"mallory\" is not allowed by TenantPolicy \"p\" (rule userIds)"
                            .into(),
                });
            }
            Ok(())
        }
    }

    fn fake(ready: bool) -> Fake {
        Fake {
            ready: Arc::new(AtomicBool::new(ready)),
            slow: false,
        }
    }

    fn review(user: &str) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "recur.dev", "version": "v1alpha1", "kind": "RecurringTask"},
                "resource": {"group": "recur.dev", "version": "v1alpha1", "resource": "recurringtasks"},
                "requestKind": {"group": "recur.dev", "version": "v1alpha1", "kind": "RecurringTask"},
                "requestResource": {"group": "recur.dev", "version": "v1alpha1", "resource": "recurringtasks"},
                "name": "t",
                "namespace": "team-a",
                "operation": "CREATE",
                "userInfo": {"username": "alice"},
                "object": {
                    "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
                    "metadata": {"name": "t", "namespace": "team-a"},
                    "spec": {"userId": user}
                },
                "oldObject": null,
                "dryRun": false,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
            }
        })
    }

    async fn post(admit: Fake, body: impl Into<Body>) -> (StatusCode, String) {
        let response = router(admit)
            .oneshot(
                Request::post("/validate")
                    .header("content-type", "application/json")
                    .body(body.into())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn allows_and_refuses_with_the_denials_words() {
        let (status, body) = post(fake(true), review("alice").to_string()).await;
        assert_eq!(status, StatusCode::OK);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(v["kind"], "AdmissionReview");
        assert_eq!(v["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(v["response"]["allowed"], true);

        let (status, body) = post(fake(true), review("mallory").to_string()).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "a refusal is a review, not an HTTP error"
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["response"]["allowed"], false);
        assert_eq!(v["response"]["status"]["code"], 403);
        assert_eq!(v["response"]["status"]["reason"], "Forbidden");
        assert_eq!(
            v["response"]["status"]["message"],
            "spec.userId: user id \"mallory\" is not allowed by TenantPolicy \"p\" (rule userIds)"
        );
        assert_eq!(v["response"]["auditAnnotations"]["rule"], "userIds");
    }

    #[tokio::test]
    async fn refuses_everything_until_the_policy_caches_are_loaded() {
        let admit = fake(false);
        let (status, body) = post(admit.clone(), review("alice").to_string()).await;
        assert_eq!(status, StatusCode::OK);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["response"]["allowed"], false);
        assert_eq!(v["response"]["status"]["code"], 503);
        assert_eq!(v["response"]["status"]["message"], NOT_READY);
        admit.ready.store(true, Ordering::SeqCst);
        let (_, body) = post(admit, review("alice").to_string()).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["response"]["allowed"], true);
    }

    #[tokio::test]
    async fn malformed_reviews_are_bad_requests() {
        for body in [
            "".to_string(),
            "{".to_string(),
            "[]".to_string(),
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).to_string(),
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": 7}}).to_string(),
            "\u{0}\u{ff}".to_string(),
        ] {
            let (status, text) = post(fake(true), body.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}: {text}");
        }
        let huge = vec![b' '; MAX_BODY_BYTES + 1];
        let (status, _) = post(fake(true), huge).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_review_that_takes_too_long_is_cut_off() {
        let admit = Fake {
            ready: Arc::new(AtomicBool::new(true)),
            slow: true,
        };
        let (status, _) = post(admit, review("alice").to_string()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
