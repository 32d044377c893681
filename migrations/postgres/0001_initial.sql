-- servauth schema, PostgreSQL flavour. migrations/sqlite/0001_initial.sql is its twin.
-- Identity columns (email_key, username_key) hold the lowercased value so that uniqueness
-- is case-insensitive with the same rule (Rust's Unicode lowercase) on both backends.

CREATE TABLE users (
    id             UUID PRIMARY KEY,
    email          TEXT NOT NULL,            -- as the user typed it (trimmed)
    email_key      TEXT NOT NULL,            -- lowercased: what uniqueness and login compare
    username       TEXT,
    username_key   TEXT,
    password_hash  TEXT NOT NULL,            -- PHC string (argon2id; imported bcrypt/scrypt too)
    email_verified BOOLEAN NOT NULL DEFAULT FALSE,
    role           TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    pending_email  TEXT,                     -- an email change awaiting confirmation
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX users_email_key ON users (email_key);
CREATE UNIQUE INDEX users_username_key ON users (username_key);

-- One row per login (a device). Access tokens carry its id as `sid`.
CREATE TABLE sessions (
    id            UUID PRIMARY KEY,
    user_id       UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    user_agent    TEXT,
    ip            TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    last_used_at  TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,      -- absolute lifetime (SERVAUTH_SESSION_TTL)
    revoked_at    TIMESTAMPTZ
);
CREATE INDEX sessions_user_id ON sessions (user_id);

-- Every refresh token a session was ever given, stored only as its SHA-256, so that a token
-- rotated out is recognised when it comes back (reuse detection).
CREATE TABLE refresh_tokens (
    token_hash  BYTEA PRIMARY KEY,
    session_id  UUID NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,        -- idle expiry (SERVAUTH_REFRESH_TTL)
    rotated_at  TIMESTAMPTZ,                 -- when it was exchanged for its successor
    csrf_hash   BYTEA,                       -- SHA-256 of the CSRF token paired with this token;
                                             -- NULL for native clients
    successor   BYTEA                        -- the successor, sealed under this token (grace replay)
);
CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);

-- Emailed single-use tokens (password reset, email verification, email change).
CREATE TABLE one_time_tokens (
    token_hash  BYTEA PRIMARY KEY,
    user_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose     TEXT NOT NULL CHECK (purpose IN ('password_reset', 'email_verification', 'email_change')),
    email       TEXT NOT NULL,               -- the address the token was sent to and confirms
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ
);
CREATE INDEX one_time_tokens_user_id ON one_time_tokens (user_id, purpose);

-- JWT signing keys, shared by every replica. The newest unretired key signs.
CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    algorithm    TEXT NOT NULL,
    private_key  BYTEA NOT NULL,             -- PKCS#8 DER
    public_key   BYTEA NOT NULL,             -- raw Ed25519 public key
    created_at   TIMESTAMPTZ NOT NULL,
    retired_at   TIMESTAMPTZ
);
