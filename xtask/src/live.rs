//! The parts of `cargo xtask bench` about keeping clients in step, measured over HTTP against the
//! release server like the other rows:
//!
//! - **sync** (`--only sync`): the heavy user's initial sync (`GET /changes` without `since`,
//!   paged at 1,000 records until `has_more` is false), an incremental sync after a few writes,
//!   and `POST /batch` of 100 creates (run by `bench.rs` through the load generator);
//! - **events** (`--only events`): thousands of idle `GET /events` streams spread over many
//!   users (the server's memory with them open), then the fan-out of a write to one user's 16
//!   streams, on two server instances sharing a PostgreSQL database (one on SQLite);
//! - **reminders** (`--only reminders`, PostgreSQL): thousands of reminders due in the same
//!   second, fired by two instances' schedulers, timed and counted through the database and the
//!   instances' metrics.
//!
//! Every function here measures and returns numbers; `bench.rs` decides what runs and renders
//! the tables with [`render_sync`], [`render_events`] and [`render_reminders`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request};
use sqlx::Connection;
use todo_store::{BatchOp, ReminderInput, Store, TaskInput};
use uuid::Uuid;

use crate::load::{self, Sender, User, percentile};
use crate::seed::Gen;

/// Page size of the syncs: the API's largest.
pub const SYNC_LIMIT: u32 = 1000;
/// Most event streams one user may hold on one server (API.md).
pub const STREAMS_PER_USER: usize = 16;
/// How long a request or the opening of a stream may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Unmeasured writes before the fan-out is measured: the other instance's listener is started
/// by its first stream, and a write it has not heard of would only show after the streams'
/// 15-second fallback read.
const FANOUT_WARMUP: usize = 3;
/// How long the fan-out waits for a write's event on every stream before counting it missed.
const FANOUT_WAIT: Duration = Duration::from_secs(5);

/// A series of latencies (nanoseconds), summarised by nearest rank.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// How many.
    pub n: usize,
    /// Median.
    pub p50: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

impl Series {
    /// Summarises `v`.
    pub fn of(mut v: Vec<u64>) -> Self {
        v.sort_unstable();
        Series {
            n: v.len(),
            p50: percentile(&v, 50.0),
            p95: percentile(&v, 95.0),
            p99: percentile(&v, 99.0),
            max: v.last().copied().unwrap_or(0),
        }
    }
}

/// One row of the sync table.
#[derive(Debug, Clone)]
pub struct SyncRow {
    /// What was measured.
    pub what: String,
    /// Connections.
    pub conns: usize,
    /// The latencies.
    pub lat: Series,
    /// Throughput, with its unit.
    pub throughput: String,
    /// Failed requests.
    pub errors: u64,
}

// ---------------------------------------------------------------------------------------------
// Sync.

/// One page of `GET /changes`: records on it, `meta.next`, `meta.has_more`.
struct Page {
    records: usize,
    next: String,
    has_more: bool,
}

/// `s` percent-encoded for a query string (everything but RFC 3986's unreserved characters).
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Reads a `/changes` body: how many records, `next`, `has_more`.
fn parse_page(body: &[u8]) -> Result<Page, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("changes body: {e}"))?;
    let count = |k: &str| v["data"][k].as_array().map_or(0, Vec::len);
    Ok(Page {
        records: count("tasks") + count("lists") + count("deleted"),
        next: v["meta"]["next"]
            .as_str()
            .ok_or("changes body without meta.next")?
            .to_owned(),
        has_more: v["meta"]["has_more"].as_bool().unwrap_or(false),
    })
}

async fn changes_page(
    sender: &mut Sender,
    addr: SocketAddr,
    user: &User,
    since: Option<&str>,
) -> Result<Page, String> {
    let mut path = format!("/api/{}/changes?limit={SYNC_LIMIT}", user.id);
    if let Some(s) = since {
        let _ = write!(path, "&since={}", query_escape(s));
    }
    let req = load::user_request(addr, user, Method::GET, &path, None);
    let (status, body) = load::exchange(sender, req).await?;
    if status != 200 {
        return Err(format!("GET /changes: HTTP {status}"));
    }
    parse_page(&body)
}

/// The result of [`initial_sync`].
pub struct InitialSync {
    /// The row: total time per sync.
    pub row: SyncRow,
    /// The token the last sync ended with (for the incremental syncs).
    pub token: String,
}

/// `runs` initial syncs of `user` over one keep-alive connection: `GET /changes` without
/// `since`, then with each page's `next` until `has_more` is false. Each sync's time includes
/// reading every page's JSON, as a client does.
pub async fn initial_sync(
    addr: SocketAddr,
    user: &User,
    runs: usize,
) -> Result<InitialSync, String> {
    let mut sender = load::connect(addr).await?;
    let (mut times, mut records, mut pages, mut token) = (Vec::new(), 0, 0, String::new());
    for _ in 0..runs.max(1) {
        let t0 = Instant::now();
        let (mut n, mut p) = (0usize, 0usize);
        let mut since: Option<String> = None;
        loop {
            let page = changes_page(&mut sender, addr, user, since.as_deref()).await?;
            n += page.records;
            p += 1;
            since = Some(page.next);
            if !page.has_more {
                break;
            }
        }
        times.push(t0.elapsed().as_nanos() as u64);
        (records, pages) = (n, p);
        token = since.unwrap_or_default();
    }
    let lat = Series::of(times);
    let rate = records as f64 / (lat.p50 as f64 / 1e9).max(1e-9);
    Ok(InitialSync {
        row: SyncRow {
            what: format!(
                "initial sync of {} ({records} records in {pages} pages of up to {SYNC_LIMIT}), total per sync",
                user.id
            ),
            conns: 1,
            lat,
            throughput: format!("{rate:.0} records/s at p50"),
            errors: 0,
        },
        token,
    })
}

/// `runs` incremental syncs of `user`: each after `writes` merge patches of random tasks of
/// its own (not timed), `GET /changes?since=<the last next>` is timed. Starts from `token`.
pub async fn incremental_sync(
    addr: SocketAddr,
    user: &User,
    mut token: String,
    runs: usize,
    writes: usize,
) -> Result<SyncRow, String> {
    if user.task_ids.is_empty() {
        return Err(format!("{} has no tasks to write", user.id));
    }
    let mut sender = load::connect(addr).await?;
    let mut rng = Gen::new(0x5ac_0001);
    let (mut times, mut records, mut errors) = (Vec::new(), 0usize, 0u64);
    for _ in 0..runs.max(1) {
        for _ in 0..writes {
            let id = user.task_ids[rng.below(user.task_ids.len())];
            let body = serde_json::json!({ "title": rng.title() }).to_string();
            let req = load::user_request(
                addr,
                user,
                Method::PATCH,
                &format!("/api/{}/tasks/{id}", user.id),
                Some(("application/merge-patch+json", body)),
            );
            let (status, _) = load::exchange(&mut sender, req).await?;
            if status != 200 {
                return Err(format!("PATCH before an incremental sync: HTTP {status}"));
            }
        }
        let t0 = Instant::now();
        let page = changes_page(&mut sender, addr, user, Some(&token)).await?;
        times.push(t0.elapsed().as_nanos() as u64);
        // Every sync must see the writes made since the last one.
        if page.records == 0 {
            errors += 1;
        }
        records += page.records;
        token = page.next;
    }
    let n = times.len().max(1);
    Ok(SyncRow {
        what: format!(
            "incremental sync of {} after {writes} patches (`since` = the last `next`)",
            user.id
        ),
        conns: 1,
        lat: Series::of(times),
        throughput: format!("{:.1} records per sync", records as f64 / n as f64),
        errors,
    })
}

// ---------------------------------------------------------------------------------------------
// Event streams.

/// An open `GET /events` response.
struct OpenStream {
    /// Kept so the connection stays up while the body is read.
    _sender: Sender,
    body: Incoming,
}

/// Opens `GET /api/{user}/events` on a fresh connection; the status when not 200.
async fn open_stream(addr: SocketAddr, user: &User) -> Result<OpenStream, String> {
    let open = async {
        let mut sender = load::connect(addr).await?;
        let mut req = load::user_request(
            addr,
            user,
            Method::GET,
            &format!("/api/{}/events", user.id),
            None,
        );
        req.headers_mut().insert(
            hyper::header::ACCEPT,
            hyper::header::HeaderValue::from_static("text/event-stream"),
        );
        sender.ready().await.map_err(|e| format!("closed: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(format!("HTTP {status}"));
        }
        Ok(OpenStream {
            _sender: sender,
            body: resp.into_body(),
        })
    };
    tokio::time::timeout(TIMEOUT, open)
        .await
        .unwrap_or_else(|_| Err("timeout".to_owned()))
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// Its `event:` line.
    pub event: String,
    /// Its `data:` lines, joined by newlines.
    pub data: String,
}

/// Splits a `text/event-stream` body into events as its bytes arrive.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
}

impl SseParser {
    /// Adds `chunk`; returns the events it completed (comments and id-only blocks skipped).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buf
            .extend(chunk.iter().copied().filter(|&b| b != b'\r'));
        let mut out = Vec::new();
        while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.buf.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&block);
            let (mut event, mut data) = (String::new(), Vec::new());
            for line in text.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => event = value.to_owned(),
                    "data" => data.push(value),
                    _ => {}
                }
            }
            if !event.is_empty() || !data.is_empty() {
                out.push(SseEvent {
                    event,
                    data: data.join("\n"),
                });
            }
        }
        out
    }
}

/// What [`idle_streams`] saw.
#[derive(Debug, Default)]
pub struct IdleStreams {
    /// Streams asked for.
    pub requested: usize,
    /// Streams open at the measurement.
    pub opened: usize,
    /// Users they were spread over.
    pub users: usize,
    /// Time to open them all (100 at a time).
    pub open_time: Duration,
    /// Streams that could not be opened, by reason (after 3 attempts each).
    pub failures: BTreeMap<String, u64>,
    /// Streams that ended before they were closed.
    pub ended_early: usize,
    /// The server's RSS (`VmRSS`, KiB) before the streams were opened.
    pub rss_before_kib: Option<u64>,
    /// The server's RSS with them open (after 2 s of idling).
    pub rss_open_kib: Option<u64>,
    /// The server's peak RSS (`VmHWM`) over the opening, when it could be reset first.
    pub peak_kib: Option<u64>,
    /// `todo_http_event_streams_open` as the server reported it with them open.
    pub gauge: Option<f64>,
    /// How long after the client closed them the server's gauge was back to 0 (`None`: not
    /// within 45 s, or unreadable). A stream learns that its client left when a write fails,
    /// so this follows the keep-alive interval.
    pub released: Option<Duration>,
}

/// Opens `k` idle event streams on the server at `addr` (process `pid`), stream `i` for
/// `users[i % users.len()]` (so at most 16 per user when `users.len() >= k / 16`), 100 being
/// opened at a time; reads the server's RSS with them open; closes them.
pub async fn idle_streams(
    addr: SocketAddr,
    pid: u32,
    users: &[Arc<User>],
    k: usize,
) -> IdleStreams {
    let mut out = IdleStreams {
        requested: k,
        users: users.len().min(k),
        ..IdleStreams::default()
    };
    if users.is_empty() {
        return out;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    out.rss_before_kib = crate::bench::proc_status_kib(pid, "VmRSS");
    let reset = crate::bench::reset_peak_rss(pid);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let ended = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::with_capacity(k);
    let t0 = Instant::now();
    let indexes: Vec<usize> = (0..k).collect();
    for wave in indexes.chunks(100) {
        let opening: Vec<_> = wave
            .iter()
            .map(|&i| {
                let user = Arc::clone(&users[i % users.len()]);
                tokio::spawn(async move {
                    let mut last = String::new();
                    for attempt in 0..3 {
                        if attempt > 0 {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        match open_stream(addr, &user).await {
                            Ok(s) => return Ok(s),
                            Err(e) => last = e,
                        }
                    }
                    Err(last)
                })
            })
            .collect();
        for o in opening {
            match o.await {
                Ok(Ok(s)) => {
                    let mut stop = stop_rx.clone();
                    let ended = Arc::clone(&ended);
                    readers.push(tokio::spawn(async move {
                        let OpenStream { _sender, mut body } = s;
                        loop {
                            tokio::select! {
                                _ = stop.wait_for(|s| *s) => break,
                                f = body.frame() => match f {
                                    Some(Ok(_)) => {}
                                    _ => {
                                        ended.fetch_add(1, Ordering::Relaxed);
                                        break;
                                    }
                                },
                            }
                        }
                    }));
                }
                Ok(Err(e)) => *out.failures.entry(e).or_default() += 1,
                Err(e) => *out.failures.entry(format!("task: {e}")).or_default() += 1,
            }
        }
    }
    out.open_time = t0.elapsed();
    out.opened = readers.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    out.rss_open_kib = crate::bench::proc_status_kib(pid, "VmRSS");
    out.peak_kib = reset
        .then(|| crate::bench::proc_status_kib(pid, "VmHWM"))
        .flatten();
    out.gauge = get_text(addr, "/metrics")
        .await
        .ok()
        .and_then(|m| metric_sum(&m, "todo_http_event_streams_open"));
    out.ended_early = ended.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    for r in readers {
        let _ = r.await;
    }
    // Wait for the server to see them go (they count against its caps) before anything else
    // is measured.
    let closed = Instant::now();
    while closed.elapsed() < Duration::from_secs(45) {
        let open = get_text(addr, "/metrics")
            .await
            .ok()
            .and_then(|m| metric_sum(&m, "todo_http_event_streams_open"));
        if open == Some(0.0) {
            out.released = Some(closed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    out
}

/// What [`fan_out`] saw.
#[derive(Debug, Default)]
pub struct FanOut {
    /// Server instances the streams were spread over (the writes go to the first).
    pub instances: usize,
    /// Streams of the one user.
    pub streams: usize,
    /// Measured writes.
    pub writes: usize,
    /// Delivery after the write's response, streams on the writing instance.
    pub same: Series,
    /// The same on the other instance (PostgreSQL with two instances).
    pub other: Option<Series>,
    /// Delivery after the write was sent (its whole round trip included), writing instance.
    pub same_from_send: Series,
    /// The same on the other instance.
    pub other_from_send: Option<Series>,
    /// The writes' own latency (request sent to response read).
    pub write: Series,
    /// Deliveries that arrived before the writer had read its response (counted as 0).
    pub early: u64,
    /// Deliveries that did not arrive within 5 s.
    pub missed: u64,
}

/// One `task.updated` event seen by stream `stream`: the task's id and version, and when.
type Seen = (usize, Uuid, i64, Instant);

/// Opens `streams` event streams of `user`, stream `j` on `addrs[j % addrs.len()]`, then makes
/// `writes` merge patches of one task of `user` through `addrs[0]`, one at a time, each after
/// every stream received the last. For each write and stream: the time from the write's
/// response to the stream's receipt of the `task.updated` event with the version the response
/// gave.
pub async fn fan_out(
    addrs: &[SocketAddr],
    user: &User,
    streams: usize,
    writes: usize,
) -> Result<FanOut, String> {
    let task = *user
        .task_ids
        .first()
        .ok_or_else(|| format!("{} has no task to write", user.id))?;
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<Seen>();
    let mut readers = Vec::new();
    for j in 0..streams {
        let addr = addrs[j % addrs.len()];
        let s = open_stream(addr, user)
            .await
            .map_err(|e| format!("open event stream {j}: {e}"))?;
        let tx = seen_tx.clone();
        readers.push(tokio::spawn(async move {
            let OpenStream { _sender, mut body } = s;
            let mut parser = SseParser::default();
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let at = Instant::now();
                for e in parser.push(&data) {
                    if e.event != "task.updated" {
                        continue;
                    }
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&e.data) else {
                        continue;
                    };
                    let id = v["task"]["id"].as_str().and_then(|s| s.parse().ok());
                    if let (Some(id), Some(version)) = (id, v["task"]["version"].as_i64()) {
                        let _ = tx.send((j, id, version, at));
                    }
                }
            }
        }));
    }
    drop(seen_tx);
    let mut sender = load::connect(addrs[0]).await?;
    let mut out = FanOut {
        instances: addrs.len(),
        streams,
        writes,
        ..FanOut::default()
    };
    let (mut same, mut other, mut write) = (Vec::new(), Vec::new(), Vec::new());
    let (mut same_send, mut other_send) = (Vec::new(), Vec::new());
    for w in 0..FANOUT_WARMUP + writes {
        let measured = w >= FANOUT_WARMUP;
        let body = serde_json::json!({ "title": format!("fan-out {w}") }).to_string();
        let req = load::user_request(
            addrs[0],
            user,
            Method::PATCH,
            &format!("/api/{}/tasks/{task}", user.id),
            Some(("application/merge-patch+json", body)),
        );
        let sent = Instant::now();
        let (status, body) = load::exchange(&mut sender, req).await?;
        let responded = Instant::now();
        if status != 200 {
            return Err(format!("fan-out write: HTTP {status}"));
        }
        let version = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["data"]["version"].as_i64())
            .ok_or("fan-out write: no version in the response")?;
        let wait = if measured {
            FANOUT_WAIT
        } else {
            // Past the streams' fallback read (15 s), so a warm-up event always arrives.
            Duration::from_secs(20)
        };
        let deadline = responded + wait;
        let mut got: Vec<Option<Instant>> = vec![None; streams];
        while got.iter().any(Option::is_none) {
            match tokio::time::timeout_at(deadline.into(), seen_rx.recv()).await {
                Ok(Some((j, id, v, at))) if id == task && v == version => got[j] = Some(at),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        if !measured {
            continue;
        }
        write.push(responded.duration_since(sent).as_nanos() as u64);
        for (j, at) in got.into_iter().enumerate() {
            let Some(at) = at else {
                out.missed += 1;
                continue;
            };
            if at < responded {
                out.early += 1;
            }
            let lat = at.saturating_duration_since(responded).as_nanos() as u64;
            let from_send = at.saturating_duration_since(sent).as_nanos() as u64;
            if j % addrs.len() == 0 {
                same.push(lat);
                same_send.push(from_send);
            } else {
                other.push(lat);
                other_send.push(from_send);
            }
        }
    }
    for r in readers {
        r.abort();
    }
    out.same = Series::of(same);
    out.other = (addrs.len() > 1).then(|| Series::of(other));
    out.same_from_send = Series::of(same_send);
    out.other_from_send = (addrs.len() > 1).then(|| Series::of(other_send));
    out.write = Series::of(write);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Reminders.

/// What [`reminders`] saw; times are from the due second.
#[derive(Debug, Default)]
pub struct Reminders {
    /// Reminders set.
    pub n: usize,
    /// Instances running the scheduler.
    pub instances: usize,
    /// Time to create the tasks with their reminders (through the store, 100 per batch).
    pub setup: Duration,
    /// The due second minus the end of the setup.
    pub lead: Duration,
    /// The due second.
    pub due: Option<DateTime<Utc>>,
    /// When the first was seen fired.
    pub first: Option<Duration>,
    /// When half had fired.
    pub half: Option<Duration>,
    /// When 99 % had fired.
    pub p99: Option<Duration>,
    /// When all had fired.
    pub all: Option<Duration>,
    /// Rows in state fired, skipped and pending at the end.
    pub fired: i64,
    /// Skipped (must be 0: no task was completed).
    pub skipped: i64,
    /// Still pending when the wait ended.
    pub pending: i64,
    /// Seen fired before the due second (must be 0).
    pub early: i64,
    /// Each instance's `todo_reminders_fired_total` increase: how many it handed out.
    pub announced: Vec<Option<f64>>,
    /// Database polls made while waiting.
    pub polls: usize,
}

impl Reminders {
    /// Whether every reminder fired, once.
    pub fn exactly_once(&self) -> bool {
        let announced: Option<f64> = self.announced.iter().copied().sum();
        self.fired == self.n as i64
            && self.skipped == 0
            && self.pending == 0
            && self.early == 0
            && announced == Some(self.n as f64)
    }
}

/// Creates `n` tasks of `users` (in batches of 100 through the store), each with one reminder
/// at the same whole second a few seconds ahead, while the servers at `addrs` (sharing the
/// PostgreSQL database at `url`) run their schedulers; then polls the `reminders` table every
/// 10 ms from just before that second until every reminder has fired (or 60 s passed), and
/// reads how many each instance announced from its `/metrics`.
pub async fn reminders(
    url: &str,
    users: &[Arc<User>],
    n: usize,
    addrs: &[SocketAddr],
) -> Result<Reminders, String> {
    if users.is_empty() {
        return Err("no users".into());
    }
    let store = Store::connect(url).await.map_err(|e| e.to_string())?;
    let mut out = Reminders {
        n,
        instances: addrs.len(),
        ..Reminders::default()
    };
    let before = announced(addrs).await;
    // 5 s after the setup starts plus 2 ms a reminder for the setup itself; checked below.
    let lead = Duration::from_secs(5) + Duration::from_millis(2 * n as u64);
    let due = (Utc::now() + lead).trunc_subsecs(0) + chrono::Duration::seconds(1);
    out.due = Some(due);
    let started = Instant::now();
    let batches: Vec<(usize, usize)> = (0..n).step_by(100).map(|s| (s, (s + 100).min(n))).collect();
    // 8 batches at a time, each for one user.
    for group in batches.chunks(8) {
        let running: Vec<_> = group
            .iter()
            .map(|&(from, to)| {
                let user = &users[(from / 100) % users.len()];
                let tasks = store.for_user(&user.id);
                tokio::spawn(async move {
                    let ops = (from..to)
                        .map(|i| BatchOp::Create {
                            reference: None,
                            task: TaskInput {
                                reminders: vec![ReminderInput::At(due)],
                                ..TaskInput::titled(format!("Reminder bench {i}"))
                            },
                            parent: None,
                        })
                        .collect();
                    tasks
                        .map_err(|e| e.to_string())?
                        .batch(ops)
                        .await
                        .map(drop)
                        .map_err(|e| format!("batch of reminders: {e}"))
                })
            })
            .collect();
        for r in running {
            r.await.map_err(|e| e.to_string())??;
        }
    }
    out.setup = started.elapsed();
    store.close().await;
    let ahead = (due - Utc::now()).to_std().unwrap_or_default();
    out.lead = ahead;
    if ahead < Duration::from_millis(500) {
        return Err(format!(
            "creating {n} reminders took {:.1} s, past their due time: the machine is too busy",
            out.setup.as_secs_f64()
        ));
    }
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(ahead.saturating_sub(Duration::from_millis(500))).await;
    let give_up = due + chrono::Duration::seconds(60);
    loop {
        let (fired, skipped, pending): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state = 1), count(*) FILTER (WHERE state = 2), \
             count(*) FILTER (WHERE state = 0) FROM reminders WHERE fire_at = $1",
        )
        .bind(due)
        .fetch_one(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
        let now = Utc::now();
        out.polls += 1;
        (out.fired, out.skipped, out.pending) = (fired, skipped, pending);
        let since_due = (now - due).to_std().ok();
        match since_due {
            None => out.early = out.early.max(fired),
            Some(t) => {
                let mark = |slot: &mut Option<Duration>, share: f64| {
                    if slot.is_none() && fired as f64 >= share * n as f64 && fired > 0 {
                        *slot = Some(t);
                    }
                };
                mark(&mut out.first, 0.0);
                mark(&mut out.half, 0.5);
                mark(&mut out.p99, 0.99);
                mark(&mut out.all, 1.0);
            }
        }
        if pending == 0 || now > give_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = conn.close().await;
    // The counters move right after the commit the poll saw; give them a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = announced(addrs).await;
    out.announced = before
        .iter()
        .zip(&after)
        .map(|(b, a)| Some(a.as_ref()? - b.unwrap_or(0.0)))
        .collect();
    Ok(out)
}

/// `todo_reminders_fired_total` of each instance (`None` when unreadable).
async fn announced(addrs: &[SocketAddr]) -> Vec<Option<f64>> {
    let mut out = Vec::new();
    for &a in addrs {
        let text = get_text(a, "/metrics").await.ok();
        out.push(text.map(|t| metric_sum(&t, todo_http::reminders::FIRED_METRIC).unwrap_or(0.0)));
    }
    out
}

/// `GET path` without credentials; the body of a 200.
pub async fn get_text(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut sender = load::connect(addr).await?;
    let req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let (status, body) = load::exchange(&mut sender, req).await?;
    if status != 200 {
        return Err(format!("GET {path}: HTTP {status}"));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The sum of every sample of metric `name` in Prometheus text (all label sets); `None` when
/// it has none.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = match rest.chars().next() {
            Some(' ') => rest.trim(),
            Some('{') => rest.rsplit_once('}').map_or("", |(_, v)| v.trim()),
            _ => continue,
        };
        let value = value.split_whitespace().next().unwrap_or("");
        if let Ok(v) = value.parse::<f64>() {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

// ---------------------------------------------------------------------------------------------
// Output.

fn ms(ns: u64) -> String {
    crate::bench::ms(ns)
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("-".into(), |k| format!("{:.0} MiB", k as f64 / 1024.0))
}

/// Prints a sync row to stdout.
pub fn print_sync_row(r: &SyncRow) {
    println!(
        "  sync   {} @ {} conns: p50 {} ms  p95 {} ms  p99 {} ms  max {} ms  ({} runs)  {}  errors {}",
        r.what,
        r.conns,
        ms(r.lat.p50),
        ms(r.lat.p95),
        ms(r.lat.p99),
        ms(r.lat.max),
        r.lat.n,
        r.throughput,
        r.errors
    );
}

/// The sync section: its table, then `notes` (one paragraph each).
pub fn render_sync(w: &mut String, rows: &[SyncRow], notes: &[String]) {
    let _ = writeln!(w, "\n### Sync and batches\n");
    let _ = writeln!(
        w,
        "Over HTTP like the rows above. The initial sync pages through `GET /changes` without \
         `since`, {SYNC_LIMIT} records a page, until `has_more` is false, on one keep-alive \
         connection, timed from the first request to the last page read and parsed (the \
         loader parses each page's JSON, as a client does); `runs` is how many times. The \
         incremental sync is one `GET /changes?since=` after patches of the same user (not \
         timed). `POST /batch` sends 100 `create` operations per request in a closed loop; its \
         ops/s counts operations.\n"
    );
    let _ = writeln!(
        w,
        "| measurement | conns | runs | p50 ms | p95 ms | p99 ms | max ms | throughput | errors |"
    );
    let _ = writeln!(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|");
    for r in rows {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.what,
            r.conns,
            r.lat.n,
            ms(r.lat.p50),
            ms(r.lat.p95),
            ms(r.lat.p99),
            ms(r.lat.max),
            r.throughput,
            r.errors
        );
    }
    for n in notes {
        let _ = writeln!(w, "\n{n}");
    }
}

/// Prints what the event-stream part saw.
pub fn print_events(idle: Option<&IdleStreams>, fan: Option<&FanOut>) {
    if let Some(i) = idle {
        println!(
            "  events {} of {} idle streams open over {} users in {:.1} s; server RSS {} before, {} with them open (peak {}); gauge {:?}; failures {:?}; ended early {}; released by the server {} after closing",
            i.opened,
            i.requested,
            i.users,
            i.open_time.as_secs_f64(),
            mib(i.rss_before_kib),
            mib(i.rss_open_kib),
            mib(i.peak_kib),
            i.gauge,
            i.failures,
            i.ended_early,
            secs(i.released)
        );
    }
    if let Some(f) = fan {
        println!(
            "  events fan-out of {} writes to {} streams on {} instance(s): same instance p50 {} ms p99 {} ms{}; write p50 {} ms; missed {}, before the response {}",
            f.writes,
            f.streams,
            f.instances,
            ms(f.same.p50),
            ms(f.same.p99),
            f.other
                .as_ref()
                .map(|o| format!("; other instance p50 {} ms p99 {} ms", ms(o.p50), ms(o.p99)))
                .unwrap_or_default(),
            ms(f.write.p50),
            f.missed,
            f.early
        );
    }
}

/// The event-stream section.
pub fn render_events(
    w: &mut String,
    idle: Option<&IdleStreams>,
    fan: Option<&FanOut>,
    server_note: &str,
) {
    let _ = writeln!(w, "\n### Event streams\n");
    let _ = writeln!(w, "{server_note}\n");
    if let Some(i) = idle {
        let per = match (i.rss_before_kib, i.rss_open_kib) {
            (Some(b), Some(a)) if i.opened > 0 => {
                format!("{:.1} KiB", a.saturating_sub(b) as f64 / i.opened as f64)
            }
            _ => "-".into(),
        };
        let failures = if i.failures.is_empty() {
            "none".to_owned()
        } else {
            i.failures
                .iter()
                .map(|(k, v)| format!("{v} x {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            w,
            "**Idle streams.** `GET /events` streams opened 100 at a time, each on its own \
             connection, spread over {} users (at most {STREAMS_PER_USER} per user, each \
             user its own token), then left idle for 2 s before the server's resident memory \
             (`VmRSS`) was read; then the client closed them all. A stream learns that its \
             client left when a write to it fails (the keep-alive comment every 15 s), so the \
             last column follows that interval; the fan-out below waits for it.\n",
            i.users
        );
        let _ = writeln!(
            w,
            "| streams asked | open | opened in | server RSS before | RSS with them open | per stream | peak RSS | open per the server's gauge | failed to open | ended early | gauge at 0 after closing |"
        );
        let _ = writeln!(w, "|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|");
        let _ = writeln!(
            w,
            "| {} | {} | {:.1} s | {} | {} | {per} | {} | {} | {failures} | {} | {} |",
            i.requested,
            i.opened,
            i.open_time.as_secs_f64(),
            mib(i.rss_before_kib),
            mib(i.rss_open_kib),
            mib(i.peak_kib),
            i.gauge.map_or("-".into(), |g| format!("{g:.0}")),
            i.ended_early,
            secs(i.released)
        );
    }
    if let Some(f) = fan {
        let _ = writeln!(
            w,
            "\n**Fan-out.** One user with {} open streams{}; one writer patches one of its \
             tasks through the first instance, {} times one after another (after {FANOUT_WARMUP} \
             unmeasured writes), each once every stream has received the last. Measured per \
             write and stream: from the moment the writer has read the write's response to the \
             moment the stream received the `task.updated` event carrying the version that \
             response gave. {} of {} deliveries arrived before the writer had read its response \
             (counted as 0 ms there); the rows \"from the request\" count from the moment the \
             write was sent instead, its own round trip included: the two bound the delivery \
             time. {} did not arrive within {} s.\n",
            f.streams,
            if f.instances > 1 {
                format!(
                    ", spread evenly over {} server instances sharing the database",
                    f.instances
                )
            } else {
                " on one server instance".to_owned()
            },
            f.writes,
            f.early,
            f.same.n + f.other.as_ref().map_or(0, |o| o.n),
            f.missed,
            FANOUT_WAIT.as_secs()
        );
        let _ = writeln!(
            w,
            "| deliveries | streams | measured | p50 ms | p95 ms | p99 ms | max ms |"
        );
        let _ = writeln!(w, "|---|--:|--:|--:|--:|--:|--:|");
        let row = |w: &mut String, what: &str, streams: usize, s: &Series| {
            let _ = writeln!(
                w,
                "| {what} | {streams} | {} | {} | {} | **{}** | {} |",
                s.n,
                ms(s.p50),
                ms(s.p95),
                ms(s.p99),
                ms(s.max)
            );
        };
        let on_first = f.streams.div_ceil(f.instances.max(1));
        row(
            w,
            "to streams on the writing instance, from the response",
            on_first,
            &f.same,
        );
        if let Some(o) = &f.other {
            row(
                w,
                "to streams on the other instance (PostgreSQL `NOTIFY`), from the response",
                f.streams - on_first,
                o,
            );
        }
        row(
            w,
            "to streams on the writing instance, from the request",
            on_first,
            &f.same_from_send,
        );
        if let Some(o) = &f.other_from_send {
            row(
                w,
                "to streams on the other instance, from the request",
                f.streams - on_first,
                o,
            );
        }
        let _ = writeln!(
            w,
            "| (the write itself: request to response) | - | {} | {} | {} | {} | {} |",
            f.write.n,
            ms(f.write.p50),
            ms(f.write.p95),
            ms(f.write.p99),
            ms(f.write.max)
        );
    }
}

/// Prints what the reminders part saw.
pub fn print_reminders(r: &Reminders) {
    println!(
        "  reminders {} due at one second on {} instances: first fired +{}, half +{}, 99% +{}, all +{}; fired {} skipped {} pending {} early {}; announced per instance {:?}; {}",
        r.n,
        r.instances,
        secs(r.first),
        secs(r.half),
        secs(r.p99),
        secs(r.all),
        r.fired,
        r.skipped,
        r.pending,
        r.early,
        r.announced,
        if r.exactly_once() {
            "each fired exactly once"
        } else {
            "NOT exactly once"
        }
    );
}

/// The reminders section.
pub fn render_reminders(w: &mut String, r: &Reminders, server_note: &str) {
    let _ = writeln!(w, "\n### Reminders, {} instances\n", r.instances);
    let announced: Vec<String> = r
        .announced
        .iter()
        .map(|a| a.map_or("-".into(), |v| format!("{v:.0}")))
        .collect();
    let _ = writeln!(
        w,
        "{server_note} {} tasks, each with one reminder `at` the same whole second, were created \
         through `todo_store` (batches of 100) in {:.1} s, {:.1} s before that second; both \
         instances' schedulers (`Store::run_reminder_scheduler`, up to 500 a round) then fired \
         them. The `reminders` table was polled every 10 ms from half a second before the due \
         second (a reminder in state 1 has fired: claimed and marked in one committed \
         transaction); times are from the due second to the first poll that saw the share \
         fired. Exactly once: every row in state fired, none skipped or pending, none fired \
         early, and the instances' `todo_reminders_fired_total` counters (each reminder handed \
         out is counted once, by the instance that claimed it) add up to the number set.\n",
        r.n,
        r.setup.as_secs_f64(),
        r.lead.as_secs_f64()
    );
    let _ = writeln!(
        w,
        "| reminders | first fired | half | 99 % | all fired | fired / skipped / pending | fired per instance | exactly once |"
    );
    let _ = writeln!(w, "|--:|--:|--:|--:|--:|--:|--:|---|");
    let _ = writeln!(
        w,
        "| {} | +{} | +{} | +{} | **+{}** | {} / {} / {} | {} | {} |",
        r.n,
        secs(r.first),
        secs(r.half),
        secs(r.p99),
        secs(r.all),
        r.fired,
        r.skipped,
        r.pending,
        announced.join(" + "),
        if r.exactly_once() { "✓" } else { "✗" }
    );
    let target = Duration::from_secs(5);
    let _ = writeln!(
        w,
        "\nTarget: all fired within {} s of their time: {}.",
        target.as_secs(),
        match r.all {
            Some(t) if t <= target => format!("✓ ({:.2} s)", t.as_secs_f64()),
            Some(t) => format!("✗ ({:.2} s)", t.as_secs_f64()),
            None => "✗ (not all fired within 60 s)".to_owned(),
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.push(b": keep-alive\n\nid: 1\nevent: task.upd").is_empty());
        let e = p.push(b"ated\ndata: {\"task\":{}}\n\nid: 2\r\nevent: task.created\r\ndata: a\r\ndata: b\r\n\r\n");
        assert_eq!(
            e,
            [
                SseEvent {
                    event: "task.updated".into(),
                    data: "{\"task\":{}}".into()
                },
                SseEvent {
                    event: "task.created".into(),
                    data: "a\nb".into()
                }
            ]
        );
        assert!(p.push(b"").is_empty());
    }

    #[test]
    fn metrics_add_up_over_label_sets() {
        let text = "# HELP todo_reminders_fired_total x\n# TYPE todo_reminders_fired_total counter\n\
                    todo_reminders_fired_total 12\n\
                    todo_http_event_streams_open{instance=\"a\"} 3\n\
                    todo_http_event_streams_open{instance=\"b\"} 4.5\n\
                    todo_http_event_streams_open_other 100\n";
        assert_eq!(metric_sum(text, "todo_reminders_fired_total"), Some(12.0));
        assert_eq!(metric_sum(text, "todo_http_event_streams_open"), Some(7.5));
        assert_eq!(metric_sum(text, "absent"), None);
    }

    #[test]
    fn tokens_are_escaped_for_the_query() {
        assert_eq!(query_escape("aZ09-._~"), "aZ09-._~");
        assert_eq!(query_escape("a+b/c=="), "a%2Bb%2Fc%3D%3D");
    }

    #[test]
    fn pages_are_counted() {
        let p = parse_page(
            br#"{"data":{"tasks":[{},{}],"lists":[{}],"deleted":[]},"meta":{"next":"t","has_more":true}}"#,
        )
        .unwrap();
        assert_eq!((p.records, p.next.as_str(), p.has_more), (3, "t", true));
        assert!(parse_page(b"{}").is_err());
    }

    #[test]
    fn exactly_once_needs_every_count_to_agree() {
        let mut r = Reminders {
            n: 10,
            fired: 10,
            announced: vec![Some(6.0), Some(4.0)],
            ..Reminders::default()
        };
        assert!(r.exactly_once());
        r.announced = vec![Some(6.0), Some(5.0)];
        assert!(!r.exactly_once(), "one handed out twice");
        r.announced = vec![Some(6.0), None];
        assert!(!r.exactly_once(), "an instance unreadable");
    }
}
