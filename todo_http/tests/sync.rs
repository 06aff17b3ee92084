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

async fn task_count(api: &Api, user: &str) -> u64 {
    let r = api.get(user, &format!("/api/{user}/tasks?limit=1")).await;
    r.body["meta"]["total"].as_u64().unwrap()
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
        // An empty `since=` is no token: the full snapshot, like no parameter at all.
        let empty = api.get("sam", "/api/sam/changes?since=").await;
        let none = api.get("sam", "/api/sam/changes").await;
        assert_eq!(empty.status, StatusCode::OK, "{}", empty.body);
        assert_eq!(empty.body["data"], none.body["data"]);

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
    async fn idempotency_keys(store: Store) {
        let api = api(store.clone()).await;
        let body = json!({"title": "once"});
        let post = |key: &'static str, body: Value, user: Option<&'static str>| {
            let api = &api;
            async move {
                api.send(
                    Method::POST,
                    "/api/ida/tasks",
                    user,
                    &[("idempotency-key", key)],
                    Some(&body),
                )
                .await
            }
        };
        // A 401 is not stored: the key stays unused.
        post("k1", body.clone(), None).await.problem(401);
        let first = post("k1", body.clone(), Some("ida")).await;
        assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
        assert_eq!(first.header("idempotent-replayed"), None);
        let again = post("k1", body.clone(), Some("ida")).await;
        assert_eq!(again.status, StatusCode::CREATED);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.bytes, first.bytes, "replayed byte for byte");
        assert_eq!(again.header("location"), first.header("location"));
        assert_eq!(again.header("etag"), first.header("etag"));
        assert_eq!(task_count(&api, "ida").await, 1);
        // A method the route does not answer is 405 before any key check, even with a used key.
        let r = api
            .send(Method::PUT, "/api/ida/tasks", Some("ida"), &[("idempotency-key", "k1")], Some(&body))
            .await;
        r.problem(405);
        assert_eq!(r.header("allow"), Some("GET, POST"));

        // Same key, another body or path: 422, nothing done.
        let r = post("k1", json!({"title": "other"}), Some("ida")).await;
        assert!(r.problem(422).ends_with("/idempotency-key-reuse"));
        let r = api
            .send(
                Method::POST,
                "/api/ida/lists",
                Some("ida"),
                &[("idempotency-key", "k1")],
                Some(&json!({"name": "x"})),
            )
            .await;
        assert!(r.problem(422).ends_with("/idempotency-key-reuse"));
        assert_eq!(task_count(&api, "ida").await, 1);
        // Keys are the user's own.
        let r = api
            .send(
                Method::POST,
                "/api/idb/tasks",
                Some("idb"),
                &[("idempotency-key", "k1")],
                Some(&json!({"title": "other"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);

        // Malformed keys: 400 naming the header, after 401/403.
        let long = "k".repeat(256);
        for bad in ["has space", long.as_str(), "tab\tkey", "é"] {
            let r = api
                .send(
                    Method::POST,
                    "/api/ida/tasks",
                    Some("ida"),
                    &[("idempotency-key", bad)],
                    Some(&body),
                )
                .await;
            r.problem(400);
            assert_eq!(r.fields(), ["Idempotency-Key"]);
        }
        let r = api
            .send(
                Method::POST,
                "/api/ida/tasks",
                Some("idb"),
                &[("idempotency-key", "has space")],
                Some(&body),
            )
            .await;
        r.problem(403);
        let max = "~".repeat(255);
        let r = post(Box::leak(max.into_boxed_str()), body.clone(), Some("ida")).await;
        assert_eq!(r.status, StatusCode::CREATED);

        // A 4xx after the key check is stored and replayed.
        let missing = uuid::Uuid::now_v7();
        let patch = |key: &'static str| {
            let api = &api;
            async move {
                api.send(
                    Method::PATCH,
                    &format!("/api/ida/tasks/{missing}"),
                    Some("ida"),
                    &[("idempotency-key", key)],
                    Some(&json!({"title": "x"})),
                )
                .await
            }
        };
        let r1 = patch("k404").await;
        r1.problem(404);
        let r2 = patch("k404").await;
        r2.problem(404);
        assert_eq!(r2.header("idempotent-replayed"), Some("true"));
        assert_eq!(r2.bytes, r1.bytes);
        // A body that breaks a rule after the key check is stored too.
        let blank = post("kblank", json!({"title": "  "}), Some("ida")).await;
        blank.problem(422);
        let blank2 = post("kblank", json!({"title": "  "}), Some("ida")).await;
        assert_eq!(blank2.header("idempotent-replayed"), Some("true"));
        assert_eq!(blank2.bytes, blank.bytes);

        // Every write takes a key: a delete replays its 204.
        let id = api.create("ida", "to delete").await;
        let del_path = format!("/api/ida/tasks/{id}");
        let del = || {
            api.send(
                Method::DELETE,
                &del_path,
                Some("ida"),
                &[("idempotency-key", "kdel")],
                None,
            )
        };
        assert_eq!(del().await.status, StatusCode::NO_CONTENT);
        let d2 = del().await;
        assert_eq!(d2.status, StatusCode::NO_CONTENT);
        assert_eq!(d2.header("idempotent-replayed"), Some("true"));

        // A first request still running: 409 with Retry-After.
        let held = serde_json::to_vec(&json!({"title": "held"})).unwrap();
        let user = store.for_user("ida").unwrap();
        let fp = todo_http::idempotency::fingerprint(
            "kheld",
            &Method::POST,
            "/api/ida/tasks",
            &held,
        );
        assert!(matches!(
            user.idempotency_begin(&fp).await.unwrap(),
            todo_store::Begun::Started(_)
        ));
        let r = post("kheld", json!({"title": "held"}), Some("ida")).await;
        assert!(r.problem(409).ends_with("/idempotency-key-in-use"));
        assert!(r.header("retry-after").is_some());
    }

    async fn batches(store: Store) {
        let api = api(store.clone()).await;
        let existing = api.create("bat", "existing").await;
        let run = |body: Value| {
            let api = &api;
            async move {
                api.send(Method::POST, "/api/bat/batch", Some("bat"), &[], Some(&body))
                    .await
            }
        };
        let ok = run(json!({"operations": [
            {"op": "create", "ref": "a", "task": {"title": "parent", "tags": ["X"]}},
            {"op": "create", "ref": "b", "task": {"title": "child", "parent_id": "$a"}},
            {"op": "update", "id": "$a", "patch": {"priority": "high"}},
            {"op": "complete", "id": "$b"},
            {"op": "replace", "id": existing, "task": {"title": "replaced"}, "if_match": 1},
            {"op": "move", "id": "$b", "parent_id": null, "after": "$a"},
            {"op": "delete", "id": existing}
        ]}))
        .await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
        let results = ok.body["data"].as_array().unwrap();
        let statuses: Vec<u64> = results.iter().map(|r| r["status"].as_u64().unwrap()).collect();
        assert_eq!(statuses, [201, 201, 200, 200, 200, 200, 204]);
        assert!(results[6].get("data").is_none());
        let a = results[0]["data"]["id"].as_str().unwrap();
        assert_eq!(results[1]["data"]["parent_id"], a);
        assert_eq!(results[2]["data"]["priority"], "high");
        assert_eq!(results[3]["data"]["completed"], true);
        assert_eq!(results[5]["data"]["parent_id"], Value::Null);
        // The same JSON as getTask.
        let b = results[5]["data"]["id"].as_str().unwrap();
        let got = api.get("bat", &format!("/api/bat/tasks/{b}")).await;
        assert_eq!(got.body["data"], results[5]["data"]);

        // Failure: nothing applied, the first failing operation named.
        let before = api.sync_all("bat", None, 500).await;
        let token = next_of(&before);
        let count = task_count(&api, "bat").await;
        for (title, status) in [(json!("   "), 422), (json!(5), 422)] {
            let r = run(json!({"operations": [
                {"op": "create", "ref": "x", "task": {"title": "x"}},
                {"op": "update", "id": "$x", "patch": {"title": "y"}},
                {"op": "create", "task": {"title": title}},
                {"op": "delete", "id": "$x"}
            ]}))
            .await;
            r.problem(status);
            assert_eq!(r.body["operation"], 2, "{}", r.body);
            assert_eq!(r.fields(), ["operations[2].task.title"]);
        }
        let r = run(json!({"operations": [
            {"op": "create", "task": {"title": "x"}},
            {"op": "update", "id": uuid::Uuid::now_v7(), "patch": {"title": "y"}}
        ]}))
        .await;
        r.problem(404);
        assert_eq!(r.body["operation"], 1);
        let r = run(json!({"operations": [
            {"op": "update", "id": a, "patch": {}, "if_match": 99}
        ]}))
        .await;
        r.problem(412);
        assert_eq!(r.body["operation"], 0);
        let r = run(json!({"operations": [{"op": "delete", "id": "$nope"}]})).await;
        r.problem(422);
        assert_eq!(r.fields(), ["operations[0].id"]);
        // Unknown op, too many, none: 422.
        let r = run(json!({"operations": [{"op": "create", "task": {"title": "x"}}, {"op": "explode"}]})).await;
        r.problem(422);
        assert_eq!(r.fields(), ["operations[1].op"]);
        assert_eq!(r.body["operation"], 1);
        let many: Vec<Value> = (0..101)
            .map(|i| json!({"op": "create", "task": {"title": format!("t{i}")}}))
            .collect();
        let r = run(json!({ "operations": many })).await;
        r.problem(422);
        assert_eq!(r.fields(), ["operations"]);
        let r = run(json!({"operations": []})).await;
        r.problem(422);
        assert_eq!(r.fields(), ["operations"]);
        run(json!({"operations": 3})).await.problem(422);
        run(json!([])).await.problem(422);
        assert_eq!(task_count(&api, "bat").await, count);
        let after = api.sync_all("bat", Some(&token), 500).await;
        assert!(ids(&after, "tasks").is_empty(), "a failed batch left changes");

        // 100 operations are fine, and a batch replays under its key.
        let hundred: Vec<Value> = (0..100)
            .map(|i| json!({"op": "create", "task": {"title": format!("t{i}")}}))
            .collect();
        let body = json!({ "operations": hundred });
        let send = || {
            api.send(
                Method::POST,
                "/api/bat/batch",
                Some("bat"),
                &[("idempotency-key", "batch-1")],
                Some(&body),
            )
        };
        let r1 = send().await;
        assert_eq!(r1.status, StatusCode::OK, "{}", r1.body);
        let r2 = send().await;
        assert_eq!(r2.header("idempotent-replayed"), Some("true"));
        assert_eq!(r2.bytes, r1.bytes);
        assert_eq!(task_count(&api, "bat").await, count + 100);
    }
}
