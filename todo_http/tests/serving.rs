//! `server::serve` over real sockets: request smuggling through chunked bodies refused, `Host`
//! validated, HTTP/2 by prior knowledge, streamed responses sent as they are produced, a client
//! that stops reading cut off by the write timeout, and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use poem::{Body, Endpoint, Response, Route, get};
use test_support::TestDb;
use todo_http::TodoApi;
use todo_http::auth::{JwtAuthenticator, JwtConfig, mint_hs256};
use todo_http::server::{ServeOptions, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const SECRET: &str = "serving-test-secret-0123456789abcdef0123";

struct Running {
    addr: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    db: Option<TestDb>,
}

impl Running {
    async fn start<E: Endpoint + 'static>(app: E, opts: ServeOptions, db: Option<TestDb>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve(listener, app, &opts, async {
                let _ = rx.await;
            })
            .await
            .expect("serve");
        });
        Running {
            addr,
            stop,
            task,
            db,
        }
    }

    async fn api() -> Self {
        let db = TestDb::sqlite();
        let store = db.store().await;
        let auth = JwtAuthenticator::new(JwtConfig::hs256(SECRET))
            .await
            .expect("authenticator");
        let app = TodoApi::builder(store).authenticator(auth).build();
        Self::start(app, ServeOptions::default(), Some(db)).await
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task");
        if let Some(db) = self.db {
            db.cleanup().await;
        }
    }
}

fn bearer(user: &str) -> String {
    let token = mint_hs256(SECRET, user, Duration::from_secs(600)).expect("token");
    format!("Bearer {token}")
}

/// Sends `bytes` on a fresh connection and reads until the server closes it (10 s at most).
async fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("connection reset instead of closed: {e}"),
            Err(_) => panic!(
                "connection still open after 10 s: {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

/// A chunk-size line with no hex digit, or a bare LF inside a chunk extension, ends nothing: the
/// request is refused with 400 and a request hidden behind it in the body is never executed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_smuggling_attempts_get_400_and_the_hidden_request_never_runs() {
    let server = Running::api().await;
    let auth = bearer("smuggle");
    let hidden = format!(
        "POST /api/smuggle/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: 20\r\n\r\n{{\"title\":\"smuggled\"}}"
    );
    for bad_chunk in ["\r\n", " \r\n", ";ext\r\n", "2;ext\nx\r\n{}\r\n0\r\n\r\n"] {
        let attempt = format!(
            "POST /api/smuggle/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{bad_chunk}{hidden}"
        );
        let answer = exchange(server.addr, attempt.as_bytes()).await;
        assert_eq!(statuses(&answer), vec![400], "{bad_chunk:?}: {answer}");
    }
    let list = exchange(
        server.addr,
        format!(
            "GET /api/smuggle/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(list.starts_with("HTTP/1.1 200"), "{list}");
    assert!(list.contains("\"total\":0"), "a hidden request ran: {list}");
    server.stop().await;
}

/// RFC 9112 §3.2: a missing, repeated or invalid `Host` in an HTTP/1.1 request is a 400
/// (problem+json), and the request is not processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_required_once_and_valid_in_http_1_1() {
    let server = Running::api().await;
    let auth = bearer("hosts");
    let create = |host_lines: &str| {
        format!(
            "POST /api/hosts/tasks HTTP/1.1\r\n{host_lines}Authorization: {auth}\r\n\
             Content-Type: application/json\r\nContent-Length: 13\r\nConnection: close\r\n\r\n{{\"title\":\"h\"}}"
        )
    };
    for bad in [
        "",
        "Host: a.example\r\nHost: b.example\r\n",
        "Host: a.example\r\nHost: a.example\r\n",
        "Host: user@a.example\r\n",
        "Host: a example\r\n",
        "Host: a.example/path\r\n",
    ] {
        let answer = exchange(server.addr, create(bad).as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{bad:?}: {answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
        assert!(answer.contains("Host"), "the problem names Host: {answer}");
    }
    for good in [
        "Host: a.example\r\n",
        "Host: 127.0.0.1:8080\r\n",
        "Host: [::1]:80\r\n",
    ] {
        let answer = exchange(server.addr, create(good).as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 201"), "{good:?}: {answer}");
    }
    // HTTP/1.0 predates Host: still served without one.
    let answer = exchange(server.addr, b"GET /healthz HTTP/1.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    let list = exchange(
        server.addr,
        format!("GET /api/hosts/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(
        list.contains("\"total\":3"),
        "only the valid requests ran: {list}"
    );
    server.stop().await;
}

/// HTTP/2 without TLS, by prior knowledge (`curl --http2-prior-knowledge`): several requests on
/// one connection, reads and a write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_by_prior_knowledge_serves_the_api() {
    let server = Running::api().await;
    let auth = bearer("h2");
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(server.addr).await.expect("connect"));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = hyper::Request::post(format!("http://{}/api/h2/tasks", server.addr))
        .header("authorization", &auth)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"title":"over h2"}"#)))
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    // Two requests at once on the same connection.
    let get = |path: &str| {
        hyper::Request::get(format!("http://{}{path}", server.addr))
            .header("authorization", &auth)
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    let (a, b) = tokio::join!(
        send.clone().send_request(get("/api/h2/tasks")),
        send.clone().send_request(get("/healthz"))
    );
    let (a, b) = (a.expect("list"), b.expect("health"));
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let body = a.into_body().collect().await.expect("body").to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("over h2") && body.contains("\"total\":1"),
        "{body}"
    );
    drop(send);
    server.stop().await;
}

/// A body produced by a stream (as server-sent events are) reaches the client while the handler
/// is still producing it: the test reads the first part before it lets the second be made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_response_arrives_as_it_is_produced() {
    let release = Arc::new(tokio::sync::Notify::new());
    let app = Route::new().at(
        "/stream",
        get(StreamOnRelease {
            release: release.clone(),
        }),
    );
    let server = Running::start(app, ServeOptions::default(), None).await;
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    s.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("first part") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the first part arrives while the handler still waits")
            .expect("read");
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!text.contains("second part"), "{text}");
    release.notify_one();
    while !String::from_utf8_lossy(&got).ends_with("0\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the rest arrives once released")
            .expect("read");
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).contains("second part"));
    server.stop().await;
}

struct StreamOnRelease {
    release: Arc<tokio::sync::Notify>,
}

impl Endpoint for StreamOnRelease {
    type Output = Response;
    async fn call(&self, _req: poem::Request) -> poem::Result<Response> {
        let release = self.release.clone();
        let parts = async_stream_of(vec![
            (None, "first part\n"),
            (Some(release), "second part\n"),
        ]);
        Ok(Response::builder()
            .content_type("text/plain")
            .body(Body::from_bytes_stream(parts)))
    }
}

/// A stream yielding each text, first waiting for its notify (if any).
fn async_stream_of(
    parts: Vec<(Option<Arc<tokio::sync::Notify>>, &'static str)>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::iter(parts).then(|(wait, text)| async move {
        if let Some(n) = wait {
            n.notified().await;
        }
        Ok(Bytes::from_static(text.as_bytes()))
    })
}

use futures_util::StreamExt;

/// An endless body; notes when it is dropped (its connection gone).
struct Endless {
    dropped: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
}

impl Endpoint for Endless {
    type Output = Response;
    async fn call(&self, _req: poem::Request) -> poem::Result<Response> {
        struct OnDrop(Arc<AtomicBool>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let guard = OnDrop(self.dropped.clone());
        let sent = self.sent.clone();
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let body = futures_util::stream::repeat(chunk).map(move |c| {
            let _ = &guard;
            sent.fetch_add(c.len(), Ordering::SeqCst);
            Ok::<_, std::io::Error>(c)
        });
        Ok(Response::builder().body(Body::from_bytes_stream(body)))
    }
}

/// A client that stops reading loses its connection once the server's writes have stalled for
/// the write timeout; with a long timeout the same client keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_after_the_write_timeout() {
    for (timeout, cut_off) in [
        (Duration::from_secs(1), true),
        (Duration::from_secs(60), false),
    ] {
        let dropped = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let app = Route::new().at(
            "/endless",
            get(Endless {
                dropped: dropped.clone(),
                sent: sent.clone(),
            }),
        );
        let opts = ServeOptions {
            write_timeout: timeout,
            ..ServeOptions::default()
        };
        let server = Running::start(app, opts, None).await;
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        s.write_all(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        // Never read: the socket buffers fill, then the server's writes stall.
        let start = Instant::now();
        while !dropped.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(6) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(sent.load(Ordering::SeqCst) > 0, "the body started");
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            cut_off,
            "write timeout {timeout:?}: connection dropped after {:?}",
            start.elapsed()
        );
        if cut_off {
            // The client sees the connection end (after the bytes already buffered).
            let mut buf = vec![0u8; 1 << 16];
            let ended = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            assert!(ended.is_ok(), "the connection ends");
        }
        drop(s);
        server.stop().await;
    }
}

/// `/metrics` is Prometheus text: requests by route template and status, latency histograms,
/// open connections, in-flight and queued requests, pool use. No auth; no ids in labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_with_route_templates() {
    let server = Running::api().await;
    let auth = bearer("metrics-user");
    for _ in 0..3 {
        let r = exchange(
            server.addr,
            format!("GET /api/metrics-user/tasks/0190c3a8-7d4e-7b3a-9f21-5c6d7e8f9a0b HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    }
    let text = exchange(
        server.addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("text/plain; version=0.0.4"), "{text}");
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("todo_http_requests_total{")
                && l.contains(r#"route="/api/{user_id}/tasks/{task_id}""#)
                && l.contains(r#"status="404""#)
                && l.contains(r#"method="GET""#)
        })
        .unwrap_or_else(|| panic!("no request counter for the 404s: {text}"));
    let count: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("value");
    assert!(count >= 3.0, "{line}");
    assert!(!text.contains("metrics-user"), "no user ids in labels");
    assert!(!text.contains("0190c3a8"), "no task ids in labels");
    for needle in [
        "todo_http_request_duration_seconds_bucket{",
        "todo_http_open_connections ",
        "todo_http_requests_in_flight ",
        "todo_http_requests_queued ",
        r#"todo_db_pool_connections{state="max"}"#,
        r#"todo_db_pool_connections{state="in_use"}"#,
    ] {
        assert!(text.contains(needle), "missing {needle}: {text}");
    }
    // The scrape itself is in flight and holds a connection.
    let gauge = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name}"))
    };
    assert!(gauge("todo_http_requests_in_flight ") >= 1.0);
    assert!(gauge("todo_http_open_connections ") >= 1.0);
    server.stop().await;
}
