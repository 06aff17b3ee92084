//! The thin per-backend edge: pools, transactions, running a built statement, decoding rows.
//!
//! Statements arrive already built (by [`crate::query::Scope`]); this module only renders them
//! with the backend's query builder, binds, runs and decodes. Each operation is written once, in
//! the `on_pool!` (outside a transaction) or `on_backend!` (inside one) macro, and expanded for
//! every compiled-in backend.

use chrono::{DateTime, Utc};
use sea_query_sqlx::SqlxBinder;
use uuid::Uuid;

use crate::error::StoreError;
use crate::list::List;
use crate::query::Dialect;
use crate::task::{Priority, TagCount, Task};
use crate::view::{Tags, TaskView};

#[cfg(feature = "postgres")]
use sqlx::postgres::{PgRow, Postgres};
#[cfg(feature = "sqlite")]
use sqlx::sqlite::{Sqlite, SqlitePool, SqliteRow};
use sqlx::{Connection, Row, Transaction};

/// A connection pool to one of the supported databases.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    #[cfg(feature = "postgres")]
    Postgres(std::sync::Arc<pg::Conns>),
    #[cfg(feature = "sqlite")]
    Sqlite(SqlitePool, std::sync::Arc<tokio::sync::Mutex<()>>),
}

/// A connection held for one write transaction (see [`Pool::writer`]).
pub(crate) enum Writer {
    #[cfg(feature = "postgres")]
    Postgres(pg::Lease),
    #[cfg(feature = "sqlite")]
    Sqlite(SqlitePool, std::sync::Arc<tokio::sync::Mutex<()>>),
}

/// An open write transaction.
pub(crate) enum Tx<'a> {
    #[cfg(feature = "postgres")]
    Postgres(Transaction<'a, Postgres>),
    #[cfg(feature = "sqlite")]
    Sqlite(
        Transaction<'static, Sqlite>,
        #[allow(dead_code)] tokio::sync::OwnedMutexGuard<()>,
        std::marker::PhantomData<&'a ()>,
    ),
}

/// PostgreSQL connections kept between requests.
///
/// sqlx sends every connection that goes back to its pool a `Sync` and waits for the server's
/// answer (a safety net for futures dropped mid-query): a second round trip per request, which
/// costs the server and PostgreSQL as much CPU as a small query. Connections are therefore
/// leased from sqlx's pool once and kept in a small LIFO cache between requests. A lease whose
/// work did not finish cleanly (an error, a dropped future, a transaction not committed) goes
/// back to sqlx's pool instead, where that check runs (and an open transaction is rolled
/// back). Connections idle for [`IDLE_RETURN`] go back too, so sqlx's idle timeout and max
/// lifetime still apply and a host that shares its pool gets them back.
#[cfg(feature = "postgres")]
pub(crate) mod pg {
    use std::sync::{Arc, Mutex, Weak};
    use std::time::{Duration, Instant};

    use sqlx::pool::PoolConnection;
    use sqlx::postgres::{PgPool, Postgres};
    use tokio::sync::{OwnedSemaphorePermit, Semaphore};

    use crate::error::StoreError;

    /// A cached connection idle this long is handed back to sqlx's pool.
    pub(crate) const IDLE_RETURN: Duration = Duration::from_secs(1);

    /// The cache in front of a sqlx pool.
    #[derive(Debug)]
    pub(crate) struct Conns {
        /// The sqlx pool: where connections come from, and go back to.
        pub(crate) pool: PgPool,
        idle: Mutex<Vec<(PoolConnection<Postgres>, Instant)>>,
        /// One permit per connection the pool may open: leases never exceed its size.
        permits: Arc<Semaphore>,
        acquire_timeout: Duration,
    }

    /// One leased connection; back in the cache on drop if [`keep`](Lease::keep) was called,
    /// else back to sqlx's pool.
    pub(crate) struct Lease {
        conn: Option<PoolConnection<Postgres>>,
        home: Arc<Conns>,
        keep: bool,
        // Released after `conn` is back in the cache (fields drop after `Drop::drop`).
        _permit: OwnedSemaphorePermit,
    }

    impl Conns {
        pub(crate) fn new(pool: PgPool) -> Arc<Conns> {
            let conns = Arc::new(Conns {
                permits: Arc::new(Semaphore::new(pool.options().get_max_connections() as usize)),
                acquire_timeout: pool.options().get_acquire_timeout(),
                idle: Mutex::new(Vec::new()),
                pool,
            });
            // Without a runtime (a store built outside one) idle connections are returned when
            // the next lease looks at the cache.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(sweep(Arc::downgrade(&conns)));
            }
            conns
        }

        /// Connections leased right now (in a request, not cached idle).
        pub(crate) fn leased(&self) -> u32 {
            let max = self.pool.options().get_max_connections() as usize;
            u32::try_from(max.saturating_sub(self.permits.available_permits())).unwrap_or(u32::MAX)
        }

        pub(crate) fn idle(
            &self,
        ) -> std::sync::MutexGuard<'_, Vec<(PoolConnection<Postgres>, Instant)>> {
            self.idle.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// Drops (back to sqlx) every cached connection idle for `at_least`.
        fn return_idle(&self, at_least: Duration) {
            let stale = take_stale(&mut self.idle(), at_least);
            drop(stale);
        }

        /// A connection: the most recently used cached one, else one from sqlx's pool. Waits
        /// at most the pool's acquire timeout, then fails as sqlx does (`Unavailable`).
        pub(crate) async fn lease(self: &Arc<Self>) -> Result<Lease, StoreError> {
            let deadline = tokio::time::Instant::now() + self.acquire_timeout;
            let permit = tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned())
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)?
                .map_err(|_| sqlx::Error::PoolClosed)?;
            // One look at the cache: hand back what idled too long, take the freshest.
            let (stale, cached) = {
                let mut idle = self.idle();
                let stale = take_stale(&mut idle, IDLE_RETURN);
                (stale, idle.pop().map(|(c, _)| c))
            };
            drop(stale);
            let conn = match cached {
                Some(c) => c,
                // Boxed: sqlx's acquire future holds a whole connection attempt (TLS and all,
                // about 14 KiB). Inline, it made every query's future that size, and each
                // request copied it from frame to frame a few times over (a tenth of the
                // server's instructions under `cargo xtask bench`), cached connection or not.
                None => tokio::time::timeout_at(deadline, Box::pin(self.pool.acquire()))
                    .await
                    .map_err(|_| sqlx::Error::PoolTimedOut)??,
            };
            Ok(Lease {
                conn: Some(conn),
                home: self.clone(),
                keep: false,
                _permit: permit,
            })
        }

        /// Returns every cached connection and closes the pool.
        pub(crate) async fn close(&self) {
            self.permits.close();
            self.return_idle(Duration::ZERO);
            self.pool.close().await;
        }
    }

    /// Removes the cached connections idle for `at_least` (the oldest: the cache is pushed and
    /// popped at its end), to be dropped outside the lock.
    fn take_stale(
        idle: &mut Vec<(PoolConnection<Postgres>, Instant)>,
        at_least: Duration,
    ) -> Vec<(PoolConnection<Postgres>, Instant)> {
        let n = idle
            .iter()
            .take_while(|(_, since)| since.elapsed() >= at_least)
            .count();
        idle.drain(..n).collect()
    }

    /// Every [`IDLE_RETURN`], hands connections idle that long back to sqlx; ends with the store.
    async fn sweep(conns: Weak<Conns>) {
        let mut tick = tokio::time::interval(IDLE_RETURN);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match conns.upgrade() {
                Some(c) if !c.pool.is_closed() => c.return_idle(IDLE_RETURN),
                _ => return,
            }
        }
    }

    impl Lease {
        pub(crate) fn conn(&mut self) -> &mut sqlx::PgConnection {
            // Only `Drop` takes it.
            self.conn
                .as_deref_mut()
                .expect("a lease holds its connection until dropped")
        }

        /// The work on this connection finished cleanly: cache it for the next request.
        pub(crate) fn keep(&mut self) {
            self.keep = true;
        }
    }

    impl Drop for Lease {
        fn drop(&mut self) {
            if let Some(conn) = self.conn.take()
                && self.keep
                && !self.home.pool.is_closed()
            {
                self.home.idle().push((conn, Instant::now()));
            }
        }
    }
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

/// Renders `$stmt` for the pool's backend, binds it as `$q`, and evaluates `$body` with `$ex`
/// an executor: a leased PostgreSQL connection (cached again if `$body` succeeds) or the
/// SQLite pool.
macro_rules! on_pool {
    ($pool:expr, $stmt:expr, |$q:ident, $ex:ident| $body:expr) => {
        match $pool {
            #[cfg(feature = "postgres")]
            Pool::Postgres(conns) => {
                let (sql, values) = $stmt.build_sqlx(sea_query::PostgresQueryBuilder);
                let $q = sqlx::query_with(sqlx::AssertSqlSafe(sql), values);
                let mut lease = conns.lease().await?;
                let result: Result<_, StoreError> = async {
                    let $ex = lease.conn();
                    $body
                }
                .await;
                if result.is_ok() {
                    lease.keep();
                }
                result
            }
            #[cfg(feature = "sqlite")]
            Pool::Sqlite($ex, _) => {
                let (sql, values) = $stmt.build_sqlx(sea_query::SqliteQueryBuilder);
                let $q = sqlx::query_with(sqlx::AssertSqlSafe(sql), values);
                $body
            }
        }
    };
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

    /// A connection for one write transaction: `writer.begin()`, the statements,
    /// `tx.commit()`, then `writer.done()`.
    pub(crate) async fn writer(&self) -> Result<Writer, StoreError> {
        match self {
            #[cfg(feature = "postgres")]
            Pool::Postgres(conns) => Ok(Writer::Postgres(conns.lease().await?)),
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(p, lock) => Ok(Writer::Sqlite(p.clone(), lock.clone())),
        }
    }

    /// Runs a query returning task rows with a trailing `total` column: hands each row to
    /// `each` (its index, the row count, the task), and returns the first row's total (`None`
    /// when there are no rows).
    pub(crate) async fn fetch_each<S, F>(
        &self,
        stmt: &S,
        mut each: F,
    ) -> Result<Option<i64>, StoreError>
    where
        S: SqlxBinder,
        F: FnMut(usize, usize, &TaskView<'_>),
    {
        on_pool!(self, stmt, |q, p| {
            let rows = q.fetch_all(p).await?;
            let total = match rows.first() {
                Some(r) => Some(r.try_get::<i64, _>(crate::query::COLUMNS.len())?),
                None => None,
            };
            for (i, r) in rows.iter().enumerate() {
                each(i, rows.len(), &decode_view(r)?);
            }
            Ok(total)
        })
    }

    /// Runs a query returning `(id, version, title_lc, description_lc)` rows.
    pub(crate) async fn fetch_texts<S: SqlxBinder>(
        &self,
        stmt: &S,
    ) -> Result<Vec<(Uuid, i64, String, Option<String>)>, StoreError> {
        on_pool!(self, stmt, |q, p| {
            let rows = q.fetch_all(p).await?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
                .collect()
        })
    }

    /// Runs a query returning one integer (a count).
    pub(crate) async fn fetch_i64<S: SqlxBinder>(&self, stmt: &S) -> Result<i64, StoreError> {
        on_pool!(self, stmt, |q, p| {
            Ok(q.fetch_one(p).await?.try_get::<i64, _>(0)?)
        })
    }

    /// Runs the tag-count query.
    pub(crate) async fn fetch_tag_counts<S: SqlxBinder>(
        &self,
        stmt: &S,
    ) -> Result<Vec<TagCount>, StoreError> {
        on_pool!(self, stmt, |q, p| {
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
        on_pool!(self, stmt, |q, p| {
            match q.fetch_optional(p).await? {
                Some(r) => Ok(Some(decode_task(&r)?)),
                None => Ok(None),
            }
        })
    }

    /// Runs a query and decodes every row as `T`.
    pub(crate) async fn fetch_all_as<T: Decoded, S: SqlxBinder>(
        &self,
        stmt: &S,
    ) -> Result<Vec<T>, StoreError> {
        match self {
            #[cfg(feature = "postgres")]
            Pool::Postgres(conns) => {
                let (sql, values) = stmt.build_sqlx(sea_query::PostgresQueryBuilder);
                let q = sqlx::query_with(sqlx::AssertSqlSafe(sql), values);
                let mut lease = conns.lease().await?;
                let rows = q.fetch_all(lease.conn()).await?;
                let out = rows.iter().map(T::from_pg).collect::<Result<Vec<T>, _>>()?;
                lease.keep();
                Ok(out)
            }
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(p, _) => {
                let (sql, values) = stmt.build_sqlx(sea_query::SqliteQueryBuilder);
                let q = sqlx::query_with(sqlx::AssertSqlSafe(sql), values);
                let rows = q.fetch_all(p).await?;
                Ok(rows
                    .iter()
                    .map(T::from_lite)
                    .collect::<Result<Vec<T>, _>>()?)
            }
        }
    }

    /// Runs a statement outside any transaction; returns the rows affected.
    pub(crate) async fn execute<S: SqlxBinder>(&self, stmt: &S) -> Result<u64, StoreError> {
        on_pool!(self, stmt, |q, p| {
            Ok(q.execute(p).await?.rows_affected())
        })
    }

    /// A trivial round trip, for readiness checks.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        match self {
            #[cfg(feature = "postgres")]
            Pool::Postgres(conns) => {
                let mut lease = conns.lease().await?;
                sqlx::raw_sql("SELECT 1").execute(lease.conn()).await?;
                lease.keep();
            }
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(p, _) => sqlx::raw_sql("SELECT 1").execute(p).await.map(drop)?,
        }
        Ok(())
    }

    /// How many connections the pool may open, has open, and has handed out.
    pub(crate) fn stats(&self) -> crate::PoolStats {
        match self {
            #[cfg(feature = "postgres")]
            Pool::Postgres(conns) => {
                let max = conns.pool.options().get_max_connections();
                crate::PoolStats {
                    max,
                    open: conns.pool.size(),
                    in_use: conns.leased(),
                }
            }
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(p, _) => {
                let open = p.size();
                crate::PoolStats {
                    max: p.options().get_max_connections(),
                    open,
                    in_use: open.saturating_sub(u32::try_from(p.num_idle()).unwrap_or(u32::MAX)),
                }
            }
        }
    }

    pub(crate) async fn close(&self) {
        match self {
            #[cfg(feature = "postgres")]
            Pool::Postgres(conns) => conns.close().await,
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(p, _) => p.close().await,
        }
    }
}

impl Writer {
    /// Starts the write transaction. SQLite writers queue on an in-process lock and then take
    /// the database's write lock up front (`BEGIN IMMEDIATE`), so they never fail with
    /// "database is locked" on upgrade.
    pub(crate) async fn begin(&mut self) -> Result<Tx<'_>, StoreError> {
        match self {
            #[cfg(feature = "postgres")]
            Writer::Postgres(lease) => Ok(Tx::Postgres(lease.conn().begin().await?)),
            #[cfg(feature = "sqlite")]
            Writer::Sqlite(p, lock) => {
                let guard = lock.clone().lock_owned().await;
                Ok(Tx::Sqlite(
                    // Boxed for the same reason as PostgreSQL's acquire (`pg::Conns::lease`).
                    Box::pin(p.begin_with("BEGIN IMMEDIATE")).await?,
                    guard,
                    std::marker::PhantomData,
                ))
            }
        }
    }

    /// The transaction committed: the connection can serve the next request. (A writer dropped
    /// without this hands its connection back to sqlx's pool, which rolls back what is open.)
    pub(crate) fn done(mut self) {
        match &mut self {
            #[cfg(feature = "postgres")]
            Writer::Postgres(lease) => lease.keep(),
            #[cfg(feature = "sqlite")]
            Writer::Sqlite(..) => {}
        }
    }
}

impl Tx<'_> {
    fn target(&mut self) -> Target<'_> {
        match self {
            #[cfg(feature = "postgres")]
            Tx::Postgres(t) => Target::Postgres(t),
            #[cfg(feature = "sqlite")]
            Tx::Sqlite(t, ..) => Target::Sqlite(t),
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

    /// Runs a query and decodes every row as `T`.
    pub(crate) async fn fetch_all_as<T: Decoded, S: SqlxBinder>(
        &mut self,
        stmt: &S,
    ) -> Result<Vec<T>, StoreError> {
        match self.target() {
            #[cfg(feature = "postgres")]
            Target::Postgres(c) => {
                let (sql, values) = stmt.build_sqlx(sea_query::PostgresQueryBuilder);
                let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql), values)
                    .fetch_all(&mut *c)
                    .await?;
                Ok(rows.iter().map(T::from_pg).collect::<Result<Vec<T>, _>>()?)
            }
            #[cfg(feature = "sqlite")]
            Target::Sqlite(c) => {
                let (sql, values) = stmt.build_sqlx(sea_query::SqliteQueryBuilder);
                let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql), values)
                    .fetch_all(&mut *c)
                    .await?;
                Ok(rows
                    .iter()
                    .map(T::from_lite)
                    .collect::<Result<Vec<T>, _>>()?)
            }
        }
    }

    /// Runs a query and decodes its first row as `T`, if any.
    pub(crate) async fn fetch_one_as<T: Decoded, S: SqlxBinder>(
        &mut self,
        stmt: &S,
    ) -> Result<Option<T>, StoreError> {
        Ok(self.fetch_all_as(stmt).await?.into_iter().next())
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
            Tx::Sqlite(t, _guard, _) => t.commit().await?,
        }
        Ok(())
    }
}

/// A value decoded from a row, the same way on every backend (see [`decoded!`]).
pub(crate) trait Decoded: Sized {
    #[cfg(feature = "postgres")]
    fn from_pg(r: &PgRow) -> Result<Self, sqlx::Error>;
    #[cfg(feature = "sqlite")]
    fn from_lite(r: &SqliteRow) -> Result<Self, sqlx::Error>;
}

/// Implements [`Decoded`] for `$t` with one body, expanded for each backend's row type.
macro_rules! decoded {
    ($t:ty, |$r:ident| $body:expr) => {
        impl Decoded for $t {
            #[cfg(feature = "postgres")]
            fn from_pg($r: &PgRow) -> Result<Self, sqlx::Error> {
                $body
            }
            #[cfg(feature = "sqlite")]
            fn from_lite($r: &SqliteRow) -> Result<Self, sqlx::Error> {
                $body
            }
        }
    };
}

/// A single integer (a count).
pub(crate) struct Int(pub i64);
/// A single id.
pub(crate) struct Id(pub Uuid);
/// An id and a position.
pub(crate) struct IdPos(pub Uuid, pub String);
/// An id and an integer (a depth).
pub(crate) struct IdInt(pub Uuid, pub i64);
/// A task and whether it has subtasks.
pub(crate) struct TaskKids(pub Task, pub bool);
/// A task.
pub(crate) struct TaskRow(pub Task);
/// A timestamp, or NULL.
pub(crate) struct OptTs(pub Option<DateTime<Utc>>);
/// A reminder due to fire: its id, user, task and time.
pub(crate) struct DueReminder(pub Uuid, pub String, pub Uuid, pub Option<DateTime<Utc>>);
/// A reminder's latest firing: its id, task and the time it fired for (NULL: never fired).
pub(crate) struct FiredRow(pub Uuid, pub Uuid, pub Option<DateTime<Utc>>);
/// Two integers.
pub(crate) struct IntPair(pub i64, pub i64);
/// An integer and a flag (a seq, and whether the user has an enabled webhook).
pub(crate) struct IntBool(pub i64, pub bool);
/// An id and a second id.
pub(crate) struct IdId(pub Uuid, pub Uuid);
/// A row of the change log: kind, entity id, seq, created seq, op, at.
pub(crate) struct LogRow {
    pub kind: String,
    pub id: Uuid,
    pub seq: i64,
    pub created_seq: i64,
    pub op: String,
    pub at: DateTime<Utc>,
}
/// A webhook's id and event filter (JSON).
pub(crate) struct HookRow(pub Uuid, pub Option<String>);
/// An idempotency record: method, path, body hash, state, status, headers, body, created_at.
pub(crate) struct IdemRow {
    pub method: String,
    pub path: String,
    pub body_hash: Vec<u8>,
    pub state: String,
    pub status: Option<i64>,
    pub headers: Option<String>,
    pub body: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
}

decoded!(Int, |r| Ok(Int(r.try_get(0)?)));
decoded!(Id, |r| Ok(Id(r.try_get(0)?)));
decoded!(IdPos, |r| Ok(IdPos(r.try_get(0)?, r.try_get(1)?)));
decoded!(IdInt, |r| Ok(IdInt(r.try_get(0)?, r.try_get(1)?)));
decoded!(TaskKids, |r| Ok(TaskKids(
    decode_task(r)?,
    r.try_get(crate::query::COLUMNS.len())?
)));
decoded!(TaskRow, |r| Ok(TaskRow(decode_task(r)?)));
decoded!(OptTs, |r| Ok(OptTs(r.ts(0)?)));
decoded!(DueReminder, |r| Ok(DueReminder(
    r.try_get(0)?,
    r.try_get(1)?,
    r.try_get(2)?,
    r.ts(3)?
)));
decoded!(FiredRow, |r| Ok(FiredRow(
    r.try_get(0)?,
    r.try_get(1)?,
    r.ts(2)?
)));
decoded!(crate::reminder::Row, |r| Ok(crate::reminder::Row {
    id: r.try_get(0)?,
    fire_at: r.ts(1)?,
    state: r.try_get(2)?,
}));
decoded!(IntPair, |r| Ok(IntPair(r.try_get(0)?, r.try_get(1)?)));
decoded!(IntBool, |r| Ok(IntBool(r.try_get(0)?, r.try_get(1)?)));
decoded!(IdId, |r| Ok(IdId(r.try_get(0)?, r.try_get(1)?)));
decoded!(Task, |r| decode_task(r));
decoded!(LogRow, |r| Ok(LogRow {
    kind: r.try_get(0)?,
    id: r.try_get(1)?,
    seq: r.try_get(2)?,
    created_seq: r.try_get(3)?,
    op: r.try_get(4)?,
    at: required(r.ts(5)?, "at")?,
}));
decoded!(IdemRow, |r| Ok(IdemRow {
    method: r.try_get(0)?,
    path: r.try_get(1)?,
    body_hash: r.try_get(2)?,
    state: r.try_get(3)?,
    status: r
        .try_get::<Option<i64>, _>(4)
        .or_else(|_| { r.try_get::<Option<i16>, _>(4).map(|v| v.map(i64::from)) })?,
    headers: r.try_get(5)?,
    body: r.try_get(6)?,
    created_at: required(r.ts(7)?, "created_at")?,
}));
decoded!(HookRow, |r| Ok(HookRow(r.try_get(0)?, r.try_get(1)?)));
decoded!(crate::webhook::Webhook, |r| Ok(crate::webhook::Webhook {
    id: r.try_get(0)?,
    user_id: r.try_get(1)?,
    url: r.try_get(2)?,
    events: crate::webhook::parse_events(r.try_get(3)?),
    description: r.try_get(4)?,
    enabled: r.try_get(5)?,
    created_at: required(r.ts(6)?, "created_at")?,
    updated_at: required(r.ts(7)?, "updated_at")?,
}));
decoded!(crate::webhook::Delivery, |r| Ok(crate::webhook::Delivery {
    id: r.try_get(0)?,
    event_type: r.try_get(1)?,
    status: crate::webhook::DeliveryStatus::parse(&r.try_get::<String, _>(2)?),
    attempts: int_of(r, 3)?,
    last_response_status: r
        .try_get::<Option<i64>, _>(4)
        .or_else(|_| r.try_get::<Option<i32>, _>(4).map(|v| v.map(i64::from)))?,
    next_attempt_at: r.ts(5)?,
    created_at: required(r.ts(6)?, "created_at")?,
}));
decoded!(crate::webhook::ClaimRow, |r| Ok(crate::webhook::ClaimRow {
    id: r.try_get(0)?,
    webhook_id: r.try_get(1)?,
    event_type: r.try_get(2)?,
    payload: r.try_get(3)?,
    event_at: required(r.ts(4)?, "event_at")?,
    attempts: int_of(r, 5)?,
    url: r.try_get(6)?,
    secret: r.try_get(7)?,
}));

/// An integer column: `INTEGER` (i32) on PostgreSQL, i64 on SQLite.
fn int_of<R>(r: &R, i: usize) -> Result<i64, sqlx::Error>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Type<R::Database> + for<'a> sqlx::Decode<'a, R::Database>,
    i32: sqlx::Type<R::Database> + for<'a> sqlx::Decode<'a, R::Database>,
{
    r.try_get::<i64, _>(i)
        .or_else(|_| r.try_get::<i32, _>(i).map(i64::from))
}

decoded!(List, |r| Ok(List {
    id: r.try_get(0)?,
    user_id: r.try_get(1)?,
    name: r.try_get(2)?,
    color: r.try_get(3)?,
    is_inbox: r.try_get(4)?,
    position: r.try_get(5)?,
    created_at: required(r.ts(6)?, "created_at")?,
    updated_at: required(r.ts(7)?, "updated_at")?,
    version: r.try_get(8)?,
    open_count: r.try_get(9)?,
}));

/// Reads the columns whose Rust type depends on the backend.
trait BackendRow: Row {
    fn ts(&self, i: usize) -> Result<Option<DateTime<Utc>>, sqlx::Error>;
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
#[cfg(feature = "postgres")]
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

#[cfg(feature = "postgres")]
impl BackendRow for PgRow {
    /// A `timestamptz` in binary format is microseconds since 2000-01-01 UTC: one addition here.
    /// sqlx's own decoding goes through `NaiveDate` arithmetic and a fixed offset, about 5 % of
    /// the server's CPU time on a page of 50 tasks (four timestamps each). Text-format values
    /// (and anything unexpected) still go through sqlx.
    fn ts(&self, i: usize) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        use sqlx::ValueRef as _;
        use sqlx::postgres::PgValueFormat;
        let raw = self.try_get_raw(i)?;
        if raw.is_null() {
            return Ok(None);
        }
        if raw.format() == PgValueFormat::Binary
            && let Some(t) = raw
                .as_bytes()
                .ok()
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .and_then(|b| i64::from_be_bytes(b).checked_add(PG_EPOCH_MICROS))
                .and_then(DateTime::from_timestamp_micros)
        {
            return Ok(Some(t));
        }
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

/// Decodes a row whose first columns are [`crate::query::COLUMNS`], borrowing its text.
///
/// The statements come from `query.rs`, so each column's type is known: the reads skip sqlx's
/// per-value type check (about 2 % of the server's time on a page of tasks).
fn decode_view<'r, R>(r: &'r R) -> Result<TaskView<'r>, sqlx::Error>
where
    R: BackendRow,
    usize: sqlx::ColumnIndex<R>,
    &'r str: sqlx::Decode<'r, R::Database>,
    Uuid: sqlx::Decode<'r, R::Database>,
    bool: sqlx::Decode<'r, R::Database>,
    i16: sqlx::Decode<'r, R::Database>,
    i64: sqlx::Decode<'r, R::Database>,
    Option<Uuid>: sqlx::Decode<'r, R::Database>,
{
    let rank: i16 = r.try_get_unchecked(6)?;
    let tags: &str = r.try_get_unchecked(7)?;
    Ok(TaskView {
        id: r.try_get_unchecked(0)?,
        user_id: r.try_get_unchecked(1)?,
        title: r.try_get_unchecked(2)?,
        description: r.try_get_unchecked(3)?,
        completed: r.try_get_unchecked(4)?,
        completed_at: r.ts(5)?,
        priority: Priority::from_rank(rank).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: "priority".into(),
            source: format!("bad rank {rank}").into(),
        })?,
        tags: Tags::from_json(tags).map_err(|e| sqlx::Error::ColumnDecode {
            index: "tags".into(),
            source: Box::new(e),
        })?,
        due_at: r.ts(8)?,
        created_at: required(r.ts(9)?, "created_at")?,
        updated_at: required(r.ts(10)?, "updated_at")?,
        version: r.try_get_unchecked(11)?,
        list_id: r.try_get_unchecked(13)?,
        parent_id: r.try_get_unchecked(14)?,
        position: r.try_get_unchecked(15)?,
        recurrence: match (
            r.try_get_unchecked::<Option<&str>, _>(16)?,
            r.try_get_unchecked::<Option<&str>, _>(17)?,
        ) {
            (Some(rule), Some(zone)) => Some(crate::Recurrence::in_zone(rule, zone)),
            _ => None,
        },
        recurrence_start: r.ts(18)?,
        last_completed_at: r.ts(19)?,
        reminders: crate::reminder::from_json(r.try_get_unchecked(20)?).map_err(|e| {
            sqlx::Error::ColumnDecode {
                index: "reminders".into(),
                source: Box::new(e),
            }
        })?,
    })
}

/// [`decode_view`], copied out.
fn decode_task<R>(r: &R) -> Result<Task, sqlx::Error>
where
    R: BackendRow,
    usize: sqlx::ColumnIndex<R>,
    for<'a> &'a str: sqlx::Decode<'a, R::Database>,
    for<'a> Uuid: sqlx::Decode<'a, R::Database>,
    for<'a> bool: sqlx::Decode<'a, R::Database>,
    for<'a> i16: sqlx::Decode<'a, R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database>,
    for<'a> Option<Uuid>: sqlx::Decode<'a, R::Database>,
{
    decode_view(r).map(|v| v.to_task())
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use std::time::Duration;

    use super::Pool;
    use crate::{Store, StoreOptions, TaskInput, TaskQuery};

    /// The connection cache stays within the pool's size, keeps connections between requests
    /// (sqlx sees none idle), hands them back to sqlx once idle, and a read abandoned midway
    /// leaves nothing behind that a later read could trip over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
    async fn leased_connections_are_bounded_kept_and_returned_when_idle() {
        let db = test_support::TestDb::postgres().await;
        let opts = StoreOptions {
            max_connections: Some(3),
            ..StoreOptions::default()
        };
        let store = Store::connect_with(&db.url, &opts).await.expect("connect");
        store.migrate().await.expect("migrate");
        let Pool::Postgres(conns) = &store.pool else {
            panic!("a PostgreSQL store");
        };
        let mut work = tokio::task::JoinSet::new();
        for i in 0..24 {
            let store = store.clone();
            work.spawn(async move {
                let u = store.for_user(&format!("user-{}", i % 4)).expect("user");
                u.create(TaskInput::titled(format!("task {i}")))
                    .await
                    .expect("create");
                u.list(&TaskQuery::default()).await.expect("list").total
            });
        }
        while let Some(r) = work.join_next().await {
            assert!(r.expect("task") >= 1);
        }
        assert!(conns.pool.size() <= 3, "{} connections", conns.pool.size());
        let cached = conns.idle().len();
        assert!((1..=3).contains(&cached), "{cached} cached");
        assert_eq!(conns.pool.num_idle(), 0, "cached connections stay leased");

        // Reads abandoned at every point of their round trip.
        let u = store.for_user("user-0").expect("user");
        for micros in (0..400).step_by(20) {
            let _ =
                tokio::time::timeout(Duration::from_micros(micros), u.list(&TaskQuery::default()))
                    .await;
        }
        for _ in 0..10 {
            let page = u.list(&TaskQuery::default()).await.expect("list");
            assert_eq!(page.total, 6);
            assert_eq!(page.tasks.len(), 6);
        }

        tokio::time::sleep(super::pg::IDLE_RETURN * 3).await;
        assert_eq!(conns.idle().len(), 0, "idle connections go back to sqlx");
        assert!(conns.pool.num_idle() >= 1);
        assert_eq!(
            u.list(&TaskQuery::default()).await.expect("list").total,
            6,
            "and are leased again"
        );
        store.close().await;
        db.cleanup().await;
    }
}

/// The fast `timestamptz` decoding agrees with sqlx's own, in binary and in text format.
#[cfg(all(test, feature = "postgres"))]
mod pg_timestamp_tests {
    use chrono::{DateTime, Utc};
    use sqlx::{Connection, Row};

    use super::BackendRow;

    #[tokio::test]
    #[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
    async fn timestamps_decode_like_sqlx() {
        let db = test_support::TestDb::postgres().await;
        let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
        let values = [
            "0001-01-01 00:00:00+00",
            "1969-12-31 23:59:59.999999+00",
            "1970-01-01 00:00:00+00",
            "1999-12-31 23:59:59.999999+00",
            "2000-01-01 00:00:00+00",
            "2000-01-01 00:00:00.000001+00",
            "2026-11-26 12:34:56.789012+05:30",
            "9999-12-31 23:59:59.999999+00",
        ];
        let mut seen = Vec::new();
        for v in values {
            // Bound parameter: the extended protocol, binary results.
            let row = sqlx::query("SELECT $1::timestamptz, NULL::timestamptz")
                .bind(v)
                .fetch_one(&mut conn)
                .await
                .expect("select");
            let fast = row.ts(0).expect("decode");
            let sqlx_way: Option<DateTime<Utc>> = row.try_get(0).expect("sqlx decode");
            assert_eq!(fast, sqlx_way, "{v}");
            assert_eq!(row.ts(1).expect("null"), None);
            // Simple query protocol: text results.
            // The values are the constants above.
            let text = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SELECT '{v}'::timestamptz")))
                .fetch_one(&mut conn)
                .await
                .expect("raw select");
            assert_eq!(text.ts(0).expect("text decode"), fast, "{v} as text");
            seen.push(fast.expect("not null"));
        }
        // The values were distinct and ordered: the decoding did not collapse them.
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        assert_eq!(
            seen[2],
            DateTime::<Utc>::from_timestamp_micros(0).expect("epoch")
        );
        conn.close().await.expect("close");
        db.cleanup().await;
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod sqlite_tests {
    use super::Pool;
    use crate::Store;

    /// Every pooled SQLite connection gets the small page cache, not SQLite's 2 MB default.
    #[tokio::test]
    async fn sqlite_connections_use_a_small_page_cache() {
        let db = test_support::TestDb::sqlite();
        let store = Store::connect(&db.url).await.expect("connect");
        let Pool::Sqlite(pool, _) = &store.pool else {
            panic!("a SQLite store");
        };
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut conn = pool.acquire().await.expect("acquire");
            let kib: i64 = sqlx::query_scalar("PRAGMA cache_size")
                .fetch_one(&mut *conn)
                .await
                .expect("pragma");
            assert_eq!(kib, -512);
            held.push(conn);
        }
        drop(held);
        store.close().await;
        db.cleanup().await;
    }
}
