-- Sync, live events and idempotent retries (issue 18). The same schema as PostgreSQL's V5;
-- SQLite writers are serialised (BEGIN IMMEDIATE and an in-process lock), so the per-user
-- counter orders one user's commits here too.

CREATE TABLE user_state (
    user_id     TEXT PRIMARY KEY NOT NULL,
    seq         INTEGER NOT NULL DEFAULT 0,
    -- Tombstones with a seq up to this one were pruned: a token older than it answers 410.
    pruned_seq  INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- One row per record with the seq of its latest write; deletions are tombstones until pruned.
CREATE TABLE changes (
    user_id     TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('list', 'task')),
    entity_id   BLOB NOT NULL,
    seq         INTEGER NOT NULL,
    created_seq INTEGER NOT NULL,
    op          TEXT NOT NULL CHECK (op IN ('upsert', 'delete')),
    at          INTEGER NOT NULL,
    PRIMARY KEY (user_id, kind, entity_id)
) WITHOUT ROWID;
CREATE INDEX changes_user_seq ON changes (user_id, seq, kind, entity_id);
CREATE INDEX changes_tombstones ON changes (at) WHERE op = 'delete';

CREATE TABLE idempotency (
    user_id     TEXT NOT NULL,
    key         TEXT NOT NULL,
    method      TEXT NOT NULL,
    path        TEXT NOT NULL,
    body_hash   BLOB NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('in_progress', 'done')),
    status      INTEGER,
    headers     TEXT,
    body        BLOB,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_created ON idempotency (created_at);
