//! `cargo xtask seed --database-url URL --users N --tasks-per-user M [--skew]`: fills a database
//! with realistic tasks, fast.
//!
//! The schema is created with [`todo_store::Store::migrate`]; rows are then written directly,
//! bypassing the store, exactly as `UserTasks::create` writes them: UUIDv7 ids (time-ordered, from
//! `created_at`), `title_lc` / `description_lc` = `to_lowercase()`, the search signature from
//! [`todo_store::search_signature`], `tags` as the JSON array of
//! normalised tags plus one `task_tags` row per tag, priority rank 0–2, version 1,
//! `updated_at = created_at`, and `completed_at = created_at` for tasks created completed.
//! Timestamps have millisecond precision (PostgreSQL `timestamptz`, SQLite integer ms).
//!
//! - PostgreSQL: `COPY … FROM STDIN` (text format) through sqlx, then `VACUUM (ANALYZE)` so the
//!   planner statistics and visibility map look like a database autovacuum has settled.
//! - SQLite: multi-row `INSERT`s of 1,000 rows in one transaction (SQLite's planner gets no
//!   `ANALYZE`, like a store in production that never runs one).
//!
//! Into empty tables, both load without the secondary indexes and rebuild them afterwards from
//! their definitions in the catalog, in the same transaction (several times faster than
//! maintaining them row by row).
//!
//! Data is deterministic (a fixed-seed PRNG) apart from ids and the "now" it is relative to:
//! titles from verb + object templates (some non-ASCII), 45 % without description, 0–4 tags
//! drawn with a skew towards common ones, priorities 25/55/20 % low/medium/high, 55 % with a due
//! date, 30 % completed, `created_at` spread over the past year.
//!
//! Every user gets [`LISTS_PER_USER`] lists (the inbox first); each task goes into one of them
//! at random, and about [`SUBTASK_SHARE`] of the tasks are subtasks of an earlier top-level task
//! of their list (a completed parent's subtasks are completed too, as the store keeps them).
//! Siblings' positions follow their creation order.
//!
//! With `--skew` the first user, `user-heavy`, gets [`HEAVY_TASKS`] tasks (or `M` if larger).

use std::fmt::Write as _;
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use sqlx::Connection;
use uuid::Uuid;

/// Tasks of the heavy user made by `--skew`.
pub const HEAVY_TASKS: usize = 10_000;
/// Id of the heavy user made by `--skew`.
pub const HEAVY_USER: &str = "user-heavy";
/// Lists of every seeded user, the inbox included.
pub const LISTS_PER_USER: usize = 10;
/// The share of seeded tasks that are subtasks.
pub const SUBTASK_SHARE: f64 = 0.2;
/// Names of the lists after the inbox.
const LIST_NAMES: [&str; LISTS_PER_USER - 1] = [
    "Work",
    "Home",
    "Errands",
    "Groceries",
    "Side project",
    "Reading",
    "Health",
    "Finance",
    "Travel",
];

/// What to seed.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Number of users (including the heavy one with `skew`).
    pub users: usize,
    /// Tasks of every (ordinary) user.
    pub tasks_per_user: usize,
    /// Make the first user heavy.
    pub skew: bool,
}

impl Spec {
    /// Parses `--users N --tasks-per-user M [--skew]`; returns the spec and the database URL.
    pub fn parse(args: &[String]) -> Result<(String, Spec), String> {
        let mut url = None;
        let mut spec = Spec {
            users: 100,
            tasks_per_user: 100,
            skew: false,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
            match a.as_str() {
                "--database-url" => url = Some(value()?),
                "--users" => spec.users = value()?.parse().map_err(|_| "bad --users")?,
                "--tasks-per-user" => {
                    spec.tasks_per_user = value()?.parse().map_err(|_| "bad --tasks-per-user")?
                }
                "--skew" => spec.skew = true,
                other => return Err(format!("unknown seed argument {other:?}")),
            }
        }
        let url = url
            .or_else(|| std::env::var("DATABASE_URL").ok())
            .ok_or("--database-url (or DATABASE_URL) is required")?;
        if spec.users == 0 {
            return Err("--users must be at least 1".into());
        }
        Ok((url, spec))
    }

    /// How many tasks user number `i` gets.
    pub fn tasks_of(&self, i: usize) -> usize {
        if self.skew && i == 0 {
            HEAVY_TASKS.max(self.tasks_per_user)
        } else {
            self.tasks_per_user
        }
    }

    /// The id of user number `i`.
    pub fn user_id(&self, i: usize) -> String {
        if self.skew && i == 0 {
            HEAVY_USER.to_owned()
        } else {
            format!("user-{i:05}")
        }
    }
}

/// One seeded user and the ids of its tasks (oldest first) and lists.
#[derive(Debug, Clone)]
pub struct SeededUser {
    /// User id (the JWT `sub`).
    pub id: String,
    /// Its tasks' ids.
    pub task_ids: Vec<Uuid>,
    /// Its lists' ids, the inbox first.
    pub list_ids: Vec<Uuid>,
    /// The ids of its tasks that have subtasks.
    pub parent_ids: Vec<Uuid>,
}

/// The outcome of a seed.
#[derive(Debug)]
pub struct Seeded {
    /// Every user, in order (the heavy one first with `--skew`).
    pub users: Vec<SeededUser>,
    /// Task rows written.
    pub tasks: usize,
    /// `task_tags` rows written.
    pub tags: usize,
    /// Wall time, migration included.
    pub elapsed: Duration,
}

/// `cargo xtask seed …`.
pub fn main(args: &[String]) -> Result<(), String> {
    let (url, spec) = Spec::parse(args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let s = rt.block_on(seed(&url, &spec))?;
    println!(
        "seeded {} users, {} tasks, {} task_tags rows into {} in {:.1} s ({:.0} tasks/s){}",
        s.users.len(),
        s.tasks,
        s.tags,
        todo_store::redact_url(&url),
        s.elapsed.as_secs_f64(),
        s.tasks as f64 / s.elapsed.as_secs_f64().max(1e-9),
        if spec.skew {
            format!("; {HEAVY_USER} has {} tasks", spec.tasks_of(0))
        } else {
            String::new()
        }
    );
    println!(
        "user ids: {} … {}; mint tokens with TODO_JWT_SECRET=… cargo xtask token <user_id>",
        s.users.first().map(|u| u.id.as_str()).unwrap_or("-"),
        s.users.last().map(|u| u.id.as_str()).unwrap_or("-"),
    );
    Ok(())
}

/// Migrates the database at `url` and fills it.
pub async fn seed(url: &str, spec: &Spec) -> Result<Seeded, String> {
    let started = Instant::now();
    let store = todo_store::Store::connect(url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    store.migrate().await.map_err(|e| format!("migrate: {e}"))?;
    let dialect = store.dialect();
    store.close().await;
    let now = Utc::now().timestamp_millis();
    let mut rng = Gen::new(0x05ee_d0f7_a5c5);
    let (users, tasks, tags) = match dialect {
        todo_store::Dialect::Postgres => seed_pg(url, spec, &mut rng, now).await,
        todo_store::Dialect::Sqlite => seed_sqlite(url, spec, &mut rng, now).await,
    }
    .map_err(|e| format!("seed: {e}"))?;
    Ok(Seeded {
        users,
        tasks,
        tags,
        elapsed: started.elapsed(),
    })
}

/// A task row as the store writes it on create.
struct Row {
    id: Uuid,
    title: String,
    description: Option<String>,
    completed: bool,
    priority: i16,
    tags: Vec<String>,
    due_at: Option<i64>,
    created_at: i64,
    /// One of the user's lists.
    list_id: Uuid,
    /// An earlier top-level task of the same list, for a subtask.
    parent_id: Option<Uuid>,
    /// Its ordering key: its siblings in creation order.
    position: String,
}

/// A list row to insert.
struct NewList {
    id: Uuid,
    name: &'static str,
    is_inbox: bool,
    position: String,
}

/// One user's seeded lists and tasks.
struct UserRows {
    user: String,
    /// The lists, the inbox first, with their creation time.
    lists: Vec<Uuid>,
    /// Whether `lists[0]` is an inbox already in the database (not to be inserted).
    inbox_exists: bool,
    rows: Vec<Row>,
}

impl UserRows {
    /// Points the user's new rows at the inbox the database already has for them, if any.
    fn reuse_inbox(&mut self, inbox: Option<Uuid>) {
        let Some(id) = inbox else { return };
        let new = self.lists[0];
        for r in self.rows.iter_mut().filter(|r| r.list_id == new) {
            r.list_id = id;
        }
        self.lists[0] = id;
        self.inbox_exists = true;
    }

    /// The lists to insert (all but an inbox that exists).
    fn new_lists(&self) -> impl Iterator<Item = NewList> + '_ {
        let keys = todo_store::position::spaced(self.lists.len());
        self.lists
            .iter()
            .zip(keys)
            .enumerate()
            .skip(usize::from(self.inbox_exists))
            .map(|(i, (id, key))| {
                let name = if i == 0 {
                    todo_store::list::INBOX_NAME
                } else {
                    LIST_NAMES[(i - 1) % LIST_NAMES.len()]
                };
                NewList {
                    id: *id,
                    name,
                    is_inbox: i == 0,
                    position: key,
                }
            })
    }

    /// When the lists were made: with the user's first task.
    fn lists_created_at(&self) -> i64 {
        self.rows.first().map_or(0, |r| r.created_at)
    }
}

/// Spreads `rows` (oldest first) over `lists` and makes about [`SUBTASK_SHARE`] of them
/// subtasks of an earlier top-level task of their list; gives every sibling group positions in
/// creation order. A subtask of a completed task is completed.
fn arrange(rows: &mut [Row], lists: &[Uuid], rng: &mut Gen) {
    use std::collections::HashMap;
    // Per list, the indexes of its top-level rows so far.
    let mut tops: Vec<Vec<usize>> = vec![Vec::new(); lists.len()];
    let mut last_key: HashMap<(Uuid, Option<Uuid>), String> = HashMap::new();
    for i in 0..rows.len() {
        let l = rng.below(lists.len());
        let parent = (rng.chance(SUBTASK_SHARE) && !tops[l].is_empty())
            .then(|| tops[l][rng.below(tops[l].len())]);
        let (parent_id, parent_completed) = match parent {
            Some(p) => (Some(rows[p].id), rows[p].completed),
            None => {
                tops[l].push(i);
                (None, false)
            }
        };
        let r = &mut rows[i];
        r.list_id = lists[l];
        r.parent_id = parent_id;
        r.completed |= parent_completed;
        let last = last_key.entry((r.list_id, parent_id)).or_default();
        let prev = (!last.is_empty()).then_some(last.as_str());
        let key = todo_store::position::between(prev, None).unwrap_or_else(|| "a0".to_owned());
        r.position.clone_from(&key);
        *last = key;
    }
}

impl Row {
    fn tags_json(&self) -> String {
        serde_json::to_string(&self.tags).unwrap_or_else(|_| "[]".to_owned())
    }
    fn completed_at(&self) -> Option<i64> {
        self.completed.then_some(self.created_at)
    }
    /// `title_lc` and `description_lc`.
    fn lowercased(&self) -> (String, Option<String>) {
        (
            self.title.to_lowercase(),
            self.description.as_ref().map(|d| d.to_lowercase()),
        )
    }
}

/// Rows are written in chunks of about this many tasks.
const CHUNK_TASKS: usize = 20_000;

/// The users' rows, generated chunk by chunk; keeps the users and their task ids.
struct Chunks<'a> {
    spec: &'a Spec,
    rng: &'a mut Gen,
    now_ms: i64,
    next_user: usize,
    users: Vec<SeededUser>,
    tasks: usize,
    tags: usize,
}

impl<'a> Chunks<'a> {
    fn new(spec: &'a Spec, rng: &'a mut Gen, now_ms: i64) -> Self {
        Self {
            spec,
            rng,
            now_ms,
            next_user: 0,
            users: Vec::with_capacity(spec.users),
            tasks: 0,
            tags: 0,
        }
    }

    /// The next users' rows (about [`CHUNK_TASKS`] tasks), or `None` when every user is done.
    /// The users' ids are recorded by [`finish`](Self::finish), after any inbox was reused.
    fn next_chunk(&mut self) -> Option<Vec<UserRows>> {
        let mut chunk = Vec::new();
        let mut in_chunk = 0;
        while in_chunk < CHUNK_TASKS && self.next_user < self.spec.users {
            let i = self.next_user;
            self.next_user += 1;
            let mut rows = self.rng.user_rows(self.spec.tasks_of(i), self.now_ms);
            let lists: Vec<Uuid> = (0..LISTS_PER_USER).map(|_| Uuid::now_v7()).collect();
            arrange(&mut rows, &lists, self.rng);
            self.tasks += rows.len();
            self.tags += rows.iter().map(|r| r.tags.len()).sum::<usize>();
            in_chunk += rows.len();
            chunk.push(UserRows {
                user: self.spec.user_id(i),
                lists,
                inbox_exists: false,
                rows,
            });
        }
        (!chunk.is_empty()).then_some(chunk)
    }

    /// Records the users of a chunk once it is written.
    fn written(&mut self, chunk: &[UserRows]) {
        for u in chunk {
            let mut parent_ids: Vec<Uuid> = u.rows.iter().filter_map(|r| r.parent_id).collect();
            parent_ids.sort_unstable();
            parent_ids.dedup();
            self.users.push(SeededUser {
                id: u.user.clone(),
                task_ids: u.rows.iter().map(|r| r.id).collect(),
                list_ids: u.lists.clone(),
                parent_ids,
            });
        }
    }

    fn finish(self) -> (Vec<SeededUser>, usize, usize) {
        (self.users, self.tasks, self.tags)
    }
}

fn rfc3339_ms(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Appends `s` escaped for COPY's text format.
fn copy_text(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
}

fn copy_opt(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => copy_text(out, s),
        None => out.push_str("\\N"),
    }
}

async fn seed_pg(
    url: &str,
    spec: &Spec,
    rng: &mut Gen,
    now_ms: i64,
) -> Result<(Vec<SeededUser>, usize, usize), sqlx::Error> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let mut tx = conn.begin().await?;
    sqlx::raw_sql("SET LOCAL maintenance_work_mem = '256MB'")
        .execute(&mut *tx)
        .await?;
    // Into empty tables, loading without the secondary indexes and building them afterwards is
    // several times faster than maintaining them row by row. Their definitions are read from the
    // catalog (whatever the migrations made) and recreated verbatim in the same transaction, so
    // a failure leaves the schema as it was. Indexes behind constraints (primary keys) stay.
    let empty: bool = sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM tasks)")
        .fetch_one(&mut *tx)
        .await?;
    let indexes: Vec<(String, String)> = if empty {
        sqlx::query_as(
            "SELECT i.indexname::text, i.indexdef FROM pg_indexes i \
             WHERE i.schemaname = current_schema() AND i.tablename IN ('tasks', 'task_tags') \
             AND NOT EXISTS (SELECT 1 FROM pg_constraint c \
                             WHERE c.conname = i.indexname AND c.connamespace = \
                                   (SELECT oid FROM pg_namespace WHERE nspname = i.schemaname))",
        )
        .fetch_all(&mut *tx)
        .await?
    } else {
        Vec::new()
    };
    for (name, _) in &indexes {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP INDEX \"{name}\"")))
            .execute(&mut *tx)
            .await?;
    }
    let mut chunks = Chunks::new(spec, rng, now_ms);
    while let Some(mut chunk) = chunks.next_chunk() {
        if !empty {
            // Users seeded before keep their inbox: the new inbox tasks go into it.
            for u in &mut chunk {
                let inbox: Option<Uuid> =
                    sqlx::query_scalar("SELECT id FROM lists WHERE user_id = $1 AND is_inbox")
                        .bind(u.user.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                u.reuse_inbox(inbox);
            }
        }
        let (lists, tasks, tags) = pg_copy_text(&chunk);
        let mut copy = tx
            .copy_in_raw(
                "COPY lists (id, user_id, name, is_inbox, position, created_at, updated_at, \
                 version) FROM STDIN",
            )
            .await?;
        copy.send(lists.into_bytes()).await?;
        copy.finish().await?;
        let mut copy = tx
            .copy_in_raw(
                "COPY tasks (id, user_id, title, title_lc, description, description_lc, \
                 completed, completed_at, priority, tags, due_at, created_at, updated_at, \
                 version, search_bits_lo, search_bits_hi, list_id, parent_id, position) \
                 FROM STDIN",
            )
            .await?;
        copy.send(tasks.into_bytes()).await?;
        copy.finish().await?;
        if !tags.is_empty() {
            let mut copy = tx
                .copy_in_raw("COPY task_tags (user_id, tag, task_id) FROM STDIN")
                .await?;
            copy.send(tags.into_bytes()).await?;
            copy.finish().await?;
        }
        chunks.written(&chunk);
    }
    for (_, definition) in &indexes {
        sqlx::raw_sql(sqlx::AssertSqlSafe(definition.clone()))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    sqlx::raw_sql("VACUUM (ANALYZE) lists, tasks, task_tags")
        .execute(&mut conn)
        .await?;
    let _ = conn.close().await;
    Ok(chunks.finish())
}

/// The COPY text-format data of a chunk: `(lists, tasks, task_tags)`.
fn pg_copy_text(chunk: &[UserRows]) -> (String, String, String) {
    let mut lists = String::new();
    let mut tasks = String::with_capacity(chunk.len() * 400);
    let mut tags = String::new();
    let ts = |ms: Option<i64>| ms.map(rfc3339_ms);
    for u in chunk {
        let user = &u.user;
        let created = rfc3339_ms(u.lists_created_at());
        for l in u.new_lists() {
            let _ = write!(lists, "{}\t", l.id);
            copy_text(&mut lists, user);
            let inbox = if l.is_inbox { "t" } else { "f" };
            let _ = writeln!(
                lists,
                "\t{}\t{inbox}\t{}\t{created}\t{created}\t1",
                l.name, l.position
            );
        }
        for r in &u.rows {
            let _ = write!(tasks, "{}\t", r.id);
            copy_text(&mut tasks, user);
            tasks.push('\t');
            copy_text(&mut tasks, &r.title);
            tasks.push('\t');
            let (title_lc, description_lc) = r.lowercased();
            copy_text(&mut tasks, &title_lc);
            tasks.push('\t');
            copy_opt(&mut tasks, r.description.as_deref());
            tasks.push('\t');
            copy_opt(&mut tasks, description_lc.as_deref());
            let _ = write!(tasks, "\t{}\t", if r.completed { "t" } else { "f" });
            copy_opt(&mut tasks, ts(r.completed_at()).as_deref());
            let _ = write!(tasks, "\t{}\t", r.priority);
            copy_text(&mut tasks, &r.tags_json());
            tasks.push('\t');
            copy_opt(&mut tasks, ts(r.due_at).as_deref());
            let created = rfc3339_ms(r.created_at);
            let [lo, hi] = todo_store::search_signature(&title_lc, description_lc.as_deref());
            let _ = write!(
                tasks,
                "\t{created}\t{created}\t1\t{lo}\t{hi}\t{}\t",
                r.list_id
            );
            match r.parent_id {
                Some(p) => {
                    let _ = write!(tasks, "{p}");
                }
                None => tasks.push_str("\\N"),
            }
            let _ = writeln!(tasks, "\t{}", r.position);
            for tag in &r.tags {
                copy_text(&mut tags, user);
                tags.push('\t');
                copy_text(&mut tags, tag);
                let _ = writeln!(tags, "\t{}", r.id);
            }
        }
    }
    (lists, tasks, tags)
}

/// The rule given to recurring tasks by [`make_recurring`].
pub const RECURRENCE_RULE: &str = "FREQ=DAILY";
/// The zone of that rule.
pub const RECURRENCE_TIMEZONE: &str = "Europe/Berlin";

/// Makes every `every`-th task of each user (the first, then every `every`-th after it: one in
/// `every` of them) recurring, daily in [`RECURRENCE_TIMEZONE`], written directly as the store
/// writes a task whose recurrence is set: rule and zone, `recurrence_start` equal to the due
/// date, and open (a completion advances a recurring task, it never stays completed). A task
/// without a due date gets one, tomorrow at this time. `task_ids` holds each user's task ids;
/// returns each user's recurring ones.
pub async fn make_recurring(
    url: &str,
    task_ids: &[&[Uuid]],
    every: usize,
) -> Result<Vec<Vec<Uuid>>, String> {
    let every = every.max(1);
    let chosen: Vec<Vec<Uuid>> = task_ids
        .iter()
        .map(|ids| ids.iter().step_by(every).copied().collect())
        .collect();
    let all: Vec<Uuid> = chosen.iter().flatten().copied().collect();
    let tomorrow = Utc::now().timestamp_millis() + 86_400_000;
    let result = if url.starts_with("postgres") {
        recurring_pg(url, &all, tomorrow).await
    } else {
        recurring_sqlite(url, &all, tomorrow).await
    };
    result.map_err(|e| format!("make tasks recurring: {e}"))?;
    Ok(chosen)
}

async fn recurring_pg(url: &str, ids: &[Uuid], tomorrow_ms: i64) -> Result<(), sqlx::Error> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let due = Utc.timestamp_millis_opt(tomorrow_ms).single();
    for part in ids.chunks(10_000) {
        sqlx::query(
            "UPDATE tasks SET recurrence_rule = $1, recurrence_timezone = $2, \
             due_at = COALESCE(due_at, $3), recurrence_start = COALESCE(due_at, $3), \
             completed = FALSE, completed_at = NULL WHERE id = ANY($4)",
        )
        .bind(RECURRENCE_RULE)
        .bind(RECURRENCE_TIMEZONE)
        .bind(due)
        .bind(part)
        .execute(&mut conn)
        .await?;
    }
    // As after seeding: the planner's statistics and the visibility map up to date.
    sqlx::raw_sql("VACUUM (ANALYZE) tasks")
        .execute(&mut conn)
        .await?;
    let _ = conn.close().await;
    Ok(())
}

async fn recurring_sqlite(url: &str, ids: &[Uuid], tomorrow_ms: i64) -> Result<(), sqlx::Error> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
    let opts = SqliteConnectOptions::from_str(url)?;
    let mut conn = SqliteConnection::connect_with(&opts).await?;
    let mut tx = conn.begin().await?;
    for part in ids.chunks(500) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("UPDATE tasks SET recurrence_rule = ");
        q.push_bind(RECURRENCE_RULE)
            .push(", recurrence_timezone = ")
            .push_bind(RECURRENCE_TIMEZONE)
            .push(", due_at = COALESCE(due_at, ")
            .push_bind(tomorrow_ms)
            .push("), recurrence_start = COALESCE(due_at, ")
            .push_bind(tomorrow_ms)
            .push("), completed = 0, completed_at = NULL WHERE id IN (");
        let mut ids = q.separated(", ");
        for id in part {
            ids.push_bind(*id);
        }
        q.push(")");
        q.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    let _ = conn.close().await;
    Ok(())
}

/// Rows per multi-row INSERT on SQLite (19 columns: 19,000 parameters of SQLite's 32,766).
const SQLITE_ROWS_PER_INSERT: usize = 1_000;

async fn seed_sqlite(
    url: &str,
    spec: &Spec,
    rng: &mut Gen,
    now_ms: i64,
) -> Result<(Vec<SeededUser>, usize, usize), sqlx::Error> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
    let opts = SqliteConnectOptions::from_str(url)?.foreign_keys(true);
    let mut conn = SqliteConnection::connect_with(&opts).await?;
    sqlx::raw_sql("BEGIN").execute(&mut conn).await?;
    // As on PostgreSQL: into empty tables, load without the secondary indexes and recreate them
    // verbatim (from sqlite_master) in the same transaction.
    let empty: bool = sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM tasks)")
        .fetch_one(&mut conn)
        .await?;
    let indexes: Vec<(String, String)> = if empty {
        sqlx::query_as(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' \
             AND tbl_name IN ('tasks', 'task_tags') AND sql IS NOT NULL",
        )
        .fetch_all(&mut conn)
        .await?
    } else {
        Vec::new()
    };
    for (name, _) in &indexes {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP INDEX \"{name}\"")))
            .execute(&mut conn)
            .await?;
    }
    let mut chunks = Chunks::new(spec, rng, now_ms);
    while let Some(mut chunk) = chunks.next_chunk() {
        if !empty {
            for u in &mut chunk {
                let inbox: Option<Uuid> =
                    sqlx::query_scalar("SELECT id FROM lists WHERE user_id = ?1 AND is_inbox")
                        .bind(u.user.as_str())
                        .fetch_optional(&mut conn)
                        .await?;
                u.reuse_inbox(inbox);
            }
        }
        let rows: Vec<(&str, &Row)> = chunk
            .iter()
            .flat_map(|u| u.rows.iter().map(move |r| (u.user.as_str(), r)))
            .collect();
        let lists: Vec<(&str, i64, NewList)> = chunk
            .iter()
            .flat_map(|u| {
                let created = u.lists_created_at();
                u.new_lists().map(move |l| (u.user.as_str(), created, l))
            })
            .collect();
        for part in lists.chunks(SQLITE_ROWS_PER_INSERT) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO lists (id, user_id, name, is_inbox, position, created_at, \
                 updated_at, version) ",
            );
            q.push_values(part, |mut b, (user, created, l)| {
                b.push_bind(l.id)
                    .push_bind(*user)
                    .push_bind(l.name)
                    .push_bind(l.is_inbox)
                    .push_bind(l.position.as_str())
                    .push_bind(*created)
                    .push_bind(*created)
                    .push_bind(1_i64);
            });
            q.build().execute(&mut conn).await?;
        }
        for part in rows.chunks(SQLITE_ROWS_PER_INSERT) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO tasks (id, user_id, title, title_lc, description, description_lc, \
                 completed, completed_at, priority, tags, due_at, created_at, updated_at, \
                 version, search_bits_lo, search_bits_hi, list_id, parent_id, position) ",
            );
            q.push_values(part, |mut b, (user, r)| {
                let (title_lc, description_lc) = r.lowercased();
                let [lo, hi] = todo_store::search_signature(&title_lc, description_lc.as_deref());
                b.push_bind(r.id)
                    .push_bind(*user)
                    .push_bind(r.title.as_str())
                    .push_bind(title_lc)
                    .push_bind(r.description.as_deref())
                    .push_bind(description_lc)
                    .push_bind(r.completed)
                    .push_bind(r.completed_at())
                    .push_bind(r.priority)
                    .push_bind(r.tags_json())
                    .push_bind(r.due_at)
                    .push_bind(r.created_at)
                    .push_bind(r.created_at)
                    .push_bind(1_i64)
                    .push_bind(lo)
                    .push_bind(hi)
                    .push_bind(r.list_id)
                    .push_bind(r.parent_id)
                    .push_bind(r.position.as_str());
            });
            q.build().execute(&mut conn).await?;
        }
        let tag_rows: Vec<(&str, &str, Uuid)> = rows
            .iter()
            .flat_map(|(u, r)| r.tags.iter().map(move |t| (*u, t.as_str(), r.id)))
            .collect();
        // 3 columns: 3,000 rows are 9,000 parameters.
        for part in tag_rows.chunks(3 * SQLITE_ROWS_PER_INSERT) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO task_tags (user_id, tag, task_id) ",
            );
            q.push_values(part, |mut b, (user, tag, id)| {
                b.push_bind(*user).push_bind(*tag).push_bind(*id);
            });
            q.build().execute(&mut conn).await?;
        }
        chunks.written(&chunk);
    }
    for (_, definition) in &indexes {
        sqlx::raw_sql(sqlx::AssertSqlSafe(definition.clone()))
            .execute(&mut conn)
            .await?;
    }
    sqlx::raw_sql("COMMIT").execute(&mut conn).await?;
    let _ = conn.close().await;
    Ok(chunks.finish())
}

/// A small deterministic PRNG (SplitMix64) and the vocabulary of realistic tasks.
#[derive(Debug, Clone)]
pub struct Gen(u64);

const VERBS: &[&str] = &[
    "Review",
    "Write",
    "Call",
    "Email",
    "Buy",
    "Fix",
    "Plan",
    "Book",
    "Prepare",
    "Update",
    "Clean",
    "Schedule",
    "Pay",
    "Renew",
    "Draft",
    "Order",
    "Organize",
    "Read",
    "Submit",
    "Cancel",
    "Pick up",
    "Back up",
    "Test",
    "Refactor",
    "Deploy",
    "Follow up on",
];

const OBJECTS: &[&str] = &[
    "quarterly report",
    "dentist appointment",
    "groceries",
    "the leaky faucet",
    "team offsite",
    "flight to Berlin",
    "tax return",
    "project proposal",
    "car insurance",
    "birthday gift for Mom",
    "garage",
    "invoice",
    "onboarding docs",
    "kitchen",
    "library books",
    "presentation slides",
    "budget spreadsheet",
    "release notes",
    "database migration",
    "newsletter",
    "gym membership",
    "passport",
    "client feedback",
    "pull request",
    "meeting notes",
    "vet appointment",
    "electric bill",
    "conference talk",
    "photo album",
    "bike tires",
    "café reservation",
    "Überweisung an den Vermieter",
    "réunion d'équipe",
    "日本語の宿題",
];

const SUFFIXES: &[&str] = &[
    "",
    "",
    "",
    "",
    " before Friday",
    " for next week",
    " (urgent)",
    " with Sam",
    " again",
    " ASAP",
    " — see thread",
    " #2",
];

const SENTENCES: &[&str] = &[
    "Check the numbers against last quarter before sending.",
    "Ask Priya whether the budget was approved.",
    "Bring the receipts and the signed form.",
    "The link is in the shared drive under /finance/2025.",
    "Call between 9:00 and 11:00, they close early on Fridays.",
    "Remember the 10% discount code from the newsletter.",
    "Blocked until the vendor replies.",
    "Need two quotes: one local, one online.",
    "Don't forget the charger!",
    "See the comments in the last review for context.",
    "Low effort, but it keeps slipping.",
    "Use the new template; the old one has the wrong logo.",
    "Café on the corner takes card only.",
    "Steps:\n- collect inputs\n- draft\n- send for review",
];

/// Tags, most common first (drawn with a skew towards the front).
pub const TAGS: &[&str] = &[
    "work",
    "home",
    "errands",
    "finance",
    "health",
    "urgent",
    "family",
    "shopping",
    "travel",
    "reading",
    "project-x",
    "q3",
    "admin",
    "garden",
    "car",
    "kids",
    "fitness",
    "learning",
    "ops",
    "backend",
    "frontend",
    "personal",
    "someday",
    "waiting",
    "call",
    "email",
    "bills",
    "pets",
    "music",
    "cooking",
];

/// Words that occur in titles, for search queries.
pub const SEARCH_WORDS: &[&str] = &[
    "report", "call", "invoice", "review", "book", "notes", "bill", "team", "fix", "plan",
];

const DAY_MS: i64 = 86_400_000;

impl Gen {
    /// A generator with a fixed seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * n as f64) as usize
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// A uniformly chosen element.
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// A realistic title.
    pub fn title(&mut self) -> String {
        let mut t = format!(
            "{} {}{}",
            self.pick(VERBS),
            self.pick(OBJECTS),
            self.pick(SUFFIXES)
        );
        if self.chance(0.15) {
            let _ = write!(t, " #{}", 100 + self.below(9_900));
        }
        t
    }

    /// A description, or `None` (45 %).
    pub fn description(&mut self) -> Option<String> {
        if self.chance(0.45) {
            return None;
        }
        let n = 1 + self.below(3);
        let parts: Vec<&str> = (0..n).map(|_| self.pick(SENTENCES)).collect();
        Some(parts.join(if self.chance(0.3) { "\n\n" } else { " " }))
    }

    /// 0–4 distinct normalised tags, common ones more likely.
    pub fn tags(&mut self) -> Vec<String> {
        let n = [0, 1, 1, 2, 2, 2, 3, 4][self.below(8)];
        let mut out: Vec<String> = Vec::with_capacity(n);
        while out.len() < n {
            let r = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let tag = TAGS[((r * r) * TAGS.len() as f64) as usize];
            if !out.iter().any(|t| t == tag) {
                out.push(tag.to_owned());
            }
        }
        out
    }

    /// A priority rank: 25 % low, 55 % medium, 20 % high.
    pub fn priority_rank(&mut self) -> i16 {
        match self.below(100) {
            0..25 => 0,
            25..80 => 1,
            _ => 2,
        }
    }

    /// A due date around `base_ms` (55 % of tasks have one): some at midnight UTC.
    pub fn due(&mut self, base_ms: i64) -> Option<i64> {
        if !self.chance(0.55) {
            return None;
        }
        let offset = (self.below(70 * 24) as i64 - 10 * 24) * 3_600_000;
        let t = base_ms + offset;
        Some(if self.chance(0.5) {
            t - t.rem_euclid(DAY_MS)
        } else {
            t
        })
    }

    /// The rows of one user: `n` tasks created over the past year, oldest first.
    fn user_rows(&mut self, n: usize, now_ms: i64) -> Vec<Row> {
        let start = now_ms - 365 * DAY_MS;
        let step = (365 * DAY_MS) / (n.max(1) as i64);
        (0..n)
            .map(|i| {
                let jitter = self.below(step.max(1) as usize) as i64;
                let created_at = (start + i as i64 * step + jitter).min(now_ms);
                let id = Uuid::new_v7(uuid::Timestamp::from_unix(
                    uuid::NoContext,
                    (created_at / 1000) as u64,
                    ((created_at % 1000) * 1_000_000) as u32,
                ));
                Row {
                    id,
                    title: self.title(),
                    description: self.description(),
                    completed: self.chance(0.3),
                    priority: self.priority_rank(),
                    tags: self.tags(),
                    due_at: self.due(created_at),
                    created_at,
                    list_id: Uuid::nil(),
                    parent_id: None,
                    position: String::new(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use todo_store::TaskQuery;

    #[test]
    fn copy_text_escapes() {
        let mut s = String::new();
        copy_text(&mut s, "a\\b\tc\nd\re");
        assert_eq!(s, "a\\\\b\\tc\\nd\\re");
    }

    #[test]
    fn rows_are_valid_tasks() {
        let mut g = Gen::new(1);
        let now = Utc::now().timestamp_millis();
        let rows = g.user_rows(500, now);
        assert!(rows.windows(2).all(|w| w[0].created_at <= w[1].created_at));
        for r in &rows {
            assert!(!r.title.is_empty() && r.title.chars().count() <= 200);
            assert_eq!(r.title, r.title.trim());
            assert!((0..=2).contains(&r.priority));
            assert!(r.tags.len() <= 4);
            assert_eq!(r.id.get_version_num(), 7);
            assert!(r.created_at <= now);
        }
    }

    #[test]
    fn trees_are_spread_over_the_lists() {
        let mut g = Gen::new(7);
        let mut rows = g.user_rows(2_000, Utc::now().timestamp_millis());
        let lists: Vec<Uuid> = (0..LISTS_PER_USER).map(|_| Uuid::now_v7()).collect();
        arrange(&mut rows, &lists, &mut g);
        let by_id: std::collections::HashMap<Uuid, &Row> = rows.iter().map(|r| (r.id, r)).collect();
        let subtasks = rows.iter().filter(|r| r.parent_id.is_some()).count();
        assert!(
            (300..=500).contains(&subtasks),
            "{subtasks} of 2000 are subtasks"
        );
        for l in &lists {
            let n = rows.iter().filter(|r| r.list_id == *l).count();
            assert!((100..=300).contains(&n), "{n} tasks in a list");
        }
        let mut seen: std::collections::HashMap<(Uuid, Option<Uuid>), &str> = Default::default();
        for r in &rows {
            if let Some(p) = r.parent_id {
                let parent = by_id[&p];
                assert_eq!(
                    parent.list_id, r.list_id,
                    "a subtask is in its parent's list"
                );
                assert!(parent.parent_id.is_none() && parent.created_at <= r.created_at);
                assert!(
                    !parent.completed || r.completed,
                    "a completed parent's subtasks are completed"
                );
            }
            assert!(
                todo_store::position::is_valid(&r.position),
                "{}",
                r.position
            );
            // Siblings' positions ascend in creation order.
            if let Some(prev) = seen.insert((r.list_id, r.parent_id), &r.position) {
                assert!(
                    prev.as_bytes() < r.position.as_bytes(),
                    "{prev} < {}",
                    r.position
                );
            }
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// Seeds a SQLite file and reads it back through the store.
    #[test]
    fn sqlite_rows_read_back_through_the_store() {
        runtime().block_on(read_back(test_support::TestDb::sqlite()));
    }

    /// Seeds a fresh PostgreSQL database and reads it back through the store.
    #[test]
    #[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
    fn postgres_rows_read_back_through_the_store() {
        runtime().block_on(async {
            read_back(test_support::TestDb::postgres().await).await;
        });
    }

    /// A fifth of each user's tasks become recurring, and completing one advances it a day
    /// through the store, as for a task made recurring through the API.
    async fn recurring(db: test_support::TestDb) {
        let store = db.store().await;
        let spec = Spec {
            users: 2,
            tasks_per_user: 10,
            skew: false,
        };
        let seeded = seed(&db.url, &spec).await.expect("seed");
        let ids: Vec<&[Uuid]> = seeded.users.iter().map(|u| u.task_ids.as_slice()).collect();
        let chosen = make_recurring(&db.url, &ids, 5).await.expect("recurring");
        assert_eq!(chosen.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2]);
        let user = &seeded.users[1];
        let tasks = store.for_user(&user.id).expect("user");
        for &id in &chosen[1] {
            let t = tasks.get(id).await.expect("get");
            let rule = t.recurrence.clone().expect("recurring");
            assert_eq!(
                (rule.rule.as_str(), rule.timezone.as_str()),
                (RECURRENCE_RULE, RECURRENCE_TIMEZONE)
            );
            assert!(!t.completed && t.due_at.is_some());
            assert_eq!(t.recurrence_start, t.due_at);
            let done = tasks.set_completed(id, None, None).await.expect("complete");
            assert!(!done.completed, "a recurring task stays open");
            let (before, after) = (t.due_at.expect("due"), done.due_at.expect("due"));
            let hours = (after - before).num_hours();
            assert!((23..=25).contains(&hours), "a day later: {hours} h");
            assert!(done.last_completed_at.is_some());
        }
        let other = tasks.get(user.task_ids[1]).await.expect("get");
        assert!(other.recurrence.is_none());
        store.close().await;
        db.cleanup().await;
    }

    #[test]
    fn sqlite_tasks_made_recurring_advance_when_completed() {
        runtime().block_on(recurring(test_support::TestDb::sqlite()));
    }

    #[test]
    #[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
    fn postgres_tasks_made_recurring_advance_when_completed() {
        runtime().block_on(async {
            recurring(test_support::TestDb::postgres().await).await;
        });
    }

    /// The index names on `tasks` and `task_tags`, sorted.
    async fn index_names(url: &str) -> Vec<String> {
        let sql = if url.starts_with("postgres") {
            "SELECT indexname::text FROM pg_indexes \
             WHERE tablename IN ('tasks', 'task_tags') ORDER BY 1"
        } else {
            "SELECT name FROM sqlite_master WHERE type = 'index' \
             AND tbl_name IN ('tasks', 'task_tags') ORDER BY 1"
        };
        if url.starts_with("postgres") {
            let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
            sqlx::query_scalar(sql)
                .fetch_all(&mut c)
                .await
                .expect("indexes")
        } else {
            let mut c = sqlx::SqliteConnection::connect(url).await.expect("connect");
            sqlx::query_scalar(sql)
                .fetch_all(&mut c)
                .await
                .expect("indexes")
        }
    }

    /// Every row decodes, the indexes dropped for the load are back, the store's own listing,
    /// search and tag filter see what was written, and seeding again adds rows.
    async fn read_back(db: test_support::TestDb) {
        let store = db.store().await;
        let indexes = index_names(&db.url).await;
        let spec = Spec {
            users: 3,
            tasks_per_user: 30,
            skew: false,
        };
        let seeded = seed(&db.url, &spec).await.expect("seed");
        assert_eq!(seeded.tasks, 90);
        assert_eq!(index_names(&db.url).await, indexes, "indexes rebuilt");
        let user = &seeded.users[1];
        let tasks = store.for_user(&user.id).expect("user");
        // The lists, in order, each with its open tasks counted; the trees as seeded.
        let lists = tasks.lists().await.expect("lists");
        assert_eq!(
            lists.iter().map(|l| l.id).collect::<Vec<_>>(),
            user.list_ids
        );
        assert!(lists[0].is_inbox && lists.iter().skip(1).all(|l| !l.is_inbox));
        let per_list = TaskQuery {
            limit: 100,
            status: todo_store::Status::Pending,
            ..TaskQuery::default()
        };
        for l in &lists {
            let open = tasks
                .list(&TaskQuery {
                    list_id: Some(l.id),
                    ..per_list.clone()
                })
                .await
                .expect("list's tasks");
            assert_eq!(open.total, l.open_count, "{}", l.name);
        }
        let parent = *user.parent_ids.first().expect("a task with subtasks");
        let kids = tasks
            .list(&TaskQuery {
                parent: todo_store::ParentFilter::Of(parent),
                sort: todo_store::SortKey::Position,
                order: todo_store::Order::Asc,
                limit: 100,
                ..TaskQuery::default()
            })
            .await
            .expect("subtasks");
        assert!(!kids.tasks.is_empty());
        assert!(
            kids.tasks
                .windows(2)
                .all(|w| w[0].created_at <= w[1].created_at),
            "positions follow creation"
        );
        let all = TaskQuery {
            limit: 100,
            ..TaskQuery::default()
        };
        let page = tasks.list(&all).await.expect("list");
        assert_eq!(page.total, 30);
        let newest = page.tasks.first().expect("a task");
        assert_eq!(newest.id, *user.task_ids.last().expect("an id"));
        assert_eq!(newest.version, 1);
        assert_eq!(newest.created_at, newest.updated_at);
        for t in &page.tasks {
            assert_eq!(t.completed_at.is_some(), t.completed);
        }
        let one = tasks.get(user.task_ids[0]).await.expect("get");
        let word = one.title.split(' ').next_back().expect("word");
        let found = tasks
            .list(&TaskQuery {
                q: Some(word.to_uppercase()),
                ..all.clone()
            })
            .await
            .expect("search");
        assert!(
            found.tasks.iter().any(|t| t.id == one.id),
            "search {word:?}"
        );
        if let Some(tag) = one.tags.first() {
            let tagged = tasks
                .list(&TaskQuery {
                    tags: vec![tag.clone()],
                    ..all.clone()
                })
                .await
                .expect("tag filter");
            assert!(tagged.tasks.iter().any(|t| t.id == one.id));
        }
        let again = seed(&db.url, &spec)
            .await
            .expect("seed a non-empty database");
        assert_eq!(again.tasks, 90);
        assert_eq!(tasks.list(&all).await.expect("list").total, 60);
        assert_eq!(index_names(&db.url).await, indexes);
        store.close().await;
        db.cleanup().await;
    }
}
