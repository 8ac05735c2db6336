//! Multi-row statements (`INSERT … VALUES (…), (…)`, `… IN (…)`) for the journal and the
//! ledger, which write a batch of rows per statement.
//!
//! Two things make such statements cheap:
//!
//! - **Placeholders per dialect.** PostgreSQL takes numbered ones only (`$1`); SQLite gets
//!   anonymous `?`s, bound in the same order, since it looks up every numbered one by name
//!   (a linear search per placeholder: a batch's statement became quadratic, and a third of
//!   the ledger's CPU went to comparing strings).
//! - **Batch sizes from a fixed set.** A statement's text depends on its number of rows, and
//!   sqlx keeps the prepared form of at most 100 texts per connection. Batches of every size
//!   from 1 to 256 made as many texts, so the cache turned over and SQLite parsed and planned
//!   statements of up to a thousand placeholders again and again. [`chunks`] cuts a batch into
//!   pieces whose lengths are powers of two up to 64: at most seven texts per statement, each
//!   prepared once per connection, and at most seven statements per 127 rows.
//!
//! ```
//! use switchyard_sqlrows::{Dialect, chunks};
//!
//! let rows: Vec<u32> = (0..11).collect();
//! let lengths: Vec<usize> = chunks(&rows).map(<[u32]>::len).collect();
//! assert_eq!(lengths, [8, 2, 1]);
//! assert_eq!(Dialect::Postgres.rows(2, 2, 1), "($1, $2), ($3, $4)");
//! assert_eq!(Dialect::Sqlite.rows(2, 2, 1), "(?, ?), (?, ?)");
//! assert_eq!(Dialect::Postgres.list(3, 4), "$4, $5, $6");
//! ```

use std::fmt::Write;

/// The most rows one statement carries. Far below SQLite's (32,766) and PostgreSQL's (65,535)
/// bound-parameter limits for the widest row we write (14 columns); larger pieces save little
/// per row and each cached statement's program grows with its rows (a worker kept 1.2 MiB of
/// prepared statements with pieces up to 256).
pub const MAX_ROWS: usize = 64;

/// How a statement's values are marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Anonymous `?`, bound in order.
    Sqlite,
    /// Numbered `$n`.
    Postgres,
}

impl Dialect {
    /// The dialect of a database URL (`sqlite:` or anything else, which is PostgreSQL).
    pub fn of_url(url: &str) -> Self {
        if url.starts_with("sqlite:") {
            Self::Sqlite
        } else {
            Self::Postgres
        }
    }

    /// The dialect of a connection, by sqlx's backend name (`SQLite`, `PostgreSQL`).
    pub fn of_backend(name: &str) -> Self {
        if name.eq_ignore_ascii_case("sqlite") {
            Self::Sqlite
        } else {
            Self::Postgres
        }
    }

    fn push_mark(self, sql: &mut String, n: usize) {
        match self {
            Self::Sqlite => sql.push('?'),
            // Writing to a String cannot fail.
            Self::Postgres => {
                let _ = write!(sql, "${n}");
            }
        }
    }

    /// The mark of the `n`th value (1-based).
    pub fn mark(self, n: usize) -> String {
        let mut s = String::new();
        self.push_mark(&mut s, n);
        s
    }

    /// `rows` tuples of `width` values, numbered from `from`: `($1, $2), ($3, $4)`.
    pub fn rows(self, rows: usize, width: usize, from: usize) -> String {
        let mut sql = String::with_capacity(rows * (width * 6 + 4));
        for r in 0..rows {
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 0..width {
                if c > 0 {
                    sql.push_str(", ");
                }
                self.push_mark(&mut sql, from + r * width + c);
            }
            sql.push(')');
        }
        sql
    }

    /// A list of `n` values numbered from `from`: `$1, $2, $3`.
    pub fn list(self, n: usize, from: usize) -> String {
        let mut sql = String::with_capacity(n * 6);
        for i in 0..n {
            if i > 0 {
                sql.push_str(", ");
            }
            self.push_mark(&mut sql, from + i);
        }
        sql
    }
}

/// Cuts `items` into consecutive pieces whose lengths are powers of two no larger than
/// [`MAX_ROWS`], largest first: every piece's statement text is one of seven.
pub fn chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let len = MAX_ROWS.min(1 << rest.len().ilog2());
        let (piece, tail) = rest.split_at(len);
        rest = tail;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dialects_mark_their_own_way() {
        assert_eq!(Dialect::of_url("sqlite://x.db?mode=rwc"), Dialect::Sqlite);
        assert_eq!(Dialect::of_url("postgres://h/db"), Dialect::Postgres);
        assert_eq!(Dialect::of_backend("SQLite"), Dialect::Sqlite);
        assert_eq!(Dialect::of_backend("PostgreSQL"), Dialect::Postgres);
        assert_eq!(Dialect::Postgres.mark(7), "$7");
        assert_eq!(Dialect::Sqlite.mark(7), "?");
        assert_eq!(Dialect::Postgres.rows(1, 3, 5), "($5, $6, $7)");
        assert_eq!(Dialect::Sqlite.list(2, 9), "?, ?");
        assert_eq!(Dialect::Postgres.list(0, 1), "");
    }

    #[test]
    fn nothing_makes_no_piece_and_a_big_batch_is_capped() {
        let none: [u8; 0] = [];
        assert_eq!(chunks(&none).count(), 0);
        let many = vec![0u8; 1000];
        let lengths: Vec<usize> = chunks(&many).map(<[u8]>::len).collect();
        assert_eq!(lengths[..15], [64; 15]);
        assert_eq!(lengths[15..], [32, 8]);
    }

    proptest! {
        /// The pieces are the batch, in order, each a power of two within the cap, and a
        /// batch of fewer than twice MAX_ROWS rows takes at most seven statements.
        #[test]
        fn pieces_cover_the_batch_in_order(n in 0usize..2000) {
            let items: Vec<usize> = (0..n).collect();
            let pieces: Vec<&[usize]> = chunks(&items).collect();
            let joined: Vec<usize> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
            prop_assert_eq!(&joined, &items);
            for p in &pieces {
                prop_assert!(p.len().is_power_of_two() && p.len() <= MAX_ROWS);
            }
            if n < 2 * MAX_ROWS {
                prop_assert!(pieces.len() <= 7);
            }
        }
    }
}
