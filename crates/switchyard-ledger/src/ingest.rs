//! Consuming events and attempt records in batches: one transaction per batch, acknowledged
//! only after the commit, so a crash or a database outage loses nothing.
//!
//! One message the database refuses must not stop the ledger: a refused batch is halved until
//! the message at fault is alone, and that one goes to `switchyard.dlq.ledger` with the reason
//! while everything else is written. An outage is not the data's fault: then the batch waits,
//! unacknowledged, and is written when the database is back.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::Duration;

use chrono::Utc;
use switchyard_amqp::lapin::options::{BasicAckOptions, BasicNackOptions};
use switchyard_amqp::messages::{TRACEPARENT_HEADER, dead_letter_headers};
use switchyard_amqp::topology::{DEAD_EXCHANGE, LEDGER_ATTEMPTS_QUEUE, LEDGER_EVENTS_QUEUE};
use switchyard_amqp::{
    Broker, ConsumeSettings, Delivery, HeaderRead, Headers, Outgoing, Publisher, consume_in_order,
};
use switchyard_core::{AttemptRecord, ErrorClass, ErrorInfo, Event};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, warn};

use crate::store::Store;

/// Header on a ledger dead letter naming the queue it came from, so a replay can send it back.
pub use switchyard_amqp::messages::SOURCE_QUEUE_HEADER;

/// Routing key on `switchyard.dead` of the ledger's dead letters from `queue` (the ledger
/// queues dead-letter there with the same key when their delivery limit is reached).
pub fn dead_letter_routing_key(queue: &str) -> &'static str {
    if queue == LEDGER_ATTEMPTS_QUEUE {
        "ledger.attempts"
    } else {
        "ledger.events"
    }
}

/// Creates at zero the ingestion's counters, so alerts see them before the first message.
pub(crate) fn zero_metrics() {
    use switchyard_telemetry::labels::zero_counter;
    for kind in ["events", "attempts"] {
        zero_counter("switchyard_ledger_ingested_total", &[("kind", kind.into())]);
        zero_counter(
            "switchyard_ledger_undecodable_total",
            &[("kind", kind.into())],
        );
    }
    for queue in [LEDGER_EVENTS_QUEUE, LEDGER_ATTEMPTS_QUEUE] {
        zero_counter(
            "switchyard_ledger_dead_letters_total",
            &[("queue", queue.into())],
        );
    }
}

/// A delivery waiting for its batch.
enum Item {
    Event(Delivery),
    Attempt(Delivery),
}

/// Batching knobs.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Most deliveries per transaction.
    pub size: usize,
    /// Longest a delivery waits for its batch to fill.
    pub max_wait: Duration,
}

/// Consumes both ledger queues until `shutdown`, writing in batches.
pub async fn run(
    broker: Broker,
    store: Store,
    publisher: Publisher,
    batch: BatchSettings,
    shutdown: CancellationToken,
) {
    let (tx, rx) = mpsc::channel::<Item>(batch.size * 4);
    let prefetch = u16::try_from(batch.size * 2).unwrap_or(u16::MAX);
    let settings = |queue: &str| ConsumeSettings {
        queue: queue.to_owned(),
        prefetch,
        grace: Duration::from_secs(5),
    };
    let events_tx = tx.clone();
    // In order: a batch then holds, per queue, every delivery up to its last tag that is not
    // settled yet, so one `multiple` ack settles them all (see `ack_batch`).
    let events = tokio::spawn(consume_in_order(
        broker.clone(),
        settings(LEDGER_EVENTS_QUEUE),
        shutdown.clone(),
        move |d| {
            let tx = events_tx.clone();
            async move {
                let _ = tx.send(Item::Event(d)).await;
            }
        },
    ));
    let attempts = tokio::spawn(consume_in_order(
        broker,
        settings(LEDGER_ATTEMPTS_QUEUE),
        shutdown.clone(),
        move |d| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(Item::Attempt(d)).await;
            }
        },
    ));
    write_batches(rx, store, publisher, batch, shutdown).await;
    let _ = events.await;
    let _ = attempts.await;
}

async fn write_batches(
    mut rx: mpsc::Receiver<Item>,
    store: Store,
    publisher: Publisher,
    batch: BatchSettings,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            item = rx.recv() => match item {
                Some(i) => i,
                None => return,
            },
        };
        let mut items = vec![first];
        let deadline = tokio::time::Instant::now() + batch.max_wait;
        while items.len() < batch.size {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(i)) => items.push(i),
                _ => break,
            }
        }
        let span = batch_span(&items);
        write(&store, &publisher, items, &shutdown)
            .instrument(span)
            .await;
    }
}

/// The consumer span of one batch (messaging conventions): `process`, kind `consumer`, the
/// size in `messaging.batch.message_count`, and a link to each message's trace, since a batch
/// belongs to many.
fn batch_span(items: &[Item]) -> tracing::Span {
    let span = tracing::info_span!(
        "ingest batch",
        otel.name = "process",
        otel.kind = "consumer",
        messaging.system = switchyard_amqp::spans::SYSTEM,
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.batch.message_count = items.len(),
    );
    for item in items {
        let (Item::Event(d) | Item::Attempt(d)) = item;
        let tp = d.properties.headers().header_str(TRACEPARENT_HEADER);
        switchyard_telemetry::link(&span, tp.as_deref());
    }
    span
}

/// Longest pause between two writes of a batch while the database is away.
const MAX_BACKOFF: Duration = Duration::from_secs(15);

/// A batch, decoded: events and attempt records beside the deliveries they came in.
#[derive(Default)]
struct Batch {
    events: Vec<Event>,
    event_deliveries: Vec<Delivery>,
    attempts: Vec<AttemptRecord>,
    attempt_deliveries: Vec<Delivery>,
}

/// Part of a batch: a range of its events and a range of its attempts.
#[derive(Debug, Clone)]
struct Part {
    events: Range<usize>,
    attempts: Range<usize>,
}

impl Part {
    fn len(&self) -> usize {
        self.events.len() + self.attempts.len()
    }

    /// Two halves, each smaller than this part (which holds two or more messages).
    fn halves(self) -> (Part, Part) {
        let empty = |r: &Range<usize>| r.end..r.end;
        if !self.events.is_empty() && !self.attempts.is_empty() {
            return (
                Part {
                    events: self.events.clone(),
                    attempts: empty(&self.attempts),
                },
                Part {
                    events: empty(&self.events),
                    attempts: self.attempts,
                },
            );
        }
        let split = |r: Range<usize>| {
            let mid = r.start + r.len() / 2;
            (r.start..mid, mid..r.end)
        };
        if self.events.is_empty() {
            let (a, b) = split(self.attempts);
            (
                Part {
                    events: self.events.clone(),
                    attempts: a,
                },
                Part {
                    events: self.events,
                    attempts: b,
                },
            )
        } else {
            let (a, b) = split(self.events);
            (
                Part {
                    events: a,
                    attempts: self.attempts.clone(),
                },
                Part {
                    events: b,
                    attempts: self.attempts,
                },
            )
        }
    }
}

impl Batch {
    /// Whether `part` is the whole batch (the batch was written in one go).
    fn is_whole(&self, part: &Part) -> bool {
        part.events == (0..self.events.len()) && part.attempts == (0..self.attempts.len())
    }

    fn deliveries(&self, part: &Part) -> impl Iterator<Item = (&Delivery, &'static str)> {
        self.event_deliveries[part.events.clone()]
            .iter()
            .map(|d| (d, LEDGER_EVENTS_QUEUE))
            .chain(
                self.attempt_deliveries[part.attempts.clone()]
                    .iter()
                    .map(|d| (d, LEDGER_ATTEMPTS_QUEUE)),
            )
    }
}

async fn write(
    store: &Store,
    publisher: &Publisher,
    items: Vec<Item>,
    shutdown: &CancellationToken,
) {
    let started = std::time::Instant::now();
    let mut batch = Batch::default();
    for item in items {
        match item {
            Item::Event(d) => match Event::decode(&d.data) {
                Ok(e) => {
                    batch.events.push(e);
                    batch.event_deliveries.push(d);
                }
                Err(e) => undecodable(publisher, &d, LEDGER_EVENTS_QUEUE, &e).await,
            },
            Item::Attempt(d) => match serde_json::from_slice::<AttemptRecord>(&d.data) {
                Ok(a) => {
                    batch.attempts.push(a);
                    batch.attempt_deliveries.push(d);
                }
                Err(e) => undecodable(publisher, &d, LEDGER_ATTEMPTS_QUEUE, &e).await,
            },
        }
    }
    let mut backoff = Duration::from_secs(1);
    let mut parts = VecDeque::from([Part {
        events: 0..batch.events.len(),
        attempts: 0..batch.attempts.len(),
    }]);
    while let Some(part) = parts.pop_front() {
        if part.len() == 0 {
            continue;
        }
        let events = &batch.events[part.events.clone()];
        let attempts = &batch.attempts[part.attempts.clone()];
        match store.apply(events, attempts).await {
            Ok(()) => {
                // Written, not acknowledged: the redelivered batch is applied again, to no
                // effect (applying is idempotent).
                switchyard_faults::point("after_ledger_commit");
                if batch.is_whole(&part) {
                    ack_batch(&batch.event_deliveries, &batch.attempt_deliveries).await;
                } else {
                    // A part of a batch split by a refusal: its deliveries one by one, all
                    // handed to the connection at once (one wake of its I/O loop).
                    futures::future::join_all(
                        batch
                            .deliveries(&part)
                            .map(|(d, _)| d.acker.ack(BasicAckOptions::default())),
                    )
                    .await;
                }
                metrics::counter!("switchyard_ledger_ingested_total", "kind" => "events")
                    .increment(events.len() as u64);
                metrics::counter!("switchyard_ledger_ingested_total", "kind" => "attempts")
                    .increment(attempts.len() as u64);
                if let Some(latest) = events.iter().map(|e| e.occurred_at).max() {
                    let lag = (Utc::now() - latest).num_milliseconds().max(0) as f64 / 1000.0;
                    metrics::gauge!("switchyard_ledger_lag_seconds").set(lag);
                }
            }
            Err(e) if e.is_data_fault() && part.len() > 1 => {
                warn!(error = %e, batch = part.len(), "the database refused a batch; isolating the message at fault");
                let (a, b) = part.halves();
                parts.push_front(b);
                parts.push_front(a);
            }
            Err(e) if e.is_data_fault() => {
                if let Some((d, queue)) = batch.deliveries(&part).next() {
                    let error = ErrorInfo::new(
                        ErrorClass::Invalid,
                        "ledger_refused",
                        format!("the ledger's database refused this message: {e}"),
                    );
                    dead_letter(publisher, d, queue, &error).await;
                }
            }
            Err(e) => {
                // The database is away, not the data at fault: the batch waits here, still
                // unacknowledged, and is written once it is back. Requeueing instead would
                // count against the queues' delivery limit and park good events.
                warn!(error = %e, batch = part.len(), retry_in = ?backoff, "ledger write failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        for p in std::iter::once(part).chain(parts.drain(..)) {
                            for (d, _) in batch.deliveries(&p) {
                                requeue(d).await;
                            }
                        }
                        break;
                    }
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                parts.push_front(part);
            }
        }
    }
    metrics::histogram!("switchyard_ledger_batch_seconds").record(started.elapsed().as_secs_f64());
}

/// Acknowledges a whole written batch: per queue, one `multiple` ack of the last delivery of
/// each channel, where a message each would cost the broker and the connection one frame per
/// message. Sound because the queues are consumed in order and batches are settled one after
/// the other: every delivery of that channel up to that tag is in this batch or was settled
/// before it (written, dead-lettered or returned). Each slice is in arrival order; after a
/// reconnect the tags start again from 1 on the new channel, so a tag not above the one
/// before begins another channel's run. An ack on a channel that has closed does nothing: the
/// broker has already returned those deliveries, and the redelivered copies are applied again
/// to no effect.
async fn ack_batch(events: &[Delivery], attempts: &[Delivery]) {
    let multiple = BasicAckOptions { multiple: true };
    futures::future::join_all(
        last_of_each_channel(events)
            .chain(last_of_each_channel(attempts))
            .map(|d| d.acker.ack(multiple)),
    )
    .await;
}

/// The last delivery of each run of rising delivery tags (one channel's deliveries in order).
fn last_of_each_channel(deliveries: &[Delivery]) -> impl Iterator<Item = &Delivery> {
    deliveries.iter().enumerate().filter_map(|(i, d)| {
        let next = deliveries.get(i + 1);
        next.is_none_or(|n| n.delivery_tag <= d.delivery_tag)
            .then_some(d)
    })
}

/// Returns `d` to its queue (a redelivery, counted against the queue's delivery limit).
pub(crate) async fn requeue(d: &Delivery) {
    let _ = d
        .acker
        .nack(BasicNackOptions {
            multiple: false,
            requeue: true,
        })
        .await;
}

/// Something that cannot be decoded cannot be stored either: parked with the reason, never
/// looped on.
async fn undecodable(
    publisher: &Publisher,
    d: &Delivery,
    queue: &'static str,
    e: &serde_json::Error,
) {
    let kind = if queue == LEDGER_ATTEMPTS_QUEUE {
        "attempts"
    } else {
        "events"
    };
    warn!(error = %e, kind, "undecodable ledger message: dead-lettered");
    metrics::counter!("switchyard_ledger_undecodable_total", "kind" => kind).increment(1);
    let error = ErrorInfo::new(
        ErrorClass::Invalid,
        "undecodable",
        format!("the ledger cannot decode this message: {e}"),
    );
    dead_letter(publisher, d, queue, &error).await;
}

/// Moves one message to `switchyard.dlq.ledger` (through `switchyard.dead`) with the reason,
/// redacted and capped, and the queue it came from; acknowledged only once the broker
/// confirmed the copy, else put back.
async fn dead_letter(publisher: &Publisher, d: &Delivery, queue: &'static str, error: &ErrorInfo) {
    let mut error = error.clone();
    error.message =
        switchyard_redact::cap(&switchyard_redact::mask_card_numbers(&error.message), 500);
    let headers = dead_letter_headers(
        Headers::from_table(d.properties.headers().as_ref()),
        &error,
        0,
    )
    .str(SOURCE_QUEUE_HEADER, queue);
    let published = publisher
        .publish(Outgoing {
            exchange: DEAD_EXCHANGE,
            routing_key: dead_letter_routing_key(queue),
            body: &d.data,
            properties: d.properties.clone().with_headers(headers.build()),
            mandatory: true,
        })
        .await;
    match published {
        Ok(()) => {
            warn!(queue, code = %error.code, reason = %error.message, "ledger message dead-lettered to switchyard.dlq.ledger");
            metrics::counter!("switchyard_ledger_dead_letters_total", "queue" => queue)
                .increment(1);
            let _ = d.acker.ack(BasicAckOptions::default()).await;
        }
        Err(e) => {
            warn!(error = %e, queue, "dead-lettering a ledger message failed; it will be redelivered");
            tokio::time::sleep(Duration::from_secs(1)).await;
            requeue(d).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tagged(tags: &[u64]) -> Vec<Delivery> {
        tags.iter()
            .map(|&t| Delivery::mock(t, "".into(), "".into(), false, Vec::new()))
            .collect()
    }

    fn acked(tags: &[u64]) -> Vec<u64> {
        let deliveries = tagged(tags);
        last_of_each_channel(&deliveries)
            .map(|d| d.delivery_tag)
            .collect()
    }

    #[test]
    fn one_channel_is_settled_by_its_last_delivery() {
        assert_eq!(acked(&[7, 8, 9, 12]), [12]);
        assert_eq!(acked(&[1]), [1]);
        assert!(acked(&[]).is_empty());
    }

    #[test]
    fn a_reconnect_mid_batch_settles_each_channel_by_its_own_last() {
        // The old channel's 41 and 42, then the new channel's tags from 1.
        assert_eq!(acked(&[41, 42, 1, 2, 3]), [42, 3]);
        // A channel that delivered only tag 1, then another.
        assert_eq!(acked(&[1, 1, 2]), [1, 2]);
    }
}
