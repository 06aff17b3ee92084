//! Starts the real `serve` and `embed` example binaries on free ports and drives them over TCP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/binaries-… -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("examples").join(name)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A minimal HTTP/1.1 exchange (Connection: close): returns status, headers (lower-cased) and body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, Vec<(String, String)>, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").expect("head");
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, headers, json)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn wait_ready(port: u16, path: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok()
            && http(port, "GET", path, &[], None).0 == 200
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("server on port {port} did not become ready");
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Starts `serve` in development mode (no JWT variables) on `database_url` and `port`; returns
/// the server, what it printed up to its token, the token, and its stderr when `logs` is set.
fn start_dev_serve(
    database_url: &str,
    port: u16,
    logs: bool,
) -> (
    Server,
    Vec<String>,
    String,
    Option<std::process::ChildStderr>,
) {
    let mut child = Command::new(example("serve"))
        .env("DATABASE_URL", database_url)
        .env("TODO_ADDR", format!("127.0.0.1:{port}"))
        .env_remove("TODO_JWT_SECRET")
        .env_remove("BETTER_AUTH_SECRET")
        .env_remove("TODO_JWKS_URL")
        .stdout(Stdio::piped())
        .stderr(if logs { Stdio::piped() } else { Stdio::null() })
        .spawn()
        .expect("spawn serve (built by cargo test as an example)");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take();
    let server = Server(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = Vec::new();
    let token = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            let token = l.strip_prefix("export TOKEN=").map(str::to_owned);
            printed.push(l);
            token
        })
        .expect("development token printed");
    // Keep draining stdout so the server never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (server, printed, token, stderr)
}

/// Runs `serve` with no JWT configuration (development mode) against `database_url`, reads the
/// printed token, and drives a create / list / get / 401 / 403 round over TCP.
fn drive_serve(database_url: &str) {
    let port = free_port();
    let (server, _, token, _) = start_dev_serve(database_url, port, false);
    wait_ready(port, "/readyz");
    let auth = format!("Bearer {token}");
    let (status, headers, body) = http(
        port,
        "POST",
        "/api/demo-user/tasks",
        &[("Authorization", &auth)],
        Some(&json!({"title": "over TCP", "tags": ["Net"]})),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["data"]["id"].as_str().expect("id").to_owned();
    assert_eq!(
        header(&headers, "location"),
        Some(format!("/api/demo-user/tasks/{id}").as_str())
    );
    let (status, _, list) = http(
        port,
        "GET",
        "/api/demo-user/tasks?tag=net",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(list["meta"]["total"], 1);
    assert_eq!(list["data"][0]["title"], "over TCP");
    let (status, headers, _) = http(
        port,
        "GET",
        &format!("/api/demo-user/tasks/{id}"),
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!((status, header(&headers, "etag")), (200, Some("\"1\"")));
    let (status, headers, _) = http(port, "GET", "/api/demo-user/tasks", &[], None);
    assert_eq!(status, 401);
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/problem+json")
    );
    assert_eq!(
        http(
            port,
            "GET",
            "/api/someone-else/tasks",
            &[("Authorization", &auth)],
            None
        )
        .0,
        403
    );
    assert_eq!(http(port, "GET", "/docs", &[], None).0, 200);
    drop(server);
}

#[test]
fn serve_binary_on_sqlite() {
    let db = test_support::TestDb::sqlite();
    drive_serve(&db.url);
}

#[test]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
fn serve_binary_on_postgres() {
    let rt = test_support::tokio::runtime::Runtime::new().expect("runtime");
    let db = rt.block_on(test_support::TestDb::postgres());
    drive_serve(&db.url);
    rt.block_on(db.cleanup());
}

#[test]
fn embed_binary_with_its_own_authenticator() {
    let port = free_port();
    let _server = Server(
        Command::new(example("embed"))
            .env("TODO_ADDR", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", "sqlite::memory:")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn embed"),
    );
    wait_ready(port, "/todo/healthz");
    let (status, _, body) = http(port, "GET", "/", &[], None);
    assert_eq!(status, 200);
    assert!(body.as_str().unwrap_or("").contains("host app"));
    let key = [("X-Api-Key", "alice-key")];
    let (status, headers, created) = http(
        port,
        "POST",
        "/todo/api/alice/tasks",
        &key,
        Some(&json!({"title": "embedded"})),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["data"]["id"].as_str().expect("id");
    assert_eq!(
        header(&headers, "location"),
        Some(format!("/todo/api/alice/tasks/{id}").as_str())
    );
    let (status, _, list) = http(port, "GET", "/todo/api/alice/tasks", &key, None);
    assert_eq!((status, list["meta"]["total"].clone()), (200, json!(1)));
    assert_eq!(
        http(
            port,
            "GET",
            "/todo/api/alice/tasks",
            &[("X-Api-Key", "wrong")],
            None
        )
        .0,
        401
    );
    assert_eq!(
        http(
            port,
            "GET",
            "/todo/api/alice/tasks",
            &[("X-Api-Key", "bob-key")],
            None
        )
        .0,
        403
    );
    let (status, _, spec) = http(port, "GET", "/todo/openapi.json", &[], None);
    assert_eq!(status, 200);
    assert_eq!(spec["servers"][0]["url"], "/todo");
}

/// A run with a configured secret, a database password and real tokens, logging at `trace`:
/// none of them appears in anything the server prints, and the URL is logged masked.
#[test]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
fn logs_never_carry_secrets() {
    let rt = test_support::tokio::runtime::Runtime::new().expect("runtime");
    let db = rt.block_on(test_support::TestDb::postgres());
    let password = "pw-Zq81xWv3";
    let url = db
        .url
        .replacen("://postgres@", &format!("://postgres:{password}@"), 1);
    assert!(url.contains(password), "test needs a user@ URL: {url}");
    let secret = "log-test-secret-7f3a9c1e5b2d4f6a8c0e";
    let port = free_port();
    let mut child = Command::new(example("serve"))
        .env("DATABASE_URL", &url)
        .env("TODO_ADDR", format!("127.0.0.1:{port}"))
        .env("TODO_JWT_SECRET", secret)
        .env("TODO_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let (mut out, mut err) = (
        child.stdout.take().expect("stdout"),
        child.stderr.take().expect("stderr"),
    );
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let server = Server(child);
    wait_ready(port, "/readyz");
    let token =
        todo_http::auth::mint_hs256(secret, "alice", Duration::from_secs(300)).expect("token");
    let bad_token = format!("{token}x");
    let auth = format!("Bearer {token}");
    let bad = format!("Bearer {bad_token}");
    assert_eq!(
        http(
            port,
            "POST",
            "/api/alice/tasks",
            &[("Authorization", &auth)],
            Some(&json!({"title": "t"}))
        )
        .0,
        201
    );
    assert_eq!(
        http(
            port,
            "GET",
            "/api/alice/tasks",
            &[("Authorization", &auth)],
            None
        )
        .0,
        200
    );
    assert_eq!(
        http(
            port,
            "GET",
            "/api/alice/tasks",
            &[("Authorization", &bad)],
            None
        )
        .0,
        401
    );
    let _ = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status();
    drop(server);
    let logs = format!(
        "{}{}",
        out_reader.join().unwrap_or_default(),
        err_reader.join().unwrap_or_default()
    );
    assert!(logs.contains("request"), "the run logged requests: {logs}");
    for (what, needle) in [
        ("secret", secret),
        ("password", password),
        ("token", &token[20..]),
        ("bad token", &bad_token[20..]),
    ] {
        assert!(!logs.contains(needle), "the {what} appears in the logs");
    }
    assert!(
        logs.contains("postgres:****@"),
        "DATABASE_URL is logged masked"
    );
    rt.block_on(db.cleanup());
}

/// Sends SIGTERM to `child` and waits for it to exit, failing with `why` after `within`.
fn terminate(
    child: &mut std::process::Child,
    within: Duration,
    why: &str,
) -> std::process::ExitStatus {
    let signalled = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return s;
        }
        assert!(signalled.elapsed() < within, "{why}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What became of one request sent during shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A complete response with this status.
    Answered(u16),
    /// Part of a response, then the connection ended.
    CutShort,
    /// The connection was refused: the listener is closed.
    Refused,
    /// Closed cleanly (FIN) before any byte of a response: the server had not started on the
    /// request, and a client may safely retry it.
    ClosedUnserved,
    /// Reset (RST): the client cannot tell whether its request ran.
    Reset,
}

/// Reads one response (by `Content-Length`) off `s`, after `req` was written.
fn exchange_on(s: &mut TcpStream, req: &[u8]) -> Outcome {
    let is_reset = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        )
    };
    if let Err(e) = s.write_all(req) {
        return if is_reset(&e) {
            Outcome::Reset
        } else {
            Outcome::ClosedUnserved
        };
    }
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&raw).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse::<usize>().ok())
            });
            if let Some(n) = len
                && body.len() >= n
            {
                return Outcome::Answered(
                    text.split(' ')
                        .nth(1)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0),
                );
            }
        }
        match s.read(&mut buf) {
            Ok(0) if raw.is_empty() => return Outcome::ClosedUnserved,
            Ok(0) => return Outcome::CutShort,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if is_reset(&e) && raw.is_empty() => return Outcome::Reset,
            Err(_) => return Outcome::CutShort,
        }
    }
}

/// Clients during SIGTERM: each either opens a connection per request or keeps one open and
/// sends request after request on it; reads (`GET`) and writes (`POST`) alternate.
fn shutdown_client(
    port: u16,
    auth: &str,
    keep_alive: bool,
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<Outcome> {
    let mut seen = Vec::new();
    let mut conn: Option<TcpStream> = None;
    let mut i = 0u32;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        i += 1;
        let close = if keep_alive {
            ""
        } else {
            "Connection: close\r\n"
        };
        let req = if i.is_multiple_of(2) {
            let body = format!(r#"{{"title":"during shutdown {i}"}}"#);
            format!(
                "POST /api/demo-user/tasks HTTP/1.1\r\nHost: x\r\n{close}Authorization: {auth}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        } else {
            format!(
                "GET /api/demo-user/tasks?limit=50 HTTP/1.1\r\nHost: x\r\n{close}Authorization: {auth}\r\n\r\n"
            )
        };
        let mut s = match conn.take() {
            Some(s) => s,
            None => match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => s,
                Err(_) => {
                    seen.push(Outcome::Refused);
                    break;
                }
            },
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let outcome = exchange_on(&mut s, req.as_bytes());
        seen.push(outcome);
        if keep_alive && matches!(outcome, Outcome::Answered(_)) {
            conn = Some(s);
        }
    }
    seen
}

/// SIGTERM during a read and write load, over new and kept-alive connections: every request the
/// server started on completes (no 5xx, no response cut short), no connection is ever reset (one
/// closed unserved is closed cleanly, so its client can retry), new connections are refused, and
/// the process exits cleanly within the grace period.
#[test]
fn sigterm_drains_in_flight_requests() {
    let db = test_support::TestDb::sqlite();
    let port = free_port();
    let mut child = Command::new(example("serve"))
        .env("DATABASE_URL", &db.url)
        .env("TODO_ADDR", format!("127.0.0.1:{port}"))
        .env("TODO_SHUTDOWN_GRACE_SECS", "5")
        .env_remove("TODO_JWT_SECRET")
        .env_remove("BETTER_AUTH_SECRET")
        .env_remove("TODO_JWKS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let token = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("export TOKEN=").map(str::to_owned))
        .expect("token");
    std::thread::spawn(move || lines.for_each(drop));
    wait_ready(port, "/readyz");
    let auth = format!("Bearer {token}");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (auth, stop) = (auth.clone(), stop.clone());
            std::thread::spawn(move || shutdown_client(port, &auth, w % 2 == 0, &stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let status = terminate(
        &mut child,
        Duration::from_secs(10),
        "not stopped within the grace period",
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen: Vec<Outcome> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap_or_default())
        .collect();
    assert!(status.success(), "exit status {status}");
    let answered = seen
        .iter()
        .filter(|o| matches!(o, Outcome::Answered(_)))
        .count();
    assert!(answered > 20, "the load ran ({answered} responses)");
    let wrong: Vec<_> = seen
        .iter()
        .filter(|o| {
            !matches!(
                o,
                Outcome::Answered(200 | 201) | Outcome::Refused | Outcome::ClosedUnserved
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "every request was answered 200/201 or closed cleanly unserved: {wrong:?}"
    );
    assert_eq!(
        TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()),
        None,
        "no longer accepting"
    );
}

/// Two server processes started together on one empty PostgreSQL database both come up: the
/// migration lock serialises them and the schema is applied once.
#[test]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
fn two_servers_start_together_on_an_empty_postgres_database() {
    let rt = test_support::tokio::runtime::Runtime::new().expect("runtime");
    let db = rt.block_on(test_support::TestDb::postgres());
    let start = |port: u16| {
        Server(
            Command::new(example("serve"))
                .env("DATABASE_URL", &db.url)
                .env("TODO_ADDR", format!("127.0.0.1:{port}"))
                .env("TODO_JWT_SECRET", "two-servers-secret-0123456789abcdef01")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn serve"),
        )
    };
    let (pa, pb) = (free_port(), free_port());
    let (a, b) = (start(pa), start(pb));
    wait_ready(pa, "/readyz");
    wait_ready(pb, "/readyz");
    let token = todo_http::auth::mint_hs256(
        "two-servers-secret-0123456789abcdef01",
        "alice",
        Duration::from_secs(60),
    )
    .expect("token");
    let auth = format!("Bearer {token}");
    assert_eq!(
        http(
            pa,
            "POST",
            "/api/alice/tasks",
            &[("Authorization", &auth)],
            Some(&json!({"title": "via a"}))
        )
        .0,
        201
    );
    let (status, _, list) = http(
        pb,
        "GET",
        "/api/alice/tasks",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!((status, list["meta"]["total"].clone()), (200, json!(1)));
    drop((a, b));
    rt.block_on(db.cleanup());
}

/// Runs `serve` with `args` and `envs` (no JWT variables inherited) to completion within 30 s:
/// exit code, stdout, stderr.
fn run_serve(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(example("serve"));
    cmd.args(args)
        .env_remove("TODO_JWT_SECRET")
        .env_remove("BETTER_AUTH_SECRET")
        .env_remove("TODO_JWKS_URL")
        .env_remove("DATABASE_URL")
        .env_remove("TODO_ADDR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn serve");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut out = String::new();
            let mut err = String::new();
            child.stdout.take().map(|mut s| s.read_to_string(&mut out));
            child.stderr.take().map(|mut s| s.read_to_string(&mut err));
            return (status.code(), out, err);
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("serve {args:?} did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `--help` and `--version` print and exit instead of starting a server; `--help` lists every
/// setting with its environment variable.
#[test]
fn help_and_version_exit_without_serving() {
    let (code, out, _) = run_serve(&["--help"], &[]);
    assert_eq!(code, Some(0));
    for expected in [
        "Usage: serve [OPTIONS] [COMMAND]",
        "migrate",
        "check-config",
        "--addr <ADDR>",
        "[env: TODO_ADDR]",
        "[default: 127.0.0.1:8080]",
        "[env: TODO_WRITE_TIMEOUT_SECS]",
        "[env: TODO_LOG_FORMAT]",
    ] {
        assert!(out.contains(expected), "--help lacks {expected:?}:\n{out}");
    }
    let (code, out, _) = run_serve(&["--version"], &[]);
    assert_eq!(
        (code, out.trim()),
        (Some(0), concat!("serve ", env!("CARGO_PKG_VERSION")))
    );
    // A secret given by environment is never shown by --help.
    let (_, out, _) = run_serve(&["--help"], &[("TODO_JWT_SECRET", "shown-nowhere-123")]);
    assert!(!out.contains("shown-nowhere-123"));
}

/// Every startup error names the setting involved and what to do, and exits non-zero.
#[test]
fn startup_errors_name_the_setting() {
    let db = test_support::TestDb::sqlite();
    let sqlite = [("DATABASE_URL", db.url.as_str())];
    // A port alone is not an address.
    let (code, _, err) = run_serve(&["check-config"], &[("TODO_ADDR", "8080")]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(r#"TODO_ADDR="8080" (or --addr) is not valid: expected host:port, such as 127.0.0.1:8080"#),
        "{err}"
    );
    // Numbers say which variable is not a number.
    let (code, _, err) = run_serve(&["check-config"], &[("TODO_MAX_ACTIVE", "lots")]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(
            r#"TODO_MAX_ACTIVE="lots" (or --max-active) is not valid: expected a whole number"#
        ),
        "{err}"
    );
    // An address in use: which one, and the setting that moves it.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (code, _, err) = run_serve(&[], &[sqlite[0], ("TODO_ADDR", &addr)]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "cannot listen on {addr}: the address is already in use"
        )) && err.contains("set TODO_ADDR (--addr) to a free address"),
        "{err}"
    );
    drop(taken);
    // An unreachable PostgreSQL: the driver's reason, at once, not the pool's timeout.
    let closed = free_port();
    let url = format!("postgres://postgres@127.0.0.1:{closed}/todo");
    let started = Instant::now();
    let (code, _, err) = run_serve(&["migrate"], &[("DATABASE_URL", &url)]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "cannot connect to the database of DATABASE_URL={url}"
        )) && err.contains("Connection refused")
            && !err.contains("pool timed out"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered before the pool's 5 s timeout"
    );
    // A bad log filter.
    let (code, _, err) = run_serve(&["check-config"], &[("TODO_LOG", "info,=")]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("TODO_LOG=\"info,=\" (or --log) is not a log filter"),
        "{err}"
    );
}

/// `TODO_LOG_FORMAT=json` writes one JSON object per line, errors included.
#[test]
fn json_logs_are_one_object_per_line() {
    let (code, _, err) = run_serve(
        &["check-config"],
        &[("TODO_LOG_FORMAT", "json"), ("TODO_ADDR", "8080")],
    );
    assert_eq!(code, Some(1));
    let lines: Vec<Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l:?}")))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert_eq!(lines[0]["level"], "ERROR");
    assert!(
        lines[0]["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("TODO_ADDR")),
        "{err}"
    );
}

/// In development mode the secret is kept beside the SQLite file (mode 0600): a token minted by
/// `serve token` before the first start still works after a restart, the server says where the
/// secret is, `healthcheck` sees it up, and logs piped to a file carry no ANSI colour codes.
#[test]
fn development_tokens_survive_a_restart() {
    let db = test_support::TestDb::sqlite();
    let file = db
        .url
        .strip_prefix("sqlite://")
        .expect("sqlite url")
        .to_owned()
        + ".secret";
    let (code, out, err) = run_serve(
        &["token", "alice", "--ttl", "10m"],
        &[("DATABASE_URL", &db.url)],
    );
    assert_eq!(code, Some(0), "{err}");
    let token = out.trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file)
            .expect("secret file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    for round in 0..2 {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let (server, printed, _, stderr) = start_dev_serve(&db.url, port, true);
        let mut stderr = stderr.expect("stderr");
        assert!(
            printed
                .iter()
                .any(|l| l.contains(&format!("The secret saved in {file} is reused"))),
            "round {round}: {printed:?}"
        );
        wait_ready(port, "/readyz");
        let (status, _, _) = http(
            port,
            "GET",
            "/api/alice/tasks",
            &[("Authorization", &format!("Bearer {token}"))],
            None,
        );
        assert_eq!(
            status, 200,
            "round {round}: the token minted before start works"
        );
        let (code, _, err) = run_serve(&["healthcheck"], &[("TODO_ADDR", &addr)]);
        assert_eq!(code, Some(0), "{err}");
        drop(server);
        let mut logs = String::new();
        let _ = stderr.read_to_string(&mut logs);
        assert!(logs.contains("listening"), "{logs}");
        assert!(
            !logs.contains('\x1b'),
            "no ANSI codes when stderr is not a terminal: {logs:?}"
        );
    }
    // Nothing listening: the health check fails.
    let (code, _, _) = run_serve(
        &["healthcheck"],
        &[("TODO_ADDR", &format!("127.0.0.1:{}", free_port()))],
    );
    assert_eq!(code, Some(1));
}

/// A missing PostgreSQL database is explained (with `createdb`), or created on request.
#[test]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
fn a_missing_database_is_explained_or_created() {
    let admin = test_support::admin_url();
    let name = format!("todo_missing_{}", std::process::id());
    let url = test_support::with_database(&admin, &name);
    let (code, _, err) = run_serve(&["migrate"], &[("DATABASE_URL", &url)]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("database \"{name}\" does not exist"))
            && err.contains(&format!("createdb {name}"))
            && err.contains("TODO_CREATE_DATABASE=true"),
        "{err}"
    );
    let (code, out, err) = run_serve(&["migrate", "--create-database"], &[("DATABASE_URL", &url)]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("applied migrations"), "{out}");
    let (code, out, _) = run_serve(&["migrate"], &[("DATABASE_URL", &url)]);
    assert_eq!((code, out.trim()), (Some(0), "the database is up to date"));
    let rt = test_support::tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(test_support::TestDb::adopt_postgres(&name).cleanup());
}

/// Starts `serve` on `database_url` with a shared JWT secret.
fn start_with_secret(database_url: &str, port: u16, secret: &str) -> Server {
    start_with_env(database_url, port, secret, &[])
}

/// Starts `serve` on `database_url` with a shared JWT secret and more settings.
fn start_with_env(database_url: &str, port: u16, secret: &str, envs: &[(&str, &str)]) -> Server {
    let s = Server(
        Command::new(example("serve"))
            .env("DATABASE_URL", database_url)
            .env("TODO_ADDR", format!("127.0.0.1:{port}"))
            .env("TODO_JWT_SECRET", secret)
            .envs(envs.iter().copied())
            .env_remove("BETTER_AUTH_SECRET")
            .env_remove("TODO_JWKS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve"),
    );
    wait_ready(port, "/readyz");
    s
}

/// API.md "Idempotency" across instances: a create sent to one server and retried to another
/// on the same PostgreSQL database gets the stored response, and one task exists.
#[test]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
fn an_idempotent_retry_to_another_instance_is_replayed() {
    const SECRET: &str = "idempotent-retry-secret-0123456789abcdef";
    let rt = test_support::tokio::runtime::Runtime::new().expect("runtime");
    let db = rt.block_on(test_support::TestDb::postgres());
    let (pa, pb) = (free_port(), free_port());
    let (a, b) = (
        start_with_secret(&db.url, pa, SECRET),
        start_with_secret(&db.url, pb, SECRET),
    );
    let token =
        todo_http::auth::mint_hs256(SECRET, "alice", Duration::from_secs(60)).expect("token");
    let auth = format!("Bearer {token}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Idempotency-Key", "retry-1"),
    ];
    let body = json!({"title": "exactly once"});
    let (s1, h1, b1) = http(pa, "POST", "/api/alice/tasks", &headers, Some(&body));
    assert_eq!(s1, 201, "{b1}");
    let (s2, h2, b2) = http(pb, "POST", "/api/alice/tasks", &headers, Some(&body));
    assert_eq!(s2, 201, "{b2}");
    assert_eq!(header(&h2, "idempotent-replayed"), Some("true"));
    assert_eq!(b2, b1);
    assert_eq!(header(&h2, "location"), header(&h1, "location"));
    let (_, _, list) = http(
        pb,
        "GET",
        "/api/alice/tasks",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(list["meta"]["total"], 1);
    drop((a, b));
    rt.block_on(db.cleanup());
}

/// API.md "Batch": a server killed with SIGKILL while it applies a batch leaves all of it or
/// none of it (here: sent with no delay, then at growing delays), and `/changes` holds no
/// entry for a record that does not exist.
#[test]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
fn a_batch_killed_mid_flight_applies_all_or_nothing() {
    const SECRET: &str = "killed-batch-secret-0123456789abcdef01";
    let rt = test_support::tokio::runtime::Runtime::new().expect("runtime");
    let db = rt.block_on(test_support::TestDb::postgres());
    let token =
        todo_http::auth::mint_hs256(SECRET, "kim", Duration::from_secs(120)).expect("token");
    let auth = format!("Bearer {token}");
    let ops: Vec<Value> = (0..100)
        .map(|i| json!({"op": "create", "task": {"title": format!("t{i}"), "tags": ["batch"]}}))
        .collect();
    let body = json!({ "operations": ops }).to_string();
    let mut seen = Vec::new();
    for delay_ms in [0u64, 5, 15, 40] {
        let port = free_port();
        let mut server = start_with_secret(&db.url, port, SECRET);
        let (_, _, before) = http(
            port,
            "GET",
            "/api/kim/changes",
            &[("Authorization", &auth)],
            None,
        );
        let since = before["meta"]["next"].as_str().expect("token").to_owned();
        let (_, _, count) = http(
            port,
            "GET",
            "/api/kim/tasks?limit=1",
            &[("Authorization", &auth)],
            None,
        );
        let base = count["meta"]["total"].as_u64().expect("total");
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let req = format!(
            "POST /api/kim/batch HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).expect("write");
        std::thread::sleep(Duration::from_millis(delay_ms));
        server.0.kill().expect("SIGKILL");
        let _ = server.0.wait();
        drop(server);

        let port = free_port();
        let _again = start_with_secret(&db.url, port, SECRET);
        let (_, _, count) = http(
            port,
            "GET",
            "/api/kim/tasks?limit=1",
            &[("Authorization", &auth)],
            None,
        );
        let added = count["meta"]["total"].as_u64().expect("total") - base;
        assert!(
            added == 0 || added == 100,
            "a killed batch left {added} of 100 tasks"
        );
        let (status, _, changes) = http(
            port,
            "GET",
            &format!("/api/kim/changes?since={since}&limit=1000"),
            &[("Authorization", &auth)],
            None,
        );
        assert_eq!(status, 200, "{changes}");
        assert_eq!(changes["meta"]["has_more"], false);
        let logged = changes["data"]["tasks"].as_array().expect("tasks").len() as u64;
        assert_eq!(logged, added, "the change log and the tasks disagree");
        assert!(
            changes["data"]["deleted"]
                .as_array()
                .expect("deleted")
                .is_empty()
        );
        seen.push(added);
    }
    assert!(
        seen.contains(&0),
        "no kill landed before the commit: {seen:?}"
    );
    rt.block_on(db.cleanup());
}

/// Reads an SSE response on `s` until `want` appears in it (or `within` passes); returns what
/// was read.
fn read_until(s: &mut TcpStream, want: &str, within: Duration) -> String {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_millis(50))).ok();
    while start.elapsed() < within {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if String::from_utf8_lossy(&seen).contains(want) {
            break;
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Two `serve` processes on one PostgreSQL database: a write through A reaches an `/events`
/// stream on B within a second; SIGTERM ends B promptly with the stream still open.
#[test]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
fn events_cross_instances_on_postgres() {
    const SECRET: &str = "events-two-servers-secret-0123456789abc";
    let rt = test_support::tokio::runtime::Runtime::new().expect("runtime");
    let db = rt.block_on(test_support::TestDb::postgres());
    let start = |port: u16| {
        Command::new(example("serve"))
            .env("DATABASE_URL", &db.url)
            .env("TODO_ADDR", format!("127.0.0.1:{port}"))
            .env("TODO_JWT_SECRET", SECRET)
            .env("TODO_SSE_KEEPALIVE_SECS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve")
    };
    let (pa, pb) = (free_port(), free_port());
    let a = Server(start(pa));
    wait_ready(pa, "/readyz");
    let mut b = start(pb);
    wait_ready(pb, "/readyz");
    let token = todo_http::auth::mint_hs256(SECRET, "alice", Duration::from_secs(60)).expect("t");
    let auth = format!("Bearer {token}");
    let mut stream = TcpStream::connect(("127.0.0.1", pb)).expect("connect");
    stream
        .write_all(
            format!(
                "GET /api/alice/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n\r\n"
            )
            .as_bytes(),
        )
        .expect("write");
    // The stream is up once its first keep-alive arrives.
    let head = read_until(&mut stream, ": keep-alive", Duration::from_secs(5));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    let written = Instant::now();
    let (status, _, created) = http(
        pa,
        "POST",
        "/api/alice/tasks",
        &[("Authorization", &auth)],
        Some(&json!({"title": "via a"})),
    );
    assert_eq!(status, 201);
    let id = created["data"]["id"].as_str().expect("id").to_owned();
    let seen = read_until(&mut stream, &id, Duration::from_secs(3));
    assert!(seen.contains("event: task.created"), "{seen}");
    assert!(
        written.elapsed() < Duration::from_secs(1),
        "the event took {:?}",
        written.elapsed()
    );
    // SIGTERM: B ends the open stream and exits well within its 10 s grace.
    let status = terminate(
        &mut b,
        Duration::from_secs(3),
        "an open stream held the shutdown",
    );
    assert!(status.success(), "exit status {status}");
    drop((a, stream));
    rt.block_on(db.cleanup());
}

/// What a webhook receiver got: each request's `webhook-id` and body.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>;

/// A webhook receiver on loopback for `serve`'s sender: answers every request 204 after
/// `delay`, and records each request's `webhook-id` and body.
fn webhook_receiver(delay: Duration) -> (u16, Received) {
    use std::sync::{Arc, Mutex};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
    let port = listener.local_addr().expect("addr").port();
    let got: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let g = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let g = g.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().expect("clone"));
                let mut w = conn;
                loop {
                    let (mut id, mut len) = (String::new(), 0usize);
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':') {
                            match k.trim().to_ascii_lowercase().as_str() {
                                "webhook-id" => id = v.trim().to_owned(),
                                "content-length" => len = v.trim().parse().unwrap_or(0),
                                _ => {}
                            }
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    std::thread::sleep(delay);
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    g.lock().expect("lock").push((id, v));
                    if w.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (port, got)
}

/// Starts `serve` with webhooks allowed to reach loopback over http.
fn start_with_webhooks(database_url: &str, port: u16, secret: &str) -> Server {
    start_with_env(
        database_url,
        port,
        secret,
        &[
            ("TODO_WEBHOOK_ALLOW_HTTP", "true"),
            ("TODO_WEBHOOK_ALLOW_PRIVATE", "true"),
        ],
    )
}

/// API.md "Webhooks": deliveries are queued in the transaction of their change, so a server
/// killed with SIGKILL while deliveries are pending or in flight loses none: a restarted
/// server sends every event at least once, each event under one `webhook-id` whichever
/// attempt carried it.
#[test]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
fn webhook_deliveries_survive_a_kill() {
    const SECRET: &str = "webhook-kill-secret-0123456789abcdef0123";
    let rt = test_support::tokio::runtime::Runtime::new().expect("runtime");
    let db = rt.block_on(test_support::TestDb::postgres());
    let token =
        todo_http::auth::mint_hs256(SECRET, "wendy", Duration::from_secs(300)).expect("token");
    let auth = format!("Bearer {token}");
    let (rport, got) = webhook_receiver(Duration::from_millis(100));
    let port = free_port();
    let mut first = start_with_webhooks(&db.url, port, SECRET);
    let hook = json!({"url": format!("http://127.0.0.1:{rport}/hook"), "events": ["task.created"]});
    let (status, _, created) = http(
        port,
        "POST",
        "/api/wendy/webhooks",
        &[("Authorization", &auth)],
        Some(&hook),
    );
    assert_eq!(status, 201, "{created}");
    let ops: Vec<Value> = (0..60)
        .map(|i| json!({"op": "create", "task": {"title": format!("w{i}")}}))
        .collect();
    let (status, _, batch) = http(
        port,
        "POST",
        "/api/wendy/batch",
        &[("Authorization", &auth)],
        Some(&json!({ "operations": ops })),
    );
    assert_eq!(status, 200, "{batch}");
    let ids: std::collections::BTreeSet<String> = batch["data"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["data"]["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 60);
    // Some delivered, the rest pending or in flight: kill.
    let start = Instant::now();
    while got.lock().expect("lock").len() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "nothing delivered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    first.0.kill().expect("SIGKILL");
    let _ = first.0.wait();
    let before = got.lock().expect("lock").len();
    assert!(
        before < 60,
        "everything was delivered before the kill: {before}"
    );

    let port = free_port();
    let _second = start_with_webhooks(&db.url, port, SECRET);
    let start = Instant::now();
    loop {
        let seen: std::collections::BTreeSet<String> = got
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|(_, v)| v["data"]["task"]["id"].as_str().map(str::to_owned))
            .collect();
        if seen == ids {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} of 60 events delivered after the restart",
            seen.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = got.lock().expect("lock").clone();
    let mut by_id: std::collections::HashMap<String, String> = Default::default();
    let mut by_task: std::collections::HashMap<String, String> = Default::default();
    for (id, v) in &got {
        assert_eq!(v["type"], "task.created");
        let task = v["data"]["task"]["id"]
            .as_str()
            .expect("task id")
            .to_owned();
        assert_eq!(by_id.entry(id.clone()).or_insert(task.clone()), &task);
        assert_eq!(
            by_task.entry(task).or_insert(id.clone()),
            id,
            "one webhook-id per event"
        );
    }
    assert_eq!(by_id.len(), 60);
    rt.block_on(db.cleanup());
}

/// API.md "Webhooks" with two `serve` processes on one PostgreSQL database: both run the
/// sender, and every event is delivered exactly once between them.
#[test]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
fn two_servers_deliver_each_webhook_event_once() {
    const SECRET: &str = "webhook-pair-secret-0123456789abcdef01234";
    let rt = test_support::tokio::runtime::Runtime::new().expect("runtime");
    let db = rt.block_on(test_support::TestDb::postgres());
    let token =
        todo_http::auth::mint_hs256(SECRET, "wes", Duration::from_secs(300)).expect("token");
    let auth = format!("Bearer {token}");
    let (rport, got) = webhook_receiver(Duration::from_millis(5));
    let (pa, pb) = (free_port(), free_port());
    let (a, b) = (
        start_with_webhooks(&db.url, pa, SECRET),
        start_with_webhooks(&db.url, pb, SECRET),
    );
    let hook = json!({"url": format!("http://127.0.0.1:{rport}/hook"), "events": ["task.created"]});
    let (status, _, created) = http(
        pa,
        "POST",
        "/api/wes/webhooks",
        &[("Authorization", &auth)],
        Some(&hook),
    );
    assert_eq!(status, 201, "{created}");
    for (i, port) in (0..80).zip([pa, pb].into_iter().cycle()) {
        let body = json!({"title": format!("t{i}")});
        let (status, _, t) = http(
            port,
            "POST",
            "/api/wes/tasks",
            &[("Authorization", &auth)],
            Some(&body),
        );
        assert_eq!(status, 201, "{t}");
    }
    let start = Instant::now();
    while got.lock().expect("lock").len() < 80 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not every event delivered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Time for a second copy to arrive, were one sent.
    std::thread::sleep(Duration::from_secs(1));
    let got = got.lock().expect("lock").clone();
    let ids: std::collections::BTreeSet<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!((got.len(), ids.len()), (80, 80), "each event sent once");
    drop((a, b));
    rt.block_on(db.cleanup());
}
