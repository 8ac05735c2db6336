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
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde_json::json;
use sha2::{Digest, Sha256};
use switchyard_webhooks::TwilioSignature;

use crate::provider::{COMMAND_ID, hang, header_str, loggable_headers};
use crate::scenario::{Finish, Step};
use crate::server::AppState;
use crate::state::RequestRecord;

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
    app.ledger.count_request();
    let Some((sid, token)) = credentials(&headers)
        .filter(|(sid, token)| sid == &account && sid.starts_with("AC") && !token.is_empty())
    else {
        return error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    };
    let form = header_str(&headers, CONTENT_TYPE.as_str())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return error(
            StatusCode::BAD_REQUEST,
            21620,
            "The request body must be application/x-www-form-urlencoded",
        );
    }
    let params: BTreeMap<String, String> = form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let record = header_str(&headers, COMMAND_ID).map(|id| {
        let r = RequestRecord {
            idempotency_key: None,
            body_sha256: hex::encode(Sha256::digest(&body)),
            status: None,
            replayed: false,
            at_ms: app.elapsed_ms(),
            kind: "notification".into(),
            operation: "send_sms".into(),
            step: None,
            headers: loggable_headers(&headers),
        };
        (id.to_owned(), app.ledger.record(id, r))
    });
    let step = record.as_ref().and_then(|(id, _)| app.ledger.next_step(id));
    if let (Some(step), Some((_, at))) = (&step, &record) {
        let text = step.to_string();
        app.ledger.update_record(at, |r| r.step = Some(text));
    }
    let response = match step.unwrap_or(Step::Accept(Finish::Succeed)) {
        Step::Status(status) if status >= 400 => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            error(status, 20500, "scripted failure")
        }
        Step::TooManyRequests { .. } => {
            error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests")
        }
        Step::Hang => hang(&app).await,
        Step::Accept(finish) => accept(&app, &sid, &token, &params, finish),
        _ => accept(&app, &sid, &token, &params, Finish::Succeed),
    };
    if let Some((_, at)) = &record {
        let status = response.status().as_u16();
        app.ledger.update_record(at, |r| r.status = Some(status));
    }
    response
}

fn accept(
    app: &AppState,
    account: &str,
    token: &str,
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
    app.ledger.count_effect(&sid);
    if let Some(url) = params.get("StatusCallback") {
        let ending = match finish {
            Finish::Fail => Some("undelivered"),
            Finish::Silent => None,
            _ => Some("delivered"),
        };
        if let Ok(signer) = TwilioSignature::new(token) {
            let report = |status: &str| {
                vec![
                    ("AccountSid".to_owned(), account.to_owned()),
                    ("From".to_owned(), from.clone()),
                    ("MessageSid".to_owned(), sid.clone()),
                    ("MessageStatus".to_owned(), status.to_owned()),
                    ("SmsSid".to_owned(), sid.clone()),
                    ("SmsStatus".to_owned(), status.to_owned()),
                    ("To".to_owned(), to.clone()),
                ]
            };
            // `sent` at once, then the end after the operation time, as carriers report.
            let mut reports = vec![(std::time::Duration::ZERO, report("sent"))];
            if let Some(end) = ending {
                reports.push((app.operation_time, report(end)));
            }
            send_reports(url.clone(), signer, reports);
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

/// Posts each status report, signed, after its delay; a few tries each, as Twilio retries.
fn send_reports(
    url: String,
    signer: TwilioSignature,
    reports: Vec<(std::time::Duration, Vec<(String, String)>)>,
) {
    tokio::spawn(async move {
        let Ok(http) = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
        else {
            return;
        };
        for (delay, params) in reports {
            tokio::time::sleep(delay).await;
            let signature = signer.sign(&url, &params);
            let body = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&params)
                .finish();
            // Twilio's own de-duplication token: the same on a retry of this report.
            let token = uuid::Uuid::new_v4().to_string();
            for attempt in 1..=3u64 {
                let sent = http
                    .post(&url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("x-twilio-signature", &signature)
                    .header("i-twilio-idempotency-token", &token)
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => break,
                    Ok(r) => tracing::warn!(status = %r.status(), %url, "status callback refused"),
                    Err(e) => tracing::warn!(error = %e, %url, "status callback not delivered"),
                }
                tokio::time::sleep(std::time::Duration::from_millis(500 * attempt)).await;
            }
        }
    });
}
