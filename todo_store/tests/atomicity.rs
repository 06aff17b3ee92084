//! A write that fails midway leaves nothing half-written: a trigger makes the tag insert fail
//! after the task row was written, inside the same transaction (or, for a create on
//! PostgreSQL, the same statement), on both backends.

use sqlx::Connection;
use test_support::TestDb;
use todo_store::{Patch, Store, StoreError, TaskInput, TaskPatch, TaskQuery};

async fn install_failing_trigger(db: &TestDb) {
    if db.url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql(
            "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               IF NEW.tag = 'boom' THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER boom BEFORE INSERT ON task_tags FOR EACH ROW EXECUTE FUNCTION boom();",
        )
        .execute(&mut c)
        .await
        .unwrap();
    } else {
        let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql(
            "CREATE TRIGGER boom BEFORE INSERT ON task_tags WHEN NEW.tag = 'boom' \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .execute(&mut c)
        .await
        .unwrap();
    }
}

async fn check(db: TestDb) {
    let store: Store = db.store().await;
    install_failing_trigger(&db).await;
    let u = store.for_user("alice").unwrap();

    // Create: the task row is written, then the tag insert fails: no task remains.
    let e = u
        .create(TaskInput {
            tags: vec!["ok".into(), "boom".into()],
            ..TaskInput::titled("x")
        })
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Database(_)), "{e:?}");
    assert_eq!(u.list(&TaskQuery::default()).await.unwrap().total, 0);
    assert!(u.tags().await.unwrap().is_empty());

    // Update: title, version and tags change together or not at all.
    let t = u
        .create(TaskInput {
            tags: vec!["ok".into()],
            ..TaskInput::titled("before")
        })
        .await
        .unwrap();
    let patch = TaskPatch {
        title: Some("after".into()),
        tags: Patch::Set(vec!["boom".into()]),
        ..TaskPatch::default()
    };
    assert!(u.patch(t.id, patch, None).await.is_err());
    assert_eq!(
        u.get(t.id).await.unwrap(),
        t,
        "the failed write changed nothing"
    );
    let tags = u.tags().await.unwrap();
    assert_eq!((tags.len(), tags[0].tag.as_str()), (1, "ok"));

    // And the store keeps working afterwards (no connection left mid-transaction).
    let ok = u
        .patch(
            t.id,
            TaskPatch {
                title: Some("after".into()),
                ..TaskPatch::default()
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!((ok.title.as_str(), ok.version), ("after", 2));
    store.close().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_failed_writes_leave_nothing_half_written() {
    check(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
async fn postgres_failed_writes_leave_nothing_half_written() {
    let db = TestDb::postgres().await;
    check(db).await;
}
