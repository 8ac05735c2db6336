//! The sandbox's callbacks: a long-running operation reported finished to the receiver,
//! signed per Standard Webhooks, retried a few times like a real provider does.

use std::time::Duration;

use serde_json::json;
use switchyard_webhooks::StandardWebhooks;

use crate::config::WebhookTarget;

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
    signer: StandardWebhooks,
    http: reqwest::Client,
}

impl Sender {
    pub(crate) fn new(target: WebhookTarget) -> anyhow::Result<Self> {
        let signer = StandardWebhooks::new(&target.secret)
            .map_err(|e| anyhow::anyhow!("webhook secret: {e}"))?;
        Ok(Self {
            base_url: target.base_url,
            signer,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        })
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
        let url = format!("{}{provider}", self.base_url);
        for attempt in 0..3u32 {
            let ts = chrono::Utc::now().timestamp();
            let sent = self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .header("webhook-id", &id)
                .header("webhook-timestamp", ts.to_string())
                .header(
                    "webhook-signature",
                    self.signer.sign(&id, ts, body.as_bytes()),
                )
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => tracing::warn!(status = %r.status(), %url, "callback refused"),
                Err(e) => tracing::warn!(error = %e, %url, "callback not delivered"),
            }
            tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt + 1))).await;
        }
    }
}
