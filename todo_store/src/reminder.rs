//! Reminders: up to five per task, each at a fixed time or a duration before the due date.
//!
//! A task's reminders are stored twice, like its tags: as a JSON array on the task row (what
//! reads return) and as one row each in `reminders`, which the scheduler reads. A row holds the
//! reminder's next fire time (`fire_at`: its `at`, or `due_at - before_due`) and its state:
//!
//! - **pending** until it fires;
//! - **fired** once [`Store::fire_due_reminders`](crate::Store::fire_due_reminders) handed it
//!   out; `fired_for` keeps the time it fired for, and the same transaction appends a
//!   `reminder` record to its user's change log (the `reminder.fired` event of
//!   [`UserTasks::subscribe`]);
//! - **skipped** when its time had already passed when it was set, or its task was completed
//!   when it came due. Neither ever fires.
//!
//! Every write that changes a task's reminders or its due date recomputes the rows in the same
//! transaction. A reminder whose fire time is unchanged keeps its state (a fired one does not
//! fire again); one whose time changed is pending again if that time is still ahead. So when a
//! recurring task advances, its `before_due` reminders re-arm for the new occurrence, and its
//! `at` reminders stay as they were.
//!
//! Ids: a write that gives reminders keeps the id of each one identical (same kind, same value)
//! to one the task already has, in order; the others get new ids. Sending back the reminders a
//! read returned (without their ids) therefore changes nothing.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use sea_query::{
    DeleteStatement, Expr, ExprTrait, Func, InsertStatement, LockBehavior, LockType, OnConflict,
    Order, Query, SelectStatement, UpdateStatement,
};

use crate::backend::{DueReminder, OptTs, TaskRow, Tx};
use crate::error::StoreError;
use crate::query::{COLUMNS, Dialect, Scope, TASKS};
use crate::sync::{self, EntityKind, Record};
use crate::task::{Checker, Schedule, Task};
use crate::{Store, UserTasks};

/// Most reminders on one task.
pub const REMINDERS_MAX: usize = 5;
/// Longest `before_due`: 30 days.
pub const BEFORE_DUE_MAX_SECS: i64 = 30 * 86_400;

/// When a reminder fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReminderKind {
    /// At this instant.
    At(DateTime<Utc>),
    /// This long before the task's `due_at` (0 to 30 days, millisecond precision).
    BeforeDue(Duration),
}

/// A reminder of a task, as reads return it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "ReminderJson", into = "ReminderJson")]
pub struct Reminder {
    /// Assigned by the store (UUIDv7); kept across writes that repeat the reminder.
    pub id: Uuid,
    /// When it fires.
    pub kind: ReminderKind,
}

/// A reminder as written: raw input, checked by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReminderInput {
    /// At this instant.
    At(DateTime<Utc>),
    /// An ISO 8601 duration before `due_at`, `PT0S` to `P30D` (e.g. `PT15M`, `P1DT2H`, `P1W`).
    BeforeDue(String),
}

impl ReminderKind {
    /// When a reminder of this kind fires for a task due at `due_at`; `None` for a
    /// `before_due` reminder of a task without a due date.
    pub fn fire_at(&self, due_at: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        match *self {
            ReminderKind::At(t) => Some(t),
            ReminderKind::BeforeDue(d) => due_at.and_then(|due| due.checked_sub_signed(d)),
        }
    }
}

/// The wire and column form: `{"id", "at"}` or `{"id", "before_due"}`.
#[derive(Serialize, Deserialize)]
struct ReminderJson {
    id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    before_due: Option<String>,
}

impl From<Reminder> for ReminderJson {
    fn from(r: Reminder) -> Self {
        let (at, before_due) = match r.kind {
            ReminderKind::At(t) => (Some(t), None),
            ReminderKind::BeforeDue(d) => (None, Some(format_duration(d))),
        };
        ReminderJson {
            id: r.id,
            at,
            before_due,
        }
    }
}

impl TryFrom<ReminderJson> for Reminder {
    type Error = String;
    fn try_from(j: ReminderJson) -> Result<Self, String> {
        let kind = match (j.at, j.before_due) {
            (Some(t), None) => ReminderKind::At(t),
            (None, Some(d)) => ReminderKind::BeforeDue(parse_duration(&d)?),
            _ => return Err("a reminder has exactly one of at and before_due".into()),
        };
        Ok(Reminder { id: j.id, kind })
    }
}

/// The `reminders` column of a task: a JSON array as [`Reminder`] serialises.
pub(crate) fn to_json(reminders: &[Reminder]) -> String {
    if reminders.is_empty() {
        return "[]".to_owned();
    }
    serde_json::to_string(reminders).unwrap_or_else(|_| "[]".to_owned())
}

/// Reads a `reminders` column.
pub(crate) fn from_json(json: &str) -> Result<Vec<Reminder>, serde_json::Error> {
    if json == "[]" {
        return Ok(Vec::new());
    }
    serde_json::from_str(json)
}

/// Parses an ISO 8601 duration of days, hours, minutes and seconds: `P[nW]` or
/// `P[nD][T[nH][nM][n[.fff]S]]`, at least one component. Years and months are refused (their
/// length varies), as are signs and fractions finer than a millisecond.
///
/// A hand-written parser of this small grammar rather than a crate: the ones that parse ISO
/// 8601 durations bring a parser-combinator library or a whole date-time library for it.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let rest = text.strip_prefix('P').ok_or(DURATION_MSG)?;
    let (date, time) = match rest.split_once('T') {
        Some((_, "")) => return Err(DURATION_MSG.into()),
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let (ms, parts) = match (date.strip_suffix('W'), time) {
        (Some(_), None) => components(date, &[(b'W', 7 * 86_400_000)], false)?,
        _ => {
            let (days, n) = components(date, &[(b'D', 86_400_000)], false)?;
            match time {
                None => (days, n),
                Some(t) => {
                    let (ms, m) =
                        components(t, &[(b'H', 3_600_000), (b'M', 60_000), (b'S', 1_000)], true)?;
                    if m == 0 {
                        return Err(DURATION_MSG.into());
                    }
                    (days.checked_add(ms).ok_or(DURATION_MSG)?, n + m)
                }
            }
        }
    };
    if parts == 0 {
        return Err(DURATION_MSG.into());
    }
    if ms > BEFORE_DUE_MAX_SECS * 1000 {
        return Err("must be at most P30D".into());
    }
    Ok(Duration::milliseconds(ms))
}

const DURATION_MSG: &str = "must be an ISO 8601 duration such as PT15M, PT1H30M or P1D";

/// Reads `<digits><unit>…` with each of `units` (designator, milliseconds) at most once and in
/// order; a fraction of up to 3 digits is allowed on the last unit when `fraction` is set.
/// Returns the milliseconds and how many components there were.
fn components(s: &str, units: &[(u8, i64)], fraction: bool) -> Result<(i64, u32), String> {
    let mut s = s.as_bytes();
    let (mut ms, mut parts, mut next_unit) = (0i64, 0u32, 0usize);
    while !s.is_empty() {
        let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return Err(DURATION_MSG.into());
        }
        let whole = number(&s[..digits])?;
        s = &s[digits..];
        let mut frac_ms = 0;
        if let Some(b'.' | b',') = s.first() {
            let f = s[1..].iter().take_while(|b| b.is_ascii_digit()).count();
            if f == 0 || f > 3 {
                return Err(DURATION_MSG.into());
            }
            frac_ms = number(&s[1..=f])? * 10i64.pow(3 - f as u32);
            s = &s[1 + f..];
            if !fraction || s != [units[units.len() - 1].0] {
                return Err(DURATION_MSG.into());
            }
        }
        let unit = *s.first().ok_or(DURATION_MSG)?;
        let at = units
            .get(next_unit..)
            .and_then(|rest| rest.iter().position(|(u, _)| *u == unit))
            .ok_or(DURATION_MSG)?;
        let per = units[next_unit + at].1;
        next_unit += at + 1;
        ms = whole
            .checked_mul(per)
            .and_then(|w| w.checked_add(frac_ms))
            .and_then(|w| w.checked_add(ms))
            .ok_or(DURATION_MSG)?;
        parts += 1;
        s = &s[1..];
    }
    Ok((ms, parts))
}

fn number(digits: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| DURATION_MSG.to_owned())
}

/// Writes a duration the way [`parse_duration`] reads it, in its shortest form: `PT0S`,
/// `PT15M`, `P1DT2H`, `PT1.5S`.
pub fn format_duration(d: Duration) -> String {
    let total = Ord::max(d.num_milliseconds(), 0);
    if total == 0 {
        return "PT0S".to_owned();
    }
    let (days, rest) = (total / 86_400_000, total % 86_400_000);
    let (hours, rest) = (rest / 3_600_000, rest % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let (secs, millis) = (rest / 1000, rest % 1000);
    let mut out = String::from("P");
    if days > 0 {
        out.push_str(&format!("{days}D"));
    }
    if hours + minutes + secs + millis > 0 {
        out.push('T');
        if hours > 0 {
            out.push_str(&format!("{hours}H"));
        }
        if minutes > 0 {
            out.push_str(&format!("{minutes}M"));
        }
        if millis > 0 {
            let frac = format!("{millis:03}");
            out.push_str(&format!("{secs}.{}S", frac.trim_end_matches('0')));
        } else if secs > 0 {
            out.push_str(&format!("{secs}S"));
        }
    }
    out
}

impl Checker {
    /// Checks reminders: at most [`REMINDERS_MAX`], each time in range, each duration valid.
    pub(crate) fn reminders(&mut self, raw: Vec<ReminderInput>) -> Vec<ReminderKind> {
        if raw.len() > REMINDERS_MAX {
            self.fail("reminders", format!("at most {REMINDERS_MAX} reminders"));
        }
        let mut out = Vec::with_capacity(raw.len().min(REMINDERS_MAX));
        for (i, r) in raw.into_iter().enumerate() {
            match r {
                ReminderInput::At(t) => out.push(ReminderKind::At(
                    self.timestamp(&format!("reminders[{i}].at"), t),
                )),
                ReminderInput::BeforeDue(text) => match parse_duration(text.trim()) {
                    Ok(d) => out.push(ReminderKind::BeforeDue(d)),
                    Err(m) => self.fail(&format!("reminders[{i}].before_due"), m),
                },
            }
        }
        out
    }
}

/// Gives `kinds` ids: each keeps the id of the first not yet taken reminder of `old` that is
/// identical; the others get new ones.
pub(crate) fn with_ids(kinds: Vec<ReminderKind>, old: &[Reminder]) -> Vec<Reminder> {
    let mut taken = vec![false; old.len()];
    kinds
        .into_iter()
        .map(|kind| {
            let same = old
                .iter()
                .enumerate()
                .find(|(i, r)| !taken[*i] && r.kind == kind);
            let id = match same {
                Some((i, r)) => {
                    taken[i] = true;
                    r.id
                }
                None => Uuid::now_v7(),
            };
            Reminder { id, kind }
        })
        .collect()
}

/// A reminder row's state (the `state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Waiting for its time.
    Pending = 0,
    /// Handed out by the scheduler.
    Fired = 1,
    /// Never fires: its time had passed when it was set, or its task was completed then.
    Skipped = 2,
}

/// A reminder as the scheduler stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub id: Uuid,
    pub fire_at: Option<DateTime<Utc>>,
    pub state: i16,
}

/// The rows task `t`'s reminders should have after a write at `now`, given the rows it had:
/// a row whose fire time is unchanged keeps its state; any other is pending if its time is
/// still ahead, else skipped.
pub(crate) fn rows_for(t: &Task, old: &[Row], now: DateTime<Utc>) -> Vec<Row> {
    t.reminders
        .iter()
        .map(|r| {
            let fire_at = r.kind.fire_at(t.due_at);
            match old.iter().find(|o| o.id == r.id && o.fire_at == fire_at) {
                Some(o) => o.clone(),
                None => Row {
                    id: r.id,
                    fire_at,
                    state: match fire_at {
                        Some(f) if f > now => State::Pending as i16,
                        _ => State::Skipped as i16,
                    },
                },
            }
        })
        .collect()
}

/// Whether a write from `before` to `after` must rewrite the task's reminder rows.
pub(crate) fn rows_change(before: &Schedule, after: &Task) -> bool {
    before.reminders != after.reminders
        || (before.due_at != after.due_at
            && after
                .reminders
                .iter()
                .any(|r| matches!(r.kind, ReminderKind::BeforeDue(_))))
}

/// A reminder handed out by [`Store::fire_due_reminders`](crate::Store::fire_due_reminders):
/// what a `reminder.fired` event carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredReminder {
    /// The task's owner.
    pub user_id: String,
    /// The task, as it is when the reminder fires.
    pub task: Task,
    /// The reminder.
    pub reminder: Reminder,
    /// The time it was due to fire.
    pub scheduled_for: DateTime<Utc>,
}

// ---- storage ----------------------------------------------------------------------------------

/// The scheduler's table.
const REMINDERS: &str = "reminders";

impl Scope<'_> {
    /// A task's reminder rows, locked for the write (a scheduler firing one of them finishes
    /// first, or skips them).
    pub(crate) fn reminder_rows(&self, task_id: Uuid) -> SelectStatement {
        Query::select()
            .columns(["id", "fire_at", "state"].map(|c| (REMINDERS, c)))
            .from(REMINDERS)
            .and_where(Expr::col((REMINDERS, "user_id")).eq(self.user_id))
            .and_where(Expr::col((REMINDERS, "task_id")).eq(task_id))
            .lock(LockType::Update)
            .to_owned()
    }

    /// Deletes a task's reminder rows other than `keep`.
    pub(crate) fn delete_reminder_rows(&self, task_id: Uuid, keep: &[Uuid]) -> DeleteStatement {
        let mut d = Query::delete();
        d.from_table(REMINDERS)
            .and_where(Expr::col("user_id").eq(self.user_id))
            .and_where(Expr::col("task_id").eq(task_id));
        if !keep.is_empty() {
            d.and_where(Expr::col("id").is_not_in(keep.iter().copied()));
        }
        d
    }

    /// Writes a task's reminder rows (inserted, or their time and state replaced).
    pub(crate) fn upsert_reminder_rows(&self, task_id: Uuid, rows: &[Row]) -> InsertStatement {
        let d = self.dialect;
        let mut s = Query::insert();
        s.into_table(REMINDERS)
            .columns(["id", "user_id", "task_id", "fire_at", "state"])
            .on_conflict(
                OnConflict::column("id")
                    .update_columns(["fire_at", "state"])
                    .to_owned(),
            );
        for r in rows {
            s.values_panic([
                r.id.into(),
                self.user_id.into(),
                task_id.into(),
                d.ts_opt(r.fire_at).into(),
                r.state.into(),
            ]);
        }
        s
    }

    /// The user's reminder rows of `ids` (not empty) with the time each last fired for: `id,
    /// task_id, fired_for`. What a `reminder.fired` record of the change log is read with.
    pub(crate) fn fired_reminders(&self, ids: &[Uuid]) -> SelectStatement {
        Query::select()
            .columns(["id", "task_id", "fired_for"].map(|c| (REMINDERS, c)))
            .from(REMINDERS)
            .and_where(Expr::col((REMINDERS, "user_id")).eq(self.user_id))
            .and_where(Expr::col((REMINDERS, "id")).is_in(ids.iter().copied()))
            .to_owned()
    }
}

/// Up to `limit` pending reminders of any user due at `now`, earliest first: `id, user_id,
/// task_id, fire_at`. On PostgreSQL the rows are locked, skipping those another transaction
/// holds (`FOR UPDATE SKIP LOCKED`), so schedulers on several instances never claim one row
/// twice; SQLite writers are serialised and ignore the clause.
fn due_rows(dialect: Dialect, now: DateTime<Utc>, limit: u64) -> SelectStatement {
    Query::select()
        .columns(["id", "user_id", "task_id", "fire_at"].map(|c| (REMINDERS, c)))
        .from(REMINDERS)
        .and_where(Expr::col((REMINDERS, "state")).eq(State::Pending as i16))
        .and_where(Expr::col((REMINDERS, "fire_at")).lte(dialect.ts(now)))
        .order_by((REMINDERS, "fire_at"), Order::Asc)
        .order_by((REMINDERS, "id"), Order::Asc)
        .limit(limit)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .to_owned()
}

/// The tasks of `ids`, of any user (the rows are checked against each reminder's user).
fn tasks_by_id(ids: &[Uuid]) -> SelectStatement {
    Query::select()
        .columns(COLUMNS.map(|c| (TASKS, c)))
        .from(TASKS)
        .and_where(Expr::col((TASKS, "id")).is_in(ids.iter().copied()))
        .to_owned()
}

/// Sets the state of the reminder rows `ids`.
fn set_state(ids: &[Uuid], state: State) -> UpdateStatement {
    Query::update()
        .table(REMINDERS)
        .value("state", state as i16)
        .and_where(Expr::col("id").is_in(ids.iter().copied()))
        .to_owned()
}

/// Marks the reminder rows `ids` fired, each for the time it was due: `fired_for` takes the
/// row's `fire_at` (the claim holds the row, so that is the time the firing reports). It keeps
/// that time after the row re-arms for a later occurrence, for the change log's readers.
fn mark_fired(ids: &[Uuid]) -> UpdateStatement {
    Query::update()
        .table(REMINDERS)
        .value("state", State::Fired as i16)
        .value("fired_for", Expr::col("fire_at"))
        .and_where(Expr::col("id").is_in(ids.iter().copied()))
        .to_owned()
}

/// The earliest time a pending reminder is due.
fn next_due() -> SelectStatement {
    Query::select()
        .expr(Func::min(Expr::col((REMINDERS, "fire_at"))))
        .from(REMINDERS)
        .and_where(Expr::col((REMINDERS, "state")).eq(State::Pending as i16))
        .to_owned()
}

impl UserTasks {
    /// Rewrites the reminder rows of `t` after a write at `now` (see [`rows_for`]), inside the
    /// write's transaction.
    pub(crate) async fn write_reminder_rows(
        &self,
        tx: &mut Tx<'_>,
        t: &Task,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let scope = self.scope();
        let old: Vec<Row> = tx.fetch_all_as(&scope.reminder_rows(t.id)).await?;
        let new = rows_for(t, &old, now);
        let keep: Vec<Uuid> = new.iter().map(|r| r.id).collect();
        if old.iter().any(|o| !keep.contains(&o.id)) {
            tx.execute(&scope.delete_reminder_rows(t.id, &keep)).await?;
        }
        let changed: Vec<Row> = new.into_iter().filter(|r| !old.contains(r)).collect();
        if !changed.is_empty() {
            tx.execute(&scope.upsert_reminder_rows(t.id, &changed))
                .await?;
        }
        Ok(())
    }
}

/// Records fired reminders inside the transaction that claimed them: marks their rows fired
/// (with the time each fired for) and appends one `reminder` record per reminder to its user's
/// change log, one append (one seq) per user, users in id order (so two schedulers' rounds
/// take the users' log rows in the same order). A reminder's firing is thus logged exactly when
/// it is marked fired: never lost, never twice. Returns the users whose log moved, with their
/// seq, to wake their subscribers after the commit.
async fn record_fired(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    fired: &[FiredReminder],
) -> Result<Vec<(String, i64)>, StoreError> {
    if fired.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = fired.iter().map(|f| f.reminder.id).collect();
    tx.execute(&mark_fired(&ids)).await?;
    let mut by_user: BTreeMap<&str, Vec<Record>> = BTreeMap::new();
    for f in fired {
        by_user.entry(&f.user_id).or_default().push(Record {
            kind: EntityKind::Reminder,
            id: f.reminder.id,
            created: false,
            deleted: false,
        });
    }
    let mut users = Vec::with_capacity(by_user.len());
    for (user_id, records) in &mut by_user {
        // One row per record in a statement (an upsert cannot touch a row twice).
        records.sort_unstable_by_key(|r| r.id);
        records.dedup_by_key(|r| r.id);
        let seq = sync::append(tx, dialect, user_id, records, None).await?;
        users.push(((*user_id).to_owned(), seq));
    }
    Ok(users)
}

/// Most reminders one round of [`Store::run_reminder_scheduler`] fires.
pub const SCHEDULER_BATCH: u32 = 500;
/// Longest the scheduler sleeps between rounds: a reminder set on another instance is seen
/// within this.
pub const SCHEDULER_POLL: std::time::Duration = std::time::Duration::from_secs(1);

impl Store {
    /// Fires the reminders due at `now` (at most `limit`), in one short transaction: claims
    /// them (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so concurrent callers on any number of
    /// instances each get different reminders) and marks them fired, logging each firing in
    /// its user's change log in the same transaction (a `reminder.fired` event of
    /// [`UserTasks::subscribe`], whose live subscribers are woken after the commit). Returns
    /// those whose task is not completed, with the task, for the caller to announce; reminders
    /// of completed tasks are marked skipped and never fire. Each reminder is returned (and
    /// logged) exactly once.
    pub async fn fire_due_reminders(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<FiredReminder>, StoreError> {
        let dialect = self.pool.dialect();
        let mut writer = self.pool.writer().await?;
        let mut tx = writer.begin().await?;
        let due: Vec<DueReminder> = tx
            .fetch_all_as(&due_rows(dialect, now, u64::from(Ord::max(limit, 1))))
            .await?;
        if due.is_empty() {
            tx.commit().await?;
            writer.done();
            return Ok(Vec::new());
        }
        let mut task_ids: Vec<Uuid> = due.iter().map(|d| d.2).collect();
        task_ids.sort_unstable();
        task_ids.dedup();
        let tasks: HashMap<Uuid, Task> = tx
            .fetch_all_as::<TaskRow, _>(&tasks_by_id(&task_ids))
            .await?
            .into_iter()
            .map(|t| (t.0.id, t.0))
            .collect();
        let mut fired = Vec::with_capacity(due.len());
        let mut skipped = Vec::new();
        for DueReminder(id, user_id, task_id, fire_at) in due {
            let task = tasks
                .get(&task_id)
                .filter(|t| t.user_id == user_id && !t.completed);
            let reminder = task.and_then(|t| t.reminders.iter().find(|r| r.id == id));
            match (task, reminder, fire_at) {
                (Some(task), Some(reminder), Some(scheduled_for)) => fired.push(FiredReminder {
                    user_id,
                    task: task.clone(),
                    reminder: *reminder,
                    scheduled_for,
                }),
                _ => skipped.push(id),
            }
        }
        if !skipped.is_empty() {
            tx.execute(&set_state(&skipped, State::Skipped)).await?;
        }
        let users = record_fired(&mut tx, dialect, &fired).await?;
        tx.commit().await?;
        writer.done();
        for (user_id, seq) in &users {
            self.hub.committed(user_id, *seq, || None);
        }
        Ok(fired)
    }

    /// When the earliest pending reminder is due (`None` when none is pending), so a scheduler
    /// can sleep until then. It may already be past: fire it.
    pub async fn next_reminder_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let rows: Vec<OptTs> = self.pool.fetch_all_as(&next_due()).await?;
        Ok(rows.into_iter().next().and_then(|r| r.0))
    }

    /// The reminder scheduler, for the host to run as a background task until `shutdown`
    /// resolves: fires due reminders ([`Store::fire_due_reminders`], up to
    /// [`SCHEDULER_BATCH`] a round) and hands each to `on_fired`, then sleeps until the next
    /// one is due or [`SCHEDULER_POLL`], whichever is sooner. Run one per instance: on
    /// PostgreSQL the instances share the work and each reminder fires once; on SQLite the
    /// loop is in-process. A database error is logged and retried after a poll interval; the
    /// loop ends only at shutdown.
    pub async fn run_reminder_scheduler<F>(
        &self,
        shutdown: impl Future<Output = ()>,
        mut on_fired: F,
    ) where
        F: FnMut(FiredReminder),
    {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let wait = match self.scheduler_round(&mut on_fired).await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!(error = %e, "reminder scheduler: retrying");
                    SCHEDULER_POLL
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One round: fires what is due, returns how long to sleep (zero when a full batch fired,
    /// since more may be due).
    async fn scheduler_round<F>(&self, on_fired: &mut F) -> Result<std::time::Duration, StoreError>
    where
        F: FnMut(FiredReminder),
    {
        let fired = self
            .fire_due_reminders(crate::task::now_ms(), SCHEDULER_BATCH)
            .await?;
        let full = fired.len() >= SCHEDULER_BATCH as usize;
        fired.into_iter().for_each(&mut *on_fired);
        if full {
            return Ok(std::time::Duration::ZERO);
        }
        let until_next = match self.next_reminder_at().await? {
            Some(at) => (at - Utc::now()).to_std().unwrap_or_default(),
            None => SCHEDULER_POLL,
        };
        Ok(until_next.min(SCHEDULER_POLL))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_within_range() {
        let ms = |s: &str| parse_duration(s).map(|d| d.num_milliseconds());
        assert_eq!(ms("PT0S"), Ok(0));
        assert_eq!(ms("PT15M"), Ok(900_000));
        assert_eq!(ms("PT1H30M"), Ok(5_400_000));
        assert_eq!(ms("P1DT2H"), Ok(93_600_000));
        assert_eq!(ms("P1W"), Ok(604_800_000));
        assert_eq!(ms("PT1.5S"), Ok(1_500));
        assert_eq!(ms("PT0,25S"), Ok(250));
        assert_eq!(ms("P30D"), Ok(2_592_000_000));
        assert_eq!(ms("PT720H"), Ok(2_592_000_000));
        assert_eq!(ms("P0D"), Ok(0));
        for bad in [
            "",
            "P",
            "PT",
            "P1",
            "PT1",
            "P1M",
            "P1Y",
            "P1DT",
            "-PT1M",
            "pt1m",
            "PT1M2H",
            "PT1H1H",
            "P31D",
            "PT720H1S",
            "P5W",
            "P1W1D",
            "PT1.5M",
            "PT1.5555S",
            "PT.5S",
            "P1DT1D",
            "PT9999999999S",
            "P 1D",
            "PT1S ",
            "P1.5D",
            "P1WT1H",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_format_as_they_parse() {
        for (text, canonical) in [
            ("PT0S", "PT0S"),
            ("P0D", "PT0S"),
            ("PT900S", "PT15M"),
            ("PT90M", "PT1H30M"),
            ("P1DT2H", "P1DT2H"),
            ("P1W", "P7D"),
            ("PT1.5S", "PT1.5S"),
            ("PT0.25S", "PT0.25S"),
            ("P30D", "P30D"),
        ] {
            let d = parse_duration(text).unwrap();
            assert_eq!(format_duration(d), canonical, "{text}");
            assert_eq!(parse_duration(canonical).unwrap(), d);
        }
    }

    #[test]
    fn identical_reminders_keep_their_ids() {
        let t = Utc::now();
        let a = Reminder {
            id: Uuid::now_v7(),
            kind: ReminderKind::At(t),
        };
        let b = Reminder {
            id: Uuid::now_v7(),
            kind: ReminderKind::BeforeDue(Duration::minutes(15)),
        };
        let next = with_ids(
            vec![
                ReminderKind::BeforeDue(Duration::minutes(15)),
                ReminderKind::At(t),
                ReminderKind::At(t),
            ],
            &[a, b],
        );
        assert_eq!((next[0].id, next[1].id), (b.id, a.id));
        assert!(next[2].id != a.id && next[2].id != b.id);
    }

    #[test]
    fn reminders_round_trip_as_json() {
        let rs = vec![
            Reminder {
                id: Uuid::now_v7(),
                kind: ReminderKind::At(crate::task::now_ms()),
            },
            Reminder {
                id: Uuid::now_v7(),
                kind: ReminderKind::BeforeDue(Duration::minutes(90)),
            },
        ];
        let json = to_json(&rs);
        assert!(json.contains(r#""before_due":"PT1H30M""#), "{json}");
        assert_eq!(from_json(&json).unwrap(), rs);
        assert_eq!(from_json("[]").unwrap(), vec![]);
        assert!(from_json(r#"[{"id":"00000000-0000-0000-0000-000000000000"}]"#).is_err());
    }
}
