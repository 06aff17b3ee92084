//! Webhooks (`/api/{user_id}/webhooks…`) and the sender `serve` runs beside the server.
//!
//! The operations translate only: the rules (URL form and the address check, event names, the
//! cap of 10 per user) and the outbox are the store's ([`todo_store::webhook`]). The sender is
//! [`Store::run_webhook_sender`]; [`run_webhook_sender`] runs it with the renderer that gives a
//! delivery's `data` exactly the JSON `/events` sends for that event ([`render`]), and counts
//! every attempt in `todo_webhook_deliveries_total{outcome}`. A host that embeds the API runs it
//! beside its server like the reminder scheduler:
//!
//! ```no_run
//! # async fn host(store: todo_store::Store) {
//! store.set_webhook_policy(todo_store::WebhookPolicy::default());
//! let (stop, mut stopped) = tokio::sync::watch::channel(false);
//! let sender = tokio::spawn(todo_http::webhooks::run_webhook_sender(
//!     store.clone(),
//!     async move {
//!         let _ = stopped.wait_for(|s| *s).await;
//!     },
//! ));
//! // … serve the API until shutdown, then:
//! let _ = stop.send(true);
//! let _ = sender.await;
//! # }
//! ```

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use poem::Request;
use poem::http::StatusCode;
use poem_openapi::param::{Header, Path};
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, Tags};
use serde_json::Value;
use todo_store::{AttemptOutcome, OutgoingEvent, Render, Store, UserTasks};
use uuid::Uuid;

use crate::api::{Authed, DeletedResponse};
use crate::body::{JsonBody, WebhookCreateBody, WebhookUpdateBody};
use crate::events::{EventData, EventType};
use crate::idempotency::{self, IdempotencyKeyHeader};
use crate::payload::JsonOut;
use crate::problem::{
    ApiError, CreateErrors, Problem, ReadManyErrors, ReadOneErrors, WebhookDeleteErrors,
    WebhookWriteErrors,
};
use crate::types::{Timestamp, UserIdParam, WebhookIdParam};

/// Name of the counter of delivery attempts, labelled `outcome`: `delivered` (answered 2xx),
/// `retry` (failed, another attempt scheduled) or `failed` (failed, no attempt left).
pub const DELIVERIES_METRIC: &str = "todo_webhook_deliveries_total";

/// The JSON of a delivery's `data`: what `/events` sends as the `data` of the same event.
pub fn render() -> Render {
    Arc::new(|e: &OutgoingEvent| {
        // Derived `Serialize` of strings, numbers and timestamps cannot fail.
        serde_json::to_value(EventData::from(e.data.clone())).unwrap_or(Value::Null)
    })
}

/// Counts one delivery attempt in [`DELIVERIES_METRIC`].
pub fn count(outcome: AttemptOutcome) {
    metrics::counter!(DELIVERIES_METRIC, "outcome" => outcome.as_str()).increment(1);
}

/// Runs `store`'s webhook sender until `shutdown` resolves, with [`render`] and [`count`].
/// Set the store's [`todo_store::WebhookPolicy`] first: the sender reads it when it starts.
/// At `shutdown` it stops at once; attempts in flight are abandoned and sent again later (the
/// receiver tells repeats apart by `webhook-id`).
pub async fn run_webhook_sender(store: Store, shutdown: impl Future<Output = ()>) {
    // Every outcome is on `/metrics` from the start, at 0.
    for outcome in [
        AttemptOutcome::Delivered,
        AttemptOutcome::Retry,
        AttemptOutcome::Failed,
    ] {
        metrics::counter!(DELIVERIES_METRIC, "outcome" => outcome.as_str()).increment(0);
    }
    store.run_webhook_sender(shutdown, render(), count).await;
}

// ---- wire types ---------------------------------------------------------------------------------

/// An event type as the store names it (`task.created`, …), documented as [`EventType`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct EventName(pub String);

impl Type for EventName {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        EventType::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        EventType::schema_ref()
    }

    fn register(registry: &mut Registry) {
        EventType::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl ParseFromJSON for EventName {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(s)) => Ok(EventName(s)),
            other => Err(ParseError::expected_type(other.unwrap_or_default())),
        }
    }
}

impl ToJSON for EventName {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// A webhook: where the user's events are posted. Its signing secret is never shown again
/// after `createWebhook`.
#[derive(Debug, Clone, PartialEq, Eq, Object, serde::Serialize)]
#[oai(rename = "Webhook", example)]
pub struct WebhookDto {
    /// UUIDv7 (time-ordered).
    pub id: Uuid,
    /// Where deliveries are posted (`https://`, a public address).
    pub url: String,
    /// The event types delivered; null for every type (types added later included).
    #[oai(nullable)]
    pub events: Option<Vec<EventName>>,
    /// Free text for people (at most 500 characters); null for none.
    #[oai(nullable)]
    pub description: Option<String>,
    /// Whether events are queued and sent; a disabled webhook queues nothing, and its pending
    /// deliveries wait until it is enabled again.
    pub enabled: bool,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last write; moves strictly forward.
    pub updated_at: Timestamp,
}

impl poem_openapi::types::Example for WebhookDto {
    fn example() -> Self {
        webhook_example()
    }
}

fn example_time() -> Timestamp {
    Timestamp(
        chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123Z")
            .map(|d| d.with_timezone(&chrono::Utc))
            .unwrap_or_default(),
    )
}

fn webhook_example() -> WebhookDto {
    WebhookDto {
        id: Uuid::from_u128(0x0190c3a9_2c4d_7e5f_8a6b_7c8d9e0f1a2b),
        url: "https://example.com/webhooks/todo".into(),
        events: Some(vec![
            EventName("task.created".into()),
            EventName("task.updated".into()),
            EventName("task.deleted".into()),
        ]),
        description: Some("Mirror tasks into the CRM".into()),
        enabled: true,
        created_at: example_time(),
        updated_at: example_time(),
    }
}

impl From<todo_store::Webhook> for WebhookDto {
    fn from(w: todo_store::Webhook) -> Self {
        WebhookDto {
            id: w.id,
            url: w.url,
            events: w
                .events
                .map(|e| e.into_iter().map(EventName).collect::<Vec<_>>()),
            description: w.description,
            enabled: w.enabled,
            created_at: Timestamp(w.created_at),
            updated_at: Timestamp(w.updated_at),
        }
    }
}

/// A webhook just created, with its signing secret: the only response that shows the secret.
#[derive(Debug, Clone, PartialEq, Eq, Object, serde::Serialize)]
#[oai(rename = "CreatedWebhook", example)]
pub struct CreatedWebhookDto {
    /// The webhook.
    #[oai(flatten)]
    #[serde(flatten)]
    pub webhook: WebhookDto,
    /// The signing secret: `whsec_` followed by the base64 of 32 random bytes. Shown only in
    /// this response: keep it now (a lost secret means deleting the webhook and creating a new
    /// one). Verify each delivery with it: `webhook-signature` holds `v1,<base64 of
    /// HMAC-SHA256("<webhook-id>.<webhook-timestamp>.<body>")>` keyed with the base64-decoded
    /// part after `whsec_` (any Standard Webhooks library does this).
    pub secret: String,
}

impl poem_openapi::types::Example for CreatedWebhookDto {
    fn example() -> Self {
        CreatedWebhookDto {
            webhook: webhook_example(),
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw3cdHxhc5nCY=".into(),
        }
    }
}

impl From<todo_store::CreatedWebhook> for CreatedWebhookDto {
    fn from(c: todo_store::CreatedWebhook) -> Self {
        CreatedWebhookDto {
            webhook: c.webhook.into(),
            secret: c.secret,
        }
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, serde::Serialize)]
#[oai(rename = "WebhookDeliveryStatus", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatusDto {
    /// Not answered with a 2xx yet; another attempt is due at `next_attempt_at`.
    Pending,
    /// A receiver answered 2xx.
    Delivered,
    /// Every attempt failed; no more are made.
    Failed,
}

impl From<todo_store::DeliveryStatus> for DeliveryStatusDto {
    fn from(s: todo_store::DeliveryStatus) -> Self {
        match s {
            todo_store::DeliveryStatus::Pending => DeliveryStatusDto::Pending,
            todo_store::DeliveryStatus::Delivered => DeliveryStatusDto::Delivered,
            todo_store::DeliveryStatus::Failed => DeliveryStatusDto::Failed,
        }
    }
}

/// One event's delivery to a webhook.
#[derive(Debug, Clone, PartialEq, Eq, Object, serde::Serialize)]
#[oai(rename = "WebhookDelivery", example)]
pub struct DeliveryDto {
    /// The delivery's id: the `webhook-id` header of every attempt (the same on retries).
    pub id: Uuid,
    /// The event type.
    pub event_type: EventName,
    /// `pending`, `delivered` or `failed`.
    pub status: DeliveryStatusDto,
    /// Attempts made so far (at most 8: the first and 7 retries).
    pub attempts: i64,
    /// The HTTP status of the last answer; null before the first attempt, or when the last
    /// one got no answer (timeout, refused connection, refused address).
    #[oai(nullable)]
    pub last_response_status: Option<i64>,
    /// When the next attempt is due; null once delivered or failed.
    #[oai(nullable)]
    pub next_attempt_at: Option<Timestamp>,
    /// When the event was queued (the time of the change).
    pub created_at: Timestamp,
}

impl poem_openapi::types::Example for DeliveryDto {
    fn example() -> Self {
        DeliveryDto {
            id: Uuid::from_u128(0x0190c3a9_3d5e_7f60_9b7c_8d9e0f1a2b3c),
            event_type: EventName("task.created".into()),
            status: DeliveryStatusDto::Pending,
            attempts: 1,
            last_response_status: Some(503),
            next_attempt_at: Some(Timestamp(example_time().0 + chrono::Duration::seconds(5))),
            created_at: example_time(),
        }
    }
}

impl From<todo_store::Delivery> for DeliveryDto {
    fn from(d: todo_store::Delivery) -> Self {
        DeliveryDto {
            id: d.id,
            event_type: EventName(d.event_type),
            status: d.status.into(),
            attempts: d.attempts,
            last_response_status: d.last_response_status,
            next_attempt_at: d.next_attempt_at.map(Timestamp),
            created_at: Timestamp(d.created_at),
        }
    }
}

/// `{"data": Webhook}`.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct WebhookEnvelope {
    /// The webhook.
    pub data: WebhookDto,
}

/// `{"data": CreatedWebhook}`.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct CreatedWebhookEnvelope {
    /// The webhook with its secret.
    pub data: CreatedWebhookDto,
}

/// `{"data": [Webhook]}`.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct WebhooksEnvelope {
    /// Every webhook of the user, oldest first.
    pub data: Vec<WebhookDto>,
}

/// `{"data": [WebhookDelivery]}`.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct DeliveriesEnvelope {
    /// The latest 100 deliveries, newest first.
    pub data: Vec<DeliveryDto>,
}

/// Body of `createWebhook`.
#[derive(Debug, Clone, Object)]
#[oai(rename = "WebhookCreate", example, skip_serializing_if_is_none)]
pub struct WebhookCreateSchema {
    /// Required. An absolute `https://` URL (at most 2000 bytes, no credentials) whose host is
    /// not, and does not resolve to, a loopback, private, link-local or unspecified address;
    /// the server may be configured to allow `http://` and such addresses for development.
    #[oai(validator(min_length = 1, max_length = 2000))]
    pub url: String,
    /// The event types to deliver (at least one); absent or null: every type.
    #[oai(nullable, validator(min_items = 1))]
    pub events: Option<Vec<EventType>>,
    /// Optional free text, at most 500 characters; empty becomes null.
    #[oai(nullable, validator(max_length = 500))]
    pub description: Option<String>,
}

impl poem_openapi::types::Example for WebhookCreateSchema {
    fn example() -> Self {
        WebhookCreateSchema {
            url: "https://example.com/webhooks/todo".into(),
            events: Some(vec![
                EventType::TaskCreated,
                EventType::TaskUpdated,
                EventType::TaskDeleted,
            ]),
            description: Some("Mirror tasks into the CRM".into()),
        }
    }
}

/// Body of `updateWebhook` (JSON merge patch): absent fields are unchanged; `null` for
/// `events` means every type, `null` for `description` clears it; `null` for `url` or
/// `enabled` is 422.
#[derive(Debug, Clone, Object)]
#[oai(rename = "WebhookUpdate", example, skip_serializing_if_is_none)]
pub struct WebhookUpdateSchema {
    /// A new URL, under the same rules as on create.
    #[oai(validator(min_length = 1, max_length = 2000))]
    pub url: Option<String>,
    /// New event types (at least one), or null for every type.
    #[oai(nullable, validator(min_items = 1))]
    pub events: Option<Vec<EventType>>,
    /// New description, or null to clear it.
    #[oai(nullable, validator(max_length = 500))]
    pub description: Option<String>,
    /// `false` pauses deliveries (nothing is queued meanwhile), `true` resumes them.
    pub enabled: Option<bool>,
}

impl poem_openapi::types::Example for WebhookUpdateSchema {
    fn example() -> Self {
        WebhookUpdateSchema {
            url: None,
            events: Some(vec![EventType::TaskCreated, EventType::TaskDeleted]),
            description: None,
            enabled: Some(true),
        }
    }
}

// ---- operations ---------------------------------------------------------------------------------

#[derive(Tags)]
enum WebhookTags {
    /// The user's changes posted to a URL of theirs, signed the Standard Webhooks way.
    ///
    /// Each event (the types of `/events`) becomes a `POST` to the webhook's URL with the JSON
    /// body `{"type", "timestamp", "data"}` (`data` is what `/events` sends for that event) and
    /// the headers `webhook-id` (the delivery's id, the same on every retry: deduplicate on
    /// it), `webhook-timestamp` (Unix seconds) and `webhook-signature`: `v1,` and the base64
    /// HMAC-SHA256 of `<webhook-id>.<webhook-timestamp>.<body>`, keyed with the secret's
    /// base64-decoded part after `whsec_`. A 2xx answer within 10 s delivers it; anything else
    /// is retried after 5 s, 30 s, 2 min, 10 min, 1 h, 6 h and 12 h (the server's
    /// `TODO_WEBHOOK_RETRY_SCALE` multiplies these), then the delivery is marked failed.
    /// Deliveries are queued with the change itself, so none is lost. URLs must be `https://`
    /// and must not point to loopback, private or link-local addresses (checked when set and
    /// before every attempt), unless the server is configured to allow them.
    Webhooks,
}

/// A created webhook.
#[derive(ApiResponse)]
pub enum WebhookCreatedResponse {
    /// Created; the body carries the secret, shown this once.
    #[oai(status = 201, content_type = "application/json")]
    Created(
        JsonOut<CreatedWebhookEnvelope>,
        /// URL of the new webhook.
        #[oai(header = "Location")]
        String,
    ),
}

/// A webhook.
#[derive(ApiResponse)]
pub enum WebhookResponse {
    /// The webhook (without its secret).
    #[oai(status = 200, content_type = "application/json")]
    Ok(JsonOut<WebhookEnvelope>),
}

/// Every webhook of a user.
#[derive(ApiResponse)]
pub enum WebhooksResponse {
    /// The webhooks, oldest first (without their secrets).
    #[oai(status = 200, content_type = "application/json")]
    Ok(JsonOut<WebhooksEnvelope>),
}

/// A webhook's delivery log.
#[derive(ApiResponse)]
pub enum DeliveriesResponse {
    /// The latest 100 deliveries, newest first.
    #[oai(status = 200, content_type = "application/json")]
    Ok(JsonOut<DeliveriesEnvelope>),
}

/// The webhook operations over a [`Store`].
pub(crate) struct WebhooksApi {
    pub(crate) store: Store,
}

impl WebhooksApi {
    fn user(&self, user: &Authed) -> Result<UserTasks, Problem> {
        self.store
            .for_user(&user.0)
            .map_err(|e| Problem::from_store_as(e, StatusCode::BAD_REQUEST))
    }
}

type Res<T, E> = Result<T, ApiError<E>>;

#[OpenApi]
impl WebhooksApi {
    /// List webhooks
    ///
    /// Every webhook of the user, oldest first (at most 10). Secrets are never listed.
    #[oai(
        path = "/api/:user_id/webhooks",
        method = "get",
        operation_id = "listWebhooks",
        tag = "WebhookTags::Webhooks"
    )]
    async fn list_webhooks(
        &self,
        auth: Authed,
        /// The user (must equal the token's `sub`).
        user_id: Path<UserIdParam>,
    ) -> Res<WebhooksResponse, ReadManyErrors> {
        let _ = user_id;
        let hooks = self.user(&auth)?.webhooks().await?;
        Ok(WebhooksResponse::Ok(JsonOut(WebhooksEnvelope {
            data: hooks.into_iter().map(WebhookDto::from).collect(),
        })))
    }

    /// Create a webhook
    ///
    /// Starts delivering the user's events (all types, or those in `events`) to `url`. The
    /// response includes the signing `secret` (`whsec_` + base64 of 32 random bytes): it is
    /// shown only in this response, so store it now. `url` must be `https://` and its host
    /// must not be or resolve to a loopback, private, link-local or unspecified address (422
    /// on `url`), unless the server allows them (`TODO_WEBHOOK_ALLOW_HTTP`,
    /// `TODO_WEBHOOK_ALLOW_PRIVATE`). At most 10 webhooks per user (422 on `webhooks`).
    #[oai(
        path = "/api/:user_id/webhooks",
        method = "post",
        operation_id = "createWebhook",
        tag = "WebhookTags::Webhooks"
    )]
    async fn create_webhook(
        &self,
        auth: Authed,
        /// The user (must equal the token's `sub`).
        user_id: Path<UserIdParam>,
        /// Makes the write safe to retry (see the parameter's schema); a replay returns the
        /// same secret.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKeyHeader>>,
        req: &Request,
        body: JsonBody<WebhookCreateBody>,
    ) -> Res<WebhookCreatedResponse, CreateErrors> {
        let _ = (user_id, idempotency_key);
        let user = idempotency::attach(req, self.user(&auth)?, Some(crate::api::collection(req)));
        let created = user
            .create_webhook(body.0)
            .await
            .map_err(Problem::from_webhook_store)?;
        let location = crate::api::location(req, created.webhook.id);
        Ok(WebhookCreatedResponse::Created(
            JsonOut(CreatedWebhookEnvelope {
                data: created.into(),
            }),
            location,
        ))
    }

    /// Get a webhook
    ///
    /// The webhook without its secret.
    #[oai(
        path = "/api/:user_id/webhooks/:webhook_id",
        method = "get",
        operation_id = "getWebhook",
        tag = "WebhookTags::Webhooks"
    )]
    async fn get_webhook(
        &self,
        auth: Authed,
        /// The user (must equal the token's `sub`).
        user_id: Path<UserIdParam>,
        /// The webhook.
        webhook_id: Path<WebhookIdParam>,
    ) -> Res<WebhookResponse, ReadOneErrors> {
        let _ = user_id;
        let w = self
            .user(&auth)?
            .get_webhook(webhook_id.0.0)
            .await
            .map_err(Problem::from_webhook_store)?;
        Ok(WebhookResponse::Ok(JsonOut(WebhookEnvelope {
            data: w.into(),
        })))
    }

    /// Update a webhook (JSON merge patch)
    ///
    /// Absent fields are unchanged. `events: null` delivers every type again; `description:
    /// null` clears it; `enabled: false` pauses deliveries (events meanwhile are not queued)
    /// and `true` resumes them. A new `url` is checked like on create. The secret stays the
    /// same.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/api/:user_id/webhooks/:webhook_id",
        method = "patch",
        operation_id = "updateWebhook",
        tag = "WebhookTags::Webhooks"
    )]
    async fn update_webhook(
        &self,
        auth: Authed,
        /// The user (must equal the token's `sub`).
        user_id: Path<UserIdParam>,
        /// The webhook.
        webhook_id: Path<WebhookIdParam>,
        /// Makes the write safe to retry (see the parameter's schema).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKeyHeader>>,
        req: &Request,
        body: JsonBody<WebhookUpdateBody>,
    ) -> Res<WebhookResponse, WebhookWriteErrors> {
        let _ = (user_id, idempotency_key);
        let w = idempotency::attach(req, self.user(&auth)?, None)
            .update_webhook(webhook_id.0.0, body.0)
            .await
            .map_err(Problem::from_webhook_store)?;
        Ok(WebhookResponse::Ok(JsonOut(WebhookEnvelope {
            data: w.into(),
        })))
    }

    /// Delete a webhook
    ///
    /// Stops its deliveries at once (pending ones are dropped) and deletes its delivery log.
    #[oai(
        path = "/api/:user_id/webhooks/:webhook_id",
        method = "delete",
        operation_id = "deleteWebhook",
        tag = "WebhookTags::Webhooks"
    )]
    async fn delete_webhook(
        &self,
        auth: Authed,
        /// The user (must equal the token's `sub`).
        user_id: Path<UserIdParam>,
        /// The webhook.
        webhook_id: Path<WebhookIdParam>,
        /// Makes the write safe to retry (see the parameter's schema).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKeyHeader>>,
        req: &Request,
    ) -> Res<DeletedResponse, WebhookDeleteErrors> {
        let _ = (user_id, idempotency_key);
        idempotency::attach(req, self.user(&auth)?, None)
            .delete_webhook(webhook_id.0.0)
            .await
            .map_err(Problem::from_webhook_store)?;
        Ok(DeletedResponse::NoContent)
    }

    /// List a webhook's deliveries
    ///
    /// The latest 100 deliveries, newest first: which event, whether it was delivered, is
    /// still pending (and when the next attempt is due) or failed after every retry, how many
    /// attempts were made and the last HTTP status the receiver answered.
    #[oai(
        path = "/api/:user_id/webhooks/:webhook_id/deliveries",
        method = "get",
        operation_id = "listWebhookDeliveries",
        tag = "WebhookTags::Webhooks"
    )]
    async fn list_deliveries(
        &self,
        auth: Authed,
        /// The user (must equal the token's `sub`).
        user_id: Path<UserIdParam>,
        /// The webhook.
        webhook_id: Path<WebhookIdParam>,
    ) -> Res<DeliveriesResponse, ReadOneErrors> {
        let _ = user_id;
        let deliveries = self
            .user(&auth)?
            .webhook_deliveries(webhook_id.0.0)
            .await
            .map_err(Problem::from_webhook_store)?;
        Ok(DeliveriesResponse::Ok(JsonOut(DeliveriesEnvelope {
            data: deliveries.into_iter().map(DeliveryDto::from).collect(),
        })))
    }
}

#[cfg(test)]
mod tests {
    use poem_openapi::types::ToJSON;

    use super::*;

    fn same<T: ToJSON + serde::Serialize>(v: &T) {
        let spec_path = v.to_json().expect("ToJSON gives a value");
        let serde_path = serde_json::to_value(v).expect("serialises");
        assert_eq!(serde_path, spec_path, "serde and ToJSON disagree");
    }

    #[test]
    fn serde_output_equals_the_documented_json() {
        use poem_openapi::types::Example;
        let mut bare = webhook_example();
        bare.events = None;
        bare.description = None;
        for w in [webhook_example(), bare] {
            same(&w);
            same(&WebhookEnvelope { data: w.clone() });
            same(&CreatedWebhookEnvelope {
                data: CreatedWebhookDto {
                    webhook: w,
                    secret: "whsec_x".into(),
                },
            });
        }
        let mut settled = DeliveryDto::example();
        settled.status = DeliveryStatusDto::Delivered;
        settled.last_response_status = None;
        settled.next_attempt_at = None;
        same(&DeliveriesEnvelope {
            data: vec![DeliveryDto::example(), settled],
        });
        same(&WebhooksEnvelope { data: vec![] });
        // The created webhook is the webhook's fields and `secret`, side by side.
        let created = serde_json::to_value(CreatedWebhookDto::example()).expect("serialises");
        let mut keys: Vec<&str> = created
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "created_at",
                "description",
                "enabled",
                "events",
                "id",
                "secret",
                "updated_at",
                "url"
            ]
        );
    }

    /// Every event type the store can deliver is one the spec documents.
    #[test]
    fn store_event_types_are_documented() {
        let mut registry = Registry::new();
        EventType::register(&mut registry);
        let documented: Vec<String> = registry
            .schemas
            .get(EventType::schema_ref().unwrap_reference())
            .map(|s| {
                s.enum_items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for t in todo_store::webhook::EVENT_TYPES {
            assert!(documented.iter().any(|d| d == t), "{t}");
        }
        assert_eq!(documented.len(), todo_store::webhook::EVENT_TYPES.len());
    }

    /// A delivery's `data` is what `/events` sends for the same change.
    #[test]
    fn render_gives_the_event_data() {
        let id = Uuid::now_v7();
        let e = OutgoingEvent {
            id: Uuid::now_v7(),
            webhook_id: Uuid::now_v7(),
            event_type: "task.deleted".into(),
            event_at: chrono::Utc::now(),
            data: todo_store::ChangeData::Deleted(id),
        };
        assert_eq!(render()(&e), serde_json::json!({ "id": id }));
    }
}
