//! The providers of this kind written in code, registered in one place.
//!
//! To add one: write `providers/<vendor>.rs` holding its options struct (deny unknown keys)
//! and its `Provider` impl, declare the module here and add its `type` to the match below. A
//! provider that completes work by callback returns its webhook `Receiver` too
//! (`CodeProvider::with_webhooks`: its signature `Scheme` and the reader of its bodies). A
//! `[[providers]]` entry with that `type` then builds it; everything else (queues, retries,
//! dead letters, metrics) follows from the runtime. Plain REST providers need no code at all:
//! `type = "http"` is built by the runtime.

use switchyard_config::{ConfigError, ProviderConfig};
use switchyard_worker::{CodeProvider, ProviderContext};

/// Builds the code provider named by `config.provider_type`, or `None` if there is none.
pub(crate) fn build(
    config: &ProviderConfig,
    _index: usize,
    _ctx: &ProviderContext,
) -> Result<Option<CodeProvider>, ConfigError> {
    #[allow(clippy::match_single_binding)] // vendors are added as arms above the fallback
    match config.provider_type.as_str() {
        _ => Ok(None),
    }
}
