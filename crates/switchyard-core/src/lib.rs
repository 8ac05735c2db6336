//! Switchyard's vocabulary: the command and event types of the wire contract, the lifecycle
//! state machine, error classes, idempotency keys, secrets and the provider trait.
//!
//! This crate owns *what* travels and which transitions are legal. It does not talk to the
//! broker, the network or a database: those live in `switchyard-amqp`, `switchyard-http` and
//! the ledger, which all speak these types.

pub mod attempt;
pub mod command;
pub mod error;
pub mod event;
pub mod idempotency;
pub mod kind;
pub mod lifecycle;
pub mod name;
pub mod provider;
pub mod secret;
pub mod waiting;

pub use attempt::{AttemptRecord, Recorder};
pub use command::{Command, CommandDraft, Fingerprint, Identity, InvalidCommand, Metadata};
pub use error::{ErrorClass, ErrorInfo};
pub use event::{Event, Status};
pub use idempotency::IdempotencyNamespace;
pub use kind::{KindSpec, OperationSpec, PayloadValidator};
pub use lifecycle::{Attempt, Lifecycle};
pub use name::{Name, RoutingKey};
pub use provider::{Completion, Provider, ProviderCall, ProviderError, ProviderOutcome};
pub use secret::Secret;
pub use waiting::{Callback, CallbackOutcome, Expiry, WaitReason, WaitRecord};

/// The AMQP `type` property of a command message.
pub const COMMAND_TYPE_V1: &str = "switchyard.command.v1";
/// The AMQP `type` property of a lifecycle event message.
pub const EVENT_TYPE_V1: &str = "switchyard.event.v1";
