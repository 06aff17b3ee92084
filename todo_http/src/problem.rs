//! Problem details (RFC 9457) and the one mapping from store errors to HTTP statuses.

use std::marker::PhantomData;

use poem::http::{HeaderValue, StatusCode, header};
use poem::{IntoResponse, Response};
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiResponse, Object};
use todo_store::StoreError;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One broken field rule.
#[derive(Debug, Clone, PartialEq, Eq, Object, serde::Serialize)]
#[oai(example)]
pub struct FieldProblem {
    /// The field: a body field (`title`, `tags[2]`), a query parameter (`limit`), a path
    /// parameter (`task_id`) or a header (`If-Match`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl poem_openapi::types::Example for FieldProblem {
    fn example() -> Self {
        field_error_example()
    }
}

fn field_error_example() -> FieldProblem {
    FieldProblem {
        field: "title".into(),
        message: "must not be empty".into(),
    }
}

/// An error response body (`application/problem+json`, RFC 9457).
#[derive(Debug, Clone, PartialEq, Eq, Object, serde::Serialize)]
#[oai(example)]
pub struct ProblemBody {
    /// A URI reference identifying the problem type.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// Explanation specific to this occurrence.
    pub detail: String,
    /// The fields that broke a rule (400 and 422).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldProblem>>,
    /// The index of the batch operation that failed (`runBatch` only).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<u32>,
}

impl poem_openapi::types::Example for ProblemBody {
    fn example() -> Self {
        problem_example()
    }
}

fn problem_example() -> ProblemBody {
    ProblemBody {
        kind: "https://todo.invalid/problems/validation".into(),
        title: "Unprocessable Entity".into(),
        status: 422,
        detail: "the request body breaks a field rule".into(),
        errors: Some(vec![field_error_example()]),
        operation: None,
    }
}

/// An HTTP error with a problem+json body. Carried through poem as a `ResponseError` so that
/// extractors, handlers and middleware all produce the same shape.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {detail}")]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable explanation.
    pub detail: String,
    /// Field errors, when any.
    pub errors: Vec<FieldProblem>,
    /// Extra response headers (`WWW-Authenticate`, `Retry-After`, …).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
    /// A more specific problem type than the status's (`…/idempotency-key-reuse`).
    pub type_uri: Option<&'static str>,
    /// The index of the failing batch operation.
    pub operation: Option<u32>,
}

impl Problem {
    /// A problem with a status and detail.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            errors: Vec::new(),
            headers: Vec::new(),
            type_uri: None,
            operation: None,
        }
    }

    /// A problem naming one field.
    pub fn field(status: StatusCode, field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut p = Self::new(status, format!("{field}: {message}"));
        p.errors.push(FieldProblem {
            field: field.to_owned(),
            message,
        });
        p
    }

    /// 401 with `WWW-Authenticate: Bearer realm="todo"`: no credentials were sent.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let mut p = Self::new(StatusCode::UNAUTHORIZED, detail);
        p.headers.push((
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"todo\""),
        ));
        p
    }

    /// 401 for credentials that were sent but are not valid (bad signature, expired, wrong
    /// issuer…): `WWW-Authenticate: Bearer realm="todo", error="invalid_token"` (RFC 6750 §3.1),
    /// so a client can tell a token to renew from a token it forgot to send.
    pub fn invalid_token(detail: impl Into<String>) -> Self {
        let mut p = Self::new(StatusCode::UNAUTHORIZED, detail);
        p.headers.push((
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"todo\", error=\"invalid_token\""),
        ));
        p
    }

    /// Adds a header.
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// With a more specific problem type than the status's.
    pub fn with_type(mut self, type_uri: &'static str) -> Self {
        self.type_uri = Some(type_uri);
        self
    }

    fn kind(&self) -> &'static str {
        if let Some(t) = self.type_uri {
            return t;
        }
        match self.status.as_u16() {
            400 => "https://todo.invalid/problems/bad-request",
            401 => "https://todo.invalid/problems/unauthorized",
            403 => "https://todo.invalid/problems/forbidden",
            404 => "https://todo.invalid/problems/not-found",
            409 => "https://todo.invalid/problems/conflict",
            405 => "https://todo.invalid/problems/method-not-allowed",
            412 => "https://todo.invalid/problems/version-mismatch",
            413 => "https://todo.invalid/problems/body-too-large",
            410 => "https://todo.invalid/problems/sync-token-expired",
            429 => "https://todo.invalid/problems/too-many-requests",
            415 => "https://todo.invalid/problems/unsupported-media-type",
            422 => "https://todo.invalid/problems/validation",
            503 => "https://todo.invalid/problems/unavailable",
            _ => "about:blank",
        }
    }

    /// The body this problem is sent with.
    pub fn body(&self) -> ProblemBody {
        ProblemBody {
            kind: self.kind().to_owned(),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            errors: (!self.errors.is_empty()).then(|| self.errors.clone()),
            operation: self.operation,
        }
    }

    /// Maps a store error used on a request body (field rules are 422).
    pub fn from_store(e: StoreError) -> Self {
        Self::from_store_as(e, StatusCode::UNPROCESSABLE_ENTITY)
    }

    /// [`from_store`](Self::from_store) for an operation on a list in the path: its 404 says
    /// so.
    pub fn from_list_store(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::new(StatusCode::NOT_FOUND, "no such list"),
            e => Self::from_store(e),
        }
    }

    /// [`from_store`](Self::from_store) for an operation on a webhook in the path: its 404
    /// says so.
    pub fn from_webhook_store(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::new(StatusCode::NOT_FOUND, "no such webhook"),
            e => Self::from_store(e),
        }
    }

    /// Maps a store error, with `invalid` as the status of field-rule errors (400 for query
    /// parameters, 422 for bodies). The one place store errors become HTTP statuses.
    pub fn from_store_as(e: StoreError, invalid: StatusCode) -> Self {
        match e {
            StoreError::NotFound => Self::new(StatusCode::NOT_FOUND, "no such task"),
            StoreError::Conflict { current } => Self::new(
                StatusCode::PRECONDITION_FAILED,
                format!("If-Match does not match: the current version is {current}"),
            )
            .with_header(
                header::ETAG,
                HeaderValue::from_str(&format!("\"{current}\""))
                    .unwrap_or(HeaderValue::from_static("\"0\"")),
            ),
            StoreError::Invalid(fields) => {
                let mut p = Self::new(
                    invalid,
                    fields
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                );
                p.errors = fields
                    .into_iter()
                    .map(|f| FieldProblem {
                        field: f.field,
                        message: f.message,
                    })
                    .collect();
                p
            }
            StoreError::Refused(why) => Self::new(StatusCode::CONFLICT, why.to_string()),
            StoreError::Gone => Self::new(
                StatusCode::GONE,
                "the sync token has expired: sync again without `since`",
            ),
            StoreError::IdempotencyReuse => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the Idempotency-Key was used with a different method, path or body",
            )
            .with_type("https://todo.invalid/problems/idempotency-key-reuse"),
            StoreError::IdempotencyInUse => Self::new(
                StatusCode::CONFLICT,
                "the Idempotency-Key's first request is still running",
            )
            .with_type("https://todo.invalid/problems/idempotency-key-in-use")
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")),
            StoreError::Unavailable(err) => {
                tracing::warn!(error = %err, "database unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable; retry shortly",
                )
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
            }
            other => {
                tracing::error!(error = %other, "store error");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

impl poem::error::ResponseError for Problem {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn as_response(&self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut resp = Response::builder()
            .status(self.status)
            .header(header::CONTENT_TYPE, PROBLEM_JSON)
            .body(body);
        for (k, v) in &self.headers {
            resp.headers_mut().append(k.clone(), v.clone());
        }
        resp
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        poem::error::ResponseError::as_response(&self)
    }
}

/// Which error statuses an operation documents.
pub trait Statuses: std::fmt::Debug + Send + Sync + 'static {
    /// The statuses, each documented with the problem schema.
    const STATUSES: &'static [u16];
}

/// The error side of an operation's result: a [`Problem`], documented in the spec as the
/// statuses of `S`.
#[derive(Debug)]
pub struct ApiError<S>(pub Problem, PhantomData<S>);

impl<S> From<Problem> for ApiError<S> {
    fn from(p: Problem) -> Self {
        ApiError(p, PhantomData)
    }
}

impl<S> From<StoreError> for ApiError<S> {
    fn from(e: StoreError) -> Self {
        Problem::from_store(e).into()
    }
}

impl<S> std::fmt::Display for ApiError<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<S: std::fmt::Debug> std::error::Error for ApiError<S> {}

impl<S: std::fmt::Debug + Send + Sync> poem::error::ResponseError for ApiError<S> {
    fn status(&self) -> StatusCode {
        self.0.status
    }

    fn as_response(&self) -> Response {
        poem::error::ResponseError::as_response(&self.0)
    }
}

impl<S: Send> IntoResponse for ApiError<S> {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

fn describe(status: u16) -> &'static str {
    match status {
        400 => "Malformed request: unparsable JSON, or a bad path, query or header value.",
        401 => "Missing, expired or invalid bearer token.",
        403 => "The token belongs to another user than the one in the path.",
        404 => "No such task, list or webhook for this user (another user's is the same as none).",
        409 => {
            "The data's state forbids it (deleting the inbox, or a list that still has tasks without `cascade=true`), or the `Idempotency-Key`'s first request is still running (`type` ends in `/idempotency-key-in-use`, `Retry-After` set)."
        }
        410 => {
            "The sync token is older than the deletions the server keeps (`type` ends in `/sync-token-expired`): sync again without `since`."
        }
        412 => "`If-Match` does not match the task's current version; nothing was changed.",
        413 => "Request body larger than 65,536 bytes.",
        415 => "Request body missing or not `application/json`.",
        422 => {
            "The JSON breaks a field rule (`errors` names each field), or the `Idempotency-Key` was used with another method, path or body (`type` ends in `/idempotency-key-reuse`)."
        }
        429 => "Too many event streams open for this user; `Retry-After` says when to retry.",
        503 => "The database is unavailable; retry later.",
        _ => "Error.",
    }
}

impl<S: Statuses> ApiResponse for ApiError<S> {
    const BAD_REQUEST_HANDLER: bool = true;

    fn meta() -> MetaResponses {
        MetaResponses {
            responses: S::STATUSES
                .iter()
                .map(|&status| MetaResponse {
                    description: describe(status),
                    status: Some(status),
                    status_range: None,
                    content: vec![MetaMediaType {
                        content_type: PROBLEM_JSON,
                        schema: ProblemBody::schema_ref(),
                    }],
                    headers: vec![],
                })
                .collect(),
        }
    }

    fn register(registry: &mut Registry) {
        ProblemBody::register(registry);
    }

    fn from_parse_request_error(err: poem::Error) -> Self {
        Problem::from_poem(err).into()
    }
}

impl Problem {
    /// Turns any error from request extraction into a problem: ours pass through, poem-openapi's
    /// parameter errors become 400 naming the parameter, anything else keeps its status.
    pub fn from_poem(err: poem::Error) -> Self {
        Self::from_poem_named(err, &["user_id", "task_id"])
    }

    /// [`from_poem`](Self::from_poem) for a route whose path parameters are `path_params`, in
    /// order: poem-openapi reports a malformed one by position (`param1`), and the 400 names it
    /// as the spec does.
    pub fn from_poem_named(err: poem::Error, path_params: &[&'static str]) -> Self {
        if let Some(p) = err.downcast_ref::<Problem>() {
            return p.clone();
        }
        if let Some(p) = err.downcast_ref::<poem_openapi::error::ParseParamError>() {
            return Problem::field(
                StatusCode::BAD_REQUEST,
                p.name,
                param_message(p.name, &p.reason),
            );
        }
        if let Some(p) = err.downcast_ref::<poem_openapi::error::ParsePathError>() {
            // poem-openapi names path parameters by position.
            let name = p
                .name
                .strip_prefix("param")
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| path_params.get(i).copied())
                .unwrap_or(p.name);
            return Problem::field(StatusCode::BAD_REQUEST, name, p.reason.clone());
        }
        let status = err.status();
        let status = if status.is_success() {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        Problem::new(status, err.to_string())
    }
}

/// What a client should read about a query or header parameter it got wrong: the allowed
/// values or range, in the words the body errors use, never poem-openapi's type names.
fn param_message(name: &str, reason: &str) -> String {
    use crate::types::{Priority, SortBy, SortOrder, StatusFilter};
    // A parameter type of ours already says what is allowed.
    if reason.contains("\": must ") {
        return own_reason(reason);
    }
    match name {
        "status" => one_of::<StatusFilter>(),
        "priority" => format!(
            "{} (repeat the parameter for several)",
            one_of::<Priority>()
        ),
        "sort" => one_of::<SortBy>(),
        "order" => one_of::<SortOrder>(),
        "limit" => format!(
            "must be an integer from 1 to {}",
            todo_store::query::LIMIT_MAX
        ),
        _ => own_reason(reason),
    }
}

/// `must be one of: a, b, c`, listing the values of an enum as the spec documents them.
fn one_of<T: Type>() -> String {
    let mut registry = Registry::new();
    T::register(&mut registry);
    let values = registry
        .schemas
        .get(T::schema_ref().unwrap_reference())
        .map(|s| {
            s.enum_items
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    format!("must be one of: {values}")
}

/// The message our own parsers wrote (`must be …`), without the wrapping poem-openapi adds:
/// `failed to parse "Timestamp": must be … (occurred while parsing "optional_Timestamp")`.
fn own_reason(reason: &str) -> String {
    let inner = reason
        .strip_prefix("failed to parse \"")
        .and_then(|r| r.split_once("\": "))
        .map_or(reason, |(_, rest)| rest);
    let inner = match inner.rfind(" (occurred while parsing \"") {
        Some(i) if inner.ends_with("\")") => &inner[..i],
        _ => inner,
    };
    inner.to_owned()
}

macro_rules! statuses {
    ($($(#[$doc:meta])* $name:ident = [$($s:literal),*];)*) => {$(
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;
        impl Statuses for $name {
            const STATUSES: &'static [u16] = &[$($s),*];
        }
    )*};
}

statuses! {
    /// listTasks, listTags.
    ReadManyErrors = [400, 401, 403, 503];
    /// getTask.
    ReadOneErrors = [400, 401, 403, 404, 503];
    /// createTask.
    CreateErrors = [400, 401, 403, 409, 413, 415, 422, 503];
    /// replaceTask, updateTask, toggleTaskCompletion.
    WriteErrors = [400, 401, 403, 404, 409, 412, 413, 415, 422, 503];
    /// deleteTask.
    DeleteErrors = [400, 401, 403, 404, 409, 412, 422, 503];
    /// readyz.
    ReadyErrors = [503];
    /// metrics.
    MetricsErrors = [404];
    /// getList.
    ListReadErrors = [400, 401, 403, 404, 503];
    /// updateList, moveList.
    ListWriteErrors = [400, 401, 403, 404, 409, 412, 413, 415, 422, 503];
    /// deleteList.
    ListDeleteErrors = [400, 401, 403, 404, 409, 412, 422, 503];
    /// listChanges.
    SyncErrors = [400, 401, 403, 410, 503];
    /// runBatch.
    BatchErrors = [400, 401, 403, 404, 409, 412, 413, 415, 422, 503];
    /// updateWebhook.
    WebhookWriteErrors = [400, 401, 403, 404, 409, 413, 415, 422, 503];
    /// deleteWebhook.
    WebhookDeleteErrors = [400, 401, 403, 404, 409, 422, 503];
}
