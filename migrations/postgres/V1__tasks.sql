-- Tasks of every user. Every query filters on user_id first; each index below starts with it,
-- so one user's reads never scan another user's rows.
CREATE TABLE tasks (
    id             UUID PRIMARY KEY,
    user_id        TEXT COLLATE "C" NOT NULL,
    title          TEXT NOT NULL,
    -- lower-cased in Rust: search and title sort compare bytes, identically on both backends
    title_lc       TEXT COLLATE "C" NOT NULL,
    description    TEXT,
    description_lc TEXT COLLATE "C",
    completed      BOOLEAN NOT NULL DEFAULT FALSE,
    completed_at   TIMESTAMPTZ,
    -- rank: 0 low, 1 medium, 2 high
    priority       SMALLINT NOT NULL CHECK (priority BETWEEN 0 AND 2),
    -- JSON array of normalised tags in display order; task_tags is the searchable copy
    tags           TEXT NOT NULL DEFAULT '[]',
    due_at         TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    version        BIGINT NOT NULL CHECK (version >= 1)
);

CREATE INDEX tasks_user_created ON tasks (user_id, created_at, id);
CREATE INDEX tasks_user_updated ON tasks (user_id, updated_at, id);
CREATE INDEX tasks_user_due ON tasks (user_id, due_at, id);
CREATE INDEX tasks_user_priority ON tasks (user_id, priority, id);
CREATE INDEX tasks_user_title ON tasks (user_id, title_lc, id);

CREATE TABLE task_tags (
    user_id TEXT COLLATE "C" NOT NULL,
    tag     TEXT COLLATE "C" NOT NULL,
    task_id UUID NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, tag, task_id)
);
CREATE INDEX task_tags_task ON task_tags (task_id);
