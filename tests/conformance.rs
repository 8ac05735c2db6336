//! The conformance suite every provider passes, whatever its vendor: server errors are
//! transient (retried, then completed), timeouts too where the vendor takes idempotency keys
//! (and `unknown`, never retried, where it does not), client errors permanent (dead-lettered
//! after one attempt), a 429's wait is honoured, retries make one effect per command, keys
//! and card data are redacted wherever a command leaves a trace, and the metrics carry the
//! kind and provider. Each provider's emulator in the sandbox plays the scripted faults in
//! its vendor's own shape (Stripe's error types, Twilio's codes, SendGrid's rate-limit
//! headers), so the suite checks each provider's reading of its vendor.
//!
//! To hold a new provider to it, add a [`Case`] to [`cases`].

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_core::{Command, ErrorClass, Event, Status};
use switchyard_e2e::{statuses, terminal};
use switchyard_testing::{
    EASYPOST_KEY, SENDGRID_KEY, STRIPE_KEY, TWILIO_TOKEN, TestFleet, TestFleetOptions,
    WEBHOOK_PROVIDER, WEBHOOK_SECRET,
};

const WAIT: Duration = Duration::from_secs(40);

/// One provider under test.
struct Case {
    kind: &'static str,
    provider: &'static str,
    operation: &'static str,
    payload: Value,
    /// The credential the provider sends, which must never be written down.
    credential: Option<&'static str>,
    /// Whether the vendor de-duplicates by the key it is sent. A timeout there is retried with
    /// the same key; at one that does not (SendGrid, Twilio) a timeout may hide an effect, so
    /// it ends `unknown` and the provider is never called a second time.
    takes_keys: bool,
}

fn address(name: &str) -> Value {
    json!({"name": name, "street1": "417 Montgomery St", "city": "San Francisco",
           "state": "CA", "zip": "94104", "country": "US"})
}

fn cases(fleet: &TestFleet) -> Vec<Case> {
    vec![
        Case {
            kind: "payment",
            provider: "sandbox",
            operation: "charge",
            payload: json!({"amount": 1999, "currency": "usd", "payment_method": "pm_card_visa"}),
            credential: None,
            takes_keys: true,
        },
        Case {
            kind: "payment",
            provider: "stripe",
            operation: "charge",
            payload: json!({"amount": 1999, "currency": "usd", "payment_method": "pm_card_visa"}),
            credential: Some(STRIPE_KEY),
            takes_keys: true,
        },
        Case {
            kind: "notification",
            provider: "sendgrid",
            operation: "send_email",
            payload: json!({"to": ["ann@example.com"], "from": "shop@example.com",
                            "subject": "Your order", "text": "On its way"}),
            credential: Some(SENDGRID_KEY),
            takes_keys: false,
        },
        Case {
            kind: "notification",
            provider: "twilio",
            operation: "send_sms",
            payload: json!({"to": "+14155550100", "body": "On its way"}),
            credential: Some(TWILIO_TOKEN),
            takes_keys: false,
        },
        Case {
            kind: "notification",
            provider: WEBHOOK_PROVIDER,
            operation: "send_webhook",
            payload: json!({"url": fleet.sandbox.partner_url("acme"),
                            "event_type": "order.shipped", "data": {"order": "42"}}),
            credential: Some(WEBHOOK_SECRET),
            // The partner de-duplicates on the signed webhook id.
            takes_keys: true,
        },
        Case {
            kind: "shipping",
            provider: "easypost",
            operation: "create_label",
            payload: json!({
                "from": address("Shop"), "to": address("Ann"),
                "parcel": {"weight_grams": 900, "length_cm": 30, "width_cm": 20, "height_cm": 10},
                "rate": {"rule": "cheapest"},
            }),
            credential: Some(EASYPOST_KEY),
            // The lost request creates the shipment; the label (the effect) is bought once.
            takes_keys: true,
        },
    ]
}

impl Case {
    fn name(&self) -> String {
        format!("{}.{}.{}", self.kind, self.provider, self.operation)
    }

    fn command(&self, fleet: &TestFleet) -> Command {
        let mut c = fleet.command(self.kind, self.operation, self.payload.clone());
        c.provider = self.provider.parse().unwrap();
        c
    }
}

/// A command of `case` scripted with `steps`, published.
async fn scripted(fleet: &TestFleet, case: &Case, steps: &[&str]) -> Command {
    let c = case.command(fleet);
    fleet.scenario(c.id, steps).await;
    fleet.publish(&c).await;
    c
}

fn retry(events: &[Event]) -> &Event {
    events
        .iter()
        .find(|e| e.status == Status::Retrying)
        .unwrap_or_else(|| panic!("no retrying event: {events:#?}"))
}

/// What the providers were scripted to do, per case, all at once on one fleet.
struct Commands {
    server_error: Command,
    timeout: Command,
    client_error: Command,
    rate_limited: Command,
    lost: Command,
    leaky: Command,
}

#[tokio::test]
async fn every_provider_conforms() {
    let fleet = TestFleet::start_with(TestFleetOptions {
        timeout_ms: 1_000,
        ..TestFleetOptions::default()
    })
    .await;
    let cases = cases(&fleet);
    let mut all = Vec::new();
    for case in &cases {
        all.push(Commands {
            // Two: the quick in-process retry absorbs the first.
            server_error: scripted(&fleet, case, &["500", "500"]).await,
            timeout: scripted(&fleet, case, &["hang"]).await,
            client_error: scripted(&fleet, case, &["400"]).await,
            rate_limited: scripted(&fleet, case, &["429:3"]).await,
            lost: scripted(&fleet, case, &["lost"]).await,
            leaky: scripted(&fleet, case, &["leak:500", "leak:500"]).await,
        });
    }

    for (case, c) in cases.iter().zip(&all) {
        let name = case.name();
        // 500: transient, retried, completed, one effect, one key and one body throughout.
        let events = fleet.events.terminal(c.server_error.id, WAIT).await;
        assert_eq!(
            terminal(&events).status,
            Status::Completed,
            "{name}: {events:#?}"
        );
        let error = retry(&events).error.clone().unwrap();
        assert_eq!(
            (error.class, error.http_status),
            (ErrorClass::Transient, Some(500)),
            "{name}"
        );
        let view = fleet.sandbox_view(c.server_error.id).await;
        assert_eq!(view["effects"], 1, "{name}: {view:#}");
        let requests = view["requests"].as_array().unwrap();
        let first_two: Vec<&Value> = requests.iter().take(2).map(|r| &r["body_sha256"]).collect();
        assert_eq!(
            first_two[0], first_two[1],
            "{name}: the retry sent other bytes: {view:#}"
        );

        // A hang, and an answer lost after the provider acted: both a timeout. Where keys
        // de-duplicate, retried and completed with one effect; where they do not, `unknown`,
        // never retried, the provider called once (and having acted only for the lost answer).
        for (command, acted) in [(&c.timeout, 0), (&c.lost, 1)] {
            if case.takes_keys {
                let events = fleet.events.terminal(command.id, WAIT).await;
                assert_eq!(
                    terminal(&events).status,
                    Status::Completed,
                    "{name}: {events:#?}"
                );
                assert_eq!(
                    retry(&events).error.as_ref().unwrap().class,
                    ErrorClass::Timeout,
                    "{name}"
                );
                let view = fleet.sandbox_view(command.id).await;
                assert_eq!(view["effects"], 1, "{name}: {view:#}");
            } else {
                let events = fleet
                    .events
                    .reached(command.id, Status::Unknown, WAIT)
                    .await;
                assert!(
                    !statuses(&events).contains(&Status::Retrying),
                    "{name}: {events:#?}"
                );
                let unknown = events.iter().find(|e| e.status == Status::Unknown).unwrap();
                assert_eq!(
                    unknown.error.as_ref().map(|e| (e.class, e.code.as_str())),
                    Some((ErrorClass::Unknown, "timeout")),
                    "{name}: {events:#?}"
                );
                let view = fleet.sandbox_view(command.id).await;
                assert_eq!(view["effects"], acted, "{name}: {view:#}");
                assert_eq!(
                    view["requests"].as_array().unwrap().len(),
                    1,
                    "{name}: called again: {view:#}"
                );
            }
        }

        // 400: permanent at once, no retry, no effect.
        let events = fleet.events.terminal(c.client_error.id, WAIT).await;
        let failed = terminal(&events);
        assert_eq!(failed.status, Status::Failed, "{name}: {events:#?}");
        assert_eq!(
            failed.error.as_ref().unwrap().class,
            ErrorClass::Permanent,
            "{name}"
        );
        assert!(
            !statuses(&events).contains(&Status::Retrying),
            "{name}: {events:#?}"
        );
        assert_eq!(
            fleet.sandbox_view(c.client_error.id).await["effects"],
            0,
            "{name}"
        );

        // 429 asking for 3 s: the next request waits for it.
        let events = fleet.events.terminal(c.rate_limited.id, WAIT).await;
        assert_eq!(
            terminal(&events).status,
            Status::Completed,
            "{name}: {events:#?}"
        );
        let limited = retry(&events);
        assert_eq!(
            limited.error.as_ref().unwrap().class,
            ErrorClass::Transient,
            "{name}"
        );
        let view = fleet.sandbox_view(c.rate_limited.id).await;
        let at: Vec<u64> = view["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["at_ms"].as_u64().unwrap())
            .collect();
        assert!(
            at[1] - at[0] >= 2_000,
            "{name}: the retry did not wait: {at:?}"
        );

        // Answers full of card data and secrets: nothing of them, nor of the provider's
        // credential, in the events or the ledger's record of every request and answer.
        let events = fleet.events.terminal(c.leaky.id, WAIT).await;
        assert_eq!(
            terminal(&events).status,
            Status::Completed,
            "{name}: {events:#?}"
        );
        let ledger = fleet
            .ledger_view_when(c.leaky.id, |v| {
                v["status"] == "completed" && v["attempts"].as_array().is_some_and(|a| a.len() >= 3)
            })
            .await;
        let leaked = ledger["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["status"] == 500)
            .count();
        assert_eq!(
            leaked, 2,
            "{name}: the leaky answers were recorded: {ledger:#}"
        );
        let traces = format!("{ledger}\n{}", serde_json::to_string(&events).unwrap());
        let mut canaries = vec!["4242424242424242", "pi_3Canary_secret_RVn8", "\"987\""];
        canaries.extend(case.credential);
        for canary in canaries {
            assert!(
                !traces.contains(canary),
                "{name}: {canary:?} written down: {traces}"
            );
        }
    }

    // Metrics, per kind and provider.
    let mut metrics = String::new();
    for worker in &fleet.fleet.as_ref().unwrap().workers {
        let url = format!("http://{}/metrics", worker.ops_addr);
        metrics.push_str(
            &fleet
                .http()
                .get(url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    for case in &cases {
        let kind = format!("kind=\"{}\"", case.kind);
        let provider = format!("provider=\"{}\"", case.provider);
        let operation = format!("operation=\"{}\"", case.operation);
        for family in [
            "switchyard_attempts_total",
            "switchyard_attempt_duration_seconds_count",
        ] {
            assert!(
                metrics.lines().any(|l| l.starts_with(family)
                    && l.contains(&kind)
                    && l.contains(&provider)
                    && l.contains(&operation)),
                "{}: no {family} with {operation}:\n{metrics}",
                case.name()
            );
        }
        for family in [
            "switchyard_attempts_total",
            "switchyard_retries_scheduled_total",
            "switchyard_dead_letters_total",
            "switchyard_attempt_duration_seconds_count",
        ] {
            assert!(
                metrics
                    .lines()
                    .any(|l| l.starts_with(family) && l.contains(&kind) && l.contains(&provider)),
                "{}: no {family} with {kind}, {provider}:\n{metrics}",
                case.name()
            );
        }
    }
    fleet.stop().await;
}
