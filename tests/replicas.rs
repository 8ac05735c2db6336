//! Several replicas of every role at once (issue 15): two payment workers competing on the
//! same queues, two ingresses taking commands alternately, two ledgers on one PostgreSQL
//! database, and the sandbox. A mix of commands (plain, retried, ended by the sandbox's own
//! webhook, by webhooks the test posts to both ingresses at once, by status polls, by the
//! deadline, and `unknown` outcomes settled by a status check) runs in two rounds: the first
//! with every replica up, the second with one ledger and one worker SIGKILLed halfway.
//!
//! The checker demands: lost = 0; exactly one terminal event per command, the expected one;
//! every waiting command decided exactly once by the resolvers (one `waits` decision each, and
//! in the first round the ledgers' `switchyard_commands_total{source}` summed over both equal
//! to the number of such commands, source by source); no ledger row written twice (events,
//! attempts) and the stored status equal to the highest-`seq` event; one provider effect per
//! command; nothing parked in the ledger's or the callbacks' dead letters.
//!
//! `SWITCHYARD_REPLICAS_COMMANDS` sets the number of commands (default 400).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sqlx::Row;
use switchyard_core::{ErrorClass, Event, Status};
use switchyard_e2e::binary;
use switchyard_testing::{
    ONESHOT_PROVIDER, POLLED_PROVIDER, TOKEN, TestDatabase, TestFleet, TestFleetOptions,
    WEBHOOK_SECRET, free_port,
};
use switchyard_webhooks::StandardWebhooks;
use tokio::process::{Child, Command as Process};
use uuid::Uuid;

/// What a command of the mix does, and so how it must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    /// `sandbox`, answered at once.
    Plain,
    /// `sandbox`, a 503 first: retried through a delay tier.
    Retried,
    /// `sandbox_async`: waits, the sandbox's signed webhook (to the first ingress) ends it.
    SandboxWebhook,
    /// `sandbox`, accepted and never finished by the sandbox: the test posts signed webhooks
    /// for it to both ingresses at once, two delivery ids and one repeated.
    PostedWebhook,
    /// `sandbox_polled`: waits, status checks end it.
    Polled,
    /// Accepted and never finished, with a deadline 3 s away: the expiry ends it.
    Expires,
    /// `sandbox_oneshot` answering garbage: `unknown`, settled by a status check.
    Unknown,
}

impl Kind {
    fn of(i: usize) -> Kind {
        match i % 10 {
            0..=2 => Kind::Plain,
            3 => Kind::Retried,
            4 | 9 => Kind::SandboxWebhook,
            5 => Kind::PostedWebhook,
            6 => Kind::Polled,
            7 => Kind::Expires,
            _ => Kind::Unknown,
        }
    }

    /// The resolver's source that must end it, if the ledger ends it.
    fn source(self) -> Option<&'static str> {
        match self {
            Kind::Plain | Kind::Retried => None,
            Kind::SandboxWebhook | Kind::PostedWebhook => Some("webhook"),
            Kind::Polled | Kind::Unknown => Some("poll"),
            Kind::Expires => Some("expiry"),
        }
    }
}

/// One command of the mix.
#[derive(Debug, Clone)]
struct Sent {
    id: Uuid,
    kind: Kind,
    round: u8,
}

/// A fleet of separate processes, two of each role, on one PostgreSQL database.
struct Replicas {
    fleet: TestFleet,
    database: Option<TestDatabase>,
    dir: PathBuf,
    config: PathBuf,
    ingresses: [String; 2],
    ledgers: [String; 2],
    workers: [String; 2],
    ledger_children: Vec<Option<Child>>,
    worker_children: Vec<Option<Child>>,
    ingress_children: Vec<Child>,
}

impl Replicas {
    async fn start() -> Self {
        let fleet = TestFleet::start_with(TestFleetOptions {
            in_process: false,
            timeout_ms: 5_000,
            max_attempts: 8,
            ..Default::default()
        })
        .await;
        let database = TestDatabase::postgres().await;
        let sqlite = format!(
            "database_url = \"{}\"",
            fleet.config.ledger.database_url.expose()
        );
        assert!(fleet.config_toml.contains(&sqlite));
        let toml = fleet
            .config_toml
            .replace(&sqlite, &format!("database_url = \"{}\"", database.url));
        let dir =
            std::env::temp_dir().join(format!("switchyard-replicas-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("switchyard.toml");
        std::fs::write(&config, &toml).unwrap();
        let ingress_ports = [fleet.ingress_port, free_port()];
        let ledger_ports = [free_port(), free_port()];
        let worker_ports = [free_port(), free_port()];
        let url = |p: u16| format!("http://127.0.0.1:{p}");
        let mut replicas = Self {
            database: Some(database),
            dir,
            config,
            ingresses: ingress_ports.map(url),
            ledgers: ledger_ports.map(url),
            workers: worker_ports.map(url),
            ledger_children: Vec::new(),
            worker_children: Vec::new(),
            ingress_children: Vec::new(),
            fleet,
        };
        for (i, port) in ingress_ports.into_iter().enumerate() {
            let child = replicas.spawn(
                "switchyard-ingress",
                &format!("ingress-{i}.log"),
                ("SWITCHYARD_INGRESS__LISTEN", port),
            );
            replicas.ingress_children.push(child);
        }
        for (i, port) in ledger_ports.into_iter().enumerate() {
            let child = replicas.spawn(
                "switchyard-ledger",
                &format!("ledger-{i}.log"),
                ("SWITCHYARD_LEDGER__LISTEN", port),
            );
            replicas.ledger_children.push(Some(child));
        }
        for (i, port) in worker_ports.into_iter().enumerate() {
            let child = replicas.spawn(
                "switchyard-payment",
                &format!("payment-{i}.log"),
                ("SWITCHYARD_WORKER__LISTEN", port),
            );
            replicas.worker_children.push(Some(child));
        }
        replicas.wait_ready().await;
        replicas
    }

    fn spawn(&self, bin: &str, log: &str, listen: (&str, u16)) -> Child {
        Process::new(binary(bin))
            .arg("--config")
            .arg(&self.config)
            .env(listen.0, format!("127.0.0.1:{}", listen.1))
            .env_remove("SWITCHYARD_FAULTS")
            .env_remove("SWITCHYARD_DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join(log)).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let http = self.fleet.http();
        loop {
            let mut ready = Vec::new();
            for base in self
                .ingresses
                .iter()
                .chain(&self.ledgers)
                .chain(&self.workers)
            {
                let ok = http
                    .get(format!("{base}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                ready.push(ok);
            }
            let mut queues = true;
            for q in [
                "sandbox",
                "sandbox_async",
                "sandbox_polled",
                "sandbox_oneshot",
            ] {
                queues &= self
                    .fleet
                    .vhost
                    .queue_messages(&format!("switchyard.work.payment.{q}"))
                    .await
                    .is_some();
            }
            if queues && ready.iter().all(|r| *r) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the replicas never became ready ({ready:?}, queues {queues}); logs in {}",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sends command `i` of the mix through ingress `i % 2`.
    async fn send(&self, i: usize, round: u8) -> Sent {
        let kind = Kind::of(i);
        let id = Uuid::now_v7();
        let (provider, steps): (&str, &[&str]) = match kind {
            Kind::Plain => ("sandbox", &[]),
            Kind::Retried => ("sandbox", &["503", "ok"]),
            Kind::SandboxWebhook => ("sandbox_async", &[]),
            Kind::PostedWebhook => ("sandbox", &["accept:silent"]),
            Kind::Polled => (POLLED_PROVIDER, &[]),
            Kind::Expires if i % 20 < 10 => ("sandbox_async", &["accept:silent"]),
            Kind::Expires => (POLLED_PROVIDER, &["accept:silent"]),
            Kind::Unknown => (ONESHOT_PROVIDER, &["garbled"]),
        };
        if !steps.is_empty() {
            self.fleet.scenario(id, steps).await;
        }
        let mut body = serde_json::json!({
            "id": id, "kind": "payment", "provider": provider, "operation": "charge",
            "payload": {"amount": 1999, "currency": "usd", "payment_method": "pm_card_visa"},
            "metadata": {"test": "replicas", "case": format!("{kind:?}")},
        });
        if kind == Kind::Expires {
            body["deadline"] = (chrono::Utc::now() + chrono::Duration::seconds(3))
                .to_rfc3339()
                .into();
        }
        let url = format!("{}/v1/commands", self.ingresses[i % 2]);
        let started = Instant::now();
        loop {
            // A client retries what was not accepted, with the same body.
            let r = self
                .fleet
                .http()
                .post(&url)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => break,
                other => assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "command {i} never accepted: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if kind == Kind::PostedWebhook {
            tokio::spawn(post_webhooks(
                self.fleet.events.clone(),
                self.fleet.http().clone(),
                self.ingresses.clone(),
                id,
            ));
        }
        Sent { id, kind, round }
    }

    /// Sends commands `range` of the mix, a few at a time, as several clients would.
    async fn send_all(&self, range: std::ops::Range<usize>, round: u8) -> Vec<Sent> {
        use futures::StreamExt as _;
        futures::stream::iter(range)
            .map(|i| self.send(i, round))
            .buffered(8)
            .collect()
            .await
    }

    /// `switchyard_commands_total` of ledger `i`, summed by `source`.
    async fn ended_by_source(&self, i: usize) -> BTreeMap<String, u64> {
        let text = self
            .fleet
            .http()
            .get(format!("{}/metrics", self.ledgers[i]))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        commands_by_source(&text)
    }

    /// SIGKILLs ledger `i` and worker `i`.
    async fn kill(&mut self, i: usize) {
        for child in [&mut self.ledger_children[i], &mut self.worker_children[i]] {
            let mut c = child.take().unwrap();
            c.start_kill().unwrap();
            let _ = c.wait().await;
        }
    }

    async fn stop(mut self) {
        for c in self
            .ledger_children
            .iter_mut()
            .chain(self.worker_children.iter_mut())
            .filter_map(Option::as_mut)
            .chain(self.ingress_children.iter_mut())
        {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
        if let Some(db) = self.database.take() {
            db.cleanup().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        self.fleet.stop().await;
    }
}

/// Sums `switchyard_commands_total` by its `source` label, from a Prometheus text page.
fn commands_by_source(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("switchyard_commands_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let source = labels
            .split(',')
            .find_map(|l| l.strip_prefix("source=\""))
            .map(|s| s.trim_end_matches('"').to_owned())
            .unwrap_or_default();
        let v = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        *out.entry(source).or_default() += v;
    }
    out
}

/// Once `id` waits, posts its outcome as a provider would when its deliveries go through a
/// load balancer: to both ingresses at once under two delivery ids, and the first id again to
/// the other ingress. Whatever the order, one of them decides.
async fn post_webhooks(
    events: switchyard_testing::EventLog,
    http: reqwest::Client,
    ingresses: [String; 2],
    id: Uuid,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let reference = loop {
        if let Some(r) = events
            .of(id)
            .iter()
            .find(|e| e.status == Status::Waiting)
            .and_then(|e| e.provider_reference.clone())
        {
            break r;
        }
        if Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let signer = StandardWebhooks::new(WEBHOOK_SECRET).unwrap();
    let post = |ingress: usize, webhook_id: String| {
        let body = serde_json::json!({
            "reference": reference, "status": "succeeded", "result": {"via": ingress},
        })
        .to_string();
        let now = chrono::Utc::now().timestamp();
        let request = http
            .post(format!("{}/v1/webhooks/sandbox", ingresses[ingress]))
            .header("content-type", "application/json")
            .header("webhook-id", &webhook_id)
            .header("webhook-timestamp", now.to_string())
            .header(
                "webhook-signature",
                signer.sign(&webhook_id, now, body.as_bytes()),
            )
            .body(body);
        async move {
            // A provider delivers again until it gets a 2xx.
            for _ in 0..100 {
                if let Ok(r) = request.try_clone().unwrap().send().await
                    && r.status().is_success()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            panic!("webhook {webhook_id} never accepted");
        }
    };
    let (a, b) = tokio::join!(
        post(0, format!("msg_{id}_a")),
        post(1, format!("msg_{id}_b"))
    );
    let _ = (a, b);
    post(1, format!("msg_{id}_a")).await;
}

/// Waits until every command of `sent` has a terminal event; returns how long it took.
async fn settle(fleet: &TestFleet, sent: &[Sent], limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let open: Vec<&Sent> = sent
            .iter()
            .filter(|s| !fleet.events.of(s.id).iter().any(|e| e.status.is_terminal()))
            .collect();
        if open.is_empty() || started.elapsed() > limit {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The status a command of `kind` must end in.
fn expected(kind: Kind) -> Status {
    match kind {
        Kind::Expires => Status::Failed,
        _ => Status::Completed,
    }
}

/// Whether a worker died during this command's call to a provider that takes no key, so the
/// step was decided `unknown` without knowing whether the request left (design note 0001):
/// then the provider may have seen no request at all.
fn in_doubt(events: &[Event]) -> bool {
    events.iter().any(|e| {
        e.status == Status::Unknown && e.error.as_ref().is_some_and(|x| x.code == "interrupted")
    })
}

#[tokio::test]
async fn two_of_every_role_one_outcome_per_command_and_one_decision_per_wait() {
    let n: usize = std::env::var("SWITCHYARD_REPLICAS_COMMANDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let mut replicas = Replicas::start().await;
    let started = Instant::now();

    // Round 1: every replica up.
    let first = n / 2;
    let mut sent = replicas.send_all(0..first, 1).await;
    let round1_sent_in = started.elapsed();
    let round1_settled_in = settle(&replicas.fleet, &sent, Duration::from_secs(90)).await;
    // Decisions reach the metrics right after the terminal event's confirm: a moment more.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut round1_metrics = Vec::new();
    for i in 0..2 {
        round1_metrics.push(replicas.ended_by_source(i).await);
    }

    // Round 2: ledger 1 and worker 1 SIGKILLed halfway through; the others carry on.
    let round2_started = Instant::now();
    let kill_at = first + (n - first) / 2;
    sent.extend(replicas.send_all(first..kill_at, 2).await);
    let ledger1_before_kill = replicas.ended_by_source(1).await;
    replicas.kill(1).await;
    sent.extend(replicas.send_all(kill_at..n, 2).await);
    let round2_settled_in = settle(&replicas.fleet, &sent, Duration::from_secs(120)).await;
    let round2_in = round2_started.elapsed();
    // Anything that would wrongly follow a terminal event arrives now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ledger0_final = replicas.ended_by_source(0).await;

    // The event stream: lost, two outcomes, wrong outcomes, anything after the end.
    let mut lost = Vec::new();
    let mut two_outcomes = Vec::new();
    let mut wrong = Vec::new();
    let mut after_end = Vec::new();
    let mut latest: HashMap<Uuid, Status> = HashMap::new();
    let mut by_kind: BTreeMap<(u8, Kind), usize> = BTreeMap::new();
    let mut doubtful = HashSet::new();
    for s in &sent {
        *by_kind.entry((s.round, s.kind)).or_default() += 1;
        let events = replicas.fleet.events.of(s.id);
        if in_doubt(&events) {
            doubtful.insert(s.id);
        }
        let terminals: HashSet<Uuid> = events
            .iter()
            .filter(|e| e.status.is_terminal())
            .map(|e| e.event_id)
            .collect();
        let Some(end) = events.iter().find(|e| e.status.is_terminal()) else {
            lost.push((s.clone(), events.clone()));
            continue;
        };
        if terminals.len() > 1 {
            two_outcomes.push((s.clone(), events.clone()));
        }
        if events.iter().any(|e| e.seq > end.seq) {
            after_end.push((s.clone(), events.clone()));
        }
        let expired = end.error.as_ref().map(|e| e.class) == Some(ErrorClass::Expired);
        let right = end.status == expected(s.kind)
            && (s.kind != Kind::Expires || expired)
            && (s.kind != Kind::Unknown || events.iter().any(|e| e.status == Status::Unknown));
        // A worker killed during a call to the keyless provider leaves that call in doubt: a
        // status check may then find no such operation, and the command fails, once.
        if !right && !doubtful.contains(&s.id) {
            wrong.push((s.clone(), events.clone()));
        }
        latest.insert(s.id, events.iter().max_by_key(|e| e.seq).unwrap().status);
    }

    // Provider effects: one per command (at most one where a call was left in doubt).
    let mut effects_wrong = Vec::new();
    let mut requests: HashMap<Uuid, u64> = HashMap::new();
    for s in &sent {
        let view = replicas.fleet.sandbox_view(s.id).await;
        let effects = view["effects"].as_u64().unwrap_or(0);
        let allowed = if doubtful.contains(&s.id) {
            effects <= 1
        } else {
            effects == 1
        };
        if !allowed {
            effects_wrong.push((s.clone(), view.clone()));
        }
        // Its requests (each attempt, each quick retry) and its status checks.
        let seen = view["requests"].as_array().map_or(0, |r| r.len() as u64)
            + view["status_checks"].as_u64().unwrap_or(0);
        requests.insert(s.id, seen);
    }

    // The database, read directly: wait for the surviving ledger to catch up first.
    let db = sqlx::PgPool::connect(&replicas.database.as_ref().unwrap().url)
        .await
        .unwrap();
    let caught_up_deadline = Instant::now() + Duration::from_secs(60);
    let mut disagree: Vec<(Uuid, Status, Option<String>)>;
    loop {
        let stored: HashMap<String, String> = sqlx::query("SELECT id, status FROM commands")
            .fetch_all(&db)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("id"), r.get("status")))
            .collect();
        disagree = latest
            .iter()
            .filter(|(id, st)| stored.get(&id.to_string()).map(String::as_str) != Some(st.as_str()))
            .map(|(id, st)| (*id, *st, stored.get(&id.to_string()).cloned()))
            .collect();
        if disagree.is_empty() || Instant::now() > caught_up_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let scalar = |sql: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    let event_rows_twice = scalar(
        "SELECT COUNT(*) FROM (SELECT event_id FROM events GROUP BY event_id HAVING COUNT(*) > 1) d",
    )
    .await;
    let attempt_rows_twice = scalar(
        "SELECT COUNT(*) FROM (SELECT record_id FROM attempts GROUP BY record_id HAVING COUNT(*) > 1) d",
    )
    .await;
    // The same request recorded under two record ids would be a duplicate too.
    let same_request_twice = scalar(
        "SELECT COUNT(*) FROM (SELECT command_id, attempt, started_at, record::json->>'method' \
         FROM attempts GROUP BY 1, 2, 3, 4 HAVING COUNT(*) > 1) d",
    )
    .await;
    // Which, when any: the records side by side.
    let same_request_rows: Vec<String> = sqlx::query_scalar(
        "SELECT a.record FROM attempts a JOIN (SELECT command_id, attempt, started_at, \
         record::json->>'method' AS method FROM attempts GROUP BY 1, 2, 3, 4 \
         HAVING COUNT(*) > 1) d ON a.command_id = d.command_id AND a.attempt = d.attempt \
         AND a.started_at = d.started_at ORDER BY a.command_id LIMIT 6",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let stored_terminals_not_one = scalar(
        "SELECT COUNT(*) FROM (SELECT c.id FROM commands c LEFT JOIN events e \
         ON e.command_id = c.id AND e.status IN ('completed', 'failed', 'duplicate') \
         GROUP BY c.id HAVING COUNT(e.event_id) <> 1) d",
    )
    .await;
    let status_not_highest_seq = scalar(
        "SELECT COUNT(*) FROM commands c JOIN LATERAL (SELECT status, seq FROM events \
         WHERE command_id = c.id ORDER BY seq DESC LIMIT 1) top ON true \
         WHERE c.status <> top.status OR c.seq <> top.seq",
    )
    .await;
    let stored_commands = scalar("SELECT COUNT(*) FROM commands").await;
    let attempts_by_command: HashMap<String, i64> =
        sqlx::query("SELECT command_id, COUNT(*) AS n FROM attempts GROUP BY command_id")
            .fetch_all(&db)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("command_id"), r.get("n")))
            .collect();
    let waits: HashMap<String, (Option<String>, Option<String>)> =
        sqlx::query("SELECT command_id, resolution, resolved_by FROM waits")
            .fetch_all(&db)
            .await
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.get("command_id"),
                    (r.get("resolution"), r.get("resolved_by")),
                )
            })
            .collect();
    db.close().await;

    // One decision per waiting command, by the source its kind calls for; none for the rest.
    let mut decisions_wrong = Vec::new();
    let mut decided: BTreeMap<(u8, String), u64> = BTreeMap::new();
    for s in &sent {
        let wait = waits.get(&s.id.to_string());
        let source = wait.and_then(|(resolution, by)| {
            resolution.as_ref()?;
            let by = by.as_deref()?;
            Some(if by.starts_with("webhook:check.") {
                "poll"
            } else if by.starts_with("webhook:") {
                "webhook"
            } else {
                by
            })
        });
        if let Some(source) = source {
            *decided.entry((s.round, source.to_owned())).or_default() += 1;
        }
        if source != s.kind.source() && !doubtful.contains(&s.id) {
            decisions_wrong.push((s.clone(), wait.cloned()));
        }
    }
    // Every request the sandbox saw is recorded once; a worker SIGKILLed between a request and
    // publishing its record may leave one unrecorded in round 2.
    let mut records_wrong = Vec::new();
    for s in &sent {
        let stored = attempts_by_command
            .get(&s.id.to_string())
            .copied()
            .unwrap_or(0) as u64;
        let seen = requests[&s.id];
        if stored > seen || (s.round == 1 && stored != seen) {
            records_wrong.push((s.id, s.kind, s.round, stored, seen));
        }
    }
    // Round 1, with no crash: the ledgers' own count of what they ended, summed over both,
    // equals the decisions, source by source.
    let mut round1_counted: BTreeMap<String, u64> = BTreeMap::new();
    for m in &round1_metrics {
        for (source, v) in m {
            if source != "worker" {
                *round1_counted.entry(source.clone()).or_default() += v;
            }
        }
    }
    round1_counted.retain(|_, v| *v > 0);
    let round1_decided: BTreeMap<String, u64> = decided
        .iter()
        .filter(|((round, _), _)| *round == 1)
        .map(|((_, source), v)| (source.clone(), *v))
        .collect();
    let round1_waiting = sent
        .iter()
        .filter(|s| s.round == 1 && s.kind.source().is_some())
        .count() as u64;

    let parked_ledger = replicas
        .fleet
        .vhost
        .queue_messages("switchyard.dlq.ledger")
        .await
        .unwrap_or(0);
    let parked_callbacks = replicas
        .fleet
        .vhost
        .queue_messages("switchyard.dlq.callbacks")
        .await
        .unwrap_or(0);
    let logs = |name: &str| std::fs::read_to_string(replicas.dir.join(name)).unwrap_or_default();
    let ledger_logs = logs("ledger-0.log") + &logs("ledger-1.log");
    let count = |needle: &str| ledger_logs.matches(needle).count();

    eprintln!(
        "replicas: {n} commands through 2 ingresses, 2 payment workers, 2 ledgers on one \
         PostgreSQL; round 1 ({first}): sent in {:.1} s, settled {:.1} s later; round 2 ({}): \
         ledger 1 and worker 1 SIGKILLed at command {kill_at}, all settled {:.1} s after the \
         round began (sending took {:.1} s); mix {by_kind:?}",
        round1_sent_in.as_secs_f64(),
        round1_settled_in.as_secs_f64(),
        n - first,
        round2_in.as_secs_f64(),
        (round2_in - round2_settled_in).as_secs_f64(),
    );
    eprintln!(
        "replicas: lost {}, two terminal events {}, wrong outcome {}, event after the end {}, \
         effects not 1 {}, in doubt {}, ledger disagreeing {}, event rows twice \
         {event_rows_twice}, attempt rows twice {attempt_rows_twice} (same request twice \
         {same_request_twice}), stored terminal events not 1 {stored_terminals_not_one}, stored \
         status not the highest seq {status_not_highest_seq}, commands stored {stored_commands}, \
         attempt records wrong {}, decisions wrong {}",
        lost.len(),
        two_outcomes.len(),
        wrong.len(),
        after_end.len(),
        effects_wrong.len(),
        doubtful.len(),
        disagree.len(),
        records_wrong.len(),
        decisions_wrong.len(),
    );
    eprintln!(
        "replicas: decisions in the database {decided:?}; round 1: {round1_waiting} waiting, \
         ledger metrics {:?} + {:?} = {round1_counted:?}; ledger 1 before its kill {:?}, \
         ledger 0 at the end {:?}; parked: ledger {parked_ledger}, callbacks \
         {parked_callbacks}; ledger log lines: write retried {}, resolving retried {}, \
         deadlock {}, refused {}",
        round1_metrics[0],
        round1_metrics[1],
        ledger1_before_kill,
        ledger0_final,
        count("ledger write failed"),
        count("resolving failed"),
        count("deadlock"),
        count("refused"),
    );

    let first3 = |v: &[(Sent, Vec<Event>)]| v.iter().take(3).cloned().collect::<Vec<_>>();
    assert!(lost.is_empty(), "lost: {:#?}", first3(&lost));
    assert!(
        two_outcomes.is_empty(),
        "two terminal events: {:#?}",
        first3(&two_outcomes)
    );
    assert!(wrong.is_empty(), "wrong outcome: {:#?}", first3(&wrong));
    assert!(
        after_end.is_empty(),
        "events after the end: {:#?}",
        first3(&after_end)
    );
    assert!(
        effects_wrong.is_empty(),
        "provider effects: {:#?}",
        effects_wrong.iter().take(3).collect::<Vec<_>>()
    );
    assert!(
        disagree.is_empty(),
        "the ledger disagrees with the highest-seq event: {:#?}",
        disagree.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(event_rows_twice, 0, "event rows written twice");
    assert_eq!(attempt_rows_twice, 0, "attempt rows written twice");
    assert_eq!(
        same_request_twice, 0,
        "one request recorded twice: {same_request_rows:#?}"
    );
    assert_eq!(
        stored_terminals_not_one, 0,
        "commands whose stored terminal events are not exactly one"
    );
    assert_eq!(
        status_not_highest_seq, 0,
        "commands whose stored status is not their highest-seq event's"
    );
    assert_eq!(stored_commands, n as i64, "every command stored once");
    assert!(
        records_wrong.is_empty(),
        "attempt records against the sandbox's requests (id, kind, round, stored, seen): {:#?}",
        records_wrong.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        decisions_wrong.is_empty(),
        "waits decided by the wrong source, or not once: {:#?}",
        decisions_wrong.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(
        round1_decided.values().sum::<u64>(),
        round1_waiting,
        "every waiting command of round 1 decided in the database"
    );
    assert_eq!(
        round1_counted, round1_decided,
        "the ledgers' switchyard_commands_total, summed over both, against the decisions"
    );
    assert_eq!(parked_ledger, 0, "ledger messages parked");
    assert_eq!(parked_callbacks, 0, "callbacks parked");
    assert_eq!(count("refused"), 0, "the database refused something");

    replicas.stop().await;
}

/// The resolver's retry path (docs/ledger.md, "When the resolver cannot finish"): the
/// ledger's database held locked (by the `sqlite3` tool) for 40 s while webhooks arrive; once
/// it is free, every command ends, once, and no callback is parked. (It does not reproduce the
/// broker stall the test above met, which parked callbacks before the fix: it also passes
/// without it.)
#[tokio::test]
async fn a_resolver_that_cannot_finish_for_a_while_parks_no_callback() {
    let fleet = TestFleet::start().await;
    let commands: Vec<_> = (0..5)
        .map(|_| fleet.command("payment", "charge", charge_payload()))
        .collect();
    for c in &commands {
        fleet.scenario(c.id, &["accept:silent"]).await;
        fleet.publish(c).await;
    }
    let mut references = Vec::new();
    for c in &commands {
        let events = fleet
            .events
            .reached(c.id, Status::Waiting, Duration::from_secs(30))
            .await;
        references.push(
            events
                .iter()
                .find_map(|e| e.provider_reference.clone())
                .unwrap(),
        );
    }
    let url = fleet.config.ledger.database_url.expose().to_owned();
    let path = url
        .trim_start_matches("sqlite://")
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let mut lock = Process::new("sqlite3")
        .arg(&path)
        .args(["BEGIN EXCLUSIVE;", ".shell sleep 40", "COMMIT;"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the sqlite3 tool is needed for this test (apt-get install sqlite3)");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let signer = StandardWebhooks::new(WEBHOOK_SECRET).unwrap();
    for (c, reference) in commands.iter().zip(&references) {
        let body = serde_json::json!({"reference": reference, "status": "succeeded", "result": {}})
            .to_string();
        let now = chrono::Utc::now().timestamp();
        let webhook_id = format!("msg_{}", c.id);
        let r = fleet
            .http()
            .post(format!("{}/v1/webhooks/sandbox", fleet.ingress_url()))
            .header("content-type", "application/json")
            .header("webhook-id", &webhook_id)
            .header("webhook-timestamp", now.to_string())
            .header(
                "webhook-signature",
                signer.sign(&webhook_id, now, body.as_bytes()),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    assert!(
        lock.wait().await.unwrap().success(),
        "sqlite3 held the lock"
    );
    let started = Instant::now();
    let ended = loop {
        let ended = commands
            .iter()
            .filter(|c| fleet.events.of(c.id).iter().any(|e| e.status.is_terminal()))
            .count();
        if ended == commands.len() || started.elapsed() > Duration::from_secs(45) {
            break ended;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let parked = fleet
        .vhost
        .queue_messages("switchyard.dlq.callbacks")
        .await
        .unwrap_or(0);
    eprintln!(
        "database locked: {ended} of {} ended, {parked} callbacks parked",
        commands.len()
    );
    assert_eq!(parked, 0, "callbacks parked");
    assert_eq!(ended, commands.len(), "every waiting command ended");
    for c in &commands {
        let events = fleet.events.of(c.id);
        let terminals: HashSet<Uuid> = events
            .iter()
            .filter(|e| e.status.is_terminal())
            .map(|e| e.event_id)
            .collect();
        assert_eq!(terminals.len(), 1, "{events:#?}");
    }
    fleet.stop().await;
}

fn charge_payload() -> serde_json::Value {
    serde_json::json!({"amount": 1999, "currency": "usd", "payment_method": "pm_card_visa"})
}
