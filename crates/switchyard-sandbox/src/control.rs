//! The sandbox's own endpoints (no auth): scripting scenarios and inspecting what happened.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use crate::provider::error;
use crate::scenario::Step;
use crate::server::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioBody {
    steps: Vec<String>,
}

/// `PUT /_sandbox/scenarios/{command_id}`: scripts the command's next attempts, restarting
/// any earlier script.
pub(crate) async fn put_scenario(
    State(app): State<Arc<AppState>>,
    Path(command_id): Path<String>,
    body: Bytes,
) -> Response {
    let parsed: ScenarioBody = match serde_json::from_slice(&body) {
        Ok(parsed) => parsed,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("expected {{\"steps\": [\"...\"]}}: {err}"),
            );
        }
    };
    let steps = match parsed
        .steps
        .iter()
        .map(|s| s.parse::<Step>())
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(steps) => steps,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &err.to_string(),
            );
        }
    };
    let echoed: Vec<String> = steps.iter().map(Step::to_string).collect();
    app.ledger.set_script(&command_id, steps);
    tracing::debug!(command_id = %command_id, steps = ?echoed, "scenario set");
    Json(json!({"command_id": command_id, "steps": echoed})).into_response()
}

/// `GET /_sandbox/stats`: request and effect totals, effects per idempotency key, and the
/// vendor counters (`paypal_token_requests`, `paypal_tokens_issued`, `paypal_captures`,
/// `crm_upserts`).
pub(crate) async fn stats(State(app): State<Arc<AppState>>) -> Response {
    Json(app.ledger.stats()).into_response()
}

/// `POST /_sandbox/paypal/expire-tokens`: every PayPal access token issued so far expires
/// now, so tests can see a client fetch a new one after a 401.
pub(crate) async fn expire_paypal_tokens(State(app): State<Arc<AppState>>) -> Response {
    let expired = app.paypal.expire_tokens();
    tracing::debug!(expired, "paypal tokens expired");
    Json(json!({ "expired": expired })).into_response()
}

/// `GET /_sandbox/commands/{command_id}`: every request seen for the command.
pub(crate) async fn command(
    State(app): State<Arc<AppState>>,
    Path(command_id): Path<String>,
) -> Response {
    match app.ledger.command(&command_id) {
        Some(view) => Json(view).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "the sandbox has not seen this command",
        ),
    }
}

/// `GET /healthz`.
pub(crate) async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}
