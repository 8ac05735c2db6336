//! The operator CLI, run as the real `switchyard` binary against a fleet in its own vhost:
//! `dlq list|show|replay|purge` over every parking lot (with unroutable commands parked by the
//! workers, and replays as new runs), `status`, `tail`, `topology check`, and its exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_amqp::lapin::options::QueueDeclareOptions;
use switchyard_amqp::lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use switchyard_amqp::lapin::{Connection, ConnectionProperties};
use switchyard_amqp::messages::publish_command;
use switchyard_core::{Command, Status};
use switchyard_e2e::binary;
use switchyard_testing::{TestFleet, TestVhost, management_url};
use tokio::io::{AsyncBufReadExt, BufReader};
use uuid::Uuid;

/// The CLI pointed at one config file.
struct Cli {
    config: PathBuf,
}

/// What a run printed and how it ended.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:#?}"))
    }

    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "{self:#?}");
        self
    }
}

impl Cli {
    fn new(toml: &str) -> Self {
        let config = std::env::temp_dir().join(format!(
            "switchyard-cli-test-{}.toml",
            Uuid::new_v4().simple()
        ));
        std::fs::write(&config, toml).unwrap();
        Self { config }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(binary("switchyard"));
        cmd.args(args)
            .arg("--config")
            .arg(&self.config)
            .env_remove("SWITCHYARD_CONFIG")
            .env_remove("SWITCHYARD_AMQP_URL")
            .env_remove("SWITCHYARD_URL")
            .env_remove("SWITCHYARD_TOKEN")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    async fn run(&self, args: &[&str]) -> Run {
        let out = tokio::time::timeout(Duration::from_secs(60), self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("switchyard {args:?} did not finish within 60 s"))
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `dlq list --json` plus `args`: the dead letters' command ids, in queue order.
    async fn listed(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["dlq", "list", "--json"];
        all.extend_from_slice(args);
        let run = self.run(&all).await.ok();
        run.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap_or("-").to_owned())
            .collect()
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Publishes `commands` (scripted to fail) and waits until each is `failed`, i.e.
/// dead-lettered.
async fn dead_letter(fleet: &TestFleet, commands: &[&Command]) {
    for c in commands {
        fleet.publish(c).await;
    }
    for c in commands {
        let events = fleet.events.terminal(c.id, Duration::from_secs(30)).await;
        assert!(
            events.iter().any(|e| e.status == Status::Failed),
            "{events:#?}"
        );
    }
}

/// Declares a quorum queue, puts one message in, and peeks at it the naive way (get, then
/// requeue) until it is gone: returns after how many peeks (None if still there after 5).
async fn requeue_peeks_until_gone(fleet: &TestFleet, queue: &str) -> Option<u32> {
    use switchyard_amqp::lapin::options::{BasicGetOptions, BasicNackOptions};
    let session = fleet.broker.session().await.unwrap();
    let ch = session.connection.create_channel().await.unwrap();
    let mut quorum = FieldTable::default();
    quorum.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(LongString::from(b"quorum".to_vec())),
    );
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        quorum,
    )
    .await
    .unwrap();
    fleet
        .publisher
        .publish(switchyard_amqp::Outgoing {
            exchange: "",
            routing_key: queue,
            body: b"{}",
            properties: switchyard_amqp::lapin::BasicProperties::default(),
            mandatory: true,
        })
        .await
        .unwrap();
    for peek in 1..=5 {
        let Some(m) = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
        else {
            return Some(peek - 1);
        };
        ch.basic_nack(
            m.delivery.delivery_tag,
            BasicNackOptions {
                multiple: false,
                requeue: true,
            },
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// A charge the sandbox refuses once with a 400 (permanent), then accepts.
async fn refused_once(fleet: &TestFleet, key: &str) -> Command {
    let mut c = fleet.charge();
    c.idempotency_key = Some(serde_json::from_value(Value::from(key)).unwrap());
    fleet.scenario(c.id, &["400"]).await;
    c
}

/// A charge the worker finds invalid (class `invalid`).
fn invalid(fleet: &TestFleet) -> Command {
    let mut c = fleet.charge();
    c.payload.insert("amount".into(), (-5).into());
    c
}

/// Waits until `id` has a `completed` event.
async fn completed(fleet: &TestFleet, id: Uuid) -> Vec<switchyard_core::Event> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = fleet.events.of(id);
        if events.iter().any(|e| e.status == Status::Completed) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never completed: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every request the sandbox saw for a command carried the same idempotency key.
fn one_key(view: &Value) -> String {
    let keys: std::collections::HashSet<String> = view["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["idempotency_key"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        keys.len(),
        1,
        "one idempotency key on every request: {view:#}"
    );
    keys.into_iter().next().unwrap()
}

#[tokio::test]
async fn dlq_list_and_show_read_without_losing_or_reordering_even_with_a_delivery_limit() {
    let fleet = TestFleet::start().await;
    let cli = Cli::new(&fleet.config_toml);
    let a = refused_once(&fleet, "order-a").await;
    let b = invalid(&fleet);
    let c = refused_once(&fleet, "order-c").await;
    dead_letter(&fleet, &[&a, &b, &c]).await;

    // An operator's policy: every DLQ gets a delivery limit of 1. Peeking by requeueing would
    // now drop a dead letter on its second look.
    let policy = fleet
        .http()
        .put(format!(
            "{}/api/policies/{}/dlq-delivery-limit",
            management_url(),
            fleet.vhost.name
        ))
        .basic_auth("guest", Some("guest"))
        .json(&serde_json::json!({
            "pattern": "^switchyard\\.dlq\\.",
            "definition": {"delivery-limit": 1},
            "apply-to": "queues",
            "priority": 10
        }))
        .send()
        .await
        .unwrap();
    assert!(policy.status().is_success(), "policy: {}", policy.status());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The control: under that policy, peeking by get-and-requeue loses a message.
    assert_eq!(
        requeue_peeks_until_gone(&fleet, "switchyard.dlq.zz_control").await,
        Some(2),
        "the delivery limit drops a requeued message on its second requeue"
    );

    // Workers dead-letter concurrently: the queue's order is whatever the first look shows,
    // and every later look must show the same.
    let ids = cli.listed(&[]).await;
    let (a_id, b_id, c_id) = (a.id.to_string(), b.id.to_string(), c.id.to_string());
    assert_eq!(
        sorted(ids.clone()),
        sorted(vec![a_id.clone(), b_id.clone(), c_id.clone()])
    );
    for round in 0..4 {
        assert_eq!(
            cli.listed(&[]).await,
            ids,
            "round {round}: every dead letter, in order"
        );
    }
    assert_eq!(
        fleet.ready("switchyard.dlq.payment").await,
        3,
        "nothing lost, nothing duplicated"
    );

    // The JSON view carries what an operator needs.
    let listed = cli.run(&["dlq", "list", "--json"]).await.ok().json();
    let find = |id: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {listed:#}"))
            .clone()
    };
    let first = find(&a_id);
    assert_eq!(first["class"], "permanent");
    assert_eq!(first["kind"], "payment");
    assert_eq!(first["provider"], "sandbox");
    assert_eq!(first["operation"], "charge");
    assert_eq!(first["attempts"], 1);
    assert_eq!(first["idempotency_key"], "order-a");
    assert_eq!(first["command"]["id"], a_id);
    assert_eq!(find(&b_id)["class"], "invalid");

    // The table.
    let table = cli.run(&["dlq", "list"]).await.ok();
    for needle in [&a_id, &b_id, &c_id, "permanent", "invalid", "CLASS"] {
        assert!(table.stdout.contains(needle), "{needle}: {table:#?}");
    }

    // Filters.
    assert_eq!(
        cli.listed(&["--class", "invalid"]).await,
        vec![b_id.clone()]
    );
    assert_eq!(
        sorted(
            cli.listed(&["--provider", "sandbox", "--class", "permanent"])
                .await
        ),
        sorted(vec![a_id.clone(), c_id.clone()])
    );
    assert_eq!(cli.listed(&["--id", &c_id]).await, vec![c_id.clone()]);
    assert_eq!(cli.listed(&["--newer-than", "1h"]).await, ids);
    assert!(cli.listed(&["--older-than", "1h"]).await.is_empty());
    assert!(cli.listed(&["--kind", "shipping"]).await.is_empty());
    assert!(cli.listed(&["--provider", "stripe"]).await.is_empty());

    // Show.
    let shown = cli.run(&["dlq", "show", &a_id]).await.ok();
    for needle in [
        a_id.as_str(),
        "permanent",
        "x-switchyard-error-class",
        "order-a",
        "\"payload\"",
    ] {
        assert!(shown.stdout.contains(needle), "{needle}: {shown:#?}");
    }
    let shown = cli.run(&["dlq", "show", &b_id, "--json"]).await.ok().json();
    assert_eq!(shown["class"], "invalid");
    let missing = cli.run(&["dlq", "show", &Uuid::new_v4().to_string()]).await;
    assert_eq!(missing.code, 3, "not found: {missing:#?}");
    assert!(missing.stderr.contains("no dead letter"), "{missing:#?}");

    // Usage errors.
    let bad = cli.run(&["dlq", "list", "--class", "fatal"]).await;
    assert_eq!(bad.code, 2, "{bad:#?}");
    let bad = cli.run(&["dlq", "list", "--older-than", "soon"]).await;
    assert_eq!(bad.code, 2, "{bad:#?}");

    // After all that, still everything, in order.
    assert_eq!(cli.listed(&[]).await, ids);
    assert_eq!(fleet.ready("switchyard.dlq.payment").await, 3);
    fleet.stop().await;
}

#[tokio::test]
async fn replay_keeps_the_id_and_idempotency_key_starts_a_new_run_and_purge_deletes() {
    let fleet = TestFleet::start().await;
    let cli = Cli::new(&fleet.config_toml);
    let a = refused_once(&fleet, "order-a").await;
    let b = refused_once(&fleet, "order-b").await;
    let c = refused_once(&fleet, "order-c").await;
    dead_letter(&fleet, &[&a, &b, &c]).await;
    let dlq = "switchyard.dlq.payment";

    // A dry run changes nothing.
    let dry = cli
        .run(&["dlq", "replay", "--all", "--dry-run", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["would_replay"], 3);
    assert_eq!(dry["replayed"], 0);
    let dry_one = cli
        .run(&["dlq", "replay", &a.id.to_string(), "--dry-run"])
        .await
        .ok();
    assert!(dry_one.stdout.contains("would replay"), "{dry_one:#?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(fleet.ready(dlq).await, 3);
    assert_eq!(
        fleet.sandbox_view(a.id).await["requests"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "a dry run calls nobody"
    );
    assert!(
        !fleet
            .events
            .of(a.id)
            .iter()
            .any(|e| e.status == Status::Completed)
    );

    // Replay one: it runs again with the same id and idempotency key, and completes.
    let replayed = cli.run(&["dlq", "replay", &a.id.to_string()]).await.ok();
    assert!(replayed.stdout.contains("replayed 1"), "{replayed:#?}");
    let events = completed(&fleet, a.id).await;
    let done = events
        .iter()
        .find(|e| e.status == Status::Completed)
        .unwrap();
    assert_eq!(done.command_id, a.id);
    // A new run (contract 7): its first attempt, a fresh retry budget, above the failed run.
    assert_eq!(done.run, 1, "the replay is run 1: {events:#?}");
    assert_eq!(done.attempt, 1, "a fresh retry budget: {events:#?}");
    let failed = events.iter().find(|e| e.status == Status::Failed).unwrap();
    assert_eq!(failed.run, 0, "{events:#?}");
    assert!(done.seq > failed.seq, "{events:#?}");
    let view = fleet.sandbox_view(a.id).await;
    assert_eq!(view["requests"].as_array().unwrap().len(), 2, "{view:#}");
    let key = one_key(&view);
    assert!(!key.is_empty());
    assert_eq!(view["effects"], 1, "{view:#}");
    assert_eq!(
        sorted(cli.listed(&[]).await),
        sorted(vec![b.id.to_string(), c.id.to_string()])
    );

    // Replaying it again: it is no longer there.
    let again = cli.run(&["dlq", "replay", &a.id.to_string()]).await;
    assert_eq!(again.code, 3, "{again:#?}");

    // The ledger's view of the replayed command.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let run = cli.run(&["status", &a.id.to_string(), "--json"]).await;
        if run.code == 0 {
            let view = run.json();
            let statuses: Vec<&str> = view["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["status"].as_str().unwrap_or_default())
                .collect();
            if statuses.contains(&"completed") {
                break view;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the ledger never saw the replay: {run:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status["id"], a.id.to_string());
    assert_eq!(
        status["attempts"].as_array().unwrap().len(),
        2,
        "{status:#}"
    );
    let human = cli.run(&["status", &a.id.to_string()]).await.ok();
    for needle in [
        "payment.sandbox.charge",
        "events (",
        "completed",
        "provider attempts (2)",
    ] {
        assert!(human.stdout.contains(needle), "{needle}: {human:#?}");
    }
    let unknown = cli.run(&["status", &Uuid::new_v4().to_string()]).await;
    assert_eq!(unknown.code, 3, "{unknown:#?}");

    // Replay the rest in bulk.
    let bulk = cli
        .run(&["dlq", "replay", "--all", "--kind", "payment", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(bulk["replayed"], 2, "{bulk:#}");
    for x in [&b, &c] {
        completed(&fleet, x.id).await;
        one_key(&fleet.sandbox_view(x.id).await);
    }
    assert!(cli.listed(&[]).await.is_empty());

    // Purge: refused without --yes when nobody can be asked, then with filters.
    let d = refused_once(&fleet, "order-d").await;
    let e = invalid(&fleet);
    dead_letter(&fleet, &[&d, &e]).await;
    let refused = cli.run(&["dlq", "purge", "--class", "invalid"]).await;
    assert_eq!(refused.code, 2, "{refused:#?}");
    assert_eq!(fleet.ready(dlq).await, 2);
    let purged = cli
        .run(&["dlq", "purge", "--class", "invalid", "--yes", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(purged["deleted"], 1, "{purged:#}");
    assert_eq!(purged["ids"][0], e.id.to_string());
    assert_eq!(cli.listed(&[]).await, vec![d.id.to_string()]);
    fleet.stop().await;
}

#[tokio::test]
async fn tail_prints_events_as_json_lines() {
    let fleet = TestFleet::start().await;
    let cli = Cli::new(&fleet.config_toml);
    let mut child = cli
        .command(&[
            "tail",
            "--json",
            "--kind",
            "payment",
            "--status",
            "completed",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            if line.contains("tailing") {
                return line;
            }
        }
        panic!("tail ended before it was ready");
    })
    .await
    .expect("tail ready");
    assert!(ready.contains("payment.*.completed"), "{ready}");

    let c = fleet.charge();
    fleet.publish(&c).await;
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let event: Value = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if v["command_id"] == c.id.to_string() {
                return v;
            }
        }
        panic!("tail ended");
    })
    .await
    .expect("the completed event");
    assert_eq!(event["status"], "completed");
    assert_eq!(event["kind"], "payment");
    child.kill().await.unwrap();
    fleet.stop().await;
}

#[tokio::test]
async fn topology_check_passes_when_applied_and_fails_on_an_empty_vhost() {
    let fleet = TestFleet::start_with(switchyard_testing::TestFleetOptions {
        in_process: false,
        ..Default::default()
    })
    .await;
    let cli = Cli::new(&fleet.config_toml);
    cli.run(&["topology", "apply"]).await.ok();
    let ok = cli.run(&["topology", "check"]).await.ok();
    assert!(ok.stdout.contains("all in order"), "{ok:#?}");
    assert!(
        !ok.stderr.contains("not checked"),
        "bindings were compared: {ok:#?}"
    );
    let report = cli.run(&["topology", "check", "--json"]).await.ok().json();
    assert_eq!(report["ok"], true);
    assert!(report["queues"].as_u64().unwrap() > 5, "{report:#}");
    assert!(report["bindings"].as_u64().unwrap() > 5, "{report:#}");

    // An empty vhost: everything missing; one queue declared differently.
    let empty = TestVhost::create().await;
    let conn = Connection::connect(&empty.amqp_url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut classic = FieldTable::default();
    classic.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(LongString::from(b"classic".to_vec())),
    );
    ch.queue_declare(
        "switchyard.dlq.payment".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        classic,
    )
    .await
    .unwrap();
    conn.close(200, "done".into()).await.unwrap();
    let other = Cli::new(
        &fleet
            .config_toml
            .replace(&fleet.vhost.amqp_url, &empty.amqp_url),
    );
    let bad = other.run(&["topology", "check"]).await;
    assert_eq!(bad.code, 4, "{bad:#?}");
    assert!(bad.stdout.contains("missing"), "{bad:#?}");
    assert!(bad.stdout.contains("switchyard.commands"), "{bad:#?}");
    let report = other.run(&["topology", "check", "--json"]).await;
    assert_eq!(report.code, 4, "{report:#?}");
    let report = report.json();
    assert_eq!(report["ok"], false);
    let dlq = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "switchyard.dlq.payment")
        .unwrap_or_else(|| panic!("{report:#}"));
    assert!(
        dlq["problem"].as_str().unwrap().contains("differs"),
        "{dlq:#}"
    );
    // The check changed nothing.
    assert_eq!(empty.queue_messages("switchyard.unroutable").await, None);
    empty.delete().await;

    // An unreachable broker: exit code 1, the URL named without its password.
    let nowhere = Cli::new(
        &fleet
            .config_toml
            .replace(&fleet.vhost.amqp_url, "amqp://guest:guest@127.0.0.1:1/%2f"),
    );
    let down = nowhere.run(&["dlq", "list"]).await;
    assert_eq!(down.code, 1, "{down:#?}");
    assert!(
        down.stderr.contains("amqp://guest:***@127.0.0.1:1"),
        "{down:#?}"
    );
    assert!(!down.stderr.contains("guest:guest"), "{down:#?}");
    fleet.stop().await;
}

/// Declares `queue` (durable, quorum) and binds it to `exchange` with `key`: a tap that shows
/// exactly what a replay published.
async fn tap(fleet: &TestFleet, queue: &str, exchange: &str, key: &str) {
    let session = fleet.broker.session().await.unwrap();
    let ch = session.connection.create_channel().await.unwrap();
    let mut quorum = FieldTable::default();
    quorum.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(LongString::from(b"quorum".to_vec())),
    );
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        quorum,
    )
    .await
    .unwrap();
    if !exchange.is_empty() {
        ch.queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let _ = ch.close(200, "tapped".into()).await;
}

/// The next message of `queue` (waits up to 20 s): its headers, message id and body.
async fn next_message(
    fleet: &TestFleet,
    queue: &str,
) -> (Option<FieldTable>, Option<String>, Vec<u8>) {
    use switchyard_amqp::lapin::options::BasicGetOptions;
    let session = fleet.broker.session().await.unwrap();
    let ch = session.connection.create_channel().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(m) = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            let d = m.delivery;
            return (
                d.properties.headers().clone(),
                d.properties.message_id().as_ref().map(|m| m.to_string()),
                d.data,
            );
        }
        assert!(Instant::now() < deadline, "nothing arrived in {queue}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `queue` holds `n` ready messages.
async fn ready_becomes(fleet: &TestFleet, queue: &str, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = fleet.ready(queue).await;
        if now == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{queue} holds {now} messages, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn header_str(h: &Option<FieldTable>, key: &str) -> Option<String> {
    use switchyard_amqp::HeaderRead;
    h.header_str(key)
}

fn header_int(h: &Option<FieldTable>, key: &str) -> Option<i64> {
    use switchyard_amqp::HeaderRead;
    h.header_int(key)
}

#[tokio::test]
async fn an_unroutable_command_gets_a_failed_event_and_waits_in_the_unroutable_lot() {
    let fleet = TestFleet::start().await;
    let cli = Cli::new(&fleet.config_toml);
    // A command for a provider no worker serves: the broker confirms it (the alternate
    // exchange takes it), so only an event can tell the core app.
    let mut nobody = fleet.charge();
    nobody.provider = "nobody".parse().unwrap();
    nobody.idempotency_key = Some(serde_json::from_value(Value::from("order-n")).unwrap());
    fleet.publish(&nobody).await;
    // And something with no readable id under a routing key that is not even a command's.
    fleet.publish_raw("fax", b"\x00not a command").await;

    let events = fleet
        .events
        .terminal(nobody.id, Duration::from_secs(30))
        .await;
    assert_eq!(
        events.len(),
        1,
        "one failed event and nothing else: {events:#?}"
    );
    let failed = &events[0];
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(failed.routing_key(), "payment.nobody.failed");
    assert_eq!(failed.run, 0);
    assert_eq!(
        failed.metadata.entries().get("test").map(String::as_str),
        Some("yes")
    );
    let error = failed.error.as_ref().unwrap();
    assert_eq!(error.class, switchyard_core::ErrorClass::Invalid);
    assert_eq!(error.code, "unroutable");
    assert!(error.message.contains("payment.nobody.charge"), "{error:?}");

    // Both are parked, nothing is left behind in switchyard.unroutable.
    ready_becomes(&fleet, "switchyard.dlq.unroutable", 2).await;
    assert_eq!(fleet.ready("switchyard.unroutable").await, 0);

    // `dlq list` (every lot by default) shows them.
    let listed = cli.run(&["dlq", "list", "--json"]).await.ok().json();
    let items = listed.as_array().unwrap();
    assert_eq!(items.len(), 2, "{listed:#}");
    let parked = items
        .iter()
        .find(|d| d["id"] == nobody.id.to_string())
        .unwrap_or_else(|| panic!("{listed:#}"));
    assert_eq!(parked["lot"], "unroutable");
    assert_eq!(parked["queue"], "switchyard.dlq.unroutable");
    assert_eq!(parked["class"], "invalid");
    assert_eq!(parked["kind"], "payment");
    assert_eq!(parked["provider"], "nobody");
    assert_eq!(parked["routing_key"], "payment.nobody.charge");
    assert_eq!(parked["idempotency_key"], "order-n");
    assert!(
        parked["error"]
            .as_str()
            .unwrap()
            .starts_with("unroutable: "),
        "{parked:#}"
    );
    let garbage = items.iter().find(|d| d["id"].is_null()).unwrap();
    assert_eq!(garbage["routing_key"], "fax");
    assert_eq!(garbage["lot"], "unroutable");
    assert_eq!(cli.listed(&["--lot", "unroutable"]).await.len(), 2);
    assert!(cli.listed(&["--lot", "kind:payment"]).await.is_empty());
    assert!(cli.listed(&["--kind", "payment"]).await.is_empty());
    let table = cli.run(&["dlq", "list"]).await.ok();
    for needle in ["LOT", "unroutable", &nobody.id.to_string(), "nobody"] {
        assert!(table.stdout.contains(needle), "{needle}: {table:#?}");
    }
    let shown = cli
        .run(&["dlq", "show", &nobody.id.to_string(), "--lot", "unroutable"])
        .await
        .ok();
    assert!(
        shown.stdout.contains("switchyard.dlq.unroutable"),
        "{shown:#?}"
    );

    // A replay while still nobody serves it is refused, and the command stays parked.
    let refused = cli.run(&["dlq", "replay", &nobody.id.to_string()]).await;
    assert_eq!(refused.code, 1, "{refused:#?}");
    assert!(refused.stdout.contains("no work queue"), "{refused:#?}");
    ready_becomes(&fleet, "switchyard.dlq.unroutable", 2).await;

    // Once a worker serves it (here: its work queue, declared by hand), the replay is a new
    // run of the same command.
    let queue = "switchyard.work.payment.nobody";
    tap(&fleet, queue, "switchyard.commands", "payment.nobody.*").await;
    let replayed = cli
        .run(&["dlq", "replay", &nobody.id.to_string()])
        .await
        .ok();
    assert!(replayed.stdout.contains("replayed 1"), "{replayed:#?}");
    let (headers, message_id, body) = next_message(&fleet, queue).await;
    assert_eq!(body, nobody.to_bytes(), "the same command, byte for byte");
    assert_eq!(message_id, Some(nobody.id.to_string()));
    assert_eq!(header_int(&headers, "x-switchyard-run"), Some(1));
    assert_eq!(header_int(&headers, "x-switchyard-attempt"), None);
    for gone in [
        "x-switchyard-error-class",
        "x-switchyard-error",
        "x-switchyard-attempts",
        "x-switchyard-failed-at",
        "x-switchyard-routing-key",
    ] {
        assert_eq!(header_str(&headers, gone), None, "{gone}: {headers:?}");
    }
    assert_eq!(
        cli.listed(&["--lot", "unroutable"]).await,
        vec!["-".to_owned()]
    );
    fleet.stop().await;
}

#[tokio::test]
async fn a_replay_is_a_new_run_with_a_fresh_retry_budget() {
    let fleet = TestFleet::start().await;
    let cli = Cli::new(&fleet.config_toml);
    // Refused once (permanent), then accepted; it came through the ingress's door marker too.
    let a = refused_once(&fleet, "order-run").await;
    publish_command(
        &fleet.publisher,
        &a,
        switchyard_amqp::Headers::default().str(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
    )
    .await
    .unwrap();
    dead_letter_seen(&fleet, a.id).await;

    // See what the replay publishes, beside the worker's own queue.
    let queue = format!("test.replays.{}", Uuid::new_v4().simple());
    tap(
        &fleet,
        &queue,
        "switchyard.commands",
        "payment.sandbox.charge",
    )
    .await;
    cli.run(&["dlq", "replay", &a.id.to_string()]).await.ok();
    let (headers, message_id, body) = next_message(&fleet, &queue).await;
    assert_eq!(
        body,
        a.to_bytes(),
        "the same body: same id, same idempotency key"
    );
    assert_eq!(message_id, Some(a.id.to_string()));
    assert_eq!(
        header_int(&headers, "x-switchyard-run"),
        Some(1),
        "{headers:?}"
    );
    assert_eq!(
        header_int(&headers, "x-switchyard-attempt"),
        None,
        "a fresh retry budget: {headers:?}"
    );
    for gone in [
        "x-switchyard-error-class",
        "x-switchyard-error",
        "x-switchyard-attempts",
        "x-switchyard-failed-at",
        "x-death",
    ] {
        assert_eq!(header_str(&headers, gone), None, "{gone}: {headers:?}");
    }
    assert_eq!(
        header_str(&headers, "traceparent").as_deref(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert!(header_str(&headers, "x-switchyard-replayed-at").is_some());

    // The worker runs it again under the same provider key: one effect at the provider.
    completed(&fleet, a.id).await;
    let view = fleet.sandbox_view(a.id).await;
    one_key(&view);
    assert_eq!(view["effects"], 1, "{view:#}");
    fleet.stop().await;
}

/// Waits until `id` has a `failed` event (it is dead-lettered).
async fn dead_letter_seen(fleet: &TestFleet, id: Uuid) {
    let events = fleet.events.terminal(id, Duration::from_secs(30)).await;
    assert!(
        events.iter().any(|e| e.status == Status::Failed),
        "{events:#?}"
    );
}

/// Puts a message straight into a parking lot, as the resolver or the ledger would.
async fn park(fleet: &TestFleet, queue: &str, body: &[u8], headers: FieldTable) {
    fleet
        .publisher
        .publish(switchyard_amqp::Outgoing {
            exchange: "",
            routing_key: queue,
            body,
            properties: switchyard_amqp::lapin::BasicProperties::default()
                .with_delivery_mode(2)
                .with_headers(headers),
            mandatory: true,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn the_callbacks_and_ledger_lots_are_listed_and_replayed_where_they_came_from() {
    let fleet = TestFleet::start().await;
    let cli = Cli::new(&fleet.config_toml);
    // The ledger's dead-letter queue, as the ledger declares it.
    tap(&fleet, "switchyard.dlq.ledger", "", "").await;
    let source = format!("switchyard.ledger.test-{}", Uuid::new_v4().simple());
    tap(&fleet, &source, "", "").await;
    // A callback nobody could correlate (as the resolver parks it) ...
    park(
        &fleet,
        "switchyard.dlq.callbacks",
        br#"{"provider":"sandbox","webhook_id":"wh_1","reference":"ref_lost"}"#,
        switchyard_amqp::Headers::default()
            .str("x-switchyard-routing-key", "callbacks.in")
            .int("x-switchyard-deferrals", 30)
            .str("x-switchyard-error-class", "permanent")
            .build(),
    )
    .await;
    // ... and a record the ledger's database refused.
    park(
        &fleet,
        "switchyard.dlq.ledger",
        br#"{"event_id":"e1"}"#,
        switchyard_amqp::Headers::default()
            .str("x-switchyard-source-queue", &source)
            .str("x-switchyard-error", "database: invalid byte sequence")
            .build(),
    )
    .await;

    let listed = cli.run(&["dlq", "list", "--json"]).await.ok().json();
    let lots: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["lot"].as_str().unwrap())
        .collect();
    assert_eq!(
        sorted(lots.iter().map(|s| s.to_string()).collect()),
        vec!["callbacks", "ledger"]
    );
    let callbacks = cli
        .run(&["dlq", "list", "--lot", "callbacks", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(callbacks[0]["provider"], "sandbox", "{callbacks:#}");
    assert_eq!(callbacks[0]["routing_key"], "callbacks.in", "{callbacks:#}");
    let ledger = cli
        .run(&["dlq", "list", "--lot", "ledger", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(ledger[0]["source_queue"], source.as_str(), "{ledger:#}");

    // The callback goes back to the resolver's exchange, the record to its source queue.
    let resolver_tap = format!("test.callbacks.{}", Uuid::new_v4().simple());
    tap(
        &fleet,
        &resolver_tap,
        "switchyard.callbacks",
        "callbacks.in",
    )
    .await;
    let replayed = cli
        .run(&[
            "dlq",
            "replay",
            "--all",
            "--lot",
            "callbacks",
            "--lot",
            "ledger",
            "--json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(replayed["replayed"], 2, "{replayed:#}");
    let (headers, _, body) = next_message(&fleet, &resolver_tap).await;
    assert_eq!(
        body,
        br#"{"provider":"sandbox","webhook_id":"wh_1","reference":"ref_lost"}"#
    );
    assert_eq!(
        header_int(&headers, "x-switchyard-deferrals"),
        None,
        "{headers:?}"
    );
    assert_eq!(header_str(&headers, "x-switchyard-error-class"), None);
    assert_eq!(header_int(&headers, "x-switchyard-run"), None);
    let (headers, _, body) = next_message(&fleet, &source).await;
    assert_eq!(body, br#"{"event_id":"e1"}"#);
    assert_eq!(header_str(&headers, "x-switchyard-source-queue"), None);
    assert_eq!(header_str(&headers, "x-switchyard-error"), None);
    assert_eq!(fleet.ready("switchyard.dlq.ledger").await, 0);
    fleet.stop().await;
}

/// `topology users --apply` on the real broker: the core-app user may publish commands but
/// the broker refuses it a forged event (and the ingress user too); both bind their queues.
#[tokio::test]
async fn least_privilege_users_refuse_a_forged_event() {
    use switchyard_amqp::lapin::BasicProperties;
    use switchyard_amqp::lapin::Confirmation;
    use switchyard_amqp::lapin::options::{BasicPublishOptions, ConfirmSelectOptions};

    let fleet = TestFleet::start().await;
    let cli = Cli::new(&fleet.config_toml);
    let prefix = format!("sy-test-{}-", &Uuid::new_v4().simple().to_string()[..8]);
    let run = cli
        .command(&[
            "topology",
            "users",
            "--apply",
            "--json",
            "--user-prefix",
            &prefix,
        ])
        .env("SWITCHYARD_BROKER_PASSWORD_CORE_APP", "core-app-pw")
        .env("SWITCHYARD_BROKER_PASSWORD_INGRESS", "ingress-pw")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let users: Value = serde_json::from_str(&stdout).unwrap();
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["role"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"core-app") && names.contains(&"operator"),
        "{names:?}"
    );
    assert!(
        !stdout.contains("core-app-pw"),
        "a given password is never printed"
    );

    let url_as = |user: &str, password: &str| {
        fleet
            .vhost
            .amqp_url
            .replacen("guest:guest", &format!("{user}:{password}"), 1)
    };
    // Publishes one message as `user`; true when the broker confirmed it.
    let publish = |url: String, exchange: &'static str| async move {
        let conn = Connection::connect(&url, ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let outcome = match ch
            .basic_publish(
                exchange.into(),
                "events.payment.sandbox.completed".into(),
                BasicPublishOptions::default(),
                br#"{"forged":true}"#,
                BasicProperties::default(),
            )
            .await
        {
            Ok(confirm) => matches!(confirm.await, Ok(Confirmation::Ack(_))),
            Err(_) => false,
        };
        let _ = conn.close(0, "done".into()).await;
        outcome
    };
    let core_app = url_as(&format!("{prefix}core-app"), "core-app-pw");
    let ingress = url_as(&format!("{prefix}ingress"), "ingress-pw");
    assert!(
        !publish(core_app.clone(), "switchyard.events").await,
        "the broker refused the core app's forged event"
    );
    assert!(!publish(ingress.clone(), "switchyard.events").await);
    assert!(!publish(core_app.clone(), "switchyard.callbacks").await);
    assert!(publish(core_app.clone(), "switchyard.commands").await);
    assert!(publish(ingress.clone(), "switchyard.commands").await);

    // The core app binds a queue of its own to the events; a Switchyard queue it may not.
    let conn = Connection::connect(&core_app, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "app.events".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "app.events".into(),
        "switchyard.events".into(),
        "events.#".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    assert!(
        ch.queue_declare(
            "switchyard.work.payment.mine".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .is_err()
    );
    let _ = conn.close(0, "done".into()).await;

    // The users are the broker's, not the vhost's: removed.
    let http = reqwest::Client::new();
    for u in users.as_array().unwrap() {
        http.delete(format!(
            "{}/api/users/{}",
            management_url(),
            u["user"].as_str().unwrap()
        ))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .unwrap();
    }
    // The fleet's vhost goes with it (without this, every run left one on the broker).
    fleet.stop().await;
}
