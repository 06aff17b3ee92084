//! `JsonOut<T>`: a JSON response body serialised straight from `T`'s serde derive, documented
//! with `T`'s poem-openapi schema.
//!
//! poem-openapi's `Json<T>` first builds a `serde_json::Value` tree through `ToJSON` (a map
//! and a string copy per field of every task) and then serialises that tree; for a page of 50
//! tasks that doubled the allocations of a request. The spec still comes from `T`'s
//! poem-openapi `Type`, and a test checks both paths give the same JSON.

use std::cell::RefCell;

use poem::http::{HeaderValue, header};
use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::Type;

/// A `200`/`201` JSON body serialised with serde.
#[derive(Debug, Clone)]
pub struct JsonOut<T>(pub T);

impl<T: Type> Payload for JsonOut<T> {
    const CONTENT_TYPE: &'static str = "application/json";

    fn check_content_type(content_type: &str) -> bool {
        content_type.starts_with("application/json")
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

thread_local! {
    /// This thread's serialisation buffer: a body is written here, into capacity that has
    /// grown to the largest recent body, and copied out once at its exact size. Serialising
    /// into a fresh `Vec` instead grows it by doubling: for a page of 50 tasks (about 30 KB)
    /// a dozen reallocations that copy twice the page between them.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A thread's buffer keeps at most this much capacity between bodies.
const SCRATCH_KEEP: usize = 1 << 20;

impl<T: serde::Serialize> JsonOut<T> {
    /// The body bytes this payload is sent as (and stored as, under an idempotency key).
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                let body = serde_json::to_writer(&mut *buf, &self.0).map(|()| buf.to_vec());
                if buf.capacity() > SCRATCH_KEEP {
                    *buf = Vec::new();
                }
                body
            }
            // Only if a `Serialize` impl serialised another `JsonOut` inside this one.
            Err(_) => serde_json::to_vec(&self.0),
        })
    }
}

impl<T: serde::Serialize + Send> IntoResponse for JsonOut<T> {
    fn into_response(self) -> Response {
        match self.to_bytes() {
            Ok(body) => Response::builder()
                .header(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )
                .body(body),
            // Only a failing `Serialize` impl gets here; ours (derived, strings and numbers)
            // cannot fail.
            Err(e) => {
                tracing::error!(error = %e, "response serialisation failed");
                crate::Problem::new(
                    poem::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error",
                )
                .into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use poem_openapi::types::ToJSON;
    use uuid::Uuid;

    use crate::types::{
        ListDto, ListEnvelope, ListMeta, ListsEnvelope, Priority, RecurrenceDto, ReminderAtDto,
        ReminderBeforeDueDto, ReminderDto, TagCountDto, TagListEnvelope, TaskDto, TaskEnvelope,
        TaskListEnvelope, Timestamp,
    };

    fn same<T: ToJSON + serde::Serialize>(v: &T) {
        let spec_path = v.to_json().expect("ToJSON gives a value");
        let serde_path = serde_json::to_value(v).expect("serialises");
        assert_eq!(serde_path, spec_path, "serde and ToJSON disagree");
    }

    /// Bodies written through the thread's buffer, one after another and of different sizes,
    /// are each exactly serde_json's bytes: nothing of a longer earlier body is left over.
    #[test]
    fn bodies_from_the_shared_buffer_are_exact() {
        let page = |n: u128| TaskListEnvelope {
            data: (0..n).map(|i| task(i, i % 2 == 0)).collect(),
            meta: ListMeta {
                limit: 100,
                next_cursor: None,
                total: n as i64,
            },
        };
        for n in [40, 1, 0, 7, 100, 2] {
            let body = super::JsonOut(page(n)).to_bytes().expect("serialises");
            assert_eq!(
                body,
                serde_json::to_vec(&page(n)).expect("serialises"),
                "{n} tasks"
            );
        }
        let one = super::JsonOut(TaskEnvelope {
            data: task(3, true),
        });
        assert_eq!(
            one.to_bytes().expect("serialises"),
            serde_json::to_vec(&one.0).expect("serialises")
        );
    }

    fn t(s: i64, ms: u32) -> Timestamp {
        Timestamp(
            Utc.timestamp_opt(s, ms * 1_000_000)
                .single()
                .expect("valid time"),
        )
    }

    fn task(n: u128, full: bool) -> TaskDto {
        TaskDto {
            id: Uuid::from_u128(n),
            user_id: "user_2fG8aB".into(),
            title: if full {
                "Quote \" backslash \\ tab \t é 🦀 \u{1} end".into()
            } else {
                "a".into()
            },
            description: full.then(|| "line\nbreak, </script>".into()),
            completed: full,
            completed_at: full.then(|| t(1_767_225_600, 7)),
            priority: if full { Priority::High } else { Priority::Low },
            tags: if full {
                vec!["home".into(), "ünï".into()]
            } else {
                vec![]
            },
            due_at: full.then(|| t(-62_167_219_200, 0)),
            created_at: t(0, 0),
            updated_at: t(253_402_300_799, 999),
            version: if full { i64::MAX } else { 1 },
            list_id: Uuid::from_u128(n + 100),
            parent_id: full.then(|| Uuid::from_u128(n + 200)),
            position: if full { "a0V~\"\\".into() } else { "a0".into() },
            recurrence: full.then(|| RecurrenceDto {
                rule: "FREQ=WEEKLY;BYDAY=MO,WE".into(),
                timezone: "America/Argentina/Buenos_Aires".into(),
            }),
            last_completed_at: full.then(|| t(1_767_225_601, 250)),
            reminders: if full {
                vec![
                    ReminderDto::At(ReminderAtDto {
                        id: Uuid::from_u128(n + 300),
                        at: t(1_767_225_600, 0),
                    }),
                    ReminderDto::BeforeDue(ReminderBeforeDueDto {
                        id: Uuid::from_u128(n + 301),
                        before_due: "P1DT2H".into(),
                    }),
                ]
            } else {
                vec![]
            },
        }
    }

    fn list(n: u128, full: bool) -> ListDto {
        ListDto {
            id: Uuid::from_u128(n),
            user_id: "user_2fG8aB".into(),
            name: if full {
                "Ünï \"q\" 🦀".into()
            } else {
                "Inbox".into()
            },
            color: full.then(|| "#ff8800".into()),
            is_inbox: !full,
            position: "a1".into(),
            open_count: if full { 3 } else { 0 },
            created_at: t(0, 0),
            updated_at: t(1_767_225_600, 7),
            version: if full { 2 } else { 1 },
        }
    }

    #[test]
    fn serde_output_equals_the_documented_json() {
        for full in [false, true] {
            same(&task(7, full));
            same(&TaskEnvelope {
                data: task(8, full),
            });
        }
        same(&Priority::Medium);
        // The v2 scheduling fields: present even when empty, with their documented shapes.
        let bare = serde_json::to_value(task(9, false)).expect("serialises");
        assert_eq!(bare["recurrence"], serde_json::Value::Null);
        assert_eq!(bare["last_completed_at"], serde_json::Value::Null);
        assert_eq!(bare["reminders"], serde_json::json!([]));
        let full = serde_json::to_value(task(9, true)).expect("serialises");
        assert_eq!(
            full["reminders"],
            serde_json::json!([
                {"id": Uuid::from_u128(309), "at": "2026-01-01T00:00:00.000Z"},
                {"id": Uuid::from_u128(310), "before_due": "P1DT2H"},
            ])
        );
        assert_eq!(
            full["recurrence"],
            serde_json::json!({"rule": "FREQ=WEEKLY;BYDAY=MO,WE", "timezone": "America/Argentina/Buenos_Aires"})
        );
        for next_cursor in [None, Some("eyJzIjoiY3JlYXRlZF9hdCJ9".to_owned())] {
            same(&TaskListEnvelope {
                data: vec![task(1, true), task(2, false)],
                meta: ListMeta {
                    limit: 50,
                    next_cursor,
                    total: 2,
                },
            });
        }
        same(&TaskListEnvelope {
            data: vec![],
            meta: ListMeta {
                limit: 1,
                next_cursor: None,
                total: 0,
            },
        });
        for full in [false, true] {
            same(&list(3, full));
            same(&ListEnvelope {
                data: list(4, full),
            });
        }
        same(&ListsEnvelope {
            data: vec![list(5, false), list(6, true)],
        });
        same(&ListsEnvelope { data: vec![] });
        same(&TagListEnvelope {
            data: vec![TagCountDto {
                tag: "home".into(),
                count: 3,
            }],
        });
    }
}
