//! Sync (`GET /changes`) and batches (`POST /batch`): translation only; the change log and the
//! batch transaction are the store's ([`todo_store::UserTasks::changes`],
//! [`todo_store::UserTasks::batch`]).

use std::borrow::Cow;

use poem::Request;
use poem::http::StatusCode;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromParameter, ParseResult, Type};
use poem_openapi::{ApiResponse, Object, OpenApi, Tags, Union};
use todo_store::sync::{CHANGES_LIMIT_DEFAULT, CHANGES_LIMIT_MAX};
use todo_store::{BatchError, BatchResult, Store, UserTasks};
use uuid::Uuid;

use crate::api::Authed;
use crate::body::{BatchBody, JsonBody};
use crate::idempotency::{self, IdempotencyKeyHeader};
use crate::payload::JsonOut;
use crate::problem::{ApiError, BatchErrors, Problem, SyncErrors};
use crate::types::{
    ListDto, TaskCreateSchema, TaskDto, TaskReplaceSchema, TaskUpdateSchema, Timestamp, UserIdParam,
};

#[derive(Tags)]
enum SyncTags {
    /// Incremental sync for clients that keep a local copy, and batches of writes applied
    /// in one transaction.
    Sync,
}

/// The `limit` of `listChanges`: 1–1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangesLimit(pub u32);

impl Type for ChangesLimit {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "ChangesLimit".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        let mut s = MetaSchema::new_with_format("integer", "int32");
        s.minimum = Some(1.0);
        s.maximum = Some(f64::from(CHANGES_LIMIT_MAX));
        s.default = Some(CHANGES_LIMIT_DEFAULT.into());
        s.description = Some("Most records in the page, 1–1000 (default 500).");
        MetaSchemaRef::Inline(Box::new(s))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl ParseFromParameter for ChangesLimit {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        value
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=CHANGES_LIMIT_MAX).contains(n))
            .map(ChangesLimit)
            .ok_or_else(|| {
                ParseError::custom(format!("must be an integer from 1 to {CHANGES_LIMIT_MAX}"))
            })
    }
}

/// What a tombstone is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum, serde::Serialize)]
#[oai(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum EntityKind {
    /// A task.
    Task,
    /// A list.
    List,
}

/// A deleted task or list (a tombstone).
#[derive(Debug, Clone, PartialEq, Eq, Object, serde::Serialize)]
#[oai(rename = "Deleted")]
pub struct DeletedDto {
    /// Task or list.
    pub kind: EntityKind,
    /// Its id.
    pub id: Uuid,
    /// When it was deleted.
    pub deleted_at: Timestamp,
}

/// The records of a page of changes.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct ChangesData {
    /// Tasks created or changed since the token, each once, in its latest state.
    pub tasks: Vec<TaskDto>,
    /// Lists created or changed since the token, each once, in its latest state.
    pub lists: Vec<ListDto>,
    /// Tasks and lists deleted since the token.
    pub deleted: Vec<DeletedDto>,
}

/// Where to continue.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct ChangesMeta {
    /// Pass as `since`: for the next page while `has_more`, else for the next sync.
    pub next: String,
    /// Whether another page follows right away.
    pub has_more: bool,
}

/// `{"data": {"tasks", "lists", "deleted"}, "meta": {"next", "has_more"}}`.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct ChangesEnvelope {
    /// The records.
    pub data: ChangesData,
    /// Paging.
    pub meta: ChangesMeta,
}

impl From<todo_store::Changes> for ChangesEnvelope {
    fn from(c: todo_store::Changes) -> Self {
        ChangesEnvelope {
            data: ChangesData {
                tasks: c.tasks.into_iter().map(Into::into).collect(),
                lists: c.lists.into_iter().map(Into::into).collect(),
                deleted: c
                    .deleted
                    .into_iter()
                    .map(|d| DeletedDto {
                        kind: match d.kind {
                            todo_store::EntityKind::Task => EntityKind::Task,
                            // Reminder firings are events only: `changes` never reports them.
                            todo_store::EntityKind::List | todo_store::EntityKind::Reminder => {
                                EntityKind::List
                            }
                        },
                        id: d.id,
                        deleted_at: Timestamp(d.deleted_at),
                    })
                    .collect(),
            },
            meta: ChangesMeta {
                next: c.next,
                has_more: c.has_more,
            },
        }
    }
}

/// A page of changes.
#[derive(ApiResponse)]
pub enum ChangesResponse {
    /// The page.
    #[oai(status = 200, content_type = "application/json")]
    Ok(JsonOut<ChangesEnvelope>),
}

/// Sync and batch operations over a [`Store`].
pub struct SyncApi {
    pub(crate) store: Store,
}

impl SyncApi {
    fn user(&self, user: &Authed) -> Result<UserTasks, Problem> {
        self.store
            .for_user(&user.0)
            .map_err(|e| Problem::from_store_as(e, StatusCode::BAD_REQUEST))
    }
}

#[OpenApi]
impl SyncApi {
    /// Changes since a sync token
    ///
    /// Without `since`: every live task and list (paged). With `since`: every task and list
    /// written after the token, once each in its latest state, and the ones deleted as
    /// tombstones. Repeat with `since=meta.next` while `meta.has_more`, then keep `meta.next`
    /// for the next sync. A token older than the tombstones kept is 410 (start again without
    /// `since`); a malformed one, or one made for another user, is 400.
    #[oai(
        path = "/api/:user_id/changes",
        method = "get",
        operation_id = "listChanges",
        tag = "SyncTags::Sync"
    )]
    async fn list_changes(
        &self,
        auth: Authed,
        /// The user (must equal the token's `sub`).
        user_id: Path<UserIdParam>,
        /// A token from `meta.next` of an earlier page or sync, or an event id.
        since: Query<Option<String>>,
        /// Most records in the page, 1–1000 (default 500).
        limit: Query<Option<ChangesLimit>>,
    ) -> Result<ChangesResponse, ApiError<SyncErrors>> {
        let _ = user_id;
        let limit = limit.0.map_or(CHANGES_LIMIT_DEFAULT, |l| l.0);
        // An empty `since=` is no token (clients often send the parameter unconditionally).
        let since = since.0.filter(|s: &String| !s.is_empty());
        let changes = self
            .user(&auth)?
            .changes(since.as_deref(), limit)
            .await
            .map_err(|e| Problem::from_store_as(e, StatusCode::BAD_REQUEST))?;
        Ok(ChangesResponse::Ok(JsonOut(changes.into())))
    }

    /// Run a batch of task writes
    ///
    /// 1–100 operations applied in order in one transaction: all or none. `"$<ref>"` names a
    /// task created earlier in the batch wherever a task id is expected (`id`, `parent_id`,
    /// `after`). On failure nothing is applied; the status is the first failing operation's,
    /// the problem carries its index as `operation`, and field errors are named
    /// `operations[<index>].<field>` (e.g. `operations[2].task.title`).
    #[oai(
        path = "/api/:user_id/batch",
        method = "post",
        operation_id = "runBatch",
        tag = "SyncTags::Sync"
    )]
    async fn run_batch(
        &self,
        auth: Authed,
        /// The user (must equal the token's `sub`).
        user_id: Path<UserIdParam>,
        /// Makes the batch safe to retry (see the parameter's schema).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKeyHeader>>,
        req: &Request,
        body: JsonBody<BatchBody>,
    ) -> Result<BatchResponse, ApiError<BatchErrors>> {
        let _ = (user_id, idempotency_key);
        let user = idempotency::attach(req, self.user(&auth)?, None);
        let results = user.batch(body.0).await.map_err(batch_problem)?;
        Ok(BatchResponse::Ok(batch_body(&results)))
    }
}

// ---- batches ---------------------------------------------------------------------------------

/// The result of one operation of a committed batch.
#[derive(Debug, Clone, Object, serde::Serialize)]
#[oai(rename = "BatchResult")]
pub struct BatchResultDto {
    /// 201 (created), 200 (written) or 204 (deleted).
    pub status: u16,
    /// The task (absent for 204).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<TaskDto>,
}

/// `{"data": [BatchResult]}`: one result per operation, in order.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct BatchEnvelope {
    /// The results.
    pub data: Vec<BatchResultDto>,
}

/// The body of a batch's response (sent, and stored under an idempotency key).
pub(crate) fn batch_body(results: &[BatchResult]) -> JsonOut<BatchEnvelope> {
    JsonOut(BatchEnvelope {
        data: results
            .iter()
            .map(|r| BatchResultDto {
                status: r.status(),
                data: r.task().cloned().map(Into::into),
            })
            .collect(),
    })
}

/// A committed batch.
#[derive(ApiResponse)]
pub enum BatchResponse {
    /// Every operation applied, in one transaction.
    #[oai(status = 200, content_type = "application/json")]
    Ok(JsonOut<BatchEnvelope>),
}

/// Maps a failed batch: the first failing operation's status, its index as `operation`, and
/// its field errors under `operations[<index>].`.
fn batch_problem(e: BatchError) -> Problem {
    let mut p = Problem::from_store(e.error);
    if let Some(i) = e.index {
        let prefix = format!("operations[{i}].");
        for f in &mut p.errors {
            f.field.insert_str(0, &prefix);
        }
        if !p.errors.is_empty() {
            p.detail = p
                .errors
                .iter()
                .map(|f| format!("{}: {}", f.field, f.message))
                .collect::<Vec<_>>()
                .join("; ");
        }
        p.operation = u32::try_from(i).ok();
    }
    p
}

/// A task id, or `"$<ref>"` naming a task created earlier in the same batch.
type TaskRefSchema = String;

/// `create`: creates a task (result 201).
#[derive(Debug, Clone, Object)]
pub struct BatchCreate {
    /// A createTask body; its `parent_id` may be a `"$<ref>"`.
    pub task: TaskCreateSchema,
    /// The name later operations use as `"$<ref>"` (1–64 characters, unique in the batch).
    #[oai(rename = "ref")]
    pub reference: Option<String>,
}

/// `replace`: replaces a task's content (result 200).
#[derive(Debug, Clone, Object)]
pub struct BatchReplace {
    /// The task (a UUID or `"$<ref>"`).
    pub id: TaskRefSchema,
    /// A replaceTask body.
    pub task: TaskReplaceSchema,
    /// Apply only at this version.
    pub if_match: Option<i64>,
}

/// `update`: applies a merge patch (result 200).
#[derive(Debug, Clone, Object)]
pub struct BatchUpdate {
    /// The task (a UUID or `"$<ref>"`).
    pub id: TaskRefSchema,
    /// An updateTask body (JSON merge patch).
    pub patch: TaskUpdateSchema,
    /// Apply only at this version.
    pub if_match: Option<i64>,
}

/// `complete`: sets or toggles completion (result 200).
#[derive(Debug, Clone, Object)]
pub struct BatchComplete {
    /// The task (a UUID or `"$<ref>"`).
    pub id: TaskRefSchema,
    /// The completion to set; absent toggles.
    pub completed: Option<bool>,
    /// Apply only at this version.
    pub if_match: Option<i64>,
}

/// `move`: moves a task and its subtree (result 200), as moveTask.
#[derive(Debug, Clone, Object)]
pub struct BatchMoveOp {
    /// The task (a UUID or `"$<ref>"`).
    pub id: TaskRefSchema,
    /// The destination list (the task becomes top-level there unless `parent_id` is given).
    pub list_id: Option<Uuid>,
    /// The new parent (a UUID or `"$<ref>"`); `null`: top-level; absent: unchanged.
    #[oai(nullable)]
    pub parent_id: Option<TaskRefSchema>,
    /// The sibling to follow (a UUID or `"$<ref>"`); `null`: first; absent: last.
    #[oai(nullable)]
    pub after: Option<TaskRefSchema>,
    /// Apply only at this version.
    pub if_match: Option<i64>,
}

/// `delete`: deletes a task and its subtree (result 204).
#[derive(Debug, Clone, Object)]
pub struct BatchDelete {
    /// The task (a UUID or `"$<ref>"`).
    pub id: TaskRefSchema,
    /// Apply only at this version.
    pub if_match: Option<i64>,
}

/// One batch operation, by `op`.
#[derive(Debug, Clone, Union)]
#[oai(discriminator_name = "op")]
pub enum BatchOperation {
    /// Create a task.
    #[oai(mapping = "create")]
    Create(BatchCreate),
    /// Replace a task's content.
    #[oai(mapping = "replace")]
    Replace(BatchReplace),
    /// Merge-patch a task.
    #[oai(mapping = "update")]
    Update(BatchUpdate),
    /// Set or toggle completion.
    #[oai(mapping = "complete")]
    Complete(BatchComplete),
    /// Move a task.
    #[oai(mapping = "move")]
    Move(BatchMoveOp),
    /// Delete a task.
    #[oai(mapping = "delete")]
    Delete(BatchDelete),
}

/// The body of `runBatch`.
#[derive(Debug, Clone, Object)]
#[oai(rename = "BatchRequest")]
pub struct BatchRequestSchema {
    /// 1–100 operations, applied in order in one transaction.
    #[oai(validator(min_items = 1, max_items = 100))]
    pub operations: Vec<BatchOperation>,
}
