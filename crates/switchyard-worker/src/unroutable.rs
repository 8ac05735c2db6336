//! Commands no worker serves: the consumer of `switchyard.unroutable`.
//!
//! `switchyard.commands` sends what no binding matches (an unknown kind, provider or operation)
//! to its alternate exchange, so the publisher's confirm succeeds and no work queue ever sees
//! it. Without this consumer the core app would wait forever for an event. Each message gets
//! a `failed` event (class `invalid`, code `unroutable`) when its id is readable, then moves to
//! `switchyard.dlq.unroutable` (body and properties unchanged, plus the dead-letter headers)
//! for `switchyard dlq`; the delivery is acknowledged only after both are confirmed. Every
//! worker runs one; competing consumers share the queue.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use switchyard_amqp::lapin::options::BasicAckOptions;
use switchyard_amqp::lapin::types::FieldTable;
use switchyard_amqp::messages::{
    self, ATTEMPT_HEADER, ROUTING_KEY_HEADER, RUN_HEADER, TRACEPARENT_HEADER,
};
use switchyard_amqp::topology::{UNROUTABLE_DLQ, UNROUTABLE_QUEUE};
use switchyard_amqp::{
    Broker, ConsumeSettings, Delivery, HeaderRead, Headers, Outgoing, PublishError, Publisher,
    consume,
};
use switchyard_config::Config;
use switchyard_core::command::sniff_id;
use switchyard_core::{Command, ErrorClass, ErrorInfo, Event, Lifecycle, RoutingKey};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info, warn};

/// The error code of an unroutable command's `failed` event and dead letter.
pub const UNROUTABLE_CODE: &str = "unroutable";

/// Consumes `switchyard.unroutable` until `shutdown` (a task for the worker's consumer set).
pub(crate) fn run(
    broker: Broker,
    publisher: Publisher,
    config: &Config,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let parker = Arc::new(Parker { publisher });
    for event in ["failed", "none"] {
        switchyard_telemetry::labels::zero_counter(
            "switchyard_unroutable_total",
            &[("event", event.into())],
        );
    }
    let settings = ConsumeSettings {
        queue: UNROUTABLE_QUEUE.to_owned(),
        // Rare messages: a few in flight is plenty, and leaves the rest to other workers.
        prefetch: config.amqp.prefetch.unwrap_or(16).min(16),
        grace: Duration::from_millis(config.worker.shutdown_grace_ms),
    };
    consume(broker, settings, shutdown, move |d| {
        parker.clone().handle(d)
    })
}

#[derive(Debug)]
struct Parker {
    publisher: Publisher,
}

impl Parker {
    async fn handle(self: Arc<Self>, delivery: Delivery) {
        let span = switchyard_amqp::spans::process_span(&delivery);
        let settled = match self.park(&delivery).instrument(span).await {
            Ok(()) => delivery.acker.ack(BasicAckOptions::default()).await,
            Err(e) => {
                warn!(error = %e, routing_key = %delivery.routing_key, "could not park an unroutable command; leaving it for redelivery");
                crate::handler::requeue_after_a_pause(&delivery).await
            }
        };
        if let Err(e) = settled {
            // The broker redelivers it; the event id is the same the second time.
            warn!(error = %e, "could not settle an unroutable delivery; it will be redelivered");
        }
    }

    /// The event first (the core app's answer), then the parked copy; a failure of either
    /// leaves the delivery for redelivery, which repeats both harmlessly.
    async fn park(&self, delivery: &Delivery) -> Result<(), PublishError> {
        let routing_key = delivery.routing_key.as_str();
        let headers = delivery.properties.headers();
        let error = unroutable_error(routing_key);
        let attempts = count(headers, ATTEMPT_HEADER);
        let event = failed_event(
            &delivery.data,
            routing_key,
            count(headers, RUN_HEADER),
            attempts,
            &error,
            Utc::now(),
        );
        if let Some(event) = &event {
            let tp = headers.header_str(TRACEPARENT_HEADER);
            messages::publish_event(&self.publisher, event, tp.as_deref()).await?;
        }
        self.publisher
            .publish(Outgoing {
                exchange: "",
                routing_key: UNROUTABLE_DLQ,
                body: &delivery.data,
                properties: delivery.properties.clone().with_headers(parked_headers(
                    headers.as_ref(),
                    routing_key,
                    &error,
                    attempts,
                )),
                mandatory: true,
            })
            .await?;
        metrics::counter!(
            "switchyard_unroutable_total",
            "event" => if event.is_some() { "failed" } else { "none" }
        )
        .increment(1);
        info!(
            %routing_key,
            command_id = ?event.as_ref().map(|e| e.command_id),
            "parked an unroutable command in {UNROUTABLE_DLQ}"
        );
        Ok(())
    }
}

/// A non-negative counter header (attempt, run), 0 when absent or unreadable.
fn count(headers: &Option<FieldTable>, key: &str) -> u32 {
    headers
        .header_int(key)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

/// Why the command is parked.
pub(crate) fn unroutable_error(routing_key: &str) -> ErrorInfo {
    // A routing key is at most 255 bytes: it fits in the message as it is.
    ErrorInfo::new(
        ErrorClass::Invalid,
        UNROUTABLE_CODE,
        format!(
            "no worker serves the routing key {routing_key:?}: no such kind, provider or operation is configured"
        ),
    )
}

/// The `failed` event of an unroutable command, in the run it came with: `None` when its id
/// is unreadable or its routing key is not `{kind}.{provider}.{operation}` (there is nowhere
/// to address the event).
pub(crate) fn failed_event(
    body: &[u8],
    routing_key: &str,
    run: u32,
    attempts: u32,
    error: &ErrorInfo,
    now: DateTime<Utc>,
) -> Option<Event> {
    let rk: RoutingKey = routing_key.parse().ok()?;
    // The whole command when it decodes (its metadata is echoed), else a shell that is enough
    // to address the event.
    let command = match Command::decode(body, routing_key) {
        Ok(c) => c,
        Err(_) => Command::shell(sniff_id(body)?, rk, now),
    };
    Some(Lifecycle::run(&command, run).reject(attempts, error.clone(), now))
}

/// The headers of the parked copy: the original ones, the routing key it came with (the copy
/// goes through the default exchange) and the contract's dead-letter headers.
pub(crate) fn parked_headers(
    original: Option<&FieldTable>,
    routing_key: &str,
    error: &ErrorInfo,
    attempts: u32,
) -> FieldTable {
    let headers = Headers::from_table(original).str(ROUTING_KEY_HEADER, routing_key);
    messages::dead_letter_headers(headers, error, attempts).build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_amqp::messages::{ATTEMPTS_HEADER, ERROR_CLASS_HEADER, ERROR_HEADER};
    use switchyard_core::Status;
    use uuid::Uuid;

    fn body(id: Uuid, rk: &str) -> Vec<u8> {
        let mut parts = rk.split('.');
        serde_json::to_vec(&serde_json::json!({
            "id": id,
            "kind": parts.next(), "provider": parts.next(), "operation": parts.next(),
            "payload": {}, "metadata": {"order": "42"}, "created_at": Utc::now(),
        }))
        .unwrap_or_default()
    }

    #[test]
    fn a_readable_command_gets_a_failed_unroutable_event_in_its_run() {
        let id = Uuid::now_v7();
        let rk = "payment.nobody.charge";
        let error = unroutable_error(rk);
        let event = failed_event(&body(id, rk), rk, 2, 0, &error, Utc::now());
        let event = event.unwrap_or_else(|| panic!("an event"));
        assert_eq!(event.command_id, id);
        assert_eq!(event.status, Status::Failed);
        assert_eq!(event.routing_key(), "payment.nobody.failed");
        assert_eq!(event.run, 2);
        assert_eq!(
            event.metadata.entries().get("order").map(String::as_str),
            Some("42")
        );
        let e = event.error.unwrap_or_else(|| panic!("an error"));
        assert_eq!(e.class, ErrorClass::Invalid);
        assert_eq!(e.code, "unroutable");
        assert!(e.message.contains(rk), "{}", e.message);
    }

    #[test]
    fn a_shell_addresses_the_event_when_only_the_id_is_readable() {
        let id = Uuid::now_v7();
        let raw = serde_json::to_vec(&serde_json::json!({"id": id, "kind": 3})).unwrap_or_default();
        let rk = "fax.acme.send";
        let event = failed_event(&raw, rk, 0, 0, &unroutable_error(rk), Utc::now());
        let event = event.unwrap_or_else(|| panic!("an event"));
        assert_eq!(event.command_id, id);
        assert_eq!(event.routing_key(), "fax.acme.failed");
        assert_eq!(event.run, 0);
    }

    #[test]
    fn no_event_without_an_id_or_a_three_part_routing_key() {
        let now = Utc::now();
        let e = unroutable_error("x");
        assert!(failed_event(b"not json", "payment.nobody.charge", 0, 0, &e, now).is_none());
        let id = Uuid::now_v7();
        assert!(failed_event(&body(id, "a.b.c"), "payment.nobody", 0, 0, &e, now).is_none());
        assert!(failed_event(&body(id, "a.b.c"), "Pay.ment.X", 0, 0, &e, now).is_none());
    }

    #[test]
    fn the_parked_copy_keeps_headers_and_adds_the_dead_letter_ones() {
        let original = Headers::default()
            .str(TRACEPARENT_HEADER, "00-a-b-01")
            .build();
        let rk = "payment.nobody.charge";
        let h = Some(parked_headers(
            Some(&original),
            rk,
            &unroutable_error(rk),
            0,
        ));
        assert_eq!(
            h.header_str(TRACEPARENT_HEADER).as_deref(),
            Some("00-a-b-01")
        );
        assert_eq!(h.header_str(ROUTING_KEY_HEADER).as_deref(), Some(rk));
        assert_eq!(h.header_str(ERROR_CLASS_HEADER).as_deref(), Some("invalid"));
        assert!(
            h.header_str(ERROR_HEADER)
                .is_some_and(|e| e.starts_with("unroutable: ")),
            "{h:?}"
        );
        assert_eq!(h.header_int(ATTEMPTS_HEADER), Some(0));
    }
}
