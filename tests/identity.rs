//! One command, one effect, one outcome (contract 7): identity and idempotency over both
//! doors, and answers that prove the provider acted but cannot be read. Each test is a defect
//! that was seen before the journal existed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::{Duration, Instant};

use serde_json::json;
use switchyard_core::{Command, ErrorClass, Event, Status};
use switchyard_e2e::terminal;
use switchyard_testing::{ONESHOT_PROVIDER, TestFleet};
use uuid::Uuid;

/// Waits until `id` has an event with `status`; returns all its events.
async fn reaches(fleet: &TestFleet, id: Uuid, status: Status) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = fleet.events.of(id);
        if events.iter().any(|e| e.status == status) {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return fleet.events.of(id);
        }
        assert!(
            Instant::now() < deadline,
            "{id} never reached {status}: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn with_key(mut c: Command, key: &str) -> Command {
    c.idempotency_key = Some(key.to_owned().try_into().unwrap());
    c
}

/// Defect 1: two commands with different ids and one idempotency key, over AMQP, made two
/// charges. Now the second is a `duplicate` of the first and the provider sees one request.
#[tokio::test]
async fn one_idempotency_key_over_amqp_is_one_effect() {
    let fleet = TestFleet::start().await;
    let key = format!("order-{}", Uuid::new_v4());
    let first = with_key(fleet.charge(), &key);
    let mut second = first.clone();
    second.id = Uuid::now_v7();
    fleet.publish(&first).await;
    let done = fleet
        .events
        .terminal(first.id, Duration::from_secs(20))
        .await;
    assert_eq!(terminal(&done).status, Status::Completed);
    fleet.publish(&second).await;
    let dup = fleet
        .events
        .terminal(second.id, Duration::from_secs(20))
        .await;
    assert_eq!(dup.len(), 1, "a duplicate starts no lifecycle: {dup:#?}");
    assert_eq!(dup[0].status, Status::Duplicate);
    assert_eq!(dup[0].duplicate_of, Some(first.id));
    assert!(
        fleet.sandbox_view(second.id).await["requests"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let view = fleet.sandbox_view(first.id).await;
    assert_eq!(view["effects"], 1, "{view:#}");
    // The first command's lifecycle is untouched.
    assert_eq!(fleet.events.of(first.id).len(), done.len());
    // The same command published twice (same id) is run once, with no event of its own.
    fleet.publish(&first).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fleet.events.of(first.id).len(), done.len());
    assert_eq!(
        fleet.sandbox_view(first.id).await["requests"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    fleet.stop().await;
}

/// Defect 2: the same `POST /v1/commands` twice ran the command twice. Now the repeat answers
/// 200 with the same id and `Idempotent-Replayed: true`, and nothing runs again.
#[tokio::test]
async fn a_repeated_http_request_is_answered_not_executed() {
    let fleet = TestFleet::start().await;
    let key = format!("http-{}", Uuid::new_v4());
    let body = json!({"kind": "notification", "provider": "sandbox", "operation": "send_sms",
        "payload": {"to": "+14155550100", "body": "hello"}, "idempotency_key": key});
    let r = fleet.post(&body).await;
    assert_eq!(r.status(), 202);
    let id: Uuid = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let events = fleet.events.terminal(id, Duration::from_secs(20)).await;
    assert_eq!(terminal(&events).status, Status::Completed);
    let r = fleet.post(&body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(answer["id"], id.to_string());
    assert_eq!(answer["status_url"], format!("/v1/commands/{id}"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        fleet.events.of(id).len(),
        events.len(),
        "no second lifecycle"
    );
    let view = fleet.sandbox_view(id).await;
    assert_eq!(view["requests"].as_array().unwrap().len(), 1, "{view:#}");
    fleet.stop().await;
}

/// Defect 3: the same key with another body was accepted (both ran, one id ended twice), and
/// a reused id for another kind ran too. Now a conflict never reaches a provider: 422 over
/// HTTP; over AMQP a dead letter `invalid`/`idempotency_conflict`, with a `failed` event under
/// its own id only when that id is not the original's.
#[tokio::test]
async fn a_conflict_is_refused_at_both_doors() {
    let fleet = TestFleet::start().await;
    let key = format!("conflict-{}", Uuid::new_v4());
    let body = |amount: u64| {
        json!({"kind": "payment", "provider": "sandbox", "operation": "charge",
            "payload": {"amount": amount, "currency": "usd", "payment_method": "pm_card_visa"},
            "idempotency_key": key})
    };
    let r = fleet.post(&body(100)).await;
    assert_eq!(r.status(), 202);
    let id: Uuid = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let r = fleet.post(&body(999)).await;
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.headers()["content-type"],
        "application/problem+json",
        "problem details"
    );
    let problem: serde_json::Value = r.json().await.unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("idempotency_conflict"),
        "{problem:#}"
    );
    let original = fleet.events.terminal(id, Duration::from_secs(20)).await;
    assert_eq!(terminal(&original).status, Status::Completed);

    // Over AMQP: the same key, another body, another id.
    let mut other: Command = with_key(fleet.charge(), &key);
    other.payload.insert("amount".into(), 5.into());
    fleet.publish(&other).await;
    let refused = fleet
        .events
        .terminal(other.id, Duration::from_secs(20))
        .await;
    let failed = terminal(&refused);
    let error = failed.error.as_ref().unwrap();
    assert_eq!(
        (error.class, error.code.as_str()),
        (ErrorClass::Invalid, "idempotency_conflict")
    );
    // Over AMQP: the original's id reused for another kind.
    let mut reused = fleet.command(
        "notification",
        "send_sms",
        json!({"to": "+14155550100", "body": "hi"}),
    );
    reused.id = id;
    fleet.publish(&reused).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dead = fleet.dead_letters("payment").await;
    let dead_n = fleet.dead_letters("notification").await;
    let classes: Vec<String> = dead
        .iter()
        .chain(dead_n.iter())
        .map(|(h, _)| {
            use switchyard_amqp::HeaderRead;
            h.header_str("x-switchyard-error").unwrap_or_default()
        })
        .collect();
    assert_eq!(
        classes.len(),
        2,
        "both conflicts dead-lettered: {classes:?}"
    );
    assert!(classes.iter().all(|c| c.contains("idempotency_conflict")));
    // The original's lifecycle is untouched and no provider saw either conflict.
    assert_eq!(
        fleet.events.of(id).len(),
        original.len(),
        "{:#?}",
        fleet.events.of(id)
    );
    assert_eq!(
        fleet.sandbox_view(id).await["requests"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(
        fleet.sandbox_view(other.id).await["requests"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    fleet.stop().await;
}

/// Defect 5: a 2xx that could not be read ended `failed`/`permanent` and dead-lettered while the
/// provider had acted. Now it is `unknown`: not failed, not retried, not dead-lettered.
#[tokio::test]
async fn an_unreadable_success_is_unknown_never_failed_nor_retried() {
    let fleet = TestFleet::start().await;
    let mut ids = Vec::new();
    for step in ["garbled", "huge", "noref"] {
        let c = fleet.charge();
        fleet.scenario(c.id, &[step]).await;
        fleet.publish(&c).await;
        ids.push((step, c.id));
    }
    for (step, id) in &ids {
        let events = reaches(&fleet, *id, Status::Unknown).await;
        assert!(
            events
                .iter()
                .all(|e| !e.status.is_terminal() && e.status != Status::Retrying),
            "{step}: {events:#?}"
        );
        let unknown = events.iter().find(|e| e.status == Status::Unknown).unwrap();
        assert_eq!(
            unknown.error.as_ref().unwrap().class,
            ErrorClass::Unknown,
            "{step}"
        );
        let view = fleet.sandbox_view(*id).await;
        assert_eq!(
            view["requests"].as_array().unwrap().len(),
            1,
            "{step}: never retried blindly"
        );
        assert_eq!(view["effects"], 1, "{step}: the provider acted");
    }
    assert!(fleet.dead_letters("payment").await.is_empty());
    fleet.stop().await;
}

/// Where the provider can be asked, an unknown outcome is settled by a status check: the
/// provider that takes no idempotency key answered garbage, acted once, and the command ends
/// `completed` without a second request.
#[tokio::test]
async fn an_unknown_outcome_is_settled_by_a_status_check() {
    let fleet = TestFleet::start().await;
    let mut c = fleet.charge();
    c.provider = ONESHOT_PROVIDER.parse().unwrap();
    fleet.scenario(c.id, &["garbled"]).await;
    fleet.publish(&c).await;
    let events = fleet.events.terminal(c.id, Duration::from_secs(30)).await;
    let seen: Vec<Status> = events.iter().map(|e| e.status).collect();
    assert!(seen.contains(&Status::Unknown), "{events:#?}");
    assert_eq!(terminal(&events).status, Status::Completed, "{events:#?}");
    let view = fleet.sandbox_view(c.id).await;
    assert_eq!(view["effects"], 1, "{view:#}");
    fleet.stop().await;
}
