//! `POST /v1/webhooks/{provider}`: provider callbacks, verified on the raw bytes before
//! anything is parsed, then durably queued for the resolver before the 2xx.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use switchyard_amqp::PublishError;
use switchyard_amqp::messages::publish_callback_message;
use switchyard_amqp::{Headers, Publisher};
use switchyard_config::Config;
use switchyard_core::waiting::CALLBACK_TYPE_V1;
use switchyard_core::{Callback, Name};
use switchyard_webhooks::{Notice, Receiver, Refused, VerifyError};
use switchyard_worker::Catalog;
use tracing::{Instrument as _, warn};

use crate::Problem;

/// Bodies larger than this are refused (413) before verification.
pub const MAX_WEBHOOK_BYTES: usize = 256 * 1024;

/// The webhook receivers of every provider that takes callbacks, by provider name.
pub(crate) struct Receivers {
    by_provider: HashMap<Name, Vec<Receiver>>,
    publisher: Publisher,
    retry_after: u32,
}

impl Receivers {
    /// The receivers the catalog's providers declared (building them already refused an
    /// empty or unset secret, naming its key).
    pub fn new(catalog: &Catalog, config: &Config, publisher: Publisher) -> Self {
        let mut by_provider: HashMap<Name, Vec<Receiver>> = HashMap::new();
        for (name, receiver) in catalog.receivers() {
            by_provider
                .entry(name.clone())
                .or_default()
                .push(receiver.clone());
        }
        Self {
            by_provider,
            publisher,
            retry_after: config.ingress.retry_after_secs,
        }
    }
}

/// Every `outcome` of `switchyard_webhooks_total`.
pub(crate) const OUTCOMES: [&str; 8] = [
    "queued",
    "ignored",
    "not_found",
    "too_large",
    "body_unread",
    "bad_signature",
    "malformed",
    "unavailable",
];

/// What became of a verified webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Received {
    /// Queued for the resolver.
    Queued,
    /// About nothing Switchyard waits for: answered, not queued.
    Ignored,
}

pub(crate) async fn receive(
    State(r): State<Arc<Receivers>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let span = crate::server_span(&headers, "/v1/webhooks/{provider}");
    let result = verify_and_queue(&r, &provider, &headers, body)
        .instrument(span.clone())
        .await;
    let outcome = match &result {
        Ok(Received::Queued) => "queued",
        Ok(Received::Ignored) => "ignored",
        Err(p) => p.label(),
    };
    metrics::counter!("switchyard_webhooks_total", "outcome" => outcome).increment(1);
    let response = match result {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(p) => p.into_response(),
    };
    crate::record_status(&span, response.status());
    response
}

async fn verify_and_queue(
    r: &Receivers,
    provider: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Received, Problem> {
    let unknown = || Problem::not_found(format!("no provider {provider:?} takes webhooks here"));
    let name: Name = provider.parse().map_err(|_| unknown())?;
    let receivers = r.by_provider.get(&name).ok_or_else(unknown)?;
    let raw = switchyard_api::read_body(body, MAX_WEBHOOK_BYTES).await?;
    let now = Utc::now().timestamp();
    // A name shared by several kinds may hold several receivers: the first to verify reads.
    let mut refusal = Refused::Signature(VerifyError::Mismatch);
    let mut notice = None;
    for receiver in receivers {
        match receiver.receive(headers, &raw, now) {
            Ok(n) => {
                notice = Some(n);
                break;
            }
            // Verified but unreadable: no other receiver's answer would be truer.
            Err(e @ Refused::Malformed(_)) => {
                refusal = e;
                break;
            }
            Err(e) => refusal = e,
        }
    }
    let Some(notice) = notice else {
        return Err(match refusal {
            Refused::Signature(_) => Problem::bad_signature(),
            Refused::Malformed(why) => Problem::webhook_malformed(why),
        });
    };
    // Verified, and about nothing Switchyard waits for.
    let Some(Notice {
        id: webhook_id,
        reference,
        outcome,
    }) = notice
    else {
        return Ok(Received::Ignored);
    };
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
    .map_err(|e| match e {
        PublishError::Invalid(why) => Problem::webhook_malformed(why),
        e => {
            warn!(error = %e, provider = %callback.provider, "callback not confirmed by the broker");
            Problem::webhook_unavailable(r.retry_after)
        }
    })?;
    Ok(Received::Queued)
}
