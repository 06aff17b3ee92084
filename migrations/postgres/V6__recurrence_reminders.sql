-- Recurring tasks and reminders (issue 19).

ALTER TABLE tasks
    -- RFC 5545 RRULE value and IANA zone; both set or both NULL
    ADD COLUMN recurrence_rule     TEXT,
    ADD COLUMN recurrence_timezone TEXT,
    -- the rule's DTSTART: the due_at the client last set
    ADD COLUMN recurrence_start    TIMESTAMPTZ,
    ADD COLUMN last_completed_at   TIMESTAMPTZ,
    -- JSON array of the task's reminders ({"id","at"} or {"id","before_due"}), as reads return
    -- them; the reminders table below is the scheduler's copy
    ADD COLUMN reminders           TEXT NOT NULL DEFAULT '[]';

-- One row per reminder: when it fires next and whether it has. The scheduler claims due rows
-- with FOR UPDATE SKIP LOCKED and marks them in the same transaction.
CREATE TABLE reminders (
    id      UUID PRIMARY KEY,
    user_id TEXT COLLATE "C" NOT NULL,
    task_id UUID NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    fire_at TIMESTAMPTZ,
    -- 0 pending, 1 fired, 2 skipped (past when set, or its task completed when due)
    state   SMALLINT NOT NULL DEFAULT 0 CHECK (state BETWEEN 0 AND 2)
);
-- The scheduler's queue: pending reminders by time (claims and the next wake-up read it).
CREATE INDEX reminders_pending ON reminders (fire_at, id) WHERE state = 0;
CREATE INDEX reminders_task ON reminders (user_id, task_id);
