//! The standalone server: `cargo run --example serve`.
//!
//! With no configuration it stores tasks in `./todo.db` (SQLite), listens on 127.0.0.1:8080 and
//! prints a development token. Every setting is a `TODO_*` environment variable (see README).

use todo_http::server::{ServerConfig, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TODO_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let result = match ServerConfig::from_env() {
        Ok(cfg) => run(cfg).await,
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
