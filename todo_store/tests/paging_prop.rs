//! Keyset paging checked against a plain-Rust model, on SQLite and on PostgreSQL.
//!
//! 1. `pages_match_model`: random tasks (titles with case-insensitive ties, `%`, `_`, `\` and
//!    é/É; shared and missing due dates; a few updated after creation) and random queries over
//!    every filter, sort key and order. Walking every page must give exactly the model's filtered
//!    and sorted list, page by page; `total` is the model count on every page and `next_cursor`
//!    is `None` exactly on the last page.
//! 2. `pages_survive_writes`: rows are inserted and deleted between pages. Every page must be
//!    the first `limit` matching rows after the cursor row *at that moment*, so the walk never
//!    repeats a row, never skips one that existed (and matched) for the whole walk, and comes
//!    out in sort order.
//!
//! Each property runs all its cases against one database per backend, with a fresh user per
//! case (users are isolated). Set `PROPTEST_CASES` for a longer run.

use test_support::TestDb;

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use todo_store::{
    Order, Priority, SortKey, Status, StoreError, Task, TaskInput, TaskPatch, TaskQuery, UserTasks,
};
use uuid::Uuid;

/// Text is drawn from these: case pairs (ties under a case-insensitive sort), LIKE wildcards,
/// the escape character, non-ASCII with a case pair, and a space (trimmed at the ends of titles).
const TEXT_CHARS: &[char] = &['a', 'A', 'b', 'B', '%', '_', '\\', 'é', 'É', ' '];
/// Raw tags; some normalise to the same stored tag.
const TAG_INPUTS: &[&str] = &["home", "HOME", "work", "x%y", "été", " ÉTÉ "];
/// Due dates, in ms after [`BASE_MS`] (ties on purpose); `None` is drawn too.
const DUE_OFFSETS_MS: &[i64] = &[0, 1, 3_600_000, 86_400_000];
/// Bounds for `due_after` / `due_before`, around and on the due dates.
const BOUND_OFFSETS_MS: &[i64] = &[-1, 0, 1, 2, 3_600_000, 86_400_000, 86_400_001];
/// 2026-01-01T00:00:00Z.
const BASE_MS: i64 = 1_767_225_600_000;

fn at(offset_ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(BASE_MS + offset_ms).expect("timestamp in range")
}

// ---------------------------------------------------------------------------------------------
// Generated input

#[derive(Debug, Clone)]
struct TaskSpec {
    title: String,
    description: Option<String>,
    priority: Option<Priority>,
    tags: Vec<&'static str>,
    due: Option<i64>,
    completed: bool,
    /// Written once more after every task exists, so `updated_at` order differs from creation.
    touch: bool,
}

impl TaskSpec {
    fn input(&self) -> TaskInput {
        TaskInput {
            title: self.title.clone(),
            description: self.description.clone(),
            completed: Some(self.completed),
            priority: self.priority,
            tags: self.tags.iter().map(|t| t.to_string()).collect(),
            due_at: self.due.map(at),
            ..TaskInput::default()
        }
    }
}

#[derive(Debug, Clone)]
struct QuerySpec {
    status: Status,
    priorities: Vec<Priority>,
    tags: Vec<&'static str>,
    q: Option<String>,
    due_after: Option<i64>,
    due_before: Option<i64>,
    sort: SortKey,
    order: Order,
    limit: u32,
}

impl QuerySpec {
    fn query(&self) -> TaskQuery {
        TaskQuery {
            status: self.status,
            priorities: self.priorities.clone(),
            tags: self.tags.iter().map(|t| t.to_string()).collect(),
            q: self.q.clone(),
            due_after: self.due_after.map(at),
            due_before: self.due_before.map(at),
            sort: self.sort,
            order: self.order,
            limit: self.limit,
            cursor: None,
            ..TaskQuery::default()
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Insert(TaskSpec),
    /// Deletes the live task at this index (modulo the number of live tasks).
    Delete(usize),
}

fn text(len: RangeInclusive<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(select(TEXT_CHARS), len).prop_map(|cs| cs.into_iter().collect())
}

fn task_spec() -> impl Strategy<Value = TaskSpec> {
    (
        text(1..=4).prop_map(|t| {
            if t.trim().is_empty() {
                format!("{t}_")
            } else {
                t
            }
        }),
        prop::option::of(text(0..=4)),
        prop::option::of(select(Priority::ALL.to_vec())),
        subsequence(TAG_INPUTS, 0..=3),
        prop::option::weighted(0.7, select(DUE_OFFSETS_MS)),
        any::<bool>(),
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(title, description, priority, tags, due, completed, touch)| TaskSpec {
                title,
                description,
                priority,
                tags,
                due,
                completed,
                touch,
            },
        )
}

fn query_spec() -> impl Strategy<Value = QuerySpec> {
    (
        prop_oneof![
            2 => Just(Status::All),
            1 => Just(Status::Pending),
            1 => Just(Status::Completed),
        ],
        subsequence(Priority::ALL.to_vec(), 0..=3),
        prop_oneof![
            2 => Just(Vec::new()),
            1 => subsequence(TAG_INPUTS, 1..=2),
        ],
        prop::option::weighted(
            0.4,
            prop_oneof![
                2 => text(0..=2),
                // Longer needles of letters only: they match some titles and descriptions.
                1 => prop::collection::vec(select(&['a', 'b', 'A', 'B'][..]), 3..=4)
                    .prop_map(|cs| cs.into_iter().collect::<String>()),
            ],
        ),
        prop::option::weighted(0.25, select(BOUND_OFFSETS_MS)),
        prop::option::weighted(0.25, select(BOUND_OFFSETS_MS)),
        select(SortKey::ALL.to_vec()),
        select(vec![Order::Asc, Order::Desc]),
        1u32..=7,
    )
        .prop_map(
            |(status, priorities, tags, q, due_after, due_before, sort, order, limit)| QuerySpec {
                status,
                priorities,
                tags,
                q,
                due_after,
                due_before,
                sort,
                order,
                limit,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        task_spec().prop_map(Op::Insert),
        (0usize..64).prop_map(Op::Delete),
    ]
}

// ---------------------------------------------------------------------------------------------
// The model

fn matches(t: &Task, q: &QuerySpec) -> bool {
    let status = match q.status {
        Status::All => true,
        Status::Pending => !t.completed,
        Status::Completed => t.completed,
    };
    let priority = q.priorities.is_empty() || q.priorities.contains(&t.priority);
    let tags = q
        .tags
        .iter()
        .all(|tag| t.tags.contains(&tag.trim().to_lowercase()));
    let search = match &q.q {
        None => true,
        Some(s) => {
            let needle = s.to_lowercase();
            t.title.to_lowercase().contains(&needle)
                || t.description
                    .as_ref()
                    .is_some_and(|d| d.to_lowercase().contains(&needle))
        }
    };
    let due = if q.due_after.is_none() && q.due_before.is_none() {
        true
    } else {
        t.due_at.is_some_and(|d| {
            q.due_after.is_none_or(|a| at(a) <= d) && q.due_before.is_none_or(|b| d < at(b))
        })
    };
    status && priority && tags && search && due
}

/// The listing order: the sort key, then id, both in the requested direction; tasks without a
/// due date last in both directions.
fn compare(sort: SortKey, order: Order, a: &Task, b: &Task) -> Ordering {
    let dir = |o: Ordering| match order {
        Order::Asc => o,
        Order::Desc => o.reverse(),
    };
    let by_id = dir(a.id.cmp(&b.id));
    match sort {
        SortKey::CreatedAt => dir(a.created_at.cmp(&b.created_at)).then(by_id),
        SortKey::UpdatedAt => dir(a.updated_at.cmp(&b.updated_at)).then(by_id),
        SortKey::Priority => dir(a.priority.rank().cmp(&b.priority.rank())).then(by_id),
        SortKey::Title => dir(a.title.to_lowercase().cmp(&b.title.to_lowercase())).then(by_id),
        SortKey::Position => dir(a.position.as_bytes().cmp(b.position.as_bytes())).then(by_id),
        SortKey::DueAt => match (a.due_at, b.due_at) {
            (Some(x), Some(y)) => dir(x.cmp(&y)).then(by_id),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => by_id,
        },
    }
}

fn model(tasks: &[Task], q: &QuerySpec) -> Vec<Task> {
    let mut out: Vec<Task> = tasks.iter().filter(|t| matches(t, q)).cloned().collect();
    out.sort_by(|a, b| compare(q.sort, q.order, a, b));
    out
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn store_ok<T>(r: Result<T, StoreError>, what: &str) -> Result<T, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(format!("{what}: {e} ({e:?})")))
}

/// Creation numbers of tasks, for short failure messages.
#[derive(Default)]
struct Names(HashMap<Uuid, usize>);

impl Names {
    fn add(&mut self, t: &Task) {
        let n = self.0.len();
        self.0.insert(t.id, n);
    }

    /// `#<creation number> <title> <sort key>` for each task.
    fn show<'a>(&self, sort: SortKey, tasks: impl IntoIterator<Item = &'a Task>) -> Vec<String> {
        tasks
            .into_iter()
            .map(|t| {
                let key = match sort {
                    SortKey::CreatedAt => t.created_at.timestamp_millis().to_string(),
                    SortKey::UpdatedAt => t.updated_at.timestamp_millis().to_string(),
                    SortKey::DueAt => format!("{:?}", t.due_at.map(|d| d.timestamp_millis())),
                    SortKey::Priority => t.priority.as_str().to_owned(),
                    SortKey::Title => format!("{:?}", t.title.to_lowercase()),
                    SortKey::Position => t.position.clone(),
                };
                let n = self.0.get(&t.id).map_or("?".to_owned(), |n| n.to_string());
                format!("#{n} {:?} {key}", t.title)
            })
            .collect()
    }
}

async fn create(u: &UserTasks, spec: &TaskSpec, names: &mut Names) -> Result<Task, TestCaseError> {
    let t = store_ok(u.create(spec.input()).await, "create")?;
    prop_assert_eq!(t.title.as_str(), spec.title.trim());
    names.add(&t);
    Ok(t)
}

/// Creates the tasks, then writes the `touch`ed ones again (last first).
async fn create_all(
    u: &UserTasks,
    specs: &[TaskSpec],
    names: &mut Names,
) -> Result<Vec<Task>, TestCaseError> {
    let mut tasks = Vec::with_capacity(specs.len());
    for spec in specs {
        tasks.push(create(u, spec, names).await?);
    }
    for i in (0..tasks.len()).rev() {
        if specs[i].touch {
            tasks[i] = store_ok(
                u.patch(tasks[i].id, TaskPatch::default(), None).await,
                "patch",
            )?;
        }
    }
    Ok(tasks)
}

// ---------------------------------------------------------------------------------------------
// Properties

type WalkCase = (Vec<TaskSpec>, Vec<QuerySpec>);

fn walk_case() -> impl Strategy<Value = WalkCase> {
    (
        prop::collection::vec(task_spec(), 0..=40),
        prop::collection::vec(query_spec(), 1..=6),
    )
}

/// Walking every page gives the model's list, chunked by `limit`.
async fn pages_match_model(u: UserTasks, (specs, queries): WalkCase) -> Result<(), TestCaseError> {
    let mut names = Names::default();
    let tasks = create_all(&u, &specs, &mut names).await?;
    for qs in &queries {
        let want = model(&tasks, qs);
        let chunks: Vec<&[Task]> = if want.is_empty() {
            vec![&[]]
        } else {
            want.chunks(qs.limit as usize).collect()
        };
        let mut query = qs.query();
        for (i, chunk) in chunks.iter().enumerate() {
            let page = store_ok(u.list(&query).await, "list")?;
            prop_assert_eq!(
                names.show(qs.sort, &page.tasks),
                names.show(qs.sort, *chunk),
                "left: store, right: model; page {} of {:?}; whole expected listing: {:?}",
                i,
                qs,
                names.show(qs.sort, &want)
            );
            prop_assert_eq!(&page.tasks[..], *chunk, "stored fields differ");
            prop_assert_eq!(
                page.total,
                want.len() as i64,
                "total on page {} of {:?}",
                i,
                qs
            );
            prop_assert_eq!(page.limit, qs.limit);
            let last = i + 1 == chunks.len();
            prop_assert_eq!(
                page.next_cursor.is_none(),
                last,
                "next_cursor on page {} of {} for {:?}",
                i,
                chunks.len(),
                qs
            );
            query.cursor = page.next_cursor;
        }
    }
    Ok(())
}

type WriteCase = (Vec<TaskSpec>, QuerySpec, Vec<Vec<Op>>);

fn write_case() -> impl Strategy<Value = WriteCase> {
    (
        prop::collection::vec(task_spec(), 0..=30),
        query_spec(),
        prop::collection::vec(prop::collection::vec(op(), 0..=3), 0..=10),
    )
}

/// Rows inserted and deleted between pages: each page is the first `limit` matching live rows
/// after the cursor row; nothing repeats, nothing that stayed is skipped, all in order.
async fn pages_survive_writes(
    u: UserTasks,
    (specs, qs, ops): WriteCase,
) -> Result<(), TestCaseError> {
    let mut names = Names::default();
    let initial = create_all(&u, &specs, &mut names).await?;
    let mut live = initial.clone();
    let mut deleted: HashSet<Uuid> = HashSet::new();
    let mut seen: Vec<Task> = Vec::new();
    let mut seen_ids: HashSet<Uuid> = HashSet::new();
    let mut cursor_row: Option<Task> = None;
    let mut query = qs.query();
    let limit = qs.limit as usize;
    let most_pages = specs.len() + ops.iter().map(Vec::len).sum::<usize>() + 2;
    for step in 0.. {
        prop_assert!(step <= most_pages, "more pages than rows: {:?}", qs);
        let page = store_ok(u.list(&query).await, "list")?;
        let matching = model(&live, &qs);
        prop_assert_eq!(page.total, matching.len() as i64, "total on page {}", step);
        let after: Vec<&Task> = matching
            .iter()
            .filter(|t| {
                cursor_row
                    .as_ref()
                    .is_none_or(|c| compare(qs.sort, qs.order, t, c) == Ordering::Greater)
            })
            .collect();
        let want = &after[..after.len().min(limit)];
        prop_assert_eq!(
            names.show(qs.sort, &page.tasks),
            names.show(qs.sort, want.iter().copied()),
            "left: store, right: model; page {} after cursor row {:?}; every matching live row: {:?}",
            step,
            names.show(qs.sort, cursor_row.as_ref()),
            names.show(qs.sort, &matching)
        );
        prop_assert_eq!(
            page.next_cursor.is_some(),
            after.len() > limit,
            "next_cursor on page {} ({} matching rows follow the cursor, limit {})",
            step,
            after.len(),
            limit
        );
        for t in &page.tasks {
            prop_assert!(
                seen_ids.insert(t.id),
                "row repeated: {:?}",
                names.show(qs.sort, [t])
            );
            seen.push(t.clone());
        }
        if let Some(last) = page.tasks.last() {
            cursor_row = Some(last.clone());
        }
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => break,
        }
        for op in ops.get(step).into_iter().flatten() {
            match op {
                Op::Insert(spec) => live.push(create(&u, spec, &mut names).await?),
                Op::Delete(i) if !live.is_empty() => {
                    let gone = live.remove(i % live.len());
                    store_ok(u.delete(gone.id, None).await, "delete")?;
                    deleted.insert(gone.id);
                }
                Op::Delete(_) => {}
            }
        }
    }
    let stayed: Vec<Task> = initial
        .into_iter()
        .filter(|t| !deleted.contains(&t.id))
        .collect();
    for t in model(&stayed, &qs) {
        prop_assert!(
            seen_ids.contains(&t.id),
            "row skipped: {:?}; walk gave {:?}",
            names.show(qs.sort, [&t]),
            names.show(qs.sort, &seen)
        );
    }
    for w in seen.windows(2) {
        prop_assert_eq!(
            compare(qs.sort, qs.order, &w[0], &w[1]),
            Ordering::Less,
            "out of order: {:?}",
            names.show(qs.sort, w)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Running a property on a backend

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

fn config() -> Config {
    let env = Config::default();
    let set = |var: &str| std::env::var_os(var).is_some();
    Config {
        cases: if set("PROPTEST_CASES") { env.cases } else { 24 },
        max_shrink_iters: if set("PROPTEST_MAX_SHRINK_ITERS") {
            env.max_shrink_iters
        } else {
            1000
        },
        // Only this file may be written: no regression files next to it.
        failure_persistence: None,
        ..env
    }
}

/// Runs `test` for every generated case against one database of `backend`, a fresh user per
/// case (the PostgreSQL tests are ignored unless asked for, see `test_support`).
fn run_property<S>(
    backend: Backend,
    strategy: S,
    test: impl AsyncFn(UserTasks, S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let db = match backend {
        Backend::Sqlite => TestDb::sqlite(),
        Backend::Postgres => rt.block_on(TestDb::postgres()),
    };
    let store = rt.block_on(db.store());
    let users = AtomicUsize::new(0);
    let mut runner = TestRunner::new(config());
    let result = runner.run(&strategy, |case| {
        let n = users.fetch_add(1, AtomicOrdering::Relaxed);
        let user = store.for_user(&format!("prop-{n}")).expect("valid user id");
        rt.block_on(test(user, case))
    });
    rt.block_on(async {
        store.close().await;
        db.cleanup().await;
    });
    if let Err(e) = result {
        panic!("{backend:?}: {e}");
    }
}

mod sqlite {
    use super::*;

    #[test]
    fn pages_match_model() {
        run_property(Backend::Sqlite, walk_case(), super::pages_match_model);
    }

    #[test]
    fn pages_survive_writes() {
        run_property(Backend::Sqlite, write_case(), super::pages_survive_writes);
    }
}

mod postgres {
    use super::*;

    #[test]
    #[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
    fn pages_match_model() {
        run_property(Backend::Postgres, walk_case(), super::pages_match_model);
    }

    #[test]
    #[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
    fn pages_survive_writes() {
        run_property(Backend::Postgres, write_case(), super::pages_survive_writes);
    }
}
