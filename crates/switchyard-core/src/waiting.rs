//! The messages that end a `waiting` command: the worker's record of what it waits for, a
//! provider's callback (by webhook or polling), and the deadline's expiry. All three go to
//! `switchyard.callbacks`, where the one component that knows the waiting commands (the
//! ledger's resolver) turns them into exactly one terminal event.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{Command, ErrorInfo, Name};

/// AMQP `type` of a [`WaitRecord`].
pub const WAIT_TYPE_V1: &str = "switchyard.wait.v1";
/// AMQP `type` of a [`Callback`].
pub const CALLBACK_TYPE_V1: &str = "switchyard.callback.v1";
/// AMQP `type` of an [`Expiry`].
pub const EXPIRY_TYPE_V1: &str = "switchyard.expiry.v1";

/// Published by a worker when a provider accepted long-running work, before the `waiting`
/// event: the whole command, so its end can be reported (and dead-lettered) without the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitRecord {
    /// The command, as received.
    pub command: Command,
    /// The attempt the provider accepted.
    pub attempt: u32,
    /// The run of the command this wait belongs to (v1.1; 0 for the first run).
    #[serde(default)]
    pub run: u32,
    /// Why the command waits: the provider accepted long-running work (`waiting`), or its
    /// answer could not be read (`unknown`, v1.1: no expiry; a status check or an operator
    /// ends it).
    #[serde(default)]
    pub reason: WaitReason,
    /// The provider's reference: how callbacks name the command. For an `unknown` outcome,
    /// the provider idempotency key the call carried.
    pub reference: String,
    /// When the command started waiting.
    pub since: DateTime<Utc>,
    /// When it expires if nothing ends it first.
    pub expires_at: DateTime<Utc>,
}

/// Why a command waits for the resolver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    /// Long-running work the provider accepted; ends by callback, polling or expiry.
    #[default]
    Waiting,
    /// An answer that could not be read; ends by a status check or an operator, never expires.
    Unknown,
}

/// How a provider says a long-running operation went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum CallbackOutcome {
    /// Done: the command completes with `result`.
    Succeeded {
        /// The provider's outcome (redacted).
        result: Value,
    },
    /// Done and failed: the command fails (permanent) and is dead-lettered.
    Failed {
        /// Why (redacted).
        error: ErrorInfo,
    },
    /// Still running: recorded, no effect on the state.
    Pending,
}

impl CallbackOutcome {
    /// Whether this outcome ends the command.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Self::Pending)
    }
}

/// A verified provider callback (or a poll's answer), correlated by `reference`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Callback {
    /// The provider that sent it (the `{provider}` of `/v1/webhooks/{provider}`).
    pub provider: Name,
    /// The sender's delivery id: the same id has one effect, however often it arrives.
    pub webhook_id: String,
    /// The provider's reference of the operation.
    pub reference: String,
    /// What happened.
    pub outcome: CallbackOutcome,
    /// When Switchyard received it.
    pub received_at: DateTime<Utc>,
}

/// A waiting command's deadline, delivered by the delay tiers when it is due.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expiry {
    /// The command.
    pub command_id: Uuid,
    /// When it expires.
    pub due: DateTime<Utc>,
}

macro_rules! json_bytes {
    ($($t:ty),*) => {$(
        impl $t {
            /// The JSON body.
            pub fn to_bytes(&self) -> Vec<u8> {
                serde_json::to_vec(self).unwrap_or_default()
            }
            /// Decodes a JSON body.
            pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
                serde_json::from_slice(bytes)
            }
        }
    )*};
}
json_bytes!(WaitRecord, Callback, Expiry);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_tagged_by_status() {
        let ok: CallbackOutcome =
            serde_json::from_str(r#"{"status":"succeeded","result":{"a":1}}"#).unwrap();
        assert!(ok.is_terminal());
        let pending: CallbackOutcome = serde_json::from_str(r#"{"status":"pending"}"#).unwrap();
        assert!(!pending.is_terminal());
        assert!(serde_json::from_str::<CallbackOutcome>(r#"{"status":"done"}"#).is_err());
    }
}
