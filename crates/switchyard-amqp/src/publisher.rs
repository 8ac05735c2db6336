//! A publisher that reports success only after the broker confirmed the message.
//!
//! All publishes of a process share one confirm-mode channel per connection generation; each
//! caller awaits its own confirm, so many publishes are in flight at once (pipelined confirms)
//! without a round trip each. A `mandatory` publish that comes back is a failure, never a
//! silent loss.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation};
use tokio::sync::Mutex;

use tracing::Instrument as _;

use crate::broker::Broker;
use crate::headers::Headers;
use crate::messages::TRACEPARENT_HEADER;
use crate::spans;

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// Target exchange.
    pub exchange: &'a str,
    /// Routing key.
    pub routing_key: &'a str,
    /// Body.
    pub body: &'a [u8],
    /// Properties, headers included.
    pub properties: BasicProperties,
    /// Whether an unroutable message must come back (and so count as failed).
    pub mandatory: bool,
}

/// Why a publish did not succeed. Every variant means: the broker did not take
/// responsibility for the message; the caller must not assume it was delivered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// No connection, or the channel failed.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused the message (e.g. a full queue with reject-publish).
    #[error("broker refused the message (nack)")]
    Nacked,
    /// The message could not be routed and came back.
    #[error("message returned as unroutable: {0}")]
    Returned(String),
    /// No confirm within the timeout (e.g. the broker is blocked by a resource alarm).
    #[error("no confirm within {0:?}")]
    Timeout(Duration),
    /// The message cannot be sent as built (a name longer than AMQP's 255-byte short
    /// strings): sending it again will not help.
    #[error("not sendable: {0}")]
    Invalid(String),
}

impl PublishError {
    /// A short name of the variant, for `error.type` of the publish span.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Nacked => "nacked",
            Self::Returned(_) => "returned",
            Self::Timeout(_) => "timeout",
            Self::Invalid(_) => "invalid",
        }
    }
}

/// A confirmed publisher. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Publisher {
    broker: Broker,
    channel: Arc<Mutex<Option<(u64, Channel)>>>,
    confirm_timeout: Duration,
}

impl Publisher {
    /// A publisher on `broker`; a publish fails if not confirmed within `confirm_timeout`.
    pub fn new(broker: Broker, confirm_timeout: Duration) -> Self {
        Self {
            broker,
            channel: Arc::new(Mutex::new(None)),
            confirm_timeout,
        }
    }

    async fn channel(&self, deadline: Instant) -> Result<Channel, PublishError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let session = self
            .broker
            .session_within(remaining)
            .await
            .ok_or_else(|| PublishError::Unavailable("no broker connection".into()))?;
        let mut slot = self.channel.lock().await;
        if let Some((generation, ch)) = slot.as_ref()
            && *generation == session.generation
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        let ch = session
            .connection
            .create_channel()
            .await
            .map_err(|e| PublishError::Unavailable(e.to_string()))?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| PublishError::Unavailable(e.to_string()))?;
        *slot = Some((session.generation, ch.clone()));
        Ok(ch)
    }

    async fn forget(&self, ch: &Channel) {
        let mut slot = self.channel.lock().await;
        if slot.as_ref().is_some_and(|(_, c)| c.id() == ch.id()) {
            *slot = None;
        }
    }

    /// Publishes and waits for the broker's confirm, in a producer span (see
    /// [`crate::spans`]) whose context replaces the message's `traceparent`: the consumer's
    /// span becomes its child.
    pub async fn publish(&self, msg: Outgoing<'_>) -> Result<(), PublishError> {
        self.publish_in_order(vec![msg]).await
    }

    /// Publishes `msgs` one after the other on the one channel, then waits for all their
    /// confirms: one round trip for the lot, where awaiting each confirm before the next
    /// publish would take one each. The broker keeps a channel's order, so every queue
    /// receives them in the order given, as if each had been awaited. Fails with the first
    /// failure; a message that failed (or came after one) may or may not have been taken, as
    /// with any failed publish.
    pub async fn publish_in_order(&self, msgs: Vec<Outgoing<'_>>) -> Result<(), PublishError> {
        // On the heap: the publish and confirm futures (lapin's, the timeouts', the spans')
        // take about 4 KiB, which every caller's future would otherwise hold inline for its
        // whole life: a worker keeps one such future per prefetched delivery.
        Box::pin(self.publish_and_confirm(msgs)).await
    }

    async fn publish_and_confirm(&self, msgs: Vec<Outgoing<'_>>) -> Result<(), PublishError> {
        let started = Instant::now();
        let deadline = started + self.confirm_timeout;
        let mut sent = Vec::with_capacity(msgs.len());
        let mut first_error = None;
        match self.channel(deadline).await {
            Err(e) => first_error = Some(e),
            Ok(ch) => {
                for msg in msgs {
                    let span = spans::publish_span(msg.exchange, msg.routing_key, &msg.properties);
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    let send = self.send(&ch, msg, &span).instrument(span.clone());
                    let outcome = tokio::time::timeout(remaining, send)
                        .await
                        .unwrap_or(Err(PublishError::Timeout(self.confirm_timeout)));
                    match outcome {
                        Ok(confirm) => sent.push((span, confirm)),
                        Err(e) => {
                            spans::record_error(&span, e.kind());
                            first_error = Some(e);
                            break;
                        }
                    }
                }
                for (span, confirm) in sent {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    let outcome = match tokio::time::timeout(remaining, confirm)
                        .instrument(span.clone())
                        .await
                    {
                        Err(_) => Err(PublishError::Timeout(self.confirm_timeout)),
                        Ok(Err(e)) => Err(PublishError::Unavailable(e.to_string())),
                        Ok(Ok(confirmation)) => confirmed(confirmation),
                    };
                    if let Err(e) = outcome {
                        spans::record_error(&span, e.kind());
                        if matches!(e, PublishError::Unavailable(_)) {
                            self.forget(&ch).await;
                        }
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        let label = if first_error.is_none() { "ok" } else { "error" };
        metrics::histogram!("switchyard_publish_confirm_seconds", "outcome" => label)
            .record(started.elapsed().as_secs_f64());
        first_error.map_or(Ok(()), Err)
    }

    /// Hands one message to the channel (with the span's context as its `traceparent`); the
    /// confirm is awaited by the caller.
    async fn send(
        &self,
        ch: &Channel,
        msg: Outgoing<'_>,
        span: &tracing::Span,
    ) -> Result<lapin::PublisherConfirm, PublishError> {
        let exchange = short_string(msg.exchange)?;
        let routing_key = short_string(msg.routing_key)?;
        let mut properties = msg.properties;
        if let Some(tp) = switchyard_telemetry::traceparent(span) {
            let headers = Headers::from_table(properties.headers().as_ref())
                .str(TRACEPARENT_HEADER, &tp)
                .build();
            properties = properties.with_headers(headers);
        }
        let published = ch
            .basic_publish(
                exchange,
                routing_key,
                BasicPublishOptions {
                    mandatory: msg.mandatory,
                    immediate: false,
                },
                msg.body,
                properties,
            )
            .await;
        match published {
            Ok(confirm) => Ok(confirm),
            Err(e) => {
                self.forget(ch).await;
                Err(PublishError::Unavailable(e.to_string()))
            }
        }
    }
}

/// What a broker's confirmation means for the message.
fn confirmed(confirmation: Confirmation) -> Result<(), PublishError> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(ret)) | Confirmation::Nack(Some(ret)) => {
            Err(PublishError::Returned(ret.reply_text.to_string()))
        }
        Confirmation::Nack(None) => Err(PublishError::Nacked),
        Confirmation::NotRequested => Err(PublishError::Unavailable(
            "channel not in confirm mode".into(),
        )),
    }
}

/// `s` as an AMQP short string; longer than 255 bytes is an error, where lapin's conversion
/// would panic.
pub fn short_string(s: &str) -> Result<ShortString, PublishError> {
    ShortString::try_new(s).map_err(|_| {
        PublishError::Invalid(format!(
            "{} bytes where AMQP allows 255: {:?}",
            s.len(),
            switchyard_redact::cap(s, 48)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_past_255_bytes_is_an_error_not_a_panic() {
        assert_eq!(short_string(&"a".repeat(255)).unwrap().as_str().len(), 255);
        let err = short_string(&"é".repeat(128)).unwrap_err();
        assert!(
            matches!(&err, PublishError::Invalid(why) if why.starts_with("256 bytes")),
            "{err}"
        );
    }
}
