//! The provider trait: one implementation per vendor API (or the generic HTTP provider).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::attempt::Recorder;
use crate::command::Command;
use crate::error::{ErrorClass, ErrorInfo};
use crate::name::Name;
use crate::waiting::CallbackOutcome;

/// One call to a provider for one attempt of a command.
#[derive(Debug, Clone)]
pub struct ProviderCall {
    /// The command being executed.
    pub command: Arc<Command>,
    /// The 1-based attempt number.
    pub attempt: u32,
    /// Sent as the provider's idempotency key: identical on every attempt and replay.
    pub idempotency_key: Uuid,
    /// W3C trace context to propagate, when there is one.
    pub traceparent: Option<String>,
    /// Where the provider records every HTTP request it makes (redacted).
    pub recorder: Recorder,
}

impl ProviderCall {
    /// The command's payload as the operation's type. The ingress validated it against the
    /// schema, so a failure here is a command that bypassed it: class `invalid`.
    pub fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T, ProviderError> {
        serde_json::from_value(Value::Object(self.command.payload.clone()))
            .map_err(|e| ProviderError::new(ErrorClass::Invalid, "invalid_payload", e.to_string()))
    }
}

/// How a successful call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderOutcome {
    /// The provider finished: `completed`.
    Completed {
        /// The outcome, in the kind's result shape.
        result: Value,
        /// The provider's id for the work.
        reference: Option<String>,
    },
    /// The provider accepted long-running work: `waiting`.
    Waiting {
        /// The provider's id for the work, used to correlate its completion.
        reference: String,
    },
}

/// A classified provider failure. Classification happens once, next to the HTTP call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ProviderError {
    /// The class: decides retry or dead-letter.
    pub class: ErrorClass,
    /// Short machine-readable code.
    pub code: String,
    /// Redacted explanation.
    pub message: String,
    /// The provider's HTTP status, when there was a response.
    pub http_status: Option<u16>,
    /// The provider's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
    /// The request provably never left (no connection, an open circuit): calling again
    /// cannot repeat an effect, even at a provider that takes no idempotency key.
    pub never_sent: bool,
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.class, self.code, self.message)
    }
}

impl ProviderError {
    /// A failure of `class` with no HTTP status.
    pub fn new(class: ErrorClass, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            class,
            code: code.into(),
            message: message.into(),
            http_status: None,
            retry_after: None,
            never_sent: false,
        }
    }

    /// Marks a failure that happened before the request left: no connection was made.
    #[must_use]
    pub fn before_sending(mut self) -> Self {
        self.never_sent = true;
        self
    }

    /// Whether the provider may have received the request and acted without our reading its
    /// answer: a timeout or a broken connection after the request went out. At a provider that
    /// takes no idempotency key such a failure is `unknown`, never retried (the contract's
    /// "never a second call"); an HTTP answer, even a 5xx, is the provider speaking and is not
    /// in doubt.
    pub fn left_in_doubt(&self) -> bool {
        self.class.is_retryable() && self.http_status.is_none() && !self.never_sent
    }

    /// A status check asked of a provider that takes none (a permanent misconfiguration).
    pub fn no_status_checks(provider: &Name) -> Self {
        Self::new(
            ErrorClass::Permanent,
            "no_status_checks",
            format!("provider {:?} takes no status checks", provider.as_str()),
        )
    }

    /// A 2xx answer that cannot be read: the provider may have acted, so the outcome is
    /// `unknown` (never a plain failure, never retried blindly).
    pub fn unreadable_answer(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Unknown, "unreadable_answer", message)
    }

    /// The event and dead-letter view of this error.
    pub fn info(&self) -> ErrorInfo {
        ErrorInfo {
            class: self.class,
            code: self.code.clone(),
            message: self.message.clone(),
            http_status: self.http_status,
        }
    }
}

/// How a provider finishes work it accepted ([`ProviderOutcome::Waiting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// It calls back (a verified webhook): nothing to do but wait for it, or for the deadline.
    Callback,
    /// It has no callbacks and must be asked: status checks are scheduled through the delay
    /// tiers, with backoff, until a terminal answer or the deadline.
    Poll,
}

/// A provider of one kind: maps a command to the vendor's API and the answer back.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    /// The `{provider}` segment of routing keys.
    fn name(&self) -> &Name;

    /// The operations this provider offers.
    fn operations(&self) -> &[Name];

    /// Performs one attempt. Implementations classify every failure.
    async fn call(&self, call: &ProviderCall) -> Result<ProviderOutcome, ProviderError>;

    /// Whether the provider de-duplicates by the idempotency key it is sent. One that does not
    /// (SendGrid, Twilio, a generic provider with `idempotent = false`) is never called twice
    /// for one attempt: a crash during its call makes the outcome `unknown` instead.
    fn idempotent(&self) -> bool {
        true
    }

    /// How accepted work finishes; most providers call back.
    fn completion(&self) -> Completion {
        Completion::Callback
    }

    /// Asks how the work accepted under `reference` is going. Only called when
    /// [`Provider::completion`] is [`Completion::Poll`]; `Pending` schedules the next check.
    async fn check(
        &self,
        call: &ProviderCall,
        reference: &str,
    ) -> Result<CallbackOutcome, ProviderError> {
        let _ = (call, reference);
        Err(ProviderError::no_status_checks(self.name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_retryable_failure_without_an_answer_after_sending_is_in_doubt() {
        let timeout = ProviderError::new(ErrorClass::Timeout, "timeout", "x");
        assert!(timeout.left_in_doubt());
        let reset = ProviderError::new(ErrorClass::Transient, "io", "x");
        assert!(reset.left_in_doubt());
        assert!(!reset.clone().before_sending().left_in_doubt());
        let mut answered = ProviderError::new(ErrorClass::Transient, "http_503", "x");
        answered.http_status = Some(503);
        assert!(!answered.left_in_doubt());
        assert!(!ProviderError::new(ErrorClass::Permanent, "x", "x").left_in_doubt());
        assert!(!ProviderError::unreadable_answer("x").left_in_doubt());
    }
}
