//! The fleet's metrics as Prometheus reads them: every process's `/metrics` passes
//! `promtool check metrics` (Debian's `prometheus` package; `./dev test` installs it), and a
//! real Prometheus server scraping the running fleet answers a query about completed
//! commands.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use switchyard_core::Status;
use switchyard_testing::{TestFleet, free_port};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const HOW_TO_GET: &str = "install Debian's prometheus package (`apt-get install -y prometheus`; \
                          `./dev test` does it): it provides promtool and the prometheus server";

fn tool(name: &str) -> Command {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).any(|d| d.join(name).is_file());
    assert!(found, "`{name}` is not on PATH: {HOW_TO_GET}");
    Command::new(name)
}

/// The `/metrics` address of every component of the in-process fleet.
fn scrape_targets(fleet: &TestFleet) -> Vec<(String, String)> {
    let running = fleet.fleet.as_ref().unwrap();
    let mut targets = vec![
        ("ingress".to_owned(), running.ingress.addr.to_string()),
        (
            "ledger".to_owned(),
            running.ledger.as_ref().unwrap().addr.to_string(),
        ),
    ];
    for (i, w) in running.workers.iter().enumerate() {
        targets.push((format!("worker-{i}"), w.ops_addr.to_string()));
    }
    targets
}

async fn run_commands(fleet: &TestFleet) {
    let mut ids = Vec::new();
    for _ in 0..3 {
        let c = fleet.charge();
        fleet.publish(&c).await;
        ids.push(c.id);
    }
    let failing = fleet.charge();
    fleet.scenario(failing.id, &["400"]).await;
    fleet.publish(&failing).await;
    for id in &ids {
        let events = fleet.events.terminal(*id, Duration::from_secs(30)).await;
        assert_eq!(events.last().unwrap().status, Status::Completed);
    }
    fleet
        .events
        .terminal(failing.id, Duration::from_secs(30))
        .await;
}

#[tokio::test]
async fn every_metrics_endpoint_passes_promtool_and_prometheus_answers_about_the_fleet() {
    let fleet = TestFleet::start().await;
    run_commands(&fleet).await;

    for (name, addr) in scrape_targets(&fleet) {
        let text = fleet
            .http()
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains("switchyard_"), "{name}: {text}");
        let mut check = tool("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = check.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).await.unwrap();
        drop(stdin);
        let out = check.wait_with_output().await.unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics failed for {name}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A real Prometheus scraping every component each second.
    let dir = tempfile_dir();
    let targets: Vec<String> = scrape_targets(&fleet)
        .into_iter()
        .map(|(_, addr)| format!("'{addr}'"))
        .collect();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: switchyard\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let port = free_port();
    let mut prometheus = tool("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // More commands while it scrapes, so the counter is seen rising, not only present.
    run_commands(&fleet).await;
    let query = "sum(switchyard_commands_total{kind=\"payment\",provider=\"sandbox\",status=\"completed\"})";
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        let r = fleet.http().get(prometheus_query(port, query)).send().await;
        if let Ok(r) = r
            && let Ok(v) = r.json::<serde_json::Value>().await
            && let Some(value) = v["data"]["result"][0]["value"][1].as_str()
            && value.parse::<f64>().unwrap_or(0.0) >= 6.0
        {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw 6 completed commands; its log:\n{}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(answer["status"], "success", "{answer:#}");
    // Every target is up.
    let up: serde_json::Value = fleet
        .http()
        .get(prometheus_query(port, "min(up{job=\"switchyard\"})"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up:#}");
    let _ = prometheus.kill().await;
    fleet.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn prometheus_query(port: u16, query: &str) -> reqwest::Url {
    reqwest::Url::parse_with_params(
        &format!("http://127.0.0.1:{port}/api/v1/query"),
        &[("query", query)],
    )
    .unwrap()
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-prometheus-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
