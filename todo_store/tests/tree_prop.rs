//! Lists and task trees checked against a plain in-memory model, on SQLite and on PostgreSQL.
//!
//! Random creates (in a list or under a task), moves (place, parent, list), deletes, completes
//! and reopens over three users. After every operation the store must agree with the model:
//! each task's list, parent, completion and version, each sibling group's order (positions
//! sorted byte-wise, ties on id), each list's open count; refused operations must be refused
//! by both and change nothing; and no user ever sees another's tasks or lists. Set
//! `PROPTEST_CASES` for a longer run.

use test_support::TestDb;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use todo_store::{
    ListInput, MoveTask, Order, ParentFilter, SortKey, Store, StoreError, TaskInput, TaskQuery,
    UserTasks,
};
use uuid::Uuid;

const USERS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// A list for user `u`.
    NewList(usize),
    /// A task for user `u`: in list pick `l` (None: default), under task pick `p`.
    Create {
        u: usize,
        list: Option<usize>,
        parent: Option<usize>,
    },
    /// Move task pick `t` of user `u`.
    Move {
        u: usize,
        t: usize,
        list: Option<usize>,
        parent: Option<Option<usize>>,
        after: Option<Option<usize>>,
    },
    Delete {
        u: usize,
        t: usize,
    },
    Complete {
        u: usize,
        t: usize,
        done: bool,
    },
    /// A foreign id: user `u` names a task of user `v`.
    Foreign {
        u: usize,
        v: usize,
        t: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let u = 0..USERS;
    let pick = 0usize..64;
    prop_oneof![
        1 => u.clone().prop_map(Op::NewList),
        4 => (u.clone(), prop::option::of(pick.clone()), prop::option::weighted(0.5, pick.clone()))
            .prop_map(|(u, list, parent)| Op::Create { u, list, parent }),
        4 => (
            u.clone(),
            pick.clone(),
            prop::option::weighted(0.3, pick.clone()),
            prop::option::weighted(0.5, prop::option::weighted(0.7, pick.clone())),
            prop::option::weighted(0.7, prop::option::weighted(0.7, pick.clone())),
        )
            .prop_map(|(u, t, list, parent, after)| Op::Move { u, t, list, parent, after }),
        1 => (u.clone(), pick.clone()).prop_map(|(u, t)| Op::Delete { u, t }),
        2 => (u.clone(), pick.clone(), any::<bool>()).prop_map(|(u, t, done)| Op::Complete { u, t, done }),
        1 => (u.clone(), u, pick).prop_map(|(u, v, t)| Op::Foreign { u, v, t }),
    ]
}

#[derive(Debug, Clone)]
struct MTask {
    list: Uuid,
    parent: Option<Uuid>,
    completed: bool,
    version: i64,
}

/// One user's model: lists in order, tasks, and each sibling group's order.
#[derive(Debug, Default)]
struct Model {
    lists: Vec<Uuid>,
    tasks: HashMap<Uuid, MTask>,
    /// Creation order, for picking.
    order: Vec<Uuid>,
    groups: HashMap<(Uuid, Option<Uuid>), Vec<Uuid>>,
}

impl Model {
    fn pick(&self, i: usize) -> Option<Uuid> {
        let live: Vec<Uuid> = self
            .order
            .iter()
            .copied()
            .filter(|t| self.tasks.contains_key(t))
            .collect();
        (!live.is_empty()).then(|| live[i % live.len()])
    }
    fn children(&self, id: Uuid) -> Vec<Uuid> {
        let t = &self.tasks[&id];
        self.groups
            .get(&(t.list, Some(id)))
            .cloned()
            .unwrap_or_default()
    }
    fn subtree(&self, id: Uuid) -> Vec<Uuid> {
        let mut out = vec![id];
        let mut i = 0;
        while i < out.len() {
            out.extend(self.children(out[i]));
            i += 1;
        }
        out
    }
    fn level(&self, id: Uuid) -> i64 {
        let mut n = 1;
        let mut cur = self.tasks[&id].parent;
        while let Some(p) = cur {
            n += 1;
            cur = self.tasks[&p].parent;
        }
        n
    }
    fn height(&self, id: Uuid) -> i64 {
        1 + self
            .children(id)
            .iter()
            .map(|c| self.height(*c))
            .max()
            .unwrap_or(0)
    }
    fn unlink(&mut self, id: Uuid) {
        let t = &self.tasks[&id];
        if let Some(g) = self.groups.get_mut(&(t.list, t.parent)) {
            g.retain(|x| *x != id);
        }
    }
}

fn ok<T>(r: Result<T, StoreError>, what: &str) -> Result<T, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(format!("{what}: {e:?}")))
}

fn refused<T: std::fmt::Debug>(
    r: Result<T, StoreError>,
    field: &str,
    what: &str,
) -> Result<(), TestCaseError> {
    match r {
        Err(StoreError::Invalid(f)) if f.iter().any(|f| f.field == field) => Ok(()),
        other => Err(TestCaseError::fail(format!(
            "{what}: expected a field error on {field}, got {other:?}"
        ))),
    }
}

async fn check(u: &UserTasks, m: &Model) -> Result<(), TestCaseError> {
    let lists = ok(u.lists().await, "lists")?;
    prop_assert_eq!(
        lists.iter().map(|l| l.id).collect::<Vec<_>>(),
        m.lists.clone()
    );
    for l in &lists {
        let open = m
            .tasks
            .values()
            .filter(|t| t.list == l.id && !t.completed)
            .count() as i64;
        prop_assert_eq!(l.open_count, open, "open count of {}", l.name);
    }
    let all = ok(
        u.list(&TaskQuery {
            limit: 100,
            ..TaskQuery::default()
        })
        .await,
        "list",
    )?;
    prop_assert_eq!(all.total as usize, m.tasks.len());
    for t in &all.tasks {
        let mt = m
            .tasks
            .get(&t.id)
            .ok_or_else(|| TestCaseError::fail("a task the model does not have"))?;
        prop_assert_eq!(
            (t.list_id, t.parent_id, t.completed, t.version),
            (mt.list, mt.parent, mt.completed, mt.version),
            "{}",
            t.title
        );
        prop_assert!(t.position.len() < 64);
    }
    for ((list, parent), ids) in &m.groups {
        let q = TaskQuery {
            sort: SortKey::Position,
            order: Order::Asc,
            list_id: Some(*list),
            parent: parent.map_or(ParentFilter::TopLevel, ParentFilter::Of),
            limit: 100,
            ..TaskQuery::default()
        };
        let got: Vec<Uuid> = ok(u.list(&q).await, "group")?
            .tasks
            .iter()
            .map(|t| t.id)
            .collect();
        prop_assert_eq!(&got, ids, "group {:?}", (list, parent));
    }
    Ok(())
}

async fn run_case(store: &Store, base: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let users: Vec<UserTasks> = (0..USERS)
        .map(|i| store.for_user(&format!("tree-{base}-{i}")).expect("user"))
        .collect();
    let mut models: Vec<Model> = Vec::new();
    for u in &users {
        let inbox = ok(u.inbox().await, "inbox")?;
        models.push(Model {
            lists: vec![inbox.id],
            ..Model::default()
        });
    }
    for op in ops {
        match op {
            Op::NewList(ui) => {
                let l = ok(
                    users[ui].create_list(ListInput::named("l")).await,
                    "create list",
                )?;
                models[ui].lists.push(l.id);
            }
            Op::Create {
                u: ui,
                list,
                parent,
            } => {
                let m = &mut models[ui];
                let list_id = list.map(|i| m.lists[i % m.lists.len()]);
                let parent_id = parent.and_then(|i| m.pick(i));
                let r = users[ui]
                    .create(TaskInput {
                        list_id,
                        parent_id,
                        ..TaskInput::titled("t")
                    })
                    .await;
                if let Some(p) = parent_id {
                    if list_id.is_some_and(|l| l != m.tasks[&p].list) {
                        refused(r, "list_id", "create into a list other than the parent's")?;
                        continue;
                    }
                    if m.level(p) >= 4 {
                        refused(r, "parent_id", "create too deep")?;
                        continue;
                    }
                }
                let t = ok(r, "create")?;
                let list = match parent_id {
                    Some(p) => m.tasks[&p].list,
                    None => list_id.unwrap_or(m.lists[0]),
                };
                prop_assert_eq!((t.list_id, t.parent_id), (list, parent_id));
                m.tasks.insert(
                    t.id,
                    MTask {
                        list,
                        parent: parent_id,
                        completed: false,
                        version: 1,
                    },
                );
                m.order.push(t.id);
                m.groups.entry((list, parent_id)).or_default().push(t.id);
            }
            Op::Move {
                u: ui,
                t,
                list,
                parent,
                after,
            } => {
                let m = &mut models[ui];
                let Some(id) = m.pick(t) else { continue };
                let list_id = list.map(|i| m.lists[i % m.lists.len()]);
                let parent_id = parent.map(|p| p.and_then(|i| m.pick(i)));
                let cur = m.tasks[&id].clone();
                let to = MoveTask {
                    list_id,
                    parent_id,
                    after: None,
                };
                // The destination, and the model's verdict.
                let (dest, err) = match parent_id {
                    Some(Some(p)) => {
                        let pl = m.tasks[&p].list;
                        if p == id {
                            ((pl, Some(p)), Some("parent_id"))
                        } else if list_id.is_some_and(|l| l != pl) {
                            ((pl, Some(p)), Some("list_id"))
                        } else if m.subtree(id).contains(&p) || m.level(p) + m.height(id) > 4 {
                            ((pl, Some(p)), Some("parent_id"))
                        } else {
                            ((pl, Some(p)), None)
                        }
                    }
                    _ if list_id.is_some() || parent_id.is_some() => {
                        ((list_id.unwrap_or(cur.list), None), None)
                    }
                    _ => ((cur.list, cur.parent), None),
                };
                let siblings: Vec<Uuid> = m
                    .groups
                    .get(&dest)
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|x| *x != id)
                    .collect();
                let after = after.map(|a| {
                    a.and_then(|i| {
                        // Mostly a sibling at the destination; sometimes any task (often refused).
                        if i % 4 == 0 {
                            m.pick(i)
                        } else if siblings.is_empty() {
                            None
                        } else {
                            Some(siblings[i % siblings.len()])
                        }
                    })
                });
                let err = err.or(match after {
                    Some(Some(a)) if !siblings.contains(&a) => Some("after"),
                    _ => None,
                });
                let r = users[ui]
                    .move_task(id, MoveTask { after, ..to }, Some(cur.version))
                    .await;
                if let Some(field) = err {
                    refused(r, field, "move")?;
                    continue;
                }
                let moved = ok(r, "move")?;
                prop_assert_eq!((moved.list_id, moved.parent_id), dest);
                if dest.0 != cur.list {
                    for d in m.subtree(id).into_iter().skip(1) {
                        let dt = m.tasks.get_mut(&d).expect("descendant");
                        dt.list = dest.0;
                        dt.version += 1;
                        let key_old = (cur.list, dt.parent);
                        let g = m.groups.remove(&key_old);
                        if let Some(g) = g {
                            m.groups.insert((dest.0, dt.parent), g);
                        }
                    }
                }
                m.unlink(id);
                let g = m.groups.entry(dest).or_default();
                let at = match after {
                    None => g.len(),
                    Some(None) => 0,
                    Some(Some(a)) => g.iter().position(|x| *x == a).map_or(g.len(), |i| i + 1),
                };
                g.insert(at, id);
                let mt = m.tasks.get_mut(&id).expect("moved");
                mt.list = dest.0;
                mt.parent = dest.1;
                mt.version += 1;
            }
            Op::Delete { u: ui, t } => {
                let m = &mut models[ui];
                let Some(id) = m.pick(t) else { continue };
                ok(users[ui].delete(id, None).await, "delete")?;
                m.unlink(id);
                for d in m.subtree(id) {
                    let dt = m.tasks.remove(&d).expect("in subtree");
                    m.groups.remove(&(dt.list, Some(d)));
                }
            }
            Op::Complete { u: ui, t, done } => {
                let m = &mut models[ui];
                let Some(id) = m.pick(t) else { continue };
                ok(
                    users[ui].set_completed(id, Some(done), None).await,
                    "complete",
                )?;
                let tt = m.tasks.get_mut(&id).expect("task");
                tt.completed = done;
                tt.version += 1;
                if done {
                    for d in m.subtree(id).into_iter().skip(1) {
                        let dt = m.tasks.get_mut(&d).expect("descendant");
                        if !dt.completed {
                            dt.completed = true;
                            dt.version += 1;
                        }
                    }
                } else {
                    let mut cur = m.tasks[&id].parent;
                    while let Some(p) = cur {
                        let pt = m.tasks.get_mut(&p).expect("ancestor");
                        if pt.completed {
                            pt.completed = false;
                            pt.version += 1;
                        }
                        cur = pt.parent;
                    }
                }
            }
            Op::Foreign { u: ui, v, t } => {
                if ui == v {
                    continue;
                }
                let Some(theirs) = models[v].pick(t) else {
                    continue;
                };
                let me = &users[ui];
                prop_assert!(matches!(me.get(theirs).await, Err(StoreError::NotFound)));
                prop_assert!(matches!(
                    me.delete(theirs, None).await,
                    Err(StoreError::NotFound)
                ));
                refused(
                    me.create(TaskInput {
                        parent_id: Some(theirs),
                        ..TaskInput::titled("x")
                    })
                    .await,
                    "parent_id",
                    "foreign parent",
                )?;
                let their_list = models[v].lists[t % models[v].lists.len()];
                refused(
                    me.create(TaskInput {
                        list_id: Some(their_list),
                        ..TaskInput::titled("x")
                    })
                    .await,
                    "list_id",
                    "foreign list",
                )?;
                prop_assert!(matches!(
                    me.get_list(their_list).await,
                    Err(StoreError::NotFound)
                ));
            }
        }
        for (u, m) in users.iter().zip(&models) {
            check(u, m).await?;
        }
    }
    Ok(())
}

fn config() -> Config {
    let env = Config::default();
    let set = |var: &str| std::env::var_os(var).is_some();
    Config {
        cases: if set("PROPTEST_CASES") { env.cases } else { 12 },
        max_shrink_iters: if set("PROPTEST_MAX_SHRINK_ITERS") {
            env.max_shrink_iters
        } else {
            200
        },
        failure_persistence: None,
        ..env
    }
}

fn run(store_db: (tokio::runtime::Runtime, Store, TestDb)) {
    let (rt, store, db) = store_db;
    let cases = AtomicUsize::new(0);
    let mut runner = TestRunner::new(config());
    let result = runner.run(&prop::collection::vec(op(), 1..40), |ops| {
        let n = cases.fetch_add(1, AtomicOrdering::Relaxed);
        rt.block_on(run_case(&store, n, ops))
    });
    rt.block_on(async {
        store.close().await;
        db.cleanup().await;
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn sqlite_trees_match_model() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let db = TestDb::sqlite();
    let store = rt.block_on(db.store());
    run((rt, store, db));
}

#[test]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
fn postgres_trees_match_model() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let db = rt.block_on(TestDb::postgres());
    let store = rt.block_on(db.store());
    run((rt, store, db));
}
