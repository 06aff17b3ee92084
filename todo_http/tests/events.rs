//! `GET /api/{user_id}/events` over real sockets (`server::serve` on port 0): replay then live
//! with no gap and no duplicate, `Last-Event-ID` resume, `reminder.fired`, 400/410, keep-alives,
//! the per-user cap, nothing leaked by clients that leave, streams ended by shutdown and by
//! token expiry.
//!
//! The tests take turns (one lock): the open-stream gauge is process-wide.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use test_support::TestDb;
use todo_http::auth::{JwtAuthenticator, JwtConfig, mint_hs256};
use todo_http::server::{ServeOptions, serve};
use todo_http::{EventOptions, TodoApi};
use todo_store::{Store, TaskInput};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "events-test-secret-0123456789abcdef01234";

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Server {
    addr: std::net::SocketAddr,
    store: Store,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    db: TestDb,
}

impl Server {
    async fn start(db: TestDb) -> Self {
        let store = db.store().await;
        let auth = JwtAuthenticator::new(JwtConfig::hs256(SECRET))
            .await
            .expect("authenticator");
        let shutdown = CancellationToken::new();
        let app = TodoApi::builder(store.clone())
            .authenticator(auth)
            .events(EventOptions {
                keep_alive: Duration::from_secs(1),
                shutdown: shutdown.clone(),
                ..EventOptions::default()
            })
            .build();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve(listener, app, &ServeOptions::default(), async move {
                let _ = rx.await;
                shutdown.cancel();
            })
            .await
            .expect("serve");
        });
        Server {
            addr,
            store,
            stop,
            task,
            db,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task");
        self.store.close().await;
        self.db.cleanup().await;
    }
}

fn token(user: &str, ttl: Duration) -> String {
    mint_hs256(SECRET, user, ttl).expect("token")
}

/// One parsed SSE event.
#[derive(Debug, Clone)]
struct Ev {
    id: String,
    event: String,
    data: serde_json::Value,
}

/// What [`Sse::next`] read.
#[derive(Debug)]
enum Got {
    Event(Ev),
    Comment(String),
    End,
    Timeout,
}

/// A streaming response read frame by frame.
struct Sse {
    status: u16,
    headers: hyper::HeaderMap,
    body: Incoming,
    buf: String,
    _conn: tokio::task::JoinHandle<()>,
}

impl Sse {
    async fn open(addr: std::net::SocketAddr, path: &str, headers: &[(&str, String)]) -> Sse {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = hyper::Request::get(path).header("host", "localhost");
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let resp = send
            .send_request(req.body(Empty::<Bytes>::new()).expect("request"))
            .await
            .expect("response");
        let (parts, body) = resp.into_parts();
        Sse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            buf: String::new(),
            _conn: conn,
        }
    }

    async fn user(addr: std::net::SocketAddr, user: &str, extra: &[(&str, String)]) -> Sse {
        Self::user_at(addr, user, "", extra).await
    }

    async fn user_at(
        addr: std::net::SocketAddr,
        user: &str,
        query: &str,
        extra: &[(&str, String)],
    ) -> Sse {
        let mut headers = vec![(
            "authorization",
            format!("Bearer {}", token(user, Duration::from_secs(600))),
        )];
        headers.extend(extra.iter().cloned());
        Self::open(addr, &format!("/api/{user}/events{query}"), &headers).await
    }

    /// The next event or comment within `wait`.
    async fn next(&mut self, wait: Duration) -> Got {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (String::new(), String::new(), None);
                for line in block.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        return Got::Comment(c.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).expect("data is JSON"));
                    }
                }
                return Got::Event(Ev {
                    id,
                    event,
                    data: data.expect("an event has data"),
                });
            }
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Err(_) => return Got::Timeout,
                Ok(None) | Ok(Some(Err(_))) => return Got::End,
                Ok(Some(Ok(f))) => {
                    if let Ok(d) = f.into_data() {
                        self.buf.push_str(std::str::from_utf8(&d).expect("utf-8"));
                    }
                }
            }
        }
    }

    /// The next event whose type starts with `prefix` (skipping comments and other events)
    /// within `wait`; panics on anything else.
    async fn event_of(&mut self, prefix: &str, wait: Duration) -> Ev {
        let deadline = Instant::now() + wait;
        loop {
            match self
                .next(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Got::Event(e) if e.event.starts_with(prefix) => return e,
                Got::Event(_) => continue,
                Got::Comment(_) => continue,
                other => panic!("expected an event, got {other:?}"),
            }
        }
    }

    async fn text(self) -> String {
        let b = self.body.collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&b).into_owned()
    }
}

fn task_id(e: &Ev) -> String {
    e.data["task"]["id"]
        .as_str()
        .or(e.data["id"].as_str())
        .expect("an id")
        .to_owned()
}

/// Replay then live: a stream opened with `?since=` while a writer is busy sees every write
/// once, in order; one opened later with `Last-Event-ID` continues exactly after it.
async fn replay_then_live(db: TestDb) {
    let _turn = TURN.lock().await;
    let s = Server::start(db).await;
    let u = s.store.for_user("ann").expect("user");
    let first = u.create(TaskInput::titled("before")).await.expect("create");
    let start = u.changes(None, 500).await.expect("changes").next;
    // Writes before the stream opens (replayed) and while it runs (live).
    let mut early = Vec::new();
    for i in 0..5 {
        early.push(
            u.create(TaskInput::titled(format!("early {i}")))
                .await
                .expect("c")
                .id,
        );
    }
    let writer = {
        let u = u.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..30 {
                ids.push(
                    u.create(TaskInput::titled(format!("live {i}")))
                        .await
                        .expect("c")
                        .id,
                );
                if i % 5 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            ids
        })
    };
    let mut sse = Sse::user_at(s.addr, "ann", &format!("?since={start}"), &[]).await;
    assert_eq!(sse.status, 200);
    assert_eq!(
        sse.headers.get("content-type").map(|v| v.to_str().unwrap()),
        Some("text/event-stream")
    );
    let live = writer.await.expect("writer");
    let want: Vec<String> = early.iter().chain(&live).map(|i| i.to_string()).collect();
    let mut seen = Vec::new();
    let mut last = String::new();
    while seen.len() < want.len() {
        // Each create also updates its list (open counts): only task events are checked.
        let e = sse.event_of("task.", Duration::from_secs(5)).await;
        assert_eq!(e.event, "task.created", "{e:?}");
        assert!(e.data["task"]["title"].is_string(), "{e:?}");
        seen.push(task_id(&e));
        last = e.id;
    }
    assert_eq!(seen, want, "every write once, in commit order");
    // Nothing more about tasks.
    loop {
        match sse.next(Duration::from_millis(300)).await {
            Got::Timeout | Got::Comment(_) => break,
            Got::Event(e) => assert!(e.event.starts_with("list."), "{e:?}"),
            Got::End => panic!("the stream ended"),
        }
    }
    drop(sse);

    // Offline: an update and a deletion; then resume with Last-Event-ID.
    let t = u.get(first.id).await.expect("get");
    u.set_completed(t.id, Some(true), None)
        .await
        .expect("complete");
    let gone = live[0];
    u.delete(gone, None).await.expect("delete");
    let mut sse = Sse::user(s.addr, "ann", &[("last-event-id", last.clone())]).await;
    assert_eq!(sse.status, 200);
    let e = sse.event_of("task.", Duration::from_secs(5)).await;
    assert_eq!(
        (e.event.as_str(), task_id(&e)),
        ("task.updated", first.id.to_string())
    );
    assert_eq!(e.data["task"]["completed"], true);
    let e = sse.event_of("task.", Duration::from_secs(5)).await;
    assert_eq!(e.event, "task.deleted");
    assert_eq!(e.data, serde_json::json!({ "id": gone.to_string() }));
    // Then live, within a second of the commit.
    let at = Instant::now();
    let t = u.create(TaskInput::titled("after")).await.expect("create");
    let e = sse.event_of("task.", Duration::from_secs(5)).await;
    assert!(at.elapsed() < Duration::from_secs(1), "{:?}", at.elapsed());
    assert_eq!(task_id(&e), t.id.to_string());
    // Lists too.
    let l = u
        .create_list(todo_store::ListInput::named("errands"))
        .await
        .expect("list");
    let e = sse.event_of("list.created", Duration::from_secs(5)).await;
    assert_eq!(e.data["list"]["id"], l.id.to_string());
    drop(sse);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_then_live_sqlite() {
    replay_then_live(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
async fn replay_then_live_postgres() {
    replay_then_live(TestDb::postgres().await).await;
}

/// A malformed `Last-Event-ID` or `since` is 400 naming it; an expired one is 410.
async fn bad_and_expired_tokens(db: TestDb) {
    let _turn = TURN.lock().await;
    let s = Server::start(db).await;
    let sse = Sse::user(s.addr, "bob", &[("last-event-id", "garbage".into())]).await;
    assert_eq!(sse.status, 400);
    let body: serde_json::Value = serde_json::from_str(&sse.text().await).expect("json");
    assert_eq!(body["errors"][0]["field"], "Last-Event-ID", "{body}");
    let sse = Sse::user_at(s.addr, "bob", "?since=%25%25", &[]).await;
    assert_eq!(sse.status, 400);
    let body: serde_json::Value = serde_json::from_str(&sse.text().await).expect("json");
    assert_eq!(body["errors"][0]["field"], "since", "{body}");
    // Another user's token is malformed for this one.
    let u = s.store.for_user("bob").expect("user");
    let other = s.store.for_user("eve").expect("user");
    other.create(TaskInput::titled("x")).await.expect("create");
    let foreign = other.changes(None, 500).await.expect("changes").next;
    let sse = Sse::user(s.addr, "bob", &[("last-event-id", foreign)]).await;
    assert_eq!(sse.status, 400);
    // Expired: a tombstone after the token, pruned.
    let t = u.create(TaskInput::titled("doomed")).await.expect("create");
    let old = u.changes(None, 500).await.expect("changes").next;
    u.delete(t.id, None).await.expect("delete");
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.store
        .prune(Duration::ZERO, Duration::from_secs(48 * 3600))
        .await
        .expect("prune");
    let sse = Sse::user(s.addr, "bob", &[("last-event-id", old)]).await;
    assert_eq!(sse.status, 410);
    let body: serde_json::Value = serde_json::from_str(&sse.text().await).expect("json");
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .ends_with("/sync-token-expired"),
        "{body}"
    );
    // No token, another user's path.
    let sse = Sse::open(s.addr, "/api/bob/events", &[]).await;
    assert_eq!(sse.status, 401);
    let sse = Sse::user_at(s.addr, "eve", "", &[]).await;
    assert_eq!(sse.status, 200);
    drop(sse);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_expired_tokens_sqlite() {
    bad_and_expired_tokens(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
async fn bad_and_expired_tokens_postgres() {
    bad_and_expired_tokens(TestDb::postgres().await).await;
}

/// A reminder that fires is a `reminder.fired` event of its user's stream, live and on replay
/// from before it (once), with the task, the reminder and the time it fired for; its id
/// resumes after it.
async fn reminder_fired_events(db: TestDb) {
    let _turn = TURN.lock().await;
    let s = Server::start(db).await;
    let u = s.store.for_user("rita").expect("user");
    let at = todo_store::task::truncate_ms(chrono::Utc::now() + chrono::Duration::hours(1));
    let t = u
        .create(TaskInput {
            reminders: vec![todo_store::ReminderInput::At(at)],
            ..TaskInput::titled("call the plumber")
        })
        .await
        .expect("create");
    let before = u.changes(None, 500).await.expect("changes").next;
    let mut live = Sse::user(s.addr, "rita", &[]).await;
    assert_eq!(live.status, 200);
    let mut other = Sse::user(s.addr, "otto", &[]).await;
    assert_eq!(other.status, 200);

    let fired = s.store.fire_due_reminders(at, 10).await.expect("fire");
    assert_eq!(fired.len(), 1);
    let check = |e: &Ev| {
        assert_eq!(e.event, "reminder.fired", "{e:?}");
        assert_eq!(e.data["task"]["id"], t.id.to_string(), "{e:?}");
        assert_eq!(e.data["task"]["title"], "call the plumber", "{e:?}");
        assert_eq!(
            e.data["reminder"]["id"],
            t.reminders[0].id.to_string(),
            "{e:?}"
        );
        let at_field = e.data["reminder"]["at"]
            .as_str()
            .expect("the reminder's at");
        let scheduled = e.data["scheduled_for"].as_str().expect("scheduled_for");
        for ts in [at_field, scheduled] {
            let parsed = chrono::DateTime::parse_from_rfc3339(ts).expect("RFC 3339");
            assert_eq!(parsed, at, "{e:?}");
        }
        assert_eq!(
            e.data.as_object().map(|o| o.len()),
            Some(3),
            "task, reminder, scheduled_for: {e:?}"
        );
    };
    let e = live.event_of("reminder.", Duration::from_secs(3)).await;
    check(&e);
    // Nothing more on this stream, nothing on another user's.
    for sse in [&mut live, &mut other] {
        loop {
            match sse.next(Duration::from_millis(500)).await {
                Got::Timeout => break,
                Got::Comment(_) => {}
                other => panic!("expected nothing more, got {other:?}"),
            }
        }
    }
    drop((live, other));

    // Replayed from before it, once; not from its own id.
    let mut replay = Sse::user(s.addr, "rita", &[("last-event-id", before)]).await;
    assert_eq!(replay.status, 200);
    let again = replay.event_of("reminder.", Duration::from_secs(3)).await;
    check(&again);
    assert_eq!(again.id, e.id);
    loop {
        match replay.next(Duration::from_millis(500)).await {
            Got::Timeout => break,
            Got::Comment(_) => {}
            other => panic!("expected nothing more, got {other:?}"),
        }
    }
    drop(replay);
    let mut after = Sse::user_at(s.addr, "rita", &format!("?since={}", e.id), &[]).await;
    assert_eq!(after.status, 200);
    loop {
        match after.next(Duration::from_millis(500)).await {
            Got::Timeout => break,
            Got::Comment(_) => {}
            other => panic!("expected nothing after its id, got {other:?}"),
        }
    }
    drop(after);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminder_fired_events_sqlite() {
    reminder_fired_events(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
async fn reminder_fired_events_postgres() {
    reminder_fired_events(TestDb::postgres().await).await;
}

/// An idle stream carries `: keep-alive` comments at the configured interval (1 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_comments_arrive() {
    let _turn = TURN.lock().await;
    let s = Server::start(TestDb::sqlite()).await;
    let mut sse = Sse::user(s.addr, "kim", &[]).await;
    assert_eq!(sse.status, 200);
    for _ in 0..2 {
        match sse.next(Duration::from_millis(1600)).await {
            Got::Comment(c) => assert_eq!(c, "keep-alive"),
            other => panic!("expected a keep-alive, got {other:?}"),
        }
    }
    drop(sse);
    s.stop().await;
}

fn gauge(text: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix("todo_http_event_streams_open "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn metrics(addr: std::net::SocketAddr) -> String {
    Sse::open(addr, "/metrics", &[]).await.text().await
}

/// Past 16 streams a user gets 429 with `Retry-After` (others are unaffected); clients that
/// leave release everything: the gauge and the store's subscribers return to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_cap_and_nothing_leaks() {
    let _turn = TURN.lock().await;
    let s = Server::start(TestDb::sqlite()).await;
    let mut open = Vec::new();
    for _ in 0..16 {
        let sse = Sse::user(s.addr, "cap", &[]).await;
        assert_eq!(sse.status, 200);
        open.push(sse);
    }
    let over = Sse::user(s.addr, "cap", &[]).await;
    assert_eq!(over.status, 429);
    assert!(over.headers.contains_key("retry-after"));
    let other = Sse::user(s.addr, "not-capped", &[]).await;
    assert_eq!(other.status, 200);
    open.push(other);
    assert_eq!(gauge(&metrics(s.addr).await), 17.0);
    assert_eq!(s.store.subscribers(), 17);
    // A write reaches them all, then every client leaves mid-stream.
    let u = s.store.for_user("cap").expect("user");
    u.create(TaskInput::titled("fan-out"))
        .await
        .expect("create");
    for sse in open.iter_mut().take(16) {
        sse.event_of("task.created", Duration::from_secs(5)).await;
    }
    drop(open);
    let start = Instant::now();
    while (s.store.subscribers() > 0 || gauge(&metrics(s.addr).await) > 0.0)
        && start.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.store.subscribers(), 0, "subscriptions released");
    assert_eq!(gauge(&metrics(s.addr).await), 0.0, "gauge back to zero");
    // The user's slots are free again.
    let sse = Sse::user(s.addr, "cap", &[]).await;
    assert_eq!(sse.status, 200);
    drop(sse);
    s.stop().await;
}

/// Shutdown ends open streams at once: `serve` returns promptly with a stream open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_streams_promptly() {
    let _turn = TURN.lock().await;
    let s = Server::start(TestDb::sqlite()).await;
    let mut sse = Sse::user(s.addr, "sam", &[]).await;
    assert_eq!(sse.status, 200);
    let _ = s.stop.send(());
    let at = Instant::now();
    assert!(matches!(sse.next(Duration::from_secs(5)).await, Got::End));
    tokio::time::timeout(Duration::from_secs(2), s.task)
        .await
        .expect("serve returns within 2 s")
        .expect("serve task");
    assert!(at.elapsed() < Duration::from_secs(2), "{:?}", at.elapsed());
    s.store.close().await;
    s.db.cleanup().await;
}

/// A stream ends when the token that opened it expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_ends_the_stream() {
    let _turn = TURN.lock().await;
    let s = Server::start(TestDb::sqlite()).await;
    let at = Instant::now();
    let t = token("exp", Duration::from_secs(2));
    let mut sse = Sse::open(
        s.addr,
        "/api/exp/events",
        &[("authorization", format!("Bearer {t}"))],
    )
    .await;
    assert_eq!(sse.status, 200);
    loop {
        match sse.next(Duration::from_secs(6)).await {
            Got::End => break,
            Got::Comment(_) => {}
            Got::Event(_) => {}
            Got::Timeout => panic!("the stream outlived its token"),
        }
    }
    assert!(at.elapsed() <= Duration::from_secs(4), "{:?}", at.elapsed());
    s.stop().await;
}
