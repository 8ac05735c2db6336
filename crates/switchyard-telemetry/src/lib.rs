//! Telemetry shared by every Switchyard process: structured logs (JSON when not on a
//! terminal, carrying the command and trace ids of the spans they are in), OpenTelemetry
//! traces carried across the broker by W3C `traceparent`, the Prometheus recorder, and the
//! operations endpoints `/healthz`, `/readyz` and `/metrics`.
//!
//! Each component records its own `switchyard_*` metrics where they arise; [`catalog`] names
//! every one with its type, labels and help text, and [`labels`] keeps label values bounded
//! (kind, provider, operation, outcome, status: never free text from the wire).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use switchyard_config::{HttpConfig, LogFormat, TelemetryConfig};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub mod catalog;
pub mod labels;
pub mod testing;
mod traces;

pub use traces::{Tracing, link, set_parent, trace_id, traceparent};

/// Installs logs and traces for the process `service` once; later calls return `None` (an
/// in-process fleet starts several components in one process). Keep the returned guard for
/// the life of the process: dropping it flushes the spans not yet exported.
pub fn init(config: &TelemetryConfig, service: &str) -> Option<Tracing> {
    static ONCE: OnceLock<()> = OnceLock::new();
    let mut guard = None;
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
        let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        // JSON lines carry the fields of the spans they are in: command_id, trace_id.
        let fmt = if json {
            fmt.json().flatten_event(true).boxed()
        } else {
            fmt.boxed()
        };
        let (provider, problem) = traces::provider(service);
        let installed = tracing_subscriber::registry()
            .with(filter)
            .with(fmt)
            .with(traces::layer(&provider))
            .try_init()
            .is_ok();
        if let Some(problem) = problem {
            tracing::warn!("{problem}");
        }
        if installed {
            guard = Some(traces::wrap(provider));
        }
    });
    guard
}

/// [`init`] for a process without a name of its own.
pub fn init_logging(config: &TelemetryConfig) -> Option<Tracing> {
    init(config, "switchyard")
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
            keep_up(handle.clone());
            // Another recorder may already be installed (e.g. by a test harness): then this
            // handle renders an empty registry rather than failing the process.
            if metrics::set_global_recorder(recorder).is_ok() {
                catalog::describe();
            }
            handle
        })
        .clone()
}

/// How often the recorder's pending histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds the recorder's pending histogram samples into their buckets every [`UPKEEP_EVERY`].
/// A recorder made with `build_recorder` does so only when rendered: a process nobody scrapes
/// would keep every sample it ever recorded, its memory growing with every command. A thread
/// of its own, so it runs whatever runtime (or none) the process has.
fn keep_up(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics upkeep; histogram samples pile up until /metrics is scraped");
    }
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
///
/// HTTP/1.1 only, under `limits`: a connection must send a whole request head within
/// `header_timeout_ms` (idle keep-alive connections included) and a body within
/// `body_timeout_ms` (else 408), and at most `max_connections` are open at once (one more is
/// closed on accept). Slow or idle clients cannot hold the server, whoever they are.
pub async fn serve(
    listen: SocketAddr,
    router: Router,
    limits: HttpConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    metrics::counter!("switchyard_http_connections_refused_total").increment(0);
    let router = router.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        Duration::from_millis(limits.body_timeout_ms),
    ));
    let task = tokio::spawn(accept_connections(listener, router, limits, shutdown));
    Ok((addr, task))
}

async fn accept_connections(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: HttpConfig,
    shutdown: CancellationToken,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_timeout_ms));
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, mostly: pause rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            metrics::counter!("switchyard_http_connections_refused_total").increment(1);
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // An error here is the client's (reset, timed out): nothing to report.
            let _ = conn.await;
            drop(permit);
        });
    }
    // In-flight requests get a moment to finish and idle connections close at once; a client
    // that stalls (never reading its answer) cannot hold the process open past that.
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = SHUTDOWN_GRACE.as_millis() as u64,
            "connections still open at shutdown were dropped"
        );
    }
}

/// How long a stopping server waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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
