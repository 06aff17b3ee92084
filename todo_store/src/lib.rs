//! A user-scoped task store on PostgreSQL or embedded SQLite.
//!
//! - **Isolation by construction**: tasks are reached only through [`Store::for_user`], and every
//!   statement starts from a builder that already carries `user_id = ?`.
//! - **One query path**: filters, search, sort and keyset paging are built once with sea-query and
//!   rendered for either backend, with the same results on both.
//! - **Rules in the domain**: every field rule is checked here, and a broken one is a typed
//!   [`StoreError::Invalid`] naming the field; nothing is half-written.
//! - **Migrations that run themselves**: [`Store::migrate`] applies the SQL files under
//!   `migrations/` with refinery, safely from several processes at once.
//! - **Recurring tasks and reminders**: a task may repeat by an RFC 5545 rule in its time zone
//!   ([`recurrence`]; completing it moves it to its next occurrence) and carry reminders
//!   ([`reminder`]), which [`Store::run_reminder_scheduler`] fires once each, across any number
//!   of instances sharing a PostgreSQL database.
//!
//! ```
//! use todo_store::{Store, TaskInput, TaskQuery};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), todo_store::StoreError> {
//! let store = Store::connect("sqlite::memory:").await?;
//! store.migrate().await?;
//!
//! let alice = store.for_user("alice")?;
//! let task = alice
//!     .create(TaskInput {
//!         tags: vec![" Home ".into()],
//!         ..TaskInput::titled("  Buy milk ")
//!     })
//!     .await?;
//! assert_eq!(task.title, "Buy milk");
//! assert_eq!(task.tags, ["home"]);
//!
//! let page = alice.list(&TaskQuery::default()).await?;
//! assert_eq!(page.total, 1);
//!
//! // Another user cannot see it.
//! let bob = store.for_user("bob")?;
//! assert!(bob.get(task.id).await.is_err());
//! # Ok(())
//! # }
//! ```

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod backend;
pub mod batch;
mod cursor;
mod error;
pub mod idem;
pub mod list;
mod migrate;
pub mod position;
pub mod query;
pub mod recurrence;
pub mod reminder;
pub mod setup;
mod signature;
pub mod sync;
pub mod task;
mod token;
mod tree;
mod view;
pub mod webhook;
mod write;

use std::str::FromStr;
use std::time::Duration;

use uuid::Uuid;

use backend::Pool;
pub use batch::{BatchError, BatchMove, BatchOp, BatchResult, TaskRef};
pub use error::{FieldError, Refusal, StoreError};
pub use idem::{Begun, IdempotencyKey, IdempotentRequest, Outcome, Responder, StoredResponse};
pub use list::{List, ListInput, ListPatch};
pub use query::{
    Dialect, Order, Page, PageMeta, ParentFilter, SortKey, Status, TaskQuery, list_statement,
};
pub use recurrence::Recurrence;
pub use reminder::{FiredReminder, Reminder, ReminderInput, ReminderKind};
pub use signature::search_signature;
pub use sync::{Change, ChangeData, ChangeType, Changes, Deleted, EntityKind, Pruned};
pub use task::{MoveTask, Patch, Priority, TagCount, Task, TaskInput, TaskPatch};
pub use view::{Tags, TaskView};
pub use webhook::{
    AttemptOutcome, CreatedWebhook, Delivery, DeliveryStatus, OutgoingEvent, Render, Webhook,
    WebhookInput, WebhookPatch, WebhookPolicy,
};

/// A pooled PostgreSQL connection idle at least this long is pinged before it is handed out.
#[cfg(feature = "postgres")]
const PING_IF_IDLE_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// The PostgreSQL pool's default size.
pub const PG_POOL_DEFAULT: u32 = 16;

/// The SQLite pool's default size. SQLite runs each query on its connection's thread, so the
/// pool is the number of queries that run at once, and each connection keeps a page cache of
/// its own (512 KiB): past the CPUs' count more connections add memory, not throughput.
/// `cargo xtask bench --only list,create,patch --backend sqlite` on 2 CPUs (BENCHMARKS.md,
/// sixth run) served as many lists and writes with 4 connections as with 16, with a peak
/// resident memory at 1,000 connections 19 MiB lower.
pub const SQLITE_POOL_DEFAULT: u32 = 4;

/// Connection settings beyond the URL.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most pooled connections; `None`: the backend's default, [`PG_POOL_DEFAULT`] on
    /// PostgreSQL and [`SQLITE_POOL_DEFAULT`] on SQLite (SQLite in-memory databases always use
    /// one).
    pub max_connections: Option<u32>,
    /// How long a request waits for a pooled connection before [`StoreError::Unavailable`].
    pub acquire_timeout: Duration,
    /// Longest a single statement may run (PostgreSQL `statement_timeout`); `None` for no limit.
    pub statement_timeout: Option<Duration>,
    /// How long SQLite waits on a locked database file before giving up.
    pub sqlite_busy_timeout: Duration,
}

impl StoreOptions {
    /// The pool size used for a database at `url`: [`Self::max_connections`], else the
    /// backend's default (at least 1).
    pub fn pool_size(&self, url: &str) -> u32 {
        let default = if url.starts_with("sqlite") {
            SQLITE_POOL_DEFAULT
        } else {
            PG_POOL_DEFAULT
        };
        self.max_connections.unwrap_or(default).max(1)
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: None,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Some(Duration::from_secs(10)),
            sqlite_busy_timeout: Duration::from_secs(5),
        }
    }
}

/// A snapshot of the connection pool's use ([`Store::pool_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Most connections the pool may open.
    pub max: u32,
    /// Connections open now.
    pub open: u32,
    /// Connections handed out now (running statements or held by a request).
    pub in_use: u32,
}

/// A handle to the task database. Cheap to clone; clones share one pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    inboxes: write::Inboxes,
    hub: std::sync::Arc<sync::Hub>,
    webhooks: Policy,
}

/// The webhook policy, shared by a store's clones and its user handles.
type Policy = std::sync::Arc<std::sync::Mutex<std::sync::Arc<webhook::WebhookPolicy>>>;

impl Store {
    /// Connects with default [`StoreOptions`]. Accepts `postgres://…` / `postgresql://…`
    /// (including `?sslmode=require`), `sqlite://path` (created if missing) and `sqlite::memory:`.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Self::connect_with(url, &StoreOptions::default()).await
    }

    /// Connects with explicit options. The connection is made lazily, so this succeeds even while
    /// a PostgreSQL server is down; the first query reports [`StoreError::Unavailable`].
    pub async fn connect_with(url: &str, opts: &StoreOptions) -> Result<Store, StoreError> {
        let scheme = url.split(':').next().unwrap_or("");
        match scheme {
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => {
                use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
                let mut o = PgConnectOptions::from_str(url)
                    .map_err(|e| StoreError::Config(format!("bad PostgreSQL URL: {e}")))?;
                if let Some(t) = opts.statement_timeout {
                    o = o.options([("statement_timeout", format!("{}ms", t.as_millis()))]);
                }
                // sqlx pings every connection as it goes back to the pool; pinging it again on
                // acquire would cost a second round trip per request. Only a connection that sat
                // idle (where the server or a proxy such as Neon's may have closed it) is pinged
                // before use, and replaced if dead.
                let pool = PgPoolOptions::new()
                    .max_connections(opts.pool_size(url))
                    .acquire_timeout(opts.acquire_timeout)
                    .test_before_acquire(false)
                    .before_acquire(|conn, meta| {
                        Box::pin(async move {
                            if meta.idle_for >= PING_IF_IDLE_FOR {
                                sqlx::Connection::ping(conn).await?;
                            }
                            Ok(true)
                        })
                    })
                    .connect_lazy_with(o);
                Ok(Self::from_pg_pool(pool))
            }
            #[cfg(feature = "sqlite")]
            "sqlite" => {
                use sqlx::sqlite::{
                    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
                };
                let memory = url.contains(":memory:") || url.contains("mode=memory");
                let o = SqliteConnectOptions::from_str(url)
                    .map_err(|e| StoreError::Config(format!("bad SQLite URL: {e}")))?
                    .create_if_missing(true)
                    .foreign_keys(true)
                    .busy_timeout(opts.sqlite_busy_timeout)
                    // SQLite's default page cache is 2 MB per connection, each a copy of pages
                    // the operating system already caches for every connection: 32 MB of the
                    // process with 16 connections. 512 KiB each keeps the hot index pages.
                    .pragma("cache_size", "-512");
                let o = if memory {
                    o
                } else {
                    o.journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal)
                };
                // A connection to a file does not go stale: sqlx's ping before each acquire
                // would only add a round trip to the connection's thread to every request,
                // and to every write while it holds the write lock.
                let mut po = SqlitePoolOptions::new()
                    .acquire_timeout(opts.acquire_timeout)
                    .test_before_acquire(false);
                if memory {
                    // Each connection to ":memory:" is its own database: keep exactly one.
                    po = po
                        .max_connections(1)
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None);
                } else {
                    po = po.max_connections(opts.pool_size(url));
                }
                // Two processes opening a new file at once can both try to switch it to WAL;
                // SQLite answers that race with an immediate SQLITE_BUSY, so retry within the
                // busy timeout.
                let started = std::time::Instant::now();
                let pool = loop {
                    match po.clone().connect_with(o.clone()).await {
                        Err(sqlx::Error::Database(e))
                            if e.code().as_deref() == Some("5")
                                && started.elapsed() < opts.sqlite_busy_timeout =>
                        {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        other => break other?,
                    }
                };
                Ok(Self::from_sqlite_pool(pool))
            }
            _ => Err(StoreError::Config(format!(
                "unsupported database URL scheme {scheme:?} (expected {})",
                SUPPORTED_SCHEMES
            ))),
        }
    }

    /// Uses a PostgreSQL pool the host application already has. The store leases connections
    /// from it and keeps each between its own requests (sparing sqlx's check of every returned
    /// connection, a round trip), at most the pool's size at once; a connection idle for a
    /// second goes back to the pool, where the host's other users get it.
    #[cfg(feature = "postgres")]
    pub fn from_pg_pool(pool: sqlx::PgPool) -> Store {
        let hub = sync::Hub::for_postgres(&pool);
        Store {
            pool: Pool::Postgres(backend::pg::Conns::new(pool)),
            inboxes: Default::default(),
            hub,
            webhooks: Default::default(),
        }
    }

    /// Uses a SQLite pool the host application already has. Writes through this store are
    /// serialised in-process and start with `BEGIN IMMEDIATE`.
    #[cfg(feature = "sqlite")]
    pub fn from_sqlite_pool(pool: sqlx::SqlitePool) -> Store {
        let hub = sync::Hub::for_sqlite_file(pool.connect_options().get_filename());
        Store {
            pool: Pool::Sqlite(pool, Default::default()),
            inboxes: Default::default(),
            hub,
            webhooks: Default::default(),
        }
    }

    /// Applies pending schema migrations; returns the names of those applied now (empty when
    /// the schema is current). Safe to call from several processes at once.
    ///
    /// It then computes the search signature (see [`search_signature`]) of tasks that have none
    /// yet: every existing task the first time it runs after upgrading to schema V3, else none
    /// (an index lists them, so the check costs nothing).
    pub async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        let applied = migrate::run(&self.pool, None).await?;
        migrate::fill_signatures(&self.pool).await?;
        Ok(applied)
    }

    /// Applies pending migrations up to schema version `version` only (for upgrade tests and
    /// staged rollouts); returns the names of those applied now. [`Store::migrate`] then
    /// applies the rest.
    pub async fn migrate_to(&self, version: u32) -> Result<Vec<String>, StoreError> {
        migrate::run(&self.pool, Some(version)).await
    }

    /// The SQL dialect of this store's database.
    pub fn dialect(&self) -> Dialect {
        self.pool.dialect()
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.pool.ping().await
    }

    /// The connection pool's use right now (for metrics).
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Closes the pool, waiting for checked-out connections to come back (and stops the
    /// change listener of [`UserTasks::subscribe`]).
    pub async fn close(&self) {
        self.hub.close().await;
        self.pool.close().await
    }

    /// Live [`UserTasks::subscribe`] streams of this store (for metrics): a stream counts
    /// until it is dropped. (SQLite stores of one process on one file share their wake-ups,
    /// and so this count.)
    pub fn subscribers(&self) -> usize {
        self.hub.live()
    }

    /// Live [`UserTasks::subscribe`] streams of one user on this store (for a per-user cap).
    pub fn subscribers_of(&self, user_id: &str) -> usize {
        self.hub.live_for(user_id)
    }

    /// Removes tombstones older than `tombstone_age` (raising each user's watermark, so older
    /// sync tokens answer [`StoreError::Gone`]) and idempotency records older than
    /// `idempotency_age` (at least [`sync::IDEMPOTENCY_KEEP`] is kept whatever is asked).
    pub async fn prune(
        &self,
        tombstone_age: Duration,
        idempotency_age: Duration,
    ) -> Result<Pruned, StoreError> {
        let now = task::now_ms();
        let ago = |d: Duration| {
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_sub_signed(d))
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
        };
        sync::prune(
            &self.pool,
            ago(tombstone_age),
            ago(idempotency_age.max(sync::IDEMPOTENCY_KEEP)),
        )
        .await
    }

    /// Runs [`Store::prune`] every `every`, keeping tombstones `tombstone_days` days
    /// (`TODO_TOMBSTONE_DAYS`, default [`sync::TOMBSTONE_DAYS_DEFAULT`]) and idempotency
    /// records 24 hours; never returns. A host spawns it (and aborts it on shutdown); a failed
    /// run is logged and retried at the next tick.
    pub async fn run_pruning(self, every: Duration, tombstone_days: u32) {
        let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let age = Duration::from_secs(u64::from(tombstone_days) * 86_400);
            match self.prune(age, sync::IDEMPOTENCY_KEEP).await {
                Ok(p) => tracing::debug!(?p, "pruned"),
                Err(e) => tracing::warn!(error = %e, "pruning failed"),
            }
        }
    }

    /// The tasks of one user: the only way to reach tasks. Fails with
    /// [`StoreError::Invalid`] (field `user_id`) when the id breaks the user id rule.
    pub fn for_user(&self, user_id: &str) -> Result<UserTasks, StoreError> {
        task::validate_user_id(user_id)?;
        Ok(UserTasks {
            pool: self.pool.clone(),
            user_id: user_id.to_owned(),
            inboxes: self.inboxes.clone(),
            hub: self.hub.clone(),
            webhooks: self.webhooks.clone(),
            idem: None,
        })
    }
}

#[cfg(all(feature = "postgres", feature = "sqlite"))]
const SUPPORTED_SCHEMES: &str = "postgres://, postgresql:// or sqlite:";
#[cfg(all(feature = "postgres", not(feature = "sqlite")))]
const SUPPORTED_SCHEMES: &str = "postgres:// or postgresql://";
#[cfg(all(not(feature = "postgres"), feature = "sqlite"))]
const SUPPORTED_SCHEMES: &str = "sqlite:";

/// Replaces the password of a database URL with `****`, for logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:****")
            } else {
                user.to_owned()
            };
            let tail = redact_query_password(tail);
            format!("{scheme}://{masked}@{host}{tail}")
        }
        None => format!("{scheme}://{authority}{}", redact_query_password(tail)),
    }
}

fn redact_query_password(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=****"),
            _ => kv.to_owned(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

/// Optimistic attempts of a PostgreSQL write (see `UserTasks::write`) before it takes the row
/// lock instead.
const OPTIMISTIC_TRIES: u32 = 3;

/// The task read for a write, if it exists and (when one is expected) is at the expected
/// version.
fn at_version(read: Option<Task>, expected: Option<i64>) -> Result<Task, StoreError> {
    let t = read.ok_or(StoreError::NotFound)?;
    match expected {
        Some(v) if v != t.version => Err(StoreError::Conflict { current: t.version }),
        _ => Ok(t),
    }
}

/// One user's tasks. Obtained from [`Store::for_user`]; every operation is confined to this user.
///
/// Writes take an optional expected version (`If-Match`): when it differs from the stored one the
/// write fails with [`StoreError::Conflict`] and changes nothing. Without it the write applies.
/// Every successful write adds 1 to `version` and moves `updated_at` strictly forward.
#[derive(Debug, Clone)]
pub struct UserTasks {
    pool: Pool,
    user_id: String,
    inboxes: write::Inboxes,
    hub: std::sync::Arc<sync::Hub>,
    webhooks: Policy,
    /// The idempotency completion of [`UserTasks::with_idempotency`].
    idem: Option<std::sync::Arc<idem::Slot>>,
}

impl UserTasks {
    /// The user these tasks belong to.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    fn scope(&self) -> query::Scope<'_> {
        query::Scope::new(&self.user_id, self.pool.dialect())
    }

    /// Creates a task (version 1) after validating and normalising the input, last among its
    /// siblings. Its list is `input.list_id`, else its parent's, else the inbox; a list or
    /// parent that is not this user's is a field error (`list_id`, `parent_id`), as are a
    /// `list_id` other than the parent's list and nesting deeper than [`task::DEPTH_MAX`].
    pub async fn create(&self, input: TaskInput) -> Result<Task, StoreError> {
        let (t, list_id, parent_id) = self.new_task(input)?;
        // Boxed: placing, logging and arming reminders make a future over 4 KiB, which would
        // otherwise sit inline in every waiting request's future.
        Box::pin(self.create_placed(t, list_id, parent_id)).await
    }

    /// A new task from validated input (not placed yet), and the list and parent asked for.
    pub(crate) fn new_task(
        &self,
        mut input: TaskInput,
    ) -> Result<(Task, Option<Uuid>, Option<Uuid>), StoreError> {
        let (list_id, parent_id) = (input.list_id.take(), input.parent_id.take());
        let (content, completed) = input.validate()?;
        let now = task::now_ms();
        let mut t = Task {
            id: Uuid::now_v7(),
            user_id: self.user_id.clone(),
            title: String::new(),
            description: None,
            completed: false,
            completed_at: None,
            priority: Priority::Medium,
            tags: Vec::new(),
            due_at: None,
            created_at: now,
            updated_at: now,
            version: 1,
            list_id: Uuid::nil(),
            parent_id: None,
            position: String::new(),
            recurrence: None,
            recurrence_start: None,
            last_completed_at: None,
            reminders: Vec::new(),
        };
        t.apply_content(content);
        t.set_completed(completed.unwrap_or(false), now);
        t.settle(None, now)?;
        Ok((t, list_id, parent_id))
    }

    /// One task; [`StoreError::NotFound`] when it does not exist for this user.
    pub async fn get(&self, id: Uuid) -> Result<Task, StoreError> {
        self.pool
            .fetch_task(&self.scope().get(id))
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// One page of the user's tasks. See [`TaskQuery`].
    pub async fn list(&self, query: &TaskQuery) -> Result<Page, StoreError> {
        let mut tasks = Vec::with_capacity(query.limit.min(query::LIMIT_MAX) as usize);
        let meta = self.list_each(query, |t| tasks.push(t.to_task())).await?;
        Ok(Page {
            tasks,
            limit: meta.limit,
            next_cursor: meta.next_cursor,
            total: meta.total,
        })
    }

    /// [`list`](Self::list) without copying the page: `each` sees the page's tasks in order,
    /// borrowed from the rows as the database sent them, and the page's metadata is returned
    /// once all have been seen. On an error, `each` may have seen part of the page.
    pub async fn list_each<F>(&self, query: &TaskQuery, mut each: F) -> Result<PageMeta, StoreError>
    where
        F: FnMut(&TaskView<'_>),
    {
        let q = query.validate()?;
        let scope = self.scope();
        let limit = q.limit as usize;
        let mut next_cursor = None;
        let total = self
            .pool
            .fetch_each(&scope.page(&q), |i, rows, t| {
                if i < limit {
                    each(t);
                }
                // The statement asks for one row past the page: when it came, the page's last
                // task is where the next one starts.
                if i + 1 == limit && rows > limit {
                    next_cursor = Some(
                        cursor::Cursor {
                            sort: q.sort,
                            order: q.order,
                            key: q.sort.key_of(t),
                            id: t.id,
                        }
                        .encode(),
                    );
                }
            })
            .await?;
        let total = match (total, &q.cursor) {
            (Some(t), _) => t,
            // An empty first page: nothing matches.
            (None, None) => 0,
            // An empty page past the end carries no count column: ask for it.
            (None, Some(_)) => self.pool.fetch_i64(&scope.count(&q)).await?,
        };
        Ok(PageMeta {
            limit: q.limit,
            next_cursor,
            total,
        })
    }

    /// Replaces a task's content. Absent optional fields are cleared or reset to their
    /// defaults; completion changes only when `input.completed` is given.
    pub async fn replace(
        &self,
        id: Uuid,
        input: TaskInput,
        expected_version: Option<i64>,
    ) -> Result<Task, StoreError> {
        let (content, completed) = input.validate()?;
        self.write(id, expected_version, completed.is_some(), move |t, now| {
            t.apply_content(content.clone());
            if let Some(c) = completed {
                t.set_completed(c, now);
            }
        })
        .await
    }

    /// Applies a merge patch.
    pub async fn patch(
        &self,
        id: Uuid,
        patch: TaskPatch,
        expected_version: Option<i64>,
    ) -> Result<Task, StoreError> {
        let named = patch.completed.is_some();
        let patch = patch.validate()?;
        self.write(id, expected_version, named, move |t, now| {
            patch.clone().apply(t, now)
        })
        .await
    }

    /// Sets completion to `completed`, or toggles it when `None`.
    pub async fn set_completed(
        &self,
        id: Uuid,
        completed: Option<bool>,
        expected_version: Option<i64>,
    ) -> Result<Task, StoreError> {
        self.write(id, expected_version, true, move |t, now| {
            let c = completed.unwrap_or(!t.completed);
            t.set_completed(c, now);
        })
        .await
    }

    /// Deletes a task, its tags and its whole subtree, in one transaction with their
    /// tombstones.
    pub async fn delete(&self, id: Uuid, expected_version: Option<i64>) -> Result<(), StoreError> {
        self.retrying(|| self.delete_once(id, expected_version))
            .await
    }

    /// One run of a delete's transaction.
    async fn delete_once(&self, id: Uuid, expected_version: Option<i64>) -> Result<(), StoreError> {
        let mut touched = write::Touched::default();
        let mut writer = self.pool.writer().await?;
        let mut tx = writer.begin().await?;
        self.delete_in(&mut tx, &mut touched, id, expected_version)
            .await?;
        self.respond(&mut touched, idem::Outcome::Deleted);
        touched.commit(self, tx).await?;
        writer.done();
        Ok(())
    }

    /// Tags in use with their task counts, most used first, then by name.
    pub async fn tags(&self) -> Result<Vec<TagCount>, StoreError> {
        self.pool.fetch_tag_counts(&self.scope().tag_counts()).await
    }

    /// Read-modify-write of one task. On PostgreSQL a write that leaves the tags alone (most
    /// patches, every toggle) is optimistic: the task is read, changed, and written back `WHERE
    /// version = <the version read>` in one statement that also takes the user's next seq and
    /// writes the change-log record when (and only when) the row was written: two statements
    /// and no transaction (two round trips instead of five); when another write came between,
    /// it reads again, and after
    /// [`OPTIMISTIC_TRIES`] such losses it queues for the row lock like every other write.
    /// Otherwise the write runs inside a transaction holding the row lock: the check of the
    /// expected version, the change, the version bump and the tag rows commit together.
    ///
    /// A write that names completion (`cascade`) also completes the task's open descendants
    /// when it leaves the task completed, and reopens its completed ancestors when it leaves
    /// it open, in the same transaction; PostgreSQL's optimistic path is taken only when
    /// neither can apply (no subtasks, or no parent).
    ///
    /// Every write then goes through [`Task::settle`]: a recurring task that the write
    /// completes advances to its next occurrence instead, and its completed descendants are
    /// reopened (version +1 each). A write that changes the reminders, or the due date of a
    /// task with `before_due` reminders, rewrites its reminder rows in the same transaction.
    async fn write(
        &self,
        id: Uuid,
        expected_version: Option<i64>,
        cascade: bool,
        change: impl Fn(&mut Task, chrono::DateTime<chrono::Utc>),
    ) -> Result<Task, StoreError> {
        let scope = self.scope();
        if self.pool.dialect() == Dialect::Postgres && self.idem.is_none() {
            for _ in 0..OPTIMISTIC_TRIES {
                let (read, has_children) = if cascade {
                    let row: Option<backend::TaskKids> = self
                        .pool
                        .fetch_all_as(&scope.get_with_children(id))
                        .await?
                        .into_iter()
                        .next();
                    match row {
                        Some(backend::TaskKids(t, k)) => (Some(t), k),
                        None => (None, false),
                    }
                } else {
                    (self.pool.fetch_task(&scope.get(id)).await?, false)
                };
                let mut t = at_version(read, expected_version)?;
                let read = t.version;
                let (old_tags, was_completed) = (t.tags.clone(), t.completed);
                let before = t.schedule();
                let now = task::now_ms();
                change(&mut t, now);
                let advanced = t.settle(Some(&before), now)?;
                let cascades = cascade
                    && if advanced || t.completed {
                        has_children
                    } else {
                        t.parent_id.is_some()
                    };
                if t.tags != old_tags || cascades || reminder::rows_change(&before, &t) {
                    break;
                }
                t.bump(now);
                // The update and its change-log record in one statement: the log's seq is
                // taken only when the update applied.
                let mut touched = write::Touched::default();
                touched.task(id);
                if t.completed != was_completed {
                    touched.lists.push(t.list_id);
                }
                let records = touched.records();
                let stmt = sync::pg_write_and_log(
                    &scope.update_at(&t, read),
                    |_| String::new(),
                    None,
                    &self.user_id,
                    now,
                    &records,
                );
                let applied: Vec<backend::Int> = match self.pool.fetch_all_as(&stmt).await {
                    Err(e) if webhook::is_guard_refusal(&e) => break,
                    other => other?,
                };
                if let Some(&backend::Int(seq)) = applied.first() {
                    self.hub.committed(&self.user_id, seq, || {
                        Some(sync::Commit::new(seq, &records, std::slice::from_ref(&t)))
                    });
                    return Ok(t);
                }
            }
        }
        self.retrying(|| self.write_once(id, expected_version, cascade, &change))
            .await
    }

    /// One run of a write's transaction (see [`Self::write_in`]).
    async fn write_once(
        &self,
        id: Uuid,
        expected_version: Option<i64>,
        cascade: bool,
        change: impl FnOnce(&mut Task, chrono::DateTime<chrono::Utc>),
    ) -> Result<Task, StoreError> {
        let mut touched = write::Touched::single();
        let mut writer = self.pool.writer().await?;
        let mut tx = writer.begin().await?;
        let t = self
            .write_in(&mut tx, &mut touched, id, expected_version, cascade, change)
            .await?;
        self.respond(&mut touched, idem::Outcome::Task(&t));
        touched
            .commit_with(self, tx, std::slice::from_ref(&t))
            .await?;
        writer.done();
        Ok(t)
    }

    /// The transaction part of [`Self::write`]: the row lock, the expected version, the
    /// change, the version bump, the tag rows and the completion cascade.
    pub(crate) async fn write_in(
        &self,
        tx: &mut backend::Tx<'_>,
        touched: &mut write::Touched,
        id: Uuid,
        expected_version: Option<i64>,
        cascade: bool,
        change: impl FnOnce(&mut Task, chrono::DateTime<chrono::Utc>),
    ) -> Result<Task, StoreError> {
        let scope = self.scope();
        let mut t = at_version(
            tx.fetch_task(&scope.get_for_update(id)).await?,
            expected_version,
        )?;
        let (old_tags, was_completed) = (t.tags.clone(), t.completed);
        let before = t.schedule();
        let now = task::now_ms();
        change(&mut t, now);
        let advanced = t.settle(Some(&before), now)?;
        t.bump(now);
        // The statements below may be held back to the log's exchange (SQLite) when nothing
        // after them reads: no reminder rows to rewrite and no cascade to run.
        let rows_change = reminder::rows_change(&before, &t);
        let cascades = cascade && (advanced || t.completed || t.parent_id.is_some());
        let last = !rows_change && !cascades;
        let d = self.pool.dialect();
        touched.send(tx, d, &scope.update(&t), last).await?;
        touched.task(id);
        if t.completed != was_completed {
            touched.lists.push(t.list_id);
        }
        if t.tags != old_tags {
            touched.send(tx, d, &scope.delete_tags(id), last).await?;
            if !t.tags.is_empty() {
                touched
                    .send(tx, d, &scope.insert_tags(id, &t.tags), last)
                    .await?;
            }
        }
        if rows_change {
            self.write_reminder_rows(tx, &t, now).await?;
        }
        if cascade {
            let ids: Vec<backend::Id> = if advanced {
                tx.fetch_all_as(&scope.reopen_descendants(id, now)).await?
            } else if t.completed {
                tx.fetch_all_as(&scope.complete_descendants(id, now))
                    .await?
            } else if t.parent_id.is_some() {
                tx.fetch_all_as(&scope.reopen_ancestors(id, now)).await?
            } else {
                Vec::new()
            };
            if !ids.is_empty() {
                // Cascades stay in the task's list.
                touched.lists.push(t.list_id);
            }
            ids.into_iter().for_each(|i| touched.task(i.0));
        }
        Ok(t)
    }

    /// The transaction part of [`Self::delete`].
    pub(crate) async fn delete_in(
        &self,
        tx: &mut backend::Tx<'_>,
        touched: &mut write::Touched,
        id: Uuid,
        expected_version: Option<i64>,
    ) -> Result<(), StoreError> {
        let scope = self.scope();
        // The tree lock first: a move into the subtree either commits before the delete's
        // walk starts (and its task is deleted with the subtree) or waits and finds its new
        // parent gone; without it, the walk could miss a task moved in meanwhile and leave
        // it under a deleted parent.
        self.lock_tree(tx, &[id], &[]).await?;
        let deleted: Vec<backend::IdId> = tx
            .fetch_all_as(&scope.delete_subtree(id, expected_version))
            .await?;
        if let Some(first) = deleted.first() {
            touched.deleted_tasks.extend(deleted.iter().map(|d| d.0));
            // Its list's open count may change.
            touched.lists.push(first.1);
            return Ok(());
        }
        if expected_version.is_none() {
            return Err(StoreError::NotFound);
        }
        // Nothing deleted at that version: tell "gone" from "changed".
        let current: Option<backend::Int> = tx.fetch_one_as(&scope.version_of(id)).await?;
        match current {
            Some(c) => Err(StoreError::Conflict { current: c.0 }),
            None => Err(StoreError::NotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://me:s3cret@db.example:5432/app?sslmode=require"),
            "postgres://me:****@db.example:5432/app?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://db/app?user=me&password=s3cret"),
            "postgres://db/app?user=me&password=****"
        );
        assert_eq!(redact_url("sqlite://todo.db"), "sqlite://todo.db");
        assert_eq!(redact_url("postgres://me@h/db"), "postgres://me@h/db");
    }

    #[tokio::test]
    async fn pool_size_defaults_per_backend() {
        let opts = super::StoreOptions::default();
        assert_eq!(opts.pool_size("postgres://h/db"), super::PG_POOL_DEFAULT);
        assert_eq!(
            opts.pool_size("sqlite://todo.db"),
            super::SQLITE_POOL_DEFAULT
        );
        let set = |n| super::StoreOptions {
            max_connections: Some(n),
            ..super::StoreOptions::default()
        };
        assert_eq!(set(7).pool_size("sqlite://todo.db"), 7);
        assert_eq!(set(0).pool_size("postgres://h/db"), 1);
        // The pool a SQLite file store opens is that size.
        let dir = std::env::temp_dir().join(format!("pool-size-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let url = format!("sqlite://{}", dir.join("t.db").display());
        let store = super::Store::connect(&url).await.expect("store");
        assert_eq!(store.pool_stats().max, super::SQLITE_POOL_DEFAULT);
        store.close().await;
        let store = super::Store::connect_with(&url, &set(3))
            .await
            .expect("store");
        assert_eq!(store.pool_stats().max, 3);
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Store futures stay small. A caller's future holds them inline, and each layer above (the
/// handler, the middleware, the server's boxing) moves them whole: sqlx's connection-acquire
/// future alone is about 14 KiB, and left inline it made every request copy that several
/// times (a tenth of the server's instructions). It is boxed where it is created.
#[cfg(all(test, feature = "postgres", feature = "sqlite"))]
mod future_size_tests {
    use std::mem::size_of_val;

    use uuid::Uuid;

    #[tokio::test]
    async fn store_futures_stay_small() {
        let store = crate::Store::connect("sqlite::memory:")
            .await
            .expect("store");
        let u = store.for_user("a").expect("user");
        let q = crate::TaskQuery::default();
        let sizes = [
            ("list", size_of_val(&u.list(&q))),
            ("list_each", size_of_val(&u.list_each(&q, |_| {}))),
            ("get", size_of_val(&u.get(Uuid::nil()))),
            ("create", size_of_val(&u.create(Default::default()))),
            (
                "patch",
                size_of_val(&u.patch(Uuid::nil(), Default::default(), None)),
            ),
            ("delete", size_of_val(&u.delete(Uuid::nil(), None))),
            ("tags", size_of_val(&u.tags())),
        ];
        eprintln!("{sizes:?}");
        for (name, size) in sizes {
            assert!(size <= 4096, "{name}: {size} bytes");
        }
    }

    /// Write futures are `Send` (a server spawns them on a multi-threaded runtime), including
    /// those that run their transaction again after a deadlock.
    #[tokio::test]
    async fn write_futures_are_send() {
        fn send<T: Send>(_: T) {}
        let store = crate::Store::connect("sqlite::memory:")
            .await
            .expect("store");
        let u = store.for_user("a").expect("user");
        let id = Uuid::nil();
        send(u.create(Default::default()));
        send(u.replace(id, Default::default(), None));
        send(u.patch(id, Default::default(), None));
        send(u.set_completed(id, None, None));
        send(u.delete(id, None));
        send(u.move_task(id, Default::default(), None));
        send(u.batch(Vec::new()));
        send(u.create_list(crate::ListInput::named("l")));
        send(u.update_list(id, Default::default(), None));
        send(u.move_list(id, None, None));
        send(u.delete_list(id, false, None));
    }
}

/// The README's code blocks, compiled and run as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
