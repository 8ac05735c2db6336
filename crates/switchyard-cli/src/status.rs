//! `switchyard status <id>`: what the ledger knows of one command, from the query API
//! (`GET /v1/commands/{id}`, served by the ingress under `up`, or by the ledger on
//! `[ledger] listen`).

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use switchyard_config::Config;
use uuid::Uuid;

use crate::exit::CliError;
use crate::output::{self, truncate};

/// Where and how to ask.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    /// Base URL of the query API; default: the configured ingress (`[ingress] listen`).
    pub url: Option<String>,
    /// Bearer token; default: the first of `[ingress] tokens`.
    pub token: Option<String>,
    /// Print the ledger's JSON as it is.
    pub json: bool,
}

/// The query API's base URL for `config`: the ingress's listen address, made reachable.
pub fn default_url(config: &Config) -> String {
    format!("http://{}", crate::up::reachable(config.ingress.listen))
}

/// `status <id>`.
pub async fn run(config: &Config, id: Uuid, opts: StatusOptions) -> anyhow::Result<()> {
    let base = opts.url.clone().unwrap_or_else(|| default_url(config));
    let url = format!("{}/v1/commands/{id}", base.trim_end_matches('/'));
    let token = opts
        .token
        .clone()
        .or_else(|| config.ingress.tokens.first().map(|t| t.expose().clone()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;
    let mut req = client.get(&url).header("accept", "application/json");
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
        code => anyhow::bail!(
            "the ledger at {base} answered {code}: {}",
            problem_detail(&body)
        ),
    }
    let view: Value = serde_json::from_str(&body)
        .with_context(|| format!("the ledger at {base} answered with something other than JSON"))?;
    if opts.json {
        return output::json(&view);
    }
    output::print_line(&render(&view));
    Ok(())
}

pub(crate) fn problem_detail(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("detail")
                .or_else(|| v.get("title"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| truncate(body, 200))
}

fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// A timestamp field to the millisecond (the ledger stores nanoseconds; people read less).
fn time(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(
            || s(v, key),
            |t| {
                t.with_timezone(&chrono::Utc)
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            },
        )
}

fn error_text(e: &Value) -> Option<String> {
    let e = e.as_object()?;
    let class = e.get("class").and_then(Value::as_str).unwrap_or("-");
    let code = e.get("code").and_then(Value::as_str).unwrap_or("-");
    let message = e.get("message").and_then(Value::as_str).unwrap_or("");
    Some(format!("{class} {code}: {message}"))
}

/// The human view of a ledger answer: a summary, the events and the provider attempts.
pub fn render(view: &Value) -> String {
    let mut out = Vec::new();
    let id = s(view, "id");
    if view.get("status").is_some() {
        out.push(format!(
            "command {id}  {}.{}.{}",
            s(view, "kind"),
            s(view, "provider"),
            s(view, "operation")
        ));
        out.push(format!(
            "status   {} (seq {}, attempt {})",
            s(view, "status"),
            s(view, "seq"),
            s(view, "attempt")
        ));
        out.push(format!(
            "created  {}   updated {}",
            s(view, "created_at"),
            s(view, "updated_at")
        ));
        if let Some(r) = view.get("provider_reference").and_then(Value::as_str) {
            out.push(format!("reference {r}"));
        }
        if let Some(e) = view.get("error").and_then(error_text) {
            out.push(format!("error    {e}"));
        }
        if let Some(r) = view.get("result").filter(|r| !r.is_null()) {
            out.push(format!("result   {}", truncate(&r.to_string(), 200)));
        }
    } else {
        out.push(format!(
            "command {id}: only provider attempts have reached the ledger so far"
        ));
    }
    let empty = Vec::new();
    let events = view
        .get("events")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    out.push(String::new());
    out.push(format!("events ({})", events.len()));
    out.push(output::table(
        &["SEQ", "STATUS", "ATTEMPT", "AT", "DETAIL"],
        events.iter().map(|e| {
            let detail = e
                .get("error")
                .and_then(error_text)
                .or_else(|| {
                    e.get("next_attempt_at")
                        .and_then(Value::as_str)
                        .map(|n| format!("next attempt at {n}"))
                })
                .or_else(|| {
                    e.get("provider_reference")
                        .and_then(Value::as_str)
                        .map(|r| format!("reference {r}"))
                })
                .unwrap_or_default();
            vec![
                s(e, "seq"),
                s(e, "status"),
                s(e, "attempt"),
                time(e, "occurred_at"),
                truncate(&detail, 80),
            ]
        }),
    ));
    let attempts = view
        .get("attempts")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    out.push(String::new());
    out.push(format!("provider attempts ({})", attempts.len()));
    if !attempts.is_empty() {
        out.push(output::table(
            &["ATTEMPT", "STARTED", "REQUEST", "STATUS", "MS", "ERROR"],
            attempts.iter().map(|a| {
                vec![
                    s(a, "attempt"),
                    time(a, "started_at"),
                    truncate(&format!("{} {}", s(a, "method"), s(a, "url")), 70),
                    s(a, "status"),
                    s(a, "duration_ms"),
                    match (
                        a.get("error_class").and_then(Value::as_str),
                        a.get("error").and_then(Value::as_str),
                    ) {
                        (Some(c), Some(e)) => truncate(&format!("{c}: {e}"), 60),
                        (Some(c), None) => c.to_owned(),
                        _ => "-".to_owned(),
                    },
                ]
            }),
        ));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_lifecycle_and_attempts() {
        let view = serde_json::json!({
            "id": "0193f0c1-0000-7000-8000-000000000001",
            "kind": "payment", "provider": "sandbox", "operation": "charge",
            "status": "failed", "seq": 7, "attempt": 1,
            "error": {"class": "permanent", "code": "http_400", "message": "declined"},
            "created_at": "2026-11-25T10:00:00Z", "updated_at": "2026-11-25T10:00:01Z",
            "events": [
                {"seq": 0, "status": "pending", "attempt": 0, "occurred_at": "2026-11-25T10:00:00.120345678Z"},
                {"seq": 5, "status": "processing", "attempt": 1, "occurred_at": "2026-11-25T10:00:00Z"},
                {"seq": 7, "status": "failed", "attempt": 1, "occurred_at": "2026-11-25T10:00:01Z",
                 "error": {"class": "permanent", "code": "http_400", "message": "declined"}}
            ],
            "attempts": [
                {"attempt": 1, "method": "POST", "url": "https://127.0.0.1/x", "status": 400,
                 "duration_ms": 4, "started_at": "2026-11-25T10:00:00Z",
                 "error_class": "permanent", "error": "http_400"}
            ]
        });
        let text = render(&view);
        for needle in [
            "payment.sandbox.charge",
            "status   failed (seq 7, attempt 1)",
            "permanent http_400: declined",
            "events (3)",
            "processing",
            "provider attempts (1)",
            "POST https://127.0.0.1/x",
            // Milliseconds, whatever precision the ledger stored.
            "2026-11-25T10:00:00.120Z",
        ] {
            assert!(text.contains(needle), "{needle} in\n{text}");
        }
        assert!(!text.contains(".120345678"), "{text}");
    }

    #[test]
    fn problem_details_are_shown() {
        assert_eq!(
            problem_detail(r#"{"type":"about:blank","title":"Bad","detail":"no"}"#),
            "no"
        );
        assert_eq!(problem_detail("plain"), "plain");
    }
}
