//! Every `toml` block of docs/configuration.md parses, and the defaults block matches the
//! built-in defaults.

#![allow(clippy::unwrap_used)]

use switchyard_config::Config;

fn toml_blocks() -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/configuration.md"
    ))
    .unwrap();
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
    let blocks = toml_blocks();
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
