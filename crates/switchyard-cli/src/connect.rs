//! One plain broker connection for a one-shot command (`dlq`, `topology check`).
//!
//! Unlike [`switchyard_amqp::Broker`], it declares nothing on connect (a check or an
//! inspection must not change the broker) and does not retry: an operator wants to hear at
//! once that the broker is unreachable, with the URL (never its password) in the message.

use std::time::Duration;

use anyhow::Context;
use switchyard_amqp::lapin::uri::AMQPUri;
use switchyard_amqp::lapin::{Connection, ConnectionProperties};
use switchyard_config::Config;

/// `url` with any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let hidden = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            format!("{scheme}://{hidden}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// Each URL of a comma-separated list with its password replaced by `***`.
pub fn redact_urls(list: &str) -> String {
    list.split(',')
        .map(|u| redact_url(u.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Connects to the first broker address of `[amqp]` that answers, each within a few seconds.
pub async fn connect(config: &Config, name: &str) -> anyhow::Result<Connection> {
    let mut last = None;
    for url in config.amqp.broker_urls() {
        match connect_to(config, url.expose(), name).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no broker address is configured")))
}

async fn connect_to(config: &Config, url: &str, name: &str) -> anyhow::Result<Connection> {
    let shown = redact_url(url);
    let mut uri: AMQPUri = url
        .parse()
        .map_err(|e: String| anyhow::anyhow!("invalid broker URL {shown}: {e}"))?;
    uri.query.heartbeat = Some(config.amqp.heartbeat_secs);
    uri.query.connection_timeout = Some(5_000);
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let connected =
        tokio::time::timeout(Duration::from_secs(10), Connection::connect_uri(uri, props))
            .await
            .map_err(|_| anyhow::anyhow!("timed out"))
            .and_then(|r| r.map_err(anyhow::Error::from));
    connected.with_context(|| {
        format!("cannot connect to the broker at {shown} (set [amqp] url or SWITCHYARD_AMQP_URL)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("amqp://guest:s3cret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_url("amqps://user@broker.example/vh"),
            "amqps://user@broker.example/vh"
        );
        assert_eq!(redact_url("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
        assert_eq!(redact_url("amqp://u:p@ss@host/v"), "amqp://u:***@host/v");
        assert_eq!(
            redact_urls("amqp://a:s1@h:1/v,amqp://b:s2@h:2/v"),
            "amqp://a:***@h:1/v,amqp://b:***@h:2/v"
        );
    }
}
