//! Test harness: a fresh database per test, on SQLite and on PostgreSQL.
//!
//! PostgreSQL databases are created on the server named by `TODO_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and dropped afterwards.
//!
//! PostgreSQL tests are marked `#[ignore = "needs PostgreSQL …"]`, so a plain
//! `cargo test --workspace` on a machine without a server reports them as *ignored* instead of
//! passing them silently. `cargo test --workspace -- --include-ignored` (what CI runs) runs them
//! too, and there an unreachable server fails the test: a run that asked for PostgreSQL never
//! passes without it. Mark new PostgreSQL tests the same way (`both_backends!` does it).

use std::path::PathBuf;

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

    /// A fresh PostgreSQL database. Panics, naming the server and how to point at another,
    /// when it cannot be reached: only tests marked ignored (run on request) call this.
    pub async fn postgres() -> TestDb {
        match Self::try_postgres().await {
            Ok(db) => db,
            Err(e) => panic!("{e}"),
        }
    }

    /// A fresh PostgreSQL database, or why none could be created.
    pub async fn try_postgres() -> Result<TestDb, String> {
        let admin = admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin).await.map_err(|e| {
            format!(
                "PostgreSQL at {admin} is unreachable ({e}): start it, or set \
                 TODO_TEST_DATABASE_URL to a server where this role may CREATE DATABASE"
            )
        })?;
        let name = format!("todo_test_{}", uuid::Uuid::now_v7().simple());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("CREATE DATABASE on {admin}: {e}"))?;
        let _ = conn.close().await;
        Ok(TestDb {
            url: with_database(&admin, &name),
            pg_name: Some(name),
            dir: None,
        })
    }

    /// A PostgreSQL database on the test server that something else created, to be dropped
    /// by [`TestDb::cleanup`] like the fresh ones.
    pub fn adopt_postgres(name: &str) -> TestDb {
        TestDb {
            url: with_database(&admin_url(), name),
            pg_name: Some(name.to_owned()),
            dir: None,
        }
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
/// `postgres::name` on a fresh PostgreSQL database (dropped afterwards), ignored unless asked
/// for (`-- --include-ignored`).
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
                #[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
                async fn $name() {
                    let db = $crate::TestDb::postgres().await;
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
