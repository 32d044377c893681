-- Second factors and passkeys (issue 17). migrations/sqlite/0005_second_factors.sql is its twin.

-- How the user authenticated for a session, and when: set by a sign-in with a second factor
-- and by a re-authentication (step-up). NULL: the password sign-in that opened the session
-- (`auth_time` = `created_at`, `amr` = "pwd").
ALTER TABLE sessions ADD COLUMN auth_time TIMESTAMPTZ;
ALTER TABLE sessions ADD COLUMN amr TEXT;               -- RFC 8176 values, space-separated

-- A user's second factors: TOTP (at most one, active once confirmed) and passkeys.
CREATE TABLE mfa_factors (
    id             UUID PRIMARY KEY,
    user_id        UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind           TEXT NOT NULL CHECK (kind IN ('totp', 'passkey')),
    name           TEXT,
    credential_id  BYTEA,                  -- passkeys: the WebAuthn credential id
    secret         BYTEA NOT NULL,         -- TOTP: the sealed secret; passkey: the credential (JSON)
    last_step      BIGINT,               -- TOTP: the last time step accepted (replay guard)
    confirmed_at   TIMESTAMPTZ,                  -- TOTP: NULL until the first code is confirmed
    created_at     TIMESTAMPTZ NOT NULL,
    last_used_at   TIMESTAMPTZ
);
CREATE INDEX mfa_factors_user_id ON mfa_factors (user_id);
CREATE UNIQUE INDEX mfa_factors_credential_id ON mfa_factors (credential_id);

-- Single-use recovery codes, stored only as their SHA-256.
CREATE TABLE recovery_codes (
    user_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash   BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ,
    PRIMARY KEY (user_id, code_hash)
);

-- Short-lived, single-use challenges: a sign-in waiting for its second factor, a
-- re-authentication, and WebAuthn ceremonies in progress. Named by the SHA-256 of the token
-- handed to the client.
CREATE TABLE auth_challenges (
    token_hash     BYTEA PRIMARY KEY,
    user_id        UUID REFERENCES users (id) ON DELETE CASCADE,   -- NULL: a passkey sign-in
    purpose        TEXT NOT NULL,
    session_id     UUID,                  -- re-authentication: the session it is for
    password_hash  TEXT,                  -- the hash the password was checked against
    ip             TEXT,                  -- the client that started it
    state          TEXT NOT NULL,         -- JSON: what the next step needs
    created_at     TIMESTAMPTZ NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL,
    used_at        TIMESTAMPTZ
);
CREATE INDEX auth_challenges_expires_at ON auth_challenges (expires_at);
