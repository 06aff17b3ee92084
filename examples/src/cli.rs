//! The command line of the `serve` binary: every setting is a flag and an environment variable
//! (the flag wins), with its default and help text. The README's configuration table is
//! generated from these definitions ([`settings_table`]) and a test keeps the two equal.

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

/// Declares the string settings once: the flag (from the field name), its environment variable,
/// its default and its help text, plus [`Settings::get`], which reads a setting by variable name
/// for `todo_http::server::ServerConfig::from_lookup`.
macro_rules! settings {
    ($( #[doc = $help:literal] $field:ident: $env:literal $(= $default:literal)?; )*) => {
        /// The server's settings.
        #[derive(clap::Args, Debug, Clone, Default)]
        pub struct Settings {
            $(
                #[doc = $help]
                #[arg(long, env = $env, global = true, hide_env_values = true,
                      help_heading = "Settings" $(, default_value = $default)?)]
                pub $field: Option<String>,
            )*
            /// Create a missing PostgreSQL database at start (the role needs CREATEDB). Without it a missing database is an error that says how to create it.
            #[arg(long, env = "TODO_CREATE_DATABASE", global = true, hide_env_values = true,
                  help_heading = "Settings")]
            pub create_database: bool,
            /// Accept `http://` webhook URLs (default: `https://` only). For development and private networks: deliveries then travel unencrypted.
            #[arg(long, env = "TODO_WEBHOOK_ALLOW_HTTP", global = true, hide_env_values = true,
                  help_heading = "Settings")]
            pub webhook_allow_http: bool,
            /// Accept webhook URLs whose host is or resolves to a loopback, private, link-local or unspecified address (default: refused when set and before every delivery, so webhooks cannot reach internal services). For development and private networks only.
            #[arg(long, env = "TODO_WEBHOOK_ALLOW_PRIVATE", global = true, hide_env_values = true,
                  help_heading = "Settings")]
            pub webhook_allow_private: bool,
            /// Log format: `text` for people, `json` (one object per line) for log shippers. Colours only when stderr is a terminal.
            #[arg(long, env = "TODO_LOG_FORMAT", global = true, hide_env_values = true,
                  help_heading = "Settings", value_enum, default_value_t = LogFormat::Text)]
            pub log_format: LogFormat,
        }

        impl Settings {
            /// The value of the setting with this environment variable's name, as given by flag
            /// or environment, else its default.
            pub fn get(&self, name: &str) -> Option<String> {
                match name {
                    $( $env => self.$field.clone(), )*
                    "TODO_CREATE_DATABASE" => Some(self.create_database.to_string()),
                    "TODO_WEBHOOK_ALLOW_HTTP" => Some(self.webhook_allow_http.to_string()),
                    "TODO_WEBHOOK_ALLOW_PRIVATE" => Some(self.webhook_allow_private.to_string()),
                    _ => None,
                }
            }
        }
    };
}

settings! {
    /// Database: `postgres://user:pass@host/db[?sslmode=require]` (Neon works), `postgres://user@localhost/db?host=/var/run/postgresql` (a local server's Unix socket), `sqlite://path` (created if missing) or `sqlite::memory:`.
    database_url: "DATABASE_URL" = "sqlite://todo.db";
    /// Listen address, `host:port` (`0.0.0.0:8080` for every interface).
    addr: "TODO_ADDR" = "127.0.0.1:8080";
    /// HS256 shared secret. With no JWT setting the server runs in development mode (a generated secret kept beside the SQLite file, and a printed token).
    jwt_secret: "TODO_JWT_SECRET";
    /// Used as the HS256 secret when `TODO_JWT_SECRET` is unset; ignored when `TODO_JWKS_URL` is set.
    better_auth_secret: "BETTER_AUTH_SECRET";
    /// Verify EdDSA/RS256/ES256 tokens with this JWKS (fetched at start, refreshed on an unknown `kid`). Setting it together with `TODO_JWT_SECRET` is an error.
    jwks_url: "TODO_JWKS_URL";
    /// Required `iss` claim (unchecked when unset).
    jwt_issuer: "TODO_JWT_ISSUER";
    /// Required `aud` claim (unchecked when unset).
    jwt_audience: "TODO_JWT_AUDIENCE";
    /// Clock-skew allowance for `exp`/`nbf`, in seconds: 5 when unset, at most 300 (only with a JWT secret or JWKS).
    jwt_leeway_secs: "TODO_JWT_LEEWAY_SECS";
    /// Comma-separated browser origins allowed by CORS (`*` for any); preflight allows `Authorization`, `If-Match`, `Content-Type`, `Last-Event-ID`; responses expose `ETag`, `Location`.
    cors_origins: "TODO_CORS_ORIGINS";
    /// Database pool size: 16 on PostgreSQL and 4 on SQLite when unset. PostgreSQL connections go back to the pool after 1 s idle; each SQLite connection runs one query at a time on a thread of its own and caches 512 KiB of pages.
    db_max_connections: "TODO_DB_MAX_CONNECTIONS";
    /// How long a request waits for a pooled connection before it is answered 503, in milliseconds.
    db_acquire_timeout_ms: "TODO_DB_ACQUIRE_TIMEOUT_MS" = "5000";
    /// PostgreSQL `statement_timeout` in milliseconds (`0` disables).
    db_statement_timeout_ms: "TODO_DB_STATEMENT_TIMEOUT_MS" = "10000";
    /// On SIGTERM/Ctrl-C, how long in-flight requests may finish, in seconds.
    shutdown_grace_secs: "TODO_SHUTDOWN_GRACE_SECS" = "10";
    /// Requests accepted at once (waiting or active); beyond it the server answers 503 with `Retry-After: 1` instead of queueing.
    max_in_flight: "TODO_MAX_IN_FLIGHT" = "4096";
    /// Requests processed at once; further accepted requests wait their turn in arrival order.
    max_active: "TODO_MAX_ACTIVE" = "64";
    /// Seconds a request head may take to arrive (from the connection opening or the previous response); idle keep-alive connections close after it too.
    header_read_timeout_secs: "TODO_HEADER_READ_TIMEOUT_SECS" = "30";
    /// Seconds a request body may take to arrive in full, else `408` and nothing is written.
    body_read_timeout_secs: "TODO_BODY_READ_TIMEOUT_SECS" = "30";
    /// Seconds: a client that stops reading its response for this long loses its connection.
    write_timeout_secs: "TODO_WRITE_TIMEOUT_SECS" = "30";
    /// Client connections open at once; more wait in the listen backlog (keep `ulimit -n` above it).
    max_connections: "TODO_MAX_CONNECTIONS" = "10000";
    /// Seconds between `: keep-alive` comments on an idle `/events` stream.
    sse_keepalive_secs: "TODO_SSE_KEEPALIVE_SECS" = "15";
    /// `/events` streams open at once, all users together; beyond it new ones get 503 with `Retry-After` (each user may hold 16).
    sse_max_streams: "TODO_SSE_MAX_STREAMS" = "10000";
    /// Days deletions are kept for `/changes`; older sync tokens get 410 and the client syncs again from scratch.
    tombstone_days: "TODO_TOMBSTONE_DAYS" = "30";
    /// Multiplies the waits between webhook delivery attempts (5 s, 30 s, 2 min, 10 min, 1 h, 6 h, 12 h; then the delivery fails): a number greater than 0, e.g. `0.01` for tests.
    webhook_retry_scale: "TODO_WEBHOOK_RETRY_SCALE" = "1";
    /// Log filter in `tracing` env-filter syntax, e.g. `info` or `todo_http=debug`.
    log: "TODO_LOG" = "info";
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// An embeddable multi-user task backend: the HTTP API over SQLite or PostgreSQL.
///
/// With no settings it stores tasks in ./todo.db, listens on 127.0.0.1:8080 and prints a
/// development token. Every setting below is also an environment variable (the flag wins).
#[derive(Parser, Debug)]
#[command(name = "serve", version)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The settings.
    #[command(flatten)]
    pub settings: Settings,
}

/// The subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Migrate the database, then serve the API until SIGTERM or Ctrl-C (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Print a token for USER signed with the configured secret (in development mode, the saved development secret).
    Token {
        /// The user id (the token's `sub`).
        user: String,
        /// Lifetime: `90s`, `15m`, `1h`, `2d` or plain seconds.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: std::time::Duration,
    },
    /// Check the settings without connecting to anything, and print them (secrets masked).
    CheckConfig,
    /// Exit 0 when the server on TODO_ADDR answers `GET /healthz` with 200 (for container health checks).
    Healthcheck,
}

/// Parses `90s`, `15m`, `1h`, `2d` or plain seconds.
pub fn parse_ttl(s: &str) -> Result<std::time::Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 90s, 15m, 1h or 2d"))?;
    let secs = match unit {
        "" | "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    secs.map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

impl Settings {
    /// The server configuration these settings describe, or an error naming the setting.
    pub fn server_config(&self) -> Result<todo_http::server::ServerConfig, String> {
        todo_http::server::ServerConfig::from_lookup(|name| self.get(name))
    }
}

/// The README's configuration table: one row per setting, from the same definitions as
/// `serve --help`.
pub fn settings_table() -> String {
    let cmd = Cli::command();
    let mut out = String::from("| variable | flag | default | meaning |\n|---|---|---|---|\n");
    for arg in cmd.get_arguments() {
        let Some(env) = arg.get_env() else { continue };
        let default = arg
            .get_default_values()
            .iter()
            .map(|v| format!("`{}`", v.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(", ");
        let default = match default.as_str() {
            "" => "—".to_owned(),
            "`false`" => "off".to_owned(),
            _ => default,
        };
        let mut help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .map(|v| format!("`{}`", v.get_name()))
            .collect();
        if !values.is_empty() && arg.get_action().takes_values() {
            help.push_str(&format!(" One of {}.", values.join(", ")));
        }
        out.push_str(&format!(
            "| `{}` | `--{}` | {} | {} |\n",
            env.to_string_lossy(),
            arg.get_long().unwrap_or_default(),
            default,
            help.replace('|', "\\|")
        ));
    }
    out
}

/// `.env.example`: every setting, commented out at its default, with its help text; generated
/// from the same definitions as `serve --help` and kept equal to the file by a test.
pub fn env_example() -> String {
    let mut out = String::from(
        "# Every setting of `serve`, at its default (uncomment to change). Each is also a flag:\n\
         # see `serve --help`. Generated from the command line's definitions; a test keeps the two\n\
         # equal (UPDATE_README=1 cargo test -p todo_examples --lib rewrites this file).\n\
         #\n\
         # compose.yaml reads this file as .env: it needs TODO_JWT_SECRET, and uses\n\
         # POSTGRES_PASSWORD for its PostgreSQL container (default `todo`).\n\
         #POSTGRES_PASSWORD=todo\n",
    );
    for arg in Cli::command().get_arguments() {
        let Some(env) = arg.get_env() else { continue };
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        let default = arg
            .get_default_values()
            .first()
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push_str(&format!(
            "\n# {help}\n#{}={default}\n",
            env.to_string_lossy()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command line's own consistency checks (clap's debug asserts).
    #[test]
    fn command_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// The CLI's defaults are the library's: `ServerConfig::from_lookup` with nothing set and
    /// the CLI with nothing given describe the same server.
    #[test]
    fn defaults_agree_with_the_library() {
        let cli = Cli::try_parse_from(["serve"]).expect("no arguments parse");
        let from_cli = cli.settings.server_config().expect("defaults are valid");
        let from_lib = todo_http::server::ServerConfig::from_lookup(|_| None).expect("valid");
        assert_eq!(format!("{from_cli:?}"), format!("{from_lib:?}"));
    }

    /// Every setting the library reads has a flag: none is reachable only by environment.
    #[test]
    fn every_library_setting_has_a_flag() {
        let read = std::cell::RefCell::new(Vec::new());
        let _ = todo_http::server::ServerConfig::from_lookup(|name| {
            read.borrow_mut().push(name.to_owned());
            None
        });
        let cmd = Cli::command();
        let envs: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        for name in read.into_inner() {
            assert!(envs.contains(&name), "{name} has no flag");
        }
    }

    /// A flag, placed after the subcommand too, overrides the default and reaches the config.
    #[test]
    fn flags_after_the_subcommand_reach_the_config() {
        let cli = Cli::try_parse_from(["serve", "migrate", "--addr", "0.0.0.0:9000"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Migrate)));
        assert_eq!(cli.settings.server_config().unwrap().addr, "0.0.0.0:9000");
        let cli = Cli::try_parse_from(["serve", "--create-database"]).unwrap();
        assert!(cli.settings.server_config().unwrap().create_database);
    }

    /// The webhook settings reach the store's policy; the defaults are the internet's.
    #[test]
    fn webhook_settings_reach_the_policy() {
        let cli = Cli::try_parse_from(["serve"]).unwrap();
        assert_eq!(
            cli.settings.server_config().unwrap().webhooks,
            todo_store::WebhookPolicy::default()
        );
        let cli = Cli::try_parse_from([
            "serve",
            "--webhook-allow-http",
            "--webhook-allow-private",
            "--webhook-retry-scale",
            "0.001",
        ])
        .unwrap();
        let policy = cli.settings.server_config().unwrap().webhooks;
        assert!(policy.allow_http && policy.allow_private);
        assert_eq!(policy.retry_scale, 0.001);
        let cli = Cli::try_parse_from(["serve", "--webhook-allow-private"]).unwrap();
        let policy = cli.settings.server_config().unwrap().webhooks;
        assert!(!policy.allow_http && policy.allow_private);
    }

    /// A retry scale that is not a positive number is a configuration error naming the setting.
    #[test]
    fn a_retry_scale_must_be_positive() {
        for bad in ["0", "-1", "NaN", "inf", "fast"] {
            let flag = format!("--webhook-retry-scale={bad}");
            let cli = Cli::try_parse_from(["serve", flag.as_str()]).unwrap();
            let err = cli.settings.server_config().unwrap_err();
            assert!(
                err.contains("TODO_WEBHOOK_RETRY_SCALE") && err.contains("greater than 0"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn ttl_units() {
        use std::time::Duration;
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("99999999999999999d").is_err());
    }

    /// Checks that `file` (in the workspace root) holds `generated` between `start` and `end`
    /// (the whole file when both are empty); with `UPDATE_README=1` rewrites it instead.
    fn check_generated(file: &str, start: &str, end: &str, generated: &str) {
        let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let from = text
            .find(start)
            .map(|i| i + start.len())
            .expect("start marker");
        let to = if end.is_empty() {
            text.len()
        } else {
            text.find(end).expect("end marker")
        };
        if text[from..to] == *generated {
            return;
        }
        if std::env::var_os("UPDATE_README").is_some() {
            let updated = format!("{}{generated}{}", &text[..from], &text[to..]);
            std::fs::write(&path, updated).expect("write");
        } else {
            panic!(
                "{file} differs from `serve --help`; run \
                 `UPDATE_README=1 cargo test -p todo_examples --lib`, or use:\n{generated}"
            );
        }
    }

    /// README.md's configuration table is the one generated from the command line.
    #[test]
    fn readme_table_matches_the_command_line() {
        check_generated(
            "README.md",
            "<!-- settings:start -->\n",
            "<!-- settings:end -->",
            &settings_table(),
        );
    }

    /// `.env.example` lists every setting of the command line, at its default.
    #[test]
    fn env_example_matches_the_command_line() {
        check_generated(".env.example", "", "", &env_example());
        let text = env_example();
        for env in ["DATABASE_URL", "TODO_WRITE_TIMEOUT_SECS", "TODO_LOG_FORMAT"] {
            assert!(text.contains(&format!("\n#{env}=")), "{env}");
        }
    }
}
