//! `server::run` runs the reminder scheduler beside the HTTP server: a due reminder fires
//! within 2 s (counted in `todo_reminders_fired_total`), once, as one `reminder.fired` change
//! of its user's log, and shutdown stops it promptly.
//! One test per backend in this binary: the metrics recorder is process-wide.

use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use test_support::TestDb;
use todo_http::server::{ServerConfig, run_until};
use todo_store::{ChangeData, ChangeType, ReminderInput, TaskInput};

/// The counter's value in this process's Prometheus page (0 before the first increment).
fn fired_total() -> u64 {
    let page = todo_http::metrics::prometheus()
        .expect("our recorder is the process's")
        .render();
    page.lines()
        .find_map(|l| l.strip_prefix("todo_reminders_fired_total "))
        .map_or(0, |v| v.trim().parse().expect("a count"))
}

/// The two tests share the counter: they take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn fires_within_two_seconds(db: TestDb) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let store = db.store().await;
    let alice = store.for_user("alice").unwrap();
    let due = Utc::now() + chrono::Duration::milliseconds(1500);
    let with_reminder = |title: &str, completed: bool| TaskInput {
        completed: Some(completed),
        reminders: vec![ReminderInput::At(due)],
        ..TaskInput::titled(title)
    };
    let open = alice.create(with_reminder("open", false)).await.unwrap();
    // A completed task's reminder never fires.
    alice.create(with_reminder("done", true)).await.unwrap();
    let since = alice.changes(None, 500).await.unwrap().next;
    store.close().await;

    let before = fired_total();
    let url = db.url.clone();
    let cfg = ServerConfig::from_lookup(|k| match k {
        "DATABASE_URL" => Some(url.clone()),
        "TODO_ADDR" => Some("127.0.0.1:0".into()),
        "TODO_JWT_SECRET" => Some("scheduler-test-secret-0123456789abcdef".into()),
        _ => None,
    })
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(run_until(cfg, async {
        let _ = stopped.await;
    }));

    let deadline = due + chrono::Duration::seconds(2);
    while fired_total() == before {
        assert!(
            Utc::now() < deadline,
            "the reminder due at {due} had not fired 2 s later"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give a second firing (or the completed task's reminder) the chance to show.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        fired_total(),
        before + 1,
        "exactly one reminder fired, once"
    );

    let asked = Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("run_until returns after shutdown")
        .unwrap()
        .unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "shutdown took {:?}: the scheduler must stop at once",
        asked.elapsed()
    );

    // The firing is in alice's log: one event, the open task's reminder.
    let store = db.store().await;
    let alice = store.for_user("alice").unwrap();
    let mut log = Box::pin(alice.subscribe(Some(&since)).await.unwrap());
    let mut events = Vec::new();
    while let Ok(Some(c)) = tokio::time::timeout(Duration::from_millis(300), log.next()).await {
        events.push(c.unwrap());
    }
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, ChangeType::ReminderFired);
    assert!(
        matches!(&events[0].data, ChangeData::Reminder { task, reminder, .. }
            if task.id == open.id && reminder.id == open.reminders[0].id),
        "{events:?}"
    );
    drop(log);
    store.close().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_fires_due_reminders_and_stops_with_the_server_sqlite() {
    fires_within_two_seconds(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
async fn run_fires_due_reminders_and_stops_with_the_server_postgres() {
    fires_within_two_seconds(TestDb::postgres().await).await;
}
