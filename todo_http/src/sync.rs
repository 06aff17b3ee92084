//! Sync (`GET /changes`) and batches (`POST /batch`): translation only; the change log and the
//! batch transaction are the store's ([`todo_store::UserTasks::changes`],
//! [`todo_store::UserTasks::batch`]).

use std::borrow::Cow;

use poem::http::StatusCode;
use poem_openapi::param::{Path, Query};
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromParameter, ParseResult, Type};
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use todo_store::sync::{CHANGES_LIMIT_DEFAULT, CHANGES_LIMIT_MAX};
use todo_store::{Store, UserTasks};
use uuid::Uuid;

use crate::api::Authed;
use crate::payload::JsonOut;
use crate::problem::{ApiError, Problem, SyncErrors};
use crate::types::{ListDto, TaskDto, Timestamp, UserIdParam};

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
                            todo_store::EntityKind::List => EntityKind::List,
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
        let changes = self
            .user(&auth)?
            .changes(since.0.as_deref(), limit)
            .await
            .map_err(|e| Problem::from_store_as(e, StatusCode::BAD_REQUEST))?;
        Ok(ChangesResponse::Ok(JsonOut(changes.into())))
    }
}
