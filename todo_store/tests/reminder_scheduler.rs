//! Reminders with several instances on one PostgreSQL database: 1,000 reminders due in the
//! same second, claimed by two stores (two connection pools, as two server processes would
//! have) firing concurrently, each fire exactly once. Then the scheduler loop itself, on both
//! backends: a reminder set a moment ahead reaches the callback within 2 s of its time.

use std::collections::HashSet;
use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use test_support::TestDb;
use todo_store::{FiredReminder, ReminderInput, Store, TaskInput};
use uuid::Uuid;

/// Fires everything due at `now`, `batch` at a time, until nothing is left.
async fn drain(store: Store, now: chrono::DateTime<Utc>, batch: u32) -> Vec<Uuid> {
    let mut ids = Vec::new();
    loop {
        let fired = store.fire_due_reminders(now, batch).await.expect("fire");
        if fired.is_empty() {
            return ids;
        }
        ids.extend(fired.iter().map(|f| f.reminder.id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
async fn two_instances_fire_a_thousand_reminders_exactly_once() {
    let db = TestDb::postgres().await;
    let a = db.store().await;
    let b = Store::connect(&db.url).await.expect("second instance");
    let at = todo_store::task::truncate_ms(Utc::now() + Duration::hours(1));
    let mut set = HashSet::new();
    let mut work = tokio::task::JoinSet::new();
    for w in 0..4 {
        let a = a.clone();
        work.spawn(async move {
            let mut ids = Vec::new();
            for i in 0..50 {
                let u = a
                    .for_user(&format!("user-{}", (w * 50 + i) % 20))
                    .expect("user");
                let t = u
                    .create(TaskInput {
                        // Five reminders in the same second (milliseconds apart).
                        reminders: (0..5)
                            .map(|k| ReminderInput::At(at + Duration::milliseconds(k * 100)))
                            .collect(),
                        ..TaskInput::titled(format!("task {w}/{i}"))
                    })
                    .await
                    .expect("create");
                ids.extend(t.reminders.iter().map(|r| r.id));
            }
            ids
        });
    }
    while let Some(ids) = work.join_next().await {
        set.extend(ids.expect("creator"));
    }
    assert_eq!(set.len(), 1000);

    let now = at + Duration::seconds(1);
    let (fa, fb) = tokio::join!(
        tokio::spawn(drain(a.clone(), now, 37)),
        tokio::spawn(drain(b.clone(), now, 37))
    );
    let (fa, fb) = (fa.expect("a"), fb.expect("b"));
    let mut all: Vec<Uuid> = fa.iter().chain(&fb).copied().collect();
    assert_eq!(
        all.len(),
        1000,
        "a fired {}, b fired {}",
        fa.len(),
        fb.len()
    );
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 1000, "no reminder fired twice");
    assert_eq!(all.into_iter().collect::<HashSet<_>>(), set);
    assert!(
        a.fire_due_reminders(now, 1000)
            .await
            .expect("again")
            .is_empty()
            && b.next_reminder_at().await.expect("next").is_none()
    );
    b.close().await;
    a.close().await;
    db.cleanup().await;
}

async fn scheduler_delivers(store: Store) {
    let u = store.for_user("alice").expect("user");
    let at = todo_store::task::truncate_ms(Utc::now() + Duration::milliseconds(1500));
    let t = u
        .create(TaskInput {
            reminders: vec![ReminderInput::At(at)],
            ..TaskInput::titled("soon")
        })
        .await
        .expect("create");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<FiredReminder>();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .run_reminder_scheduler(
                    async {
                        let _ = stopped.await;
                    },
                    move |f| {
                        let _ = tx.send(f);
                    },
                )
                .await;
        })
    };
    let fired = tokio::time::timeout(StdDuration::from_secs(6), rx.recv())
        .await
        .expect("fired in time")
        .expect("a reminder");
    let late = Utc::now() - at;
    assert!(
        late >= Duration::zero() && late < Duration::seconds(2),
        "{late}"
    );
    assert_eq!((fired.task.id, fired.scheduled_for), (t.id, at));
    let _ = stop.send(());
    tokio::time::timeout(StdDuration::from_secs(3), runner)
        .await
        .expect("the scheduler stops at shutdown")
        .expect("runner");
    assert!(rx.try_recv().is_err(), "fired once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_scheduler_fires_within_two_seconds() {
    let db = TestDb::sqlite();
    let store = db.store().await;
    scheduler_delivers(store.clone()).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
async fn postgres_scheduler_fires_within_two_seconds() {
    let db = TestDb::postgres().await;
    let store = db.store().await;
    scheduler_delivers(store.clone()).await;
    store.close().await;
    db.cleanup().await;
}
