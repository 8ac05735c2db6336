//! `notification.twilio.send_sms` against the sandbox's Twilio emulator: `waiting` on the
//! message SID, then ended by Twilio's signed delivery reports at `/v1/webhooks/twilio`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use switchyard_core::{ErrorClass, Status};
use switchyard_e2e::{statuses, terminal};
use switchyard_testing::{TWILIO_TOKEN, TestFleet};
use switchyard_webhooks::TwilioSignature;

fn sms(fleet: &TestFleet) -> switchyard_core::Command {
    let mut c = fleet.command(
        "notification",
        "send_sms",
        serde_json::json!({"to": "+14155550100", "body": "Your parcel is on its way"}),
    );
    c.provider = "twilio".parse().unwrap();
    c
}

#[tokio::test]
async fn delivery_reports_end_waiting_messages_and_forged_ones_are_refused() {
    let fleet = TestFleet::start().await;
    let delivered = sms(&fleet);
    let undelivered = sms(&fleet);
    fleet.scenario(undelivered.id, &["accept:fail"]).await;
    for c in [&delivered, &undelivered] {
        fleet.publish(c).await;
    }

    let events = fleet
        .events
        .terminal(delivered.id, Duration::from_secs(30))
        .await;
    let done = terminal(&events);
    assert_eq!(done.status, Status::Completed, "{events:#?}");
    assert!(statuses(&events).contains(&Status::Waiting));
    let sid = done.provider_reference.clone().unwrap();
    assert!(sid.starts_with("SM"), "{sid}");
    assert_eq!(done.result.as_ref().unwrap()["status"], "delivered");

    let events = fleet
        .events
        .terminal(undelivered.id, Duration::from_secs(30))
        .await;
    let failed = terminal(&events);
    assert_eq!(failed.status, Status::Failed, "{events:#?}");
    assert_eq!(failed.error.as_ref().unwrap().class, ErrorClass::Permanent);
    assert_eq!(fleet.dead_letters("notification").await.len(), 1);

    // A report signed with another token, or for another URL, is refused.
    let url = format!("{}/v1/webhooks/twilio", fleet.ingress_url());
    let params = vec![
        ("MessageSid".to_owned(), sid.clone()),
        ("MessageStatus".to_owned(), "undelivered".to_owned()),
    ];
    let body = "MessageSid=".to_owned() + &sid + "&MessageStatus=undelivered";
    for signature in [
        TwilioSignature::new("another_token")
            .unwrap()
            .sign(&url, &params),
        TwilioSignature::new(TWILIO_TOKEN)
            .unwrap()
            .sign("https://elsewhere.example/v1/webhooks/twilio", &params),
    ] {
        let r = fleet
            .http()
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", signature)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // Correctly signed, but after the end: no second terminal event.
    let signature = TwilioSignature::new(TWILIO_TOKEN)
        .unwrap()
        .sign(&url, &params);
    let r = fleet
        .http()
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
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
