-- Search signatures: the same columns and indexes as on PostgreSQL (see its V3).
ALTER TABLE tasks ADD COLUMN search_bits_lo INTEGER NOT NULL DEFAULT -1;
ALTER TABLE tasks ADD COLUMN search_bits_hi INTEGER NOT NULL DEFAULT -1;

DROP INDEX tasks_user_list;
CREATE INDEX tasks_user_list ON tasks
    (user_id, completed, priority, id, created_at, updated_at, due_at, search_bits_lo,
     search_bits_hi, title_lc, description_lc_short);

CREATE INDEX tasks_user_priority ON tasks (user_id, priority, id);

CREATE INDEX tasks_search_bits_unset ON tasks (id)
    WHERE search_bits_lo = -1 AND search_bits_hi = -1;
