-- Session notifications (issue 18): every change that can end a session or change what a
-- token check answers is sent on the channel `servauth_sessions` in the writing transaction,
-- so every server's session cache hears of it exactly when it commits, whoever wrote it.
-- Payloads: `user_id:session_id` for a session, `user_id:` for a user (src/store/fanout.rs).
-- PostgreSQL only: SQLite is one process's, whose writes tell its cache themselves.

CREATE FUNCTION servauth_notify_session() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('servauth_sessions', NEW.user_id::text || ':' || NEW.id::text);
    RETURN NULL;
END
$$;

-- Revocation, a changed end (a slide), a re-authentication. Not `last_used_at`, which every
-- refresh moves and no check reads.
CREATE TRIGGER sessions_notify AFTER UPDATE ON sessions FOR EACH ROW
    WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
          OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
          OR OLD.auth_time IS DISTINCT FROM NEW.auth_time
          OR OLD.amr IS DISTINCT FROM NEW.amr
          OR OLD.user_id IS DISTINCT FROM NEW.user_id)
    EXECUTE FUNCTION servauth_notify_session();

CREATE FUNCTION servauth_notify_user() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('servauth_sessions', OLD.id::text || ':');
    RETURN NULL;
END
$$;

-- Any change of a user (a token check answers with the user), and its deletion (its
-- sessions go with it).
CREATE TRIGGER users_notify AFTER UPDATE ON users FOR EACH ROW
    WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION servauth_notify_user();
CREATE TRIGGER users_notify_delete AFTER DELETE ON users FOR EACH ROW
    EXECUTE FUNCTION servauth_notify_user();
