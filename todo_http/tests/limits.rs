//! Slow and abusive clients against `server::serve` over real TCP: a request head that never
//! completes, an idle keep-alive connection, a body that stops arriving (408, nothing written),
//! the connection limit (further connections wait until one closes), and a client that closes
//! its sending side after its request (still answered).

use std::time::{Duration, Instant};

use test_support::TestDb;
use todo_http::TodoApi;
use todo_http::auth::{JwtAuthenticator, JwtConfig, mint_hs256};
use todo_http::server::{ServeOptions, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const SECRET: &str = "limits-test-secret-0123456789abcdef012345";

struct Running {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    db: Option<TestDb>,
}

impl Running {
    async fn start(opts: ServeOptions, body_read_timeout: Duration) -> Running {
        let db = TestDb::sqlite();
        let store = db.store().await;
        let auth = JwtAuthenticator::new(JwtConfig::hs256(SECRET))
            .await
            .expect("authenticator");
        let app = TodoApi::builder(store)
            .authenticator(auth)
            .body_read_timeout(body_read_timeout)
            .build();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve(listener, app, &opts, async {
                let _ = rx.await;
            })
            .await
            .expect("serve");
        });
        Running {
            addr,
            stop: Some(tx),
            task,
            db: Some(db),
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), &mut self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task");
        if let Some(db) = self.db.take() {
            db.cleanup().await;
        }
    }
}

fn token(user: &str) -> String {
    mint_hs256(SECRET, user, Duration::from_secs(600)).expect("token")
}

/// Reads until the peer closes the connection (or `limit` passes); what arrived and when the
/// connection closed (`None`: still open at `limit`).
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), None),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&got).into_owned(),
                    Some(start.elapsed()),
                );
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one response whose body is `Content-Length` long; its status and text.
async fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("a response within 10 s")
            .expect("read");
        assert!(n > 0, "connection closed before a full response");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return (text[9..12].parse().expect("status"), text);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_request_head_is_cut_off_after_the_header_timeout() {
    let opts = ServeOptions {
        header_read_timeout: Duration::from_secs(1),
        ..ServeOptions::default()
    };
    let server = Running::start(opts, Duration::from_secs(30)).await;

    // Half a request head, then nothing.
    let mut slow = TcpStream::connect(server.addr).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let (_, closed) = read_until_closed(&mut slow, Duration::from_secs(10)).await;
    let closed = closed.expect("the server closes a connection whose head never completes");
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_secs(5),
        "closed after {closed:?}, expected about 1 s"
    );

    // A slowloris trickling one header byte at a time gets no more time than that.
    let mut trickle = TcpStream::connect(server.addr).await.expect("connect");
    let start = Instant::now();
    let mut cut = None;
    for b in b"GET /healthz HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if trickle.write_all(&[*b]).await.is_err() {
            cut = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cut = match cut {
        Some(t) => t,
        None => read_until_closed(&mut trickle, Duration::from_secs(5))
            .await
            .1
            .map(|_| start.elapsed())
            .expect("the trickling connection is closed"),
    };
    assert!(
        cut < Duration::from_secs(4),
        "a trickled head kept its connection for {cut:?}"
    );

    // A complete request is answered, and the idle keep-alive connection closes after the
    // timeout too.
    let mut ok = TcpStream::connect(server.addr).await.expect("connect");
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (status, _) = read_response(&mut ok).await;
    assert_eq!(status, 200);
    let (_, idle_closed) = read_until_closed(&mut ok, Duration::from_secs(10)).await;
    let idle_closed = idle_closed.expect("an idle keep-alive connection is closed");
    assert!(
        idle_closed >= Duration::from_millis(900),
        "idle connection closed after {idle_closed:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_gets_408_and_writes_nothing() {
    let server = Running::start(ServeOptions::default(), Duration::from_secs(1)).await;
    let auth = format!("Bearer {}", token("slow-body"));
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    let start = Instant::now();
    s.write_all(
        format!(
            "POST /api/slow-body/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"title\": \"half"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let (status, text) = read_response(&mut s).await;
    let took = start.elapsed();
    assert_eq!(status, 408, "{text}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "408 after {took:?}"
    );
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{text}"
    );
    assert!(text.contains("\"status\":408"), "{text}");
    // The connection is not reused: the rest of that body would be read as a new request.
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "the connection is closed after a 408");

    // Nothing was created.
    let mut c = TcpStream::connect(server.addr).await.expect("connect");
    c.write_all(
        format!("GET /api/slow-body/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("write");
    let (status, text) = read_response(&mut c).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"total\":0"), "{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let opts = ServeOptions {
        max_connections: 2,
        ..ServeOptions::default()
    };
    let server = Running::start(opts, Duration::from_secs(30)).await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        s.write_all(request).await.expect("write");
        assert_eq!(read_response(&mut s).await.0, 200);
        held.push(s);
    }
    // The third connection is queued by the kernel, not served.
    let mut third = TcpStream::connect(server.addr).await.expect("connect");
    third.write_all(request).await.expect("write");
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(700), third.read(&mut buf))
            .await
            .is_err(),
        "a connection beyond the limit was served"
    );
    // Closing one held connection lets it in.
    drop(held.pop());
    assert_eq!(read_response(&mut third).await.0, 200);
    drop(held);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_and_refuses_new_connections() {
    let server = Running::start(ServeOptions::default(), Duration::from_secs(30)).await;
    let auth = format!("Bearer {}", token("drain"));
    // A request whose body is still arriving when shutdown begins.
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    s.write_all(
        format!(
            "POST /api/drain/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\
             Content-Type: application/json\r\nContent-Length: 17\r\n\r\n{{\"title\":"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // An idle keep-alive connection, closed at once on shutdown.
    let mut idle = TcpStream::connect(server.addr).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(read_response(&mut idle).await.0, 200);

    let addr = server.addr;
    let stopping = tokio::spawn(server.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "a new connection was accepted after shutdown began"
    );
    let (_, idle_closed) = read_until_closed(&mut idle, Duration::from_secs(3)).await;
    assert!(idle_closed.is_some(), "idle connections close on shutdown");

    s.write_all(b" \"late\"}").await.expect("finish the body");
    let (status, text) = read_response(&mut s).await;
    assert_eq!(status, 201, "{text}");
    assert!(text.contains("\"title\":\"late\""), "{text}");
    stopping.await.expect("stop");
}

/// A client may close its sending side once its request is out (`shutdown(SHUT_WR)`, as `nc -N`
/// or a one-shot script does): the request is still carried out and answered in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    let server = Running::start(ServeOptions::default(), Duration::from_secs(30)).await;
    let auth = format!("Bearer {}", token("halfway"));
    let body = r#"{"title":"sent, then shut"}"#;
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    s.write_all(
        format!(
            "POST /api/halfway/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    s.shutdown().await.expect("half-close");
    let (status, text) = read_response(&mut s).await;
    assert_eq!(status, 201, "{text}");

    let mut again = TcpStream::connect(server.addr).await.expect("connect");
    again
        .write_all(
            format!("GET /api/halfway/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("write");
    let (status, text) = read_response(&mut again).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("sent, then shut"),
        "the task was stored: {text}"
    );
    drop((s, again));
    server.stop().await;
}

/// A connection still in the listen backlog when shutdown begins (the server was at its
/// connection limit), whose client already sent its request, is answered rather than reset
/// when the listener closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_in_the_backlog_at_shutdown_is_answered_not_reset() {
    let opts = ServeOptions {
        max_connections: 1,
        ..ServeOptions::default()
    };
    let server = Running::start(opts, Duration::from_secs(30)).await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    // The one connection slot, held by an idle keep-alive connection.
    let mut held = TcpStream::connect(server.addr).await.expect("connect");
    held.write_all(request).await.expect("write");
    assert_eq!(read_response(&mut held).await.0, 200);
    // This one waits in the kernel's backlog with its request sent.
    let mut waiting = TcpStream::connect(server.addr).await.expect("connect");
    waiting.write_all(request).await.expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = tokio::spawn(server.stop());
    let (text, closed) = read_until_closed(&mut waiting, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "answered: {text:?}");
    assert!(closed.is_some(), "then closed");
    let (_, held_closed) = read_until_closed(&mut held, Duration::from_secs(5)).await;
    assert!(
        held_closed.is_some(),
        "the idle connection closes on shutdown"
    );
    stopping.await.expect("stop");
}
