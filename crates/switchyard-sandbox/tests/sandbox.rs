//! End-to-end checks of the sandbox over real HTTPS, with a client that trusts only the
//! generated CA.

// Helpers outside `#[test]` fns are not covered by clippy.toml's allow-*-in-tests; a failed
// unwrap here is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use switchyard_sandbox::{Sandbox, SandboxConfig};
use tempfile::TempDir;

struct Harness {
    sandbox: Sandbox,
    client: Client,
    _certs: TempDir,
}

async fn start_with(configure: impl FnOnce(&mut SandboxConfig)) -> Harness {
    let certs = tempfile::tempdir().unwrap();
    let mut config = SandboxConfig::new(certs.path().join("sandbox"));
    configure(&mut config);
    let sandbox = Sandbox::start(config).await.unwrap();
    let client = trusting_client(&sandbox, None);
    Harness {
        sandbox,
        client,
        _certs: certs,
    }
}

async fn start() -> Harness {
    start_with(|_| {}).await
}

/// A client whose only trust root is the sandbox's CA, read back from `ca.pem` on disk.
fn trusting_client(sandbox: &Sandbox, timeout: Option<Duration>) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(sandbox.ca_pem_path()).unwrap();
    let ca = reqwest::Certificate::from_pem(&pem).unwrap();
    let mut builder = Client::builder()
        .tls_certs_only([ca])
        .redirect(reqwest::redirect::Policy::none());
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    builder.build().unwrap()
}

impl Harness {
    async fn post(
        &self,
        op: &str,
        key: Option<&str>,
        command: Option<&str>,
        body: &str,
    ) -> Response {
        post_with(&self.client, &self.sandbox, op, key, command, body)
            .await
            .unwrap()
    }

    async fn scenario(&self, command: &str, steps: &[&str]) -> Response {
        self.client
            .put(format!(
                "{}/_sandbox/scenarios/{command}",
                self.sandbox.base_url()
            ))
            .json(&json!({ "steps": steps }))
            .send()
            .await
            .unwrap()
    }

    async fn stats(&self) -> Value {
        self.get_json("/_sandbox/stats").await
    }

    async fn command(&self, command: &str) -> Value {
        self.get_json(&format!("/_sandbox/commands/{command}"))
            .await
    }

    async fn get_json(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.sandbox.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }
}

async fn post_with(
    client: &Client,
    sandbox: &Sandbox,
    op: &str,
    key: Option<&str>,
    command: Option<&str>,
    body: &str,
) -> reqwest::Result<Response> {
    let mut request = client
        .post(format!("{}/{op}", sandbox.generic_base_url("payment")))
        .header("content-type", "application/json")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    if let Some(command) = command {
        request = request.header("X-Switchyard-Command-Id", command);
    }
    request.send().await
}

async fn error_type(response: Response) -> Value {
    let body: Value = response.json().await.unwrap();
    body["error"]["type"].clone()
}

#[tokio::test]
async fn urls_and_ca_file_describe_the_running_sandbox() {
    let h = start().await;
    let port = h.sandbox.addr().port();
    assert_ne!(port, 0);
    assert_eq!(h.sandbox.base_url(), format!("https://localhost:{port}"));
    assert_eq!(
        h.sandbox.generic_base_url("shipping"),
        format!("https://localhost:{port}/generic/shipping")
    );
    assert!(h.sandbox.ca_pem_path().ends_with("sandbox/ca.pem"));
    let on_disk = std::fs::read_to_string(h.sandbox.ca_pem_path()).unwrap();
    assert_eq!(on_disk, h.sandbox.ca_pem());

    let health = h
        .client
        .get(format!("{}/healthz", h.sandbox.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn ok_executes_once_and_replays_the_same_request() {
    let h = start().await;
    let body = r#"{"amount":1000,"currency":"eur"}"#;

    let first = h.post("charge", Some("key-1"), Some("cmd-1"), body).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_body = first.text().await.unwrap();
    let parsed: Value = serde_json::from_str(&first_body).unwrap();
    assert!(parsed["reference"].as_str().unwrap().starts_with("sbx_"));
    assert_eq!(parsed["status"], "succeeded");
    assert_eq!(parsed["operation"], "charge");
    assert_eq!(parsed["kind"], "payment");

    let stats = h.stats().await;
    assert_eq!(stats["total_effects"], 1);
    assert_eq!(stats["effects"]["key-1"], 1);

    let again = h.post("charge", Some("key-1"), Some("cmd-1"), body).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(
        again.text().await.unwrap(),
        first_body,
        "replay must be byte-identical"
    );

    let stats = h.stats().await;
    assert_eq!(stats["total_requests"], 2);
    assert_eq!(stats["total_effects"], 1);
    assert_eq!(stats["effects"]["key-1"], 1);

    let view = h.command("cmd-1").await;
    assert_eq!(view["effects"], 1);
    let requests = view["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0]["replayed"], false);
    assert_eq!(requests[1]["replayed"], true);
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn same_key_with_another_body_is_an_idempotency_error() {
    let h = start().await;
    let first = h
        .post("charge", Some("key-2"), None, r#"{"amount":1}"#)
        .await;
    assert_eq!(first.status(), StatusCode::OK);

    let other = h
        .post("charge", Some("key-2"), None, r#"{"amount":2}"#)
        .await;
    assert_eq!(other.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_type(other).await, "idempotency_error");
    assert_eq!(h.stats().await["total_effects"], 1);
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn scripted_failures_then_success_keep_one_key_one_body_one_effect() {
    let h = start().await;
    let set = h.scenario("cmd-3", &["503", "429:2", "ok"]).await;
    assert_eq!(set.status(), StatusCode::OK);
    let body = r#"{"to":"ada@example.com"}"#;

    let first = h.post("charge", Some("key-3"), Some("cmd-3"), body).await;
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    let error: Value = first.json().await.unwrap();
    assert_eq!(error["error"]["type"], "sandbox_error");
    assert_eq!(error["error"]["message"], "scripted 503");

    let second = h.post("charge", Some("key-3"), Some("cmd-3"), body).await;
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(second.headers()["retry-after"], "2");

    let third = h.post("charge", Some("key-3"), Some("cmd-3"), body).await;
    assert_eq!(third.status(), StatusCode::OK);
    assert!(third.headers().get("idempotent-replayed").is_none());

    let view = h.command("cmd-3").await;
    assert_eq!(view["command_id"], "cmd-3");
    assert_eq!(view["effects"], 1);
    let requests = view["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 3);
    let statuses: Vec<_> = requests
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [503, 429, 200]);
    for request in requests {
        assert_eq!(request["idempotency_key"], "key-3");
        assert_eq!(request["body_sha256"], requests[0]["body_sha256"]);
        assert_eq!(
            request["headers"]["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert_eq!(request["headers"]["x-switchyard-command-id"], "cmd-3");
    }
    // sha256 of the exact bytes sent.
    assert_eq!(
        requests[0]["body_sha256"].as_str().unwrap().len(),
        64,
        "hex sha256"
    );
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn unknown_steps_and_unseen_commands_are_rejected() {
    let h = start().await;
    let bad = h.scenario("cmd-x", &["ok", "explode"]).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_type(bad).await, "invalid_request_error");

    let missing = h
        .client
        .get(format!(
            "{}/_sandbox/commands/never-seen",
            h.sandbox.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn hang_makes_the_client_time_out_without_blocking_others() {
    let h = start().await;
    h.scenario("cmd-4", &["hang"]).await;
    let impatient = trusting_client(&h.sandbox, Some(Duration::from_millis(300)));

    let started = std::time::Instant::now();
    let hung = post_with(
        &impatient,
        &h.sandbox,
        "charge",
        Some("key-4"),
        Some("cmd-4"),
        "{}",
    )
    .await;
    let err = hung.expect_err("a hanging request must not be answered");
    assert!(err.is_timeout(), "expected a timeout, got {err:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Other requests are still served while the hang is pending.
    let other = h.post("charge", Some("key-other"), None, "{}").await;
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(
        h.stats().await["effects"].get("key-4"),
        None,
        "hang must not execute"
    );
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn lost_response_executes_once_and_the_retry_gets_the_replay() {
    let h = start().await;
    h.scenario("cmd-5", &["lost"]).await;
    let impatient = trusting_client(&h.sandbox, Some(Duration::from_millis(300)));
    let body = r#"{"amount":500}"#;

    let lost = post_with(
        &impatient,
        &h.sandbox,
        "charge",
        Some("key-5"),
        Some("cmd-5"),
        body,
    )
    .await;
    assert!(lost.expect_err("the answer is lost").is_timeout());

    let retry = h.post("charge", Some("key-5"), Some("cmd-5"), body).await;
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let result: Value = retry.json().await.unwrap();
    assert_eq!(result["status"], "succeeded");

    let view = h.command("cmd-5").await;
    assert_eq!(view["effects"], 1);
    assert_eq!(view["requests"].as_array().unwrap().len(), 2);
    assert_eq!(h.stats().await["effects"]["key-5"], 1);
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn accept_answers_202_with_a_reference() {
    let h = start().await;
    h.scenario("cmd-6", &["accept"]).await;
    let accepted = h.post("ship", Some("key-6"), Some("cmd-6"), "{}").await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let body: Value = accepted.json().await.unwrap();
    assert!(body["reference"].as_str().unwrap().starts_with("sbx_"));
    assert_eq!(h.command("cmd-6").await["effects"], 1);
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn polled_operations_are_pending_until_their_time_then_tell_their_end() {
    let h = start_with(|c| c.operation_time = Duration::from_millis(300)).await;
    let base = h.sandbox.polled_base_url("poller", "shipping");
    h.scenario("cmd-p2", &["accept:fail"]).await;
    let mut references = Vec::new();
    for (command, key) in [("cmd-p1", "key-p1"), ("cmd-p2", "key-p2")] {
        let accepted = h
            .client
            .post(format!("{base}/create_label"))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .header("x-switchyard-command-id", command)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(accepted.status(), StatusCode::ACCEPTED);
        let body: Value = accepted.json().await.unwrap();
        references.push(body["reference"].as_str().unwrap().to_owned());
    }
    let status = |reference: &str| {
        h.client
            .get(format!("{base}/operations/{reference}"))
            .header("x-switchyard-command-id", "cmd-p1")
            .send()
    };
    let early: Value = status(&references[0]).await.unwrap().json().await.unwrap();
    assert_eq!(
        early,
        json!({"reference": references[0], "status": "pending"})
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let done: Value = status(&references[0]).await.unwrap().json().await.unwrap();
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["result"]["reference"], references[0].as_str());
    let failed: Value = status(&references[1]).await.unwrap().json().await.unwrap();
    assert_eq!(failed["status"], "failed");
    let unknown = status("sbx_never").await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(h.command("cmd-p1").await["status_checks"], 4);
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn a_concurrent_request_with_the_same_key_gets_409() {
    let h = start().await;
    h.scenario("cmd-7", &["slow:600"]).await;
    let (slow, conflict) = futures::join!(
        h.post("charge", Some("key-7"), Some("cmd-7"), "{}"),
        async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            h.post("charge", Some("key-7"), None, "{}").await
        }
    );
    assert_eq!(slow.status(), StatusCode::OK);
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    let body: Value = conflict.json().await.unwrap();
    assert_eq!(body["error"]["type"], "idempotency_error");
    assert_eq!(body["error"]["code"], "idempotency_key_in_use");
    assert_eq!(h.stats().await["effects"]["key-7"], 1);
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn invalid_requests_are_400_and_not_executed() {
    let h = start().await;
    let no_key = h.post("charge", None, None, "{}").await;
    assert_eq!(no_key.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_type(no_key).await, "invalid_request_error");

    for body in ["[1,2]", "not json", "\"text\""] {
        let bad = h.post("charge", Some("key-8"), None, body).await;
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_type(bad).await, "invalid_request_error");
    }
    assert_eq!(h.stats().await["total_effects"], 0);
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn bearer_token_is_enforced_when_configured() {
    let h = start_with(|c| c.bearer_token = Some("s3cret".to_owned())).await;
    let url = format!("{}/charge", h.sandbox.generic_base_url("payment"));

    let anonymous = h.post("charge", Some("key-9"), Some("cmd-9"), "{}").await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    let wrong = h
        .client
        .post(&url)
        .bearer_auth("guess")
        .header("Idempotency-Key", "key-9")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let right = h
        .client
        .post(&url)
        .bearer_auth("s3cret")
        .header("Idempotency-Key", "key-9")
        .header("X-Switchyard-Command-Id", "cmd-9")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), StatusCode::OK);
    assert_eq!(h.stats().await["total_effects"], 1);

    // The token never shows up in the command view.
    let view = h.command("cmd-9").await;
    for request in view["requests"].as_array().unwrap() {
        assert!(request["headers"].get("authorization").is_none());
    }
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn failure_rate_one_fails_unscripted_requests_but_not_scripted_ones() {
    let h = start_with(|c| c.failure_rate = 1.0).await;
    let unscripted = h.post("charge", Some("key-10"), None, "{}").await;
    assert_eq!(unscripted.status(), StatusCode::SERVICE_UNAVAILABLE);

    h.scenario("cmd-10", &["ok"]).await;
    let scripted = h.post("charge", Some("key-10"), Some("cmd-10"), "{}").await;
    assert_eq!(scripted.status(), StatusCode::OK);
    assert_eq!(h.stats().await["total_effects"], 1);
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn latency_is_added_to_provider_requests() {
    let h = start_with(|c| c.latency = Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let response = h.post("charge", Some("key-11"), None, "{}").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(200));
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn a_client_without_the_ca_fails_the_handshake() {
    let h = start().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Trusts a root, just not this sandbox's: another sandbox's CA.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Sandbox::start(SandboxConfig::new(other_dir.path()))
        .await
        .unwrap();
    let stranger = Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(other.ca_pem().as_bytes()).unwrap()])
        .build()
        .unwrap();

    let err = stranger
        .get(format!("{}/healthz", h.sandbox.base_url()))
        .send()
        .await
        .expect_err("an untrusted certificate must be refused");
    assert!(
        err.is_connect(),
        "expected a TLS/connect error, got {err:?}"
    );
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");

    // And a client with only the platform's roots.
    let default_roots = Client::builder().build().unwrap();
    let err = default_roots
        .get(format!("{}/healthz", h.sandbox.base_url()))
        .send()
        .await
        .expect_err("the sandbox CA is not a public root");
    assert!(
        err.is_connect(),
        "expected a TLS/connect error, got {err:?}"
    );
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
    assert_eq!(h.stats().await["total_requests"], 0);

    other.shutdown().await;
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_hanging_requests_promptly() {
    let h = start().await;
    h.scenario("cmd-12", &["hang"]).await;
    let client = h.client.clone();
    let base = h.sandbox.generic_base_url("payment");
    let pending = tokio::spawn(async move {
        client
            .post(format!("{base}/charge"))
            .header("Idempotency-Key", "key-12")
            .header("X-Switchyard-Command-Id", "cmd-12")
            .body("{}")
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::time::timeout(Duration::from_secs(3), h.sandbox.shutdown())
        .await
        .expect("shutdown must not wait for the hang");
    let _ = pending.await;
}

#[tokio::test]
async fn the_sendgrid_emulator_refuses_what_sendgrid_refuses() {
    let h = start().await;
    let url = format!("{}/v3/mail/send", h.sandbox.sendgrid_base_url());
    let good = json!({
        "personalizations": [{"to": [{"email": "ann@example.com"}]}],
        "from": {"email": "shop@example.com"},
        "subject": "Hi",
        "content": [{"type": "text/plain", "value": "Hi"}, {"type": "text/html", "value": "<p>Hi</p>"}],
    });
    let send = |key: Option<&str>, content_type: &str, body: String| {
        let mut r = h
            .client
            .post(&url)
            .header("content-type", content_type)
            .body(body);
        if let Some(key) = key {
            r = r.bearer_auth(key);
        }
        r.send()
    };
    let accepted = send(Some("SG.key"), "application/json", good.to_string())
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    assert!(accepted.headers().contains_key("x-message-id"));
    assert!(accepted.bytes().await.unwrap().is_empty());

    for key in [None, Some("not-a-sendgrid-key")] {
        let r = send(key, "application/json", good.to_string())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let body: Value = r.json().await.unwrap();
        assert!(body["errors"][0]["message"].is_string());
    }
    let form = send(
        Some("SG.key"),
        "application/x-www-form-urlencoded",
        "to=ann".into(),
    )
    .await
    .unwrap();
    assert_eq!(form.status(), StatusCode::BAD_REQUEST);

    let mut broken = Vec::new();
    let mut b = good.clone();
    b.as_object_mut().unwrap().remove("personalizations");
    broken.push((b, "personalizations"));
    let mut b = good.clone();
    b["from"] = json!({"email": "nobody"});
    broken.push((b, "from"));
    let mut b = good.clone();
    b.as_object_mut().unwrap().remove("subject");
    broken.push((b, "subject"));
    let mut b = good.clone();
    b["content"] =
        json!([{"type": "text/html", "value": "<p>Hi</p>"}, {"type": "text/plain", "value": "Hi"}]);
    broken.push((b, "content"));
    for (body, field) in broken {
        let r = send(Some("SG.key"), "application/json", body.to_string())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{field}");
        let errors: Value = r.json().await.unwrap();
        assert!(
            errors["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["field"].as_str().is_some_and(|f| f.starts_with(field))),
            "{field}: {errors}"
        );
    }
    // Every accepted request sent once: SendGrid has no idempotency key.
    assert_eq!(h.stats().await["total_effects"], 1);
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn the_twilio_emulator_refuses_what_twilio_refuses() {
    let h = start().await;
    let url = format!(
        "{}/2010-04-01/Accounts/AC123/Messages.json",
        h.sandbox.twilio_base_url()
    );
    let send = |account: &str, form: &'static str| {
        h.client
            .post(&url)
            .basic_auth(account, Some("token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
    };
    let created = send("AC123", "To=%2B14155550100&From=%2B15005550006&Body=Hi")
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let message: Value = created.json().await.unwrap();
    assert!(message["sid"].as_str().unwrap().starts_with("SM"));
    assert_eq!(message["status"], "queued");

    // Another account's credentials, and a malformed request, each with Twilio's code.
    for (account, form, status, code) in [
        (
            "AC999",
            "To=%2B14155550100&From=%2B15005550006&Body=Hi",
            401,
            20003,
        ),
        (
            "AC123",
            "To=4155550100&From=%2B15005550006&Body=Hi",
            400,
            21211,
        ),
        ("AC123", "To=%2B14155550100&Body=Hi", 400, 21603),
        ("AC123", "To=%2B14155550100&From=%2B15005550006", 400, 21602),
    ] {
        let r = send(account, form).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{form}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], code, "{form}");
    }
    let json_body = h
        .client
        .post(&url)
        .basic_auth("AC123", Some("token"))
        .json(&json!({"To": "+14155550100"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_body.status(), StatusCode::BAD_REQUEST);
    assert_eq!(h.stats().await["total_effects"], 1);
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn the_stripe_emulator_refuses_what_stripe_refuses_and_keeps_keys_as_stripe_does() {
    let h = start().await;
    let url = format!("{}/v1/payment_intents", h.sandbox.stripe_base_url());
    let form = "amount=2000&currency=usd&payment_method=pm_card_visa&confirm=true\
                &automatic_payment_methods%5Benabled%5D=true\
                &automatic_payment_methods%5Ballow_redirects%5D=never";
    let send = |key: Option<&'static str>, idem: Option<&'static str>, body: String| {
        let mut r = h
            .client
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        if let Some(i) = idem {
            r = r.header("idempotency-key", i);
        }
        r.send()
    };
    let created = send(Some("sk_test_abcdefgh"), Some("k1"), form.to_owned())
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::OK);
    let intent: Value = created.json().await.unwrap();
    assert!(intent["id"].as_str().unwrap().starts_with("pi_"));
    assert_eq!(intent["status"], "succeeded");
    assert_eq!(intent["object"], "payment_intent");

    // The same key and body: the stored answer, replayed.
    let replay = send(Some("sk_test_abcdefgh"), Some("k1"), form.to_owned())
        .await
        .unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let again: Value = replay.json().await.unwrap();
    assert_eq!(again["id"], intent["id"]);

    // (api key, idempotency key, body) → (status, error type, code).
    let cases = [
        (
            None,
            Some("k2"),
            form.to_owned(),
            401,
            "invalid_request_error",
            None,
        ),
        (
            Some("pk_test_abcdefgh"),
            Some("k2"),
            form.to_owned(),
            401,
            "invalid_request_error",
            Some("api_key_invalid"),
        ),
        (
            Some("sk_test_abcdefgh"),
            Some("k1"),
            form.replace("2000", "3000"),
            400,
            "idempotency_error",
            None,
        ),
        (
            Some("sk_test_abcdefgh"),
            None,
            form.to_owned(),
            400,
            "invalid_request_error",
            Some("idempotency_key_missing"),
        ),
        (
            Some("sk_test_abcdefgh"),
            Some("k3"),
            format!("{form}&colour=blue"),
            400,
            "invalid_request_error",
            Some("parameter_unknown"),
        ),
        (
            Some("sk_test_abcdefgh"),
            Some("k4"),
            "amount=2000&currency=usd&payment_method=pm_card_visa&confirm=true".to_owned(),
            400,
            "invalid_request_error",
            Some("parameter_missing"),
        ),
        (
            Some("sk_test_abcdefgh"),
            Some("k5"),
            form.replace("2000", "20"),
            400,
            "invalid_request_error",
            Some("amount_too_small"),
        ),
        (
            Some("sk_test_abcdefgh"),
            Some("k6"),
            form.replace("pm_card_visa", "pm_card_chargeDeclined"),
            402,
            "card_error",
            Some("card_declined"),
        ),
    ];
    for (key, idem, body, status, kind, code) in cases {
        let r = send(key, idem, body.clone()).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
        assert_eq!(r.headers()["stripe-should-retry"], "false", "{body}");
        let error: Value = r.json().await.unwrap();
        assert_eq!(error["error"]["type"], kind, "{body}");
        if let Some(code) = code {
            assert_eq!(error["error"]["code"], code, "{body}");
        }
    }
    // A JSON body is not Stripe's encoding.
    let json_body = h
        .client
        .post(&url)
        .bearer_auth("sk_test_abcdefgh")
        .header("idempotency-key", "k7")
        .json(&json!({"amount": 2000, "currency": "usd"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_body.status(), StatusCode::BAD_REQUEST);
    // A refused request stores nothing: its key executes once fixed.
    let fixed = send(Some("sk_test_abcdefgh"), Some("k5"), form.to_owned())
        .await
        .unwrap();
    assert_eq!(fixed.status(), StatusCode::OK);

    // Refunds: of a charged intent, not beyond what was charged.
    let refunds = format!("{}/v1/refunds", h.sandbox.stripe_base_url());
    let refund = |idem: &'static str, amount: u64| {
        h.client
            .post(&refunds)
            .bearer_auth("sk_test_abcdefgh")
            .header("idempotency-key", idem)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "payment_intent={}&amount={amount}",
                intent["id"].as_str().unwrap()
            ))
            .send()
    };
    let r: Value = refund("r1", 1500).await.unwrap().json().await.unwrap();
    assert_eq!(r["status"], "succeeded");
    assert!(r["id"].as_str().unwrap().starts_with("re_"));
    let r = refund("r2", 1000).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let error: Value = r.json().await.unwrap();
    assert_eq!(error["error"]["code"], "amount_too_large");
    // Three charges executed (k1, the decline k6, k5) and one refund.
    assert_eq!(h.stats().await["total_effects"], 4);
    h.sandbox.shutdown().await;
}
