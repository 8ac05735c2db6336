//! The committed schemas must be exactly what the types generate.
//! Regenerate with `cargo run -p switchyard-cli -- schemas write`.

#![allow(clippy::unwrap_used)]

use std::path::Path;

#[test]
fn committed_schemas_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let drift = switchyard_cli::schemas::drift(&dir);
    assert!(
        drift.is_empty(),
        "schemas/ is out of date for {drift:?}: run `cargo run -p switchyard-cli -- schemas write`"
    );
}

#[test]
fn the_drift_check_can_fail() {
    let tmp = tempfile::tempdir().unwrap();
    switchyard_cli::schemas::write(tmp.path()).unwrap();
    assert!(switchyard_cli::schemas::drift(tmp.path()).is_empty());
    std::fs::write(tmp.path().join("payment/charge.json"), "{}").unwrap();
    assert_eq!(switchyard_cli::schemas::drift(tmp.path()).len(), 1);
}

#[test]
fn schemas_validate_real_commands() {
    let files = switchyard_cli::schemas::render();
    let charge: serde_json::Value =
        serde_json::from_str(&files[Path::new("payment/charge.json")]).unwrap();
    let v = jsonschema_validator(&charge);
    assert!(v(
        &serde_json::json!({"amount": 100, "currency": "usd", "payment_method": "pm_x"})
    ));
    assert!(!v(
        &serde_json::json!({"amount": 0, "currency": "usd", "payment_method": "pm_x"})
    ));
    assert!(!v(
        &serde_json::json!({"amount": 1, "currency": "USD", "payment_method": "pm_x"})
    ));
    assert!(!v(
        &serde_json::json!({"amount": 1, "currency": "usd", "payment_method": "pm_x", "x": 1})
    ));
}

fn jsonschema_validator(schema: &serde_json::Value) -> impl Fn(&serde_json::Value) -> bool {
    let validator = switchyard_core::PayloadValidator::new([&switchyard_core::KindSpec {
        name: "k".parse().unwrap(),
        operations: vec![switchyard_core::OperationSpec {
            name: "o".parse().unwrap(),
            schema: schema.clone(),
            max_wait: switchyard_core::kind::DEFAULT_MAX_WAIT,
        }],
    }])
    .unwrap();
    move |payload| {
        validator
            .validate(
                &"k".parse().unwrap(),
                &"p".parse().unwrap(),
                &"o".parse().unwrap(),
                payload,
            )
            .is_ok()
    }
}
