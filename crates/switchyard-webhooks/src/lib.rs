//! Webhook signatures, checked on the raw body before anything is parsed (RELIABILITY W1–W3).
//!
//! One type per scheme: [`StandardWebhooks`] (the generic provider, and what Switchyard signs
//! its own outbound webhooks with), [`StripeSignature`], [`HmacHexSignature`] (GitHub's and
//! EasyPost's) and [`TwilioSignature`]. Every comparison is constant-time and length-checked,
//! an empty signature never matches, an empty secret is refused at construction (so a
//! misconfigured provider cannot start), and timestamped schemes reject anything more than
//! [`TOLERANCE_SECS`] away from now. A provider's [`Receiver`] pairs its [`Scheme`] with the
//! reader of its bodies. This crate knows nothing of HTTP routing or queues.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use switchyard_core::Secret;
use unicode_normalization::UnicodeNormalization;

mod receiver;

pub use receiver::{
    MAX_NOTICE_ID_BYTES, Notice, Receiver, Refused, Scheme, Verified, WebhookReader,
};

/// Timestamps further than this from now, either way, are rejected.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a callback is refused. Deliberately coarse in what it tells the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A required header is absent.
    #[error("missing header {0}")]
    Missing(&'static str),
    /// A header is not in the scheme's format.
    #[error("malformed header {0}")]
    Malformed(&'static str),
    /// The timestamp is outside the tolerance.
    #[error("timestamp outside the {TOLERANCE_SECS} s tolerance")]
    Timestamp,
    /// No signature matches.
    #[error("no valid signature")]
    Mismatch,
}

/// A secret that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Empty: every signature would be computed with an empty key.
    #[error("the webhook secret is empty")]
    Empty,
    /// Not base64 after the `whsec_` prefix.
    #[error("the webhook secret is not base64 after its whsec_ prefix")]
    NotBase64,
}

type HmacSha256 = Hmac<Sha256>;

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Constant-time equality that is false for empty or differently sized inputs.
fn same(expected: &[u8], given: &[u8]) -> bool {
    !given.is_empty() && expected.len() == given.len() && bool::from(expected.ct_eq(given))
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, VerifyError> {
    headers
        .get(name)
        .ok_or(VerifyError::Missing(name))?
        .to_str()
        .map_err(|_| VerifyError::Malformed(name))
}

fn check_timestamp(ts: i64, now: i64) -> Result<(), VerifyError> {
    // Checked: a sender's timestamp near `i64::MIN` must not wrap into the tolerance.
    match now.checked_sub(ts).map(i64::unsigned_abs) {
        Some(skew) if skew <= TOLERANCE_SECS.unsigned_abs() => Ok(()),
        _ => Err(VerifyError::Timestamp),
    }
}

/// The Standard Webhooks scheme: HMAC-SHA256 over `{id}.{timestamp}.{body}` with the
/// base64 key of a `whsec_` secret; `webhook-signature` holds space-separated `v1,<base64>`
/// signatures (several during a key rotation).
#[derive(Debug, Clone)]
pub struct StandardWebhooks {
    key: Secret<Vec<u8>>,
}

impl StandardWebhooks {
    /// From a `whsec_...` secret (the prefix is optional).
    pub fn new(secret: &str) -> Result<Self, SecretError> {
        let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
        if b64.is_empty() {
            return Err(SecretError::Empty);
        }
        let key = B64.decode(b64).map_err(|_| SecretError::NotBase64)?;
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self {
            key: Secret::new(key),
        })
    }

    /// A fresh `whsec_` secret of 32 random bytes, for a sender and receiver set up together.
    pub fn generate_secret() -> String {
        let key: [u8; 32] = rand::random();
        format!("whsec_{}", B64.encode(key))
    }

    /// The `webhook-signature` value for a message: `v1,<base64>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let ts = timestamp.to_string();
        let mac = hmac_sha256(
            self.key.expose(),
            &[id.as_bytes(), b".", ts.as_bytes(), b".", body],
        );
        format!("v1,{}", B64.encode(mac))
    }

    /// Verifies `webhook-id`, `webhook-timestamp` and `webhook-signature` against `body`.
    /// Returns the webhook id, which callers use to de-duplicate.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<String, VerifyError> {
        let id = header(headers, "webhook-id")?;
        let ts_text = header(headers, "webhook-timestamp")?;
        let signatures = header(headers, "webhook-signature")?;
        let ts: i64 = ts_text
            .parse()
            .map_err(|_| VerifyError::Malformed("webhook-timestamp"))?;
        check_timestamp(ts, now)?;
        let expected = hmac_sha256(
            self.key.expose(),
            &[id.as_bytes(), b".", ts_text.as_bytes(), b".", body],
        );
        let mut matched = false;
        for sig in signatures.split(' ') {
            let Some(("v1", b64)) = sig.split_once(',') else {
                continue;
            };
            if let Ok(given) = B64.decode(b64) {
                // No early exit: every candidate is compared.
                matched |= same(&expected, &given);
            }
        }
        if matched {
            Ok(id.to_owned())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}

/// Stripe's scheme: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]`, HMAC-SHA256 over
/// `{t}.{body}` keyed with the whole endpoint secret (`whsec_...` included).
#[derive(Debug, Clone)]
pub struct StripeSignature {
    secret: Secret<String>,
}

impl StripeSignature {
    /// From the endpoint's signing secret.
    pub fn new(secret: &str) -> Result<Self, SecretError> {
        if secret.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self {
            secret: Secret::new(secret.to_owned()),
        })
    }

    /// The `Stripe-Signature` value for `body` at `timestamp`.
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> String {
        let ts = timestamp.to_string();
        let mac = hmac_sha256(
            self.secret.expose().as_bytes(),
            &[ts.as_bytes(), b".", body],
        );
        format!("t={ts},v1={}", hex::encode(mac))
    }

    /// Verifies the `Stripe-Signature` header against `body`.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), VerifyError> {
        const NAME: &str = "stripe-signature";
        let value = header(headers, NAME)?;
        let mut ts_text = None;
        let mut candidates = Vec::new();
        for part in value.split(',') {
            match part.trim().split_once('=') {
                Some(("t", t)) => ts_text = Some(t),
                Some(("v1", s)) => candidates.push(s),
                _ => {}
            }
        }
        let ts_text = ts_text.ok_or(VerifyError::Malformed(NAME))?;
        let ts: i64 = ts_text.parse().map_err(|_| VerifyError::Malformed(NAME))?;
        check_timestamp(ts, now)?;
        let expected = hmac_sha256(
            self.secret.expose().as_bytes(),
            &[ts_text.as_bytes(), b".", body],
        );
        let mut matched = false;
        for c in candidates {
            if let Ok(given) = hex::decode(c) {
                matched |= same(&expected, &given);
            }
        }
        if matched {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}

/// An HMAC-SHA256 of the body, hex, after a fixed prefix in one header: GitHub's
/// `X-Hub-Signature-256: sha256=<hex>` and EasyPost's `X-Hmac-Signature: hmac-sha256-hex=<hex>`.
/// It carries no timestamp: replays are stopped by de-duplicating delivery ids.
#[derive(Debug, Clone)]
pub struct HmacHexSignature {
    key: Secret<Vec<u8>>,
    header: &'static str,
    prefix: &'static str,
}

impl HmacHexSignature {
    /// GitHub's: `X-Hub-Signature-256: sha256=<hex>`, keyed with the secret's bytes.
    pub fn github(secret: &str) -> Result<Self, SecretError> {
        Self::custom(secret.as_bytes(), "x-hub-signature-256", "sha256=")
    }

    /// EasyPost's: `X-Hmac-Signature: hmac-sha256-hex=<hex>`, keyed with the webhook secret
    /// in Unicode NFKD form (as EasyPost's client libraries normalize it).
    pub fn easypost(secret: &str) -> Result<Self, SecretError> {
        let normalized: String = secret.nfkd().collect();
        Self::custom(
            normalized.as_bytes(),
            "x-hmac-signature",
            "hmac-sha256-hex=",
        )
    }

    /// The same scheme under another header name (lowercase) and value prefix.
    pub fn custom(
        key: &[u8],
        header: &'static str,
        prefix: &'static str,
    ) -> Result<Self, SecretError> {
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self {
            key: Secret::new(key.to_vec()),
            header,
            prefix,
        })
    }

    /// The header this scheme's signature travels in (lowercase).
    pub fn header(&self) -> &'static str {
        self.header
    }

    /// The header value for `body`.
    pub fn sign(&self, body: &[u8]) -> String {
        format!(
            "{}{}",
            self.prefix,
            hex::encode(hmac_sha256(self.key.expose(), &[body]))
        )
    }

    /// Verifies the signature header against `body`.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
        let value = header(headers, self.header)?;
        let hex_sig = value
            .strip_prefix(self.prefix)
            .ok_or(VerifyError::Malformed("signature"))?;
        let given = hex::decode(hex_sig).map_err(|_| VerifyError::Malformed("signature"))?;
        let expected = hmac_sha256(self.key.expose(), &[body]);
        if same(&expected, &given) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}

/// Twilio's scheme: `X-Twilio-Signature` = base64 HMAC-SHA1, keyed with the auth token, of the
/// full callback URL followed by every POST parameter's name and value, sorted by name.
#[derive(Debug, Clone)]
pub struct TwilioSignature {
    auth_token: Secret<String>,
}

impl TwilioSignature {
    /// From the account's auth token.
    pub fn new(auth_token: &str) -> Result<Self, SecretError> {
        if auth_token.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self {
            auth_token: Secret::new(auth_token.to_owned()),
        })
    }

    fn compute(&self, url: &str, params: &[(String, String)]) -> [u8; 20] {
        let mut sorted: Vec<&(String, String)> = params.iter().collect();
        sorted.sort();
        let mut mac =
            <Hmac<sha1::Sha1> as Mac>::new_from_slice(self.auth_token.expose().as_bytes())
                .unwrap_or_else(|_| unreachable!());
        mac.update(url.as_bytes());
        for (k, v) in sorted {
            mac.update(k.as_bytes());
            mac.update(v.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }

    /// The header value for a callback to `url` with form `params`.
    pub fn sign(&self, url: &str, params: &[(String, String)]) -> String {
        B64.encode(self.compute(url, params))
    }

    /// Verifies `X-Twilio-Signature` for a callback received at `url` with form `params`.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        url: &str,
        params: &[(String, String)],
    ) -> Result<(), VerifyError> {
        let value = header(headers, "x-twilio-signature")?;
        let given = B64
            .decode(value)
            .map_err(|_| VerifyError::Malformed("x-twilio-signature"))?;
        if same(&self.compute(url, params), &given) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}

#[cfg(test)]
mod tests;
