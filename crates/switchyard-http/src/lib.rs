//! Switchyard's one way to make outbound HTTPS calls to providers. This crate owns the
//! transport policy of RELIABILITY.md "Calls out" S1-S3 (verified TLS with configured extra
//! roots, https only, no redirects, no private or loopback destinations unless allowed,
//! connect and total timeouts, a cap on the body read), the single classification of an
//! answer or transport failure into an [`ErrorClass`](switchyard_core::ErrorClass), and the
//! redaction of what an attempt record may hold (S5).
//!
//! It does not retry, back off or break circuits (the worker does, from the class), it does
//! not know any provider's API (the kind crates build [`OutboundRequest`]s), and it does not
//! read configuration (`switchyard-config` fills [`OutboundSettings`]).

mod classify;
mod client;
mod provider_url;
mod record;
mod resolver;
mod settings;
mod tls;

pub use classify::{MAX_RETRY_AFTER, classify, code, parse_retry_after};
pub use client::{BuildError, HttpExchange, OutboundClient, OutboundRequest};
pub use provider_url::{UrlError, validate_provider_url};
pub use resolver::{AddressPolicy, AddressRange, DestinationRefused};
pub use settings::{ClientIdentity, OutboundSettings};
pub use switchyard_redact::{
    REDACTED, Redactor, body_excerpt, cap, contains_card_number, is_sensitive_header,
    mask_card_numbers, redact_headers,
};
pub use tls::install_crypto_provider;

/// The part of a command (`payload`, `metadata` or `idempotency_key`) that holds a card
/// number, if one does: in a string, as a number or in a key. The ingress and every worker
/// refuse such a command, so Switchyard stays out of card-data scope (payment details travel
/// as provider tokens).
pub fn command_part_with_card_number(
    payload: &serde_json::Value,
    metadata: &switchyard_core::Metadata,
    idempotency_key: Option<&switchyard_core::command::IdempotencyKey>,
) -> Option<&'static str> {
    if switchyard_redact::holds_card_number(payload) {
        Some("payload")
    } else if metadata
        .entries()
        .iter()
        .any(|(k, v)| contains_card_number(k) || contains_card_number(v))
    {
        Some("metadata")
    } else if idempotency_key.is_some_and(|k| contains_card_number(k.as_str())) {
        Some("idempotency_key")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_part_of_a_command_is_searched_for_card_numbers() {
        let card = "4242424242424242";
        let clean = serde_json::json!({"amount": 1999, "note": "first line\nsecond"});
        let after_line_break = serde_json::json!({"note": format!("first line\n{card}")});
        let metadata = |v: String| {
            switchyard_core::Metadata::try_from(std::collections::BTreeMap::from([(
                "order".to_owned(),
                v,
            )]))
            .unwrap()
        };
        let (plain, with_card) = (metadata("o-1".into()), metadata(format!("card {card}")));
        let key = |k: &str| -> switchyard_core::command::IdempotencyKey {
            serde_json::from_value(serde_json::json!(k)).unwrap()
        };
        let (plain_key, card_key) = (key("k-1"), key(card));
        assert_eq!(
            command_part_with_card_number(&clean, &plain, Some(&plain_key)),
            None
        );
        assert_eq!(
            command_part_with_card_number(&after_line_break, &plain, None),
            Some("payload")
        );
        assert_eq!(
            command_part_with_card_number(&clean, &with_card, None),
            Some("metadata")
        );
        assert_eq!(
            command_part_with_card_number(&clean, &plain, Some(&card_key)),
            Some("idempotency_key")
        );
    }
}
