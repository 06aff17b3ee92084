//! API.md "Webhooks" over poem's test client, on SQLite and PostgreSQL: the operations, their
//! checks and errors, the secret, isolation, idempotent retries, and the outbox a write fills.
//! (Delivery through `serve` is tests/webhook_delivery.rs.)

use std::time::Duration;

use base64::Engine as _;
use poem::endpoint::BoxEndpoint;
use poem::http::{HeaderMap, Method, StatusCode};
use poem::test::TestClient;
use poem::{EndpointExt, Response};
use serde_json::{Value, json};
use test_support::both_backends;
use todo_http::TodoApi;
use todo_http::auth::{JwtAuthenticator, JwtConfig, mint_hs256};
use todo_store::Store;

const SECRET: &str = "webhook-test-secret-0123456789abcdef";

/// A public address that needs no DNS (TEST-NET-2): accepted under the default policy.
const PUBLIC: &str = "https://198.51.100.7/hooks/todo";

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

    /// Asserts a 422 naming exactly `fields`.
    fn invalid(&self, fields: &[&str]) {
        self.problem(422);
        assert_eq!(self.fields(), fields, "{}", self.body);
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
    /// Sends a request as `user` (no token when `None`) with extra headers and a raw body of
    /// the given content type.
    async fn raw(
        &self,
        method: Method,
        path: &str,
        user: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<(&str, String)>,
    ) -> Resp {
        let mut b = self.client.request(method, path);
        if let Some(u) = user {
            b = b.header("authorization", format!("Bearer {}", token(u)));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if let Some((content_type, body)) = body {
            b = b.header("content-type", content_type).body(body);
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

    async fn send(&self, method: Method, path: &str, user: &str, body: Option<&Value>) -> Resp {
        let body = body.map(|b| ("application/json", b.to_string()));
        self.raw(method, path, Some(user), &[], body).await
    }

    async fn get(&self, user: &str, path: &str) -> Resp {
        self.send(Method::GET, path, user, None).await
    }

    async fn create_hook(&self, user: &str, body: Value) -> Resp {
        self.send(
            Method::POST,
            &format!("/api/{user}/webhooks"),
            user,
            Some(&body),
        )
        .await
    }

    /// A first request that makes the user's inbox (so that the tests below do not depend on
    /// a webhook being a new user's very first write; `a_new_users_first_request_can_create_a_webhook`
    /// checks that case on its own).
    async fn hello(&self, user: &str) {
        let r = self.get(user, &format!("/api/{user}/lists")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }

    /// Creates a webhook to [`PUBLIC`]; returns its id.
    async fn hook(&self, user: &str) -> String {
        let r = self.create_hook(user, json!({ "url": PUBLIC })).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["data"]["id"].as_str().unwrap().to_owned()
    }
}

/// The webhook fields every read shows, and nothing else (never the secret).
const WEBHOOK_KEYS: [&str; 7] = [
    "created_at",
    "description",
    "enabled",
    "events",
    "id",
    "updated_at",
    "url",
];

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

fn assert_secret(secret: &str) {
    let key = secret
        .strip_prefix("whsec_")
        .unwrap_or_else(|| panic!("{secret} has no whsec_ prefix"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key)
        .unwrap_or_else(|e| panic!("{secret} is not base64: {e}"));
    assert_eq!(bytes.len(), 32, "{secret}");
}

both_backends! {
    async fn a_new_users_first_request_can_create_a_webhook(store: Store) {
        // API.md: the inbox exists from a user's first request on, whatever that request is.
        let api = api(store).await;
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            api.create_hook("neo", json!({ "url": PUBLIC })),
        )
        .await
        .expect("createWebhook as a new user's first request answers within 10 s");
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let lists = api.get("neo", "/api/neo/lists").await;
        assert_eq!(lists.body["data"].as_array().unwrap().len(), 1, "{}", lists.body);
        assert_eq!(lists.body["data"][0]["is_inbox"], true);
    }

    async fn crud_round_trip(store: Store) {
        let api = api(store).await;
        api.hello("wes").await;
        let r = api
            .create_hook(
                "wes",
                json!({
                    "url": PUBLIC,
                    "events": ["task.created", "task.deleted", "task.created"],
                    "description": "  CRM sync  ",
                }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let created = r.body["data"].clone();
        let id = created["id"].as_str().unwrap().to_owned();
        assert!(uuid::Uuid::parse_str(&id).unwrap().get_version_num() == 7);
        assert_eq!(r.header("location"), Some(format!("/api/wes/webhooks/{id}").as_str()));
        assert_eq!(created["url"], PUBLIC);
        assert_eq!(created["events"], json!(["task.created", "task.deleted"]));
        assert_eq!(created["description"], "CRM sync");
        assert_eq!(created["enabled"], true);
        assert_eq!(created["created_at"], created["updated_at"]);
        assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
        let mut with_secret = WEBHOOK_KEYS.map(str::to_owned).to_vec();
        with_secret.push("secret".into());
        with_secret.sort();
        assert_eq!(keys(&created), with_secret);
        let secret = created["secret"].as_str().unwrap().to_owned();
        assert_secret(&secret);
        let mut webhook = created.clone();
        webhook.as_object_mut().unwrap().remove("secret");

        // Reads never show the secret.
        let r = api.get("wes", &format!("/api/wes/webhooks/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["data"], webhook);
        assert!(!String::from_utf8_lossy(&r.bytes).contains(&secret));
        let r = api.get("wes", "/api/wes/webhooks").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, json!({ "data": [webhook] }));
        assert!(!String::from_utf8_lossy(&r.bytes).contains(&secret));

        // A merge patch (as application/merge-patch+json) changes only what it names.
        let path = format!("/api/wes/webhooks/{id}");
        let r = api
            .raw(
                Method::PATCH,
                &path,
                Some("wes"),
                &[],
                Some((
                    "application/merge-patch+json",
                    json!({"url": "https://203.0.113.9/other", "enabled": false}).to_string(),
                )),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let patched = r.body["data"].clone();
        assert_eq!(keys(&patched), WEBHOOK_KEYS);
        assert_eq!(patched["url"], "https://203.0.113.9/other");
        assert_eq!(patched["enabled"], false);
        assert_eq!(patched["events"], created["events"]);
        assert_eq!(patched["description"], "CRM sync");
        assert_eq!(patched["created_at"], created["created_at"]);
        assert!(patched["updated_at"].as_str() > created["updated_at"].as_str());
        assert!(!String::from_utf8_lossy(&r.bytes).contains(&secret));

        // `null` events: every type again; `null` description: cleared.
        let r = api
            .send(Method::PATCH, &path, "wes", Some(&json!({"events": null, "description": null})))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["data"]["events"], Value::Null);
        assert_eq!(r.body["data"]["description"], Value::Null);
        assert_eq!(r.body["data"]["enabled"], false);
        let r = api
            .send(Method::PATCH, &path, "wes", Some(&json!({"events": ["list.deleted"], "enabled": true})))
            .await;
        assert_eq!(r.body["data"]["events"], json!(["list.deleted"]));
        assert_eq!(r.body["data"]["enabled"], true);
        let current = r.body["data"].clone();
        assert_eq!(api.get("wes", &path).await.body["data"], current);

        // No deliveries yet.
        let r = api.get("wes", &format!("{path}/deliveries")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body, json!({ "data": [] }));

        // Delete: 204 and gone everywhere.
        let r = api.send(Method::DELETE, &path, "wes", None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert!(r.bytes.is_empty());
        for (method, suffix, body) in [
            (Method::GET, "", None),
            (Method::PATCH, "", Some(json!({"enabled": true}))),
            (Method::DELETE, "", None),
            (Method::GET, "/deliveries", None),
        ] {
            let r = api.send(method.clone(), &format!("{path}{suffix}"), "wes", body.as_ref()).await;
            r.problem(404);
            assert_eq!(r.body["detail"], "no such webhook", "{method} {suffix}");
        }
        assert_eq!(api.get("wes", "/api/wes/webhooks").await.body, json!({ "data": [] }));
    }

    async fn other_users_webhooks_are_invisible(store: Store) {
        let api = api(store).await;
        api.hello("amy").await;
        api.hello("bob").await;
        let id = api.hook("amy").await;
        api.hook("bob").await;
        // Under bob's own path, amy's webhook is the same as none.
        let bobs = format!("/api/bob/webhooks/{id}");
        api.get("bob", &bobs).await.problem(404);
        api.get("bob", &format!("{bobs}/deliveries")).await.problem(404);
        api.send(Method::PATCH, &bobs, "bob", Some(&json!({"enabled": false})))
            .await
            .problem(404);
        api.send(Method::DELETE, &bobs, "bob", None).await.problem(404);
        let listed = api.get("bob", "/api/bob/webhooks").await.body;
        assert_eq!(listed["data"].as_array().unwrap().len(), 1);
        assert_ne!(listed["data"][0]["id"], id.as_str());
        // Amy's path with bob's token: 403 on every operation.
        let amys = format!("/api/amy/webhooks/{id}");
        for (method, path, body) in [
            (Method::GET, "/api/amy/webhooks".to_owned(), None),
            (Method::POST, "/api/amy/webhooks".to_owned(), Some(json!({"url": PUBLIC}))),
            (Method::GET, amys.clone(), None),
            (Method::PATCH, amys.clone(), Some(json!({"enabled": false}))),
            (Method::DELETE, amys.clone(), None),
            (Method::GET, format!("{amys}/deliveries"), None),
        ] {
            api.send(method, &path, "bob", body.as_ref()).await.problem(403);
        }
        // Nothing changed for amy.
        let r = api.get("amy", &amys).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["data"]["enabled"], true);
        assert_eq!(api.get("amy", "/api/amy/webhooks").await.body["data"].as_array().unwrap().len(), 1);
    }

    async fn field_rules_and_check_order(store: Store) {
        let api = api(store).await;
        api.hello("ula").await;
        // URLs the default policy refuses: 422 on `url`.
        for url in [
            "ftp://x",
            "http://example.com",
            "https://127.0.0.1/",
            "https://localhost/",
            "https://10.0.0.1/",
            "https://[::1]/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://user:pw@198.51.100.7/",
            "not a url",
            "",
        ] {
            api.create_hook("ula", json!({ "url": url })).await.invalid(&["url"]);
        }
        let long = format!("https://198.51.100.7/{}", "a".repeat(2000));
        api.create_hook("ula", json!({ "url": long })).await.invalid(&["url"]);
        // Event names and types, description, body shape.
        api.create_hook("ula", json!({"url": PUBLIC, "events": ["task.exploded"]}))
            .await
            .invalid(&["events[0]"]);
        api.create_hook("ula", json!({"url": PUBLIC, "events": ["task.created", "nope"]}))
            .await
            .invalid(&["events[1]"]);
        api.create_hook("ula", json!({"url": PUBLIC, "events": []})).await.invalid(&["events"]);
        api.create_hook("ula", json!({"url": PUBLIC, "events": "task.created"}))
            .await
            .invalid(&["events"]);
        api.create_hook("ula", json!({"url": PUBLIC, "events": [1]})).await.invalid(&["events[0]"]);
        api.create_hook("ula", json!({"url": PUBLIC, "description": "x".repeat(501)}))
            .await
            .invalid(&["description"]);
        api.create_hook("ula", json!({"url": PUBLIC, "description": 5}))
            .await
            .invalid(&["description"]);
        api.create_hook("ula", json!({})).await.invalid(&["url"]);
        api.create_hook("ula", json!({"url": null})).await.invalid(&["url"]);
        api.create_hook("ula", json!({"url": 42})).await.invalid(&["url"]);
        api.create_hook("ula", json!(["https://198.51.100.7/"])).await.invalid(&["body"]);
        // Nothing of that was created.
        assert_eq!(api.get("ula", "/api/ula/webhooks").await.body, json!({ "data": [] }));

        // Patch rules: null url or enabled, a refused URL, an unknown event.
        let id = api.hook("ula").await;
        let path = format!("/api/ula/webhooks/{id}");
        for (body, field) in [
            (json!({"url": null}), "url"),
            (json!({"enabled": null}), "enabled"),
            (json!({"enabled": "yes"}), "enabled"),
            (json!({"url": "https://192.168.1.1/"}), "url"),
            (json!({"url": "http://198.51.100.7/"}), "url"),
            (json!({"events": ["task.created", "bogus"]}), "events[1]"),
        ] {
            api.send(Method::PATCH, &path, "ula", Some(&body)).await.invalid(&[field]);
        }

        // The 11th webhook: 422 on `webhooks`.
        for _ in 1..10 {
            api.hook("ula").await;
        }
        api.create_hook("ula", json!({ "url": PUBLIC })).await.invalid(&["webhooks"]);
        assert_eq!(api.get("ula", "/api/ula/webhooks").await.body["data"].as_array().unwrap().len(), 10);
        // Room again after a delete.
        api.send(Method::DELETE, &path, "ula", None).await;
        api.hook("ula").await;

        // A malformed webhook id: 400 naming `webhook_id`, on every operation.
        for (method, suffix, body) in [
            (Method::GET, "", None),
            (Method::PATCH, "", Some(json!({"enabled": true}))),
            (Method::DELETE, "", None),
            (Method::GET, "/deliveries", None),
        ] {
            let r = api
                .send(method, &format!("/api/ula/webhooks/not-a-uuid{suffix}"), "ula", body.as_ref())
                .await;
            r.problem(400);
            assert_eq!(r.fields(), ["webhook_id"], "{}", r.body);
        }

        // The order of checks: 401, 403, then the path (400), then the body.
        let bad_path = "/api/ula/webhooks/not-a-uuid";
        let r = api
            .raw(Method::PATCH, bad_path, None, &[], Some(("text/plain", "x".into())))
            .await;
        r.problem(401);
        assert!(r.header("www-authenticate").is_some());
        api.raw(Method::PATCH, bad_path, Some("zed"), &[], Some(("text/plain", "x".into())))
            .await
            .problem(403);
        api.raw(Method::PATCH, bad_path, Some("ula"), &[], Some(("text/plain", "x".into())))
            .await
            .problem(400);
        let hooks = "/api/ula/webhooks";
        api.raw(Method::POST, hooks, Some("ula"), &[], Some(("text/plain", "{}".into())))
            .await
            .problem(415);
        api.raw(Method::POST, hooks, Some("ula"), &[], None).await.problem(415);
        api.raw(Method::POST, hooks, Some("ula"), &[], Some(("application/json", "{\"url\":".into())))
            .await
            .problem(400);
        let big = format!("{{\"url\":\"{PUBLIC}\",\"description\":\"{}\"}}", "x".repeat(70_000));
        api.raw(Method::POST, hooks, Some("ula"), &[], Some(("application/json", big)))
            .await
            .problem(413);
        // Create takes no merge patch.
        api.raw(
            Method::POST,
            hooks,
            Some("ula"),
            &[],
            Some(("application/merge-patch+json", json!({"url": PUBLIC}).to_string())),
        )
        .await
        .problem(415);
        // A body rule comes before the lookup: 422 for an unknown id with a bad body.
        let unknown = format!("/api/ula/webhooks/{}", uuid::Uuid::now_v7());
        api.send(Method::PATCH, &unknown, "ula", Some(&json!({"enabled": 1})))
            .await
            .invalid(&["enabled"]);
        api.send(Method::PATCH, &unknown, "ula", Some(&json!({"enabled": true})))
            .await
            .problem(404);
        // Methods the routes do not answer: 405 with Allow.
        let r = api.send(Method::PUT, &unknown, "ula", Some(&json!({}))).await;
        r.problem(405);
        assert_eq!(r.header("allow"), Some("GET, PATCH, DELETE"));
        let r = api.send(Method::DELETE, hooks, "ula", None).await;
        r.problem(405);
        assert_eq!(r.header("allow"), Some("GET, POST"));
    }

    async fn idempotent_create_replays_the_same_secret(store: Store) {
        let api = api(store).await;
        api.hello("ivy").await;
        let body = json!({"url": PUBLIC, "events": ["task.created"]}).to_string();
        let api = &api;
        let post = |key: &'static str, body: String| async move {
            api.raw(
                Method::POST,
                "/api/ivy/webhooks",
                Some("ivy"),
                &[("idempotency-key", key)],
                Some(("application/json", body)),
            )
            .await
        };
        let first = post("hook-1", body.clone()).await;
        assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
        assert_eq!(first.header("idempotent-replayed"), None);
        let again = post("hook-1", body.clone()).await;
        assert_eq!(again.status, StatusCode::CREATED);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.bytes, first.bytes, "replayed byte for byte");
        assert_eq!(again.body["data"]["secret"], first.body["data"]["secret"]);
        assert_eq!(again.header("location"), first.header("location"));
        assert_eq!(again.header("content-type"), first.header("content-type"));
        assert_eq!(again.header("etag"), None);
        assert_eq!(api.get("ivy", "/api/ivy/webhooks").await.body["data"].as_array().unwrap().len(), 1);
        // The same key with another body: 422, nothing created.
        let other = json!({"url": PUBLIC}).to_string();
        assert!(post("hook-1", other).await.problem(422).ends_with("/idempotency-key-reuse"));
        assert_eq!(api.get("ivy", "/api/ivy/webhooks").await.body["data"].as_array().unwrap().len(), 1);
        // A refusal after the key check is stored and replayed too.
        let bad = json!({"url": "https://127.0.0.1/"}).to_string();
        let refused = post("hook-bad", bad.clone()).await;
        refused.invalid(&["url"]);
        let refused_again = post("hook-bad", bad).await;
        assert_eq!(refused_again.header("idempotent-replayed"), Some("true"));
        assert_eq!(refused_again.bytes, refused.bytes);

        // PATCH and DELETE replay too.
        let path = first.header("location").unwrap().to_owned();
        let patch = || {
            api.raw(
                Method::PATCH,
                &path,
                Some("ivy"),
                &[("idempotency-key", "hook-patch")],
                Some(("application/json", json!({"enabled": false}).to_string())),
            )
        };
        let p1 = patch().await;
        assert_eq!(p1.status, StatusCode::OK, "{}", p1.body);
        let p2 = patch().await;
        assert_eq!(p2.status, StatusCode::OK);
        assert_eq!(p2.header("idempotent-replayed"), Some("true"));
        assert_eq!(p2.bytes, p1.bytes);
        assert_eq!(p2.header("content-type"), p1.header("content-type"));
        let delete = || {
            api.raw(Method::DELETE, &path, Some("ivy"), &[("idempotency-key", "hook-del")], None)
        };
        assert_eq!(delete().await.status, StatusCode::NO_CONTENT);
        let d2 = delete().await;
        assert_eq!(d2.status, StatusCode::NO_CONTENT);
        assert_eq!(d2.header("idempotent-replayed"), Some("true"));
        api.get("ivy", &path).await.problem(404);
    }

    async fn writes_queue_deliveries_for_the_events_asked_for(store: Store) {
        let api = api(store).await;
        api.hello("dee").await;
        let all = api.hook("dee").await;
        let r = api
            .create_hook("dee", json!({"url": PUBLIC, "events": ["list.created"]}))
            .await;
        let lists_only = r.body["data"]["id"].as_str().unwrap().to_owned();
        // A plain create, a merge patch and a delete: each write queues its events.
        let r = api.send(Method::POST, "/api/dee/tasks", "dee", Some(&json!({"title": "t"}))).await;
        assert_eq!(r.status, StatusCode::CREATED);
        let task = r.body["data"]["id"].as_str().unwrap().to_owned();
        let task_path = format!("/api/dee/tasks/{task}");
        let r = api.send(Method::PATCH, &task_path, "dee", Some(&json!({"title": "u"}))).await;
        assert_eq!(r.status, StatusCode::OK);
        let r = api.send(Method::DELETE, &task_path, "dee", None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        // No sender runs here: the deliveries wait, newest first.
        let r = api.get("dee", &format!("/api/dee/webhooks/{all}/deliveries")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let log = r.body["data"].as_array().unwrap().clone();
        let mut types: Vec<&str> = log.iter().map(|d| d["event_type"].as_str().unwrap()).collect();
        // The inbox's `open_count` changes with the create and the delete.
        let newest = types[0];
        assert!(newest == "task.deleted" || newest == "list.updated", "{}", r.body);
        types.sort_unstable();
        assert_eq!(
            types,
            ["list.updated", "list.updated", "task.created", "task.deleted", "task.updated"],
            "{}",
            r.body
        );
        let ids: Vec<&str> = log.iter().map(|d| d["id"].as_str().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
        for d in &log {
            let mut k: Vec<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
            k.sort_unstable();
            assert_eq!(
                k,
                ["attempts", "created_at", "event_type", "id", "last_response_status", "next_attempt_at", "status"]
            );
            assert_eq!(d["status"], "pending");
            assert_eq!(d["attempts"], 0);
            assert_eq!(d["last_response_status"], Value::Null);
            assert!(d["next_attempt_at"].as_str().unwrap().ends_with('Z'));
            assert!(d["created_at"].as_str().unwrap().ends_with('Z'));
            uuid::Uuid::parse_str(d["id"].as_str().unwrap()).unwrap();
        }
        // The list-only webhook got nothing from task events; a disabled one queues nothing.
        let r = api.get("dee", &format!("/api/dee/webhooks/{lists_only}/deliveries")).await;
        assert_eq!(r.body, json!({ "data": [] }));
        let path = format!("/api/dee/webhooks/{lists_only}");
        api.send(Method::PATCH, &path, "dee", Some(&json!({"enabled": false}))).await;
        api.send(Method::POST, "/api/dee/lists", "dee", Some(&json!({"name": "l1"}))).await;
        assert_eq!(api.get("dee", &format!("{path}/deliveries")).await.body, json!({ "data": [] }));
        api.send(Method::PATCH, &path, "dee", Some(&json!({"enabled": true}))).await;
        api.send(Method::POST, "/api/dee/lists", "dee", Some(&json!({"name": "l2"}))).await;
        let r = api.get("dee", &format!("{path}/deliveries")).await;
        let log = r.body["data"].as_array().unwrap();
        assert_eq!(log.len(), 1, "{}", r.body);
        assert_eq!(log[0]["event_type"], "list.created");
    }
}
