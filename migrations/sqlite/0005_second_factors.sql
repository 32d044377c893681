-- Second factors and passkeys (issue 17). migrations/postgres/0005_second_factors.sql is its twin.

-- How the user authenticated for a session, and when: set by a sign-in with a second factor
-- and by a re-authentication (step-up). NULL: the password sign-in that opened the session
-- (`auth_time` = `created_at`, `amr` = "pwd").
ALTER TABLE sessions ADD COLUMN auth_time TEXT;
ALTER TABLE sessions ADD COLUMN amr TEXT;               -- RFC 8176 values, space-separated

-- A user's second factors: TOTP (at most one, active once confirmed) and passkeys.
CREATE TABLE mfa_factors (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind           TEXT NOT NULL CHECK (kind IN ('totp', 'passkey')),
    name           TEXT,
    credential_id  BLOB,                  -- passkeys: the WebAuthn credential id
    secret         BLOB NOT NULL,         -- TOTP: the sealed secret; passkey: the credential (JSON)
    last_step      INTEGER,               -- TOTP: the last time step accepted (replay guard)
    confirmed_at   TEXT,                  -- TOTP: NULL until the first code is confirmed
    created_at     TEXT NOT NULL,
    last_used_at   TEXT
);
CREATE INDEX mfa_factors_user_id ON mfa_factors (user_id);
CREATE UNIQUE INDEX mfa_factors_credential_id ON mfa_factors (credential_id);

-- Single-use recovery codes, stored only as their SHA-256.
CREATE TABLE recovery_codes (
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash   BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    used_at     TEXT,
    PRIMARY KEY (user_id, code_hash)
);

-- Short-lived, single-use challenges: a sign-in waiting for its second factor, a
-- re-authentication, and WebAuthn ceremonies in progress. Named by the SHA-256 of the token
-- handed to the client.
CREATE TABLE auth_challenges (
    token_hash     BLOB PRIMARY KEY,
    user_id        TEXT REFERENCES users (id) ON DELETE CASCADE,   -- NULL: a passkey sign-in
    purpose        TEXT NOT NULL,
    session_id     TEXT,                  -- re-authentication: the session it is for
    password_hash  TEXT,                  -- the hash the password was checked against
    ip             TEXT,                  -- the client that started it
    state          TEXT NOT NULL,         -- JSON: what the next step needs
    created_at     TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    used_at        TEXT
);
CREATE INDEX auth_challenges_expires_at ON auth_challenges (expires_at);
