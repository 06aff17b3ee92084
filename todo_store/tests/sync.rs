//! The change log and its readers on both backends: `changes(since)` (snapshot, incremental,
//! tokens), the no-gap guarantee under concurrent writers, a property test of a syncing
//! replica, `subscribe`, idempotency keys and batches, and reminder firings (events of
//! `subscribe`, never of `changes`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use sqlx::Connection;
use test_support::TestDb;
use todo_store::{
    BatchMove, BatchOp, BatchResult, Begun, Change, ChangeData, ChangeType, Changes, EntityKind,
    IdempotentRequest, List, ListInput, ListPatch, MoveTask, Outcome, Recurrence, ReminderInput,
    Store, StoreError, StoredResponse, Task, TaskInput, TaskPatch, TaskQuery, TaskRef, UserTasks,
};
use uuid::Uuid;

/// Defines `sqlite::$name` and `postgres::$name` running `$name(&TestDb)` on a fresh
/// database (for tests that open several stores on one database).
macro_rules! with_db {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = test_support::TestDb::sqlite();
                    super::$name(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
                async fn $name() {
                    let db = test_support::TestDb::postgres().await;
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )*
        }
    };
}

with_db!(
    snapshot_then_changes,
    writes_between_snapshot_pages_are_not_lost,
    tokens_are_checked,
    no_gap_with_concurrent_writers,
    replica_matches_after_random_writes,
    subscribe_replays_then_follows,
    subscribe_wakes_across_stores,
    live_events_match_the_log,
    idempotency_keys,
    batches_are_all_or_nothing,
    reminder_firings_are_events,
    changes_pages_leave_firings_out,
    pruning_removes_old_firings,
);

/// A client's local copy, kept by `changes(since)`.
#[derive(Debug, Default)]
struct Replica {
    since: Option<String>,
    tasks: HashMap<Uuid, Task>,
    lists: HashMap<Uuid, List>,
}

impl Replica {
    fn apply(&mut self, c: Changes) {
        for t in c.tasks {
            self.tasks.insert(t.id, t);
        }
        for l in c.lists {
            self.lists.insert(l.id, l);
        }
        for d in c.deleted {
            match d.kind {
                EntityKind::Task => {
                    self.tasks.remove(&d.id);
                }
                EntityKind::List => {
                    self.lists.remove(&d.id);
                }
                EntityKind::Reminder => panic!("a reminder is never a tombstone"),
            }
        }
        self.since = Some(c.next);
    }

    /// Syncs until caught up; returns how many pages it read.
    async fn sync(&mut self, u: &UserTasks, limit: u32) -> usize {
        let mut pages = 0;
        loop {
            let c = u
                .changes(self.since.as_deref(), limit)
                .await
                .expect("changes");
            let more = c.has_more;
            self.apply(c);
            pages += 1;
            if !more {
                return pages;
            }
        }
    }
}

/// The server's state: every task and list of the user.
async fn server(u: &UserTasks) -> (HashMap<Uuid, Task>, HashMap<Uuid, List>) {
    let mut q = TaskQuery {
        limit: 100,
        ..TaskQuery::default()
    };
    let mut tasks = HashMap::new();
    loop {
        let page = u.list(&q).await.expect("list");
        tasks.extend(page.tasks.into_iter().map(|t| (t.id, t)));
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    let lists = u
        .lists()
        .await
        .expect("lists")
        .into_iter()
        .map(|l| (l.id, l))
        .collect();
    (tasks, lists)
}

async fn assert_replica(r: &Replica, u: &UserTasks) {
    let (tasks, lists) = server(u).await;
    let mut missing: Vec<_> = tasks
        .values()
        .filter(|t| r.tasks.get(&t.id) != Some(t))
        .map(|t| (t.id, t.title.clone(), t.version))
        .collect();
    missing.sort();
    let extra: Vec<_> = r
        .tasks
        .keys()
        .filter(|id| !tasks.contains_key(id))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "replica differs: {} tasks missing or stale {missing:?}, {} extra {extra:?}",
        missing.len(),
        extra.len()
    );
    assert_eq!(r.lists, lists, "lists differ");
}

async fn snapshot_then_changes(db: &TestDb) {
    let store = db.store().await;
    let u = store.for_user("alice").unwrap();
    let groceries = u.create_list(ListInput::named("Groceries")).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            u.create(TaskInput::titled(format!("t{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    let parent = u
        .create(TaskInput {
            list_id: Some(groceries.id),
            ..TaskInput::titled("parent")
        })
        .await
        .unwrap();
    let kid = u
        .create(TaskInput {
            parent_id: Some(parent.id),
            ..TaskInput::titled("kid")
        })
        .await
        .unwrap();

    // A snapshot in pages of 3: 2 lists + 9 tasks = 4 pages.
    let mut r = Replica::default();
    assert_eq!(r.sync(&u, 3).await, 4);
    assert_eq!((r.tasks.len(), r.lists.len()), (9, 2));
    assert_replica(&r, &u).await;

    // Nothing changed: an empty page, and the same token back.
    let before = r.since.clone();
    let c = u.changes(before.as_deref(), 10).await.unwrap();
    assert!(c.tasks.is_empty() && c.lists.is_empty() && c.deleted.is_empty() && !c.has_more);
    assert_eq!(Some(c.next), before);

    // Several writes to one task: once, latest state.
    for n in 0..3 {
        u.patch(
            ids[0],
            TaskPatch {
                title: Some(format!("renamed {n}")),
                ..TaskPatch::default()
            },
            None,
        )
        .await
        .unwrap();
    }
    let c = u.changes(r.since.as_deref(), 10).await.unwrap();
    assert_eq!(c.tasks.len(), 1);
    assert_eq!(c.tasks[0].title, "renamed 2");
    r.apply(c);

    // Completing the parent completes the kid: both, and the list's open count.
    u.set_completed(parent.id, Some(true), None).await.unwrap();
    let c = u.changes(r.since.as_deref(), 10).await.unwrap();
    let mut got: Vec<Uuid> = c.tasks.iter().map(|t| t.id).collect();
    got.sort();
    let mut want = vec![parent.id, kid.id];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(c.lists.len(), 1);
    assert_eq!(c.lists[0].open_count, 0);
    r.apply(c);

    // A subtree delete: a tombstone per task.
    u.delete(parent.id, None).await.unwrap();
    let c = u.changes(r.since.as_deref(), 10).await.unwrap();
    let mut gone: Vec<Uuid> = c.deleted.iter().map(|d| d.id).collect();
    gone.sort();
    assert_eq!(gone, want);
    assert!(c.deleted.iter().all(|d| d.kind == EntityKind::Task));
    r.apply(c);

    // A list deleted with its tasks, after a move into it.
    u.move_task(
        ids[1],
        MoveTask {
            list_id: Some(groceries.id),
            ..MoveTask::default()
        },
        None,
    )
    .await
    .unwrap();
    u.delete_list(groceries.id, true, None).await.unwrap();
    let c = u.changes(r.since.as_deref(), 2).await.unwrap();
    assert!(
        c.has_more,
        "2 tombstones + the inbox's count: more than a page of 2"
    );
    r.apply(c);
    r.sync(&u, 2).await;
    assert!(!r.tasks.contains_key(&ids[1]) && !r.lists.contains_key(&groceries.id));
    assert_replica(&r, &u).await;

    // Another user sees none of it.
    let bob = store.for_user("bob").unwrap();
    let c = bob.changes(None, 100).await.unwrap();
    assert_eq!((c.tasks.len(), c.lists.len()), (0, 1));
    store.close().await;
}

/// A snapshot read in pages while the data changes: records already returned are changed or
/// deleted, records not returned yet are deleted, new ones are created. The sync that follows
/// the snapshot brings the replica level with the server.
async fn writes_between_snapshot_pages_are_not_lost(db: &TestDb) {
    let store = db.store().await;
    let u = store.for_user("alice").unwrap();
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            u.create(TaskInput::titled(format!("t{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    let mut r = Replica::default();
    let first = u.changes(None, 4).await.unwrap();
    assert!(first.has_more);
    let seen: Vec<Uuid> = first.tasks.iter().map(|t| t.id).collect();
    r.apply(first);
    // Between pages: change and delete records of the first page, delete one of a later page,
    // add a list and a task.
    u.patch(
        seen[0],
        TaskPatch {
            title: Some("changed after its page".into()),
            ..TaskPatch::default()
        },
        None,
    )
    .await
    .unwrap();
    u.delete(seen[1], None).await.unwrap();
    u.delete(ids[9], None).await.unwrap();
    u.create_list(ListInput::named("late")).await.unwrap();
    u.create(TaskInput::titled("late")).await.unwrap();
    // The rest of the snapshot, then the changes after it.
    r.sync(&u, 4).await;
    assert_replica(&r, &u).await;
    assert!(
        r.tasks
            .values()
            .any(|t| t.title == "changed after its page")
    );
    store.close().await;
}

async fn tokens_are_checked(db: &TestDb) {
    let store = db.store().await;
    let u = store.for_user("alice").unwrap();
    let bob = store.for_user("bob").unwrap();
    let field = |r: Result<Changes, StoreError>| match r {
        Err(StoreError::Invalid(f)) => f[0].field.clone(),
        other => panic!("expected a field error, got {other:?}"),
    };
    assert_eq!(field(u.changes(None, 0).await), "limit");
    assert_eq!(field(u.changes(None, 1001).await), "limit");
    for bad in ["", "nope", "%%%", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        assert_eq!(field(u.changes(Some(bad), 10).await), "since", "{bad}");
    }
    let mine = u.changes(None, 10).await.unwrap().next;
    assert_eq!(field(bob.changes(Some(&mine), 10).await), "since");
    assert!(bob.subscribe(Some(&mine)).await.is_err());

    // A tombstone pruned: tokens from before it are gone, later ones still work.
    let t = u.create(TaskInput::titled("doomed")).await.unwrap();
    let before = u.changes(Some(&mine), 10).await.unwrap().next;
    u.delete(t.id, None).await.unwrap();
    let after = u.changes(Some(&before), 10).await.unwrap();
    assert_eq!(after.deleted.len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let pruned = store
        .prune(Duration::ZERO, Duration::from_secs(48 * 3600))
        .await
        .unwrap();
    assert_eq!(pruned.tombstones, 1);
    assert!(matches!(
        u.changes(Some(&before), 10).await,
        Err(StoreError::Gone)
    ));
    assert!(matches!(
        u.subscribe(Some(&before)).await,
        Err(StoreError::Gone)
    ));
    let c = u.changes(Some(&after.next), 10).await.unwrap();
    assert!(c.deleted.is_empty());
    // Bob's tokens are untouched by Alice's pruning.
    let b = bob.changes(None, 10).await.unwrap().next;
    assert!(bob.changes(Some(&b), 10).await.is_ok());
    store.close().await;
}

/// PostgreSQL: every statement that writes the log sleeps a little before its transaction
/// commits, so writers overlap as much as they can. With a seq handed out at insert time (a
/// global sequence), a reader would then see a later seq committed while an earlier one is
/// still in flight, move past it, and lose that write for good; the per-user counter row makes
/// the later writer wait for the earlier one's commit.
async fn slow_log_commits(db: &TestDb) {
    if !db.url.starts_with("postgres") {
        return;
    }
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql(
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           PERFORM pg_sleep(random() * 0.02); RETURN NULL; END $$; \
         CREATE TRIGGER slow_commit AFTER INSERT OR UPDATE ON changes \
           FOR EACH STATEMENT EXECUTE FUNCTION slow_commit();",
    )
    .execute(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
}

async fn no_gap_with_concurrent_writers(db: &TestDb) {
    let reader_store = db.store().await;
    slow_log_commits(db).await;
    let writers: Vec<Store> = vec![
        Store::connect(&db.url).await.unwrap(),
        Store::connect(&db.url).await.unwrap(),
    ];
    let u = reader_store.for_user("alice").unwrap();
    let list = u.create_list(ListInput::named("shared")).await.unwrap().id;
    let done = Arc::new(AtomicBool::new(false));

    // A subscriber follows the same writes live, from a snapshot's token, on a store of its
    // own (on PostgreSQL, woken through LISTEN by the writers' stores).
    let sub_store = Store::connect(&db.url).await.unwrap();
    let sub_user = sub_store.for_user("alice").unwrap();
    let mut live = Replica::default();
    live.sync(&sub_user, 100).await;
    let mut stream = Box::pin(sub_user.subscribe(live.since.as_deref()).await.unwrap());
    let live = Arc::new(std::sync::Mutex::new(live));
    let follower = {
        let live = live.clone();
        tokio::spawn(async move {
            let mut ids = std::collections::HashSet::new();
            while let Some(c) = stream.next().await {
                let c = c.expect("no error");
                assert!(ids.insert(c.id.clone()), "a duplicate event {}", c.id);
                let mut r = live.lock().unwrap();
                match (c.kind, c.data) {
                    (_, ChangeData::Task(t)) => {
                        r.tasks.insert(t.id, t);
                    }
                    (_, ChangeData::List(l)) => {
                        r.lists.insert(l.id, l);
                    }
                    (ChangeType::ListDeleted, ChangeData::Deleted(id)) => {
                        r.lists.remove(&id);
                    }
                    (_, ChangeData::Deleted(id)) => {
                        r.tasks.remove(&id);
                    }
                    (_, ChangeData::Reminder { .. }) => {}
                }
                r.since = Some(c.id);
            }
        })
    };

    // The reader syncs in a loop while the writers run, in small pages.
    let reader = {
        let u = u.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut r = Replica::default();
            let mut syncs = 0;
            loop {
                let finished = done.load(Ordering::SeqCst);
                r.sync(&u, 7).await;
                syncs += 1;
                if finished {
                    return (r, syncs);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    let mut work = tokio::task::JoinSet::new();
    for w in 0..6usize {
        let store = writers[w % writers.len()].clone();
        work.spawn(async move {
            let u = store.for_user("alice").unwrap();
            let mut mine: Vec<Uuid> = Vec::new();
            for i in 0..25usize {
                let t = u
                    .create(TaskInput {
                        list_id: (i % 3 == 0).then_some(list),
                        tags: if i % 4 == 0 {
                            vec![format!("w{w}")]
                        } else {
                            vec![]
                        },
                        ..TaskInput::titled(format!("w{w} t{i}"))
                    })
                    .await
                    .unwrap();
                mine.push(t.id);
                let pick = mine[(i * 7) % mine.len()];
                match i % 5 {
                    0 => {
                        u.patch(
                            pick,
                            TaskPatch {
                                title: Some(format!("w{w} p{i}")),
                                ..TaskPatch::default()
                            },
                            None,
                        )
                        .await
                        .unwrap();
                    }
                    1 => {
                        u.set_completed(pick, None, None).await.unwrap();
                    }
                    2 if mine.len() > 2 => {
                        u.create(TaskInput {
                            parent_id: Some(pick),
                            ..TaskInput::titled(format!("w{w} kid{i}"))
                        })
                        .await
                        .unwrap();
                    }
                    3 => {
                        u.move_task(
                            pick,
                            MoveTask {
                                list_id: Some(if i % 2 == 0 { list } else { t.list_id }),
                                parent_id: Some(None),
                                ..MoveTask::default()
                            },
                            None,
                        )
                        .await
                        .unwrap();
                    }
                    _ if mine.len() > 3 => {
                        let victim = mine.remove(0);
                        u.delete(victim, None).await.unwrap();
                    }
                    _ => {}
                }
            }
        });
    }
    while let Some(r) = work.join_next().await {
        r.expect("writer");
    }
    done.store(true, Ordering::SeqCst);
    let (replica, syncs) = reader.await.expect("reader");
    assert!(syncs > 3, "the reader synced while writes ran ({syncs})");
    assert_replica(&replica, &u).await;

    // The subscriber gets there too, within a few seconds of the last commit.
    let (tasks, lists) = server(&u).await;
    let started = std::time::Instant::now();
    loop {
        let caught_up = {
            let r = live.lock().unwrap();
            r.tasks == tasks && r.lists == lists
        };
        if caught_up {
            break;
        }
        assert!(
            !follower.is_finished(),
            "the subscriber's stream ended or failed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the subscriber's replica differs from the server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    follower.abort();
    let _ = follower.await;
    assert_eq!(sub_store.subscribers(), 0);
    sub_store.close().await;
    for s in writers {
        s.close().await;
    }
    reader_store.close().await;
}

/// Random writes of three kinds of record over two users, with a replica synced (in small
/// pages) after every few operations: after each sync it equals the server's state.
async fn replica_matches_after_random_writes(db: &TestDb) {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};

    let store = db.store().await;
    let rt = tokio::runtime::Handle::current();
    #[derive(Debug, Clone)]
    enum Op {
        Create(Option<usize>, Option<usize>),
        Patch(usize),
        Complete(usize, Option<bool>),
        Move(usize, Option<usize>, Option<usize>),
        Delete(usize),
        NewList,
        RenameList(usize),
        DeleteList(usize),
        Sync(u32),
    }
    let op = prop_oneof![
        4 => (proptest::option::of(0usize..8), proptest::option::weighted(0.3, 0usize..32))
            .prop_map(|(l, p)| Op::Create(l, p)),
        2 => (0usize..32).prop_map(Op::Patch),
        2 => (0usize..32, proptest::option::of(any::<bool>())).prop_map(|(t, c)| Op::Complete(t, c)),
        2 => (0usize..32, proptest::option::of(0usize..8), proptest::option::weighted(0.3, 0usize..32))
            .prop_map(|(t, l, p)| Op::Move(t, l, p)),
        1 => (0usize..32).prop_map(Op::Delete),
        1 => Just(Op::NewList),
        1 => (0usize..8).prop_map(Op::RenameList),
        1 => (0usize..8).prop_map(Op::DeleteList),
        2 => (1u32..6).prop_map(Op::Sync),
    ];
    let cases = std::sync::atomic::AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(8),
        failure_persistence: None,
        ..Config::default()
    });
    let result = tokio::task::block_in_place(|| {
        runner.run(&proptest::collection::vec(op, 1..50), |ops| {
            let n = cases.fetch_add(1, Ordering::SeqCst);
            rt.block_on(async {
                let u = store.for_user(&format!("prop-{n}")).unwrap();
                let mut r = Replica::default();
                r.sync(&u, 3).await;
                for op in ops {
                    let tasks: Vec<Uuid> = {
                        let mut t: Vec<Uuid> = server(&u).await.0.into_keys().collect();
                        t.sort();
                        t
                    };
                    let lists: Vec<Uuid> = {
                        let mut l: Vec<Uuid> =
                            u.lists().await.unwrap().iter().map(|l| l.id).collect();
                        l.sort();
                        l
                    };
                    let pick = |v: &Vec<Uuid>, i: usize| (!v.is_empty()).then(|| v[i % v.len()]);
                    // Refusals (depth, cycles, non-empty lists) are fine: the point is the log.
                    let _ = match op {
                        Op::Create(l, p) => u
                            .create(TaskInput {
                                list_id: l.and_then(|i| pick(&lists, i)),
                                parent_id: p.and_then(|i| pick(&tasks, i)),
                                ..TaskInput::titled("t")
                            })
                            .await
                            .map(drop),
                        Op::Patch(t) => match pick(&tasks, t) {
                            Some(id) => u
                                .patch(
                                    id,
                                    TaskPatch {
                                        title: Some("p".into()),
                                        tags: todo_store::Patch::Set(vec!["x".into()]),
                                        ..TaskPatch::default()
                                    },
                                    None,
                                )
                                .await
                                .map(drop),
                            None => Ok(()),
                        },
                        Op::Complete(t, c) => match pick(&tasks, t) {
                            Some(id) => u.set_completed(id, c, None).await.map(drop),
                            None => Ok(()),
                        },
                        Op::Move(t, l, p) => match pick(&tasks, t) {
                            Some(id) => u
                                .move_task(
                                    id,
                                    MoveTask {
                                        list_id: l.and_then(|i| pick(&lists, i)),
                                        parent_id: p.map(|i| pick(&tasks, i)),
                                        after: None,
                                    },
                                    None,
                                )
                                .await
                                .map(drop),
                            None => Ok(()),
                        },
                        Op::Delete(t) => match pick(&tasks, t) {
                            Some(id) => u.delete(id, None).await,
                            None => Ok(()),
                        },
                        Op::NewList => u.create_list(ListInput::named("l")).await.map(drop),
                        Op::RenameList(l) => match pick(&lists, l) {
                            Some(id) => u
                                .update_list(
                                    id,
                                    todo_store::ListPatch {
                                        name: Some("r".into()),
                                        ..Default::default()
                                    },
                                    None,
                                )
                                .await
                                .map(drop),
                            None => Ok(()),
                        },
                        Op::DeleteList(l) => match pick(&lists, l) {
                            Some(id) => u.delete_list(id, l % 2 == 0, None).await,
                            None => Ok(()),
                        },
                        Op::Sync(limit) => {
                            r.sync(&u, limit).await;
                            let (tasks, lists) = server(&u).await;
                            if r.tasks != tasks || r.lists != lists {
                                return Err(TestCaseError::fail(format!(
                                    "replica differs after a sync: {} vs {} tasks, {} vs {} lists",
                                    r.tasks.len(),
                                    tasks.len(),
                                    r.lists.len(),
                                    lists.len()
                                )));
                            }
                            Ok(())
                        }
                    };
                }
                r.sync(&u, 4).await;
                let (tasks, lists) = server(&u).await;
                if r.tasks != tasks || r.lists != lists {
                    return Err(TestCaseError::fail("replica differs at the end"));
                }
                Ok(())
            })
        })
    });
    store.close().await;
    if let Err(e) = result {
        panic!("{e}");
    }
}

async fn next_change(
    s: &mut (impl futures_util::Stream<Item = Result<todo_store::Change, StoreError>> + Unpin),
) -> todo_store::Change {
    tokio::time::timeout(Duration::from_secs(3), s.next())
        .await
        .expect("a change within 3 s")
        .expect("the stream goes on")
        .expect("no error")
}

async fn subscribe_replays_then_follows(db: &TestDb) {
    let store = db.store().await;
    let u = store.for_user("alice").unwrap();
    let start = u.changes(None, 100).await.unwrap().next;
    let a = u.create(TaskInput::titled("a")).await.unwrap();
    u.patch(
        a.id,
        TaskPatch {
            title: Some("a2".into()),
            ..TaskPatch::default()
        },
        None,
    )
    .await
    .unwrap();

    // Replay: `a` once, as created (it was created after the token), latest state; the
    // inbox's open count changed too.
    let mut s = Box::pin(u.subscribe(Some(&start)).await.unwrap());
    assert_eq!(store.subscribers(), 1);
    assert_eq!(
        (store.subscribers_of("alice"), store.subscribers_of("bob")),
        (1, 0)
    );
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(next_change(&mut s).await);
    }
    let task_change = seen
        .iter()
        .find(|c| matches!(c.data, ChangeData::Task(_)))
        .expect("the task");
    assert_eq!(task_change.kind, ChangeType::TaskCreated);
    assert!(matches!(&task_change.data, ChangeData::Task(t) if t.title == "a2"));
    assert!(seen.iter().any(|c| c.kind == ChangeType::ListUpdated));

    // Live: an update, a delete, in commit order.
    u.set_completed(a.id, Some(true), None).await.unwrap();
    let mut live = Vec::new();
    for _ in 0..2 {
        live.push(next_change(&mut s).await);
    }
    assert!(live.iter().any(|c| c.kind == ChangeType::TaskUpdated));
    u.delete(a.id, None).await.unwrap();
    let mut kinds = Vec::new();
    for _ in 0..2 {
        kinds.push(next_change(&mut s).await.kind);
    }
    assert!(kinds.contains(&ChangeType::TaskDeleted), "{kinds:?}");
    let last_id = {
        let l = u.create_list(ListInput::named("l")).await.unwrap();
        let c = next_change(&mut s).await;
        assert_eq!(c.kind, ChangeType::ListCreated);
        assert!(matches!(&c.data, ChangeData::List(x) if x.id == l.id));
        c.id
    };
    // No duplicate: nothing more comes.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s.next())
            .await
            .is_err()
    );
    // An event id resumes both readers right after it.
    let c = u.changes(Some(&last_id), 10).await.unwrap();
    assert!(c.tasks.is_empty() && c.lists.is_empty() && c.deleted.is_empty());
    drop(s);
    assert_eq!(store.subscribers(), 0);
    assert_eq!(store.subscribers_of("alice"), 0);

    // Without `since`: only what commits after it opened.
    let mut s = Box::pin(u.subscribe(None).await.unwrap());
    let b = u.create(TaskInput::titled("b")).await.unwrap();
    let c = next_change(&mut s).await;
    let c2 = next_change(&mut s).await;
    assert!(
        [c, c2]
            .iter()
            .any(|c| matches!(&c.data, ChangeData::Task(t) if t.id == b.id))
    );
    drop(s);
    assert_eq!(store.subscribers(), 0);
    store.close().await;
}

/// Two stores on one database (two server instances): a write through one reaches a
/// subscriber of the other within a second. On SQLite both are in one process, which is all
/// SQLite serves: they share the process's wake-ups for that file.
async fn subscribe_wakes_across_stores(db: &TestDb) {
    let a = db.store().await;
    let b = Store::connect(&db.url).await.unwrap();
    let ua = a.for_user("alice").unwrap();
    let ub = b.for_user("alice").unwrap();
    ua.inbox().await.unwrap();
    let mut s = Box::pin(ub.subscribe(None).await.unwrap());
    // Let the listener start.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..3 {
        let t = ua.create(TaskInput::titled(format!("x{i}"))).await.unwrap();
        let started = std::time::Instant::now();
        loop {
            let c = tokio::time::timeout(Duration::from_secs(1), s.next())
                .await
                .expect("within 1 s")
                .unwrap()
                .unwrap();
            if matches!(&c.data, ChangeData::Task(x) if x.id == t.id) {
                break;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    if !db.url.starts_with("postgres") {
        drop(s);
        assert_eq!(b.subscribers(), 0);
        b.close().await;
        a.close().await;
        return;
    }
    // The listener's connection dies: it reconnects, and a write committed meanwhile still
    // reaches the subscriber (every subscriber re-reads once the listener is back).
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        killed,
        [true],
        "one listener per store that has subscribers"
    );
    let t = ua.create(TaskInput::titled("while down")).await.unwrap();
    loop {
        let c = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("after the listener reconnects")
            .unwrap()
            .unwrap();
        if matches!(&c.data, ChangeData::Task(x) if x.id == t.id) {
            break;
        }
    }
    // And it listens again.
    let t = ua.create(TaskInput::titled("after")).await.unwrap();
    loop {
        let c = tokio::time::timeout(Duration::from_secs(1), s.next())
            .await
            .expect("within 1 s again")
            .unwrap()
            .unwrap();
        if matches!(&c.data, ChangeData::Task(x) if x.id == t.id) {
            break;
        }
    }
    // The writer's announcer (its own connection, sending the wake-ups after the commits)
    // loses its connection: the next write's wake-up is sent again on a new one.
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE '%pg_notify%' AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!killed.is_empty(), "the announcer has a connection");
    let t = ua
        .create(TaskInput::titled("announcer lost"))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let c = tokio::time::timeout(Duration::from_secs(3), s.next())
            .await
            .expect("the announcement is retried on a new connection")
            .unwrap()
            .unwrap();
        if matches!(&c.data, ChangeData::Task(x) if x.id == t.id) {
            break;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    admin.close().await.unwrap();
    drop(s);
    assert_eq!(b.subscribers(), 0);
    b.close().await;
    a.close().await;
}

/// Checks the live events of one step of writes against the log: `changes` from the step's
/// start, one record a page, gives each record's id (its page's `next`) and state, which the
/// stream must give in the same order, under the same ids, with the same data; `created` names
/// the records the step created (`*.created`). Moves `pos` to the step's end; adds the events
/// to `seen`.
async fn step_matches_the_log(
    u: &UserTasks,
    s: &mut (impl futures_util::Stream<Item = Result<Change, StoreError>> + Unpin),
    pos: &mut String,
    created: &[Uuid],
    step: &str,
    seen: &mut Vec<Change>,
) {
    let mut since = pos.clone();
    let mut pages = Vec::new();
    loop {
        let page = u.changes(Some(&since), 1).await.unwrap();
        if page.tasks.is_empty() && page.lists.is_empty() && page.deleted.is_empty() {
            break;
        }
        since = page.next.clone();
        let more = page.has_more;
        pages.push(page);
        if !more {
            break;
        }
    }
    assert!(!pages.is_empty(), "{step}: the step wrote to the log");
    for (i, page) in pages.iter().enumerate() {
        let c = next_change(s).await;
        assert_eq!(c.id, page.next, "{step}: id of record {i}");
        match (&c.data, c.kind) {
            (ChangeData::Task(t), kind) => {
                assert_eq!(
                    page.tasks.as_slice(),
                    std::slice::from_ref(t),
                    "{step}: task"
                );
                let new = created.contains(&t.id);
                let want = if new {
                    ChangeType::TaskCreated
                } else {
                    ChangeType::TaskUpdated
                };
                assert_eq!(kind, want, "{step}: {}", t.title);
            }
            (ChangeData::List(l), kind) => {
                assert_eq!(
                    page.lists.as_slice(),
                    std::slice::from_ref(l),
                    "{step}: list"
                );
                let want = if created.contains(&l.id) {
                    ChangeType::ListCreated
                } else {
                    ChangeType::ListUpdated
                };
                assert_eq!(kind, want, "{step}: {}", l.name);
            }
            (ChangeData::Deleted(id), kind) => {
                assert_eq!(page.deleted.len(), 1, "{step}");
                assert_eq!(page.deleted[0].id, *id, "{step}: deleted");
                let want = match page.deleted[0].kind {
                    EntityKind::Task => ChangeType::TaskDeleted,
                    _ => ChangeType::ListDeleted,
                };
                assert_eq!(kind, want, "{step}");
            }
            (other, _) => panic!("{step}: unexpected {other:?}"),
        }
        seen.push(c);
    }
    *pos = since;
}

/// A subscriber right behind a write of its own process takes the write's records from the
/// write instead of reading the log; subscribers on other instances, or behind, read the log.
/// Whichever way, the stream is the same: step by step through creates, subtasks, patches,
/// cascading completions, a move, list writes, a batch and a cascading delete, each event is
/// checked against what the log gives for it. On PostgreSQL a second store (another
/// instance, woken by `NOTIFY`, reading the log) streams the same events.
async fn live_events_match_the_log(db: &TestDb) {
    let store = db.store().await;
    let other = Store::connect(&db.url).await.unwrap();
    let u = store.for_user("alice").unwrap();
    let inbox = u.inbox().await.unwrap();
    let mut pos = u.changes(None, 1000).await.unwrap().next;
    let mut s = Box::pin(u.subscribe(Some(&pos)).await.unwrap());
    let mut far = Box::pin(
        other
            .for_user("alice")
            .unwrap()
            .subscribe(Some(&pos))
            .await
            .unwrap(),
    );
    let mut seen = Vec::new();

    let a = u
        .create(TaskInput {
            tags: vec!["home".into(), "Errand".into()],
            description: Some("with a description".into()),
            ..TaskInput::titled("a")
        })
        .await
        .unwrap();
    step_matches_the_log(&u, &mut s, &mut pos, &[a.id], "create", &mut seen).await;
    let b = u
        .create(TaskInput {
            parent_id: Some(a.id),
            ..TaskInput::titled("b")
        })
        .await
        .unwrap();
    step_matches_the_log(&u, &mut s, &mut pos, &[b.id], "subtask b", &mut seen).await;
    let c = u
        .create(TaskInput {
            parent_id: Some(b.id),
            ..TaskInput::titled("c")
        })
        .await
        .unwrap();
    step_matches_the_log(&u, &mut s, &mut pos, &[c.id], "subtask c", &mut seen).await;
    u.patch(
        a.id,
        TaskPatch {
            title: Some("a, renamed".into()),
            ..TaskPatch::default()
        },
        None,
    )
    .await
    .unwrap();
    step_matches_the_log(&u, &mut s, &mut pos, &[], "patch", &mut seen).await;
    u.set_completed(a.id, Some(true), None).await.unwrap();
    step_matches_the_log(
        &u,
        &mut s,
        &mut pos,
        &[],
        "complete with descendants",
        &mut seen,
    )
    .await;
    u.set_completed(c.id, Some(false), None).await.unwrap();
    step_matches_the_log(
        &u,
        &mut s,
        &mut pos,
        &[],
        "reopen with ancestors",
        &mut seen,
    )
    .await;
    let due = todo_store::task::truncate_ms(chrono::Utc::now() + chrono::Duration::days(2));
    let r = u
        .create(TaskInput {
            due_at: Some(due),
            recurrence: Some(Recurrence::new("FREQ=DAILY")),
            reminders: vec![ReminderInput::BeforeDue("PT1H".into())],
            ..TaskInput::titled("recurring")
        })
        .await
        .unwrap();
    step_matches_the_log(&u, &mut s, &mut pos, &[r.id], "recurring create", &mut seen).await;
    u.set_completed(r.id, Some(true), None).await.unwrap();
    step_matches_the_log(&u, &mut s, &mut pos, &[], "recurring advance", &mut seen).await;
    let l = u.create_list(ListInput::named("elsewhere")).await.unwrap();
    step_matches_the_log(&u, &mut s, &mut pos, &[l.id], "list create", &mut seen).await;
    u.move_task(
        a.id,
        MoveTask {
            list_id: Some(l.id),
            ..MoveTask::default()
        },
        None,
    )
    .await
    .unwrap();
    step_matches_the_log(&u, &mut s, &mut pos, &[], "move a subtree", &mut seen).await;
    u.update_list(
        l.id,
        ListPatch {
            name: Some("renamed".into()),
            ..ListPatch::default()
        },
        None,
    )
    .await
    .unwrap();
    step_matches_the_log(&u, &mut s, &mut pos, &[], "list update", &mut seen).await;
    let done = u
        .batch(vec![
            BatchOp::Create {
                reference: Some("p".into()),
                task: TaskInput::titled("batched"),
                parent: None,
            },
            BatchOp::Create {
                reference: None,
                task: TaskInput::titled("batched kid"),
                parent: Some(TaskRef::Ref("p".into())),
            },
            BatchOp::Update {
                id: TaskRef::Id(r.id),
                patch: TaskPatch {
                    title: Some("recurring, renamed".into()),
                    ..TaskPatch::default()
                },
                if_match: None,
            },
        ])
        .await
        .unwrap();
    let new: Vec<Uuid> = done
        .iter()
        .filter_map(|d| match d {
            BatchResult::Created(t) => Some(t.id),
            _ => None,
        })
        .collect();
    assert_eq!(new.len(), 2);
    step_matches_the_log(&u, &mut s, &mut pos, &new, "batch", &mut seen).await;
    u.delete(a.id, None).await.unwrap();
    step_matches_the_log(&u, &mut s, &mut pos, &[], "delete a subtree", &mut seen).await;
    assert_ne!(inbox.id, l.id);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), s.next())
            .await
            .is_err(),
        "nothing more"
    );

    // The other store's subscriber (on SQLite, the same process's wake-ups; on PostgreSQL
    // `NOTIFY` and the log) ends at the same event. It may have read some steps late, when
    // later writes had moved their records on, so it can have fewer events.
    let mut far_seen = Vec::new();
    loop {
        let c = next_change(&mut far).await;
        let end = c.id == pos;
        far_seen.push(c);
        if end {
            break;
        }
    }
    assert_eq!(far_seen.last(), seen.last());
    assert!(seen.len() >= 20, "{}", seen.len());
    drop((s, far));
    other.close().await;
    store.close().await;
}

fn responder() -> todo_store::Responder {
    Box::new(|o: Outcome<'_>| {
        let (status, body) = match o {
            Outcome::Task(t) => (201, t.id.to_string()),
            Outcome::List(l) => (201, l.id.to_string()),
            Outcome::Deleted => (204, String::new()),
            Outcome::Batch(r) => (200, r.len().to_string()),
            Outcome::Webhook(w) => (200, w.id.to_string()),
            Outcome::WebhookCreated(c) => (201, c.webhook.id.to_string()),
        };
        StoredResponse {
            status,
            headers: vec![("etag".into(), "\"1\"".into())],
            body: body.into_bytes(),
        }
    })
}

async fn idempotency_keys(db: &TestDb) {
    let store = db.store().await;
    let u = store.for_user("alice").unwrap();
    let req = |key: &str, body: &str| IdempotentRequest {
        key: key.into(),
        method: "POST".into(),
        path: "/api/alice/tasks".into(),
        body_hash: body.as_bytes().to_vec(),
    };
    // First request: runs, and its response is stored with its effect.
    let Begun::Started(k) = u.idempotency_begin(&req("k1", "a")).await.unwrap() else {
        panic!("a new key starts");
    };
    // While it runs, the same key is in use.
    assert!(matches!(
        u.idempotency_begin(&req("k1", "a")).await,
        Err(StoreError::IdempotencyInUse)
    ));
    let t = u
        .with_idempotency(&k, responder())
        .create(TaskInput::titled("once"))
        .await
        .unwrap();
    // A retry replays the stored response and creates nothing.
    match u.idempotency_begin(&req("k1", "a")).await.unwrap() {
        Begun::Replay(r) => {
            assert_eq!(r.status, 201);
            assert_eq!(r.body, t.id.to_string().into_bytes());
            assert_eq!(r.headers, vec![("etag".to_owned(), "\"1\"".to_owned())]);
        }
        Begun::Started(_) => panic!("a completed key replays"),
    }
    assert_eq!(u.list(&TaskQuery::default()).await.unwrap().total, 1);
    // Another body under the same key: refused.
    assert!(matches!(
        u.idempotency_begin(&req("k1", "b")).await,
        Err(StoreError::IdempotencyReuse)
    ));
    // Keys are per user.
    let bob = store.for_user("bob").unwrap();
    assert!(matches!(
        bob.idempotency_begin(&req("k1", "b")).await.unwrap(),
        Begun::Started(_)
    ));
    // A malformed key.
    assert!(u.idempotency_begin(&req("bad key", "a")).await.is_err());

    // A 4xx after the key check is stored; an outage frees the key.
    let Begun::Started(k2) = u.idempotency_begin(&req("k2", "a")).await.unwrap() else {
        panic!()
    };
    let e = u
        .with_idempotency(&k2, responder())
        .patch(Uuid::now_v7(), TaskPatch::default(), None)
        .await
        .unwrap_err();
    let gone = StoredResponse {
        status: 404,
        headers: vec![],
        body: b"nope".to_vec(),
    };
    u.idempotency_failed(&k2, &e, gone.clone()).await.unwrap();
    assert!(
        matches!(u.idempotency_begin(&req("k2", "a")).await.unwrap(), Begun::Replay(r) if r == gone)
    );
    let Begun::Started(k3) = u.idempotency_begin(&req("k3", "a")).await.unwrap() else {
        panic!()
    };
    u.idempotency_failed(
        &k3,
        &StoreError::Unavailable(sqlx::Error::PoolTimedOut),
        gone.clone(),
    )
    .await
    .unwrap();
    assert!(matches!(
        u.idempotency_begin(&req("k3", "a")).await.unwrap(),
        Begun::Started(_)
    ));

    // Atomic with the effect: a write that fails after its response was built stores
    // neither (the placeholder stays in progress).
    fail_task_inserts_titled_boom(db).await;
    let Begun::Started(k4) = u.idempotency_begin(&req("k4", "a")).await.unwrap() else {
        panic!()
    };
    let r = u
        .with_idempotency(&k4, responder())
        .create(TaskInput::titled("boom"))
        .await;
    assert!(r.is_err());
    assert!(matches!(
        u.idempotency_begin(&req("k4", "a")).await,
        Err(StoreError::IdempotencyInUse)
    ));
    assert_eq!(u.list(&TaskQuery::default()).await.unwrap().total, 1);
    store.close().await;
}

/// Makes inserting a task titled `boom` fail after the row was written (a trigger), on the
/// log's table so the whole write runs first.
async fn fail_task_inserts_titled_boom(db: &TestDb) {
    if db.url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql(
            "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               IF EXISTS (SELECT 1 FROM tasks WHERE title = 'boom') THEN \
                 RAISE EXCEPTION 'injected failure'; END IF; RETURN NULL; END $$; \
             CREATE TRIGGER boom AFTER UPDATE ON idempotency \
               FOR EACH STATEMENT EXECUTE FUNCTION boom();",
        )
        .execute(&mut c)
        .await
        .unwrap();
    } else {
        let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql(
            "CREATE TRIGGER boom AFTER UPDATE ON idempotency \
               WHEN EXISTS (SELECT 1 FROM tasks WHERE title = 'boom') \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .execute(&mut c)
        .await
        .unwrap();
    }
}

async fn batches_are_all_or_nothing(db: &TestDb) {
    let store = db.store().await;
    let u = store.for_user("alice").unwrap();
    let existing = u.create(TaskInput::titled("existing")).await.unwrap();
    let token = u.changes(None, 100).await.unwrap().next;

    let ops = vec![
        BatchOp::Create {
            reference: Some("p".into()),
            task: TaskInput::titled("parent"),
            parent: None,
        },
        BatchOp::Create {
            reference: Some("k".into()),
            task: TaskInput::titled("kid"),
            parent: Some(TaskRef::Ref("p".into())),
        },
        BatchOp::Update {
            id: TaskRef::Ref("k".into()),
            patch: TaskPatch {
                title: Some("kid 2".into()),
                ..TaskPatch::default()
            },
            if_match: Some(1),
        },
        BatchOp::Complete {
            id: TaskRef::Ref("p".into()),
            completed: None,
            if_match: None,
        },
        BatchOp::Move {
            id: TaskRef::Id(existing.id),
            to: BatchMove {
                parent_id: Some(Some(TaskRef::Ref("p".into()))),
                after: Some(Some(TaskRef::Ref("k".into()))),
                ..BatchMove::default()
            },
            if_match: Some(1),
        },
    ];
    let results = u.batch(ops).await.unwrap();
    let statuses: Vec<u16> = results.iter().map(BatchResult::status).collect();
    assert_eq!(statuses, [201, 201, 200, 200, 200]);
    let parent = results[0].task().unwrap().id;
    let kid = results[2].task().unwrap();
    assert_eq!((kid.title.as_str(), kid.parent_id), ("kid 2", Some(parent)));
    let moved = results[4].task().unwrap();
    assert_eq!(moved.parent_id, Some(parent));
    assert!(
        u.get(kid.id).await.unwrap().completed,
        "completion cascaded"
    );
    let c = u.changes(Some(&token), 100).await.unwrap();
    assert_eq!(c.tasks.len(), 3);

    // A failing operation: nothing applied, its index and op-relative field named.
    let before = u.changes(Some(&c.next), 100).await.unwrap();
    assert!(before.tasks.is_empty());
    let bad = vec![
        BatchOp::Create {
            reference: Some("x".into()),
            task: TaskInput::titled("applied?"),
            parent: None,
        },
        BatchOp::Delete {
            id: TaskRef::Id(existing.id),
            if_match: None,
        },
        BatchOp::Create {
            reference: None,
            task: TaskInput::titled(" "),
            parent: None,
        },
    ];
    let e = u.batch(bad).await.unwrap_err();
    assert_eq!(e.index, Some(2));
    assert_eq!(e.error.field_errors()[0].field, "task.title");
    assert!(
        u.get(existing.id).await.is_ok(),
        "the delete was rolled back"
    );
    let after = u.changes(Some(&c.next), 100).await.unwrap();
    assert!(after.tasks.is_empty() && after.deleted.is_empty() && after.lists.is_empty());

    // Unknown references, stale versions, limits.
    let e = u
        .batch(vec![BatchOp::Delete {
            id: TaskRef::Ref("nope".into()),
            if_match: None,
        }])
        .await
        .unwrap_err();
    assert_eq!(
        (e.index, e.error.field_errors()[0].field.as_str()),
        (Some(0), "id")
    );
    let e = u
        .batch(vec![BatchOp::Complete {
            id: TaskRef::Id(existing.id),
            completed: None,
            if_match: Some(1),
        }])
        .await
        .unwrap_err();
    assert!(matches!(e.error, StoreError::Conflict { .. }));
    let many: Vec<BatchOp> = (0..101)
        .map(|i| BatchOp::Create {
            reference: None,
            task: TaskInput::titled(format!("{i}")),
            parent: None,
        })
        .collect();
    let e = u.batch(many).await.unwrap_err();
    assert_eq!(e.index, None);
    assert!(u.batch(vec![]).await.is_err());
    let hundred: Vec<BatchOp> = (0..100)
        .map(|i| BatchOp::Create {
            reference: Some(format!("r{i}")),
            task: TaskInput::titled(format!("{i}")),
            parent: None,
        })
        .collect();
    assert_eq!(u.batch(hundred).await.unwrap().len(), 100);
    store.close().await;
}

// ---- reminder firings ------------------------------------------------------------------------

/// Every change a stream yields until it has been quiet for 300 ms.
async fn drain_quiet(
    s: &mut (impl futures_util::Stream<Item = Result<Change, StoreError>> + Unpin),
) -> Vec<Change> {
    let mut out = Vec::new();
    while let Ok(next) = tokio::time::timeout(Duration::from_millis(300), s.next()).await {
        out.push(next.expect("the stream goes on").expect("no error"));
    }
    out
}

/// The `(task, reminder, scheduled_for)` of each firing among `changes`.
fn firings(changes: &[Change]) -> Vec<(Uuid, Uuid, chrono::DateTime<chrono::Utc>)> {
    changes
        .iter()
        .filter_map(|c| match &c.data {
            ChangeData::Reminder {
                task,
                reminder,
                scheduled_for,
            } => {
                assert_eq!(c.kind, ChangeType::ReminderFired, "{c:?}");
                Some((task.id, reminder.id, *scheduled_for))
            }
            _ => {
                assert_ne!(c.kind, ChangeType::ReminderFired, "{c:?}");
                None
            }
        })
        .collect()
}

/// A firing is a `reminder.fired` change of its user's stream: live subscribers get it once,
/// replays from before it include it once (with the time it fired for, even after its
/// reminder re-armed), replays from its id do not, other users never see it, and `changes`
/// never reports it.
async fn reminder_firings_are_events(db: &TestDb) {
    let store = db.store().await;
    let alice = store.for_user("alice").unwrap();
    let bob = store.for_user("bob").unwrap();
    let carol = store.for_user("carol").unwrap();
    let due = todo_store::task::truncate_ms(chrono::Utc::now() + chrono::Duration::days(2));
    let due = chrono::DateTime::from_timestamp(due.timestamp(), 0).unwrap();
    let t = alice
        .create(TaskInput {
            due_at: Some(due),
            recurrence: Some(Recurrence::new("FREQ=DAILY")),
            reminders: vec![ReminderInput::BeforeDue("PT1H".into())],
            ..TaskInput::titled("water the plants")
        })
        .await
        .unwrap();
    let reminder = t.reminders[0].id;
    let first_at = due - chrono::Duration::hours(1);
    let b = bob
        .create(TaskInput {
            reminders: vec![ReminderInput::At(first_at)],
            ..TaskInput::titled("bob's")
        })
        .await
        .unwrap();
    let mut replica = Replica::default();
    replica.sync(&alice, 100).await;
    let before = replica.since.clone().unwrap();
    let mut live = Box::pin(alice.subscribe(None).await.unwrap());
    let mut bobs = Box::pin(bob.subscribe(None).await.unwrap());
    let mut carols = Box::pin(carol.subscribe(None).await.unwrap());

    let fired = store.fire_due_reminders(due, 10).await.unwrap();
    assert_eq!(fired.len(), 2);
    let c = next_change(&mut live).await;
    assert_eq!(c.kind, ChangeType::ReminderFired);
    match &c.data {
        ChangeData::Reminder {
            task,
            reminder: r,
            scheduled_for,
        } => {
            assert_eq!(task, &t);
            assert_eq!(r, &t.reminders[0]);
            assert_eq!(*scheduled_for, first_at);
        }
        other => panic!("expected a firing, got {other:?}"),
    }
    let event_id = c.id.clone();
    assert!(drain_quiet(&mut live).await.is_empty(), "once");
    let theirs = drain_quiet(&mut bobs).await;
    assert_eq!(firings(&theirs), [(b.id, b.reminders[0].id, first_at)]);
    assert!(drain_quiet(&mut carols).await.is_empty());

    // Replays: from before it, once; from its id, nothing.
    let mut s = Box::pin(alice.subscribe(Some(&before)).await.unwrap());
    let replayed = drain_quiet(&mut s).await;
    assert_eq!(replayed.len(), 1, "{replayed:?}");
    assert_eq!(firings(&replayed), [(t.id, reminder, first_at)]);
    assert_eq!(replayed[0].id, event_id);
    let mut s = Box::pin(alice.subscribe(Some(&event_id)).await.unwrap());
    assert!(drain_quiet(&mut s).await.is_empty());

    // `changes` reports nothing, and its token is past the firing.
    let c = alice.changes(Some(&before), 100).await.unwrap();
    assert!(
        c.tasks.is_empty() && c.lists.is_empty() && c.deleted.is_empty() && !c.has_more,
        "{c:?}"
    );
    let mut s = Box::pin(alice.subscribe(Some(&c.next)).await.unwrap());
    assert!(drain_quiet(&mut s).await.is_empty());

    // The task advances and its reminder re-arms: the firing still reads as the time it
    // fired for (after the task's update, which comes first).
    let t1 = alice.set_completed(t.id, None, None).await.unwrap();
    assert_eq!(t1.due_at, Some(due + chrono::Duration::days(1)));
    let mut s = Box::pin(alice.subscribe(Some(&before)).await.unwrap());
    let replayed = drain_quiet(&mut s).await;
    assert_eq!(firings(&replayed), [(t.id, reminder, first_at)]);
    match &replayed[0].data {
        ChangeData::Reminder { task, .. } => assert_eq!(task, &t1, "the task as it is now"),
        other => panic!("{other:?}"),
    }
    let live_update = next_change(&mut live).await;
    assert_eq!(live_update.kind, ChangeType::TaskUpdated);

    // It fires again: one event for the reminder, its latest firing, after the update.
    let again = store
        .fire_due_reminders(due + chrono::Duration::days(1), 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    let second_at = first_at + chrono::Duration::days(1);
    let c = next_change(&mut live).await;
    assert_eq!(
        firings(std::slice::from_ref(&c)),
        [(t.id, reminder, second_at)]
    );
    assert!(drain_quiet(&mut live).await.is_empty());
    let mut s = Box::pin(alice.subscribe(Some(&before)).await.unwrap());
    let replayed = drain_quiet(&mut s).await;
    assert_eq!(firings(&replayed), [(t.id, reminder, second_at)]);
    assert_eq!(replayed.last().unwrap().id, c.id, "in commit order");
    let mut s = Box::pin(alice.subscribe(Some(&event_id)).await.unwrap());
    let after_first = drain_quiet(&mut s).await;
    assert_eq!(firings(&after_first), [(t.id, reminder, second_at)]);
    assert!(drain_quiet(&mut bobs).await.is_empty());
    assert!(drain_quiet(&mut carols).await.is_empty());

    // The replica saw the update and no firing; it matches the server.
    replica.sync(&alice, 100).await;
    assert_replica(&replica, &alice).await;

    // A firing whose task is gone is skipped.
    alice.delete(t.id, None).await.unwrap();
    let mut s = Box::pin(alice.subscribe(Some(&before)).await.unwrap());
    let replayed = drain_quiet(&mut s).await;
    assert!(firings(&replayed).is_empty(), "{replayed:?}");
    assert!(replayed.iter().any(|c| c.kind == ChangeType::TaskDeleted));
    store.close().await;
}

/// `changes` pages count tasks, lists and deletions only: a firing between two writes takes
/// no room on a page, never yields an empty page that says `has_more`, and hides no record.
async fn changes_pages_leave_firings_out(db: &TestDb) {
    let store = db.store().await;
    let u = store.for_user("alice").unwrap();
    let at = todo_store::task::truncate_ms(chrono::Utc::now() + chrono::Duration::hours(1));
    let with_reminders = u
        .create(TaskInput {
            reminders: vec![ReminderInput::At(at), ReminderInput::At(at)],
            ..TaskInput::titled("reminded")
        })
        .await
        .unwrap();
    let mut replica = Replica::default();
    replica.sync(&u, 100).await;
    let since = replica.since.clone().unwrap();
    // A write, a firing (two reminders, one seq), a write; then firings only at the end.
    let a = u.create(TaskInput::titled("a")).await.unwrap();
    assert_eq!(store.fire_due_reminders(at, 1).await.unwrap().len(), 1);
    let l = u.create_list(ListInput::named("l")).await.unwrap();
    assert_eq!(store.fire_due_reminders(at, 1).await.unwrap().len(), 1);

    let mut token = since.clone();
    let mut pages = Vec::new();
    loop {
        let c = u.changes(Some(&token), 1).await.unwrap();
        let n = c.tasks.len() + c.lists.len() + c.deleted.len();
        assert!(n <= 1, "{c:?}");
        assert!(
            n == 1 || !c.has_more,
            "an empty page that says has_more: {c:?}"
        );
        pages.push((
            c.tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
            c.lists.iter().map(|l| l.id).collect::<Vec<_>>(),
        ));
        token = c.next;
        if !c.has_more {
            break;
        }
        assert!(pages.len() < 10, "paging does not end: {pages:?}");
    }
    // a and the inbox (its open count) at one seq, then the new list.
    let inbox = u.inbox().await.unwrap().id;
    let tasks: Vec<Uuid> = pages.iter().flat_map(|p| p.0.clone()).collect();
    let lists: Vec<Uuid> = pages.iter().flat_map(|p| p.1.clone()).collect();
    assert_eq!(tasks, [a.id]);
    assert_eq!(lists, [inbox, l.id]);
    assert!(!tasks.contains(&with_reminders.id));
    assert_eq!(pages.len(), 3, "{pages:?}");
    // The final token is past the trailing firing: a stream from it starts after it.
    let mut s = Box::pin(u.subscribe(Some(&token)).await.unwrap());
    assert!(drain_quiet(&mut s).await.is_empty());
    // And a stream from the first token has all of it, in commit order.
    let mut s = Box::pin(u.subscribe(Some(&since)).await.unwrap());
    let all = drain_quiet(&mut s).await;
    let kinds: Vec<ChangeType> = all.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [
            ChangeType::ListUpdated,
            ChangeType::TaskCreated,
            ChangeType::ReminderFired,
            ChangeType::ListCreated,
            ChangeType::ReminderFired,
        ],
        "{all:?}"
    );
    replica.sync(&u, 1).await;
    assert_replica(&replica, &u).await;
    store.close().await;
}

/// Firings older than the tombstone age are pruned like tombstones: tokens from before them
/// answer 410, a token `changes` gave after them stays valid.
async fn pruning_removes_old_firings(db: &TestDb) {
    let store = db.store().await;
    let u = store.for_user("alice").unwrap();
    let bob = store.for_user("bob").unwrap();
    let at = todo_store::task::truncate_ms(chrono::Utc::now() + chrono::Duration::hours(1));
    let t = u
        .create(TaskInput {
            reminders: vec![ReminderInput::At(at)],
            ..TaskInput::titled("reminded")
        })
        .await
        .unwrap();
    bob.create(TaskInput::titled("bob's")).await.unwrap();
    let bobs = bob.changes(None, 100).await.unwrap().next;
    let before = u.changes(None, 100).await.unwrap().next;
    assert_eq!(store.fire_due_reminders(at, 10).await.unwrap().len(), 1);
    let synced = u.changes(Some(&before), 100).await.unwrap().next;
    let mut s = Box::pin(u.subscribe(Some(&before)).await.unwrap());
    let event = next_change(&mut s).await;
    assert_eq!(event.kind, ChangeType::ReminderFired);
    drop(s);

    // Younger than the age asked: kept.
    let kept = store
        .prune(Duration::from_secs(3600), Duration::from_secs(48 * 3600))
        .await
        .unwrap();
    assert_eq!(kept.reminder_events, 0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let pruned = store
        .prune(Duration::ZERO, Duration::from_secs(48 * 3600))
        .await
        .unwrap();
    assert_eq!((pruned.reminder_events, pruned.tombstones), (1, 0));
    assert!(matches!(
        u.subscribe(Some(&before)).await,
        Err(StoreError::Gone)
    ));
    assert!(matches!(
        u.changes(Some(&before), 100).await,
        Err(StoreError::Gone)
    ));
    // Tokens at or after it still work; the task itself is untouched.
    let c = u.changes(Some(&synced), 100).await.unwrap();
    assert!(c.tasks.is_empty() && !c.has_more);
    let mut s = Box::pin(u.subscribe(Some(&event.id)).await.unwrap());
    assert!(drain_quiet(&mut s).await.is_empty());
    assert_eq!(u.get(t.id).await.unwrap().id, t.id);
    assert!(bob.changes(Some(&bobs), 100).await.is_ok());
    let again = store
        .prune(Duration::ZERO, Duration::from_secs(48 * 3600))
        .await
        .unwrap();
    assert_eq!(again.reminder_events, 0);
    store.close().await;
}
