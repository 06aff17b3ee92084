//! First contact with a database server, for a host's start-up: [`probe`] opens one connection
//! outside the pool so a failure reports its cause ("connection refused", "database … does not
//! exist", "password authentication failed") instead of the pool's "timed out", and
//! [`create_database`] creates a missing PostgreSQL database.

use std::time::Duration;

use crate::StoreError;

/// A first-connection failure, with the database server's own reason.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The server answered that the database does not exist (PostgreSQL `3D000`).
    #[error("database \"{name}\" does not exist")]
    MissingDatabase {
        /// The database's name.
        name: String,
    },
    /// The server could not be reached or refused the connection; the text is the driver's
    /// (for example "error communicating with database: Connection refused (os error 111)").
    #[error("{0}")]
    Failed(String),
    /// No answer within the time allowed.
    #[error("no answer within {} ms", .0.as_millis())]
    TimedOut(Duration),
}

/// Opens (and closes) one connection to `url`, waiting at most `timeout`. SQLite URLs are
/// accepted and not probed: the file is created on first use.
pub async fn probe(url: &str, timeout: Duration) -> Result<(), ProbeError> {
    #[cfg(feature = "postgres")]
    if is_postgres(url) {
        use sqlx::Connection;
        let opts = pg_options(url).map_err(|e| ProbeError::Failed(e.to_string()))?;
        return match tokio::time::timeout(timeout, sqlx::PgConnection::connect_with(&opts)).await {
            Err(_) => Err(ProbeError::TimedOut(timeout)),
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                Ok(())
            }
            Ok(Err(sqlx::Error::Database(db))) if db.code().as_deref() == Some("3D000") => {
                Err(ProbeError::MissingDatabase {
                    name: opts.get_database().unwrap_or_default().to_owned(),
                })
            }
            Ok(Err(e)) => Err(ProbeError::Failed(e.to_string())),
        };
    }
    let _ = (url, timeout);
    Ok(())
}

/// Creates the PostgreSQL database that `url` names, connecting to the server's `postgres`
/// database with the same credentials (the role needs `CREATEDB`). Returns the name created.
#[cfg(feature = "postgres")]
pub async fn create_database(url: &str) -> Result<String, StoreError> {
    use sqlx::Connection;
    let opts = pg_options(url)?;
    let name = opts
        .get_database()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| StoreError::Config("the PostgreSQL URL names no database".into()))?
        .to_owned();
    let mut admin = sqlx::PgConnection::connect_with(&opts.clone().database("postgres"))
        .await
        .map_err(StoreError::from)?;
    // An identifier cannot be a bind parameter: quote it, doubling any quote inside.
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    let created = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {quoted}")))
        .execute(&mut admin)
        .await;
    let _ = admin.close().await;
    match created {
        Ok(_) => Ok(name),
        // Created meanwhile by someone else (42P04 duplicate_database): just as good.
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P04") => Ok(name),
        Err(e) => Err(StoreError::from(e)),
    }
}

#[cfg(feature = "postgres")]
fn is_postgres(url: &str) -> bool {
    matches!(url.split(':').next(), Some("postgres" | "postgresql"))
}

#[cfg(feature = "postgres")]
fn pg_options(url: &str) -> Result<sqlx::postgres::PgConnectOptions, StoreError> {
    use std::str::FromStr;
    sqlx::postgres::PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Config(format!("bad PostgreSQL URL: {e}")))
}
