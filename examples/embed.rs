//! A host poem application that mounts the task API under `/todo` next to its own routes, and
//! authenticates requests its own way (an API key header) instead of JWTs.
//!
//! `cargo run --example embed`, then:
//! `curl -H 'X-Api-Key: alice-key' http://127.0.0.1:3000/todo/api/alice/tasks`

use std::collections::HashMap;

use poem::{Request, Route, get, handler};
use todo_http::server::ServeOptions;
use todo_http::{AuthError, Authenticator, Principal, TodoApi};
use todo_store::Store;

/// The host's own authentication: a static table of API keys.
struct ApiKeys(HashMap<String, String>);

#[async_trait::async_trait]
impl Authenticator for ApiKeys {
    async fn authenticate(&self, req: &Request) -> Result<Principal, AuthError> {
        let key = req.header("x-api-key").ok_or(AuthError::Missing)?;
        let user_id = self
            .0
            .get(key)
            .ok_or_else(|| AuthError::Invalid("unknown API key".into()))?;
        Ok(Principal::new(user_id.clone()))
    }
}

#[handler]
fn home() -> &'static str {
    "host app: the task API lives under /todo (docs at /todo/docs)"
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite::memory:".into());
    let addr = std::env::var("TODO_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());

    // The ten lines a host needs: a store, an authenticator, the API mounted under a prefix.
    let store = Store::connect(&url).await?;
    store.migrate().await?;
    let keys = ApiKeys(HashMap::from([
        ("alice-key".to_owned(), "alice".to_owned()),
        ("bob-key".to_owned(), "bob".to_owned()),
    ]));
    let todo = TodoApi::builder(store)
        .authenticator(keys)
        .mount_path("/todo")
        .build();
    let app = Route::new().at("/", get(home)).nest("/todo", todo);

    println!("listening on http://{addr} (API under /todo)");
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    todo_http::server::serve(listener, app, &ServeOptions::default(), shutdown).await?;
    Ok(())
}
