//! Every `switchyard_*` metric: its type, its labels and its help text. The help text is
//! what `/metrics` says in `# HELP` and what docs/operations.md says in its metric tables,
//! word for word (tests/metrics.rs compares the two on a running fleet).

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// A Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

impl MetricType {
    /// The name Prometheus' `# TYPE` line uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// One metric of the catalog.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Its name.
    pub name: &'static str,
    /// Its type.
    pub kind: MetricType,
    /// Its labels, in the order the docs list them.
    pub labels: &'static [&'static str],
    /// Its unit (seconds, or a count).
    pub unit: Unit,
    /// Its help text.
    pub help: &'static str,
}

const fn counter(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind: MetricType::Counter,
        labels,
        unit: Unit::Count,
        help,
    }
}

const fn gauge(
    name: &'static str,
    labels: &'static [&'static str],
    unit: Unit,
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind: MetricType::Gauge,
        labels,
        unit,
        help,
    }
}

const fn histogram(
    name: &'static str,
    labels: &'static [&'static str],
    unit: Unit,
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind: MetricType::Histogram,
        labels,
        unit,
        help,
    }
}

/// `switchyard_commands_total`: commands ended, by who ended them (`source`).
pub const COMMANDS_TOTAL: &str = "switchyard_commands_total";

/// Every metric Switchyard records.
pub const METRICS: &[Metric] = &[
    // Workers.
    counter(
        "switchyard_attempts_total",
        &["kind", "provider", "operation", "outcome"],
        "Provider attempts, by kind, provider, operation and outcome (ok, or the error class: transient, timeout, permanent, invalid, expired, unknown).",
    ),
    histogram(
        "switchyard_attempt_duration_seconds",
        &["kind", "provider", "operation"],
        Unit::Seconds,
        "Duration of one provider attempt through the worker's tower stack, by kind, provider and operation.",
    ),
    counter(
        "switchyard_retries_scheduled_total",
        &["kind", "provider"],
        "Failed attempts sent to a delay tier for a later retry, by kind and provider.",
    ),
    counter(
        "switchyard_quick_retries_total",
        &[],
        "In-process quick retries of fast transient failures.",
    ),
    counter(
        "switchyard_dead_letters_total",
        &["kind", "provider", "class"],
        "Commands dead-lettered to switchyard.dlq.{kind}, by kind, provider and error class (permanent, transient, timeout, invalid, expired).",
    ),
    counter(
        "switchyard_abandoned_total",
        &["kind", "outcome"],
        "Commands the broker dead-lettered at a work queue's delivery limit (a crash loop, or workers stopped while holding them), answered by a worker, by kind and outcome (failed: never reached the provider; unknown: the provider may have acted; resent: its decision was carried out again; invalid: rejected as invalid; check: a status check, left to the wait's deadline or an operator).",
    ),
    counter(
        "switchyard_unroutable_total",
        &["event"],
        "Commands no worker serves, parked in switchyard.dlq.unroutable, by event (failed: a failed event was sent; none: the id was not readable).",
    ),
    counter(
        COMMANDS_TOTAL,
        &["kind", "provider", "status", "source"],
        "Commands ended, by kind, provider, status (completed, failed) and source (worker: by a worker; webhook, poll, expiry, operator: a waiting or unknown command ended by the ledger's resolver).",
    ),
    counter(
        "switchyard_status_checks_total",
        &["kind", "provider", "outcome"],
        "Status checks of polled providers, by kind, provider and outcome (pending, succeeded, failed, or the error class: transient, timeout, permanent, invalid, expired, unknown).",
    ),
    gauge(
        "switchyard_circuit_state",
        &["kind", "provider", "state"],
        Unit::Count,
        "A provider's circuit in this process, by kind and provider, one series per state (closed, half_open, open): 1 for the current state, 0 for the others.",
    ),
    gauge(
        "switchyard_inflight",
        &["kind"],
        Unit::Count,
        "Deliveries being processed now, by kind.",
    ),
    histogram(
        "switchyard_delivery_duration_seconds",
        &["kind"],
        Unit::Seconds,
        "Duration of one delivery from receipt to acknowledgement, by kind.",
    ),
    counter(
        "switchyard_unknown_outcomes_total",
        &["kind", "provider"],
        "Attempts that ended unknown (the provider may have acted but its answer could not be read), by kind and provider.",
    ),
    counter(
        "switchyard_duplicate_deliveries_total",
        &["kind", "reason"],
        "Deliveries of a step already taken, acknowledged without effect, by kind and reason (repeated, superseded, decided_elsewhere; for status checks check_taken, check_behind).",
    ),
    // Workers and the ingress.
    counter(
        "switchyard_duplicate_commands_total",
        &["kind", "provider"],
        "Commands that repeated an earlier command's identity and fingerprint and were not executed again, by kind and provider.",
    ),
    counter(
        "switchyard_idempotency_conflicts_total",
        &["kind", "provider"],
        "Commands refused because their idempotency key (or id) already names a command asking for something else, by kind and provider.",
    ),
    histogram(
        "switchyard_journal_batch_size",
        &[],
        Unit::Count,
        "Journal operations written in one transaction (group commit).",
    ),
    histogram(
        "switchyard_journal_write_seconds",
        &[],
        Unit::Seconds,
        "Time to write one journal batch, commit included: every command waits for it before its provider call and after it.",
    ),
    // The ingress.
    counter(
        "switchyard_ingress_requests_total",
        &["outcome"],
        "Requests to POST /v1/commands, by outcome (accepted, or the refusal: unauthenticated, unsupported_media_type, too_large, body_unread, malformed, invalid, idempotency_conflict, unavailable).",
    ),
    counter(
        "switchyard_commands_received_total",
        &["kind", "provider"],
        "Commands accepted by the ingress and confirmed by the broker, by kind and provider.",
    ),
    counter(
        "switchyard_webhooks_total",
        &["outcome"],
        "Inbound provider webhooks, by outcome (queued: for the resolver; ignored: verified but about nothing Switchyard waits for; or the refusal: not_found, too_large, body_unread, bad_signature, malformed, unavailable).",
    ),
    // The ledger.
    counter(
        "switchyard_ledger_ingested_total",
        &["kind"],
        "Records written by the ledger, by kind (events, attempts).",
    ),
    histogram(
        "switchyard_ledger_batch_seconds",
        &[],
        Unit::Seconds,
        "Duration of one batch transaction of the ledger.",
    ),
    gauge(
        "switchyard_ledger_lag_seconds",
        &[],
        Unit::Seconds,
        "Age of the newest event of the ledger's last batch when it was written.",
    ),
    counter(
        "switchyard_ledger_undecodable_total",
        &["kind"],
        "Messages the ledger could not decode and parked in switchyard.dlq.ledger, by kind (events, attempts).",
    ),
    counter(
        "switchyard_ledger_dead_letters_total",
        &["queue"],
        "Messages the ledger parked in switchyard.dlq.ledger (refused by its database or undecodable), by source queue (switchyard.ledger.events, switchyard.ledger.attempts).",
    ),
    counter(
        "switchyard_resolutions_total",
        &["source", "outcome"],
        "Messages that could end a waiting or unknown command, by source (webhook, poll, expiry, operator) and outcome (decided: it ended the command; deferred: no wait record yet; duplicate: seen before; late: the command had already ended; recorded: not terminal).",
    ),
    // Every process.
    gauge(
        "switchyard_broker_connected",
        &[],
        Unit::Count,
        "1 while the process holds a broker connection, else 0.",
    ),
    counter(
        "switchyard_broker_connect_failures_total",
        &[],
        "Failed attempts to connect to the broker.",
    ),
    counter(
        "switchyard_events_published_total",
        &["kind", "provider", "status"],
        "Lifecycle events confirmed by the broker, by kind, provider and status (pending, processing, retrying, waiting, unknown, completed, failed, duplicate).",
    ),
    histogram(
        "switchyard_publish_confirm_seconds",
        &["outcome"],
        Unit::Seconds,
        "Time from publishing to the broker's confirm (of the last, for messages published together), by outcome (ok, error).",
    ),
    counter(
        "switchyard_http_connections_refused_total",
        &[],
        "Connections closed on accept because the server already held http.max_connections.",
    ),
];

/// The catalog entry of `name`.
pub fn metric(name: &str) -> Option<&'static Metric> {
    METRICS.iter().find(|m| m.name == name)
}

/// Registers every metric's help text with the installed recorder.
pub(crate) fn describe() {
    for m in METRICS {
        match m.kind {
            MetricType::Counter => describe_counter!(m.name, m.unit, m.help),
            MetricType::Gauge => describe_gauge!(m.name, m.unit, m.help),
            MetricType::Histogram => describe_histogram!(m.name, m.unit, m.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The rows of the metric tables of docs/operations.md's "Metrics" section:
    /// (name, type, labels, help).
    fn documented() -> Vec<(String, String, Vec<String>, String)> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/operations.md");
        let text = std::fs::read_to_string(path).unwrap();
        let start = text.find("\n## Metrics\n").unwrap();
        let end = start + 1 + text[start + 1..].find("\n## ").unwrap();
        text[start..end]
            .lines()
            .filter(|l| l.starts_with("| `switchyard_"))
            .map(|l| {
                let cells: Vec<&str> = l
                    .trim()
                    .trim_matches('|')
                    .split('|')
                    .map(str::trim)
                    .collect();
                assert_eq!(cells.len(), 4, "{l}");
                let labels = cells[2]
                    .split(',')
                    .map(|c| c.trim().trim_matches('`').to_owned())
                    .filter(|c| !c.is_empty())
                    .collect();
                (
                    cells[0].trim_matches('`').to_owned(),
                    cells[1].to_owned(),
                    labels,
                    cells[3].to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn the_operators_guide_documents_every_metric_with_its_exact_help_text() {
        let docs = documented();
        for m in METRICS {
            let row = docs
                .iter()
                .find(|(name, ..)| name == m.name)
                .unwrap_or_else(|| panic!("docs/operations.md does not list {}", m.name));
            assert_eq!(row.1, m.kind.as_str(), "{}: type", m.name);
            assert_eq!(row.2, m.labels, "{}: labels", m.name);
            assert_eq!(
                row.3, m.help,
                "{}: the docs and the # HELP text differ",
                m.name
            );
        }
        for (name, ..) in &docs {
            assert!(
                metric(name).is_some(),
                "docs/operations.md lists {name}, which the catalog does not know"
            );
        }
        assert_eq!(docs.len(), METRICS.len(), "a metric is listed twice");
    }

    #[test]
    fn every_metric_is_named_once_and_follows_prometheus_naming() {
        let mut seen = BTreeSet::new();
        for m in METRICS {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(m.name.starts_with("switchyard_"), "{}", m.name);
            assert_eq!(
                m.kind == MetricType::Counter,
                m.name.ends_with("_total"),
                "{}: counters, and only they, end in _total",
                m.name
            );
            assert!(!m.help.is_empty() && m.help.ends_with('.'), "{}", m.name);
            // Every label is named in the help text, so a reader of `/metrics` knows it.
            for label in m.labels {
                let named = m.help.contains(label)
                    || (*label == "class" && m.help.contains("error class"))
                    || (*label == "queue" && m.help.contains("source queue"));
                assert!(named, "{}: the help does not mention {label}", m.name);
            }
        }
    }
}
