//! Bounded label values.
//!
//! A label value must come from a small, known set: a configured kind or provider, a status,
//! an error class, an outcome of a fixed list. Never a message, an id, a URL or a routing key
//! read off the wire: each new value is a new time series, kept by Prometheus for weeks.
//!
//! Kinds and providers are bounded by the configuration: every process registers the pairs
//! of its `[[providers]]` at start ([`register_config`]); a name that is not registered (a
//! routing key of a command nobody serves, a forged event) is counted as [`OTHER`].

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

use metrics::SharedString;
use switchyard_config::Config;

/// The label value of a kind or provider that is not configured here.
pub const OTHER: &str = "other";

/// A registered kind: its label value and those of its providers. Label values are shared
/// strings, so a lookup on the hot path (every event published) copies nothing.
struct Kind {
    label: SharedString,
    providers: BTreeMap<String, SharedString>,
}

fn known() -> &'static RwLock<BTreeMap<String, Kind>> {
    static KNOWN: OnceLock<RwLock<BTreeMap<String, Kind>>> = OnceLock::new();
    KNOWN.get_or_init(Default::default)
}

fn shared(value: &str) -> SharedString {
    SharedString::from_shared(Arc::<str>::from(value))
}

/// Registers `provider` of `kind` as a label value.
pub fn register(kind: &str, provider: &str) {
    if let Ok(mut set) = known().write() {
        let entry = set.entry(kind.to_owned()).or_insert_with(|| Kind {
            label: shared(kind),
            providers: BTreeMap::new(),
        });
        entry
            .providers
            .entry(provider.to_owned())
            .or_insert_with(|| shared(provider));
    }
}

/// Registers every provider of `config`, and installs the process's Prometheus recorder
/// (when no recorder is installed yet, metrics are dropped): call it first thing when a
/// component starts, before anything is recorded.
pub fn register_config(config: &Config) {
    crate::metrics_handle();
    for p in &config.providers {
        register(p.kind.as_str(), p.name.as_str());
    }
}

/// The `kind` and `provider` label values of `kind` and `provider`: as they are when
/// registered, else [`OTHER`] for what is unknown.
pub fn kind_provider(kind: &str, provider: &str) -> (SharedString, SharedString) {
    let other = || SharedString::const_str(OTHER);
    let Ok(set) = known().read() else {
        return (other(), other());
    };
    match set.get(kind) {
        Some(known) => (
            known.label.clone(),
            known.providers.get(provider).cloned().unwrap_or_else(other),
        ),
        None => (other(), other()),
    }
}

/// Creates the counter `name` with `labels` at zero (or leaves it as it is), so a
/// `rate()` or `increase()` sees the series before its first event.
pub fn zero_counter(name: &'static str, labels: &[(&'static str, String)]) {
    crate::metrics_handle();
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, v.clone()))
        .collect();
    metrics::counter!(name, labels).increment(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unregistered_names_are_counted_as_other() {
        register("payment", "stripe-labels-test");
        let kind_provider = |kind, provider| {
            let (kind, provider) = kind_provider(kind, provider);
            (kind.to_string(), provider.to_string())
        };
        assert_eq!(
            kind_provider("payment", "stripe-labels-test"),
            ("payment".to_owned(), "stripe-labels-test".to_owned())
        );
        assert_eq!(
            kind_provider("payment", "from-the-wire"),
            ("payment".to_owned(), OTHER.to_owned())
        );
        assert_eq!(
            kind_provider("fax", "from-the-wire"),
            (OTHER.to_owned(), OTHER.to_owned())
        );
    }
}
