//! The AMQP shape of the contract's messages: properties, headers and where each goes.

use lapin::BasicProperties;
use lapin::types::FieldTable;
use switchyard_core::attempt::ATTEMPT_TYPE_V1;
use switchyard_core::{AttemptRecord, COMMAND_TYPE_V1, Command, EVENT_TYPE_V1, Event};

use crate::headers::Headers;
use crate::publisher::{Outgoing, PublishError, Publisher};
use crate::topology::{ATTEMPTS_EXCHANGE, COMMANDS_EXCHANGE, EVENTS_EXCHANGE};

/// W3C trace context header, carried on commands and events.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// Attempts already made for a command (set on delayed retries and dead letters' copies).
pub const ATTEMPT_HEADER: &str = "x-switchyard-attempt";
/// Set by the ingress: the `pending` event was already emitted.
pub const SOURCE_HEADER: &str = "x-switchyard-source";
/// Dead-letter headers of the contract.
pub const ERROR_CLASS_HEADER: &str = "x-switchyard-error-class";
/// The (redacted) error message of a dead letter.
pub const ERROR_HEADER: &str = "x-switchyard-error";
/// Attempts made before a command was dead-lettered.
pub const ATTEMPTS_HEADER: &str = "x-switchyard-attempts";
/// When a command was dead-lettered (RFC 3339).
pub const FAILED_AT_HEADER: &str = "x-switchyard-failed-at";

fn persistent_json(kind: &str, id: String, headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(id.into())
        .with_type(kind.into())
        .with_timestamp(u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default())
        .with_headers(headers)
}

/// The properties of a command message.
pub fn command_properties(command: &Command, headers: Headers) -> BasicProperties {
    persistent_json(COMMAND_TYPE_V1, command.id.to_string(), headers.build())
}

/// Publishes a command (persistent, mandatory, confirmed).
pub async fn publish_command(
    publisher: &Publisher,
    command: &Command,
    headers: Headers,
) -> Result<(), PublishError> {
    let body = command.to_bytes();
    publisher
        .publish(Outgoing {
            exchange: COMMANDS_EXCHANGE,
            routing_key: &command.routing_key().to_string(),
            body: &body,
            properties: command_properties(command, headers),
            mandatory: true,
        })
        .await
}

/// Publishes a lifecycle event (persistent, confirmed). Not mandatory: the core app decides
/// which events it binds, and an event nobody subscribed to is not an error.
pub async fn publish_event(
    publisher: &Publisher,
    event: &Event,
    traceparent: Option<&str>,
) -> Result<(), PublishError> {
    let body = event.to_bytes();
    let mut headers = Headers::default();
    if let Some(tp) = traceparent {
        headers = headers.str(TRACEPARENT_HEADER, tp);
    }
    let result = publisher
        .publish(Outgoing {
            exchange: EVENTS_EXCHANGE,
            routing_key: &event.routing_key(),
            body: &body,
            properties: persistent_json(EVENT_TYPE_V1, event.event_id.to_string(), headers.build()),
            mandatory: false,
        })
        .await;
    if result.is_ok() {
        metrics::counter!(
            "switchyard_events_published_total",
            "kind" => event.kind.to_string(),
            "provider" => event.provider.to_string(),
            "status" => event.status.as_str()
        )
        .increment(1);
    }
    result
}

/// Publishes an attempt record for the ledger (persistent, confirmed, not mandatory: a
/// deployment without a ledger simply does not bind the exchange).
pub async fn publish_attempt(
    publisher: &Publisher,
    record: &AttemptRecord,
) -> Result<(), PublishError> {
    let body = record.to_bytes();
    publisher
        .publish(Outgoing {
            exchange: ATTEMPTS_EXCHANGE,
            routing_key: &record.routing_key(),
            body: &body,
            properties: persistent_json(
                ATTEMPT_TYPE_V1,
                record.record_id.to_string(),
                Headers::default().build(),
            ),
            mandatory: false,
        })
        .await
}
