//! Long-running integrations: `waiting` ended by a verified webhook (also when the callback
//! overtakes the worker), by polling a provider without callbacks, by the deadline, never
//! twice; bad signatures refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use switchyard_amqp::HeaderRead;
use switchyard_core::{ErrorClass, Status};
use switchyard_e2e::{statuses, terminal};
use switchyard_testing::{POLLED_PROVIDER, TestFleet, WEBHOOK_SECRET};
use switchyard_webhooks::StandardWebhooks;

/// Signs and posts a generic callback to the fleet's ingress.
async fn post_webhook(
    fleet: &TestFleet,
    id: &str,
    timestamp: i64,
    body: &serde_json::Value,
) -> reqwest::Response {
    let body = body.to_string();
    let signer = StandardWebhooks::new(WEBHOOK_SECRET).unwrap();
    fleet
        .http()
        .post(format!("{}/v1/webhooks/sandbox", fleet.ingress_url()))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            signer.sign(id, timestamp, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn waiting_ends_by_webhook_even_when_the_callback_comes_first() {
    let fleet = TestFleet::start().await;
    let later = fleet.command("shipping", "create_label", shipping_payload());
    fleet.scenario(later.id, &["accept"]).await;
    let early = fleet.command("shipping", "create_label", shipping_payload());
    fleet.scenario(early.id, &["accept:early"]).await;
    let failing = fleet.command("shipping", "create_label", shipping_payload());
    fleet.scenario(failing.id, &["accept:fail"]).await;
    for c in [&later, &early, &failing] {
        fleet.publish(c).await;
    }

    for c in [&later, &early] {
        let events = fleet.events.terminal(c.id, Duration::from_secs(30)).await;
        let done = terminal(&events);
        assert_eq!(done.status, Status::Completed, "{events:#?}");
        assert!(statuses(&events).contains(&Status::Waiting), "{events:#?}");
        let waiting = events.iter().find(|e| e.status == Status::Waiting).unwrap();
        assert!(done.seq > waiting.seq);
        assert_eq!(done.provider_reference, waiting.provider_reference);
        assert_eq!(done.result.as_ref().unwrap()["status"], "succeeded");
        assert_eq!(fleet.sandbox_view(c.id).await["effects"], 1);
    }
    let events = fleet
        .events
        .terminal(failing.id, Duration::from_secs(30))
        .await;
    let failed = terminal(&events);
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(failed.error.as_ref().unwrap().class, ErrorClass::Permanent);
    let dead = fleet.dead_letters("shipping").await;
    assert_eq!(dead.len(), 1, "the failed command is dead-lettered once");
    assert_eq!(
        dead[0].0.header_str("x-switchyard-error-class").as_deref(),
        Some("permanent")
    );
    fleet.stop().await;
}

#[tokio::test]
async fn a_webhook_id_has_one_effect_and_nothing_follows_the_end() {
    let fleet = TestFleet::start().await;
    let c = fleet.command("shipping", "create_label", shipping_payload());
    fleet.scenario(c.id, &["accept:silent"]).await;
    fleet.publish(&c).await;
    let reference = wait_for_reference(&fleet, c.id).await;

    let now = chrono::Utc::now().timestamp();
    let failed =
        serde_json::json!({"reference": reference, "status": "failed", "error": "lost parcel"});
    let ok = serde_json::json!({"reference": reference, "status": "succeeded", "result": {"label": "L1"}});
    // The same delivery three times, then a different verdict under a new id.
    for _ in 0..3 {
        let r = post_webhook(&fleet, "msg_dup_1", now, &ok).await;
        assert_eq!(r.status(), 204);
    }
    assert_eq!(
        post_webhook(&fleet, "msg_dup_2", now, &failed)
            .await
            .status(),
        204
    );

    let events = fleet.events.terminal(c.id, Duration::from_secs(30)).await;
    assert_eq!(terminal(&events).status, Status::Completed);
    assert_eq!(terminal(&events).result.as_ref().unwrap()["label"], "L1");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = fleet.events.of(c.id);
    assert_eq!(
        events.iter().filter(|e| e.status.is_terminal()).count(),
        1,
        "one terminal event: {events:#?}"
    );
    assert!(fleet.dead_letters("shipping").await.is_empty());
    fleet.stop().await;
}

#[tokio::test]
async fn a_command_still_waiting_at_its_deadline_expires() {
    let fleet = TestFleet::start().await;
    let mut c = fleet.command("shipping", "create_label", shipping_payload());
    c.deadline = Some(chrono::Utc::now() + chrono::Duration::seconds(3));
    fleet.scenario(c.id, &["accept:silent"]).await;
    fleet.publish(&c).await;

    let events = fleet.events.terminal(c.id, Duration::from_secs(30)).await;
    let end = terminal(&events);
    assert_eq!(end.status, Status::Failed, "{events:#?}");
    assert_eq!(end.error.as_ref().unwrap().class, ErrorClass::Expired);
    assert!(statuses(&events).contains(&Status::Waiting));
    assert!(end.occurred_at >= c.deadline.unwrap());
    let dead = fleet.dead_letters("shipping").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].0.header_str("x-switchyard-error-class").as_deref(),
        Some("expired")
    );
    // A callback after the end changes nothing.
    let reference = end_reference(&events);
    let late = serde_json::json!({"reference": reference, "status": "succeeded", "result": {}});
    let now = chrono::Utc::now().timestamp();
    assert_eq!(
        post_webhook(&fleet, "msg_late", now, &late).await.status(),
        204
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        fleet
            .events
            .of(c.id)
            .iter()
            .filter(|e| e.status.is_terminal())
            .count(),
        1
    );
    fleet.stop().await;
}

#[tokio::test]
async fn a_provider_without_callbacks_is_polled_to_the_end() {
    let fleet = TestFleet::start().await;
    let polled = |fleet: &TestFleet| {
        let mut c = fleet.command("shipping", "create_label", shipping_payload());
        c.provider = POLLED_PROVIDER.parse().unwrap();
        c
    };
    let ok = polled(&fleet);
    let failing = polled(&fleet);
    fleet.scenario(failing.id, &["accept:fail"]).await;
    let mut endless = polled(&fleet);
    endless.deadline = Some(chrono::Utc::now() + chrono::Duration::seconds(4));
    fleet.scenario(endless.id, &["accept:silent"]).await;
    // The first two checks fail: 503, then 429 asking for a second's pause.
    let flaky = polled(&fleet);
    fleet.scenario(flaky.id, &["accept", "503", "429:1"]).await;
    for c in [&ok, &failing, &endless, &flaky] {
        fleet.publish(c).await;
    }

    let events = fleet.events.terminal(ok.id, Duration::from_secs(30)).await;
    let done = terminal(&events);
    assert_eq!(done.status, Status::Completed, "{events:#?}");
    assert!(statuses(&events).contains(&Status::Waiting), "{events:#?}");
    assert_eq!(done.result.as_ref().unwrap()["status"], "succeeded");
    assert_eq!(
        done.provider_reference.as_deref(),
        Some(end_reference(&events).as_str())
    );
    let view = fleet.sandbox_view(ok.id).await;
    assert_eq!(view["effects"], 1);
    assert!(view["status_checks"].as_u64().unwrap() >= 1, "{view:#}");

    let events = fleet
        .events
        .terminal(failing.id, Duration::from_secs(30))
        .await;
    let failed = terminal(&events);
    assert_eq!(failed.status, Status::Failed, "{events:#?}");
    assert_eq!(failed.error.as_ref().unwrap().class, ErrorClass::Permanent);

    // Pending answers keep it waiting, with checks backing off, until the deadline ends it.
    let events = fleet
        .events
        .terminal(endless.id, Duration::from_secs(30))
        .await;
    let end = terminal(&events);
    assert_eq!(end.status, Status::Failed, "{events:#?}");
    assert_eq!(end.error.as_ref().unwrap().class, ErrorClass::Expired);
    assert!(end.occurred_at >= endless.deadline.unwrap());
    let checks = fleet.sandbox_view(endless.id).await["status_checks"]
        .as_u64()
        .unwrap();
    assert!(checks >= 2, "checked {checks} times in four seconds");
    // Checks were spaced out by backoff, not a busy loop.
    assert!(checks <= 15, "checked {checks} times in four seconds");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = fleet.sandbox_view(endless.id).await["status_checks"]
        .as_u64()
        .unwrap();
    assert!(
        later <= checks + 1,
        "checks go on after the end: {checks} then {later}"
    );

    let events = fleet
        .events
        .terminal(flaky.id, Duration::from_secs(30))
        .await;
    assert_eq!(terminal(&events).status, Status::Completed, "{events:#?}");
    let checks = checks_in_ledger(&fleet, flaky.id, 3).await;
    let statuses: Vec<_> = checks.iter().map(|c| c["status"].as_u64()).collect();
    assert_eq!(
        &statuses[..3],
        &[Some(503), Some(429), Some(200)],
        "{checks:#?}"
    );
    let at = |i: usize| {
        chrono::DateTime::parse_from_rfc3339(checks[i]["started_at"].as_str().unwrap()).unwrap()
    };
    assert!(
        at(2) - at(1) >= chrono::Duration::seconds(1),
        "Retry-After: 1 honoured: {} then {}",
        at(1),
        at(2)
    );

    let dead = fleet.dead_letters("shipping").await;
    let classes: Vec<_> = dead
        .iter()
        .map(|(d, _)| d.header_str("x-switchyard-error-class").unwrap())
        .collect();
    assert_eq!(dead.len(), 2, "{classes:?}");
    assert!(classes.contains(&"permanent".to_owned()) && classes.contains(&"expired".to_owned()));
    fleet.stop().await;
}

/// A status check that fails on its own account (401: the credentials are refused; 403: the
/// key may not read it) says nothing of the operation, which the provider accepted and may well
/// finish. It ended the command `failed` (class permanent) at the first such answer; it is
/// checked again, and here the third check sees it succeed.
#[tokio::test]
async fn a_status_check_refused_by_the_provider_does_not_fail_the_command() {
    let fleet = TestFleet::start().await;
    let mut c = fleet.command("shipping", "create_label", shipping_payload());
    c.provider = POLLED_PROVIDER.parse().unwrap();
    fleet.scenario(c.id, &["accept", "401", "403"]).await;
    fleet.publish(&c).await;

    let events = fleet.events.terminal(c.id, Duration::from_secs(30)).await;
    assert_eq!(terminal(&events).status, Status::Completed, "{events:#?}");
    let checks = checks_in_ledger(&fleet, c.id, 3).await;
    let statuses: Vec<_> = checks.iter().map(|c| c["status"].as_u64()).collect();
    assert_eq!(
        &statuses[..3],
        &[Some(401), Some(403), Some(200)],
        "{checks:#?}"
    );
    assert_eq!(fleet.sandbox_view(c.id).await["effects"], 1);
    assert!(fleet.dead_letters("shipping").await.is_empty());
    fleet.stop().await;
}

/// A replay of a polled command (run 1) counts its status checks from 1 again. A terminal
/// answer went to the resolver as `check.{id}.{attempt}.{number}`, the id run 0's own answer
/// had had: the resolver took it for that webhook again, and run 1 waited until its deadline
/// expired it, whatever the provider said. The id names the run now.
#[tokio::test]
async fn a_replayed_polled_command_is_ended_by_its_own_status_check() {
    let fleet = TestFleet::start().await;
    let mut c = fleet.command("shipping", "create_label", shipping_payload());
    c.provider = POLLED_PROVIDER.parse().unwrap();
    c.deadline = Some(chrono::Utc::now() + chrono::Duration::seconds(20));
    fleet.scenario(c.id, &["accept:fail"]).await;
    fleet.publish(&c).await;
    let events = fleet.events.terminal(c.id, Duration::from_secs(30)).await;
    let first = terminal(&events);
    assert_eq!(first.status, Status::Failed, "{events:#?}");
    assert_eq!(first.error.as_ref().unwrap().class, ErrorClass::Permanent);

    // Run 1's terminal answer comes at the check number run 0's came at: its first checks
    // answer 503 (checked again), then the provider's state, the same failure.
    let checks = fleet.sandbox_view(c.id).await["status_checks"]
        .as_u64()
        .unwrap() as usize;
    let mut steps = vec!["ok"];
    steps.extend(std::iter::repeat_n("503", checks - 1));
    fleet.scenario(c.id, &steps).await;

    // The replay, as `switchyard dlq replay` publishes it: the same command, run 1.
    switchyard_amqp::messages::publish_command(
        &fleet.publisher,
        &c,
        switchyard_amqp::Headers::default().int("x-switchyard-run", 1),
    )
    .await
    .unwrap();
    let run_ended = |e: &switchyard_core::Event| e.run == 1 && e.status.is_terminal();
    let events = fleet
        .events
        .until(c.id, "run 1's end", Duration::from_secs(40), run_ended)
        .await;
    let end = events.into_iter().find(run_ended).unwrap();
    assert_ne!(
        end.error.as_ref().map(|e| e.class),
        Some(ErrorClass::Expired),
        "run 1 ended by its deadline, not by its status check: {end:#?}"
    );
    assert!(
        end.occurred_at < c.deadline.unwrap(),
        "ended at {} by the check, before the deadline",
        end.occurred_at
    );
    fleet.stop().await;
}

#[tokio::test]
async fn bad_signatures_stale_timestamps_and_large_bodies_are_refused() {
    let fleet = TestFleet::start().await;
    let body = serde_json::json!({"reference": "sbx_x", "status": "succeeded", "result": {}});
    let now = chrono::Utc::now().timestamp();
    let url = format!("{}/v1/webhooks/sandbox", fleet.ingress_url());

    // Ten minutes old, correctly signed.
    assert_eq!(
        post_webhook(&fleet, "msg_old", now - 600, &body)
            .await
            .status(),
        401
    );
    // Signed with another key.
    let other = StandardWebhooks::new("whsec_dGhpcyBpcyBub3QgdGhlIHJpZ2h0IGtleQ==").unwrap();
    let text = body.to_string();
    let forged = fleet
        .http()
        .post(&url)
        .header("webhook-id", "msg_forged")
        .header("webhook-timestamp", now.to_string())
        .header(
            "webhook-signature",
            other.sign("msg_forged", now, text.as_bytes()),
        )
        .body(text.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let problem: serde_json::Value = forged.json().await.unwrap();
    assert_eq!(problem["status"], 401);
    // Empty signature.
    let empty = fleet
        .http()
        .post(&url)
        .header("webhook-id", "msg_empty")
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", "")
        .body(text.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), 401);
    // Over the limit.
    let big = fleet
        .http()
        .post(&url)
        .body(vec![b' '; 256 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    // A provider that takes no webhooks.
    let unknown = fleet
        .http()
        .post(format!("{}/v1/webhooks/nobody", fleet.ingress_url()))
        .body(text)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    fleet.stop().await;
}

fn shipping_payload() -> serde_json::Value {
    serde_json::json!({
        "from": {"name": "Shop", "street1": "1 Main St", "city": "Springfield", "zip": "12345", "country": "US"},
        "to": {"name": "Ann", "street1": "2 Oak Ave", "city": "Shelbyville", "zip": "54321", "country": "US"},
        "parcel": {"weight_grams": 500, "length_cm": 20, "width_cm": 10, "height_cm": 5},
        "rate": {"rule": "cheapest"}
    })
}

fn end_reference(events: &[switchyard_core::Event]) -> String {
    events
        .iter()
        .find_map(|e| e.provider_reference.clone())
        .unwrap()
}

async fn wait_for_reference(fleet: &TestFleet, id: uuid::Uuid) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(r) = fleet
            .events
            .of(id)
            .iter()
            .find_map(|e| e.provider_reference.clone())
        {
            return r;
        }
        assert!(tokio::time::Instant::now() < deadline, "never waiting");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status checks (GETs) the ledger recorded for a command, oldest first, once there are
/// at least `n`.
async fn checks_in_ledger(fleet: &TestFleet, id: uuid::Uuid, n: usize) -> Vec<serde_json::Value> {
    let gets = |view: &serde_json::Value| -> Vec<serde_json::Value> {
        view["attempts"]
            .as_array()
            .map(|a| a.iter().filter(|r| r["method"] == "GET").cloned().collect())
            .unwrap_or_default()
    };
    let view = fleet.ledger_view_when(id, |v| gets(v).len() >= n).await;
    gets(&view)
}
