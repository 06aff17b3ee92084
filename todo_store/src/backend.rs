//! The thin per-backend edge: pools, transactions, running a built statement, decoding rows.
//!
//! Statements arrive already built (by [`crate::query::Scope`]); this module only renders them
//! with the backend's query builder, binds, runs and decodes. Each operation is written once, in
//! the `on_backend!` macro, and expanded for every compiled-in backend.

use chrono::{DateTime, Utc};
use sea_query_sqlx::SqlxBinder;
use uuid::Uuid;

use crate::error::StoreError;
use crate::query::Dialect;
use crate::task::{Priority, TagCount, Task};

#[cfg(feature = "postgres")]
use sqlx::postgres::{PgPool, PgRow, Postgres};
#[cfg(feature = "sqlite")]
use sqlx::sqlite::{Sqlite, SqlitePool, SqliteRow};
use sqlx::{Row, Transaction};

/// A connection pool to one of the supported databases.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    #[cfg(feature = "postgres")]
    Postgres(PgPool),
    #[cfg(feature = "sqlite")]
    Sqlite(SqlitePool, std::sync::Arc<tokio::sync::Mutex<()>>),
}

/// An open write transaction.
pub(crate) enum Tx {
    #[cfg(feature = "postgres")]
    Postgres(Transaction<'static, Postgres>),
    #[cfg(feature = "sqlite")]
    Sqlite(
        Transaction<'static, Sqlite>,
        #[allow(dead_code)] tokio::sync::OwnedMutexGuard<()>,
    ),
}

/// Renders `$stmt` for the backend of `$target`, binds it as `$q`, names the executor `$ex`,
/// and evaluates `$body` once per backend.
macro_rules! on_backend {
    ($target:expr, $stmt:expr, |$q:ident, $ex:ident| $body:expr) => {
        match $target {
            #[cfg(feature = "postgres")]
            Target::Postgres($ex) => {
                let (sql, values) = $stmt.build_sqlx(sea_query::PostgresQueryBuilder);
                let $q = sqlx::query_with(sqlx::AssertSqlSafe(sql), values);
                $body
            }
            #[cfg(feature = "sqlite")]
            Target::Sqlite($ex) => {
                let (sql, values) = $stmt.build_sqlx(sea_query::SqliteQueryBuilder);
                let $q = sqlx::query_with(sqlx::AssertSqlSafe(sql), values);
                $body
            }
        }
    };
}

/// Borrowed executor of either backend.
enum Target<'a> {
    #[cfg(feature = "postgres")]
    Postgres(&'a mut sqlx::PgConnection),
    #[cfg(feature = "sqlite")]
    Sqlite(&'a mut sqlx::SqliteConnection),
}

/// Borrowed pool of either backend.
enum PoolTarget<'a> {
    #[cfg(feature = "postgres")]
    Postgres(&'a PgPool),
    #[cfg(feature = "sqlite")]
    Sqlite(&'a SqlitePool),
}

impl Pool {
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            #[cfg(feature = "postgres")]
            Pool::Postgres(_) => Dialect::Postgres,
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(..) => Dialect::Sqlite,
        }
    }

    fn target(&self) -> PoolTarget<'_> {
        match self {
            #[cfg(feature = "postgres")]
            Pool::Postgres(p) => PoolTarget::Postgres(p),
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(p, _) => PoolTarget::Sqlite(p),
        }
    }

    /// Starts a write transaction. SQLite writers queue on an in-process lock and then take the
    /// database's write lock up front (`BEGIN IMMEDIATE`), so they never fail with "database is
    /// locked" on upgrade.
    pub(crate) async fn begin(&self) -> Result<Tx, StoreError> {
        match self {
            #[cfg(feature = "postgres")]
            Pool::Postgres(p) => Ok(Tx::Postgres(p.begin().await?)),
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(p, lock) => {
                let guard = lock.clone().lock_owned().await;
                Ok(Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?, guard))
            }
        }
    }

    /// Runs a query returning task rows (with an optional trailing `total` column).
    pub(crate) async fn fetch_tasks<S: SqlxBinder>(
        &self,
        stmt: &S,
    ) -> Result<(Vec<Task>, Option<i64>), StoreError> {
        use PoolTarget as Target;
        on_backend!(self.target(), stmt, |q, p| {
            let rows = q.fetch_all(p).await?;
            let total = match rows.first() {
                Some(r) => Some(r.try_get::<i64, _>(crate::query::COLUMNS.len())?),
                None => None,
            };
            let tasks = rows.iter().map(decode_task).collect::<Result<_, _>>()?;
            Ok((tasks, total))
        })
    }

    /// Runs a query returning `(id, version, title_lc, description_lc)` rows.
    pub(crate) async fn fetch_texts<S: SqlxBinder>(
        &self,
        stmt: &S,
    ) -> Result<Vec<(Uuid, i64, String, Option<String>)>, StoreError> {
        use PoolTarget as Target;
        on_backend!(self.target(), stmt, |q, p| {
            let rows = q.fetch_all(p).await?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
                .collect()
        })
    }

    /// Runs a query returning one integer (a count).
    pub(crate) async fn fetch_i64<S: SqlxBinder>(&self, stmt: &S) -> Result<i64, StoreError> {
        use PoolTarget as Target;
        on_backend!(self.target(), stmt, |q, p| {
            Ok(q.fetch_one(p).await?.try_get::<i64, _>(0)?)
        })
    }

    /// Runs the tag-count query.
    pub(crate) async fn fetch_tag_counts<S: SqlxBinder>(
        &self,
        stmt: &S,
    ) -> Result<Vec<TagCount>, StoreError> {
        use PoolTarget as Target;
        on_backend!(self.target(), stmt, |q, p| {
            let rows = q.fetch_all(p).await?;
            rows.iter()
                .map(|r| {
                    Ok(TagCount {
                        tag: r.try_get(0)?,
                        count: r.try_get(1)?,
                    })
                })
                .collect()
        })
    }

    /// Runs a task query outside any transaction.
    pub(crate) async fn fetch_task<S: SqlxBinder>(
        &self,
        stmt: &S,
    ) -> Result<Option<Task>, StoreError> {
        use PoolTarget as Target;
        on_backend!(self.target(), stmt, |q, p| {
            match q.fetch_optional(p).await? {
                Some(r) => Ok(Some(decode_task(&r)?)),
                None => Ok(None),
            }
        })
    }

    /// Runs a statement outside any transaction; returns the rows affected.
    pub(crate) async fn execute<S: SqlxBinder>(&self, stmt: &S) -> Result<u64, StoreError> {
        use PoolTarget as Target;
        on_backend!(self.target(), stmt, |q, p| {
            Ok(q.execute(p).await?.rows_affected())
        })
    }

    /// A trivial round trip, for readiness checks.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        match self {
            #[cfg(feature = "postgres")]
            Pool::Postgres(p) => sqlx::raw_sql("SELECT 1").execute(p).await.map(drop)?,
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(p, _) => sqlx::raw_sql("SELECT 1").execute(p).await.map(drop)?,
        }
        Ok(())
    }

    pub(crate) async fn close(&self) {
        match self {
            #[cfg(feature = "postgres")]
            Pool::Postgres(p) => p.close().await,
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(p, _) => p.close().await,
        }
    }
}

impl Tx {
    fn target(&mut self) -> Target<'_> {
        match self {
            #[cfg(feature = "postgres")]
            Tx::Postgres(t) => Target::Postgres(t),
            #[cfg(feature = "sqlite")]
            Tx::Sqlite(t, _) => Target::Sqlite(t),
        }
    }

    /// Runs a query returning at most one task row.
    pub(crate) async fn fetch_task<S: SqlxBinder>(
        &mut self,
        stmt: &S,
    ) -> Result<Option<Task>, StoreError> {
        on_backend!(self.target(), stmt, |q, c| {
            match q.fetch_optional(&mut *c).await? {
                Some(r) => Ok(Some(decode_task(&r)?)),
                None => Ok(None),
            }
        })
    }

    /// Runs a statement; returns the rows affected.
    pub(crate) async fn execute<S: SqlxBinder>(&mut self, stmt: &S) -> Result<u64, StoreError> {
        on_backend!(self.target(), stmt, |q, c| {
            Ok(q.execute(&mut *c).await?.rows_affected())
        })
    }

    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        match self {
            #[cfg(feature = "postgres")]
            Tx::Postgres(t) => t.commit().await?,
            #[cfg(feature = "sqlite")]
            Tx::Sqlite(t, _guard) => t.commit().await?,
        }
        Ok(())
    }
}

/// Reads the columns whose Rust type depends on the backend.
trait BackendRow: Row {
    fn ts(&self, i: usize) -> Result<Option<DateTime<Utc>>, sqlx::Error>;
}

#[cfg(feature = "postgres")]
impl BackendRow for PgRow {
    fn ts(&self, i: usize) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        self.try_get(i)
    }
}

#[cfg(feature = "sqlite")]
impl BackendRow for SqliteRow {
    fn ts(&self, i: usize) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        Ok(self
            .try_get::<Option<i64>, _>(i)?
            .map(crate::task::from_millis))
    }
}

fn required<T>(v: Option<T>, col: &str) -> Result<T, sqlx::Error> {
    v.ok_or_else(|| sqlx::Error::ColumnDecode {
        index: col.to_owned(),
        source: "unexpected NULL".into(),
    })
}

/// Decodes a row whose first columns are [`crate::query::COLUMNS`].
fn decode_task<R>(r: &R) -> Result<Task, sqlx::Error>
where
    R: BackendRow,
    usize: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Uuid: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> bool: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i16: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let rank: i16 = r.try_get(6)?;
    let tags: String = r.try_get(7)?;
    Ok(Task {
        id: r.try_get(0)?,
        user_id: r.try_get(1)?,
        title: r.try_get(2)?,
        description: r.try_get(3)?,
        completed: r.try_get(4)?,
        completed_at: r.ts(5)?,
        priority: Priority::from_rank(rank).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: "priority".into(),
            source: format!("bad rank {rank}").into(),
        })?,
        tags: serde_json::from_str(&tags).map_err(|e| sqlx::Error::ColumnDecode {
            index: "tags".into(),
            source: Box::new(e),
        })?,
        due_at: r.ts(8)?,
        created_at: required(r.ts(9)?, "created_at")?,
        updated_at: required(r.ts(10)?, "updated_at")?,
        version: r.try_get(11)?,
    })
}
