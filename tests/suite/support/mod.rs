//! Shared test support: throwaway databases on both backends ([`TestDatabase`]), the
//! [`both_backends!`] test generator, and a test clock ([`now`]).

pub mod app;
pub mod db;
pub mod redis;
pub mod smtp;

pub use db::{Backend, TestDatabase};

/// An HTTP client for a test (with the TLS crypto provider the library's client needs).
pub fn client() -> reqwest::Client {
    client_builder().build().expect("an HTTP client")
}

/// A client builder for a test, as [`client`].
pub fn client_builder() -> reqwest::ClientBuilder {
    servauth::webhooks::install_crypto_provider();
    reqwest::Client::builder()
}

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

/// The current time truncated to whole microseconds, the resolution both backends store, so
/// that a value written and read back compares equal. Tests move time forward by adding to
/// it rather than by sleeping.
pub fn now() -> DateTime<Utc> {
    Utc::now()
        .duration_trunc(TimeDelta::microseconds(1))
        .expect("the current time truncates to microseconds")
}

/// Runs backend-generic tests on every backend.
///
/// Each named function must be an `async fn name(backend: Backend)` in the invoking module;
/// the macro generates the `#[tokio::test]`s `sqlite::name` and `postgres::name` that call it,
/// so `cargo test --test suite sqlite::` runs one backend only. A test on PostgreSQL is meant
/// to start with `let Some(db) = TestDatabase::create(backend).await else { return };`, which
/// skips it (or fails it in CI) when no server is reachable.
///
/// Prefix a name with `#[multi_thread]` to run it on a 4-worker multi-threaded runtime (for
/// tests of concurrent behaviour); the others use Tokio's default current-thread runtime.
/// Invoke the macro once per module:
///
/// ```ignore
/// both_backends! {
///     create_user_rejects_a_taken_email_key,
///     #[multi_thread] twenty_concurrent_rotations_yield_exactly_one_rotated,
/// }
/// ```
macro_rules! both_backends {
    (@test $backend:ident, $name:ident) => {
        #[tokio::test]
        async fn $name() {
            super::$name($crate::support::Backend::$backend).await;
        }
    };
    (@test $backend:ident, $name:ident, multi_thread) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            super::$name($crate::support::Backend::$backend).await;
        }
    };
    ($($(#[$flavor:ident])? $name:ident),+ $(,)?) => {
        mod sqlite {
            $( $crate::support::both_backends!(@test Sqlite, $name $(, $flavor)?); )+
        }
        mod postgres {
            $( $crate::support::both_backends!(@test Postgres, $name $(, $flavor)?); )+
        }
    };
}
pub(crate) use both_backends;
