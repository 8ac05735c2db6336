//! Telemetry shared by every Switchyard process: structured logs (JSON when not on a
//! terminal, carrying the command and trace ids of the spans they are in), OpenTelemetry
//! traces carried across the broker by W3C `traceparent`, the Prometheus recorder, and the
//! operations endpoints `/healthz`, `/readyz` and `/metrics`.
//!
//! It does not define which metrics exist: each component records its own `switchyard_*`
//! metrics where they arise, with bounded labels (kind, provider, operation, outcome, status).

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

mod traces;

pub use traces::{Tracing, set_parent, trace_id, traceparent};

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
            // Another recorder may already be installed (e.g. by a test harness): then this
            // handle renders an empty registry rather than failing the process.
            if metrics::set_global_recorder(recorder).is_ok() {
                describe();
            }
            handle
        })
        .clone()
}

/// The help text of every `switchyard_*` metric, so `/metrics` carries `# HELP` lines
/// (`promtool check metrics` requires them) and operators read what each one means. The
/// metrics themselves are recorded where they arise.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    let counters = [
        (
            "switchyard_http_connections_refused_total",
            "Connections closed on accept because the server already held http.max_connections.",
        ),
        (
            "switchyard_commands_received_total",
            "Commands accepted by the ingress and confirmed by the broker, by kind and provider.",
        ),
        (
            "switchyard_commands_total",
            "Lifecycle events published by workers, by kind, provider and status (completed, failed, waiting…).",
        ),
        (
            "switchyard_attempts_total",
            "Provider calls, by kind, provider, operation and outcome (ok or the error class).",
        ),
        (
            "switchyard_retries_scheduled_total",
            "Commands sent to a delay tier for another attempt, by kind and provider.",
        ),
        (
            "switchyard_dead_letters_total",
            "Commands dead-lettered, by kind, provider and error class.",
        ),
        (
            "switchyard_unroutable_total",
            "Commands no worker serves, parked in switchyard.dlq.unroutable, by whether a failed event was sent.",
        ),
        (
            "switchyard_quick_retries_total",
            "In-process retries of fast transient failures.",
        ),
        (
            "switchyard_status_checks_total",
            "Status checks of polled long-running work, by kind, provider and outcome.",
        ),
        (
            "switchyard_events_published_total",
            "Lifecycle events confirmed by the broker, by kind, provider and status.",
        ),
        (
            "switchyard_ingress_requests_total",
            "HTTP requests to the ingress's command endpoint, by outcome.",
        ),
        (
            "switchyard_webhooks_total",
            "Inbound provider webhooks, by outcome (accepted, refused signature…).",
        ),
        (
            "switchyard_resolutions_total",
            "Waiting commands ended, by source (webhook, poll, expiry) and outcome.",
        ),
        (
            "switchyard_broker_connect_failures_total",
            "Failed attempts to connect to the broker.",
        ),
        (
            "switchyard_ledger_ingested_total",
            "Deliveries written by the ledger, by kind (events, attempts).",
        ),
        (
            "switchyard_ledger_undecodable_total",
            "Messages the ledger could not decode, by kind.",
        ),
        (
            "switchyard_ledger_dead_letters_total",
            "Messages the ledger parked in switchyard.dlq.ledger (refused by its database or undecodable), by source queue.",
        ),
        (
            "switchyard_duplicate_commands_total",
            "Commands that repeated an earlier command's identity and fingerprint and were not executed again, by kind and provider.",
        ),
        (
            "switchyard_idempotency_conflicts_total",
            "Commands refused because their identity (or id) already names a command asking for something else, by kind and provider.",
        ),
        (
            "switchyard_duplicate_deliveries_total",
            "Deliveries of a step already taken (a second copy, a superseded attempt, decided elsewhere), acknowledged without effect, by kind and reason.",
        ),
        (
            "switchyard_unknown_outcomes_total",
            "Attempts that ended unknown: the provider may have acted but its answer could not be read, by kind and provider.",
        ),
    ];
    for (name, help) in counters {
        describe_counter!(name, help);
    }
    let gauges = [
        (
            "switchyard_inflight",
            Unit::Count,
            "Deliveries being processed now, by kind.",
        ),
        (
            "switchyard_broker_connected",
            Unit::Count,
            "1 while the process holds a broker connection, else 0.",
        ),
        (
            "switchyard_circuit_state",
            Unit::Count,
            "A provider's circuit: 0 closed, 1 half-open, 2 open (no calls are made).",
        ),
        (
            "switchyard_ledger_lag_seconds",
            Unit::Seconds,
            "Age of the newest event the ledger wrote when it wrote it.",
        ),
    ];
    for (name, unit, help) in gauges {
        describe_gauge!(name, unit, help);
    }
    let histograms = [
        (
            "switchyard_attempt_duration_seconds",
            "Duration of provider calls, by kind, provider and operation.",
        ),
        (
            "switchyard_delivery_duration_seconds",
            "Duration of a delivery from receipt to settlement, by kind.",
        ),
        (
            "switchyard_publish_confirm_seconds",
            "Time from publishing to the broker's confirm, by outcome.",
        ),
        (
            "switchyard_ledger_batch_seconds",
            "Duration of the ledger's batched writes.",
        ),
    ];
    for (name, help) in histograms {
        describe_histogram!(name, Unit::Seconds, help);
    }
    describe_histogram!(
        "switchyard_journal_batch_size",
        Unit::Count,
        "Journal operations written in one transaction (group commit)."
    );
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
