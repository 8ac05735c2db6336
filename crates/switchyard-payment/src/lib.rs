//! The `payment` kind: its operations' payloads and its providers.
//!
//! Commands stay provider-neutral: `payment.{provider}.charge` always carries a [`Charge`],
//! whichever provider executes it. Providers written in code live in `providers/`, one file
//! each, registered in `providers.rs`; any provider can also be a generic `type = "http"`
//! provider declared in configuration alone.

use std::net::SocketAddr;

use switchyard_config::{ConfigError, ProviderConfig};
use switchyard_core::{KindSpec, Name, OperationSpec};
use switchyard_worker::{CodeProvider, Kind, ProviderContext};

pub mod payload;
mod providers;

pub use payload::{Charge, Refund};

/// The payment kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Payment;

impl Kind for Payment {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: Name::new("payment").unwrap_or_else(|e| panic!("{e}")),
            operations: vec![
                OperationSpec::of::<Charge>("charge"),
                OperationSpec::of::<Refund>("refund"),
            ],
        }
    }

    fn default_listen(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9101))
    }

    fn code_provider(
        &self,
        config: &ProviderConfig,
        index: usize,
        ctx: &ProviderContext,
    ) -> Result<Option<CodeProvider>, ConfigError> {
        providers::build(config, index, ctx)
    }
}
