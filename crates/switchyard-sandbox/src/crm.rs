//! A small HubSpot-like CRM contacts API: `PUT /crm/v3/contacts/{email}` upserts the contact
//! with that email (percent-decoded from the path) from a JSON body `{"properties": {name:
//! string value}}`, and answers 200 with `{id, properties, createdAt, updatedAt, archived}`;
//! `GET /crm/v3/contacts/{email}` reads it back (404 `OBJECT_NOT_FOUND`). An upsert keeps the
//! properties it does not name. Requests authenticate with the sandbox's key
//! ([`CRM_API_KEY`]) in `X-API-Key`; errors are HubSpot's `{status: "error", message,
//! correlationId, category}`: 401 `INVALID_AUTHENTICATION`, 400 `VALIDATION_ERROR`, 429
//! `RATE_LIMITS`.
//!
//! A PUT is idempotent by nature; an `Idempotency-Key`, when sent, is kept as Stripe keeps
//! it (the same key, email and body replay the stored answer with `Idempotent-Replayed:
//! true` and no second upsert; the key with another request is a 400 `VALIDATION_ERROR`).
//!
//! Scripts apply by the `X-Switchyard-Command-Id` header to every request; `429:SECS` answers
//! `RATE_LIMITS` with `Retry-After` and `X-RateLimit-Reset` (epoch seconds); statuses,
//! `hang`, `lost`, `slow:MS` and `leak:STATUS` behave as elsewhere, the other steps as `ok`.
//! Each executed upsert is one effect (under the idempotency key, else the command, else the
//! contact id) and counts in the stats' `crm_upserts`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::{Path, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::provider::{
    COMMAND_ID, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, hang, header_str, json_response,
};
use crate::scenario::Step;
use crate::server::AppState;
use crate::state::Begin;
use crate::vendor::{Attempt, Request, leak, scripted_status};

/// The API key the emulated CRM accepts in `X-API-Key`.
pub const CRM_API_KEY: &str = "sbx-crm-3f7c2a9e5d1b4c6a";

const API_KEY_HEADER: &str = "x-api-key";
/// Contact ids start here, so they read like a portal's, not like array indexes.
const FIRST_ID: u64 = 1001;

/// The emulated portal's contacts, by lowercased email.
#[derive(Debug, Default)]
pub(crate) struct Store {
    inner: Mutex<Contacts>,
}

#[derive(Debug, Default)]
struct Contacts {
    by_email: HashMap<String, Contact>,
    issued: u64,
}

#[derive(Debug, Clone)]
struct Contact {
    id: String,
    properties: BTreeMap<String, String>,
    created_at: String,
    updated_at: String,
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, Contacts> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Contact {
    fn json(&self) -> Value {
        let mut properties = self.properties.clone();
        properties.insert("hs_object_id".to_owned(), self.id.clone());
        properties.insert("createdate".to_owned(), self.created_at.clone());
        properties.insert("lastmodifieddate".to_owned(), self.updated_at.clone());
        json!({
            "id": self.id, "properties": properties,
            "createdAt": self.created_at, "updatedAt": self.updated_at,
            "archived": false,
        })
    }
}

/// HubSpot's error body.
fn error(status: StatusCode, category: &str, message: &str) -> Response {
    let body = json!({
        "status": "error",
        "message": message,
        "correlationId": uuid::Uuid::new_v4().to_string(),
        "category": category,
    });
    json_response(status, Bytes::from(body.to_string()))
}

fn rate_limited(retry_after_secs: u64) -> Response {
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITS",
        "You have reached your ten_secondly_rolling limit.",
    );
    let reset =
        chrono::Utc::now().timestamp() + i64::try_from(retry_after_secs).unwrap_or(i64::MAX / 2);
    let h = response.headers_mut();
    h.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    h.insert("x-ratelimit-reset", HeaderValue::from(reset));
    h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
    response
}

/// A scripted failure status, with the category HubSpot gives it.
fn scripted(status: u16) -> Response {
    let status = scripted_status(status);
    let category = match status.as_u16() {
        401 => "INVALID_AUTHENTICATION",
        403 => "MISSING_SCOPES",
        404 => "OBJECT_NOT_FOUND",
        409 => "CONFLICT",
        429 => "RATE_LIMITS",
        s if s >= 500 => "INTERNAL_ERROR",
        _ => "VALIDATION_ERROR",
    };
    error(status, category, "scripted failure")
}

fn is_email(s: &str) -> bool {
    s.split_once('@').is_some_and(|(user, host)| {
        !user.is_empty() && host.contains('.') && !host.starts_with('.') && !host.ends_with('.')
    }) && !s.chars().any(char::is_whitespace)
}

/// `None` unless `X-API-Key` is the sandbox's key.
fn unauthenticated(headers: &HeaderMap) -> Option<Response> {
    match header_str(headers, API_KEY_HEADER) {
        Some(key) if key == CRM_API_KEY => None,
        Some(_) => Some(error(
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTHENTICATION",
            "The API key provided is invalid.",
        )),
        None => Some(error(
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API takes an API key in the X-API-Key header.",
        )),
    }
}

/// How a script step turns into an answer: `run` executes, failures answer without
/// executing, `lost` executes and never answers.
async fn scripted_answer(
    app: &AppState,
    step: Option<Step>,
    run: impl FnOnce() -> Response,
) -> Response {
    match step.map(Step::plain).unwrap_or(Step::Ok) {
        Step::Status(status) if status >= 400 => scripted(status),
        Step::TooManyRequests { retry_after_secs } => rate_limited(retry_after_secs),
        Step::Hang => hang(app).await,
        Step::Leak(status) => leak(status),
        Step::Lost => {
            // Executed, and the answer lost on the way back.
            let _ = run();
            hang(app).await
        }
        Step::Slow(delay) => {
            tokio::time::sleep(delay).await;
            run()
        }
        _ => run(),
    }
}

/// `PUT /crm/v3/contacts/{email}`.
pub(crate) async fn upsert_contact(
    State(app): State<Arc<AppState>>,
    Path(email): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let command_id = header_str(&headers, COMMAND_ID);
    let key = header_str(&headers, IDEMPOTENCY_KEY);
    let attempt = Attempt::begin(
        &app,
        Request {
            command_id,
            kind: "crm",
            operation: "upsert_contact",
            idempotency_key: key,
        },
        &headers,
        &body,
    );
    if let Some(refused) = unauthenticated(&headers) {
        return attempt.finish(&app, refused);
    }
    let properties = match read_properties(&email, &body) {
        Ok(properties) => properties,
        Err(refused) => return attempt.finish(&app, *refused),
    };
    let response = scripted_answer(&app, attempt.step, || {
        let Some(key) = key else {
            let contact = upsert(&app, &email, properties);
            let effect =
                command_id.map_or_else(|| format!("crm_contact_{}", contact.id), str::to_owned);
            app.ledger.count_effect(&effect);
            return json_response(StatusCode::OK, Bytes::from(contact.json().to_string()));
        };
        // The email is part of what the key stands for, not only the body.
        let mut hashed = Sha256::new();
        hashed.update(email.to_lowercase().as_bytes());
        hashed.update(b"\n");
        hashed.update(&body);
        match app.ledger.begin(key, &hex::encode(hashed.finalize())) {
            Begin::Execute(execution) => {
                let contact = upsert(&app, &email, properties);
                let answer = Bytes::from(contact.json().to_string());
                execution.complete(StatusCode::OK.as_u16(), answer.clone());
                json_response(StatusCode::OK, answer)
            }
            Begin::Replay(stored) => {
                attempt.replayed(&app);
                let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
                let mut response = json_response(status, stored.body);
                response
                    .headers_mut()
                    .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
                response
            }
            Begin::Mismatch => error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!("Idempotency-Key '{key}' was already used with another request."),
            ),
            Begin::InUse => error(
                StatusCode::CONFLICT,
                "CONFLICT",
                "Another request with this Idempotency-Key is in progress; retry later.",
            ),
        }
    })
    .await;
    attempt.finish(&app, response)
}

/// The body's string properties, the email checked against the path's.
fn read_properties(email: &str, body: &[u8]) -> Result<BTreeMap<String, String>, Box<Response>> {
    let invalid =
        |message: &str| Box::new(error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message));
    if !is_email(email) {
        return Err(invalid(&format!(
            "Property values were not valid: [{{\"isValid\":false,\"message\":\"Email address {email} is invalid\",\"error\":\"INVALID_EMAIL\",\"name\":\"email\"}}]"
        )));
    }
    let parsed: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(&format!("Invalid input JSON on line 1: {e}")))?;
    let Some(given) = parsed["properties"].as_object() else {
        return Err(invalid(
            "Invalid input: the body must be {\"properties\": {\"name\": \"value\", ...}}.",
        ));
    };
    let mut properties = BTreeMap::new();
    for (name, value) in given {
        let Some(value) = value.as_str() else {
            return Err(invalid(&format!(
                "Property values were not valid: {name} must be a string."
            )));
        };
        properties.insert(name.clone(), value.to_owned());
    }
    if let Some(other) = properties.get("email")
        && !other.eq_ignore_ascii_case(email)
    {
        return Err(invalid(&format!(
            "Property values were not valid: email {other} does not match the contact's {email}."
        )));
    }
    properties.insert("email".to_owned(), email.to_owned());
    Ok(properties)
}

/// Creates or updates the contact, and counts the upsert.
fn upsert(app: &AppState, email: &str, properties: BTreeMap<String, String>) -> Contact {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut contacts = app.crm.lock();
    let next = FIRST_ID + contacts.issued;
    let mut created = false;
    let contact = contacts
        .by_email
        .entry(email.to_lowercase())
        .or_insert_with(|| {
            created = true;
            Contact {
                id: next.to_string(),
                properties: BTreeMap::new(),
                created_at: now.clone(),
                updated_at: now.clone(),
            }
        });
    contact.properties.extend(properties);
    contact.updated_at = now;
    let contact = contact.clone();
    if created {
        contacts.issued += 1;
    }
    drop(contacts);
    app.ledger.count_vendor(|v| v.crm_upserts += 1);
    contact
}

/// `GET /crm/v3/contacts/{email}`.
pub(crate) async fn get_contact(
    State(app): State<Arc<AppState>>,
    Path(email): Path<String>,
    headers: HeaderMap,
) -> Response {
    let attempt = Attempt::begin(
        &app,
        Request {
            command_id: header_str(&headers, COMMAND_ID),
            kind: "crm",
            operation: "get_contact",
            idempotency_key: None,
        },
        &headers,
        &[],
    );
    if let Some(refused) = unauthenticated(&headers) {
        return attempt.finish(&app, refused);
    }
    let response = scripted_answer(&app, attempt.step, || {
        match app.crm.lock().by_email.get(&email.to_lowercase()) {
            Some(contact) => json_response(StatusCode::OK, Bytes::from(contact.json().to_string())),
            None => error(
                StatusCode::NOT_FOUND,
                "OBJECT_NOT_FOUND",
                "resource not found",
            ),
        }
    })
    .await;
    attempt.finish(&app, response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_must_be_strings_and_agree_on_the_email() {
        let ok =
            read_properties("ann@example.com", br#"{"properties":{"firstname":"Ann"}}"#).unwrap();
        assert_eq!(ok["email"], "ann@example.com");
        assert_eq!(ok["firstname"], "Ann");
        for body in [
            r#"{"properties":{"age":3}}"#,
            r#"{"properties":{"email":"bob@example.com"}}"#,
            r#"{"firstname":"Ann"}"#,
            "not json",
        ] {
            assert!(
                read_properties("ann@example.com", body.as_bytes()).is_err(),
                "{body}"
            );
        }
        assert!(read_properties("not-an-email", br#"{"properties":{}}"#).is_err());
    }
}
