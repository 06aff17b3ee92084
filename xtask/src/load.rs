//! A small HTTP/1.1 load generator for `cargo xtask bench`.
//!
//! **Why our own loader rather than `wrk`** (installed at /usr/bin/wrk):
//! - the report needs exact percentiles computed from every recorded latency (a sorted `Vec`,
//!   nearest rank); wrk prints its own histogram summary;
//! - the open-loop run needs a fixed arrival rate with latency measured from the *intended* send
//!   time, so a stalled response cannot hide the requests it delayed (coordinated omission).
//!   wrk has no rate control at all (that is wrk2, which is not packaged here);
//! - every connection is a different user with its own token and its own task ids for
//!   `get`/`patch`/`toggle`; in wrk that is a Lua script juggling thousands of tokens and ids
//!   per thread, with no way to report one connection (the heavy user) on its own;
//! - results land in Rust structures the Markdown report is written from, with no parsing.
//!
//! It uses hyper 1's low-level client (`hyper::client::conn::http1`: one `SendRequest` per TCP
//! connection, no pool, so exactly one keep-alive connection per simulated user) over
//! hyper-util's tokio I/O adapter, crates already built for todo_http's JWKS client. A dropped
//! connection is reopened and counted as an error.
//!
//! The loader runs on a current-thread tokio runtime in the (release-built) xtask process, a
//! separate process from the server. On a 2-core machine it competes with the server and the
//! database for CPU; the report gives its CPU share next to the numbers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::seed::{Gen, SEARCH_WORDS};

/// A request may take at most this long; longer counts as a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One simulated user: its id, token and seeded task and list ids.
#[derive(Debug, Clone)]
pub struct User {
    /// User id (path segment and JWT `sub`).
    pub id: String,
    /// `Bearer <token>`.
    pub authorization: String,
    /// Ids of its seeded tasks.
    pub task_ids: Arc<[Uuid]>,
    /// Ids of its seeded lists.
    pub list_ids: Arc<[Uuid]>,
    /// Ids of its seeded tasks that have subtasks.
    pub parent_ids: Arc<[Uuid]>,
}

/// One kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `GET /tasks` (defaults: newest first, 50 per page).
    List,
    /// `GET /tasks?status=pending&priority=high&priority=medium&q=<word>&sort=due_at&order=asc`.
    ListFiltered,
    /// `GET /tasks/{id}`.
    Get,
    /// `POST /tasks` with a realistic body.
    Create,
    /// `PATCH /tasks/{id}` (merge patch of title and priority).
    Patch,
    /// `PATCH /tasks/{id}/complete` with no body (toggle).
    Toggle,
    /// `GET /tasks?list_id=<a list>&parent_id=none&sort=position&order=asc`: a list's top level
    /// in manual order.
    ListByPosition,
    /// `GET /tasks?parent_id=<a task with subtasks>`.
    Subtasks,
    /// `POST /tasks/{id}/move` within its list and parent: `{"after": null}` (first) or `{}`
    /// (last), half each.
    Move,
    /// `POST /batch` of [`BATCH_CREATES`] `create` operations, each a body like [`Op::Create`]'s.
    BatchCreate,
}

/// Operations in one [`Op::BatchCreate`] request (the API's most).
pub const BATCH_CREATES: usize = 100;

/// What every connection sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// The same operation every time.
    Only(Op),
    /// 70 % reads (list 30, filtered list 10, get 30) and 30 % writes (create, patch, toggle:
    /// 10 each).
    Mix,
}

impl Scenario {
    /// Short name for the report.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Only(Op::List) => "list",
            Scenario::Only(Op::ListFiltered) => "list filter+search+sort",
            Scenario::Only(Op::Get) => "get",
            Scenario::Only(Op::Create) => "create",
            Scenario::Only(Op::Patch) => "patch",
            Scenario::Only(Op::Toggle) => "toggle",
            Scenario::Only(Op::ListByPosition) => "list a list's top level by position",
            Scenario::Only(Op::Subtasks) => "list a task's subtasks",
            Scenario::Only(Op::Move) => "move within a list",
            Scenario::Only(Op::BatchCreate) => "POST /batch of 100 creates",
            Scenario::Mix => "mix (70% reads)",
        }
    }

    fn pick(self, rng: &mut Gen) -> Op {
        match self {
            Scenario::Only(op) => op,
            Scenario::Mix => match rng.below(100) {
                0..30 => Op::List,
                30..40 => Op::ListFiltered,
                40..70 => Op::Get,
                70..80 => Op::Create,
                80..90 => Op::Patch,
                _ => Op::Toggle,
            },
        }
    }
}

/// The request for `op` by `user`.
fn request(addr: SocketAddr, op: Op, user: &User, rng: &mut Gen) -> Request<Full<Bytes>> {
    let base = format!("/api/{}/tasks", user.id);
    // A random one of `ids` (the nil id, which matches nothing, when there is none).
    let any = |ids: &[Uuid], rng: &mut Gen| {
        if ids.is_empty() {
            Uuid::nil()
        } else {
            ids[rng.below(ids.len())]
        }
    };
    let id = |rng: &mut Gen| any(&user.task_ids, rng);
    let (method, path, body): (Method, String, Option<(&str, String)>) = match op {
        Op::List => (Method::GET, base, None),
        Op::ListFiltered => {
            let word = SEARCH_WORDS[rng.below(SEARCH_WORDS.len())];
            (
                Method::GET,
                format!(
                    "{base}?status=pending&priority=high&priority=medium&q={word}&sort=due_at&order=asc"
                ),
                None,
            )
        }
        Op::Get => (Method::GET, format!("{base}/{}", id(rng)), None),
        Op::Toggle => (Method::PATCH, format!("{base}/{}/complete", id(rng)), None),
        Op::ListByPosition => {
            let list = any(&user.list_ids, rng);
            (
                Method::GET,
                format!("{base}?list_id={list}&parent_id=none&sort=position&order=asc"),
                None,
            )
        }
        Op::Subtasks => {
            let parent = any(&user.parent_ids, rng);
            (Method::GET, format!("{base}?parent_id={parent}"), None)
        }
        Op::Move => {
            let target = id(rng);
            let body = if rng.chance(0.5) {
                r#"{"after":null}"#
            } else {
                "{}"
            };
            (
                Method::POST,
                format!("{base}/{target}/move"),
                Some(("application/json", body.to_owned())),
            )
        }
        Op::Patch => {
            let target = id(rng);
            let priority = ["low", "medium", "high"][rng.below(3)];
            let body = serde_json::json!({ "title": rng.title(), "priority": priority });
            (
                Method::PATCH,
                format!("{base}/{target}"),
                Some(("application/merge-patch+json", body.to_string())),
            )
        }
        Op::Create => (
            Method::POST,
            base,
            Some(("application/json", create_body(rng).to_string())),
        ),
        Op::BatchCreate => {
            let operations: Vec<serde_json::Value> = (0..BATCH_CREATES)
                .map(|_| serde_json::json!({ "op": "create", "task": create_body(rng) }))
                .collect();
            (
                Method::POST,
                format!("/api/{}/batch", user.id),
                Some((
                    "application/json",
                    serde_json::json!({ "operations": operations }).to_string(),
                )),
            )
        }
    };
    user_request(addr, user, method, &path, body)
}

/// A realistic `POST /tasks` body: a title, priority and tags, often a description and a due
/// date.
fn create_body(rng: &mut Gen) -> serde_json::Value {
    let priority = ["low", "medium", "high"][rng.priority_rank() as usize];
    let mut body = serde_json::json!({
        "title": rng.title(),
        "priority": priority,
        "tags": rng.tags(),
    });
    if let Some(d) = rng.description() {
        body["description"] = d.into();
    }
    let now = chrono::Utc::now().timestamp_millis();
    if let Some(due) = rng.due(now) {
        body["due_at"] = chrono::DateTime::from_timestamp_millis(due)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .into();
    }
    body
}

/// A request by `user` to `addr` (its `Authorization`), with a JSON body of `content_type` when
/// `body` is given.
pub fn user_request(
    addr: SocketAddr,
    user: &User,
    method: Method,
    path: &str,
    body: Option<(&str, String)>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::AUTHORIZATION, &user.authorization);
    let body = match body {
        Some((content_type, json)) => {
            b = b.header(hyper::header::CONTENT_TYPE, content_type);
            Bytes::from(json)
        }
        None => Bytes::new(),
    };
    b.body(Full::new(body)).unwrap_or_default()
}

/// What one connection (or one run) saw.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Latency of every response in the measured window, in nanoseconds (errors included).
    pub latencies: Vec<u64>,
    /// Latencies of connection 0 only (the heavy user when the data set is skewed).
    pub first_conn: Vec<u64>,
    /// Non-2xx responses and transport errors in the window.
    pub errors: u64,
    /// Errors by kind (`HTTP 503`, `connect: …`, `timeout`, …).
    pub error_kinds: BTreeMap<String, u64>,
    /// Requests sent more than 1 ms after their intended time (open loop only).
    pub late: u64,
    /// Length of the measured window.
    pub window: Duration,
    /// Start of the measured window and when its last response arrived (the window is
    /// stretched to it when later, e.g. an open loop running behind schedule).
    pub span: Option<(Instant, Instant)>,
}

impl Recorded {
    fn error(&mut self, kind: String) {
        self.errors += 1;
        *self.error_kinds.entry(kind).or_default() += 1;
    }

    fn merge(&mut self, other: Recorded) {
        self.span = match (self.span, other.span) {
            (Some((s, a)), Some((_, b))) => Some((s, a.max(b))),
            (a, b) => a.or(b),
        };
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.late += other.late;
        for (k, v) in other.error_kinds {
            *self.error_kinds.entry(k).or_default() += v;
        }
    }

    /// The measured window, stretched to the last response when that came later.
    fn elapsed(&self) -> Duration {
        let stretched = self.span.map(|(s, e)| e.saturating_duration_since(s));
        stretched.map_or(self.window, |d| d.max(self.window))
    }

    /// Adds a separate, later measurement of the same thing: its responses, and its window to
    /// this one's (the time between the two windows is not counted).
    pub fn append(&mut self, other: Recorded) {
        let window = self.elapsed() + other.elapsed();
        self.first_conn.extend_from_slice(&other.first_conn);
        self.merge(other);
        self.span = None;
        self.window = window;
    }

    /// Summary statistics (sorts the latencies).
    pub fn stats(mut self) -> Stats {
        self.latencies.sort_unstable();
        self.first_conn.sort_unstable();
        let n = self.latencies.len();
        let secs = self.elapsed().as_secs_f64().max(1e-9);
        Stats {
            count: n,
            rps: n as f64 / secs,
            p50: percentile(&self.latencies, 50.0),
            p95: percentile(&self.latencies, 95.0),
            p99: percentile(&self.latencies, 99.0),
            max: self.latencies.last().copied().unwrap_or(0),
            first_conn_p50: percentile(&self.first_conn, 50.0),
            errors: self.errors,
            error_kinds: self.error_kinds,
            late: self.late,
        }
    }
}

/// The nearest-rank percentile of sorted values (0 when empty).
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summary of one run; latencies in nanoseconds.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Responses in the window.
    pub count: usize,
    /// Responses per second in the window.
    pub rps: f64,
    /// Median latency.
    pub p50: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest latency.
    pub max: u64,
    /// Median latency of connection 0 (the heavy user in a skewed data set).
    pub first_conn_p50: u64,
    /// Non-2xx responses and transport errors.
    pub errors: u64,
    /// Errors by kind.
    pub error_kinds: BTreeMap<String, u64>,
    /// Open loop: requests sent more than 1 ms late.
    pub late: u64,
}

/// Phases of a run: connect, warm up (not recorded), measure.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Warm-up, not recorded.
    pub warmup: Duration,
    /// Measured window.
    pub measure: Duration,
}

/// One HTTP/1.1 connection's request half.
pub type Sender = SendRequest<Full<Bytes>>;

/// Opens one keep-alive HTTP/1.1 connection to `addr`.
pub async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one request and reads the whole response; the status code.
async fn send(sender: &mut Sender, req: Request<Full<Bytes>>) -> Result<u16, String> {
    exchange(sender, req).await.map(|(status, _)| status)
}

/// Sends one request and reads the whole response: its status code and body.
pub async fn exchange(
    sender: &mut Sender,
    req: Request<Full<Bytes>>,
) -> Result<(u16, Bytes), String> {
    let exchange = async {
        sender.ready().await.map_err(|e| format!("closed: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err("timeout".to_owned()))
}

/// How the connections send.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Closed loop: each connection sends its next request as soon as the last one is answered.
    Closed(Scenario),
    /// Open loop: `GET /tasks` at a fixed total arrival rate (requests per second) spread evenly
    /// over the connections; latency counts from the intended send time, so a slow response
    /// that delays the next send is charged to that request (no coordinated omission).
    OpenList {
        /// Total requests per second.
        rate: f64,
    },
}

/// Drives `users.len()` connections (connection `i` is `users[i]`) against `addr`: connects them
/// all (in waves of 100), releases them together, warms up, then records `timing.measure`.
pub async fn run(addr: SocketAddr, users: &[Arc<User>], mode: Mode, timing: Timing) -> Recorded {
    let n = users.len();
    let mut all = Recorded {
        window: timing.measure,
        ..Recorded::default()
    };
    let mut senders = Vec::with_capacity(n);
    for wave in users.chunks(100) {
        let tasks: Vec<_> = wave.iter().map(|_| tokio::spawn(connect(addr))).collect();
        for t in tasks {
            match t.await {
                Ok(Ok(s)) => senders.push(Some(s)),
                Ok(Err(e)) => {
                    all.error(format!("initial {e}"));
                    senders.push(None);
                }
                Err(e) => {
                    all.error(format!("initial connect: {e}"));
                    senders.push(None);
                }
            }
        }
    }
    let (start_tx, start_rx) = tokio::sync::watch::channel(None::<Instant>);
    let handles: Vec<_> = senders
        .into_iter()
        .zip(users)
        .enumerate()
        .map(|(i, (sender, user))| {
            let user = Arc::clone(user);
            let mut start_rx = start_rx.clone();
            tokio::spawn(async move {
                let start = match start_rx.wait_for(Option::is_some).await {
                    Ok(s) => s.unwrap_or_else(Instant::now),
                    Err(_) => Instant::now(),
                };
                conn_loop(i, n, addr, &user, mode, sender, start, timing).await
            })
        })
        .collect();
    // Every task is spawned and waiting: go.
    tokio::task::yield_now().await;
    let _ = start_tx.send(Some(Instant::now()));
    for (i, h) in handles.into_iter().enumerate() {
        match h.await {
            Ok(r) => {
                if i == 0 {
                    all.first_conn = r.latencies.clone();
                }
                all.merge(r);
            }
            Err(e) => all.error(format!("loader task: {e}")),
        }
    }
    all
}

/// One connection's loop.
#[allow(clippy::too_many_arguments)]
async fn conn_loop(
    i: usize,
    n: usize,
    addr: SocketAddr,
    user: &User,
    mode: Mode,
    mut sender: Option<Sender>,
    start: Instant,
    timing: Timing,
) -> Recorded {
    let measure_start = start + timing.warmup;
    let end = measure_start + timing.measure;
    let mut rng = Gen::new(0x10ad_0000 + i as u64);
    let mut rec = Recorded::default();
    let mut k: u32 = 0;
    loop {
        // When this request is meant to go out.
        let intended = match mode {
            Mode::Closed(_) => Instant::now(),
            Mode::OpenList { rate } => {
                let offset = Duration::from_secs_f64(i as f64 / rate);
                let interval = Duration::from_secs_f64(n as f64 / rate);
                let t = start + offset + interval * k;
                k += 1;
                if t < end {
                    tokio::time::sleep_until(t.into()).await;
                }
                t
            }
        };
        if intended >= end {
            break;
        }
        let recording = intended >= measure_start;
        // An open loop far behind schedule (the server slower than the arrival rate) would
        // take ever longer to drain: past twice the window, the rest is counted as not sent.
        if matches!(mode, Mode::OpenList { .. }) && Instant::now() > end + timing.measure {
            if recording {
                rec.error("not sent: over 1 window behind schedule".to_owned());
            }
            continue;
        }
        if sender.is_none() {
            match connect(addr).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    if recording {
                        rec.error(e);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let op = match mode {
            Mode::Closed(scenario) => scenario.pick(&mut rng),
            Mode::OpenList { .. } => Op::List,
        };
        let req = request(addr, op, user, &mut rng);
        if recording && Instant::now() > intended + Duration::from_millis(1) {
            rec.late += 1;
        }
        let result = send(s, req).await;
        let done = Instant::now();
        let latency = done.saturating_duration_since(intended).as_nanos() as u64;
        if recording {
            rec.span = Some((measure_start, rec.span.map_or(done, |(_, e)| e.max(done))));
        }
        match result {
            Ok(status) => {
                if recording {
                    rec.latencies.push(latency);
                    if !(200..300).contains(&status) {
                        rec.error(format!("HTTP {status}"));
                    }
                }
            }
            Err(e) => {
                sender = None;
                if recording {
                    rec.error(e);
                }
            }
        }
    }
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 95.0), 95);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn appended_windows_add_up_without_the_gap() {
        let t0 = Instant::now();
        let mut a = Recorded {
            latencies: vec![1, 2, 3],
            first_conn: vec![1],
            window: Duration::from_secs(2),
            // The last response came 1 s after the window closed.
            span: Some((t0, t0 + Duration::from_secs(3))),
            ..Recorded::default()
        };
        let b = Recorded {
            latencies: vec![4],
            first_conn: vec![4],
            errors: 1,
            window: Duration::from_secs(2),
            span: Some((t0 + Duration::from_secs(60), t0 + Duration::from_secs(61))),
            ..Recorded::default()
        };
        a.append(b);
        let s = a.stats();
        // 4 responses over 3 s + 2 s; the 57 s between the slices do not count.
        assert!((s.rps - 0.8).abs() < 1e-9, "{}", s.rps);
        assert_eq!(s.errors, 1);
        assert_eq!(s.first_conn_p50, 1);
        assert_eq!(s.max, 4);
    }

    #[test]
    fn mix_is_seventy_percent_reads() {
        let mut g = Gen::new(3);
        let reads = (0..10_000)
            .filter(|_| {
                matches!(
                    Scenario::Mix.pick(&mut g),
                    Op::List | Op::ListFiltered | Op::Get
                )
            })
            .count();
        assert!((6_700..7_300).contains(&reads), "{reads}");
    }

    #[test]
    fn a_batch_request_carries_a_hundred_creates() {
        let user = User {
            id: "u".into(),
            authorization: "Bearer t".into(),
            task_ids: Vec::new().into(),
            list_ids: Vec::new().into(),
            parent_ids: Vec::new().into(),
        };
        let addr: SocketAddr = ([127, 0, 0, 1], 1).into();
        let r = request(addr, Op::BatchCreate, &user, &mut Gen::new(1));
        assert_eq!(
            (r.method(), r.uri().to_string()),
            (&Method::POST, "/api/u/batch".to_owned())
        );
        let body = futures_body(r);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        let ops = v["operations"].as_array().expect("operations");
        assert_eq!(ops.len(), BATCH_CREATES);
        assert!(
            ops.iter()
                .all(|o| o["op"] == "create" && o["task"]["title"].is_string())
        );
    }

    /// The bytes of a request's full body.
    fn futures_body(r: Request<Full<Bytes>>) -> Bytes {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(r.into_body().collect())
            .map(|c| c.to_bytes())
            .unwrap_or_default()
    }

    #[test]
    fn tree_scenarios_aim_at_the_users_lists_and_parents() {
        let (list, parent, task) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let user = User {
            id: "u".into(),
            authorization: "Bearer t".into(),
            task_ids: vec![task].into(),
            list_ids: vec![list].into(),
            parent_ids: vec![parent].into(),
        };
        let addr: SocketAddr = ([127, 0, 0, 1], 1).into();
        let mut g = Gen::new(3);
        let r = request(addr, Op::ListByPosition, &user, &mut g);
        assert_eq!(
            r.uri().to_string(),
            format!("/api/u/tasks?list_id={list}&parent_id=none&sort=position&order=asc")
        );
        let r = request(addr, Op::Subtasks, &user, &mut g);
        assert_eq!(
            r.uri().to_string(),
            format!("/api/u/tasks?parent_id={parent}")
        );
        let mut bodies = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let r = request(addr, Op::Move, &user, &mut g);
            assert_eq!(
                (r.method(), r.uri().to_string()),
                (&Method::POST, format!("/api/u/tasks/{task}/move"))
            );
            let body = r.into_body();
            bodies.insert(format!("{body:?}"));
        }
        assert_eq!(bodies.len(), 2, "first and last, both: {bodies:?}");
    }
}
