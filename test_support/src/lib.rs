//! Test harness: a fresh database per test, on SQLite and on PostgreSQL.
//!
//! PostgreSQL databases are created on the server named by `TODO_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and dropped afterwards. When that server cannot
//! be reached, PostgreSQL tests fail if `CI` is set, and otherwise are skipped with a loud line
//! written past the test harness's output capture.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::Connection;
use todo_store::Store;

pub use todo_store;
pub use tokio;

/// Where PostgreSQL test databases are created.
pub fn admin_url() -> String {
    std::env::var("TODO_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `url` with its database name replaced by `db` (query string kept).
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let server = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{db}?{q}"),
        None => format!("{server}/{db}"),
    }
}

static SKIPPED: AtomicUsize = AtomicUsize::new(0);

/// A fresh, empty database. PostgreSQL ones are dropped by [`TestDb::cleanup`]; SQLite files
/// are removed with the value.
pub struct TestDb {
    /// Connection URL.
    pub url: String,
    pg_name: Option<String>,
    dir: Option<PathBuf>,
}

impl TestDb {
    /// A fresh SQLite file in a temporary directory.
    pub fn sqlite() -> TestDb {
        let dir = std::env::temp_dir().join(format!("todo_test_{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TestDb {
            url: format!("sqlite://{}", dir.join("test.db").display()),
            pg_name: None,
            dir: Some(dir),
        }
    }

    /// A fresh PostgreSQL database, or `None` (after a loud line) when the server is
    /// unreachable outside CI. In CI an unreachable server panics.
    pub async fn postgres() -> Option<TestDb> {
        let admin = admin_url();
        let mut conn = match sqlx::PgConnection::connect(&admin).await {
            Ok(c) => c,
            Err(e) => {
                if std::env::var_os("CI").is_some() {
                    panic!("CI is set and PostgreSQL at {admin} is unreachable: {e}");
                }
                let n = SKIPPED.fetch_add(1, Ordering::SeqCst) + 1;
                let _ = writeln!(
                    std::io::stderr(),
                    "\n!!! SKIPPED PostgreSQL test #{n} of this binary: {admin} is unreachable ({e}). \
                     Start PostgreSQL or set TODO_TEST_DATABASE_URL; with CI set this fails instead.\n"
                );
                return None;
            }
        };
        let name = format!("todo_test_{}", uuid::Uuid::now_v7().simple());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let _ = conn.close().await;
        Some(TestDb {
            url: with_database(&admin, &name),
            pg_name: Some(name),
            dir: None,
        })
    }

    /// A migrated store on this database.
    pub async fn store(&self) -> Store {
        let s = Store::connect(&self.url).await.expect("connect");
        s.migrate().await.expect("migrate");
        s
    }

    /// Drops a PostgreSQL database (terminating its connections).
    pub async fn cleanup(mut self) {
        if let Some(name) = self.pg_name.take()
            && let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url()).await
        {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Defines each `async fn name(store: Store)` twice: `sqlite::name` on a fresh SQLite file and
/// `postgres::name` on a fresh PostgreSQL database (dropped afterwards).
#[macro_export]
macro_rules! both_backends {
    ($(async fn $name:ident($store:ident: Store) $body:block)*) => {
        $(async fn $name($store: $crate::todo_store::Store) $body)*

        mod sqlite {
            $(
                #[$crate::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::TestDb::sqlite();
                    let store = db.store().await;
                    super::$name(store.clone()).await;
                    store.close().await;
                }
            )*
        }

        mod postgres {
            $(
                #[$crate::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = $crate::TestDb::postgres().await else { return };
                    let store = db.store().await;
                    super::$name(store.clone()).await;
                    store.close().await;
                    db.cleanup().await;
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_database_name() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
        assert_eq!(
            with_database("postgres://h/db?sslmode=require", "x"),
            "postgres://h/x?sslmode=require"
        );
    }
}
