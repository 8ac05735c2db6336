//! Integrations by configuration alone (issue 13): the shipped examples (a `crm` kind with
//! its schema and provider, PayPal's Orders API as operations added to `payment`, Twilio's
//! Messages API with signed status callbacks) loaded by binaries built before the config was
//! written, against the sandbox's emulators of those APIs and the real broker.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use switchyard_core::Status;
use switchyard_e2e::binary;
use switchyard_sandbox::{CRM_API_KEY, PAYPAL_CLIENT_ID, PAYPAL_CLIENT_SECRET};
use switchyard_testing::{
    TOKEN, TWILIO_TOKEN, TestDatabase, TestFleet, TestFleetOptions, free_port,
};
use tokio::process::{Child, Command};
use uuid::Uuid;

/// An example config with its real URLs pointed at the sandbox and the sandbox's CA trusted.
fn example(name: &str, fleet_urls: &[(&str, String)], ca: &std::path::Path) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/providers")
        .join(name);
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (real, sandbox) in fleet_urls {
        assert!(text.contains(real), "{name} mentions {real}");
        text = text.replace(real, sandbox);
    }
    text.replace(
        "type = \"http\"\n",
        &format!("type = \"http\"\nca_file = \"{}\"\n", ca.display()),
    )
}

struct Fleet {
    fleet: TestFleet,
    config: std::path::PathBuf,
    ingress: String,
    ledger: String,
    crm_metrics: String,
    /// Trusts the sandbox's CA.
    sandbox: reqwest::Client,
    children: Vec<Child>,
    dir: std::path::PathBuf,
    database: TestDatabase,
}

impl Fleet {
    async fn start() -> Self {
        // The ingress's port is known before the config: Twilio signs the callback URL.
        let probe = TestFleet::start_with(TestFleetOptions {
            in_process: false,
            ..Default::default()
        })
        .await;
        let port = probe.ingress_port;
        let sandbox = &probe.sandbox;
        let ca = sandbox.ca_pem_path().to_owned();
        let callback = format!("http://127.0.0.1:{port}");
        let extra = [
            example(
                "crm-contacts.toml",
                &[("https://api.crm.example/crm", sandbox.crm_base_url())],
                &ca,
            ),
            example(
                "paypal-orders.toml",
                &[(
                    "https://api-m.sandbox.paypal.com",
                    sandbox.paypal_base_url(),
                )],
                &ca,
            ),
            example(
                "twilio-messages.toml",
                &[
                    ("https://api.twilio.com", sandbox.twilio_base_url()),
                    ("https://switchyard.example.com", callback),
                ],
                &ca,
            ),
        ]
        .join("\n");
        // The same API with a client secret PayPal refuses: the token endpoint's answer.
        let refused = example(
            "paypal-orders.toml",
            &[(
                "https://api-m.sandbox.paypal.com",
                sandbox.paypal_base_url(),
            )],
            &ca,
        )
        .replacen("name = \"paypal\"", "name = \"paypal_refused\"", 1)
        .replace("PAYPAL_CLIENT_SECRET", "PAYPAL_WRONG_SECRET");
        let extra = format!("{extra}\n{refused}");
        let (ledger_port, crm_port) = (free_port(), free_port());
        // Five processes share the journal and the ledger: on PostgreSQL, as in production.
        let database = TestDatabase::postgres().await;
        let sqlite = format!(
            "database_url = \"{}\"",
            probe.config.ledger.database_url.expose()
        );
        assert!(probe.config_toml.contains(&sqlite));
        let toml = probe
            .config_toml
            .replace(&sqlite, &format!("database_url = \"{}\"", database.url))
            .replacen(
                "[ledger]\nlisten = \"127.0.0.1:0\"",
                &format!("[ledger]\nlisten = \"127.0.0.1:{ledger_port}\""),
                1,
            )
            + "\n"
            + &extra;
        let dir =
            std::env::temp_dir().join(format!("switchyard-byconfig-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("switchyard.toml");
        std::fs::write(&config, &toml).unwrap();
        let spawn = |bin: &str, args: &[&str], log: &str, env: &[(&str, String)]| {
            let mut c = Command::new(binary(bin));
            c.args(args)
                .arg("--config")
                .arg(&config)
                .env("PAYPAL_CLIENT_ID", PAYPAL_CLIENT_ID)
                .env("PAYPAL_CLIENT_SECRET", PAYPAL_CLIENT_SECRET)
                .env("PAYPAL_WRONG_SECRET", "not-the-secret")
                .env("CRM_API_KEY", CRM_API_KEY)
                .env("TWILIO_AUTH_TOKEN", TWILIO_TOKEN)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join(log)).unwrap())
                .kill_on_drop(true);
            for (k, v) in env {
                c.env(k, v);
            }
            c.spawn().unwrap()
        };
        let children = vec![
            spawn("switchyard-ingress", &[], "ingress.log", &[]),
            spawn("switchyard-ledger", &[], "ledger.log", &[]),
            spawn(
                "switchyard-worker",
                &["--kind", "crm"],
                "crm.log",
                &[("SWITCHYARD_WORKER__LISTEN", format!("127.0.0.1:{crm_port}"))],
            ),
            spawn("switchyard-payment", &[], "payment.log", &[]),
            spawn("switchyard-notification", &[], "notification.log", &[]),
        ];
        let sandbox = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(probe.sandbox.ca_pem().as_bytes()).unwrap(),
            )
            .build()
            .unwrap();
        let fleet = Self {
            sandbox,
            fleet: probe,
            config,
            ingress: format!("http://127.0.0.1:{port}"),
            ledger: format!("http://127.0.0.1:{ledger_port}"),
            crm_metrics: format!("http://127.0.0.1:{crm_port}/metrics"),
            children,
            dir,
            database,
        };
        fleet.wait_ready().await;
        fleet
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let http = self.fleet.http();
        loop {
            let ingress = http
                .get(format!("{}/readyz", self.ingress))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            let crm = http
                .get(self.crm_metrics.replace("/metrics", "/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            let mut queues = true;
            for q in [
                "switchyard.work.crm.contacts",
                "switchyard.work.payment.paypal",
                "switchyard.work.notification.twilio_messages",
            ] {
                queues &= self.fleet.vhost.queue_messages(q).await.is_some();
            }
            if ingress && crm && queues {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the fleet never became ready (ingress {ingress}, crm {crm}, queues {queues}); logs in {}",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn post(&self, body: serde_json::Value) -> reqwest::Response {
        self.fleet
            .http()
            .post(format!("{}/v1/commands", self.ingress))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn stats(&self) -> serde_json::Value {
        self.sandbox
            .get(format!("{}/_sandbox/stats", self.fleet.sandbox.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn command(
        &self,
        kind: &str,
        provider: &str,
        op: &str,
        payload: serde_json::Value,
    ) -> switchyard_core::Command {
        let mut c = self.fleet.command(kind, op, payload);
        c.provider = provider.parse().unwrap();
        c
    }

    async fn terminal(&self, id: Uuid) -> switchyard_core::Event {
        let events = self
            .fleet
            .events
            .terminal(id, Duration::from_secs(60))
            .await;
        events
            .into_iter()
            .find(|e| e.status.is_terminal())
            .unwrap_or_else(|| panic!("{id} never ended; logs in {}", self.dir.display()))
    }

    async fn stop(mut self) {
        for c in &mut self.children {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        self.fleet.stop().await;
        self.database.cleanup().await;
    }
}

#[tokio::test]
async fn a_kind_and_providers_declared_in_config_alone_run_end_to_end() {
    let f = Fleet::start().await;

    // The new kind over HTTP: validated against its schema, completed, in the ledger.
    let id = Uuid::now_v7();
    let r = f
        .post(
            serde_json::json!({"id": id, "kind": "crm", "provider": "contacts",
            "operation": "upsert_contact",
            "payload": {"email": "ann@example.com", "properties": {"firstname": "Ann"}}}),
        )
        .await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let done = f.terminal(id).await;
    assert_eq!(done.status, Status::Completed, "{done:?}");
    assert!(done.result.as_ref().unwrap()["id"].is_string(), "{done:?}");
    let view = f
        .fleet
        .http()
        .get(format!("{}/v1/commands/{id}", f.ledger))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut view: serde_json::Value = view.json().await.unwrap_or_default();
    while view["status"] != "completed" {
        assert!(
            Instant::now() < deadline,
            "the ledger never saw {id}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        view = f
            .fleet
            .http()
            .get(format!("{}/v1/commands/{id}", f.ledger))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
    }
    assert_eq!(view["kind"], "crm");
    let attempt = &view["attempts"][0];
    assert_eq!(attempt["method"], "PUT", "{view}");
    assert!(
        attempt["url"]
            .as_str()
            .unwrap()
            .contains("/v3/contacts/ann%40example%2Ecom"),
        "{view}"
    );
    assert_eq!(
        attempt["request_headers"]["x-api-key"], "[REDACTED]",
        "{view}"
    );

    // Its schema holds at the door: a missing e-mail is a 422 naming the field.
    let r = f
        .post(serde_json::json!({"kind": "crm", "provider": "contacts",
            "operation": "upsert_contact", "payload": {"properties": {}}}))
        .await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("email"));

    // Over AMQP: a 503 is retried, a 400 dead-letters.
    let retried = f.command(
        "crm",
        "contacts",
        "upsert_contact",
        serde_json::json!({"email": "bob@example.com", "properties": {}}),
    );
    f.fleet.scenario(retried.id, &["503"]).await;
    f.fleet.publish(&retried).await;
    let refused = f.command(
        "crm",
        "contacts",
        "upsert_contact",
        serde_json::json!({"email": "eve@example.com"}),
    );
    f.fleet.scenario(refused.id, &["400"]).await;
    f.fleet.publish(&refused).await;
    assert_eq!(f.terminal(retried.id).await.status, Status::Completed);
    let seen = f.fleet.sandbox_view(retried.id).await;
    assert_eq!(
        seen["requests"].as_array().unwrap().len(),
        2,
        "the 503 was retried: {seen}"
    );
    assert_eq!(f.terminal(refused.id).await.status, Status::Failed);

    // The operator sees the dead letter in the new kind's lot.
    let listed = Command::new(binary("switchyard"))
        .args(["dlq", "list", "--json", "--config"])
        .arg(&f.config)
        .output()
        .await
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains(&refused.id.to_string()), "{listed}");

    // Metrics of the generic worker carry the kind.
    let metrics = f
        .fleet
        .http()
        .get(&f.crm_metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("kind=\"crm\""), "{metrics}");

    // PayPal: an order created, then captured through a retryable 422.
    let order = Uuid::now_v7();
    let r = f
        .post(
            serde_json::json!({"id": order, "kind": "payment", "provider": "paypal",
            "operation": "create_order",
            "payload": {"reference": "order-42", "currency": "USD", "value": "10.00"}}),
        )
        .await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let created = f.terminal(order).await;
    assert_eq!(created.status, Status::Completed, "{created:?}");
    let order_id = created.result.as_ref().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let capture = f.command(
        "payment",
        "paypal",
        "capture_order",
        serde_json::json!({"order_id": order_id}),
    );
    f.fleet
        .scenario(capture.id, &["paypal422:PREVIOUS_REQUEST_IN_PROGRESS"])
        .await;
    f.fleet.publish(&capture).await;
    let captured = f.terminal(capture.id).await;
    assert_eq!(captured.status, Status::Completed, "{captured:?}");
    let seen = f.fleet.sandbox_view(capture.id).await;
    assert_eq!(
        seen["requests"].as_array().unwrap().len(),
        2,
        "PREVIOUS_REQUEST_IN_PROGRESS is retried: {seen}"
    );
    assert_eq!(f.stats().await["paypal_captures"], 1);

    // OAuth2: one token for 500 concurrent commands, one refresh after a forced expiry.
    let before = f.stats().await["paypal_token_requests"].as_u64().unwrap();
    assert_eq!(before, 1, "one token so far");
    let many: Vec<_> = (0..500)
        .map(|i| {
            f.command("payment", "paypal", "create_order",
                serde_json::json!({"reference": format!("bulk-{i}"), "currency": "EUR", "value": "1.00"}))
        })
        .collect();
    let started = Instant::now();
    for c in &many {
        f.fleet.publish(c).await;
    }
    let published = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    let ended = |id| {
        f.fleet
            .events
            .of(id)
            .into_iter()
            .find(|e| e.status.is_terminal())
            .map(|e| e.status)
    };
    while many.iter().any(|c| ended(c.id).is_none()) {
        assert!(Instant::now() < deadline, "not all 500 orders ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(many.iter().all(|c| ended(c.id) == Some(Status::Completed)));
    eprintln!(
        "500 PayPal orders: published in {published:?}, all completed in {:?}",
        started.elapsed()
    );
    assert_eq!(
        f.stats().await["paypal_token_requests"],
        1,
        "one token for 500 commands"
    );
    let expired = f
        .sandbox
        .post(format!(
            "{}/_sandbox/paypal/expire-tokens",
            f.fleet.sandbox.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert!(expired.status().is_success());
    let after = f.command(
        "payment",
        "paypal",
        "create_order",
        serde_json::json!({"reference": "after-expiry", "currency": "EUR", "value": "2.00"}),
    );
    f.fleet.publish(&after).await;
    assert_eq!(f.terminal(after.id).await.status, Status::Completed);
    assert_eq!(
        f.stats().await["paypal_token_requests"],
        2,
        "one refresh after the 401"
    );

    // A client the token endpoint refuses: failed for good, with the endpoint's error code.
    let refused = f.command(
        "payment",
        "paypal_refused",
        "create_order",
        serde_json::json!({"reference": "refused", "currency": "EUR", "value": "3.00"}),
    );
    f.fleet.publish(&refused).await;
    let failed = f.terminal(refused.id).await;
    assert_eq!(failed.status, Status::Failed, "{failed:?}");
    assert_eq!(
        failed.error.as_ref().map(|e| e.code.as_str()),
        Some("oauth2_invalid_client"),
        "{failed:?}"
    );

    // Twilio's Messages API: a form body, Basic auth, and a signed status callback.
    let sms = Uuid::now_v7();
    let r = f
        .post(
            serde_json::json!({"id": sms, "kind": "notification", "provider": "twilio_messages",
            "operation": "send_sms", "payload": {"to": "+14155550100", "body": "by config"}}),
        )
        .await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let delivered = f.terminal(sms).await;
    assert_eq!(delivered.status, Status::Completed, "{delivered:?}");
    let events = f.fleet.events.of(sms);
    assert!(
        events.iter().any(|e| e.status == Status::Waiting),
        "{events:?}"
    );

    // What an operator reads before calling anything.
    let explained = Command::new(binary("switchyard"))
        .args(["providers", "explain", "paypal", "--config"])
        .arg(&f.config)
        .env("PAYPAL_CLIENT_ID", PAYPAL_CLIENT_ID)
        .env("PAYPAL_CLIENT_SECRET", PAYPAL_CLIENT_SECRET)
        .env("PAYPAL_WRONG_SECRET", "x")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&explained.stdout);
    assert!(explained.status.success(), "{explained:?}");
    for needle in [
        "PayPal-Request-Id",
        "PREVIOUS_REQUEST_IN_PROGRESS",
        "v2/checkout/orders/{order_id}/capture",
        "OAuth2 client credentials",
    ] {
        assert!(
            text.to_lowercase().contains(&needle.to_lowercase()),
            "{needle} in:\n{text}"
        );
    }
    f.stop().await;
}
