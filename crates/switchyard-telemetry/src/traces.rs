//! OpenTelemetry traces: one trace per command, from the ingress through the broker, the
//! worker and the provider call to the events. The W3C `traceparent` of the current span is
//! what travels in AMQP headers and outbound HTTP headers; each hop makes its span a child
//! of the one it received.
//!
//! Spans are always created (so every command gets a trace id, in its messages and logs);
//! they are exported over OTLP only when the standard variables ask for it:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), with
//! `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, as the OpenTelemetry
//! specification defines them; `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn
//! the export off.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header carrying the trace context.
const TRACEPARENT: &str = "traceparent";

/// The tracer provider; flushes the spans still buffered when the process ends.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Exports what is buffered and stops exporting.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "flushing traces failed");
        }
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn env_is(name: &str, value: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
}

/// Whether the environment asks for OTLP export.
fn export_wanted() -> bool {
    let endpoint = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|e| !e.trim().is_empty()));
    endpoint && !env_is("OTEL_SDK_DISABLED", "true") && !env_is("OTEL_TRACES_EXPORTER", "none")
}

/// Builds the tracer provider for `service` (`OTEL_SERVICE_NAME` wins), exporting over OTLP
/// when configured. An exporter that cannot be built is reported and left out: traces are
/// not worth failing the process for.
pub(crate) fn provider(service: &str) -> (SdkTracerProvider, Option<String>) {
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| service.to_owned());
    let mut builder = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(name).build());
    let mut problem = None;
    if export_wanted() {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(e) => problem = Some(format!("OTLP trace export is off: {e}")),
        }
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = builder.build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    (provider, problem)
}

/// The `tracing` layer that turns spans into OpenTelemetry spans.
pub(crate) fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("switchyard"))
}

pub(crate) fn wrap(provider: SdkTracerProvider) -> Tracing {
    Tracing { provider }
}

/// Makes `span` a child of the remote span in `traceparent` (from an AMQP or HTTP header); a
/// missing or malformed value leaves `span` the root of a new trace.
pub fn set_parent(span: &Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent else {
        return;
    };
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), tp.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer is installed: then there is nothing to link.
        let _ = span.set_parent(cx);
    }
}

/// Links `span` to the remote span in `traceparent` without making it the parent: a batch
/// that processes messages of many traces links each of them. A missing or malformed value
/// adds nothing.
pub fn link(span: &Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent else {
        return;
    };
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), tp.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.add_link(sc);
    }
}

/// The `traceparent` naming `span`, to send onwards; `None` when traces are not installed in
/// this process (a library used without [`crate::init`]).
pub fn traceparent(span: &Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The trace id of `span` in hex, for log fields and answers.
pub fn trace_id(span: &Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn a_span_continues_the_trace_it_was_given_and_passes_it_on() {
        let (provider, problem) = provider("test");
        assert!(problem.is_none());
        let subscriber = tracing_subscriber::registry().with(layer(&provider));
        tracing::subscriber::with_default(subscriber, || {
            let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            let span = tracing::info_span!("hop");
            set_parent(&span, Some(given));
            let onward = traceparent(&span).unwrap_or_default();
            assert!(
                onward.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "{onward}"
            );
            assert!(
                !onward.contains("00f067aa0ba902b7"),
                "a new span id: {onward}"
            );
            assert_eq!(
                trace_id(&span).as_deref(),
                Some("4bf92f3577b34da6a3ce929d0e0e4736")
            );
            // Garbage starts a new trace rather than failing.
            let fresh = tracing::info_span!("fresh");
            set_parent(&fresh, Some("not-a-traceparent"));
            let id = trace_id(&fresh).unwrap_or_default();
            assert_eq!(id.len(), 32);
            assert_ne!(id, "4bf92f3577b34da6a3ce929d0e0e4736");
        });
    }
}
