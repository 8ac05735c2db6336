//! The PayPal emulator over real HTTPS: OAuth client credentials, Bearer tokens that expire,
//! orders created and captured once per `PayPal-Request-Id`, and PayPal's scripted 422.

// Helpers outside `#[test]` fns are not covered by clippy.toml's allow-*-in-tests; a failed
// unwrap here is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use switchyard_sandbox::{PAYPAL_CLIENT_ID, PAYPAL_CLIENT_SECRET, Sandbox, SandboxConfig};
use tempfile::TempDir;

struct Harness {
    sandbox: Sandbox,
    client: Client,
    _certs: TempDir,
}

async fn start() -> Harness {
    let certs = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::start(SandboxConfig::new(certs.path().join("sandbox")))
        .await
        .unwrap();
    let client = client(&sandbox, Duration::from_secs(5));
    Harness {
        sandbox,
        client,
        _certs: certs,
    }
}

fn client(sandbox: &Sandbox, timeout: Duration) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(sandbox.ca_pem_path()).unwrap();
    Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .timeout(timeout)
        .build()
        .unwrap()
}

fn order() -> Value {
    json!({"intent": "CAPTURE", "purchase_units": [
        {"reference_id": "ref-1", "amount": {"currency_code": "USD", "value": "100.00"}}]})
}

impl Harness {
    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.sandbox.paypal_base_url())
    }

    fn token_request(&self, user: &str, password: &str, form: &'static str) -> RequestBuilder {
        self.client
            .post(self.url("v1/oauth2/token"))
            .basic_auth(user, Some(password))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
    }

    async fn token(&self) -> String {
        let (status, body) = send(self.token_request(
            PAYPAL_CLIENT_ID,
            PAYPAL_CLIENT_SECRET,
            "grant_type=client_credentials",
        ))
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// A JSON POST with the token, the request id and the command id when given.
    fn post(
        &self,
        path: &str,
        token: &str,
        request_id: Option<&str>,
        command: Option<&str>,
        body: Option<&Value>,
    ) -> RequestBuilder {
        let mut r = self.client.post(self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            r = r.json(body);
        }
        if let Some(id) = request_id {
            r = r.header("PayPal-Request-Id", id);
        }
        if let Some(command) = command {
            r = r.header("X-Switchyard-Command-Id", command);
        }
        r
    }

    async fn sandbox_json(&self, method: reqwest::Method, path: &str) -> Value {
        let r = self
            .client
            .request(method, format!("{}{path}", self.sandbox.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        r.json().await.unwrap()
    }

    async fn stats(&self) -> Value {
        self.sandbox_json(reqwest::Method::GET, "/_sandbox/stats")
            .await
    }

    async fn scenario(&self, command: &str, steps: &[&str]) {
        let r = self
            .client
            .put(format!(
                "{}/_sandbox/scenarios/{command}",
                self.sandbox.base_url()
            ))
            .json(&json!({ "steps": steps }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
}

async fn send(request: RequestBuilder) -> (StatusCode, Value) {
    let r = request.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_token_endpoint_grants_client_credentials_only_to_the_app() {
    let h = start().await;
    assert_eq!(
        h.sandbox.paypal_base_url(),
        format!("{}/paypal", h.sandbox.base_url())
    );
    let (status, token) = send(h.token_request(
        PAYPAL_CLIENT_ID,
        PAYPAL_CLIENT_SECRET,
        "grant_type=client_credentials",
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(token["access_token"].as_str().unwrap().starts_with("A21AA"));
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["expires_in"], 32400);
    assert_eq!(token["app_id"], "APP-80W284485P519543T");
    assert_eq!(
        token["scope"],
        "https://uri.paypal.com/services/payments/payment"
    );
    assert!(token["nonce"].is_string());

    let (status, error) =
        send(h.token_request(PAYPAL_CLIENT_ID, "wrong", "grant_type=client_credentials")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error["error"], "invalid_client");
    assert_eq!(error["error_description"], "Client Authentication failed");
    let (status, error) = send(
        h.client
            .post(h.url("v1/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error["error"], "invalid_client");

    for form in ["grant_type=password", ""] {
        let (status, error) =
            send(h.token_request(PAYPAL_CLIENT_ID, PAYPAL_CLIENT_SECRET, form)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{form}");
        assert_eq!(error["error"], "unsupported_grant_type", "{form}");
    }
    let stats = h.stats().await;
    assert_eq!(stats["paypal_token_requests"], 5, "{stats:#}");
    assert_eq!(stats["paypal_tokens_issued"], 1, "{stats:#}");
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn orders_need_a_live_token_and_expired_ones_are_refused() {
    let h = start().await;
    let token = h.token().await;
    for bad in ["", "A21AAnot-issued-here"] {
        let (status, error) =
            send(h.post("v2/checkout/orders", bad, None, None, Some(&order()))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad:?}");
        assert_eq!(error["name"], "AUTHENTICATION_FAILURE");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("Authorization header")
        );
        assert!(error["links"].is_array());
    }
    let (status, created) =
        send(h.post("v2/checkout/orders", &token, None, None, Some(&order()))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");

    let expired = h
        .sandbox_json(reqwest::Method::POST, "/_sandbox/paypal/expire-tokens")
        .await;
    assert_eq!(expired["expired"], 1);
    let (status, error) =
        send(h.post("v2/checkout/orders", &token, None, None, Some(&order()))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error["name"], "AUTHENTICATION_FAILURE");

    // A fresh token works again.
    let token = h.token().await;
    let (status, _) = send(h.post("v2/checkout/orders", &token, None, None, Some(&order()))).await;
    assert_eq!(status, StatusCode::CREATED);
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn an_order_is_created_and_captured_once_per_request_id() {
    let h = start().await;
    let token = h.token().await;
    let command = uuid::Uuid::new_v4().to_string();

    let create = || {
        h.post(
            "v2/checkout/orders",
            &token,
            Some("create-1"),
            Some(&command),
            Some(&order()),
        )
    };
    let first = create().send().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first = first.text().await.unwrap();
    let created: Value = serde_json::from_str(&first).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 17);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    );
    assert_eq!(created["status"], "CREATED");
    let rels: Vec<&str> = created["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["rel"].as_str().unwrap())
        .collect();
    assert_eq!(rels, ["self", "approve", "update", "capture"]);
    // The same request id and body: the same order, not a second one.
    let again = create().send().await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.text().await.unwrap(), first);
    // The same request id with another body.
    let mut other = order();
    other["purchase_units"][0]["amount"]["value"] = json!("5.00");
    let (status, error) = send(h.post(
        "v2/checkout/orders",
        &token,
        Some("create-1"),
        None,
        Some(&other),
    ))
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["details"][0]["issue"], "DUPLICATE_REQUEST_ID");

    let capture_path = format!("v2/checkout/orders/{id}/capture");
    let capture = |request_id: &'static str| {
        h.post(
            &capture_path,
            &token,
            Some(request_id),
            Some(&command),
            None,
        )
        .header("content-type", "application/json")
    };
    let r = capture("capture-1").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let captured_text = r.text().await.unwrap();
    let captured: Value = serde_json::from_str(&captured_text).unwrap();
    assert_eq!(captured["id"], id.as_str());
    assert_eq!(captured["status"], "COMPLETED");
    let unit = &captured["purchase_units"][0];
    assert_eq!(unit["reference_id"], "ref-1");
    let capture_record = &unit["payments"]["captures"][0];
    assert_eq!(capture_record["status"], "COMPLETED");
    assert_eq!(
        capture_record["amount"],
        json!({"currency_code": "USD", "value": "100.00"})
    );
    assert_eq!(capture_record["id"].as_str().unwrap().len(), 17);

    // A retry with the same request id: the same capture, no second effect.
    let r = capture("capture-1").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.text().await.unwrap(), captured_text);
    // Another request id: the order is already captured.
    let (status, error) = send(capture("capture-2")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["name"], "UNPROCESSABLE_ENTITY");
    assert_eq!(error["details"][0]["issue"], "ORDER_ALREADY_CAPTURED");
    assert!(error["debug_id"].is_string());

    let (status, error) = send(h.post(
        "v2/checkout/orders/NOSUCHORDER000000/capture",
        &token,
        Some("capture-3"),
        None,
        None,
    ))
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["name"], "RESOURCE_NOT_FOUND");
    assert_eq!(error["details"][0]["issue"], "INVALID_RESOURCE_ID");

    let (status, read) = send(
        h.client
            .get(h.url(&format!("v2/checkout/orders/{id}")))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["status"], "COMPLETED");
    assert_eq!(
        read["purchase_units"][0]["payments"]["captures"][0]["id"],
        capture_record["id"]
    );

    let stats = h.stats().await;
    assert_eq!(stats["paypal_captures"], 1, "{stats:#}");
    assert_eq!(stats["total_effects"], 1, "{stats:#}");
    let view = h
        .sandbox_json(
            reqwest::Method::GET,
            &format!("/_sandbox/commands/{command}"),
        )
        .await;
    assert_eq!(view["effects"], 1, "{view:#}");
    let replayed: Vec<bool> = view["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["replayed"].as_bool().unwrap())
        .collect();
    assert_eq!(replayed, [false, true, false, true, false]);
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn malformed_orders_are_refused_with_the_fields_named() {
    let h = start().await;
    let token = h.token().await;
    let mut no_intent = order();
    no_intent.as_object_mut().unwrap().remove("intent");
    let mut no_units = order();
    no_units.as_object_mut().unwrap().remove("purchase_units");
    let mut bad_value = order();
    bad_value["purchase_units"][0]["amount"]["value"] = json!("1.234");
    for (body, field, issue) in [
        (no_intent, "/intent", "MISSING_REQUIRED_PARAMETER"),
        (no_units, "/purchase_units", "MISSING_REQUIRED_PARAMETER"),
        (
            bad_value,
            "/purchase_units/@reference_id=='ref-1'/amount/value",
            "INVALID_PARAMETER_SYNTAX",
        ),
    ] {
        let (status, error) =
            send(h.post("v2/checkout/orders", &token, Some(field), None, Some(&body))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}");
        assert_eq!(error["name"], "INVALID_REQUEST", "{field}");
        assert_eq!(error["details"][0]["field"], field, "{error}");
        assert_eq!(error["details"][0]["issue"], issue, "{error}");
    }
    // A refusal stores nothing: the request id executes once the body is fixed.
    let (status, _) = send(h.post(
        "v2/checkout/orders",
        &token,
        Some("/intent"),
        None,
        Some(&order()),
    ))
    .await;
    assert_eq!(status, StatusCode::CREATED);

    // The whole order on request.
    let (status, full) = send(
        h.post("v2/checkout/orders", &token, None, None, Some(&order()))
            .header("Prefer", "return=representation"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(full["intent"], "CAPTURE");
    assert_eq!(full["purchase_units"][0]["amount"]["value"], "100.00");
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn scripted_faults_answer_as_paypal_without_capturing() {
    let h = start().await;
    let token = h.token().await;
    let command = uuid::Uuid::new_v4().to_string();
    h.scenario(
        &command,
        &[
            "ok",
            "paypal422:PREVIOUS_REQUEST_IN_PROGRESS",
            "503",
            "429:4",
        ],
    )
    .await;
    // Token requests draw no step, even with the command's header.
    let r = h
        .token_request(
            PAYPAL_CLIENT_ID,
            PAYPAL_CLIENT_SECRET,
            "grant_type=client_credentials",
        )
        .header("X-Switchyard-Command-Id", &command)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let (status, created) = send(h.post(
        "v2/checkout/orders",
        &token,
        Some("c"),
        Some(&command),
        Some(&order()),
    ))
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let path = format!(
        "v2/checkout/orders/{}/capture",
        created["id"].as_str().unwrap()
    );
    let capture = || h.post(&path, &token, Some("cap"), Some(&command), Some(&json!({})));

    let (status, error) = send(capture()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["name"], "UNPROCESSABLE_ENTITY");
    assert_eq!(
        error["message"],
        "The requested action could not be performed, semantically incorrect, or failed business validation."
    );
    assert_eq!(error["details"][0]["issue"], "PREVIOUS_REQUEST_IN_PROGRESS");
    assert_eq!(
        error["details"][0]["description"],
        "A previous request on this resource is currently in progress. Please wait for some time and try again."
    );
    assert!(error["debug_id"].is_string());

    let (status, error) = send(capture()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error["name"], "SERVICE_UNAVAILABLE");
    let r = capture().send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "4");
    assert_eq!(h.stats().await["paypal_captures"], 0);

    let (status, captured) = send(capture()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(captured["status"], "COMPLETED");
    let view = h
        .sandbox_json(
            reqwest::Method::GET,
            &format!("/_sandbox/commands/{command}"),
        )
        .await;
    assert_eq!(view["effects"], 1, "{view:#}");
    let steps: Vec<Value> = view["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["step"].clone())
        .collect();
    assert_eq!(
        steps,
        [
            json!("ok"),
            json!("paypal422:PREVIOUS_REQUEST_IN_PROGRESS"),
            json!("503"),
            json!("429:4"),
            json!("ok"),
        ]
    );
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn a_lost_capture_is_replayed_to_the_retry() {
    let h = start().await;
    let token = h.token().await;
    let command = uuid::Uuid::new_v4().to_string();
    h.scenario(&command, &["ok", "lost"]).await;
    let (_, created) = send(h.post(
        "v2/checkout/orders",
        &token,
        Some("c"),
        Some(&command),
        Some(&order()),
    ))
    .await;
    let path = format!(
        "v2/checkout/orders/{}/capture",
        created["id"].as_str().unwrap()
    );

    let impatient = client(&h.sandbox, Duration::from_millis(500));
    let lost = impatient
        .post(h.url(&path))
        .bearer_auth(&token)
        .header("PayPal-Request-Id", "cap")
        .header("X-Switchyard-Command-Id", &command)
        .send()
        .await;
    assert!(lost.unwrap_err().is_timeout());
    assert_eq!(h.stats().await["paypal_captures"], 1);

    let (status, captured) = send(h.post(&path, &token, Some("cap"), Some(&command), None)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(captured["status"], "COMPLETED");
    let stats = h.stats().await;
    assert_eq!(stats["paypal_captures"], 1, "{stats:#}");
    assert_eq!(stats["effects"][&command], 1, "{stats:#}");
    h.sandbox.shutdown().await;
}
