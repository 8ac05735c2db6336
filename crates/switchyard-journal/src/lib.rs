//! The journal: the state that decides "this command already went on" (design note 0001).
//!
//! Two questions are answered here, once, for every worker and ingress that shares the
//! database:
//!
//! - **Which command does an identity mean?** ([`Journal::admit`]) A command's identity is its
//!   idempotency key, else its id; its fingerprint is what it asks for. The first command of an
//!   identity is admitted; a later one with the same fingerprint is a duplicate of it, one with
//!   another fingerprint (or the same id asking for something else) a conflict.
//! - **What became of each step?** ([`Journal::begin`], [`Journal::decide`]) A step is one
//!   attempt of one run of one command. It is begun once (a second copy of the same step is a
//!   duplicate delivery), and its outcome is decided once, before anything of it is published,
//!   so a redelivery after a crash re-sends the same decision instead of deciding again.
//!
//! Operations are written in batches: concurrent deliveries share one transaction (group
//! commit), so the cost per command stays a fraction of a round trip under load. The store is
//! the ledger's database (SQLite embedded by default, PostgreSQL in production), in tables of
//! its own. It does not publish anything and knows nothing of the broker.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sha2::Digest;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row as _};
use switchyard_core::{Command, Status};
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::warn;
use uuid::Uuid;

mod exec;
use exec::{Arg, Exec, Row};

/// A journal failure: the caller leaves its delivery for redelivery (or answers 503).
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The database refused or failed.
    #[error("journal database: {0}")]
    Db(#[from] sqlx::Error),
    /// The SQLite writer's connection refused or failed.
    #[error("journal database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The journal's writers stopped (the process is shutting down).
    #[error("the journal is closed")]
    Closed,
}

/// One attempt of one run of one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Step {
    /// The command.
    pub command_id: Uuid,
    /// The run (0 first, n for the n-th replay).
    pub run: u32,
    /// The attempt within the run (1-based).
    pub attempt: u32,
}

/// The `number`-th status check of a step that waits at a provider that is polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CheckNo {
    /// The step whose operation is checked.
    pub step: Step,
    /// Counted from 1 by each run.
    pub number: u32,
}

/// What [`Journal::claim_check`] found. Checks of one wait form a chain, each scheduling the
/// next; a worker that dies after scheduling the next but before acknowledging its own has
/// its check redelivered, which would schedule the next a second time and start a second
/// chain, asking the provider twice at every step from then on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This delivery makes the check: no copy of it or of a later check was claimed, or this
    /// is a redelivery of the copy that claimed it (whose worker died).
    Mine,
    /// Another copy of this check claimed it and this one is not a redelivery: a second
    /// chain, which ends here.
    Taken,
    /// A later check of the same step was claimed: the chain moved on without this copy.
    Behind,
}

/// What an identity means, as [`Journal::admit`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The first command of its identity: admitted now.
    New,
    /// This very command (same id, same fingerprint), admitted before. `accepted`: whoever
    /// admitted it reported it durably queued.
    Same {
        /// Whether it was marked accepted.
        accepted: bool,
    },
    /// Another id with the same identity and fingerprint: the original is `original`.
    Duplicate {
        /// The first command of this identity.
        original: Uuid,
        /// Whether the original was marked accepted.
        accepted: bool,
    },
    /// The same identity, or the same id, asking for something else.
    Conflict {
        /// The command that holds the identity (or the id).
        original: Uuid,
    },
}

/// What [`Journal::begin`] found of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// Never begun: this delivery owns it.
    Fresh,
    /// Begun before, and this is not a redelivery: a second copy of the same step (a retry
    /// copy or a command published twice). Nothing to do.
    Repeated,
    /// A later attempt or run of the command has begun: this step's outcome was acted on.
    Superseded,
    /// Redelivered after its outcome was decided: re-send that decision, decide nothing.
    Decided(String),
    /// Redelivered, begun and never decided: the previous owner died during the call (or is
    /// still in it). Whether the provider acted is not known.
    InDoubt,
}

/// What [`Journal::start`] found: what the identity means (when it was asked), and, when the
/// command is to run, what became of the step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The identity's meaning, at the first attempt of a run.
    pub admission: Option<Admission>,
    /// The step, unless the admission was a duplicate or a conflict.
    pub begin: Option<Begin>,
}

/// What [`Journal::decide`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// This decision is the step's.
    Won,
    /// Another delivery decided first (its decision, when the step is still known).
    Lost(Option<String>),
}

/// How long the journal remembers.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// The idempotency window: an identity is remembered this long after it was first seen.
    pub identities: Duration,
    /// A step is remembered this long: longer than any redelivery, delayed retry copy or
    /// replay of it can take to arrive.
    pub steps: Duration,
}

enum Op {
    Admit {
        identity: String,
        command_id: Uuid,
        fingerprint: String,
        accepted: bool,
        reply: oneshot::Sender<Result<Admission, JournalError>>,
    },
    Accept {
        command_id: Uuid,
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
    Begin {
        /// At the first attempt of a run, the identity is admitted first, in the same
        /// transaction; the step is begun only for `New` or `Same`.
        admit: Option<(String, String)>,
        step: Step,
        redelivered: bool,
        reply: oneshot::Sender<Result<Start, JournalError>>,
    },
    Decide {
        step: Step,
        decision: String,
        reply: oneshot::Sender<Result<Decided, JournalError>>,
    },
    Claim {
        check: CheckNo,
        redelivered: bool,
        reply: oneshot::Sender<Result<Claim, JournalError>>,
    },
    Peek {
        /// The identity and fingerprint to look up, as `Begin`'s `admit`.
        admit: Option<(String, String)>,
        step: Step,
        redelivered: bool,
        reply: oneshot::Sender<Result<Start, JournalError>>,
    },
}

/// The journal. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Journal {
    ops: mpsc::Sender<Op>,
    pool: AnyPool,
}

/// Most operations written in one transaction.
const MAX_BATCH: usize = 256;

/// What every SQLite connection of the journal is set to, the pool's and the writer's:
/// - WAL with NORMAL syncing: a commit survives any crash of the process (what the journal
///   must outlive); only a power loss can take the last commits, and production runs on
///   PostgreSQL.
/// - A small page cache, 512 KiB (a negative size is in KiB): the journal writes rows with
///   random keys (digests) and reads them back rarely, so SQLite's default 2 MiB per
///   connection was resident memory buying almost no hits; a page it misses comes from the
///   kernel's page cache.
/// - Temporary storage in memory: a batch's statement touches a page per row (random keys)
///   and SQLite keeps the old pages of a statement within a transaction, to undo it alone;
///   past 64 KiB it spilled them to a new file in `/var/tmp`, about 9 files a second at
///   1,000 commands/s, each created, written and deleted on the disk the broker syncs to.
const SQLITE_PRAGMAS: [&str; 3] = [
    "PRAGMA synchronous=NORMAL",
    "PRAGMA cache_size=-512",
    "PRAGMA temp_store=MEMORY",
];

fn ms_now() -> i64 {
    Utc::now().timestamp_millis()
}

/// The stored form of an identity: its SHA-256, so keys of any content (and any length) are
/// never kept in clear.
fn identity_digest(command: &Command) -> String {
    hex::encode(sha2::Sha256::digest(command.identity().as_str().as_bytes()))
}

impl Journal {
    /// Connects (`sqlite://…` or `postgres://…`), creates its tables when missing and starts
    /// its writers and its pruning.
    pub async fn open(url: &str, retention: Retention) -> Result<Self, JournalError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        // SQLite: one writer, on a connection of its own (`exec`); the pool's one connection
        // answers look-ups and prunes (and writes, for a database in memory).
        let writers = if sqlite { 1 } else { 4 };
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 1 } else { writers + 1 })
            // SQLite runs in this process: there is no connection to find dead, and the
            // check cost a round trip to the connection's thread before every batch.
            .test_before_acquire(!sqlite)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        for pragma in SQLITE_PRAGMAS {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        // Processes (and pools) opening one SQLite file together can find it locked while
        // another switches it to WAL or creates the tables: SQLite answers that at once
        // rather than waiting, so the set-up is tried again for a while.
        let mut tries = 0u32;
        loop {
            let setup = async {
                if sqlite {
                    sqlx::query("PRAGMA journal_mode=WAL")
                        .execute(&pool)
                        .await?;
                }
                create_schema(&pool, sqlite).await
            };
            match setup.await {
                Ok(()) => break,
                Err(e) if sqlite && tries < 50 && is_locked(&e) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(tries.min(10)))).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let (tx, rx) = mpsc::channel(MAX_BATCH * 8);
        let rx = Arc::new(Mutex::new(rx));
        match sqlite
            .then(|| exec::sqlite_file(url))
            .transpose()?
            .flatten()
        {
            // A SQLite file: its one writer on a thread of its own (see `exec`).
            Some(file) => {
                let conn = exec::open_sqlite(&file)?;
                std::thread::Builder::new()
                    .name("journal-sqlite".into())
                    .spawn(move || write_batches_sqlite(conn, rx))
                    .map_err(|e| JournalError::Db(sqlx::Error::Io(e)))?;
            }
            None => {
                for _ in 0..writers {
                    tokio::spawn(write_batches(pool.clone(), sqlite, rx.clone()));
                }
            }
        }
        tokio::spawn(prune_periodically(pool.clone(), retention, tx.downgrade()));
        Ok(Self { ops: tx, pool })
    }

    async fn call<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, JournalError>>) -> Op,
    ) -> Result<T, JournalError> {
        let (reply, answer) = oneshot::channel();
        self.ops
            .send(op(reply))
            .await
            .map_err(|_| JournalError::Closed)?;
        answer.await.map_err(|_| JournalError::Closed)?
    }

    /// Looks up (and, for a first sight, records) what `command`'s identity means.
    /// `accepted`: record the command as durably queued already (a worker holds it); the
    /// ingress admits before publishing and calls [`Journal::accepted`] after the confirm.
    pub async fn admit(
        &self,
        command: &Command,
        accepted: bool,
    ) -> Result<Admission, JournalError> {
        let identity = identity_digest(command);
        let fingerprint = command.fingerprint().into_string();
        let command_id = command.id;
        self.call(|reply| Op::Admit {
            identity,
            command_id,
            fingerprint,
            accepted,
            reply,
        })
        .await
    }

    /// Records that `command_id` is durably queued, so a repeat of it need not publish again.
    pub async fn accepted(&self, command_id: Uuid) -> Result<(), JournalError> {
        self.call(|reply| Op::Accept { command_id, reply }).await
    }

    /// Begins `step`, or says what became of it. `redelivered`: the broker's flag on the
    /// delivery that carries it.
    pub async fn begin(&self, step: Step, redelivered: bool) -> Result<Begin, JournalError> {
        let start = self.call(|reply| Op::Begin {
            admit: None,
            step,
            redelivered,
            reply,
        });
        Ok(start.await?.begin.unwrap_or(Begin::Superseded))
    }

    /// [`Journal::admit`] (as a worker: the command is queued) and, for a new command or this
    /// same command, [`Journal::begin`] of `step`: one round trip where the first attempt of a
    /// run needs both.
    pub async fn start(
        &self,
        command: &Command,
        step: Step,
        redelivered: bool,
    ) -> Result<Start, JournalError> {
        let admit = Some((
            identity_digest(command),
            command.fingerprint().into_string(),
        ));
        self.call(|reply| Op::Begin {
            admit,
            step,
            redelivered,
            reply,
        })
        .await
    }

    /// What [`Journal::start`] (with `command`) or [`Journal::begin`] would find, writing
    /// nothing: the identity's meaning when `command` is given and its identity or id is held
    /// (`None` when neither is: never `New`), and the step's state unless that meaning is a
    /// duplicate or a conflict (`None` when never begun: never `Fresh`). For a delivery this
    /// worker will not run (its configuration refuses the command), to learn whether a worker
    /// that would have run it already answered it.
    pub async fn peek(
        &self,
        command: Option<&Command>,
        step: Step,
        redelivered: bool,
    ) -> Result<Start, JournalError> {
        let admit = command.map(|c| (identity_digest(c), c.fingerprint().into_string()));
        self.call(|reply| Op::Peek {
            admit,
            step,
            redelivered,
            reply,
        })
        .await
    }

    /// Decides `step`'s outcome, once: the first decision wins.
    pub async fn decide(&self, step: Step, decision: String) -> Result<Decided, JournalError> {
        self.call(|reply| Op::Decide {
            step,
            decision,
            reply,
        })
        .await
    }

    /// Claims status check `check` for this delivery (`redelivered`: the broker's flag on it),
    /// so that each check of a wait is made once however many copies of it arrive: see
    /// [`Claim`].
    pub async fn claim_check(
        &self,
        check: CheckNo,
        redelivered: bool,
    ) -> Result<Claim, JournalError> {
        self.call(|reply| Op::Claim {
            check,
            redelivered,
            reply,
        })
        .await
    }

    /// The command's status as the ledger, sharing this database, last recorded it; `None`
    /// when the ledger has not seen it (or does not write to this database).
    pub async fn ledger_status(&self, command_id: Uuid) -> Option<Status> {
        let row = sqlx::query("SELECT status FROM commands WHERE id = $1")
            .bind(command_id.to_string())
            .fetch_optional(&self.pool)
            .await
            .ok()??;
        let status: String = row.try_get("status").ok()?;
        serde_json::from_value(serde_json::Value::String(status)).ok()
    }

    /// Forgets identities, steps and status checks older than `retention`; returns the rows
    /// removed.
    pub async fn prune(&self, retention: Retention) -> Result<u64, JournalError> {
        prune(&self.pool, retention).await
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates the tables when missing. PostgreSQL's `CREATE TABLE IF NOT EXISTS` is not safe
/// against itself (two sessions can both see the table missing, and one fails on the catalog's
/// unique index), and a fleet's processes open a fresh database together: on PostgreSQL the
/// statements run in one transaction holding an advisory lock. SQLite's file lock serialises
/// them already.
async fn create_schema(pool: &AnyPool, sqlite: bool) -> Result<(), sqlx::Error> {
    if sqlite {
        // One statement at a time: a deferred transaction that reads the schema and then
        // writes would fail at once, not wait, when another process wrote meanwhile.
        let mut conn = pool.acquire().await?;
        for statement in SCHEMA {
            sqlx::query(statement).execute(&mut *conn).await?;
        }
        return unique_command_ids(&mut conn, true).await;
    }
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SCHEMA_LOCK)
        .execute(&mut *tx)
        .await?;
    for statement in SCHEMA {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    unique_command_ids(&mut tx, false).await?;
    tx.commit().await
}

/// Makes `command_id` unique in `journal_identities`, once. Journals before it had a plain
/// index there, and two writers admitting one id under two identities at once (a command
/// sent with a key and without, to two workers or two writers of one worker on PostgreSQL)
/// could each find nothing and both insert, both answering "new". Such pairs are repaired
/// here: the identity seen first keeps the id, as it would have had the writers been
/// serialised, and the others are deleted (a later copy of theirs is then judged against
/// the first). Counted in a warning; SQLite's single writer never made any.
async fn unique_command_ids(
    conn: &mut sqlx::AnyConnection,
    sqlite: bool,
) -> Result<(), sqlx::Error> {
    let exists = if sqlite {
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = $1"
    } else {
        "SELECT COUNT(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname = $1"
    };
    let (found,): (i64,) = sqlx::query_as(exists)
        .bind("journal_identities_command")
        .fetch_one(&mut *conn)
        .await?;
    if found > 0 {
        return Ok(());
    }
    let repaired = sqlx::query(
        "DELETE FROM journal_identities WHERE EXISTS (\
            SELECT 1 FROM journal_identities AS earlier \
            WHERE earlier.command_id = journal_identities.command_id \
            AND (earlier.first_seen < journal_identities.first_seen \
                OR (earlier.first_seen = journal_identities.first_seen \
                    AND earlier.identity < journal_identities.identity)))",
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if repaired > 0 {
        warn!(
            repaired,
            "journal: ids held under more than one identity, each admitted as new by writers \
             racing; kept the identity seen first for each"
        );
    }
    for statement in [
        "CREATE UNIQUE INDEX IF NOT EXISTS journal_identities_command \
         ON journal_identities (command_id)",
        "DROP INDEX IF EXISTS journal_identities_by_command",
    ] {
        sqlx::query(statement).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Whether SQLite refused because another connection holds the file (`SQLITE_BUSY`,
/// `SQLITE_LOCKED`).
fn is_locked(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("5" | "6")))
}

/// The advisory lock key under which the journal's schema is created ("sy-jrnl" in ASCII).
const SCHEMA_LOCK: i64 = 0x0073_792d_6a72_6e6c;

/// An id is held under one identity at most (`journal_identities_command`, unique): a
/// writer that admits an id another writer holds, under another identity, finds its insert
/// refused and judges against that holder, even while the holder's transaction is still
/// open (PostgreSQL makes the second insert wait for it). See [`unique_command_ids`] for
/// databases made before.
const SCHEMA: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS journal_identities (\
        identity TEXT PRIMARY KEY, \
        command_id TEXT NOT NULL, \
        fingerprint TEXT NOT NULL, \
        accepted BIGINT NOT NULL, \
        first_seen BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS journal_steps (\
        command_id TEXT NOT NULL, \
        run BIGINT NOT NULL, \
        attempt BIGINT NOT NULL, \
        decision TEXT, \
        started_at BIGINT NOT NULL, \
        PRIMARY KEY (command_id, run, attempt))",
    // The highest status check claimed per waiting step (`Claim`).
    "CREATE TABLE IF NOT EXISTS journal_checks (\
        command_id TEXT NOT NULL, \
        run BIGINT NOT NULL, \
        attempt BIGINT NOT NULL, \
        number BIGINT NOT NULL, \
        claimed_at BIGINT NOT NULL, \
        PRIMARY KEY (command_id, run, attempt))",
];

/// Takes what is queued (at least one operation, at most [`MAX_BATCH`]) and writes it in one
/// transaction of the pool; every caller hears the outcome of its own operation.
async fn write_batches(pool: AnyPool, sqlite: bool, rx: Arc<Mutex<mpsc::Receiver<Op>>>) {
    loop {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(op) => batch.push(op),
                None => return,
            }
            take_queued(&mut rx, &mut batch);
        }
        let size = batch.len();
        let written = async {
            // SQLite: take the write lock up front. A deferred transaction that reads first
            // and then writes fails at once with "database is locked" when another process
            // wrote meanwhile, where an immediate one waits its turn (busy timeout).
            let mut tx = if sqlite {
                pool.begin_with("BEGIN IMMEDIATE").await?
            } else {
                pool.begin().await?
            };
            let answers = apply(&mut tx, &batch).await?;
            tx.commit().await?;
            Ok(answers)
        };
        let written = timed(size, written).await;
        settle(&mut batch, written);
    }
}

/// The SQLite writer: the journal's one writer of a SQLite file, on a thread of its own with
/// a connection of its own (see [`exec`]). Runs until every sender is gone.
fn write_batches_sqlite(mut conn: rusqlite::Connection, rx: Arc<Mutex<mpsc::Receiver<Op>>>) {
    let mut rx = rx.blocking_lock();
    while let Some(op) = rx.blocking_recv() {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        batch.push(op);
        take_queued(&mut rx, &mut batch);
        let written = async {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut tx = exec::SqliteTx(tx);
            let answers = apply(&mut tx, &batch).await?;
            tx.0.commit()?;
            Ok(answers)
        };
        // Every statement of the SQLite writer completes at once: the future never waits.
        let size = batch.len();
        let written = futures::executor::block_on(timed(size, written));
        settle(&mut batch, written);
    }
}

/// Adds what is queued to `batch`, up to [`MAX_BATCH`].
fn take_queued(rx: &mut mpsc::Receiver<Op>, batch: &mut Vec<Op>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(op) => batch.push(op),
            Err(_) => break,
        }
    }
}

/// Writes a batch, measured.
async fn timed(
    size: usize,
    write: impl Future<Output = Result<Vec<Answer>, JournalError>>,
) -> Result<Vec<Answer>, JournalError> {
    metrics::histogram!("switchyard_journal_batch_size").record(size as f64);
    let started = std::time::Instant::now();
    let written = write.await;
    metrics::histogram!("switchyard_journal_write_seconds").record(started.elapsed().as_secs_f64());
    written
}

/// Answers every operation of a batch, once its transaction committed (or failed): nobody
/// hears of a decision that might roll back.
fn settle(batch: &mut Vec<Op>, written: Result<Vec<Answer>, JournalError>) {
    let answers = match written {
        Ok(answers) => answers,
        Err(e) => {
            warn!(error = %e, ops = batch.len(), "journal batch failed");
            let text = e.to_string();
            for op in batch.drain(..) {
                fail(op, &text);
            }
            return;
        }
    };
    for (op, answer) in batch.drain(..).zip(answers) {
        match (op, answer) {
            (Op::Admit { reply, .. }, Answer::Admit(a)) => drop(reply.send(Ok(a))),
            (Op::Accept { reply, .. }, Answer::Accept) => drop(reply.send(Ok(()))),
            (Op::Begin { reply, .. }, Answer::Begin(b)) => drop(reply.send(Ok(b))),
            (Op::Decide { reply, .. }, Answer::Decide(d)) => drop(reply.send(Ok(d))),
            (Op::Claim { reply, .. }, Answer::Claim(c)) => drop(reply.send(Ok(c))),
            (Op::Peek { reply, .. }, Answer::Begin(p)) => drop(reply.send(Ok(p))),
            _ => {}
        }
    }
}

/// Answers an operation whose batch failed.
fn fail(op: Op, error: &str) {
    let e = || JournalError::Db(sqlx::Error::Protocol(error.to_owned()));
    match op {
        Op::Admit { reply, .. } => drop(reply.send(Err(e()))),
        Op::Accept { reply, .. } => drop(reply.send(Err(e()))),
        Op::Begin { reply, .. } => drop(reply.send(Err(e()))),
        Op::Decide { reply, .. } => drop(reply.send(Err(e()))),
        Op::Claim { reply, .. } => drop(reply.send(Err(e()))),
        Op::Peek { reply, .. } => drop(reply.send(Err(e()))),
    }
}

/// Applies a batch. Operations whose command and identity no other operation of the batch
/// touches are applied together: one statement for all their identity look-ups, one for the
/// new identities, one for the new steps, one for the decisions. Only what the usual case does
/// not cover (a step begun before, a decision lost, two operations on one command) takes
/// statements of its own, in arrival order, so two operations in one batch see each other.
async fn apply<E: Exec>(tx: &mut E, batch: &[Op]) -> Result<Vec<Answer>, JournalError> {
    let alone = touched_alone(batch);
    let mut answers: Vec<Option<Answer>> = batch.iter().map(|_| None).collect();

    // Admissions, together.
    let wanted: Vec<Admit<'_>> = batch
        .iter()
        .enumerate()
        .filter(|(i, _)| alone[*i])
        .filter_map(|(i, op)| match op {
            Op::Admit {
                identity,
                command_id,
                fingerprint,
                accepted,
                ..
            } => Some(Admit {
                at: i,
                identity,
                command_id: *command_id,
                fingerprint,
                accepted: *accepted,
            }),
            Op::Begin {
                admit: Some((identity, fingerprint)),
                step,
                ..
            } => Some(Admit {
                at: i,
                identity,
                command_id: step.command_id,
                fingerprint,
                accepted: true,
            }),
            _ => None,
        })
        .collect();
    let mut admissions = admit_together(tx, &wanted).await?;

    // New steps, together.
    let steps: Vec<(usize, Step)> = batch
        .iter()
        .enumerate()
        .filter(|(i, _)| alone[*i])
        .filter_map(|(i, op)| match op {
            Op::Begin { step, .. } => match admissions.get(&i) {
                None | Some(Admission::New | Admission::Same { .. }) => Some((i, *step)),
                Some(_) => None,
            },
            _ => None,
        })
        .collect();
    let steps: Vec<Step> = steps.iter().map(|(_, s)| *s).collect();
    let fresh = insert_steps(tx, &steps).await?;

    // Decisions, together.
    let decisions: Vec<(Step, &str)> = batch
        .iter()
        .enumerate()
        .filter(|(i, _)| alone[*i])
        .filter_map(|(_, op)| match op {
            Op::Decide { step, decision, .. } => Some((*step, decision.as_str())),
            _ => None,
        })
        .collect();
    let won = decide_together(tx, &decisions).await?;

    for (i, op) in batch.iter().enumerate() {
        let answer = match op {
            Op::Admit {
                identity,
                command_id,
                fingerprint,
                accepted,
                ..
            } => match admissions.remove(&i) {
                Some(a) => Answer::Admit(a),
                None => admit(tx, identity, *command_id, fingerprint, *accepted).await?,
            },
            Op::Accept { command_id, .. } => {
                tx.execute(
                    "UPDATE journal_identities SET accepted = 1 WHERE command_id = $1",
                    &[command_id.to_string().into()],
                )
                .await?;
                Answer::Accept
            }
            Op::Begin {
                admit: admission,
                step,
                redelivered,
                ..
            } => {
                let admission = match (admissions.remove(&i), admission) {
                    (Some(a), _) => Some(a),
                    (None, Some((identity, fingerprint))) if !alone[i] => {
                        match admit(tx, identity, step.command_id, fingerprint, true).await? {
                            Answer::Admit(a) => Some(a),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                let runs = matches!(
                    admission,
                    None | Some(Admission::New | Admission::Same { .. })
                );
                let begin = match runs {
                    true if alone[i] && fresh.contains(&key(*step)) => Some(Begin::Fresh),
                    true => Some(begin(tx, *step, *redelivered).await?),
                    false => None,
                };
                Answer::Begin(Start { admission, begin })
            }
            Op::Decide { step, decision, .. } => {
                if alone[i] && won.contains(&key(*step)) {
                    Answer::Decide(Decided::Won)
                } else {
                    Answer::Decide(decide(tx, *step, decision).await?)
                }
            }
            Op::Claim {
                check, redelivered, ..
            } => Answer::Claim(claim_check(tx, *check, *redelivered).await?),
            Op::Peek {
                admit,
                step,
                redelivered,
                ..
            } => Answer::Begin(peek(tx, admit.as_ref(), *step, *redelivered).await?),
        };
        answers[i] = Some(answer);
    }
    Ok(answers.into_iter().flatten().collect())
}

/// For each operation: whether no other operation of the batch touches its command or its
/// identity, so it can be applied in any order with the rest.
fn touched_alone(batch: &[Op]) -> Vec<bool> {
    let keys = |op: &Op| -> [Option<String>; 2] {
        match op {
            Op::Admit {
                identity,
                command_id,
                ..
            } => [Some(command_id.to_string()), Some(identity.clone())],
            Op::Accept { command_id, .. } => [Some(command_id.to_string()), None],
            Op::Begin { admit, step, .. } => [
                Some(step.command_id.to_string()),
                admit.as_ref().map(|(identity, _)| identity.clone()),
            ],
            Op::Decide { step, .. } => [Some(step.command_id.to_string()), None],
            Op::Claim { check, .. } => [Some(check.step.command_id.to_string()), None],
            Op::Peek { admit, step, .. } => [
                Some(step.command_id.to_string()),
                admit.as_ref().map(|(identity, _)| identity.clone()),
            ],
        }
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    for op in batch {
        for k in keys(op).into_iter().flatten() {
            *seen.entry(k).or_default() += 1;
        }
    }
    batch
        .iter()
        .map(|op| {
            !matches!(op, Op::Accept { .. } | Op::Claim { .. } | Op::Peek { .. })
                && keys(op).into_iter().flatten().all(|k| seen[&k] == 1)
        })
        .collect()
}

/// An admission asked in a batch.
struct Admit<'a> {
    at: usize,
    identity: &'a str,
    command_id: Uuid,
    fingerprint: &'a str,
    accepted: bool,
}

/// Admits `wanted` (no two share an identity or a command), piece by piece of the batch
/// ([`Dialect::pieces`]).
async fn admit_together<E: Exec>(
    tx: &mut E,
    wanted: &[Admit<'_>],
) -> Result<HashMap<usize, Admission>, JournalError> {
    // In one order on every writer: a writer that waits for another's id (see `SCHEMA`)
    // never holds one the other waits for.
    let mut wanted: Vec<&Admit<'_>> = wanted.iter().collect();
    wanted.sort_unstable_by_key(|w| w.command_id);
    let mut found = HashMap::new();
    for piece in tx.dialect().pieces(&wanted) {
        found.extend(admit_piece(tx, piece).await?);
    }
    Ok(found)
}

/// Admits a piece of a batch. The usual case, every identity and id new, is one insert:
/// only what it refused (an identity or an id held already, perhaps by another writer a
/// moment ago) is looked up, with one statement, and judged against its holder.
async fn admit_piece<E: Exec>(
    tx: &mut E,
    wanted: &[&Admit<'_>],
) -> Result<HashMap<usize, Admission>, JournalError> {
    let dialect = tx.dialect();
    let sql = format!(
        "INSERT INTO journal_identities (identity, command_id, fingerprint, accepted, first_seen) \
         VALUES {} ON CONFLICT DO NOTHING RETURNING identity",
        dialect.rows(wanted.len(), 5, 1)
    );
    let now = ms_now();
    let mut args = Vec::with_capacity(wanted.len() * 5);
    for w in wanted {
        args.extend([
            Arg::from(w.identity),
            w.command_id.to_string().into(),
            w.fingerprint.into(),
            i64::from(w.accepted).into(),
            now.into(),
        ]);
    }
    let inserted: HashSet<String> = tx
        .rows(&sql, &args)
        .await?
        .iter()
        .map(|row| row.text(0))
        .collect::<Result<_, _>>()?;
    let mut found = HashMap::new();
    let mut refused = Vec::new();
    for w in wanted {
        if inserted.contains(w.identity) {
            found.insert(w.at, Admission::New);
        } else {
            refused.push(*w);
        }
    }
    if refused.is_empty() {
        return Ok(found);
    }
    let mut held = holdings(tx, &refused).await?;
    for w in refused {
        // Refused, then gone before the look (pruned meanwhile): the batch fails, and its
        // callers ask again.
        let admission = held
            .remove(&w.at)
            .ok_or(JournalError::Db(sqlx::Error::RowNotFound))?;
        found.insert(w.at, admission);
    }
    Ok(found)
}

/// What each of `wanted` is held as, with one statement: judged against the holder of its
/// identity, else of its id; absent when neither is held.
async fn holdings<E: Exec>(
    tx: &mut E,
    wanted: &[&Admit<'_>],
) -> Result<HashMap<usize, Admission>, JournalError> {
    let n = wanted.len();
    let dialect = tx.dialect();
    let sql = format!(
        "SELECT identity, command_id, fingerprint, accepted FROM journal_identities \
         WHERE identity IN ({}) OR command_id IN ({})",
        dialect.list(n, 1),
        dialect.list(n, n + 1)
    );
    let args: Vec<Arg<'_>> = wanted
        .iter()
        .map(|w| Arg::from(w.identity))
        .chain(wanted.iter().map(|w| Arg::from(w.command_id.to_string())))
        .collect();
    let mut by_identity = HashMap::new();
    let mut by_id = HashMap::new();
    for row in tx.rows(&sql, &args).await? {
        let held = Held::from_row(&row)?;
        by_id.insert(held.command_id.clone(), held.clone());
        by_identity.insert(row.text(0)?, held);
    }
    let mut found = HashMap::new();
    for w in wanted {
        let id = w.command_id.to_string();
        let admission = match (by_identity.get(w.identity), by_id.get(&id)) {
            (Some(held), _) => held.judge(w.command_id, w.fingerprint),
            (None, Some(held)) => held.for_id(id).judge(w.command_id, w.fingerprint),
            (None, None) => continue,
        };
        found.insert(w.at, admission);
    }
    Ok(found)
}

/// What the journal holds for an identity.
#[derive(Clone)]
struct Held {
    command_id: String,
    fingerprint: String,
    accepted: bool,
}

impl Held {
    /// From a row of `identity, command_id, fingerprint, accepted`.
    fn from_row(row: &impl Row) -> Result<Self, JournalError> {
        Ok(Self {
            command_id: row.text(1)?,
            fingerprint: row.text(2)?,
            accepted: row.int(3)? != 0,
        })
    }

    /// The holding of this command's id under another identity (the command sent once
    /// with a key and once without, say): the same command only when it asks for the same
    /// thing.
    fn for_id(&self, command_id: String) -> Self {
        Self {
            command_id,
            ..self.clone()
        }
    }

    /// What this holding means for `command_id` asking for `fingerprint`.
    fn judge(&self, command_id: Uuid, fingerprint: &str) -> Admission {
        let original = Uuid::parse_str(&self.command_id).unwrap_or_default();
        let accepted = self.accepted;
        match (original == command_id, self.fingerprint == fingerprint) {
            (true, true) => Admission::Same { accepted },
            (false, true) => Admission::Duplicate { original, accepted },
            (_, false) => Admission::Conflict { original },
        }
    }
}

/// A step as the database keys it.
type StepKey = (String, i64, i64);

fn key(step: Step) -> StepKey {
    (
        step.command_id.to_string(),
        i64::from(step.run),
        i64::from(step.attempt),
    )
}

/// A step's key as its values: command id, run, attempt.
fn key_args(step: Step) -> [Arg<'static>; 3] {
    let (id, run, attempt) = key(step);
    [id.into(), run.into(), attempt.into()]
}

/// The steps a statement ending in `RETURNING command_id, run, attempt` touched.
async fn returned_steps<E: Exec>(
    tx: &mut E,
    sql: &str,
    args: &[Arg<'_>],
) -> Result<HashSet<StepKey>, JournalError> {
    tx.rows(sql, args)
        .await?
        .iter()
        .map(|row| Ok((row.text(0)?, row.int(1)?, row.int(2)?)))
        .collect()
}

/// Inserts the steps that are new, a statement per piece of the batch; returns those it
/// inserted.
async fn insert_steps<E: Exec>(
    tx: &mut E,
    steps: &[Step],
) -> Result<HashSet<StepKey>, JournalError> {
    let mut inserted = HashSet::new();
    let dialect = tx.dialect();
    for piece in dialect.pieces(steps) {
        let sql = format!(
            "INSERT INTO journal_steps (command_id, run, attempt, started_at) VALUES {} \
             ON CONFLICT DO NOTHING RETURNING command_id, run, attempt",
            dialect.rows(piece.len(), 4, 1)
        );
        let now = ms_now();
        let mut args = Vec::with_capacity(piece.len() * 4);
        for step in piece {
            args.extend(key_args(*step));
            args.push(now.into());
        }
        inserted.extend(returned_steps(tx, &sql, &args).await?);
    }
    Ok(inserted)
}

/// Records the decisions of steps not decided yet, a statement per piece of the batch;
/// returns those it won.
async fn decide_together<E: Exec>(
    tx: &mut E,
    decisions: &[(Step, &str)],
) -> Result<HashSet<StepKey>, JournalError> {
    let mut won = HashSet::new();
    let dialect = tx.dialect();
    for piece in dialect.pieces(decisions) {
        let sql = format!(
            "UPDATE journal_steps SET decision = v.column4 FROM (VALUES {}) AS v \
             WHERE journal_steps.command_id = v.column1 AND journal_steps.run = v.column2 \
             AND journal_steps.attempt = v.column3 AND journal_steps.decision IS NULL \
             RETURNING command_id, run, attempt",
            dialect.rows(piece.len(), 4, 1)
        );
        let mut args = Vec::with_capacity(piece.len() * 4);
        for (step, decision) in piece {
            args.extend(key_args(*step));
            args.push((*decision).into());
        }
        won.extend(returned_steps(tx, &sql, &args).await?);
    }
    Ok(won)
}

enum Answer {
    Admit(Admission),
    Accept,
    Begin(Start),
    Decide(Decided),
    Claim(Claim),
}

/// Admits one identity on its own: a piece of one.
async fn admit<E: Exec>(
    tx: &mut E,
    identity: &str,
    command_id: Uuid,
    fingerprint: &str,
    accepted: bool,
) -> Result<Answer, JournalError> {
    let wanted = Admit {
        at: 0,
        identity,
        command_id,
        fingerprint,
        accepted,
    };
    let mut found = admit_piece(tx, &[&wanted]).await?;
    Ok(Answer::Admit(
        found
            .remove(&0)
            .ok_or(JournalError::Db(sqlx::Error::RowNotFound))?,
    ))
}

async fn begin<E: Exec>(tx: &mut E, step: Step, redelivered: bool) -> Result<Begin, JournalError> {
    let [id, run, attempt] = key_args(step);
    // The usual case costs one statement: the step is new. A later step cannot exist without
    // this one (each is the copy its predecessor's decision published).
    let inserted = tx
        .execute(
            "INSERT INTO journal_steps (command_id, run, attempt, started_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[id.clone(), run.clone(), attempt.clone(), ms_now().into()],
        )
        .await?;
    if inserted == 1 {
        return Ok(Begin::Fresh);
    }
    found(tx, [id, run, attempt], redelivered).await
}

/// What became of `step`, begun before.
async fn found<E: Exec>(
    tx: &mut E,
    key: [Arg<'_>; 3],
    redelivered: bool,
) -> Result<Begin, JournalError> {
    let later = tx
        .rows(
            "SELECT 1 AS later FROM journal_steps WHERE command_id = $1 \
             AND (run > $2 OR (run = $2 AND attempt > $3)) LIMIT 1",
            &key,
        )
        .await?;
    if !later.is_empty() {
        return Ok(Begin::Superseded);
    }
    if !redelivered {
        return Ok(Begin::Repeated);
    }
    match step_decision(tx, &key).await? {
        Some(Some(d)) => Ok(Begin::Decided(d)),
        Some(None) => Ok(Begin::InDoubt),
        None => Err(JournalError::Db(sqlx::Error::RowNotFound)),
    }
}

/// What an `Op::Begin` would find, writing nothing (see [`Journal::peek`]).
async fn peek<E: Exec>(
    tx: &mut E,
    admit: Option<&(String, String)>,
    step: Step,
    redelivered: bool,
) -> Result<Start, JournalError> {
    let admission = match admit {
        Some((identity, fingerprint)) => {
            let wanted = Admit {
                at: 0,
                identity,
                command_id: step.command_id,
                fingerprint,
                accepted: false,
            };
            holdings(tx, &[&wanted]).await?.remove(&0)
        }
        None => None,
    };
    if matches!(
        admission,
        Some(Admission::Duplicate { .. } | Admission::Conflict { .. })
    ) {
        return Ok(Start {
            admission,
            begin: None,
        });
    }
    let key = key_args(step);
    let begin = match step_decision(tx, &key).await? {
        None => None,
        Some(_) => Some(found(tx, key, redelivered).await?),
    };
    Ok(Start { admission, begin })
}

/// Claims a status check: the step's row holds the highest check number claimed, raised by
/// one upsert in the usual case (the next check of the chain). Two copies claiming one
/// number at once on PostgreSQL: the second waits for the first's row lock, then finds the
/// number taken.
async fn claim_check<E: Exec>(
    tx: &mut E,
    check: CheckNo,
    redelivered: bool,
) -> Result<Claim, JournalError> {
    let [id, run, attempt] = key_args(check.step);
    let number = i64::from(check.number);
    let raised = tx
        .rows(
            "INSERT INTO journal_checks (command_id, run, attempt, number, claimed_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (command_id, run, attempt) DO UPDATE \
             SET number = excluded.number, claimed_at = excluded.claimed_at \
             WHERE journal_checks.number < excluded.number RETURNING number",
            &[
                id.clone(),
                run.clone(),
                attempt.clone(),
                number.into(),
                ms_now().into(),
            ],
        )
        .await?;
    if !raised.is_empty() {
        return Ok(Claim::Mine);
    }
    let held = tx
        .rows(
            "SELECT number FROM journal_checks WHERE command_id = $1 AND run = $2 \
             AND attempt = $3",
            &[id, run, attempt],
        )
        .await?;
    let held = held.first().map(|row| row.int(0)).transpose()?;
    Ok(match held {
        Some(held) if held > number => Claim::Behind,
        Some(_) if !redelivered => Claim::Taken,
        // Redelivered, or pruned between the two statements (a check older than the steps'
        // retention): made again, which at worst asks the provider once more.
        _ => Claim::Mine,
    })
}

/// A step's decision: `None` when the step is not known, `Some(None)` when it is undecided.
async fn step_decision<E: Exec>(
    tx: &mut E,
    key: &[Arg<'_>; 3],
) -> Result<Option<Option<String>>, JournalError> {
    let rows = tx
        .rows(
            "SELECT decision FROM journal_steps WHERE command_id = $1 AND run = $2 \
             AND attempt = $3",
            key,
        )
        .await?;
    rows.first().map(|row| row.opt_text(0)).transpose()
}

async fn decide<E: Exec>(tx: &mut E, step: Step, decision: &str) -> Result<Decided, JournalError> {
    let key = key_args(step);
    let won = tx
        .execute(
            "UPDATE journal_steps SET decision = $4 \
             WHERE command_id = $1 AND run = $2 AND attempt = $3 AND decision IS NULL",
            &[
                key[0].clone(),
                key[1].clone(),
                key[2].clone(),
                decision.into(),
            ],
        )
        .await?;
    if won == 1 {
        return Ok(Decided::Won);
    }
    Ok(Decided::Lost(step_decision(tx, &key).await?.flatten()))
}

async fn prune(pool: &AnyPool, retention: Retention) -> Result<u64, JournalError> {
    let cutoff = |d: Duration| ms_now() - i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let identities = sqlx::query("DELETE FROM journal_identities WHERE first_seen < $1")
        .bind(cutoff(retention.identities))
        .execute(pool)
        .await?
        .rows_affected();
    let steps = sqlx::query("DELETE FROM journal_steps WHERE started_at < $1")
        .bind(cutoff(retention.steps))
        .execute(pool)
        .await?
        .rows_affected();
    // A waiting step's row is renewed by every check; one left is of a wait that ended.
    let checks = sqlx::query("DELETE FROM journal_checks WHERE claimed_at < $1")
        .bind(cutoff(retention.steps))
        .execute(pool)
        .await?
        .rows_affected();
    Ok(identities + steps + checks)
}

/// Prunes every ten minutes while the journal is in use.
async fn prune_periodically(pool: AnyPool, retention: Retention, alive: mpsc::WeakSender<Op>) {
    let mut every = tokio::time::interval(Duration::from_secs(600));
    loop {
        every.tick().await;
        if alive.upgrade().is_none() || pool.is_closed() {
            return;
        }
        if let Err(e) = prune(&pool, retention).await {
            warn!(error = %e, "journal pruning failed; trying again later");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use switchyard_testing::TestDatabase;

    /// Every connection of a SQLite journal, its pool's and its writer's, has the small page
    /// cache (not SQLite's 2 MiB default), NORMAL syncing and temporary storage in memory.
    #[tokio::test]
    async fn sqlite_connections_keep_a_small_page_cache() {
        let db = TestDatabase::sqlite();
        let retention = Retention {
            identities: Duration::from_secs(3600),
            steps: Duration::from_secs(3600),
        };
        let journal = Journal::open(&db.url, retention).await.unwrap();
        let mut conn = journal.pool.acquire().await.unwrap();
        let size: i64 = sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(size, -512);
        let temp: i64 = sqlx::query_scalar("PRAGMA temp_store")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(temp, 2, "MEMORY");
        drop(conn);
        let file = exec::sqlite_file(&db.url).unwrap().expect("a file");
        let writer = exec::open_sqlite(&file).unwrap();
        let pragma = |name: &str| -> i64 {
            writer
                .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(pragma("cache_size"), -512);
        assert_eq!(pragma("synchronous"), 1, "NORMAL");
        assert_eq!(pragma("temp_store"), 2, "MEMORY");
        assert_eq!(
            writer
                .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
                .unwrap(),
            "wal"
        );
        journal.close().await;
        db.cleanup().await;
    }

    /// The writer takes another process's write lock (the ledger's) soon after its release.
    /// SQLite's own busy timeout tries again 1, 3, 8, 18, 33, 53 and 78 ms after the first
    /// try: a lock held for 60 ms came free 18 ms before the waiter looked again. Held five
    /// times, the writer's best delay past the release must be well under that.
    #[test]
    fn the_writer_takes_a_released_lock_at_once() {
        let db = TestDatabase::sqlite();
        let file = exec::sqlite_file(&db.url).unwrap().expect("a file");
        let mut holder = rusqlite::Connection::open(&file).unwrap();
        holder.execute_batch("PRAGMA journal_mode=WAL").unwrap();
        let mut writer = exec::open_sqlite(&file).unwrap();
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let (locked, held) = std::sync::mpsc::channel();
            let released = std::thread::scope(|s| {
                let holding = s.spawn(|| {
                    let tx = holder
                        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                        .unwrap();
                    locked.send(()).unwrap();
                    std::thread::sleep(Duration::from_millis(60));
                    tx.commit().unwrap();
                    std::time::Instant::now()
                });
                held.recv().unwrap();
                let tx = writer
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .expect("the writer waits for the lock rather than fail");
                let taken = std::time::Instant::now();
                tx.commit().unwrap();
                let released = holding.join().unwrap();
                taken.saturating_duration_since(released)
            });
            best = best.min(released);
        }
        assert!(
            best < Duration::from_millis(10),
            "the writer took the lock {best:?} after its release at best"
        );
        futures::executor::block_on(db.cleanup());
    }
}
