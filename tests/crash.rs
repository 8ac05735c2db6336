//! A worker killed with SIGKILL mid-flight: nothing is lost, the redelivered commands
//! complete, and no provider effect happens twice.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use switchyard_core::Status;
use switchyard_e2e::{binary, terminal};
use switchyard_testing::{TestFleet, TestFleetOptions};
use tokio::process::{Child, Command};

fn spawn_worker(config: &std::path::Path) -> Child {
    Command::new(binary("switchyard-payment"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn a_worker_killed_mid_flight_loses_nothing_and_duplicates_no_effect() {
    let fleet = TestFleet::start_with(TestFleetOptions {
        in_process: false,
        timeout_ms: 5_000,
        ..Default::default()
    })
    .await;
    let dir = std::env::temp_dir().join(format!(
        "switchyard-crash-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("switchyard.toml");
    std::fs::write(&config, &fleet.config_toml).unwrap();

    let mut worker = spawn_worker(&config);
    // Wait for the worker's topology (its work queue) before publishing.
    fleet
        .wait_for_queue("switchyard.work.payment.sandbox")
        .await;

    let commands: Vec<_> = (0..20).map(|_| fleet.charge()).collect();
    for c in &commands {
        // Slow enough that the kill lands while calls are in flight.
        fleet.scenario(c.id, &["slow:1500"]).await;
        fleet.publish(c).await;
    }
    // Kill as soon as work is in flight.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !commands.iter().any(|c| {
        fleet
            .events
            .of(c.id)
            .iter()
            .any(|e| e.status == Status::Processing)
    }) {
        assert!(Instant::now() < deadline, "no command started processing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.start_kill().unwrap(); // SIGKILL
    let _ = worker.wait().await;
    let finished_before_kill = commands
        .iter()
        .filter(|c| fleet.events.of(c.id).iter().any(|e| e.status.is_terminal()))
        .count();
    assert!(
        finished_before_kill < commands.len(),
        "the kill must land mid-flight"
    );

    let mut replacement = spawn_worker(&config);
    for c in &commands {
        let events = fleet.events.terminal(c.id, Duration::from_secs(60)).await;
        let done = events.iter().find(|e| e.status.is_terminal()).unwrap();
        assert_eq!(done.status, Status::Completed, "{events:#?}");
        let view = fleet.sandbox_view(c.id).await;
        assert_eq!(
            view["effects"], 1,
            "one effect per idempotency key: {view:#}"
        );
    }
    // Redelivery may replay an outcome (same event id); no command has two different
    // terminal events.
    for c in &commands {
        let events = fleet.events.of(c.id);
        let ids: std::collections::HashSet<_> = events
            .iter()
            .filter(|e| e.status.is_terminal())
            .map(|e| e.event_id)
            .collect();
        assert_eq!(ids.len(), 1, "{events:#?}");
        let mut unique = events.clone();
        unique.dedup_by_key(|e| e.event_id);
        let _ = terminal(
            &unique
                .into_iter()
                .filter(|e| ids.contains(&e.event_id) || !e.status.is_terminal())
                .collect::<Vec<_>>(),
        );
    }
    replacement.start_kill().unwrap();
    let _ = replacement.wait().await;
    let _ = std::fs::remove_dir_all(dir);
    fleet.stop().await;
}

#[tokio::test]
async fn sigterm_stops_consuming_and_finishes_in_flight_work() {
    let fleet = TestFleet::start_with(TestFleetOptions {
        in_process: false,
        timeout_ms: 5_000,
        ..Default::default()
    })
    .await;
    let dir =
        std::env::temp_dir().join(format!("switchyard-term-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("switchyard.toml");
    std::fs::write(&config, &fleet.config_toml).unwrap();
    let mut worker = spawn_worker(&config);
    let deadline = Instant::now() + Duration::from_secs(30);
    while fleet
        .vhost
        .queue_messages("switchyard.work.payment.sandbox")
        .await
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the worker never declared its queue"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let commands: Vec<_> = (0..5).map(|_| fleet.charge()).collect();
    for c in &commands {
        fleet.scenario(c.id, &["slow:1000"]).await;
        fleet.publish(c).await;
    }
    while !commands.iter().all(|c| {
        fleet
            .events
            .of(c.id)
            .iter()
            .any(|e| e.status == Status::Processing)
    }) {
        assert!(Instant::now() < deadline, "commands did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = worker.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exited = tokio::time::timeout(Duration::from_secs(10), worker.wait()).await;
    assert!(
        exited
            .expect("the worker exits within its grace period")
            .unwrap()
            .success()
    );
    // Every in-flight command was finished and reported before the worker exited.
    for c in &commands {
        let events = fleet.events.terminal(c.id, Duration::from_secs(5)).await;
        assert_eq!(terminal(&events).status, Status::Completed, "{events:#?}");
    }
    let _ = std::fs::remove_dir_all(dir);
    fleet.stop().await;
}
