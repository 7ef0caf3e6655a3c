//! Dapr's app channel: what the operator's sidecar delivers to the operator (`--app-addr`, off
//! unless set). One route, `POST /completions/{pubsub}/{topic}`: the completion events of the
//! declarative Subscriptions (`spec.completion`), answered the way Dapr expects of a pub/sub
//! subscriber: 200 with `{"status": "SUCCESS" | "RETRY" | "DROP"}`. Anything else is 404
//! (daprd's `GET /dapr/subscribe` and `/dapr/config` included: subscriptions are declarative).
//!
//! Listen on loopback: only the sidecar in the pod has anything to say here. Service
//! invocation through the sidecar would reach the same route with a path of the caller's
//! choosing, so a request carrying Dapr's caller header is refused (the chart also denies
//! invocations of the operator with a Dapr access-control policy).
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use tokio::net::TcpListener;

use crate::controller::Context;
use crate::controller::completion::{Answer, Received, Route};
use crate::dapr::{PubSubName, Topic};

/// Set by the sidecar on every service invocation it forwards, never on a pub/sub delivery.
const CALLER_HEADER: &str = "dapr-caller-app-id";
/// Bodies up to Dapr's own default limit are read (and judged: a large one is dropped, not
/// refused with 413, which daprd would retry for ever).
const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Errors of the app channel's server.
#[derive(Debug, thiserror::Error)]
pub enum AppChannelError {
    #[error("could not listen on {addr} for the Dapr sidecar (--app-addr): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the Dapr app channel server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// The routes, for serving or in-process tests.
pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/completions/{pubsub}/{topic}", post(completion))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(ctx)
}

/// Binds `addr` now (a wrong address fails the start, not the first event), and returns the
/// server to run until `shutdown`.
pub async fn bind(
    addr: SocketAddr,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<impl Future<Output = Result<(), AppChannelError>>, AppChannelError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AppChannelError::Bind { addr, source })?;
    tracing::info!(%addr, "serving the Dapr app channel (completion events)");
    Ok(async move {
        axum::serve(listener, router(ctx))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(AppChannelError::Serve)
    })
}

async fn completion(
    State(ctx): State<Arc<Context>>,
    Path((pubsub, topic)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if headers.contains_key(CALLER_HEADER) {
        ctx.metrics.completion(Received::Refused.label());
        tracing::warn!(
            "a service invocation of the completion route refused: completions come through pub/sub only"
        );
        return (StatusCode::FORBIDDEN, axum::Json(json!({"status": "DROP"}))).into_response();
    }
    let route = match (PubSubName::new(&pubsub), Topic::new(&topic)) {
        (Ok(pubsub), Ok(topic)) => Route { pubsub, topic },
        _ => {
            // Not a route of recur's subscriptions.
            ctx.metrics.completion(Received::Invalid.label());
            return answer(Answer::Drop);
        }
    };
    let received = ctx.receive_completion(&route, &body).await;
    answer(received.answer())
}

fn answer(answer: Answer) -> Response {
    (
        StatusCode::OK,
        axum::Json(json!({"status": answer.as_str()})),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
