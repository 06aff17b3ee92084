//! `cargo xtask bench [--quick] [--backend postgres|sqlite]… [--connections 64,1000]
//! [--out FILE] [--db-max-connections N] [--server PATH] [--only PART,…]`: HTTP load benchmarks
//! of the release server, with a direct-store baseline, written as Markdown. `--server` measures
//! another build of the server (to compare two under the same conditions); `--only` runs only
//! some parts (`direct`, `list`, `filtered`, `get`, `position`, `subtasks`, `heavy`, `open`,
//! `create`, `patch`, `toggle`, `move`, `mix`, `sync`, `recurring`, `events`, `reminders`,
//! `webhooks`, `fastapi`).
//!
//! 1. Builds the server (`--example serve`) and xtask itself in release, then re-runs itself from
//!    the release binary under `sh -c 'ulimit -n 65536; exec …'` (the loader holds 1,000 sockets;
//!    a debug-built loader would measure itself).
//! 2. Per backend (PostgreSQL on a fresh database from `test_support`, and a fresh SQLite file):
//!    seeds it (`seed.rs`: 10 lists per user, a fifth of the tasks subtasks, one heavy user of
//!    10,000 tasks), starts the server (`ulimit -n
//!    65536` wrapper) and drives it with `load.rs`: one connection per user, each with its own
//!    HS256 token. Beside it, the **direct-store baseline** runs in-process (`UserTasks::list` /
//!    `get`, same concurrency, same pool size, a 2-worker runtime like the server's); list is
//!    measured in alternating slices, direct then HTTP, so that their ratio compares the two on
//!    the same machine at the same times.
//! 3. Scenarios, in this order so reads see the seeded data untouched: list, list with filter +
//!    search + sort, get, a list's top level by position, a task's subtasks; the three lists
//!    again for the heavy user alone (one connection); the
//!    open-loop list runs (fixed arrival rate, latency from the intended
//!    send time: 2,000 req/s over 1,000 connections, then half the closed-loop list throughput
//!    just measured, a rate the server sustains); then create, patch, toggle, move; then the mix
//!    (70 % reads). Each closed-loop scenario at 64 and 1,000 connections (`--quick`: 64 only,
//!    no separate patch/toggle runs, 3-second windows; `--connections` overrides the counts).
//! 4. After each scenario: the server's peak RSS (`VmHWM`, reset before the scenario through
//!    `/proc/<pid>/clear_refs`) and its CPU use (`/proc/<pid>/stat`).
//! 5. Then the parts about keeping clients in step (`live.rs`), in this order: `sync` (the heavy
//!    user's initial sync through `GET /changes`, incremental syncs after 10 patches, `POST
//!    /batch` of 100 creates at 1 and 64 connections, and `patch` at 64 connections compared
//!    with the run before the change log); `recurring` (a fifth of every user's tasks made
//!    daily-recurring, then toggle at 64 connections on one-off tasks, on all tasks and on the
//!    recurring ones, in alternating slices); then, on fresh server instances (two sharing the
//!    database on PostgreSQL, one on SQLite), `events` (10,000 idle `GET /events` streams spread
//!    over the seeded users and the server's RSS with them open; then the fan-out: 1,000 users
//!    each holding one stream, alternating over the instances, while an open-loop writer sends
//!    1,000 creates and patches a second for 10 s, for random ones of those users, to the
//!    instances in turn; commit-to-receipt latency from each write's `updated_at` to its
//!    event on the user's stream, the achieved rate and the events missed) and `reminders`
//!    (PostgreSQL only: 10,000 reminders due in the same second, fired by both instances,
//!    timed and checked to fire exactly once). `--quick` runs them at small sizes (500 idle
//!    streams, a fan-out of 200 users at 200 writes/s for 3 s, 1,000 reminders, fewer
//!    repetitions).
//! 6. Last, `webhooks` (`webhooks.rs`): 50 users each with a webhook to a receiver in this
//!    process; 10,000 deliveries (`--quick`: 2,000) queued through the store, then drained by
//!    `Store::run_webhook_sender` run here (the same code `serve` runs), timed and checked to
//!    arrive exactly once; then creates at 500/s with the sender running, and each delivery's
//!    lag from the write's timestamp to its receipt.
//!
//! 7. With `list` on PostgreSQL, `fastapi` (`fastapi.rs`): a FastAPI + SQLModel app of the same
//!    listing (`xtask/fastapi/app.py`, in a virtual environment made from its pinned
//!    requirements when missing) on the same database, its list at 64 connections measured in
//!    slices alternating with this server's.
//!
//! The full run writes `BENCHMARKS.md` at the repository root; `--quick` writes
//! `target/bench/BENCHMARKS-quick.md` (so a development run never replaces the recorded numbers)
//! unless `--out` says otherwise.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Connection;
use test_support::TestDb;
use todo_store::{Store, StoreOptions, TaskQuery};

use crate::live::{self, SyncRow};
use crate::load::{self, Mode, Op, Scenario, Stats, Timing, User};
use crate::seed::{self, Spec};
use crate::serve::{RAISE_NOFILE_AND_EXEC, ServeProcess};
use crate::webhooks;

/// Set in the environment of the re-executed release binary.
const CHILD_ENV: &str = "XTASK_BENCH_CHILD";
/// The command line as typed, passed to the child for the report.
const COMMAND_ENV: &str = "XTASK_BENCH_COMMAND";
/// Open-loop arrival rate, requests per second.
const OPEN_RATE: f64 = 2_000.0;
/// Slices of the paired list measurement: direct and HTTP alternate this many times, each
/// measuring a third of the window, so that the machine's speed drifting during the run (on a
/// shared host, by a quarter over minutes) moves both sides of their ratio alike.
const PAIRED_ROUNDS: u32 = 3;
/// The FastAPI app is measured at these connection counts and below: the serving issue's
/// comparison is at 64, and 1,000 connections to a thread-pooled Python server measure its
/// queue, not its speed.
const FASTAPI_MAX_CONNS: usize = 64;

/// The server's pool setting: `TODO_DB_MAX_CONNECTIONS` when `--db-max-connections` was given,
/// else nothing (the backend's default).
fn pool_env(o: &Options) -> Vec<(&'static str, String)> {
    o.db_max_connections
        .map(|n| ("TODO_DB_MAX_CONNECTIONS", n.to_string()))
        .into_iter()
        .collect()
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Short run: 64 connections, fewer scenarios, short windows.
    pub quick: bool,
    /// `postgres`, `sqlite`.
    pub backends: Vec<String>,
    /// Report file.
    pub out: Option<PathBuf>,
    /// Pool size of the server and of the direct baseline (`TODO_DB_MAX_CONNECTIONS`); `None`:
    /// each backend's default.
    pub db_max_connections: Option<u32>,
    /// Overrides the connection counts (`--connections 64,1000`).
    pub connections: Option<Vec<usize>>,
    /// A server binary to measure instead of building `target/release/examples/serve`
    /// (`--server PATH`): to compare two builds under the same conditions.
    pub server: Option<PathBuf>,
    /// Only these parts (`--only list,open`; see [`PARTS`]); empty: all.
    pub only: Vec<String>,
}

/// The parts of a run `--only` can pick.
pub const PARTS: [&str; 19] = [
    "direct",
    "list",
    "fastapi",
    "filtered",
    "get",
    "position",
    "subtasks",
    "heavy",
    "open",
    "create",
    "patch",
    "toggle",
    "move",
    "mix",
    "sync",
    "recurring",
    "events",
    "reminders",
    "webhooks",
];

/// `patch` at 64 connections in the previous full run (BENCHMARKS.md at commit `5724834`,
/// before every write also appended to the change log): PostgreSQL, SQLite.
const PATCH_BEFORE_CHANGE_LOG: (f64, f64) = (4217.0, 1751.0);
/// The commit of that run.
const PATCH_BEFORE_COMMIT: &str = "5724834";
/// The CPU model that run reported (2 CPUs, shared with PostgreSQL and the loader).
const PATCH_BEFORE_CPU: &str = "Intel(R) Xeon(R) Processor";
/// One task in this many is made recurring for the `recurring` part.
const RECURRING_EVERY: usize = 5;

impl Options {
    fn wants(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }
}

/// The `--only` part of a closed-loop scenario.
fn part_of(s: Scenario) -> &'static str {
    match s {
        Scenario::Only(Op::List) => "list",
        Scenario::Only(Op::ListFiltered) => "filtered",
        Scenario::Only(Op::Get) => "get",
        Scenario::Only(Op::Create) => "create",
        Scenario::Only(Op::Patch) => "patch",
        Scenario::Only(Op::Toggle) => "toggle",
        Scenario::Only(Op::ListByPosition) => "position",
        Scenario::Only(Op::Subtasks) => "subtasks",
        Scenario::Only(Op::Move) => "move",
        Scenario::Only(Op::BatchCreate) => "sync",
        Scenario::Mix => "mix",
    }
}

impl Options {
    /// Parses the arguments after `bench`.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut o = Options {
            quick: false,
            backends: Vec::new(),
            out: None,
            db_max_connections: None,
            connections: None,
            server: None,
            only: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
            match a.as_str() {
                "--quick" => o.quick = true,
                "--backend" => {
                    let b = value()?;
                    if b != "postgres" && b != "sqlite" {
                        return Err(format!("unknown backend {b:?} (postgres or sqlite)"));
                    }
                    o.backends.push(b);
                }
                "--out" => o.out = Some(PathBuf::from(value()?)),
                "--connections" => {
                    let list = value()?
                        .split(',')
                        .map(|n| n.trim().parse::<usize>().ok().filter(|&n| n > 0))
                        .collect::<Option<Vec<_>>>()
                        .ok_or("bad --connections (e.g. 64,1000)")?;
                    o.connections = Some(list);
                }
                "--server" => o.server = Some(PathBuf::from(value()?)),
                "--only" => {
                    for part in value()?.split(',').map(str::trim) {
                        if !PARTS.contains(&part) {
                            return Err(format!(
                                "unknown --only part {part:?} (one of {})",
                                PARTS.join(", ")
                            ));
                        }
                        o.only.push(part.to_owned());
                    }
                }
                "--db-max-connections" => {
                    o.db_max_connections =
                        Some(value()?.parse().map_err(|_| "bad --db-max-connections")?)
                }
                other => return Err(format!("unknown bench argument {other:?}")),
            }
        }
        if o.backends.is_empty() {
            o.backends = vec!["postgres".into(), "sqlite".into()];
        }
        Ok(o)
    }
}

/// What a run measures and for how long.
struct Plan {
    seed: Spec,
    conns: Vec<usize>,
    reads: Vec<Op>,
    writes: Vec<Op>,
    mix: bool,
    closed: Timing,
    open: Timing,
    open_conns: usize,
    /// Connection counts set with `--connections`.
    custom_conns: bool,
    /// Sizes of the sync, events and reminders parts.
    live: LivePlan,
}

/// Sizes of the parts in `live.rs`.
struct LivePlan {
    /// Initial syncs of the heavy user.
    sync_runs: usize,
    /// Incremental syncs.
    incremental_runs: usize,
    /// Patches before each incremental sync.
    writes_per_sync: usize,
    /// Idle event streams.
    idle_streams: usize,
    /// The fan-out: users with one stream each, write rate, duration.
    fanout: live::FanOutSizes,
    /// Reminders due in the same second.
    reminders: usize,
    /// The webhooks part.
    webhooks: webhooks::Sizes,
}

/// The closed-loop read scenarios, in the order they run.
const READS: [Op; 5] = [
    Op::List,
    Op::ListFiltered,
    Op::Get,
    Op::ListByPosition,
    Op::Subtasks,
];

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Plan {
                seed: Spec {
                    users: 64,
                    tasks_per_user: 100,
                    skew: true,
                },
                conns: vec![64],
                reads: READS.to_vec(),
                writes: vec![Op::Create, Op::Move],
                mix: true,
                closed: Timing {
                    warmup: Duration::from_millis(500),
                    measure: Duration::from_millis(2_500),
                },
                open: Timing {
                    warmup: Duration::from_millis(500),
                    measure: Duration::from_secs(3),
                },
                open_conns: 64,
                custom_conns: false,
                live: LivePlan {
                    sync_runs: 3,
                    incremental_runs: 20,
                    writes_per_sync: 10,
                    idle_streams: 500,
                    fanout: live::FanOutSizes {
                        users: 200,
                        rate: 200.0,
                        run_for: Duration::from_secs(3),
                    },
                    reminders: 1_000,
                    webhooks: webhooks::Sizes::new(true),
                },
            }
        } else {
            Plan {
                seed: Spec {
                    users: 1_000,
                    tasks_per_user: 200,
                    skew: true,
                },
                conns: vec![64, 1_000],
                reads: READS.to_vec(),
                writes: vec![Op::Create, Op::Patch, Op::Toggle, Op::Move],
                mix: true,
                closed: Timing {
                    warmup: Duration::from_secs(3),
                    measure: Duration::from_secs(15),
                },
                open: Timing {
                    warmup: Duration::from_secs(3),
                    measure: Duration::from_secs(20),
                },
                open_conns: 1_000,
                custom_conns: false,
                live: LivePlan {
                    sync_runs: 10,
                    incremental_runs: 200,
                    writes_per_sync: 10,
                    idle_streams: 10_000,
                    fanout: live::FanOutSizes {
                        users: 1_000,
                        rate: 1_000.0,
                        run_for: Duration::from_secs(10),
                    },
                    reminders: 10_000,
                    webhooks: webhooks::Sizes::new(false),
                },
            }
        }
    }

    /// One slice of the paired list measurement: a share of the window, and a shorter warm-up
    /// (the pool and the server are warm after the first).
    fn paired_slice(&self) -> Timing {
        Timing {
            warmup: self.closed.warmup.min(Duration::from_secs(1)),
            measure: self.closed.measure / PAIRED_ROUNDS,
        }
    }

    /// The sizes of the `live.rs` parts that run, as a sentence (empty when none does).
    fn describe_live(&self, o: &Options) -> String {
        let l = &self.live;
        let mut parts = Vec::new();
        if o.wants("sync") {
            parts.push(format!(
                "sync: {} initial syncs of the heavy user, {} incremental syncs after {} patches \
                 each, `POST /batch` of 100 creates at 1 and {} connections",
                l.sync_runs,
                l.incremental_runs,
                l.writes_per_sync,
                self.sync_conns()
            ));
        }
        if o.wants("recurring") {
            parts.push(format!(
                "recurring: one task in {RECURRING_EVERY} made recurring, toggle at {} \
                 connections",
                self.sync_conns()
            ));
        }
        if o.wants("events") {
            parts.push(format!(
                "events: {} idle streams, then {} users with one stream each and writes at \
                 {:.0}/s for {} s",
                l.idle_streams,
                l.fanout.users,
                l.fanout.rate,
                l.fanout.run_for.as_secs()
            ));
        }
        if o.wants("reminders") && o.backends.iter().any(|b| b == "postgres") {
            parts.push(format!(
                "reminders (PostgreSQL): {} due in the same second on two instances",
                l.reminders
            ));
        }
        if o.wants("webhooks") {
            let h = &l.webhooks;
            parts.push(format!(
                "webhooks: {} deliveries queued for {} webhooks and drained, then creates at \
                 {:.0}/s for {} s with the sender running",
                h.queued,
                h.users,
                h.rate,
                h.live_for.as_secs()
            ));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(
                " Parts about keeping clients in step: {}.",
                parts.join("; ")
            )
        }
    }

    /// The concurrency of the batch, patch-comparison and recurring rows: the first connection
    /// count (64 unless `--connections` says otherwise).
    fn sync_conns(&self) -> usize {
        self.conns.first().copied().unwrap_or(64)
    }

    fn describe(&self, quick: bool) -> String {
        let conns = self
            .conns
            .iter()
            .map(|c| format!("{c}"))
            .collect::<Vec<_>>()
            .join(" and ");
        let scenarios = if quick {
            "scenarios list, list filter+search+sort, get, create and the mix (patch and toggle \
             run only inside the mix)"
        } else {
            "scenarios list, list filter+search+sort, get, create, patch, toggle and the mix"
        };
        format!(
            "{}: {conns} connections{}; {scenarios}; {:.1} s warm-up + {:.1} s measured per \
             scenario; open loop over {} connections for {:.1} s after {:.1} s warm-up; data: \
             {} users with {} tasks each, one of them replaced by the heavy user{}",
            if quick { "--quick" } else { "full run" },
            if self.custom_conns {
                " (set with --connections)"
            } else if quick {
                " only"
            } else {
                ""
            },
            self.closed.warmup.as_secs_f64(),
            self.closed.measure.as_secs_f64(),
            self.open_conns,
            self.open.measure.as_secs_f64(),
            self.open.warmup.as_secs_f64(),
            self.seed.users,
            self.seed.tasks_per_user,
            if quick {
                ". Numbers from such short windows are indicative only."
            } else {
                "."
            }
        )
    }
}

/// `cargo xtask bench …`.
pub fn main(root: &Path, args: &[String]) -> Result<(), String> {
    let o = Options::parse(args)?;
    if std::env::var_os(CHILD_ENV).is_none() {
        return relaunch(root, args, o.server.is_none());
    }
    run(root, o)
}

/// Builds the server and xtask in release and runs the bench from the release binary with a
/// raised open-file limit.
fn relaunch(root: &Path, args: &[String], build_server: bool) -> Result<(), String> {
    let started = Instant::now();
    if build_server {
        crate::serve::build_release_server(root)?;
    }
    crate::serve::cargo(root, &["build", "--release", "-p", "xtask"])?;
    let built = started.elapsed();
    println!("builds took {:.1} s", built.as_secs_f64());
    let command = std::iter::once("cargo xtask bench".to_owned())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let status = Command::new("sh")
        .arg("-c")
        .arg(RAISE_NOFILE_AND_EXEC)
        .arg(root.join("target/release/xtask"))
        .arg("bench")
        .args(args)
        .env(CHILD_ENV, "1")
        .env(COMMAND_ENV, command)
        // The server's allocator settings (examples/serve.rs) for the direct-store baseline too.
        .env(
            "MIMALLOC_PURGE_DELAY",
            std::env::var("MIMALLOC_PURGE_DELAY").unwrap_or_else(|_| "0".into()),
        )
        .current_dir(root)
        .status()
        .map_err(|e| format!("run the release xtask: {e}"))?;
    println!(
        "bench took {:.1} s in all ({:.1} s of it building)",
        started.elapsed().as_secs_f64(),
        built.as_secs_f64()
    );
    if status.success() {
        Ok(())
    } else {
        Err(format!("bench failed ({status})"))
    }
}

/// A `/proc/<pid>/status` field in KiB (`VmHWM`, `VmRSS`).
pub(crate) fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The soft "Max open files" limit of `pid` ("self" for this process).
fn open_files_limit(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))?
                .split_whitespace()
                .nth(3)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Resets the peak RSS (`VmHWM`) of `pid` to its current RSS (Linux 4.0+); `false` if refused.
pub(crate) fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// User + system CPU time of `pid` ("self" for this process, "self/task/`<tid>`" for one of its
/// threads), from `/proc/<pid>/stat`.
pub(crate) fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux platform Rust targets in practice.
    Some(Duration::from_millis(ticks * 10))
}

/// CPU time of each PostgreSQL backend connected to the database at `url` (the server's pool),
/// read from `/proc` (PostgreSQL runs on this machine); `None` for SQLite or when unreadable.
pub(crate) async fn backend_cpu(url: &str) -> Option<std::collections::HashMap<i32, Duration>> {
    if !url.starts_with("postgres") {
        return None;
    }
    let mut c = sqlx::PgConnection::connect(url).await.ok()?;
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
         AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut c)
    .await
    .ok()?;
    let _ = c.close().await;
    Some(
        pids.into_iter()
            .filter_map(|pid| Some((pid, cpu_time(&pid.to_string())?)))
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// Results.

/// CPU time used between two readings.
fn used(before: Option<Duration>, after: Option<Duration>) -> Option<Duration> {
    after?.checked_sub(before?)
}

/// What one measurement saw, before it becomes a row; slices of the same scenario add up.
struct Sample {
    rec: load::Recorded,
    wall: Duration,
    server_cpu: Option<Duration>,
    db_cpu: Option<Duration>,
    own_cpu: Option<Duration>,
    peak_rss_kib: Option<u64>,
    peak_reset: bool,
}

impl Sample {
    /// Adds `s` to the slices gathered in `acc` so far.
    fn add_to(acc: &mut Option<Sample>, s: Sample) {
        *acc = Some(match acc.take() {
            None => s,
            Some(mut a) => {
                let sum = |x: Option<Duration>, y: Option<Duration>| Some(x? + y?);
                a.rec.append(s.rec);
                a.wall += s.wall;
                a.server_cpu = sum(a.server_cpu, s.server_cpu);
                a.db_cpu = sum(a.db_cpu, s.db_cpu);
                a.own_cpu = sum(a.own_cpu, s.own_cpu);
                a.peak_rss_kib = a.peak_rss_kib.max(s.peak_rss_kib);
                a.peak_reset &= s.peak_reset;
                a
            }
        });
    }

    fn into_measured(self, what: String, conns: usize, rate: Option<f64>) -> Measured {
        let share = |d: Option<Duration>| {
            d.map(|d| 100.0 * d.as_secs_f64() / self.wall.as_secs_f64().max(1e-9))
        };
        Measured {
            what,
            conns,
            rate,
            server_cpu: share(self.server_cpu),
            db_cpu: share(self.db_cpu),
            own_cpu: share(self.own_cpu),
            peak_rss_kib: self.peak_rss_kib,
            peak_reset: self.peak_reset,
            stats: self.rec.stats(),
        }
    }
}

/// One measured row.
struct Measured {
    what: String,
    conns: usize,
    stats: Stats,
    /// Open loop: the target arrival rate (req/s).
    rate: Option<f64>,
    /// Server CPU use over the scenario, in % of one core (HTTP runs).
    server_cpu: Option<f64>,
    /// CPU use of the PostgreSQL backends serving the benchmark database (HTTP runs on
    /// PostgreSQL), % of one core.
    db_cpu: Option<f64>,
    /// This process's CPU use (the loader, or the store for the baseline), % of one core.
    own_cpu: Option<f64>,
    /// Server peak RSS in KiB during the scenario (HTTP runs).
    peak_rss_kib: Option<u64>,
    /// Whether the peak was reset before the scenario (else it is the process's peak so far).
    peak_reset: bool,
}

struct BackendReport {
    name: &'static str,
    /// Open-file limits of the server and the load generator.
    nofile: (String, String),
    version: String,
    seeded: String,
    direct: Vec<Measured>,
    http: Vec<Measured>,
    /// The `fastapi` part: the FastAPI + SQLModel app's list rows.
    fastapi: Vec<Measured>,
    open: Vec<Measured>,
    /// The `sync` part's rows and notes.
    sync: Vec<SyncRow>,
    sync_notes: Vec<String>,
    /// The `recurring` part's rows and notes.
    recurring: Vec<Measured>,
    recurring_notes: Vec<String>,
    /// The `events` part.
    idle: Option<live::IdleStreams>,
    fanout: Option<live::FanOut>,
    /// The `reminders` part.
    reminders: Option<live::Reminders>,
    /// How the instances of the events part were run.
    instances_note: String,
    /// How the instances of the reminders part were run.
    reminders_note: String,
    /// The `webhooks` part.
    webhooks: Option<webhooks::Report>,
    errors: Vec<String>,
}

struct Machine {
    nproc: usize,
    model: String,
    memory: String,
    kernel: String,
}

impl Machine {
    fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
            .unwrap_or_else(|| "unknown".into());
        Machine {
            nproc: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            model,
            memory,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// `(busy, total)` jiffies of all CPUs from `/proc/stat`.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    // idle and iowait
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Share of the machine's CPU time in use over `window`, 0.0-1.0.
fn cpu_busy(window: Duration) -> Option<f64> {
    let (b0, t0) = cpu_jiffies()?;
    std::thread::sleep(window);
    let (b1, t1) = cpu_jiffies()?;
    (t1 > t0).then(|| (b1 - b0) as f64 / (t1 - t0) as f64)
}

/// Waits (up to 30 s) for the CPUs to go quiet, e.g. after the release build that precedes the
/// run, and returns how busy they were in the last second before measuring.
fn settle() -> Option<f64> {
    let mut busy = cpu_busy(Duration::from_secs(1))?;
    for _ in 0..29 {
        if busy < 0.15 {
            break;
        }
        busy = cpu_busy(Duration::from_secs(1))?;
    }
    Some(busy)
}

fn git(root: &Path, args: &[&str]) -> String {
    Command::new("git")
        .args(args)
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The run.

fn random_secret() -> String {
    format!(
        "bench-{}{}",
        uuid::Uuid::now_v7().simple(),
        uuid::Uuid::now_v7().simple()
    )
}

fn run(root: &Path, o: Options) -> Result<(), String> {
    let busy_before = settle();
    let started = Instant::now();
    let load_before = loadavg();
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let machine = Machine::probe();
    let mut plan = Plan::new(o.quick);
    if let Some(conns) = &o.connections {
        plan.conns = conns.clone();
        plan.open_conns = conns.iter().copied().max().unwrap_or(plan.open_conns);
        plan.seed.users = plan.seed.users.max(plan.open_conns);
        plan.custom_conns = true;
    }
    println!("{}{}", plan.describe(o.quick), plan.describe_live(&o));
    let store_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let loader_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let logs = root.join("target/bench");
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let secret = random_secret();
    let mut reports = Vec::new();
    for backend in &o.backends {
        println!("\n=== {backend} ===");
        let db = if backend == "postgres" {
            store_rt.block_on(TestDb::try_postgres())?
        } else {
            TestDb::sqlite()
        };
        let report = run_backend(
            root, &o, &plan, backend, &db.url, &secret, &logs, &store_rt, &loader_rt,
        );
        store_rt.block_on(db.cleanup());
        reports.push(report?);
    }
    let load_after = loadavg();
    let elapsed = started.elapsed();
    let command = std::env::var(COMMAND_ENV).unwrap_or_else(|_| "cargo xtask bench".into());
    let markdown = render(
        root,
        &o,
        &plan,
        &machine,
        &date,
        &command,
        &load_before,
        &load_after,
        busy_before,
        elapsed,
        &reports,
    );
    let out = o.out.clone().unwrap_or_else(|| {
        if o.quick {
            logs.join("BENCHMARKS-quick.md")
        } else {
            root.join("BENCHMARKS.md")
        }
    });
    std::fs::write(&out, &markdown).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("\n{markdown}");
    println!(
        "wrote {} (measuring took {:.1} s; load average before {load_before}, after {load_after})",
        out.display(),
        elapsed.as_secs_f64()
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_backend(
    root: &Path,
    o: &Options,
    plan: &Plan,
    backend: &str,
    url: &str,
    secret: &str,
    logs: &Path,
    store_rt: &tokio::runtime::Runtime,
    loader_rt: &tokio::runtime::Runtime,
) -> Result<BackendReport, String> {
    let name = if backend == "postgres" {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let seeded = store_rt.block_on(seed::seed(url, &plan.seed))?;
    let seeded_text = format!(
        "{} users, {} tasks ({} has {}, the others {} each) in {} lists per user, {:.0} % of them \
         subtasks, {} `task_tags` rows; seeded in {:.1} s",
        seeded.users.len(),
        seeded.tasks,
        seed::HEAVY_USER,
        plan.seed.tasks_of(0),
        plan.seed.tasks_per_user,
        seed::LISTS_PER_USER,
        seed::SUBTASK_SHARE * 100.0,
        seeded.tags,
        seeded.elapsed.as_secs_f64()
    );
    println!("seeded: {seeded_text}");
    let version = store_rt.block_on(db_version(url));
    let ttl = Duration::from_secs(6 * 3600);
    let users: Vec<Arc<User>> = seeded
        .users
        .iter()
        .map(|u| {
            let token =
                todo_http::auth::mint_hs256(secret, &u.id, ttl).map_err(|e| e.to_string())?;
            Ok(Arc::new(User {
                id: u.id.clone(),
                authorization: format!("Bearer {token}"),
                task_ids: u.task_ids.clone().into(),
                list_ids: u.list_ids.clone().into(),
                parent_ids: u.parent_ids.clone().into(),
            }))
        })
        .collect::<Result<_, String>>()?;
    let mut report = BackendReport {
        name,
        nofile: (String::new(), open_files_limit("self")),
        version,
        seeded: seeded_text,
        direct: Vec::new(),
        http: Vec::new(),
        fastapi: Vec::new(),
        open: Vec::new(),
        sync: Vec::new(),
        sync_notes: Vec::new(),
        recurring: Vec::new(),
        recurring_notes: Vec::new(),
        idle: None,
        fanout: None,
        reminders: None,
        instances_note: String::new(),
        reminders_note: String::new(),
        webhooks: None,
        errors: Vec::new(),
    };

    let binary = o
        .server
        .clone()
        .unwrap_or_else(|| crate::serve::release_binary(root));
    let server = ServeProcess::start(
        &binary,
        url,
        secret,
        &pool_env(o),
        &logs.join(format!("server-{backend}.log")),
    )?;
    report.nofile.0 = open_files_limit(&server.pid().to_string());
    // The direct-store baseline's own pool, open beside the (idle) server's while it runs.
    let store = store_rt
        .block_on(Store::connect_with(
            url,
            &StoreOptions {
                max_connections: o.db_max_connections,
                ..StoreOptions::default()
            },
        ))
        .map_err(|e| e.to_string())?;
    let measure_direct = |op: Op, conns: usize, timing: Timing| {
        let (cpu0, t0) = (cpu_time("self"), Instant::now());
        let rec = store_rt.block_on(direct(&store, &users[..conns], op, timing));
        let wall = t0.elapsed();
        Sample {
            rec,
            wall,
            server_cpu: None,
            db_cpu: None,
            own_cpu: used(cpu0, cpu_time("self")),
            peak_rss_kib: None,
            peak_reset: false,
        }
    };
    // The load against `addr`, with the CPU time of the server there read by `server_cpu`.
    let measure_on = |addr: SocketAddr,
                      server_cpu: &dyn Fn() -> Option<Duration>,
                      users: &[Arc<User>],
                      mode: Mode,
                      timing: Timing| {
        let server0 = server_cpu();
        let db0 = store_rt.block_on(backend_cpu(url));
        let (own0, t0) = (cpu_time("self"), Instant::now());
        let rec = loader_rt.block_on(load::run(addr, users, mode, timing));
        let wall = t0.elapsed();
        let db_cpu = db0.and_then(|before| {
            let after = store_rt.block_on(backend_cpu(url))?;
            Some(
                after
                    .iter()
                    .map(|(pid, t)| t.saturating_sub(before.get(pid).copied().unwrap_or_default()))
                    .sum(),
            )
        });
        Sample {
            rec,
            wall,
            server_cpu: used(server0, server_cpu()),
            db_cpu,
            own_cpu: used(own0, cpu_time("self")),
            peak_rss_kib: None,
            peak_reset: false,
        }
    };
    let measure_users = |users: &[Arc<User>], mode: Mode, timing: Timing| {
        let pid = server.pid();
        let peak_reset = reset_peak_rss(pid);
        let s = measure_on(
            server.addr,
            &|| cpu_time(&pid.to_string()),
            users,
            mode,
            timing,
        );
        Sample {
            peak_rss_kib: proc_status_kib(pid, "VmHWM"),
            peak_reset,
            ..s
        }
    };
    let measure =
        |mode: Mode, conns: usize, timing: Timing| measure_users(&users[..conns], mode, timing);
    let http_row = |what: String, conns: usize, rate: Option<f64>, s: Sample| {
        let m = s.into_measured(what, conns, rate);
        print_row("http", &m);
        m
    };
    let direct_row = |op: Op, conns: usize, s: Sample| {
        let m = s.into_measured(Scenario::Only(op).name().to_owned(), conns, None);
        print_row("direct", &m);
        m
    };
    let closed = |op| Mode::Closed(Scenario::Only(op));
    // List is measured in alternating slices, direct then HTTP, so that a change in the
    // machine's speed during the run falls on both sides of the ratio alike.
    let paired = o.wants("direct") && o.wants("list");
    let direct_ops = if o.wants("direct") {
        vec![Op::List, Op::Get]
    } else {
        Vec::new()
    };
    for op in direct_ops
        .into_iter()
        .filter(|&op| !(paired && op == Op::List))
    {
        for &conns in &plan.conns {
            let s = measure_direct(op, conns, plan.closed);
            report.direct.push(direct_row(op, conns, s));
        }
    }
    // The FastAPI + SQLModel app of the same listing, measured beside list (PostgreSQL only:
    // it reads PostgreSQL's column types).
    let fastapi = if o.wants("fastapi") && backend == "postgres" {
        match crate::fastapi::FastApiProcess::start(root, url, secret, &logs.join("fastapi.log")) {
            Ok(f) => Some(f),
            Err(e) => {
                report.errors.push(format!("fastapi: {e}"));
                None
            }
        }
    } else {
        None
    };
    let measure_fastapi = |f: &crate::fastapi::FastApiProcess, conns: usize, timing: Timing| {
        let s = measure_on(
            f.addr,
            &|| f.cpu_time(),
            &users[..conns],
            closed(Op::List),
            timing,
        );
        Sample {
            peak_rss_kib: f.rss_kib(),
            ..s
        }
    };
    for &op in plan.reads.iter().filter(|&&op| {
        o.wants(part_of(Scenario::Only(op))) || (op == Op::List && fastapi.is_some())
    }) {
        for &conns in &plan.conns {
            let what = Scenario::Only(op).name().to_owned();
            // The comparison app at the contract's 64 connections (and below).
            let versus = fastapi
                .as_ref()
                .filter(|_| op == Op::List && conns <= FASTAPI_MAX_CONNS);
            if (paired || versus.is_some()) && op == Op::List {
                let slice = plan.paired_slice();
                let (mut d, mut h, mut f) = (None::<Sample>, None::<Sample>, None::<Sample>);
                for _ in 0..PAIRED_ROUNDS {
                    if paired {
                        Sample::add_to(&mut d, measure_direct(op, conns, slice));
                    }
                    Sample::add_to(&mut h, measure(closed(op), conns, slice));
                    if let Some(app) = versus {
                        Sample::add_to(&mut f, measure_fastapi(app, conns, slice));
                    }
                }
                if let Some(d) = d {
                    report.direct.push(direct_row(op, conns, d));
                }
                if let Some(h) = h {
                    report.http.push(http_row(what.clone(), conns, None, h));
                }
                if let Some(f) = f {
                    let m = f.into_measured(what, conns, None);
                    print_row("fastapi", &m);
                    report.fastapi.push(m);
                }
            } else {
                let s = measure(closed(op), conns, plan.closed);
                report.http.push(http_row(what, conns, None, s));
            }
        }
    }
    drop(fastapi);
    store_rt.block_on(store.close());
    // The heavy user's listings on their own (one connection, no queueing behind other
    // users): the latency of a 10,000-task user's page itself.
    let heavy = if o.wants("heavy") {
        vec![Op::List, Op::ListFiltered, Op::ListByPosition]
    } else {
        Vec::new()
    };
    for op in heavy {
        let s = measure(closed(op), 1, plan.closed);
        let what = format!("{}, heavy user alone", Scenario::Only(op).name());
        report.http.push(http_row(what, 1, None, s));
    }
    // The open loop at the rate, and at half the closed-loop list throughput measured
    // just before (a load the server can sustain, so its p99 is not just a growing backlog).
    let capacity = report
        .http
        .iter()
        .filter(|m| m.what == Scenario::Only(Op::List).name() && m.conns <= plan.open_conns)
        .map(|m| m.stats.rps)
        .next_back()
        .unwrap_or(0.0);
    let half = ((capacity / 2.0 / 50.0).round() * 50.0).max(50.0);
    let mut rates = vec![OPEN_RATE];
    if capacity > 0.0 && half < OPEN_RATE {
        rates.push(half);
    }
    if !o.wants("open") {
        rates.clear();
    }
    for rate in rates {
        let s = measure(Mode::OpenList { rate }, plan.open_conns, plan.open);
        let what = format!("open loop: list at {rate:.0} req/s");
        report
            .open
            .push(http_row(what, plan.open_conns, Some(rate), s));
    }
    let mut scenarios: Vec<Scenario> = plan.writes.iter().map(|&op| Scenario::Only(op)).collect();
    if plan.mix {
        scenarios.push(Scenario::Mix);
    }
    for scenario in scenarios.into_iter().filter(|&s| o.wants(part_of(s))) {
        for &conns in &plan.conns {
            let s = measure(Mode::Closed(scenario), conns, plan.closed);
            report
                .http
                .push(http_row(scenario.name().into(), conns, None, s));
        }
    }
    if o.wants("sync") {
        let (rows, notes, errors) = sync_part(
            plan,
            backend,
            server.addr,
            &users,
            loader_rt,
            &measure,
            &report.http,
        );
        report.sync = rows;
        report.sync_notes = notes;
        // The patch row, when this part measured it, goes with the other closed-loop rows.
        for e in errors {
            match e {
                SyncOutcome::Patch(m) => report.http.push(m),
                SyncOutcome::Error(e) => report.errors.push(e),
            }
        }
    }
    if o.wants("recurring") {
        match recurring_part(plan, url, &users, store_rt, &measure_users) {
            Ok((rows, notes)) => {
                let plain = report
                    .http
                    .iter()
                    .find(|m| {
                        m.what == Scenario::Only(Op::Toggle).name() && m.conns == rows[0].conns
                    })
                    .map(|m| m.stats.rps);
                report.recurring_notes = notes;
                if let Some(plain) = plain {
                    report.recurring_notes.push(format!(
                        "The closed-loop `toggle` row above ({plain:.0} req/s at {} connections) \
                         ran earlier in the run, before any task was recurring.",
                        rows[0].conns
                    ));
                }
                report.recurring = rows;
            }
            Err(e) => report.errors.push(format!("recurring: {e}")),
        }
    }
    for m in report
        .http
        .iter()
        .chain(&report.open)
        .chain(&report.recurring)
    {
        for (kind, n) in &m.stats.error_kinds {
            report
                .errors
                .push(format!("{} @ {} conns: {n} x {kind}", m.what, m.conns));
        }
    }
    // The events and reminders parts run on fresh instances of their own.
    drop(server);
    let events = o.wants("events");
    let reminders = o.wants("reminders") && backend == "postgres";
    if events || reminders {
        instances_part(
            o,
            plan,
            backend,
            url,
            secret,
            logs,
            &binary,
            &users,
            store_rt,
            loader_rt,
            &mut report,
        );
    }
    // Last: its webhooks would queue deliveries for every later write of their users.
    if o.wants("webhooks") {
        report.webhooks = Some(webhooks_part(
            o,
            plan,
            url,
            &users,
            store_rt,
            &mut report.errors,
        ));
    }
    Ok(report)
}

/// The `webhooks` part: a receiver here, a webhook to it for some seeded users (not the heavy
/// one), the queued drain and the live variant with the sender running in this process, then
/// the webhooks deleted.
fn webhooks_part(
    o: &Options,
    plan: &Plan,
    url: &str,
    users: &[Arc<User>],
    store_rt: &tokio::runtime::Runtime,
    errors: &mut Vec<String>,
) -> webhooks::Report {
    let sizes = &plan.live.webhooks;
    let mut report = webhooks::Report {
        pool: StoreOptions {
            max_connections: o.db_max_connections,
            ..StoreOptions::default()
        }
        .pool_size(url),
        ..Default::default()
    };
    let receiver = match webhooks::Receiver::start() {
        Ok(r) => r,
        Err(e) => {
            errors.push(format!("webhooks: {e}"));
            return report;
        }
    };
    let hook_users = &users[1.min(users.len())..];
    let hook_users = &hook_users[..sizes.users.min(hook_users.len())];
    let run = async {
        let store = Store::connect_with(
            url,
            &StoreOptions {
                max_connections: o.db_max_connections,
                ..StoreOptions::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        store.set_webhook_policy(webhooks::policy());
        let hooks = webhooks::create_webhooks(&store, hook_users, &receiver.url()).await?;
        report.webhooks = hooks.len();
        match webhooks::drain(&store, url, &receiver, &hooks, sizes.queued).await {
            Ok(d) => report.drain = Some(d),
            Err(e) => errors.push(format!("webhooks drain: {e}")),
        }
        match webhooks::live(&store, url, &receiver, &hooks, sizes.rate, sizes.live_for).await {
            Ok(l) => report.live = Some(l),
            Err(e) => errors.push(format!("webhooks live: {e}")),
        }
        let deleted = webhooks::delete_webhooks(&store, &hooks).await;
        store.close().await;
        deleted
    };
    if let Err(e) = store_rt.block_on(run) {
        errors.push(format!("webhooks: {e}"));
    }
    webhooks::print(&report);
    errors.extend(webhooks::problems(&report));
    report
}

/// What the sync part hands back besides its rows.
enum SyncOutcome {
    /// The `patch` row it measured (no such row had run).
    Patch(Measured),
    /// Something that failed.
    Error(String),
}

/// The `sync` part: the heavy user's initial and incremental syncs, `POST /batch` at 1 and
/// [`Plan::sync_conns`] connections, and `patch` at that concurrency against the run before the
/// change log (measured here unless the `patch` part already did).
#[allow(clippy::too_many_arguments)]
fn sync_part(
    plan: &Plan,
    backend: &str,
    addr: std::net::SocketAddr,
    users: &[Arc<User>],
    loader_rt: &tokio::runtime::Runtime,
    measure: &dyn Fn(Mode, usize, Timing) -> Sample,
    http: &[Measured],
) -> (Vec<SyncRow>, Vec<String>, Vec<SyncOutcome>) {
    let (mut rows, mut notes, mut out) = (Vec::new(), Vec::new(), Vec::new());
    let l = &plan.live;
    // The heavy user (the first with a skewed seed).
    let heavy = &users[0];
    match loader_rt.block_on(live::initial_sync(addr, heavy, l.sync_runs)) {
        Ok(init) => {
            live::print_sync_row(&init.row);
            rows.push(init.row);
            match loader_rt.block_on(live::incremental_sync(
                addr,
                heavy,
                init.token,
                l.incremental_runs,
                l.writes_per_sync,
            )) {
                Ok(row) => {
                    live::print_sync_row(&row);
                    rows.push(row);
                }
                Err(e) => out.push(SyncOutcome::Error(format!("incremental sync: {e}"))),
            }
        }
        Err(e) => out.push(SyncOutcome::Error(format!("initial sync: {e}"))),
    }
    let conns = plan.sync_conns().min(users.len());
    let mut batch_conns = vec![1, conns];
    batch_conns.dedup();
    for c in batch_conns {
        let m = measure(
            Mode::Closed(Scenario::Only(Op::BatchCreate)),
            c,
            plan.closed,
        )
        .into_measured(Scenario::Only(Op::BatchCreate).name().into(), c, None);
        for (kind, n) in &m.stats.error_kinds {
            out.push(SyncOutcome::Error(format!(
                "{} @ {c} conns: {n} x {kind}",
                m.what
            )));
        }
        let row = SyncRow {
            what: "`POST /batch` of 100 creates, per request".into(),
            conns: c,
            lat: live::Series {
                n: m.stats.count,
                p50: m.stats.p50,
                p95: m.stats.p95,
                p99: m.stats.p99,
                max: m.stats.max,
            },
            throughput: format!(
                "{:.0} ops/s ({:.1} batches/s)",
                m.stats.rps * load::BATCH_CREATES as f64,
                m.stats.rps
            ),
            errors: m.stats.errors,
        };
        live::print_sync_row(&row);
        rows.push(row);
    }
    // Writes with the change log against the run before it.
    let patch_name = Scenario::Only(Op::Patch).name();
    let patch = match http
        .iter()
        .find(|m| m.what == patch_name && m.conns == conns)
    {
        Some(m) => Some((m.stats.rps, m.stats.p50, "the `patch` row above")),
        None => {
            let m = measure(Mode::Closed(Scenario::Only(Op::Patch)), conns, plan.closed)
                .into_measured(patch_name.into(), conns, None);
            print_row("http", &m);
            let found = (
                m.stats.rps,
                m.stats.p50,
                "the `patch` row above, measured for this part",
            );
            out.push(SyncOutcome::Patch(m));
            Some(found)
        }
    };
    if let Some((rps, p50, which)) = patch {
        let before = if backend == "postgres" {
            PATCH_BEFORE_CHANGE_LOG.0
        } else {
            PATCH_BEFORE_CHANGE_LOG.1
        };
        let note = format!(
            "**Writes with the change log.** Every write now also appends to the change log in \
             its transaction. `patch` at {conns} connections ({which}): {rps:.0} req/s, p50 {} \
             ms. The previous full run recorded in BENCHMARKS.md (commit \
             `{PATCH_BEFORE_COMMIT}`, before the change log existed) measured {before:.0} req/s \
             at 64 connections, on 2 CPUs of an {PATCH_BEFORE_CPU}: this run reaches {:.0} % \
             of it ({:+.0} %).{} The two are comparable only when both ran on the same kind of \
             machine (see the CPU model above) and had it to themselves (compare the load \
             averages in their headers).",
            ms(p50),
            100.0 * rps / before,
            100.0 * (rps / before - 1.0),
            if conns == 64 {
                String::new()
            } else {
                format!(" (Not the same concurrency: {conns} connections here.)")
            }
        );
        println!("  {note}");
        notes.push(note);
    }
    (rows, notes, out)
}

/// Measures a mode over the connections of the given users.
type MeasureUsers<'a> = dyn Fn(&[Arc<User>], Mode, Timing) -> Sample + 'a;

/// The `recurring` part: makes one task in [`RECURRING_EVERY`] of every user recurring
/// (directly in the database, as `seed` writes), then measures toggle at
/// [`Plan::sync_conns`] connections on the one-off tasks, on all tasks and on the recurring
/// ones, in alternating slices so the three see the machine at the same times.
fn recurring_part(
    plan: &Plan,
    url: &str,
    users: &[Arc<User>],
    store_rt: &tokio::runtime::Runtime,
    measure_users: &MeasureUsers<'_>,
) -> Result<(Vec<Measured>, Vec<String>), String> {
    let conns = plan.sync_conns().min(users.len());
    let users = &users[..conns];
    let ids: Vec<&[uuid::Uuid]> = users.iter().map(|u| &u.task_ids[..]).collect();
    let started = Instant::now();
    let chosen = store_rt.block_on(seed::make_recurring(url, &ids, RECURRING_EVERY))?;
    let made = started.elapsed();
    let recurring: usize = chosen.iter().map(Vec::len).sum();
    let total: usize = ids.iter().map(|i| i.len()).sum();
    println!(
        "made {recurring} of {total} tasks of {conns} users recurring in {:.1} s",
        made.as_secs_f64()
    );
    let only = |want_recurring: bool| -> Vec<Arc<User>> {
        users
            .iter()
            .zip(&chosen)
            .map(|(u, c)| {
                let set: std::collections::HashSet<uuid::Uuid> = c.iter().copied().collect();
                Arc::new(User {
                    task_ids: u
                        .task_ids
                        .iter()
                        .filter(|id| set.contains(id) == want_recurring)
                        .copied()
                        .collect(),
                    ..(**u).clone()
                })
            })
            .collect()
    };
    let (one_off, recurring_only) = (only(false), only(true));
    let variants: [(&str, &[Arc<User>]); 3] = [
        ("toggle, one-off tasks only", &one_off),
        ("toggle, all tasks (1 in 5 recurring)", users),
        ("toggle, recurring tasks only", &recurring_only),
    ];
    let slice = plan.paired_slice();
    let mut acc: [Option<Sample>; 3] = [None, None, None];
    for _ in 0..PAIRED_ROUNDS {
        for (i, (_, u)) in variants.iter().enumerate() {
            let s = measure_users(u, Mode::Closed(Scenario::Only(Op::Toggle)), slice);
            Sample::add_to(&mut acc[i], s);
        }
    }
    let mut rows = Vec::new();
    for ((what, _), s) in variants.iter().zip(acc) {
        let s = s.ok_or("nothing measured")?;
        let m = s.into_measured((*what).to_owned(), conns, None);
        print_row("http", &m);
        rows.push(m);
    }
    let (plain, mixed, rec) = (rows[0].stats.rps, rows[1].stats.rps, rows[2].stats.rps);
    let share = |x: f64| 100.0 * x / plain.max(1e-9);
    let verdict = if share(mixed) >= 85.0 { "✓" } else { "✗" };
    let note = format!(
        "With one task in {RECURRING_EVERY} recurring (`{}` in `{}`, with a due date), toggle \
         over all tasks ran at {mixed:.0} req/s, {:.0} % of toggle on one-off tasks only \
         ({plain:.0} req/s, measured in the same alternating slices): target within 15 % {verdict}. \
         Completing only recurring tasks (each advances its due date by a day and stays open): \
         {rec:.0} req/s, {:.0} %.",
        seed::RECURRENCE_RULE,
        seed::RECURRENCE_TIMEZONE,
        share(mixed),
        share(rec)
    );
    println!("  {note}");
    let setup = format!(
        "{recurring} of the {total} tasks of the {conns} users measured were made recurring \
         directly in the database ({:.1} s; rule, zone and start written as the store writes \
         them, a due date tomorrow for those without one, all open). Toggle (`PATCH \
         /tasks/{{id}}/complete`, no body) at {conns} connections, one per user, each picking \
         its task at random among the tasks of the row: the three rows are measured in \
         {PAIRED_ROUNDS} alternating slices of {:.1} s after {:.1} s of warm-up each, and add \
         up their slices.",
        made.as_secs_f64(),
        slice.measure.as_secs_f64(),
        slice.warmup.as_secs_f64()
    );
    Ok((rows, vec![setup, note]))
}

/// The `events` and `reminders` parts, on fresh instances: two sharing the database on
/// PostgreSQL, one on SQLite.
#[allow(clippy::too_many_arguments)]
fn instances_part(
    o: &Options,
    plan: &Plan,
    backend: &str,
    url: &str,
    secret: &str,
    logs: &Path,
    binary: &Path,
    users: &[Arc<User>],
    store_rt: &tokio::runtime::Runtime,
    loader_rt: &tokio::runtime::Runtime,
    report: &mut BackendReport,
) {
    let l = &plan.live;
    let k = l.idle_streams;
    // The default cap of 10,000 connections would leave none for reading the metrics beside
    // 10,000 streams; the fan-out needs its streams and its writer's connections.
    let max_conns = k.max(l.fanout.users + live::FANOUT_CONNECTIONS) + 1_000;
    let mut env = pool_env(o);
    env.push(("TODO_MAX_CONNECTIONS", max_conns.to_string()));
    let sse_cap = todo_http::events::DEFAULT_MAX_STREAMS;
    if k > sse_cap {
        env.push(("TODO_SSE_MAX_STREAMS", k.to_string()));
    }
    let count = if backend == "postgres" { 2 } else { 1 };
    let mut servers = Vec::new();
    for i in 0..count {
        let log = logs.join(format!("server-{backend}-{}.log", ["a", "b"][i]));
        match ServeProcess::start(binary, url, secret, &env, &log) {
            Ok(s) => servers.push(s),
            Err(e) => {
                report
                    .errors
                    .push(format!("events/reminders: start instance {i}: {e}"));
                return;
            }
        }
    }
    let addrs: Vec<std::net::SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let instances = if count > 1 {
        "two fresh instances of the same server binary, sharing the database"
    } else {
        "one fresh instance of the same server binary (SQLite serves one process)"
    };
    report.instances_note = format!(
        "Served by {instances}, started for this part after the other rows' server stopped, \
         with the settings above except `TODO_MAX_CONNECTIONS={max_conns}`: the default \
         (10,000) would leave no connection for reading the server's metrics beside {k} \
         streams{}. The idle streams are opened first, on the first instance, and closed \
         before the fan-out opens its own.",
        if k > sse_cap {
            format!("; and `TODO_SSE_MAX_STREAMS={k}`")
        } else {
            format!(" (`TODO_SSE_MAX_STREAMS` is at its default, {sse_cap})")
        }
    );
    report.reminders_note = format!(
        "Served by {instances}, each running its reminder scheduler, started after the other \
         rows' server stopped (the settings above; `TODO_MAX_CONNECTIONS={max_conns}` for the \
         event streams, no matter here)."
    );
    if o.wants("events") {
        // At most 16 streams per user: the idle streams need k / 16 users, the fan-out its
        // own count; tokens are minted for more users when the seeded ones are too few (ids
        // that own no tasks; a stream needs none).
        let need = k.div_ceil(live::STREAMS_PER_USER).max(l.fanout.users);
        let mut stream_users: Vec<Arc<User>> = users.to_vec();
        let ttl = Duration::from_secs(6 * 3600);
        for i in stream_users.len()..need {
            let id = format!("stream-user-{i:05}");
            match todo_http::auth::mint_hs256(secret, &id, ttl) {
                Ok(token) => stream_users.push(Arc::new(User {
                    id,
                    authorization: format!("Bearer {token}"),
                    task_ids: Vec::new().into(),
                    list_ids: Vec::new().into(),
                    parent_ids: Vec::new().into(),
                })),
                Err(e) => report.errors.push(format!("events: token: {e}")),
            }
        }
        // The idle streams over the seeded users and as many minted ones as they need.
        let idle_users = &stream_users[..stream_users
            .len()
            .min(users.len().max(k.div_ceil(live::STREAMS_PER_USER)))];
        let first = &servers[0];
        let idle = loader_rt.block_on(live::idle_streams(first.addr, first.pid(), idle_users, k));
        let pids: Vec<u32> = servers.iter().map(ServeProcess::pid).collect();
        let fan_users = &stream_users[..l.fanout.users.min(stream_users.len())];
        let fan = loader_rt.block_on(live::fan_out(&addrs, &pids, url, fan_users, l.fanout));
        let fan = match fan {
            Ok(f) => Some(f),
            Err(e) => {
                report.errors.push(format!("events fan-out: {e}"));
                None
            }
        };
        live::print_events(Some(&idle), fan.as_ref());
        for (kind, n) in &idle.failures {
            report
                .errors
                .push(format!("idle event streams: {n} x {kind} (not opened)"));
        }
        if idle.ended_early > 0 {
            report.errors.push(format!(
                "idle event streams: {} ended before they were closed",
                idle.ended_early
            ));
        }
        if let Some(f) = &fan {
            if f.missed > 0 {
                report.errors.push(format!(
                    "event fan-out: {} writes' events missing {} s after the response",
                    f.missed,
                    live::FANOUT_WAIT.as_secs()
                ));
            }
            for (kind, n) in &f.errors {
                report
                    .errors
                    .push(format!("event fan-out writes: {n} x {kind}"));
            }
            if f.ended_early > 0 {
                report.errors.push(format!(
                    "event fan-out: {} streams ended before the run was over",
                    f.ended_early
                ));
            }
        }
        report.idle = Some(idle);
        report.fanout = fan;
    }
    if o.wants("reminders") && backend == "postgres" {
        match store_rt.block_on(live::reminders(url, users, l.reminders, &addrs)) {
            Ok(r) => {
                live::print_reminders(&r);
                if !r.exactly_once() {
                    report
                        .errors
                        .push("reminders: not every reminder fired exactly once".into());
                }
                report.reminders = Some(r);
            }
            Err(e) => report.errors.push(format!("reminders: {e}")),
        }
    }
    drop(servers);
}

/// The cells every closed-loop row starts with: `| what | conns | req/s | p50 | p95 | p99 | max |
/// errors | heavy p50 |`.
fn stats_cells(what: &str, conns: usize, s: &Stats) -> String {
    format!(
        "| {what} | {conns} | {:.0} | {} | {} | {} | {} | {} | {} |",
        s.rps,
        ms(s.p50),
        ms(s.p95),
        ms(s.p99),
        ms(s.max),
        s.errors,
        ms(s.first_conn_p50),
    )
}

async fn db_version(url: &str) -> String {
    if url.starts_with("postgres") {
        match sqlx::PgConnection::connect(url).await {
            Ok(mut c) => {
                let v: Result<(String,), _> = sqlx::query_as("SHOW server_version")
                    .fetch_one(&mut c)
                    .await;
                // How the server and the baseline reach it: the same URL, so the same transport.
                let link: Result<(Option<String>, Option<String>, Option<String>), _> =
                    sqlx::query_as(
                        "SELECT host(client_addr), s.version, s.cipher FROM pg_stat_activity a \
                         LEFT JOIN pg_stat_ssl s USING (pid) WHERE a.pid = pg_backend_pid()",
                    )
                    .fetch_one(&mut c)
                    .await;
                let _ = c.close().await;
                let link = match link {
                    Ok((None, ..)) => ", reached over its Unix socket".to_owned(),
                    Ok((Some(addr), Some(tls), Some(cipher))) => {
                        format!(", reached over TCP ({addr}) with {tls} ({cipher})")
                    }
                    Ok((Some(addr), ..)) => format!(", reached over TCP ({addr}) without TLS"),
                    Err(_) => String::new(),
                };
                v.map(|v| format!("PostgreSQL {}{link}", v.0))
                    .unwrap_or_default()
            }
            Err(_) => String::new(),
        }
    } else {
        match sqlx::SqliteConnection::connect("sqlite::memory:").await {
            Ok(mut c) => {
                let v: Result<(String,), _> = sqlx::query_as("SELECT sqlite_version()")
                    .fetch_one(&mut c)
                    .await;
                let _ = c.close().await;
                v.map(|v| format!("SQLite {} (bundled), WAL", v.0))
                    .unwrap_or_default()
            }
            Err(_) => String::new(),
        }
    }
}

/// The baseline: `op` through `todo_store` directly, one task per user, closed loop.
async fn direct(store: &Store, users: &[Arc<User>], op: Op, timing: Timing) -> load::Recorded {
    let start = Instant::now();
    let measure_start = start + timing.warmup;
    let end = measure_start + timing.measure;
    let handles: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, user)| {
            let store = store.clone();
            let user = Arc::clone(user);
            tokio::spawn(async move {
                let mut rec = load::Recorded::default();
                let Ok(tasks) = store.for_user(&user.id) else {
                    return rec;
                };
                let mut rng = seed::Gen::new(0xd12e_c700 + i as u64);
                let query = TaskQuery::default();
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let result = match op {
                        Op::Get => {
                            let id = user.task_ids[rng.below(user.task_ids.len().max(1))];
                            tasks.get(id).await.map(drop)
                        }
                        _ => tasks.list(&query).await.map(drop),
                    };
                    if t0 >= measure_start {
                        rec.latencies.push(t0.elapsed().as_nanos() as u64);
                        if let Err(e) = result {
                            rec.errors += 1;
                            *rec.error_kinds.entry(e.to_string()).or_default() += 1;
                        }
                    }
                }
                rec
            })
        })
        .collect();
    let mut all = load::Recorded {
        window: timing.measure,
        ..Default::default()
    };
    for (i, h) in handles.into_iter().enumerate() {
        if let Ok(r) = h.await {
            if i == 0 {
                all.first_conn = r.latencies.clone();
            }
            all.latencies.extend(r.latencies);
            all.errors += r.errors;
            for (k, v) in r.error_kinds {
                *all.error_kinds.entry(k).or_default() += v;
            }
        }
    }
    all
}

// ---------------------------------------------------------------------------------------------
// Output.

pub(crate) fn ms(ns: u64) -> String {
    let v = ns as f64 / 1e6;
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}%")).unwrap_or_else(|| "-".into())
}

fn print_row(kind: &str, m: &Measured) {
    println!(
        "  {kind:6} {:28} {:>5} conns: {:>8.0} req/s  p50 {:>7} ms  p95 {:>7} ms  p99 {:>7} ms  max {:>7} ms  errors {}{}",
        m.what,
        m.conns,
        m.stats.rps,
        ms(m.stats.p50),
        ms(m.stats.p95),
        ms(m.stats.p99),
        ms(m.stats.max),
        m.stats.errors,
        m.peak_rss_kib
            .map(|k| format!("  peak RSS {:.0} MiB", k as f64 / 1024.0))
            .unwrap_or_default()
    );
}

#[allow(clippy::too_many_arguments)]
fn render(
    root: &Path,
    o: &Options,
    plan: &Plan,
    machine: &Machine,
    date: &str,
    command: &str,
    load_before: &str,
    load_after: &str,
    busy_before: Option<f64>,
    elapsed: Duration,
    reports: &[BackendReport],
) -> String {
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# Benchmarks\n");
    let _ = writeln!(
        w,
        "Generated by `{command}` on {date} (the measuring part took {:.0} s). {}{}\n",
        elapsed.as_secs_f64(),
        plan.describe(o.quick),
        plan.describe_live(o)
    );
    let commit = git(root, &["rev-parse", "--short", "HEAD"]);
    let dirty = git(root, &["status", "--porcelain"]);
    let dirty: Vec<&str> = dirty
        .lines()
        .map(|l| l.get(3..).unwrap_or(l))
        .filter(|p| !p.starts_with("target"))
        .collect();
    let _ = writeln!(w, "## Machine\n");
    let _ = writeln!(w, "| | |\n|---|---|");
    let _ = writeln!(w, "| CPUs (nproc) | {} |", machine.nproc);
    let _ = writeln!(w, "| CPU model | {} |", machine.model);
    let _ = writeln!(w, "| memory | {} |", machine.memory);
    let _ = writeln!(w, "| kernel | Linux {} |", machine.kernel);
    let _ = writeln!(
        w,
        "| load average (1, 5, 15 min) | before: {load_before}; after: {load_after} |"
    );
    if let Some(busy) = busy_before {
        let _ = writeln!(
            w,
            "| CPU in use just before measuring | {:.0}% of all CPUs (over 1 s, after waiting up to 30 s for the build to settle) |",
            busy * 100.0
        );
    }
    let _ = writeln!(
        w,
        "| code | commit `{commit}`{} |",
        if dirty.is_empty() {
            String::new()
        } else {
            format!(
                " with uncommitted changes to {}",
                dirty
                    .iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    let _ = writeln!(
        w,
        "| server | `{}`, {}, `TODO_LOG=warn`, other settings at their defaults (`TODO_MAX_ACTIVE=64`, `TODO_MAX_IN_FLIGHT=4096`), `ulimit -n 65536` (or the hard limit where raising it is not permitted), tokio default runtime (one worker per CPU), mimalloc (no transparent huge pages, purge delay 0) |",
        o.server
            .as_ref()
            .map_or("target/release/examples/serve".into(), |p| p
                .display()
                .to_string()),
        o.db_max_connections.map_or(
            format!(
                "`TODO_DB_MAX_CONNECTIONS` at its default ({} on PostgreSQL, {} on SQLite)",
                todo_store::PG_POOL_DEFAULT,
                todo_store::SQLITE_POOL_DEFAULT
            ),
            |n| format!("`TODO_DB_MAX_CONNECTIONS={n}`")
        )
    );
    let _ = writeln!(
        w,
        "| load generator | `xtask/src/load.rs` (hyper 1 client, one HTTP/1.1 keep-alive connection per user, each user its own HS256 token), release build, one thread, same machine |\n"
    );
    let _ = writeln!(
        w,
        "Everything (server, database, load generator) shares the same {} CPUs, so absolute \
         numbers are lower than on a dedicated server and CPU columns add up across processes. \
         Latencies are exact nearest-rank percentiles over every response in the measured \
         window; errors are non-2xx responses plus transport errors. `heavy p50` is the median \
         of the one connection whose user (`{}`) has {} tasks. `server CPU` is the server \
         process's user+system time over the scenario, in % of one CPU; `db CPU` the same for the \
         PostgreSQL backends serving the benchmark database (SQLite runs inside the server); \
         `loader CPU` the same for the load generator. `peak RSS` \
         is the server's `VmHWM`, reset to the current RSS before each scenario (so it includes \
         memory the allocator kept from earlier scenarios). In the open loop, a target rate \
         above what the server sustains makes p99 measure the backlog growing over the window.\n",
        machine.nproc,
        seed::HEAVY_USER,
        plan.seed.tasks_of(0)
    );
    if let Some(note) = busy_before.and_then(busy_note) {
        let _ = writeln!(w, "> **Note:** {note}\n");
    }
    for r in reports {
        let _ = writeln!(w, "## {}\n", r.name);
        let _ = writeln!(
            w,
            "{}. Data: {}. Open-file limit: server {}, load generator {}.\n",
            r.version, r.seeded, r.nofile.0, r.nofile.1
        );
        let _ = writeln!(w, "### HTTP, closed loop\n");
        let _ = writeln!(
            w,
            "| scenario | conns | req/s | p50 ms | p95 ms | p99 ms | max ms | errors | heavy p50 ms | server CPU | db CPU | loader CPU | peak RSS MiB |"
        );
        let _ = writeln!(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for m in &r.http {
            let _ = writeln!(
                w,
                "{} {} | {} | {} | {} |",
                stats_cells(&m.what, m.conns, &m.stats),
                pct(m.server_cpu),
                pct(m.db_cpu),
                pct(m.own_cpu),
                rss(m),
            );
        }
        if !r.open.is_empty() {
            let _ = writeln!(w, "\n### HTTP, open loop\n");
            let _ = writeln!(
                w,
                "`GET /tasks` at a fixed arrival rate spread evenly over the connections, each \
                 on its own schedule; latency counted from the intended send time, so waiting \
                 behind a slow response counts (no coordinated omission). The first row is the \
                 issue's {OPEN_RATE:.0} req/s; the second half the closed-loop `list` \
                 throughput measured just before, a load the server can sustain. `sent late`: \
                 requests that left more than 1 ms after their intended time. `achieved`: \
                 responses over the time until the last one arrived.\n"
            );
            let _ = writeln!(
                w,
                "| target req/s | conns | achieved req/s | p50 ms | p95 ms | p99 ms | max ms | errors | sent late | server CPU | db CPU | peak RSS MiB |"
            );
            let _ = writeln!(w, "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
            for m in &r.open {
                let _ = writeln!(
                    w,
                    "| {:.0} | {} | {:.0} | {} | {} | **{}** | {} | {} | {} | {} | {} | {} |",
                    m.rate.unwrap_or(0.0),
                    m.conns,
                    m.stats.rps,
                    ms(m.stats.p50),
                    ms(m.stats.p95),
                    ms(m.stats.p99),
                    ms(m.stats.max),
                    m.stats.errors,
                    m.stats.late,
                    pct(m.server_cpu),
                    pct(m.db_cpu),
                    rss(m),
                );
            }
        }
        if !r.direct.is_empty() {
            let _ = writeln!(w, "\n### Direct store baseline (no HTTP, JSON or JWT)\n");
            let slice = plan.paired_slice();
            let _ = writeln!(
                w,
                "The same queries through `todo_store` in-process (`UserTasks::list` with the \
                 default query, `UserTasks::get`), one task per user at the same concurrency, same \
                 pool size, on a 2-worker tokio runtime, with the server's allocator. `HTTP / \
                 direct` compares throughput (req/s over ops/s: the share of the store's throughput \
                 left once HTTP, JSON, JWT and the load generator take their part) and the medians. \
                 When both run, list is measured in {PAIRED_ROUNDS} alternating slices, direct then \
                 HTTP, each {:.1} s after {:.1} s of warm-up, and each list row adds up its slices: \
                 both sides of the ratio see the machine at the same times.\n",
                slice.measure.as_secs_f64(),
                slice.warmup.as_secs_f64(),
            );
            let _ = writeln!(
                w,
                "| query | concurrency | ops/s | p50 ms | p95 ms | p99 ms | max ms | errors | heavy p50 ms | CPU | HTTP req/s / direct ops/s | HTTP p50 / direct p50 |"
            );
            let _ = writeln!(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
            for d in &r.direct {
                let http = r
                    .http
                    .iter()
                    .find(|h| h.what == d.what && h.conns == d.conns);
                let (tput, lat) = match http {
                    Some(h) if d.stats.rps > 0.0 && d.stats.p50 > 0 => (
                        format!("{:.2}", h.stats.rps / d.stats.rps),
                        format!("{:.1}x", h.stats.p50 as f64 / d.stats.p50 as f64),
                    ),
                    _ => ("-".into(), "-".into()),
                };
                let _ = writeln!(
                    w,
                    "{} {} | {tput} | {lat} |",
                    stats_cells(&d.what, d.conns, &d.stats),
                    pct(d.own_cpu),
                );
            }
        }
        if !r.fastapi.is_empty() {
            render_fastapi(w, plan, &r.http, &r.fastapi);
        }
        if !r.sync.is_empty() || !r.sync_notes.is_empty() {
            live::render_sync(w, &r.sync, &r.sync_notes);
        }
        if !r.recurring.is_empty() {
            let _ = writeln!(w, "\n### Recurring completions\n");
            let _ = writeln!(
                w,
                "| scenario | conns | req/s | p50 ms | p95 ms | p99 ms | max ms | errors | heavy p50 ms | server CPU | db CPU | loader CPU | peak RSS MiB |"
            );
            let _ = writeln!(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
            for m in &r.recurring {
                let _ = writeln!(
                    w,
                    "{} {} | {} | {} | {} |",
                    stats_cells(&m.what, m.conns, &m.stats),
                    pct(m.server_cpu),
                    pct(m.db_cpu),
                    pct(m.own_cpu),
                    rss(m),
                );
            }
            for n in &r.recurring_notes {
                let _ = writeln!(w, "\n{n}");
            }
        }
        if r.idle.is_some() || r.fanout.is_some() {
            live::render_events(w, r.idle.as_ref(), r.fanout.as_ref(), &r.instances_note);
        }
        if let Some(rem) = &r.reminders {
            live::render_reminders(w, rem, &r.reminders_note);
        }
        if let Some(h) = &r.webhooks {
            webhooks::render(w, h);
        }
        if r.errors.is_empty() {
            let _ = writeln!(w, "\nNo errors.\n");
        } else {
            let _ = writeln!(w, "\nErrors:\n");
            for e in &r.errors {
                let _ = writeln!(w, "- {e}");
            }
            let _ = writeln!(w);
        }
    }
    md
}

/// The `fastapi` part's section: the comparison app's list rows beside ours.
fn render_fastapi(w: &mut String, plan: &Plan, http: &[Measured], fastapi: &[Measured]) {
    let slice = plan.paired_slice();
    let pins: Vec<String> = include_str!("../fastapi/requirements.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| format!("`{}`", l.trim()))
        .collect();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _ = writeln!(w, "\n### FastAPI + SQLModel, the same listing\n");
    let _ = writeln!(
        w,
        "`xtask/fastapi/app.py`: `GET /api/{{user_id}}/tasks` of the contract (the default \
         listing: the same JSON body, `meta.total` and `meta.next_cursor`, HS256 tokens checked \
         with PyJWT) written as a FastAPI + SQLModel app usually is (a synchronous endpoint, a \
         session per request, the ORM's select and count, pydantic response models), on the same \
         database, under uvicorn with {workers} worker processes (one per CPU) and a pool of 16 \
         connections each; {}. Same users, tokens and load generator; measured in {PAIRED_ROUNDS} \
         slices of {:.1} s alternating with this server's list row above (same times, same \
         machine). `server CPU` is uvicorn and its workers; `RSS` their resident memory at the \
         end.\n",
        pins.join(", "),
        slice.measure.as_secs_f64(),
    );
    let _ = writeln!(
        w,
        "| server | conns | req/s | p50 ms | p95 ms | p99 ms | max ms | errors | heavy p50 ms | server CPU | db CPU | RSS MiB (this server: peak) | this server's req/s over FastAPI's |"
    );
    let _ = writeln!(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for f in fastapi {
        let ours = http
            .iter()
            .find(|h| h.what == f.what && h.conns == f.conns && h.rate.is_none());
        for (name, m) in [("this server", ours), ("FastAPI + SQLModel", Some(f))] {
            let Some(m) = m else { continue };
            let times = match ours {
                Some(o) if name == "FastAPI + SQLModel" && f.stats.rps > 0.0 => {
                    format!("**{:.1}x**", o.stats.rps / f.stats.rps)
                }
                _ => "-".into(),
            };
            let _ = writeln!(
                w,
                "{} {} | {} | {} | {times} |",
                stats_cells(name, m.conns, &m.stats),
                pct(m.server_cpu),
                pct(m.db_cpu),
                m.peak_rss_kib
                    .map(|k| format!("{:.0}", k as f64 / 1024.0))
                    .unwrap_or_else(|| "-".into()),
            );
        }
    }
}

fn rss(m: &Measured) -> String {
    match m.peak_rss_kib {
        Some(k) => format!(
            "{:.0}{}",
            k as f64 / 1024.0,
            if m.peak_reset { "" } else { " (cumulative)" }
        ),
        None => "-".into(),
    }
}

/// A sentence when other work kept the CPUs busy just before the run.
fn busy_note(busy: f64) -> Option<String> {
    (busy >= 0.15).then(|| {
        format!(
            "the machine was busy: {:.0}% of its CPU time was in use in the second before \
             measuring, with nothing of the benchmark running yet (other builds or tests \
             alongside). Expect these numbers to be lower and noisier than on an idle machine.",
            busy * 100.0
        )
    })
}
