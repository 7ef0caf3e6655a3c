//! Traces. Every delivery carries the W3C trace context of its `deliver` span (a `traceparent`
//! header, and the CloudEvent's distributed-tracing attributes), so Dapr's sidecars and the
//! backend join recur's trace, and its trace id goes into `status.lastOccurrence.traceId`.
//! recur's own spans (reconcile, deliver, status write) are exported over OTLP/HTTP only when
//! the standard variables ask for it (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); the SDK reads the rest (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_EXPORTER_OTLP_HEADERS`, ...).
use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The service name when `OTEL_SERVICE_NAME` does not give one.
const SERVICE_NAME: &str = "recur";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot build the OTLP span exporter (check the OTEL_EXPORTER_OTLP_* variables): {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error(
        "{0} is an https:// endpoint, but recur exports OTLP over plain HTTP only (no TLS client is built in): point it at an http:// collector, e.g. one in the cluster or on the node"
    )]
    Tls(&'static str),
}

/// Where spans go, read from the process environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Export {
    /// Nothing is exported; deliveries still carry a trace context.
    Off,
    /// OTLP over HTTP/protobuf; the exporter reads its endpoint, headers and timeout itself.
    Otlp,
}

/// The variables naming the collector, the signal's own first (it wins in the exporter too).
const ENDPOINTS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

impl Export {
    /// Refuses an endpoint recur cannot reach (TLS), before it would drop every span quietly.
    pub fn check(&self, var: impl Fn(&str) -> Option<String>) -> Result<(), Error> {
        if *self == Export::Off {
            return Ok(());
        }
        let tls = ENDPOINTS.into_iter().find(|name| {
            var(name).is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("https://"))
        });
        match tls {
            Some(name) => Err(Error::Tls(name)),
            None => Ok(()),
        }
    }

    /// The choice the standard variables make: an OTLP endpoint turns export on;
    /// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Export {
        let set = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim() == "true");
        let none = var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none");
        let endpoint = ENDPOINTS.into_iter().any(set);
        if endpoint && !disabled && !none {
            Export::Otlp
        } else {
            Export::Off
        }
    }
}

/// The tracer provider of the process: spans get real ids whether or not they are exported.
/// Shut it down before exit so the last batch is sent.
pub fn provider(export: &Export) -> Result<SdkTracerProvider, Error> {
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    let builder = SdkTracerProvider::builder().with_resource(resource.build());
    let builder = match export {
        Export::Off => builder,
        Export::Otlp => {
            // The exporter appends /v1/traces to OTEL_EXPORTER_OTLP_ENDPOINT itself.
            let exporter = SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .build()?;
            builder.with_batch_exporter(exporter)
        }
    };
    Ok(builder.build())
}

/// The `tracing` layer that turns recur's spans into OpenTelemetry spans of `provider`.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(SERVICE_NAME))
        .with_threads(false)
        .with_tracked_inactivity(false)
}

/// The W3C trace context of a span, as a delivery carries it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceContext {
    /// `00-<trace id>-<span id>-<flags>`.
    pub traceparent: String,
    /// Vendor state from the parent, when there is any.
    pub tracestate: Option<String>,
    /// 32 lowercase hex digits, as trace UIs search for it.
    pub trace_id: String,
}

/// The context of `span`, or `None` when it has none (no tracing layer, or a disabled span).
pub fn context_of(span: &Span) -> Option<TraceContext> {
    let cx = span.context();
    let span_context = cx.span().span_context().clone();
    if !span_context.is_valid() {
        return None;
    }
    let mut fields = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut fields);
    Some(TraceContext {
        traceparent: fields.remove("traceparent")?,
        tracestate: fields.remove("tracestate").filter(|s| !s.is_empty()),
        trace_id: span_context.trace_id().to_string(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    use crate::test_env::env;

    #[test]
    fn export_follows_the_standard_variables() {
        assert_eq!(Export::from_env(env(&[])), Export::Off);
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(Export::from_env(env(&[endpoint])), Export::Otlp);
        assert_eq!(
            Export::from_env(env(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces"
            )])),
            Export::Otlp
        );
        assert_eq!(
            Export::from_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])),
            Export::Off
        );
        assert_eq!(
            Export::from_env(env(&[endpoint, ("OTEL_SDK_DISABLED", "true")])),
            Export::Off
        );
        assert_eq!(
            Export::from_env(env(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")])),
            Export::Off
        );
    }

    #[test]
    fn an_https_collector_is_refused_with_the_variable_named() {
        for name in ENDPOINTS {
            let vars = env(&[(name, "HTTPS://collector:4318")]);
            let err = Export::from_env(&vars).check(&vars).unwrap_err();
            assert!(err.to_string().starts_with(name), "{err}");
        }
        let vars = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]);
        assert!(Export::from_env(&vars).check(&vars).is_ok());
        let off = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert!(Export::from_env(&off).check(&off).is_ok());
    }

    #[test]
    fn a_span_without_a_layer_has_no_context() {
        assert_eq!(context_of(&tracing::info_span!("deliver")), None);
    }

    #[test]
    fn a_child_span_shares_the_trace_and_names_itself_as_parent() {
        let provider = provider(&Export::Off).unwrap();
        let subscriber = tracing_subscriber::registry().with(layer(&provider));
        tracing::subscriber::with_default(subscriber, || {
            let root = tracing::info_span!("reconcile");
            let root_cx = context_of(&root).unwrap();
            let child = root.in_scope(|| tracing::info_span!("deliver"));
            let cx = context_of(&child).unwrap();
            assert_eq!(cx.trace_id, root_cx.trace_id);
            assert_eq!(cx.trace_id.len(), 32);
            let parts: Vec<&str> = cx.traceparent.split('-').collect();
            assert_eq!(parts.len(), 4, "{}", cx.traceparent);
            assert_eq!(parts[0], "00");
            assert_eq!(parts[1], cx.trace_id);
            assert_ne!(parts[2], root_cx.traceparent.split('-').nth(2).unwrap());
            // Sampled: the sidecars record what recur records.
            assert_eq!(parts[3], "01");
            assert_eq!(cx.tracestate, None);
        });
    }
}
