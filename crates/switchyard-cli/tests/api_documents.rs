//! The API documents under `docs/api/` pass the ecosystem's own validators
//! (`tools/contract/validate.mjs`: @readme/openapi-parser, @asyncapi/parser, Ajv), the
//! validators reject broken copies, and the ledger serves every route the OpenAPI document
//! gives it, with the answers it documents.
//!
//! The validators are npm packages: `./dev clients` installs them (`./dev test` does it first).
//! Without them these tests fail, naming that command; they never skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use switchyard_cli::schemas;

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Runs the validators against the documents under `root` (the repository's by default).
fn validate(root: Option<&Path>) -> (bool, String) {
    let repo = repository_root();
    let contract = repo.join("tools/contract");
    for package in [
        "@readme/openapi-parser",
        "@asyncapi/parser",
        "ajv",
        "ajv-formats",
    ] {
        assert!(
            contract.join("node_modules").join(package).is_dir(),
            "the API document validators are not installed ({} is missing): run `./dev clients` \
             (it runs `npm ci --prefix tools/contract`), then run the tests again",
            contract.join("node_modules").join(package).display()
        );
    }
    let mut node = Command::new("node");
    node.arg(contract.join("validate.mjs")).current_dir(&repo);
    if let Some(root) = root {
        node.arg("--root").arg(root);
    }
    let out = node.output().unwrap_or_else(|e| {
        panic!("cannot run `node` ({e}): install Node.js 20 or later, or run `./dev clients`")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_committed_documents_pass_the_validators() {
    let (ok, output) = validate(None);
    println!("{output}");
    assert!(ok, "the validators refused docs/api:\n{output}");
    for line in [
        "openapi: docs/api/openapi.json: valid (0 errors",
        "asyncapi: docs/api/asyncapi.json: valid (0 errors",
        "json-schema: schemas: valid (0 errors",
    ] {
        assert!(output.contains(line), "missing {line:?} in:\n{output}");
    }
}

fn edit(path: &Path, change: impl FnOnce(&mut Value)) {
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    change(&mut doc);
    std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
}

#[test]
fn the_validators_reject_broken_documents() {
    let tmp = tempfile::tempdir().unwrap();
    schemas::write(tmp.path()).unwrap();
    let (ok, output) = validate(Some(tmp.path()));
    assert!(ok, "a fresh rendering must pass:\n{output}");

    // One mistake per check: an OpenAPI path parameter left undeclared, an AsyncAPI address
    // parameter left undescribed, an AMQP binding out of its schema, a reference to a schema
    // file that does not exist, one that would need the network, and an example its own
    // schema refuses.
    let openapi = tmp.path().join("docs/api/openapi.json");
    let asyncapi = tmp.path().join("docs/api/asyncapi.json");
    edit(&openapi, |d| {
        d["paths"]["/v1/commands/{id}"]["get"]["parameters"] = Value::Array(vec![]);
        d["components"]["schemas"]["Event"]["$ref"] = "../../schemas/nope.v1.json".into();
    });
    edit(&asyncapi, |d| {
        d["channels"]["events"]["parameters"]
            .as_object_mut()
            .unwrap()
            .remove("status");
        d["operations"]["sendCommand"]["bindings"]["amqp"]["deliveryMode"] = 3.into();
        d["components"]["schemas"]["AttemptRecord"]["$ref"] =
            "https://switchyard.dev/schemas/attempt.v1.json".into();
        d["components"]["messages"]["event"]["examples"][0]["payload"]["seq"] = (-1).into();
    });
    let (ok, output) = validate(Some(tmp.path()));
    println!("{output}");
    assert!(!ok, "broken documents passed:\n{output}");
    for expected in [
        "openapi: docs/api/openapi.json: INVALID",
        "schemas/nope.v1.json",
        "asyncapi: docs/api/asyncapi.json: INVALID",
        "asyncapi3-channel-parameters",
        "deliveryMode",
        "a reference needs the network: https://switchyard.dev/schemas/attempt.v1.json",
        "json-schema: schemas: INVALID",
        "data/seq must be >= 0",
    ] {
        assert!(
            output.contains(expected),
            "the validators did not report {expected:?}:\n{output}"
        );
    }

    // The path parameter alone (the missing file above stops that parser early).
    schemas::write(tmp.path()).unwrap();
    edit(&openapi, |d| {
        d["paths"]["/v1/commands/{id}"]["get"]["parameters"] = Value::Array(vec![]);
    });
    // And a schema that is not JSON Schema.
    edit(&tmp.path().join("schemas/http/problem.v1.json"), |d| {
        d["properties"]["status"]["type"] = 5.into();
    });
    let (ok, output) = validate(Some(tmp.path()));
    println!("{output}");
    assert!(!ok, "broken documents passed:\n{output}");
    assert!(
        output.contains("is missing path parameter(s) for `{id}`"),
        "{output}"
    );
    assert!(
        output.contains("schemas/http/problem.v1.json: not a valid JSON Schema"),
        "{output}"
    );
}

/// The ledger's routes in the committed OpenAPI document, and the answers it lists for each.
fn documented(tag: &str) -> Vec<(String, String, Vec<u16>)> {
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(repository_root().join("docs/api/openapi.json")).unwrap(),
    )
    .unwrap();
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op["tags"].as_array().unwrap().iter().any(|t| t == tag) {
                let codes = op["responses"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .map(|k| k.parse().unwrap())
                    .collect();
                routes.push((method.to_uppercase(), path.clone(), codes));
            }
        }
    }
    routes
}

#[tokio::test]
async fn the_ledger_serves_what_the_document_says() {
    switchyard_http::install_crypto_provider();
    let tmp = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        tmp.path().join("ledger.db").display()
    );
    let store = switchyard_ledger::Store::connect(&url).await.unwrap();
    let token = "t0ken";
    let router = switchyard_ledger::query_router(
        store,
        vec![switchyard_core::Secret::new(token.to_owned())],
        false,
    )
    .merge(switchyard_telemetry::ops_router(std::sync::Arc::new(
        || true,
    )));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let http = reqwest::Client::new();
    let id = uuid::Uuid::now_v7();

    let ledger = documented("ledger");
    let mut seen: Vec<String> = ledger.iter().map(|(m, p, _)| format!("{m} {p}")).collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            "GET /v1/commands",
            "GET /v1/commands/{id}",
            "POST /v1/commands/{id}/resolution"
        ],
        "the ledger's routes (crates/switchyard-ledger/src/api.rs)"
    );
    for (method, path, codes) in &ledger {
        let url = format!("{base}{}", path.replace("{id}", &id.to_string()));
        let request = |auth: Option<&str>| {
            let mut r = http.request(method.parse().unwrap(), &url);
            if let Some(t) = auth {
                r = r.bearer_auth(t);
            }
            if method == "POST" {
                r = r.json(
                    &serde_json::json!({"status": "completed", "reason": "seen", "by": "ana"}),
                );
            }
            r
        };
        // Without a token: the documented 401, as problem+json.
        let answer = request(None).send().await.unwrap();
        assert_eq!(answer.status(), 401, "{method} {path}");
        assert_eq!(
            answer.headers()["content-type"],
            "application/problem+json",
            "{method} {path}"
        );
        // With one: an answer the document lists (200 for the list, 404 for an unknown id,
        // 503 for a resolution on a router without a broker).
        let answer = request(Some(token)).send().await.unwrap();
        let status = answer.status().as_u16();
        assert!(
            codes.contains(&status),
            "{method} {path} answered {status}, the document lists {codes:?}"
        );
    }
    // A bad query parameter and a bad id are the documented 400s.
    for url in [
        format!("{base}/v1/commands?state=failed"),
        format!("{base}/v1/commands/not-a-uuid"),
    ] {
        let answer = http.get(&url).bearer_auth(token).send().await.unwrap();
        assert_eq!(answer.status(), 400, "{url}");
    }
    // A route the document does not have is not served (so the check above means something).
    let answer = http
        .get(format!("{base}/v1/nothing"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);

    for (method, path, codes) in documented("operations") {
        let answer = http
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        assert!(
            codes.contains(&answer.status().as_u16()),
            "{method} {path}: {}",
            answer.status()
        );
    }
}
