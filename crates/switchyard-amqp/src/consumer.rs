//! A consumer loop that survives reconnects and drains on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::broker::Broker;

/// What and how to consume.
#[derive(Debug, Clone)]
pub struct ConsumeSettings {
    /// The queue.
    pub queue: String,
    /// Unacknowledged deliveries in flight (also bounds concurrency of the handler).
    pub prefetch: u16,
    /// On shutdown, how long in-flight deliveries may take before they are abandoned
    /// (unacknowledged, so the broker redelivers them).
    pub grace: Duration,
}

/// Consumes `settings.queue` with manual acks until `shutdown` is cancelled, calling `handler`
/// for each delivery on its own task. The handler acks or nacks. After a connection or channel
/// failure it resumes on the broker's next session.
pub async fn consume<F, Fut>(
    broker: Broker,
    settings: ConsumeSettings,
    shutdown: CancellationToken,
    handler: F,
) where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    run(broker, settings, shutdown, handler, Dispatch::Spawn).await;
}

/// Like [`consume`], but awaits `handler` for each delivery before taking the next, so the
/// handler sees one channel's deliveries in the order the broker sent them (rising delivery
/// tags). For a handler that only hands the delivery on (to a batch): no task per message, and
/// a batch taken in order may be acknowledged at once up to its last tag (`multiple`).
pub async fn consume_in_order<F, Fut>(
    broker: Broker,
    settings: ConsumeSettings,
    shutdown: CancellationToken,
    handler: F,
) where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    run(broker, settings, shutdown, handler, Dispatch::InOrder).await;
}

/// How a delivery reaches its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dispatch {
    /// On a task of its own: deliveries are handled concurrently, up to the prefetch.
    Spawn,
    /// Awaited in the consumer loop, one after the other.
    InOrder,
}

async fn run<F, Fut>(
    broker: Broker,
    settings: ConsumeSettings,
    shutdown: CancellationToken,
    handler: F,
    dispatch: Dispatch,
) where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handler = Arc::new(handler);
    let mut inflight: JoinSet<()> = JoinSet::new();
    let mut draining: Option<lapin::Channel> = None;
    'sessions: while !shutdown.is_cancelled() {
        let session = tokio::select! {
            _ = shutdown.cancelled() => break,
            s = broker.session() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let opened = async {
            let ch = session.connection.create_channel().await?;
            ch.basic_qos(settings.prefetch, BasicQosOptions::default())
                .await?;
            let consumer = ch
                .basic_consume(
                    settings.queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>((ch, consumer))
        }
        .await;
        let (channel, mut consumer) = match opened {
            Ok(x) => x,
            Err(e) => {
                warn!(queue = %settings.queue, error = %e, "cannot consume, retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        info!(queue = %settings.queue, generation = session.generation, "consuming");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = channel
                        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                        .await;
                    draining = Some(channel);
                    break 'sessions;
                }
                Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                    if let Err(e) = done {
                        warn!(queue = %settings.queue, error = %e, "delivery handler panicked");
                    }
                }
                next = consumer.next() => match next {
                    Some(Ok(delivery)) if dispatch == Dispatch::InOrder => {
                        // Dropped unacknowledged on shutdown: closing the channel returns it.
                        tokio::select! {
                            _ = shutdown.cancelled() => {}
                            _ = handler(delivery) => {}
                        }
                    }
                    Some(Ok(delivery)) => {
                        let h = handler.clone();
                        inflight.spawn(async move { h(delivery).await });
                    }
                    Some(Err(e)) => {
                        warn!(queue = %settings.queue, error = %e, "consumer failed, resuming");
                        break;
                    }
                    None => {
                        // The broker cancelled the consumer (its queue deleted or its
                        // leader lost) or closed the channel: rare, and worth seeing.
                        info!(queue = %settings.queue, "consumer ended by the broker, consuming again");
                        break;
                    }
                },
            }
        }
        // Give the broker a moment before re-consuming on the same or the next session.
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    // Finish in-flight work within the grace period; what is left stays unacknowledged and
    // is redelivered by the broker.
    let drained = tokio::time::timeout(settings.grace, async {
        while inflight.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(queue = %settings.queue, left = inflight.len(), "grace period over, leaving in-flight deliveries for redelivery");
        inflight.abort_all();
    }
    // Closing the channel returns whatever is still unacknowledged to the queue at once.
    if let Some(ch) = draining {
        let _ = ch.close(200, "shutting down".into()).await;
    }
}
