//! `Idempotency-Key` on every write under `/api/{user_id}`: a middleware claims the key, a
//! write handler stores its response in its own transaction, and a retry gets that response
//! again byte for byte with `Idempotent-Replayed: true`.
//!
//! The middleware runs around the operations for a `POST`, `PUT`, `PATCH` or `DELETE` that
//! carries the header: it checks the token (401) and the path user (403) as every operation
//! does, then the key's syntax (400), reads the body (413, 408) and hashes it, and asks the
//! store to begin the key: a stored response is replayed, another request under the key is
//! 422 (`…/idempotency-key-reuse`), a first request still running is 409
//! (`…/idempotency-key-in-use`, with `Retry-After`). Otherwise it hands the key to the handler
//! as request data (`Pending`); the handler runs its store call on
//! [`todo_store::UserTasks::with_idempotency`] with a responder made by `responder`, which
//! builds the response bytes from the write's outcome with the same serialisation the handler
//! sends, inside the write's transaction. After the handler, a 401, 403 or 5xx frees the key
//! again; any other error (4xx) is stored as the key's response.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use poem::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use poem::{Endpoint, IntoResponse, Request, Response};
use sha2::{Digest, Sha256};
use todo_store::{
    Begun, IdempotencyKey, IdempotentRequest, Outcome, Responder, Store, StoreError,
    StoredResponse, UserTasks,
};

use crate::auth::Authenticator;
use crate::payload::JsonOut;
use crate::problem::Problem;
use crate::types::{ListEnvelope, TaskEnvelope};
use crate::webhooks::{CreatedWebhookEnvelope, WebhookEnvelope};

/// The request header.
pub const HEADER: &str = "Idempotency-Key";
/// The response header of a replay.
pub const REPLAYED: &str = "Idempotent-Replayed";
/// Longest key.
pub const KEY_MAX: usize = todo_store::idem::KEY_MAX;

/// An `Idempotency-Key` value: 1–255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKeyHeader(pub String);

impl IdempotencyKeyHeader {
    /// Checks the syntax of a key.
    pub fn parse(value: &[u8]) -> Result<Self, String> {
        if (1..=KEY_MAX).contains(&value.len()) && value.iter().all(|b| (0x21..=0x7e).contains(b)) {
            Ok(Self(String::from_utf8_lossy(value).into_owned()))
        } else {
            Err(format!(
                "must be 1 to {KEY_MAX} visible ASCII characters (no spaces)"
            ))
        }
    }
}

impl poem_openapi::types::Type for IdempotencyKeyHeader {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> std::borrow::Cow<'static, str> {
        "IdempotencyKey".into()
    }

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        let mut s = poem_openapi::registry::MetaSchema::new("string");
        s.min_length = Some(1);
        s.max_length = Some(KEY_MAX);
        s.pattern = Some("^[!-~]{1,255}$".to_owned());
        s.description = Some(
            "Makes the write safe to retry: the first request with a key runs and its response is \
             stored with its effect (kept at least 24 h); the same key with the same method, path \
             and body gets that response again with `Idempotent-Replayed: true`; with another \
             method, path or body it is 422 (`…/idempotency-key-reuse`); while the first request \
             still runs it is 409 (`…/idempotency-key-in-use`, `Retry-After`). 401, 403 and 5xx \
             responses are not stored. Use a new value (a UUID, say) for each write you mean \
             to make once.",
        );
        // No example: Swagger UI would pre-fill it, and every "Try it out" would then reuse
        // one key, so a second, different request is refused as key reuse.
        poem_openapi::registry::MetaSchemaRef::Inline(Box::new(s))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl poem_openapi::types::ParseFromParameter for IdempotencyKeyHeader {
    fn parse_from_parameter(value: &str) -> poem_openapi::types::ParseResult<Self> {
        Self::parse(value.as_bytes()).map_err(poem_openapi::types::ParseError::custom)
    }
}

/// What identifies a request under a key: its method, path with query, and body hash.
pub fn fingerprint(key: &str, method: &Method, path: &str, body: &[u8]) -> IdempotentRequest {
    IdempotentRequest {
        key: key.to_owned(),
        method: method.as_str().to_owned(),
        path: path.to_owned(),
        body_hash: Sha256::digest(body).to_vec(),
    }
}

/// The key a request holds, as request data for its handler.
#[derive(Clone)]
pub(crate) struct Pending {
    key: IdempotencyKey,
    /// Set once the store asked for the response inside the write's transaction.
    responded: Arc<AtomicBool>,
}

/// The user handle a write runs on: with the request's key (if any) attached, so the store
/// keeps the response `shape` builds in the write's transaction.
pub(crate) fn attach(req: &Request, user: UserTasks, location: Option<String>) -> UserTasks {
    match req.data::<Pending>() {
        Some(p) => user.with_idempotency(&p.key, responder(p.responded.clone(), location)),
        None => user,
    }
}

/// Builds the stored response from a write's outcome: the bytes the handler sends for it.
/// `location`: the collection a created record's URL is under (201 with `Location`).
fn responder(flag: Arc<AtomicBool>, location: Option<String>) -> Responder {
    Box::new(move |outcome| {
        flag.store(true, Ordering::SeqCst);
        response_of(outcome, location.as_deref())
    })
}

fn json(status: u16, body: Result<Vec<u8>, serde_json::Error>) -> StoredResponse {
    match body {
        Ok(body) => StoredResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        },
        // Not reachable with derived `Serialize`; a 500 is never stored.
        Err(_) => StoredResponse {
            status: 500,
            headers: Vec::new(),
            body: Vec::new(),
        },
    }
}

fn response_of(outcome: Outcome<'_>, location: Option<&str>) -> StoredResponse {
    let status = if location.is_some() { 201 } else { 200 };
    let (mut r, id, version) = match outcome {
        Outcome::Task(t) => (
            json(
                status,
                JsonOut(TaskEnvelope {
                    data: t.clone().into(),
                })
                .to_bytes(),
            ),
            t.id,
            t.version,
        ),
        Outcome::List(l) => (
            json(
                status,
                JsonOut(ListEnvelope {
                    data: l.clone().into(),
                })
                .to_bytes(),
            ),
            l.id,
            l.version,
        ),
        Outcome::Deleted => {
            return StoredResponse {
                status: 204,
                headers: Vec::new(),
                body: Vec::new(),
            };
        }
        Outcome::Batch(results) => {
            return json(200, crate::sync::batch_body(results).to_bytes());
        }
        Outcome::Webhook(w) => {
            return json(
                200,
                JsonOut(WebhookEnvelope {
                    data: w.clone().into(),
                })
                .to_bytes(),
            );
        }
        Outcome::WebhookCreated(c) => {
            // 201 with `Location` and no `ETag`: a webhook has no version.
            let mut r = json(
                201,
                JsonOut(CreatedWebhookEnvelope {
                    data: c.clone().into(),
                })
                .to_bytes(),
            );
            if let Some(base) = location {
                r.headers
                    .push(("location".into(), format!("{base}/{}", c.webhook.id)));
            }
            return r;
        }
    };
    if let Some(base) = location {
        r.headers.push(("location".into(), format!("{base}/{id}")));
    }
    r.headers.push(("etag".into(), crate::api::etag(version)));
    r
}

/// What the middleware needs.
pub(crate) struct Ctx {
    pub(crate) store: Store,
    pub(crate) auth: Arc<dyn Authenticator>,
}

/// The user in an `/api/{user_id}/…` path, percent-decoded as the router does.
fn path_user(path: &str) -> Option<String> {
    let seg = path.strip_prefix("/api/")?.split('/').next()?;
    percent_encoding::percent_decode_str(seg)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// Frees a claimed key if the request ends without an answer (the client went away while
/// the handler ran): a retry then runs again instead of waiting out the lease.
struct Claim {
    user: UserTasks,
    key: Option<IdempotencyKey>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let (Some(key), Ok(rt)) = (self.key.take(), tokio::runtime::Handle::try_current()) {
            let user = self.user.clone();
            rt.spawn(async move {
                let _ = user.idempotency_abandon(&key).await;
            });
        }
    }
}

/// Headers never stored with a response (per connection or per sending).
fn kept(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection" | "content-length" | "transfer-encoding" | "date" | "vary"
    ) && !name.as_str().starts_with("access-control-")
}

fn replay(r: StoredResponse) -> Response {
    let mut resp = Response::builder()
        .status(StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK))
        .body(r.body);
    for (k, v) in r.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().append(k, v);
        }
    }
    resp.headers_mut().insert(
        HeaderName::from_static("idempotent-replayed"),
        HeaderValue::from_static("true"),
    );
    resp
}

/// The middleware (see the module docs).
pub(crate) async fn around<E: Endpoint>(
    next: E,
    mut req: Request,
    ctx: Arc<Ctx>,
) -> poem::Result<Response> {
    let is_write = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let raw_key = req.headers().get(HEADER).map(|v| v.as_bytes().to_vec());
    let (Some(raw_key), true) = (raw_key, is_write) else {
        return next.call(req).await.map(IntoResponse::into_response);
    };
    let path = req.uri().path().to_owned();
    // Only requests a route answers: an undeclared method gets its 405 from the router.
    let route = crate::route_of(&path);
    let method = req.method().as_str();
    let answered = crate::allowed_methods(route)
        .is_some_and(|allowed| allowed.split(", ").any(|m| m == method));
    if !answered || !path.starts_with("/api/") {
        return next.call(req).await.map(IntoResponse::into_response);
    }
    let user_id = match crate::api::authenticate(
        &req,
        ctx.auth.as_ref(),
        path_user(&path).as_deref(),
    )
    .await
    {
        Ok(principal) => principal.user_id,
        Err(p) => return Ok(p.into_response()),
    };
    let key = match IdempotencyKeyHeader::parse(&raw_key) {
        Ok(k) => k.0,
        Err(m) => return Ok(Problem::field(StatusCode::BAD_REQUEST, HEADER, m).into_response()),
    };
    let Ok(user) = ctx.store.for_user(&user_id) else {
        // A user id the store refuses: the operation answers 400 for it.
        return next.call(req).await.map(IntoResponse::into_response);
    };
    let raw = req.take_body();
    let body = match crate::body::read_limited(&req, raw).await {
        Ok(b) => b,
        Err(p) => return Ok(p.into_response()),
    };
    let target = req
        .uri()
        .path_and_query()
        .map_or(path.clone(), |p| p.as_str().to_owned());
    let fp = fingerprint(&key, req.method(), &target, &body);
    req.set_body(body);
    let key = match user.idempotency_begin(&fp).await {
        Ok(Begun::Replay(r)) => return Ok(replay(r)),
        Ok(Begun::Started(k)) => k,
        Err(e) => return Ok(Problem::from_store_as(e, StatusCode::BAD_REQUEST).into_response()),
    };
    let responded = Arc::new(AtomicBool::new(false));
    req.extensions_mut().insert(Pending {
        key: key.clone(),
        responded: responded.clone(),
    });
    let mut claim = Claim {
        user: user.clone(),
        key: Some(key.clone()),
    };
    let resp = match next.call(req).await {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    };
    claim.key = None;
    let status = resp.status();
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
        || status.is_server_error()
    {
        if let Err(e) = user.idempotency_abandon(&key).await {
            tracing::warn!(error = %e, "could not free an idempotency key");
        }
        return Ok(resp);
    }
    if responded.load(Ordering::SeqCst) && status.is_success() {
        // Stored with the write, in its transaction.
        return Ok(resp);
    }
    if status.is_success() {
        tracing::warn!(%status, "a write answered without storing its idempotent response");
    }
    // A refusal after the key was claimed (4xx): stored as the key's response.
    let (parts, body) = resp.into_parts();
    let bytes = body.into_vec().await.unwrap_or_default();
    let stored = StoredResponse {
        status: status.as_u16(),
        headers: parts
            .headers
            .iter()
            .filter(|(k, _)| kept(k))
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        body: bytes.clone(),
    };
    // Any error the store keeps a response for; it only tells "keep" from "free the key".
    let refusal = StoreError::NotFound;
    if let Err(e) = user.idempotency_failed(&key, &refusal, stored).await {
        tracing::warn!(error = %e, "could not store an idempotent refusal");
    }
    let mut out = Response::from_parts(parts, poem::Body::from_vec(bytes));
    out.headers_mut().remove(header::CONTENT_LENGTH);
    Ok(out)
}
