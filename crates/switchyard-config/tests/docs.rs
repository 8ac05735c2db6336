//! Every `toml` block of the docs parses, and configuration.md's defaults block matches the
//! built-in defaults.

#![allow(clippy::unwrap_used)]

use switchyard_config::Config;

fn docs_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

fn toml_blocks(page: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(docs_dir().join(page)).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l.starts_with("```toml") => current = Some(String::new()),
            (Some(b), l) if l.starts_with("```") => {
                blocks.push(std::mem::take(b));
                current = None;
            }
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

#[test]
fn documented_configuration_parses() {
    let blocks = toml_blocks("configuration.md");
    assert!(blocks.len() >= 2);
    for b in &blocks {
        Config::from_toml_str(b).unwrap_or_else(|e| panic!("{e}\n{b}"));
    }
    let documented = Config::from_toml_str(&blocks[0]).unwrap();
    let defaults = Config::from_toml_str("").unwrap();
    assert_eq!(
        format!("{documented:?}"),
        format!("{defaults:?}"),
        "the documented defaults are the defaults"
    );
}

#[test]
fn every_page_s_configuration_examples_parse() {
    let mut checked = 0;
    for entry in std::fs::read_dir(docs_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            let page = path.file_name().unwrap().to_str().unwrap().to_owned();
            for b in toml_blocks(&page) {
                Config::from_toml_str(&b).unwrap_or_else(|e| panic!("{page}: {e}\n{b}"));
                checked += 1;
            }
        }
    }
    assert!(checked >= 4, "only {checked} blocks found");
}
