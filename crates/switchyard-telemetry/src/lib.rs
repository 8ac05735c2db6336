//! Telemetry shared by every Switchyard process: structured logs (JSON when not on a
//! terminal), the Prometheus recorder, and the operations endpoints `/healthz`, `/readyz`
//! and `/metrics`.
//!
//! It does not define which metrics exist: each component records its own `switchyard_*`
//! metrics where they arise, with bounded labels (kind, provider, operation, outcome, status).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use switchyard_config::{LogFormat, TelemetryConfig};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Installs the global log subscriber once; later calls are no-ops (in-process fleets and
/// tests start several components in one process).
pub fn init_logging(config: &TelemetryConfig) {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let filter = EnvFilter::try_from_default_env()
            .or_else(|_| {
                EnvFilter::try_new(config.log_filter.as_deref().unwrap_or("info,lapin=warn"))
            })
            .unwrap_or_else(|_| EnvFilter::new("info"));
        let json = match config.log_format {
            LogFormat::Json => true,
            LogFormat::Pretty => false,
            LogFormat::Auto => !std::io::stderr().is_terminal(),
        };
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let _ = if json {
            builder.json().flatten_event(true).try_init()
        } else {
            builder.try_init()
        };
    });
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ])
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Another recorder may already be installed (e.g. by a test harness): then this
            // handle renders an empty registry rather than failing the process.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Readiness, as decided by the component (e.g. "broker connected and topology declared").
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
struct OpsState {
    ready: Readiness,
    metrics: PrometheusHandle,
}

/// The `/healthz`, `/readyz` and `/metrics` routes, to merge into a component's router.
pub fn ops_router(ready: Readiness) -> Router {
    let state = OpsState {
        ready,
        metrics: metrics_handle(),
    };
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(state)
}

async fn readyz(State(s): State<OpsState>) -> impl IntoResponse {
    if (s.ready)() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn render_metrics(State(s): State<OpsState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

/// Serves `router` on `listen` until `shutdown`; returns the bound address at once.
pub async fn serve(
    listen: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let r = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "http server failed");
        }
    });
    Ok((addr, task))
}

/// A token cancelled on Ctrl-C or SIGTERM: the signal to stop consuming and drain.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown requested");
        t.cancel();
    });
    token
}
