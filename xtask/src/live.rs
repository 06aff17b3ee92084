//! The parts of `cargo xtask bench` about keeping clients in step, measured over HTTP against the
//! release server like the other rows:
//!
//! - **sync** (`--only sync`): the heavy user's initial sync (`GET /changes` without `since`,
//!   paged at 1,000 records until `has_more` is false), an incremental sync after a few writes,
//!   and `POST /batch` of 100 creates (run by `bench.rs` through the load generator);
//! - **events** (`--only events`): thousands of idle `GET /events` streams spread over many
//!   users (the server's memory with them open), then the fan-out: many users each holding one
//!   stream while an open-loop writer sends creates and patches for random ones of them at a
//!   fixed rate, and each write's commit-to-receipt latency on its user's stream; on two server
//!   instances sharing a PostgreSQL database (streams and writes alternating over them, so
//!   about half the events cross through `NOTIFY`), on one on SQLite;
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
/// How long the fan-out waits for a write's event after its response before counting it
/// missed.
pub const FANOUT_WAIT: Duration = Duration::from_secs(5);
/// Keep-alive connections of the fan-out's writer, alternating over the instances: at 1,000
/// writes/s each sends one write every 128 ms, so a write may take that long before its
/// connection falls behind schedule.
pub const FANOUT_CONNECTIONS: usize = 128;
/// A fan-out write sent later than this after its scheduled time counts as late.
pub const FANOUT_LATE: Duration = Duration::from_millis(10);

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

/// [`open_stream`], tried up to 3 times 200 ms apart; the last failure.
async fn open_retrying(addr: SocketAddr, user: &User) -> Result<OpenStream, String> {
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        match open_stream(addr, user).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
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
                tokio::spawn(async move { open_retrying(addr, &user).await })
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

/// The sizes of [`fan_out`].
#[derive(Debug, Clone, Copy)]
pub struct FanOutSizes {
    /// Users, each holding one stream.
    pub users: usize,
    /// Writes per second, all instances together.
    pub rate: f64,
    /// How long the writes arrive.
    pub run_for: Duration,
}

/// What [`fan_out`] saw.
#[derive(Debug, Default)]
pub struct FanOut {
    /// Server instances the streams and the writes alternate over.
    pub instances: usize,
    /// Users with one stream each.
    pub users: usize,
    /// Of them, users with no seeded task (minted for the run), whose writes are all creates.
    pub minted: usize,
    /// Target arrival rate, writes per second.
    pub rate: f64,
    /// The window the writes were scheduled over.
    pub window: Duration,
    /// Keep-alive connections of the writer, alternating over the instances.
    pub connections: usize,
    /// Writes scheduled in the window.
    pub scheduled: usize,
    /// Writes answered 2xx (each with the task's id, version and `updated_at`).
    pub written: usize,
    /// Of them, creates (the rest patches).
    pub creates: usize,
    /// Writes answered per second: `written` over the time from the first scheduled send to
    /// the last response.
    pub achieved: f64,
    /// Writes sent more than [`FANOUT_LATE`] after their scheduled time (the writer's pool
    /// was behind).
    pub late: u64,
    /// Failed writes by kind.
    pub errors: BTreeMap<String, u64>,
    /// From the write's `updated_at` (the server's clock when it began the write) to the
    /// receipt of its event on the user's stream (this machine's clock), every delivery.
    pub commit: Series,
    /// The same for the streams on the instance that took the write.
    pub same: Series,
    /// The same for the streams on the other instance (PostgreSQL `NOTIFY`); `None` with one
    /// instance.
    pub other: Option<Series>,
    /// From the moment the writer read the response to the receipt (0 when the event came
    /// first).
    pub from_response: Series,
    /// Deliveries that arrived before the writer had read the response.
    pub early: u64,
    /// Writes whose event did not arrive within [`FANOUT_WAIT`] of the response.
    pub missed: u64,
    /// The writes' own latency, from the scheduled send time to the response read (the open
    /// loop's: a writer behind schedule charges its delay to the write).
    pub write: Series,
    /// Streams that ended before the run was over.
    pub ended_early: usize,
    /// Time to open every stream (100 at a time).
    pub open_time: Duration,
    /// CPU use of each instance over the window, % of one core.
    pub server_cpu: Vec<Option<f64>>,
    /// CPU use of the PostgreSQL backends of the database over the window, % of one core.
    pub db_cpu: Option<f64>,
    /// CPU use of this process (the writer and the stream readers), % of one core.
    pub loader_cpu: Option<f64>,
}

/// An event of a task seen on a user's stream.
#[derive(Debug, Clone, Copy)]
struct Receipt {
    /// Index of the user (of the stream).
    user: usize,
    id: Uuid,
    version: i64,
    /// Wall clock at receipt, microseconds since the epoch.
    wall_us: i64,
    at: Instant,
}

/// A write the server answered.
#[derive(Debug, Clone, Copy)]
struct Written {
    user: usize,
    /// The instance that took it.
    instance: usize,
    id: Uuid,
    version: i64,
    /// The task's `updated_at`, microseconds since the epoch.
    updated_us: i64,
    /// When it was scheduled to be sent.
    intended: Instant,
    /// When the writer read the response.
    responded: Instant,
}

/// The deliveries of `writes` among `receipts`: for each write, the first event on its user's
/// stream with its task and its version or a later one (an event carries the task as it was
/// when the stream read it, so a later write may stand in for an earlier one).
#[derive(Debug, Default)]
struct Deliveries {
    commit: Vec<u64>,
    same: Vec<u64>,
    other: Vec<u64>,
    from_response: Vec<u64>,
    early: u64,
    missed: u64,
}

fn match_deliveries(
    writes: &[Written],
    receipts: &mut [Receipt],
    instances: usize,
    wait: Duration,
) -> Deliveries {
    receipts.sort_by_key(|r| r.at);
    let mut by_task: std::collections::HashMap<(usize, Uuid), Vec<&Receipt>> =
        std::collections::HashMap::new();
    for r in receipts.iter() {
        by_task.entry((r.user, r.id)).or_default().push(r);
    }
    let mut out = Deliveries::default();
    for w in writes {
        let got = by_task
            .get(&(w.user, w.id))
            .and_then(|rs| rs.iter().find(|r| r.version >= w.version))
            .filter(|r| r.at <= w.responded + wait);
        let Some(r) = got else {
            out.missed += 1;
            continue;
        };
        let commit = (r.wall_us - w.updated_us).max(0) as u64 * 1_000;
        out.commit.push(commit);
        if w.instance == w.user % instances.max(1) {
            out.same.push(commit);
        } else {
            out.other.push(commit);
        }
        if r.at < w.responded {
            out.early += 1;
        }
        out.from_response
            .push(r.at.saturating_duration_since(w.responded).as_nanos() as u64);
    }
    out
}

/// A write of the fan-out: a create (`create`) or a merge patch of a random seeded task of
/// `user`. Its id, version and `updated_at` (µs) from the response; `Ok(Err(status))` when
/// the server answered other than 2xx.
async fn fan_write(
    sender: &mut Sender,
    addr: SocketAddr,
    user: &User,
    create: bool,
    rng: &mut Gen,
) -> Result<Result<(Uuid, i64, i64), u16>, String> {
    let body = serde_json::json!({ "title": rng.title() }).to_string();
    let req = if create {
        load::user_request(
            addr,
            user,
            Method::POST,
            &format!("/api/{}/tasks", user.id),
            Some(("application/json", body)),
        )
    } else {
        let id = user.task_ids[rng.below(user.task_ids.len())];
        load::user_request(
            addr,
            user,
            Method::PATCH,
            &format!("/api/{}/tasks/{id}", user.id),
            Some(("application/merge-patch+json", body)),
        )
    };
    let (status, body) = load::exchange(sender, req).await?;
    if !(200..300).contains(&status) {
        return Ok(Err(status));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("write body: {e}"))?;
    let t = if v["data"].is_object() {
        &v["data"]
    } else {
        &v
    };
    let id = t["id"].as_str().and_then(|s| s.parse().ok());
    let updated = t["updated_at"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok());
    match (id, t["version"].as_i64(), updated) {
        (Some(id), Some(version), Some(at)) => Ok(Ok((id, version, at.timestamp_micros()))),
        _ => Err("write body without id, version or updated_at".into()),
    }
}

/// What one connection of the fan-out writer did.
#[derive(Debug, Default)]
struct WriterOut {
    scheduled: usize,
    creates: usize,
    late: u64,
    written: Vec<Written>,
    errors: BTreeMap<String, u64>,
}

/// One keep-alive connection of the open-loop writer: of the writes scheduled every
/// `1 / rate` s from `start` until `end`, it sends those numbered `c`, `c + pool`,
/// `c + 2 pool`, … to `addr` (instance `instance`), each for a random one of `users`, at its
/// scheduled time or as soon as the last is answered when behind.
#[allow(clippy::too_many_arguments)]
async fn fan_writer(
    c: usize,
    pool: usize,
    addr: SocketAddr,
    instance: usize,
    users: Arc<[Arc<User>]>,
    mut sender: Option<Sender>,
    rate: f64,
    (start, end): (Instant, Instant),
) -> WriterOut {
    let mut rng = Gen::new(0xfa_0000 + c as u64);
    let mut out = WriterOut::default();
    let give_up = end + end.saturating_duration_since(start);
    let mut i = c;
    loop {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        if intended >= end {
            break;
        }
        i += pool;
        tokio::time::sleep_until(intended.into()).await;
        out.scheduled += 1;
        let now = Instant::now();
        // Far behind schedule (the server slower than the arrival rate), the rest would take
        // ever longer to drain: past twice the window it is counted as not sent.
        if now > give_up {
            *out.errors
                .entry("not sent: over 1 window behind schedule".into())
                .or_default() += 1;
            continue;
        }
        if now > intended + FANOUT_LATE {
            out.late += 1;
        }
        if sender.is_none() {
            match load::connect(addr).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    *out.errors.entry(e).or_default() += 1;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let u = rng.below(users.len());
        let user = &users[u];
        let create = user.task_ids.is_empty() || rng.chance(0.5);
        match fan_write(s, addr, user, create, &mut rng).await {
            Ok(Ok((id, version, updated_us))) => {
                out.creates += usize::from(create);
                out.written.push(Written {
                    user: u,
                    instance,
                    id,
                    version,
                    updated_us,
                    intended,
                    responded: Instant::now(),
                });
            }
            Ok(Err(status)) => *out.errors.entry(format!("HTTP {status}")).or_default() += 1,
            Err(e) => {
                sender = None;
                *out.errors.entry(e).or_default() += 1;
            }
        }
    }
    out
}

/// The fan-out: each of `users` opens one `GET /events` stream, user `u`'s on
/// `addrs[u % addrs.len()]` (100 opened at a time); after one unmeasured write through each
/// instance to a stream on another (so every instance's listener is up), an open-loop writer of
/// [`FANOUT_CONNECTIONS`] keep-alive connections sends `sizes.rate` writes per second for
/// `sizes.run_for`, write `i` to `addrs[i % addrs.len()]`, each a create or a merge patch (half
/// each; creates only for users without seeded tasks) for a random one of `users`. Each write's
/// delivery is timed from its `updated_at` to the receipt of its task's event, at its version
/// or later, on its user's stream; one not received within [`FANOUT_WAIT`] of its response is
/// missed. `pids` are the instances' processes and `url` the database (for CPU use).
pub async fn fan_out(
    addrs: &[SocketAddr],
    pids: &[u32],
    url: &str,
    users: &[Arc<User>],
    sizes: FanOutSizes,
) -> Result<FanOut, String> {
    let n = addrs.len();
    if n == 0 || users.is_empty() || sizes.rate <= 0.0 {
        return Err("no instance, no users or no rate".into());
    }
    let users: Arc<[Arc<User>]> = users.iter().cloned().collect();
    let mut out = FanOut {
        instances: addrs.len(),
        users: users.len(),
        minted: users.iter().filter(|u| u.task_ids.is_empty()).count(),
        rate: sizes.rate,
        window: sizes.run_for,
        connections: FANOUT_CONNECTIONS,
        ..FanOut::default()
    };
    // The streams.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<Receipt>();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut readers = Vec::with_capacity(users.len());
    let t0 = Instant::now();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let indexes: Vec<usize> = (0..users.len()).collect();
    for wave in indexes.chunks(100) {
        let opening: Vec<_> = wave
            .iter()
            .map(|&u| {
                let (addr, user) = (addrs[u % n], Arc::clone(&users[u]));
                tokio::spawn(async move { (u, open_retrying(addr, &user).await) })
            })
            .collect();
        for o in opening {
            match o.await {
                Ok((u, Ok(s))) => {
                    let (tx, mut stop) = (seen_tx.clone(), stop_rx.clone());
                    readers.push(tokio::spawn(async move {
                        let OpenStream { _sender, mut body } = s;
                        let mut parser = SseParser::default();
                        loop {
                            let frame = tokio::select! {
                                _ = stop.wait_for(|s| *s) => return false,
                                f = body.frame() => f,
                            };
                            let Some(Ok(frame)) = frame else { return true };
                            let Ok(data) = frame.into_data() else {
                                continue;
                            };
                            let (at, wall_us) = (Instant::now(), Utc::now().timestamp_micros());
                            for e in parser.push(&data) {
                                if e.event != "task.updated" && e.event != "task.created" {
                                    continue;
                                }
                                let Ok(v) = serde_json::from_str::<serde_json::Value>(&e.data)
                                else {
                                    continue;
                                };
                                let id = v["task"]["id"].as_str().and_then(|s| s.parse().ok());
                                if let (Some(id), Some(version)) =
                                    (id, v["task"]["version"].as_i64())
                                {
                                    let _ = tx.send(Receipt {
                                        user: u,
                                        id,
                                        version,
                                        wall_us,
                                        at,
                                    });
                                }
                            }
                        }
                    }));
                }
                Ok((_, Err(e))) => *failures.entry(e).or_default() += 1,
                Err(e) => *failures.entry(format!("task: {e}")).or_default() += 1,
            }
        }
    }
    drop(seen_tx);
    out.open_time = t0.elapsed();
    if !failures.is_empty() {
        stop_readers(&stop_tx, readers).await;
        return Err(format!(
            "{} of {} streams could not be opened: {failures:?}",
            failures.values().sum::<u64>(),
            users.len()
        ));
    }
    // Warm-up: a create through each instance for a user whose stream is on the next one,
    // waited for (past the streams' 15-second fallback read, so it always arrives).
    let warm_up = async {
        let mut rng = Gen::new(0xfa_0001);
        for (a, &addr) in addrs.iter().enumerate() {
            let u = (a + 1) % n % users.len();
            let mut sender = load::connect(addr).await?;
            let (id, version, _) = fan_write(&mut sender, addr, &users[u], true, &mut rng)
                .await?
                .map_err(|s| format!("warm-up write: HTTP {s}"))?;
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match tokio::time::timeout_at(deadline.into(), seen_rx.recv()).await {
                    Ok(Some(r)) if r.user == u && r.id == id && r.version >= version => break,
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => {
                        return Err(format!(
                            "the warm-up write through instance {a} did not reach the stream \
                             on instance {} within 20 s",
                            (a + 1) % n
                        ));
                    }
                }
            }
        }
        Ok::<_, String>(())
    };
    if let Err(e) = warm_up.await {
        stop_readers(&stop_tx, readers).await;
        return Err(e);
    }
    let collector = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(r) = seen_rx.recv().await {
            all.push(r);
        }
        all
    });
    // The writer's pool, connected before the window opens.
    let pool = FANOUT_CONNECTIONS;
    let mut senders = Vec::with_capacity(pool);
    for c in 0..pool {
        senders.push(load::connect(addrs[c % n]).await.ok());
    }
    let cpu = |pids: &[u32]| {
        pids.iter()
            .map(|p| crate::bench::cpu_time(&p.to_string()))
            .collect::<Vec<_>>()
    };
    let (server0, db0, own0) = (
        cpu(pids),
        crate::bench::backend_cpu(url).await,
        crate::bench::cpu_time("self"),
    );
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + sizes.run_for;
    let writers: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(c, sender)| {
            let users = Arc::clone(&users);
            tokio::spawn(fan_writer(
                c,
                pool,
                addrs[c % n],
                c % n,
                users,
                sender,
                sizes.rate,
                (start, end),
            ))
        })
        .collect();
    let mut written = Vec::new();
    for w in writers {
        let w = w.await.map_err(|e| format!("fan-out writer: {e}"))?;
        out.scheduled += w.scheduled;
        out.creates += w.creates;
        out.late += w.late;
        written.extend(w.written);
        for (k, v) in w.errors {
            *out.errors.entry(k).or_default() += v;
        }
    }
    let wall = start.elapsed();
    let share = |d: Option<Duration>| d.map(|d| 100.0 * d.as_secs_f64() / wall.as_secs_f64());
    out.server_cpu = cpu(pids)
        .into_iter()
        .zip(server0)
        .map(|(a, b)| share(a?.checked_sub(b?)))
        .collect();
    out.loader_cpu = share(crate::bench::cpu_time("self").and_then(|a| a.checked_sub(own0?)));
    if let Some(before) = db0
        && let Some(after) = crate::bench::backend_cpu(url).await
    {
        out.db_cpu = share(Some(
            after
                .iter()
                .map(|(pid, t)| t.saturating_sub(before.get(pid).copied().unwrap_or_default()))
                .sum(),
        ));
    }
    let last = written.iter().map(|w| w.responded).max().unwrap_or(start);
    out.written = written.len();
    out.achieved = written.len() as f64
        / last
            .saturating_duration_since(start)
            .as_secs_f64()
            .max(1e-9);
    out.write = Series::of(
        written
            .iter()
            .map(|w| w.responded.saturating_duration_since(w.intended).as_nanos() as u64)
            .collect(),
    );
    // Every event has had its wait.
    tokio::time::sleep_until((last + FANOUT_WAIT).into()).await;
    out.ended_early = stop_readers(&stop_tx, readers).await;
    let mut receipts = collector
        .await
        .map_err(|e| format!("fan-out collector: {e}"))?;
    let d = match_deliveries(&written, &mut receipts, n, FANOUT_WAIT);
    out.commit = Series::of(d.commit);
    out.same = Series::of(d.same);
    out.other = (n > 1).then(|| Series::of(d.other));
    out.from_response = Series::of(d.from_response);
    out.early = d.early;
    out.missed = d.missed;
    Ok(out)
}

/// Stops the fan-out's stream readers; how many had ended before.
async fn stop_readers(
    stop: &tokio::sync::watch::Sender<bool>,
    readers: Vec<tokio::task::JoinHandle<bool>>,
) -> usize {
    let _ = stop.send(true);
    let mut ended = 0;
    for r in readers {
        ended += usize::from(r.await.unwrap_or(true));
    }
    ended
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
            "  events fan-out to {} users' streams on {} instance(s): {} writes scheduled at {:.0}/s over {:.1} s, {} answered ({:.0}/s), {} late, errors {:?}; commit to receipt p50 {} ms p95 {} ms p99 {} ms max {} ms{}; from the response p50 {} ms p99 {} ms ({} early); write p50 {} ms p99 {} ms; missed {}, streams ended early {}; CPU servers {:?} db {:?} loader {:?}",
            f.users,
            f.instances,
            f.scheduled,
            f.rate,
            f.window.as_secs_f64(),
            f.written,
            f.achieved,
            f.late,
            f.errors,
            ms(f.commit.p50),
            ms(f.commit.p95),
            ms(f.commit.p99),
            ms(f.commit.max),
            f.other
                .as_ref()
                .map(|o| format!(
                    " (same instance p99 {} ms, other instance p99 {} ms)",
                    ms(f.same.p99),
                    ms(o.p99)
                ))
                .unwrap_or_default(),
            ms(f.from_response.p50),
            ms(f.from_response.p99),
            f.early,
            ms(f.write.p50),
            ms(f.write.p99),
            f.missed,
            f.ended_early,
            f.server_cpu,
            f.db_cpu,
            f.loader_cpu
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
        render_fan_out(w, f);
    }
}

/// The fan-out's paragraph, table and target line.
fn render_fan_out(w: &mut String, f: &FanOut) {
    let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0} %"));
    let errors = if f.errors.is_empty() {
        "none".to_owned()
    } else {
        f.errors
            .iter()
            .map(|(k, v)| format!("{v} x {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        w,
        "\n**Fan-out.** {} users{} each hold one `GET /events` stream{}. After {}, an open-loop \
         writer of {} keep-alive connections schedules {:.0} writes/s for {:.1} s{}, each a \
         create or a merge patch of a title (half each) for a random one of those users; a write \
         that cannot go out at its time (its connection still waiting for the last response) \
         goes out when it can and counts as late. **Commit to receipt**: from the task's \
         `updated_at` in the write's response (the server's clock when it began the write, so \
         the write's own transaction is included) to the moment this process read the event \
         carrying that task at that version or later from the user's stream (same machine, same \
         clock); \"from the response\" counts from the moment the writer read the response \
         instead (0 when the event came first): the two bound the delivery time. A write whose \
         event did not arrive within {} s of its response is missed.\n",
        f.users,
        if f.minted > 0 {
            format!(
                " ({} of them minted for this run beside the seeded ones, with no tasks: \
                 their writes are creates)",
                f.minted
            )
        } else {
            String::new()
        },
        if f.instances > 1 {
            format!(
                ", alternating over {} server instances sharing the database",
                f.instances
            )
        } else {
            " on one server instance".to_owned()
        },
        if f.instances > 1 {
            "one unmeasured write through each instance to a stream on another (so every \
             instance's change listener is up)"
        } else {
            "one unmeasured write"
        },
        f.connections,
        f.rate,
        f.window.as_secs_f64(),
        if f.instances > 1 {
            ", sent to the instances in turn (so about half the events reach a stream on the \
             other instance, through PostgreSQL `NOTIFY`)"
        } else {
            ""
        },
        FANOUT_WAIT.as_secs()
    );
    let _ = writeln!(
        w,
        "| writes scheduled | answered | achieved rate | creates | late (> {} ms) | missed | streams ended early | failed writes | server CPU | db CPU | loader CPU |",
        FANOUT_LATE.as_millis()
    );
    let _ = writeln!(w, "|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|");
    let _ = writeln!(
        w,
        "| {} | {} | {:.0}/s | {} | {} | {} | {} | {errors} | {} | {} | {} |\n",
        f.scheduled,
        f.written,
        f.achieved,
        f.creates,
        f.late,
        f.missed,
        f.ended_early,
        f.server_cpu
            .iter()
            .map(|c| pct(*c))
            .collect::<Vec<_>>()
            .join(" + "),
        pct(f.db_cpu),
        pct(f.loader_cpu)
    );
    let _ = writeln!(
        w,
        "| delivery | measured | p50 ms | p95 ms | p99 ms | max ms |"
    );
    let _ = writeln!(w, "|---|--:|--:|--:|--:|--:|");
    let row = |w: &mut String, what: &str, s: &Series, bold: bool| {
        let p99 = if bold {
            format!("**{}**", ms(s.p99))
        } else {
            ms(s.p99)
        };
        let _ = writeln!(
            w,
            "| {what} | {} | {} | {} | {p99} | {} |",
            s.n,
            ms(s.p50),
            ms(s.p95),
            ms(s.max)
        );
    };
    row(w, "commit to receipt, every write", &f.commit, true);
    if let Some(o) = &f.other {
        row(
            w,
            "commit to receipt, stream on the instance that took the write",
            &f.same,
            false,
        );
        row(
            w,
            "commit to receipt, stream on the other instance (PostgreSQL `NOTIFY`)",
            o,
            false,
        );
    }
    row(
        w,
        &format!(
            "response to receipt, every write ({} events came first)",
            f.early
        ),
        &f.from_response,
        false,
    );
    row(
        w,
        "(the write itself: scheduled send to response)",
        &f.write,
        false,
    );
    let target = Duration::from_millis(100);
    let verdict = if f.commit.n == 0 {
        "✗ (nothing delivered)".to_owned()
    } else {
        let p99 = Duration::from_nanos(f.commit.p99);
        let ok = p99 < target && f.missed == 0 && f.errors.is_empty();
        format!(
            "{} (p99 {} ms{}{})",
            if ok { "✓" } else { "✗" },
            ms(f.commit.p99),
            if f.missed > 0 {
                format!(", {} missed", f.missed)
            } else {
                String::new()
            },
            if f.errors.is_empty() {
                String::new()
            } else {
                format!(", {} failed writes", f.errors.values().sum::<u64>())
            }
        )
    };
    let _ = writeln!(
        w,
        "\nTarget: {} users' streams, writes at {:.0}/s through {}, commit to receipt p99 under \
         {} ms, none missed: {verdict}; the writes were answered at {:.0}/s.",
        f.users,
        f.rate,
        match f.instances {
            1 => "one instance".to_owned(),
            2 => "two instances".to_owned(),
            k => format!("{k} instances"),
        },
        target.as_millis(),
        f.achieved
    );
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
    fn deliveries_match_by_user_task_and_version() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let write = |user, instance, id, version, updated_us, responded| Written {
            user,
            instance,
            id,
            version,
            updated_us,
            intended: t0,
            responded,
        };
        let writes = [
            // User 0's stream is on instance 0: same instance; received 30 ms after commit.
            write(0, 0, a, 2, 1_000_000, ms(10)),
            // Version 3 of the same task: only a later event at version 4 stands in for it.
            write(0, 1, a, 3, 1_010_000, ms(20)),
            // User 1's stream is on instance 1: other instance; event before the response.
            write(1, 0, b, 1, 1_000_000, ms(50)),
            // Never received.
            write(1, 1, b, 2, 1_100_000, ms(100)),
        ];
        let receipt = |user, id, version, wall_us, at| Receipt {
            user,
            id,
            version,
            wall_us,
            at,
        };
        let mut receipts = vec![
            receipt(0, a, 4, 1_050_000, ms(60)),
            receipt(0, a, 2, 1_030_000, ms(40)),
            receipt(1, b, 1, 1_020_000, ms(45)),
            // The right task on the wrong user's stream does not count.
            receipt(0, b, 2, 1_120_000, ms(120)),
            // Too late.
            receipt(1, b, 2, 1_120_000, ms(100) + Duration::from_secs(6)),
        ];
        let d = match_deliveries(&writes, &mut receipts, 2, Duration::from_secs(5));
        assert_eq!(d.commit, [30_000_000, 40_000_000, 20_000_000]);
        assert_eq!(d.same, [30_000_000]);
        assert_eq!(d.other, [40_000_000, 20_000_000]);
        assert_eq!(d.from_response, [30_000_000, 40_000_000, 0]);
        assert_eq!((d.early, d.missed), (1, 1));
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
