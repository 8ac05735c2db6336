//! `rabbitmqctl stop_app` then `start_app` while commands flow: every component recovers by
//! itself, the ingress answers 503 while the broker is down and 202 again after, and every
//! accepted command completes. This test stops the whole broker, so it lives alone in its
//! own test binary (cargo runs test binaries one after another).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_core::Status;
use switchyard_testing::TestFleet;

fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("rabbitmqctl is needed for this test ({e}); install RabbitMQ locally")
        });
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[derive(Debug, Default)]
struct Seen {
    accepted: Vec<uuid::Uuid>,
    unavailable: usize,
    retry_after: bool,
    accepted_after_restart: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_recovers_from_a_broker_restart_and_loses_nothing() {
    let fleet = Arc::new(step("starting the fleet", 120, TestFleet::start()).await);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let restarted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let poster = {
        let (fleet, seen, restarted, stop) =
            (fleet.clone(), seen.clone(), restarted.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let body = serde_json::json!({
                    "kind": "payment", "provider": "sandbox", "operation": "charge",
                    "payload": {"amount": 500, "currency": "eur", "payment_method": "pm_card_visa"},
                });
                let r = step("a POST to the ingress", 30, fleet.post(&body)).await;
                match r.status().as_u16() {
                    202 => {
                        let id = futures_json(r).await;
                        let mut s = seen.lock().unwrap();
                        s.accepted.push(id);
                        if restarted.load(std::sync::atomic::Ordering::SeqCst) {
                            s.accepted_after_restart += 1;
                        }
                    }
                    503 => {
                        let mut s = seen.lock().unwrap();
                        s.unavailable += 1;
                        s.retry_after |= r.headers().contains_key("retry-after");
                    }
                    other => panic!("unexpected status {other}"),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::spawn_blocking(|| rabbitmqctl(&["stop_app"]))
        .await
        .unwrap();
    let down_at = Instant::now();
    while seen.lock().unwrap().unavailable == 0 {
        assert!(
            down_at.elapsed() < Duration::from_secs(30),
            "the ingress never answered 503 while the broker was down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::spawn_blocking(|| rabbitmqctl(&["start_app"]))
        .await
        .unwrap();
    restarted.store(true, std::sync::atomic::Ordering::SeqCst);
    let up_at = Instant::now();
    while seen.lock().unwrap().accepted_after_restart == 0 {
        assert!(
            up_at.elapsed() < Duration::from_secs(60),
            "the ingress never accepted again after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resumed_in = up_at.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    step("the poster's last POST", 40, poster).await.unwrap();

    let (accepted, unavailable, retry_after) = {
        let s = seen.lock().unwrap();
        (s.accepted.clone(), s.unavailable, s.retry_after)
    };
    assert!(retry_after, "503 answers carry Retry-After");
    // One deadline for all: a fleet that lost its way fails in a minute, not a minute per
    // command.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lost = Vec::new();
    for id in &accepted {
        loop {
            if fleet
                .events
                .of(*id)
                .iter()
                .any(|e| e.status == Status::Completed)
            {
                break;
            }
            if Instant::now() > deadline {
                lost.push(*id);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!(
        "broker restart: accepted {}, refused with 503 {unavailable}, ingress accepting again {resumed_in:?} after start_app, lost {}",
        accepted.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "accepted commands never completed: {lost:?}"
    );
    match Arc::try_unwrap(fleet) {
        Ok(f) => step("stopping the fleet", 90, f.stop()).await,
        Err(_) => panic!("fleet still shared"),
    }
}

/// Runs one step of the test within `secs`, or fails naming the step: a hang anywhere shows
/// up as a failure that says where, not as a test that never ends.
async fn step<T>(name: &str, secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("{name} did not finish within {secs} s"))
}

async fn futures_json(r: reqwest::Response) -> uuid::Uuid {
    let v: serde_json::Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().parse().unwrap()
}
