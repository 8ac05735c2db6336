//! Attempt records: what happened on the wire for one provider request, redacted before it
//! leaves the worker, and kept by the ledger.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ErrorClass;
use crate::name::Name;

/// The AMQP `type` property of an attempt record message.
pub const ATTEMPT_TYPE_V1: &str = "switchyard.attempt.v1";

/// One HTTP request to a provider and its answer (or failure). Headers and bodies are redacted
/// and capped before the record is built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AttemptRecord {
    /// Unique per request: the ledger de-duplicates on it.
    pub record_id: Uuid,
    /// The command.
    pub command_id: Uuid,
    /// The delivery attempt (1-based) this request belongs to; quick in-process retries share it.
    pub attempt: u32,
    /// Integration kind.
    pub kind: Name,
    /// Provider.
    pub provider: Name,
    /// Operation.
    pub operation: Name,
    /// HTTP method.
    pub method: String,
    /// The URL, without query-string secrets.
    pub url: String,
    /// The answer's status, when there was an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Time from sending to the end of the body (or the failure).
    pub duration_ms: u64,
    /// When the request was sent.
    pub started_at: DateTime<Utc>,
    /// Request headers, redacted.
    pub request_headers: BTreeMap<String, String>,
    /// Request body, redacted and capped.
    pub request_body: String,
    /// Response headers, redacted.
    #[serde(default)]
    pub response_headers: BTreeMap<String, String>,
    /// Response body, redacted and capped.
    #[serde(default)]
    pub response_body: String,
    /// How the request failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    /// Why, redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl AttemptRecord {
    /// `{kind}.{provider}`: the routing key on `switchyard.attempts`.
    pub fn routing_key(&self) -> String {
        format!("{}.{}", self.kind, self.provider)
    }

    /// The body as published.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Collects the records of one delivery attempt; providers push, the worker publishes.
/// Clones share the same list, so quick retries made by the tower stack land in it too.
#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<AttemptRecord>>>);

impl Recorder {
    /// Adds a record.
    pub fn push(&self, record: AttemptRecord) {
        if let Ok(mut v) = self.0.lock() {
            v.push(record);
        }
    }

    /// Takes every record collected so far.
    pub fn take(&self) -> Vec<AttemptRecord> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}
