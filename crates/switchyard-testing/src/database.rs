//! A database that exists for one test: a SQLite file in a temporary directory, or a fresh
//! database on the real PostgreSQL (127.0.0.1:5432, or `SWITCHYARD_TEST_POSTGRES_URL`), dropped
//! afterwards. Never a mock: an unreachable PostgreSQL fails the test and says how to start it.

use sqlx::Connection;
use uuid::Uuid;

/// One test's database.
#[derive(Debug)]
pub struct TestDatabase {
    /// Its URL (`sqlite://…` or `postgres://…`).
    pub url: String,
    drop: Option<(String, String)>,
    dir: Option<std::path::PathBuf>,
}

impl TestDatabase {
    /// A SQLite file of its own.
    pub fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(format!("sy-db-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            url: format!("sqlite://{}?mode=rwc", dir.join("test.db").display()),
            drop: None,
            dir: Some(dir),
        }
    }

    /// A PostgreSQL database of its own.
    pub async fn postgres() -> Self {
        sqlx::any::install_default_drivers();
        let admin = std::env::var("SWITCHYARD_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("sy_test_{}", Uuid::new_v4().simple());
        let mut conn = sqlx::AnyConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is needed for this test and is unreachable at {admin}: {e}\n\
                     Start it (`pg_ctlcluster 15 main start`, or `docker compose up -d postgres`) \
                     or set SWITCHYARD_TEST_POSTGRES_URL"
                )
            });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let (base, _) = admin
            .rsplit_once('/')
            .expect("a database URL ends in /name");
        Self {
            url: format!("{base}/{name}"),
            drop: Some((
                admin.clone(),
                format!("DROP DATABASE \"{name}\" WITH (FORCE)"),
            )),
            dir: None,
        }
    }

    /// Drops the database (or removes the file).
    pub async fn cleanup(self) {
        if let Some((admin, sql)) = self.drop {
            let mut conn = sqlx::AnyConnection::connect(&admin).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        if let Some(dir) = self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
