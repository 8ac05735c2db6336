//! `type = "stripe"`: `charge` as a PaymentIntent created and confirmed in one request
//! (`POST {base_url}/v1/payment_intents` with `confirm=true`), `refund` as
//! `POST {base_url}/v1/refunds`. Form-encoded bodies, the secret key as a bearer token, and
//! the command's idempotency key as Stripe's `Idempotency-Key`, so a retry after a lost
//! answer gets Stripe's stored answer back instead of charging twice.
//!
//! Stripe's errors are classified by their `type` (a `card_error` is permanent, an
//! `api_error` transient), refined by Stripe's own `Stripe-Should-Retry` advice. A payment
//! that needs the customer (`requires_action`) or settles later (`processing`) leaves the
//! command `waiting` on the PaymentIntent; Stripe's signed events at `/v1/webhooks/{name}`
//! (`Stripe-Signature`) end it. Refunds that are `pending` wait the same way.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_config::{ConfigError, ProviderConfig};
use switchyard_core::{
    CallbackOutcome, ErrorClass, ErrorInfo, Name, Provider, ProviderCall, ProviderError,
    ProviderOutcome, Secret,
};
use switchyard_http::{HttpExchange, OutboundClient, OutboundRequest, Redactor, classify};
use switchyard_webhooks::{Notice, Receiver, Scheme, StripeSignature, Verified, WebhookReader};
use switchyard_worker::{
    ProviderContext, check_operations, provider_base_url, provider_secret, provider_secrets,
};
use url::Url;

use crate::payload::{Charge, Refund, RefundReason};

const DEFAULT_BASE_URL: &str = "https://api.stripe.com";

/// The entry's own keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// Defaults to Stripe's.
    base_url: Option<String>,
    /// Environment variable holding the secret key (`sk_live_…`, `sk_test_…` or a restricted
    /// `rk_…`).
    api_key_env: Option<String>,
    /// Or a file holding it.
    api_key_file: Option<PathBuf>,
    /// Environment variable holding the webhook endpoint's signing secret (`whsec_…`);
    /// several separated by whitespace while one is rolled.
    webhook_secret_env: Option<String>,
    /// Or a file holding it.
    webhook_secret_file: Option<PathBuf>,
    /// Pins `Stripe-Version`; the account's default version otherwise.
    api_version: Option<String>,
    /// Where the customer returns after authenticating a redirect-based payment method.
    /// Without it only payment methods that need no redirect are allowed.
    return_url: Option<String>,
}

/// Takes payments through Stripe.
#[derive(Debug, Clone)]
pub(crate) struct StripeProvider {
    name: Name,
    operations: Vec<Name>,
    payment_intents: Url,
    refunds: Url,
    api_key: Secret<String>,
    api_version: Option<HeaderValue>,
    return_url: Option<String>,
    client: OutboundClient,
    redactor: Redactor,
}

impl StripeProvider {
    /// The provider and the receiver of its events.
    pub(crate) fn from_config(
        config: &ProviderConfig,
        index: usize,
        ctx: &ProviderContext,
    ) -> Result<(Self, Receiver), ConfigError> {
        let key = ProviderConfig::key(index);
        let opts: Options = config.parse_options(index)?;
        let base = provider_base_url(index, opts.base_url.as_deref(), DEFAULT_BASE_URL)?;
        let join = |path: &str| {
            base.join(path)
                .map_err(|e| ConfigError::invalid(format!("{key}.base_url"), e.to_string()))
        };
        let (payment_intents, refunds) = (join("v1/payment_intents")?, join("v1/refunds")?);
        let Some((name, api_key)) = provider_secret(
            index,
            "api_key",
            opts.api_key_env.as_deref(),
            opts.api_key_file.as_deref(),
        )?
        else {
            return Err(ConfigError::invalid(
                format!("{key}.api_key_env"),
                "Stripe needs a secret key: set api_key_env or api_key_file",
            ));
        };
        let api_key = Secret::new(api_key.expose().trim().to_owned());
        if !["sk_", "rk_"]
            .iter()
            .any(|p| api_key.expose().starts_with(p))
        {
            return Err(ConfigError::invalid(
                name,
                "a Stripe secret key starts with sk_ (or rk_ for a restricted key); a publishable pk_ key cannot charge",
            ));
        }
        let Some((_, signers)) = provider_secrets(
            index,
            "webhook_secret",
            opts.webhook_secret_env.as_deref(),
            opts.webhook_secret_file.as_deref(),
            StripeSignature::new,
        )?
        else {
            return Err(ConfigError::invalid(
                format!("{key}.webhook_secret_env"),
                "Stripe ends waiting payments by webhook: set webhook_secret_env or webhook_secret_file to the endpoint's signing secret",
            ));
        };
        let api_version = opts
            .api_version
            .map(|v| {
                HeaderValue::from_str(&v)
                    .map_err(|e| ConfigError::invalid(format!("{key}.api_version"), e.to_string()))
            })
            .transpose()?;
        if let Some(url) = &opts.return_url {
            Url::parse(url)
                .map_err(|e| ConfigError::invalid(format!("{key}.return_url"), e.to_string()))?;
        }
        check_operations(config, index, &["charge", "refund"])?;
        let receiver = Receiver {
            scheme: Scheme::Stripe(signers),
            reader: Arc::new(EventReader),
        };
        let provider = Self {
            name: config.name.clone(),
            operations: config.operations.names().to_vec(),
            payment_intents,
            refunds,
            api_key,
            api_version,
            return_url: opts.return_url,
            client: ctx.client(index)?,
            redactor: ctx.redactor.clone(),
        };
        Ok((provider, receiver))
    }

    /// Creates and confirms a PaymentIntent. The form's order is fixed, so every attempt
    /// sends the same bytes under the same key (Stripe refuses a key reused with other
    /// parameters).
    fn charge_form(&self, charge: &Charge, call: &ProviderCall) -> String {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("amount", &charge.amount.to_string())
            .append_pair("currency", &charge.currency)
            .append_pair("payment_method", &charge.payment_method)
            .append_pair("confirm", "true");
        if let Some(customer) = &charge.customer {
            form.append_pair("customer", customer);
        }
        if let Some(description) = &charge.description {
            form.append_pair("description", description);
        }
        match &self.return_url {
            Some(url) => form.append_pair("return_url", url),
            None => form
                .append_pair("automatic_payment_methods[enabled]", "true")
                .append_pair("automatic_payment_methods[allow_redirects]", "never"),
        };
        form.append_pair(
            "metadata[switchyard_command_id]",
            &call.command.id.to_string(),
        );
        form.finish()
    }

    fn refund_form(refund: &Refund, call: &ProviderCall) -> String {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("payment_intent", &refund.payment_reference);
        if let Some(amount) = refund.amount {
            form.append_pair("amount", &amount.to_string());
        }
        if let Some(reason) = refund.reason {
            form.append_pair(
                "reason",
                match reason {
                    RefundReason::Duplicate => "duplicate",
                    RefundReason::Fraudulent => "fraudulent",
                    RefundReason::RequestedByCustomer => "requested_by_customer",
                },
            );
        }
        form.append_pair(
            "metadata[switchyard_command_id]",
            &call.command.id.to_string(),
        );
        form.finish()
    }

    /// POSTs `form` to `url` under the command's idempotency key; the object Stripe returned.
    async fn post(
        &self,
        url: &Url,
        form: String,
        call: &ProviderCall,
    ) -> Result<Value, ProviderError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", self.api_key.expose())) {
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        if let Ok(v) = HeaderValue::from_str(&call.idempotency_key.to_string()) {
            headers.insert(HeaderName::from_static("idempotency-key"), v);
        }
        if let Some(version) = &self.api_version {
            headers.insert(HeaderName::from_static("stripe-version"), version.clone());
        }
        let request = OutboundRequest {
            method: Method::POST,
            url: url.clone(),
            headers,
            body: Bytes::from(form),
            timeout: None,
        };
        let exchange = self
            .client
            .send_recorded(request, call, &self.redactor)
            .await?;
        if !exchange.status.is_success() {
            return Err(stripe_error(&exchange, &self.redactor));
        }
        // Stripe said yes: an answer we cannot read leaves the outcome unknown.
        serde_json::from_slice(&exchange.body).map_err(|e| {
            ProviderError::unreadable_answer(format!("Stripe's answer is not JSON: {e}"))
        })
    }
}

/// Classifies a Stripe error answer: by HTTP status first (as every provider), then by
/// Stripe's error `type`, then by its `Stripe-Should-Retry` advice. The code is the most
/// specific one Stripe gives (`decline_code`, else `code`, else `type`).
fn stripe_error(exchange: &HttpExchange, redactor: &Redactor) -> ProviderError {
    let mut err = match classify(exchange.status, &exchange.headers, &exchange.body) {
        Err(e) => e,
        Ok(()) => return ProviderError::new(ErrorClass::Permanent, "stripe_error", "not an error"),
    };
    let body: Value = serde_json::from_slice(&exchange.body).unwrap_or(Value::Null);
    let error = &body["error"];
    let Some(kind) = error["type"].as_str() else {
        return err;
    };
    err.class = match kind {
        "card_error" => ErrorClass::Permanent,
        "api_error" => ErrorClass::Transient,
        "idempotency_error" if exchange.status == StatusCode::CONFLICT => ErrorClass::Transient,
        "idempotency_error" => ErrorClass::Permanent,
        _ => err.class,
    };
    let should_retry = exchange
        .headers
        .get("stripe-should-retry")
        .and_then(|v| v.to_str().ok());
    match should_retry {
        // A declined card stays declined, whatever the header says.
        Some("true") if kind != "card_error" => err.class = ErrorClass::Transient,
        Some("false") => err.class = ErrorClass::Permanent,
        _ => {}
    }
    if err.class != ErrorClass::Transient {
        err.retry_after = None;
    }
    err.code = ["decline_code", "code"]
        .iter()
        .find_map(|f| error[*f].as_str())
        .unwrap_or(kind)
        .to_owned();
    let message = error["message"].as_str().unwrap_or("no message");
    err.message = redactor.text(&format!(
        "Stripe answered {} ({kind}): {message}",
        exchange.status.as_u16()
    ));
    err
}

/// A PaymentIntent's answer: the kind's result when it is done, `waiting` while Stripe or
/// the customer still has to act, a permanent failure when it cannot succeed.
fn payment_outcome(intent: &Value) -> Result<ProviderOutcome, ProviderError> {
    let id = object_id(intent, "pi_")?;
    match intent["status"].as_str().unwrap_or_default() {
        "succeeded" | "requires_capture" => Ok(ProviderOutcome::Completed {
            result: payment_result(intent),
            reference: Some(id),
        }),
        "processing" | "requires_action" => Ok(ProviderOutcome::Waiting { reference: id }),
        status => Err(ProviderError::new(
            ErrorClass::Permanent,
            payment_failure_code(intent),
            format!("the PaymentIntent is {status}"),
        )),
    }
}

fn payment_result(intent: &Value) -> Value {
    json!({
        "payment_intent": intent["id"],
        "status": intent["status"],
        "amount": intent["amount"],
        "currency": intent["currency"],
        "charge": intent["latest_charge"],
    })
}

fn payment_failure_code(intent: &Value) -> String {
    let error = &intent["last_payment_error"];
    ["decline_code", "code"]
        .iter()
        .find_map(|f| error[*f].as_str())
        .unwrap_or("payment_failed")
        .to_owned()
}

fn refund_outcome(refund: &Value) -> Result<ProviderOutcome, ProviderError> {
    let id = object_id(refund, "re_")?;
    match refund["status"].as_str().unwrap_or_default() {
        "succeeded" => Ok(ProviderOutcome::Completed {
            result: refund_result(refund),
            reference: Some(id),
        }),
        "pending" | "requires_action" => Ok(ProviderOutcome::Waiting { reference: id }),
        status => Err(ProviderError::new(
            ErrorClass::Permanent,
            refund["failure_reason"]
                .as_str()
                .unwrap_or("refund_failed")
                .to_owned(),
            format!("the refund is {status}"),
        )),
    }
}

fn refund_result(refund: &Value) -> Value {
    json!({
        "refund": refund["id"],
        "status": refund["status"],
        "amount": refund["amount"],
        "currency": refund["currency"],
        "payment_intent": refund["payment_intent"],
    })
}

/// The object's `id`, which must look like Stripe's (`prefix…`).
fn object_id(object: &Value, prefix: &str) -> Result<String, ProviderError> {
    object["id"]
        .as_str()
        .filter(|id| id.starts_with(prefix))
        .map(str::to_owned)
        .ok_or_else(|| {
            ProviderError::unreadable_answer(format!("Stripe's answer has no {prefix}… id"))
        })
}

#[async_trait::async_trait]
impl Provider for StripeProvider {
    fn name(&self) -> &Name {
        &self.name
    }

    fn operations(&self) -> &[Name] {
        &self.operations
    }

    async fn call(&self, call: &ProviderCall) -> Result<ProviderOutcome, ProviderError> {
        match call.command.operation.as_str() {
            "charge" => {
                let charge: Charge = call.payload()?;
                let form = self.charge_form(&charge, call);
                payment_outcome(&self.post(&self.payment_intents, form, call).await?)
            }
            "refund" => {
                let refund: Refund = call.payload()?;
                let form = Self::refund_form(&refund, call);
                refund_outcome(&self.post(&self.refunds, form, call).await?)
            }
            other => Err(ProviderError::new(
                ErrorClass::Invalid,
                "unsupported_operation",
                format!("Stripe offers charge and refund, not {other}"),
            )),
        }
    }
}

/// Reads Stripe's events: PaymentIntents and refunds reaching an end.
#[derive(Debug)]
struct EventReader;

impl WebhookReader for EventReader {
    fn read(&self, delivery: &Verified<'_>) -> Result<Option<Notice>, String> {
        let event: Value =
            serde_json::from_slice(delivery.body()).map_err(|e| format!("not JSON: {e}"))?;
        if event["object"] != "event" {
            return Err("not a Stripe event".to_owned());
        }
        let id = event["id"].as_str().ok_or("the event has no id")?;
        let kind = event["type"].as_str().ok_or("the event has no type")?;
        let object = &event["data"]["object"];
        let outcome = match kind {
            "payment_intent.succeeded" | "payment_intent.amount_capturable_updated" => {
                CallbackOutcome::Succeeded {
                    result: payment_result(object),
                }
            }
            "payment_intent.payment_failed" | "payment_intent.canceled" => {
                let message = object["last_payment_error"]["message"]
                    .as_str()
                    .unwrap_or("the payment failed");
                CallbackOutcome::Failed {
                    error: ErrorInfo::new(
                        ErrorClass::Permanent,
                        payment_failure_code(object),
                        format!("Stripe: {message}"),
                    ),
                }
            }
            "payment_intent.processing" | "payment_intent.requires_action" => {
                CallbackOutcome::Pending
            }
            "refund.created" | "refund.updated" | "refund.failed" | "charge.refund.updated" => {
                match object["status"].as_str().unwrap_or_default() {
                    "succeeded" => CallbackOutcome::Succeeded {
                        result: refund_result(object),
                    },
                    "failed" | "canceled" => CallbackOutcome::Failed {
                        error: ErrorInfo::new(
                            ErrorClass::Permanent,
                            object["failure_reason"].as_str().unwrap_or("refund_failed"),
                            "Stripe reported the refund failed",
                        ),
                    },
                    _ => CallbackOutcome::Pending,
                }
            }
            // Everything else an endpoint may be subscribed to is acknowledged and dropped.
            _ => return Ok(None),
        };
        let reference = object["id"]
            .as_str()
            .ok_or("the event's object has no id")?;
        Ok(Some(Notice {
            // Stripe resends an event with the same id: receipts de-duplicate on it.
            id: id.to_owned(),
            reference: reference.to_owned(),
            outcome,
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn exchange(status: u16, body: Value, should_retry: Option<&str>) -> HttpExchange {
        let mut headers = HeaderMap::new();
        if let Some(v) = should_retry {
            headers.insert("stripe-should-retry", HeaderValue::from_str(v).unwrap());
        }
        HttpExchange {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: Bytes::from(body.to_string()),
            duration: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn stripe_errors_are_classified_by_type_and_advice() {
        let r = Redactor::default();
        let declined = json!({"error": {"type": "card_error", "code": "card_declined",
            "decline_code": "insufficient_funds", "message": "Your card has insufficient funds."}});
        let e = stripe_error(&exchange(402, declined.clone(), Some("true")), &r);
        assert_eq!(
            (e.class, e.code.as_str()),
            (ErrorClass::Permanent, "insufficient_funds")
        );
        let api = json!({"error": {"type": "api_error", "message": "boom"}});
        assert_eq!(
            stripe_error(&exchange(500, api, None), &r).class,
            ErrorClass::Transient
        );
        let limited = json!({"error": {"type": "invalid_request_error", "code": "rate_limit"}});
        let e = stripe_error(&exchange(429, limited, None), &r);
        assert_eq!(
            (e.class, e.code.as_str()),
            (ErrorClass::Transient, "rate_limit")
        );
        let reused = json!({"error": {"type": "idempotency_error", "message": "Keys for idempotent requests can only be used with the same parameters"}});
        assert_eq!(
            stripe_error(&exchange(400, reused.clone(), None), &r).class,
            ErrorClass::Permanent
        );
        assert_eq!(
            stripe_error(&exchange(409, reused, None), &r).class,
            ErrorClass::Transient
        );
        let lock = json!({"error": {"type": "invalid_request_error", "code": "lock_timeout"}});
        assert_eq!(
            stripe_error(&exchange(400, lock, Some("true")), &r).class,
            ErrorClass::Transient
        );
        let auth = json!({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_****1234"}});
        assert_eq!(
            stripe_error(&exchange(401, auth, None), &r).class,
            ErrorClass::Permanent
        );
        // Card numbers in a message are masked.
        let leaky = json!({"error": {"type": "card_error", "message": "card 4242424242424242"}});
        assert!(
            !stripe_error(&exchange(402, leaky, None), &r)
                .message
                .contains("4242424242424242")
        );
    }

    #[test]
    fn payment_intents_complete_wait_or_fail_by_status() {
        let pi = |status: &str| json!({"id": "pi_1", "status": status, "amount": 500, "currency": "usd"});
        assert!(matches!(
            payment_outcome(&pi("succeeded")),
            Ok(ProviderOutcome::Completed { .. })
        ));
        for waiting in ["processing", "requires_action"] {
            assert!(matches!(
                payment_outcome(&pi(waiting)),
                Ok(ProviderOutcome::Waiting { .. })
            ));
        }
        let e = payment_outcome(&pi("canceled")).unwrap_err();
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(payment_outcome(&json!({"status": "succeeded"})).is_err());
    }
}
