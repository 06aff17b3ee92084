//! Statements for lists, subtrees and manual order, built on the same user-scoped [`Scope`] as
//! every other statement (each carries `user_id = <this user>`).
//!
//! Subtrees are walked with one recursive CTE (`WITH RECURSIVE`, on both databases), built
//! here once: a task's descendants follow `parent_id` within the parent's list (a subtask is
//! always in its parent's list), so each step is a range of the `tasks_user_position` index.

use chrono::{DateTime, Utc};
use sea_query::{
    Asterisk, CommonTableExpression, Cond, Expr, ExprTrait, Func, InsertStatement, LockType,
    OnConflict, Order as SqlOrder, Query, SelectStatement, SimpleExpr, UnionType, UpdateStatement,
    WithClause, WithQuery,
};
use uuid::Uuid;

use crate::list::List;
use crate::query::{COLUMNS, Dialect, Scope, TASKS, col};

pub(crate) const LISTS: &str = "lists";
/// The recursive CTE of a subtree or of a task's ancestors.
const WALK: &str = "walk";

/// Columns of `lists` as rows are decoded; `open_count` is computed after them.
pub(crate) const LIST_COLUMNS: [&str; 9] = [
    "id",
    "user_id",
    "name",
    "color",
    "is_inbox",
    "position",
    "created_at",
    "updated_at",
    "version",
];

fn lcol(name: &'static str) -> Expr {
    Expr::col((LISTS, name))
}

/// The sibling group a task is (or goes) in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Group {
    pub list_id: Uuid,
    pub parent_id: Option<Uuid>,
}

impl Scope<'_> {
    /// `updated_at` moved strictly forward for a row written at `now` by a statement that
    /// writes many rows: `max(now, updated_at + 1 ms)` (the rule of [`crate::Task`]'s `bump`,
    /// in SQL).
    fn bumped_updated_at(&self, now: DateTime<Utc>) -> SimpleExpr {
        match self.dialect {
            Dialect::Postgres => Func::cust("GREATEST")
                .arg(Expr::val(self.dialect.ts(now)))
                .arg(Expr::col("updated_at").add(Expr::cust("INTERVAL '1 millisecond'")))
                .into(),
            Dialect::Sqlite => Func::cust("max")
                .arg(Expr::val(self.dialect.ts(now)))
                .arg(Expr::col("updated_at").add(1))
                .into(),
        }
    }

    // ---- lists ------------------------------------------------------------------------------

    fn lists(&self) -> SelectStatement {
        Query::select()
            .from(LISTS)
            .and_where(lcol("user_id").eq(self.user_id))
            .to_owned()
    }

    /// `SELECT <list columns>, <open count> FROM lists WHERE user_id = ?`.
    fn list_rows(&self) -> SelectStatement {
        let mut open = Query::select();
        open.from(TASKS)
            .expr(Func::count(Expr::col(Asterisk)))
            .and_where(col("user_id").eq(self.user_id))
            .and_where(col("list_id").equals((LISTS, "id")))
            .and_where(col("completed").eq(false));
        let mut s = self.lists();
        s.columns(LIST_COLUMNS.map(|c| (LISTS, c)))
            .expr_as(SimpleExpr::from(open), "open_count");
        s
    }

    /// Every list of the user, in order.
    pub(crate) fn all_lists(&self) -> SelectStatement {
        let mut s = self.list_rows();
        s.order_by((LISTS, "position"), SqlOrder::Asc)
            .order_by((LISTS, "id"), SqlOrder::Asc);
        s
    }

    /// One list.
    pub(crate) fn get_list(&self, id: Uuid) -> SelectStatement {
        let mut s = self.list_rows();
        s.and_where(lcol("id").eq(id));
        s
    }

    /// Lists by id, in no particular order (`ids` must not be empty).
    pub(crate) fn get_lists(&self, ids: &[Uuid]) -> SelectStatement {
        let mut s = self.list_rows();
        s.and_where(lcol("id").is_in(ids.iter().copied()));
        s
    }

    /// Up to `limit` lists with an id after `after`, in id order (a page of a snapshot).
    pub(crate) fn lists_after(&self, after: Uuid, limit: u64) -> SelectStatement {
        let mut s = self.list_rows();
        s.and_where(lcol("id").gt(after))
            .order_by((LISTS, "id"), SqlOrder::Asc)
            .limit(limit);
        s
    }

    /// One list's row, locked inside a write transaction (PostgreSQL); `open_count` 0.
    pub(crate) fn get_list_for_update(&self, id: Uuid) -> SelectStatement {
        let mut s = self.lists();
        s.columns(LIST_COLUMNS.map(|c| (LISTS, c)))
            .expr_as(Expr::val(0i64), "open_count")
            .and_where(lcol("id").eq(id))
            .lock(LockType::Update);
        s
    }

    /// Locks the lists a write reshapes the trees of: the lists of the tasks `tasks` and the
    /// lists `lists` (those that are the user's), in id order, `FOR NO KEY UPDATE`; returns
    /// their ids. The tree lock of [`crate::UserTasks`]' moves and creates under a parent:
    /// taken before any task row, so two such writes never hold rows in opposite orders and
    /// never check depth or cycles on a tree the other is changing. (`FOR NO KEY UPDATE`
    /// keeps out other tree writers, renames and deletes of the list, but not the `FOR KEY
    /// SHARE` of the foreign-key checks of plain creates into it.)
    pub(crate) fn lock_lists(&self, tasks: &[Uuid], lists: &[Uuid]) -> SelectStatement {
        let mut any = Cond::any();
        if !tasks.is_empty() {
            let mut of_tasks = self.tasks_from();
            of_tasks
                .column((TASKS, "list_id"))
                .and_where(col("id").is_in(tasks.iter().copied()));
            any = any.add(lcol("id").in_subquery(of_tasks));
        }
        if !lists.is_empty() {
            any = any.add(lcol("id").is_in(lists.iter().copied()));
        }
        let mut s = self.lists();
        s.column((LISTS, "id"))
            .cond_where(any)
            .order_by((LISTS, "id"), SqlOrder::Asc)
            .lock(LockType::NoKeyUpdate);
        s
    }

    /// The inbox's id.
    pub(crate) fn inbox_id(&self) -> SelectStatement {
        let mut s = self.lists();
        s.column((LISTS, "id")).and_where(lcol("is_inbox").eq(true));
        s
    }

    /// How many lists the user has.
    pub(crate) fn list_count(&self) -> SelectStatement {
        let mut s = self.lists();
        s.expr(Func::count(Expr::col(Asterisk)));
        s
    }

    /// `(id, position)` of every list, in order.
    pub(crate) fn list_positions(&self) -> SelectStatement {
        let mut s = self.lists();
        s.columns([(LISTS, "id"), (LISTS, "position")])
            .order_by((LISTS, "position"), SqlOrder::Asc)
            .order_by((LISTS, "id"), SqlOrder::Asc);
        s
    }

    /// Inserts a list. With `if_no_inbox` (for the inbox), a second inbox is silently not
    /// inserted (`ON CONFLICT DO NOTHING` on the one-inbox-per-user index).
    pub(crate) fn insert_list(&self, l: &List, if_no_inbox: bool) -> InsertStatement {
        let d = self.dialect;
        let mut s = Query::insert()
            .into_table(LISTS)
            .columns(LIST_COLUMNS)
            .values_panic([
                l.id.into(),
                self.user_id.into(),
                l.name.as_str().into(),
                l.color.clone().into(),
                l.is_inbox.into(),
                l.position.as_str().into(),
                d.ts(l.created_at).into(),
                d.ts(l.updated_at).into(),
                l.version.into(),
            ])
            .to_owned();
        if if_no_inbox {
            s.on_conflict(OnConflict::new().do_nothing().to_owned());
        }
        s
    }

    /// Writes a list's name, colour, position, `updated_at` and version.
    pub(crate) fn update_list(&self, l: &List) -> UpdateStatement {
        let d = self.dialect;
        Query::update()
            .table(LISTS)
            .values([
                ("name", l.name.as_str().into()),
                ("color", l.color.clone().into()),
                ("position", l.position.as_str().into()),
                ("updated_at", d.ts(l.updated_at).into()),
                ("version", l.version.into()),
            ])
            .and_where(Expr::col("user_id").eq(self.user_id))
            .and_where(Expr::col("id").eq(l.id))
            .to_owned()
    }

    /// Moves a list to `position` without changing its version (a re-spacing).
    pub(crate) fn respace_list(
        &self,
        id: Uuid,
        position: &str,
        now: DateTime<Utc>,
    ) -> UpdateStatement {
        Query::update()
            .table(LISTS)
            .value("position", position)
            .value("updated_at", self.bumped_updated_at(now))
            .and_where(Expr::col("user_id").eq(self.user_id))
            .and_where(Expr::col("id").eq(id))
            .to_owned()
    }

    /// Deletes a list (its tasks must be gone).
    pub(crate) fn delete_list(&self, id: Uuid) -> sea_query::DeleteStatement {
        Query::delete()
            .from_table(LISTS)
            .and_where(Expr::col("user_id").eq(self.user_id))
            .and_where(Expr::col("id").eq(id))
            .to_owned()
    }

    /// Ids of a list's tasks (at most `limit`).
    pub(crate) fn list_task_ids(&self, list_id: Uuid, limit: u64) -> SelectStatement {
        let mut s = self.tasks_from();
        s.column((TASKS, "id"))
            .and_where(col("list_id").eq(list_id))
            .limit(limit);
        s
    }

    /// Deletes every task of a list; returns their ids.
    pub(crate) fn delete_list_tasks(&self, list_id: Uuid) -> sea_query::DeleteStatement {
        Query::delete()
            .from_table(TASKS)
            .and_where(Expr::col("user_id").eq(self.user_id))
            .and_where(Expr::col("list_id").eq(list_id))
            .returning_col("id")
            .to_owned()
    }

    // ---- tasks: groups and positions -------------------------------------------------------

    fn tasks_from(&self) -> SelectStatement {
        Query::select()
            .from(TASKS)
            .and_where(col("user_id").eq(self.user_id))
            .to_owned()
    }

    /// `ORDER BY parent_id, position, id`, all in `dir`. `parent_id` is the same in the whole
    /// group, but PostgreSQL does not take `parent_id IS NULL` as fixing it: without it the
    /// index `(user_id, list_id, parent_id, position, id)` does not give a top-level group's
    /// order, and every sibling is read and sorted (0.19 ms instead of 0.03 for the end of a
    /// list of 839 top-level tasks, growing with the list).
    fn in_order(s: &mut SelectStatement, dir: SqlOrder) {
        s.order_by((TASKS, "parent_id"), dir.clone())
            .order_by((TASKS, "position"), dir.clone())
            .order_by((TASKS, "id"), dir);
    }

    fn in_group(s: &mut SelectStatement, g: Group) {
        s.and_where(col("list_id").eq(g.list_id));
        match g.parent_id {
            Some(p) => s.and_where(col("parent_id").eq(p)),
            None => s.and_where(col("parent_id").is_null()),
        };
    }

    /// The `(id, position)` of the first (`last` false) or last sibling of a group, leaving
    /// out `except` (the task being moved).
    pub(crate) fn group_end(&self, g: Group, last: bool, except: Option<Uuid>) -> SelectStatement {
        let mut s = self.tasks_from();
        s.columns([(TASKS, "id"), (TASKS, "position")]);
        Self::in_group(&mut s, g);
        if let Some(e) = except {
            s.and_where(col("id").ne(e));
        }
        let dir = if last { SqlOrder::Desc } else { SqlOrder::Asc };
        Self::in_order(&mut s, dir);
        s.limit(1);
        s
    }

    /// The `(id, position)` of the sibling right after `(position, id)` in a group, leaving out
    /// `except`.
    pub(crate) fn group_next(
        &self,
        g: Group,
        position: &str,
        id: Uuid,
        except: Uuid,
    ) -> SelectStatement {
        let mut s = self.tasks_from();
        s.columns([(TASKS, "id"), (TASKS, "position")]);
        Self::in_group(&mut s, g);
        s.and_where(col("id").ne(except)).and_where(
            Expr::tuple([col("position"), col("id")])
                .gt(Expr::tuple([Expr::val(position), Expr::val(id)])),
        );
        Self::in_order(&mut s, SqlOrder::Asc);
        s.limit(1);
        s
    }

    /// `(id, position)` of every sibling of a group, in order, leaving out `except`.
    pub(crate) fn group_positions(&self, g: Group, except: Option<Uuid>) -> SelectStatement {
        let mut s = self.tasks_from();
        s.columns([(TASKS, "id"), (TASKS, "position")]);
        Self::in_group(&mut s, g);
        if let Some(e) = except {
            s.and_where(col("id").ne(e));
        }
        Self::in_order(&mut s, SqlOrder::Asc);
        s
    }

    /// Moves a task to `position` without changing its version (a re-spacing).
    pub(crate) fn respace_task(
        &self,
        id: Uuid,
        position: &str,
        now: DateTime<Utc>,
    ) -> UpdateStatement {
        Query::update()
            .table(TASKS)
            .value("position", position)
            .value("updated_at", self.bumped_updated_at(now))
            .and_where(Expr::col("user_id").eq(self.user_id))
            .and_where(Expr::col("id").eq(id))
            .to_owned()
    }

    /// Writes a moved task's place, version and `updated_at`.
    pub(crate) fn update_place(&self, t: &crate::Task) -> UpdateStatement {
        let d = self.dialect;
        Query::update()
            .table(TASKS)
            .values([
                ("list_id", t.list_id.into()),
                ("parent_id", t.parent_id.into()),
                ("position", t.position.as_str().into()),
                ("updated_at", d.ts(t.updated_at).into()),
                ("version", t.version.into()),
            ])
            .and_where(Expr::col("user_id").eq(self.user_id))
            .and_where(Expr::col("id").eq(t.id))
            .to_owned()
    }

    // ---- subtrees and ancestors ------------------------------------------------------------

    /// `WITH RECURSIVE walk (id, list_id, depth) AS (<root>, 1 UNION ALL <children of walk>)`:
    /// the task `root` and its descendants, `depth` 1 for the root. With `version`, the root
    /// only at that version.
    fn subtree_clause(&self, root: Uuid, version: Option<i64>) -> WithClause {
        let mut anchor = self.tasks_from();
        anchor
            .column((TASKS, "id"))
            .column((TASKS, "list_id"))
            .expr(Expr::val(1i64))
            .and_where(col("id").eq(root));
        if let Some(v) = version {
            anchor.and_where(col("version").eq(v));
        }
        let mut step = self.tasks_from();
        step.column((TASKS, "id"))
            .column((TASKS, "list_id"))
            .expr(Expr::col((WALK, "depth")).add(1))
            .from(WALK)
            .and_where(col("parent_id").equals((WALK, "id")))
            .and_where(col("list_id").equals((WALK, "list_id")));
        anchor.union(UnionType::All, step);
        WithClause::new()
            .recursive(true)
            .cte(
                CommonTableExpression::new()
                    .query(anchor)
                    .columns(["id", "list_id", "depth"])
                    .table_name(WALK)
                    .to_owned(),
            )
            .to_owned()
    }

    /// `WITH RECURSIVE walk (id, parent_id, depth)`: the task `id` and its ancestors, `depth` 1
    /// for the task itself.
    fn ancestors_clause(&self, id: Uuid) -> WithClause {
        let mut anchor = self.tasks_from();
        anchor
            .column((TASKS, "id"))
            .column((TASKS, "parent_id"))
            .expr(Expr::val(1i64))
            .and_where(col("id").eq(id));
        let mut step = self.tasks_from();
        step.column((TASKS, "id"))
            .column((TASKS, "parent_id"))
            .expr(Expr::col((WALK, "depth")).add(1))
            .from(WALK)
            .and_where(col("id").equals((WALK, "parent_id")));
        anchor.union(UnionType::All, step);
        WithClause::new()
            .recursive(true)
            .cte(
                CommonTableExpression::new()
                    .query(anchor)
                    .columns(["id", "parent_id", "depth"])
                    .table_name(WALK)
                    .to_owned(),
            )
            .to_owned()
    }

    fn walk_ids(min_depth: i64) -> SelectStatement {
        Query::select()
            .column((WALK, "id"))
            .from(WALK)
            .and_where(Expr::col((WALK, "depth")).gte(min_depth))
            .to_owned()
    }

    /// `(id, depth)` of a task's subtree (itself at depth 1).
    pub(crate) fn subtree(&self, root: Uuid) -> WithQuery {
        let s = Query::select()
            .column((WALK, "id"))
            .column((WALK, "depth"))
            .from(WALK)
            .to_owned();
        self.subtree_clause(root, None).query(s)
    }

    /// `(id, depth)` of a task and its ancestors (itself at depth 1): its level is the
    /// largest depth.
    pub(crate) fn ancestors(&self, id: Uuid) -> WithQuery {
        let s = Query::select()
            .column((WALK, "id"))
            .column((WALK, "depth"))
            .from(WALK)
            .to_owned();
        self.ancestors_clause(id).query(s)
    }

    /// Deletes a task (at `version`, if given) and its subtree; returns the deleted ids and
    /// their list (the same for all: a subtree stays in one list).
    pub(crate) fn delete_subtree(&self, root: Uuid, version: Option<i64>) -> WithQuery {
        let del = Query::delete()
            .from_table(TASKS)
            .and_where(Expr::col("user_id").eq(self.user_id))
            .and_where(Expr::col("id").in_subquery(Self::walk_ids(1)))
            .returning(Query::returning().columns(["id", "list_id"]))
            .to_owned();
        self.subtree_clause(root, version).query(del)
    }

    fn bump_rows(&self, u: &mut UpdateStatement, now: DateTime<Utc>) {
        u.value("version", Expr::col("version").add(1))
            .value("updated_at", self.bumped_updated_at(now))
            .and_where(Expr::col("user_id").eq(self.user_id));
    }

    /// Sets completion to `completed` on the tasks a walk reached past its start (depth 2 and
    /// more) whose completion differs: version +1, `updated_at` forward; returns their ids.
    fn set_walked_completion(
        &self,
        walk: WithClause,
        completed: bool,
        now: DateTime<Utc>,
    ) -> WithQuery {
        let completed_at = if completed {
            self.dialect.ts(now)
        } else {
            self.dialect.ts_opt(None)
        };
        let mut u = Query::update();
        u.table(TASKS)
            .value("completed", completed)
            .value("completed_at", completed_at);
        self.bump_rows(&mut u, now);
        u.and_where(Expr::col("completed").eq(!completed))
            .and_where(Expr::col("id").in_subquery(Self::walk_ids(2)))
            .returning_col("id");
        walk.query(u)
    }

    /// Completes the open descendants of `root` (not `root` itself): version +1, `updated_at`
    /// forward; returns their ids.
    pub(crate) fn complete_descendants(&self, root: Uuid, now: DateTime<Utc>) -> WithQuery {
        self.set_walked_completion(self.subtree_clause(root, None), true, now)
    }

    /// Reopens the completed descendants of `root` (not `root` itself), as when a recurring
    /// task advances: version +1, `updated_at` forward; returns their ids.
    pub(crate) fn reopen_descendants(&self, root: Uuid, now: DateTime<Utc>) -> WithQuery {
        self.set_walked_completion(self.subtree_clause(root, None), false, now)
    }

    /// Reopens the completed ancestors of `id` (not `id` itself); returns their ids.
    pub(crate) fn reopen_ancestors(&self, id: Uuid, now: DateTime<Utc>) -> WithQuery {
        self.set_walked_completion(self.ancestors_clause(id), false, now)
    }

    /// Moves the descendants of `root` (not `root` itself, whose row must still name the old
    /// list) to `list_id`: version +1, `updated_at` forward; returns their ids.
    pub(crate) fn move_descendants(
        &self,
        root: Uuid,
        list_id: Uuid,
        now: DateTime<Utc>,
    ) -> WithQuery {
        let mut u = Query::update();
        u.table(TASKS).value("list_id", list_id);
        self.bump_rows(&mut u, now);
        u.and_where(Expr::col("id").in_subquery(Self::walk_ids(2)))
            .returning_col("id");
        self.subtree_clause(root, None).query(u)
    }

    /// A task's columns and whether it has subtasks (a last `has_children` column): what a
    /// write reads to know whether completion may cascade.
    pub(crate) fn get_with_children(&self, id: Uuid) -> SelectStatement {
        let mut child = Query::select();
        child
            .expr(Expr::val(1))
            .from_as(TASKS, "c")
            .and_where(Expr::col(("c", "user_id")).eq(self.user_id))
            .and_where(Expr::col(("c", "list_id")).equals((TASKS, "list_id")))
            .and_where(Expr::col(("c", "parent_id")).equals((TASKS, "id")));
        let mut s = self.tasks_from();
        s.columns(COLUMNS.map(|c| (TASKS, c)))
            .expr_as(Expr::exists(child), "has_children")
            .and_where(col("id").eq(id));
        s
    }
}
