//! Transient failures retried to completion with one idempotency key; permanent failures and
//! invalid commands dead-lettered once; bad configuration refused at start.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::Duration;

use switchyard_amqp::HeaderRead;
use switchyard_core::{ErrorClass, Status};
use switchyard_e2e::{binary, statuses, terminal};
use switchyard_testing::{ONESHOT_PROVIDER, TestFleet, TestFleetOptions};

/// Every request the sandbox saw for a command carried one idempotency key and one body.
fn one_key_one_body(view: &serde_json::Value) -> usize {
    let requests = view["requests"].as_array().unwrap();
    let keys: std::collections::HashSet<_> = requests
        .iter()
        .map(|r| r["idempotency_key"].clone())
        .collect();
    let bodies: std::collections::HashSet<_> =
        requests.iter().map(|r| r["body_sha256"].clone()).collect();
    assert_eq!(
        keys.len(),
        1,
        "one idempotency key on every attempt: {view:#}"
    );
    assert_eq!(
        bodies.len(),
        1,
        "a byte-identical body on every attempt: {view:#}"
    );
    requests.len()
}

#[tokio::test]
async fn transient_failures_end_completed_with_one_key_and_one_effect() {
    let fleet = TestFleet::start_with(TestFleetOptions {
        timeout_ms: 500,
        ..Default::default()
    })
    .await;

    // 503s (the second is absorbed by the quick in-process retry), then success.
    let unavailable = fleet.charge();
    fleet
        .scenario(unavailable.id, &["503", "503", "503", "ok"])
        .await;
    // A provider that hangs past the attempt timeout.
    let hanging = fleet.charge();
    fleet.scenario(hanging.id, &["hang", "ok"]).await;
    // A provider that executes but whose answer is lost: the retry must not execute again.
    let lost = fleet.charge();
    fleet.scenario(lost.id, &["lost", "ok"]).await;
    // Rate limited with Retry-After: 1.
    let limited = fleet.charge();
    fleet.scenario(limited.id, &["429:1", "ok"]).await;

    for c in [&unavailable, &hanging, &lost, &limited] {
        fleet.publish(c).await;
    }
    for c in [&unavailable, &hanging, &lost, &limited] {
        let events = fleet.events.terminal(c.id, Duration::from_secs(30)).await;
        assert_eq!(terminal(&events).status, Status::Completed, "{events:#?}");
        assert!(statuses(&events).contains(&Status::Retrying), "{events:#?}");
        let view = fleet.sandbox_view(c.id).await;
        assert_eq!(view["effects"], 1, "exactly one effect: {view:#}");
        one_key_one_body(&view);
    }

    // The 503 command: 3 failed requests + 1 success, over 2 delivery attempts.
    assert_eq!(
        one_key_one_body(&fleet.sandbox_view(unavailable.id).await),
        4
    );
    let events = fleet.events.of(unavailable.id);
    let retry = events
        .iter()
        .find(|e| e.status == Status::Retrying)
        .unwrap();
    assert_eq!(retry.error.as_ref().unwrap().class, ErrorClass::Transient);
    assert_eq!(retry.error.as_ref().unwrap().http_status, Some(503));

    let timeout = fleet.events.of(hanging.id);
    let retry = timeout
        .iter()
        .find(|e| e.status == Status::Retrying)
        .unwrap();
    assert_eq!(retry.error.as_ref().unwrap().class, ErrorClass::Timeout);

    // Retry-After: 1 is honoured: the next attempt is scheduled at least 1 s later.
    let events = fleet.events.of(limited.id);
    let retry = events
        .iter()
        .find(|e| e.status == Status::Retrying)
        .unwrap();
    let next = retry.next_attempt_at.unwrap();
    assert!(
        next - retry.occurred_at >= chrono::Duration::milliseconds(1000),
        "{retry:#?}"
    );
    let view = fleet.sandbox_view(limited.id).await;
    let at: Vec<u64> = view["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["at_ms"].as_u64().unwrap())
        .collect();
    assert!(
        at[1] - at[0] >= 1000,
        "the retry waited for Retry-After: {at:?}"
    );
    fleet.stop().await;
}

/// A provider that takes no idempotency key and does not answer in time may still have acted:
/// retrying could act twice (the chaos run caught two charges this way). The attempt ends
/// `unknown`, never `retrying`; the provider is called once and its status check ends it.
#[tokio::test]
async fn a_timeout_at_a_provider_without_keys_is_unknown_not_retried() {
    let fleet = TestFleet::start_with(TestFleetOptions {
        timeout_ms: 500,
        ..TestFleetOptions::default()
    })
    .await;
    let mut c = fleet.charge();
    c.provider = ONESHOT_PROVIDER.parse().unwrap();
    // It acts, then answers only after the attempt timeout.
    fleet.scenario(c.id, &["lost", "ok"]).await;
    fleet.publish(&c).await;
    fleet
        .events
        .reached(c.id, Status::Unknown, Duration::from_secs(30))
        .await;
    // The sandbox answers the status check: it acted, so the command completes, never retried.
    let events = fleet.events.terminal(c.id, Duration::from_secs(30)).await;
    assert_eq!(terminal(&events).status, Status::Completed, "{events:#?}");
    assert!(
        !statuses(&events).contains(&Status::Retrying),
        "{events:#?}"
    );
    let view = fleet.sandbox_view(c.id).await;
    assert_eq!(view["effects"], 1, "{view:#}");
    assert_eq!(
        view["requests"].as_array().unwrap().len(),
        1,
        "called again: {view:#}"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn a_permanent_failure_is_dead_lettered_after_one_attempt() {
    let fleet = TestFleet::start().await;
    let c = fleet.charge();
    fleet.scenario(c.id, &["400"]).await;
    fleet.publish(&c).await;
    let events = fleet.events.terminal(c.id, Duration::from_secs(20)).await;
    let failed = terminal(&events);
    assert_eq!(failed.status, Status::Failed);
    let error = failed.error.as_ref().unwrap();
    assert_eq!(error.class, ErrorClass::Permanent);
    assert_eq!(error.http_status, Some(400));
    assert_eq!(failed.attempt, 1);
    assert_eq!(
        fleet.sandbox_view(c.id).await["requests"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "no retry"
    );

    let dead = fleet.dead_letters("payment").await;
    assert_eq!(dead.len(), 1, "dead-lettered once");
    let (headers, body) = &dead[0];
    assert_eq!(body, &c.to_bytes(), "the original body is kept");
    assert_eq!(
        headers.header_str("x-switchyard-error-class").as_deref(),
        Some("permanent")
    );
    assert!(
        headers
            .header_str("x-switchyard-error")
            .unwrap()
            .contains("http_400")
    );
    assert_eq!(headers.header_int("x-switchyard-attempts"), Some(1));
    assert!(
        chrono::DateTime::parse_from_rfc3339(
            &headers.header_str("x-switchyard-failed-at").unwrap()
        )
        .is_ok()
    );
    fleet.stop().await;
}

#[tokio::test]
async fn retries_are_exhausted_into_the_dead_letter_queue() {
    let fleet = TestFleet::start_with(TestFleetOptions {
        max_attempts: 2,
        ..Default::default()
    })
    .await;
    let c = fleet.charge();
    fleet
        .scenario(c.id, &["500", "500", "500", "500", "500"])
        .await;
    fleet.publish(&c).await;
    let events = fleet.events.terminal(c.id, Duration::from_secs(20)).await;
    let failed = terminal(&events);
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(failed.attempt, 2);
    assert_eq!(failed.error.as_ref().unwrap().class, ErrorClass::Transient);
    let dead = fleet.dead_letters("payment").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0.header_int("x-switchyard-attempts"), Some(2));
    fleet.stop().await;
}

#[tokio::test]
async fn invalid_commands_and_random_bytes_are_dead_lettered_once_while_valid_ones_complete() {
    let fleet = TestFleet::start().await;
    let before = fleet.charge();
    fleet.publish(&before).await;

    let mut invalid = fleet.charge();
    invalid.payload.insert("amount".into(), (-5).into());
    fleet.publish(&invalid).await;
    let garbage: Vec<u8> = (0..512u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fleet.publish_raw("payment.sandbox.charge", &garbage).await;

    let after: Vec<_> = (0..5).map(|_| fleet.charge()).collect();
    for c in &after {
        fleet.publish(c).await;
    }
    for c in std::iter::once(&before).chain(&after) {
        let events = fleet.events.terminal(c.id, Duration::from_secs(20)).await;
        assert_eq!(terminal(&events).status, Status::Completed);
    }
    let events = fleet
        .events
        .terminal(invalid.id, Duration::from_secs(20))
        .await;
    let failed = terminal(&events);
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(failed.error.as_ref().unwrap().class, ErrorClass::Invalid);
    assert!(
        failed
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("payload.amount"),
        "{failed:#?}"
    );
    assert_eq!(
        fleet.sandbox_view(invalid.id).await["requests"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    let dead = fleet.dead_letters("payment").await;
    assert_eq!(
        dead.len(),
        2,
        "each poison message dead-lettered exactly once"
    );
    assert!(
        dead.iter()
            .all(|(h, _)| h.header_str("x-switchyard-error-class").as_deref() == Some("invalid"))
    );
    assert!(
        dead.iter().any(|(_, b)| b == &garbage),
        "the random bytes are kept as they were"
    );
    fleet.stop().await;
}

/// The provider answered, then reporting failed (the broker refusing events: here a queue bound
/// to the events exchange that rejects every publish). The worker tries again in place, finds
/// the step begun and undecided, and used to treat it as a call its worker died in: at a
/// provider that takes no key, `unknown` (code interrupted), though the answer had been in hand.
/// The answer is kept for the tries after it: one call, `completed`, no `unknown`.
#[tokio::test]
async fn an_answer_whose_report_failed_is_not_thrown_away() {
    use switchyard_amqp::lapin::options::{
        QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    };
    use switchyard_amqp::lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

    let fleet = TestFleet::start().await;
    let session = fleet.broker.session().await.unwrap();
    let ch = session.connection.create_channel().await.unwrap();
    let mut refusing = FieldTable::default();
    refusing.insert(ShortString::from("x-max-length"), AMQPValue::LongInt(0));
    refusing.insert(
        ShortString::from("x-overflow"),
        AMQPValue::LongString(LongString::from(b"reject-publish".to_vec())),
    );
    ch.queue_declare(
        "refuse-events".into(),
        QueueDeclareOptions::default(),
        refusing,
    )
    .await
    .unwrap();
    ch.queue_bind(
        "refuse-events".into(),
        switchyard_amqp::topology::EVENTS_EXCHANGE.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    let mut c = fleet.charge();
    c.provider = ONESHOT_PROVIDER.parse().unwrap();
    fleet.publish(&c).await;
    // Called, answered, and its report refused.
    let called = tokio::time::Instant::now() + Duration::from_secs(20);
    while fleet.sandbox_view(c.id).await["effects"] != 1 {
        assert!(tokio::time::Instant::now() < called, "never called");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    ch.queue_delete("refuse-events".into(), QueueDeleteOptions::default())
        .await
        .unwrap();

    let mut events = fleet.events.terminal(c.id, Duration::from_secs(60)).await;
    // Delivered at least once: a core app keeps the first of each event id.
    let mut seen = std::collections::HashSet::new();
    events.retain(|e| seen.insert(e.event_id));
    assert_eq!(terminal(&events).status, Status::Completed, "{events:#?}");
    assert!(!statuses(&events).contains(&Status::Unknown), "{events:#?}");
    let view = fleet.sandbox_view(c.id).await;
    assert_eq!(view["effects"], 1, "{view:#}");
    assert_eq!(
        view["requests"].as_array().unwrap().len(),
        1,
        "called once: {view:#}"
    );
    fleet.stop().await;
}

/// The attempt header is Switchyard's own, but it arrives on the command queue with everything
/// else: a value no run can reach (a forged or corrupted header) must be refused as invalid, not
/// counted on from (where `u32::MAX + 1` overflowed and the delivery never got an outcome).
#[tokio::test]
async fn an_attempt_header_no_run_can_reach_is_refused_as_invalid() {
    let fleet = TestFleet::start().await;
    let forged: Vec<_> = [i64::from(u32::MAX), 1_000, -3]
        .into_iter()
        .map(|n| (fleet.charge(), n))
        .collect();
    for (c, n) in &forged {
        switchyard_amqp::messages::publish_command(
            &fleet.publisher,
            c,
            switchyard_amqp::Headers::default().int("x-switchyard-attempt", *n),
        )
        .await
        .unwrap();
    }
    let fine = fleet.charge();
    fleet.publish(&fine).await;
    let events = fleet
        .events
        .terminal(fine.id, Duration::from_secs(20))
        .await;
    assert_eq!(terminal(&events).status, Status::Completed);
    for (c, n) in &forged {
        let events = fleet.events.terminal(c.id, Duration::from_secs(20)).await;
        let failed = terminal(&events);
        assert_eq!(failed.status, Status::Failed, "attempt {n}: {events:#?}");
        let error = failed.error.as_ref().unwrap();
        assert_eq!(error.class, ErrorClass::Invalid, "attempt {n}: {error:?}");
        assert!(
            error.message.contains("x-switchyard-attempt"),
            "attempt {n}: {error:?}"
        );
        assert_eq!(
            fleet.sandbox_view(c.id).await["requests"]
                .as_array()
                .unwrap()
                .len(),
            0,
            "attempt {n}: the provider is never called"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(fleet.dead_letters("payment").await.len(), forged.len());
    fleet.stop().await;
}

#[tokio::test]
async fn an_expired_command_fails_with_class_expired() {
    let fleet = TestFleet::start().await;
    let mut c = fleet.charge();
    c.deadline = Some(chrono::Utc::now() - chrono::Duration::seconds(1));
    fleet.publish(&c).await;
    let events = fleet.events.terminal(c.id, Duration::from_secs(20)).await;
    let failed = terminal(&events);
    assert_eq!(failed.error.as_ref().unwrap().class, ErrorClass::Expired);
    assert_eq!(
        fleet.sandbox_view(c.id).await["requests"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    fleet.stop().await;
}

/// Starts each binary with `toml` and expects a refusal whose message names `key` and `needle`.
fn refused_at_start(toml: &str, bins: &[&str], key: &str, needle: &str) {
    let dir = std::env::temp_dir().join(format!("switchyard-refused-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("switchyard.toml");
    std::fs::write(&config, toml.replace("{dir}", &dir.display().to_string())).unwrap();
    std::fs::write(dir.join("empty-secret"), "\n").unwrap();
    for bin in bins {
        let out = std::process::Command::new(binary(bin))
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bin} must refuse to start");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{bin}: {stderr}");
        assert!(stderr.contains(needle), "{bin}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_plain_http_provider_url_is_refused_at_start() {
    refused_at_start(
        "[[providers]]\nname = \"acme\"\nkind = \"payment\"\ntype = \"http\"\n\
         base_url = \"http://pay.acme.example/api\"\noperations = [\"charge\"]\n",
        &["switchyard-payment", "switchyard-ingress"],
        "providers[0].base_url",
        "http://",
    );
}

#[test]
fn missing_or_empty_webhook_secrets_and_a_status_path_without_reference_are_refused_at_start() {
    refused_at_start(
        "[[providers]]\nname = \"acme\"\nkind = \"shipping\"\ntype = \"http\"\n\
         base_url = \"https://ship.acme.example/api\"\noperations = [\"create_label\"]\n\
         webhook_secret_file = \"{dir}/empty-secret\"\n",
        &["switchyard-shipping", "switchyard-ingress"],
        "providers[0].webhook_secret_file",
        "is empty",
    );
    refused_at_start(
        "[[providers]]\nname = \"acme\"\nkind = \"shipping\"\ntype = \"http\"\n\
         base_url = \"https://ship.acme.example/api\"\noperations = [\"create_label\"]\n\
         status_path = \"operations/latest\"\n",
        &["switchyard-shipping"],
        "providers[0].status_path",
        "{reference}",
    );
    // A webhook provider signs every delivery: no secret, no start.
    refused_at_start(
        "[[providers]]\nname = \"partners\"\nkind = \"notification\"\ntype = \"webhook\"\n\
         operations = [\"send_webhook\"]\n",
        &["switchyard-notification", "switchyard-ingress"],
        "providers[0].signing_secret_env",
        "signing_secret_file",
    );
    refused_at_start(
        "[[providers]]\nname = \"partners\"\nkind = \"notification\"\ntype = \"webhook\"\n\
         operations = [\"send_webhook\"]\nsigning_secret_file = \"{dir}/empty-secret\"\n",
        &["switchyard-notification"],
        "providers[0].signing_secret_file",
        "is empty",
    );
}

#[tokio::test]
async fn a_failing_provider_opens_its_circuit_and_commands_wait_instead_of_calling_it() {
    let fleet = TestFleet::start_with(TestFleetOptions {
        extra_toml: "[worker.circuit]\nmin_calls = 2\nopen_ms = 1500\nhalf_open_calls = 1\n"
            .to_owned(),
        ..TestFleetOptions::default()
    })
    .await;
    // Two commands failing (twice each: the quick retry is inside one call of the circuit):
    // 2 failed calls of 2.
    let failing: Vec<_> = (0..2).map(|_| fleet.charge()).collect();
    for c in &failing {
        fleet.scenario(c.id, &["503", "503"]).await;
        fleet.publish(c).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !failing
        .iter()
        .all(|c| statuses(&fleet.events.of(c.id)).contains(&Status::Retrying))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the failures never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Open now: a fresh command is held back without a call, and the gauge says open (2).
    let held = fleet.charge();
    fleet.publish(&held).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let retry = loop {
        if let Some(e) = fleet
            .events
            .of(held.id)
            .into_iter()
            .find(|e| e.status == Status::Retrying)
        {
            break e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:#?}",
            fleet.events.of(held.id)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let error = retry.error.as_ref().unwrap();
    assert_eq!(
        (error.class, error.code.as_str()),
        (ErrorClass::Transient, "circuit_open")
    );
    assert_eq!(circuit_gauge(&fleet).await, "open");
    // After the open time, trial calls close it again and everything completes.
    for c in failing.iter().chain([&held]) {
        let events = fleet.events.terminal(c.id, Duration::from_secs(30)).await;
        assert_eq!(terminal(&events).status, Status::Completed, "{events:#?}");
    }
    let requests = fleet.sandbox_view(held.id).await["requests"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        requests, 1,
        "the held command called the provider once, after the circuit closed"
    );
    assert_eq!(circuit_gauge(&fleet).await, "closed");
    fleet.stop().await;
}

/// The payment worker's circuit state for the sandbox provider: the `state` of the one
/// `switchyard_circuit_state` series at 1 (a state set: the others are at 0).
async fn circuit_gauge(fleet: &TestFleet) -> String {
    let metrics = worker_metrics(fleet).await;
    // Every in-process worker serves the one registry: the same series appear once per worker.
    let series: std::collections::BTreeMap<&str, &str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("switchyard_circuit_state{")
                && l.contains("kind=\"payment\"")
                && l.contains("provider=\"sandbox\"")
        })
        .map(|l| {
            let state = l
                .split("state=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            (state, l.rsplit(' ').next().unwrap())
        })
        .collect();
    assert_eq!(
        series.keys().copied().collect::<Vec<_>>(),
        ["closed", "half_open", "open"],
        "one series per state:\n{metrics}"
    );
    let current: Vec<&str> = series
        .iter()
        .filter(|(_, v)| **v == "1")
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(current.len(), 1, "one state at 1:\n{metrics}");
    current[0].to_owned()
}

async fn worker_metrics(fleet: &TestFleet) -> String {
    let mut text = String::new();
    for worker in &fleet.fleet.as_ref().unwrap().workers {
        let url = format!("http://{}/metrics", worker.ops_addr);
        text.push_str(
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
    text
}
