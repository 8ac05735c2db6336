//! Where a batch's statements run: a transaction of the pool (PostgreSQL, and SQLite in
//! memory), or the SQLite writer's own connection on a thread of its own.
//!
//! Why two: sqlx runs each SQLite connection on a thread of its own and hands it every
//! statement through a channel, so a batch of six statements (begin, look-up, two inserts,
//! commit, and the pool's check) crossed threads a dozen times. At a steady few hundred
//! commands per second nothing coalesces, and those crossings were nearly a third of a
//! worker's CPU (docs/performance.md). SQLite is a library in this process: the writer
//! thread runs the whole batch, which crosses threads twice, there and back.

use std::borrow::Cow;
use std::path::PathBuf;

use rusqlite::types::Value;
use sqlx::{AssertSqlSafe, Row as _};
use switchyard_sqlrows::Dialect;

use crate::JournalError;

/// A statement's value.
#[derive(Debug, Clone)]
pub(crate) enum Arg<'a> {
    Text(Cow<'a, str>),
    Int(i64),
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(s: &'a str) -> Self {
        Self::Text(Cow::Borrowed(s))
    }
}

impl From<String> for Arg<'_> {
    fn from(s: String) -> Self {
        Self::Text(Cow::Owned(s))
    }
}

impl From<i64> for Arg<'_> {
    fn from(n: i64) -> Self {
        Self::Int(n)
    }
}

/// A row a statement returned, its columns read by position.
pub(crate) trait Row {
    fn text(&self, i: usize) -> Result<String, JournalError>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, JournalError>;
    fn int(&self, i: usize) -> Result<i64, JournalError>;
}

/// The statements of one transaction.
pub(crate) trait Exec {
    type Row: Row;
    fn dialect(&self) -> Dialect;
    /// Runs `sql` and returns its rows.
    async fn rows(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Self::Row>, JournalError>;
    /// Runs `sql` and returns the rows it changed.
    async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, JournalError>;
}

/// A transaction of the pool.
pub(crate) type PoolTx<'c> = sqlx::Transaction<'c, sqlx::Any>;

fn bind_all<'q>(
    sql: &str,
    args: &'q [Arg<'_>],
) -> sqlx::query::Query<'q, sqlx::Any, <sqlx::Any as sqlx::Database>::Arguments> {
    // `AssertSqlSafe`: the journal's statements splice in nothing but their own placeholders.
    let mut query = sqlx::query(AssertSqlSafe(sql.to_owned()));
    for arg in args {
        query = match arg {
            Arg::Text(s) => query.bind(s.as_ref()),
            Arg::Int(n) => query.bind(*n),
        };
    }
    query
}

impl Exec for PoolTx<'_> {
    type Row = sqlx::any::AnyRow;

    fn dialect(&self) -> Dialect {
        Dialect::of_backend(self.backend_name())
    }

    async fn rows(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Self::Row>, JournalError> {
        Ok(bind_all(sql, args).fetch_all(&mut **self).await?)
    }

    async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, JournalError> {
        Ok(bind_all(sql, args)
            .execute(&mut **self)
            .await?
            .rows_affected())
    }
}

impl Row for sqlx::any::AnyRow {
    fn text(&self, i: usize) -> Result<String, JournalError> {
        Ok(self.try_get(i)?)
    }

    fn opt_text(&self, i: usize) -> Result<Option<String>, JournalError> {
        Ok(self.try_get(i)?)
    }

    fn int(&self, i: usize) -> Result<i64, JournalError> {
        Ok(self.try_get(i)?)
    }
}

/// The SQLite writer's transaction.
pub(crate) struct SqliteTx<'c>(pub(crate) rusqlite::Transaction<'c>);

/// A row of the SQLite writer, copied out of its statement.
pub(crate) struct SqliteRow(Vec<Value>);

/// A column that is missing or holds another type than the journal wrote there.
fn wrong_type(i: usize, want: &str, found: Option<&Value>) -> JournalError {
    JournalError::Sqlite(rusqlite::Error::InvalidColumnType(
        i,
        want.to_owned(),
        found.map_or(rusqlite::types::Type::Null, Value::data_type),
    ))
}

impl Row for SqliteRow {
    fn text(&self, i: usize) -> Result<String, JournalError> {
        self.opt_text(i)?
            .ok_or_else(|| wrong_type(i, "text", self.0.get(i)))
    }

    fn opt_text(&self, i: usize) -> Result<Option<String>, JournalError> {
        match self.0.get(i) {
            Some(Value::Text(s)) => Ok(Some(s.clone())),
            Some(Value::Null) => Ok(None),
            other => Err(wrong_type(i, "text", other)),
        }
    }

    fn int(&self, i: usize) -> Result<i64, JournalError> {
        match self.0.get(i) {
            Some(Value::Integer(n)) => Ok(*n),
            other => Err(wrong_type(i, "integer", other)),
        }
    }
}

/// Binds `args` to `stmt`: `$n` to the n-th argument (SQLite numbers named parameters by
/// first appearance, not by their digits), anonymous `?` in order.
fn bind_sqlite(stmt: &mut rusqlite::CachedStatement<'_>, args: &[Arg<'_>]) -> rusqlite::Result<()> {
    for index in 1..=stmt.parameter_count() {
        let arg = match stmt.parameter_name(index) {
            Some(name) => name
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| args.get(n.checked_sub(1)?)),
            None => args.get(index - 1),
        }
        .ok_or(rusqlite::Error::InvalidParameterCount(
            args.len(),
            stmt.parameter_count(),
        ))?;
        match arg {
            Arg::Text(s) => stmt.raw_bind_parameter(index, s.as_ref())?,
            Arg::Int(n) => stmt.raw_bind_parameter(index, n)?,
        }
    }
    Ok(())
}

impl Exec for SqliteTx<'_> {
    type Row = SqliteRow;

    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn rows(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Self::Row>, JournalError> {
        let mut stmt = self.0.prepare_cached(sql)?;
        bind_sqlite(&mut stmt, args)?;
        let width = stmt.column_count();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(row.get::<_, Value>(i)?);
            }
            out.push(SqliteRow(values));
        }
        Ok(out)
    }

    async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, JournalError> {
        let mut stmt = self.0.prepare_cached(sql)?;
        bind_sqlite(&mut stmt, args)?;
        Ok(stmt.raw_execute()? as u64)
    }
}

/// The file of a `sqlite:` URL, unless the database lives in memory (where a connection of
/// its own would be another database).
pub(crate) fn sqlite_file(url: &str) -> Result<Option<PathBuf>, JournalError> {
    use std::str::FromStr;
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
    let file = options.get_filename();
    let name = file.to_string_lossy();
    // sqlx names an in-memory database `file:sqlx-in-memory-N`.
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    if in_memory || name.is_empty() || name.starts_with("file:") {
        return Ok(None);
    }
    Ok(Some(file.to_path_buf()))
}

/// Opens the SQLite writer's connection, set as the pool's are.
pub(crate) fn open_sqlite(file: &std::path::Path) -> Result<rusqlite::Connection, JournalError> {
    let conn = rusqlite::Connection::open(file)?;
    conn.busy_handler(Some(wait_for_the_write_lock))?;
    for pragma in crate::SQLITE_PRAGMAS {
        conn.execute_batch(pragma)?;
    }
    // Every piece of every batch statement, with room: each is prepared once.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Pauses between two tries at another process's write lock (the ledger's, or another
/// worker's journal, in the same file): short ones first, then longer.
const LOCK_PAUSES: [(i32, std::time::Duration); 2] = [
    (100, std::time::Duration::from_micros(100)),
    (5_100, std::time::Duration::from_millis(1)),
];

/// SQLite's busy handler for the journal's writer: waits for another writer's lock rather
/// than fail, for about 5 s, as sqlx's connections do. SQLite's own busy timeout sleeps
/// 1, 2, 5, 10, 15, 20 and 25 ms between tries, so a lock held for 4 ms cost the journal
/// 8 ms, one held for 9 ms 18 ms: a journal write behind one of the ledger's batches waited
/// that way. Trying every 100 µs for the first 10 ms or so, the journal gets the lock within
/// a fraction of a millisecond of its release; the pauses cost a wake-up each.
fn wait_for_the_write_lock(tries: i32) -> bool {
    match LOCK_PAUSES.iter().find(|(until, _)| tries < *until) {
        Some((_, pause)) => {
            std::thread::sleep(*pause);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn one_text(conn: &mut rusqlite::Connection, sql: &str, args: &[Arg<'_>]) -> String {
        let tx = conn.transaction().unwrap();
        let mut tx = SqliteTx(tx);
        let rows = futures::executor::block_on(tx.rows(sql, args)).unwrap();
        rows[0].text(0).unwrap()
    }

    /// `$n` takes the n-th value wherever it first appears (SQLite would number it by
    /// appearance: `decide` names `$4` first), and may appear twice; `?` takes them in order.
    #[test]
    fn numbered_marks_take_their_own_value_and_anonymous_ones_take_the_next() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        let args = [Arg::from("a"), Arg::from("b".to_owned()), Arg::from(7)];
        assert_eq!(
            one_text(&mut conn, "SELECT $3 || $1 || $2 || $3", &args),
            "7ab7"
        );
        assert_eq!(one_text(&mut conn, "SELECT ? || ? || ?", &args), "ab7");
    }

    /// A statement asking for more values than it was given is refused, not run with NULLs.
    #[test]
    fn missing_values_are_an_error() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        let mut tx = SqliteTx(conn.transaction().unwrap());
        let asked = futures::executor::block_on(tx.rows("SELECT $1, $2", &[Arg::from(1)]));
        assert!(asked.is_err());
        let asked = futures::executor::block_on(tx.execute("SELECT ?, ?", &[Arg::from(1)]));
        assert!(asked.is_err());
    }

    /// The SQLite writer is only for files: a database in memory is the pool's own.
    #[test]
    fn only_files_get_a_writer_of_their_own() {
        assert!(sqlite_file("sqlite::memory:").unwrap().is_none());
        assert!(sqlite_file("sqlite://x.db?mode=memory").unwrap().is_none());
        assert_eq!(
            sqlite_file("sqlite:///tmp/x/journal.db?mode=rwc").unwrap(),
            Some(PathBuf::from("/tmp/x/journal.db"))
        );
    }
}
