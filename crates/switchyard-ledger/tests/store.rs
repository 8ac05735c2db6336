//! The store, against both databases: SQLite in a temporary file and the real PostgreSQL on
//! 127.0.0.1:5432, each test in its own throwaway database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{Duration, Utc};
use serde_json::json;
use switchyard_core::WaitReason;
use switchyard_core::{
    AttemptRecord, Callback, CallbackOutcome, Command, ErrorClass, ErrorInfo, Event, Lifecycle,
    Status, WaitRecord,
};
use switchyard_ledger::{ListFilter, Resolution, Resolved, Store, Verdict};
use uuid::Uuid;

/// A store on a database that exists for one test.
struct TestDb {
    store: Store,
    db: switchyard_testing::TestDatabase,
}

impl TestDb {
    async fn sqlite() -> Self {
        Self::on(switchyard_testing::TestDatabase::sqlite()).await
    }

    async fn postgres() -> Self {
        Self::on(switchyard_testing::TestDatabase::postgres().await).await
    }

    async fn on(db: switchyard_testing::TestDatabase) -> Self {
        Self {
            store: Store::connect(&db.url).await.unwrap(),
            db,
        }
    }

    async fn cleanup(self) {
        self.store.close().await;
        self.db.cleanup().await;
    }
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test] async fn $name() { let db = super::TestDb::sqlite().await; super::$name(&db.store).await; db.cleanup().await; } )* }
        mod postgres { $( #[tokio::test] async fn $name() { let db = super::TestDb::postgres().await; super::$name(&db.store).await; db.cleanup().await; } )* }
    };
}

both!(
    whatever_a_publisher_missed_is_redacted_on_the_way_in,
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
    strings_with_nul_are_stored,
    a_later_run_reopens_a_failed_command,
    an_unknown_outcome_is_decided_once,
    operators_resolving_alike_at_once_both_report_the_one_decision,
    an_unknown_outcome_never_expires_and_a_status_check_ends_it,
    a_replayed_run_waits_again,
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

fn wait(c: &Command, run: u32, reason: WaitReason, reference: &str) -> WaitRecord {
    WaitRecord {
        command: c.clone(),
        attempt: 1,
        run,
        reason,
        reference: reference.to_owned(),
        since: Utc::now(),
        expires_at: Utc::now() + Duration::hours(1),
    }
}

/// Issue 11: one NUL in any string made PostgreSQL refuse the whole batch, forever. Every
/// text is now stored with NUL replaced and the rest of the record kept.
async fn strings_with_nul_are_stored(store: &Store) {
    let c = command("payment");
    let now = Utc::now();
    let lc = Lifecycle::of(&c);
    let (a, p) = lc.begin(1, now);
    let mut done = a.complete(json!({"note\0": "a\0b"}), Some("ref\0x".into()), now);
    done.metadata = std::collections::BTreeMap::from([("order".to_owned(), "4\0 2".to_owned())])
        .try_into()
        .unwrap();
    let mut attempt = record(&c, 1, 200, now);
    attempt.response_body = "{\"reference\":\"ref\u{0}x\"}".into();
    attempt.url = "https://localhost/\0".into();
    store
        .apply(&[lc.pending(now), p, done], &[attempt])
        .await
        .unwrap();
    let view = store.command(c.id).await.unwrap().unwrap();
    let s = view.summary.as_ref().unwrap();
    assert_eq!(s.status, Status::Completed);
    assert_eq!(s.provider_reference.as_deref(), Some("ref\u{FFFD}x"));
    assert_eq!(s.result, Some(json!({"note\u{FFFD}": "a\u{FFFD}b"})));
    assert_eq!(s.metadata["order"], "4\u{FFFD} 2");
    assert_eq!(view.events.len(), 3);
    assert_eq!(
        view.events[2].provider_reference.as_deref(),
        Some("ref\u{FFFD}x")
    );
    assert_eq!(
        view.attempts[0].response_body,
        "{\"reference\":\"ref\u{FFFD}x\"}"
    );
    assert_eq!(view.attempts[0].url, "https://localhost/\u{FFFD}");

    // A wait whose reference holds NUL is recorded, and its callback (same reference, a
    // webhook id with NUL too) finds it and ends it once.
    let w = command("shipping");
    store
        .record_wait(&wait(&w, 0, WaitReason::Waiting, "shp\0ref"))
        .await
        .unwrap();
    let callback = Callback {
        provider: w.provider.clone(),
        webhook_id: "wh\0_1".into(),
        reference: "shp\0ref".into(),
        outcome: CallbackOutcome::Succeeded {
            result: json!({"label": "L\0"}),
        },
        received_at: now,
    };
    let Resolution::Decided { event, .. } = store.resolve_callback(&callback, false).await.unwrap()
    else {
        panic!("the callback decides")
    };
    assert_eq!(event.status, Status::Completed);
    assert!(matches!(
        store.resolve_callback(&callback, false).await.unwrap(),
        Resolution::Duplicate
    ));
    // Filters with NUL are answered, not refused.
    let page = store
        .list(&ListFilter {
            kind: Some("pay\0ment".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .unwrap();
    assert!(page.items.is_empty());
}

fn status_of(view: &switchyard_ledger::CommandView) -> (Status, u32, u64) {
    let s = view.summary.as_ref().unwrap();
    (s.status, s.run, s.seq)
}

/// Issue 11: a replayed dead letter ended `completed` in run 1 on the event stream while the
/// ledger kept `failed`. A later run reopens; within a run terminal stays sticky.
async fn a_later_run_reopens_a_failed_command(store: &Store) {
    let c = command("payment");
    let now = Utc::now();
    let run0 = Lifecycle::of(&c);
    let (a, p) = run0.begin(1, now);
    let failed = a.fail(ErrorInfo::new(ErrorClass::Permanent, "declined", "no"), now);
    store
        .apply(&[run0.pending(now), p, failed.clone()], &[])
        .await
        .unwrap();
    let view = store.command(c.id).await.unwrap().unwrap();
    assert_eq!(status_of(&view), (Status::Failed, 0, failed.seq));

    let run1 = Lifecycle::run(&c, 1);
    let later = now + Duration::seconds(5);
    let (a1, p1) = run1.begin(1, later);
    let completed = a1.complete(json!({"ok": true}), Some("ref_r1".into()), later);
    assert_eq!(completed.seq, 1_000_007);
    // Out of order and twice: completed first, then processing, then both again.
    store
        .apply(std::slice::from_ref(&completed), &[])
        .await
        .unwrap();
    store.apply(std::slice::from_ref(&p1), &[]).await.unwrap();
    store.apply(&[p1, completed.clone()], &[]).await.unwrap();
    let view = store.command(c.id).await.unwrap().unwrap();
    assert_eq!(status_of(&view), (Status::Completed, 1, completed.seq));
    let s = view.summary.unwrap();
    assert_eq!(s.result, Some(json!({"ok": true})));
    assert_eq!(s.error, None, "run 0's error belongs to run 0");
    assert_eq!(view.events.len(), 5);
    // Run 0's events arriving late change nothing; within run 1 completed is sticky.
    store.apply(&[failed], &[]).await.unwrap();
    let (a9, p9) = run1.begin(9, later);
    store
        .apply(&[p9, a9.retry(transient(), later, later)], &[])
        .await
        .unwrap();
    let view = store.command(c.id).await.unwrap().unwrap();
    assert_eq!(status_of(&view), (Status::Completed, 1, completed.seq));
    // The list filters on the current status.
    let failed_page = store
        .list(&ListFilter {
            status: Some(Status::Failed),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .unwrap();
    assert!(failed_page.items.iter().all(|i| i.id != c.id));
}

/// Two operators (or one operator's request sent twice) resolving one unknown outcome the
/// same way at once: one decides, and the other reports that decision again, as a repeated
/// resolution does, on either database: not a conflict.
async fn operators_resolving_alike_at_once_both_report_the_one_decision(store: &Store) {
    for round in 0..20 {
        let c = command("payment");
        unknown_outcome(store, &c, 0, &format!("key_{}", c.id.simple())).await;
        let now = Utc::now();
        let (x, y) = tokio::join!(
            store.resolve_unknown(c.id, Verdict::Completed, "charged", "ana", now),
            store.resolve_unknown(c.id, Verdict::Completed, "charged", "bo", now),
        );
        let events: Vec<Uuid> = [x.unwrap(), y.unwrap()]
            .into_iter()
            .map(|r| match r {
                Resolved::Decided { event, .. } => event.event_id,
                other => panic!("round {round}: {other:?}"),
            })
            .collect();
        assert_eq!(events[0], events[1], "round {round}: one terminal event");
    }
}

/// The worker's record of an `unknown` outcome, and its `unknown` event, stored.
async fn unknown_outcome(store: &Store, c: &Command, run: u32, reference: &str) -> Event {
    let now = Utc::now();
    let lc = Lifecycle::run(c, run);
    let (a, p) = lc.begin(1, now);
    let (_, unknown) = a.unknown(
        ErrorInfo::new(
            ErrorClass::Unknown,
            "unreadable",
            "a 200 whose body is unreadable",
        ),
        now,
    );
    let mut events = vec![p, unknown.clone()];
    if run == 0 {
        events.insert(0, lc.pending(now));
    }
    store.apply(&events, &[]).await.unwrap();
    let mut w = wait(c, run, WaitReason::Unknown, reference);
    // No deadline of its own: an unknown outcome waits for a status check or an operator.
    w.expires_at = w.since;
    store.record_wait(&w).await.unwrap();
    unknown
}

async fn an_unknown_outcome_is_decided_once(store: &Store) {
    let c = command("payment");
    let key = format!("key_{}", c.id.simple());
    unknown_outcome(store, &c, 0, &key).await;
    assert_eq!(
        status_of(&store.command(c.id).await.unwrap().unwrap()).0,
        Status::Unknown
    );
    // Two operators at once, with different answers: exactly one decides.
    let now = Utc::now();
    let (x, y) = tokio::join!(
        store.resolve_unknown(
            c.id,
            Verdict::Completed,
            "seen in the dashboard",
            "ana",
            now
        ),
        store.resolve_unknown(c.id, Verdict::Failed, "no charge found", "bo", now),
    );
    let decided: Vec<_> = [x.unwrap(), y.unwrap()]
        .into_iter()
        .filter_map(|r| match r {
            Resolved::Decided { event, .. } => Some(event),
            Resolved::Conflict(_) => None,
            Resolved::NotFound => panic!("known"),
        })
        .collect();
    assert_eq!(decided.len(), 1, "exactly one decision");
    let event = &decided[0];
    assert!(event.status.is_terminal());
    assert_eq!((event.run, event.attempt, event.seq), (0, 1, 7));
    let by = if event.status == Status::Completed {
        assert_eq!(
            event.result,
            Some(json!({"resolved_by": "ana", "reason": "seen in the dashboard"}))
        );
        "ana"
    } else {
        let e = event.error.as_ref().unwrap();
        assert_eq!(
            (e.class, e.code.as_str()),
            (ErrorClass::Unknown, "operator_resolved")
        );
        "bo"
    };
    // A status check arriving after it changes nothing.
    let check = Callback {
        provider: c.provider.clone(),
        webhook_id: "check_1".into(),
        reference: key.clone(),
        outcome: CallbackOutcome::Succeeded { result: json!({}) },
        received_at: Utc::now(),
    };
    assert!(matches!(
        store.resolve_callback(&check, false).await.unwrap(),
        Resolution::Late
    ));
    // The same resolution again reports the same event (a retry after a failed publish);
    // the other answer is refused.
    let same = if event.status == Status::Completed {
        Verdict::Completed
    } else {
        Verdict::Failed
    };
    let other = if same == Verdict::Completed {
        Verdict::Failed
    } else {
        Verdict::Completed
    };
    match store
        .resolve_unknown(c.id, same, "again", by, Utc::now())
        .await
        .unwrap()
    {
        Resolved::Decided { event: again, .. } => assert_eq!(again.event_id, event.event_id),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store
            .resolve_unknown(c.id, other, "late", "cy", Utc::now())
            .await
            .unwrap(),
        Resolved::Conflict(_)
    ));
    // The audit: who, why, which status, which event.
    let view = store.command(c.id).await.unwrap().unwrap();
    let audit = view.resolution.unwrap();
    assert_eq!((audit.by.as_str(), audit.run), (by, 0));
    assert_eq!(audit.event_id, event.event_id);
    assert_eq!(audit.status, same);

    // Unknown ids, and commands that do not wait on an unknown outcome.
    assert!(matches!(
        store
            .resolve_unknown(Uuid::now_v7(), Verdict::Completed, "", "ana", Utc::now())
            .await
            .unwrap(),
        Resolved::NotFound
    ));
    let waiting = command("shipping");
    store
        .apply(&[Lifecycle::of(&waiting).pending(Utc::now())], &[])
        .await
        .unwrap();
    assert!(matches!(
        store
            .resolve_unknown(waiting.id, Verdict::Completed, "", "ana", Utc::now())
            .await
            .unwrap(),
        Resolved::Conflict(_)
    ));
    store
        .record_wait(&wait(&waiting, 0, WaitReason::Waiting, "shp_1"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .resolve_unknown(waiting.id, Verdict::Completed, "", "ana", Utc::now())
            .await
            .unwrap(),
        Resolved::Conflict(_)
    ));
}

async fn an_unknown_outcome_never_expires_and_a_status_check_ends_it(store: &Store) {
    let c = command("payment");
    let key = format!("key_{}", c.id.simple());
    unknown_outcome(store, &c, 0, &key).await;
    assert!(matches!(
        store
            .resolve_expiry(c.id, Utc::now() + Duration::days(30), false)
            .await
            .unwrap(),
        Resolution::Late
    ));
    let check = |id: &str| Callback {
        provider: c.provider.clone(),
        webhook_id: id.into(),
        reference: key.clone(),
        outcome: CallbackOutcome::Succeeded {
            result: json!({"id": "ch_1"}),
        },
        received_at: Utc::now(),
    };
    let Resolution::Decided { event, record } =
        store.resolve_callback(&check("c1"), false).await.unwrap()
    else {
        panic!("a verified status check ends it")
    };
    assert_eq!((event.status, event.seq), (Status::Completed, 7));
    assert_eq!(record.reason, WaitReason::Unknown);
    assert!(matches!(
        store.resolve_callback(&check("c2"), false).await.unwrap(),
        Resolution::Late
    ));
    assert!(matches!(
        store
            .resolve_unknown(c.id, Verdict::Failed, "", "ana", Utc::now())
            .await
            .unwrap(),
        Resolved::Conflict(_)
    ));
}

/// A replay that ends `unknown` again waits again, in its own run: the terminal event is of
/// that run, never of the first.
async fn a_replayed_run_waits_again(store: &Store) {
    let c = command("payment");
    let key = format!("key_{}", c.id.simple());
    unknown_outcome(store, &c, 0, &key).await;
    let Resolved::Decided { event, .. } = store
        .resolve_unknown(c.id, Verdict::Failed, "not charged", "ana", Utc::now())
        .await
        .unwrap()
    else {
        panic!("decided")
    };
    store.apply(&[*event], &[]).await.unwrap();
    // Replayed: run 1 (same provider key) is unknown again.
    unknown_outcome(store, &c, 1, &key).await;
    let view = store.command(c.id).await.unwrap().unwrap();
    assert_eq!(status_of(&view).0, Status::Unknown);
    assert_eq!(status_of(&view).1, 1);
    let Resolved::Decided { event, .. } = store
        .resolve_unknown(
            c.id,
            Verdict::Completed,
            "charged after all",
            "bo",
            Utc::now(),
        )
        .await
        .unwrap()
    else {
        panic!("run 1 is open")
    };
    assert_eq!((event.run, event.seq), (1, 1_000_007));
    store.apply(&[*event], &[]).await.unwrap();
    let view = store.command(c.id).await.unwrap().unwrap();
    assert_eq!(status_of(&view), (Status::Completed, 1, 1_000_007));
    assert_eq!(view.resolution.unwrap().by, "bo");
}

/// A database written before runs existed gains them on its next start, its rows in run 0.
#[tokio::test]
async fn an_existing_database_upgrades() {
    let db = switchyard_testing::TestDatabase::sqlite();
    let url = db.url.clone();
    migrate_up_to(&url, "0002_waits.sql").await;
    {
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        let c = command("payment");
        sqlx::query(
            "INSERT INTO commands (id, kind, provider, operation, status, seq, attempt, metadata, created_at, updated_at) \
             VALUES ($1, 'payment', 'sandbox', 'charge', 'failed', 7, 1, '{}', 1, 1)",
        )
        .bind(c.id.to_string())
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let store = Store::connect(&url).await.unwrap();
    let page = store
        .list(&ListFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(
        (page.items[0].status, page.items[0].run),
        (Status::Failed, 0)
    );
    store.close().await;
    db.cleanup().await;
}

/// Runs the ledger's migrations up to `last` (a file name) on `url`, as an older ledger did.
async fn migrate_up_to(url: &str, last: &str) {
    sqlx::any::install_default_drivers();
    let dir = std::env::temp_dir().join(format!("sy-ledger-old-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<_> = std::fs::read_dir(&all)
        .unwrap()
        .map(|f| f.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.as_str() <= last)
        .collect();
    files.sort();
    for f in &files {
        std::fs::copy(all.join(f), dir.join(f)).unwrap();
    }
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    sqlx::migrate::Migrator::new(dir.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    pool.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Issue 15: events are keyed by their transition instead of their random id. A ledger
/// written before keeps every event, even one transition stored twice under two ids by a
/// publisher outside the contract, and a redelivered event still changes nothing.
async fn events_stored_before_they_were_keyed_by_transition_are_kept(
    db: switchyard_testing::TestDatabase,
) {
    migrate_up_to(&db.url, "0004_sealed_waits.sql").await;
    let c = command("payment");
    let now = Utc::now();
    let lc = Lifecycle::of(&c);
    let (a, p) = lc.begin(1, now);
    let events = vec![
        lc.pending(now),
        p,
        a.complete(json!({"ok": true}), None, now),
    ];
    {
        let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
        let stray = Event {
            event_id: Uuid::now_v7(),
            ..events[2].clone()
        };
        for e in events.iter().chain([&stray]) {
            sqlx::query(
                "INSERT INTO events (event_id, command_id, seq, status, occurred_at, body) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(e.event_id.to_string())
            .bind(e.command_id.to_string())
            .bind(i64::try_from(e.seq).unwrap())
            .bind(e.status.as_str())
            .bind(e.occurred_at.timestamp_millis())
            .bind(serde_json::to_string(e).unwrap())
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;
    }
    let store = Store::connect(&db.url).await.unwrap();
    let statuses =
        |v: &switchyard_ledger::CommandView| v.events.iter().map(|e| e.status).collect::<Vec<_>>();
    let view = store.command(c.id).await.unwrap().unwrap();
    assert_eq!(
        statuses(&view),
        [Status::Pending, Status::Processing, Status::Completed]
    );
    assert_eq!(view.events[0], events[0]);
    store.apply(&events, &[]).await.unwrap();
    let view = store.command(c.id).await.unwrap().unwrap();
    assert_eq!(
        statuses(&view),
        [Status::Pending, Status::Processing, Status::Completed]
    );
    assert_eq!(view.summary.unwrap().status, Status::Completed);
    store.close().await;
    db.cleanup().await;
}

#[tokio::test]
async fn events_stored_before_they_were_keyed_by_transition_are_kept_on_sqlite() {
    events_stored_before_they_were_keyed_by_transition_are_kept(
        switchyard_testing::TestDatabase::sqlite(),
    )
    .await;
}

#[tokio::test]
async fn events_stored_before_they_were_keyed_by_transition_are_kept_on_postgres() {
    events_stored_before_they_were_keyed_by_transition_are_kept(
        switchyard_testing::TestDatabase::postgres().await,
    )
    .await;
}

/// Issue 12: a waiting command's secrets sat in clear in the waits table. The readable record
/// is now redacted; the whole command is kept only sealed, and comes back whole for a
/// dead letter.
async fn a_waiting_command_is_kept_redacted_and_sealed(db: &TestDb) {
    let store = &db.store;
    let mut c = command("shipping");
    c.payload = serde_json::from_value(json!({
        "api_key": "sk_CANARY_1", "card_token": "tok_CANARY_2", "amount": 5,
        "nested": {"Pass-Phrase": "CANARY_3"}
    }))
    .unwrap();
    c.metadata = serde_json::from_value(json!({"x-api-key": "CANARY_4", "order": "42"})).unwrap();
    store
        .record_wait(&wait(&c, 0, WaitReason::Waiting, "ref_sealed"))
        .await
        .unwrap();

    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.db.url).await.unwrap();
    let row = sqlx::query("SELECT record, sealed FROM waits WHERE command_id = $1")
        .bind(c.id.to_string())
        .fetch_one(&pool)
        .await
        .unwrap();
    let record: String = sqlx::Row::try_get(&row, "record").unwrap();
    let sealed: String = sqlx::Row::try_get(&row, "sealed").unwrap();
    pool.close().await;
    assert!(
        !record.contains("CANARY") && !sealed.contains("CANARY"),
        "{record}\n{sealed}"
    );
    assert!(
        record.contains("\"amount\":5") && record.contains("\"order\":\"42\""),
        "{record}"
    );

    // Expired: the decision carries the whole command, for the dead letter and a replay.
    let Resolution::Decided { record, .. } = store
        .resolve_expiry(c.id, Utc::now() + Duration::hours(2), false)
        .await
        .unwrap()
    else {
        panic!("the expiry decides");
    };
    assert_eq!(record.command.payload, c.payload);
    assert_eq!(record.command.metadata, c.metadata);
}

#[tokio::test]
async fn a_waiting_command_is_kept_redacted_and_sealed_on_sqlite() {
    let db = TestDb::sqlite().await;
    a_waiting_command_is_kept_redacted_and_sealed(&db).await;
    db.cleanup().await;
}

#[tokio::test]
async fn a_waiting_command_is_kept_redacted_and_sealed_on_postgres() {
    let db = TestDb::postgres().await;
    a_waiting_command_is_kept_redacted_and_sealed(&db).await;
    db.cleanup().await;
}

/// Issue 12: the store redacts the free-form parts of every event and attempt it writes, so
/// a publisher that forgot cannot put a secret into a table.
async fn whatever_a_publisher_missed_is_redacted_on_the_way_in(store: &Store) {
    let mut c = command("payment");
    c.metadata = serde_json::from_value(json!({"api-key": "CANARY_META", "order": "42"})).unwrap();
    let now = Utc::now();
    let (a, _processing) = Lifecycle::of(&c).begin(1, now);
    let done = a.complete(
        json!({"card_number": 4111111111111111_u64, "token": "CANARY_RESULT"}),
        Some("ref_1".into()),
        now,
    );
    let mut attempt = record(&c, 1, 200, now);
    attempt.url = "https://ops:CANARY_URL@provider.example/v1/charges".into();
    attempt
        .request_headers
        .insert("authorization".into(), "Bearer CANARY_HEADER".into());
    attempt.request_body = r#"{"password":"CANARY_BODY","amount":100}"#.into();
    store.apply(&[done], &[attempt]).await.unwrap();
    let view = store.command(c.id).await.unwrap().unwrap();
    let text = serde_json::to_string(&view).unwrap();
    for canary in [
        "CANARY_META",
        "CANARY_RESULT",
        "CANARY_URL",
        "CANARY_HEADER",
        "CANARY_BODY",
        "4111111111111111",
    ] {
        assert!(!text.contains(canary), "{canary}: {text}");
    }
    assert!(
        text.contains("\"order\":\"42\"") && text.contains("ref_1"),
        "{text}"
    );
}

/// A callback redelivered while its first copy's transaction is still open (after a lost
/// connection the broker hands the copy to another replica): both read the wait undecided;
/// the first decided, and the copy, finding the webhook id taken, answered `Duplicate` and
/// was acknowledged. Had the first copy then failed to publish, the command's terminal event
/// was lost for good. The wait's row is locked for the read now: the copy reads it after the
/// first copy committed and reports the decision again.
async fn a_redelivered_callback_reports_its_first_copys_decision(url: &str) {
    let first = Store::connect(url).await.unwrap();
    let copy = Store::connect(url).await.unwrap();
    for i in 0..50 {
        let c = command("shipping");
        let reference = format!("ref_{}", c.id.simple());
        first
            .record_wait(&wait(&c, 0, WaitReason::Waiting, &reference))
            .await
            .unwrap();
        let callback = Callback {
            provider: c.provider.clone(),
            webhook_id: format!("msg_{}", c.id.simple()),
            reference,
            outcome: CallbackOutcome::Succeeded {
                result: json!({"label": "L1"}),
            },
            received_at: Utc::now(),
        };
        let (a, b) = tokio::join!(
            first.resolve_callback(&callback, false),
            copy.resolve_callback(&callback, true)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let name = |r: &Resolution| {
            format!("{r:?}")
                .chars()
                .take_while(|c| c.is_alphanumeric())
                .collect::<String>()
        };
        assert!(
            matches!(b, Resolution::Decided { .. }),
            "round {i}: the redelivered copy answered {}, the first {}",
            name(&b),
            name(&a)
        );
    }
    first.close().await;
    copy.close().await;
}

#[tokio::test]
async fn a_redelivered_callback_reports_its_first_copys_decision_on_sqlite() {
    let db = switchyard_testing::TestDatabase::sqlite();
    a_redelivered_callback_reports_its_first_copys_decision(&db.url).await;
    db.cleanup().await;
}

#[tokio::test]
async fn a_redelivered_callback_reports_its_first_copys_decision_on_postgres() {
    let db = switchyard_testing::TestDatabase::postgres().await;
    a_redelivered_callback_reports_its_first_copys_decision(&db.url).await;
    db.cleanup().await;
}
