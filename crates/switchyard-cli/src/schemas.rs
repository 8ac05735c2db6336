//! The machine-readable contract committed in the repository, generated from the Rust types so
//! it cannot drift: the JSON Schemas under `schemas/` and the API documents under `docs/api/`
//! ([`crate::api_documents`]). A test compares the committed files with what this module
//! renders; `switchyard schemas write` rewrites them.
//!
//! Every schema carries a stable `$id` under [`ID_BASE`]: an identifier, not a download
//! location. The documents refer to the schemas by relative path, so every tool resolves them
//! from the repository, offline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::Value;
use switchyard_core::{AttemptRecord, Command, CommandDraft, Event};

/// The base of every schema's `$id`: `{ID_BASE}{path under schemas/}`.
pub const ID_BASE: &str = "https://switchyard.dev/schemas/";
/// Where the schemas live, relative to the repository root.
pub const SCHEMAS_DIR: &str = "schemas";
/// Where the API documents live, relative to the repository root.
pub const API_DIR: &str = "docs/api";
/// The command that regenerates every generated file.
pub const REGENERATE: &str = "cargo run -p switchyard-cli -- schemas write";

/// The command envelope on `switchyard.commands`.
pub const COMMAND: &str = "command.v1.json";
/// The lifecycle event on `switchyard.events`.
pub const EVENT: &str = "event.v1.json";
/// The attempt record on `switchyard.attempts`.
pub const ATTEMPT: &str = "attempt.v1.json";
/// `POST /v1/commands`: the body.
pub const COMMAND_REQUEST: &str = "http/command-request.v1.json";
/// `POST /v1/commands`: the `202`/`200` answer.
pub const COMMAND_ACCEPTED: &str = "http/command-accepted.v1.json";
/// Every error answer (`application/problem+json`).
pub const PROBLEM: &str = "http/problem.v1.json";
/// `GET /v1/commands/{id}`: the answer.
pub const COMMAND_VIEW: &str = "http/command-view.v1.json";
/// `GET /v1/commands`: one page.
pub const COMMAND_PAGE: &str = "http/command-page.v1.json";
/// `POST /v1/commands/{id}/resolution`: the body.
pub const RESOLUTION_REQUEST: &str = "http/resolution-request.v1.json";

/// `{kind}/{operation}.json`: an operation's payload.
pub fn operation_schema(kind: &str, operation: &str) -> String {
    format!("{kind}/{operation}.json")
}

/// The schema of a type as it is read (a request, a message a consumer decodes).
fn read_schema<T: JsonSchema>() -> Value {
    schemars::schema_for!(T).to_value()
}

/// The schema of a type as it is written (an answer): what it always carries is required.
fn written_schema<T: JsonSchema>() -> Value {
    SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

/// `schema` with its `$id`.
fn identified(path: &str, mut schema: Value) -> Value {
    if let Value::Object(map) = &mut schema {
        map.insert("$id".into(), Value::String(format!("{ID_BASE}{path}")));
    }
    schema
}

/// Every schema, by path relative to the schemas directory.
pub fn schemas() -> BTreeMap<String, Value> {
    let mut files: BTreeMap<String, Value> = [
        (COMMAND, read_schema::<Command>()),
        (EVENT, read_schema::<Event>()),
        (ATTEMPT, read_schema::<AttemptRecord>()),
        (COMMAND_REQUEST, read_schema::<CommandDraft>()),
        (
            COMMAND_ACCEPTED,
            written_schema::<switchyard_ingress::CommandAccepted>(),
        ),
        (PROBLEM, written_schema::<switchyard_ingress::Problem>()),
        (
            COMMAND_VIEW,
            written_schema::<switchyard_ledger::CommandView>(),
        ),
        (COMMAND_PAGE, written_schema::<switchyard_ledger::Page>()),
        (
            RESOLUTION_REQUEST,
            read_schema::<switchyard_ledger::ResolutionRequest>(),
        ),
    ]
    .into_iter()
    .map(|(path, schema)| (path.to_owned(), schema))
    .collect();
    for kind in switchyard_ingress::builtin_kinds() {
        let spec = kind.spec();
        for op in &spec.operations {
            let path = operation_schema(spec.name.as_str(), op.name.as_str());
            files.insert(path, op.schema.clone());
        }
    }
    files
        .into_iter()
        .map(|(path, schema)| {
            let schema = identified(&path, schema);
            (path, schema)
        })
        .collect()
}

/// Pretty JSON with a final newline: how every generated file is written.
pub fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// Every generated file, by path relative to the repository root: the schemas and the API
/// documents.
pub fn render() -> anyhow::Result<BTreeMap<PathBuf, String>> {
    let mut files: BTreeMap<PathBuf, String> = schemas()
        .iter()
        .map(|(path, schema)| (Path::new(SCHEMAS_DIR).join(path), pretty(schema)))
        .collect();
    for (name, document) in crate::api_documents::render().context("rendering the API documents")? {
        files.insert(Path::new(API_DIR).join(name), pretty(&document));
    }
    Ok(files)
}

/// Writes every generated file under the repository root `root`; returns how many.
pub fn write(root: &Path) -> anyhow::Result<usize> {
    let files = render()?;
    for (path, content) in &files {
        let full = root.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&full, content).with_context(|| format!("writing {}", full.display()))?;
    }
    Ok(files.len())
}

/// The generated files under the repository root `root` that differ from what the types
/// render (missing ones included), by path relative to `root`.
pub fn drift(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    Ok(render()?
        .into_iter()
        .filter(|(path, content)| {
            std::fs::read_to_string(root.join(path)).ok().as_ref() != Some(content)
        })
        .map(|(p, _)| p)
        .collect())
}

/// [`drift`] as a check: an error naming the stale files and the command that regenerates
/// them.
pub fn check(root: &Path) -> anyhow::Result<usize> {
    let stale = drift(root)?;
    if stale.is_empty() {
        return Ok(render()?.len());
    }
    let list: Vec<String> = stale.iter().map(|p| p.display().to_string()).collect();
    anyhow::bail!(
        "{} generated file(s) differ from what the types render: {}; run `{REGENERATE}` \
         (or `switchyard schemas write`) from the repository root and commit the result",
        stale.len(),
        list.join(", ")
    )
}
