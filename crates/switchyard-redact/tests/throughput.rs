//! How long redacting one provider exchange takes: the work the worker does for every
//! attempt record it publishes, and the ledger again for every record it stores.
//!
//! A measurement, not a test of speed: it prints its figures and checks only that the output
//! is what redaction promises. Run with
//! `cargo test --release -p switchyard-redact --test throughput -- --ignored --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::Instant;

use http::{HeaderMap, HeaderValue};
use serde_json::json;
use switchyard_redact::{REDACTED, Redactor, redact_headers};

/// A charge of about 1 KiB, as `switchyard bench` sends it, and a provider's answer to it.
fn exchange() -> (Vec<u8>, Vec<u8>, HeaderMap) {
    let request = json!({
        "amount": 1999, "currency": "usd", "payment_method": "pm_card_visa",
        "customer": "cus_bench", "description": "x".repeat(960),
    });
    let response = json!({
        "id": "ch_3Nq2bC2eZvKYlo2C0x5c1b2a", "object": "charge", "amount": 1999,
        "amount_captured": 1999, "currency": "usd", "captured": true, "paid": true,
        "status": "succeeded", "customer": "cus_bench", "created": 1_764_547_200,
        "payment_method": "pm_1Nq2bC2eZvKYlo2C", "client_secret": "ch_secret_canary",
        "metadata": {"order": "ord_42", "api_key": "canary"},
        "outcome": {"network_status": "approved_by_network", "risk_level": "normal"},
    });
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert(
        "authorization",
        HeaderValue::from_static("Bearer sk_canary"),
    );
    headers.insert("idempotency-key", HeaderValue::from_static("sy_4f1c9a7e"));
    headers.insert(
        "traceparent",
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    (
        serde_json::to_vec(&request).unwrap(),
        serde_json::to_vec(&response).unwrap(),
        headers,
    )
}

#[test]
#[ignore]
fn redacting_an_exchange() {
    let (request, response, headers) = exchange();
    let redactor = Redactor::default();
    let once = redactor.body(&response);
    assert!(
        once.contains(REDACTED) && !once.contains("canary"),
        "{once}"
    );
    const N: u32 = 50_000;
    for round in 1..=3 {
        let started = Instant::now();
        let mut kept = 0;
        for _ in 0..N {
            kept += redactor.body(&request).len();
            kept += redactor.body(&response).len();
            kept += redact_headers(&headers).len();
        }
        let per = started.elapsed() / N;
        eprintln!(
            "round {round}: {per:?} per exchange (two bodies and the headers), {kept} bytes kept"
        );
    }
}
