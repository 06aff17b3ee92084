//! Contract tests of API.md over poem's test client, on SQLite and PostgreSQL.

use poem::endpoint::BoxEndpoint;
use poem::http::{HeaderMap, Method, StatusCode};
use poem::test::TestClient;
use poem::{EndpointExt, Response};
use serde_json::{Value, json};
use std::time::Duration;
use test_support::both_backends;
use todo_http::TodoApi;
use todo_http::auth::{JwtAuthenticator, JwtConfig, mint_hs256};
use todo_store::Store;

const SECRET: &str = "contract-test-secret-0123456789abcdef";

struct Api {
    client: TestClient<BoxEndpoint<'static, Response>>,
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem+json error with this status; returns the field names it lists.
    fn problem(&self, status: u16) -> Vec<String> {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(self.body["status"], status);
        for k in ["type", "title", "detail"] {
            assert!(self.body[k].is_string(), "problem lacks {k}: {}", self.body);
        }
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

fn token(sub: &str) -> String {
    mint_hs256(SECRET, sub, Duration::from_secs(600)).unwrap()
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

/// A request: method, path, optional bearer token, extra headers, optional raw body.
struct Req<'a> {
    method: Method,
    path: String,
    token: Option<String>,
    headers: Vec<(&'a str, String)>,
    body: Option<Vec<u8>>,
}

fn req(method: Method, path: impl Into<String>) -> Req<'static> {
    Req {
        method,
        path: path.into(),
        token: None,
        headers: Vec::new(),
        body: None,
    }
}

impl<'a> Req<'a> {
    fn by(mut self, user: &str) -> Self {
        self.token = Some(token(user));
        self
    }
    fn bearer(mut self, t: impl Into<String>) -> Self {
        self.token = Some(t.into());
        self
    }
    fn header(mut self, k: &'a str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }
    fn json(self, v: Value) -> Self {
        self.raw("application/json", v.to_string())
    }
    fn raw(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        self.headers.push(("content-type", content_type.to_owned()));
        self.body = Some(body.into());
        self
    }
}

impl Api {
    async fn send(&self, r: Req<'_>) -> Resp {
        let mut b = self.client.request(r.method, r.path);
        if let Some(t) = r.token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in r.headers {
            b = b.header(k, v);
        }
        if let Some(body) = r.body {
            b = b.body(body);
        }
        let resp = b.send().await.0;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().into_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn create(&self, user: &str, body: Value) -> Value {
        let r = self
            .send(
                req(Method::POST, format!("/api/{user}/tasks"))
                    .by(user)
                    .json(body),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["data"].clone()
    }

    /// Creates a list; returns its id.
    async fn list(&self, user: &str, name: &str) -> String {
        let r = self
            .send(
                req(Method::POST, format!("/api/{user}/lists"))
                    .by(user)
                    .json(json!({ "name": name })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["data"]["id"].as_str().unwrap().to_owned()
    }

    /// The user's task `id`.
    async fn task(&self, user: &str, id: &str) -> Value {
        let r = self
            .send(req(Method::GET, format!("/api/{user}/tasks/{id}")).by(user))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["data"].clone()
    }

    /// The ids of a listing's page, in order.
    async fn ids(&self, user: &str, query: &str) -> Vec<String> {
        let r = self
            .send(req(Method::GET, format!("/api/{user}/tasks?{query}")).by(user))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.body);
        ids_of(&r.body["data"])
    }

    /// Moves a task; returns the response.
    async fn move_task(&self, user: &str, id: &str, body: Value) -> Resp {
        self.send(
            req(Method::POST, format!("/api/{user}/tasks/{id}/move"))
                .by(user)
                .json(body),
        )
        .await
    }
}

fn ids_of(data: &Value) -> Vec<String> {
    data.as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

fn sorted_keys(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

fn forge(header: Value, claims: Value, key: &[u8], alg: jsonwebtoken::Algorithm) -> String {
    let mut h = jsonwebtoken::Header::new(alg);
    if let Some(kid) = header.get("kid").and_then(Value::as_str) {
        h.kid = Some(kid.to_owned());
    }
    jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_secret(key)).unwrap()
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

both_backends! {
    async fn auth_matrix(store: Store) {
        let api = api(store).await;
        let path = "/api/alice/tasks";
        let hs = jsonwebtoken::Algorithm::HS256;
        let cases: Vec<(&str, Option<String>)> = vec![
            ("missing", None),
            ("garbled", Some("not.a.jwt".into())),
            ("expired", Some(forge(json!({}), json!({"sub": "alice", "exp": now() - 3600}), SECRET.as_bytes(), hs))),
            ("no exp", Some(forge(json!({}), json!({"sub": "alice"}), SECRET.as_bytes(), hs))),
            ("not yet valid", Some(forge(json!({}), json!({"sub": "alice", "exp": now() + 600, "nbf": now() + 300}), SECRET.as_bytes(), hs))),
            ("wrong signature", Some(forge(json!({}), json!({"sub": "alice", "exp": now() + 600}), b"another secret entirely", hs))),
            ("HS512", Some(forge(json!({}), json!({"sub": "alice", "exp": now() + 600}), SECRET.as_bytes(), jsonwebtoken::Algorithm::HS512))),
            ("alg none", Some(format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&json!({"sub": "alice", "exp": now() + 600}))))),
            ("no sub", Some(forge(json!({}), json!({"exp": now() + 600}), SECRET.as_bytes(), hs))),
            ("empty sub", Some(forge(json!({}), json!({"sub": "", "exp": now() + 600}), SECRET.as_bytes(), hs))),
        ];
        for (name, tok) in cases {
            let mut r = req(Method::GET, path);
            if let Some(t) = tok {
                r = r.bearer(t);
            }
            let resp = api.send(r).await;
            resp.problem(401);
            // RFC 6750: a token that was sent but fails says so; a missing one does not.
            let expected = if name == "missing" {
                r#"Bearer realm="todo""#
            } else {
                r#"Bearer realm="todo", error="invalid_token""#
            };
            assert_eq!(resp.header("www-authenticate"), Some(expected), "{name}");
        }
        // A non-Bearer scheme is no token.
        let basic = api.send(req(Method::GET, path).header("authorization", format!("Basic {}", token("alice")))).await;
        basic.problem(401);
        assert_eq!(basic.header("www-authenticate"), Some(r#"Bearer realm="todo""#));
        // Tokens with iss/aud are accepted when none is configured.
        let t = forge(json!({}), json!({"sub": "alice", "exp": now() + 600, "iss": "http://x", "aud": "y"}), SECRET.as_bytes(), hs);
        assert_eq!(api.send(req(Method::GET, path).bearer(t)).await.status, StatusCode::OK);
        // Another user's path is 403; ids compare exactly.
        api.send(req(Method::GET, path).by("bob")).await.problem(403);
        api.send(req(Method::GET, path).by("Alice")).await.problem(403);
        // Another user's task under your own path is 404.
        let t = api.create("alice", json!({"title": "mine"})).await;
        let id = t["id"].as_str().unwrap();
        for m in [Method::GET, Method::DELETE] {
            api.send(req(m, format!("/api/bob/tasks/{id}")).by("bob")).await.problem(404);
        }
        api.send(req(Method::PUT, format!("/api/bob/tasks/{id}")).by("bob").json(json!({"title": "x"}))).await.problem(404);
        api.send(req(Method::PATCH, format!("/api/bob/tasks/{id}")).by("bob").json(json!({}))).await.problem(404);
        api.send(req(Method::PATCH, format!("/api/bob/tasks/{id}/complete")).by("bob")).await.problem(404);
        let still = api.send(req(Method::GET, format!("/api/alice/tasks/{id}")).by("alice")).await;
        assert_eq!(still.body["data"]["version"], 1);
    }

    async fn check_order(store: Store) {
        let api = api(store).await;
        let missing = uuid::Uuid::now_v7();
        // 401 before 403 before 400.
        api.send(req(Method::GET, "/api/bad%20user/tasks/nope")).await.problem(401);
        api.send(req(Method::GET, "/api/bob/tasks/nope").by("alice")).await.problem(403);
        // 400 (path, query, If-Match) before the body and before 404.
        assert_eq!(api.send(req(Method::PUT, "/api/alice/tasks/nope").by("alice").raw("text/plain", "x")).await.problem(400), ["task_id"]);
        assert_eq!(
            api.send(req(Method::PUT, format!("/api/alice/tasks/{missing}")).by("alice").header("if-match", "v1").raw("text/plain", "x")).await.problem(400),
            ["If-Match"]
        );
        assert_eq!(api.send(req(Method::GET, "/api/alice/tasks?limit=0").by("alice")).await.problem(400), ["limit"]);
        // Body checks (413, 415, 400, 422) before 404.
        let big = format!("{{\"title\": \"x\", \"pad\": \"{}\"}}", "a".repeat(70_000));
        api.send(req(Method::PUT, format!("/api/alice/tasks/{missing}")).by("alice").raw("application/json", big)).await.problem(413);
        api.send(req(Method::PUT, format!("/api/alice/tasks/{missing}")).by("alice").raw("text/plain", "{}")).await.problem(415);
        api.send(req(Method::PUT, format!("/api/alice/tasks/{missing}")).by("alice").raw("application/json", "{")).await.problem(400);
        assert_eq!(api.send(req(Method::PUT, format!("/api/alice/tasks/{missing}")).by("alice").json(json!({"title": 5}))).await.problem(422), ["title"]);
        // Then 404, then 412.
        api.send(req(Method::PUT, format!("/api/alice/tasks/{missing}")).by("alice").header("if-match", "\"9\"").json(json!({"title": "x"}))).await.problem(404);
        let t = api.create("alice", json!({"title": "t"})).await;
        let id = t["id"].as_str().unwrap();
        api.send(req(Method::PUT, format!("/api/alice/tasks/{id}")).by("alice").header("if-match", "\"9\"").json(json!({"title": "x"}))).await.problem(412);
    }

    async fn create_get_and_envelopes(store: Store) {
        let api = api(store).await;
        let r = api
            .send(req(Method::POST, "/api/alice/tasks").by("alice").json(json!({
                "title": "  Buy milk ", "description": "  2 litres\n", "priority": "high",
                "tags": [" Home", "ERRANDS", "home"], "due_at": "2026-01-02T04:04:05.123456+01:00",
                "id": "ignored", "version": 99, "user_id": "mallory", "created_at": "1999-01-01T00:00:00Z", "unknown": [1]
            })))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let t = &r.body["data"];
        let id = t["id"].as_str().unwrap();
        assert_eq!(r.header("location"), Some(format!("/api/alice/tasks/{id}").as_str()));
        assert_eq!(r.header("etag"), Some("\"1\""));
        assert_eq!(t["title"], "Buy milk");
        assert_eq!(t["description"], "  2 litres\n");
        assert_eq!(t["tags"], json!(["home", "errands"]));
        assert_eq!(t["priority"], "high");
        assert_eq!(t["due_at"], "2026-01-02T03:04:05.123Z");
        assert_eq!((t["completed"].clone(), t["completed_at"].clone()), (json!(false), Value::Null));
        assert_eq!((t["version"].clone(), t["user_id"].clone()), (json!(1), json!("alice")));
        assert_eq!(t["created_at"], t["updated_at"]);
        let created = t["created_at"].as_str().unwrap();
        assert!(created.ends_with('Z') && created.len() == 24, "{created}");
        assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
        let mut want = ["id", "user_id", "title", "description", "completed", "completed_at", "priority", "tags", "due_at", "created_at", "updated_at", "version", "list_id", "parent_id", "position", "recurrence", "last_completed_at", "reminders"];
        want.sort();
        // v2 scheduling fields are always present: null, null and [] for a one-off task.
        assert_eq!((t["recurrence"].clone(), t["last_completed_at"].clone(), t["reminders"].clone()), (Value::Null, Value::Null, json!([])));
        assert_eq!(sorted_keys(t), want);
        // v2 placement: a task without list or parent goes top-level into the inbox.
        let inbox = api.send(req(Method::GET, "/api/alice/lists").by("alice")).await.body["data"][0].clone();
        assert_eq!(inbox["is_inbox"], true);
        assert_eq!((t["list_id"].clone(), t["parent_id"].clone()), (inbox["id"].clone(), Value::Null));
        assert!(t["position"].as_str().is_some_and(|p| !p.is_empty()));
        let g = api.send(req(Method::GET, format!("/api/alice/tasks/{id}")).by("alice")).await;
        assert_eq!(g.status, StatusCode::OK);
        assert_eq!(g.header("etag"), Some("\"1\""));
        assert_eq!(&g.body["data"], t);
        let l = api.send(req(Method::GET, "/api/alice/tasks").by("alice")).await;
        assert_eq!(l.body["data"][0], *t);
        assert_eq!(l.body["meta"], json!({"limit": 50, "next_cursor": null, "total": 1}));
        // Defaults and completed on create; charset parameter accepted.
        let r = api
            .send(req(Method::POST, "/api/alice/tasks").by("alice").raw("application/json; charset=utf-8", r#"{"title":"x","completed":true,"description":"   "}"#))
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        let d = &r.body["data"];
        assert_eq!((d["priority"].clone(), d["description"].clone(), d["tags"].clone()), (json!("medium"), Value::Null, json!([])));
        assert_eq!(d["completed_at"], d["created_at"]);
        api.send(req(Method::GET, "/api/alice/tasks/0190c3a8-7d4e-7b3a-9f21-5c6d7e8f9a0b").by("alice")).await.problem(404);
    }

    async fn body_rules(store: Store) {
        let api = api(store).await;
        let post = |body: Req<'static>| async { api.send(body).await };
        let p = || req(Method::POST, "/api/alice/tasks").by("alice");
        post(req(Method::POST, "/api/alice/tasks").by("alice")).await.problem(415);
        post(p().raw("text/plain", r#"{"title":"x"}"#)).await.problem(415);
        post(p().raw("application/merge-patch+json", r#"{"title":"x"}"#)).await.problem(415);
        post(p().raw("application/json", "{\"title\": ")).await.problem(400);
        post(p().raw("application/json", "")).await.problem(400);
        let cases = [
            (json!({}), vec!["title"]),
            (json!({"title": null}), vec!["title"]),
            (json!({"title": "   "}), vec!["title"]),
            (json!({"title": "x".repeat(201)}), vec!["title"]),
            (json!({"title": "x", "priority": "urgent"}), vec!["priority"]),
            (json!({"title": "x", "priority": null}), vec!["priority"]),
            (json!({"title": "x", "completed": "yes"}), vec!["completed"]),
            (json!({"title": "x", "tags": "a"}), vec!["tags"]),
            (json!({"title": "x", "tags": ["a", 1]}), vec!["tags[1]"]),
            (json!({"title": "x", "tags": (0..21).map(|i| i.to_string()).collect::<Vec<_>>()}), vec!["tags"]),
            (json!({"title": "x", "tags": ["x".repeat(51)]}), vec!["tags[0]"]),
            (json!({"title": "x", "description": "d".repeat(1001)}), vec!["description"]),
            (json!({"title": "x", "due_at": "2026-01-02T03:04:05"}), vec!["due_at"]),
            (json!({"title": "x", "due_at": 5}), vec!["due_at"]),
            (json!({"title": "x", "due_at": "9999-12-31T23:00:00-05:00"}), vec!["due_at"]),
            (json!([1]), vec!["body"]),
            (json!({"title": 1, "priority": 2}), vec!["priority", "title"]),
        ];
        for (body, fields) in cases {
            let mut got = post(p().json(body.clone())).await.problem(422);
            got.sort();
            assert_eq!(got, fields, "{body}");
        }
        // Any RFC 3339 time with an offset is accepted, down to year 0 in UTC.
        let r = post(p().json(json!({"title": "x", "due_at": "0001-01-01T00:30:00+01:00"}))).await;
        assert_eq!(r.body["data"]["due_at"], "0000-12-31T23:30:00.000Z");
        api.send(req(Method::DELETE, format!("/api/alice/tasks/{}", r.body["data"]["id"].as_str().unwrap())).by("alice")).await;
        // 64 KiB exactly is accepted; one byte more is 413.
        let base = json!({"title": "x", "pad": ""}).to_string();
        let pad = "a".repeat(65_536 - base.len());
        let body = base.replace("\"pad\":\"\"", &format!("\"pad\":\"{pad}\""));
        assert_eq!(body.len(), 65_536);
        assert_eq!(post(p().raw("application/json", body.clone())).await.status, StatusCode::CREATED);
        let body = body.replacen('a', "aa", 1);
        post(p().raw("application/json", body)).await.problem(413);
        let listed = api.send(req(Method::GET, "/api/alice/tasks").by("alice")).await;
        assert_eq!(listed.body["meta"]["total"], 1, "nothing half-written by rejected bodies");
    }

    async fn put_patch_complete_delete(store: Store) {
        let api = api(store).await;
        let t = api.create("alice", json!({"title": "t", "description": "d", "priority": "high", "tags": ["a"], "due_at": "2026-01-01T00:00:00Z"})).await;
        let id = t["id"].as_str().unwrap().to_owned();
        let url = format!("/api/alice/tasks/{id}");
        // PUT: absent optionals reset; completion untouched.
        let r = api.send(req(Method::PUT, &url).by("alice").header("if-match", "\"1\"").json(json!({"title": "T2"}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.header("etag"), Some("\"2\""));
        let d = &r.body["data"];
        assert_eq!((d["description"].clone(), d["priority"].clone(), d["tags"].clone(), d["due_at"].clone()), (Value::Null, json!("medium"), json!([]), Value::Null));
        assert!(d["updated_at"].as_str() > t["updated_at"].as_str());
        // PATCH merge semantics, with the merge-patch media type.
        let r = api.send(req(Method::PATCH, &url).by("alice").raw("application/merge-patch+json", r#"{"tags":["X"],"due_at":"2026-02-01T00:00:00Z","completed":true}"#)).await;
        let d = &r.body["data"];
        assert_eq!((d["tags"].clone(), d["title"].clone(), d["completed"].clone(), d["version"].clone()), (json!(["x"]), json!("T2"), json!(true), json!(3)));
        assert!(d["completed_at"].is_string());
        let r = api.send(req(Method::PATCH, &url).by("alice").json(json!({"tags": null, "due_at": null, "description": null}))).await;
        assert_eq!((r.body["data"]["tags"].clone(), r.body["data"]["due_at"].clone()), (json!([]), Value::Null));
        for f in ["title", "priority", "completed"] {
            assert_eq!(api.send(req(Method::PATCH, &url).by("alice").json(json!({f: null}))).await.problem(422), [f]);
        }
        let r = api.send(req(Method::PATCH, &url).by("alice").json(json!({}))).await;
        assert_eq!(r.body["data"]["version"], 5, "an empty patch is still a write");
        // PUT with completed false reopens.
        let r = api.send(req(Method::PUT, &url).by("alice").json(json!({"title": "T3", "completed": false}))).await;
        assert_eq!((r.body["data"]["completed"].clone(), r.body["data"]["completed_at"].clone()), (json!(false), Value::Null));
        // complete: no body toggles, {} toggles, {"completed": x} sets.
        let c = format!("{url}/complete");
        let r = api.send(req(Method::PATCH, &c).by("alice")).await;
        assert_eq!((r.status, r.body["data"]["completed"].clone()), (StatusCode::OK, json!(true)));
        let r = api.send(req(Method::PATCH, &c).by("alice").json(json!({}))).await;
        assert_eq!(r.body["data"]["completed"], false);
        let r = api.send(req(Method::PATCH, &c).by("alice").json(json!({"completed": false}))).await;
        assert_eq!((r.body["data"]["completed"].clone(), r.header("etag")), (json!(false), Some("\"9\"")));
        // Like every PATCH, complete takes the merge-patch media type (with parameters too).
        let r = api.send(req(Method::PATCH, &c).by("alice").raw("application/merge-patch+json", r#"{"completed":true}"#)).await;
        assert_eq!((r.status, r.body["data"]["completed"].clone(), r.header("etag")), (StatusCode::OK, json!(true), Some("\"10\"")));
        let r = api.send(req(Method::PATCH, &c).by("alice").raw("application/merge-patch+json; charset=utf-8", "{}")).await;
        assert_eq!((r.status, r.body["data"]["completed"].clone()), (StatusCode::OK, json!(false)));
        api.send(req(Method::PATCH, &c).by("alice").raw("text/plain", "x")).await.problem(415);
        api.send(req(Method::PATCH, &c).by("alice").raw("application/patch+json", "{}")).await.problem(415);
        assert_eq!(api.send(req(Method::PATCH, &c).by("alice").json(json!({"completed": "y"}))).await.problem(422), ["completed"]);
        // If-Match: stale is 412 and changes nothing; * applies; malformed is 400.
        api.send(req(Method::PATCH, &c).by("alice").header("if-match", "\"3\"")).await.problem(412);
        let r = api.send(req(Method::PATCH, &c).by("alice").header("if-match", "*")).await;
        assert_eq!(r.body["data"]["version"], 12);
        api.send(req(Method::PATCH, &c).by("alice").header("if-match", "10")).await.problem(400);
        // DELETE with a stale version, then for real, then gone.
        api.send(req(Method::DELETE, &url).by("alice").header("if-match", "\"1\"")).await.problem(412);
        let r = api.send(req(Method::DELETE, &url).by("alice").header("if-match", "\"12\"")).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        api.send(req(Method::GET, &url).by("alice")).await.problem(404);
        api.send(req(Method::DELETE, &url).by("alice")).await.problem(404);
    }

    async fn listing_params(store: Store) {
        let api = api(store).await;
        for (title, prio, tags, due) in [
            ("Alpha", "low", json!(["home"]), json!("2026-01-01T00:00:00Z")),
            ("bravo", "high", json!(["home", "work"]), Value::Null),
            ("Charlie 100%", "medium", json!(["work"]), json!("2026-01-03T00:00:00Z")),
        ] {
            api.create("alice", json!({"title": title, "priority": prio, "tags": tags, "due_at": due})).await;
        }
        let titles = |r: &Resp| -> Vec<String> { r.body["data"].as_array().unwrap().iter().map(|t| t["title"].as_str().unwrap().to_owned()).collect() };
        let get = |q: &str| api.send(req(Method::GET, format!("/api/alice/tasks?{q}")).by("alice"));
        assert_eq!(titles(&get("sort=title&order=asc").await), ["Alpha", "bravo", "Charlie 100%"]);
        assert_eq!(titles(&get("priority=high&priority=low&sort=title&order=asc").await), ["Alpha", "bravo"]);
        assert_eq!(titles(&get("tag=HOME&tag=work").await), ["bravo"]);
        assert_eq!(titles(&get("q=100%25").await), ["Charlie 100%"]);
        assert_eq!(titles(&get("due_after=2026-01-01T00:00:00Z&due_before=2026-01-03T00:00:00Z").await), ["Alpha"]);
        assert_eq!(titles(&get("sort=due_at&order=desc").await), ["Charlie 100%", "Alpha", "bravo"]);
        let p1 = get("limit=2&sort=priority&order=asc").await;
        assert_eq!(p1.body["meta"]["total"], 3);
        let cur = p1.body["meta"]["next_cursor"].as_str().unwrap().to_owned();
        let p2 = get(&format!("limit=2&sort=priority&order=asc&cursor={cur}")).await;
        assert_eq!(titles(&p2), ["bravo"]);
        assert_eq!(p2.body["meta"]["next_cursor"], Value::Null);
        // An empty cursor is the first page.
        assert_eq!(get("limit=2&sort=priority&order=asc&cursor=").await.body["data"], p1.body["data"]);
        // A cursor used with another sort or order is 400.
        assert_eq!(get(&format!("limit=2&sort=priority&order=desc&cursor={cur}")).await.problem(400), ["cursor"]);
        for (q, field) in [
            ("status=done", "status"), ("priority=urgent", "priority"), ("sort=size", "sort"),
            ("order=up", "order"), ("limit=101", "limit"), ("limit=x", "limit"),
            ("due_after=yesterday", "due_after"), ("due_before=2026-01-01", "due_before"),
            ("cursor=garbage", "cursor"), ("tag=", "tag"), ("q=a%00b", "q"),
        ] {
            assert_eq!(get(q).await.problem(400), [field], "{q}");
        }
        // Each message names the allowed values or range, never poem-openapi's type names.
        for (q, message) in [
            ("status=done", "must be one of: all, pending, completed"),
            ("priority=urgent", "must be one of: low, medium, high (repeat the parameter for several)"),
            ("sort=size", "must be one of: created_at, updated_at, due_at, priority, title, position"),
            ("order=up", "must be one of: asc, desc"),
            ("limit=1000", "must be an integer from 1 to 100"),
            ("limit=0", "must be an integer from 1 to 100"),
            ("limit=x", "must be an integer from 1 to 100"),
            ("due_after=yesterday", "must be an RFC 3339 timestamp with an offset, e.g. 2026-01-02T03:04:05Z"),
            ("due_before=2026-01-01", "must be an RFC 3339 timestamp with an offset, e.g. 2026-01-02T03:04:05Z"),
            ("cursor=garbage", "is not a cursor returned by this API"),
            ("q=a%00b", "must not contain NUL"),
        ] {
            let r = get(q).await;
            r.problem(400);
            assert_eq!(r.body["errors"][0]["message"], message, "{q}");
            let field = q.split('=').next().unwrap();
            assert_eq!(r.body["detail"], format!("{field}: {message}"), "{q}");
        }
        // Tags: most used first, then by name; completed count.
        let tags = api.send(req(Method::GET, "/api/alice/tags").by("alice")).await;
        assert_eq!(tags.body, json!({"data": [{"tag": "home", "count": 2}, {"tag": "work", "count": 2}]}));
    }

    async fn routes_docs_and_health(store: Store) {
        let api = api(store).await;
        api.send(req(Method::GET, "/nope")).await.problem(404);
        for (method, path, allow) in [
            (Method::DELETE, "/api/alice/tags".to_owned(), "GET"),
            (Method::PUT, format!("/api/alice/lists/{}", uuid::Uuid::now_v7()), "GET, PATCH, DELETE"),
            (Method::GET, format!("/api/alice/lists/{}/move", uuid::Uuid::now_v7()), "POST"),
            (Method::GET, format!("/api/alice/tasks/{}/move", uuid::Uuid::now_v7()), "POST"),
            (Method::DELETE, "/api/alice/lists".to_owned(), "GET, POST"),
        ] {
            let r = api.send(req(method, &path).by("alice")).await;
            r.problem(405);
            assert_eq!(r.header("allow"), Some(allow), "{path}");
        }
        let h = api.send(req(Method::GET, "/healthz")).await;
        assert_eq!((h.status, h.body.clone()), (StatusCode::OK, json!({"status": "ok"})));
        assert_eq!(api.send(req(Method::GET, "/readyz")).await.status, StatusCode::OK);
        let m = api.send(req(Method::GET, "/metrics")).await;
        assert_eq!(m.status, StatusCode::OK);
        assert_eq!(m.header("content-type"), Some("text/plain; version=0.0.4"));
        let spec = api.send(req(Method::GET, "/openapi.json")).await;
        let text = spec.body.to_string();
        for op in ["listTasks", "createTask", "getTask", "replaceTask", "updateTask", "deleteTask", "toggleTaskCompletion", "listTags", "moveTask", "listLists", "createList", "getList", "updateList", "deleteList", "moveList", "healthz", "readyz", "metrics"] {
            assert!(text.contains(&format!("\"operationId\":\"{op}\"")), "{op}");
        }
        assert!(!text.contains("charset=utf-8"));
        // Built on the first request, the same page on every later one, carrying the spec.
        let docs = api.send(req(Method::GET, "/docs")).await;
        assert_eq!(docs.status, StatusCode::OK);
        let page = docs.body.as_str().unwrap_or("").to_owned();
        assert!(page.contains("swagger") && page.contains("listTasks"));
        let again = api.send(req(Method::GET, "/docs")).await;
        assert_eq!(again.body.as_str(), Some(page.as_str()));
        let receiver = api.send(req(Method::GET, "/docs/oauth-receiver.html")).await;
        assert_eq!(receiver.status, StatusCode::OK);
        let yaml = api.send(req(Method::GET, "/openapi.yaml")).await;
        assert!(yaml.body.as_str().unwrap_or("").starts_with("openapi: 3"));
        // The probes are operations of the spec, outside /api and without a security requirement.
        for (path, op) in [("/healthz", "healthz"), ("/readyz", "readyz")] {
            let o = &spec.body["paths"][path]["get"];
            assert_eq!(o["operationId"], op, "{path}");
            assert_eq!(o["tags"], json!(["Operations"]), "{path}");
            assert!(o.get("security").is_none(), "{path} needs no token");
            let r = api.send(req(Method::POST, path)).await;
            r.problem(405);
            assert_eq!(r.header("allow"), Some("GET"));
        }
        assert!(spec.body["paths"]["/readyz"]["get"]["responses"]["503"].is_object());
    }

    // Swagger UI and the spec are gzipped for a client that accepts gzip, and only then.
    async fn docs_and_spec_are_compressed_on_request(store: Store) {
        let api = api(store).await;
        for path in ["/docs", "/openapi.json", "/openapi.yaml"] {
            let plain = api.client.get(path).send().await.0;
            assert_eq!(plain.headers().get("content-encoding"), None, "{path}");
            let plain = plain.into_body().into_bytes().await.unwrap();
            let gz = api.client.get(path).header("accept-encoding", "gzip, deflate, br").send().await.0;
            assert_eq!(gz.status(), StatusCode::OK);
            assert_eq!(gz.headers().get("content-encoding").and_then(|v| v.to_str().ok()), Some("gzip"), "{path}");
            let gz = gz.into_body().into_bytes().await.unwrap();
            assert_eq!(&gz[..2], &[0x1f, 0x8b], "{path}: a gzip stream");
            assert!(gz.len() * 3 < plain.len(), "{path}: {} bytes gzipped from {}", gz.len(), plain.len());
        }
        // API responses are left alone.
        let r = api.client.get("/healthz").header("accept-encoding", "gzip").send().await.0;
        assert_eq!(r.headers().get("content-encoding"), None);
    }

    async fn lists_crud(store: Store) {
        let api = api(store).await;
        // A new user's lists: exactly the inbox.
        let r = api.send(req(Method::GET, "/api/alice/lists").by("alice")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let lists = r.body["data"].as_array().unwrap().clone();
        assert_eq!(lists.len(), 1);
        let inbox = &lists[0];
        assert_eq!((inbox["is_inbox"].clone(), inbox["name"].clone(), inbox["open_count"].clone(), inbox["color"].clone()), (json!(true), json!("Inbox"), json!(0), Value::Null));
        let mut want = ["id", "user_id", "name", "color", "is_inbox", "position", "open_count", "created_at", "updated_at", "version"];
        want.sort();
        assert_eq!(sorted_keys(inbox), want);
        // Create: trimmed name, lower-cased colour, 201 + Location + ETag, last in order.
        let r = api.send(req(Method::POST, "/api/alice/lists").by("alice").json(json!({"name": "  Groceries ", "color": "#FF8800", "id": "ignored", "is_inbox": true, "version": 7}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let l = r.body["data"].clone();
        let id = l["id"].as_str().unwrap().to_owned();
        assert_eq!(r.header("location"), Some(format!("/api/alice/lists/{id}").as_str()));
        assert_eq!(r.header("etag"), Some("\"1\""));
        assert_eq!((l["name"].clone(), l["color"].clone(), l["is_inbox"].clone(), l["version"].clone(), l["user_id"].clone(), l["open_count"].clone()), (json!("Groceries"), json!("#ff8800"), json!(false), json!(1), json!("alice"), json!(0)));
        let url = format!("/api/alice/lists/{id}");
        let g = api.send(req(Method::GET, &url).by("alice")).await;
        assert_eq!((g.status, g.header("etag")), (StatusCode::OK, Some("\"1\"")));
        assert_eq!(g.body["data"], l);
        let all = api.send(req(Method::GET, "/api/alice/lists").by("alice")).await;
        assert_eq!(ids_of(&all.body["data"]), [inbox["id"].as_str().unwrap(), id.as_str()]);
        // Body rules.
        let post = || req(Method::POST, "/api/alice/lists").by("alice");
        for (body, field) in [
            (json!({}), "name"), (json!({"name": null}), "name"), (json!({"name": "   "}), "name"),
            (json!({"name": "n".repeat(101)}), "name"), (json!({"name": 5}), "name"),
            (json!({"name": "x", "color": "red"}), "color"), (json!({"name": "x", "color": "#12345g"}), "color"),
            (json!({"name": "x", "color": 5}), "color"), (json!([1]), "body"),
        ] {
            assert_eq!(api.send(post().json(body.clone())).await.problem(422), [field], "{body}");
        }
        assert_eq!(api.send(post().json(json!({"name": "n".repeat(100)}))).await.status, StatusCode::CREATED);
        api.send(post().raw("text/plain", r#"{"name":"x"}"#)).await.problem(415);
        api.send(post().raw("application/json", "{")).await.problem(400);
        // PATCH: merge patch with If-Match; merge-patch+json accepted.
        let r = api.send(req(Method::PATCH, &url).by("alice").header("if-match", "\"1\"").raw("application/merge-patch+json", r#"{"color": null}"#)).await;
        assert_eq!((r.status, r.header("etag")), (StatusCode::OK, Some("\"2\"")), "{}", r.body);
        assert_eq!((r.body["data"]["color"].clone(), r.body["data"]["name"].clone()), (Value::Null, json!("Groceries")));
        assert!(r.body["data"]["updated_at"].as_str() > l["updated_at"].as_str());
        let r = api.send(req(Method::PATCH, &url).by("alice").json(json!({"name": "Food", "color": "#00AA00"}))).await;
        assert_eq!((r.body["data"]["name"].clone(), r.body["data"]["color"].clone(), r.body["data"]["version"].clone()), (json!("Food"), json!("#00aa00"), json!(3)));
        let r = api.send(req(Method::PATCH, &url).by("alice").json(json!({"name": "Only the name"}))).await;
        assert_eq!(r.body["data"]["color"], "#00aa00", "an absent field is unchanged");
        assert_eq!(api.send(req(Method::PATCH, &url).by("alice").json(json!({"name": null}))).await.problem(422), ["name"]);
        assert_eq!(api.send(req(Method::PATCH, &url).by("alice").json(json!({"color": "blue"}))).await.problem(422), ["color"]);
        api.send(req(Method::PATCH, &url).by("alice").header("if-match", "\"1\"").json(json!({"name": "Stale"}))).await.problem(412);
        assert_eq!(api.send(req(Method::PATCH, &url).by("alice").header("if-match", "1").json(json!({"name": "x"}))).await.problem(400), ["If-Match"]);
        let now = api.send(req(Method::GET, &url).by("alice")).await;
        assert_eq!((now.body["data"]["name"].clone(), now.body["data"]["version"].clone()), (json!("Only the name"), json!(4)));
        // The inbox is renamable.
        let r = api.send(req(Method::PATCH, format!("/api/alice/lists/{}", inbox["id"].as_str().unwrap())).by("alice").json(json!({"name": "Eingang"}))).await;
        assert_eq!((r.body["data"]["name"].clone(), r.body["data"]["is_inbox"].clone()), (json!("Eingang"), json!(true)));
        // Another user's list is no list: 404 everywhere, nothing changed.
        let bobs = format!("/api/bob/lists/{id}");
        api.send(req(Method::GET, &bobs).by("bob")).await.problem(404);
        api.send(req(Method::PATCH, &bobs).by("bob").json(json!({"name": "mine"}))).await.problem(404);
        api.send(req(Method::DELETE, format!("{bobs}?cascade=true")).by("bob")).await.problem(404);
        api.send(req(Method::POST, format!("{bobs}/move")).by("bob").json(json!({}))).await.problem(404);
        api.send(req(Method::GET, format!("/api/alice/lists/{}", uuid::Uuid::now_v7())).by("alice")).await.problem(404);
        assert_eq!(api.send(req(Method::GET, &url).by("alice")).await.body["data"]["version"], 4);
        assert_eq!(api.send(req(Method::GET, "/api/bob/lists").by("bob")).await.body["data"].as_array().unwrap().len(), 1);
        // Check order on list routes: 401, 403, then the path (named list_id), then the body.
        api.send(req(Method::PATCH, "/api/alice/lists/nope").raw("text/plain", "x")).await.problem(401);
        api.send(req(Method::PATCH, "/api/alice/lists/nope").by("bob").raw("text/plain", "x")).await.problem(403);
        assert_eq!(api.send(req(Method::PATCH, "/api/alice/lists/nope").by("alice").raw("text/plain", "x")).await.problem(400), ["list_id"]);
        assert_eq!(api.send(req(Method::DELETE, format!("{url}?cascade=maybe")).by("alice")).await.problem(400), ["cascade"]);
        let missing = format!("/api/alice/lists/{}", uuid::Uuid::now_v7());
        api.send(req(Method::PATCH, &missing).by("alice").raw("text/plain", "x")).await.problem(415);
        assert_eq!(api.send(req(Method::PATCH, &missing).by("alice").json(json!({"name": ""}))).await.problem(422), ["name"]);
        api.send(req(Method::PATCH, &missing).by("alice").header("if-match", "\"1\"").json(json!({"name": "x"}))).await.problem(404);
    }

    async fn list_delete_and_open_count(store: Store) {
        let api = api(store).await;
        let l = api.list("alice", "Work").await;
        let url = format!("/api/alice/lists/{l}");
        let t1 = api.create("alice", json!({"title": "t1", "list_id": l})).await;
        let t1 = t1["id"].as_str().unwrap();
        api.create("alice", json!({"title": "done", "list_id": l, "completed": true})).await;
        let s1 = api.create("alice", json!({"title": "s1", "parent_id": t1})).await;
        let s1 = s1["id"].as_str().unwrap();
        api.create("alice", json!({"title": "elsewhere"})).await;
        let open = |url: String| {
            let api = &api;
            async move { api.send(req(Method::GET, url).by("alice")).await.body["data"]["open_count"].clone() }
        };
        assert_eq!(open(url.clone()).await, 2, "open tasks at every level");
        // Completing t1 completes s1 too.
        api.send(req(Method::PATCH, format!("/api/alice/tasks/{t1}/complete")).by("alice")).await;
        assert_eq!(open(url.clone()).await, 0);
        api.send(req(Method::PATCH, format!("/api/alice/tasks/{s1}")).by("alice").json(json!({"completed": false}))).await;
        assert_eq!(open(url.clone()).await, 2, "reopening s1 reopens t1");
        // The inbox cannot be deleted, with or without cascade.
        let inbox = api.send(req(Method::GET, "/api/alice/lists").by("alice")).await.body["data"][0]["id"].as_str().unwrap().to_owned();
        for q in ["", "?cascade=true"] {
            api.send(req(Method::DELETE, format!("/api/alice/lists/{inbox}{q}")).by("alice")).await.problem(409);
        }
        // A list with tasks: 409 unless cascade; stale If-Match: 412; nothing deleted.
        api.send(req(Method::DELETE, &url).by("alice")).await.problem(409);
        api.send(req(Method::DELETE, format!("{url}?cascade=false")).by("alice")).await.problem(409);
        api.send(req(Method::DELETE, format!("{url}?cascade=true")).by("alice").header("if-match", "\"2\"")).await.problem(412);
        assert_eq!(api.task("alice", s1).await["title"], "s1");
        let r = api.send(req(Method::DELETE, format!("{url}?cascade=true")).by("alice").header("if-match", "\"1\"")).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        api.send(req(Method::GET, &url).by("alice")).await.problem(404);
        for id in [t1, s1] {
            api.send(req(Method::GET, format!("/api/alice/tasks/{id}")).by("alice")).await.problem(404);
        }
        let left = api.send(req(Method::GET, "/api/alice/tasks").by("alice")).await;
        assert_eq!(left.body["meta"]["total"], 1, "only the inbox task is left");
        // An empty list deletes without cascade.
        let e = api.list("alice", "Empty").await;
        assert_eq!(api.send(req(Method::DELETE, format!("/api/alice/lists/{e}")).by("alice")).await.status, StatusCode::NO_CONTENT);
        api.send(req(Method::DELETE, format!("/api/alice/lists/{e}")).by("alice")).await.problem(404);
    }

    async fn subtasks_and_listing(store: Store) {
        let api = api(store).await;
        let l = api.list("alice", "L").await;
        let bob_list = api.list("bob", "Bob's").await;
        let bob_task = api.create("bob", json!({"title": "b"})).await["id"].as_str().unwrap().to_owned();
        let id = |v: Value| v["id"].as_str().unwrap().to_owned();
        let a = id(api.create("alice", json!({"title": "a", "list_id": l})).await);
        let b = id(api.create("alice", json!({"title": "b", "list_id": l, "parent_id": null})).await);
        let c = api.create("alice", json!({"title": "c", "parent_id": a})).await;
        assert_eq!((c["list_id"].as_str(), c["parent_id"].as_str()), (Some(l.as_str()), Some(a.as_str())), "a subtask defaults to its parent's list");
        let c = id(c);
        let d = id(api.create("alice", json!({"title": "d", "parent_id": a, "list_id": l})).await);
        // Placement rules on create.
        let inbox = api.create("alice", json!({"title": "inbox"})).await;
        let inbox_list = inbox["list_id"].as_str().unwrap().to_owned();
        for (body, field) in [
            (json!({"title": "x", "parent_id": a, "list_id": inbox_list}), "list_id"),
            (json!({"title": "x", "list_id": bob_list}), "list_id"),
            (json!({"title": "x", "list_id": uuid::Uuid::now_v7()}), "list_id"),
            (json!({"title": "x", "list_id": "not-a-uuid"}), "list_id"),
            (json!({"title": "x", "parent_id": bob_task}), "parent_id"),
            (json!({"title": "x", "parent_id": 5}), "parent_id"),
        ] {
            assert_eq!(api.send(req(Method::POST, "/api/alice/tasks").by("alice").json(body.clone())).await.problem(422), [field], "{body}");
        }
        // At most 4 levels.
        let l3 = id(api.create("alice", json!({"title": "l3", "parent_id": c})).await);
        let l4 = id(api.create("alice", json!({"title": "l4", "parent_id": l3})).await);
        assert_eq!(api.send(req(Method::POST, "/api/alice/tasks").by("alice").json(json!({"title": "l5", "parent_id": l4}))).await.problem(422), ["parent_id"]);
        // Listing by list and level.
        let mut all = api.ids("alice", &format!("list_id={l}&limit=100")).await;
        all.sort();
        let mut want = vec![a.clone(), b.clone(), c.clone(), d.clone(), l3.clone(), l4.clone()];
        want.sort();
        assert_eq!(all, want, "absent parent_id: every level");
        assert_eq!(api.ids("alice", &format!("list_id={l}&parent_id=none&sort=position&order=asc")).await, [a.clone(), b.clone()]);
        assert_eq!(api.ids("alice", &format!("parent_id={a}&sort=position&order=asc")).await, [c.clone(), d.clone()]);
        assert_eq!(api.ids("alice", &format!("parent_id={c}")).await, [l3.as_str()]);
        assert_eq!(api.ids("alice", "parent_id=none&sort=position&order=asc&limit=100").await.len(), 3, "a, b and the inbox task");
        assert_eq!(api.ids("alice", &format!("parent_id={bob_task}")).await, Vec::<String>::new());
        let r = api.send(req(Method::GET, format!("/api/alice/tasks?list_id={bob_list}")).by("alice")).await;
        assert_eq!((r.status, r.body["data"].clone(), r.body["meta"]["total"].clone()), (StatusCode::OK, json!([]), json!(0)), "another user's list matches nothing");
        for (q, field) in [("parent_id=top", "parent_id"), ("parent_id=", "parent_id"), ("list_id=x", "list_id"), ("sort=manual", "sort")] {
            assert_eq!(api.send(req(Method::GET, format!("/api/alice/tasks?{q}")).by("alice")).await.problem(400), [field], "{q}");
        }
        // PUT and PATCH ignore placement fields.
        let before = api.task("alice", &c).await;
        let r = api.send(req(Method::PATCH, format!("/api/alice/tasks/{c}")).by("alice").json(json!({"title": "c2", "list_id": inbox_list, "parent_id": null, "position": "zz"}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let r = api.send(req(Method::PUT, format!("/api/alice/tasks/{c}")).by("alice").json(json!({"title": "c3", "list_id": inbox_list, "parent_id": b, "position": "zz"}))).await;
        let after = &r.body["data"];
        assert_eq!((after["title"].clone(), after["version"].clone()), (json!("c3"), json!(3)));
        for f in ["list_id", "parent_id", "position"] {
            assert_eq!(after[f], before[f], "{f}");
        }
        // Deleting a task deletes its subtree.
        assert_eq!(api.send(req(Method::DELETE, format!("/api/alice/tasks/{c}")).by("alice")).await.status, StatusCode::NO_CONTENT);
        for gone in [&c, &l3, &l4] {
            api.send(req(Method::GET, format!("/api/alice/tasks/{gone}")).by("alice")).await.problem(404);
        }
        assert_eq!(api.ids("alice", &format!("parent_id={a}")).await, [d.as_str()]);
    }

    async fn position_paging(store: Store) {
        let api = api(store).await;
        let l = api.list("alice", "L").await;
        let mut made = Vec::new();
        for i in 0..5 {
            made.push(api.create("alice", json!({"title": format!("t{i}"), "list_id": l})).await["id"].as_str().unwrap().to_owned());
        }
        // Put t4 first, so position order differs from creation order.
        api.move_task("alice", &made[4], json!({"after": null})).await;
        let want = [&made[4], &made[0], &made[1], &made[2], &made[3]];
        for (order, want) in [("asc", want.to_vec()), ("desc", want.iter().rev().copied().collect())] {
            let base = format!("list_id={l}&parent_id=none&sort=position&order={order}&limit=2");
            let mut got = Vec::new();
            let mut cursor = String::new();
            loop {
                let r = api.send(req(Method::GET, format!("/api/alice/tasks?{base}&cursor={cursor}")).by("alice")).await;
                assert_eq!(r.body["meta"]["total"], 5);
                got.extend(ids_of(&r.body["data"]));
                match r.body["meta"]["next_cursor"].as_str() {
                    Some(c) => cursor = c.to_owned(),
                    None => break,
                }
            }
            assert_eq!(got.iter().collect::<Vec<_>>(), want, "{order}");
            // A position cursor is not valid for another sort.
            let first = api.send(req(Method::GET, format!("/api/alice/tasks?{base}")).by("alice")).await;
            let c = first.body["meta"]["next_cursor"].as_str().unwrap().to_owned();
            assert_eq!(api.send(req(Method::GET, format!("/api/alice/tasks?list_id={l}&sort=created_at&order={order}&cursor={c}")).by("alice")).await.problem(400), ["cursor"]);
        }
    }

    async fn moving_tasks(store: Store) {
        let api = api(store).await;
        let l = api.list("alice", "L").await;
        let m = api.list("alice", "M").await;
        let bob_list = api.list("bob", "B").await;
        let id = |v: Value| v["id"].as_str().unwrap().to_owned();
        let x = id(api.create("alice", json!({"title": "x", "list_id": l})).await);
        let y = id(api.create("alice", json!({"title": "y", "list_id": l})).await);
        let z = id(api.create("alice", json!({"title": "z", "list_id": l})).await);
        let s = id(api.create("alice", json!({"title": "s", "parent_id": y})).await);
        let top = format!("list_id={l}&parent_id=none&sort=position&order=asc");
        assert_eq!(api.ids("alice", &top).await, [x.clone(), y.clone(), z.clone()]);
        // after: null is first, absent is last, a sibling is right after it.
        let r = api.move_task("alice", &z, json!({"after": null})).await;
        assert_eq!((r.status, r.header("etag")), (StatusCode::OK, Some("\"2\"")), "{}", r.body);
        assert_eq!((r.body["data"]["list_id"].as_str(), r.body["data"]["parent_id"].clone()), (Some(l.as_str()), Value::Null));
        assert_eq!(api.ids("alice", &top).await, [z.clone(), x.clone(), y.clone()]);
        api.move_task("alice", &z, json!({})).await;
        assert_eq!(api.ids("alice", &top).await, [x.clone(), y.clone(), z.clone()]);
        api.move_task("alice", &x, json!({"after": y})).await;
        assert_eq!(api.ids("alice", &top).await, [y.clone(), x.clone(), z.clone()]);
        // Siblings' versions do not change when another moves.
        assert_eq!(api.task("alice", &y).await["version"], 1);
        // An after that is not a sibling at the destination: 422, nothing moved.
        for after in [&s, &x] {
            assert_eq!(api.move_task("alice", &x, json!({"after": after})).await.problem(422), ["after"]);
        }
        assert_eq!(api.move_task("alice", &x, json!({"after": uuid::Uuid::now_v7()})).await.problem(422), ["after"]);
        assert_eq!(api.ids("alice", &top).await, [y.clone(), x.clone(), z.clone()]);
        // Under a parent: into its list and children, after a sibling there.
        let r = api.move_task("alice", &z, json!({"parent_id": y, "after": s})).await;
        assert_eq!(r.body["data"]["parent_id"].as_str(), Some(y.as_str()), "{}", r.body);
        assert_eq!(api.ids("alice", &format!("parent_id={y}&sort=position&order=asc")).await, [s.clone(), z.clone()]);
        // Cycles and bad parents: 422 on parent_id.
        for p in [&y, &s] {
            assert_eq!(api.move_task("alice", &y, json!({"parent_id": p})).await.problem(422), ["parent_id"], "{p}");
        }
        assert_eq!(api.move_task("alice", &x, json!({"parent_id": uuid::Uuid::now_v7()})).await.problem(422), ["parent_id"]);
        assert_eq!(api.move_task("alice", &x, json!({"parent_id": y, "list_id": m})).await.problem(422), ["list_id"]);
        assert_eq!(api.move_task("alice", &x, json!({"list_id": bob_list})).await.problem(422), ["list_id"]);
        // A list change takes the subtree along and moves open counts.
        let r = api.move_task("alice", &y, json!({"list_id": m})).await;
        assert_eq!((r.body["data"]["list_id"].as_str(), r.body["data"]["version"].clone()), (Some(m.as_str()), json!(2)), "{}", r.body);
        for sub in [&s, &z] {
            let t = api.task("alice", sub).await;
            assert_eq!((t["list_id"].as_str(), t["parent_id"].as_str()), (Some(m.as_str()), Some(y.as_str())), "{sub}");
        }
        let count = |list: String| {
            let api = &api;
            async move { api.send(req(Method::GET, format!("/api/alice/lists/{list}")).by("alice")).await.body["data"]["open_count"].clone() }
        };
        assert_eq!((count(l.clone()).await, count(m.clone()).await), (json!(1), json!(3)));
        // parent_id: null makes a subtask top-level, in its current list.
        let r = api.move_task("alice", &s, json!({"parent_id": null, "after": null})).await;
        assert_eq!((r.body["data"]["parent_id"].clone(), r.body["data"]["list_id"].as_str()), (Value::Null, Some(m.as_str())));
        assert_eq!(api.ids("alice", &format!("list_id={m}&parent_id=none&sort=position&order=asc")).await, [s.clone(), y.clone()]);
        // If-Match, body rules, ids of others, and the check order.
        let url = format!("/api/alice/tasks/{s}/move");
        // s: created (1), carried to M with y (2), made top-level (3).
        api.send(req(Method::POST, &url).by("alice").header("if-match", "\"2\"").json(json!({}))).await.problem(412);
        let r = api.send(req(Method::POST, &url).by("alice").header("if-match", "\"3\"").json(json!({}))).await;
        assert_eq!(r.header("etag"), Some("\"4\""));
        assert_eq!(api.send(req(Method::POST, &url).by("alice").header("if-match", "4").json(json!({}))).await.problem(400), ["If-Match"]);
        for (body, field) in [(json!({"list_id": null}), "list_id"), (json!({"after": 5}), "after"), (json!({"parent_id": "x"}), "parent_id"), (json!([]), "body")] {
            assert_eq!(api.move_task("alice", &s, body.clone()).await.problem(422), [field], "{body}");
        }
        api.send(req(Method::POST, &url).by("alice").raw("text/plain", "{}")).await.problem(415);
        api.send(req(Method::POST, &url).by("alice")).await.problem(415);
        api.move_task("bob", &s, json!({})).await.problem(404);
        let missing = uuid::Uuid::now_v7().to_string();
        assert_eq!(api.move_task("alice", &missing, json!({"after": 5})).await.problem(422), ["after"]);
        api.move_task("alice", &missing, json!({})).await.problem(404);
        assert_eq!(api.send(req(Method::POST, "/api/alice/tasks/nope/move").by("alice").json(json!({}))).await.problem(400), ["task_id"]);
        assert_eq!(api.task("alice", &s).await["version"], 4, "refused moves changed nothing");
    }

    async fn moving_lists(store: Store) {
        let api = api(store).await;
        let inbox = api.send(req(Method::GET, "/api/alice/lists").by("alice")).await.body["data"][0]["id"].as_str().unwrap().to_owned();
        let p = api.list("alice", "P").await;
        let q = api.list("alice", "Q").await;
        let bob = api.list("bob", "B").await;
        let order = || async { ids_of(&api.send(req(Method::GET, "/api/alice/lists").by("alice")).await.body["data"]) };
        assert_eq!(order().await, [inbox.clone(), p.clone(), q.clone()]);
        let mv = |id: String, body: Value| {
            let api = &api;
            async move { api.send(req(Method::POST, format!("/api/alice/lists/{id}/move")).by("alice").json(body)).await }
        };
        let r = mv(q.clone(), json!({"after": null})).await;
        assert_eq!((r.status, r.header("etag"), r.body["data"]["version"].clone()), (StatusCode::OK, Some("\"2\""), json!(2)), "{}", r.body);
        assert_eq!(order().await, [q.clone(), inbox.clone(), p.clone()]);
        mv(q.clone(), json!({})).await;
        assert_eq!(order().await, [inbox.clone(), p.clone(), q.clone()]);
        mv(inbox.clone(), json!({"after": q})).await;
        assert_eq!(order().await, [p.clone(), q.clone(), inbox.clone()]);
        for after in [json!(bob), json!(uuid::Uuid::now_v7()), json!("x")] {
            assert_eq!(mv(p.clone(), json!({"after": after})).await.problem(422), ["after"]);
        }
        let stale = api.send(req(Method::POST, format!("/api/alice/lists/{p}/move")).by("alice").header("if-match", "\"5\"").json(json!({}))).await;
        stale.problem(412);
        assert_eq!(order().await, [p.clone(), q.clone(), inbox.clone()]);
        api.send(req(Method::POST, format!("/api/bob/lists/{p}/move")).by("bob").json(json!({}))).await.problem(404);
        assert_eq!(api.send(req(Method::POST, "/api/alice/lists/x/move").by("alice").json(json!({}))).await.problem(400), ["list_id"]);
    }

    async fn recurrence_and_reminders_are_echoed(store: Store) {
        let api = api(store).await;
        let t = api.create("alice", json!({
            "title": "Water the plants", "due_at": "2026-01-05T10:00:00+01:00",
            "recurrence": {"rule": " FREQ=WEEKLY;BYDAY=MO "},
            "reminders": [{"at": "2026-01-05T08:30:00.123456+01:00"}, {"before_due": "PT90M"}, {"before_due": "P1W"}],
            "last_completed_at": "2020-01-01T00:00:00Z"
        })).await;
        // The rule trimmed, the zone defaulted, server-owned fields ignored.
        assert_eq!(t["recurrence"], json!({"rule": "FREQ=WEEKLY;BYDAY=MO", "timezone": "UTC"}));
        assert_eq!(t["last_completed_at"], Value::Null);
        let rs = t["reminders"].as_array().unwrap();
        assert_eq!(rs.len(), 3);
        assert_eq!(rs[0]["at"], "2026-01-05T07:30:00.123Z");
        assert_eq!(rs[1]["before_due"], "PT1H30M", "durations come back in their shortest form");
        assert_eq!(rs[2]["before_due"], "P7D");
        let ids: Vec<&str> = rs.iter().map(|r| r["id"].as_str().unwrap()).collect();
        for (r, id) in rs.iter().zip(&ids) {
            uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(r.as_object().unwrap().len(), 2, "{r}: id and exactly one of at, before_due");
        }
        assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
        let id = t["id"].as_str().unwrap();
        assert_eq!(api.task("alice", id).await, t);
        let listed = api.send(req(Method::GET, "/api/alice/tasks").by("alice")).await;
        assert_eq!(listed.body["data"][0], t);
        // Sending back what a read returned (ids included) keeps every id; a new reminder gets one.
        let mut back = t["reminders"].clone();
        back.as_array_mut().unwrap().push(json!({"before_due": "PT0S"}));
        let r = api.send(req(Method::PATCH, format!("/api/alice/tasks/{id}")).by("alice").json(json!({"reminders": back}))).await;
        let again = r.body["data"]["reminders"].as_array().unwrap().clone();
        assert_eq!(again.len(), 4, "{}", r.body);
        assert_eq!(again[..3].iter().map(|r| r["id"].as_str().unwrap()).collect::<Vec<_>>(), ids);
        assert!(!ids.contains(&again[3]["id"].as_str().unwrap()));
        // The zone is canonical; PUT takes both fields too.
        let r = api.send(req(Method::PUT, format!("/api/alice/tasks/{id}")).by("alice").json(json!({
            "title": "t", "due_at": "2026-01-05T09:00:00Z", "recurrence": {"rule": "FREQ=DAILY", "timezone": "Europe/Berlin"}, "reminders": [{"before_due": "PT15M"}]
        }))).await;
        assert_eq!(r.body["data"]["recurrence"], json!({"rule": "FREQ=DAILY", "timezone": "Europe/Berlin"}), "{}", r.body);
        assert_eq!(r.body["data"]["reminders"].as_array().unwrap().len(), 1);
    }

    async fn recurrence_and_reminder_errors_name_their_field(store: Store) {
        let api = api(store).await;
        let due = "2026-01-05T09:00:00Z";
        let six: Vec<Value> = (0..6).map(|i| json!({"before_due": format!("PT{i}M")})).collect();
        let cases = [
            (json!({"recurrence": {"rule": "FREQ=DAILY"}}), vec!["recurrence"]),
            (json!({"due_at": due, "recurrence": {"rule": "FREQ=HOURLY"}}), vec!["recurrence.rule"]),
            (json!({"due_at": due, "recurrence": {"rule": "every day"}}), vec!["recurrence.rule"]),
            (json!({"due_at": due, "recurrence": {"rule": "FREQ=DAILY;DTSTART=20260101T000000Z"}}), vec!["recurrence.rule"]),
            (json!({"due_at": due, "recurrence": {"rule": "FREQ=DAILY;UNTIL=20200101T000000Z"}}), vec!["recurrence.rule"]),
            (json!({"due_at": due, "recurrence": {"rule": ""}}), vec!["recurrence.rule"]),
            (json!({"due_at": due, "recurrence": {}}), vec!["recurrence.rule"]),
            (json!({"due_at": due, "recurrence": {"rule": 5}}), vec!["recurrence.rule"]),
            (json!({"due_at": due, "recurrence": {"rule": "FREQ=DAILY", "timezone": "Mars/Olympus"}}), vec!["recurrence.timezone"]),
            (json!({"due_at": due, "recurrence": {"rule": "FREQ=DAILY", "timezone": 1}}), vec!["recurrence.timezone"]),
            (json!({"due_at": due, "recurrence": "FREQ=DAILY"}), vec!["recurrence"]),
            (json!({"due_at": due, "recurrence": [1]}), vec!["recurrence"]),
            (json!({"due_at": due, "reminders": six}), vec!["reminders"]),
            (json!({"reminders": [{"before_due": "PT15M"}]}), vec!["reminders"]),
            (json!({"reminders": {"at": due}}), vec!["reminders"]),
            (json!({"reminders": "PT15M"}), vec!["reminders"]),
            (json!({"reminders": [5]}), vec!["reminders[0]"]),
            (json!({"reminders": [{}]}), vec!["reminders[0]"]),
            (json!({"due_at": due, "reminders": [{"at": due, "before_due": "PT1M"}]}), vec!["reminders[0]"]),
            (json!({"reminders": [{"at": due}, {"at": "tomorrow"}]}), vec!["reminders[1].at"]),
            (json!({"reminders": [{"at": 1}]}), vec!["reminders[0].at"]),
            (json!({"due_at": due, "reminders": [{"before_due": "P31D"}]}), vec!["reminders[0].before_due"]),
            (json!({"due_at": due, "reminders": [{"before_due": "-PT1M"}]}), vec!["reminders[0].before_due"]),
            (json!({"due_at": due, "reminders": [{"before_due": 15}]}), vec!["reminders[0].before_due"]),
        ];
        for (mut body, fields) in cases {
            body["title"] = json!("x");
            let mut got = api.send(req(Method::POST, "/api/alice/tasks").by("alice").json(body.clone())).await.problem(422);
            got.sort();
            assert_eq!(got, fields, "{body}");
        }
        let t = api.create("alice", json!({"title": "r", "due_at": due, "recurrence": {"rule": "FREQ=DAILY"}, "reminders": [{"before_due": "PT1M"}]})).await;
        let url = format!("/api/alice/tasks/{}", t["id"].as_str().unwrap());
        let patch = |body: Value| {
            let (api, url) = (&api, &url);
            async move { api.send(req(Method::PATCH, url).by("alice").json(body)).await }
        };
        // Clearing a recurring task's due date needs the recurrence stopped too; the
        // before_due reminder needs the due date as well.
        assert_eq!(patch(json!({"due_at": null})).await.problem(422), ["due_at", "reminders"]);
        assert_eq!(patch(json!({"due_at": null, "recurrence": null})).await.problem(422), ["reminders"]);
        assert_eq!(patch(json!({"recurrence": {"rule": "FREQ=SECONDLY"}})).await.problem(422), ["recurrence.rule"]);
        assert_eq!(patch(json!({"reminders": [{"before_due": "P1Y"}]})).await.problem(422), ["reminders[0].before_due"]);
        assert_eq!(patch(json!({"recurrence": {"rule": "FREQ=DAILY", "timezone": "Nowhere"}})).await.problem(422), ["recurrence.timezone"]);
        // A PUT that leaves out the due date of a task that stays recurring clears it: 422 on due_at.
        let put = api.send(req(Method::PUT, &url).by("alice").json(json!({"title": "r", "recurrence": {"rule": "FREQ=DAILY"}}))).await;
        assert_eq!(put.problem(422), ["due_at"]);
        let still = api.task("alice", t["id"].as_str().unwrap()).await;
        assert_eq!(still, t, "refused writes change nothing");
        let listed = api.send(req(Method::GET, "/api/alice/tasks").by("alice")).await;
        assert_eq!(listed.body["meta"]["total"], 1, "no refused create wrote a task");
    }

    async fn patch_and_put_clear_recurrence_and_reminders(store: Store) {
        let api = api(store).await;
        let body = json!({"title": "r", "due_at": "2026-01-05T09:00:00Z", "recurrence": {"rule": "FREQ=DAILY"}, "reminders": [{"before_due": "PT5M"}, {"at": "2026-01-04T09:00:00Z"}]});
        let t = api.create("alice", body.clone()).await;
        let id = t["id"].as_str().unwrap().to_owned();
        let url = format!("/api/alice/tasks/{id}");
        let patch = |body: Value| {
            let (api, url) = (&api, &url);
            async move { api.send(req(Method::PATCH, url).by("alice").json(body)).await.body["data"].clone() }
        };
        // Absent: unchanged (an unrelated patch keeps both, ids included).
        let d = patch(json!({"title": "renamed"})).await;
        assert_eq!((d["recurrence"].clone(), d["reminders"].clone()), (t["recurrence"].clone(), t["reminders"].clone()));
        // Server-owned fields are ignored.
        let d = patch(json!({"last_completed_at": "2020-01-01T00:00:00Z", "recurrence_start": "x"})).await;
        assert_eq!(d["last_completed_at"], Value::Null);
        // null: reminders become [], recurrence stops, the due date stays.
        let d = patch(json!({"reminders": null})).await;
        assert_eq!((d["reminders"].clone(), d["recurrence"].clone()), (json!([]), t["recurrence"].clone()));
        let d = patch(json!({"recurrence": null})).await;
        assert_eq!((d["recurrence"].clone(), d["due_at"].clone()), (Value::Null, t["due_at"].clone()));
        // Set again, then stop both with the due date in one patch.
        let d = patch(json!({"recurrence": {"rule": "FREQ=WEEKLY", "timezone": "Asia/Tokyo"}, "reminders": [{"before_due": "PT1H"}]})).await;
        assert_eq!(d["recurrence"], json!({"rule": "FREQ=WEEKLY", "timezone": "Asia/Tokyo"}));
        let d = patch(json!({"recurrence": null, "reminders": null, "due_at": null})).await;
        assert_eq!((d["recurrence"].clone(), d["reminders"].clone(), d["due_at"].clone()), (Value::Null, json!([]), Value::Null));
        // PUT clears both when absent (and when null).
        for cleared in [json!({"title": "r", "due_at": "2026-01-05T09:00:00Z"}), json!({"title": "r", "recurrence": null, "reminders": null})] {
            api.send(req(Method::PUT, &url).by("alice").json(body.clone())).await;
            let r = api.send(req(Method::PUT, &url).by("alice").json(cleared.clone())).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            assert_eq!((r.body["data"]["recurrence"].clone(), r.body["data"]["reminders"].clone()), (Value::Null, json!([])), "{cleared}");
        }
    }

    async fn completing_a_recurring_task_advances_it(store: Store) {
        let api = api(store).await;
        let t = api.create("alice", json!({"title": "daily", "due_at": "2026-01-05T09:00:00Z", "recurrence": {"rule": "FREQ=DAILY;COUNT=5"}, "reminders": [{"before_due": "PT15M"}]})).await;
        let id = t["id"].as_str().unwrap().to_owned();
        let url = format!("/api/alice/tasks/{id}");
        let sub = api.create("alice", json!({"title": "step", "parent_id": id, "completed": true})).await;
        let check = |r: &Resp, due: &str, version: i64| {
            let d = &r.body["data"];
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            assert_eq!(d["due_at"], due, "{d}");
            assert_eq!((d["completed"].clone(), d["completed_at"].clone()), (json!(false), Value::Null), "{d}");
            assert!(d["last_completed_at"].as_str().is_some_and(|s| s.ends_with('Z')), "{d}");
            assert_eq!(d["version"], version);
            assert_eq!(r.header("etag"), Some(format!("\"{version}\"").as_str()));
            assert_eq!(d["reminders"][0]["id"], t["reminders"][0]["id"], "a before_due reminder is kept for the next occurrence");
        };
        // Toggle.
        let r = api.send(req(Method::PATCH, format!("{url}/complete")).by("alice")).await;
        check(&r, "2026-01-06T09:00:00.000Z", 2);
        // The completed subtask was reopened as its parent advanced.
        let s = api.task("alice", sub["id"].as_str().unwrap()).await;
        assert_eq!((s["completed"].clone(), s["version"].clone()), (json!(false), json!(2)), "{s}");
        let first = r.body["data"]["last_completed_at"].clone();
        // Set completed: true.
        let r = api.send(req(Method::PATCH, format!("{url}/complete")).by("alice").json(json!({"completed": true}))).await;
        check(&r, "2026-01-07T09:00:00.000Z", 3);
        assert!(r.body["data"]["last_completed_at"].as_str() >= first.as_str());
        // PATCH completed: true.
        let r = api.send(req(Method::PATCH, &url).by("alice").json(json!({"completed": true}))).await;
        check(&r, "2026-01-08T09:00:00.000Z", 4);
        // PUT completed: true with the current content.
        let r = api.send(req(Method::PUT, &url).by("alice").json(json!({"title": "daily", "due_at": "2026-01-08T09:00:00Z", "recurrence": {"rule": "FREQ=DAILY;COUNT=5"}, "reminders": [{"before_due": "PT15M"}], "completed": true}))).await;
        check(&r, "2026-01-09T09:00:00.000Z", 5);
        // The fifth occurrence was the last: completing it completes the task.
        let r = api.send(req(Method::PATCH, format!("{url}/complete")).by("alice")).await;
        let d = &r.body["data"];
        assert_eq!((d["completed"].clone(), d["due_at"].clone()), (json!(true), json!("2026-01-09T09:00:00.000Z")), "{d}");
        assert!(d["completed_at"].is_string());
    }

    async fn recurrence_keeps_local_time_across_dst(store: Store) {
        let api = api(store).await;
        // Saturday 28 March 2026, 09:00 in Berlin (CET, UTC+1); clocks go forward on the 29th.
        let t = api.create("alice", json!({"title": "stretch", "due_at": "2026-03-28T09:00:00+01:00", "recurrence": {"rule": "FREQ=DAILY", "timezone": "Europe/Berlin"}})).await;
        let c = format!("/api/alice/tasks/{}/complete", t["id"].as_str().unwrap());
        let mut dues = Vec::new();
        for _ in 0..2 {
            let r = api.send(req(Method::PATCH, &c).by("alice")).await;
            dues.push(r.body["data"]["due_at"].as_str().unwrap().to_owned());
        }
        // 09:00 CEST (UTC+2) on Sunday and Monday.
        assert_eq!(dues, ["2026-03-29T07:00:00.000Z", "2026-03-30T07:00:00.000Z"]);
    }
}

/// With the database unreachable, API calls and `/readyz` answer 503 problems (never 500).
#[tokio::test]
async fn database_down_is_503() {
    let store = Store::connect_with(
        "postgres://postgres@127.0.0.1:1/none",
        &todo_store::StoreOptions {
            acquire_timeout: Duration::from_millis(300),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let api = api(store).await;
    let r = api
        .send(req(Method::GET, "/api/alice/tasks").by("alice"))
        .await;
    r.problem(503);
    assert!(r.header("retry-after").is_some());
    api.send(
        req(Method::POST, "/api/alice/tasks")
            .by("alice")
            .json(json!({"title": "x"})),
    )
    .await
    .problem(503);
    api.send(req(Method::GET, "/readyz")).await.problem(503);
    assert_eq!(
        api.send(req(Method::GET, "/healthz")).await.status,
        StatusCode::OK
    );
}

/// Waits inside authentication until released, so a test can hold requests in flight.
struct Gate(std::sync::Arc<tokio::sync::Notify>);

#[async_trait::async_trait]
impl todo_http::Authenticator for Gate {
    async fn authenticate(
        &self,
        _req: &poem::Request,
    ) -> Result<todo_http::Principal, todo_http::AuthError> {
        self.0.notified().await;
        Ok(todo_http::Principal::new("alice"))
    }
}

/// Past `max_in_flight`, requests are shed at once with 503 + Retry-After; the held ones finish.
#[tokio::test]
async fn sheds_load_beyond_max_in_flight() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    store.migrate().await.unwrap();
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let ep = std::sync::Arc::new(
        TodoApi::builder(store)
            .authenticator(Gate(gate.clone()))
            .max_in_flight(2)
            .build()
            .boxed(),
    );
    let call = |ep: std::sync::Arc<BoxEndpoint<'static, Response>>| async move {
        let req = poem::Request::builder()
            .uri("/api/alice/tasks".parse().unwrap())
            .finish();
        poem::Endpoint::call(&*ep, req)
            .await
            .map(poem::IntoResponse::into_response)
            .unwrap()
    };
    let held: Vec<_> = (0..2).map(|_| tokio::spawn(call(ep.clone()))).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let shed = call(ep.clone()).await;
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        shed.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(
        shed.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    gate.notify_waiters();
    for h in held {
        assert_eq!(h.await.unwrap().status(), StatusCode::OK);
    }
    // Capacity is back once they finish.
    let gate2 = gate.clone();
    let next = tokio::spawn(call(ep.clone()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate2.notify_waiters();
    assert_eq!(next.await.unwrap().status(), StatusCode::OK);
}

/// Counts the requests being authenticated at once (each takes 30 ms).
#[derive(Default)]
struct Counting {
    now: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl todo_http::Authenticator for Counting {
    async fn authenticate(
        &self,
        _req: &poem::Request,
    ) -> Result<todo_http::Principal, todo_http::AuthError> {
        use std::sync::atomic::Ordering::SeqCst;
        let n = self.now.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(n, SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        self.now.fetch_sub(1, SeqCst);
        Ok(todo_http::Principal::new("alice"))
    }
}

/// Beyond `max_active`, accepted requests wait their turn instead of being processed (or shed):
/// all succeed, never more than `max_active` at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_max_active_queue_and_all_succeed() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    store.migrate().await.unwrap();
    let counting = std::sync::Arc::new(Counting::default());
    let ep = std::sync::Arc::new(
        TodoApi::builder(store)
            .shared_authenticator(counting.clone())
            .max_active(3)
            .max_in_flight(100)
            .build()
            .boxed(),
    );
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let ep = ep.clone();
            tokio::spawn(async move {
                let req = poem::Request::builder()
                    .uri("/api/alice/tasks".parse().unwrap())
                    .finish();
                poem::Endpoint::get_response(&*ep, req).await.status()
            })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        counting.most.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "requests processed at once"
    );
}
