//! `switchyard bench`: drives N commands through the whole path (confirmed AMQP publish ->
//! the `switchyard-payment` worker process -> an HTTPS call to the `switchyard-sandbox`
//! process -> the `completed` event consumed here) and prints throughput, end-to-end latency
//! and each process's peak RSS. With `--waiting`, every command is accepted (202) instead and
//! completed later by a signed webhook through the ingress and the ledger's resolver: the run
//! shows the worker's memory with all commands waiting at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use hdrhistogram::Histogram;
use switchyard_amqp::lapin::options::{
    BasicAckOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use switchyard_amqp::lapin::types::FieldTable;
use switchyard_amqp::messages::publish_command;
use switchyard_amqp::topology::{LEDGER_EVENTS_QUEUE, work_queue};
use switchyard_amqp::{
    Broker, BrokerSettings, ConsumeSettings, Headers, Publisher, Topology, consume,
};
use switchyard_core::{Command, Event, Name, Status};
use switchyard_webhooks::StandardWebhooks;
use tokio::process::{Child, Command as Process};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::say;
use crate::up::{BROKER_HELP, amqp_url, broker_reachable};

/// Options of `switchyard bench`.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Commands to send.
    pub commands: usize,
    /// Approximate size of each command's payload.
    pub payload_bytes: usize,
    /// Publishes awaiting their confirm at once.
    pub window: usize,
    /// Worker concurrency towards the sandbox (and its prefetch).
    pub concurrency: usize,
    /// Commands per second to offer (0: as fast as confirms allow). Below saturation the
    /// latency figures measure the path, not the backlog.
    pub rate: u32,
    /// Run the `switchyard-ledger` process beside the worker (SQLite, or
    /// SWITCHYARD_DATABASE_URL), consuming every event and attempt record.
    pub with_ledger: bool,
    /// Long-running mode: the provider accepts every command and calls back this long after.
    /// Runs the ingress (webhooks) and the ledger (resolver) too.
    pub waiting: Option<Duration>,
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

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Peak resident set size of a process, from /proc (Linux).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmHWM:")
}

/// Resident set size of a process now, from /proc (Linux).
pub fn rss_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmRSS:")
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
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

/// Runs the benchmark and prints its figures.
pub async fn run(opts: BenchOptions) -> anyhow::Result<()> {
    let url = amqp_url();
    if !broker_reachable(&url).await {
        bail!("{BROKER_HELP}");
    }
    let dir = tempfile_dir()?;
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
    children.0.push(("switchyard-sandbox", sandbox));
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
         [ledger]\nenabled = {}\nlisten = \"127.0.0.1:{ledger_port}\"\ndatabase_url = \"sqlite://{}?mode=rwc\"\n\
         [amqp]\nprefetch = {c}\n[worker]\nlisten = \"127.0.0.1:{worker_port}\"\nconcurrency = {c}\n\
         [outbound]\nallow_loopback = true\n[telemetry]\nlog_filter = \"warn\"\n\
         [[providers]]\nname = \"bench\"\nkind = \"payment\"\ntype = \"http\"\n\
         base_url = \"https://localhost:{sandbox_port}/{path}\"\noperations = [\"charge\"]\n\
         ca_file = \"{}\"\n{webhooks}",
        with_ledger,
        dir.join("ledger.db").display(),
        ca.display(),
        c = opts.concurrency,
    );
    let config_path = dir.join("bench.toml");
    std::fs::write(&config_path, config)?;
    let worker = Process::new(sibling("switchyard-payment")?)
        .arg("--config")
        .arg(&config_path)
        .stdout(Stdio::null())
        .spawn()
        .context("starting switchyard-payment")?;
    children.0.push(("switchyard-payment", worker));
    if opts.waiting.is_some() {
        let ingress = Process::new(sibling("switchyard-ingress")?)
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::null())
            .spawn()
            .context("starting switchyard-ingress")?;
        children.0.push(("switchyard-ingress", ingress));
    }
    if with_ledger {
        let ledger = Process::new(sibling("switchyard-ledger")?)
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::null())
            .spawn()
            .context("starting switchyard-ledger")?;
        children.0.push(("switchyard-ledger", ledger));
    }

    let kind: Name = "payment".parse()?;
    let provider: Name = "bench".parse()?;
    let tap = format!("switchyard.bench.{}", Uuid::new_v4().simple());
    let tap_binding = tap.clone();
    let broker = Broker::start(
        BrokerSettings {
            url: url.clone(),
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
        say(format!(
            "bench: note: {LEDGER_EVENTS_QUEUE} exists on this broker, so every event is also \
             copied there; the figures include that load"
        ));
    }

    let sent: Arc<Mutex<HashMap<Uuid, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(opts.commands)));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Uuid, Status, Instant)>();
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

    let publisher = Publisher::new(broker.clone(), Duration::from_secs(30));
    let window = Arc::new(Semaphore::new(opts.window.max(1)));
    let body = payload(opts.payload_bytes);
    say(format!(
        "bench: {} commands at {}, {} B payloads, window {}, worker concurrency {}, ledger {}",
        opts.commands,
        if opts.rate == 0 {
            "full speed".to_owned()
        } else {
            format!("{}/s", opts.rate)
        },
        serde_json::to_vec(&body)
            .map(|b| b.len())
            .unwrap_or_default(),
        opts.window,
        opts.concurrency,
        if with_ledger { "running" } else { "off" }
    ));
    let worker_pid = children
        .0
        .iter()
        .find(|(name, _)| *name == "switchyard-payment")
        .and_then(|(_, c)| c.id());
    let worker_rss = || worker_pid.and_then(rss_kib).unwrap_or(0);
    // Worker memory by number of commands waiting at once: before any, a tenth, all.
    let mut waiting_rss = vec![(0usize, worker_rss(), 0usize, Duration::ZERO)];
    let marks = [opts.commands / 10, opts.commands];
    let mut waiting = 0usize;
    let started = Instant::now();
    let publishing = {
        let sent = sent.clone();
        let publisher = publisher.clone();
        let (kind, provider) = (kind.clone(), provider.clone());
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            let mut pace = (opts.rate > 0).then(|| {
                let mut i =
                    tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(opts.rate)));
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                i
            });
            for _ in 0..opts.commands {
                if let Some(p) = pace.as_mut() {
                    p.tick().await;
                }
                let Ok(permit) = window.clone().acquire_owned().await else {
                    break;
                };
                let command = Command {
                    id: Uuid::now_v7(),
                    kind: kind.clone(),
                    provider: provider.clone(),
                    operation: "charge".parse().unwrap_or_else(|_| kind.clone()),
                    payload: body.clone(),
                    idempotency_key: None,
                    // A waiting command's expiry stays scheduled after it completes; a near
                    // deadline lets the run's expiries fire (as no-ops) soon after it.
                    deadline: opts.waiting.and_then(|hold| {
                        chrono::Duration::from_std(hold * 2 + Duration::from_secs(120))
                            .ok()
                            .map(|d| Utc::now() + d)
                    }),
                    metadata: Default::default(),
                    created_at: Utc::now(),
                };
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
    while completed + failed < opts.commands {
        let Ok(Some((id, status, at))) = tokio::time::timeout_at(overall.into(), rx.recv()).await
        else {
            break;
        };
        if status == Status::Waiting {
            waiting += 1;
            if marks.contains(&waiting) {
                waiting_rss.push((waiting, worker_rss(), completed + failed, started.elapsed()));
            }
            continue;
        }
        let sent_at = sent.lock().ok().and_then(|mut s| s.remove(&id));
        let Some(sent_at) = sent_at else { continue };
        match status {
            Status::Completed => completed += 1,
            _ => failed += 1,
        }
        let _ = hist.record(at.duration_since(sent_at).as_micros() as u64);
        last = at;
    }
    let publish_failures = publishing.await.unwrap_or(opts.commands);
    let elapsed = last.duration_since(started).as_secs_f64().max(1e-9);
    stop.cancel();
    let _ = tap_consumer.await;
    let ledger_lag = if with_ledger {
        Some(ledger_caught_up(&dir.join("ledger.db"), opts.commands, last).await)
    } else {
        None
    };

    say(format!(
        "bench: completed {completed}, failed {failed}, publish failures {publish_failures}, missing {}",
        opts.commands.saturating_sub(completed + failed)
    ));
    let held = opts
        .waiting
        .map(|h| format!(" (each held {h:?} by the provider)"))
        .unwrap_or_default();
    say(format!(
        "bench: throughput {:.0} commands/s over {elapsed:.2} s{held}",
        completed as f64 / elapsed
    ));
    say(format!(
        "bench: end-to-end latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        hist.value_at_quantile(0.50) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0
    ));
    if opts.waiting.is_some() {
        for (n, rss, ended, at) in &waiting_rss {
            say(format!(
                "bench: worker RSS with {n} commands waiting ({ended} ended so far, at {:.1} s): {:.1} MiB",
                at.as_secs_f64(),
                *rss as f64 / 1024.0
            ));
        }
        say(format!(
            "bench: worker RSS after all completed: {:.1} MiB",
            worker_rss() as f64 / 1024.0
        ));
        say(
            "bench: note: each command's expiry stays scheduled until its deadline (twice the \
             hold plus 2 min after it was sent) and is then consumed by whichever ledger runs on \
             this vhost; give the bench a vhost of its own to keep them apart from a fleet you \
             use, e.g. SWITCHYARD_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/bench",
        );
    }
    match ledger_lag {
        Some(Ok(lag)) => say(format!(
            "bench: the ledger had recorded everything {:.2} s after the last completed event",
            lag.as_secs_f64()
        )),
        Some(Err(e)) => say(format!("bench: the ledger did not catch up: {e}")),
        None => {}
    }
    for (name, child) in &children.0 {
        if let Some(pid) = child.id() {
            say(format!(
                "bench: peak RSS {name}: {} MiB",
                peak_rss_kib(pid).unwrap_or(0) / 1024
            ));
        }
    }
    say(format!(
        "bench: peak RSS switchyard bench (publisher + event consumer): {} MiB",
        peak_rss_kib(std::process::id()).unwrap_or(0) / 1024
    ));
    broker.close().await;
    // The tap is ours alone: left bound, it would copy the next run's events. It is deleted
    // over a connection of its own, once nothing of ours could re-declare it.
    delete_queue(&amqp_url(), &tap).await;
    drop(children);
    let _ = std::fs::remove_dir_all(&dir);
    if completed < opts.commands {
        bail!("{} commands did not complete", opts.commands - completed);
    }
    Ok(())
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
                say(format!("bench: could not delete {queue}: {e}"));
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

/// Waits until the ledger's database holds every command completed and an attempt for each,
/// and returns how long after `last` that was.
async fn ledger_caught_up(db: &Path, commands: usize, last: Instant) -> anyhow::Result<Duration> {
    let store = switchyard_ledger::Store::connect(&format!("sqlite://{}", db.display())).await?;
    let want = u64::try_from(commands)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (completed, attempts) = store.counts(Status::Completed).await?;
        if completed >= want && attempts >= want {
            store.close().await;
            return Ok(Instant::now().saturating_duration_since(last));
        }
        if Instant::now() > deadline {
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
