//! `GET /api/{user_id}/events`: the user's changes as Server-Sent Events, from
//! [`todo_store::UserTasks::subscribe`].
//!
//! Each event is `id: <token>`, `event: <type>`, `data: <JSON>`; a `: keep-alive` comment goes
//! out at least every [`EventOptions::keep_alive`]. `Last-Event-ID` (or `?since=`) replays from
//! the change log first. A stream ends when the client leaves, when the token that opened it
//! expires, when the database becomes unreachable (the client resumes with `Last-Event-ID`),
//! and at once when the API's shutdown token fires, so a graceful drain never waits for it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use poem::http::{HeaderValue, StatusCode, header};
use poem::{Body, IntoResponse, Request, RequestBody, Response};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::EventStream;
use poem_openapi::registry::{MetaResponses, Registry};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ApiResponse, Enum, ExtractParamOptions, Object, OpenApi, Tags,
    Union,
};
use todo_store::{Change, ChangeData, Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::Principal;
use crate::api::{Authed, principal_of};
use crate::problem::{ApiError, Problem, Statuses};
use crate::types::{ListDto, TaskDto, UserIdParam};

/// Most event streams one user may hold open on one server (API.md: 16).
pub const MAX_STREAMS_PER_USER: usize = 16;
/// Default of [`EventOptions::keep_alive`] (`TODO_SSE_KEEPALIVE_SECS`).
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Default of [`EventOptions::max_streams`] (`TODO_SSE_MAX_STREAMS`).
pub const DEFAULT_MAX_STREAMS: usize = 10_000;

/// Settings of the event streams (see [`crate::TodoApiBuilder::events`]).
#[derive(Debug, Clone)]
pub struct EventOptions {
    /// A `: keep-alive` comment is sent at least this often (`TODO_SSE_KEEPALIVE_SECS`, 15 s).
    pub keep_alive: Duration,
    /// Most streams open at once on this server, all users together (`TODO_SSE_MAX_STREAMS`,
    /// 10,000); beyond it new streams get 503 with `Retry-After`.
    pub max_streams: usize,
    /// Every open stream ends as soon as this is cancelled; cancel it when shutdown starts so
    /// the drain does not wait for streams (the standalone server does).
    pub shutdown: CancellationToken,
}

impl Default for EventOptions {
    fn default() -> Self {
        EventOptions {
            keep_alive: DEFAULT_KEEP_ALIVE,
            max_streams: DEFAULT_MAX_STREAMS,
            shutdown: CancellationToken::new(),
        }
    }
}

#[derive(Tags)]
enum EventTags {
    /// Keeping a client's copy in step: the live event stream.
    Sync,
}

/// The open streams of this server, by user, for the caps.
#[derive(Debug, Default)]
struct Open {
    by_user: HashMap<String, usize>,
    total: usize,
}

/// The event stream operation.
pub(crate) struct EventsApi {
    pub(crate) store: Store,
    pub(crate) options: EventOptions,
    open: Arc<Mutex<Open>>,
}

impl EventsApi {
    pub(crate) fn new(store: Store, options: EventOptions) -> Self {
        EventsApi {
            store,
            options,
            open: Arc::default(),
        }
    }

    /// Takes one stream slot for `user`, or says why not.
    fn slot(&self, user: &str) -> Result<Slot, Problem> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= self.options.max_streams {
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server holds as many event streams as it may; retry later",
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("5")));
        }
        let mine = open.by_user.entry(user.to_owned()).or_insert(0);
        if *mine >= MAX_STREAMS_PER_USER {
            return Err(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "this user already has {MAX_STREAMS_PER_USER} event streams open; close one"
                ),
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("10")));
        }
        *mine += 1;
        open.total += 1;
        metrics::gauge!("todo_http_event_streams_open").increment(1.0);
        Ok(Slot {
            open: self.open.clone(),
            user: user.to_owned(),
        })
    }
}

/// One open stream's place in the caps (and the gauge); released on drop.
struct Slot {
    open: Arc<Mutex<Open>>,
    user: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_user.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_user.remove(&self.user);
            }
        }
        metrics::gauge!("todo_http_event_streams_open").decrement(1.0);
    }
}

/// The authenticated user with the expiry of their credentials (403 when the path names
/// another user), like [`Authed`].
struct StreamAuth(Principal);

impl<'a> ApiExtractor<'a> for StreamAuth {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        Authed::register(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        Authed::security_schemes()
    }

    async fn from_request(
        req: &'a Request,
        _body: &mut RequestBody,
        _opts: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        Ok(StreamAuth(principal_of(req).await?))
    }
}

/// The type of an event (its `event:` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum EventType {
    /// A task was created.
    #[oai(rename = "task.created")]
    TaskCreated,
    /// A task was changed.
    #[oai(rename = "task.updated")]
    TaskUpdated,
    /// A task was deleted.
    #[oai(rename = "task.deleted")]
    TaskDeleted,
    /// A list was created.
    #[oai(rename = "list.created")]
    ListCreated,
    /// A list was changed.
    #[oai(rename = "list.updated")]
    ListUpdated,
    /// A list was deleted.
    #[oai(rename = "list.deleted")]
    ListDeleted,
    /// A reminder fired.
    #[oai(rename = "reminder.fired")]
    ReminderFired,
}

/// `data` of `task.created` and `task.updated`.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct TaskEventData {
    /// The task in its state when the event was read (as `GET …/tasks/{task_id}` shows it).
    pub task: TaskDto,
}

/// `data` of `list.created` and `list.updated`.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct ListEventData {
    /// The list in its state when the event was read.
    pub list: ListDto,
}

/// `data` of `reminder.fired`.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct ReminderEventData {
    /// The reminder's task, in its state when the event was read.
    pub task: TaskDto,
    /// The reminder that fired.
    pub reminder: crate::types::ReminderDto,
    /// The time the reminder was due: its `at`, or the task's `due_at` minus `before_due`.
    pub scheduled_for: crate::types::Timestamp,
}

/// `data` of `task.deleted` and `list.deleted`.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct DeletedEventData {
    /// The id of the deleted task or list.
    pub id: uuid::Uuid,
}

/// The JSON of an event's `data:` line, by type.
#[derive(Debug, Clone, Union, serde::Serialize)]
#[oai(one_of)]
#[serde(untagged)]
pub enum EventData {
    /// `task.created`, `task.updated`.
    Task(TaskEventData),
    /// `list.created`, `list.updated`.
    List(ListEventData),
    /// `task.deleted`, `list.deleted`.
    Deleted(DeletedEventData),
    /// `reminder.fired`.
    Reminder(ReminderEventData),
}

impl From<ChangeData> for EventData {
    fn from(data: ChangeData) -> Self {
        match data {
            ChangeData::Task(t) => EventData::Task(TaskEventData { task: t.into() }),
            ChangeData::List(l) => EventData::List(ListEventData { list: l.into() }),
            ChangeData::Deleted(id) => EventData::Deleted(DeletedEventData { id }),
            ChangeData::Reminder {
                task,
                reminder,
                scheduled_for,
            } => EventData::Reminder(ReminderEventData {
                task: task.into(),
                reminder: reminder.into(),
                scheduled_for: crate::types::Timestamp(scheduled_for),
            }),
        }
    }
}

/// One event of the stream, as its SSE fields: `id: <id>`, `event: <event>`, `data: <data as
/// JSON>`, then a blank line. Comment lines (`: keep-alive`) come in between.
#[derive(Debug, Clone, Object)]
pub struct StreamEvent {
    /// The position after this change: send it as `Last-Event-ID` to resume, or as `since`
    /// to `/changes`.
    pub id: String,
    /// The type of change.
    pub event: EventType,
    /// The change.
    pub data: EventData,
}

type DocStream = EventStream<futures_util::stream::Empty<StreamEvent>>;

/// The open stream.
pub struct EventsResponse(Pin<Box<dyn Stream<Item = Bytes> + Send>>);

impl ApiResponse for EventsResponse {
    fn meta() -> MetaResponses {
        let mut meta = DocStream::meta();
        for r in &mut meta.responses {
            r.description = "The stream: every change as an event, with `: keep-alive` comments \
                             in between.";
        }
        meta
    }

    fn register(registry: &mut Registry) {
        DocStream::register(registry);
    }
}

impl IntoResponse for EventsResponse {
    fn into_response(self) -> Response {
        Response::builder()
            .content_type("text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .header("X-Accel-Buffering", "no")
            .body(Body::from_bytes_stream(self.0.map(Ok::<_, std::io::Error>)))
    }
}

/// Errors of `streamEvents`.
#[derive(Debug)]
pub struct EventsErrors;

impl Statuses for EventsErrors {
    const STATUSES: &'static [u16] = &[400, 401, 403, 410, 429, 503];
}

/// The SSE text of one change.
fn frame(c: Change) -> Bytes {
    let event = c.kind.as_str();
    let data = EventData::from(c.data);
    // Derived `Serialize` of strings, numbers and timestamps cannot fail.
    let json = serde_json::to_string(&data).unwrap_or_else(|_| "{}".to_owned());
    // Tokens are URL-safe text; a line break could never be in one, and is dropped if it were.
    let id: String =
        c.id.chars()
            .filter(|ch| *ch != '\n' && *ch != '\r')
            .collect();
    Bytes::from(format!("id: {id}\nevent: {event}\ndata: {json}\n\n"))
}

const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// What the stream is waiting for.
struct Live {
    changes: Pin<Box<dyn Stream<Item = Result<Change, StoreError>> + Send>>,
    keep_alive: tokio::time::Interval,
    shutdown: CancellationToken,
    expires: Option<tokio::time::Instant>,
    _slot: Slot,
}

fn live_stream(live: Live) -> impl Stream<Item = Bytes> + Send + 'static {
    futures_util::stream::unfold(live, |mut s| async move {
        let expiry = async {
            match s.expires {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let out = tokio::select! {
            biased;
            () = s.shutdown.cancelled() => None,
            () = expiry => None,
            c = s.changes.next() => match c {
                Some(Ok(c)) => Some(frame(c)),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "event stream ended: the store failed");
                    None
                }
                None => None,
            },
            _ = s.keep_alive.tick() => Some(Bytes::from_static(KEEP_ALIVE)),
        };
        out.map(|b| (b, s))
    })
}

/// Where an `Instant` clock puts a wall-clock time (`None` when it is too far to matter).
fn instant_of(at: SystemTime) -> Option<tokio::time::Instant> {
    let now = SystemTime::now();
    let left = at.duration_since(now).unwrap_or(Duration::ZERO);
    tokio::time::Instant::now().checked_add(left)
}

#[OpenApi]
impl EventsApi {
    /// Stream changes (Server-Sent Events)
    ///
    /// `text/event-stream` of the user's changes: each event has `id: <token>`, `event:
    /// <type>` and `data: <JSON>` (`{"task": …}`, `{"list": …}` or `{"id": …}` for
    /// deletions). With `Last-Event-ID` (or `since`) every change after that token is replayed
    /// first, then the stream continues live, with no gap and no duplicate; without, it starts
    /// with the changes committed after it opened. A `: keep-alive` comment line comes at
    /// least every 15 s (`TODO_SSE_KEEPALIVE_SECS`). The stream ends when the token expires
    /// and on server shutdown: reconnect with `Last-Event-ID`. At most 16 streams per user
    /// (429). Browsers' `EventSource` cannot send `Authorization`: use a fetch-based reader.
    #[oai(
        path = "/api/:user_id/events",
        method = "get",
        operation_id = "streamEvents",
        tag = "EventTags::Sync"
    )]
    async fn stream_events(
        &self,
        auth: StreamAuth,
        /// The user (must equal the token's `sub`).
        user_id: Path<UserIdParam>,
        /// Resume after this token (an event `id`, or a `/changes` token).
        since: Query<Option<String>>,
        /// Resume after this event id; takes precedence over `since`. An empty value is
        /// ignored.
        #[oai(name = "Last-Event-ID")]
        last_event_id: Header<Option<String>>,
    ) -> Result<EventsResponse, ApiError<EventsErrors>> {
        let _ = user_id;
        let principal = auth.0;
        let user = self
            .store
            .for_user(&principal.user_id)
            .map_err(|e| Problem::from_store_as(e, StatusCode::BAD_REQUEST))?;
        let (from, field) = match last_event_id.0.filter(|v| !v.is_empty()) {
            Some(v) => (Some(v), "Last-Event-ID"),
            // An empty `since=` is no token, as an empty `cursor=` is no cursor.
            None => (since.0.filter(|v| !v.is_empty()), "since"),
        };
        let changes = user.subscribe(from.as_deref()).await.map_err(|e| {
            let mut p = Problem::from_store_as(e, StatusCode::BAD_REQUEST);
            if field != "since" {
                for f in &mut p.errors {
                    if f.field == "since" {
                        f.field = field.to_owned();
                    }
                }
                if let Some(rest) = p.detail.strip_prefix("since") {
                    p.detail = format!("{field}{rest}");
                }
            }
            p
        })?;
        let slot = self.slot(&principal.user_id)?;
        let every = self.options.keep_alive.max(Duration::from_millis(100));
        let mut keep_alive = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let live = Live {
            changes: Box::pin(changes),
            keep_alive,
            shutdown: self.options.shutdown.clone(),
            expires: principal.expires_at.and_then(instant_of),
            _slot: slot,
        };
        Ok(EventsResponse(Box::pin(live_stream(live))))
    }
}
