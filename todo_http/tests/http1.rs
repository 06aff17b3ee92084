//! The HTTP/1.1 wire behaviour of `server::serve` over real TCP: pipelining, chunked and
//! `Expect: 100-continue` bodies, ambiguous framing refused, oversized heads and bodies answered
//! (never a reset), `HEAD`, HTTP/1.0 and connection reuse after a request whose body was not
//! needed.

use std::time::Duration;

use test_support::TestDb;
use todo_http::TodoApi;
use todo_http::auth::{JwtAuthenticator, JwtConfig, mint_hs256};
use todo_http::server::{ServeOptions, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const SECRET: &str = "http1-test-secret-0123456789abcdef0123456";

struct Running {
    addr: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    db: TestDb,
}

async fn start() -> Running {
    let db = TestDb::sqlite();
    let store = db.store().await;
    let auth = JwtAuthenticator::new(JwtConfig::hs256(SECRET))
        .await
        .expect("authenticator");
    let app = TodoApi::builder(store).authenticator(auth).build();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        serve(listener, app, &ServeOptions::default(), async {
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

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task");
        self.db.cleanup().await;
    }
}

fn auth(user: &str) -> String {
    let token = mint_hs256(SECRET, user, Duration::from_secs(600)).expect("token");
    format!("Authorization: Bearer {token}\r\n")
}

/// One parsed response.
#[derive(Debug)]
struct Resp {
    status: u16,
    head: String,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads responses off a connection, keeping what arrives beyond the one returned.
struct Reader {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Reader {
    fn new(s: TcpStream) -> Self {
        Reader { s, buf: Vec::new() }
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(10), self.s.read(&mut chunk))
            .await
            .expect("data within 10 s")
            .expect("read (not a reset)");
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next response; `head_request`: it answers a HEAD (no body follows).
    async fn response(&mut self, head_request: bool) -> Resp {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let mut r = Resp {
                    status: head[9..12].parse().expect("status"),
                    head,
                    body: String::new(),
                };
                let len: usize = if head_request {
                    0
                } else {
                    r.header("content-length")
                        .map(|v| v.parse().expect("length"))
                        .unwrap_or(0)
                };
                while self.buf.len() < end + 4 + len {
                    assert!(self.fill().await, "closed inside a response body");
                }
                r.body = String::from_utf8_lossy(&self.buf[end + 4..end + 4 + len]).into_owned();
                self.buf.drain(..end + 4 + len);
                return r;
            }
            assert!(
                self.fill().await,
                "closed before a response: {:?}",
                self.buf
            );
        }
    }

    /// Whether the server closes the connection (after anything still buffered) within 5 s.
    async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.s.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("write");
    }
}

async fn connect(server: &Running) -> Reader {
    Reader::new(TcpStream::connect(server.addr).await.expect("connect"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let server = start().await;
    let a = auth("pipe");
    let body = r#"{"title":"first"}"#;
    let mut c = connect(&server).await;
    // Three requests in one write: a create, a listing, a health check.
    c.send(
        format!(
            "POST /api/pipe/tasks HTTP/1.1\r\nHost: x\r\n{a}Content-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}\
             GET /api/pipe/tasks HTTP/1.1\r\nHost: x\r\n{a}\r\n\
             GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    let created = c.response(false).await;
    assert_eq!(created.status, 201, "{created:?}");
    let listed = c.response(false).await;
    assert_eq!(listed.status, 200, "{listed:?}");
    assert!(listed.body.contains("\"title\":\"first\""), "{listed:?}");
    assert!(listed.body.contains("\"total\":1"), "{listed:?}");
    let health = c.response(false).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body, r#"{"status":"ok"}"#);
    assert!(health.header("date").is_some(), "{health:?}");
    assert_eq!(health.header("connection"), None);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_and_expect_continue_bodies_are_read() {
    let server = start().await;
    let a = auth("chunky");
    let mut c = connect(&server).await;
    c.send(
        format!(
            "POST /api/chunky/tasks HTTP/1.1\r\nHost: x\r\n{a}Content-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n\
             a\r\n{{\"title\": \r\n9;ext=1\r\n\"chunked\"\r\n1\r\n}}\r\n0\r\nX-Trailer: 1\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert!(r.body.contains("\"title\":\"chunked\""), "{r:?}");

    // Expect: 100-continue: the interim response comes before the body is sent.
    let body = r#"{"title":"after continue"}"#;
    c.send(
        format!(
            "POST /api/chunky/tasks HTTP/1.1\r\nHost: x\r\n{a}Content-Type: application/json\r\n\
             Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    let interim = c.response(false).await;
    assert_eq!(interim.status, 100, "{interim:?}");
    c.send(body.as_bytes()).await;
    let r = c.response(false).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert!(r.body.contains("after continue"), "{r:?}");

    // A request refused before its body is read gets no 100 and its body is not waited for.
    c.send(
        b"POST /api/chunky/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Expect: 100-continue\r\nContent-Length: 10\r\n\r\n",
    )
    .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(c.closed().await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_or_malformed_heads_are_refused_and_the_connection_closes() {
    let server = start().await;
    let a = auth("smuggle");
    for (head, status) in [
        (
            format!(
                "POST /api/smuggle/tasks HTTP/1.1\r\nHost: x\r\n{a}Content-Type: application/json\r\n\
                 Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            400,
        ),
        (
            format!(
                "POST /api/smuggle/tasks HTTP/1.1\r\nHost: x\r\n{a}Content-Length: 3\r\n\
                 Content-Length: 4\r\n\r\nabcd"
            ),
            400,
        ),
        (
            "GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".into(),
            400,
        ),
        ("GET /heal\x7fthz HTTP/1.1\r\n\r\n".into(), 400),
        ("NOT HTTP AT ALL\r\n\r\n".into(), 400),
        (
            format!(
                "GET /healthz HTTP/1.1\r\nX-Big: {}\r\n\r\n",
                "a".repeat(70_000)
            ),
            431,
        ),
    ] {
        let mut c = connect(&server).await;
        c.send(head.as_bytes()).await;
        let r = c.response(false).await;
        // hyper answers what it cannot frame with a bare status line, and closes.
        assert_eq!(r.status, status, "{head:.120}: {r:?}");
        assert!(c.closed().await, "{head:.120}: connection kept open");
    }
    // Nothing was created by the smuggling attempts.
    let mut c = connect(&server).await;
    c.send(format!("GET /api/smuggle/tasks HTTP/1.1\r\nHost: x\r\n{a}\r\n").as_bytes())
        .await;
    let r = c.response(false).await;
    assert!(r.body.contains("\"total\":0"), "{r:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_413_not_a_reset() {
    let server = start().await;
    let a = auth("big");
    let body = format!(r#"{{"title":"x","description":"{}"}}"#, "d".repeat(400_000));
    let mut c = connect(&server).await;
    c.send(
        format!(
            "POST /api/big/tasks HTTP/1.1\r\nHost: x\r\n{a}Content-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    // The whole body is sent, as ordinary clients do, before the answer is read; it is still
    // arriving after the server has answered and stopped reading. A socket closed with unread
    // input would be reset, and the reset would throw away the answer on the client's side.
    for part in body.as_bytes().chunks(40_000) {
        c.send(part).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = c.response(false).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed().await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_reused_unless_asked_otherwise() {
    let server = start().await;
    let a = auth("reuse");
    let mut c = connect(&server).await;
    // A body the handler never needed (the token is missing) is skipped, not left in the way.
    let body = r#"{"title":"unread"}"#;
    c.send(
        format!(
            "POST /api/reuse/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.header("connection"), None, "{r:?}");
    // HEAD: the headers of a GET, no body (the next response follows at once).
    c.send(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let r = c.response(true).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    c.send(
        format!("GET /api/reuse/tasks HTTP/1.1\r\nHost: x\r\n{a}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body.contains("\"total\":0"),
        "the unread body created nothing: {r:?}"
    );
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed().await);

    // HTTP/1.0 closes unless it asks for keep-alive.
    let mut c = connect(&server).await;
    c.send(b"GET /healthz HTTP/1.0\r\n\r\n").await;
    assert_eq!(c.response(false).await.status, 200);
    assert!(c.closed().await);
    let mut c = connect(&server).await;
    c.send(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /healthz HTTP/1.0\r\n\r\n")
        .await;
    assert_eq!(c.response(false).await.status, 200);
    assert_eq!(c.response(false).await.status, 200);
    assert!(c.closed().await);
    server.stop().await;
}
