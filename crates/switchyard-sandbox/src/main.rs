//! `switchyard-sandbox`: runs the provider emulator until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use switchyard_sandbox::{Sandbox, SandboxConfig, WebhookTarget};
use tracing_subscriber::EnvFilter;

/// HTTPS emulator of Switchyard's providers, for local runs and benchmarks.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Directory where the generated CA certificate (`ca.pem`) is written.
    #[arg(long, default_value = ".switchyard/sandbox")]
    cert_dir: PathBuf,
    /// Delay added to every provider request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Probability (0..=1) that a request without a scenario gets a 503.
    #[arg(long, default_value_t = 0.0)]
    failure_rate: f64,
    /// Require `Authorization: Bearer <token>` on provider endpoints.
    #[arg(long, env = "SWITCHYARD_SANDBOX_TOKEN", hide_env_values = true)]
    bearer_token: Option<String>,
    /// How long an accepted (202) operation runs before it finishes, in milliseconds.
    #[arg(long, default_value_t = 500)]
    operation_time_ms: u64,
    /// Where finished operations are reported, e.g. `http://127.0.0.1:8080/v1/webhooks/`
    /// (the provider's name is appended); needs `--webhook-secret-file`.
    #[arg(long, requires = "webhook_secret_file")]
    webhook_url: Option<String>,
    /// File holding the Standard Webhooks secret (`whsec_...`) callbacks are signed with.
    #[arg(long, requires = "webhook_url")]
    webhook_secret_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();

    let mut config = SandboxConfig::new(args.cert_dir);
    config.listen = args.listen;
    config.latency = Duration::from_millis(args.latency_ms);
    config.failure_rate = args.failure_rate;
    config.bearer_token = args.bearer_token;
    config.operation_time = Duration::from_millis(args.operation_time_ms);
    if let (Some(base_url), Some(file)) = (args.webhook_url, args.webhook_secret_file) {
        let secret = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        config.webhooks = Some(WebhookTarget {
            base_url,
            secret: secret.trim().to_owned(),
        });
    }

    let sandbox = Sandbox::start(config)
        .await
        .context("starting the sandbox")?;
    tracing::info!(
        url = %sandbox.base_url(),
        generic = %sandbox.generic_base_url("{kind}"),
        ca = %sandbox.ca_pem_path().display(),
        "sandbox listening"
    );

    stop_signal().await?;
    tracing::info!("stopping");
    sandbox.shutdown().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (what `docker stop` and process managers send).
async fn stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("listening for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("listening for Ctrl-C")?;
    Ok(())
}
