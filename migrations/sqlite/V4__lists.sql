-- Lists, subtasks and manual order (issue 17). The same schema as PostgreSQL's V4.

CREATE TABLE lists (
    id         BLOB PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL,
    name       TEXT NOT NULL,
    color      TEXT,
    is_inbox   INTEGER NOT NULL DEFAULT 0 CHECK (is_inbox IN (0, 1)),
    -- fractional-indexing key (todo_store's `position` module), compared byte-wise
    position   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    version    INTEGER NOT NULL CHECK (version >= 1)
);
CREATE INDEX lists_user_position ON lists (user_id, position, id);
-- At most one inbox per user: concurrent first requests insert it with ON CONFLICT DO NOTHING.
CREATE UNIQUE INDEX lists_one_inbox ON lists (user_id) WHERE is_inbox;

-- SQLite adds a NOT NULL column only with a default, and a foreign key only by rebuilding the
-- table (whose drop would cascade to task_tags): list_id defaults to an empty blob that the
-- backfill below replaces on every row, and the store checks lists itself, in the write
-- transaction (SQLite writers are serialised).
ALTER TABLE tasks ADD COLUMN list_id BLOB NOT NULL DEFAULT x'';
ALTER TABLE tasks ADD COLUMN parent_id BLOB;
ALTER TABLE tasks ADD COLUMN position TEXT NOT NULL DEFAULT '';

-- Every user with tasks gets an inbox: a UUIDv7 stamped with the user's first task's creation.
INSERT INTO lists (id, user_id, name, color, is_inbox, position, created_at, updated_at, version)
SELECT unhex(printf('%012x7%03x%04x%012x', first_at, abs(random() % 4096),
                    32768 + abs(random() % 16384), abs(random() % 281474976710656))),
       user_id, 'Inbox', NULL, 1, 'a0', first_at, first_at, 1
FROM (SELECT user_id, min(created_at) AS first_at FROM tasks GROUP BY user_id);

-- Every task goes into its user's inbox, top-level, its position reproducing the default
-- listing order (created_at desc, id desc): the n-th task gets the integer key n written as
-- 'e' + five base-62 digits (todo_store's key format; 916 million keys per user).
UPDATE tasks SET
    list_id = l.id,
    position = 'e'
        || substr('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', (r.n / 14776336) % 62 + 1, 1)
        || substr('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', (r.n / 238328) % 62 + 1, 1)
        || substr('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', (r.n / 3844) % 62 + 1, 1)
        || substr('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', (r.n / 62) % 62 + 1, 1)
        || substr('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', r.n % 62 + 1, 1)
FROM (SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY created_at DESC, id DESC) AS n
      FROM tasks) AS r,
     lists AS l
WHERE r.id = tasks.id AND l.user_id = tasks.user_id AND l.is_inbox;

-- sort=position within one list and parent (parent_id IS NULL for the top level): siblings in
-- order, read straight from the index. Subtree walks (children of a task, in its list) and
-- open counts per list use its prefix.
CREATE INDEX tasks_user_position ON tasks (user_id, list_id, parent_id, position, id, completed);
