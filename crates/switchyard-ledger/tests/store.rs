//! The store, against both databases: SQLite in a temporary file and the real PostgreSQL on
//! 127.0.0.1:5432, each test in its own throwaway database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{Duration, Utc};
use serde_json::json;
use switchyard_core::{
    AttemptRecord, Callback, CallbackOutcome, Command, ErrorClass, ErrorInfo, Event, Lifecycle,
    Status, WaitRecord,
};
use switchyard_ledger::{ListFilter, Resolution, Store};
use uuid::Uuid;

/// A database that exists for one test.
struct TestDb {
    store: Store,
    drop_sql: Option<(String, String)>,
    _dir: Option<std::path::PathBuf>,
}

impl TestDb {
    async fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(format!("sy-ledger-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("ledger.db").display());
        Self {
            store: Store::connect(&url).await.unwrap(),
            drop_sql: None,
            _dir: Some(dir),
        }
    }

    async fn postgres() -> Self {
        sqlx::any::install_default_drivers();
        let admin = std::env::var("SWITCHYARD_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("sy_ledger_{}", Uuid::new_v4().simple());
        let mut conn = sqlx::AnyConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is needed for this test and is unreachable at {admin}: {e}\n\
                 Start it (`pg_ctlcluster 15 main start`, or `docker compose up -d postgres`) \
                 or set SWITCHYARD_TEST_POSTGRES_URL"
                )
            });
        use sqlx::Connection;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let url = match admin.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("bad admin url"),
        };
        Self {
            store: Store::connect(&url).await.unwrap(),
            drop_sql: Some((admin, format!("DROP DATABASE \"{name}\" WITH (FORCE)"))),
            _dir: None,
        }
    }

    async fn cleanup(self) {
        self.store.close().await;
        if let Some((admin, sql)) = self.drop_sql {
            use sqlx::Connection;
            let mut conn = sqlx::AnyConnection::connect(&admin).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        if let Some(dir) = self._dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test] async fn $name() { let db = super::TestDb::sqlite().await; super::$name(&db.store).await; db.cleanup().await; } )* }
        mod postgres { $( #[tokio::test] async fn $name() { let db = super::TestDb::postgres().await; super::$name(&db.store).await; db.cleanup().await; } )* }
    };
}

both!(
    a_completed_command_has_status_and_history,
    a_retried_command_keeps_every_attempt,
    a_failed_command_keeps_its_error,
    duplicates_change_nothing,
    out_of_order_events_end_in_the_right_state,
    one_batch_with_every_event_shuffled_and_twice,
    a_terminal_state_is_never_left,
    attempts_before_any_event_are_kept,
    pagination_and_filters,
    prune_empties_old_bodies_only,
    forgotten_webhook_ids_still_have_no_second_effect,
);

fn command(kind: &str) -> Command {
    serde_json::from_value(json!({
        "id": Uuid::now_v7(), "kind": kind, "provider": "sandbox", "operation": "charge",
        "payload": {}, "metadata": {"order": "42"}, "created_at": Utc::now(),
    }))
    .unwrap()
}

fn record(c: &Command, attempt: u32, status: u16, started: chrono::DateTime<Utc>) -> AttemptRecord {
    AttemptRecord {
        record_id: Uuid::now_v7(),
        command_id: c.id,
        attempt,
        kind: c.kind.clone(),
        provider: c.provider.clone(),
        operation: c.operation.clone(),
        method: "POST".into(),
        url: "https://localhost/generic/payment/charge".into(),
        status: Some(status),
        duration_ms: 12,
        started_at: started,
        request_headers: [("authorization".to_owned(), "[REDACTED]".to_owned())].into(),
        request_body: "{\"amount\":1}".into(),
        response_headers: Default::default(),
        response_body: "{\"reference\":\"r\"}".into(),
        error_class: (status >= 500).then_some(ErrorClass::Transient),
        error: None,
    }
}

fn transient() -> ErrorInfo {
    ErrorInfo::new(ErrorClass::Transient, "http_503", "provider answered 503")
}

/// pending -> processing(1) -> retrying(1) -> processing(2) -> completed(2).
fn retried_history(c: &Command) -> Vec<Event> {
    let now = Utc::now();
    let lc = Lifecycle::of(c);
    let (a1, p1) = lc.begin(1, now);
    let r1 = a1.retry(transient(), now + Duration::seconds(1), now);
    let (a2, p2) = lc.begin(2, now + Duration::seconds(1));
    let done = a2.complete(
        json!({"reference": "sbx_1"}),
        Some("sbx_1".into()),
        now + Duration::seconds(1),
    );
    vec![lc.pending(now), p1, r1, p2, done]
}

async fn a_completed_command_has_status_and_history(store: &Store) {
    let c = command("payment");
    let now = Utc::now();
    let lc = Lifecycle::of(&c);
    let (a, p) = lc.begin(1, now);
    let events = vec![
        lc.pending(now),
        p,
        a.complete(json!({"ok": true}), Some("ref_1".into()), now),
    ];
    store
        .apply(&events, &[record(&c, 1, 200, now)])
        .await
        .unwrap();
    let view = store.command(c.id).await.unwrap().unwrap();
    let s = view.summary.unwrap();
    assert_eq!(s.status, Status::Completed);
    assert_eq!(s.provider_reference.as_deref(), Some("ref_1"));
    assert_eq!(s.result, Some(json!({"ok": true})));
    assert_eq!(s.metadata, json!({"order": "42"}));
    assert_eq!(
        view.events.iter().map(|e| e.status).collect::<Vec<_>>(),
        vec![Status::Pending, Status::Processing, Status::Completed]
    );
    assert_eq!(view.attempts.len(), 1);
    assert!(store.command(Uuid::now_v7()).await.unwrap().is_none());
}

async fn a_retried_command_keeps_every_attempt(store: &Store) {
    let c = command("payment");
    let now = Utc::now();
    store
        .apply(
            &retried_history(&c),
            &[
                record(&c, 1, 503, now),
                record(&c, 2, 200, now + Duration::seconds(1)),
            ],
        )
        .await
        .unwrap();
    let view = store.command(c.id).await.unwrap().unwrap();
    let s = view.summary.unwrap();
    assert_eq!((s.status, s.attempt), (Status::Completed, 2));
    assert_eq!(view.events.len(), 5);
    assert_eq!(
        view.attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(view.events.windows(2).all(|w| w[0].seq < w[1].seq));
}

async fn a_failed_command_keeps_its_error(store: &Store) {
    let c = command("shipping");
    let now = Utc::now();
    let lc = Lifecycle::of(&c);
    let (a, p) = lc.begin(1, now);
    let failed = a.fail(
        ErrorInfo::new(ErrorClass::Permanent, "http_400", "bad address"),
        now,
    );
    store
        .apply(&[lc.pending(now), p, failed], &[])
        .await
        .unwrap();
    let s = store.command(c.id).await.unwrap().unwrap().summary.unwrap();
    assert_eq!(s.status, Status::Failed);
    assert_eq!(s.error.unwrap()["class"], "permanent");
}

async fn duplicates_change_nothing(store: &Store) {
    let c = command("payment");
    let events = retried_history(&c);
    let r = record(&c, 1, 200, Utc::now());
    store
        .apply(&events, std::slice::from_ref(&r))
        .await
        .unwrap();
    let before = serde_json::to_value(store.command(c.id).await.unwrap().unwrap()).unwrap();
    store
        .apply(&events, std::slice::from_ref(&r))
        .await
        .unwrap();
    store.apply(&events[1..3], &[r]).await.unwrap();
    let after = serde_json::to_value(store.command(c.id).await.unwrap().unwrap()).unwrap();
    assert_eq!(before, after);
}

async fn out_of_order_events_end_in_the_right_state(store: &Store) {
    let c = command("payment");
    let mut events = retried_history(&c);
    events.reverse();
    for e in &events {
        store.apply(std::slice::from_ref(e), &[]).await.unwrap();
    }
    let view = store.command(c.id).await.unwrap().unwrap();
    let s = view.summary.unwrap();
    assert_eq!(s.status, Status::Completed);
    assert_eq!(s.seq, events[0].seq);
    assert_eq!(
        s.created_at.timestamp_millis(),
        events.last().unwrap().occurred_at.timestamp_millis(),
        "created at the first event"
    );
    assert_eq!(view.events.len(), 5);
}

/// A whole waiting history in one batch, shuffled and doubled: the batch is folded per command
/// before its upsert, and the reference of `waiting` survives a `completed` that has none.
async fn one_batch_with_every_event_shuffled_and_twice(store: &Store) {
    let c = command("shipping");
    let now = Utc::now();
    let lc = Lifecycle::of(&c);
    let (a, p) = lc.begin(1, now + Duration::milliseconds(5));
    let (w, waiting) = a.wait("shp_77".into(), now + Duration::milliseconds(10));
    let done = w.complete(json!({"label": "L1"}), None, now + Duration::seconds(60));
    let mut batch = vec![done.clone(), p.clone(), waiting.clone(), lc.pending(now)];
    batch.extend([waiting, lc.pending(now), done, p]);
    store.apply(&batch, &[]).await.unwrap();
    let view = store.command(c.id).await.unwrap().unwrap();
    let s = view.summary.unwrap();
    assert_eq!(s.status, Status::Completed);
    assert_eq!(s.provider_reference.as_deref(), Some("shp_77"));
    assert_eq!(s.result, Some(json!({"label": "L1"})));
    assert_eq!(s.created_at.timestamp_millis(), now.timestamp_millis());
    assert_eq!(view.events.len(), 4);
}

async fn a_terminal_state_is_never_left(store: &Store) {
    let c = command("payment");
    let now = Utc::now();
    let lc = Lifecycle::of(&c);
    let (a, _) = lc.begin(1, now);
    store.apply(&[a.fail(transient(), now)], &[]).await.unwrap();
    // A later attempt's events (a redelivery gone wrong) must not reopen it.
    let (a5, p5) = lc.begin(5, now);
    store
        .apply(&[p5, a5.retry(transient(), now, now)], &[])
        .await
        .unwrap();
    assert_eq!(
        store
            .command(c.id)
            .await
            .unwrap()
            .unwrap()
            .summary
            .unwrap()
            .status,
        Status::Failed
    );
}

async fn attempts_before_any_event_are_kept(store: &Store) {
    let c = command("payment");
    store
        .apply(&[], &[record(&c, 1, 200, Utc::now())])
        .await
        .unwrap();
    let view = store.command(c.id).await.unwrap().unwrap();
    assert!(view.summary.is_none());
    assert_eq!(view.attempts.len(), 1);
    let value = serde_json::to_value(&view).unwrap();
    assert!(value.get("status").is_none());
}

async fn pagination_and_filters(store: &Store) {
    let base = Utc::now() - Duration::hours(1);
    let mut all = Vec::new();
    let mut events = Vec::new();
    for i in 0..120 {
        let c = command(if i % 3 == 0 { "shipping" } else { "payment" });
        let at = base + Duration::seconds(i / 2); // pairs share a timestamp: the id breaks ties
        let lc = Lifecycle::of(&c);
        let mut e = lc.pending(at);
        if i % 4 == 0 {
            let (a, _) = lc.begin(1, at);
            e = a.complete(json!({}), None, at);
        }
        events.push(e);
        all.push(c.id);
    }
    store.apply(&events, &[]).await.unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = store
            .list(&ListFilter {
                limit: 50,
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .unwrap();
        pages += 1;
        assert!(
            page.items
                .windows(2)
                .all(|w| (w[0].created_at, w[0].id) > (w[1].created_at, w[1].id)),
            "newest first"
        );
        seen.extend(page.items.iter().map(|s| s.id));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 120, "no duplicate, none missing");

    let shipping = store
        .list(&ListFilter {
            kind: Some("shipping".into()),
            limit: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shipping.items.len(), 40);
    let completed = store
        .list(&ListFilter {
            status: Some(Status::Completed),
            limit: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(completed.items.len(), 30);
    let window = store
        .list(&ListFilter {
            since: Some(base + Duration::seconds(10)),
            until: Some(base + Duration::seconds(20)),
            limit: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(window.items.len(), 20);
    assert!(
        store
            .list(&ListFilter {
                cursor: Some("garbage".into()),
                limit: 5,
                ..Default::default()
            })
            .await
            .unwrap()
            .is_err()
    );
}

async fn prune_empties_old_bodies_only(store: &Store) {
    let c = command("payment");
    let old = record(&c, 1, 503, Utc::now() - Duration::days(40));
    let new = record(&c, 2, 200, Utc::now());
    store
        .apply(&retried_history(&c), &[old, new])
        .await
        .unwrap();
    assert_eq!(
        store
            .prune(Utc::now() - Duration::days(30))
            .await
            .unwrap()
            .attempts,
        1
    );
    assert_eq!(
        store
            .prune(Utc::now() - Duration::days(30))
            .await
            .unwrap()
            .attempts,
        0,
        "idempotent"
    );
    let view = store.command(c.id).await.unwrap().unwrap();
    assert!(
        view.attempts[0].request_body.is_empty() && view.attempts[0].request_headers.is_empty()
    );
    assert_eq!(
        view.attempts[0].status,
        Some(503),
        "the record itself stays"
    );
    assert!(!view.attempts[1].request_body.is_empty());
    assert_eq!(view.events.len(), 5, "lifecycle rows are kept");
}

async fn forgotten_webhook_ids_still_have_no_second_effect(store: &Store) {
    let c = command("shipping");
    let long_ago = Utc::now() - Duration::days(40);
    store
        .record_wait(&WaitRecord {
            command: c.clone(),
            attempt: 1,
            run: 0,
            reason: Default::default(),
            reference: format!("ref_{}", c.id.simple()),
            since: long_ago,
            expires_at: Utc::now() + Duration::days(1),
        })
        .await
        .unwrap();
    let callback = |id: &str, outcome: CallbackOutcome| Callback {
        provider: c.provider.clone(),
        webhook_id: id.to_owned(),
        reference: format!("ref_{}", c.id.simple()),
        outcome,
        received_at: long_ago,
    };
    let pending = callback("msg_pending", CallbackOutcome::Pending);
    let done = callback(
        "msg_done",
        CallbackOutcome::Succeeded {
            result: json!({"label": "L1"}),
        },
    );
    assert!(matches!(
        store.resolve_callback(&pending, false).await.unwrap(),
        Resolution::Recorded
    ));
    assert!(matches!(
        store.resolve_callback(&done, false).await.unwrap(),
        Resolution::Decided { .. }
    ));
    let pruned = store.prune(Utc::now() - Duration::days(30)).await.unwrap();
    assert_eq!(pruned.webhook_receipts, 2);
    // Forgotten, yet the decision stands: the same deliveries again change nothing.
    for again in [&done, &pending] {
        assert!(matches!(
            store.resolve_callback(again, false).await.unwrap(),
            Resolution::Late
        ));
    }
    let failed = callback(
        "msg_other",
        CallbackOutcome::Failed {
            error: ErrorInfo::new(ErrorClass::Permanent, "provider_failed", "lost"),
        },
    );
    assert!(matches!(
        store.resolve_callback(&failed, false).await.unwrap(),
        Resolution::Late
    ));
}
