-- Webhooks, their delivery outbox, and reminder firings in the change log (issue 19). The same
-- schema as PostgreSQL's V7; SQLite has one process, so no claim guard function is needed.

CREATE TABLE webhooks (
    id          BLOB PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL,
    url         TEXT NOT NULL,
    events      TEXT,
    description TEXT,
    secret      TEXT NOT NULL,
    enabled     INTEGER NOT NULL DEFAULT 1,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX webhooks_user ON webhooks (user_id, id);

CREATE TABLE webhook_deliveries (
    id                   BLOB PRIMARY KEY NOT NULL,
    webhook_id           BLOB NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    user_id              TEXT NOT NULL,
    event_type           TEXT NOT NULL,
    payload              TEXT NOT NULL,
    event_at             INTEGER NOT NULL,
    status               TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts             INTEGER NOT NULL DEFAULT 0,
    last_response_status INTEGER,
    next_attempt_at      INTEGER,
    created_at           INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (webhook_id, id);

-- The change log gains kind 'reminder' (a CHECK constraint changes only by rebuilding).
CREATE TABLE changes_v7 (
    user_id     TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('list', 'task', 'reminder')),
    entity_id   BLOB NOT NULL,
    seq         INTEGER NOT NULL,
    created_seq INTEGER NOT NULL,
    op          TEXT NOT NULL CHECK (op IN ('upsert', 'delete')),
    at          INTEGER NOT NULL,
    PRIMARY KEY (user_id, kind, entity_id)
) WITHOUT ROWID;
INSERT INTO changes_v7 SELECT user_id, kind, entity_id, seq, created_seq, op, at FROM changes;
DROP TABLE changes;
ALTER TABLE changes_v7 RENAME TO changes;
CREATE INDEX changes_user_seq ON changes (user_id, seq, kind, entity_id);
CREATE INDEX changes_tombstones ON changes (at) WHERE op = 'delete';
-- Pruning finds old reminder firings without reading the rest of the log.
CREATE INDEX changes_reminders ON changes (at) WHERE kind = 'reminder';

ALTER TABLE reminders ADD COLUMN fired_for INTEGER;
