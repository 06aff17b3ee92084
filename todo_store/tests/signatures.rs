//! Search signatures (migration V3) on both backends: every write stores the signature of the
//! task's text, searches pre-test it, rows without one (`-1`, as rows written before V3 have)
//! are still found, and `Store::migrate` fills them in.

use std::collections::BTreeSet;

use sqlx::Connection;
use test_support::TestDb;
use todo_store::{Store, TaskInput, TaskPatch, TaskQuery, search_signature};

/// A direct connection to the test database, for what the store does not expose.
enum Raw {
    Pg(sqlx::PgConnection),
    Lite(sqlx::SqliteConnection),
}

impl Raw {
    async fn connect(url: &str) -> Raw {
        if url.starts_with("sqlite:") {
            Raw::Lite(sqlx::SqliteConnection::connect(url).await.expect("sqlite"))
        } else {
            Raw::Pg(sqlx::PgConnection::connect(url).await.expect("postgres"))
        }
    }

    async fn exec(&mut self, sql: &str) {
        match self {
            Raw::Pg(c) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(c)
                .await
                .map(drop),
            Raw::Lite(c) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(c)
                .await
                .map(drop),
        }
        .expect(sql);
    }

    /// `(title_lc, description_lc, search_bits_lo, search_bits_hi)` of every task.
    async fn rows(&mut self) -> Vec<(String, Option<String>, i64, i64)> {
        let sql = "SELECT title_lc, description_lc, search_bits_lo, search_bits_hi FROM tasks";
        match self {
            Raw::Pg(c) => sqlx::query_as(sql).fetch_all(c).await,
            Raw::Lite(c) => sqlx::query_as(sql).fetch_all(c).await,
        }
        .expect("rows")
    }

    async fn close(self) {
        let _ = match self {
            Raw::Pg(c) => c.close().await,
            Raw::Lite(c) => c.close().await,
        };
    }
}

/// Titles of the tasks a search for `q` lists.
async fn found(store: &Store, q: &str) -> BTreeSet<String> {
    let query = TaskQuery {
        q: Some(q.to_owned()),
        limit: 100,
        ..TaskQuery::default()
    };
    let page = store
        .for_user("alice")
        .expect("user")
        .list(&query)
        .await
        .expect("search");
    assert_eq!(page.total as usize, page.tasks.len(), "{q}");
    page.tasks.into_iter().map(|t| t.title).collect()
}

fn titles(ts: &[&str]) -> BTreeSet<String> {
    ts.iter().map(|t| t.to_string()).collect()
}

/// Searches and what each must find.
const SEARCHES: &[(&str, &[&str])] = &[
    ("invoice", &["Pay the INVOICE"]),
    ("electricity", &["Pay the INVOICE"]),
    ("zebra", &["Water the plants"]),
    ("Mom", &["Call mom"]),
    ("ÉÉ", &["Ünïcode ÉÉÉ", "Water the plants"]),
    ("ïc", &["Ünïcode ÉÉÉ"]),
    (
        "a",
        &[
            "Pay the INVOICE",
            "Water the plants",
            "Call mom",
            "Renew passport",
        ],
    ),
    ("nothing like it", &[]),
];

async fn check_searches(store: &Store, when: &str) {
    for (q, want) in SEARCHES {
        assert_eq!(found(store, q).await, titles(want), "{q:?} {when}");
    }
}

/// Every stored signature is the one computed from the row's text.
async fn assert_signed(raw: &mut Raw) {
    for (title_lc, description_lc, lo, hi) in raw.rows().await {
        assert_eq!(
            [lo, hi],
            search_signature(&title_lc, description_lc.as_deref()),
            "{title_lc}"
        );
    }
}

async fn check(db: &TestDb) {
    let store = db.store().await;
    let alice = store.for_user("alice").expect("user");
    let long = format!("{} zebra crossing", "ééé ".repeat(240));
    for (title, description) in [
        ("Pay the INVOICE", Some("Electricity bill")),
        ("Water the plants", Some(long.as_str())),
        ("Call mom", None),
        ("Ünïcode ÉÉÉ", None),
    ] {
        alice
            .create(TaskInput {
                description: description.map(str::to_owned),
                ..TaskInput::titled(title)
            })
            .await
            .expect("create");
    }
    // An edit re-signs the row: the old words are no longer pre-tested in.
    let t = alice
        .create(TaskInput::titled("Book flights"))
        .await
        .expect("create");
    alice
        .patch(
            t.id,
            TaskPatch {
                title: Some("Renew passport".into()),
                ..TaskPatch::default()
            },
            None,
        )
        .await
        .expect("patch");
    let mut raw = Raw::connect(&db.url).await;
    assert_signed(&mut raw).await;
    check_searches(&store, "with signatures").await;
    assert_eq!(found(&store, "flights").await, titles(&[]));
    assert_eq!(found(&store, "passport").await, titles(&["Renew passport"]));

    // The pre-test is applied: a row whose signature lacks the needle's bits is not matched by
    // a needle of three bytes or more, even though its text contains it.
    raw.exec("UPDATE tasks SET search_bits_lo = 0, search_bits_hi = 0 WHERE title_lc = 'call mom'")
        .await;
    assert_eq!(found(&store, "mom").await, titles(&[]));
    // (Shorter needles have no signature to test.)
    assert_eq!(found(&store, "om").await, titles(&["Call mom"]));

    // Rows without a signature, as written before migration V3, match every search's pre-test.
    raw.exec("UPDATE tasks SET search_bits_lo = -1, search_bits_hi = -1")
        .await;
    check_searches(&store, "without signatures").await;

    // Migrating (again) signs them.
    assert_eq!(
        store.migrate().await.expect("migrate"),
        Vec::<String>::new()
    );
    assert_signed(&mut raw).await;
    check_searches(&store, "after migrate").await;

    raw.close().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_signatures() {
    check(&TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
async fn postgres_signatures() {
    let db = TestDb::postgres().await;
    check(&db).await;
    db.cleanup().await;
}
