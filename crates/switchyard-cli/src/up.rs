//! `switchyard up`: the whole fleet locally, against sandbox providers, ready for a curl.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
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
use crate::local_broker::{
    BrokerUrl, Refusal, UP_VHOST, delete_vhost, ensure_vhost, refusal_help, try_login,
};
use crate::say;

/// Options of `switchyard up`. An address left out takes its default, or a free port when
/// the default is taken; an address given that is taken is an error naming its option.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Where the ingress listens (default 127.0.0.1:8080).
    pub listen: Option<SocketAddr>,
    /// Where the ledger's own API listens (default 127.0.0.1:8081).
    pub ledger_listen: Option<SocketAddr>,
    /// The first worker's ops endpoint; the others take the next ports (default 127.0.0.1:9101).
    pub worker_listen: Option<SocketAddr>,
    /// The vhost to run on (default: the one SWITCHYARD_AMQP_URL names, else `switchyard-up`).
    pub vhost: Option<String>,
    /// Where the generated config and the sandbox CA are written.
    pub state_dir: PathBuf,
}

const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
const DEFAULT_LEDGER_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8081);
const DEFAULT_WORKER_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9101);

/// The file in the state directory that names the running `up` process (for `down`).
pub const PID_FILE: &str = "up.pid";

/// The file in the state directory that holds the broker URL `up` ran on (for `down --reset`).
const BROKER_FILE: &str = "amqp-url";

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
    let given = BrokerUrl::parse(&amqp_url())?;
    if !broker_reachable(given.as_str()).await {
        bail!("{BROKER_HELP}");
    }
    // Its own vhost unless the URL or --vhost names one: what a session leaves behind (dead
    // letters, unroutable commands, scheduled expiries) can then be deleted whole.
    let vhost = match (&opts.vhost, given.vhost()) {
        (Some(v), _) => v.clone(),
        (None, "/") => UP_VHOST.to_owned(),
        (None, named) => named.to_owned(),
    };
    let url = given.on_vhost(&vhost);
    match try_login(&url).await {
        Ok(()) => {}
        // A vhost the URL names is the user's: a missing one is more likely a typo than a wish.
        Err(Refusal::NoVhost) if vhost != "/" && (opts.vhost.is_some() || vhost == UP_VHOST) => {
            let how = ensure_vhost(&given, &vhost).await?;
            say(format!("created the vhost '{vhost}' (through {how})"));
            if let Err(refusal) = try_login(&url).await {
                bail!("{}", refusal_help(&given, &vhost, &refusal));
            }
        }
        Err(refusal) => bail!("{}", refusal_help(&given, &vhost, &refusal)),
    }

    std::fs::create_dir_all(&opts.state_dir)
        .with_context(|| format!("creating {}", opts.state_dir.display()))?;
    // Absolute paths in the generated config: `--config` then works from any directory.
    let state_dir = std::fs::canonicalize(&opts.state_dir)
        .with_context(|| format!("resolving {}", opts.state_dir.display()))?;
    let mut notes = Vec::new();
    // The sandbox must know where to send callbacks before the ingress binds.
    let listen = settle(
        opts.listen,
        DEFAULT_LISTEN,
        "the ingress",
        "--listen",
        &mut notes,
    )?;
    let ledger_listen = settle(
        opts.ledger_listen,
        DEFAULT_LEDGER_LISTEN,
        "the ledger",
        "--ledger-listen",
        &mut notes,
    )?;
    let webhook_secret = StandardWebhooks::generate_secret();
    let webhook_secret_file = state_dir.join("webhook-secret");
    write_private(&webhook_secret_file, &webhook_secret)?;
    let sandbox = start_sandbox(
        &state_dir,
        Some(WebhookTarget {
            base_url: format!("http://{}/v1/webhooks/", reachable(listen)),
            secret: webhook_secret,
        }),
    )
    .await?;
    let token = format!("sy_dev_{}", Uuid::new_v4().simple());
    // The sandbox's vendor emulators take any credentials shaped like the vendors'.
    let secrets = SandboxSecrets::write(&state_dir, webhook_secret_file, VendorKeys::DEV)?;
    let mut toml = sandbox_config(&sandbox, listen, &token, &secrets);
    toml.push_str(&format!("\n[amqp]\nurl = {}\n", toml_string(&url)));
    // The tail below is what a newcomer watches: warnings only (RUST_LOG wins). lapin logs a
    // lost connection as an error of its own; the broker module already warns about it once.
    toml.push_str("\n[telemetry]\nlog_filter = \"warn,lapin=off\"\n");
    // Kept across runs: a replayed command must get the same provider idempotency key.
    let secret_path = state_dir.join("idempotency-secret");
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
        "\n[ledger]\nlisten = \"{ledger_listen}\"\ndatabase_url = {}\n",
        toml_string(&format!(
            "sqlite://{}?mode=rwc",
            state_dir.join("ledger.db").display()
        ))
    ));
    let config_path = state_dir.join("switchyard.toml");
    std::fs::write(&config_path, &toml)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let mut config = Config::from_toml_str(&toml)?;
    // SWITCHYARD_AMQP_URL would win over the file; up's vhost must win over it.
    config.amqp.url = switchyard_core::Secret::new(url.clone());
    write_private(&state_dir.join(BROKER_FILE), &url)?;
    let kinds = switchyard_ingress::kinds(&config)?.len();
    let workers_from = settle_range(opts.worker_listen, kinds, &mut notes)?;
    let _tracing = switchyard_telemetry::init(&config.telemetry, "switchyard-up");

    let shutdown = switchyard_telemetry::shutdown_on_signals();
    let fleet =
        Fleet::start_with_worker_ports(&config, Some(workers_from), shutdown.clone()).await?;
    if !fleet.wait_ready(Duration::from_secs(30)).await {
        fleet.stop().await;
        bail!("the fleet did not connect to the broker within 30 s\n{BROKER_HELP}");
    }
    let pid_file = state_dir.join(PID_FILE);
    std::fs::write(&pid_file, std::process::id().to_string())
        .with_context(|| format!("writing {}", pid_file.display()))?;
    let tail = crate::tail::start(&config, Default::default(), false, shutdown.clone())?;
    // Bound before the curls are printed: a command sent at once shows all its events.
    if !tail.wait_ready(Duration::from_secs(30)).await {
        say("note: the event tail could not connect; events will not be shown here");
    }

    let base = format!("http://{}", fleet.ingress.addr);
    let workers: Vec<String> = fleet
        .workers
        .iter()
        .map(|w| w.ops_addr.to_string())
        .collect();
    for note in &notes {
        say(format!("note: {note}"));
    }
    say(format!(
        "\nSwitchyard is up.\n  ingress   {base}  (also serves the ledger: GET {base}/v1/commands/{{id}})\n  token     {token}\n  broker    vhost '{vhost}' (`switchyard down --reset` deletes it and {})\n  sandbox   {} (CA {})\n  config    {}\n  metrics   {base}/metrics; ledger: {}; workers: {}\n",
        state_dir.display(),
        sandbox.base_url(),
        sandbox.ca_pem_path().display(),
        config_path.display(),
        fleet
            .ledger
            .as_ref()
            .map_or_else(|| "off".to_owned(), |l| l.addr.to_string()),
        workers.join(", ")
    ));
    say(format!(
        "For the CLI, the client libraries and the README's commands, in another terminal:\n  export SWITCHYARD_URL={base} SWITCHYARD_TOKEN={token} SWITCHYARD_CONFIG={}\n  export SWITCHYARD_AMQP_URL='{url}' TOKEN={token} SANDBOX={}\n",
        shell_word(&config_path.display().to_string()),
        sandbox.base_url()
    ));
    say(format!(
        "Try it:\n  curl -sS {base}/v1/commands \\\n    -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n    -d '{{\"kind\":\"payment\",\"provider\":\"sandbox\",\"operation\":\"charge\",\"payload\":{{\"amount\":1999,\"currency\":\"usd\",\"payment_method\":\"pm_card_visa\"}}}}'\n\nA long-running one: `waiting`, then `completed` by a signed webhook about 2 s later\n(provider {POLLED_PROVIDER} does the same by polling):\n  curl -sS {base}/v1/commands \\\n    -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n    -d '{{\"kind\":\"notification\",\"provider\":\"{ASYNC_PROVIDER}\",\"operation\":\"send_sms\",\"payload\":{{\"to\":\"+14155550100\",\"body\":\"Your parcel is on its way\"}}}}'\n\nThen ask the ledger what happened:\n  curl -sS {base}/v1/commands/<id> -H 'Authorization: Bearer {token}'\n\nLifecycle events appear below. Ctrl-C stops everything.\n"
    ));

    shutdown.cancelled().await;
    say("stopping...");
    let overran = fleet.stop().await;
    tail.close().await;
    sandbox.shutdown().await;
    let _ = std::fs::remove_file(&pid_file);
    if overran.is_empty() {
        say(format!(
            "stopped. Dead letters, unroutable commands and scheduled expiries stay on vhost \
             '{vhost}'; `switchyard down --reset --state-dir {}` deletes them with the local state.",
            shell_word(&state_dir.display().to_string())
        ));
    } else {
        say(format!("stopped, leaving behind: {}", overran.join(", ")));
    }
    Ok(())
}

/// Stops a running `up` (SIGTERM to the process its pid file names) and, with `reset`,
/// deletes its vhost and its state directory.
pub async fn down(state_dir: &Path, reset: bool) -> anyhow::Result<()> {
    let pid_file = state_dir.join(PID_FILE);
    match std::fs::read_to_string(&pid_file) {
        Ok(pid) => {
            let pid = pid.trim();
            if signal(pid, "-TERM") {
                say(format!("stopping switchyard up (pid {pid})..."));
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                while signal(pid, "-0") {
                    if std::time::Instant::now() > deadline {
                        bail!("switchyard up (pid {pid}) did not stop within 60 s");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                say("stopped.");
            }
            let _ = std::fs::remove_file(&pid_file);
        }
        Err(_) => say(format!(
            "no switchyard up is running from {}",
            state_dir.display()
        )),
    }
    if !reset {
        return Ok(());
    }
    let broker_file = state_dir.join(BROKER_FILE);
    if let Ok(url) = std::fs::read_to_string(&broker_file) {
        let url = BrokerUrl::parse(url.trim())?;
        let vhost = url.vhost().to_owned();
        delete_vhost(&url, &vhost).await?;
        say(format!("deleted the vhost '{vhost}' and everything in it"));
    }
    if state_dir.exists() {
        std::fs::remove_dir_all(state_dir)
            .with_context(|| format!("removing {}", state_dir.display()))?;
        say(format!("removed {}", state_dir.display()));
    }
    Ok(())
}

/// Sends `sig` (`-TERM`, or `-0` to ask whether it lives) to `pid`.
fn signal(pid: &str, sig: &str) -> bool {
    std::process::Command::new("kill")
        .args([sig, pid])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// `s`, quoted for a POSIX shell when it needs it.
fn shell_word(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@%=,".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Whether something can listen on `addr` right now.
fn free(addr: SocketAddr) -> bool {
    addr.port() == 0 || std::net::TcpListener::bind(addr).is_ok()
}

/// The address for one listener: the one given (taken is an error naming `flag`), else the
/// default, else (the default taken) a free port, noted.
fn settle(
    given: Option<SocketAddr>,
    default: SocketAddr,
    what: &str,
    flag: &str,
    notes: &mut Vec<String>,
) -> anyhow::Result<SocketAddr> {
    match given {
        Some(addr) if free(addr) => with_fixed_port(addr),
        Some(addr) => {
            bail!("cannot listen on {addr} for {what}: it is in use. Pass another {flag}")
        }
        None if free(default) => Ok(default),
        None => {
            let chosen = with_fixed_port(SocketAddr::new(default.ip(), 0))?;
            notes.push(format!(
                "{default} is taken: {what} listens on {chosen} instead ({flag} sets it)"
            ));
            Ok(chosen)
        }
    }
}

/// Where the workers' ops endpoints start: `count` consecutive ports from the one given (any
/// taken is an error), else from the default, else free ports.
fn settle_range(
    given: Option<SocketAddr>,
    count: usize,
    notes: &mut Vec<String>,
) -> anyhow::Result<SocketAddr> {
    let all_free = |base: SocketAddr| {
        (0..count).all(|i| {
            u16::try_from(usize::from(base.port()) + i)
                .is_ok_and(|p| free(SocketAddr::new(base.ip(), p)))
        })
    };
    match given {
        Some(base) if base.port() == 0 || all_free(base) => Ok(base),
        Some(base) => bail!(
            "cannot listen on {base} and the {} ports after it for the workers: one is in use. \
             Pass another --worker-listen (port 0 picks free ones)",
            count.saturating_sub(1)
        ),
        None if all_free(DEFAULT_WORKER_LISTEN) => Ok(DEFAULT_WORKER_LISTEN),
        None => {
            notes.push(format!(
                "{DEFAULT_WORKER_LISTEN} or a port after it is taken: the workers' ops endpoints \
                 listen on free ports (--worker-listen sets them)"
            ));
            Ok(SocketAddr::new(DEFAULT_WORKER_LISTEN.ip(), 0))
        }
    }
}

/// `listen`, with port 0 replaced by a free port.
fn with_fixed_port(listen: SocketAddr) -> anyhow::Result<SocketAddr> {
    if listen.port() != 0 {
        return Ok(listen);
    }
    let port = crate::ports::free_port_on(listen.ip())
        .with_context(|| format!("finding a free port on {}", listen.ip()))?;
    Ok(SocketAddr::new(listen.ip(), port))
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
