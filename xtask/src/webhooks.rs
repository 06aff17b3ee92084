//! The `webhooks` part of `cargo xtask bench` (`--only webhooks`): how fast the webhook sender
//! delivers to a local receiver, on both backends.
//!
//! - A [`Receiver`] in this process (hyper's HTTP/1 server on 127.0.0.1, on a thread of its
//!   own) answers 204 to every signed request, counting requests by `webhook-id` and reading
//!   each body's `timestamp`; it checks nothing beyond the presence of `webhook-id` and
//!   `webhook-signature`.
//! - Some seeded users each get one webhook to it (`events: ["task.created"]`, so one create is
//!   one delivery), with the policy `serve` has under `TODO_WEBHOOK_ALLOW_HTTP=true` and
//!   `TODO_WEBHOOK_ALLOW_PRIVATE=true`.
//! - **Drain** ([`drain`]): deliveries are queued by creating tasks through the store with no
//!   sender running, then `Store::run_webhook_sender` starts and is timed until the receiver
//!   has every one and `pending_webhook_deliveries()` is 0; the ids received are compared with
//!   those queued.
//! - **Live** ([`live`]): with the sender running, tasks are created at a fixed rate; each
//!   delivery's lag is from the body's `timestamp` (the time the write gave its change in its
//!   transaction, milliseconds) to its receipt.
//!
//! The sender runs in this process, on a store of its own connected to the benchmark database:
//! the same code `serve` runs, with `todo_store::webhook::default_render`. Every function here
//! measures and returns numbers; `bench.rs` decides what runs, and renders with [`render`].

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sqlx::Connection;
use todo_store::webhook::{
    AttemptOutcome, PER_WEBHOOK_CONCURRENCY, SENDER_CONCURRENCY, SENDER_POLL, default_render,
};
use todo_store::{Store, TaskInput, WebhookInput, WebhookPolicy};
use uuid::Uuid;

use crate::live::Series;
use crate::load::User;

/// The receiver's thread, by name (found again in `/proc/self/task` for its CPU time).
const RECEIVER_THREAD: &str = "webhook-recv";
/// The only event type the bench's webhooks ask for.
const EVENT: &str = "task.created";
/// Most creates in flight at once in the live variant.
const LIVE_WRITERS: usize = 64;
/// A live write that starts later than this after its intended time counts as late.
const LATE: Duration = Duration::from_millis(5);
/// The issue's target: deliveries per second to a local receiver.
pub const TARGET_RATE: f64 = 500.0;

/// Sizes of the part.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Users, each with one webhook.
    pub users: usize,
    /// Deliveries queued before the sender starts.
    pub queued: usize,
    /// Creates per second in the live variant.
    pub rate: f64,
    /// How long the live variant writes.
    pub live_for: Duration,
}

impl Sizes {
    /// The full run's sizes, or `--quick`'s.
    pub fn new(quick: bool) -> Self {
        Sizes {
            users: 50,
            queued: if quick { 2_000 } else { 10_000 },
            rate: TARGET_RATE,
            live_for: Duration::from_secs(if quick { 2 } else { 10 }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The receiver.

/// What the receiver saw since it was last emptied.
#[derive(Debug, Default)]
pub struct Received {
    /// Requests answered.
    pub requests: u64,
    /// Requests by `webhook-id`.
    pub ids: HashMap<String, u32>,
    /// Requests without `webhook-id` or `webhook-signature` (answered 400).
    pub unsigned: u64,
    /// Bodies without a readable `timestamp`.
    pub unreadable: u64,
    /// When the first and the last request arrived.
    pub first: Option<Instant>,
    /// See `first`.
    pub last: Option<Instant>,
    /// From each body's `timestamp` to the request's arrival, nanoseconds.
    pub lag_ns: Vec<u64>,
}

impl Received {
    /// Requests beyond the first of each `webhook-id`.
    pub fn duplicates(&self) -> u64 {
        self.ids
            .values()
            .map(|&n| u64::from(n.saturating_sub(1)))
            .sum()
    }
}

/// A webhook receiver on 127.0.0.1, served by a current-thread runtime on a thread of its own
/// (as a separate receiver would be); stopped when dropped.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<Received>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// Binds a free port and starts serving.
    pub fn start() -> Result<Self, String> {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("receiver: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("receiver: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("receiver: {e}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("receiver: {e}"))?;
        let state = Arc::new(Mutex::new(Received::default()));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name(RECEIVER_THREAD.into())
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    loop {
                        tokio::select! {
                            _ = &mut stopped => break,
                            accepted = listener.accept() => {
                                let Ok((stream, _)) = accepted else { continue };
                                let _ = stream.set_nodelay(true);
                                let state = Arc::clone(&shared);
                                tokio::spawn(async move {
                                    let service = hyper::service::service_fn(move |req| {
                                        receive(req, Arc::clone(&state))
                                    });
                                    let _ = hyper::server::conn::http1::Builder::new()
                                        .serve_connection(TokioIo::new(stream), service)
                                        .await;
                                });
                            }
                        }
                    }
                });
                // Dropping the runtime here ends the connections still open.
            })
            .map_err(|e| format!("receiver thread: {e}"))?;
        Ok(Receiver {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The URL webhooks are given.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Distinct `webhook-id`s received so far.
    pub fn distinct(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ids
            .len()
    }

    /// What it received so far; starts over.
    pub fn take(&self) -> Received {
        std::mem::take(&mut *self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request: 204 when `webhook-id` and `webhook-signature` are present (400 otherwise),
/// after reading the whole body.
async fn receive(
    req: Request<Incoming>,
    state: Arc<Mutex<Received>>,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    let (arrived, wall) = (Instant::now(), Utc::now());
    let id = req
        .headers()
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let signed = req.headers().contains_key("webhook-signature");
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let stamp = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| DateTime::parse_from_rfc3339(v["timestamp"].as_str()?).ok());
    let ok = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.requests += 1;
        s.first.get_or_insert(arrived);
        s.last = Some(arrived);
        match stamp {
            Some(t) => {
                let lag = (wall - t.with_timezone(&Utc))
                    .num_nanoseconds()
                    .unwrap_or(0);
                s.lag_ns.push(lag.max(0) as u64);
            }
            None => s.unreadable += 1,
        }
        match id {
            Some(id) if signed => {
                *s.ids.entry(id).or_default() += 1;
                true
            }
            _ => {
                s.unsigned += 1;
                false
            }
        }
    };
    let mut resp = Response::new(Empty::new());
    *resp.status_mut() = if ok {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok(resp)
}

// ---------------------------------------------------------------------------------------------
// Setup and the sender.

/// The policy `serve` runs with under `TODO_WEBHOOK_ALLOW_HTTP=true` and
/// `TODO_WEBHOOK_ALLOW_PRIVATE=true` (retries at the real schedule).
pub fn policy() -> WebhookPolicy {
    WebhookPolicy {
        allow_http: true,
        allow_private: true,
        retry_scale: 1.0,
    }
}

/// Gives each of `users` one webhook to `url` for [`EVENT`]; returns (user, webhook) pairs.
pub async fn create_webhooks(
    store: &Store,
    users: &[Arc<User>],
    url: &str,
) -> Result<Vec<(String, Uuid)>, String> {
    let mut out = Vec::with_capacity(users.len());
    for u in users {
        let tasks = store.for_user(&u.id).map_err(|e| e.to_string())?;
        let created = tasks
            .create_webhook(WebhookInput {
                url: url.to_owned(),
                events: Some(vec![EVENT.to_owned()]),
                description: Some("bench".into()),
            })
            .await
            .map_err(|e| format!("create webhook for {}: {e}", u.id))?;
        out.push((u.id.clone(), created.webhook.id));
    }
    Ok(out)
}

/// Deletes the webhooks (and so their delivery logs), so later writes queue nothing.
pub async fn delete_webhooks(store: &Store, hooks: &[(String, Uuid)]) -> Result<(), String> {
    for (user, id) in hooks {
        let tasks = store.for_user(user).map_err(|e| e.to_string())?;
        tasks
            .delete_webhook(*id)
            .await
            .map_err(|e| format!("delete webhook of {user}: {e}"))?;
    }
    Ok(())
}

/// Creates `n` tasks, task `i` for `users[i % len]`: one writer per user, each creating its
/// share one after another, so the queued deliveries interleave over the webhooks as many
/// users writing at once would leave them.
async fn queue(store: &Store, users: &[String], n: usize) -> Result<(), String> {
    let writers: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(j, user)| {
            let tasks = store.for_user(user);
            let count = n / users.len() + usize::from(j < n % users.len());
            tokio::spawn(async move {
                let tasks = tasks.map_err(|e| e.to_string())?;
                for k in 0..count {
                    tasks
                        .create(TaskInput::titled(format!("Webhook bench {j}-{k}")))
                        .await
                        .map_err(|e| format!("create: {e}"))?;
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    for w in writers {
        w.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// How the sender's attempts ended, as its `on_outcome` reported them.
#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    retry: AtomicU64,
    failed: AtomicU64,
}

/// Attempts by outcome.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcomes {
    /// Answered 2xx.
    pub delivered: u64,
    /// Failed, to be retried.
    pub retry: u64,
    /// Failed for good.
    pub failed: u64,
}

/// `Store::run_webhook_sender` running on the current runtime until stopped.
struct RunningSender {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    counters: Arc<Counters>,
}

impl RunningSender {
    fn start(store: &Store) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let counters = Arc::new(Counters::default());
        let c = Arc::clone(&counters);
        let store = store.clone();
        let task = tokio::spawn(async move {
            store
                .run_webhook_sender(
                    async {
                        let _ = stopped.await;
                    },
                    Arc::new(default_render),
                    move |o| {
                        let n = match o {
                            AttemptOutcome::Delivered => &c.delivered,
                            AttemptOutcome::Retry => &c.retry,
                            AttemptOutcome::Failed => &c.failed,
                        };
                        n.fetch_add(1, Ordering::Relaxed);
                    },
                )
                .await;
        });
        RunningSender {
            stop,
            task,
            counters,
        }
    }

    /// Waits (up to `limit`) until `n` attempts have ended for good: an attempt leaves the
    /// outbox's pending count before it trims the delivery log and reports its outcome, and
    /// stopping the sender drops attempts still doing so.
    async fn settle(&self, n: u64, limit: Duration) {
        let until = Instant::now() + limit;
        let c = &self.counters;
        while c.delivered.load(Ordering::Relaxed) + c.failed.load(Ordering::Relaxed) < n
            && Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn stop(self) -> Outcomes {
        let _ = self.stop.send(());
        let _ = self.task.await;
        let c = &self.counters;
        Outcomes {
            delivered: c.delivered.load(Ordering::Relaxed),
            retry: c.retry.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }
}

/// The ids of the pending deliveries, read straight from the database.
async fn pending_ids(url: &str) -> Result<HashSet<Uuid>, String> {
    const Q: &str = "SELECT id FROM webhook_deliveries WHERE status = 'pending'";
    let ids: Vec<Uuid> = if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url)
            .await
            .map_err(|e| e.to_string())?;
        let ids = sqlx::query_scalar(Q).fetch_all(&mut c).await;
        let _ = c.close().await;
        ids
    } else {
        let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url).map_err(|e| e.to_string())?;
        let mut c = sqlx::SqliteConnection::connect_with(&opts)
            .await
            .map_err(|e| e.to_string())?;
        let ids = sqlx::query_scalar(Q).fetch_all(&mut c).await;
        let _ = c.close().await;
        ids
    }
    .map_err(|e| format!("pending deliveries: {e}"))?;
    Ok(ids.into_iter().collect())
}

/// CPU time used by this process, its receiver thread and the database, between two readings.
struct Cpu {
    at: Instant,
    process: Option<Duration>,
    receiver: Option<Duration>,
    db: Option<HashMap<i32, Duration>>,
}

/// CPU use over a window, in % of one CPU.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    /// This process less the receiver's thread: the sender (and, live, the writers).
    pub bench: Option<f64>,
    /// The receiver's thread.
    pub receiver: Option<f64>,
    /// The PostgreSQL backends serving the benchmark database.
    pub db: Option<f64>,
}

/// The receiver thread's CPU time, from `/proc/self/task/<tid>/stat`.
fn receiver_cpu() -> Option<Duration> {
    for t in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let name = t.file_name();
        let tid = name.to_string_lossy();
        let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
        if comm.trim() == RECEIVER_THREAD {
            return crate::bench::cpu_time(&format!("self/task/{tid}"));
        }
    }
    None
}

impl Cpu {
    async fn read(url: &str) -> Self {
        Cpu {
            at: Instant::now(),
            process: crate::bench::cpu_time("self"),
            receiver: receiver_cpu(),
            db: crate::bench::backend_cpu(url).await,
        }
    }

    async fn since(self, url: &str) -> CpuUse {
        let now = Cpu::read(url).await;
        let wall = now.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let share = |d: Option<Duration>| d.map(|d| 100.0 * d.as_secs_f64() / wall);
        let receiver = now
            .receiver
            .zip(self.receiver)
            .map(|(a, b)| a.saturating_sub(b));
        let process = now
            .process
            .zip(self.process)
            .map(|(a, b)| a.saturating_sub(b));
        let db = now.db.zip(self.db).map(|(after, before)| {
            after
                .iter()
                .map(|(pid, t)| t.saturating_sub(before.get(pid).copied().unwrap_or_default()))
                .sum::<Duration>()
        });
        CpuUse {
            bench: share(process.map(|p| p.saturating_sub(receiver.unwrap_or_default()))),
            receiver: share(receiver),
            db: share(db),
        }
    }
}

/// How the ids received compare with the ids expected.
#[derive(Debug, Clone, Copy, Default)]
pub struct Check {
    /// Requests answered.
    pub requests: u64,
    /// Distinct `webhook-id`s.
    pub distinct: usize,
    /// Requests beyond the first of an id.
    pub duplicates: u64,
    /// Expected ids never received.
    pub missing: usize,
    /// Ids received that were not expected (drain only: the expected set is known there).
    pub unknown: usize,
    /// Requests without `webhook-id` or `webhook-signature`.
    pub unsigned: u64,
}

impl Check {
    fn of(r: &Received, expected: usize, queued: Option<&HashSet<Uuid>>) -> Self {
        let (missing, unknown) = match queued {
            Some(q) => {
                let got: HashSet<Uuid> = r.ids.keys().filter_map(|k| k.parse().ok()).collect();
                (
                    q.difference(&got).count(),
                    r.ids.len() - got.intersection(q).count(),
                )
            }
            None => (expected.saturating_sub(r.ids.len()), 0),
        };
        Check {
            requests: r.requests,
            distinct: r.ids.len(),
            duplicates: r.duplicates(),
            missing,
            unknown,
            unsigned: r.unsigned,
        }
    }

    /// Every expected delivery arrived exactly once, and nothing else did.
    pub fn exact(&self, expected: usize) -> bool {
        self.distinct == expected
            && self.duplicates == 0
            && self.missing == 0
            && self.unknown == 0
            && self.unsigned == 0
    }
}

// ---------------------------------------------------------------------------------------------
// Drain.

/// What [`drain`] saw.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    /// Deliveries queued.
    pub n: usize,
    /// Webhooks they were spread over.
    pub webhooks: usize,
    /// Time to queue them (creates through the store, one writer per user).
    pub queued_in: Duration,
    /// `pending_webhook_deliveries()` before the sender started.
    pub pending_before: i64,
    /// From the sender's start to the first receipt.
    pub first: Option<Duration>,
    /// From the sender's start to the receipt of the last distinct id.
    pub received: Option<Duration>,
    /// From the sender's start to `pending_webhook_deliveries()` at 0.
    pub drained: Option<Duration>,
    /// Still pending when the wait ended.
    pub pending_after: i64,
    /// The ids received against those queued.
    pub check: Check,
    /// The sender's attempts.
    pub outcomes: Outcomes,
    /// CPU use from the sender's start to the end.
    pub cpu: CpuUse,
}

impl Live {
    /// Creates per second achieved: the successful ones over the time until the last ended.
    pub fn achieved(&self) -> f64 {
        (self.writes as u64 - self.write_errors) as f64 / self.wrote_in.as_secs_f64().max(1e-9)
    }
}

impl Drain {
    /// Deliveries per second, to the receipt of the last.
    pub fn received_rate(&self) -> Option<f64> {
        self.received
            .map(|t| self.n as f64 / t.as_secs_f64().max(1e-9))
    }

    /// Deliveries per second, to the outbox empty (every result recorded).
    pub fn drained_rate(&self) -> Option<f64> {
        self.drained
            .map(|t| self.n as f64 / t.as_secs_f64().max(1e-9))
    }
}

/// Queues `n` deliveries for `hooks` (creates through `store` with no sender running), then
/// starts the sender and times it until `receiver` has them all and the outbox is empty; the
/// ids received are checked against those queued.
pub async fn drain(
    store: &Store,
    url: &str,
    receiver: &Receiver,
    hooks: &[(String, Uuid)],
    n: usize,
) -> Result<Drain, String> {
    let users: Vec<String> = hooks.iter().map(|(u, _)| u.clone()).collect();
    if users.is_empty() {
        return Err("no webhooks".into());
    }
    let mut out = Drain {
        n,
        webhooks: hooks.len(),
        ..Drain::default()
    };
    let t = Instant::now();
    queue(store, &users, n).await?;
    out.queued_in = t.elapsed();
    out.pending_before = store
        .pending_webhook_deliveries()
        .await
        .map_err(|e| e.to_string())?;
    let queued = pending_ids(url).await?;
    if out.pending_before != n as i64 || queued.len() != n {
        return Err(format!(
            "{n} creates queued {} deliveries ({} ids read), not {n}",
            out.pending_before,
            queued.len()
        ));
    }
    receiver.take();
    let cpu = Cpu::read(url).await;
    let started = Instant::now();
    let sender = RunningSender::start(store);
    // A sender that has to retry waits 5 s and more; this is far beyond a healthy one.
    let give_up = started + Duration::from_secs(60).max(Duration::from_millis(20) * n as u32);
    while receiver.distinct() < n && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    loop {
        out.pending_after = store
            .pending_webhook_deliveries()
            .await
            .map_err(|e| e.to_string())?;
        if out.pending_after == 0 {
            out.drained = Some(started.elapsed());
            break;
        }
        if Instant::now() >= give_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sender.settle(n as u64, Duration::from_secs(5)).await;
    out.outcomes = sender.stop().await;
    out.cpu = cpu.since(url).await;
    let r = receiver.take();
    out.first = r.first.map(|f| f.saturating_duration_since(started));
    if r.ids.len() >= n {
        out.received = r.last.map(|l| l.saturating_duration_since(started));
    }
    out.check = Check::of(&r, n, Some(&queued));
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Live.

/// What [`live`] saw.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Creates per second asked for.
    pub rate: f64,
    /// Creates attempted.
    pub writes: usize,
    /// Creates that failed.
    pub write_errors: u64,
    /// Creates that started more than [`LATE`] after their time (all writers busy).
    pub late: u64,
    /// From the first write's intended time to the last write's end.
    pub wrote_in: Duration,
    /// From each delivery's `timestamp` to its receipt.
    pub lag: Series,
    /// From the last write's end to the receipt of the last delivery.
    pub tail: Option<Duration>,
    /// Still pending when the wait ended.
    pub pending_after: i64,
    /// The ids received against the writes that succeeded.
    pub check: Check,
    /// Bodies without a readable `timestamp`.
    pub unreadable: u64,
    /// The sender's attempts.
    pub outcomes: Outcomes,
    /// CPU use over the writes and the wait.
    pub cpu: CpuUse,
}

/// With the sender running, creates tasks for `hooks`' users at `rate` per second for
/// `duration` (task `i` at its own time, for user `i % len`, at most [`LIVE_WRITERS`] in
/// flight), then waits for the receiver to have one delivery per successful create and for
/// the outbox to be empty.
pub async fn live(
    store: &Store,
    url: &str,
    receiver: &Receiver,
    hooks: &[(String, Uuid)],
    rate: f64,
    duration: Duration,
) -> Result<Live, String> {
    if hooks.is_empty() {
        return Err("no webhooks".into());
    }
    let users: Vec<todo_store::UserTasks> = hooks
        .iter()
        .map(|(u, _)| store.for_user(u))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let writes = (rate * duration.as_secs_f64()).round() as usize;
    let mut out = Live {
        rate,
        writes,
        ..Live::default()
    };
    receiver.take();
    let cpu = Cpu::read(url).await;
    let sender = RunningSender::start(store);
    let errors = Arc::new(AtomicU64::new(0));
    let permits = Arc::new(tokio::sync::Semaphore::new(LIVE_WRITERS));
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut running = Vec::with_capacity(writes);
    for i in 0..writes {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        if tokio::time::Instant::now() > due + LATE {
            out.late += 1;
        }
        let tasks = users[i % users.len()].clone();
        let errors = Arc::clone(&errors);
        running.push(tokio::spawn(async move {
            if tasks
                .create(TaskInput::titled(format!("Webhook live {i}")))
                .await
                .is_err()
            {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        }));
    }
    for r in running {
        let _ = r.await;
    }
    let wrote = Instant::now();
    out.wrote_in = start.elapsed();
    out.write_errors = errors.load(Ordering::Relaxed);
    let expected = writes - out.write_errors as usize;
    let give_up = wrote + Duration::from_secs(30);
    while receiver.distinct() < expected && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    loop {
        out.pending_after = store
            .pending_webhook_deliveries()
            .await
            .map_err(|e| e.to_string())?;
        if out.pending_after == 0 || Instant::now() >= give_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sender.settle(expected as u64, Duration::from_secs(5)).await;
    out.outcomes = sender.stop().await;
    out.cpu = cpu.since(url).await;
    let r = receiver.take();
    if r.ids.len() >= expected {
        out.tail = r.last.map(|l| l.saturating_duration_since(wrote));
    }
    out.check = Check::of(&r, expected, None);
    out.unreadable = r.unreadable;
    out.lag = Series::of(r.lag_ns);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Output.

/// Everything the part produced for one backend.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The queued drain.
    pub drain: Option<Drain>,
    /// The live variant.
    pub live: Option<Live>,
    /// Pool size of the sender's store.
    pub pool: u32,
    /// Webhooks, one per user.
    pub webhooks: usize,
}

fn ms(ns: u64) -> String {
    crate::bench::ms(ns)
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

fn rate(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.0}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}%"))
}

/// Most attempts in flight with `webhooks` webhooks.
fn in_flight(webhooks: usize) -> usize {
    SENDER_CONCURRENCY.min(PER_WEBHOOK_CONCURRENCY * webhooks)
}

/// Prints what the part saw.
pub fn print(r: &Report) {
    if let Some(d) = &r.drain {
        println!(
            "  webhooks drain of {} queued over {} webhooks (queued in {:.1} s): first +{}, all received +{}, outbox empty +{}: {} deliveries/s to the last receipt, {} to empty; requests {}, distinct {}, duplicates {}, missing {}, unknown {}, unsigned {}; attempts delivered {} retry {} failed {}; pending after {}; CPU bench {} receiver {} db {}",
            d.n,
            d.webhooks,
            d.queued_in.as_secs_f64(),
            secs(d.first),
            secs(d.received),
            secs(d.drained),
            rate(d.received_rate()),
            rate(d.drained_rate()),
            d.check.requests,
            d.check.distinct,
            d.check.duplicates,
            d.check.missing,
            d.check.unknown,
            d.check.unsigned,
            d.outcomes.delivered,
            d.outcomes.retry,
            d.outcomes.failed,
            d.pending_after,
            pct(d.cpu.bench),
            pct(d.cpu.receiver),
            pct(d.cpu.db),
        );
    }
    if let Some(l) = &r.live {
        println!(
            "  webhooks live: {} creates at {:.0}/s in {:.2} s ({:.0}/s achieved, {} late, {} failed); lag p50 {} ms p95 {} ms p99 {} ms max {} ms over {}; last +{} after the writes; requests {}, distinct {}, duplicates {}, missing {}, unsigned {}; attempts delivered {} retry {} failed {}; pending after {}; CPU bench {} receiver {} db {}",
            l.writes,
            l.rate,
            l.wrote_in.as_secs_f64(),
            l.achieved(),
            l.late,
            l.write_errors,
            ms(l.lag.p50),
            ms(l.lag.p95),
            ms(l.lag.p99),
            ms(l.lag.max),
            l.lag.n,
            secs(l.tail),
            l.check.requests,
            l.check.distinct,
            l.check.duplicates,
            l.check.missing,
            l.check.unsigned,
            l.outcomes.delivered,
            l.outcomes.retry,
            l.outcomes.failed,
            l.pending_after,
            pct(l.cpu.bench),
            pct(l.cpu.receiver),
            pct(l.cpu.db),
        );
    }
}

/// Problems worth listing under the backend's errors.
pub fn problems(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(d) = &r.drain {
        if !d.check.exact(d.n) {
            out.push(format!(
                "webhooks drain: {} distinct of {} queued, {} duplicates, {} missing, {} unknown, {} unsigned",
                d.check.distinct,
                d.n,
                d.check.duplicates,
                d.check.missing,
                d.check.unknown,
                d.check.unsigned
            ));
        }
        if d.outcomes.delivered != d.n as u64 {
            out.push(format!(
                "webhooks drain: the sender reported {} of {} delivered",
                d.outcomes.delivered, d.n
            ));
        }
        if d.drained.is_none() {
            out.push(format!(
                "webhooks drain: {} deliveries still pending when the wait ended",
                d.pending_after
            ));
        }
    }
    if let Some(l) = &r.live {
        let expected = l.writes - l.write_errors as usize;
        if l.write_errors > 0 {
            out.push(format!("webhooks live: {} creates failed", l.write_errors));
        }
        if !l.check.exact(expected) || l.pending_after != 0 {
            out.push(format!(
                "webhooks live: {} distinct of {expected}, {} duplicates, {} unsigned, {} still pending",
                l.check.distinct, l.check.duplicates, l.check.unsigned, l.pending_after
            ));
        }
    }
    out
}

/// The webhooks section.
pub fn render(w: &mut String, r: &Report) {
    let _ = writeln!(w, "\n### Webhooks\n");
    let webhooks = r.webhooks;
    let _ = writeln!(
        w,
        "Sender in the bench process, the same code `serve` runs: `Store::run_webhook_sender` \
         with `todo_store::webhook::default_render`, on a store of its own (pool of {}) connected \
         to the benchmark database, on the bench's 2-worker tokio runtime, with the policy of \
         `TODO_WEBHOOK_ALLOW_HTTP=true` and `TODO_WEBHOOK_ALLOW_PRIVATE=true` (retries at the \
         real schedule). {webhooks} seeded users each have one webhook, `events: \
         [\"{EVENT}\"]`, so one create is one delivery; the sender runs at most {} attempts at \
         once ({SENDER_CONCURRENCY} in all, {PER_WEBHOOK_CONCURRENCY} per webhook). The receiver \
         is hyper's HTTP/1 server on 127.0.0.1 in the same process, on a thread of its own: it \
         reads each body, checks only that `webhook-id` and `webhook-signature` are present and \
         answers 204. `bench CPU` is the bench process less the receiver's thread (the sender, \
         and the writers in the live rows), `receiver CPU` that thread, `db CPU` the PostgreSQL \
         backends of the benchmark database; % of one CPU.\n",
        r.pool,
        in_flight(webhooks),
    );
    if let Some(d) = &r.drain {
        let _ = writeln!(
            w,
            "**Queued, then drained.** {} tasks were created through `todo_store` with no sender \
             running (one writer per user, each creating its share in turn, so the queue \
             interleaves the webhooks: {:.1} s, {:.0} creates/s with the webhook's delivery \
             queued in each write's transaction); then the sender started, and was timed until \
             the receiver had every `webhook-id` and `pending_webhook_deliveries()` was 0 (every \
             result recorded). The ids received are compared with those read from the outbox \
             before the start.\n",
            d.n,
            d.queued_in.as_secs_f64(),
            d.n as f64 / d.queued_in.as_secs_f64().max(1e-9),
        );
        let _ = writeln!(
            w,
            "| queued | webhooks | first received | all received | outbox empty | deliveries/s (to the last receipt) | deliveries/s (to empty) | requests | distinct ids | duplicates | missing / unknown / unsigned | retries / failed | bench CPU | receiver CPU | db CPU |"
        );
        let _ = writeln!(
            w,
            "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
        );
        let _ = writeln!(
            w,
            "| {} | {} | +{} | +{} | +{} | {} | **{}** | {} | {} | {} | {} / {} / {} | {} / {} | {} | {} | {} |",
            d.n,
            d.webhooks,
            secs(d.first),
            secs(d.received),
            secs(d.drained),
            rate(d.received_rate()),
            rate(d.drained_rate()),
            d.check.requests,
            d.check.distinct,
            d.check.duplicates,
            d.check.missing,
            d.check.unknown,
            d.check.unsigned,
            d.outcomes.retry,
            d.outcomes.failed,
            pct(d.cpu.bench),
            pct(d.cpu.receiver),
            pct(d.cpu.db),
        );
    }
    if let Some(l) = &r.live {
        let _ = writeln!(
            w,
            "\n**Live.** With the sender running, {} tasks were created through `todo_store` at \
             {:.0} per second (each at its own time, round-robin over the users, at most \
             {LIVE_WRITERS} in flight; `late`: started more than {} ms after its time). Lag: from \
             the body's `timestamp` (the time the write gave its change, inside its transaction \
             just before the commit; millisecond precision, so up to 1 ms more) to the request's \
             arrival at the receiver. `last after the writes`: from the end of the last create \
             to the last delivery's arrival. A write does not wake the sender: after a round \
             that finds fewer due deliveries than it has free slots it sleeps up to {} ms \
             (`SENDER_POLL`), so a delivery can wait that long by design.\n",
            l.writes,
            l.rate,
            LATE.as_millis(),
            SENDER_POLL.as_millis()
        );
        let _ = writeln!(
            w,
            "| creates/s | achieved | creates | late | failed | deliveries | lag p50 ms | p95 ms | p99 ms | max ms | last after the writes | duplicates | missing | retries / failed | bench CPU | receiver CPU | db CPU |"
        );
        let _ = writeln!(
            w,
            "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
        );
        let _ = writeln!(
            w,
            "| {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | **{}** | {} | {} | {} | {} | {} / {} | {} | {} | {} |",
            l.rate,
            l.achieved(),
            l.writes,
            l.late,
            l.write_errors,
            l.check.distinct,
            ms(l.lag.p50),
            ms(l.lag.p95),
            ms(l.lag.p99),
            ms(l.lag.max),
            secs(l.tail),
            l.check.duplicates,
            l.check.missing,
            l.outcomes.retry,
            l.outcomes.failed,
            pct(l.cpu.bench),
            pct(l.cpu.receiver),
            pct(l.cpu.db),
        );
    }
    if let Some(d) = &r.drain {
        let _ = writeln!(
            w,
            "\nTarget: {TARGET_RATE:.0} deliveries/s or more to a local receiver: {}.",
            match d.drained_rate() {
                Some(x) if x >= TARGET_RATE && d.check.exact(d.n) => format!("✓ ({x:.0}/s)"),
                Some(x) if x >= TARGET_RATE => {
                    format!("✗ ({x:.0}/s, but not every delivery arrived exactly once)")
                }
                Some(x) => format!("✗ ({x:.0}/s)"),
                None => "✗ (the outbox did not empty)".to_owned(),
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_missing_ids_are_counted() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let queued: HashSet<Uuid> = [a, b].into_iter().collect();
        let mut r = Received::default();
        r.ids.insert(a.to_string(), 2);
        r.ids.insert(c.to_string(), 1);
        r.requests = 3;
        let check = Check::of(&r, 2, Some(&queued));
        assert_eq!(
            (
                check.distinct,
                check.duplicates,
                check.missing,
                check.unknown
            ),
            (2, 1, 1, 1)
        );
        assert!(!check.exact(2));
        r.ids.remove(&c.to_string());
        r.ids.insert(a.to_string(), 1);
        r.ids.insert(b.to_string(), 1);
        assert!(Check::of(&r, 2, Some(&queued)).exact(2));
        assert!(Check::of(&r, 2, None).exact(2));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_receiver_counts_signed_requests() {
        let receiver = Receiver::start().expect("receiver");
        let mut sender = crate::load::connect(receiver.addr).await.expect("connect");
        let post = |id: Option<&str>, body: &'static str| {
            let mut b = Request::builder()
                .method(hyper::Method::POST)
                .uri("/hook")
                .header(hyper::header::HOST, receiver.addr.to_string());
            if let Some(id) = id {
                b = b
                    .header("webhook-id", id)
                    .header("webhook-signature", "v1,x");
            }
            b.body(http_body_util::Full::new(Bytes::from_static(
                body.as_bytes(),
            )))
            .expect("request")
        };
        let stamp = r#"{"type":"task.created","timestamp":"2020-01-01T00:00:00.000Z","data":{}}"#;
        for (id, expect) in [(Some("a"), 204), (Some("a"), 204), (None, 400)] {
            let (status, _) = crate::load::exchange(&mut sender, post(id, stamp))
                .await
                .expect("exchange");
            assert_eq!(status, expect);
        }
        let (status, _) = crate::load::exchange(&mut sender, post(Some("b"), "{}"))
            .await
            .expect("exchange");
        assert_eq!(status, 204);
        let r = receiver.take();
        assert_eq!((r.requests, r.ids.len(), r.duplicates()), (4, 2, 1));
        assert_eq!((r.unsigned, r.unreadable, r.lag_ns.len()), (1, 1, 3));
        assert!(r.lag_ns.iter().all(|&l| l > 0));
        assert_eq!(receiver.take().requests, 0);
    }
}
