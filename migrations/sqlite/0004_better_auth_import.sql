-- `servauth import better-auth` (issue 16). migrations/postgres/0004_better_auth_import.sql is its twin.

-- The id a user had in the Better Auth database it was imported from. The Better Auth face
-- shows it as the user's `id` (apps keep their own rows keyed by it); NULL for accounts
-- made in servauth. Unique, so that a second import finds what the first brought over.
ALTER TABLE users ADD COLUMN better_auth_id TEXT;
CREATE UNIQUE INDEX users_better_auth_id ON users (better_auth_id);
