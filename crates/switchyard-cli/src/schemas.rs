//! The JSON Schemas committed under `schemas/`, generated from the Rust types so they cannot
//! drift: a test compares the committed files with what this module renders.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use switchyard_core::{Command, Event};

/// Every schema file, by path relative to the schemas directory, with its content.
pub fn render() -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    let pretty = |v: &serde_json::Value| {
        let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
        s.push('\n');
        s
    };
    files.insert(
        PathBuf::from("command.v1.json"),
        pretty(&schemars::schema_for!(Command).to_value()),
    );
    files.insert(
        PathBuf::from("event.v1.json"),
        pretty(&schemars::schema_for!(Event).to_value()),
    );
    for kind in switchyard_ingress::builtin_kinds() {
        let spec = kind.spec();
        for op in &spec.operations {
            files.insert(
                PathBuf::from(spec.name.as_str()).join(format!("{}.json", op.name)),
                pretty(&op.schema),
            );
        }
    }
    files
}

/// Writes every schema under `dir`.
pub fn write(dir: &Path) -> std::io::Result<usize> {
    let files = render();
    for (path, content) in &files {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(full, content)?;
    }
    Ok(files.len())
}

/// The files under `dir` that differ from what the types render (missing ones included).
pub fn drift(dir: &Path) -> Vec<PathBuf> {
    render()
        .into_iter()
        .filter(|(path, content)| {
            std::fs::read_to_string(dir.join(path)).ok().as_ref() != Some(content)
        })
        .map(|(p, _)| p)
        .collect()
}
