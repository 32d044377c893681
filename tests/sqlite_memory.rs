//! SQLite's writer connection gives back its page cache when asked (`Store::release_memory`,
//! which the server calls once it has been idle for a while).
//!
//! A test binary of its own, with one test: it reads the allocator's process-wide figures,
//! which the tests of another binary, running beside it in the same process, would move.

#![expect(
    clippy::expect_used,
    reason = "a test stops at the first thing that fails"
)]

use chrono::Utc;
use servauth::memory::allocator_stats;
use servauth::store::{self, NewUser, Role};
use uuid::Uuid;

/// Bytes held by live allocations, not counting freed blocks the threads keep cached.
fn live_bytes() -> usize {
    let stats = allocator_stats().expect("jemalloc is the allocator");
    stats.allocated - stats.thread_caches
}

fn new_user(email: &str) -> NewUser {
    NewUser {
        id: Uuid::now_v7(),
        email: email.to_owned(),
        email_key: email.to_owned(),
        username: None,
        username_key: None,
        name: None,
        image: None,
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1${}", "h".repeat(64)),
        email_verified: false,
        role: Role::User,
        now: Utc::now(),
    }
}

#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[tokio::test]
async fn the_sqlite_writer_gives_back_its_page_cache() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("servauth.db").display());
    let store = store::connect(&url, 2).await.expect("open the database");
    store.migrate().await.expect("migrate");
    // About 2,000 rows with their two indexes: more pages than the 2 MiB cache holds, all
    // written through the writer connection.
    for n in 0..2_000 {
        let email = format!("user-{n:05}-{}@example.com", "x".repeat(200));
        store
            .create_user(new_user(&email))
            .await
            .expect("create user");
    }
    // The writer goes back to its pool in a task of its own after each write.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let before = live_bytes();
    store.release_memory().await;
    let after = live_bytes();
    assert!(
        after + 1024 * 1024 <= before,
        "live heap {before} bytes before the release, {after} after: less than 1 MiB freed"
    );
    // The writer still works, its cache refilling as it goes.
    store
        .create_user(new_user("after-the-release@example.com"))
        .await
        .expect("create a user after the release");
    store.close().await;
}
