//! SendGrid's v3 Mail Send, as documented: `POST /v3/mail/send` with `Authorization: Bearer
//! <API key>` and a JSON body of `personalizations`, `from`, `subject` and `content`; `202`
//! with an empty body and `X-Message-Id` when accepted; `400` with
//! `{"errors": [{"message", "field", "help"}]}` for a malformed request; `401` for a missing
//! or malformed key; `429` with `X-RateLimit-*` headers. SendGrid has no idempotency key:
//! every accepted request sends, so a retry after a lost answer sends twice, and the effect
//! count shows it.
//!
//! Scripts apply by the command id Switchyard puts in `custom_args.switchyard_command_id`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::provider::{hang, header_str};
use crate::scenario::Step;
use crate::server::AppState;
use crate::vendor::{Attempt, Request, leak, scripted_status};

/// SendGrid's error body.
fn errors(status: StatusCode, list: &[(&str, Option<&str>)]) -> Response {
    let errors: Vec<Value> = list
        .iter()
        .map(|(message, field)| json!({"message": message, "field": field, "help": null}))
        .collect();
    (status, axum::Json(json!({ "errors": errors }))).into_response()
}

fn rate_limited(retry_after_secs: u64) -> Response {
    let mut response = errors(
        StatusCode::TOO_MANY_REQUESTS,
        &[("too many requests", None)],
    );
    let reset =
        chrono::Utc::now().timestamp() + i64::try_from(retry_after_secs).unwrap_or(i64::MAX / 2);
    let h = response.headers_mut();
    h.insert("x-ratelimit-limit", HeaderValue::from_static("600"));
    h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
    h.insert("x-ratelimit-reset", HeaderValue::from(reset));
    response
}

/// What is wrong with a Mail Send body, SendGrid's way: (message, field).
fn validate(body: &Value) -> Vec<(&'static str, Option<&'static str>)> {
    let mut problems = Vec::new();
    let personalizations = body["personalizations"].as_array();
    match personalizations {
        None => problems.push((
            "The personalizations field is required and must have at least one personalization.",
            Some("personalizations"),
        )),
        Some(list) if list.is_empty() => problems.push((
            "The personalizations field is required and must have at least one personalization.",
            Some("personalizations"),
        )),
        Some(list) => {
            let to_ok = list.iter().all(|p| {
                p["to"].as_array().is_some_and(|to| {
                    !to.is_empty() && to.iter().all(|r| r["email"].as_str().is_some_and(is_email))
                })
            });
            if !to_ok {
                problems.push((
                    "Each personalization needs a to array of objects with a valid email.",
                    Some("personalizations.0.to"),
                ));
            }
        }
    }
    if !body["from"]["email"].as_str().is_some_and(is_email) {
        problems.push((
            "The from object must be provided for every email send. It is an object that requires the email parameter, but may also contain a name parameter.",
            Some("from"),
        ));
    }
    let has_template = body["template_id"].is_string();
    if !has_template && body["subject"].as_str().is_none_or(str::is_empty) {
        problems.push((
            "The subject is required. You can get around this requirement if you use a template with a subject defined or if every personalization has a subject defined.",
            Some("subject"),
        ));
    }
    match body["content"].as_array() {
        Some(content) if !content.is_empty() => {
            let well_formed = content.iter().all(|c| {
                c["type"].as_str().is_some_and(|t| !t.is_empty())
                    && c["value"].as_str().is_some_and(|v| !v.is_empty())
            });
            if !well_formed {
                problems.push((
                    "The content value must be a string at least one character in length.",
                    Some("content.0.value"),
                ));
            }
            let plain_first = content
                .iter()
                .position(|c| c["type"] == "text/plain")
                .is_none_or(|i| i == 0);
            if !plain_first {
                problems.push((
                    "If present, text/plain content must be first, followed by any other content.",
                    Some("content"),
                ));
            }
        }
        _ if has_template => {}
        _ => problems.push((
            "Unless a valid template_id is provided, the content parameter is required. There must be at least one defined content block.",
            Some("content"),
        )),
    }
    problems
}

fn is_email(s: &str) -> bool {
    s.split_once('@')
        .is_some_and(|(user, host)| !user.is_empty() && host.contains('.'))
}

/// `POST /sendgrid/v3/mail/send`.
pub(crate) async fn mail_send(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The command id is in the body; an unreadable body is recorded under no command.
    let message = serde_json::from_slice::<Value>(&body).ok();
    let field = |name: &str| {
        message
            .as_ref()
            .and_then(|m| m["custom_args"][name].as_str())
            .map(str::to_owned)
    };
    let (command_id, key) = (
        field("switchyard_command_id"),
        field("switchyard_idempotency_key"),
    );
    let attempt = Attempt::begin(
        &app,
        Request {
            command_id: command_id.as_deref(),
            kind: "notification",
            operation: "send_email",
            idempotency_key: key.as_deref(),
        },
        &headers,
        &body,
    );
    let key_ok = header_str(&headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|key| key.starts_with("SG.") && key.len() > 3);
    if !key_ok {
        let response = errors(
            StatusCode::UNAUTHORIZED,
            &[(
                "The provided authorization grant is invalid, expired, or revoked",
                None,
            )],
        );
        return attempt.finish(&app, response);
    }
    let json_body = header_str(&headers, CONTENT_TYPE.as_str())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !json_body {
        let response = errors(
            StatusCode::BAD_REQUEST,
            &[("Content-Type should be application/json.", None)],
        );
        return attempt.finish(&app, response);
    }
    let Some(message) = message else {
        return attempt.finish(
            &app,
            errors(StatusCode::BAD_REQUEST, &[("Bad Request", None)]),
        );
    };
    let response = match attempt.step.map(Step::plain).unwrap_or(Step::Ok) {
        Step::Status(status) if status >= 400 => {
            errors(scripted_status(status), &[("scripted failure", None)])
        }
        Step::TooManyRequests { retry_after_secs } => rate_limited(retry_after_secs),
        Step::Leak(status) => leak(status),
        Step::Hang => hang(&app).await,
        Step::Lost => {
            // Sent, and the answer lost on the way back.
            if validate(&message).is_empty() {
                send(&app, key.as_deref());
            }
            hang(&app).await
        }
        Step::Slow(delay) => {
            tokio::time::sleep(delay).await;
            accept(&app, &message, key.as_deref())
        }
        _ => accept(&app, &message, key.as_deref()),
    };
    attempt.finish(&app, response)
}

/// Validates, sends and answers `202` with the message id.
fn accept(app: &AppState, message: &Value, key: Option<&str>) -> Response {
    let problems = validate(message);
    if !problems.is_empty() {
        return errors(StatusCode::BAD_REQUEST, &problems);
    }
    let id = send(app, key);
    let mut response = StatusCode::ACCEPTED.into_response();
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-message-id", v);
    }
    response
}

/// One email sent: one effect, under the command's key when it has one.
fn send(app: &AppState, key: Option<&str>) -> String {
    let id = format!("sbx{}", uuid::Uuid::new_v4().simple());
    app.ledger.count_effect(key.unwrap_or(&id));
    id
}
