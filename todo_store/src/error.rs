//! The store's typed errors.

use std::fmt;

/// One broken field rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field, as named on the wire (`title`, `tags[2]`, `cursor`, …).
    pub field: String,
    /// What is wrong, in words a client can show.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Everything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such task or list for this user (another user's is "not found" too).
    #[error("not found")]
    NotFound,
    /// The expected version did not match; nothing was changed.
    #[error("version conflict: the record is at version {current}")]
    Conflict {
        /// The task's (or list's) current version.
        current: i64,
    },
    /// Input broke one or more field rules; nothing was written.
    #[error("invalid input: {}", join(.0))]
    Invalid(Vec<FieldError>),
    /// The data's state forbids the write (HTTP 409); nothing was changed.
    #[error("refused: {0}")]
    Refused(Refusal),
    /// A sync token older than what the change log still keeps (HTTP 410): the reader must
    /// start again with a full sync.
    #[error("the sync token has expired")]
    Gone,
    /// An idempotency key sent again with a different request (HTTP 422); nothing was done.
    #[error("the idempotency key was used for a different request")]
    IdempotencyReuse,
    /// The first request with this idempotency key is still running (HTTP 409).
    #[error("the idempotency key's first request is still running")]
    IdempotencyInUse,
    /// The database cannot be reached right now (connection lost, pool exhausted, timeout).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A database error that is not about reachability: a bug or a broken schema.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// Applying schema migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// The connection URL or options are not usable.
    #[error("configuration error: {0}")]
    Config(String),
}

/// Why the data's state forbids a write ([`StoreError::Refused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The inbox cannot be deleted.
    InboxUndeletable,
    /// The list still has tasks and the delete did not ask to cascade.
    ListNotEmpty,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::InboxUndeletable => "the inbox cannot be deleted",
            Refusal::ListNotEmpty => "the list still has tasks (delete them with it by cascading)",
        })
    }
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl StoreError {
    /// An [`Invalid`](StoreError::Invalid) error about one field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        StoreError::Invalid(vec![FieldError {
            field: field.to_owned(),
            message: message.into(),
        }])
    }

    /// Whether PostgreSQL aborted the transaction to break a deadlock (40P01) or as a
    /// serialization failure (40001): it was rolled back whole, so running it again is safe.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            StoreError::Unavailable(sqlx::Error::Database(db)) => {
                matches!(db.code().as_deref(), Some("40P01" | "40001"))
            }
            _ => false,
        }
    }

    /// The broken field rules, when this is an [`Invalid`](StoreError::Invalid) error.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            StoreError::Invalid(e) => e,
            _ => &[],
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            StoreError::Unavailable(e)
        } else {
            StoreError::Database(e)
        }
    }
}

/// Whether an error means "the database is not reachable right now" rather than a bug.
fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            // PostgreSQL: 08 connection exception, 53 insufficient resources, 57 operator
            // intervention (statement timeout, admin shutdown), 40001/40P01 retryable.
            // SQLite: 5 SQLITE_BUSY, 6 SQLITE_LOCKED.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57")
                || code == "40001"
                || code == "40P01"
                || code == "5"
                || code == "6"
        }
        _ => false,
    }
}
