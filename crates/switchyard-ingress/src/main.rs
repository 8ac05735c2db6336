//! `switchyard-ingress`: the HTTP front door.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use switchyard_config::Config;

/// Switchyard's HTTP ingress.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Config file (else SWITCHYARD_CONFIG, else ./switchyard.toml when present).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// mimalloc: glibc's allocator spent a sixth of a worker's CPU under load (design note 0001).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "bad configuration");
            let _ = writeln_stderr(&format!("error: {e}"));
            return ExitCode::from(2);
        }
    };
    // First: the OTLP exporter's HTTPS client needs it.
    switchyard_http::install_crypto_provider();
    let _tracing = switchyard_telemetry::init(&config.telemetry, "switchyard-ingress");
    if let Err(e) = switchyard_faults::arm_from_env() {
        let _ = writeln_stderr(&format!("error: {e}"));
        return ExitCode::from(2);
    }
    let shutdown = switchyard_telemetry::shutdown_on_signals();
    let kinds = match switchyard_ingress::kinds(&config) {
        Ok(k) => k,
        Err(e) => {
            let _ = writeln_stderr(&format!("error: {e}"));
            return ExitCode::from(2);
        }
    };
    match switchyard_ingress::start(&config, &kinds, shutdown).await {
        Ok(handle) => {
            handle.wait().await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln_stderr(&format!("error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

fn writeln_stderr(line: &str) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stderr(), "{line}")
}
