//! The standalone server: `cargo run --example serve [-- --help]`.
//!
//! With no configuration it stores tasks in `./todo.db` (SQLite), listens on 127.0.0.1:8080 and
//! prints a development token. Every setting is a flag and an environment variable (see
//! `--help` or the README); subcommands `serve` (the default), `migrate`, `token`,
//! `check-config` and `healthcheck`.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use todo_examples::cli::{Cli, Command, LogFormat, Settings};
use todo_http::server::{ServerConfig, connect, development_secret, run};

/// mimalloc instead of glibc's malloc: a list response allocates and frees a few hundred small
/// values (row strings, tags, the JSON buffer), and glibc's arenas took about a fifth of the
/// server's CPU time doing it (`perf` under `cargo xtask bench`). Built without transparent huge
/// pages (`no_thp`), which would round memory up in 2 MiB steps.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (the same slot since 2.0, where it was
/// named `reset_delay`); the Rust bindings have no constant for it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Hands freed pages back to the OS at once instead of after mimalloc's default second, unless
/// `MIMALLOC_PURGE_DELAY` says otherwise: resident memory then follows the live data (idle
/// connections hold almost none) and stays under 40 MB at 1,000 connections, and measured
/// throughput was no lower.
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option; mimalloc reads its options from any thread at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    tune_allocator();
    // `--help`, `--version` and malformed arguments end here (exit 0, 0 and 2).
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli.settings) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let json_logs = cli.settings.log_format == LogFormat::Json;
    let result = match cli.settings.server_config() {
        Ok(cfg) => match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => run(cfg).await,
            Command::Migrate => migrate(&cfg).await,
            Command::Token { user, ttl } => token(&cfg, &user, ttl),
            Command::CheckConfig => {
                check_config(&cfg, &cli.settings);
                Ok(())
            }
            Command::Healthcheck => healthcheck(&cfg.addr),
        },
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Once: as a log record for log shippers, else as a plain line for people.
        Err(e) if json_logs => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr as text or JSON; ANSI colours only when stderr is a terminal.
fn init_logging(s: &Settings) -> Result<(), String> {
    let spec = s.log.as_deref().unwrap_or("info");
    let filter = tracing_subscriber::EnvFilter::try_new(spec).map_err(|e| {
        format!("TODO_LOG={spec:?} (or --log) is not a log filter such as `info` or `todo_http=debug`: {e}")
    })?;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal());
    match s.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

async fn migrate(cfg: &ServerConfig) -> Result<(), Error> {
    let store = connect(cfg).await?;
    let applied = store.migrate().await?;
    store.close().await;
    if applied.is_empty() {
        println!("the database is up to date");
    } else {
        println!("applied migrations: {}", applied.join(", "));
    }
    Ok(())
}

fn token(cfg: &ServerConfig, user: &str, ttl: Duration) -> Result<(), Error> {
    let secret = match &cfg.jwt {
        Some(jwt) => jwt.secret.clone().ok_or(
            "TODO_JWKS_URL is set: tokens come from the provider that owns that key set; \
             `serve token` signs only with a shared secret (TODO_JWT_SECRET)",
        )?,
        None => {
            let dev = development_secret(&cfg.database_url)?;
            if dev.file.is_none() {
                return Err(
                    "no secret to sign with: set TODO_JWT_SECRET (development mode keeps \
                            its secret only beside a SQLite database file)"
                        .into(),
                );
            }
            dev.secret
        }
    };
    println!("{}", todo_http::auth::mint_hs256(&secret, user, ttl)?);
    Ok(())
}

/// Prints the settings as the server would use them; secrets and passwords masked.
fn check_config(cfg: &ServerConfig, s: &Settings) {
    let auth = match &cfg.jwt {
        Some(j) if j.jwks_url.is_some() => {
            format!("JWKS at {}", j.jwks_url.as_deref().unwrap_or_default())
        }
        Some(_) if s.jwt_secret.is_some() => "HS256 with TODO_JWT_SECRET (****)".to_owned(),
        Some(_) => "HS256 with BETTER_AUTH_SECRET (****)".to_owned(),
        None => match todo_http::server::development_secret_file(&cfg.database_url) {
            Some(f) => format!("development mode: secret kept in {}", f.display()),
            None => "development mode: a throwaway secret per start".to_owned(),
        },
    };
    println!("database: {}", todo_store::redact_url(&cfg.database_url));
    println!("create database if missing: {}", cfg.create_database);
    println!("listen: {}", cfg.addr);
    println!("auth: {auth}");
    if let Some(j) = &cfg.jwt {
        println!(
            "issuer: {}; audience: {}; leeway: {} s",
            j.issuer.as_deref().unwrap_or("(any)"),
            j.audience.as_deref().unwrap_or("(any)"),
            j.leeway_secs
        );
    }
    println!("cors origins: {:?}", cfg.cors_origins);
    println!(
        "requests: {} in flight, {} active; body read {} s",
        cfg.max_in_flight,
        cfg.max_active,
        cfg.body_read_timeout.as_secs()
    );
    println!(
        "connections: {} at most; header read {} s, write {} s, shutdown grace {} s",
        cfg.serve.max_connections,
        cfg.serve.header_read_timeout.as_secs(),
        cfg.serve.write_timeout.as_secs(),
        cfg.serve.shutdown_grace.as_secs()
    );
    println!(
        "database pool: {} connections, acquire timeout {} ms, statement timeout {}",
        cfg.store.pool_size(&cfg.database_url),
        cfg.store.acquire_timeout.as_millis(),
        cfg.store
            .statement_timeout
            .map_or("off".to_owned(), |t| format!("{} ms", t.as_millis()))
    );
    let hooks = &cfg.webhooks;
    println!(
        "webhooks: {} URLs to {} addresses; retry waits x{}",
        if hooks.allow_http {
            "http:// and https://"
        } else {
            "https://"
        },
        if hooks.allow_private {
            "any (private ones included)"
        } else {
            "public"
        },
        hooks.retry_scale
    );
    println!("the configuration is valid");
}

/// `GET /healthz` on the listen address (a wildcard address is asked on loopback).
fn healthcheck(addr: &str) -> Result<(), Error> {
    let target = match addr.rsplit_once(':') {
        Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
        Some(("[::]", port)) => format!("[::1]:{port}"),
        _ => addr.to_owned(),
    };
    let sock = std::net::ToSocketAddrs::to_socket_addrs(&target)?
        .next()
        .ok_or_else(|| format!("{target} resolves to no address"))?;
    let timeout = Duration::from_secs(3);
    let mut stream = std::net::TcpStream::connect_timeout(&sock, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    if head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200") {
        Ok(())
    } else {
        Err(format!(
            "GET http://{target}/healthz answered {}",
            String::from_utf8_lossy(&head)
        )
        .into())
    }
}
