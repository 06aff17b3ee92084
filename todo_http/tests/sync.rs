//! API.md "Sync", "Idempotency" and "Batch" over poem's test client, on SQLite and PostgreSQL.

use std::time::Duration;

use poem::endpoint::BoxEndpoint;
use poem::http::{HeaderMap, Method, StatusCode};
use poem::test::TestClient;
use poem::{EndpointExt, Response};
use serde_json::{Value, json};
use test_support::both_backends;
use todo_http::TodoApi;
use todo_http::auth::{JwtAuthenticator, JwtConfig, mint_hs256};
use todo_store::Store;

const SECRET: &str = "sync-test-secret-0123456789abcdef";

struct Api {
    client: TestClient<BoxEndpoint<'static, Response>>,
}

/// A response: status, headers, raw body and the body as JSON (`null` when empty).
struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    bytes: Vec<u8>,
    body: Value,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem with this status; returns its `type`.
    fn problem(&self, status: u16) -> String {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        self.body["type"].as_str().unwrap_or("").to_owned()
    }

    fn fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["field"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

async fn api(store: Store) -> Api {
    let auth = JwtAuthenticator::new(JwtConfig::hs256(SECRET))
        .await
        .unwrap();
    let ep = TodoApi::builder(store).authenticator(auth).build().boxed();
    Api {
        client: TestClient::new(ep),
    }
}

fn token(sub: &str) -> String {
    mint_hs256(SECRET, sub, Duration::from_secs(600)).unwrap()
}

impl Api {
    /// Sends a request as `user` (no token when `None`) with extra headers and a JSON body.
    async fn send(
        &self,
        method: Method,
        path: &str,
        user: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Resp {
        let mut b = self.client.request(method, path);
        if let Some(u) = user {
            b = b.header("authorization", format!("Bearer {}", token(u)));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if let Some(body) = body {
            b = b
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = b.send().await.0;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().into_bytes().await.unwrap().to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            bytes,
            body,
        }
    }

    async fn get(&self, user: &str, path: &str) -> Resp {
        self.send(Method::GET, path, Some(user), &[], None).await
    }

    async fn create(&self, user: &str, title: &str) -> String {
        let r = self
            .send(
                Method::POST,
                &format!("/api/{user}/tasks"),
                Some(user),
                &[],
                Some(&json!({ "title": title })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["data"]["id"].as_str().unwrap().to_owned()
    }

    /// Every page of `/changes` from `since` on; returns the pages' bodies.
    async fn sync_all(&self, user: &str, since: Option<&str>, limit: u32) -> Vec<Value> {
        let mut pages = Vec::new();
        let mut since = since.map(str::to_owned);
        loop {
            let q = match &since {
                Some(s) => format!("?since={s}&limit={limit}"),
                None => format!("?limit={limit}"),
            };
            let r = self.get(user, &format!("/api/{user}/changes{q}")).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            let more = r.body["meta"]["has_more"].as_bool().unwrap();
            since = Some(r.body["meta"]["next"].as_str().unwrap().to_owned());
            pages.push(r.body);
            if !more {
                return pages;
            }
            assert!(pages.len() < 100, "paging does not end");
        }
    }
}

fn ids(pages: &[Value], key: &str) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| p["data"][key].as_array().unwrap().clone())
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect()
}

fn next_of(pages: &[Value]) -> String {
    pages.last().unwrap()["meta"]["next"]
        .as_str()
        .unwrap()
        .to_owned()
}

both_backends! {
    async fn changes_pages_tombstones_and_tokens(store: Store) {
        let api = api(store.clone()).await;
        let mut created = Vec::new();
        for i in 0..5 {
            created.push(api.create("sam", &format!("t{i}")).await);
        }
        // A full sync in pages of 2: every live record once (the inbox and five tasks).
        let pages = api.sync_all("sam", None, 2).await;
        assert!(pages.len() >= 3);
        for p in &pages[..pages.len() - 1] {
            assert_eq!(p["meta"]["has_more"], true);
            let n = p["data"]["tasks"].as_array().unwrap().len()
                + p["data"]["lists"].as_array().unwrap().len();
            assert!(n <= 2, "a page holds at most `limit` records");
        }
        let mut got = ids(&pages, "tasks");
        got.sort();
        let mut want = created.clone();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(ids(&pages, "lists").len(), 1);
        // Task JSON is the one of the other endpoints.
        let one = api.get("sam", &format!("/api/sam/tasks/{}", created[0])).await;
        let synced = pages
            .iter()
            .flat_map(|p| p["data"]["tasks"].as_array().unwrap().clone())
            .find(|t| t["id"] == one.body["data"]["id"])
            .unwrap();
        assert_eq!(synced, one.body["data"]);
        let token = next_of(&pages);

        // Nothing since: an empty page that keeps its place.
        let again = api.sync_all("sam", Some(&token), 500).await;
        assert_eq!(again.len(), 1);
        assert!(ids(&again, "tasks").is_empty());

        // An update, a deletion and a creation since the token.
        let r = api
            .send(
                Method::PATCH,
                &format!("/api/sam/tasks/{}", created[1]),
                Some("sam"),
                &[],
                Some(&json!({"title": "renamed"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let r = api
            .send(
                Method::DELETE,
                &format!("/api/sam/tasks/{}", created[2]),
                Some("sam"),
                &[],
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        let fresh = api.create("sam", "fresh").await;
        let delta = api.sync_all("sam", Some(&token), 500).await;
        let mut tasks = ids(&delta, "tasks");
        tasks.sort();
        let mut want = vec![created[1].clone(), fresh];
        want.sort();
        assert_eq!(tasks, want);
        let deleted: Vec<Value> = delta
            .iter()
            .flat_map(|p| p["data"]["deleted"].as_array().unwrap().clone())
            .collect();
        assert_eq!(deleted.len(), 1);
        assert_eq!(deleted[0]["kind"], "task");
        assert_eq!(deleted[0]["id"], created[2].as_str());
        assert!(deleted[0]["deleted_at"].as_str().unwrap().ends_with('Z'));

        // Bad tokens and limits: 400 naming the parameter.
        for q in ["since=nonsense", "limit=0", "limit=1001", "limit=x"] {
            let r = api.get("sam", &format!("/api/sam/changes?{q}")).await;
            r.problem(400);
            let field = q.split('=').next().unwrap();
            assert_eq!(r.fields(), [field], "{q}: {}", r.body);
        }
        // A token made for another user: 400.
        api.create("kim", "k").await;
        let kims = api.sync_all("kim", None, 500).await;
        let r = api
            .get("sam", &format!("/api/sam/changes?since={}", next_of(&kims)))
            .await;
        r.problem(400);
        assert_eq!(r.fields(), ["since"]);
        // Another user's token in their own path is 403 before anything else.
        api.get("kim", "/api/sam/changes").await.problem(403);

        // Tombstones pruned: the older token is gone (410).
        store
            .prune(Duration::ZERO, Duration::from_secs(48 * 3600))
            .await
            .unwrap();
        let r = api.get("sam", &format!("/api/sam/changes?since={token}")).await;
        assert!(r.problem(410).ends_with("/sync-token-expired"));
        let latest = next_of(&delta);
        let r = api.get("sam", &format!("/api/sam/changes?since={latest}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
}
