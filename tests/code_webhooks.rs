//! A provider written in code brings its own webhook scheme: the ingress verifies a
//! Stripe-signed event with it, queues what its reader found, and refuses what does not
//! verify, exactly as for the generic provider.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchyard_amqp::lapin::options::BasicGetOptions;
use switchyard_amqp::topology::CALLBACKS_QUEUE;
use switchyard_config::{Config, ConfigError, ProviderConfig};
use switchyard_core::{
    Callback, CallbackOutcome, KindSpec, Name, Provider, ProviderCall, ProviderError,
    ProviderOutcome,
};
use switchyard_payment::Payment;
use switchyard_testing::{TestDatabase, TestVhost, free_port};
use switchyard_webhooks::{
    Notice, Receiver, Scheme, StandardWebhooks, StripeSignature, Verified, WebhookReader,
};
use switchyard_worker::{CodeProvider, Kind, ProviderContext};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "whsec_stripe_like_test";

/// The payment kind, plus a code provider of type `stripe_like` whose work ends by
/// Stripe-signed events. Its calls are not what this test is about.
struct PaymentWithStripeLike;

#[derive(Debug)]
struct StripeLike {
    name: Name,
    operations: Vec<Name>,
}

#[async_trait::async_trait]
impl Provider for StripeLike {
    fn name(&self) -> &Name {
        &self.name
    }

    fn operations(&self) -> &[Name] {
        &self.operations
    }

    async fn call(&self, _: &ProviderCall) -> Result<ProviderOutcome, ProviderError> {
        unreachable!("no command is sent in this test")
    }
}

/// Reads `{"id": "evt_..", "type": "payment_intent.succeeded", "data": {"object": {"id": "pi_.."}}}`.
#[derive(Debug)]
struct EventReader;

impl WebhookReader for EventReader {
    fn read(&self, delivery: &Verified<'_>) -> Result<Option<Notice>, String> {
        let event: serde_json::Value =
            serde_json::from_slice(delivery.body()).map_err(|e| e.to_string())?;
        let object = &event["data"]["object"];
        let outcome = match event["type"].as_str() {
            Some("payment_intent.succeeded") => CallbackOutcome::Succeeded {
                result: object.clone(),
            },
            _ => return Ok(None),
        };
        Ok(Some(Notice {
            id: event["id"].as_str().ok_or("no event id")?.to_owned(),
            reference: object["id"].as_str().ok_or("no object id")?.to_owned(),
            outcome,
        }))
    }
}

impl Kind for PaymentWithStripeLike {
    fn spec(&self) -> KindSpec {
        Payment.spec()
    }

    fn default_listen(&self) -> SocketAddr {
        Payment.default_listen()
    }

    fn code_provider(
        &self,
        config: &ProviderConfig,
        _index: usize,
        _ctx: &ProviderContext,
    ) -> Result<Option<CodeProvider>, ConfigError> {
        if config.provider_type.as_str() != "stripe_like" {
            return Ok(None);
        }
        let provider = StripeLike {
            name: config.name.clone(),
            operations: config.operations.names().to_vec(),
        };
        Ok(Some(CodeProvider::new(Arc::new(provider)).with_webhooks(
            Receiver {
                scheme: Scheme::Stripe(vec![StripeSignature::new(SECRET).unwrap()]),
                reader: Arc::new(EventReader),
            },
        )))
    }
}

#[tokio::test]
async fn a_code_provider_s_scheme_verifies_its_webhooks_at_the_ingress() {
    let vhost = TestVhost::create().await;
    let port = free_port();
    // The ingress admits commands in the journal: a database of the test's own, not the
    // default file in the working directory.
    let db = TestDatabase::sqlite();
    let config = Config::from_toml_str(&format!(
        "[amqp]\nurl = \"{}\"\n[ingress]\nlisten = \"127.0.0.1:{port}\"\ntokens = [\"t\"]\n\
         [ledger]\ndatabase_url = \"{}\"\n\
         [[providers]]\nname = \"stripe\"\nkind = \"payment\"\ntype = \"stripe_like\"\n\
         operations = [\"charge\"]\n",
        vhost.amqp_url, db.url
    ))
    .unwrap();
    let shutdown = CancellationToken::new();
    let kinds: Vec<Arc<dyn Kind>> = vec![Arc::new(PaymentWithStripeLike)];
    let ingress = switchyard_ingress::start(&config, &kinds, shutdown.clone())
        .await
        .unwrap();
    assert!(ingress.broker.wait_ready(Duration::from_secs(20)).await);
    let url = format!("http://127.0.0.1:{port}/v1/webhooks/stripe");
    let http = reqwest::Client::new();
    let stripe = StripeSignature::new(SECRET).unwrap();
    let post = |body: &'static str, signature: String| {
        http.post(&url)
            .header("content-type", "application/json")
            .header("stripe-signature", signature)
            .body(body)
            .send()
    };
    let now = chrono::Utc::now().timestamp();

    let succeeded = r#"{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{"id":"pi_1","amount":1999}}}"#;
    let other = r#"{"id":"evt_2","type":"customer.created","data":{"object":{"id":"cus_1"}}}"#;
    let r = post(succeeded, stripe.sign(now, succeeded.as_bytes()))
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // Verified, about nothing Switchyard waits for: acknowledged, nothing queued.
    let r = post(other, stripe.sign(now, other.as_bytes()))
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // Refused: another key, ten minutes old, tampered, another provider's scheme.
    let forged = StripeSignature::new("whsec_someone_else").unwrap();
    for signature in [
        forged.sign(now, succeeded.as_bytes()),
        stripe.sign(now - 600, succeeded.as_bytes()),
        stripe.sign(now, other.as_bytes()),
        String::new(),
    ] {
        assert_eq!(post(succeeded, signature).await.unwrap().status(), 401);
    }
    let standard = StandardWebhooks::new(&StandardWebhooks::generate_secret()).unwrap();
    let r = http
        .post(&url)
        .header("webhook-id", "msg_1")
        .header("webhook-timestamp", now.to_string())
        .header(
            "webhook-signature",
            standard.sign("msg_1", now, succeeded.as_bytes()),
        )
        .body(succeeded)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Exactly the one callback was queued, correlated by what the reader found.
    let session = ingress.broker.session().await.unwrap();
    let ch = session.connection.create_channel().await.unwrap();
    let mut queued = Vec::new();
    while let Some(m) = ch
        .basic_get(CALLBACKS_QUEUE.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        queued.push(Callback::decode(&m.delivery.data).unwrap());
    }
    assert_eq!(queued.len(), 1, "{queued:#?}");
    let callback = &queued[0];
    assert_eq!(callback.provider.as_str(), "stripe");
    assert_eq!(callback.webhook_id, "evt_1");
    assert_eq!(callback.reference, "pi_1");
    assert_eq!(
        callback.outcome,
        CallbackOutcome::Succeeded {
            result: serde_json::json!({"id": "pi_1", "amount": 1999})
        }
    );

    shutdown.cancel();
    ingress.wait().await;
    vhost.delete().await;
}
