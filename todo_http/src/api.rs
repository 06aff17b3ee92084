//! The operations of API.md.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::{Request, RequestBody};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::registry::{MetaSecurityScheme, Registry};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ApiResponse, ExtractParamOptions, OpenApi, Tags,
};
use todo_store::{Order, ParentFilter, SortKey, Status, Store, TaskQuery, UserTasks};

use crate::auth::{AuthError, Authenticator};
use crate::body::{
    CompletionBody, CreateBody, JsonBody, ListCreateBody, ListMoveBody, ListUpdateBody, MoveBody,
    ReplaceBody, UpdateBody,
};
use crate::idempotency::{self, IdempotencyKeyHeader};
use crate::payload::JsonOut;
use crate::problem::{
    ApiError, CreateErrors, DeleteErrors, ListDeleteErrors, ListReadErrors, ListWriteErrors,
    Problem, ReadManyErrors, ReadOneErrors, WriteErrors,
};
use crate::types::{
    IfMatch, ListDto, ListEnvelope, ListIdParam, ListMeta, ListsEnvelope, ParentParam, Priority,
    SearchParam, SortBy, SortOrder, StatusFilter, TagCountDto, TagListEnvelope, TagSchema,
    TaskEnvelope, TaskIdParam, TaskListEnvelope, Timestamp, UserIdParam,
};

#[derive(Tags)]
enum ApiTags {
    /// Create, read, update and delete a user's tasks.
    Tasks,
    /// The tags in use.
    Tags,
    /// A user's lists (one of them the inbox) and their manual order.
    Lists,
}

/// The authenticator, as request data.
#[derive(Clone)]
pub(crate) struct AuthHandle(pub Arc<dyn Authenticator>);

/// The authenticated user, checked against `{user_id}` in the path (403 on mismatch). Taken as
/// each operation's first argument, so 401 and 403 come before every other check.
pub struct Authed(pub String);

impl<'a> ApiExtractor<'a> for Authed {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        registry.create_security_scheme(
            "bearerAuth",
            MetaSecurityScheme {
                ty: "http",
                description: Some(
                    "A JWT whose `sub` is the user id: HS256 with the shared secret, or EdDSA/RS256/ES256 from the configured JWKS.",
                ),
                name: None,
                key_in: None,
                scheme: Some("bearer"),
                bearer_format: Some("JWT"),
                flows: None,
                openid_connect_url: None,
            },
        );
    }

    fn security_schemes() -> Vec<&'static str> {
        vec!["bearerAuth"]
    }

    async fn from_request(
        req: &'a Request,
        _body: &mut RequestBody,
        _opts: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        Ok(Authed(principal_of(req).await?.user_id))
    }
}

/// The request's principal: 401 without valid credentials, 403 when `{user_id}` in the path
/// is another user.
pub(crate) async fn principal_of(req: &Request) -> poem::Result<crate::Principal> {
    let Some(AuthHandle(auth)) = req.data::<AuthHandle>() else {
        return Err(Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "no authenticator").into());
    };
    // poem-openapi names path parameters by position; `user_id` is the first of every path.
    Ok(authenticate(req, auth.as_ref(), req.raw_path_param("param0")).await?)
}

/// Checks the bearer token (401) and that it is for `path_user` (403); returns the principal.
pub(crate) async fn authenticate(
    req: &Request,
    auth: &dyn Authenticator,
    path_user: Option<&str>,
) -> Result<crate::Principal, Problem> {
    let principal = auth.authenticate(req).await.map_err(|e| match e {
        AuthError::Missing => Problem::unauthorized("a bearer token is required"),
        AuthError::Invalid(_) => Problem::invalid_token(e.to_string()),
    })?;
    if path_user != Some(principal.user_id.as_str()) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "the token is not for the user in the path",
        ));
    }
    Ok(principal)
}

/// A single task with its `ETag`.
#[derive(ApiResponse)]
pub enum TaskResponse {
    /// The task.
    #[oai(status = 200, content_type = "application/json")]
    Ok(
        JsonOut<TaskEnvelope>,
        /// The task's version as an entity tag, for `If-Match`.
        #[oai(header = "ETag")]
        String,
    ),
}

/// A created task.
#[derive(ApiResponse)]
pub enum CreatedResponse {
    /// Created.
    #[oai(status = 201, content_type = "application/json")]
    Created(
        JsonOut<TaskEnvelope>,
        /// URL of the new task.
        #[oai(header = "Location")]
        String,
        /// The task's version as an entity tag.
        #[oai(header = "ETag")]
        String,
    ),
}

/// A page of tasks.
#[derive(ApiResponse)]
pub enum TaskPageResponse {
    /// The page.
    #[oai(status = 200, content_type = "application/json")]
    Ok(JsonOut<TaskListEnvelope>),
}

/// Tags with counts.
#[derive(ApiResponse)]
pub enum TagsResponse {
    /// The tags.
    #[oai(status = 200, content_type = "application/json")]
    Ok(JsonOut<TagListEnvelope>),
}

/// No content.
#[derive(ApiResponse)]
pub enum DeletedResponse {
    /// Deleted.
    #[oai(status = 204)]
    NoContent,
}

/// A single list with its `ETag`.
#[derive(ApiResponse)]
pub enum ListResponse {
    /// The list.
    #[oai(status = 200, content_type = "application/json")]
    Ok(
        JsonOut<ListEnvelope>,
        /// The list's version as an entity tag, for `If-Match`.
        #[oai(header = "ETag")]
        String,
    ),
}

/// A created list.
#[derive(ApiResponse)]
pub enum ListCreatedResponse {
    /// Created.
    #[oai(status = 201, content_type = "application/json")]
    Created(
        JsonOut<ListEnvelope>,
        /// URL of the new list.
        #[oai(header = "Location")]
        String,
        /// The list's version as an entity tag.
        #[oai(header = "ETag")]
        String,
    ),
}

/// Every list of a user.
#[derive(ApiResponse)]
pub enum ListsResponse {
    /// The lists, in `position` order.
    #[oai(status = 200, content_type = "application/json")]
    Ok(JsonOut<ListsEnvelope>),
}

/// An entity tag for a version: `"3"`.
pub(crate) fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

fn task_response(t: todo_store::Task) -> TaskResponse {
    let etag = etag(t.version);
    TaskResponse::Ok(JsonOut(TaskEnvelope { data: t.into() }), etag)
}

fn list_response(l: todo_store::List) -> ListResponse {
    let etag = etag(l.version);
    ListResponse::Ok(JsonOut(ListEnvelope { data: l.into() }), etag)
}

/// The URL of a resource just created under the collection this request was sent to. Under a
/// host's prefix (`Route::nest`) the original URI carries it; it is used when it is the full
/// form of the path the handler saw.
pub(crate) fn location(req: &Request, id: uuid::Uuid) -> String {
    format!("{}/{}", collection(req), id)
}

/// The URL of the collection this request was sent to (see [`location`]).
pub(crate) fn collection(req: &Request) -> String {
    let (path, full) = (req.uri().path(), req.original_uri().path());
    let base = if full.ends_with(path) { full } else { path };
    base.trim_end_matches('/').to_owned()
}

/// The task API over a [`Store`].
pub struct TasksApi {
    pub(crate) store: Store,
}

impl TasksApi {
    fn user(&self, user: &Authed) -> Result<UserTasks, Problem> {
        self.store
            .for_user(&user.0)
            .map_err(|e| Problem::from_store_as(e, StatusCode::BAD_REQUEST))
    }
}

type Res<T, E> = Result<T, ApiError<E>>;

#[OpenApi]
impl TasksApi {
    /// List tasks
    ///
    /// Filters, search, sort and keyset paging. `meta.next_cursor` is null exactly when no row
    /// follows; `meta.total` counts every match, the cursor ignored. `list_id` and `parent_id`
    /// select a list and a level of the task tree; `sort=position&order=asc` gives the manual
    /// order of siblings.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/api/:user_id/tasks",
        method = "get",
        operation_id = "listTasks",
        tag = "ApiTags::Tasks"
    )]
    async fn list_tasks(
        &self,
        auth: Authed,
        /// The user (must equal the token's `sub`).
        user_id: Path<UserIdParam>,
        /// `all` (default), `pending` or `completed`.
        status: Query<Option<StatusFilter>>,
        /// Any of these priorities; repeat the parameter for several.
        priority: Query<Option<Vec<Priority>>>,
        /// Tasks carrying every one of these tags (normalised like stored tags); repeatable.
        tag: Query<Option<Vec<TagSchema>>>,
        /// Case-insensitive substring of title or description; `%`, `_` and `\` are literal.
        q: Query<Option<SearchParam>>,
        /// Only tasks with `due_at >= due_after`.
        due_after: Query<Option<Timestamp>>,
        /// Only tasks with `due_at < due_before`.
        due_before: Query<Option<Timestamp>>,
        /// Sort key (default `created_at`); ties break on `id`.
        sort: Query<Option<SortBy>>,
        /// `desc` (default) or `asc`.
        order: Query<Option<SortOrder>>,
        /// Page size, 1–100 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// Opaque cursor from `meta.next_cursor` of the previous page (same sort and order).
        cursor: Query<Option<String>>,
        /// Only tasks of this list (another user's list matches nothing).
        list_id: Query<Option<ListIdParam>>,
        /// A task id: only its direct subtasks; `none`: only top-level tasks; absent: every
        /// level.
        parent_id: Query<Option<ParentParam>>,
    ) -> Res<TaskPageResponse, ReadManyErrors> {
        let _ = user_id;
        let query = TaskQuery {
            status: match status.0 {
                None | Some(StatusFilter::All) => Status::All,
                Some(StatusFilter::Pending) => Status::Pending,
                Some(StatusFilter::Completed) => Status::Completed,
            },
            priorities: priority
                .0
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
            tags: tag.0.unwrap_or_default().into_iter().map(|t| t.0).collect(),
            q: q.0.map(|s| s.0),
            due_after: due_after.0.map(|t| t.0),
            due_before: due_before.0.map(|t| t.0),
            sort: match sort.0 {
                None | Some(SortBy::CreatedAt) => SortKey::CreatedAt,
                Some(SortBy::UpdatedAt) => SortKey::UpdatedAt,
                Some(SortBy::DueAt) => SortKey::DueAt,
                Some(SortBy::Priority) => SortKey::Priority,
                Some(SortBy::Title) => SortKey::Title,
                Some(SortBy::Position) => SortKey::Position,
            },
            order: match order.0 {
                Some(SortOrder::Asc) => Order::Asc,
                None | Some(SortOrder::Desc) => Order::Desc,
            },
            limit: limit.0.unwrap_or(todo_store::query::LIMIT_DEFAULT),
            // An empty `cursor=` is no cursor (clients often send the parameter unconditionally).
            cursor: cursor.0.filter(|c| !c.is_empty()),
            list_id: list_id.0.map(|l| l.0),
            parent: parent_id.0.map_or(ParentFilter::Any, Into::into),
        };
        let page = self
            .user(&auth)?
            .list(&query)
            .await
            .map_err(|e| Problem::from_store_as(e, StatusCode::BAD_REQUEST))?;
        Ok(TaskPageResponse::Ok(JsonOut(TaskListEnvelope {
            data: page.tasks.into_iter().map(Into::into).collect(),
            meta: ListMeta {
                limit: page.limit,
                next_cursor: page.next_cursor,
                total: page.total,
            },
        })))
    }

    /// Create a task
    #[oai(
        path = "/api/:user_id/tasks",
        method = "post",
        operation_id = "createTask",
        tag = "ApiTags::Tasks"
    )]
    async fn create_task(
        &self,
        auth: Authed,
        /// The user (must equal the token's `sub`).
        user_id: Path<UserIdParam>,
        /// Makes the write safe to retry (see the parameter's schema).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKeyHeader>>,
        req: &Request,
        body: JsonBody<CreateBody>,
    ) -> Res<CreatedResponse, CreateErrors> {
        let _ = (user_id, idempotency_key);
        let user = idempotency::attach(req, self.user(&auth)?, Some(collection(req)));
        let t = user.create(body.0).await?;
        let (location, etag) = (location(req, t.id), etag(t.version));
        Ok(CreatedResponse::Created(
            JsonOut(TaskEnvelope { data: t.into() }),
            location,
            etag,
        ))
    }

    /// Get a task
    #[oai(
        path = "/api/:user_id/tasks/:task_id",
        method = "get",
        operation_id = "getTask",
        tag = "ApiTags::Tasks"
    )]
    async fn get_task(
        &self,
        auth: Authed,
        /// The user (must equal the token's `sub`).
        user_id: Path<UserIdParam>,
        /// The task.
        task_id: Path<TaskIdParam>,
    ) -> Res<TaskResponse, ReadOneErrors> {
        let _ = user_id;
        Ok(task_response(self.user(&auth)?.get(task_id.0.0).await?))
    }

    /// Replace a task's content
    ///
    /// An absent optional field is cleared or reset to its default; `completed` changes only
    /// when the body names it.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/api/:user_id/tasks/:task_id",
        method = "put",
        operation_id = "replaceTask",
        tag = "ApiTags::Tasks"
    )]
    async fn replace_task(
        &self,
        auth: Authed,
        /// The user (must equal the token's `sub`).
        user_id: Path<UserIdParam>,
        /// The task.
        task_id: Path<TaskIdParam>,
        /// Apply only at this version (`"3"`), or `*`.
        #[oai(name = "If-Match")]
        if_match: Header<Option<IfMatch>>,
        /// Makes the write safe to retry (see the parameter's schema).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKeyHeader>>,
        req: &Request,
        body: JsonBody<ReplaceBody>,
    ) -> Res<TaskResponse, WriteErrors> {
        let _ = (user_id, idempotency_key);
        let t = idempotency::attach(req, self.user(&auth)?, None)
            .replace(task_id.0.0, body.0, IfMatch::version(if_match.0))
            .await?;
        Ok(task_response(t))
    }

    /// Update a task (JSON merge patch)
    ///
    /// Absent fields are unchanged; `null` clears `description`, `due_at` and `tags`.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/api/:user_id/tasks/:task_id",
        method = "patch",
        operation_id = "updateTask",
        tag = "ApiTags::Tasks"
    )]
    async fn update_task(
        &self,
        auth: Authed,
        /// The user (must equal the token's `sub`).
        user_id: Path<UserIdParam>,
        /// The task.
        task_id: Path<TaskIdParam>,
        /// Apply only at this version (`"3"`), or `*`.
        #[oai(name = "If-Match")]
        if_match: Header<Option<IfMatch>>,
        /// Makes the write safe to retry (see the parameter's schema).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKeyHeader>>,
        req: &Request,
        body: JsonBody<UpdateBody>,
    ) -> Res<TaskResponse, WriteErrors> {
        let _ = (user_id, idempotency_key);
        let t = idempotency::attach(req, self.user(&auth)?, None)
            .patch(task_id.0.0, body.0, IfMatch::version(if_match.0))
            .await?;
        Ok(task_response(t))
    }

    /// Delete a task
    #[oai(
        path = "/api/:user_id/tasks/:task_id",
        method = "delete",
        operation_id = "deleteTask",
        tag = "ApiTags::Tasks"
    )]
    async fn delete_task(
        &self,
        auth: Authed,
        /// The user (must equal the token's `sub`).
        user_id: Path<UserIdParam>,
        /// The task.
        task_id: Path<TaskIdParam>,
        /// Delete only at this version (`"3"`), or `*`.
        #[oai(name = "If-Match")]
        if_match: Header<Option<IfMatch>>,
        /// Makes the write safe to retry (see the parameter's schema).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKeyHeader>>,
        req: &Request,
    ) -> Res<DeletedResponse, DeleteErrors> {
        let _ = (user_id, idempotency_key);
        idempotency::attach(req, self.user(&auth)?, None)
            .delete(task_id.0.0, IfMatch::version(if_match.0))
            .await?;
        Ok(DeletedResponse::NoContent)
    }

    /// Toggle or set completion
    ///
    /// No body or `{}` toggles; `{"completed": true|false}` sets.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/api/:user_id/tasks/:task_id/complete",
        method = "patch",
        operation_id = "toggleTaskCompletion",
        tag = "ApiTags::Tasks"
    )]
    async fn toggle_task(
        &self,
        auth: Authed,
        /// The user (must equal the token's `sub`).
        user_id: Path<UserIdParam>,
        /// The task.
        task_id: Path<TaskIdParam>,
        /// Apply only at this version (`"3"`), or `*`.
        #[oai(name = "If-Match")]
        if_match: Header<Option<IfMatch>>,
        /// Makes the write safe to retry (see the parameter's schema).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKeyHeader>>,
        req: &Request,
        body: JsonBody<CompletionBody>,
    ) -> Res<TaskResponse, WriteErrors> {
        let _ = (user_id, idempotency_key);
        let t = idempotency::attach(req, self.user(&auth)?, None)
            .set_completed(task_id.0.0, body.0, IfMatch::version(if_match.0))
            .await?;
        Ok(task_response(t))
    }

    /// Move a task
    ///
    /// Changes its list, parent and place among its siblings; its whole subtree moves with it.
    /// `parent_id` (non-null) puts it under that task, in that task's list; `list_id` alone (or
    /// `parent_id: null`) makes it top-level there; neither keeps its parent. `after` names the
    /// sibling at the destination to follow; `null` places it first, absent last.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/api/:user_id/tasks/:task_id/move",
        method = "post",
        operation_id = "moveTask",
        tag = "ApiTags::Tasks"
    )]
    async fn move_task(
        &self,
        auth: Authed,
        /// The user (must equal the token's `sub`).
        user_id: Path<UserIdParam>,
        /// The task.
        task_id: Path<TaskIdParam>,
        /// Apply only at this version (`"3"`), or `*`.
        #[oai(name = "If-Match")]
        if_match: Header<Option<IfMatch>>,
        /// Makes the write safe to retry (see the parameter's schema).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKeyHeader>>,
        req: &Request,
        body: JsonBody<MoveBody>,
    ) -> Res<TaskResponse, WriteErrors> {
        let _ = (user_id, idempotency_key);
        let t = idempotency::attach(req, self.user(&auth)?, None)
            .move_task(task_id.0.0, body.0, IfMatch::version(if_match.0))
            .await?;
        Ok(task_response(t))
    }

    /// List lists
    ///
    /// Every list of the user in `position` order, the inbox included (a new user's first
    /// request creates it).
    #[oai(
        path = "/api/:user_id/lists",
        method = "get",
        operation_id = "listLists",
        tag = "ApiTags::Lists"
    )]
    async fn list_lists(
        &self,
        auth: Authed,
        /// The user (must equal the token's `sub`).
        user_id: Path<UserIdParam>,
    ) -> Res<ListsResponse, ReadManyErrors> {
        let _ = user_id;
        let lists = self.user(&auth)?.lists().await?;
        Ok(ListsResponse::Ok(JsonOut(ListsEnvelope {
            data: lists.into_iter().map(ListDto::from).collect(),
        })))
    }

    /// Create a list
    ///
    /// The new list goes last. At most 500 lists per user (422 on `lists` beyond).
    #[oai(
        path = "/api/:user_id/lists",
        method = "post",
        operation_id = "createList",
        tag = "ApiTags::Lists"
    )]
    async fn create_list(
        &self,
        auth: Authed,
        /// The user (must equal the token's `sub`).
        user_id: Path<UserIdParam>,
        /// Makes the write safe to retry (see the parameter's schema).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKeyHeader>>,
        req: &Request,
        body: JsonBody<ListCreateBody>,
    ) -> Res<ListCreatedResponse, CreateErrors> {
        let _ = (user_id, idempotency_key);
        let user = idempotency::attach(req, self.user(&auth)?, Some(collection(req)));
        let l = user.create_list(body.0).await?;
        let (location, etag) = (location(req, l.id), etag(l.version));
        Ok(ListCreatedResponse::Created(
            JsonOut(ListEnvelope { data: l.into() }),
            location,
            etag,
        ))
    }

    /// Get a list
    #[oai(
        path = "/api/:user_id/lists/:list_id",
        method = "get",
        operation_id = "getList",
        tag = "ApiTags::Lists"
    )]
    async fn get_list(
        &self,
        auth: Authed,
        /// The user (must equal the token's `sub`).
        user_id: Path<UserIdParam>,
        /// The list.
        list_id: Path<ListIdParam>,
    ) -> Res<ListResponse, ListReadErrors> {
        let _ = user_id;
        let l = self
            .user(&auth)?
            .get_list(list_id.0.0)
            .await
            .map_err(Problem::from_list_store)?;
        Ok(list_response(l))
    }

    /// Rename or recolour a list (JSON merge patch)
    ///
    /// Absent fields are unchanged; `null` clears `color`; `null` for `name` is 422.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/api/:user_id/lists/:list_id",
        method = "patch",
        operation_id = "updateList",
        tag = "ApiTags::Lists"
    )]
    async fn update_list(
        &self,
        auth: Authed,
        /// The user (must equal the token's `sub`).
        user_id: Path<UserIdParam>,
        /// The list.
        list_id: Path<ListIdParam>,
        /// Apply only at this version (`"3"`), or `*`.
        #[oai(name = "If-Match")]
        if_match: Header<Option<IfMatch>>,
        /// Makes the write safe to retry (see the parameter's schema).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKeyHeader>>,
        req: &Request,
        body: JsonBody<ListUpdateBody>,
    ) -> Res<ListResponse, ListWriteErrors> {
        let _ = (user_id, idempotency_key);
        let l = idempotency::attach(req, self.user(&auth)?, None)
            .update_list(list_id.0.0, body.0, IfMatch::version(if_match.0))
            .await
            .map_err(Problem::from_list_store)?;
        Ok(list_response(l))
    }

    /// Delete a list
    ///
    /// 409 for the inbox, and for a list that still has tasks unless `cascade=true`, which
    /// deletes the list and all its tasks in one transaction.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/api/:user_id/lists/:list_id",
        method = "delete",
        operation_id = "deleteList",
        tag = "ApiTags::Lists"
    )]
    async fn delete_list(
        &self,
        auth: Authed,
        /// The user (must equal the token's `sub`).
        user_id: Path<UserIdParam>,
        /// The list.
        list_id: Path<ListIdParam>,
        /// Delete the list's tasks with it (default false: a list with tasks is 409).
        cascade: Query<Option<bool>>,
        /// Delete only at this version (`"3"`), or `*`.
        #[oai(name = "If-Match")]
        if_match: Header<Option<IfMatch>>,
        /// Makes the write safe to retry (see the parameter's schema).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKeyHeader>>,
        req: &Request,
    ) -> Res<DeletedResponse, ListDeleteErrors> {
        let _ = (user_id, idempotency_key);
        idempotency::attach(req, self.user(&auth)?, None)
            .delete_list(
                list_id.0.0,
                cascade.0.unwrap_or(false),
                IfMatch::version(if_match.0),
            )
            .await
            .map_err(Problem::from_list_store)?;
        Ok(DeletedResponse::NoContent)
    }

    /// Move a list
    ///
    /// Places it right after the list `after`; `null` places it first, absent last.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/api/:user_id/lists/:list_id/move",
        method = "post",
        operation_id = "moveList",
        tag = "ApiTags::Lists"
    )]
    async fn move_list(
        &self,
        auth: Authed,
        /// The user (must equal the token's `sub`).
        user_id: Path<UserIdParam>,
        /// The list.
        list_id: Path<ListIdParam>,
        /// Apply only at this version (`"3"`), or `*`.
        #[oai(name = "If-Match")]
        if_match: Header<Option<IfMatch>>,
        /// Makes the write safe to retry (see the parameter's schema).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKeyHeader>>,
        req: &Request,
        body: JsonBody<ListMoveBody>,
    ) -> Res<ListResponse, ListWriteErrors> {
        let _ = (user_id, idempotency_key);
        let l = idempotency::attach(req, self.user(&auth)?, None)
            .move_list(list_id.0.0, body.0, IfMatch::version(if_match.0))
            .await
            .map_err(Problem::from_list_store)?;
        Ok(list_response(l))
    }

    /// List tags with counts
    ///
    /// Most used first, then by name; completed tasks count.
    #[oai(
        path = "/api/:user_id/tags",
        method = "get",
        operation_id = "listTags",
        tag = "ApiTags::Tags"
    )]
    async fn list_tags(
        &self,
        auth: Authed,
        /// The user (must equal the token's `sub`).
        user_id: Path<UserIdParam>,
    ) -> Res<TagsResponse, ReadManyErrors> {
        let _ = user_id;
        let tags = self.user(&auth)?.tags().await?;
        Ok(TagsResponse::Ok(JsonOut(TagListEnvelope {
            data: tags
                .into_iter()
                .map(|t| TagCountDto {
                    tag: t.tag,
                    count: t.count,
                })
                .collect(),
        })))
    }
}
