//! Writes that place tasks and lists: creates, moves, list changes, re-spacing.
//!
//! Every multi-row write runs in one transaction and collects the rows it touched in a
//! [`Touched`], which is what commits the transaction: the one place a change log (and an
//! outbox of deliveries) will append its records, in that same transaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use sea_query_sqlx::SqlxBinder;
use uuid::Uuid;

use crate::backend::{Id, IdInt, IdPos, Int, TaskRow, Tx};
use crate::error::{Refusal, StoreError};
use crate::list::{INBOX_NAME, LISTS_MAX, List, ListInput, ListPatch};
use crate::query::Dialect;
use crate::task::{DEPTH_MAX, MoveTask, Task};
use crate::tree::Group;
use crate::{UserTasks, at_version, position, sync, task};

/// Inbox ids known to exist, by user (an inbox is never deleted, so a known one stays valid).
pub(crate) type Inboxes = Arc<Mutex<HashMap<String, Uuid>>>;

/// Most users whose inbox id is remembered; the map is emptied when it grows past this.
const INBOXES_CACHED: usize = 100_000;

/// What one write changed, record by record.
#[derive(Debug, Default)]
pub(crate) struct Touched {
    /// Tasks created or changed (moved, completed, re-spaced…).
    pub tasks: Vec<Uuid>,
    /// Tasks deleted.
    pub deleted_tasks: Vec<Uuid>,
    /// Lists created or changed.
    pub lists: Vec<Uuid>,
    /// Lists deleted.
    pub deleted_lists: Vec<Uuid>,
    /// Records (tasks or lists) created by this write.
    pub created: Vec<Uuid>,
    /// The idempotency record to complete with this write (see [`crate::idem`]).
    pub response: Option<crate::idem::Completion>,
    /// The write may hold back its last statements (see [`Touched::send`]): set by a write
    /// of one operation, never by a batch, whose later operations read what earlier ones
    /// wrote.
    pub may_defer: bool,
    /// SQLite statements held back, sent with the change log's in one exchange.
    deferred: Option<sync::Sql>,
}

impl Touched {
    pub(crate) fn task(&mut self, id: Uuid) {
        self.tasks.push(id);
    }

    /// A write of one operation: its last statements may be held back (see [`Touched::send`]).
    pub(crate) fn single() -> Self {
        Touched {
            may_defer: true,
            ..Touched::default()
        }
    }

    /// Runs `stmt` in `tx`, or, when `defer` is true and the write may hold back statements
    /// on SQLite, keeps it to go first in the exchange that appends to the change log: the
    /// single writer then waits on one round trip to the connection's thread for both. Only
    /// for a write's last statements, which nothing in the write reads back.
    pub(crate) async fn send<S: SqlxBinder>(
        &mut self,
        tx: &mut Tx<'_>,
        dialect: Dialect,
        stmt: &S,
        defer: bool,
    ) -> Result<(), StoreError> {
        if defer && self.may_defer && dialect == Dialect::Sqlite {
            self.deferred
                .get_or_insert_with(sync::Sql::new)
                .push_sqlite(stmt);
            Ok(())
        } else {
            tx.execute(stmt).await.map(drop)
        }
    }

    /// The change-log records of this write, one per record.
    pub(crate) fn records(&self) -> Vec<sync::Record> {
        sync::fold_records(
            &self.tasks,
            &self.deleted_tasks,
            &self.lists,
            &self.deleted_lists,
            &self.created,
        )
    }

    /// Commits the write: appends its records to the user's change log at the user's next
    /// seq (taken here, so the user's row lock is held only from this point to the commit),
    /// completes its idempotency record if it has one, all inside the transaction; then
    /// wakes this process's subscribers of the user. Returns the seq (0 when nothing was
    /// touched).
    pub(crate) async fn commit(self, u: &UserTasks, tx: Tx<'_>) -> Result<i64, StoreError> {
        self.commit_with(u, tx, &[]).await
    }

    /// [`Touched::commit`], handing the user's subscribers in this process the state of
    /// `tasks` as the write leaves them (see [`sync::Commit`]).
    pub(crate) async fn commit_with(
        mut self,
        u: &UserTasks,
        mut tx: Tx<'_>,
        tasks: &[Task],
    ) -> Result<i64, StoreError> {
        let records = self.records();
        let deferred = self.deferred.take();
        let seq = if records.is_empty() {
            if let Some(d) = deferred {
                tx.execute(&d).await?;
            }
            0
        } else {
            sync::append(&mut tx, u.pool.dialect(), &u.user_id, &records, deferred).await?
        };
        if let Some(c) = &self.response {
            crate::idem::complete(&mut tx, u.pool.dialect(), &u.user_id, c).await?;
        }
        tx.commit().await?;
        if seq > 0 {
            u.hub.committed(&u.user_id, seq, || {
                Some(sync::Commit::new(seq, &records, tasks))
            });
        }
        Ok(seq)
    }
}

/// Most runs of one write transaction: the first, and retries after PostgreSQL failed it to
/// break a deadlock (see [`UserTasks::retrying`]).
const TX_TRIES: u32 = 3;

/// An error a write transaction can end with: a [`StoreError`], or one that carries one.
pub(crate) trait TxError {
    /// Whether the transaction may run again (see [`StoreError::is_retryable`]).
    fn is_retryable(&self) -> bool;
}

impl TxError for StoreError {
    fn is_retryable(&self) -> bool {
        StoreError::is_retryable(self)
    }
}

impl UserTasks {
    /// Runs a write transaction (`run` begins, writes and commits it), again when PostgreSQL
    /// failed it to break a deadlock or for serialization, up to [`TX_TRIES`] runs in all.
    ///
    /// Writes take their row locks in one order where they can (lists, then tasks in id
    /// order, then the user's change-log row at the commit; see `lock_tree`), but not all
    /// can: a batch locks rows in the order of its operations, and two moves that both
    /// re-space one sibling group each hold their own row first. PostgreSQL breaks such a
    /// deadlock by failing one transaction, which it rolls back whole; that one runs again
    /// here (behind the other, which now has its locks) instead of reaching the client as
    /// [`StoreError::Unavailable`] (an HTTP 503) for a valid request. Not when the write
    /// already built its idempotent response, which can be built only once.
    pub(crate) async fn retrying<T, E: TxError, F>(
        &self,
        mut run: impl FnMut() -> F,
    ) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
    {
        let mut tries = 1;
        loop {
            match run().await {
                Err(e) if e.is_retryable() && tries < TX_TRIES && self.can_respond() => {
                    tries += 1;
                    tracing::debug!(
                        tries,
                        "a write transaction failed to break a deadlock; again"
                    );
                }
                r => return r,
            }
        }
    }
}

/// Creates of a batch not yet sent to the database: consecutive creates appended last in a
/// list (no parent, no reminders) are buffered and inserted in one statement (with their tags
/// in another) when the batch reaches any other operation, or its end. A batch of 100 such
/// creates costs a handful of statements instead of 200–300.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    tasks: Vec<Task>,
    /// The key of the last task buffered into each list's top level, which no row in the
    /// database follows while the buffer holds it.
    last: HashMap<Uuid, String>,
}

/// Where a task or list goes among its siblings: after `Some(id)`, first (`None`), or last
/// (the `after` field absent).
type After = Option<Option<Uuid>>;

/// The slot `after` names in `siblings` (in order, the moved record left out), or `None`
/// when `after` is not among them.
fn slot(siblings: &[IdPos], after: After) -> Option<usize> {
    match after {
        None => Some(siblings.len()),
        Some(None) => Some(0),
        Some(Some(a)) => siblings.iter().position(|s| s.0 == a).map(|i| i + 1),
    }
}

fn key_at(siblings: &[IdPos], slot: usize) -> Option<String> {
    let lo = slot.checked_sub(1).and_then(|i| siblings.get(i));
    let hi = siblings.get(slot);
    position::between(lo.map(|s| s.1.as_str()), hi.map(|s| s.1.as_str()))
}

impl UserTasks {
    fn remembered_inbox(&self) -> Option<Uuid> {
        let map = self.inboxes.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&self.user_id).copied()
    }

    /// The user's inbox id, creating the inbox on first use. Race-free: concurrent first
    /// requests insert with `ON CONFLICT DO NOTHING` on the one-inbox-per-user index, then all
    /// read the one that won. Must run outside a write transaction.
    pub(crate) async fn inbox_id(&self) -> Result<Uuid, StoreError> {
        if let Some(id) = self.remembered_inbox() {
            return Ok(id);
        }
        let scope = self.scope();
        let mut found: Vec<Id> = self.pool.fetch_all_as(&scope.inbox_id()).await?;
        if found.is_empty() {
            let now = task::now_ms();
            let inbox = List {
                id: Uuid::now_v7(),
                user_id: self.user_id.clone(),
                name: INBOX_NAME.to_owned(),
                color: None,
                is_inbox: true,
                position: position::spaced(1).concat(),
                open_count: 0,
                created_at: now,
                updated_at: now,
                version: 1,
            };
            // Logged like any list creation; a concurrent first request that inserted the
            // inbox first makes this insert (and its log record) a no-op.
            let mut writer = self.pool.writer().await?;
            let mut tx = writer.begin().await?;
            if tx.execute(&scope.insert_list(&inbox, true)).await? == 1 {
                let mut touched = Touched::default();
                touched.lists.push(inbox.id);
                touched.created.push(inbox.id);
                touched.commit(self, tx).await?;
            } else {
                tx.commit().await?;
            }
            writer.done();
            found = self.pool.fetch_all_as(&scope.inbox_id()).await?;
        }
        let id = found.first().map(|i| i.0).ok_or(StoreError::NotFound)?;
        let mut map = self.inboxes.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= INBOXES_CACHED {
            map.clear();
        }
        map.insert(self.user_id.clone(), id);
        Ok(id)
    }

    /// A position for a task going into group `g` at `after`, leaving out `moving` (the task
    /// being moved, if any). When no key fits (it would reach [`position::KEY_MAX`] bytes),
    /// the whole sibling group is re-spaced here, keeping its order: the siblings' positions
    /// and `updated_at` change, their versions do not.
    async fn task_position(
        &self,
        tx: &mut Tx<'_>,
        g: Group,
        after: After,
        moving: Option<Uuid>,
        now: DateTime<Utc>,
        touched: &mut Touched,
    ) -> Result<String, StoreError> {
        let scope = self.scope();
        let (lo, hi) = match after {
            None => {
                let last: Option<IdPos> =
                    tx.fetch_one_as(&scope.group_end(g, true, moving)).await?;
                (last.map(|l| l.1), None)
            }
            Some(None) => {
                let first: Option<IdPos> =
                    tx.fetch_one_as(&scope.group_end(g, false, moving)).await?;
                (None, first.map(|f| f.1))
            }
            Some(Some(a)) => {
                let sibling = tx.fetch_task(&scope.get(a)).await?;
                let s = match sibling {
                    Some(s)
                        if Some(s.id) != moving
                            && s.list_id == g.list_id
                            && s.parent_id == g.parent_id =>
                    {
                        s
                    }
                    _ => {
                        return Err(StoreError::invalid(
                            "after",
                            "must be a sibling at the destination",
                        ));
                    }
                };
                let next: Option<IdPos> = tx
                    .fetch_one_as(&scope.group_next(g, &s.position, s.id, moving.unwrap_or(s.id)))
                    .await?;
                (Some(s.position), next.map(|n| n.1))
            }
        };
        if let Some(k) = position::between(lo.as_deref(), hi.as_deref()) {
            return Ok(k);
        }
        let siblings: Vec<IdPos> = tx.fetch_all_as(&scope.group_positions(g, moving)).await?;
        let at = slot(&siblings, after)
            .ok_or_else(|| StoreError::invalid("after", "must be a sibling at the destination"))?;
        let keys = position::spaced(siblings.len() + 1);
        let mut mine = String::new();
        let mut others = siblings.iter();
        for (i, key) in keys.into_iter().enumerate() {
            if i == at {
                mine = key;
            } else if let Some(s) = others.next()
                && s.1 != key
            {
                tx.execute(&scope.respace_task(s.0, &key, now)).await?;
                touched.task(s.0);
            }
        }
        Ok(mine)
    }

    /// A position for a list at `after` among the user's lists, leaving out `moving`;
    /// re-spaces the lists when no key fits, like [`Self::task_position`].
    async fn list_position(
        &self,
        tx: &mut Tx<'_>,
        after: After,
        moving: Option<Uuid>,
        now: DateTime<Utc>,
        touched: &mut Touched,
    ) -> Result<String, StoreError> {
        let scope = self.scope();
        let mut lists: Vec<IdPos> = tx.fetch_all_as(&scope.list_positions()).await?;
        lists.retain(|l| Some(l.0) != moving);
        let at = slot(&lists, after)
            .ok_or_else(|| StoreError::invalid("after", "must be one of the user's lists"))?;
        if let Some(k) = key_at(&lists, at) {
            return Ok(k);
        }
        let keys = position::spaced(lists.len() + 1);
        let mut mine = String::new();
        let mut others = lists.iter();
        for (i, key) in keys.into_iter().enumerate() {
            if i == at {
                mine = key;
            } else if let Some(l) = others.next()
                && l.1 != key
            {
                tx.execute(&scope.respace_list(l.0, &key, now)).await?;
                touched.lists.push(l.0);
            }
        }
        Ok(mine)
    }

    /// The level of task `id` (1 for top-level).
    async fn level(&self, tx: &mut Tx<'_>, id: Uuid) -> Result<i64, StoreError> {
        let rows: Vec<IdInt> = tx.fetch_all_as(&self.scope().ancestors(id)).await?;
        Ok(rows.iter().map(|r| r.1).max().unwrap_or(0))
    }

    /// Checks that `list_id` is one of the user's lists (locking it against a concurrent
    /// delete until the transaction ends); a field error on `list_id` otherwise.
    async fn own_list(&self, tx: &mut Tx<'_>, list_id: Uuid) -> Result<(), StoreError> {
        let found: Option<List> = tx
            .fetch_one_as(&self.scope().get_list_for_update(list_id))
            .await?;
        match found {
            Some(_) => Ok(()),
            None => Err(StoreError::invalid(
                "list_id",
                "must be one of the user's lists",
            )),
        }
    }

    /// Takes the tree lock of a write that reshapes a list's trees or checks their shape (a
    /// move to another parent or list, a create under a parent): first the lists involved
    /// (those of `tasks`, and `lists`), in id order, then the tasks `tasks`, in id order.
    /// Returns the ids of the lists locked (of `lists`, only those that are the user's) and
    /// the tasks found, in id order.
    ///
    /// Every such write takes its locks in this one order (lists, then tasks; the user's
    /// change-log row comes last, at the commit), so two of them never wait for each other
    /// in opposite orders (a deadlock, which PostgreSQL would break by failing one of them).
    /// And two of them that involve one list run one after the other: the depth and cycle
    /// checks that follow read a tree that no other write is changing, in statements that
    /// start after the locks were granted (at READ COMMITTED each statement sees what
    /// committed before it began).
    ///
    /// A task that changed list between the two statements (a move that committed in
    /// between) has its new list locked too; that list cannot change again while its row is
    /// locked.
    pub(crate) async fn lock_tree(
        &self,
        tx: &mut Tx<'_>,
        tasks: &[Uuid],
        lists: &[Uuid],
    ) -> Result<(Vec<Uuid>, Vec<Task>), StoreError> {
        let scope = self.scope();
        let locked: Vec<Id> = tx.fetch_all_as(&scope.lock_lists(tasks, lists)).await?;
        let mut locked: Vec<Uuid> = locked.into_iter().map(|l| l.0).collect();
        let rows: Vec<TaskRow> = tx.fetch_all_as(&scope.get_many_for_update(tasks)).await?;
        let rows: Vec<Task> = rows.into_iter().map(|r| r.0).collect();
        let mut moved: Vec<Uuid> = rows
            .iter()
            .map(|t| t.list_id)
            .filter(|l| !locked.contains(l))
            .collect();
        if !moved.is_empty() {
            moved.dedup();
            let more: Vec<Id> = tx.fetch_all_as(&scope.lock_lists(&[], &moved)).await?;
            locked.extend(more.into_iter().map(|l| l.0));
        }
        Ok((locked, rows))
    }

    /// Inserts a new task (content already applied) at the end of its sibling group.
    pub(crate) async fn create_placed(
        &self,
        mut t: Task,
        list_id: Option<Uuid>,
        parent_id: Option<Uuid>,
    ) -> Result<Task, StoreError> {
        let scope = self.scope();
        let plain = list_id.is_none() && parent_id.is_none();
        if plain {
            t.list_id = self.inbox_id().await?;
        }
        if plain && t.reminders.is_empty() && self.pool.dialect() == Dialect::Postgres {
            // The common case in two round trips and no transaction: read the last key, then
            // insert the task with its tags in one statement. Two creates racing for the same
            // last key get equal positions, ordered by id (creation order), and any later
            // insert between them re-spaces the group.
            let g = Group {
                list_id: t.list_id,
                parent_id: None,
            };
            let last: Vec<IdPos> = self
                .pool
                .fetch_all_as(&scope.group_end(g, true, None))
                .await?;
            if let Some(k) = position::between(last.first().map(|l| l.1.as_str()), None)
                && self.idem.is_none()
            {
                t.position = k;
                // The task, its tags and its change-log record in one statement.
                let mut touched = Touched::default();
                touched.task(t.id);
                touched.created.push(t.id);
                if !t.completed {
                    touched.lists.push(t.list_id);
                }
                let records = touched.records();
                let stmt = sync::pg_write_and_log(
                    &scope.insert(&t),
                    |sql| sync::pg_tags_cte(sql, &self.user_id, t.id, &t.tags),
                    Some(t.list_id),
                    &self.user_id,
                    t.created_at,
                    &records,
                );
                match self.pool.fetch_all_as::<Int, _>(&stmt).await {
                    Ok(rows) => {
                        if let Some(&Int(seq)) = rows.first() {
                            self.hub.committed(&self.user_id, seq, || {
                                Some(sync::Commit::new(seq, &records, std::slice::from_ref(&t)))
                            });
                        }
                        return Ok(t);
                    }
                    // The user has webhooks: write in a transaction, which queues them.
                    Err(e) if crate::webhook::is_guard_refusal(&e) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.retrying(|| self.create_once(t.clone(), list_id, parent_id))
            .await
    }

    /// One run of a create's transaction.
    async fn create_once(
        &self,
        t: Task,
        list_id: Option<Uuid>,
        parent_id: Option<Uuid>,
    ) -> Result<Task, StoreError> {
        let mut touched = Touched::single();
        let mut writer = self.pool.writer().await?;
        let mut tx = writer.begin().await?;
        let t = self
            .create_in(&mut tx, &mut touched, t, list_id, parent_id)
            .await?;
        self.respond(&mut touched, crate::idem::Outcome::Task(&t));
        touched
            .commit_with(self, tx, std::slice::from_ref(&t))
            .await?;
        writer.done();
        Ok(t)
    }

    /// A batch's create appended last at the top level of `list_id` (or of `t.list_id`, the
    /// inbox, when `None`), buffered in `pending`: its key follows the list's last task, or
    /// the task the batch buffered into the list just before it. When no key fits, the buffer
    /// is flushed and the create takes the ordinary path (which re-spaces the list).
    pub(crate) async fn create_buffered(
        &self,
        tx: &mut Tx<'_>,
        touched: &mut Touched,
        mut t: Task,
        list_id: Option<Uuid>,
        pending: &mut Pending,
    ) -> Result<Task, StoreError> {
        if let Some(l) = list_id {
            self.own_list(tx, l).await?;
            t.list_id = l;
        }
        let key = match pending.last.get(&t.list_id) {
            Some(last) => position::between(Some(last), None),
            None => {
                let g = Group {
                    list_id: t.list_id,
                    parent_id: None,
                };
                let last: Option<IdPos> = tx
                    .fetch_one_as(&self.scope().group_end(g, true, None))
                    .await?;
                position::between(last.map(|l| l.1).as_deref(), None)
            }
        };
        let Some(key) = key else {
            self.flush(tx, pending).await?;
            return self.create_in(tx, touched, t, list_id, None).await;
        };
        t.position = key.clone();
        pending.last.insert(t.list_id, key);
        touched.task(t.id);
        touched.created.push(t.id);
        if !t.completed {
            touched.lists.push(t.list_id);
        }
        pending.tasks.push(t.clone());
        Ok(t)
    }

    /// Inserts the buffered creates (and their tags); the buffer is empty afterwards.
    pub(crate) async fn flush(
        &self,
        tx: &mut Tx<'_>,
        pending: &mut Pending,
    ) -> Result<(), StoreError> {
        pending.last.clear();
        if pending.tasks.is_empty() {
            return Ok(());
        }
        let scope = self.scope();
        let tasks = std::mem::take(&mut pending.tasks);
        tx.execute(&scope.insert_many(&tasks)).await?;
        let tags: Vec<(Uuid, &[String])> = tasks
            .iter()
            .filter(|t| !t.tags.is_empty())
            .map(|t| (t.id, t.tags.as_slice()))
            .collect();
        if !tags.is_empty() {
            tx.execute(&scope.insert_tags_of(&tags)).await?;
        }
        Ok(())
    }

    /// The transaction part of a create (`t.list_id` already the inbox when neither a list
    /// nor a parent is given).
    pub(crate) async fn create_in(
        &self,
        tx: &mut Tx<'_>,
        touched: &mut Touched,
        mut t: Task,
        list_id: Option<Uuid>,
        parent_id: Option<Uuid>,
    ) -> Result<Task, StoreError> {
        let scope = self.scope();
        if let Some(p) = parent_id {
            // The tree lock: a concurrent move cannot deepen the parent's branch between the
            // depth check and the commit.
            let (_, found) = self.lock_tree(tx, &[p], &[]).await?;
            let parent = found.into_iter().next().ok_or_else(|| {
                StoreError::invalid("parent_id", "must be one of the user's tasks")
            })?;
            if list_id.is_some_and(|l| l != parent.list_id) {
                return Err(StoreError::invalid(
                    "list_id",
                    "must be the parent's list (a subtask is always in its parent's list)",
                ));
            }
            if self.level(tx, p).await? + 1 > DEPTH_MAX {
                return Err(StoreError::invalid(
                    "parent_id",
                    format!("tasks nest at most {DEPTH_MAX} levels deep"),
                ));
            }
            t.list_id = parent.list_id;
            t.parent_id = Some(p);
        } else if let Some(l) = list_id {
            self.own_list(tx, l).await?;
            t.list_id = l;
        }
        let g = Group {
            list_id: t.list_id,
            parent_id: t.parent_id,
        };
        t.position = self
            .task_position(tx, g, None, None, t.created_at, touched)
            .await?;
        // Held back to the log's exchange on SQLite unless reminder rows follow (they read).
        let last = t.reminders.is_empty();
        let d = self.pool.dialect();
        touched.send(tx, d, &scope.insert(&t), last).await?;
        if !t.tags.is_empty() {
            touched
                .send(tx, d, &scope.insert_tags(t.id, &t.tags), last)
                .await?;
        }
        if !last {
            self.write_reminder_rows(tx, &t, t.created_at).await?;
        }
        touched.task(t.id);
        touched.created.push(t.id);
        if !t.completed {
            touched.lists.push(t.list_id);
        }
        Ok(t)
    }

    /// Moves a task (and its whole subtree) to another place, as the HTTP API's move request:
    ///
    /// - `parent_id: Some(Some(p))`: under `p`, in `p`'s list (a `list_id` given with it must
    ///   be that list, else a field error on `list_id`);
    /// - `list_id` alone (or `parent_id: Some(None)`): top-level in that list (or the current
    ///   one);
    /// - neither: under its current parent; only its place changes.
    ///
    /// `after` names a sibling at the destination to go right after (`Some(None)`: first;
    /// `None`: last); anything else is a field error on `after`. A parent that is not one of
    /// the user's tasks, that is the task itself or one of its descendants, or that would
    /// nest the subtree deeper than [`DEPTH_MAX`] levels is a field error on `parent_id`.
    ///
    /// The task gets version +1; its descendants get version +1 when they change list. Only
    /// the moved task (and its subtree on a list change) is written, unless its new key would
    /// reach [`position::KEY_MAX`] bytes: then its new siblings are re-spaced in the same
    /// transaction (positions and `updated_at` change, versions do not).
    pub async fn move_task(
        &self,
        id: Uuid,
        to: MoveTask,
        expected_version: Option<i64>,
    ) -> Result<Task, StoreError> {
        self.retrying(|| self.move_once(id, to.clone(), expected_version))
            .await
    }

    /// One run of a move's transaction.
    async fn move_once(
        &self,
        id: Uuid,
        to: MoveTask,
        expected_version: Option<i64>,
    ) -> Result<Task, StoreError> {
        let mut touched = Touched::default();
        let mut writer = self.pool.writer().await?;
        let mut tx = writer.begin().await?;
        let t = self
            .move_in(&mut tx, &mut touched, id, to, expected_version)
            .await?;
        self.respond(&mut touched, crate::idem::Outcome::Task(&t));
        touched
            .commit_with(self, tx, std::slice::from_ref(&t))
            .await?;
        writer.done();
        Ok(t)
    }

    /// The transaction part of [`Self::move_task`].
    pub(crate) async fn move_in(
        &self,
        tx: &mut Tx<'_>,
        touched: &mut Touched,
        id: Uuid,
        to: MoveTask,
        expected_version: Option<i64>,
    ) -> Result<Task, StoreError> {
        let scope = self.scope();
        // A move to another parent or list takes the tree lock: the lists of the task and of
        // its new parent (or its new list), then both tasks. A move among its siblings only
        // locks the task: it changes no tree.
        let parent = to.parent_id.flatten().filter(|&p| p != id);
        let (lists, mut found) = if to.parent_id.is_some() || to.list_id.is_some() {
            let tasks: Vec<Uuid> = [Some(id), parent].into_iter().flatten().collect();
            // With a parent, the destination is the parent's list (another `list_id` is
            // refused below).
            let lists: Vec<Uuid> = to
                .list_id
                .filter(|_| parent.is_none())
                .into_iter()
                .collect();
            self.lock_tree(tx, &tasks, &lists).await?
        } else {
            let t = tx.fetch_task(&scope.get_for_update(id)).await?;
            (Vec::new(), t.into_iter().collect())
        };
        let mut take = |id: Uuid| {
            let i = found.iter().position(|t| t.id == id)?;
            Some(found.swap_remove(i))
        };
        let mut t = at_version(take(id), expected_version)?;
        let parent = parent.and_then(&mut take);
        let now = task::now_ms();
        let dest = match to.parent_id {
            Some(Some(p)) => {
                let not_a_parent =
                    || StoreError::invalid("parent_id", "must be one of the user's tasks");
                if p == id {
                    return Err(StoreError::invalid(
                        "parent_id",
                        "a task cannot be its own subtask",
                    ));
                }
                let parent = parent.ok_or_else(not_a_parent)?;
                if to.list_id.is_some_and(|l| l != parent.list_id) {
                    return Err(StoreError::invalid(
                        "list_id",
                        "must be the parent's list (a subtask is always in its parent's list)",
                    ));
                }
                let subtree: Vec<IdInt> = tx.fetch_all_as(&scope.subtree(id)).await?;
                if subtree.iter().any(|r| r.0 == p) {
                    return Err(StoreError::invalid(
                        "parent_id",
                        "a task cannot move under one of its own subtasks",
                    ));
                }
                let height = subtree.iter().map(|r| r.1).max().unwrap_or(1);
                if self.level(tx, p).await? + height > DEPTH_MAX {
                    return Err(StoreError::invalid(
                        "parent_id",
                        format!("tasks nest at most {DEPTH_MAX} levels deep"),
                    ));
                }
                Group {
                    list_id: parent.list_id,
                    parent_id: Some(p),
                }
            }
            Some(None) | None if to.list_id.is_some() || to.parent_id.is_some() => {
                let list_id = to.list_id.unwrap_or(t.list_id);
                // Another list must be one of the user's (then it is locked, against a
                // concurrent delete too).
                if list_id != t.list_id && !lists.contains(&list_id) {
                    return Err(StoreError::invalid(
                        "list_id",
                        "must be one of the user's lists",
                    ));
                }
                Group {
                    list_id,
                    parent_id: None,
                }
            }
            _ => Group {
                list_id: t.list_id,
                parent_id: t.parent_id,
            },
        };
        t.position = self
            .task_position(tx, dest, to.after, Some(id), now, touched)
            .await?;
        if dest.list_id != t.list_id {
            // While the task's row still names the old list, which the subtree walk follows.
            let moved: Vec<Id> = tx
                .fetch_all_as(&scope.move_descendants(id, dest.list_id, now))
                .await?;
            moved.into_iter().for_each(|m| touched.task(m.0));
            // Both lists' open counts may change.
            touched.lists.extend([t.list_id, dest.list_id]);
        }
        t.list_id = dest.list_id;
        t.parent_id = dest.parent_id;
        t.bump(now);
        tx.execute(&scope.update_place(&t)).await?;
        touched.task(id);
        Ok(t)
    }

    // ---- lists -------------------------------------------------------------------------------

    /// Every list of the user, in `position` order; a new user's first call creates the inbox.
    pub async fn lists(&self) -> Result<Vec<List>, StoreError> {
        self.inbox_id().await?;
        self.pool.fetch_all_as(&self.scope().all_lists()).await
    }

    /// One list; [`StoreError::NotFound`] when it is not one of this user's.
    pub async fn get_list(&self, id: Uuid) -> Result<List, StoreError> {
        let found: Vec<List> = self.pool.fetch_all_as(&self.scope().get_list(id)).await?;
        found.into_iter().next().ok_or(StoreError::NotFound)
    }

    /// The user's inbox, created if this is the user's first request.
    pub async fn inbox(&self) -> Result<List, StoreError> {
        let id = self.inbox_id().await?;
        self.get_list(id).await
    }

    /// Creates a list (version 1), last in order. Field errors: `name`, `color`, and `lists`
    /// when the user already has [`crate::list::LISTS_MAX`] lists.
    pub async fn create_list(&self, input: ListInput) -> Result<List, StoreError> {
        let (name, color) = input.validate()?;
        let inbox = self.inbox_id().await?;
        self.retrying(|| self.create_list_once(inbox, &name, &color))
            .await
    }

    /// One run of a list creation's transaction.
    async fn create_list_once(
        &self,
        inbox: Uuid,
        name: &str,
        color: &Option<String>,
    ) -> Result<List, StoreError> {
        let scope = self.scope();
        let now = task::now_ms();
        let mut touched = Touched::default();
        let mut writer = self.pool.writer().await?;
        let mut tx = writer.begin().await?;
        // The inbox row's lock orders one user's list creations, so the cap holds.
        let _: Option<List> = tx.fetch_one_as(&scope.get_list_for_update(inbox)).await?;
        let count: Option<Int> = tx.fetch_one_as(&scope.list_count()).await?;
        if count.map_or(0, |c| c.0) >= LISTS_MAX {
            return Err(StoreError::invalid(
                "lists",
                format!("a user has at most {LISTS_MAX} lists"),
            ));
        }
        let position = self
            .list_position(&mut tx, None, None, now, &mut touched)
            .await?;
        let list = List {
            id: Uuid::now_v7(),
            user_id: self.user_id.clone(),
            name: name.to_owned(),
            color: color.clone(),
            is_inbox: false,
            position,
            open_count: 0,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        tx.execute(&scope.insert_list(&list, false)).await?;
        touched.lists.push(list.id);
        touched.created.push(list.id);
        self.respond(&mut touched, crate::idem::Outcome::List(&list));
        touched.commit(self, tx).await?;
        writer.done();
        Ok(list)
    }

    /// Reads a list for a write, locked, at the expected version.
    async fn list_for_write(
        &self,
        tx: &mut Tx<'_>,
        id: Uuid,
        expected_version: Option<i64>,
    ) -> Result<List, StoreError> {
        let l: List = tx
            .fetch_one_as(&self.scope().get_list_for_update(id))
            .await?
            .ok_or(StoreError::NotFound)?;
        match expected_version {
            Some(v) if v != l.version => Err(StoreError::Conflict { current: l.version }),
            _ => Ok(l),
        }
    }

    /// Renames and/or recolours a list (merge patch); version +1.
    pub async fn update_list(
        &self,
        id: Uuid,
        patch: ListPatch,
        expected_version: Option<i64>,
    ) -> Result<List, StoreError> {
        let (name, color) = patch.validate()?;
        self.write_list(id, expected_version, None, move |l| {
            if let Some(n) = &name {
                l.name.clone_from(n);
            }
            if let Some(c) = &color {
                l.color.clone_from(c);
            }
        })
        .await
    }

    /// Moves a list right after the list `after` (`Some(None)`: first; `None`: last);
    /// version +1. An `after` that is not another of the user's lists is a field error on
    /// `after`.
    pub async fn move_list(
        &self,
        id: Uuid,
        after: Option<Option<Uuid>>,
        expected_version: Option<i64>,
    ) -> Result<List, StoreError> {
        self.write_list(id, expected_version, Some(after), |_| {})
            .await
    }

    async fn write_list(
        &self,
        id: Uuid,
        expected_version: Option<i64>,
        moved_after: Option<After>,
        change: impl Fn(&mut List),
    ) -> Result<List, StoreError> {
        self.retrying(|| self.write_list_once(id, expected_version, moved_after, &change))
            .await
    }

    /// One run of a list write's transaction.
    async fn write_list_once(
        &self,
        id: Uuid,
        expected_version: Option<i64>,
        moved_after: Option<After>,
        change: impl FnOnce(&mut List),
    ) -> Result<List, StoreError> {
        let scope = self.scope();
        let mut touched = Touched::default();
        let mut writer = self.pool.writer().await?;
        let mut tx = writer.begin().await?;
        let mut l = self.list_for_write(&mut tx, id, expected_version).await?;
        let now = task::now_ms();
        if let Some(after) = moved_after {
            l.position = self
                .list_position(&mut tx, after, Some(id), now, &mut touched)
                .await?;
        }
        change(&mut l);
        l.bump(now);
        tx.execute(&scope.update_list(&l)).await?;
        touched.lists.push(id);
        let read: List = tx
            .fetch_one_as(&scope.get_list(id))
            .await?
            .ok_or(StoreError::NotFound)?;
        self.respond(&mut touched, crate::idem::Outcome::List(&read));
        touched.commit(self, tx).await?;
        writer.done();
        Ok(read)
    }

    /// Deletes a list. The inbox cannot be deleted, nor a list with tasks unless `cascade`,
    /// which deletes its tasks with it in the same transaction ([`StoreError::Refused`]).
    pub async fn delete_list(
        &self,
        id: Uuid,
        cascade: bool,
        expected_version: Option<i64>,
    ) -> Result<(), StoreError> {
        self.retrying(|| self.delete_list_once(id, cascade, expected_version))
            .await
    }

    /// One run of a list delete's transaction.
    async fn delete_list_once(
        &self,
        id: Uuid,
        cascade: bool,
        expected_version: Option<i64>,
    ) -> Result<(), StoreError> {
        let scope = self.scope();
        let mut touched = Touched::default();
        let mut writer = self.pool.writer().await?;
        let mut tx = writer.begin().await?;
        let l = self.list_for_write(&mut tx, id, expected_version).await?;
        if l.is_inbox {
            return Err(StoreError::Refused(Refusal::InboxUndeletable));
        }
        if cascade {
            let gone: Vec<Id> = tx.fetch_all_as(&scope.delete_list_tasks(id)).await?;
            touched.deleted_tasks.extend(gone.into_iter().map(|g| g.0));
        } else {
            let any: Option<Id> = tx.fetch_one_as(&scope.list_task_ids(id, 1)).await?;
            if any.is_some() {
                return Err(StoreError::Refused(Refusal::ListNotEmpty));
            }
        }
        tx.execute(&scope.delete_list(id)).await?;
        touched.deleted_lists.push(id);
        self.respond(&mut touched, crate::idem::Outcome::Deleted);
        touched.commit(self, tx).await?;
        writer.done();
        Ok(())
    }
}
