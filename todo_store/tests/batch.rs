//! Batches whose creates are buffered and inserted together: on both backends, every later
//! operation sees the buffered creates (references, moves, updates, positions after them),
//! tags and the change log are written, and a refused operation anywhere leaves nothing.

use test_support::both_backends;
use todo_store::query::{ParentFilter, SortKey};
use todo_store::{BatchOp, ListInput, Order, TaskInput, TaskPatch, TaskQuery, TaskRef};

fn create(r: Option<&str>, title: &str) -> BatchOp {
    BatchOp::Create {
        reference: r.map(str::to_owned),
        task: TaskInput {
            tags: vec![format!("tag-{title}")],
            ..TaskInput::titled(title)
        },
        parent: None,
    }
}

fn titles_in(page: &todo_store::Page) -> Vec<String> {
    page.tasks.iter().map(|t| t.title.clone()).collect()
}

async fn top_level(u: &todo_store::UserTasks, list: uuid::Uuid) -> Vec<String> {
    let q = TaskQuery {
        list_id: Some(list),
        parent: ParentFilter::TopLevel,
        sort: SortKey::Position,
        order: Order::Asc,
        ..TaskQuery::default()
    };
    titles_in(&u.list(&q).await.unwrap())
}

both_backends! {
    async fn buffered_creates_are_seen_by_later_operations(store: Store) {
        let u = store.for_user("alice").unwrap();
        let inbox = u.inbox().await.unwrap().id;
        u.create(TaskInput::titled("before")).await.unwrap();
        let other = u.create_list(ListInput::named("other")).await.unwrap();
        let since = u.changes(None, 1000).await.unwrap().next;
        let in_other = |title: &str, r: Option<&str>| BatchOp::Create {
            reference: r.map(str::to_owned),
            task: TaskInput {
                list_id: Some(other.id),
                ..TaskInput::titled(title)
            },
            parent: None,
        };
        let ops = vec![
            create(Some("a"), "a"),
            create(None, "b"),
            in_other("c", Some("c")),
            // A subtask of a buffered create: the buffer is written first.
            BatchOp::Create {
                reference: Some("d".into()),
                task: TaskInput::titled("d"),
                parent: Some(TaskRef::Ref("a".into())),
            },
            BatchOp::Update {
                id: TaskRef::Ref("c".into()),
                patch: TaskPatch {
                    title: Some("c2".into()),
                    ..Default::default()
                },
                if_match: Some(1),
            },
            create(None, "e"),
            in_other("f", None),
            create(None, "g"),
        ];
        let results = u.batch(ops).await.unwrap();
        assert_eq!(results.len(), 8);
        assert_eq!(top_level(&u, inbox).await, ["before", "a", "b", "e", "g"]);
        assert_eq!(top_level(&u, other.id).await, ["c2", "f"]);
        let a = results[0].task().unwrap().id;
        let d = results[3].task().unwrap();
        assert_eq!(d.parent_id, Some(a));
        assert_eq!(u.get(d.id).await.unwrap(), *d);
        // Results are the stored rows (but `c`, which a later operation changed).
        for (i, r) in results.iter().enumerate().filter(|(i, _)| *i != 2) {
            let t = r.task().unwrap();
            assert_eq!(u.get(t.id).await.unwrap(), *t, "operation {i}");
        }
        // Tags of buffered creates are stored and searchable.
        let tagged = u
            .list(&TaskQuery {
                tags: vec!["tag-e".into()],
                ..TaskQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(titles_in(&tagged), ["e"]);
        // Every created task is in the change log, once (`c` was created and then changed).
        let changes = u.changes(Some(&since), 1000).await.unwrap();
        assert_eq!(changes.tasks.len(), 7);

        // A refused operation after buffered creates leaves nothing of the batch.
        let total = u.list(&TaskQuery::default()).await.unwrap().total;
        let err = u
            .batch(vec![
                create(None, "x"),
                create(None, "y"),
                BatchOp::Update {
                    id: TaskRef::Ref("nope".into()),
                    patch: TaskPatch::default(),
                    if_match: None,
                },
            ])
            .await
            .unwrap_err();
        assert_eq!(err.index, Some(2));
        let err2 = u
            .batch(vec![create(None, "x"), create(None, "   ")])
            .await
            .unwrap_err();
        assert_eq!(err2.index, Some(1));
        assert_eq!(u.list(&TaskQuery::default()).await.unwrap().total, total);

        // A hundred creates in one batch keep their order.
        let ops: Vec<BatchOp> = (0..100).map(|i| create(None, &format!("n{i:03}"))).collect();
        u.batch(ops).await.unwrap();
        let q = TaskQuery {
            list_id: Some(inbox),
            parent: ParentFilter::TopLevel,
            sort: SortKey::Position,
            order: Order::Desc,
            limit: 100,
            ..TaskQuery::default()
        };
        let mut last = titles_in(&u.list(&q).await.unwrap());
        last.reverse();
        let want: Vec<String> = (0..100).map(|i| format!("n{i:03}")).collect();
        assert_eq!(last, want);
    }
}
