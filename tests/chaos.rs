//! Chaos: thousands of commands, half to an idempotent provider and half to one that takes no
//! idempotency key, while the payment worker is SIGKILLed every 2-3 s, fault points fire at
//! random inside it, and the broker restarts once. The checker then demands, for every
//! command: a terminal event (lost = 0), at most one provider effect counted per command
//! (duplicated effects = 0), exactly one terminal event per run, and the ledger's status equal
//! to the status of the highest-`seq` event.
//!
//! `./dev test` runs a short version (SWITCHYARD_CHAOS_COMMANDS, default 600);
//! `./dev chaos` runs 5,000 and prints the figures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use switchyard_amqp::messages::publish_command;
use switchyard_amqp::{HeaderRead, Headers};
use switchyard_core::{Command, Status};
use switchyard_e2e::binary;
use switchyard_testing::{ONESHOT_PROVIDER, TestFleet, TestFleetOptions};
use tokio::process::{Child, Command as Process};

/// Every worker fault point, each firing rarely: with the SIGKILLs, a crash every second or so.
const FAULTS: &str = "after_begin:0.0005,after_provider_answer:0.0005,after_decide:0.0005,\
    after_retry_publish:0.002,after_dead_letter_publish:0.002,after_wait_publish:0.002,\
    after_terminal_event:0.0005,before_ack:0.0005";

/// The payment worker; with its fault points armed during the chaos, without them after.
fn spawn_worker(config: &Path, faults: bool) -> Child {
    let mut cmd = Process::new(binary("switchyard-payment"));
    cmd.arg("--config")
        .arg(config)
        .env("RUST_LOG", "error")
        .env_remove("SWITCHYARD_FAULTS")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if faults {
        cmd.env("SWITCHYARD_FAULTS", FAULTS);
    }
    cmd.spawn().unwrap()
}

fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("rabbitmqctl is needed for this test ({e}); install RabbitMQ"));
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn chaos_every_command_one_outcome_per_run_and_one_effect() {
    let n: usize = std::env::var("SWITCHYARD_CHAOS_COMMANDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let fleet = TestFleet::start_with(TestFleetOptions {
        in_process: false,
        timeout_ms: 5_000,
        max_attempts: 8,
        // The crash-loop guard counts every return to the queue, and here every kill (about
        // fifteen in the chaos) and the broker's restart return whatever the worker held,
        // begun or not. With the default of 5, a CI run on a slow machine (2026-12-03) lost 21
        // commands, each seen delivered five times (every delivery cut short, around the
        // restart and by kills) and never again: the guard's work. Such a command now ends
        // `failed` (`delivery_limit`) without having run (the abandoned queue; tests/faults.rs
        // shows it), which is an outcome but not what this test is about: RabbitMQ 4's own
        // default of 20 keeps kills from becoming failures (docs/operations.md, "The
        // crash-loop guard").
        delivery_limit: 20,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(&config, &fleet.config_toml).unwrap();
    let mut ledger = Process::new(binary("switchyard-ledger"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // The supervisor: a worker always runs, killed every 2-3 s while the chaos lasts (and
    // aborting by itself at its fault points); then one runs in peace to finish the work.
    let chaos = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicU64::new(0));
    let aborts = Arc::new(AtomicU64::new(0));
    let supervisor = {
        let (config, chaos, stop, kills, aborts) = (
            config.clone(),
            chaos.clone(),
            stop.clone(),
            kills.clone(),
            aborts.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let calm = !chaos.load(Ordering::SeqCst);
                let mut worker = spawn_worker(&config, !calm);
                let life = Duration::from_millis(rand::rng().random_range(2_000..3_000));
                let born = Instant::now();
                loop {
                    if let Ok(Some(_)) = worker.try_wait() {
                        // Aborted at a fault point.
                        aborts.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    let mode_changed = calm == chaos.load(Ordering::SeqCst);
                    let due = !calm && born.elapsed() >= life;
                    if stop.load(Ordering::SeqCst) || mode_changed || due {
                        let _ = worker.start_kill(); // SIGKILL
                        let _ = worker.wait().await;
                        if due {
                            kills.fetch_add(1, Ordering::SeqCst);
                        }
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        })
    };
    fleet
        .wait_for_queue("switchyard.work.payment.sandbox")
        .await;

    let started = Instant::now();
    let mut commands: Vec<Command> = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = fleet.charge();
        if i % 2 == 1 {
            c.provider = ONESHOT_PROVIDER.parse().unwrap();
        }
        if i % 10 == 0 {
            fleet.scenario(c.id, &["503", "503", "ok"]).await;
        }
        commands.push(c);
    }
    let restart_at = n / 2;
    let mut restarted_in = None;
    for (i, c) in commands.iter().enumerate() {
        if i == restart_at {
            let t = Instant::now();
            rabbitmqctl(&["stop_app"]);
            tokio::time::sleep(Duration::from_secs(2)).await;
            rabbitmqctl(&["start_app"]);
            restarted_in = Some(t.elapsed());
        }
        // A core app retries a publish the broker did not confirm (same command, same id).
        let t = Instant::now();
        while publish_command(&fleet.publisher, c, Headers::default())
            .await
            .is_err()
        {
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "the broker never came back"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let published_in = started.elapsed();

    // Chaos until everything published has had a fair chance, then calm to finish.
    let chaos_until = Instant::now() + Duration::from_secs(if n > 2_000 { 30 } else { 10 });
    while Instant::now() < chaos_until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    chaos.store(false, Ordering::SeqCst);
    let drain_deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done = commands
            .iter()
            .filter(|c| fleet.events.of(c.id).iter().any(|e| e.status.is_terminal()))
            .count();
        if done == n || Instant::now() > drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed();
    // A little longer: anything that would wrongly follow a terminal event arrives now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    supervisor.await.unwrap();

    // The checker.
    let ids: HashSet<_> = commands.iter().map(|c| c.id).collect();
    let mut lost = Vec::new();
    let mut two_outcomes = Vec::new();
    let mut by_status: HashMap<Status, usize> = HashMap::new();
    let mut latest = HashMap::new();
    for c in &commands {
        let events = fleet.events.of(c.id);
        let mut terminals_per_run: HashMap<u32, HashSet<uuid::Uuid>> = HashMap::new();
        for e in events.iter().filter(|e| e.status.is_terminal()) {
            terminals_per_run
                .entry(e.run)
                .or_default()
                .insert(e.event_id);
        }
        if terminals_per_run.is_empty() {
            lost.push((c.id, events.clone()));
        }
        if terminals_per_run.values().any(|t| t.len() > 1) {
            two_outcomes.push((c.id, events.clone()));
        }
        if let Some(top) = events.iter().max_by_key(|e| e.seq) {
            *by_status.entry(top.status).or_default() += 1;
            latest.insert(c.id, top.status);
        }
    }
    let mut duplicated = Vec::new();
    for c in &commands {
        let view = fleet.sandbox_view(c.id).await;
        if view["effects"].as_u64().unwrap_or(0) > 1 {
            duplicated.push((c.id, c.provider.to_string(), view));
        }
    }
    let unexpected = fleet
        .events
        .ids()
        .into_iter()
        .filter(|id| !ids.contains(id))
        .count();
    // The ledger agrees with the highest-seq event of every command (given time to catch up).
    let store = switchyard_ledger::Store::connect(fleet.config.ledger.database_url.expose())
        .await
        .unwrap();
    let mut disagree = Vec::new();
    let ledger_deadline = Instant::now() + Duration::from_secs(60);
    for (id, status) in &latest {
        loop {
            let seen = store
                .command(*id)
                .await
                .unwrap()
                .and_then(|v| v.summary)
                .map(|s| s.status);
            if seen == Some(*status) {
                break;
            }
            if Instant::now() > ledger_deadline {
                disagree.push((*id, *status, seen));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Where a lost command went: the dead-letter queue, and the broker's reason when the broker
    // put it there (`delivery_limit`: returned to the queue past the crash-loop guard).
    let mut parked: HashMap<uuid::Uuid, String> = HashMap::new();
    for (headers, body) in fleet.dead_letters("payment").await {
        let Ok(c) = serde_json::from_slice::<Command>(&body) else {
            continue;
        };
        let reason = switchyard_cli::dlq::broker_death_reason(&headers).map_or_else(
            || {
                headers
                    .header_str("x-switchyard-error-class")
                    .unwrap_or_default()
            },
            |r| format!("broker:{r}"),
        );
        parked.insert(c.id, reason);
    }
    let mut lost_to: HashMap<String, usize> = HashMap::new();
    for (id, _) in &lost {
        let place = parked
            .get(id)
            .map_or_else(|| "nowhere".to_owned(), |r| format!("dead-lettered ({r})"));
        *lost_to.entry(place).or_default() += 1;
    }
    eprintln!(
        "chaos: {n} commands ({} idempotent, {} without keys), published in {:.1} s, all settled in \
         {:.1} s; worker SIGKILLs {}, fault-point aborts {}, broker restart {:?}; \
         outcomes {by_status:?}; lost {}, duplicated effects {}, two terminal events in a run {}, \
         unexpected {unexpected}, ledger disagreeing {}; the lost: {lost_to:?}",
        n - n / 2,
        n / 2,
        published_in.as_secs_f64(),
        elapsed.as_secs_f64(),
        kills.load(Ordering::SeqCst),
        aborts.load(Ordering::SeqCst),
        restarted_in,
        lost.len(),
        duplicated.len(),
        two_outcomes.len(),
        disagree.len(),
    );
    assert!(
        lost.is_empty(),
        "lost: {:#?}",
        lost.iter().take(3).collect::<Vec<_>>()
    );
    assert!(
        duplicated.is_empty(),
        "duplicated effects: {:#?}",
        duplicated.iter().take(3).collect::<Vec<_>>()
    );
    assert!(
        two_outcomes.is_empty(),
        "two outcomes in a run: {:#?}",
        two_outcomes.iter().take(3).collect::<Vec<_>>()
    );
    assert_eq!(unexpected, 0, "events for commands never sent");
    assert!(
        disagree.is_empty(),
        "ledger disagrees: {:#?}",
        disagree.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        kills.load(Ordering::SeqCst) > 0,
        "the chaos must have killed workers"
    );

    store.close().await;
    ledger.start_kill().unwrap();
    let _ = ledger.wait().await;
    fleet.stop().await;
}
