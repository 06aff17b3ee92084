//! Database outage: a TCP proxy between the API and PostgreSQL is cut mid-load and restored.
//! Requests during the cut get 503 problems within the configured timeouts (never a 500, never a
//! hang), `/readyz` says 503, and the API recovers by itself once the proxy is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use poem::http::StatusCode;
use poem::test::TestClient;
use poem::{EndpointExt, endpoint::BoxEndpoint};
use serde_json::json;
use todo_http::TodoApi;
use todo_http::auth::{JwtAuthenticator, JwtConfig, mint_hs256};
use todo_store::{Store, StoreOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const SECRET: &str = "outage-test-secret-0123456789abcdef0123";

/// A TCP proxy to `upstream` that can drop every connection and refuse new ones.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    /// Bumped on every cut: live connections watch it and close.
    generation: watch::Sender<u64>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let (c, g) = (cut.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if c.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let mut rx = g.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.changed() => {}
                    }
                });
            }
        });
        Proxy {
            port,
            cut,
            generation,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: cargo test --workspace -- --include-ignored"]
async fn postgres_outage_is_503_and_recovers() {
    let db = test_support::TestDb::postgres().await;
    // Migrate directly, then route the API's pool through the proxy.
    db.store().await.close().await;
    let upstream = {
        let after = db.url.split_once('@').map(|(_, a)| a).unwrap_or(&db.url);
        after
            .split('/')
            .next()
            .unwrap_or("127.0.0.1:5432")
            .to_owned()
    };
    let proxy = Proxy::start(upstream.clone()).await;
    let proxied = db
        .url
        .replacen(&upstream, &format!("127.0.0.1:{}", proxy.port), 1);
    let acquire = Duration::from_millis(800);
    let store = Store::connect_with(
        &proxied,
        &StoreOptions {
            acquire_timeout: acquire,
            statement_timeout: Some(Duration::from_secs(2)),
            max_connections: Some(4),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let auth = JwtAuthenticator::new(JwtConfig::hs256(SECRET))
        .await
        .unwrap();
    let app: BoxEndpoint<'static, poem::Response> = TodoApi::builder(store)
        .authenticator(auth)
        .readiness_timeout(Duration::from_secs(1))
        .build()
        .boxed();
    let client = TestClient::new(app);
    let token = mint_hs256(SECRET, "alice", Duration::from_secs(600)).unwrap();
    let bearer = format!("Bearer {token}");
    let list = || {
        client
            .get("/api/alice/tasks")
            .header("authorization", &bearer)
            .send()
    };
    let create = || {
        client
            .post("/api/alice/tasks")
            .header("authorization", &bearer)
            .content_type("application/json")
            .body(json!({"title": "during load"}).to_string())
            .send()
    };

    for _ in 0..5 {
        assert_eq!(create().await.0.status(), StatusCode::CREATED);
    }
    assert_eq!(list().await.0.status(), StatusCode::OK);

    // Cut mid-load: every answer is 503 problem+json, fast, never a 500.
    proxy.cut();
    let bound = acquire + Duration::from_secs(3);
    for i in 0..6 {
        let start = Instant::now();
        let resp = if i % 2 == 0 {
            list().await
        } else {
            create().await
        }
        .0;
        let took = start.elapsed();
        assert_eq!(
            resp.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "request {i} during the cut"
        );
        assert_eq!(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
        assert!(resp.headers().contains_key("retry-after"));
        assert!(
            took < bound,
            "request {i} hung for {took:?} (bound {bound:?})"
        );
    }
    assert_eq!(
        client.get("/readyz").send().await.0.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        client.get("/healthz").send().await.0.status(),
        StatusCode::OK
    );

    // Restore: the API recovers by itself, with the data written before the cut intact.
    proxy.restore();
    let start = Instant::now();
    loop {
        let resp = list().await.0;
        if resp.status() == StatusCode::OK {
            let body: serde_json::Value =
                serde_json::from_slice(&resp.into_body().into_bytes().await.unwrap()).unwrap();
            assert_eq!(
                body["meta"]["total"], 5,
                "nothing lost, nothing half-written"
            );
            break;
        }
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no recovery within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = start.elapsed();
    assert_eq!(
        client.get("/readyz").send().await.0.status(),
        StatusCode::OK
    );
    assert_eq!(create().await.0.status(), StatusCode::CREATED);
    eprintln!("recovered {recovered:?} after the proxy came back");
    db.cleanup().await;
}
