-- Lists, subtasks and manual order (issue 17).

-- A user's lists. Every task belongs to exactly one list of its user; each user has one inbox.
CREATE TABLE lists (
    id         UUID PRIMARY KEY,
    user_id    TEXT COLLATE "C" NOT NULL,
    name       TEXT NOT NULL,
    color      TEXT,
    is_inbox   BOOLEAN NOT NULL DEFAULT FALSE,
    -- fractional-indexing key (todo_store's `position` module), compared byte-wise
    position   TEXT COLLATE "C" NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    version    BIGINT NOT NULL CHECK (version >= 1),
    -- the target of tasks' (user_id, list_id) foreign key: a task's list is its user's
    UNIQUE (user_id, id)
);
CREATE INDEX lists_user_position ON lists (user_id, position, id);
-- At most one inbox per user: concurrent first requests insert it with ON CONFLICT DO NOTHING.
CREATE UNIQUE INDEX lists_one_inbox ON lists (user_id) WHERE is_inbox;

ALTER TABLE tasks
    ADD COLUMN list_id   UUID,
    ADD COLUMN parent_id UUID,
    ADD COLUMN position  TEXT COLLATE "C";

-- Every user with tasks gets an inbox: a UUIDv7 stamped with the user's first task's creation.
INSERT INTO lists (id, user_id, name, color, is_inbox, position, created_at, updated_at, version)
SELECT (lpad(to_hex((extract(epoch FROM first_at) * 1000)::bigint), 12, '0')
        || '7' || lpad(to_hex(floor(random() * 4096)::int), 3, '0')
        || to_hex(8 + floor(random() * 4)::int) || lpad(to_hex(floor(random() * 4096)::int), 3, '0')
        || lpad(to_hex(floor(random() * 4294967296)::bigint), 8, '0')
        || lpad(to_hex(floor(random() * 65536)::int), 4, '0'))::uuid,
       user_id, 'Inbox', NULL, TRUE, 'a0', first_at, first_at, 1
FROM (SELECT user_id, min(created_at) AS first_at FROM tasks GROUP BY user_id) AS u;

-- Every task goes into its user's inbox, top-level, its position reproducing the default
-- listing order (created_at desc, id desc): the n-th task gets the integer key n written as
-- 'e' + five base-62 digits (todo_store's key format; 916 million keys per user).
UPDATE tasks SET list_id = l.id, position = 'e' || (
    SELECT string_agg(substr('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz',
                             ((r.n / (62::bigint ^ k)::bigint) % 62)::int + 1, 1), '' ORDER BY k DESC)
    FROM generate_series(0, 4) AS k)
FROM lists AS l,
     (SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY created_at DESC, id DESC) AS n
      FROM tasks) AS r
WHERE l.user_id = tasks.user_id AND l.is_inbox AND r.id = tasks.id;

ALTER TABLE tasks
    ALTER COLUMN list_id SET NOT NULL,
    ALTER COLUMN position SET NOT NULL,
    ADD CONSTRAINT tasks_list FOREIGN KEY (user_id, list_id) REFERENCES lists (user_id, id);

-- sort=position within one list and parent (parent_id IS NULL for the top level): siblings in
-- order, read straight from the index. Subtree walks (children of a task, in its list) and
-- open counts per list use its prefix.
CREATE INDEX tasks_user_position ON tasks (user_id, list_id, parent_id, position, id)
    INCLUDE (completed);
