-- Operators' tools (issue 19): bans and the audit log. migrations/postgres/0007_admin_audit.sql
-- is its twin.

-- A ban: while `banned_at` is set and `ban_expires_at` is NULL or later than now, the user
-- cannot sign in on any face; banning also ends every session. An expired ban is
-- cleared by the next unban or ban, and counts as none meanwhile.
ALTER TABLE users ADD COLUMN banned_at TEXT;
ALTER TABLE users ADD COLUMN ban_reason TEXT;
ALTER TABLE users ADD COLUMN ban_expires_at TEXT;

-- One row per auth event (src/domain/audit.rs names them). `user_id` is the user the event
-- is about (kept after the user is deleted: no foreign key), `actor_id` who caused it (the
-- user, an admin, or NULL for a service or the server itself, told apart by `actor`).
-- Never a password, token or code: `detail` is a small JSON object of named facts.
CREATE TABLE audit_events (
    id          TEXT PRIMARY KEY,          -- v7: sorts by time
    at          TEXT NOT NULL,
    event       TEXT NOT NULL,
    user_id     TEXT,
    actor       TEXT NOT NULL,             -- user | admin | service | system | anonymous
    actor_id    TEXT,
    session_id  TEXT,
    ip          TEXT,
    user_agent  TEXT,
    request_id  TEXT,
    detail      TEXT                       -- JSON object, or NULL
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_user_id ON audit_events (user_id, id);
CREATE INDEX audit_events_event ON audit_events (event, id);
