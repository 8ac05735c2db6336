//! A decided outcome: what a delivery must publish before it is acknowledged.
//!
//! A plan is decided once per step in the journal, before any of it is published; a
//! redelivery after a crash carries out the stored plan again instead of deciding anew. Every
//! part of it is idempotent to publish again: events have deterministic ids, a retry copy is a
//! step the journal begins once, a wait record is keyed by its command and run.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use switchyard_core::{ErrorInfo, Event, WaitReason};

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "plan", rename_all = "snake_case")]
pub(crate) enum Plan {
    /// Report `event` (`completed`).
    Report {
        /// The event.
        event: Event,
    },
    /// Copy the command into the delay tier of `tier_ms` for the next attempt, then report
    /// `event` (`retrying`).
    Retry {
        /// The event.
        event: Event,
        /// The delay tier.
        tier_ms: u64,
    },
    /// Dead-letter the command, then report `event` (`failed`).
    DeadLetter {
        /// The event.
        event: Event,
        /// Why, for the dead-letter headers.
        error: ErrorInfo,
        /// Attempts made, for the dead-letter headers.
        attempts: u32,
    },
    /// Hand the command to the resolver, then report `event` (`waiting` or `unknown`).
    Park {
        /// The event.
        event: Event,
        /// How callbacks and status checks name the work.
        reference: String,
        /// Waiting for long-running work, or for someone to learn an unknown outcome.
        reason: WaitReason,
        /// When it started waiting.
        since: DateTime<Utc>,
        /// When a `waiting` command expires (unused for `unknown`).
        expires_at: DateTime<Utc>,
    },
}

impl Plan {
    pub(crate) fn dead_letter(event: Event, error: ErrorInfo, attempts: u32) -> Self {
        Self::DeadLetter {
            event,
            error,
            attempts,
        }
    }

    /// The event the plan ends with.
    pub(crate) fn event(&self) -> &Event {
        match self {
            Self::Report { event }
            | Self::Retry { event, .. }
            | Self::DeadLetter { event, .. }
            | Self::Park { event, .. } => event,
        }
    }

    /// The stored form.
    pub(crate) fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a stored plan; `None` when it was written by an incompatible version.
    pub(crate) fn decode(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::{Command, ErrorClass, Lifecycle};

    #[test]
    fn a_plan_round_trips_through_its_stored_form() {
        let c: Command = serde_json::from_value(serde_json::json!({
            "id": "0190b3f4-7f6e-7c3a-9d2e-3b1f2a4c5d6e",
            "kind": "payment", "provider": "stripe", "operation": "charge",
            "payload": {}, "created_at": "2026-11-25T10:00:00Z"
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let now = Utc::now();
        let (attempt, _) = Lifecycle::run(&c, 2).begin(3, now);
        let error = ErrorInfo::new(ErrorClass::Transient, "http_503", "x");
        let plan = Plan::Retry {
            event: attempt.retry(error, now, now),
            tier_ms: 5000,
        };
        assert_eq!(Plan::decode(&plan.encode()), Some(plan));
        assert_eq!(Plan::decode("{\"plan\":\"teleport\"}"), None);
    }
}
