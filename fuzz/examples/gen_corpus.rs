//! Writes the seed corpus: `cargo run --example gen_corpus` (from `fuzz/`).
//!
//! The `http_request` inputs are `arbitrary`-encoded [`HttpInput`]s. This file encodes them
//! by hand (the inverse of `arbitrary` 1.x decoding for exactly the shapes used here) and checks
//! each one decodes back to the intended value, so a change of the input types or of
//! `arbitrary`'s format shows up here rather than as a silently useless corpus.

use std::fs;
use std::path::Path;

use todo_fuzz::{
    BodySel, Bytes, ContentTypeSel, CursorFilter, HttpInput, IdSel, IfMatchSel, MethodSel, PathSel,
    QueryKey, QuerySel,
};

/// Encoder: the front bytes in read order, and the lengths that `arbitrary` reads from the end
/// of the input (so they are appended reversed). Every input that carries a length must stay
/// at most 256 bytes long, so each length is one byte.
#[derive(Default)]
struct Enc {
    front: Vec<u8>,
    back: Vec<u8>,
}

impl Enc {
    fn tag(&mut self, index: u64, count: u64) {
        // `(u32 * count) >> 32 == index`
        let v = ((index << 32) / count + 1) as u32;
        self.front.extend(v.to_le_bytes());
    }
    fn u8(&mut self, b: u8) {
        self.front.push(b);
    }
    fn bool(&mut self, b: bool) {
        self.front.push(u8::from(b));
    }
    fn i64(&mut self, n: i64) {
        self.front.extend(n.to_le_bytes());
    }
    fn u128(&mut self, n: u128) {
        self.front.extend(n.to_le_bytes());
    }
    fn sized(&mut self, b: &[u8]) {
        self.back.push(u8::try_from(b.len()).expect("short field"));
        self.front.extend(b);
    }
    fn rest(&mut self, b: &[u8]) {
        self.front.extend(b);
    }
    fn finish(mut self) -> Vec<u8> {
        let has_lengths = !self.back.is_empty();
        self.back.reverse();
        self.front.extend(self.back);
        assert!(
            !has_lengths || self.front.len() <= 256,
            "an input with length fields must stay within 256 bytes"
        );
        self.front
    }

    fn id(&mut self, id: &IdSel) {
        match id {
            IdSel::Known => self.tag(0, 3),
            IdSel::Uuid(n) => {
                self.tag(1, 3);
                self.u128(*n);
            }
            IdSel::Fuzzed(s) => {
                self.tag(2, 3);
                self.sized(s.as_bytes());
            }
        }
    }

    fn http(mut self, i: &HttpInput) -> Vec<u8> {
        self.tag(i.method as u64, 7);
        match &i.path {
            PathSel::Tasks => self.tag(0, 6),
            PathSel::Task(id) => {
                self.tag(1, 6);
                self.id(id);
            }
            PathSel::Complete(id) => {
                self.tag(2, 6);
                self.id(id);
            }
            PathSel::Tags => self.tag(3, 6),
            PathSel::OtherUser(s) => {
                self.tag(4, 6);
                self.sized(s.as_bytes());
            }
            PathSel::Raw(s) => {
                self.tag(5, 6);
                self.sized(s.as_bytes());
            }
        }
        match &i.query {
            QuerySel::None => self.tag(0, 3),
            QuerySel::Pairs(pairs) => {
                self.tag(1, 3);
                for (k, v) in pairs {
                    self.bool(true);
                    let idx = match k {
                        QueryKey::Status => 0,
                        QueryKey::Priority => 1,
                        QueryKey::Tag => 2,
                        QueryKey::Q => 3,
                        QueryKey::DueAfter => 4,
                        QueryKey::DueBefore => 5,
                        QueryKey::Sort => 6,
                        QueryKey::Order => 7,
                        QueryKey::Limit => 8,
                        QueryKey::Cursor => 9,
                        QueryKey::Other(_) => 10,
                    };
                    self.tag(idx, 11);
                    if let QueryKey::Other(s) = k {
                        self.sized(s.as_bytes());
                    }
                    self.sized(&v.0);
                }
                self.bool(false);
            }
            QuerySel::Raw(s) => {
                self.tag(2, 3);
                self.sized(s.as_bytes());
            }
        }
        match &i.content_type {
            ContentTypeSel::None => self.tag(0, 7),
            ContentTypeSel::Json => self.tag(1, 7),
            ContentTypeSel::JsonCharset => self.tag(2, 7),
            ContentTypeSel::MergePatch => self.tag(3, 7),
            ContentTypeSel::TextPlain => self.tag(4, 7),
            ContentTypeSel::FormUrlencoded => self.tag(5, 7),
            ContentTypeSel::Fuzzed(s) => {
                self.tag(6, 7);
                self.sized(s.as_bytes());
            }
        }
        match &i.if_match {
            None => self.bool(false),
            Some(im) => {
                self.bool(true);
                match im {
                    IfMatchSel::Star => self.tag(0, 5),
                    IfMatchSel::Version(n) => {
                        self.tag(1, 5);
                        self.i64(*n);
                    }
                    IfMatchSel::Weak(n) => {
                        self.tag(2, 5);
                        self.i64(*n);
                    }
                    IfMatchSel::List(a, b) => {
                        self.tag(3, 5);
                        self.i64(*a);
                        self.i64(*b);
                    }
                    IfMatchSel::Fuzzed(s) => {
                        self.tag(4, 5);
                        self.sized(s.as_bytes());
                    }
                }
            }
        }
        match &i.body {
            BodySel::Empty => self.tag(0, 3),
            BodySel::Raw(b) => {
                self.tag(1, 3);
                self.rest(&b.0);
            }
            BodySel::Padded { delta, inner } => {
                self.tag(2, 3);
                self.u8(*delta);
                self.rest(&inner.0);
            }
        }
        self.finish()
    }
}

fn cursor_json(sort: &str, order: &str, key: &str) -> String {
    format!(
        r#"{{"s":"{sort}","o":"{order}","k":{key},"i":"0190c3a8-7d4e-7b3a-9f21-5c6d7e8f9a0b"}}"#
    )
}

fn cursor(sort: &str, order: &str, key: &str) -> String {
    todo_fuzz::base64url(cursor_json(sort, order, key).as_bytes())
}

fn write(dir: &Path, name: &str, data: &[u8]) {
    fs::create_dir_all(dir).expect("mkdir");
    fs::write(dir.join(name), data).expect("write seed");
}

fn req(
    method: MethodSel,
    path: PathSel,
    query: QuerySel,
    content_type: ContentTypeSel,
    if_match: Option<IfMatchSel>,
    body: BodySel,
) -> HttpInput {
    HttpInput {
        method,
        path,
        query,
        content_type,
        if_match,
        body,
    }
}

fn raw(s: &str) -> BodySel {
    BodySel::Raw(Bytes(s.as_bytes().to_vec()))
}

fn pairs(p: &[(QueryKey, &str)]) -> QuerySel {
    QuerySel::Pairs(
        p.iter()
            .map(|(k, v)| (k.clone(), Bytes(v.as_bytes().to_vec())))
            .collect(),
    )
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");

    // cursor: [sort u8][asc u8][filter: u32 tag of 6][limit u8][encode u8][cursor bytes…]
    let filter_tag = |f: CursorFilter| ((((f as u64) << 32) / 6 + 1) as u32).to_le_bytes();
    let cursors: [(&str, u8, bool, CursorFilter, bool, String); 8] = [
        (
            "created_desc",
            0,
            false,
            CursorFilter::None,
            false,
            cursor("created_at", "desc", "1767225600000"),
        ),
        (
            "updated_asc_pending",
            1,
            true,
            CursorFilter::Pending,
            false,
            cursor("updated_at", "asc", "1767225600000"),
        ),
        (
            "due_null_tag",
            2,
            false,
            CursorFilter::Tag,
            false,
            cursor("due_at", "desc", "null"),
        ),
        (
            "priority_high",
            3,
            true,
            CursorFilter::High,
            false,
            cursor("priority", "asc", "1"),
        ),
        (
            "title_search",
            4,
            false,
            CursorFilter::Search,
            false,
            cursor("title", "desc", r#""buy milk""#),
        ),
        (
            "not_base64",
            0,
            false,
            CursorFilter::None,
            false,
            "%%not a cursor%%".to_owned(),
        ),
        // Encoded by the harness: the fuzzer edits the JSON itself.
        (
            "json_due_asc",
            2,
            true,
            CursorFilter::None,
            true,
            cursor_json("due_at", "asc", "-9007199254740993"),
        ),
        (
            "json_title_asc",
            4,
            true,
            CursorFilter::Completed,
            true,
            cursor_json("title", "asc", r#""zebra 100%_""#),
        ),
    ];
    for (name, sort, asc, filter, encode, c) in cursors {
        let mut data = vec![sort, u8::from(asc)];
        data.extend(filter_tag(filter));
        data.push(9); // limit 10
        data.push(u8::from(encode));
        data.extend(c.as_bytes());
        let back = todo_fuzz::CursorInput::from_bytes(&data);
        let want = if encode {
            todo_fuzz::base64url(c.as_bytes())
        } else {
            c.clone()
        };
        assert_eq!(
            back.query().cursor.as_deref(),
            Some(want.as_str()),
            "{name}"
        );
        write(&root.join("cursor"), name, &data);
    }

    // http_request
    use ContentTypeSel as Ct;
    use MethodSel as M;
    let task = r#"{"title":"Buy milk","description":"2 litres","priority":"high","tags":["Home","errands"],"due_at":"2026-01-02T03:04:05Z","completed":false}"#;
    let seeds: Vec<(&str, HttpInput)> = vec![
        (
            "post_task",
            req(
                M::Post,
                PathSel::Tasks,
                QuerySel::None,
                Ct::Json,
                None,
                raw(task),
            ),
        ),
        (
            "post_task_at_limit",
            req(
                M::Post,
                PathSel::Tasks,
                QuerySel::None,
                Ct::JsonCharset,
                None,
                BodySel::Padded {
                    delta: 8, // exactly 65,536 bytes
                    inner: Bytes(br#"{"title":"padded"}"#.to_vec()),
                },
            ),
        ),
        (
            "list_filtered",
            req(
                M::Get,
                PathSel::Tasks,
                pairs(&[
                    (QueryKey::Status, "pending"),
                    (QueryKey::Priority, "high"),
                    (QueryKey::Tag, "Home"),
                    (QueryKey::Q, "50%_off"),
                    (QueryKey::DueAfter, "2026-01-01T00:00:00Z"),
                    (QueryKey::DueBefore, "2026-02-01T00:00:00+01:00"),
                    (QueryKey::Sort, "due_at"),
                    (QueryKey::Order, "asc"),
                    (QueryKey::Limit, "2"),
                ]),
                Ct::None,
                None,
                BodySel::Empty,
            ),
        ),
        (
            "list_cursor",
            req(
                M::Get,
                PathSel::Tasks,
                pairs(&[
                    (QueryKey::Sort, "title"),
                    (
                        QueryKey::Cursor,
                        &cursor("title", "desc", r#""known task""#),
                    ),
                ]),
                Ct::None,
                None,
                BodySel::Empty,
            ),
        ),
        (
            "get_known",
            req(
                M::Get,
                PathSel::Task(IdSel::Known),
                QuerySel::None,
                Ct::None,
                None,
                BodySel::Empty,
            ),
        ),
        (
            "put_known_if_match",
            req(
                M::Put,
                PathSel::Task(IdSel::Known),
                QuerySel::None,
                Ct::Json,
                Some(IfMatchSel::Version(1)),
                raw(r#"{"title":"Replaced","tags":[]}"#),
            ),
        ),
        (
            "patch_merge",
            req(
                M::Patch,
                PathSel::Task(IdSel::Known),
                QuerySel::None,
                Ct::MergePatch,
                Some(IfMatchSel::Star),
                raw(r#"{"description":null,"due_at":null,"tags":null,"priority":"low"}"#),
            ),
        ),
        (
            "complete_no_body",
            req(
                M::Patch,
                PathSel::Complete(IdSel::Known),
                QuerySel::None,
                Ct::None,
                None,
                BodySel::Empty,
            ),
        ),
        (
            "complete_set",
            req(
                M::Patch,
                PathSel::Complete(IdSel::Uuid(0x0190c3a8_7d4e_7b3a_9f21_5c6d7e8f9a0b)),
                QuerySel::None,
                Ct::Json,
                Some(IfMatchSel::Weak(3)),
                raw(r#"{"completed":true}"#),
            ),
        ),
        (
            "delete_bad_id",
            req(
                M::Delete,
                PathSel::Task(IdSel::Fuzzed("not-a-uuid".into())),
                QuerySel::None,
                Ct::None,
                Some(IfMatchSel::Fuzzed("\"x\"".into())),
                BodySel::Empty,
            ),
        ),
        (
            "tags",
            req(
                M::Get,
                PathSel::Tags,
                QuerySel::Raw("x=%ZZ&&=".into()),
                Ct::None,
                None,
                BodySel::Empty,
            ),
        ),
        (
            "post_wrong_type",
            req(
                M::Post,
                PathSel::Tasks,
                QuerySel::None,
                Ct::Fuzzed("application/JSON ; charset=latin1".into()),
                None,
                raw(r#"{"title":["x"],"priority":"urgent","tags":"a"}"#),
            ),
        ),
    ];
    for (name, input) in seeds {
        let data = Enc::default().http(&input);
        let back = HttpInput::from_bytes(&data).expect("decodes");
        assert_eq!(
            format!("{back:?}"),
            format!("{input:?}"),
            "{name} does not round-trip"
        );
        write(&root.join("http_request"), name, &data);
    }
    println!("seed corpus written under {}", root.display());

    // Hand-written reproductions of findings (see README.md, "Findings"), replayed by
    // tests/regressions.rs and run.sh. They fail only on PostgreSQL (TODO_FUZZ_DATABASE_URL).
    let regressions = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    // A forged cursor whose timestamp key is before PostgreSQL's earliest timestamptz
    // (4714-11-24 BC = -210866803200000 ms): 500 instead of 400.
    let input = req(
        M::Get,
        PathSel::Tasks,
        pairs(&[(
            QueryKey::Cursor,
            &cursor("created_at", "desc", "-210866803200001"),
        )]),
        Ct::None,
        None,
        BodySel::Empty,
    );
    let data = Enc::default().http(&input);
    assert_eq!(
        format!("{:?}", HttpInput::from_bytes(&data).expect("decodes")),
        format!("{input:?}")
    );
    write(
        &regressions.join("http_request"),
        "pg-cursor-timestamp-out-of-range",
        &data,
    );
    println!("regression inputs written under {}", regressions.display());
}
