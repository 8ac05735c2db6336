//! The shared `main` of the per-kind worker binaries.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use switchyard_config::Config;

use crate::kind::Kind;

/// A Switchyard integration worker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Config file (else SWITCHYARD_CONFIG, else ./switchyard.toml when present).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// A Switchyard worker for a kind declared in configuration (`[[kinds]]`).
#[derive(Debug, Parser)]
#[command(version, about)]
struct ConfiguredArgs {
    /// The `[[kinds]]` entry to serve.
    #[arg(long)]
    kind: String,
    /// Config file (else SWITCHYARD_CONFIG, else ./switchyard.toml when present).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Parses arguments and configuration, then runs the worker of `kind` until SIGTERM.
pub fn main(kind: Arc<dyn Kind>) -> ExitCode {
    let args = Args::parse();
    run_main(args.config, |_| Ok(kind))
}

/// `switchyard-worker --kind <name>`: the worker of a kind declared in `[[kinds]]`, with the
/// same runtime as the built-in kinds' binaries.
pub fn main_configured() -> ExitCode {
    let args = ConfiguredArgs::parse();
    run_main(args.config, |config| {
        let index = config
            .kinds
            .iter()
            .position(|k| k.name.as_str() == args.kind)
            .ok_or_else(|| {
                format!(
                    "no [[kinds]] entry named {:?} (the built-in kinds run as switchyard-payment, \
                     switchyard-shipping and switchyard-notification)",
                    args.kind
                )
            })?;
        crate::kind::ConfiguredKind::from_config(config, index)
            .map(|k| Arc::new(k) as Arc<dyn Kind>)
            .map_err(|e| e.to_string())
    })
}

fn run_main(
    path: Option<PathBuf>,
    kind: impl FnOnce(&Config) -> Result<Arc<dyn Kind>, String>,
) -> ExitCode {
    let config = match Config::load(path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln_stderr(&format!("error: {e}"));
            return ExitCode::from(2);
        }
    };
    let kind = match kind(&config) {
        Ok(k) => k,
        Err(e) => {
            let _ = writeln_stderr(&format!("error: {e}"));
            return ExitCode::from(2);
        }
    };
    // First: the OTLP exporter's HTTPS client needs it.
    switchyard_http::install_crypto_provider();
    let _tracing = switchyard_telemetry::init(
        &config.telemetry,
        &format!("switchyard-{}", kind.spec().name),
    );
    if let Err(e) = switchyard_faults::arm_from_env() {
        let _ = writeln_stderr(&format!("error: {e}"));
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let shutdown = switchyard_telemetry::shutdown_on_signals();
        match crate::runtime::run(kind, config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "worker failed");
                let _ = writeln_stderr(&format!("error: {e:#}"));
                ExitCode::FAILURE
            }
        }
    })
}

fn writeln_stderr(line: &str) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stderr(), "{line}")
}
