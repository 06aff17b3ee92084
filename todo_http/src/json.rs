//! Task bodies written as JSON by hand, byte for byte what serde_json writes for the same DTOs.
//!
//! A page of 50 tasks is about 600 strings. Under `cargo xtask bench` (list, 64 connections)
//! serialising them through serde took 15 % of the server's CPU time, half of it in
//! serde_json's escaping loop, which looks at one byte at a time; timestamps went through
//! chrono's calendar arithmetic and then through that loop too. Here strings are scanned eight
//! bytes at a time, timestamps and UUIDs are written without escaping (they never need it), and
//! the buffer is sized from the page before writing. The tests compare the output with
//! serde_json's for arbitrary tasks.

use chrono::{DateTime, Utc};
use todo_store::{Tags, TaskView};

use crate::payload::JsonBytes;
use crate::types::{ListMeta, TaskDto, TaskEnvelope, TaskListEnvelope, Timestamp};

/// Bytes with every byte set to `b`.
const fn splat(b: u8) -> u64 {
    u64::from_ne_bytes([b; 8])
}

/// Whether any of the eight bytes in `w` needs escaping in a JSON string: a control character
/// (below 0x20), `"` or `\`. Exact as a yes/no answer (the classic "has a byte less than" and
/// "has a zero byte" word tricks).
fn needs_escape(w: u64) -> bool {
    let lows = splat(0x01);
    let highs = splat(0x80);
    let below_space = w.wrapping_sub(splat(0x20)) & !w & highs;
    let zero_in = |x: u64| x.wrapping_sub(lows) & !x & highs;
    below_space | zero_in(w ^ splat(b'"')) | zero_in(w ^ splat(b'\\')) != 0
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it: `\"`, `\\`, `\b`, `\t`,
/// `\n`, `\f`, `\r`, other control characters as `\u00xx`; everything else (DEL, non-ASCII)
/// as is.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            if !needs_escape(u64::from_ne_bytes(word)) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            b'\t' => b't',
            b'\n' => b'n',
            0x0c => b'f',
            b'\r' => b'r',
            0x00..=0x1f => b'u',
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(&[b'\\', short]);
        if short == b'u' {
            out.extend_from_slice(&[
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn write_timestamp(out: &mut Vec<u8>, t: DateTime<Utc>) {
    Timestamp(t).with_text(|text| {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    });
}

fn write_opt_timestamp(out: &mut Vec<u8>, t: Option<DateTime<Utc>>) {
    match t {
        Some(t) => write_timestamp(out, t),
        None => out.extend_from_slice(b"null"),
    }
}

fn write_int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A rough size of a task's JSON, to size the buffer once.
fn estimate(t: &TaskView<'_>) -> usize {
    // Keys, punctuation, the id, four timestamps, numbers: about 280 bytes.
    280 + t.user_id.len()
        + t.title.len()
        + t.description.map_or(0, str::len)
        + t.tags.compact_json().map_or_else(
            || t.tags.iter().map(|tag| tag.len() + 3).sum::<usize>(),
            str::len,
        )
}

/// A [`TaskDto`] as the store's borrowed view, for the one writer below.
fn view_of(t: &TaskDto) -> TaskView<'_> {
    TaskView {
        id: t.id,
        user_id: &t.user_id,
        title: &t.title,
        description: t.description.as_deref(),
        completed: t.completed,
        completed_at: t.completed_at.map(|t| t.0),
        priority: t.priority.into(),
        tags: Tags::from(t.tags.as_slice()),
        due_at: t.due_at.map(|t| t.0),
        created_at: t.created_at.0,
        updated_at: t.updated_at.0,
        version: t.version,
        // Not part of the v1 task JSON that `write_task` writes (the DTO has no such fields
        // yet), so these placeholders are never read.
        list_id: uuid::Uuid::nil(),
        parent_id: None,
        position: "",
    }
}

/// Writes a task as [`TaskDto`] serialises.
fn write_task(out: &mut Vec<u8>, t: &TaskView<'_>) {
    out.extend_from_slice(b"{\"id\":\"");
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    out.extend_from_slice(t.id.hyphenated().encode_lower(&mut id).as_bytes());
    out.extend_from_slice(b"\",\"user_id\":");
    write_str(out, t.user_id);
    out.extend_from_slice(b",\"title\":");
    write_str(out, t.title);
    out.extend_from_slice(b",\"description\":");
    match t.description {
        Some(d) => write_str(out, d),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(if t.completed {
        b",\"completed\":true,\"completed_at\":"
    } else {
        b",\"completed\":false,\"completed_at\":"
    });
    write_opt_timestamp(out, t.completed_at);
    out.extend_from_slice(match t.priority {
        todo_store::Priority::Low => b",\"priority\":\"low\",\"tags\":",
        todo_store::Priority::Medium => b",\"priority\":\"medium\",\"tags\":",
        todo_store::Priority::High => b",\"priority\":\"high\",\"tags\":",
    });
    match t.tags.compact_json() {
        // The stored text is already serde_json's array for these tags.
        Some(json) => out.extend_from_slice(json.as_bytes()),
        None => {
            out.push(b'[');
            for (i, tag) in t.tags.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, tag);
            }
            out.push(b']');
        }
    }
    out.extend_from_slice(b",\"due_at\":");
    write_opt_timestamp(out, t.due_at);
    out.extend_from_slice(b",\"created_at\":");
    write_timestamp(out, t.created_at);
    out.extend_from_slice(b",\"updated_at\":");
    write_timestamp(out, t.updated_at);
    out.extend_from_slice(b",\"version\":");
    write_int(out, t.version);
    out.push(b'}');
}

impl crate::payload::JsonBody for TaskEnvelope {
    fn to_json_bytes(&self) -> serde_json::Result<Vec<u8>> {
        let view = view_of(&self.data);
        let mut out = Vec::with_capacity(estimate(&view) + 16);
        out.extend_from_slice(b"{\"data\":");
        write_task(&mut out, &view);
        out.push(b'}');
        Ok(out)
    }
}

/// A [`TaskListEnvelope`] body written task by task, as the store hands the page out
/// ([`todo_store::UserTasks::list_each`]): no task is copied out of its row first.
pub(crate) struct ListWriter {
    out: Vec<u8>,
    limit: usize,
    tasks: usize,
}

impl ListWriter {
    /// A body for a page of at most `limit` tasks.
    pub(crate) fn new(limit: u32) -> Self {
        ListWriter {
            out: Vec::new(),
            limit: limit as usize,
            tasks: 0,
        }
    }

    /// Appends the page's next task.
    pub(crate) fn push(&mut self, t: &TaskView<'_>) {
        if self.tasks == 0 {
            // Sized once from the first task, for a full page (most are: a short one is the
            // last of a listing).
            self.out
                .reserve(128 + estimate(t) * self.limit.clamp(1, 100));
            self.out.extend_from_slice(b"{\"data\":[");
        } else {
            self.out.push(b',');
        }
        write_task(&mut self.out, t);
        self.tasks += 1;
    }

    /// The finished body.
    pub(crate) fn finish(mut self, meta: &ListMeta) -> JsonBytes<TaskListEnvelope> {
        if self.tasks == 0 {
            self.out.extend_from_slice(b"{\"data\":[");
        }
        let out = &mut self.out;
        out.extend_from_slice(b"],\"meta\":{\"limit\":");
        write_int(out, meta.limit);
        out.extend_from_slice(b",\"next_cursor\":");
        match &meta.next_cursor {
            Some(c) => write_str(out, c),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"total\":");
        write_int(out, meta.total);
        out.extend_from_slice(b"}}");
        JsonBytes::new(self.out)
    }
}

impl crate::payload::JsonBody for TaskListEnvelope {
    fn to_json_bytes(&self) -> serde_json::Result<Vec<u8>> {
        let mut w = ListWriter::new(self.data.len().max(1) as u32);
        for t in &self.data {
            w.push(&view_of(t));
        }
        Ok(w.finish(&self.meta).into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use proptest::prelude::*;
    use uuid::Uuid;

    use super::*;
    use crate::payload::JsonBody;
    use crate::types::Priority;

    fn serde_str(s: &str) -> Vec<u8> {
        serde_json::to_vec(s).expect("serialises")
    }

    #[test]
    fn strings_escape_like_serde_json() {
        let all_bytes: String = (0u8..=0x7f).map(char::from).collect();
        for s in [
            "",
            "plain ascii, longer than eight bytes",
            "\"",
            "\\",
            "ends with a quote\"",
            "\u{0}\u{1}\u{1f}\u{7f}",
            "tab\there\nnew line\r\u{8}\u{c}",
            "é 🦀 ünï — </script>",
            "12345678\"12345678\\",
            all_bytes.as_str(),
        ] {
            let mut out = Vec::new();
            write_str(&mut out, s);
            assert_eq!(out, serde_str(s), "{s:?}");
        }
    }

    #[test]
    fn the_escape_test_finds_each_special_byte_at_every_position() {
        for special in (0u8..0x20).chain([b'"', b'\\']) {
            for at in 0..8 {
                let mut w = [b'a'; 8];
                w[at] = special;
                assert!(needs_escape(u64::from_ne_bytes(w)), "{special:#x} at {at}");
            }
        }
        for plain in (0x20u8..=0xff).filter(|b| *b != b'"' && *b != b'\\') {
            assert!(!needs_escape(u64::from_ne_bytes([plain; 8])), "{plain:#x}");
        }
    }

    proptest! {
        #[test]
        fn the_escape_test_agrees_with_a_byte_by_byte_one(w in any::<u64>()) {
            let naive = w.to_ne_bytes().iter().any(|b| *b < 0x20 || *b == b'"' || *b == b'\\');
            prop_assert_eq!(needs_escape(w), naive);
        }
    }

    fn timestamp() -> impl Strategy<Value = Timestamp> {
        // Years 0001 to 9999 (the formatted range) and a little beyond on both sides.
        (-62_200_000_000_000i64..253_500_000_000_000)
            .prop_map(|ms| Timestamp(DateTime::<Utc>::from_timestamp_millis(ms).expect("in range")))
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![any::<String>(), "[a-z \"\\\\\n\t\u{1}é🦀]{0,40}"]
    }

    prop_compose! {
        fn task()(
            id in any::<u128>(),
            user_id in text(),
            title in text(),
            description in proptest::option::of(text()),
            completed in any::<bool>(),
            completed_at in proptest::option::of(timestamp()),
            priority in prop_oneof![Just(Priority::Low), Just(Priority::Medium), Just(Priority::High)],
            tags in proptest::collection::vec(text(), 0..4),
            due_at in proptest::option::of(timestamp()),
            created_at in timestamp(),
            updated_at in timestamp(),
            version in any::<i64>(),
        ) -> TaskDto {
            TaskDto {
                id: Uuid::from_u128(id),
                user_id,
                title,
                description,
                completed,
                completed_at,
                priority,
                tags,
                due_at,
                created_at,
                updated_at,
                version,
            }
        }
    }

    proptest! {
        #[test]
        fn task_bodies_equal_serde_json_output(
            tasks in proptest::collection::vec(task(), 0..4),
            next_cursor in proptest::option::of(text()),
            limit in any::<u32>(),
            total in any::<i64>(),
        ) {
            for t in &tasks {
                let one = TaskEnvelope { data: t.clone() };
                prop_assert_eq!(
                    String::from_utf8(one.to_json_bytes().unwrap()).unwrap(),
                    serde_json::to_string(&one).unwrap()
                );
            }
            let page = TaskListEnvelope {
                data: tasks,
                meta: ListMeta { limit, next_cursor, total },
            };
            prop_assert_eq!(
                String::from_utf8(page.to_json_bytes().unwrap()).unwrap(),
                serde_json::to_string(&page).unwrap()
            );
            // The same page as the store hands it out: tags as the stored JSON text.
            let stored: Vec<String> = page
                .data
                .iter()
                .map(|t| serde_json::to_string(&t.tags).unwrap())
                .collect();
            let mut w = ListWriter::new(page.meta.limit);
            for (t, tags) in page.data.iter().zip(&stored) {
                let tags = Tags::from_json(tags).unwrap();
                w.push(&TaskView { tags, ..view_of(t) });
            }
            prop_assert_eq!(
                String::from_utf8(w.finish(&page.meta).into_bytes()).unwrap(),
                serde_json::to_string(&page).unwrap()
            );
        }
    }
}
