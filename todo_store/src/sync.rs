//! The change log and its readers: `changes(since)` and `subscribe(since)`, and pruning.
//!
//! Every write appends to the log inside its own transaction, just before it commits (see
//! `write::Touched::commit`): it takes the user's next seq from `user_state` (the row
//! lock orders one user's commits) and upserts one `changes` row per record it touched, so
//! each record has one row holding its latest seq. A reader at position `p` reads the rows with
//! a seq above `p`, in seq order, and the records' current state.
//!
//! Reminder firings are records too (kind `reminder`, one row per reminder at the seq of its
//! latest firing, appended by the transaction that marks it fired): `subscribe` reads them as
//! `reminder.fired` events; `changes` leaves them out in its SQL, so its pages and `has_more`
//! count tasks, lists and deletions only.
//!
//! Wake-ups for live readers: after a commit the writing process wakes its own subscribers of
//! that user; on PostgreSQL it also queues `'<user>:<seq>'` for the store's announcer, which
//! sends what has queued as `NOTIFY todo_changes` in one statement of its own connection,
//! delivered to every instance's listener (one `PgListener` per store, started by the first
//! subscriber), which wakes its subscribers, unless they were already woken for that seq or a
//! later one (an instance hears its own announcements too). A woken subscriber reads the log
//! from its own position; it never trusts a notification's payload, so a lost or duplicate
//! wake-up costs nothing but a read, and one lost with a crash between a commit and its
//! announcement is made up by the subscribers' re-read of the log every 15 s. The one thing it
//! takes without reading is a commit of its own process right after its position, handed over
//! in memory with the wake-up (`Commit`): the records the write appended, in log order, and
//! the tasks as the write returned them; it reads the rest by id. With one stream per user and
//! writes spread over instances, that spares the log read (and for a patch every read) of the
//! events written through the stream's own instance.
//!
//! The announcement is not sent by the write's own transaction because PostgreSQL serialises
//! the commits of notifying transactions (a database-wide lock held from before the commit
//! record until after its flush): with `pg_notify` in every write, 32 writers of one-row
//! updates ran at about 600 commits/s instead of 10,000 (pgbench on the 2-CPU machine of
//! BENCHMARKS.md).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_query::{Value, Values};
use sea_query_sqlx::{SqlxBinder, SqlxValues};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

use crate::backend::{FiredRow, IntPair, LogRow, Pool, Tx};
use crate::error::StoreError;
use crate::list::List;
use crate::query::Dialect;
use crate::task::Task;
use crate::token::{Pos, Token};
use crate::{UserTasks, task};

/// Largest page of [`UserTasks::changes`].
pub const CHANGES_LIMIT_MAX: u32 = 1000;
/// Page size of [`UserTasks::changes`] when none is given.
pub const CHANGES_LIMIT_DEFAULT: u32 = 500;
/// The PostgreSQL channel of wake-ups.
pub const CHANNEL: &str = "todo_changes";
/// Log records written per statement (4 values each).
const LOG_CHUNK: usize = 500;
/// Records a subscriber reads from the log at a time.
const SUBSCRIBE_BATCH: u32 = 200;
/// A live subscriber re-reads the log at least this often, whatever the wake-ups say.
const SUBSCRIBE_FALLBACK: Duration = Duration::from_secs(15);

/// What a log record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntityKind {
    /// A list.
    List,
    /// A task.
    Task,
    /// A reminder's firing (an event of the stream; `changes` leaves it out).
    Reminder,
}

impl EntityKind {
    /// The wire name: `list`, `task` or `reminder`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::List => "list",
            EntityKind::Task => "task",
            EntityKind::Reminder => "reminder",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            EntityKind::List => 0,
            EntityKind::Task => 1,
            EntityKind::Reminder => 2,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(EntityKind::List),
            1 => Some(EntityKind::Task),
            2 => Some(EntityKind::Reminder),
            _ => None,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "list" => Some(EntityKind::List),
            "task" => Some(EntityKind::Task),
            "reminder" => Some(EntityKind::Reminder),
            _ => None,
        }
    }
}

/// A deleted record, as [`UserTasks::changes`] reports it (a tombstone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// Task or list.
    pub kind: EntityKind,
    /// Its id.
    pub id: Uuid,
    /// When it was deleted.
    pub deleted_at: DateTime<Utc>,
}

/// One page of [`UserTasks::changes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Tasks created or changed, in their latest state.
    pub tasks: Vec<Task>,
    /// Lists created or changed, in their latest state.
    pub lists: Vec<List>,
    /// Records deleted.
    pub deleted: Vec<Deleted>,
    /// The token to pass as `since` next: for the next page while `has_more`, else for the
    /// next sync.
    pub next: String,
    /// Whether another page follows right away.
    pub has_more: bool,
}

/// The type of a [`Change`], as the event stream names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeType {
    /// `task.created`
    TaskCreated,
    /// `task.updated`
    TaskUpdated,
    /// `task.deleted`
    TaskDeleted,
    /// `list.created`
    ListCreated,
    /// `list.updated`
    ListUpdated,
    /// `list.deleted`
    ListDeleted,
    /// `reminder.fired`
    ReminderFired,
}

impl ChangeType {
    /// The event name (`task.created`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::TaskCreated => "task.created",
            ChangeType::TaskUpdated => "task.updated",
            ChangeType::TaskDeleted => "task.deleted",
            ChangeType::ListCreated => "list.created",
            ChangeType::ListUpdated => "list.updated",
            ChangeType::ListDeleted => "list.deleted",
            ChangeType::ReminderFired => "reminder.fired",
        }
    }
}

/// What a [`Change`] carries (and a webhook delivery's snapshot of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeData {
    /// A task in its state when the change was read.
    Task(Task),
    /// A list in its state when the change was read.
    List(List),
    /// The id of a deleted task or list.
    Deleted(Uuid),
    /// A reminder that fired: its task, the reminder, and the time it fired for.
    Reminder {
        /// The reminder's task.
        task: Task,
        /// The reminder.
        reminder: crate::reminder::Reminder,
        /// The time the reminder was due (its `at`, or `due_at` minus `before_due`).
        scheduled_for: DateTime<Utc>,
    },
}

impl ChangeData {
    /// The firing of reminder `id` from its reminder row (`fired`: task id and the time it
    /// fired for, by reminder id) and the tasks read with it; `None` when the task or the
    /// reminder is gone.
    pub(crate) fn fired(
        id: Uuid,
        fired: &HashMap<Uuid, (Uuid, DateTime<Utc>)>,
        tasks: &HashMap<Uuid, Task>,
    ) -> Option<Self> {
        let (task_id, at) = fired.get(&id)?;
        let task = tasks.get(task_id)?;
        let reminder = *task.reminders.iter().find(|x| x.id == id)?;
        Some(ChangeData::Reminder {
            task: task.clone(),
            reminder,
            scheduled_for: *at,
        })
    }
}

/// One change of a user's data, as [`UserTasks::subscribe`] streams it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The position right after this change: an event id, valid as `since` for
    /// [`UserTasks::changes`] and [`UserTasks::subscribe`].
    pub id: String,
    /// Created, updated or deleted, task or list. `*.created` when the record was created
    /// after the reader's position, else `*.updated`.
    pub kind: ChangeType,
    /// The record, or the deleted id.
    pub data: ChangeData,
}

/// One record a write touched, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    pub kind: EntityKind,
    pub id: Uuid,
    pub created: bool,
    pub deleted: bool,
}

/// Folds what a write touched into one record per `(kind, id)`, in key order: a record both
/// written and deleted is deleted; one created and then written is created.
pub(crate) fn fold_records(
    tasks: &[Uuid],
    deleted_tasks: &[Uuid],
    lists: &[Uuid],
    deleted_lists: &[Uuid],
    created: &[Uuid],
) -> Vec<Record> {
    let mut map: BTreeMap<(EntityKind, Uuid), (bool, bool)> = BTreeMap::new();
    for (kind, ids, deleted) in [
        (EntityKind::Task, tasks, false),
        (EntityKind::Task, deleted_tasks, true),
        (EntityKind::List, lists, false),
        (EntityKind::List, deleted_lists, true),
    ] {
        for id in ids {
            let e = map.entry((kind, *id)).or_insert((false, false));
            e.1 |= deleted;
        }
    }
    for id in created {
        for kind in [EntityKind::Task, EntityKind::List] {
            if let Some(e) = map.get_mut(&(kind, *id)) {
                e.0 = true;
            }
        }
    }
    map.into_iter()
        .map(|((kind, id), (created, deleted))| Record {
            kind,
            id,
            created,
            deleted,
        })
        .collect()
}

// ---- SQL text with numbered placeholders ---------------------------------------------------

/// A statement written as SQL text for one dialect, with its values, bound by number (`$n`,
/// which sqlx understands on SQLite too). The log's statements are written this way: they
/// wrap another statement in CTEs or use upserts and `VALUES` lists in a form sea-query does
/// not build. Every one of them binds the user id of its scope.
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    text: String,
    values: Vec<Value>,
}

impl Sql {
    pub(crate) fn new() -> Self {
        Sql {
            text: String::new(),
            values: Vec::new(),
        }
    }

    /// Starts with a PostgreSQL statement built by sea-query (its values become `$1`…).
    fn starting_with<S: SqlxBinder>(prefix: &str, stmt: &S, suffix: &str) -> Self {
        let (text, values) = stmt.build_sqlx(sea_query::PostgresQueryBuilder);
        Sql {
            text: format!("{prefix}{text}{suffix}"),
            values: values.0.0,
        }
    }

    pub(crate) fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    /// Appends a statement built by sea-query as SQLite text (positional `?` placeholders)
    /// followed by `;`, with its values. sqlx binds positional placeholders in the order of
    /// the values, statement after statement, and `$n` by number, so every such statement
    /// must come before the first [`bind`](Self::bind).
    pub(crate) fn push_sqlite<S: SqlxBinder>(&mut self, stmt: &S) {
        debug_assert!(
            !self.text.contains('$'),
            "positional statements go before numbered placeholders"
        );
        let (text, values) = stmt.build_sqlx(sea_query::SqliteQueryBuilder);
        self.text.push_str(&text);
        self.text.push_str("; ");
        self.values.extend(values.0.0);
    }

    /// Binds a value; returns its placeholder.
    pub(crate) fn bind(&mut self, v: impl Into<Value>) -> String {
        self.values.push(v.into());
        format!("${}", self.values.len())
    }
}

impl SqlxBinder for Sql {
    fn build_sqlx<T: sea_query::QueryBuilder>(&self, _: T) -> (String, SqlxValues) {
        (self.text.clone(), SqlxValues(Values(self.values.clone())))
    }
}

/// Binds `records` as `(kind, entity_id, created, op)` rows of a `VALUES` list.
fn values_list(sql: &mut Sql, records: &[Record]) -> String {
    let mut out = String::new();
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let k = sql.bind(r.kind.as_str());
        let id = sql.bind(r.id);
        let c = sql.bind(r.created);
        let op = sql.bind(if r.deleted { "delete" } else { "upsert" });
        out.push_str(&format!("({k}, {id}, {c}, {op})"));
    }
    out
}

const UPSERT_CHANGE: &str = " ON CONFLICT (user_id, kind, entity_id) DO UPDATE SET \
     seq = excluded.seq, op = excluded.op, at = excluded.at";

/// PostgreSQL: appends the log CTEs and the final select to a statement that already starts
/// `WITH <gate> AS (… RETURNING id)` (or to nothing, `gate` `None`): the user's next seq (only
/// when the gate returned a row) and the records at that seq. The statement returns the seq,
/// or no row when the gate returned none.
fn pg_log_tail(
    sql: &mut Sql,
    user_id: &str,
    now: DateTime<Utc>,
    records: &[Record],
    gate: Option<&str>,
) {
    let u = sql.bind(user_id);
    sql.push(if gate.is_some() { ", " } else { "WITH " });
    sql.push(&format!(
        "s AS (INSERT INTO user_state (user_id, seq) SELECT {u}, 1 {from} \
         ON CONFLICT (user_id) DO UPDATE SET seq = user_state.seq + 1 RETURNING seq)",
        from = gate.map(|g| format!("FROM {g}")).unwrap_or_default(),
    ));
    if !records.is_empty() {
        let at = sql.bind(Dialect::Postgres.ts(now));
        let values = values_list(sql, records);
        sql.push(&format!(
            ", c AS (INSERT INTO changes (user_id, kind, entity_id, seq, created_seq, op, at) \
             SELECT {u}, v.kind, v.entity_id, s.seq, CASE WHEN v.created THEN s.seq ELSE 0 END, \
             v.op, {at} FROM s CROSS JOIN (VALUES {values}) AS v (kind, entity_id, created, op)\
             {UPSERT_CHANGE})"
        ));
    }
    if gate.is_some() {
        sql.push(" SELECT s.seq FROM s");
    } else {
        let hooks = has_hooks(sql, &u);
        sql.push(&format!(" SELECT s.seq, {hooks} FROM s"));
    }
    if gate.is_some() {
        // A single-statement write queues no webhook deliveries: for a user with webhooks the
        // guard fails the statement (nothing is written) and the store writes in a transaction.
        sql.push(&format!(" WHERE todo_no_webhooks({u}::text)"));
    }
}

/// The user's next seq, taken inside the write transaction.
fn next_seq(dialect: Dialect, user_id: &str) -> Sql {
    let mut sql = Sql::new();
    match dialect {
        Dialect::Postgres => pg_log_tail(&mut sql, user_id, task::now_ms(), &[], None),
        Dialect::Sqlite => {
            let u = sql.bind(user_id);
            sql.push(&format!(
                "INSERT INTO user_state (user_id, seq) VALUES ({u}, 1) \
                 ON CONFLICT (user_id) DO UPDATE SET seq = seq + 1 RETURNING seq"
            ));
        }
    }
    sql
}

/// Upserts `records` at `seq` (at most [`LOG_CHUNK`]).
fn insert_records(
    user_id: &str,
    seq: i64,
    now: DateTime<Utc>,
    dialect: Dialect,
    records: &[Record],
) -> Sql {
    let mut sql = Sql::new();
    let u = sql.bind(user_id);
    let s = sql.bind(seq);
    push_records(&mut sql, &u, &s, now, dialect, records);
    sql
}

/// Appends the upsert of `records` at the seq `seq` (a placeholder or an expression) of the
/// user bound as `u`.
fn push_records(
    sql: &mut Sql,
    u: &str,
    seq: &str,
    now: DateTime<Utc>,
    dialect: Dialect,
    records: &[Record],
) {
    let at = sql.bind(dialect.ts(now));
    let zero = sql.bind(0i64);
    let mut rows = String::new();
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            rows.push_str(", ");
        }
        let k = sql.bind(r.kind.as_str());
        let id = sql.bind(r.id);
        let op = sql.bind(if r.deleted { "delete" } else { "upsert" });
        let created = if r.created { seq } else { &zero };
        rows.push_str(&format!("({u}, {k}, {id}, {seq}, {created}, {op}, {at})"));
    }
    sql.push(&format!(
        "INSERT INTO changes (user_id, kind, entity_id, seq, created_seq, op, at) VALUES {rows}{UPSERT_CHANGE}"
    ));
}

/// `EXISTS` of an enabled webhook of the user bound as `u`: whether a write must look for
/// deliveries to queue.
fn has_hooks(sql: &mut Sql, u: &str) -> String {
    let t = sql.bind(true);
    format!("EXISTS (SELECT 1 FROM webhooks WHERE user_id = {u} AND enabled = {t})")
}

/// SQLite: after the statements already in `sql` (the write's own last ones, deferred to
/// this exchange), the user's next seq, `records` at it, and whether the user has an enabled
/// webhook, as one text of several statements (sqlx runs them in order and binds the values
/// across them), so the single writer's transaction waits on one exchange with the
/// connection's thread instead of one per statement.
fn sqlite_log(mut sql: Sql, user_id: &str, now: DateTime<Utc>, records: &[Record]) -> Sql {
    let u = sql.bind(user_id);
    sql.push(&format!(
        "INSERT INTO user_state (user_id, seq) VALUES ({u}, 1) \
         ON CONFLICT (user_id) DO UPDATE SET seq = seq + 1; "
    ));
    let seq = format!("(SELECT seq FROM user_state WHERE user_id = {u})");
    push_records(&mut sql, &u, &seq, now, Dialect::Sqlite, records);
    let hooks = has_hooks(&mut sql, &u);
    sql.push(&format!(
        "; SELECT seq, {hooks} FROM user_state WHERE user_id = {u}"
    ));
    sql
}

/// Appends `records` (at least one) to the user's log inside `tx`; returns the write's seq.
/// The seq, the records and whether the user has a webhook take one statement (or, on SQLite,
/// one exchange, which also carries `first`: statements of the write not sent yet, built
/// with [`Sql::push_sqlite`]); only a write of more than [`LOG_CHUNK`] records takes more.
pub(crate) async fn append(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    user_id: &str,
    records: &[Record],
    first: Option<Sql>,
) -> Result<i64, StoreError> {
    let now = task::now_ms();
    let first = match first {
        Some(f) if dialect == Dialect::Postgres || records.len() > LOG_CHUNK => {
            tx.execute(&f).await?;
            None
        }
        f => f,
    };
    let (seq, hooks) = if records.len() <= LOG_CHUNK {
        let sql = match dialect {
            Dialect::Postgres => {
                let mut sql = Sql::new();
                pg_log_tail(&mut sql, user_id, now, records, None);
                sql
            }
            Dialect::Sqlite => sqlite_log(first.unwrap_or_else(Sql::new), user_id, now, records),
        };
        let row: Option<crate::backend::IntBool> = tx.fetch_one_as(&sql).await?;
        let row = row.ok_or(StoreError::Database(sqlx::Error::RowNotFound))?;
        (row.0, row.1)
    } else {
        let seq = seq_of(
            tx.fetch_one_as::<crate::backend::Int, _>(&next_seq(dialect, user_id))
                .await?,
        )?;
        for chunk in records.chunks(LOG_CHUNK) {
            tx.execute(&insert_records(user_id, seq, now, dialect, chunk))
                .await?;
        }
        (seq, true)
    };
    // The webhooks' deliveries of these records, in the same transaction.
    if hooks {
        crate::webhook::enqueue(tx, dialect, user_id, records, now).await?;
    }
    Ok(seq)
}

fn seq_of(row: Option<crate::backend::Int>) -> Result<i64, StoreError> {
    row.map(|r| r.0)
        .ok_or(StoreError::Database(sqlx::Error::RowNotFound))
}

/// PostgreSQL, one statement without a transaction: `stmt` (an insert or update of one task,
/// to which ` RETURNING "id"` is appended, plus `extra` CTEs that may use its values) and, when
/// it wrote a row, the log records at the user's next seq. The statement returns the seq, or
/// no row when `stmt` wrote nothing.
///
/// `lock_list`: the task's list, for an insert. Its foreign key is checked (taking a share
/// lock on the list's row) only at the end of the statement, after the user's row was locked
/// for the seq; a move that holds the list's row and waits for the user's row would then
/// deadlock with it. So the statement share-locks the list first, in a CTE the seq's insert
/// reads from.
pub(crate) fn pg_write_and_log<S: SqlxBinder>(
    stmt: &S,
    extra: impl FnOnce(&mut Sql) -> String,
    lock_list: Option<Uuid>,
    user_id: &str,
    now: DateTime<Utc>,
    records: &[Record],
) -> Sql {
    let mut sql = Sql::starting_with("WITH w AS (", stmt, " RETURNING \"id\")");
    let more = extra(&mut sql);
    sql.push(&more);
    let gate = match lock_list {
        Some(list) => {
            let u = sql.bind(user_id);
            let l = sql.bind(list);
            sql.push(&format!(
                ", l AS (SELECT 1 FROM lists WHERE user_id = {u} AND id = {l} FOR KEY SHARE)"
            ));
            "w CROSS JOIN l"
        }
        None => "w",
    };
    pg_log_tail(&mut sql, user_id, now, records, Some(gate));
    sql
}

/// The CTE inserting a new task's tag rows, for [`pg_write_and_log`].
pub(crate) fn pg_tags_cte(sql: &mut Sql, user_id: &str, id: Uuid, tags: &[String]) -> String {
    if tags.is_empty() {
        return String::new();
    }
    let u = sql.bind(user_id);
    let t = sql.bind(id);
    let rows: Vec<String> = tags
        .iter()
        .map(|tag| {
            let v = sql.bind(tag.as_str());
            format!("({u}, {v}, {t})")
        })
        .collect();
    format!(
        ", tg AS (INSERT INTO task_tags (user_id, tag, task_id) VALUES {})",
        rows.join(", ")
    )
}

/// `seq, pruned_seq` of a user (zeros for a user who never wrote).
fn user_state(user_id: &str) -> Sql {
    let mut sql = Sql::new();
    let u = sql.bind(user_id);
    sql.push(&format!(
        "SELECT seq, pruned_seq FROM user_state WHERE user_id = {u}"
    ));
    sql
}

/// Up to `limit` log rows after `from`, in `(seq, kind, entity_id)` order; without the
/// `reminder` rows unless `events` (the event stream reads them, `changes` does not).
fn log_after(user_id: &str, from: &Token, limit: u32, events: bool) -> Sql {
    let mut sql = Sql::new();
    let u = sql.bind(user_id);
    let s = sql.bind(from.seq);
    let after = match from.pos {
        Pos::Inside(kind, id) => {
            let k = sql.bind(kind.as_str());
            let i = sql.bind(id);
            format!("(seq, kind, entity_id) > ({s}, {k}, {i})")
        }
        _ => format!("seq > {s}"),
    };
    let only = if events {
        String::new()
    } else {
        format!(" AND kind <> {}", sql.bind(EntityKind::Reminder.as_str()))
    };
    let n = sql.bind(i64::from(limit));
    sql.push(&format!(
        "SELECT kind, entity_id, seq, created_seq, op, at FROM changes \
         WHERE user_id = {u} AND {after}{only} ORDER BY seq, kind, entity_id LIMIT {n}"
    ));
    sql
}

/// A batch of log rows read after a position, with the records' current state.
struct Read {
    /// Each row (with its token), and its record: `None` for an upsert whose record is gone
    /// by now (its deletion follows later in the log).
    rows: Vec<(LogRow, EntityKind, Token, Option<ChangeData>)>,
    /// More rows follow right away.
    more: bool,
    /// Where the batch ends.
    end: Token,
}

impl UserTasks {
    /// The user's current seq and prune watermark.
    async fn log_state(&self) -> Result<(i64, i64), StoreError> {
        let row: Vec<IntPair> = self.pool.fetch_all_as(&user_state(&self.user_id)).await?;
        Ok(row.first().map_or((0, 0), |r| (r.0, r.1)))
    }

    /// Decodes `since` and checks it against what the log still keeps; returns it and the
    /// user's seq read for the check (every write up to that seq has committed).
    async fn position(&self, since: &str) -> Result<(Token, i64), StoreError> {
        let token = Token::decode(since, &self.user_id)?;
        let (seq, pruned) = self.log_state().await?;
        if token.seq < pruned || token.seq > seq {
            return Err(StoreError::Gone);
        }
        Ok((token, seq))
    }

    /// Reads up to `limit` log rows after `from` and the current state of their records;
    /// the reminder firings too when `events`.
    async fn read_after(&self, from: Token, limit: u32, events: bool) -> Result<Read, StoreError> {
        let mut rows: Vec<LogRow> = self
            .pool
            .fetch_all_as(&log_after(&self.user_id, &from, limit + 1, events))
            .await?;
        let more = rows.len() > limit as usize;
        let next_seq = if more {
            rows.pop().map(|r| r.seq)
        } else {
            None
        };
        self.resolve(from, rows, next_seq, &[]).await
    }

    /// The records of this process's commit right after `from` (see [`Commit`]), as
    /// [`Self::read_after`] would read them: the tasks the write returned as they are, the
    /// other records read by id.
    async fn read_commit(&self, from: Token, c: &Commit) -> Result<Read, StoreError> {
        let rows = c
            .records
            .iter()
            .map(|r| LogRow {
                kind: r.kind.as_str().to_owned(),
                id: r.id,
                seq: c.seq,
                created_seq: if r.created { c.seq } else { 0 },
                op: if r.deleted { "delete" } else { "upsert" }.to_owned(),
                at: c.at,
            })
            .collect();
        self.resolve(from, rows, None, &c.tasks).await
    }

    /// The current state of the records of `rows` (log rows after `from`, in log order;
    /// `next_seq`: the seq of the row that follows them, when more follow), except the tasks
    /// in `known`, taken as they are.
    async fn resolve(
        &self,
        from: Token,
        rows: Vec<LogRow>,
        next_seq: Option<i64>,
        known: &[Task],
    ) -> Result<Read, StoreError> {
        let more = next_seq.is_some();
        let mut task_ids = Vec::new();
        let mut list_ids = Vec::new();
        let mut reminder_ids = Vec::new();
        for r in &rows {
            match (EntityKind::parse(&r.kind), r.op.as_str()) {
                (Some(EntityKind::Task), "upsert") if !known.iter().any(|t| t.id == r.id) => {
                    task_ids.push(r.id)
                }
                (Some(EntityKind::List), "upsert") => list_ids.push(r.id),
                (Some(EntityKind::Reminder), "upsert") => reminder_ids.push(r.id),
                _ => {}
            }
        }
        let scope = self.scope();
        // A firing is read as its reminder's row (its task, the time it last fired for) and
        // the task, which must still hold the reminder.
        let mut fired: HashMap<Uuid, (Uuid, DateTime<Utc>)> = HashMap::new();
        if !reminder_ids.is_empty() {
            let found: Vec<FiredRow> = self
                .pool
                .fetch_all_as(&scope.fired_reminders(&reminder_ids))
                .await?;
            for FiredRow(id, task_id, fired_for) in found {
                if let Some(at) = fired_for {
                    fired.insert(id, (task_id, at));
                    task_ids.push(task_id);
                }
            }
            task_ids.sort_unstable();
            task_ids.dedup();
        }
        let mut tasks: HashMap<Uuid, Task> = known.iter().map(|t| (t.id, t.clone())).collect();
        if !task_ids.is_empty() {
            let found: Vec<Task> = self.pool.fetch_all_as(&scope.get_many(&task_ids)).await?;
            tasks.extend(found.into_iter().map(|t| (t.id, t)));
        }
        let mut lists: HashMap<Uuid, List> = HashMap::new();
        if !list_ids.is_empty() {
            let found: Vec<List> = self.pool.fetch_all_as(&scope.get_lists(&list_ids)).await?;
            lists.extend(found.into_iter().map(|l| (l.id, l)));
        }
        let mut out = Vec::with_capacity(rows.len());
        let mut end = from;
        for (i, r) in rows.iter().enumerate() {
            let Some(kind) = EntityKind::parse(&r.kind) else {
                continue;
            };
            // The last row of its seq: the token says "all of this seq".
            let following = rows.get(i + 1).map(|f| f.seq).or(next_seq);
            let token = if following == Some(r.seq) {
                Token {
                    seq: r.seq,
                    pos: Pos::Inside(kind, r.id),
                }
            } else {
                Token::plain(r.seq)
            };
            end = token;
            let data = match (kind, r.op.as_str()) {
                (EntityKind::Task | EntityKind::List, "delete") => Some(ChangeData::Deleted(r.id)),
                (EntityKind::Task, _) => tasks.get(&r.id).cloned().map(ChangeData::Task),
                (EntityKind::List, _) => lists.remove(&r.id).map(ChangeData::List),
                // A firing is never deleted; it is read while its task still has the reminder.
                (EntityKind::Reminder, "delete") => None,
                (EntityKind::Reminder, _) => ChangeData::fired(r.id, &fired, &tasks),
            };
            out.push((rows_take(r), kind, token, data));
        }
        Ok(Read {
            rows: out,
            more,
            end,
        })
    }

    /// The user's changes since `since` (a token from an earlier page or sync, or an event
    /// id), at most `limit` records (1–[`CHANGES_LIMIT_MAX`]) in all.
    ///
    /// Without `since`: every live list and task (a snapshot, paged; lists first). The
    /// snapshot's final `next` is the log position read before its first page, so every
    /// write that commits after that read is returned by the changes that follow, even one
    /// that changed a record the snapshot already returned; when there are such writes the
    /// snapshot's last page says `has_more`.
    ///
    /// With `since`: every record whose latest write is after the token, once, in its latest
    /// state and in log order; deletions as [`Deleted`]. Errors: [`StoreError::Invalid`] on
    /// `limit`, or on `since` when it is malformed or made for another user;
    /// [`StoreError::Gone`] when it is older than the tombstones kept (see [`crate::Store::prune`]).
    pub async fn changes(&self, since: Option<&str>, limit: u32) -> Result<Changes, StoreError> {
        if !(1..=CHANGES_LIMIT_MAX).contains(&limit) {
            return Err(StoreError::invalid(
                "limit",
                format!("must be between 1 and {CHANGES_LIMIT_MAX}"),
            ));
        }
        let (token, committed) = match since {
            Some(s) => self.position(s).await?,
            None => {
                // The inbox exists from the first request on; its creation is a logged write.
                self.inbox_id().await?;
                let seq = self.log_state().await?.0;
                let token = Token {
                    seq,
                    pos: Pos::SnapshotLists(Uuid::nil()),
                };
                (token, seq)
            }
        };
        match token.pos {
            Pos::SnapshotLists(_) | Pos::SnapshotTasks(..) => {
                self.snapshot_page(token, limit).await
            }
            Pos::Plain | Pos::Inside(..) => {
                // Reminder firings are left out in the read itself: a page is `limit` tasks,
                // lists and deletions, and `has_more` is never true for firings alone.
                let read = self.read_after(token, limit, false).await?;
                // Caught up: every write up to `committed` had committed before the read, so
                // the read saw all of them, the firings it left out included; the next sync
                // starts after them (a token left before old firings would be refused once
                // they are pruned).
                let end = if read.more || read.end.seq >= committed {
                    read.end
                } else {
                    Token::plain(committed)
                };
                let mut out = Changes {
                    tasks: Vec::new(),
                    lists: Vec::new(),
                    deleted: Vec::new(),
                    next: end.encode(&self.user_id),
                    has_more: read.more,
                };
                for (row, kind, _, data) in read.rows {
                    match data {
                        Some(ChangeData::Task(t)) => out.tasks.push(t),
                        Some(ChangeData::List(l)) => out.lists.push(l),
                        Some(ChangeData::Deleted(id)) => out.deleted.push(Deleted {
                            kind,
                            id,
                            deleted_at: row.at,
                        }),
                        Some(ChangeData::Reminder { .. }) | None => {}
                    }
                }
                Ok(out)
            }
        }
    }

    /// One page of a snapshot taken at `token.seq`.
    async fn snapshot_page(&self, token: Token, limit: u32) -> Result<Changes, StoreError> {
        let scope = self.scope();
        let mut out = Changes {
            tasks: Vec::new(),
            lists: Vec::new(),
            deleted: Vec::new(),
            next: String::new(),
            has_more: false,
        };
        let n = limit as usize;
        let mut tasks_after = None;
        match token.pos {
            Pos::SnapshotLists(after) => {
                let mut lists: Vec<List> = self
                    .pool
                    .fetch_all_as(&scope.lists_after(after, u64::from(limit) + 1))
                    .await?;
                if lists.len() > n {
                    lists.truncate(n);
                    let last = lists.last().map_or(after, |l| l.id);
                    out.lists = lists;
                    out.next = Token {
                        seq: token.seq,
                        pos: Pos::SnapshotLists(last),
                    }
                    .encode(&self.user_id);
                    out.has_more = true;
                    return Ok(out);
                }
                out.lists = lists;
            }
            Pos::SnapshotTasks(ms, id) => tasks_after = Some((task::from_millis(ms), id)),
            _ => {}
        }
        let room = n - out.lists.len();
        let mut tasks: Vec<Task> = self
            .pool
            .fetch_all_as(&scope.tasks_after(tasks_after, room as u64 + 1))
            .await?;
        if tasks.len() > room {
            tasks.truncate(room);
            let pos = match tasks.last() {
                Some(t) => Pos::SnapshotTasks(t.created_at.timestamp_millis(), t.id),
                // The lists filled the page: the next one starts the tasks (after every list).
                None => Pos::SnapshotLists(Uuid::from_bytes([0xff; 16])),
            };
            out.next = Token {
                seq: token.seq,
                pos,
            }
            .encode(&self.user_id);
            out.has_more = true;
        } else {
            out.next = Token::plain(token.seq).encode(&self.user_id);
            // Writes committed while the snapshot was read follow right away, so that
            // `has_more: false` means caught up.
            out.has_more = self.log_state().await?.0 > token.seq;
        }
        out.tasks = tasks;
        Ok(out)
    }
}

fn rows_take(r: &LogRow) -> LogRow {
    LogRow {
        kind: r.kind.clone(),
        id: r.id,
        seq: r.seq,
        created_seq: r.created_seq,
        op: r.op.clone(),
        at: r.at,
    }
}

// ---- live subscribers ------------------------------------------------------------------------

/// A commit of this process, handed to the user's subscribers here with its wake-up: a
/// subscriber whose position is the seq just before takes the commit's records from it, in log
/// order, instead of reading the log, and the tasks the write returned as they were committed
/// (any other record it reads by id). Subscribers further behind, or on other instances, read
/// the log.
#[derive(Debug)]
pub(crate) struct Commit {
    seq: i64,
    at: DateTime<Utc>,
    /// In the log's order within a seq: `(kind, id)`.
    records: Vec<Record>,
    tasks: Vec<Task>,
}

impl Commit {
    /// The commit at `seq` of `records`, with the state of `tasks` it committed.
    pub(crate) fn new(seq: i64, records: &[Record], tasks: &[Task]) -> Commit {
        let mut records = records.to_vec();
        records.sort_by(|a, b| (a.kind.as_str(), a.id).cmp(&(b.kind.as_str(), b.id)));
        Commit {
            seq,
            at: Utc::now(),
            records,
            tasks: tasks.to_vec(),
        }
    }
}

/// What a user's subscribers are woken with.
#[derive(Debug, Default)]
struct Beat {
    /// The newest seq of the user that this process knows has committed (0: none yet).
    seq: i64,
    /// That commit, when this process made it and the write could tell it.
    commit: Option<Arc<Commit>>,
}

/// Wake-ups of a store's live subscribers, by user.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    users: Mutex<HashMap<String, watch::Sender<Beat>>>,
    live: AtomicUsize,
    #[cfg(feature = "postgres")]
    listener: Mutex<Option<sqlx::PgPool>>,
    /// PostgreSQL: sends this process's commits to the other instances' listeners.
    #[cfg(feature = "postgres")]
    announcer: Option<Arc<Announcer>>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        #[cfg(feature = "postgres")]
        if let Some(a) = &self.announcer {
            a.stop();
        }
    }
}

/// PostgreSQL: the wake-ups this process owes the other instances, sent after the commits
/// (see the module's documentation), coalesced to one `'<user>:<seq>'` per user and sent
/// together in one statement on a connection of their own, so a burst of writes costs one
/// notifying commit.
#[cfg(feature = "postgres")]
#[derive(Debug)]
pub(crate) struct Announcer {
    /// The newest seq to announce, by user.
    pending: Mutex<HashMap<String, i64>>,
    kick: tokio::sync::Notify,
    /// One connection, opened when first needed.
    pool: sqlx::PgPool,
    /// The sending task was started.
    running: std::sync::atomic::AtomicBool,
    /// The store is closed or gone: send what is pending, then stop.
    stopped: std::sync::atomic::AtomicBool,
}

/// Sends the announcements: `pg_notify` for each payload in one statement, committed
/// asynchronously (it is only a wake-up: the data it points to was committed by its writer,
/// and a lost wake-up is made up by the subscribers' periodic re-read).
#[cfg(feature = "postgres")]
const ANNOUNCE: &str = "SELECT count(pg_notify($1, p)) \
     FROM (SELECT set_config('synchronous_commit', 'off', true)) AS c, unnest($2::text[]) AS p";

/// A pool of one connection, opened when first needed and kept, to the database of `pool`
/// (the listener's and the announcer's own).
#[cfg(feature = "postgres")]
fn own_connection(pool: &sqlx::PgPool) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with((*pool.connect_options()).clone())
}

/// Records `user_id`'s commit at `seq` in `pending`, keeping the newest seq per user.
#[cfg(feature = "postgres")]
fn keep_newest(pending: &mut HashMap<String, i64>, user_id: &str, seq: i64) {
    match pending.get_mut(user_id) {
        Some(s) => *s = (*s).max(seq),
        None => {
            pending.insert(user_id.to_owned(), seq);
        }
    }
}

#[cfg(feature = "postgres")]
impl Announcer {
    fn new(pool: &sqlx::PgPool) -> Announcer {
        Announcer {
            pending: Mutex::default(),
            kick: tokio::sync::Notify::new(),
            pool: own_connection(pool),
            running: Default::default(),
            stopped: Default::default(),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `user_id`'s commit at `seq` and makes sure the sender runs.
    fn announce(self: &Arc<Self>, user_id: &str, seq: i64) {
        keep_newest(&mut self.pending(), user_id, seq);
        if !self.running.swap(true, Ordering::SeqCst) {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(Self::run(self.clone()));
                }
                Err(_) => self.running.store(false, Ordering::SeqCst),
            }
        }
        self.kick.notify_one();
    }

    /// Sends what is pending (nothing when nothing is). On failure it is queued again.
    async fn flush(&self) -> Result<(), sqlx::Error> {
        let batch: Vec<(String, i64)> = self.pending().drain().collect();
        if batch.is_empty() {
            return Ok(());
        }
        let payloads: Vec<String> = batch.iter().map(|(u, s)| format!("{u}:{s}")).collect();
        let sent = sqlx::query(ANNOUNCE)
            .bind(CHANNEL)
            .bind(&payloads)
            .execute(&self.pool)
            .await;
        if sent.is_err() {
            let mut pending = self.pending();
            for (u, s) in &batch {
                keep_newest(&mut pending, u, *s);
            }
        }
        sent.map(|_| ())
    }

    async fn run(self: Arc<Self>) {
        loop {
            self.kick.notified().await;
            let stopping = self.stopped.load(Ordering::SeqCst);
            match self.flush().await {
                Ok(()) => {}
                Err(_) if stopping => {}
                Err(e) => {
                    tracing::warn!(error = %e, "announcing commits to other instances failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    self.kick.notify_one();
                }
            }
            if stopping {
                self.pool.close().await;
                return;
            }
        }
    }

    /// Sends what is pending, then stops the sender.
    async fn close(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Err(e) = self.flush().await {
            tracing::warn!(error = %e, "announcing the last commits to other instances failed");
        }
        self.kick.notify_one();
        self.pool.close().await;
    }

    /// Stops the sender after one last send of what is pending (the hub is dropped).
    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.kick.notify_one();
    }
}

/// The hubs of this process's SQLite stores, by database file: every store on one file shares
/// one, so a write through any of them wakes the subscribers of all (SQLite serves one
/// process; its wake-ups stay in it).
#[cfg(feature = "sqlite")]
static SQLITE_HUBS: Mutex<Option<HashMap<std::path::PathBuf, std::sync::Weak<Hub>>>> =
    Mutex::new(None);

impl Hub {
    /// The hub shared by the stores of this process on the SQLite file `path` (a fresh one
    /// for an in-memory database, which no other store can open).
    #[cfg(feature = "sqlite")]
    pub(crate) fn for_sqlite_file(path: &std::path::Path) -> Arc<Hub> {
        let key = match std::fs::canonicalize(path) {
            Ok(p) => p,
            Err(_) => return Arc::default(),
        };
        let mut hubs = SQLITE_HUBS.lock().unwrap_or_else(|p| p.into_inner());
        let hubs = hubs.get_or_insert_with(HashMap::new);
        hubs.retain(|_, h| h.strong_count() > 0);
        if let Some(h) = hubs.get(&key).and_then(std::sync::Weak::upgrade) {
            return h;
        }
        let h: Arc<Hub> = Arc::default();
        hubs.insert(key, Arc::downgrade(&h));
        h
    }

    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<Beat>>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The hub of a PostgreSQL store on `pool`.
    #[cfg(feature = "postgres")]
    pub(crate) fn for_postgres(pool: &sqlx::PgPool) -> Arc<Hub> {
        Arc::new(Hub {
            users: Mutex::default(),
            live: AtomicUsize::new(0),
            listener: Mutex::default(),
            announcer: Some(Arc::new(Announcer::new(pool))),
        })
    }

    /// After `user_id`'s commit at `seq`: wakes the user's subscribers of this process, handing
    /// them the commit (`commit`, called only when the user has a subscriber here; see
    /// [`Commit`]), and, on PostgreSQL, queues the announcement to the other instances.
    pub(crate) fn committed(
        &self,
        user_id: &str,
        seq: i64,
        commit: impl FnOnce() -> Option<Commit>,
    ) {
        if let Some(tx) = self.users().get(user_id) {
            let commit = commit().map(Arc::new);
            tx.send_modify(|b| {
                if seq > b.seq {
                    b.seq = seq;
                    b.commit = commit;
                }
            });
        }
        #[cfg(feature = "postgres")]
        if let Some(a) = &self.announcer {
            a.announce(user_id, seq);
        }
    }

    /// Wakes the subscribers of `user_id` of this process for a commit at `seq` announced by
    /// an instance (this one's own announcements come back too): not when they were already
    /// woken for that seq or a later one, since reading up to a later seq reads this one.
    /// `None` (a payload without a seq) always wakes them.
    #[cfg(feature = "postgres")]
    fn announced(&self, user_id: &str, seq: Option<i64>) {
        if let Some(tx) = self.users().get(user_id) {
            tx.send_if_modified(|b| match seq {
                Some(s) if s <= b.seq => false,
                Some(s) => {
                    b.seq = s;
                    b.commit = None;
                    true
                }
                None => true,
            });
        }
    }

    /// Wakes every subscriber (after wake-ups may have been lost).
    pub(crate) fn wake_all(&self) {
        for tx in self.users().values() {
            tx.send_modify(|b| b.commit = None);
        }
    }

    /// Live subscribers.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Live subscribers of one user.
    pub(crate) fn live_for(&self, user_id: &str) -> usize {
        self.users()
            .get(user_id)
            .map_or(0, |tx| tx.receiver_count())
    }

    fn register(self: &Arc<Self>, user_id: &str) -> Registration {
        let rx = {
            let mut users = self.users();
            users
                .entry(user_id.to_owned())
                .or_insert_with(|| watch::channel(Beat::default()).0)
                .subscribe()
        };
        self.live.fetch_add(1, Ordering::SeqCst);
        Registration {
            hub: self.clone(),
            user_id: user_id.to_owned(),
            rx: Some(rx),
        }
    }

    /// Starts this store's PostgreSQL listener if it is not running: one connection of its
    /// own, `LISTEN todo_changes`, and every notification wakes the subscribers of its user.
    #[cfg(feature = "postgres")]
    pub(crate) fn ensure_listener(self: &Arc<Self>, pool: &Pool) {
        let Pool::Postgres(conns) = pool else { return };
        let mut slot = self.listener.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let lpool = own_connection(&conns.pool);
        *slot = Some(lpool.clone());
        rt.spawn(listen(Arc::downgrade(self), lpool));
    }

    /// Sends the pending announcements and stops the announcer and the listener (on
    /// [`crate::Store::close`]).
    pub(crate) async fn close(&self) {
        #[cfg(feature = "postgres")]
        {
            if let Some(a) = &self.announcer {
                a.close().await;
            }
            let pool = self
                .listener
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(p) = pool {
                p.close().await;
            }
        }
    }
}

#[cfg(feature = "postgres")]
async fn listen(hub: std::sync::Weak<Hub>, pool: sqlx::PgPool) {
    use sqlx::postgres::PgListener;
    loop {
        let mut listener = loop {
            if pool.is_closed() {
                return;
            }
            let attempt = async {
                let mut l = PgListener::connect_with(&pool).await?;
                l.listen(CHANNEL).await?;
                Ok::<_, sqlx::Error>(l)
            };
            match attempt.await {
                Ok(l) => break l,
                Err(e) => {
                    tracing::warn!(error = %e, "change listener cannot connect; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        // Listening now: whatever was committed before is re-read by every subscriber.
        match hub.upgrade() {
            Some(h) => h.wake_all(),
            None => return,
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    let Some(h) = hub.upgrade() else { return };
                    if let Some((user, seq)) = n.payload().rsplit_once(':') {
                        h.announced(user, seq.parse().ok());
                    }
                }
                // The connection was lost and is back (eager reconnect): notifications in
                // between are gone, so every subscriber re-reads.
                Ok(None) => match hub.upgrade() {
                    Some(h) => h.wake_all(),
                    None => return,
                },
                Err(sqlx::Error::PoolClosed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "change listener failed; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
        }
    }
}

/// A live subscriber's place in the hub; unregisters on drop.
struct Registration {
    hub: Arc<Hub>,
    user_id: String,
    rx: Option<watch::Receiver<Beat>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        drop(self.rx.take());
        self.hub.live.fetch_sub(1, Ordering::SeqCst);
        let mut users = self.hub.users();
        if users
            .get(&self.user_id)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            users.remove(&self.user_id);
        }
    }
}

/// The state of one subscription stream.
struct Subscription {
    user: UserTasks,
    pos: Token,
    buf: VecDeque<Change>,
    reg: Registration,
    /// The last read found nothing more: wait for a wake-up before reading again.
    caught_up: bool,
    done: bool,
}

impl UserTasks {
    /// A live stream of the user's changes: first every change after `since` (an event id or
    /// a token of [`changes`](Self::changes)), then each new one as it commits, in commit
    /// order, with no gap and no duplicate. Without `since`, the changes committed after this
    /// call. Fails up front like [`changes`](Self::changes) on a bad or expired `since`.
    ///
    /// The stream ends after yielding an error (the database became unreachable); resume
    /// with the last change's id. Wake-ups come from this process's writes, and on
    /// PostgreSQL from every instance's (through `LISTEN`), within about a second.
    pub async fn subscribe(
        &self,
        since: Option<&str>,
    ) -> Result<
        impl futures_core::Stream<Item = Result<Change, StoreError>> + Send + 'static,
        StoreError,
    > {
        #[cfg(feature = "postgres")]
        self.hub.ensure_listener(&self.pool);
        // Registered before the position is read: a commit after the read wakes this stream.
        let reg = self.hub.register(&self.user_id);
        let pos = match since {
            Some(s) => {
                let (t, _) = self.position(s).await?;
                if matches!(t.pos, Pos::SnapshotLists(_) | Pos::SnapshotTasks(..)) {
                    return Err(StoreError::invalid(
                        "since",
                        "is a snapshot page token; finish the snapshot with changes() first",
                    ));
                }
                t
            }
            None => Token::plain(self.log_state().await?.0),
        };
        let sub = Subscription {
            user: self.clone(),
            pos,
            buf: VecDeque::new(),
            reg,
            caught_up: false,
            done: false,
        };
        Ok(futures_util::stream::unfold(sub, |mut s| async move {
            loop {
                if let Some(c) = s.buf.pop_front() {
                    return Some((Ok(c), s));
                }
                if s.done {
                    return None;
                }
                let rx = s.reg.rx.as_mut()?;
                if s.caught_up {
                    tokio::select! {
                        r = rx.changed() => if r.is_err() { return None },
                        _ = tokio::time::sleep(SUBSCRIBE_FALLBACK) => {}
                    }
                }
                // Seen before reading: a wake-up that arrives during the read is not lost.
                let next = rx
                    .borrow_and_update()
                    .commit
                    .clone()
                    .filter(|c| s.pos.pos == Pos::Plain && c.seq == s.pos.seq + 1);
                // Boxed: the stream's future is as large as its largest state, and an idle
                // subscription (most of them, most of the time) should not carry the space of
                // a read in flight.
                let read = match next {
                    Some(c) => Box::pin(s.user.read_commit(s.pos, &c)).await,
                    None => Box::pin(s.user.read_after(s.pos, SUBSCRIBE_BATCH, true)).await,
                };
                match read {
                    Ok(read) => {
                        let reader = s.pos.seq;
                        for (row, kind, token, data) in read.rows {
                            let Some(data) = data else { continue };
                            let created = row.created_seq > reader;
                            let kind = match (kind, &data, created) {
                                (EntityKind::Task, ChangeData::Deleted(_), _) => {
                                    ChangeType::TaskDeleted
                                }
                                (EntityKind::List, ChangeData::Deleted(_), _) => {
                                    ChangeType::ListDeleted
                                }
                                (EntityKind::Task, _, true) => ChangeType::TaskCreated,
                                (EntityKind::Task, _, false) => ChangeType::TaskUpdated,
                                (EntityKind::List, _, true) => ChangeType::ListCreated,
                                (EntityKind::List, _, false) => ChangeType::ListUpdated,
                                (EntityKind::Reminder, _, _) => ChangeType::ReminderFired,
                            };
                            s.buf.push_back(Change {
                                id: token.encode(&s.user.user_id),
                                kind,
                                data,
                            });
                        }
                        s.pos = read.end;
                        s.caught_up = !read.more;
                    }
                    Err(e) => {
                        s.done = true;
                        return Some((Err(e), s));
                    }
                }
            }
        }))
    }
}

// ---- pruning ---------------------------------------------------------------------------------

/// Default age of tombstones before [`crate::Store::prune`] removes them (`TODO_TOMBSTONE_DAYS`).
pub const TOMBSTONE_DAYS_DEFAULT: u32 = 30;
/// Idempotency records are kept at least this long.
pub const IDEMPOTENCY_KEEP: Duration = Duration::from_secs(24 * 3600);

/// What [`crate::Store::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Tombstones removed.
    pub tombstones: u64,
    /// Reminder firings removed from the log (events, kept as long as tombstones).
    pub reminder_events: u64,
    /// Idempotency records removed.
    pub idempotency: u64,
}

/// The log rows pruning removes, older than the bound value `cut`: tombstones and reminder
/// firings (events, not state; a firing's row is rewritten, with a fresh `at`, each time its
/// reminder fires again).
fn prunable(cut: &str) -> String {
    format!("(op = 'delete' OR kind = 'reminder') AND at < {cut}")
}

/// Raises each user's watermark to their newest tombstone or reminder firing older than
/// `cutoff`, then deletes those rows (one transaction: a token is never valid for a log missing
/// its deletions or its events; a sync token kept by `changes` is past every firing it read
/// over, so only tokens from before a pruned firing are refused).
pub(crate) async fn prune(
    pool: &Pool,
    tombstones_before: DateTime<Utc>,
    idempotency_before: DateTime<Utc>,
) -> Result<Pruned, StoreError> {
    let d = pool.dialect();
    let max = match d {
        Dialect::Postgres => "GREATEST",
        Dialect::Sqlite => "max",
    };
    let mut raise = Sql::new();
    let cut = raise.bind(d.ts(tombstones_before));
    raise.push(&format!(
        "UPDATE user_state SET pruned_seq = {max}(pruned_seq, (SELECT max(c.seq) FROM changes c \
         WHERE c.user_id = user_state.user_id AND {old})) \
         WHERE user_id IN (SELECT user_id FROM changes WHERE {old})",
        old = prunable(&cut),
    ));
    // Two deletes, to count each kind of row.
    let delete = |rows: &str| {
        let mut sql = Sql::new();
        let cut = sql.bind(d.ts(tombstones_before));
        sql.push(&format!("DELETE FROM changes WHERE {rows} AND at < {cut}"));
        sql
    };
    let tombstones = delete("op = 'delete'");
    let firings = delete("kind = 'reminder' AND op = 'upsert'");
    let mut idem = Sql::new();
    let cut = idem.bind(d.ts(idempotency_before));
    idem.push(&format!("DELETE FROM idempotency WHERE created_at < {cut}"));
    let mut writer = pool.writer().await?;
    let mut tx = writer.begin().await?;
    tx.execute(&raise).await?;
    let tombstones = tx.execute(&tombstones).await?;
    let reminder_events = tx.execute(&firings).await?;
    let idempotency = tx.execute(&idem).await?;
    tx.commit().await?;
    writer.done();
    Ok(Pruned {
        tombstones,
        reminder_events,
        idempotency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Scope;

    /// A PostgreSQL create is one statement: the task, its tags, the user's next seq and the
    /// log records, with the webhook guard; every value is bound, the user id among them. It
    /// sends no `NOTIFY`: that would serialise the commits of all writers.
    #[test]
    fn a_pg_create_and_its_log_are_one_statement() {
        let t = crate::query::tests::sample_task();
        let scope = Scope::new("alice", Dialect::Postgres);
        let records = fold_records(&[t.id], &[], &[t.list_id], &[], &[t.id]);
        let sql = pg_write_and_log(
            &scope.insert(&t),
            |sql| pg_tags_cte(sql, "alice", t.id, &t.tags),
            Some(t.list_id),
            "alice",
            t.created_at,
            &records,
        );
        let (text, values) = sql.build_sqlx(sea_query::PostgresQueryBuilder);
        assert!(
            text.starts_with(r#"WITH w AS (INSERT INTO "tasks""#),
            "{text}"
        );
        for part in [
            "tg AS (INSERT INTO task_tags",
            "s AS (INSERT INTO user_state (user_id, seq) SELECT",
            "FOR KEY SHARE), s AS (INSERT INTO user_state (user_id, seq) SELECT",
            "FROM w CROSS JOIN l ON CONFLICT (user_id) DO UPDATE SET seq = user_state.seq + 1",
            "c AS (INSERT INTO changes",
            "SELECT s.seq FROM s WHERE todo_no_webhooks(",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        assert!(!text.contains("notify"), "{text}");
        assert!(!text.contains("'alice'"), "values are bound: {text}");
        let n = values.0.0.len();
        assert!(text.contains(&format!("${n}")) && !text.contains(&format!("${}", n + 1)));
        assert_eq!(records.len(), 2);
        assert!(
            records
                .iter()
                .any(|r| r.kind == EntityKind::Task && r.created)
        );
        assert!(
            records
                .iter()
                .any(|r| r.kind == EntityKind::List && !r.created)
        );
    }

    #[test]
    fn records_fold_to_the_last_state() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let r = fold_records(&[a, b, a], &[a], &[], &[], &[a]);
        assert_eq!(r.len(), 2);
        let ra = r.iter().find(|r| r.id == a).unwrap();
        assert!(ra.deleted && ra.created);
        let rb = r.iter().find(|r| r.id == b).unwrap();
        assert!(!rb.deleted && !rb.created);
    }
}
