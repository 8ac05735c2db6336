//! The EasyPost emulator over real HTTPS: it refuses what EasyPost refuses, buys a shipment's
//! label once, and reports trackers by `tracker.updated` Events that verify with
//! Switchyard's EasyPost signature check.

// Helpers outside `#[test]` fns are not covered by clippy.toml's allow-*-in-tests; a failed
// unwrap here is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use switchyard_sandbox::{Sandbox, SandboxConfig, WebhookTarget};
use switchyard_webhooks::{HmacHexSignature, Scheme};
use tempfile::TempDir;

const KEY: &str = "EZTKsandbox_test_key";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Deliveries the test's webhook receiver got: (headers, body).
type Received = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

struct Harness {
    sandbox: Sandbox,
    client: Client,
    received: Received,
    _certs: TempDir,
}

/// A sandbox whose webhook target is a receiver in this test that records every delivery.
async fn start() -> Harness {
    let received: Received = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hooks/{provider}",
        axum::routing::post(move |headers: HeaderMap, body: bytes::Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push((headers, body.to_vec()));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let certs = tempfile::tempdir().unwrap();
    let mut config = SandboxConfig::new(certs.path().join("sandbox"));
    config.webhooks = Some(WebhookTarget {
        base_url: format!("http://127.0.0.1:{port}/hooks/"),
        secret: SECRET.to_owned(),
    });
    config.operation_time = Duration::from_millis(200);
    let sandbox = Sandbox::start(config).await.unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(sandbox.ca_pem_path()).unwrap();
    let client = Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    Harness {
        sandbox,
        client,
        received,
        _certs: certs,
    }
}

fn shipment() -> Value {
    let address = |name: &str| {
        json!({"name": name, "street1": "417 Montgomery St", "city": "San Francisco",
               "state": "CA", "zip": "94104", "country": "US"})
    };
    json!({"shipment": {
        "reference": "ref-1",
        "to_address": address("Ann"), "from_address": address("Shop"),
        "parcel": {"weight": 35.3, "length": 9.9, "width": 6.0, "height": 2.0},
    }})
}

impl Harness {
    fn url(&self, path: &str) -> String {
        format!("{}/v2/{path}", self.sandbox.easypost_base_url())
    }

    /// A JSON POST with the test key as the basic auth username.
    fn post(&self, path: &str, body: &Value, command: Option<&str>) -> RequestBuilder {
        let mut r = self
            .client
            .post(self.url(path))
            .basic_auth(KEY, None::<&str>)
            .json(body);
        if let Some(command) = command {
            r = r.header("x-switchyard-command-id", command);
        }
        r
    }

    async fn send(&self, request: RequestBuilder) -> (StatusCode, Value) {
        let r = request.send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn sandbox_json(&self, path: &str) -> Value {
        let r = self
            .client
            .get(format!("{}{path}", self.sandbox.base_url()))
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }

    /// Waits for `n` webhook deliveries.
    async fn deliveries(&self, n: usize) -> Vec<(HeaderMap, Vec<u8>)> {
        for _ in 0..100 {
            let got = self.received.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "expected {n} deliveries, got {}",
            self.received.lock().unwrap().len()
        );
    }
}

#[tokio::test]
async fn wrongly_shaped_requests_fail_as_at_easypost() {
    let h = start().await;
    let body = shipment();
    // No credentials; a bearer token; a key that is not EasyPost's shape.
    let requests = [
        h.client.post(h.url("shipments")).json(&body),
        h.client
            .post(h.url("shipments"))
            .bearer_auth(KEY)
            .json(&body),
        h.client
            .post(h.url("shipments"))
            .basic_auth("sk_test_123", None::<&str>)
            .json(&body),
    ];
    for request in requests {
        let (status, error) = h.send(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{error}");
        assert!(
            error["error"]["code"]
                .as_str()
                .unwrap()
                .starts_with("APIKEY."),
            "{error}"
        );
    }
    // Form-encoded instead of JSON; JSON that is not an object.
    let form = h
        .client
        .post(h.url("shipments"))
        .basic_auth(KEY, None::<&str>)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("shipment[parcel][weight]=10");
    let (status, _) = h.send(form).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _) = h.send(h.post("shipments", &json!([1]), None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Not wrapped in {"shipment": …}; missing required fields, each named.
    let (status, error) = h.send(h.post("shipments", &body["shipment"], None)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["code"], "PARAMETER.REQUIRED");
    let mut incomplete = shipment();
    incomplete["shipment"]["to_address"]
        .as_object_mut()
        .unwrap()
        .remove("zip");
    incomplete["shipment"]["parcel"]["weight"] = json!("heavy");
    let (status, error) = h.send(h.post("shipments", &incomplete, None)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = error["error"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["to_address.zip", "parcel.weight"], "{error}");
    // A tracker needs its tracking code.
    let (status, _) = h
        .send(h.post("trackers", &json!({"tracker": {"carrier": "USPS"}}), None))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(h.sandbox_json("/_sandbox/stats").await["total_effects"], 0);
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn a_shipment_is_rated_found_by_reference_and_bought_once() {
    let h = start().await;
    let command = uuid::Uuid::new_v4().to_string();
    let (status, created) = h
        .send(h.post("shipments", &shipment(), Some(&command)))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("shp_"), "{id}");
    let rates = created["rates"].as_array().unwrap();
    let services: Vec<(&str, &str)> = rates
        .iter()
        .map(|r| {
            (
                r["carrier"].as_str().unwrap(),
                r["service"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        services,
        [
            ("USPS", "GroundAdvantage"),
            ("USPS", "Priority"),
            ("UPS", "NextDayAir")
        ]
    );
    // Priced from the weight: 4.50 + 0.15 × 35.3 oz.
    assert_eq!(rates[0]["rate"], "9.79");

    // Found by id and by reference, with the same key only.
    for path in [format!("shipments/{id}"), "shipments/ref-1".to_owned()] {
        let (status, found) = h
            .send(h.client.get(h.url(&path)).basic_auth(KEY, None::<&str>))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(found["id"], id);
    }
    let (status, _) = h
        .send(
            h.client
                .get(h.url(&format!("shipments/{id}")))
                .basic_auth("EZTKanother_account", None::<&str>),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // An unknown rate, and a rate of no shipment: refused, nothing bought.
    for rate in [json!({"id": "rate_unknown"}), json!({})] {
        let (status, error) = h
            .send(h.post(
                &format!("shipments/{id}/buy"),
                &json!({ "rate": rate }),
                Some(&command),
            ))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    }
    let (status, _) = h
        .send(h.post(
            "shipments/shp_unknown/buy",
            &json!({"rate": {"id": rates[0]["id"]}}),
            Some(&command),
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let buy = json!({"rate": {"id": rates[1]["id"]}});
    let (status, bought) = h
        .send(h.post(&format!("shipments/{id}/buy"), &buy, Some(&command)))
        .await;
    assert_eq!(status, StatusCode::OK, "{bought}");
    assert_eq!(bought["selected_rate"]["service"], "Priority");
    assert!(
        bought["tracking_code"]
            .as_str()
            .unwrap()
            .starts_with("9400")
    );
    assert!(
        bought["postage_label"]["label_url"]
            .as_str()
            .unwrap()
            .starts_with("https://")
    );
    assert!(
        bought["tracker"]["id"]
            .as_str()
            .unwrap()
            .starts_with("trk_")
    );

    // Buying twice is an error, and the second purchase no effect.
    let (status, error) = h
        .send(h.post(&format!("shipments/{id}/buy"), &buy, Some(&command)))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["code"], "SHIPMENT.POSTAGE.EXISTS");
    let view = h
        .sandbox_json(&format!("/_sandbox/commands/{command}"))
        .await;
    assert_eq!(view["effects"], 1, "{view:#}");
    assert_eq!(view["requests"].as_array().unwrap().len(), 6);

    // Tracking the label's code finds the label's tracker.
    let code = bought["tracking_code"].as_str().unwrap();
    let (status, tracker) = h
        .send(h.post(
            "trackers",
            &json!({"tracker": {"tracking_code": code, "carrier": "USPS"}}),
            None,
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tracker["id"], bought["tracker"]["id"]);
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn trackers_report_signed_events_and_test_codes_start_in_their_status() {
    let h = start().await;
    let command = uuid::Uuid::new_v4().to_string();
    let track = |code: &str| json!({"tracker": {"tracking_code": code, "carrier": "USPS"}});
    let (status, tracker) = h
        .send(h.post("trackers", &track("EZ1000000001"), Some(&command)))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tracker["status"], "pre_transit");
    let trk = tracker["id"].as_str().unwrap().to_owned();
    // The same code again: the same tracker, no second effect.
    let (_, again) = h
        .send(h.post("trackers", &track("EZ1000000001"), Some(&command)))
        .await;
    assert_eq!(again["id"], trk.as_str());
    let view = h
        .sandbox_json(&format!("/_sandbox/commands/{command}"))
        .await;
    assert_eq!(view["effects"], 1, "{view:#}");

    // in_transit at once, delivered after the operation time, both verifiable.
    let got = h.deliveries(2).await;
    let verifier = Scheme::HmacHex(vec![HmacHexSignature::easypost(SECRET).unwrap()]);
    let forged = Scheme::HmacHex(vec![HmacHexSignature::easypost("another").unwrap()]);
    let mut statuses = Vec::new();
    for (headers, body) in &got {
        assert!(verifier.verify(headers, body, 0).is_ok());
        assert!(forged.verify(headers, body, 0).is_err());
        let event: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["object"], "Event");
        assert_eq!(event["description"], "tracker.updated");
        assert!(event["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(event["result"]["id"], trk.as_str());
        statuses.push(event["result"]["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(statuses, ["in_transit", "delivered"]);

    // Terminal test codes answer in their status and report nothing more.
    for (code, expected) in [
        ("EZ4000000004", "delivered"),
        ("EZ5000000005", "return_to_sender"),
        ("EZ6000000006", "failure"),
    ] {
        let (_, tracker) = h.send(h.post("trackers", &track(code), None)).await;
        assert_eq!(tracker["status"], expected);
    }
    // accept:fail ends in failure; accept:silent never reports.
    for (steps, code) in [
        ("accept:fail", "EZ2000000002"),
        ("accept:silent", "EZ3000000003"),
    ] {
        let command = uuid::Uuid::new_v4().to_string();
        let r = h
            .client
            .put(format!(
                "{}/_sandbox/scenarios/{command}",
                h.sandbox.base_url()
            ))
            .json(&json!({ "steps": [steps] }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let (status, _) = h
            .send(h.post("trackers", &track(code), Some(&command)))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let got = h.deliveries(5).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_after = h.received.lock().unwrap().len();
    assert_eq!(got_after, 5, "accept:silent reports in_transit only");
    let last: Vec<String> = got[2..]
        .iter()
        .map(|(_, body)| {
            let event: Value = serde_json::from_slice(body).unwrap();
            format!(
                "{} {}",
                event["result"]["tracking_code"].as_str().unwrap(),
                event["result"]["status"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        last.contains(&"EZ2000000002 failure".to_owned()),
        "{last:?}"
    );
    assert!(
        !last.iter().any(|l| l == "EZ3000000003 delivered"),
        "{last:?}"
    );
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn scripted_failures_answer_without_buying() {
    let h = start().await;
    let command = uuid::Uuid::new_v4().to_string();
    let (_, created) = h
        .send(h.post("shipments", &shipment(), Some(&command)))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let buy = json!({"rate": {"id": created["rates"][0]["id"]}});
    let r = h
        .client
        .put(format!(
            "{}/_sandbox/scenarios/{command}",
            h.sandbox.base_url()
        ))
        .json(&json!({ "steps": ["500", "429:3"] }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let (status, error) = h
        .send(h.post(&format!("shipments/{id}/buy"), &buy, Some(&command)))
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(error["error"]["code"].is_string());
    let r = h
        .post(&format!("shipments/{id}/buy"), &buy, Some(&command))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "3");
    let (status, _) = h
        .send(h.post(&format!("shipments/{id}/buy"), &buy, Some(&command)))
        .await;
    assert_eq!(status, StatusCode::OK);
    let view = h
        .sandbox_json(&format!("/_sandbox/commands/{command}"))
        .await;
    assert_eq!(view["effects"], 1, "{view:#}");
    h.sandbox.shutdown().await;
}
