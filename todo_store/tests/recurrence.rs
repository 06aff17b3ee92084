//! Recurring tasks and reminders, on SQLite and on PostgreSQL: advancing across DST, BYDAY,
//! BYMONTHDAY=-1, COUNT and UNTIL running out, descendants reopened, the bad-input field names,
//! PATCH and PUT semantics, and reminders that fire once, never in the past, never for a
//! completed task, and again after an advance.

use test_support::both_backends;

use chrono::{DateTime, Duration, Utc};
use todo_store::{
    Patch, Recurrence, ReminderInput, ReminderKind, StoreError, Task, TaskInput, TaskPatch,
    UserTasks,
};
use uuid::Uuid;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn field(r: Result<impl std::fmt::Debug, StoreError>) -> String {
    let e = r.expect_err("a field error");
    assert!(matches!(e, StoreError::Invalid(_)), "{e:?}");
    let mut f: Vec<String> = e.field_errors().iter().map(|f| f.field.clone()).collect();
    f.sort();
    f.join(",")
}

async fn recurring(u: &UserTasks, due: &str, rule: &str, zone: &str) -> Task {
    u.create(TaskInput {
        due_at: Some(at(due)),
        recurrence: Some(Recurrence::in_zone(rule, zone)),
        ..TaskInput::titled("repeat")
    })
    .await
    .unwrap()
}

/// Completes `id` by toggling and returns the task.
async fn done(u: &UserTasks, id: Uuid) -> Task {
    u.set_completed(id, None, None).await.unwrap()
}

fn patch_completed() -> TaskPatch {
    TaskPatch {
        completed: Some(true),
        ..TaskPatch::default()
    }
}

both_backends! {
    async fn daily_at_nine_stays_nine_across_both_dst_changes(store: Store) {
        let u = store.for_user("alice").unwrap();
        // Saturday 28 March 2026 09:00 in Berlin (CET, UTC+1); summer time starts on the 29th.
        let t = recurring(&u, "2026-03-28T09:00:00+01:00", "FREQ=DAILY", "Europe/Berlin").await;
        assert_eq!(t.recurrence_start, t.due_at);
        let t1 = done(&u, t.id).await;
        assert!(!t1.completed && t1.completed_at.is_none());
        assert_eq!(t1.due_at, Some(at("2026-03-29T09:00:00+02:00")));
        assert_eq!(t1.version, 2);
        assert!(t1.last_completed_at.is_some());
        let t2 = u.set_completed(t.id, Some(true), None).await.unwrap();
        assert_eq!(t2.due_at, Some(at("2026-03-30T09:00:00+02:00")));
        assert_eq!(u.get(t.id).await.unwrap(), t2, "what was returned is what is stored");

        // Saturday 24 October 2026 09:00 CEST; winter time starts on the 25th.
        let t = recurring(&u, "2026-10-24T09:00:00+02:00", "FREQ=DAILY", "Europe/Berlin").await;
        let t1 = u.patch(t.id, patch_completed(), None).await.unwrap();
        assert_eq!(t1.due_at, Some(at("2026-10-25T09:00:00+01:00")));
        // In UTC the same rule keeps 08:00 UTC, whatever Berlin does.
        let t = recurring(&u, "2026-10-24T08:00:00Z", "FREQ=DAILY", "UTC").await;
        assert_eq!(done(&u, t.id).await.due_at, Some(at("2026-10-25T08:00:00Z")));
    }

    async fn weekly_on_monday_and_wednesday(store: Store) {
        let u = store.for_user("alice").unwrap();
        // Monday 5 January 2026.
        let t = recurring(&u, "2026-01-05T07:30:00Z", "FREQ=WEEKLY;BYDAY=MO,WE", "UTC").await;
        assert_eq!(done(&u, t.id).await.due_at, Some(at("2026-01-07T07:30:00Z")));
        assert_eq!(done(&u, t.id).await.due_at, Some(at("2026-01-12T07:30:00Z")));
        assert_eq!(done(&u, t.id).await.due_at, Some(at("2026-01-14T07:30:00Z")));
    }

    async fn last_day_of_the_month(store: Store) {
        let u = store.for_user("alice").unwrap();
        let t = recurring(&u, "2026-01-31T18:00:00+01:00", "FREQ=MONTHLY;BYMONTHDAY=-1", "Europe/Berlin").await;
        assert_eq!(done(&u, t.id).await.due_at, Some(at("2026-02-28T18:00:00+01:00")));
        assert_eq!(done(&u, t.id).await.due_at, Some(at("2026-03-31T18:00:00+02:00")));
        assert_eq!(done(&u, t.id).await.due_at, Some(at("2026-04-30T18:00:00+02:00")));
        // A leap year.
        let t = recurring(&u, "2028-01-31T12:00:00Z", "FREQ=MONTHLY;BYMONTHDAY=-1", "UTC").await;
        assert_eq!(done(&u, t.id).await.due_at, Some(at("2028-02-29T12:00:00Z")));
    }

    async fn count_runs_out_and_the_task_completes(store: Store) {
        let u = store.for_user("alice").unwrap();
        let t = recurring(&u, "2026-01-01T09:00:00Z", "FREQ=DAILY;COUNT=3", "UTC").await;
        // Three ways of completing: toggle, PATCH, PUT.
        let t1 = done(&u, t.id).await;
        assert_eq!((t1.due_at, t1.completed), (Some(at("2026-01-02T09:00:00Z")), false));
        let t2 = u.patch(t.id, patch_completed(), None).await.unwrap();
        assert_eq!((t2.due_at, t2.completed), (Some(at("2026-01-03T09:00:00Z")), false));
        assert_eq!(t2.recurrence_start, Some(at("2026-01-01T09:00:00Z")), "the rule keeps its start");
        let input = TaskInput {
            completed: Some(true),
            due_at: t2.due_at,
            recurrence: t2.recurrence.clone(),
            ..TaskInput::titled("repeat")
        };
        let t3 = u.replace(t.id, input, None).await.unwrap();
        assert!(t3.completed && t3.completed_at.is_some(), "{t3:?}");
        assert_eq!(t3.due_at, Some(at("2026-01-03T09:00:00Z")), "the last occurrence stays");
        assert_eq!(t3.last_completed_at, t2.last_completed_at, "a plain completion");
        assert!(t3.recurrence.is_some());
        // Reopening and completing again: still nothing further.
        u.set_completed(t.id, Some(false), None).await.unwrap();
        assert!(done(&u, t.id).await.completed);
    }

    async fn a_new_due_date_restarts_the_rule(store: Store) {
        let u = store.for_user("alice").unwrap();
        let t = recurring(&u, "2026-01-01T09:00:00Z", "FREQ=DAILY;COUNT=2", "UTC").await;
        let t1 = done(&u, t.id).await;
        assert_eq!(t1.due_at, Some(at("2026-01-02T09:00:00Z")));
        // Rescheduled by the client: DTSTART moves there, COUNT counts from it again.
        let moved = TaskPatch { due_at: Patch::Set(at("2026-02-01T10:00:00Z")), ..TaskPatch::default() };
        let t2 = u.patch(t.id, moved, None).await.unwrap();
        assert_eq!(t2.recurrence_start, Some(at("2026-02-01T10:00:00Z")));
        assert_eq!(done(&u, t.id).await.due_at, Some(at("2026-02-02T10:00:00Z")));
        assert!(done(&u, t.id).await.completed);
        // Created completed: it advances at once.
        let c = u
            .create(TaskInput {
                completed: Some(true),
                due_at: Some(at("2026-01-01T09:00:00Z")),
                recurrence: Some(Recurrence::new("FREQ=WEEKLY")),
                ..TaskInput::titled("c")
            })
            .await
            .unwrap();
        assert!(!c.completed && c.last_completed_at.is_some());
        assert_eq!((c.due_at, c.recurrence_start), (Some(at("2026-01-08T09:00:00Z")), Some(at("2026-01-01T09:00:00Z"))));
        assert_eq!(u.get(c.id).await.unwrap(), c);
    }

    async fn until_runs_out_and_the_task_completes(store: Store) {
        let u = store.for_user("alice").unwrap();
        // Thursday 1 January 2026.
        let t = recurring(&u, "2026-01-01T09:00:00Z", "FREQ=WEEKLY;UNTIL=20260115T235959Z", "UTC").await;
        assert_eq!(done(&u, t.id).await.due_at, Some(at("2026-01-08T09:00:00Z")));
        assert_eq!(done(&u, t.id).await.due_at, Some(at("2026-01-15T09:00:00Z")));
        let last = done(&u, t.id).await;
        assert!(last.completed);
        assert_eq!(last.due_at, Some(at("2026-01-15T09:00:00Z")));
    }

    async fn advancing_reopens_descendants(store: Store) {
        let u = store.for_user("alice").unwrap();
        let p = recurring(&u, "2026-01-05T09:00:00Z", "FREQ=WEEKLY", "UTC").await;
        let sub = |title: &'static str, parent: Uuid| {
            let u = u.clone();
            async move {
                u.create(TaskInput { parent_id: Some(parent), ..TaskInput::titled(title) })
                    .await
                    .unwrap()
            }
        };
        let a = sub("a", p.id).await;
        let b = sub("b", p.id).await;
        let a1 = sub("a1", a.id).await;
        u.set_completed(a1.id, Some(true), None).await.unwrap();
        u.set_completed(a.id, Some(true), None).await.unwrap();
        let (a_v, a1_v, b_v) = (
            u.get(a.id).await.unwrap().version,
            u.get(a1.id).await.unwrap().version,
            u.get(b.id).await.unwrap().version,
        );
        let p1 = done(&u, p.id).await;
        assert!(!p1.completed);
        assert_eq!(p1.due_at, Some(at("2026-01-12T09:00:00Z")));
        let (a, a1, b) = (u.get(a.id).await.unwrap(), u.get(a1.id).await.unwrap(), u.get(b.id).await.unwrap());
        assert!(!a.completed && a.completed_at.is_none() && !a1.completed);
        assert_eq!((a.version, a1.version, b.version), (a_v + 1, a1_v + 1, b_v), "only reopened ones change");
    }

    async fn completing_an_ancestor_completes_recurring_descendants(store: Store) {
        // The subtree rule wins: a completed task has no open descendant, so a recurring
        // subtask completes with its ancestor instead of advancing.
        let u = store.for_user("alice").unwrap();
        let p = u.create(TaskInput::titled("project")).await.unwrap();
        let c = u
            .create(TaskInput {
                parent_id: Some(p.id),
                due_at: Some(at("2026-01-05T09:00:00Z")),
                recurrence: Some(Recurrence::new("FREQ=DAILY")),
                ..TaskInput::titled("daily check")
            })
            .await
            .unwrap();
        done(&u, p.id).await;
        let c1 = u.get(c.id).await.unwrap();
        assert!(c1.completed);
        assert_eq!((c1.due_at, c1.last_completed_at, c1.version), (c.due_at, None, c.version + 1));
    }

    async fn bad_input_names_the_field(store: Store) {
        let u = store.for_user("alice").unwrap();
        let due = Some(at("2026-01-05T09:00:00Z"));
        let with = |r: Recurrence| TaskInput { due_at: due, recurrence: Some(r), ..TaskInput::titled("t") };
        assert_eq!(field(u.create(TaskInput { recurrence: Some(Recurrence::new("FREQ=DAILY")), ..TaskInput::titled("t") }).await), "recurrence");
        for rule in ["FREQ=DAILY;BYDAY=XX", "nonsense", "", "FREQ=HOURLY", "FREQ=MINUTELY", "FREQ=SECONDLY",
            "FREQ=DAILY;DTSTART=20260101T000000Z", "DTSTART:20260101T000000Z\nRRULE:FREQ=DAILY",
            "FREQ=DAILY;UNTIL=20200101T000000Z", "FREQ=DAILY;INTERVAL=99999999999"] {
            assert_eq!(field(u.create(with(Recurrence::new(rule))).await), "recurrence.rule", "{rule:?}");
        }
        assert_eq!(field(u.create(with(Recurrence::in_zone("FREQ=DAILY", "Mars/Olympus"))).await), "recurrence.timezone");
        let ok = u.create(with(Recurrence::in_zone("FREQ=DAILY", ""))).await.unwrap();
        assert_eq!(ok.recurrence.unwrap().timezone, "UTC", "the default zone");

        let six = vec![ReminderInput::BeforeDue("PT1M".into()); 6];
        assert_eq!(field(u.create(TaskInput { due_at: due, reminders: six, ..TaskInput::titled("t") }).await), "reminders");
        let before = vec![ReminderInput::BeforeDue("PT15M".into())];
        assert_eq!(field(u.create(TaskInput { reminders: before.clone(), ..TaskInput::titled("t") }).await), "reminders");
        for bad in ["P31D", "PT15", "15M", "P1M", "-PT1M"] {
            let r = vec![ReminderInput::BeforeDue(bad.into())];
            assert_eq!(field(u.create(TaskInput { due_at: due, reminders: r, ..TaskInput::titled("t") }).await), "reminders[0].before_due", "{bad}");
        }

        // Clearing the due date of a recurring task needs the recurrence cleared too.
        let t = u.create(with(Recurrence::new("FREQ=DAILY"))).await.unwrap();
        let clear_due = TaskPatch { due_at: Patch::Clear, ..TaskPatch::default() };
        assert_eq!(field(u.patch(t.id, clear_due.clone(), None).await), "due_at");
        let both = TaskPatch { recurrence: Patch::Clear, ..clear_due.clone() };
        let cleared = u.patch(t.id, both, None).await.unwrap();
        assert_eq!((cleared.due_at, cleared.recurrence, cleared.recurrence_start), (None, None, None));
        // Likewise a before_due reminder.
        let t = u.create(TaskInput { due_at: due, reminders: before, ..TaskInput::titled("t") }).await.unwrap();
        assert_eq!(field(u.patch(t.id, clear_due, None).await), "reminders");
        // A failed write changed nothing.
        assert_eq!(u.get(t.id).await.unwrap(), t);
    }

    async fn patch_null_and_put_absent_clear_the_schedule(store: Store) {
        let u = store.for_user("alice").unwrap();
        let due = Some(at("2030-01-05T09:00:00Z"));
        let t = u
            .create(TaskInput {
                due_at: due,
                recurrence: Some(Recurrence::in_zone("FREQ=WEEKLY", "Europe/Berlin")),
                reminders: vec![ReminderInput::BeforeDue("PT15M".into()), ReminderInput::At(at("2030-01-01T08:00:00Z"))],
                ..TaskInput::titled("t")
            })
            .await
            .unwrap();
        assert_eq!(t.reminders.len(), 2);
        assert_eq!(t.reminders[0].kind, ReminderKind::BeforeDue(Duration::minutes(15)));
        // Absent: unchanged.
        let p = u.patch(t.id, TaskPatch { title: Some("u".into()), ..TaskPatch::default() }, None).await.unwrap();
        assert_eq!((&p.recurrence, &p.reminders, p.recurrence_start), (&t.recurrence, &t.reminders, t.recurrence_start));
        // Identical reminders keep their ids, new ones get new ids.
        let p = u
            .patch(t.id, TaskPatch {
                reminders: Patch::Set(vec![ReminderInput::At(at("2030-01-01T08:00:00Z")), ReminderInput::BeforeDue("PT1H".into())]),
                ..TaskPatch::default()
            }, None)
            .await
            .unwrap();
        assert_eq!(p.reminders[0].id, t.reminders[1].id);
        assert!(p.reminders[1].id != t.reminders[0].id);
        // null: recurrence stops, reminders become [].
        let p = u
            .patch(t.id, TaskPatch { recurrence: Patch::Clear, reminders: Patch::Clear, ..TaskPatch::default() }, None)
            .await
            .unwrap();
        assert_eq!((p.recurrence, p.reminders.len(), p.due_at), (None, 0, due));
        assert_eq!(store.next_reminder_at().await.unwrap(), None, "no row left");
        // PUT without them clears both.
        let t = u
            .patch(t.id, TaskPatch {
                recurrence: Patch::Set(Recurrence::new("FREQ=DAILY")),
                reminders: Patch::Set(vec![ReminderInput::BeforeDue("PT5M".into())]),
                ..TaskPatch::default()
            }, None)
            .await
            .unwrap();
        assert!(t.recurrence.is_some() && t.reminders.len() == 1);
        let r = u.replace(t.id, TaskInput { due_at: due, ..TaskInput::titled("t") }, None).await.unwrap();
        assert_eq!((r.recurrence, r.reminders.len(), r.last_completed_at), (None, 0, None));
    }

    async fn reminders_fire_once_and_never_in_the_past(store: Store) {
        let u = store.for_user("alice").unwrap();
        let now = Utc::now();
        let soon = todo_store::task::truncate_ms(now + Duration::hours(1));
        let t = u
            .create(TaskInput {
                due_at: Some(soon + Duration::minutes(30)),
                reminders: vec![
                    ReminderInput::At(soon),
                    ReminderInput::At(now - Duration::hours(1)),
                    ReminderInput::BeforeDue("P1D".into()),
                    ReminderInput::BeforeDue("PT30M".into()),
                ],
                ..TaskInput::titled("call")
            })
            .await
            .unwrap();
        assert_eq!(store.next_reminder_at().await.unwrap(), Some(soon));
        assert!(store.fire_due_reminders(now, 10).await.unwrap().is_empty(), "nothing due yet");
        let fired = store.fire_due_reminders(soon + Duration::days(2), 10).await.unwrap();
        let mut ids: Vec<Uuid> = fired.iter().map(|f| f.reminder.id).collect();
        ids.sort();
        let mut want = vec![t.reminders[0].id, t.reminders[3].id];
        want.sort();
        assert_eq!(ids, want, "the two reminders set in the past never fire");
        for f in &fired {
            assert_eq!((f.user_id.as_str(), f.task.id, f.scheduled_for), ("alice", t.id, soon));
        }
        assert!(store.fire_due_reminders(soon + Duration::days(3), 10).await.unwrap().is_empty(), "once");
        assert_eq!(store.next_reminder_at().await.unwrap(), None);
        // Writing the same reminders again does not re-arm them.
        let same = TaskPatch { title: Some("call back".into()), due_at: Patch::Set(soon + Duration::minutes(30)), ..TaskPatch::default() };
        u.patch(t.id, same, None).await.unwrap();
        assert_eq!(store.next_reminder_at().await.unwrap(), None);
    }

    async fn a_completed_tasks_reminders_do_not_fire(store: Store) {
        let u = store.for_user("alice").unwrap();
        let soon = todo_store::task::truncate_ms(Utc::now() + Duration::hours(1));
        let t = u
            .create(TaskInput { reminders: vec![ReminderInput::At(soon)], ..TaskInput::titled("t") })
            .await
            .unwrap();
        let gone = u
            .create(TaskInput { reminders: vec![ReminderInput::At(soon)], ..TaskInput::titled("deleted") })
            .await
            .unwrap();
        u.delete(gone.id, None).await.unwrap();
        u.set_completed(t.id, Some(true), None).await.unwrap();
        assert!(store.fire_due_reminders(soon, 10).await.unwrap().is_empty());
        // Reopened after its time: it was skipped, it stays so.
        u.set_completed(t.id, Some(false), None).await.unwrap();
        assert!(store.fire_due_reminders(soon, 10).await.unwrap().is_empty());
        assert_eq!(store.next_reminder_at().await.unwrap(), None);
    }

    async fn before_due_reminders_rearm_when_a_recurring_task_advances(store: Store) {
        let u = store.for_user("alice").unwrap();
        let due = todo_store::task::truncate_ms(Utc::now() + Duration::days(2));
        let due = DateTime::from_timestamp(due.timestamp(), 0).unwrap();
        let t = u
            .create(TaskInput {
                due_at: Some(due),
                recurrence: Some(Recurrence::new("FREQ=DAILY")),
                reminders: vec![ReminderInput::BeforeDue("PT1H".into()), ReminderInput::At(due - Duration::hours(2))],
                ..TaskInput::titled("water the plants")
            })
            .await
            .unwrap();
        let first = store.fire_due_reminders(due, 10).await.unwrap();
        assert_eq!(first.len(), 2);
        let t1 = done(&u, t.id).await;
        assert_eq!(t1.due_at, Some(due + Duration::days(1)));
        assert_eq!(t1.reminders, t.reminders, "same reminders, same ids");
        assert_eq!(store.next_reminder_at().await.unwrap(), Some(due + Duration::hours(23)));
        let again = store.fire_due_reminders(due + Duration::days(1), 10).await.unwrap();
        assert_eq!(again.len(), 1, "only the before_due one re-arms");
        assert_eq!((again[0].reminder.id, again[0].scheduled_for), (t.reminders[0].id, due + Duration::hours(23)));
        assert_eq!(again[0].task.due_at, t1.due_at);
    }
}
