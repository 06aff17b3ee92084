-- Listing indexes (issue 5: lists of users with many tasks).

-- The lower-cased description for index-only search: the text itself when it is at most 1,500
-- bytes, '' when there is no description, NULL when it is longer (search then reads the row).
-- An index row is capped at about 2.7 kB: with a 128-byte user id and a title of up to 800
-- bytes beside it, 1,500 bytes of description always fits, however little it compresses.
ALTER TABLE tasks ADD COLUMN description_lc_short TEXT COLLATE "C" GENERATED ALWAYS AS (
    CASE
        WHEN description_lc IS NULL THEN ''
        WHEN octet_length(description_lc) <= 1500 THEN description_lc
    END
) STORED;

-- Every column a listing filters on, so searches, tag filters and counts read only the index
-- (one entry per task) instead of one table row per task. Same key as tasks_user_priority,
-- which it replaces for the priority sort.
CREATE INDEX tasks_user_list ON tasks (user_id, priority, id)
    INCLUDE (completed, created_at, updated_at, due_at, title_lc, description_lc_short);
DROP INDEX tasks_user_priority;

-- sort=due_at&order=desc puts undated tasks last, which a backward scan of tasks_user_due
-- (nulls last ascending, so first descending) cannot give.
CREATE INDEX tasks_user_due_desc ON tasks (user_id, due_at DESC NULLS LAST, id DESC);

-- The few tasks whose description is too long for tasks_user_list, so a search finds them
-- without reading every task of the user.
CREATE INDEX tasks_user_long_description ON tasks (user_id) WHERE description_lc_short IS NULL;
