//! Listing cost through the public API, end to end on an in-memory SQLite store.
//!
//! `build/*`: query building alone, `todo_store::list_statement` (validating the query and
//! rendering the page statement with sea-query) for each dialect, default and filtered.
//! `list/*`: `UserTasks::list` end to end: validation, building and rendering the statement,
//! running it on SQLite (`sqlite::memory:`, one connection) and decoding the rows, for a user
//! with 1,000 tasks and one with 10,000. `get` is the floor: one row by primary key through the
//! same path.
//!
//! `cargo bench -p todo_store --bench list`

#![allow(missing_docs)]

use chrono::{Duration, Utc};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use todo_store::{
    Dialect, Order, Priority, SortKey, Status, Store, TaskInput, TaskQuery, UserTasks,
    list_statement,
};

const TAGS: [&str; 6] = ["work", "home", "errands", "finance", "health", "urgent"];
const WORDS: [&str; 6] = ["Review", "Call", "Buy", "Fix", "Plan", "Book"];
const OBJECTS: [&str; 6] = [
    "quarterly report",
    "dentist",
    "groceries",
    "the faucet",
    "offsite",
    "tax return",
];

async fn user_with(store: &Store, id: &str, n: usize) -> (UserTasks, uuid::Uuid) {
    let tasks = store.for_user(id).expect("user id");
    let mut last = uuid::Uuid::nil();
    for i in 0..n {
        let t = tasks
            .create(TaskInput {
                title: format!("{} {} #{i}", WORDS[i % 6], OBJECTS[(i / 6) % 6]),
                description: (i % 2 == 0).then(|| "Check the numbers before sending.".to_owned()),
                completed: Some(i % 3 == 0),
                priority: Some(Priority::ALL[i % 3]),
                tags: vec![TAGS[i % 6].to_owned(), TAGS[(i / 6) % 6].to_owned()],
                due_at: (i % 2 == 1).then(|| Utc::now() + Duration::hours(i as i64)),
                ..TaskInput::default()
            })
            .await
            .expect("create");
        last = t.id;
    }
    (tasks, last)
}

fn list(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = rt.block_on(async {
        let s = Store::connect("sqlite::memory:").await.expect("connect");
        s.migrate().await.expect("migrate");
        s
    });
    let users = [1_000usize, 10_000].map(|n| {
        let (tasks, id) = rt.block_on(user_with(&store, &format!("user-{n}"), n));
        (n, tasks, id)
    });
    let filtered = TaskQuery {
        status: Status::Pending,
        priorities: vec![Priority::High, Priority::Medium],
        q: Some("report".to_owned()),
        sort: SortKey::DueAt,
        order: Order::Asc,
        ..TaskQuery::default()
    };
    let tagged = TaskQuery {
        tags: vec!["work".to_owned()],
        sort: SortKey::Title,
        order: Order::Asc,
        limit: 20,
        ..TaskQuery::default()
    };

    let mut g = c.benchmark_group("build");
    for (name, dialect) in [("postgres", Dialect::Postgres), ("sqlite", Dialect::Sqlite)] {
        for (shape, q) in [
            ("default", &TaskQuery::default()),
            ("filter_search_sort", &filtered),
        ] {
            g.bench_function(BenchmarkId::new(shape, name), |b| {
                b.iter(|| list_statement("user-1000", q, dialect).expect("statement"))
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("list");
    for (n, tasks, _) in &users {
        g.bench_with_input(BenchmarkId::new("default", n), tasks, |b, t| {
            b.iter(|| rt.block_on(t.list(&TaskQuery::default())).expect("list"))
        });
        g.bench_with_input(BenchmarkId::new("filter_search_sort", n), tasks, |b, t| {
            b.iter(|| rt.block_on(t.list(&filtered)).expect("list"))
        });
        g.bench_with_input(BenchmarkId::new("tag_title_sort", n), tasks, |b, t| {
            b.iter(|| rt.block_on(t.list(&tagged)).expect("list"))
        });
    }
    g.finish();

    let (_, tasks, id) = &users[0];
    c.bench_function("get", |b| {
        b.iter(|| rt.block_on(tasks.get(*id)).expect("get"))
    });
    rt.block_on(store.close());
}

criterion_group!(benches, list);
criterion_main!(benches);
