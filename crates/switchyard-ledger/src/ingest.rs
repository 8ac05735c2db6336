//! Consuming events and attempt records in batches: one transaction per batch, acknowledged
//! only after the commit, so a crash or a database outage loses nothing.

use std::time::Duration;

use chrono::Utc;
use switchyard_amqp::lapin::options::{BasicAckOptions, BasicNackOptions};
use switchyard_amqp::topology::{LEDGER_ATTEMPTS_QUEUE, LEDGER_EVENTS_QUEUE};
use switchyard_amqp::{Broker, ConsumeSettings, Delivery, consume};
use switchyard_core::{AttemptRecord, Event};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::store::Store;

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
pub async fn run(broker: Broker, store: Store, batch: BatchSettings, shutdown: CancellationToken) {
    let (tx, rx) = mpsc::channel::<Item>(batch.size * 4);
    let prefetch = u16::try_from(batch.size * 2).unwrap_or(u16::MAX);
    let settings = |queue: &str| ConsumeSettings {
        queue: queue.to_owned(),
        prefetch,
        grace: Duration::from_secs(5),
    };
    let events_tx = tx.clone();
    let events = tokio::spawn(consume(
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
    let attempts = tokio::spawn(consume(
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
    write_batches(rx, store, batch, shutdown).await;
    let _ = events.await;
    let _ = attempts.await;
}

async fn write_batches(
    mut rx: mpsc::Receiver<Item>,
    store: Store,
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
        write(&store, items).await;
    }
}

async fn write(store: &Store, items: Vec<Item>) {
    let started = std::time::Instant::now();
    let mut events = Vec::new();
    let mut attempts = Vec::new();
    let mut deliveries = Vec::with_capacity(items.len());
    let mut undecodable = Vec::new();
    for item in items {
        match item {
            Item::Event(d) => match Event::decode(&d.data) {
                Ok(e) => {
                    events.push(e);
                    deliveries.push(d);
                }
                Err(e) => undecodable.push((d, e.to_string(), "events")),
            },
            Item::Attempt(d) => match serde_json::from_slice::<AttemptRecord>(&d.data) {
                Ok(a) => {
                    attempts.push(a);
                    deliveries.push(d);
                }
                Err(e) => undecodable.push((d, e.to_string(), "attempts")),
            },
        }
    }
    // Something that cannot be decoded cannot be stored either: say so once and move on,
    // never loop on it.
    for (d, error, kind) in undecodable {
        warn!(%error, kind, "undecodable ledger message dropped");
        metrics::counter!("switchyard_ledger_undecodable_total", "kind" => kind).increment(1);
        let _ = d.acker.ack(BasicAckOptions::default()).await;
    }
    match store.apply(&events, &attempts).await {
        Ok(()) => {
            for d in &deliveries {
                let _ = d.acker.ack(BasicAckOptions::default()).await;
            }
            metrics::counter!("switchyard_ledger_ingested_total", "kind" => "events")
                .increment(events.len() as u64);
            metrics::counter!("switchyard_ledger_ingested_total", "kind" => "attempts")
                .increment(attempts.len() as u64);
            metrics::histogram!("switchyard_ledger_batch_seconds")
                .record(started.elapsed().as_secs_f64());
            if let Some(latest) = events.iter().map(|e| e.occurred_at).max() {
                let lag = (Utc::now() - latest).num_milliseconds().max(0) as f64 / 1000.0;
                metrics::gauge!("switchyard_ledger_lag_seconds").set(lag);
            }
        }
        Err(e) => {
            warn!(error = %e, batch = deliveries.len(), "ledger write failed; the batch will be redelivered");
            tokio::time::sleep(Duration::from_secs(1)).await;
            for d in &deliveries {
                let _ = d
                    .acker
                    .nack(BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    })
                    .await;
            }
        }
    }
}
