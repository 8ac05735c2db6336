//! `switchyard bench`: drives N commands through the whole path (confirmed AMQP publish ->
//! the `switchyard-payment` worker process -> an HTTPS call to the `switchyard-sandbox`
//! process -> the `completed` event consumed here) and prints throughput, end-to-end latency,
//! CPU per 1,000 commands and peak RSS of each process. With `--ceiling`, a bare lapin program
//! does Switchyard's broker traffic on the same broker before and after (see [`ceiling`]), and
//! Switchyard's figures are given as ratios to it. With `--waiting`, every command is accepted
//! (202) instead and completed later by a signed webhook through the ingress and the ledger's
//! resolver: the run shows the worker's memory with all commands waiting at once.
//!
//! The method and the latest figures: docs/performance.md.

mod ceiling;
mod procstat;
mod timings;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use switchyard_amqp::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};
use switchyard_amqp::lapin::types::FieldTable;
use switchyard_amqp::messages::{command_properties, publish_command};
use switchyard_amqp::topology::{
    ATTEMPTS_EXCHANGE, EVENTS_EXCHANGE, LEDGER_EVENTS_QUEUE, work_queue,
};
use switchyard_amqp::{
    Broker, BrokerSettings, ConsumeSettings, Headers, Publisher, Topology, consume,
};
use switchyard_core::{Command, Event, Name, Status};
use switchyard_webhooks::StandardWebhooks;
use tokio::process::{Child, Command as Process};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::ports::free_port;
use crate::say;
use crate::up::{BROKER_HELP, amqp_url, broker_reachable};
use ceiling::{CeilingOptions, CeilingRun, Message, Pattern};
use procstat::Used;
pub use procstat::{peak_rss_kib, rss_kib};

/// Options of `switchyard bench`.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Commands to send.
    pub commands: usize,
    /// Approximate size of each command's payload.
    pub payload_bytes: usize,
    /// Publishes awaiting their confirm at once.
    pub window: usize,
    /// Worker concurrency towards the sandbox (its prefetch is the worker's default, twice it).
    pub concurrency: usize,
    /// Commands per second to offer (0: as fast as confirms allow). Below saturation the
    /// latency figures measure the path, not the backlog.
    pub rate: u32,
    /// Run the `switchyard-ledger` process beside the worker, consuming every event and
    /// attempt record.
    pub with_ledger: bool,
    /// Long-running mode: the provider accepts every command and calls back this long after.
    /// Runs the ingress (webhooks) and the ledger (resolver) too.
    pub waiting: Option<Duration>,
    /// Also measure the ceiling: Switchyard's broker traffic without Switchyard, before and
    /// after Switchyard's run.
    pub ceiling: bool,
    /// The sandbox answers every request this long after it came.
    pub provider_latency: Option<Duration>,
    /// Print the figures as one JSON object on stdout (human lines go to stderr).
    pub json: bool,
    /// The database of the ledger and the workers' journal: a `postgres://` server gets a
    /// fresh database for the run, dropped after it. None: SQLite in a temporary directory.
    pub database_url: Option<String>,
    /// After the full-speed run, run again at half its throughput: the latency a fleet
    /// sized at twice its load sees.
    pub half_rate: bool,
}

/// Whether human lines go to stderr, leaving stdout to the JSON figures.
static HUMAN_TO_STDERR: AtomicBool = AtomicBool::new(false);

/// Writes a human line: stdout, or stderr when stdout carries `--json`'s figures.
pub(crate) fn note(line: impl AsRef<str>) {
    use std::io::Write;
    if HUMAN_TO_STDERR.load(Ordering::Relaxed) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{}", line.as_ref());
    } else {
        say(line);
    }
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} not found next to {}: build every binary first (`cargo build --release --bins`)",
            name,
            exe.display()
        );
    }
    Ok(path)
}

async fn wait_for_file(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn payload(bytes: usize) -> serde_json::Map<String, serde_json::Value> {
    let base = serde_json::json!({
        "amount": 1999, "currency": "usd", "payment_method": "pm_card_visa",
        "customer": "cus_bench",
    });
    let mut map = match base {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    let used = serde_json::to_vec(&map)
        .map(|v| v.len())
        .unwrap_or_default();
    let pad = bytes.saturating_sub(used + 20).min(1000);
    map.insert("description".into(), "x".repeat(pad).into());
    map
}

struct Children(Vec<(&'static str, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.start_kill();
        }
    }
}

/// The database of a run, and what to undo after it.
#[derive(Debug)]
struct Database {
    url: String,
    /// A database made for this run on a PostgreSQL server: (an admin URL, its name).
    created: Option<(String, String)>,
}

impl Database {
    fn kind(&self) -> &'static str {
        if self.url.starts_with("postgres") {
            "postgres"
        } else {
            "sqlite"
        }
    }
}

/// A fresh database on a given PostgreSQL server, so no earlier run's rows are counted or
/// contended with; SQLite in the run's directory when none is given.
async fn prepare_database(given: Option<&str>, dir: &Path) -> anyhow::Result<Database> {
    match given {
        None => Ok(Database {
            url: format!("sqlite://{}?mode=rwc", dir.join("ledger.db").display()),
            created: None,
        }),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let id = Uuid::new_v4().simple().to_string();
            let name = format!("switchyard_bench_{}", &id[..12]);
            let admin = with_database(url, "postgres")?;
            psql(&admin, &format!("CREATE DATABASE \"{name}\"")).await?;
            Ok(Database {
                url: with_database(url, &name)?,
                created: Some((admin, name)),
            })
        }
        Some(url) => Ok(Database {
            url: url.to_owned(),
            created: None,
        }),
    }
}

/// `url` with its database (the path) replaced by `name`, keeping user, host and query.
fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let (scheme, rest) = url
        .split_once("://")
        .context("the database URL has no scheme")?;
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let query = tail.find('?').map(|i| &tail[i..]).unwrap_or_default();
    Ok(format!("{scheme}://{authority}/{name}{query}"))
}

/// Runs one statement with `psql`, the PostgreSQL client (CREATE and DROP DATABASE cannot
/// run in the ledger's pooled transactions).
async fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    let out = Process::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .context("running psql, the PostgreSQL client, to create or drop the bench's database")?;
    if !out.status.success() {
        bail!(
            "psql: {sql}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs the benchmark and prints its figures.
pub async fn run(opts: BenchOptions) -> anyhow::Result<()> {
    HUMAN_TO_STDERR.store(opts.json, Ordering::Relaxed);
    if opts.waiting.is_some() && (opts.ceiling || opts.half_rate || opts.provider_latency.is_some())
    {
        bail!(
            "--waiting measures memory with commands waiting; it does not combine with \
             --ceiling, --half-rate or --provider-latency"
        );
    }
    let url = amqp_url();
    if !broker_reachable(&url).await {
        bail!("{BROKER_HELP}");
    }
    let dir = tempfile_dir()?;
    let result = match prepare_database(opts.database_url.as_deref(), &dir).await {
        Ok(database) => {
            let r = sitting(&opts, &url, &dir, &database).await;
            if let Some((admin, name)) = &database.created {
                let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                if let Err(e) = psql(admin, &drop).await {
                    note(format!("bench: could not drop the database {name}: {e}"));
                }
            }
            r
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// One Switchyard run's figures.
#[derive(Debug)]
struct Phase {
    rate: u32,
    commands: usize,
    completed: usize,
    failed: usize,
    publish_failures: usize,
    elapsed: f64,
    hist: Histogram<u64>,
    /// Worker RSS by commands waiting: (waiting, KiB, ended so far, at).
    waiting_rss: Vec<(usize, u64, usize, Duration)>,
    /// What each process used, per command.
    used: Used,
    ledger_lag: Option<Result<Duration, String>>,
    /// Means of the worker's own histograms over the phase (`timings`).
    worker_means: BTreeMap<&'static str, f64>,
}

impl Phase {
    fn throughput(&self) -> f64 {
        self.completed as f64 / self.elapsed
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// `a` as a multiple of `b`, to three places; 0 when `b` is 0.
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { round(a / b, 3) } else { 0.0 }
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

fn latency_json(h: &Histogram<u64>) -> serde_json::Value {
    json!({
        "p50": round(ms(h, 0.50), 2),
        "p99": round(ms(h, 0.99), 2),
        "max": round(h.max() as f64 / 1000.0, 2),
    })
}

/// A map of figures as a JSON object, each rounded to three places.
fn figures_json(figures: &BTreeMap<&'static str, f64>) -> serde_json::Value {
    figures
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(round(*v, 3))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Figures by process, `name value` each, for a human line.
fn figures_line(figures: &BTreeMap<&'static str, f64>) -> String {
    figures
        .iter()
        .map(|(k, v)| format!("{k} {v:.3}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn phase_json(p: &Phase) -> serde_json::Value {
    json!({
        "rate": p.rate,
        "commands": p.commands,
        "completed": p.completed,
        "failed": p.failed,
        "publish_failures": p.publish_failures,
        "elapsed_s": round(p.elapsed, 3),
        "throughput_per_s": round(p.throughput(), 1),
        "latency_ms": latency_json(&p.hist),
        "cpu_s_per_1000": figures_json(&p.used.cpu),
        "storage_kib_per_command": figures_json(&p.used.written),
        "worker_means": figures_json(&p.worker_means),
        "ledger_catch_up_s": match &p.ledger_lag {
            Some(Ok(lag)) => json!(round(lag.as_secs_f64(), 3)),
            _ => serde_json::Value::Null,
        },
    })
}

/// What the Switchyard runs of a sitting share.
struct Driver<'a> {
    opts: &'a BenchOptions,
    publisher: Publisher,
    kind: Name,
    provider: Name,
    body: serde_json::Map<String, serde_json::Value>,
    sent: Arc<Mutex<HashMap<Uuid, Instant>>>,
    rx: mpsc::UnboundedReceiver<(Uuid, Status, Instant)>,
    worker_pid: Option<u32>,
    /// The worker's `/metrics`, read before and after each phase.
    worker_metrics: String,
    http: reqwest::Client,
}

impl Driver<'_> {
    fn command(&self) -> Command {
        let kind = self.kind.clone();
        Command {
            id: Uuid::now_v7(),
            kind: kind.clone(),
            provider: self.provider.clone(),
            operation: "charge".parse().unwrap_or(kind),
            payload: self.body.clone(),
            idempotency_key: None,
            // A waiting command's expiry stays scheduled after it completes; a near
            // deadline lets the run's expiries fire (as no-ops) soon after it.
            deadline: self.opts.waiting.and_then(|hold| {
                chrono::Duration::from_std(hold * 2 + Duration::from_secs(120))
                    .ok()
                    .map(|d| Utc::now() + d)
            }),
            metadata: Default::default(),
            created_at: Utc::now(),
        }
    }

    /// Sends `opts.commands` commands at `rate` (0: full speed) and waits for their outcomes.
    async fn drive(&mut self, rate: u32) -> anyhow::Result<Phase> {
        let commands = self.opts.commands;
        let worker_rss = {
            let pid = self.worker_pid;
            move || pid.and_then(rss_kib).unwrap_or(0)
        };
        // Worker memory by number of commands waiting at once: before any, a tenth, all.
        let mut waiting_rss = vec![(0usize, worker_rss(), 0usize, Duration::ZERO)];
        let marks = [commands / 10, commands];
        let mut waiting = 0usize;
        let window = Arc::new(Semaphore::new(self.opts.window.max(1)));
        let totals_before = self.worker_totals().await;
        let started = Instant::now();
        let publishing = {
            let mut batch = Vec::with_capacity(commands);
            for _ in 0..commands {
                batch.push(self.command());
            }
            let (sent, publisher) = (self.sent.clone(), self.publisher.clone());
            tokio::spawn(async move {
                let mut tasks = tokio::task::JoinSet::new();
                let mut pace = (rate > 0).then(|| {
                    let mut i =
                        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
                    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                    i
                });
                for mut command in batch {
                    if let Some(p) = pace.as_mut() {
                        p.tick().await;
                    }
                    let Ok(permit) = window.clone().acquire_owned().await else {
                        break;
                    };
                    command.created_at = Utc::now();
                    if let Ok(mut s) = sent.lock() {
                        s.insert(command.id, Instant::now());
                    }
                    let publisher = publisher.clone();
                    tasks.spawn(async move {
                        let r = publish_command(&publisher, &command, Headers::default()).await;
                        drop(permit);
                        r
                    });
                }
                let mut failures = 0usize;
                while let Some(r) = tasks.join_next().await {
                    if !matches!(r, Ok(Ok(()))) {
                        failures += 1;
                    }
                }
                failures
            })
        };

        let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        let (mut completed, mut failed) = (0usize, 0usize);
        let mut last = started;
        let overall = Instant::now() + Duration::from_secs(900);
        while completed + failed < commands {
            let Ok(Some((id, status, at))) =
                tokio::time::timeout_at(overall.into(), self.rx.recv()).await
            else {
                break;
            };
            if status == Status::Waiting {
                waiting += 1;
                if marks.contains(&waiting) {
                    waiting_rss.push((
                        waiting,
                        worker_rss(),
                        completed + failed,
                        started.elapsed(),
                    ));
                }
                continue;
            }
            let sent_at = self.sent.lock().ok().and_then(|mut s| s.remove(&id));
            let Some(sent_at) = sent_at else { continue };
            match status {
                Status::Completed => completed += 1,
                _ => failed += 1,
            }
            let _ = hist.record(at.duration_since(sent_at).as_micros() as u64);
            last = at;
        }
        let publish_failures = publishing.await.unwrap_or(commands);
        let worker_means = match (totals_before, self.worker_totals().await) {
            (Some(before), Some(after)) => after.means_since(&before),
            _ => BTreeMap::new(),
        };
        // What never came back must not be matched by a later run.
        if let Ok(mut s) = self.sent.lock() {
            s.clear();
        }
        Ok(Phase {
            rate,
            commands,
            completed,
            failed,
            publish_failures,
            elapsed: last.duration_since(started).as_secs_f64().max(1e-9),
            hist,
            waiting_rss,
            used: Used::default(),
            ledger_lag: None,
            worker_means,
        })
    }

    /// The worker's histogram totals now; `None` (with a note) when its `/metrics` cannot
    /// be read, so the phase's other figures still stand.
    async fn worker_totals(&self) -> Option<timings::Totals> {
        match timings::scrape(&self.http, &self.worker_metrics).await {
            Ok(t) => Some(t),
            Err(e) => {
                note(format!("bench: note: no worker timings: {e:#}"));
                None
            }
        }
    }
}

/// Sends one command and keeps what the worker publishes for it (events and attempt
/// records, with their routing keys, properties and bodies): the ceiling repeats exactly
/// that, so a change in the worker's messages changes the ceiling with it.
async fn probe(url: &str, publisher: &Publisher, command: &Command) -> anyhow::Result<Pattern> {
    // A connection of its own: the session's may be closing after a refused passive declare.
    let props = switchyard_amqp::lapin::ConnectionProperties::default();
    let connection = switchyard_amqp::lapin::Connection::connect(url, props).await?;
    let pattern = probe_on(&connection, publisher, command).await;
    let _ = connection.close(200, "done".into()).await;
    pattern
}

async fn probe_on(
    connection: &switchyard_amqp::lapin::Connection,
    publisher: &Publisher,
    command: &Command,
) -> anyhow::Result<Pattern> {
    let ch = connection.create_channel().await?;
    let own = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let queue = ch
        .queue_declare("".into(), own, FieldTable::default())
        .await?;
    let name = queue.name().clone();
    let lane = format!("{}.{}", command.kind, command.provider);
    for (exchange, key) in [
        (EVENTS_EXCHANGE, format!("{lane}.*")),
        (ATTEMPTS_EXCHANGE, lane.clone()),
    ] {
        ch.queue_bind(
            name.clone(),
            exchange.into(),
            key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut consumer = ch
        .basic_consume(name.clone(), "".into(), no_ack, FieldTable::default())
        .await?;
    publish_command(publisher, command, Headers::default()).await?;
    let id = command.id.to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut messages: Vec<Message> = Vec::new();
    loop {
        let d = match tokio::time::timeout_at(deadline, consumer.next()).await {
            Ok(Some(Ok(d))) => d,
            _ => bail!("the probe command's messages did not arrive within 30 s"),
        };
        if !d.data.windows(id.len()).any(|w| w == id.as_bytes()) {
            continue;
        }
        let key = d.routing_key.as_str();
        if d.exchange.as_str() != ATTEMPTS_EXCHANGE
            && (key.ends_with(".failed") || key.ends_with(".retrying"))
        {
            bail!("the probe command was not completed at once: {key}");
        }
        let message = Message::filed(
            d.exchange.to_string(),
            key.to_owned(),
            d.properties.clone(),
            d.data.clone(),
        );
        let terminal = message.terminal;
        messages.push(message);
        if terminal {
            break;
        }
    }
    let _ = ch.queue_delete(name, QueueDeleteOptions::default()).await;
    let _ = ch.close(200, "done".into()).await;
    Ok(Pattern {
        command_routing_key: command.routing_key().to_string(),
        command_properties: command_properties(command, Headers::default()),
        command_body: command.to_bytes(),
        messages: ceiling::in_worker_order(messages),
    })
}

/// The port of an AMQP URL: given, or the scheme's default.
fn amqp_port(url: &str) -> u16 {
    let tls = url.starts_with("amqps:");
    url.split_once("://")
        .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or_default())
        .and_then(|authority| {
            authority
                .rsplit_once('@')
                .map_or(Some(authority), |(_, h)| Some(h))
        })
        .and_then(|host| host.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(if tls { 5671 } else { 5672 })
}

/// `s` quoted as a TOML basic string.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

async fn sitting(
    opts: &BenchOptions,
    url: &str,
    dir: &Path,
    database: &Database,
) -> anyhow::Result<()> {
    let sandbox_port = free_port()?;
    let worker_port = free_port()?;
    let ingress_port = free_port()?;
    let mut children = Children(Vec::new());
    let secret_file = dir.join("webhook-secret");
    let mut sandbox = Process::new(sibling("switchyard-sandbox")?);
    sandbox
        .args([
            "--listen",
            &format!("127.0.0.1:{sandbox_port}"),
            "--cert-dir",
        ])
        .arg(dir.join("sandbox"));
    if let Some(latency) = opts.provider_latency {
        sandbox
            .arg("--latency-ms")
            .arg(latency.as_millis().to_string());
    }
    if let Some(hold) = opts.waiting {
        std::fs::write(&secret_file, StandardWebhooks::generate_secret())?;
        sandbox
            .arg("--operation-time-ms")
            .arg(hold.as_millis().to_string())
            .arg("--webhook-url")
            .arg(format!("http://127.0.0.1:{ingress_port}/v1/webhooks/"))
            .arg("--webhook-secret-file")
            .arg(&secret_file);
    }
    let sandbox = sandbox
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting switchyard-sandbox")?;
    children.0.push(("sandbox", sandbox));
    let ca = dir.join("sandbox").join("ca.pem");
    if !wait_for_file(&ca, Duration::from_secs(20)).await {
        bail!("the sandbox did not start");
    }

    let ledger_port = free_port()?;
    let with_ledger = opts.with_ledger || opts.waiting.is_some();
    let (path, webhooks) = match opts.waiting {
        Some(_) => (
            "async/bench/payment",
            format!("webhook_secret_file = \"{}\"\n", secret_file.display()),
        ),
        None => ("generic/payment", String::new()),
    };
    let config = format!(
        "[ingress]\nlisten = \"127.0.0.1:{ingress_port}\"\ntokens = [\"sy_bench\"]\n\
         [ledger]\nenabled = {}\nlisten = \"127.0.0.1:{ledger_port}\"\ndatabase_url = {}\n\
         [worker]\nlisten = \"127.0.0.1:{worker_port}\"\nconcurrency = {c}\n\
         [outbound]\nallow_loopback = true\n[telemetry]\nlog_filter = \"warn\"\n\
         [[providers]]\nname = \"bench\"\nkind = \"payment\"\ntype = \"http\"\n\
         base_url = \"https://localhost:{sandbox_port}/{path}\"\noperations = [\"charge\"]\n\
         ca_file = \"{}\"\n{webhooks}",
        with_ledger,
        toml_string(&database.url),
        ca.display(),
        c = opts.concurrency,
    );
    let config_path = dir.join("bench.toml");
    std::fs::write(&config_path, config)?;
    // The environment outranks the file: a SWITCHYARD_DATABASE_URL inherited from the shell
    // would otherwise point the ledger and the journal at another database.
    let fleet = |binary: &str| -> anyhow::Result<Process> {
        let mut p = Process::new(sibling(binary)?);
        p.arg("--config")
            .arg(&config_path)
            .env("SWITCHYARD_DATABASE_URL", &database.url)
            .stdout(Stdio::null());
        Ok(p)
    };
    let worker = fleet("switchyard-payment")?
        .spawn()
        .context("starting switchyard-payment")?;
    children.0.push(("worker", worker));
    if opts.waiting.is_some() {
        let ingress = fleet("switchyard-ingress")?
            .spawn()
            .context("starting switchyard-ingress")?;
        children.0.push(("ingress", ingress));
    }
    if with_ledger {
        let ledger = fleet("switchyard-ledger")?
            .spawn()
            .context("starting switchyard-ledger")?;
        children.0.push(("ledger", ledger));
    }
    let broker_pid = procstat::broker_pid(amqp_port(url));
    let mut pids: Vec<(&'static str, u32)> = children
        .0
        .iter()
        .filter_map(|(name, c)| Some((*name, c.id()?)))
        .collect();
    pids.push(("bench", std::process::id()));
    if let Some(pid) = broker_pid {
        pids.push(("broker", pid));
    } else {
        note("bench: note: no local RabbitMQ (beam.smp) process found; no broker CPU or RSS");
    }
    let mut processes = procstat::Processes::new(pids);
    if database.kind() == "postgres" {
        // The journal's and the ledger's statements run in the server's processes: a run's
        // cost includes them when the server is on this machine.
        match procstat::database_pid(&database.url) {
            Some(pid) => processes = processes.with_tree("database", pid),
            None => note(
                "bench: note: the PostgreSQL server is not a local process; its CPU is not counted",
            ),
        }
    }
    let broker_rss = broker_pid.map(procstat::RssSampler::start);

    let kind: Name = "payment".parse()?;
    let provider: Name = "bench".parse()?;
    let tap = format!("switchyard.bench.{}", Uuid::new_v4().simple());
    let tap_binding = tap.clone();
    let broker = Broker::start(
        BrokerSettings {
            url: url.to_owned(),
            heartbeat_secs: 10,
            reconnect_max: Duration::from_secs(2),
            connection_name: "switchyard-bench".into(),
        },
        Topology::new(switchyard_config::RetryConfig::default().tiers, 5)
            .with_provider(&kind, &provider)
            .with_event_tap(tap.clone(), "payment.bench.completed")
            .with_event_tap(tap.clone(), "payment.bench.waiting")
            .with_event_tap(tap.clone(), "payment.bench.failed"),
    )?;
    let session = broker
        .session_within(Duration::from_secs(20))
        .await
        .context("connecting to the broker")?;
    let ch = session.connection.create_channel().await?;
    ch.queue_purge(
        work_queue(&kind, &provider).as_str().into(),
        QueuePurgeOptions::default(),
    )
    .await?;
    // Wait for the worker to consume its queue.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let q = ch
            .queue_declare(
                work_queue(&kind, &provider).as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        if q.consumer_count() > 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the worker did not start consuming within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    if !with_ledger && queue_exists(&session.connection, LEDGER_EVENTS_QUEUE).await {
        note(format!(
            "bench: note: {LEDGER_EVENTS_QUEUE} exists on this broker, so every event is also \
             copied there; the figures include that load"
        ));
    }

    let (tx, rx) = mpsc::unbounded_channel::<(Uuid, Status, Instant)>();
    let stop = CancellationToken::new();
    let tap_consumer = tokio::spawn(consume(
        broker.clone(),
        ConsumeSettings {
            queue: tap_binding,
            prefetch: 1000,
            grace: Duration::from_secs(1),
        },
        stop.clone(),
        move |d| {
            let tx = tx.clone();
            async move {
                let at = Instant::now();
                if let Ok(e) = Event::decode(&d.data) {
                    let _ = tx.send((e.command_id, e.status, at));
                }
                let _ = d.acker.ack(BasicAckOptions::default()).await;
            }
        },
    ));

    let mut driver = Driver {
        opts,
        publisher: Publisher::new(broker.clone(), Duration::from_secs(30)),
        kind: kind.clone(),
        provider: provider.clone(),
        body: payload(opts.payload_bytes),
        sent: Arc::new(Mutex::new(HashMap::with_capacity(opts.commands))),
        rx,
        worker_pid: processes.pid("worker"),
        worker_metrics: format!("http://127.0.0.1:{worker_port}/metrics"),
        http: reqwest::Client::builder().build()?,
    };
    note(format!(
        "bench: {} commands at {}, {} B payloads, window {}, worker concurrency {}, ledger {}{}{}",
        opts.commands,
        if opts.rate == 0 {
            "full speed".to_owned()
        } else {
            format!("{}/s", opts.rate)
        },
        serde_json::to_vec(&driver.body)
            .map(|b| b.len())
            .unwrap_or_default(),
        opts.window,
        opts.concurrency,
        if with_ledger { database.kind() } else { "off" },
        opts.provider_latency
            .map(|l| format!(", provider latency {} ms", l.as_millis()))
            .unwrap_or_default(),
        if opts.ceiling {
            ", with the ceiling before and after"
        } else {
            ""
        },
    ));

    // Everything the ledger has to have recorded: the probe and every run's commands.
    let mut recorded = 0usize;
    let pattern = if opts.ceiling {
        let command = driver.command();
        let pattern = probe(url, &driver.publisher, &command)
            .await
            .context("probing the worker's messages for the ceiling")?;
        recorded += 1;
        note(format!(
            "bench: per command, the worker publishes {} messages: {}",
            pattern.messages.len(),
            pattern
                .messages
                .iter()
                .map(|m| format!("{} ({} B)", m.routing_key, m.body.len()))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Some(pattern)
    } else {
        None
    };
    let ceiling_opts = CeilingOptions {
        commands: opts.commands,
        window: opts.window,
        // The worker's own prefetch for this concurrency (the default of `amqp.prefetch`).
        prefetch: switchyard_config::AmqpConfig::default().work_prefetch(opts.concurrency),
        rate: opts.rate,
        answer_after: opts.provider_latency.unwrap_or_default(),
        ledger_copies: with_ledger,
    };
    let mut ceilings: Vec<(CeilingRun, Used)> = Vec::new();
    let measure_ceiling = |pattern: Pattern, rate: u32| {
        let (processes, mut ceiling_opts) = (processes.clone(), ceiling_opts.clone());
        ceiling_opts.rate = rate;
        async move {
            let before = processes.snapshot();
            let run = ceiling::run(url, &pattern, &ceiling_opts).await?;
            let used = Used::between(&before, &processes.snapshot(), run.completed)
                .only(|name| matches!(name, "broker" | "bench"));
            note(format!(
                "bench: ceiling run {:.0} commands/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
                 CPU s per 1,000 commands: {}; KiB written to storage per command: {}",
                run.completed as f64 / run.elapsed,
                ms(&run.hist, 0.5),
                ms(&run.hist, 0.99),
                run.hist.max() as f64 / 1000.0,
                figures_line(&used.cpu),
                figures_line(&used.written)
            ));
            anyhow::Ok((run, used))
        }
    };

    // Interleaved: ceiling, Switchyard, ceiling. Drift of the machine's load over the sitting
    // shows as a difference between the two ceiling runs, and their mean is what Switchyard
    // is compared with.
    if let Some(p) = &pattern {
        ceilings.push(measure_ceiling(p.clone(), opts.rate).await?);
    }
    let mut phases: Vec<(&'static str, Phase)> = Vec::new();
    let mut half_ceiling = None;
    let run_switchyard = async |driver: &mut Driver<'_>, rate: u32, recorded: &mut usize| {
        let before = processes.snapshot();
        let mut phase = driver.drive(rate).await?;
        *recorded += phase.completed;
        let last = Instant::now();
        if with_ledger {
            phase.ledger_lag = Some(
                ledger_caught_up(&database.url, *recorded, last)
                    .await
                    .map_err(|e| e.to_string()),
            );
        }
        phase.used = Used::between(&before, &processes.snapshot(), phase.commands);
        anyhow::Ok(phase)
    };
    let main = run_switchyard(&mut driver, opts.rate, &mut recorded).await?;
    report_phase("switchyard", &main, opts.waiting.is_some());
    phases.push(("switchyard", main));
    if let Some(p) = &pattern {
        ceilings.push(measure_ceiling(p.clone(), opts.rate).await?);
    }
    if opts.half_rate {
        let peak = phases[0].1.throughput();
        let half = u32::try_from((peak / 2.0).round() as u64)
            .unwrap_or(u32::MAX)
            .max(1);
        note(format!(
            "bench: again at half the measured peak ({peak:.0}/s): {half} commands/s"
        ));
        settle(&processes, "the half-rate run").await;
        let phase = run_switchyard(&mut driver, half, &mut recorded).await?;
        report_phase("half rate", &phase, false);
        phases.push(("half_rate", phase));
        // The bare pattern at the same rate: the latency the broker alone gives there.
        if let Some(p) = &pattern {
            settle(&processes, "the ceiling's half-rate run").await;
            half_ceiling = Some(measure_ceiling(p.clone(), half).await?);
        }
    }

    let main = &phases[0].1;
    if opts.waiting.is_some() {
        for (n, rss, ended, at) in &main.waiting_rss {
            note(format!(
                "bench: worker RSS with {n} commands waiting ({ended} ended so far, at {:.1} s): {:.1} MiB",
                at.as_secs_f64(),
                *rss as f64 / 1024.0
            ));
        }
        note(format!(
            "bench: worker RSS after all completed: {:.1} MiB",
            driver.worker_pid.and_then(rss_kib).unwrap_or(0) as f64 / 1024.0
        ));
        note(
            "bench: note: each command's expiry stays scheduled until its deadline (twice the \
             hold plus 2 min after it was sent) and is then consumed by whichever ledger runs on \
             this vhost; give the bench a vhost of its own to keep them apart from a fleet you \
             use, e.g. SWITCHYARD_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/bench",
        );
    }

    let mut peak_rss = serde_json::Map::new();
    for (name, child) in &children.0 {
        if let Some(kib) = child.id().and_then(peak_rss_kib) {
            note(format!("bench: peak RSS {name}: {} MiB", kib / 1024));
            peak_rss.insert((*name).to_owned(), json!(round(kib as f64 / 1024.0, 1)));
        }
    }
    let own = peak_rss_kib(std::process::id()).unwrap_or(0);
    note(format!(
        "bench: peak RSS switchyard bench (publisher + event consumer{}): {} MiB",
        if opts.ceiling { " + the ceiling" } else { "" },
        own / 1024
    ));
    peak_rss.insert("bench".into(), json!(round(own as f64 / 1024.0, 1)));
    if let Some(sampler) = &broker_rss {
        let kib = sampler.peak_kib();
        note(format!(
            "bench: peak RSS broker (sampled every 250 ms during the sitting): {} MiB",
            kib / 1024
        ));
        peak_rss.insert("broker".into(), json!(round(kib as f64 / 1024.0, 1)));
    }

    let mut doc = json!({
        "options": {
            "commands": opts.commands,
            "payload_bytes": opts.payload_bytes,
            "window": opts.window,
            "concurrency": opts.concurrency,
            "rate": opts.rate,
            "with_ledger": with_ledger,
            "database": if with_ledger { json!(database.kind()) } else { serde_json::Value::Null },
            "provider_latency_ms": opts.provider_latency.map(|l| l.as_millis() as u64),
            "ceiling": opts.ceiling,
            "half_rate": opts.half_rate,
            "waiting_ms": opts.waiting.map(|w| w.as_millis() as u64),
        },
        "switchyard": phase_json(main),
        "peak_rss_mib": peak_rss,
    });
    if let (Some(pattern), false) = (&pattern, ceilings.is_empty()) {
        let mut merged = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        let mut throughput = 0.0;
        for (run, _) in &ceilings {
            merged.add(&run.hist)?;
            throughput += run.completed as f64 / run.elapsed;
        }
        let used = Used::mean(ceilings.iter().map(|(_, used)| used));
        throughput /= ceilings.len() as f64;
        let ratios = json!({
            "throughput": ratio(main.throughput(), throughput),
            "p50": ratio(ms(&main.hist, 0.5), ms(&merged, 0.5)),
            "p99": ratio(ms(&main.hist, 0.99), ms(&merged, 0.99)),
        });
        note(format!(
            "bench: ceiling (bare lapin, same broker, {} messages per command, provider \
             answering in-process{}): {throughput:.0} commands/s, p50 {:.1} ms, p99 {:.1} ms",
            pattern.messages.len() + 1,
            opts.provider_latency
                .map(|l| format!(" after {} ms", l.as_millis()))
                .unwrap_or_else(|| " at once".into()),
            ms(&merged, 0.5),
            ms(&merged, 0.99),
        ));
        note(format!(
            "bench: switchyard / ceiling: throughput {:.2}, p50 latency {:.2}x, p99 latency {:.2}x",
            ratios["throughput"].as_f64().unwrap_or_default(),
            ratios["p50"].as_f64().unwrap_or_default(),
            ratios["p99"].as_f64().unwrap_or_default(),
        ));
        doc["ceiling"] = json!({
            "runs": ceilings.iter().map(|(run, used)| json!({
                "throughput_per_s": round(run.completed as f64 / run.elapsed, 1),
                "elapsed_s": round(run.elapsed, 3),
                "latency_ms": latency_json(&run.hist),
                "cpu_s_per_1000": figures_json(&used.cpu),
                "storage_kib_per_command": figures_json(&used.written),
            })).collect::<Vec<_>>(),
            "messages_per_command": pattern.messages.len() + 1,
            "worker_messages": pattern.messages.iter().map(|m| json!({
                "routing_key": m.routing_key,
                "bytes": m.body.len(),
            })).collect::<Vec<_>>(),
            "throughput_per_s": round(throughput, 1),
            "latency_ms": latency_json(&merged),
            "cpu_s_per_1000": figures_json(&used.cpu),
            "storage_kib_per_command": figures_json(&used.written),
            "ratios": ratios,
        });
    }
    if let Some(latency) = opts.provider_latency {
        let expected = opts.concurrency as f64 / latency.as_secs_f64().max(1e-9);
        let fraction = main.throughput() / expected;
        note(format!(
            "bench: provider latency {} ms at concurrency {}: expected ceiling {expected:.0} \
             commands/s (concurrency / latency); measured {:.0}/s, {:.1}% of it",
            latency.as_millis(),
            opts.concurrency,
            main.throughput(),
            fraction * 100.0
        ));
        doc["provider_latency"] = json!({
            "latency_ms": latency.as_millis() as u64,
            "concurrency": opts.concurrency,
            "expected_ceiling_per_s": round(expected, 1),
            "fraction_of_expected": round(fraction, 3),
        });
    }
    if let Some((_, half)) = phases.get(1) {
        doc["half_rate"] = phase_json(half);
        if let Some((run, used)) = &half_ceiling {
            let slower = |q: f64| ratio(ms(&half.hist, q), ms(&run.hist, q));
            note(format!(
                "bench: half rate: switchyard / ceiling at the same rate: p50 latency {:.2}x, \
                 p99 latency {:.2}x",
                slower(0.5),
                slower(0.99)
            ));
            doc["half_rate"]["ceiling"] = json!({
                "throughput_per_s": round(run.completed as f64 / run.elapsed, 1),
                "latency_ms": latency_json(&run.hist),
                "cpu_s_per_1000": figures_json(&used.cpu),
                "storage_kib_per_command": figures_json(&used.written),
                "ratios": { "p50": slower(0.5), "p99": slower(0.99) },
            });
        }
    }
    if opts.json {
        say(doc.to_string());
    }

    stop.cancel();
    let _ = tap_consumer.await;
    broker.close().await;
    // The tap is ours alone: left bound, it would copy the next run's events. It is deleted
    // over a connection of its own, once nothing of ours could re-declare it.
    delete_queue(url, &tap).await;
    drop(children);
    for (label, p) in &phases {
        if p.completed < p.commands {
            bail!(
                "{label}: {} commands did not complete",
                p.commands - p.completed
            );
        }
    }
    Ok(())
}

/// Prints one Switchyard run's figures.
/// Waits, at most 30 s, until the machine is quiet: the measured processes together under a
/// tenth of a core over half a second, and under 32 MiB left for the kernel to write. A
/// latency run must not start in the aftermath of the one before: after a full-speed ceiling
/// run the broker deletes its queues and the disk drains the run's writes, and a half-rate run
/// started right then had a p99 of 1,225 ms where one started on a quiet machine had 40.
async fn settle(processes: &procstat::Processes, before: &str) {
    const WINDOW: Duration = Duration::from_millis(500);
    const LIMIT: Duration = Duration::from_secs(30);
    let started = Instant::now();
    let mut quiet = false;
    while !quiet && started.elapsed() < LIMIT {
        let cpu = processes.cpu();
        tokio::time::sleep(WINDOW).await;
        let busy: f64 = processes
            .cpu()
            .iter()
            .filter_map(|(name, end)| Some(end - cpu.get(name)?))
            .sum();
        let unwritten = procstat::unwritten_kib().unwrap_or(0);
        quiet = busy < 0.1 * WINDOW.as_secs_f64() && unwritten < 32 * 1024;
    }
    note(format!(
        "bench: {} {:.1} s for a quiet machine before {before}",
        if quiet { "waited" } else { "gave up after" },
        started.elapsed().as_secs_f64()
    ));
}

fn report_phase(label: &str, p: &Phase, waiting: bool) {
    note(format!(
        "bench: {label}: completed {}, failed {}, publish failures {}, missing {}",
        p.completed,
        p.failed,
        p.publish_failures,
        p.commands.saturating_sub(p.completed + p.failed)
    ));
    let offered = if p.rate == 0 {
        String::new()
    } else {
        format!(" (offered {}/s)", p.rate)
    };
    let held = if waiting {
        " (each held by the provider)"
    } else {
        ""
    };
    note(format!(
        "bench: {label}: throughput {:.0} commands/s over {:.2} s{offered}{held}",
        p.throughput(),
        p.elapsed
    ));
    note(format!(
        "bench: {label}: end-to-end latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(&p.hist, 0.50),
        ms(&p.hist, 0.99),
        p.hist.max() as f64 / 1000.0
    ));
    match &p.ledger_lag {
        Some(Ok(lag)) => note(format!(
            "bench: {label}: the ledger had recorded everything {:.2} s after the last completed event",
            lag.as_secs_f64()
        )),
        Some(Err(e)) => note(format!("bench: {label}: the ledger did not catch up: {e}")),
        None => {}
    }
    note(format!(
        "bench: {label}: CPU s per 1,000 commands: {}",
        figures_line(&p.used.cpu)
    ));
    if !p.used.written.is_empty() {
        note(format!(
            "bench: {label}: KiB written to storage per command: {}",
            figures_line(&p.used.written)
        ));
    }
    if !p.worker_means.is_empty() {
        note(format!(
            "bench: {label}: worker means: {}",
            timings::line(&p.worker_means)
        ));
    }
}

async fn delete_queue(url: &str, queue: &str) {
    let props = switchyard_amqp::lapin::ConnectionProperties::default();
    match switchyard_amqp::lapin::Connection::connect(url, props).await {
        Ok(conn) => {
            if let Ok(ch) = conn.create_channel().await
                && let Err(e) = ch
                    .queue_delete(queue.into(), QueueDeleteOptions::default())
                    .await
            {
                note(format!("bench: could not delete {queue}: {e}"));
            }
            let _ = conn.close(200, "done".into()).await;
        }
        Err(e) => say(format!("bench: could not delete {queue}: {e}")),
    }
}

/// Whether `queue` exists, asked on a channel of its own (a failed passive declare closes it).
async fn queue_exists(connection: &switchyard_amqp::lapin::Connection, queue: &str) -> bool {
    let Ok(ch) = connection.create_channel().await else {
        return false;
    };
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let found = ch
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .is_ok();
    let _ = ch.close(200, "done".into()).await;
    found
}

/// Waits until the ledger's database holds `commands` commands completed and an attempt for
/// each, and returns how long after `last` that was.
async fn ledger_caught_up(url: &str, commands: usize, last: Instant) -> anyhow::Result<Duration> {
    let store = switchyard_ledger::Store::connect(url).await?;
    let want = u64::try_from(commands)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (completed, attempts) = store.counts(Status::Completed).await?;
        if completed >= want && attempts >= want {
            store.close().await;
            return Ok(Instant::now().saturating_duration_since(last));
        }
        if Instant::now() > deadline {
            store.close().await;
            bail!("{completed} of {want} completions recorded after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("switchyard-bench-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `switchyard ledger bench`: the store's ingest rate on each database.
pub async fn ledger(events: usize, batch: usize, urls: Vec<String>) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let urls = if urls.is_empty() {
        vec![format!(
            "sqlite://{}?mode=rwc",
            dir.join("bench.db").display()
        )]
    } else {
        urls
    };
    for url in urls {
        let store = switchyard_ledger::Store::connect(&url).await?;
        let rate = switchyard_ledger::ingest_bench(&store, events, batch).await?;
        store.close().await;
        let scheme = url.split(':').next().unwrap_or_default().to_owned();
        say(format!(
            "ledger bench: {scheme}: {rate:.0} events/s ({events} events, {batch} per transaction)"
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
