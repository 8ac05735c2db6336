//! Payloads of the notification operations; schemas committed under `schemas/notification/`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `send_email`: one message to one or more recipients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendEmail {
    /// Recipients.
    #[schemars(length(min = 1, max = 1000), inner(email))]
    pub to: Vec<String>,
    /// Sender address.
    #[schemars(email)]
    pub from: String,
    /// Subject line.
    #[schemars(length(min = 1, max = 998))]
    pub subject: String,
    /// Plain-text body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// HTML body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

/// `send_sms`: one text message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendSms {
    /// E.164 number, e.g. `+14155550100`.
    #[schemars(pattern(r"^\+[1-9][0-9]{1,14}$"))]
    pub to: String,
    /// The text.
    #[schemars(length(min = 1, max = 1600))]
    pub body: String,
    /// Sender number or id; the provider's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// `send_webhook`: a signed webhook to a partner's URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendWebhook {
    /// The partner's endpoint (HTTPS).
    #[schemars(pattern(r"^https://"), length(max = 2048))]
    pub url: String,
    /// The event type, e.g. `order.shipped`.
    #[schemars(length(min = 1, max = 255))]
    pub event_type: String,
    /// The event's data.
    pub data: Map<String, Value>,
}
