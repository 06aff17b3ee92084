//! Many clients writing the same task at once, through the API, on SQLite and PostgreSQL:
//! without `If-Match` every write lands with its own version (none lost, none doubled); with
//! `If-Match` a compare-and-swap counter ends exact, so no 412 wrote anything. Never a 5xx
//! (on SQLite: never "database is locked").

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use poem::endpoint::BoxEndpoint;
use poem::http::{Method, StatusCode};
use poem::{Endpoint, EndpointExt, Request, Response};
use serde_json::{Value, json};
use test_support::both_backends;
use todo_http::TodoApi;
use todo_http::auth::{JwtAuthenticator, JwtConfig, mint_hs256};

const SECRET: &str = "concurrency-test-secret-0123456789abcdef";
const USER: &str = "writer";

type App = Arc<BoxEndpoint<'static, Response>>;

async fn app(store: todo_store::Store) -> (App, String) {
    let auth = JwtAuthenticator::new(JwtConfig::hs256(SECRET))
        .await
        .expect("authenticator");
    let app = TodoApi::builder(store).authenticator(auth).build().boxed();
    let token = mint_hs256(SECRET, USER, Duration::from_secs(600)).expect("token");
    (Arc::new(app), token)
}

/// One request; its status, `ETag` version and JSON body.
async fn call(
    app: &App,
    token: &str,
    method: Method,
    path: &str,
    if_match: Option<i64>,
    body: Option<Value>,
) -> (StatusCode, Option<i64>, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("/api/{USER}{path}").parse().expect("uri"))
        .header("authorization", format!("Bearer {token}"));
    if let Some(v) = if_match {
        req = req.header("if-match", format!("\"{v}\""));
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(b.to_string()),
        None => req.finish(),
    };
    let resp = app.get_response(req).await;
    let status = resp.status();
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_matches('"').parse().ok());
    let bytes = resp.into_body().into_bytes().await.unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert!(
        !status.is_server_error(),
        "{status} under concurrent writes: {body}"
    );
    (status, etag, body)
}

async fn create(app: &App, token: &str, title: &str) -> String {
    let (s, v, b) = call(
        app,
        token,
        Method::POST,
        "/tasks",
        None,
        Some(json!({"title": title})),
    )
    .await;
    assert_eq!((s, v), (StatusCode::CREATED, Some(1)), "{b}");
    b["data"]["id"].as_str().expect("id").to_owned()
}

const CLIENTS: usize = 8;
const WRITES: usize = 12;

both_backends! {
    async fn unconditional_writes_each_get_their_own_version(store: Store) {
        let (app, token) = app(store).await;
        let id = create(&app, &token, "start").await;
        let path = format!("/tasks/{id}");
        let mut clients = Vec::new();
        for c in 0..CLIENTS {
            let (app, token, path) = (app.clone(), token.clone(), path.clone());
            clients.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                for i in 0..WRITES {
                    // Patches and toggles interleaved: both bump the version.
                    let (s, v, b) = if i % 3 == 2 {
                        call(&app, &token, Method::PATCH, &format!("{path}/complete"), None, None)
                            .await
                    } else {
                        let title = format!("client {c} write {i}");
                        call(&app, &token, Method::PATCH, &path, None, Some(json!({"title": title})))
                            .await
                    };
                    assert_eq!(s, StatusCode::OK, "{b}");
                    let v = v.expect("ETag on every write");
                    assert_eq!(b["data"]["version"], v, "ETag and body agree");
                    seen.push((v, b["data"]["title"].clone(), b["data"]["completed"].clone()));
                }
                seen
            }));
        }
        let mut all = Vec::new();
        for c in clients {
            all.extend(c.await.expect("client"));
        }
        let versions: BTreeSet<i64> = all.iter().map(|(v, _, _)| *v).collect();
        let n = (CLIENTS * WRITES) as i64;
        assert_eq!(versions.len() as i64, n, "two writes shared a version");
        assert_eq!(versions, (2..=n + 1).collect::<BTreeSet<i64>>());
        let toggles = CLIENTS * (WRITES / 3);
        let (s, v, b) = call(&app, &token, Method::GET, &path, None, None).await;
        assert_eq!((s, v), (StatusCode::OK, Some(n + 1)), "{b}");
        // The stored task is exactly what the last write answered.
        let last = all.iter().max_by_key(|(v, _, _)| *v).expect("writes");
        assert_eq!((&b["data"]["title"], &b["data"]["completed"]), (&last.1, &last.2));
        assert_eq!(b["data"]["completed"], toggles % 2 == 1, "a toggle was lost");
    }

    async fn conditional_writes_never_lose_an_increment(store: Store) {
        let (app, token) = app(store).await;
        let id = create(&app, &token, "0").await;
        let path = format!("/tasks/{id}");
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            let (app, token, path) = (app.clone(), token.clone(), path.clone());
            clients.push(tokio::spawn(async move {
                let (mut won, mut refused) = (Vec::new(), 0usize);
                while won.len() < WRITES {
                    let (s, v, b) = call(&app, &token, Method::GET, &path, None, None).await;
                    assert_eq!(s, StatusCode::OK, "{b}");
                    let n: i64 = b["data"]["title"].as_str().and_then(|t| t.parse().ok()).expect("counter");
                    let body = json!({"title": (n + 1).to_string()});
                    let (s, nv, b) = call(&app, &token, Method::PATCH, &path, v, Some(body)).await;
                    match s {
                        StatusCode::OK => {
                            assert_eq!(nv, v.map(|v| v + 1), "a conditional write skipped a version");
                            won.push(nv.expect("ETag"));
                        }
                        StatusCode::PRECONDITION_FAILED => {
                            assert_eq!(b["status"], 412, "{b}");
                            refused += 1;
                        }
                        other => panic!("{other}: {b}"),
                    }
                }
                (won, refused)
            }));
        }
        let (mut versions, mut refused) = (BTreeSet::new(), 0);
        for c in clients {
            let (won, r) = c.await.expect("client");
            refused += r;
            for v in won {
                assert!(versions.insert(v), "version {v} was won twice");
            }
        }
        let n = (CLIENTS * WRITES) as i64;
        eprintln!("{n} conditional increments, {refused} refused with 412 on the way");
        let (s, v, b) = call(&app, &token, Method::GET, &path, None, None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b["data"]["title"], n.to_string(), "an increment was lost ({refused} refused)");
        assert_eq!(v, Some(n + 1), "a refused write bumped the version");
        assert_eq!(versions, (2..=n + 1).collect::<BTreeSet<i64>>());
        // A stale version is refused and changes nothing.
        let (s, _, _) = call(&app, &token, Method::PATCH, &path, Some(1), Some(json!({"title": "stale"}))).await;
        assert_eq!(s, StatusCode::PRECONDITION_FAILED);
        let (_, v2, b2) = call(&app, &token, Method::GET, &path, None, None).await;
        assert_eq!((v2, &b2["data"]["title"]), (v, &json!(n.to_string())));
    }
}
