//! Model-based isolation: random operations from several users — including guessing each
//! other's task ids and replaying each other's cursors — run against the API and against a plain
//! in-memory model; every response must match the model. On SQLite and PostgreSQL.

use std::time::Duration;

use poem::endpoint::BoxEndpoint;
use poem::http::{Method, StatusCode};
use poem::test::TestClient;
use poem::{EndpointExt, Response};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use todo_http::TodoApi;
use todo_http::auth::{JwtAuthenticator, JwtConfig, mint_hs256};

const SECRET: &str = "isolation-model-secret-0123456789abcdef";
const USERS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Create { user: usize, title: u8 },
    Get { user: usize, task: usize },
    Patch { user: usize, task: usize, title: u8 },
    Toggle { user: usize, task: usize },
    Delete { user: usize, task: usize },
    List { user: usize, limit: u32 },
    ForeignCursor { user: usize, owner: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let u = 0..USERS;
    prop_oneof![
        3 => (u.clone(), any::<u8>()).prop_map(|(user, title)| Op::Create { user, title }),
        2 => (u.clone(), any::<usize>()).prop_map(|(user, task)| Op::Get { user, task }),
        2 => (u.clone(), any::<usize>(), any::<u8>()).prop_map(|(user, task, title)| Op::Patch { user, task, title }),
        1 => (u.clone(), any::<usize>()).prop_map(|(user, task)| Op::Toggle { user, task }),
        1 => (u.clone(), any::<usize>()).prop_map(|(user, task)| Op::Delete { user, task }),
        2 => (u.clone(), 1..4u32).prop_map(|(user, limit)| Op::List { user, limit }),
        1 => (u.clone(), 0..USERS).prop_map(|(user, owner)| Op::ForeignCursor { user, owner }),
    ]
}

/// One task as the model knows it.
#[derive(Debug, Clone)]
struct Known {
    owner: usize,
    id: String,
    title: String,
    completed: bool,
    version: i64,
    deleted: bool,
}

struct Harness {
    client: TestClient<BoxEndpoint<'static, Response>>,
    users: Vec<String>,
    tokens: Vec<String>,
}

impl Harness {
    async fn call(
        &self,
        user: usize,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut b = self
            .client
            .request(method, format!("/api/{}{path}", self.users[user]))
            .header("authorization", format!("Bearer {}", self.tokens[user]));
        if let Some(body) = body {
            b = b.content_type("application/json").body(body.to_string());
        }
        let resp = b.send().await.0;
        let status = resp.status();
        let bytes = resp.into_body().into_bytes().await.unwrap_or_default();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn live_ids(model: &[Known], user: usize) -> Vec<String> {
        let mut ids: Vec<String> = model
            .iter()
            .filter(|k| k.owner == user && !k.deleted)
            .map(|k| k.id.clone())
            .collect();
        ids.sort();
        ids
    }

    async fn list_all(&self, user: usize, limit: u32) -> (Vec<String>, i64) {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        let mut total;
        loop {
            let q = match &cursor {
                Some(c) => format!("/tasks?limit={limit}&cursor={c}"),
                None => format!("/tasks?limit={limit}"),
            };
            let (status, body) = self.call(user, Method::GET, &q, None).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            total = body["meta"]["total"].as_i64().unwrap_or(-2);
            ids.extend(
                body["data"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| t["id"].as_str().unwrap_or("").to_owned()),
            );
            match body["meta"]["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        (ids, total)
    }

    async fn run(&self, ops: Vec<Op>) {
        let mut model: Vec<Known> = Vec::new();
        for op in ops {
            // Any task id the system has handed out, to any user: ids are guessed across users.
            let pick = |task: usize| (!model.is_empty()).then(|| task % model.len());
            match op {
                Op::Create { user, title } => {
                    let title = format!("task {title}");
                    let (s, b) = self
                        .call(user, Method::POST, "/tasks", Some(json!({"title": title})))
                        .await;
                    assert_eq!(s, StatusCode::CREATED, "{b}");
                    assert_eq!(b["data"]["user_id"], self.users[user]);
                    model.push(Known {
                        owner: user,
                        id: b["data"]["id"].as_str().unwrap_or("").to_owned(),
                        title,
                        completed: false,
                        version: 1,
                        deleted: false,
                    });
                }
                Op::Get { user, task } => {
                    let Some(i) = pick(task) else { continue };
                    let (s, b) = self
                        .call(user, Method::GET, &format!("/tasks/{}", model[i].id), None)
                        .await;
                    let k = &model[i];
                    if k.owner == user && !k.deleted {
                        assert_eq!(s, StatusCode::OK);
                        assert_eq!(
                            (
                                b["data"]["title"].as_str(),
                                b["data"]["version"].as_i64(),
                                b["data"]["completed"].as_bool()
                            ),
                            (Some(k.title.as_str()), Some(k.version), Some(k.completed))
                        );
                    } else {
                        assert_eq!(s, StatusCode::NOT_FOUND, "user {user} reached {k:?}");
                    }
                }
                Op::Patch { user, task, title } => {
                    let Some(i) = pick(task) else { continue };
                    let title = format!("patched {title}");
                    let (s, b) = self
                        .call(
                            user,
                            Method::PATCH,
                            &format!("/tasks/{}", model[i].id),
                            Some(json!({"title": title})),
                        )
                        .await;
                    let k = &mut model[i];
                    if k.owner == user && !k.deleted {
                        assert_eq!(s, StatusCode::OK, "{b}");
                        k.title = title;
                        k.version += 1;
                        assert_eq!(b["data"]["version"].as_i64(), Some(k.version));
                    } else {
                        assert_eq!(s, StatusCode::NOT_FOUND, "user {user} patched {k:?}");
                    }
                }
                Op::Toggle { user, task } => {
                    let Some(i) = pick(task) else { continue };
                    let (s, b) = self
                        .call(
                            user,
                            Method::PATCH,
                            &format!("/tasks/{}/complete", model[i].id),
                            None,
                        )
                        .await;
                    let k = &mut model[i];
                    if k.owner == user && !k.deleted {
                        assert_eq!(s, StatusCode::OK, "{b}");
                        k.completed = !k.completed;
                        k.version += 1;
                        assert_eq!(b["data"]["completed"].as_bool(), Some(k.completed));
                    } else {
                        assert_eq!(s, StatusCode::NOT_FOUND, "user {user} toggled {k:?}");
                    }
                }
                Op::Delete { user, task } => {
                    let Some(i) = pick(task) else { continue };
                    let (s, _) = self
                        .call(
                            user,
                            Method::DELETE,
                            &format!("/tasks/{}", model[i].id),
                            None,
                        )
                        .await;
                    let k = &mut model[i];
                    if k.owner == user && !k.deleted {
                        assert_eq!(s, StatusCode::NO_CONTENT);
                        k.deleted = true;
                    } else {
                        assert_eq!(s, StatusCode::NOT_FOUND, "user {user} deleted {k:?}");
                    }
                }
                Op::List { user, limit } => {
                    let (mut ids, total) = self.list_all(user, limit).await;
                    ids.sort();
                    let want = Self::live_ids(&model, user);
                    assert_eq!(total, want.len() as i64);
                    assert_eq!(ids, want, "user {user} listed other rows or missed own");
                }
                Op::ForeignCursor { user, owner } => {
                    // A cursor from `owner`'s first page, replayed by `user`.
                    let (_, first) = self.call(owner, Method::GET, "/tasks?limit=1", None).await;
                    let Some(cursor) = first["meta"]["next_cursor"].as_str() else {
                        continue;
                    };
                    let (s, b) = self
                        .call(
                            user,
                            Method::GET,
                            &format!("/tasks?limit=100&cursor={cursor}"),
                            None,
                        )
                        .await;
                    assert_eq!(s, StatusCode::OK);
                    let own = Self::live_ids(&model, user);
                    for t in b["data"].as_array().into_iter().flatten() {
                        let id = t["id"].as_str().unwrap_or("").to_owned();
                        assert!(
                            own.contains(&id),
                            "a replayed cursor showed user {user} a row that is not theirs"
                        );
                    }
                    assert_eq!(b["meta"]["total"].as_i64(), Some(own.len() as i64));
                }
            }
        }
    }
}

fn run_on(db: test_support::TestDb) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(db.store());
    let auth = rt
        .block_on(JwtAuthenticator::new(JwtConfig::hs256(SECRET)))
        .unwrap();
    let app = std::sync::Arc::new(
        TodoApi::builder(store.clone())
            .authenticator(auth)
            .build()
            .boxed(),
    );
    let case = std::sync::atomic::AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 1..40), |ops| {
        let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Fresh users per case (several with near-identical ids), so cases never share rows.
        let users: Vec<String> = ["u", "U", "u.1"]
            .iter()
            .map(|p| format!("{p}-c{case}"))
            .collect();
        let tokens = users
            .iter()
            .map(|u| mint_hs256(SECRET, u, Duration::from_secs(600)).unwrap())
            .collect();
        let h = Harness {
            client: TestClient::new(shared(app.clone())),
            users,
            tokens,
        };
        rt.block_on(h.run(ops));
        Ok(())
    });
    rt.block_on(async {
        store.close().await;
        db.cleanup().await;
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The one app, shared by every case's test client.
fn shared(app: std::sync::Arc<BoxEndpoint<'static, Response>>) -> BoxEndpoint<'static, Response> {
    poem::endpoint::make(move |req| {
        let app = app.clone();
        async move {
            poem::Endpoint::call(&*app, req)
                .await
                .map(poem::IntoResponse::into_response)
        }
    })
    .boxed()
}

#[test]
fn isolation_model_sqlite() {
    run_on(test_support::TestDb::sqlite());
}

#[test]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
fn isolation_model_postgres() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(test_support::TestDb::postgres());
    drop(rt);
    run_on(db);
}
