//! Multi-row statements (`INSERT … VALUES (…), (…)`, `… IN (…)`) for the journal and the
//! ledger, which write a batch of rows per statement.
//!
//! Two things make such statements cheap:
//!
//! - **Placeholders per dialect.** PostgreSQL takes numbered ones only (`$1`); SQLite gets
//!   anonymous `?`s, bound in the same order, since it looks up every numbered one by name
//!   (a linear search per placeholder: a batch's statement became quadratic, and a third of
//!   the ledger's CPU went to comparing strings).
//! - **Pieces that suit the database.** A statement's text depends on its number of rows,
//!   and sqlx keeps the prepared form of at most 100 texts per connection. On SQLite, batches
//!   of every size from 1 to 256 made as many texts, so the cache turned over and SQLite parsed
//!   and planned statements of up to a thousand placeholders again and again: there a batch
//!   is cut into pieces whose lengths are powers of two up to 64, at most seven texts per
//!   statement, each prepared once per connection. On PostgreSQL every statement is a round
//!   trip to the server: there a batch is written in as few statements as the parameter
//!   limit allows. (Under sqlx 0.9.0, which left Nagle's algorithm on, SQLite's pieces made
//!   each round trip wait for a delayed acknowledgement too: PostgreSQL fell from 5,731 to
//!   1,584 events/s in `switchyard ledger bench`. sqlx 0.9.1 sets `TCP_NODELAY`.)
//!
//! ```
//! use switchyard_sqlrows::Dialect;
//!
//! let rows: Vec<u32> = (0..11).collect();
//! let lengths: Vec<usize> = Dialect::Sqlite.pieces(&rows).map(<[u32]>::len).collect();
//! assert_eq!(lengths, [8, 2, 1]);
//! let lengths: Vec<usize> = Dialect::Postgres.pieces(&rows).map(<[u32]>::len).collect();
//! assert_eq!(lengths, [11]);
//! assert_eq!(Dialect::Postgres.rows(2, 2, 1), "($1, $2), ($3, $4)");
//! assert_eq!(Dialect::Sqlite.rows(2, 2, 1), "(?, ?), (?, ?)");
//! assert_eq!(Dialect::Postgres.list(3, 4), "$4, $5, $6");
//! ```

use std::fmt::Write;

/// The most rows one SQLite statement carries: larger pieces save little per row, and each
/// cached statement's program grows with its rows (a worker kept 1.2 MiB of prepared
/// statements with pieces up to 256).
pub const SQLITE_MAX_ROWS: usize = 64;

/// The most rows one PostgreSQL statement carries: 7,000 parameters for the widest row we
/// write (14 columns), far below PostgreSQL's 65,535.
pub const POSTGRES_MAX_ROWS: usize = 500;

/// How a statement's values are marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Anonymous `?`, bound in order.
    Sqlite,
    /// Numbered `$n`.
    Postgres,
}

impl Dialect {
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

    /// `n` marks numbered from `from`, separated by commas.
    fn push_list(self, sql: &mut String, n: usize, from: usize) {
        for i in 0..n {
            if i > 0 {
                sql.push_str(", ");
            }
            self.push_mark(sql, from + i);
        }
    }

    /// `rows` tuples of `width` values, numbered from `from`: `($1, $2), ($3, $4)`.
    pub fn rows(self, rows: usize, width: usize, from: usize) -> String {
        let mut sql = String::with_capacity(rows * (width * 6 + 4));
        for r in 0..rows {
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            self.push_list(&mut sql, width, from + r * width);
            sql.push(')');
        }
        sql
    }

    /// A list of `n` values numbered from `from`: `$1, $2, $3`.
    pub fn list(self, n: usize, from: usize) -> String {
        let mut sql = String::with_capacity(n * 6);
        self.push_list(&mut sql, n, from);
        sql
    }

    /// Cuts `items` into the consecutive pieces written one statement each: on SQLite lengths
    /// that are powers of two up to [`SQLITE_MAX_ROWS`], largest first (every piece's text is
    /// one of seven); on PostgreSQL pieces of [`POSTGRES_MAX_ROWS`] and the rest.
    pub fn pieces<T>(self, items: &[T]) -> impl Iterator<Item = &[T]> {
        let mut rest = items;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let len = match self {
                Self::Sqlite => SQLITE_MAX_ROWS.min(1 << rest.len().ilog2()),
                Self::Postgres => POSTGRES_MAX_ROWS.min(rest.len()),
            };
            let (piece, tail) = rest.split_at(len);
            rest = tail;
            Some(piece)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dialects_mark_their_own_way() {
        assert_eq!(Dialect::of_backend("SQLite"), Dialect::Sqlite);
        assert_eq!(Dialect::of_backend("PostgreSQL"), Dialect::Postgres);
        assert_eq!(Dialect::Postgres.list(1, 7), "$7");
        assert_eq!(Dialect::Sqlite.list(1, 7), "?");
        assert_eq!(Dialect::Postgres.rows(1, 3, 5), "($5, $6, $7)");
        assert_eq!(Dialect::Sqlite.list(2, 9), "?, ?");
        assert_eq!(Dialect::Postgres.list(0, 1), "");
    }

    #[test]
    fn nothing_makes_no_piece_and_a_big_batch_is_capped() {
        let none: [u8; 0] = [];
        assert_eq!(Dialect::Sqlite.pieces(&none).count(), 0);
        assert_eq!(Dialect::Postgres.pieces(&none).count(), 0);
        let many = vec![0u8; 1000];
        let lengths: Vec<usize> = Dialect::Sqlite.pieces(&many).map(<[u8]>::len).collect();
        assert_eq!(lengths[..15], [64; 15]);
        assert_eq!(lengths[15..], [32, 8]);
        let lengths: Vec<usize> = Dialect::Postgres.pieces(&many).map(<[u8]>::len).collect();
        assert_eq!(lengths, [500, 500]);
    }

    proptest! {
        /// The pieces are the batch, in order, each within its dialect's cap; on SQLite each a
        /// power of two, and a batch of fewer than twice the cap takes at most seven.
        #[test]
        fn pieces_cover_the_batch_in_order(n in 0usize..2000) {
            let items: Vec<usize> = (0..n).collect();
            for dialect in [Dialect::Sqlite, Dialect::Postgres] {
                let pieces: Vec<&[usize]> = dialect.pieces(&items).collect();
                let joined: Vec<usize> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
                prop_assert_eq!(&joined, &items);
                for p in &pieces {
                    match dialect {
                        Dialect::Sqlite => prop_assert!(
                            p.len().is_power_of_two() && p.len() <= SQLITE_MAX_ROWS
                        ),
                        Dialect::Postgres => prop_assert!(!p.is_empty() && p.len() <= POSTGRES_MAX_ROWS),
                    }
                }
            }
            if n < 2 * SQLITE_MAX_ROWS {
                prop_assert!(Dialect::Sqlite.pieces(&items).count() <= 7);
            }
        }
    }
}
