//! A provider's inbound webhooks: the [`Scheme`] that verifies a delivery, and the
//! [`WebhookReader`] that reads it once verified.
//!
//! The split makes the order a matter of types: a reader only ever sees a [`Verified`]
//! delivery, and the only way to one is [`Scheme::verify`] on the raw bytes.

use std::fmt;
use std::sync::Arc;

use http::HeaderMap;
use switchyard_core::CallbackOutcome;

use crate::{
    HmacHexSignature, StandardWebhooks, StripeSignature, TwilioSignature, VerifyError, header,
};

/// How a provider signs its webhooks, with every secret currently accepted (several during a
/// rotation: a delivery is accepted when any of them verifies it).
#[derive(Debug, Clone)]
pub enum Scheme {
    /// Standard Webhooks; the delivery id is the signed `webhook-id`.
    Standard(Vec<StandardWebhooks>),
    /// Stripe's `Stripe-Signature: t=,v1=`.
    Stripe(Vec<StripeSignature>),
    /// An HMAC-SHA256 hex signature of the body in one header (GitHub's, EasyPost's).
    HmacHex(Vec<HmacHexSignature>),
    /// Twilio's `X-Twilio-Signature` over the public callback URL and the form parameters.
    Twilio {
        /// One per auth token.
        signers: Vec<TwilioSignature>,
        /// The URL exactly as the provider calls it (its scheme, host and path), which
        /// behind a proxy is not the address the ingress listens on.
        url: String,
    },
}

impl Scheme {
    /// Checks the delivery's signature on the raw bytes; `now` is unix seconds.
    pub fn verify<'a>(
        &self,
        headers: &'a HeaderMap,
        body: &'a [u8],
        now: i64,
    ) -> Result<Verified<'a>, VerifyError> {
        let signed_id = match self {
            Self::Standard(keys) => Some(any(keys, |k| k.verify(headers, body, now))?),
            Self::Stripe(keys) => any(keys, |k| k.verify(headers, body, now)).map(|()| None)?,
            Self::HmacHex(keys) => any(keys, |k| k.verify(headers, body)).map(|()| None)?,
            Self::Twilio { signers, url } => {
                // The signature covers the form's parameters, so the form is decoded first.
                header(headers, "x-twilio-signature")?;
                let params: Vec<(String, String)> = form_urlencoded::parse(body)
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                any(signers, |k| k.verify(headers, url, &params)).map(|()| None)?
            }
        };
        Ok(Verified {
            headers,
            body,
            signed_id,
        })
    }
}

/// The first success of `check` over `keys`, else the most telling failure.
fn any<K, T>(keys: &[K], check: impl Fn(&K) -> Result<T, VerifyError>) -> Result<T, VerifyError> {
    let mut error = VerifyError::Mismatch;
    for key in keys {
        match check(key) {
            Ok(v) => return Ok(v),
            // A missing header or a stale timestamp is the same for every key.
            Err(e) => error = e,
        }
    }
    Err(error)
}

/// A delivery whose signature matched.
#[derive(Debug)]
pub struct Verified<'a> {
    headers: &'a HeaderMap,
    body: &'a [u8],
    signed_id: Option<String>,
}

impl Verified<'_> {
    /// The raw body.
    pub fn body(&self) -> &[u8] {
        self.body
    }

    /// A request header, when present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The delivery id the signature covers, for schemes that sign one (Standard Webhooks).
    pub fn signed_id(&self) -> Option<&str> {
        self.signed_id.as_deref()
    }
}

/// The longest delivery id taken. It names the callback's AMQP message
/// (`callback.{provider}.{id}`), which may not pass 255 bytes; a longer one is refused (400)
/// rather than queued.
pub const MAX_NOTICE_ID_BYTES: usize = 160;

/// What a verified delivery says about a long-running operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// Unique per delivery, stable across the provider's re-deliveries: a second delivery
    /// with the same id has no effect, even days later.
    pub id: String,
    /// The provider's reference of the operation, as in the `waiting` event.
    pub reference: String,
    /// How it stands.
    pub outcome: CallbackOutcome,
}

/// Reads a provider's verified deliveries.
pub trait WebhookReader: Send + Sync + fmt::Debug {
    /// The notice in `delivery`; `Ok(None)` for a delivery that is about nothing Switchyard
    /// waits for (acknowledged, then dropped); `Err` for a body that is not this provider's.
    fn read(&self, delivery: &Verified<'_>) -> Result<Option<Notice>, String>;
}

/// One provider's inbound webhooks: the scheme first, then the reader.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// Verifies.
    pub scheme: Scheme,
    /// Reads what verified.
    pub reader: Arc<dyn WebhookReader>,
}

/// Why a delivery was not taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refused {
    /// The signature did not verify (401).
    #[error("signature: {0}")]
    Signature(#[from] VerifyError),
    /// Verified, but not a body this provider sends (400).
    #[error("{0}")]
    Malformed(String),
}

impl Receiver {
    /// Verifies, then reads, the delivery.
    pub fn receive(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<Option<Notice>, Refused> {
        let verified = self.scheme.verify(headers, body, now)?;
        let notice = self.reader.read(&verified).map_err(Refused::Malformed)?;
        match notice {
            Some(n) if n.id.len() > MAX_NOTICE_ID_BYTES => Err(Refused::Malformed(format!(
                "a delivery id of {} bytes; at most {MAX_NOTICE_ID_BYTES} are taken",
                n.id.len()
            ))),
            _ => Ok(notice),
        }
    }
}
