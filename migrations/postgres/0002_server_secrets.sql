-- Secrets of this installation, made once and shared by every replica (e.g. the key that
-- signs device tokens and keys the account ids in logs). migrations/sqlite has its twin.
CREATE TABLE server_secrets (
    name        TEXT PRIMARY KEY,
    value       BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
