//! `switchyard`: the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use switchyard_cli::{bench, say, schemas, up};
use switchyard_config::Config;

/// Switchyard: integrations as commands, processed asynchronously, reported as events.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the whole fleet locally against sandbox providers, ready for a curl.
    Up {
        /// Where the ingress listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the generated config and the sandbox CA go.
        #[arg(long, default_value = ".switchyard")]
        state_dir: PathBuf,
    },
    /// Broker topology.
    Topology {
        #[command(subcommand)]
        action: TopologyCmd,
    },
    /// Run the provider sandbox (HTTPS emulators) on its own.
    Sandbox {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Where the CA certificate is written.
        #[arg(long, default_value = ".switchyard/sandbox")]
        cert_dir: PathBuf,
    },
    /// Drive commands through the whole path and print throughput, latency and memory.
    Bench {
        /// Commands to send.
        #[arg(long, default_value_t = 20_000)]
        commands: usize,
        /// Payload size in bytes.
        #[arg(long, default_value_t = 1024)]
        payload_bytes: usize,
        /// Publishes awaiting confirms at once.
        #[arg(long, default_value_t = 1000)]
        window: usize,
        /// Worker concurrency towards the sandbox.
        #[arg(long, default_value_t = 128)]
        concurrency: usize,
        /// Commands per second to offer; 0 publishes as fast as confirms allow.
        #[arg(long, default_value_t = 0)]
        rate: u32,
        /// Run the ledger process beside the worker.
        #[arg(long)]
        with_ledger: bool,
        /// Long-running mode: the provider accepts every command (202) and completes it by a
        /// signed webhook this long after, e.g. `30s`; shows worker memory with all waiting.
        #[arg(long, value_parser = humantime_serde::re::humantime::parse_duration)]
        waiting: Option<Duration>,
    },
    /// The ledger.
    Ledger {
        #[command(subcommand)]
        action: LedgerCmd,
    },
    /// The JSON Schemas of commands, events and payloads.
    Schemas {
        #[command(subcommand)]
        action: SchemasCmd,
    },
}

#[derive(Debug, Subcommand)]
enum TopologyCmd {
    /// Declare every exchange and queue of the configured providers (idempotent).
    Apply {
        /// Config file (else SWITCHYARD_CONFIG, else ./switchyard.toml when present).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum LedgerCmd {
    /// Empty request and response bodies of attempts older than the retention.
    Prune {
        /// Config file (else SWITCHYARD_CONFIG, else ./switchyard.toml when present).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides `ledger.attempt_body_retention`, e.g. `30d`.
        #[arg(long, value_parser = humantime_serde::re::humantime::parse_duration)]
        older_than: Option<Duration>,
    },
    /// Measure the store's ingest rate (events per second), SQLite and/or PostgreSQL.
    Bench {
        /// Events to write.
        #[arg(long, default_value_t = 60_000)]
        events: usize,
        /// Events per transaction.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Database URLs to measure (default: a temporary SQLite file).
        #[arg(long = "database-url")]
        urls: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum SchemasCmd {
    /// Write the schemas (default: ./schemas).
    Write {
        #[arg(default_value = "schemas")]
        dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    switchyard_http::install_crypto_provider();
    let result = match cli.command {
        Cmd::Up { listen, state_dir } => up::run(up::UpOptions { listen, state_dir }).await,
        Cmd::Topology {
            action: TopologyCmd::Apply { config },
        } => topology_apply(config).await,
        Cmd::Sandbox { listen, cert_dir } => sandbox(listen, cert_dir).await,
        Cmd::Bench {
            commands,
            payload_bytes,
            window,
            concurrency,
            rate,
            with_ledger,
            waiting,
        } => {
            bench::run(bench::BenchOptions {
                commands,
                payload_bytes,
                window,
                concurrency,
                rate,
                with_ledger,
                waiting,
            })
            .await
        }
        Cmd::Ledger {
            action: LedgerCmd::Prune { config, older_than },
        } => ledger_prune(config, older_than).await,
        Cmd::Ledger {
            action:
                LedgerCmd::Bench {
                    events,
                    batch,
                    urls,
                },
        } => bench::ledger(events, batch, urls).await,
        Cmd::Schemas {
            action: SchemasCmd::Write { dir },
        } => schemas::write(&dir)
            .map(|n| say(format!("wrote {n} schemas to {}", dir.display())))
            .map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn topology_apply(config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(config.as_deref())?;
    switchyard_telemetry::init_logging(&config.telemetry);
    let kinds = switchyard_ingress::builtin_kinds();
    let catalog = switchyard_worker::Catalog::build(&kinds, &config)?;
    let topology = catalog.topology(&config);
    let broker = switchyard_amqp::Broker::start(
        switchyard_amqp::BrokerSettings::from_config(&config.amqp, "switchyard-topology"),
        topology.clone(),
    )?;
    let ready = broker.wait_ready(Duration::from_secs(15)).await;
    broker.close().await;
    if !ready {
        anyhow::bail!("could not declare the topology: {}", up::BROKER_HELP);
    }
    say(
        "declared exchanges: switchyard.commands, switchyard.events, switchyard.retry, switchyard.dead, switchyard.unroutable",
    );
    for (kind, providers) in topology.providers() {
        say(format!(
            "  kind {kind}: dlq switchyard.dlq.{kind}, {} delay tiers",
            topology.tiers().len()
        ));
        for p in providers {
            say(format!(
                "    work queue {}",
                switchyard_amqp::topology::work_queue(kind, p)
            ));
        }
    }
    Ok(())
}

async fn sandbox(listen: SocketAddr, cert_dir: PathBuf) -> anyhow::Result<()> {
    switchyard_telemetry::init_logging(&Default::default());
    let mut config = switchyard_sandbox::SandboxConfig::new(cert_dir);
    config.listen = listen;
    let sandbox = switchyard_sandbox::Sandbox::start(config).await?;
    say(format!(
        "sandbox on {} (CA {})",
        sandbox.base_url(),
        sandbox.ca_pem_path().display()
    ));
    switchyard_telemetry::shutdown_on_signals()
        .cancelled()
        .await;
    sandbox.shutdown().await;
    Ok(())
}

async fn ledger_prune(config: Option<PathBuf>, older_than: Option<Duration>) -> anyhow::Result<()> {
    let config = Config::load(config.as_deref())?;
    let retention = older_than.unwrap_or(config.ledger.attempt_body_retention);
    let store = switchyard_ledger::Store::connect(config.ledger.database_url.expose()).await?;
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(retention)?;
    let p = store.prune(cutoff).await?;
    store.close().await;
    say(format!(
        "pruned the bodies of {} attempts and {} webhook ids older than {cutoff}",
        p.attempts, p.webhook_receipts
    ));
    Ok(())
}
