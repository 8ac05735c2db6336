//! Every shipped example config and every provider in docs/providers.md's TOML blocks builds
//! in full (the generic provider's own options, auth, error rows, operations, callbacks), and
//! `switchyard providers explain` describes it, without any broker or network.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `switchyard providers explain <name>` on `config`, with every secret the examples
/// name set to a dummy value.
fn explain(config: &Path, name: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["providers", "explain", name, "--config"])
        .arg(config)
        .env_remove("SWITCHYARD_CONFIG")
        .env("PAYPAL_CLIENT_ID", "AZexample")
        .env("PAYPAL_CLIENT_SECRET", "secret")
        .env("CRM_API_KEY", "key")
        .env("TWILIO_AUTH_TOKEN", "token")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `name` of each `[[providers]]` table.
fn provider_names(toml: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_provider = false;
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            in_provider = line == "[[providers]]";
        } else if in_provider && let Some(v) = line.strip_prefix("name = ") {
            names.push(v.trim_matches('"').to_owned());
            in_provider = false;
        }
    }
    names
}

#[test]
fn every_example_config_builds_and_is_explained() {
    let dir = root().join("examples/providers");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for name in provider_names(&text) {
            let out = explain(&path, &name);
            assert!(out.contains("operations:"), "{out}");
            assert!(
                out.contains("errors (the first row that matches decides)"),
                "{out}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} example providers");
}

#[test]
fn the_paypal_example_is_explained_as_documented() {
    let out = explain(
        &root().join("examples/providers/paypal-orders.toml"),
        "paypal",
    );
    for line in [
        "idempotency: paypal-request-id: <the command's key, the same on every attempt>",
        "1. status 422, /details/0/issue in [\"PREVIOUS_REQUEST_IN_PROGRESS\"] -> transient (retried with the same key)",
        "POST https://api-m.sandbox.paypal.com/v2/checkout/orders/{order_id}/capture",
        "create_order: payload checked against the schema declared with it",
    ] {
        assert!(out.contains(line), "{line:?} not in:\n{out}");
    }
    let docs = std::fs::read_to_string(root().join("docs/providers.md")).unwrap();
    for line in out.lines().filter(|l| !l.contains("client AZ")).take(12) {
        assert!(docs.contains(line), "docs/providers.md lacks {line:?}");
    }
}

#[test]
fn docs_provider_blocks_build_in_full() {
    let docs = std::fs::read_to_string(root().join("docs/providers.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in docs.lines() {
        match (&mut current, line) {
            (None, l) if l.starts_with("```toml") => current = Some(String::new()),
            (Some(b), "```") => {
                blocks.push(std::mem::take(b));
                current = None;
            }
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            _ => {}
        }
    }
    let dir = std::env::temp_dir().join(format!("sy-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut checked = 0;
    for (i, block) in blocks.iter().enumerate() {
        if !block.contains("type = \"http\"") {
            continue;
        }
        let path = dir.join(format!("block{i}.toml"));
        std::fs::write(&path, block).unwrap();
        for name in provider_names(block) {
            explain(&path, &name);
            checked += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(checked >= 2, "only {checked} documented providers built");
}

/// The schema rule of docs/configuration.md: the kind's schema for its own operations, the
/// provider's declared schema for an operation it adds, any object for a plain added name.
#[test]
fn which_schema_checks_a_payload() {
    let toml = r#"
[[providers]]
name = "acme"
kind = "payment"
type = "http"
base_url = "https://pay.acme.example/api"
operations = ["charge", "ping", { name = "capture", schema = { type = "object", required = ["order_id"] } }]
"#;
    let config = switchyard_config::Config::from_toml_str(toml).unwrap();
    let kinds = switchyard_ingress::kinds(&config).unwrap();
    let specs: Vec<_> = kinds.iter().map(|k| k.spec()).collect();
    let v = switchyard_worker::payload_validator(specs.iter(), &config).unwrap();
    let (payment, acme) = ("payment".parse().unwrap(), "acme".parse().unwrap());
    let check = |op: &str, payload: serde_json::Value| {
        v.validate(&payment, &acme, &op.parse().unwrap(), &payload)
    };
    assert!(
        check("charge", serde_json::json!({"surprise": 1})).is_err(),
        "the kind's schema"
    );
    assert!(
        check("capture", serde_json::json!({})).is_err(),
        "the declared schema"
    );
    assert!(check("capture", serde_json::json!({"order_id": "o1"})).is_ok());
    assert!(
        check("ping", serde_json::json!({"anything": true})).is_ok(),
        "any object"
    );

    // A provider cannot replace the kind's schema, a kind cannot take a built-in name, and a
    // provider needs a kind that exists.
    let replaced = toml.replace("\"charge\",", "{ name = \"charge\", schema = {} },");
    let config = switchyard_config::Config::from_toml_str(&replaced).unwrap();
    let specs: Vec<_> = switchyard_ingress::kinds(&config)
        .unwrap()
        .iter()
        .map(|k| k.spec())
        .collect();
    let e = switchyard_worker::payload_validator(specs.iter(), &config)
        .unwrap_err()
        .to_string();
    assert!(e.contains("providers[0].operations.charge.schema"), "{e}");
    let builtin =
        "[[kinds]]\nname = \"payment\"\n[[kinds.operations]]\nname = \"x\"\nschema = {}\n";
    let e = switchyard_ingress::kinds(&switchyard_config::Config::from_toml_str(builtin).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("kinds[0].name") && e.contains("built-in"), "{e}");
    let orphan = toml.replace("kind = \"payment\"", "kind = \"tax\"");
    let e = switchyard_ingress::kinds(&switchyard_config::Config::from_toml_str(&orphan).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("providers[0].kind"), "{e}");
}
