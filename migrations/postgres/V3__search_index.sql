-- Trigram indexes for text search (issue 5: a search over a user with thousands of tasks).
--
-- `q` is a substring match (LIKE '%…%'), which no b-tree can answer: without these indexes a
-- search reads every index entry of the user. A GIN index over (user_id, completed, trigrams of
-- the text) intersects the user's entries (with the status asked for) with the entries holding
-- the needle's trigrams inside the index, so a search reads only the candidate rows. user_id and
-- completed in a GIN index need btree_gin; the trigrams need pg_trgm. Both are trusted
-- extensions (PostgreSQL 13+: a database owner may create them) and both are available on Neon.
-- The price is paid on writes: every insert and update also writes the trigrams of the title
-- and the description (GIN's pending list batches them).
--
-- They are an optimisation, not part of the schema's meaning: where the extensions cannot be
-- created (not installed, or not allowed) this migration changes nothing and searches take the
-- index-only path of V2. The store checks which path exists before its first search.
DO $$
DECLARE
    gin_schema  name;
    trgm_schema name;
BEGIN
    BEGIN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
        CREATE EXTENSION IF NOT EXISTS btree_gin;
    EXCEPTION WHEN OTHERS THEN
        RAISE NOTICE 'trigram search indexes skipped: %', SQLERRM;
        RETURN;
    END;
    -- Operator classes qualified with the extensions' schemas, which need not be on the
    -- search_path.
    SELECT n.nspname INTO gin_schema FROM pg_extension e
        JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'btree_gin';
    SELECT n.nspname INTO trgm_schema FROM pg_extension e
        JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm';
    EXECUTE format(
        'CREATE INDEX tasks_search_title ON tasks USING gin '
        '(user_id %1$I.text_ops, completed %1$I.bool_ops, title_lc %2$I.gin_trgm_ops)',
        gin_schema, trgm_schema);
    EXECUTE format(
        'CREATE INDEX tasks_search_description ON tasks USING gin '
        '(user_id %1$I.text_ops, completed %1$I.bool_ops, description_lc %2$I.gin_trgm_ops)',
        gin_schema, trgm_schema);
END
$$;
