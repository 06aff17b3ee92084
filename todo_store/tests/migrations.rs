//! Migrations under concurrency: two stores migrating one fresh database at the same time.
//!
//! Both calls succeed, exactly one reports the applied migrations and the other an empty list,
//! each migration is recorded once, the schema works through both stores, and migrating again
//! (from both at once) is a no-op. Each check runs on a few fresh databases per backend.

use test_support::TestDb;

use std::collections::HashSet;
use std::path::Path;

use sqlx::Connection;
use todo_store::{Store, TaskInput, TaskQuery};

/// Fresh databases per backend: the race is cheap to repeat.
const ROUNDS: usize = 3;

/// The migration names under `migrations/<backend>/`, in version order (`V1__tasks`, …).
fn migration_names(backend: &str) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("migrations dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".sql").map(str::to_owned))
        .collect();
    let version = |n: &String| -> u64 {
        n.trim_start_matches(['V', 'U'])
            .split("__")
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("not a refinery migration name: {n}"))
    };
    names.sort_by_key(version);
    assert!(!names.is_empty(), "no migrations under {}", dir.display());
    names
}

/// Migrates `a` and `b` at once (on a database neither has migrated), then checks the outcome.
async fn migrate_concurrently(a: &Store, b: &Store, expected: &[String]) {
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    let ra = ra.expect("first store's migrate() failed");
    let rb = rb.expect("second store's migrate() failed");
    let exactly_one = (ra == expected && rb.is_empty()) || (rb == expected && ra.is_empty());
    assert!(
        exactly_one,
        "exactly one concurrent migrate() should apply {expected:?} and the other nothing; \
         got {ra:?} and {rb:?}"
    );

    // The schema works, through both stores.
    let mut created = HashSet::new();
    for (store, title) in [(a, "via a"), (b, "via b")] {
        let t = store
            .for_user("alice")
            .expect("user")
            .create(TaskInput {
                tags: vec!["shared".into()],
                ..TaskInput::titled(title)
            })
            .await
            .expect("create after migrating");
        created.insert(t.id);
    }
    for store in [a, b] {
        let u = store.for_user("alice").expect("user");
        let page = u.list(&TaskQuery::default()).await.expect("list");
        assert_eq!(page.total, 2);
        let listed: HashSet<_> = page.tasks.iter().map(|t| t.id).collect();
        assert_eq!(listed, created);
        let tags = u.tags().await.expect("tags");
        assert_eq!((tags.len(), tags[0].count), (1, 2));
    }

    // A third run is a no-op, even from both stores at once.
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    assert_eq!(ra.expect("third migrate (a)"), Vec::<String>::new());
    assert_eq!(rb.expect("third migrate (b)"), Vec::<String>::new());
    assert!(a.migrate().await.expect("migrate again").is_empty());
    let page = a
        .for_user("alice")
        .expect("user")
        .list(&TaskQuery::default())
        .await
        .expect("list");
    assert_eq!(page.total, 2, "migrating again kept the data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
async fn postgres_concurrent_migrations_apply_once() {
    let expected = migration_names("postgres");
    for _ in 0..ROUNDS {
        let db = TestDb::postgres().await;
        let a = Store::connect(&db.url).await.expect("connect a");
        let b = Store::connect(&db.url).await.expect("connect b");
        migrate_concurrently(&a, &b, &expected).await;

        let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
        let recorded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM refinery_schema_history")
            .fetch_one(&mut conn)
            .await
            .expect("history");
        assert_eq!(
            recorded,
            expected.len() as i64,
            "each migration recorded once"
        );
        let _ = conn.close().await;

        a.close().await;
        b.close().await;
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_migrations_apply_once() {
    let expected = migration_names("sqlite");
    for _ in 0..ROUNDS {
        let db = TestDb::sqlite();
        let url = db.url.clone();
        let a = Store::connect(&url).await.expect("connect a");
        let b = Store::connect(&url).await.expect("connect b");
        migrate_concurrently(&a, &b, &expected).await;

        let mut conn = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("connect");
        let recorded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM refinery_schema_history")
            .fetch_one(&mut conn)
            .await
            .expect("history");
        assert_eq!(
            recorded,
            expected.len() as i64,
            "each migration recorded once"
        );
        let _ = conn.close().await;

        a.close().await;
        b.close().await;
    }
}

/// Two stores (think: two processes starting together) opening a brand-new SQLite file at once
/// both connect: the WAL switch race is retried within the busy timeout, then both migrate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_connects_on_a_new_file() {
    for _ in 0..20 {
        let db = TestDb::sqlite();
        let url = db.url.clone();
        let (a, b) = tokio::join!(Store::connect(&url), Store::connect(&url));
        let (a, b) = (a.expect("first connect"), b.expect("second connect"));
        let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
        let applied = ra.expect("migrate a").len() + rb.expect("migrate b").len();
        assert_eq!(applied, migration_names("sqlite").len());
        a.close().await;
        b.close().await;
    }
}

/// Upgrading a V3 database to V4: every user with tasks gets one inbox, every task goes into its
/// user's inbox at the top level, and sorting by position reproduces the default order
/// (created_at desc, id desc), ties on created_at included.
async fn upgrade_to_v4(url: &str) {
    use todo_store::{Order, ParentFilter, SortKey};
    let store = Store::connect(url).await.expect("connect");
    store.migrate_to(3).await.expect("migrate to V3");
    // V3 rows, written as V3 did: some users, some tasks sharing a creation time.
    let users = ["alice", "bob", "Carol.x"];
    let mut expected = Vec::new();
    let pg = url.starts_with("postgres");
    for (n, user) in users.iter().enumerate() {
        let mut ids = Vec::new();
        for i in 0..(5 + n * 4) {
            let id = uuid::Uuid::now_v7();
            // Every third pair shares a millisecond, so the id breaks the tie.
            let ms: i64 = 1_767_225_600_000 + (i as i64 / 2) * 1000;
            let sql = if pg {
                "INSERT INTO tasks (id, user_id, title, title_lc, priority, created_at, updated_at, version)
                 VALUES ($1, $2, $3, $3, 1, to_timestamp($4::float8 / 1000), to_timestamp($4::float8 / 1000), 1)"
            } else {
                "INSERT INTO tasks (id, user_id, title, title_lc, priority, created_at, updated_at, version)
                 VALUES (?1, ?2, ?3, ?3, 1, ?4, ?4, 1)"
            };
            let title = format!("{user} {i}");
            if pg {
                let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
                let q = sqlx::query(sql).bind(id).bind(*user).bind(&title).bind(ms);
                q.execute(&mut c).await.expect("seed");
                let _ = c.close().await;
            } else {
                let mut c = sqlx::SqliteConnection::connect(url).await.expect("connect");
                let q = sqlx::query(sql).bind(id).bind(*user).bind(&title).bind(ms);
                q.execute(&mut c).await.expect("seed");
                let _ = c.close().await;
            }
            ids.push((ms, id));
        }
        ids.sort_by(|a, b| b.cmp(a));
        expected.push(ids);
    }
    let applied = store.migrate().await.expect("migrate to V4");
    assert!(
        applied.iter().any(|m| m.contains("V4__lists")),
        "{applied:?}"
    );
    for (user, ids) in users.iter().zip(&expected) {
        let u = store.for_user(user).expect("user");
        let lists = u.lists().await.expect("lists");
        assert_eq!(lists.len(), 1, "{user}: one inbox");
        let inbox = &lists[0];
        assert!(inbox.is_inbox && inbox.name == "Inbox" && inbox.version == 1);
        assert_eq!(inbox.open_count, ids.len() as i64);
        let default: Vec<_> = u
            .list(&TaskQuery {
                limit: 100,
                ..TaskQuery::default()
            })
            .await
            .expect("list")
            .tasks;
        let by_position: Vec<_> = u
            .list(&TaskQuery {
                limit: 100,
                sort: SortKey::Position,
                order: Order::Asc,
                list_id: Some(inbox.id),
                parent: ParentFilter::TopLevel,
                ..TaskQuery::default()
            })
            .await
            .expect("list by position")
            .tasks;
        let want: Vec<_> = ids.iter().map(|(_, id)| *id).collect();
        assert_eq!(
            default.iter().map(|t| t.id).collect::<Vec<_>>(),
            want,
            "{user}"
        );
        assert_eq!(
            by_position.iter().map(|t| t.id).collect::<Vec<_>>(),
            want,
            "{user}"
        );
        for t in &by_position {
            assert_eq!((t.list_id, t.parent_id, t.version), (inbox.id, None, 1));
            assert!(
                todo_store::position::is_valid(&t.position),
                "{}",
                t.position
            );
        }
        // New tasks go last, after the migrated ones; the migrated keys accept moves.
        let new = u.create(TaskInput::titled("new")).await.expect("create");
        assert!(new.position > by_position.last().expect("tasks").position);
        let first = &by_position[0];
        let moved = u
            .move_task(
                new.id,
                todo_store::MoveTask {
                    after: Some(Some(first.id)),
                    ..Default::default()
                },
                None,
            )
            .await
            .expect("move");
        assert!(moved.position > first.position && moved.position < by_position[1].position);
    }
    // A user without tasks gets an inbox on first use.
    assert_eq!(
        store
            .for_user("dave")
            .expect("user")
            .lists()
            .await
            .expect("lists")
            .len(),
        1
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_upgrade_to_v4_puts_tasks_in_inboxes_in_order() {
    let db = TestDb::sqlite();
    upgrade_to_v4(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
async fn postgres_upgrade_to_v4_puts_tasks_in_inboxes_in_order() {
    let db = TestDb::postgres().await;
    upgrade_to_v4(&db.url).await;
    db.cleanup().await;
}
