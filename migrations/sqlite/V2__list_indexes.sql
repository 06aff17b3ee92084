-- Listing indexes (issue 5: lists of users with many tasks).

-- The lower-cased description for index-only search: the text itself when it is at most 1,500
-- bytes, '' when there is no description, NULL when it is longer (search then reads the row).
-- The same rule as on PostgreSQL, where index rows are capped in size.
ALTER TABLE tasks ADD COLUMN description_lc_short TEXT GENERATED ALWAYS AS (
    CASE
        WHEN description_lc IS NULL THEN ''
        WHEN length(CAST(description_lc AS BLOB)) <= 1500 THEN description_lc
    END
) VIRTUAL;

-- Every column a listing filters on, so searches, tag filters and counts read only the index.
-- Same leading key as tasks_user_priority, which it replaces for the priority sort.
-- (No descending due index: SQLite sorts NULL first, so a backward scan of tasks_user_due already
-- gives due_at DESC NULLS LAST.)
CREATE INDEX tasks_user_list ON tasks
    (user_id, priority, id, completed, created_at, updated_at, due_at, title_lc,
     description_lc_short);
DROP INDEX tasks_user_priority;

-- The few tasks whose description is too long for description_lc_short, so a search finds them
-- without reading every task of the user.
CREATE INDEX tasks_user_long_description ON tasks (user_id) WHERE description_lc_short IS NULL;
