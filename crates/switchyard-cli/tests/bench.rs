//! `switchyard bench --ceiling --json` on a small run: stdout is one JSON object with the
//! figures a trend file reads, the ceiling ran twice with the worker's own messages, and it
//! left nothing on the broker. Needs RabbitMQ with the management plugin (the run gets a
//! vhost of its own) and the workspace's binaries (`cargo build --bins`; `./dev test` does).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

fn management_url() -> String {
    std::env::var("SWITCHYARD_TEST_MANAGEMENT_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:15672".into())
}

/// The `switchyard` binary, after checking the fleet binaries it starts are beside it.
fn switchyard() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_switchyard"));
    for sibling in ["switchyard-payment", "switchyard-sandbox"] {
        assert!(
            exe.with_file_name(sibling).exists(),
            "{sibling} is missing next to {}: run `cargo build --bins` before the tests \
             (./dev test does)",
            exe.display()
        );
    }
    exe
}

struct Vhost {
    name: String,
    http: reqwest::Client,
}

impl Vhost {
    async fn create() -> Self {
        switchyard_http::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let name = format!("switchyard-test-bench-{}", uuid::Uuid::new_v4().simple());
        let base = management_url();
        let made = http
            .put(format!("{base}/api/vhosts/{name}"))
            .basic_auth("guest", Some("guest"))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "RabbitMQ's management API is unreachable at {base} (./dev test starts it): {e}"
                )
            });
        assert!(made.status().is_success(), "vhost: {}", made.status());
        let perms = http
            .put(format!("{base}/api/permissions/{name}/guest"))
            .basic_auth("guest", Some("guest"))
            .json(&serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}))
            .send()
            .await
            .unwrap();
        assert!(
            perms.status().is_success(),
            "permissions: {}",
            perms.status()
        );
        Self { name, http }
    }

    async fn queues(&self) -> Vec<String> {
        let list: serde_json::Value = self
            .http
            .get(format!("{}/api/queues/{}", management_url(), self.name))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .filter_map(|q| q["name"].as_str().map(str::to_owned))
            .collect()
    }

    async fn delete(&self) {
        let _ = self
            .http
            .delete(format!("{}/api/vhosts/{}", management_url(), self.name))
            .basic_auth("guest", Some("guest"))
            .send()
            .await;
    }
}

#[tokio::test]
async fn bench_with_the_ceiling_prints_its_figures_as_json() {
    let exe = switchyard();
    let vhost = Vhost::create().await;
    let url = format!("amqp://guest:guest@127.0.0.1:5672/{}", vhost.name);
    let out = tokio::process::Command::new(exe)
        .args([
            "bench",
            "--commands",
            "300",
            "--concurrency",
            "32",
            "--window",
            "100",
            "--ceiling",
            "--json",
        ])
        .env("SWITCHYARD_AMQP_URL", &url)
        .env_remove("SWITCHYARD_DATABASE_URL")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), out)
        .await
        .expect("the bench finished within 4 minutes")
        .unwrap();
    let left: Vec<String> = vhost
        .queues()
        .await
        .into_iter()
        .filter(|q| q.starts_with("switchyard.ceiling.") || q.starts_with("switchyard.bench."))
        .collect();
    vhost.delete().await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stderr}");
    assert!(left.is_empty(), "left behind: {left:?}");

    // stdout is the JSON object alone; the human lines went to stderr.
    let stdout = String::from_utf8(out.stdout).unwrap();
    let doc: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{stdout}"));
    assert!(stderr.contains("bench: ceiling"), "{stderr}");

    let num = |path: &str| {
        doc.pointer(path)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or_else(|| panic!("{path} missing in {doc:#}"))
    };
    assert_eq!(num("/options/commands"), 300.0);
    assert_eq!(doc["options"]["ceiling"], true);
    assert_eq!(num("/switchyard/completed"), 300.0);
    assert!(num("/switchyard/throughput_per_s") > 0.0);
    let (p50, p99, max) = (
        num("/switchyard/latency_ms/p50"),
        num("/switchyard/latency_ms/p99"),
        num("/switchyard/latency_ms/max"),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{p50} {p99} {max}");
    assert!(num("/switchyard/cpu_s_per_1000/worker") > 0.0);
    assert!(num("/switchyard/cpu_s_per_1000/bench") >= 0.0);
    assert!(num("/peak_rss_mib/worker") > 0.0);
    assert!(num("/peak_rss_mib/sandbox") > 0.0);
    // Where the worker's deliveries spent their time, from its own /metrics: a delivery
    // holds its provider call and its journal batches, and waits for confirms.
    let (delivery, call, batch, confirm) = (
        num("/switchyard/worker_means/delivery_ms"),
        num("/switchyard/worker_means/provider_call_ms"),
        num("/switchyard/worker_means/journal_batch_ms"),
        num("/switchyard/worker_means/publish_confirm_ms"),
    );
    assert!(
        0.0 < call && call < delivery && 0.0 < batch && batch < delivery && 0.0 < confirm,
        "{:#}",
        doc["switchyard"]["worker_means"]
    );
    assert!(num("/switchyard/worker_means/journal_ops_per_batch") >= 1.0);
    assert!(stderr.contains("worker means: delivery "), "{stderr}");

    // The ceiling ran before and after, with the messages the worker publishes per command.
    let runs = doc["ceiling"]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{doc:#}");
    assert!(num("/ceiling/throughput_per_s") > 0.0);
    assert!(num("/ceiling/latency_ms/p99") > 0.0);
    let keys: Vec<&str> = doc["ceiling"]["worker_messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["routing_key"].as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "payment.bench.pending",
            "payment.bench.processing",
            "payment.bench",
            "payment.bench.completed"
        ],
        "pending, processing, the attempt record, completed"
    );
    assert_eq!(num("/ceiling/messages_per_command"), 5.0);
    for ratio in ["throughput", "p50", "p99"] {
        assert!(num(&format!("/ceiling/ratios/{ratio}")) > 0.0);
    }
}
