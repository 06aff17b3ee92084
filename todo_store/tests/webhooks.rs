//! Webhooks on both backends: the rules of the resource, the outbox written with each change,
//! and the sender against a real receiver on loopback (signatures checked with the
//! `standardwebhooks` crate's verifier, retries, redirects, slow receivers, the log's cap).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use test_support::both_backends;
use todo_store::webhook::{WEBHOOKS_MAX, default_render};
use todo_store::{
    DeliveryStatus, Patch, Store, StoreError, TaskInput, TaskPatch, WebhookInput, WebhookPatch,
    WebhookPolicy,
};
use uuid::Uuid;

/// What a receiver got: path, headers, body.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    headers: hyper::HeaderMap,
    body: Bytes,
}

/// A receiver on 127.0.0.1. Paths: `/ok` answers 204; `/flaky` answers 500 to the first
/// attempt of each `webhook-id` and 200 after; `/fail` always 500; `/redirect` 302 to `/ok`;
/// `/hang` never answers; `/huge` 200 with 8 MiB of body.
#[derive(Clone)]
struct Receiver {
    base: String,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let (g, s) = (got.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (g, s) = (g.clone(), s.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (g, s) = (g.clone(), s.clone());
                        async move {
                            let path = req.uri().path().to_owned();
                            let headers = req.headers().clone();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let id = headers
                                .get("webhook-id")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            g.lock().unwrap().push(Got {
                                path: path.clone(),
                                headers,
                                body,
                            });
                            let n = {
                                let mut s = s.lock().unwrap();
                                let n = s.entry(id).or_insert(0);
                                *n += 1;
                                *n
                            };
                            let mut r = Response::new(Full::new(Bytes::new()));
                            match path.as_str() {
                                "/ok" => *r.status_mut() = hyper::StatusCode::NO_CONTENT,
                                "/flaky" if n == 1 => {
                                    *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR
                                }
                                "/flaky" => {}
                                "/redirect" => {
                                    *r.status_mut() = hyper::StatusCode::FOUND;
                                    r.headers_mut().insert("location", "/ok".parse().unwrap());
                                }
                                "/hang" => tokio::time::sleep(Duration::from_secs(3600)).await,
                                "/huge" => {
                                    *r.body_mut() = Full::new(Bytes::from(vec![b'x'; 8 << 20]))
                                }
                                _ => *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR,
                            }
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver { base, got }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn on(&self, path: &str) -> Vec<Got> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.path == path)
            .cloned()
            .collect()
    }
}

fn open_policy(retry_scale: f64) -> WebhookPolicy {
    WebhookPolicy {
        allow_http: true,
        allow_private: true,
        retry_scale,
    }
}

fn hook(url: &str, events: Option<&[&str]>) -> WebhookInput {
    WebhookInput {
        url: url.to_owned(),
        events: events.map(|e| e.iter().map(|s| s.to_string()).collect()),
        description: None,
    }
}

fn fields(e: StoreError) -> Vec<String> {
    match e {
        StoreError::Invalid(f) => f.into_iter().map(|f| f.field).collect(),
        other => panic!("expected a field error, got {other:?}"),
    }
}

/// Runs the sender until the future returned is dropped or `stop` is sent.
fn sender(store: &Store) -> tokio::sync::oneshot::Sender<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let s = store.clone();
    tokio::spawn(async move {
        s.run_webhook_sender(
            async {
                let _ = rx.await;
            },
            Arc::new(default_render),
            |_| {},
        )
        .await;
    });
    tx
}

async fn wait_for(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

both_backends! {
    async fn webhook_rules(store: Store) {
        let u = store.for_user("alice").unwrap();
        // The default policy: public https only.
        for bad in [
            "ftp://example.com/x",
            "http://example.com/x",
            "https://127.0.0.1/x",
            "https://localhost/x",
            "https://10.0.0.1/x",
            "https://[::1]/x",
            "not a url",
        ] {
            let e = u.create_webhook(hook(bad, None)).await.unwrap_err();
            assert_eq!(fields(e), vec!["url"], "{bad}");
        }
        let e = u
            .create_webhook(hook("https://example.com/h", Some(&["task.created", "task.exploded"])))
            .await
            .unwrap_err();
        assert_eq!(fields(e), vec!["events[1]"]);
        let e = u
            .create_webhook(hook("https://example.com/h", Some(&[])))
            .await
            .unwrap_err();
        assert_eq!(fields(e), vec!["events"]);
        let e = u
            .create_webhook(WebhookInput {
                url: "https://example.com/h".into(),
                events: None,
                description: Some("a\0b".into()),
            })
            .await
            .unwrap_err();
        assert_eq!(fields(e), vec!["description"]);
        assert!(u.webhooks().await.unwrap().is_empty(), "refused creates wrote nothing");

        let c = u
            .create_webhook(WebhookInput {
                url: "https://example.com/h".into(),
                events: Some(vec!["task.created".into(), "task.created".into()]),
                description: Some("  chat  ".into()),
            })
            .await
            .unwrap();
        use base64::Engine as _;
        let key = c.secret.strip_prefix("whsec_").expect("whsec_ prefix");
        assert_eq!(
            base64::engine::general_purpose::STANDARD.decode(key).unwrap().len(),
            32
        );
        assert_eq!(c.webhook.events, Some(vec!["task.created".to_owned()]));
        assert_eq!(c.webhook.description.as_deref(), Some("chat"));
        assert!(c.webhook.enabled);
        let other = u.create_webhook(hook("https://example.com/2", None)).await.unwrap();
        assert_ne!(other.secret, c.secret);
        assert_eq!(u.get_webhook(c.webhook.id).await.unwrap(), c.webhook);
        let all = u.webhooks().await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].id, c.webhook.id);

        // Another user's id is not found, for every operation.
        let bob = store.for_user("bob").unwrap();
        assert!(matches!(bob.get_webhook(c.webhook.id).await, Err(StoreError::NotFound)));
        assert!(matches!(
            bob.update_webhook(c.webhook.id, WebhookPatch::default()).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(bob.delete_webhook(c.webhook.id).await, Err(StoreError::NotFound)));
        assert!(matches!(
            bob.webhook_deliveries(c.webhook.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(bob.webhooks().await.unwrap().is_empty());

        let w = u
            .update_webhook(
                c.webhook.id,
                WebhookPatch {
                    events: Patch::Clear,
                    description: Patch::Clear,
                    enabled: Some(false),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!((w.events, w.description, w.enabled), (None, None, false));
        assert!(w.updated_at > c.webhook.updated_at);
        let e = u
            .update_webhook(
                c.webhook.id,
                WebhookPatch {
                    url: Some("https://169.254.169.254/latest".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(fields(e), vec!["url"]);
        assert_eq!(u.get_webhook(c.webhook.id).await.unwrap().url, "https://example.com/h");
        let e = u
            .update_webhook(
                c.webhook.id,
                WebhookPatch {
                    description: Patch::Set("\0".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(fields(e), vec!["description"]);
        assert_eq!(u.get_webhook(c.webhook.id).await.unwrap().description, None);

        for i in 2..WEBHOOKS_MAX {
            u.create_webhook(hook(&format!("https://example.com/{i}"), None))
                .await
                .unwrap();
        }
        let e = u.create_webhook(hook("https://example.com/11", None)).await.unwrap_err();
        assert_eq!(fields(e), vec!["webhooks"]);
        u.delete_webhook(c.webhook.id).await.unwrap();
        assert!(matches!(u.get_webhook(c.webhook.id).await, Err(StoreError::NotFound)));
        assert!(matches!(u.delete_webhook(c.webhook.id).await, Err(StoreError::NotFound)));
        assert_eq!(u.webhooks().await.unwrap().len() as i64, WEBHOOKS_MAX - 1);

        // The policy opens http and private addresses.
        store.set_webhook_policy(open_policy(1.0));
        u.create_webhook(hook("http://127.0.0.1:9/x", None)).await.unwrap();
    }

    async fn writes_queue_deliveries_in_their_transaction(store: Store) {
        store.set_webhook_policy(open_policy(1.0));
        let u = store.for_user("alice").unwrap();
        let all = u.create_webhook(hook("http://127.0.0.1:9/all", None)).await.unwrap();
        let deletions = u
            .create_webhook(hook("http://127.0.0.1:9/del", Some(&["task.deleted"])))
            .await
            .unwrap();
        let paused = u.create_webhook(hook("http://127.0.0.1:9/off", None)).await.unwrap();
        u.update_webhook(
            paused.webhook.id,
            WebhookPatch {
                enabled: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();

        // A plain create (PostgreSQL's single-statement path for users without webhooks).
        let t = u.create(TaskInput::titled("one")).await.unwrap();
        let log = u.webhook_deliveries(all.webhook.id).await.unwrap();
        let mut types: Vec<&str> = log.iter().map(|d| d.event_type.as_str()).collect();
        types.sort();
        assert_eq!(types, ["list.updated", "task.created"]);
        assert!(log.iter().all(|d| d.status == DeliveryStatus::Pending && d.attempts == 0));
        // A plain patch (the other single-statement path).
        u.patch(
            t.id,
            TaskPatch {
                title: Some("two".into()),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
        let log = u.webhook_deliveries(all.webhook.id).await.unwrap();
        assert_eq!(log.len(), 3);
        assert_eq!(log[0].event_type, "task.updated", "newest first");
        // A refused write queues nothing.
        let e = u
            .patch(
                t.id,
                TaskPatch {
                    title: Some("   ".into()),
                    ..Default::default()
                },
                None,
            )
            .await;
        assert!(e.is_err());
        assert_eq!(u.webhook_deliveries(all.webhook.id).await.unwrap().len(), 3);
        assert!(u.webhook_deliveries(deletions.webhook.id).await.unwrap().is_empty());
        u.delete(t.id, None).await.unwrap();
        let del = u.webhook_deliveries(deletions.webhook.id).await.unwrap();
        assert_eq!(del.len(), 1);
        assert_eq!(del[0].event_type, "task.deleted");
        assert!(u.webhook_deliveries(paused.webhook.id).await.unwrap().is_empty());
        // Another user's writes reach none of them.
        let bob = store.for_user("bob").unwrap();
        bob.create(TaskInput::titled("bob's")).await.unwrap();
        assert_eq!(u.webhook_deliveries(all.webhook.id).await.unwrap().len(), 5);
        assert_eq!(store.pending_webhook_deliveries().await.unwrap(), 6);
    }

    async fn the_sender_signs_retries_and_records(store: Store) {
        store.set_webhook_policy(open_policy(0.001));
        let rx = Receiver::start().await;
        let u = store.for_user("alice").unwrap();
        let ok = u
            .create_webhook(hook(&rx.url("/ok"), Some(&["task.created"])))
            .await
            .unwrap();
        let flaky = u
            .create_webhook(hook(&rx.url("/flaky"), Some(&["task.created"])))
            .await
            .unwrap();
        let redirect = u
            .create_webhook(hook(&rx.url("/redirect"), Some(&["task.created"])))
            .await
            .unwrap();
        let huge = u
            .create_webhook(hook(&rx.url("/huge"), Some(&["task.created"])))
            .await
            .unwrap();
        let t = u.create(TaskInput::titled("signed")).await.unwrap();
        let stop = sender(&store);
        wait_for("deliveries", Duration::from_secs(20), async || {
            let f = u.webhook_deliveries(flaky.webhook.id).await.unwrap();
            let o = u.webhook_deliveries(ok.webhook.id).await.unwrap();
            let h = u.webhook_deliveries(huge.webhook.id).await.unwrap();
            f[0].status == DeliveryStatus::Delivered
                && o[0].status == DeliveryStatus::Delivered
                && h[0].status == DeliveryStatus::Delivered
        })
        .await;

        let got = rx.on("/ok");
        assert_eq!(got.len(), 1);
        let g = &got[0];
        let verifier = standardwebhooks::Webhook::new(&ok.secret).unwrap();
        verifier.verify(&g.body, &g.headers).expect("the signature verifies");
        let wrong = standardwebhooks::Webhook::new(&flaky.secret).unwrap();
        assert!(wrong.verify(&g.body, &g.headers).is_err(), "signed with its own secret");
        let body: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
        assert_eq!(body["type"], "task.created");
        assert_eq!(body["data"]["task"]["id"], t.id.to_string());
        assert_eq!(body["data"]["task"]["title"], "signed");
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
        let log = u.webhook_deliveries(ok.webhook.id).await.unwrap();
        assert_eq!(g.headers["webhook-id"], log[0].id.to_string().as_str());
        assert_eq!((log[0].attempts, log[0].last_response_status), (1, Some(204)));
        assert_eq!(log[0].next_attempt_at, None);

        // The retry carries the same webhook-id, and is signed anew.
        let f = rx.on("/flaky");
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].headers["webhook-id"], f[1].headers["webhook-id"]);
        let fv = standardwebhooks::Webhook::new(&flaky.secret).unwrap();
        fv.verify(&f[1].body, &f[1].headers).unwrap();
        let log = u.webhook_deliveries(flaky.webhook.id).await.unwrap();
        assert_eq!((log[0].attempts, log[0].last_response_status), (2, Some(200)));

        // A redirect is not followed: it is a failed attempt, retried.
        wait_for("redirect retries", Duration::from_secs(10), async || {
            let l = u.webhook_deliveries(redirect.webhook.id).await.unwrap();
            l[0].attempts >= 2
        })
        .await;
        let l = u.webhook_deliveries(redirect.webhook.id).await.unwrap();
        assert_eq!(l[0].status, DeliveryStatus::Pending);
        assert_eq!(l[0].last_response_status, Some(302));
        assert_eq!(rx.on("/ok").len(), 1, "the redirect's target was never posted to");
        let _ = stop.send(());
    }

    async fn a_delivery_fails_after_the_schedule(store: Store) {
        store.set_webhook_policy(open_policy(0.0001));
        let rx = Receiver::start().await;
        let u = store.for_user("alice").unwrap();
        let w = u
            .create_webhook(hook(&rx.url("/fail"), Some(&["task.created"])))
            .await
            .unwrap();
        u.create(TaskInput::titled("doomed")).await.unwrap();
        let stop = sender(&store);
        wait_for("failure", Duration::from_secs(30), async || {
            u.webhook_deliveries(w.webhook.id).await.unwrap()[0].status == DeliveryStatus::Failed
        })
        .await;
        let l = u.webhook_deliveries(w.webhook.id).await.unwrap();
        assert_eq!((l[0].attempts, l[0].last_response_status), (8, Some(500)));
        assert_eq!(l[0].next_attempt_at, None);
        assert_eq!(rx.on("/fail").len(), 8);
        let _ = stop.send(());
    }

    async fn a_hanging_receiver_delays_no_one_else(store: Store) {
        store.set_webhook_policy(open_policy(1.0));
        let rx = Receiver::start().await;
        let slow = store.for_user("slow").unwrap();
        slow.create_webhook(hook(&rx.url("/hang"), None)).await.unwrap();
        for i in 0..30 {
            slow.create(TaskInput::titled(format!("t{i}"))).await.unwrap();
        }
        let stop = sender(&store);
        // The hanging receiver now holds its share of the sender.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let fast = store.for_user("fast").unwrap();
        let w = fast
            .create_webhook(hook(&rx.url("/ok"), Some(&["task.created"])))
            .await
            .unwrap();
        let start = Instant::now();
        fast.create(TaskInput::titled("quick")).await.unwrap();
        wait_for("the fast user's delivery", Duration::from_secs(3), async || {
            fast.webhook_deliveries(w.webhook.id).await.unwrap()[0].status
                == DeliveryStatus::Delivered
        })
        .await;
        assert!(start.elapsed() < Duration::from_secs(3));
        assert!(rx.on("/hang").len() <= todo_store::webhook::PER_WEBHOOK_CONCURRENCY);
        let _ = stop.send(());
    }

    async fn a_reminder_firing_is_delivered(store: Store) {
        store.set_webhook_policy(open_policy(1.0));
        let rx = Receiver::start().await;
        let u = store.for_user("alice").unwrap();
        let w = u
            .create_webhook(hook(&rx.url("/ok"), Some(&["reminder.fired"])))
            .await
            .unwrap();
        let at = todo_store::task::truncate_ms(chrono::Utc::now() + chrono::Duration::hours(1));
        let t = u
            .create(TaskInput {
                title: "call".into(),
                reminders: vec![todo_store::ReminderInput::At(at)],
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(u.webhook_deliveries(w.webhook.id).await.unwrap().is_empty());
        let fired = store
            .fire_due_reminders(at + chrono::Duration::seconds(1), 100)
            .await
            .unwrap();
        assert_eq!(fired.len(), 1);
        let log = u.webhook_deliveries(w.webhook.id).await.unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].event_type, "reminder.fired");
        let stop = sender(&store);
        wait_for("the reminder's delivery", Duration::from_secs(10), async || {
            !rx.on("/ok").is_empty()
        })
        .await;
        let g = &rx.on("/ok")[0];
        standardwebhooks::Webhook::new(&w.secret)
            .unwrap()
            .verify(&g.body, &g.headers)
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
        assert_eq!(body["type"], "reminder.fired");
        assert_eq!(body["data"]["task"]["id"], t.id.to_string());
        assert_eq!(body["data"]["reminder"]["id"], t.reminders[0].id.to_string());
        assert_eq!(
            body["data"]["scheduled_for"],
            at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
        let _ = stop.send(());
    }

    async fn the_log_keeps_the_latest_hundred(store: Store) {
        store.set_webhook_policy(open_policy(1.0));
        let rx = Receiver::start().await;
        let u = store.for_user("alice").unwrap();
        let w = u
            .create_webhook(hook(&rx.url("/ok"), Some(&["task.created"])))
            .await
            .unwrap();
        let mut created = Vec::new();
        for i in 0..110 {
            created.push(u.create(TaskInput::titled(format!("t{i}"))).await.unwrap().id);
        }
        let stop = sender(&store);
        wait_for("all sent", Duration::from_secs(30), async || {
            rx.on("/ok").len() >= 110 && store.pending_webhook_deliveries().await.unwrap() == 0
        })
        .await;
        let log = u.webhook_deliveries(w.webhook.id).await.unwrap();
        assert_eq!(log.len(), 100);
        assert!(log.windows(2).all(|p| p[0].id > p[1].id), "newest first");
        // Exactly one attempt per event, one webhook-id each.
        let mut ids: Vec<String> = rx
            .on("/ok")
            .iter()
            .map(|g| g.headers["webhook-id"].to_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 110);
        let last: Uuid = ids.iter().map(|i| i.parse::<Uuid>().unwrap()).max().unwrap();
        assert_eq!(log[0].id, last);
        let _ = stop.send(());
    }
}

/// Two senders (two instances) on one PostgreSQL database: every delivery is sent, and none is
/// sent by both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
async fn two_senders_share_the_outbox() {
    let db = test_support::TestDb::postgres().await;
    let a = db.store().await;
    let b = Store::connect(&db.url).await.unwrap();
    for s in [&a, &b] {
        s.set_webhook_policy(open_policy(1.0));
    }
    let rx = Receiver::start().await;
    let mut users = Vec::new();
    for i in 0..10 {
        let u = a.for_user(&format!("u{i}")).unwrap();
        u.create_webhook(hook(&rx.url("/ok"), Some(&["task.created"])))
            .await
            .unwrap();
        users.push(u);
    }
    for u in &users {
        for i in 0..30 {
            u.create(TaskInput::titled(format!("t{i}"))).await.unwrap();
        }
    }
    let (s1, s2) = (sender(&a), sender(&b));
    wait_for("300 deliveries", Duration::from_secs(30), async || {
        a.pending_webhook_deliveries().await.unwrap() == 0
    })
    .await;
    let got = rx.on("/ok");
    let mut ids: Vec<String> = got
        .iter()
        .map(|g| g.headers["webhook-id"].to_str().unwrap().to_owned())
        .collect();
    ids.sort();
    let n = ids.len();
    ids.dedup();
    assert_eq!((n, ids.len()), (300, 300), "each delivery sent once");
    let _ = (s1.send(()), s2.send(()));
    b.close().await;
    a.close().await;
    db.cleanup().await;
}
