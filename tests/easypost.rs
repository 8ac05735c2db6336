//! `shipping.easypost.*` against the sandbox's EasyPost emulator: labels bought by rate rule,
//! exactly once even when an answer is lost; tracking ended by EasyPost's signed
//! `tracker.updated` Events at `/v1/webhooks/easypost`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_core::{Command, ErrorClass, Status};
use switchyard_e2e::{statuses, terminal};
use switchyard_testing::{TestFleet, WEBHOOK_SECRET};
use switchyard_webhooks::HmacHexSignature;

fn command(fleet: &TestFleet, operation: &str, payload: Value) -> Command {
    let mut c = fleet.command("shipping", operation, payload);
    c.provider = "easypost".parse().unwrap();
    c
}

fn label(fleet: &TestFleet, rate: Value) -> Command {
    let address = |name: &str| {
        json!({"name": name, "street1": "417 Montgomery St", "city": "San Francisco",
               "state": "CA", "zip": "94104", "country": "US"})
    };
    command(
        fleet,
        "create_label",
        json!({
            "from": address("Shop"), "to": address("Ann"),
            "parcel": {"weight_grams": 1000, "length_cm": 30, "width_cm": 20, "height_cm": 10},
            "rate": rate,
            "reference": "order-1138",
        }),
    )
}

fn track(fleet: &TestFleet, code: &str) -> Command {
    command(
        fleet,
        "track",
        json!({"tracking_code": code, "carrier": "USPS"}),
    )
}

/// The statuses of the sandbox's answers to the command's requests (`None`: never answered).
async fn answers(fleet: &TestFleet, c: &Command) -> Vec<Option<u64>> {
    fleet.sandbox_view(c.id).await["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64())
        .collect()
}

#[tokio::test]
async fn labels_are_bought_by_rule_exactly_once() {
    let fleet = TestFleet::start().await;
    let cheapest = label(&fleet, json!({"rule": "cheapest"}));
    let fastest = label(&fleet, json!({"rule": "fastest"}));
    let priority = label(
        &fleet,
        json!({"rule": "service", "carrier": "usps", "service": "PRIORITY"}),
    );
    let missing = label(
        &fleet,
        json!({"rule": "service", "carrier": "DHL", "service": "Express"}),
    );
    // A 500 on the first request, then success.
    let flaky = label(&fleet, json!({"rule": "cheapest"}));
    fleet.scenario(flaky.id, &["500"]).await;
    // The purchase executes but its answer is lost: the retry finds the bought shipment.
    let lost = label(&fleet, json!({"rule": "cheapest"}));
    fleet.scenario(lost.id, &["ok", "ok", "lost"]).await;
    for c in [&cheapest, &fastest, &priority, &missing, &flaky, &lost] {
        fleet.publish(c).await;
    }

    for (c, service) in [
        (&cheapest, "GroundAdvantage"),
        (&fastest, "NextDayAir"),
        (&priority, "Priority"),
        (&flaky, "GroundAdvantage"),
        (&lost, "GroundAdvantage"),
    ] {
        let events = fleet.events.terminal(c.id, Duration::from_secs(30)).await;
        let done = terminal(&events);
        assert_eq!(done.status, Status::Completed, "{events:#?}");
        let result = done.result.as_ref().unwrap();
        assert_eq!(result["service"], service, "{result:#}");
        assert!(!result["tracking_code"].as_str().unwrap().is_empty());
        assert!(result["tracker_id"].as_str().unwrap().starts_with("trk_"));
        assert!(
            result["label_url"]
                .as_str()
                .unwrap()
                .starts_with("https://")
        );
        assert_eq!(result["currency"], "USD");
        let shipment = done.provider_reference.as_deref().unwrap();
        assert!(shipment.starts_with("shp_"), "{shipment}");
        assert_eq!(result["shipment_id"], shipment);
        let view = fleet.sandbox_view(c.id).await;
        assert_eq!(view["effects"], 1, "one label: {view:#}");
    }
    // Look-up by reference (404), create, buy; a retry looks up, creates and buys.
    assert_eq!(
        answers(&fleet, &cheapest).await,
        [Some(404), Some(201), Some(200)]
    );
    assert_eq!(
        answers(&fleet, &flaky).await,
        [Some(500), Some(404), Some(201), Some(200)]
    );
    // The lost purchase is found bought by its reference: no second purchase.
    assert_eq!(
        answers(&fleet, &lost).await,
        [Some(404), Some(201), None, Some(200)]
    );

    // A named service nobody offers: permanent, dead-lettered, nothing bought.
    let events = fleet
        .events
        .terminal(missing.id, Duration::from_secs(30))
        .await;
    let failed = terminal(&events);
    assert_eq!(failed.status, Status::Failed, "{events:#?}");
    let error = failed.error.as_ref().unwrap();
    assert_eq!(error.class, ErrorClass::Permanent);
    assert_eq!(error.code, "no_matching_rate");
    assert_eq!(fleet.sandbox_view(missing.id).await["effects"], 0);
    assert_eq!(fleet.dead_letters("shipping").await.len(), 1);
    fleet.stop().await;
}

#[tokio::test]
async fn tracking_ends_by_signed_events_and_forged_ones_are_refused() {
    let fleet = TestFleet::start().await;
    let delivered = track(&fleet, "EZ1000000001");
    let failing = track(&fleet, "EZ2000000002");
    fleet.scenario(failing.id, &["accept:fail"]).await;
    let already = track(&fleet, "EZ4000000004");
    let lost_parcel = track(&fleet, "EZ6000000006");
    for c in [&delivered, &failing, &already, &lost_parcel] {
        fleet.publish(c).await;
    }

    let events = fleet
        .events
        .terminal(delivered.id, Duration::from_secs(30))
        .await;
    let done = terminal(&events);
    assert_eq!(done.status, Status::Completed, "{events:#?}");
    assert!(statuses(&events).contains(&Status::Waiting));
    let tracker = done.provider_reference.clone().unwrap();
    assert!(tracker.starts_with("trk_"), "{tracker}");
    let result = done.result.as_ref().unwrap();
    assert_eq!(result["status"], "delivered");
    assert_eq!(result["tracking_code"], "EZ1000000001");

    let events = fleet
        .events
        .terminal(failing.id, Duration::from_secs(30))
        .await;
    let failed = terminal(&events);
    assert_eq!(failed.status, Status::Failed, "{events:#?}");
    assert!(statuses(&events).contains(&Status::Waiting));
    let error = failed.error.as_ref().unwrap();
    assert_eq!(
        (error.class, error.code.as_str()),
        (ErrorClass::Permanent, "shipment_failure")
    );

    // Test codes already at their end answer at once, without waiting.
    let events = fleet
        .events
        .terminal(already.id, Duration::from_secs(30))
        .await;
    assert_eq!(terminal(&events).status, Status::Completed, "{events:#?}");
    assert!(!statuses(&events).contains(&Status::Waiting));
    let events = fleet
        .events
        .terminal(lost_parcel.id, Duration::from_secs(30))
        .await;
    let failed = terminal(&events);
    assert_eq!(failed.status, Status::Failed, "{events:#?}");
    assert_eq!(failed.error.as_ref().unwrap().code, "shipment_failure");
    assert_eq!(fleet.dead_letters("shipping").await.len(), 2);

    // An Event signed with another secret, or not signed, or signed GitHub's way: refused.
    let url = format!("{}/v1/webhooks/easypost", fleet.ingress_url());
    let body = json!({
        "object": "Event", "id": "evt_forged", "description": "tracker.updated",
        "result": {"object": "Tracker", "id": tracker, "status": "failure"},
    })
    .to_string();
    let ours = HmacHexSignature::easypost(WEBHOOK_SECRET).unwrap();
    let github_shaped = ours
        .sign(body.as_bytes())
        .replace("hmac-sha256-hex=", "sha256=");
    for signature in [
        Some(
            HmacHexSignature::easypost("not_the_secret")
                .unwrap()
                .sign(body.as_bytes()),
        ),
        None,
        Some(github_shaped),
    ] {
        let mut r = fleet
            .http()
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(signature) = signature {
            r = r.header("x-hmac-signature", signature);
        }
        assert_eq!(r.send().await.unwrap().status(), 401);
    }
    // Correctly signed, but after the end: accepted, and no second terminal event.
    let r = fleet
        .http()
        .post(&url)
        .header("content-type", "application/json")
        .header("x-hmac-signature", ours.sign(body.as_bytes()))
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ends = fleet
        .events
        .of(delivered.id)
        .iter()
        .filter(|e| e.status.is_terminal())
        .count();
    assert_eq!(ends, 1);
    fleet.stop().await;
}
