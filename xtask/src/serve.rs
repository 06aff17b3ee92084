//! The release `serve` binary as a child process, shared by `e2e` and `bench`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `sh -c` script that raises the open-file limit to what 1,000+ sockets need, then execs "$0".
pub const RAISE_NOFILE_AND_EXEC: &str =
    r#"ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" "$@""#;

/// Where the release build puts the server.
pub fn release_binary(root: &Path) -> std::path::PathBuf {
    root.join("target/release/examples/serve")
}

/// `cargo build --release -p todo_examples --example serve`, shared by `bench` and `e2e`.
pub fn build_release_server(root: &Path) -> Result<(), String> {
    cargo(
        root,
        &[
            "build",
            "--release",
            "-p",
            "todo_examples",
            "--example",
            "serve",
        ],
    )
}

/// Runs `cargo <args>` in `root`, echoing the command.
pub fn cargo(root: &Path, args: &[&str]) -> Result<(), String> {
    let what = format!("cargo {}", args.join(" "));
    println!("$ {what}");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(root)
        .status()
        .map_err(|e| format!("{what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// A running server binary (`target/release/examples/serve` unless told otherwise); stopped
/// with SIGTERM (graceful) when dropped.
pub struct ServeProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServeProcess {
    /// Starts `binary` on a free port of 127.0.0.1 with `env` added to a clean JWT
    /// environment (`TODO_JWT_SECRET` = `secret`, logging at `warn` into `log`), and waits up to
    /// 60 s for `/readyz` to answer 200.
    pub fn start(
        binary: &Path,
        database_url: &str,
        secret: &str,
        env: &[(&str, String)],
        log: &Path,
    ) -> Result<ServeProcess, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| e.to_string())?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(RAISE_NOFILE_AND_EXEC)
            .arg(binary)
            .env("DATABASE_URL", database_url)
            .env("TODO_ADDR", addr.to_string())
            .env("TODO_JWT_SECRET", secret)
            .env_remove("TODO_JWKS_URL")
            .env_remove("BETTER_AUTH_SECRET")
            .env("TODO_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("start serve: {e}"))?;
        let server = ServeProcess { child, addr };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if http_status(addr, "/readyz") == Some(200) {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "the server did not become ready (see {})",
            log.display()
        ))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// Sends `child` SIGTERM and waits up to 20 s for it to exit, then kills it.
pub fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `GET path` over a fresh connection; the status code.
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
