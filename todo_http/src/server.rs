//! The standalone server: configuration from `TODO_*` environment variables, migrations on
//! start, graceful shutdown on SIGTERM / Ctrl-C; and [`serve`], hyper's HTTP/1.1 and HTTP/2
//! connections with the header-read and write timeouts, connection limit and graceful drain it
//! runs on.

use std::time::Duration;

use todo_store::{Store, StoreOptions, WebhookPolicy};

mod http;
mod io;

pub use http::{ServeOptions, serve};

use crate::TodoApi;
use crate::auth::{JwtAuthenticator, JwtConfig, mint_hs256};

/// Settings of the standalone server (see the README's configuration table).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `DATABASE_URL`; default `sqlite://todo.db` in the working directory.
    pub database_url: String,
    /// `TODO_ADDR`; default `127.0.0.1:8080`.
    pub addr: String,
    /// `TODO_CORS_ORIGINS`: comma-separated origins (`*` for any); default none.
    pub cors_origins: Vec<String>,
    /// `TODO_MAX_IN_FLIGHT`: requests accepted at once (waiting or active) before shedding with
    /// 503; default 4096.
    pub max_in_flight: usize,
    /// `TODO_MAX_ACTIVE`: requests processed at once; more wait their turn; default 64.
    pub max_active: usize,
    /// `TODO_BODY_READ_TIMEOUT_SECS`: a request body must arrive in full within this, else 408;
    /// default 30.
    pub body_read_timeout: Duration,
    /// Connection limits: `TODO_HEADER_READ_TIMEOUT_SECS` (30), `TODO_WRITE_TIMEOUT_SECS` (30),
    /// `TODO_MAX_CONNECTIONS` (10000); its `shutdown_grace` is `TODO_SHUTDOWN_GRACE_SECS` (10).
    pub serve: ServeOptions,
    /// `TODO_DB_MAX_CONNECTIONS` (16 on PostgreSQL, 4 on SQLite), `TODO_DB_ACQUIRE_TIMEOUT_MS` (5000),
    /// `TODO_DB_STATEMENT_TIMEOUT_MS` (10000; 0 disables).
    pub store: StoreOptions,
    /// JWT settings (`TODO_JWT_SECRET`, `BETTER_AUTH_SECRET`, `TODO_JWKS_URL`, …); `None` when
    /// nothing is configured (the server then runs in development mode, see
    /// [`development_secret`]).
    pub jwt: Option<JwtConfig>,
    /// `TODO_CREATE_DATABASE`: create a missing PostgreSQL database at start (the role needs
    /// `CREATEDB`); default false, when a missing database is an error that says how to create it.
    pub create_database: bool,
    /// `TODO_SSE_KEEPALIVE_SECS`: a `: keep-alive` comment on idle `/events` streams at least
    /// this often; default 15.
    pub sse_keep_alive: Duration,
    /// `TODO_SSE_MAX_STREAMS`: `/events` streams open at once, all users; default 10,000.
    pub sse_max_streams: usize,
    /// `TODO_TOMBSTONE_DAYS`: days deletions are kept for `/changes` (older tokens get 410);
    /// default 30.
    pub tombstone_days: u32,
    /// Which webhook URLs are accepted and how retries are spaced:
    /// `TODO_WEBHOOK_ALLOW_HTTP` (false), `TODO_WEBHOOK_ALLOW_PRIVATE` (false) and
    /// `TODO_WEBHOOK_RETRY_SCALE` (1; a number greater than 0).
    pub webhooks: WebhookPolicy,
}

/// The command-line flag of a setting: `TODO_MAX_ACTIVE` is `--max-active`, `DATABASE_URL` is
/// `--database-url`.
pub fn flag_of(name: &str) -> String {
    let bare = name.strip_prefix("TODO_").unwrap_or(name);
    format!("--{}", bare.to_ascii_lowercase().replace('_', "-"))
}

fn invalid(name: &str, value: &str, expected: &str) -> String {
    format!(
        "{name}={value:?} (or {}) is not valid: expected {expected}",
        flag_of(name)
    )
}

fn parse<T: std::str::FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: T,
) -> Result<T, String> {
    Ok(parse_opt(lookup, name)?.unwrap_or(default))
}

/// [`parse`] of a setting whose absence means a default chosen elsewhere (`None`).
fn parse_opt<T: std::str::FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
) -> Result<Option<T>, String> {
    match lookup(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
    {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| invalid(name, &v, "a whole number such as 30")),
    }
}

fn parse_bool(lookup: &impl Fn(&str) -> Option<String>, name: &str) -> Result<bool, String> {
    match lookup(name)
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "0" | "false" | "no" | "off") => Ok(false),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some(v) => Err(invalid(name, v, "true or false")),
    }
}

/// A positive, finite number (`TODO_WEBHOOK_RETRY_SCALE`).
fn parse_scale(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: f64,
) -> Result<f64, String> {
    match lookup(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
    {
        None => Ok(default),
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x > 0.0)
            .ok_or_else(|| {
                invalid(
                    name,
                    &v,
                    "a number greater than 0, such as 1 (the documented schedule) or 0.01 (100 times faster)",
                )
            }),
    }
}

/// Checks the shape of a listen address (`host:port`) without resolving it, so that
/// `TODO_ADDR=8080` is reported as a setting error rather than at bind time.
fn listen_addr(value: &str) -> Result<String, String> {
    let expected =
        "host:port, such as 127.0.0.1:8080 (this machine only) or 0.0.0.0:8080 (every interface)";
    let ok = value.parse::<std::net::SocketAddr>().is_ok()
        || value.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains(':') && port.parse::<u16>().is_ok()
        });
    if ok {
        Ok(value.to_owned())
    } else {
        Err(invalid("TODO_ADDR", value, expected))
    }
}

impl ServerConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads settings through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let defaults = StoreOptions::default();
        let statement_ms: u64 = parse(&lookup, "TODO_DB_STATEMENT_TIMEOUT_MS", 10_000)?;
        Ok(Self {
            database_url: lookup("DATABASE_URL")
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| "sqlite://todo.db".to_owned()),
            addr: listen_addr(&parse(&lookup, "TODO_ADDR", "127.0.0.1:8080".to_owned())?)?,
            cors_origins: lookup("TODO_CORS_ORIGINS")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            max_in_flight: parse(&lookup, "TODO_MAX_IN_FLIGHT", crate::DEFAULT_MAX_IN_FLIGHT)?,
            max_active: parse(&lookup, "TODO_MAX_ACTIVE", crate::DEFAULT_MAX_ACTIVE)?,
            body_read_timeout: Duration::from_secs(parse(
                &lookup,
                "TODO_BODY_READ_TIMEOUT_SECS",
                crate::DEFAULT_BODY_READ_TIMEOUT.as_secs(),
            )?),
            serve: ServeOptions {
                header_read_timeout: Duration::from_secs(parse(
                    &lookup,
                    "TODO_HEADER_READ_TIMEOUT_SECS",
                    30,
                )?),
                write_timeout: Duration::from_secs(parse(&lookup, "TODO_WRITE_TIMEOUT_SECS", 30)?),
                max_connections: parse(&lookup, "TODO_MAX_CONNECTIONS", 10_000)?,
                shutdown_grace: Duration::from_secs(parse(
                    &lookup,
                    "TODO_SHUTDOWN_GRACE_SECS",
                    10,
                )?),
                ..ServeOptions::default()
            },
            store: StoreOptions {
                max_connections: parse_opt(&lookup, "TODO_DB_MAX_CONNECTIONS")?
                    .or(defaults.max_connections),
                acquire_timeout: Duration::from_millis(parse(
                    &lookup,
                    "TODO_DB_ACQUIRE_TIMEOUT_MS",
                    5_000,
                )?),
                statement_timeout: (statement_ms > 0).then(|| Duration::from_millis(statement_ms)),
                ..defaults
            },
            jwt: JwtConfig::from_lookup(&lookup).map_err(|e| e.to_string())?,
            create_database: parse_bool(&lookup, "TODO_CREATE_DATABASE")?,
            sse_keep_alive: Duration::from_secs(
                parse(
                    &lookup,
                    "TODO_SSE_KEEPALIVE_SECS",
                    crate::events::DEFAULT_KEEP_ALIVE.as_secs(),
                )?
                .max(1),
            ),
            sse_max_streams: parse(
                &lookup,
                "TODO_SSE_MAX_STREAMS",
                crate::events::DEFAULT_MAX_STREAMS,
            )?,
            tombstone_days: parse(
                &lookup,
                "TODO_TOMBSTONE_DAYS",
                todo_store::sync::TOMBSTONE_DAYS_DEFAULT,
            )?,
            webhooks: WebhookPolicy {
                allow_http: parse_bool(&lookup, "TODO_WEBHOOK_ALLOW_HTTP")?,
                allow_private: parse_bool(&lookup, "TODO_WEBHOOK_ALLOW_PRIVATE")?,
                retry_scale: parse_scale(
                    &lookup,
                    "TODO_WEBHOOK_RETRY_SCALE",
                    WebhookPolicy::default().retry_scale,
                )?,
            },
        })
    }
}

/// A random secret for development mode: 32 bytes, hex.
fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    if getrandom::fill(&mut bytes).is_err() {
        // Fall back to the UUID generator's randomness.
        bytes[..16].copy_from_slice(uuid::Uuid::now_v7().as_bytes());
        bytes[16..].copy_from_slice(uuid::Uuid::now_v7().as_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The HS256 secret of development mode (no JWT setting), and where it is kept.
#[derive(Debug, Clone)]
pub struct DevelopmentSecret {
    /// The secret.
    pub secret: String,
    /// The file it is kept in (beside a SQLite database file), or `None` when it lives only as
    /// long as the process (`sqlite::memory:`, PostgreSQL).
    pub file: Option<std::path::PathBuf>,
    /// Whether the file was written just now.
    pub created: bool,
}

/// The file that keeps the development secret of a SQLite database: `todo.db.secret` beside
/// `sqlite://todo.db`. `None` for an in-memory SQLite database and for PostgreSQL.
pub fn development_secret_file(database_url: &str) -> Option<std::path::PathBuf> {
    let rest = database_url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path.contains(":memory:") || database_url.contains("mode=memory") {
        return None;
    }
    let mut file = std::ffi::OsString::from(path);
    file.push(".secret");
    Some(file.into())
}

/// Development mode's secret: read from [`development_secret_file`] when it exists, else
/// generated and (for a SQLite file) written there with mode 0600, so tokens minted by
/// `serve` or `serve token` survive a restart.
pub fn development_secret(database_url: &str) -> Result<DevelopmentSecret, String> {
    let Some(file) = development_secret_file(database_url) else {
        return Ok(DevelopmentSecret {
            secret: random_secret(),
            file: None,
            created: false,
        });
    };
    match std::fs::read_to_string(&file) {
        Ok(s) if s.trim().len() >= 32 => {
            return Ok(DevelopmentSecret {
                secret: s.trim().to_owned(),
                file: Some(file),
                created: false,
            });
        }
        Ok(_) => {
            return Err(format!(
                "the development secret file {} is empty or too short: delete it to have a new \
                 secret generated, or set TODO_JWT_SECRET",
                file.display()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "cannot read the development secret file {}: {e}",
                file.display()
            ));
        }
    }
    let secret = random_secret();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&file).and_then(|mut f| {
        use std::io::Write;
        f.write_all(secret.as_bytes())?;
        f.write_all(b"\n")
    });
    match written {
        Ok(()) => Ok(DevelopmentSecret {
            secret,
            file: Some(file),
            created: true,
        }),
        // Another process wrote it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => development_secret(database_url),
        Err(e) => Err(format!(
            "cannot write the development secret file {}: {e} (set TODO_JWT_SECRET instead)",
            file.display()
        )),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received: finishing in-flight requests");
}

/// Connects to the configured database and checks it answers, with errors that name the
/// setting and what to do: an unreachable server shows the driver's reason ("connection
/// refused"), and a missing PostgreSQL database is created when
/// [`create_database`](ServerConfig::create_database) is set, or explained.
pub async fn connect(cfg: &ServerConfig) -> Result<Store, String> {
    use todo_store::setup::{ProbeError, probe};
    let shown = todo_store::redact_url(&cfg.database_url);
    let timeout = cfg.store.acquire_timeout.max(Duration::from_secs(1));
    let mut probed = probe(&cfg.database_url, timeout).await;
    if let Err(ProbeError::MissingDatabase { name }) = &probed
        && cfg.create_database
    {
        let name = name.clone();
        todo_store::setup::create_database(&cfg.database_url)
            .await
            .map_err(|e| {
                format!(
                    "database \"{name}\" does not exist and could not be created ({e}); create \
                     it as a role that may (`createdb {name}`), or grant this role CREATEDB"
                )
            })?;
        tracing::info!(database = %name, "created the database (TODO_CREATE_DATABASE)");
        probed = probe(&cfg.database_url, timeout).await;
    }
    match probed {
        Ok(()) => {}
        Err(ProbeError::MissingDatabase { name }) => {
            return Err(format!(
                "database \"{name}\" does not exist on the server of DATABASE_URL={shown}: \
                 create it first (`createdb {name}`, or `psql -c 'CREATE DATABASE \"{name}\"'`), \
                 or start with --create-database (TODO_CREATE_DATABASE=true) to have it created"
            ));
        }
        Err(e) => {
            return Err(format!(
                "cannot connect to the database of DATABASE_URL={shown}: {e}. Check that the \
                 server is running and accepts connections at that address, or set DATABASE_URL \
                 (--database-url)"
            ));
        }
    }
    Store::connect_with(&cfg.database_url, &cfg.store)
        .await
        .map_err(|e| format!("cannot open the database of DATABASE_URL={shown}: {e}"))
}

/// Binds the listen address, saying which address and setting when it fails.
pub async fn bind(addr: &str) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            format!(
                "cannot listen on {addr}: the address is already in use (is another server \
                 running?). Stop it, or set TODO_ADDR (--addr) to a free address such as \
                 127.0.0.1:8081"
            )
        } else {
            format!("cannot listen on {addr} (TODO_ADDR, --addr): {e}")
        }
    })
}

/// Longest the server waits, after the drain, for a reminder scheduler round in progress at
/// shutdown to finish before abandoning it (its transaction then rolls back, and its reminders
/// stay pending for the next start or another instance). The webhook sender gets as long.
const SCHEDULER_STOP_GRACE: Duration = Duration::from_secs(2);

/// How often the standalone server prunes expired tombstones and idempotency records.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Runs the server until SIGTERM / Ctrl-C: connects, migrates, serves (with the reminder
/// scheduler, the webhook sender and tombstone pruning beside it), then closes the pool.
pub async fn run(cfg: ServerConfig) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    run_until(cfg, shutdown_signal()).await
}

/// [`run`] until `shutdown` resolves instead of a signal. At `shutdown` the reminder scheduler
/// and the webhook sender stop at once (they do not wait for the drain of open connections,
/// nor hold it), and the server drains.
pub async fn run_until(
    cfg: ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing::info!(database = %todo_store::redact_url(&cfg.database_url), "connecting");
    let store = connect(&cfg).await?;
    let applied = store
        .migrate()
        .await
        .map_err(|e| format!("cannot migrate the database: {e}"))?;
    if !applied.is_empty() {
        tracing::info!(?applied, "applied migrations");
    }
    // Before anything is served or sent: URLs are checked, and the sender retries, by it.
    store.set_webhook_policy(cfg.webhooks.clone());
    let listener = bind(&cfg.addr).await?;
    let local = listener.local_addr()?.to_string();
    let auth = match cfg.jwt.clone() {
        Some(jwt) => JwtAuthenticator::new(jwt).await?,
        None => {
            let dev = development_secret(&cfg.database_url)?;
            let token = mint_hs256(&dev.secret, "demo-user", Duration::from_secs(24 * 3600))?;
            let kept = match (&dev.file, dev.created) {
                (Some(f), true) => format!(
                    "A secret was generated and saved to {} (mode 0600): tokens stay valid across restarts.",
                    f.display()
                ),
                (Some(f), false) => format!(
                    "The secret saved in {} is reused: earlier tokens stay valid.",
                    f.display()
                ),
                (None, _) => "A throwaway secret was generated (nothing to keep it beside): tokens end with this process.".to_owned(),
            };
            // Printed once to stdout, deliberately not through the log.
            println!(
                "DEVELOPMENT MODE: no TODO_JWT_SECRET, BETTER_AUTH_SECRET or TODO_JWKS_URL is set.\n\
                 {kept}\n\
                 This token for user `demo-user` is valid for 24 h (mint more with `serve token <user>`):\n\n\
                 export TOKEN={token}\n\
                 curl -H \"Authorization: Bearer $TOKEN\" http://{local}/api/demo-user/tasks\n\n\
                 Swagger UI: http://{local}/docs"
            );
            JwtAuthenticator::new(JwtConfig::hs256(dev.secret)).await?
        }
    };
    // Fired when shutdown starts: every `/events` stream ends, so the drain need not wait.
    let streams_end = tokio_util::sync::CancellationToken::new();
    let app = TodoApi::builder(store.clone())
        .authenticator(auth)
        .cors_origins(cfg.cors_origins.clone())
        .max_in_flight(cfg.max_in_flight)
        .max_active(cfg.max_active)
        .body_read_timeout(cfg.body_read_timeout)
        .events(crate::EventOptions {
            keep_alive: cfg.sse_keep_alive,
            max_streams: cfg.sse_max_streams,
            shutdown: streams_end.clone(),
        })
        .build();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stops = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        // An error means the sender is gone: stop too.
        let _ = stopped.wait_for(|s| *s).await;
    };
    let scheduler = tokio::spawn(crate::reminders::run_reminder_scheduler(
        store.clone(),
        stops(stopped.clone()),
    ));
    let sender = tokio::spawn(crate::webhooks::run_webhook_sender(
        store.clone(),
        stops(stopped),
    ));
    let pruning = tokio::spawn(store.clone().run_pruning(PRUNE_EVERY, cfg.tombstone_days));
    let shutdown = async {
        shutdown.await;
        // Streams end and the scheduler stops at once: the drain waits for neither.
        streams_end.cancel();
        let _ = stop.send(true);
    };
    tracing::info!(addr = %local, "listening");
    let served = serve(listener, app, &cfg.serve, shutdown).await;
    // Also when serving failed before any shutdown.
    let _ = stop.send(true);
    pruning.abort();
    let abort = scheduler.abort_handle();
    if tokio::time::timeout(SCHEDULER_STOP_GRACE, scheduler)
        .await
        .is_err()
    {
        tracing::warn!("reminder scheduler did not stop in time: abandoning its round");
        abort.abort();
    }
    let abort = sender.abort_handle();
    if tokio::time::timeout(SCHEDULER_STOP_GRACE, sender)
        .await
        .is_err()
    {
        // Its claims expire and the deliveries are sent again, here or by another instance.
        tracing::warn!("webhook sender did not stop in time: abandoning its attempts");
        abort.abort();
    }
    served?;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ServerConfig;

    fn config(vars: &[(&str, &str)]) -> Result<ServerConfig, String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ServerConfig::from_lookup(move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn the_pool_size_is_the_backends_unless_set() {
        let c = config(&[]).expect("defaults");
        assert_eq!(c.store.max_connections, None);
        assert_eq!(
            c.store.pool_size(&c.database_url),
            todo_store::SQLITE_POOL_DEFAULT
        );
        let c = config(&[
            ("DATABASE_URL", "postgres://h/db"),
            ("TODO_DB_MAX_CONNECTIONS", " "),
        ])
        .expect("blank is unset");
        assert_eq!(
            c.store.pool_size(&c.database_url),
            todo_store::PG_POOL_DEFAULT
        );
        let c = config(&[("TODO_DB_MAX_CONNECTIONS", "9")]).expect("set");
        assert_eq!(c.store.max_connections, Some(9));
        let e = config(&[("TODO_DB_MAX_CONNECTIONS", "many")]).expect_err("refused");
        assert!(e.contains("TODO_DB_MAX_CONNECTIONS"), "{e}");
    }
}
