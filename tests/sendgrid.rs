//! `notification.sendgrid.send_email` against the sandbox's SendGrid emulator, which checks
//! requests as SendGrid documents them (bearer key, JSON, personalizations, from, subject,
//! content with text/plain first).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use switchyard_amqp::HeaderRead;
use switchyard_core::{ErrorClass, Status};
use switchyard_e2e::terminal;
use switchyard_testing::TestFleet;

fn email(fleet: &TestFleet, text: Option<&str>) -> switchyard_core::Command {
    let mut payload = serde_json::json!({
        "to": ["ann@example.com", "bob@example.com"],
        "from": "shop@example.com",
        "subject": "Your order shipped",
        "html": "<p>On its way</p>",
    });
    if let Some(text) = text {
        payload["text"] = text.into();
    }
    let mut c = fleet.command("notification", "send_email", payload);
    c.provider = "sendgrid".parse().unwrap();
    c
}

#[tokio::test]
async fn emails_are_accepted_retried_on_429_and_5xx_and_refused_without_content() {
    let fleet = TestFleet::start().await;
    let ok = email(&fleet, Some("On its way"));
    let flaky = email(&fleet, Some("On its way"));
    fleet.scenario(flaky.id, &["503", "429:1"]).await;
    let html_only = email(&fleet, None);
    let mut empty = email(&fleet, None);
    empty.payload.remove("html");
    for c in [&ok, &flaky, &html_only, &empty] {
        fleet.publish(c).await;
    }

    for c in [&ok, &flaky, &html_only] {
        let events = fleet.events.terminal(c.id, Duration::from_secs(30)).await;
        let done = terminal(&events);
        assert_eq!(done.status, Status::Completed, "{events:#?}");
        let id = done.result.as_ref().unwrap()["message_id"]
            .as_str()
            .unwrap();
        assert_eq!(done.provider_reference.as_deref(), Some(id));
        let view = fleet.sandbox_view(c.id).await;
        assert_eq!(view["effects"], 1, "{view:#}");
    }
    let flaky_view = fleet.sandbox_view(flaky.id).await;
    let statuses: Vec<_> = flaky_view["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [503, 429, 202]);

    // Nothing to send: refused before SendGrid is asked, and dead-lettered as invalid.
    let events = fleet
        .events
        .terminal(empty.id, Duration::from_secs(30))
        .await;
    let failed = terminal(&events);
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(failed.error.as_ref().unwrap().class, ErrorClass::Invalid);
    let dead = fleet.dead_letters("notification").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].0.header_str("x-switchyard-error-class").as_deref(),
        Some("invalid")
    );
    fleet.stop().await;
}
