-- The Better Auth face (issue 16). migrations/postgres/0003_better_auth.sql is its twin.

-- Better Auth's user has a display name and an image URL; servauth's own register may omit
-- them, so both stay nullable.
ALTER TABLE users ADD COLUMN name TEXT;
ALTER TABLE users ADD COLUMN image TEXT;

-- A Better Auth session is a servauth session whose credential is a session token (stored
-- only as its SHA-256) instead of refresh tokens: NULL for sessions of the REST face.
ALTER TABLE sessions ADD COLUMN token_hash BLOB;
-- 0 for Better Auth's `rememberMe: false`: a one-day session that is never slid.
ALTER TABLE sessions ADD COLUMN remember INTEGER NOT NULL DEFAULT 1;
-- NULLs do not collide in a unique index, so REST sessions need no value.
CREATE UNIQUE INDEX sessions_token_hash ON sessions (token_hash);
