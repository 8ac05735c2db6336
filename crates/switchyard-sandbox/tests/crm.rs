//! The CRM contacts emulator over real HTTPS: upserts by email behind an API key, an
//! optional `Idempotency-Key`, and HubSpot's rate limit answer.

// Helpers outside `#[test]` fns are not covered by clippy.toml's allow-*-in-tests; a failed
// unwrap here is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use switchyard_sandbox::{CRM_API_KEY, Sandbox, SandboxConfig};
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
        _certs: certs,
    }
}

impl Harness {
    /// `PUT /v3/contacts/{encoded email}` with `properties`, and the key when given.
    fn put(&self, encoded_email: &str, key: Option<&str>, properties: Value) -> RequestBuilder {
        let mut r = self
            .client
            .put(format!(
                "{}/v3/contacts/{encoded_email}",
                self.sandbox.crm_base_url()
            ))
            .json(&json!({ "properties": properties }));
        if let Some(key) = key {
            r = r.header("X-API-Key", key);
        }
        r
    }

    async fn stats(&self) -> Value {
        self.client
            .get(format!("{}/_sandbox/stats", self.sandbox.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

async fn send(request: RequestBuilder) -> (StatusCode, Value) {
    let r = request.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn contacts_are_upserted_by_email_with_the_api_key_only() {
    let h = start().await;
    assert_eq!(
        h.sandbox.crm_base_url(),
        format!("{}/crm", h.sandbox.base_url())
    );
    let email = "ann+tag@example.com";
    let encoded = "ann%2Btag%40example.com";
    let (status, created) = send(h.put(
        encoded,
        Some(CRM_API_KEY),
        json!({"firstname": "Ann", "lastname": "Lee"}),
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.bytes().all(|b| b.is_ascii_digit()), "{id}");
    assert_eq!(created["properties"]["email"], email);
    assert_eq!(created["properties"]["firstname"], "Ann");
    assert_eq!(created["archived"], false);
    assert!(created["createdAt"].is_string());

    // An update keeps the id, the creation time and the properties it does not name.
    let (status, updated) =
        send(h.put(encoded, Some(CRM_API_KEY), json!({"firstname": "Anna"}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["id"], id.as_str());
    assert_eq!(updated["createdAt"], created["createdAt"]);
    assert_eq!(updated["properties"]["firstname"], "Anna");
    assert_eq!(updated["properties"]["lastname"], "Lee");

    let (status, read) = send(
        h.client
            .get(format!(
                "{}/v3/contacts/{encoded}",
                h.sandbox.crm_base_url()
            ))
            .header("X-API-Key", CRM_API_KEY),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["properties"]["firstname"], "Anna");

    for key in [None, Some("not-the-key")] {
        let (status, error) = send(h.put(encoded, key, json!({"firstname": "Eve"}))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{key:?}");
        assert_eq!(error["status"], "error");
        assert_eq!(error["category"], "INVALID_AUTHENTICATION");
        assert!(error["message"].is_string());
    }
    for (encoded, properties) in [
        ("not-an-email", json!({"firstname": "Ann"})),
        (encoded, json!({"age": 3})),
        (encoded, json!({"email": "bob@example.com"})),
    ] {
        let (status, error) = send(h.put(encoded, Some(CRM_API_KEY), properties.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{encoded} {properties}");
        assert_eq!(error["category"], "VALIDATION_ERROR");
    }
    let stats = h.stats().await;
    assert_eq!(stats["crm_upserts"], 2, "{stats:#}");
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_upsert() {
    let h = start().await;
    let put = |key: &'static str, name: &'static str| {
        h.put(
            "bo%40example.com",
            Some(CRM_API_KEY),
            json!({"firstname": name}),
        )
        .header("Idempotency-Key", key)
    };
    let first = put("k1", "Bo").send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = first.text().await.unwrap();
    let again = put("k1", "Bo").send().await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.text().await.unwrap(), first);
    let (status, error) = send(put("k1", "Bob")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["category"], "VALIDATION_ERROR");

    let stats = h.stats().await;
    assert_eq!(stats["crm_upserts"], 1, "{stats:#}");
    assert_eq!(stats["effects"]["k1"], 1, "{stats:#}");
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn scripted_rate_limits_and_failures_do_not_upsert() {
    let h = start().await;
    let command = uuid::Uuid::new_v4().to_string();
    let r = h
        .client
        .put(format!(
            "{}/_sandbox/scenarios/{command}",
            h.sandbox.base_url()
        ))
        .json(&json!({"steps": ["429:7", "500"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let put = || {
        h.put(
            "cy%40example.com",
            Some(CRM_API_KEY),
            json!({"firstname": "Cy"}),
        )
        .header("X-Switchyard-Command-Id", &command)
    };
    let before = chrono::Utc::now().timestamp();
    let limited = put().send().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "7");
    let reset: i64 = limited.headers()["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (before + 7..=before + 9).contains(&reset),
        "{reset} vs {before}"
    );
    let error: Value = limited.json().await.unwrap();
    assert_eq!(error["category"], "RATE_LIMITS");
    assert_eq!(error["status"], "error");

    let (status, error) = send(put()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error["status"], "error");
    assert_eq!(h.stats().await["crm_upserts"], 0);

    let (status, _) = send(put()).await;
    assert_eq!(status, StatusCode::OK);
    let stats = h.stats().await;
    assert_eq!(stats["crm_upserts"], 1, "{stats:#}");
    assert_eq!(stats["effects"][&command], 1, "{stats:#}");
    h.sandbox.shutdown().await;
}
