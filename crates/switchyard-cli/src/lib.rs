//! The `switchyard` command line: the whole fleet in one command (`up`), topology management
//! (`topology apply|check|users`), the operator's tools (`dlq`, `status`, `tail`), the provider
//! sandbox, the end-to-end benchmark and the committed JSON Schemas and API documents.
//!
//! Each subcommand is a module; they reuse the component crates and add no behaviour of
//! their own beyond wiring and output.

pub mod api_documents;
pub mod bench;
pub mod connect;
pub mod dlq;
pub mod exit;
pub mod explain;
pub mod fleet;
pub mod local_broker;
pub mod output;
pub mod ports;
pub mod resolve;
pub mod schemas;
pub mod status;
pub mod tail;
pub mod topology;
pub mod up;
pub mod users;

/// Writes a line to stdout (the CLI's output channel, as opposed to logs on stderr).
pub fn say(line: impl AsRef<str>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}
