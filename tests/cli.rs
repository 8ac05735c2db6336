//! The operator CLI, run as the real `switchyard` binary against a fleet in its own vhost:
//! `dlq list|show|replay|purge`, `status`, `tail`, `topology check`, and its exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_amqp::lapin::options::QueueDeclareOptions;
use switchyard_amqp::lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use switchyard_amqp::lapin::{Connection, ConnectionProperties};
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

/// The messages ready in `queue` right now (a passive declare: exact, unlike the management
/// API's periodic statistics).
async fn ready(fleet: &TestFleet, queue: &str) -> u32 {
    let session = fleet.broker.session().await.unwrap();
    let ch = session.connection.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = ch.close(200, "counted".into()).await;
    q.message_count()
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
        ready(&fleet, "switchyard.dlq.payment").await,
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
    assert_eq!(ready(&fleet, "switchyard.dlq.payment").await, 3);
    fleet.stop().await;
}

#[tokio::test]
async fn replay_keeps_the_id_and_idempotency_key_and_purge_deletes() {
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
    assert_eq!(ready(&fleet, dlq).await, 3);
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
    assert_eq!(done.attempt, 2, "the attempt count continues: {events:#?}");
    let failed = events.iter().find(|e| e.status == Status::Failed).unwrap();
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
    assert_eq!(ready(&fleet, dlq).await, 2);
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
