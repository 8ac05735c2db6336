//! Property tests of the configuration loader: any text, and any value at any known key,
//! loads or fails with a message naming the key, never a panic, and never echoes a value
//! given to a secret key.
//!
//! Bounded for CI. Before a release:
//! `PROPTEST_CASES=100000 cargo test --release -p switchyard-config --test properties`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use switchyard_config::Config;

/// A value in TOML: numbers of any size and sign, strings, lists, tables.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:?}")),
        "[a-zA-Z0-9_ ]{0,20}".prop_map(|s| format!("\"CANARY{s}\"")),
        Just("[]".to_owned()),
        Just("[\"CANARY\"]".to_owned()),
        Just("{ a = 1 }".to_owned()),
        Just("true".to_owned()),
    ]
}

proptest! {
    #[test]
    fn any_text_loads_or_fails_cleanly(text in ".{0,200}") {
        let _ = Config::from_toml_str(&text);
    }

    #[test]
    fn any_value_at_any_key_loads_or_fails_naming_it(
        (section, key) in prop::sample::select(vec![
            ("amqp", "url"), ("amqp", "prefetch"), ("amqp", "delivery_limit"),
            ("amqp", "heartbeat_secs"), ("ingress", "tokens"), ("ingress", "max_body_bytes"),
            ("worker", "idempotency_secret"), ("worker", "concurrency"), ("retry", "tiers"),
            ("retry", "max_attempts"), ("outbound", "timeout_ms"), ("ledger", "database_url"),
            ("ledger", "record_key"), ("http", "max_connections"), ("redaction", "secret_fields"),
        ]),
        value in toml_value(),
    ) {
        match Config::from_toml_str(&format!("[{section}]\n{key} = {value}\n")) {
            Ok(_) => {}
            Err(e) => {
                let message = e.to_string();
                prop_assert!(message.contains(key) || message.contains(section), "{}", message);
                let secret = ["url", "tokens", "idempotency_secret", "record_key"].contains(&key);
                prop_assert!(!(secret && message.contains("CANARY")), "{}", message);
            }
        }
    }
}
