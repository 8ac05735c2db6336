//! The happy path over AMQP and over HTTP, checked on the events a subscriber receives.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::Duration;

use switchyard_core::Status;
use switchyard_e2e::{statuses, terminal};
use switchyard_testing::TestFleet;

#[tokio::test]
async fn a_command_published_over_amqp_completes() {
    let fleet = TestFleet::start().await;
    let command = fleet.charge();
    fleet.publish(&command).await;

    let events = fleet
        .events
        .terminal(command.id, Duration::from_secs(20))
        .await;
    let done = terminal(&events);
    assert_eq!(done.status, Status::Completed, "{events:#?}");
    assert_eq!(done.result.as_ref().unwrap()["status"], "succeeded");
    assert!(
        done.provider_reference
            .as_deref()
            .unwrap()
            .starts_with("sbx_")
    );
    assert_eq!(done.metadata.entries()["test"], "yes", "metadata is echoed");
    let mut seen = statuses(&events);
    seen.sort_by_key(|s| Status::ALL.iter().position(|x| x == s));
    assert_eq!(
        seen,
        vec![Status::Pending, Status::Processing, Status::Completed]
    );
    // Event ids are unique, sequence numbers increase along the lifecycle.
    let mut by_seq = events.clone();
    by_seq.sort_by_key(|e| e.seq);
    assert_eq!(
        statuses(&by_seq),
        vec![Status::Pending, Status::Processing, Status::Completed]
    );

    let view = fleet.sandbox_view(command.id).await;
    assert_eq!(view["effects"], 1);
    fleet.stop().await;
}

#[tokio::test]
async fn a_command_posted_over_http_completes_and_idempotency_keys_hold() {
    let fleet = TestFleet::start().await;
    let body = serde_json::json!({
        "kind": "shipping", "provider": "sandbox", "operation": "track",
        "payload": {"tracking_code": "EZ1000000001"},
        "idempotency_key": format!("order-{}", uuid::Uuid::new_v4()),
    });
    let r = fleet.post(&body).await;
    assert_eq!(r.status(), 202);
    let accepted: serde_json::Value = r.json().await.unwrap();
    assert_eq!(accepted["status"], "pending");
    let id: uuid::Uuid = accepted["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(accepted["status_url"], format!("/v1/commands/{id}"));

    let events = fleet.events.terminal(id, Duration::from_secs(20)).await;
    assert_eq!(terminal(&events).status, Status::Completed, "{events:#?}");
    assert!(statuses(&events).contains(&Status::Pending));
    assert!(statuses(&events).contains(&Status::Processing));

    // The same key with the same body is the same command: same id, and the provider's own
    // idempotency means no second effect.
    let again: serde_json::Value = fleet.post(&body).await.json().await.unwrap();
    assert_eq!(again["id"], accepted["id"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fleet.sandbox_view(id).await["effects"], 1);
    fleet.stop().await;
}
