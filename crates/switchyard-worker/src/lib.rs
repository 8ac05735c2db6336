//! The worker runtime, generic over the integration kind.
//!
//! A kind's binary (`switchyard-payment`, ...) is a few lines: it hands its [`Kind`] to
//! [`run`]. The runtime consumes every provider's work queue, decodes and validates each
//! command, calls the provider through a tower stack (concurrency limit, quick retry,
//! per-attempt timeout), reports every step as an event and decides the broker action: ack,
//! delayed retry through a delay tier, or dead-letter. A delivery is acknowledged only after
//! its outcome's event (and any republish) is confirmed by the broker.
//!
//! It owns no vendor knowledge: providers written in code live in their kind's crate; the
//! generic `type = "http"` provider of the contract lives here because every kind can use it.

mod abandoned;
mod answered;
mod circuit;
mod entry;
pub mod generic;
mod handler;
mod kind;
mod plan;
mod retry;
mod runtime;
mod secrets;
mod stack;
mod unroutable;

pub use abandoned::DELIVERY_LIMIT_CODE;
pub use entry::{main, main_configured};
pub use generic::{GenericHttpProvider, parse_report};
pub use kind::{
    Catalog, CodeProvider, ConfiguredKind, Kind, NotInCatalog, ProviderContext, ProviderEntry,
    build_providers, check_operations, payload_validator, provider_context, redactor, topology_of,
    with_configured_kinds,
};
pub use retry::RetrySchedule;
pub use runtime::{WorkerHandle, journal_retention, open_journal, run, start};
pub use secrets::{provider_base_url, provider_secret, provider_secrets};
pub use stack::{CircuitSettings, ProviderStack, StackSettings, provider_stack};
