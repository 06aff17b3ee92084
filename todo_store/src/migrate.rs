//! Schema migrations: refinery's async migration traits implemented over the store's own sqlx
//! connection, so migrations need no second database driver.
//!
//! All pending migrations of a run apply inside one outer transaction, which on PostgreSQL first
//! takes a transaction-scoped advisory lock and on SQLite starts with `BEGIN IMMEDIATE`: two
//! processes migrating one database at once are serialised, and the second finds nothing to do.
//! refinery's own per-migration transactions become savepoints inside it.

use refinery_core::traits::r#async::{AsyncMigrate, AsyncQuery, AsyncTransaction};
use refinery_core::{Migration, Runner};
use sqlx::{Acquire, Row};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use uuid::Uuid;

use crate::backend::Pool;
use crate::error::StoreError;
use crate::query;
use crate::signature::search_signature;

/// The key of the PostgreSQL advisory lock held while migrating ("todo" in ASCII).
const LOCK_KEY: i64 = 0x746f_646f;

macro_rules! migration_list {
    ($dir:literal: $($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../migrations/", $dir, "/", $name, ".sql")))),*]
    };
}

/// PostgreSQL migrations, oldest first (files under `migrations/postgres/`).
pub(crate) const POSTGRES: &[(&str, &str)] = migration_list!(
    "postgres": "V1__tasks", "V2__list_indexes", "V3__search_signatures", "V4__lists", "V5__sync",
    "V6__recurrence_reminders", "V7__webhooks"
);
/// SQLite migrations, oldest first (files under `migrations/sqlite/`).
pub(crate) const SQLITE: &[(&str, &str)] = migration_list!(
    "sqlite": "V1__tasks", "V2__list_indexes", "V3__search_signatures", "V4__lists", "V5__sync",
    "V6__recurrence_reminders", "V7__webhooks"
);

fn runner(files: &[(&str, &str)]) -> Result<Runner, StoreError> {
    let migrations = files
        .iter()
        .map(|(name, sql)| Migration::unapplied(name, sql))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Migration(e.to_string()))?;
    Ok(Runner::new(&migrations).set_abort_divergent(true))
}

/// A sqlx connection seen through refinery's traits.
struct Sqlx<DB: sqlx::Database>(sqlx::Transaction<'static, DB>);

macro_rules! impl_refinery {
    ($conn:ty) => {
        impl AsyncTransaction for Sqlx<$conn> {
            type Error = sqlx::Error;

            async fn execute<'a, T: Iterator<Item = &'a str> + Send + 'a>(
                &'a mut self,
                queries: T,
            ) -> Result<usize, sqlx::Error> {
                let mut tx = self.0.begin().await?;
                let mut count = 0;
                for q in queries {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(q))
                        .execute(&mut *tx)
                        .await?;
                    count += 1;
                }
                tx.commit().await?;
                Ok(count)
            }
        }

        impl AsyncQuery<Vec<Migration>> for Sqlx<$conn> {
            async fn query<'a>(
                &'a mut self,
                query: &'a str,
            ) -> Result<Vec<Migration>, sqlx::Error> {
                let rows = sqlx::query(sqlx::AssertSqlSafe(query))
                    .fetch_all(&mut *self.0)
                    .await?;
                rows.iter()
                    .map(|r| {
                        let applied_on: String = r.try_get(2)?;
                        let checksum: String = r.try_get(3)?;
                        let bad = |what: &str| sqlx::Error::Decode(what.to_owned().into());
                        Ok(Migration::applied(
                            r.try_get(0)?,
                            r.try_get(1)?,
                            OffsetDateTime::parse(&applied_on, &Rfc3339)
                                .map_err(|_| bad("applied_on is not RFC 3339"))?,
                            checksum.parse().map_err(|_| bad("checksum is not a u64"))?,
                        ))
                    })
                    .collect()
            }
        }

        impl AsyncMigrate for Sqlx<$conn> {}
    };
}

#[cfg(feature = "postgres")]
impl_refinery!(sqlx::Postgres);
#[cfg(feature = "sqlite")]
impl_refinery!(sqlx::Sqlite);

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Migration(e.to_string())
}

/// Tasks read and updated per transaction by [`fill_signatures`].
const SIGNATURE_BATCH: u64 = 500;

/// Computes the search signature of every task still at the default `[-1, -1]` (rows written
/// before migration V3, or by tools that do not compute it), a batch per transaction; returns
/// how many rows were looked at. Until then such rows are still found by every search, only
/// without the pre-test's savings, so an interrupted fill is simply resumed by the next call.
pub(crate) async fn fill_signatures(pool: &Pool) -> Result<u64, StoreError> {
    let mut after = Uuid::nil();
    let mut seen = 0;
    loop {
        let rows = pool
            .fetch_texts(&query::unsigned_tasks(after, SIGNATURE_BATCH))
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.0;
        let mut writer = pool.writer().await?;
        let mut tx = writer.begin().await?;
        for (id, version, title_lc, description_lc) in &rows {
            let bits = search_signature(title_lc, description_lc.as_deref());
            tx.execute(&query::set_signature(*id, *version, bits))
                .await?;
        }
        tx.commit().await?;
        writer.done();
        seen += rows.len() as u64;
        if (rows.len() as u64) < SIGNATURE_BATCH {
            break;
        }
    }
    Ok(seen)
}

/// Applies every pending migration (up to schema `target`, when given); returns the names of
/// those applied by this call.
pub(crate) async fn run(pool: &Pool, target: Option<u32>) -> Result<Vec<String>, StoreError> {
    let runner = |files| -> Result<Runner, StoreError> {
        let r = runner(files)?;
        Ok(match target {
            Some(v) => r
                .set_target(refinery_core::Target::Version(i32::try_from(v).map_err(
                    |_| StoreError::Migration(format!("no schema version {v}")),
                )?)),
            None => r,
        })
    };
    let report = match pool {
        #[cfg(feature = "postgres")]
        Pool::Postgres(conns) => {
            let mut tx = Sqlx(conns.pool.begin().await?);
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(LOCK_KEY)
                .execute(&mut *tx.0)
                .await?;
            let report = runner(POSTGRES)?.run_async(&mut tx).await.map_err(failed)?;
            tx.0.commit().await?;
            report
        }
        #[cfg(feature = "sqlite")]
        Pool::Sqlite(p, lock) => {
            let _guard = lock.lock().await;
            let mut tx = Sqlx(p.begin_with("BEGIN IMMEDIATE").await?);
            let report = runner(SQLITE)?.run_async(&mut tx).await.map_err(failed)?;
            tx.0.commit().await?;
            report
        }
    };
    Ok(report
        .applied_migrations()
        .iter()
        .map(ToString::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every SQL file under `migrations/` is registered, for both backends.
    #[test]
    fn every_migration_file_is_listed() {
        for (dir, listed) in [("postgres", POSTGRES), ("sqlite", SQLITE)] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(dir);
            let mut files: Vec<String> = std::fs::read_dir(&path)
                .expect("migrations dir")
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(".sql"))
                .map(|n| n.trim_end_matches(".sql").to_owned())
                .collect();
            files.sort();
            let names: Vec<String> = listed.iter().map(|(n, _)| n.to_string()).collect();
            assert_eq!(files, names, "{dir}");
            assert!(runner(listed).is_ok());
        }
    }
}
