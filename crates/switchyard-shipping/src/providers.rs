//! The providers of this kind written in code, registered in one place.
//!
//! To add one: write `providers/<vendor>.rs` holding its options struct (deny unknown keys)
//! and its `Provider` impl, declare the module here and add its `type` to the match below. A
//! provider that completes work by callback returns its webhook `Receiver` too
//! (`CodeProvider::with_webhooks`: its signature `Scheme` and the reader of its bodies). A
//! `[[providers]]` entry with that `type` then builds it; everything else (queues, retries,
//! dead letters, metrics) follows from the runtime. Plain REST providers need no code at all:
//! `type = "http"` is built by the runtime.

use std::sync::Arc;

use switchyard_config::{ConfigError, ProviderConfig};
use switchyard_worker::{CodeProvider, ProviderContext};

mod easypost;

/// Builds the code provider named by `config.provider_type`, or `None` if there is none.
pub(crate) fn build(
    config: &ProviderConfig,
    index: usize,
    ctx: &ProviderContext,
) -> Result<Option<CodeProvider>, ConfigError> {
    match config.provider_type.as_str() {
        "easypost" => {
            let (provider, receiver) = easypost::EasyPostProvider::from_config(config, index, ctx)?;
            let provider = CodeProvider::new(Arc::new(provider));
            Ok(Some(match receiver {
                Some(receiver) => provider.with_webhooks(receiver),
                None => provider,
            }))
        }
        _ => Ok(None),
    }
}
