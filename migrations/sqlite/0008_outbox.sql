-- The durable outbox (issue 19): mail to deliver, written with what caused it, delivered by
-- a background worker (src/store/outbox.rs, src/mail/mod.rs). migrations/postgres/0008_outbox.sql
-- is its twin.
CREATE TABLE outbox (
    id               TEXT PRIMARY KEY,       -- v7; the id receivers deduplicate by
    kind             TEXT NOT NULL,          -- mail
    payload          BLOB NOT NULL,          -- sealed; emptied once delivered
    created_at       TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    locked_until     TEXT,            -- a worker's lease on it
    delivered_at     TEXT,
    dead_at          TEXT,            -- given up on (visible in /admin/outbox)
    last_error       TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL AND dead_at IS NULL;
CREATE INDEX outbox_dead ON outbox (dead_at) WHERE dead_at IS NOT NULL;
