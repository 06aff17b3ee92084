//! The properties the fuzz targets check, shared by the libFuzzer binaries
//! (`fuzz_targets/*.rs`) and the plain-`cargo test` replay (`tests/regressions.rs`).
//!
//! Each `check_*` function takes the raw fuzzer input, and panics (with the input and what was
//! expected) when a property is broken; libFuzzer reports the panic as a crash.
//!
//! - [`check_cursor`]: a listing with any cursor string, on any sort/order, is `Ok` or
//!   `StoreError::Invalid` naming only `cursor`; never another error or a panic. An accepted
//!   page's `total` ignores the cursor, and its `next_cursor` is itself accepted.
//! - [`check_http`]: any request to the task API (method, path, query string, Content-Type,
//!   If-Match, body) never gets a 5xx, and every 4xx is `application/problem+json` whose JSON
//!   body has `status` equal to the response status.
//! - [`check_query`] and [`check_body`]: the same property with the fuzzer writing the raw
//!   query string of a listing, or the raw body of a write, byte for byte.

use std::sync::{Mutex, OnceLock};

use arbitrary::{Arbitrary, Unstructured};
use poem::endpoint::BoxEndpoint;
use poem::http::{Method, StatusCode, Uri, header};
use poem::{Endpoint, EndpointExt, Request};
use todo_http::{AuthError, Authenticator, Principal, TodoApi};
use todo_store::{
    Order, Priority, SortKey, Status, Store, StoreError, TaskInput, TaskQuery, UserTasks,
};
use uuid::Uuid;

/// The user every fuzzed request acts as.
pub const USER: &str = "fuzz";

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// The database the targets run on: `TODO_FUZZ_DATABASE_URL` when set (point it at a scratch
/// PostgreSQL database: rows are left behind), else a fresh in-memory SQLite database.
pub fn database_url() -> String {
    std::env::var("TODO_FUZZ_DATABASE_URL").unwrap_or_else(|_| "sqlite::memory:".to_owned())
}

async fn new_store() -> Store {
    let url = database_url();
    let store = Store::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connect {}: {e}", todo_store::redact_url(&url)));
    store.migrate().await.expect("migrate");
    store
}

/// The cursor target's user: [`USER`] on the private in-memory database, a user of its own
/// on a shared one (so concurrent runs do not change each other's totals).
fn cursor_user() -> String {
    if database_url().starts_with("sqlite::memory:") {
        USER.to_owned()
    } else {
        format!("fuzz-{}", Uuid::now_v7().simple())
    }
}

// ---------------------------------------------------------------------------------------------
// cursor
// ---------------------------------------------------------------------------------------------

struct CursorEnv {
    tasks: UserTasks,
}

fn cursor_env() -> &'static CursorEnv {
    static ENV: OnceLock<CursorEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        runtime().block_on(async {
            let store = new_store().await;
            let tasks = store.for_user(&cursor_user()).expect("user id");
            // A few rows with every sort key varied (and ties, and missing due dates), so that
            // accepted cursors land between real rows.
            let due = |h: i64| Some(chrono_utc(1_767_225_600 + h * 3600));
            let rows: [(&str, Priority, Option<_>, bool, &[&str]); 7] = [
                ("Buy milk", Priority::High, due(1), false, &["home"]),
                ("buy MILK", Priority::Low, None, true, &["home", "errands"]),
                ("Écrire", Priority::Medium, due(-5), false, &[]),
                ("zebra 100%_", Priority::High, due(1), true, &["x"]),
                ("a", Priority::Medium, None, false, &[]),
                ("🦀 crab", Priority::Low, due(48), false, &["errands"]),
                ("Mañana", Priority::High, due(2), false, &["home"]),
            ];
            for (title, priority, due_at, completed, tags) in rows {
                tasks
                    .create(TaskInput {
                        title: title.into(),
                        description: Some(format!("about {title}")),
                        completed: Some(completed),
                        priority: Some(priority),
                        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                        due_at,
                        ..TaskInput::default()
                    })
                    .await
                    .expect("seed task");
            }
            CursorEnv { tasks }
        })
    })
}

fn chrono_utc(secs: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(secs, 0).expect("timestamp")
}

/// The fuzzed listing: sort, order and filters from a small set, the cursor free-form.
#[derive(Debug, Arbitrary)]
pub struct CursorInput {
    /// Index into [`SortKey::ALL`] (mod 5).
    pub sort: u8,
    /// Ascending?
    pub asc: bool,
    /// Filters that pick the other page-query shapes (plain / ids first).
    pub filter: CursorFilter,
    /// Page size, mapped to 1..=100.
    pub limit: u8,
    /// Whether [`cursor`](Self::cursor) is the decoded content (JSON, most likely), which the
    /// harness base64url-encodes, so the fuzzer reaches the JSON and keyset code directly.
    pub encode: bool,
    /// The cursor: every remaining byte, as a (lossy) UTF-8 string, or base64url-encoded.
    pub cursor: Vec<u8>,
}

/// Valid filters, so that only the cursor can be invalid.
#[derive(Debug, Arbitrary, Clone, Copy)]
pub enum CursorFilter {
    /// No filter.
    None,
    /// Pending tasks.
    Pending,
    /// Completed tasks.
    Completed,
    /// A text search (ids-first shape).
    Search,
    /// A tag filter (ids-first shape).
    Tag,
    /// High priority only.
    High,
}

impl CursorInput {
    /// Decodes fuzzer bytes (never fails: missing bytes become defaults).
    pub fn from_bytes(data: &[u8]) -> Self {
        let mut u = Unstructured::new(data);
        CursorInput {
            sort: u.arbitrary().unwrap_or_default(),
            asc: u.arbitrary().unwrap_or_default(),
            filter: u.arbitrary().unwrap_or(CursorFilter::None),
            limit: u.arbitrary().unwrap_or_default(),
            encode: u.arbitrary().unwrap_or_default(),
            cursor: u.take_rest().to_vec(),
        }
    }

    /// The listing request it stands for.
    pub fn query(&self) -> TaskQuery {
        let mut q = TaskQuery {
            sort: SortKey::ALL[usize::from(self.sort) % SortKey::ALL.len()],
            order: if self.asc { Order::Asc } else { Order::Desc },
            limit: u32::from(self.limit % 100) + 1,
            cursor: Some(if self.encode {
                base64url(&self.cursor)
            } else {
                String::from_utf8_lossy(&self.cursor).into_owned()
            }),
            ..TaskQuery::default()
        };
        match self.filter {
            CursorFilter::None => {}
            CursorFilter::Pending => q.status = Status::Pending,
            CursorFilter::Completed => q.status = Status::Completed,
            CursorFilter::Search => q.q = Some("milk".into()),
            CursorFilter::Tag => q.tags = vec!["home".into()],
            CursorFilter::High => q.priorities = vec![Priority::High],
        }
        q
    }
}

/// Unpadded base64url, the cursor's outer encoding.
pub fn base64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// The cursor property; panics when it is broken.
pub fn check_cursor(data: &[u8]) {
    let env = cursor_env();
    let input = CursorInput::from_bytes(data);
    let query = input.query();
    runtime().block_on(async {
        match env.tasks.list(&query).await {
            Ok(page) => {
                // The cursor was accepted: `total` ignores it...
                let first = env
                    .tasks
                    .list(&TaskQuery {
                        cursor: None,
                        ..query.clone()
                    })
                    .await
                    .unwrap_or_else(|e| panic!("same query without cursor failed: {e:?}"));
                assert_eq!(
                    page.total, first.total,
                    "total must ignore the cursor; query {query:?}"
                );
                assert!(
                    page.tasks.len() <= query.limit as usize,
                    "page longer than limit; query {query:?}"
                );
                // ...and the cursor it hands out is accepted in turn.
                if let Some(next) = page.next_cursor {
                    let again = env
                        .tasks
                        .list(&TaskQuery {
                            cursor: Some(next.clone()),
                            ..query.clone()
                        })
                        .await;
                    assert!(
                        again.is_ok(),
                        "next_cursor {next:?} from query {query:?} was rejected: {again:?}"
                    );
                }
            }
            Err(StoreError::Invalid(errors)) => {
                assert!(
                    !errors.is_empty() && errors.iter().all(|e| e.field == "cursor"),
                    "an invalid cursor must be reported on `cursor` only; query {query:?}, got {errors:?}"
                );
            }
            Err(other) => panic!(
                "list with a fuzzed cursor must be Ok or Invalid(cursor); query {query:?}, got {other:?}"
            ),
        }
    });
}

// ---------------------------------------------------------------------------------------------
// http_request
// ---------------------------------------------------------------------------------------------

/// Accepts every request as [`USER`].
struct AnyoneIsFuzz;

#[async_trait::async_trait]
impl Authenticator for AnyoneIsFuzz {
    async fn authenticate(&self, _req: &Request) -> Result<Principal, AuthError> {
        Ok(Principal::new(USER))
    }
}

struct HttpEnv {
    api: BoxEndpoint<'static>,
    tasks: UserTasks,
    /// An existing task (re-created when a fuzzed DELETE removes it).
    known: Mutex<Uuid>,
    /// Tasks created by fuzzed requests since the last clean-up.
    created: Mutex<u32>,
}

/// Above this many fuzz-created tasks the user's tasks are cleared, so listings stay fast.
const CLEANUP_AFTER: u32 = 2000;

fn http_env() -> &'static HttpEnv {
    static ENV: OnceLock<HttpEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        runtime().block_on(async {
            let store = new_store().await;
            let tasks = store.for_user(USER).expect("user id");
            let known = create_known(&tasks).await;
            let api = TodoApi::builder(store).authenticator(AnyoneIsFuzz).build();
            HttpEnv {
                api: api.boxed(),
                tasks,
                known: Mutex::new(known),
                created: Mutex::new(0),
            }
        })
    })
}

async fn create_known(tasks: &UserTasks) -> Uuid {
    tasks
        .create(TaskInput {
            title: "Known task".into(),
            description: Some("pre-created so fuzzed task ids hit".into()),
            tags: vec!["home".into(), "fuzz".into()],
            due_at: Some(chrono_utc(1_767_225_600)),
            ..TaskInput::default()
        })
        .await
        .expect("create known task")
        .id
}

/// The fuzzed request.
#[derive(Debug, Arbitrary)]
pub struct HttpInput {
    /// Method.
    pub method: MethodSel,
    /// Path under `/api/fuzz`.
    pub path: PathSel,
    /// Query string.
    pub query: QuerySel,
    /// Content-Type header.
    pub content_type: ContentTypeSel,
    /// If-Match header.
    pub if_match: Option<IfMatchSel>,
    /// Body (last: takes the remaining bytes).
    pub body: BodySel,
}

/// Request methods.
#[derive(Debug, Arbitrary, Clone, Copy)]
#[allow(missing_docs)]
pub enum MethodSel {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
    Options,
}

impl MethodSel {
    fn method(self) -> Method {
        match self {
            MethodSel::Get => Method::GET,
            MethodSel::Post => Method::POST,
            MethodSel::Put => Method::PUT,
            MethodSel::Patch => Method::PATCH,
            MethodSel::Delete => Method::DELETE,
            MethodSel::Head => Method::HEAD,
            MethodSel::Options => Method::OPTIONS,
        }
    }
}

/// Paths.
#[derive(Debug, Arbitrary)]
pub enum PathSel {
    /// `/api/fuzz/tasks`
    Tasks,
    /// `/api/fuzz/tasks/{id}`
    Task(IdSel),
    /// `/api/fuzz/tasks/{id}/complete`
    Complete(IdSel),
    /// `/api/fuzz/tags`
    Tags,
    /// `/api/{fuzzed user}/tasks`
    OtherUser(String),
    /// `/api/fuzz/{fuzzed}` (skipped when it is not a valid URI path)
    Raw(String),
}

/// Task ids.
#[derive(Debug, Arbitrary)]
pub enum IdSel {
    /// The pre-created task.
    Known,
    /// A well-formed UUID that (almost surely) does not exist.
    Uuid(u128),
    /// Anything (percent-encoded, so the URI is valid).
    Fuzzed(String),
}

/// Query strings.
#[derive(Debug, Arbitrary)]
pub enum QuerySel {
    /// No query string.
    None,
    /// `k=v&…`, each key and value percent-encoded byte by byte.
    Pairs(Vec<(QueryKey, Bytes)>),
    /// Verbatim (skipped when it makes an invalid URI).
    Raw(String),
}

/// Query parameter names.
#[derive(Debug, Arbitrary, Clone)]
#[allow(missing_docs)]
pub enum QueryKey {
    Status,
    Priority,
    Tag,
    Q,
    DueAfter,
    DueBefore,
    Sort,
    Order,
    Limit,
    Cursor,
    Other(String),
}

impl QueryKey {
    fn name(&self) -> &str {
        match self {
            QueryKey::Status => "status",
            QueryKey::Priority => "priority",
            QueryKey::Tag => "tag",
            QueryKey::Q => "q",
            QueryKey::DueAfter => "due_after",
            QueryKey::DueBefore => "due_before",
            QueryKey::Sort => "sort",
            QueryKey::Order => "order",
            QueryKey::Limit => "limit",
            QueryKey::Cursor => "cursor",
            QueryKey::Other(s) => s,
        }
    }
}

/// Content-Type values.
#[derive(Debug, Arbitrary)]
#[allow(missing_docs)]
pub enum ContentTypeSel {
    None,
    Json,
    JsonCharset,
    MergePatch,
    TextPlain,
    FormUrlencoded,
    Fuzzed(String),
}

/// If-Match values.
#[derive(Debug, Arbitrary)]
#[allow(missing_docs)]
pub enum IfMatchSel {
    Star,
    /// `"<n>"`
    Version(i64),
    /// `W/"<n>"`
    Weak(i64),
    /// `"<n>", "<m>"`
    List(i64, i64),
    Fuzzed(String),
}

/// Bodies.
#[derive(Debug, Arbitrary)]
pub enum BodySel {
    /// No body at all.
    Empty,
    /// These bytes.
    Raw(Bytes),
    /// These bytes padded with spaces to 65,536 + `delta` (mod 17, centred) bytes: the
    /// body-limit boundary without huge fuzzer inputs.
    Padded {
        /// Offset from 65,536, in -8..=8.
        delta: u8,
        /// The start of the body.
        inner: Bytes,
    },
}

const BODY_LIMIT: usize = 65_536;

impl BodySel {
    fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            BodySel::Empty => None,
            BodySel::Raw(b) => Some(b.0.clone()),
            BodySel::Padded { delta, inner } => {
                let len = (BODY_LIMIT + usize::from(delta % 17)).saturating_sub(8);
                let mut b = inner.0.clone();
                b.truncate(len);
                b.resize(len, b' ');
                Some(b)
            }
        }
    }
}

/// A byte string. Unlike `Vec<u8>` (one continuation byte per element), it is encoded like a
/// `String`: its length comes from the end of the input, or it takes every remaining byte.
#[derive(Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl<'a> Arbitrary<'a> for Bytes {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let n = u.arbitrary_len::<u8>()?;
        Ok(Bytes(u.bytes(n)?.to_vec()))
    }

    fn arbitrary_take_rest(u: Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Bytes(u.take_rest().to_vec()))
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

/// Percent-encodes every byte outside RFC 3986's unreserved set.
fn pct(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

impl HttpInput {
    /// Decodes fuzzer bytes; `None` when they do not make an input.
    pub fn from_bytes(data: &[u8]) -> Option<Self> {
        HttpInput::arbitrary_take_rest(Unstructured::new(data)).ok()
    }

    /// The request URI (`None`: not a valid URI, the input is skipped).
    fn uri(&self, known: Uuid) -> Option<Uri> {
        let id = |sel: &IdSel| match sel {
            IdSel::Known => known.to_string(),
            IdSel::Uuid(n) => Uuid::from_u128(*n).to_string(),
            IdSel::Fuzzed(s) => pct(s.as_bytes()),
        };
        let path = match &self.path {
            PathSel::Tasks => format!("/api/{USER}/tasks"),
            PathSel::Task(i) => format!("/api/{USER}/tasks/{}", id(i)),
            PathSel::Complete(i) => format!("/api/{USER}/tasks/{}/complete", id(i)),
            PathSel::Tags => format!("/api/{USER}/tags"),
            PathSel::OtherUser(u) => format!("/api/{}/tasks", pct(u.as_bytes())),
            PathSel::Raw(s) => format!("/api/{USER}/{s}"),
        };
        let query = match &self.query {
            QuerySel::None => None,
            QuerySel::Pairs(pairs) => Some(
                pairs
                    .iter()
                    .map(|(k, v)| format!("{}={}", pct(k.name().as_bytes()), pct(&v.0)))
                    .collect::<Vec<_>>()
                    .join("&"),
            ),
            QuerySel::Raw(s) => Some(s.clone()),
        };
        let uri = match query {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        Uri::try_from(uri).ok()
    }
}

/// `TODO_FUZZ_VERBOSE=1`: print each request line and its status (for replaying inputs).
fn verbose() -> bool {
    static V: OnceLock<bool> = OnceLock::new();
    *V.get_or_init(|| std::env::var_os("TODO_FUZZ_VERBOSE").is_some_and(|v| v == "1"))
}

/// The HTTP property; panics when it is broken.
pub fn check_http(data: &[u8]) {
    let Some(input) = HttpInput::from_bytes(data) else {
        return;
    };
    let env = http_env();
    let known = *env.known.lock().unwrap();
    let Some(uri) = input.uri(known) else {
        return;
    };
    let is_head = matches!(input.method, MethodSel::Head);
    let mut req = Request::builder().method(input.method.method()).uri(uri);
    let ct = match &input.content_type {
        ContentTypeSel::None => None,
        ContentTypeSel::Json => Some("application/json".to_owned()),
        ContentTypeSel::JsonCharset => Some("application/json; charset=utf-8".to_owned()),
        ContentTypeSel::MergePatch => Some("application/merge-patch+json".to_owned()),
        ContentTypeSel::TextPlain => Some("text/plain".to_owned()),
        ContentTypeSel::FormUrlencoded => Some("application/x-www-form-urlencoded".to_owned()),
        ContentTypeSel::Fuzzed(s) => Some(s.clone()),
    };
    if let Some(ct) = ct {
        // Header values poem cannot represent are skipped.
        let Ok(v) = header::HeaderValue::from_str(&ct) else {
            return;
        };
        req = req.header(header::CONTENT_TYPE, v);
    }
    if let Some(im) = &input.if_match {
        let s = match im {
            IfMatchSel::Star => "*".to_owned(),
            IfMatchSel::Version(n) => format!("\"{n}\""),
            IfMatchSel::Weak(n) => format!("W/\"{n}\""),
            IfMatchSel::List(a, b) => format!("\"{a}\", \"{b}\""),
            IfMatchSel::Fuzzed(s) => s.clone(),
        };
        let Ok(v) = header::HeaderValue::from_str(&s) else {
            return;
        };
        req = req.header(header::IF_MATCH, v);
    }
    let req = match input.body.bytes() {
        Some(b) => req.body(b),
        None => req.finish(),
    };
    let deletes_known = matches!(input.path, PathSel::Task(IdSel::Known));
    send_and_check(req, &format!("{input:?}"), is_head, deletes_known);
}

/// Sends one request to the API and checks the property: never a 5xx, every 4xx a
/// problem+json whose `status` matches. `described` names the input in failure messages;
/// `targets_known`: the request addressed the known task (re-created if it deleted it).
fn send_and_check(req: Request, described: &str, is_head: bool, targets_known: bool) {
    let env = http_env();
    let (method, uri_shown) = (req.method().clone(), req.uri().to_string());
    let described = if described.len() > 4000 {
        format!("{}…", &described[..described.floor_char_boundary(4000)])
    } else {
        described.to_owned()
    };

    runtime().block_on(async {
        let resp = match env.api.call(req).await {
            Ok(r) => r,
            Err(e) => panic!("the endpoint returned Err (not a response): {e:?}; input {described}"),
        };
        let status = resp.status();
        if verbose() {
            eprintln!("{method} {uri_shown} -> {status}");
        }
        let headers = resp.headers().clone();
        // `/events` answers an endless stream by contract: its status and content type are
        // checked, its body is not waited for.
        let streaming = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if streaming {
            assert_eq!(status, StatusCode::OK, "an event stream with status {status}; input {described}");
            return;
        }
        let body = resp
            .into_body()
            .into_bytes()
            .await
            .unwrap_or_else(|e| panic!("reading the response body failed: {e:?}"));
        let shown = String::from_utf8_lossy(&body[..body.len().min(1000)]).into_owned();
        assert!(
            !status.is_server_error(),
            "status {status} (5xx) with body {shown}; input {described}"
        );
        if status.is_client_error() {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            assert!(
                ct.starts_with("application/problem+json"),
                "status {status} with content-type {ct:?} (want application/problem+json), body {shown}; input {described}"
            );
            if is_head && body.is_empty() {
                // A HEAD response may drop its body (RFC 9110 §9.3.2): then only the headers
                // can be checked.
                return;
            }
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
                panic!("status {status}: problem body is not JSON ({e}): {shown}; input {described}")
            });
            assert_eq!(
                json.get("status").and_then(serde_json::Value::as_u64),
                Some(u64::from(status.as_u16())),
                "problem body `status` differs from the response status {status}: {shown}; input {described}"
            );
        }
        // Keep the fixture usable: re-create the known task if a fuzzed DELETE removed it, and
        // clear what fuzzed POSTs created now and then.
        if status == StatusCode::NO_CONTENT && targets_known {
            *env.known.lock().unwrap() = create_known(&env.tasks).await;
        }
        if status == StatusCode::CREATED {
            let due = {
                let mut created = env.created.lock().unwrap();
                *created += 1;
                let due = *created >= CLEANUP_AFTER;
                if due {
                    *created = 0;
                }
                due
            };
            if due {
                cleanup(env).await;
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// query and body: the raw query string of a listing, the raw body of a write
// ---------------------------------------------------------------------------------------------

/// Percent-encodes only the bytes a URI query cannot hold, so `%`, `&`, `=` and `+` reach the
/// query-string parser as the fuzzer wrote them (malformed escapes included).
fn raw_query(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'#' {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// The listing's query-string parser: `GET /api/fuzz/tasks?<data>` (or `/tags?<data>` when
/// the first byte is odd, `HEAD` when it is `0xFF`), the bytes taken as the raw query string.
pub fn check_query(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let path = if sel % 2 == 1 { "tags" } else { "tasks" };
    let method = if sel == 0xFF {
        Method::HEAD
    } else {
        Method::GET
    };
    let Ok(uri) = Uri::try_from(format!("/api/{USER}/{path}?{}", raw_query(rest))) else {
        return;
    };
    let req = Request::builder().method(method.clone()).uri(uri).finish();
    let described = format!("{method} {path}?{:?}", String::from_utf8_lossy(rest));
    send_and_check(req, &described, method == Method::HEAD, false);
}

/// The request-body parsers: the first byte picks the write (create, replace, update, toggle)
/// and the Content-Type; the rest is the body, verbatim.
pub fn check_body(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let known = *http_env().known.lock().unwrap();
    let (method, path) = match sel % 4 {
        0 => (Method::POST, format!("/api/{USER}/tasks")),
        1 => (Method::PUT, format!("/api/{USER}/tasks/{known}")),
        2 => (Method::PATCH, format!("/api/{USER}/tasks/{known}")),
        _ => (Method::PATCH, format!("/api/{USER}/tasks/{known}/complete")),
    };
    let ct = match (sel / 4) % 4 {
        0 | 1 => Some("application/json"),
        2 => Some("application/merge-patch+json"),
        _ => None,
    };
    let mut req = Request::builder()
        .method(method.clone())
        .uri(Uri::try_from(path.as_str()).unwrap_or_else(|e| panic!("uri {path}: {e}")));
    if let Some(ct) = ct {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    let req = req.body(body.to_vec());
    let described = format!(
        "{method} {path} ({ct:?}) body {:?}",
        String::from_utf8_lossy(body)
    );
    send_and_check(req, &described, false, false);
}

/// Deletes every task but the known one.
async fn cleanup(env: &HttpEnv) {
    let known = *env.known.lock().unwrap();
    loop {
        let page = env
            .tasks
            .list(&TaskQuery {
                limit: 100,
                ..TaskQuery::default()
            })
            .await
            .expect("cleanup list");
        let doomed: Vec<Uuid> = page
            .tasks
            .iter()
            .map(|t| t.id)
            .filter(|id| *id != known)
            .collect();
        if doomed.is_empty() {
            break;
        }
        for id in doomed {
            env.tasks.delete(id, None).await.expect("cleanup delete");
        }
    }
}
