//! The query API: `GET /v1/commands/{id}` and the operators' list `GET /v1/commands`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use switchyard_api::{Problem, bearer_authorized};
use switchyard_core::{Secret, Status};
use uuid::Uuid;

use crate::store::{ListFilter, Store};

struct ApiState {
    store: Store,
    tokens: Vec<Secret<String>>,
    auth_disabled: bool,
}

/// The ledger's routes, authenticated like the ingress.
pub fn query_router(store: Store, tokens: Vec<Secret<String>>, auth_disabled: bool) -> Router {
    Router::new()
        .route("/v1/commands", get(list))
        .route("/v1/commands/{id}", get(show))
        .with_state(Arc::new(ApiState {
            store,
            tokens,
            auth_disabled,
        }))
}

fn unavailable(e: &crate::store::StoreError) -> Response {
    tracing::warn!(error = %e, "ledger query failed");
    Problem::unavailable(1).into_response()
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<Status>,
    kind: Option<String>,
    provider: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    limit: Option<u32>,
    cursor: Option<String>,
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
