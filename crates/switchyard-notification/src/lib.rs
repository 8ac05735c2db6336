//! The `notification` kind: its operations' payloads and its providers.
//!
//! Commands stay provider-neutral: `notification.{provider}.send_email` always carries a
//! [`SendEmail`]. Providers written in code live in `providers/`, registered in
//! `providers.rs`; any provider can also be a generic `type = "http"` provider.

use std::net::SocketAddr;

use switchyard_config::{ConfigError, ProviderConfig};
use switchyard_core::{KindSpec, Name, OperationSpec};
use switchyard_worker::{CodeProvider, Kind, ProviderContext};

pub mod payload;
mod providers;

pub use payload::{SendEmail, SendSms, SendWebhook};

/// The notification kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Notification;

impl Kind for Notification {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: Name::new("notification").unwrap_or_else(|e| panic!("{e}")),
            operations: vec![
                OperationSpec::of::<SendEmail>("send_email"),
                OperationSpec::of::<SendSms>("send_sms"),
                OperationSpec::of::<SendWebhook>("send_webhook"),
            ],
        }
    }

    fn default_listen(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9103))
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
