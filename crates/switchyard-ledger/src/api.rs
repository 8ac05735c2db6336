//! The query API: `GET /v1/commands/{id}`, the operators' list `GET /v1/commands`, and
//! `POST /v1/commands/{id}/resolution`, by which an operator ends an `unknown` outcome.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use switchyard_amqp::Publisher;
use switchyard_api::{Problem, bearer_authorized};
use switchyard_core::{Secret, Status};
use tracing::{info, warn};
use uuid::Uuid;

use crate::store::{ListFilter, Store};
use crate::waits::{Resolved, Verdict};

struct ApiState {
    store: Store,
    publisher: Option<Publisher>,
    tokens: Vec<Secret<String>>,
    auth_disabled: bool,
}

/// The ledger's read-only routes, authenticated like the ingress (resolutions answer 503:
/// they need the broker, see [`operator_router`]).
pub fn query_router(store: Store, tokens: Vec<Secret<String>>, auth_disabled: bool) -> Router {
    router(store, None, tokens, auth_disabled)
}

/// The ledger's routes with operators' resolutions, which publish on `publisher`.
pub fn operator_router(
    store: Store,
    publisher: Publisher,
    tokens: Vec<Secret<String>>,
    auth_disabled: bool,
) -> Router {
    router(store, Some(publisher), tokens, auth_disabled)
}

fn router(
    store: Store,
    publisher: Option<Publisher>,
    tokens: Vec<Secret<String>>,
    auth_disabled: bool,
) -> Router {
    Router::new()
        .route("/v1/commands", get(list))
        .route("/v1/commands/{id}", get(show))
        .route("/v1/commands/{id}/resolution", post(resolve))
        .with_state(Arc::new(ApiState {
            store,
            publisher,
            tokens,
            auth_disabled,
        }))
}

fn unavailable(e: &crate::store::StoreError) -> Response {
    tracing::warn!(error = %e, "ledger query failed");
    Problem::store_unavailable().into_response()
}

async fn show(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !bearer_authorized(&s.tokens, s.auth_disabled, &headers) {
        return Problem::unauthenticated().into_response();
    }
    let Ok(id) = id.parse::<Uuid>() else {
        return Problem::bad_request("the command id must be a UUID").into_response();
    };
    match s.store.command(id).await {
        Ok(Some(view)) => (StatusCode::OK, Json(view)).into_response(),
        Ok(None) => {
            Problem::not_found(format!("no command {id} is known to the ledger")).into_response()
        }
        Err(e) => unavailable(&e),
    }
}

/// The query parameters of `GET /v1/commands`; any other parameter is refused (`400`).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only commands whose current status is this one.
    pub status: Option<Status>,
    /// Only commands of this kind.
    pub kind: Option<String>,
    /// Only commands of this provider.
    pub provider: Option<String>,
    /// Only commands created at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only commands created before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Page size: 50 when absent; a value outside 1 to 500 is taken as the nearest bound.
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page; a cursor that does not decode is refused (`400`).
    pub cursor: Option<String>,
}

async fn list(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if !bearer_authorized(&s.tokens, s.auth_disabled, &headers) {
        return Problem::unauthenticated().into_response();
    }
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return Problem::bad_request(e.body_text()).into_response(),
    };
    let filter = ListFilter {
        status: q.status,
        kind: q.kind,
        provider: q.provider,
        since: q.since,
        until: q.until,
        limit: q.limit.unwrap_or(50),
        cursor: q.cursor,
    };
    match s.store.list(&filter).await {
        Ok(Ok(page)) => (StatusCode::OK, Json(page)).into_response(),
        Ok(Err(e)) => Problem::bad_request(e.to_string())
            .with_field(Some("cursor".into()))
            .into_response(),
        Err(e) => unavailable(&e),
    }
}

/// The body of `POST /v1/commands/{id}/resolution`: what an operator decides for an `unknown`
/// outcome.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Switchyard operator resolution request")]
pub struct ResolutionRequest {
    /// `completed`: the provider did act; `failed`: it did not, or must be treated as not.
    pub status: Verdict,
    /// Why, in the operator's words (at most 1000 bytes).
    #[serde(default)]
    #[schemars(length(max = 1000))]
    pub reason: String,
    /// Who decides: required, 1 to 1000 bytes once trimmed.
    #[schemars(length(min = 1, max = 1000))]
    pub by: String,
}

/// Longest `reason` or `by` kept: an audit note, not a document.
const MAX_NOTE: usize = 1000;

async fn resolve(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<ResolutionRequest>, JsonRejection>,
) -> Response {
    if !bearer_authorized(&s.tokens, s.auth_disabled, &headers) {
        return Problem::unauthenticated().into_response();
    }
    let Ok(id) = id.parse::<Uuid>() else {
        return Problem::bad_request("the command id must be a UUID").into_response();
    };
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) => {
            return Problem::invalid(format!(
                "expected {{\"status\": \"completed\"|\"failed\", \"reason\": \"...\", \"by\": \"...\"}}: {}",
                e.body_text()
            ))
            .into_response();
        }
    };
    let by = body.by.trim();
    if by.is_empty() || by.len() > MAX_NOTE || body.reason.len() > MAX_NOTE {
        return Problem::invalid(format!(
            "`by` must name who resolves (1 to {MAX_NOTE} bytes) and `reason` be at most {MAX_NOTE} bytes"
        ))
        .with_field(Some("by".into()))
        .into_response();
    }
    let Some(publisher) = &s.publisher else {
        return Problem::resolution_unpublished().into_response();
    };
    let decided = s
        .store
        .resolve_unknown(id, body.status, body.reason.trim(), by, Utc::now())
        .await;
    match decided {
        Ok(Resolved::NotFound) => {
            Problem::not_found(format!("no command {id} is known to the ledger")).into_response()
        }
        Ok(Resolved::Conflict(detail)) => Problem::conflict(detail).into_response(),
        Ok(Resolved::Decided { event, record }) => {
            match crate::resolve::report(publisher, &event, &record).await {
                Ok(()) => {
                    info!(command_id = %id, status = %event.status.as_str(), by, "unknown outcome resolved by an operator");
                    metrics::counter!("switchyard_resolutions_total", "source" => "operator", "outcome" => "decided")
                        .increment(1);
                    crate::resolve::count_ended(&event, "operator");
                    (StatusCode::OK, Json(event)).into_response()
                }
                Err(e) => {
                    // Decided, not yet published: the same resolution again publishes it.
                    warn!(error = %e, command_id = %id, "publishing an operator's resolution failed");
                    Problem::resolution_unpublished().into_response()
                }
            }
        }
        Err(e) => unavailable(&e),
    }
}
