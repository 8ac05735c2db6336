//! The committed schemas and API documents must be exactly what the types generate.
//! Regenerate with `cargo run -p switchyard-cli -- schemas write` (from the repository root).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use switchyard_cli::schemas;

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn committed_schemas_and_documents_match_the_types() {
    let drift = schemas::drift(&repository_root()).unwrap();
    assert!(
        drift.is_empty(),
        "these generated files are out of date: {drift:?}. Regenerate them with `{}` from the \
         repository root, review the diff and commit it",
        schemas::REGENERATE
    );
}

#[test]
fn the_drift_check_can_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let written = schemas::write(tmp.path()).unwrap();
    assert_eq!(written, schemas::render().unwrap().len());
    assert!(schemas::drift(tmp.path()).unwrap().is_empty());
    assert!(schemas::check(tmp.path()).is_ok());

    std::fs::write(tmp.path().join("schemas/payment/charge.json"), "{}").unwrap();
    std::fs::remove_file(tmp.path().join("docs/api/asyncapi.json")).unwrap();
    let openapi = tmp.path().join("docs/api/openapi.json");
    let edited = std::fs::read_to_string(&openapi)
        .unwrap()
        .replace("submitCommand", "postCommand");
    std::fs::write(&openapi, edited).unwrap();

    let drift = schemas::drift(tmp.path()).unwrap();
    assert_eq!(
        drift,
        vec![
            PathBuf::from("docs/api/asyncapi.json"),
            PathBuf::from("docs/api/openapi.json"),
            PathBuf::from("schemas/payment/charge.json"),
        ]
    );
    let message = schemas::check(tmp.path()).unwrap_err().to_string();
    assert!(message.contains(schemas::REGENERATE), "{message}");
    assert!(message.contains("docs/api/openapi.json"), "{message}");
}

#[test]
fn every_schema_has_a_stable_id_naming_its_path() {
    for (path, schema) in schemas::schemas() {
        assert_eq!(
            schema["$id"],
            format!("{}{path}", schemas::ID_BASE),
            "{path}"
        );
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{path}"
        );
    }
}

#[test]
fn schemas_validate_real_commands() {
    let files = schemas::render().unwrap();
    let charge: serde_json::Value =
        serde_json::from_str(&files[Path::new("schemas/payment/charge.json")]).unwrap();
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

#[test]
fn the_command_schema_keeps_the_envelope_limits() {
    let command = schemas::schemas()[schemas::COMMAND].clone();
    let v = jsonschema_validator(&command);
    let with = |key: &str, entries: usize| {
        let metadata: serde_json::Map<String, serde_json::Value> = (0..entries)
            .map(|i| (format!("k{i}"), serde_json::json!("v")))
            .collect();
        serde_json::json!({
            "id": "0193f0c1-5d1e-7a52-9d0e-2b9c1f0e7a11", "kind": "payment",
            "provider": "sandbox", "operation": "charge", "payload": {},
            "idempotency_key": key, "metadata": metadata,
            "created_at": "2026-11-25T10:00:00Z",
        })
    };
    assert!(v(&with("order-42", 32)));
    assert!(!v(&with("order-42", 33)), "at most 32 metadata entries");
    assert!(
        !v(&with("", 0)),
        "an idempotency key has 1 character at least"
    );
    assert!(v(&with(&"k".repeat(255), 0)));
    assert!(!v(&with(&"k".repeat(256), 0)), "and 255 at most");
}

#[test]
fn the_answer_schemas_require_what_every_answer_carries() {
    let all = schemas::schemas();
    let required = |path: &str| -> Vec<String> {
        serde_json::from_value(all[path]["required"].clone()).unwrap()
    };
    // Written answers: what is always serialised is required, what may be skipped is not.
    assert_eq!(
        required(schemas::PROBLEM),
        ["type", "title", "status", "detail"]
    );
    assert_eq!(
        required(schemas::COMMAND_ACCEPTED),
        ["id", "status", "status_url"]
    );
    assert_eq!(required(schemas::COMMAND_PAGE), ["items", "next_cursor"]);
    let view = required(schemas::COMMAND_VIEW);
    assert!(view.contains(&"events".to_owned()) && view.contains(&"attempts".to_owned()));
    assert!(
        !view.contains(&"status".to_owned()),
        "status fields are absent while only attempts arrived"
    );
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
