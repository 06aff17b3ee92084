//! Idempotency keys: a request retried with the same key is applied once.
//!
//! [`UserTasks::idempotency_begin`] inserts a placeholder (`in_progress`) for the key, or
//! finds the key's record: the stored response to replay, a different request under the same
//! key ([`StoreError::IdempotencyReuse`]), or a first request still running
//! ([`StoreError::IdempotencyInUse`]). The write then runs on a handle made with
//! [`UserTasks::with_idempotency`]: just before its transaction commits, the store hands the
//! write's outcome to the caller's [`Responder`], and stores the response it returns in the
//! same transaction as the effect. So either both the effect and the response are stored, or
//! neither (and the placeholder is still there for a retry after a crash, once its lease of
//! [`IN_PROGRESS_LEASE`] has run out).
//!
//! A write that fails is completed with [`UserTasks::idempotency_failed`]: a refusal (4xx) is
//! stored like a success; an outage (5xx) removes the placeholder, so the key stays unused.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::UserTasks;
use crate::backend::{IdemRow, Tx};
use crate::batch::BatchResult;
use crate::error::StoreError;
use crate::list::List;
use crate::query::Dialect;
use crate::sync::Sql;
use crate::task::{self, Task};

/// Longest idempotency key.
pub const KEY_MAX: usize = 255;
/// A placeholder older than this belongs to a request that died: a new request may take the
/// key over.
pub const IN_PROGRESS_LEASE: Duration = Duration::from_secs(60);

/// What identifies a request under an idempotency key: the same key with another method,
/// path or body is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentRequest {
    /// The `Idempotency-Key` (1–255 visible ASCII characters).
    pub key: String,
    /// The request method.
    pub method: String,
    /// The request path.
    pub path: String,
    /// A hash of the request body (any fixed-size digest; compared byte for byte).
    pub body_hash: Vec<u8>,
}

/// A response stored under an idempotency key, replayed byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers to send again (`ETag`, `Location`, `Content-Type`, …).
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

/// What a write did, as handed to a [`Responder`] inside its transaction.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// A task was created or written; this is its new state.
    Task(&'a Task),
    /// A list was created or written; this is its new state.
    List(&'a List),
    /// A task or list was deleted.
    Deleted,
    /// A batch applied; one result per operation.
    Batch(&'a [BatchResult]),
    /// A webhook was changed; this is its new state.
    Webhook(&'a crate::webhook::Webhook),
    /// A webhook was created; this is it with its secret.
    WebhookCreated(&'a crate::webhook::CreatedWebhook),
}

/// Builds the response of a write from its outcome; called inside the write's transaction.
pub type Responder = Box<dyn FnOnce(Outcome<'_>) -> StoredResponse + Send + Sync>;

/// The result of [`UserTasks::idempotency_begin`].
#[derive(Debug)]
pub enum Begun {
    /// The key's request already completed: send this response again.
    Replay(StoredResponse),
    /// The key is new (a placeholder now holds it): run the request.
    Started(IdempotencyKey),
}

/// A key whose placeholder this request holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    key: String,
}

impl IdempotencyKey {
    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.key
    }
}

/// The pending completion of a handle made by [`UserTasks::with_idempotency`].
pub(crate) struct Slot {
    key: String,
    responder: Mutex<Option<Responder>>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("key", &self.key).finish()
    }
}

/// A response to store with a write.
#[derive(Debug)]
pub(crate) struct Completion {
    key: String,
    response: StoredResponse,
}

fn headers_json(h: &[(String, String)]) -> String {
    serde_json::to_string(h).unwrap_or_else(|_| "[]".to_owned())
}

/// Marks the key's record done with `c`'s response, inside the write's transaction.
pub(crate) async fn complete(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    user_id: &str,
    c: &Completion,
) -> Result<(), StoreError> {
    tx.execute(&store_response(dialect, user_id, &c.key, &c.response))
        .await
        .map(drop)
}

fn store_response(_d: Dialect, user_id: &str, key: &str, r: &StoredResponse) -> Sql {
    let mut sql = Sql::new();
    let st = sql.bind(i16::try_from(r.status).unwrap_or(i16::MAX));
    let h = sql.bind(headers_json(&r.headers));
    let b = sql.bind(r.body.clone());
    let u = sql.bind(user_id);
    let k = sql.bind(key);
    sql.push(&format!(
        "UPDATE idempotency SET state = 'done', status = {st}, headers = {h}, body = {b} \
         WHERE user_id = {u} AND key = {k} AND state = 'in_progress'"
    ));
    sql
}

fn check_key(key: &str) -> Result<(), StoreError> {
    let ok = (1..=KEY_MAX).contains(&key.len()) && key.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "Idempotency-Key",
            format!("must be 1–{KEY_MAX} visible ASCII characters"),
        ))
    }
}

impl UserTasks {
    /// Starts a request under an idempotency key: [`Begun::Started`] (a placeholder now holds
    /// the key) when the key is new or its placeholder's lease ran out, [`Begun::Replay`] when
    /// the same request completed before. The same key with another method, path or body
    /// hash is [`StoreError::IdempotencyReuse`]; a first request still running is
    /// [`StoreError::IdempotencyInUse`]; a malformed key is a field error on
    /// `Idempotency-Key`.
    pub async fn idempotency_begin(&self, req: &IdempotentRequest) -> Result<Begun, StoreError> {
        check_key(&req.key)?;
        let d = self.pool.dialect();
        let now = task::now_ms();
        let mut ins = Sql::new();
        let (u, k, m, p, h, at) = (
            ins.bind(self.user_id.as_str()),
            ins.bind(req.key.as_str()),
            ins.bind(req.method.as_str()),
            ins.bind(req.path.as_str()),
            ins.bind(req.body_hash.clone()),
            ins.bind(d.ts(now)),
        );
        ins.push(&format!(
            "INSERT INTO idempotency (user_id, key, method, path, body_hash, state, created_at) \
             VALUES ({u}, {k}, {m}, {p}, {h}, 'in_progress', {at}) \
             ON CONFLICT (user_id, key) DO NOTHING"
        ));
        let started = || {
            Begun::Started(IdempotencyKey {
                key: req.key.clone(),
            })
        };
        if self.pool.execute(&ins).await? == 1 {
            return Ok(started());
        }
        let mut sel = Sql::new();
        let (u, k) = (sel.bind(self.user_id.as_str()), sel.bind(req.key.as_str()));
        sel.push(&format!(
            "SELECT method, path, body_hash, state, status, headers, body, created_at \
             FROM idempotency WHERE user_id = {u} AND key = {k}"
        ));
        let rows: Vec<IdemRow> = self.pool.fetch_all_as(&sel).await?;
        let Some(row) = rows.into_iter().next() else {
            // Pruned between the two statements: the key is free again.
            return Box::pin(self.idempotency_begin(req)).await;
        };
        if row.method != req.method || row.path != req.path || row.body_hash != req.body_hash {
            return Err(StoreError::IdempotencyReuse);
        }
        if row.state == "done" {
            let headers: Vec<(String, String)> = row
                .headers
                .as_deref()
                .and_then(|h| serde_json::from_str(h).ok())
                .unwrap_or_default();
            return Ok(Begun::Replay(StoredResponse {
                status: row
                    .status
                    .and_then(|s| u16::try_from(s).ok())
                    .unwrap_or(200),
                headers,
                body: row.body.unwrap_or_default(),
            }));
        }
        let lease = chrono::Duration::from_std(IN_PROGRESS_LEASE).unwrap_or_default();
        if row.created_at + lease < now {
            // The first request died holding the key: take the placeholder over (once).
            let mut take = Sql::new();
            let (at, u, k, old) = (
                take.bind(d.ts(now)),
                take.bind(self.user_id.as_str()),
                take.bind(req.key.as_str()),
                take.bind(d.ts(row.created_at)),
            );
            take.push(&format!(
                "UPDATE idempotency SET created_at = {at} WHERE user_id = {u} AND key = {k} \
                 AND state = 'in_progress' AND created_at = {old}"
            ));
            if self.pool.execute(&take).await? == 1 {
                return Ok(started());
            }
        }
        Err(StoreError::IdempotencyInUse)
    }

    /// This handle with `key`'s completion attached: its next write stores the response
    /// `respond` builds from the write's outcome, in the write's own transaction. (The
    /// single-statement fast paths are skipped for it.)
    pub fn with_idempotency(&self, key: &IdempotencyKey, respond: Responder) -> UserTasks {
        let mut u = self.clone();
        u.idem = Some(Arc::new(Slot {
            key: key.key.clone(),
            responder: Mutex::new(Some(respond)),
        }));
        u
    }

    /// Completes `key` after its write failed with `error`: a refusal or field error (4xx) is
    /// stored with `response` like a success; an outage or other server error removes the
    /// placeholder, so a retry runs again.
    pub async fn idempotency_failed(
        &self,
        key: &IdempotencyKey,
        error: &StoreError,
        response: StoredResponse,
    ) -> Result<(), StoreError> {
        let stored = matches!(
            error,
            StoreError::NotFound
                | StoreError::Conflict { .. }
                | StoreError::Invalid(_)
                | StoreError::Refused(_)
                | StoreError::Gone
        );
        if stored {
            self.pool
                .execute(&store_response(
                    self.pool.dialect(),
                    &self.user_id,
                    &key.key,
                    &response,
                ))
                .await
                .map(drop)
        } else {
            self.idempotency_abandon(key).await
        }
    }

    /// Removes `key`'s placeholder (the request ended without a response worth keeping).
    pub async fn idempotency_abandon(&self, key: &IdempotencyKey) -> Result<(), StoreError> {
        let mut del = Sql::new();
        let (u, k) = (del.bind(self.user_id.as_str()), del.bind(key.key.as_str()));
        del.push(&format!(
            "DELETE FROM idempotency WHERE user_id = {u} AND key = {k} AND state = 'in_progress'"
        ));
        self.pool.execute(&del).await.map(drop)
    }

    /// Whether a write can still complete this handle's idempotency record: it has none, or
    /// its responder was not used yet (a write whose transaction failed after building the
    /// response cannot build it again, so it is not run again).
    pub(crate) fn can_respond(&self) -> bool {
        self.idem.as_ref().is_none_or(|slot| {
            slot.responder
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
        })
    }

    /// Hands `outcome` to this handle's responder (if any, once) and keeps the response for
    /// the commit.
    pub(crate) fn respond(&self, touched: &mut crate::write::Touched, outcome: Outcome<'_>) {
        let Some(slot) = &self.idem else { return };
        let responder = slot
            .responder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(r) = responder {
            touched.response = Some(Completion {
                key: slot.key.clone(),
                response: r(outcome),
            });
        }
    }
}
