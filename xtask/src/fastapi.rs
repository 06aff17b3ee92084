//! The `fastapi` part of `cargo xtask bench`: the comparison server of the serving issue's
//! throughput target, a FastAPI + SQLModel app of the same listing (`xtask/fastapi/app.py`),
//! run under uvicorn against the benchmark's PostgreSQL database, so that the ratio of the two
//! is measured on the same machine in the same run instead of against a figure from another
//! machine.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::serve::http_status;

/// The app and its pinned requirements, under the repository root.
const APP_DIR: &str = "xtask/fastapi";

/// A running uvicorn with the app: a master process and one worker process per CPU (like the
/// server's tokio runtime, one worker thread per CPU).
pub struct FastApiProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// The virtual environment the app runs in, created and filled from the pinned requirements
/// when missing (the only network access: PyPI, once).
fn venv(root: &Path) -> Result<PathBuf, String> {
    let dir = root.join("target/bench/fastapi-venv");
    let uvicorn = dir.join("bin/uvicorn");
    let requirements = root.join(APP_DIR).join("requirements.txt");
    // A stamp with the requirements it was installed from: a change of pins reinstalls.
    let stamp = dir.join("requirements.installed");
    let wanted = std::fs::read_to_string(&requirements)
        .map_err(|e| format!("{}: {e}", requirements.display()))?;
    if uvicorn.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&wanted) {
        return Ok(dir);
    }
    let run = |cmd: &mut Command| -> Result<(), String> {
        let status = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
        status
            .success()
            .then_some(())
            .ok_or(format!("{cmd:?} failed: {status}"))
    };
    println!(
        "$ python3 -m venv {} && pip install -r {}",
        dir.display(),
        requirements.display()
    );
    run(Command::new("python3").arg("-m").arg("venv").arg(&dir))?;
    run(Command::new(dir.join("bin/pip"))
        .args(["install", "--quiet", "-r"])
        .arg(&requirements))?;
    std::fs::write(&stamp, wanted).map_err(|e| format!("{}: {e}", stamp.display()))?;
    Ok(dir)
}

impl FastApiProcess {
    /// Starts the app on a free port of 127.0.0.1 against `database_url`, verifying tokens with
    /// `secret`, with one worker per CPU and uvicorn's logging (warnings, no access log) into
    /// `log`; waits up to 60 s for `/healthz`.
    pub fn start(
        root: &Path,
        database_url: &str,
        secret: &str,
        log: &Path,
    ) -> Result<Self, String> {
        let venv = venv(root)?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| e.to_string())?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(venv.join("bin/uvicorn"))
            .args(["app:app", "--app-dir"])
            .arg(root.join(APP_DIR))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--workers", &workers.to_string()])
            .args(["--log-level", "warning", "--no-access-log"])
            .env("DATABASE_URL", database_url)
            .env("TODO_JWT_SECRET", secret)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("start uvicorn: {e}"))?;
        let server = FastApiProcess { child, addr };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if http_status(addr, "/healthz") == Some(200) {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!(
            "the FastAPI app did not answer /healthz (see {})",
            log.display()
        ))
    }

    /// The process ids of uvicorn and its workers.
    pub fn pids(&self) -> Vec<u32> {
        let master = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default();
        std::iter::once(master)
            .chain(children.split_whitespace().filter_map(|p| p.parse().ok()))
            .collect()
    }

    /// User + system CPU time of uvicorn and its workers.
    pub fn cpu_time(&self) -> Option<Duration> {
        self.pids()
            .iter()
            .map(|p| crate::bench::cpu_time(&p.to_string()))
            .sum()
    }

    /// The resident memory of uvicorn and its workers now, KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.pids()
            .into_iter()
            .map(|p| crate::bench::proc_status_kib(p, "VmRSS"))
            .sum()
    }
}

impl Drop for FastApiProcess {
    fn drop(&mut self) {
        // uvicorn's master stops its workers on SIGTERM.
        crate::serve::terminate(&mut self.child);
    }
}
