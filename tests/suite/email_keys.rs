//! Email comparison keys in the store: after the migrations every key follows the current
//! rule (`Email::key_of`: NFKC, the domain as its IDNA A-label), on both backends.

use servauth::domain::{Email, new_account};
use servauth::store::{self, NewUser, Rekeyed, Store, StoreError};
use uuid::Uuid;

use crate::support::{Backend, TestDatabase, both_backends, now};

both_backends! {
    migrate_brings_old_email_keys_to_the_current_rule,
    replace_email_key_replaces_only_the_key_it_was_given,
}

/// An account keyed as before NFKC and A-labels: the trimmed, lowercased address.
fn keyed_the_old_way(email: &str) -> NewUser {
    let parsed = Email::parse(email, "email").expect("a valid address");
    NewUser {
        email_key: email.trim().to_lowercase(),
        ..new_account(&parsed, None, "$2b$04$not.a.real.hash".to_owned(), now())
    }
}

async fn key_of_user(store: &dyn Store, id: Uuid, key: &str) -> bool {
    store
        .find_credentials_by_email_key(key)
        .await
        .unwrap()
        .is_some_and(|found| found.user.id == id)
}

async fn migrate_brings_old_email_keys_to_the_current_rule(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = db.migrated_store().await;
    let mut ids = Vec::new();
    for email in [
        "Jose\u{301}@Example.com", // decomposed é
        "ada@Ex\u{E4}mple.org",    // a Unicode domain
        "bob@xn--exmple-cua.org",  // ASCII, A-label domain…
        "bob@ex\u{E4}mple.org",    // …and the same address in Unicode: a collision
        "Carol@Example.com",       // ASCII: as before
        "d\u{F6}rte@example.com",  // non-ASCII, already the current key
    ] {
        let account = keyed_the_old_way(email);
        ids.push(account.id);
        let created = store.create_user(account).await.unwrap();
        let before = store.find_user(created.id).await.unwrap().unwrap();
        assert_eq!(before.updated_at, created.updated_at);
    }
    let (jose, ada, bob_ascii, bob_unicode, carol, doerte) =
        (ids[0], ids[1], ids[2], ids[3], ids[4], ids[5]);
    let updated_at = store.find_user(jose).await.unwrap().unwrap().updated_at;

    // The migrate path (start-up with SERVAUTH_MIGRATE=auto, or `servauth migrate`).
    store.migrate().await.unwrap();

    assert!(key_of_user(store.as_ref(), jose, "jos\u{E9}@example.com").await);
    assert!(!key_of_user(store.as_ref(), jose, "jose\u{301}@example.com").await);
    assert!(key_of_user(store.as_ref(), ada, "ada@xn--exmple-cua.org").await);
    // The collision is left as it was: each account keeps its own key.
    assert!(key_of_user(store.as_ref(), bob_ascii, "bob@xn--exmple-cua.org").await);
    assert!(key_of_user(store.as_ref(), bob_unicode, "bob@ex\u{E4}mple.org").await);
    assert!(key_of_user(store.as_ref(), carol, "carol@example.com").await);
    assert!(key_of_user(store.as_ref(), doerte, "d\u{F6}rte@example.com").await);
    // Only the key changed.
    let user = store.find_user(jose).await.unwrap().unwrap();
    assert_eq!(user.email, "Jose\u{301}@Example.com");
    assert_eq!(user.updated_at, updated_at);

    // Again: nothing left to change but the collision.
    let again = store::rekey_email_addresses(store.as_ref()).await.unwrap();
    assert_eq!(
        again,
        Rekeyed {
            changed: 0,
            collisions: 1
        }
    );
    store.close().await;
    drop(store);
    db.drop_database().await;
}

async fn replace_email_key_replaces_only_the_key_it_was_given(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = db.migrated_store().await;
    let first = store
        .create_user(keyed_the_old_way("ada@ex\u{E4}mple.org"))
        .await
        .unwrap();
    let second = store
        .create_user(keyed_the_old_way("bob@example.org"))
        .await
        .unwrap();
    let listed = store.users_with_non_ascii_email_keys().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].user_id, first.id);
    assert_eq!(listed[0].email, "ada@ex\u{E4}mple.org");
    assert_eq!(listed[0].email_key, "ada@ex\u{E4}mple.org");
    // A key that is no longer the stored one, or a user that is gone: nothing changes.
    let stale = store.replace_email_key(first.id, "ada@elsewhere.org", "x@y.org");
    assert!(!stale.await.unwrap());
    let gone = store.replace_email_key(Uuid::now_v7(), "ada@ex\u{E4}mple.org", "x@y.org");
    assert!(!gone.await.unwrap());
    // Another user's key is taken.
    let taken = store
        .replace_email_key(first.id, "ada@ex\u{E4}mple.org", "bob@example.org")
        .await;
    assert!(matches!(taken, Err(StoreError::EmailTaken)), "{taken:?}");
    assert!(key_of_user(store.as_ref(), second.id, "bob@example.org").await);
    let replaced = store
        .replace_email_key(first.id, "ada@ex\u{E4}mple.org", "ada@xn--exmple-cua.org")
        .await;
    assert!(replaced.unwrap());
    assert!(key_of_user(store.as_ref(), first.id, "ada@xn--exmple-cua.org").await);
    assert!(
        store
            .users_with_non_ascii_email_keys()
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await;
    drop(store);
    db.drop_database().await;
}
