//! `POST /generic/{kind}/{operation}`: the contract's generic HTTP provider
//! (docs/configuration.md), with Stripe's idempotency semantics and scripted faults.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, PROXY_AUTHORIZATION, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::callback::{Outcome, report};
use crate::scenario::{Finish, Step};
use crate::server::AppState;
use crate::state::{Begin, Operation, RecordRef, RequestRecord};

pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";
pub(crate) const COMMAND_ID: &str = "x-switchyard-command-id";
pub(crate) const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Which successful answer an executing step gives.
#[derive(Debug, Clone, Copy)]
enum Success {
    /// 200 with the operation's result.
    Completed,
    /// 202 with a reference to complete later by webhook.
    Accepted,
    /// 200 with card data and secrets in the body.
    Leaky,
    /// 200 with a body that is not JSON.
    Garbled,
    /// 200 with a 4 MiB body.
    Huge,
    /// 202 without a reference.
    NoReference,
    /// 202 with a reference holding a NUL character.
    NulReference,
}

pub(crate) async fn handle(
    State(app): State<Arc<AppState>>,
    Path((kind, operation)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(
        app,
        ("sandbox".to_owned(), Reports::Callback),
        kind,
        operation,
        headers,
        body,
        Step::Ok,
    )
    .await
}

/// `POST /async/{provider}/{kind}/{operation}`: the same provider, but every operation is
/// long-running: 202 with a reference, then a signed callback to `/v1/webhooks/{provider}`.
pub(crate) async fn handle_async(
    State(app): State<Arc<AppState>>,
    Path(path): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    long_running(app, path, Reports::Callback, headers, body).await
}

/// `POST /oneshot/{provider}/{kind}/{operation}`: the generic provider as one that takes no
/// idempotency key (like SendGrid or Twilio): every request executes and counts as an effect of
/// its command. What executed under each `Idempotency-Key` is kept for the status endpoint, so
/// a caller that lost the answer can ask.
pub(crate) async fn handle_oneshot(
    State(app): State<Arc<AppState>>,
    Path((provider, kind, operation)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(
        app,
        (provider, Reports::Oneshot),
        kind,
        operation,
        headers,
        body,
        Step::Ok,
    )
    .await
}

/// `POST /polled/{provider}/{kind}/{operation}`: long-running like `/async`, but a provider
/// without callbacks: the outcome is only told by the status endpoint.
pub(crate) async fn handle_polled(
    State(app): State<Arc<AppState>>,
    Path(path): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    long_running(app, path, Reports::StatusOnly, headers, body).await
}

/// Accepts every unscripted operation, to finish after the operation time.
async fn long_running(
    app: Arc<AppState>,
    (provider, kind, operation): (String, String, String),
    reports: Reports,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let default = Step::Accept(Finish::Succeed);
    serve(
        app,
        (provider, reports),
        kind,
        operation,
        headers,
        body,
        default,
    )
    .await
}

/// `GET /{async|polled}/{provider}/{kind}/operations/{reference}`: how an accepted operation
/// is going, in the callback body's shape; 404 for a reference never accepted.
pub(crate) async fn status(
    State(app): State<Arc<AppState>>,
    Path((_provider, _kind, reference)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    app.ledger.count_request();
    if let Some(refused) = unauthorized(&app, &headers) {
        return refused;
    }
    if let Some(command_id) = header_str(&headers, COMMAND_ID) {
        app.ledger.count_status_check(command_id);
        // A check takes the command's next scripted step too: failures fail the check.
        match app.ledger.next_step(command_id) {
            Some(Step::Status(status)) if status >= 400 => return scripted(status),
            Some(Step::TooManyRequests { retry_after_secs }) => {
                return too_many_requests(retry_after_secs);
            }
            Some(Step::Hang) => return hang(&app).await,
            _ => {}
        }
    }
    match app.ledger.operation(&reference) {
        Some(op) => {
            let body = report(&reference, op.outcome_at(Instant::now()), &op.kind);
            json_response(StatusCode::OK, Bytes::from(body.to_string()))
        }
        None => error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "no operation with this reference",
        ),
    }
}

/// `POST /partner/{partner}/webhooks`: a partner receiving Switchyard's signed webhooks. The
/// Standard Webhooks signature is checked with the webhook target's secret (401 otherwise);
/// then the delivery is one execution per `webhook-id`, scripted like any provider request.
pub(crate) async fn partner(
    State(app): State<Arc<AppState>>,
    Path(partner): Path<String>,
    mut headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(receiver) = app.webhooks.as_ref() else {
        app.ledger.count_request();
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "sandbox_error",
            "the sandbox has no webhook secret to verify partner deliveries with",
        );
    };
    let id = match receiver.verify(&headers, &body) {
        Ok(id) => id,
        Err(e) => {
            app.ledger.count_request();
            return error(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                &e.to_string(),
            );
        }
    };
    // A partner de-duplicates on the webhook id: it is the delivery's idempotency key.
    if let Ok(v) = HeaderValue::from_str(&id) {
        headers.insert(IDEMPOTENCY_KEY, v);
    }
    let reports = Reports::StatusOnly;
    let (kind, operation) = ("notification".to_owned(), "send_webhook".to_owned());
    serve(
        app,
        (partner, reports),
        kind,
        operation,
        headers,
        body,
        Step::Ok,
    )
    .await
}

/// How a long-running operation's end is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reports {
    /// A signed callback (when the sandbox has a webhook target), and the status endpoint.
    Callback,
    /// The status endpoint only.
    StatusOnly,
    /// No idempotency: every request executes; the status endpoint knows each key's result.
    Oneshot,
}

/// A 401 unless the request carries the configured bearer token.
fn unauthorized(app: &AppState, headers: &HeaderMap) -> Option<Response> {
    let token = app.bearer_token.as_deref()?;
    if bearer_matches(headers, token) {
        return None;
    }
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "missing or invalid bearer token",
    );
    response
        .headers_mut()
        .insert("www-authenticate", HeaderValue::from_static("Bearer"));
    Some(response)
}

async fn serve(
    app: Arc<AppState>,
    (provider, reports): (String, Reports),
    kind: String,
    operation: String,
    headers: HeaderMap,
    body: Bytes,
    default_step: Step,
) -> Response {
    let at_ms = app.elapsed_ms();
    app.ledger.count_request();
    let body_sha256 = hex::encode(Sha256::digest(&body));
    let sent_key = header_str(&headers, IDEMPOTENCY_KEY).map(str::to_owned);
    // A provider that takes no idempotency key: each request is its own execution.
    let key = match reports {
        Reports::Oneshot => sent_key
            .as_ref()
            .map(|k| format!("{k}/{}", app.ledger.next_execution())),
        _ => sent_key.clone(),
    };
    let record = header_str(&headers, COMMAND_ID).map(|command_id| {
        let record = RequestRecord {
            idempotency_key: key.clone(),
            body_sha256: body_sha256.clone(),
            status: None,
            replayed: false,
            at_ms,
            kind: kind.clone(),
            operation: operation.clone(),
            step: None,
            headers: loggable_headers(&headers),
        };
        (command_id.to_owned(), app.ledger.record(command_id, record))
    });

    if !app.latency.is_zero() {
        tokio::time::sleep(app.latency).await;
    }

    let request = Request {
        provider: &provider,
        reports,
        default_step,
        kind: &kind,
        operation: &operation,
        headers: &headers,
        body: &body,
        key: key.as_deref(),
        sent_key: sent_key.as_deref(),
        body_sha256: &body_sha256,
        command: record.as_ref().map(|(id, at)| (id.as_str(), at)),
    };
    let response = respond(&app, request).await;
    if response.status().is_success() {
        remember_oneshot(&app, reports, &kind, sent_key.as_deref());
    }

    if let Some((_, at)) = &record {
        let status = response.status().as_u16();
        let replayed = response.headers().contains_key(IDEMPOTENT_REPLAYED);
        app.ledger.update_record(at, |r| {
            r.status = Some(status);
            r.replayed = replayed;
        });
    }
    response
}

/// A provider without idempotency keys answers status checks under the key it was sent (its
/// own request id): what it executed is known there, even when the answer never arrived.
fn remember_oneshot(app: &AppState, reports: Reports, kind: &str, sent_key: Option<&str>) {
    if reports == Reports::Oneshot
        && let Some(sent) = sent_key
    {
        app.ledger.accept_operation(
            sent,
            Operation {
                kind: kind.to_owned(),
                outcome: Some(Outcome::Succeeded),
                done_at: Instant::now(),
            },
        );
    }
}

/// The parts of one provider request the decision needs.
struct Request<'a> {
    provider: &'a str,
    reports: Reports,
    default_step: Step,
    kind: &'a str,
    operation: &'a str,
    headers: &'a HeaderMap,
    body: &'a Bytes,
    key: Option<&'a str>,
    /// The `Idempotency-Key` as sent (for a oneshot provider, `key` adds an execution count).
    sent_key: Option<&'a str>,
    body_sha256: &'a str,
    command: Option<(&'a str, &'a RecordRef)>,
}

async fn respond(app: &AppState, request: Request<'_>) -> Response {
    if let Some(refused) = unauthorized(app, request.headers) {
        return refused;
    }
    let Some(key) = request.key else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "the Idempotency-Key header is required",
        );
    };
    if serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(request.body).is_err() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "the body must be a JSON object",
        );
    }

    let step = match request.command {
        Some((command_id, at)) => {
            let step = app.ledger.next_step(command_id);
            if let Some(step) = step {
                let text = step.to_string();
                app.ledger.update_record(at, |r| r.step = Some(text));
            }
            step
        }
        None => None,
    };
    let step = match step {
        Some(step) => step,
        None if app.failure_rate > 0.0 && rand::random::<f64>() < app.failure_rate => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "sandbox_error",
                "random failure (failure_rate)",
            );
        }
        None => request.default_step,
    };

    let run = |success, delay| execute(app, &request, key, success, delay);
    match step {
        Step::Ok => run(Success::Completed, Duration::ZERO).await,
        Step::Accept(finish) => accept(app, &request, key, finish).await,
        Step::Slow(delay) => run(Success::Completed, delay).await,
        Step::Leak(status) if (200..300).contains(&status) => {
            run(Success::Leaky, Duration::ZERO).await
        }
        Step::Leak(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            json_response(status, Bytes::from(leaky_body(None).to_string()))
        }
        Step::Garbled => run(Success::Garbled, Duration::ZERO).await,
        Step::Huge => run(Success::Huge, Duration::ZERO).await,
        Step::NoReference => run(Success::NoReference, Duration::ZERO).await,
        Step::NulReference => run(Success::NulReference, Duration::ZERO).await,
        Step::Status(status) => scripted(status),
        Step::PayPal422(_) => scripted(422),
        Step::TooManyRequests { retry_after_secs } => too_many_requests(retry_after_secs),
        Step::Hang => hang(app).await,
        Step::Lost => {
            let response = run(Success::Completed, Duration::ZERO).await;
            if response.status().is_success() {
                // Executed (or already had been); the answer never reaches the client.
                remember_oneshot(app, request.reports, request.kind, request.sent_key);
                hang(app).await
            } else {
                response
            }
        }
    }
}

/// The provider's reference of the operation run under `key`: stable, as a real provider's
/// is for a replayed request.
fn reference_for(key: &str) -> String {
    format!(
        "sbx_{}",
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, key.as_bytes()).simple()
    )
}

/// Accepts long-running work and arranges how its end is told, once per execution.
async fn accept(app: &AppState, request: &Request<'_>, key: &str, finish: Finish) -> Response {
    let reference = reference_for(key);
    let outcome = match finish {
        Finish::Fail => Outcome::Failed,
        _ => Outcome::Succeeded,
    };
    let sender = app
        .webhooks
        .as_ref()
        .filter(|_| request.reports == Reports::Callback);
    if let (Finish::Early, Some(sender)) = (finish, sender) {
        // Delivered, and acknowledged, before the caller even learns the reference.
        sender
            .send_now(request.provider, &reference, outcome, request.kind)
            .await;
    }
    let response = execute(app, request, key, Success::Accepted, Duration::ZERO).await;
    let fresh = response.status() == StatusCode::ACCEPTED
        && !response.headers().contains_key(IDEMPOTENT_REPLAYED);
    if fresh {
        let (ends, delay) = match finish {
            Finish::Silent => (None, Duration::ZERO),
            Finish::Early => (Some(outcome), Duration::ZERO),
            Finish::Succeed | Finish::Fail => (Some(outcome), app.operation_time),
        };
        app.ledger.accept_operation(
            &reference,
            Operation {
                kind: request.kind.to_owned(),
                outcome: ends,
                done_at: Instant::now() + delay,
            },
        );
        if let (Finish::Succeed | Finish::Fail, Some(sender)) = (finish, sender) {
            sender.send_later(delay, request.provider, &reference, outcome, request.kind);
        }
    }
    response
}

/// Runs the operation once per idempotency key; later identical requests get the replay.
async fn execute(
    app: &AppState,
    request: &Request<'_>,
    key: &str,
    success: Success,
    delay: Duration,
) -> Response {
    match app.ledger.begin(key, request.body_sha256) {
        Begin::Execute(execution) => {
            // The key stays claimed while "executing", so a concurrent retry sees a 409.
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let reference = reference_for(key);
            let (status, body) = match success {
                Success::Completed => (
                    StatusCode::OK,
                    json!({
                        "reference": reference,
                        "status": "succeeded",
                        "operation": request.operation,
                        "kind": request.kind,
                    }),
                ),
                Success::Accepted => (StatusCode::ACCEPTED, json!({ "reference": reference })),
                Success::Leaky => (StatusCode::OK, leaky_body(Some(&reference))),
                Success::NoReference => (StatusCode::ACCEPTED, json!({ "status": "accepted" })),
                Success::NulReference => (
                    StatusCode::ACCEPTED,
                    json!({ "reference": format!("{reference}\u{0}nul") }),
                ),
                Success::Garbled => {
                    let body = Bytes::from(format!("{{\"reference\": \"{reference}\", \"sta"));
                    execution.complete(200, body.clone());
                    return json_response(StatusCode::OK, body);
                }
                Success::Huge => {
                    let pad = "x".repeat(4 * 1024 * 1024);
                    let body = Bytes::from(json!({"reference": reference, "pad": pad}).to_string());
                    execution.complete(200, body.clone());
                    return json_response(StatusCode::OK, body);
                }
            };
            let body = Bytes::from(body.to_string());
            execution.complete(status.as_u16(), body.clone());
            json_response(status, body)
        }
        Begin::Replay(stored) => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
            let mut response = json_response(status, stored.body);
            response
                .headers_mut()
                .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            response
        }
        Begin::Mismatch => error(
            StatusCode::BAD_REQUEST,
            "idempotency_error",
            "this Idempotency-Key was already used with a different request body",
        ),
        Begin::InUse => {
            let body = json!({"error": {
                "type": "idempotency_error",
                "code": "idempotency_key_in_use",
                "message": "another request with this Idempotency-Key is still being processed",
            }});
            json_response(StatusCode::CONFLICT, Bytes::from(body.to_string()))
        }
    }
}

/// An answer that carries what must never be written down: test card numbers (Luhn-valid),
/// a CVC and secrets, in fields and in free text.
pub(crate) fn leaky_body(reference: Option<&str>) -> serde_json::Value {
    json!({
        "reference": reference,
        "status": if reference.is_some() { "succeeded" } else { "failed" },
        "card": {"number": "4242424242424242", "cvc": "987", "exp_month": 12},
        "client_secret": "pi_3Canary_secret_RVn8",
        "error": {"message": "card 5555 5555 5555 4444 was declined"},
        // Issue 12: a card as a JSON number and as a key, every spelling of a secret name,
        // credentials in a URL.
        "card_number": 4111111111111111_u64,
        "cards": {"5105105105105100": "mastercard"},
        "api-key": "canary_apikey_dash_31",
        "x-api-key": "canary_x_apikey_32",
        "private-key": "canary_private_key_33",
        "passphrase": "canary_passphrase_34",
        "access_key": "canary_access_key_35",
        "pin": "canary_pin_36",
        "auth": "canary_auth_37",
        "receipt_url": "https://ops:canary_urlpw_38@partner.example/r",
    })
}

/// Never answers, until the sandbox shuts down (so graceful shutdown does not wait forever).
pub(crate) async fn hang(app: &AppState) -> Response {
    let mut shutdown = app.shutdown.clone();
    // An error means the sandbox is gone, which ends the hang as well.
    let _ = shutdown.wait_for(|stopping| *stopping).await;
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "sandbox_error",
        "sandbox shutting down",
    )
}

fn too_many_requests(retry_after_secs: u64) -> Response {
    let mut response = scripted(429);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

fn scripted(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(
        status,
        "sandbox_error",
        &format!("scripted {}", status.as_u16()),
    )
}

pub(crate) fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({"error": {"type": kind, "message": message}});
    json_response(status, Bytes::from(body.to_string()))
}

pub(crate) fn json_response(status: StatusCode, body: Bytes) -> Response {
    (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response()
}

/// A header's value when present, valid text and non-empty.
pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// `Authorization: Bearer <token>`; the scheme is case-insensitive (RFC 9110).
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some((scheme, presented)) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
    else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && constant_time_eq(presented.as_bytes(), token.as_bytes())
}

/// Compares without an early exit, so response timing does not leak the token's prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Request headers for the command view: lowercased names, credentials left out.
pub(crate) fn loggable_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut logged: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        if name == AUTHORIZATION || name == PROXY_AUTHORIZATION {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes());
        logged
            .entry(name.as_str().to_owned())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    logged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_token_exact() {
        let mut headers = HeaderMap::new();
        assert!(!bearer_matches(&headers, "t0k"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer t0k"));
        assert!(bearer_matches(&headers, "t0k"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer t0"));
        assert!(!bearer_matches(&headers, "t0k"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic t0k"));
        assert!(!bearer_matches(&headers, "t0k"));
    }

    #[test]
    fn logged_headers_drop_credentials_and_join_repeats() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer secret"));
        headers.insert("traceparent", HeaderValue::from_static("00-abc-def-01"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        let logged = loggable_headers(&headers);
        assert!(!logged.contains_key("authorization"));
        assert_eq!(logged["traceparent"], "00-abc-def-01");
        assert_eq!(logged["x-multi"], "a, b");
    }
}
