//! A generic provider's callbacks read by declaration: how deliveries are signed, whether the
//! body is JSON or a form, and where the reference, the status and the delivery id are.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};
use switchyard_config::ConfigError;
use switchyard_core::{CallbackOutcome, ErrorClass, ErrorInfo};
use switchyard_http::Redactor;
use switchyard_webhooks::{
    Notice, Receiver, Scheme, StandardWebhooks, StripeSignature, TwilioSignature, Verified,
    WebhookReader,
};

use super::shape::scalar_text;
use crate::secrets::provider_secrets;

/// A provider's `callbacks` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackConfig {
    /// How deliveries are signed: `standard` (Standard Webhooks), `stripe`, or `twilio`.
    pub signature: Signature,
    /// The signing secret's environment variable (several separated by whitespace while one
    /// is rotated).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Or its file.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// For `twilio`: the public URL the provider posts to (it is part of the signature).
    #[serde(default)]
    pub url: Option<String>,
    /// `json` (the default) or `form`.
    #[serde(default)]
    pub format: Format,
    /// Where the provider's reference is: a JSON pointer, or a form field.
    pub reference: String,
    /// Where the status is and which values mean what.
    pub status: CallbackStatus,
    /// Where a delivery's own id is, for de-duplication (a header for `twilio`:
    /// `I-Twilio-Idempotency-Token`); else the signed id, else reference and status.
    #[serde(default)]
    pub id: Option<String>,
}

/// The signature schemes a configured provider may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signature {
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    Standard,
    /// Stripe's `Stripe-Signature`.
    Stripe,
    /// Twilio's `X-Twilio-Signature` over the URL and the form.
    Twilio,
}

/// How a callback body is encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// JSON.
    #[default]
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
}

/// The status of a callback.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackStatus {
    /// A JSON pointer, or a form field.
    pub field: String,
    /// Values meaning done.
    #[serde(default)]
    pub succeeded: Vec<String>,
    /// Values meaning still going.
    #[serde(default)]
    pub pending: Vec<String>,
    /// Values meaning failed for good.
    #[serde(default)]
    pub failed: Vec<String>,
}

impl CallbackConfig {
    /// The receiver for entry `index`; errors name the key.
    pub fn receiver(&self, index: usize, redactor: &Redactor) -> Result<Receiver, ConfigError> {
        let key = format!("providers[{index}].callbacks");
        // Each secret is parsed once, by the scheme's own constructor (an unusable one names
        // the key); none at all is refused.
        fn keys<K, E: std::fmt::Display>(
            config: &CallbackConfig,
            index: usize,
            key: &str,
            make: impl Fn(&str) -> Result<K, E>,
        ) -> Result<Vec<K>, ConfigError> {
            provider_secrets(
                index,
                "callbacks.secret",
                config.secret_env.as_deref(),
                config.secret_file.as_deref(),
                make,
            )?
            .map(|(_, keys)| keys)
            .ok_or_else(|| {
                ConfigError::invalid(format!("{key}.secret_env"), "set secret_env or secret_file")
            })
        }
        let scheme = match self.signature {
            Signature::Standard => {
                Scheme::Standard(keys(self, index, &key, StandardWebhooks::new)?)
            }
            Signature::Stripe => Scheme::Stripe(keys(self, index, &key, StripeSignature::new)?),
            Signature::Twilio => {
                let url = self.url.clone().ok_or_else(|| {
                    ConfigError::invalid(
                        format!("{key}.url"),
                        "twilio signatures cover the public callback URL: set it",
                    )
                })?;
                url::Url::parse(&url)
                    .map_err(|e| ConfigError::invalid(format!("{key}.url"), e.to_string()))?;
                Scheme::Twilio {
                    signers: keys(self, index, &key, TwilioSignature::new)?,
                    url,
                }
            }
        };
        if self.format == Format::Json {
            for (name, p) in [
                ("reference", &self.reference),
                ("status.field", &self.status.field),
            ] {
                if !p.starts_with('/') {
                    return Err(ConfigError::invalid(
                        format!("{key}.{name}"),
                        "a JSON body's fields are JSON pointers, e.g. \"/data/id\"",
                    ));
                }
            }
        }
        Ok(Receiver {
            scheme,
            reader: Arc::new(DeclaredReader {
                config: self.clone(),
                redactor: redactor.clone(),
            }),
        })
    }
}

#[derive(Debug)]
struct DeclaredReader {
    config: CallbackConfig,
    redactor: Redactor,
}

impl DeclaredReader {
    fn fields(&self, body: &[u8]) -> Result<Value, String> {
        match self.config.format {
            Format::Json => serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}")),
            Format::Form => Ok(Value::Object(
                form_urlencoded::parse(body)
                    .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                    .collect::<Map<_, _>>(),
            )),
        }
    }

    fn get(&self, fields: &Value, at: &str) -> Option<String> {
        let v = match self.config.format {
            Format::Json => fields.pointer(at),
            Format::Form => fields.get(at),
        }?;
        scalar_text(v)
    }
}

impl WebhookReader for DeclaredReader {
    fn read(&self, delivery: &Verified<'_>) -> Result<Option<Notice>, String> {
        let fields = self.fields(delivery.body())?;
        let reference = self
            .get(&fields, &self.config.reference)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| format!("no reference at {}", self.config.reference))?;
        let s = &self.config.status;
        let status = self
            .get(&fields, &s.field)
            .ok_or_else(|| format!("no status at {}", s.field))?;
        let outcome = if s.succeeded.contains(&status) {
            CallbackOutcome::Succeeded {
                result: self.redactor.json(&fields),
            }
        } else if s.failed.contains(&status) {
            CallbackOutcome::Failed {
                error: ErrorInfo::new(
                    ErrorClass::Permanent,
                    "provider_failed",
                    self.redactor
                        .text(&format!("the provider reported {status:?}")),
                ),
            }
        } else if s.pending.contains(&status) {
            CallbackOutcome::Pending
        } else {
            // A status nobody declared: recorded, no effect; the wait's deadline still holds.
            CallbackOutcome::Pending
        };
        let id = match &self.config.id {
            Some(at) => delivery
                .header(at)
                .map(str::to_owned)
                .or_else(|| self.get(&fields, at)),
            None => None,
        }
        .or_else(|| delivery.signed_id().map(str::to_owned))
        .unwrap_or_else(|| format!("{reference}.{status}"));
        Ok(Some(Notice {
            id,
            reference,
            outcome,
        }))
    }
}
