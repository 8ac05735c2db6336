//! `POST /v1/webhooks/{provider}`: provider callbacks, verified on the raw bytes before
//! anything is parsed, then durably queued for the resolver before the 2xx.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use switchyard_amqp::messages::publish_callback_message;
use switchyard_amqp::{Headers, Publisher};
use switchyard_config::{Config, ConfigError};
use switchyard_core::waiting::CALLBACK_TYPE_V1;
use switchyard_core::{Callback, Name};
use switchyard_http::Redactor;
use switchyard_webhooks::StandardWebhooks;
use tracing::warn;

use crate::Problem;

/// Bodies larger than this are refused (413) before verification.
pub const MAX_WEBHOOK_BYTES: usize = 256 * 1024;

/// The verifiers of every provider that takes callbacks, by provider name.
pub(crate) struct Receivers {
    by_provider: HashMap<Name, Vec<StandardWebhooks>>,
    publisher: Publisher,
    redactor: Redactor,
    retry_after: u32,
}

impl Receivers {
    /// Reads every generic provider's webhook secret; an empty or unset one refuses the start.
    pub fn from_config(config: &Config, publisher: Publisher) -> Result<Self, ConfigError> {
        let mut by_provider: HashMap<Name, Vec<StandardWebhooks>> = HashMap::new();
        for (i, p) in config.providers.iter().enumerate() {
            if p.provider_type.as_str() != "http" {
                continue;
            }
            if let Some(secret) = switchyard_worker::GenericHttpProvider::webhook_secret(p, i)? {
                let verifier = StandardWebhooks::new(secret.expose()).map_err(|e| {
                    ConfigError::invalid(
                        format!(
                            "{}.webhook_secret_env",
                            switchyard_config::ProviderConfig::key(i)
                        ),
                        e.to_string(),
                    )
                })?;
                // A provider name shared by several kinds may hold one secret per entry.
                by_provider
                    .entry(p.name.clone())
                    .or_default()
                    .push(verifier);
            }
        }
        Ok(Self {
            by_provider,
            publisher,
            redactor: switchyard_worker::redactor(config),
            retry_after: config.ingress.retry_after_secs,
        })
    }
}

pub(crate) async fn receive(
    State(r): State<Arc<Receivers>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = verify_and_queue(&r, &provider, &headers, body).await;
    let outcome = match &result {
        Ok(()) => "queued",
        Err(p) => p.status().canonical_reason().unwrap_or("error"),
    };
    metrics::counter!("switchyard_webhooks_total", "outcome" => outcome).increment(1);
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(p) => p.into_response(),
    }
}

async fn verify_and_queue(
    r: &Receivers,
    provider: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), Problem> {
    let unknown = || Problem::not_found(format!("no provider {provider:?} takes webhooks here"));
    let name: Name = provider.parse().map_err(|_| unknown())?;
    let verifiers = r.by_provider.get(&name).ok_or_else(unknown)?;
    let raw = to_bytes(body, MAX_WEBHOOK_BYTES)
        .await
        .map_err(|_| Problem::too_large(MAX_WEBHOOK_BYTES))?;
    let now = Utc::now().timestamp();
    let webhook_id = verifiers
        .iter()
        .find_map(|v| v.verify(headers, &raw, now).ok())
        .ok_or_else(Problem::bad_signature)?;
    // Verified: only now is the body parsed.
    let (reference, outcome) = switchyard_worker::parse_report(&raw, &r.redactor)
        .map_err(|e| Problem::malformed(format!("not a callback of this provider: {e}")))?;
    let callback = Callback {
        provider: name,
        webhook_id,
        reference,
        outcome,
        received_at: Utc::now(),
    };
    let id = format!("callback.{}.{}", callback.provider, callback.webhook_id);
    publish_callback_message(
        &r.publisher,
        CALLBACK_TYPE_V1,
        &id,
        &callback.to_bytes(),
        None,
        Headers::default(),
    )
    .await
    .map_err(|e| {
        warn!(error = %e, provider = %callback.provider, "callback not confirmed by the broker");
        Problem::unavailable(r.retry_after)
    })
}
