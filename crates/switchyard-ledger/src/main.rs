//! `switchyard-ledger`: the ledger process, and `switchyard-ledger prune`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use switchyard_config::Config;

/// Switchyard's ledger.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Config file (else SWITCHYARD_CONFIG, else ./switchyard.toml when present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Empty request and response bodies of attempts older than the retention.
    Prune {
        /// Overrides `ledger.attempt_body_retention`, e.g. `30d`, `12h`.
        #[arg(long, value_parser = humantime_serde::re::humantime::parse_duration)]
        older_than: Option<Duration>,
    },
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "error: {e:#}");
    ExitCode::FAILURE
}

/// mimalloc: glibc's allocator spent a sixth of a worker's CPU under load (design note 0001).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    // First: the OTLP exporter's HTTPS client needs it.
    switchyard_http::install_crypto_provider();
    let _tracing = switchyard_telemetry::init(&config.telemetry, "switchyard-ledger");
    if let Err(e) = switchyard_faults::arm_from_env() {
        return fail(e);
    }
    match args.command {
        Some(Cmd::Prune { older_than }) => {
            let retention = older_than.unwrap_or(config.ledger.attempt_body_retention);
            let store = match switchyard_ledger::Store::connect(config.ledger.database_url.expose())
                .await
            {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let cutoff =
                chrono::Utc::now() - chrono::Duration::from_std(retention).unwrap_or_default();
            match store.prune(cutoff).await {
                Ok(p) => {
                    use std::io::Write;
                    let _ = writeln!(
                        std::io::stdout(),
                        "pruned the bodies of {} attempts and {} webhook ids older than {cutoff}",
                        p.attempts,
                        p.webhook_receipts
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        None => {
            let shutdown = switchyard_telemetry::shutdown_on_signals();
            match switchyard_ledger::start(&config, shutdown).await {
                Ok(handle) => {
                    handle.wait().await;
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}
