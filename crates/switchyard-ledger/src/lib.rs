//! The ledger: every lifecycle event and every provider attempt, stored and queryable.
//!
//! It consumes `switchyard.ledger.events` and `switchyard.ledger.attempts` (durable quorum
//! queues that every component declares), writes them in batched transactions and only then
//! acknowledges them, so workers never wait for it and it catches up after any outage with
//! nothing lost. Applying events is idempotent and order-proof. Storage is SQLite by default
//! and PostgreSQL in production, through one implementation.
//!
//! It decides one thing: how a `waiting` command ends. Being the component that knows every
//! waiting command, it consumes `switchyard.callbacks` (wait records, verified callbacks,
//! expiries) and publishes exactly one terminal event per waiting command.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchyard_amqp::{Broker, BrokerSettings, Topology};
use switchyard_config::Config;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

mod api;
mod ingest;
mod resolve;
pub mod seal;
mod store;
mod waits;

pub use api::{ListQuery, ResolutionRequest, operator_router, query_router};
pub use ingest::{BatchSettings, SOURCE_QUEUE_HEADER, dead_letter_routing_key};
pub use store::{
    BadCursor, CommandSummary, CommandView, ListFilter, Page, Pruned, Store, StoreError,
};
pub use waits::{OperatorResolution, Resolution, Resolved, Verdict};

/// A running ledger.
#[derive(Debug)]
pub struct LedgerHandle {
    /// Where the query API and ops endpoints listen.
    pub addr: SocketAddr,
    /// The broker connection.
    pub broker: Broker,
    /// The store (tests, the ingress mounting the query API).
    pub store: Store,
    /// A confirming publisher on its broker connection (operators' resolutions).
    pub publisher: switchyard_amqp::Publisher,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl LedgerHandle {
    /// Stops consuming and waits for the last batch to be written.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until the ledger stopped (after its shutdown token was cancelled).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        self.broker.close().await;
        self.store.close().await;
    }
}

/// Starts the ledger: store, consumers, hourly pruning, and the query API on
/// `config.ledger.listen`.
pub async fn start(config: &Config, shutdown: CancellationToken) -> anyhow::Result<LedgerHandle> {
    // Its own token: stopping the ledger must not stop whatever shares the parent.
    let shutdown = shutdown.child_token();
    if config.ledger.record_key.expose() == switchyard_config::DEV_RECORD_KEY {
        tracing::warn!(
            "ledger.record_key is the development key: set SWITCHYARD_LEDGER__RECORD_KEY so \
             sealed waiting commands are not readable with a key everyone knows"
        );
    }
    switchyard_telemetry::labels::register_config(config);
    resolve::zero_metrics(config);
    ingest::zero_metrics();
    let store = Store::connect(config.ledger.database_url.expose())
        .await?
        .protecting(
            seal::Sealer::new(config.ledger.record_key.expose()),
            switchyard_redact::Redactor::new(
                &config.redaction.secret_fields,
                config.redaction.max_body_bytes,
            ),
        );
    let broker = Broker::start(
        BrokerSettings::from_config(&config.amqp, "switchyard-ledger"),
        Topology::new(config.retry.tiers.clone(), config.amqp.delivery_limit).with_ledger(true),
    )?;
    let publisher = switchyard_amqp::Publisher::new(
        broker.clone(),
        Duration::from_millis(config.amqp.confirm_timeout_ms),
    );
    let ingest = tokio::spawn(ingest::run(
        broker.clone(),
        store.clone(),
        publisher.clone(),
        BatchSettings {
            size: config.ledger.batch_size.max(1),
            max_wait: Duration::from_millis(config.ledger.batch_max_wait_ms),
        },
        shutdown.clone(),
    ));
    let resolver = tokio::spawn(resolve::run(
        broker.clone(),
        store.clone(),
        publisher.clone(),
        config.retry.tiers.clone(),
        shutdown.clone(),
    ));
    let retention = config.ledger.attempt_body_retention;
    let prune_store = store.clone();
    let prune_stop = shutdown.clone();
    let pruning = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = prune_stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let cutoff =
                chrono::Utc::now() - chrono::Duration::from_std(retention).unwrap_or_default();
            match prune_store.prune(cutoff).await {
                Ok(p) if p.attempts + p.webhook_receipts > 0 => info!(
                    attempts = p.attempts,
                    webhook_receipts = p.webhook_receipts,
                    "attempt bodies and webhook ids past retention pruned"
                ),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "pruning failed"),
            }
        }
    });
    let ready = broker.clone();
    let router = operator_router(
        store.clone(),
        publisher.clone(),
        config.ingress.tokens.clone(),
        config.ingress.auth_disabled,
    )
    .merge(switchyard_telemetry::ops_router(Arc::new(move || {
        ready.is_ready()
    })));
    let (addr, server) =
        switchyard_telemetry::serve(config.ledger.listen, router, config.http, shutdown.clone())
            .await?;
    info!(%addr, "ledger listening");
    Ok(LedgerHandle {
        addr,
        broker,
        store,
        publisher,
        shutdown,
        tasks: vec![ingest, resolver, pruning, server],
    })
}

/// Writes `events` synthetic events in batches of `batch` and returns events per second:
/// the store's ingest rate, without the broker.
pub async fn ingest_bench(store: &Store, events: usize, batch: usize) -> Result<f64, StoreError> {
    use switchyard_core::{Command, Lifecycle};
    let started = std::time::Instant::now();
    let mut pending = Vec::with_capacity(batch);
    let mut written = 0;
    while written < events {
        let command: Command = serde_json::from_value(serde_json::json!({
            "id": uuid::Uuid::now_v7(), "kind": "payment", "provider": "bench", "operation": "charge",
            "payload": {}, "created_at": chrono::Utc::now(),
        }))
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let now = chrono::Utc::now();
        let lc = Lifecycle::of(&command);
        let (attempt, processing) = lc.begin(1, now);
        pending.extend([
            lc.pending(now),
            processing,
            attempt.complete(serde_json::json!({"ok": true}), None, now),
        ]);
        if pending.len() >= batch {
            written += pending.len();
            store.apply(&pending, &[]).await?;
            pending.clear();
        }
    }
    if !pending.is_empty() {
        written += pending.len();
        store.apply(&pending, &[]).await?;
    }
    Ok(written as f64 / started.elapsed().as_secs_f64())
}
