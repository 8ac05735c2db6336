//! `payment.stripe.*` against the sandbox's Stripe emulator: charges that succeed at once,
//! decline, need the customer (`waiting`, ended by Stripe-signed events), refunds, and one
//! charge per command across retries and lost answers (Stripe's `Idempotency-Key`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use switchyard_core::{Command, ErrorClass, Status};
use switchyard_e2e::{statuses, terminal};
use switchyard_testing::{TestFleet, TestFleetOptions, WEBHOOK_SECRET};
use switchyard_webhooks::StripeSignature;

const WAIT: Duration = Duration::from_secs(30);

fn charge(fleet: &TestFleet, payment_method: &str) -> Command {
    let mut c = fleet.command(
        "payment",
        "charge",
        json!({"amount": 2500, "currency": "eur", "payment_method": payment_method,
               "description": "order 1042"}),
    );
    c.provider = "stripe".parse().unwrap();
    c
}

fn refund(fleet: &TestFleet, payment_reference: &str, amount: Option<u64>) -> Command {
    let mut payload =
        json!({"payment_reference": payment_reference, "reason": "requested_by_customer"});
    if let Some(a) = amount {
        payload["amount"] = json!(a);
    }
    let mut c = fleet.command("payment", "refund", payload);
    c.provider = "stripe".parse().unwrap();
    c
}

async fn run(fleet: &TestFleet, c: &Command) -> Vec<switchyard_core::Event> {
    fleet.publish(c).await;
    fleet.events.terminal(c.id, WAIT).await
}

#[tokio::test]
async fn charges_succeed_decline_or_wait_for_the_customer_and_refunds_follow() {
    let fleet = TestFleet::start().await;

    // At once: completed with the PaymentIntent as the reference.
    let paid = charge(&fleet, "pm_card_visa");
    let events = run(&fleet, &paid).await;
    let done = terminal(&events);
    assert_eq!(done.status, Status::Completed, "{events:#?}");
    let pi = done.provider_reference.clone().unwrap();
    assert!(pi.starts_with("pi_"), "{pi}");
    let result = done.result.as_ref().unwrap();
    assert_eq!(result["status"], "succeeded");
    assert_eq!(result["amount"], 2500);
    assert!(result["charge"].as_str().unwrap().starts_with("ch_"));
    // The request was Stripe's: form-encoded, with the command's key.
    let view = fleet.sandbox_view(paid.id).await;
    assert_eq!(view["effects"], 1, "{view:#}");
    let request = &view["requests"][0];
    assert_eq!(
        request["headers"]["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert!(request["idempotency_key"].is_string(), "{view:#}");

    // Declined: permanent, with Stripe's decline code, dead-lettered.
    let declined = charge(&fleet, "pm_card_chargeDeclinedInsufficientFunds");
    let events = run(&fleet, &declined).await;
    let failed = terminal(&events);
    assert_eq!(failed.status, Status::Failed, "{events:#?}");
    let error = failed.error.as_ref().unwrap();
    assert_eq!(error.class, ErrorClass::Permanent);
    assert_eq!(error.code, "insufficient_funds");
    assert!(!statuses(&events).contains(&Status::Retrying));

    // The customer must authenticate: waiting, then ended by payment_intent.succeeded.
    let three_ds = charge(&fleet, "pm_card_authenticationRequired");
    let events = run(&fleet, &three_ds).await;
    let done = terminal(&events);
    assert_eq!(done.status, Status::Completed, "{events:#?}");
    assert!(statuses(&events).contains(&Status::Waiting));
    assert!(done.provider_reference.as_ref().unwrap().starts_with("pi_"));

    // Processing, then failed by payment_intent.payment_failed.
    let later_declined = charge(&fleet, "pm_card_visa");
    fleet.scenario(later_declined.id, &["accept:fail"]).await;
    let events = run(&fleet, &later_declined).await;
    let failed = terminal(&events);
    assert_eq!(failed.status, Status::Failed, "{events:#?}");
    assert!(statuses(&events).contains(&Status::Waiting));
    assert_eq!(failed.error.as_ref().unwrap().code, "generic_decline");

    // A partial refund, then one for more than is left, then one of an unknown payment.
    let partial = refund(&fleet, &pi, Some(1000));
    let events = run(&fleet, &partial).await;
    let done = terminal(&events);
    assert_eq!(done.status, Status::Completed, "{events:#?}");
    assert!(done.provider_reference.as_ref().unwrap().starts_with("re_"));
    assert_eq!(done.result.as_ref().unwrap()["amount"], 1000);
    let too_much = refund(&fleet, &pi, Some(2000));
    let events = run(&fleet, &too_much).await;
    let failed = terminal(&events);
    assert_eq!(failed.status, Status::Failed, "{events:#?}");
    assert_eq!(failed.error.as_ref().unwrap().code, "amount_too_large");
    let unknown = refund(&fleet, "pi_unknown", None);
    let failed = terminal(&run(&fleet, &unknown).await).clone();
    assert_eq!(failed.error.as_ref().unwrap().code, "resource_missing");
    // A pending refund ends by refund.updated.
    let pending = refund(&fleet, &pi, None);
    fleet.scenario(pending.id, &["accept"]).await;
    let events = run(&fleet, &pending).await;
    assert_eq!(terminal(&events).status, Status::Completed, "{events:#?}");
    assert!(statuses(&events).contains(&Status::Waiting));

    assert_eq!(fleet.dead_letters("payment").await.len(), 4);
    fleet.stop().await;
}

#[tokio::test]
async fn one_charge_per_command_across_errors_timeouts_and_lost_answers() {
    let fleet = TestFleet::start_with(TestFleetOptions {
        timeout_ms: 800,
        ..TestFleetOptions::default()
    })
    .await;
    let c = charge(&fleet, "pm_card_visa");
    // A 500, a timeout, then a charge whose answer is lost, then the retry: Stripe replays.
    fleet.scenario(c.id, &["500", "hang", "lost"]).await;
    let events = run(&fleet, &c).await;
    assert_eq!(terminal(&events).status, Status::Completed, "{events:#?}");
    let view = fleet.sandbox_view(c.id).await;
    assert_eq!(view["effects"], 1, "{view:#}");
    let requests = view["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 4, "{view:#}");
    let keys: std::collections::BTreeSet<_> = requests
        .iter()
        .map(|r| r["idempotency_key"].to_string())
        .collect();
    assert_eq!(keys.len(), 1, "one key on every attempt: {view:#}");
    let bodies: std::collections::BTreeSet<_> = requests
        .iter()
        .map(|r| r["body_sha256"].to_string())
        .collect();
    assert_eq!(bodies.len(), 1, "the same bytes on every attempt: {view:#}");
    assert_eq!(requests[3]["replayed"], true, "{view:#}");
    fleet.stop().await;
}

#[tokio::test]
async fn events_with_a_wrong_signature_are_refused_and_late_ones_change_nothing() {
    let fleet = TestFleet::start().await;
    let c = charge(&fleet, "pm_card_threeDSecure2Required");
    let events = run(&fleet, &c).await;
    assert_eq!(terminal(&events).status, Status::Completed, "{events:#?}");
    let pi = terminal(&events).provider_reference.clone().unwrap();

    let url = format!("{}/v1/webhooks/stripe", fleet.ingress_url());
    let body = json!({"id": "evt_forged", "object": "event", "type": "payment_intent.payment_failed",
        "data": {"object": {"id": pi, "object": "payment_intent", "status": "requires_payment_method"}}})
    .to_string();
    let now = chrono::Utc::now().timestamp();
    for signature in [
        StripeSignature::new("whsec_someone_else")
            .unwrap()
            .sign(now, body.as_bytes()),
        // Ours, but ten minutes old: outside Stripe's tolerance.
        StripeSignature::new(WEBHOOK_SECRET)
            .unwrap()
            .sign(now - 600, body.as_bytes()),
    ] {
        let r = fleet
            .http()
            .post(&url)
            .header("content-type", "application/json")
            .header("stripe-signature", signature)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // Correctly signed, after the end: accepted, and no second terminal event.
    let r = fleet
        .http()
        .post(&url)
        .header("content-type", "application/json")
        .header(
            "stripe-signature",
            StripeSignature::new(WEBHOOK_SECRET)
                .unwrap()
                .sign(now, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ends = fleet
        .events
        .of(c.id)
        .iter()
        .filter(|e| e.status.is_terminal())
        .count();
    assert_eq!(ends, 1);
    fleet.stop().await;
}
