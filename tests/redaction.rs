//! The canary scan (RELIABILITY S5): fake secrets and test card numbers go through the
//! success, failure, retry, invalid and dead-letter paths of the real binaries; then the
//! events, dead letters, attempt records, HTTP answers and logs are searched for them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use sqlx::Connection;
use switchyard_core::{AttemptRecord, Status};
use switchyard_e2e::binary;
use switchyard_testing::{
    EASYPOST_KEY, SENDGRID_KEY, STRIPE_KEY, TOKEN, TWILIO_TOKEN, TestDatabase, TestFleet,
    TestFleetOptions, free_port,
};
use tokio::process::{Child, Command};

const PROVIDER_TOKEN: &str = "tok_provider_canary_81b3";
/// Everything that must appear nowhere. The sandbox's `leak:` answers carry the cards, the
/// CVC and the client secret; the command published over AMQP carries the fourth card.
const CANARIES: &[&str] = &[
    "4242424242424242",
    "5555555555554444",
    "5555 5555 5555 4444",
    "4000056655665556",
    "pi_3Canary_secret_RVn8",
    "\"987\"",
    PROVIDER_TOKEN,
    TOKEN,
    "idem_test_canary_secret_9e4",
    SENDGRID_KEY,
    TWILIO_TOKEN,
    EASYPOST_KEY,
    STRIPE_KEY,
    // Issue 12: a card as a JSON number and as a key, secret names in every spelling,
    // credentials in URLs, secrets in a command's payload and metadata.
    "4111111111111111",
    "5105105105105100",
    "canary_apikey_dash_31",
    "canary_x_apikey_32",
    "canary_private_key_33",
    "canary_passphrase_34",
    "canary_access_key_35",
    "canary_pin_36",
    "canary_auth_37",
    "canary_urlpw_38",
    COMMAND_SECRET,
];

/// The secret the core app put in a command's metadata: redacted wherever Switchyard writes,
/// kept only in the dead-lettered command itself.
const COMMAND_SECRET: &str = "canary_meta_key_39";

fn scan(place: &str, text: &str) {
    for c in CANARIES {
        assert!(!text.contains(c), "canary {c:?} found in {place}:\n{text}");
    }
}

fn spawn(bin: &str, config: &std::path::Path, log: &std::path::Path) -> Child {
    Command::new(binary(bin))
        .arg("--config")
        .arg(config)
        .env("CANARY_PROVIDER_TOKEN", PROVIDER_TOKEN)
        .env(
            "RUST_LOG",
            "debug,lapin=info,h2=info,hyper=info,hyper_util=info,rustls=info,reqwest=info",
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn no_secret_or_card_number_is_written_anywhere_on_sqlite() {
    let _ = canary_run(None).await;
}

/// The same run with the ledger and journal on PostgreSQL: every row of every table is read
/// back as text, and the write-ahead log the run wrote is read as bytes.
#[tokio::test]
async fn no_secret_or_card_number_is_written_anywhere_on_postgres() {
    let database = TestDatabase::postgres().await;
    let url = database.url.clone();
    let wal = WalWindow::open(&url).await;
    let ids = canary_run(Some(&url)).await;
    wal.scan_and_close(&ids[0].to_string()).await;
    database.cleanup().await;
}

/// The write-ahead log written between `open` and `scan_and_close`, kept by a replication
/// slot so that no checkpoint recycles it while the run goes on.
struct WalWindow {
    /// The session owning the slot: a temporary slot, dropped with the session even when the
    /// test fails half-way.
    conn: sqlx::PgConnection,
    start: String,
}

impl WalWindow {
    async fn open(url: &str) -> Self {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        let slot = format!("sy_canary_{}", uuid::Uuid::new_v4().simple());
        let (start,): (String,) = sqlx::query_as(
            "SELECT lsn::text FROM pg_create_physical_replication_slot($1, true, true)",
        )
        .bind(&slot)
        .fetch_one(&mut conn)
        .await
        .expect("a physical replication slot (the test's PostgreSQL user must be a superuser)");
        Self { conn, start }
    }

    /// Scans the window; `written` is a value the run stored, proving the right bytes were read.
    async fn scan_and_close(self, written: &str) {
        let mut conn = self.conn;
        // Everything committed is flushed (synchronous_commit is on); take what was flushed.
        let (from, to, segment, timeline): (i64, i64, i64, i32) = sqlx::query_as(
            "SELECT ($1::pg_lsn - '0/0'::pg_lsn)::bigint, \
                    (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint, \
                    pg_size_bytes(current_setting('wal_segment_size')), \
                    (SELECT timeline_id FROM pg_control_checkpoint())",
        )
        .bind(&self.start)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let (length, per_id) = (to - from, 0x1_0000_0000 / segment);
        let mut wal = Vec::new();
        let mut read = 0;
        while read < length {
            // Segment by segment: the file holding `from + read` (named as PostgreSQL names
            // them: timeline, then the segment number in two parts), from that offset on.
            let (number, offset) = ((from + read) / segment, (from + read) % segment);
            let file = format!(
                "{timeline:08X}{:08X}{:08X}",
                number / per_id,
                number % per_id
            );
            let take = (segment - offset).min(length - read);
            let (bytes,): (Vec<u8>,) =
                sqlx::query_as("SELECT pg_read_binary_file('pg_wal/' || $1, $2, $3)")
                    .bind(&file)
                    .bind(offset)
                    .bind(take)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
            wal.extend_from_slice(&bytes);
            read += take;
        }
        conn.close().await.unwrap();
        assert!(
            wal.len() > 100_000,
            "the run wrote to the write-ahead log: {} bytes",
            wal.len()
        );
        eprintln!("scanned {} bytes of PostgreSQL write-ahead log", wal.len());
        let wal = String::from_utf8_lossy(&wal);
        assert!(
            wal.contains(written),
            "the run's rows are in the scanned log"
        );
        scan("PostgreSQL's write-ahead log", &wal);
    }
}

/// Every row of every table of the database at `url`, as text.
async fn postgres_rows(url: &str) -> (String, usize) {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let tables: Vec<(String,)> =
        sqlx::query_as("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let mut text = String::new();
    let mut rows = 0;
    for (table,) in tables {
        let found: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM \"{table}\" t"
        )))
        .fetch_all(&mut conn)
        .await
        .unwrap();
        rows += found.len();
        for (row,) in found {
            text.push_str(&table);
            text.push_str(": ");
            text.push_str(&row);
            text.push('\n');
        }
    }
    (text, rows)
}

/// The canary run on the ledger database at `postgres` (its own SQLite file when `None`).
/// Returns the ids of the commands it sent.
async fn canary_run(postgres: Option<&str>) -> Vec<uuid::Uuid> {
    let fleet = TestFleet::start_with(TestFleetOptions {
        in_process: false,
        extra_toml: "\n[[providers]]\nname = \"canary\"\nkind = \"payment\"\ntype = \"http\"\n\
                     operations = [\"charge\"]\nbearer_token_env = \"CANARY_PROVIDER_TOKEN\"\n"
            .to_owned(),
        ..Default::default()
    })
    .await;
    // The canary provider is the sandbox's payment endpoint, behind a bearer token.
    // Nothing in-process binds the fleet's ingress port: the ingress binary takes it.
    let (port, ledger_port) = (fleet.ingress_port, free_port());
    let mut toml = fleet.config_toml.clone();
    if let Some(url) = postgres {
        let sqlite = format!(
            "database_url = \"{}\"",
            fleet.config.ledger.database_url.expose()
        );
        assert!(toml.contains(&sqlite), "{toml}");
        toml = toml.replace(&sqlite, &format!("database_url = \"{url}\""));
    }
    let toml = toml
        .replacen(
            "[ledger]\nlisten = \"127.0.0.1:0\"",
            &format!("[ledger]\nlisten = \"127.0.0.1:{ledger_port}\""),
            1,
        )
        .replace(
            "operations = [\"charge\"]\nbearer_token_env",
            &format!(
                "base_url = \"{}\"\nca_file = \"{}\"\noperations = [\"charge\"]\nbearer_token_env",
                fleet.sandbox.generic_base_url("payment"),
                fleet.sandbox.ca_pem_path().display()
            ),
        );
    let dir = std::env::temp_dir().join(format!(
        "switchyard-canary-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("switchyard.toml");
    std::fs::write(&config, &toml).unwrap();
    let logs = [
        dir.join("ingress.log"),
        dir.join("payment.log"),
        dir.join("ledger.log"),
        dir.join("notification.log"),
        dir.join("shipping.log"),
    ];
    let mut ingress = spawn("switchyard-ingress", &config, &logs[0]);
    let mut worker = spawn("switchyard-payment", &config, &logs[1]);
    let mut ledger = spawn("switchyard-ledger", &config, &logs[2]);
    let mut notifier = spawn("switchyard-notification", &config, &logs[3]);
    let mut shipper = spawn("switchyard-shipping", &config, &logs[4]);

    let url = format!("http://127.0.0.1:{port}/v1/commands");
    let http = fleet.http().clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "the ingress never became ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    while fleet
        .vhost
        .queue_messages("switchyard.work.payment.canary")
        .await
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the worker never declared its queue"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let post = |payload: serde_json::Value| {
        let http = http.clone();
        let url = url.clone();
        async move {
            http.post(url)
                .bearer_auth(TOKEN)
                .json(&serde_json::json!({"kind": "payment", "provider": "canary", "operation": "charge", "payload": payload}))
                .send()
                .await
                .unwrap()
        }
    };
    let charge =
        serde_json::json!({"amount": 1999, "currency": "usd", "payment_method": "pm_card_visa"});

    // Success, permanent failure, and retry-then-success, each answered with leaky bodies.
    let mut ids = Vec::new();
    for steps in [
        vec!["leak:200"],
        vec!["leak:402"],
        vec!["leak:503", "leak:503", "leak:200"],
    ] {
        let id = uuid::Uuid::now_v7();
        fleet.scenario(id, &steps).await;
        let mut body = charge.clone();
        body["description"] = "canary run".into();
        let r = http
            .post(&url)
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"id": id, "kind": "payment", "provider": "canary", "operation": "charge", "payload": body,
                "metadata": {"order": "42", "X-Api-Key": COMMAND_SECRET}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        ids.push(id);
    }
    // SendGrid's API key rides in the Authorization header of every attempt, retried here.
    let email = uuid::Uuid::now_v7();
    fleet.scenario(email, &["503"]).await;
    let r = http
        .post(&url)
        .bearer_auth(TOKEN)
        .json(
            &serde_json::json!({"id": email, "kind": "notification", "provider": "sendgrid",
            "operation": "send_email", "payload": {"to": ["ann@example.com"],
            "from": "shop@example.com", "subject": "canary", "text": "canary run"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    ids.push(email);
    // Twilio's auth token rides in basic auth; its delivery report ends the command.
    let text = uuid::Uuid::now_v7();
    let r = http
        .post(&url)
        .bearer_auth(TOKEN)
        .json(
            &serde_json::json!({"id": text, "kind": "notification", "provider": "twilio",
            "operation": "send_sms", "payload": {"to": "+14155550100", "body": "canary run"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    ids.push(text);
    // Stripe's secret key rides as a bearer token, on a charge retried once.
    let stripe = uuid::Uuid::now_v7();
    fleet.scenario(stripe, &["503"]).await;
    let r = http
        .post(&url)
        .bearer_auth(TOKEN)
        .json(
            &serde_json::json!({"id": stripe, "kind": "payment", "provider": "stripe",
            "operation": "charge", "payload": {"amount": 2500, "currency": "usd",
            "payment_method": "pm_card_visa"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    ids.push(stripe);
    // EasyPost's API key rides in basic auth on each of a label's requests, retried here.
    let parcel = uuid::Uuid::now_v7();
    fleet.scenario(parcel, &["503"]).await;
    let address = serde_json::json!({"name": "Ann", "street1": "417 Montgomery St",
        "city": "San Francisco", "state": "CA", "zip": "94104", "country": "US"});
    let r = http
        .post(&url)
        .bearer_auth(TOKEN)
        .json(
            &serde_json::json!({"id": parcel, "kind": "shipping", "provider": "easypost",
            "operation": "create_label", "payload": {"from": address, "to": address,
            "parcel": {"weight_grams": 500, "length_cm": 20, "width_cm": 10, "height_cm": 5},
            "rate": {"rule": "cheapest"}, "reference": "canary run"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    ids.push(parcel);
    // A card number in a command: refused at the ingress without echoing it...
    let mut with_card = charge.clone();
    with_card["description"] = "pay with 4000056655665556".into();
    let refused = post(with_card.clone()).await;
    assert_eq!(refused.status(), 422);
    let refused = refused.text().await.unwrap();
    scan("the 422 answer", &refused);
    // ...and dead-lettered masked when published straight to the broker.
    let mut over_amqp = fleet.command("payment", "charge", with_card);
    over_amqp.provider = "canary".parse().unwrap();
    fleet.publish(&over_amqp).await;
    ids.push(over_amqp.id);
    // Issue 12: a card in a command's metadata, straight to the broker, is refused as well.
    let mut in_metadata = fleet.command("payment", "charge", charge.clone());
    in_metadata.provider = "canary".parse().unwrap();
    in_metadata.metadata =
        serde_json::from_value(serde_json::json!({"note": "card 4000056655665556"})).unwrap();
    fleet.publish(&in_metadata).await;
    ids.push(in_metadata.id);

    let mut statuses = Vec::new();
    for id in &ids {
        let events = fleet.events.terminal(*id, Duration::from_secs(30)).await;
        statuses.push(
            events
                .iter()
                .find(|e| e.status.is_terminal())
                .unwrap()
                .status,
        );
    }
    assert_eq!(
        statuses,
        vec![
            Status::Completed,
            Status::Failed,
            Status::Completed,
            Status::Completed,
            Status::Completed,
            Status::Completed,
            Status::Completed,
            Status::Failed,
            Status::Failed
        ]
    );
    let refused = fleet.events.of(in_metadata.id);
    let failed = refused.iter().find(|e| e.status == Status::Failed).unwrap();
    assert_eq!(
        failed.error.as_ref().map(|e| e.message.as_str()),
        Some("metadata: holds a card number: send the provider's payment-method token instead"),
        "{refused:?}"
    );

    // Events: every one of these commands' events, as JSON.
    let events: Vec<_> = ids.iter().flat_map(|id| fleet.events.of(*id)).collect();
    let events_json = serde_json::to_string(&events).unwrap();
    scan("the events", &events_json);
    assert!(
        events_json.contains("************4242"),
        "the card came through, masked: {events_json}"
    );

    // What an operator sees of the dead letters is redacted (listed before they are taken).
    let listed = Command::new(binary("switchyard"))
        .args(["dlq", "list", "--json", "--config"])
        .arg(&config)
        .env_remove("SWITCHYARD_AMQP_URL")
        .output()
        .await
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("X-Api-Key"), "{listed}");
    scan("switchyard dlq list", &listed);
    // Dead letters: bodies and headers.
    let dead = fleet.dead_letters("payment").await;
    assert_eq!(
        dead.len(),
        3,
        "the permanent failure and the two card-carrying commands"
    );
    // A dead letter's body is the command as the core app sent it, kept whole for replay:
    // its own metadata secret is in there, nothing a provider answered is.
    let mut kept_whole = 0;
    for (headers, body) in &dead {
        scan("a dead letter's headers", &format!("{headers:?}"));
        let body = String::from_utf8_lossy(body);
        kept_whole += usize::from(body.contains(COMMAND_SECRET));
        scan(
            "a dead letter's body",
            &body.replace(COMMAND_SECRET, "(the command's own)"),
        );
    }
    assert_eq!(kept_whole, 1, "the failed command is kept whole for replay");

    // The ledger: what it answers, attempt records included.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut attempts = 0;
    for id in &ids {
        let url = format!("http://127.0.0.1:{ledger_port}/v1/commands/{id}");
        let view: serde_json::Value = loop {
            if let Ok(r) = http.get(&url).bearer_auth(TOKEN).send().await
                && r.status() == 200
            {
                let v: serde_json::Value = r.json().await.unwrap();
                if v["status"] == "completed" || v["status"] == "failed" {
                    break v;
                }
            }
            assert!(Instant::now() < deadline, "the ledger never settled {id}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        scan("a ledger answer", &view.to_string());
        for a in view["attempts"].as_array().unwrap() {
            let record: AttemptRecord = serde_json::from_value(a.clone()).unwrap();
            assert_eq!(
                record
                    .request_headers
                    .get("authorization")
                    .map(String::as_str),
                Some("[REDACTED]")
            );
            attempts += 1;
        }
    }
    assert!(
        attempts >= 5,
        "every provider request is recorded: {attempts}"
    );

    // Logs of every process, at debug level, and the ledger's database files.
    for child in [
        &mut ingress,
        &mut worker,
        &mut ledger,
        &mut notifier,
        &mut shipper,
    ] {
        child.start_kill().unwrap();
        let _ = child.wait().await;
    }
    if let Some(url) = postgres {
        let (rows, count) = postgres_rows(url).await;
        assert!(
            rows.contains("commands: ")
                && rows.contains("attempts: ")
                && rows.contains("journal_steps: "),
            "the ledger's and the journal's tables were read: {rows}"
        );
        eprintln!("scanned {count} PostgreSQL rows");
        scan("a PostgreSQL row", &rows);
    } else {
        let db = fleet
            .config
            .ledger
            .database_url
            .expose()
            .trim_start_matches("sqlite://")
            .trim_end_matches("?mode=rwc")
            .to_owned();
        let mut db_bytes = 0;
        for file in [db.clone(), format!("{db}-wal")] {
            if let Ok(bytes) = std::fs::read(&file) {
                db_bytes += bytes.len();
                scan(
                    &format!("the ledger database {file}"),
                    &String::from_utf8_lossy(&bytes),
                );
            }
        }
        assert!(db_bytes > 0, "the ledger database was scanned");
    }
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(
            !text.is_empty(),
            "{} is empty: nothing was scanned",
            log.display()
        );
        scan(&format!("the log {}", log.display()), &text);
    }
    let _ = std::fs::remove_dir_all(dir);
    fleet.stop().await;
    ids
}
