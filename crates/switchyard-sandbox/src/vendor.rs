//! What every vendor emulator (SendGrid, Twilio, Stripe, EasyPost, PayPal, the CRM) shares: recording each
//! request under its command and applying the command's script, and delivering the vendor's
//! signed webhooks the way vendors do (in the background, retried a few times).

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use sha2::{Digest, Sha256};

use crate::provider::loggable_headers;
use crate::scenario::Step;
use crate::server::AppState;
use crate::state::{RecordRef, RequestRecord};

/// One request to a vendor emulator: recorded in the command view (when the request names
/// its command) with the script step it drew.
#[derive(Debug)]
pub(crate) struct Attempt {
    record: Option<RecordRef>,
    /// The scripted step, or `None` when the command has no scenario (behave normally).
    pub(crate) step: Option<Step>,
}

/// What an [`Attempt`] is recorded as.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    /// The command, as the vendor's request carries it (a header, metadata, custom args).
    pub(crate) command_id: Option<&'a str>,
    pub(crate) kind: &'a str,
    pub(crate) operation: &'a str,
    /// The vendor's idempotency key, for vendors that take one.
    pub(crate) idempotency_key: Option<&'a str>,
}

impl Attempt {
    /// Counts the request, records it and draws the command's next script step.
    pub(crate) fn begin(
        app: &AppState,
        request: Request<'_>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Self {
        app.ledger.count_request();
        let Some(id) = request.command_id else {
            return Self {
                record: None,
                step: None,
            };
        };
        let record = app.ledger.record(
            id,
            RequestRecord {
                idempotency_key: request.idempotency_key.map(str::to_owned),
                body_sha256: hex::encode(Sha256::digest(body)),
                status: None,
                replayed: false,
                at_ms: app.elapsed_ms(),
                kind: request.kind.to_owned(),
                operation: request.operation.to_owned(),
                step: None,
                headers: loggable_headers(headers),
            },
        );
        let step = app.ledger.next_step(id);
        if let Some(step) = &step {
            let text = step.to_string();
            app.ledger.update_record(&record, |r| r.step = Some(text));
        }
        Self {
            record: Some(record),
            step,
        }
    }

    /// Marks the request as replayed from the idempotency store.
    pub(crate) fn replayed(&self, app: &AppState) {
        if let Some(at) = &self.record {
            app.ledger.update_record(at, |r| r.replayed = true);
        }
    }

    /// Records the answer's status and hands the answer back.
    pub(crate) fn finish(self, app: &AppState, response: Response) -> Response {
        if let Some(at) = &self.record {
            let status = response.status().as_u16();
            app.ledger.update_record(at, |r| r.status = Some(status));
        }
        response
    }
}

/// A scripted failure status as a `StatusCode` (500 for anything unrepresentable).
pub(crate) fn scripted_status(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The scripted `leak:STATUS`: an answer full of card data and secrets, executing nothing.
pub(crate) fn leak(status: u16) -> Response {
    crate::provider::json_response(
        scripted_status(status),
        bytes::Bytes::from(crate::provider::leaky_body(None).to_string()),
    )
}

/// One webhook delivery: where, with which headers (the signature among them), what body.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) url: String,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: String,
}

/// Sends `deliveries` in order in the background, each after its delay, each tried up to three
/// times until the receiver answers 2xx (vendors retry webhooks; receivers de-duplicate).
pub(crate) fn deliver_later(app: &AppState, deliveries: Vec<(Duration, Delivery)>) {
    let http = app.http.clone();
    tokio::spawn(async move {
        for (delay, delivery) in deliveries {
            tokio::time::sleep(delay).await;
            deliver(&http, &delivery).await;
        }
    });
}

/// Sends one delivery now, up to three tries.
pub(crate) async fn deliver(http: &reqwest::Client, delivery: &Delivery) {
    for attempt in 1..=3u64 {
        let mut request = http.post(&delivery.url).body(delivery.body.clone());
        for (name, value) in &delivery.headers {
            request = request.header(*name, value);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => tracing::warn!(status = %r.status(), url = %delivery.url, "webhook refused"),
            Err(e) => tracing::warn!(error = %e, url = %delivery.url, "webhook not delivered"),
        }
        tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
    }
}
