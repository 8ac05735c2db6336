//! The ledger end to end: status and history of completed, retried, failed and dead-lettered
//! commands on the ingress's base URL; a ledger stopped during a run catches up with nothing
//! lost.

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
