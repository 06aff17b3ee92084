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
