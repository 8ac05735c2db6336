//! The fleet's metrics as Prometheus reads them: every process's `/metrics` passes
//! `promtool check metrics` (Debian's `prometheus` package; `./dev test` installs it), a
//! real Prometheus server scraping the running fleet answers a query about completed
//! commands, and what `/metrics` says agrees with the metric tables of docs/operations.md:
//! every documented metric exists with the documented help text, type and labels, and every
//! label value comes from a bounded set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use switchyard_core::Status;
use switchyard_e2e::terminal;
use switchyard_testing::{POLLED_PROVIDER, TestFleet, WEBHOOK_SECRET, free_port};
use switchyard_webhooks::StripeSignature;
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

// ---------------------------------------------------------------------------------------
// `/metrics` against docs/operations.md

/// A row of a metric table of docs/operations.md.
#[derive(Debug)]
struct Documented {
    kind: String,
    labels: BTreeSet<String>,
    help: String,
}

/// The metric tables of the "Metrics" section of docs/operations.md, by metric name.
fn documented() -> BTreeMap<String, Documented> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operations.md");
    let text = std::fs::read_to_string(path).unwrap();
    let start = text.find("\n## Metrics\n").expect("a Metrics section");
    let end = start + 1 + text[start + 1..].find("\n## ").unwrap();
    let mut rows = BTreeMap::new();
    for line in text[start..end]
        .lines()
        .filter(|l| l.starts_with("| `switchyard_"))
    {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        assert_eq!(cells.len(), 4, "metric | type | labels | help: {line}");
        let labels = cells[2]
            .split(',')
            .map(|c| c.trim().trim_matches('`').to_owned())
            .filter(|c| !c.is_empty())
            .collect();
        let name = cells[0].trim_matches('`').to_owned();
        let row = Documented {
            kind: cells[1].to_owned(),
            labels,
            help: cells[3].to_owned(),
        };
        assert!(rows.insert(name.clone(), row).is_none(), "{name} twice");
    }
    assert!(rows.len() >= 25, "only {} documented metrics", rows.len());
    rows
}

/// One series of a scrape.
#[derive(Debug, Clone)]
struct Series {
    /// The metric it belongs to (a histogram's `_bucket`, `_sum`, `_count` belong to it).
    metric: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// What `/metrics` says: help and type of each metric, and every series.
#[derive(Debug, Default)]
struct Scrape {
    help: BTreeMap<String, String>,
    types: BTreeMap<String, String>,
    series: Vec<Series>,
}

/// `a="x",b="y"` as a map (values are unescaped for `\"` and `\\`).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].trim_start_matches(',').trim().to_owned();
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(n);
                    }
                }
                '"' => {
                    end = Some(eq + 2 + i + 1);
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(name, value);
        rest = &rest[end.expect("a closed label value")..];
    }
    labels
}

fn parse_scrape(text: &str, into: &mut Scrape) {
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            into.help.insert(name.to_owned(), help.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            into.types.insert(name.to_owned(), kind.to_owned());
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let (head, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match head.split_once('{') {
                Some((n, l)) => (n, parse_labels(l.trim_end_matches('}'))),
                None => (head, BTreeMap::new()),
            };
            let metric = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    let base = name.strip_suffix(suffix)?;
                    (into.types.get(base).map(String::as_str) == Some("histogram"))
                        .then(|| base.to_owned())
                })
                .unwrap_or_else(|| name.to_owned());
            into.series.push(Series {
                metric,
                labels,
                value: value.parse().unwrap(),
            });
        }
    }
}

async fn scrape(fleet: &TestFleet) -> Scrape {
    let mut scrape = Scrape::default();
    for (_, addr) in scrape_targets(fleet) {
        let text = fleet
            .http()
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        parse_scrape(&text, &mut scrape);
    }
    scrape
}

impl Scrape {
    /// The series of `metric` whose labels include every pair of `with`.
    fn find(&self, metric: &str, with: &[(&str, &str)]) -> Vec<&Series> {
        self.series
            .iter()
            .filter(|s| {
                s.metric == metric
                    && with
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    fn sum(&self, metric: &str, with: &[(&str, &str)]) -> f64 {
        self.find(metric, with).iter().map(|s| s.value).sum()
    }
}

/// Whether `word` stands in `text` as a word of its own (not inside a longer name).
fn names(text: &str, word: &str) -> bool {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_name) && !after.is_some_and(|c| is_name(c) && c != '.')
    })
}

#[tokio::test]
async fn metrics_say_what_the_operators_guide_says_with_bounded_labels_from_the_start() {
    let docs = documented();
    let fleet = TestFleet::start().await;

    // Before any command: the series alerts read are there, at zero where nothing happened.
    let start = scrape(&fleet).await;
    for (metric, with) in [
        (
            "switchyard_commands_total",
            vec![
                ("kind", "payment"),
                ("provider", "sandbox"),
                ("status", "failed"),
                ("source", "worker"),
            ],
        ),
        (
            "switchyard_commands_total",
            vec![
                ("kind", "shipping"),
                ("provider", "sandbox"),
                ("status", "failed"),
                ("source", "expiry"),
            ],
        ),
        (
            "switchyard_commands_total",
            vec![
                ("kind", "shipping"),
                ("provider", "sandbox"),
                ("status", "failed"),
                ("source", "webhook"),
            ],
        ),
        (
            "switchyard_dead_letters_total",
            vec![
                ("kind", "payment"),
                ("provider", "sandbox"),
                ("class", "permanent"),
            ],
        ),
        ("switchyard_unroutable_total", vec![("event", "failed")]),
        ("switchyard_unroutable_total", vec![("event", "none")]),
        (
            "switchyard_duplicate_commands_total",
            vec![("kind", "payment"), ("provider", "sandbox")],
        ),
        ("switchyard_webhooks_total", vec![("outcome", "queued")]),
        (
            "switchyard_webhooks_total",
            vec![("outcome", "bad_signature")],
        ),
        (
            "switchyard_resolutions_total",
            vec![("source", "expiry"), ("outcome", "decided")],
        ),
        (
            "switchyard_ledger_dead_letters_total",
            vec![("queue", "switchyard.ledger.events")],
        ),
        (
            "switchyard_retries_scheduled_total",
            vec![("kind", "payment"), ("provider", "sandbox")],
        ),
    ] {
        // Every in-process component serves the one registry: the series is on each target.
        assert!(
            !start.find(metric, &with).is_empty(),
            "{metric}{with:?} is not there from the start"
        );
    }
    let circuit = start.find(
        "switchyard_circuit_state",
        &[("kind", "payment"), ("provider", "sandbox")],
    );
    let states: BTreeMap<&str, f64> = circuit
        .iter()
        .map(|s| (s.labels["state"].as_str(), s.value))
        .collect();
    assert_eq!(
        states,
        BTreeMap::from([("closed", 1.0), ("half_open", 0.0), ("open", 0.0)]),
        "a state set, closed"
    );

    // Commands that end every way: by the worker, by a webhook, by a status check, by expiry.
    run_commands(&fleet).await;
    let shipping = |provider: &str| {
        let mut c = fleet.command("shipping", "create_label", shipping_payload());
        c.provider = provider.parse().unwrap();
        c
    };
    let by_webhook = shipping("sandbox");
    fleet.scenario(by_webhook.id, &["accept"]).await;
    let by_poll = shipping(POLLED_PROVIDER);
    let mut expiring = shipping(POLLED_PROVIDER);
    expiring.deadline = Some(chrono::Utc::now() + chrono::Duration::seconds(3));
    fleet.scenario(expiring.id, &["accept:silent"]).await;
    // A command for a provider nobody serves, named by whoever published it: its failed
    // event must not make that name a label value.
    let mut stranger = fleet.charge();
    let wire_name = format!("evil_{}", uuid::Uuid::new_v4().simple());
    stranger.provider = wire_name.parse().unwrap();
    for c in [&by_webhook, &by_poll, &expiring, &stranger] {
        fleet.publish(c).await;
    }
    let events = fleet
        .events
        .terminal(stranger.id, Duration::from_secs(30))
        .await;
    assert_eq!(terminal(&events).status, Status::Failed, "{events:#?}");
    // A verified webhook about nothing Switchyard waits for is `ignored`, not `queued`; a
    // forged one is refused.
    let url = format!("{}/v1/webhooks/stripe", fleet.ingress_url());
    let body = serde_json::json!({"id": "evt_other", "object": "event", "type": "customer.created",
        "data": {"object": {"id": "cus_1", "object": "customer"}}})
    .to_string();
    let now = chrono::Utc::now().timestamp();
    for (secret, status) in [(WEBHOOK_SECRET, 204), ("whsec_someone_else", 401)] {
        let signature = StripeSignature::new(secret)
            .unwrap()
            .sign(now, body.as_bytes());
        let r = fleet
            .http()
            .post(&url)
            .header("content-type", "application/json")
            .header("stripe-signature", signature)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
    }
    for (c, status) in [
        (&by_webhook, Status::Completed),
        (&by_poll, Status::Completed),
        (&expiring, Status::Failed),
    ] {
        let events = fleet.events.terminal(c.id, Duration::from_secs(30)).await;
        assert_eq!(terminal(&events).status, status, "{events:#?}");
    }
    // The resolver counts after it published the event: give the counter a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let s = scrape(&fleet).await;
        let ended = |provider: &str, status: &str, source: &str| {
            s.sum(
                "switchyard_commands_total",
                &[
                    ("kind", "shipping"),
                    ("provider", provider),
                    ("status", status),
                    ("source", source),
                ],
            )
        };
        if ended("sandbox", "completed", "webhook") >= 1.0
            && ended(POLLED_PROVIDER, "completed", "poll") >= 1.0
            && ended(POLLED_PROVIDER, "failed", "expiry") >= 1.0
        {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "commands the ledger ended are not in switchyard_commands_total: {:#?}",
            s.find("switchyard_commands_total", &[("kind", "shipping")])
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        after.sum(
            "switchyard_commands_total",
            &[
                ("kind", "payment"),
                ("status", "completed"),
                ("source", "worker")
            ]
        ) >= 3.0
    );
    assert!(
        after.sum(
            "switchyard_commands_total",
            &[
                ("kind", "payment"),
                ("status", "failed"),
                ("source", "worker")
            ]
        ) >= 1.0
    );
    // The series a worker looks up once and keeps (not per delivery) still count each one; a
    // histogram's count is its `+Inf` bucket.
    let payment = [("kind", "payment"), ("provider", "sandbox")];
    for (metric, with) in [
        ("switchyard_attempts_total", &payment[..]),
        ("switchyard_events_published_total", &payment[..]),
        (
            "switchyard_attempt_duration_seconds",
            &[payment[0], payment[1], ("le", "+Inf")][..],
        ),
        (
            "switchyard_delivery_duration_seconds",
            &[payment[0], ("le", "+Inf")][..],
        ),
    ] {
        assert!(
            after.sum(metric, with) >= 3.0,
            "{metric}: {:#?}",
            after.find(metric, with)
        );
    }
    assert!(
        after.sum(
            "switchyard_attempts_total",
            &[
                ("kind", "payment"),
                ("provider", "sandbox"),
                ("outcome", "ok")
            ]
        ) >= 3.0
    );
    assert_eq!(after.sum("switchyard_inflight", &payment[..1]), 0.0);
    assert!(after.sum("switchyard_webhooks_total", &[("outcome", "queued")]) >= 1.0);
    assert!(after.sum("switchyard_webhooks_total", &[("outcome", "ignored")]) >= 1.0);
    assert!(after.sum("switchyard_webhooks_total", &[("outcome", "bad_signature")]) >= 1.0);
    assert!(
        after.sum(
            "switchyard_events_published_total",
            &[
                ("kind", "payment"),
                ("provider", "other"),
                ("status", "failed")
            ]
        ) >= 1.0,
        "the unroutable command's failed event is counted under provider=\"other\""
    );

    // Every documented metric is there, with the documented help text, type and labels.
    for (name, doc) in &docs {
        let help = after
            .help
            .get(name)
            .unwrap_or_else(|| panic!("{name} is documented but not on /metrics"));
        assert_eq!(
            help, &doc.help,
            "{name}: # HELP differs from docs/operations.md"
        );
        assert_eq!(after.types[name], doc.kind, "{name}: # TYPE");
    }
    for name in after.help.keys().filter(|n| n.starts_with("switchyard_")) {
        assert!(
            docs.contains_key(name),
            "{name} is on /metrics but not in docs/operations.md"
        );
    }

    // Label values: configured names (or `other`) for kind and provider, the words the help
    // text lists for the rest. Never an id, a message or a URL.
    let configured: BTreeSet<String> = fleet
        .config
        .providers
        .iter()
        .flat_map(|p| [p.kind.to_string(), p.name.to_string()])
        .chain(["other".to_owned()])
        .collect();
    for s in after
        .series
        .iter()
        .filter(|s| s.metric.starts_with("switchyard_"))
    {
        let doc = &docs[&s.metric];
        let label_names: BTreeSet<String> =
            s.labels.keys().filter(|k| *k != "le").cloned().collect();
        assert_eq!(
            label_names, doc.labels,
            "{s:?}: labels differ from the docs"
        );
        for (label, value) in &s.labels {
            match label.as_str() {
                "le" => {}
                "kind" if s.metric.starts_with("switchyard_ledger_") => {
                    assert!(names(&doc.help, value), "{s:?}: {value} is not in the help")
                }
                "kind" | "provider" => {
                    assert!(
                        configured.contains(value),
                        "{s:?}: {value} is not configured"
                    )
                }
                "operation" => assert!(
                    value.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                    "{s:?}"
                ),
                _ => assert!(
                    names(&doc.help, value),
                    "{s:?}: the value {value:?} of {label} is not one the help text lists"
                ),
            }
        }
    }
    fleet.stop().await;
}

fn shipping_payload() -> serde_json::Value {
    serde_json::json!({
        "from": {"name": "Shop", "street1": "1 Main St", "city": "Springfield", "zip": "12345", "country": "US"},
        "to": {"name": "Ann", "street1": "2 Oak Ave", "city": "Shelbyville", "zip": "54321", "country": "US"},
        "parcel": {"weight_grams": 500, "length_cm": 20, "width_cm": 10, "height_cm": 5},
        "rate": {"rule": "cheapest"}
    })
}

#[test]
fn a_word_is_named_only_as_a_whole_word() {
    let help = "by outcome (queued: x; ignored; or the refusal: not_found, too_large).";
    assert!(names(help, "queued") && names(help, "not_found") && names(help, "too_large"));
    assert!(!names(help, "found") && !names(help, "large") && !names(help, "queue"));
    assert!(names(
        "by source queue (switchyard.ledger.events, x).",
        "switchyard.ledger.events"
    ));
}
