//! `notification.{webhook provider}.send_webhook`: a Standard-Webhooks-signed delivery to a
//! partner, verified there, retried like any provider call with one webhook id and one body,
//! dead-lettered when the partner refuses it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use switchyard_core::{ErrorClass, Status};
use switchyard_e2e::terminal;
use switchyard_testing::{TestFleet, WEBHOOK_PROVIDER};

fn delivery(fleet: &TestFleet, partner: &str) -> switchyard_core::Command {
    let mut c = fleet.command(
        "notification",
        "send_webhook",
        serde_json::json!({
            "url": fleet.sandbox.partner_url(partner),
            "event_type": "order.shipped",
            "data": {"order": "42", "carrier": "ups"},
        }),
    );
    c.provider = WEBHOOK_PROVIDER.parse().unwrap();
    c
}

#[tokio::test]
async fn signed_webhooks_are_verified_retried_with_one_id_and_refusals_dead_lettered() {
    let fleet = TestFleet::start().await;
    let flaky = delivery(&fleet, "acme");
    fleet.scenario(flaky.id, &["503", "429:1"]).await;
    let refused = delivery(&fleet, "acme");
    fleet.scenario(refused.id, &["400"]).await;
    let plain = delivery(&fleet, "globex");
    for c in [&flaky, &refused, &plain] {
        fleet.publish(c).await;
    }

    for c in [&flaky, &plain] {
        let events = fleet.events.terminal(c.id, Duration::from_secs(30)).await;
        let done = terminal(&events);
        assert_eq!(done.status, Status::Completed, "{events:#?}");
        let id = done.provider_reference.clone().unwrap();
        assert!(id.starts_with("msg_"), "{id}");
        let view = fleet.sandbox_view(c.id).await;
        assert_eq!(view["effects"], 1, "{view:#}");
        let requests = view["requests"].as_array().unwrap();
        // Every attempt passed the partner's signature check (a 401 would have ended it)
        // and carried the same webhook id and the same bytes.
        for r in requests {
            assert_eq!(r["headers"]["webhook-id"], id.as_str(), "{view:#}");
            assert_eq!(r["body_sha256"], requests[0]["body_sha256"], "{view:#}");
        }
    }
    let flaky_requests = fleet.sandbox_view(flaky.id).await["requests"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(flaky_requests, 3, "503, 429, then delivered");

    let events = fleet
        .events
        .terminal(refused.id, Duration::from_secs(30))
        .await;
    let failed = terminal(&events);
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(failed.error.as_ref().unwrap().class, ErrorClass::Permanent);
    assert_eq!(fleet.dead_letters("notification").await.len(), 1);
    fleet.stop().await;
}
