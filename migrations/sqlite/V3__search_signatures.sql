-- Search signatures: the same columns as on PostgreSQL (see its V3), carried by the covering
-- list index so a search stays index-only. The index keeps its V2 key order here: SQLite
-- rewrites every index naming a column an UPDATE sets, and with the PostgreSQL layout
-- (completion leading the key, plus a separate priority index) single-row toggles ran 23-41 %
-- slower (5,000 transactions, WAL, synchronous=NORMAL, on the seeded bench data).
ALTER TABLE tasks ADD COLUMN search_bits_lo INTEGER NOT NULL DEFAULT -1;
ALTER TABLE tasks ADD COLUMN search_bits_hi INTEGER NOT NULL DEFAULT -1;

DROP INDEX tasks_user_list;
CREATE INDEX tasks_user_list ON tasks
    (user_id, priority, id, completed, created_at, updated_at, due_at, search_bits_lo,
     search_bits_hi, title_lc, description_lc_short);

-- Rows whose signature is still to be computed: empty once Store::migrate has run.
CREATE INDEX tasks_search_bits_unset ON tasks (id)
    WHERE search_bits_lo = -1 AND search_bits_hi = -1;
