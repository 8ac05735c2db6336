//! `switchyard topology apply|check`: declare the configured topology, or compare it with
//! what the broker has.
//!
//! `check` changes nothing. Over AMQP it asks for every exchange and queue of the plan
//! ([`Topology::plan`], the same list `apply` declares) with a passive declare, which only
//! tells whether it exists; for those that exist it then declares them again with the
//! expected type, durability and arguments, which the broker accepts only when they are
//! equivalent (it answers `PRECONDITION_FAILED` naming the differing argument otherwise) and
//! which creates nothing because they exist. AMQP cannot look at bindings without creating
//! them, so bindings are compared through the management API (`GET /api/bindings/{vhost}`);
//! when that is unreachable the report says they were not checked.

use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use switchyard_amqp::lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use switchyard_amqp::lapin::types::{AMQPValue, FieldTable};
use switchyard_amqp::lapin::uri::AMQPUri;
use switchyard_amqp::lapin::{Channel, Connection};
use switchyard_amqp::topology::Declaration;
use switchyard_amqp::{Broker, BrokerSettings, Topology};
use switchyard_config::Config;

use crate::exit::CliError;
use crate::output;
use crate::say;

/// The topology the configuration needs: every kind built in or configured, every provider.
/// Built from names only: checking or applying it needs no provider secret.
pub fn configured(config: &Config) -> anyhow::Result<Topology> {
    let kinds = switchyard_ingress::kinds(config)?;
    Ok(switchyard_worker::topology_of(&kinds, config))
}

/// `topology apply`.
pub async fn apply(config: &Config) -> anyhow::Result<()> {
    let topology = configured(config)?;
    let broker = Broker::start(
        BrokerSettings::from_config(&config.amqp, "switchyard-topology"),
        topology.clone(),
    )?;
    let ready = broker.wait_ready(Duration::from_secs(15)).await;
    broker.close().await;
    if !ready {
        anyhow::bail!(
            "could not declare the topology on {}: {}",
            crate::connect::redact_urls(config.amqp.url.expose()),
            crate::up::BROKER_HELP
        );
    }
    say(
        "declared exchanges: switchyard.commands, switchyard.events, switchyard.retry, switchyard.dead, switchyard.unroutable",
    );
    for (kind, providers) in topology.providers() {
        say(format!(
            "  kind {kind}: dlq switchyard.dlq.{kind}, abandoned {}, {} delay tiers",
            switchyard_amqp::topology::abandoned_queue(kind),
            topology.tiers().len()
        ));
        for p in providers {
            say(format!(
                "    work queue {}",
                switchyard_amqp::topology::work_queue(kind, p)
            ));
        }
    }
    Ok(())
}

/// One thing out of order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `exchange`, `queue` or `binding`.
    pub entity: &'static str,
    /// Its name (for a binding: `exchange -> queue [key]`).
    pub name: String,
    /// `missing`, or what differs.
    pub problem: String,
}

/// What `check` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Whether everything is in order.
    pub ok: bool,
    /// Exchanges compared.
    pub exchanges: usize,
    /// Queues compared.
    pub queues: usize,
    /// Bindings compared (0 when they could not be).
    pub bindings: usize,
    /// Why bindings were not compared, if they were not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bindings_skipped: Option<String>,
    /// What is missing or different.
    pub problems: Vec<Problem>,
}

/// How to reach the management API.
#[derive(Debug, Clone)]
pub struct Management {
    /// Base URL, e.g. `http://127.0.0.1:15672`.
    pub url: String,
    /// User and password (those of the AMQP URL).
    pub user: String,
    /// Password.
    pub password: String,
    /// The vhost of the AMQP URL.
    pub vhost: String,
}

impl Management {
    /// The management API beside the broker of `amqp_url` (same host, port 15672, same
    /// credentials), or at `url` when given.
    pub fn for_amqp(amqp_url: &str, url: Option<String>) -> anyhow::Result<Self> {
        let uri: AMQPUri = amqp_url
            .parse()
            .map_err(|e: String| anyhow::anyhow!("invalid broker URL: {e}"))?;
        Ok(Self {
            url: url.unwrap_or_else(|| format!("http://{}:15672", uri.authority.host)),
            user: uri.authority.userinfo.username,
            password: uri.authority.userinfo.password,
            vhost: uri.vhost,
        })
    }
}

/// Percent-encodes one path segment.
pub(crate) fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn reply_text(e: &switchyard_amqp::lapin::Error) -> String {
    e.to_string()
}

fn is_missing(e: &switchyard_amqp::lapin::Error) -> bool {
    let t = e.to_string();
    t.contains("NOT_FOUND") || t.contains("404")
}

/// Compares exchanges and queues of `plan` with the broker behind `connection`.
async fn check_amqp(
    connection: &Connection,
    plan: &[Declaration],
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut ch: Channel = connection.create_channel().await?;
    for d in plan {
        let (entity, name, passive) = match d {
            Declaration::Exchange { name, kind, .. } => {
                report.exchanges += 1;
                let r = ch
                    .exchange_declare(
                        name.as_str().into(),
                        kind.clone(),
                        ExchangeDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await;
                ("exchange", name, r)
            }
            Declaration::Queue { name, .. } => {
                report.queues += 1;
                let r = ch
                    .queue_declare(
                        name.as_str().into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .map(|_| ());
                ("queue", name, r)
            }
            Declaration::Binding { .. } => continue,
        };
        let problem = match passive {
            Err(e) if is_missing(&e) => Some("missing".to_owned()),
            Err(e) => Some(format!("cannot inspect: {}", reply_text(&e))),
            // It exists: an equivalent declaration succeeds and changes nothing.
            Ok(()) => d
                .declare(&ch)
                .await
                .err()
                .map(|e| format!("differs: {}", reply_text(&e))),
        };
        if let Some(problem) = problem {
            report.problems.push(Problem {
                entity,
                name: name.clone(),
                problem,
            });
            // A failed declare closes the channel.
            ch = connection.create_channel().await?;
        }
    }
    let _ = ch.close(200, "checked".into()).await;
    Ok(())
}

fn arg_text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        other => format!("{other:?}"),
    }
}

/// Whether the management API's `binding` is `expected`.
fn binding_matches(
    binding: &serde_json::Value,
    queue: &str,
    exchange: &str,
    key: &str,
    args: &FieldTable,
) -> bool {
    let field = |k: &str| binding.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    field("source") == exchange
        && field("destination") == queue
        && field("destination_type") == "queue"
        && field("routing_key") == key
        && args.inner().iter().all(|(k, v)| {
            binding
                .get("arguments")
                .and_then(|a| a.get(k.as_str()))
                .map(|a| match a {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .is_some_and(|a| a == arg_text(v))
        })
}

/// Compares the bindings of `plan` with the management API's list.
async fn check_bindings(mgmt: &Management, plan: &[Declaration], report: &mut Report) {
    let url = format!(
        "{}/api/bindings/{}",
        mgmt.url.trim_end_matches('/'),
        segment(&mgmt.vhost)
    );
    let fetched = async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let resp = client
            .get(&url)
            .basic_auth(&mgmt.user, Some(&mgmt.password))
            .send()
            .await?
            .error_for_status()?;
        resp.json::<Vec<serde_json::Value>>().await
    }
    .await;
    let existing = match fetched {
        Ok(b) => b,
        Err(e) => {
            report.bindings_skipped = Some(format!(
                "the management API at {} is unreachable or refused ({e}): enable it on the broker \
                 (`rabbitmq-plugins enable rabbitmq_management`), or pass --management-url \
                 where it listens",
                mgmt.url
            ));
            return;
        }
    };
    for d in plan {
        let Declaration::Binding {
            queue,
            exchange,
            routing_key,
            arguments,
        } = d
        else {
            continue;
        };
        report.bindings += 1;
        if !existing
            .iter()
            .any(|b| binding_matches(b, queue, exchange, routing_key, arguments))
        {
            report.problems.push(Problem {
                entity: "binding",
                name: format!("{exchange} -> {queue} [{routing_key}]"),
                problem: "missing".to_owned(),
            });
        }
    }
}

/// Checks the broker against `topology`.
pub async fn inspect(
    config: &Config,
    topology: &Topology,
    management_url: Option<String>,
) -> anyhow::Result<Report> {
    let plan = topology.plan();
    let connection = crate::connect::connect(config, "switchyard-topology-check").await?;
    let mut report = Report::default();
    let checked = check_amqp(&connection, &plan, &mut report).await;
    let _ = connection.close(200, "checked".into()).await;
    checked.context("checking exchanges and queues")?;
    let mgmt = Management::for_amqp(config.amqp.first_broker_url().expose(), management_url)?;
    check_bindings(&mgmt, &plan, &mut report).await;
    report.ok = report.problems.is_empty();
    Ok(report)
}

/// `topology check`: exit code 4 when anything is missing or different.
pub async fn check(
    config: &Config,
    management_url: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let topology = configured(config)?;
    let report = inspect(config, &topology, management_url).await?;
    if json {
        output::json(&report)?;
    } else {
        if !report.problems.is_empty() {
            output::print_line(&output::table(
                &["ENTITY", "NAME", "PROBLEM"],
                report.problems.iter().map(|p| {
                    vec![
                        p.entity.to_owned(),
                        p.name.clone(),
                        output::truncate(&p.problem, 160),
                    ]
                }),
            ));
        }
        output::print_line(&format!(
            "checked {} exchanges, {} queues, {} bindings: {}",
            report.exchanges,
            report.queues,
            report.bindings,
            if report.ok {
                "all in order".to_owned()
            } else {
                format!("{} problems", report.problems.len())
            }
        ));
        if let Some(why) = &report.bindings_skipped {
            output::note(format!("warning: bindings not checked: {why}"));
        }
    }
    if report.ok {
        Ok(())
    } else {
        Err(CliError::check_failed(format!(
            "the broker's topology is not in order ({} problems); `switchyard topology apply` declares what is missing",
            report.problems.len()
        ))
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_amqp::lapin::types::{LongString, ShortString};

    #[test]
    fn the_topology_needs_no_provider_secret() {
        let config = Config::from_toml_str(
            "[[providers]]\nname = \"acme\"\nkind = \"payment\"\ntype = \"http\"\n\
             base_url = \"https://api.acme.example\"\noperations = [\"charge\"]\n\
             bearer_token_env = \"SWITCHYARD_TEST_UNSET_ACME_TOKEN\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // Building the providers needs the token, and says so.
        let kinds = switchyard_ingress::kinds(&config).unwrap_or_else(|e| panic!("{e}"));
        let built = switchyard_worker::Catalog::build(&kinds, &config);
        assert!(built.is_err(), "the secret is missing, so building fails");
        // The topology does not.
        let topology = configured(&config).unwrap_or_else(|e| panic!("{e}"));
        let catalog_like: Vec<_> = topology
            .providers()
            .iter()
            .flat_map(|(k, ps)| ps.iter().map(move |p| format!("{k}.{p}")))
            .collect();
        assert!(
            catalog_like.contains(&"payment.acme".to_owned()),
            "{catalog_like:?}"
        );
    }

    #[test]
    fn the_management_api_sits_beside_the_broker() {
        let m = Management::for_amqp("amqp://ops:pw@rabbit.internal:5672/prod%2fa", None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.url, "http://rabbit.internal:15672");
        assert_eq!(m.user, "ops");
        assert_eq!(m.password, "pw");
        assert_eq!(segment(&m.vhost), "prod%2Fa");
        assert_eq!(segment("/"), "%2F");
    }

    #[test]
    fn header_bindings_compare_their_arguments() {
        let mut args = FieldTable::default();
        args.insert(
            ShortString::from("x-match"),
            AMQPValue::LongString(LongString::from(b"all".to_vec())),
        );
        let b = serde_json::json!({
            "source": "switchyard.retry", "destination": "switchyard.retry.payment.1s",
            "destination_type": "queue", "routing_key": "", "arguments": {"x-match": "all"}
        });
        assert!(binding_matches(
            &b,
            "switchyard.retry.payment.1s",
            "switchyard.retry",
            "",
            &args
        ));
        assert!(!binding_matches(
            &b,
            "switchyard.retry.payment.2s",
            "switchyard.retry",
            "",
            &args
        ));
        let other = serde_json::json!({
            "source": "switchyard.retry", "destination": "switchyard.retry.payment.1s",
            "destination_type": "queue", "routing_key": "", "arguments": {"x-match": "any"}
        });
        assert!(!binding_matches(
            &other,
            "switchyard.retry.payment.1s",
            "switchyard.retry",
            "",
            &args
        ));
    }
}
