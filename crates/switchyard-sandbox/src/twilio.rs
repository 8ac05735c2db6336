//! Twilio's Messages API, as documented: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`,
//! form-encoded (`To`, `From` or `MessagingServiceSid`, `Body`, `StatusCallback`), HTTP basic
//! auth with the Account SID and auth token; `201` with the message (`sid` `SM…`, `status`
//! `queued`); errors as `{"code", "message", "more_info", "status"}`. Delivery reports go to
//! `StatusCallback` as form posts signed with `X-Twilio-Signature` (HMAC-SHA1 keyed with the
//! auth token over the URL and the sorted parameters), after the operation time.
//!
//! Twilio takes no idempotency key: each accepted request is a message. Scripts apply by the
//! `X-Switchyard-Command-Id` header; `accept:fail` ends in `undelivered`, `accept:silent`
//! never reports.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde_json::json;
use switchyard_webhooks::TwilioSignature;

use crate::provider::{COMMAND_ID, hang, header_str};
use crate::scenario::{Finish, Step};
use crate::server::AppState;
use crate::vendor::{Attempt, Delivery, Request, deliver_later, leak, scripted_status};

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, axum::Json(body)).into_response()
}

/// The account SID and auth token of a basic `Authorization` header.
fn credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let encoded = header_str(headers, AUTHORIZATION.as_str())?.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(B64.decode(encoded.trim()).ok()?).ok()?;
    let (sid, token) = decoded.split_once(':')?;
    Some((sid.to_owned(), token.to_owned()))
}

/// `POST /twilio/2010-04-01/Accounts/{account}/Messages.json`.
pub(crate) async fn create_message(
    State(app): State<Arc<AppState>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let command_id = header_str(&headers, COMMAND_ID).map(str::to_owned);
    let attempt = Attempt::begin(
        &app,
        Request {
            command_id: command_id.as_deref(),
            kind: "notification",
            operation: "send_sms",
            idempotency_key: None,
        },
        &headers,
        &body,
    );
    let Some((sid, token)) = credentials(&headers)
        .filter(|(sid, token)| sid == &account && sid.starts_with("AC") && !token.is_empty())
    else {
        return attempt.finish(&app, error(StatusCode::UNAUTHORIZED, 20003, "Authenticate"));
    };
    let form = header_str(&headers, CONTENT_TYPE.as_str())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !form {
        let response = error(
            StatusCode::BAD_REQUEST,
            21620,
            "The request body must be application/x-www-form-urlencoded",
        );
        return attempt.finish(&app, response);
    }
    let params: BTreeMap<String, String> = form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let response = match attempt
        .step
        .map(Step::plain)
        .unwrap_or(Step::Accept(Finish::Succeed))
    {
        Step::Status(status) if status >= 400 => {
            error(scripted_status(status), 20500, "scripted failure")
        }
        Step::TooManyRequests { retry_after_secs } => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests");
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
            r
        }
        Step::Hang => hang(&app).await,
        Step::Leak(status) => leak(status),
        Step::Lost => {
            // Sent, and the answer lost on the way back.
            let _ = accept(
                &app,
                (&sid, &token),
                command_id.as_deref(),
                &params,
                Finish::Succeed,
            );
            hang(&app).await
        }
        Step::Slow(delay) => {
            tokio::time::sleep(delay).await;
            accept(
                &app,
                (&sid, &token),
                command_id.as_deref(),
                &params,
                Finish::Succeed,
            )
        }
        Step::Accept(finish) => {
            accept(&app, (&sid, &token), command_id.as_deref(), &params, finish)
        }
        _ => accept(
            &app,
            (&sid, &token),
            command_id.as_deref(),
            &params,
            Finish::Succeed,
        ),
    };
    attempt.finish(&app, response)
}

/// Validates and sends; the effect counts under the command (Twilio has no idempotency key).
fn accept(
    app: &AppState,
    (account, token): (&str, &str),
    command_id: Option<&str>,
    params: &BTreeMap<String, String>,
    finish: Finish,
) -> Response {
    let to = params.get("To").filter(|t| is_e164(t));
    let Some(to) = to else {
        return error(
            StatusCode::BAD_REQUEST,
            21211,
            "The 'To' number is not a valid phone number.",
        );
    };
    let from = params
        .get("From")
        .or_else(|| params.get("MessagingServiceSid"));
    let Some(from) = from else {
        return error(
            StatusCode::BAD_REQUEST,
            21603,
            "A 'From' phone number is required.",
        );
    };
    if params.get("Body").is_none_or(String::is_empty) {
        return error(StatusCode::BAD_REQUEST, 21602, "Message body is required.");
    }
    let sid = format!("SM{}", uuid::Uuid::new_v4().simple());
    app.ledger.count_effect(command_id.unwrap_or(&sid));
    if let Some(url) = params.get("StatusCallback") {
        let ending = match finish {
            Finish::Fail => Some("undelivered"),
            Finish::Silent => None,
            _ => Some("delivered"),
        };
        if let Ok(signer) = TwilioSignature::new(token) {
            let report = |status: &str| {
                let params = vec![
                    ("AccountSid".to_owned(), account.to_owned()),
                    ("From".to_owned(), from.clone()),
                    ("MessageSid".to_owned(), sid.clone()),
                    ("MessageStatus".to_owned(), status.to_owned()),
                    ("SmsSid".to_owned(), sid.clone()),
                    ("SmsStatus".to_owned(), status.to_owned()),
                    ("To".to_owned(), to.clone()),
                ];
                Delivery {
                    url: url.clone(),
                    headers: vec![
                        (
                            "content-type",
                            "application/x-www-form-urlencoded".to_owned(),
                        ),
                        ("x-twilio-signature", signer.sign(url, &params)),
                        // Twilio's own de-duplication token: the same on a retry of a report.
                        (
                            "i-twilio-idempotency-token",
                            uuid::Uuid::new_v4().to_string(),
                        ),
                    ],
                    body: form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(&params)
                        .finish(),
                }
            };
            // `sent` at once, then the end after the operation time, as carriers report.
            let mut reports = vec![(std::time::Duration::ZERO, report("sent"))];
            if let Some(end) = ending {
                reports.push((app.operation_time, report(end)));
            }
            deliver_later(app, reports);
        }
    }
    let body = json!({
        "sid": sid, "account_sid": account, "to": to, "from": from,
        "body": params.get("Body"), "status": "queued", "direction": "outbound-api",
        "num_segments": "1", "error_code": null, "error_message": null,
        "uri": format!("/2010-04-01/Accounts/{account}/Messages/{sid}.json"),
    });
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

fn is_e164(n: &str) -> bool {
    n.strip_prefix('+').is_some_and(|digits| {
        (2..=15).contains(&digits.len())
            && digits.chars().all(|c| c.is_ascii_digit())
            && !digits.starts_with('0')
    })
}
