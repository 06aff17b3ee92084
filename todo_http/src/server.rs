//! The standalone server: configuration from `TODO_*` environment variables, migrations on
//! start, graceful shutdown on SIGTERM / Ctrl-C; and [`serve`], hyper's HTTP/1.1 and HTTP/2
//! connections with the header-read and write timeouts, connection limit and graceful drain it
//! runs on.

use std::time::Duration;

use todo_store::{Store, StoreOptions};

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
    /// `TODO_DB_MAX_CONNECTIONS` (16), `TODO_DB_ACQUIRE_TIMEOUT_MS` (5000),
    /// `TODO_DB_STATEMENT_TIMEOUT_MS` (10000; 0 disables).
    pub store: StoreOptions,
    /// JWT settings (`TODO_JWT_SECRET`, `BETTER_AUTH_SECRET`, `TODO_JWKS_URL`, …); `None` when
    /// nothing is configured (the server then runs in development mode with a generated secret).
    pub jwt: Option<JwtConfig>,
}

fn parse<T: std::str::FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: T,
) -> Result<T, String> {
    match lookup(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
    {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a valid value")),
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
            addr: parse(&lookup, "TODO_ADDR", "127.0.0.1:8080".to_owned())?,
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
                max_connections: parse(
                    &lookup,
                    "TODO_DB_MAX_CONNECTIONS",
                    defaults.max_connections,
                )?,
                acquire_timeout: Duration::from_millis(parse(
                    &lookup,
                    "TODO_DB_ACQUIRE_TIMEOUT_MS",
                    5_000,
                )?),
                statement_timeout: (statement_ms > 0).then(|| Duration::from_millis(statement_ms)),
                ..defaults
            },
            jwt: JwtConfig::from_lookup(&lookup).map_err(|e| e.to_string())?,
        })
    }
}

/// A random secret for development mode.
fn ephemeral_secret() -> String {
    let mut bytes = [0u8; 32];
    if getrandom::fill(&mut bytes).is_err() {
        // Fall back to the UUID generator's randomness.
        bytes[..16].copy_from_slice(uuid::Uuid::now_v7().as_bytes());
        bytes[16..].copy_from_slice(uuid::Uuid::now_v7().as_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

/// Runs the server until SIGTERM / Ctrl-C: connects, migrates, serves, then closes the pool.
pub async fn run(cfg: ServerConfig) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing::info!(database = %todo_store::redact_url(&cfg.database_url), "connecting");
    let store = Store::connect_with(&cfg.database_url, &cfg.store).await?;
    let applied = store.migrate().await?;
    if !applied.is_empty() {
        tracing::info!(?applied, "applied migrations");
    }
    let listener = tokio::net::TcpListener::bind(cfg.addr.as_str()).await?;
    let local = listener.local_addr()?.to_string();
    let auth = match cfg.jwt.clone() {
        Some(jwt) => JwtAuthenticator::new(jwt).await?,
        None => {
            let secret = ephemeral_secret();
            let token = mint_hs256(&secret, "demo-user", Duration::from_secs(24 * 3600))?;
            // Printed once to stdout, deliberately not through the log.
            println!(
                "DEVELOPMENT MODE: no TODO_JWT_SECRET, BETTER_AUTH_SECRET or TODO_JWKS_URL is set.\n\
                 A throwaway secret was generated; this token for user `demo-user` is valid for 24 h:\n\n\
                 export TOKEN={token}\n\
                 curl -H \"Authorization: Bearer $TOKEN\" http://{local}/api/demo-user/tasks\n\n\
                 Swagger UI: http://{local}/docs"
            );
            JwtAuthenticator::new(JwtConfig::hs256(secret)).await?
        }
    };
    let app = TodoApi::builder(store.clone())
        .authenticator(auth)
        .cors_origins(cfg.cors_origins.clone())
        .max_in_flight(cfg.max_in_flight)
        .max_active(cfg.max_active)
        .body_read_timeout(cfg.body_read_timeout)
        .build();
    tracing::info!(addr = %local, "listening");
    serve(listener, app, &cfg.serve, shutdown_signal()).await?;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}
