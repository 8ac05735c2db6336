//! What `switchyard up` and `switchyard down` need of the broker before the fleet starts: a
//! login check that names the user and the vhost when the broker refuses them (instead of
//! reconnecting forever), and a vhost of `up`'s own, created and deleted through the
//! management API or, on the broker's own machine, `rabbitmqctl`.

use std::time::Duration;

use anyhow::{Context, bail};
use switchyard_amqp::lapin::{Connection, ConnectionProperties, uri::AMQPUri};

use crate::topology::{Management, segment};

/// The vhost `up` runs on unless told otherwise: what it leaves (dead letters, unroutable
/// commands, scheduled expiries) stays out of the default vhost, and `down --reset` can
/// delete it whole.
pub const UP_VHOST: &str = "switchyard-up";

/// A broker URL, taken apart.
#[derive(Debug, Clone)]
pub struct BrokerUrl {
    uri: AMQPUri,
    raw: String,
}

impl BrokerUrl {
    /// Parses an `amqp://` or `amqps://` URL.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: AMQPUri = url
            .parse()
            .map_err(|e: String| anyhow::anyhow!("invalid broker URL: {e}"))?;
        Ok(Self {
            uri,
            raw: url.to_owned(),
        })
    }

    /// The user the URL logs in as.
    pub fn user(&self) -> &str {
        &self.uri.authority.userinfo.username
    }

    /// The vhost the URL names (`/` when it names none).
    pub fn vhost(&self) -> &str {
        &self.uri.vhost
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The same broker and credentials, on `vhost`.
    pub fn on_vhost(&self, vhost: &str) -> String {
        let scheme_end = self.raw.find("://").map_or(0, |i| i + 3);
        let rest = &self.raw[scheme_end..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let query = rest[authority_end..]
            .find('?')
            .map(|i| &rest[authority_end + i..])
            .unwrap_or_default();
        format!(
            "{}{}/{}{}",
            &self.raw[..scheme_end],
            &rest[..authority_end],
            segment(vhost),
            query
        )
    }

    fn management(&self) -> anyhow::Result<Management> {
        Management::for_amqp(&self.raw, std::env::var("SWITCHYARD_MANAGEMENT_URL").ok())
    }

    fn is_local(&self) -> bool {
        matches!(
            self.uri.authority.host.as_str(),
            "127.0.0.1" | "localhost" | "::1" | "[::1]"
        )
    }
}

/// Why the broker turned a login away.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Wrong user name or password (`ACCESS_REFUSED`), or a user without access to the vhost.
    Credentials,
    /// The vhost does not exist (`NOT_ALLOWED`, "vhost … not found").
    NoVhost,
    /// Anything else: the broker's own words.
    Other(String),
}

impl Refusal {
    fn classify(error: &str) -> Self {
        if error.contains("ACCESS_REFUSED") || error.contains("403") {
            Self::Credentials
        } else if error.contains("NOT_ALLOWED") || error.contains("530") {
            Self::NoVhost
        } else {
            Self::Other(error.to_owned())
        }
    }
}

/// Logs in once and closes: `Ok` when the broker takes `url`'s user on its vhost.
pub async fn try_login(url: &str) -> Result<(), Refusal> {
    let attempt = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await;
    match attempt {
        Ok(Ok(connection)) => {
            let _ = connection.close(200, "login checked".into()).await;
            Ok(())
        }
        Ok(Err(e)) => Err(Refusal::classify(&e.to_string())),
        Err(_) => Err(Refusal::Other(
            "the broker did not finish the login within 10 s".to_owned(),
        )),
    }
}

/// The advice for a refused login, naming the user and the vhost.
pub fn refusal_help(url: &BrokerUrl, vhost: &str, refusal: &Refusal) -> String {
    let user = url.user();
    match refusal {
        Refusal::Credentials => format!(
            "RabbitMQ refused user '{user}' on vhost '{vhost}' (ACCESS_REFUSED): the user name or \
             password in SWITCHYARD_AMQP_URL is wrong, or the user has no permissions on that \
             vhost. Check them with `rabbitmqctl list_users` and \
             `rabbitmqctl list_permissions -p {vhost}`, or pass another --vhost."
        ),
        Refusal::NoVhost => format!(
            "RabbitMQ has no vhost '{vhost}' (NOT_ALLOWED). Create it with \
             `rabbitmqctl add_vhost {vhost}` and `rabbitmqctl set_permissions -p {vhost} {user} \
             '.*' '.*' '.*'`, or pass another --vhost."
        ),
        Refusal::Other(words) => {
            format!("RabbitMQ did not let user '{user}' in on vhost '{vhost}': {words}")
        }
    }
}

/// Creates `vhost` when missing and gives `url`'s user every permission on it: through the
/// management API, else (on this machine's broker) `rabbitmqctl`. Returns how it was done.
pub async fn ensure_vhost(url: &BrokerUrl, vhost: &str) -> anyhow::Result<&'static str> {
    let mgmt = url.management()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let put = |path: String, body: serde_json::Value| {
        http.put(format!("{}/api/{path}", mgmt.url))
            .basic_auth(&mgmt.user, Some(&mgmt.password))
            .json(&body)
            .send()
    };
    let via_api = async {
        put(format!("vhosts/{}", segment(vhost)), serde_json::json!({}))
            .await?
            .error_for_status()?;
        put(
            format!("permissions/{}/{}", segment(vhost), segment(&mgmt.user)),
            serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}),
        )
        .await?
        .error_for_status()?;
        Ok::<_, reqwest::Error>(())
    }
    .await;
    let api_error = match via_api {
        Ok(()) => return Ok("the management API"),
        Err(e) => e,
    };
    if url.is_local() {
        let added = rabbitmqctl(&["add_vhost", vhost]).await;
        let permitted =
            rabbitmqctl(&["set_permissions", "-p", vhost, &mgmt.user, ".*", ".*", ".*"]).await;
        if added.is_ok() && permitted.is_ok() {
            return Ok("rabbitmqctl");
        }
    }
    bail!(
        "cannot create the vhost '{vhost}': the management API at {} answered: {api_error}{}. \
         Enable the management plugin (`rabbitmq-plugins enable rabbitmq_management`), create \
         the vhost by hand (`rabbitmqctl add_vhost {vhost}` and `rabbitmqctl set_permissions -p \
         {vhost} {} '.*' '.*' '.*'`), or run on the default vhost with `--vhost /`",
        mgmt.url,
        if url.is_local() {
            ", and rabbitmqctl failed too"
        } else {
            ""
        },
        mgmt.user
    )
}

/// Deletes `vhost` and everything in it.
pub async fn delete_vhost(url: &BrokerUrl, vhost: &str) -> anyhow::Result<()> {
    if vhost == "/" {
        bail!(
            "refusing to delete the default vhost '/': `up` ran on it (--vhost /). Purge what it \
             left with `switchyard dlq purge` per lot instead"
        );
    }
    let mgmt = url.management()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let deleted = http
        .delete(format!("{}/api/vhosts/{}", mgmt.url, segment(vhost)))
        .basic_auth(&mgmt.user, Some(&mgmt.password))
        .send()
        .await;
    match deleted {
        Ok(r) if r.status().is_success() || r.status() == reqwest::StatusCode::NOT_FOUND => Ok(()),
        other => {
            if url.is_local() && rabbitmqctl(&["delete_vhost", vhost]).await.is_ok() {
                return Ok(());
            }
            let why = match other {
                Ok(r) => format!("answered {}", r.status()),
                Err(e) => e.to_string(),
            };
            bail!(
                "cannot delete the vhost '{vhost}': the management API at {} {why}. Delete it \
                 with `rabbitmqctl delete_vhost {vhost}`",
                mgmt.url
            )
        }
    }
}

async fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .context("running rabbitmqctl")?;
    if out.status.success() {
        Ok(())
    } else {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_moves_to_another_vhost_keeping_everything_else() {
        let url = BrokerUrl::parse("amqp://u:p@broker:5673/%2f?heartbeat=10").unwrap();
        assert_eq!(url.vhost(), "/");
        assert_eq!(url.user(), "u");
        assert_eq!(
            url.on_vhost("switchyard-up"),
            "amqp://u:p@broker:5673/switchyard-up?heartbeat=10"
        );
        let bare = BrokerUrl::parse("amqp://guest:guest@127.0.0.1:5672").unwrap();
        assert_eq!(bare.on_vhost("/"), "amqp://guest:guest@127.0.0.1:5672/%2F");
        assert!(bare.is_local());
    }

    #[test]
    fn refusals_are_told_apart() {
        assert_eq!(
            Refusal::classify(
                "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN"
            ),
            Refusal::Credentials
        );
        assert_eq!(
            Refusal::classify("NOT_ALLOWED - vhost nope not found"),
            Refusal::NoVhost
        );
        let help = refusal_help(
            &BrokerUrl::parse("amqp://ann:x@127.0.0.1/").unwrap(),
            "sy",
            &Refusal::Credentials,
        );
        assert!(help.contains("'ann'") && help.contains("'sy'"), "{help}");
    }
}
