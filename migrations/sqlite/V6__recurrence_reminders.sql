-- Recurring tasks and reminders (issue 19). The same schema as PostgreSQL's V6.

ALTER TABLE tasks ADD COLUMN recurrence_rule TEXT;
ALTER TABLE tasks ADD COLUMN recurrence_timezone TEXT;
ALTER TABLE tasks ADD COLUMN recurrence_start INTEGER;
ALTER TABLE tasks ADD COLUMN last_completed_at INTEGER;
ALTER TABLE tasks ADD COLUMN reminders TEXT NOT NULL DEFAULT '[]';

CREATE TABLE reminders (
    id      BLOB PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    task_id BLOB NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    fire_at INTEGER,
    -- 0 pending, 1 fired, 2 skipped (past when set, or its task completed when due)
    state   INTEGER NOT NULL DEFAULT 0 CHECK (state BETWEEN 0 AND 2)
);
CREATE INDEX reminders_pending ON reminders (fire_at, id) WHERE state = 0;
CREATE INDEX reminders_task ON reminders (user_id, task_id);
