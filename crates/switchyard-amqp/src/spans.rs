//! The spans of RabbitMQ messaging, after the OpenTelemetry messaging semantic conventions:
//! a producer span `publish {exchange}` around every publish, whose context is the
//! `traceparent` the message carries, and a consumer span `process {exchange}` around the
//! handling of every delivery, a child of that `traceparent`.
//!
//! Both carry `messaging.system` (`rabbitmq`), `messaging.operation.type` (`send`,
//! `process`), `messaging.operation.name` (`publish`, `process`),
//! `messaging.destination.name` (the exchange; `amq.default` for the default one),
//! `messaging.rabbitmq.destination.routing_key` and, when the message has one,
//! `messaging.message.id`. Names and kinds reach OpenTelemetry through the `otel.name` and
//! `otel.kind` fields tracing-opentelemetry reads.

use lapin::BasicProperties;
use lapin::message::Delivery;
use tracing::Span;
use tracing::field::Empty;

use crate::headers::HeaderRead;
use crate::messages::TRACEPARENT_HEADER;

/// `messaging.system` of every span here.
pub const SYSTEM: &str = "rabbitmq";

/// What RabbitMQ calls the default exchange (the empty name).
pub const DEFAULT_EXCHANGE: &str = "amq.default";

/// The destination name of `exchange`: itself, or [`DEFAULT_EXCHANGE`] for the empty name.
pub fn destination(exchange: &str) -> &str {
    if exchange.is_empty() {
        DEFAULT_EXCHANGE
    } else {
        exchange
    }
}

fn message_id(properties: &BasicProperties) -> Option<String> {
    properties.message_id().as_ref().map(|id| id.to_string())
}

/// The producer span of one publish; the caller's current span is its parent, unless the
/// message already carries the `traceparent` of another trace (a command parked or
/// republished by a process that is not handling it): then it continues that one.
pub fn publish_span(exchange: &str, routing_key: &str, properties: &BasicProperties) -> Span {
    let destination = destination(exchange);
    let span = tracing::info_span!(
        "publish",
        otel.name = %format_args!("publish {destination}"),
        otel.kind = "producer",
        otel.status_code = Empty,
        messaging.system = SYSTEM,
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = destination,
        messaging.rabbitmq.destination.routing_key = routing_key,
        messaging.message.id = Empty,
        error.type = Empty,
    );
    if let Some(id) = message_id(properties) {
        span.record("messaging.message.id", id);
    }
    let carried = properties.headers().header_str(TRACEPARENT_HEADER);
    if let Some(tp) = carried.as_deref() {
        let current = switchyard_telemetry::trace_id(&Span::current());
        if current.as_deref() != trace_of(tp) {
            switchyard_telemetry::set_parent(&span, Some(tp));
        }
    }
    span
}

/// The trace id in a `traceparent` (`00-{trace}-{span}-{flags}`).
fn trace_of(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1)
}

/// The consumer span of handling `delivery`: a child of the `traceparent` it carries (the
/// producer span that published it), or the root of a new trace. It also has the fields
/// logs are searched by, `command_id` (recorded by the handler once known) and `trace_id`.
pub fn process_span(delivery: &Delivery) -> Span {
    let destination = destination(delivery.exchange.as_str());
    let span = tracing::info_span!(
        "process",
        otel.name = %format_args!("process {destination}"),
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = SYSTEM,
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = destination,
        messaging.rabbitmq.destination.routing_key = delivery.routing_key.as_str(),
        messaging.rabbitmq.message.delivery_tag = i64::try_from(delivery.delivery_tag).unwrap_or(i64::MAX),
        messaging.message.id = Empty,
        command_id = Empty,
        trace_id = Empty,
    );
    if let Some(id) = message_id(&delivery.properties) {
        span.record("messaging.message.id", id);
    }
    let incoming = delivery.properties.headers().header_str(TRACEPARENT_HEADER);
    switchyard_telemetry::set_parent(&span, incoming.as_deref());
    if let Some(id) = switchyard_telemetry::trace_id(&span) {
        span.record("trace_id", id);
    }
    span
}

/// Marks `span` failed, with `error.type` set to `kind` (a bounded name, never a message).
pub fn record_error(span: &Span, kind: &str) {
    span.record("otel.status_code", "error");
    span.record("error.type", kind);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::Headers;

    #[test]
    fn a_publish_span_follows_the_messaging_conventions() {
        let (subscriber, captured) = switchyard_telemetry::testing::capture();
        tracing::subscriber::with_default(subscriber, || {
            let props = BasicProperties::default().with_message_id("evt-1".into());
            drop(publish_span(
                "switchyard.events",
                "payment.stripe.completed",
                &props,
            ));
            drop(publish_span(
                "",
                "switchyard.dlq.unroutable",
                &BasicProperties::default(),
            ));
        });
        captured.flush();
        let span = captured.named("publish switchyard.events").unwrap();
        assert_eq!(span.kind, "producer");
        assert_eq!(span.str("messaging.system"), Some("rabbitmq"));
        assert_eq!(span.str("messaging.operation.type"), Some("send"));
        assert_eq!(span.str("messaging.operation.name"), Some("publish"));
        assert_eq!(
            span.str("messaging.destination.name"),
            Some("switchyard.events")
        );
        assert_eq!(
            span.str("messaging.rabbitmq.destination.routing_key"),
            Some("payment.stripe.completed")
        );
        assert_eq!(span.str("messaging.message.id"), Some("evt-1"));
        let default = captured.named("publish amq.default").unwrap();
        assert_eq!(
            default.str("messaging.destination.name"),
            Some("amq.default")
        );
        assert_eq!(default.str("messaging.message.id"), None);
    }

    #[test]
    fn a_publish_continues_the_trace_its_message_carries_unless_it_runs_in_that_trace() {
        let carried = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (subscriber, captured) = switchyard_telemetry::testing::capture();
        tracing::subscriber::with_default(subscriber, || {
            let props = BasicProperties::default()
                .with_headers(Headers::default().str(TRACEPARENT_HEADER, carried).build());
            // Outside any span: the message's trace.
            drop(publish_span("switchyard.dead", "payment.x.charge", &props));
            // Inside a span of the same trace: that span is the parent.
            let handling = tracing::info_span!("handling");
            switchyard_telemetry::set_parent(&handling, Some(carried));
            handling
                .in_scope(|| drop(publish_span("switchyard.retry", "payment.x.charge", &props)));
        });
        captured.flush();
        let dead = captured.named("publish switchyard.dead").unwrap();
        assert_eq!(dead.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(dead.parent_span_id, "00f067aa0ba902b7");
        let handling = captured.named("handling").unwrap();
        let retry = captured.named("publish switchyard.retry").unwrap();
        assert_eq!(retry.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(retry.parent_span_id, handling.span_id);
    }

    #[test]
    fn a_process_span_is_a_consumer_child_of_the_traceparent_it_received() {
        let carried = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut delivery = Delivery::mock(
            7,
            "switchyard.commands".into(),
            "payment.stripe.charge".into(),
            false,
            b"{}".to_vec(),
        );
        delivery.properties = BasicProperties::default()
            .with_message_id("0193-cmd".into())
            .with_headers(Headers::default().str(TRACEPARENT_HEADER, carried).build());
        let (subscriber, captured) = switchyard_telemetry::testing::capture();
        tracing::subscriber::with_default(subscriber, || drop(process_span(&delivery)));
        captured.flush();
        let span = captured.named("process switchyard.commands").unwrap();
        assert_eq!(span.kind, "consumer");
        assert_eq!(span.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span.parent_span_id, "00f067aa0ba902b7");
        assert_eq!(span.str("messaging.system"), Some("rabbitmq"));
        assert_eq!(span.str("messaging.operation.type"), Some("process"));
        assert_eq!(
            span.str("messaging.destination.name"),
            Some("switchyard.commands")
        );
        assert_eq!(
            span.str("messaging.rabbitmq.destination.routing_key"),
            Some("payment.stripe.charge")
        );
        assert_eq!(span.str("messaging.message.id"), Some("0193-cmd"));
        assert_eq!(span.int("messaging.rabbitmq.message.delivery_tag"), Some(7));
        assert_eq!(
            span.str("trace_id"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }
}
