//! A fleet on a three-node RabbitMQ cluster (`./dev cluster up`): the ingress, two payment
//! workers and the ledger, each given the three nodes' addresses, while commands flow at a
//! steady pace and the node that leads the work queue is killed (`kill -9` of its Erlang VM)
//! and started again. The checker demands, for every accepted command: a terminal event
//! (lost = 0), at most one provider effect (duplicated effects = 0) and at most one terminal
//! event per run; and every process back to its throughput within 10 s of the node's return.
//!
//! `./dev test` starts the cluster and runs a short version (SWITCHYARD_CLUSTER_COMMANDS,
//! default 500); `./dev cluster test` runs 5,000 and prints the figures. Without the cluster
//! the test fails, naming the command that starts it: it never skips.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_amqp::lapin::options::{BasicAckOptions, QueueBindOptions, QueueDeclareOptions};
use switchyard_amqp::lapin::types::{AMQPValue, FieldTable};
use switchyard_amqp::topology::{LEDGER_ATTEMPTS_QUEUE, LEDGER_EVENTS_QUEUE};
use switchyard_amqp::{Broker, BrokerSettings, ConsumeSettings, Topology, consume};
use switchyard_core::{Event, Status};
use switchyard_e2e::binary;
use switchyard_testing::{TestFleet, TestFleetOptions, TestVhost, free_port};
use tokio::process::{Child, Command as Process};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The cluster's nodes: name, AMQP port, management port (as `./dev cluster up` makes them).
const NODES: [(&str, u16, u16); 3] = [
    ("sy1@localhost", 5681, 15681),
    ("sy2@localhost", 5682, 15682),
    ("sy3@localhost", 5683, 15683),
];

const WORK_QUEUE: &str = "switchyard.work.payment.sandbox";

/// Seconds the commands are spread over; the kill comes at `KILL_AT`.
const PACE_SECS: f64 = 90.0;
const KILL_AT: Duration = Duration::from_secs(20);
/// The throughput windows: before the kill, and after the node's return.
const WINDOW: Duration = Duration::from_secs(10);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

const HOW_TO_START: &str = "start the three-node cluster with `./dev cluster up` \
    (`./dev test` and `./dev cluster test` start it themselves)";

/// Runs `./dev cluster <args>` (the same code that made the cluster kills and starts nodes).
async fn dev_cluster(args: &[&str]) {
    let out = Process::new(repo().join("dev"))
        .arg("cluster")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "./dev cluster {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The management API of any node that answers (the killed one does not).
async fn management_get(http: &reqwest::Client, path: &str) -> Option<serde_json::Value> {
    for (_, _, port) in NODES {
        let r = http
            .get(format!("http://127.0.0.1:{port}{path}"))
            .basic_auth("guest", Some("guest"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if let Ok(r) = r
            && r.status().is_success()
            && let Ok(v) = r.json().await
        {
            return Some(v);
        }
    }
    None
}

/// The running nodes of the cluster, as its management API tells them.
async fn running_nodes(http: &reqwest::Client) -> Vec<String> {
    let Some(nodes) = management_get(http, "/api/nodes").await else {
        return Vec::new();
    };
    let mut names: Vec<String> = nodes
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["running"].as_bool() == Some(true))
        .filter_map(|n| n["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// The fleet's broker connections, as `node: names` (the test's own are left out).
async fn connections_by_node(http: &reqwest::Client, vhost: &str) -> BTreeMap<String, Vec<String>> {
    let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let listed = management_get(http, &format!("/api/vhosts/{vhost}/connections")).await;
    for c in listed
        .as_ref()
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        let name = c["client_properties"]["connection_name"]
            .as_str()
            .unwrap_or("?")
            .to_owned();
        if name.contains("test") {
            continue;
        }
        let node = c["node"].as_str().unwrap_or("?").to_owned();
        by_node.entry(node).or_default().push(name);
    }
    for names in by_node.values_mut() {
        names.sort();
    }
    by_node
}

/// One cluster test at a time on this machine: it kills nodes.
fn lock_the_cluster() -> std::fs::File {
    let f = std::fs::File::create("/tmp/sy-cluster.lock").unwrap();
    let deadline = Instant::now() + Duration::from_secs(1_200);
    loop {
        match f.try_lock() {
            Ok(()) => return f,
            Err(std::fs::TryLockError::WouldBlock) => {
                assert!(
                    Instant::now() < deadline,
                    "another cluster test held /tmp/sy-cluster.lock for 20 minutes"
                );
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(std::fs::TryLockError::Error(e)) => panic!("locking /tmp/sy-cluster.lock: {e}"),
        }
    }
}

/// Runs one step within `secs`, or fails naming it.
async fn step<T>(name: &str, secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("{name} did not finish within {secs} s"))
}

/// A fleet process the test started, with the counter that tells its throughput.
struct Proc {
    name: String,
    child: Child,
    metrics: String,
    /// The series whose sum counts this process's work.
    counter: &'static str,
    only: &'static str,
    /// Its log (stderr).
    log: PathBuf,
}

/// Starts a fleet binary whose log (connections, consumers, warnings) goes to `log`, for the
/// report of a process that was slow to recover.
fn spawn(name: &str, config: &Path, log: &Path, env: &[(&str, String)]) -> Child {
    let file = std::fs::File::create(log).unwrap();
    let mut cmd = Process::new(binary(name));
    cmd.arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn,switchyard=info")
        .env_remove("SWITCHYARD_AMQP_URL")
        .stdout(Stdio::null())
        .stderr(file)
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// The sum of the samples of `metric` whose labels contain `only`.
fn counter(text: &str, metric: &str, only: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| l.contains(only))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One process's counter over time: (time since the start, value).
type Series = Vec<(Duration, f64)>;

/// One process's failed scrapes: (time since the start, why).
type Misses = Vec<(Duration, String)>;

/// Every event of the test's own quorum-queue subscriber, by command, with arrival times.
#[derive(Default)]
struct Log {
    events: HashMap<Uuid, Vec<Event>>,
    seen: HashSet<Uuid>,
    completions: Vec<Instant>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_on_three_nodes_survives_the_loss_of_one() {
    assert!(
        std::env::var_os("SWITCHYARD_AMQP_URL").is_none(),
        "unset SWITCHYARD_AMQP_URL before the tests: it would replace the test vhost's addresses"
    );
    let n: usize = std::env::var("SWITCHYARD_CLUSTER_COMMANDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let _lock = lock_the_cluster();
    switchyard_http::install_crypto_provider();
    let http = reqwest::Client::new();
    let want: Vec<String> = NODES.iter().map(|(n, _, _)| (*n).to_owned()).collect();
    let running = running_nodes(&http).await;
    assert_eq!(
        running, want,
        "the three-node RabbitMQ cluster is not up (running: {running:?}): {HOW_TO_START}"
    );

    let hosts: Vec<String> = NODES
        .iter()
        .map(|(_, port, _)| format!("127.0.0.1:{port}"))
        .collect();
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let vhost = step(
        "creating the vhost on the cluster",
        30,
        TestVhost::create_on(&format!("http://127.0.0.1:{}", NODES[0].2), &hosts),
    )
    .await;
    let fleet = step(
        "starting the test fleet",
        120,
        TestFleet::start_with(TestFleetOptions {
            in_process: false,
            timeout_ms: 5_000,
            max_attempts: 8,
            vhost: Some(vhost),
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(
        fleet.config.amqp.broker_urls().len(),
        3,
        "every process is given the three nodes"
    );

    // The test's subscriber: a quorum queue of its own, so it survives the node's loss, on a
    // connection of its own that declares nothing else (the test fleet's tap is a classic
    // queue, which cannot be declared again while its node is down).
    let tap = format!("test.cluster.events.{}", Uuid::new_v4().simple());
    let tap_broker = Broker::start(
        BrokerSettings::from_config(&fleet.config.amqp, "switchyard-cluster-test"),
        Topology::new(
            fleet.config.retry.tiers.clone(),
            fleet.config.amqp.delivery_limit,
        ),
    )
    .unwrap();
    {
        let session = step("the test's connection", 30, tap_broker.session())
            .await
            .unwrap();
        let ch = session.connection.create_channel().await.unwrap();
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        ch.queue_declare(
            tap.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();
        ch.queue_bind(
            tap.as_str().into(),
            "switchyard.events".into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let _ = ch.close(200, "declared".into()).await;
    }
    let log = Arc::new(Mutex::new(Log::default()));
    let stop_tap = CancellationToken::new();
    {
        let log = log.clone();
        tokio::spawn(consume(
            tap_broker.clone(),
            ConsumeSettings {
                queue: tap.clone(),
                prefetch: 500,
                grace: Duration::from_secs(1),
            },
            stop_tap.clone(),
            move |d| {
                let log = log.clone();
                async move {
                    if let Ok(e) = Event::decode(&d.data) {
                        let mut l = log.lock().unwrap();
                        // A redelivery after a lost connection repeats events: kept once.
                        if l.seen.insert(e.event_id) {
                            if e.status == Status::Completed {
                                l.completions.push(Instant::now());
                            }
                            l.events.entry(e.command_id).or_default().push(e);
                        }
                    }
                    let _ = d.acker.ack(BasicAckOptions::default()).await;
                }
            },
        ));
    }

    // The fleet: real binaries, each with the three addresses and an ops port of its own.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(&config, &fleet.config_toml).unwrap();
    let logs = |name: &str| dir.path().join(format!("{name}.log"));
    let mut procs = vec![Proc {
        name: "ingress".into(),
        child: spawn("switchyard-ingress", &config, &logs("ingress"), &[]),
        log: logs("ingress"),
        metrics: format!("http://127.0.0.1:{}/metrics", fleet.ingress_port),
        counter: "switchyard_commands_received_total",
        only: "",
    }];
    for i in 1..=2 {
        let port = free_port();
        procs.push(Proc {
            name: format!("payment worker {i}"),
            child: spawn(
                "switchyard-payment",
                &config,
                &logs(&format!("payment-{i}")),
                &[("SWITCHYARD_WORKER__LISTEN", format!("127.0.0.1:{port}"))],
            ),
            log: logs(&format!("payment-{i}")),
            metrics: format!("http://127.0.0.1:{port}/metrics"),
            counter: "switchyard_commands_total",
            only: "status=\"completed\"",
        });
    }
    let port = free_port();
    procs.push(Proc {
        name: "ledger".into(),
        child: spawn(
            "switchyard-ledger",
            &config,
            &logs("ledger"),
            &[("SWITCHYARD_LEDGER__LISTEN", format!("127.0.0.1:{port}"))],
        ),
        log: logs("ledger"),
        metrics: format!("http://127.0.0.1:{port}/metrics"),
        counter: "switchyard_ledger_ingested_total",
        only: "kind=\"events\"",
    });
    let ingress = format!("http://127.0.0.1:{}", fleet.ingress_port);
    step("the fleet getting ready", 60, async {
        for p in &procs {
            let ready = p.metrics.replace("/metrics", "/readyz");
            while !http
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    })
    .await;
    fleet.wait_for_queue(WORK_QUEUE).await;

    // Quorum queues replicated on the three nodes.
    let queues = management_get(&http, &format!("/api/queues/{}", fleet.vhost.name))
        .await
        .expect("the management API lists the vhost's queues");
    let mut quorum = 0;
    for q in queues.as_array().unwrap() {
        if q["type"] != "quorum" {
            continue;
        }
        quorum += 1;
        let mut members: Vec<&str> = q["members"]
            .as_array()
            .map(|m| m.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        members.sort_unstable();
        assert_eq!(
            members, want,
            "quorum queue {} is not replicated on the three nodes",
            q["name"]
        );
    }
    assert!(quorum >= 3, "the vhost has {quorum} quorum queues");
    let work = management_get(
        &http,
        &format!("/api/queues/{}/{WORK_QUEUE}", fleet.vhost.name),
    )
    .await
    .unwrap();
    assert_eq!(work["type"], "quorum", "{work:#}");
    let leader = work["leader"].as_str().unwrap().to_owned();
    // The node to kill: the work queue's leader when fleet processes are connected to it
    // too, else the node holding most of them, so both a failover and reconnects happen.
    let placed = step("listing the fleet's connections", 30, async {
        loop {
            let placed = connections_by_node(&http, &fleet.vhost.name).await;
            if placed.values().map(Vec::len).sum::<usize>() >= procs.len() {
                return placed;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let victim = if placed.contains_key(&leader) {
        leader.clone()
    } else {
        placed
            .iter()
            .max_by_key(|(_, names)| names.len())
            .map(|(node, _)| node.clone())
            .unwrap()
    };
    let moved = placed.get(&victim).cloned().unwrap_or_default();
    let victim_index = NODES.iter().position(|(n, _, _)| *n == victim).unwrap() + 1;

    // Scrape every process's work counter once a second.
    let t0 = Instant::now();
    let samples: Arc<Mutex<Vec<Series>>> = Arc::new(Mutex::new(vec![Vec::new(); procs.len()]));
    // Scrapes that failed, per process: (when, why), so a silent process is told from an idle one.
    let misses: Arc<Mutex<Vec<Misses>>> = Arc::new(Mutex::new(vec![Vec::new(); procs.len()]));
    let stop_scrape = CancellationToken::new();
    let scraper = {
        let (samples, misses, stop, http) = (
            samples.clone(),
            misses.clone(),
            stop_scrape.clone(),
            http.clone(),
        );
        let targets: Vec<(String, &'static str, &'static str)> = procs
            .iter()
            .map(|p| (p.metrics.clone(), p.counter, p.only))
            .collect();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            while !stop.is_cancelled() {
                tick.tick().await;
                for (i, (url, metric, only)) in targets.iter().enumerate() {
                    let r = http.get(url).timeout(Duration::from_secs(1)).send().await;
                    match r {
                        Ok(r) => match r.text().await {
                            Ok(text) => {
                                let v = counter(&text, metric, only);
                                samples.lock().unwrap()[i].push((t0.elapsed(), v));
                            }
                            Err(e) => misses.lock().unwrap()[i].push((t0.elapsed(), e.to_string())),
                        },
                        Err(e) => misses.lock().unwrap()[i].push((t0.elapsed(), e.to_string())),
                    }
                }
            }
        })
    };

    // The posters: the i-th command is due at i / rate; a refused or failed POST is tried
    // again with the same Idempotency-Key, as a core app would.
    let rate = (n as f64 / PACE_SECS).max(5.0);
    let accepted: Arc<Mutex<BTreeMap<usize, Uuid>>> = Arc::default();
    let refusals = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let run = Uuid::new_v4().simple().to_string();
    let mut posters = Vec::new();
    for _ in 0..16 {
        let (accepted, refusals, next, http, ingress, run) = (
            accepted.clone(),
            refusals.clone(),
            next.clone(),
            http.clone(),
            ingress.clone(),
            run.clone(),
        );
        posters.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    return;
                }
                let due = t0 + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                let body = serde_json::json!({
                    "kind": "payment", "provider": "sandbox", "operation": "charge",
                    "payload": {"amount": 700 + i, "currency": "eur", "payment_method": "pm_card_visa"},
                });
                let started = Instant::now();
                loop {
                    let r = http
                        .post(format!("{ingress}/v1/commands"))
                        .bearer_auth(switchyard_testing::TOKEN)
                        .header("idempotency-key", format!("cluster-{run}-{i}"))
                        .timeout(Duration::from_secs(15))
                        .json(&body)
                        .send()
                        .await;
                    if let Ok(r) = r
                        && r.status().is_success()
                    {
                        let v: serde_json::Value = r.json().await.unwrap();
                        let id: Uuid = v["id"].as_str().unwrap().parse().unwrap();
                        accepted.lock().unwrap().insert(i, id);
                        break;
                    }
                    refusals.fetch_add(1, Ordering::SeqCst);
                    assert!(
                        started.elapsed() < Duration::from_secs(120),
                        "the ingress refused command {i} for two minutes"
                    );
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }));
    }

    // The node that leads the work queue dies, and comes back.
    tokio::time::sleep_until((t0 + KILL_AT).into()).await;
    let killed_at = t0.elapsed();
    let killed_wall = chrono::Utc::now();
    step(
        "killing the node",
        30,
        dev_cluster(&["kill", &victim_index.to_string()]),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    step(
        "starting the node again",
        180,
        dev_cluster(&["start", &victim_index.to_string()]),
    )
    .await;
    step("the node rejoining the cluster", 60, async {
        while running_nodes(&http).await != want {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let back_at = t0.elapsed();
    let back_wall = chrono::Utc::now();
    let placed_after = connections_by_node(&http, &fleet.vhost.name).await;
    let posting_ends = Duration::from_secs_f64(n as f64 / rate);

    for p in posters {
        step("the posters", 300, p).await.unwrap();
    }
    let published_in = t0.elapsed();
    let accepted: Vec<Uuid> = accepted.lock().unwrap().values().copied().collect();
    assert_eq!(accepted.len(), n, "every command was accepted in the end");

    // Everything settles.
    let settle = Instant::now() + Duration::from_secs(300);
    loop {
        let done = {
            let l = log.lock().unwrap();
            accepted
                .iter()
                .filter(|id| {
                    l.events
                        .get(id)
                        .is_some_and(|es| es.iter().any(|e| e.status.is_terminal()))
                })
                .count()
        };
        if done == n || Instant::now() > settle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settled_in = t0.elapsed();
    // Anything that would wrongly follow a terminal event arrives now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::time::sleep(WINDOW.saturating_sub(t0.elapsed().saturating_sub(back_at))).await;
    stop_scrape.cancel();
    scraper.await.unwrap();

    // The checker.
    let (lost, two_terminal, completions) = {
        let l = log.lock().unwrap();
        let mut lost = Vec::new();
        let mut two = Vec::new();
        for id in &accepted {
            let events = l.events.get(id).cloned().unwrap_or_default();
            let mut per_run: HashMap<u32, usize> = HashMap::new();
            for e in events.iter().filter(|e| e.status.is_terminal()) {
                *per_run.entry(e.run).or_default() += 1;
            }
            if per_run.is_empty() {
                lost.push(*id);
            }
            if per_run.values().any(|c| *c > 1) {
                two.push((*id, events));
            }
        }
        (lost, two, l.completions.clone())
    };
    // Where the lost went: the kind's dead-letter queue holds what the broker dead-lettered.
    let dead_lettered = management_get(
        &http,
        &format!("/api/queues/{}/switchyard.dlq.payment", fleet.vhost.name),
    )
    .await
    .and_then(|q| q["messages"].as_u64())
    .unwrap_or(0);
    let mut duplicated = Vec::new();
    let mut lost_effects = Vec::new();
    let mut effects = 0;
    for id in &accepted {
        let view = step("asking the sandbox", 30, fleet.sandbox_view(*id)).await;
        let e = view["effects"].as_u64().unwrap_or(0);
        effects += e;
        if lost.contains(id) {
            lost_effects.push(e);
        }
        if e > 1 {
            duplicated.push((*id, view));
        }
    }

    // Throughput: the rate in the 10 s before the kill, the rate in the 10 s after the
    // node's return, and when each process was back at 80 % of its rate before.
    let before_from = killed_at.saturating_sub(WINDOW);
    let per_sec = |series: &[(Duration, f64)], from: Duration, to: Duration| -> f64 {
        let at = |t: Duration| {
            series
                .iter()
                .rev()
                .find(|(s, _)| *s <= t)
                .map_or(0.0, |(_, v)| *v)
        };
        (at(to) - at(from)) / (to - from).as_secs_f64().max(1.0)
    };
    let samples = samples.lock().unwrap().clone();
    let mut report = Vec::new();
    let mut slow = Vec::new();
    let mut workers_before = 0.0;
    let mut workers_after = 0.0;
    for (p, series) in procs.iter().zip(&samples) {
        let before = per_sec(series, before_from, killed_at);
        let after = per_sec(series, back_at, back_at + WINDOW);
        let recovered = (0..=20).map(Duration::from_secs).find(|d| {
            let from = back_at + *d;
            per_sec(series, from, from + Duration::from_secs(3)) >= 0.8 * before
        });
        report.push(format!(
            "{}: {before:.1}/s before, {after:.1}/s in the 10 s after, back to 80 % in {}",
            p.name,
            recovered.map_or("more than 20 s".to_owned(), |d| format!(
                "{} s",
                d.as_secs()
            ))
        ));
        if p.name.starts_with("payment worker") {
            workers_before += before;
            workers_after += after;
            // Two competing consumers may share the work differently after a reconnect:
            // each must be working, the pool must be back whole.
            if after < 0.3 * before {
                slow.push(p.name.clone());
            }
        } else if recovered.is_none_or(|d| d > WINDOW) {
            slow.push(p.name.clone());
        }
    }
    if workers_after < 0.8 * workers_before {
        slow.push("the payment workers together".into());
    }
    let completed_per_sec = |from: Duration, to: Duration| {
        completions
            .iter()
            .filter(|t| {
                let e = t.duration_since(t0);
                e >= from && e < to
            })
            .count() as f64
            / (to - from).as_secs_f64()
    };
    eprintln!(
        "cluster: {n} commands at {rate:.1}/s over {:.1} s, through the ingress to two payment \
         workers and the ledger, each given 3 node addresses; connections {placed:?}; \
         killed {victim} (the leader of {WORK_QUEUE}: {}; with {moved:?} on it) at {:.1} s, back in the cluster at {:.1} s ({:.1} s later); posting ended at {:.1} s \
         (planned {:.1} s), connections after {placed_after:?}; all settled at {:.1} s; ingress refusals retried {}; \
         completions seen {:.1}/s in the 10 s before the kill, {:.1}/s in the 10 s after the \
         return; workers together {workers_before:.1}/s before, {workers_after:.1}/s after; \
         lost {}, duplicated provider effects {} (effects counted {effects}), more than one \
         terminal event in a run {}\n  {}",
        published_in.as_secs_f64(),
        if victim == leader { "yes" } else { "no" },
        killed_at.as_secs_f64(),
        back_at.as_secs_f64(),
        (back_at - killed_at).as_secs_f64(),
        published_in.as_secs_f64(),
        posting_ends.as_secs_f64(),
        settled_in.as_secs_f64(),
        refusals.load(Ordering::SeqCst),
        completed_per_sec(before_from, killed_at),
        completed_per_sec(back_at, back_at + WINDOW),
        lost.len(),
        duplicated.len(),
        two_terminal.len(),
        report.join("\n  "),
    );
    assert!(
        !moved.is_empty(),
        "no fleet process was on the killed node, so none had to move: {placed:?}"
    );
    assert_eq!(
        placed_after.values().map(Vec::len).sum::<usize>(),
        placed.values().map(Vec::len).sum::<usize>(),
        "every fleet connection is back after the node's return: {placed_after:?}"
    );
    let lost_events: Vec<_> = {
        let l = log.lock().unwrap();
        lost.iter()
            .take(3)
            .map(|id| {
                let statuses: Vec<Status> = l
                    .events
                    .get(id)
                    .into_iter()
                    .flatten()
                    .map(|e| e.status)
                    .collect();
                (*id, statuses)
            })
            .collect()
    };
    assert!(
        lost.is_empty(),
        "{} accepted commands never reached a terminal event; {dead_lettered} messages are in \
         switchyard.dlq.payment; the provider's effects of the lost: {lost_effects:?}; the \
         first ones' events: {lost_events:?}",
        lost.len()
    );
    assert!(
        duplicated.is_empty(),
        "duplicated effects: {:#?}",
        duplicated.iter().take(3).collect::<Vec<_>>()
    );
    assert!(
        two_terminal.is_empty(),
        "more than one terminal event in a run: {:#?}",
        two_terminal.iter().take(3).collect::<Vec<_>>()
    );
    assert!(
        back_at + WINDOW <= posting_ends,
        "the node took too long to return: the 10 s after it ({:.1} s) fall past the end of \
         the steady load ({:.1} s), so throughput cannot be compared",
        (back_at + WINDOW).as_secs_f64(),
        posting_ends.as_secs_f64()
    );
    if !slow.is_empty() {
        // What the slow ones did: whether they still run, their counter from the kill on,
        // the scrapes they did not answer, and their own log; and the ledger's queues as the
        // broker saw them (consumers, ready, unacknowledged, leader).
        let misses = misses.lock().unwrap().clone();
        for queue in [LEDGER_EVENTS_QUEUE, LEDGER_ATTEMPTS_QUEUE] {
            let q = management_get(&http, &format!("/api/queues/{}/{queue}", fleet.vhost.name))
                .await
                .unwrap_or_default();
            eprintln!(
                "--- {queue}: consumers {}, ready {}, unacknowledged {}, leader {}, members {}",
                q["consumers"],
                q["messages_ready"],
                q["messages_unacknowledged"],
                q["leader"],
                q["members"]
            );
        }
        for ((p, series), missed) in procs.iter_mut().zip(&samples).zip(&misses) {
            if !slow.contains(&p.name) {
                continue;
            }
            let status = p
                .child
                .try_wait()
                .map(|s| format!("{s:?}"))
                .unwrap_or_default();
            let missed: Vec<String> = missed
                .iter()
                .map(|(t, e)| format!("{:.0}s: {e}", t.as_secs_f64()))
                .collect();
            eprintln!(
                "--- {}: exited: {status}; {} scrapes failed: {missed:?}",
                p.name,
                missed.len()
            );
            let seen: Vec<String> = series
                .iter()
                .filter(|(t, _)| *t + Duration::from_secs(2) >= killed_at)
                .map(|(t, v)| format!("{:.0}s:{v}", t.as_secs_f64()))
                .collect();
            let log = std::fs::read_to_string(&p.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "--- {} (killed at {:.1} s, {killed_wall}; back at {:.1} s, {back_wall}): counter {}\n--- its log, last {} lines:\n{}",
                p.name,
                killed_at.as_secs_f64(),
                back_at.as_secs_f64(),
                seen.join(" "),
                tail.len(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    assert!(
        slow.is_empty(),
        "not back to full throughput within 10 s of the node's return: {slow:?}"
    );

    stop_tap.cancel();
    tap_broker.close().await;
    for mut p in procs {
        let _ = p.child.start_kill();
        let _ = p.child.wait().await;
    }
    fleet.stop().await;
}
