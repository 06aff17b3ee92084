-- Webhooks, their delivery outbox, and reminder firings in the change log (issue 19).

-- A user's webhooks (at most 10 per user, enforced by the store). `events` is NULL for every
-- event type, else a JSON array of type names. The secret is kept to sign deliveries.
CREATE TABLE webhooks (
    id          UUID PRIMARY KEY,
    user_id     TEXT COLLATE "C" NOT NULL,
    url         TEXT NOT NULL,
    events      TEXT,
    description TEXT,
    secret      TEXT NOT NULL,
    enabled     BOOLEAN NOT NULL DEFAULT TRUE,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhooks_user ON webhooks (user_id, id);

-- The outbox and delivery log: one row per (webhook, event), inserted in the transaction of
-- the change it reports, with the event's payload as it was then. The id (UUIDv7) is the
-- `webhook-id` of every attempt. A sender claims due rows with FOR UPDATE SKIP LOCKED and
-- pushes `next_attempt_at` forward by a lease, so a crashed sender's claim expires and another
-- instance retries it. Delivered and failed rows beyond a webhook's latest 100 are deleted.
CREATE TABLE webhook_deliveries (
    id                   UUID PRIMARY KEY,
    webhook_id           UUID NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    user_id              TEXT COLLATE "C" NOT NULL,
    event_type           TEXT NOT NULL,
    payload              TEXT NOT NULL,
    event_at             TIMESTAMPTZ NOT NULL,
    status               TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts             INTEGER NOT NULL DEFAULT 0,
    last_response_status INTEGER,
    next_attempt_at      TIMESTAMPTZ,
    created_at           TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (webhook_id, id);

-- A user with an enabled webhook has every write go through a transaction that queues its
-- deliveries; the single-statement writes call this guard, which refuses (SQLSTATE TDW01, the
-- whole statement rolls back) so the store retries the write in a transaction.
CREATE FUNCTION todo_no_webhooks(uid TEXT) RETURNS BOOLEAN LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM webhooks WHERE user_id = uid AND enabled) THEN
        RAISE EXCEPTION 'user has webhooks' USING ERRCODE = 'TDW01';
    END IF;
    RETURN TRUE;
END
$$;

-- Reminder firings are change-log records too (kind 'reminder', entity_id the reminder's id):
-- the event stream replays them like any change; /changes leaves them out.
ALTER TABLE changes DROP CONSTRAINT changes_kind_check;
ALTER TABLE changes ADD CONSTRAINT changes_kind_check CHECK (kind IN ('list', 'task', 'reminder'));
-- Pruning finds old reminder firings without reading the rest of the log.
CREATE INDEX changes_reminders ON changes (at) WHERE kind = 'reminder';
-- The occurrence a reminder last fired for (its `scheduled_for`).
ALTER TABLE reminders ADD COLUMN fired_for TIMESTAMPTZ;
