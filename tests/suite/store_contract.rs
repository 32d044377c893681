//! The `Store` contract (the doc comments of `servauth::store`), checked on both backends.
//!
//! Every test gets a fresh database. Time is explicit: `now()` is read once and moved forward
//! by adding to it, never by sleeping, and values are whole microseconds so that what comes
//! back compares equal to what went in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use futures::future::join_all;
use servauth::store::{
    self, EmailConfirmation, NewOneTimeToken, NewSession, NewTokenSession, NewUser,
    OneTimeTokenRecord, ProfileChange, Pruning, RefreshTokenRecord, Role, Rotation,
    RotationOutcome, SessionRecord, SigningKeyRecord, Store, StoreError, TokenPurpose, UserRecord,
};
use sqlx::{Connection, PgConnection, SqliteConnection};
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::support::{Backend, TestDatabase, both_backends, now};

both_backends! {
    ping_answers_and_names_its_backend,
    a_sign_ins_audit_event_is_written_with_its_session_or_not_at_all,
    outbox_claims_share_the_messages_without_overlap_and_leases_end,
    rotation_caps_the_successor_at_the_sessions_end,
    rotation_touches_the_session_at_the_precision_asked,
    create_user_then_find_it_by_id_and_email_key,
    create_user_rejects_a_taken_email_key,
    create_user_rejects_a_taken_username_key,
    usernames_can_be_null_for_many_users,
    update_profile_sets_and_removes_username,
    set_password_hash_replaces_the_hash,
    a_password_session_needs_the_hash_it_was_checked_against,
    a_session_for_a_missing_user_is_refused,
    #[multi_thread] a_session_waits_for_a_password_change_in_progress_and_is_refused,
    delete_user_cascades_to_sessions_and_tokens,
    find_live_session_user_ignores_revoked_and_expired_sessions,
    #[multi_thread] concurrent_session_lookups_each_get_their_own_answer,
    find_refresh_token_returns_the_token_and_its_session_in_any_state,
    rotation_rotates_a_live_token_once,
    rotation_pairs_the_successor_with_its_csrf_hash,
    rotation_within_grace_replays_the_same_successor,
    rotation_after_grace_revokes_the_whole_session,
    rotation_of_unknown_or_expired_token_is_invalid,
    #[multi_thread] twenty_concurrent_rotations_yield_exactly_one_rotated,
    list_live_sessions_is_newest_first,
    revoke_session_only_touches_the_callers_own,
    revoke_user_sessions_keeps_the_given_one,
    find_one_time_token_ignores_used_expired_and_other_purposes,
    one_time_tokens_are_single_use,
    a_newer_token_retires_the_older_one_of_the_same_purpose,
    expired_one_time_tokens_are_refused,
    reset_password_revokes_every_session_and_retires_other_reset_tokens,
    #[multi_thread] twenty_concurrent_resets_with_one_token_succeed_once,
    #[multi_thread] twenty_concurrent_email_confirmations_with_one_token_succeed_once,
    confirm_email_verifies_only_the_current_address,
    confirm_email_change_moves_the_address_and_kills_old_tokens,
    confirm_email_change_to_a_taken_address_changes_nothing,
    change_password_keeps_only_the_given_session,
    #[multi_thread] token_methods_racing_deletion_and_rotation_never_fail,
    #[multi_thread] ensure_signing_key_is_atomic_under_concurrency,
    ensure_signing_key_keeps_the_newest_unretired_key,
    signing_keys_lists_unretired_and_recently_retired,
    #[multi_thread] migrations_run_concurrently_apply_once,
    timestamps_round_trip,
    connect_rejects_a_malformed_url,
    prune_deletes_ended_sessions_and_spent_tokens_and_keeps_reuse_detection,
    ensure_secret_keeps_the_first_value,
    recovery_and_signing_out_everywhere_end_a_pending_email_change,
    update_profile_sets_and_clears_name_and_image,
    token_sessions_are_found_by_their_hash_while_live,
    token_sessions_need_the_user_and_the_checked_hash,
    slide_session_moves_the_expiry_never_past_the_cap,
    revoke_token_session_only_touches_the_callers_own,
    concurrent_token_session_lookups_each_get_their_own_answer,
    token_sessions_end_with_the_rest_faces_revocations,
}

// ---- fixtures ----------------------------------------------------------------------------

/// The replay window every rotation in these tests uses.
fn grace() -> TimeDelta {
    TimeDelta::seconds(10)
}

/// A distinct 32-byte "hash" per number.
fn token(n: u8) -> Vec<u8> {
    vec![n; 32]
}

/// What a rotation to `successor` seals; distinct per successor so replays can be told apart.
fn sealed(successor: &[u8]) -> Vec<u8> {
    [b"sealed:".as_slice(), successor].concat()
}

fn new_user(email: &str, username: Option<&str>, at: DateTime<Utc>) -> NewUser {
    NewUser {
        id: Uuid::now_v7(),
        email: email.to_owned(),
        email_key: email.to_lowercase(),
        username: username.map(str::to_owned),
        username_key: username.map(str::to_lowercase),
        name: None,
        image: None,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
            .to_owned(),
        email_verified: false,
        role: Role::User,
        now: at,
    }
}

/// The CSRF hash [`new_session`] pairs with the first refresh token.
fn first_csrf() -> Vec<u8> {
    vec![0xC5; 32]
}

/// A browser session created at `at`: 30 days absolute, first refresh token idle for 1 day.
fn new_session(user_id: Uuid, refresh: &[u8], at: DateTime<Utc>) -> NewSession {
    NewSession {
        id: Uuid::now_v7(),
        user_id,
        csrf_hash: Some(first_csrf()),
        user_agent: Some("servauth-tests/1.0".to_owned()),
        ip: Some("192.0.2.7".to_owned()),
        now: at,
        expires_at: at + TimeDelta::days(30),
        refresh_hash: refresh.to_vec(),
        refresh_expires_at: at + TimeDelta::days(1),
        password_hash: None,
        audit: None,
    }
}

/// The record `create_session` must return for `session`.
fn expected_session(session: &NewSession) -> SessionRecord {
    SessionRecord {
        id: session.id,
        user_id: session.user_id,
        user_agent: session.user_agent.clone(),
        ip: session.ip.clone(),
        created_at: session.now,
        last_used_at: session.now,
        expires_at: session.expires_at,
        revoked_at: None,
        remember: true,
        auth_time: session.now,
        amr: vec!["pwd".to_owned()],
    }
}

/// The record `find_refresh_token` must return for the first refresh token of `session`
/// (created as `created`), before anything happened to it.
fn expected_first_token(session: &NewSession, created: &SessionRecord) -> RefreshTokenRecord {
    RefreshTokenRecord {
        session: created.clone(),
        csrf_hash: session.csrf_hash.clone(),
        created_at: session.now,
        expires_at: session.refresh_expires_at,
        rotated_at: None,
    }
}

/// Presents `presented` at `at`, offering `successor` (idle for 1 day) in exchange.
fn rotation(presented: &[u8], successor: &[u8], at: DateTime<Utc>) -> Rotation {
    Rotation {
        presented_hash: presented.to_vec(),
        successor_hash: successor.to_vec(),
        sealed_successor: sealed(successor),
        successor_expires_at: at + TimeDelta::days(1),
        csrf_hash: None,
        now: at,
        grace: grace(),
        last_used_precision: TimeDelta::zero(),
    }
}

fn signing_key(kid: &str, at: DateTime<Utc>) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: kid.to_owned(),
        algorithm: "EdDSA".to_owned(),
        private_key: format!("private-{kid}").into_bytes(),
        public_key: format!("public-{kid}").into_bytes(),
        created_at: at,
        retired_at: None,
    }
}

/// A fresh, migrated database and a store on it; `None` when the backend is unavailable.
async fn open(backend: Backend) -> Option<(TestDatabase, Arc<dyn Store>)> {
    let db = TestDatabase::create(backend).await?;
    let store = db.migrated_store().await;
    Some((db, store))
}

async fn finish(db: TestDatabase, store: Arc<dyn Store>) {
    store.close().await;
    drop(store);
    db.drop_database().await;
}

async fn create_user(store: &dyn Store, email: &str, at: DateTime<Utc>) -> UserRecord {
    store
        .create_user(new_user(email, None, at))
        .await
        .expect("create user")
}

async fn create_session(store: &dyn Store, session: &NewSession) -> SessionRecord {
    store
        .create_session(session.clone())
        .await
        .expect("create session")
        .expect("the session was refused")
}

/// Opens `connections` pooled connections up front (by using them at once), so that the calls
/// a concurrency test releases together really overlap instead of being staggered by
/// connection setup.
async fn warm_up(store: &dyn Store, connections: usize) {
    for ping in join_all((0..connections).map(|_| store.ping())).await {
        ping.expect("ping");
    }
}

async fn rotate(store: &dyn Store, rotation: Rotation) -> RotationOutcome {
    store.rotate_refresh_token(rotation).await.expect("rotate")
}

async fn find_token(store: &dyn Store, hash: &[u8]) -> Option<RefreshTokenRecord> {
    store
        .find_refresh_token(hash)
        .await
        .expect("find refresh token")
}

/// One-time token `n` (hash [`token`]`(n)`) of `purpose` for `user_id`, sent to `email` at
/// `at`, valid for an hour.
fn one_time(
    n: u8,
    user_id: Uuid,
    purpose: TokenPurpose,
    email: &str,
    at: DateTime<Utc>,
) -> NewOneTimeToken {
    NewOneTimeToken {
        token_hash: token(n),
        user_id,
        purpose,
        email: email.to_owned(),
        now: at,
        expires_at: at + TimeDelta::hours(1),
        mail: None,
    }
}

/// The record `find_one_time_token` must return for `issued` while it is usable.
fn expected_one_time(issued: &NewOneTimeToken) -> OneTimeTokenRecord {
    OneTimeTokenRecord {
        user_id: issued.user_id,
        purpose: issued.purpose,
        email: issued.email.clone(),
        created_at: issued.now,
        expires_at: issued.expires_at,
        used_at: None,
    }
}

async fn issue(store: &dyn Store, issued: &NewOneTimeToken) {
    store
        .issue_one_time_token(issued.clone())
        .await
        .expect("issue one-time token");
}

async fn find_one_time(
    store: &dyn Store,
    hash: &[u8],
    purpose: TokenPurpose,
    at: DateTime<Utc>,
) -> Option<OneTimeTokenRecord> {
    store
        .find_one_time_token(hash, purpose, at)
        .await
        .expect("find one-time token")
}

async fn reset(
    store: &dyn Store,
    hash: &[u8],
    password_hash: &str,
    at: DateTime<Utc>,
) -> Option<UserRecord> {
    store
        .reset_password(hash, password_hash, at)
        .await
        .expect("reset password")
}

async fn confirm(store: &dyn Store, hash: &[u8], at: DateTime<Utc>) -> EmailConfirmation {
    store
        .confirm_email(hash, None, at)
        .await
        .expect("confirm email")
}

async fn password_hash_of(store: &dyn Store, id: Uuid) -> String {
    store
        .find_credentials(id)
        .await
        .expect("find credentials")
        .expect("the user exists")
        .password_hash
}

/// The `used_at` of the one-time token with this hash as stored: `None` when there is no such
/// row, `Some(None)` while it is unused. Read on a connection of its own, bypassing the store
/// (which only ever returns usable tokens).
async fn used_at(db: &TestDatabase, hash: &[u8]) -> Option<Option<DateTime<Utc>>> {
    match db.backend {
        Backend::Sqlite => {
            let mut conn = SqliteConnection::connect(&db.url).await.expect("connect");
            let value = sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
                "SELECT used_at FROM one_time_tokens WHERE token_hash = ?1",
            )
            .bind(hash)
            .fetch_optional(&mut conn)
            .await
            .expect("query");
            conn.close().await.expect("close");
            value
        }
        Backend::Postgres => {
            let mut conn = PgConnection::connect(&db.url).await.expect("connect");
            let value = sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
                "SELECT used_at FROM one_time_tokens WHERE token_hash = $1",
            )
            .bind(hash)
            .fetch_optional(&mut conn)
            .await
            .expect("query");
            conn.close().await.expect("close");
            value
        }
    }
}

// ---- basics ------------------------------------------------------------------------------

async fn ping_answers_and_names_its_backend(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    store.ping().await.expect("ping");
    assert_eq!(store.backend(), backend.name());
    finish(db, store).await;
}

async fn connect_rejects_a_malformed_url(backend: Backend) {
    let (url, names) = match backend {
        Backend::Sqlite => ("sqlite://servauth.db?mode=sideways", "mode"),
        Backend::Postgres => (
            "postgres://servauth:hunter2@localhost:notaport/servauth",
            "port",
        ),
    };
    let error = store::connect(url, 1)
        .await
        .expect_err("a malformed URL is rejected");
    let StoreError::InvalidUrl(message) = error else {
        panic!("expected InvalidUrl, got {error:?}");
    };
    assert!(
        message.contains(names),
        "the message names the problem: {message}"
    );
    assert!(
        !message.contains("hunter2"),
        "the message leaks the password: {message}"
    );

    let error = store::connect("mysql://localhost/servauth", 1)
        .await
        .expect_err("rejected");
    assert!(matches!(error, StoreError::InvalidUrl(_)), "got {error:?}");
}

/// The pool pings a connection only after it sat unused for a second: one the server dropped
/// meanwhile (a restart, an idle timeout) is replaced before a query can fail on it.
#[tokio::test]
async fn postgres_replaces_connections_the_server_dropped_while_idle() {
    let Some((db, store)) = open(Backend::Postgres).await else {
        return;
    };
    warm_up(&*store, 4).await;
    let dropped = db
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await;
    assert!(dropped >= 4, "only {dropped} connections were dropped");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for _ in 0..8 {
        let found = store.find_user(Uuid::now_v7()).await;
        assert!(
            matches!(found, Ok(None)),
            "a query after the drop: {found:?}"
        );
    }
    finish(db, store).await;
}

#[tokio::test]
async fn postgres_connect_to_an_unreachable_server_does_not_fail_but_ping_does() {
    // Nothing listens on port 1; the URL is well formed, so only the first query fails.
    let store = store::connect("postgres://postgres@127.0.0.1:1/servauth", 2)
        .await
        .expect("a well-formed URL connects lazily");
    assert_eq!(store.backend(), "postgres");
    let started = Instant::now();
    let error = store.ping().await.expect_err("nothing answers on port 1");
    assert!(matches!(error, StoreError::Database(_)), "got {error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "ping gave up after the acquire timeout"
    );
    store.close().await;
}

#[tokio::test]
async fn sqlite_connect_fails_when_the_file_cannot_be_created() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!(
        "sqlite://{}",
        dir.path().join("missing").join("servauth.db").display()
    );
    let error = store::connect(&url, 1)
        .await
        .expect_err("no such directory");
    assert!(matches!(error, StoreError::Database(_)), "got {error:?}");
}

// ---- users -------------------------------------------------------------------------------

async fn create_user_then_find_it_by_id_and_email_key(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let at = now();
    let mut user = new_user("Alice@Example.com", Some("Alice"), at);
    user.email_verified = true;
    user.role = Role::Admin;
    let expected = UserRecord {
        id: user.id,
        email: "Alice@Example.com".to_owned(),
        username: Some("Alice".to_owned()),
        name: None,
        image: None,
        email_verified: true,
        role: Role::Admin,
        pending_email: None,
        created_at: at,
        updated_at: at,
        better_auth_id: None,
        ban: None,
    };

    assert_eq!(
        store.create_user(user.clone()).await.expect("create"),
        expected
    );
    assert_eq!(
        store.find_user(user.id).await.expect("find"),
        Some(expected.clone())
    );

    let by_key = store
        .find_credentials_by_email_key("alice@example.com")
        .await
        .expect("find by key")
        .expect("found by key");
    assert_eq!(by_key.user, expected);
    assert_eq!(by_key.password_hash, user.password_hash);
    let by_id = store
        .find_credentials(user.id)
        .await
        .expect("find")
        .expect("found by id");
    assert_eq!(by_id.user, expected);
    assert_eq!(by_id.password_hash, user.password_hash);

    // The key is compared exactly: lowercasing is the caller's job.
    let by_typed = store
        .find_credentials_by_email_key("Alice@Example.com")
        .await
        .expect("find");
    assert!(by_typed.is_none());
    assert_eq!(store.find_user(Uuid::now_v7()).await.expect("find"), None);
    assert!(
        store
            .find_credentials(Uuid::now_v7())
            .await
            .expect("find")
            .is_none()
    );
    finish(db, store).await;
}

async fn create_user_rejects_a_taken_email_key(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let at = now();
    store
        .create_user(new_user("alice@example.com", Some("alice"), at))
        .await
        .expect("create");

    let duplicate = new_user("ALICE@example.com", Some("someone"), at);
    let error = store
        .create_user(duplicate.clone())
        .await
        .expect_err("email taken");
    assert!(matches!(error, StoreError::EmailTaken), "got {error:?}");
    assert_eq!(store.find_user(duplicate.id).await.expect("find"), None);
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM users").await, 1);
    finish(db, store).await;
}

async fn create_user_rejects_a_taken_username_key(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let at = now();
    store
        .create_user(new_user("bob@example.com", Some("Bob"), at))
        .await
        .expect("create");

    let duplicate = new_user("carol@example.com", Some("BOB"), at);
    let error = store
        .create_user(duplicate.clone())
        .await
        .expect_err("username taken");
    assert!(matches!(error, StoreError::UsernameTaken), "got {error:?}");
    assert_eq!(store.find_user(duplicate.id).await.expect("find"), None);
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM users").await, 1);
    finish(db, store).await;
}

async fn usernames_can_be_null_for_many_users(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let at = now();
    for email in ["a@example.com", "b@example.com", "c@example.com"] {
        let user = store
            .create_user(new_user(email, None, at))
            .await
            .expect("create");
        assert_eq!(user.username, None);
    }
    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM users WHERE username_key IS NULL")
            .await,
        3
    );
    finish(db, store).await;
}

async fn update_profile_sets_and_removes_username(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    store
        .create_user(new_user("bob@example.com", Some("Bob"), t0))
        .await
        .expect("create bob");
    let set = |name: &str| Some(Some((name.to_owned(), name.to_lowercase())));

    let t1 = t0 + TimeDelta::seconds(1);
    let change = ProfileChange {
        username: set("Alice"),
        pending_email: None,
        ..ProfileChange::default()
    };
    let after_set = store
        .update_profile(alice.id, change, t1)
        .await
        .expect("update");
    let expected = UserRecord {
        username: Some("Alice".to_owned()),
        updated_at: t1,
        ..alice.clone()
    };
    assert_eq!(after_set, Some(expected.clone()));

    // Bob's username, in other case: taken, and nothing changes.
    let t2 = t0 + TimeDelta::seconds(2);
    let change = ProfileChange {
        username: set("BOB"),
        pending_email: None,
        ..ProfileChange::default()
    };
    let error = store
        .update_profile(alice.id, change, t2)
        .await
        .expect_err("taken");
    assert!(matches!(error, StoreError::UsernameTaken), "got {error:?}");
    assert_eq!(
        store.find_user(alice.id).await.expect("find"),
        Some(expected.clone())
    );

    // A pending email alone leaves the username as it is.
    let t3 = t0 + TimeDelta::seconds(3);
    let change = ProfileChange {
        username: None,
        pending_email: Some(Some("new@example.com".to_owned())),
        ..ProfileChange::default()
    };
    let after_pending = store
        .update_profile(alice.id, change, t3)
        .await
        .expect("update");
    let expected = UserRecord {
        pending_email: Some("new@example.com".to_owned()),
        updated_at: t3,
        ..expected
    };
    assert_eq!(after_pending, Some(expected.clone()));

    // Removing the username leaves the pending email, and frees the key.
    let t4 = t0 + TimeDelta::seconds(4);
    let change = ProfileChange {
        username: Some(None),
        pending_email: None,
        ..ProfileChange::default()
    };
    let after_remove = store
        .update_profile(alice.id, change, t4)
        .await
        .expect("update");
    let expected = UserRecord {
        username: None,
        updated_at: t4,
        ..expected
    };
    assert_eq!(after_remove, Some(expected.clone()));
    store
        .create_user(new_user("carol@example.com", Some("ALICE"), t4))
        .await
        .expect("the removed username is free again");

    let t5 = t0 + TimeDelta::seconds(5);
    let change = ProfileChange {
        username: None,
        pending_email: Some(None),
        ..ProfileChange::default()
    };
    let after_clear = store
        .update_profile(alice.id, change, t5)
        .await
        .expect("update");
    assert_eq!(
        after_clear,
        Some(UserRecord {
            pending_email: None,
            updated_at: t5,
            ..expected
        })
    );

    let unknown = store
        .update_profile(Uuid::now_v7(), ProfileChange::default(), t5)
        .await;
    assert_eq!(unknown.expect("update"), None);
    finish(db, store).await;
}

async fn set_password_hash_replaces_the_hash(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let t1 = t0 + TimeDelta::minutes(1);

    let old = password_hash_of(&*store, alice.id).await;
    assert!(
        store
            .set_password_hash(alice.id, &old, "$argon2id$new", t1)
            .await
            .expect("set")
    );
    // A re-hash of the old password after the hash changed (a reset meanwhile) is dropped.
    assert!(
        !store
            .set_password_hash(
                alice.id,
                &old,
                "$argon2id$stale",
                t1 + TimeDelta::minutes(1)
            )
            .await
            .expect("set")
    );
    let credentials = store
        .find_credentials(alice.id)
        .await
        .expect("find")
        .expect("found");
    assert_eq!(credentials.password_hash, "$argon2id$new");
    assert_eq!(
        credentials.user,
        UserRecord {
            updated_at: t1,
            ..alice
        }
    );

    assert!(
        !store
            .set_password_hash(Uuid::now_v7(), &old, "$argon2id$x", t1)
            .await
            .expect("set")
    );
    finish(db, store).await;
}

async fn a_password_session_needs_the_hash_it_was_checked_against(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let checked = password_hash_of(&*store, alice.id).await;
    let with_hash = |refresh: &[u8], hash: &str| NewSession {
        password_hash: Some(hash.to_owned()),
        ..new_session(alice.id, refresh, t0)
    };
    // Still the hash the password was checked against: the session opens.
    let session = with_hash(&token(1), &checked);
    let opened = create_session(&*store, &session).await;
    assert_eq!(opened, expected_session(&session));
    // Replaced meanwhile (a reset or a change): refused, and nothing is written.
    let refused = store
        .create_session(with_hash(&token(2), "$argon2id$not-the-current-one"))
        .await
        .expect("create session");
    assert_eq!(refused, None);
    assert_eq!(
        store.find_refresh_token(&token(2)).await.expect("find"),
        None
    );
    let sessions = store.list_live_sessions(alice.id, t0).await.expect("list");
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    finish(db, store).await;
}

/// A login checked against the old hash, racing a reset or change that holds the user row:
/// the session waits for that transaction and, once it commits, is refused.
async fn a_session_waits_for_a_password_change_in_progress_and_is_refused(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let checked = password_hash_of(&*store, alice.id).await;
    let session = NewSession {
        password_hash: Some(checked),
        ..new_session(alice.id, &token(1), t0)
    };
    // A password change in progress on a connection of its own, holding the row.
    let change = format!(
        "UPDATE users SET password_hash = 'replaced' WHERE id = '{}'",
        alice.id.hyphenated()
    );
    let login = {
        let store = store.clone();
        move || tokio::spawn(async move { store.create_session(session).await })
    };
    let opened = match backend {
        Backend::Sqlite => {
            let conn = SqliteConnection::connect(&db.url).await.expect("connect");
            while_holding(conn, "BEGIN IMMEDIATE", change, login).await
        }
        Backend::Postgres => {
            let conn = PgConnection::connect(&db.url).await.expect("connect");
            while_holding(conn, "BEGIN", change, login).await
        }
    };
    assert_eq!(opened.expect("create session"), None);
    assert_eq!(
        store.find_refresh_token(&token(1)).await.expect("find"),
        None
    );
    finish(db, store).await;
}

/// Runs `change` in a transaction opened with `begin` on `conn`, calls `login` while that
/// transaction holds the rows it changed, checks that the login is still waiting 300 ms later,
/// then commits and returns what the login returned.
async fn while_holding<C, T>(
    mut conn: C,
    begin: &'static str,
    change: String,
    login: impl FnOnce() -> tokio::task::JoinHandle<T>,
) -> T
where
    C: Connection,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
{
    sqlx::raw_sql(begin)
        .execute(&mut conn)
        .await
        .expect("begin");
    sqlx::raw_sql(sqlx::AssertSqlSafe(change))
        .execute(&mut conn)
        .await
        .expect("update");
    let pending = login();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pending.is_finished(),
        "the session did not wait for the change"
    );
    sqlx::raw_sql("COMMIT")
        .execute(&mut conn)
        .await
        .expect("commit");
    pending.await.expect("join")
}

async fn a_session_for_a_missing_user_is_refused(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let her_hash = password_hash_of(&*store, alice.id).await;
    assert!(store.delete_user(alice.id).await.expect("delete"));
    for password_hash in [None, Some(her_hash)] {
        let session = NewSession {
            password_hash,
            ..new_session(alice.id, &token(1), t0)
        };
        let refused = store.create_session(session).await.expect("create session");
        assert_eq!(refused, None);
        assert_eq!(
            store.find_refresh_token(&token(1)).await.expect("find"),
            None
        );
    }
    finish(db, store).await;
}

async fn delete_user_cascades_to_sessions_and_tokens(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let bob = create_user(&*store, "bob@example.com", t0).await;
    create_session(&*store, &new_session(alice.id, &token(1), t0)).await;
    create_session(&*store, &new_session(alice.id, &token(2), t0)).await;
    let t1 = t0 + TimeDelta::minutes(1);
    assert!(matches!(
        rotate(&*store, rotation(&token(1), &token(3), t1)).await,
        RotationOutcome::Rotated { .. }
    ));
    let bobs = create_session(&*store, &new_session(bob.id, &token(9), t0)).await;
    issue(
        &*store,
        &one_time(1, alice.id, TokenPurpose::PasswordReset, &alice.email, t0),
    )
    .await;
    issue(
        &*store,
        &one_time(2, bob.id, TokenPurpose::PasswordReset, &bob.email, t0),
    )
    .await;
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM sessions").await, 3);
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM refresh_tokens").await, 4);

    assert!(store.delete_user(alice.id).await.expect("delete"));

    assert_eq!(store.find_user(alice.id).await.expect("find"), None);
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM users").await, 1);
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM sessions").await, 1);
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM refresh_tokens").await, 1);
    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM one_time_tokens").await,
        1
    );
    assert_eq!(used_at(&db, &token(1)).await, None, "alice's token is gone");
    assert_eq!(used_at(&db, &token(2)).await, Some(None), "bob's stays");
    assert_eq!(find_token(&*store, &token(1)).await, None);
    assert_eq!(find_token(&*store, &token(3)).await, None);
    assert_eq!(
        find_token(&*store, &token(9))
            .await
            .map(|found| found.session),
        Some(bobs)
    );
    assert!(!store.delete_user(alice.id).await.expect("delete again"));
    finish(db, store).await;
}

// ---- sessions ----------------------------------------------------------------------------

async fn find_live_session_user_ignores_revoked_and_expired_sessions(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let bob = create_user(&*store, "bob@example.com", t0).await;
    let live = create_session(&*store, &new_session(alice.id, &token(1), t0)).await;
    let revoked = create_session(&*store, &new_session(alice.id, &token(2), t0)).await;
    assert!(
        store
            .revoke_session(alice.id, revoked.id, t0)
            .await
            .expect("revoke")
    );
    let short = NewSession {
        expires_at: t0 + TimeDelta::hours(1),
        ..new_session(alice.id, &token(3), t0)
    };
    create_session(&*store, &short).await;
    let later = t0 + TimeDelta::minutes(1);
    let find = |session: Uuid, user: Uuid, at: DateTime<Utc>| {
        let store = Arc::clone(&store);
        async move {
            store
                .find_live_session_user(session, user, at)
                .await
                .expect("find")
                .map(|live| live.user)
        }
    };

    assert_eq!(find(live.id, alice.id, later).await, Some(alice.clone()));
    assert_eq!(
        find(live.id, bob.id, later).await,
        None,
        "another user's session"
    );
    assert_eq!(find(revoked.id, alice.id, later).await, None, "revoked");
    let just_before = short.expires_at - TimeDelta::microseconds(1);
    assert_eq!(
        find(short.id, alice.id, just_before).await,
        Some(alice.clone())
    );
    assert_eq!(
        find(short.id, alice.id, short.expires_at).await,
        None,
        "expired"
    );
    assert_eq!(find(Uuid::now_v7(), alice.id, later).await, None, "unknown");
    finish(db, store).await;
}

/// Many lookups at once (the PostgreSQL store answers lookups that queue up together in one
/// query): each gets the answer for its own key, the same key asked twice included.
async fn concurrent_session_lookups_each_get_their_own_answer(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let bob = create_user(&*store, "bob@example.com", t0).await;
    let alices = create_session(&*store, &new_session(alice.id, &token(1), t0)).await;
    let bobs = create_session(&*store, &new_session(bob.id, &token(2), t0)).await;
    let revoked = create_session(&*store, &new_session(bob.id, &token(3), t0)).await;
    assert!(
        store
            .revoke_session(bob.id, revoked.id, t0)
            .await
            .expect("revoke")
    );
    let later = t0 + TimeDelta::minutes(1);
    let past_expiry = t0 + TimeDelta::days(400);
    let cases = [
        (alices.id, alice.id, later, Some(&alice)),
        (bobs.id, bob.id, later, Some(&bob)),
        (bobs.id, alice.id, later, None),
        (revoked.id, bob.id, later, None),
        (alices.id, alice.id, past_expiry, None),
        (Uuid::now_v7(), alice.id, later, None),
    ];
    let lookups = (0..300).map(|i| {
        let (session, user, at, expected) = cases[i % cases.len()];
        let store = Arc::clone(&store);
        async move {
            let found = store
                .find_live_session_user(session, user, at)
                .await
                .expect("find")
                .map(|live| live.user);
            (i, found, expected.cloned())
        }
    });
    for (i, found, expected) in join_all(lookups).await {
        assert_eq!(found, expected, "lookup {i}");
    }
    finish(db, store).await;
}

async fn find_refresh_token_returns_the_token_and_its_session_in_any_state(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;

    // Current: the first token, with the session's CSRF hash.
    let session = new_session(alice.id, &token(1), t0);
    let created = create_session(&*store, &session).await;
    let first = expected_first_token(&session, &created);
    assert_eq!(find_token(&*store, &token(1)).await, Some(first.clone()));

    // Rotated: the token is still found, now with its `rotated_at`, and its session as it is
    // after the rotation; the successor is found too, with its own CSRF hash.
    let t1 = t0 + TimeDelta::minutes(1);
    let second_csrf = vec![0xD6; 32];
    let RotationOutcome::Rotated {
        session: rotated, ..
    } = rotate(
        &*store,
        Rotation {
            csrf_hash: Some(second_csrf.clone()),
            ..rotation(&token(1), &token(2), t1)
        },
    )
    .await
    else {
        panic!("the live token rotates");
    };
    let first = RefreshTokenRecord {
        session: rotated.clone(),
        rotated_at: Some(t1),
        ..first
    };
    let second = RefreshTokenRecord {
        session: rotated.clone(),
        csrf_hash: Some(second_csrf),
        created_at: t1,
        expires_at: t1 + TimeDelta::days(1),
        rotated_at: None,
    };
    assert_eq!(find_token(&*store, &token(1)).await, Some(first.clone()));
    assert_eq!(find_token(&*store, &token(2)).await, Some(second.clone()));

    // Expired (idle): the store does not judge; the caller reads `expires_at`.
    let idle = new_session(alice.id, &token(3), t0);
    let idle_created = create_session(&*store, &idle).await;
    assert_eq!(
        rotate(
            &*store,
            rotation(&token(3), &token(13), idle.refresh_expires_at)
        )
        .await,
        RotationOutcome::Invalid,
        "the token expired"
    );
    assert_eq!(
        find_token(&*store, &token(3)).await,
        Some(expected_first_token(&idle, &idle_created)),
        "an expired token is still found"
    );

    // Expired (session): likewise.
    let short = NewSession {
        expires_at: t0 + TimeDelta::hours(1),
        ..new_session(alice.id, &token(4), t0)
    };
    let short_created = create_session(&*store, &short).await;
    assert_eq!(
        rotate(&*store, rotation(&token(4), &token(14), short.expires_at)).await,
        RotationOutcome::Invalid,
        "the session expired"
    );
    assert_eq!(
        find_token(&*store, &token(4)).await,
        Some(expected_first_token(&short, &short_created)),
        "a token of an expired session is still found"
    );

    // Revoked session: every token of it is found, with the session's `revoked_at`.
    let t2 = t1 + TimeDelta::minutes(1);
    assert!(
        store
            .revoke_session(alice.id, created.id, t2)
            .await
            .expect("revoke")
    );
    let revoked = SessionRecord {
        revoked_at: Some(t2),
        ..rotated
    };
    assert_eq!(
        find_token(&*store, &token(1)).await,
        Some(RefreshTokenRecord {
            session: revoked.clone(),
            ..first
        })
    );
    assert_eq!(
        find_token(&*store, &token(2)).await,
        Some(RefreshTokenRecord {
            session: revoked,
            ..second
        })
    );

    // Unknown: never issued, or offered by a rotation that did not happen.
    assert_eq!(find_token(&*store, &token(77)).await, None, "unknown token");
    assert_eq!(
        find_token(&*store, &token(13)).await,
        None,
        "the successor of a failed rotation was not installed"
    );
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM refresh_tokens").await, 4);
    finish(db, store).await;
}

/// The caller may offer a successor expiry past the session's end (it no longer reads the
/// session first): the store caps it there.
async fn rotation_caps_the_successor_at_the_sessions_end(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let session = new_session(alice.id, &token(1), t0);
    let created = create_session(&*store, &session).await;
    let t1 = t0 + TimeDelta::minutes(5);
    let far = Rotation {
        successor_expires_at: created.expires_at + TimeDelta::days(365),
        ..rotation(&token(1), &token(2), t1)
    };
    assert!(matches!(
        rotate(&*store, far).await,
        RotationOutcome::Rotated { .. }
    ));
    let successor = find_token(&*store, &token(2)).await.expect("the successor");
    assert_eq!(successor.expires_at, created.expires_at);
    // Within the session's end, the offer stands.
    let near = rotation(&token(2), &token(3), t1 + TimeDelta::minutes(1));
    let offered = near.successor_expires_at;
    assert!(offered < created.expires_at);
    assert!(matches!(
        rotate(&*store, near).await,
        RotationOutcome::Rotated { .. }
    ));
    assert_eq!(
        find_token(&*store, &token(3))
            .await
            .expect("the next")
            .expires_at,
        offered
    );
    finish(db, store).await;
}

async fn rotation_touches_the_session_at_the_precision_asked(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let created = create_session(&*store, &new_session(alice.id, &token(1), t0)).await;
    let minute = TimeDelta::minutes(1);
    // 30 s after the last use: within the precision, the session keeps its time.
    let t1 = t0 + TimeDelta::seconds(30);
    let RotationOutcome::Rotated { session, .. } = rotate(
        &*store,
        Rotation {
            last_used_precision: minute,
            ..rotation(&token(1), &token(2), t1)
        },
    )
    .await
    else {
        panic!("not rotated");
    };
    assert_eq!(session.last_used_at, created.last_used_at);
    assert_eq!(
        find_token(&*store, &token(2)).await.unwrap().session,
        session
    );
    // Over a minute after it: the session is touched.
    let t2 = t0 + TimeDelta::seconds(61);
    let RotationOutcome::Rotated { session, .. } = rotate(
        &*store,
        Rotation {
            last_used_precision: minute,
            ..rotation(&token(2), &token(3), t2)
        },
    )
    .await
    else {
        panic!("not rotated");
    };
    assert_eq!(session.last_used_at, t2);
    assert_eq!(
        find_token(&*store, &token(3)).await.unwrap().session,
        session
    );
    finish(db, store).await;
}

async fn rotation_rotates_a_live_token_once(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let session = new_session(alice.id, &token(1), t0);
    let created = create_session(&*store, &session).await;
    assert_eq!(created, expected_session(&session));

    let t1 = t0 + TimeDelta::minutes(5);
    let first = Rotation {
        csrf_hash: Some(vec![0xD6; 32]),
        ..rotation(&token(1), &token(2), t1)
    };
    let after_first = SessionRecord {
        last_used_at: t1,
        ..created.clone()
    };
    assert_eq!(
        rotate(&*store, first).await,
        RotationOutcome::Rotated {
            session: after_first.clone(),
            user: alice.clone(),
        }
    );

    // The successor is live and rotates in turn.
    let t2 = t1 + TimeDelta::hours(1);
    let after_second = SessionRecord {
        last_used_at: t2,
        ..after_first
    };
    assert_eq!(
        rotate(&*store, rotation(&token(2), &token(3), t2)).await,
        RotationOutcome::Rotated {
            session: after_second.clone(),
            user: alice.clone(),
        }
    );
    // The successor got `successor_expires_at` and the rotation's (here absent) CSRF hash.
    assert_eq!(
        find_token(&*store, &token(3)).await,
        Some(RefreshTokenRecord {
            session: after_second.clone(),
            csrf_hash: None,
            created_at: t2,
            expires_at: t2 + TimeDelta::days(1),
            rotated_at: None,
        })
    );
    // The rotated ones are marked as such.
    for (hash, rotated_at) in [(token(1), t1), (token(2), t2)] {
        let found = find_token(&*store, &hash).await.expect("found");
        assert_eq!(found.rotated_at, Some(rotated_at));
        assert_eq!(found.session, after_second);
    }
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM refresh_tokens").await, 3);
    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM refresh_tokens WHERE rotated_at IS NULL")
            .await,
        1
    );
    finish(db, store).await;
}

async fn rotation_pairs_the_successor_with_its_csrf_hash(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let csrf_of = |hash: Vec<u8>| {
        let store = Arc::clone(&store);
        async move { find_token(&*store, &hash).await.expect("found").csrf_hash }
    };

    // Browser: the first token carries NewSession's hash, each successor its Rotation's.
    create_session(&*store, &new_session(alice.id, &token(1), t0)).await;
    assert_eq!(csrf_of(token(1)).await, Some(first_csrf()));
    let t1 = t0 + TimeDelta::minutes(1);
    let second_csrf = vec![0xD6; 32];
    assert!(matches!(
        rotate(
            &*store,
            Rotation {
                csrf_hash: Some(second_csrf.clone()),
                ..rotation(&token(1), &token(2), t1)
            }
        )
        .await,
        RotationOutcome::Rotated { .. }
    ));
    assert_eq!(
        csrf_of(token(1)).await,
        Some(first_csrf()),
        "the presented token keeps the hash it was issued with"
    );
    assert_eq!(csrf_of(token(2)).await, Some(second_csrf.clone()));

    let t2 = t1 + TimeDelta::minutes(1);
    let third_csrf = vec![0xE7; 32];
    assert!(matches!(
        rotate(
            &*store,
            Rotation {
                csrf_hash: Some(third_csrf.clone()),
                ..rotation(&token(2), &token(3), t2)
            }
        )
        .await,
        RotationOutcome::Rotated { .. }
    ));
    // A retry within the grace window, offering yet another pair, changes no hash.
    assert!(matches!(
        rotate(
            &*store,
            Rotation {
                csrf_hash: Some(vec![0xF8; 32]),
                ..rotation(&token(2), &token(4), t2 + grace())
            }
        )
        .await,
        RotationOutcome::Replayed { .. }
    ));
    assert_eq!(csrf_of(token(1)).await, Some(first_csrf()));
    assert_eq!(csrf_of(token(2)).await, Some(second_csrf));
    assert_eq!(csrf_of(token(3)).await, Some(third_csrf));
    assert_eq!(find_token(&*store, &token(4)).await, None);

    // Native: no hash on the first token, none on its successor.
    let native = NewSession {
        csrf_hash: None,
        ..new_session(alice.id, &token(11), t0)
    };
    create_session(&*store, &native).await;
    assert_eq!(csrf_of(token(11)).await, None);
    assert!(matches!(
        rotate(&*store, rotation(&token(11), &token(12), t1)).await,
        RotationOutcome::Rotated { .. }
    ));
    assert_eq!(csrf_of(token(11)).await, None);
    assert_eq!(csrf_of(token(12)).await, None);

    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM refresh_tokens WHERE csrf_hash IS NULL")
            .await,
        2
    );
    finish(db, store).await;
}

async fn rotation_within_grace_replays_the_same_successor(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    create_session(&*store, &new_session(alice.id, &token(1), t0)).await;
    let t1 = t0 + TimeDelta::minutes(1);
    let RotationOutcome::Rotated {
        session: rotated, ..
    } = rotate(&*store, rotation(&token(1), &token(2), t1)).await
    else {
        panic!("the live token rotates");
    };

    // A retry at the very end of the window, offering another successor, gets the first one.
    let retry_at = t1 + grace();
    assert_eq!(
        rotate(&*store, rotation(&token(1), &token(3), retry_at)).await,
        RotationOutcome::Replayed {
            session: rotated.clone(),
            sealed_successor: sealed(&token(2))
        }
    );

    // Nothing changed: no new token, the first successor is still the current one.
    let found = find_token(&*store, &token(2)).await.expect("found");
    assert_eq!(found.session, rotated);
    assert_eq!(found.rotated_at, None);
    assert_eq!(
        find_token(&*store, &token(1))
            .await
            .expect("found")
            .rotated_at,
        Some(t1)
    );
    assert_eq!(find_token(&*store, &token(3)).await, None);
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM refresh_tokens").await, 2);
    finish(db, store).await;
}

async fn rotation_after_grace_revokes_the_whole_session(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let stolen = create_session(&*store, &new_session(alice.id, &token(1), t0)).await;
    let other = create_session(&*store, &new_session(alice.id, &token(7), t0)).await;
    let t1 = t0 + TimeDelta::minutes(1);
    assert!(matches!(
        rotate(&*store, rotation(&token(1), &token(2), t1)).await,
        RotationOutcome::Rotated { .. }
    ));

    let late = t1 + grace() + TimeDelta::microseconds(1);
    assert_eq!(
        rotate(&*store, rotation(&token(1), &token(3), late)).await,
        RotationOutcome::Reused {
            session_id: stolen.id
        }
    );

    // The revocation is committed: the session is gone for every token, the other stays.
    let live = store
        .list_live_sessions(alice.id, late)
        .await
        .expect("list");
    assert_eq!(
        live.iter().map(|session| session.id).collect::<Vec<_>>(),
        vec![other.id]
    );
    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL")
            .await,
        1
    );
    let newest = find_token(&*store, &token(2)).await.expect("found");
    assert_eq!(newest.session.revoked_at, Some(late));
    assert_eq!(newest.rotated_at, None);
    assert_eq!(
        rotate(&*store, rotation(&token(2), &token(4), late)).await,
        RotationOutcome::Invalid,
        "the newest token dies with its session"
    );
    assert_eq!(
        rotate(&*store, rotation(&token(1), &token(5), late)).await,
        RotationOutcome::Invalid,
        "a reused token of an already revoked session is just invalid"
    );
    assert!(
        !store
            .revoke_session(alice.id, stolen.id, late)
            .await
            .expect("revoke")
    );
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM refresh_tokens").await, 3);
    finish(db, store).await;
}

async fn rotation_of_unknown_or_expired_token_is_invalid(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;

    assert_eq!(
        rotate(&*store, rotation(&token(99), &token(100), t0)).await,
        RotationOutcome::Invalid,
        "unknown token"
    );

    let idle = new_session(alice.id, &token(1), t0);
    create_session(&*store, &idle).await;
    assert_eq!(
        rotate(
            &*store,
            rotation(&token(1), &token(11), idle.refresh_expires_at)
        )
        .await,
        RotationOutcome::Invalid,
        "the token expired (never rotated)"
    );

    let revoked = create_session(&*store, &new_session(alice.id, &token(2), t0)).await;
    assert!(
        store
            .revoke_session(alice.id, revoked.id, t0)
            .await
            .expect("revoke")
    );
    assert_eq!(
        rotate(
            &*store,
            rotation(&token(2), &token(12), t0 + TimeDelta::minutes(1))
        )
        .await,
        RotationOutcome::Invalid,
        "the session is revoked"
    );

    let short = NewSession {
        expires_at: t0 + TimeDelta::hours(1),
        ..new_session(alice.id, &token(3), t0)
    };
    create_session(&*store, &short).await;
    assert_eq!(
        rotate(&*store, rotation(&token(3), &token(13), short.expires_at)).await,
        RotationOutcome::Invalid,
        "the session expired"
    );

    // Nothing was rotated or installed.
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM refresh_tokens").await, 3);
    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM refresh_tokens WHERE rotated_at IS NULL")
            .await,
        3
    );
    finish(db, store).await;
}

async fn twenty_concurrent_rotations_yield_exactly_one_rotated(backend: Backend) {
    const CALLS: u8 = 20;
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    create_session(&*store, &new_session(alice.id, &token(1), t0)).await;
    let t1 = t0 + TimeDelta::minutes(1);

    warm_up(&*store, 8).await;

    // Every call offers its own successor, as concurrent requests would.
    let barrier = Arc::new(Barrier::new(usize::from(CALLS)));
    let calls = (0..CALLS).map(|i| {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        tokio::spawn(async move {
            barrier.wait().await;
            store
                .rotate_refresh_token(rotation(&token(1), &token(100 + i), t1))
                .await
        })
    });
    let outcomes: Vec<RotationOutcome> = join_all(calls)
        .await
        .into_iter()
        .map(|joined| joined.expect("the task completes").expect("rotate"))
        .collect();

    let winners: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, outcome)| matches!(outcome, RotationOutcome::Rotated { .. }))
        .map(|(index, _)| index)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one call rotates: {outcomes:?}");
    let winner = winners[0];
    let RotationOutcome::Rotated {
        session: rotated, ..
    } = &outcomes[winner]
    else {
        unreachable!("the winner rotated");
    };
    let winning_successor = token(100 + u8::try_from(winner).expect("fewer than 256 calls"));
    let replayed = RotationOutcome::Replayed {
        session: rotated.clone(),
        sealed_successor: sealed(&winning_successor),
    };
    for (index, outcome) in outcomes.iter().enumerate() {
        if index != winner {
            assert_eq!(
                outcome, &replayed,
                "call {index} replays the winner's successor"
            );
        }
    }
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM refresh_tokens").await, 2);
    let found = find_token(&*store, &winning_successor)
        .await
        .expect("the winner's successor is installed");
    assert_eq!(&found.session, rotated);
    assert_eq!(found.rotated_at, None);
    assert_eq!(
        find_token(&*store, &token(1))
            .await
            .expect("found")
            .rotated_at,
        Some(t1)
    );
    finish(db, store).await;
}

async fn list_live_sessions_is_newest_first(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let bob = create_user(&*store, "bob@example.com", t0).await;
    let oldest = create_session(&*store, &new_session(alice.id, &token(1), t0)).await;
    let t1 = t0 + TimeDelta::seconds(1);
    let tied_a = create_session(&*store, &new_session(alice.id, &token(2), t1)).await;
    let tied_b = create_session(&*store, &new_session(alice.id, &token(3), t1)).await;
    let t2 = t0 + TimeDelta::seconds(2);
    let revoked = create_session(&*store, &new_session(alice.id, &token(4), t2)).await;
    assert!(
        store
            .revoke_session(alice.id, revoked.id, t2)
            .await
            .expect("revoke")
    );
    let at = t0 + TimeDelta::minutes(1);
    let expiring = NewSession {
        expires_at: at,
        ..new_session(alice.id, &token(5), t2)
    };
    create_session(&*store, &expiring).await;
    create_session(&*store, &new_session(bob.id, &token(6), t2)).await;

    // Same created_at: the greater id first.
    let mut tied = [tied_a, tied_b];
    tied.sort_by_key(|session| std::cmp::Reverse(session.id));
    let [first, second] = tied;
    assert_eq!(
        store.list_live_sessions(alice.id, at).await.expect("list"),
        vec![first, second, oldest]
    );
    assert_eq!(
        store
            .list_live_sessions(Uuid::now_v7(), at)
            .await
            .expect("list"),
        vec![]
    );
    finish(db, store).await;
}

async fn revoke_session_only_touches_the_callers_own(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let bob = create_user(&*store, "bob@example.com", t0).await;
    let alices = create_session(&*store, &new_session(alice.id, &token(1), t0)).await;
    let bobs = create_session(&*store, &new_session(bob.id, &token(2), t0)).await;
    let t1 = t0 + TimeDelta::minutes(1);

    assert!(
        !store
            .revoke_session(bob.id, alices.id, t1)
            .await
            .expect("revoke"),
        "not bob's"
    );
    assert_eq!(
        store.list_live_sessions(alice.id, t1).await.expect("list"),
        vec![alices.clone()]
    );

    assert!(
        store
            .revoke_session(alice.id, alices.id, t1)
            .await
            .expect("revoke")
    );
    assert_eq!(
        store.list_live_sessions(alice.id, t1).await.expect("list"),
        vec![]
    );
    assert!(
        !store
            .revoke_session(alice.id, alices.id, t1)
            .await
            .expect("revoke"),
        "already"
    );
    assert!(
        !store
            .revoke_session(alice.id, Uuid::now_v7(), t1)
            .await
            .expect("revoke"),
        "unknown"
    );
    assert_eq!(
        store.list_live_sessions(bob.id, t1).await.expect("list"),
        vec![bobs]
    );
    finish(db, store).await;
}

async fn revoke_user_sessions_keeps_the_given_one(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let bob = create_user(&*store, "bob@example.com", t0).await;
    let keep = create_session(&*store, &new_session(alice.id, &token(1), t0)).await;
    create_session(&*store, &new_session(alice.id, &token(2), t0)).await;
    create_session(&*store, &new_session(alice.id, &token(3), t0)).await;
    let already = create_session(&*store, &new_session(alice.id, &token(4), t0)).await;
    assert!(
        store
            .revoke_session(alice.id, already.id, t0)
            .await
            .expect("revoke")
    );
    let bobs = create_session(&*store, &new_session(bob.id, &token(5), t0)).await;
    let t1 = t0 + TimeDelta::minutes(1);

    assert_eq!(
        store
            .revoke_user_sessions(alice.id, Some(keep.id), t1)
            .await
            .expect("revoke"),
        2
    );
    assert_eq!(
        store.list_live_sessions(alice.id, t1).await.expect("list"),
        vec![keep]
    );
    assert_eq!(
        store
            .revoke_user_sessions(alice.id, None, t1)
            .await
            .expect("revoke"),
        1
    );
    assert_eq!(
        store.list_live_sessions(alice.id, t1).await.expect("list"),
        vec![]
    );
    assert_eq!(
        store
            .revoke_user_sessions(alice.id, None, t1)
            .await
            .expect("revoke"),
        0
    );
    assert_eq!(
        store.list_live_sessions(bob.id, t1).await.expect("list"),
        vec![bobs]
    );
    finish(db, store).await;
}

// ---- emailed single-use tokens -----------------------------------------------------------

async fn find_one_time_token_ignores_used_expired_and_other_purposes(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let bob = create_user(&*store, "bob@example.com", t0).await;
    let reset_token = one_time(1, alice.id, TokenPurpose::PasswordReset, &alice.email, t0);
    let verification = one_time(
        2,
        alice.id,
        TokenPurpose::EmailVerification,
        &alice.email,
        t0,
    );
    let change = one_time(
        3,
        alice.id,
        TokenPurpose::EmailChange,
        "Alice.New@Example.com",
        t0,
    );
    let bobs = one_time(
        4,
        bob.id,
        TokenPurpose::PasswordReset,
        &bob.email,
        t0 + TimeDelta::seconds(1),
    );
    for issued in [&reset_token, &verification, &change, &bobs] {
        issue(&*store, issued).await;
    }
    let t1 = t0 + TimeDelta::minutes(1);

    // Every purpose round-trips, with every field.
    for issued in [&reset_token, &verification, &change, &bobs] {
        assert_eq!(
            find_one_time(&*store, &issued.token_hash, issued.purpose, t1).await,
            Some(expected_one_time(issued)),
            "{:?}",
            issued.purpose
        );
    }

    // Asked for with another purpose: not found.
    for (n, purpose) in [
        (1, TokenPurpose::EmailVerification),
        (1, TokenPurpose::EmailChange),
        (2, TokenPurpose::PasswordReset),
        (2, TokenPurpose::EmailChange),
        (3, TokenPurpose::EmailVerification),
        (3, TokenPurpose::PasswordReset),
    ] {
        assert_eq!(
            find_one_time(&*store, &token(n), purpose, t1).await,
            None,
            "token {n} as {purpose:?}"
        );
    }

    // Found until just before `expires_at`, not at it.
    let just_before = reset_token.expires_at - TimeDelta::microseconds(1);
    assert_eq!(
        find_one_time(&*store, &token(1), TokenPurpose::PasswordReset, just_before).await,
        Some(expected_one_time(&reset_token))
    );
    assert_eq!(
        find_one_time(
            &*store,
            &token(1),
            TokenPurpose::PasswordReset,
            reset_token.expires_at
        )
        .await,
        None,
        "expired"
    );
    assert_eq!(
        find_one_time(&*store, &token(99), TokenPurpose::PasswordReset, t1).await,
        None,
        "unknown"
    );

    // Used: no longer found; the others still are.
    assert!(
        reset(&*store, &token(1), "$argon2id$new", t1)
            .await
            .is_some()
    );
    assert_eq!(
        find_one_time(&*store, &token(1), TokenPurpose::PasswordReset, t1).await,
        None,
        "used"
    );
    assert_eq!(
        find_one_time(&*store, &token(2), TokenPurpose::EmailVerification, t1).await,
        Some(expected_one_time(&verification))
    );
    assert_eq!(
        find_one_time(&*store, &token(4), TokenPurpose::PasswordReset, t1).await,
        Some(expected_one_time(&bobs))
    );
    finish(db, store).await;
}

async fn one_time_tokens_are_single_use(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    issue(
        &*store,
        &one_time(1, alice.id, TokenPurpose::PasswordReset, &alice.email, t0),
    )
    .await;
    issue(
        &*store,
        &one_time(
            2,
            alice.id,
            TokenPurpose::EmailVerification,
            &alice.email,
            t0,
        ),
    )
    .await;
    let t1 = t0 + TimeDelta::minutes(1);
    let t2 = t1 + TimeDelta::seconds(1);

    let after_reset = UserRecord {
        updated_at: t1,
        ..alice.clone()
    };
    assert_eq!(
        reset(&*store, &token(1), "$argon2id$first", t1).await,
        Some(after_reset.clone())
    );
    assert_eq!(
        reset(&*store, &token(1), "$argon2id$second", t2).await,
        None,
        "a used reset token"
    );
    assert_eq!(password_hash_of(&*store, alice.id).await, "$argon2id$first");
    assert_eq!(
        store.find_user(alice.id).await.expect("find"),
        Some(after_reset.clone())
    );
    assert_eq!(used_at(&db, &token(1)).await, Some(Some(t1)));

    let verified = UserRecord {
        email_verified: true,
        ..after_reset
    };
    assert_eq!(
        confirm(&*store, &token(2), t1).await,
        EmailConfirmation::Verified {
            user: verified.clone()
        }
    );
    assert_eq!(
        confirm(&*store, &token(2), t2).await,
        EmailConfirmation::Invalid,
        "a used verification token"
    );
    assert_eq!(used_at(&db, &token(2)).await, Some(Some(t1)));
    assert_eq!(
        store.find_user(alice.id).await.expect("find"),
        Some(verified)
    );
    finish(db, store).await;
}

async fn a_newer_token_retires_the_older_one_of_the_same_purpose(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let bob = create_user(&*store, "bob@example.com", t0).await;
    let older = one_time(1, alice.id, TokenPurpose::PasswordReset, &alice.email, t0);
    let verification = one_time(
        2,
        alice.id,
        TokenPurpose::EmailVerification,
        &alice.email,
        t0,
    );
    let bobs = one_time(3, bob.id, TokenPurpose::PasswordReset, &bob.email, t0);
    for issued in [&older, &verification, &bobs] {
        issue(&*store, issued).await;
    }

    let t1 = t0 + TimeDelta::minutes(1);
    let newer = one_time(4, alice.id, TokenPurpose::PasswordReset, &alice.email, t1);
    issue(&*store, &newer).await;

    assert_eq!(used_at(&db, &token(1)).await, Some(Some(t1)), "retired");
    assert_eq!(used_at(&db, &token(2)).await, Some(None), "another purpose");
    assert_eq!(used_at(&db, &token(3)).await, Some(None), "another user");
    assert_eq!(used_at(&db, &token(4)).await, Some(None));
    assert_eq!(
        find_one_time(&*store, &token(1), TokenPurpose::PasswordReset, t1).await,
        None
    );
    assert_eq!(
        find_one_time(&*store, &token(4), TokenPurpose::PasswordReset, t1).await,
        Some(expected_one_time(&newer))
    );

    let t2 = t1 + TimeDelta::minutes(1);
    assert_eq!(
        reset(&*store, &token(1), "$argon2id$older", t2).await,
        None,
        "only the newest link works"
    );
    assert_eq!(
        password_hash_of(&*store, alice.id).await,
        new_user("", None, t0).password_hash
    );
    assert_eq!(
        reset(&*store, &token(4), "$argon2id$newer", t2).await,
        Some(UserRecord {
            updated_at: t2,
            ..alice.clone()
        })
    );
    // A token already retired keeps the time it was retired at.
    assert_eq!(used_at(&db, &token(1)).await, Some(Some(t1)));

    // Likewise for another purpose, independently.
    let t3 = t2 + TimeDelta::minutes(1);
    let newer_verification = one_time(
        5,
        alice.id,
        TokenPurpose::EmailVerification,
        &alice.email,
        t3,
    );
    issue(&*store, &newer_verification).await;
    assert_eq!(used_at(&db, &token(2)).await, Some(Some(t3)));
    assert_eq!(used_at(&db, &token(3)).await, Some(None));
    assert_eq!(
        find_one_time(&*store, &token(5), TokenPurpose::EmailVerification, t3).await,
        Some(expected_one_time(&newer_verification))
    );
    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM one_time_tokens WHERE used_at IS NULL")
            .await,
        2
    );
    finish(db, store).await;
}

async fn expired_one_time_tokens_are_refused(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let reset_token = one_time(1, alice.id, TokenPurpose::PasswordReset, &alice.email, t0);
    let verification = one_time(
        2,
        alice.id,
        TokenPurpose::EmailVerification,
        &alice.email,
        t0,
    );
    issue(&*store, &reset_token).await;
    issue(&*store, &verification).await;
    let original_hash = password_hash_of(&*store, alice.id).await;

    let expiry = reset_token.expires_at;
    assert_eq!(
        reset(&*store, &token(1), "$argon2id$late", expiry).await,
        None
    );
    assert_eq!(
        confirm(&*store, &token(2), expiry).await,
        EmailConfirmation::Invalid
    );
    assert_eq!(password_hash_of(&*store, alice.id).await, original_hash);
    assert_eq!(
        store.find_user(alice.id).await.expect("find"),
        Some(alice.clone())
    );
    assert_eq!(used_at(&db, &token(1)).await, Some(None));
    assert_eq!(used_at(&db, &token(2)).await, Some(None));

    // A microsecond earlier, both still work.
    let just_before = expiry - TimeDelta::microseconds(1);
    let after_reset = UserRecord {
        updated_at: just_before,
        ..alice.clone()
    };
    assert_eq!(
        reset(&*store, &token(1), "$argon2id$in-time", just_before).await,
        Some(after_reset.clone())
    );
    assert_eq!(
        confirm(&*store, &token(2), just_before).await,
        EmailConfirmation::Verified {
            user: UserRecord {
                email_verified: true,
                ..after_reset
            }
        }
    );
    assert_eq!(
        password_hash_of(&*store, alice.id).await,
        "$argon2id$in-time"
    );
    finish(db, store).await;
}

async fn reset_password_revokes_every_session_and_retires_other_reset_tokens(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let bob = create_user(&*store, "bob@example.com", t0).await;
    let first = create_session(&*store, &new_session(alice.id, &token(11), t0)).await;
    let second = create_session(&*store, &new_session(alice.id, &token(12), t0)).await;
    let earlier = t0 + TimeDelta::seconds(1);
    let revoked = create_session(&*store, &new_session(alice.id, &token(13), t0)).await;
    assert!(
        store
            .revoke_session(alice.id, revoked.id, earlier)
            .await
            .expect("revoke")
    );
    let short = NewSession {
        expires_at: t0 + TimeDelta::seconds(30),
        ..new_session(alice.id, &token(14), t0)
    };
    create_session(&*store, &short).await;
    let bobs = create_session(&*store, &new_session(bob.id, &token(15), t0)).await;

    issue(
        &*store,
        &one_time(1, alice.id, TokenPurpose::PasswordReset, &alice.email, t0),
    )
    .await;
    issue(
        &*store,
        &one_time(
            2,
            alice.id,
            TokenPurpose::EmailVerification,
            &alice.email,
            t0,
        ),
    )
    .await;
    issue(
        &*store,
        &one_time(3, bob.id, TokenPurpose::PasswordReset, &bob.email, t0),
    )
    .await;
    // Issuing retires the older reset token, so only a race leaves a user two unused ones:
    // copy alice's under the hash 0x05.
    let copied = db
        .execute(match backend {
            Backend::Sqlite => {
                "INSERT INTO one_time_tokens (token_hash, user_id, purpose, email, created_at, \
                 expires_at) SELECT X'05', user_id, purpose, email, created_at, expires_at \
                 FROM one_time_tokens WHERE purpose = 'password_reset' AND email = \
                 'alice@example.com'"
            }
            Backend::Postgres => {
                "INSERT INTO one_time_tokens (token_hash, user_id, purpose, email, created_at, \
                 expires_at) SELECT decode('05', 'hex'), user_id, purpose, email, created_at, \
                 expires_at FROM one_time_tokens WHERE purpose = 'password_reset' AND email = \
                 'alice@example.com'"
            }
        })
        .await;
    assert_eq!(copied, 1);
    assert_eq!(used_at(&db, &[5]).await, Some(None));

    let t1 = t0 + TimeDelta::minutes(1);
    assert_eq!(
        reset(&*store, &token(1), "$argon2id$reset", t1).await,
        Some(UserRecord {
            updated_at: t1,
            ..alice.clone()
        })
    );
    assert_eq!(password_hash_of(&*store, alice.id).await, "$argon2id$reset");

    // Every live session is revoked now; one revoked earlier keeps its time, an expired one
    // is left alone; bob's is untouched.
    assert_eq!(
        store.list_live_sessions(alice.id, t1).await.expect("list"),
        vec![]
    );
    let session_of = |n: u8| {
        let store = Arc::clone(&store);
        async move { find_token(&*store, &token(n)).await.expect("found").session }
    };
    assert_eq!(
        session_of(11).await,
        SessionRecord {
            revoked_at: Some(t1),
            ..first
        }
    );
    assert_eq!(
        session_of(12).await,
        SessionRecord {
            revoked_at: Some(t1),
            ..second
        }
    );
    assert_eq!(session_of(13).await.revoked_at, Some(earlier));
    assert_eq!(
        session_of(14).await.revoked_at,
        None,
        "expired, not revoked"
    );
    assert_eq!(
        store.list_live_sessions(bob.id, t1).await.expect("list"),
        vec![bobs]
    );

    // The other reset token is retired; other purposes and other users are not.
    assert_eq!(used_at(&db, &token(1)).await, Some(Some(t1)));
    assert_eq!(used_at(&db, &[5]).await, Some(Some(t1)));
    assert_eq!(used_at(&db, &token(2)).await, Some(None));
    assert_eq!(used_at(&db, &token(3)).await, Some(None));
    assert_eq!(reset(&*store, &[5], "$argon2id$again", t1).await, None);
    assert_eq!(password_hash_of(&*store, alice.id).await, "$argon2id$reset");
    finish(db, store).await;
}

async fn twenty_concurrent_resets_with_one_token_succeed_once(backend: Backend) {
    const CALLS: usize = 20;
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let session = create_session(&*store, &new_session(alice.id, &token(11), t0)).await;
    issue(
        &*store,
        &one_time(1, alice.id, TokenPurpose::PasswordReset, &alice.email, t0),
    )
    .await;
    let t1 = t0 + TimeDelta::minutes(1);

    warm_up(&*store, 8).await;

    // Every call sets its own password, as concurrent requests would.
    let barrier = Arc::new(Barrier::new(CALLS));
    let calls = (0..CALLS).map(|i| {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        tokio::spawn(async move {
            barrier.wait().await;
            store
                .reset_password(&token(1), &format!("$argon2id$call-{i}"), t1)
                .await
        })
    });
    let outcomes: Vec<Option<UserRecord>> = join_all(calls)
        .await
        .into_iter()
        .map(|joined| joined.expect("the task completes").expect("reset"))
        .collect();

    let winners: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, outcome)| outcome.is_some())
        .map(|(index, _)| index)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one call resets: {outcomes:?}");
    let winner = winners[0];
    assert_eq!(
        outcomes[winner],
        Some(UserRecord {
            updated_at: t1,
            ..alice
        })
    );
    assert_eq!(
        password_hash_of(&*store, alice.id).await,
        format!("$argon2id$call-{winner}")
    );
    assert_eq!(used_at(&db, &token(1)).await, Some(Some(t1)));
    assert_eq!(
        find_token(&*store, &token(11))
            .await
            .expect("found")
            .session,
        SessionRecord {
            revoked_at: Some(t1),
            ..session
        }
    );
    finish(db, store).await;
}

async fn twenty_concurrent_email_confirmations_with_one_token_succeed_once(backend: Backend) {
    const CALLS: usize = 20;
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let change = ProfileChange {
        username: None,
        pending_email: Some(Some("Alice.New@Example.com".to_owned())),
        ..ProfileChange::default()
    };
    let pending = store
        .update_profile(alice.id, change, t0)
        .await
        .expect("update")
        .expect("alice exists");
    issue(
        &*store,
        &one_time(
            1,
            alice.id,
            TokenPurpose::EmailChange,
            "Alice.New@Example.com",
            t0,
        ),
    )
    .await;
    let t1 = t0 + TimeDelta::minutes(1);

    warm_up(&*store, 8).await;

    let barrier = Arc::new(Barrier::new(CALLS));
    let calls = (0..CALLS).map(|_| {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        tokio::spawn(async move {
            barrier.wait().await;
            store.confirm_email(&token(1), None, t1).await
        })
    });
    let outcomes: Vec<EmailConfirmation> = join_all(calls)
        .await
        .into_iter()
        .map(|joined| joined.expect("the task completes").expect("confirm"))
        .collect();

    let changed = EmailConfirmation::Changed {
        user: UserRecord {
            email: "Alice.New@Example.com".to_owned(),
            email_verified: true,
            pending_email: None,
            updated_at: t1,
            ..pending
        },
        previous_email: "alice@example.com".to_owned(),
    };
    assert_eq!(
        outcomes
            .iter()
            .filter(|outcome| **outcome == changed)
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|outcome| **outcome == EmailConfirmation::Invalid)
            .count(),
        CALLS - 1,
        "{outcomes:?}"
    );
    assert_eq!(used_at(&db, &token(1)).await, Some(Some(t1)));
    finish(db, store).await;
}

async fn confirm_email_verifies_only_the_current_address(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "Alice@Example.com", t0).await;
    assert!(!alice.email_verified);

    // A link to an address that is not (or no longer) hers: refused, and not used up.
    issue(
        &*store,
        &one_time(
            1,
            alice.id,
            TokenPurpose::EmailVerification,
            "alice@old.example",
            t0,
        ),
    )
    .await;
    let t1 = t0 + TimeDelta::minutes(1);
    assert_eq!(
        confirm(&*store, &token(1), t1).await,
        EmailConfirmation::Invalid
    );
    assert_eq!(used_at(&db, &token(1)).await, Some(None));
    assert_eq!(
        store.find_user(alice.id).await.expect("find"),
        Some(alice.clone())
    );

    // A reset token confirms nothing, and is not used up by trying.
    issue(
        &*store,
        &one_time(2, alice.id, TokenPurpose::PasswordReset, &alice.email, t0),
    )
    .await;
    assert_eq!(
        confirm(&*store, &token(2), t1).await,
        EmailConfirmation::Invalid
    );
    assert_eq!(used_at(&db, &token(2)).await, Some(None));
    assert_eq!(
        confirm(&*store, &token(99), t1).await,
        EmailConfirmation::Invalid,
        "unknown"
    );

    // Her address in another case: the one that counts.
    issue(
        &*store,
        &one_time(
            3,
            alice.id,
            TokenPurpose::EmailVerification,
            "ALICE@example.com",
            t1,
        ),
    )
    .await;
    assert_eq!(
        reset(&*store, &token(3), "$argon2id$x", t1).await,
        None,
        "a verification token resets nothing"
    );
    assert_eq!(used_at(&db, &token(3)).await, Some(None));
    let t2 = t1 + TimeDelta::minutes(1);
    let verified = UserRecord {
        email_verified: true,
        updated_at: t2,
        ..alice
    };
    assert_eq!(
        confirm(&*store, &token(3), t2).await,
        EmailConfirmation::Verified {
            user: verified.clone()
        }
    );
    assert_eq!(
        store.find_user(verified.id).await.expect("find"),
        Some(verified)
    );
    assert_eq!(used_at(&db, &token(3)).await, Some(Some(t2)));
    assert_eq!(
        used_at(&db, &token(1)).await,
        Some(Some(t1)),
        "retired by the newer link"
    );
    assert_eq!(used_at(&db, &token(2)).await, Some(None), "reset untouched");
    finish(db, store).await;
}

async fn confirm_email_change_moves_the_address_and_kills_old_tokens(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let bob = create_user(&*store, "bob@example.com", t0).await;
    let session = create_session(&*store, &new_session(alice.id, &token(11), t0)).await;
    let kept = create_session(&*store, &new_session(alice.id, &token(12), t0)).await;
    let change = ProfileChange {
        username: None,
        pending_email: Some(Some("Alice.New@Example.com".to_owned())),
        ..ProfileChange::default()
    };
    let pending = store
        .update_profile(alice.id, change, t0)
        .await
        .expect("update")
        .expect("alice exists");

    // A change link to another address than the pending one: refused, not used up.
    issue(
        &*store,
        &one_time(
            5,
            alice.id,
            TokenPurpose::EmailChange,
            "other@example.com",
            t0,
        ),
    )
    .await;
    assert_eq!(
        confirm(&*store, &token(5), t0 + TimeDelta::seconds(1)).await,
        EmailConfirmation::Invalid
    );
    assert_eq!(used_at(&db, &token(5)).await, Some(None));
    assert_eq!(
        store.find_user(alice.id).await.expect("find"),
        Some(pending.clone())
    );

    let issued_at = t0 + TimeDelta::seconds(2);
    for issued in [
        one_time(
            1,
            alice.id,
            TokenPurpose::PasswordReset,
            &alice.email,
            issued_at,
        ),
        one_time(
            2,
            alice.id,
            TokenPurpose::EmailVerification,
            &alice.email,
            issued_at,
        ),
        one_time(
            3,
            alice.id,
            TokenPurpose::EmailChange,
            "Alice.New@Example.com",
            issued_at,
        ),
        one_time(
            4,
            bob.id,
            TokenPurpose::PasswordReset,
            &bob.email,
            issued_at,
        ),
    ] {
        issue(&*store, &issued).await;
    }

    let t1 = t0 + TimeDelta::minutes(1);
    let moved = UserRecord {
        email: "Alice.New@Example.com".to_owned(),
        email_verified: true,
        pending_email: None,
        updated_at: t1,
        ..pending
    };
    assert_eq!(
        store
            .confirm_email(&token(3), Some(kept.id), t1)
            .await
            .expect("confirm email"),
        EmailConfirmation::Changed {
            user: moved.clone(),
            previous_email: "alice@example.com".to_owned()
        }
    );
    assert_eq!(
        store.find_user(alice.id).await.expect("find"),
        Some(moved.clone())
    );
    // The key is the new address lowercased; the old one no longer finds her.
    let by_new_key = store
        .find_credentials_by_email_key("alice.new@example.com")
        .await
        .expect("find")
        .expect("found by the new key");
    assert_eq!(by_new_key.user, moved);
    assert!(
        store
            .find_credentials_by_email_key("alice@example.com")
            .await
            .expect("find")
            .is_none()
    );

    // Every token bound to the old address is retired; a token retired before keeps its
    // time; bob's is untouched. Every session but the one the confirming client kept ends.
    assert_eq!(used_at(&db, &token(1)).await, Some(Some(t1)));
    assert_eq!(used_at(&db, &token(2)).await, Some(Some(t1)));
    assert_eq!(used_at(&db, &token(3)).await, Some(Some(t1)));
    assert_eq!(used_at(&db, &token(5)).await, Some(Some(issued_at)));
    assert_eq!(used_at(&db, &token(4)).await, Some(None));
    assert_eq!(
        store.list_live_sessions(alice.id, t1).await.expect("list"),
        vec![kept]
    );
    assert_eq!(
        find_token(&*store, &token(11))
            .await
            .expect("found")
            .session
            .revoked_at,
        Some(t1)
    );
    let _ = session;
    assert_eq!(
        confirm(&*store, &token(3), t1 + TimeDelta::seconds(1)).await,
        EmailConfirmation::Invalid,
        "used"
    );
    // The old address is free for someone else.
    create_user(&*store, "ALICE@example.com", t1).await;
    finish(db, store).await;
}

async fn confirm_email_change_to_a_taken_address_changes_nothing(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let change = ProfileChange {
        username: None,
        pending_email: Some(Some("Bob@Example.com".to_owned())),
        ..ProfileChange::default()
    };
    let pending = store
        .update_profile(alice.id, change, t0)
        .await
        .expect("update")
        .expect("alice exists");
    issue(
        &*store,
        &one_time(
            1,
            alice.id,
            TokenPurpose::EmailChange,
            "Bob@Example.com",
            t0,
        ),
    )
    .await;
    issue(
        &*store,
        &one_time(2, alice.id, TokenPurpose::PasswordReset, &alice.email, t0),
    )
    .await;
    // Meanwhile, someone registers the address.
    let bob = create_user(&*store, "bob@example.com", t0).await;

    let t1 = t0 + TimeDelta::minutes(1);
    assert_eq!(
        confirm(&*store, &token(1), t1).await,
        EmailConfirmation::EmailTaken
    );
    assert_eq!(
        store.find_user(alice.id).await.expect("find"),
        Some(pending.clone())
    );
    assert_eq!(used_at(&db, &token(1)).await, Some(None), "not used up");
    assert_eq!(used_at(&db, &token(2)).await, Some(None));
    assert_eq!(
        store
            .find_credentials_by_email_key("bob@example.com")
            .await
            .expect("find")
            .expect("found")
            .user,
        bob
    );

    // The same link works once the address is free again.
    assert!(store.delete_user(bob.id).await.expect("delete"));
    let t2 = t1 + TimeDelta::minutes(1);
    assert_eq!(
        confirm(&*store, &token(1), t2).await,
        EmailConfirmation::Changed {
            user: UserRecord {
                email: "Bob@Example.com".to_owned(),
                email_verified: true,
                pending_email: None,
                updated_at: t2,
                ..pending
            },
            previous_email: "alice@example.com".to_owned()
        }
    );
    assert_eq!(used_at(&db, &token(2)).await, Some(Some(t2)));
    finish(db, store).await;
}

async fn change_password_keeps_only_the_given_session(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let bob = create_user(&*store, "bob@example.com", t0).await;
    let keep = create_session(&*store, &new_session(alice.id, &token(11), t0)).await;
    let other = create_session(&*store, &new_session(alice.id, &token(12), t0)).await;
    let bobs = create_session(&*store, &new_session(bob.id, &token(13), t0)).await;
    issue(
        &*store,
        &one_time(1, alice.id, TokenPurpose::PasswordReset, &alice.email, t0),
    )
    .await;
    issue(
        &*store,
        &one_time(
            2,
            alice.id,
            TokenPurpose::EmailVerification,
            &alice.email,
            t0,
        ),
    )
    .await;
    issue(
        &*store,
        &one_time(3, bob.id, TokenPurpose::PasswordReset, &bob.email, t0),
    )
    .await;
    let t1 = t0 + TimeDelta::minutes(1);

    assert!(
        store
            .change_password(alice.id, "$argon2id$changed", keep.id, t1)
            .await
            .expect("change")
    );
    assert_eq!(
        password_hash_of(&*store, alice.id).await,
        "$argon2id$changed"
    );
    assert_eq!(
        store.find_user(alice.id).await.expect("find"),
        Some(UserRecord {
            updated_at: t1,
            ..alice.clone()
        })
    );
    assert_eq!(
        store.list_live_sessions(alice.id, t1).await.expect("list"),
        vec![keep]
    );
    assert_eq!(
        find_token(&*store, &token(12))
            .await
            .expect("found")
            .session,
        SessionRecord {
            revoked_at: Some(t1),
            ..other
        }
    );
    assert_eq!(
        store.list_live_sessions(bob.id, t1).await.expect("list"),
        vec![bobs]
    );
    assert_eq!(used_at(&db, &token(1)).await, Some(Some(t1)));
    assert_eq!(used_at(&db, &token(2)).await, Some(None));
    assert_eq!(used_at(&db, &token(3)).await, Some(None));

    assert!(
        !store
            .change_password(Uuid::now_v7(), "$argon2id$nobody", Uuid::now_v7(), t1)
            .await
            .expect("change"),
        "no such user"
    );
    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL")
            .await,
        1
    );
    assert_eq!(
        password_hash_of(&*store, bob.id).await,
        new_user("", None, t0).password_hash
    );
    finish(db, store).await;
}

/// The token methods lock the user row before its tokens and sessions (PostgreSQL), so
/// racing `delete_user` (user, then its sessions and tokens) and rotations (a session, then
/// its refresh tokens) they never deadlock: every call returns `Ok`. A deadlock would show
/// as a database error (PostgreSQL aborts one of the transactions).
async fn token_methods_racing_deletion_and_rotation_never_fail(backend: Backend) {
    const ROUNDS: u8 = 8;
    let Some((db, store)) = open(backend).await else {
        return;
    };
    warm_up(&*store, 8).await;
    let t0 = now();
    for round in 0..ROUNDS {
        let base = round * 20;
        let email = format!("user{round}@example.com");
        let user = create_user(&*store, &email, t0).await;
        let new_email = format!("new{round}@example.com");
        let change = ProfileChange {
            username: None,
            pending_email: Some(Some(new_email.clone())),
            ..ProfileChange::default()
        };
        store
            .update_profile(user.id, change, t0)
            .await
            .expect("update");
        let keep = create_session(&*store, &new_session(user.id, &token(base + 1), t0)).await;
        create_session(&*store, &new_session(user.id, &token(base + 2), t0)).await;
        issue(
            &*store,
            &one_time(base + 3, user.id, TokenPurpose::PasswordReset, &email, t0),
        )
        .await;
        issue(
            &*store,
            &one_time(base + 4, user.id, TokenPurpose::EmailChange, &new_email, t0),
        )
        .await;
        let t1 = t0 + TimeDelta::minutes(1);

        let barrier = Arc::new(Barrier::new(7));
        let mut calls = Vec::new();
        let spawn = |call: futures::future::BoxFuture<'static, Result<(), StoreError>>| {
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                call.await
            })
        };
        let s = Arc::clone(&store);
        calls.push(spawn(Box::pin(async move {
            s.reset_password(&token(base + 3), "$argon2id$reset", t1)
                .await
                .map(drop)
        })));
        let s = Arc::clone(&store);
        calls.push(spawn(Box::pin(async move {
            s.confirm_email(&token(base + 4), None, t1).await.map(drop)
        })));
        let s = Arc::clone(&store);
        let user_id = user.id;
        calls.push(spawn(Box::pin(async move {
            s.change_password(user_id, "$argon2id$changed", keep.id, t1)
                .await
                .map(drop)
        })));
        for n in [1, 2] {
            let s = Arc::clone(&store);
            calls.push(spawn(Box::pin(async move {
                s.rotate_refresh_token(rotation(&token(base + n), &token(base + 10 + n), t1))
                    .await
                    .map(drop)
            })));
        }
        let s = Arc::clone(&store);
        calls.push(spawn(Box::pin(async move {
            s.revoke_user_sessions(user_id, None, t1).await.map(drop)
        })));
        let s = Arc::clone(&store);
        calls.push(spawn(Box::pin(async move {
            s.delete_user(user_id).await.map(drop)
        })));
        for (index, joined) in join_all(calls).await.into_iter().enumerate() {
            if let Err(error) = joined.expect("the task completes") {
                panic!("round {round}, call {index} failed: {error:?}");
            }
        }
        assert_eq!(store.find_user(user.id).await.expect("find"), None);
    }
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM users").await, 0);
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM sessions").await, 0);
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM refresh_tokens").await, 0);
    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM one_time_tokens").await,
        0
    );
    finish(db, store).await;
}

// ---- signing keys ------------------------------------------------------------------------

async fn ensure_signing_key_is_atomic_under_concurrency(backend: Backend) {
    const REPLICAS: usize = 6;
    // A race is probabilistic: several rounds (each on an empty table) make a broken lock
    // show up reliably.
    const ROUNDS: i64 = 4;
    let Some((db, first)) = open(backend).await else {
        return;
    };
    // One store (pool) per replica, each with its own candidate key.
    let mut stores = vec![Arc::clone(&first)];
    for _ in 1..REPLICAS {
        stores.push(db.connect().await);
    }
    for store in &stores {
        warm_up(&**store, 1).await;
    }
    let t0 = now();
    for round in 0..ROUNDS {
        db.execute("DELETE FROM signing_keys").await;
        let barrier = Arc::new(Barrier::new(REPLICAS));
        let calls = stores.iter().enumerate().map(|(i, store)| {
            let store = Arc::clone(store);
            let barrier = Arc::clone(&barrier);
            let created_at = t0 + TimeDelta::seconds(i64::try_from(i).expect("few replicas"));
            let candidate = signing_key(&format!("kid-{round}-{i}"), created_at);
            tokio::spawn(async move {
                barrier.wait().await;
                store.ensure_signing_key(candidate).await
            })
        });
        let keys: Vec<SigningKeyRecord> = join_all(calls)
            .await
            .into_iter()
            .map(|joined| joined.expect("the task completes").expect("ensure"))
            .collect();

        let chosen = keys[0].clone();
        let replica: i64 = chosen
            .kid
            .trim_start_matches(&format!("kid-{round}-"))
            .parse()
            .expect("one of this round's candidates");
        assert_eq!(
            chosen,
            signing_key(&chosen.kid, t0 + TimeDelta::seconds(replica))
        );
        assert!(
            keys.iter().all(|key| *key == chosen),
            "one key for all: {keys:?}"
        );
        assert_eq!(
            db.query_i64("SELECT COUNT(*) FROM signing_keys").await,
            1,
            "round {round}"
        );
        let listed = first
            .signing_keys(t0 - TimeDelta::days(1))
            .await
            .expect("list");
        assert_eq!(listed, vec![chosen.clone()]);

        let later = signing_key("kid-later", t0 + TimeDelta::hours(1));
        assert_eq!(
            first.ensure_signing_key(later).await.expect("ensure"),
            chosen
        );
    }
    for store in stores {
        store.close().await;
    }
    drop(first);
    db.drop_database().await;
}

async fn ensure_signing_key_keeps_the_newest_unretired_key(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let k1 = signing_key("k1", t0);
    assert_eq!(
        store.ensure_signing_key(k1.clone()).await.expect("ensure"),
        k1
    );
    // A newer candidate does not replace an unretired key.
    let newer = signing_key("k9", t0 + TimeDelta::hours(1));
    assert_eq!(
        store
            .ensure_signing_key(newer.clone())
            .await
            .expect("ensure"),
        k1
    );

    // Two unretired keys with one created_at: the greater kid is current.
    const COPY_K1_AS_K0: &str = "INSERT INTO signing_keys (kid, algorithm, private_key, \
        public_key, created_at, retired_at) SELECT 'k0', algorithm, private_key, public_key, \
        created_at, NULL FROM signing_keys WHERE kid = 'k1'";
    const COPY_K1_AS_K2: &str = "INSERT INTO signing_keys (kid, algorithm, private_key, \
        public_key, created_at, retired_at) SELECT 'k2', algorithm, private_key, public_key, \
        created_at, NULL FROM signing_keys WHERE kid = 'k1'";
    assert_eq!(db.execute(COPY_K1_AS_K0).await, 1);
    assert_eq!(
        store
            .ensure_signing_key(newer.clone())
            .await
            .expect("ensure"),
        k1
    );
    assert_eq!(db.execute(COPY_K1_AS_K2).await, 1);
    let k2 = SigningKeyRecord {
        kid: "k2".to_owned(),
        ..k1.clone()
    };
    assert_eq!(store.ensure_signing_key(newer).await.expect("ensure"), k2);
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM signing_keys").await, 3);
    finish(db, store).await;
}

async fn signing_keys_lists_unretired_and_recently_retired(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let t1 = t0 + TimeDelta::hours(1);
    let t2 = t0 + TimeDelta::hours(2);
    // The store has no method to retire a key yet: retire each at its own created_at.
    let k1 = signing_key("k1", t0);
    assert_eq!(
        store.ensure_signing_key(k1.clone()).await.expect("ensure"),
        k1
    );
    let retire_k1 = "UPDATE signing_keys SET retired_at = created_at WHERE kid = 'k1'";
    assert_eq!(db.execute(retire_k1).await, 1);
    let k2 = signing_key("k2", t1);
    assert_eq!(
        store.ensure_signing_key(k2.clone()).await.expect("ensure"),
        k2
    );
    let retire_k2 = "UPDATE signing_keys SET retired_at = created_at WHERE kid = 'k2'";
    assert_eq!(db.execute(retire_k2).await, 1);
    let k3 = signing_key("k3", t2);
    assert_eq!(
        store.ensure_signing_key(k3.clone()).await.expect("ensure"),
        k3
    );

    let k1 = SigningKeyRecord {
        retired_at: Some(t0),
        ..k1
    };
    let k2 = SigningKeyRecord {
        retired_at: Some(t1),
        ..k2
    };
    let listed = |after: DateTime<Utc>| {
        let store = Arc::clone(&store);
        async move { store.signing_keys(after).await.expect("list") }
    };
    let before_t0 = t0 - TimeDelta::microseconds(1);
    assert_eq!(listed(before_t0).await, vec![k3.clone(), k2.clone(), k1]);
    assert_eq!(
        listed(t0).await,
        vec![k3.clone(), k2],
        "retired at t0 is not after t0"
    );
    assert_eq!(listed(t1).await, vec![k3]);
    finish(db, store).await;
}

// ---- migrations and encoding -------------------------------------------------------------

/// How many migrations the server embeds (the same number on both backends).
/// How many migrations the backend has (PostgreSQL has one SQLite does not need: the
/// session notification triggers).
fn migration_files(backend: Backend) -> i64 {
    let dir = format!(
        "{}/migrations/{}",
        env!("CARGO_MANIFEST_DIR"),
        backend.name()
    );
    let files = std::fs::read_dir(dir)
        .expect("the migrations directory")
        .count();
    i64::try_from(files).expect("a small number")
}

async fn migrations_run_concurrently_apply_once(backend: Backend) {
    const REPLICAS: usize = 4;
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let mut stores = Vec::new();
    for _ in 0..REPLICAS {
        let store = db.connect().await;
        warm_up(&*store, 1).await;
        stores.push(store);
    }
    let barrier = Arc::new(Barrier::new(REPLICAS));
    let runs = stores.iter().map(|store| {
        let store = Arc::clone(store);
        let barrier = Arc::clone(&barrier);
        tokio::spawn(async move {
            barrier.wait().await;
            store.migrate().await
        })
    });
    for run in join_all(runs).await {
        run.expect("the task completes")
            .expect("every replica's migrate succeeds");
    }
    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM _sqlx_migrations").await,
        migration_files(backend)
    );
    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
            .await,
        migration_files(backend)
    );

    // Applied migrations are skipped, and the schema is there.
    stores[0].migrate().await.expect("migrate again");
    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM _sqlx_migrations").await,
        migration_files(backend)
    );
    create_user(&*stores[REPLICAS - 1], "alice@example.com", now()).await;
    for store in stores {
        store.close().await;
    }
    db.drop_database().await;
}

async fn timestamps_round_trip(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    assert_eq!(alice.created_at, t0);
    assert_eq!(
        store
            .find_user(alice.id)
            .await
            .expect("find")
            .expect("found")
            .created_at,
        t0
    );

    // Far and odd instants come back exactly.
    let far = DateTime::parse_from_rfc3339("2199-12-31T23:59:59.999999Z")
        .expect("valid")
        .with_timezone(&Utc);
    let session = NewSession {
        expires_at: far,
        ..new_session(alice.id, &token(1), t0)
    };
    let created = create_session(&*store, &session).await;
    assert_eq!(created, expected_session(&session));
    let listed = store.list_live_sessions(alice.id, t0).await.expect("list");
    assert_eq!(listed, vec![expected_session(&session)]);

    // Sub-microsecond precision is dropped (truncated) on both backends alike.
    let precise = t0 + TimeDelta::nanoseconds(999);
    let bob = create_user(&*store, "bob@example.com", precise).await;
    assert_eq!(bob.created_at, t0);
    assert_eq!(
        store
            .find_user(bob.id)
            .await
            .expect("find")
            .expect("found")
            .updated_at,
        t0
    );
    finish(db, store).await;
}

// ---- upkeep ------------------------------------------------------------------------------

async fn prune_deletes_ended_sessions_and_spent_tokens_and_keeps_reuse_detection(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    // A live session whose first token was rotated (its successor sealed on its row).
    let live = create_session(&*store, &new_session(alice.id, &token(1), t0)).await;
    assert!(matches!(
        rotate(&*store, rotation(&token(1), &token(2), t0)).await,
        RotationOutcome::Rotated { .. }
    ));
    // A revoked and an expired session, each with its token.
    let revoked = create_session(&*store, &new_session(alice.id, &token(3), t0)).await;
    assert!(
        store
            .revoke_session(alice.id, revoked.id, t0)
            .await
            .expect("revoke")
    );
    let mut short = new_session(alice.id, &token(4), t0);
    short.expires_at = t0 + TimeDelta::hours(1);
    short.refresh_expires_at = short.expires_at;
    create_session(&*store, &short).await;
    // A live session whose only token expired unused (idle expiry).
    let mut idle = new_session(alice.id, &token(5), t0);
    idle.refresh_expires_at = t0 + TimeDelta::hours(1);
    let idle = create_session(&*store, &idle).await;
    // One-time tokens: one used, one expired, one still good.
    issue(
        &*store,
        &one_time(20, alice.id, TokenPurpose::PasswordReset, &alice.email, t0),
    )
    .await;
    assert!(
        reset(&*store, &token(20), "$argon2id$new", t0)
            .await
            .is_some()
    );
    let mut expired = one_time(
        21,
        alice.id,
        TokenPurpose::EmailVerification,
        &alice.email,
        t0,
    );
    expired.expires_at = t0 + TimeDelta::hours(1);
    issue(&*store, &expired).await;
    let t2 = t0 + TimeDelta::days(2);
    issue(
        &*store,
        &one_time(22, alice.id, TokenPurpose::PasswordReset, &alice.email, t2),
    )
    .await;
    // (The reset above revoked every session of alice's; bring two live ones back.)
    let live = {
        let _ = live;
        create_session(&*store, &new_session(alice.id, &token(6), t2)).await
    };
    assert!(matches!(
        rotate(&*store, rotation(&token(6), &token(7), t2)).await,
        RotationOutcome::Rotated { .. }
    ));
    let _ = idle;

    let pruned = store
        .prune(Pruning {
            ended_before: t2 - TimeDelta::days(1),
            now: t2 + TimeDelta::seconds(20),
            rotated_before: t2 + TimeDelta::seconds(20) - grace(),
        })
        .await
        .expect("prune");
    // Ended over a day ago: the four sessions of t0 (all revoked by the reset), with their
    // tokens; used or expired one-time tokens; the rotated token of the live session loses
    // its successor but stays.
    assert_eq!(pruned.sessions, 4, "{pruned:?}");
    assert_eq!(pruned.one_time_tokens, 2, "{pruned:?}");
    assert_eq!(pruned.successors, 1, "{pruned:?}");
    assert_eq!(find_token(&*store, &token(1)).await, None);
    assert_eq!(used_at(&db, &token(20)).await, None);
    assert_eq!(used_at(&db, &token(21)).await, None);
    assert_eq!(used_at(&db, &token(22)).await, Some(None), "still usable");
    assert_eq!(
        store.refresh_successor(&token(6)).await.expect("successor"),
        None
    );
    // The rotated-out token still gives its reuse away.
    let later = t2 + TimeDelta::seconds(30);
    assert_eq!(
        rotate(&*store, rotation(&token(6), &token(8), later)).await,
        RotationOutcome::Reused {
            session_id: live.id
        }
    );
    // An unrotated token past its idle expiry goes; run again and nothing is left to do.
    let mut idle = new_session(alice.id, &token(9), later);
    idle.refresh_expires_at = later + TimeDelta::hours(1);
    create_session(&*store, &idle).await;
    let again = store
        .prune(Pruning {
            ended_before: later,
            now: later + TimeDelta::hours(2),
            rotated_before: later,
        })
        .await
        .expect("prune");
    assert_eq!(again.refresh_tokens, 1, "{again:?}");
    assert_eq!(find_token(&*store, &token(9)).await, None);
    finish(db, store).await;
}

async fn ensure_secret_keeps_the_first_value(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let first = store
        .ensure_secret("a", b"first", t0)
        .await
        .expect("ensure");
    let second = store
        .ensure_secret("a", b"second", t0)
        .await
        .expect("ensure");
    let other = store
        .ensure_secret("b", b"other", t0)
        .await
        .expect("ensure");
    assert_eq!(
        (first.as_slice(), second.as_slice()),
        (b"first".as_slice(), b"first".as_slice())
    );
    assert_eq!(other, b"other");
    finish(db, store).await;
}

async fn recovery_and_signing_out_everywhere_end_a_pending_email_change(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let session = create_session(&*store, &new_session(alice.id, &token(1), t0)).await;
    // Each of these ends the change: its link is retired and nothing is pending any more.
    for (n, end) in [
        (10_u8, "reset"),
        (11, "change"),
        (12, "everywhere"),
        (13, "cancel"),
    ] {
        let change = ProfileChange {
            username: None,
            pending_email: Some(Some("mallory@evil.test".to_owned())),
            ..ProfileChange::default()
        };
        store
            .update_profile(alice.id, change, t0)
            .await
            .expect("update");
        issue(
            &*store,
            &one_time(
                n,
                alice.id,
                TokenPurpose::EmailChange,
                "mallory@evil.test",
                t0,
            ),
        )
        .await;
        match end {
            "reset" => {
                issue(
                    &*store,
                    &one_time(30, alice.id, TokenPurpose::PasswordReset, &alice.email, t0),
                )
                .await;
                let user = reset(&*store, &token(30), "$argon2id$reset", t0)
                    .await
                    .expect("reset");
                assert_eq!(user.pending_email, None);
            }
            "change" => {
                assert!(
                    store
                        .change_password(alice.id, "$argon2id$changed", session.id, t0)
                        .await
                        .expect("change")
                );
            }
            "everywhere" => {
                store
                    .revoke_user_sessions(alice.id, None, t0)
                    .await
                    .expect("revoke");
            }
            _ => {
                let cancel = ProfileChange {
                    username: None,
                    pending_email: Some(None),
                    ..ProfileChange::default()
                };
                store
                    .update_profile(alice.id, cancel, t0)
                    .await
                    .expect("update");
            }
        }
        let user = store
            .find_user(alice.id)
            .await
            .expect("find")
            .expect("alice");
        assert_eq!(user.pending_email, None, "{end}");
        assert_eq!(used_at(&db, &token(n)).await, Some(Some(t0)), "{end}");
        assert_eq!(
            confirm(&*store, &token(n), t0).await,
            EmailConfirmation::Invalid,
            "{end}"
        );
    }
    finish(db, store).await;
}

// ---- Better Auth sessions and profile fields ------------------------------------------------

/// A Better Auth session of `user_id` holding the token hash `hash`, opened at `at` for 7 days.
fn new_token_session(user_id: Uuid, hash: &[u8], at: DateTime<Utc>) -> NewTokenSession {
    NewTokenSession {
        id: Uuid::now_v7(),
        user_id,
        token_hash: hash.to_vec(),
        remember: true,
        user_agent: Some("better-auth-client".to_owned()),
        ip: Some("192.0.2.8".to_owned()),
        now: at,
        expires_at: at + TimeDelta::days(7),
        password_hash: None,
        audit: None,
    }
}

async fn create_token_session(store: &dyn Store, session: NewTokenSession) -> SessionRecord {
    store
        .create_token_session(session)
        .await
        .expect("create token session")
        .expect("the user exists")
}

/// The live token session holding `token(n)` at `at`, with its user.
async fn token_session_holding(
    store: &dyn Store,
    n: u8,
    at: DateTime<Utc>,
) -> Option<(SessionRecord, UserRecord)> {
    store.find_token_session(&token(n), at).await.expect("find")
}

/// Whether revoking `user_id`'s token session holding `token(n)` at `at` ended one.
async fn revoke_token(store: &dyn Store, user_id: Uuid, n: u8, at: DateTime<Utc>) -> bool {
    store
        .revoke_token_session(user_id, &token(n), at)
        .await
        .expect("revoke")
}

async fn update_profile_sets_and_clears_name_and_image(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let mut user = new_user("alice@example.com", None, t0);
    user.name = Some("Alice".to_owned());
    let alice = store.create_user(user).await.expect("create");
    assert_eq!(alice.name.as_deref(), Some("Alice"));
    assert_eq!(alice.image, None);
    let t1 = t0 + TimeDelta::minutes(1);
    let change = ProfileChange {
        name: Some(Some("Alice B".to_owned())),
        image: Some(Some("https://img.example/a.png".to_owned())),
        ..ProfileChange::default()
    };
    let updated = store
        .update_profile(alice.id, change, t1)
        .await
        .expect("update")
        .expect("found");
    assert_eq!(
        updated,
        UserRecord {
            name: Some("Alice B".to_owned()),
            image: Some("https://img.example/a.png".to_owned()),
            updated_at: t1,
            ..alice.clone()
        }
    );
    // Leaving a field out keeps it; `Some(None)` clears it.
    let change = ProfileChange {
        image: Some(None),
        ..ProfileChange::default()
    };
    let cleared = store
        .update_profile(alice.id, change, t1)
        .await
        .expect("update")
        .expect("found");
    assert_eq!(cleared.name.as_deref(), Some("Alice B"));
    assert_eq!(cleared.image, None);
    assert_eq!(
        store.find_user(alice.id).await.expect("find"),
        Some(cleared)
    );
    finish(db, store).await;
}

async fn token_sessions_are_found_by_their_hash_while_live(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let mut short = new_token_session(alice.id, &token(2), t0);
    short.remember = false;
    short.expires_at = t0 + TimeDelta::days(1);
    let session = create_token_session(&*store, new_token_session(alice.id, &token(1), t0)).await;
    let short = create_token_session(&*store, short).await;
    assert!(session.remember && !short.remember);
    assert_eq!(session.created_at, t0);
    assert_eq!(session.last_used_at, t0);
    assert_eq!(session.expires_at, t0 + TimeDelta::days(7));

    let found = token_session_holding(&*store, 1, t0).await;
    assert_eq!(found, Some((session.clone(), alice.clone())));
    assert_eq!(token_session_holding(&*store, 9, t0).await, None);
    // A token session is a session: listed, and found by id like any other.
    let listed = store.list_live_sessions(alice.id, t0).await.expect("list");
    assert!(listed.contains(&session) && listed.contains(&short));
    assert_eq!(
        store
            .find_live_session_user(session.id, alice.id, t0)
            .await
            .expect("lookup")
            .map(|live| (live.user, live.expires_at)),
        Some((alice.clone(), session.expires_at))
    );
    // A second session cannot hold the same token.
    assert!(
        store
            .create_token_session(new_token_session(alice.id, &token(1), t0))
            .await
            .is_err()
    );
    // Expired: not found.
    let t1 = t0 + TimeDelta::days(1);
    assert_eq!(token_session_holding(&*store, 2, t1).await, None);
    assert!(token_session_holding(&*store, 1, t1).await.is_some());
    finish(db, store).await;
}

async fn token_sessions_need_the_user_and_the_checked_hash(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let mut stale = new_token_session(alice.id, &token(1), t0);
    stale.password_hash = Some("$argon2id$v=19$m=19456,t=2,p=1$other$other".to_owned());
    assert_eq!(
        store.create_token_session(stale).await.expect("create"),
        None
    );
    let mut current = new_token_session(alice.id, &token(2), t0);
    current.password_hash =
        Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".to_owned());
    assert!(
        store
            .create_token_session(current)
            .await
            .expect("create")
            .is_some()
    );
    assert_eq!(
        store
            .create_token_session(new_token_session(Uuid::now_v7(), &token(3), t0))
            .await
            .expect("create"),
        None
    );
    assert_eq!(token_session_holding(&*store, 1, t0).await, None);
    finish(db, store).await;
}

async fn slide_session_moves_the_expiry_never_past_the_cap(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let session = create_token_session(&*store, new_token_session(alice.id, &token(1), t0)).await;
    let cap = t0 + TimeDelta::days(10);
    let t1 = t0 + TimeDelta::days(2);
    let slid = store
        .slide_session(session.id, t1 + TimeDelta::days(7), cap, t1)
        .await
        .expect("slide");
    assert_eq!(
        slid,
        Some(SessionRecord {
            expires_at: t1 + TimeDelta::days(7),
            last_used_at: t1,
            ..session.clone()
        })
    );
    let t2 = t0 + TimeDelta::days(8);
    let capped = store
        .slide_session(session.id, t2 + TimeDelta::days(7), cap, t2)
        .await
        .expect("slide")
        .expect("live");
    assert_eq!(capped.expires_at, cap);
    assert_eq!(
        token_session_holding(&*store, 1, t2).await,
        Some((capped, alice.clone()))
    );
    // Past its end, a session does not come back by sliding.
    let t3 = cap + TimeDelta::seconds(1);
    assert_eq!(
        store
            .slide_session(
                session.id,
                t3 + TimeDelta::days(7),
                t3 + TimeDelta::days(30),
                t3
            )
            .await
            .expect("slide"),
        None
    );
    finish(db, store).await;
}

async fn revoke_token_session_only_touches_the_callers_own(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let bob = create_user(&*store, "bob@example.com", t0).await;
    create_token_session(&*store, new_token_session(alice.id, &token(1), t0)).await;
    let t1 = t0 + TimeDelta::minutes(1);
    assert!(!revoke_token(&*store, bob.id, 1, t1).await);
    assert!(!revoke_token(&*store, alice.id, 9, t1).await);
    assert!(token_session_holding(&*store, 1, t1).await.is_some());
    assert!(revoke_token(&*store, alice.id, 1, t1).await);
    assert_eq!(token_session_holding(&*store, 1, t1).await, None);
    assert!(!revoke_token(&*store, alice.id, 1, t1).await);
    // Revoked, it cannot be slid back to life either.
    assert_eq!(
        store
            .slide_session(
                store
                    .list_live_sessions(alice.id, t0)
                    .await
                    .expect("list")
                    .first()
                    .map_or(Uuid::nil(), |s| s.id),
                t1 + TimeDelta::days(7),
                t1 + TimeDelta::days(30),
                t1
            )
            .await
            .expect("slide"),
        None
    );
    finish(db, store).await;
}

async fn token_sessions_end_with_the_rest_faces_revocations(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let kept = create_token_session(&*store, new_token_session(alice.id, &token(1), t0)).await;
    create_token_session(&*store, new_token_session(alice.id, &token(2), t0)).await;
    let t1 = t0 + TimeDelta::minutes(1);
    assert_eq!(
        store
            .revoke_user_sessions(alice.id, Some(kept.id), t1)
            .await
            .expect("revoke"),
        1
    );
    assert_eq!(token_session_holding(&*store, 2, t1).await, None);
    assert!(token_session_holding(&*store, 1, t1).await.is_some());
    assert!(
        store
            .revoke_session(alice.id, kept.id, t1)
            .await
            .expect("revoke")
    );
    assert_eq!(token_session_holding(&*store, 1, t1).await, None);
    create_token_session(&*store, new_token_session(alice.id, &token(3), t1)).await;
    assert!(store.delete_user(alice.id).await.expect("delete"));
    assert_eq!(token_session_holding(&*store, 3, t1).await, None);
    finish(db, store).await;
}

/// Many Better Auth token checks at once (the PostgreSQL store answers those that queue up
/// together in one query): each gets its own token's session and user, or none.
async fn concurrent_token_session_lookups_each_get_their_own_answer(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = create_user(&*store, "alice@example.com", t0).await;
    let bob = create_user(&*store, "bob@example.com", t0).await;
    let alices = create_token_session(&*store, new_token_session(alice.id, &token(1), t0)).await;
    let bobs = create_token_session(&*store, new_token_session(bob.id, &token(2), t0)).await;
    create_token_session(&*store, new_token_session(bob.id, &token(3), t0)).await;
    assert!(revoke_token(&*store, bob.id, 3, t0).await);
    let later = t0 + TimeDelta::minutes(1);
    let past_expiry = t0 + TimeDelta::days(8);
    let alice_found = Some((alices, alice));
    let bob_found = Some((bobs, bob));
    let cases = [
        (1, later, alice_found.clone()),
        (2, later, bob_found.clone()),
        (3, later, None),
        (1, past_expiry, None),
        (9, later, None),
    ];
    let lookups = (0..300).map(|i| {
        let (n, at, expected) = cases[i % cases.len()].clone();
        let store = Arc::clone(&store);
        async move { (i, token_session_holding(&*store, n, at).await, expected) }
    });
    for (i, found, expected) in join_all(lookups).await {
        assert_eq!(found, expected, "lookup {i}");
    }
    finish(db, store).await;
}

/// Servers claiming at once each get their own messages (PostgreSQL: `FOR UPDATE SKIP
/// LOCKED`); a claimed message is nobody else's until its lease ends, then anyone's again;
/// delivered and dead ones are never claimed.
async fn outbox_claims_share_the_messages_without_overlap_and_leases_end(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let mut ids = Vec::new();
    for _ in 0..40 {
        let id = Uuid::now_v7();
        ids.push(id);
        store
            .enqueue_message(store::NewMessage {
                id,
                kind: "mail",
                payload: vec![1, 2, 3],
                now: t0,
            })
            .await
            .unwrap();
    }
    let lease = t0 + TimeDelta::seconds(15);
    let claims = join_all((0..8).map(|_| {
        let store = store.clone();
        async move { store.claim_messages("mail", t0, lease, 4).await.unwrap() }
    }))
    .await;
    let mut claimed: Vec<Uuid> = claims.iter().flatten().map(|message| message.id).collect();
    let total = claimed.len();
    claimed.sort();
    claimed.dedup();
    assert_eq!(claimed.len(), total, "a message claimed twice");
    assert!(total > 0 && total <= 32);
    assert!(
        claims
            .iter()
            .flatten()
            .all(|message| message.attempts == 1 && message.payload == [1, 2, 3])
    );
    // Leased: the rest only, until the lease ends.
    let rest = store.claim_messages("mail", t0, lease, 100).await.unwrap();
    assert_eq!(rest.len(), 40 - total);
    assert!(
        store
            .claim_messages("mail", t0 + TimeDelta::seconds(14), lease, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let first = claimed[0];
    store.message_delivered(first, t0).await.unwrap();
    store
        .message_failed(claimed[1], None, "554 no such user", t0)
        .await
        .unwrap();
    store
        .message_failed(claimed[2], Some(t0 + TimeDelta::hours(1)), "421 busy", t0)
        .await
        .unwrap();
    let after = store
        .claim_messages("mail", lease, lease + TimeDelta::seconds(15), 100)
        .await
        .unwrap();
    assert_eq!(
        after.len(),
        40 - 3,
        "the lease ended for all but the delivered, dead and retried"
    );
    assert!(after.iter().all(|message| message.attempts == 2));
    let retried = store
        .claim_messages(
            "mail",
            t0 + TimeDelta::hours(2),
            t0 + TimeDelta::hours(3),
            100,
        )
        .await
        .unwrap();
    assert!(retried.iter().any(|message| message.id == claimed[2]));
    let counts = store.outbox_counts().await.unwrap();
    assert_eq!((counts.pending, counts.dead), (38, 1));
    let dead = store.dead_messages(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_error.as_deref(), Some("554 no such user"));
    assert_eq!(
        store
            .prune_outbox(t0 + TimeDelta::seconds(1))
            .await
            .unwrap(),
        2
    );
    finish(db, store).await;
}

/// An audit event about `user` and `session` at `at`, every column set, with a webhook
/// delivery when asked.
fn audit_write(
    event: &str,
    user: Uuid,
    session: Uuid,
    at: DateTime<Utc>,
    webhook: bool,
) -> store::AuditWrite {
    store::AuditWrite {
        event: store::AuditRecord {
            id: Uuid::now_v7(),
            at,
            event: event.to_owned(),
            user_id: Some(user),
            actor: "user".to_owned(),
            actor_id: Some(user),
            session_id: Some(session),
            ip: Some("192.0.2.7".to_owned()),
            user_agent: Some("servauth-tests/1.0".to_owned()),
            request_id: Some("req-1".to_owned()),
            detail: Some(r#"{"amr":"pwd"}"#.to_owned()),
        },
        webhook: webhook.then(|| store::NewMessage {
            id: Uuid::now_v7(),
            kind: "webhook",
            payload: b"{}".to_vec(),
            now: at,
        }),
    }
}

/// Every audit event stored, newest first.
async fn audit_events(store: &dyn Store) -> Vec<store::AuditRecord> {
    store
        .list_audit_events(&store::AuditFilter {
            limit: 100,
            ..store::AuditFilter::default()
        })
        .await
        .unwrap()
}

/// The sign-in's audit event (and its webhook delivery) rides the session's own write: it is
/// there once the session is, and a session refused (here: another password hash) leaves
/// neither behind. Both kinds of session.
async fn a_sign_ins_audit_event_is_written_with_its_session_or_not_at_all(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t0 = now();
    let alice = store
        .create_user(new_user("alice@example.com", None, t0))
        .await
        .expect("create");
    let audit = |session: Uuid, webhook: bool| {
        audit_write("user.signed_in", alice.id, session, t0, webhook)
    };

    let mut session = new_session(alice.id, b"refresh-1", t0);
    let written = audit(session.id, true);
    session.audit = Some(written.clone());
    assert!(store.create_session(session).await.unwrap().is_some());
    let mut token = new_token_session(alice.id, b"token-1", t0);
    let token_written = audit(token.id, false);
    token.audit = Some(token_written.clone());
    assert!(store.create_token_session(token).await.unwrap().is_some());
    assert_eq!(
        audit_events(&*store).await,
        [token_written.event.clone(), written.event.clone()],
        "newest first, as written"
    );
    assert_eq!(store.outbox_counts().await.unwrap().pending, 1);

    // Refused: a password hash that is not the account's.
    let mut refused = new_session(alice.id, b"refresh-2", t0);
    refused.password_hash = Some("$argon2id$not-the-hash".to_owned());
    refused.audit = Some(audit(refused.id, true));
    assert!(store.create_session(refused).await.unwrap().is_none());
    let mut refused = new_token_session(alice.id, b"token-2", t0);
    refused.password_hash = Some("$argon2id$not-the-hash".to_owned());
    refused.audit = Some(audit(refused.id, true));
    assert!(store.create_token_session(refused).await.unwrap().is_none());
    assert_eq!(audit_events(&*store).await.len(), 2);
    assert_eq!(store.outbox_counts().await.unwrap().pending, 1);
    finish(db, store).await;
}
