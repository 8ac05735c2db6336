//! PayPal's Orders API v2 behind OAuth 2.0 client credentials, as documented.
//!
//! `POST /v1/oauth2/token` takes HTTP basic auth with the app's client id and secret
//! ([`PAYPAL_CLIENT_ID`], [`PAYPAL_CLIENT_SECRET`]) and the form `grant_type=client_credentials`,
//! and answers an access token valid for `expires_in` (32400) seconds; wrong credentials are
//! a 401 `invalid_client`, another grant a 400 `unsupported_grant_type`. Every Orders request
//! needs `Authorization: Bearer <token>`: a token this sandbox did not issue, or one expired
//! (`POST /_sandbox/paypal/expire-tokens` expires them all at once), is a 401
//! `AUTHENTICATION_FAILURE`.
//!
//! `POST /v2/checkout/orders` creates an order (`intent` `CAPTURE` or `AUTHORIZE`, one to ten
//! `purchase_units` with an `amount` of `currency_code` and decimal `value`), answering 201
//! with `{id, status: CREATED, links}`, or the whole order with `Prefer:
//! return=representation`. `GET /v2/checkout/orders/{id}` reads it back. `POST
//! /v2/checkout/orders/{id}/capture` captures it (the sandbox's buyer approves every order at
//! once, so no redirect is needed): 201 `COMPLETED` with a capture per purchase unit; a second
//! capture is a 422 `ORDER_ALREADY_CAPTURED`, an unknown order a 404 `RESOURCE_NOT_FOUND`.
//! Errors are PayPal's `{name, message, debug_id, details: [{field, issue, description}],
//! links}`, with the `debug_id` also in `PayPal-Debug-Id`.
//!
//! Idempotency as PayPal keeps it: an answer that executed is stored under the request's
//! `PayPal-Request-Id` (per endpoint, and per order for captures) and the same id with the
//! same JSON body gets it back without executing again; the same id with another body is a 422
//! `DUPLICATE_REQUEST_ID`; refusals store nothing. The header is optional, as at PayPal: without
//! it every create makes a new order (a capture still captures an order only once).
//!
//! Scripts apply by the `X-Switchyard-Command-Id` header to every Orders request (create,
//! capture and read each draw the command's next step); the token endpoint draws none, so a
//! client's token caching does not shift a script. `paypal422:ISSUE` answers PayPal's 422
//! `UNPROCESSABLE_ENTITY` with that issue (`PREVIOUS_REQUEST_IN_PROGRESS` is the retryable
//! one); statuses, `429:SECS`, `hang`, `lost`, `slow:MS` and `leak:STATUS` behave as
//! elsewhere, and the other steps as `ok`. Each captured order is one effect, counted under the command (or the order id
//! without one) and in the stats' `paypal_captures`; `paypal_token_requests` and
//! `paypal_tokens_issued` count the token endpoint's work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use rand::Rng;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::provider::{COMMAND_ID, hang, header_str, json_response};
use crate::scenario::{PAYPAL_422_ISSUES, Step};
use crate::server::AppState;
use crate::vendor::{Attempt, Request, leak, scripted_status};

/// The emulated app's client id: the basic auth username of `POST /v1/oauth2/token`.
pub const PAYPAL_CLIENT_ID: &str = "AZswitchyard-sandbox-paypal-client";
/// The emulated app's client secret: the basic auth password of `POST /v1/oauth2/token`.
pub const PAYPAL_CLIENT_SECRET: &str = "EKswitchyard-sandbox-paypal-secret";

/// The app id the token endpoint reports.
const APP_ID: &str = "APP-80W284485P519543T";
/// How long an access token lives, as PayPal's (nine hours).
const TOKEN_LIFETIME: Duration = Duration::from_secs(32_400);
const SCOPE: &str = "https://uri.paypal.com/services/payments/payment";
const REQUEST_ID: &str = "paypal-request-id";
const DEBUG_ID: &str = "paypal-debug-id";
/// Where a live client would go: used for links when the request names no host.
const LIVE_BASE: &str = "https://api-m.sandbox.paypal.com";

const INVALID_REQUEST: &str =
    "Request is not well-formed, syntactically incorrect, or violates schema.";
const UNPROCESSABLE: &str = "The requested action could not be performed, semantically incorrect, or failed business validation.";

const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const HEX: &[u8] = b"0123456789abcdef";
const TOKEN_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// What the emulated PayPal account remembers: tokens, orders and answers kept for replay.
#[derive(Debug, Default)]
pub(crate) struct Account {
    inner: Mutex<Books>,
}

#[derive(Debug, Default)]
struct Books {
    /// Access token to the moment it expires.
    tokens: HashMap<String, Instant>,
    orders: HashMap<String, Order>,
    /// By what the request did and its `PayPal-Request-Id`.
    replies: HashMap<(Scope, String), Reply>,
}

/// Where a `PayPal-Request-Id` is unique: per endpoint, per order for captures, so a client
/// deriving one id per command may send it to both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Scope {
    Create,
    Capture(String),
}

/// An executed answer, kept for replay.
#[derive(Debug, Clone)]
struct Reply {
    body_sha256: String,
    status: StatusCode,
    body: Bytes,
}

#[derive(Debug, Clone)]
struct Order {
    intent: String,
    /// As given, with `reference_id` defaulted.
    units: Vec<Value>,
    created: String,
    /// The purchase units with their captures, once captured.
    captured: Option<Vec<Value>>,
    updated: String,
}

impl Account {
    fn lock(&self) -> MutexGuard<'_, Books> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Expires every token issued so far; how many were still live.
    pub(crate) fn expire_tokens(&self) -> usize {
        let now = Instant::now();
        let mut books = self.lock();
        let live = books.tokens.values().filter(|at| **at > now).count();
        for at in books.tokens.values_mut() {
            *at = now;
        }
        live
    }

    fn token_valid(&self, token: &str) -> bool {
        self.lock()
            .tokens
            .get(token)
            .is_some_and(|at| *at > Instant::now())
    }
}

fn random(n: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// An OAuth error of the token endpoint.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({"error": error, "error_description": description});
    json_response(status, Bytes::from(body.to_string()))
}

/// `POST /paypal/v1/oauth2/token`.
pub(crate) async fn token(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    app.ledger.count_request();
    app.ledger.count_vendor(|v| v.paypal_token_requests += 1);
    let credentials = header_str(&headers, AUTHORIZATION.as_str())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|encoded| B64.decode(encoded.trim()).ok())
        .and_then(|decoded| String::from_utf8(decoded).ok());
    let authenticated = credentials.as_deref().and_then(|c| c.split_once(':'))
        == Some((PAYPAL_CLIENT_ID, PAYPAL_CLIENT_SECRET));
    if !authenticated {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client Authentication failed",
        );
    }
    let form = header_str(&headers, CONTENT_TYPE.as_str())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let grant = form
        .then(|| {
            form_urlencoded::parse(&body)
                .find(|(k, _)| k == "grant_type")
                .map(|(_, v)| v.into_owned())
        })
        .flatten();
    match grant.as_deref() {
        Some("client_credentials") => {}
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Grant Type is NULL",
            );
        }
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "unsupported grant_type",
            );
        }
    }
    let access_token = format!("A21AA{}", random(92, TOKEN_CHARS));
    app.paypal
        .lock()
        .tokens
        .insert(access_token.clone(), Instant::now() + TOKEN_LIFETIME);
    app.ledger.count_vendor(|v| v.paypal_tokens_issued += 1);
    let body = json!({
        "scope": SCOPE,
        "access_token": access_token,
        "token_type": "Bearer",
        "app_id": APP_ID,
        "expires_in": TOKEN_LIFETIME.as_secs(),
        "nonce": format!("{}{}", now(), random(43, TOKEN_CHARS)),
    });
    json_response(StatusCode::OK, Bytes::from(body.to_string()))
}

/// One entry of an error's `details`.
fn detail(field: Option<&str>, value: Option<&Value>, issue: &str, description: &str) -> Value {
    let mut d = json!({"issue": issue, "description": description});
    if let Some(field) = field {
        d["field"] = json!(field);
        d["location"] = json!("body");
    }
    if let Some(value) = value {
        // PayPal echoes the offending value as text.
        d["value"] = match value {
            Value::String(s) => json!(s),
            other => json!(other.to_string()),
        };
    }
    d
}

/// PayPal's error body, its `debug_id` also in `PayPal-Debug-Id`.
fn error(status: StatusCode, name: &str, message: &str, details: Vec<Value>) -> Response {
    let debug_id = random(13, HEX);
    let href = match details.first().and_then(|d| d["issue"].as_str()) {
        Some(issue) => format!("https://developer.paypal.com/docs/api/orders/v2/#error-{issue}"),
        None => "https://developer.paypal.com/api/rest/reference/orders/v2/errors/".to_owned(),
    };
    let mut body = json!({
        "name": name,
        "message": message,
        "debug_id": debug_id,
        "links": [{"href": href, "rel": "information_link", "method": "GET"}],
    });
    if !details.is_empty() {
        body["details"] = Value::Array(details);
    }
    let mut response = json_response(status, Bytes::from(body.to_string()));
    if let Ok(v) = HeaderValue::from_str(&debug_id) {
        response.headers_mut().insert(DEBUG_ID, v);
    }
    response
}

fn authentication_failure() -> Response {
    let body = json!({
        "name": "AUTHENTICATION_FAILURE",
        "message": "Authentication failed due to invalid authentication credentials or a missing Authorization header.",
        "links": [{"href": "https://developer.paypal.com/docs/api/overview/#error", "rel": "information_link"}],
    });
    json_response(StatusCode::UNAUTHORIZED, Bytes::from(body.to_string()))
}

fn invalid(details: Vec<Value>) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        INVALID_REQUEST,
        details,
    )
}

fn unprocessable(issue: &str, description: &str) -> Response {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "UNPROCESSABLE_ENTITY",
        UNPROCESSABLE,
        vec![detail(None, None, issue, description)],
    )
}

/// The scripted `paypal422:ISSUE`, with PayPal's description of the issue.
fn scripted_422(issue: &str) -> Response {
    let description = PAYPAL_422_ISSUES
        .iter()
        .find(|(name, _)| *name == issue)
        .map_or("", |(_, d)| *d);
    unprocessable(issue, description)
}

/// A scripted failure status, named as PayPal names it.
fn scripted(status: u16) -> Response {
    let status = scripted_status(status);
    let (name, message) = match status.as_u16() {
        401 => return authentication_failure(),
        403 => (
            "NOT_AUTHORIZED",
            "Authorization failed due to insufficient permissions.",
        ),
        404 => (
            "RESOURCE_NOT_FOUND",
            "The specified resource does not exist.",
        ),
        415 => (
            "UNSUPPORTED_MEDIA_TYPE",
            "The server does not support the request payload's media type.",
        ),
        422 => ("UNPROCESSABLE_ENTITY", UNPROCESSABLE),
        429 => (
            "RATE_LIMIT_REACHED",
            "Too many requests. Blocked due to rate limiting.",
        ),
        503 => ("SERVICE_UNAVAILABLE", "Service Unavailable."),
        s if s >= 500 => (
            "INTERNAL_SERVER_ERROR",
            "An internal server error has occurred.",
        ),
        _ => ("INVALID_REQUEST", INVALID_REQUEST),
    };
    error(status, name, message, Vec::new())
}

/// The three Orders endpoints emulated.
#[derive(Debug)]
enum Endpoint {
    Create,
    Capture(String),
    Get(String),
}

/// `POST /paypal/v2/checkout/orders`.
pub(crate) async fn create_order(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    serve(&app, Endpoint::Create, &headers, &uri, &body).await
}

/// `POST /paypal/v2/checkout/orders/{order_id}/capture`.
pub(crate) async fn capture_order(
    State(app): State<Arc<AppState>>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    serve(&app, Endpoint::Capture(order_id), &headers, &uri, &body).await
}

/// `GET /paypal/v2/checkout/orders/{order_id}`.
pub(crate) async fn get_order(
    State(app): State<Arc<AppState>>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    serve(&app, Endpoint::Get(order_id), &headers, &uri, &[]).await
}

/// One Orders request, as the answer needs it.
struct Call<'a> {
    app: &'a AppState,
    endpoint: Endpoint,
    command_id: Option<&'a str>,
    request_id: Option<&'a str>,
    /// `https://{host}/paypal`, for the answer's links.
    base: String,
    /// `Prefer: return=representation`.
    representation: bool,
}

async fn serve(
    app: &AppState,
    endpoint: Endpoint,
    headers: &HeaderMap,
    uri: &Uri,
    body: &[u8],
) -> Response {
    let operation = match endpoint {
        Endpoint::Create => "create_order",
        Endpoint::Capture(_) => "capture_order",
        Endpoint::Get(_) => "get_order",
    };
    let request_id = header_str(headers, REQUEST_ID);
    let attempt = Attempt::begin(
        app,
        Request {
            command_id: header_str(headers, COMMAND_ID),
            kind: "payment",
            operation,
            idempotency_key: request_id,
        },
        headers,
        body,
    );
    let host = header_str(headers, HOST.as_str()).or_else(|| uri.authority().map(|a| a.as_str()));
    let call = Call {
        app,
        endpoint,
        command_id: header_str(headers, COMMAND_ID),
        request_id,
        base: host.map_or_else(|| LIVE_BASE.to_owned(), |h| format!("https://{h}/paypal")),
        representation: header_str(headers, "prefer")
            .is_some_and(|p| p.contains("return=representation")),
    };
    let response = answer(&call, headers, body, &attempt).await;
    attempt.finish(app, response)
}

async fn answer(call: &Call<'_>, headers: &HeaderMap, body: &[u8], attempt: &Attempt) -> Response {
    let app = call.app;
    let token = header_str(headers, AUTHORIZATION.as_str())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    if !token.is_some_and(|t| app.paypal.token_valid(t)) {
        return authentication_failure();
    }
    let body = match read_body(&call.endpoint, headers, body) {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let step = attempt.step.unwrap_or(Step::Ok);
    match step {
        Step::Status(status) if status >= 400 => return scripted(status),
        Step::TooManyRequests { retry_after_secs } => {
            let mut r = scripted(429);
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
            return r;
        }
        Step::PayPal422(issue) => return scripted_422(issue),
        Step::Hang => return hang(app).await,
        Step::Leak(status) => return leak(status),
        Step::Slow(delay) => tokio::time::sleep(delay).await,
        _ => {}
    }
    let (response, replayed) = execute(call, &body);
    if replayed {
        attempt.replayed(app);
    }
    if matches!(step, Step::Lost) && response.status().is_success() {
        // Executed (or replayed), and the answer lost on the way back.
        return hang(app).await;
    }
    response
}

/// The request's JSON body: an object for a create, empty or an object for a capture.
fn read_body(
    endpoint: &Endpoint,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, Box<Response>> {
    let empty = body.iter().all(u8::is_ascii_whitespace);
    match endpoint {
        Endpoint::Get(_) => return Ok(Value::Null),
        Endpoint::Capture(_) if empty => return Ok(json!({})),
        _ => {}
    }
    let is_json = header_str(headers, CONTENT_TYPE.as_str())
        .is_some_and(|ct| ct.trim().starts_with("application/json"));
    if !is_json {
        return Err(Box::new(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "The server does not support the request payload's media type.",
            Vec::new(),
        )));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(value) if value.is_object() => Ok(value),
        _ => Err(Box::new(invalid(vec![detail(
            Some("/"),
            None,
            "MALFORMED_REQUEST_JSON",
            "The request JSON is not well formed.",
        )]))),
    }
}

/// Runs the request once per `PayPal-Request-Id`, under the account's lock so retries racing
/// each other still execute once; the answer, and whether it was a replay.
fn execute(call: &Call<'_>, body: &Value) -> (Response, bool) {
    let app = call.app;
    let scope = match &call.endpoint {
        Endpoint::Create => Scope::Create,
        Endpoint::Capture(order_id) => Scope::Capture(order_id.clone()),
        Endpoint::Get(order_id) => {
            let books = app.paypal.lock();
            let response = match books.orders.get(order_id) {
                Some(order) => json_answer(StatusCode::OK, order_json(&call.base, order_id, order)),
                None => not_found(),
            };
            return (response, false);
        }
    };
    let body_sha256 = hex::encode(Sha256::digest(body.to_string()));
    let mut books = app.paypal.lock();
    let key = call.request_id.map(|id| (scope.clone(), id.to_owned()));
    if let Some(reply) = key.as_ref().and_then(|k| books.replies.get(k)) {
        if reply.body_sha256 != body_sha256 {
            return (
                unprocessable(
                    "DUPLICATE_REQUEST_ID",
                    "The value of PayPal-Request-Id header has already been used.",
                ),
                false,
            );
        }
        return (json_response(reply.status, reply.body.clone()), true);
    }
    let executed = match &scope {
        Scope::Create => create(&mut books, call, body),
        Scope::Capture(order_id) => capture(&mut books, call, order_id),
    };
    let (status, answer) = match executed {
        Ok(executed) => executed,
        // Refused: nothing stored, so the same request id may try again once fixed.
        Err(refusal) => return (*refusal, false),
    };
    let answer = Bytes::from(answer.to_string());
    if let Some(key) = key {
        books.replies.insert(
            key,
            Reply {
                body_sha256,
                status,
                body: answer.clone(),
            },
        );
    }
    drop(books);
    if let Scope::Capture(order_id) = &scope {
        app.ledger.count_effect(call.command_id.unwrap_or(order_id));
        app.ledger.count_vendor(|v| v.paypal_captures += 1);
    }
    (json_response(status, answer), false)
}

fn json_answer(status: StatusCode, body: Value) -> Response {
    json_response(status, Bytes::from(body.to_string()))
}

fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "RESOURCE_NOT_FOUND",
        "The specified resource does not exist.",
        vec![detail(
            None,
            None,
            "INVALID_RESOURCE_ID",
            "Specified resource ID does not exist. Please check the resource ID and try again.",
        )],
    )
}

fn link(href: String, rel: &str, method: &str) -> Value {
    json!({"href": href, "rel": rel, "method": method})
}

/// The whole order, as `Prefer: return=representation` and reads show it.
fn order_json(base: &str, id: &str, order: &Order) -> Value {
    let self_link = link(format!("{base}/v2/checkout/orders/{id}"), "self", "GET");
    match &order.captured {
        Some(units) => json!({
            "id": id, "intent": order.intent, "status": "COMPLETED",
            "purchase_units": units, "payer": payer(),
            "create_time": order.created, "update_time": order.updated,
            "links": [self_link],
        }),
        None => {
            let action = if order.intent == "AUTHORIZE" {
                "authorize"
            } else {
                "capture"
            };
            json!({
                "id": id, "intent": order.intent, "status": "CREATED",
                "purchase_units": order.units, "create_time": order.created,
                "links": [
                    self_link,
                    link(format!("https://www.sandbox.paypal.com/checkoutnow?token={id}"), "approve", "GET"),
                    link(format!("{base}/v2/checkout/orders/{id}"), "update", "PATCH"),
                    link(format!("{base}/v2/checkout/orders/{id}/{action}"), action, "POST"),
                ],
            })
        }
    }
}

/// The sandbox's buyer, who approves every order.
fn payer() -> Value {
    json!({
        "name": {"given_name": "Sandbox", "surname": "Buyer"},
        "email_address": "sb-buyer@personal.example.com",
        "payer_id": "SBXBUYER7Q2LJ",
        "address": {"country_code": "US"},
    })
}

/// A fresh id in PayPal's shape (17 uppercase letters and digits), not yet used.
fn fresh_id(books: &Books) -> String {
    loop {
        let id = random(17, UPPER_ALNUM);
        if !books.orders.contains_key(&id) {
            return id;
        }
    }
}

type Executed = Result<(StatusCode, Value), Box<Response>>;

fn create(books: &mut Books, call: &Call<'_>, body: &Value) -> Executed {
    let (intent, units) = validate(body)?;
    let id = fresh_id(books);
    let time = now();
    let order = Order {
        intent,
        units,
        created: time.clone(),
        captured: None,
        updated: time,
    };
    let answer = if call.representation {
        order_json(&call.base, &id, &order)
    } else {
        let mut full = order_json(&call.base, &id, &order);
        json!({"id": id, "status": "CREATED", "links": full["links"].take()})
    };
    books.orders.insert(id, order);
    Ok((StatusCode::CREATED, answer))
}

/// Checks an order's shape as PayPal does: every 400 problem at once, then the 422s.
fn validate(body: &Value) -> Result<(String, Vec<Value>), Box<Response>> {
    let mut problems = Vec::new();
    let missing = |field: &str| {
        detail(
            Some(field),
            None,
            "MISSING_REQUIRED_PARAMETER",
            "A required field / parameter is missing.",
        )
    };
    match &body["intent"] {
        Value::Null => problems.push(missing("/intent")),
        Value::String(i) if i == "CAPTURE" || i == "AUTHORIZE" => {}
        other => problems.push(detail(
            Some("/intent"),
            Some(other),
            "INVALID_PARAMETER_VALUE",
            "The value of a field is invalid.",
        )),
    }
    let units = match &body["purchase_units"] {
        Value::Null => {
            problems.push(missing("/purchase_units"));
            Vec::new()
        }
        Value::Array(units) if units.is_empty() => {
            problems.push(detail(
                Some("/purchase_units"),
                None,
                "INVALID_ARRAY_MIN_ITEMS",
                "The number of items in an array parameter is too small.",
            ));
            Vec::new()
        }
        Value::Array(units) if units.len() > 10 => {
            problems.push(detail(
                Some("/purchase_units"),
                None,
                "INVALID_ARRAY_MAX_ITEMS",
                "The number of items in an array parameter is too large.",
            ));
            Vec::new()
        }
        Value::Array(units) => units.clone(),
        other => {
            problems.push(detail(
                Some("/purchase_units"),
                Some(other),
                "INVALID_PARAMETER_SYNTAX",
                "The value of a field does not conform to the expected format.",
            ));
            Vec::new()
        }
    };
    let several = units.len() > 1;
    let mut late = Vec::new();
    let mut references = Vec::new();
    let mut checked = Vec::with_capacity(units.len());
    for (index, mut unit) in units.into_iter().enumerate() {
        if !unit.is_object() {
            problems.push(detail(
                Some(&format!("/purchase_units/{index}")),
                Some(&unit),
                "INVALID_PARAMETER_SYNTAX",
                "The value of a field does not conform to the expected format.",
            ));
            continue;
        }
        let reference = match unit["reference_id"].as_str() {
            Some(r) => r.to_owned(),
            None if several => {
                problems.push(missing(&format!("/purchase_units/{index}/reference_id")));
                continue;
            }
            None => "default".to_owned(),
        };
        let at = format!("/purchase_units/@reference_id=='{reference}'");
        if references.contains(&reference) {
            late.push(detail(
                Some(&format!("{at}/reference_id")),
                Some(&json!(reference)),
                "DUPLICATE_REFERENCE_ID",
                "`reference_id` must be unique if multiple `purchase_unit` are provided.",
            ));
        }
        references.push(reference.clone());
        unit["reference_id"] = json!(reference);
        let amount = &unit["amount"];
        if !amount.is_object() {
            problems.push(missing(&format!("{at}/amount")));
            checked.push(unit);
            continue;
        }
        match &amount["currency_code"] {
            Value::Null => problems.push(missing(&format!("{at}/amount/currency_code"))),
            Value::String(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) => {}
            other => problems.push(detail(
                Some(&format!("{at}/amount/currency_code")),
                Some(other),
                "INVALID_PARAMETER_SYNTAX",
                "The value of a field does not conform to the expected format.",
            )),
        }
        match &amount["value"] {
            Value::Null => problems.push(missing(&format!("{at}/amount/value"))),
            Value::String(v) if is_decimal(v) => {
                if v.bytes().all(|b| b == b'0' || b == b'.') {
                    late.push(detail(
                        Some(&format!("{at}/amount/value")),
                        Some(&json!(v)),
                        "CANNOT_BE_ZERO_OR_NEGATIVE",
                        "Must be greater than zero. If the currency supports decimals, only two decimal place precision is supported.",
                    ));
                }
            }
            other => problems.push(detail(
                Some(&format!("{at}/amount/value")),
                Some(other),
                "INVALID_PARAMETER_SYNTAX",
                "The value of a field does not conform to the expected format.",
            )),
        }
        checked.push(unit);
    }
    if !problems.is_empty() {
        return Err(Box::new(invalid(problems)));
    }
    if !late.is_empty() {
        return Err(Box::new(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "UNPROCESSABLE_ENTITY",
            UNPROCESSABLE,
            late,
        )));
    }
    let intent = body["intent"].as_str().unwrap_or("CAPTURE").to_owned();
    Ok((intent, checked))
}

/// An amount as PayPal writes it: digits, and at most two decimals.
fn is_decimal(v: &str) -> bool {
    let (whole, fraction) = v.split_once('.').unwrap_or((v, "0"));
    (1..=10).contains(&whole.len())
        && whole.bytes().all(|b| b.is_ascii_digit())
        && (1..=2).contains(&fraction.len())
        && fraction.bytes().all(|b| b.is_ascii_digit())
}

fn capture(books: &mut Books, call: &Call<'_>, order_id: &str) -> Executed {
    let mut capture_ids = Vec::new();
    let mut order = match books.orders.get(order_id) {
        Some(order) => order.clone(),
        None => return Err(Box::new(not_found())),
    };
    if order.intent != "CAPTURE" {
        return Err(Box::new(unprocessable(
            "ACTION_DOES_NOT_MATCH_INTENT",
            "Order was created with an intent to 'AUTHORIZE'. Please use v2/checkout/orders/order_id/authorize to complete the transaction or alternately, create an order with an intent of 'CAPTURE'.",
        )));
    }
    if order.captured.is_some() {
        return Err(Box::new(unprocessable(
            "ORDER_ALREADY_CAPTURED",
            "Order already captured. If 'intent=CAPTURE' only one capture per order is allowed.",
        )));
    }
    let time = now();
    let base = &call.base;
    let units: Vec<Value> = order
        .units
        .iter()
        .map(|unit| {
            let capture_id = loop {
                let id = random(17, UPPER_ALNUM);
                if !capture_ids.contains(&id) {
                    break id;
                }
            };
            capture_ids.push(capture_id.clone());
            let mut capture = json!({
                "id": capture_id, "status": "COMPLETED", "amount": unit["amount"],
                "final_capture": true,
                "seller_protection": {"status": "ELIGIBLE",
                    "dispute_categories": ["ITEM_NOT_RECEIVED", "UNAUTHORIZED_TRANSACTION"]},
                "create_time": time, "update_time": time,
                "links": [
                    link(format!("{base}/v2/payments/captures/{capture_id}"), "self", "GET"),
                    link(format!("{base}/v2/payments/captures/{capture_id}/refund"), "refund", "POST"),
                    link(format!("{base}/v2/checkout/orders/{order_id}"), "up", "GET"),
                ],
            });
            for field in ["custom_id", "invoice_id"] {
                if let Some(v) = unit.get(field) {
                    capture[field] = v.clone();
                }
            }
            json!({"reference_id": unit["reference_id"], "payments": {"captures": [capture]}})
        })
        .collect();
    order.captured = Some(units.clone());
    order.updated = time;
    books.orders.insert(order_id.to_owned(), order);
    let answer = json!({
        "id": order_id, "status": "COMPLETED",
        "purchase_units": units, "payer": payer(),
        "links": [link(format!("{base}/v2/checkout/orders/{order_id}"), "self", "GET")],
    });
    Ok((StatusCode::CREATED, answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_tokens_have_paypal_shapes() {
        let id = random(17, UPPER_ALNUM);
        assert_eq!(id.len(), 17);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        );
        assert_eq!(random(13, HEX).len(), 13);
    }

    #[test]
    fn amounts_are_decimals_with_at_most_two_places() {
        for ok in ["100.00", "1", "0.5", "12.34"] {
            assert!(is_decimal(ok), "{ok}");
        }
        for bad in ["", ".5", "1.", "1.234", "-1", "1e3", "1,00", "12345678901"] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }

    #[test]
    fn validation_names_the_missing_fields() {
        assert!(validate(&json!({})).is_err());
        let ok = validate(&json!({"intent": "CAPTURE", "purchase_units": [
            {"amount": {"currency_code": "USD", "value": "100.00"}}]}))
        .unwrap();
        assert_eq!(ok.0, "CAPTURE");
        assert_eq!(ok.1[0]["reference_id"], "default");
    }
}
