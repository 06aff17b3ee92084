-- Search signatures (see todo_store's `signature` module): 128 bits of the trigrams of a task's
-- lower-cased title and description. A search tests them on the index entry before running
-- LIKE, which then runs on a few tasks instead of all of them. -1 (every bit set) matches any
-- search: the default for rows written before this migration; Store::migrate fills them in.
ALTER TABLE tasks
    ADD COLUMN search_bits_lo BIGINT NOT NULL DEFAULT -1,
    ADD COLUMN search_bits_hi BIGINT NOT NULL DEFAULT -1;

-- The covering list index, now keyed by completion before priority: a status filter (pending
-- or completed) becomes an index range instead of a test on every entry, and the signatures
-- ride along so a search stays index-only.
DROP INDEX tasks_user_list;
CREATE INDEX tasks_user_list ON tasks (user_id, completed, priority, id)
    INCLUDE (created_at, updated_at, due_at, search_bits_lo, search_bits_hi, title_lc,
             description_lc_short);

-- The priority sort over all statuses again reads an index in order (tasks_user_list no longer
-- gives that order once completion leads its key).
CREATE INDEX tasks_user_priority ON tasks (user_id, priority, id);

-- Rows whose signature is still to be computed: empty once Store::migrate has run.
CREATE INDEX tasks_search_bits_unset ON tasks (id)
    WHERE search_bits_lo = -1 AND search_bits_hi = -1;
