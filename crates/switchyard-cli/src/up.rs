//! `switchyard up`: the whole fleet locally, against sandbox providers, ready for a curl.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use switchyard_config::Config;
use switchyard_sandbox::WebhookTarget;
use switchyard_webhooks::StandardWebhooks;
use uuid::Uuid;

use crate::fleet::{
    ASYNC_PROVIDER, Fleet, POLLED_PROVIDER, SandboxSecrets, VendorKeys, sandbox_config,
    start_sandbox, write_private,
};
use crate::say;

/// Options of `switchyard up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Where the ingress listens.
    pub listen: SocketAddr,
    /// Where the generated config and the sandbox CA are written.
    pub state_dir: PathBuf,
}

/// The broker URL `up` will use: the contract's variable, else the default.
pub fn amqp_url() -> String {
    std::env::var("SWITCHYARD_AMQP_URL")
        .unwrap_or_else(|_| switchyard_config::DEFAULT_AMQP_URL.to_owned())
}

/// How to get a broker, for people whose machine has none running.
pub const BROKER_HELP: &str = "\
No RabbitMQ broker answers at SWITCHYARD_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f).
Start one, then run this again:
  - installed locally:        rabbitmq-server -detached
  - with Docker:              docker compose up -d rabbitmq
  - Debian/Ubuntu, not yet installed:  sudo apt-get install -y rabbitmq-server && sudo rabbitmq-server -detached
Or point SWITCHYARD_AMQP_URL at a broker you have.";

/// Checks that something listens at the broker's host and port, so `up` fails with advice
/// instead of retrying forever.
pub async fn broker_reachable(url: &str) -> bool {
    let Some(rest) = url.split("://").nth(1) else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let hostport = authority.rsplit('@').next().unwrap_or_default();
    let default_port = if url.starts_with("amqps") { 5671 } else { 5672 };
    let target = if hostport
        .rsplit(':')
        .next()
        .is_some_and(|p| p.parse::<u16>().is_ok())
    {
        hostport.to_owned()
    } else {
        format!("{hostport}:{default_port}")
    };
    matches!(
        tokio::time::timeout(
            Duration::from_secs(3),
            tokio::net::TcpStream::connect(target)
        )
        .await,
        Ok(Ok(_))
    )
}

/// Runs the fleet until Ctrl-C.
pub async fn run(opts: UpOptions) -> anyhow::Result<()> {
    if !broker_reachable(&amqp_url()).await {
        bail!("{BROKER_HELP}");
    }
    std::fs::create_dir_all(&opts.state_dir)
        .with_context(|| format!("creating {}", opts.state_dir.display()))?;
    // The sandbox must know where to send callbacks before the ingress binds.
    let listen = with_fixed_port(opts.listen)?;
    let webhook_secret = StandardWebhooks::generate_secret();
    let webhook_secret_file = opts.state_dir.join("webhook-secret");
    write_private(&webhook_secret_file, &webhook_secret)?;
    let sandbox = start_sandbox(
        &opts.state_dir,
        Some(WebhookTarget {
            base_url: format!("http://{}/v1/webhooks/", reachable(listen)),
            secret: webhook_secret,
        }),
    )
    .await?;
    let token = format!("sy_dev_{}", Uuid::new_v4().simple());
    // The sandbox's vendor emulators take any credentials shaped like the vendors'.
    let secrets = SandboxSecrets::write(&opts.state_dir, webhook_secret_file, VendorKeys::DEV)?;
    let mut toml = sandbox_config(&sandbox, listen, &token, &secrets);
    // Kept across runs: a replayed command must get the same provider idempotency key.
    let secret_path = opts.state_dir.join("idempotency-secret");
    let secret = match std::fs::read_to_string(&secret_path) {
        Ok(s) if !s.trim().is_empty() => s.trim().to_owned(),
        _ => {
            let s = Uuid::new_v4().simple().to_string();
            std::fs::write(&secret_path, &s)
                .with_context(|| format!("writing {}", secret_path.display()))?;
            s
        }
    };
    toml.push_str(&format!("\n[worker]\nidempotency_secret = \"{secret}\"\n"));
    // The embedded ledger lives with the rest of the local state (SWITCHYARD_DATABASE_URL wins).
    toml.push_str(&format!(
        "\n[ledger]\ndatabase_url = \"sqlite://{}?mode=rwc\"\n",
        opts.state_dir.join("ledger.db").display()
    ));
    let config_path = opts.state_dir.join("switchyard.toml");
    std::fs::write(&config_path, &toml)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let config = Config::from_toml_str(&toml)?;
    let _tracing = switchyard_telemetry::init(&config.telemetry, "switchyard-up");

    let shutdown = switchyard_telemetry::shutdown_on_signals();
    let fleet = Fleet::start(&config, shutdown.clone()).await?;
    if !fleet.wait_ready(Duration::from_secs(30)).await {
        fleet.stop().await;
        bail!("the fleet did not connect to the broker within 30 s\n{BROKER_HELP}");
    }
    let tail = crate::tail::start(&config, Default::default(), false, shutdown.clone())?;

    let url = format!("http://{}", fleet.ingress.addr);
    let workers: Vec<String> = fleet
        .workers
        .iter()
        .map(|w| w.ops_addr.to_string())
        .collect();
    say(format!(
        "\nSwitchyard is up.\n  ingress   {url}  (also serves the ledger: GET {url}/v1/commands/{{id}})\n  token     {token}\n  sandbox   {} (CA {})\n  config    {}\n  metrics   {url}/metrics; workers: {}\n",
        sandbox.base_url(),
        sandbox.ca_pem_path().display(),
        config_path.display(),
        workers.join(", ")
    ));
    say(format!(
        "Try it:\n  curl -sS {url}/v1/commands \\\n    -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n    -d '{{\"kind\":\"payment\",\"provider\":\"sandbox\",\"operation\":\"charge\",\"payload\":{{\"amount\":1999,\"currency\":\"usd\",\"payment_method\":\"pm_card_visa\"}}}}'\n\nA long-running one: `waiting`, then `completed` by a signed webhook about 2 s later\n(provider {POLLED_PROVIDER} does the same by polling):\n  curl -sS {url}/v1/commands \\\n    -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n    -d '{{\"kind\":\"notification\",\"provider\":\"{ASYNC_PROVIDER}\",\"operation\":\"send_sms\",\"payload\":{{\"to\":\"+14155550100\",\"body\":\"Your parcel is on its way\"}}}}'\n\nThen ask the ledger what happened:\n  curl -sS {url}/v1/commands/<id> -H 'Authorization: Bearer {token}'\n\nLifecycle events appear below. Ctrl-C stops everything.\n"
    ));

    shutdown.cancelled().await;
    say("stopping...");
    fleet.stop().await;
    tail.close().await;
    sandbox.shutdown().await;
    say("stopped.");
    Ok(())
}

/// `listen`, with port 0 replaced by a free port.
fn with_fixed_port(listen: SocketAddr) -> anyhow::Result<SocketAddr> {
    if listen.port() != 0 {
        return Ok(listen);
    }
    let probe = std::net::TcpListener::bind(listen)
        .with_context(|| format!("finding a free port on {}", listen.ip()))?;
    Ok(probe.local_addr()?)
}

/// An address this machine can connect to for `listen` (a wildcard becomes loopback).
pub(crate) fn reachable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}
