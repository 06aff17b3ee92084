-- Tasks of every user. Every query filters on user_id first; each index below starts with it,
-- so one user's reads never scan another user's rows.
-- Timestamps are INTEGER milliseconds since the Unix epoch (UTC); ids are 16-byte UUID blobs;
-- text compares byte-wise (BINARY), like COLLATE "C" on PostgreSQL.
CREATE TABLE tasks (
    id             BLOB PRIMARY KEY NOT NULL,
    user_id        TEXT NOT NULL,
    title          TEXT NOT NULL,
    title_lc       TEXT NOT NULL,
    description    TEXT,
    description_lc TEXT,
    completed      INTEGER NOT NULL DEFAULT 0 CHECK (completed IN (0, 1)),
    completed_at   INTEGER,
    priority       INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 2),
    tags           TEXT NOT NULL DEFAULT '[]',
    due_at         INTEGER,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 1)
);

CREATE INDEX tasks_user_created ON tasks (user_id, created_at, id);
CREATE INDEX tasks_user_updated ON tasks (user_id, updated_at, id);
CREATE INDEX tasks_user_due ON tasks (user_id, due_at, id);
CREATE INDEX tasks_user_priority ON tasks (user_id, priority, id);
CREATE INDEX tasks_user_title ON tasks (user_id, title_lc, id);

CREATE TABLE task_tags (
    user_id TEXT NOT NULL,
    tag     TEXT NOT NULL,
    task_id BLOB NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, tag, task_id)
) WITHOUT ROWID;
CREATE INDEX task_tags_task ON task_tags (task_id);
