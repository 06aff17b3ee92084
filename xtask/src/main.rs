//! `cargo xtask <task>`: project automation.
//!
//! - `openapi [--check]`: write the generated spec to `openapi.yaml` at the workspace root, or
//!   with `--check` exit non-zero when the committed file differs from what the code generates.
//! - `token <user_id> [--ttl 1h]`: print an HS256 token for `user_id`, signed with
//!   `TODO_JWT_SECRET` (or `BETTER_AUTH_SECRET`); `serve token` does the same and also knows
//!   the development secret.
//! - `e2e [--backend sqlite|postgres]… [--only ts|swagger|schemathesis]… [--fuzz-seconds N]`:
//!   the release server on fresh databases, checked by the generated TypeScript client, Swagger
//!   UI in headless Chromium and schemathesis (see `e2e.rs`).
//! - `seed --database-url URL --users N --tasks-per-user M [--skew]`: fill a database with
//!   realistic tasks (see `seed.rs`).
//! - `bench [--quick] [--backend postgres|sqlite]… [--connections 64,1000] [--out FILE]
//!   [--db-max-connections N] [--server PATH] [--only PART,…]`: load benchmarks of the release
//!   server with a direct-store baseline, written to `BENCHMARKS.md` (see `bench.rs` and
//!   `load.rs`).

mod bench;
mod e2e;
mod fastapi;
mod live;
mod load;
mod seed;
mod serve;
mod webhooks;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use todo_examples::cli::parse_ttl;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The server's allocator (see `examples/serve.rs`), so the direct-store baseline that `bench`
/// runs in this process allocates the way the server does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: cargo xtask openapi [--check] | token <user_id> [--ttl 1h] | e2e [--backend B]... [--only CHECK]... [--fuzz-seconds N] | seed --database-url URL --users N --tasks-per-user M [--skew] | bench [--quick] [--backend B]... [--connections N,M] [--out FILE] [--db-max-connections N] [--server PATH] [--only PART,...]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("openapi") => openapi(args.iter().any(|a| a == "--check")),
        Some("token") => token(&args[1..]),
        Some("e2e") => e2e::Options::parse(&args[1..]).and_then(|o| e2e::main(&root(), o)),
        Some("seed") => seed::main(&args[1..]),
        Some("bench") => bench::main(&root(), &args[1..]),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn openapi(check: bool) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let spec = rt
        .block_on(todo_http::TodoApi::spec_yaml())
        .map_err(|e| e.to_string())?;
    let path = root().join("openapi.yaml");
    if check {
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current != spec {
            return Err(format!(
                "{} is stale: run `cargo xtask openapi` and commit the result",
                path.display()
            ));
        }
        println!("{} is up to date", path.display());
        return Ok(());
    }
    std::fs::write(&path, spec).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

fn token(args: &[String]) -> Result<(), String> {
    let user = args.first().ok_or(USAGE)?;
    let mut ttl = Duration::from_secs(3600);
    let mut rest = args[1..].iter();
    while let Some(a) = rest.next() {
        match a.as_str() {
            "--ttl" => ttl = parse_ttl(rest.next().ok_or("--ttl needs a value")?)?,
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let secret = std::env::var("TODO_JWT_SECRET")
        .or_else(|_| std::env::var("BETTER_AUTH_SECRET"))
        .map_err(|_| "set TODO_JWT_SECRET (or BETTER_AUTH_SECRET) to the server's secret")?;
    let token = todo_http::auth::mint_hs256(&secret, user, ttl).map_err(|e| e.to_string())?;
    println!("{token}");
    Ok(())
}
