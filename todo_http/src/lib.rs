//! The HTTP API of a [`todo_store::Store`]: poem + poem-openapi, JWT auth, problem+json errors,
//! Swagger UI at `/docs` and the spec at `/openapi.json` and `/openapi.yaml`.
//!
//! ```no_run
//! use todo_http::{TodoApi, auth::{JwtAuthenticator, JwtConfig}};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = todo_store::Store::connect("sqlite://todo.db").await?;
//! store.migrate().await?;
//! let auth = JwtAuthenticator::new(JwtConfig::hs256("a long shared secret")).await?;
//! let app = TodoApi::builder(store).authenticator(auth).build();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let opts = todo_http::server::ServeOptions::default();
//! todo_http::server::serve(listener, app, &opts, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod api;
pub mod auth;
pub mod body;
pub mod events;
pub mod idempotency;
pub mod metrics;
mod ops;
pub mod payload;
pub mod problem;
pub mod reminders;
pub mod server;
pub mod sync;
pub mod types;
pub mod webhooks;

use std::sync::Arc;
use std::time::{Duration, Instant};

use poem::http::{Method, StatusCode, header};
use poem::middleware::{Compression, Cors};
use poem::web::CompressionAlgo;
use poem::{Endpoint, EndpointExt, IntoEndpoint, IntoResponse, Request, Response, Route, get};
use poem_openapi::OpenApiService;
use todo_store::Store;

pub use api::{Authed, TasksApi};
pub use auth::{AuthError, Authenticator, Principal};
pub use events::EventOptions;
pub use ops::OpsApi;
pub use problem::Problem;

/// Version string written into the spec.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Builds the API endpoint.
pub struct TodoApi;

impl TodoApi {
    /// Starts a builder over a store.
    pub fn builder(store: Store) -> TodoApiBuilder {
        TodoApiBuilder {
            store,
            authenticator: None,
            cors_origins: Vec::new(),
            mount_path: String::new(),
            readiness_timeout: READINESS_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_active: DEFAULT_MAX_ACTIVE,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            events: EventOptions::default(),
        }
    }

    /// The OpenAPI document as JSON (no database is touched).
    pub async fn spec_json() -> Result<String, todo_store::StoreError> {
        Ok(spec_service(
            "",
            Store::connect("sqlite::memory:").await?,
            READINESS_TIMEOUT,
            Arc::new(Limits::new(DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_ACTIVE)),
            EventOptions::default(),
        )
        .spec())
    }

    /// The OpenAPI document as YAML (no database is touched).
    pub async fn spec_yaml() -> Result<String, todo_store::StoreError> {
        Ok(spec_service(
            "",
            Store::connect("sqlite::memory:").await?,
            READINESS_TIMEOUT,
            Arc::new(Limits::new(DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_ACTIVE)),
            EventOptions::default(),
        )
        .spec_yaml())
    }
}

/// How long `/readyz` waits for the database by default.
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

fn spec_service(
    mount_path: &str,
    store: Store,
    readiness_timeout: Duration,
    limits: Arc<Limits>,
    events: EventOptions,
) -> OpenApiService<
    (
        TasksApi,
        sync::SyncApi,
        OpsApi,
        events::EventsApi,
        webhooks::WebhooksApi,
    ),
    (),
> {
    let server = if mount_path.is_empty() {
        "/".to_owned()
    } else {
        mount_path.to_owned()
    };
    let ops = OpsApi {
        store: store.clone(),
        readiness_timeout,
        limits,
    };
    let sync = sync::SyncApi {
        store: store.clone(),
    };
    let events = events::EventsApi::new(store.clone(), events);
    let webhooks = webhooks::WebhooksApi {
        store: store.clone(),
    };
    OpenApiService::new(
        (TasksApi { store }, sync, ops, events, webhooks),
        "Todo API",
        API_VERSION,
    )
        .description(
            "Multi-user task API. Every `/api/{user_id}/…` route needs `Authorization: Bearer <JWT>` \
             whose `sub` equals `{user_id}`. Success bodies are `{\"data\": …}` envelopes; errors are \
             `application/problem+json` (RFC 9457). Writes accept `If-Match: \"<version>\"`.",
        )
        .server(server)
}

/// Configures the API before it is built.
pub struct TodoApiBuilder {
    store: Store,
    authenticator: Option<Arc<dyn Authenticator>>,
    cors_origins: Vec<String>,
    mount_path: String,
    readiness_timeout: Duration,
    max_in_flight: usize,
    max_active: usize,
    body_read_timeout: Duration,
    events: EventOptions,
}

/// Requests handled at once before more are shed with 503 (see
/// [`TodoApiBuilder::max_in_flight`]).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4096;

/// Requests processed at once (see [`TodoApiBuilder::max_active`]).
pub const DEFAULT_MAX_ACTIVE: usize = 64;

/// How long a request body may take to arrive (see [`TodoApiBuilder::body_read_timeout`]).
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Rejects every request: used when no authenticator was configured.
struct DenyAll;

#[async_trait::async_trait]
impl Authenticator for DenyAll {
    async fn authenticate(&self, _req: &Request) -> Result<Principal, AuthError> {
        Err(AuthError::Invalid("no authentication is configured".into()))
    }
}

impl TodoApiBuilder {
    /// How requests are authenticated (JWT, or the host's own scheme). Without one, every
    /// `/api/…` request is 401.
    pub fn authenticator(mut self, a: impl Authenticator) -> Self {
        self.authenticator = Some(Arc::new(a));
        self
    }

    /// Same as [`authenticator`](Self::authenticator) for a shared one.
    pub fn shared_authenticator(mut self, a: Arc<dyn Authenticator>) -> Self {
        self.authenticator = Some(a);
        self
    }

    /// Browser origins allowed by CORS (`*` for any). Empty: no CORS headers.
    pub fn cors_origins<I: IntoIterator<Item = S>, S: Into<String>>(mut self, origins: I) -> Self {
        self.cors_origins = origins.into_iter().map(Into::into).collect();
        self
    }

    /// The path the host mounts the API under (e.g. `/todo`), so the spec's server URL and
    /// Swagger UI point at the right place. Default: the root.
    pub fn mount_path(mut self, path: impl Into<String>) -> Self {
        self.mount_path = path.into().trim_end_matches('/').to_owned();
        self
    }

    /// How long `/readyz` waits for the database.
    pub fn readiness_timeout(mut self, t: Duration) -> Self {
        self.readiness_timeout = t;
        self
    }

    /// Most requests accepted at once, waiting or active (see [`max_active`](Self::max_active));
    /// beyond it requests are answered at once with 503 and `Retry-After: 1` instead of
    /// queueing without bound (default [`DEFAULT_MAX_IN_FLIGHT`]).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Most requests processed at once; further accepted requests wait their turn (first come,
    /// first served) before anything else is done for them (default [`DEFAULT_MAX_ACTIVE`]).
    /// With a database pool of a few connections, more active requests only wait inside the
    /// pool, each holding its parsed request and handler state: queueing them here instead keeps
    /// memory flat however many clients are connected. [`max_in_flight`](Self::max_in_flight)
    /// counts waiting and active requests together.
    pub fn max_active(mut self, n: usize) -> Self {
        self.max_active = n.max(1);
        self
    }

    /// How long a request body may take to arrive in full; a slower one is answered 408
    /// (default [`DEFAULT_BODY_READ_TIMEOUT`]).
    pub fn body_read_timeout(mut self, t: Duration) -> Self {
        self.body_read_timeout = t;
        self
    }

    /// Settings of `GET /api/{user_id}/events`: keep-alive interval, stream cap, and the
    /// shutdown token that ends every stream (cancel it when a graceful shutdown starts, or
    /// the drain waits for streams that never end on their own).
    pub fn events(mut self, options: EventOptions) -> Self {
        self.events = options;
        self
    }

    /// The endpoint: `/api/…`, `/docs`, `/openapi.json`, `/openapi.yaml`, `/healthz`, `/readyz`.
    pub fn build(self) -> impl Endpoint<Output = Response> + 'static {
        let limits = Arc::new(Limits::new(self.max_in_flight, self.max_active));
        // Install the metrics recorder now, so requests are counted from the first one on.
        let _ = metrics::prometheus();
        let service = spec_service(
            &self.mount_path,
            self.store.clone(),
            self.readiness_timeout,
            limits.clone(),
            self.events.clone(),
        );
        let spec_json = service.spec();
        let spec_yaml = service.spec_yaml();
        let docs = LazyDocs {
            mount_path: self.mount_path.clone(),
            store: self.store.clone(),
            built: std::sync::OnceLock::new(),
        };
        // The operations, under `/api` and at the two probe paths (outside `/api`, no token).
        let operations = Arc::new(service.into_endpoint());
        let authenticator = self
            .authenticator
            .unwrap_or_else(|| Arc::new(DenyAll) as Arc<dyn Authenticator>);
        let idem = Arc::new(idempotency::Ctx {
            store: self.store.clone(),
            auth: authenticator.clone(),
        });
        let auth = api::AuthHandle(authenticator);
        // Swagger UI (1.6 MB) and the spec are gzipped for clients that accept it.
        let gzip = || Compression::new().algorithms([CompressionAlgo::GZIP]);
        let route = Route::new()
            .nest_no_strip("/api", operations.clone())
            .at("/healthz", operations.clone())
            .at("/readyz", operations.clone())
            .at("/metrics", operations)
            .nest("/docs", docs.with(gzip()))
            .at(
                "/openapi.json",
                get(StaticBody(Arc::new(spec_json), "application/json")).with(gzip()),
            )
            .at(
                "/openapi.yaml",
                get(StaticBody(Arc::new(spec_yaml), "application/yaml")).with(gzip()),
            );
        let cors = (!self.cors_origins.is_empty()).then(|| {
            let mut c = Cors::new()
                .allow_methods([
                    Method::GET,
                    Method::POST,
                    Method::PUT,
                    Method::PATCH,
                    Method::DELETE,
                    Method::OPTIONS,
                ])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::IF_MATCH,
                    header::CONTENT_TYPE,
                    header::HeaderName::from_static("idempotency-key"),
                    header::HeaderName::from_static("last-event-id"),
                ])
                .expose_headers([
                    header::ETAG,
                    header::LOCATION,
                    header::RETRY_AFTER,
                    header::HeaderName::from_static("idempotent-replayed"),
                ])
                .max_age(600);
            if !self.cors_origins.iter().any(|o| o == "*") {
                for o in &self.cors_origins {
                    c = c.allow_origin(o.as_str());
                }
            }
            c
        });
        route
            .data(auth)
            .data(body::ReadTimeout(self.body_read_timeout))
            .around(problems)
            .around(move |next, req| idempotency::around(next, req, idem.clone()))
            .with_if(cors.is_some(), cors.unwrap_or_default())
            .with(poem::middleware::CatchPanic::new().with_handler(|_| {
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
            }))
            .around(move |next, req| admit(next, req, limits.clone()))
            .around(trace)
            .map_to_response()
    }
}

/// Swagger UI, built on its first request: the page embeds the whole Swagger UI bundle (about
/// 1.6 MB), which built up front would be a few MB of every server's memory, used or not.
struct LazyDocs {
    mount_path: String,
    store: Store,
    built: std::sync::OnceLock<poem::endpoint::BoxEndpoint<'static>>,
}

impl Endpoint for LazyDocs {
    type Output = Response;
    async fn call(&self, req: Request) -> poem::Result<Response> {
        let docs = self.built.get_or_init(|| {
            // Only the page is served from here: the operations it calls are the API's own.
            let limits = Arc::new(Limits::new(1, 1));
            spec_service(
                &self.mount_path,
                self.store.clone(),
                READINESS_TIMEOUT,
                limits,
                EventOptions::default(),
            )
            .swagger_ui()
            .map_to_response()
            .boxed()
        });
        docs.call(req).await
    }
}

struct StaticBody(Arc<String>, &'static str);

impl Endpoint for StaticBody {
    type Output = Response;
    async fn call(&self, _req: Request) -> poem::Result<Response> {
        Ok(Response::builder()
            .content_type(self.1)
            .body(self.0.as_str().to_owned()))
    }
}

/// Turns every error, and every error response that is not already problem+json (unknown
/// routes, wrong methods, poem's own rejections), into a problem+json response.
async fn problems<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let route = route_of(req.uri().path());
    // Parameter errors become 400s naming the parameter; other errors render themselves (ours
    // as problem+json with their headers), and foreign ones are rewritten below.
    let resp = match next.call(req).await {
        Ok(r) => r.into_response(),
        Err(e)
            if e.is::<poem_openapi::error::ParseParamError>()
                || e.is::<poem_openapi::error::ParsePathError>() =>
        {
            Problem::from_poem_named(e, &path_params(route)).into_response()
        }
        Err(e) => e.into_response(),
    };
    let status = resp.status();
    if status.is_client_error() || status.is_server_error() {
        let is_problem = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with(problem::PROBLEM_JSON));
        if !is_problem {
            let detail = match status {
                StatusCode::NOT_FOUND => "no such route".to_owned(),
                StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route".to_owned(),
                s => s.canonical_reason().unwrap_or("error").to_owned(),
            };
            let mut p = Problem::new(status, detail);
            if status == StatusCode::METHOD_NOT_ALLOWED
                && let Some(allow) = allowed_methods(route)
            {
                p.headers
                    .push((header::ALLOW, poem::http::HeaderValue::from_static(allow)));
            }
            for name in [header::ALLOW, header::WWW_AUTHENTICATE, header::RETRY_AFTER] {
                if let Some(v) = resp.headers().get(&name) {
                    p.headers.push((name, v.clone()));
                }
            }
            return Ok(p.into_response());
        }
    }
    Ok(resp)
}

/// Admission limits of one endpoint.
pub(crate) struct Limits {
    /// Requests accepted (waiting or active).
    in_flight: tokio::sync::Semaphore,
    /// Requests being processed.
    active: tokio::sync::Semaphore,
    max_in_flight: usize,
    max_active: usize,
}

impl Limits {
    pub(crate) fn new(max_in_flight: usize, max_active: usize) -> Self {
        Limits {
            in_flight: tokio::sync::Semaphore::new(max_in_flight),
            active: tokio::sync::Semaphore::new(max_active),
            max_in_flight,
            max_active,
        }
    }

    /// Requests in flight (accepted, not answered) and, of those, waiting for a slot.
    pub(crate) fn load(&self) -> (usize, usize) {
        let in_flight = self
            .max_in_flight
            .saturating_sub(self.in_flight.available_permits());
        let active = self
            .max_active
            .saturating_sub(self.active.available_permits());
        (in_flight, in_flight.saturating_sub(active))
    }
}

/// Sheds load (a request that finds every in-flight permit taken is answered 503 at once) and
/// queues the rest until one of the `max_active` slots is free.
async fn admit<E: Endpoint>(next: E, req: Request, limits: Arc<Limits>) -> poem::Result<Response> {
    let Ok(_in_flight) = limits.in_flight.try_acquire() else {
        tracing::warn!("shedding load: too many requests in flight");
        return Ok(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is at capacity; retry shortly",
        )
        .with_header(
            header::RETRY_AFTER,
            poem::http::HeaderValue::from_static("1"),
        )
        .into_response());
    };
    let Ok(_active) = limits.active.acquire().await else {
        return Ok(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response());
    };
    // Boxed, and only now: the future of everything inside (routing, extractors, the handler,
    // the store) is large, and stored inline it would be allocated with this one while the
    // request still waits for its turn above.
    Box::pin(next.call(req))
        .await
        .map(IntoResponse::into_response)
}

/// The route template of a path (`/api/{user_id}/tasks/{task_id}`), so logs and metrics never
/// carry ids; `unmatched` for paths no route serves (a bounded set of labels).
fn route_of(path: &str) -> &'static str {
    let mut segs = path.split('/').skip(1);
    match (
        segs.next(),
        segs.next(),
        segs.next(),
        segs.next(),
        segs.next(),
        segs.next(),
    ) {
        (Some("api"), Some(_), Some("tasks"), None, ..) => "/api/{user_id}/tasks",
        (Some("api"), Some(_), Some("tasks"), Some(_), None, _) => "/api/{user_id}/tasks/{task_id}",
        (Some("api"), Some(_), Some("tasks"), Some(_), Some("complete"), None) => {
            "/api/{user_id}/tasks/{task_id}/complete"
        }
        (Some("api"), Some(_), Some("tasks"), Some(_), Some("move"), None) => {
            "/api/{user_id}/tasks/{task_id}/move"
        }
        (Some("api"), Some(_), Some("lists"), None, ..) => "/api/{user_id}/lists",
        (Some("api"), Some(_), Some("lists"), Some(_), None, _) => "/api/{user_id}/lists/{list_id}",
        (Some("api"), Some(_), Some("lists"), Some(_), Some("move"), None) => {
            "/api/{user_id}/lists/{list_id}/move"
        }
        (Some("api"), Some(_), Some("tags"), None, ..) => "/api/{user_id}/tags",
        (Some("api"), Some(_), Some("changes"), None, ..) => "/api/{user_id}/changes",
        (Some("api"), Some(_), Some("batch"), None, ..) => "/api/{user_id}/batch",
        (Some("api"), Some(_), Some("events"), None, ..) => "/api/{user_id}/events",
        (Some("api"), Some(_), Some("webhooks"), None, ..) => "/api/{user_id}/webhooks",
        (Some("api"), Some(_), Some("webhooks"), Some(_), None, _) => {
            "/api/{user_id}/webhooks/{webhook_id}"
        }
        (Some("api"), Some(_), Some("webhooks"), Some(_), Some("deliveries"), None) => {
            "/api/{user_id}/webhooks/{webhook_id}/deliveries"
        }
        (Some("healthz"), None, ..) => "/healthz",
        (Some("readyz"), None, ..) => "/readyz",
        (Some("metrics"), None, ..) => "/metrics",
        (Some("openapi.json"), None, ..) => "/openapi.json",
        (Some("openapi.yaml"), None, ..) => "/openapi.yaml",
        (Some("docs"), ..) => "/docs",
        _ => "unmatched",
    }
}

/// The names of a route template's path parameters, in order (`["user_id", "list_id"]`).
fn path_params(route: &'static str) -> Vec<&'static str> {
    route
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

/// The methods a route template answers, for `Allow` on 405 responses.
pub(crate) fn allowed_methods(route: &str) -> Option<&'static str> {
    match route.strip_prefix("/api/{user_id}").unwrap_or(route) {
        "/tasks" | "/lists" | "/webhooks" => Some("GET, POST"),
        "/tasks/{task_id}" => Some("GET, PUT, PATCH, DELETE"),
        "/tasks/{task_id}/complete" => Some("PATCH"),
        "/tasks/{task_id}/move" | "/lists/{list_id}/move" | "/batch" => Some("POST"),
        "/lists/{list_id}" | "/webhooks/{webhook_id}" => Some("GET, PATCH, DELETE"),
        "/tags"
        | "/changes"
        | "/events"
        | "/webhooks/{webhook_id}/deliveries"
        | "/healthz"
        | "/readyz"
        | "/metrics"
        | "/openapi.json"
        | "/openapi.yaml" => Some("GET"),
        _ => None,
    }
}

/// One span per request: method, route template, status and latency. Never headers or bodies.
async fn trace<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let method = req.method().clone();
    let route = route_of(req.uri().path());
    let span = tracing::info_span!("request", %method, route);
    let _enter = span.enter();
    let start = Instant::now();
    drop(_enter);
    let resp = match next.call(req).await {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    };
    let took = start.elapsed();
    metrics::record_request(&method, route, resp.status(), took);
    let _enter = span.enter();
    tracing::info!(
        status = resp.status().as_u16(),
        latency_ms = latency_ms(took),
        "request"
    );
    Ok(resp)
}

/// Milliseconds rounded to whole microseconds, so logs read `0.242` rather than
/// `0.24233100000000002`.
fn latency_ms(elapsed: Duration) -> f64 {
    elapsed.as_micros() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn latency_is_whole_microseconds() {
        use std::time::Duration;
        assert_eq!(
            super::latency_ms(Duration::from_nanos(242_331)).to_string(),
            "0.242"
        );
        assert_eq!(
            super::latency_ms(Duration::from_micros(1_500_250)).to_string(),
            "1500.25"
        );
        assert_eq!(super::latency_ms(Duration::ZERO).to_string(), "0");
    }

    #[test]
    fn routes_hide_ids() {
        assert_eq!(
            super::route_of("/api/alice/tasks/0190c3a8-7d4e-7b3a-9f21-5c6d7e8f9a0b/complete"),
            "/api/{user_id}/tasks/{task_id}/complete"
        );
        assert_eq!(super::route_of("/api/bob/tags"), "/api/{user_id}/tags");
        assert_eq!(super::route_of("/api/bob/events"), "/api/{user_id}/events");
        assert_eq!(super::allowed_methods("/api/{user_id}/events"), Some("GET"));
        assert_eq!(super::route_of("/healthz"), "/healthz");
        assert_eq!(super::route_of("/api/bob/tasks"), "/api/{user_id}/tasks");
        assert_eq!(
            super::route_of("/api/bob/tasks/x"),
            "/api/{user_id}/tasks/{task_id}"
        );
        assert_eq!(super::route_of("/docs/index.css"), "/docs");
        assert_eq!(super::route_of("/api/bob/tasks/x/y"), "unmatched");
        assert_eq!(
            super::route_of("/api/bob/tasks/x/move"),
            "/api/{user_id}/tasks/{task_id}/move"
        );
        assert_eq!(super::route_of("/api/bob/lists"), "/api/{user_id}/lists");
        assert_eq!(
            super::route_of("/api/bob/lists/x"),
            "/api/{user_id}/lists/{list_id}"
        );
        assert_eq!(
            super::route_of("/api/bob/lists/x/move"),
            "/api/{user_id}/lists/{list_id}/move"
        );
        assert_eq!(super::route_of("/api/bob/lists/x/complete"), "unmatched");
        assert_eq!(
            super::route_of("/api/bob/webhooks"),
            "/api/{user_id}/webhooks"
        );
        assert_eq!(
            super::route_of("/api/bob/webhooks/x"),
            "/api/{user_id}/webhooks/{webhook_id}"
        );
        assert_eq!(
            super::route_of("/api/bob/webhooks/x/deliveries"),
            "/api/{user_id}/webhooks/{webhook_id}/deliveries"
        );
        assert_eq!(super::route_of("/api/bob/webhooks/x/y"), "unmatched");
        assert_eq!(
            super::allowed_methods("/api/{user_id}/webhooks"),
            Some("GET, POST")
        );
        assert_eq!(
            super::allowed_methods("/api/{user_id}/webhooks/{webhook_id}"),
            Some("GET, PATCH, DELETE")
        );
        assert_eq!(
            super::allowed_methods("/api/{user_id}/webhooks/{webhook_id}/deliveries"),
            Some("GET")
        );
        assert_eq!(
            super::allowed_methods("/api/{user_id}/lists/{list_id}"),
            Some("GET, PATCH, DELETE")
        );
        assert_eq!(
            super::allowed_methods("/api/{user_id}/lists/{list_id}/move"),
            Some("POST")
        );
        assert_eq!(
            super::allowed_methods("/api/{user_id}/lists"),
            Some("GET, POST")
        );
        assert_eq!(super::route_of("/wp-admin/x.php"), "unmatched");
        assert_eq!(
            super::allowed_methods("/api/{user_id}/tasks/{task_id}"),
            Some("GET, PUT, PATCH, DELETE")
        );
        assert_eq!(super::allowed_methods("/healthz"), Some("GET"));
        assert_eq!(
            super::path_params("/api/{user_id}/lists/{list_id}/move"),
            ["user_id", "list_id"]
        );
        assert!(super::path_params("unmatched").is_empty());
        assert_eq!(super::allowed_methods("/nope"), None);
    }
}

/// The README's code blocks, compiled and run as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
