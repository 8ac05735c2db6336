//! `type = "sendgrid"`: `send_email` through SendGrid's v3 Mail Send
//! (`POST {base_url}/v3/mail/send`, bearer API key, JSON; `202` with `X-Message-Id`).
//!
//! SendGrid takes no idempotency key, so the command id and its idempotency key travel in
//! `custom_args` (they come back in SendGrid's event webhooks): a retry after an answer lost
//! in transit can send twice, and those ids are how to tell.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_config::{ConfigError, ProviderConfig};
use switchyard_core::{
    ErrorClass, Name, Provider, ProviderCall, ProviderError, ProviderOutcome, Secret,
};
use switchyard_http::{OutboundClient, OutboundRequest, Redactor, classify};
use switchyard_worker::{ProviderContext, check_operations, provider_base_url, provider_secret};
use url::Url;

use crate::payload::SendEmail;

/// SendGrid's API, unless the entry says otherwise (the EU region, a test double).
const DEFAULT_BASE_URL: &str = "https://api.sendgrid.com";

/// The entry's own keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// Defaults to SendGrid's; `https://api.eu.sendgrid.com` for EU subusers.
    base_url: Option<String>,
    /// Environment variable holding the API key (`SG.…`).
    api_key_env: Option<String>,
    /// Or a file holding it.
    api_key_file: Option<PathBuf>,
}

/// Sends email through SendGrid.
#[derive(Debug, Clone)]
pub(crate) struct SendGridProvider {
    name: Name,
    operations: Vec<Name>,
    endpoint: Url,
    api_key: Secret<String>,
    client: OutboundClient,
    redactor: Redactor,
}

impl SendGridProvider {
    pub(crate) fn from_config(
        config: &ProviderConfig,
        index: usize,
        ctx: &ProviderContext,
    ) -> Result<Self, ConfigError> {
        let key = ProviderConfig::key(index);
        let opts: Options = config.parse_options(index)?;
        let base = provider_base_url(index, opts.base_url.as_deref(), DEFAULT_BASE_URL)?;
        let endpoint = base
            .join("v3/mail/send")
            .map_err(|e| ConfigError::invalid(format!("{key}.base_url"), e.to_string()))?;
        let Some((_, api_key)) = provider_secret(
            index,
            "api_key",
            opts.api_key_env.as_deref(),
            opts.api_key_file.as_deref(),
        )?
        else {
            return Err(ConfigError::invalid(
                format!("{key}.api_key_env"),
                "SendGrid needs an API key: set api_key_env or api_key_file",
            ));
        };
        let api_key = Secret::new(api_key.expose().trim().to_owned());
        check_operations(config, index, &["send_email"])?;
        Ok(Self {
            name: config.name.clone(),
            operations: config.operations.names().to_vec(),
            endpoint,
            api_key,
            client: ctx.client(index)?,
            redactor: ctx.redactor.clone(),
        })
    }

    /// The Mail Send body for `email`; text/plain first, as SendGrid requires.
    fn message(email: &SendEmail, call: &ProviderCall) -> Result<Value, ProviderError> {
        let mut content = Vec::new();
        if let Some(text) = email.text.as_deref().filter(|t| !t.is_empty()) {
            content.push(json!({"type": "text/plain", "value": text}));
        }
        if let Some(html) = email.html.as_deref().filter(|h| !h.is_empty()) {
            content.push(json!({"type": "text/html", "value": html}));
        }
        if content.is_empty() {
            return Err(ProviderError::new(
                ErrorClass::Invalid,
                "no_content",
                "send_email needs text or html",
            ));
        }
        let to: Vec<Value> = email.to.iter().map(|a| json!({"email": a})).collect();
        Ok(json!({
            "personalizations": [{"to": to}],
            "from": {"email": email.from},
            "subject": email.subject,
            "content": content,
            "custom_args": {
                "switchyard_command_id": call.command.id.to_string(),
                "switchyard_idempotency_key": call.idempotency_key.to_string(),
            },
        }))
    }
}

/// SendGrid's 429 says when the window resets (`X-RateLimit-Reset`, unix seconds) rather than
/// `Retry-After`.
fn rate_limit_reset(headers: &HeaderMap) -> Option<Duration> {
    let reset: u64 = headers
        .get("x-ratelimit-reset")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(reset.saturating_sub(now).max(1)))
}

#[async_trait::async_trait]
impl Provider for SendGridProvider {
    fn name(&self) -> &Name {
        &self.name
    }

    fn operations(&self) -> &[Name] {
        &self.operations
    }

    /// SendGrid takes no idempotency key: never called twice for one attempt.
    fn idempotent(&self) -> bool {
        false
    }

    async fn call(&self, call: &ProviderCall) -> Result<ProviderOutcome, ProviderError> {
        let email: SendEmail = call.payload()?;
        let body =
            Bytes::from(serde_json::to_vec(&Self::message(&email, call)?).unwrap_or_default());
        let mut headers = HeaderMap::new();
        if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", self.api_key.expose())) {
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        let request = OutboundRequest::post_json(self.endpoint.clone(), headers, body);
        let exchange = self
            .client
            .send_recorded(request, call, &self.redactor)
            .await?;
        if let Err(mut e) = classify(exchange.status, &exchange.headers, &exchange.body) {
            if exchange.status.as_u16() == 429 && e.retry_after.is_none() {
                e.retry_after = rate_limit_reset(&exchange.headers);
            }
            return Err(e);
        }
        let message_id = exchange
            .headers
            .get("x-message-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(ProviderOutcome::Completed {
            result: json!({"status": "accepted", "message_id": message_id}),
            reference: message_id,
        })
    }
}
