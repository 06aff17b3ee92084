//! Property test: the store's "next occurrence after `due_at`" is what the `rrule` crate's own
//! iterator gives, for random rules (FREQ, INTERVAL, BYDAY, BYMONTHDAY, COUNT) in random zones,
//! both through [`todo_store::recurrence::next_occurrence`] and through completing a task twice
//! (the second completion counts from the first `DTSTART`, as COUNT requires).

use std::str::FromStr;
use std::sync::LazyLock;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use todo_store::recurrence::next_occurrence;
use todo_store::{Recurrence, Store, TaskInput};

const ZONES: [&str; 8] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Europe/London",
];

/// The `rrule` crate's answer: the first occurrence after `after` of `rule` starting at
/// `start` (whole seconds) in `zone`, straight from its iterator; `Err` when the crate refuses
/// the rule (BYMONTHDAY with FREQ=WEEKLY).
fn reference(
    rule: &str,
    zone: &str,
    start: DateTime<Utc>,
    after: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, rrule::RRuleError> {
    let tz = rrule::Tz::Tz(chrono_tz::Tz::from_str(zone).unwrap());
    let start = Utc
        .timestamp_opt(start.timestamp(), 0)
        .unwrap()
        .with_timezone(&tz);
    let set = rrule::RRule::<rrule::Unvalidated>::from_str(rule)?
        .build(start)?
        .limit();
    Ok(set
        .into_iter()
        .map(|d| d.with_timezone(&Utc))
        .find(|d| *d > after))
}

fn rules() -> impl Strategy<Value = String> {
    let freq = prop::sample::select(vec!["DAILY", "WEEKLY", "MONTHLY", "YEARLY"]);
    let interval = prop::option::of(1u32..4);
    let days = prop::sample::subsequence(vec!["MO", "TU", "WE", "TH", "FR", "SA", "SU"], 0..4);
    let month_day = prop::option::of(prop::sample::select(vec![-1i32, 1, 15, 28, 29, 30, 31]));
    let count = prop::option::of(1u32..6);
    (freq, interval, days, month_day, count).prop_map(|(f, i, days, md, c)| {
        let mut r = format!("FREQ={f}");
        if let Some(i) = i {
            r += &format!(";INTERVAL={i}");
        }
        // BYDAY or BYMONTHDAY, not both: some pairs never meet, and the crate then searches
        // until its loop limit (correct, but slow for a property test).
        match (days.is_empty(), md) {
            (false, _) => r += &format!(";BYDAY={}", days.join(",")),
            (true, Some(d)) => r += &format!(";BYMONTHDAY={d}"),
            (true, None) => {}
        }
        if let Some(c) = c {
            r += &format!(";COUNT={c}");
        }
        r
    })
}

/// Due dates from 2000 to 2040, at millisecond precision.
fn due_dates() -> impl Strategy<Value = DateTime<Utc>> {
    (946_684_800_000i64..2_208_988_800_000).prop_map(|ms| Utc.timestamp_millis_opt(ms).unwrap())
}

static RT: LazyLock<(tokio::runtime::Runtime, Store)> = LazyLock::new(|| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(async {
        let s = Store::connect("sqlite::memory:").await.unwrap();
        s.migrate().await.unwrap();
        s
    });
    (rt, store)
});

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn next_occurrence_matches_the_rrule_iterator(
        rule in rules(),
        zone in prop::sample::select(ZONES.to_vec()),
        due in due_dates(),
    ) {
        let rec = Recurrence::in_zone(rule.clone(), zone);
        let Ok(first) = reference(&rule, zone, due, due) else {
            let e = next_occurrence(&rec, due, due).unwrap_err();
            prop_assert_eq!(&e.field_errors()[0].field, "recurrence.rule");
            return Ok(());
        };
        prop_assert_eq!(next_occurrence(&rec, due, due).unwrap(), first);
        if let Some(first) = first {
            prop_assert_eq!(
                next_occurrence(&rec, due, first).unwrap(),
                reference(&rule, zone, due, first).unwrap()
            );
        }
    }

    #[test]
    fn completing_advances_as_the_rrule_iterator_says(
        rule in rules(),
        zone in prop::sample::select(ZONES.to_vec()),
        due in due_dates(),
    ) {
        let (rt, store) = &*RT;
        let input = TaskInput {
            due_at: Some(due),
            recurrence: Some(Recurrence::in_zone(rule.clone(), zone)),
            ..TaskInput::titled("p")
        };
        let u = store.for_user("prop").unwrap();
        let Ok(first) = reference(&rule, zone, due, due) else {
            let e = rt.block_on(u.create(input)).unwrap_err();
            prop_assert_eq!(&e.field_errors()[0].field, "recurrence.rule");
            return Ok(());
        };
        let second = first.and_then(|f| reference(&rule, zone, due, f).unwrap());
        let (t1, t2) = rt.block_on(async {
            let t = u.create(input).await.unwrap();
            let t1 = u.set_completed(t.id, Some(true), None).await.unwrap();
            let t2 = u.set_completed(t.id, Some(true), None).await.unwrap();
            (t1, t2)
        });
        match first {
            Some(f) => {
                prop_assert_eq!((t1.due_at, t1.completed), (Some(f), false));
                match second {
                    Some(s) => prop_assert_eq!((t2.due_at, t2.completed), (Some(s), false)),
                    None => prop_assert_eq!((t2.due_at, t2.completed), (Some(f), true)),
                }
            }
            None => {
                prop_assert_eq!((t1.due_at, t1.completed), (Some(due), true));
                prop_assert_eq!(t2.version, t1.version + 1, "completing a completed task is a write");
            }
        }
    }
}
