//! `type = "webhook"`: delivers `send_webhook` commands to a partner's URL, signed per
//! [Standard Webhooks](https://www.standardwebhooks.com/) so any of its libraries verifies
//! them, with the same retries and dead-lettering as every provider.
//!
//! The message is `{"type": event_type, "timestamp": created_at, "data": data}`, byte for
//! byte the same on every attempt; `webhook-id` is `msg_` and the command's idempotency key,
//! the same on every attempt and replay, so the partner de-duplicates on it. Each attempt is
//! signed afresh with the current `webhook-timestamp`, as receivers refuse stale ones.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::json;
use switchyard_config::{ConfigError, ProviderConfig};
use switchyard_core::{ErrorClass, Name, Provider, ProviderCall, ProviderError, ProviderOutcome};
use switchyard_http::{OutboundClient, OutboundRequest, Redactor, classify, validate_provider_url};
use switchyard_webhooks::StandardWebhooks;
use switchyard_worker::{ProviderContext, check_operations, provider_secret};

use crate::payload::SendWebhook;

/// The entry's own keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// Environment variable holding the `whsec_` signing secret.
    signing_secret_env: Option<String>,
    /// Or a file holding it.
    signing_secret_file: Option<PathBuf>,
}

/// Signs and delivers webhooks to partners.
#[derive(Debug, Clone)]
pub(crate) struct WebhookProvider {
    name: Name,
    operations: Vec<Name>,
    signer: Arc<StandardWebhooks>,
    client: OutboundClient,
    redactor: Redactor,
}

impl WebhookProvider {
    pub(crate) fn from_config(
        config: &ProviderConfig,
        index: usize,
        ctx: &ProviderContext,
    ) -> Result<Self, ConfigError> {
        let key = ProviderConfig::key(index);
        let opts: Options = config.parse_options(index)?;
        let Some((name, secret)) = provider_secret(
            index,
            "signing_secret",
            opts.signing_secret_env.as_deref(),
            opts.signing_secret_file.as_deref(),
        )?
        else {
            return Err(ConfigError::invalid(
                format!("{key}.signing_secret_env"),
                "a webhook provider signs every delivery: set signing_secret_env or signing_secret_file",
            ));
        };
        let signer = StandardWebhooks::new(secret.expose().trim())
            .map_err(|e| ConfigError::invalid(name, e.to_string()))?;
        check_operations(config, index, &["send_webhook"])?;
        Ok(Self {
            name: config.name.clone(),
            operations: config.operations.names().to_vec(),
            signer: Arc::new(signer),
            client: ctx.client(index)?,
            redactor: ctx.redactor.clone(),
        })
    }
}

fn invalid(message: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorClass::Invalid, "invalid_payload", message)
}

#[async_trait::async_trait]
impl Provider for WebhookProvider {
    fn name(&self) -> &Name {
        &self.name
    }

    fn operations(&self) -> &[Name] {
        &self.operations
    }

    async fn call(&self, call: &ProviderCall) -> Result<ProviderOutcome, ProviderError> {
        let command = &call.command;
        let payload: SendWebhook = call.payload()?;
        // The rules of a configured provider URL (https, a host, no credentials, which would
        // end up in the attempt record), then the client's address policy on connect.
        let url = validate_provider_url("payload.url", &payload.url)
            .map_err(|e| invalid(e.to_string()))?;
        let body = Bytes::from(
            serde_json::to_vec(&json!({
                "type": payload.event_type,
                "timestamp": command.created_at,
                "data": payload.data,
            }))
            .unwrap_or_default(),
        );
        let id = format!("msg_{}", call.idempotency_key.simple());
        let timestamp = chrono::Utc::now().timestamp();
        let mut headers = HeaderMap::new();
        let mut set = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        };
        set("webhook-id", &id);
        set("webhook-timestamp", &timestamp.to_string());
        set(
            "webhook-signature",
            &self.signer.sign(&id, timestamp, &body),
        );
        set("x-switchyard-command-id", &command.id.to_string());
        let request = OutboundRequest::post_json(url, headers, body);
        let exchange = self
            .client
            .send_recorded(request, call, &self.redactor)
            .await?;
        classify(exchange.status, &exchange.headers, &exchange.body)?;
        Ok(ProviderOutcome::Completed {
            result: json!({"webhook_id": id, "status": exchange.status.as_u16()}),
            reference: Some(id),
        })
    }
}
