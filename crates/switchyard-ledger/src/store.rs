//! The ledger's database: one implementation over sqlx's `Any` driver, so SQLite (the
//! embedded default) and PostgreSQL run the same SQL, migrations and tests.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, AssertSqlSafe, Row};
use switchyard_core::{AttemptRecord, Event, Status};
use switchyard_sqlrows::Dialect;
use uuid::Uuid;

/// A database failure. Ingest retries (the deliveries are requeued); queries answer 503.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row does not decode (written by an incompatible version).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether the database refused the data itself (a value it cannot store, a broken
    /// constraint), so the same data would be refused forever; an outage (connection refused,
    /// pool timeout, a restarting server) is not, and is worth waiting for.
    pub fn is_data_fault(&self) -> bool {
        let StoreError::Db(e) = self else {
            return false;
        };
        match e {
            sqlx::Error::Encode(_) => true,
            sqlx::Error::Database(db) => {
                use sqlx::error::ErrorKind;
                if !matches!(db.kind(), ErrorKind::Other) {
                    return true;
                }
                let code = db.code().unwrap_or_default();
                match code.parse::<i64>() {
                    // SQLite's result codes: constraint (19, with its extended codes),
                    // too big (18), type mismatch (20).
                    Ok(n) if code.len() < 5 => matches!(n & 0xff, 18..=20),
                    // PostgreSQL's SQLSTATE: class 22 (data exception, e.g. NUL in text) and
                    // 23 (integrity constraint violation).
                    _ => code.starts_with("22") || code.starts_with("23"),
                }
            }
            _ => false,
        }
    }
}

/// The ledger's store. Cheap to clone (a connection pool).
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    /// SQLite or PostgreSQL: the placeholders, the statement pieces and the write lock.
    pub(crate) dialect: Dialect,
    /// Seals what must be kept whole (waiting commands).
    pub(crate) sealer: crate::seal::Sealer,
    /// Redacts what is kept readable.
    pub(crate) redactor: switchyard_redact::Redactor,
}

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v).single().unwrap_or_default()
}

/// A string as the database can store it: PostgreSQL refuses NUL in text (and with it the
/// whole batch), so NUL becomes U+FFFD and the rest of the value is kept. Every string bound
/// to the database goes through this or [`json_text`], never raw.
pub(crate) fn text(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s.to_owned()
    }
}

/// JSON as stored text, with NUL in any string or key replaced as by [`text`]: serde writes
/// it as the escape `\u0000`, which reads back as NUL and which PostgreSQL's JSON refuses.
pub(crate) fn json_text<T: Serialize>(v: &T) -> String {
    let s = serde_json::to_string(v).unwrap_or_default();
    // The common case costs one scan; only a body that may hold NUL is rebuilt.
    if !s.contains("\\u0000") {
        return s;
    }
    match serde_json::from_str::<Value>(&s) {
        Ok(mut v) => {
            scrub(&mut v);
            serde_json::to_string(&v).unwrap_or(s)
        }
        Err(_) => s,
    }
}

fn scrub(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('\0') => *s = text(s),
        Value::Array(items) => items.iter_mut().for_each(scrub),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(k, v)| (text(&k), v))
                    .collect();
            }
            map.values_mut().for_each(scrub);
        }
        _ => {}
    }
}

/// The current state of a command, as the ledger last saw it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CommandSummary {
    /// The command id.
    pub id: Uuid,
    /// Integration kind.
    pub kind: String,
    /// Provider.
    pub provider: String,
    /// Operation.
    pub operation: String,
    /// Current status (the event with the highest `seq`; terminal sticky within a run, a
    /// later run reopens).
    pub status: Status,
    /// `seq` of that event.
    pub seq: u64,
    /// The run of that event: 0 for the first, n after the n-th replay.
    pub run: u32,
    /// Attempts made so far.
    pub attempt: u32,
    /// The provider's reference, once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_reference: Option<String>,
    /// The outcome, once completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why it last failed or retried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    /// The command's metadata.
    pub metadata: Value,
    /// When the first event happened.
    pub created_at: DateTime<Utc>,
    /// When the latest applied event happened.
    pub updated_at: DateTime<Utc>,
}

/// Everything the ledger knows of one command.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[schemars(title = "Switchyard command, as the ledger knows it")]
pub struct CommandView {
    /// The command id.
    pub id: Uuid,
    /// Its state, once any event arrived (its fields beside `id`, which is said once).
    #[serde(flatten, serialize_with = "summary_without_id")]
    pub summary: Option<CommandSummary>,
    /// Its events, by `seq`.
    pub events: Vec<Event>,
    /// Its provider requests, oldest first (bodies emptied once pruned).
    pub attempts: Vec<AttemptRecord>,
    /// How an operator ended its latest `unknown` outcome, if one did: who, why, when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<crate::waits::OperatorResolution>,
}

/// A summary's fields but its `id`, for flattening into a [`CommandView`] that has one:
/// a JSON object with a key twice is read differently by different parsers.
fn summary_without_id<S: serde::Serializer>(
    summary: &Option<CommandSummary>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::Error;
    match summary {
        None => serializer.serialize_none(),
        Some(s) => {
            let mut fields = match serde_json::to_value(s).map_err(S::Error::custom)? {
                Value::Object(fields) => fields,
                _ => return Err(S::Error::custom("a summary is an object")),
            };
            fields.remove("id");
            fields.serialize(serializer)
        }
    }
}

/// What one [`Store::prune`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Attempts whose headers and bodies were emptied.
    pub attempts: u64,
    /// Webhook ids forgotten.
    pub webhook_receipts: u64,
}

/// Filters of the operators' list.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this status.
    pub status: Option<Status>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this provider.
    pub provider: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
    /// Page size (1 to 500).
    pub limit: u32,
    /// Where the previous page ended.
    pub cursor: Option<String>,
}

/// One page of commands, newest first.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[schemars(title = "Switchyard page of commands")]
pub struct Page {
    /// The commands.
    pub items: Vec<CommandSummary>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// A cursor that does not decode.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid cursor")]
pub struct BadCursor;

fn encode_cursor(created_at: i64, id: &str) -> String {
    B64.encode(format!("{created_at}:{id}"))
}

fn decode_cursor(c: &str) -> Result<(i64, String), BadCursor> {
    let raw = String::from_utf8(B64.decode(c).map_err(|_| BadCursor)?).map_err(|_| BadCursor)?;
    let (t, id) = raw.split_once(':').ok_or(BadCursor)?;
    let id: Uuid = id.parse().map_err(|_| BadCursor)?;
    Ok((t.parse().map_err(|_| BadCursor)?, id.to_string()))
}

fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// `{head} VALUES (..), (..) {tail}` for `rows` rows of `columns` values.
fn multi_row_insert(
    head: &str,
    columns: usize,
    rows: usize,
    tail: &str,
    dialect: Dialect,
) -> String {
    format!("{head} VALUES {} {tail}", dialect.rows(rows, columns, 1))
}

/// The upsert of a command's summary row: the state follows the highest `seq`; within a run a
/// terminal status is sticky, and a later run reopens the command (`seq` already sorts runs
/// above each other). The reference, once known, is kept; `created_at` is the earliest event.
fn upsert_command_clause() -> String {
    const MOVES: &str = "commands.seq < excluded.seq AND (commands.run < excluded.run \
         OR commands.status NOT IN ('completed', 'failed', 'duplicate'))";
    let newer = |col: &str| {
        format!("{col} = CASE WHEN {MOVES} THEN excluded.{col} ELSE commands.{col} END")
    };
    format!(
        "ON CONFLICT (id) DO UPDATE SET {}, {}, {}, {}, {}, {}, \
         provider_reference = CASE WHEN {MOVES} \
           THEN COALESCE(excluded.provider_reference, commands.provider_reference) \
           ELSE COALESCE(commands.provider_reference, excluded.provider_reference) END, \
         result = CASE WHEN {MOVES} AND commands.run < excluded.run THEN excluded.result \
           WHEN {MOVES} THEN COALESCE(excluded.result, commands.result) ELSE commands.result END, \
         created_at = CASE WHEN excluded.created_at < commands.created_at \
           THEN excluded.created_at ELSE commands.created_at END",
        newer("status"),
        newer("seq"),
        newer("attempt"),
        newer("error"),
        newer("updated_at"),
        newer("run"),
    )
}

/// One command's events in a batch, reduced to what its summary row needs.
struct Latest<'a> {
    latest: &'a Event,
    provider_reference: Option<&'a str>,
    first_at: i64,
}

/// Reduces a batch to one row per command (a multi-row upsert may touch a row only once):
/// the highest `seq`, the newest reference seen, the earliest time.
fn fold_by_command(events: &[Event]) -> Vec<Latest<'_>> {
    let mut by_id: BTreeMap<Uuid, (Latest<'_>, u64)> = BTreeMap::new();
    for e in events {
        let at = ms(e.occurred_at);
        let entry = by_id.entry(e.command_id).or_insert_with(|| {
            (
                Latest {
                    latest: e,
                    provider_reference: None,
                    first_at: at,
                },
                0,
            )
        });
        let (l, reference_seq) = entry;
        if e.seq > l.latest.seq {
            l.latest = e;
        }
        if let Some(r) = e.provider_reference.as_deref()
            && (l.provider_reference.is_none() || e.seq >= *reference_seq)
        {
            l.provider_reference = Some(r);
            *reference_seq = e.seq;
        }
        l.first_at = l.first_at.min(at);
    }
    by_id.into_values().map(|(l, _)| l).collect()
}

const SUMMARY_COLUMNS: &str = "id, kind, provider, operation, status, seq, run, attempt, provider_reference, result, error, metadata, created_at, updated_at";

fn summary(row: &sqlx::any::AnyRow) -> Result<CommandSummary, StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(e.to_string());
    let text = |c: &str| row.try_get::<String, _>(c);
    let opt_json = |c: &str| -> Result<Option<Value>, StoreError> {
        row.try_get::<Option<String>, _>(c)?
            .map(|s| serde_json::from_str(&s).map_err(|e| corrupt(&e)))
            .transpose()
    };
    Ok(CommandSummary {
        id: text("id")?.parse().map_err(|e| corrupt(&e))?,
        kind: text("kind")?,
        provider: text("provider")?,
        operation: text("operation")?,
        status: serde_json::from_value(Value::String(text("status")?)).map_err(|e| corrupt(&e))?,
        seq: u64::try_from(row.try_get::<i64, _>("seq")?).unwrap_or_default(),
        run: u32::try_from(row.try_get::<i64, _>("run")?).unwrap_or_default(),
        attempt: u32::try_from(row.try_get::<i64, _>("attempt")?).unwrap_or_default(),
        provider_reference: row.try_get("provider_reference")?,
        result: opt_json("result")?,
        error: opt_json("error")?,
        metadata: serde_json::from_str(&text("metadata")?).map_err(|e| corrupt(&e))?,
        created_at: from_ms(row.try_get("created_at")?),
        updated_at: from_ms(row.try_get("updated_at")?),
    })
}

impl Store {
    /// Connects (`sqlite://...` or `postgres://...`) and runs the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            // SQLite has one writer; more connections only contend for its lock.
            .max_connections(if sqlite { 1 } else { 8 })
            // SQLite runs in this process: no connection to find dead, and the check cost a
            // round trip to the connection's thread before every transaction.
            .test_before_acquire(!sqlite)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // A batch's multi-row statements keep the old pages they change (to
                        // undo one statement alone); past 64 KiB SQLite spilled them to a new
                        // file in /var/tmp for each statement. In memory, no file is made.
                        sqlx::query("PRAGMA temp_store=MEMORY")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        if sqlite {
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await?;
        }
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self {
            pool,
            dialect: if sqlite {
                Dialect::Sqlite
            } else {
                Dialect::Postgres
            },
            sealer: crate::seal::Sealer::new(switchyard_config::DEV_RECORD_KEY),
            redactor: switchyard_redact::Redactor::default(),
        })
    }

    /// The same store sealing with `sealer` and redacting with `redactor` (the ledger's
    /// configured ones; [`Store::connect`] uses the development key and the built-in rules).
    pub fn protecting(
        mut self,
        sealer: crate::seal::Sealer,
        redactor: switchyard_redact::Redactor,
    ) -> Self {
        self.sealer = sealer;
        self.redactor = redactor;
        self
    }

    /// A write transaction. On SQLite it takes the write lock at once: the database file is
    /// shared with the journal (and other processes), and a deferred transaction that reads
    /// before it writes fails with "database is locked" when another writer came in between,
    /// where an immediate one waits its turn.
    pub(crate) async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        if self.dialect == Dialect::Sqlite {
            self.pool.begin_with("BEGIN IMMEDIATE").await
        } else {
            self.pool.begin().await
        }
    }

    /// Applies events and records attempts in one transaction. Idempotent and order-proof:
    /// duplicates are ignored by id, a command only moves to a higher `seq`, and a terminal
    /// status is never left. A batch costs a few multi-row statements, not a few per event.
    pub async fn apply(
        &self,
        events: &[Event],
        attempts: &[AttemptRecord],
    ) -> Result<(), StoreError> {
        // The one door into the ledger's tables: whatever a publisher missed, the free-form
        // parts of every event and attempt are redacted here. Redacting is idempotent, so
        // what arrives redacted is written as it came.
        let events: Vec<Event> = events.iter().map(|e| self.protect_event(e)).collect();
        let attempts: Vec<AttemptRecord> =
            attempts.iter().map(|a| self.protect_attempt(a)).collect();
        let (events, attempts) = (events.as_slice(), attempts.as_slice());
        let mut tx = self.begin().await?;
        for chunk in self.dialect.pieces(events) {
            let sql = multi_row_insert(
                "INSERT INTO events (event_id, command_id, seq, status, occurred_at, body)",
                6,
                chunk.len(),
                // The transition, not the random event_id, is the key (migration 0005).
                "ON CONFLICT (command_id, seq, status) DO NOTHING",
                self.dialect,
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for e in chunk {
                q = q
                    .bind(e.event_id.to_string())
                    .bind(e.command_id.to_string())
                    .bind(seq_i64(e.seq))
                    .bind(e.status.as_str())
                    .bind(ms(e.occurred_at))
                    .bind(json_text(e));
            }
            q.execute(&mut *tx).await?;
        }
        let latest = fold_by_command(events);
        for chunk in self.dialect.pieces(&latest) {
            let sql = multi_row_insert(
                "INSERT INTO commands (id, kind, provider, operation, status, seq, attempt, \
                 provider_reference, result, error, metadata, created_at, updated_at, run)",
                14,
                chunk.len(),
                &upsert_command_clause(),
                self.dialect,
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for c in chunk {
                let e = c.latest;
                q = q
                    .bind(e.command_id.to_string())
                    .bind(text(e.kind.as_str()))
                    .bind(text(e.provider.as_str()))
                    .bind(text(e.operation.as_str()))
                    .bind(e.status.as_str())
                    .bind(seq_i64(e.seq))
                    .bind(i64::from(e.attempt))
                    .bind(c.provider_reference.map(text))
                    .bind(e.result.as_ref().map(json_text))
                    .bind(e.error.as_ref().map(json_text))
                    .bind(json_text(&e.metadata))
                    .bind(c.first_at)
                    .bind(ms(e.occurred_at))
                    .bind(i64::from(e.run));
            }
            q.execute(&mut *tx).await?;
        }
        for chunk in self.dialect.pieces(attempts) {
            let sql = multi_row_insert(
                "INSERT INTO attempts (record_id, command_id, attempt, started_at, record, pruned)",
                6,
                chunk.len(),
                "ON CONFLICT (record_id) DO NOTHING",
                self.dialect,
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for a in chunk {
                q = q
                    .bind(a.record_id.to_string())
                    .bind(a.command_id.to_string())
                    .bind(i64::from(a.attempt))
                    .bind(ms(a.started_at))
                    .bind(json_text(a))
                    .bind(0_i64);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// An event as it may be stored: result, error message and metadata redacted. Ids,
    /// statuses, times and the provider's reference (callbacks find commands by it) are
    /// never touched.
    fn protect_event(&self, e: &Event) -> Event {
        let mut e = e.clone();
        e.result = e.result.map(|r| self.redactor.redacted(r));
        if let Some(error) = &mut e.error {
            error.message = self.redactor.text(&error.message);
        }
        if let Some(m) = switchyard_amqp::messages::redacted_metadata(&e.metadata, &self.redactor) {
            e.metadata = m;
        }
        e
    }

    /// An attempt record as it may be stored: URL, headers, bodies and error redacted.
    fn protect_attempt(&self, a: &AttemptRecord) -> AttemptRecord {
        let headers = |h: &std::collections::BTreeMap<String, String>| {
            h.iter()
                .map(|(k, v)| {
                    let v = if switchyard_redact::is_sensitive_header(k) {
                        switchyard_redact::REDACTED.to_owned()
                    } else {
                        switchyard_redact::mask_card_numbers(v)
                    };
                    (k.clone(), v)
                })
                .collect()
        };
        let mut a = a.clone();
        a.url = switchyard_redact::redact_string(&a.url);
        a.request_headers = headers(&a.request_headers);
        a.response_headers = headers(&a.response_headers);
        a.request_body = self.redactor.body(a.request_body.as_bytes());
        a.response_body = self.redactor.body(a.response_body.as_bytes());
        a.error = a.error.map(|e| self.redactor.text(&e));
        a
    }

    /// Everything known of `id`, or `None` if the ledger never heard of it.
    pub async fn command(&self, id: Uuid) -> Result<Option<CommandView>, StoreError> {
        let key = id.to_string();
        // Only our own column list is spliced in; the id is bound.
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SUMMARY_COLUMNS} FROM commands WHERE id = $1"
        )))
        .bind(&key)
        .fetch_optional(&self.pool)
        .await?;
        let summary = row.as_ref().map(summary).transpose()?;
        let events =
            sqlx::query("SELECT body FROM events WHERE command_id = $1 ORDER BY seq, event_id")
                .bind(&key)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| {
                    serde_json::from_str::<Event>(&r.try_get::<String, _>("body")?)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
        let attempts = sqlx::query(
            "SELECT record FROM attempts WHERE command_id = $1 ORDER BY started_at, record_id",
        )
        .bind(&key)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            serde_json::from_str::<AttemptRecord>(&r.try_get::<String, _>("record")?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
        if summary.is_none() && events.is_empty() && attempts.is_empty() {
            return Ok(None);
        }
        let resolution = self.resolutions(id).await?.pop();
        Ok(Some(CommandView {
            id,
            summary,
            events,
            attempts,
            resolution,
        }))
    }

    /// A page of commands, newest first, with keyset pagination.
    pub async fn list(&self, f: &ListFilter) -> Result<Result<Page, BadCursor>, StoreError> {
        let cursor = match f.cursor.as_deref().map(decode_cursor).transpose() {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let limit = f.limit.clamp(1, 500);
        let mut clauses: Vec<String> = Vec::new();
        let mut text_args: Vec<(usize, String)> = Vec::new();
        let mut int_args: Vec<(usize, i64)> = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        if let Some(s) = f.status {
            let i = next();
            clauses.push(format!("status = ${i}"));
            text_args.push((i, s.as_str().to_owned()));
        }
        if let Some(k) = &f.kind {
            let i = next();
            clauses.push(format!("kind = ${i}"));
            text_args.push((i, text(k)));
        }
        if let Some(p) = &f.provider {
            let i = next();
            clauses.push(format!("provider = ${i}"));
            text_args.push((i, text(p)));
        }
        if let Some(t) = f.since {
            let i = next();
            clauses.push(format!("created_at >= ${i}"));
            int_args.push((i, ms(t)));
        }
        if let Some(t) = f.until {
            let i = next();
            clauses.push(format!("created_at < ${i}"));
            int_args.push((i, ms(t)));
        }
        if let Some((t, id)) = &cursor {
            let (a, b) = (next(), next());
            clauses.push(format!(
                "(created_at < ${a} OR (created_at = ${a} AND id < ${b}))"
            ));
            int_args.push((a, *t));
            text_args.push((b, id.clone()));
        }
        let where_sql = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM commands {where_sql} ORDER BY created_at DESC, id DESC LIMIT {}",
            limit + 1
        );
        // Bind in placeholder order.
        let mut args: BTreeMap<usize, Result<i64, String>> = BTreeMap::new();
        args.extend(text_args.into_iter().map(|(i, v)| (i, Err(v))));
        args.extend(int_args.into_iter().map(|(i, v)| (i, Ok(v))));
        // The SQL is built from our own fragments and numbered placeholders; every value
        // from the request is bound.
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (_, v) in args {
            q = match v {
                Ok(i) => q.bind(i),
                Err(s) => q.bind(s),
            };
        }
        let rows = q.fetch_all(&self.pool).await?;
        let mut items = rows.iter().map(summary).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items
                .last()
                .map(|l| encode_cursor(ms(l.created_at), &l.id.to_string()))
        } else {
            None
        };
        Ok(Ok(Page { items, next_cursor }))
    }

    /// How many commands are in `status`, and how many attempts are recorded: what a bench or
    /// an operator checks to know the ledger has caught up.
    pub async fn counts(&self, status: Status) -> Result<(u64, u64), StoreError> {
        let commands: i64 = sqlx::query("SELECT COUNT(*) AS n FROM commands WHERE status = $1")
            .bind(status.as_str())
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        let attempts: i64 = sqlx::query("SELECT COUNT(*) AS n FROM attempts")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok((
            u64::try_from(commands).unwrap_or_default(),
            u64::try_from(attempts).unwrap_or_default(),
        ))
    }

    /// Applies the retention at `cutoff`: empties headers and bodies of attempts started
    /// before it and forgets webhook ids received before it. Lifecycle rows and the waits'
    /// decisions stay, so forgetting a webhook id is safe: a late copy of a terminal callback
    /// meets its decided wait and has no effect, and a `pending` one never had any.
    pub async fn prune(&self, cutoff: DateTime<Utc>) -> Result<Pruned, StoreError> {
        let attempts = self.prune_attempt_bodies(cutoff).await?;
        let webhook_receipts = sqlx::query("DELETE FROM webhook_receipts WHERE received_at < $1")
            .bind(ms(cutoff))
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(Pruned {
            attempts,
            webhook_receipts,
        })
    }

    async fn prune_attempt_bodies(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut pruned = 0;
        loop {
            let rows = sqlx::query(
                "SELECT record_id, record FROM attempts WHERE started_at < $1 AND pruned = 0 LIMIT 500",
            )
            .bind(ms(cutoff))
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                return Ok(pruned);
            }
            let mut tx = self.begin().await?;
            for r in &rows {
                let id: String = r.try_get("record_id")?;
                let mut record: AttemptRecord =
                    serde_json::from_str(&r.try_get::<String, _>("record")?)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                record.request_headers.clear();
                record.response_headers.clear();
                record.request_body.clear();
                record.response_body.clear();
                sqlx::query("UPDATE attempts SET record = $1, pruned = 1 WHERE record_id = $2")
                    .bind(json_text(&record))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                pruned += 1;
            }
            tx.commit().await?;
        }
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ledger's SQLite connections keep temporary storage (statement journals) in memory.
    #[tokio::test]
    async fn sqlite_keeps_its_temporary_storage_in_memory() {
        let db = switchyard_testing::TestDatabase::sqlite();
        let store = Store::connect(&db.url).await.unwrap();
        let temp: i64 = sqlx::query_scalar("PRAGMA temp_store")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(temp, 2, "MEMORY");
        store.close().await;
        db.cleanup().await;
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let id = Uuid::now_v7().to_string();
        let c = encode_cursor(1234, &id);
        assert_eq!(decode_cursor(&c).unwrap(), (1234, id));
        assert!(decode_cursor("!!").is_err());
        assert!(decode_cursor(&B64.encode("12:not-a-uuid")).is_err());
    }

    #[test]
    fn a_command_view_says_its_id_once() {
        let id = Uuid::now_v7();
        let view = CommandView {
            id,
            summary: Some(CommandSummary {
                id,
                kind: "payment".into(),
                provider: "stripe".into(),
                operation: "charge".into(),
                status: Status::Completed,
                seq: 3,
                run: 0,
                attempt: 1,
                provider_reference: None,
                result: None,
                error: None,
                metadata: Value::Object(Default::default()),
                created_at: Utc::now(),
                updated_at: Utc::now(),
            }),
            events: vec![],
            attempts: vec![],
            resolution: None,
        };
        let text = serde_json::to_string(&view).unwrap();
        assert_eq!(text.matches("\"id\"").count(), 1, "{text}");
        assert!(text.contains("\"status\":\"completed\""), "{text}");
        let bare = CommandView {
            summary: None,
            ..view
        };
        let text = serde_json::to_string(&bare).unwrap();
        assert_eq!(text.matches("\"id\"").count(), 1, "{text}");
    }
}
