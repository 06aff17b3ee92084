//! `server::run_until` (what `serve` runs) delivers webhooks: a receiver on 127.0.0.1 (allowed
//! by `TODO_WEBHOOK_ALLOW_HTTP` and `TODO_WEBHOOK_ALLOW_PRIVATE`) gets a signed POST for a task
//! created over HTTP, carrying the task as the API returned it; a failed attempt is retried
//! with the same `webhook-id` after the scaled wait; `/metrics` counts the attempts by outcome;
//! the delivery log shows the result; shutdown stops the sender promptly. One test per backend
//! in this binary: the metrics recorder is process-wide.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use test_support::TestDb;
use todo_http::auth::mint_hs256;
use todo_http::server::{ServerConfig, run_until};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const SECRET: &str = "webhook-delivery-test-secret-0123456789abcdef";

/// A request the receiver got: its headers and body.
struct Received {
    headers: hyper::HeaderMap,
    body: Bytes,
}

/// A webhook receiver on 127.0.0.1: answers the first request 503 and every later one 204,
/// and hands each request to the returned channel.
async fn receiver() -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (tx, seen) = (tx.clone(), seen.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (tx, seen) = (tx.clone(), seen.clone());
                    async move {
                        let headers = req.headers().clone();
                        let body = req.into_body().collect().await?.to_bytes();
                        let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let _ = tx.send(Received { headers, body });
                        let status = if n == 0 { 503 } else { 204 };
                        Ok::<_, hyper::Error>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

/// One HTTP/1.1 request to the server; returns the status and the body as JSON (or text).
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    user: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if let Some(u) = user {
        let token = mint_hs256(SECRET, u, Duration::from_secs(600)).unwrap();
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Full::new(Bytes::from(b.to_string()))
        }
        None => Full::new(Bytes::new()),
    };
    let resp = sender.send_request(req.body(body).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text,
    )
}

/// The value of `todo_webhook_deliveries_total{outcome="…"}` in a Prometheus page (0 when
/// absent).
fn deliveries(page: &str, outcome: &str) -> u64 {
    let prefix = format!("todo_webhook_deliveries_total{{outcome=\"{outcome}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().expect("a count"))
}

fn local_page() -> String {
    todo_http::metrics::prometheus()
        .expect("our recorder is the process's")
        .render()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The two tests share the counters: they take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn delivers_signed_events(db: TestDb) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let before = local_page();
    let (hook_addr, mut received) = receiver().await;
    let port = free_port();
    let url = db.url.clone();
    let cfg = ServerConfig::from_lookup(|k| match k {
        "DATABASE_URL" => Some(url.clone()),
        "TODO_ADDR" => Some(format!("127.0.0.1:{port}")),
        "TODO_JWT_SECRET" => Some(SECRET.into()),
        "TODO_WEBHOOK_ALLOW_HTTP" => Some("true".into()),
        "TODO_WEBHOOK_ALLOW_PRIVATE" => Some("true".into()),
        // The first retry (5 s) after 50 ms.
        "TODO_WEBHOOK_RETRY_SCALE" => Some("0.01".into()),
        _ => None,
    })
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(run_until(cfg, async {
        let _ = stopped.await;
    }));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = Instant::now();
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "server never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The user's first request (a webhook as the very first one is tests/webhooks.rs's).
    let (status, _, _) = call(addr, "GET", "/api/alice/lists", Some("alice"), None).await;
    assert_eq!(status, 200);
    // A webhook to the receiver (allowed by the two settings), then a task over HTTP.
    let (status, created, _) = call(
        addr,
        "POST",
        "/api/alice/webhooks",
        Some("alice"),
        Some(json!({"url": format!("http://{hook_addr}/hook"), "events": ["task.created"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["data"]["secret"].as_str().unwrap().to_owned();
    let hook_id = created["data"]["id"].as_str().unwrap().to_owned();
    let (status, task, _) = call(
        addr,
        "POST",
        "/api/alice/tasks",
        Some("alice"),
        Some(json!({"title": "Ship webhooks", "tags": ["Release"]})),
    )
    .await;
    assert_eq!(status, 201, "{task}");

    // The first attempt (answered 503), then the retry (204): one delivery, one id.
    let mut got = Vec::new();
    for _ in 0..2 {
        let r = tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .expect("a delivery within 10 s")
            .expect("the receiver runs");
        got.push(r);
    }
    let verifier = standardwebhooks::Webhook::new(&secret).unwrap();
    for r in &got {
        assert_eq!(
            r.headers.get("content-type").unwrap(),
            "application/json",
            "{:?}",
            r.headers
        );
        verifier
            .verify(&r.body, &r.headers)
            .expect("the signature verifies with the webhook's secret");
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["type"], "task.created");
        assert_eq!(body["data"], json!({ "task": task["data"] }));
        let ts = body["timestamp"].as_str().unwrap();
        chrono::DateTime::parse_from_rfc3339(ts).expect("an RFC 3339 timestamp");
        let sent_at: i64 = r.headers["webhook-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((chrono::Utc::now().timestamp() - sent_at).abs() < 60);
    }
    let delivery_id = got[0].headers["webhook-id"].to_str().unwrap().to_owned();
    assert_eq!(
        got[1].headers["webhook-id"], delivery_id,
        "a retry repeats the webhook-id"
    );
    // Another secret does not verify it.
    let other =
        standardwebhooks::Webhook::new("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            .unwrap();
    assert!(other.verify(&got[0].body, &got[0].headers).is_err());

    // The delivery log shows it delivered after two attempts.
    let path = format!("/api/alice/webhooks/{hook_id}/deliveries");
    let started = Instant::now();
    let log = loop {
        let (status, log, _) = call(addr, "GET", &path, Some("alice"), None).await;
        assert_eq!(status, 200, "{log}");
        if log["data"][0]["status"] == "delivered" {
            break log;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not recorded as delivered: {log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let d = &log["data"][0];
    assert_eq!(log["data"].as_array().unwrap().len(), 1, "{log}");
    assert_eq!(d["id"], delivery_id.as_str());
    assert_eq!(d["event_type"], "task.created");
    assert_eq!(d["attempts"], 2);
    assert_eq!(d["last_response_status"], 204);
    assert_eq!(d["next_attempt_at"], Value::Null);

    // `/metrics` counts one retry and one delivery more than before.
    let (status, _, page) = call(addr, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        deliveries(&page, "delivered"),
        deliveries(&before, "delivered") + 1,
        "{page}"
    );
    assert_eq!(deliveries(&page, "retry"), deliveries(&before, "retry") + 1);
    assert_eq!(deliveries(&page, "failed"), deliveries(&before, "failed"));
    assert!(page.contains("todo_webhook_deliveries_total{outcome=\"failed\"}"));

    // Nothing else arrives (the webhook asked for task.created only).
    call(
        addr,
        "POST",
        "/api/alice/lists",
        Some("alice"),
        Some(json!({"name": "x"})),
    )
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(800), received.recv())
            .await
            .is_err(),
        "an event the webhook did not ask for was delivered"
    );

    let asked = Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("run_until returns after shutdown")
        .unwrap()
        .unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "shutdown took {:?}: the sender must stop at once",
        asked.elapsed()
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_delivers_signed_webhooks_and_counts_them_sqlite() {
    delivers_signed_events(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
async fn serve_delivers_signed_webhooks_and_counts_them_postgres() {
    delivers_signed_events(TestDb::postgres().await).await;
}
