//! The HTTP ingress: a thin front door that turns `POST /v1/commands` into a confirmed
//! publish on `switchyard.commands`.
//!
//! It answers 202 only after the broker confirmed a persistent, mandatory publish (and emits
//! the `pending` event); when the broker cannot confirm it answers 503 with `Retry-After`, so a
//! client never believes in a command that does not exist. It validates everything it can
//! (authentication, size, media type, shape, kind/provider/operation, payload schema) so bad
//! input is refused at the door with a problem+json answer naming the field. It keeps no
//! state: status queries are the ledger's.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::Utc;
use serde_json::Value;
use switchyard_amqp::messages::{
    SOURCE_HEADER, TRACEPARENT_HEADER, publish_command, publish_event,
};
use switchyard_amqp::{Broker, BrokerSettings, Headers, Publisher};
use switchyard_config::Config;
use switchyard_core::command::{IdempotencyKey, decode_json};
use switchyard_core::{
    Command, CommandDraft, IdempotencyNamespace, Lifecycle, PayloadValidator, Secret, Status,
};
use switchyard_faults::point;
use switchyard_journal::{Admission, Journal};
use switchyard_worker::{Catalog, Kind};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info, info_span, warn};
use uuid::Uuid;

pub use switchyard_api::Problem;

mod webhooks;

pub use webhooks::MAX_WEBHOOK_BYTES;

/// The answer to `POST /v1/commands`: `202` for a command accepted now, `200` (with
/// `Idempotent-Replayed: true`) for a repeat of one accepted before.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[schemars(title = "Switchyard command accepted")]
pub struct CommandAccepted {
    /// The command's id: the one sent, else derived from the idempotency key (UUIDv5), else a
    /// fresh UUIDv7. On a repeat, the original command's id.
    pub id: Uuid,
    /// `pending` on a `202`; on a repeat, the original's status as the ledger last recorded it
    /// (`pending` while the ledger has not recorded it).
    pub status: Status,
    /// `/v1/commands/{id}`, relative to the ingress's base URL, where the ledger answers what
    /// happened to the command; also sent as `Location`.
    pub status_url: String,
}

/// Every kind this build of Switchyard knows. Adding a kind adds one line here.
pub fn builtin_kinds() -> Vec<Arc<dyn Kind>> {
    vec![
        Arc::new(switchyard_payment::Payment),
        Arc::new(switchyard_shipping::Shipping),
        Arc::new(switchyard_notification::Notification),
    ]
}

/// The built-in kinds and every kind declared in `[[kinds]]`: what the ingress accepts and
/// the topology declares.
pub fn kinds(config: &Config) -> Result<Vec<Arc<dyn Kind>>, switchyard_config::ConfigError> {
    switchyard_worker::with_configured_kinds(builtin_kinds(), config)
}

struct Ingress {
    catalog: Catalog,
    journal: Journal,
    validator: PayloadValidator,
    publisher: Publisher,
    namespace: IdempotencyNamespace,
    tokens: Vec<Secret<String>>,
    auth_disabled: bool,
    max_body: usize,
    retry_after: u32,
}

/// A running ingress.
#[derive(Debug)]
pub struct IngressHandle {
    /// The bound address.
    pub addr: std::net::SocketAddr,
    /// The broker connection (readiness, tests).
    pub broker: Broker,
    task: tokio::task::JoinHandle<()>,
}

impl IngressHandle {
    /// Waits until the server stopped (after its shutdown token was cancelled).
    pub async fn wait(self) {
        let _ = self.task.await;
        self.broker.close().await;
    }
}

/// Starts the ingress on `config.ingress.listen` and declares the whole topology of the
/// configured providers, so commands are routable before any worker runs.
pub async fn start(
    config: &Config,
    kinds: &[Arc<dyn Kind>],
    shutdown: CancellationToken,
) -> anyhow::Result<IngressHandle> {
    start_with_routes(config, kinds, Router::new(), shutdown).await
}

/// [`start`], also serving `routes` on the same address (e.g. the ledger's query API, so
/// `status_url` resolves on the ingress's base URL).
pub async fn start_with_routes(
    config: &Config,
    kinds: &[Arc<dyn Kind>],
    routes: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<IngressHandle> {
    switchyard_telemetry::labels::register_config(config);
    let catalog = Catalog::build(kinds, config)?;
    let validator = switchyard_worker::payload_validator(catalog.specs(), config)?;
    let topology = catalog.topology(config);
    let broker = Broker::start(
        BrokerSettings::from_config(&config.amqp, "switchyard-ingress"),
        topology,
    )?;
    zero_metrics(config);
    if !config.ingress.auth_disabled && config.ingress.tokens.is_empty() {
        warn!(
            "ingress.tokens is empty and auth is enabled: every command will be refused with 401"
        );
    }
    let journal = switchyard_worker::open_journal(config, kinds).await?;
    let state = Arc::new(Ingress {
        catalog,
        journal,
        validator,
        publisher: Publisher::new(
            broker.clone(),
            Duration::from_millis(config.amqp.confirm_timeout_ms),
        ),
        namespace: IdempotencyNamespace::from_secret(&config.worker.idempotency_secret),
        tokens: config.ingress.tokens.clone(),
        auth_disabled: config.ingress.auth_disabled,
        max_body: config.ingress.max_body_bytes,
        retry_after: config.ingress.retry_after_secs,
    });
    let receivers = Arc::new(webhooks::Receivers::new(
        &state.catalog,
        config,
        state.publisher.clone(),
    ));
    let ready_broker = broker.clone();
    let router = Router::new()
        .route("/v1/commands", post(submit))
        .with_state(state)
        .merge(
            Router::new()
                .route("/v1/webhooks/{provider}", post(webhooks::receive))
                .with_state(receivers),
        )
        .merge(routes)
        .merge(switchyard_telemetry::ops_router(Arc::new(move || {
            ready_broker.is_ready()
        })));
    let (addr, task) =
        switchyard_telemetry::serve(config.ingress.listen, router, config.http, shutdown).await?;
    info!(%addr, "ingress listening");
    Ok(IngressHandle { addr, broker, task })
}

fn authenticated(state: &Ingress, headers: &HeaderMap) -> bool {
    switchyard_api::bearer_authorized(&state.tokens, state.auth_disabled, headers)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
        .unwrap_or(false)
}

/// The refusals `POST /v1/commands` can answer with, as `outcome` label values.
const REQUEST_REFUSALS: [&str; 8] = [
    "unauthenticated",
    "unsupported_media_type",
    "too_large",
    "body_unread",
    "malformed",
    "invalid",
    "idempotency_conflict",
    "unavailable",
];

/// Creates at zero the ingress's series that alerts and dashboards read.
fn zero_metrics(config: &Config) {
    use switchyard_telemetry::labels::zero_counter;
    for p in &config.providers {
        for counter in [
            "switchyard_commands_received_total",
            "switchyard_duplicate_commands_total",
            "switchyard_idempotency_conflicts_total",
        ] {
            zero_counter(
                counter,
                &[
                    ("kind", p.kind.to_string()),
                    ("provider", p.name.to_string()),
                ],
            );
        }
    }
    for outcome in std::iter::once("accepted").chain(REQUEST_REFUSALS) {
        zero_counter(
            "switchyard_ingress_requests_total",
            &[("outcome", outcome.into())],
        );
    }
    for outcome in webhooks::OUTCOMES {
        zero_counter("switchyard_webhooks_total", &[("outcome", outcome.into())]);
    }
}

/// The HTTP server span of a request (OpenTelemetry HTTP conventions): `{method} {route}`,
/// kind `server`, a child of the caller's `traceparent` when it sent one.
pub(crate) fn server_span(headers: &HeaderMap, route: &'static str) -> tracing::Span {
    let span = info_span!(
        "http request",
        otel.name = %format_args!("POST {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = "POST",
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        command_id = tracing::field::Empty,
        kind = tracing::field::Empty,
        provider = tracing::field::Empty,
        operation = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    let incoming = headers
        .get(TRACEPARENT_HEADER)
        .and_then(|v| v.to_str().ok());
    switchyard_telemetry::set_parent(&span, incoming);
    if let Some(id) = switchyard_telemetry::trace_id(&span) {
        span.record("trace_id", id);
    }
    span
}

/// Records the answer's status on a [`server_span`]; a 5xx is an error of the server.
pub(crate) fn record_status(span: &tracing::Span, status: StatusCode) {
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("error.type", status.as_str());
        span.record("otel.status_code", "error");
    }
}

async fn submit(State(state): State<Arc<Ingress>>, headers: HeaderMap, body: Body) -> Response {
    let span = server_span(&headers, "/v1/commands");
    let result = accept(&state, &headers, body, &span)
        .instrument(span.clone())
        .await;
    let outcome = match &result {
        Ok(_) => "accepted",
        Err(p) => p.label(),
    };
    metrics::counter!("switchyard_ingress_requests_total", "outcome" => outcome).increment(1);
    let response = match result {
        Ok(r) => r,
        Err(p) => p.into_response(),
    };
    record_status(&span, response.status());
    response
}

async fn accept(
    state: &Ingress,
    headers: &HeaderMap,
    body: Body,
    span: &tracing::Span,
) -> Result<Response, Problem> {
    if !authenticated(state, headers) {
        return Err(Problem::unauthenticated());
    }
    if !is_json(headers) {
        return Err(Problem::not_json());
    }
    let bytes = switchyard_api::read_body(body, state.max_body).await?;
    serde_json::from_slice::<Value>(&bytes)
        .map_err(|e| Problem::malformed(format!("the body is not valid JSON: {e}")))?;
    let mut draft: CommandDraft = decode_json(&bytes).map_err(|e| {
        let naming = matches!(e.field.as_deref(), Some("kind" | "provider" | "operation"));
        let p = if naming {
            Problem::invalid(e.message)
        } else {
            Problem::malformed(e.message)
        };
        p.with_field(e.field)
    })?;

    if let Some(h) = headers.get("idempotency-key") {
        let key = h
            .to_str()
            .ok()
            .and_then(|s| IdempotencyKey::try_from(s.to_owned()).ok())
            .ok_or_else(|| {
                Problem::malformed("the Idempotency-Key header must be 1 to 255 visible characters")
                    .with_field(Some("idempotency_key".into()))
            })?;
        match &draft.idempotency_key {
            Some(k) if *k != key => {
                return Err(Problem::malformed(
                    "the Idempotency-Key header and the idempotency_key field differ",
                )
                .with_field(Some("idempotency_key".into())));
            }
            _ => draft.idempotency_key = Some(key),
        }
    }

    state
        .catalog
        .check(&draft.kind, &draft.provider, &draft.operation)
        .map_err(|e| Problem::invalid(e.to_string()).with_field(Some(e.field().into())))?;
    // One JSON value of the payload serves the schema and the card check.
    let payload = Value::Object(draft.payload.clone());
    state
        .validator
        .validate(&draft.kind, &draft.provider, &draft.operation, &payload)
        .map_err(|e| {
            Problem::invalid(switchyard_http::mask_card_numbers(&e.message)).with_field(e.field)
        })?;
    if let Some(field) = switchyard_http::command_part_with_card_number(
        &payload,
        &draft.metadata,
        draft.idempotency_key.as_ref(),
    ) {
        return Err(Problem::invalid(format!(
            "the {field} holds a card number: send the provider's payment-method token instead"
        ))
        .with_field(Some(field.into())));
    }

    let id = draft.id.unwrap_or_else(|| match &draft.idempotency_key {
        Some(k) => state.namespace.command_id(k),
        None => Uuid::now_v7(),
    });
    let command = Command {
        id,
        kind: draft.kind,
        provider: draft.provider,
        operation: draft.operation,
        payload: draft.payload,
        idempotency_key: draft.idempotency_key,
        deadline: draft.deadline,
        metadata: draft.metadata,
        created_at: draft.created_at.unwrap_or_else(Utc::now),
    };

    // The command's trace: the request's span (a child of the caller's when it sent a
    // `traceparent`); its context travels with the command and its events.
    span.record("command_id", tracing::field::display(command.id));
    span.record("kind", command.kind.as_str());
    span.record("provider", command.provider.as_str());
    span.record("operation", command.operation.as_str());
    let incoming = headers
        .get(TRACEPARENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let traceparent = switchyard_telemetry::traceparent(span).or(incoming);
    let mut amqp_headers = Headers::default().str(SOURCE_HEADER, "ingress");
    if let Some(tp) = &traceparent {
        amqp_headers = amqp_headers.str(TRACEPARENT_HEADER, tp);
    }
    // Identity (contract 7): a repeat answers the command it repeats; a conflict is refused.
    let admission = state.journal.admit(&command, false).await.map_err(|e| {
        warn!(command_id = %command.id, error = %e, "journal unavailable");
        Problem::unavailable(state.retry_after)
    })?;
    point("after_admit");
    let (replay, accepted) = match admission {
        Admission::New => (None, false),
        Admission::Same { accepted } => (Some(command.id), accepted),
        Admission::Duplicate { original, accepted } => (Some(original), accepted),
        Admission::Conflict { original } => {
            metrics::counter!("switchyard_idempotency_conflicts_total", "kind" => command.kind.to_string(), "provider" => command.provider.to_string()).increment(1);
            return Err(Problem::idempotency_conflict(format!(
                "command {original} already holds this {} and asks for another kind, provider, \
                 operation or payload",
                if command.idempotency_key.is_some() {
                    "idempotency key"
                } else {
                    "id"
                }
            ))
            .with_field(Some(
                if command.idempotency_key.is_some() {
                    "idempotency_key"
                } else {
                    "id"
                }
                .into(),
            )));
        }
    };
    if let Some(original) = replay {
        if !accepted {
            // An earlier request admitted it and may have died before the broker confirmed:
            // publish it (again). The worker's journal runs one copy of it, whatever arrives.
            let mut again = command.clone();
            again.id = original;
            if let Err(e) = publish_command(&state.publisher, &again, amqp_headers).await {
                warn!(command_id = %original, error = %e, "broker did not confirm the command");
                return Err(Problem::unavailable(state.retry_after));
            }
            if let Err(e) = state.journal.accepted(original).await {
                warn!(command_id = %original, error = %e, "could not mark the command accepted");
            }
        }
        metrics::counter!("switchyard_duplicate_commands_total", "kind" => command.kind.to_string(), "provider" => command.provider.to_string()).increment(1);
        let status = state
            .journal
            .ledger_status(original)
            .await
            .unwrap_or(Status::Pending);
        let status_url = format!("/v1/commands/{original}");
        let mut res = (
            StatusCode::OK,
            axum::Json(CommandAccepted {
                id: original,
                status,
                status_url: status_url.clone(),
            }),
        )
            .into_response();
        res.headers_mut().insert(
            header::HeaderName::from_static("idempotent-replayed"),
            header::HeaderValue::from_static("true"),
        );
        if let Ok(v) = header::HeaderValue::from_str(&status_url) {
            res.headers_mut().insert(header::LOCATION, v);
        }
        return Ok(res);
    }
    if let Err(e) = publish_command(&state.publisher, &command, amqp_headers).await {
        warn!(command_id = %command.id, error = %e, "broker did not confirm the command");
        return Err(Problem::unavailable(state.retry_after));
    }
    point("after_command_publish");
    if let Err(e) = state.journal.accepted(command.id).await {
        // A repeat of this request will publish it once more; the worker runs it once.
        warn!(command_id = %command.id, error = %e, "could not mark the command accepted");
    }
    metrics::counter!("switchyard_commands_received_total", "kind" => command.kind.to_string(), "provider" => command.provider.to_string()).increment(1);
    let pending = Lifecycle::of(&command).pending(Utc::now());
    if let Err(e) = publish_event(&state.publisher, &pending, traceparent.as_deref()).await {
        // The command itself is durable and will be processed; only the courtesy event is late.
        warn!(command_id = %command.id, error = %e, "pending event not confirmed");
    }
    let status_url = format!("/v1/commands/{}", command.id);
    let mut res = (
        StatusCode::ACCEPTED,
        axum::Json(CommandAccepted {
            id: command.id,
            status: Status::Pending,
            status_url: status_url.clone(),
        }),
    )
        .into_response();
    if let Ok(v) = header::HeaderValue::from_str(&status_url) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}
