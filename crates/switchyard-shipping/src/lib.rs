//! The `shipping` kind: its operations' payloads and its providers.
//!
//! Commands stay provider-neutral: `shipping.{provider}.create_label` always carries a
//! [`CreateLabel`]. Providers written in code live in `providers/`, registered in
//! `providers.rs`; any provider can also be a generic `type = "http"` provider.

use std::net::SocketAddr;

use switchyard_config::{ConfigError, ProviderConfig};
use switchyard_core::{KindSpec, Name, OperationSpec};
use switchyard_worker::{CodeProvider, Kind, ProviderContext};

pub mod payload;
mod providers;

pub use payload::{CreateLabel, Track};

/// The shipping kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shipping;

impl Kind for Shipping {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: Name::new("shipping").unwrap_or_else(|e| panic!("{e}")),
            operations: vec![
                OperationSpec::of::<CreateLabel>("create_label"),
                OperationSpec::of::<Track>("track"),
            ],
        }
    }

    fn default_listen(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9102))
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
