//! The providers of this kind written in code, registered in one place.
//!
//! To add one: write `providers/<vendor>.rs` holding its options struct (deny unknown keys)
//! and its `Provider` impl, declare the module here and add its `type` to the match below. A
//! `[[providers]]` entry with that `type` then builds it; everything else (queues, retries,
//! dead letters, metrics) follows from the runtime. Plain REST providers need no code at all:
//! `type = "http"` is built by the runtime.

use std::sync::Arc;

use switchyard_config::{ConfigError, ProviderConfig};
use switchyard_core::Provider;
use switchyard_worker::ProviderContext;

/// Builds the code provider named by `config.provider_type`, or `None` if there is none.
pub(crate) fn build(
    config: &ProviderConfig,
    _index: usize,
    _ctx: &ProviderContext,
) -> Result<Option<Arc<dyn Provider>>, ConfigError> {
    #[allow(clippy::match_single_binding)] // vendors are added as arms above the fallback
    match config.provider_type.as_str() {
        _ => Ok(None),
    }
}
