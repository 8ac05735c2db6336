//! `switchyard resolve <id> completed|failed`: an operator ends a command whose outcome is
//! `unknown` (the provider may have acted, its answer could not be read), through the ledger's
//! query API (`POST /v1/commands/{id}/resolution`). The ledger decides once and records who
//! and why; the terminal event is published like any other.

use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use switchyard_config::Config;
use uuid::Uuid;

use crate::exit::CliError;
use crate::output;
use crate::status::{default_url, problem_detail};

/// How the operator ends the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Verdict {
    /// The provider did act.
    Completed,
    /// It did not, or must be treated as not: failed (class `unknown`), dead-lettered.
    Failed,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Completed => "completed",
            Verdict::Failed => "failed",
        }
    }
}

/// Where to send it, and what to record.
#[derive(Debug, Clone)]
pub struct ResolveOptions {
    /// Base URL of the query API; default: the configured ingress (`[ingress] listen`).
    pub url: Option<String>,
    /// Bearer token; default: the first of `[ingress] tokens`.
    pub token: Option<String>,
    /// Why (kept in the ledger's audit row).
    pub reason: String,
    /// Who; default `$USER`.
    pub by: Option<String>,
    /// Print the terminal event as JSON.
    pub json: bool,
}

/// `resolve <id> completed|failed`.
pub async fn run(
    config: &Config,
    id: Uuid,
    verdict: Verdict,
    opts: ResolveOptions,
) -> anyhow::Result<()> {
    let by = opts
        .by
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .filter(|b| !b.trim().is_empty())
        .ok_or_else(|| CliError::usage("say who resolves: --by NAME (no $USER is set)"))?;
    let base = opts.url.clone().unwrap_or_else(|| default_url(config));
    let url = format!("{}/v1/commands/{id}/resolution", base.trim_end_matches('/'));
    let token = opts
        .token
        .clone()
        .or_else(|| config.ingress.tokens.first().map(|t| t.expose().clone()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;
    let mut req = client
        .post(&url)
        .header("accept", "application/json")
        .json(&json!({"status": verdict.as_str(), "reason": opts.reason, "by": by}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach the ledger's query API at {base} (use --url)"))?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    match status.as_u16() {
        200 => {}
        404 => {
            return Err(
                CliError::not_found(format!("command {id} is unknown to the ledger")).into(),
            );
        }
        401 => anyhow::bail!(
            "the ledger at {base} refused the token (401): pass --token or set SWITCHYARD_TOKEN"
        ),
        409 => anyhow::bail!("not resolved: {}", problem_detail(&body)),
        code => anyhow::bail!(
            "the ledger at {base} answered {code}: {}",
            problem_detail(&body)
        ),
    }
    let event: Value = serde_json::from_str(&body)
        .with_context(|| format!("the ledger at {base} answered with something other than JSON"))?;
    if opts.json {
        return output::json(&event);
    }
    output::print_line(&format!(
        "command {id} resolved {} by {by} (run {}, seq {}, event {})",
        verdict.as_str(),
        event.get("run").and_then(Value::as_u64).unwrap_or_default(),
        event.get("seq").and_then(Value::as_u64).unwrap_or_default(),
        event.get("event_id").and_then(Value::as_str).unwrap_or("-"),
    ));
    Ok(())
}
