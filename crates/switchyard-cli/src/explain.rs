//! `switchyard providers explain <name>`: what a configured provider will send and how its
//! answers are classified, without calling it.

use std::fmt::Write as _;

use switchyard_config::{Config, ProviderConfig};
use switchyard_worker::generic::errors::{DEFAULT_RULES, ErrorRule, RuleClass, StatusMatch};
use switchyard_worker::generic::shape::{BodyMode, BodySpec, OperationShape};
use switchyard_worker::{GenericHttpProvider, Kind};

/// The explanation of every entry named `name` (one per kind it serves), as text.
pub fn explain(config: &Config, name: &str) -> anyhow::Result<String> {
    let kinds = switchyard_ingress::kinds(config)?;
    let mut out = String::new();
    let mut found = false;
    for (index, p) in config.providers.iter().enumerate() {
        if p.name.as_str() != name {
            continue;
        }
        found = true;
        let kind = kinds
            .iter()
            .find(|k| k.spec().name == p.kind)
            .ok_or_else(|| anyhow::anyhow!("provider {name}: no kind {}", p.kind))?;
        explain_entry(&mut out, config, kind.as_ref(), p, index)?;
    }
    if !found {
        anyhow::bail!("no provider named {name:?} in the configuration");
    }
    Ok(out)
}

fn explain_entry(
    out: &mut String,
    config: &Config,
    kind: &dyn Kind,
    p: &ProviderConfig,
    index: usize,
) -> anyhow::Result<()> {
    let spec = kind.spec();
    let _ = writeln!(
        out,
        "provider {} (kind {}, type {}), {}",
        p.name,
        p.kind,
        p.provider_type,
        ProviderConfig::key(index)
    );
    if p.provider_type != *"http" {
        let _ = writeln!(
            out,
            "  written in code: its requests are the vendor's API; operations: {}",
            names(spec.operations.iter().map(|o| o.name.as_str()))
        );
        let _ = writeln!(
            out,
            "  errors: the provider's own rules, then the defaults:"
        );
        default_rules(out, 1);
        return Ok(());
    }
    let ctx = switchyard_worker::provider_context(config, p);
    let provider = GenericHttpProvider::from_config(p, index, &ctx)?;
    let _ = writeln!(out, "  base_url: {}", provider.base_url());
    let _ = writeln!(out, "  auth: {}", provider.auth().describe());
    let h = provider.idempotency_header();
    if provider.is_idempotent() {
        let _ = writeln!(
            out,
            "  idempotency: {h}: <the command's key, the same on every attempt>"
        );
    } else {
        let _ = writeln!(
            out,
            "  idempotency: none (idempotent = false): {h} is sent but not relied on; never \
             called again once a request may have reached it: a crash, a timeout or a broken \
             connection during the call leaves the outcome unknown"
        );
    }
    let _ = writeln!(out, "  errors (the first row that matches decides):");
    for (i, rule) in provider.error_rules().iter().enumerate() {
        let _ = writeln!(out, "    {}. {}", i + 1, describe_rule(rule));
    }
    default_rules(out, provider.error_rules().len() + 1);
    let _ = writeln!(out, "  operations:");
    for op in p.operations.names() {
        let schema = if spec.operation(op.as_str()).is_some() {
            format!("the {} kind's schema", spec.name)
        } else if p
            .operations
            .get(op.as_str())
            .is_some_and(|d| d.schema.is_some() || d.schema_file.is_some())
        {
            "the schema declared with it".to_owned()
        } else {
            "any JSON object (no schema declared)".to_owned()
        };
        let shape = provider.shape(op.as_str());
        let _ = writeln!(out, "    {op}: payload checked against {schema}");
        sample(out, &provider, op.as_str(), shape);
    }
    Ok(())
}

fn sample(out: &mut String, provider: &GenericHttpProvider, op: &str, shape: &OperationShape) {
    let path = shape.path.as_deref().unwrap_or(op);
    let mut line = format!("      {} {}{}", shape.method(), provider.base_url(), path);
    if !shape.query.is_empty() {
        let q: Vec<String> = shape
            .query
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = write!(line, "?{}", q.join("&"));
    }
    let _ = writeln!(out, "{line}");
    let _ = writeln!(
        out,
        "      {}: <idempotency key>",
        provider.idempotency_header()
    );
    let _ = writeln!(out, "      x-switchyard-command-id: <command id>");
    for (k, v) in &shape.headers {
        let _ = writeln!(out, "      {k}: {v}");
    }
    let body = match &shape.body {
        None | Some(BodySpec::Mode(BodyMode::Json)) => "the payload as JSON".to_owned(),
        Some(BodySpec::Mode(BodyMode::Form)) => {
            "the payload form-encoded (nested fields as a[b])".to_owned()
        }
        Some(BodySpec::Mode(BodyMode::None)) => "none".to_owned(),
        Some(BodySpec::Template(t)) => format!("{t}"),
    };
    let _ = writeln!(out, "      body: {body}");
    let reference = shape
        .reference
        .clone()
        .unwrap_or_else(|| "/reference, else /id".to_owned());
    let outcome = match &shape.status {
        Some(s) => format!(
            "{} is one of succeeded {:?}, pending {:?} (waits), failed {:?}; any other value \
             leaves the outcome unknown",
            s.pointer, s.succeeded, s.pending, s.failed
        ),
        None => "202 means accepted (waits), any other 2xx done".to_owned(),
    };
    let _ = writeln!(
        out,
        "      answer: reference at {reference}; {outcome}; result: {}",
        shape.result.as_deref().unwrap_or("the whole answer")
    );
}

fn describe_rule(rule: &ErrorRule) -> String {
    let status = match &rule.status {
        Some(StatusMatch::Code(c)) => format!("status {c}"),
        Some(StatusMatch::Text(t)) => format!("status {t}"),
        None => "any status".to_owned(),
    };
    let code = match (&rule.code_pointer, rule.codes.is_empty()) {
        (Some(p), true) => format!(", any code at {p}"),
        (Some(p), false) => format!(", {p} in {:?}", rule.codes),
        (None, _) => String::new(),
    };
    let class = match rule.class {
        RuleClass::Transient => "transient (retried with the same key)".to_owned(),
        RuleClass::Permanent => "permanent (failed, dead-lettered)".to_owned(),
        RuleClass::Unknown => {
            "unknown (never retried blindly; a status check or an operator decides)".to_owned()
        }
        RuleClass::RateLimited => format!(
            "rate limited: retried after the wait in {} ({:?})",
            rule.wait_header.as_deref().unwrap_or("Retry-After"),
            rule.wait_format
        ),
    };
    format!("{status}{code} -> {class}")
}

fn default_rules(out: &mut String, first: usize) {
    for (i, (when, what)) in DEFAULT_RULES.iter().enumerate() {
        let _ = writeln!(out, "    {}. {when} -> {what}", first + i);
    }
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    it.collect::<Vec<_>>().join(", ")
}
