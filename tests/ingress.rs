//! The ingress contract: authentication, limits, media type, validation, problem+json.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use switchyard_testing::TestFleet;

fn charge() -> serde_json::Value {
    serde_json::json!({
        "kind": "payment", "provider": "sandbox", "operation": "charge",
        "payload": {"amount": 1999, "currency": "usd", "payment_method": "pm_card_visa"},
    })
}

async fn problem(r: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(r.status(), status);
    assert_eq!(
        r.headers()["content-type"],
        "application/problem+json",
        "errors are problem+json"
    );
    let p: serde_json::Value = r.json().await.unwrap();
    assert_eq!(p["status"], status);
    assert!(
        p["type"].is_string() && p["title"].is_string() && p["detail"].is_string(),
        "{p}"
    );
    p
}

#[tokio::test]
async fn the_ingress_refuses_bad_input_with_problem_details() {
    let fleet = TestFleet::start().await;
    let url = format!("{}/v1/commands", fleet.ingress_url());
    let http = fleet.http();

    // 401 without or with a wrong token.
    problem(http.post(&url).json(&charge()).send().await.unwrap(), 401).await;
    problem(
        http.post(&url)
            .bearer_auth("nope")
            .json(&charge())
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;

    // 415 when not JSON.
    let r = http
        .post(&url)
        .bearer_auth(switchyard_testing::TOKEN)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    problem(r, 415).await;

    // 413 over the body limit (65536 in tests).
    let mut big = charge();
    big["payload"]["description"] = "x".repeat(70_000).into();
    problem(fleet.post(&big).await, 413).await;

    // 400 malformed JSON and wrong shapes, naming the field.
    let r = http
        .post(&url)
        .bearer_auth(switchyard_testing::TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    problem(r, 400).await;
    let mut wrong = charge();
    wrong["metadata"] = serde_json::json!({"a": 1});
    let p = problem(fleet.post(&wrong).await, 400).await;
    assert_eq!(p["field"], "metadata.a");

    // 422 unknown kind, provider, operation; payload invalid against its schema.
    for (field, value) in [
        ("kind", "pigeon"),
        ("provider", "nobody"),
        ("operation", "teleport"),
    ] {
        let mut c = charge();
        c[field] = value.into();
        let p = problem(fleet.post(&c).await, 422).await;
        assert_eq!(p["field"], field, "{p}");
    }
    let mut c = charge();
    c["payload"]["amount"] = 0.into();
    let p = problem(fleet.post(&c).await, 422).await;
    assert_eq!(p["field"], "payload.amount", "{p}");
    let mut c = charge();
    c["payload"]["card_number"] = "4242424242424242".into();
    let p = problem(fleet.post(&c).await, 422).await;
    assert!(
        !p.to_string().contains("4242424242424242"),
        "no card data echoed: {p}"
    );
    // At the start of a line: written as JSON text the line break is `\n`, and the check
    // that read that text took the digits for part of a word and let the card through.
    let mut c = charge();
    c["payload"]["description"] = "first line\n4242424242424242".into();
    let p = problem(fleet.post(&c).await, 422).await;
    assert_eq!(p["field"], "payload", "{p}");
    assert!(!p.to_string().contains("4242424242424242"), "{p}");
    // Outside the payload too: in metadata, as an idempotency key.
    let mut c = charge();
    c["metadata"] = serde_json::json!({"note": "card 4000056655665556"});
    let p = problem(fleet.post(&c).await, 422).await;
    assert_eq!(p["field"], "metadata", "{p}");
    assert!(!p.to_string().contains("4000056655665556"), "{p}");
    let mut c = charge();
    c["idempotency_key"] = "4000056655665556".into();
    let p = problem(fleet.post(&c).await, 422).await;
    assert_eq!(p["field"], "idempotency_key", "{p}");
    assert!(!p.to_string().contains("4000056655665556"), "{p}");

    // The Idempotency-Key header derives the id deterministically.
    let key = format!("k-{}", uuid::Uuid::new_v4());
    let post = || {
        http.post(&url)
            .bearer_auth(switchyard_testing::TOKEN)
            .header("idempotency-key", &key)
            .json(&charge())
            .send()
    };
    let a: serde_json::Value = post().await.unwrap().json().await.unwrap();
    let b: serde_json::Value = post().await.unwrap().json().await.unwrap();
    assert_eq!(a["id"], b["id"]);
    let a_id: uuid::Uuid = a["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(a_id.get_version_num(), 5, "derived with UUIDv5");

    // Health, readiness and metrics.
    let base = fleet.ingress_url();
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("switchyard_ingress_requests_total"),
        "{metrics}"
    );
    fleet.stop().await;
}

/// 1,000 clients that open a connection and never finish a request head (slowloris) do not
/// slow anyone else, and each is closed once the header timeout passes.
#[tokio::test]
async fn slow_clients_cannot_hold_the_ingress() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    rlimit::increase_nofile_limit(8192).unwrap();
    let fleet = TestFleet::start_with(switchyard_testing::TestFleetOptions {
        extra_toml: "[http]\nheader_timeout_ms = 3000\nbody_timeout_ms = 3000\n".into(),
        ..Default::default()
    })
    .await;
    // A new connection per request: the accept path is what slow clients would clog.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let healthz = format!("{}/healthz", fleet.ingress_url());
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let timed = || async {
        let mut took = Vec::new();
        for _ in 0..21 {
            let started = Instant::now();
            assert_eq!(http.get(&healthz).send().await.unwrap().status(), 200);
            took.push(started.elapsed());
        }
        median(took)
    };
    let before = timed().await;

    let addr = fleet.ingress_url().replace("http://", "");
    let mut slow = Vec::new();
    for i in 0..1000 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        // Half send part of a head and stop; half send nothing at all.
        if i % 2 == 0 {
            s.write_all(b"POST /v1/commands HTTP/1.1\r\nHost: x\r\nContent-")
                .await
                .unwrap();
        }
        slow.push(s);
    }
    let opened = Instant::now();
    let during = timed().await;
    eprintln!("healthz median: {before:?} alone, {during:?} beside 1,000 slow connections");
    assert!(
        during.saturating_sub(before) < Duration::from_millis(50),
        "slow clients delayed a normal request: {before:?} -> {during:?}"
    );

    // Each slow connection is closed by the server after the header timeout (3 s).
    let mut closed = 0;
    for s in &mut slow {
        let mut buf = [0u8; 512];
        let left = Duration::from_secs(10).saturating_sub(opened.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            // EOF, a 408 answer before the close, or a reset: the server let go.
            Ok(Ok(_)) | Ok(Err(_)) => closed += 1,
            Err(_) => break,
        }
    }
    assert_eq!(closed, 1000, "every slow connection closed by the server");
    assert!(
        opened.elapsed() >= Duration::from_millis(2500),
        "not closed before the configured timeout"
    );
    // The fleet's vhost goes with it (without this, every run left one on the broker).
    fleet.stop().await;
}
