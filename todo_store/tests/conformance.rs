//! The store's conformance suite: every test runs on SQLite and on PostgreSQL.

use test_support::both_backends;

use std::collections::HashSet;

use chrono::{TimeZone, Utc};
use todo_store::{
    Order, Patch, Priority, SortKey, Status, StoreError, TaskInput, TaskPatch, TaskQuery,
};

fn fields(e: &StoreError) -> Vec<String> {
    let mut f: Vec<String> = e.field_errors().iter().map(|f| f.field.clone()).collect();
    f.sort();
    f
}

fn titled(t: &str) -> TaskInput {
    TaskInput::titled(t)
}

async fn all_titles(u: &todo_store::UserTasks, q: TaskQuery) -> Vec<String> {
    let mut out = Vec::new();
    let mut q = TaskQuery { limit: 2, ..q };
    loop {
        let page = u.list(&q).await.expect("list");
        out.extend(page.tasks.iter().map(|t| t.title.clone()));
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    out
}

async fn sorted(u: &todo_store::UserTasks, q: TaskQuery) -> Vec<String> {
    let mut t = all_titles(u, q).await;
    t.sort();
    t
}

both_backends! {
    async fn create_normalises_and_defaults(store: Store) {
        let u = store.for_user("alice").unwrap();
        let t = u
            .create(TaskInput {
                description: Some("  keep\n  this ".into()),
                tags: vec![" Home".into(), "ERRANDS ".into(), "home".into()],
                due_at: Some(Utc.timestamp_nanos(1_767_323_045_123_456_789)),
                ..titled("  Buy milk\t")
            })
            .await
            .unwrap();
        assert_eq!(t.title, "Buy milk");
        assert_eq!(t.description.as_deref(), Some("  keep\n  this "));
        assert_eq!(t.tags, ["home", "errands"]);
        assert_eq!(t.priority, Priority::Medium);
        assert!(!t.completed && t.completed_at.is_none());
        assert_eq!(t.version, 1);
        assert_eq!(t.created_at, t.updated_at);
        assert_eq!(t.due_at.unwrap().timestamp_subsec_nanos(), 123_000_000, "ms precision");
        assert_eq!(t.created_at.timestamp_subsec_nanos() % 1_000_000, 0);
        assert_eq!(t.user_id, "alice");
        assert_eq!(t.id.get_version_num(), 7);
        // What was returned is what is stored.
        assert_eq!(u.get(t.id).await.unwrap(), t);

        let done = u.create(TaskInput { completed: Some(true), ..titled("x") }).await.unwrap();
        assert!(done.completed);
        assert_eq!(done.completed_at, Some(done.created_at));
        let blank = u
            .create(TaskInput { description: Some(" \n ".into()), ..titled("y") })
            .await
            .unwrap();
        assert_eq!(blank.description, None);
    }

    async fn invalid_input_names_fields_and_writes_nothing(store: Store) {
        let u = store.for_user("alice").unwrap();
        let e = u
            .create(TaskInput {
                title: " ".into(),
                description: Some("d".repeat(1001)),
                tags: vec!["ok".into(), "".into()],
                due_at: Some(Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap()),
                ..TaskInput::default()
            })
            .await
            .unwrap_err();
        assert_eq!(fields(&e), ["description", "due_at", "tags[1]", "title"]);
        let e = u.create(titled(&"t".repeat(201))).await.unwrap_err();
        assert_eq!(fields(&e), ["title"]);
        let e = u.create(titled("nul\0")).await.unwrap_err();
        assert_eq!(fields(&e), ["title"]);
        let many = (0..21).map(|i| format!("t{i}")).collect();
        let e = u.create(TaskInput { tags: many, ..titled("x") }).await.unwrap_err();
        assert_eq!(fields(&e), ["tags"]);
        // Exactly at the limits is fine.
        u.create(TaskInput {
            description: Some(format!(" {} ", "d".repeat(1000))),
            tags: (0..20).map(|i| format!("{i:0>50}")).collect(),
            ..titled(&"é".repeat(200))
        })
        .await
        .unwrap();
        let page = u.list(&TaskQuery::default()).await.unwrap();
        assert_eq!(page.total, 1, "failed creates wrote nothing");
        assert!(matches!(store.for_user("a b"), Err(StoreError::Invalid(_))));
    }

    async fn longest_incompressible_values_are_stored(store: Store) {
        // 200 and 1,000 four-byte characters that do not compress: whatever indexes the schema
        // has must take the longest values the rules allow (PostgreSQL caps an index row at
        // about 2.7 kB).
        let mut x: u32 = 0x9E37_79B9;
        let mut text = |n: usize| -> String {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    char::from_u32(0x20000 + x % 0xA000).unwrap_or('x')
                })
                .collect()
        };
        let (title, description) = (text(200), text(1000));
        let u = store.for_user("alice").unwrap();
        let t = u
            .create(TaskInput { description: Some(description.clone()), tags: vec![text(50)], ..titled(&title) })
            .await
            .unwrap();
        assert_eq!((t.title.as_str(), t.description.as_deref()), (title.as_str(), Some(description.as_str())));
        let q = TaskQuery { q: Some(description.chars().skip(500).take(3).collect()), ..TaskQuery::default() };
        assert_eq!(u.list(&q).await.unwrap().total, 1);
        let long = text(1000);
        let p = u.patch(t.id, TaskPatch { description: Patch::Set(long.clone()), ..TaskPatch::default() }, None).await.unwrap();
        assert_eq!(p.description.as_deref(), Some(long.as_str()));
    }

    async fn replace_resets_absent_fields_and_keeps_completion(store: Store) {
        let u = store.for_user("alice").unwrap();
        let t = u
            .create(TaskInput {
                description: Some("d".into()),
                priority: Some(Priority::High),
                tags: vec!["a".into()],
                due_at: Some(Utc::now()),
                completed: Some(true),
                ..titled("old")
            })
            .await
            .unwrap();
        let r = u.replace(t.id, titled(" new "), None).await.unwrap();
        assert_eq!(r.title, "new");
        assert_eq!((r.description, r.priority, r.due_at), (None, Priority::Medium, None));
        assert!(r.tags.is_empty());
        assert!(r.completed, "PUT without completed leaves it");
        assert_eq!(r.completed_at, t.completed_at);
        assert_eq!(r.version, 2);
        assert!(r.updated_at > t.updated_at);
        assert_eq!(r.created_at, t.created_at);
        assert!(u.tags().await.unwrap().is_empty(), "tag rows follow the task");
        let r2 = u
            .replace(t.id, TaskInput { completed: Some(false), ..titled("new") }, Some(2))
            .await
            .unwrap();
        assert!(!r2.completed && r2.completed_at.is_none());
        assert_eq!(r2.version, 3);
        assert!(r2.updated_at > r.updated_at, "strictly forward even within a millisecond");
        assert_eq!(u.get(t.id).await.unwrap(), r2);
        let e = u.replace(t.id, titled(""), None).await.unwrap_err();
        assert_eq!(fields(&e), ["title"]);
        assert_eq!(u.get(t.id).await.unwrap().version, 3, "invalid replace changed nothing");
    }

    async fn patch_merges(store: Store) {
        let u = store.for_user("alice").unwrap();
        let t = u
            .create(TaskInput {
                description: Some("d".into()),
                tags: vec!["a".into(), "b".into()],
                due_at: Some(Utc::now()),
                ..titled("t")
            })
            .await
            .unwrap();
        let p = u.patch(t.id, TaskPatch::default(), None).await.unwrap();
        assert_eq!(p.version, 2, "an empty patch is still a write");
        assert_eq!((&p.title, &p.description, &p.tags, p.due_at), (&t.title, &t.description, &t.tags, t.due_at));
        let p = u
            .patch(
                t.id,
                TaskPatch {
                    description: Patch::Clear,
                    tags: Patch::Clear,
                    due_at: Patch::Clear,
                    priority: Some(Priority::Low),
                    completed: Some(true),
                    ..TaskPatch::default()
                },
                Some(2),
            )
            .await
            .unwrap();
        assert_eq!((p.description, p.due_at, p.priority), (None, None, Priority::Low));
        assert!(p.tags.is_empty() && p.completed && p.completed_at.is_some());
        let p2 = u
            .patch(
                t.id,
                TaskPatch {
                    title: Some(" T2 ".into()),
                    tags: Patch::Set(vec!["X".into()]),
                    completed: Some(true),
                    ..TaskPatch::default()
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(p2.title, "T2");
        assert_eq!(p2.tags, ["x"]);
        assert_eq!(p2.completed_at, p.completed_at, "kept when already completed");
        let tags = u.tags().await.unwrap();
        assert_eq!(tags.len(), 1);
        assert_eq!((tags[0].tag.as_str(), tags[0].count), ("x", 1));
        let e = u
            .patch(t.id, TaskPatch { title: Some("".into()), tags: Patch::Set(vec!["".into()]), ..TaskPatch::default() }, None)
            .await
            .unwrap_err();
        assert_eq!(fields(&e), ["tags[0]", "title"]);
    }

    async fn completion_toggles_and_sets(store: Store) {
        let u = store.for_user("alice").unwrap();
        let t = u.create(titled("t")).await.unwrap();
        let a = u.set_completed(t.id, None, None).await.unwrap();
        assert!(a.completed && a.completed_at.is_some());
        let b = u.set_completed(t.id, Some(true), None).await.unwrap();
        assert!(b.completed);
        assert_eq!(b.completed_at, a.completed_at);
        assert_eq!(b.version, 3);
        let c = u.set_completed(t.id, None, Some(3)).await.unwrap();
        assert!(!c.completed && c.completed_at.is_none());
        let d = u.set_completed(t.id, Some(false), None).await.unwrap();
        assert!(!d.completed);
        assert_eq!(d.version, 5);
    }

    async fn stale_versions_conflict_and_change_nothing(store: Store) {
        let u = store.for_user("alice").unwrap();
        let t = u.create(TaskInput { tags: vec!["a".into()], ..titled("t") }).await.unwrap();
        let e = u.patch(t.id, TaskPatch { title: Some("x".into()), ..TaskPatch::default() }, Some(7)).await.unwrap_err();
        assert!(matches!(e, StoreError::Conflict { current: 1 }), "{e:?}");
        assert!(matches!(u.replace(t.id, titled("x"), Some(0)).await, Err(StoreError::Conflict { .. })));
        assert!(matches!(u.set_completed(t.id, None, Some(2)).await, Err(StoreError::Conflict { .. })));
        assert!(matches!(u.delete(t.id, Some(2)).await, Err(StoreError::Conflict { current: 1 })));
        assert_eq!(u.get(t.id).await.unwrap(), t);
        let missing = uuid::Uuid::now_v7();
        assert!(matches!(u.delete(missing, Some(1)).await, Err(StoreError::NotFound)));
        assert!(matches!(u.patch(missing, TaskPatch::default(), Some(1)).await, Err(StoreError::NotFound)));
        u.delete(t.id, Some(1)).await.unwrap();
        assert!(matches!(u.get(t.id).await, Err(StoreError::NotFound)));
        assert!(matches!(u.delete(t.id, None).await, Err(StoreError::NotFound)));
        assert!(u.tags().await.unwrap().is_empty(), "tags deleted with the task");
    }

    async fn users_are_isolated(store: Store) {
        let a = store.for_user("alice").unwrap();
        let b = store.for_user("Alice").unwrap();
        let ta = a.create(TaskInput { tags: vec!["shared".into()], ..titled("a's") }).await.unwrap();
        let tb = b.create(TaskInput { tags: vec!["shared".into(), "b".into()], ..titled("b's") }).await.unwrap();
        assert!(matches!(b.get(ta.id).await, Err(StoreError::NotFound)));
        assert!(matches!(b.patch(ta.id, TaskPatch::default(), None).await, Err(StoreError::NotFound)));
        assert!(matches!(b.replace(ta.id, titled("x"), None).await, Err(StoreError::NotFound)));
        assert!(matches!(b.set_completed(ta.id, None, None).await, Err(StoreError::NotFound)));
        assert!(matches!(b.delete(ta.id, None).await, Err(StoreError::NotFound)));
        assert!(matches!(b.delete(ta.id, Some(1)).await, Err(StoreError::NotFound)));
        assert_eq!(a.get(ta.id).await.unwrap(), ta, "untouched");
        let la = a.list(&TaskQuery::default()).await.unwrap();
        assert_eq!((la.total, la.tasks.len(), la.tasks[0].id), (1, 1, ta.id));
        let lb = b.list(&TaskQuery { tags: vec!["shared".into()], ..TaskQuery::default() }).await.unwrap();
        assert_eq!((lb.total, lb.tasks[0].id), (1, tb.id));
        assert_eq!(a.tags().await.unwrap().len(), 1);
        assert_eq!(b.tags().await.unwrap().len(), 2);
        // A cursor made by one user only pages within the other user's own rows.
        let page = a.list(&TaskQuery { limit: 1, ..TaskQuery::default() }).await.unwrap();
        assert!(page.next_cursor.is_none());
        a.create(titled("a2")).await.unwrap();
        let cur = a.list(&TaskQuery { limit: 1, ..TaskQuery::default() }).await.unwrap().next_cursor.unwrap();
        let other = b.list(&TaskQuery { limit: 1, cursor: Some(cur), ..TaskQuery::default() }).await.unwrap();
        assert!(other.tasks.iter().all(|t| t.user_id == "Alice"));
    }

    async fn filters_and_search(store: Store) {
        let u = store.for_user("alice").unwrap();
        let day = |d: u32| Utc.with_ymd_and_hms(2026, 1, d, 0, 0, 0).unwrap();
        let mk = |title: &str, desc: Option<&str>, p: Priority, tags: &[&str], due: Option<chrono::DateTime<Utc>>, done: bool| TaskInput {
            title: title.into(),
            description: desc.map(Into::into),
            priority: Some(p),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            due_at: due,
            completed: Some(done),
            ..TaskInput::default()
        };
        u.create(mk("Buy MILK", None, Priority::High, &["home", "errands"], Some(day(1)), false)).await.unwrap();
        u.create(mk("50% off", Some("coupon_code"), Priority::Low, &["home"], Some(day(2)), true)).await.unwrap();
        u.create(mk("path", Some(r"C:\temp"), Priority::Medium, &["errands"], None, false)).await.unwrap();
        u.create(mk("Ünïcode ÉCLAIR", None, Priority::Medium, &[], Some(day(3)), false)).await.unwrap();
        let q = TaskQuery::default;
        assert_eq!(sorted(&u, TaskQuery { status: Status::Completed, ..q() }).await, ["50% off"]);
        assert_eq!(sorted(&u, TaskQuery { status: Status::Pending, ..q() }).await.len(), 3);
        assert_eq!(sorted(&u, TaskQuery { priorities: vec![Priority::High, Priority::Low], ..q() }).await, ["50% off", "Buy MILK"]);
        assert_eq!(sorted(&u, TaskQuery { tags: vec!["HOME ".into(), "errands".into()], ..q() }).await, ["Buy MILK"]);
        assert_eq!(sorted(&u, TaskQuery { tags: vec!["home".into()], ..q() }).await, ["50% off", "Buy MILK"]);
        assert!(sorted(&u, TaskQuery { tags: vec!["nope".into()], ..q() }).await.is_empty());
        assert_eq!(sorted(&u, TaskQuery { q: Some("milk".into()), ..q() }).await, ["Buy MILK"]);
        assert_eq!(sorted(&u, TaskQuery { q: Some("%".into()), ..q() }).await, ["50% off"]);
        assert_eq!(sorted(&u, TaskQuery { q: Some("_".into()), ..q() }).await, ["50% off"], "matches the description");
        assert_eq!(sorted(&u, TaskQuery { q: Some("\\".into()), ..q() }).await, ["path"]);
        assert_eq!(sorted(&u, TaskQuery { q: Some("éclair".into()), ..q() }).await, ["Ünïcode ÉCLAIR"], "non-ASCII folds too");
        assert!(sorted(&u, TaskQuery { q: Some("m_lk".into()), ..q() }).await.is_empty(), "_ is literal");
        assert_eq!(sorted(&u, TaskQuery { q: Some("COUPON".into()), ..q() }).await, ["50% off"], "a word of the description");
        assert_eq!(sorted(&u, TaskQuery { q: Some("on_c".into()), ..q() }).await, ["50% off"]);
        assert!(sorted(&u, TaskQuery { q: Some("onxc".into()), ..q() }).await.is_empty(), "_ is literal in longer needles too");
        // A description too long for the covering index (read from the table) is searched too.
        let c = store.for_user("carol").unwrap();
        let long = format!("{}Zebra crossing", "ééé ".repeat(240));
        c.create(mk("walk", Some(&long), Priority::Low, &[], None, false)).await.unwrap();
        c.create(mk("zebra", None, Priority::Low, &[], None, false)).await.unwrap();
        assert_eq!(sorted(&c, TaskQuery { q: Some("ZEBRA".into()), ..q() }).await, ["walk", "zebra"]);
        assert_eq!(sorted(&c, TaskQuery { q: Some("a c".into()), ..q() }).await, ["walk"]);
        assert!(sorted(&u, TaskQuery { q: Some("zebra".into()), ..q() }).await.is_empty(), "other users' tasks stay out");
        assert_eq!(sorted(&u, TaskQuery { due_after: Some(day(2)), ..q() }).await, ["50% off", "Ünïcode ÉCLAIR"]);
        assert_eq!(sorted(&u, TaskQuery { due_before: Some(day(2)), ..q() }).await, ["Buy MILK"]);
        assert_eq!(sorted(&u, TaskQuery { due_after: Some(day(1)), due_before: Some(day(3)), ..q() }).await, ["50% off", "Buy MILK"]);
        let p = u.list(&TaskQuery { limit: 1, status: Status::Pending, ..q() }).await.unwrap();
        assert_eq!((p.total, p.tasks.len(), p.limit), (3, 1, 1));
        assert!(p.next_cursor.is_some());
    }

    async fn sorting_and_paging(store: Store) {
        let u = store.for_user("alice").unwrap();
        let day = |d: u32| Utc.with_ymd_and_hms(2026, 1, d, 0, 0, 0).unwrap();
        for (t, p, due) in [
            ("banana", Priority::Low, Some(day(3))),
            ("Apple", Priority::High, None),
            ("éclair", Priority::Medium, Some(day(1))),
            ("cherry", Priority::High, Some(day(3))),
            ("apple pie", Priority::Low, None),
        ] {
            u.create(TaskInput { priority: Some(p), due_at: due, ..titled(t) }).await.unwrap();
        }
        let by = |sort, order| TaskQuery { sort, order, ..TaskQuery::default() };
        assert_eq!(all_titles(&u, by(SortKey::Title, Order::Asc)).await, ["Apple", "apple pie", "banana", "cherry", "éclair"]);
        assert_eq!(all_titles(&u, by(SortKey::Title, Order::Desc)).await, ["éclair", "cherry", "banana", "apple pie", "Apple"]);
        assert_eq!(all_titles(&u, by(SortKey::CreatedAt, Order::Asc)).await, ["banana", "Apple", "éclair", "cherry", "apple pie"]);
        assert_eq!(all_titles(&u, TaskQuery::default()).await, ["apple pie", "cherry", "éclair", "Apple", "banana"], "newest first by default");
        // Priority ties break on id (creation order for v7 ids), same direction.
        assert_eq!(all_titles(&u, by(SortKey::Priority, Order::Asc)).await, ["banana", "apple pie", "éclair", "Apple", "cherry"]);
        assert_eq!(all_titles(&u, by(SortKey::Priority, Order::Desc)).await, ["cherry", "Apple", "éclair", "apple pie", "banana"]);
        // Undated tasks last in both directions.
        assert_eq!(all_titles(&u, by(SortKey::DueAt, Order::Asc)).await, ["éclair", "banana", "cherry", "Apple", "apple pie"]);
        assert_eq!(all_titles(&u, by(SortKey::DueAt, Order::Desc)).await, ["cherry", "banana", "éclair", "apple pie", "Apple"]);
        // next_cursor is null exactly when no row follows.
        let full = u.list(&TaskQuery { limit: 5, ..TaskQuery::default() }).await.unwrap();
        assert!(full.next_cursor.is_none());
        let p1 = u.list(&TaskQuery { limit: 4, ..TaskQuery::default() }).await.unwrap();
        let p2 = u.list(&TaskQuery { limit: 4, cursor: p1.next_cursor.clone(), ..TaskQuery::default() }).await.unwrap();
        assert_eq!((p2.tasks.len(), p2.total, p2.next_cursor.is_none()), (1, 5, true));
        // A cursor belongs to its sort and order.
        let e = u.list(&TaskQuery { limit: 4, order: Order::Asc, cursor: p1.next_cursor.clone(), ..TaskQuery::default() }).await.unwrap_err();
        assert_eq!(fields(&e), ["cursor"]);
        let e = u.list(&TaskQuery { limit: 101, ..TaskQuery::default() }).await.unwrap_err();
        assert_eq!(fields(&e), ["limit"]);
        // Updated-at order follows writes.
        let first = u.list(&by(SortKey::CreatedAt, Order::Asc)).await.unwrap().tasks[0].clone();
        u.patch(first.id, TaskPatch::default(), None).await.unwrap();
        assert_eq!(all_titles(&u, by(SortKey::UpdatedAt, Order::Desc)).await[0], "banana");
        // Deleting the row a cursor points at neither skips nor repeats.
        let p1 = u.list(&TaskQuery { limit: 2, ..TaskQuery::default() }).await.unwrap();
        u.delete(p1.tasks[1].id, None).await.unwrap();
        let rest = u.list(&TaskQuery { limit: 10, cursor: p1.next_cursor, ..TaskQuery::default() }).await.unwrap();
        let titles: Vec<_> = rest.tasks.iter().map(|t| t.title.as_str()).collect();
        assert_eq!(titles, ["éclair", "Apple", "banana"]);
        // Past the end: a cursor whose following row was deleted gives an empty page and a total.
        let asc = |limit, cursor| TaskQuery { limit, cursor, order: Order::Asc, ..TaskQuery::default() };
        let extra = u.create(titled("zz")).await.unwrap();
        let c = u.list(&asc(4, None)).await.unwrap().next_cursor.expect("the extra row follows");
        u.delete(extra.id, None).await.unwrap();
        let last = u.list(&asc(10, Some(c))).await.unwrap();
        assert!(last.tasks.is_empty() && last.next_cursor.is_none());
        assert_eq!(last.total, 4);
    }

    async fn tag_counts_order(store: Store) {
        let u = store.for_user("alice").unwrap();
        let tags = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        u.create(TaskInput { tags: tags(&["b", "a"]), ..titled("1") }).await.unwrap();
        u.create(TaskInput { tags: tags(&["b", "c"]), completed: Some(true), ..titled("2") }).await.unwrap();
        u.create(TaskInput { tags: tags(&["c", "d"]), ..titled("3") }).await.unwrap();
        let got: Vec<(String, i64)> = u.tags().await.unwrap().into_iter().map(|t| (t.tag, t.count)).collect();
        let want: Vec<(String, i64)> = [("b", 2), ("c", 2), ("a", 1), ("d", 1)].iter().map(|(t, c)| (t.to_string(), *c)).collect();
        assert_eq!(got, want);
    }

    async fn concurrent_writes_never_lose_updates(store: Store) {
        let u = store.for_user("alice").unwrap();
        let t = u.create(titled("t")).await.unwrap();
        let n = 16;
        let mut handles = Vec::new();
        for i in 0..n {
            let u = u.clone();
            handles.push(tokio::spawn(async move {
                u.patch(t.id, TaskPatch { tags: Patch::Set(vec![format!("w{i}")]), ..TaskPatch::default() }, None).await
            }));
        }
        let mut versions = HashSet::new();
        for h in handles {
            versions.insert(h.await.unwrap().expect("write without If-Match applies").version);
        }
        assert_eq!(versions, (2..=n + 1).collect::<HashSet<i64>>(), "each write got its own version");
        let now = u.get(t.id).await.unwrap();
        assert_eq!(now.version, n + 1);
        assert_eq!(u.tags().await.unwrap().len(), 1, "tag rows match the last write");
        // With If-Match on the same version, exactly one wins.
        let mut handles = Vec::new();
        for _ in 0..8 {
            let u = u.clone();
            handles.push(tokio::spawn(async move { u.set_completed(t.id, None, Some(n + 1)).await }));
        }
        let mut ok = 0;
        for h in handles {
            match h.await.unwrap() {
                Ok(_) => ok += 1,
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(ok, 1);
        let before = u.get(t.id).await.unwrap();
        assert_eq!(before.version, n + 2);
        // Writes that leave the tags alone (optimistic on PostgreSQL, retried when another write
        // came between their read and their write) lose nothing either: every toggle counts, and
        // the title is the one the last version wrote.
        let mut handles = Vec::new();
        for i in 0..n {
            let u = u.clone();
            handles.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    u.set_completed(t.id, None, None).await
                } else {
                    u.patch(t.id, TaskPatch { title: Some(format!("p{i}")), ..TaskPatch::default() }, None).await
                }
            }));
        }
        let mut written = Vec::new();
        for h in handles {
            written.push(h.await.unwrap().expect("write without If-Match applies"));
        }
        let versions: HashSet<i64> = written.iter().map(|w| w.version).collect();
        assert_eq!(versions, (n + 3..=2 * n + 2).collect::<HashSet<i64>>(), "each write got its own version");
        let after = u.get(t.id).await.unwrap();
        assert_eq!(after.version, 2 * n + 2);
        assert_eq!(after.completed, before.completed, "{} toggles", n / 2);
        let last_title = written.iter().filter(|w| w.title.starts_with('p')).max_by_key(|w| w.version).unwrap();
        assert_eq!(after.title, last_title.title);
        assert_eq!(u.tags().await.unwrap().len(), 1, "tag rows untouched");
    }

    async fn migrating_again_is_a_no_op(store: Store) {
        let u = store.for_user("alice").unwrap();
        u.create(titled("kept")).await.unwrap();
        assert!(store.migrate().await.unwrap().is_empty());
        assert_eq!(u.list(&TaskQuery::default()).await.unwrap().total, 1);
    }
}
