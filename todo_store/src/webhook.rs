//! Webhooks: a user's subscriptions to their own events, and the outbox that delivers them.
//!
//! Every write appends its records to the user's change log (see [`crate::sync`]); in the same
//! transaction, `enqueue` writes one `webhook_deliveries` row per (enabled webhook, event it
//! asked for), holding the event as it was at that commit. A process that dies after the
//! commit loses nothing: the rows wait for a sender.
//!
//! [`Store::run_webhook_sender`] is the sender, one per instance: it claims due rows
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL) and moves their `next_attempt_at` forward by a
//! lease, so a row is sent by one instance at a time and a crashed sender's rows are due again
//! once the lease runs out. Each attempt is signed with the Standard Webhooks scheme (the
//! `standardwebhooks` crate) and sent with `reqwest` (rustls, no redirects, 10 s timeout);
//! the `webhook-id` is the row's id, the same on every retry. A failed attempt is retried on
//! [`RETRY_SCHEDULE`] times the policy's scale; after the last one the delivery is failed.
//!
//! Addresses: a webhook URL must be `https` (unless [`WebhookPolicy::allow_http`]) and its
//! host must not be, or resolve to, a loopback, private, link-local, multicast or unspecified
//! address (unless [`WebhookPolicy::allow_private`]). The check runs when the URL is set and
//! again at every attempt: the sender's DNS resolver hands the HTTP client only the addresses
//! it checked, so a name that resolves inside is refused, and the connection goes to an
//! address that passed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::backend::Tx;
use crate::error::StoreError;
use crate::query::{Dialect, Scope};
use crate::sync::{ChangeData, EntityKind, Record, Sql};
use crate::task::{self, Checker, Patch, Task};
use crate::{Store, UserTasks};

/// Most webhooks one user may have.
pub const WEBHOOKS_MAX: i64 = 10;
/// Longest webhook URL.
pub const URL_MAX: usize = 2000;
/// Longest description, in code points after trimming.
pub const DESCRIPTION_MAX: usize = 500;
/// Deliveries kept per webhook (newest first); older delivered or failed ones are deleted.
pub const DELIVERY_LOG: i64 = 100;
/// The wait before each retry, before scaling: after the first failed attempt 5 s, then 30 s,
/// 2 min, 10 min, 1 h, 6 h and 12 h. A delivery fails after 1 + 7 attempts.
pub const RETRY_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
    Duration::from_secs(3600),
    Duration::from_secs(6 * 3600),
    Duration::from_secs(12 * 3600),
];
/// How long one attempt may take, answer included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of a receiver's answer that are read.
pub const RESPONSE_BODY_MAX: usize = 64 * 1024;
/// A claimed delivery is due again after this if its sender never reports back: an attempt
/// ends within [`ATTEMPT_TIMEOUT`], so a live sender has reported by then, and a crashed one's
/// deliveries wait no longer than this.
pub const CLAIM_LEASE: Duration = Duration::from_secs(15);
/// Most attempts one sender runs at once.
pub const SENDER_CONCURRENCY: usize = 128;
/// Most attempts one sender runs at once to one webhook: a slow receiver holds no more.
pub const PER_WEBHOOK_CONCURRENCY: usize = 8;
/// Longest the sender sleeps between rounds: a delivery queued on another instance is sent
/// within about this.
pub const SENDER_POLL: Duration = Duration::from_millis(100);
/// Deliveries claimed per round.
const CLAIM_BATCH: i64 = 500;
/// Outbox rows per insert statement.
const INSERT_CHUNK: usize = 100;

/// Every event type a webhook can ask for.
pub const EVENT_TYPES: [&str; 7] = [
    "task.created",
    "task.updated",
    "task.deleted",
    "list.created",
    "list.updated",
    "list.deleted",
    "reminder.fired",
];

/// Which webhook URLs are allowed, and how retries are spaced. The defaults are for the
/// internet: `https` only, no private addresses, the schedule as is.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookPolicy {
    /// Accept `http://` URLs (tests and private setups only).
    pub allow_http: bool,
    /// Accept hosts that are or resolve to loopback, private, link-local or unspecified
    /// addresses (tests and private setups only).
    pub allow_private: bool,
    /// Multiplies every wait of [`RETRY_SCHEDULE`] (e.g. 0.001 in tests).
    pub retry_scale: f64,
}

impl Default for WebhookPolicy {
    fn default() -> Self {
        Self {
            allow_http: false,
            allow_private: false,
            retry_scale: 1.0,
        }
    }
}

/// A webhook as reads return it (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// UUIDv7, generated by the store.
    pub id: Uuid,
    /// Owner.
    pub user_id: String,
    /// Where deliveries are posted.
    pub url: String,
    /// The event types delivered; `None` for all of them.
    pub events: Option<Vec<String>>,
    /// Free text; `None` when empty.
    pub description: Option<String>,
    /// Whether deliveries are queued and sent.
    pub enabled: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last write.
    pub updated_at: DateTime<Utc>,
}

/// A webhook just created, with its signing secret: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedWebhook {
    /// The webhook.
    pub webhook: Webhook,
    /// `whsec_` and the base64 of 32 random bytes: the Standard Webhooks signing key.
    pub secret: String,
}

/// A new webhook, for [`UserTasks::create_webhook`]. Raw input: the store checks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookInput {
    /// Absolute `https://` URL (or `http://` when the policy allows it).
    pub url: String,
    /// Event types to deliver; `None` for all.
    pub events: Option<Vec<String>>,
    /// Optional free text.
    pub description: Option<String>,
}

/// A partial update of a webhook (merge patch semantics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookPatch {
    /// A new URL.
    pub url: Option<String>,
    /// New event types; `Clear` for all of them.
    pub events: Patch<Vec<String>>,
    /// New description; `Clear` removes it.
    pub description: Patch<String>,
    /// Pause or resume deliveries.
    pub enabled: Option<bool>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not yet answered with a 2xx; another attempt will follow.
    Pending,
    /// A receiver answered 2xx.
    Delivered,
    /// Every attempt failed.
    Failed,
}

impl DeliveryStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "delivered" => DeliveryStatus::Delivered,
            "failed" => DeliveryStatus::Failed,
            _ => DeliveryStatus::Pending,
        }
    }
}

/// One delivery of one event to one webhook, as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The delivery's id, sent as `webhook-id` on every attempt.
    pub id: Uuid,
    /// The event type.
    pub event_type: String,
    /// Pending, delivered or failed.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: i64,
    /// The HTTP status of the last answer; `None` before one, or when the last attempt got
    /// none (timeout, refused connection, refused address).
    pub last_response_status: Option<i64>,
    /// When the next attempt is due; `None` once delivered or failed.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the event was queued.
    pub created_at: DateTime<Utc>,
}

/// A delivery as a sender sees it: the event and where it goes.
#[derive(Debug, Clone)]
pub struct OutgoingEvent {
    /// The delivery's id: the `webhook-id`.
    pub id: Uuid,
    /// The webhook.
    pub webhook_id: Uuid,
    /// The event type (`task.created`, …).
    pub event_type: String,
    /// When the change was committed.
    pub event_at: DateTime<Utc>,
    /// The event's data as it was at that commit.
    pub data: ChangeData,
}

/// Turns an event's data into the JSON of the delivery's `data` field. The HTTP layer passes
/// one that renders exactly what `/events` sends; [`default_render`] serialises the store's
/// own types.
pub type Render = Arc<dyn Fn(&OutgoingEvent) -> serde_json::Value + Send + Sync>;

/// The store's own JSON of an event's data.
pub fn default_render(e: &OutgoingEvent) -> serde_json::Value {
    match &e.data {
        ChangeData::Task(t) => serde_json::json!({ "task": t }),
        ChangeData::List(l) => serde_json::json!({ "list": l }),
        ChangeData::Deleted(id) => serde_json::json!({ "id": id }),
        ChangeData::Reminder {
            task,
            reminder,
            scheduled_for,
        } => serde_json::json!({
            "task": task,
            "reminder": reminder,
            "scheduled_for": scheduled_for.to_rfc3339_opts(SecondsFormat::Millis, true),
        }),
    }
}

/// The body of a delivery: `{"type", "timestamp", "data"}`.
pub fn delivery_body(e: &OutgoingEvent, render: &Render) -> Vec<u8> {
    let body = serde_json::json!({
        "type": e.event_type,
        "timestamp": e.event_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": render(e),
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// How one attempt ended, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// Answered 2xx: delivered.
    Delivered,
    /// Failed; another attempt is scheduled.
    Retry,
    /// Failed, and it was the last attempt.
    Failed,
}

impl AttemptOutcome {
    /// `delivered`, `retry` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Retry => "retry",
            AttemptOutcome::Failed => "failed",
        }
    }
}

// ---- addresses ------------------------------------------------------------------------------

/// Whether `ip` is one a webhook may not reach without [`WebhookPolicy::allow_private`]:
/// loopback, private (RFC 1918, unique local), shared (RFC 6598), link-local, multicast,
/// broadcast, unspecified or "this network"; IPv4-mapped and -compatible IPv6 addresses are
/// judged as the IPv4 address they carry.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_unspecified()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let s = a.segments();
            if s[..6] == [0, 0, 0, 0, 0, 0] && !a.is_unspecified() && !a.is_loopback() {
                return is_internal(IpAddr::V4(std::net::Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                )));
            }
            a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Checks a webhook URL's form: absolute `http(s)` with a host, no credentials, at most
/// [`URL_MAX`] bytes; `https` unless the policy allows `http`; an IP-literal or `localhost`
/// host is judged without resolving. Returns the normalised URL.
fn check_form(raw: &str, policy: &WebhookPolicy) -> Result<url::Url, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("must be an absolute https:// URL".into());
    }
    if raw.len() > URL_MAX {
        return Err(format!("must be at most {URL_MAX} bytes"));
    }
    let url = url::Url::parse(raw).map_err(|e| format!("must be an absolute URL ({e})"))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        "http" => return Err("must use https:// (http:// is not allowed here)".into()),
        _ => return Err("must be an absolute https:// URL".into()),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    let Some(host) = url.host() else {
        return Err("must have a host".into());
    };
    if !policy.allow_private {
        let internal = match host {
            url::Host::Ipv4(a) => is_internal(IpAddr::V4(a)),
            url::Host::Ipv6(a) => is_internal(IpAddr::V6(a)),
            url::Host::Domain(d) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                d == "localhost" || d.ends_with(".localhost")
            }
        };
        if internal {
            return Err("must not point to a loopback, private or link-local address".into());
        }
    }
    Ok(url)
}

/// Checks a webhook URL as it is set: its form, then (unless private addresses are allowed)
/// every address its host resolves to. A name that does not resolve now is accepted: it is
/// checked again at every attempt.
pub async fn check_url(raw: &str, policy: &WebhookPolicy) -> Result<String, String> {
    let url = check_form(raw, policy)?;
    if !policy.allow_private
        && let Some(url::Host::Domain(d)) = url.host()
    {
        let port = url.port_or_known_default().unwrap_or(443);
        if let Ok(Ok(addrs)) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::lookup_host((d.to_owned(), port)),
        )
        .await
        {
            for a in addrs {
                if is_internal(a.ip()) {
                    return Err(format!(
                        "must not point to a loopback, private or link-local address ({d} resolves to {})",
                        a.ip()
                    ));
                }
            }
        }
    }
    Ok(url.to_string())
}

/// The sender's DNS resolver: resolves with the system resolver and hands the HTTP client only
/// the addresses a webhook may reach, so the connection goes to a checked address.
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || !is_internal(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!("{host} has no address a webhook may reach").into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

// ---- input ----------------------------------------------------------------------------------

fn check_events(c: &mut Checker, events: Option<Vec<String>>) -> Option<Vec<String>> {
    let events = events?;
    if events.is_empty() {
        c.fail(
            "events",
            "must name at least one event type (leave it out for all)",
        );
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let e = e.trim();
        if !EVENT_TYPES.contains(&e) {
            c.fail(
                &format!("events[{i}]"),
                format!("must be one of: {}", EVENT_TYPES.join(", ")),
            );
        } else if !out.iter().any(|o| o == e) {
            out.push(e.to_owned());
        }
    }
    Some(out)
}

fn check_description(c: &mut Checker, d: Option<String>) -> Option<String> {
    let d = d?;
    let t = d.trim();
    if t.is_empty() {
        return None;
    }
    if t.chars().count() > DESCRIPTION_MAX {
        c.fail(
            "description",
            format!("must be at most {DESCRIPTION_MAX} characters"),
        );
    } else if t.contains('\0') {
        // PostgreSQL text cannot hold NUL; refuse it on both backends alike.
        c.fail("description", "must not contain NUL characters");
    }
    Some(t.to_owned())
}

async fn checked_url(c: &mut Checker, url: &str, policy: &WebhookPolicy) -> String {
    match check_url(url, policy).await {
        Ok(u) => u,
        Err(m) => {
            c.fail("url", m);
            String::new()
        }
    }
}

fn new_secret() -> Result<String, StoreError> {
    use base64::Engine as _;
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|e| StoreError::Config(format!("no random numbers for a secret: {e}")))?;
    Ok(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    ))
}

// ---- statements -----------------------------------------------------------------------------

const WEBHOOK_COLUMNS: &str =
    "id, user_id, url, events, description, enabled, created_at, updated_at";

fn events_json(events: &Option<Vec<String>>) -> Option<String> {
    events
        .as_ref()
        .map(|e| serde_json::to_string(e).unwrap_or_else(|_| "[]".to_owned()))
}

pub(crate) fn parse_events(json: Option<String>) -> Option<Vec<String>> {
    json.and_then(|j| serde_json::from_str(&j).ok())
}

fn select_webhooks(user_id: &str, id: Option<Uuid>, for_update: bool, dialect: Dialect) -> Sql {
    let mut sql = Sql::new();
    let u = sql.bind(user_id);
    sql.push(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE user_id = {u}"
    ));
    if let Some(id) = id {
        let i = sql.bind(id);
        sql.push(&format!(" AND id = {i}"));
    }
    sql.push(" ORDER BY id");
    if for_update && dialect == Dialect::Postgres {
        sql.push(" FOR UPDATE");
    }
    sql
}

fn write_webhook(w: &Webhook, secret: Option<&str>, dialect: Dialect) -> Sql {
    let mut sql = Sql::new();
    let id = sql.bind(w.id);
    let u = sql.bind(w.user_id.as_str());
    let url = sql.bind(w.url.as_str());
    let ev = sql.bind(events_json(&w.events));
    let d = sql.bind(w.description.clone());
    let en = sql.bind(w.enabled);
    let up = sql.bind(dialect.ts(w.updated_at));
    match secret {
        Some(s) => {
            let s = sql.bind(s);
            let cr = sql.bind(dialect.ts(w.created_at));
            sql.push(&format!(
                "INSERT INTO webhooks (id, user_id, url, events, description, enabled, secret, \
                 created_at, updated_at) VALUES ({id}, {u}, {url}, {ev}, {d}, {en}, {s}, {cr}, {up})"
            ));
        }
        None => {
            sql.push(&format!(
                "UPDATE webhooks SET url = {url}, events = {ev}, description = {d}, \
                 enabled = {en}, updated_at = {up} WHERE id = {id} AND user_id = {u}"
            ));
        }
    }
    sql
}

/// The user's enabled webhooks: id and event filter.
fn enabled_hooks(user_id: &str) -> Sql {
    let mut sql = Sql::new();
    let u = sql.bind(user_id);
    let t = sql.bind(true);
    sql.push(&format!(
        "SELECT id, events FROM webhooks WHERE user_id = {u} AND enabled = {t}"
    ));
    sql
}

/// One outbox row waiting to be inserted.
struct Queued {
    webhook_id: Uuid,
    event_type: &'static str,
    payload: String,
}

fn insert_deliveries(user_id: &str, now: DateTime<Utc>, dialect: Dialect, rows: &[Queued]) -> Sql {
    let mut sql = Sql::new();
    let u = sql.bind(user_id);
    let at = sql.bind(dialect.ts(now));
    let pending = sql.bind("pending");
    let mut values = Vec::with_capacity(rows.len());
    for r in rows {
        let id = sql.bind(Uuid::now_v7());
        let w = sql.bind(r.webhook_id);
        let t = sql.bind(r.event_type);
        let p = sql.bind(r.payload.as_str());
        values.push(format!(
            "({id}, {w}, {u}, {t}, {p}, {at}, {pending}, 0, {at}, {at})"
        ));
    }
    sql.push(&format!(
        "INSERT INTO webhook_deliveries (id, webhook_id, user_id, event_type, payload, event_at, \
         status, attempts, next_attempt_at, created_at) VALUES {}",
        values.join(", ")
    ));
    sql
}

// ---- the outbox -----------------------------------------------------------------------------

fn event_type(r: &Record) -> &'static str {
    match (r.kind, r.deleted, r.created) {
        (EntityKind::Task, true, _) => "task.deleted",
        (EntityKind::Task, false, true) => "task.created",
        (EntityKind::Task, false, false) => "task.updated",
        (EntityKind::List, true, _) => "list.deleted",
        (EntityKind::List, false, true) => "list.created",
        (EntityKind::List, false, false) => "list.updated",
        (EntityKind::Reminder, ..) => "reminder.fired",
    }
}

/// Queues, inside a write's transaction, one delivery per (enabled webhook of the user, record
/// of the write whose event type it asked for), with the record's state in that transaction.
/// Called only when the user has an enabled webhook (the log append reads that in its own
/// statement).
pub(crate) async fn enqueue(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    user_id: &str,
    records: &[Record],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let hooks: Vec<crate::backend::HookRow> = tx.fetch_all_as(&enabled_hooks(user_id)).await?;
    if hooks.is_empty() || records.is_empty() {
        return Ok(());
    }
    let hooks: Vec<(Uuid, Option<Vec<String>>)> = hooks
        .into_iter()
        .map(|h| (h.0, parse_events(h.1)))
        .collect();
    let wants = |ty: &'static str| {
        hooks
            .iter()
            .filter(move |(_, ev)| ev.as_ref().is_none_or(|e| e.iter().any(|x| x == ty)))
            .map(|(id, _)| *id)
    };
    let wanted: Vec<&Record> = records
        .iter()
        .filter(|r| wants(event_type(r)).next().is_some())
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let scope = Scope::new(user_id, dialect);
    let ids_of = |kind: EntityKind| -> Vec<Uuid> {
        wanted
            .iter()
            .filter(|r| r.kind == kind && !r.deleted)
            .map(|r| r.id)
            .collect()
    };
    let (task_ids, list_ids, reminder_ids) = (
        ids_of(EntityKind::Task),
        ids_of(EntityKind::List),
        ids_of(EntityKind::Reminder),
    );
    let mut tasks: HashMap<Uuid, Task> = HashMap::new();
    for chunk in task_ids.chunks(500) {
        let found: Vec<Task> = tx.fetch_all_as(&scope.get_many(chunk)).await?;
        tasks.extend(found.into_iter().map(|t| (t.id, t)));
    }
    let mut lists = HashMap::new();
    for chunk in list_ids.chunks(500) {
        let found: Vec<crate::list::List> = tx.fetch_all_as(&scope.get_lists(chunk)).await?;
        lists.extend(found.into_iter().map(|l| (l.id, l)));
    }
    let mut fired: HashMap<Uuid, (Uuid, DateTime<Utc>)> = HashMap::new();
    for chunk in reminder_ids.chunks(500) {
        let rows: Vec<crate::backend::FiredRow> =
            tx.fetch_all_as(&scope.fired_reminders(chunk)).await?;
        let task_ids: Vec<Uuid> = rows.iter().map(|r| r.1).collect();
        for r in rows {
            if let Some(at) = r.2 {
                fired.insert(r.0, (r.1, at));
            }
        }
        for ids in task_ids.chunks(500) {
            let found: Vec<Task> = tx.fetch_all_as(&scope.get_many(ids)).await?;
            tasks.extend(found.into_iter().map(|t| (t.id, t)));
        }
    }
    let mut queued = Vec::new();
    for r in wanted {
        let ty = event_type(r);
        let data = if r.deleted {
            Some(ChangeData::Deleted(r.id))
        } else {
            match r.kind {
                EntityKind::Task => tasks.get(&r.id).cloned().map(ChangeData::Task),
                EntityKind::List => lists.get(&r.id).cloned().map(ChangeData::List),
                EntityKind::Reminder => ChangeData::fired(r.id, &fired, &tasks),
            }
        };
        let Some(data) = data else { continue };
        let payload = serde_json::to_string(&data)
            .map_err(|e| StoreError::Database(sqlx::Error::Encode(Box::new(e))))?;
        for webhook_id in wants(ty) {
            queued.push(Queued {
                webhook_id,
                event_type: ty,
                payload: payload.clone(),
            });
        }
    }
    for chunk in queued.chunks(INSERT_CHUNK) {
        tx.execute(&insert_deliveries(user_id, now, dialect, chunk))
            .await?;
    }
    Ok(())
}

/// Whether `e` is the refusal of a single-statement PostgreSQL write for a user with webhooks
/// (the write is then done again in a transaction, which queues the deliveries).
pub(crate) fn is_guard_refusal(e: &StoreError) -> bool {
    match e {
        StoreError::Database(sqlx::Error::Database(db))
        | StoreError::Unavailable(sqlx::Error::Database(db)) => {
            db.code().as_deref() == Some("TDW01")
        }
        _ => false,
    }
}

// ---- the user's webhooks --------------------------------------------------------------------

impl UserTasks {
    /// The webhook policy this handle checks URLs against.
    fn policy(&self) -> Arc<WebhookPolicy> {
        self.webhooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Creates a webhook (enabled) and its secret. Field errors: `url` (form, scheme, or an
    /// internal address), `events` / `events[i]`, `description`, and `webhooks` when the user
    /// already has [`WEBHOOKS_MAX`].
    pub async fn create_webhook(&self, input: WebhookInput) -> Result<CreatedWebhook, StoreError> {
        let policy = self.policy();
        let mut c = Checker::default();
        let url = checked_url(&mut c, &input.url, &policy).await;
        let events = check_events(&mut c, input.events);
        let description = check_description(&mut c, input.description);
        c.finish()?;
        let dialect = self.pool.dialect();
        let now = task::now_ms();
        let webhook = Webhook {
            id: Uuid::now_v7(),
            user_id: self.user_id.clone(),
            url,
            events,
            description,
            enabled: true,
            created_at: now,
            updated_at: now,
        };
        let secret = new_secret()?;
        // The user's inbox row orders one user's webhook creations, so the cap holds.
        let inbox = self.inbox_id().await?;
        let mut touched = crate::write::Touched::default();
        let mut writer = self.pool.writer().await?;
        let mut tx = writer.begin().await?;
        let _: Option<crate::list::List> = tx
            .fetch_one_as(&self.scope().get_list_for_update(inbox))
            .await?;
        let existing: Vec<Webhook> = tx
            .fetch_all_as(&select_webhooks(&self.user_id, None, false, dialect))
            .await?;
        if existing.len() as i64 >= WEBHOOKS_MAX {
            return Err(StoreError::invalid(
                "webhooks",
                format!("a user has at most {WEBHOOKS_MAX} webhooks"),
            ));
        }
        tx.execute(&write_webhook(&webhook, Some(&secret), dialect))
            .await?;
        let created = CreatedWebhook { webhook, secret };
        self.respond(&mut touched, crate::idem::Outcome::WebhookCreated(&created));
        touched.commit(self, tx).await?;
        writer.done();
        Ok(created)
    }

    /// The user's webhooks, oldest first.
    pub async fn webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        self.pool
            .fetch_all_as(&select_webhooks(
                &self.user_id,
                None,
                false,
                self.pool.dialect(),
            ))
            .await
    }

    /// One webhook; [`StoreError::NotFound`] when it is not one of this user's.
    pub async fn get_webhook(&self, id: Uuid) -> Result<Webhook, StoreError> {
        let found: Vec<Webhook> = self
            .pool
            .fetch_all_as(&select_webhooks(
                &self.user_id,
                Some(id),
                false,
                self.pool.dialect(),
            ))
            .await?;
        found.into_iter().next().ok_or(StoreError::NotFound)
    }

    /// Changes a webhook (merge patch). Field errors as for [`Self::create_webhook`].
    pub async fn update_webhook(
        &self,
        id: Uuid,
        patch: WebhookPatch,
    ) -> Result<Webhook, StoreError> {
        let policy = self.policy();
        let mut c = Checker::default();
        let url = match &patch.url {
            Some(u) => Some(checked_url(&mut c, u, &policy).await),
            None => None,
        };
        let events = match patch.events {
            Patch::Unchanged => None,
            Patch::Clear => Some(None),
            Patch::Set(e) => Some(check_events(&mut c, Some(e))),
        };
        let description = match patch.description {
            Patch::Unchanged => None,
            Patch::Clear => Some(None),
            Patch::Set(d) => Some(check_description(&mut c, Some(d))),
        };
        c.finish()?;
        let dialect = self.pool.dialect();
        let mut touched = crate::write::Touched::default();
        let mut writer = self.pool.writer().await?;
        let mut tx = writer.begin().await?;
        let mut w: Webhook = tx
            .fetch_one_as(&select_webhooks(&self.user_id, Some(id), true, dialect))
            .await?
            .ok_or(StoreError::NotFound)?;
        if let Some(u) = url {
            w.url = u;
        }
        if let Some(e) = events {
            w.events = e;
        }
        if let Some(d) = description {
            w.description = d;
        }
        if let Some(en) = patch.enabled {
            w.enabled = en;
        }
        w.updated_at = task::now_ms().max(w.updated_at + chrono::Duration::milliseconds(1));
        tx.execute(&write_webhook(&w, None, dialect)).await?;
        self.respond(&mut touched, crate::idem::Outcome::Webhook(&w));
        touched.commit(self, tx).await?;
        writer.done();
        Ok(w)
    }

    /// Deletes a webhook and its delivery log (pending deliveries are dropped).
    pub async fn delete_webhook(&self, id: Uuid) -> Result<(), StoreError> {
        let mut touched = crate::write::Touched::default();
        let mut writer = self.pool.writer().await?;
        let mut tx = writer.begin().await?;
        let mut sql = Sql::new();
        let u = sql.bind(self.user_id.as_str());
        let i = sql.bind(id);
        sql.push(&format!(
            "DELETE FROM webhooks WHERE user_id = {u} AND id = {i}"
        ));
        if tx.execute(&sql).await? == 0 {
            return Err(StoreError::NotFound);
        }
        self.respond(&mut touched, crate::idem::Outcome::Deleted);
        touched.commit(self, tx).await?;
        writer.done();
        Ok(())
    }

    /// The webhook's latest [`DELIVERY_LOG`] deliveries, newest first.
    pub async fn webhook_deliveries(&self, id: Uuid) -> Result<Vec<Delivery>, StoreError> {
        self.get_webhook(id).await?;
        let mut sql = Sql::new();
        let u = sql.bind(self.user_id.as_str());
        let w = sql.bind(id);
        let n = sql.bind(DELIVERY_LOG);
        sql.push(&format!(
            "SELECT id, event_type, status, attempts, last_response_status, next_attempt_at, \
             created_at FROM webhook_deliveries WHERE user_id = {u} AND webhook_id = {w} \
             ORDER BY id DESC LIMIT {n}"
        ));
        self.pool.fetch_all_as(&sql).await
    }
}

// ---- the sender -----------------------------------------------------------------------------

/// A claimed delivery: the event and its webhook's URL and secret.
pub(crate) struct ClaimRow {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub event_type: String,
    pub payload: String,
    pub event_at: DateTime<Utc>,
    pub attempts: i64,
    pub url: String,
    pub secret: String,
}

fn claim_candidates(dialect: Dialect, now: DateTime<Utc>, saturated: &[Uuid], limit: i64) -> Sql {
    let mut sql = Sql::new();
    let n = sql.bind(dialect.ts(now));
    let t = sql.bind(true);
    let l = sql.bind(limit);
    let mut skip = String::new();
    if !saturated.is_empty() {
        let ids: Vec<String> = saturated.iter().map(|i| sql.bind(*i)).collect();
        skip = format!(" AND d.webhook_id NOT IN ({})", ids.join(", "));
    }
    sql.push(&format!(
        "SELECT d.id, d.webhook_id, d.event_type, d.payload, d.event_at, d.attempts, w.url, \
         w.secret FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
         WHERE d.status = 'pending' AND d.next_attempt_at <= {n} AND w.enabled = {t}{skip} \
         ORDER BY d.next_attempt_at, d.id LIMIT {l}"
    ));
    if dialect == Dialect::Postgres {
        sql.push(" FOR UPDATE OF d SKIP LOCKED");
    }
    sql
}

fn lease(dialect: Dialect, ids: &[Uuid], until: DateTime<Utc>) -> Sql {
    let mut sql = Sql::new();
    let u = sql.bind(dialect.ts(until));
    let list: Vec<String> = ids.iter().map(|i| sql.bind(*i)).collect();
    sql.push(&format!(
        "UPDATE webhook_deliveries SET next_attempt_at = {u} WHERE id IN ({})",
        list.join(", ")
    ));
    sql
}

/// What one attempt came to.
struct Attempt {
    status: Option<u16>,
}

/// In-process bookkeeping of a sender: attempts in flight, by webhook.
#[derive(Default)]
struct InFlight {
    by_webhook: HashMap<Uuid, usize>,
    total: usize,
}

impl Store {
    /// Sets the policy webhook URLs are checked against and deliveries are retried by (the
    /// default allows only public `https` URLs).
    pub fn set_webhook_policy(&self, policy: WebhookPolicy) {
        *self.webhooks.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
    }

    /// The policy in force.
    pub fn webhook_policy(&self) -> WebhookPolicy {
        (**self.webhooks.lock().unwrap_or_else(|p| p.into_inner())).clone()
    }

    /// Deliveries still pending, of every user (for tests and metrics).
    pub async fn pending_webhook_deliveries(&self) -> Result<i64, StoreError> {
        let mut sql = Sql::new();
        sql.push("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'");
        self.pool.fetch_i64(&sql).await
    }

    /// Claims up to `limit` due deliveries, skipping webhooks in `saturated`, at most
    /// `per_webhook` of any other webhook (counting `busy`, those it already has in flight),
    /// and leases them for [`CLAIM_LEASE`].
    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        busy: &HashMap<Uuid, usize>,
    ) -> Result<Vec<ClaimRow>, StoreError> {
        let dialect = self.pool.dialect();
        let saturated: Vec<Uuid> = busy
            .iter()
            .filter(|(_, n)| **n >= PER_WEBHOOK_CONCURRENCY)
            .map(|(id, _)| *id)
            .collect();
        let mut writer = self.pool.writer().await?;
        let mut tx = writer.begin().await?;
        let candidates: Vec<ClaimRow> = tx
            .fetch_all_as(&claim_candidates(dialect, now, &saturated, CLAIM_BATCH))
            .await?;
        let mut taken: HashMap<Uuid, usize> = HashMap::new();
        let mut chosen = Vec::new();
        for c in candidates {
            if chosen.len() >= limit {
                break;
            }
            let n = taken.entry(c.webhook_id).or_insert(0);
            if busy.get(&c.webhook_id).copied().unwrap_or(0) + *n >= PER_WEBHOOK_CONCURRENCY {
                continue;
            }
            *n += 1;
            chosen.push(c);
        }
        if !chosen.is_empty() {
            let ids: Vec<Uuid> = chosen.iter().map(|c| c.id).collect();
            let until = now + chrono::Duration::from_std(CLAIM_LEASE).unwrap_or_default();
            for chunk in ids.chunks(500) {
                tx.execute(&lease(dialect, chunk, until)).await?;
            }
        }
        tx.commit().await?;
        writer.done();
        Ok(chosen)
    }

    /// Records an attempt's result: delivered, or the next attempt's time, or failed; then
    /// trims the webhook's delivery log to its latest [`DELIVERY_LOG`].
    async fn record_attempt(
        &self,
        row: &ClaimRow,
        attempt: &Attempt,
        scale: f64,
    ) -> Result<AttemptOutcome, StoreError> {
        let dialect = self.pool.dialect();
        let now = task::now_ms();
        let attempts = row.attempts + 1;
        let delivered = attempt.status.is_some_and(|s| (200..300).contains(&s));
        let (status, next, outcome) = if delivered {
            ("delivered", None, AttemptOutcome::Delivered)
        } else if let Some(wait) = usize::try_from(attempts - 1)
            .ok()
            .and_then(|i| RETRY_SCHEDULE.get(i))
        {
            let wait = wait.as_secs_f64() * scale.max(0.0);
            let wait = chrono::Duration::milliseconds((wait * 1000.0).min(1e12) as i64);
            ("pending", Some(now + wait), AttemptOutcome::Retry)
        } else {
            ("failed", None, AttemptOutcome::Failed)
        };
        let mut sql = Sql::new();
        let s = sql.bind(status);
        let a = sql.bind(attempts);
        let r = sql.bind(attempt.status.map(i64::from));
        let n = sql.bind(dialect.ts_opt(next));
        let id = sql.bind(row.id);
        let p = sql.bind("pending");
        sql.push(&format!(
            "UPDATE webhook_deliveries SET status = {s}, attempts = {a}, \
             last_response_status = {r}, next_attempt_at = {n} WHERE id = {id} AND status = {p}"
        ));
        self.pool.execute(&sql).await?;
        if outcome != AttemptOutcome::Retry {
            let mut sql = Sql::new();
            let w = sql.bind(row.webhook_id);
            let keep = sql.bind(DELIVERY_LOG - 1);
            let p = sql.bind("pending");
            sql.push(&format!(
                "DELETE FROM webhook_deliveries WHERE webhook_id = {w} AND status <> {p} AND id < \
                 (SELECT id FROM webhook_deliveries WHERE webhook_id = {w} ORDER BY id DESC \
                 LIMIT 1 OFFSET {keep})"
            ));
            self.pool.execute(&sql).await?;
        }
        Ok(outcome)
    }

    /// The webhook sender, for the host to run as a background task until `shutdown`
    /// resolves: claims due deliveries, sends each (at most [`SENDER_CONCURRENCY`] at once,
    /// [`PER_WEBHOOK_CONCURRENCY`] per webhook), records the result and hands its outcome to
    /// `on_outcome`. Run one per instance. At shutdown attempts still in flight are dropped;
    /// their claims expire after [`CLAIM_LEASE`] and the deliveries are sent again, by this
    /// or another instance (delivery is at least once; the `webhook-id` tells repeats apart).
    pub async fn run_webhook_sender<O>(
        &self,
        shutdown: impl Future<Output = ()>,
        render: Render,
        on_outcome: O,
    ) where
        O: Fn(AttemptOutcome) + Send + Sync + 'static,
    {
        let policy = self.webhook_policy();
        let client = match reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(ATTEMPT_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .no_proxy()
            .user_agent(concat!("todo-backend-webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: policy.allow_private,
            }))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "webhook sender: no HTTP client; not sending");
                shutdown.await;
                return;
            }
        };
        let on_outcome = Arc::new(on_outcome);
        let inflight = Arc::new(Mutex::new(InFlight::default()));
        let done = Arc::new(tokio::sync::Notify::new());
        let mut tasks = tokio::task::JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            while tasks.try_join_next().is_some() {}
            let (room, busy) = {
                let f = inflight.lock().unwrap_or_else(|p| p.into_inner());
                (
                    SENDER_CONCURRENCY.saturating_sub(f.total),
                    f.by_webhook.clone(),
                )
            };
            let mut full = false;
            if room > 0 {
                match self.claim_deliveries(task::now_ms(), room, &busy).await {
                    Ok(rows) => {
                        full = rows.len() == room;
                        for row in rows {
                            {
                                let mut f = inflight.lock().unwrap_or_else(|p| p.into_inner());
                                *f.by_webhook.entry(row.webhook_id).or_insert(0) += 1;
                                f.total += 1;
                            }
                            let (store, client, render, policy) =
                                (self.clone(), client.clone(), render.clone(), policy.clone());
                            let (inflight, done, on_outcome) =
                                (inflight.clone(), done.clone(), on_outcome.clone());
                            tasks.spawn(async move {
                                let attempt = send(&client, &row, &render, &policy).await;
                                match store.record_attempt(&row, &attempt, policy.retry_scale).await
                                {
                                    Ok(outcome) => on_outcome(outcome),
                                    Err(e) => tracing::warn!(
                                        error = %e,
                                        delivery = %row.id,
                                        "webhook sender: result not recorded; the claim expires and the delivery is sent again"
                                    ),
                                }
                                let mut f = inflight.lock().unwrap_or_else(|p| p.into_inner());
                                f.total = f.total.saturating_sub(1);
                                if let Some(n) = f.by_webhook.get_mut(&row.webhook_id) {
                                    *n = n.saturating_sub(1);
                                    if *n == 0 {
                                        f.by_webhook.remove(&row.webhook_id);
                                    }
                                }
                                drop(f);
                                done.notify_one();
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "webhook sender: retrying"),
                }
            }
            if full {
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::task::yield_now() => {}
                }
                continue;
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(SENDER_POLL) => {}
                _ = done.notified(), if room == 0 => {}
            }
        }
        tasks.abort_all();
    }
}

/// One attempt: checks the URL again, signs, posts, reads at most [`RESPONSE_BODY_MAX`] of the
/// answer. Any failure to get an answer is an attempt without a status.
async fn send(
    client: &reqwest::Client,
    row: &ClaimRow,
    render: &Render,
    policy: &WebhookPolicy,
) -> Attempt {
    let none = Attempt { status: None };
    let url = match check_form(&row.url, policy) {
        Ok(u) => u,
        Err(m) => {
            tracing::info!(delivery = %row.id, reason = %m, "webhook URL refused at delivery");
            return none;
        }
    };
    let data: ChangeData = match serde_json::from_str(&row.payload) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, delivery = %row.id, "webhook payload unreadable");
            return none;
        }
    };
    let event = OutgoingEvent {
        id: row.id,
        webhook_id: row.webhook_id,
        event_type: row.event_type.clone(),
        event_at: row.event_at,
        data,
    };
    let body = delivery_body(&event, render);
    let msg_id = row.id.to_string();
    let timestamp = Utc::now().timestamp();
    let signature = match standardwebhooks::Webhook::new(&row.secret)
        .and_then(|w| w.sign(&msg_id, timestamp, &body))
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, delivery = %row.id, "webhook not signed");
            return none;
        }
    };
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", msg_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    let mut response = match response {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, delivery = %row.id, "webhook attempt failed");
            return none;
        }
    };
    let status = response.status().as_u16();
    let mut read = 0usize;
    // The answer's body is read (so a kept-alive connection stays usable) up to the limit;
    // the rest is never read.
    while read < RESPONSE_BODY_MAX {
        match response.chunk().await {
            Ok(Some(c)) => read += c.len(),
            Ok(None) | Err(_) => break,
        }
    }
    Attempt {
        status: Some(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
        ] {
            assert!(is_internal(a.parse().unwrap()), "{a}");
        }
        for a in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_internal(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn url_forms() {
        let strict = WebhookPolicy::default();
        let open = WebhookPolicy {
            allow_http: true,
            allow_private: true,
            retry_scale: 1.0,
        };
        assert!(check_form("https://example.com/hook", &strict).is_ok());
        for bad in [
            "",
            "example.com/hook",
            "/hook",
            "ftp://example.com",
            "http://example.com/hook",
            "https://user:pw@example.com/",
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://localhost:8080/",
            "https://a.localhost/",
            "https://10.0.0.5/",
            "https://169.254.169.254/latest",
            "javascript:alert(1)",
        ] {
            assert!(check_form(bad, &strict).is_err(), "{bad}");
        }
        assert!(check_form("http://127.0.0.1:9000/hook", &open).is_ok());
        assert!(check_form("ftp://127.0.0.1/", &open).is_err());
    }

    #[tokio::test]
    async fn a_name_resolving_inside_is_refused() {
        // `localhost` is refused by name; a name in /etc/hosts pointing at loopback is
        // refused by resolution.
        let strict = WebhookPolicy::default();
        assert!(check_url("https://localhost/", &strict).await.is_err());
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        if let Some(name) = hosts.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            let ip = f.next()?;
            if ip.starts_with("127.") || ip == "::1" {
                f.find(|n| !n.contains("localhost") && !n.starts_with('#'))
            } else {
                None
            }
        }) {
            assert!(
                check_url(&format!("https://{name}/"), &strict)
                    .await
                    .is_err(),
                "{name}"
            );
        }
    }

    #[test]
    fn every_record_has_an_event_type() {
        let id = Uuid::now_v7();
        let r = |kind, created, deleted| Record {
            kind,
            id,
            created,
            deleted,
        };
        assert_eq!(
            event_type(&r(EntityKind::Task, true, false)),
            "task.created"
        );
        assert_eq!(event_type(&r(EntityKind::Task, true, true)), "task.deleted");
        assert_eq!(
            event_type(&r(EntityKind::List, false, false)),
            "list.updated"
        );
        assert_eq!(
            event_type(&r(EntityKind::Reminder, false, false)),
            "reminder.fired"
        );
        for t in EVENT_TYPES {
            assert!(t.contains('.'));
        }
    }
}
