//! Concurrent moves on PostgreSQL, from two store handles on one database (two server
//! instances): SQLite serialises its writers, PostgreSQL runs them at once, at READ COMMITTED.
//!
//! - Moves that lock the same rows in opposite orders (a task under another while that one
//!   goes under the first, two tasks into each other's lists or places) must never surface a
//!   deadlock (`StoreError::Unavailable`, an HTTP 503): each move succeeds or is refused with
//!   a field error, and the tree stays valid.
//! - Two moves that are each valid on the tree they read, but together nest deeper than
//!   `DEPTH_MAX` or make a cycle, must not both commit.
//!
//! After each run the tree is read with plain SQL (a cycle would make the store's own walks
//! run until the statement timeout) and checked: every parent exists and is in its child's
//! list, no task is more than `DEPTH_MAX` levels deep (so there is no cycle either), and each
//! sibling group's positions are distinct and shorter than 64 bytes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::Connection;
use test_support::TestDb;
use todo_store::task::DEPTH_MAX;
use todo_store::{
    BatchMove, BatchOp, ListInput, MoveTask, Store, StoreError, TaskInput, TaskPatch, UserTasks,
};
use uuid::Uuid;

const USER: &str = "alice";

/// One row of the tree as stored.
struct Row {
    list_id: Uuid,
    parent_id: Option<Uuid>,
    position: String,
}

async fn tree(url: &str) -> HashMap<Uuid, Row> {
    let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
    let rows: Vec<(Uuid, Uuid, Option<Uuid>, String)> =
        sqlx::query_as("SELECT id, list_id, parent_id, position FROM tasks WHERE user_id = $1")
            .bind(USER)
            .fetch_all(&mut c)
            .await
            .expect("read the tree");
    let _ = c.close().await;
    rows.into_iter()
        .map(|(id, list_id, parent_id, position)| {
            (
                id,
                Row {
                    list_id,
                    parent_id,
                    position,
                },
            )
        })
        .collect()
}

/// Deadlocks PostgreSQL detected in this database so far. Its statistics reach
/// `pg_stat_database` when a backend goes idle or exits, so this waits a little for the
/// closed stores' connections to report.
async fn deadlocks(url: &str) -> i64 {
    let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
    let mut seen = 0;
    for _ in 0..5 {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let _ = sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&mut c)
            .await;
        let (n,): (i64,) = sqlx::query_as(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&mut c)
        .await
        .expect("read statistics");
        seen = seen.max(n);
    }
    let _ = c.close().await;
    seen
}

/// What is wrong with the stored tree (empty when it is valid).
async fn tree_faults(url: &str) -> Vec<String> {
    let rows = tree(url).await;
    let mut faults = Vec::new();
    let mut groups: HashMap<(Uuid, Option<Uuid>), HashSet<&str>> = HashMap::new();
    for (id, r) in &rows {
        if let Some(p) = r.parent_id {
            match rows.get(&p) {
                None => faults.push(format!("{id}: parent {p} does not exist")),
                Some(parent) if parent.list_id != r.list_id => {
                    faults.push(format!("{id}: parent {p} is in another list"))
                }
                Some(_) => {}
            }
        }
        // Walk up at most DEPTH_MAX levels: a task still below a parent then is too deep, or
        // on a cycle.
        let mut level = 1;
        let mut at = r.parent_id;
        while let Some(p) = at {
            level += 1;
            if level > DEPTH_MAX {
                faults.push(format!(
                    "{id}: deeper than {DEPTH_MAX} levels, or in a cycle"
                ));
                break;
            }
            at = rows.get(&p).and_then(|p| p.parent_id);
        }
        if r.position.is_empty() || r.position.len() >= 64 {
            faults.push(format!("{id}: position {:?}", r.position));
        }
        if !groups
            .entry((r.list_id, r.parent_id))
            .or_default()
            .insert(r.position.as_str())
        {
            faults.push(format!("{id}: position {:?} taken twice", r.position));
        }
    }
    faults
}

async fn task(u: &UserTasks, title: &str, list: Uuid, parent: Option<Uuid>) -> Uuid {
    u.create(TaskInput {
        list_id: parent.is_none().then_some(list),
        parent_id: parent,
        ..TaskInput::titled(title)
    })
    .await
    .expect("create")
    .id
}

fn under(p: Uuid) -> MoveTask {
    MoveTask {
        parent_id: Some(Some(p)),
        ..MoveTask::default()
    }
}

/// Two store handles on one fresh database (as two server instances would have), one user.
async fn two_instances() -> (TestDb, Store, Store, UserTasks, UserTasks) {
    let db = TestDb::postgres().await;
    let s1 = db.store().await;
    let s2 = Store::connect(&db.url).await.expect("connect");
    let u1 = s1.for_user(USER).expect("user");
    let u2 = s2.for_user(USER).expect("user");
    (db, s1, s2, u1, u2)
}

/// Runs two moves at once, one on each instance, released together.
async fn both(
    u1: &UserTasks,
    m1: (Uuid, MoveTask),
    u2: &UserTasks,
    m2: (Uuid, MoveTask),
) -> [Result<(), StoreError>; 2] {
    let gate = Arc::new(tokio::sync::Barrier::new(2));
    let run = |u: &UserTasks, (id, to): (Uuid, MoveTask)| {
        let (u, gate) = (u.clone(), gate.clone());
        tokio::spawn(async move {
            gate.wait().await;
            u.move_task(id, to, None).await.map(|_| ())
        })
    };
    let (a, b) = (run(u1, m1), run(u2, m2));
    [a.await.expect("join"), b.await.expect("join")]
}

/// A small deterministic generator (xorshift), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
async fn opposite_order_moves_never_fail_as_unavailable() {
    let (db, s1, s2, u1, u2) = two_instances().await;
    let inbox = u1.inbox().await.expect("inbox").id;
    let other = u1
        .create_list(ListInput::named("Other"))
        .await
        .expect("list")
        .id;
    let mut ids = Vec::new();
    for (i, list) in [inbox, other].into_iter().cycle().take(10).enumerate() {
        ids.push(task(&u1, &format!("t{i}"), list, None).await);
    }

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut moved, mut refused, mut unavailable) = (0, 0, Vec::new());
    for round in 0..300 {
        let x = ids[rng.below(ids.len())];
        let y = loop {
            let y = ids[rng.below(ids.len())];
            if y != x {
                break y;
            }
        };
        let (tx, ty) = (u1.get(x).await.expect("x"), u1.get(y).await.expect("y"));
        // Each instance moves one of the pair relative to the other: the two moves name the
        // same rows in opposite orders.
        let (mx, my) = match round % 4 {
            // Each under the other (at most one may win: the other would make a cycle).
            0 => (under(y), under(x)),
            // Each right after the other, in the other's group (a place and maybe a parent
            // and a list change).
            1 => (
                MoveTask {
                    list_id: Some(ty.list_id),
                    parent_id: Some(ty.parent_id),
                    after: Some(Some(y)),
                },
                MoveTask {
                    list_id: Some(tx.list_id),
                    parent_id: Some(tx.parent_id),
                    after: Some(Some(x)),
                },
            ),
            // Each top-level into the other's list, first.
            2 => (
                MoveTask {
                    list_id: Some(ty.list_id),
                    parent_id: Some(None),
                    after: Some(None),
                },
                MoveTask {
                    list_id: Some(tx.list_id),
                    parent_id: Some(None),
                    after: Some(None),
                },
            ),
            // A place among its current siblings, after the other (refused unless siblings).
            _ => (
                MoveTask {
                    after: Some(Some(y)),
                    ..MoveTask::default()
                },
                MoveTask {
                    after: Some(Some(x)),
                    ..MoveTask::default()
                },
            ),
        };
        for r in both(&u1, (x, mx), &u2, (y, my)).await {
            match r {
                Ok(()) => moved += 1,
                Err(StoreError::Invalid(f))
                    if f.iter()
                        .all(|f| ["parent_id", "after", "list_id"].contains(&f.field.as_str())) =>
                {
                    refused += 1
                }
                Err(StoreError::Unavailable(e)) => unavailable.push(format!("round {round}: {e}")),
                Err(e) => panic!("round {round}: unexpected {e:?}"),
            }
        }
        // Top-level again now and then, so the tree does not settle at full depth.
        if round % 25 == 24 {
            for &id in &ids {
                let to = MoveTask {
                    parent_id: Some(None),
                    ..MoveTask::default()
                };
                u1.move_task(id, to, None).await.expect("flatten");
            }
        }
    }
    eprintln!(
        "moved {moved}, refused {refused}, unavailable {}",
        unavailable.len()
    );
    let faults = tree_faults(&db.url).await;
    s1.close().await;
    s2.close().await;
    let deadlocks = deadlocks(&db.url).await;
    db.cleanup().await;
    assert!(
        unavailable.is_empty(),
        "{} moves failed as unavailable (HTTP 503), first: {}",
        unavailable.len(),
        unavailable[0]
    );
    assert!(faults.is_empty(), "invalid tree: {faults:#?}");
    assert!(moved > 0, "no move succeeded");
    // Not one deadlock, even one a retry could have hidden: the moves take their locks in
    // one order.
    assert_eq!(deadlocks, 0, "PostgreSQL detected deadlocks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
async fn concurrent_moves_keep_depth_and_no_cycles() {
    let (db, s1, s2, u1, u2) = two_instances().await;
    let inbox = u1.inbox().await.expect("inbox").id;
    let mut both_won = Vec::new();
    let mut first_fault = None;
    for round in 0..40 {
        let t = |name: &str, parent| {
            let name = format!("{name}{round}");
            let u = &u1;
            async move { task(u, &name, inbox, parent).await }
        };
        let (m1, m2) = if round % 2 == 0 {
            // Depth: Q > R, X > X1, Y > Y1. X under R (level 2 + height 2 = 4) and Q under
            // Y1 (level 2 + height 2 = 4) are each fine; together Y > Y1 > Q > R > X > X1 is
            // six levels. The two moves lock disjoint rows (X, R and Q, Y1).
            let q = t("q", None).await;
            let r = t("r", Some(q)).await;
            let x = t("x", None).await;
            t("x1", Some(x)).await;
            let y = t("y", None).await;
            let y1 = t("y1", Some(y)).await;
            ((x, under(r)), (q, under(y1)))
        } else {
            // Cycle: A > C, B > D. A under D and B under C are each fine; together
            // A > C > B > D > A. Again disjoint rows (A, D and B, C).
            let a = t("a", None).await;
            let c = t("c", Some(a)).await;
            let b = t("b", None).await;
            let d = t("d", Some(b)).await;
            ((a, under(d)), (b, under(c)))
        };
        let results = both(&u1, m1, &u2, m2).await;
        for r in &results {
            match r {
                Ok(()) => {}
                Err(StoreError::Invalid(f)) if f[0].field == "parent_id" => {}
                Err(e) => panic!("round {round}: unexpected {e:?}"),
            }
        }
        if results.iter().all(Result::is_ok) {
            both_won.push(round);
            let faults = tree_faults(&db.url).await;
            if first_fault.is_none() && !faults.is_empty() {
                first_fault = Some(format!("round {round}: {}", faults[0]));
            }
        }
    }
    let faults = tree_faults(&db.url).await;
    s1.close().await;
    s2.close().await;
    db.cleanup().await;
    assert!(
        both_won.is_empty(),
        "both moves committed in rounds {both_won:?} ({}); the tree: {faults:#?}",
        first_fault.unwrap_or_default()
    );
    assert!(faults.is_empty(), "invalid tree: {faults:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
async fn a_create_under_a_parent_and_a_move_keep_depth() {
    let (db, s1, s2, u1, u2) = two_instances().await;
    let inbox = u1.inbox().await.expect("inbox").id;
    let mut both_won = Vec::new();
    for round in 0..40 {
        // Q > R and X > X1. X under R (level 2 + height 2 = 4) is fine, and so is a task
        // under X1 (level 3); together Q > R > X > X1 > new is five levels. The move locks X
        // and R, the create X1.
        let q = task(&u1, &format!("q{round}"), inbox, None).await;
        let r = task(&u1, &format!("r{round}"), inbox, Some(q)).await;
        let x = task(&u1, &format!("x{round}"), inbox, None).await;
        let x1 = task(&u1, &format!("x1{round}"), inbox, Some(x)).await;
        let gate = Arc::new(tokio::sync::Barrier::new(2));
        let moving = {
            let (u, gate) = (u1.clone(), gate.clone());
            tokio::spawn(async move {
                gate.wait().await;
                u.move_task(x, under(r), None).await.map(|_| ())
            })
        };
        let creating = {
            let (u, gate) = (u2.clone(), gate.clone());
            tokio::spawn(async move {
                gate.wait().await;
                let input = TaskInput {
                    parent_id: Some(x1),
                    ..TaskInput::titled("new")
                };
                u.create(input).await.map(|_| ())
            })
        };
        let results = [moving.await.expect("join"), creating.await.expect("join")];
        for r in &results {
            match r {
                Ok(()) => {}
                Err(StoreError::Invalid(f)) if f[0].field == "parent_id" => {}
                Err(e) => panic!("round {round}: unexpected {e:?}"),
            }
        }
        if results.iter().all(Result::is_ok) {
            both_won.push(round);
        }
    }
    let faults = tree_faults(&db.url).await;
    s1.close().await;
    s2.close().await;
    db.cleanup().await;
    assert!(
        both_won.is_empty(),
        "both committed in rounds {both_won:?}; the tree: {faults:#?}"
    );
    assert!(faults.is_empty(), "invalid tree: {faults:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
async fn opposite_order_batches_never_fail_as_unavailable() {
    // A batch locks rows in the order of its operations, so two batches naming the same
    // tasks in opposite orders can deadlock whatever each operation does; PostgreSQL then
    // fails one of them, and the store runs that one again.
    let (db, s1, s2, u1, u2) = two_instances().await;
    let inbox = u1.inbox().await.expect("inbox").id;
    let a = task(&u1, "a", inbox, None).await;
    let b = task(&u1, "b", inbox, None).await;
    let ops = |first: Uuid, second: Uuid, round: usize| {
        vec![
            BatchOp::Update {
                id: first.into(),
                patch: TaskPatch {
                    title: Some(format!("round {round}")),
                    ..TaskPatch::default()
                },
                if_match: None,
            },
            // Among its siblings: locks only the task.
            BatchOp::Move {
                id: second.into(),
                to: BatchMove {
                    after: Some(None),
                    ..BatchMove::default()
                },
                if_match: None,
            },
            BatchOp::Update {
                id: second.into(),
                patch: TaskPatch {
                    title: Some(format!("round {round}")),
                    ..TaskPatch::default()
                },
                if_match: None,
            },
        ]
    };
    let mut failed = Vec::new();
    for round in 0..30 {
        let gate = Arc::new(tokio::sync::Barrier::new(2));
        let run = |u: &UserTasks, ops: Vec<BatchOp>| {
            let (u, gate) = (u.clone(), gate.clone());
            tokio::spawn(async move {
                gate.wait().await;
                u.batch(ops).await
            })
        };
        let (x, y) = (run(&u1, ops(a, b, round)), run(&u2, ops(b, a, round)));
        for r in [x.await.expect("join"), y.await.expect("join")] {
            if let Err(e) = r {
                failed.push(format!("round {round}: {e}"));
            }
        }
    }
    let faults = tree_faults(&db.url).await;
    s1.close().await;
    s2.close().await;
    db.cleanup().await;
    assert!(
        failed.is_empty(),
        "{} batches failed: {failed:#?}",
        failed.len()
    );
    assert!(faults.is_empty(), "invalid tree: {faults:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
async fn a_delete_and_a_move_into_its_subtree_leave_no_orphan() {
    // A > P; X moves under P while A (with its subtree) is deleted. Either the move comes
    // first and X is deleted with the subtree, or the delete does and the move is refused:
    // X must never stay behind under a deleted parent.
    let (db, s1, s2, u1, u2) = two_instances().await;
    let inbox = u1.inbox().await.expect("inbox").id;
    let mut orphaned = Vec::new();
    for round in 0..40 {
        let a = task(&u1, &format!("a{round}"), inbox, None).await;
        let p = task(&u1, &format!("p{round}"), inbox, Some(a)).await;
        let x = task(&u1, &format!("x{round}"), inbox, None).await;
        let gate = Arc::new(tokio::sync::Barrier::new(2));
        let moving = {
            let (u, gate) = (u1.clone(), gate.clone());
            tokio::spawn(async move {
                gate.wait().await;
                u.move_task(x, under(p), None).await.map(|_| ())
            })
        };
        let deleting = {
            let (u, gate) = (u2.clone(), gate.clone());
            tokio::spawn(async move {
                gate.wait().await;
                u.delete(a, None).await
            })
        };
        match moving.await.expect("join") {
            Ok(()) => {}
            Err(StoreError::Invalid(f)) if f[0].field == "parent_id" => {}
            Err(e) => panic!("round {round}: unexpected {e:?}"),
        }
        deleting.await.expect("join").expect("delete");
        if u1.get(x).await.is_ok_and(|t| t.parent_id == Some(p)) {
            orphaned.push(round);
        }
    }
    let faults = tree_faults(&db.url).await;
    s1.close().await;
    s2.close().await;
    db.cleanup().await;
    assert!(
        orphaned.is_empty(),
        "a moved task outlived its deleted parent in rounds {orphaned:?}"
    );
    assert!(faults.is_empty(), "invalid tree: {faults:#?}");
}
