//! `type = "easypost"`: labels and tracking through EasyPost's v2 API (JSON bodies wrapped in
//! their object's name, HTTP basic auth with the API key as the username and no password,
//! ounces and inches).
//!
//! - `create_label`: `POST /v2/shipments` rates the shipment, the payload's rule picks one of
//!   its rates, and `POST /v2/shipments/{id}/buy` buys it; the command completes with the
//!   label and its tracking code, the shipment id as its reference.
//! - `track`: `POST /v2/trackers`; a tracker already `delivered` completes at once, one that
//!   `failure`d, went `return_to_sender`, was `cancelled` or is in `error` fails, anything
//!   else leaves the command `waiting` on the tracker id (`trk_…`). EasyPost's
//!   `tracker.updated` Events, signed `X-Hmac-Signature: hmac-sha256-hex=…` with the
//!   webhook secret, end it at this provider's `/v1/webhooks/{name}`.
//!
//! EasyPost takes no idempotency key. Buying is the effect that must not happen twice, so a
//! shipment carries the command's idempotency key as its `reference`, and every attempt first
//! asks for the shipment by that reference (EasyPost accepts a reference where an id goes):
//! a shipment already bought completes the command without buying again, one not yet bought
//! is bought, and only when there is none is a new one created. EasyPost itself returns the
//! existing tracker for a tracking code and carrier it already tracks, so `track` repeats
//! safely. The payload's own `reference` is printed on the label (`options.print_custom_1`).

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_config::{ConfigError, ProviderConfig};
use switchyard_core::{
    CallbackOutcome, ErrorClass, ErrorInfo, Name, Provider, ProviderCall, ProviderError,
    ProviderOutcome, Secret,
};
use switchyard_http::{HttpExchange, OutboundClient, OutboundRequest, Redactor, classify};
use switchyard_webhooks::{HmacHexSignature, Notice, Receiver, Scheme, Verified, WebhookReader};
use switchyard_worker::{
    ProviderContext, check_operations, provider_base_url, provider_secret, provider_secrets,
};
use url::Url;

use crate::payload::{Address, CreateLabel, Parcel, RateRule, Track};

/// EasyPost's API, unless the entry says otherwise (a proxy, a test double).
const DEFAULT_BASE_URL: &str = "https://api.easypost.com";

/// Grams in an avoirdupois ounce.
const GRAMS_PER_OUNCE: f64 = 28.349_523_125;
/// Centimetres in an inch.
const CM_PER_INCH: f64 = 2.54;

/// Tracker statuses that end a `track` command in failure.
const FAILED_STATUSES: [&str; 4] = ["failure", "return_to_sender", "cancelled", "error"];

/// The entry's own keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// Defaults to EasyPost's.
    base_url: Option<String>,
    /// Environment variable holding the API key (`EZAK…` production, `EZTK…` test).
    api_key_env: Option<String>,
    /// Or a file holding it.
    api_key_file: Option<PathBuf>,
    /// Environment variable holding the webhook secret set on the EasyPost webhook (several,
    /// separated by whitespace, while it is rotated). Required when `track` is offered.
    webhook_secret_env: Option<String>,
    /// Or a file holding it.
    webhook_secret_file: Option<PathBuf>,
    /// Carrier accounts (`ca_…`) to rate with; EasyPost uses all of the account's when empty.
    #[serde(default)]
    carrier_accounts: Vec<String>,
}

/// Buys labels and tracks parcels through EasyPost.
#[derive(Debug, Clone)]
pub(crate) struct EasyPostProvider {
    name: Name,
    operations: Vec<Name>,
    /// The base URL, ending in `/`.
    base: Url,
    api_key: Secret<String>,
    carrier_accounts: Vec<String>,
    client: OutboundClient,
    redactor: Redactor,
}

impl EasyPostProvider {
    /// The provider and, when it has a webhook secret, its `tracker.updated` receiver.
    pub(crate) fn from_config(
        config: &ProviderConfig,
        index: usize,
        ctx: &ProviderContext,
    ) -> Result<(Self, Option<Receiver>), ConfigError> {
        let key = ProviderConfig::key(index);
        let opts: Options = config.parse_options(index)?;
        check_operations(config, index, &["create_label", "track"])?;
        let base = provider_base_url(index, opts.base_url.as_deref(), DEFAULT_BASE_URL)?;
        let Some((_, api_key)) = provider_secret(
            index,
            "api_key",
            opts.api_key_env.as_deref(),
            opts.api_key_file.as_deref(),
        )?
        else {
            return Err(ConfigError::invalid(
                format!("{key}.api_key_env"),
                "EasyPost needs an API key: set api_key_env or api_key_file",
            ));
        };
        let api_key = Secret::new(api_key.expose().trim().to_owned());
        if let Some(bad) = opts
            .carrier_accounts
            .iter()
            .find(|id| !is_object_id(id, "ca_"))
        {
            return Err(ConfigError::invalid(
                format!("{key}.carrier_accounts"),
                format!("{bad:?} is not an EasyPost carrier account id (ca_…)"),
            ));
        }
        let receiver = Self::receiver(index, &opts)?;
        if receiver.is_none()
            && config
                .operations
                .names()
                .iter()
                .any(|o| o.as_str() == "track")
        {
            return Err(ConfigError::invalid(
                format!("{key}.webhook_secret_env"),
                "track completes by EasyPost's signed webhooks: set webhook_secret_env or \
                 webhook_secret_file to the secret of the EasyPost webhook",
            ));
        }
        let provider = Self {
            name: config.name.clone(),
            operations: config.operations.names().to_vec(),
            base,
            api_key,
            carrier_accounts: opts.carrier_accounts,
            client: ctx.client(index)?,
            redactor: ctx.redactor.clone(),
        };
        Ok((provider, receiver))
    }

    /// The webhook receiver: one signer per secret in the secret's text.
    fn receiver(index: usize, opts: &Options) -> Result<Option<Receiver>, ConfigError> {
        let Some((_, signers)) = provider_secrets(
            index,
            "webhook_secret",
            opts.webhook_secret_env.as_deref(),
            opts.webhook_secret_file.as_deref(),
            HmacHexSignature::easypost,
        )?
        else {
            return Ok(None);
        };
        Ok(Some(Receiver {
            scheme: Scheme::HmacHex(signers),
            reader: Arc::new(EventReader),
        }))
    }

    /// `{base}{path}`.
    fn url(&self, path: &str) -> Result<Url, ProviderError> {
        self.base
            .join(path)
            .map_err(|e| ProviderError::new(ErrorClass::Permanent, "invalid_url", e.to_string()))
    }

    /// One recorded request with EasyPost's credentials; a JSON body makes it a JSON POST.
    async fn send(
        &self,
        call: &ProviderCall,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<HttpExchange, ProviderError> {
        let mut headers = HeaderMap::new();
        let basic = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{}:", self.api_key.expose()),
        );
        if let Ok(mut v) = HeaderValue::from_str(&format!("Basic {basic}")) {
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        if let Ok(v) = HeaderValue::from_str(&call.command.id.to_string()) {
            headers.insert(HeaderName::from_static("x-switchyard-command-id"), v);
        }
        let request = match body {
            Some(body) => OutboundRequest::post_json(
                url,
                headers,
                Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
            ),
            None => {
                let mut request = OutboundRequest::new(method, url);
                request.headers = headers;
                request
            }
        };
        self.client
            .send_recorded(request, call, &self.redactor)
            .await
    }

    /// The answer's JSON body, or the failure classified, its code refined by EasyPost's.
    fn answer(&self, exchange: &HttpExchange) -> Result<Value, ProviderError> {
        if let Err(e) = classify(exchange.status, &exchange.headers, &exchange.body) {
            return Err(refine(e, &exchange.body, &self.redactor));
        }
        serde_json::from_slice(&exchange.body)
            .map_err(|e| invalid_response(format!("EasyPost's answer is not JSON: {e}")))
    }

    /// The shipment this command created on an earlier attempt, found by its reference.
    async fn earlier_shipment(&self, call: &ProviderCall) -> Result<Option<Value>, ProviderError> {
        let url = self.url(&format!("v2/shipments/{}", call.idempotency_key))?;
        let exchange = self.send(call, Method::GET, url, None).await?;
        if exchange.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        self.answer(&exchange).map(Some)
    }

    /// The `{"shipment": …}` body for `label`, the same bytes on every attempt.
    fn shipment_body(&self, label: &CreateLabel, call: &ProviderCall) -> Value {
        let mut shipment = json!({
            "reference": call.idempotency_key.to_string(),
            "to_address": address(&label.to),
            "from_address": address(&label.from),
            "parcel": parcel(&label.parcel),
        });
        if !self.carrier_accounts.is_empty() {
            shipment["carrier_accounts"] = json!(self.carrier_accounts);
        }
        if let Some(reference) = label.reference.as_deref() {
            shipment["options"] = json!({"print_custom_1": reference});
        }
        json!({ "shipment": shipment })
    }

    async fn create_label(&self, call: &ProviderCall) -> Result<ProviderOutcome, ProviderError> {
        let label: CreateLabel = call.payload()?;
        let shipment = match self.earlier_shipment(call).await? {
            Some(shipment) => shipment,
            None => {
                let url = self.url("v2/shipments")?;
                let body = self.shipment_body(&label, call);
                let exchange = self.send(call, Method::POST, url, Some(&body)).await?;
                self.answer(&exchange)?
            }
        };
        let id = shipment_id(&shipment)?;
        if is_bought(&shipment) {
            // Bought on an earlier attempt whose answer was lost: never buy twice.
            return label_outcome(&shipment, &id);
        }
        let rates: Vec<Rate> = shipment["rates"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|r| serde_json::from_value(r.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        let rate = choose(&rates, &label.rate)
            .ok_or_else(|| no_matching_rate(&label.rate, &rates, &shipment))?;
        let url = self.url(&format!("v2/shipments/{id}/buy"))?;
        let body = json!({"rate": {"id": rate.id}});
        let exchange = self.send(call, Method::POST, url, Some(&body)).await?;
        let bought = self.answer(&exchange)?;
        label_outcome(&bought, &id)
    }

    async fn track(&self, call: &ProviderCall) -> Result<ProviderOutcome, ProviderError> {
        let track: Track = call.payload()?;
        let mut tracker = json!({"tracking_code": track.tracking_code});
        if let Some(carrier) = track.carrier.as_deref() {
            tracker["carrier"] = json!(carrier);
        }
        let url = self.url("v2/trackers")?;
        let exchange = self
            .send(
                call,
                Method::POST,
                url,
                Some(&json!({ "tracker": tracker })),
            )
            .await?;
        let tracker = self.answer(&exchange)?;
        let id = tracker["id"]
            .as_str()
            .filter(|id| is_object_id(id, "trk_"))
            .ok_or_else(|| invalid_response("EasyPost's tracker has no id"))?
            .to_owned();
        match tracker_outcome(&tracker) {
            CallbackOutcome::Succeeded { result } => Ok(ProviderOutcome::Completed {
                result,
                reference: Some(id),
            }),
            CallbackOutcome::Failed { error } => {
                Err(ProviderError::new(error.class, error.code, error.message))
            }
            CallbackOutcome::Pending => Ok(ProviderOutcome::Waiting { reference: id }),
        }
    }
}

#[async_trait::async_trait]
impl Provider for EasyPostProvider {
    fn name(&self) -> &Name {
        &self.name
    }

    fn operations(&self) -> &[Name] {
        &self.operations
    }

    async fn call(&self, call: &ProviderCall) -> Result<ProviderOutcome, ProviderError> {
        match call.command.operation.as_str() {
            "create_label" => self.create_label(call).await,
            "track" => self.track(call).await,
            other => Err(ProviderError::new(
                ErrorClass::Invalid,
                "unknown_operation",
                format!("EasyPost offers create_label and track, not {other:?}"),
            )),
        }
    }
}

/// One of a shipment's rates, as EasyPost lists them (prices are decimal strings).
#[derive(Debug, Clone, Deserialize)]
struct Rate {
    id: String,
    carrier: String,
    service: String,
    rate: String,
    #[serde(default)]
    delivery_days: Option<u32>,
}

impl Rate {
    fn price(&self) -> Option<f64> {
        self.rate
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|p| p.is_finite())
    }
}

/// The rate `rule` picks: the lowest price; the fewest delivery days, then the lowest price
/// (rates without an estimate last); or the named carrier and service, case-insensitively
/// (the cheapest, when several carrier accounts offer it). Rates without a readable price
/// are never picked.
fn choose<'a>(rates: &'a [Rate], rule: &RateRule) -> Option<&'a Rate> {
    let priced = rates.iter().filter_map(|r| r.price().map(|p| (r, p)));
    let by_price = |a: &(&Rate, f64), b: &(&Rate, f64)| a.1.total_cmp(&b.1);
    match rule {
        RateRule::Cheapest => priced.min_by(by_price),
        RateRule::Fastest => priced.min_by(|a, b| {
            let days = |r: &Rate| r.delivery_days.unwrap_or(u32::MAX);
            days(a.0).cmp(&days(b.0)).then(by_price(a, b))
        }),
        RateRule::Service { carrier, service } => priced
            .filter(|(r, _)| {
                r.carrier.eq_ignore_ascii_case(carrier.trim())
                    && r.service.eq_ignore_ascii_case(service.trim())
            })
            .min_by(by_price),
    }
    .map(|(r, _)| r)
}

/// Nothing to buy: a permanent failure naming what was offered (and the carriers' complaints).
fn no_matching_rate(rule: &RateRule, rates: &[Rate], shipment: &Value) -> ProviderError {
    let offered: Vec<String> = rates
        .iter()
        .map(|r| format!("{} {}", r.carrier, r.service))
        .collect();
    let wanted = match rule {
        RateRule::Cheapest | RateRule::Fastest => "any rate".to_owned(),
        RateRule::Service { carrier, service } => format!("{carrier} {service}"),
    };
    let mut message = format!(
        "EasyPost offered no {wanted}; offered: [{}]",
        offered.join(", ")
    );
    let complaints: Vec<&str> = shipment["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["message"].as_str()).collect())
        .unwrap_or_default();
    if !complaints.is_empty() {
        message.push_str(&format!("; carriers said: {}", complaints.join("; ")));
    }
    ProviderError::new(ErrorClass::Permanent, "no_matching_rate", message)
}

/// EasyPost's address fields (the same names as the payload's).
fn address(a: &Address) -> Value {
    let mut v = json!({
        "name": a.name,
        "street1": a.street1,
        "city": a.city,
        "zip": a.zip,
        "country": a.country,
    });
    for (key, value) in [
        ("street2", &a.street2),
        ("state", &a.state),
        ("phone", &a.phone),
    ] {
        if let Some(value) = value {
            v[key] = json!(value);
        }
    }
    v
}

/// Rounds up to one decimal place (EasyPost's precision): a parcel is never under-declared.
fn tenths_up(x: f64) -> f64 {
    // The small allowance keeps exact conversions (25.4 cm) from rounding up a tenth.
    ((x * 10.0) - 1e-9).ceil() / 10.0
}

/// The parcel in ounces and inches.
fn parcel(p: &Parcel) -> Value {
    json!({
        "weight": tenths_up(f64::from(p.weight_grams) / GRAMS_PER_OUNCE),
        "length": tenths_up(f64::from(p.length_cm) / CM_PER_INCH),
        "width": tenths_up(f64::from(p.width_cm) / CM_PER_INCH),
        "height": tenths_up(f64::from(p.height_cm) / CM_PER_INCH),
    })
}

/// Whether `id` looks like an EasyPost object id with `prefix` (safe in a URL path).
fn is_object_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 64 && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

fn shipment_id(shipment: &Value) -> Result<String, ProviderError> {
    shipment["id"]
        .as_str()
        .filter(|id| is_object_id(id, "shp_"))
        .map(str::to_owned)
        .ok_or_else(|| invalid_response("EasyPost's shipment has no id"))
}

fn is_bought(shipment: &Value) -> bool {
    shipment["postage_label"].is_object() && shipment["selected_rate"].is_object()
}

/// The completion of a bought shipment.
fn label_outcome(shipment: &Value, id: &str) -> Result<ProviderOutcome, ProviderError> {
    if !is_bought(shipment) {
        return Err(invalid_response(
            "EasyPost's answer to the purchase has no postage label",
        ));
    }
    let rate = &shipment["selected_rate"];
    let tracking_code = shipment["tracking_code"]
        .as_str()
        .ok_or_else(|| invalid_response("EasyPost's bought shipment has no tracking code"))?;
    Ok(ProviderOutcome::Completed {
        result: json!({
            "shipment_id": id,
            "tracking_code": tracking_code,
            "label_url": shipment["postage_label"]["label_url"],
            "carrier": rate["carrier"],
            "service": rate["service"],
            "rate": rate["rate"],
            "currency": rate["currency"],
            "tracker_id": shipment["tracker"]["id"],
        }),
        reference: Some(id.to_owned()),
    })
}

/// How a tracker stands, for `track`'s first answer and for `tracker.updated` Events.
fn tracker_outcome(tracker: &Value) -> CallbackOutcome {
    let status = tracker["status"].as_str().unwrap_or("unknown");
    if status == "delivered" {
        return CallbackOutcome::Succeeded {
            result: json!({
                "tracker_id": tracker["id"],
                "tracking_code": tracker["tracking_code"],
                "carrier": tracker["carrier"],
                "status": status,
                "status_detail": tracker["status_detail"],
                "signed_by": tracker["signed_by"],
                "public_url": tracker["public_url"],
            }),
        };
    }
    if FAILED_STATUSES.contains(&status) {
        let detail = tracker["status_detail"].as_str().unwrap_or("unknown");
        return CallbackOutcome::Failed {
            error: ErrorInfo::new(
                ErrorClass::Permanent,
                format!("shipment_{status}"),
                format!("EasyPost reported the shipment {status} ({detail})"),
            ),
        };
    }
    CallbackOutcome::Pending
}

/// A 2xx answer of EasyPost's that cannot be read: it may have acted, so `unknown`.
fn invalid_response(message: impl Into<String>) -> ProviderError {
    ProviderError::unreadable_answer(message)
}

/// `classify`'s verdict with EasyPost's own error code (`SHIPMENT.POSTAGE.FAILURE`, …) and
/// message, redacted, when the body is EasyPost's error shape
/// `{"error": {"code", "message", "errors": [...]}}`.
fn refine(mut e: ProviderError, body: &[u8], redactor: &Redactor) -> ProviderError {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return e;
    };
    let error = &v["error"];
    let code = error["code"].as_str().filter(|c| {
        !c.is_empty()
            && c.len() <= 64
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
    });
    if let Some(code) = code {
        e.code = code.to_owned();
    }
    if let Some(message) = error["message"].as_str() {
        let mut text = format!(
            "EasyPost answered {}: {message}",
            e.http_status.unwrap_or(0)
        );
        let fields: Vec<String> = error["errors"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|f| match (f["field"].as_str(), f["message"].as_str()) {
                        (Some(field), Some(m)) => Some(format!("{field}: {m}")),
                        (None, Some(m)) => Some(m.to_owned()),
                        _ => f.as_str().map(str::to_owned),
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !fields.is_empty() {
            text.push_str(&format!(" ({})", fields.join("; ")));
        }
        e.message = redactor.text(&text);
    }
    e
}

/// Reads EasyPost's webhook Events: `tracker.*` Events about a tracker become notices about
/// it, de-duplicated on the Event id (the same on EasyPost's retries of a delivery); Events
/// about anything else are acknowledged and dropped.
#[derive(Debug)]
struct EventReader;

impl WebhookReader for EventReader {
    fn read(&self, delivery: &Verified<'_>) -> Result<Option<Notice>, String> {
        let event: Value = serde_json::from_slice(delivery.body())
            .map_err(|e| format!("not an EasyPost Event: {e}"))?;
        if event["object"] != "Event" {
            return Err("not an EasyPost Event".to_owned());
        }
        let id = event["id"].as_str().ok_or("an Event without an id")?;
        let description = event["description"].as_str().unwrap_or_default();
        let tracker = &event["result"];
        if !description.starts_with("tracker.") || tracker["object"] != "Tracker" {
            return Ok(None);
        }
        let reference = tracker["id"].as_str().ok_or("a Tracker without an id")?;
        Ok(Some(Notice {
            id: id.to_owned(),
            reference: reference.to_owned(),
            outcome: tracker_outcome(tracker),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn rate(carrier: &str, service: &str, price: &str, days: Option<u32>) -> Rate {
        Rate {
            id: format!("rate_{carrier}{service}"),
            carrier: carrier.to_owned(),
            service: service.to_owned(),
            rate: price.to_owned(),
            delivery_days: days,
        }
    }

    fn rates() -> Vec<Rate> {
        vec![
            rate("USPS", "Priority", "9.10", Some(2)),
            rate("USPS", "GroundAdvantage", "5.93", Some(5)),
            rate("UPS", "NextDayAir", "31.20", Some(1)),
            rate("FedEx", "Broken", "n/a", Some(0)),
            rate("UPS", "Ground", "12.00", None),
        ]
    }

    #[test]
    fn rules_pick_the_cheapest_the_fastest_or_the_named_service() {
        let rates = rates();
        let pick = |rule: RateRule| choose(&rates, &rule).map(|r| r.service.clone());
        assert_eq!(pick(RateRule::Cheapest).as_deref(), Some("GroundAdvantage"));
        assert_eq!(pick(RateRule::Fastest).as_deref(), Some("NextDayAir"));
        let service = |carrier: &str, service: &str| RateRule::Service {
            carrier: carrier.into(),
            service: service.into(),
        };
        assert_eq!(
            pick(service("usps", "PRIORITY")).as_deref(),
            Some("Priority")
        );
        assert_eq!(pick(service("USPS", "Express")), None);
        // Unpriced rates are never bought, even when named.
        assert_eq!(pick(service("FedEx", "Broken")), None);
        assert!(choose(&[], &RateRule::Cheapest).is_none());
    }

    #[test]
    fn equally_fast_rates_go_to_the_cheaper_and_unknown_estimates_come_last() {
        let rates = vec![
            rate("UPS", "Ground", "1.00", None),
            rate("UPS", "2ndDayAir", "20.00", Some(2)),
            rate("USPS", "Priority", "9.00", Some(2)),
        ];
        assert_eq!(
            choose(&rates, &RateRule::Fastest).unwrap().service,
            "Priority"
        );
        let none_match = no_matching_rate(
            &RateRule::Service {
                carrier: "DHL".into(),
                service: "Express".into(),
            },
            &rates,
            &json!({"messages": [{"carrier": "DHL", "message": "no account"}]}),
        );
        assert_eq!(none_match.class, ErrorClass::Permanent);
        assert_eq!(none_match.code, "no_matching_rate");
        assert!(none_match.message.contains("USPS Priority"), "{none_match}");
        assert!(none_match.message.contains("no account"), "{none_match}");
    }

    #[test]
    fn parcels_convert_to_ounces_and_inches_rounded_up_to_a_tenth() {
        let v = parcel(&Parcel {
            weight_grams: 1000,
            length_cm: 25,
            width_cm: 254,
            height_cm: 1,
        });
        // 1000 g = 35.27 oz; 25 cm = 9.84 in; 254 cm = 100 in exactly; 1 cm = 0.39 in.
        assert_eq!(
            v,
            json!({"weight": 35.3, "length": 9.9, "width": 100.0, "height": 0.4})
        );
    }

    #[test]
    fn easypost_errors_refine_the_classified_code() {
        let body = br#"{"error":{"code":"SHIPMENT.POSTAGE.FAILURE","message":"Rate not found","errors":[{"field":"rate","message":"unknown id"},"plain"]}}"#;
        let e = classify(StatusCode::UNPROCESSABLE_ENTITY, &HeaderMap::new(), body).unwrap_err();
        let e = refine(e, body, &Redactor::default());
        assert_eq!(e.class, ErrorClass::Permanent);
        assert_eq!(e.code, "SHIPMENT.POSTAGE.FAILURE");
        assert_eq!(e.http_status, Some(422));
        assert!(e.message.contains("rate: unknown id; plain"), "{e}");

        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("7"));
        let body = br#"{"error":{"code":"RATE_LIMITED","message":"slow down"}}"#;
        let e = classify(StatusCode::TOO_MANY_REQUESTS, &headers, body).unwrap_err();
        let e = refine(e, body, &Redactor::default());
        assert_eq!(e.class, ErrorClass::Transient);
        assert_eq!(e.code, "RATE_LIMITED");
        assert_eq!(e.retry_after, Some(std::time::Duration::from_secs(7)));

        // Not EasyPost's shape, or an unusable code: classify's verdict stands.
        let e = classify(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"<html>").unwrap_err();
        assert_eq!(refine(e, b"<html>", &Redactor::default()).code, "http_502");
        let body = br#"{"error":{"code":"bad code with spaces","message":"x"}}"#;
        let e = classify(StatusCode::BAD_REQUEST, &HeaderMap::new(), body).unwrap_err();
        assert_eq!(refine(e, body, &Redactor::default()).code, "http_400");
    }

    fn event(description: &str, result: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "object": "Event", "id": "evt_1", "description": description, "result": result,
        }))
        .unwrap()
    }

    fn read(body: &[u8]) -> Result<Option<Notice>, String> {
        let signer = HmacHexSignature::easypost("whsec_test").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-hmac-signature",
            HeaderValue::from_str(&signer.sign(body)).unwrap(),
        );
        let receiver = Receiver {
            scheme: Scheme::HmacHex(vec![signer]),
            reader: Arc::new(EventReader),
        };
        receiver
            .receive(&headers, body, 0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn tracker_events_become_notices_about_their_tracker() {
        let tracker = |status: &str| {
            json!({"object": "Tracker", "id": "trk_1", "tracking_code": "EZ4000000004",
                   "status": status, "status_detail": "arrived_at_destination", "carrier": "USPS"})
        };
        let notice = read(&event("tracker.updated", tracker("delivered")))
            .unwrap()
            .unwrap();
        assert_eq!(
            (notice.id.as_str(), notice.reference.as_str()),
            ("evt_1", "trk_1")
        );
        let CallbackOutcome::Succeeded { result } = notice.outcome else {
            panic!("delivered succeeds");
        };
        assert_eq!(result["tracking_code"], "EZ4000000004");
        for status in ["failure", "return_to_sender", "error"] {
            let notice = read(&event("tracker.updated", tracker(status)))
                .unwrap()
                .unwrap();
            let CallbackOutcome::Failed { error } = notice.outcome else {
                panic!("{status} fails");
            };
            assert_eq!(error.class, ErrorClass::Permanent);
            assert_eq!(error.code, format!("shipment_{status}"));
        }
        for status in ["pre_transit", "in_transit", "out_for_delivery", "unknown"] {
            let notice = read(&event("tracker.updated", tracker(status)))
                .unwrap()
                .unwrap();
            assert_eq!(notice.outcome, CallbackOutcome::Pending, "{status}");
        }
        // About something else: acknowledged, nothing to do.
        let batch = event("batch.updated", json!({"object": "Batch", "id": "batch_1"}));
        assert_eq!(read(&batch), Ok(None));
        // Verified, but not an Event.
        assert!(read(br#"{"object":"Tracker"}"#).is_err());
        assert!(read(b"not json").is_err());
    }

    /// Builds the entry `extra` describes, with an API key file; the error text on failure.
    fn build(extra: &str) -> Result<(EasyPostProvider, Option<Receiver>), String> {
        let dir = std::env::temp_dir().join(format!(
            "sy-easypost-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (key, secret) = (dir.join("key"), dir.join("secret"));
        std::fs::write(&key, "EZTKtest\n").unwrap();
        std::fs::write(&secret, "new_secret old_secret\n").unwrap();
        let toml = format!(
            "[[providers]]\nname = \"easypost\"\nkind = \"shipping\"\ntype = \"easypost\"\n\
             api_key_file = \"{}\"\n{}\n",
            key.display(),
            extra.replace("SECRET_FILE", &secret.display().to_string())
        );
        let config = switchyard_config::Config::from_toml_str(&toml).map_err(|e| e.to_string())?;
        let ctx = ProviderContext {
            outbound: switchyard_http::OutboundSettings::default(),
            redactor: Redactor::default(),
        };
        let built =
            EasyPostProvider::from_config(&config.providers[0], 0, &ctx).map_err(|e| e.to_string());
        std::fs::remove_dir_all(dir).unwrap();
        built
    }

    #[test]
    fn entries_are_checked_when_loaded() {
        let (provider, receiver) = build("operations = [\"create_label\"]").unwrap();
        assert!(receiver.is_none());
        assert_eq!(provider.api_key.expose(), "EZTKtest");
        assert_eq!(provider.base.as_str(), "https://api.easypost.com/");
        let err = build("operations = [\"track\"]").unwrap_err();
        assert!(err.contains("webhook_secret_env"), "{err}");
        let err =
            build("operations = [\"create_label\"]\ncarrier_accounts = [\"usps\"]").unwrap_err();
        assert!(err.contains("carrier_accounts"), "{err}");
        let err = build("operations = [\"refund\"]").unwrap_err();
        assert!(err.contains("operations"), "{err}");
        let err =
            build("operations = [\"track\"]\nbase_url = \"http://api.easypost.com\"").unwrap_err();
        assert!(err.contains("base_url"), "{err}");
        // Both secrets of a rotation verify.
        let (_, receiver) = build(
            "operations = [\"create_label\", \"track\"]\nwebhook_secret_file = \"SECRET_FILE\"",
        )
        .unwrap();
        let receiver = receiver.unwrap();
        let body = event(
            "tracker.updated",
            json!({"object": "Tracker", "id": "trk_1", "status": "in_transit"}),
        );
        for secret in ["new_secret", "old_secret"] {
            let mut h = HeaderMap::new();
            let sig = HmacHexSignature::easypost(secret).unwrap().sign(&body);
            h.insert("x-hmac-signature", HeaderValue::from_str(&sig).unwrap());
            assert!(receiver.receive(&h, &body, 0).unwrap().is_some());
        }
    }

    #[test]
    fn ids_used_in_paths_are_checked() {
        assert!(is_object_id("shp_0123abcdef", "shp_"));
        assert!(!is_object_id("shp_", "shp_"));
        assert!(!is_object_id("shp_../../v2/x", "shp_"));
        assert!(!is_object_id("trk_1", "shp_"));
    }
}
