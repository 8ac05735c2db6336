//! Lifecycle events: what Switchyard tells the core application (contract section 2).

use std::fmt;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::command::Metadata;
use crate::error::ErrorInfo;
use crate::name::Name;

/// Where a command is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Accepted and durably queued.
    Pending,
    /// A worker is calling the provider.
    Processing,
    /// An attempt failed transiently; the next one is scheduled.
    Retrying,
    /// The provider accepted a long-running operation.
    Waiting,
    /// Finished successfully. Terminal.
    Completed,
    /// Failed for good. Terminal.
    Failed,
    /// The provider may have acted but its answer cannot be read (v1.1). Not terminal: a
    /// status check or an operator ends it.
    Unknown,
    /// A repeat of an earlier command's identity and fingerprint under another id (v1.1): not
    /// executed; `duplicate_of` names the original. Terminal for this id.
    Duplicate,
}

impl Status {
    /// All statuses, in lifecycle order.
    pub const ALL: [Status; 8] = [
        Self::Pending,
        Self::Processing,
        Self::Retrying,
        Self::Waiting,
        Self::Unknown,
        Self::Completed,
        Self::Failed,
        Self::Duplicate,
    ];

    /// Whether nothing may follow this status within its run.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Duplicate)
    }

    /// The wire name, used in routing keys and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Retrying => "retrying",
            Self::Waiting => "waiting",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
            Self::Duplicate => "duplicate",
        }
    }

    /// Whether `next` may directly follow `self` in one command's lifecycle.
    pub fn may_precede(self, next: Status) -> bool {
        use Status::*;
        match self {
            Pending => matches!(next, Processing | Failed),
            Processing => matches!(next, Retrying | Waiting | Unknown | Completed | Failed),
            Retrying => matches!(next, Processing | Failed),
            Waiting | Unknown => matches!(next, Completed | Failed),
            Completed | Failed | Duplicate => false,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lifecycle event as published on `switchyard.events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "Switchyard lifecycle event v1")]
pub struct Event {
    /// Deterministic per transition: the same transition replayed has the same id.
    pub event_id: Uuid,
    /// The command this event is about.
    pub command_id: Uuid,
    /// Increases along one command's lifecycle, across runs: the highest `seq` is the current
    /// state.
    pub seq: u64,
    /// The run this event belongs to (v1.1): 0 for the first, n for the n-th replay.
    #[serde(default)]
    pub run: u32,
    /// The new status.
    pub status: Status,
    /// Integration kind.
    pub kind: Name,
    /// Provider.
    pub provider: Name,
    /// Operation.
    pub operation: Name,
    /// The attempt this event belongs to (0 before the first attempt).
    pub attempt: u32,
    /// When the transition happened.
    pub occurred_at: DateTime<Utc>,
    /// The command's metadata, echoed.
    #[serde(default)]
    pub metadata: Metadata,
    /// The outcome, on `completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The provider's own id for the work, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_reference: Option<String>,
    /// When the next attempt is due, on `retrying`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Why, on `retrying`, `unknown` and `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// The original command, on `duplicate` (v1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<Uuid>,
}

impl Event {
    /// `{kind}.{provider}.{status}`.
    pub fn routing_key(&self) -> String {
        format!("{}.{}.{}", self.kind, self.provider, self.status)
    }

    /// The body as published.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes an event body.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
