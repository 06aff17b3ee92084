//! Request bodies: read at most 64 KiB, then check Content-Type (415), JSON syntax (400) and
//! field types (422), in that order, before the handler runs.

use std::marker::PhantomData;

use poem::http::{StatusCode, header};
use poem::{Request, RequestBody};
use poem_openapi::registry::{MetaMediaType, MetaRequest, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use serde_json::{Map, Value};
use todo_store::batch::BATCH_MAX;
use todo_store::{
    BatchMove, BatchOp, ListInput, ListPatch, MoveTask, Patch, Recurrence, ReminderInput,
    TaskInput, TaskPatch, TaskRef, WebhookInput, WebhookPatch,
};
use uuid::Uuid;

use crate::problem::{FieldProblem, Problem};
use crate::types::{
    CompletionSchema, ListCreateSchema, ListMoveSchema, ListUpdateSchema, TaskCreateSchema,
    TaskMoveSchema, TaskReplaceSchema, TaskUpdateSchema, Timestamp,
};

/// Largest accepted body, in bytes.
pub const BODY_LIMIT: usize = 65_536;

/// How long a body may take to arrive; set by the API builder as request data.
#[derive(Debug, Clone, Copy)]
pub struct ReadTimeout(pub std::time::Duration);

/// A body type: its schema, its media types and how its JSON becomes a value.
pub trait BodyKind: Send + Sync + Sized + 'static {
    /// What the handler gets.
    type Output: Send;
    /// The documented schema.
    type Schema: Type;
    /// Whether the request may omit the body entirely.
    const OPTIONAL: bool = false;
    /// Accept `application/merge-patch+json` too.
    const MERGE_PATCH: bool = false;
    /// Builds the value from parsed JSON (`None`: no body), or names the broken fields.
    fn from_json(v: Option<Value>) -> Result<Self::Output, Vec<FieldProblem>>;
    /// Adds what this kind knows to the 422 of its broken fields.
    fn refine(p: Problem) -> Problem {
        p
    }
}

/// A JSON request body of kind `K`.
pub struct JsonBody<K: BodyKind>(pub K::Output, PhantomData<K>);

fn media_types<K: BodyKind>() -> Vec<MetaMediaType> {
    let mut v = vec![MetaMediaType {
        content_type: "application/json",
        schema: K::Schema::schema_ref(),
    }];
    if K::MERGE_PATCH {
        v.push(MetaMediaType {
            content_type: "application/merge-patch+json",
            schema: K::Schema::schema_ref(),
        });
    }
    v
}

fn content_type_ok<K: BodyKind>(ct: &str) -> bool {
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || (K::MERGE_PATCH && essence == "application/merge-patch+json")
}

impl<'a, K: BodyKind> ApiExtractor<'a> for JsonBody<K> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        K::Schema::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: media_types::<K>(),
            required: !K::OPTIONAL,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        let bytes = match body.take() {
            Ok(b) => read_limited(request, b).await?,
            Err(_) => Default::default(),
        };
        let ct = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("invalid"));
        if bytes.is_empty() && ct.is_none() {
            if K::OPTIONAL {
                return parsed::<K>(None);
            }
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a JSON body (Content-Type: application/json) is required",
            )
            .into());
        }
        match ct {
            Some(ct) if content_type_ok::<K>(ct) => {}
            Some(_) | None => {
                let expected = if K::MERGE_PATCH {
                    "application/json or application/merge-patch+json"
                } else {
                    "application/json"
                };
                return Err(Problem::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("Content-Type must be {expected}"),
                )
                .into());
            }
        }
        if bytes.iter().all(u8::is_ascii_whitespace) && K::OPTIONAL {
            return parsed::<K>(None);
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            Problem::field(
                StatusCode::BAD_REQUEST,
                "body",
                format!("invalid JSON: {e}"),
            )
        })?;
        parsed::<K>(Some(value))
    }
}

/// Reads a whole body of at most [`BODY_LIMIT`] bytes within the request's read timeout: 413
/// when larger, 400 when broken, 408 when too slow (each closing the connection, as the rest
/// of the body stays unread).
pub(crate) async fn read_limited(
    request: &Request,
    b: poem::Body,
) -> Result<bytes::Bytes, Problem> {
    let limit = request
        .data::<ReadTimeout>()
        .map_or(crate::DEFAULT_BODY_READ_TIMEOUT, |t| t.0);
    let close = poem::http::HeaderValue::from_static("close");
    match tokio::time::timeout(limit, b.into_bytes_limit(BODY_LIMIT)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let p = if matches!(e, poem::error::ReadBodyError::PayloadTooLarge) {
                Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is larger than {BODY_LIMIT} bytes"),
                )
            } else {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "the body could not be read (broken framing or the client went away)",
                )
            };
            Err(p.with_header(header::CONNECTION, close))
        }
        Err(_) => Err(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the body did not arrive within {} s", limit.as_secs_f64()),
        )
        .with_header(header::CONNECTION, close)),
    }
}

fn parsed<K: BodyKind>(v: Option<Value>) -> poem::Result<JsonBody<K>> {
    match K::from_json(v) {
        Ok(out) => Ok(JsonBody(out, PhantomData)),
        Err(errors) => {
            let detail = errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            let mut p = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail);
            p.errors = errors;
            Err(K::refine(p).into())
        }
    }
}

/// Reads typed fields out of a JSON object, collecting one error per broken field.
struct Fields {
    obj: Map<String, Value>,
    errors: Vec<FieldProblem>,
}

/// A field's presence: absent, `null`, or a value.
enum Slot<T> {
    Absent,
    Null,
    Value(T),
}

impl Fields {
    fn new(v: Option<Value>) -> Result<Self, Vec<FieldProblem>> {
        match v {
            Some(Value::Object(obj)) => Ok(Fields {
                obj,
                errors: Vec::new(),
            }),
            _ => Err(vec![FieldProblem {
                field: "body".into(),
                message: "must be a JSON object".into(),
            }]),
        }
    }

    fn fail(&mut self, field: &str, message: &str) {
        self.errors.push(FieldProblem {
            field: field.to_owned(),
            message: message.to_owned(),
        });
    }

    fn get<T>(
        &mut self,
        name: &str,
        expected: &str,
        f: impl FnOnce(Value) -> Result<T, String>,
    ) -> Slot<T> {
        match self.obj.remove(name) {
            None => Slot::Absent,
            Some(Value::Null) => Slot::Null,
            Some(v) => match f(v) {
                Ok(t) => Slot::Value(t),
                Err(m) => {
                    let m = if m.is_empty() {
                        format!("must be {expected}")
                    } else {
                        m
                    };
                    self.fail(name, &m);
                    Slot::Absent
                }
            },
        }
    }

    /// A string that must be present and not null (an empty one is left to the store's rules).
    fn required_string(&mut self, name: &str) -> String {
        match self.string(name) {
            Slot::Value(t) => t,
            // Present but of the wrong type: already reported.
            Slot::Absent if self.errors.iter().any(|e| e.field == name) => String::new(),
            Slot::Absent => {
                self.fail(name, "is required");
                String::new()
            }
            Slot::Null => {
                self.fail(name, "must not be null");
                String::new()
            }
        }
    }

    fn uuid(&mut self, name: &str) -> Slot<Uuid> {
        self.get(name, "a UUID", |v| {
            v.as_str()
                .and_then(|s| Uuid::try_parse(s).ok())
                .ok_or_default()
        })
    }

    fn string(&mut self, name: &str) -> Slot<String> {
        self.get(name, "a string", |v| match v {
            Value::String(s) => Ok(s),
            _ => Err(String::new()),
        })
    }

    fn bool(&mut self, name: &str) -> Slot<bool> {
        self.get(name, "a boolean", |v| v.as_bool().ok_or_default())
    }

    fn priority(&mut self, name: &str) -> Slot<todo_store::Priority> {
        self.get(name, "one of low, medium, high", |v| {
            v.as_str().and_then(|s| s.parse().ok()).ok_or_default()
        })
    }

    /// An array of strings; a non-string item is named `name[i]`.
    fn strings(&mut self, name: &str) -> Slot<Vec<String>> {
        let mut bad_items = Vec::new();
        let slot = self.get(name, "an array of strings", |v| match v {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s),
                        _ => bad_items.push(i),
                    }
                }
                Ok(out)
            }
            _ => Err(String::new()),
        });
        for i in bad_items {
            self.fail(&format!("{name}[{i}]"), "must be a string");
        }
        slot
    }

    fn timestamp(&mut self, name: &str) -> Slot<chrono::DateTime<chrono::Utc>> {
        self.get(name, "an RFC 3339 timestamp", |v| match v {
            Value::String(s) => Timestamp::parse(&s).map(|t| t.0),
            _ => Err("must be an RFC 3339 timestamp string with an offset".into()),
        })
    }

    /// `{"rule": string, "timezone"?: string|null}`; a missing or mistyped member is named
    /// `recurrence.rule` / `recurrence.timezone`. The rule itself is the store's to check.
    fn recurrence(&mut self, name: &str) -> Slot<Recurrence> {
        let mut errors = Vec::new();
        let slot = self.get(name, "an object {rule, timezone}", |v| {
            let Value::Object(mut obj) = v else {
                return Err(String::new());
            };
            let rule = match obj.remove("rule") {
                Some(Value::String(s)) => s,
                None | Some(Value::Null) => {
                    errors.push(("rule", "is required"));
                    String::new()
                }
                Some(_) => {
                    errors.push(("rule", "must be a string"));
                    String::new()
                }
            };
            let timezone = match obj.remove("timezone") {
                None | Some(Value::Null) => todo_store::recurrence::TIMEZONE_DEFAULT.to_owned(),
                Some(Value::String(s)) => s,
                Some(_) => {
                    errors.push(("timezone", "must be a string (an IANA zone name)"));
                    String::new()
                }
            };
            Ok(Recurrence::in_zone(rule, timezone))
        });
        let broken = !errors.is_empty();
        for (member, message) in errors {
            self.fail(&format!("{name}.{member}"), message);
        }
        if broken { Slot::Absent } else { slot }
    }

    /// An array of `{"at": timestamp}` or `{"before_due": duration}` (other members, such as
    /// an `id` sent back from a read, are ignored); a broken item is named `reminders[i]`, or
    /// `reminders[i].at` / `reminders[i].before_due`. The count and durations are the store's
    /// to check.
    fn reminders(&mut self, name: &str) -> Slot<Vec<ReminderInput>> {
        let mut errors: Vec<(String, String)> = Vec::new();
        let slot = self.get(name, "an array of reminders", |v| {
            let Value::Array(items) = v else {
                return Err(String::new());
            };
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let here = format!("{name}[{i}]");
                let Value::Object(mut obj) = item else {
                    errors.push((
                        here,
                        "must be an object: {\"at\": …} or {\"before_due\": …}".into(),
                    ));
                    continue;
                };
                let at = obj.remove("at").filter(|v| !v.is_null());
                let before = obj.remove("before_due").filter(|v| !v.is_null());
                match (at, before) {
                    (Some(Value::String(s)), None) => match Timestamp::parse(&s) {
                        Ok(t) => out.push(ReminderInput::At(t.0)),
                        Err(m) => errors.push((format!("{here}.at"), m)),
                    },
                    (Some(_), None) => errors.push((
                        format!("{here}.at"),
                        "must be an RFC 3339 timestamp string with an offset".into(),
                    )),
                    (None, Some(Value::String(s))) => out.push(ReminderInput::BeforeDue(s)),
                    (None, Some(_)) => errors.push((
                        format!("{here}.before_due"),
                        "must be an ISO 8601 duration string such as PT15M".into(),
                    )),
                    (Some(_), Some(_)) => {
                        errors.push((here, "must have only one of at and before_due".into()))
                    }
                    (None, None) => errors.push((here, "must have at or before_due".into())),
                }
            }
            Ok(out)
        });
        let broken = !errors.is_empty();
        for (field, message) in errors {
            self.fail(&field, &message);
        }
        if broken { Slot::Absent } else { slot }
    }

    /// `null` is not allowed for this field.
    fn not_null<T>(&mut self, name: &str, slot: Slot<T>) -> Option<T> {
        match slot {
            Slot::Value(v) => Some(v),
            Slot::Absent => None,
            Slot::Null => {
                self.fail(name, "must not be null");
                None
            }
        }
    }

    fn finish<T>(self, out: T) -> Result<T, Vec<FieldProblem>> {
        if self.errors.is_empty() {
            Ok(out)
        } else {
            Err(self.errors)
        }
    }
}

trait OkOrDefault<T> {
    fn ok_or_default(self) -> Result<T, String>;
}

impl<T> OkOrDefault<T> for Option<T> {
    fn ok_or_default(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

fn slot_opt<T>(s: Slot<T>) -> Option<T> {
    match s {
        Slot::Value(v) => Some(v),
        _ => None,
    }
}

/// Parses a full task body (create and replace share the shape; `title` is required and not
/// null; every optional field may be absent or null). `placed`: read the create-only
/// placement fields `list_id` and `parent_id` (a replace ignores them, as server-owned).
fn task_input(v: Option<Value>, placed: bool) -> Result<TaskInput, Vec<FieldProblem>> {
    let mut f = Fields::new(v)?;
    let title = f.required_string("title");
    let description = f.string("description");
    let completed = f.bool("completed");
    let completed = f.not_null("completed", completed);
    let priority = f.priority("priority");
    let priority = f.not_null("priority", priority);
    let tags = f.strings("tags");
    let due_at = f.timestamp("due_at");
    let recurrence = f.recurrence("recurrence");
    let reminders = f.reminders("reminders");
    let (list_id, parent_id) = if placed {
        let list_id = f.uuid("list_id");
        let parent_id = f.uuid("parent_id");
        (slot_opt(list_id), slot_opt(parent_id))
    } else {
        (None, None)
    };
    let input = TaskInput {
        title,
        description: slot_opt(description),
        completed,
        priority,
        tags: slot_opt(tags).unwrap_or_default(),
        due_at: slot_opt(due_at),
        list_id,
        parent_id,
        recurrence: slot_opt(recurrence),
        reminders: slot_opt(reminders).unwrap_or_default(),
    };
    f.finish(input)
}

/// `createTask` body.
pub struct CreateBody;
impl BodyKind for CreateBody {
    type Output = TaskInput;
    type Schema = TaskCreateSchema;
    fn from_json(v: Option<Value>) -> Result<TaskInput, Vec<FieldProblem>> {
        task_input(v, true)
    }
}

/// `replaceTask` body.
pub struct ReplaceBody;
impl BodyKind for ReplaceBody {
    type Output = TaskInput;
    type Schema = TaskReplaceSchema;
    fn from_json(v: Option<Value>) -> Result<TaskInput, Vec<FieldProblem>> {
        task_input(v, false)
    }
}

/// Absent (`None`), `null` (`Some(None)`) or a value, for fields where `null` means something.
fn maybe<T>(s: Slot<T>) -> Option<Option<T>> {
    match s {
        Slot::Absent => None,
        Slot::Null => Some(None),
        Slot::Value(v) => Some(Some(v)),
    }
}

fn patch_of<T>(s: Slot<T>) -> Patch<T> {
    match s {
        Slot::Absent => Patch::Unchanged,
        Slot::Null => Patch::Clear,
        Slot::Value(v) => Patch::Set(v),
    }
}

/// `updateTask` body (JSON merge patch).
pub struct UpdateBody;
impl BodyKind for UpdateBody {
    type Output = TaskPatch;
    type Schema = TaskUpdateSchema;
    const MERGE_PATCH: bool = true;
    fn from_json(v: Option<Value>) -> Result<TaskPatch, Vec<FieldProblem>> {
        let mut f = Fields::new(v)?;
        let title = f.string("title");
        let title = f.not_null("title", title);
        let description = f.string("description");
        let completed = f.bool("completed");
        let completed = f.not_null("completed", completed);
        let priority = f.priority("priority");
        let priority = f.not_null("priority", priority);
        let tags = f.strings("tags");
        let due_at = f.timestamp("due_at");
        let recurrence = f.recurrence("recurrence");
        let reminders = f.reminders("reminders");
        let patch = TaskPatch {
            title,
            description: patch_of(description),
            completed,
            priority,
            tags: patch_of(tags),
            due_at: patch_of(due_at),
            recurrence: patch_of(recurrence),
            // `null` removes them all, like `[]`.
            reminders: patch_of(reminders),
        };
        f.finish(patch)
    }
}

/// `toggleTaskCompletion` body: none or `{}` toggles, `{"completed": bool}` sets.
pub struct CompletionBody;
impl BodyKind for CompletionBody {
    type Output = Option<bool>;
    type Schema = CompletionSchema;
    const OPTIONAL: bool = true;
    const MERGE_PATCH: bool = true;
    fn from_json(v: Option<Value>) -> Result<Option<bool>, Vec<FieldProblem>> {
        let Some(v) = v else { return Ok(None) };
        let mut f = Fields::new(Some(v))?;
        let c = f.bool("completed");
        let c = f.not_null("completed", c);
        f.finish(c)
    }
}

/// `moveTask` body: `list_id` (not null), `parent_id` and `after` (absent, null or a UUID).
pub struct MoveBody;
impl BodyKind for MoveBody {
    type Output = MoveTask;
    type Schema = TaskMoveSchema;
    fn from_json(v: Option<Value>) -> Result<MoveTask, Vec<FieldProblem>> {
        let mut f = Fields::new(v)?;
        let list_id = f.uuid("list_id");
        let list_id = f.not_null("list_id", list_id);
        let parent_id = f.uuid("parent_id");
        let after = f.uuid("after");
        let to = MoveTask {
            list_id,
            parent_id: maybe(parent_id),
            after: maybe(after),
        };
        f.finish(to)
    }
}

/// `createList` body.
pub struct ListCreateBody;
impl BodyKind for ListCreateBody {
    type Output = ListInput;
    type Schema = ListCreateSchema;
    fn from_json(v: Option<Value>) -> Result<ListInput, Vec<FieldProblem>> {
        let mut f = Fields::new(v)?;
        let name = f.required_string("name");
        let color = f.string("color");
        let input = ListInput {
            name,
            color: slot_opt(color),
        };
        f.finish(input)
    }
}

/// `updateList` body (JSON merge patch of `name` and `color`).
pub struct ListUpdateBody;
impl BodyKind for ListUpdateBody {
    type Output = ListPatch;
    type Schema = ListUpdateSchema;
    const MERGE_PATCH: bool = true;
    fn from_json(v: Option<Value>) -> Result<ListPatch, Vec<FieldProblem>> {
        let mut f = Fields::new(v)?;
        let name = f.string("name");
        let name = f.not_null("name", name);
        let color = f.string("color");
        let patch = ListPatch {
            name,
            color: patch_of(color),
        };
        f.finish(patch)
    }
}

/// `moveList` body: `after` absent (last), null (first) or a list id.
pub struct ListMoveBody;
impl BodyKind for ListMoveBody {
    type Output = Option<Option<Uuid>>;
    type Schema = ListMoveSchema;
    fn from_json(v: Option<Value>) -> Result<Option<Option<Uuid>>, Vec<FieldProblem>> {
        let mut f = Fields::new(v)?;
        let after = f.uuid("after");
        let after = maybe(after);
        f.finish(after)
    }
}

/// `createWebhook` body: `url` (required), `events` (absent or null: every type) and
/// `description`. Which URLs and event names are allowed is the store's to check.
pub struct WebhookCreateBody;
impl BodyKind for WebhookCreateBody {
    type Output = WebhookInput;
    type Schema = crate::webhooks::WebhookCreateSchema;
    fn from_json(v: Option<Value>) -> Result<WebhookInput, Vec<FieldProblem>> {
        let mut f = Fields::new(v)?;
        let url = f.required_string("url");
        let events = f.strings("events");
        let description = f.string("description");
        let input = WebhookInput {
            url,
            events: slot_opt(events),
            description: slot_opt(description),
        };
        f.finish(input)
    }
}

/// `updateWebhook` body (JSON merge patch): `url` and `enabled` (not null), `events` (`null`:
/// every type) and `description` (`null` clears it).
pub struct WebhookUpdateBody;
impl BodyKind for WebhookUpdateBody {
    type Output = WebhookPatch;
    type Schema = crate::webhooks::WebhookUpdateSchema;
    const MERGE_PATCH: bool = true;
    fn from_json(v: Option<Value>) -> Result<WebhookPatch, Vec<FieldProblem>> {
        let mut f = Fields::new(v)?;
        let url = f.string("url");
        let url = f.not_null("url", url);
        let events = f.strings("events");
        let description = f.string("description");
        let enabled = f.bool("enabled");
        let enabled = f.not_null("enabled", enabled);
        let patch = WebhookPatch {
            url,
            events: patch_of(events),
            description: patch_of(description),
            enabled,
        };
        f.finish(patch)
    }
}

/// `runBatch` body: `{"operations": [...]}`, each operation's `task` and `patch` read by the
/// same parsers as `createTask`, `replaceTask` and `updateTask`. The errors of the first
/// operation that breaks a rule are reported, named `operations[<index>].<field>`.
pub struct BatchBody;
impl BodyKind for BatchBody {
    type Output = Vec<BatchOp>;
    type Schema = crate::sync::BatchRequestSchema;
    fn from_json(v: Option<Value>) -> Result<Vec<BatchOp>, Vec<FieldProblem>> {
        let mut f = Fields::new(v)?;
        let one = |message: String| {
            vec![FieldProblem {
                field: "operations".into(),
                message,
            }]
        };
        let ops = match f.obj.remove("operations") {
            Some(Value::Array(a)) => a,
            None | Some(Value::Null) => return Err(one("is required".into())),
            Some(_) => return Err(one("must be an array of operations".into())),
        };
        if ops.is_empty() || ops.len() > BATCH_MAX {
            return Err(one(format!("a batch has 1 to {BATCH_MAX} operations")));
        }
        ops.into_iter()
            .enumerate()
            .map(|(i, op)| {
                batch_op(op).map_err(|errors| {
                    errors
                        .into_iter()
                        .map(|e| FieldProblem {
                            field: if e.field.is_empty() {
                                format!("operations[{i}]")
                            } else {
                                format!("operations[{i}].{}", e.field)
                            },
                            message: e.message,
                        })
                        .collect()
                })
            })
            .collect()
    }

    fn refine(mut p: Problem) -> Problem {
        p.operation = p.errors.first().and_then(|e| {
            let rest = e.field.strip_prefix("operations[")?;
            rest[..rest.find(']')?].parse().ok()
        });
        p
    }
}

/// A sub-body (`task`, `patch`) of a batch operation, read by `K`'s parser; its errors are
/// named under `name.`.
fn sub_body<K: BodyKind>(f: &mut Fields, name: &str) -> Option<K::Output> {
    let v = match f.obj.remove(name) {
        Some(Value::Null) | None => {
            f.fail(name, "is required");
            return None;
        }
        Some(v) => v,
    };
    match K::from_json(Some(v)) {
        Ok(out) => Some(out),
        Err(errors) => {
            for e in errors {
                let field = if e.field == "body" {
                    name.to_owned()
                } else {
                    format!("{name}.{}", e.field)
                };
                f.errors.push(FieldProblem {
                    field,
                    message: e.message,
                });
            }
            None
        }
    }
}

impl Fields {
    fn task_ref(&mut self, name: &str) -> Slot<TaskRef> {
        self.get(name, "a task id (UUID) or \"$<ref>\"", |v| {
            v.as_str().and_then(TaskRef::parse).ok_or_default()
        })
    }

    fn required_ref(&mut self, name: &str) -> Option<TaskRef> {
        match self.task_ref(name) {
            Slot::Value(r) => Some(r),
            Slot::Absent if self.errors.iter().any(|e| e.field == name) => None,
            _ => {
                self.fail(name, "is required");
                None
            }
        }
    }

    fn if_match(&mut self) -> Option<i64> {
        let v = self.get("if_match", "an integer version", |v| {
            v.as_i64().ok_or_default()
        });
        slot_opt(v)
    }
}

/// One batch operation; field names relative to it.
fn batch_op(v: Value) -> Result<BatchOp, Vec<FieldProblem>> {
    let mut f = Fields::new(Some(v)).map_err(|_| {
        vec![FieldProblem {
            field: String::new(),
            message: "must be a JSON object".into(),
        }]
    })?;
    let op = f.string("op");
    let op = match op {
        Slot::Value(op) => op,
        _ => String::new(),
    };
    let out = match op.as_str() {
        "create" => {
            let reference = slot_opt(f.string("ref"));
            // A `$ref` parent is resolved by the store; the task parser reads the rest.
            let parent = match f.obj.get_mut("task") {
                Some(Value::Object(task)) => match task.get("parent_id") {
                    Some(Value::String(p)) if p.starts_with('$') => {
                        let p = p.clone();
                        task.remove("parent_id");
                        TaskRef::parse(&p)
                    }
                    _ => None,
                },
                _ => None,
            };
            let task = sub_body::<CreateBody>(&mut f, "task");
            task.map(|task| BatchOp::Create {
                reference,
                task,
                parent,
            })
        }
        "replace" => {
            let id = f.required_ref("id");
            let task = sub_body::<ReplaceBody>(&mut f, "task");
            let if_match = f.if_match();
            id.zip(task)
                .map(|(id, task)| BatchOp::Replace { id, task, if_match })
        }
        "update" => {
            let id = f.required_ref("id");
            let patch = sub_body::<UpdateBody>(&mut f, "patch");
            let if_match = f.if_match();
            id.zip(patch).map(|(id, patch)| BatchOp::Update {
                id,
                patch,
                if_match,
            })
        }
        "complete" => {
            let id = f.required_ref("id");
            let completed = f.bool("completed");
            let completed = f.not_null("completed", completed);
            let if_match = f.if_match();
            id.map(|id| BatchOp::Complete {
                id,
                completed,
                if_match,
            })
        }
        "move" => {
            let id = f.required_ref("id");
            let list_id = f.uuid("list_id");
            let list_id = f.not_null("list_id", list_id);
            let parent_id = f.task_ref("parent_id");
            let after = f.task_ref("after");
            let if_match = f.if_match();
            id.map(|id| BatchOp::Move {
                id,
                to: BatchMove {
                    list_id,
                    parent_id: maybe(parent_id),
                    after: maybe(after),
                },
                if_match,
            })
        }
        "delete" => {
            let id = f.required_ref("id");
            let if_match = f.if_match();
            id.map(|id| BatchOp::Delete { id, if_match })
        }
        _ => {
            f.fail(
                "op",
                "must be one of: create, replace, update, complete, move, delete",
            );
            None
        }
    };
    match out {
        Some(op) if f.errors.is_empty() => Ok(op),
        _ => Err(f.errors),
    }
}
