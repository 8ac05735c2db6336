//! Stripe's PaymentIntents and Refunds, as documented: `POST /v1/payment_intents` and
//! `POST /v1/refunds`, form-encoded (`metadata[key]` brackets), `Authorization: Bearer
//! sk_…`; errors as `{"error": {"type", "code", "decline_code", "message", "param"}}` with
//! `Stripe-Should-Retry`; unknown parameters refused. Idempotency as Stripe keeps it: an
//! executed request's answer is stored under its `Idempotency-Key` and replayed with
//! `Idempotent-Replayed: true`; the key reused with other parameters is an
//! `idempotency_error`; a request refused by validation stores nothing. Stricter than Stripe
//! in one way: a POST without `Idempotency-Key` is refused, because from Switchyard it is a
//! bug that could charge twice.
//!
//! Stripe's test payment methods behave as documented: `pm_card_chargeDeclined…` decline,
//! `pm_card_authenticationRequired` and `pm_card_threeDSecure2Required` need the customer
//! (`requires_action`; the sandbox's customer authenticates after the operation time), any
//! other `pm_…` succeeds. Events (`payment_intent.succeeded`, `payment_intent.payment_failed`,
//! `refund.updated`) go to the webhook target's `stripe` endpoint, signed with
//! `Stripe-Signature` keyed by the target's secret, for operations that end later.
//!
//! Scripts apply by `metadata[switchyard_command_id]`; `accept` makes a charge `processing`
//! (or a refund `pending`) and ends it by event, `accept:fail` fails it, `accept:silent`
//! never ends it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use switchyard_webhooks::StripeSignature;

use crate::provider::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, hang, header_str, json_response};
use crate::scenario::{Finish, Step};
use crate::server::AppState;
use crate::state::Begin;
use crate::vendor::{Attempt, Delivery, Request, deliver_later, leak, scripted_status};

/// The API version the emulated account is on, as its events say.
const API_VERSION: &str = "2024-06-20";

/// What the emulated account remembers: its PaymentIntents, for refunds.
#[derive(Debug, Default)]
pub(crate) struct Account {
    intents: Mutex<HashMap<String, Intent>>,
}

#[derive(Debug, Clone)]
struct Intent {
    amount: u64,
    currency: String,
    charge: String,
    succeeded: bool,
    refunded: u64,
}

impl Account {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Intent>) -> T) -> T {
        f(&mut self.intents.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The two endpoints emulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    PaymentIntents,
    Refunds,
}

/// A Stripe error answer.
fn error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Response {
    error_with(
        status,
        json!({"type": kind, "code": code, "message": message}),
    )
}

fn error_with(status: StatusCode, mut error: Value) -> Response {
    if let Some(fields) = error.as_object_mut() {
        fields.retain(|_, v| !v.is_null());
        fields.insert(
            "request_log_url".into(),
            json!("https://dashboard.stripe.com/test/logs"),
        );
    }
    let mut response = json_response(status, Bytes::from(json!({ "error": error }).to_string()));
    // Stripe's advice to clients: retry server errors, conflicts and rate limits only.
    let retry = status.is_server_error() || matches!(status.as_u16(), 409 | 429);
    response.headers_mut().insert(
        "stripe-should-retry",
        HeaderValue::from_static(if retry { "true" } else { "false" }),
    );
    response
}

/// A request refused by validation: a 400 `invalid_request_error`, nothing executed.
#[derive(Debug)]
struct Refusal(Value);

impl Refusal {
    fn response(self) -> Response {
        error_with(StatusCode::BAD_REQUEST, self.0)
    }
}

fn invalid(param: Option<&str>, code: &str, message: &str) -> Refusal {
    Refusal(
        json!({"type": "invalid_request_error", "code": code, "param": param, "message": message}),
    )
}

/// `POST /stripe/v1/payment_intents`.
pub(crate) async fn payment_intents(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(&app, Endpoint::PaymentIntents, &headers, &body).await
}

/// `POST /stripe/v1/refunds`.
pub(crate) async fn refunds(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(&app, Endpoint::Refunds, &headers, &body).await
}

async fn serve(app: &AppState, endpoint: Endpoint, headers: &HeaderMap, body: &[u8]) -> Response {
    let form = header_str(headers, CONTENT_TYPE.as_str())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let params: BTreeMap<String, String> = if form {
        form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    } else {
        BTreeMap::new()
    };
    let key = header_str(headers, IDEMPOTENCY_KEY);
    let (kind, operation) = match endpoint {
        Endpoint::PaymentIntents => ("payment", "charge"),
        Endpoint::Refunds => ("payment", "refund"),
    };
    let attempt = Attempt::begin(
        app,
        Request {
            command_id: params
                .get("metadata[switchyard_command_id]")
                .map(String::as_str),
            kind,
            operation,
            idempotency_key: key,
        },
        headers,
        body,
    );
    let response = answer(app, endpoint, headers, body, form, &params, key, &attempt).await;
    attempt.finish(app, response)
}

#[allow(clippy::too_many_arguments)] // one request's parts, each used once
async fn answer(
    app: &AppState,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: &[u8],
    form: bool,
    params: &BTreeMap<String, String>,
    key: Option<&str>,
    attempt: &Attempt,
) -> Response {
    let api_key = header_str(headers, AUTHORIZATION.as_str())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match api_key {
        None => {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                None,
                "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            );
        }
        Some(k) if !(k.starts_with("sk_test_") || k.starts_with("rk_test_")) || k.len() < 12 => {
            let tail: String = k
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                Some("api_key_invalid"),
                &format!(
                    "Invalid API Key provided: {}****{tail}",
                    k.get(..8).unwrap_or("")
                ),
            );
        }
        Some(_) => {}
    }
    if !form {
        return invalid(
            None,
            "parameter_invalid",
            "Invalid request (check that your POST content type is application/x-www-form-urlencoded).",
        )
        .response();
    }
    let Some(key) = key else {
        return invalid(
            None,
            "idempotency_key_missing",
            "The sandbox requires an Idempotency-Key on every POST: without one, a retry could charge twice.",
        )
        .response();
    };
    let step = attempt.step.map(Step::plain).unwrap_or(Step::Ok);
    match step {
        Step::Status(status) if status >= 400 => {
            let status = scripted_status(status);
            let kind = if status.is_server_error() {
                "api_error"
            } else {
                "invalid_request_error"
            };
            return error(status, kind, None, "scripted failure");
        }
        Step::TooManyRequests { retry_after_secs } => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "invalid_request_error",
                Some("rate_limit"),
                "Too many requests hit the API too quickly.",
            );
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
            return r;
        }
        Step::Hang => return hang(app).await,
        Step::Leak(status) => return leak(status),
        Step::Slow(delay) => tokio::time::sleep(delay).await,
        _ => {}
    }
    let finish = match step {
        Step::Accept(finish) => Some(finish),
        _ => None,
    };
    let execution = match app.ledger.begin(key, &hex::encode(Sha256::digest(body))) {
        Begin::Execute(execution) => execution,
        Begin::Replay(stored) => {
            attempt.replayed(app);
            let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
            let mut response = json_response(status, stored.body);
            response
                .headers_mut()
                .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            return response;
        }
        Begin::Mismatch => {
            return error(
                StatusCode::BAD_REQUEST,
                "idempotency_error",
                None,
                &format!(
                    "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."
                ),
            );
        }
        Begin::InUse => {
            return error(
                StatusCode::CONFLICT,
                "idempotency_error",
                None,
                "There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through). Please retry this request later.",
            );
        }
    };
    let executed = match endpoint {
        Endpoint::PaymentIntents => create_intent(app, params, key, finish),
        Endpoint::Refunds => create_refund(app, params, key, finish),
    };
    match executed {
        // Refused by validation: nothing is stored under the key (dropping releases it).
        Err(refusal) => refusal.response(),
        Ok((status, object)) => {
            let body = Bytes::from(object.to_string());
            execution.complete(status.as_u16(), body.clone());
            if matches!(step, Step::Lost) {
                return hang(app).await;
            }
            let mut response = json_response(status, body);
            if !status.is_success() {
                // A decline is final.
                response
                    .headers_mut()
                    .insert("stripe-should-retry", HeaderValue::from_static("false"));
            }
            response
        }
    }
}

/// Parameters each endpoint takes (besides `metadata[…]`); anything else is refused.
fn check_params(params: &BTreeMap<String, String>, known: &[&str]) -> Result<(), Refusal> {
    for name in params.keys() {
        let metadata = name.starts_with("metadata[") && name.ends_with(']');
        if !metadata && !known.contains(&name.as_str()) {
            return Err(invalid(
                Some(name),
                "parameter_unknown",
                &format!("Received unknown parameter: {name}"),
            ));
        }
    }
    Ok(())
}

fn metadata(params: &BTreeMap<String, String>) -> Value {
    params
        .iter()
        .filter_map(|(k, v)| {
            let inner = k.strip_prefix("metadata[")?.strip_suffix(']')?;
            Some((inner.to_owned(), Value::String(v.clone())))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn id(prefix: &str) -> String {
    format!(
        "{prefix}_3Sbx{}",
        &uuid::Uuid::new_v4().simple().to_string()[..20]
    )
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Validates and runs a create-and-confirm; the status and the object (or the 402 of a
/// declined card, which Stripe stores under the key like any executed request).
fn create_intent(
    app: &AppState,
    params: &BTreeMap<String, String>,
    key: &str,
    finish: Option<Finish>,
) -> Result<(StatusCode, Value), Refusal> {
    check_params(
        params,
        &[
            "amount",
            "currency",
            "payment_method",
            "confirm",
            "customer",
            "description",
            "return_url",
            "automatic_payment_methods[enabled]",
            "automatic_payment_methods[allow_redirects]",
            "capture_method",
            "receipt_email",
            "statement_descriptor_suffix",
        ],
    )?;
    let amount = match params.get("amount").map(|a| a.parse::<u64>()) {
        None => {
            return Err(invalid(
                Some("amount"),
                "parameter_missing",
                "Missing required param: amount.",
            ));
        }
        Some(Err(_)) => {
            return Err(invalid(
                Some("amount"),
                "parameter_invalid_integer",
                "Invalid integer: amount",
            ));
        }
        Some(Ok(a)) if a < 50 => {
            return Err(invalid(
                Some("amount"),
                "amount_too_small",
                "Amount must be at least 50 cents",
            ));
        }
        Some(Ok(a)) => a,
    };
    let currency = params.get("currency").map(String::as_str).unwrap_or("");
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(invalid(
            Some("currency"),
            "parameter_invalid",
            &format!("Invalid currency: {currency}"),
        ));
    }
    let confirm = params.get("confirm").map(String::as_str) == Some("true");
    let Some(method) = params.get("payment_method").filter(|m| !m.is_empty()) else {
        return Err(invalid(
            Some("payment_method"),
            "parameter_missing",
            "You cannot confirm this PaymentIntent because it's missing a payment method.",
        ));
    };
    if !method.starts_with("pm_") {
        return Err(invalid(
            Some("payment_method"),
            "resource_missing",
            &format!("No such PaymentMethod: '{method}'"),
        ));
    }
    let redirects_ok = params.contains_key("return_url")
        || params
            .get("automatic_payment_methods[allow_redirects]")
            .map(String::as_str)
            == Some("never");
    if confirm && !redirects_ok {
        return Err(invalid(
            Some("return_url"),
            "parameter_missing",
            "This PaymentIntent is configured to accept payment methods enabled in your Dashboard, because automatic_payment_methods is enabled by default. Some of these payment methods might redirect your customer off of your page and you must provide a `return_url`. If you don't want to accept redirect-based payment methods, set `automatic_payment_methods[allow_redirects]` to `never` when creating Setup Intents and Payment Intents.",
        ));
    }
    let pi = id("pi");
    let charge = id("ch");
    let mut intent = json!({
        "id": pi, "object": "payment_intent", "amount": amount, "amount_received": 0,
        "currency": currency, "status": "requires_confirmation",
        "client_secret": format!("{pi}_secret_{}", &uuid::Uuid::new_v4().simple().to_string()[..24]),
        "payment_method": method, "customer": params.get("customer"),
        "description": params.get("description"), "metadata": metadata(params),
        "capture_method": "automatic", "confirmation_method": "automatic",
        "latest_charge": null, "last_payment_error": null, "next_action": null,
        "created": now(), "livemode": false,
    });
    if !confirm {
        return Ok((StatusCode::OK, intent));
    }
    let declined = match method.as_str() {
        "pm_card_chargeDeclined" | "pm_card_visa_chargeDeclined" => Some("generic_decline"),
        "pm_card_chargeDeclinedInsufficientFunds" => Some("insufficient_funds"),
        "pm_card_chargeDeclinedExpiredCard" => Some("expired_card"),
        "pm_card_chargeDeclinedFraudulent" => Some("fraudulent"),
        _ => None,
    };
    if let Some(decline) = declined {
        let message = match decline {
            "insufficient_funds" => "Your card has insufficient funds.",
            "expired_card" => "Your card has expired.",
            _ => "Your card was declined.",
        };
        let error = json!({"type": "card_error", "code": "card_declined", "decline_code": decline,
            "message": message, "charge": charge});
        intent["status"] = json!("requires_payment_method");
        intent["latest_charge"] = json!(charge);
        intent["last_payment_error"] = error.clone();
        let mut error = error;
        error["payment_intent"] = intent;
        return Ok((StatusCode::PAYMENT_REQUIRED, json!({ "error": error })));
    }
    let needs_customer = matches!(
        method.as_str(),
        "pm_card_authenticationRequired" | "pm_card_threeDSecure2Required"
    );
    let later = finish.or(needs_customer.then_some(Finish::Succeed));
    let record = |succeeded| Intent {
        amount,
        currency: currency.to_owned(),
        charge: charge.clone(),
        succeeded,
        refunded: 0,
    };
    match later {
        None => {
            intent["status"] = json!("succeeded");
            intent["amount_received"] = json!(amount);
            intent["latest_charge"] = json!(charge);
            app.stripe.with(|m| m.insert(pi.clone(), record(true)));
        }
        Some(finish) => {
            if needs_customer {
                intent["status"] = json!("requires_action");
                intent["next_action"] = json!({"type": "use_stripe_sdk", "use_stripe_sdk": {}});
            } else {
                intent["status"] = json!("processing");
            }
            app.stripe.with(|m| m.insert(pi.clone(), record(false)));
            let mut ended = intent.clone();
            let event = match finish {
                Finish::Fail => {
                    ended["status"] = json!("requires_payment_method");
                    ended["last_payment_error"] = json!({"type": "card_error",
                        "code": "card_declined", "decline_code": "generic_decline",
                        "message": "Your card was declined."});
                    Some("payment_intent.payment_failed")
                }
                Finish::Silent => None,
                Finish::Succeed | Finish::Early => {
                    ended["status"] = json!("succeeded");
                    ended["amount_received"] = json!(amount);
                    ended["latest_charge"] = json!(charge);
                    ended["next_action"] = Value::Null;
                    Some("payment_intent.succeeded")
                }
            };
            if let Some(event) = event {
                if event == "payment_intent.succeeded" {
                    // Refundable from now on: the sandbox does not wait for the event.
                    app.stripe
                        .with(|m| m.get_mut(&pi).map(|i| i.succeeded = true));
                }
                let delay = if finish == Finish::Early {
                    Duration::ZERO
                } else {
                    app.operation_time
                };
                send_event(app, delay, event, ended, key);
            }
        }
    }
    Ok((StatusCode::OK, intent))
}

/// Validates and runs a refund of a PaymentIntent this account charged.
fn create_refund(
    app: &AppState,
    params: &BTreeMap<String, String>,
    key: &str,
    finish: Option<Finish>,
) -> Result<(StatusCode, Value), Refusal> {
    check_params(params, &["payment_intent", "charge", "amount", "reason"])?;
    let Some(pi) = params.get("payment_intent") else {
        return Err(invalid(
            None,
            "parameter_missing",
            "One of the following params should be provided for this request: payment_intent or charge.",
        ));
    };
    if let Some(reason) = params.get("reason")
        && !["duplicate", "fraudulent", "requested_by_customer"].contains(&reason.as_str())
    {
        return Err(invalid(
            Some("reason"),
            "parameter_invalid_string",
            &format!("Invalid reason: {reason}"),
        ));
    }
    let amount = match params.get("amount").map(|a| a.parse::<u64>()) {
        Some(Err(_)) | Some(Ok(0)) => {
            return Err(invalid(
                Some("amount"),
                "parameter_invalid_integer",
                "Invalid positive integer",
            ));
        }
        Some(Ok(a)) => Some(a),
        None => None,
    };
    let refunded = app.stripe.with(|m| {
        let Some(intent) = m.get_mut(pi) else {
            return Err(invalid(
                Some("payment_intent"),
                "resource_missing",
                &format!("No such payment_intent: '{pi}'"),
            ));
        };
        if !intent.succeeded {
            return Err(invalid(
                Some("payment_intent"),
                "charge_not_refundable",
                "This PaymentIntent does not have a successful charge to refund.",
            ));
        }
        let left = intent.amount - intent.refunded;
        if left == 0 {
            return Err(invalid(
                None,
                "charge_already_refunded",
                &format!("Charge {} has already been refunded.", intent.charge),
            ));
        }
        let amount = amount.unwrap_or(left);
        if amount > left {
            return Err(invalid(
                Some("amount"),
                "amount_too_large",
                &format!(
                    "Refund amount ({amount}) is greater than unrefunded amount on charge ({left})"
                ),
            ));
        }
        intent.refunded += amount;
        Ok((amount, intent.clone()))
    });
    let (amount, intent) = refunded?;
    let mut refund = json!({
        "id": id("re"), "object": "refund", "amount": amount, "currency": intent.currency,
        "payment_intent": pi, "charge": intent.charge, "reason": params.get("reason"),
        "metadata": metadata(params), "status": "succeeded", "created": now(),
    });
    if let Some(finish) = finish {
        refund["status"] = json!("pending");
        let mut ended = refund.clone();
        ended["status"] = json!(match finish {
            Finish::Fail => "failed",
            _ => "succeeded",
        });
        if finish == Finish::Fail {
            ended["failure_reason"] = json!("expired_or_canceled_card");
        }
        if finish != Finish::Silent {
            let delay = if finish == Finish::Early {
                Duration::ZERO
            } else {
                app.operation_time
            };
            send_event(app, delay, "refund.updated", ended, key);
        }
    }
    Ok((StatusCode::OK, refund))
}

/// Sends a Stripe event about `object` to the webhook target's `stripe` endpoint, signed
/// with `Stripe-Signature` (signed when sent: Stripe's tolerance is five minutes).
fn send_event(app: &AppState, delay: Duration, kind: &str, object: Value, key: &str) {
    let Some(target) = app.webhooks.as_ref() else {
        return;
    };
    let Ok(signer) = StripeSignature::new(target.secret()) else {
        return;
    };
    let event = json!({
        "id": id("evt"), "object": "event", "api_version": API_VERSION,
        "created": now(), "type": kind, "livemode": false, "pending_webhooks": 1,
        "data": {"object": object},
        "request": {"id": null, "idempotency_key": key},
    });
    let body = event.to_string();
    let signature = signer.sign(
        now() + i64::try_from(delay.as_secs()).unwrap_or(0),
        body.as_bytes(),
    );
    let delivery = Delivery {
        url: target.url("stripe"),
        headers: vec![
            ("content-type", "application/json; charset=utf-8".to_owned()),
            ("stripe-signature", signature),
        ],
        body,
    };
    deliver_later(app, vec![(delay, delivery)]);
}
