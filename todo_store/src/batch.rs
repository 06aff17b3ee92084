//! Batches: up to [`BATCH_MAX`] task operations applied in order in one transaction, all or
//! nothing, logged at one seq (so they become visible to sync and events only on commit).

use std::collections::HashMap;

use uuid::Uuid;

use crate::error::{FieldError, StoreError};
use crate::task::{MoveTask, Task, TaskInput, TaskPatch};
use crate::{UserTasks, idem, write};

/// Most operations in one batch.
pub const BATCH_MAX: usize = 100;
/// Longest `ref` name.
pub const REF_MAX: usize = 64;

/// A task named by id, or by the `ref` of a task created earlier in the same batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskRef {
    /// An existing task.
    Id(Uuid),
    /// `"$<ref>"`: the task created by the batch's `create` with this `ref`.
    Ref(String),
}

impl TaskRef {
    /// Parses the wire form: `"$<ref>"` or a UUID; `None` for anything else.
    pub fn parse(s: &str) -> Option<TaskRef> {
        match s.strip_prefix('$') {
            Some(r) => Some(TaskRef::Ref(r.to_owned())),
            None => Uuid::parse_str(s).ok().map(TaskRef::Id),
        }
    }
}

impl From<Uuid> for TaskRef {
    fn from(id: Uuid) -> Self {
        TaskRef::Id(id)
    }
}

/// The move fields of a batch `move` (see [`MoveTask`]), with task references.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchMove {
    /// As [`MoveTask::list_id`].
    pub list_id: Option<Uuid>,
    /// As [`MoveTask::parent_id`].
    pub parent_id: Option<Option<TaskRef>>,
    /// As [`MoveTask::after`].
    pub after: Option<Option<TaskRef>>,
}

/// One operation of a batch. Field errors name paths relative to the operation
/// (`task.title`, `patch.tags[2]`, `id`, `parent_id`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Creates a task (result 201).
    Create {
        /// The name later operations use as `"$<ref>"` (1–64 characters, unique in the batch).
        reference: Option<String>,
        /// The task.
        task: TaskInput,
        /// The parent, when given by reference (overrides `task.parent_id`).
        parent: Option<TaskRef>,
    },
    /// Replaces a task's content (result 200).
    Replace {
        /// The task.
        id: TaskRef,
        /// The new content.
        task: TaskInput,
        /// Expected version.
        if_match: Option<i64>,
    },
    /// Applies a merge patch (result 200).
    Update {
        /// The task.
        id: TaskRef,
        /// The patch.
        patch: TaskPatch,
        /// Expected version.
        if_match: Option<i64>,
    },
    /// Sets or toggles completion (result 200).
    Complete {
        /// The task.
        id: TaskRef,
        /// `None` toggles.
        completed: Option<bool>,
        /// Expected version.
        if_match: Option<i64>,
    },
    /// Moves a task (result 200).
    Move {
        /// The task.
        id: TaskRef,
        /// Where to.
        to: BatchMove,
        /// Expected version.
        if_match: Option<i64>,
    },
    /// Deletes a task and its subtree (result 204).
    Delete {
        /// The task.
        id: TaskRef,
        /// Expected version.
        if_match: Option<i64>,
    },
}

/// The result of one operation of a batch that committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchResult {
    /// A task created (HTTP 201).
    Created(Task),
    /// A task written (HTTP 200).
    Updated(Task),
    /// A task deleted (HTTP 204).
    Deleted,
}

impl BatchResult {
    /// The HTTP status of this result: 201, 200 or 204.
    pub fn status(&self) -> u16 {
        match self {
            BatchResult::Created(_) => 201,
            BatchResult::Updated(_) => 200,
            BatchResult::Deleted => 204,
        }
    }

    /// The task, when there is one.
    pub fn task(&self) -> Option<&Task> {
        match self {
            BatchResult::Created(t) | BatchResult::Updated(t) => Some(t),
            BatchResult::Deleted => None,
        }
    }
}

/// Why a batch applied nothing: the first failing operation (`index`, from 0) and its error,
/// whose field paths are relative to the operation; `index` is `None` when the batch itself
/// is refused (no operations, or more than [`BATCH_MAX`]: a field error on `operations`).
#[derive(Debug, thiserror::Error)]
#[error("operation {index:?}: {error}")]
pub struct BatchError {
    /// The failing operation.
    pub index: Option<usize>,
    /// What failed.
    pub error: StoreError,
}

impl write::TxError for BatchError {
    fn is_retryable(&self) -> bool {
        self.error.is_retryable()
    }
}

/// Prefixes the field paths of a field error.
fn prefixed(e: StoreError, prefix: &str) -> StoreError {
    match e {
        StoreError::Invalid(fields) if !prefix.is_empty() => StoreError::Invalid(
            fields
                .into_iter()
                .map(|f| FieldError {
                    field: format!("{prefix}{}", f.field),
                    message: f.message,
                })
                .collect(),
        ),
        other => other,
    }
}

/// Resolves a reference against the tasks created so far in the batch.
fn resolve(r: &TaskRef, refs: &HashMap<String, Uuid>, field: &str) -> Result<Uuid, StoreError> {
    match r {
        TaskRef::Id(id) => Ok(*id),
        TaskRef::Ref(name) => refs.get(name).copied().ok_or_else(|| {
            StoreError::invalid(
                field,
                format!("${name} names no task created earlier in this batch"),
            )
        }),
    }
}

impl UserTasks {
    /// Applies `ops` in order in one transaction: all of them, or none when one fails (the
    /// first failure is returned with its index). The batch's changes are logged at one seq
    /// and become visible to [`changes`](Self::changes) and subscribers only once it commits.
    pub async fn batch(&self, ops: Vec<BatchOp>) -> Result<Vec<BatchResult>, BatchError> {
        if ops.is_empty() || ops.len() > BATCH_MAX {
            return Err(BatchError {
                index: None,
                error: StoreError::invalid(
                    "operations",
                    format!("a batch has 1 to {BATCH_MAX} operations"),
                ),
            });
        }
        let whole = |error| BatchError { index: None, error };
        let needs_inbox = ops.iter().any(|op| {
            matches!(op, BatchOp::Create { task, parent, .. }
                if task.list_id.is_none() && task.parent_id.is_none() && parent.is_none())
        });
        let inbox = if needs_inbox {
            Some(self.inbox_id().await.map_err(whole)?)
        } else {
            None
        };
        self.retrying(|| self.batch_once(&ops, inbox)).await
    }

    /// One run of a batch's transaction. The operations are cloned: a run that PostgreSQL
    /// failed to break a deadlock (a batch locks rows in the order of its operations) runs
    /// again from the first.
    async fn batch_once(
        &self,
        ops: &[BatchOp],
        inbox: Option<Uuid>,
    ) -> Result<Vec<BatchResult>, BatchError> {
        let whole = |error| BatchError { index: None, error };
        let mut touched = write::Touched::default();
        let mut writer = self.pool.writer().await.map_err(whole)?;
        let mut tx = writer.begin().await.map_err(whole)?;
        let mut refs: HashMap<String, Uuid> = HashMap::new();
        let mut pending = write::Pending::default();
        let mut results = Vec::with_capacity(ops.len());
        for (index, op) in ops.iter().enumerate() {
            let r = self
                .batch_op(
                    &mut tx,
                    &mut touched,
                    &mut refs,
                    &mut pending,
                    inbox,
                    op.clone(),
                )
                .await
                .map_err(|error| BatchError {
                    index: Some(index),
                    error,
                })?;
            results.push(r);
        }
        self.flush(&mut tx, &mut pending).await.map_err(whole)?;
        self.respond(&mut touched, idem::Outcome::Batch(&results));
        touched.commit(self, tx).await.map_err(whole)?;
        writer.done();
        Ok(results)
    }

    async fn batch_op(
        &self,
        tx: &mut crate::backend::Tx<'_>,
        touched: &mut write::Touched,
        refs: &mut HashMap<String, Uuid>,
        pending: &mut write::Pending,
        inbox: Option<Uuid>,
        op: BatchOp,
    ) -> Result<BatchResult, StoreError> {
        // Only creates appended last in a list are buffered; every other operation reads or
        // writes rows that buffered creates may be, so the buffer goes to the database first.
        let appends = matches!(&op, BatchOp::Create { task, parent: None, .. }
            if task.parent_id.is_none() && task.reminders.is_empty());
        if !appends {
            self.flush(tx, pending).await?;
        }
        match op {
            BatchOp::Create {
                reference,
                mut task,
                parent,
            } => {
                if let Some(name) = &reference {
                    let n = name.chars().count();
                    if n == 0 || n > REF_MAX {
                        return Err(StoreError::invalid(
                            "ref",
                            format!("must be 1 to {REF_MAX} characters"),
                        ));
                    }
                    if refs.contains_key(name) {
                        return Err(StoreError::invalid("ref", "is already used in this batch"));
                    }
                }
                if let Some(p) = &parent {
                    task.parent_id = Some(resolve(p, refs, "task.parent_id")?);
                }
                let (mut t, list_id, parent_id) =
                    self.new_task(task).map_err(|e| prefixed(e, "task."))?;
                if list_id.is_none() && parent_id.is_none() {
                    t.list_id = inbox.ok_or(StoreError::NotFound)?;
                }
                let t = if parent_id.is_none() && t.reminders.is_empty() {
                    self.create_buffered(tx, touched, t, list_id, pending).await
                } else {
                    self.flush(tx, pending).await?;
                    self.create_in(tx, touched, t, list_id, parent_id).await
                }
                .map_err(|e| prefixed(e, "task."))?;
                if let Some(name) = reference {
                    refs.insert(name, t.id);
                }
                Ok(BatchResult::Created(t))
            }
            BatchOp::Replace { id, task, if_match } => {
                let id = resolve(&id, refs, "id")?;
                let (content, completed) = task.validate().map_err(|e| prefixed(e, "task."))?;
                let t = self
                    .write_in(
                        tx,
                        touched,
                        id,
                        if_match,
                        completed.is_some(),
                        move |t, now| {
                            t.apply_content(content);
                            if let Some(c) = completed {
                                t.set_completed(c, now);
                            }
                        },
                    )
                    .await?;
                Ok(BatchResult::Updated(t))
            }
            BatchOp::Update {
                id,
                patch,
                if_match,
            } => {
                let id = resolve(&id, refs, "id")?;
                let named = patch.completed.is_some();
                let patch = patch.validate().map_err(|e| prefixed(e, "patch."))?;
                let t = self
                    .write_in(tx, touched, id, if_match, named, move |t, now| {
                        patch.apply(t, now)
                    })
                    .await?;
                Ok(BatchResult::Updated(t))
            }
            BatchOp::Complete {
                id,
                completed,
                if_match,
            } => {
                let id = resolve(&id, refs, "id")?;
                let t = self
                    .write_in(tx, touched, id, if_match, true, move |t, now| {
                        let c = completed.unwrap_or(!t.completed);
                        t.set_completed(c, now);
                    })
                    .await?;
                Ok(BatchResult::Updated(t))
            }
            BatchOp::Move { id, to, if_match } => {
                let id = resolve(&id, refs, "id")?;
                let parent_id = match &to.parent_id {
                    None => None,
                    Some(None) => Some(None),
                    Some(Some(p)) => Some(Some(resolve(p, refs, "parent_id")?)),
                };
                let after = match &to.after {
                    None => None,
                    Some(None) => Some(None),
                    Some(Some(a)) => Some(Some(resolve(a, refs, "after")?)),
                };
                let to = MoveTask {
                    list_id: to.list_id,
                    parent_id,
                    after,
                };
                let t = self.move_in(tx, touched, id, to, if_match).await?;
                Ok(BatchResult::Updated(t))
            }
            BatchOp::Delete { id, if_match } => {
                let id = resolve(&id, refs, "id")?;
                self.delete_in(tx, touched, id, if_match).await?;
                Ok(BatchResult::Deleted)
            }
        }
    }
}
