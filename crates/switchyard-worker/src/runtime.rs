//! Starting and stopping a kind's worker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchyard_amqp::topology::work_queue;
use switchyard_amqp::{Broker, BrokerSettings, ConsumeSettings, Publisher, Topology, consume};
use switchyard_config::Config;
use switchyard_core::IdempotencyNamespace;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::handler::{Handler, Slot, SlotMeters, WorkerMeters};
use crate::kind::{Kind, build_providers};
use crate::retry::RetrySchedule;
use crate::stack::{StackSettings, provider_stack};
use switchyard_journal::{Journal, Retention};

/// How long the journal remembers identities and steps: `worker.idempotency_window`, but
/// never less than the longest retry schedule the config allows (every attempt waiting in the
/// longest delay tier) plus the longest wait of a long-running operation (contract 7), so a
/// command is never forgotten while it can still act.
///
/// The journal is shared by every process of the fleet, and each prunes every kind's rows: the
/// longest wait is therefore every kind's, not only the kinds this process serves (`kinds`)
/// but those of `[[kinds]]` and the built-in kinds' default too. Counted over its own kinds
/// alone, a worker whose operations wait an hour pruned, after a day, the identities of
/// another kind's commands still waiting for a week.
pub fn journal_retention(config: &Config, kinds: &[Arc<dyn Kind>]) -> Retention {
    let longest_tier = config.retry.tiers.last().copied().unwrap_or_default();
    let most_attempts = config
        .providers
        .iter()
        .filter_map(|p| p.max_attempts)
        .chain([config.retry.max_attempts])
        .max()
        .unwrap_or(1);
    let default = switchyard_core::kind::DEFAULT_MAX_WAIT;
    let configured = config
        .kinds
        .iter()
        .flat_map(|k| k.operations.iter().map(|o| o.max_wait.unwrap_or(default)));
    let longest_wait = kinds
        .iter()
        .flat_map(|k| k.spec().operations.into_iter().map(|o| o.max_wait))
        .chain(configured)
        .fold(default, Duration::max);
    let floor = longest_tier.saturating_mul(most_attempts.saturating_sub(1)) + longest_wait;
    let window = config.worker.idempotency_window.max(floor);
    Retention {
        identities: window,
        steps: window,
    }
}

/// Opens the journal in the ledger's database (`SWITCHYARD_DATABASE_URL`).
pub async fn open_journal(config: &Config, kinds: &[Arc<dyn Kind>]) -> anyhow::Result<Journal> {
    Journal::open(
        config.ledger.database_url.expose(),
        journal_retention(config, kinds),
    )
    .await
    .context("opening the journal (in the database of ledger.database_url)")
}

/// A running worker.
#[derive(Debug)]
pub struct WorkerHandle {
    /// The kind this worker serves (named in shutdown warnings).
    pub kind: String,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub ops_addr: SocketAddr,
    /// The broker connection (readiness, tests).
    pub broker: Broker,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl WorkerHandle {
    /// Stops consuming, lets in-flight work finish within the grace period, and closes.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Waits until the worker stopped (after its shutdown token was cancelled).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Starts the worker of `kind`: returns once its ops endpoint listens; the broker connection
/// comes up in the background (readiness tells when).
pub async fn start(
    kind: Arc<dyn Kind>,
    config: &Config,
    shutdown: CancellationToken,
) -> anyhow::Result<WorkerHandle> {
    // Its own token: stopping this worker must not stop whatever shares the parent.
    let shutdown = shutdown.child_token();
    switchyard_telemetry::labels::register_config(config);
    let spec = kind.spec();
    let entries = build_providers(kind.as_ref(), config)?;
    if entries.is_empty() {
        warn!(kind = %spec.name, "no providers configured for this kind: the worker will idle");
    }
    if config.uses_dev_idempotency_secret() {
        warn!("worker.idempotency_secret is the development default: set it in production");
    }
    let mut topology = Topology::new(config.retry.tiers.clone(), config.amqp.delivery_limit)
        .with_kind(&spec.name)
        .with_ledger(config.ledger.enabled);
    for e in &entries {
        topology = topology.with_provider(&spec.name, e.provider.name());
    }
    let broker = Broker::start(
        BrokerSettings::from_config(&config.amqp, format!("switchyard-{}", spec.name)),
        topology,
    )?;
    let publisher = Publisher::new(
        broker.clone(),
        Duration::from_millis(config.amqp.confirm_timeout_ms),
    );
    let journal = open_journal(config, std::slice::from_ref(&kind)).await?;

    let providers = entries
        .iter()
        .map(|e| {
            let stack = provider_stack(
                e.provider.clone(),
                &StackSettings {
                    concurrency: e.concurrency,
                    rate_limit_per_sec: e.rate_limit_per_sec,
                    timeout: e.timeout,
                    quick_retries: config.worker.quick_retries,
                    quick_retry_delay: Duration::from_millis(config.worker.quick_retry_delay_ms),
                    circuit: (&config.worker.circuit).into(),
                    kind: spec.name.to_string(),
                },
            );
            let slot = Slot {
                stack,
                provider: e.provider.clone(),
                operations: e.provider.operations().to_vec(),
                max_attempts: e.max_attempts,
                meters: SlotMeters::new(&spec.name, e.provider.name(), e.provider.operations()),
            };
            (e.provider.name().clone(), slot)
        })
        .collect::<HashMap<_, _>>();
    let handler = Arc::new(Handler {
        meters: WorkerMeters::new(&spec.name),
        kind: spec.name.clone(),
        providers,
        validator: crate::kind::payload_validator([&spec], config)?,
        max_wait: spec
            .operations
            .iter()
            .map(|o| (o.name.clone(), o.max_wait))
            .collect(),
        publisher,
        namespace: IdempotencyNamespace::from_secret(&config.worker.idempotency_secret),
        redactor: crate::kind::redactor(config),
        schedule: RetrySchedule::new(
            config.retry.base,
            config.retry.cap,
            config.retry.tiers.clone(),
        ),
        journal,
    });
    handler.zero_metrics();

    let listen = config
        .worker
        .listen
        .unwrap_or_else(|| kind.default_listen());
    let ready_broker = broker.clone();
    let router = switchyard_telemetry::ops_router(Arc::new(move || ready_broker.is_ready()));
    let (ops_addr, server) =
        switchyard_telemetry::serve(listen, router, config.http, shutdown.clone())
            .await
            .with_context(|| format!("{} worker ops endpoint", spec.name))?;
    info!(kind = %spec.name, %ops_addr, providers = entries.len(), "worker started");

    let mut consumers = JoinSet::new();
    for e in &entries {
        let h = handler.clone();
        let prefetch = config.amqp.work_prefetch(e.concurrency);
        if usize::from(prefetch) <= e.concurrency {
            warn!(
                kind = %spec.name,
                provider = %e.provider.name(),
                prefetch,
                concurrency = e.concurrency,
                "amqp.prefetch is not above the provider's concurrency: each delivery keeps its \
                 slot until its events are confirmed, so fewer calls than that run at once"
            );
        }
        consumers.spawn(consume(
            broker.clone(),
            ConsumeSettings {
                queue: work_queue(&spec.name, e.provider.name()),
                prefetch,
                grace: Duration::from_millis(config.worker.shutdown_grace_ms),
            },
            shutdown.clone(),
            move |d| h.clone().handle(d),
        ));
    }
    // What the broker dead-lettered at a work queue's delivery limit gets its outcome here.
    consumers.spawn(crate::abandoned::run(
        handler.clone(),
        broker.clone(),
        config,
        shutdown.clone(),
    ));
    consumers.spawn(crate::unroutable::run(
        broker.clone(),
        handler.publisher.clone(),
        config,
        shutdown.clone(),
    ));
    let b = broker.clone();
    let task = tokio::spawn(async move {
        while consumers.join_next().await.is_some() {}
        b.close().await;
        let _ = server.await;
        info!("worker stopped");
    });
    Ok(WorkerHandle {
        kind: spec.name.to_string(),
        ops_addr,
        broker,
        shutdown,
        task,
    })
}

/// Runs the worker of `kind` until `shutdown` is cancelled (SIGTERM in the binaries).
pub async fn run(
    kind: Arc<dyn Kind>,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    start(kind, &config, shutdown).await?.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_is_kept_for_the_longest_wait_of_any_kind_not_only_its_own() {
        let config = Config::from_toml_str(
            r#"
            [[kinds]]
            name = "crm"
            operations = [{ name = "sync", schema = { type = "object" }, max_wait = "30days" }]
            [[kinds]]
            name = "quick"
            operations = [{ name = "ping", schema = { type = "object" }, max_wait = "1h" }]
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // A process serving only the quick kind still keeps the crm kind's rows for 30 days.
        let quick: Arc<dyn Kind> = Arc::new(
            crate::ConfiguredKind::from_config(&config, 1).unwrap_or_else(|e| panic!("{e}")),
        );
        let retention = journal_retention(&config, &[quick]);
        let month = Duration::from_secs(30 * 24 * 3600);
        assert!(retention.identities >= month, "{retention:?}");
        assert!(retention.steps >= month, "{retention:?}");
        // Without any long wait configured, a built-in kind's default day still holds.
        let plain = Config::from_toml_str("").unwrap_or_else(|e| panic!("{e}"));
        let retention = journal_retention(&plain, &[]);
        assert!(retention.steps >= switchyard_core::kind::DEFAULT_MAX_WAIT);
    }
}
