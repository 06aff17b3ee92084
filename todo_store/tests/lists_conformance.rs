//! The conformance suite for lists, subtasks and manual order: every test runs on SQLite and on
//! PostgreSQL.

use test_support::both_backends;

use todo_store::{
    List, ListInput, ListPatch, MoveTask, Order, ParentFilter, Patch, Refusal, SortKey, Status,
    StoreError, Task, TaskInput, TaskPatch, TaskQuery, UserTasks,
};
use uuid::Uuid;

fn fields(e: &StoreError) -> Vec<String> {
    let mut f: Vec<String> = e.field_errors().iter().map(|f| f.field.clone()).collect();
    f.sort();
    f
}

fn field(r: Result<impl std::fmt::Debug, StoreError>) -> String {
    let e = r.expect_err("a field error");
    assert!(matches!(e, StoreError::Invalid(_)), "{e:?}");
    fields(&e).join(",")
}

async fn child(u: &UserTasks, title: &str, parent: Uuid) -> Task {
    u.create(TaskInput {
        parent_id: Some(parent),
        ..TaskInput::titled(title)
    })
    .await
    .unwrap()
}

/// Titles of a sibling group in position order (paged two at a time, so cursors are exercised).
async fn order(u: &UserTasks, list: Uuid, parent: ParentFilter) -> Vec<String> {
    let mut q = TaskQuery {
        sort: SortKey::Position,
        order: Order::Asc,
        list_id: Some(list),
        parent,
        limit: 2,
        ..TaskQuery::default()
    };
    let mut out = Vec::new();
    loop {
        let page = u.list(&q).await.unwrap();
        out.extend(page.tasks.iter().map(|t| t.title.clone()));
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    out
}

async fn snapshot(u: &UserTasks) -> (Vec<Task>, Vec<List>) {
    let mut q = TaskQuery {
        limit: 100,
        ..TaskQuery::default()
    };
    let mut tasks = Vec::new();
    loop {
        let page = u.list(&q).await.unwrap();
        tasks.extend(page.tasks);
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    (tasks, u.lists().await.unwrap())
}

both_backends! {
    async fn a_new_user_has_exactly_an_inbox(store: Store) {
        let u = store.for_user("alice").unwrap();
        let lists = u.lists().await.unwrap();
        assert_eq!(lists.len(), 1);
        let inbox = &lists[0];
        assert!(inbox.is_inbox);
        assert_eq!((inbox.name.as_str(), inbox.color.as_deref(), inbox.version, inbox.open_count), ("Inbox", None, 1, 0));
        assert_eq!(u.inbox().await.unwrap(), *inbox);
        // Concurrent first requests of another user create one inbox.
        let mut handles = Vec::new();
        for _ in 0..8 {
            let s = store.clone();
            handles.push(tokio::spawn(async move { s.for_user("bob").unwrap().lists().await }));
        }
        let mut ids = std::collections::HashSet::new();
        for h in handles {
            let l = h.await.unwrap().unwrap();
            assert_eq!(l.len(), 1);
            ids.insert(l[0].id);
        }
        assert_eq!(ids.len(), 1);
        // A task without a list goes into the inbox.
        let t = u.create(TaskInput::titled("t")).await.unwrap();
        assert_eq!((t.list_id, t.parent_id), (inbox.id, None));
    }

    async fn lists_validate_order_and_count(store: Store) {
        let u = store.for_user("alice").unwrap();
        let a = u.create_list(ListInput { name: "  Groceries ".into(), color: Some("#FF8800".into()) }).await.unwrap();
        assert_eq!((a.name.as_str(), a.color.as_deref(), a.version, a.is_inbox), ("Groceries", Some("#ff8800"), 1, false));
        let b = u.create_list(ListInput::named("Work")).await.unwrap();
        let names: Vec<_> = u.lists().await.unwrap().into_iter().map(|l| l.name).collect();
        assert_eq!(names, ["Inbox", "Groceries", "Work"], "new lists go last");
        assert_eq!(field(u.create_list(ListInput::named(" ")).await), "name");
        assert_eq!(field(u.create_list(ListInput::named("x".repeat(101))).await), "name");
        assert_eq!(field(u.create_list(ListInput { name: "x".into(), color: Some("red".into()) }).await), "color");
        assert_eq!(u.lists().await.unwrap().len(), 3, "refused creates wrote nothing");
        // Counts: open tasks at every level.
        let t = u.create(TaskInput { list_id: Some(a.id), ..TaskInput::titled("milk") }).await.unwrap();
        let c = child(&u, "skim", t.id).await;
        u.create(TaskInput { list_id: Some(a.id), completed: Some(true), ..TaskInput::titled("done") }).await.unwrap();
        assert_eq!(c.list_id, a.id, "a subtask is in its parent's list");
        assert_eq!(u.get_list(a.id).await.unwrap().open_count, 2);
        // Rename, recolour, versions, If-Match.
        let r = u.update_list(a.id, ListPatch { name: Some(" Food ".into()), color: Patch::Clear }, Some(1)).await.unwrap();
        assert_eq!((r.name.as_str(), r.color.as_deref(), r.version, r.open_count), ("Food", None, 2, 2));
        assert!(r.updated_at > a.updated_at);
        assert!(matches!(u.update_list(a.id, ListPatch::default(), Some(1)).await, Err(StoreError::Conflict { current: 2 })));
        assert_eq!(field(u.update_list(a.id, ListPatch { color: Patch::Set("#12345".into()), ..ListPatch::default() }, None).await), "color");
        assert_eq!(u.get_list(a.id).await.unwrap(), r, "refused updates changed nothing");
        // Moves.
        let m = u.move_list(b.id, Some(None), Some(1)).await.unwrap();
        assert_eq!(m.version, 2);
        let names: Vec<_> = u.lists().await.unwrap().into_iter().map(|l| l.name).collect();
        assert_eq!(names, ["Work", "Inbox", "Food"]);
        let inbox = u.inbox().await.unwrap();
        u.move_list(b.id, Some(Some(inbox.id)), None).await.unwrap();
        u.move_list(inbox.id, None, None).await.unwrap();
        let names: Vec<_> = u.lists().await.unwrap().into_iter().map(|l| l.name).collect();
        assert_eq!(names, ["Work", "Food", "Inbox"]);
        assert_eq!(field(u.move_list(b.id, Some(Some(b.id)), None).await), "after");
        assert_eq!(field(u.move_list(b.id, Some(Some(Uuid::now_v7())), None).await), "after");
        assert!(matches!(u.move_list(b.id, None, Some(1)).await, Err(StoreError::Conflict { .. })));
        // The cap, counting the inbox.
        for i in 0..(todo_store::list::LISTS_MAX - 3) {
            u.create_list(ListInput::named(format!("l{i}"))).await.unwrap();
        }
        assert_eq!(field(u.create_list(ListInput::named("one too many")).await), "lists");
        assert_eq!(u.lists().await.unwrap().len() as i64, todo_store::list::LISTS_MAX);
    }

    async fn list_deletes(store: Store) {
        let u = store.for_user("alice").unwrap();
        let inbox = u.inbox().await.unwrap();
        assert!(matches!(u.delete_list(inbox.id, true, None).await, Err(StoreError::Refused(Refusal::InboxUndeletable))));
        let l = u.create_list(ListInput::named("L")).await.unwrap();
        let t = u.create(TaskInput { list_id: Some(l.id), tags: vec!["x".into()], ..TaskInput::titled("t") }).await.unwrap();
        let c = child(&u, "c", t.id).await;
        assert!(matches!(u.delete_list(l.id, false, None).await, Err(StoreError::Refused(Refusal::ListNotEmpty))));
        assert!(matches!(u.delete_list(l.id, true, Some(7)).await, Err(StoreError::Conflict { current: 1 })));
        assert_eq!(u.get(c.id).await.unwrap(), c, "refused deletes changed nothing");
        u.delete_list(l.id, true, Some(1)).await.unwrap();
        assert!(matches!(u.get_list(l.id).await, Err(StoreError::NotFound)));
        assert!(matches!(u.get(t.id).await, Err(StoreError::NotFound)));
        assert!(matches!(u.get(c.id).await, Err(StoreError::NotFound)));
        assert!(u.tags().await.unwrap().is_empty());
        let empty = u.create_list(ListInput::named("E")).await.unwrap();
        u.delete_list(empty.id, false, None).await.unwrap();
        assert!(matches!(u.delete_list(empty.id, false, None).await, Err(StoreError::NotFound)));
    }

    async fn other_users_lists_and_tasks_are_invisible(store: Store) {
        let a = store.for_user("alice").unwrap();
        let b = store.for_user("bob").unwrap();
        let la = a.create_list(ListInput::named("A")).await.unwrap();
        let ta = a.create(TaskInput { list_id: Some(la.id), ..TaskInput::titled("a") }).await.unwrap();
        assert!(matches!(b.get_list(la.id).await, Err(StoreError::NotFound)));
        assert!(matches!(b.update_list(la.id, ListPatch::default(), None).await, Err(StoreError::NotFound)));
        assert!(matches!(b.move_list(la.id, None, None).await, Err(StoreError::NotFound)));
        assert!(matches!(b.delete_list(la.id, true, None).await, Err(StoreError::NotFound)));
        assert_eq!(field(b.create(TaskInput { list_id: Some(la.id), ..TaskInput::titled("x") }).await), "list_id");
        assert_eq!(field(b.create(TaskInput { parent_id: Some(ta.id), ..TaskInput::titled("x") }).await), "parent_id");
        let tb = b.create(TaskInput::titled("b")).await.unwrap();
        assert_eq!(field(b.move_task(tb.id, MoveTask { list_id: Some(la.id), ..MoveTask::default() }, None).await), "list_id");
        assert_eq!(field(b.move_task(tb.id, MoveTask { parent_id: Some(Some(ta.id)), ..MoveTask::default() }, None).await), "parent_id");
        assert_eq!(field(b.move_task(tb.id, MoveTask { after: Some(Some(ta.id)), ..MoveTask::default() }, None).await), "after");
        assert!(matches!(b.move_task(ta.id, MoveTask::default(), None).await, Err(StoreError::NotFound)));
        let q = TaskQuery { list_id: Some(la.id), ..TaskQuery::default() };
        assert_eq!(b.list(&q).await.unwrap().total, 0, "another user's list matches nothing");
        assert_eq!(a.list(&q).await.unwrap().total, 1);
        assert_eq!(b.lists().await.unwrap().len(), 1);
        assert_eq!(a.get(ta.id).await.unwrap(), ta);
        assert_eq!(b.get(tb.id).await.unwrap().version, 1, "refused moves changed nothing");
    }

    async fn create_places_tasks(store: Store) {
        let u = store.for_user("alice").unwrap();
        let l = u.create_list(ListInput::named("L")).await.unwrap();
        let inbox = u.inbox().await.unwrap();
        let p = u.create(TaskInput { list_id: Some(l.id), ..TaskInput::titled("p") }).await.unwrap();
        let c1 = child(&u, "c1", p.id).await;
        let c2 = child(&u, "c2", p.id).await;
        assert_eq!((c1.list_id, c1.parent_id), (l.id, Some(p.id)));
        assert!(c1.position < c2.position, "new tasks go last");
        assert_eq!(order(&u, l.id, ParentFilter::Of(p.id)).await, ["c1", "c2"]);
        assert_eq!(order(&u, l.id, ParentFilter::TopLevel).await, ["p"]);
        let mismatched = u.create(TaskInput { list_id: Some(inbox.id), parent_id: Some(p.id), ..TaskInput::titled("x") }).await;
        assert_eq!(field(mismatched), "list_id");
        let same = u.create(TaskInput { list_id: Some(l.id), parent_id: Some(c1.id), ..TaskInput::titled("g") }).await.unwrap();
        let l4 = child(&u, "l4", same.id).await;
        assert_eq!(field(u.create(TaskInput { parent_id: Some(l4.id), ..TaskInput::titled("l5") }).await), "parent_id", "4 levels at most");
        assert_eq!(field(u.create(TaskInput { list_id: Some(Uuid::now_v7()), ..TaskInput::titled("x") }).await), "list_id");
        assert_eq!(field(u.create(TaskInput { parent_id: Some(Uuid::now_v7()), ..TaskInput::titled("x") }).await), "parent_id");
        assert_eq!(u.list(&TaskQuery::default()).await.unwrap().total, 5, "refused creates wrote nothing");
        // PUT and PATCH leave placement alone.
        let r = u.replace(c2.id, TaskInput { list_id: Some(inbox.id), parent_id: None, ..TaskInput::titled("c2'") }, None).await.unwrap();
        assert_eq!((r.list_id, r.parent_id, r.position.as_str()), (l.id, Some(p.id), c2.position.as_str()));
        // Listing filters.
        let q = |list_id, parent| TaskQuery { list_id, parent, ..TaskQuery::default() };
        assert_eq!(u.list(&q(Some(l.id), ParentFilter::Any)).await.unwrap().total, 5);
        assert_eq!(u.list(&q(None, ParentFilter::TopLevel)).await.unwrap().total, 1);
        assert_eq!(u.list(&q(None, ParentFilter::Of(c1.id))).await.unwrap().total, 1);
        assert_eq!(u.list(&q(Some(inbox.id), ParentFilter::Any)).await.unwrap().total, 0);
    }

    async fn moves_follow_the_rules(store: Store) {
        let u = store.for_user("alice").unwrap();
        let inbox = u.inbox().await.unwrap().id;
        let l = u.create_list(ListInput::named("L")).await.unwrap().id;
        let mut top = Vec::new();
        for t in ["a", "b", "c", "d"] {
            top.push(u.create(TaskInput::titled(t)).await.unwrap());
        }
        let [a, b, c, d] = [&top[0], &top[1], &top[2], &top[3]].map(|t| t.id);
        let mv = |list_id, parent_id, after| MoveTask { list_id, parent_id, after };
        // Only the place changes.
        let m = u.move_task(d, mv(None, None, Some(None)), Some(1)).await.unwrap();
        assert_eq!(m.version, 2);
        assert_eq!(order(&u, inbox, ParentFilter::TopLevel).await, ["d", "a", "b", "c"]);
        u.move_task(d, mv(None, None, Some(Some(b))), None).await.unwrap();
        assert_eq!(order(&u, inbox, ParentFilter::TopLevel).await, ["a", "b", "d", "c"]);
        u.move_task(a, mv(None, None, None), None).await.unwrap();
        assert_eq!(order(&u, inbox, ParentFilter::TopLevel).await, ["b", "d", "c", "a"]);
        // Bad `after`: itself, a non-sibling, unknown.
        assert_eq!(field(u.move_task(a, mv(None, None, Some(Some(a))), None).await), "after");
        assert_eq!(field(u.move_task(a, mv(None, None, Some(Some(Uuid::now_v7()))), None).await), "after");
        // Under a parent: into its list; the subtree follows; cycles and depth refused.
        let b1 = child(&u, "b1", b).await;
        let b11 = child(&u, "b11", b1.id).await;
        assert_eq!(field(u.move_task(a, mv(None, None, Some(Some(b1.id))), None).await), "after", "not a sibling at the destination");
        let before = snapshot(&u).await;
        assert_eq!(field(u.move_task(b, mv(None, Some(Some(b11.id)), None), None).await), "parent_id");
        assert_eq!(field(u.move_task(b, mv(None, Some(Some(b)), None), None).await), "parent_id");
        assert_eq!(field(u.move_task(b, mv(Some(l), Some(Some(c)), None), None).await), "list_id");
        // b has height 3: under c11 (level 2) it would reach level 5.
        let c1 = child(&u, "c1", c).await;
        let before = (before, u.get(c1.id).await.unwrap());
        assert_eq!(field(u.move_task(b, mv(None, Some(Some(c1.id)), None), None).await), "parent_id");
        let ok = u.move_task(b, mv(None, Some(Some(c)), Some(Some(c1.id))), None).await.unwrap();
        assert_eq!((ok.parent_id, ok.list_id), (Some(c), inbox));
        assert_eq!(order(&u, inbox, ParentFilter::Of(c)).await, ["c1", "b"]);
        assert_eq!(before.1, u.get(c1.id).await.unwrap(), "refused moves changed nothing");
        // To another list: top-level there, subtree along, each changed task version +1.
        let moved = u.move_task(c, mv(Some(l), None, None), None).await.unwrap();
        assert_eq!((moved.list_id, moved.parent_id), (l, None));
        for id in [c1.id, b, b1.id, b11.id] {
            let t = u.get(id).await.unwrap();
            assert_eq!(t.list_id, l, "{}", t.title);
        }
        assert_eq!(u.get(b11.id).await.unwrap().version, b11.version + 1);
        assert_eq!(order(&u, inbox, ParentFilter::TopLevel).await, ["d", "a"]);
        assert_eq!(order(&u, l, ParentFilter::TopLevel).await, ["c"]);
        assert_eq!(u.get_list(l).await.unwrap().open_count, 5);
        // parent_id null: top-level in the current list.
        let up = u.move_task(b11.id, mv(None, Some(None), Some(None)), None).await.unwrap();
        assert_eq!((up.list_id, up.parent_id), (l, None));
        assert_eq!(order(&u, l, ParentFilter::TopLevel).await, ["b11", "c"]);
        assert!(matches!(u.move_task(d, MoveTask::default(), Some(9)).await, Err(StoreError::Conflict { .. })));
    }

    async fn subtree_rules(store: Store) {
        let u = store.for_user("alice").unwrap();
        let p = u.create(TaskInput { tags: vec!["t".into()], ..TaskInput::titled("p") }).await.unwrap();
        let c = child(&u, "c", p.id).await;
        let g = child(&u, "g", c.id).await;
        let done = u.create(TaskInput { parent_id: Some(c.id), completed: Some(true), ..TaskInput::titled("done") }).await.unwrap();
        // Completing completes the open descendants, each version +1.
        let p2 = u.set_completed(p.id, Some(true), None).await.unwrap();
        assert!(p2.completed);
        let (c2, g2, done2) = (u.get(c.id).await.unwrap(), u.get(g.id).await.unwrap(), u.get(done.id).await.unwrap());
        assert!(c2.completed && g2.completed);
        assert_eq!((c2.version, g2.version), (c.version + 1, g.version + 1));
        assert!(c2.updated_at > c.updated_at && c2.completed_at.is_some());
        assert_eq!(done2, done, "already completed: untouched");
        // Reopening reopens the completed ancestors, not siblings or descendants.
        let g3 = u.patch(g.id, TaskPatch { completed: Some(false), ..TaskPatch::default() }, None).await.unwrap();
        assert!(!g3.completed);
        let (p3, c3) = (u.get(p.id).await.unwrap(), u.get(c.id).await.unwrap());
        assert!(!p3.completed && !c3.completed && p3.completed_at.is_none());
        assert_eq!((p3.version, c3.version), (p2.version + 1, c2.version + 1));
        assert_eq!(u.get(done.id).await.unwrap(), done);
        // Toggle and PUT complete too; PUT without `completed` cascades nothing.
        u.replace(c.id, TaskInput { completed: Some(true), ..TaskInput::titled("c") }, None).await.unwrap();
        assert!(u.get(g.id).await.unwrap().completed);
        u.set_completed(g.id, None, None).await.unwrap();
        assert!(!u.get(c.id).await.unwrap().completed, "toggle reopened the ancestors");
        let g_now = u.get(g.id).await.unwrap();
        u.replace(p.id, TaskInput::titled("p"), None).await.unwrap();
        assert_eq!(u.get(g.id).await.unwrap(), g_now);
        // A refused write changes nothing, subtree included.
        let before = snapshot(&u).await;
        assert!(matches!(u.set_completed(p.id, Some(true), Some(1)).await, Err(StoreError::Conflict { .. })));
        assert!(u.patch(p.id, TaskPatch { completed: Some(true), title: Some(" ".into()), ..TaskPatch::default() }, None).await.is_err());
        assert!(matches!(u.delete(p.id, Some(1)).await, Err(StoreError::Conflict { .. })));
        assert_eq!(snapshot(&u).await, before);
        // Deleting takes the subtree (and its tags).
        u.delete(c.id, None).await.unwrap();
        for id in [c.id, g.id, done.id] {
            assert!(matches!(u.get(id).await, Err(StoreError::NotFound)));
        }
        assert_eq!(u.list(&TaskQuery::default()).await.unwrap().total, 1);
        u.delete(p.id, None).await.unwrap();
        assert!(u.tags().await.unwrap().is_empty());
        assert_eq!(u.list(&TaskQuery { status: Status::All, ..TaskQuery::default() }).await.unwrap().total, 0);
    }

    async fn keys_stay_short_and_respacing_keeps_versions(store: Store) {
        let u = store.for_user("alice").unwrap();
        let inbox = u.inbox().await.unwrap().id;
        let first = u.create(TaskInput::titled("first")).await.unwrap();
        let last = u.create(TaskInput::titled("last")).await.unwrap();
        let mut titles = vec!["first".to_owned()];
        // Always right after `first`: the worst case for key growth.
        for i in 0..400 {
            let t = u.create(TaskInput::titled(format!("t{i}"))).await.unwrap();
            let m = u.move_task(t.id, MoveTask { after: Some(Some(first.id)), ..MoveTask::default() }, None).await.unwrap();
            assert!(m.position.len() < 64, "{}", m.position);
            titles.insert(1, format!("t{i}"));
        }
        titles.push("last".into());
        assert_eq!(order(&u, inbox, ParentFilter::TopLevel).await, titles);
        let l = u.get(last.id).await.unwrap();
        assert_eq!(l.version, 1, "re-spacing does not change versions");
        assert!(l.updated_at > last.updated_at, "but marks the rows updated");
        assert_ne!(l.position, last.position);
        let (tasks, _) = snapshot(&u).await;
        assert!(tasks.iter().all(|t| t.position.len() < 64));
        // Lists too.
        let a = u.create_list(ListInput::named("a")).await.unwrap();
        for i in 0..400 {
            let x = u.create_list(ListInput::named(format!("x{i}"))).await.unwrap();
            let m = u.move_list(x.id, Some(Some(inbox)), None).await.unwrap();
            assert!(m.position.len() < 64);
        }
        let lists = u.lists().await.unwrap();
        assert_eq!(lists[0].id, inbox);
        assert_eq!(lists[1].name, "x399");
        assert_eq!(lists.last().unwrap().id, a.id);
        assert_eq!(u.get_list(a.id).await.unwrap().version, 1);
    }
}
