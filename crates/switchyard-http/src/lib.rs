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
    REDACTED, Redactor, body_excerpt, cap, contains_card_number, field_with_card_number,
    is_sensitive_header, mask_card_numbers, redact_headers,
};
pub use tls::install_crypto_provider;
