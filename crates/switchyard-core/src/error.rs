//! Error classes: the one classification every failure gets, next to where it arises.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a failure is classified. The worker alone maps a class to a broker action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The outcome is unknown or the provider is temporarily unable: retry with the same key.
    Transient,
    /// The provider refused for good (4xx, business rejection): never retried.
    Permanent,
    /// The attempt ran out of time: an unknown outcome, retried like a transient failure.
    Timeout,
    /// The command could not be decoded or validated: never retried.
    Invalid,
    /// The command's deadline passed before it could finish.
    Expired,
    /// The provider may have acted but its answer cannot be read (v1.1): never retried
    /// blindly; a status check or an operator decides.
    Unknown,
}

impl ErrorClass {
    /// Whether a failure of this class may succeed when tried again.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Transient | Self::Timeout)
    }

    /// The wire name, also used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::Timeout => "timeout",
            Self::Invalid => "invalid",
            Self::Expired => "expired",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `error` object of a `failed` or `retrying` event, and of dead-letter headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorInfo {
    /// The classification.
    pub class: ErrorClass,
    /// A short machine-readable code, e.g. `http_503`, `card_declined`, `schema`.
    pub code: String,
    /// A human-readable, redacted explanation.
    pub message: String,
    /// The provider's HTTP status, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
}

impl ErrorInfo {
    /// Builds an error without an HTTP status.
    pub fn new(class: ErrorClass, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            class,
            code: code.into(),
            message: message.into(),
            http_status: None,
        }
    }
}
