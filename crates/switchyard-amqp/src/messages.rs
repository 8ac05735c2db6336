//! The AMQP shape of the contract's messages: properties, headers and where each goes.

use lapin::BasicProperties;
use lapin::types::FieldTable;
use switchyard_core::attempt::ATTEMPT_TYPE_V1;
use switchyard_core::{AttemptRecord, COMMAND_TYPE_V1, Command, EVENT_TYPE_V1, Event};

use crate::headers::Headers;
use crate::publisher::{Outgoing, PublishError, Publisher, short_string};
use crate::topology::{
    ATTEMPTS_EXCHANGE, CALLBACKS_DELAY_KIND, CALLBACKS_EXCHANGE, CALLBACKS_ROUTING_KEY,
    COMMANDS_EXCHANGE, EVENTS_EXCHANGE, KIND_HEADER, RETRY_EXCHANGE, TIER_HEADER, tier_label,
};

/// W3C trace context header, carried on commands and events.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// Attempts already made for a command (set on delayed retries and dead letters' copies).
pub const ATTEMPT_HEADER: &str = "x-switchyard-attempt";
/// Set by the ingress on a command: the `pending` event was already emitted. Set to
/// [`POLL_SOURCE`] by a worker on a callback message that is a status check's answer.
pub const SOURCE_HEADER: &str = "x-switchyard-source";
/// [`SOURCE_HEADER`] of a callback message that answers a status check (not a webhook).
pub const POLL_SOURCE: &str = "poll";
/// The run of a command copy (v1.1): absent or 0 for the first run; `switchyard dlq replay`
/// sets it to the dead letter's run + 1 and drops [`ATTEMPT_HEADER`], so the replay is a new
/// run with a fresh retry budget.
pub const RUN_HEADER: &str = "x-switchyard-run";
/// On a ledger dead letter: the queue the ledger consumed it from, where a replay sends it.
pub const SOURCE_QUEUE_HEADER: &str = "x-switchyard-source-queue";
/// Dead-letter headers of the contract.
pub const ERROR_CLASS_HEADER: &str = "x-switchyard-error-class";
/// The (redacted) error message of a dead letter.
pub const ERROR_HEADER: &str = "x-switchyard-error";
/// Attempts made before a command was dead-lettered.
pub const ATTEMPTS_HEADER: &str = "x-switchyard-attempts";
/// When a command was dead-lettered (RFC 3339).
pub const FAILED_AT_HEADER: &str = "x-switchyard-failed-at";

/// On a parked copy that went through the default exchange (a kept dead letter, an
/// unroutable command): the routing key it had before, which the copy's own no longer shows.
pub const ROUTING_KEY_HEADER: &str = "x-switchyard-routing-key";

/// On a status check (a copy of a waiting command back in its work queue): the check's number.
pub const CHECK_HEADER: &str = "x-switchyard-check";
/// The provider's reference a status check asks about.
pub const REFERENCE_HEADER: &str = "x-switchyard-reference";
/// When the waiting command expires (Unix ms): checks stop there and the expiry decides.
pub const WAIT_UNTIL_HEADER: &str = "x-switchyard-wait-until";

/// Counts how often the resolver put a message back to wait (a callback ahead of its wait
/// record); past a bound it is dead-lettered instead.
pub const DEFERRALS_HEADER: &str = "x-switchyard-deferrals";

/// `headers` plus the contract's dead-letter headers (the error capped at 1000 bytes).
pub fn dead_letter_headers(
    headers: Headers,
    error: &switchyard_core::ErrorInfo,
    attempts: u32,
) -> Headers {
    let text = switchyard_redact::cap(&format!("{}: {}", error.code, error.message), 1000);
    headers
        .str(ERROR_CLASS_HEADER, error.class.as_str())
        .str(ERROR_HEADER, &text)
        .int(ATTEMPTS_HEADER, i64::from(attempts))
        .str(FAILED_AT_HEADER, &chrono::Utc::now().to_rfc3339())
}

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
    publish_events(publisher, &[event], traceparent).await
}

/// Publishes lifecycle events in the order given, awaiting their confirms together (see
/// [`Publisher::publish_in_order`]): every subscriber still receives them in that order.
pub async fn publish_events(
    publisher: &Publisher,
    events: &[&Event],
    traceparent: Option<&str>,
) -> Result<(), PublishError> {
    let ready: Vec<ReadyEvent> = events
        .iter()
        .map(|event| ReadyEvent::new(event, traceparent))
        .collect();
    let result = publisher
        .publish_in_order(ready.iter().map(ReadyEvent::outgoing).collect())
        .await;
    if result.is_ok() {
        for event in events {
            // An event may name a kind or provider read off the wire (an unroutable
            // command's): only configured names become label values.
            let (kind, provider) = switchyard_telemetry::labels::kind_provider(
                event.kind.as_str(),
                event.provider.as_str(),
            );
            metrics::counter!(
                "switchyard_events_published_total",
                "kind" => kind,
                "provider" => provider,
                "status" => event.status.as_str()
            )
            .increment(1);
        }
    }
    result
}

/// An event as it goes on the wire.
struct ReadyEvent {
    routing_key: String,
    body: Vec<u8>,
    properties: BasicProperties,
}

impl ReadyEvent {
    fn new(event: &Event, traceparent: Option<&str>) -> Self {
        // Metadata is the core app's and reaches every subscriber and the ledger: values
        // under a secret name are redacted here, the one door every event passes, whoever
        // built it.
        let redacted;
        let event =
            match redacted_metadata(&event.metadata, &switchyard_redact::Redactor::default()) {
                Some(metadata) => {
                    redacted = Event {
                        metadata,
                        ..event.clone()
                    };
                    &redacted
                }
                None => event,
            };
        let mut headers = Headers::default();
        if let Some(tp) = traceparent {
            headers = headers.str(TRACEPARENT_HEADER, tp);
        }
        Self {
            routing_key: event.routing_key(),
            body: event.to_bytes(),
            properties: persistent_json(EVENT_TYPE_V1, event.event_id.to_string(), headers.build()),
        }
    }

    fn outgoing(&self) -> Outgoing<'_> {
        Outgoing {
            exchange: EVENTS_EXCHANGE,
            routing_key: &self.routing_key,
            body: &self.body,
            properties: self.properties.clone(),
            mandatory: false,
        }
    }
}

/// Metadata with secret values redacted (by name, card numbers, URL credentials), when it
/// holds any (`None`: it is clean as it is). The worker applies it on receipt, so no event,
/// plan or wait record it builds carries them; [`publish_event`] applies it again.
pub fn redacted_metadata(
    metadata: &switchyard_core::Metadata,
    redactor: &switchyard_redact::Redactor,
) -> Option<switchyard_core::Metadata> {
    switchyard_core::Metadata::try_from(redactor.pairs(metadata.entries())?).ok()
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

/// Publishes the attempt records of one provider call, awaiting their confirms together.
pub async fn publish_attempts(
    publisher: &Publisher,
    records: &[AttemptRecord],
) -> Result<(), PublishError> {
    futures::future::try_join_all(records.iter().map(|r| publish_attempt(publisher, r)))
        .await
        .map(|_| ())
}

/// Publishes a message for the resolver on `switchyard.callbacks` (persistent, mandatory,
/// confirmed). With `delay`, it waits in that delay tier first.
pub async fn publish_callback_message(
    publisher: &Publisher,
    message_type: &str,
    message_id: &str,
    body: &[u8],
    delay: Option<std::time::Duration>,
    headers: Headers,
) -> Result<(), PublishError> {
    let (exchange, headers) = match delay {
        None => (CALLBACKS_EXCHANGE, headers),
        Some(tier) => (
            RETRY_EXCHANGE,
            headers
                .str(KIND_HEADER, CALLBACKS_DELAY_KIND)
                .str(TIER_HEADER, &tier_label(tier)),
        ),
    };
    // The id comes from outside (a provider's delivery id): checked, never panicking.
    short_string(message_id)?;
    publisher
        .publish(Outgoing {
            exchange,
            routing_key: CALLBACKS_ROUTING_KEY,
            body,
            properties: persistent_json(message_type, message_id.to_owned(), headers.build()),
            mandatory: true,
        })
        .await
}

/// The delay tier to wait in for `remaining`: the longest tier not past it (a message due
/// later hops again), or the shortest when even that is longer.
pub fn tier_within(
    tiers: &[std::time::Duration],
    remaining: std::time::Duration,
) -> Option<std::time::Duration> {
    tiers
        .iter()
        .copied()
        .filter(|t| *t <= remaining)
        .max()
        .or_else(|| tiers.iter().copied().min())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::tier_within;

    #[test]
    fn the_longest_tier_not_past_the_due_time() {
        let tiers = [1, 5, 30, 3600].map(Duration::from_secs);
        assert_eq!(tier_within(&tiers, Duration::from_secs(40)), Some(tiers[2]));
        assert_eq!(
            tier_within(&tiers, Duration::from_secs(7200)),
            Some(tiers[3])
        );
        assert_eq!(
            tier_within(&tiers, Duration::from_millis(10)),
            Some(tiers[0])
        );
        assert_eq!(tier_within(&[], Duration::from_secs(1)), None);
    }
}
