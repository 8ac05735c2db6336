//! The sandbox's callbacks: a long-running operation reported finished to the receiver,
//! signed per Standard Webhooks, retried a few times like a real provider does.

use std::time::Duration;

use serde_json::json;
use switchyard_webhooks::StandardWebhooks;

use crate::config::WebhookTarget;
use crate::vendor::{Delivery, deliver};

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Succeeded,
    Failed,
}

/// The generic provider's report of an operation (contract section 6): the body of its
/// callbacks and of its status answers; `None` is still running.
pub(crate) fn report(reference: &str, outcome: Option<Outcome>, kind: &str) -> serde_json::Value {
    match outcome {
        None => json!({"reference": reference, "status": "pending"}),
        Some(Outcome::Succeeded) => json!({
            "reference": reference, "status": "succeeded",
            "result": {"reference": reference, "status": "succeeded", "kind": kind},
        }),
        Some(Outcome::Failed) => json!({
            "reference": reference, "status": "failed",
            "error": "the sandbox operation failed",
        }),
    }
}

/// Sends callbacks to one receiver.
#[derive(Debug, Clone)]
pub(crate) struct Sender {
    base_url: String,
    /// The receiver's secret as configured: Standard Webhooks signs with its decoded key;
    /// the Stripe and EasyPost emulators sign their events with the text itself, as those
    /// vendors do with an endpoint's secret.
    secret: String,
    signer: StandardWebhooks,
    http: reqwest::Client,
}

impl Sender {
    pub(crate) fn new(target: WebhookTarget) -> anyhow::Result<Self> {
        let signer = StandardWebhooks::new(&target.secret)
            .map_err(|e| anyhow::anyhow!("webhook secret: {e}"))?;
        Ok(Self {
            base_url: target.base_url,
            secret: target.secret,
            signer,
            http: webhook_client()?,
        })
    }

    /// Where the webhooks of `provider` (a provider's name in Switchyard) are received.
    pub(crate) fn url(&self, provider: &str) -> String {
        format!("{}{provider}", self.base_url)
    }

    /// The receiver's secret, for vendors that sign with the endpoint secret's text.
    pub(crate) fn secret(&self) -> &str {
        &self.secret
    }

    /// Verifies a delivery signed with the same secret (the sandbox's partner endpoint).
    pub(crate) fn verify(
        &self,
        headers: &axum::http::HeaderMap,
        body: &[u8],
    ) -> Result<String, switchyard_webhooks::VerifyError> {
        self.signer
            .verify(headers, body, chrono::Utc::now().timestamp())
    }

    /// Sends after `delay`, in the background.
    pub(crate) fn send_later(
        &self,
        delay: Duration,
        provider: &str,
        reference: &str,
        outcome: Outcome,
        kind: &str,
    ) {
        let this = self.clone();
        let (provider, reference, kind) =
            (provider.to_owned(), reference.to_owned(), kind.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            this.send_now(&provider, &reference, outcome, &kind).await;
        });
    }

    /// Sends now, retrying up to three times until the receiver answers 2xx.
    pub(crate) async fn send_now(
        &self,
        provider: &str,
        reference: &str,
        outcome: Outcome,
        kind: &str,
    ) {
        let body = report(reference, Some(outcome), kind).to_string();
        // One id per event: a retry of this delivery is the same webhook.
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let ts = chrono::Utc::now().timestamp();
        let delivery = Delivery {
            url: self.url(provider),
            headers: vec![
                ("content-type", "application/json".to_owned()),
                (
                    "webhook-signature",
                    self.signer.sign(&id, ts, body.as_bytes()),
                ),
                ("webhook-id", id),
                ("webhook-timestamp", ts.to_string()),
            ],
            body,
        };
        deliver(&self.http, &delivery).await;
    }
}

/// The client webhooks are sent with: plain HTTP or HTTPS to the local ingress.
pub(crate) fn webhook_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?)
}
