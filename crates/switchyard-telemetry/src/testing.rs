//! Spans as an OpenTelemetry exporter receives them: for tests that check span names, kinds,
//! parents and attributes (the semantic conventions) without a collector.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use opentelemetry::trace::{SpanKind, Status, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing::Level;
use tracing_subscriber::layer::SubscriberExt as _;

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// Anything else, as text.
    Other(String),
}

/// One ended span.
#[derive(Debug, Clone)]
pub struct CapturedSpan {
    /// Its name (`otel.name` when set).
    pub name: String,
    /// `internal`, `server`, `client`, `producer` or `consumer`.
    pub kind: &'static str,
    /// Trace id, hex.
    pub trace_id: String,
    /// Span id, hex.
    pub span_id: String,
    /// The parent's span id, hex (zeros for a root).
    pub parent_span_id: String,
    /// Its attributes.
    pub attributes: BTreeMap<String, Value>,
    /// Whether its status is an error.
    pub error: bool,
    /// The span ids of its links, hex.
    pub links: Vec<String>,
}

impl CapturedSpan {
    /// A string attribute.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.attributes.get(key)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// An integer attribute.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attributes.get(key)? {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// The spans ended so far.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    spans: Arc<Mutex<Vec<CapturedSpan>>>,
    provider: Option<SdkTracerProvider>,
}

impl Captured {
    /// Every span ended so far, in the order they ended.
    pub fn spans(&self) -> Vec<CapturedSpan> {
        self.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The first ended span called `name`.
    pub fn named(&self, name: &str) -> Option<CapturedSpan> {
        self.spans().into_iter().find(|s| s.name == name)
    }

    /// Flushes the provider (spans are exported as they end; this is a backstop).
    pub fn flush(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
        }
    }
}

#[derive(Debug)]
struct Exporter(Arc<Mutex<Vec<CapturedSpan>>>);

fn kind_name(kind: &SpanKind) -> &'static str {
    match kind {
        SpanKind::Client => "client",
        SpanKind::Server => "server",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Internal => "internal",
    }
}

impl SpanExporter for Exporter {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let captured = batch.into_iter().map(|s| CapturedSpan {
            name: s.name.to_string(),
            kind: kind_name(&s.span_kind),
            trace_id: s.span_context.trace_id().to_string(),
            span_id: s.span_context.span_id().to_string(),
            parent_span_id: s.parent_span_id.to_string(),
            attributes: s
                .attributes
                .iter()
                .map(|kv| {
                    let v = match &kv.value {
                        opentelemetry::Value::String(s) => Value::Str(s.to_string()),
                        opentelemetry::Value::I64(i) => Value::Int(*i),
                        other => Value::Other(other.to_string()),
                    };
                    (kv.key.to_string(), v)
                })
                .collect(),
            error: matches!(s.status, Status::Error { .. }),
            links: s
                .links
                .iter()
                .map(|l| l.span_context.span_id().to_string())
                .collect(),
        });
        if let Ok(mut spans) = self.0.lock() {
            spans.extend(captured);
        }
        std::future::ready(Ok(()))
    }
}

/// A subscriber that turns Switchyard's `tracing` spans (targets `switchyard*`) into
/// OpenTelemetry spans, as the processes do, and keeps them when they end; use it with `tracing::subscriber::with_default` (or
/// `set_default`). Spans of this subscriber carry valid trace contexts.
pub fn capture() -> (impl tracing::Subscriber + Send + Sync, Captured) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(Exporter(spans.clone()))
        .build();
    // Switchyard's spans only: those of the libraries below (hyper, h2, ...) are not the
    // subject of a test.
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::Targets::new().with_target("switchyard", Level::TRACE))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("switchyard-test")));
    (
        subscriber,
        Captured {
            spans,
            provider: Some(provider),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_spans_carry_the_otel_fields() {
        let (subscriber, captured) = capture();
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!("outer", otel.kind = "server", n = 3_i64);
            let _g = outer.enter();
            let inner = tracing::info_span!(
                "inner",
                otel.name = "renamed",
                otel.kind = "client",
                otel.status_code = tracing::field::Empty
            );
            inner.record("otel.status_code", "error");
            drop(inner);
        });
        captured.flush();
        let inner = captured.named("renamed").unwrap();
        let outer = captured.named("outer").unwrap();
        assert_eq!((inner.kind, outer.kind), ("client", "server"));
        assert_eq!(inner.parent_span_id, outer.span_id);
        assert!(inner.error && !outer.error);
        assert_eq!(outer.int("n"), Some(3));
    }
}
