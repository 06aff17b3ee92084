//! Wire types: what the spec documents and the API sends.

use std::borrow::Cow;

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{
    ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type,
};
use poem_openapi::{Enum, Object, Union};
use serde_json::Value;
use uuid::Uuid;

macro_rules! string_type {
    ($ty:ty, $name:literal, $format:expr, $pattern:expr, $desc:literal, $example:expr) => {
        string_type!($ty, $name, $format, $pattern, None, None, $desc, $example);
    };
    ($ty:ty, $name:literal, $format:expr, $pattern:expr, $min:expr, $max:expr, $desc:literal, $example:expr) => {
        impl Type for $ty {
            const IS_REQUIRED: bool = true;
            type RawValueType = Self;
            type RawElementValueType = Self;

            fn name() -> Cow<'static, str> {
                $name.into()
            }

            fn schema_ref() -> MetaSchemaRef {
                let mut s = MetaSchema::new("string");
                s.format = $format;
                s.pattern = $pattern.map(|p: &str| p.to_owned());
                s.min_length = $min;
                s.max_length = $max;
                s.description = Some($desc);
                s.example = Option::<&str>::from($example).map(|e| Value::String(e.into()));
                MetaSchemaRef::Inline(Box::new(s))
            }

            fn as_raw_value(&self) -> Option<&Self> {
                Some(self)
            }

            fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
                Box::new(std::iter::once(self))
            }
        }
    };
}

/// A timestamp: RFC 3339 with an offset on input, UTC with milliseconds (`…T03:04:05.123Z`) on
/// output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub DateTime<Utc>);

string_type!(
    Timestamp,
    "Timestamp",
    Some("date-time"),
    None::<&str>,
    "RFC 3339 timestamp with an offset, e.g. `2026-01-02T03:04:05Z`; returned in UTC with millisecond precision. (No schema example: Swagger UI would pre-fill it into the optional `due_after`/`due_before` filters.)",
    None
);

impl Timestamp {
    /// Parses RFC 3339 (an offset is required).
    pub fn parse(s: &str) -> Result<Self, String> {
        DateTime::parse_from_rfc3339(s.trim())
            .map(|d| Timestamp(d.with_timezone(&Utc)))
            .map_err(|_| {
                "must be an RFC 3339 timestamp with an offset, e.g. 2026-01-02T03:04:05Z".into()
            })
    }

    /// `2026-01-02T03:04:05.123Z`.
    pub fn format(t: DateTime<Utc>) -> String {
        Timestamp(t).with_text(str::to_owned)
    }

    /// Calls `f` with the output text, formatted on the stack when the fixed layout holds it.
    /// The text is ASCII digits and `-:.TZ+`, never anything a JSON string must escape.
    pub(crate) fn with_text<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        let mut buf = [0u8; 24];
        match format_millis(self.0, &mut buf) {
            Some(text) => f(text),
            None => f(&self.0.to_rfc3339_opts(SecondsFormat::Millis, true)),
        }
    }
}

/// `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ` in `buf`, without allocating: every timestamp of a page
/// goes through here. `None` for what the fixed layout cannot hold (years outside 0-9999, a
/// leap second), which [`Timestamp::format`] leaves to chrono.
fn format_millis(t: DateTime<Utc>, buf: &mut [u8; 24]) -> Option<&str> {
    // chrono keeps the year and day of the year; month and day come from a table. (Going
    // through the Unix timestamp and back to a civil date took twice as long.)
    let t = t.naive_utc();
    // A leap second (sub-second part of 1,000 ms or more) takes chrono's path.
    let millis = t.nanosecond() / 1_000_000;
    if millis >= 1000 {
        return None;
    }
    let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
    let (month, day) = (t.month(), t.day());
    let of_day = t.num_seconds_from_midnight();
    let (hour, minute, second) = (of_day / 3600, of_day / 60 % 60, of_day % 60);
    let [y0, y1] = two_digits(year / 100);
    let [y2, y3] = two_digits(year % 100);
    let [mo0, mo1] = two_digits(month);
    let [d0, d1] = two_digits(day);
    let [h0, h1] = two_digits(hour);
    let [mi0, mi1] = two_digits(minute);
    let [s0, s1] = two_digits(second);
    let [ms1, ms2] = two_digits(millis % 100);
    *buf = [
        y0,
        y1,
        y2,
        y3,
        b'-',
        mo0,
        mo1,
        b'-',
        d0,
        d1,
        b'T',
        h0,
        h1,
        b':',
        mi0,
        mi1,
        b':',
        s0,
        s1,
        b'.',
        b'0' + (millis / 100) as u8,
        ms1,
        ms2,
        b'Z',
    ];
    std::str::from_utf8(buf).ok()
}

/// The two ASCII digits of `v` (below 100).
fn two_digits(v: u32) -> [u8; 2] {
    [b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]
}

impl ParseFromParameter for Timestamp {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Timestamp::parse(value).map_err(ParseError::custom)
    }
}

impl ParseFromJSON for Timestamp {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(s)) => Timestamp::parse(&s).map_err(ParseError::custom),
            other => Err(ParseError::expected_type(other.unwrap_or_default())),
        }
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.with_text(|text| s.serialize_str(text))
    }
}

impl ToJSON for Timestamp {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(Timestamp::format(self.0)))
    }
}

/// A user id in the path: 1–128 characters of `[A-Za-z0-9._@:-]` with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIdParam(pub String);

string_type!(
    UserIdParam,
    "UserId",
    None,
    Some("^[A-Za-z0-9._@:-]{0,127}[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$"),
    Some(1),
    Some(128),
    "The user's id (the JWT `sub`): 1-128 characters of A-Z a-z 0-9 . _ @ : - with at least one letter or digit.",
    "user_2fG8aB"
);

impl ParseFromParameter for UserIdParam {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        todo_store::task::validate_user_id(value)
            .map(|_| UserIdParam(value.to_owned()))
            .map_err(|_| {
                ParseError::custom(
                    "must be 1-128 characters of A-Z a-z 0-9 . _ @ : - with at least one letter or digit",
                )
            })
    }
}

/// A UUID path parameter type, parsed with a 400 naming the parameter when malformed.
macro_rules! uuid_param {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $desc:literal, $example:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $ty(pub Uuid);

        string_type!(
            $ty,
            $name,
            Some("uuid"),
            None::<&str>,
            $desc,
            $example
        );

        impl ParseFromParameter for $ty {
            fn parse_from_parameter(value: &str) -> ParseResult<Self> {
                Uuid::try_parse(value)
                    .map($ty)
                    .map_err(|_| ParseError::custom("must be a UUID"))
            }
        }
    };
}

uuid_param!(
    /// A task id in the path.
    TaskIdParam,
    "TaskId",
    "The task's id (a UUID).",
    "0190c3a8-7d4e-7b3a-9f21-5c6d7e8f9a0b"
);

uuid_param!(
    /// A list id in the path or the `list_id` listing parameter.
    ListIdParam,
    "ListId",
    "The list's id (a UUID). (No schema example: Swagger UI would pre-fill it into the optional `list_id` filter.)",
    None
);

uuid_param!(
    /// A webhook id in the path.
    WebhookIdParam,
    "WebhookId",
    "The webhook's id (a UUID).",
    "0190c3a9-2c4d-7e5f-8a6b-7c8d9e0f1a2b"
);

/// The `parent_id` listing parameter: a task id (its direct subtasks) or `none` (top-level
/// tasks only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentParam {
    /// `none`: only top-level tasks.
    TopLevel,
    /// Only the direct subtasks of this task.
    Of(Uuid),
}

string_type!(
    ParentParam,
    "ParentFilter",
    None,
    Some("^(none|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})$"),
    "A task id (only its direct subtasks), or `none` (only top-level tasks). Absent: every level. (No schema example: Swagger UI would pre-fill it.)",
    None
);

impl ParseFromParameter for ParentParam {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        if value == "none" {
            return Ok(ParentParam::TopLevel);
        }
        Uuid::try_parse(value)
            .map(ParentParam::Of)
            .map_err(|_| ParseError::custom("must be a task id (UUID) or `none`"))
    }
}

impl From<ParentParam> for todo_store::ParentFilter {
    fn from(p: ParentParam) -> Self {
        match p {
            ParentParam::TopLevel => todo_store::ParentFilter::TopLevel,
            ParentParam::Of(id) => todo_store::ParentFilter::Of(id),
        }
    }
}

/// `If-Match: "<version>"` (or `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: any current version.
    Any,
    /// A quoted version number.
    Version(i64),
}

string_type!(
    IfMatch,
    "IfMatch",
    None,
    Some(r#"^(\*|(W/)?"[0-9]{1,18}")$"#),
    "The version the write expects, as an entity tag: `\"3\"` (weak `W/\"3\"` accepted), or `*` for any. A stale version is 412.",
    "*"
);

impl IfMatch {
    /// The expected version, if one was named.
    pub fn version(v: Option<IfMatch>) -> Option<i64> {
        match v {
            Some(IfMatch::Version(n)) => Some(n),
            _ => None,
        }
    }
}

impl ParseFromParameter for IfMatch {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        let v = value.trim();
        if v == "*" {
            return Ok(IfMatch::Any);
        }
        let tag = v.strip_prefix("W/").unwrap_or(v);
        tag.strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<i64>().ok())
            .map(IfMatch::Version)
            .ok_or_else(|| ParseError::custom("must be a quoted version such as \"3\", or *"))
    }
}

/// Task priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, serde::Serialize)]
#[oai(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Lowest rank.
    Low,
    /// The default.
    Medium,
    /// Highest rank.
    High,
}

impl From<Priority> for todo_store::Priority {
    fn from(p: Priority) -> Self {
        match p {
            Priority::Low => todo_store::Priority::Low,
            Priority::Medium => todo_store::Priority::Medium,
            Priority::High => todo_store::Priority::High,
        }
    }
}

impl From<todo_store::Priority> for Priority {
    fn from(p: todo_store::Priority) -> Self {
        match p {
            todo_store::Priority::Low => Priority::Low,
            todo_store::Priority::Medium => Priority::Medium,
            todo_store::Priority::High => Priority::High,
        }
    }
}

/// Which tasks a listing includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum StatusFilter {
    /// Every task.
    All,
    /// Not completed.
    Pending,
    /// Completed.
    Completed,
}

/// What a listing sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum SortBy {
    /// Creation time.
    CreatedAt,
    /// Last write.
    UpdatedAt,
    /// Due date (tasks without one last).
    DueAt,
    /// Priority rank.
    Priority,
    /// Title, case-insensitively.
    Title,
    /// Manual order (byte-wise `position`); meaningful with `list_id` and `parent_id`.
    Position,
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum SortOrder {
    /// Ascending.
    Asc,
    /// Descending.
    Desc,
}

/// A task.
#[derive(Debug, Clone, PartialEq, Eq, Object, serde::Serialize)]
#[oai(rename = "Task", example)]
pub struct TaskDto {
    /// UUIDv7 (time-ordered).
    pub id: Uuid,
    /// Owner (the JWT `sub`).
    pub user_id: String,
    /// 1–200 characters, trimmed.
    pub title: String,
    /// At most 1000 characters (not counting surrounding whitespace); stored as given.
    #[oai(nullable)]
    pub description: Option<String>,
    /// Whether the task is done.
    pub completed: bool,
    /// When it last became completed; null while pending.
    #[oai(nullable)]
    pub completed_at: Option<Timestamp>,
    /// Priority.
    pub priority: Priority,
    /// Lower-cased, unique, at most 20.
    pub tags: Vec<String>,
    /// Due date, if any.
    #[oai(nullable)]
    pub due_at: Option<Timestamp>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last write; moves strictly forward.
    pub updated_at: Timestamp,
    /// 1 on creation, +1 on every write; also sent as `ETag`.
    pub version: i64,
    /// The list the task belongs to (a subtask is always in its parent's list).
    pub list_id: Uuid,
    /// The task this one is a subtask of; null for a top-level task.
    #[oai(nullable)]
    pub parent_id: Option<Uuid>,
    /// Opaque ordering key among its siblings (compare byte-wise); changes only through `moveTask`.
    pub position: String,
    /// How the task repeats; null for a one-off task. Completing a recurring task moves
    /// `due_at` to the rule's next occurrence and leaves it open.
    #[oai(nullable)]
    pub recurrence: Option<RecurrenceDto>,
    /// When a completion last advanced this recurring task; null if none has.
    #[oai(nullable)]
    pub last_completed_at: Option<Timestamp>,
    /// Its reminders (at most 5), each with its id, in the order given; `[]` when none.
    pub reminders: Vec<ReminderDto>,
}

impl poem_openapi::types::Example for TaskDto {
    fn example() -> Self {
        task_example()
    }
}

fn task_example() -> TaskDto {
    let t = example_time();
    TaskDto {
        id: Uuid::from_u128(0x0190c3a8_7d4e_7b3a_9f21_5c6d7e8f9a0b),
        user_id: "user_2fG8aB".into(),
        title: "Buy milk".into(),
        description: None,
        completed: false,
        completed_at: None,
        priority: Priority::Medium,
        tags: vec!["home".into(), "errands".into()],
        due_at: Some(example_due()),
        created_at: t,
        updated_at: t,
        version: 1,
        list_id: Uuid::from_u128(LIST_EXAMPLE_ID),
        parent_id: None,
        position: "a0".into(),
        recurrence: Some(recurrence_example()),
        last_completed_at: None,
        reminders: vec![ReminderDto::BeforeDue(ReminderBeforeDueDto {
            id: Uuid::from_u128(0x0190c3a8_7d4e_7b3a_9f21_5c6d7e8f9a1c),
            before_due: "PT15M".into(),
        })],
    }
}

/// The due date of the examples: Monday 5 January 2026, 09:00 in Berlin.
fn example_due() -> Timestamp {
    Timestamp(
        DateTime::parse_from_rfc3339("2026-01-05T08:00:00Z")
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default(),
    )
}

/// How a task repeats: an RFC 5545 rule computed in an IANA time zone.
#[derive(Debug, Clone, PartialEq, Eq, Object, serde::Serialize)]
#[oai(rename = "Recurrence", example)]
pub struct RecurrenceDto {
    /// An RFC 5545 `RRULE` value (no `RRULE:` prefix, no `DTSTART`: the rule starts at the
    /// task's `due_at`). `FREQ` is `DAILY`, `WEEKLY`, `MONTHLY` or `YEARLY`.
    pub rule: String,
    /// The IANA time zone the rule is computed in (09:00 local stays 09:00 across
    /// daylight-saving changes).
    pub timezone: String,
}

impl poem_openapi::types::Example for RecurrenceDto {
    fn example() -> Self {
        recurrence_example()
    }
}

fn recurrence_example() -> RecurrenceDto {
    RecurrenceDto {
        rule: "FREQ=WEEKLY;BYDAY=MO".into(),
        timezone: "Europe/Berlin".into(),
    }
}

impl From<todo_store::Recurrence> for RecurrenceDto {
    fn from(r: todo_store::Recurrence) -> Self {
        RecurrenceDto {
            rule: r.rule,
            timezone: r.timezone,
        }
    }
}

/// A reminder at a fixed time.
#[derive(Debug, Clone, PartialEq, Eq, Object, serde::Serialize)]
#[oai(rename = "ReminderAt", example)]
pub struct ReminderAtDto {
    /// The reminder's id (a UUID), kept while the reminder is sent back unchanged.
    pub id: Uuid,
    /// When it fires.
    pub at: Timestamp,
}

impl poem_openapi::types::Example for ReminderAtDto {
    fn example() -> Self {
        ReminderAtDto {
            id: Uuid::from_u128(0x0190c3a8_7d4e_7b3a_9f21_5c6d7e8f9a1b),
            at: example_due(),
        }
    }
}

/// A reminder a duration before the task's `due_at` (it follows the due date when that moves).
#[derive(Debug, Clone, PartialEq, Eq, Object, serde::Serialize)]
#[oai(rename = "ReminderBeforeDue", example)]
pub struct ReminderBeforeDueDto {
    /// The reminder's id (a UUID), kept while the reminder is sent back unchanged.
    pub id: Uuid,
    /// An ISO 8601 duration, `PT0S` to `P30D`, in its shortest form (`PT15M`, `P1DT2H`).
    pub before_due: String,
}

impl poem_openapi::types::Example for ReminderBeforeDueDto {
    fn example() -> Self {
        ReminderBeforeDueDto {
            id: Uuid::from_u128(0x0190c3a8_7d4e_7b3a_9f21_5c6d7e8f9a1c),
            before_due: "PT15M".into(),
        }
    }
}

/// A reminder: `{"id", "at"}` or `{"id", "before_due"}`. It fires once, within 2 s of its
/// time, unless the task is completed then or the time had passed when it was set.
#[derive(Debug, Clone, PartialEq, Eq, Union, serde::Serialize)]
#[oai(rename = "Reminder", one_of)]
#[serde(untagged)]
pub enum ReminderDto {
    /// At a fixed time.
    At(ReminderAtDto),
    /// Before the due date.
    BeforeDue(ReminderBeforeDueDto),
}

impl From<todo_store::Reminder> for ReminderDto {
    fn from(r: todo_store::Reminder) -> Self {
        match r.kind {
            todo_store::ReminderKind::At(at) => ReminderDto::At(ReminderAtDto {
                id: r.id,
                at: Timestamp(at),
            }),
            todo_store::ReminderKind::BeforeDue(d) => {
                ReminderDto::BeforeDue(ReminderBeforeDueDto {
                    id: r.id,
                    before_due: todo_store::reminder::format_duration(d),
                })
            }
        }
    }
}

/// The id the examples give a list.
const LIST_EXAMPLE_ID: u128 = 0x0190c3a7_1b2c_7d3e_8f40_5a6b7c8d9e0f;

fn example_time() -> Timestamp {
    Timestamp(
        DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123Z")
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default(),
    )
}

impl From<todo_store::Task> for TaskDto {
    fn from(t: todo_store::Task) -> Self {
        TaskDto {
            id: t.id,
            user_id: t.user_id,
            title: t.title,
            description: t.description,
            completed: t.completed,
            completed_at: t.completed_at.map(Timestamp),
            priority: t.priority.into(),
            tags: t.tags,
            due_at: t.due_at.map(Timestamp),
            created_at: Timestamp(t.created_at),
            updated_at: Timestamp(t.updated_at),
            version: t.version,
            list_id: t.list_id,
            parent_id: t.parent_id,
            position: t.position,
            recurrence: t.recurrence.map(RecurrenceDto::from),
            last_completed_at: t.last_completed_at.map(Timestamp),
            reminders: t.reminders.into_iter().map(ReminderDto::from).collect(),
        }
    }
}

/// `{"data": Task}`.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct TaskEnvelope {
    /// The task.
    pub data: TaskDto,
}

/// Paging information of a task list.
#[derive(Debug, Clone, Object, serde::Serialize)]
#[oai(example)]
pub struct ListMeta {
    /// The page size used.
    pub limit: u32,
    /// Pass as `cursor` for the next page; null exactly when no row follows.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
    /// Number of tasks matching the filters (the cursor ignored).
    pub total: i64,
}

impl poem_openapi::types::Example for ListMeta {
    fn example() -> Self {
        meta_example()
    }
}

fn meta_example() -> ListMeta {
    ListMeta {
        limit: 50,
        next_cursor: Some("eyJzIjoiY3JlYXRlZF9hdCIsIm8iOiJkZXNjIn0".into()),
        total: 120,
    }
}

/// `{"data": [Task], "meta": {...}}`.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct TaskListEnvelope {
    /// The page of tasks.
    pub data: Vec<TaskDto>,
    /// Paging.
    pub meta: ListMeta,
}

/// A tag with its number of tasks.
#[derive(Debug, Clone, Object, serde::Serialize)]
#[oai(rename = "TagCount", example)]
pub struct TagCountDto {
    /// The tag.
    pub tag: String,
    /// Tasks carrying it (completed ones too).
    pub count: i64,
}

impl poem_openapi::types::Example for TagCountDto {
    fn example() -> Self {
        tag_example()
    }
}

fn tag_example() -> TagCountDto {
    TagCountDto {
        tag: "home".into(),
        count: 3,
    }
}

/// `{"data": [TagCount]}`.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct TagListEnvelope {
    /// Tags, most used first, then by name.
    pub data: Vec<TagCountDto>,
}

/// A list: a named group of tasks in the user's manual order; one of them is the inbox.
#[derive(Debug, Clone, PartialEq, Eq, Object, serde::Serialize)]
#[oai(rename = "List", example)]
pub struct ListDto {
    /// UUIDv7 (time-ordered).
    pub id: Uuid,
    /// Owner (the JWT `sub`).
    pub user_id: String,
    /// 1–100 characters, trimmed.
    pub name: String,
    /// `#rrggbb`, lower-case; null for none.
    #[oai(nullable)]
    pub color: Option<String>,
    /// Whether this is the user's inbox (exactly one; it cannot be deleted).
    pub is_inbox: bool,
    /// Opaque ordering key among the user's lists (compare byte-wise); changes only through `moveList`.
    pub position: String,
    /// The list's tasks that are not completed, at every level.
    pub open_count: i64,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last write; moves strictly forward.
    pub updated_at: Timestamp,
    /// 1 on creation, +1 on every write; also sent as `ETag`.
    pub version: i64,
}

impl poem_openapi::types::Example for ListDto {
    fn example() -> Self {
        list_example()
    }
}

fn list_example() -> ListDto {
    ListDto {
        id: Uuid::from_u128(LIST_EXAMPLE_ID),
        user_id: "user_2fG8aB".into(),
        name: "Groceries".into(),
        color: Some("#ff8800".into()),
        is_inbox: false,
        position: "a1".into(),
        open_count: 3,
        created_at: example_time(),
        updated_at: example_time(),
        version: 2,
    }
}

impl From<todo_store::List> for ListDto {
    fn from(l: todo_store::List) -> Self {
        ListDto {
            id: l.id,
            user_id: l.user_id,
            name: l.name,
            color: l.color,
            is_inbox: l.is_inbox,
            position: l.position,
            open_count: l.open_count,
            created_at: Timestamp(l.created_at),
            updated_at: Timestamp(l.updated_at),
            version: l.version,
        }
    }
}

/// `{"data": List}`.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct ListEnvelope {
    /// The list.
    pub data: ListDto,
}

/// `{"data": [List]}`.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct ListsEnvelope {
    /// Every list of the user, in `position` order (the inbox included).
    pub data: Vec<ListDto>,
}

/// Health status.
#[derive(Debug, Clone, Object)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// The `q` listing parameter: at most 200 characters, no NUL. Checked here rather than with
/// poem-openapi's `pattern` validator, which compiles its regular expression on every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchParam(pub String);

/// Longest `q`, in characters.
pub const SEARCH_MAX_CHARS: usize = 200;

string_type!(
    SearchParam,
    "Search",
    None,
    Some(r"^[^\x00]*$"),
    None,
    Some(SEARCH_MAX_CHARS),
    "Case-insensitive substring of the title or description, at most 200 characters; `%`, `_` and `\\` are literal.",
    None
);

impl ParseFromParameter for SearchParam {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        if value.contains('\0') {
            return Err(ParseError::custom("must not contain NUL"));
        }
        if value.chars().count() > SEARCH_MAX_CHARS {
            return Err(ParseError::custom(format!(
                "must be at most {SEARCH_MAX_CHARS} characters"
            )));
        }
        Ok(SearchParam(value.to_owned()))
    }
}

// ---- request bodies (schemas; the bodies themselves are parsed by `crate::body`) ----

/// One tag in a request body or the `tag` query parameter: trimmed and lower-cased by the server, then 1–50
/// characters without control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagSchema(pub String);

string_type!(
    TagSchema,
    "Tag",
    None,
    Some(r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"),
    Some(1),
    Some(50),
    "A tag: trimmed and lower-cased by the server, then 1-50 characters, no control characters.",
    "home"
);

impl ParseFromJSON for TagSchema {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(s)) => Ok(TagSchema(s)),
            other => Err(ParseError::expected_type(other.unwrap_or_default())),
        }
    }
}

impl ParseFromParameter for TagSchema {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Ok(TagSchema(value.to_owned()))
    }
}

impl ToJSON for TagSchema {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// Body of `createTask`.
#[derive(Debug, Clone, Object)]
#[oai(rename = "TaskCreate", example, skip_serializing_if_is_none)]
pub struct TaskCreateSchema {
    /// Required; trimmed; 1–200 characters.
    #[oai(validator(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    ))]
    pub title: String,
    /// Optional; at most 1000 characters not counting surrounding whitespace; empty becomes null.
    #[oai(nullable, validator(max_length = 1000, pattern = r"^[^\x00]*$"))]
    pub description: Option<String>,
    /// Default false.
    pub completed: Option<bool>,
    /// Default `medium`.
    pub priority: Option<Priority>,
    /// Each trimmed and lower-cased, 1–50 characters; duplicates removed; at most 20.
    #[oai(nullable, validator(max_items = 20))]
    pub tags: Option<Vec<TagSchema>>,
    /// Optional due date (RFC 3339 with offset).
    #[oai(nullable)]
    pub due_at: Option<Timestamp>,
    /// One of the user's lists (422 otherwise). Default: the parent's list, else the inbox.
    /// With a `parent_id` it must be the parent's list.
    pub list_id: Option<Uuid>,
    /// Make it a subtask of this task (one of the user's; at most 4 levels deep). It goes last
    /// among its siblings.
    #[oai(nullable)]
    pub parent_id: Option<Uuid>,
    /// Makes the task repeat (needs `due_at`); absent or null: a one-off task.
    #[oai(nullable)]
    pub recurrence: Option<RecurrenceInputSchema>,
    /// At most 5 reminders, each `{"at": …}` or `{"before_due": …}` (which needs `due_at`);
    /// absent or null: none.
    #[oai(nullable, validator(max_items = 5))]
    pub reminders: Option<Vec<ReminderInputSchema>>,
}

impl poem_openapi::types::Example for TaskCreateSchema {
    fn example() -> Self {
        create_example()
    }
}

fn create_example() -> TaskCreateSchema {
    TaskCreateSchema {
        title: "Buy milk".into(),
        description: Some("2 litres, semi-skimmed".into()),
        completed: None,
        priority: Some(Priority::High),
        tags: Some(vec![TagSchema("home".into()), TagSchema("errands".into())]),
        // Swagger UI pre-fills this body, so it must be valid for any user: the recurrence and
        // the before_due reminder come with the due date they need.
        due_at: Some(example_due()),
        // No placement: any id here would be no list of the user trying it.
        list_id: None,
        parent_id: None,
        recurrence: Some(recurrence_input_example()),
        reminders: Some(vec![ReminderInputSchema::BeforeDue(
            ReminderBeforeDueInput {
                before_due: "PT15M".into(),
            },
        )]),
    }
}

/// Body of `replaceTask`: the whole content. An absent optional field is cleared or reset to
/// its default; `completed` changes only when given.
#[derive(Debug, Clone, Object)]
#[oai(rename = "TaskReplace", example, skip_serializing_if_is_none)]
pub struct TaskReplaceSchema {
    /// Required; trimmed; 1–200 characters.
    #[oai(validator(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    ))]
    pub title: String,
    /// Absent or null clears it.
    #[oai(nullable, validator(max_length = 1000, pattern = r"^[^\x00]*$"))]
    pub description: Option<String>,
    /// Absent leaves completion as it is.
    pub completed: Option<bool>,
    /// Absent resets to `medium`.
    pub priority: Option<Priority>,
    /// Absent or null clears them.
    #[oai(nullable, validator(max_items = 20))]
    pub tags: Option<Vec<TagSchema>>,
    /// Absent or null clears it.
    #[oai(nullable)]
    pub due_at: Option<Timestamp>,
    /// Needs `due_at`. Absent or null stops the recurrence.
    #[oai(nullable)]
    pub recurrence: Option<RecurrenceInputSchema>,
    /// At most 5. Absent or null removes them all. A reminder identical to one the task has
    /// keeps its id.
    #[oai(nullable, validator(max_items = 5))]
    pub reminders: Option<Vec<ReminderInputSchema>>,
}

impl poem_openapi::types::Example for TaskReplaceSchema {
    fn example() -> Self {
        replace_example()
    }
}

fn replace_example() -> TaskReplaceSchema {
    TaskReplaceSchema {
        title: "Buy oat milk".into(),
        description: None,
        completed: Some(false),
        priority: Some(Priority::Medium),
        tags: Some(vec![TagSchema("home".into())]),
        due_at: None,
        recurrence: None,
        reminders: None,
    }
}

/// Body of `updateTask` (JSON merge patch): absent fields are unchanged; `null` clears
/// `description`, `due_at` and `tags`; `null` for `title`, `priority` or `completed` is 422.
#[derive(Debug, Clone, Object)]
#[oai(rename = "TaskUpdate", example, skip_serializing_if_is_none)]
pub struct TaskUpdateSchema {
    /// New title.
    #[oai(validator(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    ))]
    pub title: Option<String>,
    /// New description, or null to clear.
    #[oai(nullable, validator(max_length = 1000, pattern = r"^[^\x00]*$"))]
    pub description: Option<String>,
    /// New completion state.
    pub completed: Option<bool>,
    /// New priority.
    pub priority: Option<Priority>,
    /// New tags, or null for none.
    #[oai(nullable, validator(max_items = 20))]
    pub tags: Option<Vec<TagSchema>>,
    /// New due date, or null to clear (a recurring task's only with `recurrence: null`).
    #[oai(nullable)]
    pub due_at: Option<Timestamp>,
    /// New recurrence (needs a `due_at`), or null to stop it.
    #[oai(nullable)]
    pub recurrence: Option<RecurrenceInputSchema>,
    /// New reminders (at most 5), or null for none. A reminder identical to one the task has
    /// keeps its id.
    #[oai(nullable, validator(max_items = 5))]
    pub reminders: Option<Vec<ReminderInputSchema>>,
}

impl poem_openapi::types::Example for TaskUpdateSchema {
    fn example() -> Self {
        update_example()
    }
}

fn update_example() -> TaskUpdateSchema {
    TaskUpdateSchema {
        title: None,
        description: None,
        completed: Some(true),
        priority: None,
        tags: None,
        due_at: None,
        recurrence: None,
        reminders: None,
    }
}

/// A recurrence in a request body. Bad rules are 422 on `recurrence.rule`, unknown zones on
/// `recurrence.timezone`, a recurrence without `due_at` on `recurrence`.
#[derive(Debug, Clone, Object)]
#[oai(rename = "RecurrenceInput", example, skip_serializing_if_is_none)]
pub struct RecurrenceInputSchema {
    /// An RFC 5545 `RRULE` value such as `FREQ=WEEKLY;BYDAY=MO,WE`: `FREQ` is `DAILY`,
    /// `WEEKLY`, `MONTHLY` or `YEARLY`; no `DTSTART` (the rule starts at `due_at`). An `UNTIL`
    /// without `Z` is a time of `timezone`.
    #[oai(validator(min_length = 1, max_length = 500))]
    pub rule: String,
    /// An IANA time zone name such as `Europe/Berlin`; default `UTC`.
    pub timezone: Option<String>,
}

impl poem_openapi::types::Example for RecurrenceInputSchema {
    fn example() -> Self {
        recurrence_input_example()
    }
}

fn recurrence_input_example() -> RecurrenceInputSchema {
    RecurrenceInputSchema {
        rule: "FREQ=WEEKLY;BYDAY=MO".into(),
        timezone: Some("Europe/Berlin".into()),
    }
}

/// A reminder at a fixed time, in a request body.
#[derive(Debug, Clone, Object)]
#[oai(rename = "ReminderAtInput", example)]
pub struct ReminderAtInput {
    /// When it fires (RFC 3339 with an offset). A time already past never fires.
    pub at: Timestamp,
}

impl poem_openapi::types::Example for ReminderAtInput {
    fn example() -> Self {
        ReminderAtInput { at: example_due() }
    }
}

/// A reminder before the due date, in a request body (the task needs a `due_at`).
#[derive(Debug, Clone, Object)]
#[oai(rename = "ReminderBeforeDueInput", example)]
pub struct ReminderBeforeDueInput {
    /// An ISO 8601 duration of days, hours, minutes and seconds, `PT0S` to `P30D`: `PT15M`,
    /// `PT1H30M`, `P1D`, `P1W`.
    #[oai(validator(pattern = r"^P(\d+W|(\d+D)?(T(\d+H)?(\d+M)?(\d+([.,]\d{1,3})?S)?)?)$"))]
    pub before_due: String,
}

impl poem_openapi::types::Example for ReminderBeforeDueInput {
    fn example() -> Self {
        ReminderBeforeDueInput {
            before_due: "PT15M".into(),
        }
    }
}

/// A reminder in a request body: `{"at": ts}` or `{"before_due": "PT15M"}`.
#[derive(Debug, Clone, Union)]
#[oai(rename = "ReminderInput", one_of)]
pub enum ReminderInputSchema {
    /// At a fixed time.
    At(ReminderAtInput),
    /// Before the due date.
    BeforeDue(ReminderBeforeDueInput),
}

/// Body of `moveTask`. `parent_id` (non-null): under that task, in its list (a `list_id` given
/// too must be that list). `list_id` alone, or `parent_id: null`: top-level in that list (or the
/// current one). Neither: the same parent, only the place changes. `after`: the sibling at the
/// destination to go right after; `null`: first; absent: last.
#[derive(Debug, Clone, Object)]
#[oai(rename = "TaskMove", example, skip_serializing_if_is_none)]
pub struct TaskMoveSchema {
    /// One of the user's lists: the task becomes top-level there (with its subtree).
    pub list_id: Option<Uuid>,
    /// The new parent (one of the user's tasks, not the task itself or one of its
    /// descendants, at most 4 levels deep), or null for top-level.
    #[oai(nullable)]
    pub parent_id: Option<Uuid>,
    /// A sibling at the destination to place the task right after; null: first; absent: last.
    #[oai(nullable)]
    pub after: Option<Uuid>,
}

impl poem_openapi::types::Example for TaskMoveSchema {
    fn example() -> Self {
        move_example()
    }
}

/// Valid for any task (Swagger UI pre-fills it): stay in place, go last among the siblings.
fn move_example() -> TaskMoveSchema {
    TaskMoveSchema {
        list_id: None,
        parent_id: None,
        after: None,
    }
}

/// Body of `createList`.
#[derive(Debug, Clone, Object)]
#[oai(rename = "ListCreate", example, skip_serializing_if_is_none)]
pub struct ListCreateSchema {
    /// Required; trimmed; 1–100 characters.
    #[oai(validator(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    ))]
    pub name: String,
    /// `#rrggbb` (stored lower-cased), or null for none.
    #[oai(nullable, validator(pattern = r"^#[0-9A-Fa-f]{6}$"))]
    pub color: Option<String>,
}

impl poem_openapi::types::Example for ListCreateSchema {
    fn example() -> Self {
        list_create_example()
    }
}

fn list_create_example() -> ListCreateSchema {
    ListCreateSchema {
        name: "Groceries".into(),
        color: Some("#ff8800".into()),
    }
}

/// Body of `updateList` (JSON merge patch): absent fields are unchanged; `null` clears `color`;
/// `null` for `name` is 422.
#[derive(Debug, Clone, Object)]
#[oai(rename = "ListUpdate", example, skip_serializing_if_is_none)]
pub struct ListUpdateSchema {
    /// New name; trimmed; 1–100 characters.
    #[oai(validator(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    ))]
    pub name: Option<String>,
    /// New colour (`#rrggbb`), or null to clear.
    #[oai(nullable, validator(pattern = r"^#[0-9A-Fa-f]{6}$"))]
    pub color: Option<String>,
}

impl poem_openapi::types::Example for ListUpdateSchema {
    fn example() -> Self {
        list_update_example()
    }
}

fn list_update_example() -> ListUpdateSchema {
    ListUpdateSchema {
        name: Some("Weekly shop".into()),
        color: None,
    }
}

/// Body of `moveList`.
#[derive(Debug, Clone, Object)]
#[oai(rename = "ListMove", example)]
pub struct ListMoveSchema {
    /// Another of the user's lists to place this one right after; null: first; absent: last.
    #[oai(nullable)]
    pub after: Option<Uuid>,
}

impl poem_openapi::types::Example for ListMoveSchema {
    fn example() -> Self {
        list_move_example()
    }
}

fn list_move_example() -> ListMoveSchema {
    ListMoveSchema { after: None }
}

/// Body of `toggleTaskCompletion`: omit the body (or send `{}`) to toggle.
#[derive(Debug, Clone, Object)]
#[oai(rename = "CompletionUpdate", example, skip_serializing_if_is_none)]
pub struct CompletionSchema {
    /// Set completion to this value instead of toggling.
    pub completed: Option<bool>,
}

impl poem_openapi::types::Example for CompletionSchema {
    fn example() -> Self {
        completion_example()
    }
}

fn completion_example() -> CompletionSchema {
    CompletionSchema {
        completed: Some(true),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
    use proptest::prelude::*;

    use super::Timestamp;

    fn chrono_format(t: DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    proptest! {
        #[test]
        fn timestamps_format_like_chrono(
            secs in -62_167_219_200i64..253_402_300_800,
            nanos in 0u32..1_000_000_000,
        ) {
            let t = Utc.timestamp_opt(secs, nanos).single().expect("in range");
            prop_assert_eq!(Timestamp::format(t), chrono_format(t));
        }
    }

    #[test]
    fn timestamps_outside_the_fixed_layout_fall_back_to_chrono() {
        for t in [
            Utc.timestamp_opt(-62_167_219_201, 0).single(),
            Utc.timestamp_opt(253_402_300_800, 5_000_000).single(),
            Utc.timestamp_opt(1_483_228_799, 1_500_000_000).single(),
        ]
        .into_iter()
        .flatten()
        {
            assert_eq!(Timestamp::format(t), chrono_format(t));
        }
    }
}
