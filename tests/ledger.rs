//! The ledger end to end: status and history of completed, retried, failed and dead-lettered
//! commands on the ingress's base URL; a ledger stopped during a run catches up with nothing
//! lost; one message its database refuses is parked, not looped on; an operator ends an
//! `unknown` outcome exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_core::Status;
use switchyard_testing::{TOKEN, TestFleet};
use tokio_util::sync::CancellationToken;

/// The ledger's answer for `id` once it shows a terminal status.
async fn settled(fleet: &TestFleet, id: uuid::Uuid) -> Value {
    fleet
        .ledger_view_when(id, |v| {
            matches!(v["status"].as_str(), Some("completed" | "failed"))
        })
        .await
}

#[tokio::test]
async fn the_ledger_knows_status_history_and_attempts() {
    let fleet = TestFleet::start().await;
    let completed = fleet.charge();
    let retried = fleet.charge();
    fleet.scenario(retried.id, &["503", "503", "ok"]).await;
    let failed = fleet.charge();
    fleet.scenario(failed.id, &["400"]).await;
    let mut invalid = fleet.charge();
    invalid.payload.insert("amount".into(), 0.into());
    for c in [&completed, &retried, &failed, &invalid] {
        fleet.publish(c).await;
    }

    let v = settled(&fleet, completed.id).await;
    assert_eq!(v["status"], "completed");
    assert_eq!(v["kind"], "payment");
    assert_eq!(v["metadata"]["test"], "yes");
    assert!(
        v["provider_reference"]
            .as_str()
            .unwrap()
            .starts_with("sbx_")
    );
    let statuses: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["pending", "processing", "completed"]);
    let attempts = v["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["status"], 200);
    assert_eq!(attempts[0]["method"], "POST");
    assert!(
        attempts[0]["request_body"]
            .as_str()
            .unwrap()
            .contains("pm_card_visa")
    );
    assert_eq!(
        attempts[0]["request_headers"]["idempotency-key"],
        "[REDACTED]"
    );

    let v = settled(&fleet, retried.id).await;
    assert_eq!(
        (v["status"].as_str(), v["attempt"].as_u64()),
        (Some("completed"), Some(2))
    );
    assert!(
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["status"] == "retrying")
    );
    let codes: Vec<u64> = v["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_u64().unwrap())
        .collect();
    assert_eq!(
        codes,
        [503, 503, 200],
        "every request, quick retries included"
    );

    let v = settled(&fleet, failed.id).await;
    assert_eq!(v["status"], "failed");
    assert_eq!(v["error"]["class"], "permanent");

    let v = settled(&fleet, invalid.id).await;
    assert_eq!(v["status"], "failed");
    assert_eq!(v["error"]["class"], "invalid");
    assert!(v["attempts"].as_array().unwrap().is_empty());

    // Unknown, unauthenticated, malformed.
    let base = fleet.ingress_url();
    let r = fleet
        .http()
        .get(format!("{base}/v1/commands/{}", uuid::Uuid::now_v7()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = fleet
        .http()
        .get(format!("{base}/v1/commands/{}", completed.id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = fleet
        .http()
        .get(format!("{base}/v1/commands/nope"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // The operators' list, filtered and paginated.
    let list = |q: &'static str| {
        let http = fleet.http().clone();
        let url = format!("{base}/v1/commands?{q}");
        async move {
            http.get(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let failed_page = list("status=failed&kind=payment").await;
    let ids: Vec<&str> = failed_page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{failed_page}");
    let first = list("limit=2").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let second = fleet
        .http()
        .get(format!("{base}/v1/commands?limit=2&cursor={cursor}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(second["items"].as_array().unwrap().len(), 2);
    assert!(second["next_cursor"].is_null());
    let r = fleet
        .http()
        .get(format!("{base}/v1/commands?status=bogus"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    fleet.stop().await;
}

#[tokio::test]
async fn a_stopped_ledger_catches_up_with_nothing_lost() {
    let mut fleet = TestFleet::start().await;
    let ledger = fleet.fleet.as_mut().unwrap().ledger.take().unwrap();
    ledger.stop().await;

    // Commands complete at full speed without the ledger.
    let commands: Vec<_> = (0..50).map(|_| fleet.charge()).collect();
    for c in &commands {
        fleet.publish(c).await;
    }
    for c in &commands {
        let events = fleet.events.terminal(c.id, Duration::from_secs(30)).await;
        assert!(events.iter().any(|e| e.status == Status::Completed));
    }

    // Back again: everything that happened meanwhile is applied.
    let ledger = switchyard_ledger::start(&fleet.config, CancellationToken::new())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for c in &commands {
        loop {
            let view = ledger.store.command(c.id).await.unwrap();
            let done = view
                .as_ref()
                .and_then(|v| v.summary.as_ref())
                .map(|s| s.status)
                == Some(Status::Completed);
            if done
                && view
                    .as_ref()
                    .is_some_and(|v| v.events.len() == 3 && v.attempts.len() == 1)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "command {} never caught up: {view:?}",
                c.id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    ledger.stop().await;
    fleet.stop().await;
}

/// A throwaway PostgreSQL database: its URL, and the admin URL and statement that drop it.
async fn postgres_database() -> (String, String, String) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let admin = std::env::var("SWITCHYARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("sy_ledger_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::AnyConnection::connect(&admin).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    (
        format!("{base}/{name}"),
        admin.clone(),
        format!("DROP DATABASE \"{name}\" WITH (FORCE)"),
    )
}

async fn execute(url: &str, sql: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

/// Issue 11: one message the database refuses used to requeue its whole batch every second,
/// forever, and every later command stayed 404. Now NUL in a reference is simply stored, and
/// a message the database still refuses (here: a constraint the test adds, as a stand-in for
/// anything the database cannot take) is isolated and parked in switchyard.dlq.ledger with
/// its reason while the rest of its batch is written.
#[tokio::test]
async fn one_message_cannot_stop_the_ledger() {
    use switchyard_amqp::lapin::options::BasicGetOptions;
    use switchyard_amqp::topology::{LEDGER_DLQ, LEDGER_EVENTS_QUEUE};
    use switchyard_amqp::{HeaderRead, messages::publish_event};
    use switchyard_core::{Lifecycle, Secret};

    let fleet = TestFleet::start_with(switchyard_testing::TestFleetOptions {
        in_process: false,
        ..Default::default()
    })
    .await;
    let (url, admin, drop_sql) = postgres_database().await;
    // The schema first, then a refusal the database enforces.
    switchyard_ledger::Store::connect(&url)
        .await
        .unwrap()
        .close()
        .await;
    execute(
        &url,
        "ALTER TABLE events ADD CONSTRAINT no_poison CHECK (body NOT LIKE '%poison-pill%')",
    )
    .await;
    let mut config = fleet.config.clone();
    config.ledger.database_url = Secret::new(url.clone());
    config.ledger.batch_max_wait_ms = 200;
    let ledger = switchyard_ledger::start(&config, CancellationToken::new())
        .await
        .unwrap();
    assert!(ledger.broker.wait_ready(Duration::from_secs(20)).await);

    let now = chrono::Utc::now();
    let good: Vec<_> = (0..12).map(|_| fleet.charge()).collect();
    let mut poison = fleet.charge();
    poison.metadata =
        std::collections::BTreeMap::from([("note".to_owned(), "poison-pill".to_owned())])
            .try_into()
            .unwrap();
    let mut all = good.clone();
    all.insert(5, poison.clone());
    for (i, c) in all.iter().enumerate() {
        let lc = Lifecycle::of(c);
        let (a, p) = lc.begin(1, now);
        // The defect's own trigger: NUL in the provider's reference.
        let reference = if i % 3 == 0 { "sbx_\0nul" } else { "sbx_ok" };
        let done = a.complete(serde_json::json!({"ok": true}), Some(reference.into()), now);
        for e in [lc.pending(now), p, done] {
            publish_event(&fleet.publisher, &e, None).await.unwrap();
        }
    }

    // Every good command is visible, NUL references included.
    let deadline = Instant::now() + Duration::from_secs(30);
    for c in &good {
        loop {
            let view = ledger.store.command(c.id).await.unwrap();
            if let Some(s) = view.and_then(|v| v.summary)
                && s.status == Status::Completed
            {
                assert!(s.provider_reference.unwrap().starts_with("sbx_"));
                break;
            }
            assert!(Instant::now() < deadline, "{} never written", c.id);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The poison's events are parked with the reason and the queue they came from; the
    // ledger queue is empty (no requeue loop).
    let session = fleet.broker.session().await.unwrap();
    let ch = session.connection.create_channel().await.unwrap();
    let mut parked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while parked.len() < 3 {
        match ch
            .basic_get(LEDGER_DLQ.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(m) => parked.push(m.delivery),
            None => {
                assert!(Instant::now() < deadline, "parked: {}", parked.len());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    for d in &parked {
        let e = switchyard_core::Event::decode(&d.data).unwrap();
        assert_eq!(e.command_id, poison.id);
        let h = d.properties.headers();
        assert_eq!(
            h.header_str("x-switchyard-source-queue").as_deref(),
            Some(LEDGER_EVENTS_QUEUE)
        );
        assert_eq!(
            h.header_str("x-switchyard-error-class").as_deref(),
            Some("invalid")
        );
        let reason = h.header_str("x-switchyard-error").unwrap();
        assert!(
            reason.starts_with("ledger_refused:") && reason.contains("no_poison"),
            "{reason}"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        ch.basic_get(LEDGER_DLQ.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .is_none(),
        "only the poison's three events are parked"
    );
    // Nothing left to loop on: the ledger's queue holds no message.
    assert_eq!(fleet.ready(LEDGER_EVENTS_QUEUE).await, 0);
    assert!(ledger.store.command(poison.id).await.unwrap().is_none());

    // Later commands still arrive.
    let later = fleet.charge();
    let lc = Lifecycle::of(&later);
    publish_event(&fleet.publisher, &lc.pending(now), None)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while ledger.store.command(later.id).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "a later command is written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    ledger.stop().await;
    drop(session);
    fleet.stop().await;
    execute(&admin, &drop_sql).await;
}

/// What the worker publishes for an `unknown` outcome: the wait record (reason unknown, the
/// provider key as reference, no deadline of its own), then the events up to `unknown`.
async fn publish_unknown(fleet: &TestFleet, c: &switchyard_core::Command) {
    use switchyard_amqp::Headers;
    use switchyard_amqp::messages::{publish_callback_message, publish_event};
    use switchyard_core::waiting::WAIT_TYPE_V1;
    use switchyard_core::{ErrorClass, ErrorInfo, Lifecycle, WaitReason, WaitRecord};
    let now = chrono::Utc::now();
    let record = WaitRecord {
        command: c.clone(),
        attempt: 1,
        run: 0,
        reason: WaitReason::Unknown,
        reference: format!("key_{}", c.id.simple()),
        since: now,
        expires_at: now,
    };
    publish_callback_message(
        &fleet.publisher,
        WAIT_TYPE_V1,
        &format!("wait.{}.1", c.id),
        &record.to_bytes(),
        None,
        Headers::default(),
    )
    .await
    .unwrap();
    let lc = Lifecycle::of(c);
    let (a, p) = lc.begin(1, now);
    let (_, unknown) = a.unknown(
        ErrorInfo::new(
            ErrorClass::Unknown,
            "unreadable",
            "a 200 whose body was cut",
        ),
        now,
    );
    for e in [lc.pending(now), p, unknown] {
        publish_event(&fleet.publisher, &e, None).await.unwrap();
    }
}

/// POSTs a resolution until the resolver has recorded the wait (it travels on another
/// queue than the events), returning the final answer.
async fn post_resolution(
    fleet: &TestFleet,
    id: uuid::Uuid,
    body: serde_json::Value,
) -> reqwest::Response {
    let url = format!("{}/v1/commands/{id}/resolution", fleet.ingress_url());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = fleet
            .http()
            .post(&url)
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        if r.status() != 409 || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 11: an operator ends an `unknown` outcome with `switchyard resolve` (or the
/// endpoint behind it): exactly one terminal event, the ledger shows it with who and why; a
/// second, different resolution is refused; failing one dead-letters the command.
#[tokio::test]
async fn an_operator_resolves_an_unknown_outcome_once() {
    let fleet = TestFleet::start().await;
    let charged = fleet.charge();
    let lost = fleet.charge();
    for c in [&charged, &lost] {
        publish_unknown(&fleet, c).await;
        fleet
            .ledger_view_when(c.id, |v| v["status"] == "unknown")
            .await;
    }

    // Bad requests: unauthenticated, unknown id, bad body.
    let base = fleet.ingress_url();
    let url = format!("{base}/v1/commands/{}/resolution", charged.id);
    let body = serde_json::json!({"status": "completed", "reason": "seen in the provider's dashboard", "by": "ana"});
    let r = fleet.http().post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = fleet
        .http()
        .post(format!(
            "{base}/v1/commands/{}/resolution",
            uuid::Uuid::now_v7()
        ))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = fleet
        .http()
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"status": "maybe", "by": "ana"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(r.headers()["content-type"], "application/problem+json");

    // Through the CLI, as an operator would.
    let cli = switchyard_e2e::binary("switchyard");
    let config = std::env::temp_dir().join(format!("sy-resolve-{}.toml", charged.id.simple()));
    std::fs::write(&config, &fleet.config_toml).unwrap();
    let run = |args: Vec<String>| {
        let config = config.clone();
        let cli = cli.clone();
        let base = base.clone();
        async move {
            tokio::process::Command::new(cli)
                .args(args)
                .arg("--config")
                .arg(config)
                .arg("--url")
                .arg(base)
                .env("SWITCHYARD_TOKEN", TOKEN)
                .env_remove("SWITCHYARD_CONFIG")
                .output()
                .await
                .unwrap()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let out = loop {
        let out = run(vec![
            "resolve".into(),
            charged.id.to_string(),
            "completed".into(),
            "--reason".into(),
            "seen in the provider's dashboard".into(),
            "--by".into(),
            "ana".into(),
            "--json".into(),
        ])
        .await;
        // 409 until the resolver recorded the wait (another queue than the events).
        if out.status.code() == Some(0) || Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let event: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(event["status"], "completed");
    assert_eq!(event["result"]["resolved_by"], "ana");

    let events = fleet
        .events
        .terminal(charged.id, Duration::from_secs(15))
        .await;
    let terminal = switchyard_e2e::terminal(&events);
    assert_eq!(terminal.status, Status::Completed);
    assert_eq!(terminal.event_id.to_string(), event["event_id"]);

    // A second, different resolution is refused (exit 1), and nothing more is published.
    let out = run(vec![
        "resolve".into(),
        charged.id.to_string(),
        "failed".into(),
        "--by".into(),
        "bo".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already ended"));
    let out = run(vec![
        "resolve".into(),
        uuid::Uuid::now_v7().to_string(),
        "failed".into(),
        "--by".into(),
        "bo".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(3));

    let v = fleet
        .ledger_view_when(charged.id, |v| v["status"] == "completed")
        .await;
    assert_eq!(v["resolution"]["by"], "ana");
    assert_eq!(v["resolution"]["status"], "completed");
    assert_eq!(
        v["resolution"]["reason"],
        "seen in the provider's dashboard"
    );
    assert_eq!(v["run"], 0);

    // Failed by an operator: class unknown, code operator_resolved, and a dead letter.
    let r = post_resolution(
        &fleet,
        lost.id,
        serde_json::json!({"status": "failed", "reason": "no charge at the provider", "by": "bo"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let events = fleet
        .events
        .terminal(lost.id, Duration::from_secs(15))
        .await;
    let terminal = switchyard_e2e::terminal(&events);
    assert_eq!(terminal.status, Status::Failed);
    let error = terminal.error.as_ref().unwrap();
    assert_eq!(
        (error.class.as_str(), error.code.as_str()),
        ("unknown", "operator_resolved")
    );
    let v = fleet
        .ledger_view_when(lost.id, |v| v["status"] == "failed")
        .await;
    assert_eq!(v["resolution"]["by"], "bo");
    let deadline = Instant::now() + Duration::from_secs(10);
    let dead = loop {
        let d = fleet.dead_letters("payment").await;
        if !d.is_empty() || Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dead.len(), 1);
    let cmd: switchyard_core::Command = serde_json::from_slice(&dead[0].1).unwrap();
    assert_eq!(cmd.id, lost.id);

    // Exactly one terminal event each, still.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for c in [&charged, &lost] {
        switchyard_e2e::terminal(&fleet.events.of(c.id));
    }
    let _ = std::fs::remove_file(config);
    fleet.stop().await;
}

/// A written batch is settled at once, one `multiple` ack per queue's channel (issue 15): over
/// several batches of both ledger queues, every message the ledger wrote is acknowledged. One
/// left unacknowledged would come back to its queue when the ledger's channels close, so after
/// the ledger stops both queues must be empty.
#[tokio::test]
async fn every_message_the_ledger_wrote_is_acknowledged() {
    use switchyard_amqp::messages::{publish_attempt, publish_event};
    use switchyard_amqp::topology::{LEDGER_ATTEMPTS_QUEUE, LEDGER_EVENTS_QUEUE};
    use switchyard_core::{AttemptRecord, Lifecycle, Name};

    let fleet = TestFleet::start_with(switchyard_testing::TestFleetOptions {
        in_process: false,
        ..Default::default()
    })
    .await;
    let mut config = fleet.config.clone();
    // Batches of 40 messages at most: the 300 below take several of each queue.
    config.ledger.batch_size = 40;
    let ledger = switchyard_ledger::start(&config, CancellationToken::new())
        .await
        .unwrap();
    assert!(ledger.broker.wait_ready(Duration::from_secs(20)).await);

    let now = chrono::Utc::now();
    let commands: Vec<_> = (0..150).map(|_| fleet.charge()).collect();
    for c in &commands {
        publish_event(&fleet.publisher, &Lifecycle::of(c).pending(now), None)
            .await
            .unwrap();
        let record = AttemptRecord {
            record_id: uuid::Uuid::new_v4(),
            command_id: c.id,
            attempt: 1,
            kind: Name::new("payment").unwrap(),
            provider: c.provider.clone(),
            operation: c.operation.clone(),
            method: "POST".into(),
            url: "https://provider.test/charges".into(),
            status: Some(200),
            duration_ms: 3,
            started_at: now,
            request_headers: Default::default(),
            request_body: "{}".into(),
            response_headers: Default::default(),
            response_body: "{}".into(),
            error_class: None,
            error: None,
        };
        publish_attempt(&fleet.publisher, &record).await.unwrap();
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    for c in &commands {
        loop {
            let view = ledger.store.command(c.id).await.unwrap();
            if view.is_some_and(|v| v.summary.is_some() && v.attempts.len() == 1) {
                break;
            }
            assert!(Instant::now() < deadline, "{} never written", c.id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    ledger.stop().await;
    // The broker returns a closed channel's unacknowledged deliveries to their queues.
    tokio::time::sleep(Duration::from_millis(500)).await;

    for queue in [LEDGER_EVENTS_QUEUE, LEDGER_ATTEMPTS_QUEUE] {
        assert_eq!(
            fleet.ready(queue).await,
            0,
            "{queue} got back messages the ledger wrote but never acknowledged"
        );
    }
    fleet.stop().await;
}
