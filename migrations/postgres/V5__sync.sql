-- Sync, live events and idempotent retries (issue 18).

-- One row per user: the user's change counter and the prune watermark. Every write
-- transaction takes the next value with `INSERT … ON CONFLICT DO UPDATE SET seq = seq + 1`
-- just before it commits: the row lock is held until the commit, so one user's writes get
-- their numbers in commit order and a reader never sees seq n + 1 committed while n is still
-- in flight (a global sequence hands numbers out at insert time, not commit time).
CREATE TABLE user_state (
    user_id     TEXT COLLATE "C" PRIMARY KEY,
    seq         BIGINT NOT NULL DEFAULT 0,
    -- Tombstones with a seq up to this one were pruned: a token older than it answers 410.
    pruned_seq  BIGINT NOT NULL DEFAULT 0
);

-- The change log: one row per record (task or list) ever written since this migration,
-- holding the seq of its latest write, so a sync returns each record once, in its latest
-- state, and the log stays as large as the live data plus the tombstones. A deletion turns
-- the row into a tombstone (op 'delete', `at` = deleted_at) until pruned.
CREATE TABLE changes (
    user_id     TEXT COLLATE "C" NOT NULL,
    kind        TEXT COLLATE "C" NOT NULL CHECK (kind IN ('list', 'task')),
    entity_id   UUID NOT NULL,
    seq         BIGINT NOT NULL,
    -- The seq of the write that created the record (0: created before this log existed):
    -- a reader whose position is below it sees the record as created.
    created_seq BIGINT NOT NULL,
    op          TEXT NOT NULL CHECK (op IN ('upsert', 'delete')),
    at          TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, kind, entity_id)
);
-- Reads after a token: a range of (user_id, seq), ties in (kind, entity_id) order.
CREATE INDEX changes_user_seq ON changes (user_id, seq, kind, entity_id);
-- Pruning finds old tombstones without reading live records.
CREATE INDEX changes_tombstones ON changes (at) WHERE op = 'delete';

-- Idempotency keys: a placeholder ('in_progress') is inserted before the request runs, and
-- completed with the response in the same transaction as the request's effect.
CREATE TABLE idempotency (
    user_id     TEXT COLLATE "C" NOT NULL,
    key         TEXT COLLATE "C" NOT NULL,
    method      TEXT NOT NULL,
    path        TEXT NOT NULL,
    body_hash   BYTEA NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('in_progress', 'done')),
    status      SMALLINT,
    headers     TEXT,
    body        BYTEA,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_created ON idempotency (created_at);
