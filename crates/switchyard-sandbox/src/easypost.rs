//! EasyPost's v2 Shipments and Trackers, as documented: `POST /v2/shipments` (a
//! `{"shipment": {to_address, from_address, parcel, …}}` JSON body; the answer lists the
//! shipment's `rates`), `GET /v2/shipments/{id or reference}`, `POST /v2/shipments/{id}/buy`
//! (`{"rate": {"id"}}`; the answer has the `postage_label`, `tracking_code`, `selected_rate`
//! and the shipment's `tracker`) and `POST /v2/trackers` (`{"tracker": {tracking_code,
//! carrier}}`). HTTP basic auth with an API key (`EZTK…` test, `EZAK…` production) as the
//! username; errors as `{"error": {"code", "message", "errors": [{"field", "message"}]}}`
//! with 401 for missing or malformed credentials, 404 for unknown objects and 422 for
//! missing fields, an unknown rate or a shipment bought twice. Bodies must be JSON
//! (`application/json`); weights are ounces and dimensions inches.
//!
//! Rates are deterministic, priced from the parcel's weight: USPS `GroundAdvantage` (5
//! days), USPS `Priority` (2 days) and UPS `NextDayAir` (1 day). A tracker for a tracking code
//! and carrier the account already tracks is the same tracker (as EasyPost de-duplicates
//! them); EasyPost's test tracking codes start in their documented status (`EZ1000000001`
//! `pre_transit` … `EZ4000000004` `delivered`, `EZ5000000005` `return_to_sender`,
//! `EZ6000000006` `failure`, `EZ7000000007` `unknown`). A tracker still on its way reports
//! `tracker.updated` Events to the webhook target's `easypost` endpoint, signed
//! `X-Hmac-Signature: hmac-sha256-hex=…` with the target's secret: `in_transit` at once,
//! then `delivered` after the operation time.
//!
//! Scripts apply by the `X-Switchyard-Command-Id` header to every request (a label takes
//! several); `accept:fail` ends a tracker in `failure`, `accept:silent` never reports. Each
//! label bought and each tracker created is one effect, counted under the command.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde_json::{Value, json};
use switchyard_webhooks::HmacHexSignature;

use crate::provider::{COMMAND_ID, hang, header_str};
use crate::scenario::{Finish, Step};
use crate::server::AppState;
use crate::vendor::{Attempt, Delivery, Request, deliver_later, leak, scripted_status};

/// The receiver's provider name the Events go to (`/v1/webhooks/easypost`).
const WEBHOOK_PROVIDER: &str = "easypost";

/// The emulated carriers' services: (carrier, service, base price, price per ounce, days).
const SERVICES: [(&str, &str, f64, f64, u32); 3] = [
    ("USPS", "GroundAdvantage", 4.50, 0.15, 5),
    ("USPS", "Priority", 7.90, 0.25, 2),
    ("UPS", "NextDayAir", 24.00, 0.60, 1),
];

/// EasyPost's test tracking codes and the status each starts in.
const TEST_CODES: [(&str, &str); 7] = [
    ("EZ1000000001", "pre_transit"),
    ("EZ2000000002", "in_transit"),
    ("EZ3000000003", "out_for_delivery"),
    ("EZ4000000004", "delivered"),
    ("EZ5000000005", "return_to_sender"),
    ("EZ6000000006", "failure"),
    ("EZ7000000007", "unknown"),
];

/// Where a tracker's story ends: no further updates.
const FINAL_STATUSES: [&str; 5] = [
    "delivered",
    "return_to_sender",
    "failure",
    "cancelled",
    "error",
];

/// What the emulated EasyPost accounts (one per API key) remember.
#[derive(Debug, Default)]
pub(crate) struct Store {
    inner: Mutex<Accounts>,
}

#[derive(Debug, Default)]
struct Accounts {
    /// By (API key, shipment id).
    shipments: HashMap<(String, String), Value>,
    /// (API key, reference) to the shipment id.
    references: HashMap<(String, String), String>,
    /// By (API key, carrier, tracking code): the tracker and whether its updates are under way.
    trackers: HashMap<(String, String, String), (Value, bool)>,
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, Accounts> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// EasyPost's error body.
fn error(status: StatusCode, code: &str, message: &str, errors: &[(&str, &str)]) -> Response {
    let errors: Vec<Value> = errors
        .iter()
        .map(|(field, message)| json!({"field": field, "message": message, "suggestion": null}))
        .collect();
    let body = json!({"error": {"code": code, "message": message, "errors": errors}});
    (status, axum::Json(body)).into_response()
}

fn not_found(what: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        &format!("The requested {what} could not be found."),
        &[],
    )
}

/// The API key of a basic `Authorization` header: the username, shaped like EasyPost's.
fn api_key(headers: &HeaderMap) -> Option<String> {
    let encoded = header_str(headers, AUTHORIZATION.as_str())?.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(B64.decode(encoded.trim()).ok()?).ok()?;
    let (key, _password) = decoded.split_once(':')?;
    let shaped = (key.starts_with("EZTK") || key.starts_with("EZAK"))
        && key.len() > 4
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    shaped.then(|| key.to_owned())
}

/// What every EasyPost request goes through: recorded under its command, authenticated,
/// its JSON body read (for POSTs), then its script step drawn.
struct Prelude {
    attempt: Attempt,
    key: String,
    body: Value,
    command_id: Option<String>,
}

fn prelude(
    app: &AppState,
    operation: &str,
    headers: &HeaderMap,
    body: &[u8],
    json_body: bool,
) -> Result<Prelude, Box<Response>> {
    let command_id = header_str(headers, COMMAND_ID).map(str::to_owned);
    let attempt = Attempt::begin(
        app,
        Request {
            command_id: command_id.as_deref(),
            kind: "shipping",
            operation,
            idempotency_key: None,
        },
        headers,
        body,
    );
    let Some(key) = api_key(headers) else {
        let response = if headers.contains_key(AUTHORIZATION) {
            error(
                StatusCode::UNAUTHORIZED,
                "APIKEY.INVALID",
                "The API key is malformed: send it as the basic auth username.",
                &[],
            )
        } else {
            error(
                StatusCode::UNAUTHORIZED,
                "APIKEY.REQUIRED",
                "Unauthorized. Please provide an API key as the basic auth username.",
                &[],
            )
        };
        return Err(Box::new(attempt.finish(app, response)));
    };
    if !json_body {
        return Ok(Prelude {
            attempt,
            key,
            body: Value::Null,
            command_id,
        });
    }
    let is_json = header_str(headers, CONTENT_TYPE.as_str())
        .is_some_and(|ct| ct.trim().starts_with("application/json"));
    if !is_json {
        let response = error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "REQUEST.CONTENT_TYPE.INVALID",
            "The request body must be JSON (Content-Type: application/json).",
            &[],
        );
        return Err(Box::new(attempt.finish(app, response)));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(body) if body.is_object() => Ok(Prelude {
            attempt,
            key,
            body,
            command_id,
        }),
        _ => {
            let response = error(
                StatusCode::BAD_REQUEST,
                "REQUEST.BODY.INVALID",
                "The request body is not a JSON object.",
                &[],
            );
            Err(Box::new(attempt.finish(app, response)))
        }
    }
}

/// How a script step turns into an answer: `run` executes the request (with how a tracker
/// ends), the failures answer without executing, `lost` executes and never answers.
async fn scripted(
    app: &AppState,
    step: Option<Step>,
    run: impl FnOnce(Finish) -> Response,
) -> Response {
    match step.map(Step::plain).unwrap_or(Step::Ok) {
        Step::Status(status) if status >= 400 => error(
            scripted_status(status),
            "SCRIPTED.FAILURE",
            "scripted failure",
            &[],
        ),
        Step::TooManyRequests { retry_after_secs } => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                "Too many requests.",
                &[],
            );
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
            r
        }
        Step::Hang => hang(app).await,
        Step::Leak(status) => leak(status),
        Step::Lost => {
            // Executed, and the answer lost on the way back.
            let _ = run(Finish::Succeed);
            hang(app).await
        }
        Step::Slow(delay) => {
            tokio::time::sleep(delay).await;
            run(Finish::Succeed)
        }
        Step::Accept(finish) => run(finish),
        _ => run(Finish::Succeed),
    }
}

fn id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `POST /easypost/v2/shipments`.
pub(crate) async fn create_shipment(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match prelude(&app, "create_label", &headers, &body, true) {
        Ok(p) => p,
        Err(response) => return *response,
    };
    let Prelude {
        attempt, key, body, ..
    } = p;
    let step = attempt.step;
    let response = scripted(&app, step, |_| create(&app, &key, &body)).await;
    attempt.finish(&app, response)
}

/// The address fields EasyPost needs to rate, as (field, message) problems.
fn address_problems(address: &Value, field: &'static str, problems: &mut Vec<(String, String)>) {
    if !address.is_object() {
        problems.push((field.to_owned(), "is required".to_owned()));
        return;
    }
    for name in ["street1", "city", "zip", "country"] {
        if address[name].as_str().is_none_or(|v| v.trim().is_empty()) {
            problems.push((format!("{field}.{name}"), "is required".to_owned()));
        }
    }
}

fn create(app: &AppState, key: &str, body: &Value) -> Response {
    let shipment = &body["shipment"];
    if !shipment.is_object() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "PARAMETER.REQUIRED",
            "Missing required parameter: shipment.",
            &[("shipment", "is required")],
        );
    }
    let mut problems = Vec::new();
    address_problems(&shipment["to_address"], "to_address", &mut problems);
    address_problems(&shipment["from_address"], "from_address", &mut problems);
    let parcel = &shipment["parcel"];
    match parcel["weight"].as_f64() {
        Some(w) if w > 0.0 => {}
        _ => problems.push((
            "parcel.weight".to_owned(),
            "must be a number of ounces greater than 0".to_owned(),
        )),
    }
    for dim in ["length", "width", "height"] {
        let value = &parcel[dim];
        if !value.is_null() && !value.as_f64().is_some_and(|v| v > 0.0) {
            problems.push((
                format!("parcel.{dim}"),
                "must be a number of inches greater than 0".to_owned(),
            ));
        }
    }
    if !problems.is_empty() {
        let list: Vec<(&str, &str)> = problems
            .iter()
            .map(|(f, m)| (f.as_str(), m.as_str()))
            .collect();
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "SHIPMENT.INVALID_PARAMS",
            "Unable to create shipment, one or more parameters were invalid.",
            &list,
        );
    }
    let weight = parcel["weight"].as_f64().unwrap_or(1.0);
    let shipment_id = id("shp");
    let created = now();
    let rates: Vec<Value> = SERVICES
        .iter()
        .map(|(carrier, service, base, per_oz, days)| {
            json!({
                "id": id("rate"), "object": "Rate", "mode": "test",
                "carrier": carrier, "service": service,
                "rate": format!("{:.2}", base + per_oz * weight),
                "currency": "USD",
                "delivery_days": days, "est_delivery_days": days,
                "delivery_date_guaranteed": false,
                "shipment_id": shipment_id,
                "carrier_account_id": format!("ca_{}", carrier.to_ascii_lowercase()),
                "created_at": created, "updated_at": created,
            })
        })
        .collect();
    let with_id = |v: &Value, prefix: &str, object: &str| {
        let mut v = v.clone();
        v["id"] = json!(id(prefix));
        v["object"] = json!(object);
        v
    };
    let reference = shipment["reference"].as_str().map(str::to_owned);
    let answer = json!({
        "id": shipment_id, "object": "Shipment", "mode": "test",
        "reference": reference,
        "status": "unknown",
        "to_address": with_id(&shipment["to_address"], "adr", "Address"),
        "from_address": with_id(&shipment["from_address"], "adr", "Address"),
        "parcel": with_id(parcel, "prcl", "Parcel"),
        "options": shipment["options"].as_object().cloned().unwrap_or_default(),
        "rates": rates,
        "messages": [],
        "selected_rate": null, "postage_label": null, "tracking_code": null, "tracker": null,
        "created_at": created, "updated_at": created,
    });
    {
        let mut accounts = app.easypost.lock();
        if let Some(reference) = reference {
            accounts
                .references
                .insert((key.to_owned(), reference), shipment_id.clone());
        }
        accounts
            .shipments
            .insert((key.to_owned(), shipment_id), answer.clone());
    }
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

/// `GET /easypost/v2/shipments/{id}`: by id, or by the reference given at creation.
pub(crate) async fn retrieve_shipment(
    State(app): State<Arc<AppState>>,
    Path(id_or_reference): Path<String>,
    headers: HeaderMap,
) -> Response {
    let p = match prelude(&app, "create_label", &headers, &[], false) {
        Ok(p) => p,
        Err(response) => return *response,
    };
    let key = p.key;
    let response = scripted(&app, p.attempt.step, |_| {
        let accounts = app.easypost.lock();
        let id = accounts
            .references
            .get(&(key.clone(), id_or_reference.clone()))
            .cloned()
            .unwrap_or(id_or_reference);
        match accounts.shipments.get(&(key, id)) {
            Some(shipment) => (StatusCode::OK, axum::Json(shipment.clone())).into_response(),
            None => not_found("shipment"),
        }
    })
    .await;
    p.attempt.finish(&app, response)
}

/// `POST /easypost/v2/shipments/{id}/buy`.
pub(crate) async fn buy(
    State(app): State<Arc<AppState>>,
    Path(shipment_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match prelude(&app, "create_label", &headers, &body, true) {
        Ok(p) => p,
        Err(response) => return *response,
    };
    let Prelude {
        attempt,
        key,
        body,
        command_id,
    } = p;
    let step = attempt.step;
    let response = scripted(&app, step, |_| {
        purchase(&app, &key, &shipment_id, &body, command_id.as_deref())
    })
    .await;
    attempt.finish(&app, response)
}

fn purchase(
    app: &AppState,
    key: &str,
    shipment_id: &str,
    body: &Value,
    command_id: Option<&str>,
) -> Response {
    let Some(rate_id) = body["rate"]["id"].as_str() else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "PARAMETER.REQUIRED",
            "Missing required parameter: rate.",
            &[("rate.id", "is required")],
        );
    };
    let mut accounts = app.easypost.lock();
    let Some(shipment) = accounts
        .shipments
        .get_mut(&(key.to_owned(), shipment_id.to_owned()))
    else {
        return not_found("shipment");
    };
    if !shipment["postage_label"].is_null() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "SHIPMENT.POSTAGE.EXISTS",
            "Postage already exists for this shipment.",
            &[],
        );
    }
    let rate = shipment["rates"]
        .as_array()
        .and_then(|rates| rates.iter().find(|r| r["id"] == rate_id))
        .cloned();
    let Some(rate) = rate else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "SHIPMENT.RATE.NOT_FOUND",
            "The rate is not one of this shipment's rates.",
            &[("rate.id", "unknown rate")],
        );
    };
    let carrier = rate["carrier"].as_str().unwrap_or("USPS").to_owned();
    let digits = uuid::Uuid::new_v4().as_u128() % 10u128.pow(18);
    let tracking_code = if carrier == "UPS" {
        format!("1Z{digits:016}")
            .chars()
            .take(18)
            .collect::<String>()
    } else {
        format!("9400{digits:018}")
    };
    let updated = now();
    let tracker = json!({
        "id": id("trk"), "object": "Tracker", "mode": "test",
        "tracking_code": tracking_code, "status": "pre_transit",
        "status_detail": "label_created", "signed_by": null,
        "carrier": carrier, "shipment_id": shipment_id,
        "est_delivery_date": null, "tracking_details": [],
        "public_url": format!("https://track.easypost.com/{}", id("tracker")),
        "created_at": updated, "updated_at": updated,
    });
    shipment["selected_rate"] = rate;
    shipment["tracking_code"] = json!(tracking_code);
    shipment["status"] = json!("pre_transit");
    shipment["tracker"] = tracker.clone();
    shipment["postage_label"] = json!({
        "id": id("pl"), "object": "PostageLabel",
        "label_date": updated, "label_file_type": "image/png",
        "label_resolution": 300, "label_size": "4x6",
        "label_url": format!("https://easypost-files.s3.us-west-2.amazonaws.com/files/postage_label/{}.png", id("label")),
        "created_at": updated, "updated_at": updated,
    });
    shipment["updated_at"] = json!(updated);
    let answer = shipment.clone();
    // The label's tracker is the account's: tracking its code later finds it.
    accounts.trackers.insert(
        (key.to_owned(), carrier.to_ascii_uppercase(), tracking_code),
        (tracker, false),
    );
    drop(accounts);
    app.ledger.count_effect(command_id.unwrap_or(shipment_id));
    (StatusCode::OK, axum::Json(answer)).into_response()
}

/// `POST /easypost/v2/trackers`.
pub(crate) async fn create_tracker(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match prelude(&app, "track", &headers, &body, true) {
        Ok(p) => p,
        Err(response) => return *response,
    };
    let Prelude {
        attempt,
        key,
        body,
        command_id,
    } = p;
    let step = attempt.step;
    let response = scripted(&app, step, |finish| {
        track(&app, &key, &body, command_id.as_deref(), finish)
    })
    .await;
    attempt.finish(&app, response)
}

fn track(
    app: &AppState,
    key: &str,
    body: &Value,
    command_id: Option<&str>,
    finish: Finish,
) -> Response {
    let code = body["tracker"]["tracking_code"]
        .as_str()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    let Some(code) = code else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "PARAMETER.REQUIRED",
            "Missing required parameter: tracker.tracking_code.",
            &[("tracker.tracking_code", "is required")],
        );
    };
    let test_status = TEST_CODES.iter().find(|(c, _)| *c == code).map(|(_, s)| *s);
    // Carriers are detected from the code when not given: test codes are USPS's.
    let carrier = body["tracker"]["carrier"]
        .as_str()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map_or_else(
            || {
                if code.starts_with("1Z") {
                    "UPS".to_owned()
                } else {
                    "USPS".to_owned()
                }
            },
            str::to_owned,
        );
    let entry = (
        key.to_owned(),
        carrier.to_ascii_uppercase(),
        code.to_owned(),
    );
    let (tracker, start_updates) = {
        let mut accounts = app.easypost.lock();
        match accounts.trackers.get_mut(&entry) {
            // The account already tracks it: the same tracker, no new effect.
            Some((tracker, under_way)) => {
                let start = !*under_way;
                *under_way = true;
                (tracker.clone(), start)
            }
            None => {
                let created = now();
                let status = test_status.unwrap_or("unknown");
                let tracker = json!({
                    "id": id("trk"), "object": "Tracker", "mode": "test",
                    "tracking_code": code, "status": status,
                    "status_detail": if status == "unknown" { "unknown" } else { "status_update" },
                    "signed_by": if status == "delivered" { json!("John Tester") } else { Value::Null },
                    "carrier": carrier, "shipment_id": null,
                    "est_delivery_date": null, "tracking_details": [],
                    "public_url": format!("https://track.easypost.com/{}", id("tracker")),
                    "created_at": created, "updated_at": created,
                });
                accounts.trackers.insert(entry, (tracker.clone(), true));
                drop(accounts);
                app.ledger.count_effect(command_id.unwrap_or(code));
                (tracker, true)
            }
        }
    };
    let status = tracker["status"].as_str().unwrap_or("unknown");
    if start_updates && !FINAL_STATUSES.contains(&status) {
        send_updates(app, &tracker, finish);
    }
    (StatusCode::OK, axum::Json(tracker)).into_response()
}

/// The tracker's `tracker.updated` Events from here on: `in_transit` at once, then its end
/// after the operation time (`failure` for `accept:fail`, none for `accept:silent`).
fn send_updates(app: &AppState, tracker: &Value, finish: Finish) {
    let Some(target) = app.webhooks.as_ref() else {
        return;
    };
    let Ok(signer) = HmacHexSignature::easypost(target.secret()) else {
        return;
    };
    let url = target.url(WEBHOOK_PROVIDER);
    let event = |previous: &str, status: &str, detail: &str| {
        let mut result = tracker.clone();
        let updated = now();
        result["status"] = json!(status);
        result["status_detail"] = json!(detail);
        result["updated_at"] = json!(updated);
        if status == "delivered" {
            result["signed_by"] = json!("John Tester");
        }
        result["tracking_details"] = json!([{
            "object": "TrackingDetail", "status": status, "status_detail": detail,
            "message": format!("Sandbox scan: {status}"), "datetime": updated,
            "source": result["carrier"],
            "tracking_location": {"object": "TrackingLocation", "city": "SAN FRANCISCO",
                                  "state": "CA", "country": "US", "zip": "94104"},
        }]);
        let body = json!({
            "object": "Event", "id": id("evt"), "mode": "test",
            "description": "tracker.updated",
            "previous_attributes": {"status": previous},
            "result": result,
            "status": "pending", "pending_urls": [url.clone()], "completed_urls": [],
            "user_id": "user_sandbox",
            "created_at": updated, "updated_at": updated,
        })
        .to_string();
        Delivery {
            url: url.clone(),
            headers: vec![
                ("content-type", "application/json".to_owned()),
                ("x-hmac-signature", signer.sign(body.as_bytes())),
            ],
            body,
        }
    };
    let first = tracker["status"].as_str().unwrap_or("unknown");
    let mut updates = vec![(
        Duration::ZERO,
        event(first, "in_transit", "arrived_at_facility"),
    )];
    match finish {
        Finish::Silent => {}
        Finish::Fail => updates.push((
            app.operation_time,
            event("in_transit", "failure", "delivery_exception"),
        )),
        Finish::Succeed | Finish::Early => updates.push((
            app.operation_time,
            event("in_transit", "delivered", "arrived_at_destination"),
        )),
    }
    deliver_later(app, updates);
}
